"""`executions --follow`'s reader over a history that changes between reads: what is new,
what has ended, and a long run that started before what a read covers."""

from __future__ import annotations

from dataclasses import replace

from loomgit.follow import MARGIN, Follower
from loomgit.records import Execution


class Store:
    """Executions by id; reads as the history and the API answer them."""

    def __init__(self) -> None:
        self.rows: dict[str, Execution] = {}
        self.asked: list[str] = []

    def put(self, ident: str, started: float, status: str = "running") -> None:
        self.rows[ident] = Execution(ident, "staging", "hello", "webhook", status, started)

    def end(self, ident: str, status: str = "succeeded") -> None:
        self.rows[ident] = replace(self.rows[ident], status=status, ended_at=1e9)

    def recent(self, since: float | None, limit: int) -> list[Execution]:
        rows = [ex for ex in self.rows.values() if since is None or ex.started_at >= since]
        return sorted(rows, key=lambda ex: (ex.started_at, ex.id), reverse=True)[:limit]

    def one(self, ident: str) -> Execution | None:
        self.asked.append(ident)
        return self.rows.get(ident)


def seen(follower: Follower, limit: int = 100) -> list[tuple[str, str]]:
    return [(ex.id, ex.status) for ex in follower.read(limit)[0]]


def test_each_execution_is_shown_as_it_starts_and_as_it_ends() -> None:
    store = Store()
    for n in range(5):
        store.put(f"old{n}", 100 + n, "succeeded")
    follower = Follower(store.recent, store.one)
    assert seen(follower, limit=2) == [("old3", "succeeded"), ("old4", "succeeded")]
    assert seen(follower) == []
    store.put("a", 110)
    store.put("b", 111, "succeeded")
    assert seen(follower) == [("a", "running"), ("b", "succeeded")]
    store.end("a", "failed")
    assert seen(follower) == [("a", "failed")]
    assert seen(follower) == [] and store.asked == []


def test_a_long_run_is_shown_when_it_ends_after_the_reads_moved_on() -> None:
    store = Store()
    store.put("long", 100)
    store.put("gone", 100.5)
    follower = Follower(store.recent, store.one)
    assert seen(follower) == [("long", "running"), ("gone", "running")]
    store.put("later", 100 + 2 * MARGIN, "succeeded")  # reads now start after "long"
    assert seen(follower) == [("later", "succeeded")]
    del store.rows["gone"]  # pruned meanwhile: no longer asked for
    store.end("long")
    assert seen(follower) == [("long", "succeeded")]
    assert seen(follower) == [] and sorted(store.asked) == ["gone", "long"]


def test_since_status_and_a_full_read() -> None:
    store = Store()
    store.put("before", 50, "failed")
    store.put("run", 100)
    follower = Follower(store.recent, store.one, since=60, status="running")
    assert seen(follower) == [("run", "running")]
    store.put("next", 100 + 2 * MARGIN)
    assert seen(follower) == [("next", "running")]
    store.end("run")  # ended as another status than --status: not shown, not asked again
    assert seen(follower) == []
    assert seen(follower) == [] and store.asked == ["run"]
    for n in range(3):
        store.put(f"burst{n}", 200 + 2 * MARGIN)
    assert follower.read(2)[1]  # as many as it reads: some may be left out
