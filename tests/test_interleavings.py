"""Seeded random interleavings of launch, event delivery, cancel, pause, resume, retry,
set_max_concurrent and owner death, against the real engine and store, checking what must always
hold: no run stays unfinished once its backfill has ended, a run whose body completed is SUCCESS,
nothing that succeeded runs again, and every face (store counts, the change feed, the frames)
agrees with the store.

Each "process" is an Engine driven turn by turn (threaded=False) with a fake executor whose runs
move only when the test says; its identity in the store is the pid of a real `sleep` process, so
killing that process is a real owner death as every other process sees it.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
from feed_checks import assert_feed_is_a_valid_lifecycle

import nb_backfill as nbb
from nb_backfill import engine as engine_module
from nb_backfill.chunks import Selection
from nb_backfill.engine import Engine, OwnedElsewhere, running
from nb_backfill.errors import BackfillStateError
from nb_backfill.options import LaunchOptions
from nb_backfill.policy import PendingRun
from nb_backfill.progress import Tracker, all_counts
from nb_backfill.statuses import (
    BACKFILL_DONE,
    RUN_DONE,
    BackfillStatus,
    Event,
    RunStatus,
    StepStatus,
)
from nb_backfill.storage import BackfillRecord, Storage, _start_ticks, run_id_of

INTERLEAVINGS = int(os.environ.get("NB_BACKFILL_INTERLEAVINGS", "2000"))
STEPS = ("extract", "load")


class FakeRun:
    """A run inside a fake executor: it moves one event at a time, as execute_run would."""

    def __init__(self, run_id: str, attempt: int):
        self.run_id, self.attempt = run_id, attempt
        self.step = -1  # -1: not started; i: step i is running
        self.canceled = False  # asked to stop at its next step (threads)
        self.killed = False  # its worker process was terminated (processes)
        self.stepping = False  # a step has reported RUNNING and not its end
        self.done = False


class FakeExecutor:
    """An executor whose runs move only when the test delivers their next event: like threads
    (a cancel stops a run at its next step) or like worker processes (a cancel terminates the
    worker, whose reaper reports CANCELED, possibly after the run's own SUCCESS was already sent)."""

    def __init__(self, world: World, owner: Process, max_workers: int, emit):
        self.world, self.owner, self.max_workers, self.emit = world, owner, max_workers, emit
        self.name = world.rng.choice(["thread", "process"])
        self.queued: list[FakeRun] = []
        self.running: dict[str, FakeRun] = {}
        self.shut = False
        owner.executors.append(self)

    def submit(self, job, *requests) -> None:
        for request in requests:
            assert self.world.store_status(request.run_id) != RunStatus.SUCCESS, (
                f"{request.run_id} succeeded and was submitted again"
            )
            self.queued.append(FakeRun(request.run_id, request.attempt))

    def withdraw(self, run_id: str) -> bool:
        for run in self.queued:
            if run.run_id == run_id:
                self.queued.remove(run)
                return True
        return False

    def cancel(self, run_id: str) -> bool:
        if self.withdraw(run_id):
            return True
        if run_id in self.running:
            self.running[run_id].canceled = True
            self.running[run_id].killed = self.name == "process"
        return False

    def shutdown(self) -> None:
        self.shut = True

    def movable(self) -> list[FakeRun]:
        return [] if self.shut or not self.owner.alive else self.queued[:] + list(self.running.values())

    def move(self, run: FakeRun, rng: random.Random) -> None:
        """The run's next event(s), as execute_run would emit them."""
        now = 0.0
        if run.killed:  # the reaper of a terminated worker; its last events may have got out first
            if run.step == len(STEPS) - 1 and rng.random() < 0.5:
                self.emit(Event(run.run_id, StepStatus.SUCCESS, now, run.attempt, STEPS[run.step]))
                self.emit(Event(run.run_id, RunStatus.SUCCESS, now, run.attempt))
                self.world.bodies[run.run_id].append(self.owner)
            self._finish(run, RunStatus.CANCELED, [(STEPS[run.step], StepStatus.CANCELED)])
            return
        if run.step == -1:
            self.queued.remove(run)
            self.running[run.run_id] = run
            run.step = 0
            key = (run.run_id, run.attempt)
            earlier = self.world.started.get(key)
            # an attempt starts again only if the process where it began died before writing so
            assert earlier is None or not earlier.alive, f"attempt {run.attempt} of {run.run_id} started twice"
            self.world.started[key] = self.owner
            if self.name == "process":
                self.emit(Event(run.run_id, RunStatus.STARTING, now, run.attempt))
            self.emit(Event(run.run_id, RunStatus.STARTED, now, run.attempt))
            if not run.canceled:
                self.emit(Event(run.run_id, StepStatus.RUNNING, now, run.attempt, STEPS[0]))
                run.stepping = True
                return
        # canceled before the step began, or the running step calls context.check_canceled()
        if run.canceled and (not run.stepping or rng.random() < 0.5):
            self._finish(run, RunStatus.CANCELED, [(s, StepStatus.CANCELED) for s in STEPS[run.step :]])
            return
        if rng.random() < 0.15:  # the running step fails: the rest are skipped
            self._finish(
                run,
                RunStatus.FAILURE,
                [(STEPS[run.step], StepStatus.FAILURE)] + [(s, StepStatus.SKIPPED) for s in STEPS[run.step + 1 :]],
            )
            return
        self.emit(Event(run.run_id, StepStatus.SUCCESS, now, run.attempt, STEPS[run.step]))
        run.step += 1
        if run.step == len(STEPS):
            self.world.bodies[run.run_id].append(self.owner)  # it must end SUCCESS, whatever cancel said
            self._finish(run, RunStatus.SUCCESS, [])
        elif run.canceled:
            run.stepping = False
            self._finish(run, RunStatus.CANCELED, [(s, StepStatus.CANCELED) for s in STEPS[run.step :]])
        else:
            self.emit(Event(run.run_id, StepStatus.RUNNING, now, run.attempt, STEPS[run.step]))

    def _finish(self, run: FakeRun, status: str, steps: list) -> None:
        for step, step_status in steps:
            self.emit(Event(run.run_id, step_status, 0.0, run.attempt, step, "x"))
        self.emit(Event(run.run_id, status, 0.0, run.attempt, None, None if status == RunStatus.SUCCESS else "x"))
        run.done = True
        del self.running[run.run_id]


@dataclass
class Process:
    """A process of the world: an engine, the sleeper whose pid names it, its executors."""

    number: int
    world: World
    sleeper: subprocess.Popen
    engine: Engine | None = None
    executors: list[FakeExecutor] = field(default_factory=list)
    alive: bool = True

    @property
    def token(self) -> str:
        return f"{socket.gethostname()}:{self.sleeper.pid}:{_start_ticks(self.sleeper.pid)}"

    def die(self) -> None:
        self.alive = False
        self.sleeper.kill()
        self.sleeper.wait()


class World:
    """One interleaving: a store, processes, a job, and what really happened."""

    def __init__(self, store: Storage, seed: int, sleepers: list[subprocess.Popen]):
        self.store, self.seed, self.rng = store, seed, random.Random(seed)
        rng = self.rng
        self.sleepers = sleepers
        self.processes: list[Process] = []
        self.bodies: dict[str, list[Process]] = defaultdict(list)  # run_id -> the processes where its body completed
        self.started: dict[tuple[str, int], Process] = {}  # (run_id, attempt) -> the process it began in
        self.backfills: list[str] = []
        self.commands: list[int] = []
        retries = rng.choice([0, 0, 1])
        self.job = nbb.Job(
            f"job{seed}",
            [nbb.step(lambda: 1, name="extract"), nbb.step(lambda extract: 2, name="load")],
            nbb.StaticPartitionsDefinition([f"k{i}" for i in range(6)]),
            retries=retries,
        )
        for _ in range(2):
            self.spawn()

    def spawn(self) -> Process:
        process = Process(len(self.processes), self, self.sleepers.pop() if self.sleepers else _sleeper())
        process.engine = Engine(
            self.store,
            owner=process.token,
            threaded=False,
            executors=lambda name, workers, emit, p=process: FakeExecutor(self, p, workers, emit),
        )
        self.processes.append(process)
        return process

    def alive(self) -> list[Process]:
        return [p for p in self.processes if p.alive]

    def store_status(self, run_id: str) -> str | None:
        rows = self.store.query("SELECT status FROM runs WHERE run_id = ?", (run_id,))
        return rows[0][0] if rows else None

    # --- actions
    def launch(self, process: Process) -> None:
        all_keys = self.job.partitions_def.get_partition_keys()
        chunked = self.rng.random() < 0.4  # a range whose runs the engine writes in chunks after launch
        if chunked:
            first, count = self.rng.randint(0, 3), self.rng.randint(2, 3)
            descending, now = self.rng.random() < 0.5, datetime.now(timezone.utc)
            last = all_keys[first + count - 1]
            selection = Selection(first, count, descending, now, len(all_keys), all_keys[first], last)
            keys = selection.keys(all_keys, 0, self.rng.randint(1, count - 1))
        else:
            keys = sorted(self.rng.sample(all_keys, self.rng.randint(1, 6)))
        queued = self.rng.random() < 0.5
        options = LaunchOptions(
            coordinator="queued" if queued else "default", max_concurrent=self.rng.randint(1, 3) if queued else None
        )
        record = BackfillRecord(
            id=f"s{self.seed}b{len(self.backfills)}",
            job_name=self.job.name,
            status=BackfillStatus.REQUESTED,
            created=float(len(self.backfills)),
            updated=0.0,
            ended=None,
            num_partitions=selection.count if chunked else len(keys),
            options=options.to_json(),
            tags={},
            partitions_def="x",
            owner=process.token,
            heartbeat=__import__("time").time(),
            written=len(keys) if chunked else None,
            selection=selection.to_json() if chunked else None,
        )
        run_ids = [run_id_of(record.id, i) for i in range(len(keys))]
        self.store.create_backfill(record, zip(run_ids, keys, range(len(keys))))
        executor = FakeExecutor(self, process, self.rng.randint(1, 3), process.engine.emit)
        process.engine.launch(
            running(record, self.job, options, [PendingRun(r, k, 1) for r, k in zip(run_ids, keys)], executor)
        )
        self.backfills.append(record.id)

    def deliver(self) -> None:
        movable = [(e, r) for p in self.alive() for e in p.executors for r in e.movable()]
        if movable:
            executor, run = self.rng.choice(movable)
            executor.move(run, self.rng)

    def control(self, process: Process, backfill_id: str, verb: str) -> None:
        """What backfills.control does, for one process of the world."""
        record = self.store.get_backfill(backfill_id)
        arg = self.rng.randint(1, 3) if verb == "max_concurrent" else None
        owner = next((p for p in self.alive() if p.token == record.owner), None)
        try:
            if owner is not None and owner is not process and record.status not in BACKFILL_DONE:
                self.commands.append(
                    self.store.post_command(backfill_id, owner.token, verb, arg)
                )  # answered in the owner's turn
            else:
                process.engine.control(backfill_id, verb, arg, self.job)
        except OwnedElsewhere:
            pass
        except BackfillStateError:
            pass  # e.g. retry with nothing failed, pause of a finished backfill: refused, nothing changes

    def turn(self, process: Process) -> None:
        process.engine.turn(0.0)

    def step(self) -> None:
        rng, alive = self.rng, self.alive()
        if not alive or (len(alive) < 2 and rng.random() < 0.05):
            alive.append(self.spawn())
        process = rng.choice(alive)
        action = rng.random()
        if action < 0.12 or not self.backfills:
            self.launch(process)
        elif action < 0.55:
            self.deliver()
        elif action < 0.75:
            self.turn(process)
        elif action < 0.97:
            verb = rng.choice(["cancel", "pause", "resume", "retry", "max_concurrent", "resume", "retry"])
            self.control(process, rng.choice(self.backfills), verb)
        elif len(alive) > 1 or rng.random() < 0.5:
            process.die()

    def settle(self) -> None:
        """Drive every backfill to its end: resume what is paused or left by dead owners, deliver
        everything, answer every command."""
        for _ in range(2000):
            alive = self.alive() or [self.spawn()]
            for p in alive:
                p.engine.turn(0.0)
            open_backfills = [b for b in self.backfills if self.store.get_backfill(b).status not in BACKFILL_DONE]
            moving = [(e, r) for p in alive for e in p.executors for r in e.movable()]
            if moving:
                for executor, run in moving:
                    executor.move(run, self.rng)
                continue
            if not open_backfills and not any(self.store.open_commands(p.token) for p in alive):
                return
            for b in open_backfills:
                record = self.store.get_backfill(b)
                owner = next((p for p in alive if p.token == record.owner), None)
                if owner is None or record.status == BackfillStatus.PAUSED:
                    self.control(owner or alive[0], b, "resume")
        raise AssertionError("the world did not settle: something is stuck")


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "600"])


def check(world: World, full: bool = False) -> None:
    """What must always hold, read from the store and every face: after each step for one
    backfill at random; with `full`, for every backfill, with the pandas frames and a replay of
    every run's changes in the feed."""
    store = world.store
    ended, finished = ("','".join(statuses) for statuses in (BACKFILL_DONE, RUN_DONE))
    ended_unfinished = store.query(
        f"SELECT backfills.id, runs.run_id, runs.status FROM backfills JOIN runs ON runs.backfill_id = backfills.id "
        f"WHERE backfills.job_name = ? AND backfills.status IN ('{ended}') AND runs.status NOT IN ('{finished}')",
        (world.job.name,),
    )
    assert not ended_unfinished, f"ended backfills with unfinished runs: {ended_unfinished}"
    for backfill_id in world.backfills if full else world.rng.sample(world.backfills, min(1, len(world.backfills))):
        counts = all_counts(store.run_counts(backfill_id))
        handle = nbb.Backfill(backfill_id, store, world.job)  # every face agrees with the store
        assert handle.counts() == counts
        assert all_counts(Tracker(store, backfill_id).counts) == counts
        # the feed replays to the stored state through allowed transitions (or has let an ended
        # backfill's runs go)
        assert_feed_is_a_valid_lifecycle(store, backfill_id)
        if full and backfill_id == world.backfills[-1]:  # the frames, for one backfill (pandas is slow)
            written = store.query(
                "SELECT status, COUNT(*) FROM runs WHERE backfill_id = ? GROUP BY status", (backfill_id,)
            )
            assert dict(Counter(handle.runs_df()["status"].astype(str))) == dict(written)  # the runs written
    for run_id, processes in world.bodies.items():
        # a body completes twice only when the first process died before the store heard of it
        assert sum(p.alive for p in processes) <= 1 and all(not p.alive for p in processes[:-1]), (
            f"{run_id} completed twice"
        )


def check_settled(world: World) -> None:
    check(world, full=True)
    for backfill_id in world.backfills:
        record = world.store.get_backfill(backfill_id)
        assert record.status in BACKFILL_DONE
        # every run was written, unless the backfill was canceled (or failed) before
        assert not record.unwritten or record.status in (BackfillStatus.CANCELED, BackfillStatus.FAILED), record
    for run_id, processes in world.bodies.items():
        if processes[-1].alive:
            assert world.store_status(run_id) == RunStatus.SUCCESS, (
                f"{run_id}: its body completed, yet it is {world.store_status(run_id)}"
            )
    alive = {p.token for p in world.alive()}
    for command in world.commands:  # answered by their owner, or closed when it died and another took over
        done, _result, _error = world.store.command_outcome(command)
        owner = world.store.query("SELECT owner FROM commands WHERE id = ?", (command,))[0][0]
        assert done is not None or owner not in alive, f"command {command} to a live owner was never answered"


@pytest.fixture(scope="module")
def sleepers():
    pool = [_sleeper() for _ in range(8)]
    yield pool
    for p in pool:
        p.kill()


@pytest.fixture(autouse=True)
def answer_commands_every_turn(monkeypatch):
    monkeypatch.setattr(engine_module, "COMMAND_POLL", 0.0)


def test_seeded_interleavings_keep_the_lifecycle(tmp_path, sleepers):
    spawned: list[Process] = []
    try:
        for seed in range(INTERLEAVINGS):
            if seed % 200 == 0:
                store = Storage(tmp_path / f"store{seed}")  # a store that stays small keeps every query quick
            world = World(store, seed, sleepers)
            try:
                for _ in range(world.rng.randint(10, 40)):
                    world.step()
                    check(world)
                world.settle()
                check_settled(world)
            except AssertionError as error:
                raise AssertionError(f"seed {seed}: {error}") from None
            finally:
                spawned += world.processes
                for p in world.processes:
                    if p.alive:
                        sleepers.append(p.sleeper)  # reuse identities that did not die
    finally:
        for p in spawned:
            if p.sleeper not in sleepers:
                p.sleeper.kill()
