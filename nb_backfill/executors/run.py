"""Run one job for one partition in the current thread and report what happens as events.

Shared by every executor. Steps run in dependency order with outputs passed in memory; a failed
step marks its downstream steps SKIPPED; step retries wait with backoff. Whatever the run prints,
writes to stderr or logs is captured into its log, never into whichever notebook cell is active.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from ..jobs import Job, RunCanceled, RunContext
from ..storage import Event

Emit = Callable[[Event], None]


@dataclass(frozen=True)
class RunRequest:
    """What an executor needs to start a run."""

    run_id: str
    partition_key: str
    attempt: int = 1
    backfill_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


class _Capture(threading.local):
    buffer: list[str] | None = None


_capture = _Capture()


class _Router(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: text written by a run's thread goes to that run's
    log; text from any other thread goes where it went before."""

    def __init__(self, original: io.TextIOBase):
        self.original = original

    def write(self, text: str) -> int:
        buffer = _capture.buffer
        if buffer is None:
            return self.original.write(text)
        buffer.append(text)
        return len(text)

    def flush(self) -> None:
        if _capture.buffer is None:
            self.original.flush()

    def __getattr__(self, name: str):  # fileno, encoding, isatty... of the real stream
        return getattr(self.original, name)


class _LogHandler(logging.Handler):
    """Log records made in a run's thread go to that run's captured log."""

    def emit(self, record: logging.LogRecord) -> None:
        buffer = _capture.buffer
        if buffer is not None:
            buffer.append(self.format(record) + "\n")


_thread_start = threading.Thread.start


def _start_capturing(thread: threading.Thread) -> None:
    """Thread.start, but a thread started by a run writes into that run's log too."""
    buffer = _capture.buffer
    if buffer is not None:
        target = thread.run

        def run_in_capture() -> None:
            _capture.buffer = buffer
            try:
                target()
            finally:
                _capture.buffer = None

        thread.run = run_in_capture  # type: ignore[method-assign]
    _thread_start(thread)


_HANDLER = _LogHandler()
_HANDLER.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s - %(message)s"))
RUN_LOGGER = logging.getLogger("nb_backfill.run")
RUN_LOGGER.setLevel(logging.DEBUG)
RUN_LOGGER.propagate = False
_install_lock = threading.Lock()


def install_capture() -> None:
    """Route sys.stdout, sys.stderr, logging and threads a run starts through the per-run capture (idempotent)."""
    with _install_lock:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout)
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr)
        if _HANDLER not in RUN_LOGGER.handlers:
            RUN_LOGGER.addHandler(_HANDLER)
        root = logging.getLogger()
        if _HANDLER not in root.handlers:
            root.addHandler(_HANDLER)
        threading.Thread.start = _start_capturing  # type: ignore[method-assign]


def _flush_log(emit: Emit, request: RunRequest, step: str, buffer: list[str]) -> None:
    if buffer:
        emit(Event(request.run_id, "LOG", time.time(), request.attempt, step, "".join(buffer)))
        buffer.clear()


def _error_text(error: BaseException) -> str:
    """The traceback from the user's step down (nb_backfill's own calling frame left out)."""
    frames = error.__traceback__.tb_next if error.__traceback__ is not None else None
    return "".join(traceback.format_exception(type(error), error, frames or error.__traceback__))


def execute_run(job: Job, request: RunRequest, emit: Emit, canceled: threading.Event) -> str:
    """Execute every step of `job` for one partition; emit run, step and log events; return the
    run's final status (SUCCESS, FAILURE or CANCELED)."""
    run_id, attempt = request.run_id, request.attempt
    emit(Event(run_id, "STARTED", time.time(), attempt))
    context = RunContext(job, request.partition_key, run_id, request.backfill_id, attempt, request.tags, RUN_LOGGER, canceled)
    outputs: dict[str, object] = {}
    failed: str | None = None
    buffer: list[str] = []
    _capture.buffer = buffer
    try:
        for step in job.steps:
            if failed is not None or canceled.is_set():
                if failed is not None:
                    emit(Event(run_id, "SKIPPED", time.time(), attempt, step.name, f"upstream step {failed!r} failed"))
                continue
            step_attempt = 1
            while True:
                emit(Event(run_id, "RUNNING", time.time(), step_attempt, step.name))
                try:
                    args = [outputs[name] for name in step.inputs]
                    outputs[step.name] = step.fn(*args, context=context) if step.takes_context else step.fn(*args)
                except RunCanceled:
                    canceled.set()
                    _flush_log(emit, request, step.name, buffer)
                    emit(Event(run_id, "FAILURE", time.time(), step_attempt, step.name, "canceled"))
                    break
                except (Exception, SystemExit) as error:  # any error of user code fails the step, not the worker
                    _flush_log(emit, request, step.name, buffer)
                    emit(Event(run_id, "FAILURE", time.time(), step_attempt, step.name, _error_text(error)))
                    if step_attempt <= step.retry.max_retries and not canceled.is_set():
                        step_attempt += 1
                        canceled.wait(step.retry.wait_before(step_attempt))
                        if not canceled.is_set():
                            continue
                    failed = step.name
                    error_text = _error_text(error)
                    break
                _flush_log(emit, request, step.name, buffer)
                emit(Event(run_id, "SUCCESS", time.time(), step_attempt, step.name))
                break
    finally:
        _capture.buffer = None
    if canceled.is_set():
        status, message = "CANCELED", "canceled"
    elif failed is not None:
        status, message = "FAILURE", f"step {failed!r} failed:\n{error_text}"
    else:
        status, message = "SUCCESS", None
    emit(Event(run_id, status, time.time(), attempt, None, message))
    return status
