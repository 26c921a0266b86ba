"""The daemon's HTTP side, an ASGI application served by uvicorn: webhooks per
environment and the API trigger (both in `loomgit.ingress`), the push webhook of the git
host, the environment and execution views, health and metrics. Webhooks are answered from
the ASGI scope itself; everything else goes through Starlette's routing."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import math
import signal
import socket
import sys
import weakref
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from loomgit import httphead, log
from loomgit import retry as retries
from loomgit.ages import parse_moment
from loomgit.daemon import Daemon
from loomgit.errors import NO_API_TOKENS, UsageError, crash_report
from loomgit.ingress import (
    HOOKS,
    Ingress,
    Refused,
    authorized,
    closes,
    error,
    json_response,
    lingering,
    no_api_trigger,
    parse,
    raw_body,
    signed,
)
from loomgit.layout import unknown_environment
from loomgit.metrics import CONTENT_TYPE
from loomgit.openapi import spec as openapi_spec
from loomgit.reconcile import Served
from loomgit.records import STATUSES, Execution, Query, StepRecord, stamp, version_of
from loomgit.runtime import TriggerEvent

INTERNAL_ERROR = "internal error; the daemon's log says where the details are"


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, a method the route does not take) as
    `{"error": …}`, never a text page."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error(404, _not_here(request))
    return error(exc.status_code, exc.detail.lower(), **(exc.headers or {}))


def _not_here(request: Request) -> str:
    """Why a path has no route, and the path it was meant to be when it only gained a
    trailing slash. Starlette's way, a 307 to the path without it, leaves `curl -X POST`
    with an empty answer and exit 0: a CI job's reconcile that never happened."""
    path = request.url.path
    bare = path.rstrip("/")
    if bare and bare != path:
        scope = {**request.scope, "path": bare}
        if any(route.matches(scope)[0] != Match.NONE for route in request.app.routes):
            return f"no {_cut(path)} here; did you mean {_cut(bare)}?"
    return f"no {_cut(path)} here; the API is described at /openapi.json"


def _cut(path: str) -> str:
    return path if len(path) <= 80 else path[:80] + "…"


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error(500, INTERNAL_ERROR)


_REPORTS: dict[str, str | None] = {}  # a report per kind of bug, not one per request


def _reported(exc: Exception) -> str:
    kind = type(exc).__qualname__
    if kind not in _REPORTS:
        _REPORTS[kind] = crash_report(exc)
    return _REPORTS[kind] or "(no report: the state folder is not writable)"


def _log_bug(scope: Scope, exc: Exception) -> None:
    """A bug: one log line; where it happened goes to a file."""
    log.event(
        "request failed",
        logging.ERROR,
        method=scope.get("method", ""),
        path=scope.get("path", ""),
        error=type(exc).__name__,  # its type only: the message might hold a secret
        details=_reported(exc),
    )


RUN_BODY = 'the body is {"environment": NAME, "input": ANYTHING}, both optional'


async def _run_body(request: Request, limit: int) -> tuple[str | None, Any]:
    """The API trigger's environment and input. The body is JSON whatever its content type
    says (`curl -d` calls it a form); a misspelt key is refused rather than run without
    the input it meant to give."""
    raw = await raw_body(request, limit)
    body = parse("application/json", raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise Refused(400, RUN_BODY)
    unknown = sorted(set(body) - {"environment", "input"})
    if unknown:
        raise Refused(400, f"unknown key {unknown[0]!r}: {RUN_BODY}")
    env = body.get("environment")
    if env is not None and (not isinstance(env, str) or not env):
        given = json.dumps(env)
        given = given if len(given) <= 40 else given[:40] + "…"
        raise Refused(400, f"environment is the name of an environment, not {given}")
    return env, body.get("input")


RETRY_FROM = ("start", "failed_step")
RETRY_FROM_WORDS = 'a retry starts from "start" (the default) or "failed_step"'
MAX_RETRY_BODY = 4096  # a retry's body says where it starts, no more


async def _retry_body(request: Request) -> Any:
    """Where a retry is asked to start: `{"from": "failed_step"}` at the step that
    failed, `{"from": "start"}` (or no body) at the first."""
    raw = await raw_body(request, MAX_RETRY_BODY)
    body = parse("application/json", raw) if raw.strip() else {}
    if not isinstance(body, dict) or set(body) - {"from"}:
        raise Refused(400, f'the body is empty or {{"from": …}}: {RETRY_FROM_WORDS}')
    return body.get("from", "start")


HOOK_PATH = "/hooks/{env}/{path}"  # as the OpenAPI document names it


def app(daemon: Daemon) -> ASGIApp:
    """The daemon's HTTP side: webhooks, then the API."""
    ingress = Ingress(daemon)
    return front(ingress.hook, api(daemon, ingress))


def api(daemon: Daemon, ingress: Ingress | None = None) -> Starlette:
    """Everything but the webhooks; API triggers are accepted through `ingress`."""
    rec = daemon.reconciler
    ingress = ingress or Ingress(daemon)

    def refused(endpoint: str, reason: str) -> None:
        daemon.metrics.child(daemon.metrics.api_refused, endpoint, reason).inc()

    def require_token(request: Request, endpoint: str) -> None:
        tokens = daemon.settings.tokens
        if not tokens:
            refused(endpoint, "no_tokens")
            raise Refused(401, NO_API_TOKENS)
        given = request.headers.get("Authorization")
        if not any(authorized(t.encode(), given, "bearer") for t in tokens):
            refused(endpoint, "wrong" if given else "missing")
            raise Refused(401, "a valid bearer token is required")

    view = EnvironmentsView(daemon)

    async def api_run(request: Request) -> Response:
        require_token(request, "run")
        given, data = await _run_body(request, daemon.settings.max_body)
        env = given or rec.last_environment
        if env is None:
            raise Refused(503, "the daemon has not read loomgit.yaml yet")
        name = request.path_params["name"]
        if given is None and env not in rec.names:  # --environments left the default out
            raise Refused(
                404,
                f"the environment defaults to {env}, which this daemon does not serve; "
                f'give "environment": one of {", ".join(rec.names)}',
            )
        served = ingress.serving(env)
        if name not in served.api:
            why = no_api_trigger(served, env, name)
            elsewhere = [
                e
                for e in rec.names
                if e != env and (other := rec.served.get(e)) is not None and name in other.api
            ]
            if given is None:
                why += " (the default environment, the last)"
            if elsewhere:
                why += f"; it has an active api trigger in {', '.join(elsewhere)}"
                if given is None:
                    why += f': give "environment": "{elsewhere[-1]}"'
            return error(404, why)
        trigger = TriggerEvent("api", body=data, details={"environment": env})
        key = request.headers.get("Idempotency-Key")
        answer = await ingress.accept(served, env, name, trigger, key)
        if isinstance(answer, Response):
            return answer
        status, content = answer
        return Response(content, status_code=status, media_type="application/json")

    async def git_webhook(request: Request) -> Response:
        secret = daemon.settings.git_webhook_secret
        if secret is None:
            return error(404, "the git webhook is off; start serve with --git-webhook-secret-file")
        raw = await raw_body(request, daemon.settings.max_body)
        if not signed(secret, raw, request.headers.get("X-Hub-Signature-256")):
            refused("git_webhook", "signature")
            return error(401, "missing or wrong X-Hub-Signature-256 signature")
        if request.headers.get("X-GitHub-Event") == "ping":
            return json_response({"status": "pong"})
        log.event("git webhook", delivery=request.headers.get("X-GitHub-Delivery", ""))
        daemon.request_reconcile()
        return json_response({"status": "reconcile started"}, 202)

    async def metrics(request: Request) -> Response:
        return Response(daemon.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def openapi(request: Request) -> Response:
        return json_response(openapi_spec())

    async def reconcile(request: Request) -> Response:
        require_token(request, "reconcile")
        await daemon.reconcile_once()
        return await view.render()

    async def environments(request: Request) -> Response:
        return await view.render()

    def empty_name(env: str | None, workflow: str | None) -> Response | None:
        """`?environment=$ENV` with the variable unset is not a name: a 400."""
        for name, value in (("environment", env), ("workflow", workflow)):
            if value == "":
                return error(400, f"{name} is empty; leave it out, or name one")
        return None

    def only_version(q: Any, workflow: str | None) -> int | None:
        """`?version=3` (or v3): only that version's executions, of the workflow named."""
        text = q.get("version")
        if text is None:
            return None
        version = version_of(text)
        if version is None:
            raise UsageError("version is a workflow's version number, as 3 or v3")
        if workflow is None:
            raise UsageError("version goes with workflow: each workflow numbers its own versions")
        return version

    async def mistyped(env: str | None) -> Response | None:
        """A 400 for an environment that matched nothing and that loomgit.yaml does not
        list, unless it has since dropped it and the history holds some of its
        executions (filtered out, or on pages before this one)."""
        if not env or not rec.pipeline or env in rec.pipeline:
            return None
        if await asyncio.to_thread(daemon.history.query, Query(env, limit=1)):
            return None
        unknown = unknown_environment(env, rec.pipeline)
        return error(400, f"{unknown.message}: {unknown.hint}")

    # Executions hold what triggered them and what their steps answered (orders,
    # addresses…): read with a token, as they are started, while webhooks stay open.
    async def executions(request: Request) -> Response:
        require_token(request, "executions")
        q = request.query_params
        status = q.get("status")
        if status is not None and status not in STATUSES:
            return error(400, f"status is one of {', '.join(STATUSES)}")
        try:
            limit = min(int(q.get("limit", "50")), 1000)
        except ValueError:
            limit = 0
        if limit < 1:
            return error(400, "limit is a whole number from 1 (at most 1000 are returned)")
        env, workflow, before = q.get("environment"), q.get("workflow"), q.get("before")
        try:  # as the CLI's --since, and a Unix time
            since = parse_moment(q["since"], "since") if "since" in q else None
            version = only_version(q, workflow)
        except UsageError as exc:
            return error(400, exc.message)
        if refused := empty_name(env, workflow):
            return refused
        query = Query(env, workflow, status, since, limit, before, version)
        try:
            found = await asyncio.to_thread(daemon.history.query, query)
        except UsageError as exc:
            return error(400, exc.message)
        if not found and (refused := await mistyped(env)):
            return refused
        # A full page links to the next one, as GitHub's API does (RFC 8288).
        more = None
        if len(found) == limit:
            url = request.url.include_query_params(before=found[-1].id)
            more = {"Link": f'<{url}>; rel="next"'}
        return json_response([ex.to_json(steps=False) for ex in found], headers=more)

    async def summary(request: Request) -> Response:
        require_token(request, "summary")
        q = request.query_params
        env, workflow = q.get("environment"), q.get("workflow")
        try:  # as the CLI's --since (default 24h), and a Unix time
            since = parse_moment(q.get("since", "24h"), "since")
            version = only_version(q, workflow)
        except UsageError as exc:
            return error(400, exc.message)
        if refused := empty_name(env, workflow):
            return refused
        tallies = await asyncio.to_thread(daemon.history.tally, since, env, workflow, version)
        if not tallies and (refused := await mistyped(env)):
            return refused
        return json_response({"since": stamp(since), "versions": [t.to_json() for t in tallies]})

    async def recorded(request: Request, endpoint: str) -> Execution:
        """The execution the path names (by id or its first 6 or more characters)."""
        require_token(request, endpoint)
        try:
            return await asyncio.to_thread(daemon.history.get, request.path_params["ident"])
        except UsageError as exc:
            raise Refused(404, exc.message) from None

    async def execution(request: Request) -> Response:
        return json_response((await recorded(request, "execution")).to_json())

    async def retry(request: Request) -> Response:
        """POST: the execution retried (see `loomgit.retry`); GET: what a retry would do,
        doing nothing (`--dry-run`)."""
        ex = await recorded(request, "retry")
        if request.method == "GET":
            where = request.query_params.get("from", "start")
        else:
            where = await _retry_body(request)
        if where not in RETRY_FROM:
            raise Refused(400, RETRY_FROM_WORDS)
        planned = await plan_retry(ex, where == "failed_step")
        if isinstance(planned, Response):
            return planned
        served, trigger = planned
        env, name, key = ex.environment, ex.workflow, retries.key(ex)
        version = served.deployments[name].version
        resumed = trigger.details.get("resumed_from")
        if request.method == "GET":
            return json_response(retries.answer(ex, None, version, False, resumed))
        answer = await ingress.accept(served, env, name, trigger, None, dedupe=key)
        assert not isinstance(answer, Response)  # a response only for a sync wait
        status, body = answer
        ident = json.loads(body)["execution"]
        if status == 202:
            return json_response(retries.answer(ex, ident, version, False, resumed), 202)
        # Retried meanwhile, by a request at the same moment: that one.
        return replayed(ex, ident, await asyncio.to_thread(daemon.history.with_key, env, name, key))

    async def plan_retry(
        ex: Execution, from_failed_step: bool
    ) -> Response | tuple[Served, TriggerEvent]:
        """What serves a retry of `ex` and the trigger it would run with; or the answer
        instead: why not (409), or the retry made before (200)."""
        why = retries.why_not(ex)
        if why is not None:
            return error(409, why)
        env, name = ex.environment, ex.workflow
        # Retried before: that retry, whatever is served now.
        first = await asyncio.to_thread(daemon.history.with_key, env, name, retries.key(ex))
        if first is not None:
            return replayed(ex, first.id, first)
        served = ingress.serving(env)
        if name not in served.deployments:
            return error(409, f"{name} is no longer in {env}; nothing to retry it with")
        if name not in served.active:
            return error(409, f"{name} is not active in {env}; activate it to retry {ex.id}")
        resume: tuple[StepRecord, ...] = ()
        if from_failed_step:
            resume, why = retries.reused(ex, served.deployments[name])
            if why is not None:
                return error(409, why)
        return served, retries.trigger(ex, resume)

    def replayed(ex: Execution, ident: str, first: Execution | None) -> Response:
        """The answer to a retry of `ex` made before: `first`, its retry `ident`."""
        version = None if first is None else first.version
        resumed = None if first is None else first.trigger.get("resumed_from")
        return json_response(retries.answer(ex, ident, version, True, resumed), 200)

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        wanted = request.query_params.get("environments")
        names = [n.strip() for n in wanted.split(",") if n.strip()] if wanted else None
        return json_response(readiness(daemon, names))

    return _api(
        [
            Route("/api/v1/workflows/{name}/executions", api_run, methods=["POST"]),
            Route("/api/v1/git-webhook", git_webhook, methods=["POST"]),
            Route("/metrics", metrics),
            Route("/openapi.json", openapi),
            Route("/api/v1/reconcile", reconcile, methods=["POST"]),
            Route("/api/v1/environments", environments),
            Route("/api/v1/executions", executions),
            Route("/api/v1/executions/summary", summary),
            Route("/api/v1/executions/{ident}", execution),
            Route("/api/v1/executions/{ident}/retry", retry, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]
    )


def _api(routes: list[Route]) -> Starlette:
    application = Starlette(
        routes=routes,
        exception_handlers={
            Refused: _refused,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    application.router.redirect_slashes = False  # see _not_here
    return application


def front(hooks: ASGIApp, api: ASGIApp) -> ASGIApp:
    """Webhooks to `hooks`, straight from the server; the rest to `api`. A bug in either
    is one log line and a JSON 500, never a traceback."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and closes(scope):
            receive, send = lingering(receive, send)
        if scope["type"] == "http" and scope["path"].startswith(HOOKS):
            try:
                await hooks(scope, receive, send)
            except Exception as exc:
                _log_bug(scope, exc)
                with contextlib.suppress(RuntimeError):  # the answer had begun: it ends there
                    await error(500, INTERNAL_ERROR)(scope, receive, send)
            return
        try:
            await api(scope, receive, send)
        except Exception as exc:  # Starlette answered 500, then raised it for the log
            _log_bug(scope, exc)

    return serve


def readiness(daemon: Daemon, wanted: list[str] | None = None) -> dict[str, Any]:
    """`/readyz`: ready once the first reconcile has ended and at least one environment
    serves, or with `wanted`, once each of those does. One environment's bad commit must
    not take the others out of a load balancer when the daemon restarts; a rollout that
    must not go on without production asks for `?environments=production`.
    Raises Refused (503) when not ready, (400) for an environment not served here."""
    rec = daemon.reconciler
    if not daemon.reconciled:
        raise Refused(503, "the first reconcile has not ended")
    if not rec.names:  # the first read failed before loomgit.yaml was read
        why = f": {rec.read_error}" if rec.read_error else ""
        raise Refused(503, f"the repository has not been read yet{why}")
    unknown = [n for n in wanted or [] if n not in rec.names]
    if unknown:
        raise Refused(400, f"no environment {unknown[0]} here; it serves {', '.join(rec.names)}")

    def state(name: str) -> dict[str, Any]:
        st = rec.status.get(name)
        served = rec.served.get(name)
        cond = st.conditions[0] if st and st.conditions else None
        reason = cond.reason if cond else "NotReconciled"
        return {"serving": served.commit if served else None, "reason": reason}

    states = {name: state(name) for name in rec.names}
    missing = [n for n in wanted or rec.names if states[n]["serving"] is None]
    if (missing and wanted) or len(missing) == len(rec.names):
        why = ", ".join(f"{n} ({states[n]['reason']})" for n in missing)
        raise Refused(503, f"not serving: {why}")
    return {"status": "ready", "environments": states}


# Workflows described per chunk, with the event loop turning between chunks. The view is
# built on the loop and `json.dumps` holds the interpreter while it runs: described in one
# piece, 10,000 workflows held every webhook and schedule for 20-25 ms per request (a
# dashboard, or `loomgit status --server`, polling it).
DESCRIBE_CHUNK = 500


class EnvironmentsView:
    """`GET /api/v1/environments`: each environment's commit and conditions, and each
    workflow's version and active state. What an environment serves changes only when a
    commit is applied, so its workflows are turned into JSON once per commit served."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        # Weakly: the commit an environment served before must not stay in memory until
        # the next request for this view.
        self._described: dict[str, tuple[weakref.ref[Served], str]] = {}

    async def _workflows(self, name: str, served: Served | None) -> str:
        if served is None:
            return "{}"
        known = self._described.get(name)
        if known is not None and known[0]() is served:
            return known[1]
        names = sorted(served.deployments)
        parts = []
        for at in range(0, len(names), DESCRIBE_CHUNK):
            if at:
                await asyncio.sleep(0)
            chunk = {
                wf: {"version": served.deployments[wf].version, "active": wf in served.active}
                for wf in names[at : at + DESCRIBE_CHUNK]
            }
            parts.append(json.dumps(chunk)[1:-1])
        text = "{" + ", ".join(parts) + "}"
        self._described[name] = (weakref.ref(served), text)
        return text

    async def render(self) -> Response:
        rec = self.daemon.reconciler
        out = []
        waiting = [n for n in list(rec.served) if n not in rec.names]  # see _remove_unlisted
        for name in [*rec.names, *waiting]:
            st = rec.status.get(name)
            served = rec.served.get(name)
            head = {
                "name": name,
                "commit": served.commit if served else None,
                "last_applied_commit": st.last_applied_commit if st else None,
                "last_attempted_commit": st.last_attempted_commit if st else None,
                "conditions": [c.to_json() for c in st.conditions] if st else [],
                "events": [c.to_json() for c in st.events] if st else [],
            }
            workflows = await self._workflows(name, served)
            out.append(f'{json.dumps(head)[:-1]}, "workflows": {workflows}}}')
        return Response(f"[{', '.join(out)}]", media_type="application/json")


LOOPS_STOP_WITHIN = 5.0  # seconds; cancelled, they stop at once
# While serving, the reconcile cycle's thread hands the interpreter back after this long
# (Python's default is 5 ms). Each time the event loop waits on a socket it lets the cycle
# run, and would get the interpreter back only after the interval: with a large change
# being validated, every webhook and schedule waited several intervals. Measured with
# bench_daemon.py's reparse part (10,000 workflows changed, webhooks at 1,000/s), webhook
# p99 during the cycle: 57-120 ms at 5 ms, 51-69 ms at 0.5 ms, 56-74 ms at 0.1 ms.
SWITCH_INTERVAL = 0.0005


def open_files_limit() -> int:
    """Raises this process's soft limit on open files to its hard limit, as Go does for
    its programs, and returns it (the same again when called again). Each connection
    holds a descriptor, as do git, sops and the history; systemd starts services with a
    soft limit of 1,024 (hard 524,288)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):  # above what the kernel allows
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft


def _listen_hint(exc: OSError) -> str:
    """What to do when the daemon cannot listen, by why."""
    if isinstance(exc, socket.gaierror):
        return "--host takes an address or a name of this machine, such as 127.0.0.1 or 0.0.0.0"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "--host is not an address of this machine; 0.0.0.0 listens on all of them"
    if exc.errno == errno.EACCES:
        return "ports below 1024 need privileges; pass another --port"
    return "pass another --port, or stop what is using it"


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts, so that a port in use is a
    one-line error here rather than the server's own exit."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=2048)


def _server(daemon: Daemon) -> uvicorn.Server:
    refusals = daemon.metrics.http_refused
    config = uvicorn.Config(
        app(daemon),
        # Limits on a request head's size and on how long it takes; refusals are counted.
        http=httphead.protocol(refused=lambda why: daemon.metrics.child(refusals, why).inc()),
        loop="none",  # the daemon's own (uvloop's where installed)
        lifespan="off",
        access_log=False,
        log_config=None,  # its few warnings (malformed requests) go to the daemon's log
        log_level="warning",
        server_header=False,
        timeout_keep_alive=75,
        timeout_graceful_shutdown=math.ceil(daemon.settings.grace + LOOPS_STOP_WITHIN),
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    server_log = logging.getLogger("uvicorn")
    server_log.handlers[:] = log.logger.handlers
    server_log.propagate = False
    return server


async def serve(daemon: Daemon, host: str, port: int) -> None:
    """Runs until SIGTERM or SIGINT: reconcile first, then accept requests. SIGHUP
    reloads (`Daemon.reload`)."""
    open_files = open_files_limit()  # raised already by `loomgit serve`; read for the log
    try:
        sock = _listen(host, port)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint=_listen_hint(exc)
        ) from None
    bound = sock.getsockname()[1]
    server = _server(daemon)
    await server.startup(sockets=[sock])
    ticks = asyncio.create_task(server.main_loop())  # keeps the Date header current
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)  # as `systemctl reload` sends
    await daemon.recover()
    await daemon.reconcile_once()
    url = f"http://{host}:{bound}"
    log.event("listening", url=url, open_files=open_files)
    if daemon.on_ready:
        daemon.on_ready([url])
    tasks = [
        asyncio.create_task(daemon.reconcile_loop()),
        asyncio.create_task(daemon.scheduler.run()),
        asyncio.create_task(daemon.collect_loop()),
    ]
    gc.disable()  # see daemon.YOUNG_COLLECTION_EVERY
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        await stop.wait()
    finally:
        gc.enable()
        sys.setswitchinterval(switch_interval)
    log.event("stopping", grace=daemon.settings.grace)
    for task in tasks:
        task.cancel()
    # Each loop stops at its next await; a cycle in its worker thread is not waited for.
    done, stuck = await asyncio.wait(tasks, timeout=LOOPS_STOP_WITHIN)
    if stuck:
        log.event("loops did not stop; stopping without them", logging.WARNING, count=len(stuck))
    for task in done:  # a loop that had failed says so here, not as a traceback at exit
        failure = None if task.cancelled() else task.exception()
        if failure is not None:  # its type only: the message might hold a secret
            log.event("loop failed", logging.ERROR, error=type(failure).__name__)
    # Stop accepting; requests under way are answered while running executions go on
    # within the grace period (a `respond: sync` webhook gets its execution's answer).
    server.should_exit = True
    closing = asyncio.create_task(server.shutdown(sockets=[sock]))
    await asyncio.sleep(0)  # the listening socket is closed before the executions stop
    await daemon.stop()
    await closing
    await ticks
    log.event("stopped")
