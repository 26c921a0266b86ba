"""The semantic difference between two definitions of a workflow, as a review wants it:
steps by id, triggers and their effect in the target environment, credentials."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loomgit import cron
from loomgit.models import ScheduleTrigger, WebhookTrigger, Workflow
from loomgit.models.workflow import Trigger


@dataclass(frozen=True)
class StepChange:
    id: str
    fields: list[str]


@dataclass(frozen=True)
class TriggerChange:
    trigger: str  # as `describe` gives it in the target environment
    fields: list[str]


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str
    next_fires: list[str]


@dataclass(frozen=True)
class Credential:
    name: str
    resolves: bool | None  # None: not checked


@dataclass(frozen=True)
class WorkflowDiff:
    name: str
    source_env: str
    target_env: str
    version_before: int | None
    version_after: int | None
    steps_added: list[str] = field(default_factory=list)
    steps_removed: list[str] = field(default_factory=list)
    steps_changed: list[StepChange] = field(default_factory=list)
    triggers_added: list[str] = field(default_factory=list)
    triggers_removed: list[str] = field(default_factory=list)
    # The same trigger with other settings: respond, signature, overlap, catchup…
    triggers_changed: list[TriggerChange] = field(default_factory=list)
    other_changes: list[str] = field(default_factory=list)
    webhooks: list[str] = field(default_factory=list)
    schedules: list[Schedule] = field(default_factory=list)
    credentials: list[Credential] = field(default_factory=list)
    # Whether the target serves it, before and after: what a reviewer most needs to know
    # (None after: a comparison that decides nothing, as `loomgit diff`).
    active_before: bool = False
    active_after: bool | None = None

    @property
    def new(self) -> bool:
        return self.version_before is None

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "new": self.new}


def describe(trigger: Trigger, env: str) -> str:
    if isinstance(trigger, WebhookTrigger):
        return f"webhook {trigger.method} {webhook_url(env, trigger)}"
    if isinstance(trigger, ScheduleTrigger):
        return f"schedule '{trigger.cron}' ({trigger.timezone})"
    return trigger.type


def webhook_url(env: str, trigger: WebhookTrigger) -> str:
    return f"/hooks/{env}/{trigger.route}"


def answers(name: str, workflow: Workflow, env: str, now: datetime | None) -> list[dict[str, Any]]:
    """What `workflow` answers in `env` while active, one entry per trigger: the webhook's
    method and URL, the API call, each schedule with its next three fire times (from
    `now`; None leaves them out)."""
    out: list[dict[str, Any]] = []
    for trigger in workflow.spec.triggers:
        if isinstance(trigger, ScheduleTrigger):
            fires = next_fires(trigger.cron, trigger.timezone, now) if now else []
            out.append(
                {
                    "type": "schedule",
                    "cron": trigger.cron,
                    "timezone": trigger.timezone,
                    "next_fires": fires,
                }
            )
        elif isinstance(trigger, WebhookTrigger):
            url = webhook_url(env, trigger)
            out.append({"type": "webhook", "method": trigger.method, "url": url})
        elif trigger.type == "api":
            url = f"/api/v1/workflows/{name}/executions"
            out.append({"type": "api", "method": "POST", "url": url, "environment": env})
        else:
            out.append({"type": trigger.type})
    return out


def answer_text(answer: dict[str, Any]) -> str:
    """One entry of `answers` as a line of a review."""
    kind = answer["type"]
    if kind == "schedule":
        fires = answer["next_fires"]
        nxt = f", next: {', '.join(fires)}" if fires else ""
        return f"schedule '{answer['cron']}' ({answer['timezone']}){nxt}"
    if kind == "webhook":
        return f"webhook {answer['method']} {answer['url']}"
    if kind == "api":
        return f"api POST {answer['url']} (environment {answer['environment']})"
    return f"{kind}: `loomgit run`, in the first environment only"


def next_fires(expr: str, timezone: str, now: datetime, count: int = 3) -> list[str]:
    schedule = cron.Schedule(expr, timezone)
    out = []
    for _ in range(count):
        now = schedule.next_after(now)
        out.append(now.astimezone(schedule.zone).isoformat())
    return out


def _changed_fields(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and key == "with":
            out.extend(_changed_fields(va, vb, f"{prefix}{key}."))
        else:
            out.append(f"{prefix}{key}")
    return out


def compare(
    name: str,
    source: Workflow,
    target: Workflow | None,
    *,
    source_env: str,
    target_env: str,
    version_before: int | None,
    version_after: int | None,
    now: datetime,
    fire_times: bool = True,
    resolves: dict[str, bool] | None = None,
    active_before: bool = False,
    active_after: bool | None = None,
) -> WorkflowDiff:
    """What changes in `target_env` when `source` replaces `target` (None: not there)."""
    diff = WorkflowDiff(
        name,
        source_env,
        target_env,
        version_before,
        version_after,
        active_before=active_before,
        active_after=active_after,
    )
    new_steps = {s.id: s.model_dump(by_alias=True) for s in source.spec.steps}
    old_steps = {s.id: s.model_dump(by_alias=True) for s in target.spec.steps} if target else {}
    diff.steps_added.extend(i for i in new_steps if i not in old_steps)
    diff.steps_removed.extend(i for i in old_steps if i not in new_steps)
    for sid, data in new_steps.items():
        if sid in old_steps and old_steps[sid] != data:
            diff.steps_changed.append(StepChange(sid, _changed_fields(old_steps[sid], data)))
    _compare_triggers(diff, source, target)
    if target is not None:
        kept_new = [i for i in new_steps if i in old_steps]
        if kept_new != [i for i in old_steps if i in new_steps]:  # steps run in order
            diff.other_changes.append(f"step order ({', '.join(kept_new)})")
        if source.metadata != target.metadata:
            fields = _changed_fields(target.metadata.model_dump(), source.metadata.model_dump())
            diff.other_changes.append(f"metadata ({', '.join(fields)})")
        if source.spec.timeout != target.spec.timeout:
            diff.other_changes.append("spec.timeout")
        if source.spec.credentials != target.spec.credentials:
            diff.other_changes.append("spec.credentials")
    for trigger in source.spec.triggers:
        if isinstance(trigger, WebhookTrigger):
            diff.webhooks.append(f"{trigger.method} {webhook_url(target_env, trigger)}")
        elif isinstance(trigger, ScheduleTrigger):
            fires = next_fires(trigger.cron, trigger.timezone, now) if fire_times else []
            diff.schedules.append(Schedule(trigger.cron, trigger.timezone, fires))
    diff.credentials.extend(
        Credential(c, resolves.get(c) if resolves is not None else None)
        for c in source.spec.credentials
    )
    return diff


def _by_trigger(workflow: Workflow | None, env: str) -> dict[str, list[dict[str, Any]]]:
    """Triggers as `describe` names them (a webhook by method and URL, a schedule by its
    cron and zone); two schedules can share a name, so each name holds a list."""
    out: dict[str, list[dict[str, Any]]] = {}
    for t in workflow.spec.triggers if workflow else []:
        out.setdefault(describe(t, env), []).append(t.model_dump(by_alias=True))
    return out


def _compare_triggers(diff: WorkflowDiff, source: Workflow, target: Workflow | None) -> None:
    new, old = _by_trigger(source, diff.target_env), _by_trigger(target, diff.target_env)
    for name, settings in new.items():
        before = old.get(name, [])
        for i, data in enumerate(settings):
            if i >= len(before):
                diff.triggers_added.append(name)
            elif before[i] != data:
                diff.triggers_changed.append(TriggerChange(name, _changed_fields(before[i], data)))
    for name, settings in old.items():
        diff.triggers_removed.extend([name] * (len(settings) - len(new.get(name, []))))


def _versions(d: WorkflowDiff) -> str:
    before = f"v{d.version_before}" if d.version_before else "not deployed"
    after = f"v{d.version_after}" if d.version_after else "?"
    return f"{before} -> {after}"


def _activation(d: WorkflowDiff) -> str:
    env = d.target_env
    if not d.active_after:
        how = "lands" if d.new else "stays"
        return f"{how} inactive in {env}: `loomgit activate {d.name} --env {env}` makes it serve"
    if d.active_before:
        what = f"v{d.version_after}" if d.version_after else "this definition"
        return f"stays active in {env}: it serves {what} once the commit is applied"
    return f"activated in {env} by this commit: it serves once the commit is applied"


def render_text(diffs: list[WorkflowDiff]) -> str:
    lines: list[str] = []
    for d in diffs:
        lines.append(f"{d.name}: {d.source_env} -> {d.target_env} ({_versions(d)})")
        for label, items in (
            ("step added", d.steps_added),
            ("step removed", d.steps_removed),
            ("trigger added", d.triggers_added),
            ("trigger removed", d.triggers_removed),
            ("changed", d.other_changes),
        ):
            lines.extend(f"  {label}: {item}" for item in items)
        for change in d.steps_changed:
            lines.append(f"  step changed: {change.id} ({', '.join(change.fields)})")
        for t in d.triggers_changed:
            lines.append(f"  trigger changed: {t.trigger} ({', '.join(t.fields)})")
        if not (
            d.steps_added
            or d.steps_removed
            or d.steps_changed
            or d.triggers_added
            or d.triggers_removed
            or d.triggers_changed
            or d.other_changes
        ):
            lines.append("  no change to steps or triggers" if not d.new else "  new workflow")
        if d.active_after is not None:
            lines.append(f"  {_activation(d)}")
        once = " once active" if d.active_after is False else ""
        lines.extend(f"  webhook in {d.target_env}{once}: {url}" for url in d.webhooks)
        for s in d.schedules:
            nxt = f", next: {', '.join(s.next_fires)}" if s.next_fires else ""
            lines.append(f"  schedule '{s.cron}' ({s.timezone}){nxt}")
        for c in d.credentials:
            state = {True: "resolves", False: "DOES NOT RESOLVE", None: "not checked"}[c.resolves]
            lines.append(f"  credential {c.name}: {state} in {d.target_env}")
    return "\n".join(lines)


def render_markdown(diffs: list[WorkflowDiff]) -> str:
    out = []
    for d in diffs:
        out.append(f"### `{d.name}` {_versions(d)}\n")
        body = render_text([d]).splitlines()[1:]
        out.extend(f"- {line.strip()}" for line in body)
        out.append("")
    return "\n".join(out)
