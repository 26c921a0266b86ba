"""JSON that users send (webhook and API bodies, `loomgit run --input`): standard JSON
only, nested at most MAX_DEPTH deep, so that whatever is accepted can be recorded,
redacted, run and given back as JSON.

Python's parser accepts `NaN` and `Infinity`, which no other JSON reader does (an
execution holding one could not be read back through the API), and past about a
thousand levels it fails with a RecursionError; the recursive walks that come after it
(redaction, recording) fail far earlier than that.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 100  # levels of arrays and objects one inside another


class TooDeep(ValueError):
    def __init__(self) -> None:
        super().__init__(f"it nests arrays and objects more than {MAX_DEPTH} deep")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def depth(value: Any) -> int:
    """How deep arrays and objects nest in `value` (0 for a scalar), counted without
    recursion; stops counting past MAX_DEPTH."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > deepest:
            deepest = level
            if deepest > MAX_DEPTH:
                break
        stack.extend((child, level + 1) for child in children)
    return deepest


def loads(text: str | bytes) -> Any:
    """The value of `text`; ValueError (TooDeep when it nests too deep) says why not."""
    if isinstance(text, bytes):
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise TooDeep() from None
    # Only a text with that many brackets can nest that deep: most are not walked.
    if text.count("[") + text.count("{") > MAX_DEPTH and depth(value) > MAX_DEPTH:
        raise TooDeep()
    return value
