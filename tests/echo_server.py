"""A real HTTP server on 127.0.0.1 for the `http` step: echoes requests, answers with a
chosen status, fails a set number of times, answers slowly, sends a large body, redirects,
or answers wrongly."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


class Handler(BaseHTTPRequestHandler):
    server: EchoServer

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def _send(self, status: int, payload: object, content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("X-Seen", "once")
        self.send_header("X-Seen", "twice")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.server.hits[url.path] += 1
        if parts[0] == "status":
            self._send(int(parts[1]), {"status": int(parts[1])})
        elif parts[0] == "flaky":  # /flaky/<key>/<failures>
            if self.server.hits[url.path] <= int(parts[2]):
                self._send(503, {"error": "try again"})
            else:
                self._send(200, {"ok": True, "after": self.server.hits[url.path]})
        elif parts[0] == "slow":  # /slow/<seconds>
            time.sleep(float(parts[1]))
            self._send(200, {"slow": True})
        elif parts[0] == "big":  # /big/<bytes>
            self._send(200, b"x" * int(parts[1]), "text/plain")
        elif parts[0] == "redirect":  # /redirect/<Location>: a 302 there
            self.send_response(302)
            where = url.path.split("/", 2)[2]
            self.send_header("Location", where + (f"?{url.query}" if url.query else ""))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts[0] == "broken":  # /broken/<how>: an answer cut short, none, or not HTTP
            if parts[1] == "short":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
            elif parts[1] == "garbage":
                self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True
        elif parts[0] == "raw-json":  # /raw-json/<levels>: nested that deep; 0: NaN
            levels = int(parts[1])
            self._send(200, b"[" * levels + b"]" * levels if levels else b'{"a": NaN}')
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            self._send(
                200,
                {
                    "method": self.command,
                    "path": url.path,
                    "query": dict(parse_qsl(url.query)),
                    "headers": dict(self.headers),
                    "body": body,
                },
            )

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: Counter[str] = Counter()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up on a slow answer is part of the tests

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"


def serve(tls: ssl.SSLContext | None = None) -> Iterator[EchoServer]:
    """The server, running; with `tls`, over TLS."""
    server = EchoServer()
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
