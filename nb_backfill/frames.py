"""Statuses as pandas DataFrames, read from storage: runs, steps, and every partition's latest status.

Statuses are categoricals (in Dagster's order), timestamps are tz-aware (UTC), and multi-partition
keys become a MultiIndex of their dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .jobs import Job
from .partitions import MultiPartitionsDefinition, PartitionsDefinition
from .storage import RUN_IN_FLIGHT, RUN_STATUSES, STEP_STATUSES, Storage

PARTITION_STATUSES = ("MISSING", "SUCCESS", "FAILURE", "IN_PROGRESS")
RUN_COLUMNS = ["run_id", "backfill_id", "partition", "status", "attempt", "start_time", "end_time", "duration", "error"]


def partition_index(partitions: Sequence[str], definition: PartitionsDefinition) -> pd.Index:
    """An Index of keys, or a MultiIndex of the dimensions for multi partitions."""
    if isinstance(definition, MultiPartitionsDefinition):
        names = definition.partition_dimension_names
        return pd.MultiIndex.from_tuples([tuple(str(p).split("|")) for p in partitions], names=names)
    return pd.Index(list(partitions), name="partition", dtype=object)


def _times(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values.astype("float64"), unit="s", utc=True)


def runs_df(storage: Storage, backfill_id: str, definition: PartitionsDefinition) -> pd.DataFrame:
    """One row per run of a backfill, in backfill order, indexed by partition."""
    rows = storage.query(
        "SELECT run_id, backfill_id, partition, status, attempt, start_time, end_time, error "
        "FROM runs WHERE backfill_id = ? ORDER BY seq",
        (backfill_id,),
    )
    frame = pd.DataFrame(rows, columns=[c for c in RUN_COLUMNS if c != "duration"])
    frame["status"] = pd.Categorical(frame["status"], categories=RUN_STATUSES)
    frame["attempt"] = frame["attempt"].astype("int64")
    frame["start_time"] = _times(frame["start_time"])
    frame["end_time"] = _times(frame["end_time"])
    frame["duration"] = frame["end_time"] - frame["start_time"]
    frame = frame[RUN_COLUMNS]
    frame.index = partition_index(frame["partition"].tolist(), definition)
    return frame


def steps_df(storage: Storage, backfill_id: str, job: Job) -> pd.DataFrame:
    """Partitions x steps of a backfill: each cell the step's status (PENDING until it starts)."""
    runs = storage.query("SELECT run_id, partition FROM runs WHERE backfill_id = ? ORDER BY seq", (backfill_id,))
    position = {run_id: i for i, (run_id, _) in enumerate(runs)}
    columns = {name: ["PENDING"] * len(runs) for name in job.step_names}
    for run_id, step, status, _start, _end in storage.step_rows(backfill_id):
        if step in columns and run_id in position:
            columns[step][position[run_id]] = status
    partitions = [partition for _, partition in runs]
    frame = pd.DataFrame(
        {name: pd.Categorical(values, categories=STEP_STATUSES) for name, values in columns.items()},
        index=partition_index(partitions, job.partitions_def),
    )
    frame.columns.name = "step"
    return frame


def latest_statuses(storage: Storage, job_name: str) -> dict[str, str]:
    """Each partition's status from its latest run that was not canceled: SUCCESS, FAILURE or IN_PROGRESS."""
    latest: dict[str, str] = {}
    for partition, status in storage.latest_runs(job_name):
        if status == "SUCCESS" or status == "FAILURE":
            latest[partition] = status
        elif status in RUN_IN_FLIGHT or status == "QUEUED" or status == "NOT_STARTED":
            latest[partition] = "IN_PROGRESS"
    return latest


def partition_status(storage: Storage, job: Job) -> pd.DataFrame:
    """The latest status of every partition of a job across all backfills (MISSING if never run)."""
    keys = job.partitions_def.get_partition_keys()
    latest = latest_statuses(storage, job.name)
    statuses = [latest.get(k, "MISSING") for k in keys]
    return pd.DataFrame(
        {"status": pd.Categorical(statuses, categories=PARTITION_STATUSES)},
        index=partition_index(keys, job.partitions_def),
    )
