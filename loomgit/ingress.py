"""How an HTTP request becomes an execution: the webhooks, `/hooks/{environment}/{path}`,
and the API trigger. An execution is recorded before `202` is returned, so an accepted
request is never lost.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from loomgit.daemon import Daemon
from loomgit.history import HistoryError
from loomgit.models.workflow import WebhookTrigger
from loomgit.reconcile import Served
from loomgit.records import Execution
from loomgit.runtime import TriggerEvent

RETRY_AFTER_SECONDS = "5"
UNRECORDED = "the execution history cannot be written now; nothing was recorded, retry later"
SIGNATURE_PREFIX = "sha256="
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# What a refusal with this status also says, as HTTP asks.
_REFUSAL_HEADERS = {401: {"WWW-Authenticate": "Bearer"}, 503: {"Retry-After": RETRY_AFTER_SECONDS}}


class Refused(Exception):
    """A request refused with `status`; answered as `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def response(self) -> web.Response:
        return error(self.status, str(self), **_REFUSAL_HEADERS.get(self.status, {}))


def error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


async def raw_body(request: web.Request, limit: int) -> bytes:
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


def parse(request: web.Request, raw: bytes) -> Any:
    """The body, parsed as JSON when it says so."""
    if not raw:
        return None
    if "json" in request.content_type:
        try:
            return json.loads(raw)
        except ValueError:
            raise Refused(400, "the body is not valid JSON") from None
    return raw.decode(errors="replace")


def signed(secret: bytes, raw: bytes, given: str | None) -> bool:
    """Whether `given` is the hex HMAC-SHA256 of `raw` (with or without `sha256=`)."""
    if not given:
        return False
    expected = hmac.new(secret, raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(
        given.strip().removeprefix(SIGNATURE_PREFIX).encode(), expected.encode()
    )


def plain_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request's headers as a plain dict of plain strings. aiohttp's names are
    multidict's `istr`, which pickles by reference to its class: it made the trigger
    sent to the writer and to a runner several times slower to pickle and to redact
    (measured: 3.6 µs against 0.8 µs to pickle three headers)."""
    return {str(k): v for k, v in headers.items()}


@functools.lru_cache(maxsize=4096)
def _accepted_tail(env: str, name: str) -> str:
    """The end of an accepted request's answer, `"environment": …, "workflow": …}`:
    built once per webhook, not per request (json_response took 6.8 µs, this 3.4)."""
    return json.dumps({"environment": env, "workflow": name})[1:]


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


class Ingress:
    """Accepts webhooks and API triggers for the daemon's served environments."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def serving(self, env: str) -> Served:
        rec = self.daemon.reconciler
        if env not in rec.names:
            raise Refused(404, f"no environment {env}")
        served = rec.served.get(env)
        if served is None:
            raise Refused(503, f"{env} is not reconciled yet")
        return served

    async def accept(
        self,
        served: Served,
        env: str,
        name: str,
        trigger: TriggerEvent,
        key: str | None,
        sync_timeout: float | None = None,
    ) -> web.Response:
        """Records an execution of `name` and has it run; `202` with its id, or with
        `sync_timeout`, its answer if it ends within that time."""
        daemon = self.daemon
        if daemon.overloaded():
            raise Refused(503, "too many executions are waiting to run; retry later")
        sync = sync_timeout is not None
        try:
            ident, task = await daemon.start(served.deployments[name], trigger, key, sync)
        except HistoryError as exc:
            daemon.unrecorded(exc, env, name, trigger.type)
            raise Refused(503, UNRECORDED) from None
        if task is not None and sync_timeout is not None:
            try:
                _, record = await asyncio.wait_for(asyncio.shield(task), sync_timeout)
                assert record is not None  # asked for with want_record
                return _sync_answer(record)
            except TimeoutError:
                pass  # it goes on; the caller gets its id
        body = f'{{"execution": {json.dumps(ident)}, {_accepted_tail(env, name)}'
        return web.Response(
            body=body.encode(),
            status=202 if task is not None else 200,
            content_type="application/json",
        )

    async def hook(self, request: web.Request, env: str, path: str) -> web.Response:
        """A request to `/hooks/{env}/{path}`: an execution of the workflow whose active
        webhook trigger that is, or why not."""
        began = time.perf_counter()
        daemon = self.daemon
        path = path.strip("/")
        served = self.serving(env)
        route = (request.method, path)
        trigger = served.routes.get(route)
        if trigger is None:
            allowed = served.methods.get(path)
            if allowed:  # the path is served, with other methods: HTTP says 405, and which
                listed = ", ".join(allowed)
                message = f"/{path} in {env} accepts {listed}, not {request.method}"
                return error(405, message, Allow=listed)
            return error(404, f"no active webhook {request.method} /{path} in {env}")
        name = served.hooks[route]
        raw = await raw_body(request, daemon.settings.max_body)
        if trigger.signature is not None:
            given = request.headers.get(trigger.signature.header)
            if not signed(_signature_secret(served, name, trigger), raw, given):
                return error(401, f"missing or wrong {trigger.signature.header} signature")
        headers = request.headers
        event = TriggerEvent(
            "webhook",
            body=parse(request, raw),
            headers=plain_headers(headers),
            query=dict(request.query) if request.query_string else {},
            details={"path": path, "method": request.method},
        )
        key = headers.get("Idempotency-Key") or headers.get("X-GitHub-Delivery")
        sync = trigger.respond_timeout if trigger.respond == "sync" else None
        answer = await self.accept(served, env, name, event, key, sync)
        metrics = daemon.metrics
        metrics.child(metrics.webhook_seconds, env).observe(time.perf_counter() - began)
        return answer
