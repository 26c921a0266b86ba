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


@pytest.mark.parametrize(
    ("data", "line", "col"),
    [(b"a:\n\tb: 1\n", 2, 1), (b"a: 1\n\tb: 2\n", 2, 1), (b"a:\n  b: 1\n \tc: 2\n", 3, 2)],
)
def test_a_tab_that_indents_is_named(data: bytes, line: int, col: int) -> None:
    """The parser's words for a tab ("found character that cannot start any token") do
    not say what it found; loomgit does. A tab inside a quoted value is fine."""
    problem = _fail(data).problem
    assert (problem.code, problem.line, problem.col, problem.message) == (
        "LG102",
        line,
        col,
        "YAML syntax error: a tab character; YAML indents with spaces only",
    )
    assert yamlio.load(b'a: "x\tb"\n') == {"a": "x\tb"}


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
e: 1.5e-3
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
    monkeypatch.setattr(yamlio._local, "safe", None, raising=False)
    assert yamlio.load(SCALARS.encode()) == expected
    assert _fail(b"a: 1\na: 2\n").problem.code == "LG103"
    assert _fail(b"a: 1\nb: [2, .nan]\n").problem.code == "LG109"


@pytest.mark.parametrize("number", [".nan", ".NaN", ".inf", "-.Inf", "+.inf", "1e999", "-1_0e400"])
def test_numbers_json_cannot_hold_are_refused_where_they_are(number: str) -> None:
    """Whatever a workflow or its variables hold is recorded and served as JSON, which
    has no NaN or infinity. The value is not repeated in the message: it could be a
    secret in a plain-text file."""
    problem = _fail(f"a: 1\nlist:\n  - 2\n  - {number}\n".encode()).problem
    assert (problem.code, problem.line, problem.col) == ("LG109", 4, 5)
    assert problem.message == yamlio.NOT_FINITE


def test_quoted_or_finite_numbers_are_kept() -> None:
    doc = yamlio.load(b'a: ".nan"\nb: "1e999"\nc: 1e308\nd: -0.0\ne: .5\n')
    assert doc == {"a": ".nan", "b": "1e999", "c": 1e308, "d": 0.0, "e": 0.5}


# -- reading environment.yaml record by record ----------------------------------------

STATE = """\
apiVersion: loomgit/v1
kind: Environment
# what staging runs
environment: staging
workflows:
  orders:
    version: 3
    active: true
    notes: |
      first line

      third line
  invoices:  # a comment
    version: 1
    active: false
    notes: "quoted
      over two lines"

# a comment at the margin
  reports: {version: 2, active: true}
  "quoted-key":
    version: 4
    tags: [a,
      b]
trailer: 1
"""

TRICKY = [
    STATE,
    STATE.replace("workflows:\n", "workflows:  # records\n"),
    "workflows:\n  a: 1\n  a: 2\n",  # duplicate across entries
    "workflows:\n  a:\n    x: 1\n    x: 2\n",  # duplicate inside one
    "workflows:\n  a: &r {x: 1}\n  b: *r\n",  # an alias across entries
    "workflows:\n  a: *nowhere\n",
    'workflows:\n  a: "open\n  b: shut"\n',  # a quoted value left open over a key line
    "workflows:\n  a: [1,\n  b: 2]\n",  # a flow value left open
    "workflows:\n    a: 1\n  b: 2\n",  # less indented than the first key
    "workflows:\n  - a\n  - b\n",  # a sequence, not a mapping
    "workflows:\n  a: 1\nworkflows:\n  b: 2\n",
    "workflows: {}\n",
    "workflows:\n",
    "workflows:\n  a: 1\n---\nb: 2\n",
    "workflows:\n  a: !!binary aGk=\n",
    "workflows:\n  a: 1\n\tb: 2\n",
    "workflows:\r\n  a: 1\r\n",
    "  workflows:\n    a: 1\n",
    "- workflows:\n  a: 1\n",
    "workflows:\n  ? complex\n  : 1\n  b: 2\n",
    "workflows:\n  1: one\n  true: yes\n  null: nothing\n",
    "%YAML 1.2\n---\nworkflows:\n  a: 1\n",
    "workflows:\n  a: 1\n...\n",
]


def _outcome(read: object, data: bytes) -> object:
    try:
        return ("ok", read(data))  # type: ignore[operator]
    except yamlio.YamlFailure as exc:
        return ("failed", exc.problem)


def _by_entries(cache: yamlio.EntryCache) -> object:
    return lambda data: yamlio.load_block_entries(data, "workflows", cache)


@pytest.mark.parametrize("text", TRICKY)
def test_reading_by_entries_gives_what_reading_whole_gives(text: str) -> None:
    data = text.encode()
    cache = yamlio.EntryCache()
    expected = _outcome(yamlio.load, data)
    assert _outcome(_by_entries(cache), data) == expected
    assert _outcome(_by_entries(cache), data) == expected  # and again, from the cache


def test_reading_by_entries_matches_on_mangled_files() -> None:
    """Random edits of a state file (a character, an indent, a line moved) read the same
    record by record as whole, results and errors alike."""
    import random

    rng = random.Random(11)
    lines = STATE.splitlines(keepends=True)
    cache = yamlio.EntryCache()
    for _ in range(600):
        mangled = list(lines)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(mangled))
            line = mangled[i]
            action = rng.randrange(5)
            if action == 0:
                mangled[i] = " " + line
            elif action == 1:
                mangled[i] = line[1:]
            elif action == 2:
                pos = rng.randrange(len(line) + 1)
                mangled[i] = line[:pos] + rng.choice("&*\"'[]{}:#|>- ab1") + line[pos:]
            elif action == 3:
                mangled.insert(rng.randrange(len(mangled) + 1), mangled.pop(i))
            else:
                mangled.insert(i, line)
        data = "".join(mangled).encode()
        assert _outcome(_by_entries(cache), data) == _outcome(yamlio.load, data), data


def test_a_changed_record_is_the_only_one_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    records = "".join(f"  wf-{i}:\n    version: 1\n    active: true\n" for i in range(50))
    before = f"apiVersion: loomgit/v1\nkind: Environment\nworkflows:\n{records}"
    after = before.replace("  wf-7:\n    version: 1\n    active: true", "  wf-7:\n    version: 2")
    cache = yamlio.EntryCache()
    yamlio.load_block_entries(before.encode(), "workflows", cache)
    texts: list[str] = []
    original = yamlio._safe_load
    monkeypatch.setattr(yamlio, "_safe_load", lambda t: texts.append(t) or original(t))
    doc = yamlio.load_block_entries(after.encode(), "workflows", cache)
    assert doc["workflows"]["wf-7"] == {"version": 2}
    assert len(doc["workflows"]) == 50
    assert texts[1:] == ["  wf-7:\n    version: 2\n"]  # the rest of the file, then one record


def test_entries_not_read_for_two_generations_are_forgotten() -> None:
    cache = yamlio.EntryCache()
    yamlio.load_block_entries(b"workflows:\n  a: 1\n  b: 2\n", "workflows", cache)
    cache.next_generation()
    yamlio.load_block_entries(b"workflows:\n  a: 1\n", "workflows", cache)
    assert len(cache) == 2
    cache.next_generation()
    assert len(cache) == 1  # b: 2 was not read in the last generation


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 100_000 + "]" * 100_000,
        "a:\n" + "- " * 100_000 + "x",
        "a:\n  " + "? " * 100_000 + "x",
    ],
    ids=["flow", "block sequences", "explicit keys"],
)
def test_text_nested_past_the_limit_is_refused_not_a_crash(text: str) -> None:
    # libyaml's composer recurses in C: read directly, each of these kills the process.
    problem = _fail(text.encode()).problem
    assert problem.code == "LG102"
    assert f"more than {yamlio.MAX_NESTING:,} levels" in problem.message
    assert problem.line is not None and problem.line <= 2
    assert yamlio.locate(text.encode(), [("a", 0)]) == [(1, 1)]


def test_text_nested_within_the_limit_loads() -> None:
    depth = yamlio.MAX_NESTING - 1  # the document's own mapping is one more level
    doc = yamlio.load(("a:\n" + "- " * depth + "x\n" + "b: {c: [1]}\n").encode())
    assert doc["b"] == {"c": [1]}
    node = doc["a"]
    for _ in range(depth - 1):
        node = node[0]
    assert node == ["x"]


def test_locate_agrees_with_the_round_trip_reading() -> None:
    from pathlib import Path

    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    Path_ = tuple[str | int, ...]

    def keypaths(node: object, path: Path_, out: list[Path_]) -> None:
        out.append(path)
        if isinstance(node, CommentedMap):
            out.append((*path, "missing"))
            for key, value in node.items():
                keypaths(value, (*path, key), out)
        elif isinstance(node, CommentedSeq):
            out.append((*path, len(node)))
            for i, value in enumerate(node):
                keypaths(value, (*path, i), out)

    files = sorted((Path(__file__).parents[1] / "sample-repo").rglob("*.yaml"))
    assert len(files) > 5
    for file in files:
        data = file.read_bytes()
        root = yamlio._rt_loader().load(data.decode())
        paths: list[Path_] = []
        keypaths(root, (), paths)
        assert yamlio.locate(data, paths) == yamlio._rt_locate(data.decode(), paths), file


def test_locate_finds_keys_a_merge_brings_in() -> None:
    data = b"base: &b {x: 1, y: [1, {q: 2}]}\ntop:\n  <<: *b\n  own: 3\n"
    assert yamlio.locate(data, [("top", "x"), ("top", "y", 1, "q"), ("top", "own")]) == [
        (1, 11),
        (1, 25),
        (4, 3),
    ]
