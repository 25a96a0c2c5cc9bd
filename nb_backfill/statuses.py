"""Run, step and backfill statuses (Dagster's names), their derived sets, and the allowed transitions.

This is the one place that says what a status means. Storage applies a change only if
`run_change_allowed` / `step_change_allowed` / `backfill_change_allowed` say so, whoever asks: the
engine, a resume in another process, or the clean-up after a dead owner. Statuses are `str`
enums, so they compare equal to the plain strings stored in SQLite.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple


class _Status(str, Enum):
    """A status that is its own text: equal to, hashed like and stored as its value."""

    __str__ = str.__str__
    __format__ = str.__format__
    __hash__ = str.__hash__


class RunStatus(_Status):
    """A run: one partition of one backfill, one attempt at a time."""

    QUEUED = "QUEUED"  # waiting for the engine to start it
    STARTING = "STARTING"  # taken by a worker process, not yet begun (its job may be loading)
    STARTED = "STARTED"  # its steps are executing
    SUCCESS = "SUCCESS"  # every step completed
    FAILURE = "FAILURE"  # a step failed, or its worker or owner died
    CANCELING = "CANCELING"  # cancel asked; it stops at the next step boundary
    CANCELED = "CANCELED"  # stopped before it completed, or never started


# Final for their attempt: only a new attempt (retry, resume) queues the run again.
RUN_DONE = frozenset({RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELED})
# Handed to an executor and not yet done.
RUN_IN_FLIGHT = frozenset({RunStatus.STARTING, RunStatus.STARTED, RunStatus.CANCELING})
# Not done: queued or in flight. Of a backfill whose process died, these count as never run.
RUN_UNFINISHED = frozenset({RunStatus.QUEUED}) | RUN_IN_FLIGHT

_RUN_NEXT: dict[str, frozenset[str]] = {
    RunStatus.QUEUED: frozenset({RunStatus.STARTING, RunStatus.STARTED, RunStatus.FAILURE, RunStatus.CANCELED}),
    RunStatus.STARTING: frozenset({RunStatus.STARTED, RunStatus.FAILURE, RunStatus.CANCELING, RunStatus.CANCELED}),
    RunStatus.STARTED: frozenset({RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELING, RunStatus.CANCELED}),
    RunStatus.CANCELING: frozenset({RunStatus.SUCCESS, RunStatus.FAILURE, RunStatus.CANCELED}),
}


# (status, new status) pairs allowed within an attempt: what run_change_allowed says, as one set
# lookup for storage's hot loop
RUN_MOVES = frozenset((status, new) for status, news in _RUN_NEXT.items() for new in news)


def run_change_allowed(status: str, attempt: int, new_status: str, new_attempt: int) -> bool:
    """Whether a run at (status, attempt) may become (new_status, new_attempt).

    Within an attempt a run only moves forward (terminal is final, CANCELING only from in flight);
    a done run is queued again only as its next attempt; an event of another attempt is refused.
    """
    if new_attempt == attempt:
        return new_status in _RUN_NEXT.get(status, ())
    return new_attempt == attempt + 1 and new_status == RunStatus.QUEUED and status in RUN_DONE


class StepStatus(_Status):
    """A step of a run (a run's steps have no row until they start: PENDING)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"  # may run again within its run when the step has retries
    SKIPPED = "SKIPPED"  # an upstream step failed
    CANCELED = "CANCELED"  # the run was canceled before or while it ran
    REUSED = "REUSED"  # not run again: a retry from failure took its output from the attempt before


STEP_DONE = frozenset(
    {StepStatus.SUCCESS, StepStatus.FAILURE, StepStatus.SKIPPED, StepStatus.CANCELED, StepStatus.REUSED}
)
# Done with an output the steps after it can use.
STEP_SUCCEEDED = frozenset({StepStatus.SUCCESS, StepStatus.REUSED})

_STEP_NEXT: dict[str, frozenset[str]] = {
    StepStatus.PENDING: frozenset({StepStatus.RUNNING, StepStatus.SKIPPED, StepStatus.CANCELED, StepStatus.REUSED}),
    StepStatus.RUNNING: frozenset({StepStatus.SUCCESS, StepStatus.FAILURE, StepStatus.CANCELED}),
    StepStatus.FAILURE: frozenset({StepStatus.RUNNING}),  # a step retry, within the same run attempt
}


# (status or None for no row yet, new status) pairs: what step_change_allowed says, as one set
STEP_MOVES = frozenset(
    (None if status == StepStatus.PENDING else status, new) for status, news in _STEP_NEXT.items() for new in news
) | frozenset((StepStatus.PENDING, new) for new in _STEP_NEXT[StepStatus.PENDING])


def step_change_allowed(status: str | None, new_status: str) -> bool:
    """Whether a step at `status` (None: no row yet) may become `new_status`; its run must be in
    flight in the same attempt, which storage checks first."""
    return new_status in _STEP_NEXT.get(status or StepStatus.PENDING, ())


class BackfillStatus(_Status):
    """A backfill (Dagster's bulk action statuses)."""

    REQUESTED = "REQUESTED"  # running, or waiting for its process to run it
    PAUSED = "PAUSED"  # starts no new run; running ones finish
    CANCELING = "CANCELING"  # cancel asked; waiting for running runs to stop
    CANCELED = "CANCELED"
    COMPLETED_SUCCESS = "COMPLETED_SUCCESS"
    COMPLETED_FAILED = "COMPLETED_FAILED"  # every run done, some not SUCCESS
    FAILED = "FAILED"  # nb_backfill itself could not go on (e.g. the store could not be written)


# Done: nothing runs and nothing will until a resume or retry opens it again.
BACKFILL_DONE = frozenset(
    {BackfillStatus.CANCELED, BackfillStatus.COMPLETED_SUCCESS, BackfillStatus.COMPLETED_FAILED, BackfillStatus.FAILED}
)
_BACKFILL_NEXT: dict[str, frozenset[str]] = {
    BackfillStatus.REQUESTED: frozenset(set(BackfillStatus) - {BackfillStatus.REQUESTED}),
    BackfillStatus.PAUSED: frozenset(
        {BackfillStatus.REQUESTED, BackfillStatus.CANCELING, BackfillStatus.CANCELED, BackfillStatus.FAILED}
    ),
    BackfillStatus.CANCELING: frozenset({BackfillStatus.CANCELED, BackfillStatus.FAILED}),
    **{done: frozenset({BackfillStatus.REQUESTED}) for done in BACKFILL_DONE},  # resume or retry
}


def backfill_change_allowed(status: str, new_status: str) -> bool:
    return new_status in _BACKFILL_NEXT.get(status, ())


class PartitionStatus(_Status):
    """A partition of a job across every backfill: its latest run that counts."""

    MISSING = "MISSING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    IN_PROGRESS = "IN_PROGRESS"
    STALE = "STALE"  # succeeded, with code older than the job's now (see codeversion)


def partition_status_of(run_status: str, owner_alive: bool) -> PartitionStatus | None:
    """What a run says of its partition; None when it does not count (canceled, or left
    unfinished by a process that died), so an older run speaks instead."""
    if run_status == RunStatus.SUCCESS:
        return PartitionStatus.SUCCESS
    if run_status == RunStatus.FAILURE:
        return PartitionStatus.FAILURE
    if run_status in RUN_UNFINISHED and owner_alive:
        return PartitionStatus.IN_PROGRESS
    return None


class Cell(_Status):
    """What one grid cell (a partition's step) shows; the front end receives these names in order."""

    MISSING = "missing"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    SKIPPED = "skipped"
    CANCELED = "canceled"
    REUSED = "reused"  # a success taken from the attempt before (retry from failure)
    STALE = "stale"  # a partition that succeeded with older code


CELLS = tuple(Cell)
CELL_CODE = {cell: code for code, cell in enumerate(CELLS)}

# A step that has a status shows it; a step without one shows its run's.
CELL_OF_STEP = {
    StepStatus.RUNNING: Cell.RUNNING,
    StepStatus.SUCCESS: Cell.SUCCESS,
    StepStatus.FAILURE: Cell.FAILURE,
    StepStatus.SKIPPED: Cell.SKIPPED,
    StepStatus.CANCELED: Cell.CANCELED,
    StepStatus.REUSED: Cell.REUSED,
}
CELL_OF_PENDING_STEP = {
    RunStatus.QUEUED: Cell.QUEUED,
    RunStatus.STARTING: Cell.QUEUED,
    RunStatus.STARTED: Cell.QUEUED,
    RunStatus.CANCELING: Cell.QUEUED,
    RunStatus.SUCCESS: Cell.SUCCESS,
    RunStatus.CANCELED: Cell.CANCELED,
    RunStatus.FAILURE: Cell.SKIPPED,  # a run failed past this step (or before any: see grid)
}
CELL_OF_PARTITION = {
    PartitionStatus.MISSING: Cell.MISSING,
    PartitionStatus.SUCCESS: Cell.SUCCESS,
    PartitionStatus.FAILURE: Cell.FAILURE,
    PartitionStatus.IN_PROGRESS: Cell.RUNNING,
    PartitionStatus.STALE: Cell.STALE,
}


class Event(NamedTuple):
    """One change reported for a run or one of its steps (or a chunk of its log, status "LOG").

    `attempt` is always the run's attempt; `step_attempt` counts a step's retries within it. A
    named tuple: immutable, and cheap to make (every run makes several; a frozen dataclass costs
    three times as much).
    """

    run_id: str
    status: str
    ts: float
    attempt: int = 1
    step: str | None = None
    message: str | None = None  # the error for FAILURE, the reason for CANCELED, the text for LOG
    step_attempt: int = 1
    not_before: float | None = None  # for QUEUED: the earliest a retry may start


LOG = "LOG"
