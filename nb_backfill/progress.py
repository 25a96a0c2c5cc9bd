"""A backfill's progress, said one way everywhere: counts, percent done, rate, ETA and a line of words.

The handle's repr, the CLI's progress line and the widget's summary all come from `Progress`; a
`Tracker` keeps a backfill's run statuses current from the store's change feed, so a face that
shows progress live never recounts every run.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .statuses import BACKFILL_DONE, RUN_DONE, BackfillStatus, RunStatus
from .storage import RUNS_ADDED, BackfillRecord, Change, Storage, with_unwritten


def rate_text(per_minute: float) -> str:
    """`12 runs/min`, `3.4 runs/s`, `18,700 runs/s`: a rate a person reads at a glance."""
    if per_minute < 120:
        return f"{per_minute:.1f} runs/min" if per_minute < 10 else f"{per_minute:,.0f} runs/min"
    per_second = per_minute / 60
    return f"{per_second:.1f} runs/s" if per_second < 100 else f"{per_second:,.0f} runs/s"


def duration_text(seconds: float) -> str:
    """`850 ms`, `12.3 s`, `4 min 5 s`, `2 h 10 min`."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min {seconds % 60:.0f} s"
    return f"{minutes // 60} h {minutes % 60} min"


@dataclass(frozen=True)
class Progress:
    """Where a backfill stands."""

    backfill_id: str
    status: str
    counts: Mapping[str, int]  # runs by status, every status named
    per_minute: float | None = None  # runs finished a minute lately; None while not moving
    note: str | None = None  # why it is not moving, or why it failed

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in RUN_DONE)

    @property
    def percent(self) -> float:
        return round(100.0 * self.done / self.total, 1) if self.total else 0.0

    @property
    def eta_seconds(self) -> float | None:
        left = self.total - self.done
        if not self.per_minute or not left or self.status in BACKFILL_DONE:
            return None
        return round(60.0 * left / self.per_minute, 1)

    def line(self) -> str:
        """`12 success, 1 failure, 4 started, 40 queued — 22.8% done, 31 runs/min, ETA 1 min 48 s`."""
        counts = ", ".join(f"{n} {status.lower()}" for status, n in self.counts.items() if n) or "no runs"
        parts = [f"{counts} — {self.percent:g}% done"]
        if self.per_minute:
            parts.append(rate_text(self.per_minute))
        if self.eta_seconds is not None:
            parts.append(f"ETA {duration_text(self.eta_seconds)}")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """What the widget shows: the numbers and the same line of words."""
        return {
            "status": self.status,
            "counts": {k: v for k, v in self.counts.items() if v},
            "total": self.total,
            "done": self.done,
            "percent": self.percent,
            "per_minute": self.per_minute,
            "eta_seconds": self.eta_seconds,
            "note": self.note,
            "text": self.line(),
        }


def all_counts(found: Mapping[str, int]) -> dict[str, int]:
    """Runs by status with every run status named, zeros included, in lifecycle order."""
    return {str(status): found.get(status, 0) for status in RunStatus}


@dataclass
class RateMeter:
    """Runs finished a minute, over the last minute of samples; nothing while paused."""

    window: float = 60.0
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def sample(self, done: int, moving: bool, now: float | None = None) -> float | None:
        if not moving:
            self._samples.clear()
            return None
        now = time.monotonic() if now is None else now
        self._samples.append((now, done))
        while now - self._samples[0][0] > self.window:
            self._samples.popleft()
        since, done_then = self._samples[0]
        return 60.0 * (done - done_then) / (now - since) if now - since >= 0.5 else None


class Tracker:
    """A backfill's runs read once, then kept current from the change feed: counts and progress
    at any size without recounting (what the widget and the CLI follow)."""

    def __init__(self, storage: Storage, backfill_id: str):
        self.storage = storage
        self.backfill_id = backfill_id
        self.rate = RateMeter()
        self.read()

    def read(self) -> None:
        """Read the backfill's runs whole: at the start, and whenever it ends (its runs' entries
        then leave the feed, maybe before they were read)."""
        with self.storage.reading():  # the runs, the record and the feed's position, of one moment
            self.seq = self.storage.last_seq()
            rows = self.storage.run_rows(self.backfill_id)
            self.record: BackfillRecord | None = self.storage.get_backfill(self.backfill_id)
        self.run_ids = [row[0] for row in rows]
        self.index = {run_id: i for i, run_id in enumerate(self.run_ids)}
        self.partitions = [row[1] for row in rows]
        self.status = [row[2] for row in rows]
        self.attempt = [row[3] for row in rows]
        self._counts: Counter[str] = Counter(self.status)

    @property
    def counts(self) -> dict[str, int]:
        """Runs by status, the ones not taken in yet included (as the runs this tracker holds:
        the store may already have written more, whose feed entries come next)."""
        return with_unwritten(dict(self._counts), self.record, held=len(self.run_ids))

    def _add(self, start: int, count: int) -> list[int]:
        """Runs `start` to `start + count` were just written, QUEUED (every later change of theirs
        follows in the feed); returns their indices, or all runs after a full read when the
        tracker missed some."""
        if start != len(self.run_ids):
            self.read()
            return list(range(len(self.run_ids)))
        rows = self.storage.run_partitions(self.backfill_id, start, count)
        for run_id, partition in rows:
            self.index[run_id] = len(self.run_ids)
            self.run_ids.append(run_id)
            self.partitions.append(partition)
            self.status.append(RunStatus.QUEUED.value)
            self.attempt.append(1)
        self._counts[RunStatus.QUEUED.value] += len(rows)
        return list(range(start, start + len(rows)))

    def apply(self, changes: Iterable[Change]) -> list[int]:
        """Apply feed entries of this backfill; returns the runs whose status changed (all of
        them, read again, when the backfill has just ended)."""
        changed: list[int] = []
        backfill_changed = ended = False
        for change in changes:
            self.seq = max(self.seq, change.seq)
            if change.backfill_id != self.backfill_id:
                continue
            if change.run_id is None:
                backfill_changed = True
                ended = ended or change.status in BACKFILL_DONE
                if change.status == RUNS_ADDED and not ended:
                    start, count = map(int, (change.message or "0,0").split(","))
                    changed += self._add(start, count)
                continue
            i = self.index.get(change.run_id)
            if i is None or change.step is not None:
                continue
            self._counts[self.status[i]] -= 1
            self._counts[change.status] += 1
            self.status[i], self.attempt[i] = change.status, change.attempt
            changed.append(i)
        if ended:  # it ended (maybe ran again and ended since): its runs' entries left the feed
            self.read()
            return list(range(len(self.run_ids)))
        if backfill_changed:
            self.record = self.storage.get_backfill(self.backfill_id)
        return changed

    def poll(self) -> list[Change]:
        """Read and apply what changed in this backfill since the last look."""
        changes = self.storage.changes(self.seq, self.backfill_id)
        self.apply(changes)
        return changes

    def progress(self, record: BackfillRecord | None = None, note: str | None = None) -> Progress:
        record = record or self.record
        status = record.status if record is not None else BackfillStatus.REQUESTED
        counts = all_counts(self.counts)
        done = sum(counts[s] for s in RUN_DONE)
        moving = status == BackfillStatus.REQUESTED and note is None
        return Progress(self.backfill_id, status, counts, self.rate.sample(done, moving), note)
