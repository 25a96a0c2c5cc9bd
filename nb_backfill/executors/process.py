"""The process executor: runs execute in a pool of worker processes, so a run that crashes, hangs
or leaks cannot take the kernel down, and runs use several cores.

Runs wait in one queue and are lent to workers up to WINDOW ahead, so a worker goes from run to
run without waiting for this process; a worker sends its events about once a run, and its reader
thread takes whatever arrived every GATHER seconds, so neither side pays a wake-up a run. A run
lent but not begun can still be taken back (`withdraw`, and a worker with nothing to do gets
those of a busy one), through a lock and an array shared with the worker: `_worker`'s docstring
describes the protocol. A worker that dies fails only the run it was executing, the runs lent
to it go back to the queue, and it is replaced; if workers cannot even start, runs fail with the
reason instead. As with any multiprocessing code, a script (not a notebook) must start runs
under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import ast
import itertools
import multiprocessing
import os
import pickle
import signal
import struct
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import cloudpickle

from ..errors import InvalidOptionError
from ..jobs import Job
from ..statuses import Event, RunStatus, StepStatus
from . import _worker
from .run import Emit, RunRequest

_CONTEXT = multiprocessing.get_context("spawn")  # never fork: the kernel has threads
WINDOW = 64  # runs lent to a worker at most: enough that it never waits between GATHERs
GATHER = 0.001  # seconds a reader lets a worker's events gather after taking some
_READ = 1 << 20  # bytes a reader takes at most at once
_LOCK_WAIT = 0.05  # seconds between looks at whether a worker holding the shared lock died
_KILL_AFTER = 1.0  # seconds a terminated worker gets to exit before SIGKILL
_READER_JOIN = 5.0  # seconds shutdown waits for the reader threads in all
_START_HINT = (
    "its error is on the stderr of the kernel or script; a script must start runs under "
    '`if __name__ == "__main__":`, and code read from stdin cannot use worker processes'
)
_SIZE, _LONG_SIZE = struct.Struct("!i"), struct.Struct("!Q")  # multiprocessing.Connection's framing

_Entry = tuple[int, bytes, RunRequest]  # (job_id, pickled job, request): a run queued or lent
_event = Event._make  # an Event from the fields a worker sends


class _Worker:
    """One worker process, a pipe each way, the lock and slots it shares with this process, and
    the runs lent to it."""

    def __init__(self, number: int):
        # one-way pipes: a message costs less than on the socket pair of a duplex Pipe()
        inbox, self.conn = _CONTEXT.Pipe(duplex=False)  # runs lent
        self.events, outbox = _CONTEXT.Pipe(duplex=False)  # what the worker reports
        self.lock = _CONTEXT.Lock()
        self.slots = _CONTEXT.RawArray("q", WINDOW + 1)  # see _worker: [seq begun last, one per loan]
        self.process = _CONTEXT.Process(
            target=_worker.main,
            args=(inbox, outbox, self.lock, self.slots),
            name=f"{WORKER_NAME}{number}",
            daemon=True,
        )
        self.process.start()
        inbox.close()  # so that each side sees EOF as soon as the other is gone
        outbox.close()
        self.reader: threading.Thread | None = None
        self.job_ids: set[int] = set()
        self.started = False  # it said hello: start-up (which re-imports a script's __main__) worked
        self.lent: dict[str, tuple[int, int, _Entry]] = {}  # run_id -> (slot, seq, entry), in lending order
        self.free = list(range(WINDOW, 0, -1))  # slots with no loan
        self.step: tuple[str, str, int] | None = None  # (run_id, name, attempt) of the step last seen RUNNING
        self.stopping = False  # being terminated: it is lent nothing more
        self.outgoing: deque[list[tuple]] = deque()  # messages made for it, not yet sent
        self._send_lock = threading.Lock()

    def lend(self, entry: _Entry, seq: int) -> tuple:
        """Record the loan of a run (the caller holds the executor's lock); returns its message."""
        job_id, payload, request = entry
        slot = self.free.pop()
        self.slots[slot] = seq  # a free slot: the worker reads it only for this loan, after it is sent
        self.lent[request.run_id] = (slot, seq, entry)
        first = job_id not in self.job_ids
        self.job_ids.add(job_id)
        return (
            seq,
            slot,
            job_id,
            payload if first else None,
            request.run_id,
            request.partition_key,
            request.attempt,
            request.backfill_id,
            dict(request.tags),
            request.outputs,
            request.reuse,
            request.code,
        )

    def end(self, run_id: str) -> None:
        """The run ended here: its slot is free again."""
        loan = self.lent.pop(run_id, None)
        if loan is not None:
            self.free.append(loan[0])

    def take_back(self, run_ids: Iterable[str]) -> list[_Entry]:
        """Take back those of these runs the worker has not begun (hold its lock, see `held`)."""
        back = []
        for run_id in run_ids:
            slot, seq, entry = self.lent[run_id]
            if self.slots[slot] == seq:
                self.slots[slot] = 0
                self.end(run_id)
                back.append(entry)
        return back

    def split_lent(self) -> tuple[list[_Entry], list[_Entry]]:
        """The runs lent to it: those it began, and those it did not (read once it exited)."""
        loans = list(self.lent.values())
        begun = [entry for slot, seq, entry in loans if self.slots[slot] == -seq]
        return begun, [entry for slot, seq, entry in loans if self.slots[slot] == seq]

    def send(self) -> None:
        """Send the messages made for it, in the order they were made, whichever thread made them."""
        with self._send_lock:
            while self.outgoing:
                try:
                    self.conn.send(self.outgoing.popleft())
                except OSError:  # it is gone; its reader settles the runs lent to it
                    self.outgoing.clear()


@contextmanager
def held(worker: _Worker) -> Iterator[None]:
    """Hold the lock a worker shares with this process; if it died holding it, its slots are
    final and are read without it."""
    while not (locked := worker.lock.acquire(timeout=_LOCK_WAIT)):
        if worker.process.exitcode is not None:
            break
    try:
        yield
    finally:
        if locked:
            worker.lock.release()


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


def _send(workers: Iterable[_Worker]) -> None:
    """Send what was made for these workers, outside the executor's lock."""
    for worker in workers:
        worker.send()


def _messages(pending: bytearray) -> list[Any]:
    """The whole messages at the front of `pending`, unpickled and removed from it (a message
    cut short stays for the next read). Reading raw and splitting here costs one read for many
    messages, where Connection.recv costs two a message."""
    messages, at = [], 0
    while len(pending) - at >= _SIZE.size:
        (size,) = _SIZE.unpack_from(pending, at)
        head = _SIZE.size
        if size == -1:  # over 2 GiB: the real size follows
            if len(pending) - at < _SIZE.size + _LONG_SIZE.size:
                break
            (size,) = _LONG_SIZE.unpack_from(pending, at + _SIZE.size)
            head += _LONG_SIZE.size
        if len(pending) - at - head < size:
            break
        messages.append(pickle.loads(pending[at + head : at + head + size]))
        at += head + size
    del pending[:at]
    return messages


class ProcessExecutor:
    """A pool of up to `max_workers` worker processes, started when first needed, taking runs
    from one queue."""

    name = "process"

    def __init__(self, max_workers: int, emit: Emit):
        self.max_workers = max_workers
        self._emit = emit
        self._queue: OrderedDict[str, _Entry] = OrderedDict()
        self._lenders: dict[str, _Worker] = {}  # run_id -> the worker it is lent to
        self._payloads: weakref.WeakKeyDictionary[Job, tuple[int, bytes | str]] = weakref.WeakKeyDictionary()
        self._job_ids = itertools.count()
        self._seqs = itertools.count(1)
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
                workers = self._dispatch_locked()
        if failure is not None:
            now = time.time()
            for request in requests:
                self._emit(Event(request.run_id, RunStatus.FAILURE, now, request.attempt, None, failure))
            return
        _send(workers)

    def withdraw(self, run_id: str) -> bool:
        """Take back a run no worker has begun: True if it was queued, or lent and not begun (then
        it never begins)."""
        with self._lock:
            if self._queue.pop(run_id, None) is not None:
                return True
            worker = self._lenders.get(run_id)
            if worker is None:
                return False
            with held(worker):
                back = worker.take_back([run_id])
            self._forget_locked(back)
            return bool(back)

    def cancel(self, run_id: str) -> bool:
        """Cancel a run: True if it had not begun (it never will), else its worker is terminated,
        the run ends CANCELED, the runs lent to that worker go to others, and it is replaced."""
        if self.withdraw(run_id):
            return True
        with self._lock:
            worker = self._lenders.get(run_id)
            if worker is None or worker.stopping:
                return False
            with held(worker):
                running = worker.slots[0] == worker.lent[run_id][1]  # else it ended: its end is on its way
                back = worker.take_back(list(worker.lent)) if running else []  # so it begins nothing more
            if not running:
                return False
            worker.stopping = True
            self._requeue_locked(back)
            workers = self._dispatch_locked()
        _send(workers)
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

    def _forget_locked(self, entries: Iterable[_Entry]) -> None:
        """These runs are no longer lent to anyone."""
        for _, _, request in entries:
            self._lenders.pop(request.run_id, None)

    def _requeue_locked(self, entries: list[_Entry]) -> None:
        """Runs taken back from a worker go to the front of the queue, in their order."""
        self._forget_locked(entries)  # a dead worker's are forgotten already
        for entry in reversed(entries):
            run_id = entry[2].run_id
            self._queue[run_id] = entry
            self._queue.move_to_end(run_id, last=False)

    def _dispatch_locked(self) -> list[_Worker]:
        """Lend queued runs to the workers with the fewest, up to WINDOW each, starting workers
        up to max_workers while every worker has some; return the workers with messages to send
        once the lock is released."""
        if not self._queue:
            self._rebalance_locked()
        loans: dict[_Worker, list[tuple]] = {}
        live = [w for w in self._workers if not w.stopping]
        while self._queue and not self._stopping:
            live.sort(key=lambda w: len(w.lent))
            if (not live or live[0].lent) and len(self._workers) < self.max_workers:
                live.insert(0, self._start_worker_locked())
            if not live or not live[0].free:
                break
            worker = live[0]
            # as many as bring it one above the next least lent (a worker not started yet has
            # none), so that workers fill evenly
            if len(self._workers) < self.max_workers:
                level = 1
            else:
                level = len(live[1].lent) + 1 if len(live) > 1 else WINDOW
            for _ in range(min(len(self._queue), len(worker.free), max(level - len(worker.lent), 1))):
                _, entry = self._queue.popitem(last=False)
                loans.setdefault(worker, []).append(worker.lend(entry, next(self._seqs)))
                self._lenders[entry[2].run_id] = worker
        for worker, message in loans.items():
            worker.outgoing.append(message)
        return list(loans)

    def _rebalance_locked(self) -> None:
        """With nothing queued and a worker idle, the newer half of the runs lent to the busiest
        worker come back to the queue if it has not begun them: a slow run never holds up the
        runs behind it while another worker could take them."""
        live = [w for w in self._workers if not w.stopping]
        if not any(w.started and not w.lent for w in live):
            return
        busiest = max(live, key=lambda w: len(w.lent))
        if len(busiest.lent) < 2:
            return
        with held(busiest):
            back = busiest.take_back(list(busiest.lent)[len(busiest.lent) // 2 :])
        self._requeue_locked(back)

    def _start_worker_locked(self) -> _Worker:
        worker = _Worker(next(self._worker_numbers))
        name = f"{worker.process.name}-reader"
        worker.reader = threading.Thread(target=self._read, args=(worker,), name=name, daemon=True)
        worker.reader.start()
        self._workers.append(worker)
        return worker

    def _read(self, worker: _Worker) -> None:
        """Forward the worker's events to emit until it exits, then settle the runs lent to it.
        After each read it sleeps GATHER, so that many messages come in one read."""
        fd, pending = worker.events.fileno(), bytearray()
        while True:
            try:
                data = os.read(fd, _READ)
            except OSError:
                break
            if not data:
                break
            pending += data
            self._receive(worker, _messages(pending))
            time.sleep(GATHER)
        self._reap(worker)

    def _receive(self, worker: _Worker, messages: list[Any]) -> None:
        """Note what the worker said (hello, runs ended, the step running), lend it more runs
        under one lock, then emit the events."""
        events: list[Event] = []
        ended: list[str] = []
        hello = False
        for message in messages:
            if message is None:  # started: it may now get runs lent to a busy worker
                worker.started = hello = True
                continue
            batch, finished, worker.step = message
            events += map(_event, batch)
            ended += finished
        if ended or hello:
            with self._lock:
                for run_id in ended:
                    worker.end(run_id)
                    self._lenders.pop(run_id, None)
                workers = self._dispatch_locked()
            _send(workers)  # the worker goes on while these events are stored
        for event in events:
            self._emit(event)

    def _reap(self, worker: _Worker) -> None:
        """Collect an exited worker; fail (or, if canceled, cancel) the runs it began and did not
        end; queue again those it never began; replace it if needed."""
        process = worker.process
        process.join(_KILL_AFTER)
        if process.exitcode is None:  # it closed its pipe but lives on
            process.kill()
            process.join()
        worker.conn.close()
        worker.events.close()
        with self._lock:
            self._workers.remove(worker)
            begun, unbegun = worker.split_lent()
            self._forget_locked([*begun, *unbegun])
            canceled, failed = worker.stopping, []
            if canceled:
                message = "canceled"
            elif worker.started:
                message = f"worker process died ({_how(process.exitcode)})"
            else:  # every new worker would fail the same way: fail the runs instead of starting more
                message = self._broken = f"worker process could not start ({_how(process.exitcode)}); {_START_HINT}"
                failed, unbegun = [*unbegun, *self._queue.values()], []
                self._queue.clear()
            if self._stopping:
                unbegun = []
            self._requeue_locked(unbegun)
            workers = self._dispatch_locked()
        now = time.time()
        for _, _, run in begun:
            status = RunStatus.CANCELED if canceled else RunStatus.FAILURE
            if worker.step is not None and worker.step[0] == run.run_id:
                _, name, step_attempt = worker.step
                step_status = StepStatus.CANCELED if canceled else StepStatus.FAILURE
                self._emit(Event(run.run_id, step_status, now, run.attempt, name, message, step_attempt))
            self._emit(Event(run.run_id, status, now, run.attempt, None, message))
        for _, _, request in failed:
            self._emit(Event(request.run_id, RunStatus.FAILURE, now, request.attempt, None, message))
        _send(workers)


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
