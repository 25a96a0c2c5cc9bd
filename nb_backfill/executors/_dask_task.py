"""The Dask-worker side of the dask executor: execute a batch of runs as one Dask task, and report
their events to the kernel through the scheduler's event topics while they run (their output too).

A batch is pinned to one worker. Before a run begins, the worker claims it under a lock, so the
kernel can take back any run not yet begun (`take_back`, sent with `Client.run` to that worker):
of a claim and a take-back, exactly one wins, and a run taken back never starts. Events go out
as lists of `Event` fields on the executor's topic: when a step begins (so a cell turns blue
while it runs), at the end of the batch, and every FLUSH seconds meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import cloudpickle

from ..jobs import Job
from ..statuses import Event, RunStatus, StepStatus
from .run import CancelFlag, RunRequest, execute_run, flush_live_logs, install_capture, internal_failure

FLUSH = 0.02  # seconds at most an event waits in a worker
STARTED, TAKEN = "started", "taken back"

_lock = threading.Lock()
_jobs: dict[str, Job | str] = {}  # job key -> the job, or why it cannot be loaded here
_claims: dict[str, dict[str, CancelFlag | None]] = {}  # topic -> claim -> its run's flag (None: taken back)
_outboxes: dict[str, _Outbox] = {}


class _Outbox:
    """One executor's events from this worker process, sent as lists on its topic."""

    def __init__(self, topic: str, worker: Any):
        self.topic = topic
        self._worker = worker  # its log_event may be called from any thread (get_worker only from a task's)
        self._events: list[list[Any]] = []
        self._lock = threading.Lock()

    def add(self, event: Event) -> None:
        fields = [event.run_id, str(event.status), event.ts, event.attempt, event.step, event.message]
        with self._lock:
            self._events.append([*fields, event.step_attempt])
        if event.status == StepStatus.RUNNING:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            events, self._events = self._events, []
        if events:
            self._worker.log_event(self.topic, events)


def _flush_every(seconds: float) -> None:
    """Every `seconds`: what running steps wrote so far, then every executor's events."""
    while True:
        time.sleep(seconds)
        flush_live_logs()
        for outbox in list(_outboxes.values()):
            try:
                outbox.flush()
            except Exception:  # the worker is closing: nothing left to report to
                pass


def _outbox(topic: str) -> _Outbox:
    with _lock:
        if not _outboxes:
            threading.Thread(target=_flush_every, args=(FLUSH,), name="nb_backfill-dask-outbox", daemon=True).start()
        outbox = _outboxes.get(topic)
        if outbox is None:
            from distributed import get_worker  # this module is imported where Dask may be missing

            outbox = _outboxes[topic] = _Outbox(topic, get_worker())
        return outbox


def _job(key: str, payload: bytes) -> Job | str:
    """The batch's job, unpickled once per worker process."""
    with _lock:
        job = _jobs.get(key)
    if job is None:
        try:
            job = cloudpickle.loads(payload)
        except Exception as error:
            job = f"the job cannot be loaded on this Dask worker: {type(error).__name__}: {error}"
        with _lock:
            _jobs[key] = job
    return job


def execute_batch(
    topic: str, job_key: str, payload: bytes, runs: Sequence[tuple[str, Sequence[Any]]], done: Sequence[str]
) -> None:
    """Execute runs, (claim, RunRequest fields), one after another, each unless taken back
    (a claim names one hand-over of a run: unique, so a run handed over again is claimed anew);
    `done` are claims of earlier batches the kernel has settled, forgotten here."""
    install_capture()
    outbox = _outbox(topic)
    with _lock:
        claims = _claims.setdefault(topic, {})
        for claim in done:
            claims.pop(claim, None)
    job = _job(job_key, payload)
    for claim, fields in runs:
        request = RunRequest(*fields)
        with _lock:
            if claim in claims:  # taken back before it began
                continue
            flag = claims[claim] = CancelFlag()
        try:
            if isinstance(job, str):
                outbox.add(Event(request.run_id, RunStatus.FAILURE, time.time(), request.attempt, None, job))
            else:
                execute_run(job, request, outbox.add, flag, live=True)
        except BaseException as error:  # our own machinery failed: the run fails saying so
            outbox.add(internal_failure(request, error))
    outbox.flush()


def take_back(topic: str, claims: Sequence[str], cancel: bool) -> dict[str, str]:
    """For each claim: TAKEN when its run had not begun (now it never will), else STARTED (and,
    with `cancel`, asked to stop at its next step)."""
    answers = {}
    with _lock:
        held = _claims.setdefault(topic, {})
        for claim in claims:
            flag = held.setdefault(claim, None)
            answers[claim] = TAKEN if flag is None else STARTED
            if flag is not None and cancel:
                flag.set()
    return answers


def forget(topic: str) -> None:
    """Drop what this worker holds for an executor that shut down."""
    with _lock:
        _claims.pop(topic, None)
        outbox = _outboxes.pop(topic, None)
    if outbox is not None:
        outbox.flush()
