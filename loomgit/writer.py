"""The execution history's writer process, started by the daemon's `RunnerPool` (see
`loomgit.dispatch`): it commits what the daemon and the runners send, in batches (a group
commit), and tells the daemon what it recorded and what ended.

This module imports only the history and its records, so the writer process stays small
(measured: 14 MiB before it opens the database, against 47 MiB for `loomgit.dispatch`).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import select
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loomgit import log
from loomgit.history import History, Retention
from loomgit.records import Execution

HEADER = struct.Struct("!IB")  # size, and whom the message is for
FOR_RECEIVER, FOR_WRITER = 0, 1


def frame(message: Any, tag: int = FOR_RECEIVER) -> bytes:
    """A message as sent between the processes: its size, whom it is for, the pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data), tag) + data


def frame_ends(buffer: bytes | bytearray) -> list[int]:
    """Where each whole frame at the start of `buffer` ends (a partial one last is left
    for more to arrive)."""
    ends: list[int] = []
    at, length = 0, len(buffer)
    while length - at >= HEADER.size:
        size, _ = HEADER.unpack_from(buffer, at)
        if length - at - HEADER.size < size:
            break
        at += HEADER.size + size
        ends.append(at)
    return ends


def bodies(buffer: bytes | bytearray, ends: list[int]) -> Iterator[Any]:
    """The messages of the whole frames that end at `ends`, unpickled."""
    view, at = memoryview(buffer), 0
    with view:
        for end in ends:
            yield pickle.loads(view[at + HEADER.size : end])
            at = end


def execution_row(ex: Execution) -> tuple[Any, ...]:
    """An accepted execution as sent to the writer: plain values pickle faster."""
    return (
        ex.id,
        ex.environment,
        ex.workflow,
        ex.trigger_type,
        ex.status,
        ex.started_at,
        ex.version,
        ex.digest,
        ex.trigger,
        ex.dedupe_key,
        ex.owner,
    )


def from_row(row: tuple[Any, ...]) -> Execution:
    ident, env, workflow, trigger_type, status, started_at, version, digest = row[:8]
    trigger, dedupe_key, owner = row[8:]
    return Execution(
        id=ident,
        environment=env,
        workflow=workflow,
        trigger_type=trigger_type,
        status=status,
        started_at=started_at,
        version=version,
        digest=digest,
        trigger=trigger,
        dedupe_key=dedupe_key,
        owner=owner,
    )


# Finished executions committed together at most, before the writer looks again for
# accepted ones: each accepted webhook waits for its commit before its `202`. A runner
# sends up to MAX_RUNNING finished executions at once; measured at 5,000 requests/s, 252
# of them took 5 to 10 ms to commit, and the requests that arrived meanwhile waited that long.
CHUNK = 32
RETRY_FIRST, RETRY_MOST = 0.1, 5.0  # seconds between attempts at what failed to commit


class Inbox:
    """The messages from the daemon, as they arrive."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def take(self, wait: bool, timeout: float | None = None) -> list[Any] | None:
        """Every whole message that has arrived; with `wait`, blocks until there is one
        or `timeout` seconds have passed. None once the daemon has closed its end."""
        while True:
            if wait and timeout is not None and not select.select([self.sock], [], [], timeout)[0]:
                return []
            try:
                chunk = self.sock.recv(1 << 20, 0 if wait else socket.MSG_DONTWAIT)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                return None
            if chunk:
                self._buffer += chunk
            ends = frame_ends(self._buffer)
            batch = list(bodies(self._buffer, ends))
            if ends:
                del self._buffer[: ends[-1]]
            if batch or not wait:
                return batch


def _record(history: History, starts: list[Execution]) -> bytes:
    """Commits accepted executions; what to tell the daemon."""
    results = history.apply([("start", ex) for ex in starts])
    recorded: list[tuple[str, str | None, str | None]] = []
    for ex, result in zip(starts, results, strict=True):
        if isinstance(result, Exception):
            recorded.append((ex.id, None, str(result)))
        else:
            recorded.append((ex.id, result.id, None))
    return frame(("recorded", recorded))


def _commit(history: History, ops: list[tuple[str, Any]]) -> tuple[bytes, str | None]:
    """Commits runners' progress, finished and interrupted executions; what to tell the
    daemon of those that ended, or why none of them could be committed."""
    results = history.apply([(kind, item[0] if kind == "rows" else item) for kind, item in ops])
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:  # the batch is one transaction: nothing of it was committed
        return b"", str(failed[0])
    ended: list[tuple[str, str, Execution | None]] = []
    for kind, item in ops:
        if kind == "rows":
            rows, record = item
            ended.append((rows[0][-1], rows[0][0], record))
        elif kind == "interrupt":
            ended.append((item.id, item.status, item))
    return (frame(("ended", ended)) if ended else b""), None


def _tell(sock: socket.socket, message: bytes, gone: bool) -> None:
    """Sends the daemon `message`, unless it is gone (then what it sent is still
    committed; the next daemon finds it)."""
    if not gone:
        with contextlib.suppress(ConnectionError):
            sock.sendall(message)


def write(sock: socket.socket, history: History, retention: Retention | None = None) -> None:
    """The writer: commits what arrives in batches, accepted executions first (someone
    waits for each), the rest in order, CHUNK at a time; says what it committed. What
    cannot be committed (a full disk) is tried again, RETRY_FIRST to RETRY_MOST seconds
    apart; an accepted execution that cannot be is refused to its caller instead. Stops
    when told to or when the daemon is gone, once what came before is committed (or
    could not be, RETRY_MOST apart). With `retention`, old executions are pruned between
    those turns."""
    inbox = Inbox(sock)
    later: deque[tuple[str, Any]] = deque()
    stop = gone = False
    backoff, retry_at = 0.0, 0.0
    while True:
        pause = max(retry_at - time.monotonic(), 0.0) if later else None
        if retention is not None and not (stop or gone):
            pause = retention.wait() if pause is None else min(pause, retention.wait())
        batch: list[Any] | None
        if gone:
            time.sleep(pause or 0.0)
            batch = []
        elif later or stop:
            batch = inbox.take(wait=bool(pause), timeout=pause)
        else:
            batch = inbox.take(wait=True, timeout=pause)
        if batch is None:  # the daemon is gone: what came before it went is committed
            gone, batch = True, []
        starts: list[Execution] = []
        for kind, items in batch:
            if kind == "start":
                starts.append(from_row(items))
            elif kind in ("rows", "interrupt"):
                later.extend((kind, item) for item in items)
            elif kind == "running":
                later.append((kind, items))
            else:
                stop = True
        if starts:
            _tell(sock, _record(history, starts), gone)
        if later and time.monotonic() >= retry_at:
            chunk = [later.popleft() for _ in range(min(CHUNK, len(later)))]
            ended, failure = _commit(history, chunk)
            if failure is None:
                backoff = 0.0
                if ended:
                    _tell(sock, ended, gone)
            elif (stop or gone) and backoff >= RETRY_MOST:
                log.event(
                    "history not written",
                    logging.ERROR,
                    error=failure,
                    lost=len(later) + len(chunk),
                )
                return
            else:
                later.extendleft(reversed(chunk))
                backoff = min(max(backoff * 2, RETRY_FIRST), RETRY_MOST)
                retry_at = time.monotonic() + backoff
                log.event(
                    "history write failed",
                    logging.ERROR,
                    error=failure,
                    waiting=len(later),
                    retry_in=backoff,
                )
        if (stop or gone) and not later:
            return
        if retention is not None and not (stop or gone):
            retention.step()


def main(argv: list[str]) -> None:
    """`python -m loomgit.writer FD HISTORY MAX_FIELD_BYTES LOG_FORMAT [OLDER_THAN KEEP]`:
    started by the daemon with one end of a socket pair; OLDER_THAN (seconds) and KEEP
    are its retention, `-` for none. It stops when told to or when the daemon is gone;
    SIGINT, SIGTERM and SIGHUP are the daemon's to act on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal sends it to all
    fd, path, max_field_bytes, log_format, *kept = argv
    older_than, keep = (None if v == "-" else float(v) for v in (kept or ["-", "-"]))
    log.configure(log_format)
    sock = socket.socket(fileno=int(fd))
    with History(Path(path), max_field_bytes=int(max_field_bytes)) as history:
        retention = Retention.wanted(
            history,
            older_than,
            None if keep is None else int(keep),
            lambda env, count: _tell(sock, frame(("pruned", (env, count))), gone=False),
        )
        write(sock, history, retention)


if __name__ == "__main__":
    main(sys.argv[1:])
