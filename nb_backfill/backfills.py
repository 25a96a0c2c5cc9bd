"""Launching backfills and the `Backfill` handle: read its state, control it, resume it.

`launch_backfill` checks everything first (a bad value raises and writes nothing), starts the
executor, writes the backfill and its QUEUED runs in one transaction (for a large choice of all or
a range, the first chunk of them and where the rest come from: see chunks.py), hands them to this
process's engine and returns at once. A handle only reads storage, so `get_backfill(id)` in a new kernel sees
the same backfill; reading never writes and never starts a thread. Control (cancel, pause, resume,
retry, concurrency) is a message: decided by the engine that runs the backfill (this process's, or
another's through the store), or, when no live process runs it, by this process's engine taking
it over.
"""

from __future__ import annotations

import difflib
import secrets
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from . import chunks, debugging, frames, results
from .canary import canary_first
from .engine import Engine, OwnedElsewhere, job_missing, running
from .errors import (
    BackfillStateError,
    InvalidOptionError,
    SelectionError,
    UnknownBackfillError,
    UnknownPartitionError,
    quoted_list,
)
from .executors import make_executor
from .frames import pd  # pandas, imported when the first frame is built
from .jobs import Job, RetryPolicy, RunContext, check_tags, get_job
from .options import LaunchOptions, check_options, positive_int
from .policy import PendingRun
from .progress import Progress, Tracker, all_counts
from .selection import Choice
from .statuses import BACKFILL_DONE, BackfillStatus, PartitionStatus
from .storage import BackfillRecord, RunRecord, Storage, get_instance, owner_alive, run_id_of


def check_main_guard() -> None:
    """executors.process.check_main_guard, imported by the first process-executor launch (not at
    `import nb_backfill`: it loads multiprocessing and cloudpickle)."""
    from .executors.process import check_main_guard as check

    check()


ASK_TIMEOUT = 10.0  # seconds to wait for another process to carry out a command


def _new_id(length: int = 8) -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(length))


_REASONS = {
    PartitionStatus.MISSING: "missing",
    PartitionStatus.FAILURE: "failed",
    PartitionStatus.SUCCESS: "already succeeded",
    PartitionStatus.IN_PROGRESS: "in flight",
    PartitionStatus.STALE: "stale: succeeded with older code",
}


def plan(job: Job, choice: Choice, storage: Storage, current_time: datetime | None = None) -> pd.DataFrame:
    """What a launch would do for each chosen partition: launch or skip, and why."""
    return _plan(job, choice, choice.keys(job.partitions_def, current_time), storage)


def _launches(choice: Choice, status: PartitionStatus) -> bool:
    """Whether a launch of `choice` runs a partition whose latest status is `status`."""
    if choice.failed:
        return status == PartitionStatus.FAILURE
    if choice.stale:
        return status == PartitionStatus.STALE
    if choice.missing:
        return status in (PartitionStatus.MISSING, PartitionStatus.FAILURE)
    return True


def unchanged_steps(
    job: Job, partitions: Sequence[str], storage: Storage
) -> dict[str, tuple[tuple[str, str, int], ...]]:
    """partition -> (step, run_id, attempt) of the steps whose code is unchanged since the
    partition's latest success: a stale partition reruns only the others (and what follows them)."""
    latest = storage.latest_successes(job.name, partitions)
    known = storage.code_versions(sorted({code for _, _, code in latest.values() if code}))
    now = job.code_versions()
    reuse = {}
    for partition, (run_id, attempt, code) in latest.items():
        then = known.get(code or "", {})
        reuse[partition] = tuple((s, run_id, attempt) for s, v in now.items() if then.get(s) == v)
    return reuse


def chosen_keys(job: Job, choice: Choice, keys: list[str], storage: Storage) -> list[str]:
    """The keys a launch of `choice` runs, in definition order: all of them unless it asks for only
    the missing, failed or stale ones (only then are the partitions' statuses read)."""
    if not choice.narrows:
        return keys
    latest = frames.latest_statuses(storage, job)
    return [k for k in keys if _launches(choice, latest.get(k, PartitionStatus.MISSING))]


def _plan(job: Job, choice: Choice, keys: list[str], storage: Storage) -> pd.DataFrame:
    statuses = frames.latest_statuses(storage, job)
    latest = [statuses.get(k, PartitionStatus.MISSING) for k in keys]
    launch = ["launch" if _launches(choice, status) else "skip" for status in latest]
    return pd.DataFrame(
        {
            "partition": list(keys),
            "action": pd.Categorical(launch, categories=["launch", "skip"]),
            "reason": [_REASONS[status] for status in latest],
        },
        index=frames.partition_index(keys, job.partitions_def),
    )


def launch_backfill(
    job: Job,
    partitions: str | Sequence[str] | None = None,
    from_: str | None = None,
    to: str | None = None,
    all: bool = False,
    missing_only: bool = False,
    failed_only: bool = False,
    tags: Mapping[str, str] | None = None,
    coordinator: str = "default",
    max_concurrent: int | None = None,
    tag_concurrency_limits: Sequence[Mapping[str, Any]] | None = None,
    executor: str = "thread",
    max_workers: int | None = None,
    order: str = "asc",
    retries: int | RetryPolicy | None = None,
    dry_run: bool = False,
    *,
    dask_address: str | None = None,
    dask_client: Any = None,
    stale_only: bool = False,
    stop_on_canary_failure: bool = False,
    instance: Storage | str | None = None,
    current_time: datetime | None = None,
) -> Backfill | pd.DataFrame:
    """Launch a run for each selected partition and return a `Backfill` handle at once.

    With `dry_run=True`, return the plan (partition, action, reason) and write nothing.
    `order="canary"` runs the partitions likeliest to break first (see canary), and with
    `stop_on_canary_failure` pauses the backfill when one fails, before the rest start.
    `stale_only` launches only the partitions that succeeded with older code (see codeversion),
    rerunning only their steps whose code changed and the steps after them. With
    `executor="dask"`, runs go to the Dask scheduler at `dask_address`, or `dask_client`'s, or the
    kernel's default client's, or else to a local cluster started for the backfill.
    """
    options = check_options(
        coordinator,
        max_concurrent,
        tag_concurrency_limits,
        executor,
        max_workers,
        order,
        retries,
        dask_address,
        stop_on_canary_failure,
    )
    if dask_client is not None and options.executor != "dask":
        raise InvalidOptionError(f"dask_client is for executor='dask', got executor={executor!r}")
    choice = Choice(partitions, from_, to, all, missing_only, failed_only, stale_only)
    return launch(
        job,
        choice,
        options,
        tags,
        dry_run=dry_run,
        instance=instance,
        current_time=current_time,
        dask_client=dask_client,
    )


def launch(
    job: Job,
    choice: Choice,
    options: LaunchOptions,
    tags: Mapping[str, str] | None = None,
    *,
    dry_run: bool = False,
    instance: Storage | str | None = None,
    current_time: datetime | None = None,
    dask_client: Any = None,
) -> Backfill | pd.DataFrame:
    """`launch_backfill` for faces that already hold a Choice and checked options."""
    if not isinstance(job, Job):
        raise InvalidOptionError(f"job must be a Job (made with @nbb.job or nbb.Job(...)), got {job!r}")
    try:
        backfill_tags = check_tags(tags, "tags")
    except ValueError as error:
        raise InvalidOptionError(str(error)) from None
    if options.executor == "process":
        check_main_guard()
    if options.executor == "dask":
        from .executors.dask import check_resources

        check_resources(job, backfill_tags)
    keys = choice.keys(job.partitions_def, current_time)  # a bad choice raises before the store is touched
    storage = get_instance(instance)
    if dry_run:
        return _plan(job, choice, keys, storage)
    chosen = chosen_keys(job, choice, keys, storage)
    if not chosen:
        why = "failed" if choice.failed else "stale" if choice.stale else "missing or failed"
        raise SelectionError(f"nothing to launch: none of the {len(keys)} selected partitions is {why}")
    now = time.time()
    current_time = current_time or datetime.fromtimestamp(now, timezone.utc)  # the keys' moment, kept
    # all or a range of keys that can be computed again: the engine writes most runs after launch
    lazy = choice.partitions is None and not choice.narrows and options.order != "canary"
    selection = chunks.selection_of(job.partitions_def, chosen, options.order == "desc", current_time) if lazy else None
    canaries = 0
    if options.order == "canary":
        ordered, canaries = canary_first(job.partitions_def, chosen)
    else:
        ordered = chosen[::-1] if options.order == "desc" else chosen
    first = ordered if selection is None else ordered[: chunks.FIRST_CHUNK]  # the runs written now
    engine = Engine.for_storage(storage)
    # before writing anything: an executor that cannot start (or a cluster out of reach) writes nothing
    executor = make_executor(
        options.executor, options.workers(len(chosen)), engine.emit, options.dask_address, dask_client
    )
    if options.executor == "dask":  # where it runs, so a resume elsewhere goes there too; where to watch it
        own = dask_client is None and options.dask_address is None and executor.launched_cluster
        options = replace(
            options, dask_address=None if own else executor.address, dask_dashboard=executor.dashboard_link
        )
    record = BackfillRecord(
        id=_new_id(),
        job_name=job.name,
        status=BackfillStatus.REQUESTED,
        created=now,
        updated=now,
        ended=None,
        num_partitions=len(chosen),
        options=options.to_json(),
        tags=backfill_tags,
        partitions_def=repr(job.partitions_def),
        owner=engine.owner,
        heartbeat=now,
        written=None if selection is None else len(first),
        selection=None if selection is None else selection.to_json(),
    )
    run_ids = [run_id_of(record.id, i) for i in range(len(first))]
    try:
        storage.create_backfill(record, zip(run_ids, first, range(len(first))))
    except BaseException:
        executor.shutdown()
        raise
    reuse = unchanged_steps(job, first, storage) if choice.stale else {}
    pending = [PendingRun(r, p, 1, reuse=reuse.get(p, ())) for r, p in zip(run_ids, first)]
    active = running(record, job, options, pending, executor)
    active.canaries = set(run_ids[:canaries])
    engine.launch(active)
    return Backfill(record.id, storage, job)


# --- reading: never writes, never starts a thread


def _record(storage: Storage, backfill_id: str) -> BackfillRecord:
    """The stored backfill, as this process knows it (a failure its engine could not store shows)."""
    record = storage.get_backfill(backfill_id) if isinstance(backfill_id, str) else None
    if record is None:
        known = storage.backfill_ids()
        close = difflib.get_close_matches(str(backfill_id), known, n=3)
        hint = f"; did you mean {quoted_list(close)}?" if close else ""
        listing = f"known backfills: {quoted_list(known)}" if known else "the store has no backfills yet"
        raise UnknownBackfillError(f"unknown backfill id {backfill_id!r}{hint} ({listing}, in {str(storage.path)!r})")
    engine = Engine.existing(storage)
    fault = engine.fault(record.id) if engine is not None else None
    if fault is not None and record.status not in BACKFILL_DONE:
        return replace(record, status=BackfillStatus.FAILED, error=fault)
    return record


def stopped_note(storage: Storage, record: BackfillRecord) -> str | None:
    """Why a backfill is not moving, in words, or None while it runs: paused, its process gone
    (and how to resume it), or the error that failed it."""
    if record.status == BackfillStatus.FAILED:
        return f"failed: {record.error}" if record.error else "failed"
    if record.status in BACKFILL_DONE:
        return None
    if record.status == BackfillStatus.PAUSED:
        return "paused: resume it to go on"
    engine = Engine.existing(storage)
    if (engine is not None and engine.owns(record.id)) or owner_alive(record.owner, record.heartbeat):
        return None
    return (
        f"its process ({record.owner or 'none'}) stopped before it finished: resume it with "
        f"nbb.resume_backfill({record.id!r}) or `nb-backfill backfill resume {record.id}`"
    )


def process_of(storage: Storage, record: BackfillRecord) -> str:
    """Who runs a backfill, for listings: 'this process', 'pid N on HOST', 'stopped', or '' when done."""
    if record.status in BACKFILL_DONE:
        return ""
    engine = Engine.existing(storage)
    if engine is not None and record.owner == engine.owner:
        return "this process"
    if owner_alive(record.owner, record.heartbeat):
        host, pid, _ = (record.owner or "::").rsplit(":", 2)
        return f"pid {pid} on {host}"
    return "none: resume it" if record.status == BackfillStatus.PAUSED else "stopped: resume it"


def _job_for(record: BackfillRecord, job: Job | None) -> Job:
    found = job or get_job(record.job_name)
    if found is None:
        raise BackfillStateError(job_missing(record))
    if found.name != record.job_name:
        raise InvalidOptionError(f"backfill {record.id!r} belongs to job {record.job_name!r}, not {found.name!r}")
    return found


# --- control: a message decided by the engine that runs the backfill


def control(storage: Storage, backfill_id: str, verb: str, arg: Any = None, job: Job | None = None) -> str:
    """Ask the engine that runs the backfill to do `verb`; returns what it did, in words.

    This process's engine decides if it runs the backfill; another live process's is asked through
    the store; a backfill no live process runs is taken over by this process's engine."""
    record = _record(storage, backfill_id)
    engine = Engine.existing(storage)
    local = engine is not None and (engine.owns(backfill_id) or record.owner == engine.owner)
    if not local and record.status not in BACKFILL_DONE and owner_alive(record.owner, record.heartbeat):
        return _ask_owner(storage, record, verb, arg, job)
    try:
        return Engine.for_storage(storage).control(backfill_id, verb, arg, job)
    except OwnedElsewhere as busy:  # another process took it over meanwhile
        return _ask_owner(storage, busy.record, verb, arg, job)


def _ask_owner(storage: Storage, record: BackfillRecord, verb: str, arg: Any, job: Job | None) -> str:
    """Post a command for the live process that runs the backfill and wait for its answer; if that
    process goes away meanwhile, do it here."""
    command = storage.post_command(record.id, record.owner or "", verb, arg)
    deadline = time.monotonic() + ASK_TIMEOUT
    while True:
        done, result, error = storage.command_outcome(command)
        if done is not None:
            if error is not None:
                raise BackfillStateError(error)
            return result or ""
        current = storage.get_backfill(record.id) or record
        if current.status in BACKFILL_DONE or not owner_alive(current.owner, current.heartbeat):
            return Engine.for_storage(storage).control(record.id, verb, arg, job)
        if time.monotonic() > deadline:
            raise BackfillStateError(
                f"backfill {record.id!r} is run by another process ({current.owner}), which did not answer "
                f"within {ASK_TIMEOUT:.0f} s: try again"
            )
        time.sleep(0.05)


class Backfill:
    """A handle on one backfill: every answer is read from storage; every change is a message to
    the engine that runs it."""

    def __init__(self, backfill_id: str, storage: Storage, job: Job | None = None):
        self.id = backfill_id
        self._storage = storage
        self._job = job
        self._widget = None

    @property
    def record(self) -> BackfillRecord:
        return _record(self._storage, self.id)

    @property
    def job(self) -> Job:
        return _job_for(self.record, self._job)

    @property
    def status(self) -> str:
        """REQUESTED, PAUSED, CANCELING, CANCELED, COMPLETED_SUCCESS, COMPLETED_FAILED or FAILED."""
        return str(self.record.status)

    def counts(self) -> dict[str, int]:
        """Runs by status, every status named (zeros included)."""
        return all_counts(self._storage.run_counts(self.id))

    def progress(self) -> Progress:
        """Counts, percent done and what keeps it from moving, if anything."""
        record = self.record
        return Progress(self.id, record.status, self.counts(), None, stopped_note(self._storage, record))

    def wait(self, timeout: float | None = None) -> str:
        """Block until the backfill is done and return its final status; raise TimeoutError after
        `timeout` seconds, or BackfillStateError if the process running it stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.record
            if record.status in BACKFILL_DONE:
                return str(record.status)
            if record.status != BackfillStatus.PAUSED:
                note = stopped_note(self._storage, record)
                if note is not None:
                    raise BackfillStateError(f"backfill {self.id!r} is {record.status}, but {note}")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(
                    f"backfill {self.id!r} is still {record.status} after {timeout} s: {self.progress().line()}"
                )
            self._storage.wait_for_change(0.15 if left is None else min(0.15, left), backfills_only=True)

    def cancel(self, now: bool = False) -> str:
        """Cancel: runs not started are CANCELED at once; running ones stop at their next step
        (or at `context.check_canceled()`); a run whose steps all completed stays SUCCESS.
        Worker processes of the process executor are stopped. With `now=True` (a process about
        to exit), every unfinished run is marked CANCELED at once. Returns what happened."""
        return control(self._storage, self.id, "abort" if now else "cancel")

    def pause(self) -> str:
        """Start no more runs; runs already started finish. `resume()` goes on."""
        return control(self._storage, self.id, "pause")

    def resume(self) -> Backfill:
        """Go on after pause(); for a stopped backfill (canceled, or its process died), run every
        partition not yet SUCCESS (canceled and never-started ones too) here."""
        control(self._storage, self.id, "resume", job=self._job)
        return self

    def retry_failed(self, from_failure: bool = False) -> Backfill:
        """Run the FAILURE partitions (interrupted ones included) again as their next attempt;
        BackfillStateError if none failed. With `from_failure`, each reruns only its failed step
        and the steps after it, reusing the kept outputs of the steps that succeeded (REUSED)."""
        control(self._storage, self.id, "retry", from_failure or None, job=self._job)
        return self

    def set_max_concurrent(self, n: int) -> str:
        """Change how many runs may run at once, live (switches to the queued coordinator)."""
        return control(self._storage, self.id, "max_concurrent", positive_int("max_concurrent", n, allow_none=False))

    def runs_df(self) -> pd.DataFrame:
        """One row per partition (its latest attempt), indexed by partition."""
        return frames.runs_df(self._storage, self.id, self._definition())

    def attempts_df(self) -> pd.DataFrame:
        """One row per attempt of every partition: status, start, end and error of each."""
        return frames.attempts_df(self._storage, self.id, self._definition())

    def steps_df(self) -> pd.DataFrame:
        return frames.steps_df(self._storage, self.id, self.job)

    def context_for(self, partition: str) -> RunContext:
        """The context the partition's run had (key, time window, ids, attempt, tags), to call a
        step by hand: `transform.fn(bf.context_for("2024-03-10"), extracted)`."""
        return debugging.context_for(self.job, self.record, self.run(partition))

    def debug(self, partition: str, post_mortem: bool = True) -> Any:
        """Run the failed partition's failing step again in this kernel, with the same context and
        the kept upstream outputs of its failed attempt; on an error the debugger opens at the
        failing line (as `%debug` does), then the error is raised. Returns the output if it now
        succeeds (the bug is fixed: retry_failed(from_failure=True) reruns it for real)."""
        return debugging.debug(self.job, self._storage, self.record, self.run(partition), post_mortem)

    def results(self, step: str | None = None) -> dict[str, Any]:
        """{partition: value} of a step (the final one by default) where it succeeded, from the
        outputs kept (see `keep_outputs`)."""
        return results.results(self.job, self._storage, self.id, step)

    def results_df(self, step: str | None = None) -> pd.DataFrame:
        """The DataFrame outputs of a step, concatenated, with a `partition` column."""
        return results.results_df(self.job, self._storage, self.id, step)

    def _definition(self):
        job = self._job or get_job(self.record.job_name)
        return job.partitions_def if job is not None else None

    def run(self, partition: str) -> RunRecord:
        """The stored run of one partition of this backfill (its latest attempt)."""
        run = self._storage.run_of(self.id, partition)
        if run is not None:
            return run
        runs = self._storage.runs(self.id)
        span = (
            f"its {len(runs)} partitions run from {runs[0].partition!r} to {runs[-1].partition!r}"
            if runs
            else "it has no runs"
        )
        raise UnknownPartitionError(f"partition {partition!r} is not in backfill {self.id!r}: {span}")

    def logs(self, partition: str) -> str:
        """Everything the partition's run printed or logged, every attempt, oldest first."""
        return "".join(text for _, _, text in self._storage.logs(self.run(partition).run_id))

    def error(self, partition: str | None = None) -> str | None:
        """The partition's error with its traceback (None if it did not fail); without a
        partition, why the backfill itself FAILED (None if it did not)."""
        if partition is None:
            return self.record.error
        return self.run(partition).error

    def tracker(self) -> Tracker:
        """This backfill's runs, to follow live from the change feed."""
        return Tracker(self._storage, self.id)

    def widget(self):
        """The live widget of this backfill (what a notebook shows for the handle); one per handle."""
        from .widget import BackfillWidget

        if self._widget is None or self._widget.comm is None:
            self._widget = BackfillWidget(self.job, self.id, self._storage, follow_latest=False)
        return self._widget

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return self.widget()._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        record = self.record
        return f"<Backfill {self.id} of job {record.job_name!r}: {record.status}, {self.progress().line()}>"


def get_backfill(backfill_id: str, *, job: Job | None = None, instance: Storage | str | None = None) -> Backfill:
    """The handle of a stored backfill (from any process, e.g. after a kernel restart)."""
    storage = get_instance(instance)
    _record(storage, backfill_id)
    return Backfill(backfill_id, storage, job)


LIST_COLUMNS = [
    "backfill_id",
    "job_name",
    "status",
    "created",
    "ended",
    "partitions",
    "succeeded",
    "failed",
    "unfinished",
    "process",
]


def list_backfills(job: Job | str | None = None, *, instance: Storage | str | None = None) -> pd.DataFrame:
    """Every stored backfill, newest first, with its run counts and the process that runs it."""
    storage = get_instance(instance)
    name = job.name if isinstance(job, Job) else job
    counts = storage.run_counts_by_backfill()
    rows = []
    for stored in storage.list_backfills(name):
        r = _record(storage, stored.id)
        c = all_counts(counts.get(r.id, {}))
        done = c["SUCCESS"] + c["FAILURE"] + c["CANCELED"]
        rows.append(
            (
                r.id,
                r.job_name,
                str(r.status),
                r.created,
                r.ended,
                r.num_partitions,
                c["SUCCESS"],
                c["FAILURE"],
                r.num_partitions - done,
                process_of(storage, r),
            )
        )
    frame = pd.DataFrame(rows, columns=LIST_COLUMNS)
    frame["status"] = pd.Categorical(frame["status"], categories=[str(s) for s in BackfillStatus])
    frame["created"] = pd.to_datetime(frame["created"].astype("float64"), unit="s", utc=True)
    frame["ended"] = pd.to_datetime(frame["ended"].astype("float64"), unit="s", utc=True)
    return frame.set_index("backfill_id")


def resume_backfill(backfill_id: str, *, job: Job | None = None, instance: Storage | str | None = None) -> Backfill:
    """Run, in this process, every partition of a stopped backfill that is not yet SUCCESS, each
    once (or resume a paused one where it runs)."""
    storage = get_instance(instance)
    record = _record(storage, backfill_id)
    engine = Engine.existing(storage)
    mine = engine is not None and record.owner == engine.owner
    if record.status == BackfillStatus.REQUESTED and not mine and owner_alive(record.owner, record.heartbeat):
        raise BackfillStateError(
            f"backfill {backfill_id!r} is being run by another process ({record.owner}): pause or cancel it there "
            f"first, or follow it with nbb.get_backfill({backfill_id!r})"
        )
    handle = Backfill(backfill_id, storage, job)
    return handle.resume()


def partition_status(job: Job, *, instance: Storage | str | None = None) -> pd.DataFrame:
    """The latest status of every partition of a job across all backfills: MISSING, SUCCESS, FAILURE or IN_PROGRESS."""
    return frames.partition_status(get_instance(instance), job)


__all__ = [
    "Backfill",
    "get_backfill",
    "get_instance",
    "launch",
    "launch_backfill",
    "list_backfills",
    "partition_status",
    "plan",
    "resume_backfill",
]


def load_output(job: Job, partition: str, step: str | None = None, *, instance: Storage | str | None = None) -> Any:
    """The latest kept output of a step (the job's final step by default) for one partition, from
    whichever backfill last succeeded it."""
    return results.load_output(job, partition, step, get_instance(instance))


def list_outputs(job: Job, *, instance: Storage | str | None = None) -> pd.DataFrame:
    """The job's kept output files, with their partition, step, run, size and whether each is the latest."""
    return results.list_outputs(job, get_instance(instance))


def prune_outputs(job: Job, keep: str = "latest", *, instance: Storage | str | None = None) -> int:
    """Delete the job's output files but the latest of each partition and step ("latest") or all
    ("none"); returns the bytes freed."""
    return results.prune_outputs(job, get_instance(instance), keep)
