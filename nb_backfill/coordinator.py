"""The coordinator: moves runs from QUEUED to an executor, and writes what executors report.

One engine thread per process and store. Each turn it drains the event queue, writes the batch in
one transaction (the single writer), tells listeners, applies retries and control changes, then
starts the runs the coordinator policy allows:
- "default" hands runs to the executor as fast as its workers take them (workers bound parallelism);
- "queued" starts them under `max_concurrent` and `tag_concurrency_limits`, higher `priority` tag
  first, then backfill order; a run held back by a limit does not hold back the runs behind it.
Control changes made by other processes (cancel from the CLI, say) are read back from storage.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .executors import Executor
from .executors.run import RunRequest
from .jobs import Job, RetryPolicy
from .partitions import MultiPartitionsDefinition
from .storage import RUN_DONE, Event, Storage, process_token

BACKFILL_TAG = "nb_backfill/backfill"
PARTITION_TAG = "nb_backfill/partition"
PRIORITY_TAGS = ("nb_backfill/priority", "dagster/priority", "priority")
PER_VALUE = "applyLimitPerUniqueValue"
_POLL_SECONDS = 0.5
_HEARTBEAT_SECONDS = 2.0

Listener = Callable[[Sequence[Event], Mapping[str, str]], None]


@dataclass(frozen=True)
class TagLimit:
    """At most `limit` runs in flight whose tag `key` has `value` (any value when None, each
    value separately when per_value)."""

    key: str
    value: str | None
    limit: int
    per_value: bool = False

    def group(self, tags: Mapping[str, str]) -> tuple | None:
        if self.key not in tags:
            return None
        if self.per_value:
            return (self.key, tags[self.key], True)
        if self.value is None or tags[self.key] == self.value:
            return (self.key, self.value, False)
        return None


@dataclass
class PendingRun:
    run_id: str
    partition: str
    attempt: int
    not_before: float | None = None


@dataclass
class ActiveBackfill:
    """What the engine keeps in memory of a backfill it runs (rebuilt from storage on resume)."""

    id: str
    job: Job
    executor: Executor
    coordinator: str
    max_concurrent: int | None
    tag_limits: list[TagLimit]
    retry: RetryPolicy
    tags: dict[str, str]
    pending: deque[PendingRun]
    status: str = "REQUESTED"
    created: float = 0.0
    in_flight: dict[str, tuple[PendingRun, dict[str, str]]] = field(default_factory=dict)
    started: dict[str, bool] = field(default_factory=dict)

    @property
    def priority(self) -> int:
        for key in PRIORITY_TAGS:
            if key in self.tags:
                try:
                    return int(self.tags[key])
                except ValueError:
                    return 0
        return 0

    @property
    def capacity(self) -> int:
        """How many runs may be handed to the executor at once."""
        if self.coordinator == "queued":
            return self.max_concurrent or self.executor.max_workers
        return 2 * self.executor.max_workers  # a backlog, so workers never wait for the engine

    def run_tags(self, partition: str) -> dict[str, str]:
        tags = {**self.job.tags, **self.tags, BACKFILL_TAG: self.id, PARTITION_TAG: partition}
        definition = self.job.partitions_def
        if isinstance(definition, MultiPartitionsDefinition):
            parts = definition.get_partition_key_from_str(partition).keys_by_dimension
            tags.update({f"{PARTITION_TAG}/{name}": key for name, key in parts.items()})
        return tags


class Engine:
    """The one thread per process and store that writes events and starts runs."""

    _engines: dict[str, Engine] = {}
    _engines_lock = threading.Lock()

    @classmethod
    def for_storage(cls, storage: Storage) -> Engine:
        with cls._engines_lock:
            engine = cls._engines.get(str(storage.path))
            if engine is None or not engine._thread.is_alive():
                engine = cls._engines[str(storage.path)] = Engine(storage)
            return engine

    def __init__(self, storage: Storage):
        self.storage = storage
        self.owner = process_token()
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._active: dict[str, ActiveBackfill] = {}
        self._listeners: list[Listener] = []
        self._notices: list[Event] = []
        self._changed = threading.Condition()
        self._last_poll = self._last_heartbeat = 0.0
        self._thread = threading.Thread(target=self._loop, name="nb_backfill-engine", daemon=True)
        self._thread.start()

    # --- API for the backfill handle (any thread)
    def emit(self, event: Event) -> None:
        self._events.put(event)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the engine thread and return its result (so state has one writer)."""
        if threading.current_thread() is self._thread:
            return fn()
        done = threading.Event()
        box: dict[str, Any] = {}

        def command() -> None:
            try:
                box["value"] = fn()
            except BaseException as error:  # handed back to the caller
                box["error"] = error
            done.set()

        self._commands.put(command)
        self._events.put(_WAKE)
        done.wait()
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def add(self, backfill: ActiveBackfill, requeued: Sequence[PendingRun] = ()) -> None:
        """Run a backfill; `requeued` runs were queued again in storage (listeners hear of them)."""

        def apply() -> None:
            self._active[backfill.id] = backfill
            self._announce(requeued)

        self.call(apply)

    def _announce(self, runs: Sequence[PendingRun]) -> None:
        """Tell listeners of runs queued again; storage already has them, so they are not rewritten."""
        now = time.time()
        self._notices.extend(Event(r.run_id, "QUEUED", now, r.attempt) for r in runs)

    def is_running(self, backfill_id: str) -> bool:
        return backfill_id in self._active

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(events, backfill_statuses)` after each committed batch; returns unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def wait_for_change(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def pause(self, backfill_id: str) -> None:
        self.call(lambda: self._pause(backfill_id))

    def resume(self, backfill_id: str) -> None:
        self.call(lambda: self._set_status(backfill_id, "REQUESTED"))

    def cancel(self, backfill_id: str) -> None:
        self.call(lambda: self._cancel(backfill_id))

    def set_max_concurrent(self, backfill_id: str, value: int | None) -> None:
        def apply() -> None:
            active = self._active.get(backfill_id)
            if active is not None:
                active.max_concurrent = value
                active.coordinator = "queued"  # only the queued coordinator counts
                self._withdraw_unstarted(active, keep=active.capacity)

        self.call(apply)

    def requeue(self, backfill_id: str, runs: Sequence[PendingRun]) -> None:
        """Queue runs again in an active backfill (retry_failed)."""

        def apply() -> None:
            active = self._active.get(backfill_id)
            if active is not None:
                active.pending.extend(runs)
                active.status = "REQUESTED"
                self._announce(runs)

        self.call(apply)

    # --- the engine thread
    def _loop(self) -> None:
        while True:
            batch = self._drain()
            while True:
                try:
                    self._commands.get_nowait()()
                except queue.Empty:
                    break
            try:
                self._turn(batch)
            except Exception:  # a failing turn must not stop every backfill of the process
                import traceback

                traceback.print_exc()
                time.sleep(0.5)

    def _drain(self) -> list[Event]:
        timeout = 0.05 if self._active else 0.5
        try:
            first = self._events.get(timeout=timeout)
        except queue.Empty:
            return []
        batch = [first]
        try:
            while len(batch) < 20_000:
                batch.append(self._events.get_nowait())
        except queue.Empty:
            pass
        return [e for e in batch if e is not _WAKE]

    def _turn(self, batch: list[Event]) -> None:
        now = time.time()
        retries: dict[str, list[PendingRun]] = {}
        for event in batch:
            if event.step is not None or event.status not in RUN_DONE and event.status != "STARTED":
                continue
            active = self._backfill_of(event.run_id)
            if active is None:
                continue
            if event.status == "STARTED":
                active.started[event.run_id] = True
                continue
            run, _ = active.in_flight.pop(event.run_id, (None, None))
            active.started.pop(event.run_id, None)
            if run is None:
                continue
            if event.status == "FAILURE" and run.attempt <= active.retry.max_retries and active.status != "CANCELING":
                wait = active.retry.wait_before(run.attempt + 1)
                retries.setdefault(active.id, []).append(
                    PendingRun(run.run_id, run.partition, run.attempt + 1, now + wait)
                )
        if batch:
            self.storage.write_batch(batch)
        for backfill_id, runs in retries.items():
            self.storage.requeue([r.run_id for r in runs], not_before=max(r.not_before or 0 for r in runs))
            self._active[backfill_id].pending.extend(runs)
            self._announce(runs)
        finished = self._finished()
        for backfill_id, status in finished.items():
            self.storage.set_backfill_status(backfill_id, status)
            self._active.pop(backfill_id).executor.shutdown()
        if now - self._last_poll > _POLL_SECONDS:
            self._poll_storage()
            self._last_poll = now
        if now - self._last_heartbeat > _HEARTBEAT_SECONDS and self._active:
            self.storage.heartbeat(list(self._active), self.owner)
            self._last_heartbeat = now
        heard, self._notices = batch + self._notices, []
        if heard or finished:
            for listener in list(self._listeners):
                try:
                    listener(heard, finished)
                except Exception:  # a broken listener (a closed widget) must not stop the engine
                    self._listeners.remove(listener)
            with self._changed:
                self._changed.notify_all()
        self._dispatch(now)

    def _backfill_of(self, run_id: str) -> ActiveBackfill | None:
        for active in self._active.values():
            if run_id in active.in_flight:
                return active
        return None

    def _finished(self) -> dict[str, str]:
        """Final statuses of backfills with no run left to start or finish."""
        done = {}
        for active in self._active.values():
            if active.in_flight or (active.pending and active.status != "CANCELING"):
                continue
            if active.status == "CANCELING":
                done[active.id] = "CANCELED"
            elif active.status == "REQUESTED":
                counts = self.storage.run_counts(active.id)
                unfinished = sum(n for s, n in counts.items() if s not in RUN_DONE)
                if unfinished:
                    continue
                failed = counts.get("FAILURE", 0) + counts.get("CANCELED", 0)
                done[active.id] = "COMPLETED_FAILED" if failed else "COMPLETED_SUCCESS"
        return done

    def _dispatch(self, now: float) -> None:
        actives = sorted(
            (a for a in self._active.values() if a.status == "REQUESTED" and a.pending),
            key=lambda a: (-a.priority, a.created),
        )
        if not actives:
            return
        in_flight_groups: dict[tuple, int] = {}
        limited = any(a.tag_limits for a in actives)
        if limited:
            for active in self._active.values():
                for _, tags in active.in_flight.values():
                    for limit in active.tag_limits:
                        group = limit.group(tags)
                        if group is not None:
                            in_flight_groups[group] = in_flight_groups.get(group, 0) + 1
        for active in actives:
            held: list[PendingRun] = []
            scanned = 0
            while active.pending and len(active.in_flight) < active.capacity and scanned < 5000:
                run = active.pending.popleft()
                scanned += 1
                if run.not_before is not None and run.not_before > now:
                    held.append(run)
                    continue
                tags = active.run_tags(run.partition)
                groups = [(limit, limit.group(tags)) for limit in active.tag_limits]
                if any(g is not None and in_flight_groups.get(g, 0) >= limit.limit for limit, g in groups):
                    held.append(run)
                    continue
                for _, g in groups:
                    if g is not None:
                        in_flight_groups[g] = in_flight_groups.get(g, 0) + 1
                active.in_flight[run.run_id] = (run, tags)
                if active.executor.name == "process":
                    self._events.put(Event(run.run_id, "STARTING", now, run.attempt))
                active.executor.submit(active.job, RunRequest(run.run_id, run.partition, run.attempt, active.id, tags))
            active.pending.extendleft(reversed(held))

    def _pause(self, backfill_id: str) -> None:
        active = self._active.get(backfill_id)
        if active is not None:
            active.status = "PAUSED"
            self._withdraw_unstarted(active, keep=0)

    def _withdraw_unstarted(self, active: ActiveBackfill, keep: int) -> None:
        """Runs handed to the executor but not started go back to the front of the queue, until
        at most `keep` are in flight; started runs finish."""
        for run_id in reversed([r for r in active.in_flight if not active.started.get(r)]):
            if len(active.in_flight) <= keep:
                return
            if active.executor.withdraw(run_id):
                run, _ = active.in_flight.pop(run_id)
                active.pending.appendleft(run)

    def _cancel(self, backfill_id: str) -> None:
        active = self._active.get(backfill_id)
        if active is None:
            return
        active.status = "CANCELING"
        self.storage.cancel_runs([(run.run_id, run.attempt) for run in active.pending])
        active.pending.clear()
        now = time.time()
        for run_id in list(active.in_flight):
            if active.executor.cancel(run_id):
                run, _ = active.in_flight.pop(run_id)
                self._events.put(Event(run_id, "CANCELED", now, run.attempt, None, "canceled before it started"))
            else:
                self._events.put(Event(run_id, "CANCELING", now, active.in_flight[run_id][0].attempt))
        self._events.put(_WAKE)

    def _set_status(self, backfill_id: str, status: str) -> None:
        active = self._active.get(backfill_id)
        if active is not None and active.status != "CANCELING":
            active.status = status

    def _poll_storage(self) -> None:
        """Pick up control changes other processes wrote (cancel, pause, resume, max_concurrent)."""
        for backfill_id, active in list(self._active.items()):
            record = self.storage.get_backfill(backfill_id)
            if record is None:
                continue
            if record.status == "CANCELING" and active.status != "CANCELING":
                self._cancel(backfill_id)
            elif record.status == "PAUSED" and active.status == "REQUESTED":
                self._pause(backfill_id)
            elif record.status == "REQUESTED" and active.status == "PAUSED":
                active.status = "REQUESTED"
            active.coordinator = record.options.get("coordinator", active.coordinator)
            active.max_concurrent = record.options.get("max_concurrent", active.max_concurrent)


_WAKE = Event("", "WAKE", 0.0)
