"""The dask executor: runs execute on a Dask cluster (one on this machine, started for the
backfill, or one the user already runs), while the engine stays in the kernel.

Runs travel in batches, one Dask task each, pinned to one worker: short runs share a task (one
scheduler round trip for many), long ones go one a task. Each worker holds at most two batches a
thread, so runs not handed over yet stay here, where pause, cancel and max_concurrent take them
back at once; a run handed over but not begun is taken back from its worker (see _dask_task).
Events come back through the scheduler's event topics while runs execute. A worker that dies
fails the runs it was running and hands back the ones it had not begun; a scheduler out of reach
for LOST_AFTER seconds fails every run held here, leaving a backfill that resume runs again.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from ..errors import InvalidOptionError
from ..jobs import Job
from ..statuses import LOG, RUN_DONE, Event, RunStatus, StepStatus
from . import _dask_task
from .run import Emit, RunRequest

EXTRA = 'the dask executor needs the "dask" extra: pip install "nb-backfill[dask]"'
RESOURCES_TAG = "dask/resources"  # a run's Dask worker resources, e.g. '{"GPU": 1}' or 'GPU=1'
MAX_BATCH = 64  # runs a task at most
BATCH_SECONDS = 0.05  # how long a batch of short runs aims to take
AHEAD = 2  # batches a worker thread holds: one running, one ready to begin
LOST_AFTER = 10.0  # seconds without the scheduler before the runs held here fail
NO_WORKER_LIMIT = 60.0  # seconds runs wait for a worker that can run them before they fail
CONNECT_TIMEOUT = 10.0
WATCH = 0.5  # seconds between looks at the cluster's workers
ASK_TIMEOUT = 10.0  # seconds a call to the cluster may take


def check_available() -> None:
    """One clear error when `distributed` is not installed (checked before anything is written)."""
    if importlib.util.find_spec("distributed") is None:
        raise InvalidOptionError(f"{EXTRA}; then choose executor 'dask' again")


def parse_resources(text: str) -> dict[str, float]:
    """The `dask/resources` tag: a JSON object or `NAME=amount[,NAME=amount]`, amounts > 0."""
    try:
        value = json.loads(text) if text.strip().startswith("{") else dict(p.split("=", 1) for p in text.split(","))
        resources = {str(k).strip(): float(v) for k, v in value.items()}
    except (ValueError, TypeError, AttributeError):
        resources = {}
    if not resources or any(not k or not amount > 0 for k, amount in resources.items()):
        raise InvalidOptionError(
            f"tag {RESOURCES_TAG!r} must name Dask worker resources and amounts above 0, such as "
            f"'{{\"GPU\": 1}}' or 'GPU=1,MEMORY=4e9', got {text!r}"
        )
    return resources


def check_resources(job: Job, backfill_tags: Mapping[str, str]) -> None:
    """A bad `dask/resources` tag of the job or the backfill, refused at launch."""
    for tags in (job.tags, backfill_tags):
        if RESOURCES_TAG in tags:
            parse_resources(tags[RESOURCES_TAG])


@dataclass
class _Batch:
    """Runs handed to one worker as one task, and what their events said so far."""

    worker: str
    job: Job
    runs: dict[str, RunRequest]  # claim -> run, in order
    future: Any = None
    done: bool = False
    started: set[str] = field(default_factory=set)  # claims
    ended: set[str] = field(default_factory=set)
    taken: set[str] = field(default_factory=set)
    steps: dict[str, tuple[str, int]] = field(default_factory=dict)  # claim -> its RUNNING step
    began: dict[str, float] = field(default_factory=dict)  # claim -> when it started


@dataclass
class _Worker:
    address: str
    threads: int
    resources: dict[str, float]
    batches: list[_Batch] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)  # claims it may forget, sent with its next batch

    def can_run(self, needs: dict[str, float]) -> bool:
        return all(self.resources.get(name, 0) >= amount for name, amount in needs.items())


class DaskExecutor:
    """Runs on a Dask cluster: `address` of a scheduler, or `client`'s, or the kernel's default
    client's, or else a LocalCluster of `max_workers` worker processes started here."""

    name = "dask"

    def __init__(self, max_workers: int, emit: Emit, address: str | None = None, client: Any = None):
        check_available()
        import distributed

        self._emit = emit
        self._cluster: Any = None
        if client is not None:
            address = client.scheduler.address
        elif address is None:
            try:
                address = distributed.default_client().scheduler.address  # the kernel's Client(), reused
            except ValueError:
                self._cluster = _local_cluster(max_workers)
                address = self._cluster.scheduler_address
        try:
            self._client = distributed.Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as error:
            self._close_cluster()
            raise InvalidOptionError(f"could not connect to the Dask scheduler at {address!r}: {error}") from None
        self.address = address
        self.launched_cluster = self._cluster is not None  # a local cluster of its own, closed at shutdown
        self.dashboard_link = self._dashboard()
        self._topic = f"nb_backfill-{uuid.uuid4().hex}"
        self._claims = (f"{self._topic}-{n}" for n in itertools.count())
        self._lock = threading.Condition()
        self._queue: deque[tuple[Job, RunRequest]] = deque()
        self._where: dict[str, tuple[_Batch, str]] = {}  # run id -> its batch and claim
        self._workers: dict[str, _Worker] = {}
        self._payloads: dict[Job, Any] = {}
        self._durations: deque[float] = deque(maxlen=256)
        self._gone: list[str] = []  # workers the scheduler removed, not yet settled
        self._lost_since: float | None = None
        self._lost: str | None = None  # why the runs held here fail: the scheduler is out of reach
        self._waiting_since: float | None = None
        self._watched = 0.0
        self._calls = ThreadPoolExecutor(2, thread_name_prefix="nb_backfill-dask-call")
        self._stopping = False
        self._client.subscribe_topic(self._topic, self._on_events)
        self._refresh_workers()
        self._thread = threading.Thread(target=self._loop, name="nb_backfill-dask", daemon=True)
        self._thread.start()

    # --- the executor interface (the engine's thread)
    @property
    def max_workers(self) -> int:
        """Runs the cluster runs at once: its threads (at least one, while it has none)."""
        return max(1, sum(w.threads for w in self._workers.values()))

    def submit(self, job: Job, *requests: RunRequest) -> None:
        with self._lock:
            self._queue.extend((job, request) for request in requests)
            self._lock.notify_all()

    def withdraw(self, run_id: str) -> bool:
        """Take back a run not begun: at once if it is still here, else from its worker (whose
        batch's runs not begun all come back here with it)."""
        return self._take_back(run_id, cancel=False)

    def cancel(self, run_id: str) -> bool:
        """True when the run had not begun (it never will); else it stops at its next step."""
        return self._take_back(run_id, cancel=True)

    def shutdown(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._queue.clear()
            futures = [b.future for w in self._workers.values() for b in w.batches if b.future is not None]
            self._lock.notify_all()
        self._thread.join(5.0)
        try:
            self._client.cancel(futures)
            self._ask(self._client.run, _dask_task.forget, self._topic)
        except Exception:  # the cluster is gone already: nothing to tidy there
            pass
        self._calls.shutdown(wait=False, cancel_futures=True)
        self._client.close(timeout=ASK_TIMEOUT)
        self._close_cluster()

    # --- taking runs back
    def _take_back(self, run_id: str, cancel: bool) -> bool:
        with self._lock:
            for item in self._queue:
                if item[1].run_id == run_id:
                    self._queue.remove(item)
                    return True
            where = self._where.get(run_id)
            if where is None:
                return False
            batch, claim = where
            if claim in batch.ended or batch.done:
                return False
            asked = [c for c in batch.runs if c not in batch.ended and c not in batch.taken]
        try:
            answers = self._ask(
                self._client.run,
                _dask_task.take_back,
                self._topic,
                asked,
                cancel,
                workers=[batch.worker],
                on_error="raise",
            )[batch.worker]
        except Exception:  # its worker is gone: _settle_gone decides its runs
            return False
        with self._lock:
            back = [c for c in asked if answers.get(c) == _dask_task.TAKEN and c not in batch.taken]
            self._requeue(batch, back)
            for item in self._queue:
                if item[1].run_id == run_id:
                    self._queue.remove(item)
                    return True
            return False

    def _requeue(self, batch: _Batch, claims: list[str]) -> None:
        """Runs of a batch that will never begin there come back to the front of the queue (under the lock)."""
        batch.taken.update(claims)
        for claim in reversed(claims):
            request = batch.runs[claim]
            self._where.pop(request.run_id, None)
            self._queue.appendleft((batch.job, request))
        self._lock.notify_all()

    # --- the executor's thread: hand batches to workers, watch the cluster
    def _loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait(WATCH)
                if self._stopping:
                    return
            try:
                if time.monotonic() - self._watched >= WATCH:
                    self._watched = time.monotonic()
                    self._refresh_workers()
                self._watch_connection()
                self._settle_gone()
                self._hand_over()
            except Exception as error:  # a bug of ours: the runs held here fail saying so, never hang
                self._fail_held(f"nb_backfill's dask executor failed:\n{''.join(traceback.format_exception(error))}")

    def _hand_over(self) -> None:
        """Fill each worker up to AHEAD batches a thread, from the runs held here."""
        submits = []
        with self._lock:
            if self._lost is not None:
                return
            unfit = self._unfit()
            for worker in self._workers.values():
                worker.batches = [b for b in worker.batches if not b.done]
                while self._queue and len(worker.batches) < AHEAD * worker.threads:
                    batch = self._next_batch(worker)
                    if batch is None:
                        break
                    worker.batches.append(batch)
                    submits.append((batch, worker.settled))
                    worker.settled = []
        for event in unfit:
            self._emit(event)
        for batch, settled in submits:
            self._submit(batch, settled)

    def _next_batch(self, worker: _Worker) -> _Batch | None:
        """The next runs this worker can run (same job and resources), as many as BATCH_SECONDS
        of them take, and no more than a fair share of what is held."""
        first = next(((job, r) for job, r in self._queue if worker.can_run(_needs(r))), None)
        if first is None:
            return None
        job, needs = first[0], _needs(first[1])
        threads = max(1, sum(w.threads for w in self._workers.values()))
        size = max(1, min(MAX_BATCH, _batch_size(self._durations), -(-len(self._queue) // threads)))
        runs: dict[str, RunRequest] = {}
        kept: deque[tuple[Job, RunRequest]] = deque()
        while self._queue and len(runs) < size:
            item = self._queue.popleft()
            if item[0] is job and _needs(item[1]) == needs:
                runs[next(self._claims)] = item[1]
            else:
                kept.append(item)
        self._queue.extendleft(reversed(kept))
        batch = _Batch(worker.address, job, runs)
        for claim, request in runs.items():
            self._where[request.run_id] = (batch, claim)
        return batch

    def _submit(self, batch: _Batch, settled: list[str]) -> None:
        runs = [(claim, (*r[:4], dict(r.tags), *r[5:])) for claim, r in batch.runs.items()]
        needs = _needs(next(iter(batch.runs.values())))
        try:
            batch.future = self._client.submit(
                _dask_task.execute_batch,
                self._topic,
                self._job_key(batch.job),
                self._payload(batch.job),
                runs,
                settled,
                workers=[batch.worker],
                allow_other_workers=False,
                resources=needs or None,
                pure=False,
                key=f"nb_backfill-{next(self._claims)}",
            )
        except Exception as error:  # a job that cannot travel, a closed client
            self._fail_batch(batch, f"could not hand the run to Dask: {type(error).__name__}: {error}")
            return
        batch.future.add_done_callback(lambda future: self._on_batch_done(batch, future))

    def _job_key(self, job: Job) -> str:
        return f"{self._topic}-job-{id(job)}"

    def _payload(self, job: Job) -> Any:
        """The job, cloudpickled and scattered to every worker once (a future each task names)."""
        payload = self._payloads.get(job)
        if payload is None:
            try:
                data = cloudpickle.dumps(job)
            except Exception as error:
                raise InvalidOptionError(
                    f"job {job.name!r} cannot be sent to Dask workers: {error}; keep unpicklable objects out of its steps"
                ) from None
            payload = self._payloads[job] = self._ask(self._client.scatter, data, broadcast=True, hash=False)
        return payload

    # --- what comes back
    def _on_events(self, event: tuple[float, Any]) -> None:
        """A list of events from a worker (in the client's event loop: no waiting here)."""
        for fields in event[1]:
            e = Event(*fields)
            with self._lock:
                where = self._where.get(e.run_id)
                if where is not None and e.status != LOG:
                    self._note(where[0], where[1], e)
            self._emit(e)

    def _note(self, batch: _Batch, claim: str, event: Event) -> None:
        if event.step is not None:
            if event.status == StepStatus.RUNNING:
                batch.steps[claim] = (event.step, event.step_attempt)
            else:
                batch.steps.pop(claim, None)
        elif event.status == RunStatus.STARTED:
            batch.started.add(claim)
            batch.began[claim] = event.ts
        elif event.status in RUN_DONE:
            batch.ended.add(claim)
            if claim in batch.began:
                self._durations.append(event.ts - batch.began.pop(claim))
            self._where.pop(event.run_id, None)

    def _on_batch_done(self, batch: _Batch, future: Any) -> None:
        """A batch's task ended: its runs not ended and not taken back fail, saying why (its
        events come before its end, so only a task that failed as a whole leaves any). A task
        lost with the scheduler is left to _watch_connection, which says so."""
        if self._client.status != "running" and future.status != "finished":
            return
        with self._lock:
            if batch.done:
                return
            batch.done = True
            worker = self._workers.get(batch.worker)
            if worker is not None:
                worker.settled.extend(batch.runs)
            self._lock.notify_all()
        if future.status == "finished":
            why = "its Dask task ended without reporting it (a bug, please report it)"
        elif future.status == "error":
            error = future.exception()
            why = f"its Dask task failed: {type(error).__name__}: {error}"
        else:
            why = f"its Dask task was {future.status} by the Dask scheduler"
        self._fail_batch(batch, why)

    def _fail_batch(self, batch: _Batch, why: str) -> None:
        """Fail the batch's runs that have not ended (and their running step), except those taken back."""
        now = time.time()
        events = []
        with self._lock:
            batch.done = True
            for claim, request in batch.runs.items():
                if claim in batch.ended or claim in batch.taken:
                    continue
                batch.ended.add(claim)
                self._where.pop(request.run_id, None)
                step = batch.steps.pop(claim, None)
                if step is not None:
                    events.append(
                        Event(request.run_id, StepStatus.FAILURE, now, request.attempt, step[0], why, step[1])
                    )
                events.append(Event(request.run_id, RunStatus.FAILURE, now, request.attempt, None, why))
        for event in events:
            self._emit(event)

    # --- the cluster changing
    def _refresh_workers(self) -> None:
        """Learn the cluster's workers, their threads and resources, from the scheduler itself
        (asked every WATCH seconds: its event topics are not safe to follow); workers that left
        are settled by _settle_gone."""
        try:
            info = self._ask(self._client.run_on_scheduler, _workers_of)
        except Exception:  # out of reach: _watch_connection decides
            return
        with self._lock:
            for address, (threads, resources) in info.items():
                if address not in self._workers:
                    self._workers[address] = _Worker(address, threads, resources)
            self._gone += [address for address in self._workers if address not in info]
            self._lock.notify_all()

    def _settle_gone(self) -> None:
        """Workers that left: runs they were running fail naming them; runs not begun come back here."""
        with self._lock:
            gone, self._gone = set(self._gone), []
            workers = [self._workers.pop(address) for address in gone if address in self._workers]
        for worker in workers:
            why = f"the Dask worker {worker.address} died while running it (it was killed, ran out of memory or left)"
            for batch in worker.batches:
                with self._lock:
                    if batch.done:
                        continue
                    self._requeue(batch, [c for c in batch.runs if c not in batch.started and c not in batch.taken])
                self._fail_batch(batch, why)
                if batch.future is not None:
                    try:
                        self._client.cancel([batch.future])
                    except Exception:
                        pass

    def _watch_connection(self) -> None:
        """The scheduler out of reach for LOST_AFTER seconds: every run held here fails."""
        if self._client.status == "running":
            self._lost_since = None
            return
        now = time.monotonic()
        self._lost_since = self._lost_since or now
        if self._lost is None and now - self._lost_since >= LOST_AFTER:
            self._lost = (
                f"lost the connection to the Dask scheduler at {self.address} for {LOST_AFTER:.0f} s: resume the "
                f"backfill once the cluster is back"
            )
        if self._lost is not None:
            self._fail_held(self._lost)

    def _unfit(self) -> list[Event]:
        """Runs no worker could take for NO_WORKER_LIMIT seconds leave the queue as failures,
        saying what they need (under the lock)."""
        if not self._queue or any(w.can_run(_needs(self._queue[0][1])) for w in self._workers.values()):
            self._waiting_since = None
            return []
        now = time.monotonic()
        self._waiting_since = self._waiting_since or now
        if now - self._waiting_since < NO_WORKER_LIMIT:
            return []
        self._waiting_since = None
        needs = _needs(self._queue[0][1])
        offered = {w.address: w.resources for w in self._workers.values()}
        why = (
            f"no Dask worker could run it for {NO_WORKER_LIMIT:.0f} s: it needs resources {needs}, workers "
            f"offer {offered or 'nothing (the cluster has no workers)'}"
        )
        unfit = [item for item in self._queue if _needs(item[1]) == needs]
        for item in unfit:
            self._queue.remove(item)
        return [Event(r.run_id, RunStatus.FAILURE, time.time(), r.attempt, None, why) for _, r in unfit]

    def _fail_held(self, why: str) -> None:
        """Every run held here, handed over or not, fails with `why`."""
        with self._lock:
            queued, self._queue = list(self._queue), deque()
            batches = [b for w in self._workers.values() for b in w.batches if not b.done]
        now = time.time()
        for _, request in queued:
            self._emit(Event(request.run_id, RunStatus.FAILURE, now, request.attempt, None, why))
        for batch in batches:
            self._fail_batch(batch, why)

    # --- helpers
    def _ask(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """A blocking call to the cluster, given up after ASK_TIMEOUT seconds (a scheduler out of
        reach must never hang the engine's thread): raises TimeoutError then."""
        if self._client.status != "running":
            raise ConnectionError(f"the Dask scheduler at {self.address} is out of reach")
        return self._calls.submit(call, *args, **kwargs).result(ASK_TIMEOUT)

    def _dashboard(self) -> str | None:
        if importlib.util.find_spec("bokeh") is None:
            return None
        try:
            return self._client.dashboard_link
        except Exception:
            return None

    def _close_cluster(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def _local_cluster(workers: int) -> Any:
    """A LocalCluster of worker processes on this machine, one thread each, for one backfill."""
    from distributed import LocalCluster

    dashboard = ":0" if importlib.util.find_spec("bokeh") is not None else None
    return LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=dashboard, silence_logs=40
    )


def _workers_of(dask_scheduler: Any) -> dict[str, tuple[int, dict[str, float]]]:
    """Run on the scheduler: each worker's threads and resources."""
    return {a: (ws.nthreads, dict(ws.resources)) for a, ws in dask_scheduler.workers.items()}


def _needs(request: RunRequest) -> dict[str, float]:
    text = request.tags.get(RESOURCES_TAG)
    return parse_resources(text) if text else {}


def _batch_size(durations: deque[float]) -> int:
    """Runs a batch: as many as take BATCH_SECONDS, by the median of recent runs (one while unknown)."""
    if not durations:
        return 1
    typical = sorted(durations)[len(durations) // 2]
    return int(BATCH_SECONDS / typical) if typical > 0 else MAX_BATCH
