"""Where the daemon's executions run: in its own event loop (`InProcess`), or in runner
processes (`RunnerPool`, what `loomgit serve` uses), so that running workflows does not
take the CPU that accepting webhooks and firing schedules needs.

With runner processes, one more process writes the execution history: the writer
(`loomgit.writer`, which imports only the history, to stay small). SQLite
takes one writer at a time, and a writer thread in the daemon would contend for the
interpreter lock with the event loop on every row. The daemon sends the writer each
accepted execution and answers the caller once the writer has committed it (queued);
then sends it to the runner with the fewest executions in hand. The runner runs it,
records it running once it has run RUNNING_AFTER, and sends how it ended; those records
pass through the daemon to the writer untouched. The writer commits what has arrived
together (a group commit), accepted executions before the runners' records, and tells
the daemon what ended, which answers a `respond: sync` webhook, counts it, and lets the
next run of an `overlap: skip` schedule go.

Each runner receives a deployment (workflow, variables, decrypted credentials) once, over
a socket pair only the two processes hold, and forgets it when no environment serves it
any more. A runner runs up to `MAX_RUNNING` executions at once and queues the rest, at a
lower CPU priority than the daemon. A runner that stops (killed, out of memory) is
replaced, and what it held is recorded as interrupted; a runner or writer whose daemon is
gone stops at once, and the next daemon records what was left as interrupted
(`History.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from loomgit import eventloop, log
from loomgit.history import FinishRows, History, HistoryError, finish_rows
from loomgit.recorder import AsyncRecorder
from loomgit.records import Execution
from loomgit.runtime import Deployment, Engine, TriggerEvent
from loomgit.writer import (
    FOR_RECEIVER,
    FOR_WRITER,
    HEADER,
    bodies,
    execution_row,
    frame,
    frame_ends,
    from_row,
)

MAX_RUNNING = 256  # executions a runner runs at once; the rest wait their turn, queued
# Runners get the CPU only when nothing else wants it (SCHED_IDLE; where that is missing,
# nice 19): accepting a request, firing a schedule and recording come before running what
# was accepted. Measured: at nice 5 a runner cut webhook ingress by a fifth; at nice 19 it
# still took most of the second core, and the daemon's p50 latency at 5,000 requests/s
# was 21 ms against 7 ms with SCHED_IDLE. What waits is bounded by --max-backlog.
RUNNER_NICE = 19
INTERRUPTED = "interrupted: its runner process stopped before it finished"
NOT_STARTED = "interrupted: the daemon stopped before it started"
STOP_MARGIN = 30.0  # past the grace period, a runner that has not exited is killed
# A runner records an execution as running once it has run this long (seconds): most end
# sooner, and for those the history's writer then makes one write, the end, instead of
# two. Measured in History.apply (16 accepted at a time, then their ends): 66-72 -> 53-57
# us of the writer's CPU per trivial execution.
RUNNING_AFTER = 0.1


# How an execution ended: its status, and its whole record when it was asked for.
Outcome = tuple[str, Execution | None]


class Dispatcher(Protocol):
    """Records accepted executions and runs them."""

    initial_status: str  # what an execution is recorded as when accepted
    # Told each execution's environment, workflow and status as it ends (the daemon
    # counts them).
    on_end: Callable[[str, str, str], None] | None

    async def start(self) -> None: ...

    async def record(self, ex: Execution) -> str:
        """Records `ex`; returns its id, or the id of the execution recorded first with
        the same dedupe key."""
        ...

    def submit(
        self, dep: Deployment, trigger: TriggerEvent, ex: Execution, want_record: bool
    ) -> asyncio.Future[Outcome]:
        """Runs a recorded execution; the future says how it ended."""
        ...

    def retain(self, deployments: Iterable[Deployment]) -> None: ...

    def backlog(self) -> int:
        """Executions submitted that have not ended."""
        ...

    async def stop(self, grace: float) -> int: ...


class InProcess:
    """Executions as tasks of the daemon's own event loop, recorded by its writer thread."""

    initial_status = "running"

    def __init__(
        self,
        engine: Engine,
        recorder: AsyncRecorder,
        on_end: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.recorder = recorder
        self.on_end = on_end
        self.running: set[asyncio.Task[Outcome]] = set()

    async def start(self) -> None:
        pass

    async def record(self, ex: Execution) -> str:
        return (await self.recorder.start(ex)).id

    async def _run(self, dep: Deployment, trigger: TriggerEvent, ex: Execution) -> Outcome:
        final = await self.engine.run(dep, trigger, ex)
        if self.on_end is not None:
            self.on_end(final.environment, final.workflow, final.status)
        return final.status, final

    def submit(
        self, dep: Deployment, trigger: TriggerEvent, ex: Execution, want_record: bool
    ) -> asyncio.Future[Outcome]:
        task = asyncio.create_task(self._run(dep, trigger, ex))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    def retain(self, deployments: Iterable[Deployment]) -> None:
        pass

    def backlog(self) -> int:
        return len(self.running)

    async def stop(self, grace: float) -> int:
        """Lets running executions finish within `grace`; cancels the rest, which the
        engine records as interrupted. Returns how many were."""
        if not self.running:
            return 0
        _, pending = await asyncio.wait(set(self.running), timeout=grace)
        self.engine.stopping = True
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)


# -- messages between the processes ---------------------------------------------------


async def _read_message(reader: asyncio.StreamReader) -> Any:
    """The next message (in a runner, from the daemon)."""
    size, _ = HEADER.unpack(await reader.readexactly(HEADER.size))
    return pickle.loads(await reader.readexactly(size))


class _Frames(asyncio.Protocol):
    """What a child process sends the daemon, cut into whole frames and handed to
    `received` from the event loop's I/O callback. A task reading a stream wakes a turn of
    the loop later, behind the requests that arrived meanwhile, and every webhook waits for
    the writer's answer. Measured at 5,000 webhooks/s (three runs each): the wait for the
    record was 14-28 ms p99 with a reading task and records sent once per turn, 9-12 ms
    with this and a record sent at once when none is on its way (`RunnerPool.record`)."""

    def __init__(self, received: Callable[[bytes, list[int]], None]) -> None:
        self.received = received
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        if not self._buffer:
            ends = frame_ends(data)
            if ends and ends[-1] == len(data):  # the usual case: whole frames, no copy
                self.received(data, ends)
                return
        self._buffer += data
        ends = frame_ends(self._buffer)
        if ends:
            whole = bytes(self._buffer[: ends[-1]])
            del self._buffer[: ends[-1]]
            self.received(whole, ends)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Channel:
    """Messages to one process, sent together once per turn of the event loop."""

    def __init__(self, writer: asyncio.WriteTransport | asyncio.StreamWriter) -> None:
        self.writer = writer
        self._out: list[bytes] = []

    def send(self, message: Any, tag: int = FOR_RECEIVER, at_once: bool = False) -> None:
        self.send_frame(frame(message, tag), at_once)

    def send_frame(self, frame: bytes, at_once: bool = False) -> None:
        """Sends `frame` with the others of this turn of the loop; `at_once`, now, unless
        some wait to be sent before it."""
        if at_once and not self._out:
            if not self.writer.is_closing():
                self.writer.write(frame)
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self.flush)
        self._out.append(frame)

    def flush(self) -> None:
        out, self._out = self._out, []
        if out and not self.writer.is_closing():
            self.writer.write(b"".join(out))


async def _child(
    received: Callable[[bytes, list[int]], None], module: str, *args: str
) -> tuple[asyncio.subprocess.Process, _Channel, _Frames]:
    """Starts `python -m MODULE FD ARGS…` with one end of a socket pair; returns the
    process, a channel to it and what reads it, which hands what it sends to
    `received`."""
    ours, theirs = socket.socketpair()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            str(theirs.fileno()),
            *args,
            pass_fds=(theirs.fileno(),),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
        )
    finally:
        theirs.close()
    loop = asyncio.get_running_loop()
    transport, frames = await loop.create_connection(lambda: _Frames(received), sock=ours)
    return proc, _Channel(transport), frames


# A run, as sent: plain values pickle several times faster than the dataclasses.
def _run_message(token: int, trigger: TriggerEvent, ex: Execution, want: bool) -> tuple[Any, ...]:
    t = trigger
    return (
        "run",
        token,
        (t.type, t.body, t.headers, t.query, t.scheduled_time, t.details, t.params, t.resume),
        (ex.id, ex.started_at, ex.dedupe_key, ex.owner),
        want,
    )


def _kept(ex: Execution) -> tuple[Any, ...]:
    """What the daemon keeps of an execution sent to a runner, to record it as interrupted
    should the runner stop: its row without the trigger. Kept whole, with a callback on its
    future, each execution left about 20 objects (the trigger's body and headers among
    them) for the young collections to walk while it waited (`daemon.
    YOUNG_COLLECTION_EVERY`). Measured at 5,000 webhooks/s, three runs each: the
    collections took 201-221 ms of each 8 s, pausing the loop 2.3-2.8 ms at the median;
    with this and `on_end` instead of the callback, 108-130 ms and 1.2-1.5 ms."""
    row = execution_row(ex)
    return (*row[:8], {}, *row[9:])


def _execution(dep: Deployment, trigger: TriggerEvent, fields: tuple[Any, ...]) -> Execution:
    ident, started_at, dedupe_key, owner = fields
    return Execution(
        id=ident,
        environment=dep.environment,
        workflow=dep.name,
        version=dep.version,
        digest=dep.digest,
        trigger_type=trigger.type,
        dedupe_key=dedupe_key,
        status="running",
        started_at=started_at,
        owner=owner,
    )


# -- the daemon's side ------------------------------------------------------------------


@dataclass
class _Runner:
    number: int
    proc: asyncio.subprocess.Process
    channel: _Channel
    frames: _Frames
    sent: set[int] = field(default_factory=set)  # deployment tokens it holds
    held: set[str] = field(default_factory=set)  # executions sent to it, not ended
    listening: asyncio.Task[None] | None = None


@dataclass
class _Writer:
    proc: asyncio.subprocess.Process
    channel: _Channel
    listening: asyncio.Task[None] | None = None


class RunnerPool:
    """`count` runner processes and the history's writer process; see the module's
    description."""

    initial_status = "queued"

    def __init__(
        self,
        count: int,
        history: History,
        log_format: str = "text",
        on_end: Callable[[str, str, str], None] | None = None,
        retention: tuple[float | None, int | None] = (None, None),
        on_pruned: Callable[[str, int], None] | None = None,
    ) -> None:
        self.count = count
        self.history = history
        self.log_format = log_format
        self.on_end = on_end
        self.retention = retention  # the writer's: (older than seconds, keep)
        self.on_pruned = on_pruned  # told what the writer's retention deleted
        self.runners: list[_Runner] = []
        self.writer: _Writer | None = None
        self.stopping = False
        self._recording: dict[str, asyncio.Future[str]] = {}
        self._held: dict[str, tuple[tuple[Any, ...], asyncio.Future[Outcome]]] = {}
        self._tokens: dict[int, tuple[Deployment, int]] = {}  # id(deployment) -> (it, token)
        self._next_token = 0

    async def start(self) -> None:
        self.writer = await self._spawn_writer()
        for number in range(self.count):
            self.runners.append(await self._spawn(number))

    async def _spawn_writer(self) -> _Writer:
        proc, channel, frames = await _child(
            self._from_writer,
            "loomgit.writer",
            str(self.history.path),
            str(self.history.max_field_bytes),
            self.log_format,
            *("-" if value is None else str(value) for value in self.retention),
        )
        writer = _Writer(proc, channel)
        writer.listening = asyncio.create_task(self._watch_writer(writer, frames))
        return writer

    async def _spawn(self, number: int) -> _Runner:
        proc, channel, frames = await _child(
            self._from_runner,
            "loomgit.dispatch",
            str(self.history.max_field_bytes),
            self.log_format,
        )
        runner = _Runner(number, proc, channel, frames)
        runner.listening = asyncio.create_task(self._watch(runner))
        log.event("runner started", runner=number, pid=proc.pid)
        return runner

    def _to_writer(self, message: Any, at_once: bool = False) -> None:
        if self.writer is None:
            raise HistoryError("the execution history's writer is not running")
        self.writer.channel.send(message, at_once=at_once)

    async def record(self, ex: Execution) -> str:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        # With no record on its way, the writer is waiting: sent at once, not at the
        # end of this turn of the loop. Else it goes with the others of this turn, which
        # the writer takes together once it has committed those before.
        self._to_writer(("start", execution_row(ex)), at_once=not self._recording)
        self._recording[ex.id] = fut
        return await fut

    def _token(self, dep: Deployment) -> int:
        known = self._tokens.get(id(dep))
        if known is not None:
            return known[1]
        self._next_token += 1
        self._tokens[id(dep)] = (dep, self._next_token)
        return self._next_token

    def submit(
        self, dep: Deployment, trigger: TriggerEvent, ex: Execution, want_record: bool
    ) -> asyncio.Future[Outcome]:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._held[ex.id] = (_kept(ex), fut)
        if self.stopping or not self.runners:
            self._interrupt([ex.id], NOT_STARTED)
            return fut
        runner = min(self.runners, key=lambda r: len(r.held))
        token = self._token(dep)
        if token not in runner.sent:
            runner.channel.send(("deploy", token, dep))
            runner.sent.add(token)
        runner.channel.send(_run_message(token, trigger, ex, want_record))
        runner.held.add(ex.id)
        return fut

    def retain(self, deployments: Iterable[Deployment]) -> None:
        """Forgets, here and in the runners, deployments no environment serves now."""
        live = {id(dep) for dep in deployments}
        gone = [key for key in self._tokens if key not in live]
        tokens = [self._tokens.pop(key)[1] for key in gone]
        if not tokens:
            return
        for runner in self.runners:
            dropped = runner.sent.intersection(tokens)
            if dropped:
                runner.sent -= dropped
                runner.channel.send(("forget", sorted(dropped)))

    def backlog(self) -> int:
        return len(self._held)

    def _from_runner(self, frames: bytes, ends: list[int]) -> None:
        """A runner sends only records for the writer: passed on as they are."""
        if self.writer is not None:
            self.writer.channel.send_frame(frames)

    async def _watch(self, runner: _Runner) -> None:
        await runner.frames.closed
        await runner.proc.wait()
        self._lost(runner)

    def _from_writer(self, frames: bytes, ends: list[int]) -> None:
        """What the writer has committed: accepted executions, ended ones, and how many
        its retention deleted."""
        for kind, items in bodies(frames, ends):
            if kind == "recorded":
                for ident, stored, error in items:
                    fut = self._recording.pop(ident, None)
                    if fut is None or fut.done():
                        continue
                    if error:
                        fut.set_exception(HistoryError(error))
                    else:
                        fut.set_result(stored)
            elif kind == "pruned":
                if self.on_pruned is not None:
                    self.on_pruned(*items)
            else:
                for ident, status, record in items:
                    self._ended(ident, status, record)

    async def _watch_writer(self, writer: _Writer, frames: _Frames) -> None:
        await frames.closed
        await writer.proc.wait()
        if self.writer is writer:
            self.writer = None
        error = f"the execution history's writer stopped (exit {writer.proc.returncode})"
        for fut in self._recording.values():
            if not fut.done():
                fut.set_exception(HistoryError(error))
        self._recording.clear()
        if not self.stopping:
            log.event("history writer stopped", logging.ERROR, exit=writer.proc.returncode)
            self.writer = await self._spawn_writer()

    def _ended(self, ident: str, status: str, record: Execution | None) -> None:
        held = self._held.pop(ident, None)
        if held is None:
            return
        kept, fut = held
        for runner in self.runners:
            runner.held.discard(ident)
        if self.on_end is not None:
            self.on_end(kept[1], kept[2], status)  # the row's (writer.execution_row)
        if not fut.done():
            fut.set_result((status, record))

    def _lost(self, runner: _Runner) -> None:
        """A runner ended: what it held is interrupted; unless stopping, a new one takes
        its place. Said unless it was stopped and held nothing: a runner killed (by the
        kernel's OOM killer, say) while idle is worth a line too."""
        if runner.held or not self.stopping:
            level = logging.INFO if self.stopping else logging.WARNING
            log.event(
                "runner stopped",
                level,
                runner=runner.number,
                pid=runner.proc.pid,
                exit=runner.proc.returncode,
                interrupted=len(runner.held),
            )
        self._interrupt(list(runner.held), INTERRUPTED)
        runner.held.clear()
        if self.stopping or runner not in self.runners:
            return
        self.runners.remove(runner)

        async def replace_it() -> None:
            self.runners.append(await self._spawn(runner.number))

        def failed(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.event("runner not replaced", logging.ERROR, error=str(task.exception()))

        asyncio.create_task(replace_it()).add_done_callback(failed)

    def _interrupt(self, idents: list[str], error: str) -> None:
        """Has the writer record these executions as interrupted, unless they ended
        already (their records were on the way)."""
        now = time.time()
        finals = []
        for ident in idents:
            held = self._held.get(ident)
            if held is not None:
                kept = from_row(held[0])
                finals.append(replace(kept, status="interrupted", ended_at=now, error=error))
        if not finals:
            return
        try:
            self._to_writer(("interrupt", finals))
        except HistoryError:
            for ex in finals:
                self._ended(ex.id, ex.status, ex)

    async def stop(self, grace: float) -> int:
        """Asks every runner to finish what runs within `grace` (the rest is recorded as
        interrupted), waits for them to exit, then for the writer to commit everything.
        Returns how many executions were interrupted."""
        self.stopping = True
        waiting = [fut for _, fut in self._held.values()]
        for runner in self.runners:
            runner.channel.send(("stop", grace))
        for runner in self.runners:
            try:
                await asyncio.wait_for(runner.proc.wait(), grace + STOP_MARGIN)
            except TimeoutError:
                runner.proc.kill()
            if runner.listening is not None:
                await runner.listening
        # Bounded: an outcome the writer never confirms must not keep the daemon running.
        if waiting:
            await asyncio.wait(waiting, timeout=STOP_MARGIN)
        outcomes = [f.result() for f in waiting if f.done() and not f.cancelled()]
        writer = self.writer  # its listener clears self.writer once it has exited
        if writer is not None:
            writer.channel.send(("stop", None))
            try:
                await asyncio.wait_for(writer.proc.wait(), STOP_MARGIN)
            except TimeoutError:
                writer.proc.kill()
            if writer.listening is not None:
                await writer.listening
        return sum(1 for status, _ in outcomes if status == "interrupted")


# -- the runner process -------------------------------------------------------------------


class _Reporter:
    """The runner's recorder: what it records goes to the writer, through the daemon:
    ended executions once per turn of the event loop, those still running after
    RUNNING_AFTER seconds as running."""

    def __init__(self, channel: _Channel, max_field_bytes: int) -> None:
        self.channel = channel
        self.max_field_bytes = max_field_bytes
        self.wanted: set[str] = set()  # executions whose whole record the daemon waits for
        self._started: dict[str, None] = {}  # not yet recorded as running, in order
        self._ended: list[tuple[FinishRows, Execution | None]] = []
        self._timer: asyncio.TimerHandle | None = None

    def flush(self) -> None:
        """Sends what is still to send: the executions running, then those ended."""
        self._running()
        self._send_ended()

    def _running(self) -> None:
        self._timer = None
        if self._started:
            self.channel.send(("running", list(self._started)), FOR_WRITER)
            self._started = {}

    def _send_ended(self) -> None:
        if self._ended:
            self.channel.send(("rows", self._ended), FOR_WRITER)
            self._ended = []

    def started(self, ident: str) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(RUNNING_AFTER, self._running)
        self._started[ident] = None

    async def start(self, ex: Execution) -> Execution:
        return ex  # recorded before it was sent here

    async def finish(self, ex: Execution) -> None:
        if not self._ended:
            asyncio.get_running_loop().call_soon(self._send_ended)
        self._started.pop(ex.id, None)  # its end says it ran
        record = ex if ex.id in self.wanted else None
        self.wanted.discard(ex.id)
        self._ended.append((finish_rows(ex, self.max_field_bytes), record))


class _Work:
    """What one runner process holds: deployments, queued and running executions."""

    def __init__(self, reporter: _Reporter) -> None:
        self.reporter = reporter
        self.engine = Engine(reporter)
        self.deployments: dict[int, Deployment] = {}
        self.queued: deque[tuple[Deployment, TriggerEvent, Execution]] = deque()
        self.running: set[asyncio.Task[Execution]] = set()
        self.accepting = True

    def handle(self, message: tuple[Any, ...]) -> float | None:
        """Acts on one message; returns the grace period when it says stop."""
        kind = message[0]
        if kind == "run":
            _, token, trigger_fields, ex_fields, want_record = message
            dep = self.deployments[token]
            trigger = TriggerEvent(*trigger_fields)
            ex = _execution(dep, trigger, ex_fields)
            if want_record:
                self.reporter.wanted.add(ex.id)
            self.queued.append((dep, trigger, ex))
            self.pump()
        elif kind == "deploy":
            self.deployments[message[1]] = message[2]
        elif kind == "forget":
            for token in message[1]:
                self.deployments.pop(token, None)
        else:
            return float(message[1])
        return None

    def pump(self) -> None:
        while self.accepting and self.queued and len(self.running) < MAX_RUNNING:
            dep, trigger, ex = self.queued.popleft()
            self.reporter.started(ex.id)
            task = asyncio.create_task(self.engine.run(dep, trigger, ex))
            self.running.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Execution]) -> None:
        self.running.discard(task)
        self.pump()

    async def stop(self, grace: float) -> None:
        """Records what never started as interrupted, lets what runs finish within
        `grace`, then cancels the rest (the engine records it as interrupted)."""
        self.accepting = False
        while self.queued:
            _, _, ex = self.queued.popleft()
            final = replace(ex, status="interrupted", ended_at=time.time(), error=NOT_STARTED)
            await self.reporter.finish(final)
        if self.running:
            _, pending = await asyncio.wait(set(self.running), timeout=grace)
            self.engine.stopping = True
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.engine.close()


async def _run_runner(sock: socket.socket, max_field_bytes: int) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    channel = _Channel(writer)
    work = _Work(_Reporter(channel, max_field_bytes))
    try:
        while True:
            grace = work.handle(await _read_message(reader))
            if grace is not None:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        return  # the daemon is gone; the next one records what was left as interrupted
    await work.stop(grace)
    work.reporter.flush()
    channel.flush()
    with contextlib.suppress(ConnectionError):
        await writer.drain()
        writer.close()
        await writer.wait_closed()


def main(argv: list[str]) -> None:
    """`python -m loomgit.dispatch FD MAX_FIELD_BYTES LOG_FORMAT`: a runner process,
    started by the daemon with one end of a socket pair. It stops when told to or when the
    daemon is gone; SIGINT, SIGTERM and SIGHUP are the daemon's to act on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal sends it to all
    fd, max_field_bytes, log_format = argv
    log.configure(log_format)
    sock = socket.socket(fileno=int(fd))
    _idle_priority()
    eventloop.run(_run_runner(sock, int(max_field_bytes)))


def _idle_priority() -> None:
    """This process runs only when the CPU is otherwise idle (see RUNNER_NICE)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        with contextlib.suppress(OSError):
            os.nice(RUNNER_NICE)


if __name__ == "__main__":
    main(sys.argv[1:])
