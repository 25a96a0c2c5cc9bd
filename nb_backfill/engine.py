"""The engine: one thread per process and store that runs this process's backfills and writes what happens.

Each turn it drains what executors reported and writes it in one transaction (storage checks every
status change against the lifecycle); then it decides the control messages that arrived, from
this process (`control`) or through the store from others (commands), against the state it holds
after that write; finishes backfills with nothing left; and starts the runs the policy picks.

Nothing is lost when a write fails: the batch is kept and written again, in order, before anything
newer; a value SQLite refuses is stored in a form it takes; and when the store stays unwritable for
WRITE_FAULT_LIMIT seconds (or cannot be written at all), the backfills end FAILED with the reason,
which `bf.status`, `bf.error()`, the widget and the CLI show. A backfill is run by exactly one
engine, its owner; another process asks the owner, or takes the backfill over once the owner died.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import chunks
from .chunks import Selection, chunk_size
from .codeversion import code_id
from .errors import BackfillStateError
from .executors import Executor, make_executor
from .executors.run import RunRequest
from .jobs import Job, RetryPolicy, get_job, run_tags
from .options import LaunchOptions, positive_int
from .outputs import OUTPUTS_DIR
from .policy import PendingRun, Queue, TagLimit, in_flight_groups, pick, priority_of
from .statuses import (
    BACKFILL_DONE,
    LOG,
    RUN_DONE,
    STEP_SUCCEEDED,
    BackfillStatus,
    Event,
    RunStatus,
    StepStatus,
)
from .storage import (
    INTERRUPTED,
    BackfillRecord,
    OnePerStore,
    RunRecord,
    Storage,
    StorageError,
    owner_alive,
    process_token,
    run_id_of,
)

WRITE_FAULT_LIMIT = 30.0  # seconds a failing store is retried before its backfills fail
LOG_LIMIT = 1_000_000  # characters of captured output stored per run attempt; the rest goes to a file
COMMAND_POLL = 0.2  # seconds between looks for commands from other processes
WRITE_GAP = 0.005  # seconds a write of FEW_EVENTS waits after the one before it for more to carry
FEW_EVENTS = 64
BACKLOG = 256  # runs the default coordinator keeps handed to its executor
_HEARTBEAT = 2.0
_WAKE = Event("", "WAKE", 0.0)
VERBS = ("cancel", "pause", "resume", "retry", "max_concurrent", "abort")
CANCELED_UNSTARTED = "canceled before it started"
ABORTED = "canceled: the process running it stopped before the run finished"


class OwnedElsewhere(BackfillStateError):
    """The backfill is run by another live process: ask it through the store."""

    def __init__(self, record: BackfillRecord):
        super().__init__(f"backfill {record.id!r} is run by another process ({record.owner})")
        self.record = record


@dataclass
class ActiveBackfill:
    """What the engine keeps in memory of a backfill it runs (rebuilt from storage on a take-over)."""

    id: str
    job: Job
    options: LaunchOptions
    executor: Executor
    tags: dict[str, str]
    retry: RetryPolicy
    pending: deque[PendingRun]
    status: str = BackfillStatus.REQUESTED
    created: float = 0.0
    in_flight: dict[str, tuple[PendingRun, Mapping[str, str]]] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    # runs still to write (see chunks): where they come from, how many are written, how many in all
    selection: Selection | None = None
    written: int = 0
    total: int = 0
    keys: list[str] | None = None  # the definition's keys at the selection's time, once needed
    versions: dict[str, str] = field(default_factory=dict)  # its job's step code versions (see codeversion)
    code: str | None = None  # their id, which each run records as it starts
    canaries: set[str] = field(default_factory=set)  # order "canary": canary runs not yet done; only they start

    @property
    def capacity(self) -> int:
        """How many runs may be handed to the executor at once."""
        if self.options.coordinator == "queued":
            return self.options.max_concurrent or self.executor.max_workers
        # a backlog, so workers never wait for the engine (runs not started can still be taken back)
        return max(2 * self.executor.max_workers, BACKLOG)

    @property
    def limits(self) -> list[TagLimit]:
        return self.options.tag_limits() if self.options.coordinator == "queued" else []

    def tags_of(self, run: PendingRun) -> Mapping[str, str]:
        return run_tags(self.job, self.tags, self.id, run.partition)


def running(
    record: BackfillRecord, job: Job, options: LaunchOptions, pending: Sequence[PendingRun], executor: Executor
) -> ActiveBackfill:
    """What an engine holds of a backfill it is about to run."""
    selection = Selection.from_json(record.selection) if record.selection and record.unwritten else None
    versions = job.code_versions()
    return ActiveBackfill(
        id=record.id,
        job=job,
        options=options,
        executor=executor,
        tags=dict(record.tags),
        retry=options.retry(job),
        pending=deque(pending),
        status=record.status,
        created=record.created,
        selection=selection,
        written=record.num_partitions - record.unwritten,
        total=record.num_partitions,
        versions=versions,
        code=code_id(versions),
    )


def _backfill_of(run_id: str) -> str:
    """Run ids begin with their backfill's id and '-'."""
    return run_id.split("-", 1)[0]


class Engine(OnePerStore):
    """The one thread per process and store that writes events and starts runs (`for_storage`
    starts it, only to run or control backfills; `existing` never does)."""

    def __init__(
        self,
        storage: Storage,
        owner: str | None = None,
        threaded: bool = True,
        executors: Callable[[str, int, Callable[[Event], None]], Executor] = make_executor,
    ):
        """`owner` names this process in the store; `threaded=False` and `executors` let a test
        drive turns itself with executors of its own."""
        self.storage = storage
        self.owner = owner or process_token()
        self._make_executor = executors
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._active: dict[str, ActiveBackfill] = {}
        self._faults: dict[str, str] = {}  # backfill id -> why it failed, when the store could not say so
        self._unwritten: list[Event] = []  # in order; written before anything newer
        self._fault_since: float | None = None
        self._log_sizes: dict[tuple[str, int], int] = {}
        self._last_poll = self._last_heartbeat = self._last_write = 0.0
        self._command_seq = 0
        self._outputs = str(storage.home / OUTPUTS_DIR)  # where runs keep their outputs
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="nb_backfill-engine", daemon=True)
            self._thread.start()

    # --- any thread
    def emit(self, event: Event) -> None:
        """Executors report here; the engine thread writes it."""
        self._events.put(event)

    def owns(self, backfill_id: str) -> bool:
        return backfill_id in self._active

    def fault(self, backfill_id: str) -> str | None:
        """Why this engine failed the backfill, if the store could not be told."""
        return self._faults.get(backfill_id)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the engine thread between turns and return its result (state has one writer)."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn()
        done = threading.Event()
        box: dict[str, Any] = {}

        def command() -> None:
            try:
                box["value"] = fn()
            except BaseException as error:  # handed back to the caller
                box["error"] = error
            done.set()

        self._calls.put(command)
        self._events.put(_WAKE)
        done.wait()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def launch(self, active: ActiveBackfill) -> None:
        """Run a backfill just written to the store."""
        self.call(lambda: self._adopt(active))

    def control(self, backfill_id: str, verb: str, arg: Any = None, job: Job | None = None) -> str:
        """Decide a control message on the engine thread; returns what happened, in words.

        Raises OwnedElsewhere when another live process runs the backfill (ask it with a command),
        and BackfillStateError when the verb makes no sense now (retry with nothing failed...)."""
        return self.call(lambda: self._control(backfill_id, verb, arg, job))

    # --- the engine thread
    def _loop(self) -> None:
        while True:
            try:
                self.turn(0.05 if self._active else 0.5)
            except Exception as error:  # a bug of ours: say so in every backfill it touched, never hang
                self._fail_all(f"nb_backfill's engine failed:\n{''.join(traceback.format_exception(error))}")
                time.sleep(0.5)

    def turn(self, timeout: float = 0.0) -> None:
        """One turn: write what was reported, decide control, store the decisions, finish, start runs."""
        written = self._write(self._drain(timeout))
        while True:
            try:
                self._calls.get_nowait()()
            except queue.Empty:
                break
        now = time.time()
        if written and now - self._last_poll >= COMMAND_POLL:
            self._last_poll = now
            self._answer_commands()
        if written and self._unwritten:
            written = self._write([])  # what was just decided is stored before anything relies on it
        if self._active and now - self._last_heartbeat >= _HEARTBEAT:
            self._last_heartbeat = now
            try:
                self.storage.heartbeat(list(self._active), self.owner)
            except StorageError:
                pass  # told again in two seconds; a long silence makes others see this owner as gone
        if written:
            self._finish()
            self._dispatch(now)
            self._write_more()

    def _drain(self, timeout: float) -> list[Event]:
        """The events reported since the last turn (waiting up to `timeout` for one). In the
        engine's own thread, a turn with few events soon after a write waits out WRITE_GAP for
        more, so that runs ending one by one (worker processes) share a transaction instead of
        one each; many events are written at once."""
        try:
            first = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < 20_000:
            try:
                batch.append(self._events.get_nowait())
            except queue.Empty:
                left = self._last_write + WRITE_GAP - time.monotonic() if timeout > 0 else 0.0
                if left <= 0 or first is _WAKE or len(batch) >= FEW_EVENTS:
                    break
                try:
                    batch.append(self._events.get(timeout=left))
                except queue.Empty:
                    break
        return [e for e in batch if e is not _WAKE]

    # --- writing
    def _write(self, drained: list[Event]) -> bool:
        """Write what is unwritten, then the drained events; note them in memory once written.
        False while the store cannot be written (nothing new starts meanwhile)."""
        events = self._unwritten + [e for e in map(self._cap_log, drained) if e is not None]
        if not events:
            return True
        try:
            self._write_safely(events)
        except StorageError as error:
            self._unwritten = events
            self._on_fault(error)
            return False
        self._unwritten, self._fault_since = [], None
        self._last_write = time.monotonic()
        self._note(events)
        return True

    def _write_safely(self, events: Sequence[Event]) -> None:
        """Write events; one SQLite refuses (a value it cannot store) is stored in a form it takes,
        or left out, without losing the others."""
        try:
            self.storage.write_batch(events)
        except StorageError as error:
            if error.kind != "data":
                raise
            if len(events) > 1:
                middle = len(events) // 2
                self._write_safely(events[:middle])
                self._write_safely(events[middle:])
                return
            event = events[0]
            note = f"[nb_backfill could not store this {'output' if event.status == LOG else 'message'}: {error}]"
            try:
                self.storage.write_batch(
                    [Event(event.run_id, event.status, event.ts, event.attempt, event.step, note, event.step_attempt)]
                )
            except StorageError as again:
                if again.kind != "data":
                    raise

    def _on_fault(self, error: StorageError) -> None:
        """A write failed: try again next turn, until the store stays unwritable too long."""
        now = time.monotonic()
        self._fault_since = self._fault_since or now
        waited = now - self._fault_since
        if error.kind != "transient" or waited >= WRITE_FAULT_LIMIT:
            self._fail_all(f"could not write to the store for {waited:.0f} s: {error}")
        else:
            time.sleep(min(1.0, 0.05 + waited / 10))

    def _fail_all(self, why: str) -> None:
        """Every backfill of this engine ends FAILED with `why` (kept in memory if the store cannot say it)."""
        self._unwritten, self._fault_since = [], None
        for active in list(self._active.values()):
            self._fail(active, why)

    def _fail(self, active: ActiveBackfill, why: str) -> None:
        """The backfill ends FAILED with `why` (kept in memory if the store cannot say it)."""
        self._faults[active.id] = why
        self._drop(active)
        try:
            self.storage.set_backfill_status(active.id, BackfillStatus.FAILED, why)
        except StorageError:
            pass

    def _cap_log(self, event: Event) -> Event | None:
        """A run's captured output, stored up to LOG_LIMIT characters an attempt; beyond it, the
        rest goes to a file beside the store, and the stored log says where."""
        if event.status != LOG or not event.message:
            return event
        key = (event.run_id, event.attempt)
        used = self._log_sizes.get(key, 0)
        self._log_sizes[key] = used + len(event.message)
        if used + len(event.message) <= LOG_LIMIT:
            return event
        path = log_file(self.storage.home, event.run_id, event.attempt)
        room = max(0, LOG_LIMIT - used)
        try:
            path.parent.mkdir(exist_ok=True)
            with open(path, "a", encoding="utf-8", errors="backslashreplace") as file:
                file.write(event.message[room:])
            where = f"the rest is in {str(path)!r}"
        except OSError as error:
            where = f"the rest could not be kept ({error})"
        if used > LOG_LIMIT:
            return None
        text = f"{event.message[:room]}\n[nb_backfill: this run's log reached {LOG_LIMIT:,} characters; {where}]\n"
        return Event(event.run_id, LOG, event.ts, event.attempt, event.step, text)

    def _note(self, events: Iterable[Event]) -> None:
        """Keep memory in step with what was written: runs started and finished, retries queued."""
        now = time.time()
        for event in events:
            if event.step is not None or event.status == LOG:
                continue
            active = self._active.get(_backfill_of(event.run_id))
            if active is None or event.run_id not in active.in_flight:
                continue
            if event.status == RunStatus.STARTED:
                active.started.add(event.run_id)
                continue
            if event.status not in RUN_DONE:
                continue
            run, _ = active.in_flight.pop(event.run_id)
            active.started.discard(event.run_id)
            self._log_sizes.pop((run.run_id, run.attempt), None)
            retryable = event.status == RunStatus.FAILURE and run.attempt <= active.retry.max_retries
            if run.run_id in active.canaries and not retryable:
                self._canary_done(active, run, event.status)
            if retryable and active.status != BackfillStatus.CANCELING:
                again = PendingRun(
                    run.run_id, run.partition, run.attempt + 1, now + active.retry.wait_before(run.attempt + 1)
                )
                self._unwritten.append(
                    Event(run.run_id, RunStatus.QUEUED, now, again.attempt, not_before=again.not_before)
                )
                active.pending.append(again)

    def _canary_done(self, active: ActiveBackfill, run: PendingRun, status: str) -> None:
        """A canary ended for good; one that failed pauses the backfill when it asked for that."""
        active.canaries.discard(run.run_id)
        if status == RunStatus.FAILURE and active.options.stop_on_canary_failure:
            active.canaries.clear()
            if active.status == BackfillStatus.REQUESTED:
                why = (
                    f"paused: canary partition {run.partition!r} failed (stop_on_canary_failure), before the "
                    f"rest started; fix it, then resume"
                )
                self.storage.set_backfill_status(active.id, BackfillStatus.PAUSED, why)
                active.status = BackfillStatus.PAUSED
                self._withdraw_unstarted(active, keep=0)

    # --- backfills coming and going
    def _adopt(self, active: ActiveBackfill) -> None:
        self._faults.pop(active.id, None)
        self._active[active.id] = active
        if active.code is not None:
            try:
                self.storage.add_code_versions(active.code, active.versions)
            except StorageError:
                pass  # only what changed in a stale partition is unknown then: all of it reruns

    def _drop(self, active: ActiveBackfill) -> None:
        self._active.pop(active.id, None)
        active.executor.shutdown()

    def _finish(self) -> None:
        """Backfills with nothing left to start or finish get their final status (once every
        change of their runs is stored)."""
        if self._unwritten:
            return
        for active in list(self._active.values()):
            if (
                active.in_flight
                or active.status == BackfillStatus.PAUSED
                or ((active.pending or active.selection) and active.status != BackfillStatus.CANCELING)
            ):
                continue
            if active.status == BackfillStatus.CANCELING:
                final = BackfillStatus.CANCELED
            else:
                counts = self.storage.run_counts(active.id)
                if any(status not in RUN_DONE for status in counts):
                    self._recover(active)
                    continue
                bad = counts.get(RunStatus.FAILURE, 0) + counts.get(RunStatus.CANCELED, 0)
                final = BackfillStatus.COMPLETED_FAILED if bad else BackfillStatus.COMPLETED_SUCCESS
            self.storage.set_backfill_status(active.id, final)
            self._drop(active)

    def _write_more(self) -> None:
        """Write the next chunk of runs of each backfill whose runs are written in chunks, once
        fewer than a chunk are pending (so memory stays bounded at any size; one chunk a turn, so
        a turn stays short). A canceled backfill's runs not written are never created."""
        for active in list(self._active.values()):
            if (
                active.selection is None
                or active.status not in (BackfillStatus.REQUESTED, BackfillStatus.PAUSED)
                or len(active.pending) >= chunks.MAX_CHUNK
            ):
                continue
            start = active.written
            try:
                if active.keys is None:
                    active.keys = active.selection.all_keys(active.job.partitions_def, active.id)
                keys = active.selection.keys(active.keys, start, chunk_size(start, active.total - start))
                runs = [(run_id_of(active.id, start + i), key, start + i) for i, key in enumerate(keys)]
                self.storage.write_more_runs(active.id, start, runs)
            except BackfillStateError as error:
                self._fail(active, str(error))
                continue
            except StorageError as error:
                if error.kind == "transient":
                    self._on_fault(error)  # tried again next turn, until the store stays unwritable too long
                    return
                self._fail(active, f"could not write its runs {start + 1:,} and after: {error}")
                continue
            active.written += len(runs)
            active.pending.extend(PendingRun(r, key, 1) for r, key, _ in runs)
            if active.written >= active.total:
                active.selection = active.keys = None

    def _recover(self, active: ActiveBackfill) -> None:
        """Storage has unfinished runs this engine does not hold (it never should): queue the
        queued ones again and fail the others saying so, so that nothing stays stuck."""
        held = {run.run_id for run in active.pending} | set(active.in_flight)
        now = time.time()
        for run in self.storage.runs(active.id):
            if run.run_id in held or run.status in RUN_DONE:
                continue
            if run.status == RunStatus.QUEUED:
                active.pending.append(PendingRun(run.run_id, run.partition, run.attempt, run.not_before))
            else:
                message = "nb_backfill lost track of this run (a bug, please report it); retry it"
                self._unwritten.append(Event(run.run_id, RunStatus.FAILURE, now, run.attempt, None, message))

    @staticmethod
    def _free(active: ActiveBackfill) -> int:
        """Runs a backfill may still hand its executor: while canaries remain, only they (they lead its queue)."""
        free = active.capacity - len(active.in_flight)
        if active.canaries:  # the canaries not in flight are pending: counted through the few in flight
            free = min(free, len(active.canaries) - sum(1 for r in active.in_flight if r in active.canaries))
        return free

    def _dispatch(self, now: float) -> None:
        runnable = [a for a in self._active.values() if a.status == BackfillStatus.REQUESTED and a.pending]
        if not runnable:
            return
        queues = [
            Queue(a.id, a.pending, self._free(a), a.tags_of, a.limits, priority_of(a.tags), a.created) for a in runnable
        ]
        groups: dict[tuple, int] = {}
        if any(q.limits for q in queues):
            for a in self._active.values():
                for group, n in in_flight_groups((tags for _, tags in a.in_flight.values()), a.limits).items():
                    groups[group] = groups.get(group, 0) + n
        decisions = pick(queues, groups, now)
        for active in runnable:
            picked = decisions[active.id]
            for _ in range(picked.scanned):
                active.pending.popleft()
            active.pending.extendleft(reversed(picked.held))
            requests = []
            for run, tags in picked.start:
                active.in_flight[run.run_id] = (run, tags)
                requests.append(
                    RunRequest(
                        run.run_id, run.partition, run.attempt, active.id, tags, self._outputs, run.reuse, active.code
                    )
                )
            if requests:
                active.executor.submit(active.job, *requests)

    # --- control
    def _control(self, backfill_id: str, verb: str, arg: Any, job: Job | None) -> str:
        if verb not in VERBS:
            raise ValueError(f"unknown control verb {verb!r}")
        if self._unwritten and not self._write([]):  # decide against what is written, never ahead of it
            raise BackfillStateError(
                f"the store cannot be written right now, so backfill {backfill_id!r} cannot be changed: try again"
            )
        active = self._active.get(backfill_id)
        if active is not None:
            return getattr(self, f"_{verb}")(active, arg)
        return self._take_over(backfill_id, verb, arg, job)

    def _set_status(self, active: ActiveBackfill, status: str) -> None:
        self.storage.set_backfill_status(active.id, status)
        active.status = status

    def _cancel(self, active: ActiveBackfill, _: Any) -> str:
        if active.status == BackfillStatus.CANCELING:
            return f"backfill {active.id} is already canceling"
        self._set_status(active, BackfillStatus.CANCELING)
        now = time.time()
        withdrawn = [r for r in list(active.in_flight) if r not in active.started and active.executor.withdraw(r)]
        never = [active.in_flight.pop(r)[0] for r in withdrawn] + list(active.pending)
        active.pending.clear()
        self._unwritten += [
            Event(r.run_id, RunStatus.CANCELED, now, r.attempt, None, CANCELED_UNSTARTED) for r in never
        ]
        for run_id, (run, _) in active.in_flight.items():
            active.executor.cancel(run_id)
            self._unwritten.append(Event(run_id, RunStatus.CANCELING, now, run.attempt))
        self._events.put(_WAKE)
        running = len(active.in_flight)
        return f"canceling backfill {active.id}: {len(never)} runs that had not started are canceled" + (
            f"; {running} running runs stop at their next step" if running else ""
        )

    def _withdraw_unstarted(self, active: ActiveBackfill, keep: int) -> int:
        """Runs handed to the executor but not started go back to the front of the queue, until
        at most `keep` are in flight; started runs finish. Returns how many came back."""
        back = 0
        for run_id in reversed([r for r in active.in_flight if r not in active.started]):
            if len(active.in_flight) <= keep:
                break
            if active.executor.withdraw(run_id):
                run, _ = active.in_flight.pop(run_id)
                active.pending.appendleft(run)
                back += 1
        return back

    def _pause(self, active: ActiveBackfill, _: Any) -> str:
        if active.status == BackfillStatus.PAUSED:
            return f"backfill {active.id} is already paused"
        if active.status == BackfillStatus.CANCELING:
            raise BackfillStateError(f"backfill {active.id!r} is canceling: there is nothing to pause")
        self._set_status(active, BackfillStatus.PAUSED)
        self._withdraw_unstarted(active, keep=0)
        running = len(active.in_flight)
        return f"paused backfill {active.id}: no new run starts" + (
            f"; {running} running runs finish" if running else ""
        )

    def _resume(self, active: ActiveBackfill, _: Any) -> str:
        if active.status == BackfillStatus.CANCELING:
            raise BackfillStateError(f"backfill {active.id!r} is canceling: resume it once it is CANCELED")
        if active.status != BackfillStatus.PAUSED:
            return f"backfill {active.id} is already running"
        self._set_status(active, BackfillStatus.REQUESTED)
        return f"resumed backfill {active.id}"

    def _reusable(self, runs: Sequence[RunRecord], from_failure: bool) -> dict[str, tuple[tuple[str, str, int], ...]]:
        """run_id -> (step, run_id, attempt) of the steps that succeeded in its current attempt,
        whose outputs its next attempt may reuse (retry from failure); read before the retry
        clears its steps."""
        reusable: dict[str, list[tuple[str, str, int]]] = {}
        if from_failure:
            attempts = {r.run_id: r.attempt for r in runs}
            for run_id, step, status, *_ in self.storage.step_rows_of(list(attempts)):
                if status in STEP_SUCCEEDED:
                    reusable.setdefault(run_id, []).append((step, run_id, attempts[run_id]))
        return {run_id: tuple(steps) for run_id, steps in reusable.items()}

    def _retry(self, active: ActiveBackfill, from_failure: Any) -> str:
        if active.status == BackfillStatus.CANCELING:
            raise BackfillStateError(f"backfill {active.id!r} is canceling: retry it once it is CANCELED")
        failed = [
            r
            for r in self.storage.runs(active.id)
            if r.status == RunStatus.FAILURE and r.run_id not in active.in_flight
        ]
        if not failed:
            raise BackfillStateError(nothing_to_retry(active.id, self.storage.run_counts(active.id)))
        reuse = self._reusable(failed, bool(from_failure))
        now = time.time()
        self._unwritten += [Event(r.run_id, RunStatus.QUEUED, now, r.attempt + 1) for r in failed]
        active.pending.extend(
            PendingRun(r.run_id, r.partition, r.attempt + 1, reuse=reuse.get(r.run_id, ())) for r in failed
        )
        self._events.put(_WAKE)
        return f"retrying {len(failed)} failed runs of backfill {active.id}{_from_failure(reuse)}"

    def _max_concurrent(self, active: ActiveBackfill, value: Any) -> str:
        value = positive_int("max_concurrent", value, allow_none=False)
        options = active.options.with_max_concurrent(value)
        self.storage.set_backfill_options(active.id, options.to_json())
        active.options = options
        self._withdraw_unstarted(active, keep=active.capacity)
        return f"backfill {active.id} now runs at most {value} runs at once"

    def _abort(self, active: ActiveBackfill, _: Any) -> str:
        """Stop now (the process is about to exit): every unfinished run is CANCELED at once."""
        now = time.time()
        runs = list(active.pending) + [run for run, _ in active.in_flight.values()]
        events = [
            Event(run_id, StepStatus.CANCELED, now, attempt, step, ABORTED)
            for run_id, attempt, step in self.storage.running_steps([r.run_id for r in runs])
        ]
        events += [Event(r.run_id, RunStatus.CANCELED, now, r.attempt, None, ABORTED) for r in runs]
        self.storage.write_batch(events)
        self.storage.set_backfill_status(active.id, BackfillStatus.CANCELED)
        self._drop(active)
        return f"backfill {active.id} is CANCELED: {len(runs)} unfinished runs were stopped"

    def _take_over(self, backfill_id: str, verb: str, arg: Any, job: Job | None) -> str:
        """Control of a backfill no live process runs: finished, or left by a process that died.
        This engine claims it (only one process can), does what was asked, and lets it go again
        unless it now runs it, so a backfill is never owned by a process that does not run it."""
        record = self.storage.get_backfill(backfill_id)
        if record is None:
            raise BackfillStateError(f"unknown backfill {backfill_id!r}")
        done = record.status in BACKFILL_DONE
        if not done and record.owner != self.owner and owner_alive(record.owner, record.heartbeat):
            raise OwnedElsewhere(record)
        if verb == "cancel" and done:
            return f"backfill {backfill_id} is already {record.status}"
        if verb in ("pause", "max_concurrent", "abort") and done:
            raise BackfillStateError(f"backfill {backfill_id!r} is {record.status}: it no longer runs")
        if verb == "pause" and record.status == BackfillStatus.PAUSED:
            return f"backfill {backfill_id} is already paused"
        if verb == "max_concurrent":
            value = positive_int("max_concurrent", arg, allow_none=False)
            options = LaunchOptions.from_json(record.options).with_max_concurrent(value)
            self.storage.set_backfill_options(backfill_id, options.to_json())
            return f"backfill {backfill_id} will run at most {value} runs at once"
        if verb in ("resume", "retry"):
            job = job or get_job(record.job_name)
            if job is None:
                raise BackfillStateError(job_missing(record))
            if job.name != record.job_name:
                raise BackfillStateError(
                    f"backfill {backfill_id!r} belongs to job {record.job_name!r}, not {job.name!r}"
                )
        if verb == "retry" and done and not self.storage.run_counts(backfill_id).get(RunStatus.FAILURE):
            raise BackfillStateError(nothing_to_retry(backfill_id, self.storage.run_counts(backfill_id)))
        if not self.storage.claim_backfill(backfill_id, self.owner, record):
            raise BackfillStateError(f"backfill {backfill_id!r} was just taken over by another process: try again")
        try:
            if record.owner != self.owner:
                self.storage.drop_commands(
                    backfill_id, f"not carried out: the process it was sent to ({record.owner}) stopped"
                )
            # runs left in flight by a dead owner, or by a backfill that FAILED, did not finish
            why = INTERRUPTED if not done else f"interrupted: the backfill was {record.status} before the run finished"
            interrupted = self.storage.mark_interrupted(backfill_id, why)
            stopped = f" ({interrupted} runs left running are FAILURE 'interrupted')" if interrupted else ""
            if (
                verb in ("cancel", "abort") or record.status == BackfillStatus.CANCELING
            ):  # a cancel its owner did not finish, first
                canceled = self._cancel_stopped(backfill_id)
                if verb in ("cancel", "abort"):
                    return (
                        f"canceled backfill {backfill_id}: {canceled} runs that had not started are canceled{stopped}"
                    )
            if verb == "pause":
                self.storage.set_backfill_status(backfill_id, BackfillStatus.PAUSED)
                return f"paused backfill {backfill_id}{stopped}; resume it to go on"
            assert job is not None
            return (
                self._restart(
                    self.storage.get_backfill(backfill_id) or record,
                    job,
                    retry_only=verb == "retry",
                    from_failure=verb == "retry" and bool(arg),
                )
                + stopped
            )
        finally:
            if backfill_id not in self._active:
                self.storage.release_backfill(backfill_id, self.owner)

    def _cancel_stopped(self, backfill_id: str) -> int:
        """Cancel a backfill nothing runs: its queued runs and itself; returns how many runs."""
        now = time.time()
        queued = [r for r in self.storage.runs(backfill_id) if r.status == RunStatus.QUEUED]
        self.storage.write_batch(
            [Event(r.run_id, RunStatus.CANCELED, now, r.attempt, None, CANCELED_UNSTARTED) for r in queued]
        )
        self.storage.set_backfill_status(backfill_id, BackfillStatus.CANCELED)
        return len(queued)

    def _restart(self, record: BackfillRecord, job: Job, retry_only: bool, from_failure: bool = False) -> str:
        """Run a stopped backfill again here: its failed runs (retry, reusing the outputs of the
        steps that succeeded with `from_failure`), or every run not yet SUCCESS (resume), each as
        its next attempt; runs that never started keep their attempt."""
        runs = self.storage.runs(record.id)
        queued = [r for r in runs if r.status == RunStatus.QUEUED]
        if record.unwritten:  # the rest of its runs are written as it runs: from the same keys, checked now
            Selection.from_json(record.selection or {}).all_keys(job.partitions_def, record.id)
        if retry_only:
            if queued or record.unwritten:
                raise BackfillStateError(
                    f"backfill {record.id!r} has {len(queued) + record.unwritten} runs that never started (it was "
                    f"stopped): resume it to run those and its failed ones (retry runs only failed runs)"
                )
            again = [r for r in runs if r.status == RunStatus.FAILURE]
            if not again:
                raise BackfillStateError(nothing_to_retry(record.id, self.storage.run_counts(record.id)))
        else:
            again = [r for r in runs if r.status in (RunStatus.FAILURE, RunStatus.CANCELED)]
        if not again and not queued and not record.unwritten:
            if record.status != BackfillStatus.COMPLETED_SUCCESS:
                self.storage.set_backfill_status(record.id, BackfillStatus.REQUESTED)
                self.storage.set_backfill_status(record.id, BackfillStatus.COMPLETED_SUCCESS)
            return f"backfill {record.id}: every run already succeeded"
        options = LaunchOptions.from_json(record.options)
        executor = self._make_executor(
            options.executor,
            options.workers(len(again) + len(queued) + record.unwritten),
            self.emit,
            **options.executor_settings(),
        )
        reuse = self._reusable(again, from_failure)
        now = time.time()
        self.storage.write_batch([Event(r.run_id, RunStatus.QUEUED, now, r.attempt + 1) for r in again])
        self.storage.set_backfill_status(record.id, BackfillStatus.REQUESTED)
        requeued = {r.run_id for r in again}
        pending = [
            PendingRun(r.run_id, r.partition, r.attempt + 1, reuse=reuse.get(r.run_id, ()))
            if r.run_id in requeued
            else PendingRun(r.run_id, r.partition, r.attempt)
            for r in runs
            if r.run_id in requeued or r.status == RunStatus.QUEUED
        ]
        self._adopt(running(self.storage.get_backfill(record.id) or record, job, options, pending, executor))
        what = (
            f"{len(again)} failed runs{_from_failure(reuse)}"
            if retry_only
            else f"{len(pending)} runs not yet successful"
        )
        return f"{'retrying' if retry_only else 'resumed'} backfill {record.id}: {what}"

    def _answer_commands(self) -> None:
        """Carry out what other processes asked of the backfills this engine owns."""
        try:
            commands = self.storage.open_commands(self.owner, self._command_seq)
        except StorageError:
            return
        for command in commands:
            self._command_seq = command.id
            try:
                result, error = self._control(command.backfill_id, command.verb, command.arg, None), None
            except Exception as problem:  # the asker shows it
                result, error = None, str(problem)
            self.storage.finish_command(command.id, result, error)


def _from_failure(reuse: Mapping[str, tuple]) -> str:
    """How a retry from failure is said: how many runs reuse outputs of steps that succeeded."""
    return f" from failure ({len(reuse)} reuse the outputs of steps that succeeded)" if reuse else ""


def nothing_to_retry(backfill_id: str, counts: Mapping[str, int]) -> str:
    """The one message for a retry with no failed run."""
    listing = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no runs"
    return f"nothing to retry: backfill {backfill_id!r} has no failed run ({listing}); resume runs canceled and unstarted ones"


def job_missing(record: BackfillRecord) -> str:
    """The one message for a job that must be defined to run a stored backfill."""
    return (
        f"job {record.job_name!r} of backfill {record.id!r} is not defined in this process: run the cell that "
        f"defines it (or pass job=..., or -f/-m on the command line)"
    )


def log_file(home: Path, run_id: str, attempt: int) -> Path:
    """Where the output of a run attempt beyond LOG_LIMIT goes."""
    return home / "logs" / f"{run_id}-{attempt}.log"
