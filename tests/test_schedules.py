"""Schedules: the daylight-saving rule, and the daemon's timer in-process against a real
repository and a real history file, with a clock shifted to just before a minute."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import HELLO, AgeKey, Repo, commit_all, descendants, put_everywhere
from echo_server import serve

from loomgit.cron import Schedule
from loomgit.daemon import Daemon, Settings
from loomgit.diff import next_fires
from loomgit.history import History
from loomgit.reconcile import Reconciler
from loomgit.records import Execution, Query
from loomgit.runtime import TriggerEvent
from loomgit.scheduler import dedupe_key

BERLIN = "Europe/Berlin"


def walk(schedule: Schedule, start: datetime, count: int) -> list[str]:
    out = []
    for _ in range(count):
        start = schedule.next_after(start)
        out.append(start.astimezone(schedule.zone).isoformat())
    return out


def test_spring_forward_fires_a_skipped_time_once_when_the_clock_resumes() -> None:
    daily = Schedule("30 2 * * *", BERLIN)
    assert walk(daily, datetime(2026, 3, 28, 12, tzinfo=UTC), 3) == [
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that night
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    hourly = Schedule("0 * * * *", BERLIN)
    assert walk(hourly, datetime(2026, 3, 29, 0, 30, tzinfo=UTC), 3) == [
        "2026-03-29T03:00:00+02:00",  # 02:00 and 03:00 are one instant: fired once
        "2026-03-29T04:00:00+02:00",
        "2026-03-29T05:00:00+02:00",
    ]


def test_autumn_back_fires_a_repeated_time_once_at_its_first_occurrence() -> None:
    half_hourly = Schedule("*/30 * * * *", BERLIN)
    assert walk(half_hourly, datetime(2026, 10, 24, 23, 10, tzinfo=UTC), 5) == [
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",  # 02:00 and 02:30 CET are not fired again
        "2026-10-25T03:30:00+01:00",
    ]
    daily = Schedule("30 2 * * *", BERLIN)
    assert walk(daily, datetime(2026, 10, 24, 12, tzinfo=UTC), 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    # Started inside the repeated hour, after the first 02:30: that time already passed.
    inside = datetime(2026, 10, 25, 1, 10, tzinfo=UTC)  # 02:10 CET, the second pass
    assert walk(daily, inside, 1) == ["2026-10-26T02:30:00+01:00"]
    assert half_hourly.latest_until(inside).isoformat() == "2026-10-25T00:30:00+00:00"


def test_a_daily_schedule_fires_once_every_day_of_a_year() -> None:
    daily = Schedule("30 2 * * *", BERLIN)
    fires = walk(daily, datetime(2026, 1, 1, tzinfo=UTC), 365)
    assert len({f[:10] for f in fires}) == 365


def test_the_promotion_diff_shows_the_times_the_daemon_fires() -> None:
    now = datetime(2026, 3, 28, 12, tzinfo=UTC)
    assert next_fires("30 2 * * *", BERLIN, now, 2) == walk(Schedule("30 2 * * *", BERLIN), now, 2)


# -- the daemon's timer ----------------------------------------------------------------

EVERY_MINUTE = HELLO.replace('cron: "0 9 * * 1-5"', 'cron: "* * * * *"').replace(
    "trigger.body.name", "trigger.scheduled_time"
)


class ShiftedClock:
    """A clock set a few seconds short of the next whole minute (while the daemons
    reconcile), then moved to just short of it (to watch the timer fire)."""

    def __init__(self) -> None:
        self.minute = datetime.fromtimestamp((time.time() // 60 + 2) * 60, UTC)
        self.approach(5.0)

    def approach(self, seconds: float) -> None:
        self.offset = self.minute.timestamp() - seconds - time.time()

    def __call__(self) -> float:
        return time.time() + self.offset


def keys(age_key: AgeKey) -> dict[str, Path]:
    return {env: age_key.path for env in ("development", "staging", "production")}


async def run_daemons(daemons: list[Daemon], clock: ShiftedClock, seconds: float) -> None:
    for d in daemons:
        await d.reconcile_once()
    clock.approach(0.5)
    timers = [asyncio.create_task(d.scheduler.run()) for d in daemons]
    await asyncio.sleep(seconds)
    for t in timers:
        t.cancel()
    await asyncio.gather(*timers, return_exceptions=True)
    for d in daemons:
        await d.stop()


def scheduled(history: History) -> list[Execution]:
    return [e for e in history.query(Query(limit=100)) if e.trigger_type == "schedule"]


def test_a_schedule_fires_where_active_once_per_time_even_with_two_daemons(
    repo: Repo, age_key: AgeKey, tmp_path: Path
) -> None:
    put_everywhere(repo, EVERY_MINUTE, {"staging": True, "production": True})
    clock = ShiftedClock()
    minute = clock.minute
    with History(tmp_path / "history.db") as history:
        daemons = [
            Daemon(
                Reconciler(repo.path, keys(age_key), clock=clock), history, Settings(), clock=clock
            )
            for _ in range(2)  # a second daemon on the same history, or a restart
        ]
        asyncio.run(run_daemons(daemons, clock, 1.5))
        fired = [history.get(e.id) for e in scheduled(history)]
    assert sorted(e.environment for e in fired) == ["production", "staging"]  # not development
    local = minute.astimezone(ZoneInfo(BERLIN)).isoformat()  # the schedule's time zone
    assert local.endswith(("+01:00", "+02:00"))
    for ex in fired:
        assert ex.dedupe_key == dedupe_key(minute)
        assert ex.trigger["scheduled_time"] == local
        assert ex.status == "succeeded", ex.error
        assert ex.steps[1].logs[0]["message"] == f"Hello, {local}"


async def _fire_twice(daemon: Daemon, minute: datetime) -> None:
    await daemon.reconcile_once()
    entry = next(e for e in daemon.scheduler._entries.values() if e.environment == "staging")
    await daemon._fire(entry, minute)
    await daemon._fire(entry, minute.replace(minute=(minute.minute + 1) % 60))
    await asyncio.sleep(0.1)
    await daemon.stop()


@pytest.mark.parametrize("overlap, runs", [("skip", 1), ("allow", 2)])
def test_overlap_skip_leaves_out_a_time_while_the_last_run_goes_on(
    repo: Repo, age_key: AgeKey, tmp_path: Path, overlap: str, runs: int
) -> None:
    for server in serve():
        wait = f"    - id: wait\n      type: http\n      with: {{url: '{server.url}/slow/1'}}\n"
        slow = EVERY_MINUTE.replace("  steps:\n", "  steps:\n" + wait).replace(
            "timezone: Europe/Berlin", f"timezone: Europe/Berlin\n      overlap: {overlap}"
        )
        put_everywhere(repo, slow, {"staging": True})
        with History(tmp_path / "history.db") as history:
            daemon = Daemon(Reconciler(repo.path, keys(age_key)), history, Settings(grace=0.2))
            asyncio.run(_fire_twice(daemon, datetime(2026, 5, 4, 7, 0, tzinfo=UTC)))
            fired = scheduled(history)
        assert len(fired) == runs
        # Cut short by the shutdown's grace period: recorded as interrupted.
        assert {e.status for e in fired} == {"interrupted"}
        skipped = 'loomgit_schedule_skipped_total{environment="staging"} 1.0'
        assert (skipped in daemon.metrics.render().decode()) == (overlap == "skip")


def test_a_time_the_history_cannot_record_is_counted_and_fires_no_run(
    repo: Repo, age_key: AgeKey, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put_everywhere(repo, EVERY_MINUTE, {"staging": True})
    minute = datetime(2026, 5, 4, 7, 0, tzinfo=UTC)
    with History(tmp_path / "history.db") as history:
        daemon = Daemon(Reconciler(repo.path, keys(age_key)), history, Settings())

        def writable(yes: bool) -> None:  # SQLite refuses every write, as a full disk would
            with history._lock:
                history._db.execute(f"PRAGMA query_only = {0 if yes else 1}")

        async def fire_unwritable_then_writable() -> None:
            await daemon.reconcile_once()
            entry = next(
                e for e in daemon.scheduler._entries.values() if e.environment == "staging"
            )
            writable(False)
            await daemon._fire(entry, minute)  # not raised: a task no one awaits would lose it
            assert not daemon._schedule_runs  # an `overlap: skip` slot is not left taken
            writable(True)
            await daemon._fire(entry, minute.replace(minute=1))
            await asyncio.sleep(0.1)
            await daemon.stop()

        asyncio.run(fire_unwritable_then_writable())
        fired = scheduled(history)
    assert [e.dedupe_key for e in fired] == [dedupe_key(minute.replace(minute=1))]
    [line] = [r for r in caplog.records if r.getMessage() == "execution not recorded"]
    assert line.fields["trigger"] == "schedule" and "readonly" in line.fields["error"]  # type: ignore[attr-defined]
    [again] = [r for r in caplog.records if r.getMessage() == "executions recorded again"]
    assert again.fields == {"refused": 0}  # type: ignore[attr-defined]  # the one was logged
    unrecorded = 'loomgit_executions_unrecorded_total{environment="staging",trigger="schedule"} 1.0'
    assert unrecorded in daemon.metrics.render().decode()


def test_an_idempotency_key_cannot_take_a_schedules_time(
    repo: Repo, age_key: AgeKey, tmp_path: Path
) -> None:
    """The workflow has a webhook and a schedule; a caller's key that looks like the key
    of a scheduled time must not stop that time from firing."""
    from loomgit.ingress import Ingress

    put_everywhere(repo, EVERY_MINUTE, {"staging": True})
    minute = datetime(2026, 5, 4, 7, 0, tzinfo=UTC)
    with History(tmp_path / "history.db") as history:
        daemon = Daemon(Reconciler(repo.path, keys(age_key)), history, Settings())

        async def hook_then_fire() -> None:
            await daemon.reconcile_once()
            served = daemon.reconciler.served["staging"]
            event = TriggerEvent("webhook", body={})
            for expected in (202, 200):  # the key still names the caller's first execution
                answer = await Ingress(daemon).accept(
                    served, "staging", "hello", event, dedupe_key(minute)
                )
                assert isinstance(answer, tuple) and answer[0] == expected
            entry = next(
                e for e in daemon.scheduler._entries.values() if e.environment == "staging"
            )
            await daemon._fire(entry, minute)
            await asyncio.sleep(0.1)
            await daemon.stop()

        asyncio.run(hook_then_fire())
        fired = scheduled(history)
    assert [e.dedupe_key for e in fired] == [dedupe_key(minute)]


@pytest.mark.parametrize("catchup, fired_again", [("none", False), ("latest", True)])
def test_after_downtime_only_catchup_latest_runs_the_latest_missed_time(
    repo: Repo, age_key: AgeKey, tmp_path: Path, catchup: str, fired_again: bool
) -> None:
    content = HELLO.replace("timezone: Europe/Berlin", f"timezone: UTC\n      catchup: {catchup}")
    content = content.replace('cron: "0 9 * * 1-5"', 'cron: "0 3 * * *"')
    put_everywhere(repo, content, {"staging": True})
    with History(tmp_path / "history.db") as history:
        # The last run the history knows of is from three days ago.
        last = Schedule("0 3 * * *", "UTC").latest_until(datetime.now(UTC) - timedelta(days=3))
        seeded = Daemon(Reconciler(repo.path, keys(age_key)), history, Settings())

        async def seed_then_restart() -> None:
            await seeded.reconcile_once()
            dep = seeded.reconciler.served["staging"].deployments["hello"]
            trigger = TriggerEvent("schedule", scheduled_time=last.isoformat())
            await seeded.start(dep, trigger, dedupe_key(last))
            await seeded.stop()
            restarted = Daemon(Reconciler(repo.path, keys(age_key)), history, Settings())
            await restarted.reconcile_once()
            await asyncio.sleep(0.2)
            await restarted.stop()

        asyncio.run(seed_then_restart())
        fired = sorted(e.dedupe_key or "" for e in scheduled(history))
    missed = dedupe_key(Schedule("0 3 * * *", "UTC").latest_until(datetime.now(UTC)))
    assert fired == sorted([dedupe_key(last), missed] if fired_again else [dedupe_key(last)])


def test_a_large_change_is_parsed_in_worker_processes(
    repo: Repo, age_key: AgeKey, tmp_path: Path
) -> None:
    from loomgit.cli_serve import parse_pool
    from loomgit.documents import PARALLEL_MIN

    count = PARALLEL_MIN + 6
    for i in range(count):
        content = EVERY_MINUTE.replace("name: hello", f"name: hello{i}").replace(
            "path: hello", f"path: hello{i}"
        )
        repo.write(repo.wf("development", f"hello{i}"), content)
    commit_all(repo.path, "many workflows")
    pool = parse_pool()
    used: list[int] = []
    original = pool.map
    pool.map = lambda fn, chunks: used.append(len(chunks)) or original(fn, chunks)  # type: ignore[method-assign,assignment]
    try:
        reconciler = Reconciler(repo.path, keys(age_key), ["development"], pool=pool)
        status = reconciler.cycle()
        assert status["development"].conditions[0].reason == "Ready"
        assert len(reconciler.served["development"].deployments) == count + 1
        assert used == [1]  # one chunk of new workflows went to the worker processes
        # The workers stopped, and so did the fork server and its resource tracker.
        assert descendants(os.getpid()) == []
        before = reconciler.cache.misses
        reconciler.served.clear()  # a second cycle finds every workflow cached
        reconciler.cycle()
        assert reconciler.cache.misses == before
        for i in range(count, 2 * count):  # the next large change starts them again
            content = EVERY_MINUTE.replace("name: hello", f"name: hello{i}")
            repo.write(
                repo.wf("development", f"hello{i}"),
                content.replace("path: hello", f"path: hello{i}"),
            )
        commit_all(repo.path, "more workflows")
        assert reconciler.cycle()["development"].conditions[0].reason == "Ready"
        assert used == [1, 1]
        assert len(reconciler.served["development"].deployments) == 2 * count + 1
        assert descendants(os.getpid()) == []
    finally:
        pool.shutdown()


def test_the_collector_frees_cycles_and_freezes_what_lives_on(
    repo: Repo, age_key: AgeKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc
    import weakref

    import loomgit.daemon

    class Node:
        ref: object = None

    monkeypatch.setattr(loomgit.daemon, "YOUNG_COLLECTION_EVERY", 0.01)
    garbage = Node()
    garbage.ref = garbage  # a cycle: only the collector frees it
    freed = weakref.ref(garbage)
    del garbage
    kept = [Node()]
    gc.disable()  # as while serving
    try:
        with History(tmp_path / "history.db") as history:
            daemon = Daemon(Reconciler(repo.path, keys(age_key)), history, Settings())

            async def a_few_rounds() -> None:
                task = asyncio.create_task(daemon.collect_loop())
                await asyncio.sleep(0.1)
                task.cancel()

            asyncio.run(a_few_rounds())
        assert freed() is None
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects(0))  # frozen: not looked at again
    finally:
        gc.unfreeze()
        gc.enable()


def test_the_collector_waits_while_a_cycle_builds(
    repo: Repo, age_key: AgeKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle's thread builds hundreds of thousands of young objects: collecting them
    meanwhile held every webhook for up to 60 ms, so the young collections wait."""
    import gc
    import threading

    import loomgit.daemon

    monkeypatch.setattr(loomgit.daemon, "YOUNG_COLLECTION_EVERY", 0.01)
    collections: list[str] = []

    def counted(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(phase)

    release = threading.Event()

    def slow_cycle() -> dict[str, Any]:
        release.wait(5)
        return {}

    gc.disable()  # as while serving
    gc.callbacks.append(counted)
    try:
        with History(tmp_path / "history.db") as history:
            daemon = Daemon(Reconciler(repo.path, keys(age_key)), history, Settings())
            monkeypatch.setattr(daemon.reconciler, "cycle", slow_cycle)

            async def collect_around_a_cycle() -> int:
                collecting = asyncio.create_task(daemon.collect_loop())
                cycle = asyncio.create_task(daemon.reconcile_once())
                await asyncio.sleep(0.15)
                during = len(collections)
                release.set()
                await cycle
                await asyncio.sleep(0.1)
                collecting.cancel()
                return during

            during = asyncio.run(collect_around_a_cycle())
        assert during == 0
        assert collections  # and once it ended, they went on
    finally:
        gc.callbacks.remove(counted)
        gc.unfreeze()
        gc.enable()


def test_closing_the_scheduler_waits_for_a_stuck_fire_only_so_long() -> None:
    from loomgit.scheduler import Scheduler

    fired: list[datetime] = []

    async def never_recorded(entry: Any, at: datetime) -> None:
        fired.append(at)
        await asyncio.Event().wait()  # a history that never answers

    async def fire_then_close() -> tuple[int, float]:
        scheduler = Scheduler(never_recorded)
        scheduler.fire_now(None, datetime(2026, 5, 4, 7, 0, tzinfo=UTC))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        began = time.monotonic()
        cut = await scheduler.close(0.1)
        return cut, time.monotonic() - began

    cut, took = asyncio.run(fire_then_close())
    assert fired and cut == 1 and took < 2.0


async def _cancelled_as_woken(loop_task: asyncio.Task[None], wake: Callable[[], None]) -> bool:
    """Wakes a loop that waits for its event and cancels it in the same step: whether
    the cancel stops it (Python 3.11's `wait_for` dropped such a cancel, and the daemon
    then waited out the whole timeout before stopping)."""
    await asyncio.sleep(0.05)  # the loop is waiting for its event
    wake()
    loop_task.cancel()
    done, _ = await asyncio.wait({loop_task}, timeout=2.0)
    if not done:
        loop_task.cancel()
        await asyncio.gather(loop_task, return_exceptions=True)
    return bool(done) and loop_task.cancelled()


def test_the_timer_stops_when_cancelled_as_a_schedule_change_wakes_it() -> None:
    from loomgit.scheduler import Scheduler

    async def main() -> bool:
        scheduler = Scheduler(lambda entry, at: asyncio.sleep(0))  # type: ignore[arg-type,return-value]
        task = asyncio.create_task(scheduler.run())
        return await _cancelled_as_woken(task, lambda: scheduler.update("staging", []))

    assert asyncio.run(main())


def test_the_reconcile_loop_stops_when_cancelled_as_a_push_wakes_it(
    repo: Repo, age_key: AgeKey, tmp_path: Path
) -> None:
    async def main(daemon: Daemon) -> bool:
        await daemon.reconcile_once()
        task = asyncio.create_task(daemon.reconcile_loop())
        stopped = await _cancelled_as_woken(task, daemon.request_reconcile)
        await daemon.stop()
        return stopped

    with History(tmp_path / "history.db") as history:
        daemon = Daemon(Reconciler(repo.path, keys(age_key)), history, Settings(interval=3600))
        assert asyncio.run(main(daemon))


def test_the_parse_workers_run_below_the_daemons_cpu_priority() -> None:
    from loomgit.cli_serve import PARSE_NICE, parse_pool

    pool = parse_pool()
    ours = os.nice(0)
    # os.nice(0) run in each worker: its niceness, changed by nothing else.
    assert set(pool.map(os.nice, [0, 0])) == {min(19, ours + PARSE_NICE)}
    assert os.nice(0) == ours
    assert descendants(os.getpid()) == []
