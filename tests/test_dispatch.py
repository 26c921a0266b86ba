"""The daemon's side of its child processes (`loomgit.dispatch`): how what they send is
read, and when an accepted execution goes to the writer. Over real socket pairs."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from loomgit.dispatch import RunnerPool, _Channel, _Frames, _Writer
from loomgit.history import History
from loomgit.records import Execution, new_id
from loomgit.writer import Inbox, bodies, frame

MESSAGES = [
    ("recorded", [("a", "a", None), ("b", "a", None)]),
    ("ended", [("c", "succeeded", None)]),
    ("ended", [("d", "failed", "x" * 70_000)]),  # larger than one read
]


def queued() -> Execution:
    now = time.time()
    return Execution(
        id=new_id(now),
        environment="production",
        workflow="order-sync",
        trigger_type="webhook",
        status="queued",
        started_at=now,
    )


@pytest.mark.parametrize("step", [1, 3, 7, 4096, 1 << 20])
def test_what_a_child_sends_is_handed_on_in_whole_frames_however_it_arrives(step: int) -> None:
    stream = b"".join(frame(m) for m in MESSAGES)

    async def feed() -> list[Any]:
        got: list[Any] = []
        frames = _Frames(lambda whole, ends: got.extend(bodies(whole, ends)))
        for at in range(0, len(stream), step):
            frames.data_received(stream[at : at + step])
        return got

    assert asyncio.run(feed()) == MESSAGES


def _first_step(coro: Coroutine[Any, Any, str]) -> None:
    """Runs `coro` up to its first wait, without the event loop turning."""
    coro.send(None)


def test_a_record_goes_to_the_writer_at_once_unless_one_is_on_its_way(tmp_path: Path) -> None:
    """The first accepted execution is written before the event loop turns again (the
    writer is waiting for it); one accepted while that is on its way goes with the others
    of the turn. Each webhook waits for its record."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    inbox = Inbox(theirs)
    first, second = queued(), queued()

    async def main() -> tuple[list[Any], list[Any], list[Any]]:
        loop = asyncio.get_running_loop()
        with History(tmp_path / "history.db") as history:
            pool = RunnerPool(1, history)
            transport, _ = await loop.create_connection(
                lambda: _Frames(pool._from_writer), sock=ours
            )
            pool.writer = _Writer(proc=None, channel=_Channel(transport))  # type: ignore[arg-type]
            one, two = pool.record(first), pool.record(second)
            try:
                _first_step(one)
                at_once = inbox.take(wait=False) or []
                _first_step(two)
                held_back = inbox.take(wait=False) or []
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                after_the_turn = inbox.take(wait=False) or []
            finally:
                one.close()
                two.close()
                transport.close()
            return at_once, held_back, after_the_turn

    try:
        at_once, held_back, after_the_turn = asyncio.run(main())
    finally:
        theirs.close()
    assert [(kind, row[0]) for kind, row in at_once] == [("start", first.id)]
    assert held_back == []
    assert [(kind, row[0]) for kind, row in after_the_turn] == [("start", second.id)]


def test_the_writers_answer_settles_the_waiting_record_as_it_is_read(tmp_path: Path) -> None:
    """No task stands between the writer's answer and the webhook waiting for it."""
    ex = queued()

    async def main() -> bool:
        with History(tmp_path / "history.db") as history:
            pool = RunnerPool(1, history)
            waiting = asyncio.get_running_loop().create_future()
            pool._recording[ex.id] = waiting
            frames = _Frames(pool._from_writer)
            frames.data_received(frame(("recorded", [(ex.id, ex.id, None)])))
            return waiting.done() and waiting.result() == ex.id

    assert asyncio.run(main())
