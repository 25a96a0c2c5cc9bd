"""The worker-process side of the process executor: take runs lent by the parent, execute them,
send back every event. This docstring is the one description of the protocol.

Messages from the parent (a pipe each way): lists of runs lent to this worker, each
`(seq, slot, job_id, payload, run_id, partition_key, attempt, backfill_id, tags, outputs, reuse,
code)`, where `seq` numbers the loan, `payload` is the cloudpickled Job the first time this
worker sees `job_id`, else None, and the fields from `tags` on are the RunRequest's. A receiver thread keeps them in order while the main thread executes runs, so the
pipe never fills and the parent never waits for a busy worker.

Shared with the parent: a lock and an array of int64. `slots[slot]` holds `seq` while the run is
lent, `-seq` once the worker began it, 0 once the parent took it back; `slots[0]` is the `seq` of
the run begun last (the parent cancels a begun run by terminating the worker only while it is that
one, and takes the rest back first, so nothing else is stopped with it). Under the lock the worker begins a run only if its slot still holds its
`seq`, and the parent takes a run back only if it still does: a run taken back (pause, cancel,
max_concurrent, or lent again to an idle worker) never starts here, and a run begun is never
taken back. Its first event is STARTING, then the job is loaded (once per job) and the run
executes.

Messages to the parent: None once the worker is up (a hello), then `(events, ended, running)`:
the events since the last message, each the fields of an `Event` as a tuple; the ids of the runs
among them that ended; and `(run_id, step, step_attempt)` of the step running as it is sent, or
None (so the parent knows which step a crash killed without reading every event). A message is
sent when a step begins, so everything up to that step's RUNNING is in the pipe before user code
runs (a crash loses nothing); when the worker runs out of runs; and every FLUSH seconds (a failed
step waiting to retry). So a short run costs one message: its end rides with the next run's step.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any

import cloudpickle

from ..jobs import Job
from ..statuses import LOG, RUN_DONE, Event, RunStatus, StepStatus
from .run import CancelFlag, RunRequest, execute_run, flush_live_logs, install_capture, internal_failure

FLUSH = 0.02  # seconds at most an event waits in a worker

_Loan = tuple[Any, ...]  # (seq, slot, job_id, payload, run_id, partition_key, attempt, backfill_id, *RunRequest's rest)


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


class _Outbox:
    """Events to the parent, in messages: sent when a step begins and when the worker runs out of
    runs by the worker, and every FLUSH seconds by a thread of its own."""

    def __init__(self, conn: Connection):
        self._conn = conn
        self._lock = threading.Lock()  # one sender at a time; an event is never sent twice or lost
        self._events: list[tuple] = []
        self._ended: list[str] = []
        self._running: tuple[str, str, int | None] | None = None

    def add(self, event: Event) -> None:
        run_id, status, ts, attempt, step, message, step_attempt, not_before = event
        with self._lock:
            self._events.append((run_id, str(status), ts, attempt, step, message, step_attempt, not_before))
            if step is None:
                if status in RUN_DONE:
                    self._ended.append(run_id)
            elif status != LOG:
                self._running = (run_id, step, step_attempt) if status == StepStatus.RUNNING else None
        if status == StepStatus.RUNNING:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._events:
                self.send((self._events, self._ended, self._running))
                self._events, self._ended = [], []

    def flush_every(self, seconds: float) -> None:
        """Every `seconds`: what a running step wrote so far (its log reads live), then the events."""
        while True:
            time.sleep(seconds)
            flush_live_logs()
            self.flush()

    def send(self, message: object) -> None:
        try:
            self._conn.send(message)
        except OSError:  # the parent is gone (BrokenPipeError): nobody to report to, leave quietly
            os._exit(0)


class _Inbox:
    """Runs lent by the parent, in the order they came: a receiver thread adds them, the main
    thread takes the next one it may begin."""

    def __init__(self, conn: Connection, lock: Any, slots: Any):
        self._conn = conn
        self._lock = lock  # shared with the parent, which takes runs back under it
        self._slots = slots
        self._loans: deque[_Loan] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self.payloads: dict[int, bytes] = {}  # job_id -> its pickled job, until first loaded

    def receive(self) -> None:
        """Keep what the parent sends until it closes the pipe."""
        while True:
            try:
                loans = self._conn.recv()
            except (EOFError, OSError):
                break
            with self._changed:
                for loan in loans:
                    if loan[3] is not None:
                        self.payloads[loan[2]] = loan[3]
                self._loans.extend(loans)
                self._changed.notify()
        with self._changed:
            self._closed = True
            self._changed.notify()

    def take(self, outbox: _Outbox) -> _Loan | None:
        """The next run to begin, now marked begun (runs taken back are skipped); None once the
        parent closed the pipe. Events still held are sent before waiting for more runs."""
        while True:
            if not self._loans:
                outbox.flush()
            with self._changed:
                self._changed.wait_for(lambda: self._loans or self._closed)
                if not self._loans:
                    return None
                loan = self._loans.popleft()
            if self._begin(loan[0], loan[1]):
                return loan

    def _begin(self, seq: int, slot: int) -> bool:
        """Mark the run begun unless the parent took it back."""
        with self._lock:
            if self._slots[slot] != seq:
                return False
            self._slots[slot] = -seq
            self._slots[0] = seq
            return True


def main(inbox_conn: Connection, outbox_conn: Connection, lock: Any, slots: Any) -> None:
    """Serve runs until the parent closes its pipe (or dies)."""
    # Jupyter interrupts the kernel's whole process group: a cell's Ctrl-C must not kill runs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, name="nb_backfill-parent-watch", daemon=True).start()
    install_capture()
    jobs: dict[int, Job | str] = {}
    outbox, inbox = _Outbox(outbox_conn), _Inbox(inbox_conn, lock, slots)
    emit = outbox.add
    never = CancelFlag()  # a run here is stopped by terminating its worker, never by this flag
    threading.Thread(target=outbox.flush_every, args=(FLUSH,), name="nb_backfill-outbox", daemon=True).start()
    threading.Thread(target=inbox.receive, name="nb_backfill-inbox", daemon=True).start()
    outbox.send(None)
    while (loan := inbox.take(outbox)) is not None:
        _, _, job_id, _, run_id, partition_key, attempt, backfill_id, *rest = loan
        request = RunRequest(run_id, partition_key, attempt, backfill_id, *rest)
        emit(Event(run_id, RunStatus.STARTING, time.time(), attempt))
        job = jobs.get(job_id)
        if job is None:
            outbox.flush()  # STARTING shows while the job loads
            job = jobs[job_id] = _load(inbox.payloads.pop(job_id))
        if isinstance(job, str):
            emit(Event(run_id, RunStatus.FAILURE, time.time(), attempt, None, job))
            continue
        try:
            execute_run(job, request, emit, never, live=True)
        except Exception as error:  # our own machinery failed: the run fails saying so
            emit(internal_failure(request, error))
