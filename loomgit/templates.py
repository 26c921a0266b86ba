"""Static analysis of `{{ … }}` templates (Jinja2, sandboxed) and JMESPath expressions:
syntax, and which context names they reference. Nothing is rendered here."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import jinja2
import jmespath
import jmespath.exceptions
from jinja2 import meta, nodes

from loomgit.render import sandbox

CONTEXT_ROOTS = frozenset({"steps", "credentials", "vars", "trigger", "env", "workflow"})
# What `trigger` and `workflow` hold when a step runs (runtime.TriggerEvent.context).
TRIGGER_FIELDS = ("type", "body", "headers", "query", "params", "scheduled_time")
WORKFLOW_FIELDS = ("name", "version")
STEP_FIELDS = ("output", "status", "error")  # steps.<id>.<field>
# Roots whose first member is a name we can check: a step id, a credential, a variable, a
# field of the trigger or the workflow.
_NAMED_ROOTS = ("steps", "credentials", "vars", "trigger", "workflow")

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])*)\s*\}\}")
_MARKERS = ("{{", "}}", "{%", "%}", "{#", "#}")


class TemplateSyntaxError(ValueError):
    """A template or expression does not parse. `line` is within the template text."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True, slots=True)
class Refs:
    """What a template reads: root names, (root, member, field) for named roots, and
    (step id, key) for `steps.<id>.output.<key>`."""

    roots: frozenset[str]
    members: frozenset[tuple[str, str, str | None]]
    outputs: frozenset[tuple[str, str]] = frozenset()


NO_REFS = Refs(frozenset(), frozenset())


def _path_refs(paths: list[str]) -> Refs:
    roots: set[str] = set()
    members: set[tuple[str, str, str | None]] = set()
    outputs: set[tuple[str, str]] = set()
    for path in paths:
        parts = re.split(r"\.|\[", path)
        roots.add(parts[0])
        if parts[0] in _NAMED_ROOTS and len(parts) > 1 and not parts[1].endswith("]"):
            field = parts[2] if len(parts) > 2 and not parts[2].endswith("]") else None
            members.add((parts[0], parts[1], field))
            if _an_output_key(parts):
                outputs.add((parts[1], parts[3]))
    return Refs(frozenset(roots), frozenset(members), frozenset(outputs))


def _an_output_key(chain: list[str]) -> bool:
    """Whether `chain` reads a key of a step's output: steps.<id>.output.<key>."""
    return (
        len(chain) > 3
        and chain[0] == "steps"
        and chain[2] == "output"
        and not chain[1].endswith("]")
        and not chain[3].endswith("]")
    )


def _chain(node: nodes.Node) -> list[str] | None:
    """`a.b['c'].d` as ['a', 'b', 'c', 'd']; None when not a plain access chain."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                parts.append(node.arg.value)
            else:
                parts.clear()
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            return parts[::-1]
        else:
            return None


def _jinja_refs(ast: nodes.Template) -> Refs:
    env = sandbox()
    roots = {
        name
        for name in meta.find_undeclared_variables(ast)
        if name not in env.globals and name != "loop"
    }
    members: set[tuple[str, str, str | None]] = set()
    outputs: set[tuple[str, str]] = set()
    # `output.get('a')` calls a method of the mapping: its inner node reads no key.
    called = {id(call.node) for call in ast.find_all(nodes.Call)}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        chain = _chain(node)
        if chain and chain[0] in _NAMED_ROOTS and chain[0] in roots and len(chain) > 1:
            members.add((chain[0], chain[1], chain[2] if len(chain) > 2 else None))
            if _an_output_key(chain) and (len(chain) > 4 or id(node) not in called):
                outputs.add((chain[1], chain[3]))
    # `a.b.c` also yields its inner node `a.b`: keep only the longest reading of each member.
    with_field = {(r, n) for r, n, f in members if f is not None}
    members = {(r, n, f) for r, n, f in members if f is not None or (r, n) not in with_field}
    return Refs(frozenset(roots), frozenset(members), frozenset(outputs))


@functools.lru_cache(maxsize=65536)
def template_refs(text: str) -> Refs:
    """References of a template string. Raises TemplateSyntaxError."""
    if "{" not in text and "}" not in text and "#}" not in text:
        return NO_REFS
    paths = _PLACEHOLDER.findall(text)
    rest = _PLACEHOLDER.sub("", text)
    if not any(m in rest for m in _MARKERS):
        # Fast path: only `{{ dotted.path }}` placeholders, which Jinja reads the same way.
        return _path_refs(paths)
    try:  # compiling for the references also finds unknown filters and tests
        return _jinja_refs(sandbox().parse(text))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntaxError(exc.message or "invalid template", exc.lineno) from None


@functools.lru_cache(maxsize=16384)
def expression_refs(text: str) -> Refs:
    """References of a bare Jinja expression (`when:`). Raises TemplateSyntaxError."""
    stripped = text.strip()
    if stripped.startswith("{{") and stripped.endswith("}}"):
        stripped = stripped[2:-2]
    if "{{" in stripped or "}}" in stripped or "{%" in stripped:
        raise TemplateSyntaxError("write `when:` as a bare expression, without {{ }}")
    try:
        return _jinja_refs(sandbox().parse("{{ (" + stripped + ") }}"))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateSyntaxError(exc.message or "invalid expression") from None


def _leading_fields(node: dict[str, object]) -> list[str]:
    """The field chain an expression starts with: `steps.fetch.output[0]` -> steps, fetch…"""
    kind = node.get("type")
    children = node.get("children") or []
    assert isinstance(children, list)
    if kind == "field":
        return [str(node["value"])]
    if kind == "subexpression":
        out: list[str] = []
        for child in children:
            if child.get("type") == "field":
                out.append(str(child["value"]))
            else:
                out.extend(_leading_fields(child))
                break
        return out
    if kind in ("projection", "filter_projection", "index_expression", "pipe", "flatten"):
        return _leading_fields(children[0]) if children else []
    return []


def _why(exc: jmespath.exceptions.JMESPathError) -> str:
    """What is wrong with an expression and where, on one line: jmespath's own text
    spans three lines, and its lexer's errors all read "Invalid jmespath expression"."""
    errors = jmespath.exceptions
    if isinstance(exc, errors.LexerError):
        what = exc.message[:1].lower() + exc.message[1:]  # "Unclosed ` delimiter"
    elif isinstance(exc, errors.IncompleteExpressionError) or (
        isinstance(exc, errors.ParseError) and str(exc.token_type).lower() == "eof"
    ):
        what = "it ends too early"
    elif isinstance(exc, errors.ParseError):
        what = f"unexpected '{exc.token_value}'"
    else:
        return str(exc).strip().split("\n", 1)[0]
    at = getattr(exc, "lex_position", None)
    return f"{what} (at character {at + 1})" if isinstance(at, int) else what


@functools.lru_cache(maxsize=16384)
def jmespath_refs(text: str) -> Refs:
    """Compiles a JMESPath expression and returns the names it starts from."""
    try:
        parsed = jmespath.compile(text)
    except jmespath.exceptions.JMESPathError as exc:
        raise TemplateSyntaxError(f"invalid JMESPath expression: {_why(exc)}") from None
    fields = _leading_fields(dict(parsed.parsed))
    if not fields:
        return NO_REFS
    return _path_refs([".".join(fields)])
