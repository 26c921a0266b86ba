"""Activation and rollback: commits that change what an environment runs without a
promotion. Neither rewrites history; both refuse with nothing written when they cannot."""

from __future__ import annotations

from dataclasses import dataclass

from loomgit import credentials, envstate
from loomgit.documents import digest
from loomgit.models import WorkflowState
from loomgit.promotion import (
    Refused,
    Written,
    check_definition,
    credentials_in,
    load_workflow,
    now_utc,
    sanitise_notes,
    variables_in,
    write,
)
from loomgit.vcs import UNSHALLOW_HINT
from loomgit.workspace import Location, Workspace


@dataclass(frozen=True)
class Change:
    """A commit decided and not yet written: where it goes, what it changes, its message."""

    target: Location
    changes: dict[str, bytes | None]
    message: str

    @property
    def subject(self) -> str:
        return self.message.split("\n", 1)[0]

    def write(self, ws: Workspace, branch: str | None = None) -> Written:
        """Commits it on the target, or on a new `branch` based on it (for a pull request)."""
        return write(ws, self.target, self.changes, self.message, branch=branch)


@dataclass(frozen=True)
class Toggle:
    """An activation or a deactivation, decided: the commit, and what starts or stops."""

    change: Change
    version: int | None  # None in the first environment, which has revisions, not versions
    definition: bytes


def plan_active(ws: Workspace, name: str, env: str, active: bool, notes: str = "") -> Toggle | None:
    """Turns `name` on or off in `env`; None when it already is (nothing to write)."""
    loc = ws.location(env)
    files = ws.git.blobs_at(loc.commit, [loc.workflow(name), loc.env_file, loc.vars_file])
    definition = files[loc.workflow(name)]
    if definition is None:
        raise Refused(f"{name} is not in {env}", hint=ws.missing_hint(env, name))
    record = envstate.record(files[loc.env_file], name)
    if record is None and env != ws.config.first:
        raise Refused(
            f"{name} has no promotion record in {env}",
            hint="run `loomgit validate`; it was not promoted through loomgit",
        )
    if record is not None and record.active == active:
        return None
    if active:  # turning it off is never in the way
        _check_runnable(ws, name, definition, loc, variables_in(files[loc.vars_file]))
    updated = (
        record.model_copy(update={"active": active}) if record else WorkflowState(active=active)
    )
    verb = "Activate" if active else "Deactivate"
    text = sanitise_notes(notes)
    message = (
        f"{verb} {name} in {env}\n\n"
        + (f"{text}\n\n" if text else "")
        + f"Loomgit-Activation: {env} {name} {'active' if active else 'inactive'}\n"
    )
    changes: dict[str, bytes | None] = {
        loc.env_file: envstate.with_records(files[loc.env_file], env, {name: updated})
    }
    version = record.version if record else None
    return Toggle(Change(loc, changes, message), version, definition)


def _check_runnable(
    ws: Workspace, name: str, definition: bytes, loc: Location, variables: set[str] | None
) -> None:
    """Refuses to activate what the daemon could not serve: a definition that does not
    validate, or that uses a variable (of `variables`) or a credential `loc` lacks."""
    first = loc.env == ws.config.first
    then = "activate it" if first else f"promote it through to {loc.env} and activate it there"
    check_definition(ws, name, definition, loc, variables, then=then, where=f"{loc.env}'s")
    scoped, shared = credentials_in(ws, loc)
    only = frozenset(ws.config.scoped_only)
    for cred in load_workflow(definition, loc.workflow(name)).spec.credentials:
        if credentials.resolve(cred, scoped, shared, only) is None:
            raise Refused(
                f"{name} uses credential {cred}, which does not resolve in {loc.env}",
                hint=f"set it first: `loomgit credentials set {cred} --env {loc.env}`",
            )


@dataclass(frozen=True)
class Ran:
    """A version an environment ran, and a commit where it ran it."""

    version: int
    commit: str
    record: WorkflowState


def versions_run(ws: Workspace, name: str, env: str) -> list[Ran]:
    """The versions of `name` that `env` has run, newest first, one entry per version."""
    loc = ws.location(env)
    seen: dict[int, Ran] = {}
    log = ws.git.path_log(loc.commit, loc.env_file)
    blobs = ws.git.read_blobs(b for _, b in log if b)
    for commit, blob in log:
        if blob is None:
            continue
        rec = envstate.record(blobs[blob], name)
        if rec is not None and rec.version is not None and rec.version not in seen:
            seen[rec.version] = Ran(rec.version, commit, rec)
    return list(seen.values())


def unless_shallow(ws: Workspace, missing: str) -> None:
    """In a shallow clone, what is not found may lie before its cut-off: said so, rather
    than that the environment never ran it."""
    if ws.git.is_shallow():
        raise Refused(f"{missing} in this shallow clone's history", hint=UNSHALLOW_HINT)


@dataclass(frozen=True)
class Rollback:
    """A rollback, decided: the commit, the versions, and both definitions for a review."""

    change: Change
    old: int
    new: int
    active: bool
    current: bytes | None  # the definition `env` runs now
    restored: bytes  # the one it will run


def plan_rollback(
    ws: Workspace, name: str, env: str, to_version: int | None = None, notes: str = ""
) -> Rollback:
    """Puts back, as a new commit, a version `env` ran before."""
    if ws.check_env(env) == ws.config.first:
        raise Refused(
            f"{env} is the first environment; it has revisions, not versions",
            hint=f"use `loomgit revisions {name}` and `loomgit restore`",
        )
    loc = ws.location(env)
    files = ws.git.blobs_at(loc.commit, [loc.workflow(name), loc.env_file, loc.vars_file])
    current = envstate.record(files[loc.env_file], name)
    if current is None or current.version is None:
        raise Refused(
            f"{name} is not deployed to {env}; there is nothing to roll back",
            hint=ws.did_you_mean(env, name),
        )
    history = [r for r in versions_run(ws, name, env) if r.version != current.version]
    if to_version is None:
        if not history:
            unless_shallow(ws, f"no version of {name} before v{current.version}")
            raise Refused(f"{env} has only ever run v{current.version} of {name}")
        chosen = history[0]
    else:
        if to_version == current.version:
            raise Refused(f"{env} already runs v{to_version} of {name}")
        found = [r for r in history if r.version == to_version]
        if not found:
            unless_shallow(ws, f"v{to_version} of {name} is not")
            ran = ", ".join(f"v{r.version}" for r in sorted(history, key=lambda r: r.version))
            raise Refused(
                f"{env} never ran v{to_version} of {name}",
                hint=f"versions it ran before: {ran or 'none'}",
            )
        chosen = found[0]
    content = ws.git.blob_at(chosen.commit, loc.workflow(name))
    if content is None or digest(content) != chosen.record.digest:
        raise Refused(
            f"the definition of v{chosen.version} cannot be found at {chosen.commit[:12]}",
            hint="the history of this environment is damaged",
        )
    if current.active:  # it serves the version put back at once: it must be able to
        try:
            _check_runnable(ws, name, content, loc, variables_in(files[loc.vars_file]))
        except Refused as exc:
            raise Refused(
                f"v{chosen.version} of {name} cannot run in {env} as it is now: {exc.message}",
                hint=exc.hint,
            ) from None
    text = sanitise_notes(notes)
    note = f"Rollback of {name} in {env} from v{current.version} to v{chosen.version}"
    record = chosen.record.model_copy(
        update={
            "active": current.active,
            "rolled_back_from": max(current.version, current.rolled_back_from or 0),
            "promoted_by": ws.git.identity(),
            "promoted_at": now_utc(),
            "notes": f"{note}. {text}" if text else note,
        }
    )
    message = (
        f"Roll back {name} in {env} to v{chosen.version}\n\n"
        + (f"{text}\n\n" if text else "")
        + f"Loomgit-Rollback: {env} {name} v{current.version} -> v{chosen.version}\n"
    )
    changes: dict[str, bytes | None] = {
        loc.workflow(name): content,
        loc.env_file: envstate.with_records(files[loc.env_file], env, {name: record}),
    }
    return Rollback(
        Change(loc, changes, message),
        current.version,
        chosen.version,
        current.active,
        files[loc.workflow(name)],
        content,
    )
