"""Limits on how a request arrives: the size of its head (request line and headers), and
how long its head and its body may take.

uvicorn's httptools protocol reads a head however long it is, and waits for a head or a
body however slowly it comes: a client sending a header 150 MiB long grew the daemon from
137 to 363 MiB (and was answered 202), and a connection that sends nothing, or a byte now
and then, is held open for ever. A few thousand of those use up the daemon's file
descriptors, which it also needs for git, sops and its history. Node stops a head at 16
KiB and after 60 s, nginx at 32 KiB and after 60 s.

Here a head longer than MAX_HEAD_BYTES is answered `431`, a head that has not arrived
HEAD_SECONDS after the connection opened (or after the request's first byte, on a kept
connection) or a body BODY_SECONDS after its head is answered `408`, and a new connection
that sends nothing in HEAD_SECONDS is closed. The times are checked by one sweep a second
over the open connections: a request costs a few attribute writes, not timers.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Callable
from typing import Any

from loomgit import jsontext

MAX_HEAD_BYTES = 64 * 1024
HEAD_SECONDS = 30.0
BODY_SECONDS = 60.0
# After a refusal, what the client still sends is read and dropped for this long before
# the connection is closed: closed with unread bytes, the client would see a reset
# instead of the answer.
DRAIN_SECONDS = 2.0


def _answer(status: bytes, message: str) -> bytes:
    body = jsontext.dumps({"error": message}).encode()
    head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        status,
        len(body),
    )
    return head + b"connection: close\r\n\r\n" + body


TOO_LARGE = f"the request's line and headers are longer than {MAX_HEAD_BYTES:,} bytes"
_TOO_LARGE = _answer(b"431 Request Header Fields Too Large", TOO_LARGE)
TOO_SLOW = "the request did not arrive in time"
_TOO_SLOW = _answer(b"408 Request Timeout", TOO_SLOW)


def protocol(
    head_seconds: float = HEAD_SECONDS,
    body_seconds: float = BODY_SECONDS,
    refused: Callable[[str], None] = lambda reason: None,
) -> Any:
    """What to give `uvicorn.Config(http=…)`: httptools' protocol with these limits, or
    "auto" where httptools is missing (h11 limits the size of heads itself). Each refusal
    is told to `refused`, by reason: `head_too_large` (431), `too_slow` (408) or `idle`
    (a connection closed that sent nothing)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - no httptools (PyPy)
        return "auto"

    sweep_every = min(1.0, head_seconds / 4, body_seconds / 4)
    sweeping: weakref.WeakSet[Any] = weakref.WeakSet()  # the servers swept (their states)

    def sweep(connections: set[Any], loop: asyncio.AbstractEventLoop) -> None:
        loop.call_later(sweep_every, sweep, connections, loop)  # first: whatever follows
        now = loop.time()
        for conn in [c for c in connections if c.deadline < now]:
            conn.expire()

    class LimitedHead(HttpToolsProtocol):
        """Counts what arrives while a head is being read. The chunk in which a request
        begins is not counted (it may end the request before it), so a head is refused
        past MAX_HEAD_BYTES plus at most one read (256 KiB). `deadline` is when what is
        being read must have arrived (the loop's clock); `sweep` enforces it."""

        deadline = math.inf
        _in_head = False
        _head_bytes = 0
        _refused = False
        _begun = False  # whether a request has begun on this connection

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.deadline = self.loop.time() + head_seconds
            if self.server_state not in sweeping:
                sweeping.add(self.server_state)
                self.loop.call_later(sweep_every, sweep, self.connections, self.loop)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes, self._begun = True, 0, True
            self.deadline = self.loop.time() + head_seconds

        def on_headers_complete(self) -> None:
            self._in_head = False
            self.deadline = self.loop.time() + body_seconds
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self.deadline = math.inf
            super().on_message_complete()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # drained until the connection closes
            counting = self._in_head
            super().data_received(data)
            if counting and self._in_head:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    refused("head_too_large")  # counted before the client can see it
                    self._refuse(_TOO_LARGE)

        def expire(self) -> None:
            """Its head or body did not arrive in time: 408, or closed at once when no
            request began or the answer has begun."""
            self.deadline = math.inf
            answering = self.cycle is not None and self.cycle.response_started
            if not self._begun or answering:
                refused("idle" if not self._begun else "too_slow")
                self._refused = True
                self.transport.close()
            else:
                refused("too_slow")
                self._refuse(_TOO_SLOW)

        def _refuse(self, answer: bytes) -> None:
            self._refused = True
            self.deadline = math.inf
            transport = self.transport
            if transport.is_closing():
                return
            transport.write(answer)
            if transport.can_write_eof():
                transport.write_eof()
            self.loop.call_later(DRAIN_SECONDS, transport.close)

    return LimitedHead
