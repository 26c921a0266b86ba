"""How an HTTP request becomes an execution: the webhooks, `/hooks/{environment}/{path}`,
and the API trigger. An execution is recorded before `202` is returned, so an accepted
request is never lost.

Webhooks are served straight from the ASGI scope, without a framework's request and
response objects: they are the daemon's hot path (see `Ingress.hook`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from loomgit import jsontext, webpaths
from loomgit.daemon import Daemon
from loomgit.errors import UsageError
from loomgit.history import HistoryError
from loomgit.models.workflow import WebhookAuth, WebhookSignature
from loomgit.reconcile import Served
from loomgit.records import FINISHED, Execution
from loomgit.runtime import TriggerEvent
from loomgit.wording import closest

RETRY_AFTER_SECONDS = "5"
UNRECORDED = "the execution history cannot be written now; nothing was recorded, retry later"
SIGNATURE_PREFIX = "sha256="
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# What a refusal with this status also says, as HTTP asks.
_REFUSAL_HEADERS = {
    401: {"WWW-Authenticate": "Bearer"},
    415: {"Accept-Encoding": "identity"},
    503: {"Retry-After": RETRY_AFTER_SECONDS},
}
_REFUSAL_REASONS = {413: "too_large", 415: "encoding"}  # loomgit_webhook_refused's reason
_JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
# An idempotency key (`Idempotency-Key`, or the git host's `X-GitHub-Delivery`) is kept
# with its execution and indexed; Stripe's limit, where GitHub's delivery ids are 36.
MAX_KEY_LENGTH = 255
# A caller's key is kept with this in front, so that it can never be the key of a
# schedule's time (`scheduler.dedupe_key`): a webhook sent `Idempotency-Key:
# schedule:2026-11-23T09:00:00Z` would otherwise have taken that time, and the schedule
# would not have fired.
CLIENT_KEY = "key:"
# A retried `respond: sync` request waits for the first execution's end, looking at the
# history after 20 ms, then twice as long each time, up to every 250 ms.
REPLAY_FIRST_PAUSE, REPLAY_LONGEST_PAUSE = 0.02, 0.25
KEY_TOO_LONG = f"the idempotency key is longer than {MAX_KEY_LENGTH} characters"
HOOKS = "/hooks/"  # where webhooks are served: /hooks/{environment}/{path}


class Refused(Exception):
    """A request refused with `status`; answered as `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def response(self) -> Response:
        return error(self.status, str(self), **_REFUSAL_HEADERS.get(self.status, {}))


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(jsontext.dumps(data), status_code=status, headers=headers, media_type=_JSON)


def error(status: int, message: str, **headers: str) -> Response:
    return json_response({"error": message}, status, headers or None)


def _too_large(limit: int) -> Refused:
    return Refused(413, f"the body is larger than {limit:,} bytes")


def uncompressed(coding: str | None) -> None:
    """415 for a body sent compressed (`Content-Encoding: gzip`…), which would otherwise
    reach the workflow as garbled text, or be refused as JSON that is not (RFC 7694)."""
    if coding and coding.strip().lower() != "identity":
        named = coding if len(coding) <= 40 else coding[:40] + "…"
        raise Refused(415, f"Content-Encoding {named} is not accepted; send the body uncompressed")


def _declared_within(declared: str | None, limit: int) -> None:
    """413 at once, before any of the body is read, when its declared length is too long."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


async def _body_within(chunks: AsyncIterator[bytes], limit: int, declared: str | None) -> bytes:
    """The body from its chunks; 413 once it is longer than `limit`, or at once when its
    declared length is."""
    _declared_within(declared, limit)
    raw = bytearray()
    async for chunk in chunks:
        raw += chunk
        if len(raw) > limit:
            raise _too_large(limit)
    return bytes(raw)


async def raw_body(request: Request, limit: int) -> bytes:
    """The raw body; 413 past `limit` without reading on, 415 when it is compressed."""
    uncompressed(request.headers.get("content-encoding"))
    return await _body_within(request.stream(), limit, request.headers.get("content-length"))


# A request answered before its body was read (refused as too large, or before it was
# needed) is not read on, but where the server closes the connection after the answer
# (the client said `Connection: close`), the unread bytes make the system reset it and
# the client sees a broken pipe instead of the answer. So on such a connection what
# arrives is discarded, for up to this long, before answering (aiohttp's lingering).
LINGER_SECONDS = 10.0


def closes(scope: Scope) -> bool:
    """Whether the server closes this connection after the answer while the client
    sends its body without waiting for a `100 Continue`."""
    if scope["http_version"] == "1.0":
        return True
    closing = waiting = False
    for name, value in scope["headers"]:
        if name == b"connection":
            closing = b"close" in value.lower()
        elif name == b"expect":
            waiting = b"100-continue" in value.lower()
    return closing and not waiting


def lingering(receive: Receive, send: Send) -> tuple[Receive, Send]:
    """`receive` and `send` that read the rest of the body before the answer starts."""
    ended = False

    async def receiving() -> Message:
        nonlocal ended
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            ended = True
        return message

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start" and not ended:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LINGER_SECONDS):
                    while not ended:
                        await receiving()
        await send(message)

    return receiving, sending


async def _received(receive: Receive, message: Message) -> AsyncIterator[bytes]:
    """The body's chunks as the server hands them over (an ASGI `receive`), from the
    first `message`."""
    while True:
        if message["type"] != "http.request":  # the client went away
            raise Refused(400, "the client closed the connection before the body ended")
        yield message.get("body", b"")
        if not message.get("more_body"):
            return
        message = await receive()


async def _body(receive: Receive, limit: int, declared: str | None) -> bytes:
    """The body of a webhook; most come in one message, read without a generator."""
    _declared_within(declared, limit)
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body"):
        raw: bytes = message.get("body", b"")
        if len(raw) > limit:
            raise _too_large(limit)
        return raw
    return await _body_within(_received(receive, message), limit, None)


_NO_PARAMS: dict[str, str] = {}


def _segments(scope: Scope, path: str) -> list[str]:
    """The segments of a webhook's path after the environment, from the path as sent, so
    that an encoded `/` (`%2F`) stays inside its segment."""
    raw = scope.get("raw_path")
    if raw is None:
        return path.split("/")
    return webpaths.segments(raw.decode("latin-1")[len(HOOKS) :].partition("/")[2])


def _methods(served: Served, path: str, parts: Sequence[str]) -> tuple[str, ...]:
    """The methods a webhook path is served with, its literal path's and its patterns'."""
    literal = served.methods.get(path, ())
    if not served.patterns:
        return literal
    matched = (m for m, these in served.patterns.items() if webpaths.match(these, parts))
    return tuple(sorted({*literal, *matched}))


def fields(text: str) -> dict[str, str]:
    """A query string's or a form's fields; a name given twice keeps its last value."""
    return dict(parse_qsl(text, keep_blank_values=True))


def parse(content_type: str, raw: bytes) -> Any:
    """The body, parsed as JSON when its content type says so, and a form (Slack's slash
    commands, Twilio's webhooks) as its fields; anything else as text."""
    if not raw:
        return None
    if "json" in content_type:
        try:
            return jsontext.loads(raw)
        except jsontext.TooDeep as exc:
            raise Refused(400, f"the body is refused: {exc}") from None
        except ValueError:
            raise Refused(400, "the body is not valid JSON") from None
    if content_type.lower().startswith(FORM):
        return fields(raw.decode(errors="replace"))
    return raw.decode(errors="replace")


def signed(secret: bytes, raw: bytes, given: str | None, encoding: str = "hex") -> bool:
    """Whether `given` is the HMAC-SHA256 of `raw`: hex (with or without `sha256=`) or
    base64. Never with an empty secret (a credential without the field, say): anyone can
    sign with it."""
    if not given or not secret:
        return False
    digest = hmac.new(secret, raw, hashlib.sha256).digest()
    if encoding == "base64":
        expected, given = base64.b64encode(digest).decode(), given.strip()
    else:
        expected, given = digest.hex(), given.strip().removeprefix(SIGNATURE_PREFIX)
    return hmac.compare_digest(given.encode(), expected.encode())


def authorized(secret: bytes, given: str | None, scheme: str | None) -> bool:
    """Whether the header value `given` carries the shared secret: `Bearer <secret>`,
    `Basic <base64 of secret>` (RFC 7617: the secret is `user:password` in UTF-8), the
    scheme in any case as RFC 9110 has it; or, with no scheme, the secret alone.
    Compared in constant time, and never with an empty secret."""
    if not given or not secret:
        return False
    given = given.strip()
    if scheme is not None:
        said, _, given = given.partition(" ")
        if said.lower() != scheme:
            return False
        given = given.strip()
    # Header values come decoded as latin-1: encoded back, they are the bytes as sent.
    sent = given.encode("latin-1")
    if scheme == "basic":
        try:
            decoded = base64.b64decode(sent, validate=True)
        except ValueError:  # binascii.Error
            return False
        # Only the one spelling of the secret: no `=` past the padding due, no stray bits.
        if base64.b64encode(decoded) != sent:
            return False
        sent = decoded
    return hmac.compare_digest(sent, secret)


@functools.lru_cache(maxsize=4096)
def _accepted_tail(env: str, name: str) -> bytes:
    """The end of an accepted request's answer, `"environment": …, "workflow": …}`:
    built once per webhook, not per request."""
    return json.dumps({"environment": env, "workflow": name})[1:].encode()


def accepted_body(ident: str, env: str, name: str) -> bytes:
    return b'{"execution": "' + ident.encode() + b'", ' + _accepted_tail(env, name)


def _secret(served: Served, name: str, check: WebhookSignature | WebhookAuth) -> bytes:
    """The secret a check compares with: a credential's field, or for basic auth its user
    name and password as `user:password`; empty when a part is missing or empty, which
    lets nobody in."""
    fields = served.deployments[name].credentials.get(check.credential, {})
    parts = [str(fields.get(field) or "") for _, field in check.secret_fields()]
    return ":".join(parts).encode() if all(parts) else b""


_CHALLENGE = {  # RFC 9110: a 401 names the scheme it wants
    "bearer": ("bearer token", 'Bearer realm="loomgit {env}"'),
    "basic": ("basic credentials", 'Basic realm="loomgit {env}", charset="UTF-8"'),
}


def _unauthorized(env: str, auth: WebhookAuth) -> Response:
    scheme = auth.header_scheme
    if scheme is None:
        return error(401, f"missing or wrong {auth.header} header")
    what, challenge = _CHALLENGE[scheme]
    return error(
        401,
        f"missing or wrong {what} in the Authorization header",
        **{"WWW-Authenticate": challenge.format(env=env)},
    )


# A `respond: sync` execution that did not succeed: timed out is the gateway's timeout,
# and one the daemon stopped before it finished is the server being unavailable.
_SYNC_FAILED = {"timed_out": 504, "interrupted": 503}


def _sync_answer(ex: Execution) -> Response:
    """A `respond: sync` webhook's answer: the respond step's response, else the output."""
    if ex.status != "succeeded":
        failed = {"execution": ex.id, "status": ex.status, "error": ex.error}
        return json_response(failed, _SYNC_FAILED.get(ex.status, 500))
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
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "text/plain; charset=utf-8"
            return Response(content, status_code=status, headers=headers)
        if content is None:
            return Response(status_code=status, headers=headers)
        return json_response(content, status, headers)
    return json_response({"execution": ex.id, "output": ex.output})


# A name longer than this is not compared with the environments' for a hint: the path
# is the caller's, up to the head's limit (`loomgit.httphead`), and refusing is cheap.
_HINT_LENGTH = 100


def no_environment(env: str, names: list[str]) -> str:
    """Why there is no environment `env`: the one likely meant, and those there are."""
    close = closest(env, names) if len(env) <= _HINT_LENGTH else None
    meant = f"did you mean {close}? " if close else ""
    return f"no environment {env}; {meant}environments: {', '.join(names)}"


def no_api_trigger(served: Served, env: str, name: str) -> str:
    """Why `name` cannot be called through the API in `env`: no such workflow (with the
    one likely meant), not active, or not triggered that way."""
    if name not in served.deployments:
        close = closest(name, served.deployments) if len(name) <= _HINT_LENGTH else None
        return f"no workflow {name} in {env}" + (f"; did you mean {close}?" if close else "")
    if name not in served.active:
        return f"{name} is not active in {env}"
    kinds = ", ".join(t.type for t in served.deployments[name].workflow.spec.triggers)
    return f"{name} has no api trigger in {env}; its triggers: {kinds}"


class Ingress:
    """Accepts webhooks and API triggers for the daemon's served environments."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def serving(self, env: str) -> Served:
        rec = self.daemon.reconciler
        served = rec.served.get(env)
        if served is not None:  # or one loomgit.yaml no longer lists: see _remove_unlisted
            return served
        if not env:
            raise Refused(404, "no environment in the path; webhooks are at /hooks/ENV/PATH")
        if env in rec.pipeline and env not in rec.names:  # left out by --environments
            raise Refused(
                404, f"{env} is not served here; this daemon serves {', '.join(rec.names)}"
            )
        if env not in rec.names:
            raise Refused(404, no_environment(env, rec.pipeline or rec.names))
        raise Refused(503, f"{env} is not reconciled yet")

    async def accept(
        self,
        served: Served,
        env: str,
        name: str,
        trigger: TriggerEvent,
        key: str | None,
        sync_timeout: float | None = None,
        *,
        dedupe: str | None = None,
    ) -> tuple[int, bytes] | Response:
        """Records an execution of `name` and has it run: `202` with its id (`200` with
        the first one's for a repeated idempotency key, or `dedupe` key), or with
        `sync_timeout`, its answer if it ends within that time."""
        daemon = self.daemon
        if key is not None and len(key) > MAX_KEY_LENGTH:
            raise Refused(400, KEY_TOO_LONG)
        if daemon.overloaded(env, trigger.type):
            raise Refused(503, "too many executions are waiting to run; retry later")
        sync = sync_timeout is not None
        if key is not None:
            dedupe = CLIENT_KEY + key  # never a schedule's (see there)
        try:
            ident, task = await daemon.start(served.deployments[name], trigger, dedupe, sync)
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
        elif sync_timeout is not None:  # a retry: the first answer, once there is one
            replayed = await self._replayed(ident, sync_timeout)
            if replayed is not None:
                return replayed
        return 202 if task is not None else 200, accepted_body(ident, env, name)

    async def _replayed(self, ident: str, timeout: float) -> Response | None:
        """The answer the execution a repeated idempotency key names gave (or gives, once
        it ends within `timeout`), marked as a replay, as Stripe marks one; None past
        `timeout`. It is read from the history, so the first may have run in another
        daemon, or before a restart."""
        deadline = time.monotonic() + timeout
        pause = REPLAY_FIRST_PAUSE
        while True:
            try:
                ex = await asyncio.to_thread(self.daemon.history.get, ident)
            except (HistoryError, UsageError):  # pruned meanwhile, or unreadable
                return None
            if ex.status in FINISHED:
                answer = _sync_answer(ex)
                answer.headers["Idempotent-Replayed"] = "true"
                return answer
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(pause, left))
            pause = min(2 * pause, REPLAY_LONGEST_PAUSE)

    def _refused(self, env: str, reason: str) -> None:
        metrics = self.daemon.metrics
        metrics.child(metrics.webhooks_refused, env, reason).inc()

    async def hook(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request to `/hooks/{env}/{path}`: an execution of the workflow whose active
        webhook trigger that is, or why not. Served from the ASGI scope itself: a
        framework's request and response objects cost more than the rest of accepting
        (see docs/benchmarks.md)."""
        began = time.perf_counter()
        env, _, path = scope["path"][len(HOOKS) :].partition("/")
        try:
            answer = await self._hook(scope, receive, env, path.strip("/"), began)
        except Refused as exc:
            answer = exc.response()
        if isinstance(answer, Response):
            await answer(scope, receive, send)
            return
        status, body = answer
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _hook(
        self, scope: Scope, receive: Receive, env: str, path: str, began: float
    ) -> tuple[int, bytes] | Response:
        daemon = self.daemon
        method = scope["method"]
        served = self.serving(env)
        route = (method, path)
        trigger = served.routes.get(route)
        params = _NO_PARAMS
        if trigger is None:
            parts = _segments(scope, path) if served.patterns else ()
            found = webpaths.match(served.patterns.get(method, ()), parts)
            if found is None:
                allowed = _methods(served, path, parts)
                if allowed:  # the path is served, with other methods: HTTP says 405, and which
                    listed = ", ".join(allowed)
                    self._refused(env, "method")
                    return error(
                        405, f"/{path} in {env} accepts {listed}, not {method}", Allow=listed
                    )
                return error(404, f"no active webhook {method} /{path} in {env}")
            pattern, params = found
            trigger, route = pattern.target, (method, pattern.route)
        name = served.hooks[route]
        # Header names as the server gives them: lower case, as HTTP/2 has them.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        limit, declared = daemon.settings.max_body, headers.get("content-length")
        auth = trigger.auth
        if auth is not None:  # before the body: a caller without the secret sends none
            given = headers.get(auth.header.lower())
            if not authorized(_secret(served, name, auth), given, auth.header_scheme):
                self._refused(env, "auth")
                return _unauthorized(env, auth)
        try:
            uncompressed(headers.get("content-encoding"))
            raw = await _body(receive, limit, declared)
            if trigger.signature is not None:
                given = headers.get(trigger.signature.header.lower())
                secret = _secret(served, name, trigger.signature)
                if not signed(secret, raw, given, trigger.signature.encoding):
                    self._refused(env, "signature")
                    return error(401, f"missing or wrong {trigger.signature.header} signature")
            body = parse(headers.get("content-type", ""), raw)
        except Refused as exc:
            self._refused(env, _REFUSAL_REASONS.get(exc.status, "body"))
            raise
        query = scope["query_string"]
        event = TriggerEvent(
            "webhook",
            body=body,
            headers=headers,
            query=fields(query.decode("latin-1")) if query else {},
            details={"path": path, "method": method},
            params=params,
        )
        key = headers.get("idempotency-key") or headers.get("x-github-delivery")
        sync = trigger.respond_timeout if trigger.respond == "sync" else None
        answer = await self.accept(served, env, name, event, key, sync)
        metrics = daemon.metrics
        metrics.child(metrics.webhook_seconds, env).observe(time.perf_counter() - began)
        return answer
