"""Which queued runs start now: a pure function of the queues, the runs in flight and the limits.

The engine asks `pick` once a turn and does what it answers. "default" backfills are bounded only by
the free slots of their executor; "queued" ones also by `max_concurrent` and tag concurrency limits
(Dagster's), higher `priority` tag first, then older backfills first. A run held back by a limit
does not hold back the runs behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple

PRIORITY_TAGS = ("nb_backfill/priority", "dagster/priority", "priority")
PER_VALUE = "applyLimitPerUniqueValue"
SCAN = 5000  # queued runs looked at per backfill and turn, so a long held-back queue stays cheap


@dataclass(frozen=True)
class TagLimit:
    """At most `limit` runs in flight whose tag `key` has `value` (any value when None, each
    value separately when per_value)."""

    key: str
    value: str | None
    limit: int
    per_value: bool = False

    def group(self, tags: Mapping[str, str]) -> tuple | None:
        """The group a run with these tags counts in under this limit, or None."""
        if self.key not in tags:
            return None
        if self.per_value:
            return (self.key, tags[self.key], True)
        if self.value is None or tags[self.key] == self.value:
            return (self.key, self.value, False)
        return None


class PendingRun(NamedTuple):
    """A run waiting to start: its attempt, and the earliest time a retry may start (a named
    tuple: the engine holds thousands, made in bulk)."""

    run_id: str
    partition: str
    attempt: int
    not_before: float | None = None
    reuse: tuple[tuple[str, str, int], ...] = ()  # (step, run_id, attempt) whose kept output it may reuse


@dataclass(frozen=True)
class Queue:
    """One backfill as the policy sees it."""

    backfill_id: str
    pending: Sequence[PendingRun]  # in launch order; only a prefix is read
    free: int  # runs it may still hand to its executor
    tags: Callable[[PendingRun], Mapping[str, str]]
    limits: Sequence[TagLimit] = ()
    priority: int = 0
    created: float = 0.0


@dataclass
class Picked:
    """What to do with the first `scanned` pending runs of a backfill: start `start` (with their
    tags), and put `held` back at the front, in order."""

    start: list[tuple[PendingRun, Mapping[str, str]]] = field(default_factory=list)
    held: list[PendingRun] = field(default_factory=list)
    scanned: int = 0


def priority_of(tags: Mapping[str, str]) -> int:
    """A backfill's priority from its tags (Dagster's `dagster/priority` among them); 0 if none or not a number."""
    for key in PRIORITY_TAGS:
        if key in tags:
            try:
                return int(tags[key])
            except ValueError:
                return 0
    return 0


def in_flight_groups(runs: Iterable[Mapping[str, str]], limits: Sequence[TagLimit]) -> dict[tuple, int]:
    """How many in-flight runs count in each limit group."""
    groups: dict[tuple, int] = {}
    for tags in runs:
        for limit in limits:
            group = limit.group(tags)
            if group is not None:
                groups[group] = groups.get(group, 0) + 1
    return groups


def pick(queues: Sequence[Queue], in_flight: Mapping[tuple, int], now: float) -> dict[str, Picked]:
    """The runs to start now in each backfill, by priority then age, within every limit."""
    counts = dict(in_flight)
    decisions: dict[str, Picked] = {}
    for queue in sorted(queues, key=lambda q: (-q.priority, q.created)):
        picked = decisions[queue.backfill_id] = Picked()
        free = queue.free
        for run in islice(queue.pending, SCAN):
            if free <= 0:
                break
            picked.scanned += 1
            if run.not_before is not None and run.not_before > now:
                picked.held.append(run)
                continue
            tags = queue.tags(run)
            groups = [(limit, limit.group(tags)) for limit in queue.limits]
            if any(g is not None and counts.get(g, 0) >= limit.limit for limit, g in groups):
                picked.held.append(run)
                continue
            for _, g in groups:
                if g is not None:
                    counts[g] = counts.get(g, 0) + 1
            picked.start.append((run, tags))
            free -= 1
    return decisions
