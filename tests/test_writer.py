"""The history's writer (`loomgit.writer.write`), as the daemon talks to it: over a real
socket pair, into a real SQLite file."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loomgit.history import History, finish_rows
from loomgit.records import Execution, new_id
from loomgit.writer import CHUNK, Inbox, execution_row, frame, write


def queued() -> Execution:
    now = time.time()
    return Execution(
        id=new_id(now),
        environment="staging",
        workflow="order-sync",
        trigger_type="webhook",
        status="queued",
        started_at=now,
    )


def finished(ex: Execution) -> tuple[Any, None]:
    """A runner's report of `ex` having succeeded, as it reaches the writer."""
    return finish_rows(replace(ex, status="succeeded", ended_at=time.time())), None


class Daemon:
    """The daemon's end of the socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(30)
        self._inbox = Inbox(sock)  # the writer's own reading of frames, from this side

    def send(self, *messages: Any) -> None:
        self.sock.sendall(b"".join(frame(m) for m in messages))

    def replies(self) -> Iterator[tuple[str, list[Any]]]:
        while True:
            batch = self._inbox.take(wait=True)
            assert batch is not None, "the writer closed its end"
            yield from batch

    def record(self, executions: list[Execution]) -> None:
        self.send(*[("start", execution_row(ex)) for ex in executions])
        waiting = {ex.id for ex in executions}
        for kind, items in self.replies():
            assert kind == "recorded"
            waiting -= {ident for ident, stored, error in items if stored == ident and not error}
            if not waiting:
                return


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[tuple[Daemon, History, threading.Thread]]:
    ours, theirs = socket.socketpair()
    with History(tmp_path / "history.db") as history:
        thread = threading.Thread(target=write, args=(theirs, history), daemon=True)
        thread.start()
        yield Daemon(ours), history, thread
        ours.close()
        thread.join(30)
    theirs.close()


def test_an_accepted_execution_is_not_held_back_by_finished_ones(
    writer: tuple[Daemon, History, threading.Thread],
) -> None:
    daemon, history, _ = writer
    earlier = [queued() for _ in range(CHUNK * 40)]
    daemon.record(earlier)
    # The runners report them all finished at once; a webhook arrives meanwhile.
    daemon.send(("rows", [finished(ex) for ex in earlier]))
    replies = daemon.replies()
    kind, items = next(replies)  # the writer has begun on the finished ones
    assert kind == "ended" and len(items) == CHUNK
    late = queued()
    daemon.send(("start", execution_row(late)))
    ended = len(items)
    for kind, items in replies:
        if kind == "recorded":
            assert items == [(late.id, late.id, None)]
            break
        assert len(items) <= CHUNK
        ended += len(items)
    # Recorded with most of the finished ones still to commit, not after all of them.
    assert ended < len(earlier) // 2, ended
    for _, items in replies:
        ended += len(items)
        if ended == len(earlier):
            break
    assert history.get(earlier[-1].id).status == "succeeded"
    assert history.get(late.id).status == "queued"


@pytest.mark.parametrize("how", ["told to stop", "the daemon is gone"])
def test_what_was_sent_before_it_stops_is_committed(
    writer: tuple[Daemon, History, threading.Thread], how: str
) -> None:
    daemon, history, thread = writer
    earlier = [queued() for _ in range(CHUNK * 3 + 5)]
    daemon.record(earlier)
    daemon.send(("rows", [finished(ex) for ex in earlier]))
    if how == "told to stop":
        daemon.send(("stop", None))
    else:
        daemon.sock.close()  # killed, say
    thread.join(30)
    assert not thread.is_alive()
    assert {history.get(ex.id).status for ex in earlier} == {"succeeded"}


def test_what_a_full_database_refuses_is_refused_or_tried_again(
    writer: tuple[Daemon, History, threading.Thread], caplog: pytest.LogCaptureFixture
) -> None:
    """An accepted execution that cannot be recorded is refused to its caller; a finished
    one is kept and committed once there is room, not dropped."""
    daemon, history, _ = writer
    ex = queued()
    daemon.record([ex])
    big = "x" * 200_000  # stored as a 64 KiB preview: new pages, which there is no room for
    with history._lock:  # SQLite's own size limit answers as a full disk does
        pages = history._db.execute("PRAGMA page_count").fetchone()[0]
        history._db.execute(f"PRAGMA max_page_count = {pages}")
    done = replace(ex, status="succeeded", ended_at=time.time(), output=big)
    daemon.send(("rows", [(finish_rows(done), None)]))
    late = replace(queued(), trigger={"body": big})
    daemon.send(("start", execution_row(late)))
    replies = daemon.replies()
    kind, items = next(replies)
    assert kind == "recorded"
    [(ident, stored, error)] = items
    assert (ident, stored) == (late.id, None) and "full" in str(error)
    assert history.get(ex.id).status == "queued"  # its finish waits
    with history._lock:
        history._db.execute("PRAGMA max_page_count = 1073741823")
    assert next(replies) == ("ended", [(ex.id, "succeeded", None)])
    assert history.get(ex.id).status == "succeeded"
    assert "history write failed" in caplog.text
