"""The history store: migrations, dedupe keys, group commits, retention, queries."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import stat
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loomgit.history import MIGRATIONS, History, HistoryError, Retention, finish_rows
from loomgit.recorder import AsyncRecorder
from loomgit.records import Execution, Query, StepRecord, from_json, iso, new_id, unix


def execution(env: str = "staging", started: float | None = None, **kw: object) -> Execution:
    now = time.time() if started is None else started
    fields: dict[str, object] = {
        "id": new_id(now),
        "environment": env,
        "workflow": "order-sync",
        "trigger_type": "webhook",
        "status": "running",
        "started_at": now,
    }
    fields.update(kw)
    return Execution(**fields)  # type: ignore[arg-type]


def test_times_read_back_from_the_api_are_the_times_it_gave() -> None:
    """The API's times are to the nearest millisecond, and `executions --server` reads
    them back as the same times, not a millisecond earlier."""
    for i in range(3000):
        at = 1763800000 + i / 1000
        assert iso(at) == iso(unix(iso(at))) == f"2025-11-22T08:26:{40 + i // 1000}.{i % 1000:03d}Z"
    assert iso(1763800000.9996) == "2025-11-22T08:26:41.000Z"
    ended = execution(started=1763800000.008, status="succeeded", ended_at=1763800000.011)
    assert from_json(ended.to_json()).to_json() == ended.to_json()


def test_migrations_run_once_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    with History(path) as h:
        assert h.schema_version() == len(MIGRATIONS)
        h.start(execution())
    with History(path) as h:  # reopening applies nothing again and keeps the data
        assert len(h.query(Query())) == 1
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations VALUES (99, 0)")
    db.commit()
    db.close()
    with pytest.raises(HistoryError, match="written by a newer loomgit"):
        History(path)


def test_wal_mode(tmp_path: Path) -> None:
    with History(tmp_path / "h.db"):
        pass
    mode = sqlite3.connect(tmp_path / "h.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_only_its_user_can_read_a_new_history(tmp_path: Path) -> None:
    """Executions hold webhook bodies and step answers; a world-readable file (0644, as
    SQLite creates it under the usual umask) showed them to every user of the host."""
    path = tmp_path / "state" / "history.db"
    with History(path) as h:
        h.start(execution())
        # the -wal and -shm files exist while the connection is open
        for made in (path, path.with_name("history.db-wal"), path.with_name("history.db-shm")):
            assert stat.S_IMODE(made.stat().st_mode) == 0o600, made
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(HistoryError, match=r"cannot open the execution history .*folder\.db"):
        History(tmp_path / "folder.db")


def test_a_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HistoryError, match="cannot open the execution history"):
        History(path)


def test_a_dedupe_key_returns_the_first_execution(tmp_path: Path) -> None:
    with History(tmp_path / "h.db") as h:
        first = h.start(execution(dedupe_key="delivery-1"))
        again = h.start(execution(dedupe_key="delivery-1"))
        other_env = h.start(execution("production", dedupe_key="delivery-1"))
        assert again.id == first.id
        assert other_env.id != first.id
        results = h.apply([("start", execution(dedupe_key="delivery-1")), ("start", execution())])
        assert isinstance(results[0], Execution) and results[0].id == first.id
        assert len(h.query(Query())) == 3


def test_the_writes_of_runner_processes(tmp_path: Path) -> None:
    """Queued, then running, then the rows a runner made; an interruption never
    overwrites an execution that has ended."""
    with History(tmp_path / "h.db") as h:
        queued = [execution(status="queued") for _ in range(3)]
        h.apply([("start", ex) for ex in queued])
        h.apply([("running", [queued[0].id, queued[1].id])])
        assert [h.get(ex.id).status for ex in queued] == ["running", "running", "queued"]
        step = StepRecord(0, "greet", "set", "succeeded", 1.0, 2.0, 1, {"a": 1}, {"b": 2})
        done = replace(queued[0], status="succeeded", ended_at=time.time(), steps=(step,))
        late = replace(queued[0], status="interrupted", ended_at=time.time(), error="late")
        cut = replace(queued[1], status="interrupted", ended_at=time.time(), error="runner died")
        h.apply([("rows", finish_rows(done)), ("interrupt", late), ("interrupt", cut)])
        first, second = h.get(queued[0].id), h.get(queued[1].id)
        assert first.status == "succeeded" and first.error is None
        assert first.steps[0].output == {"b": 2}
        assert second.status == "interrupted" and second.error == "runner died"
        h.apply([("running", [queued[0].id])])  # too late: it has ended
        assert h.get(queued[0].id).status == "succeeded"


def test_group_commit_records_concurrent_executions(tmp_path: Path) -> None:
    with History(tmp_path / "h.db") as h:
        recorder = AsyncRecorder(h)

        async def one(i: int) -> None:
            ex = await recorder.start(execution(workflow=f"wf{i % 5}"))
            await recorder.finish(replace(ex, status="succeeded", ended_at=time.time()))

        async def many() -> None:
            await asyncio.gather(*(one(i) for i in range(500)))

        asyncio.run(many())
        recorder.close()
        found = h.query(Query(status="succeeded", limit=1000))
        assert len(found) == 500


def test_prune_keeps_running_executions(tmp_path: Path) -> None:
    old = time.time() - 90 * 86400
    with History(tmp_path / "h.db") as h:
        running = h.start(execution(started=old))
        done = h.start(execution(started=old + 1))
        h.finish(replace(done, status="failed", ended_at=old + 2))
        assert h.prune(older_than=30 * 86400) == 1
        assert [e.id for e in h.query(Query())] == [running.id]


def test_prune_deletes_in_short_transactions_and_keeps_each_environments_newest(
    tmp_path: Path,
) -> None:
    base, sides = time.time() - 3600, ("staging", "production")
    with History(tmp_path / "h.db") as h:
        for i in range(30):
            env = sides[i % 2]
            started = h.start(execution(env, started=base + i, status="queued"))
            step = StepRecord(0, "a", "set", "succeeded")
            h.finish(replace(started, status="succeeded", ended_at=base + i, steps=(step,)))
        h.start(execution("production", started=base - 1))  # still running: never deleted
        commits: list[str] = []
        h._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        # Each environment's 5 newest are kept; of the other 10 a side, 4 per transaction.
        assert h.prune(keep=5, batch=4) == 20
        h._db.set_trace_callback(None)
        assert len(commits) == 6  # 4 + 4 + 2 in each environment
        for env in sides:
            kept = [e.started_at for e in h.query(Query(environment=env, status="succeeded"))]
            newest = [base + i for i in range(29, 19, -1) if sides[i % 2] == env]
            assert kept == newest
        assert h.query(Query(status="running"))
        orphans = h._db.execute(
            "SELECT count(*) FROM steps WHERE execution_id NOT IN (SELECT id FROM executions)"
        ).fetchone()[0]
        assert orphans == 0
        # Started before base + 24.5 (staging 21, 23; production 20, 22, 24) or past the
        # newest 4 (staging 21, production 20): either is enough.
        assert h.prune(older_than=3600 - 24.5, keep=4, now=base + 3600) == 5
        assert h.prune(keep=0) == 5
        assert [e.status for e in h.query(Query())] == ["running"]


def test_retention_prunes_a_batch_at_a_time_within_its_share_of_the_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loomgit")
    old = time.time() - 90 * 86400
    ticks = iter(range(0, 10_000, 10))  # each look at the clock: 10 s later

    def events() -> list[tuple[str, dict[str, Any]]]:
        return [(r.getMessage(), r.__dict__.get("fields", {})) for r in caplog.records]

    with History(tmp_path / "h.db") as h:
        for i in range(5):
            h.start(execution("production", started=old + i, status="succeeded"))
        told: list[tuple[str, int]] = []
        retention = Retention(
            h, 30 * 86400, None, every=60, batch=2, clock=lambda: next(ticks),
            deleted=lambda env, count: told.append((env, count)),
        )  # fmt: skip
        assert retention.due == 0  # the first look at once
        retention.step()  # began at 10, ended at 20: the next batch at 20 + 4 * 10
        assert len(h.query(Query())) == 3 and retention.due == 60
        retention.step()  # at 30: not yet
        assert len(h.query(Query())) == 3
        retention.step()  # at 40: not yet
        retention.step()  # at 50: not yet
        retention.step()  # at 60: the next batch
        assert len(h.query(Query())) == 1 and retention.due == 70 + 40
        assert events() == []
        for _ in range(4):
            retention.step()  # the last, short batch ends the pass (began at 110)
        assert h.query(Query()) == []
        assert events() == [("executions pruned", {"deleted": 5})]
        assert told == [("production", 2), ("production", 2), ("production", 1)]  # each batch
        assert retention.due == 110 + 60
        # What cannot be deleted is logged, and tried again at the next look.
        h.start(execution("production", started=old, status="succeeded"))
        h._db.execute("PRAGMA query_only = ON")
        retention.due = 0
        retention.step()
        assert events()[-1][0] == "executions not pruned" and len(h.query(Query())) == 1
        h._db.execute("PRAGMA query_only = OFF")
        retention.due = 0
        retention.step()
        assert h.query(Query()) == []
        # Nor does a history it cannot read stop the writer that prunes.
        h._db.execute("ALTER TABLE executions RENAME TO gone")
        retention.due = 0
        retention.step()
        assert "cannot read" in events()[-1][1]["error"]


def test_query_uses_the_environment_status_index(tmp_path: Path) -> None:
    with History(tmp_path / "h.db") as h:
        plan = h._db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM executions WHERE environment=? AND status=?"
            " ORDER BY started_at DESC, id DESC LIMIT 50",
            ("production", "failed"),
        ).fetchall()
    assert "executions_env_status_time" in str(plan)


def test_the_last_scheduled_time_is_read_along_the_dedupe_index(tmp_path: Path) -> None:
    """The latest time fired, even when an older one (a catch-up) started after it, and
    not another trigger's keys; read along the dedupe index (its query plan), so the
    workflow's other executions are not walked (bench_daemon.py --only prune times it)."""
    with History(tmp_path / "h.db") as h:
        at = time.time()
        for key, started in (
            ("schedule:2026-11-23T09:00:00Z", at),
            ("schedule:2026-11-22T09:00:00Z", at + 1),  # caught up later
        ):
            h.start(execution("production", started, trigger_type="schedule", dedupe_key=key))
        h.start(execution("production", at + 2, dedupe_key="key:schedule:2026-12-01T00:00:00Z"))
        h.start(execution("production", at + 3, dedupe_key="schedule:2026-12-31T00:00:00Z"))
        h.start(execution("staging", at + 4, trigger_type="schedule", dedupe_key="schedule:3"))
        statements: list[str] = []
        h._db.set_trace_callback(statements.append)
        last = h.last_dedupe_key("production", "order-sync", "schedule", "schedule:")
        h._db.set_trace_callback(None)
        assert last == "schedule:2026-11-23T09:00:00Z"
        assert h.last_dedupe_key("development", "order-sync", "schedule", "schedule:") is None
        plan = h._db.execute("EXPLAIN QUERY PLAN " + statements[0]).fetchall()
    assert "executions_dedupe" in str(plan) and "TEMP B-TREE" not in str(plan)
