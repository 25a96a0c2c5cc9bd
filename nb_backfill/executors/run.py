"""Run one job for one partition in the current thread and report what happens as events.

Shared by every executor. Steps run in dependency order with outputs passed in memory; a failed
step marks its downstream steps SKIPPED; step retries wait with backoff. Whatever the run prints,
writes to stderr or logs is captured into its log, never into whichever notebook cell is active.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

from ..jobs import Job, RunCanceled, RunContext, StepDefinition
from ..outputs import FILES, OutputContext, keep
from ..statuses import LOG, Event, RunStatus, StepStatus

Emit = Callable[[Event], None]
CHECKED = "canceled where the step called context.check_canceled()"


class CancelFlag:
    """Whether a run was asked to stop: set once, read at every step, cheap enough to make one a
    run (a threading.Event is a lock and a condition). `wait` sleeps in short slices."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, less once set; returns whether it is set."""
        deadline = time.monotonic() + timeout
        while not self._set and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
        return self._set


class RunRequest(NamedTuple):
    """What an executor needs to start a run (a named tuple: the engine makes one a run)."""

    run_id: str
    partition_key: str
    attempt: int = 1
    backfill_id: str | None = None
    tags: Mapping[str, str] = MappingProxyType({})
    outputs: str | None = None  # the folder of kept outputs (the store's), None to keep none in files
    reuse: tuple[tuple[str, str, int], ...] = ()  # (step, run_id, attempt) whose kept output it may reuse
    code: str | None = None  # the id of the job's code versions, which the run records as it starts


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


_log_lock = threading.Lock()  # a run's output is taken by its own thread or by flush_live_logs, once


def _flush_log(emit: Emit, request: RunRequest, step: str, buffer: list[str]) -> None:
    with _log_lock:
        taken = buffer[:]
        del buffer[: len(taken)]  # what a step writes meanwhile (appended) stays for the next flush
        if taken:
            emit(Event(request.run_id, LOG, time.time(), request.attempt, step, "".join(taken)))


class _Live(NamedTuple):
    """A run executing now, whose output `flush_live_logs` may send before its step ends."""

    emit: Emit
    request: RunRequest
    buffer: list[str]
    step: list[str]  # the name of the step running now, in a box the run updates


_live: dict[str, _Live] = {}  # run id -> the run, while it executes (executors that report logs live)


def flush_live_logs() -> None:
    """Send what running steps wrote so far as LOG events, so their logs read live (called by an
    executor's flusher thread; the run's own thread sends the rest when its step ends)."""
    for live in list(_live.values()):
        if live.buffer and live.step:
            _flush_log(live.emit, live.request, live.step[0], live.buffer)


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _error_text(error: BaseException) -> str:
    """The traceback from the user's step down (nb_backfill's own calling frames left out)."""
    frames = error.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename.startswith(_PACKAGE):
        frames = frames.tb_next
    return "".join(traceback.format_exception(type(error), error, frames or error.__traceback__))


def execute_run(
    job: Job, request: RunRequest, emit: Emit, canceled: CancelFlag | threading.Event, live: bool = False
) -> str:
    """Execute every step of `job` for one partition; emit run, step and log events; return the
    run's final status.

    Whatever a step raises (BaseException included: KeyboardInterrupt, SystemExit, CancelledError)
    fails that step, never the worker. A cancel stops the run before its next step (or where a
    step calls `context.check_canceled()`); a run whose steps all completed is SUCCESS even if the
    cancel came while its last step ran, since its work was done. With `live`, its output can be
    sent while a step runs (see flush_live_logs).
    """
    run_id, attempt, now = request.run_id, request.attempt, time.time
    emit(Event(run_id, RunStatus.STARTED, now(), attempt, None, request.code))
    context = RunContext(
        job, request.partition_key, run_id, request.backfill_id, attempt, request.tags, RUN_LOGGER, canceled
    )
    outputs: dict[str, object] = {}
    failed: str | None = None
    error_text = ""
    stopped_at: str | None = None  # the step at which a cancel stopped the run
    buffer: list[str] = []
    _capture.buffer = buffer
    running_step: list[str] = []
    reused: set[str] = set()  # steps whose outputs came from an earlier run (see RunRequest.reuse)
    sources = {step: (source, of_attempt) for step, source, of_attempt in request.reuse}
    if live:
        _live[run_id] = _Live(emit, request, buffer, running_step)
    try:
        for step in job.steps:
            if failed is not None:
                emit(
                    Event(
                        run_id, StepStatus.SKIPPED, time.time(), attempt, step.name, f"upstream step {failed!r} failed"
                    )
                )
                continue
            if stopped_at is not None or canceled.is_set():
                stopped_at = stopped_at or step.name
                emit(Event(run_id, StepStatus.CANCELED, time.time(), attempt, step.name, "canceled before it started"))
                continue
            if step.name in sources and reused.issuperset(step.inputs):
                source, of_attempt = sources[step.name]
                found = _reuse(job, step, request, source, of_attempt, buffer)
                if found is not _NOT_FOUND:
                    outputs[step.name] = found
                    reused.add(step.name)
                    note = f"output of run {source} attempt {of_attempt} reused"
                    emit(Event(run_id, StepStatus.REUSED, now(), attempt, step.name, note))
                    continue
            step_attempt = 1
            if live:
                running_step[:] = [step.name]
            while True:
                emit(Event(run_id, StepStatus.RUNNING, now(), attempt, step.name, None, step_attempt))
                try:
                    outputs[step.name] = value = step.call(outputs, context)
                    if value is not None or step.keep_output or job.keep_outputs:
                        _keep(job, step, request, value, buffer)
                except RunCanceled:
                    _flush_log(emit, request, step.name, buffer)
                    emit(Event(run_id, StepStatus.CANCELED, time.time(), attempt, step.name, CHECKED, step_attempt))
                    stopped_at = step.name
                    break
                except BaseException as error:  # any error of user code fails the step, not the worker
                    _flush_log(emit, request, step.name, buffer)
                    text = _error_text(error)
                    emit(Event(run_id, StepStatus.FAILURE, time.time(), attempt, step.name, text, step_attempt))
                    if step_attempt <= step.retry.max_retries and not canceled.is_set():
                        step_attempt += 1
                        canceled.wait(step.retry.wait_before(step_attempt))
                        if not canceled.is_set():
                            continue
                    failed, error_text = step.name, text
                    break
                if buffer:
                    _flush_log(emit, request, step.name, buffer)
                emit(Event(run_id, StepStatus.SUCCESS, now(), attempt, step.name, None, step_attempt))
                break
    finally:
        _capture.buffer = None
        _live.pop(run_id, None)
    if failed is not None:
        status, message = RunStatus.FAILURE, f"step {failed!r} failed:\n{error_text}"
    elif stopped_at is not None:
        status, message = RunStatus.CANCELED, f"canceled at step {stopped_at!r}"
    else:
        status, message = RunStatus.SUCCESS, None
    emit(Event(run_id, status, now(), attempt, None, message))
    return status


def _keep(job: Job, step: StepDefinition, request: RunRequest, value: object, buffer: list[str]) -> None:
    """Keep a step's value as its job asks (a note in the run's log when one kept by default is not)."""
    insist = step.keep_output if step.keep_output is not None else job.keep_outputs
    if insist is False or (job.io is None and request.outputs is None):
        return
    where = OutputContext(job.name, step.name, request.partition_key, request.run_id, request.attempt, request.outputs)
    note = keep(job.io, bool(insist), where, value)
    if note:
        buffer.append(note)


_NOT_FOUND = object()


def _reuse(
    job: Job, step: StepDefinition, request: RunRequest, source: str, of_attempt: int, buffer: list[str]
) -> object:
    """A step's output kept by an earlier run attempt, kept again as this one's, or _NOT_FOUND
    (then the step runs again: that output was not kept, or cannot be read)."""
    before = OutputContext(job.name, step.name, request.partition_key, source, of_attempt, request.outputs)
    try:
        value = (job.io or FILES).load(before)
    except FileNotFoundError:  # not kept (it returned None, or could not be kept) or pruned: run it again
        buffer.append(
            f"[nb_backfill runs step {step.name!r} again: its output of attempt {before.attempt} was not kept]\n"
        )
        return _NOT_FOUND
    except Exception as error:  # unreadable: run it again
        buffer.append(f"[nb_backfill runs step {step.name!r} again: its earlier output cannot be read ({error})]\n")
        return _NOT_FOUND
    _keep(job, step, request, value, buffer)
    return value


def internal_failure(request: RunRequest, error: BaseException) -> Event:
    """The FAILURE of a run that nb_backfill itself could not execute (a bug of ours, said as such)."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return Event(
        request.run_id, RunStatus.FAILURE, time.time(), request.attempt, None, f"nb_backfill could not run it:\n{text}"
    )
