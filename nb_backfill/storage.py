"""The SQLite store: backfills, runs, steps, the change feed, captured logs, commands, dynamic partitions.

Storage is the single source of truth and the only module with SQL. One file in WAL mode, shared by
several processes (kernels, terminals); every write is one short `BEGIN IMMEDIATE` transaction.
Every status change is checked against `statuses` inside the transaction that writes it (a change
the lifecycle does not allow is dropped, whoever sent it) and is appended to the `events` table,
whose sequence number is the change feed that widgets, the CLI and `wait()` follow.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

from ._lazy import lazy_module
from .errors import InvalidOptionError, NbBackfillError
from .statuses import (
    BACKFILL_DONE,
    LOG,
    RUN_DONE,
    RUN_IN_FLIGHT,
    RUN_MOVES,
    STEP_DONE,
    STEP_MOVES,
    Event,
    RunStatus,
    StepStatus,
    backfill_change_allowed,
    run_change_allowed,
)

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")  # imported by the first bulk read (see _Read)

SCHEMA_VERSION = 4
HOME_ENV = "NB_BACKFILL_HOME"
DEFAULT_DIR = ".nb_backfill"
DB_NAME = "nb_backfill.db"
INTERRUPTED = "interrupted: the process running this backfill stopped before the run finished"
PARTITIONS_CHANGED = "PARTITIONS"  # a feed entry: the keys of a dynamic definition changed
RUNS_CHANGED = "RUNS"  # a feed entry holding the runs of one backfill one write changed (see _pack)
RUNS_ADDED = "ADDED"  # a feed entry: runs `start,count` (by seq) of a backfill were written, QUEUED
MESSAGE_LIMIT = 64 * 1024  # characters of an error message kept (its head and its tail)
_CHUNK = 500  # ids per `IN (...)` query

_V1 = (
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
)
_V2 = (
    # the change feed: every status change of a run, a step or a backfill, in commit order (seq)
    """CREATE TABLE changes (
        seq INTEGER PRIMARY KEY, backfill_id TEXT, run_id TEXT, step TEXT, status TEXT NOT NULL,
        attempt INTEGER NOT NULL, ts REAL NOT NULL, message TEXT)""",
    "INSERT INTO changes (backfill_id, run_id, step, status, attempt, ts, message) "
    "SELECT runs.backfill_id, events.run_id, events.step, events.status, events.attempt, events.ts, events.message "
    "FROM events LEFT JOIN runs USING (run_id) ORDER BY events.id",
    "DROP TABLE events",
    "ALTER TABLE changes RENAME TO events",
    "CREATE INDEX events_by_run ON events (run_id)",
    "ALTER TABLE backfills ADD COLUMN error TEXT",
    # control asked by a process that does not own the backfill, carried out by its owner
    """CREATE TABLE commands (
        id INTEGER PRIMARY KEY, backfill_id TEXT NOT NULL, owner TEXT NOT NULL, verb TEXT NOT NULL, arg TEXT,
        ts REAL NOT NULL, done REAL, result TEXT, error TEXT)""",
    "CREATE INDEX commands_open ON commands (owner, id) WHERE done IS NULL",
    "CREATE INDEX backfills_by_job ON backfills (job_name, created)",
)


def _keep_past_attempts(conn: sqlite3.Connection) -> None:
    """v3: past attempts, which v2 kept only as events, into their own table."""
    rows = conn.execute(
        "SELECT events.run_id, events.attempt, events.status, events.ts, events.message FROM events "
        "JOIN runs USING (run_id) WHERE events.step IS NULL AND events.attempt < runs.attempt ORDER BY events.seq"
    ).fetchall()
    past: dict[tuple[str, int], list[Any]] = {}
    for run_id, attempt, status, ts, message in rows:
        row = past.setdefault((run_id, attempt), [run_id, attempt, status, None, None, None])
        row[2] = status
        if status in (RunStatus.STARTING, RunStatus.STARTED) and row[3] is None:
            row[3] = ts
        if status in RUN_DONE:
            row[4], row[5] = ts, message
    conn.executemany("INSERT OR REPLACE INTO attempts VALUES (?,?,?,?,?,?)", list(past.values()))


_V3 = (
    # an attempt a retry or resume replaces, as it ended (the runs table holds the current one)
    """CREATE TABLE attempts (
        run_id TEXT NOT NULL, attempt INTEGER NOT NULL, status TEXT NOT NULL, start_time REAL, end_time REAL,
        error TEXT, PRIMARY KEY (run_id, attempt)) WITHOUT ROWID""",
    _keep_past_attempts,
    # the feed is read in order (seq), never by run: no index by run (a write stores one entry a
    # backfill for all the runs it changed); a sequence number is never given twice
    # (AUTOINCREMENT), though entries of ended backfills leave
    """CREATE TABLE feed (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, backfill_id TEXT, run_id TEXT, step TEXT, status TEXT NOT NULL,
        attempt INTEGER NOT NULL, ts REAL NOT NULL, message TEXT)""",
    "INSERT INTO feed SELECT * FROM events ORDER BY seq",
    "DROP TABLE events",
    "ALTER TABLE feed RENAME TO events",
    # a job's runs are found through its backfills (backfills_by_job, then runs_by_backfill)
    "DROP INDEX runs_by_partition",
    # where a backfill's entries begin in the feed: they leave it when the backfill ends
    "ALTER TABLE backfills ADD COLUMN feed_from INTEGER",
    # a large backfill's runs are written by its engine in chunks after launch: how many are
    # (NULL: all of them, at launch), and the selection they come from (see backfills.Selection)
    "ALTER TABLE backfills ADD COLUMN written INTEGER",
    "ALTER TABLE backfills ADD COLUMN selection TEXT",
)
_V4 = (
    # the code a run executed (codeversion.code_id of its job's step versions, said by its STARTED
    # event; NULL before v4), and the step versions each code id stands for
    "ALTER TABLE runs ADD COLUMN code TEXT",
    "CREATE TABLE code_versions (code TEXT NOT NULL, step TEXT NOT NULL, version TEXT NOT NULL, "
    "PRIMARY KEY (code, step)) WITHOUT ROWID",
)
# Each entry upgrades the schema by one version; a new version appends, never edits. An entry is
# SQL, or a function of the connection for what SQL alone cannot say.
MIGRATIONS: tuple[tuple[Any, ...], ...] = (_V1, _V2, _V3, _V4)


class StorageError(NbBackfillError):
    """The store cannot be opened, read or written. `kind` says what the engine may do about a
    failed write: "transient" (locked, disk full, I/O: try again), "data" (a value SQLite refuses:
    write the batch without it) or "fatal" (read-only, damaged, too new)."""

    def __init__(self, message: str, kind: str = "fatal"):
        super().__init__(message)
        self.kind = kind


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
    error: str | None = None
    written: int | None = None  # runs written so far (None: all num_partitions, at launch)
    selection: dict[str, Any] | None = None  # where the runs not yet written come from

    @property
    def unwritten(self) -> int:
        """Runs not written yet: QUEUED while the backfill runs; never created once it ended."""
        return 0 if self.written is None else self.num_partitions - self.written


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
    code: str | None = None  # the code it executed (see codeversion), once started


class Change(NamedTuple):
    """One entry of the change feed: a run's status and attempt now (a write stores those of all
    the runs it changed in one row, read back as one Change a run, all with that row's seq), a
    backfill change (run_id None) or a dynamic definition's keys changing (status PARTITIONS,
    message its name)."""

    seq: int
    backfill_id: str | None
    run_id: str | None
    step: str | None
    status: str
    attempt: int
    ts: float
    message: str | None


def _pack(changed: Iterable[tuple[str | None, str, str, int, float]]) -> list[tuple]:
    """Feed rows for runs one write changed, (backfill_id, run_id, status, attempt, ts) each: one
    row a backfill, its message "run_id,status,attempt;..." (one insert a write, not one a run)."""
    by_backfill: dict[str | None, tuple[list[str], list[float]]] = {}
    for backfill_id, run_id, status, attempt, ts in changed:
        entries, last = by_backfill.setdefault(backfill_id, ([], [0.0]))
        entries.append(f"{run_id},{status},{attempt}")
        last[0] = max(last[0], ts)
    return [
        (backfill_id, None, None, RUNS_CHANGED, 0, last[0], ";".join(entries))
        for backfill_id, (entries, last) in by_backfill.items()
    ]


def _unpack(row: tuple) -> list[Change]:
    """A feed row as the changes it holds: one a run for a packed row (all with its seq)."""
    if row[4] != RUNS_CHANGED:
        return [Change(*row)]
    seq, backfill_id, ts = row[0], row[1], row[6]
    changes = []
    for entry in row[7].split(";"):
        run_id, status, attempt = entry.split(",")
        changes.append(Change(seq, backfill_id, run_id, None, status, int(attempt), ts, None))
    return changes


class Command(NamedTuple):
    id: int
    backfill_id: str
    verb: str
    arg: Any


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


HEARTBEAT_STALE = 60.0  # seconds without a heartbeat after which an owner counts as gone


def owner_alive(owner: str | None, heartbeat: float | None, now: float | None = None) -> bool:
    """Whether the process named by `owner` still runs the backfill: on this host its pid (with its
    start time) must be alive; anywhere, its heartbeat must be recent."""
    if not owner:
        return False
    if heartbeat is None or (now or time.time()) - heartbeat > HEARTBEAT_STALE:
        return False
    host, pid, ticks = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return ticks == "?" or _start_ticks(int(pid)) == ticks


def storable(text: str | None, limit: int | None = MESSAGE_LIMIT) -> str | None:
    """Text SQLite will take: lone surrogates (file names from os.listdir) escaped as \\udcxx,
    and at most `limit` characters (the head and the tail, with a note between)."""
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if limit is not None and len(text) > limit:
        half = limit // 2
        text = f"{text[:half]}\n[... {len(text) - 2 * half:,} characters left out ...]\n{text[-half:]}"
    return text


def _kind(error: BaseException) -> str:
    """How the engine should treat a failed write (see StorageError)."""
    if isinstance(
        error, (UnicodeError, OverflowError, sqlite3.DataError, sqlite3.InterfaceError, sqlite3.IntegrityError)
    ):
        return "data"
    text = str(error).lower()
    if isinstance(error, sqlite3.OperationalError) and any(w in text for w in ("locked", "busy", "full", "disk i/o")):
        return "transient"
    return "fatal"


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


_BACKFILL_COLUMNS = (
    "id, job_name, status, created, updated, ended, num_partitions, options, tags, partitions_def, owner, heartbeat, "
    "error, written, selection"
)
_STARTED = frozenset({RunStatus.STARTING, RunStatus.STARTED})
_STEPPING = frozenset({RunStatus.STARTED, RunStatus.CANCELING})  # a run whose steps may have rows
_NONE = (None,)
QUEUED, STARTED, RUNNING = RunStatus.QUEUED.value, RunStatus.STARTED.value, StepStatus.RUNNING.value
_RUN_COLUMNS = (
    "run_id, backfill_id, job_name, partition, seq, status, attempt, queued, start_time, end_time, error, not_before, "
    "code"
)


# --- bulk reads, for DataFrames. Python's sqlite3 makes a tuple a row and an object a cell, most of
# a million-row read; here each column of all the rows read is one string SQLite joins
# (group_concat, in the scan's order), decoded with numpy.
_LINE = "\n"  # between texts that never hold one: partition keys (see partitions) and run ids
_ZERO = 48  # a code c is read as the character chr(_ZERO + c) ('0' for 0, '/' for -1)
_TICKS = 2**22  # a time of 2**30 s (2004) or later is a whole number of 2**-22 s: exact as an integer


class _Read(NamedTuple):
    """How a column is read in bulk: its aggregates (SQL over the rows read) with their
    parameters, and how their strings become the column: `decode(count, *strings)`."""

    aggregates: tuple[str, ...]
    params: tuple[Any, ...]
    decode: Callable[..., Any]
    exact_from: str | None = None  # a time column: decode also says which values to read as stored


class Lines(NamedTuple):
    """Texts read in bulk, one a line (none holds a line break: partition keys never do, nor run
    ids). Two equal Lines are the same texts in the same order: compared whole, at C speed."""

    text: str
    size: int

    @classmethod
    def of(cls, texts: Sequence[str]) -> Lines:
        return cls(_LINE.join(texts), len(texts))

    def split(self) -> list[str]:
        texts = self.text.split(_LINE) if self.size else []
        if len(texts) != self.size:
            raise StorageError(f"a text read in bulk is NULL or holds a line break: {self.text!r:.200}")
        return texts


def _texts(column: str) -> _Read:
    """Text without line breaks, as Lines."""
    return _Read((f"group_concat({column}, ?)",), (_LINE,), lambda count, joined: Lines(joined or "", count))


def _codes(column: str, values: Sequence[str], first: frozenset[str] = frozenset()) -> _Read:
    """Each row's place in `values` (-1 for another), as an int array: one character a row in SQL.
    Values in `first` (what most rows hold) are compared first: the CASE stops at its match."""
    places = sorted(range(len(values)), key=lambda place: values[place] not in first)
    whens = " ".join(f"WHEN ? THEN '{chr(_ZERO + place)}'" for place in places)  # never a quote
    sql = f"group_concat(CASE {column} {whens} ELSE '{chr(_ZERO - 1)}' END, '')"
    return _Read((sql,), tuple(str(values[place]) for place in places), _places)


def _places(count: int, joined: str | None) -> np.ndarray:
    chars = np.array([joined]).view(np.uint32) if count else np.zeros(0, np.uint32)  # numpy holds str as UCS-4
    return chars.astype(np.int32) - _ZERO


def _ints(column: str) -> _Read:
    return _Read((f"group_concat({column})",), (), _parse)


def _parse(count: int, joined: str | None) -> np.ndarray:
    return np.fromstring(joined or "", np.int64, sep=",")


_NO_TIME = -(2**63) + 1  # ticks of NULL: never a cast's result (it gives whole doubles, and -2**63 when too low)


def _times(column: str) -> _Read:
    """Seconds as float64, exact (NaN for none): each time as a whole number of ticks, text that
    holds every digit; a time that is not one (before 2004, or far ahead) is read as stored."""
    aggregate = f"group_concat(IFNULL(CAST({column} * {_TICKS} AS INTEGER), {_NO_TIME}))"
    return _Read((aggregate,), (), _seconds, exact_from=column)


def _seconds(count: int, joined: str | None) -> tuple[np.ndarray, np.ndarray]:
    ticks = _parse(count, joined)
    none = ticks == _NO_TIME
    # below 2**52 ticks the cast may have cut a fraction; at the ends of int64 it may have stopped there
    whole = ((ticks >= 2**52) | (ticks <= -(2**52))) & (ticks < 2**63 - 1) & (ticks > -(2**63))
    seconds = ticks.astype(np.float64) / _TICKS
    seconds[none] = np.nan
    return seconds, ~(whole | none)


def _notes(column: str) -> _Read:
    """Text or NULL: a list of str or None. Each row's length in bytes (-1 for NULL) and the texts joined."""
    lengths = f"group_concat(IFNULL(length(CAST({column} AS BLOB)), -1))"
    return _Read((lengths, f"group_concat({column}, '')"), (), _cut)


def _cut(count: int, lengths: str | None, joined: str | None) -> list[str | None]:
    sizes = np.fromstring(lengths or "", np.int64, sep=",")
    notes: list[str | None] = [None] * count
    have = np.flatnonzero(sizes >= 0)
    if len(have):
        data, ends = (joined or "").encode(), np.cumsum(sizes[have])
        for i, start, end in zip(have.tolist(), (ends - sizes[have]).tolist(), ends.tolist()):
            notes[i] = data[start:end].decode()
    return notes


def _joined(first: Any, rest: Any) -> Any:
    """A column read in two pieces, whole again."""
    if isinstance(first, Lines):
        return Lines(_LINE.join(piece.text for piece in (first, rest) if piece.size), first.size + rest.size)
    return first + rest if isinstance(first, list) else np.concatenate([first, rest])


_RUN_READS = {
    "run_id": _texts("run_id"),
    "partition": _texts("partition"),
    "status": _codes("status", tuple(RunStatus), first=RUN_DONE),
    "attempt": _ints("attempt"),
    "start_time": _times("start_time"),
    "end_time": _times("end_time"),
    "error": _notes("error"),
}
_STEP_STATUS = _codes("status", tuple(StepStatus), first=STEP_DONE)


class Storage:
    """One SQLite file; a connection per thread; every write a short immediate transaction."""

    def __init__(self, home: str | os.PathLike[str] | None = None):
        self.home = Path(home) if home is not None else default_home()
        self.path = self.home / DB_NAME
        self.read_only = False
        self._local = threading.local()
        self.changed = threading.Condition()  # notified after every commit made in this process
        self.backfill_changed = threading.Condition()  # notified when this process changes a backfill's status
        if not self.path.exists():
            try:
                self.home.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StorageError(
                    f"cannot create the nb_backfill store in {str(self.home)!r}: {error.strerror or error}; "
                    f"choose a writable folder with ${HOME_ENV} or instance=..."
                ) from None
        self._open()

    # --- opening, connections and transactions
    def _open(self) -> None:
        try:
            self._migrate()
        except StorageError as error:
            if error.kind != "readonly":
                raise
            self.close()
            self.read_only = True  # a store we may read but not write: reads work, writes say why
            self._check_schema(self._connection())

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                if self.read_only:
                    conn = self._read_only_connection()
                else:
                    # WAL is set once, by _migrate, after the file proved to be a store: a file that is
                    # not one is never changed (switching to WAL rewrites the file's header)
                    conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
                    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses nothing committed
                conn.execute("PRAGMA busy_timeout=60000")
            except sqlite3.Error as error:
                raise self._error(error, "open") from None
            self._local.conn = conn
        return conn

    def _read_only_connection(self) -> sqlite3.Connection:
        """A connection that never writes: plain read-only, or, where SQLite cannot even make its
        shared-memory file (a read-only folder), one that treats the file as unchanging."""
        uri = self.path.resolve().as_uri()
        for mode in ("mode=ro", "immutable=1"):
            conn = sqlite3.connect(
                f"{uri}?{mode}", uri=True, timeout=60.0, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                conn.close()
                continue
            conn.execute("PRAGMA query_only=1")
            return conn
        raise sqlite3.OperationalError("unable to open database file")

    def _error(self, error: BaseException, doing: str) -> StorageError:
        """One StorageError naming the store and what to do about `error`."""
        text = str(error)
        where = str(self.path)
        if isinstance(error, StorageError):
            return error
        if "not a database" in text or "malformed" in text:
            return StorageError(
                f"the nb_backfill store {where!r} is damaged or not an nb_backfill store ({text}): move it "
                f"away (a new one is made in its place) or use another folder with ${HOME_ENV} or instance=..."
            )
        if "readonly" in text or "read-only" in text or ("unable to open" in text and doing != "read"):
            return StorageError(
                f"the nb_backfill store {where!r} is read-only ({text}): backfills can be read but not "
                f"launched or changed; make the folder writable or use another one with ${HOME_ENV}",
                "readonly",
            )
        kind = _kind(error)
        return StorageError(f"could not {doing} the nb_backfill store {where!r}: {type(error).__name__}: {text}", kind)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock at once (waiting for it, never failing
        fast). Any failure becomes a StorageError and nothing of the transaction stays."""
        if self.read_only:
            raise StorageError(
                f"the nb_backfill store {str(self.path)!r} is read-only: backfills can be read but not "
                f"launched or changed; make the folder writable or use another one with ${HOME_ENV}",
                "readonly",
            )
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise self._error(error, "write") from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as error:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(error, (sqlite3.Error, UnicodeError, OverflowError)):
                raise self._error(error, "write") from None
            raise
        with self.changed:
            self.changed.notify_all()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Reads inside see one moment of the store (a read transaction: in WAL mode it never
        blocks a writer, nor waits for one)."""
        conn = self._connection()
        if conn.in_transaction:
            yield
            return
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as error:
            raise self._error(error, "read") from None
        try:
            yield
        finally:
            conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Rows of a read; nb_backfill's own modules call the named methods below (tests may call this)."""
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise self._error(error, "read") from None

    def wait_for_change(self, timeout: float, backfills_only: bool = False) -> None:
        """Sleep until this process commits a change (of a backfill's status, with backfills_only)
        or `timeout` passes; other processes' changes are seen by the next read."""
        condition = self.backfill_changed if backfills_only else self.changed
        with condition:
            condition.wait(timeout)

    def _backfill_changed(self) -> None:
        with self.backfill_changed:
            self.backfill_changed.notify_all()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _check_schema(self, conn: sqlite3.Connection) -> int:
        """The store's schema version, or a StorageError saying why it cannot be used."""
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                return 0
            row = (
                conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if "meta" in tables
                else None
            )
        except sqlite3.Error as error:
            raise self._error(error, "open") from None
        where = str(self.path)
        if row is None:
            raise StorageError(
                f"{where!r} has tables but no nb_backfill schema version: it is damaged or not an nb_backfill "
                f"store; move it away (a new one is made in its place) or use another folder with ${HOME_ENV}"
            )
        try:
            version: int | None = int(row[0])
        except (TypeError, ValueError):
            version = None
        if version is None or version < 1:
            raise StorageError(
                f"{where!r} has an {'unreadable' if version is None else 'invalid'} schema version {row[0]!r}: it is "
                f"damaged; move it away (a new one is made in its place) or use another folder with ${HOME_ENV}"
            )
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the store {where!r} has schema version {version}, which this nb_backfill does not understand "
                f"(it knows 1 to {SCHEMA_VERSION}): upgrade nb_backfill, or use another folder with ${HOME_ENV}"
            )
        return version

    def _migrate(self) -> None:
        conn = self._connection()
        version = self._check_schema(conn)  # a read first: a current store needs no write lock
        try:
            if version == 0:  # before the first table: pages the feed frees go back (incremental_vacuum)
                conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")  # persistent: every later connection uses WAL
        except sqlite3.Error as error:
            raise self._error(error, "open") from None
        if version == SCHEMA_VERSION:
            return
        with self.transaction() as conn:
            version = self._check_schema(conn)
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    statement(conn) if callable(statement) else conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @property
    def schema_version(self) -> int:
        return int(self.query("SELECT value FROM meta WHERE key='schema_version'")[0][0])

    # --- backfills
    def create_backfill(self, record: BackfillRecord, runs: Iterable[tuple[str, str, int]]) -> None:
        """Write a backfill and its first QUEUED runs (run_id, partition, seq) in one transaction
        (all of them unless `record.written` says how many these are)."""
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO backfills ({_BACKFILL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.id,
                    record.job_name,
                    record.status,
                    record.created,
                    record.updated,
                    record.ended,
                    record.num_partitions,
                    json.dumps(record.options),
                    json.dumps(record.tags),
                    record.partitions_def,
                    record.owner,
                    record.heartbeat,
                    record.error,
                    record.written,
                    None if record.selection is None else json.dumps(record.selection),
                ),
            )
            self._insert_runs(conn, record.id, record.job_name, record.created, runs)
            self._feed(conn, [(record.id, None, None, record.status, 0, record.created, None)])
            conn.execute("UPDATE backfills SET feed_from = last_insert_rowid() WHERE id = ?", (record.id,))

    def write_more_runs(self, backfill_id: str, start: int, runs: Sequence[tuple[str, str, int]]) -> None:
        """Write the next QUEUED runs of a backfill written in chunks: those from seq `start`, which
        must be how many it has (so a chunk is written once, whole or not at all, even by two
        processes); a feed entry says which they are."""
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute("SELECT job_name, written FROM backfills WHERE id = ?", (backfill_id,)).fetchone()
            if row is None or row[1] != start:
                raise StorageError(
                    f"backfill {backfill_id!r} has {None if row is None else row[1]} runs written, not {start}: "
                    f"another process wrote them",
                    "fatal",
                )
            self._insert_runs(conn, backfill_id, row[0], now, runs)
            conn.execute("UPDATE backfills SET written = ? WHERE id = ?", (start + len(runs), backfill_id))
            self._feed(conn, [(backfill_id, None, None, RUNS_ADDED, 0, now, f"{start},{len(runs)}")])

    @staticmethod
    def _insert_runs(
        conn: sqlite3.Connection, backfill_id: str, job_name: str, now: float, runs: Iterable[tuple[str, str, int]]
    ) -> None:
        conn.executemany(
            "INSERT INTO runs (run_id, backfill_id, job_name, partition, seq, status, attempt, queued) "
            "VALUES (?, ?, ?, ?, ?, 'QUEUED', 1, ?)",
            ((run_id, backfill_id, job_name, partition, seq, now) for run_id, partition, seq in runs),
        )

    def get_backfill(self, backfill_id: str) -> BackfillRecord | None:
        rows = self.query(f"SELECT {_BACKFILL_COLUMNS} FROM backfills WHERE id = ?", (backfill_id,))
        return _backfill(rows[0]) if rows else None

    def list_backfills(self, job_name: str | None = None) -> list[BackfillRecord]:
        if job_name is None:
            rows = self.query(f"SELECT {_BACKFILL_COLUMNS} FROM backfills ORDER BY created DESC")
        else:
            rows = self.query(
                f"SELECT {_BACKFILL_COLUMNS} FROM backfills WHERE job_name = ? ORDER BY created DESC", (job_name,)
            )
        return [_backfill(r) for r in rows]

    def backfill_ids(self) -> list[str]:
        return [r[0] for r in self.query("SELECT id FROM backfills ORDER BY created DESC")]

    def set_backfill_status(self, backfill_id: str, status: str, error: str | None = None) -> bool:
        """Move a backfill to `status` if the lifecycle allows it from where it is; True if it moved."""
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute("SELECT status FROM backfills WHERE id = ?", (backfill_id,)).fetchone()
            if row is None or not backfill_change_allowed(row[0], status):
                return False
            done = status in BACKFILL_DONE
            conn.execute(
                "UPDATE backfills SET status = ?, updated = ?, ended = ?, error = ? WHERE id = ?",
                (status, now, now if done else None, storable(error), backfill_id),
            )
            self._feed(conn, [(backfill_id, None, None, status, 0, now, storable(error))])
            if done:  # its runs' entries leave the feed (the tables hold where they ended): it stays small
                conn.execute(
                    "DELETE FROM events WHERE seq > (SELECT COALESCE(feed_from, 0) FROM backfills WHERE id = ?) "
                    f"AND backfill_id = ? AND (status = '{RUNS_CHANGED}' OR run_id IS NOT NULL)",
                    (backfill_id, backfill_id),
                )
                conn.execute("PRAGMA incremental_vacuum")  # the file shrinks by what they took (new stores)
        self._backfill_changed()
        return True

    def set_backfill_options(self, backfill_id: str, options: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE backfills SET options = ?, updated = ? WHERE id = ?",
                (json.dumps(options), time.time(), backfill_id),
            )

    def claim_backfill(self, backfill_id: str, owner: str, previous: BackfillRecord) -> bool:
        """Become the backfill's owner if nobody changed its owner since `previous` was read
        (two processes taking over a backfill: only one wins)."""
        with self.transaction() as conn:
            changed = conn.execute(
                "UPDATE backfills SET owner = ?, heartbeat = ?, updated = ? WHERE id = ? AND owner IS ? AND heartbeat IS ?",
                (owner, time.time(), time.time(), backfill_id, previous.owner, previous.heartbeat),
            ).rowcount
        return changed == 1

    def release_backfill(self, backfill_id: str, owner: str) -> None:
        """Stop owning a backfill this process does not run (anyone may take it over then)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE backfills SET owner = NULL, heartbeat = NULL WHERE id = ? AND owner = ?", (backfill_id, owner)
            )

    def heartbeat(self, backfill_ids: Sequence[str], owner: str) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE backfills SET heartbeat = ? WHERE id = ? AND owner = ?",
                [(time.time(), b, owner) for b in backfill_ids],
            )

    # --- runs
    def runs(self, backfill_id: str) -> list[RunRecord]:
        rows = self.query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE backfill_id = ? ORDER BY seq", (backfill_id,))
        return [RunRecord(*r) for r in rows]

    def run_of(self, backfill_id: str, partition: str) -> RunRecord | None:
        rows = self.query(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE backfill_id = ? AND partition = ?", (backfill_id, partition)
        )
        return RunRecord(*rows[0]) if rows else None

    def run_counts(self, backfill_id: str) -> dict[str, int]:
        """A backfill's runs by status, the ones not written yet included (see `unwritten_as`)."""
        with self.reading():
            rows = self.query("SELECT status, COUNT(*) FROM runs WHERE backfill_id = ? GROUP BY status", (backfill_id,))
            record = self.get_backfill(backfill_id)
        return with_unwritten(dict(rows), record)

    def run_counts_by_backfill(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        with self.reading():
            for backfill_id, status, n in self.query(
                "SELECT backfill_id, status, COUNT(*) FROM runs GROUP BY backfill_id, status"
            ):
                counts.setdefault(backfill_id, {})[status] = n
            unwritten = self.query(
                "SELECT id, status, num_partitions - written FROM backfills WHERE written IS NOT NULL"
            )
        for backfill_id, status, n in unwritten:
            if n:
                of = counts.setdefault(backfill_id, {})
                of[unwritten_as(status)] = of.get(unwritten_as(status), 0) + n
        return counts

    def run_partitions(self, backfill_id: str, start: int, count: int) -> list[tuple[str, str]]:
        """(run_id, partition) of a backfill's runs `start` to `start + count`, in order."""
        return self.query(
            "SELECT run_id, partition FROM runs WHERE backfill_id = ? AND seq >= ? AND seq < ? ORDER BY seq",
            (backfill_id, start, start + count),
        )

    def run_rows(self, backfill_id: str) -> list[tuple]:
        """(run_id, partition, status, attempt, start_time, end_time, error) of a backfill's runs, in order."""
        return self.query(
            "SELECT run_id, partition, status, attempt, start_time, end_time, error FROM runs WHERE backfill_id = ? ORDER BY seq",
            (backfill_id,),
        )

    # --- bulk reads, for DataFrames: each column of all the rows read is one string (see _Read)
    def run_columns(self, backfill_id: str, names: Sequence[str], code: str | None = None) -> dict[str, Any]:
        """Columns `names` of a backfill's runs, in order (seq), read in one pass: `run_id` and
        `partition` Lines, `status` codes (places in RunStatus; -1 for another), `attempt`
        int64, `start_time` and `end_time` float64 seconds (exact; NaN for none), `error` a list of
        str or None; with `code`, `older` too: 1 where a run executed another code, else 0
        (runs from before code was recorded count as not older)."""
        reads = {name: _RUN_READS[name] for name in names}
        if code is not None:
            reads["older"] = _Read(
                ("group_concat(CASE WHEN code IS NULL OR code = ? THEN '0' ELSE '1' END, '')",), (code,), _places
            )
        return self._columns("runs INDEXED BY runs_by_backfill WHERE backfill_id = ?", (backfill_id,), reads)

    def past_attempt_columns(self, backfill_id: str) -> dict[str, Any]:
        """`run_id`, `attempt`, `status`, `start_time`, `end_time` and `error` (as run_columns) of
        the attempts of a backfill's runs that a retry or resume replaced, by the key range of
        their run ids (they begin with the backfill's id and '-')."""
        reads = {name: _RUN_READS[name] for name in ("run_id", "attempt", "status", "start_time", "end_time", "error")}
        return self._columns("attempts WHERE run_id > ? AND run_id < ?", (backfill_id + "-", backfill_id + "."), reads)

    def step_columns(self, backfill_id: str, step_names: Sequence[str]) -> dict[str, Any]:
        """`run_id` (Lines), `step` (place in step_names; -1 for another) and `status`
        (place in StepStatus) of a backfill's step rows, by the key range of their run ids."""
        reads = {"run_id": _texts("run_id"), "step": _codes("step", step_names), "status": _STEP_STATUS}
        return self._columns("steps WHERE run_id > ? AND run_id < ?", (backfill_id + "-", backfill_id + "."), reads)

    def _columns(self, source: str, params: Sequence[Any], reads: dict[str, _Read]) -> dict[str, Any]:
        """`reads` of the rows `source` ("table WHERE ...") selects, in its scan order: one
        statement, one string a column; each half of the rows on its own when a string would be
        longer than SQLite makes one."""
        sql = f"SELECT count(*), {', '.join(a for read in reads.values() for a in read.aggregates)} FROM {source}"
        with self.reading():
            try:
                cursor = self._connection().execute(
                    sql, [p for read in reads.values() for p in read.params] + [*params]
                )
                count, *values = cursor.fetchone()
            except sqlite3.DataError as error:  # SQLITE_TOOBIG
                count = self.query(f"SELECT count(*) FROM {source}", params)[0][0]
                if count < 2:
                    raise self._error(error, "read") from None
                halves = [
                    self._columns(f"(SELECT * FROM {source} LIMIT ? OFFSET ?)", (*params, n, start), reads)
                    for n, start in ((count // 2, 0), (-1, count // 2))
                ]
                return {name: _joined(halves[0][name], halves[1][name]) for name in reads}
            except sqlite3.Error as error:
                raise self._error(error, "read") from None
            columns = {}
            for name, read in reads.items():
                columns[name] = read.decode(count, *values[: len(read.aggregates)])
                values = values[len(read.aggregates) :]
                if read.exact_from:  # times: those not read exactly as whole ticks, read as stored
                    columns[name], inexact = columns[name]
                    if inexact.any():
                        stored = self.query(f"SELECT {read.exact_from} FROM {source}", params)
                        columns[name][inexact] = [stored[i][0] for i in np.flatnonzero(inexact).tolist()]
        return columns

    # --- status changes: every one checked against the lifecycle, then fed
    def write_batch(self, events: Sequence[Event]) -> int:
        """Apply a batch of events in one transaction; returns how many status changes the
        lifecycle accepted (LOG events are always kept)."""
        with self.transaction() as conn:
            return self._apply(conn, events)

    def running_steps(self, run_ids: Sequence[str]) -> list[tuple[str, int, str]]:
        """(run_id, run attempt, step) of the RUNNING steps of these runs."""
        rows: list[tuple[str, int, str]] = []
        for chunk in _chunks(list(run_ids)):
            rows += self.query(
                f"SELECT steps.run_id, runs.attempt, steps.step FROM steps JOIN runs USING (run_id) "
                f"WHERE steps.status = 'RUNNING' AND steps.run_id IN ({_marks(len(chunk))})",
                chunk,
            )
        return rows

    def mark_interrupted(self, backfill_id: str, message: str = INTERRUPTED) -> int:
        """Runs a dead owner left in flight become FAILURE (their running step too); returns how many."""
        now = time.time()
        with self.transaction() as conn:
            runs = conn.execute(
                f"SELECT run_id, attempt FROM runs WHERE backfill_id = ? AND status IN ({_marks(len(RUN_IN_FLIGHT))})",
                (backfill_id, *map(str, RUN_IN_FLIGHT)),
            ).fetchall()
            events = []
            for run_id, attempt in runs:
                running = conn.execute("SELECT step FROM steps WHERE run_id = ? AND status = 'RUNNING'", (run_id,))
                events += [Event(run_id, StepStatus.FAILURE, now, attempt, step, message) for (step,) in running]
                events.append(Event(run_id, RunStatus.FAILURE, now, attempt, None, message))
            self._apply(conn, events)
        return len(runs)

    def _apply(self, conn: sqlite3.Connection, events: Sequence[Event]) -> int:
        """Apply events in order where the lifecycle allows; write the rows, one feed entry for
        each run that changed (its status and attempt now), the attempts a new one replaces, and
        logs. Returns how many status changes were accepted."""
        run_ids = list({e.run_id for e in events if e.status != LOG})
        runs: dict[
            str, list[Any]
        ] = {}  # run_id -> [status, attempt, queued, start, end, error, not_before, backfill_id, rowid, code]
        for chunk in _chunks(run_ids):
            for row in conn.execute(
                f"SELECT run_id, status, attempt, queued, start_time, end_time, error, not_before, backfill_id, rowid, "
                f"code FROM runs WHERE run_id IN ({_marks(len(chunk))})",
                chunk,
            ):
                runs[row[0]] = list(row[1:])
        # only a run in flight has step rows of its current attempt (a new attempt starts with none)
        stepped = list({e.run_id for e in events if e.step is not None and runs.get(e.run_id, _NONE)[0] in _STEPPING})
        steps: dict[str, dict[str, list[Any]]] = {}  # run_id -> step -> [status, attempt, start, end, error]
        for chunk in _chunks(stepped):
            for run_id, step, *rest in conn.execute(
                f"SELECT run_id, step, status, attempt, start_time, end_time, error FROM steps "
                f"WHERE run_id IN ({_marks(len(chunk))})",
                chunk,
            ):
                steps.setdefault(run_id, {})[step] = rest
        changed_steps: set[tuple[str, str]] = set()
        fed: dict[str, float] = {}  # run_id -> when it last changed in this batch (one feed entry a run)
        archived, requeued, logs = [], [], []
        accepted = 0
        for run_id, new, ts, of_attempt, step_name, message, step_attempt, not_before in events:
            if new == LOG:
                logs.append((run_id, step_name, ts, storable(message, limit=None)))
                continue
            run = runs.get(run_id)
            if run is None:
                continue
            status, attempt = run[0], run[1]
            if step_name is None:
                if of_attempt == attempt:
                    if (status, new) not in RUN_MOVES:
                        continue
                    run[0] = new
                    if run[3] is None and new in _STARTED:
                        run[3] = ts
                    if new == STARTED and message:  # the code it executes (see codeversion)
                        run[9] = message
                    if new in RUN_DONE:
                        run[4], run[5] = ts, storable(message)
                elif run_change_allowed(status, attempt, new, of_attempt):  # the next attempt
                    archived.append((run_id, attempt, status, run[3], run[4], run[5]))
                    run[:7] = [QUEUED, of_attempt, ts, None, None, None, not_before]
                    run[9] = None
                    requeued.append(run_id)
                    steps.pop(run_id, None)  # its steps start over
                else:
                    continue
            else:
                if of_attempt != attempt or status not in RUN_IN_FLIGHT:
                    continue
                of_run = steps.setdefault(run_id, {})
                step = of_run.get(step_name)
                if (step[0] if step else None, new) not in STEP_MOVES:
                    continue
                if step is None:
                    step = of_run[step_name] = [new, step_attempt, ts if new == RUNNING else None, None, None]
                else:
                    step[0], step[1] = new, step_attempt
                    if new == RUNNING:
                        step[2], step[3], step[4] = ts, None, None
                if new in STEP_DONE:
                    step[3], step[4] = ts, storable(message)
                changed_steps.add((run_id, step_name))
            accepted += 1
            fed[run_id] = ts
        conn.executemany(  # by rowid, read above: one tree to search, not the run id's index too
            "UPDATE runs SET status = ?, attempt = ?, queued = ?, start_time = ?, end_time = ?, error = ?, not_before = ?, "
            "code = ? WHERE rowid = ?",
            [(*runs[run_id][:7], runs[run_id][9], runs[run_id][8]) for run_id in fed],
        )
        if requeued:
            conn.executemany("INSERT OR REPLACE INTO attempts VALUES (?,?,?,?,?,?)", archived)
            conn.executemany("DELETE FROM steps WHERE run_id = ?", [(r,) for r in requeued])
        conn.executemany(
            "INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?)",
            [(r, s, *steps[r][s]) for r, s in changed_steps if s in steps.get(r, ())],
        )
        self._feed(conn, _pack((runs[r][7], r, runs[r][0], runs[r][1], ts) for r, ts in fed.items()))
        conn.executemany("INSERT INTO logs (run_id, step, ts, text) VALUES (?,?,?,?)", logs)
        return accepted

    @staticmethod
    def _feed(conn: sqlite3.Connection, rows: Sequence[tuple]) -> None:
        conn.executemany(
            "INSERT INTO events (backfill_id, run_id, step, status, attempt, ts, message) VALUES (?,?,?,?,?,?,?)", rows
        )

    # --- the change feed
    def last_seq(self) -> int:
        return self.query("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0]

    def changes(self, after: int, backfill_id: str | None = None, limit: int = 100_000) -> list[Change]:
        """Feed entries after sequence number `after`, oldest first (of one backfill, if given)."""
        if backfill_id is None:
            rows = self.query("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
        else:
            rows = self.query(
                "SELECT * FROM events WHERE seq > ? AND backfill_id = ? ORDER BY seq LIMIT ?",
                (after, backfill_id, limit),
            )
        return [change for row in rows for change in _unpack(row)]

    # --- steps, logs, a run's history
    def step_rows(self, backfill_id: str) -> list[tuple]:
        """(run_id, step, status, start_time, end_time) of a backfill's steps, by a range scan of
        the steps' primary key: run ids begin with their backfill's id and '-'."""
        return self.query(
            "SELECT run_id, step, status, start_time, end_time FROM steps WHERE run_id > ? AND run_id < ?",
            (backfill_id + "-", backfill_id + "."),
        )

    def logs(self, run_id: str) -> list[tuple]:
        return self.query("SELECT step, ts, text FROM logs WHERE run_id = ? ORDER BY id", (run_id,))

    def step_rows_of(self, run_ids: Sequence[str]) -> list[tuple]:
        """(run_id, step, status, start_time, end_time) of the steps of these runs."""
        rows: list[tuple] = []
        for chunk in _chunks(list(run_ids)):
            rows += self.query(
                f"SELECT run_id, step, status, start_time, end_time FROM steps WHERE run_id IN ({_marks(len(chunk))})",
                chunk,
            )
        return rows

    def add_code_versions(self, code: str, versions: Mapping[str, str]) -> None:
        """Remember which step versions a code id stands for (once; a code id never changes meaning)."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO code_versions VALUES (?, ?, ?)", [(code, *v) for v in versions.items()]
            )

    def code_versions(self, codes: Sequence[str]) -> dict[str, dict[str, str]]:
        """code id -> {step: version} of these code ids (those known)."""
        known: dict[str, dict[str, str]] = {}
        for chunk in _chunks(list(codes)):
            rows = self.query(
                f"SELECT code, step, version FROM code_versions WHERE code IN ({_marks(len(chunk))})", chunk
            )
            for code, step, version in rows:
                known.setdefault(code, {})[step] = version
        return known

    def latest_successes(self, job_name: str, partitions: Sequence[str]) -> dict[str, tuple[str, int, str | None]]:
        """partition -> (run_id, attempt, code) of the latest SUCCESS run of each of these partitions."""
        latest: dict[str, tuple[str, int, str | None]] = {}
        for chunk in _chunks(list(partitions)):
            rows = self.query(
                "SELECT partition, run_id, attempt, code FROM runs WHERE backfill_id IN "
                f"(SELECT id FROM backfills WHERE job_name = ?) AND status = 'SUCCESS' AND partition IN ({_marks(len(chunk))}) "
                "ORDER BY end_time",
                [job_name, *chunk],
            )
            latest.update((partition, tuple(rest)) for partition, *rest in rows)
        return latest

    def partitions_of(self, run_ids: Sequence[str]) -> dict[str, str]:
        """run_id -> partition of these runs (those that exist)."""
        found: dict[str, str] = {}
        for chunk in _chunks(list(run_ids)):
            found.update(
                self.query(f"SELECT run_id, partition FROM runs WHERE run_id IN ({_marks(len(chunk))})", chunk)
            )
        return found

    def succeeded_steps(
        self, job_name: str, backfill_id: str | None = None, partition: str | None = None
    ) -> list[tuple[str, str, str, int, float]]:
        """(partition, step, run_id, attempt, end_time) of the steps that succeeded (or were
        reused) in the current attempt of a job's runs (of one backfill, of one partition), oldest first."""
        where = [
            "runs.backfill_id IN (SELECT id FROM backfills WHERE job_name = ?)",
            "steps.status IN ('SUCCESS', 'REUSED')",
        ]
        params: list[Any] = [job_name]
        for column, value in (("backfill_id", backfill_id), ("partition", partition)):
            if value is not None:
                where.append(f"runs.{column} = ?")
                params.append(value)
        return self.query(
            "SELECT runs.partition, steps.step, runs.run_id, runs.attempt, steps.end_time FROM runs "
            f"JOIN steps USING (run_id) WHERE {' AND '.join(where)} ORDER BY steps.end_time",
            params,
        )

    # --- commands: control asked from another process, carried out by the owner's engine
    def post_command(self, backfill_id: str, owner: str, verb: str, arg: Any = None) -> int:
        """Ask `owner`, the process running the backfill, to carry out `verb`; returns the command's id."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO commands (backfill_id, owner, verb, arg, ts) VALUES (?,?,?,?,?)",
                (backfill_id, owner, verb, json.dumps(arg), time.time()),
            )
            return int(cursor.lastrowid)

    def open_commands(self, owner: str, after: int = 0) -> list[Command]:
        """Commands sent to `owner` not yet carried out, oldest first."""
        rows = self.query(
            "SELECT id, backfill_id, verb, arg FROM commands WHERE id > ? AND owner = ? AND done IS NULL ORDER BY id",
            (after, owner),
        )
        return [Command(i, b, v, json.loads(a)) for i, b, v, a in rows]

    def drop_commands(self, backfill_id: str, why: str) -> None:
        """Close the open commands of a backfill whose owner is gone (its new owner does not carry them out)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE commands SET done = ?, error = ? WHERE backfill_id = ? AND done IS NULL",
                (time.time(), why, backfill_id),
            )

    def finish_command(self, command_id: int, result: str | None, error: str | None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE commands SET done = ?, result = ?, error = ? WHERE id = ?",
                (time.time(), storable(result), storable(error), command_id),
            )

    def command_outcome(self, command_id: int) -> tuple[float | None, str | None, str | None]:
        """(done, result, error) of a posted command."""
        rows = self.query("SELECT done, result, error FROM commands WHERE id = ?", (command_id,))
        return rows[0] if rows else (None, None, None)

    # --- dynamic partitions
    def dynamic_partitions(self, name: str) -> list[str]:
        return [
            r[0] for r in self.query("SELECT key FROM dynamic_partitions WHERE name = ? ORDER BY position", (name,))
        ]

    def add_dynamic_partitions(self, name: str, keys: Sequence[str]) -> None:
        with self.transaction() as conn:
            start = conn.execute(
                "SELECT COALESCE(MAX(position), -1) + 1 FROM dynamic_partitions WHERE name = ?", (name,)
            )
            position = start.fetchone()[0]
            added = sum(
                conn.execute(
                    "INSERT OR IGNORE INTO dynamic_partitions VALUES (?,?,?)", (name, key, position + i)
                ).rowcount
                for i, key in enumerate(keys)
            )
            if added:
                self._feed(conn, [(None, None, None, PARTITIONS_CHANGED, 0, time.time(), name)])

    def delete_dynamic_partition(self, name: str, key: str) -> bool:
        with self.transaction() as conn:
            deleted = (
                conn.execute("DELETE FROM dynamic_partitions WHERE name = ? AND key = ?", (name, key)).rowcount == 1
            )
            if deleted:
                self._feed(conn, [(None, None, None, PARTITIONS_CHANGED, 0, time.time(), name)])
            return deleted


def _backfill(row: tuple) -> BackfillRecord:
    values = list(row)
    values[7] = json.loads(values[7])
    values[8] = json.loads(values[8])
    values[14] = None if values[14] is None else json.loads(values[14])
    return BackfillRecord(*values)


def run_id_of(backfill_id: str, seq: int) -> str:
    """A run's id: its backfill's id, '-' and its place (a backfill's steps are found by that prefix)."""
    return f"{backfill_id}-{seq:06d}"


def unwritten_as(backfill_status: str) -> str:
    """What a run not written yet counts as: QUEUED while its backfill runs (its engine writes it
    soon), CANCELED once the backfill ended without it (it was never created)."""
    return RunStatus.CANCELED if backfill_status in BACKFILL_DONE else RunStatus.QUEUED


def with_unwritten(counts: dict[str, int], record: BackfillRecord | None, held: int | None = None) -> dict[str, int]:
    """Run counts of a backfill with its runs not written yet added (or, given `held`, the runs
    beyond the first `held`)."""
    unwritten = 0 if record is None else record.unwritten if held is None else record.num_partitions - held
    if record is None or unwritten <= 0:
        return counts
    status = unwritten_as(record.status)
    return {**counts, status: counts.get(status, 0) + unwritten}


_T = TypeVar("_T", bound="OnePerStore")


class OnePerStore:
    """A class with one instance per process and store, made on first use by `for_storage(store)`;
    `existing(store)` never makes one (reads must not start threads)."""

    _instances: ClassVar[dict[str, Any]]
    _instances_lock: ClassVar[threading.Lock]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._instances, cls._instances_lock = {}, threading.Lock()

    @classmethod
    def for_storage(cls: type[_T], storage: Storage) -> _T:
        with cls._instances_lock:
            instance = cls._instances.get(str(storage.path))
            if instance is None:
                instance = cls._instances[str(storage.path)] = cls(storage)  # type: ignore[call-arg]
            return instance

    @classmethod
    def existing(cls: type[_T], storage: Storage) -> _T | None:
        return cls._instances.get(str(storage.path))


_STORES: dict[str, Storage] = {}
_STORES_LOCK = threading.Lock()


def get_instance(instance: Storage | str | os.PathLike[str] | None = None) -> Storage:
    """The store to use: an explicit one, a path to one, or the default (`$NB_BACKFILL_HOME` or ./.nb_backfill)."""
    if isinstance(instance, Storage):
        return instance
    if instance is not None and not isinstance(instance, (str, os.PathLike)):
        raise InvalidOptionError(
            f"instance must be an nbb.Instance or the path of a store's folder, got {instance!r} ({type(instance).__name__})"
        )
    home = os.path.abspath(instance if instance is not None else default_home())
    with _STORES_LOCK:
        if home not in _STORES:
            _STORES[home] = Storage(home)
        return _STORES[home]
