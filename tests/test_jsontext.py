"""JSON from users: standard JSON only, and nested at most MAX_DEPTH deep; JSON that
loomgit writes: standard too."""

from __future__ import annotations

import json

import pytest

from loomgit import ingress, jsontext
from loomgit.jsontext import MAX_DEPTH, TooDeep, depth, loads


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_standard_json_is_read_as_json_reads_it() -> None:
    assert loads(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    assert loads('"\\u00e9"') == "é"
    assert loads("[1]".encode("utf-16")) == [1]  # as json.loads, by its byte order mark


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_values_other_readers_refuse_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a JSON value"):
        loads(text)


def test_nesting_is_bounded_however_it_is_written() -> None:
    assert loads(nested(MAX_DEPTH)) is not None
    for levels in (MAX_DEPTH + 1, 5_000, 200_000):  # past Python's own limit too
        with pytest.raises(TooDeep):
            loads(nested(levels))
    objects = '{"k": ' * (MAX_DEPTH + 1) + "0" + "}" * (MAX_DEPTH + 1)
    with pytest.raises(TooDeep):
        loads(objects)
    # Many brackets side by side are not deep.
    wide = "[" + ",".join(["[]"] * 10_000) + "]"
    assert len(loads(wide)) == 10_000


def test_depth_counts_levels_of_arrays_and_objects() -> None:
    assert depth(1) == 0
    assert depth([]) == 1
    assert depth({"a": [{"b": []}], "c": 2}) == 4
    assert depth(loads(nested(MAX_DEPTH))) == MAX_DEPTH


def test_what_loomgit_writes_holds_null_for_numbers_json_cannot_hold() -> None:
    nan, inf = float("nan"), float("inf")
    value = {"a": [nan, 1.5, (inf,)], "b": {"c": -inf}, "d": "NaN"}
    text = jsontext.dumps(value, separators=(",", ":"))
    assert text == '{"a":[null,1.5,[null]],"b":{"c":null},"d":"NaN"}'
    assert jsontext.loads(text) == {"a": [None, 1.5, [None]], "b": {"c": None}, "d": "NaN"}
    assert value["a"][0] is nan  # what was given is left as it was
    plain = {"a": [1, 2.5, "x"], "b": None}
    assert jsontext.dumps(plain, indent=2) == json.dumps(plain, indent=2)
    # a `respond: sync` webhook's answer, and every other JSON answer of the daemon
    assert ingress.json_response({"total": nan}).body == b'{"total": null}'
