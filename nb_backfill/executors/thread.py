"""The thread executor: runs execute in a pool of threads inside the kernel, seeing notebook globals."""

from __future__ import annotations

import threading
from collections import deque

from ..errors import InvalidOptionError
from ..jobs import Job
from .run import CancelFlag, Emit, RunRequest, execute_run, flush_live_logs, install_capture, internal_failure

LOG_FLUSH = 0.5  # seconds between sends of what running steps wrote so far


class ThreadExecutor:
    """A fixed pool of worker threads taking runs from one queue."""

    name = "thread"

    def __init__(self, max_workers: int, emit: Emit):
        install_capture()
        self.max_workers = max_workers
        self._emit = emit
        self._queue: deque[tuple[Job, RunRequest]] = deque()
        self._canceled: dict[str, CancelFlag] = {}  # runs queued or running
        self._lock = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._stopped = threading.Event()
        try:
            for i in range(max_workers):
                thread = threading.Thread(target=self._work, name=f"nb_backfill-thread-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)
            threading.Thread(target=self._flush_logs, name="nb_backfill-thread-logs", daemon=True).start()
        except RuntimeError as error:  # "can't start new thread": the ones started stop again
            self.shutdown()
            raise InvalidOptionError(
                f"could not start {max_workers} threads ({error}; {len(self._threads)} started): ask for fewer with max_workers"
            ) from None

    def submit(self, job: Job, *requests: RunRequest) -> None:
        """Queue runs: one lock and one wake-up for the lot, however many."""
        with self._lock:
            for request in requests:
                self._canceled[request.run_id] = CancelFlag()
                self._queue.append((job, request))
            self._lock.notify(len(requests))

    def withdraw(self, run_id: str) -> bool:
        """Take back a run no thread has started: True if it was still queued."""
        with self._lock:
            for item in self._queue:
                if item[1].run_id == run_id:
                    self._queue.remove(item)
                    self._canceled.pop(run_id, None)
                    return True
        return False

    def cancel(self, run_id: str) -> bool:
        """Cancel a run: True if it had not started (it never will), else it stops at its next
        step boundary or `context.check_canceled()`."""
        if self.withdraw(run_id):
            return True
        with self._lock:
            event = self._canceled.get(run_id)
        if event is not None:
            event.set()
        return False

    def _work(self) -> None:
        finished = None
        while True:
            with self._lock:  # one lock a run: forget the last, take the next
                self._canceled.pop(finished, None)
                while not self._queue and not self._stopping:
                    self._lock.wait()
                if self._stopping:
                    return
                job, request = self._queue.popleft()
                canceled = self._canceled[request.run_id]
            try:
                execute_run(job, request, self._emit, canceled, live=True)
            except BaseException as error:  # our own machinery failed: the run fails saying so, the thread lives on
                self._emit(internal_failure(request, error))
            finished = request.run_id

    def _flush_logs(self) -> None:
        """A long step's output reads live: sent every LOG_FLUSH seconds while it runs."""
        while not self._stopped.wait(LOG_FLUSH):
            flush_live_logs()

    def shutdown(self) -> None:
        self._stopped.set()
        with self._lock:
            self._stopping = True
            for event in self._canceled.values():
                event.set()
            self._lock.notify_all()
