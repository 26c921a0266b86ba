"""Reading and editing `environment.yaml` one workflow at a time.

loomgit writes the file in a canonical form (one block of lines per workflow under
`workflows:`), so a promotion replaces one block of text instead of parsing and
re-emitting thousands of records. A file that is not in that form (edited by hand, with
comments inside blocks) is edited through the round-trip loader, which keeps comments.
"""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML

from loomgit import yamlio
from loomgit.errors import LoomgitError
from loomgit.models import EnvironmentState, WorkflowState

HEADER = "# Written by loomgit: what this environment runs. Change it with loomgit commands.\n"
# A canonical `workflows:` section: one block per workflow, its first line `  name: …`,
# the rest indented by four; anything else (comments, blank lines) is not.
_BLOCK = re.compile(r"  ([a-z0-9][a-z0-9_-]*):[^\n]*\n(?:    [^\n]*\n)*")
_WORKFLOWS = re.compile(r"^workflows:[ \t]*(\{\})?[ \t]*(?:\n|\Z)", re.MULTILINE)
_KEY = re.compile(r"^workflows\b", re.MULTILINE)
_FIELDS = list(WorkflowState.model_fields)


@dataclass(frozen=True)
class Blocks:
    """environment.yaml cut into the text before `workflows:` and one block per workflow."""

    head: str
    blocks: dict[str, str]


def split(text: str) -> Blocks | None:
    """The blocks of a canonical file, or None when the file is not in canonical form.

    One pass of C-level matching over the section (a 1.3 MB file of 8,000 records in
    about 5 ms): a promotion cuts each file it reads or writes once."""
    found = _WORKFLOWS.search(text)
    if found is None:
        return None
    head = text[: found.start()]
    # The first `workflows` key, on lines broken only by "\n": else the full parser.
    if _KEY.search(head) or len(head.splitlines()) != head.count("\n"):
        return None
    section = text[found.end() :]
    if found.group(1):  # `workflows: {}`
        return None if section.strip() else Blocks(head, {})
    if section and not section.endswith("\n"):
        section += "\n"
    blocks: dict[str, str] = {}
    at = 0
    for block in _BLOCK.finditer(section):
        name = block.group(1)
        if block.start() != at or name in blocks:
            return None  # a line of another shape, or a name twice: the full parser says
        blocks[name] = block.group()
        at = block.end()
    return Blocks(head, blocks) if at == len(section) else None


@functools.lru_cache(maxsize=8)
def _blocks_of(data: bytes) -> Blocks | None:
    """`split` of a file as git holds it, kept for the few files a command reads again and
    again: a promotion of 2,000 workflows looks up each one's record in the same files,
    and cutting a 1.3 MB file each time took 20 ms (300 of the command's 336 s). The
    blocks are shared: callers only read them."""
    return split(data.decode("utf-8", "replace"))


@functools.lru_cache(maxsize=4096)
def _parsed_block(name: str, block: str) -> WorkflowState:
    return parse_block(name, block)  # immutable: safe to share


def parse_block(name: str, block: str) -> WorkflowState:
    try:
        doc = yamlio.load(("workflows:\n" + block).encode())
        return WorkflowState.model_validate(doc["workflows"][name])
    except (yamlio.YamlFailure, ValidationError, KeyError, TypeError) as exc:
        raise LoomgitError(
            f"the record of {name} in environment.yaml is not valid",
            hint="run `loomgit validate` and fix it first",
        ) from exc


def _plain(state: WorkflowState) -> dict[str, Any]:
    data = state.model_dump(mode="json", exclude_none=True)
    return {k: data[k] for k in _FIELDS if k in data}


def render_block(name: str, state: WorkflowState) -> str:
    out = io.StringIO()
    dumper = YAML(typ="safe", pure=True)
    dumper.width = 4096
    dumper.default_flow_style = False
    dumper.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    dumper.dump({name: _plain(state)}, out)
    return "".join("  " + ln if ln.strip() else ln for ln in out.getvalue().splitlines(True))


def render(env: str, workflows: dict[str, WorkflowState]) -> str:
    head = f"{HEADER}apiVersion: loomgit/v1\nkind: Environment\nenvironment: {env}\n"
    if not workflows:
        return head + "workflows: {}\n"
    return head + "workflows:\n" + "".join(render_block(n, s) for n, s in workflows.items())


def records(data: bytes | None) -> dict[str, WorkflowState]:
    """Every record of an environment.yaml (an empty dict for no file)."""
    if data is None:
        return {}
    try:
        doc = yamlio.load(data, yamlio.MAX_STATE_BYTES)
        return dict(EnvironmentState.model_validate(doc).workflows)
    except (yamlio.YamlFailure, ValidationError) as exc:
        raise LoomgitError(
            "environment.yaml is not valid, so it cannot be changed",
            hint="run `loomgit validate` and fix it first",
        ) from exc


def record(data: bytes | None, name: str) -> WorkflowState | None:
    """One workflow's record, reading only its block when the file is canonical."""
    if data is None:
        return None
    parts = _blocks_of(data)
    if parts is not None:
        block = parts.blocks.get(name)
        return _parsed_block(name, block) if block is not None else None
    return records(data).get(name)


def with_records(data: bytes | None, env: str, changes: dict[str, WorkflowState | None]) -> bytes:
    """environment.yaml with some records replaced (None removes one)."""
    if data is None:
        current = {n: s for n, s in changes.items() if s is not None}
        return render(env, dict(sorted(current.items()))).encode()
    text = data.decode("utf-8")
    parts = _blocks_of(data)  # the file the command has just read: cut once
    if parts is None:
        return _round_trip(text, changes)
    blocks = dict(parts.blocks)
    for name, state in changes.items():
        if state is None:
            blocks.pop(name, None)
        else:
            blocks[name] = render_block(name, state)
    if list(parts.blocks) == sorted(parts.blocks):
        blocks = dict(sorted(blocks.items()))  # keep a sorted file sorted
    if not blocks:
        return (parts.head + "workflows: {}\n").encode()
    return (parts.head + "workflows:\n" + "".join(blocks.values())).encode()


def _round_trip(text: str, changes: dict[str, WorkflowState | None]) -> bytes:
    """A hand-formatted file rewritten with its comments kept. The caller has validated
    it (see `lifecycle`), so it reads."""

    def change(doc: Any) -> Any:
        workflows = doc.get("workflows")
        if not isinstance(workflows, dict):
            workflows = doc["workflows"] = {}
        for name, state in changes.items():
            if state is None:
                workflows.pop(name, None)
            else:
                workflows[name] = _plain(state)
        return doc

    return yamlio.rewrite(text, change).encode()


def changed_records(
    old: bytes | None, new: bytes | None
) -> tuple[dict[str, WorkflowState], dict[str, WorkflowState]]:
    """The records that differ between two versions of a file (before, after), parsing
    only the blocks that changed when both files are canonical."""
    empty = Blocks("", {})
    before = _blocks_of(old) if old is not None else empty
    after = _blocks_of(new) if new is not None else empty
    if before is None or after is None:
        full_old, full_new = records(old), records(new)
        names = {n for n in {*full_old, *full_new} if full_old.get(n) != full_new.get(n)}
        return (
            {n: full_old[n] for n in names if n in full_old},
            {n: full_new[n] for n in names if n in full_new},
        )
    names = {
        n for n in {*before.blocks, *after.blocks} if before.blocks.get(n) != after.blocks.get(n)
    }
    return (
        {n: _parsed_block(n, before.blocks[n]) for n in names if n in before.blocks},
        {n: _parsed_block(n, after.blocks[n]) for n in names if n in after.blocks},
    )


_SUMMARY_FIELD = re.compile(r"^    (version|active|rolled_back_from): (\S+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Summary:
    version: int | None
    active: bool
    rolled_back_from: int | None


def summaries(data: bytes | None) -> dict[str, Summary]:
    """Version, activation and rollback of every record, for views over many workflows.

    A canonical file is read with one regular expression per block (the three fields are
    plain scalars on lines indented by exactly four spaces; wrapped text continues deeper),
    so thousands of records cost milliseconds; any other file is parsed in full."""
    if data is None:
        return {}
    parts = _blocks_of(data)
    if parts is None:
        return {
            n: Summary(s.version, s.active, s.rolled_back_from) for n, s in records(data).items()
        }
    out = {}
    for name, block in parts.blocks.items():
        if "{" in block.split("\n", 1)[0]:  # a one-line flow mapping: parse it properly
            s = parse_block(name, block)
            out[name] = Summary(s.version, s.active, s.rolled_back_from)
            continue
        found = dict(_SUMMARY_FIELD.findall(block))
        version, back = found.get("version"), found.get("rolled_back_from")
        out[name] = Summary(
            int(version) if version and version.isdigit() else None,
            found.get("active") == "true",
            int(back) if back and back.isdigit() else None,
        )
    return out
