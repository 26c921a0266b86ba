"""Safe YAML loading: refused before any object is built, with a position."""

from __future__ import annotations

import pytest

from loomgit import yamlio


def _fail(data: bytes) -> yamlio.YamlFailure:
    with pytest.raises(yamlio.YamlFailure) as info:
        yamlio.load(data)
    return info.value


def test_plain_document_loads() -> None:
    assert yamlio.load(b"a: 1\nb: on\n") == {"a": 1, "b": "on"}  # YAML 1.2: `on` is a string


def test_byte_order_mark_is_accepted() -> None:
    assert yamlio.load("\ufeffa: 1\n".encode()) == {"a": 1}


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    assert _fail("\n".join(lines).encode()).problem.code == "LG105"


def test_modest_aliases_are_fine() -> None:
    assert yamlio.load(b"base: &h {a: 1}\nother: *h\n") == {"base": {"a": 1}, "other": {"a": 1}}


def test_ampersand_in_urls_does_not_trigger_the_alias_walk() -> None:
    assert yamlio.load(b"url: https://x.example/?a=1&b=2\n")["url"].endswith("&b=2")


@pytest.mark.parametrize(
    ("data", "code", "line"),
    [
        (b"a: 1\na: 2\n", "LG103", 2),
        (b"a: !!binary aGk=\nb: !custom x\n", "LG104", 2),
        (b"a: !!python/name:os.system\n", "LG104", 1),
        (b"a: 1\n---\nb: 2\n", "LG107", None),
        (b"a: [1,\n", "LG102", None),
        (b"", "LG106", 1),
        (b"# only a comment\n", "LG106", 1),
        (b"a: \xff\n", "LG101", 1),
    ],
)
def test_refusals(data: bytes, code: str, line: int | None) -> None:
    problem = _fail(data).problem
    assert problem.code == code
    if line is not None:
        assert problem.line == line


def test_size_limit() -> None:
    assert _fail(b"a: " + b"x" * yamlio.MAX_FILE_BYTES).problem.code == "LG100"


def test_locate_many_paths_at_once() -> None:
    data = b"spec:\n  steps:\n    - id: a\n    - id: b\n      typo: 1\n"
    assert yamlio.locate(data, [("spec", "steps", 1, "typo"), ("spec", "missing"), ()]) == [
        (5, 7),
        (1, 1),
        (1, 1),
    ]


def test_deep_nesting_in_a_workflow_is_not_a_crash() -> None:
    from conftest import HELLO

    from loomgit.documents import parse_workflow

    deep = "[" * 3000 + "]" * 3000
    data = HELLO.replace("        message: ", f"        extra: {deep}\n        message: ")
    parsed = parse_workflow(data.encode())
    assert parsed.problems  # `extra` is not a log parameter; and nothing blew up


SCALARS = """\
a: on
b: 0o17
c: 1_000
d: 2024-01-01
e: .inf
f: ~
g: "quoted"
h: 0x1F
i: 1e3
j: yes
k: 2024-01-01T10:00:00Z
l: ""
m: -.5
n: [true, False, NULL, 012]
"""


def test_loader_resolves_scalars_exactly_as_the_stock_safe_loader() -> None:
    from ruamel.yaml import YAML

    stock = YAML(typ="safe").load(SCALARS)
    assert yamlio.load(SCALARS.encode()) == stock
    assert yamlio.load(SCALARS.encode()) == stock  # and again, with the table cached
    assert stock["a"] == "on" and stock["j"] == "yes"  # YAML 1.2: no yes/on booleans


def test_pure_fallback_loader_gives_the_same_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = yamlio.load(SCALARS.encode())
    monkeypatch.setattr(yamlio, "CParser", None)
    assert yamlio.load(SCALARS.encode()) == expected
    assert _fail(b"a: 1\na: 2\n").problem.code == "LG103"
