"""A limit on the size of a request's head (its request line and headers).

uvicorn's httptools protocol reads a head however long it is: a client sending a header
150 MiB long grew the daemon by that much, and a head under the limit on bodies (1 MiB)
but megabytes long was accepted and recorded with the execution. Node stops at 16 KiB,
nginx at 32 KiB, h11 (uvicorn's other protocol) at 16 KiB. Here a head longer than
MAX_HEAD_BYTES is answered `431` and the connection closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loomgit import jsontext

MAX_HEAD_BYTES = 64 * 1024
# After the answer, what the client still sends is read and dropped for this long before
# the connection is closed: closed with unread bytes, the client would see a reset
# instead of the answer.
DRAIN_SECONDS = 2.0

REFUSAL = jsontext.dumps(
    {"error": f"the request's line and headers are longer than {MAX_HEAD_BYTES:,} bytes"}
).encode()
_ANSWER = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n\r\n" % len(REFUSAL)
) + REFUSAL


def protocol() -> Any:
    """What to give `uvicorn.Config(http=…)`: httptools' protocol with the limit, or
    "auto" where httptools is missing (h11 limits heads itself)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - no httptools (PyPy)
        return "auto"

    class LimitedHead(HttpToolsProtocol):
        """Counts what arrives while a head is being read. The chunk in which a request
        begins is not counted (it may end the request before it), so a head is refused
        past MAX_HEAD_BYTES plus at most one read (256 KiB)."""

        _in_head = False
        _head_bytes = 0
        _refused = False

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head, self._head_bytes = True, 0

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # drained until the connection closes
            counting = self._in_head
            super().data_received(data)
            if counting and self._in_head:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse()

        def _refuse(self) -> None:
            self._refused = True
            transport = self.transport
            if transport.is_closing():
                return
            transport.write(_ANSWER)
            if transport.can_write_eof():
                transport.write_eof()
            asyncio.get_running_loop().call_later(DRAIN_SECONDS, transport.close)

    return LimitedHead
