"""Loading documents from bytes into models, cached by git blob id.

A promoted snapshot is the same blob as its source, so it is parsed and checked once
however many environments hold it. Cached results carry no file path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from pydantic import BaseModel, ValidationError

from loomgit import yamlio
from loomgit.analysis import WorkflowFacts, analyse
from loomgit.findings import Finding, from_validation_error, resolve
from loomgit.models.state import EnvironmentState
from loomgit.models.steps import BUILTIN_STEPS
from loomgit.models.workflow import Workflow
from loomgit.problems import Problem

if TYPE_CHECKING:
    from loomgit.parsestore import ParseStore

M = TypeVar("M", bound=BaseModel)
_TOO_DEEP = "YAML syntax error: document is nested too deeply"


def blob_id(data: bytes) -> str:
    """The git blob id of `data`, so working-tree files share the cache with commits."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def digest(data: bytes) -> str:
    """The content digest recorded in environment.yaml at promotion."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Parsed(Generic[M]):
    """A model, or the path-free problems that kept it from being built."""

    model: M | None
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedWorkflow:
    facts: WorkflowFacts | None
    digest: str
    problems: tuple[Problem, ...] = ()
    model: Workflow | None = None  # kept for running it; None when it does not validate


def _load_mapping(
    data: bytes, max_bytes: int = yamlio.MAX_FILE_BYTES, entries: yamlio.EntryCache | None = None
) -> tuple[Any, list[Finding]]:
    try:
        if entries is None:
            doc = yamlio.load(data, max_bytes)
        else:
            doc = yamlio.load_block_entries(data, "workflows", entries, max_bytes)
    except yamlio.YamlFailure as exc:
        p = exc.problem
        return None, [Finding(p.code, p.message, (), p.line or 1, p.col or 1)]
    if not isinstance(doc, dict):
        kind = type(doc).__name__.replace("str", "a string").replace("list", "a list")
        return None, [
            Finding("LG108", f"expected a YAML mapping at the top level, found {kind}", (), 1, 1)
        ]
    return doc, []


def parse_model(model: type[M], data: bytes, entries: yamlio.EntryCache | None = None) -> Parsed[M]:
    """Safe load plus schema validation; problems point at the offending key. With
    `entries`, environment.yaml's records are read one by one and cached there."""
    state = model is EnvironmentState
    limit = yamlio.MAX_STATE_BYTES if state else yamlio.MAX_FILE_BYTES
    doc, findings = _load_mapping(data, limit, entries if state else None)
    if findings:
        return Parsed(None, resolve(data, findings))
    try:
        return Parsed(model.model_validate(doc))
    except ValidationError as exc:
        return Parsed(None, resolve(data, from_validation_error(exc, doc, model)))


def parse_workflow(data: bytes) -> ParsedWorkflow:
    dig = digest(data)
    doc, findings = _load_mapping(data)
    if findings:
        return ParsedWorkflow(None, dig, resolve(data, findings))
    try:
        wf = Workflow.model_validate(doc)
    except ValidationError as exc:
        return ParsedWorkflow(None, dig, resolve(data, from_validation_error(exc, doc, Workflow)))
    except RecursionError:
        return ParsedWorkflow(None, dig, (Problem("LG102", _TOO_DEEP, line=1, col=1),))
    try:
        facts, findings = analyse(wf, doc)
    except RecursionError:
        return ParsedWorkflow(None, dig, (Problem("LG102", _TOO_DEEP, line=1, col=1),))
    return ParsedWorkflow(facts, dig, resolve(data, findings) if findings else (), wf)


PARALLEL_MIN = 64  # fewer new workflows than this are parsed in-process
CHUNK = 200


def _parse_many(items: list[tuple[str, bytes]]) -> list[tuple[str, ParsedWorkflow]]:
    return [(blob, parse_workflow(data)) for blob, data in items]


class Mapper(Protocol):
    """Runs a function over items in worker processes: an executor's `map`."""

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], /) -> Iterator[Any]: ...


class DocumentCache:
    """Parsed documents by blob id. One per process; the daemon keeps it across cycles.

    With a `store` (validation only), workflows and environment.yaml files parsed by an
    earlier run are taken from it: such a workflow has its facts, digest and problems but
    no model, so a cache with a store is for checking rules, never for running."""

    def preload(self, items: dict[str, bytes], pool: Mapper | None) -> int:
        """Parses the workflows not cached yet in `pool`'s worker processes, so a large
        change does not hold this process's CPU (and the daemon's event loop) for long.
        Returns how many were parsed."""
        todo = [(blob, data) for blob, data in items.items() if blob not in self._workflows]
        if pool is None or len(todo) < PARALLEL_MIN:
            return 0
        chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
        for results in pool.map(_parse_many, chunks):
            for blob, parsed in results:
                self._workflows[blob] = parsed
        self.misses += len(todo)
        return len(todo)

    def __init__(self, store: ParseStore | None = None) -> None:
        self.store = store
        self._workflows: dict[str, ParsedWorkflow] = {}
        self._models: dict[tuple[type[BaseModel], str], Parsed[Any]] = {}
        self._entries = store.entries if store is not None else yamlio.EntryCache()
        self._highest: dict[str, tuple[frozenset[str], dict[str, int]]] = {}
        self.hits = 0
        self.misses = 0

    def retain(self, blobs: set[str]) -> None:
        """Forgets the workflows and environment.yaml versions whose blob is not in
        `blobs` (the daemon keeps what its current snapshot holds), and the environment.yaml
        records no recent reading used. Highest versions over an environment's history
        stay, as a summary; small documents (loomgit.yaml, variables) stay too."""
        self._workflows = {b: p for b, p in self._workflows.items() if b in blobs}
        self._models = {
            k: p for k, p in self._models.items() if k[0] is not EnvironmentState or k[1] in blobs
        }
        self._entries.next_generation()

    def highest_versions(
        self, key: str, blobs: list[str], read: Callable[[list[str]], dict[str, bytes]]
    ) -> dict[str, int]:
        """The highest version each workflow has in any of the environment.yaml `blobs`
        (one environment's history, `key` naming it). A maximum over a set, so the one
        computed for an earlier history is extended by the blobs it lacks; only a history
        that lost blobs (rewritten) is read again in full."""
        known = self._highest.get(key)
        wanted = frozenset(blobs)
        if known is not None and known[0] <= wanted:
            found = dict(known[1])
            todo = [b for b in blobs if b not in known[0]]
        else:
            found, todo = {}, blobs
        if todo:
            for blob, data in read(todo).items():
                parsed = self._models.get((EnvironmentState, blob))
                if parsed is None:  # an older version: read, not kept
                    parsed = parse_model(EnvironmentState, data, self._entries)
                for name, state in parsed.model.workflows.items() if parsed.model else ():
                    if state.version and state.version > found.get(name, 0):
                        found[name] = state.version
        elif known is not None:
            found = known[1]
        self._highest[key] = (wanted, found)
        return found

    def forget_plugin_steps(self) -> None:
        """Forgets the workflows that did not validate and those with a step of a type
        not built in: after the packages registering step types changed, they are checked
        again against those installed now."""
        self._workflows = {
            blob: parsed
            for blob, parsed in self._workflows.items()
            if parsed.model is not None
            and all(step.type in BUILTIN_STEPS for step in parsed.model.spec.steps)
        }

    def has_workflow(self, blob: str) -> bool:
        return blob in self._workflows or (self.store is not None and blob in self.store)

    def workflow(self, blob: str, data: bytes | Callable[[], bytes]) -> ParsedWorkflow:
        """The parsed workflow of `blob`; `data` (or what it returns) is read on a miss."""
        found = self._workflows.get(blob)
        if found is None and self.store is not None:
            found = self.store.workflow(blob)
        if found is None:
            self.misses += 1
            found = parse_workflow(data if isinstance(data, bytes) else data())
            if self.store is not None:
                self.store.add_workflow(blob, found)
        else:
            self.hits += 1
        self._workflows[blob] = found
        return found

    def model(self, model: type[M], blob: str, data: bytes) -> Parsed[M]:
        key = (model, blob)
        found = self._models.get(key)
        stored = self.store if model is EnvironmentState else None
        if found is None and stored is not None:
            found = cast("Parsed[M] | None", stored.state(blob))
        if found is None:
            self.misses += 1
            found = parse_model(model, data, self._entries)
            if stored is not None:
                stored.add_state(blob, cast("Parsed[EnvironmentState]", found))
        else:
            self.hits += 1
        self._models[key] = found
        return found
