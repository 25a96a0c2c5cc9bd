"""The process executor: runs execute in a pool of worker processes, so a run that crashes, hangs
or leaks cannot take the kernel down, and runs use several cores.

Each worker receives a job's cloudpickled definition once, then one small message per run, and
sends back its events in lists (when a step begins and when the run ends); a reader thread per
worker forwards them to `emit`. A worker
that dies fails only the run it was executing and is replaced; if workers cannot even start, runs
fail with the reason instead. As with any multiprocessing code, a script (not a notebook) must
start runs under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import ast
import itertools
import multiprocessing
import signal
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import cloudpickle

from ..errors import InvalidOptionError
from ..jobs import Job
from ..statuses import LOG, RUN_DONE, Event, RunStatus, StepStatus
from . import _worker
from .run import Emit, RunRequest

_CONTEXT = multiprocessing.get_context("spawn")  # never fork: the kernel has threads
_KILL_AFTER = 1.0  # seconds a terminated worker gets to exit before SIGKILL
_READER_JOIN = 5.0  # seconds shutdown waits for the reader threads in all
_START_HINT = (
    "its error is on the stderr of the kernel or script; a script must start runs under "
    '`if __name__ == "__main__":`, and code read from stdin cannot use worker processes'
)

_Message = tuple[Any, ...]


class _Worker:
    """One worker process, its end of the pipe, and the run it is executing (None when idle)."""

    def __init__(self, number: int):
        self.conn, child_conn = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(
            target=_worker.main, args=(child_conn,), name=f"{WORKER_NAME}{number}", daemon=True
        )
        self.process.start()
        child_conn.close()  # so that recv() here sees EOF as soon as the worker is gone
        self.reader: threading.Thread | None = None
        self.job_ids: set[int] = set()
        self.started = False  # it said hello: start-up (which re-imports a script's __main__) worked
        self.run: RunRequest | None = None
        self.step: tuple[str, int] | None = None  # (name, attempt) of the run's RUNNING step
        self.stopping = False  # being terminated: it gets no more runs


def _how(exitcode: int | None) -> str:
    """How a process ended, for messages: 'exit code 3', 'killed by signal SIGSEGV'."""
    if exitcode is None:
        return "unknown exit code"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _stop(processes: Iterable[BaseProcess]) -> None:
    """SIGTERM the processes, then SIGKILL those still alive after _KILL_AFTER seconds (no reaping:
    each worker's reader thread reaps it)."""
    pending = {}
    for process in processes:
        process.terminate()
        pending[process.sentinel] = process
    deadline = time.monotonic() + _KILL_AFTER
    while pending and (left := deadline - time.monotonic()) > 0:
        for sentinel in wait(list(pending), left):
            del pending[sentinel]
    for process in pending.values():
        process.kill()


def _send(messages: list[tuple[_Worker, _Message]]) -> None:
    """Send runs to their workers, outside the lock: a first message carries a whole job."""
    for worker, message in messages:
        try:
            worker.conn.send(message)
        except OSError:  # the worker is gone; its reader fails the run
            pass


class ProcessExecutor:
    """A pool of up to `max_workers` worker processes, started when first needed, taking runs
    from one queue."""

    name = "process"

    def __init__(self, max_workers: int, emit: Emit):
        self.max_workers = max_workers
        self._emit = emit
        self._queue: OrderedDict[str, tuple[int, bytes, RunRequest]] = OrderedDict()
        self._payloads: weakref.WeakKeyDictionary[Job, tuple[int, bytes | str]] = weakref.WeakKeyDictionary()
        self._job_ids = itertools.count()
        self._worker_numbers = itertools.count()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._broken: str | None = None  # why workers cannot start; then every run fails with it

    def submit(self, job: Job, *requests: RunRequest) -> None:
        """Queue runs; each starts as soon as a worker is free. A job that cannot be pickled fails
        its runs (raising here would stop the caller's engine, not just this job)."""
        job_id, payload = self._payload(job)
        with self._lock:
            if self._stopping:
                raise RuntimeError("the process executor is shut down")
            failure = payload if isinstance(payload, str) else self._broken
            if failure is None:
                for request in requests:
                    self._queue[request.run_id] = (job_id, payload, request)
                messages = self._dispatch_locked()
        if failure is not None:
            now = time.time()
            for request in requests:
                self._emit(Event(request.run_id, RunStatus.FAILURE, now, request.attempt, None, failure))
            return
        _send(messages)

    def withdraw(self, run_id: str) -> bool:
        """Take back a run that no worker has yet: True if it was still queued."""
        with self._lock:
            return self._queue.pop(run_id, None) is not None

    def cancel(self, run_id: str) -> bool:
        """Cancel a run: True if it had not started (it never will), else its worker is terminated,
        the run ends CANCELED and the worker is replaced."""
        if self.withdraw(run_id):
            return True
        with self._lock:
            worker = next((w for w in self._workers if w.run is not None and w.run.run_id == run_id), None)
            if worker is None or worker.stopping:
                return False
            worker.stopping = True
        # stopped in the background, so the engine that asked goes on at once (its reader reports CANCELED)
        threading.Thread(
            target=_stop, args=([worker.process],), name=f"{worker.process.name}-stop", daemon=True
        ).start()
        return False

    def shutdown(self) -> None:
        """Terminate every worker (running runs end CANCELED) and wait for the readers; idempotent."""
        with self._lock:
            self._stopping = True
            self._queue.clear()
            workers = list(self._workers)
            for worker in workers:
                worker.stopping = True
        _stop([worker.process for worker in workers])
        deadline = time.monotonic() + _READER_JOIN
        for worker in workers:
            if worker.reader is not None and worker.reader is not threading.current_thread():
                worker.reader.join(max(deadline - time.monotonic(), 0))

    def _payload(self, job: Job) -> tuple[int, bytes | str]:
        """The job's id and cloudpickled definition (or why it has none), made once per job object."""
        entry = self._payloads.get(job)
        if entry is None:
            payload: bytes | str
            try:
                payload = cloudpickle.dumps(job)
            except Exception as error:
                payload = (
                    f"job {job.name!r} cannot be sent to a worker process: {error}; "
                    "use the thread executor, or keep unpicklable objects out of its steps"
                )
            with self._lock:
                entry = self._payloads.setdefault(job, (next(self._job_ids), payload))
        return entry

    def _dispatch_locked(self) -> list[tuple[_Worker, _Message]]:
        """Give queued runs to idle workers, starting workers up to max_workers; return the
        messages to send once the lock is released."""
        messages = []
        while self._queue and not self._stopping:
            worker = next((w for w in self._workers if w.run is None and not w.stopping), None)
            if worker is None:
                if len(self._workers) >= self.max_workers:
                    break
                worker = self._start_worker_locked()
            _, (job_id, payload, request) = self._queue.popitem(last=False)
            worker.run, worker.step = request, None
            self._emit(Event(request.run_id, RunStatus.STARTING, time.time(), request.attempt))
            first = job_id not in worker.job_ids
            worker.job_ids.add(job_id)
            message = (
                job_id,
                payload if first else None,
                request.run_id,
                request.partition_key,
                request.attempt,
                request.backfill_id,
                dict(request.tags),
            )
            messages.append((worker, message))
        return messages

    def _start_worker_locked(self) -> _Worker:
        worker = _Worker(next(self._worker_numbers))
        name = f"{worker.process.name}-reader"
        worker.reader = threading.Thread(target=self._read, args=(worker,), name=name, daemon=True)
        worker.reader.start()
        self._workers.append(worker)
        return worker

    def _read(self, worker: _Worker) -> None:
        """Forward the worker's events to emit until it exits, then settle its run."""
        conn, emit = worker.conn, self._emit
        while True:
            try:
                batch = conn.recv()
            except (EOFError, OSError):
                break
            if batch is None:  # the worker's hello
                worker.started = True
                continue
            for fields in batch:
                event = Event(*fields)
                if event.step is not None:
                    if event.status != LOG:
                        worker.step = (event.step, event.step_attempt) if event.status == StepStatus.RUNNING else None
                elif event.status in RUN_DONE:
                    with self._lock:
                        worker.run = None
                        messages = self._dispatch_locked()
                    _send(messages)  # the worker starts its next run while this event is stored
                emit(event)
        self._reap(worker)

    def _reap(self, worker: _Worker) -> None:
        """Collect an exited worker; fail (or, if canceled, cancel) its run; replace it if needed."""
        process = worker.process
        process.join(_KILL_AFTER)
        if process.exitcode is None:  # it closed its pipe but lives on
            process.kill()
            process.join()
        worker.conn.close()
        with self._lock:
            self._workers.remove(worker)
            run, canceled, failed = worker.run, worker.stopping, []
            if canceled:
                message = "canceled"
            elif worker.started:
                message = f"worker process died ({_how(process.exitcode)})"
            else:  # every new worker would fail the same way: fail the runs instead of starting more
                message = self._broken = f"worker process could not start ({_how(process.exitcode)}); {_START_HINT}"
                failed = [request for *_, request in self._queue.values()]
                self._queue.clear()
            messages = self._dispatch_locked()
        now = time.time()
        if run is not None:
            status = RunStatus.CANCELED if canceled else RunStatus.FAILURE
            if worker.step is not None:
                name, step_attempt = worker.step
                step_status = StepStatus.CANCELED if canceled else StepStatus.FAILURE
                self._emit(Event(run.run_id, step_status, now, run.attempt, name, message, step_attempt))
            self._emit(Event(run.run_id, status, now, run.attempt, None, message))
        for request in failed:
            self._emit(Event(request.run_id, RunStatus.FAILURE, now, request.attempt, None, message))
        _send(messages)


WORKER_NAME = "nb_backfill-process-"


def in_worker() -> bool:
    """Whether this is one of our worker processes (which never launch backfills)."""
    return multiprocessing.current_process().name.startswith(WORKER_NAME)


def _is_main_test(test: ast.expr) -> bool:
    """`__name__ == "__main__"` (either way round)."""
    if not isinstance(test, ast.Compare) or len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, *test.comparators]
    return any(isinstance(x, ast.Name) and x.id == "__name__" for x in sides) and any(
        isinstance(x, ast.Constant) and x.value == "__main__" for x in sides
    )


def check_main_guard() -> None:
    """Refuse to launch process workers from a script's top level outside `if __name__ == "__main__":`.

    Workers are spawned, and a spawned process imports the main script again: an unguarded launch
    would launch a new backfill in every worker. Notebooks and `python -c` are not re-imported.
    """
    if in_worker():
        raise InvalidOptionError(
            "a backfill cannot be launched inside a worker process: the script that launched the first one "
            'must do so under `if __name__ == "__main__":` (workers import it again)'
        )
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not str(path).endswith(".py"):
        return
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals is vars(main)):
        frame = frame.f_back
    if frame is None:
        return
    line = frame.f_lineno
    try:
        source = Path(path).read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return
    guarded = any(
        isinstance(node, ast.If) and _is_main_test(node.test) and node.lineno <= line <= (node.end_lineno or line)
        for node in ast.walk(tree)
    )
    if not guarded:
        text = source.splitlines()[line - 1].strip() if 0 < line <= len(source.splitlines()) else ""
        shown = f" (`{text[:77] + '...' if len(text) > 80 else text}`)" if text else ""
        raise InvalidOptionError(
            f"the process executor starts worker processes that import {path!r} again, and line {line}{shown} "
            f'would launch this backfill again in each of them: put it under `if __name__ == "__main__":` '
            f"(or use executor='thread'); nothing was launched"
        )
