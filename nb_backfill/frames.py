"""Statuses as pandas DataFrames, read from storage: runs, attempts, steps, and every partition's latest status.

Statuses are categoricals (in lifecycle order), timestamps are tz-aware (UTC), and partitions are
the index (a MultiIndex of the dimensions for multi partitions), never also a column. Storage reads
each column in bulk (`Storage.run_columns`): frames are built from arrays, never from a tuple a row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_module
from .codeversion import code_id
from .jobs import Job
from .partitions import MultiPartitionsDefinition, PartitionsDefinition
from .statuses import BACKFILL_DONE, PartitionStatus, RunStatus, StepStatus, partition_status_of
from .storage import Lines, Storage, owner_alive

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    np = lazy_module("numpy")
    pd = lazy_module("pandas")  # imported when the first frame is built

RUN_COLUMNS = ["run_id", "status", "attempt", "start_time", "end_time", "duration", "error"]
ATTEMPT_COLUMNS = ["run_id", "attempt", "status", "start_time", "end_time", "duration", "error"]
_READ = ["run_id", "partition", "status", "attempt", "start_time", "end_time", "error"]

_PARTITIONS = tuple(PartitionStatus)


def _said(status: RunStatus, alive: bool) -> int:
    """partition_status_of as a code: a PartitionStatus's place, -1 where the run does not count."""
    said = partition_status_of(status, alive)
    return -1 if said is None else _PARTITIONS.index(said)


# What a run says of its partition, by its status's code (its place in RunStatus) and whether its
# backfill's owner is alive; the last entry, -1, for a status that is none of them (code -1)
_SAYS = {alive: [*(_said(s, alive) for s in RunStatus), -1] for alive in (False, True)}


def _categories(enum: type) -> list[str]:
    return [str(s) for s in enum]


def partition_index(partitions: Sequence[str] | np.ndarray, definition: PartitionsDefinition | None) -> pd.Index:
    """An Index of keys, or a MultiIndex of the dimensions for multi partitions."""
    if isinstance(definition, MultiPartitionsDefinition):
        names = definition.partition_dimension_names
        parts = "|".join(partitions).split("|") if len(partitions) else []
        if len(parts) == len(names) * len(partitions):  # every key has a value a dimension
            return pd.MultiIndex.from_arrays([parts[i :: len(names)] for i in range(len(names))], names=names)
        return pd.MultiIndex.from_tuples([tuple(str(p).split("|")) for p in partitions], names=names)
    return pd.Index(np.array(partitions, dtype=object), name="partition", dtype=object, copy=False)


class _Places:
    """Where texts are among unique `keys`: their positions, -1 for none. Texts that are the keys
    themselves, line for line (a backfill of every key in order, a step of every run), need no
    hash table (`listed`: the keys as a list, if at hand)."""

    def __init__(self, keys: Lines, listed: list[str] | None = None):
        self.keys, self._listed = keys, listed
        self._index: pd.Index | None = None

    def of(self, texts: Lines) -> np.ndarray:
        if texts == self.keys:
            return np.arange(texts.size)
        if self._index is None:
            self._index = pd.Index(self.keys.split() if self._listed is None else self._listed, dtype=object)
        return self._index.get_indexer(texts.split())


def _run_table(columns: dict[str, Any]) -> dict[str, Any]:
    """The columns of a frame of runs or attempts, from storage's columns (run ids as a list)."""
    start, end = (pd.to_datetime(columns[name], unit="s", utc=True) for name in ("start_time", "end_time"))
    return {
        "run_id": np.array(columns["run_id"], dtype=object),
        "status": pd.Categorical.from_codes(columns["status"], categories=_categories(RunStatus)),
        "attempt": columns["attempt"],
        "start_time": start,
        "end_time": end,
        "duration": end - start,
        "error": np.array(columns["error"], dtype=object),
    }


def runs_df(storage: Storage, backfill_id: str, definition: PartitionsDefinition | None) -> pd.DataFrame:
    """One row per run of a backfill (its latest attempt), in backfill order, indexed by partition."""
    columns = storage.run_columns(backfill_id, _READ)
    table = _run_table({**columns, "run_id": columns["run_id"].split()})
    return pd.DataFrame(table, index=partition_index(columns["partition"].split(), definition))[RUN_COLUMNS]


def attempts_df(storage: Storage, backfill_id: str, definition: PartitionsDefinition | None) -> pd.DataFrame:
    """One row per attempt of every run of a backfill: the attempts a retry or resume replaced,
    then the current one; when each started and ended, how it ended and why."""
    with storage.reading():
        current = storage.run_columns(backfill_id, _READ)
        past = storage.past_attempt_columns(backfill_id)
    run_ids, past_ids = current["run_id"].split(), past["run_id"].split()
    n = len(run_ids)
    where = _Places(current["run_id"], run_ids).of(past["run_id"])  # each past attempt's run; -1: gone
    gone = where < 0
    # each row (past attempts, then current ones): its run's place, a gone run's after them all
    place = np.concatenate([np.where(gone, n, where), np.arange(n)])
    order = np.lexsort((np.concatenate([past["attempt"], current["attempt"]]), place))  # stable
    # each row's label: its run's partition, a gone run's id
    labels = np.array(current["partition"].split() + past_ids, dtype=object)
    index = labels[np.concatenate([np.where(gone, n + np.arange(len(past_ids)), where), np.arange(n)])[order]]
    past, current = {**past, "run_id": past_ids}, {**current, "run_id": run_ids}
    both = {name: _joined(past[name], current[name], order) for name in past}
    return pd.DataFrame(_run_table(both), index=partition_index(index, definition))[ATTEMPT_COLUMNS]


def _joined(first: Any, rest: Any, order: np.ndarray) -> np.ndarray:
    """Two pieces of a column (lists or arrays) as one array, in `order`."""
    if isinstance(first, list):
        return np.array(first + rest, dtype=object)[order]
    return np.concatenate([first, rest])[order]


def steps_df(storage: Storage, backfill_id: str, job: Job) -> pd.DataFrame:
    """Partitions x steps of a backfill: each cell the step's status (PENDING until it starts)."""
    names = job.step_names
    with storage.reading():
        runs = storage.run_columns(backfill_id, ["run_id", "partition"])
        steps = storage.step_columns(backfill_id, names)
    where = _Places(runs["run_id"]).of(steps["run_id"])
    known = (where >= 0) & (steps["step"] >= 0)  # a step row of a run of this backfill, of a step of the job
    codes = np.full((len(names), runs["run_id"].size), tuple(StepStatus).index(StepStatus.PENDING), np.int8)
    codes[steps["step"][known], where[known]] = steps["status"][known]
    categories = _categories(StepStatus)
    frame = pd.DataFrame(
        {name: pd.Categorical.from_codes(codes[i], categories=categories) for i, name in enumerate(names)},
        index=partition_index(runs["partition"].split(), job.partitions_def),
    )
    frame.columns.name = "step"
    return frame


_SUCCESS, _STALE = _PARTITIONS.index(PartitionStatus.SUCCESS), _PARTITIONS.index(PartitionStatus.STALE)


def _counted(storage: Storage, job: Job) -> Iterator[tuple[Lines, np.ndarray]]:
    """Each backfill of a job, oldest first: its runs' partitions, and what each run says of its
    partition (a PartitionStatus code, STALE for a success with code older than the job's now;
    -1 where it does not count: canceled, or left unfinished by a process that died)."""
    code = code_id(job.code_versions())
    with storage.reading():
        for record in reversed(storage.list_backfills(job.name)):  # newest first, there
            alive = record.status not in BACKFILL_DONE and owner_alive(record.owner, record.heartbeat)
            columns = storage.run_columns(record.id, ["partition", "status"], code=code)
            says = np.array(_SAYS[alive], np.int8)[columns["status"]]
            says[(says == _SUCCESS) & (columns["older"] == 1)] = _STALE
            yield columns["partition"], says


def latest_statuses(storage: Storage, job: Job) -> dict[str, PartitionStatus]:
    """Each partition's status from its latest run that counts: canceled runs do not, nor runs a
    dead process left unfinished (their partition reads as it did before them)."""
    latest: dict[str, PartitionStatus] = {}
    for lines, says in _counted(storage, job):
        partitions, counts = lines.split(), np.flatnonzero(says >= 0)
        latest.update(zip([partitions[i] for i in counts.tolist()], [_PARTITIONS[c] for c in says[counts].tolist()]))
    return latest


def partition_status(storage: Storage, job: Job) -> pd.DataFrame:
    """The latest status of every partition of a job across all backfills (MISSING if never run)."""
    keys = job.partitions_def.get_partition_keys()
    places = _Places(Lines.of(keys), keys)
    latest = np.full(len(keys), -1)  # each key's latest run that counts: its place among all runs read
    said, offset = [], 0
    for partitions, says in _counted(storage, job):
        where = places.of(partitions)
        counts = np.flatnonzero((where >= 0) & (says >= 0))
        np.maximum.at(latest, where[counts], offset + counts)  # the later run wins, whatever the order
        said.append(says)
        offset += len(says)
    missing = np.array([_PARTITIONS.index(PartitionStatus.MISSING)], np.int8)
    codes = np.concatenate([*said, missing])[latest]  # -1, no run: the last entry, MISSING
    return pd.DataFrame(
        {"status": pd.Categorical.from_codes(codes, categories=_categories(PartitionStatus))},
        index=partition_index(keys, job.partitions_def),
    )
