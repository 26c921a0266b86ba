"""How a document rule that pydantic checks is told to a user: "'FETCH' must be 'GET',
'POST', …", "'Upper' must be lowercase letters, …", not "Input should be …" or a regular
expression; and which known name a mistyped one stands for. Imports nothing of loomgit:
the models and the runner use it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# What each pattern of the models asks for, in words (see `pattern`).
PATTERN_WORDS: dict[str, str] = {}

# pydantic's openings, as the rule of the document they state.
_SHOULD = {
    "Input should be ": "must be ",
    "String should ": "must ",
    "List should ": "must ",
    "Dictionary should ": "must ",
}
_BOUNDS = {"greater than or equal to": "at least", "less than or equal to": "at most"}
_KINDS = {dict: "a mapping", list: "a list", type(None): "empty", bool: "true or false"}
_UNSEEN = object()


def pattern(regex: str, words: str) -> str:
    """`regex`, remembered with what it asks for in words."""
    PATTERN_WORDS[regex] = words
    return regex


def shown(value: Any, limit: int = 60) -> str:
    """A value a message quotes (names and paths from a document), cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def must(kind: str, msg: str, given: Any = _UNSEEN, ctx: dict[str, Any] | None = None) -> str:
    """pydantic's error `kind` and message `msg` as what the value must be, naming the
    value `given` (cut short) or its kind. Without `given` (it may be a secret), the
    rule alone. `ctx` is the error's context: a pattern's words come from it."""
    if kind == "string_pattern_mismatch":
        words = PATTERN_WORDS.get((ctx or {}).get("pattern", ""))
        if words:
            msg = f"Input should be {words}"
    if kind.endswith(("_type", "_parsing")):  # "…a valid integer, unable to parse string…"
        msg = msg.split(", ")[0].replace("a valid ", "a ").replace("a dictionary", "a mapping")
        msg = msg.replace(" a integer", " an integer")
    for should, must_ in _SHOULD.items():
        if msg.startswith(should):
            rule = must_ + msg[len(should) :]
            for long, short in _BOUNDS.items():
                rule = rule.replace(long, short)
            rule = rule.replace(" after validation", "")
            if given is _UNSEEN:
                return rule
            what = _KINDS.get(type(given))
            if what is not None:
                return f"{rule}, not {what}" if kind.endswith("_type") else rule
            return f"{shown(given)} {rule}"
    return msg


def closest(value: str, known: Iterable[str]) -> str | None:
    """The one of `known` that `value` is likely a typo or a shortening of ("prod" for
    production, which difflib alone finds too different), or None."""
    import difflib

    names = list(known)
    close = difflib.get_close_matches(value, names, n=1)
    if close:
        return close[0]
    longer = [n for n in names if n.startswith(value)] if len(value) >= 2 else []
    return longer[0] if len(longer) == 1 else None
