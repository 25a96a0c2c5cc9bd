"""Kept outputs read back through the store: a backfill's results by partition, one partition's
latest output, what the files hold, and pruning them. Only steps that succeeded count: an output
written by a run that later failed or was canceled is never returned."""

from __future__ import annotations

import difflib
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidOptionError, UnknownPartitionError, quoted_list
from .jobs import Job
from .outputs import FILES, OUTPUTS_DIR, OutputContext, remove_stale_temporaries, stored_files
from .storage import Storage

if TYPE_CHECKING:
    import pandas as pd

KEEP = ("latest", "none")


def _step_of(job: Job, step: str | None) -> str:
    """The step asked for (the job's final step by default), or an error naming the job's steps."""
    names = job.step_names
    if step is None:
        return names[-1]
    if step not in names:
        close = difflib.get_close_matches(str(step), names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InvalidOptionError(f"job {job.name!r} has no step {step!r}{hint} (its steps: {quoted_list(names)})")
    return step


def _latest(rows: list[tuple], step: str) -> dict[str, tuple[str, int]]:
    """partition -> (run_id, attempt) of the latest success of `step` among succeeded_steps rows."""
    return {partition: (run_id, attempt) for partition, name, run_id, attempt, _ in rows if name == step}


def _latest_by_step(rows: list[tuple]) -> dict[tuple[str, str], tuple[str, int]]:
    """(partition, step) -> (run_id, attempt) of its latest success."""
    return {(partition, step): (run_id, attempt) for partition, step, run_id, attempt, _ in rows}


def _load(job: Job, storage: Storage, step: str, partition: str, run_id: str, attempt: int) -> Any:
    where = OutputContext(job.name, step, partition, run_id, attempt, str(storage.home / OUTPUTS_DIR))
    try:
        return (job.io or FILES).load(where)
    except FileNotFoundError:
        raise InvalidOptionError(
            f"step {step!r} of partition {partition!r} succeeded in run {run_id} but its output was not kept "
            f"(None, not picklable, too large, pruned, or keep_outputs=False): its run's log says which"
        ) from None


def results(job: Job, storage: Storage, backfill_id: str, step: str | None = None) -> dict[str, Any]:
    """{partition: value} of a step (the final one by default) wherever it succeeded in the backfill."""
    name = _step_of(job, step)
    latest = _latest(storage.succeeded_steps(job.name, backfill_id=backfill_id), name)
    in_order = sorted(latest.items(), key=lambda item: item[1])  # run ids end with their place in the backfill
    return {partition: _load(job, storage, name, partition, *run) for partition, run in in_order}


def results_df(job: Job, storage: Storage, backfill_id: str, step: str | None = None) -> pd.DataFrame:
    """The DataFrame outputs of a step, one after another, with a `partition` column first."""
    from .frames import pd

    frames = []
    for partition, value in results(job, storage, backfill_id, step).items():
        if not isinstance(value, pd.DataFrame):
            raise InvalidOptionError(
                f"results_df() joins DataFrames, but the output of partition {partition!r} is a "
                f"{type(value).__name__}: use results() for other values"
            )
        frames.append(value.assign(partition=partition)[["partition", *value.columns]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"partition": []})


def load_output(job: Job, partition: str, step: str | None, storage: Storage) -> Any:
    """The latest kept output of a step (the final one by default) for one partition, any backfill."""
    name = _step_of(job, step)
    latest = _latest(storage.succeeded_steps(job.name, partition=partition), name)
    if partition not in latest:
        raise UnknownPartitionError(
            f"no run of job {job.name!r} has succeeded step {name!r} for partition {partition!r} yet"
        )
    return _load(job, storage, name, partition, *latest[partition])


def _files(job: Job, storage: Storage) -> list[tuple[str, str, int, Path]]:
    if job.io is not None:
        raise InvalidOptionError(f"job {job.name!r} keeps its outputs with its own io=, which knows where they are")
    return list(stored_files(storage.home / OUTPUTS_DIR, job.name))


def list_outputs(job: Job, storage: Storage) -> pd.DataFrame:
    """Every output file of a job: partition, step, run, attempt, bytes, when written, whether it is
    the latest (what load_output returns), and its path."""
    from .frames import pd

    latest = _latest_by_step(storage.succeeded_steps(job.name))
    files = _files(job, storage)
    partition_of = storage.partitions_of(sorted({run_id for _, run_id, _, _ in files}))
    rows = []
    for step, run_id, attempt, path in files:
        stat = path.stat()
        partition = partition_of.get(run_id)
        rows.append(
            {
                "partition": partition,
                "step": step,
                "run_id": run_id,
                "attempt": attempt,
                "bytes": stat.st_size,
                "written": datetime.fromtimestamp(stat.st_mtime, timezone.utc),
                "latest": latest.get((partition, step)) == (run_id, attempt),
                "path": str(path),
            }
        )
    columns = ["partition", "step", "run_id", "attempt", "bytes", "written", "latest", "path"]
    return pd.DataFrame(rows, columns=columns)


def prune_outputs(job: Job, storage: Storage, keep: str = "latest") -> int:
    """Delete a job's output files but the latest of each partition and step (keep="latest") or
    all of them (keep="none"); returns the bytes freed."""
    if keep not in KEEP:
        raise InvalidOptionError(f"keep must be one of {quoted_list(list(KEEP))}, got {keep!r}")
    latest = _latest_by_step(storage.succeeded_steps(job.name))
    kept = set() if keep == "none" else {(r, s, a) for (_, s), (r, a) in latest.items()}
    freed = 0
    for step, run_id, attempt, path in _files(job, storage):
        if (run_id, step, attempt) not in kept:
            freed += path.stat().st_size
            path.unlink(missing_ok=True)
    remove_stale_temporaries(storage.home / OUTPUTS_DIR, job.name)
    return freed
