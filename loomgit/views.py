"""Read-only views of the pipeline (status, snapshots, history) and restoring a revision."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from loomgit import envstate, yamlio
from loomgit.credentials import GLOBAL_FILE_BRANCHES, GLOBAL_FILE_DIRECTORIES, SCOPED_FILE
from loomgit.credops import sops_config_path
from loomgit.diff import WorkflowDiff, compare
from loomgit.documents import blob_id, digest
from loomgit.errors import LoomgitError, RepositoryError, UsageError
from loomgit.lifecycle import unless_shallow, versions_run
from loomgit.models import WorkflowState
from loomgit.problems import headline
from loomgit.promotion import (
    Written,
    check_branch_name,
    load_workflow,
    next_version,
    now_utc,
    resolving,
    write,
)
from loomgit.workspace import Location, Workspace

_TRAILER = re.compile(r"^(Loomgit-[A-Za-z-]+):\s*(.*)$")


@dataclass(frozen=True)
class Cell:
    version: int | None
    active: bool
    rolled_back_from: int | None = None


@dataclass
class Row:
    name: str
    cells: dict[str, Cell | None] = field(default_factory=dict)
    pending: str | None = None  # "new" (never promoted) or "changed" (edited since)


@dataclass
class Status:
    environments: list[dict[str, str]]
    rows: list[Row]

    def to_json(self) -> dict[str, Any]:
        return {"environments": self.environments, "workflows": [asdict(r) for r in self.rows]}


def _blobs(ws: Workspace, loc: Location) -> dict[str, str]:
    folder = loc.path("workflows/")
    out = {}
    for entry in ws.git.ls_tree(loc.commit, folder):
        rel = entry.path[len(folder) :]
        if "/" not in rel and rel.endswith(".yaml"):
            out[rel[: -len(".yaml")]] = entry.sha
    return out


def status(ws: Workspace) -> Status:
    """The environment bar: version and activation per workflow and environment, and
    whether the first environment holds committed changes not yet promoted."""
    names = ws.config.names
    envs, blobs, records = [], {}, {}
    for env in names:
        loc = ws.location(env)
        envs.append({"name": env, "branch": loc.from_remote or loc.branch, "commit": loc.commit})
        blobs[env] = _blobs(ws, loc)
        records[env] = envstate.summaries(ws.git.blob_at(loc.commit, loc.env_file))
    rows = []
    for name in sorted({n for env in names for n in blobs[env]}):
        row = Row(name)
        for env in names:
            rec = records[env].get(name)
            if name not in blobs[env]:
                row.cells[env] = None
            else:
                row.cells[env] = Cell(
                    rec.version if rec else None,
                    bool(rec and rec.active),
                    rec.rolled_back_from if rec else None,
                )
        if len(names) > 1 and name in blobs[names[0]]:
            second = blobs[names[1]].get(name)
            row.pending = (
                "new"
                if second is None
                else ("changed" if second != blobs[names[0]][name] else None)
            )
        rows.append(row)
    return Status(envs, rows)


@dataclass(frozen=True)
class Snapshot:
    """A workflow's definition as one environment holds it at one commit, and its record
    in that environment's environment.yaml there (None in the first environment until it
    is activated, or for a file no loomgit command wrote)."""

    workflow: str
    environment: str
    commit: str
    path: str
    data: bytes
    record: WorkflowState | None

    def to_json(self) -> dict[str, Any]:
        """For `show --format json`: the YAML as committed, and parsed (null when it does
        not parse, or holds a mapping key JSON cannot: `loomgit validate` says why). Dates
        and sets, which YAML has and JSON lacks, become their text."""
        try:
            definition = json.loads(json.dumps(yamlio.load(self.data), default=str))
        except (yamlio.YamlFailure, TypeError):  # TypeError: a key such as `? [a, b]`
            definition = None
        rec = self.record
        return {
            "workflow": self.workflow,
            "environment": self.environment,
            "commit": self.commit,
            "path": self.path,
            "version": rec.version if rec else None,
            "active": bool(rec and rec.active),
            "record": rec.model_dump(mode="json", exclude_none=True) if rec else None,
            "definition": definition,
            "yaml": self.data.decode("utf-8", "replace"),
        }


def show(ws: Workspace, name: str, env: str | None, version: int | None) -> Snapshot:
    """A workflow as an environment runs it (or ran it, at `version`)."""
    env = ws.check_env(env or ws.config.first)
    loc = ws.location(env)
    path = loc.workflow(name)
    if version is None:
        data = ws.git.blob_at(loc.commit, path)
        if data is None:
            raise LoomgitError(f"{name} is not in {env}", hint=ws.missing_hint(env, name))
        record = envstate.record(ws.git.blob_at(loc.commit, loc.env_file), name)
        return Snapshot(name, env, loc.commit, path, data, record)
    if env == ws.config.first:
        raise LoomgitError(
            f"{env} has revisions, not versions",
            hint=f"see `loomgit revisions {name}`, or pass --env",
        )
    ran = versions_run(ws, name, env)
    for each in ran:
        if each.version == version:
            data = ws.git.blob_at(each.commit, path)
            if data is not None:
                return Snapshot(name, env, each.commit, path, data, each.record)
    if not ran and ws.git.blob_at(loc.commit, path) is None:
        raise LoomgitError(f"{name} is not in {env}", hint=ws.missing_hint(env, name))
    unless_shallow(ws, f"v{version} of {name} is not")
    versions = ", ".join(f"v{r.version}" for r in sorted(ran, key=lambda r: r.version))
    raise LoomgitError(
        f"{env} never ran v{version} of {name}", hint=f"versions it ran: {versions or 'none'}"
    )


@dataclass(frozen=True)
class Event:
    commit: str
    author: str
    date: str
    kind: str  # promotion, activation, rollback, restore, change
    subject: str
    notes: str
    details: list[str]


def parse_message(message: str) -> tuple[str, str, dict[str, list[str]]]:
    """Subject, notes and loomgit trailers (read from the last paragraph only)."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    subject = paragraphs[0].splitlines()[0] if paragraphs else ""
    trailers: dict[str, list[str]] = {}
    body = paragraphs[1:]
    if body and all(_TRAILER.match(ln) for ln in body[-1].splitlines()):
        for ln in body[-1].splitlines():
            match = _TRAILER.match(ln)
            assert match is not None
            trailers.setdefault(match.group(1), []).append(match.group(2).strip())
        body = body[:-1]
    return subject, "\n\n".join(body).strip(), trailers


def _kind(trailers: dict[str, list[str]]) -> str:
    for key, kind in (
        ("Loomgit-Promotion", "promotion"),
        ("Loomgit-Rollback", "rollback"),
        ("Loomgit-Activation", "activation"),
        ("Loomgit-Restore", "restore"),
        ("Loomgit-Credential", "credential"),
        ("Loomgit-Keys", "keys"),
    ):
        if key in trailers:
            return kind
    return "change"


# Events about an environment's secrets rather than a workflow, and the trailer naming
# the environment each concerns first ("staging shop set", "global shop set").
_SECRET_EVENTS = {"credential": "Loomgit-Credential", "keys": "Loomgit-Keys"}


def _secrets_of(ws: Workspace, loc: Location) -> list[str]:
    """The files holding `loc`'s credentials and their recipients."""
    shared = (
        ws.root.prefix + GLOBAL_FILE_DIRECTORIES
        if ws.config.layout == "directories"
        else GLOBAL_FILE_BRANCHES
    )
    return [loc.path(SCOPED_FILE), shared, sops_config_path(ws)]


def history(ws: Workspace, name: str | None, env: str | None, limit: int = 200) -> list[Event]:
    """Promotions, activations and rollbacks read back from git, newest first; without
    `name`, credential and key changes too (with `env`, those of `env` and the global
    file)."""
    envs = [ws.check_env(env)] if env else ws.config.names
    spans: dict[str, list[str]] = {}
    for e in envs:
        loc = ws.location(e)
        paths = spans.setdefault(loc.commit, [])
        for path in [loc.env_file, *([] if name else _secrets_of(ws, loc))]:
            if path not in paths:
                paths.append(path)
    events: dict[str, Event] = {}
    for commit, paths in spans.items():
        out = ws.git.run(
            "log",
            f"--max-count={limit}",
            "--format=%H%x00%an <%ae>%x00%aI%x00%B%x01",
            commit,
            "--",
            *paths,
        )
        for record in out.decode("utf-8", "replace").split("\x01"):
            if not record.strip():
                continue
            sha, author, date, message = record.strip("\n").split("\0", 3)
            subject, notes, trailers = parse_message(message)
            details = [
                f"{k.removeprefix('Loomgit-')}: {v}" for k, vs in trailers.items() for v in vs
            ]
            kind = _kind(trailers)
            if kind in _SECRET_EVENTS and (
                name
                or (
                    env
                    and not any(
                        v.split(" ", 1)[0] in (env, "global")
                        for v in trailers[_SECRET_EVENTS[kind]]
                    )
                )
            ):
                continue
            if (
                name
                and not any(
                    re.search(rf"(^|\s){re.escape(name)}(\s|$)", v)
                    for vs in trailers.values()
                    for v in vs
                )
                and name not in subject.split()
            ):
                continue
            events[sha] = Event(sha, author, date, kind, subject, notes, details)
    return sorted(events.values(), key=lambda e: e.date, reverse=True)[:limit]


@dataclass(frozen=True)
class Revision:
    commit: str
    author: str
    date: str
    subject: str


def revisions(ws: Workspace, name: str, limit: int = 200) -> list[Revision]:
    """Commits that changed `name` in the first environment, newest first."""
    loc = ws.location(ws.config.first)
    out = ws.git.run(
        "log",
        f"--max-count={limit}",
        "--format=%H%x00%an <%ae>%x00%aI%x00%s",
        loc.commit,
        "--",
        loc.workflow(name),
    )
    revs = [
        Revision(*line.split("\0", 3))
        for line in out.decode("utf-8", "replace").splitlines()
        if line
    ]
    if not revs:
        raise LoomgitError(
            f"{name} has no revisions in {ws.config.first}",
            hint=ws.did_you_mean(ws.config.first, name),
        )
    return revs


@dataclass(frozen=True)
class Restored:
    written: Written | None  # None: the first environment already had that revision
    backup: str | None
    problem: str | None = None  # why the restored definition does not validate
    revision: str = ""  # the commit it was restored from
    subject: str = ""  # of the commit written


def restore(ws: Workspace, name: str, revision: str, branch: str | None = None) -> Restored:
    """Writes revision `revision` of `name` back as a new commit in the first environment,
    after saving uncommitted edits of that workflow under refs/loomgit/backups/; or, with
    `branch`, on a new branch for a pull request, leaving the work tree as it is."""
    if branch is not None:
        check_branch_name(ws, branch)
    loc = ws.location(ws.config.first)
    path = loc.workflow(name)
    rev = ws.git.resolve(revision)
    content = ws.git.blob_at(rev, path)
    if content is None:
        raise RepositoryError(
            f"{name} does not exist at {revision}", hint=f"see `loomgit revisions {name}`"
        )
    backup = None
    disk = ws.root.toplevel / path
    if branch is None:
        ws.writable(loc)  # before any backup is made
    if branch is None and loc.checked_out and ws.git.dirty_paths([path]):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        backup = f"refs/loomgit/backups/{name}/{stamp}"
        saved = disk.read_bytes() if disk.exists() else None
        ws.git.commit_files(
            backup,
            loc.commit,
            {path: saved},
            f"Backup of uncommitted {name} before restoring {rev[:12]}",
            new_ref=True,
        )
    parsed = ws.cache.workflow(blob_id(content), content)
    problem = None
    if parsed.problems:  # restored all the same: it is what was asked for, and nothing is lost
        found, more = headline(parsed.problems)
        problem = found.at(path).render() + more
    subject = f"Restore {name} to revision {rev[:12]}"
    if ws.git.blob_at(loc.commit, path) == content:
        if backup:
            ws.git.refresh_paths({path: content})
        return Restored(None, backup, problem, rev, subject)
    message = f"{subject}\n\nLoomgit-Restore: {name} {rev}\n"
    # Uncommitted edits were saved above; a branch leaves the work tree alone.
    written = write(ws, loc, {path: content}, message, branch=branch, checked_clean=True)
    return Restored(written, backup, problem, rev, subject)


def compare_envs(ws: Workspace, name: str, from_env: str | None, to_env: str) -> WorkflowDiff:
    """What would change in `to_env` if `name` as `from_env` has it replaced it; without
    `from_env`, from the environment just before `to_env` (where a promotion comes from)."""
    if from_env is None:
        from_env = ws.previous(to_env)
        if from_env is None:
            raise UsageError(
                f"{to_env} is the first environment: it is edited, never promoted into",
                hint=f"loomgit diff {name} --to {ws.next(to_env)}" if ws.next(to_env) else None,
            )
    src, dst = ws.location(from_env), ws.location(to_env)
    order = ws.config.names
    if order.index(to_env) <= order.index(from_env):  # no promotion goes there
        raise UsageError(
            f"--to {to_env} does not come after --from {from_env}; "
            f"promotions go {' -> '.join(order)}",
            hint=None
            if to_env == from_env
            else f"loomgit diff {name} --from {to_env} --to {from_env}",
        )
    new = ws.git.blob_at(src.commit, src.workflow(name))
    if new is None:
        raise LoomgitError(f"{name} is not in {from_env}", hint=ws.missing_hint(from_env, name))
    old = ws.git.blob_at(dst.commit, dst.workflow(name))
    rec_src = envstate.record(ws.git.blob_at(src.commit, src.env_file), name)
    rec_dst = envstate.record(ws.git.blob_at(dst.commit, dst.env_file), name)
    active = bool(rec_dst and rec_dst.active)
    if rec_dst is not None and rec_dst.digest == digest(new):
        after = rec_dst.version  # the same definition: nothing to promote
    elif from_env == ws.config.first:
        after = next_version(ws, name, {})  # the version a promotion would give it
    else:
        after = rec_src.version if rec_src else None
    model = load_workflow(new, src.workflow(name))
    return compare(
        name,
        model,
        load_workflow(old, dst.workflow(name)) if old else None,
        source_env=from_env,
        target_env=to_env,
        version_before=rec_dst.version if rec_dst else None,
        version_after=after,
        now=now_utc(),
        resolves=resolving(ws, dst, model),  # as `promote --dry-run` says
        active_before=active,
        active_after=active,  # a promotion keeps it; --activate is the promotion's choice
    )
