"""Launching backfills and the `Backfill` handle: show, persist, cancel, pause, retry and resume.

`launch_backfill` checks everything first (a bad value raises and writes nothing), writes the
backfill and its QUEUED runs in one transaction, hands them to this process's engine and returns at
once. A handle reads storage, so `get_backfill(id)` in a new kernel sees the same backfill, and
`resume_backfill(id)` runs exactly its partitions not yet SUCCESS.
"""

from __future__ import annotations

import difflib
import os
import secrets
import string
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from . import frames
from .coordinator import PER_VALUE, ActiveBackfill, Engine, PendingRun, TagLimit
from .errors import (
    BackfillStateError,
    InvalidOptionError,
    SelectionError,
    UnknownBackfillError,
    UnknownPartitionError,
    quoted_list,
)
from .executors import check_executor, default_workers, make_executor
from .jobs import Job, RetryPolicy, check_tags, get_job, retry_policy
from .selection import select_partitions
from .storage import BACKFILL_DONE, BACKFILL_STATUSES, RUN_STATUSES, BackfillRecord, RunRecord, Storage, get_instance, owner_alive

COORDINATORS = ("default", "queued")
ORDERS = ("asc", "desc")
@dataclass(frozen=True)
class LaunchOptions:
    """The checked options of a backfill, as stored with it."""

    coordinator: str = "default"
    max_concurrent: int | None = None
    tag_concurrency_limits: tuple[dict[str, Any], ...] = ()
    executor: str = "thread"
    max_workers: int | None = None
    order: str = "asc"
    retries: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tag_concurrency_limits"] = list(self.tag_concurrency_limits)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LaunchOptions:
        return cls(**{**data, "tag_concurrency_limits": tuple(data.get("tag_concurrency_limits", ()))})

    def retry(self, job: Job) -> RetryPolicy:
        return job.retry if self.retries is None else RetryPolicy(**self.retries)

    def workers(self) -> int:
        if self.max_workers is not None:
            return self.max_workers
        return max(default_workers(self.executor), self.max_concurrent or 0)

    def tag_limits(self) -> list[TagLimit]:
        return [
            TagLimit(d["key"], None if isinstance(d.get("value"), dict) else d.get("value"), d["limit"], isinstance(d.get("value"), dict))
            for d in self.tag_concurrency_limits
        ]


def _positive_int(name: str, value: Any, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"{name} must be a whole number >= 1{' or None' if allow_none else ''}, got {value!r}")
    return value


def _one_of(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvalidOptionError(f"{name} must be one of {quoted_list(list(choices))}, got {value!r}")
    return value


def _tag_limits(limits: Any) -> tuple[dict[str, Any], ...]:
    if limits is None:
        return ()
    if isinstance(limits, Mapping) or not isinstance(limits, Sequence):
        raise InvalidOptionError(f"tag_concurrency_limits must be a list of {{'key', 'value', 'limit'}} dicts, got {limits!r}")
    checked = []
    for item in limits:
        if not isinstance(item, Mapping) or "key" not in item or "limit" not in item or set(item) - {"key", "value", "limit"}:
            raise InvalidOptionError(
                f"each tag concurrency limit must be a dict with 'key', 'limit' and optionally 'value', got {item!r}"
            )
        value = item.get("value")
        per_value = isinstance(value, Mapping) and value == {PER_VALUE: True}
        if not isinstance(item["key"], str) or not (value is None or isinstance(value, str) or per_value):
            raise InvalidOptionError(
                f"a tag concurrency limit needs a string 'key' and a string 'value' (or {{{PER_VALUE!r}: True}}), got {item!r}"
            )
        limit = item["limit"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidOptionError(f"the 'limit' of tag {item['key']!r} must be a whole number >= 0, got {limit!r}")
        checked.append({"key": item["key"], "value": dict(value) if per_value else value, "limit": limit})
    return tuple(checked)


def check_options(
    coordinator: str = "default",
    max_concurrent: int | None = None,
    tag_concurrency_limits: Any = None,
    executor: str = "thread",
    max_workers: int | None = None,
    order: str = "asc",
    retries: int | RetryPolicy | None = None,
) -> LaunchOptions:
    """Every launch option checked, or an InvalidOptionError naming the bad value and the valid ones."""
    _one_of("coordinator", coordinator, COORDINATORS)
    max_concurrent = _positive_int("max_concurrent", max_concurrent)
    limits = _tag_limits(tag_concurrency_limits)
    if coordinator == "default" and (max_concurrent is not None or limits):
        raise InvalidOptionError(
            "max_concurrent and tag_concurrency_limits apply to the queued coordinator: pass coordinator='queued'"
        )
    check_executor(executor)
    try:
        policy = None if retries is None else asdict(retry_policy(retries))
    except ValueError as error:
        raise InvalidOptionError(str(error)) from None
    return LaunchOptions(
        coordinator=coordinator,
        max_concurrent=max_concurrent,
        tag_concurrency_limits=limits,
        executor=executor,
        max_workers=_positive_int("max_workers", max_workers),
        order=_one_of("order", order, ORDERS),
        retries=policy,
    )


_REASONS = {"MISSING": "missing", "FAILURE": "failed", "SUCCESS": "already succeeded", "IN_PROGRESS": "in flight"}


def plan(
    job: Job,
    keys: Sequence[str],
    storage: Storage,
    missing_only: bool = False,
    failed_only: bool = False,
) -> pd.DataFrame:
    """What a launch would do for each selected partition: launch or skip, and why."""
    latest = frames.latest_statuses(storage, job.name)
    reasons = [_REASONS[latest.get(k, "MISSING")] for k in keys]
    if failed_only:
        launch = [r == "failed" for r in reasons]
    elif missing_only:
        launch = [r in ("missing", "failed") for r in reasons]
    else:
        launch = [True] * len(keys)
    return pd.DataFrame(
        {
            "partition": list(keys),
            "action": pd.Categorical(["launch" if x else "skip" for x in launch], categories=["launch", "skip"]),
            "reason": reasons,
        },
        index=frames.partition_index(keys, job.partitions_def),
    )


def _new_id(length: int = 8) -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(length))


def _run_ids(backfill_id: str, count: int) -> list[str]:
    """Run ids begin with the backfill id and '-' (storage finds a backfill's steps by that prefix)."""
    salt = os.urandom(4).hex()
    return [f"{backfill_id}-{salt}-{i:06d}" for i in range(count)]


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
    instance: Storage | str | None = None,
    current_time: datetime | None = None,
) -> Backfill | pd.DataFrame:
    """Launch a run for each selected partition and return a `Backfill` handle at once.

    With `dry_run=True`, return the plan (partition, action, reason) and write nothing.
    """
    if not isinstance(job, Job):
        raise InvalidOptionError(f"job must be a Job (made with @nbb.job or nbb.Job(...)), got {job!r}")
    options = check_options(coordinator, max_concurrent, tag_concurrency_limits, executor, max_workers, order, retries)
    try:
        backfill_tags = check_tags(tags, "tags")
    except ValueError as error:
        raise InvalidOptionError(str(error)) from None
    if missing_only and failed_only:
        raise SelectionError("choose missing_only or failed_only, not both (missing_only already includes failed partitions)")
    if (missing_only or failed_only) and partitions is None and from_ is None and to is None:
        all = True
    keys = select_partitions(job.partitions_def, partitions, from_=from_, to=to, all=all, current_time=current_time)
    storage = get_instance(instance)
    the_plan = plan(job, keys, storage, missing_only, failed_only)
    if dry_run:
        return the_plan
    chosen = the_plan.loc[the_plan["action"] == "launch", "partition"].tolist()
    if not chosen:
        why = "failed" if failed_only else "missing or failed"
        raise SelectionError(f"nothing to launch: none of the {len(keys)} selected partitions is {why}")
    if order == "desc":
        chosen.reverse()
    engine = Engine.for_storage(storage)
    now = time.time()
    record = BackfillRecord(
        id=_new_id(), job_name=job.name, status="REQUESTED", created=now, updated=now, ended=None,
        num_partitions=len(chosen), options=options.to_json(), tags=backfill_tags,
        partitions_def=repr(job.partitions_def), owner=engine.owner, heartbeat=now,
    )
    run_ids = _run_ids(record.id, len(chosen))
    storage.create_backfill(record, zip(run_ids, chosen, range(len(chosen))))
    pending = deque(PendingRun(r, p, 1) for r, p in zip(run_ids, chosen))
    engine.add(_active(record, job, options, engine, pending))
    return Backfill(record.id, storage, job)


def _active(record: BackfillRecord, job: Job, options: LaunchOptions, engine: Engine, pending: deque) -> ActiveBackfill:
    return ActiveBackfill(
        id=record.id,
        job=job,
        executor=make_executor(options.executor, options.workers(), engine.emit),
        coordinator=options.coordinator,
        max_concurrent=options.max_concurrent,
        tag_limits=options.tag_limits(),
        retry=options.retry(job),
        tags=dict(record.tags),
        pending=pending,
        created=record.created,
    )


def _record(storage: Storage, backfill_id: str) -> BackfillRecord:
    record = storage.get_backfill(backfill_id) if isinstance(backfill_id, str) else None
    if record is None:
        known = storage.backfill_ids()
        close = difflib.get_close_matches(str(backfill_id), known, n=3)
        hint = f"; did you mean {quoted_list(close)}?" if close else ""
        listing = f"known backfills: {quoted_list(known)}" if known else "the store has no backfills yet"
        raise UnknownBackfillError(f"unknown backfill id {backfill_id!r}{hint} ({listing}, in {str(storage.path)!r})")
    return _reconcile(storage, record)


def _reconcile(storage: Storage, record: BackfillRecord) -> BackfillRecord:
    """A backfill whose process died: its in-flight runs become FAILURE 'interrupted'."""
    if record.status in BACKFILL_DONE or Engine.for_storage(storage).is_running(record.id):
        return record
    if owner_alive(record.owner, record.heartbeat):
        return record
    storage.mark_interrupted(record.id)
    if record.status == "CANCELING":
        storage.cancel_runs([(r.run_id, r.attempt) for r in storage.runs(record.id) if r.status == "QUEUED"])
        storage.set_backfill_status(record.id, "CANCELED")
    return storage.get_backfill(record.id) or record


def _job_for(record: BackfillRecord, job: Job | None) -> Job:
    found = job or get_job(record.job_name)
    if found is None:
        raise BackfillStateError(
            f"job {record.job_name!r} of backfill {record.id!r} is not defined in this process: "
            "run the cell that defines it (or pass job=...)"
        )
    if found.name != record.job_name:
        raise InvalidOptionError(f"backfill {record.id!r} belongs to job {record.job_name!r}, not {found.name!r}")
    return found


class Backfill:
    """A handle on one backfill; every answer is read from storage."""

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
        return self.record.status

    @property
    def _engine(self) -> Engine:
        return Engine.for_storage(self._storage)

    def counts(self) -> dict[str, int]:
        """Runs by status, every status named (zeros included)."""
        found = self._storage.run_counts(self.id)
        return {status: found.get(status, 0) for status in RUN_STATUSES}

    def wait(self, timeout: float | None = None) -> str:
        """Block until the backfill is done (or raise TimeoutError); returns its final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status
            if status in BACKFILL_DONE:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"backfill {self.id!r} is still {status} after {timeout} s: {self._summary()}")
            self._engine.wait_for_change(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))

    def cancel(self) -> None:
        """Queued runs become CANCELED at once; running ones stop at their next step boundary
        (threads) or are terminated (processes)."""
        record = self.record
        if record.status in BACKFILL_DONE:
            return
        self._storage.set_backfill_status(self.id, "CANCELING")
        if self._engine.is_running(self.id):
            self._engine.cancel(self.id)
        elif not owner_alive(record.owner, record.heartbeat):
            _reconcile(self._storage, self._storage.get_backfill(self.id))

    def pause(self) -> None:
        """Start no more runs; runs already started finish. `resume()` goes on."""
        if self._storage.set_backfill_status(self.id, "PAUSED", only_from=["REQUESTED"]) and self._engine.is_running(self.id):
            self._engine.pause(self.id)

    def resume(self) -> Backfill:
        """Go on after pause(); for a backfill whose process stopped, the same as resume_backfill."""
        if self._engine.is_running(self.id):
            self._storage.set_backfill_status(self.id, "REQUESTED", only_from=["PAUSED"])
            self._engine.resume(self.id)
            return self
        record = self.record
        if record.status == "PAUSED" and owner_alive(record.owner, record.heartbeat):
            self._storage.set_backfill_status(self.id, "REQUESTED", only_from=["PAUSED"])  # its owner reads this
            return self
        return resume_backfill(self.id, job=self._job, instance=self._storage)

    def retry_failed(self) -> Backfill:
        """Run the failed partitions again, as their next attempt."""
        failed = [r for r in self._storage.runs(self.id) if r.status == "FAILURE"]
        if not failed:
            return self
        if self._engine.is_running(self.id):
            self._storage.requeue([r.run_id for r in failed])
            self._storage.set_backfill_status(self.id, "REQUESTED")
            self._engine.requeue(self.id, [PendingRun(r.run_id, r.partition, r.attempt + 1) for r in failed])
            return self
        return resume_backfill(self.id, job=self._job, instance=self._storage)

    def set_max_concurrent(self, n: int) -> None:
        """Change how many runs may run at once, live (switches to the queued coordinator)."""
        n = _positive_int("max_concurrent", n, allow_none=False)
        options = LaunchOptions.from_json(self.record.options)
        options = LaunchOptions(**{**asdict(options), "coordinator": "queued", "max_concurrent": n})
        self._storage.set_backfill_options(self.id, options.to_json())
        if self._engine.is_running(self.id):
            self._engine.set_max_concurrent(self.id, n)

    def runs_df(self) -> pd.DataFrame:
        return frames.runs_df(self._storage, self.id, self._definition())

    def steps_df(self) -> pd.DataFrame:
        return frames.steps_df(self._storage, self.id, self.job)

    def _definition(self):
        job = self._job or get_job(self.record.job_name)
        return job.partitions_def if job is not None else None

    def run(self, partition: str) -> RunRecord:
        """The stored run of one partition of this backfill (its latest attempt)."""
        run = self._storage.run_of(self.id, partition)
        if run is not None:
            return run
        runs = self._storage.runs(self.id)
        span = f"its {len(runs)} partitions run from {runs[0].partition!r} to {runs[-1].partition!r}" if runs else "it has no runs"
        raise UnknownPartitionError(f"partition {partition!r} is not in backfill {self.id!r}: {span}")

    def logs(self, partition: str) -> str:
        """Everything the partition's run printed or logged, every attempt, oldest first."""
        return "".join(text for _, _, text in self._storage.logs(self.run(partition).run_id))

    def error(self, partition: str) -> str | None:
        """The partition's error with its traceback, or None if it did not fail."""
        return self.run(partition).error

    def widget(self):
        """The live widget of this backfill (what a notebook shows for the handle); one per handle."""
        from .widget import BackfillWidget

        if self._widget is None or self._widget.comm is None:
            self._widget = BackfillWidget(self.job, self.id, self._storage)
        return self._widget

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        return self.widget()._repr_mimebundle_(**kwargs)

    def _summary(self) -> str:
        counts = {k: v for k, v in self.counts().items() if v}
        return ", ".join(f"{v} {k}" for k, v in counts.items()) or "no runs"

    def __repr__(self) -> str:
        record = self.record
        return f"<Backfill {self.id} of job {record.job_name!r}: {record.status}, {self._summary()}>"


def get_backfill(backfill_id: str, *, job: Job | None = None, instance: Storage | str | None = None) -> Backfill:
    """The handle of a stored backfill (from any process, e.g. after a kernel restart)."""
    storage = get_instance(instance)
    _record(storage, backfill_id)
    return Backfill(backfill_id, storage, job)


def list_backfills(job: Job | str | None = None, *, instance: Storage | str | None = None) -> pd.DataFrame:
    """Every stored backfill, newest first, with its run counts."""
    storage = get_instance(instance)
    name = job.name if isinstance(job, Job) else job
    records = [_reconcile(storage, r) for r in storage.list_backfills(name)]
    counts: dict[str, dict[str, int]] = {}
    for backfill_id, status, n in storage.query("SELECT backfill_id, status, COUNT(*) FROM runs GROUP BY backfill_id, status"):
        counts.setdefault(backfill_id, {})[status] = n
    rows = []
    for r in records:
        c = counts.get(r.id, {})
        done = sum(c.get(s, 0) for s in ("SUCCESS", "FAILURE", "CANCELED"))
        rows.append(
            (r.id, r.job_name, r.status, r.created, r.ended, r.num_partitions, c.get("SUCCESS", 0),
             c.get("FAILURE", 0), r.num_partitions - done)
        )
    frame = pd.DataFrame(
        rows, columns=["backfill_id", "job_name", "status", "created", "ended", "partitions", "succeeded", "failed", "unfinished"]
    )
    frame["status"] = pd.Categorical(frame["status"], categories=list(BACKFILL_STATUSES))
    frame["created"] = pd.to_datetime(frame["created"].astype("float64"), unit="s", utc=True)
    frame["ended"] = pd.to_datetime(frame["ended"].astype("float64"), unit="s", utc=True)
    return frame.set_index("backfill_id")


def resume_backfill(backfill_id: str, *, job: Job | None = None, instance: Storage | str | None = None) -> Backfill:
    """Run, in this process, every partition of a backfill that is not yet SUCCESS, each once."""
    storage = get_instance(instance)
    record = _record(storage, backfill_id)
    the_job = _job_for(record, job)
    engine = Engine.for_storage(storage)
    if engine.is_running(backfill_id):
        Backfill(backfill_id, storage, the_job).resume()
        return Backfill(backfill_id, storage, the_job)
    if owner_alive(record.owner, record.heartbeat) and record.owner != engine.owner and record.status not in BACKFILL_DONE:
        raise BackfillStateError(
            f"backfill {backfill_id!r} is being run by another process ({record.owner}): cancel or pause it there first"
        )
    if not storage.claim_backfill(backfill_id, engine.owner, record.owner):
        raise BackfillStateError(f"backfill {backfill_id!r} was just resumed by another process")
    runs = storage.runs(backfill_id)
    again = [r for r in runs if r.status not in ("SUCCESS", "QUEUED")]
    storage.requeue([r.run_id for r in again])
    requeued = {r.run_id for r in again}
    pending = deque(
        PendingRun(r.run_id, r.partition, r.attempt + 1 if r.run_id in requeued else r.attempt)
        for r in runs
        if r.status != "SUCCESS"
    )
    if not pending:
        storage.set_backfill_status(backfill_id, "COMPLETED_SUCCESS")
        return Backfill(backfill_id, storage, the_job)
    storage.set_backfill_status(backfill_id, "REQUESTED")
    options = LaunchOptions.from_json(record.options)
    engine.add(_active(storage.get_backfill(backfill_id), the_job, options, engine, pending), [r for r in pending if r.run_id in requeued])
    return Backfill(backfill_id, storage, the_job)


def partition_status(job: Job, *, instance: Storage | str | None = None) -> pd.DataFrame:
    """The latest status of every partition of a job across all backfills: MISSING, SUCCESS, FAILURE or IN_PROGRESS."""
    return frames.partition_status(get_instance(instance), job)

__all__ = ["Backfill", "get_backfill", "get_instance", "launch_backfill", "list_backfills", "partition_status", "resume_backfill"]
