"""The execution history: one SQLite database (WAL mode) per state folder. This module is
the only one that speaks SQL, so a server database can take its place later.

One row per execution and one per step; inputs and outputs are stored as JSON, truncated
to a configurable size. Writes from many executions at once are grouped into one commit
(`Writer`), so recording stays durable without one disk flush per execution.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from loomgit import jsontext, log
from loomgit.errors import LoomgitError, UsageError
from loomgit.records import FAILED, FINISHED, Execution, Query, StepRecord, Tally

# Finished executions of one environment started before a time: what pruning deletes.
_PRUNABLE = f"environment = ? AND status IN ({','.join('?' * len(FINISHED))}) AND started_at < ?"

DB_NAME = "history.db"
DEFAULT_MAX_FIELD_BYTES = 64 * 1024
BUSY_TIMEOUT_MS = 10_000
ID_LENGTH = 26  # an execution id's characters (see `records.new_id`)
MIN_PREFIX = 6  # the fewest of them that name an execution
# Executions deleted by one transaction of `prune`: about 10 ms of holding the database
# (measured: 8 µs an execution of three steps), and at least this pause after each.
PRUNE_BATCH = 500
PRUNE_PAUSE_LEAST = 0.002
# The daemon's own pruning (`Retention`): how often it looks for executions to delete,
# how many one batch deletes, and the share of the writer's time its batches take at most.
RETENTION_EVERY = 60.0
RETENTION_BATCH = 200
RETENTION_SHARE = 0.2

# Numbered migrations: each runs once, in order, in its own transaction.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        environment TEXT NOT NULL,
        workflow TEXT NOT NULL,
        version INTEGER,
        digest TEXT,
        trigger_type TEXT NOT NULL,
        trigger TEXT NOT NULL DEFAULT '{}',
        dedupe_key TEXT,
        status TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        duration_ms REAL,
        stopped_at TEXT,
        error TEXT,
        output TEXT
    );
    CREATE UNIQUE INDEX executions_dedupe
        ON executions (environment, workflow, dedupe_key) WHERE dedupe_key IS NOT NULL;
    CREATE INDEX executions_env_time ON executions (environment, started_at DESC, id DESC);
    CREATE INDEX executions_env_status_time
        ON executions (environment, status, started_at DESC, id DESC);
    CREATE INDEX executions_status_time ON executions (status, started_at DESC, id DESC);
    CREATE INDEX executions_workflow_time ON executions (workflow, started_at DESC, id DESC);
    CREATE INDEX executions_time ON executions (started_at DESC, id DESC);
    CREATE TABLE steps (
        execution_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        step_id TEXT NOT NULL,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at REAL,
        ended_at REAL,
        duration_ms REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        input TEXT,
        output TEXT,
        error TEXT,
        logs TEXT,
        PRIMARY KEY (execution_id, position)
    ) WITHOUT ROWID;
    """,
    """
    ALTER TABLE executions ADD COLUMN owner TEXT;
    """,
)


class HistoryError(LoomgitError):
    """The history database cannot be opened or written."""


def default_path() -> Path:
    """`$LOOMGIT_STATE_DIR/history.db`, else the user's state folder (XDG on Linux)."""
    folder = os.environ.get("LOOMGIT_STATE_DIR")
    if not folder:
        import platformdirs

        folder = platformdirs.user_state_dir("loomgit", appauthor=False)
    return Path(folder) / DB_NAME


def _dump(value: Any, limit: int) -> str | None:
    """JSON text of `value`; above `limit` bytes, a marked preview of it instead."""
    if value is None:
        return None
    text = jsontext.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    size = len(text.encode())
    if size <= limit:
        return text
    preview = text.encode()[: max(limit - 200, 0)].decode(errors="ignore")
    return json.dumps({"truncated": True, "bytes": size, "preview": preview}, ensure_ascii=False)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# The final state of an execution as the history stores it: its row's new values, and
# one row per step. Made where the execution ran, so the process that writes only binds.
FinishRows = tuple[tuple[Any, ...], list[tuple[Any, ...]]]


def finish_rows(ex: Execution, limit: int = DEFAULT_MAX_FIELD_BYTES) -> FinishRows:
    """What `History` writes for a finished execution (fields above `limit` bytes are
    stored as a preview)."""
    execution = (
        ex.status,
        ex.ended_at,
        ex.duration_ms,
        ex.stopped_at,
        ex.error,
        _dump(ex.output, limit),
        ex.id,
    )
    steps = [
        (
            ex.id,
            s.position,
            s.step_id,
            s.type,
            s.status,
            s.started_at,
            s.ended_at,
            s.duration_ms,
            s.attempts,
            _dump(s.input, limit),
            _dump(s.output, limit),
            s.error,
            _dump(list(s.logs), limit) if s.logs else None,
        )
        for s in ex.steps
    ]
    return execution, steps


class History:
    """The history database. Thread-safe: one connection guarded by a lock."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
        durable: bool = True,
    ) -> None:
        self.path = path or default_path()
        self.max_field_bytes = max_field_bytes
        self._lock = threading.RLock()
        try:
            # Executions hold what triggered them and what their steps answered (orders,
            # addresses…): only this user reads them. SQLite gives its -wal and -shm files
            # the database file's permissions.
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(FileExistsError):  # one made before: opened as it is
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10
            )
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode = WAL")
            # FULL: each commit is on disk before it returns (survives a power cut).
            self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise HistoryError(
                f"cannot open the execution history {self.path}: {exc}",
                hint="pass --state-dir to use another folder",
            ) from None
        except OSError as exc:
            what = (
                f"open the execution history {self.path}"
                if exc.filename == str(self.path)
                else f"create the state folder {self.path.parent}"
            )
            raise HistoryError(
                f"cannot {what}: {exc.strerror}",
                hint="pass --state-dir or set LOOMGIT_STATE_DIR to a writable folder",
            ) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                # A failed COMMIT (a full disk) may leave the transaction open, and every
                # later BEGIN would then fail: nothing of it is kept.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _migrate(self) -> None:
        with self._transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
        if done and max(done) > len(MIGRATIONS):
            raise HistoryError(
                f"{self.path} was written by a newer loomgit (schema {max(done)}, "
                f"this one knows {len(MIGRATIONS)})",
                hint="upgrade loomgit, or pass --state-dir to use another folder",
            )
        for number, script in enumerate(MIGRATIONS, start=1):
            if number in done:
                continue
            with self._transaction() as db:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (number, time.time()))

    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    # -- writing ----------------------------------------------------------------------

    def _insert(self, db: sqlite3.Connection, ex: Execution) -> None:
        db.execute(
            "INSERT INTO executions (id, environment, workflow, version, digest, trigger_type,"
            " trigger, dedupe_key, status, started_at, owner) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                ex.id,
                ex.environment,
                ex.workflow,
                ex.version,
                ex.digest,
                ex.trigger_type,
                _dump(ex.trigger, self.max_field_bytes) or "{}",
                ex.dedupe_key,
                ex.status,
                ex.started_at,
                ex.owner,
            ),
        )

    def _finish(self, db: sqlite3.Connection, rows: FinishRows, unfinished: bool = False) -> None:
        """Writes a finish; with `unfinished`, only if the execution has not ended yet."""
        execution, steps = rows
        changed = db.execute(
            "UPDATE executions SET status=?, ended_at=?, duration_ms=?, stopped_at=?, error=?,"
            " output=? WHERE id=?" + (" AND status IN ('queued', 'running')" if unfinished else ""),
            execution,
        ).rowcount
        if changed:
            db.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", steps)

    def start(self, ex: Execution) -> Execution:
        """Records a new execution (queued or running). With a `dedupe_key` already used
        by the same workflow in the same environment, returns that execution instead."""
        try:
            with self._transaction() as db:
                self._insert(db, ex)
        except sqlite3.IntegrityError:
            first = self._by_dedupe(ex)
            if first is None:
                raise HistoryError(f"execution id {ex.id} is already recorded") from None
            return first
        except sqlite3.OperationalError as exc:
            raise HistoryError(f"cannot write the execution history {self.path}: {exc}") from None
        return ex

    def finish(self, ex: Execution) -> None:
        """Stores the final status, output and steps of an execution started before."""
        try:
            with self._transaction() as db:
                self._finish(db, finish_rows(ex, self.max_field_bytes))
        except sqlite3.OperationalError as exc:
            raise HistoryError(f"cannot write the execution history {self.path}: {exc}") from None

    def apply(self, batch: Sequence[tuple[str, Any]]) -> list[Any]:
        """Runs many writes in one transaction (a group commit): "start" an `Execution`,
        "finish" an `Execution`, "rows" of a finish made by `finish_rows` (in a runner
        process), "interrupt" an `Execution` unless it has ended, "running" a list of
        queued execution ids.
        Returns each write's result: the stored execution for "start" and "finish", else
        None; a duplicate dedupe key fails only its own write."""
        results: list[Any] = []
        try:
            with self._transaction() as db:
                for op, item in batch:
                    if op == "start":
                        try:
                            self._insert(db, item)
                        except sqlite3.IntegrityError:  # only this statement is undone
                            item = self._by_dedupe(item) or HistoryError(f"{item.id} exists")
                    elif op == "finish":
                        self._finish(db, finish_rows(item, self.max_field_bytes))
                    elif op == "rows":
                        self._finish(db, item)
                        item = None
                    elif op == "interrupt":
                        self._finish(db, finish_rows(item, self.max_field_bytes), True)
                        item = None
                    else:
                        db.executemany(
                            "UPDATE executions SET status='running' WHERE id=? AND status='queued'",
                            [(ident,) for ident in item],
                        )
                        item = None
                    results.append(item)
        except sqlite3.OperationalError as exc:
            error = HistoryError(f"cannot write the execution history {self.path}: {exc}")
            return [error] * len(batch)
        return results

    def recover(self, gone: Callable[[str | None], bool], now: float | None = None) -> list[str]:
        """Records as interrupted the executions left queued or running by a process that
        has stopped (`gone(owner)`); returns their ids."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, owner FROM executions WHERE status IN ('queued', 'running')"
            ).fetchall()
        lost = [ident for ident, owner in rows if gone(owner)]
        if lost:
            error = "interrupted: the process running it stopped before it finished"
            with self._transaction() as db:
                db.executemany(
                    "UPDATE executions SET status='interrupted', ended_at=?,"
                    " duration_ms=(? - started_at) * 1000, error=? WHERE id=?",
                    [(now or time.time(), now or time.time(), error, i) for i in lost],
                )
        return lost

    def last_dedupe_key(
        self, environment: str, workflow: str, trigger_type: str, prefix: str
    ) -> str | None:
        """The greatest dedupe key starting with `prefix` among the executions of
        `workflow` in `environment` started by `trigger_type`: for a schedule's keys,
        whose times are written at a fixed width (`scheduler.dedupe_key`), the last time
        that fired.

        Read backwards along the unique dedupe index, so it takes the same few pages with
        a million executions of the workflow as with none (ordered by start time, it read
        every one of them: 0.3-0.5 s per million, per `catchup: latest` schedule, at
        each start)."""
        with self._lock:
            row = self._db.execute(
                "SELECT dedupe_key FROM executions WHERE environment=? AND workflow=?"
                " AND dedupe_key IS NOT NULL AND dedupe_key >= ? AND dedupe_key < ?"
                " AND trigger_type=? ORDER BY dedupe_key DESC LIMIT 1",
                (environment, workflow, prefix, prefix + "\U0010ffff", trigger_type),
            ).fetchone()
        return None if row is None else str(row[0])

    def prune(
        self,
        older_than: float | None = None,
        keep: int | None = None,
        now: float | None = None,
        *,
        batch: int = PRUNE_BATCH,
    ) -> int:
        """Deletes finished executions started more than `older_than` seconds ago, and all
        but the newest `keep` of each environment. Returns how many were deleted.

        They are deleted `batch` at a time, each batch its own short transaction, and
        after each one the database is left alone as long as the batch took: the
        daemon's writer, waiting for it, gets in between, so webhooks are not held up
        while a large history is pruned."""
        return sum(self.prune_each(older_than, keep, now, batch=batch).values())

    def prune_each(
        self,
        older_than: float | None = None,
        keep: int | None = None,
        now: float | None = None,
        *,
        batch: int = PRUNE_BATCH,
        dry_run: bool = False,
        environment: str | None = None,
    ) -> dict[str, int]:
        """`prune`, by environment (or of `environment` alone): how many executions of
        each were deleted (or, with `dry_run`, would be), leaving out environments that
        lose none."""
        deleted: dict[str, int] = {}
        cutoffs = self.prune_cutoffs(older_than, keep, now)
        if environment is not None:
            cutoffs = {environment: cutoffs[environment]} if environment in cutoffs else {}
        for name, before in cutoffs.items():
            if dry_run:
                count = self.prunable(name, before)
            else:
                count = 0
                while True:
                    began = time.monotonic()
                    done = self.prune_batch(name, before, batch)
                    count += done
                    if done < batch:
                        break
                    time.sleep(max(time.monotonic() - began, PRUNE_PAUSE_LEAST))
            if count:
                deleted[name] = count
        return deleted

    def prunable(self, environment: str, before: float) -> int:
        """How many finished executions of `environment` started before `before`."""
        try:
            with self._lock:
                row = self._db.execute(
                    f"SELECT count(*) FROM executions WHERE {_PRUNABLE}",
                    (environment, *FINISHED, before),
                ).fetchone()
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot read the execution history {self.path}: {exc}") from None
        return int(row[0])

    def prune_cutoffs(
        self, older_than: float | None, keep: int | None, now: float | None = None
    ) -> dict[str, float]:
        """For each environment, the time before which its finished executions are to
        be pruned (older than `older_than` seconds, or past its newest `keep`)."""
        if older_than is None and keep is None:
            return {}
        aged = -math.inf if older_than is None else (now or time.time()) - older_than
        try:
            return self._cutoffs(aged, keep)
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot read the execution history {self.path}: {exc}") from None

    def _cutoffs(self, aged: float, keep: int | None) -> dict[str, float]:
        cutoffs: dict[str, float] = {}
        with self._lock:
            environment = ""
            while True:  # each environment by a seek in the index, not a scan of it
                row = self._db.execute(
                    "SELECT min(environment) FROM executions WHERE environment > ?",
                    (environment,),
                ).fetchone()
                if row[0] is None:
                    return cutoffs
                environment, before = row[0], aged
                if keep == 0:
                    before = math.inf
                elif keep is not None:  # started before the keep-th newest
                    kept = self._db.execute(
                        "SELECT started_at FROM executions WHERE environment = ?"
                        " ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET ?",
                        (environment, keep - 1),
                    ).fetchone()
                    if kept is not None:
                        before = max(before, kept[0])
                if before > -math.inf:
                    cutoffs[environment] = before

    def prune_batch(self, environment: str, before: float, batch: int) -> int:
        """Deletes up to `batch` finished executions of `environment` started before
        `before`, in one transaction; returns how many."""
        try:
            with self._transaction() as db:
                ids = db.execute(
                    f"SELECT id FROM executions WHERE {_PRUNABLE} LIMIT ?",
                    (environment, *FINISHED, before, batch),
                ).fetchall()
                db.executemany("DELETE FROM steps WHERE execution_id = ?", ids)
                db.executemany("DELETE FROM executions WHERE id = ?", ids)
        except sqlite3.Error as exc:
            raise HistoryError(f"cannot write the execution history {self.path}: {exc}") from None
        return len(ids)

    # -- reading ----------------------------------------------------------------------

    _COLUMNS = (
        "id, environment, workflow, trigger_type, status, started_at, version, digest,"
        " trigger, dedupe_key, ended_at, stopped_at, error, output"
    )

    def _row(self, row: Sequence[Any], steps: tuple[StepRecord, ...] = ()) -> Execution:
        return Execution(
            id=row[0],
            environment=row[1],
            workflow=row[2],
            trigger_type=row[3],
            status=row[4],
            started_at=row[5],
            version=row[6],
            digest=row[7],
            trigger=_load(row[8]) or {},
            dedupe_key=row[9],
            ended_at=row[10],
            stopped_at=row[11],
            error=row[12],
            output=_load(row[13]),
            steps=steps,
        )

    def _by_dedupe(self, ex: Execution) -> Execution | None:
        assert ex.dedupe_key is not None
        return self.with_key(ex.environment, ex.workflow, ex.dedupe_key)

    def with_key(self, environment: str, workflow: str, key: str) -> Execution | None:
        """The execution of `workflow` in `environment` recorded with dedupe key `key`."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._COLUMNS} FROM executions"
                " WHERE environment=? AND workflow=? AND dedupe_key=?",
                (environment, workflow, key),
            ).fetchone()
        return None if row is None else self._row(row)

    def query(self, q: Query) -> list[Execution]:
        """Executions matching `q`, newest first (without their steps)."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("environment", q.environment),
            ("workflow", q.workflow),
            ("status", q.status),
            ("version", q.version),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if q.since is not None:
            clauses.append("started_at >= ?")
            params.append(q.since)
        with self._lock:
            if q.before is not None:  # the next page: those listed after that execution
                clauses.append("(started_at, id) < (?, ?)")
                params += self._position(q.before)
            where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
            sql = (
                f"SELECT {self._COLUMNS} FROM executions {where}"
                " ORDER BY started_at DESC, id DESC LIMIT ?"
            )
            rows = self._db.execute(sql, (*params, q.limit)).fetchall()
        return [self._row(r) for r in rows]

    def tally(
        self,
        since: float,
        environment: str | None = None,
        workflow: str | None = None,
        version: int | None = None,
    ) -> list[Tally]:
        """The executions started since `since` (of `version` only, when given),
        counted by environment, workflow and version (sorted so), with their durations'
        p50 and p95 and their three most frequent errors. Read on a connection of its own,
        outside the lock: a long window does not hold up what the daemon records meanwhile
        (WAL readers do not wait)."""
        clauses: list[str] = ["started_at >= ?"]
        params: list[Any] = [since]
        for column, value in (
            ("environment", environment),
            ("workflow", workflow),
            ("version", version),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = " AND ".join(clauses)
        group = "environment, workflow, version"
        failed = f"status IN ({','.join('?' * len(FAILED))})"
        db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            db.execute("BEGIN")  # the three queries read one snapshot, whatever is recorded
            counted = db.execute(
                f"SELECT {group}, status, COUNT(*), MAX(started_at) FROM executions"
                f" WHERE {where} GROUP BY {group}, status",
                params,
            ).fetchall()
            # Nearest rank: the shortest duration with at least p of them at or under it.
            took = db.execute(
                f"SELECT {group}, MIN(CASE WHEN c >= 0.5 THEN duration_ms END),"
                " MIN(CASE WHEN c >= 0.95 THEN duration_ms END) FROM ("
                f" SELECT {group}, duration_ms,"
                f" CUME_DIST() OVER (PARTITION BY {group} ORDER BY duration_ms) AS c"
                f" FROM executions WHERE {where} AND duration_ms IS NOT NULL) GROUP BY {group}",
                params,
            ).fetchall()
            db.create_function("error_shape", 1, error_shape, deterministic=True)
            errors = db.execute(
                f"SELECT {group}, shape, seen, texts, one FROM (SELECT {group},"
                " error_shape(error) AS shape, COUNT(*) AS seen, COUNT(DISTINCT error) AS texts,"
                " MIN(error) AS one, ROW_NUMBER() OVER (PARTITION BY"
                f" {group} ORDER BY COUNT(*) DESC, error_shape(error)) AS r FROM executions"
                f" WHERE {where} AND {failed} AND error IS NOT NULL GROUP BY {group}, shape)"
                f" WHERE r <= 3 ORDER BY {group}, r",
                (*params, *FAILED),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"cannot read the execution history {self.path}: {exc}") from None
        finally:
            db.close()
        counts: dict[tuple[Any, ...], dict[str, int]] = {}
        last: dict[tuple[Any, ...], float] = {}
        for env, wf, version, status, seen, newest in counted:
            key = (env, wf, version)
            counts.setdefault(key, {})[status] = seen
            last[key] = max(last.get(key, newest), newest)
        durations = {(env, wf, version): (p50, p95) for env, wf, version, p50, p95 in took}
        frequent: dict[tuple[Any, ...], list[tuple[str, int]]] = {}
        for env, wf, version, shape, seen, texts, one in errors:
            frequent.setdefault((env, wf, version), []).append((one if texts == 1 else shape, seen))
        return [
            Tally(
                environment=key[0],
                workflow=key[1],
                version=key[2],
                counts=counts[key],
                last_started=last[key],
                p50_ms=durations.get(key, (None, None))[0],
                p95_ms=durations.get(key, (None, None))[1],
                errors=tuple(frequent.get(key, ())),
            )
            for key in sorted(counts, key=lambda k: (k[0], k[1], -(k[2] or 0)))
        ]

    def recorded(self, column: Literal["environment", "workflow"]) -> list[str]:
        """Every environment (or workflow) the history holds executions of, sorted: a
        skip scan of that column's index, one lookup per value, not one per row."""
        sql = (
            f"WITH RECURSIVE seen(v) AS (SELECT MIN({column}) FROM executions UNION ALL"
            f" SELECT (SELECT MIN({column}) FROM executions WHERE {column} > v)"
            " FROM seen WHERE v IS NOT NULL) SELECT v FROM seen WHERE v IS NOT NULL"
        )
        with self._lock:
            return [row[0] for row in self._db.execute(sql)]

    def versions(self, workflow: str, environment: str | None = None) -> list[int]:
        """The versions of `workflow` the history holds executions of (in `environment`),
        newest first. It reads each of the workflow's executions: asked only when a
        listing by version found none."""
        where = "workflow = ? AND version IS NOT NULL"
        params: list[Any] = [workflow]
        if environment is not None:
            where += " AND environment = ?"
            params.append(environment)
        sql = f"SELECT DISTINCT version FROM executions WHERE {where} ORDER BY version DESC"
        with self._lock:
            return [row[0] for row in self._db.execute(sql, params)]

    def _position(self, ident: str) -> list[Any]:
        """Where an execution is in the listing, `[started_at, id]`, by its id or a
        unique prefix of at least 6 characters, as `get` takes it."""
        row = self._matching(
            ident,
            "started_at, id",
            UsageError(
                f"no execution {ident} to list the ones after it; it may have been pruned",
                hint="list again from the newest, without it",
            ),
        )
        return [float(row[0]), row[1]]

    def _matching(self, ident: str, columns: str, missing: UsageError) -> Any:
        """`columns` of the one execution whose id is or starts with `ident` (at least 6
        characters); `missing` when there is none. Called under the lock."""
        if not MIN_PREFIX <= len(ident) <= ID_LENGTH or not ident.isalnum():
            raise _not_an_id(ident)
        rows = self._db.execute(
            f"SELECT {columns} FROM executions WHERE id >= ? AND id < ? LIMIT 2",
            (ident.upper(), ident.upper() + "\x7f"),
        ).fetchall()
        if not rows:
            raise missing
        if len(rows) > 1:
            raise UsageError(f"'{ident}' matches several executions; give more of the id")
        return rows[0]

    def get(self, ident: str) -> Execution:
        """One execution with its steps, by id or a unique prefix of at least 6 characters."""
        with self._lock:
            # Where it looked is a hint, shown by the CLI; the HTTP API, which any
            # client can ask, answers with the message alone.
            missing = UsageError(f"no execution {ident}", hint=f"looked in {self.path}")
            row = self._matching(ident, self._COLUMNS, missing)
            steps = self._db.execute(
                "SELECT position, step_id, type, status, started_at, ended_at, attempts, input,"
                " output, error, logs FROM steps WHERE execution_id=? ORDER BY position",
                (row[0],),
            ).fetchall()
        return self._row(
            row,
            tuple(
                StepRecord(
                    position=s[0],
                    step_id=s[1],
                    type=s[2],
                    status=s[3],
                    started_at=s[4],
                    ended_at=s[5],
                    attempts=s[6],
                    input=_load(s[7]),
                    output=_load(s[8]),
                    error=s[9],
                    logs=tuple(_load(s[10]) or ()),
                )
                for s in steps
            ),
        )


def _not_an_id(text: str) -> UsageError:
    if text.isalnum() and len(text) < MIN_PREFIX:
        return UsageError(
            f"'{text}' is too short to name an execution: give at least {MIN_PREFIX}"
            f" characters of its id"
        )
    shown = text if len(text) <= ID_LENGTH else text[:ID_LENGTH] + "…"
    return UsageError(
        f"'{shown}' is not an execution id",
        hint=f"ids are {ID_LENGTH} letters and digits; the first {MIN_PREFIX} or more will do",
    )


class Retention:
    """The daemon's own pruning (`serve --prune-older-than`, `--prune-keep`), done by the
    history's one writer between its other work, so it never waits for the database nor
    holds it for long: every `every` seconds it finds each environment's cutoff, then
    deletes `batch` executions at a time, each batch no sooner after the one before than
    keeps it to RETENTION_SHARE of the writer's time. The writer calls `step` after
    each turn of its own, and waits for work no longer than `wait()`."""

    def __init__(
        self,
        history: History,
        older_than: float | None,
        keep: int | None,
        *,
        every: float = RETENTION_EVERY,
        batch: int = RETENTION_BATCH,
        clock: Callable[[], float] = time.monotonic,
        deleted: Callable[[str, int], None] = lambda environment, count: None,
    ) -> None:
        self.history = history
        self.older_than, self.keep = older_than, keep
        self.every, self.batch, self.clock = every, batch, clock
        self.deleted = deleted  # told of each batch: (environment, executions deleted)
        self.due = clock()  # the first look at once
        self._pending: list[tuple[str, float]] = []  # (environment, cutoff) still to do
        self._deleted = 0

    @classmethod
    def wanted(
        cls,
        history: History,
        older_than: float | None,
        keep: int | None,
        deleted: Callable[[str, int], None] = lambda environment, count: None,
    ) -> Retention | None:
        """The retention of `history` the options ask for; None when they ask for none."""
        if older_than is None and keep is None:
            return None
        return cls(history, older_than, keep, deleted=deleted)

    def wait(self) -> float:
        """Seconds until `step` has something to do."""
        return max(self.due - self.clock(), 0.0)

    def step(self) -> None:
        """One batch, or one look for what to delete, if it is due."""
        began = self.clock()
        if began < self.due:
            return
        try:
            if not self._pending:
                self._pending = list(self.history.prune_cutoffs(self.older_than, self.keep).items())
            if self._pending:
                environment, before = self._pending[0]
                count = self.history.prune_batch(environment, before, self.batch)
                self._deleted += count
                if count:
                    self.deleted(environment, count)
                if count < self.batch:
                    self._pending.pop(0)
        except HistoryError as exc:
            log.event("executions not pruned", logging.ERROR, error=str(exc), retry_in=self.every)
            self._pending.clear()
            self.due = began + self.every
            return
        ended = self.clock()
        if self._pending:
            self.due = ended + (ended - began) * (1 / RETENTION_SHARE - 1)
            return
        if self._deleted:
            log.event("executions pruned", deleted=self._deleted)
        self._deleted = 0
        self.due = began + self.every


# What varies from one execution's error to the next: times, and in a word of letters,
# digits, `_` and `-`, a number of four digits or more, or an id's mix of both.
_STAMP = re.compile(r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?(?:Z|[+-]\d\d:?\d\d)?)?")
_WORD = re.compile(r"[A-Za-z0-9_-]*\d[A-Za-z0-9_-]*")
_TURN = re.compile(r"(?<=\d)(?=\D)|(?<=\D)(?=\d)")


def error_shape(error: str) -> str:
    """`error` with what varies from one execution to the next as `…`: the summary counts
    errors that differ only there as one (`POST …/orders/… answered 503` for each order).
    A time; a number of 4 digits or more; a word that turns from digits to other
    characters 3 times or more (`req_8fJ3kQ`, a UUID, a commit). Words such as
    `call-api-2` or `v2`, and an HTTP status, stay."""
    # A failing step mostly fails alike many times over: short texts are remembered.
    return _short_shape(error) if len(error) <= 1000 else _shape(error)


def _shape(error: str) -> str:
    text = _STAMP.sub("…", error)
    return _WORD.sub(lambda m: "…" if _varies(m[0]) else m[0], text)


_short_shape = functools.lru_cache(maxsize=1024)(_shape)


def _varies(word: str) -> bool:
    if word.lstrip("-").isdigit():
        return len(word.lstrip("-")) >= 4
    return len(_TURN.findall(word)) >= 3
