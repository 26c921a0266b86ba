"""Reconciling: what git says each environment runs, made into what the daemon serves.

A cycle is an ordered list of small steps (read the source → validate → decrypt → build →
swap), after Flux: an environment whose new commit fails any step keeps serving its last
good state, and its status says which step failed and why. Status keeps the last applied
and the last attempted commit, and conditions with a reason.

The last applied commit of each environment is also kept in the state folder
(`AppliedRecord`), so that a restart does not lose it: an environment whose newest commit
fails at start-up serves the commit it served before, as a running daemon would have gone
on doing. And with `--remote`, a source that cannot be reached at start-up leaves the
daemon serving the commit it fetched last.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import BrokenExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loomgit import desired, log, webpaths
from loomgit.documents import PARALLEL_MIN, DocumentCache, Mapper
from loomgit.errors import LoomgitError
from loomgit.gitcache import CachingGit, GitCache
from loomgit.layout import Snapshot, branch_tip, snapshot
from loomgit.models.state import EnvironmentState, WorkflowState
from loomgit.models.steps import Installed, forget_plugins, installed_plugins
from loomgit.models.workflow import ApiTrigger, ScheduleTrigger, WebhookTrigger
from loomgit.problems import Problem, headline
from loomgit.records import iso
from loomgit.runtime import Deployment
from loomgit.sops import KeyMissing, SopsError, no_key
from loomgit.source import RemoteSource
from loomgit.validate import check_by_env, positions
from loomgit.vcs import Git, Root, find_root, head_commit
from loomgit.webpaths import Pattern


@dataclass(frozen=True)
class Served:
    """What one environment serves: every workflow it holds, and the triggers of the
    active ones. Swapped as a whole, so a request sees one commit or the next."""

    commit: str
    deployments: dict[str, Deployment]
    active: frozenset[str]
    routes: dict[tuple[str, str], WebhookTrigger]  # (method, literal path) -> its trigger
    hooks: dict[tuple[str, str], str]  # (method, path) -> workflow, paths with :params too
    api: frozenset[str]
    schedules: tuple[tuple[str, ScheduleTrigger], ...]  # (workflow, trigger)
    inputs: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # what each was built from
    methods: dict[str, tuple[str, ...]] = field(default_factory=dict)  # literal path -> methods
    # method -> the paths with :params, in the order requests are matched (`webpaths`)
    patterns: dict[str, tuple[Pattern[WebhookTrigger], ...]] = field(default_factory=dict)


@dataclass
class Condition:
    type: str
    status: bool
    reason: str
    message: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "last_transition": iso(self.at),
        }


MAX_EVENTS = 20
NO_STATE = WorkflowState()  # a workflow environment.yaml does not list (immutable: shared)


@dataclass
class EnvStatus:
    name: str
    last_applied_commit: str | None = None
    last_attempted_commit: str | None = None
    applied_at: float | None = None
    conditions: list[Condition] = field(default_factory=list)
    events: deque[Condition] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))

    def set_ready(self, ok: bool, reason: str, message: str, now: float) -> None:
        self.conditions = [Condition("Ready", ok, reason, message, now)]

    def note(self, reason: str, message: str, now: float) -> None:
        """Something the operator should know that did not stop the apply."""
        self.events.append(Condition("Event", True, reason, message, now))
        log.event(reason, logging.WARNING, environment=self.name, message=message)


@dataclass
class AppliedRecord:
    """`applied.json` in the state folder: per repository (its folder), the commit each
    environment last applied and when. Written whole, atomically, when one changes; one
    that cannot be read or written is logged and otherwise ignored (it only helps a
    restart)."""

    path: Path

    def read(self, repo: str) -> dict[str, tuple[str, float]]:
        try:
            doc = json.loads(self.path.read_text())
            envs = doc["repositories"].get(repo, {})
            return {n: entry for n, e in envs.items() if (entry := _entry(e))}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.event("applied commits not read", logging.WARNING, path=str(self.path),
                      error=str(exc) or type(exc).__name__)  # fmt: skip
            return {}

    def write(
        self, repo: str, applied: dict[str, tuple[str, float]], removed: Iterable[str] = ()
    ) -> None:
        """Keeps `applied` for `repo` without the `removed` environments, and what the
        file holds for other repositories. Read, changed and replaced under a lock on
        `applied.json.lock`, so that two daemons sharing the state folder never write
        over each other's entries."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._write(repo, applied, removed)
        except OSError as exc:
            log.event("applied commits not kept", logging.WARNING, path=str(self.path),
                      error=str(exc))  # fmt: skip

    def _write(
        self, repo: str, applied: dict[str, tuple[str, float]], removed: Iterable[str]
    ) -> None:
        try:  # what other repositories' daemons keep here stays
            doc = json.loads(self.path.read_text())
            repos = dict(doc["repositories"])
            mine = {n: e for n, e in dict(repos.get(repo) or {}).items() if _entry(e)}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            repos, mine = {}, {}
        mine.update({n: {"commit": c, "applied_at": at} for n, (c, at) in applied.items()})
        for name in removed:
            mine.pop(name, None)
        repos[repo] = mine
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("w") as f:
            json.dump({"version": 1, "repositories": repos}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _entry(value: Any) -> tuple[str, float] | None:
    """An environment's (commit, applied at) in `applied.json`; None for anything else."""
    if not isinstance(value, dict):
        return None
    commit, at = value.get("commit"), value.get("applied_at")
    if not isinstance(commit, str) or not isinstance(at, int | float):
        return None
    return commit, float(at)


class Failed(Exception):
    """A step of the cycle failed for one environment; `reason` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Reconciler:
    """Reads the repository at `path` and keeps `served` and `status` per environment."""

    path: Path
    keys: dict[str, Path]
    environments: list[str] | None = None  # None: all of loomgit.yaml's
    source: RemoteSource | None = None  # --remote: fetched into `path` first
    pool: Mapper | None = None  # worker processes that parse large changes
    clock: Callable[[], float] = time.time
    served: dict[str, Served] = field(default_factory=dict)
    status: dict[str, EnvStatus] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    pipeline: list[str] = field(default_factory=list)  # loomgit.yaml's, served here or not
    applied: AppliedRecord | None = None  # kept across restarts (in the state folder)
    cache: DocumentCache = field(default_factory=DocumentCache)
    gitcache: GitCache = field(default_factory=GitCache)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _before: dict[str, tuple[str, float]] | None = None  # applied before this process
    _kept: dict[str, str] = field(default_factory=dict)  # as last written to `applied`
    _removal_waits: set[str] = field(default_factory=set)  # told RemovalWaits, still served
    _invalid: set[str] = field(default_factory=set)  # restored though no longer valid: _restore
    _reading: str | None = None  # the commit the cycle reads, once resolved
    _layout: str | None = None  # as last read: with "directories", HEAD is every env's commit
    _plugins: Installed | None = None  # the step types packages registered at the last check
    read_error: str | None = None  # why the last cycle could not read the repository

    def cycle(self) -> dict[str, EnvStatus]:
        """One reconcile of every served environment; never raises for bad input."""
        with self._lock:
            now = self.clock()
            if self._before is None:  # the first cycle: what was applied before a restart
                self._before = self.applied.read(self._repo_key()) if self.applied else {}
            unreachable: LoomgitError | None = None
            reason = "FetchFailed"
            try:
                if self.source is not None:
                    try:
                        self.source.sync()
                    except LoomgitError as exc:
                        if self.served or self.source.checked_out() is None:
                            raise
                        unreachable = exc  # nothing served yet: the commit fetched last
                reason = "ReadFailed"
                with _collector_paused():
                    snap, git = self._read()
            except LoomgitError as exc:
                # The last applied state keeps running; the status says why nothing new is.
                self.read_error = exc.explained()
                if not self.served and reason == "ReadFailed":
                    self._restore_unread(now)
                self._not_read(reason, exc, now)
                return self.status
            self.read_error = None
            try:
                with _collector_paused():
                    self._apply(snap, git, now)
            finally:
                git.close()
                self.gitcache.retain()
            self._remove_unlisted(snap, now)
            self._keep_applied()
            if unreachable is not None:
                self._not_read("FetchFailed", unreachable, now)
            return self.status

    def _not_read(self, reason: str, exc: LoomgitError, now: float) -> None:
        message = exc.explained()
        for name in self.names or self.environments or []:
            st = self.status.setdefault(name, EnvStatus(name))
            if reason == "ReadFailed" and self._reading and self._layout == "directories":
                st.last_attempted_commit = self._reading
            st.set_ready(False, reason, message, now)

    def _restore_unread(self, now: float) -> None:
        """After a restart onto a commit whose loomgit.yaml cannot be read, or no longer
        lists an environment `--environments` names: serves each environment's commit
        applied before the restart, as `_restore` does for one whose own files fail.
        Their status then says why HEAD is not applied."""
        wanted = [n for n in self._before or {} if not self.environments or n in self.environments]
        if not wanted:  # none applied before, or already tried: nothing to read again
            return
        newest = max((self._before or {}).values(), key=lambda before: before[1])[0]
        try:
            root = find_root(self.path, newest)  # HEAD may have deleted loomgit.yaml
        except LoomgitError:
            return
        pipeline: list[str] = []
        with CachingGit(root.toplevel, self.gitcache) as git:
            for name in wanted:
                pipeline = self._restore(root, git, name, None, now) or pipeline
        if pipeline:
            self.names = [n for n in pipeline if n in self.served]
            self.pipeline = pipeline

    def _repo_key(self) -> str:
        return str(Path(self.path).resolve())

    def _keep_applied(self) -> None:
        """Writes the applied commits to `applied` when one changed; those of removed
        environments go."""
        applied = {
            n: (st.last_applied_commit, st.applied_at or 0.0)
            for n, st in self.status.items()
            if st.last_applied_commit is not None
        }
        if self.applied is None or {n: c for n, (c, _) in applied.items()} == self._kept:
            return
        removed = [n for n in self._kept if n not in self.status]
        self.applied.write(self._repo_key(), applied, removed)
        self._kept = {n: c for n, (c, _) in applied.items()}

    def _remove_unlisted(self, snap: Snapshot, now: float) -> None:
        """Stops serving the environments that loomgit.yaml no longer lists (webhooks,
        schedules, API trigger, status), once the first environment has applied the
        commit that says so: the first holds the repository's own problems (a folder
        left behind by the removed environment, LG501), and a commit that does not
        validate changes nothing that runs. Until then the removed environment serves as
        before, and its status says why."""
        for name in self._removal_waits.intersection(self.names):
            self._removal_waits.discard(name)
            back = self.status.get(name)
            if back is not None:
                back.note(
                    "RemovalCancelled",
                    "back in loomgit.yaml before its removal applied; it goes on serving",
                    now,
                )
        gone = [n for n in {**self.served, **self.status} if n not in self.names]
        if not gone:
            return
        first = self.status.get(snap.config.first)
        if first is None or not first.conditions or not first.conditions[0].status:
            for name in gone:
                st = self.status.get(name)
                if st is not None and name not in self._removal_waits:
                    self._removal_waits.add(name)
                    st.note(
                        "RemovalWaits",
                        "no longer in loomgit.yaml; it serves its last applied commit until "
                        f"{snap.config.first} applies a commit that removes it",
                        now,
                    )
            return
        # Whole new dicts, each one assignment: the event loop may be reading the old.
        self.served = {n: s for n, s in self.served.items() if n in self.names}
        self.status = {n: st for n, st in self.status.items() if n in self.names}
        for name in gone:
            log.event("environment removed", environment=name, commit=snap.source[:12])
            self._removal_waits.discard(name)

    def _apply(self, snap: Snapshot, git: Git, now: float) -> None:
        problems: dict[str, list[Problem]] | None = None
        for name in self.names:
            if self._changed(snap, name) and problems is None:
                self._plugins_installed()
                self._preload(snap)
                problems = check_by_env(snap, self.cache)  # once for every environment
            self._environment(snap, git, name, problems or {}, now)
        if problems is not None:
            self.cache.retain(set(snap.data))

    def _plugins_installed(self) -> None:
        """After a package adding step types was installed (or removed) beside the
        daemon, the workflows that use such types, or did not validate, are checked again
        with the step types installed now: no restart needed."""
        installed = installed_plugins()
        if self._plugins is not None and installed != self._plugins:
            forget_plugins()
            self.cache.forget_plugin_steps()
        self._plugins = installed

    @property
    def last_environment(self) -> str | None:
        """Where an API call with no environment runs: the pipeline's last."""
        return self.pipeline[-1] if self.pipeline else None

    def _read(self) -> tuple[Snapshot, Git]:
        self._reading = None
        try:
            root = find_root(self.path, "HEAD")
        except LoomgitError:
            self._reading = head_commit(Path(self.path))  # one that deleted loomgit.yaml
            raise
        git = CachingGit(root.toplevel, self.gitcache)
        try:
            head = self._reading = git.resolve("HEAD")
            snap = snapshot(root, git, self.cache, head)
            self._layout = snap.config.layout
            if snap.config.layout == "branches":
                first = snap.config.names[0]
                branch = snap.config.branch_of(first)
                tip = branch_tip(git, snap.config, first)  # here or on origin
                if tip is None:
                    raise LoomgitError(
                        f"the first environment '{first}' has no branch '{branch}': its"
                        " loomgit.yaml is the one every environment is read with"
                    )
                snap = snapshot(root, git, self.cache, tip, env_hint=first)
        except BaseException:
            git.close()
            raise
        wanted = self.environments or snap.config.names
        unknown = [n for n in wanted if n not in snap.config.names]
        if unknown:
            git.close()
            raise LoomgitError(f"unknown environment '{unknown[0]}' in --environments")
        self.names = [n for n in snap.config.names if n in wanted]  # in the pipeline's order
        self.pipeline = list(snap.config.names)
        return snap, git

    def _preload(self, snap: Snapshot) -> None:
        """Parses a large change's new workflows in the worker processes; meanwhile this
        one reads the environment.yaml files (which grow with the number of workflows)."""
        refs = {ref.blob: ref for name in self.names for ref in snap.envs[name].workflows}
        new = [ref for blob, ref in refs.items() if not self.cache.has_workflow(blob)]
        if len(new) < PARALLEL_MIN or self.pool is None:
            return
        items = {ref.blob: snap.bytes_of(ref) for ref in new}
        states = [f.environment for f in snap.envs.values() if f.environment is not None]
        with ThreadPoolExecutor(1, thread_name_prefix="loomgit-parse") as waiter:
            parsed = waiter.submit(self.cache.preload, items, self.pool)
            for ref in states:
                self.cache.model(EnvironmentState, ref.blob, snap.bytes_of(ref))
            try:
                parsed.result()
            except (OSError, BrokenExecutor) as exc:
                # The cycle goes on: what the workers did not parse is parsed here.
                log.event("parse workers failed", logging.WARNING, error=str(exc))

    def _changed(self, snap: Snapshot, name: str) -> bool:
        current = self.served.get(name)
        return current is None or current.commit != (snap.envs[name].commit or snap.source)

    def _environment(
        self,
        snap: Snapshot,
        git: Git,
        name: str,
        problems: dict[str, list[Problem]],
        now: float,
    ) -> None:
        st = self.status.setdefault(name, EnvStatus(name))
        commit = snap.envs[name].commit or snap.source
        if snap.config.layout == "directories" or snap.envs[name].commit is not None:
            st.last_attempted_commit = commit  # not the first's commit for a missing branch
        current = self.served.get(name)
        if current is not None and current.commit == commit:
            # Nothing to apply; after a failed newer commit was reverted, it is Ready again
            # (unless that commit is one restored that no longer validates: see _restore).
            if name not in self._invalid and (not st.conditions or not st.conditions[0].status):
                st.set_ready(True, "Ready", _serving(current), now)
            return
        try:
            served = self._build(snap, name, commit, problems.get(name, []))
            before = (self._before or {}).get(name)  # after a restart: what it served
            if not served.deployments and (
                (current is not None and current.deployments)
                or (current is None and before is not None and before[0] != commit)
            ):
                decl = next(e for e in snap.config.environments if e.name == name)
                if not decl.allow_empty:
                    serves = (
                        f"it serves {len(current.deployments)}"
                        if current is not None
                        else f"it served {before[0][:12] if before else '?'} before the restart"
                    )
                    raise Failed(
                        "EmptyEnvironment",
                        f"{commit[:12]} leaves {name} with no workflows ({serves}); set "
                        f"allow_empty: true for {name} in loomgit.yaml if that is meant",
                    )
        except Failed as exc:
            st.set_ready(False, exc.reason, str(exc), now)
            if current is None:
                self._restore(snap.root, git, name, commit, now)
            return
        old = st.last_applied_commit
        if old is not None and old != commit and not git.is_ancestor(old, commit):
            st.note(
                "HistoryRewritten",
                f"{commit[:12]} does not descend from the last applied {old[:12]}; applied anyway",
                now,
            )
        self.served[name] = served  # one assignment: requests see the old or the new
        self._invalid.discard(name)
        st.last_applied_commit = commit
        st.applied_at = now
        st.set_ready(True, "Ready", _serving(served), now)

    def _restore(
        self, root: Root, git: Git, name: str, failed: str | None, now: float
    ) -> list[str] | None:
        """After a restart, `failed` (the environment's newest commit; None: the
        repository's loomgit.yaml) cannot be applied: serves the commit applied before the
        restart instead, if it still can be, and returns the pipeline as it was then. The
        status keeps saying why `failed` is not applied. Tried once per process.

        It ran before the restart, so a rule it breaks that the loomgit which applied it
        did not check (an upgrade that validates more) does not stop it: the same commit
        is served again, and the status says why no later one is. A commit that cannot
        be read or decrypted now is not served."""
        before = (self._before or {}).pop(name, None)
        if before is None:
            return None
        commit, applied_at = before
        try:
            old = snapshot(root, git, self.cache, commit, env_hint=name)
            problems = check_by_env(old, self.cache).get(name, [])
            served = self._build(old, name, commit, problems, validated=False)
        except (LoomgitError, Failed) as exc:
            log.event("last applied commit not restored", logging.WARNING, environment=name,
                      commit=commit, error=str(exc))  # fmt: skip
            return None
        self.served[name] = served
        if any(p.severity == "error" for p in problems):
            self._invalid.add(name)
        self._layout = self._layout or old.config.layout
        st = self.status.setdefault(name, EnvStatus(name))
        st.last_applied_commit, st.applied_at = commit, applied_at
        if failed == commit:
            said = (
                f"{commit[:12]}, applied before the restart, no longer validates (this loomgit"
                " checks more than the one that applied it); it keeps serving until a commit"
                " that validates"
            )
        else:
            what = f"{failed[:12]} cannot be applied" if failed else "the repository cannot be read"
            said = (
                f"{what}; serving {commit[:12]}, applied before the restart, until a commit can be"
            )
        st.note("RestoredLastApplied", said, now)
        return old.config.names

    def _build(
        self,
        snap: Snapshot,
        name: str,
        commit: str,
        problems: list[Problem],
        *,
        validated: bool = True,
    ) -> Served:
        """What the environment serves at `commit`; Failed when `problems` holds an error
        (unless not `validated`: see `_restore`) or its credentials do not open."""
        errors = [p for p in problems if p.severity == "error"]
        if errors and validated:
            first, more = headline(positions(snap, errors))
            if first.line is None:  # not in a file (a branch gone, a folder missing)
                raise Failed("ValidationFailed", first.render() + more)
            every = "every problem" if more else "the problem"
            hint = f"`loomgit validate --rev {commit[:12]} --env {name}` lists {every} in a clone"
            if first.code == "LG321" and "did you mean" not in first.message:
                # validate passes where the package is installed: the daemon's host lacks it
                hint = (
                    "a step type a package adds must be installed where `loomgit serve` runs"
                    f" (the next cycle takes it, no restart); {hint}"
                )
            raise Failed("ValidationFailed", f"{first.render()}{more}; hint: {hint}")
        deployments: dict[str, Deployment] = {}
        active: set[str] = set()
        routes: dict[tuple[str, str], WebhookTrigger] = {}
        hooks: dict[tuple[str, str], str] = {}
        patterns: dict[str, list[Pattern[WebhookTrigger]]] = {}
        api: set[str] = set()
        schedules: list[tuple[str, ScheduleTrigger]] = []
        decrypted = desired.Decrypted()  # each credentials file once per cycle
        inputs: dict[str, tuple[Any, ...]] = {}
        current = self.served.get(name)
        shared = _shared_inputs(snap, name, self.keys.get(name))
        states = _states(snap, self.cache, name)
        for ref in snap.envs[name].workflows:
            stem = ref.rel.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            state = states.get(stem) or NO_STATE
            made_from = inputs[stem] = (ref.blob, state, shared)
            if current is not None and current.inputs.get(stem) == made_from:
                dep = current.deployments[stem]  # nothing it is made from changed
            else:
                plan = desired.plan(snap, self.cache, name, stem, ref=ref)
                dep = plan.deployment
                if state.active:
                    try:
                        dep = desired.with_credentials(snap, plan, self.keys.get(name), decrypted)
                    except (SopsError, desired.NotRunnable) as exc:
                        if isinstance(exc, KeyMissing) and self.keys.get(name) is None:
                            exc.hint = no_key(name, daemon=True)  # it was started without
                        raise Failed("DecryptionFailed", exc.explained()) from None
                    _check_webhook_secrets(dep)
            deployments[stem] = dep
            if not state.active:
                continue
            active.add(stem)
            for trigger in dep.workflow.spec.triggers:
                if isinstance(trigger, WebhookTrigger):
                    hooks[(trigger.method, trigger.route)] = stem
                    if webpaths.parametric(trigger.route):
                        pattern = Pattern.of(trigger.route, trigger)
                        patterns.setdefault(trigger.method, []).append(pattern)
                    else:
                        routes[(trigger.method, trigger.route)] = trigger
                elif isinstance(trigger, ApiTrigger):
                    api.add(stem)
                elif isinstance(trigger, ScheduleTrigger):
                    schedules.append((stem, trigger))
        methods: dict[str, list[str]] = {}
        for method, route in routes:
            methods.setdefault(route, []).append(method)
        return Served(
            commit,
            deployments,
            frozenset(active),
            routes,
            hooks,
            frozenset(api),
            tuple(schedules),
            inputs,
            {route: tuple(sorted(these)) for route, these in methods.items()},
            {method: webpaths.ordered(these) for method, these in patterns.items()},
        )


def _shared_inputs(snap: Snapshot, name: str, key: Path | None) -> tuple[Any, ...]:
    """What every deployment of environment `name` is made from besides its own workflow
    and record: variables, credentials files and the key that opens them."""
    files = snap.envs[name]
    return (
        tuple(r.blob if r else None for r in (files.variables, files.credentials)),
        files.global_credentials.blob if files.global_credentials else None,
        tuple(snap.config.scoped_only),
        key,
    )


def _states(snap: Snapshot, cache: DocumentCache, name: str) -> dict[str, WorkflowState]:
    ref = snap.envs[name].environment
    if ref is None:
        return {}
    doc = cache.model(EnvironmentState, ref.blob, snap.bytes_of(ref)).model
    return dict(doc.workflows) if doc is not None else {}


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cycle collection while a cycle reads the repository: it builds hundreds of
    thousands of objects and leaves almost no cyclic garbage, and the collections its
    allocations set off took a quarter of start-up. What it left is collected at the end,
    in the youngest generation, where everything it made still is."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
            gc.collect(0)


def _check_webhook_secrets(dep: Deployment) -> None:
    """A webhook that checks a signature or an auth header needs its secret; without one
    it is refused here, so it can never run unchecked."""
    for trigger in dep.workflow.spec.triggers:
        if not isinstance(trigger, WebhookTrigger):
            continue
        for key, check in trigger.secret_checks():
            for _, name in check.secret_fields():
                value = dep.credentials.get(check.credential, {}).get(name)
                if not isinstance(value, str) or not value:
                    raise Failed(
                        "DecryptionFailed",
                        f"{dep.name}: the webhook {key} needs a text field '{name}' in "
                        f"credential {check.credential}",
                    )


def _serving(served: Served) -> str:
    """The Ready condition's message: the workflows served, and those held inactive (a
    first environment's new workflows are, until activated)."""
    n, inactive = len(served.active), len(served.deployments) - len(served.active)
    return f"serving {n} active workflow{'' if n == 1 else 's'}" + (
        f", {inactive} inactive" if inactive else ""
    )
