"""Statuses as pandas DataFrames, read from storage: runs, attempts, steps, and every partition's latest status.

Statuses are categoricals (in lifecycle order), timestamps are tz-aware (UTC), and partitions are
the index (a MultiIndex of the dimensions for multi partitions), never also a column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._lazy import lazy_module
from .jobs import Job
from .partitions import MultiPartitionsDefinition, PartitionsDefinition
from .statuses import BACKFILL_DONE, PartitionStatus, RunStatus, StepStatus, partition_status_of
from .storage import Storage, owner_alive

if TYPE_CHECKING:
    import pandas as pd
else:
    pd = lazy_module("pandas")  # imported when the first frame is built

RUN_COLUMNS = ["run_id", "status", "attempt", "start_time", "end_time", "duration", "error"]
ATTEMPT_COLUMNS = ["run_id", "attempt", "status", "start_time", "end_time", "duration", "error"]


def _categories(enum: type) -> list[str]:
    return [str(s) for s in enum]


def partition_index(partitions: Sequence[str], definition: PartitionsDefinition | None) -> pd.Index:
    """An Index of keys, or a MultiIndex of the dimensions for multi partitions."""
    if isinstance(definition, MultiPartitionsDefinition):
        names = definition.partition_dimension_names
        return pd.MultiIndex.from_tuples([tuple(str(p).split("|")) for p in partitions], names=names)
    return pd.Index(list(partitions), name="partition", dtype=object)


def _times(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values.astype("float64"), unit="s", utc=True)


def runs_df(storage: Storage, backfill_id: str, definition: PartitionsDefinition | None) -> pd.DataFrame:
    """One row per run of a backfill (its latest attempt), in backfill order, indexed by partition."""
    rows = storage.run_rows(backfill_id)
    frame = pd.DataFrame(rows, columns=["run_id", "partition", "status", "attempt", "start_time", "end_time", "error"])
    frame["status"] = pd.Categorical(frame["status"], categories=_categories(RunStatus))
    frame["attempt"] = frame["attempt"].astype("int64")
    frame["start_time"] = _times(frame["start_time"])
    frame["end_time"] = _times(frame["end_time"])
    frame["duration"] = frame["end_time"] - frame["start_time"]
    frame.index = partition_index(frame["partition"].tolist(), definition)
    return frame[RUN_COLUMNS]


def attempts_df(storage: Storage, backfill_id: str, definition: PartitionsDefinition | None) -> pd.DataFrame:
    """One row per attempt of every run of a backfill: the attempts a retry or resume replaced,
    then the current one; when each started and ended, how it ended and why."""
    current = storage.run_rows(backfill_id)
    partition_of = {row[0]: row[1] for row in current}
    position = {row[0]: i for i, row in enumerate(current)}
    attempts = storage.past_attempts(backfill_id) + [(r, a, s, t0, t1, e) for r, _p, s, a, t0, t1, e in current]
    attempts.sort(key=lambda row: (position.get(row[0], len(position)), row[1]))
    frame = pd.DataFrame(attempts, columns=["run_id", "attempt", "status", "start_time", "end_time", "error"])
    frame["status"] = pd.Categorical(frame["status"], categories=_categories(RunStatus))
    frame["attempt"] = frame["attempt"].astype("int64")
    frame["start_time"] = _times(frame["start_time"])
    frame["end_time"] = _times(frame["end_time"])
    frame["duration"] = frame["end_time"] - frame["start_time"]
    frame.index = partition_index([partition_of.get(r, r) for r in frame["run_id"]], definition)
    return frame[ATTEMPT_COLUMNS]


def steps_df(storage: Storage, backfill_id: str, job: Job) -> pd.DataFrame:
    """Partitions x steps of a backfill: each cell the step's status (PENDING until it starts)."""
    runs = storage.run_rows(backfill_id)
    position = {row[0]: i for i, row in enumerate(runs)}
    columns = {name: [StepStatus.PENDING.value] * len(runs) for name in job.step_names}
    for run_id, step, status, _start, _end in storage.step_rows(backfill_id):
        if step in columns and run_id in position:
            columns[step][position[run_id]] = status
    frame = pd.DataFrame(
        {name: pd.Categorical(values, categories=_categories(StepStatus)) for name, values in columns.items()},
        index=partition_index([row[1] for row in runs], job.partitions_def),
    )
    frame.columns.name = "step"
    return frame


def latest_statuses(storage: Storage, job_name: str) -> dict[str, PartitionStatus]:
    """Each partition's status from its latest run that counts: canceled runs do not, nor runs a
    dead process left unfinished (their partition reads as it did before them)."""
    alive = {
        backfill_id
        for backfill_id, status, owner, heartbeat in storage.owners(job_name)
        if status not in BACKFILL_DONE and owner_alive(owner, heartbeat)
    }
    latest: dict[str, PartitionStatus] = {}
    for partition, status, backfill_id in storage.partition_runs(job_name):
        said = partition_status_of(status, backfill_id in alive)
        if said is not None:
            latest[partition] = said
    return latest


def partition_status(storage: Storage, job: Job) -> pd.DataFrame:
    """The latest status of every partition of a job across all backfills (MISSING if never run)."""
    keys = job.partitions_def.get_partition_keys()
    latest = latest_statuses(storage, job.name)
    statuses = [latest.get(k, PartitionStatus.MISSING).value for k in keys]
    return pd.DataFrame(
        {"status": pd.Categorical(statuses, categories=_categories(PartitionStatus))},
        index=partition_index(keys, job.partitions_def),
    )
