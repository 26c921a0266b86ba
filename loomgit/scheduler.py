"""The schedule timer: one for every schedule of every served environment.

Each schedule of an active workflow fires in its environment at the instants `cron`
computes (see its daylight-saving rule). The scheduled instant is the execution's dedupe
key, unique per (environment, workflow) in the history store, so a restarted or a second
daemon cannot fire the same time twice. After downtime nothing is made up, unless the
trigger says `catchup: latest`: then the latest missed time fires once at start-up.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loomgit import cron, eventloop
from loomgit.models.workflow import ScheduleTrigger

DEDUPE_PREFIX = "schedule:"
IDLE_WAIT = 3600.0
NEXT_MEMO = 10_000  # next fire times remembered, (cron, zone, from) -> next

Key = tuple[str, str, str, str]  # environment, workflow, cron, time zone


def dedupe_key(at: datetime) -> str:
    return DEDUPE_PREFIX + at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_dedupe_key(key: str) -> datetime | None:
    if not key.startswith(DEDUPE_PREFIX):
        return None
    try:
        return datetime.strptime(key[len(DEDUPE_PREFIX) :], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=UTC
        )
    except ValueError:
        return None


@dataclass
class Entry:
    key: Key
    trigger: ScheduleTrigger
    schedule: cron.Schedule
    due: datetime
    generation: int

    @property
    def environment(self) -> str:
        return self.key[0]

    @property
    def workflow(self) -> str:
        return self.key[1]


Fire = Callable[[Entry, datetime], Coroutine[Any, Any, None]]


class Scheduler:
    """Keeps the due times of all schedules in one heap and fires them from one task."""

    def __init__(self, fire: Fire, clock: Callable[[], float] = time.time) -> None:
        self._fire = fire
        self._clock = clock
        self._entries: dict[Key, Entry] = {}
        self._heap: list[tuple[float, int, Key, int]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._firing: set[asyncio.Task[None]] = set()
        self._schedules: dict[tuple[str, str], cron.Schedule] = {}
        self._nexts: dict[tuple[str, str, datetime], datetime] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def update(self, environment: str, schedules: list[tuple[str, ScheduleTrigger]]) -> list[Entry]:
        """Sets the schedules of one environment (workflow, trigger), keeping the due time
        of those that did not change. Returns the new entries."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        wanted: dict[Key, ScheduleTrigger] = {}
        for workflow, trigger in schedules:
            wanted[(environment, workflow, trigger.cron, trigger.timezone)] = trigger
        for key in [k for k in self._entries if k[0] == environment and k not in wanted]:
            del self._entries[key]  # its heap item is skipped when it comes up
        added = []
        for key, trigger in wanted.items():
            entry = self._entries.get(key)
            if entry is not None:
                entry.trigger = trigger  # overlap and catchup may change in place
                continue
            schedule = self._schedule(trigger.cron, trigger.timezone)
            due = self._next(schedule, now)
            entry = Entry(key, trigger, schedule, due, next(self._seq))
            self._entries[key] = entry
            self._push(entry)
            added.append(entry)
        self._wake.set()
        return added

    def _schedule(self, expr: str, timezone: str) -> cron.Schedule:
        """One Schedule per (cron, time zone), shared by the entries that use it."""
        found = self._schedules.get((expr, timezone))
        if found is None:
            found = self._schedules[(expr, timezone)] = cron.Schedule(expr, timezone)
        return found

    def _next(self, schedule: cron.Schedule, after: datetime) -> datetime:
        """`schedule.next_after(after)`, computed once for all entries sharing both: many
        workflows use the same expression, and croniter takes a tenth of a millisecond."""
        key = (schedule.expr, schedule.zone.key, after)
        found = self._nexts.get(key)
        if found is None:
            if len(self._nexts) > NEXT_MEMO:
                self._nexts.clear()
            found = self._nexts[key] = schedule.next_after(after)
        return found

    def fire_now(self, entry: Entry, at: datetime) -> None:
        """Fires `entry` for the past instant `at` (a catch-up), in the background."""
        task = asyncio.create_task(self._fire(entry, at))
        self._firing.add(task)
        task.add_done_callback(self._firing.discard)

    def _push(self, entry: Entry) -> None:
        item = (entry.due.timestamp(), next(self._seq), entry.key, entry.generation)
        heapq.heappush(self._heap, item)

    async def run(self) -> None:
        """Fires every due schedule, forever; cancel to stop."""
        while True:
            now = self._clock()
            due: list[tuple[Entry, datetime]] = []
            while self._heap and self._heap[0][0] <= now:
                _, _, key, generation = heapq.heappop(self._heap)
                entry = self._entries.get(key)
                if entry is None or entry.generation != generation:
                    continue
                due.append((entry, entry.due))
            for entry, at in due:  # start them all before computing the next times
                self.fire_now(entry, at)
            if due:
                await asyncio.sleep(0)  # let them record their executions first
            current = datetime.fromtimestamp(now, UTC)
            for entry, at in due:
                # After a stall, the next time is computed from now: no burst of missed runs.
                entry.due = self._next(entry.schedule, max(at, current))
                entry.generation = next(self._seq)
                self._push(entry)
            self._wake.clear()
            delay = self._heap[0][0] - self._clock() if self._heap else IDLE_WAIT
            if delay > 0:
                await eventloop.wait_event(self._wake, min(delay, IDLE_WAIT))

    async def close(self, timeout: float) -> int:
        """Waits up to `timeout` for schedules that are firing to record their executions;
        cancels the rest (an execution recorded meanwhile but never started is recorded
        as interrupted by the next start). Returns how many were cancelled."""
        if not self._firing:
            return 0
        _, pending = await asyncio.wait(set(self._firing), timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)
