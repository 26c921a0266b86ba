"""Promotion: copy workflow definitions from one environment to the next as one validated
commit, with a version, a record in the target's environment.yaml and trailers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from loomgit import credentials, envstate, yamlio
from loomgit.diff import WorkflowDiff, compare
from loomgit.documents import blob_id, digest
from loomgit.errors import LoomgitError, UsageError
from loomgit.models import Variables, Workflow, WorkflowState
from loomgit.problems import headline
from loomgit.workspace import Location, Workspace

MAX_NOTES = 4000
_TRAILERISH = re.compile(r"^\s*loomgit-[a-z-]*\s*:", re.IGNORECASE)


class Refused(LoomgitError):
    """A promotion, activation or rollback that loomgit will not write (nothing written)."""


def sanitise_notes(text: str) -> str:
    """Notes as they go into a commit message: no control characters, no line that a
    reader could take for one of loomgit's trailers, and a bounded length."""
    text = "".join(c for c in text if c in "\n\t" or (c.isprintable()))
    lines = []
    for line in text.strip().splitlines():
        lines.append("> " + line if _TRAILERISH.match(line) else line.rstrip())
    cleaned = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return cleaned[:MAX_NOTES]


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def load_workflow(data: bytes, where: str) -> Workflow:
    """The full model of a workflow file that is known to be valid."""
    try:
        return Workflow.model_validate(yamlio.load(data))
    except Exception as exc:  # validated before; this is a guard, not a path users see
        raise Refused(f"{where} is not a valid workflow", hint="run `loomgit validate`") from exc


@dataclass(frozen=True)
class Item:
    name: str
    content: bytes
    before: WorkflowState | None
    after: WorkflowState
    diff: WorkflowDiff


@dataclass(frozen=True)
class Plan:
    """Everything a promotion will write, decided before anything is written."""

    source: Location
    target: Location
    items: list[Item]
    notes: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    env_file: bytes | None = None  # the target's environment.yaml as planned
    extra: dict[str, bytes | None] = field(default_factory=dict)  # e.g. copied credentials
    copied: tuple[str, ...] = ()

    @property
    def unresolved(self) -> list[str]:
        """Credentials that would not resolve in the target (only a review gets this far)."""
        return [
            f"{i.name}: {c.name}"
            for i in self.items
            for c in i.diff.credentials
            if c.resolves is False
        ]

    @property
    def subject(self) -> str:
        env = self.target.env
        if len(self.items) == 1:
            item = self.items[0]
            return f"Promote {item.name} v{item.after.version} to {env}"
        return f"Promote {len(self.items)} workflows to {env}"

    @property
    def message(self) -> str:
        trailers = [f"Loomgit-Promotion: {self.source.env} -> {self.target.env}"]
        trailers += [f"Loomgit-Workflow: {i.name} v{i.after.version}" for i in self.items]
        trailers.append(f"Loomgit-Source-Commit: {self.source.commit}")
        trailers += [
            f"Loomgit-Credential: {self.target.env} {c} copied from {self.source.env}"
            for c in self.copied
        ]
        body = f"\n\n{self.notes}" if self.notes else ""
        return f"{self.subject}{body}\n\n" + "\n".join(trailers) + "\n"

    def changes(self, env_file: bytes | None) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {self.target.workflow(i.name): i.content for i in self.items}
        out[self.target.env_file] = envstate.with_records(
            env_file, self.target.env, {i.name: i.after for i in self.items}
        )
        out.update(self.extra)
        return out


def _source_env(ws: Workspace, to_env: str, from_env: str | None) -> str:
    ws.check_env(to_env)
    names = ws.config.names
    index = names.index(to_env)
    if index == 0:
        nxt = ws.next(to_env)
        hint = f"promote from it instead: loomgit promote WORKFLOW --to {nxt}" if nxt else None
        raise Refused(
            f"{to_env} is the first environment: it is edited, never promoted into", hint=hint
        )
    source = names[index - 1]
    if from_env is not None and ws.check_env(from_env) != source:
        nxt = ws.next(from_env)
        legal = f"loomgit promote WORKFLOW --to {nxt}" if nxt else "nothing: it is the last"
        raise Refused(
            f"{from_env} cannot be promoted to {to_env}: promotions go one step forward, "
            f"{' -> '.join(names)}",
            hint=f"the next step from {from_env} is {legal}",
        )
    return source


def next_version(ws: Workspace, name: str, known: dict[str, bytes | None]) -> int:
    """One more than any version any environment records, rolled-back ones included.
    `known` holds environment.yaml files already read, by environment."""
    highest = 0
    for env in ws.config.names[1:]:
        if env in known:
            data = known[env]
        else:
            loc = ws.location(env)
            data = known[env] = ws.git.blob_at(loc.commit, loc.env_file)
        rec = envstate.record(data, name)
        if rec is not None:
            highest = max(highest, rec.version or 0, rec.rolled_back_from or 0)
    return highest + 1


def check_definition(
    ws: Workspace,
    name: str,
    data: bytes,
    loc: Location,
    variables: set[str] | None,
    *,
    then: str,
    where: str,
) -> None:
    """Refuses `name`'s definition `data` in `loc` when it does not validate on its own, or
    uses a variable `variables` (of `where`'s variables.yaml) does not define. `then` is
    what to do once it is fixed."""
    parsed = ws.cache.workflow(blob_id(data), data)
    path = loc.workflow(name)
    if parsed.problems:
        found, more = headline(parsed.problems)
        first = found.at(f"{path}@{loc.commit[:12]}")
        raise Refused(
            f"{name} does not validate in {loc.env}: {first.render()}{more}",
            hint=f"fix it in {ws.config.first} and commit, then {then}",
        )
    if parsed.facts and variables is not None:
        missing = [v for v, _ in parsed.facts.variables if v not in variables]
        if missing:
            raise Refused(
                f"{name} uses vars.{missing[0]}, which is not defined in {where} variables.yaml",
                hint="add it there first (variables are per environment)",
            )


def variables_in(data: bytes | None) -> set[str] | None:
    if data is None:
        return set()
    try:
        return set(Variables.model_validate(yamlio.load(data)).variables)
    except Exception:
        return None  # reported by validate; not this command's concern


def credentials_in(
    ws: Workspace, target: Location
) -> tuple[credentials.CredentialFile | None, credentials.CredentialFile | None]:
    """The target's scoped and global credential files, read without a key."""
    shared_path = (
        ws.root.prefix + credentials.GLOBAL_FILE_DIRECTORIES
        if ws.config.layout == "directories"
        else credentials.GLOBAL_FILE_BRANCHES
    )
    files = ws.git.blobs_at(target.commit, [target.path(credentials.SCOPED_FILE), shared_path])
    scoped, shared = files[target.path(credentials.SCOPED_FILE)], files[shared_path]
    return (
        credentials.read(scoped) if scoped else None,
        credentials.read(shared) if shared else None,
    )


def resolving(ws: Workspace, loc: Location, model: Workflow) -> dict[str, bool]:
    """Which of `model`'s credentials resolve in `loc`: by name, so no key is needed."""
    scoped, shared = credentials_in(ws, loc)
    only = frozenset(ws.config.scoped_only)
    return {
        c: credentials.resolve(c, scoped, shared, only) is not None for c in model.spec.credentials
    }


def plan(
    ws: Workspace,
    names: list[str],
    to_env: str,
    *,
    all_workflows: bool = False,
    notes: str = "",
    activate: bool = False,
    from_env: str | None = None,
    now: datetime | None = None,
    fire_times: bool = True,
    copy_credentials: tuple[str, ...] = (),
    keys: dict[str, Path] | None = None,
    review: bool = False,
) -> Plan:
    """Decides a promotion to `to_env` from the environment before it. Raises Refused."""
    source_env = _source_env(ws, to_env, from_env)
    source, target = ws.location(source_env), ws.location(to_env)
    now = now or now_utc()
    if all_workflows == bool(names):
        raise UsageError("name the workflows to promote, or pass --all (not both)")
    wanted = ws.workflow_names(source_env) if all_workflows else list(dict.fromkeys(names))
    paths = [source.workflow(n) for n in wanted] + [source.env_file]
    src_files = ws.git.blobs_at(source.commit, paths)
    tgt_files = ws.git.blobs_at(
        target.commit, [target.workflow(n) for n in wanted] + [target.env_file, target.vars_file]
    )
    tgt_env_file = tgt_files[target.env_file]
    variables = variables_in(tgt_files[target.vars_file])
    who = ws.git.identity()
    known_files: dict[str, bytes | None] = {to_env: tgt_env_file}
    scoped_creds, shared_creds = credentials_in(ws, target)
    only = frozenset(ws.config.scoped_only)
    copying = frozenset(copy_credentials)
    items: list[Item] = []
    skipped: list[tuple[str, str]] = []
    first = source_env == ws.config.first
    for name in wanted:
        content = src_files[source.workflow(name)]
        if content is None:
            raise Refused(
                f"{name} is not in {source_env} at {source.commit[:12]}",
                hint=ws.missing_hint(source_env, name),
            )
        before = envstate.record(tgt_env_file, name)
        same = before is not None and before.digest == digest(content)
        if same and tgt_files[target.workflow(name)] == content:
            if all_workflows:
                continue
            raise Refused(
                f"{to_env} already holds this definition of {name} "
                f"(v{before.version if before else '?'}); nothing to promote"
            )
        if all_workflows and before is not None and before.rolled_back_from:
            skipped.append(
                (
                    name,
                    f"rolled back from v{before.rolled_back_from} in {to_env}; "
                    "name it to promote it again",
                )
            )
            continue
        check_definition(ws, name, content, source, variables, then="promote", where="the target's")
        model = load_workflow(content, source.workflow(name))
        declared = model.spec.credentials
        resolves = {
            c: c in copying or credentials.resolve(c, scoped_creds, shared_creds, only) is not None
            for c in declared
        }
        missing = [c for c, ok in resolves.items() if not ok]
        if missing and not review:  # a review (dry run) shows it instead
            raise Refused(
                f"{name} uses credential {missing[0]}, which does not resolve in {to_env}",
                hint=f"copy it in the same commit: --copy-credential {missing[0]}, or "
                f"`loomgit credentials set {missing[0]} --env {to_env}`",
            )
        if first:
            version = next_version(ws, name, known_files)
        else:
            src_rec = envstate.record(src_files[source.env_file], name)
            if src_rec is None or src_rec.version is None:
                raise Refused(
                    f"{name} has no promotion record in {source_env}",
                    hint="run `loomgit validate`; the record must be repaired first",
                )
            version = src_rec.version
        after = WorkflowState(
            active=activate or (before.active if before else False),
            version=version,
            digest=digest(content),
            promoted_from=source_env,
            source_commit=source.commit,
            promoted_by=who,
            promoted_at=now,
            notes=notes or None,
        )
        old = tgt_files[target.workflow(name)]
        diff = compare(
            name,
            model,
            load_workflow(old, target.workflow(name)) if old else None,
            source_env=source_env,
            target_env=to_env,
            version_before=before.version if before else None,
            version_after=version,
            now=now,
            fire_times=fire_times,
            resolves=resolves,
            active_before=bool(before and before.active),
            active_after=after.active,
        )
        items.append(Item(name, content, before, after, diff))
    if not items:
        why = "; ".join(f"{n} skipped: {reason}" for n, reason in skipped)
        raise Refused(
            f"nothing to promote to {to_env}: "
            + (why or "it already holds every definition asked for")
        )
    # One `git status` for both sides: the target's files must be clean (they are about to
    # be rewritten); uncommitted edits on the source side are only worth a warning.
    src_paths = [source.workflow(i.name) for i in items] if source.checked_out else []
    tgt_paths = [target.workflow(i.name) for i in items] + [target.env_file]
    dirty = ws.git.dirty_paths(src_paths + (tgt_paths if target.checked_out else []))
    blocked = [p for p in dirty if p in tgt_paths]
    if blocked:
        raise Refused(
            f"{blocked[0]} has uncommitted changes; loomgit would overwrite them",
            hint="commit or stash them first; nothing was written",
        )
    warnings = [
        f"uncommitted changes to {p} are not promoted; the promotion copies {source.commit[:12]}"
        for p in dirty
        if p in src_paths
    ]
    stale = ws.behind_origin(to_env)
    if stale:
        warnings.append(f"{stale}: {NOT_PUSHABLE}")
    stale = ws.behind_origin(source_env) if source.ref != target.ref else None
    if stale:
        warnings.append(f"{stale}: the promotion copies {source_env} as this clone has it")
    extra: dict[str, bytes | None] = {}
    copied: list[str] = []
    if copying:
        from loomgit.credops import copy_changes  # credops writes through this module

        _, extra, copied = copy_changes(ws, sorted(copying), source_env, to_env, keys or {})
        warnings += [
            f"{name} in {to_env} already has {source_env}'s values: not copied"
            for name in sorted(copying.difference(copied))
        ]
    return Plan(source, target, items, notes, skipped, warnings, tgt_env_file, extra, tuple(copied))


@dataclass(frozen=True)
class Written:
    commit: str
    branch: str
    from_remote: str | None = None  # the branch was created by this commit, from this one
    behind: str | None = None  # why the commit will not push as it is (Workspace.branch_behind)

    def where(self) -> str:
        """Where the commit went, as the commands that write say it: commit ID on BRANCH."""
        said = f"commit {self.commit[:12]} on {self.branch}"
        return f"{said}, a new branch from {self.from_remote}" if self.from_remote else said


NOT_PUSHABLE = "this commit will not push as it is; `git pull` first"


def check_branch_name(ws: Workspace, name: str) -> str:
    out = ws.git.run("check-ref-format", "--branch", name, ok=(0, 1, 128)).decode().strip()
    if not out or name.startswith("-"):
        raise UsageError(f"'{name}' is not a valid branch name")
    return out


def write(
    ws: Workspace,
    ref: Location,
    changes: dict[str, bytes | None],
    message: str,
    *,
    branch: str | None = None,
    checked_clean: bool = False,
) -> Written:
    """Commits `changes` on top of `ref` (or on a new `branch` based on it)."""
    if branch is not None:
        name = check_branch_name(ws, branch)
        commit = ws.git.commit_files(
            f"refs/heads/{name}", ref.commit, changes, message, new_ref=True
        )
        return Written(commit, name)
    ws.writable(ref)
    if ref.checked_out and not checked_clean:
        dirty = ws.git.dirty_paths(changes)
        if dirty:
            raise Refused(
                f"{dirty[0]} has uncommitted changes; loomgit would overwrite them",
                hint="commit or stash them first; nothing was written",
            )
    if ref.from_remote is not None:
        commit = ws.git.commit_files(ref.ref, ref.commit, changes, message, new_ref=True)
        ws.git.track(ref.branch, ref.from_remote)
        return Written(commit, ref.branch, ref.from_remote)
    if ref.checked_out:
        commit = ws.git.commit_checked_out(ref.ref, ref.commit, changes, message)
    else:
        commit = ws.git.commit_files(ref.ref, ref.commit, changes, message)
    return Written(commit, ref.branch, behind=ws.branch_behind(ref.branch, commit))


def apply(ws: Workspace, planned: Plan, *, branch: str | None = None) -> Written:
    """Writes a plan; the target ref must not have moved since (compare-and-swap)."""
    return write(
        ws,
        planned.target,
        planned.changes(planned.env_file),
        planned.message,
        branch=branch,
        checked_clean=True,
    )
