"""Recording from the event loop: one thread writes for many executions at once and
commits whatever has queued up together (a group commit), so each execution is durable
without a disk flush of its own."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

from loomgit.history import History, Retention
from loomgit.records import Execution

# What the writer hands back after each commit: (token, result) for every write in it.
Deliver = Callable[[list[tuple[Any, Any]]], None]


class Writer:
    """One thread that writes for many executions, committing whatever has queued up
    together (a group commit). After each commit, `deliver` gets every write's token and
    result (see `History.apply`) in one call: one wake-up of the event loop per commit,
    not one per write."""

    def __init__(
        self,
        history: History,
        deliver: Deliver,
        max_batch: int = 512,
        retention: Retention | None = None,
    ) -> None:
        self.history = history
        self._deliver = deliver
        self._max_batch = max_batch
        self._retention = retention  # old executions pruned between commits
        self._queue: queue.SimpleQueue[tuple[str, Any, Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="loomgit-history", daemon=True)
        self._thread.start()

    def submit(self, op: str, item: Any, token: Any = None) -> None:
        self._queue.put((op, item, token))

    def close(self) -> None:
        """Writes everything submitted so far, then stops the thread."""
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            if self._retention is not None:
                try:
                    item = self._queue.get(timeout=self._retention.wait())
                except queue.Empty:
                    self._retention.step()
                    continue
            else:
                item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            results = self.history.apply([(op, payload) for op, payload, _ in batch])
            done = [(token, result) for (_, _, token), result in zip(batch, results, strict=True)]
            self._deliver([pair for pair in done if pair[0] is not None])
            if self._retention is not None and not stopping:
                self._retention.step()


class AsyncRecorder:
    """The engine's recorder: writes through a `Writer`, awaited from the event loop."""

    def __init__(self, history: History, retention: Retention | None = None) -> None:
        self.history = history
        self.writer = Writer(history, _deliver, retention=retention)

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def start(self, ex: Execution) -> Execution:
        fut = self._future()
        self.writer.submit("start", ex, fut)
        result: Execution = await fut
        return result

    async def finish(self, ex: Execution) -> None:
        fut = self._future()
        self.writer.submit("finish", ex, fut)
        await fut

    async def interrupt(self, ex: Execution) -> None:
        """Records `ex` (interrupted) as ended, unless it has ended already."""
        fut = self._future()
        self.writer.submit("interrupt", ex, fut)
        await fut

    def running(self, idents: list[str]) -> None:
        """Marks queued executions running; nothing waits for it."""
        self.writer.submit("running", idents)

    def close(self) -> None:
        self.writer.close()


def _deliver(done: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """Hands the results to the loop(s) their futures belong to, once per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
    for pair in done:
        by_loop.setdefault(pair[0].get_loop(), []).append(pair)
    for loop, pairs in by_loop.items():
        if not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, pairs)


def _resolve(done: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, result in done:
        if fut.done():
            continue  # its waiter was cancelled
        if isinstance(result, Exception):
            fut.set_exception(result)
        else:
            fut.set_result(result)
