"""The SQLite store: backfills, runs, step runs, status events, captured logs, dynamic partitions.

Storage is the single source of truth; everything in memory is a cache of it. One file in WAL
mode, shared safely by several processes (two kernels, a kernel and the CLI): every write is one
short `BEGIN IMMEDIATE` transaction, and waits for a lock instead of failing. Status changes
arrive in batches and are written in one transaction each.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import NbBackfillError

SCHEMA_VERSION = 1
HOME_ENV = "NB_BACKFILL_HOME"
DEFAULT_DIR = ".nb_backfill"
DB_NAME = "nb_backfill.db"

RUN_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "SUCCESS", "FAILURE", "CANCELING", "CANCELED")
RUN_DONE = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
RUN_IN_FLIGHT = frozenset({"STARTING", "STARTED", "CANCELING"})
BACKFILL_STATUSES = ("REQUESTED", "PAUSED", "CANCELING", "CANCELED", "COMPLETED_SUCCESS", "COMPLETED_FAILED")
BACKFILL_DONE = frozenset({"CANCELED", "COMPLETED_SUCCESS", "COMPLETED_FAILED"})
STEP_STATUSES = ("PENDING", "RUNNING", "SUCCESS", "FAILURE", "SKIPPED")
INTERRUPTED = "interrupted: the process running this backfill stopped before the run finished"

# Each entry upgrades the schema by one version; a new version appends, never edits.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE backfills (
            id TEXT PRIMARY KEY, job_name TEXT NOT NULL, status TEXT NOT NULL,
            created REAL NOT NULL, updated REAL NOT NULL, ended REAL,
            num_partitions INTEGER NOT NULL, options TEXT NOT NULL, tags TEXT NOT NULL,
            partitions_def TEXT NOT NULL, owner TEXT, heartbeat REAL)""",
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY, backfill_id TEXT, job_name TEXT NOT NULL, partition TEXT NOT NULL,
            seq INTEGER NOT NULL, status TEXT NOT NULL, attempt INTEGER NOT NULL,
            queued REAL NOT NULL, start_time REAL, end_time REAL, error TEXT, not_before REAL)""",
        "CREATE INDEX runs_by_backfill ON runs (backfill_id, seq)",
        "CREATE INDEX runs_by_partition ON runs (job_name, partition)",
        """CREATE TABLE steps (
            run_id TEXT NOT NULL, step TEXT NOT NULL, status TEXT NOT NULL, attempt INTEGER NOT NULL,
            start_time REAL, end_time REAL, error TEXT, PRIMARY KEY (run_id, step)) WITHOUT ROWID""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, step TEXT, status TEXT NOT NULL,
            attempt INTEGER NOT NULL, ts REAL NOT NULL, message TEXT)""",
        "CREATE INDEX events_by_run ON events (run_id)",
        "CREATE TABLE logs (id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, step TEXT, ts REAL NOT NULL, text TEXT NOT NULL)",
        "CREATE INDEX logs_by_run ON logs (run_id)",
        """CREATE TABLE dynamic_partitions (
            name TEXT NOT NULL, key TEXT NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (name, key))""",
    ),
)


class StorageError(NbBackfillError):
    """The store cannot be opened or is from a newer nb_backfill."""


@dataclass(frozen=True)
class Event:
    """One status change or log chunk of a run (or of one of its steps), as executors report it."""

    run_id: str
    status: str  # a run or step status, or "LOG"
    ts: float
    attempt: int = 1
    step: str | None = None
    message: str | None = None  # error text for FAILURE, the text for LOG


@dataclass(frozen=True)
class BackfillRecord:
    id: str
    job_name: str
    status: str
    created: float
    updated: float
    ended: float | None
    num_partitions: int
    options: dict[str, Any]
    tags: dict[str, str]
    partitions_def: str
    owner: str | None
    heartbeat: float | None


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    backfill_id: str | None
    job_name: str
    partition: str
    seq: int
    status: str
    attempt: int
    queued: float
    start_time: float | None
    end_time: float | None
    error: str | None
    not_before: float | None


def default_home() -> Path:
    """`$NB_BACKFILL_HOME`, else `.nb_backfill/` under the working directory."""
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / DEFAULT_DIR)


def process_token() -> str:
    """Who owns a running backfill: host, pid and process start time (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def _start_ticks(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def owner_alive(owner: str | None, heartbeat: float | None, stale_after: float = 30.0) -> bool:
    """Whether the process named by `owner` still runs its backfills."""
    if not owner:
        return False
    host, pid, ticks = owner.rsplit(":", 2)
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return ticks == "?" or _start_ticks(int(pid)) == ticks
    return heartbeat is not None and time.time() - heartbeat < stale_after


class Storage:
    """One SQLite file; a connection per thread; every write a short immediate transaction."""

    def __init__(self, home: str | os.PathLike[str] | None = None):
        self.home = Path(home) if home is not None else default_home()
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(f"cannot create the nb_backfill home {str(self.home)!r}: {error}") from None
        self.path = self.home / DB_NAME
        self._local = threading.local()
        self._migrate()

    # --- connections and transactions
    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing committed
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock at once (waiting for it, never failing fast)."""
        conn = self._connection()
        for attempt in range(50):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as error:  # busy beyond busy_timeout: very heavy contention
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
                time.sleep(0.05 * (attempt + 1))
        else:
            raise StorageError(f"the store {str(self.path)!r} stayed locked by another process")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._connection().execute(sql, params).fetchall()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _migrate(self) -> None:
        with self.transaction() as conn:
            has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
            version = 0
            if has_meta:
                row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"the store {str(self.path)!r} has schema version {version}, newer than this nb_backfill "
                    f"understands ({SCHEMA_VERSION}): upgrade nb_backfill"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @property
    def schema_version(self) -> int:
        return int(self.query("SELECT value FROM meta WHERE key='schema_version'")[0][0])

    # --- backfills and runs
    def create_backfill(self, record: BackfillRecord, runs: Iterable[tuple]) -> None:
        """Write a backfill and its QUEUED runs (run_id, partition, seq) in one transaction."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO backfills VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.id, record.job_name, record.status, record.created, record.updated, record.ended,
                    record.num_partitions, json.dumps(record.options), json.dumps(record.tags),
                    record.partitions_def, record.owner, record.heartbeat,
                ),
            )
            conn.executemany(
                "INSERT INTO runs (run_id, backfill_id, job_name, partition, seq, status, attempt, queued) "
                "VALUES (?, ?, ?, ?, ?, 'QUEUED', 1, ?)",
                ((run_id, record.id, record.job_name, partition, seq, record.created) for run_id, partition, seq in runs),
            )

    def get_backfill(self, backfill_id: str) -> BackfillRecord | None:
        rows = self.query("SELECT * FROM backfills WHERE id = ?", (backfill_id,))
        return _backfill(rows[0]) if rows else None

    def list_backfills(self, job_name: str | None = None) -> list[BackfillRecord]:
        if job_name is None:
            rows = self.query("SELECT * FROM backfills ORDER BY created DESC")
        else:
            rows = self.query("SELECT * FROM backfills WHERE job_name = ? ORDER BY created DESC", (job_name,))
        return [_backfill(r) for r in rows]

    def backfill_ids(self) -> list[str]:
        return [r[0] for r in self.query("SELECT id FROM backfills ORDER BY created DESC")]

    def set_backfill_status(self, backfill_id: str, status: str, *, only_from: Iterable[str] | None = None) -> bool:
        """Set a backfill's status (if it is in one of `only_from`); True if it changed."""
        now = time.time()
        ended = now if status in BACKFILL_DONE else None
        with self.transaction() as conn:
            sql = "UPDATE backfills SET status = ?, updated = ?, ended = ? WHERE id = ?"
            params: list[Any] = [status, now, ended, backfill_id]
            if only_from is not None:
                allowed = list(only_from)
                sql += f" AND status IN ({','.join('?' * len(allowed))})"
                params += allowed
            return conn.execute(sql, params).rowcount == 1

    def set_backfill_options(self, backfill_id: str, options: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE backfills SET options = ?, updated = ? WHERE id = ?", (json.dumps(options), time.time(), backfill_id)
            )

    def claim_backfill(self, backfill_id: str, owner: str, previous_owner: str | None) -> bool:
        """Take ownership if nobody changed it since we looked (two resumers: only one wins)."""
        with self.transaction() as conn:
            changed = conn.execute(
                "UPDATE backfills SET owner = ?, heartbeat = ?, updated = ? WHERE id = ? AND owner IS ?",
                (owner, time.time(), time.time(), backfill_id, previous_owner),
            ).rowcount
        return changed == 1

    def heartbeat(self, backfill_ids: Sequence[str], owner: str) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE backfills SET heartbeat = ? WHERE id = ? AND owner = ?",
                [(time.time(), b, owner) for b in backfill_ids],
            )

    def runs(self, backfill_id: str) -> list[RunRecord]:
        rows = self.query("SELECT * FROM runs WHERE backfill_id = ? ORDER BY seq", (backfill_id,))
        return [RunRecord(*r) for r in rows]

    def run_of(self, backfill_id: str, partition: str) -> RunRecord | None:
        rows = self.query("SELECT * FROM runs WHERE backfill_id = ? AND partition = ?", (backfill_id, partition))
        return RunRecord(*rows[0]) if rows else None

    def run_counts(self, backfill_id: str) -> dict[str, int]:
        rows = self.query("SELECT status, COUNT(*) FROM runs WHERE backfill_id = ? GROUP BY status", (backfill_id,))
        return dict(rows)

    def mark_interrupted(self, backfill_id: str) -> int:
        """Runs left in flight by a dead owner become FAILURE 'interrupted'; returns how many."""
        now = time.time()
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT run_id, attempt FROM runs WHERE backfill_id = ? AND status IN ('STARTING','STARTED','CANCELING')",
                (backfill_id,),
            ).fetchall()
            conn.executemany(
                "UPDATE runs SET status = 'FAILURE', end_time = ?, error = ? WHERE run_id = ?",
                [(now, INTERRUPTED, r) for r, _ in rows],
            )
            conn.executemany(
                "UPDATE steps SET status = 'FAILURE', end_time = ?, error = ? WHERE run_id = ? AND status = 'RUNNING'",
                [(now, INTERRUPTED, r) for r, _ in rows],
            )
            conn.executemany(
                "INSERT INTO events (run_id, step, status, attempt, ts, message) VALUES (?, NULL, 'FAILURE', ?, ?, ?)",
                [(r, a, now, INTERRUPTED) for r, a in rows],
            )
        return len(rows)

    def requeue(self, run_ids: Sequence[str], not_before: float | None = None) -> None:
        """Put finished runs back in the queue as their next attempt (retry, resume)."""
        now = time.time()
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE runs SET status = 'QUEUED', attempt = attempt + 1, queued = ?, start_time = NULL, "
                "end_time = NULL, error = NULL, not_before = ? WHERE run_id = ?",
                [(now, not_before, r) for r in run_ids],
            )
            conn.executemany(
                "INSERT INTO events (run_id, step, status, attempt, ts) "
                "SELECT run_id, NULL, 'QUEUED', attempt, ? FROM runs WHERE run_id = ?",
                [(now, r) for r in run_ids],
            )
            conn.executemany("DELETE FROM steps WHERE run_id = ?", [(r,) for r in run_ids])

    def write_batch(self, events: Sequence[Event], backfill_status: dict[str, str] | None = None) -> None:
        """Write a batch of events in one transaction: each run and step row ends in its latest state."""
        runs: dict[str, list[Any]] = {}
        steps: dict[tuple[str, str], list[Any]] = {}
        log_rows, event_rows = [], []
        for e in events:
            if e.status == "LOG":
                log_rows.append((e.run_id, e.step, e.ts, e.message))
                continue
            event_rows.append((e.run_id, e.step, e.status, e.attempt, e.ts, e.message))
            if e.step is None:
                row = runs.setdefault(e.run_id, [None, None, None, None, None])
                row[0], row[1] = e.status, e.attempt
                if e.status in ("STARTING", "STARTED") and row[2] is None:
                    row[2] = e.ts
                if e.status in RUN_DONE:
                    row[3], row[4] = e.ts, e.message
            else:
                row = steps.setdefault((e.run_id, e.step), [None, None, None, None, None])
                row[0], row[1] = e.status, e.attempt
                if e.status == "RUNNING" and row[2] is None:
                    row[2] = e.ts
                if e.status in ("SUCCESS", "FAILURE", "SKIPPED"):
                    row[3], row[4] = e.ts, e.message
        now = time.time()
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE runs SET status = ?, attempt = ?, start_time = COALESCE(?, start_time), "
                "end_time = ?, error = ? WHERE run_id = ?",
                [(s, a, st, et, err, r) for r, (s, a, st, et, err) in runs.items()],
            )
            conn.executemany(
                "INSERT INTO steps VALUES (?,?,?,?,?,?,?) ON CONFLICT (run_id, step) DO UPDATE SET "
                "status = excluded.status, attempt = excluded.attempt, "
                "start_time = COALESCE(excluded.start_time, steps.start_time), "
                "end_time = excluded.end_time, error = excluded.error",
                [(r, s, st, a, t0, t1, err) for (r, s), (st, a, t0, t1, err) in steps.items()],
            )
            conn.executemany("INSERT INTO events (run_id, step, status, attempt, ts, message) VALUES (?,?,?,?,?,?)", event_rows)
            conn.executemany("INSERT INTO logs (run_id, step, ts, text) VALUES (?,?,?,?)", log_rows)
            for backfill_id, status in (backfill_status or {}).items():
                conn.execute(
                    "UPDATE backfills SET status = ?, updated = ?, ended = ? WHERE id = ?",
                    (status, now, now if status in BACKFILL_DONE else None, backfill_id),
                )

    def cancel_runs(self, runs: Sequence[tuple[str, int]]) -> None:
        """Runs (run_id, attempt) that never started become CANCELED at once."""
        now = time.time()
        with self.transaction() as conn:
            conn.executemany("UPDATE runs SET status = 'CANCELED', end_time = ? WHERE run_id = ?", [(now, r) for r, _ in runs])
            conn.executemany(
                "INSERT INTO events (run_id, step, status, attempt, ts) VALUES (?, NULL, 'CANCELED', ?, ?)",
                [(r, a, now) for r, a in runs],
            )

    # --- steps, logs, events
    def step_rows(self, backfill_id: str) -> list[tuple]:
        """(run_id, step, status, start_time, end_time) of a backfill's steps, by a range scan of
        the steps' primary key: run ids begin with their backfill's id and '-'."""
        return self.query(
            "SELECT run_id, step, status, start_time, end_time FROM steps WHERE run_id > ? AND run_id < ?",
            (backfill_id + "-", backfill_id + "."),
        )

    def logs(self, run_id: str) -> list[tuple]:
        return self.query("SELECT step, ts, text FROM logs WHERE run_id = ? ORDER BY id", (run_id,))

    def events(self, run_id: str) -> list[tuple]:
        return self.query(
            "SELECT step, status, attempt, ts, message FROM events WHERE run_id = ? ORDER BY id", (run_id,)
        )

    def latest_runs(self, job_name: str) -> list[tuple]:
        """(partition, status) of every non-canceled run of a job, oldest first."""
        return self.query(
            "SELECT partition, status FROM runs WHERE job_name = ? AND status != 'CANCELED' ORDER BY rowid",
            (job_name,),
        )

    # --- dynamic partitions
    def dynamic_partitions(self, name: str) -> list[str]:
        return [r[0] for r in self.query("SELECT key FROM dynamic_partitions WHERE name = ? ORDER BY position", (name,))]

    def add_dynamic_partitions(self, name: str, keys: Sequence[str]) -> None:
        with self.transaction() as conn:
            start = conn.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM dynamic_partitions WHERE name = ?", (name,))
            position = start.fetchone()[0]
            conn.executemany(
                "INSERT OR IGNORE INTO dynamic_partitions VALUES (?,?,?)",
                [(name, key, position + i) for i, key in enumerate(keys)],
            )

    def delete_dynamic_partition(self, name: str, key: str) -> bool:
        with self.transaction() as conn:
            return conn.execute("DELETE FROM dynamic_partitions WHERE name = ? AND key = ?", (name, key)).rowcount == 1


def _backfill(row: tuple) -> BackfillRecord:
    values = list(row)
    values[7] = json.loads(values[7])
    values[8] = json.loads(values[8])
    return BackfillRecord(*values)


_STORES: dict[str, Storage] = {}
_STORES_LOCK = threading.Lock()


def get_instance(instance: Storage | str | os.PathLike[str] | None = None) -> Storage:
    """The store to use: an explicit one, a path to one, or the default (`$NB_BACKFILL_HOME` or ./.nb_backfill)."""
    if isinstance(instance, Storage):
        return instance
    home = os.path.abspath(instance if instance is not None else default_home())
    with _STORES_LOCK:
        if home not in _STORES:
            _STORES[home] = Storage(home)
        return _STORES[home]
