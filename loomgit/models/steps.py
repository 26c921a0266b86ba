"""Parameter models of the built-in step types, and the registry that adds plugin types.

A plugin registers a step type through the `loomgit.steps` entry point group: the entry
point's name is the type name, and the object it loads has a `params` attribute holding a
pydantic model for the step's `with:` mapping (or is that model itself), and a `run`
callable: `run(params, ctx)`, plain or `async`, returning the step's output (see
`loomgit.runtime.StepContext`).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

from loomgit.models.base import IDENTIFIER, Duration, StrictModel

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

ENTRY_POINT_GROUP = "loomgit.steps"


class HttpParams(StrictModel):
    """Call an HTTP endpoint; output: status, headers, json or text."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str | int | float | bool] = Field(default_factory=dict)
    json_: Any = Field(default=None, alias="json", description="JSON request body")
    form: dict[str, str] | None = Field(default=None, description="form-encoded request body")
    body: str | None = Field(default=None, description="raw request body")
    timeout: Duration | None = None
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] | None = Field(
        default=None, description="accepted statuses; default any 2xx"
    )

    @model_validator(mode="after")
    def _one_body(self) -> HttpParams:
        given = [k for k in ("json_", "form", "body") if getattr(self, k) is not None]
        if len(given) > 1:
            names = " and ".join(k.rstrip("_") for k in given)
            raise ValueError(f"give only one request body: {names}")
        return self


class TransformParams(StrictModel):
    """Evaluate a JMESPath expression over the context; output: its result."""

    expression: str = Field(min_length=1)


class SetParams(RootModel[dict[Annotated[str, Field(pattern=IDENTIFIER)], Any]]):
    """Named values (templates allowed); output: the mapping."""

    root: dict[Annotated[str, Field(pattern=IDENTIFIER)], Any] = Field(min_length=1)


class LogParams(StrictModel):
    """Write a line to the execution log."""

    message: str
    level: Literal["debug", "info", "warning", "error"] = "info"


class RespondParams(StrictModel):
    """The HTTP response a webhook caller gets."""

    status: int = Field(default=200, ge=100, le=599)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None


class FailParams(StrictModel):
    """Stop the execution as failed, with a message."""

    message: str = Field(min_length=1)


BUILTIN_STEPS: dict[str, type[BaseModel]] = {
    "http": HttpParams,
    "transform": TransformParams,
    "set": SetParams,
    "log": LogParams,
    "respond": RespondParams,
    "fail": FailParams,
}

# What a built-in step's output holds, for `steps.<id>.output.<key>`: a `set` step's is
# the keys it sets, a `transform` step's whatever its expression makes, a `fail` step has
# none. An http step's output has `json` for an answer in JSON, `text` otherwise.
OUTPUT_KEYS: dict[str, tuple[str, ...]] = {
    "http": ("status", "headers", "json", "text"),
    "log": ("message", "level"),
    "respond": ("status", "headers", "body"),
}


@dataclass(frozen=True)
class Plugin:
    """A step type an installed package registers: its parameter model and its body."""

    params: type[BaseModel]
    run: Callable[..., Any]


@functools.cache
def _registered() -> tuple[dict[str, Plugin], dict[str, str]]:
    """The step types installed packages register, and why each of the others that they
    register cannot be used (loaded once per process, and again after
    `plugins_changed`)."""
    global _seen
    from importlib.metadata import entry_points  # only when a non-built-in type is used

    found: dict[str, Plugin] = {}
    broken: dict[str, str] = {}
    eps = entry_points(group=ENTRY_POINT_GROUP)
    _seen = _installed(eps)
    for ep in eps:
        if ep.name in BUILTIN_STEPS:
            continue
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "a package"
        where = f"{dist} registers it as {ep.value}"
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break validation of other types
            first = str(exc).splitlines()[0] if str(exc) else ""
            broken[ep.name] = f"{where}, which cannot be loaded: {type(exc).__name__}: {first}"
            continue
        is_model = isinstance(obj, type) and issubclass(obj, BaseModel)
        params = obj if is_model else getattr(obj, "params", None)
        run = getattr(obj, "run", None)
        if not (isinstance(params, type) and issubclass(params, BaseModel)):
            broken[ep.name] = f"{where}, which has no `params` pydantic model"
        elif not callable(run):
            broken[ep.name] = f"{where}, which has no `run(params, ctx)` function"
        else:
            found[ep.name] = Plugin(_strict(params), run)
    return found, broken


def _strict(params: type[BaseModel]) -> type[BaseModel]:
    """`params`, refusing keys it does not know unless its author said what to do with
    them: pydantic's default is to drop them, so a misspelt optional parameter
    (`max_len:` for `max_length:`) would validate and be ignored, as no built-in is."""
    if issubclass(params, RootModel) or params.model_config.get("extra") is not None:
        return params
    namespace = {"model_config": ConfigDict(extra="forbid"), "__module__": params.__module__}
    return type(params.__name__, (params,), namespace)


def plugins() -> dict[str, Plugin]:
    """The step types registered by installed packages that can be used."""
    return _registered()[0]


Installed = tuple[tuple[str, str, str], ...]


def installed_plugins() -> Installed:
    """The entry points registering step types, as names and versions, without loading
    them (reading them takes about 2 ms with 60 packages installed)."""
    from importlib.metadata import entry_points

    return _installed(entry_points(group=ENTRY_POINT_GROUP))


def plugins_changed() -> bool:
    """Whether the packages registering step types changed since they were looked up
    (one installed, removed or upgraded beside a running daemon); if so, they are looked
    up again at their next use."""
    if _seen is None or installed_plugins() == _seen:
        return False
    forget_plugins()
    return True


def forget_plugins() -> None:
    """Looks the plugins up again at their next use. A module already imported keeps its
    code: an upgraded package's new code needs a restart."""
    importlib.invalidate_caches()  # the finders may not have seen the new modules yet
    _registered.cache_clear()


# The entry points `_registered` last read.
_seen: Installed | None = None


def _installed(eps: Iterable[EntryPoint]) -> Installed:
    return tuple(
        sorted(
            (ep.name, ep.value, f"{ep.dist.name} {ep.dist.version}" if ep.dist else "")
            for ep in eps
        )
    )


def unusable(step_type: str) -> str | None:
    """Why a plugin's step type of that name cannot be used, or None when no package
    registers one that cannot."""
    return _registered()[1].get(step_type)


def plugin_steps() -> dict[str, type[BaseModel]]:
    """The parameter models of the plugin step types."""
    return {name: plugin.params for name, plugin in plugins().items()}


def params_model(step_type: str) -> type[BaseModel] | None:
    """The parameter model of a step type, or None when the type is unknown."""
    return BUILTIN_STEPS.get(step_type) or plugin_steps().get(step_type)


def known_types() -> list[str]:
    return sorted({*BUILTIN_STEPS, *plugin_steps()})
