"""How long a request may take to arrive (loomgit.httphead), on a real uvicorn server on
127.0.0.1 with the daemon's protocol and short limits. Its size limit is tested on the
daemon itself (tests/test_serve.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from loomgit import httphead

LIMIT = 0.5  # seconds, for the head and for the body


async def echo_length(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body and answers its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps({"read": size}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def refusals() -> list[str]:
    """The reasons of the refusals the server below made, in order."""
    return []


@pytest.fixture
def address(refusals: list[str]) -> Iterator[tuple[str, int]]:
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(
        echo_length,
        http=httphead.protocol(head_seconds=LIMIT, body_seconds=LIMIT, refused=refusals.append),
        lifespan="off",
        log_config=None,
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=asyncio.run, args=(server.serve(sockets=[sock]),))
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _until_closed(conn: socket.socket) -> tuple[bytes, float]:
    """All that arrives until the server closes, and how long that took."""
    began, data = time.monotonic(), b""
    conn.settimeout(10)
    while chunk := conn.recv(65536):
        data += chunk
    return data, time.monotonic() - began


def _answer(conn: socket.socket) -> bytes:
    """One whole answer on a kept connection: its head and body may come in two reads."""
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        chunk = conn.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


HEAD = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"


def test_a_connection_that_sends_nothing_is_closed(
    address: tuple[str, int], refusals: list[str]
) -> None:
    with socket.create_connection(address) as conn:
        data, waited = _until_closed(conn)
    assert data == b"" and LIMIT <= waited < LIMIT + 2
    assert refusals == ["idle"]


@pytest.mark.parametrize(
    "sent",
    [HEAD, HEAD + b'Content-Length: 10\r\n\r\n{"a"'],
    ids=["head unfinished", "body unfinished"],
)
def test_a_request_that_stops_half_way_is_answered_408(
    address: tuple[str, int], refusals: list[str], sent: bytes
) -> None:
    with socket.create_connection(address) as conn:
        conn.sendall(sent)
        data, waited = _until_closed(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and json.loads(body) == {"error": httphead.TOO_SLOW}
    assert waited < LIMIT + 2
    assert refusals == ["too_slow"]


def test_requests_in_time_are_served_and_kept_connections_may_idle(
    address: tuple[str, int],
) -> None:
    """A head that comes in pieces within the limit is served; a kept connection idle
    between requests for longer than the limit is left to the keep-alive timeout."""
    request = HEAD + b'Content-Length: 8\r\n\r\n{"a": 1}'
    with socket.create_connection(address) as conn:
        conn.settimeout(10)
        for piece in (request[:10], request[10:30], request[30:]):
            conn.sendall(piece)
            time.sleep(LIMIT / 5)
        assert _answer(conn).endswith(b'{"read": 8}')
        time.sleep(LIMIT * 3)
        conn.sendall(request)
        assert _answer(conn).endswith(b'{"read": 8}')
