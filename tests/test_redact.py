"""Redaction of what is recorded: secrets in any form, sensitive headers at any depth."""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import quote

from loomgit.redact import MASK, SENSITIVE_HEADERS, Redactor

SECRET = 'pa"ss/wörd+1'


def test_secrets_are_masked_wherever_they_are() -> None:
    r = Redactor([SECRET])
    value = {
        "body": {"note": f"token={SECRET};", "lines": [SECRET, 3, None, True, 2.5]},
        "escaped": json.dumps({"t": SECRET}),
        "url": "https://example.com/?p=" + quote(SECRET, safe=""),
        SECRET: "in a key",
        7: ("a", SECRET),
    }
    assert r.value(value) == {
        "body": {"note": f"token={MASK};", "lines": [MASK, 3, None, True, 2.5]},
        "escaped": '{"t": "' + MASK + '"}',
        "url": "https://example.com/?p=" + MASK,
        MASK: "in a key",
        "7": ["a", MASK],
    }


def test_a_secret_is_masked_in_the_cases_a_template_filter_gives_it() -> None:
    r = Redactor(["s3cr3t-token word"])
    text = "S3CR3T-TOKEN WORD s3cr3t-token word S3cr3t-token word S3Cr3T-Token Word"
    assert r.text(text) == " ".join([MASK] * 4)
    assert r.text("S3CR3T-TOKEN%20WORD") == MASK  # cased, then URL-encoded


def test_sensitive_headers_are_masked_at_any_depth_with_or_without_secrets() -> None:
    for r in (Redactor(), Redactor([SECRET])):
        value = {"headers": {"Authorization": "Bearer x", "X-Api-Key": "", "Accept": "*/*"}}
        value["nested"] = [{"cookie": {"id": 1}}]
        assert r.value(value) == {
            "headers": {"Authorization": MASK, "X-Api-Key": "", "Accept": "*/*"},
            "nested": [{"cookie": MASK}],
        }


def test_the_result_is_a_copy() -> None:
    value: dict[str, Any] = {"body": {"lines": [{"qty": 1}]}, "headers": {"Host": "h"}}
    out = Redactor().value(value)
    out["body"]["lines"][0]["qty"] = 2
    out["headers"]["Host"] = "x"
    assert value == {"body": {"lines": [{"qty": 1}]}, "headers": {"Host": "h"}}


def _reference(r: Redactor, value: Any) -> Any:
    """Redaction as first written: one call per value, the plainest walk."""
    if isinstance(value, str):
        return r.text(value)
    if isinstance(value, dict):
        return {
            r.text(str(k)): (
                MASK
                if isinstance(k, str) and k.lower() in SENSITIVE_HEADERS and v
                else _reference(r, v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_reference(r, v) for v in value]
    return value


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    words = ["x", SECRET, f"a{SECRET}b", "Cookie", "authorization", "ok", ""]
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice(words)
    if kind == 1:
        return rng.choice([0, 1, -3, 2.5, True, False, None])
    if kind == 2:
        return rng.choice(words) + rng.choice(words)
    if kind in (3, 4):
        return rng.choice([b"raw", 1 + 2j, ()])
    if kind == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 6:
        return tuple(_random_value(rng, depth + 1) for _ in range(rng.randrange(3)))
    keys = [*words, 3, None, 1.5]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_it_redacts_exactly_as_the_plain_walk_did() -> None:
    rng = random.Random(6)
    for r in (Redactor(), Redactor([SECRET, "ok"])):
        for _ in range(3000):
            value = _random_value(rng)
            assert r.value(value) == _reference(r, value), value
