"""What a pull request changes in each environment, as the people reviewing it want it:
the workflows whose definition, version or activation differ between the commit the
pull request forks from and its head, with their steps and triggers compared and the
notes their records carry; rendered as Markdown for a CI job's summary
(`check-promotion --summary`, with the commits and the problems of the check), and as
text, Markdown or JSON by `loomgit changes`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loomgit import envstate
from loomgit.check import Change, Context, branch_env, changes
from loomgit.diff import WorkflowDiff, answer_text, answers, compare
from loomgit.documents import DocumentCache
from loomgit.errors import LoomgitError
from loomgit.layout import ENV_FILE, load_config, unknown_environment
from loomgit.models import WorkflowState
from loomgit.promotion import load_workflow, now_utc
from loomgit.report import summary
from loomgit.validate import Report
from loomgit.vcs import Git, find_root

# A GitHub job summary holds at most 1 MiB: a promotion of thousands of workflows is
# listed in part (each line of the check's log is there too).
MAX_ROWS = 200
MAX_LINES = 100
MAX_NOTES = 300  # characters of a record's notes shown in a row
MAX_LINE = 600  # characters of a commit's line
MAX_ITEMS = 12  # changes listed in a row (and steps named for a new workflow)


@dataclass(frozen=True)
class Row:
    """One workflow whose file or record changed in an environment."""

    name: str
    file: str  # "added", "removed", "changed", or "" (only its record changed)
    before: WorkflowState | None
    after: WorkflowState | None
    diff: WorkflowDiff | None  # None: removed, or a definition that does not load
    answers: tuple[str, ...] = ()  # what it answers in the environment while active


@dataclass(frozen=True)
class EnvReview:
    name: str
    rows: tuple[Row, ...]  # the first MAX_ROWS by name
    settings: tuple[str, ...]  # variables and credential files changed
    more: int = 0  # workflows changed beyond those rows (not read)


@dataclass(frozen=True)
class Review:
    head: str
    environments: tuple[EnvReview, ...]  # in pipeline order, only those that changed
    base: str  # the commit BASE names
    merge_base: str | None  # what it is compared with; None: unrelated histories (the empty tree)

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "head": self.head,
            "merge_base": self.merge_base,
            "environments": [
                {
                    "name": env.name,
                    "workflows": [_row_json(row) for row in env.rows],
                    "settings": list(env.settings),
                }
                for env in self.environments
            ],
        }


def review(
    path: Path,
    base: str,
    head: str = "HEAD",
    env: str | None = None,
    whole: bool = False,
) -> Review:
    """The net change of BASE...HEAD (from their merge base, as the pull request's own
    diff), per environment (or ENV's alone); the first MAX_ROWS workflows of each, or
    all of them when `whole`."""
    limit = None if whole else MAX_ROWS
    root = find_root(path, head)
    cache = DocumentCache()
    with Git(root.toplevel) as git:
        base_commit, head_commit = git.resolve(base), git.resolve(head)
        fork = git.run("merge-base", base_commit, head_commit, ok=(0, 1)).decode().strip()
        since = fork or git.empty_tree()  # unrelated histories: everything is new
        config = load_config(root, git, cache, head_commit)
        if env is not None and env not in config.names:
            raise unknown_environment(env, config.names)
        ctx = Context(root, git, config, branch_env(git, config, head_commit, head))
        found = changes(ctx, since, head_commit)
        envs = tuple(
            _env_review(ctx, since, head_commit, name, found[name], limit)
            for name in config.names
            if name in found and env in (None, name)
        )
    kept = tuple(e for e in envs if e.rows or e.settings)
    return Review(head_commit, kept, base_commit, fork or None)


def _record(data: bytes | None, name: str) -> WorkflowState | None:
    try:
        return envstate.record(data, name)
    except LoomgitError:  # not valid: the check reports it
        return None


def _env_review(
    ctx: Context, since: str, head: str, env: str, change: Change, limit: int | None
) -> EnvReview:
    where = ctx.base(env)
    old_file = ctx.blob(since, where + ENV_FILE)
    new_file = ctx.blob(head, where + ENV_FILE)
    try:  # the records that differ, read block by block from a canonical file
        old, new = envstate.changed_records(old_file, new_file)
    except LoomgitError:  # not valid: the check reports it
        old, new = {}, {}
    names = sorted({*change.workflows, *old, *new})
    index = ctx.config.names.index(env)
    source_env = ctx.config.names[index - 1] if index else env
    listed = names[:limit]
    for commit in (since, head):
        ctx.read_ahead(commit, [f"{where}workflows/{name}.yaml" for name in listed])
    rows = []
    for name in listed:
        path = f"{where}workflows/{name}.yaml"
        after, before = ctx.blob(head, path), ctx.blob(since, path)
        rec_old = old.get(name) or _record(old_file, name)
        rec_new = new.get(name) or _record(new_file, name)
        status = change.workflows.get(name)
        file = {"A": "added", "D": "removed", None: ""}.get(status, "changed")
        diff: WorkflowDiff | None = None
        answered: tuple[str, ...] = ()
        if after is not None:
            compared = _compare(name, path, after, before, source_env, env, rec_old, rec_new)
            diff, answered = compared or (None, ())
        rows.append(Row(name, file, rec_old, rec_new, diff, answered))
    return EnvReview(env, tuple(rows), tuple(change.settings), len(names) - len(listed))


def _compare(
    name: str,
    path: str,
    after: bytes,
    before: bytes | None,
    source_env: str,
    env: str,
    rec_old: WorkflowState | None,
    rec_new: WorkflowState | None,
) -> tuple[WorkflowDiff, tuple[str, ...]] | None:
    """The definition at the head against the one before, and what it answers (None: one
    does not load; the check's problems say why)."""
    try:
        model = load_workflow(after, path)
        diff = compare(
            name,
            model,
            load_workflow(before, path) if before is not None else None,
            source_env=source_env,
            target_env=env,
            version_before=rec_old.version if rec_old else None,
            version_after=rec_new.version if rec_new else None,
            now=now_utc(),
            fire_times=False,
            active_before=bool(rec_old and rec_old.active),
            active_after=bool(rec_new and rec_new.active),
        )
    except LoomgitError:
        return None
    told = [answer_text(a) for a in answers(name, model, env, None) if a["type"] != "manual"]
    return diff, tuple(told)


_MARKDOWN = re.compile(r"([\\`*_\[\]<>|#~!&])")


def _md(text: str) -> str:
    """Text shown as itself: Markdown and HTML escaped, on one line."""
    return _MARKDOWN.sub(r"\\\1", _line(text))


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text and text.strip() == text and text else _md(text)


def _line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Style:
    """How a row's words are marked: Markdown for a summary, plain for a terminal."""

    text: Callable[[str], str]  # words from the repository (notes, a trigger)
    code: Callable[[str], str]  # a name or an id
    strong: Callable[[str], str]  # what a row changes to
    emphasis: Callable[[str], str]  # the notes
    arrow: str
    invalid: str  # said of a definition that does not load


MARKDOWN = Style(
    _md,
    _code,
    "**{}**".format,
    lambda text: f"*{_md(text)}*",
    "→",
    "does not validate (see the problems below)",
)
PLAIN = Style(_line, _line, str, _line, "->", "does not validate (`loomgit validate` says why)")


def _version(row: Row, st: Style) -> str:
    before = f"v{row.before.version}" if row.before and row.before.version else None
    after = f"v{row.after.version}" if row.after and row.after.version else None
    if row.file == "removed" or after is None:  # the first environment has no versions
        return {"added": "new", "changed": "edited", "removed": "removed"}.get(row.file, "—")
    if before == after:
        return after
    if row.after and row.after.rolled_back_from:
        return f"{before or 'none'} {st.arrow} {st.strong(after)} (rollback)"
    return f"{before} {st.arrow} {st.strong(after)}" if before else f"{st.strong(after)} (new)"


def _serving(row: Row, st: Style) -> str:
    was = "active" if row.before and row.before.active else "inactive"
    now = "active" if row.after and row.after.active else "inactive"
    return now if was == now else f"{was} {st.arrow} {st.strong(now)}"


def _changed(row: Row, st: Style) -> list[str]:
    d = row.diff
    if d is None:
        return []
    items = [f"step added: {st.code(s)}" for s in d.steps_added]
    items += [f"step removed: {st.code(s)}" for s in d.steps_removed]
    items += [
        f"step changed: {st.code(c.id)} ({', '.join(st.text(f) for f in c.fields)})"
        for c in d.steps_changed
    ]
    items += [f"trigger added: {st.text(t)}" for t in d.triggers_added]
    items += [f"trigger removed: {st.text(t)}" for t in d.triggers_removed]
    items += [
        f"trigger changed: {st.text(t.trigger)} ({', '.join(st.text(f) for f in t.fields)})"
        for t in d.triggers_changed
    ]
    items += [f"changed: {st.text(o)}" for o in d.other_changes]
    return items


def _what(row: Row, st: Style) -> list[str]:
    if row.file == "removed":
        return ["its file is removed"]
    if row.diff is None:
        return [st.invalid]
    items = _changed(row, st)
    if row.file == "added":
        added = row.diff.steps_added
        steps = ", ".join(st.code(s) for s in added[:MAX_ITEMS])
        items = [f"new workflow, steps: {steps}" + _more(len(added))]
    elif not items:
        items = ["no change to steps or triggers"]
    elif len(items) > MAX_ITEMS:
        items = [*items[:MAX_ITEMS], _more(len(items)).strip(", ")]
    if row.after and row.after.active:
        items += [f"answers {st.text(a)}" for a in row.answers]
    notes = row.after.notes if row.after else None
    if notes and (row.before is None or notes != row.before.notes):
        cut = notes if len(notes) <= MAX_NOTES else notes[: MAX_NOTES - 1] + "…"
        items.append(f"notes: {st.emphasis(cut)}")
    return items


def _more(count: int) -> str:
    return f", … and {count - MAX_ITEMS} more" if count > MAX_ITEMS else ""


def _environment(env: EnvReview) -> list[str]:
    lines = [f"### {_md(env.name)}", ""]
    if env.rows:
        lines += ["| workflow | version | serving | what changes |", "|---|---|---|---|"]
        for row in env.rows:
            what = "<br>".join(_what(row, MARKDOWN))
            version, serving = _version(row, MARKDOWN), _serving(row, MARKDOWN)
            lines.append(f"| {_code(row.name)} | {version} | {serving} | {what} |")
        if env.more:
            lines += ["", f"… and {env.more} more (`loomgit status` lists every workflow)"]
    if env.settings:
        files = ", ".join(_code(s) for s in env.settings)
        lines += ["", f"Also changed: {files} (values are not shown)"]
    return [*lines, ""]


def _row_json(row: Row) -> dict[str, Any]:
    d = row.diff
    changes = None
    if d is not None:
        changes = {
            "steps_added": d.steps_added,
            "steps_removed": d.steps_removed,
            "steps_changed": [{"id": c.id, "fields": c.fields} for c in d.steps_changed],
            "triggers_added": d.triggers_added,
            "triggers_removed": d.triggers_removed,
            "triggers_changed": [
                {"trigger": t.trigger, "fields": t.fields} for t in d.triggers_changed
            ],
            "other_changes": d.other_changes,
        }
    return {
        "name": row.name,
        "file": row.file or None,
        "before": _state_json(row.before),
        "after": _state_json(row.after),
        "changes": changes,
        "answers": list(row.answers) if row.after and row.after.active else [],
    }


def _state_json(state: WorkflowState | None) -> dict[str, Any] | None:
    return state.model_dump(mode="json", exclude_none=True) if state else None


def _since(found: Review, base: str, head: str) -> str:
    if found.merge_base is None:
        return f"{head} shares no history with {base}: everything in it is new"
    return f"since {found.merge_base[:12]}, where {head} forks from {base}"


def text(found: Review, base: str, head: str) -> str:
    """`loomgit changes` for a terminal: per environment, a line for each workflow and
    an indented line for each thing it changes."""
    if not found.environments:
        return (
            f"{head} changes no environment's workflows, variables or credentials "
            f"({_since(found, base, head)})"
        )
    lines = [f"What {head} ({found.head[:12]}) changes, {_since(found, base, head)}:"]
    for env in found.environments:
        lines += ["", env.name]
        for row in env.rows:
            lines.append(f"  {row.name}: {_version(row, PLAIN)}, {_serving(row, PLAIN)}")
            lines += [f"    {item}" for item in _what(row, PLAIN)]
        if env.more:
            lines.append(f"  … and {env.more} more")
        if env.settings:
            files = ", ".join(env.settings)
            lines.append(f"  also changed: {files} (values are not shown)")
    return "\n".join(lines)


def changes_markdown(found: Review, base: str) -> str:
    """`loomgit changes --format markdown`: the summary's tables, for a pull request's
    description or a chat message."""
    short = found.head[:12]
    lines = ["## What changes in each environment", "", _md(_since(found, base, short)), ""]
    if not found.environments:
        lines += ["It changes no environment's workflows, variables or credentials.", ""]
    for env in found.environments:
        lines += _environment(env)
    return "\n".join(lines)


def _capped(items: list[str], what: str) -> list[str]:
    if len(items) <= MAX_LINES:
        return items
    return [*items[:MAX_LINES], f"- … and {len(items) - MAX_LINES} more {what} (see the job's log)"]


def markdown(report: Report, found: Review | LoomgitError) -> str:
    """The check's summary: its outcome, what the pull request changes in each
    environment (or why that could not be read), its commits and its problems."""
    errors = len(report.errors)
    mark = "❌" if errors else "✅"
    lines = [f"## {mark} loomgit check-promotion", "", _md(summary(report)), ""]
    if isinstance(found, LoomgitError):
        lines += [f"What it changes could not be read: {_md(found.explained())}", ""]
    elif not found.environments:
        lines += ["It changes no environment's workflows, variables or credentials.", ""]
    else:
        for env in found.environments:
            lines += _environment(env)
    if report.commits:
        commits = []
        for line in report.commits:
            sha, _, rest = line.partition(" ")
            if len(rest) > MAX_LINE:  # a promotion of many workflows names each
                rest = rest[: MAX_LINE - 1] + "…"
            commits.append(f"- `{sha}` {_md(rest)}")
        lines += ["### Commits", "", *_capped(commits, "commits"), ""]
    if report.problems:
        problems = [
            f"- {_code(p.location())} **{p.severity}** {p.code}: {_md(p.message)}"
            for p in report.problems
        ]
        lines += ["### Problems", "", *_capped(problems, "problems"), ""]
    return "\n".join(lines)


def failed(exc: LoomgitError) -> str:
    """The summary of a check that stopped before it could report (an unknown --base, a
    shallow clone)."""
    return f"## ❌ loomgit check-promotion\n\nThe check stopped: {_md(exc.explained())}\n"
