"""Findings: problems located by key path, turned into line and column only when reported.

Also translates pydantic validation errors into findings with the YAML key path, so a
schema error points at the offending key, with a did-you-mean hint for unknown keys.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from loomgit import yamlio
from loomgit.problems import Problem
from loomgit.wording import must

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem known by key path; the line is looked up only if it is reported."""

    code: str
    message: str
    keypath: KeyPath = ()
    line: int | None = None
    col: int | None = None


def dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def resolve(data: bytes, findings: Iterable[Finding]) -> tuple[Problem, ...]:
    """Path-free Problems with positions; the file is re-read once with positions if needed."""
    items = list(findings)
    missing = [f.keypath for f in items if f.line is None]
    found = iter(yamlio.locate(data, missing) if missing else [])
    out = []
    for f in items:
        line, col = (f.line, f.col) if f.line is not None else next(found)
        out.append(Problem(f.code, f.message, line=line, col=col))
    return tuple(out)


# -- pydantic errors -------------------------------------------------------------------


def _unwrap(tp: Any, node: Any) -> Any:
    """Strips Annotated and Optional; picks the union member a `type:` tag selects."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            chosen = members[0] if len(members) == 1 else None
            tag = node.get("type") if isinstance(node, dict) else None
            for m in members:
                field = getattr(m, "model_fields", {}).get("type")
                annotation = getattr(field, "annotation", None)
                if get_origin(annotation) is Literal and tag in get_args(annotation):
                    chosen = m
            if chosen is None:
                return None
            tp = chosen
        else:
            return tp


def _field(model: type[BaseModel], key: str) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _allowed_keys(model: type[BaseModel], path: KeyPath, data: Any) -> list[str]:
    tp: Any = model
    node = data
    for elem in path:
        tp = _unwrap(tp, node)
        if tp is None:
            return []
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            tp = _field(tp, str(elem))
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return []
        node = node[elem] if _has(node, elem) else None
    tp = _unwrap(tp, node)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return []


def _has(node: Any, elem: str | int) -> bool:
    if isinstance(node, dict):
        return elem in node
    return isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node)


def data_path(loc: Sequence[str | int], data: Any) -> KeyPath:
    """A pydantic location as a key path in the data: union tags and wrappers dropped."""
    out: list[str | int] = []
    node = data
    for elem in loc:
        if _has(node, elem):
            out.append(elem)
            node = node[elem]
        elif isinstance(node, dict) and node.get("type") == elem:
            continue  # discriminated-union tag
        elif isinstance(elem, str) and ("[" in elem or elem == "root"):
            continue  # validator wrappers such as function-after[...] or a RootModel's root
        else:
            out.append(elem)
            node = None
    return tuple(out)


def _message(err: ErrorDetails, path: KeyPath, allowed: list[str]) -> tuple[str, str]:
    kind = err["type"]
    where = dotted(path[:-1]) if path else "(document)"
    last = path[-1] if path else ""
    msg = err["msg"]
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(str(last), allowed, n=1, cutoff=0.6)
        suggestion = (
            f" (did you mean '{hint[0]}'?)"
            if hint
            else (f"; allowed: {', '.join(allowed)}" if allowed else "")
        )
        return "LG201", f"unknown key '{last}' in {where}{suggestion}"
    if kind == "missing":
        return "LG202", f"missing required key '{last}' in {where}"
    if kind == "union_tag_not_found":
        return "LG202", f"missing required key 'type' in {dotted(path)}"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        return "LG200", (
            f"{dotted(path)}.type: '{ctx.get('tag')}' is not one of {ctx.get('expected_tags')}"
        )
    if kind == "literal_error" and last in ("apiVersion", "kind"):
        return "LG203", f"{last}: {must(kind, msg, err.get('input'))}"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return "LG200", f"{dotted(path)}: {must(kind, msg, err.get('input'), err.get('ctx'))}"


def from_validation_error(
    exc: ValidationError,
    data: Any,
    model: type[BaseModel],
    prefix: KeyPath = (),
    code: str | None = None,
    skip: Callable[[ErrorDetails], bool] | None = None,
) -> list[Finding]:
    """One finding per pydantic error (but those `skip` says), at the key path of the
    offending key."""
    out = []
    for err in exc.errors():
        if skip is not None and skip(err):
            continue
        path = data_path(err["loc"], data)
        allowed = _allowed_keys(model, path[:-1], data) if err["type"] == "extra_forbidden" else []
        found_code, message = _message(err, prefix + path, allowed)
        out.append(Finding(code or found_code, message, prefix + path))
    return out
