"""Outbound HTTP for the `http` step (aiohttp): one connection pool per engine, bounded
response sizes, and every failure as one plain sentence."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import aiohttp

from loomgit import jsontext

MAX_RESPONSE_BYTES = 10 * 1024 * 1024
USER_AGENT = "loomgit"


class HttpError(Exception):
    """The request failed or was answered with an unexpected status."""


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any = None
    form: dict[str, str] | None = None
    body: str | None = None
    timeout: float = 30.0


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def query_params(query: dict[str, Any]) -> dict[str, str]:
    return {k: _query_value(v) for k, v in query.items()}


class Client:
    """A pool of connections, opened on first use inside the running event loop."""

    def __init__(self, max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.max_response_bytes = max_response_bytes
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT},
                connector=aiohttp.TCPConnector(limit=100),
                trust_env=False,
                json_serialize=jsontext.dumps,  # a number that is not finite as null
            )
        return self._session

    async def _body(self, req: Request, resp: aiohttp.ClientResponse) -> bytes:
        """The body, read until its end or until it passes the size limit."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(256 * 1024):
            size += len(chunk)
            if size > self.max_response_bytes:
                raise HttpError(
                    f"{req.method} {req.url}: the response is larger than "
                    f"{self.max_response_bytes:,} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def send(self, req: Request) -> dict[str, Any]:
        """The response as {status, headers, json | text}; raises HttpError."""
        if not req.url.startswith(("http://", "https://")):
            raise HttpError(f"the url must start with http:// or https://, not {req.url[:40]!r}")
        kwargs: dict[str, Any] = {}
        if req.json is not None:
            kwargs["json"] = req.json
        elif req.form is not None:
            kwargs["data"] = req.form
        elif req.body is not None:
            kwargs["data"] = req.body.encode()
        try:
            async with self._pool().request(
                req.method,
                req.url,
                headers=req.headers,
                params=req.query or None,
                timeout=aiohttp.ClientTimeout(total=req.timeout),
                allow_redirects=True,
                **kwargs,
            ) as resp:
                raw = await self._body(req, resp)
                out: dict[str, Any] = {"status": resp.status, "headers": _headers(resp)}
                text = _decode(raw, resp.charset)
                if "json" in resp.content_type and raw:
                    try:  # what is not standard JSON, or nests too deep, is kept as text
                        out["json"] = jsontext.loads(text)
                    except ValueError:
                        out["text"] = text
                else:
                    out["text"] = text
                return out
        except TimeoutError:
            raise HttpError(
                f"{req.method} {req.url}: no response within {req.timeout:g}s"
            ) from None
        except aiohttp.InvalidURL:
            raise HttpError(f"{req.method} {req.url}: not a valid URL") from None
        except aiohttp.ClientError as exc:
            raise HttpError(f"{req.method} {req.url}: {failure(exc)}") from None
        except (ValueError, TypeError) as exc:  # e.g. a body that does not serialise as JSON
            raise HttpError(f"{req.method} {req.url}: {exc}") from None


def failure(exc: aiohttp.ClientError) -> str:
    """Why a request failed, in one line of plain words rather than aiohttp's own text
    (which shows a redirect loop as "0, message='', url=…", and a reply that is not
    HTTP as a status 400 the server never sent)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return unreachable(exc)
    if isinstance(exc, aiohttp.TooManyRedirects):
        return f"too many redirects ({len(exc.history)}; a redirect loop?)"
    if isinstance(exc, aiohttp.NonHttpUrlRedirectClientError):
        return f"redirected to {exc}, which is not an http:// or https:// URL"
    if isinstance(exc, aiohttp.InvalidUrlRedirectClientError):
        return f"redirected to {exc}, which is not a valid URL"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without a complete answer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        cause = getattr(exc.__cause__, "message", None) or str(exc)
        return f"the response ended before its body did: {one_line(str(cause))}"
    if isinstance(exc, aiohttp.ClientResponseError):  # the reply could not be parsed
        return f"the reply is not valid HTTP: {one_line(exc.message).rstrip(':')}"
    return one_line(str(exc)) or type(exc).__name__


def one_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def unreachable(exc: aiohttp.ClientConnectorError) -> str:
    """Why no connection was made, in plain words: aiohttp's own text ("Cannot connect
    to host h:80 ssl:default [Connect call failed ('10.0.0.1', 80)]") says it twice."""
    host = f"[{exc.host}]" if ":" in exc.host else exc.host
    where = f"{host}:{exc.port}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        why = getattr(cert, "verify_message", None) or str(cert)
        return f"the TLS certificate of {where} is not trusted: {why}"
    err = exc.os_error
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {host}: {err.strerror or err}"
    # asyncio words a refusal "Connect call failed (address)": the errno says it better.
    why = os.strerror(err.errno) if err.errno and err.errno > 0 else err.strerror or str(err)
    return f"cannot connect to {where}: {why or type(err).__name__}"


def _headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    """The response's headers with lower-case names, as a trigger's are (and as HTTP/2,
    fetch and n8n give them); a header sent more than once has its values joined with
    ", ", as HTTP allows."""
    out: dict[str, str] = {}
    for name, value in resp.headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _decode(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name in Content-Type
        return raw.decode("utf-8", errors="replace")


def describe(out: dict[str, Any], limit: int = 200) -> str:
    """A short view of a response body, for error messages."""
    if "json" in out:
        text = jsontext.dumps(out["json"], ensure_ascii=False)
    else:
        text = str(out.get("text", ""))
    return text if len(text) <= limit else text[:limit] + "…"
