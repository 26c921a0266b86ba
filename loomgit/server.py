"""The daemon's HTTP side (aiohttp): webhooks per environment, the API trigger, the
environment and execution views, health, and the reconcile loop that feeds them.

An execution is recorded before `202` is returned, so an accepted request is never lost.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from loomgit.errors import UsageError
from loomgit.history import History
from loomgit.reconcile import Reconciler, Served
from loomgit.recorder import AsyncRecorder
from loomgit.records import STATUSES, Query
from loomgit.runtime import Deployment, Engine, TriggerEvent

MAX_BODY_BYTES = 1024 * 1024
RETRY_AFTER_SECONDS = "5"


@dataclass
class Settings:
    interval: float = 60.0
    grace: float = 30.0
    max_body: int = MAX_BODY_BYTES
    tokens: tuple[str, ...] = ()


@dataclass
class Daemon:
    reconciler: Reconciler
    history: History
    settings: Settings
    on_ready: Callable[[list[str]], None] | None = None
    engine: Engine = field(init=False)
    recorder: AsyncRecorder = field(init=False)
    running: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.recorder = AsyncRecorder(self.history)
        self.engine = Engine(self.recorder)

    # -- reconcile -------------------------------------------------------------------

    async def reconcile_once(self) -> None:
        # Parsing and decrypting happen in a worker thread, off the event loop.
        await asyncio.to_thread(self.reconciler.cycle)

    async def reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval)
            await self.reconcile_once()

    # -- starting executions ---------------------------------------------------------

    async def start(
        self, dep: Deployment, trigger: TriggerEvent, dedupe_key: str | None
    ) -> tuple[str, bool]:
        """Records the execution, then runs it in the background. (id, started anew)."""
        proposed = self.engine.new_execution(dep, trigger, dedupe_key)
        recorded = await self.recorder.start(proposed)
        if recorded.id != proposed.id:
            return recorded.id, False
        task = asyncio.create_task(self.engine.run(dep, trigger, recorded))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return recorded.id, True

    async def stop(self) -> None:
        """Lets running executions finish within the grace period, cancels the rest
        (they are recorded as cancelled), and flushes the history."""
        if self.running:
            _, pending = await asyncio.wait(set(self.running), timeout=self.settings.grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.engine.close()
        self.recorder.close()


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every refusal as `{"error": …}` with its status, never an HTML page."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except Refused as exc:
        extra = {401: {"WWW-Authenticate": "Bearer"}, 503: {"Retry-After": RETRY_AFTER_SECONDS}}
        return _error(exc.status, str(exc), **extra.get(exc.status, {}))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, (exc.reason or "refused").lower())


async def _body(request: web.Request, limit: int) -> Any:
    """The body, parsed as JSON when it says so; 413 past `limit` without reading on."""
    too_large = f"the body is larger than {limit:,} bytes"
    if request.content_length is not None and request.content_length > limit:
        raise Refused(413, too_large)
    raw = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        raw += chunk
        if len(raw) > limit:
            raise Refused(413, too_large)
    if not raw:
        return None
    if "json" in request.content_type:
        try:
            return json.loads(raw)
        except ValueError:
            raise Refused(400, "the body is not valid JSON") from None
    return raw.decode(errors="replace")


def app(daemon: Daemon) -> web.Application:
    rec = daemon.reconciler
    routes = web.RouteTableDef()

    def authorised(request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        if not given.startswith("Bearer ") or not daemon.settings.tokens:
            return False
        token = given.removeprefix("Bearer ").encode()
        return any(hmac.compare_digest(token, t.encode()) for t in daemon.settings.tokens)

    def require_token(request: web.Request) -> None:
        if not authorised(request):
            raise Refused(401, "a valid bearer token is required")

    def serving(env: str) -> Served:
        if env not in rec.names:
            raise Refused(404, f"no environment {env}")
        served = rec.served.get(env)
        if served is None:
            raise Refused(503, f"{env} is not reconciled yet")
        return served

    async def accept(
        served: Served, env: str, name: str, trigger: TriggerEvent, key: str | None
    ) -> web.Response:
        ident, new = await daemon.start(served.deployments[name], trigger, key)
        return web.json_response(
            {"execution": ident, "environment": env, "workflow": name},
            status=202 if new else 200,
        )

    @routes.route("*", "/hooks/{env}/{path:.+}")
    async def hook(request: web.Request) -> web.Response:
        env, path = request.match_info["env"], request.match_info["path"].strip("/")
        served = serving(env)
        name = served.routes.get((request.method, path))
        if name is None:
            return _error(404, f"no active webhook {request.method} /{path} in {env}")
        body = await _body(request, daemon.settings.max_body)
        trigger = TriggerEvent(
            "webhook",
            body=body,
            headers=dict(request.headers),
            query=dict(request.query),
            details={"path": path, "method": request.method},
        )
        key = request.headers.get("Idempotency-Key") or request.headers.get("X-GitHub-Delivery")
        return await accept(served, env, name, trigger, key)

    @routes.post("/api/v1/workflows/{name}/executions")
    async def api_run(request: web.Request) -> web.Response:
        require_token(request)
        body = await _body(request, daemon.settings.max_body)
        if body is not None and not isinstance(body, dict):
            return _error(400, 'the body is {"environment": …, "input": …}')
        body = body or {}
        env = body.get("environment") or rec.last_environment
        name = request.match_info["name"]
        served = serving(str(env))
        if name not in served.api:
            return _error(404, f"{name} has no active api trigger in {env}")
        trigger = TriggerEvent("api", body=body.get("input"), details={"environment": env})
        return await accept(served, str(env), name, trigger, request.headers.get("Idempotency-Key"))

    @routes.post("/api/v1/reconcile")
    async def reconcile(request: web.Request) -> web.Response:
        require_token(request)
        await daemon.reconcile_once()
        return web.json_response(_environments(daemon))

    @routes.get("/api/v1/environments")
    async def environments(request: web.Request) -> web.Response:
        return web.json_response(_environments(daemon))

    @routes.get("/api/v1/executions")
    async def executions(request: web.Request) -> web.Response:
        q = request.query
        status = q.get("status")
        if status is not None and status not in STATUSES:
            return _error(400, f"status is one of {', '.join(STATUSES)}")
        try:
            limit = min(int(q.get("limit", "50")), 1000)
            since = float(q["since"]) if "since" in q else None
        except ValueError:
            return _error(400, "limit is a number; since is a Unix time")
        query = Query(q.get("environment"), q.get("workflow"), status, since, max(limit, 1))
        found = await asyncio.to_thread(daemon.history.query, query)
        return web.json_response([ex.to_json(steps=False) for ex in found])

    @routes.get("/api/v1/executions/{ident}")
    async def execution(request: web.Request) -> web.Response:
        try:
            ex = await asyncio.to_thread(daemon.history.get, request.match_info["ident"])
        except UsageError as exc:
            return _error(404, exc.message)
        return web.json_response(ex.to_json())

    @routes.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    @routes.get("/readyz")
    async def readyz(request: web.Request) -> web.Response:
        waiting = [n for n in rec.names if n not in rec.served]
        if waiting or not rec.names:
            raise Refused(503, f"not reconciled yet: {', '.join(waiting)}")
        return web.json_response({"status": "ready"})

    application = web.Application(
        client_max_size=daemon.settings.max_body, middlewares=[_json_errors]
    )
    application.add_routes(routes)
    return application


def _environments(daemon: Daemon) -> list[dict[str, Any]]:
    rec = daemon.reconciler
    out = []
    for name in rec.names:
        st = rec.status.get(name)
        served = rec.served.get(name)
        workflows = {}
        if served is not None:
            for wf, dep in sorted(served.deployments.items()):
                workflows[wf] = {"version": dep.version, "active": wf in served.active}
        out.append(
            {
                "name": name,
                "commit": served.commit if served else None,
                "last_applied_commit": st.last_applied_commit if st else None,
                "last_attempted_commit": st.last_attempted_commit if st else None,
                "conditions": [c.to_json() for c in st.conditions] if st else [],
                "workflows": workflows,
            }
        )
    return out


async def serve(daemon: Daemon, host: str, port: int) -> None:
    """Runs until SIGTERM or SIGINT: reconcile first, then accept requests."""
    runner = web.AppRunner(app(daemon), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pass another --port, or stop what is using it",
        ) from None
    bound = runner.addresses[0][1] if runner.addresses else port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.reconcile_once()
    if daemon.on_ready:
        daemon.on_ready([f"http://{host}:{bound}"])
    loop_task = asyncio.create_task(daemon.reconcile_loop())
    await stop.wait()
    loop_task.cancel()
    await site.stop()  # stop accepting; running executions go on within the grace period
    await daemon.stop()
    await runner.cleanup()
