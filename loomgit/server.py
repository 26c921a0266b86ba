"""The daemon's HTTP side (aiohttp): webhooks per environment, the API trigger, the push
webhook of the git host, the environment and execution views, health and metrics.

An execution is recorded before `202` is returned, so an accepted request is never lost.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import json
import logging
import re
import signal
import time
from typing import Any

from aiohttp import web

from loomgit import log
from loomgit.daemon import Daemon, describe_served
from loomgit.errors import UsageError
from loomgit.metrics import CONTENT_TYPE
from loomgit.models.workflow import WebhookTrigger
from loomgit.openapi import spec as openapi_spec
from loomgit.reconcile import Served
from loomgit.records import STATUSES, Execution, Query
from loomgit.runtime import TriggerEvent

RETRY_AFTER_SECONDS = "5"
SIGNATURE_PREFIX = "sha256="
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


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


async def _raw_body(request: web.Request, limit: int) -> bytes:
    """The raw body; 413 past `limit` without reading on."""
    too_large = f"the body is larger than {limit:,} bytes"
    length = request.content_length
    if length is not None and length > limit:
        raise Refused(413, too_large)
    if length is not None:
        try:
            return await request.content.readexactly(length)
        except asyncio.IncompleteReadError:
            raise Refused(400, "the body is shorter than its Content-Length") from None
    raw = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        raw += chunk
        if len(raw) > limit:
            raise Refused(413, too_large)
    return bytes(raw)


def _parse(request: web.Request, raw: bytes) -> Any:
    """The body, parsed as JSON when it says so."""
    if not raw:
        return None
    if "json" in request.content_type:
        try:
            return json.loads(raw)
        except ValueError:
            raise Refused(400, "the body is not valid JSON") from None
    return raw.decode(errors="replace")


async def _body(request: web.Request, limit: int) -> Any:
    return _parse(request, await _raw_body(request, limit))


def _signed(secret: bytes, raw: bytes, given: str | None) -> bool:
    """Whether `given` is the hex HMAC-SHA256 of `raw` (with or without `sha256=`)."""
    if not given:
        return False
    expected = hmac.new(secret, raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(
        given.strip().removeprefix(SIGNATURE_PREFIX).encode(), expected.encode()
    )


def _signature_secret(served: Served, name: str, trigger: WebhookTrigger) -> bytes:
    assert trigger.signature is not None
    fields = served.deployments[name].credentials.get(trigger.signature.credential, {})
    return str(fields.get(trigger.signature.field, "")).encode()


def _sync_answer(ex: Execution) -> web.Response:
    """A `respond: sync` webhook's answer: the respond step's response, else the output."""
    if ex.status != "succeeded":
        failed = {"execution": ex.id, "status": ex.status, "error": ex.error}
        return web.json_response(failed, status=504 if ex.status == "timed_out" else 500)
    responded = any(s.type == "respond" and s.status == "succeeded" for s in ex.steps)
    if responded and isinstance(ex.output, dict):
        status = int(ex.output.get("status", 200))
        # A header built from caller input could carry a line break (header injection):
        # such headers are dropped, as are those the server sets itself.
        headers = {
            k: str(v)
            for k, v in (ex.output.get("headers") or {}).items()
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
            and _HEADER_NAME.match(k)
            and not any(c in str(v) for c in "\r\n\0")
        }
        content = ex.output.get("body")
        if isinstance(content, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return web.Response(text=content, status=status, headers=headers)
        if content is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(content, status=status, headers=headers)
    return web.json_response({"execution": ex.id, "output": ex.output})


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
        served: Served,
        env: str,
        name: str,
        trigger: TriggerEvent,
        key: str | None,
        sync_timeout: float | None = None,
    ) -> web.Response:
        if daemon.overloaded():
            raise Refused(503, "too many executions are waiting to run; retry later")
        sync = sync_timeout is not None
        ident, task = await daemon.start(served.deployments[name], trigger, key, sync)
        if task is not None and sync_timeout is not None:
            try:
                _, record = await asyncio.wait_for(asyncio.shield(task), sync_timeout)
                assert record is not None  # asked for with want_record
                return _sync_answer(record)
            except TimeoutError:
                pass  # it goes on; the caller gets its id
        return web.json_response(
            {"execution": ident, "environment": env, "workflow": name},
            status=202 if task is not None else 200,
        )

    @routes.route("*", "/hooks/{env}/{path:.+}")
    async def hook(request: web.Request) -> web.Response:
        began = time.perf_counter()
        env, path = request.match_info["env"], request.match_info["path"].strip("/")
        served = serving(env)
        route = (request.method, path)
        trigger = served.routes.get(route)
        if trigger is None:
            return _error(404, f"no active webhook {request.method} /{path} in {env}")
        name = served.hooks[route]
        raw = await _raw_body(request, daemon.settings.max_body)
        if trigger.signature is not None:
            given = request.headers.get(trigger.signature.header)
            if not _signed(_signature_secret(served, name, trigger), raw, given):
                return _error(401, f"missing or wrong {trigger.signature.header} signature")
        event = TriggerEvent(
            "webhook",
            body=_parse(request, raw),
            headers=dict(request.headers),
            query=dict(request.query),
            details={"path": path, "method": request.method},
        )
        key = request.headers.get("Idempotency-Key") or request.headers.get("X-GitHub-Delivery")
        sync = trigger.respond_timeout if trigger.respond == "sync" else None
        answer = await accept(served, env, name, event, key, sync)
        daemon.metrics.webhook_seconds.labels(env).observe(time.perf_counter() - began)
        return answer

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

    @routes.post("/api/v1/git-webhook")
    async def git_webhook(request: web.Request) -> web.Response:
        secret = daemon.settings.git_webhook_secret
        if secret is None:
            return _error(404, "the git webhook is off; start serve with --git-webhook-secret-file")
        raw = await _raw_body(request, daemon.settings.max_body)
        if not _signed(secret, raw, request.headers.get("X-Hub-Signature-256")):
            return _error(401, "missing or wrong X-Hub-Signature-256 signature")
        if request.headers.get("X-GitHub-Event") == "ping":
            return web.json_response({"status": "pong"})
        log.event("git webhook", delivery=request.headers.get("X-GitHub-Delivery", ""))
        daemon.request_reconcile()
        return web.json_response({"status": "reconcile started"}, status=202)

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=daemon.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    @routes.get("/openapi.json")
    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(openapi_spec())

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
        out.append(
            {
                "name": name,
                "commit": served.commit if served else None,
                "last_applied_commit": st.last_applied_commit if st else None,
                "last_attempted_commit": st.last_attempted_commit if st else None,
                "conditions": [c.to_json() for c in st.conditions] if st else [],
                "events": [c.to_json() for c in st.events] if st else [],
                "workflows": describe_served(served),
            }
        )
    return out


LOOPS_STOP_WITHIN = 5.0  # seconds; cancelled, they stop at once


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
    await daemon.recover()
    await daemon.reconcile_once()
    url = f"http://{host}:{bound}"
    log.event("listening", url=url)
    if daemon.on_ready:
        daemon.on_ready([url])
    tasks = [
        asyncio.create_task(daemon.reconcile_loop()),
        asyncio.create_task(daemon.scheduler.run()),
        asyncio.create_task(daemon.collect_loop()),
    ]
    gc.disable()  # see daemon.YOUNG_COLLECTION_EVERY
    try:
        await stop.wait()
    finally:
        gc.enable()
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
    await site.stop()  # stop accepting; running executions go on within the grace period
    await daemon.stop()
    await runner.cleanup()
    log.event("stopped")
