"""The daemon's core, apart from HTTP: the reconcile loop, the schedule timer, starting
executions and shutting down.

An execution is recorded before anything reports it accepted, so an accepted request or a
fired schedule is never lost; executions a killed daemon left running are recorded as
interrupted when the next one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from loomgit import eventloop, log
from loomgit.dispatch import Dispatcher, InProcess, Outcome, RunnerPool
from loomgit.errors import LoomgitError
from loomgit.history import History, HistoryError, Retention
from loomgit.metrics import Metrics
from loomgit.reconcile import EnvStatus, Reconciler, Served
from loomgit.recorder import AsyncRecorder
from loomgit.records import owner_gone
from loomgit.runtime import Deployment, Engine, TriggerEvent
from loomgit.scheduler import DEDUPE_PREFIX, Entry, Scheduler, dedupe_key, parse_dedupe_key

FETCH_BACKOFF_START = 2.0
# Objects alive after a cycle (the parsed repository, hundreds of thousands of them) are
# moved out of the collector's reach, so a full collection does not pause the event loop
# for half a second every few cycles; a real full collection runs this often instead.
FULL_COLLECTION_EVERY = 3600.0
# While serving, the collector does not run on its own: accepting a request leaves no
# cyclic garbage (measured: under 1,000 objects after 60,000 requests), and the
# collections that its allocations set off cost a sixth of the CPU per request. The young
# generations are collected on this timer instead, and what survives is frozen like the
# cycle's objects, so each collection looks only at what is new since the one before.
# Measured: collected every 10 s without freezing, the executions waiting in a burst made
# one collection of 284,000 objects pause the event loop for 110 ms (webhook p99 62 ms).
# Every second, with freezing, a collection at 5,000 requests/s still looked at 40,000
# objects and paused the loop for 18-23 ms; every tenth of a second it is 1.5-4 ms
# (bench_daemon.py p99, two runs each: 19-21 ms against 25-29 ms).
YOUNG_COLLECTION_EVERY = 0.1
# While the history cannot be written (disk full, say), every webhook is refused: logged
# the first time, then at most this often, with how many were refused since.
UNRECORDED_LOG_EVERY = 10.0


@dataclass
class Settings:
    interval: float = 60.0
    grace: float = 30.0
    max_body: int = 1024 * 1024
    tokens: tuple[str, ...] = ()
    git_webhook_secret: bytes | None = None
    runners: int = 0  # runner processes; 0 runs executions in the daemon's event loop
    max_backlog: int = 50_000  # accepted executions not yet ended, past which 503
    metrics_by_workflow: bool = False  # a `workflow` label on loomgit_executions_total
    log_format: str = "text"
    prune_older_than: float | None = None  # seconds; executions older are deleted
    prune_keep: int | None = None  # executions kept per environment at most
    # Reads `tokens` and `git_webhook_secret` again from where they came from (SIGHUP).
    reread: Callable[[], tuple[tuple[str, ...], bytes | None]] | None = None


@dataclass
class Daemon:
    reconciler: Reconciler
    history: History
    settings: Settings
    on_ready: Callable[[list[str]], None] | None = None
    clock: Callable[[], float] = time.time
    engine: Engine = field(init=False)
    recorder: AsyncRecorder = field(init=False)
    dispatch: Dispatcher = field(init=False)
    metrics: Metrics = field(init=False)
    _scheduler: Scheduler | None = None
    _synced: dict[str, Served] = field(default_factory=dict)
    _schedule_runs: dict[tuple[str, str], int] = field(default_factory=dict)
    _wake: asyncio.Event | None = None
    _fetch_failures: int = 0
    _unread: str | None = None  # why the repository could not be read, as last logged
    _collected: float = field(default_factory=time.monotonic)
    _cycles_running: int = 0  # reconcile cycles in their worker thread now
    reconciled: bool = False  # the first cycle has ended (see `server.readiness`)
    _unrecorded: int = 0  # executions refused since the last log line about it
    _unwritable: bool = False  # the last execution could not be recorded
    _unrecorded_logged: float = -UNRECORDED_LOG_EVERY

    def __post_init__(self) -> None:
        self.metrics = Metrics(by_workflow=self.settings.metrics_by_workflow)
        older_than, keep = self.settings.prune_older_than, self.settings.prune_keep
        retention = Retention.wanted(self.history, older_than, keep, self._pruned)
        self.recorder = AsyncRecorder(  # with runners, their writer process prunes
            self.history, None if self.settings.runners else retention
        )
        self.engine = Engine(self.recorder)
        self.dispatch = (
            RunnerPool(
                self.settings.runners,
                self.history,
                self.settings.log_format,
                self._finished,
                (older_than, keep),
                self._pruned,
            )
            if self.settings.runners
            else InProcess(self.engine, self.recorder, self._finished)
        )
        self.metrics.backlog.set_function(self.dispatch.backlog)
        self.metrics.max_backlog.set(self.settings.max_backlog)

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            self._scheduler = Scheduler(self._fire, self.clock)
        return self._scheduler

    # -- start-up --------------------------------------------------------------------

    async def recover(self) -> None:
        """Records as interrupted what a killed daemon on this host left running, and
        starts the runner processes."""
        await self.dispatch.start()
        lost = await asyncio.to_thread(self.history.recover, owner_gone)
        if lost:
            log.event("executions interrupted", logging.WARNING, count=len(lost), ids=lost[:20])

    # -- reconcile -------------------------------------------------------------------

    async def reconcile_once(self) -> None:
        """One cycle. Parsing and decrypting run in a worker thread, off the event loop;
        the swap of what is served and of the schedules happens on the loop."""
        self._cycles_running += 1
        try:
            await self._reconcile()
            self.reconciled = True
        finally:
            self._cycles_running -= 1

    async def _reconcile(self) -> None:
        started = time.perf_counter()
        before = {name: _seen(st) for name, st in self.reconciler.status.items()}
        statuses = await asyncio.to_thread(self.reconciler.cycle)
        self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
        fetch_failed = False
        for name, st in statuses.items():
            cond = st.conditions[0] if st.conditions else None
            reason = cond.reason if cond else "Unknown"
            self.metrics.reconciles.labels(name, reason).inc()
            self.metrics.ready.labels(name).set(cond is not None and cond.status)
            if st.applied_at is not None:
                self.metrics.applied_at.labels(name).set(st.applied_at)
            fetch_failed |= reason == "FetchFailed"
            if _seen(st) == before.get(name):
                continue  # nothing new to say: the same commit, the same outcome
            if st.last_applied_commit != (before.get(name) or (None,))[0]:
                log.event("applied", environment=name, commit=st.last_applied_commit)
            elif cond is not None and not cond.status:
                log.event(
                    "not applied",
                    logging.WARNING,
                    environment=name,
                    commit=st.last_attempted_commit,
                    reason=reason,
                    message=cond.message,
                )
            elif cond is not None and before.get(name, (None,) * 3)[2] not in (None, reason):
                # the same commit, Ready again (after FetchFailed, say)
                log.event("ready again", environment=name, commit=st.last_applied_commit,
                          after=before[name][2])  # fmt: skip
        self._fetch_failures = self._fetch_failures + 1 if fetch_failed else 0
        unread = self.reconciler.read_error
        if unread is not None and not statuses and unread != self._unread:
            # No environment is known yet to carry it (see `server.readiness`).
            log.event("repository not read", logging.WARNING, error=unread)
        self._unread = unread
        await self._sync_schedules()
        self._settle_memory()

    def _settle_memory(self) -> None:
        """Freezes what the cycle left alive (see FULL_COLLECTION_EVERY); hourly, first
        collects everything, so cyclic garbage among frozen objects is freed too."""
        now = time.monotonic()
        if now - self._collected >= FULL_COLLECTION_EVERY:
            gc.unfreeze()
            gc.collect()
            self._collected = now
        gc.freeze()

    async def collect_loop(self) -> None:
        """Collects the young generations every YOUNG_COLLECTION_EVERY seconds and
        freezes what survives; with the collector's own runs off while serving (see
        `server.serve`). Cyclic garbage among frozen objects waits for the hourly full
        collection (FULL_COLLECTION_EVERY).

        Not while a cycle runs: its thread builds hundreds of thousands of objects, all
        young, and collecting them held the interpreter, and so every webhook and
        schedule, for up to 60 ms (bench_daemon.py's reparse part). What it leaves is
        frozen when it ends (`_settle_memory`)."""
        while True:
            await asyncio.sleep(YOUNG_COLLECTION_EVERY)
            if not self._cycles_running:
                gc.collect(1)
                gc.freeze()

    def request_reconcile(self) -> None:
        """Starts a cycle now (a push webhook); cycles asked for while one runs coalesce."""
        if self._wake is not None:
            self._wake.set()

    def reload(self) -> None:
        """SIGHUP: the API tokens and the git webhook secret are read again (rotated
        without a restart), and a cycle starts now. Ones that cannot be read are logged,
        and those read before stay."""
        reread = self.settings.reread
        if reread is not None:
            try:
                tokens, secret = reread()
            except LoomgitError as exc:
                log.event("reload: secrets not read again; the ones before stay",
                          logging.WARNING, error=exc.message)  # fmt: skip
            else:
                self.settings.tokens, self.settings.git_webhook_secret = tokens, secret
        log.event("reload", tokens=len(self.settings.tokens),
                  git_webhook=self.settings.git_webhook_secret is not None)  # fmt: skip
        self.request_reconcile()

    def next_wait(self) -> float:
        """The interval; after fetch failures, a doubling backoff up to the interval."""
        if not self._fetch_failures:
            return self.settings.interval
        backoff: float = FETCH_BACKOFF_START * 2.0 ** (self._fetch_failures - 1)
        return min(backoff, self.settings.interval)

    async def reconcile_loop(self) -> None:
        self._wake = asyncio.Event()
        while True:
            await eventloop.wait_event(self._wake, self.next_wait())
            self._wake.clear()
            await self.reconcile_once()

    async def _sync_schedules(self) -> None:
        scheduler = self.scheduler
        changed = False
        for name in [n for n in self._synced if n not in self.reconciler.served]:
            del self._synced[name]  # removed from loomgit.yaml: nothing of it runs on
            scheduler.update(name, [])
            for gauge in (self.metrics.ready, self.metrics.applied_at, self.metrics.active):
                with contextlib.suppress(KeyError):
                    gauge.remove(name)
            changed = True
        for name in self.reconciler.names:
            served = self.reconciler.served.get(name)
            previous = self._synced.get(name)
            if served is None or served is previous:
                continue
            self._synced[name] = served
            self.metrics.active.labels(name).set(len(served.active))
            added = scheduler.update(name, list(served.schedules))
            if previous is None:  # first time this environment is served: catch up
                await self._catch_up(added)
            changed = True
        if changed:
            self.dispatch.retain(
                dep for served in self._synced.values() for dep in served.deployments.values()
            )
        self.metrics.schedules.set(len(scheduler))

    async def _catch_up(self, entries: list[Entry]) -> None:
        now = datetime.fromtimestamp(self.clock(), UTC)
        for entry in entries:
            if entry.trigger.catchup != "latest":
                continue
            missed = entry.schedule.latest_until(now)
            key = await asyncio.to_thread(
                self.history.last_dedupe_key,
                entry.environment,
                entry.workflow,
                "schedule",
                DEDUPE_PREFIX,
            )
            last = parse_dedupe_key(key) if key else None
            # Only a schedule that fired before can have missed a time; a new one has not.
            if last is not None and last < missed:
                log.event(
                    "schedule catch-up",
                    environment=entry.environment,
                    workflow=entry.workflow,
                    scheduled_time=missed.isoformat(),
                )
                self.scheduler.fire_now(entry, missed)

    # -- starting executions ---------------------------------------------------------

    async def start(
        self,
        dep: Deployment,
        trigger: TriggerEvent,
        dedupe: str | None,
        want_record: bool = False,
    ) -> tuple[str, asyncio.Future[Outcome] | None]:
        """Records the execution, then has it run. Returns its id and a future of how it
        ended (with its whole record if `want_record`); no future when the dedupe key
        named an earlier execution."""
        status = self.dispatch.initial_status
        proposed = self.engine.new_execution(dep, trigger, dedupe, status)
        ident = await self.dispatch.record(proposed)
        if self._unwritable:
            self._writable_again()
        if ident != proposed.id:
            return ident, None
        self.metrics.child(self.metrics.started, dep.environment, trigger.type).inc()
        return ident, self.dispatch.submit(dep, trigger, proposed, want_record)

    def unrecorded(self, exc: HistoryError, environment: str, workflow: str, by: str) -> None:
        """An execution not started because the history could not record it: counted,
        and logged the first time, then at most every UNRECORDED_LOG_EVERY seconds."""
        self.metrics.child(self.metrics.unrecorded, environment, by).inc()
        self._unrecorded += 1
        self._unwritable = True
        now = time.monotonic()
        if now - self._unrecorded_logged >= UNRECORDED_LOG_EVERY:
            log.event(
                "execution not recorded",
                logging.ERROR,
                environment=environment,
                workflow=workflow,
                trigger=by,
                error=exc.message,
                refused=self._unrecorded,
            )
            self._unrecorded, self._unrecorded_logged = 0, now

    def _writable_again(self) -> None:
        """The first execution recorded after some could not be: said once, with how many
        were refused since the last line about them."""
        log.event("executions recorded again", logging.WARNING, refused=self._unrecorded)
        self._unwritable, self._unrecorded = False, 0
        self._unrecorded_logged = -UNRECORDED_LOG_EVERY  # the next failure is logged at once

    def overloaded(self, environment: str, by: str) -> bool:
        """Whether so many accepted executions wait or run that webhooks and API
        triggers should be refused for now (schedules still fire); a refusal is counted."""
        if self.dispatch.backlog() < self.settings.max_backlog:
            return False
        self.metrics.child(self.metrics.refused, environment, by).inc()
        return True

    def _pruned(self, environment: str, count: int) -> None:
        """Executions the retention deleted (in the writer's process or thread)."""
        self.metrics.child(self.metrics.pruned, environment).inc(count)

    def _finished(self, environment: str, workflow: str, status: str) -> None:
        if self.metrics.by_workflow:
            self.metrics.child(self.metrics.finished, environment, workflow, status).inc()
        else:
            self.metrics.child(self.metrics.finished, environment, status).inc()

    async def _fire(self, entry: Entry, at: datetime) -> None:
        served = self.reconciler.served.get(entry.environment)
        if served is None or entry.workflow not in served.active:
            return
        slot = (entry.environment, entry.workflow)
        if entry.trigger.overlap == "skip" and self._schedule_runs.get(slot):
            self.metrics.schedules_skipped.labels(entry.environment).inc()
            log.event(
                "schedule skipped: still running",
                environment=entry.environment,
                workflow=entry.workflow,
                scheduled_time=at.isoformat(),
            )
            return
        trigger = TriggerEvent(  # the time due as the cron names it: in its time zone
            "schedule",
            scheduled_time=at.astimezone(entry.schedule.zone).isoformat(),
            details={"cron": entry.trigger.cron, "timezone": entry.trigger.timezone},
        )
        self._schedule_runs[slot] = self._schedule_runs.get(slot, 0) + 1
        try:
            _, task = await self.start(served.deployments[entry.workflow], trigger, dedupe_key(at))
        except HistoryError as exc:  # not fired: the unique key was never written either
            self._release(slot)
            self.unrecorded(exc, entry.environment, entry.workflow, "schedule")
            return
        except BaseException:
            self._release(slot)
            raise
        self.metrics.schedule_lateness.observe(max(self.clock() - at.timestamp(), 0.0))
        if task is None:
            self._release(slot)  # fired already, by an earlier run or another daemon
        else:
            task.add_done_callback(lambda _: self._release(slot))

    def _release(self, slot: tuple[str, str]) -> None:
        left = self._schedule_runs.get(slot, 1) - 1
        if left > 0:
            self._schedule_runs[slot] = left
        else:
            self._schedule_runs.pop(slot, None)

    # -- shutting down ---------------------------------------------------------------

    async def stop(self) -> None:
        """Lets running executions finish within the grace period, records the rest as
        interrupted, and flushes the history."""
        # One grace period for both: schedule fires still recording, then executions.
        deadline = time.monotonic() + self.settings.grace
        if self._scheduler is not None:
            cut = await self._scheduler.close(self.settings.grace)
            if cut:
                log.event("schedule fires cut short", logging.WARNING, count=cut)
        interrupted = await self.dispatch.stop(max(0.0, deadline - time.monotonic()))
        if interrupted:
            log.event("executions interrupted", logging.WARNING, count=interrupted)
        await self.engine.close()
        self.recorder.close()


def _seen(st: EnvStatus) -> tuple[str | None, str | None, str | None]:
    """What a log line would report of an environment's status."""
    reason = st.conditions[0].reason if st.conditions else None
    return st.last_applied_commit, st.last_attempted_commit, reason
