"""`validate`: every rule over every environment of one snapshot of the repository."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loomgit import credrules, webpaths, yamlio
from loomgit.documents import DocumentCache, ParsedWorkflow, digest
from loomgit.layout import FileRef, Snapshot, snapshot
from loomgit.models import EnvironmentState, Variables, WorkflowState
from loomgit.parsestore import open_store
from loomgit.problems import Problem, first_changed_line, sort_key
from loomgit.vcs import Git, find_root


@dataclass(frozen=True)
class Report:
    """The outcome of a validation: problems (sorted) and what was looked at."""

    problems: list[Problem]
    environments: list[str]
    workflows: int
    source: str
    commits: list[str] = field(default_factory=list)  # check-promotion: what each one did
    validated: bool = True  # False: only the commits were checked (--no-validate)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class _Env:
    """What the cross-file rules know about one environment."""

    name: str
    workflows: dict[str, tuple[FileRef, ParsedWorkflow]] = field(default_factory=dict)
    variables: set[str] | None = None  # None: unknown, so variable rules are skipped
    state: EnvironmentState | None = None
    problems: list[Problem] = field(default_factory=list)


def _located(
    snap: Snapshot, ref: FileRef, keypath: Sequence[str | int], code: str, message: str
) -> Problem:
    """A problem at a key of `ref`; its line is filled in by positions."""
    return Problem(code, message, ref.path, keypath=tuple(keypath))


def positions(snap: Snapshot, problems: list[Problem]) -> list[Problem]:
    """Looks up the lines of key-path problems, reading each file once."""
    refs = {
        ref.path: ref
        for env in snap.envs.values()
        for ref in [*env.workflows, env.environment, env.variables]
        if ref is not None
    }
    pending: dict[str, list[int]] = {}
    for i, p in enumerate(problems):
        if p.line is None and p.keypath is not None and p.path in refs:
            pending.setdefault(p.path, []).append(i)
    out = list(problems)
    for path, indexes in pending.items():
        keypaths = [problems[i].keypath or () for i in indexes]
        for i, (line, col) in zip(
            indexes, yamlio.locate(snap.bytes_of(refs[path]), keypaths), strict=True
        ):
            out[i] = dataclasses.replace(problems[i], line=line, col=col, keypath=None)
    return out


def _read_env(snap: Snapshot, cache: DocumentCache, name: str) -> _Env:
    files = snap.envs[name]
    env = _Env(name, problems=list(files.problems))
    hooks: dict[tuple[str, str], str] = {}
    for ref in files.workflows:
        parsed = cache.workflow(ref.blob, functools.partial(snap.bytes_of, ref))
        env.problems.extend(p.at(ref.path) for p in parsed.problems)
        stem = ref.rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if stem in env.workflows:
            env.problems.append(
                Problem(
                    "LG301",
                    f"workflow '{stem}' is defined twice in {name} (also in "
                    f"{env.workflows[stem][0].path})",
                    ref.path,
                    1,
                    1,
                )
            )
            continue
        env.workflows[stem] = (ref, parsed)
        facts = parsed.facts
        if facts is None:
            continue
        if facts.name != stem:
            env.problems.append(
                _located(
                    snap,
                    ref,
                    ("metadata", "name"),
                    "LG300",
                    f"metadata.name is '{facts.name}' but the file is {stem}.yaml; they must match",
                )
            )
        for method, route, where in facts.webhooks:
            other = hooks.setdefault((method, webpaths.shape(route)), ref.path)
            if other != ref.path:
                env.problems.append(
                    _located(
                        snap,
                        ref,
                        where,
                        "LG302",
                        f"webhook {method} /{route} is also served by {other} in {name}",
                    )
                )
    if files.variables is not None:
        parsed_vars = cache.model(Variables, files.variables.blob, snap.bytes_of(files.variables))
        env.problems.extend(p.at(files.variables.path) for p in parsed_vars.problems)
        if parsed_vars.model is not None:
            env.variables = set(parsed_vars.model.variables)
    else:
        env.variables = set()
    if files.environment is not None:
        ref = files.environment
        parsed_state = cache.model(EnvironmentState, ref.blob, snap.bytes_of(ref))
        env.problems.extend(p.at(ref.path) for p in parsed_state.problems)
        env.state = parsed_state.model
        if env.state and env.state.environment not in (None, name):
            env.problems.append(
                _located(
                    snap,
                    ref,
                    ("environment",),
                    "LG404",
                    f"environment.yaml says it belongs to '{env.state.environment}', not '{name}'",
                )
            )
    return env


def _check_variables(snap: Snapshot, env: _Env) -> None:
    if env.variables is None:
        return
    var_file = snap.envs[env.name].variables
    for ref, parsed in env.workflows.values():
        for var, where in parsed.facts.variables if parsed.facts else ():
            if var not in env.variables:
                env.problems.append(
                    _located(
                        snap,
                        ref,
                        where,
                        "LG340",
                        f"vars.{var} is not defined in {var_file.path}"
                        if var_file
                        else f"vars.{var} is used but {env.name} has no variables.yaml",
                    )
                )


def _check_state(
    snap: Snapshot, cache: DocumentCache, env: _Env, index: int, previous: _Env | None
) -> None:
    files = snap.envs[env.name]
    state = env.state
    if state is None:
        if index > 0 and env.workflows and files.environment is None:
            env.problems.append(
                Problem(
                    "LG403",
                    f"{env.name} holds workflows but has no environment.yaml; "
                    "environments after the first change only through `loomgit promote`",
                    files.base + "environment.yaml",
                )
            )
        return
    assert files.environment is not None
    env_ref = files.environment
    for wf_name in state.workflows:
        if wf_name not in env.workflows:
            env.problems.append(
                _located(
                    snap,
                    env_ref,
                    ("workflows", wf_name),
                    "LG400",
                    f"workflow '{wf_name}' is listed but {env.name} has no "
                    f"workflows/{wf_name}.yaml"
                    + ("; to delete it, remove it from this list too" if index == 0 else ""),
                )
            )
    if index == 0:
        return
    for wf_name, (ref, parsed) in env.workflows.items():
        record = state.workflows.get(wf_name)
        if record is None:
            env.problems.append(
                Problem(
                    "LG403",
                    f"workflow '{wf_name}' has no promotion record in {env_ref.path}; "
                    f"change it in {snap.config.first} and run `loomgit promote`",
                    ref.path,
                    1,
                    1,
                )
            )
            continue
        if record.version is None or record.digest is None:
            missing = " and ".join(k for k in ("version", "digest") if getattr(record, k) is None)
            env.problems.append(
                _located(
                    snap,
                    env_ref,
                    ("workflows", wf_name),
                    "LG404",
                    f"promotion record of '{wf_name}' has no {missing}",
                )
            )
            continue
        if record.digest != parsed.digest:
            env.problems.append(
                Problem(
                    "LG401",
                    f"{wf_name} differs from v{record.version} as promoted to {env.name} "
                    f"(digest in {env_ref.path}); edit {snap.config.first} and promote instead",
                    ref.path,
                    _first_edited_line(snap, wf_name, record, snap.bytes_of(ref)),
                    1,
                )
            )
        if index >= 2 and previous is not None:
            _check_version(snap, cache, env, previous, wf_name, record.version)


def _first_edited_line(snap: Snapshot, name: str, record: WorkflowState, content: bytes) -> int:
    """Where a hand edit starts, so an annotation sits on it: the promoted content is read
    back from the commit it was promoted from, when that commit is here and matches the
    recorded digest; otherwise line 1."""
    source = snap.envs.get(record.promoted_from or "")
    if source is None or record.source_commit is None:
        return 1
    promoted = snap.git.blob_at(record.source_commit, f"{source.base}workflows/{name}.yaml")
    if promoted is None or digest(promoted) != record.digest:
        return 1
    return first_changed_line(promoted, content)


def _check_version(
    snap: Snapshot, cache: DocumentCache, env: _Env, previous: _Env, wf_name: str, version: int
) -> None:
    prev_state = previous.state
    if prev_state is None:
        return  # the predecessor's record is unreadable, and that is reported already
    prev = prev_state.workflows.get(wf_name)
    if prev is not None and prev.version is not None and prev.version >= version:
        return
    if snap.ever_held(previous.name, wf_name, version, cache):
        return  # the predecessor has since been rolled back; that is legal
    env_ref = snap.envs[env.name].environment
    assert env_ref is not None
    env.problems.append(
        _located(
            snap,
            env_ref,
            ("workflows", wf_name, "version"),
            "LG402",
            f"{wf_name} is v{version} in {env.name}, but {previous.name} never had v{version}; "
            "promotions go through every environment in order",
        )
    )


def check_by_env(snap: Snapshot, cache: DocumentCache) -> dict[str, list[Problem]]:
    """The problems of each environment of the snapshot (one that two environments
    share, such as a bad loomgit.yaml, is in both)."""
    envs = [_read_env(snap, cache, name) for name in snap.config.names]
    for i, env in enumerate(envs):
        _check_variables(snap, env)
        env.problems.extend(credrules.check(snap, env.name, env.workflows))
        _check_state(snap, cache, env, i, envs[i - 1] if i else None)
    return {e.name: list(dict.fromkeys(e.problems)) for e in envs}


def check(snap: Snapshot, cache: DocumentCache, only: str | None = None) -> list[Problem]:
    """All problems of the snapshot; with `only`, just that environment's."""
    seen: dict[Problem, None] = {}
    for name, problems in check_by_env(snap, cache).items():
        if only in (None, name):
            seen.update(dict.fromkeys(problems))
    return sorted(positions(snap, list(seen)), key=sort_key)


def validate(
    path: Path,
    rev: str | None = None,
    env: str | None = None,
    cache: DocumentCache | None = None,
    *,
    reuse: bool = True,
) -> Report:
    """Validates the repository at `path` (work tree, or commit `rev`). Unless `reuse` is
    False, what earlier runs found about unchanged files is reused (see `parsestore`)."""
    root = find_root(path, rev)
    with Git(root.toplevel) as git:
        cache = cache or DocumentCache(open_store(git, reuse))
        snap = snapshot(root, git, cache, rev, env_hint=env)
        problems = check(snap, cache, env)
        if cache.store is not None:
            cache.store.save()
        names = [n for n in snap.config.names if env in (None, n)]
        count = sum(len(snap.envs[n].workflows) for n in names)
        return Report(problems, names, count, snap.source)


def to_json(report: Report) -> list[dict[str, Any]]:
    return [p.to_json() for p in report.problems]
