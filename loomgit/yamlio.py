"""Safe YAML reading: size, encoding, duplicate keys, tags, alias bombs and deep nesting
are refused before any model is built. The fast C loader does the parsing; positions are
recovered only for files that fail, from the C parser's node tree."""

from __future__ import annotations

import io
import math
import re
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import ConstructorError, DuplicateKeyError, SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent, StreamEndEvent
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.tag import Tag

from loomgit.problems import Problem

MAX_FILE_BYTES = 1024 * 1024
# environment.yaml is written by loomgit and grows with the number of workflows.
MAX_STATE_BYTES = 32 * 1024 * 1024
MAX_EXPANDED_NODES = 200_000
MAX_DEPTH = 64
# libyaml's composer (the C parser's) builds nested collections by recursing in C: text
# nested tens of thousands of levels deep (`[[[[…` or `- - - …`, 60 KB) overflows the
# stack and kills the process, a daemon reading a pushed commit included. Every level
# opens with a bracket, a dash, a question mark or a new line, so text with fewer of those
# than MAX_NESTING is read at once; other text is first measured by its parse events,
# which libyaml produces without recursing, and refused past MAX_NESTING levels.
MAX_NESTING = 1_000

# An anchor definition (`&name`) outside a URL query string; only then can aliases expand.
_ANCHOR = re.compile(r"(?:^|[\s\[{,:-])&[^\s\[\]{},]")
_local = threading.local()


# The value itself is not repeated: it may be a secret in a plain-text file.
NOT_FINITE = "a number JSON cannot hold (.nan, .inf, past 1e308); quote it to keep it as text"


class NotFinite(ConstructorError):
    """A number JSON cannot hold: `.nan`, `.inf`, or one past 1e308 (`1e999`). Whatever a
    workflow holds is recorded and served as JSON, where no such number exists."""


def _construct_finite_float(constructor: SafeConstructor, node: ScalarNode) -> float:
    value: float = SafeConstructor.construct_yaml_float(constructor, node)
    if not math.isfinite(value):
        raise NotFinite(None, None, NOT_FINITE, node.start_mark)
    return value


class _FiniteSafeConstructor(SafeConstructor):
    """The pure-Python loader's constructor, with floats as `_construct_finite_float`."""


_FiniteSafeConstructor.add_constructor("tag:yaml.org,2002:float", _construct_finite_float)


class YamlFailure(Exception):
    """A file failed the safety or syntax checks; carries one path-free Problem."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class _CachedResolver(VersionedResolver):
    """The stock resolver, with its per-version table looked up once instead of twice per
    scalar. With the C parser the YAML version a loader resolves with cannot change (the
    resolver never sees `%YAML` directives), so this only removes repeated work: profiling
    showed the lookup, which raises and catches AttributeError, at a quarter of load time."""

    _tables: dict[Any, Any] = {}  # noqa: RUF012 - shared on purpose: one table per version

    @property
    def versioned_resolver(self) -> Any:
        # ruamel builds a new resolver for every load, so the table is kept per class.
        table = self.__dict__.get("_loomgit_table")
        if table is None:
            version = self.processing_version
            table = self._tables.get(version)
            if table is None:
                table = self._tables[version] = super().versioned_resolver
            self.__dict__["_loomgit_table"] = table
        return table

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        # The stock method, with the table fetched once per scalar instead of twice.
        if kind is ScalarNode and implicit[0]:
            table = self.versioned_resolver
            for tag, regexp in [*table.get(value[:1], ()), *table.get(None, ())]:
                if regexp.match(value):
                    return Tag(suffix=tag)
            implicit = (False, implicit[1])
        return super().resolve(kind, value, implicit)


try:
    from _ruamel_yaml import CParser  # ruamel.yaml.clib: the C parser
except ImportError:  # pragma: no cover - only without the C extension (e.g. PyPy)
    CParser = None


INTERN_MAX = 64  # longer strings are mostly templates and descriptions, unique to a file

if CParser is not None:

    class _CLoader(CParser, SafeConstructor, _CachedResolver):  # type: ignore[misc]
        """What YAML(typ="safe") assembles on every load (a new class each time), built
        once: the C parser, the safe constructor and the YAML 1.2 resolver."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            self._parser = self._composer = self
            SafeConstructor.__init__(self, loader=self)
            self.allow_duplicate_keys = False
            _CachedResolver.__init__(self, version=None, loadumper=self)

        def construct_interned_str(self, node: Any) -> Any:
            """Strings as one shared object per text. The daemon keeps every workflow
            it serves parsed: keys (`url`, `method`) and short values (`POST`, `http`)
            repeat in each one: with 10,000 workflows, sharing them took the daemon from
            268 to 241 MiB."""
            value = self.construct_scalar(node)
            if type(value) is str and len(value) <= INTERN_MAX:
                return sys.intern(value)
            return value

    _CLoader.add_constructor("tag:yaml.org,2002:str", _CLoader.construct_interned_str)
    _CLoader.add_constructor("tag:yaml.org,2002:float", _construct_finite_float)


def _check_nesting(text: str) -> None:
    """Raises YamlFailure if `text` is nested more than MAX_NESTING levels deep."""
    bound = 1 + sum(text.count(c) for c in "\n[{-?")
    if bound <= MAX_NESTING:
        return
    parser = CParser(text)
    depth = 0
    try:
        while True:
            event = parser.get_event()
            if isinstance(event, CollectionStartEvent):
                depth += 1
                if depth > MAX_NESTING:
                    mark = event.start_mark
                    raise YamlFailure(
                        Problem(
                            "LG102",
                            "YAML syntax error: document is nested more than "
                            f"{MAX_NESTING:,} levels deep",
                            line=mark.line + 1,
                            col=mark.column + 1,
                        )
                    )
            elif isinstance(event, CollectionEndEvent):
                depth -= 1
            elif event is None or isinstance(event, StreamEndEvent):
                return
    finally:
        parser.dispose()


def _safe_load(text: str) -> Any:
    if CParser is not None:
        _check_nesting(text)
        loader = _CLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
            # The loader refers to itself (as parser, composer, resolver's owner): without
            # this it would wait for the cycle collector, one per file read.
            loader.__dict__.clear()
    fallback: YAML | None = getattr(_local, "safe", None)
    if fallback is None:
        fallback = _local.safe = YAML(typ="safe")
        fallback.Constructor = _FiniteSafeConstructor
        fallback.allow_duplicate_keys = False
    try:
        return fallback.load(text)
    finally:
        fallback.doc_infos.clear()  # ruamel appends one per load and never drops them


def _rt_loader() -> YAML:
    loader: YAML | None = getattr(_local, "rt", None)
    if loader is None:
        loader = YAML(typ="rt")
        loader.allow_duplicate_keys = False
        _local.rt = loader
    return loader


def rewrite(text: str, change: Callable[[Any], Any]) -> str:
    """`text` rewritten with comments and order kept: `change` gets the document as
    ruamel's round-trip reader reads it (None for an empty file) and returns the one to
    write. Raises YamlFailure. That reader is pure Python and recurses per level, so it
    gives up far earlier than the C loader (about 300 levels, against MAX_NESTING)."""
    rt = YAML(typ="rt")
    rt.width = 4096
    try:
        if CParser is not None:
            _check_nesting(text)  # where it is too deep, past MAX_NESTING
        doc = change(rt.load(text))
        out = io.StringIO()
        rt.dump(doc, out)
    except (YAMLError, RecursionError) as exc:
        raise YamlFailure(_translate(exc, text)) from None
    return out.getvalue()


def decode(data: bytes, max_bytes: int = MAX_FILE_BYTES) -> str:
    """Checks size and encoding; returns the text without a byte-order mark."""
    if len(data) > max_bytes:
        raise YamlFailure(
            Problem("LG100", f"file is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlFailure(
            Problem(
                "LG101",
                f"byte 0x{data[exc.start]:02x} is not valid UTF-8; save the file as UTF-8",
                line=line,
                col=col,
            )
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def _mark(exc: MarkedYAMLError) -> tuple[int | None, int | None]:
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return None, None
    return mark.line + 1, mark.column + 1


def _char_at(text: str, line: int | None, col: int | None) -> str:
    """The character at a 1-based line and column of `text`, or '' where there is none."""
    if not line or not col:
        return ""
    lines = text.split("\n", line)
    row = lines[line - 1] if len(lines) >= line else ""
    return row[col - 1] if len(row) >= col else ""


def _translate(exc: Exception, text: str | None = None) -> Problem:
    if isinstance(exc, NotFinite):
        line, col = _mark(exc)
        return Problem("LG109", exc.problem, line=line, col=col)
    if isinstance(exc, DuplicateKeyError):
        line, col = _mark(exc)
        key = re.search(r'found duplicate key "([^"]*)"', str(exc))
        name = f'"{key.group(1)}" ' if key else ""
        return Problem("LG103", f"duplicate key {name}in a mapping", line=line, col=col)
    if isinstance(exc, ConstructorError) and "constructor for the tag" in str(exc):
        line, col = _mark(exc)
        tag = re.search(r"tag '([^']*)'", str(exc))
        shown = tag.group(1).replace("tag:yaml.org,2002:", "!!") if tag else "?"
        return Problem(
            "LG104", f"tag {shown} is not allowed; use plain YAML values", line=line, col=col
        )
    if isinstance(exc, MarkedYAMLError):
        line, col = _mark(exc)
        if "expected a single document" in str(exc):
            return Problem(
                "LG107",
                "file holds more than one YAML document; keep one per file",
                line=line,
                col=col,
            )
        if text is not None and _char_at(text, line, col) == "\t":
            problem = "a tab character; YAML indents with spaces only"
        else:
            problem = (exc.problem or exc.context or "invalid YAML").strip()
        return Problem("LG102", f"YAML syntax error: {problem}", line=line, col=col)
    if isinstance(exc, RecursionError):
        return Problem("LG102", "YAML syntax error: document is nested too deeply")
    return Problem("LG102", f"YAML syntax error: {str(exc).splitlines()[0] if str(exc) else exc}")


def _shape(root: Any, limit: int) -> str | None:
    """Walks the document with aliases expanded: 'size' past `limit` nodes, 'depth' past
    MAX_DEPTH levels, else None. Bounded by `limit`, so a bomb cannot make it slow."""
    count = 0
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > limit:
            return "size"
        if depth > MAX_DEPTH:
            return "depth"
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple | set):
            stack.extend((v, depth + 1) for v in node)
    return None


def load(data: bytes, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Loads one YAML document safely with the C loader. Raises YamlFailure."""
    text = decode(data, max_bytes)
    try:
        doc = _safe_load(text)
    except (YAMLError, RecursionError, ValueError, TypeError) as exc:
        raise YamlFailure(_translate(exc, text)) from None
    if doc is None:
        raise YamlFailure(Problem("LG106", "file is empty; expected a YAML mapping", line=1, col=1))
    # Only anchors can make a document larger than its text; the walk is for them.
    anchored = "&" in text and _ANCHOR.search(text) is not None
    shape = _shape(doc, MAX_EXPANDED_NODES) if anchored else None
    if shape == "size":
        raise YamlFailure(
            Problem(
                "LG105",
                f"YAML aliases expand to more than {MAX_EXPANDED_NODES:,} nodes; "
                "remove the anchors and aliases",
            )
        )
    if shape == "depth":
        raise YamlFailure(
            Problem(
                "LG102", f"YAML syntax error: document is nested more than {MAX_DEPTH} levels deep"
            )
        )
    return doc


class EntryCache:
    """Parsed entries of large block mappings, by their text, kept for two generations:
    what the current and the previous reading used. A commit that changes one record of
    an environment.yaml holding thousands then parses one entry, not the file."""

    def __init__(self) -> None:
        self._live: dict[str, Any] = {}
        self._old: dict[str, Any] = {}

    def get(self, text: str) -> Any:
        found = self._live.get(text)
        if found is None:
            found = self._old.get(text)
            if found is not None:
                self._live[text] = found
        return found

    def put(self, text: str, value: Any) -> None:
        self._live[text] = value

    def next_generation(self) -> None:
        """Forgets what neither this generation nor the last one used."""
        self._old, self._live = self._live, {}

    def __len__(self) -> int:
        return len(self._live.keys() | self._old.keys())


_TOP_KEY = r"^{key}:[ ]*(?:#.*)?$"


def split_block(text: str, key: str) -> tuple[str, list[str]] | None:
    """The text without the entries of the block mapping under top-level `key`, and
    those entries, each from its key's line to the next one's. None when the file is not
    laid out so that the entries can be read apart (then it is read whole).

    Splitting is safe because a line indented like the mapping's keys can only start a
    key of that mapping: a block scalar or a nested collection ends before it, and a
    quoted or flow value left open across it fails to parse on its own, which sends the
    file to the whole reading (the same holds for an alias whose anchor is elsewhere)."""
    if "\r" in text:
        return None
    end_of_line = "\n" if text.endswith("\n") else ""
    lines = (text[:-1] if end_of_line else text).split("\n")
    header = re.compile(_TOP_KEY.format(key=re.escape(key)))
    starts = [i for i, line in enumerate(lines) if header.match(line)]
    if len(starts) != 1:
        return None
    start = starts[0]
    end, indent = start + 1, 0
    entries: list[list[str]] = []
    while end < len(lines):
        line = lines[end]
        body = line.lstrip(" ")
        if body and body[0] != "#":
            width = len(line) - len(body)
            if width == 0:
                break  # the next top-level key: the mapping ends
            if not indent:
                indent = width
            if width < indent:
                return None
            if width == indent:
                entries.append([])
        if entries:
            entries[-1].append(line)
        end += 1
    if not entries:
        return None
    texts = ["\n".join(entry) + "\n" for entry in entries]
    if end == len(lines):
        texts[-1] = texts[-1][:-1] + end_of_line
    rest = "\n".join([*lines[: start + 1], *lines[end:]])
    return rest + end_of_line, texts


def load_block_entries(
    data: bytes, key: str, cache: EntryCache, max_bytes: int = MAX_FILE_BYTES
) -> Any:
    """`load`, reading the block mapping under top-level `key` entry by entry, each
    entry's result cached by its text. The result is the same as `load`'s; any file the
    split does not fit, or that fails, is read whole by `load` (for its errors)."""
    text = decode(data, max_bytes)
    split = None if _ANCHOR.search(text) else split_block(text, key)
    if split is None:
        return load(data, max_bytes)
    rest, entries = split
    try:
        doc = _safe_load(rest)
        if not isinstance(doc, dict) or key not in doc or doc[key] is not None:
            return load(data, max_bytes)
        merged: dict[Any, Any] = {}
        for entry in entries:
            value = cache.get(entry)
            if value is None:
                value = _safe_load(entry)
                if not isinstance(value, dict):
                    return load(data, max_bytes)
                cache.put(entry, value)
            if any(k in merged for k in value):
                return load(data, max_bytes)  # a duplicate key: the whole reading says where
            merged.update(value)
    except (YamlFailure, YAMLError, RecursionError, ValueError, TypeError):
        return load(data, max_bytes)  # with the whole file's positions
    doc[key] = merged
    return doc


def locate(data: bytes, keypaths: Sequence[Sequence[str | int]]) -> list[tuple[int, int]]:
    """Line and column (1-based) of the deepest existing key on each key path in the file.

    Only called for files that already failed; the file is read once for all paths, as
    the C parser's node tree (with each node's position) when there is one: a commit that
    breaks 10,000 workflows at once is located in seconds, not minutes (the round-trip
    loader took 10 ms a file, the node tree 0.3 ms).
    """
    try:
        text = decode(data, MAX_STATE_BYTES)
        if CParser is None:
            return _rt_locate(text, keypaths)
        _check_nesting(text)
        loader = _CLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
            loader.__dict__.clear()
        return [_node_position(root, path) for path in keypaths]  # merges of merges recurse
    except (YamlFailure, YAMLError, RecursionError, ValueError, TypeError):
        return [(1, 1) for _ in keypaths]


def _node_position(node: Any, keypath: Sequence[str | int]) -> tuple[int, int]:
    line, col = 1, 1
    for key in keypath:
        if isinstance(node, MappingNode):
            found = _entry(node, str(key))
            if found is None:
                break
            mark, node = found
        elif isinstance(node, SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            node = node.value[key]
            mark = node.start_mark
        else:
            break
        line, col = mark.line + 1, mark.column + 1
    return line, col


def _entry(node: MappingNode, key: str) -> tuple[Any, Any] | None:
    """Where `key` is written in the mapping, and its value's node; also among the
    entries a `<<` merge brings in, which the mapping's own entries override."""
    merged: list[Any] = []
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return k.start_mark, v
        if isinstance(k, ScalarNode) and k.value == "<<" and str(k.tag).endswith(":merge"):
            merged.extend(v.value if isinstance(v, SequenceNode) else [v])
    for source in merged:
        if isinstance(source, MappingNode):
            found = _entry(source, key)
            if found is not None:
                return found
    return None


def _rt_locate(text: str, keypaths: Sequence[Sequence[str | int]]) -> list[tuple[int, int]]:
    """`locate` with the pure-Python round-trip loader, where the C parser is missing."""
    loader = _rt_loader()
    try:
        root: Any = loader.load(text)
    finally:
        loader.doc_infos.clear()
    return [_position(root, path) for path in keypaths]


def _position(node: Any, keypath: Sequence[str | int]) -> tuple[int, int]:
    line, col = 1, 1
    for key in keypath:
        if isinstance(node, CommentedMap) and key in node.lc.data:  # not merged keys
            ln, cl = node.lc.key(key)
        elif isinstance(node, CommentedSeq) and isinstance(key, int) and 0 <= key < len(node):
            ln, cl = node.lc.item(key)
        else:
            break
        line, col = ln + 1, cl + 1
        node = node[key]
    return line, col
