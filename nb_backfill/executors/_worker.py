"""The worker-process side of the process executor: receive runs over a pipe, execute them, send
back every event.

Messages from the parent: `(job_id, payload, run_id, partition_key, attempt, backfill_id, tags)`,
where `payload` is the cloudpickled Job the first time this worker sees `job_id`, else None.
Messages to the parent: None once the worker is up (a hello), then lists of events, each the
fields of an `Event` as a tuple: sent when a step begins (so the parent knows which step a crash
killed, and has everything before it), at each run's end, and every FLUSH seconds (a failed step
waiting to retry); not one message an event.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait

import cloudpickle

from ..jobs import Job
from ..statuses import Event, RunStatus, StepStatus
from .run import RunRequest, execute_run, install_capture, internal_failure


def _exit_with_parent() -> None:
    """Exit as soon as the parent process is gone, even in the middle of a long step."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        os._exit(0)


def _load(payload: bytes) -> Job | str:
    """The job, or the error text that fails every run of it when it cannot be unpickled here."""
    try:
        return cloudpickle.loads(payload)
    except Exception as error:
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        return f"the job cannot be loaded in a worker process: {detail}"


FLUSH = 0.02  # seconds at most an event waits in a worker


class _Outbox:
    """Events to the parent, in lists: sent when a step begins and at each run's end by the
    worker, and every FLUSH seconds by a thread of its own."""

    def __init__(self, conn: Connection):
        self._conn = conn
        self._lock = threading.Lock()  # one sender at a time; an event is never sent twice or lost
        self._events: list[tuple] = []

    def add(self, event: Event) -> None:
        fields = (
            event.run_id,
            str(event.status),
            event.ts,
            event.attempt,
            event.step,
            event.message,
            event.step_attempt,
        )
        with self._lock:
            self._events.append(fields)
        if event.status == StepStatus.RUNNING:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._events:
                self.send(self._events)
                self._events = []

    def flush_every(self, seconds: float) -> None:
        while True:
            time.sleep(seconds)
            self.flush()

    def send(self, message: object) -> None:
        try:
            self._conn.send(message)
        except OSError:  # the parent is gone (BrokenPipeError): nobody to report to, leave quietly
            os._exit(0)


def main(conn: Connection) -> None:
    """Serve runs until the parent closes the pipe."""
    # Jupyter interrupts the kernel's whole process group: a cell's Ctrl-C must not kill runs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, name="nb_backfill-parent-watch", daemon=True).start()
    install_capture()
    jobs: dict[int, Job | str] = {}
    outbox = _Outbox(conn)
    emit = outbox.add
    threading.Thread(target=outbox.flush_every, args=(FLUSH,), name="nb_backfill-outbox", daemon=True).start()
    outbox.send(None)
    while True:
        try:
            job_id, payload, run_id, partition_key, attempt, backfill_id, tags = conn.recv()
        except (EOFError, OSError):
            return
        if payload is not None:
            jobs[job_id] = _load(payload)
        job = jobs[job_id]
        request = RunRequest(run_id, partition_key, attempt, backfill_id, tags)
        if isinstance(job, str):
            emit(Event(run_id, RunStatus.FAILURE, time.time(), attempt, None, job))
        else:
            try:
                execute_run(job, request, emit, threading.Event())
            except Exception as error:  # our own machinery failed: the run fails saying so
                emit(internal_failure(request, error))
        outbox.flush()
