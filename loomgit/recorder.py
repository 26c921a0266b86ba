"""Recording from the event loop: one thread writes for many executions at once and
commits whatever has queued up together (a group commit), so each execution is durable
without a disk flush of its own."""

from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future

from loomgit.history import History
from loomgit.records import Execution


class Writer:
    """One thread that writes for many executions, committing whatever has queued up
    together (a group commit). `submit` returns a future of the stored execution."""

    def __init__(self, history: History, max_batch: int = 512) -> None:
        self.history = history
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[str, Execution, Future[Execution]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._loop, name="loomgit-history", daemon=True)
        self._thread.start()

    def submit(self, op: str, ex: Execution) -> Future[Execution]:
        fut: Future[Execution] = Future()
        self._queue.put((op, ex, fut))
        return fut

    def close(self) -> None:
        """Writes everything submitted so far, then stops the thread."""
        self._queue.put(None)
        self._thread.join()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
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
            results = self.history.apply([(op, ex) for op, ex, _ in batch])
            for (_, _, fut), result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)


class AsyncRecorder:
    """The engine's recorder: writes through a `Writer`, awaited from the event loop."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.writer = Writer(history)

    async def start(self, ex: Execution) -> Execution:
        return await asyncio.wrap_future(self.writer.submit("start", ex))

    async def finish(self, ex: Execution) -> None:
        await asyncio.wrap_future(self.writer.submit("finish", ex))

    def close(self) -> None:
        self.writer.close()
