"""What checking each workflow and environment.yaml found, kept between runs.

`validate` and `check-promotion` spend most of their time parsing YAML; a commit changes a
few files, so most blobs were parsed by an earlier run. Their results (a workflow's facts,
digest and path-free problems; an environment.yaml's model) are kept by blob id, and an
environment.yaml's records by their text, in the repository's git folder (`.git/loomgit/`,
never committed), for the same loomgit code, Python and parsing libraries only.
Workflows that did not validate, or that use a step type a plugin registers, are not
kept: they are checked again each time. The store is a cache: one that cannot be read or
written is ignored, and the run parses everything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from loomgit import yamlio
from loomgit.analysis import WorkflowFacts
from loomgit.documents import Parsed, ParsedWorkflow
from loomgit.models.state import EnvironmentState
from loomgit.models.steps import BUILTIN_STEPS
from loomgit.problems import Problem
from loomgit.vcs import Git

FORMAT = 1
WORKFLOWS_FILE = "workflows.json"
ENTRIES_FILE = "entries.json"
STATES_FOLDER = "states"
MAX_WORKFLOWS = 50_000  # workflow results kept, the least recently used dropped first
MAX_ENTRIES = 100_000  # environment.yaml records kept, the least recently used dropped first
MAX_STATES = 16  # environment.yaml files kept besides those this run read


def fingerprint() -> str:
    """What a stored result depends on besides the file: loomgit's code (each module's
    size and time), Python's version and the versions of the parsing libraries."""
    import jinja2
    import pydantic
    import pydantic_core
    import ruamel.yaml

    package = Path(__file__).parent
    parts = [f"{FORMAT}", sys.version.split()[0]]
    parts += [pydantic.VERSION, pydantic_core.__version__, ruamel.yaml.__version__]
    parts.append(jinja2.__version__)
    for module in sorted(package.rglob("*.py")):
        stat = module.stat()
        parts.append(f"{module.relative_to(package)}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _facts(row: list[Any]) -> WorkflowFacts:
    """A workflow's facts from JSON's lists (key paths back into tuples)."""
    name, hooks, variables, credentials, schedules, fields = row
    if not isinstance(name, str):
        raise TypeError("not a workflow's facts")
    return WorkflowFacts(
        name,
        tuple((method, route, tuple(where)) for method, route, where in hooks),
        tuple((var, tuple(where)) for var, where in variables),
        tuple(credentials),
        tuple((cron, zone) for cron, zone in schedules),
        tuple((cred, field, tuple(where)) for cred, field, where in fields),
    )


def _problem(row: list[Any]) -> Problem:
    code, message, path, line, col, severity, keypath = row
    if not isinstance(code, str) or not isinstance(message, str):
        raise TypeError("not a problem")
    where = tuple(keypath) if keypath is not None else None
    return Problem(code, message, path, line, col, severity, where)


def _plain(value: Any) -> bool:
    """Whether JSON gives `value` back as it is: no dates, no keys but strings."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int)


class Entries(yamlio.EntryCache):
    """The records of environment.yaml files read entry by entry (`yamlio.EntryCache`),
    also kept by a hash of their text in the store: a promotion changes a few records of a
    file holding thousands, and only those are parsed. Read from the store when first
    asked for."""

    def __init__(self, path: Path, key: str) -> None:
        super().__init__()
        self._path = path
        self._key = key
        self._saved: dict[str, Any] | None = None
        self.changed = False

    def _kept(self) -> dict[str, Any]:
        if self._saved is None:
            self._saved = {}
            try:
                found = json.loads(self._path.read_bytes())
            except (OSError, ValueError):
                found = None
            if isinstance(found, dict) and found.get("key") == self._key:
                entries = found.get("entries")
                self._saved = entries if isinstance(entries, dict) else {}
        return self._saved

    def get(self, text: str) -> Any:
        found = super().get(text)
        if found is None:
            kept = self._kept()
            digest = _text_digest(text)
            found = kept.pop(digest, None)
            if isinstance(found, dict):
                kept[digest] = found  # the most recently used last, when next saved
                super().put(text, found)
            else:
                found = None
        return found

    def put(self, text: str, value: Any) -> None:
        super().put(text, value)
        if _plain(value):
            self._kept()[_text_digest(text)] = value
            self.changed = True

    def save(self) -> None:
        if self._saved is not None and self.changed:
            rows = list(self._saved.items())[-MAX_ENTRIES:]
            _write(self._path, json.dumps({"key": self._key, "entries": dict(rows)}).encode())


def _text_digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class ParseStore:
    """Parsed results by blob id, read from `folder` when opened, written by `save`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._key = fingerprint()
        self._workflows: dict[str, Any] = {}
        self._states_used: set[str] = set()
        self._changed = False
        self.hits = 0
        self.entries = Entries(folder / ENTRIES_FILE, self._key)
        try:
            saved = json.loads((folder / WORKFLOWS_FILE).read_bytes())
        except (OSError, ValueError):
            return
        if isinstance(saved, dict) and saved.get("key") == self._key:
            found = saved.get("workflows")
            self._workflows = found if isinstance(found, dict) else {}

    def __contains__(self, blob: str) -> bool:
        return blob in self._workflows

    def workflow(self, blob: str) -> ParsedWorkflow | None:
        """The stored result for the workflow `blob`, or None."""
        row = self._workflows.pop(blob, None)
        if row is None:
            return None
        try:
            dig, facts, problems = row
            found = ParsedWorkflow(_facts(facts), dig, tuple(_problem(p) for p in problems))
        except (TypeError, ValueError):
            self._changed = True  # dropped: parsed again and stored afresh
            return None
        self._workflows[blob] = row  # the most recently used last, when next saved
        self.hits += 1
        return found

    def add_workflow(self, blob: str, parsed: ParsedWorkflow) -> None:
        """Keeps `parsed` if it may be reused: it validated and uses only built-in steps."""
        model = parsed.model
        if parsed.facts is None or model is None:
            return
        if any(step.type not in BUILTIN_STEPS for step in model.spec.steps):
            return
        facts = dataclasses.astuple(parsed.facts)
        problems = [dataclasses.astuple(p) for p in parsed.problems]
        self._workflows[blob] = [parsed.digest, facts, problems]
        self._changed = True

    def _state_file(self, blob: str) -> Path | None:
        if len(blob) != 40 or not blob.isalnum():
            return None
        return self.folder / STATES_FOLDER / f"{self._key}-{blob}.json"

    def state(self, blob: str) -> Parsed[EnvironmentState] | None:
        """The stored model of the environment.yaml `blob`, or None."""
        path = self._state_file(blob)
        if path is None:
            return None
        try:
            model = EnvironmentState.model_validate_json(path.read_bytes())
        except (OSError, ValueError):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: kept when older ones are dropped
        self._states_used.add(path.name)
        self.hits += 1
        return Parsed(model)

    def add_state(self, blob: str, parsed: Parsed[EnvironmentState]) -> None:
        """Keeps an environment.yaml's model; one with problems is read again each time."""
        path = self._state_file(blob)
        if path is None or parsed.model is None or parsed.problems:
            return
        text = parsed.model.model_dump_json(by_alias=True, exclude_unset=True)
        try:
            _write(path, text.encode())
        except OSError:
            return
        self._states_used.add(path.name)

    def save(self) -> None:
        """Writes the workflows' results if this run added any, and drops the oldest
        entries past the limits. A failure to write is ignored."""
        try:
            if self._changed:
                rows = list(self._workflows.items())[-MAX_WORKFLOWS:]
                body = {"key": self._key, "workflows": dict(rows)}
                _write(self.folder / WORKFLOWS_FILE, json.dumps(body).encode())
            self.entries.save()
            self._prune_states()
        except OSError:
            return

    def _prune_states(self) -> None:
        folder = self.folder / STATES_FOLDER
        if not folder.is_dir():
            return
        others = [p for p in folder.iterdir() if p.name not in self._states_used]
        others.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for stale in others[MAX_STATES:]:
            stale.unlink(missing_ok=True)


def _write(path: Path, data: bytes) -> None:
    """Replaces `path` in one step, so a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_store(git: Git, enabled: bool = True) -> ParseStore | None:
    """The store of the repository `git` works in, `<git folder>/loomgit/`; None when
    `enabled` is False (`--no-cache`)."""
    return ParseStore(git.common_dir() / "loomgit") if enabled else None
