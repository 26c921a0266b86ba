"""The daemon's side of its child processes (`loomgit.dispatch`): how what they send is
read, and when an accepted execution goes to the writer. Over real socket pairs."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
import weakref
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_writer import queued

from loomgit import yamlio
from loomgit.dispatch import (
    INTERRUPTED,
    RUNNING_AFTER,
    RunnerPool,
    _Channel,
    _Frames,
    _Reporter,
    _Runner,
    _Writer,
)
from loomgit.history import History
from loomgit.models.workflow import Workflow
from loomgit.runtime import Deployment, TriggerEvent
from loomgit.writer import Inbox, bodies, frame

MESSAGES = [
    ("recorded", [("a", "a", None), ("b", "a", None)]),
    ("ended", [("c", "succeeded", None)]),
    ("ended", [("d", "failed", "x" * 70_000)]),  # larger than one read
]


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


class Body(list[Any]):
    """A webhook's parsed body that can be watched with a weak reference."""


WORKFLOW = """
apiVersion: loomgit/v1
kind: Workflow
metadata: {name: order-sync}
spec:
  triggers: [{type: webhook, path: orders}]
  steps: [{id: done, type: set, with: {ok: true}}]
"""


def test_the_daemon_keeps_no_trigger_of_an_execution_a_runner_holds(tmp_path: Path) -> None:
    """Only what an interrupted record needs stays in the daemon while a runner holds an
    execution: the body and headers go with the run, not into the young objects the
    collector walks (daemon.YOUNG_COLLECTION_EVERY). Interrupted, it is still recorded
    whole."""
    wf = Workflow.model_validate(yamlio.load(WORKFLOW.encode()))
    dep = Deployment(wf, "production", version=3, digest="d" * 12)
    to_runner, runner_end = socket.socketpair()
    to_writer, writer_end = socket.socketpair()
    for sock in (runner_end, writer_end):
        sock.setblocking(False)

    async def main() -> tuple[bool, list[Any], list[tuple[str, ...]]]:
        loop = asyncio.get_running_loop()
        ended: list[tuple[str, ...]] = []
        with History(tmp_path / "history.db") as history:
            pool = RunnerPool(1, history, on_end=lambda *told: ended.append(told))
            runner_t, runner_frames = await loop.create_connection(
                lambda: _Frames(pool._from_runner), sock=to_runner
            )
            writer_t, _ = await loop.create_connection(
                lambda: _Frames(pool._from_writer), sock=to_writer
            )
            pool.writer = _Writer(proc=None, channel=_Channel(writer_t))  # type: ignore[arg-type]
            runner = _Runner(0, None, _Channel(runner_t), runner_frames)  # type: ignore[arg-type]
            pool.runners.append(runner)
            body = Body([{"order": n} for n in range(50)])
            watch = weakref.ref(body)
            trigger = TriggerEvent("webhook", body=body, headers={"X-Shop": "eu"})
            ex = replace(
                queued(),
                environment="production",
                version=3,
                digest="d" * 12,
                trigger=trigger.record(),
            )
            fut = pool.submit(dep, trigger, ex, want_record=False)
            fut_id = ex.id
            await asyncio.sleep(0)  # the run is sent
            del body, trigger, ex
            gc.collect()
            kept_the_body = watch() is not None
            pool._interrupt(list(runner.held), INTERRUPTED)
            await asyncio.sleep(0)
            interrupted = Inbox(writer_end).take(wait=False) or []
            # The writer answers that it recorded the end: the daemon is told.
            writer_end.send(frame(("ended", [(fut_id, "interrupted", None)])))
            for _ in range(100):
                if fut.done():
                    break
                await asyncio.sleep(0.01)
            runner_t.close()
            writer_t.close()
            return kept_the_body, interrupted, ended

    try:
        kept_the_body, interrupted, ended = asyncio.run(main())
    finally:
        for sock in (runner_end, writer_end):
            sock.close()
    assert not kept_the_body
    assert len(interrupted) == 1 and interrupted[0][0] == "interrupt"
    (final,) = interrupted[0][1]
    assert (final.environment, final.workflow, final.version, final.status) == (
        "production",
        "order-sync",
        3,
        "interrupted",
    )
    assert final.error == INTERRUPTED and final.ended_at is not None
    assert ended == [("production", "order-sync", "interrupted")]


def test_a_runner_records_running_only_what_runs_longer_than_a_moment() -> None:
    """An execution that ends within RUNNING_AFTER reaches the writer once, ended; one
    still running then is recorded as running first (the history shows it running)."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    inbox = Inbox(theirs)
    quick, slow = queued(), queued()

    async def main() -> tuple[list[Any], list[Any]]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        reporter = _Reporter(_Channel(transport), 1 << 16)
        try:
            reporter.started(quick.id)
            reporter.started(slow.id)
            await reporter.finish(replace(quick, status="succeeded", ended_at=time.time()))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            at_first = inbox.take(wait=False) or []
            await asyncio.sleep(RUNNING_AFTER + 0.05)
            later = inbox.take(wait=False) or []
        finally:
            transport.close()
        return at_first, later

    try:
        at_first, later = asyncio.run(main())
    finally:
        theirs.close()
    assert [(kind, [rows[0][-1] for rows, _ in items]) for kind, items in at_first] == [
        ("rows", [quick.id])
    ]
    assert later == [("running", [slow.id])]
