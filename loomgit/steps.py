"""What each step type does at run time: the built-in types and those that plugins add
through the `loomgit.steps` entry point group. Parameter models live in models/steps.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions
import pydantic_core
from pydantic import BaseModel, ValidationError

from loomgit.httpclient import Client, HttpError, Request, describe, query_params
from loomgit.models import steps as models
from loomgit.render import RenderError, render
from loomgit.wording import must

DEFAULT_HTTP_TIMEOUT = 30.0


class StepError(Exception):
    """A step failed; `retryable` says whether another attempt could succeed."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class StepContext:
    """What a step sees besides its parameters. Plugins receive it as `ctx`."""

    data: Mapping[str, Any]  # trigger, steps, credentials, vars, env, workflow
    environment: str
    client: Client
    _log: Callable[[str, str], None]

    def log(self, message: str, level: str = "info") -> None:
        """Adds a line to the execution log (redacted like everything else)."""
        self._log(level, str(message))


def _messages(exc: ValidationError) -> str:
    # Only locations and messages: the input values may hold secrets.
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        rule = must(err["type"], err["msg"], ctx=err.get("ctx"))
        parts.append(f"with.{where}: {rule}" if where else rule)
    return "; ".join(parts)


@dataclass(frozen=True)
class Kind:
    """One step type: its parameter model, which parameters are templates, and its body."""

    name: str
    params: type[BaseModel]
    body: Callable[[Any, StepContext], Any]
    untemplated: tuple[str, ...] = ()  # parameters taken literally (a JMESPath expression)
    is_async: bool = False

    def render(self, raw: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """The parameters with their templates rendered (raises RenderError, naming the
        parameter: `with.url: …`)."""
        rendered = {}
        for k, v in raw.items():
            try:
                rendered[k] = v if k in self.untemplated else render(v, context)
            except RenderError as exc:
                raise exc.within(k).within("with") from None
        return rendered

    def parse(self, rendered: dict[str, Any]) -> Any:
        try:
            return self.params.model_validate(rendered)
        except ValidationError as exc:
            raise StepError(_messages(exc), retryable=False) from None

    def timeout(self, params: Any, step_timeout: float | None) -> float | None:
        if isinstance(params, models.HttpParams):
            own = params.timeout or DEFAULT_HTTP_TIMEOUT
            return min(own, step_timeout) if step_timeout else own
        return step_timeout

    @property
    def plugin(self) -> bool:
        return self.name not in models.BUILTIN_STEPS

    @property
    def stoppable(self) -> bool:
        """Whether a timeout stops the step's work, not only the wait for it."""
        return self.is_async or not self.plugin

    async def run(self, params: Any, ctx: StepContext) -> Any:
        if self.is_async:
            out = await self.body(params, ctx)
        elif not self.plugin:
            return self.body(params, ctx)
        else:
            out = await _in_thread(self.name, self.body, params, ctx)
        return _as_json(out)


# A plugin's plain function may block: it runs in a thread of its own, never in a shared
# pool. A timeout cannot stop a thread, so one that hangs keeps running after its step
# has failed; in a pool (asyncio's default has cpu_count + 4 threads) a few such calls
# held every thread, and every other plugin step waited for one (a step of another type
# took 9 s instead of 5 ms), and the runner could not exit until they returned. These
# threads are daemon threads, and past PLUGIN_THREADS alive at once a step fails at once.
PLUGIN_THREADS = 1024
_alive = threading.BoundedSemaphore(PLUGIN_THREADS)


async def _in_thread(name: str, body: Callable[[Any, StepContext], Any], *args: Any) -> Any:
    alive = _alive  # the one released, even if the module's is replaced meanwhile
    if not alive.acquire(blocking=False):
        raise StepError(
            f"{PLUGIN_THREADS} calls of plain plugin steps are running in this process (a call"
            " whose step timed out goes on until it returns); none is started until one ends"
        )
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if done.done():  # the step timed out or was cancelled meanwhile
            return
        if error is None:
            done.set_result(value)
        else:
            done.set_exception(error)

    def call() -> None:
        value, error = None, None
        try:
            value = body(*args)
        except Exception as exc:  # handed to the step, which reports it
            error = exc
        except BaseException as exc:  # sys.exit() in a plugin stops its step only
            error = StepError(f"{type(exc).__name__} raised in the step's run function", False)
        finally:
            alive.release()
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits for it
            loop.call_soon_threadsafe(settle, value, error)

    try:
        threading.Thread(target=call, name=f"loomgit-step-{name}", daemon=True).start()
    except RuntimeError as exc:  # the system would not start another thread
        alive.release()
        raise StepError(f"cannot start a thread for the step: {exc}") from None
    return await done


def _as_json(value: Any) -> Any:
    """A plugin's output as JSON values, as the history records it and as later steps
    and the answer see it: a datetime as ISO 8601 text, a set or tuple as a list, a
    pydantic model or a dataclass as a mapping (pydantic's rules); any other object
    fails the step, where `str()` would have recorded its Python description."""
    try:
        return pydantic_core.to_jsonable_python(value)
    except UnicodeDecodeError:
        message = "its output holds bytes that are not UTF-8 text (give them as base64 text)"
    except (pydantic_core.PydanticSerializationError, ValueError) as exc:
        text = str(exc)
        message = f"its output cannot be recorded as JSON: {text[:1].lower()}{text[1:]}"
    raise StepError(message, retryable=False)


async def _http(p: models.HttpParams, ctx: StepContext) -> Any:
    req = Request(
        method=p.method,
        url=p.url,
        headers=p.headers,
        query=query_params(p.query),
        json=p.json_,
        form=p.form,
        body=p.body,
        timeout=p.timeout or DEFAULT_HTTP_TIMEOUT,
    )
    try:
        out = await ctx.client.send(req)
    except HttpError as exc:
        raise StepError(str(exc)) from None
    status = out["status"]
    ok = status in p.expect_status if p.expect_status else 200 <= status < 300
    if not ok:
        expected = ", ".join(map(str, p.expect_status)) if p.expect_status else "2xx"
        raise StepError(
            f"{p.method} {p.url} answered {status}, expected {expected}: {describe(out)}"
        )
    return out


@functools.lru_cache(maxsize=4096)
def _compiled(expression: str) -> jmespath.parser.ParsedResult:
    return jmespath.compile(expression)


def _transform(p: models.TransformParams, ctx: StepContext) -> Any:
    try:
        return _compiled(p.expression).search(dict(ctx.data))
    except jmespath.exceptions.JMESPathError as exc:
        raise StepError(f"JMESPath: {exc}", retryable=False) from None


def _set(p: models.SetParams, ctx: StepContext) -> Any:
    return dict(p.root)


def _log(p: models.LogParams, ctx: StepContext) -> Any:
    ctx.log(p.message, p.level)
    return {"message": p.message, "level": p.level}


def _respond(p: models.RespondParams, ctx: StepContext) -> Any:
    return {"status": p.status, "headers": p.headers, "body": p.body}


def _fail(p: models.FailParams, ctx: StepContext) -> Any:
    raise StepError(p.message, retryable=False)


BUILTIN: dict[str, Kind] = {
    "http": Kind("http", models.HttpParams, _http, is_async=True),
    "transform": Kind("transform", models.TransformParams, _transform, ("expression",)),
    "set": Kind("set", models.SetParams, _set),
    "log": Kind("log", models.LogParams, _log),
    "respond": Kind("respond", models.RespondParams, _respond),
    "fail": Kind("fail", models.FailParams, _fail),
}


@functools.cache
def kind(name: str) -> Kind:
    """The step type `name`; raises StepError when no installed package provides it."""
    found = BUILTIN.get(name)
    if found is not None:
        return found
    plugin = models.plugins().get(name)
    if plugin is None and models.plugins_changed():  # installed since this process began
        plugin = models.plugins().get(name)
    if plugin is None:
        why = models.unusable(name)
        told = f"step type '{name}' cannot be used: {why}" if why else f"unknown step type '{name}'"
        raise StepError(told, retryable=False)
    return Kind(name, plugin.params, plugin.run, is_async=inspect.iscoroutinefunction(plugin.run))
