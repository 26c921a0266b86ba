"""Rendering `{{ … }}` templates and `when:` expressions against an execution's context,
in Jinja2's sandbox. A string that is one placeholder keeps the value's type (a list stays
a list); anything else renders to text."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import ImmutableSandboxedEnvironment

_WHOLE = re.compile(r"^\s*\{\{(.*)\}\}\s*$", re.DOTALL)
MARKERS = ("{{", "{%", "{#")


class RenderError(ValueError):
    """A template failed while rendering; the message is one plain sentence, after where
    the template stands among the step's parameters when that is known (`with.url: …`)."""

    def __init__(self, reason: str, where: tuple[str | int, ...] = ()) -> None:
        super().__init__(f"{_path(where)}: {reason}" if where else reason)
        self.reason, self.where = reason, where

    def within(self, key: str | int) -> RenderError:
        """The same error, seen from the mapping or list that holds `key`."""
        return RenderError(self.reason, (key, *self.where))


def _path(keys: tuple[str | int, ...]) -> str:
    """`with.headers.Authorization`, `with.members[2].email`."""
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else f".{key}" if out else key
    return out


class _CodeGenerator(CodeGenerator):
    """Jinja writes a float constant into the code it generates as `str(value)`, so a
    literal past 1e308 (`{{ 1e999 }}`) became the name `inf`, and the step failed with
    "NameError: name 'inf' is not defined". Infinities and NaN are written as calls."""

    def visit_Const(self, node: nodes.Const, frame: Frame) -> None:
        value = node.as_const(frame.eval_ctx)
        if isinstance(value, float) and not math.isfinite(value):
            self.write(f"float({str(value)!r})")
        else:
            super().visit_Const(node, frame)


class _Missing(jinja2.UndefinedError):
    """A key or item a value lacks: `obj` is the value, `name` what was asked of it; or,
    with `obj` Jinja's `missing`, a name the template has not got."""

    def __init__(self, message: str | None, obj: Any, name: Any) -> None:
        super().__init__(message)
        self.obj, self.name = obj, name


class _Undefined(jinja2.StrictUndefined):
    """Jinja's strict undefined value, whose error keeps the value that lacked the key, so
    that the message can say which path it was and what it has (`_lacking`)."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = jinja2.utils.missing,
        name: str | None = None,
        exc: type[jinja2.TemplateRuntimeError] = jinja2.UndefinedError,
    ) -> None:
        super().__init__(hint, obj, name, exc)
        if hint is None and exc is jinja2.UndefinedError:
            # Jinja calls it with the message alone, as it would the exception's class.
            self._undefined_exception = functools.partial(_Missing, obj=obj, name=name)  # type: ignore[assignment]


class _MissingKey(_Undefined):
    """A key a mapping lacks that is also the name of one of its methods (`order.items`
    of an order sent without items): missing, as any other key would be (an error when
    used; `is defined` is false and `default` applies), though calling it calls the
    method, as in `{% for k, v in order.items() %}`. Jinja alone gives the bound method,
    which rendered as "<built-in method items of dict object at 0x…>" and was sent on."""

    __slots__ = ("_method",)
    # What Jinja and its sandbox look up on whatever is called (read from the class, so
    # not failing as an undefined value's attributes do).
    jinja_pass_arg = None
    unsafe_callable = False
    alters_data = False

    def __init__(self, method: Callable[..., Any], obj: Any, name: str) -> None:
        super().__init__(obj=obj, name=name)
        self._method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._method(*args, **kwargs)


def _key_or_missing(obj: Any, name: Any, found: Any) -> Any:
    """What Jinja `found` for `name` in `obj`, unless it is the method of a mapping
    that has no such key."""
    if isinstance(obj, Mapping) and callable(found) and not isinstance(found, jinja2.Undefined):
        return _MissingKey(found, obj, name)
    return found


class _Sandbox(ImmutableSandboxedEnvironment):
    """`order.items` and `order["items"]` are the `items` key of a mapping, never the
    dict method: workflow data comes from JSON, where such names are ordinary keys."""

    code_generator_class = _CodeGenerator

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return _key_or_missing(obj, attribute, super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return _key_or_missing(obj, argument, super().getitem(obj, argument))


class _NotAValue(Exception):
    """A template gave a function where a value belongs: `{{ name.upper }}`."""


def _value(value: Any) -> Any:
    """`value`, unless it is a function or method named without calling it: that would be
    recorded and sent on as "<built-in method upper of str object at 0x…>"."""
    if callable(value) and not isinstance(value, jinja2.Undefined):
        name = getattr(value, "__name__", type(value).__name__)
        raise _NotAValue(f"'{name}' is a function, not a value: call it, as {name}()")
    return value


@functools.cache
def sandbox() -> ImmutableSandboxedEnvironment:
    """The one Jinja2 environment: templates are checked and rendered by the same rules."""
    return _Sandbox(
        undefined=_Undefined,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=_value,
    )


def _reason(exc: Exception, source: str, context: Mapping[str, Any]) -> str:
    """One sentence for what a template (`source`, as Jinja parses it) raised."""
    if isinstance(exc, _Missing) and exc.obj is jinja2.utils.missing:
        return f"{exc.name!r} is undefined (a template sees: {', '.join(context)})"
    if isinstance(exc, _Missing):
        return _lacking(exc, source, context)
    if isinstance(exc, jinja2.UndefinedError):
        return exc.message or "undefined"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"invalid template: {exc.message}"
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return f"not allowed in a template: {exc}"
    if isinstance(exc, _NotAValue):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


_SHOWN_KEYS = 8


def _lacking(exc: _Missing, source: str, context: Mapping[str, Any]) -> str:
    """`trigger.body has no key 'total' (its keys: id, lines)`: the path in the template
    whose value lacked the key, found by reading each access chain of the template that
    ends in that key, where Jinja says only "'dict object' has no attribute 'total'"."""
    obj, name = exc.obj, exc.name
    chains: list[tuple[Any, ...]] = []
    try:
        for node in sandbox().parse(source).find_all((nodes.Getattr, nodes.Getitem)):
            chain = _access_chain(node)
            if chain and len(chain) > 1 and chain[-1] == name:
                chains.append(chain)
    except jinja2.TemplateSyntaxError:
        pass  # it compiled, so it parses; Jinja's own words are the fallback
    found = [c for c in chains if c[0] in context and _lookup(context, c[:-1]) is obj]
    # A name the template made (a loop's `m` in `m.email`) cannot be read here: named
    # when it is the only reading that can be meant.
    local = {c[:-1] for c in chains if c[0] not in context}
    if found:
        path = found[0][:-1]
    elif len(local) == 1 and not any(c[0] in context for c in chains):
        path = local.pop()
    else:
        return exc.message or f"no key {name!r}"
    where = _dotted(path)
    if isinstance(obj, Mapping):
        keys = [_short(str(k)) for k in obj]
        shown = ", ".join(keys[:_SHOWN_KEYS]) + (
            f", … ({len(keys)} keys)" if len(keys) > _SHOWN_KEYS else ""
        )
        said = f"{where} has no key {name!r} " + (
            f"(its keys: {shown})" if keys else "(it is empty)"
        )
    elif isinstance(obj, list | tuple) and isinstance(name, int):
        said = f"{where} has no item {name} (it holds {len(obj)})"
    else:
        said = f"{where} is {_kind(obj)}, so it has no key {name!r}"
    if len(path) > 2 and path[0] == "steps" and path[2] == "output":
        step = context["steps"].get(path[1]) if isinstance(context.get("steps"), Mapping) else None
        if isinstance(step, Mapping) and step.get("status") not in (None, "succeeded"):
            said += f" (step {path[1]} {str(step['status']).replace('_', ' ')})"
    return said


def _access_chain(node: nodes.Node) -> tuple[Any, ...] | None:
    """`a.b['c'][0]` as ('a', 'b', 'c', 0); None unless each access is a constant."""
    parts: list[Any] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            parts.append(node.arg.value)
        elif isinstance(node, nodes.Name):
            return (node.name, *reversed(parts))
        else:
            return None
        node = node.node


def _lookup(context: Mapping[str, Any], chain: tuple[Any, ...]) -> Any:
    """The value `chain` reads as the sandbox would, or a fresh object when it cannot."""
    value: Any = context
    for key in chain:
        if (isinstance(value, Mapping) and key in value) or (
            isinstance(value, list | tuple)
            and isinstance(key, int)
            and -len(value) <= key < len(value)
        ):
            value = value[key]
        else:
            return object()
    return value


def _dotted(chain: tuple[Any, ...]) -> str:
    """('trigger', 'headers', 'x-id', 0) as `trigger.headers['x-id'][0]`."""
    out = str(chain[0])
    for key in chain[1:]:
        out += f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{key!r}]"
    return out


def _short(key: str, most: int = 40) -> str:
    return key if len(key) <= most else key[: most - 1] + "…"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


@functools.lru_cache(maxsize=4096)
def _expression(source: str) -> Callable[..., Any]:
    return sandbox().compile_expression(source, undefined_to_none=False)


@functools.lru_cache(maxsize=4096)
def _template(source: str) -> jinja2.Template:
    return sandbox().from_string(source)


def _defined(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # raises UndefinedError with Jinja's message
    return value


def render_string(text: str, context: dict[str, Any]) -> Any:
    if not any(m in text for m in MARKERS):
        return text
    try:
        whole = _WHOLE.match(text)
        if whole and "{{" not in whole.group(1) and "}}" not in whole.group(1):
            return _value(_defined(_expression(whole.group(1).strip())(**context)))
        return _template(text).render(context)
    except Exception as exc:  # a template may raise anything; each becomes a failed step
        raise RenderError(_reason(exc, text, context)) from None


def render(value: Any, context: dict[str, Any]) -> Any:
    """`value` with every string in it rendered (mappings and lists walked)."""
    if isinstance(value, str):
        return render_string(value, context)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            try:
                out[k] = render(v, context)
            except RenderError as exc:
                raise exc.within(str(k)) from None
        return out
    if isinstance(value, list):
        items = []
        for i, v in enumerate(value):
            try:
                items.append(render(v, context))
            except RenderError as exc:
                raise exc.within(i) from None
        return items
    return value


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """The value of a bare expression (`when:`); `{{ }}` around it is tolerated."""
    source = expression.strip()
    if source.startswith("{{") and source.endswith("}}"):
        source = source[2:-2].strip()
    try:
        return _value(_defined(_expression(source)(**context)))
    except Exception as exc:  # as above: the step fails with the reason
        raise RenderError(_reason(exc, "{{ (" + source + ") }}", context)) from None
