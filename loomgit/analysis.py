"""Rules that need one workflow file only: triggers, steps, templates and references.

The result is a small, path-free summary (WorkflowFacts) that the cross-file rules use,
so a blob shared by several environments is analysed once.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from loomgit import cron, render, templates, webpaths
from loomgit.findings import Finding, KeyPath, from_validation_error
from loomgit.models.steps import OUTPUT_KEYS, known_types, params_model, unusable
from loomgit.models.workflow import ScheduleTrigger, Step, WebhookTrigger, Workflow


@dataclass(frozen=True, slots=True)
class WorkflowFacts:
    """What the cross-file rules need to know about one workflow definition."""

    name: str
    webhooks: tuple[tuple[str, str, KeyPath], ...]  # (method, route, where)
    variables: tuple[tuple[str, KeyPath], ...]  # each vars.NAME with its first use
    credentials: tuple[str, ...]
    schedules: tuple[tuple[str, str], ...]  # (cron, timezone)
    credential_fields: tuple[tuple[str, str, KeyPath], ...] = ()  # (name, field, first use)


def _strings(value: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    """Every string inside `value` with its key path (iterative: nesting depth is the
    user's choice)."""
    stack: list[tuple[Any, KeyPath]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            yield where, node
        elif isinstance(node, dict):
            stack.extend(((v, (*where, k)) for k, v in reversed(node.items())))
        elif isinstance(node, list):
            stack.extend(((v, (*where, i)) for i, v in reversed(list(enumerate(node)))))


class _RefChecker:
    """Checks the names a step's templates use against what that step may see."""

    def __init__(self, wf: Workflow) -> None:
        self.ids = [s.id for s in wf.spec.steps]
        self.outputs = {
            s.id: (s.type, keys)
            for s in wf.spec.steps
            if (keys := _output_keys(s)) is not None and self.ids.count(s.id) == 1
        }
        self.declared = set(wf.spec.credentials)
        self.variables: dict[str, KeyPath] = {}
        self.credential_fields: dict[tuple[str, str], KeyPath] = {}
        self.findings: list[Finding] = []

    def check(self, refs: templates.Refs, step_index: int, where: KeyPath) -> None:
        for root in sorted(refs.roots - templates.CONTEXT_ROOTS):
            self.findings.append(
                Finding(
                    "LG331",
                    f"'{root}' is not in the template context; use steps, credentials, vars, "
                    "trigger, env or workflow",
                    where,
                )
            )
        earlier = self.ids[:step_index]
        for root, name, member in sorted(refs.members, key=lambda m: (m[0], m[1], m[2] or "")):
            if root == "steps" and name not in earlier:
                if name in self.ids:
                    why = f"step '{name}' does not run before step '{self.ids[step_index]}'"
                else:
                    hint = difflib.get_close_matches(name, self.ids, n=1)
                    why = f"there is no step '{name}'" + (
                        f" (did you mean '{hint[0]}'?)" if hint else ""
                    )
                self.findings.append(
                    Finding("LG331", f"{why}; a template may only use earlier steps", where)
                )
            elif root == "steps" and member is not None and member not in templates.STEP_FIELDS:
                hint = difflib.get_close_matches(member, templates.STEP_FIELDS, n=1)
                self.findings.append(
                    Finding(
                        "LG331",
                        f"step '{name}' has no '{member}'"
                        + (f" (did you mean '{hint[0]}'?)" if hint else "")
                        + f"; a step has {', '.join(templates.STEP_FIELDS)}",
                        where,
                    )
                )
            elif root == "credentials" and name not in self.declared:
                self.findings.append(
                    Finding(
                        "LG331",
                        f"credential '{name}' is not declared in spec.credentials",
                        where,
                    )
                )
            elif root in ("trigger", "workflow"):
                fields = (
                    templates.TRIGGER_FIELDS if root == "trigger" else templates.WORKFLOW_FIELDS
                )
                if name not in fields:
                    hint = difflib.get_close_matches(name, fields, n=1)
                    self.findings.append(
                        Finding(
                            "LG331",
                            f"the {root} has no '{name}'"
                            + (f" (did you mean '{hint[0]}'?)" if hint else "")
                            + f"; it has {', '.join(fields)}",
                            where,
                        )
                    )
            elif root == "vars":
                self.variables.setdefault(name, where)
            elif root == "credentials" and member is not None:
                self.credential_fields.setdefault((name, member), where)
        for name, key in sorted(refs.outputs):
            kind, keys = self.outputs.get(name, ("", ()))
            if not kind or name not in earlier or key in keys:
                continue
            hint = difflib.get_close_matches(key, keys, n=1)
            has = "status, headers, and json (an answer in JSON) or text"
            self.findings.append(
                Finding(
                    "LG331",
                    f"the output of step '{name}' ({kind}) has no '{key}'"
                    + (f" (did you mean '{hint[0]}'?)" if hint else "")
                    + f"; it has {has if kind == 'http' else ', '.join(keys)}",
                    where,
                )
            )


def _output_keys(step: Step) -> tuple[str, ...] | None:
    """The keys a step's output is known to hold, or None when they are not known before
    it runs (a transform, a plugin's step, parameters that do not validate)."""
    if step.type == "set":
        return tuple(step.with_) or None
    return OUTPUT_KEYS.get(step.type)


def _check_template(
    checker: _RefChecker,
    text: str,
    index: int,
    where: KeyPath,
    *,
    jmespath: bool = False,
    expression: bool = False,
) -> None:
    try:
        if jmespath:
            refs = templates.jmespath_refs(text)
        elif expression:
            refs = templates.expression_refs(text)
        else:
            refs = templates.template_refs(text)
    except templates.TemplateSyntaxError as exc:
        code = "LG332" if jmespath else "LG330"
        label = "JMESPath" if jmespath else "template"
        message = str(exc) if jmespath else f"{label} syntax error: {exc}"
        checker.findings.append(Finding(code, message, where))
        return
    checker.check(refs, index, where)


def _check_triggers(wf: Workflow, findings: list[Finding]) -> tuple[list[Any], list[Any]]:
    hooks: list[tuple[str, str, KeyPath]] = []
    declared: dict[tuple[str, str], int] = {}  # (method, shape) -> the first trigger's index
    schedules: list[tuple[str, str]] = []
    for i, trigger in enumerate(wf.spec.triggers):
        where: KeyPath = ("spec", "triggers", i)
        if isinstance(trigger, ScheduleTrigger):
            schedules.append((trigger.cron, trigger.timezone))
            try:
                cron.check_cron(trigger.cron)
            except cron.CronError as exc:
                findings.append(
                    Finding("LG311" if exc.never else "LG310", str(exc), (*where, "cron"))
                )
            try:
                cron.check_timezone(trigger.timezone)
            except ValueError as exc:
                findings.append(Finding("LG312", str(exc), (*where, "timezone")))
        elif isinstance(trigger, WebhookTrigger):
            first = declared.setdefault((trigger.method, webpaths.shape(trigger.route)), i)
            if first != i:
                findings.append(
                    Finding(
                        "LG302",
                        f"webhook {trigger.method} /{trigger.route} is also served by "
                        f"spec.triggers[{first}] of this workflow",
                        (*where, "path"),
                    )
                )
            else:
                hooks.append((trigger.method, trigger.route, (*where, "path")))
            for key, check in trigger.secret_checks():
                if check.credential not in wf.spec.credentials:
                    findings.append(
                        Finding(
                            "LG313",
                            f"the {key}'s credential '{check.credential}' is not declared in "
                            "spec.credentials",
                            (*where, key, "credential"),
                        )
                    )
    return hooks, schedules


def _a_template(err: ErrorDetails) -> bool:
    """A parameter given as a template is checked at run time, rendered: its template
    may well give the integer, list or mapping the step wants (`status: "{{ code }}"`)."""
    given = err.get("input")
    return (
        err["type"] != "extra_forbidden"  # a misspelt key stays one, whatever its value
        and isinstance(given, str)
        and any(m in given for m in render.MARKERS)
    )


def analyse(wf: Workflow, raw: dict[str, Any]) -> tuple[WorkflowFacts, list[Finding]]:
    """Checks one parsed workflow; `raw` is the loaded YAML, for locating parameter errors."""
    findings: list[Finding] = []
    hooks, schedules = _check_triggers(wf, findings)
    checker = _RefChecker(wf)
    seen: set[str] = set()
    raw_steps = raw["spec"]["steps"]
    for i, step in enumerate(wf.spec.steps):
        where: KeyPath = ("spec", "steps", i)
        if step.id in seen:
            findings.append(Finding("LG320", f"step id '{step.id}' is used twice", (*where, "id")))
        seen.add(step.id)
        model = params_model(step.type)
        if model is None:
            hint = difflib.get_close_matches(step.type, known_types(), n=1)
            why = unusable(step.type)
            findings.append(
                Finding(
                    "LG321",
                    f"step type '{step.type}' cannot be used: {why}"
                    if why
                    else f"unknown step type '{step.type}'"
                    + (
                        f" (did you mean '{hint[0]}'?)"
                        if hint
                        else f"; known types: {', '.join(known_types())}"
                    ),
                    (*where, "type"),
                )
            )
        else:
            try:
                model.model_validate(step.with_)
            except ValidationError as exc:
                raw_with = raw_steps[i].get("with", {})
                findings.extend(
                    from_validation_error(
                        exc,
                        raw_with,
                        model,
                        prefix=(*where, "with"),
                        code="LG322",
                        skip=_a_template,
                    )
                )
        if step.when is not None:
            _check_template(checker, step.when, i, (*where, "when"), expression=True)
        for path, text in _strings(step.with_, (*where, "with")):
            is_jmespath = step.type == "transform" and path[-1] == "expression" and len(path) == 5
            _check_template(checker, text, i, path, jmespath=is_jmespath)
    for i, trigger in enumerate(wf.spec.triggers):
        if not isinstance(trigger, WebhookTrigger):
            continue
        for key, check in trigger.secret_checks():
            if check.credential not in wf.spec.credentials:
                continue
            where = ("spec", "triggers", i, key)
            for name, field in check.secret_fields():
                given = name in check.model_fields_set  # else the default, at the mapping
                checker.credential_fields.setdefault(
                    (check.credential, field), (*where, name) if given else where
                )
    findings.extend(checker.findings)
    facts = WorkflowFacts(
        name=wf.metadata.name,
        webhooks=tuple(hooks),
        variables=tuple(checker.variables.items()),
        credentials=tuple(wf.spec.credentials),
        schedules=tuple(schedules),
        credential_fields=tuple((n, f, w) for (n, f), w in checker.credential_fields.items()),
    )
    return facts, findings
