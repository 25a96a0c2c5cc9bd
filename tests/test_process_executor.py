"""The process executor: runs execute in worker processes, events come back to emit, a dying
worker fails only its run, cancel and shutdown stop workers, and runs lent ahead to a worker come
back untouched when they must (pause, max_concurrent, cancel, a dead or busy worker).

Steps are defined inside the tests (local functions, lambdas, closures) so that cloudpickle sends
them by value, as it does for steps defined in a notebook.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Iterable
from pathlib import Path

import cloudpickle
import pytest
from job_scripts import executed, finish, kill_after, start

import nb_backfill as nbb
from nb_backfill.engine import Engine
from nb_backfill.executors.process import ProcessExecutor
from nb_backfill.executors.run import RunRequest
from nb_backfill.jobs import Job, job, step
from nb_backfill.storage import RUN_DONE, Event

KEYS = [f"p{i}" for i in range(20)]
PARTS = nbb.StaticPartitionsDefinition(KEYS)
TIMEOUT = 15.0


class Collector:
    """A thread-safe emit that remembers every event and lets a test wait for final run events."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def of(self, run_id: str) -> list[Event]:
        with self._changed:
            return [e for e in self.events if e.run_id == run_id]

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = TIMEOUT) -> Event:
        with self._changed:
            assert self._changed.wait_for(lambda: any(predicate(e) for e in self.events), timeout)
            return next(e for e in self.events if predicate(e))

    def finals(self, run_ids: Iterable[str], timeout: float = TIMEOUT) -> dict[str, Event]:
        wanted = set(run_ids)

        def final() -> dict[str, Event]:
            return {e.run_id: e for e in self.events if e.step is None and e.status in RUN_DONE and e.run_id in wanted}

        with self._changed:
            assert self._changed.wait_for(lambda: len(final()) == len(wanted), timeout), final()
            return final()


@pytest.fixture
def pool():
    """Make executors with a collecting emit; shut them all down after the test."""
    made: list[ProcessExecutor] = []

    def make(max_workers: int = 2) -> tuple[ProcessExecutor, Collector]:
        collector = Collector()
        made.append(ProcessExecutor(max_workers, collector))
        return made[-1], collector

    yield make
    for executor in made:
        executor.shutdown()


def submit(executor: ProcessExecutor, a_job: Job, keys: Iterable[str]) -> list[str]:
    run_ids = []
    for key in keys:
        run_ids.append(f"{a_job.name}-{key}")
        executor.submit(a_job, RunRequest(run_ids[-1], key))
    return run_ids


def one_step(fn: Callable[..., object], name: str = "main") -> Job:
    return Job(name, [step(fn, name=name)], PARTS)


def worker_processes() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name.startswith("nb_backfill-process")]


def pid_then_sleep(pid_file: str, seconds: float) -> Callable[[], None]:
    """A step that writes its worker's pid to pid_file, then sleeps."""

    def step_fn() -> None:
        with open(pid_file + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pid_file + ".tmp", pid_file)
        time.sleep(seconds)

    return step_fn


def worker_pid(pid_file: str) -> int:
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(pid_file):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return int(Path(pid_file).read_text())


def marking(marks: str, gate: str, slow: str = "p0") -> Callable[..., None]:
    """A step that appends its partition and worker pid to `marks`; partition `slow` then waits
    until the file `gate` exists."""

    def step_fn(context) -> None:
        import os
        import time

        with open(marks, "a") as f:
            f.write(f"{context.partition_key} {os.getpid()}\n")
        while context.partition_key == slow and not os.path.exists(gate):
            time.sleep(0.01)

    return step_fn


def marked(marks: str) -> list[tuple[str, int]]:
    """(partition, pid) of every execution so far, in order."""
    if not os.path.exists(marks):
        return []
    return [(key, int(pid)) for key, pid in (line.split() for line in Path(marks).read_text().splitlines())]


def wait_until(condition: Callable[[], object], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_noop_runs_succeed_with_every_event(pool):
    executor, events = pool(2)

    @job(partitions_def=PARTS)
    def noop(context):
        return None

    assert (executor.name, executor.max_workers) == ("process", 2)
    run_ids = submit(executor, noop, KEYS)
    assert {e.status for e in events.finals(run_ids).values()} == {"SUCCESS"}
    for run_id in run_ids:
        seen = [(e.status, e.step) for e in events.of(run_id)]
        assert seen == [
            ("STARTING", None),
            ("STARTED", None),
            ("RUNNING", "noop"),
            ("SUCCESS", "noop"),
            ("SUCCESS", None),
        ]
    assert len(worker_processes()) <= 2


def test_lambda_and_closure_steps_pass_outputs(pool):
    executor, events = pool(2)
    prefix = "closed-over"

    def make_report(suffix: str):
        def report(first):
            print(f"{prefix} {first} {suffix}")

        return report

    a_job = Job(
        "closures",
        [step(lambda context: context.partition_key.upper(), name="first"), step(make_report("!"), name="report")],
        PARTS,
    )
    run_ids = submit(executor, a_job, ["p1", "p2"])
    assert {e.status for e in events.finals(run_ids).values()} == {"SUCCESS"}
    for run_id, key in zip(run_ids, ["P1", "P2"]):
        logs = [e for e in events.of(run_id) if e.status == "LOG"]
        assert [(e.step, e.message) for e in logs] == [("report", f"closed-over {key} !\n")]


def test_a_long_steps_output_arrives_while_it_runs(pool, tmp_path):
    executor, events = pool(1)
    gate = str(tmp_path / "gate")

    def talkative(context):
        import os
        import time

        print("begun")
        while not os.path.exists(gate):
            time.sleep(0.01)
        print("ended")

    (run_id,) = submit(executor, one_step(talkative), ["p1"])
    log = events.wait_for(lambda e: e.run_id == run_id and e.status == "LOG")
    assert log.message == "begun\n" and not [e for e in events.of(run_id) if e.step is None and e.status in RUN_DONE]
    Path(gate).touch()
    assert events.finals([run_id])[run_id].status == "SUCCESS"
    assert "".join(e.message for e in events.of(run_id) if e.status == "LOG") == "begun\nended\n"


def test_prints_stderr_and_logging_become_logs_of_their_run(pool):
    executor, events = pool(2)

    def chatty(context):
        import logging
        import sys

        print("out", context.partition_key)
        print("err", context.partition_key, file=sys.stderr)
        context.log.info("info %s", context.partition_key)
        logging.getLogger("user.code").warning("warn %s", context.partition_key)

    run_ids = submit(executor, one_step(chatty), ["p1", "p2"])
    assert {e.status for e in events.finals(run_ids).values()} == {"SUCCESS"}
    for run_id, key, other in zip(run_ids, ["p1", "p2"], ["p2", "p1"]):
        text = "".join(e.message for e in events.of(run_id) if e.status == "LOG")
        expected = [
            f"out {key}\n",
            f"err {key}\n",
            f"INFO nb_backfill.run - info {key}",
            f"WARNING user.code - warn {key}",
        ]
        assert all(line in text for line in expected), text
        assert other not in text


def test_worker_exit_fails_only_its_run_and_is_replaced(pool):
    executor, events = pool(1)

    def exits(context):
        import os

        if context.partition_key == "p1":
            os._exit(3)

    run_ids = submit(executor, one_step(exits), ["p0", "p1", "p2", "p3"])
    finals = events.finals(run_ids)
    message = "worker process died (exit code 3)"
    assert [(finals[r].status, finals[r].message) for r in run_ids] == [
        ("SUCCESS", None),
        ("FAILURE", message),
        ("SUCCESS", None),
        ("SUCCESS", None),
    ]
    assert [(e.status, e.step, e.message) for e in events.of(run_ids[1])] == [
        ("STARTING", None, None),
        ("STARTED", None, None),
        ("RUNNING", "main", None),
        ("FAILURE", "main", message),
        ("FAILURE", None, message),
    ]


def test_segfault_names_the_signal(pool):
    executor, events = pool(2)

    def crashes(context):
        import ctypes

        ctypes.string_at(0)

    (run_id,) = submit(executor, one_step(crashes), ["p0"])
    final = events.finals([run_id])[run_id]
    assert (final.status, final.message) == ("FAILURE", "worker process died (killed by signal SIGSEGV)")


def test_worker_killed_from_outside_fails_its_run(pool, tmp_path):
    executor, events = pool(1)
    pid_file = str(tmp_path / "pid")
    (run_id,) = submit(executor, one_step(pid_then_sleep(pid_file, 30)), ["p0"])
    os.kill(worker_pid(pid_file), signal.SIGKILL)
    final = events.finals([run_id])[run_id]
    assert (final.status, final.message) == ("FAILURE", "worker process died (killed by signal SIGKILL)")
    (after,) = submit(executor, one_step(lambda: None, name="after"), ["p1"])
    assert events.finals([after])[after].status == "SUCCESS"


def test_sigint_does_not_reach_runs(pool, tmp_path):
    # Jupyter's interrupt signals the kernel's process group, workers included
    executor, events = pool(1)
    pid_file = str(tmp_path / "pid")
    (run_id,) = submit(executor, one_step(pid_then_sleep(pid_file, 0.5)), ["p0"])
    os.kill(worker_pid(pid_file), signal.SIGINT)
    assert events.finals([run_id])[run_id].status == "SUCCESS"


def test_cancel_queued_run_returns_true_and_it_never_starts(pool):
    executor, events = pool(1)
    run_ids = submit(executor, one_step(lambda context: __import__("time").sleep(0.3)), ["p0", "p1", "p2"])
    assert executor.cancel(run_ids[1]) is True
    assert executor.cancel("no-such-run") is False
    finals = events.finals([run_ids[0], run_ids[2]])
    assert {e.status for e in finals.values()} == {"SUCCESS"}
    assert events.of(run_ids[1]) == []


def test_cancel_running_run_terminates_its_worker(pool):
    executor, events = pool(1)
    run_ids = submit(executor, one_step(lambda: __import__("time").sleep(30)), ["p0", "p1"])
    events.wait_for(lambda e: e.run_id == run_ids[0] and e.status == "RUNNING")
    started = time.monotonic()
    assert executor.cancel(run_ids[0]) is False
    final = events.finals([run_ids[0]], timeout=5)[run_ids[0]]
    assert time.monotonic() - started < 5
    assert (final.status, final.message) == ("CANCELED", "canceled")
    assert [(e.status, e.step) for e in events.of(run_ids[0])][-2:] == [("CANCELED", "main"), ("CANCELED", None)]
    # the queued run starts on a replacement worker; cancel it too, then the pool still works
    events.wait_for(lambda e: e.run_id == run_ids[1] and e.status == "RUNNING")
    assert executor.cancel(run_ids[1]) is False
    assert events.finals([run_ids[1]])[run_ids[1]].status == "CANCELED"
    (after,) = submit(executor, one_step(lambda: None, name="after"), ["p2"])
    assert events.finals([after])[after].status == "SUCCESS"


def test_cancel_kills_a_worker_that_ignores_sigterm(pool):
    executor, events = pool(1)

    def stubborn():
        import signal
        import time

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(30)

    (run_id,) = submit(executor, one_step(stubborn), ["p0"])
    events.wait_for(lambda e: e.run_id == run_id and e.status == "RUNNING")
    time.sleep(0.2)  # let the step ignore SIGTERM
    started = time.monotonic()
    assert executor.cancel(run_id) is False
    assert events.finals([run_id], timeout=5)[run_id].status == "CANCELED"
    assert 0.9 < time.monotonic() - started < 5


def test_shutdown_stops_every_worker_and_is_idempotent(pool):
    executor, events = pool(2)
    slow = submit(executor, one_step(lambda: __import__("time").sleep(30), name="slow"), ["p0"])
    fast = submit(executor, one_step(lambda: None, name="fast"), ["p1", "p2"])
    events.finals(fast)
    events.wait_for(lambda e: e.run_id == slow[0] and e.status == "RUNNING")
    pids = [p.pid for p in worker_processes()]
    assert len(pids) == 2
    started = time.monotonic()
    executor.shutdown()
    assert time.monotonic() - started < 5
    assert events.finals(slow, timeout=0)[slow[0]].status == "CANCELED"
    assert worker_processes() == []
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")
    executor.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        submit(executor, one_step(lambda: None), ["p3"])


def test_job_is_pickled_once_and_sent_once_per_worker(pool, monkeypatch):
    executor, events = pool(2)
    calls = []
    dumps = cloudpickle.dumps
    monkeypatch.setattr(cloudpickle, "dumps", lambda obj: calls.append(obj) or dumps(obj))
    a_job = one_step(lambda: None)
    run_ids = submit(executor, a_job, KEYS)
    assert {e.status for e in events.finals(run_ids).values()} == {"SUCCESS"}
    assert calls == [a_job]


def test_unpicklable_job_fails_its_runs_without_a_worker(pool):
    executor, events = pool(1)
    lock = threading.Lock()
    run_ids = submit(executor, one_step(lambda: lock.locked(), name="locked"), ["p0", "p1"])
    for run_id in run_ids:
        assert [(e.status, e.step) for e in events.of(run_id)] == [("FAILURE", None)]
        assert events.of(run_id)[0].message.startswith("job 'locked' cannot be sent to a worker process: ")
    assert worker_processes() == []


def test_job_that_cannot_load_in_the_worker_fails_its_runs(pool, monkeypatch):
    executor, events = pool(1)
    ghost = types.ModuleType("nbb_ghost_module")
    monkeypatch.setitem(sys.modules, "nbb_ghost_module", ghost)  # pickled by name, absent in workers
    run_ids = submit(executor, one_step(lambda: ghost), ["p0", "p1"])
    finals = events.finals(run_ids)
    for run_id in run_ids:
        assert finals[run_id].status == "FAILURE"
        assert "No module named 'nbb_ghost_module'" in finals[run_id].message
    (after,) = submit(executor, one_step(lambda: None, name="after"), ["p2"])
    assert events.finals([after])[after].status == "SUCCESS"


def test_steps_defined_in_main_work_like_in_a_notebook():
    # `python -c` has a __main__ without a file, as a Jupyter kernel does; no __name__ guard
    code = textwrap.dedent(
        """
        import json, threading
        import nb_backfill as nbb
        from nb_backfill.executors.process import ProcessExecutor
        from nb_backfill.executors.run import RunRequest
        from nb_backfill.jobs import Job, step

        factor = 3
        def triple(first):
            print("tripled", first * factor)
        j = Job("main_job", [step(lambda context: len(context.partition_key), name="first"), step(triple)],
                nbb.StaticPartitionsDefinition(["a", "bb"]))
        events, done = [], threading.Semaphore(0)
        def emit(e):
            events.append(e)
            if e.step is None and e.status in ("SUCCESS", "FAILURE", "CANCELED"):
                done.release()
        executor = ProcessExecutor(2, emit)
        for key in ["a", "bb"]:
            executor.submit(j, RunRequest(key, key))
        for _ in range(2):
            assert done.acquire(timeout=20)
        executor.shutdown()
        shown = [[e.run_id, e.status, e.message] for e in events if e.status in ("LOG", "SUCCESS") and e.step != "first"]
        print(json.dumps(sorted(shown)))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        ["a", "LOG", "tripled 3\n"],
        ["a", "SUCCESS", None],
        ["a", "SUCCESS", None],
        ["bb", "LOG", "tripled 6\n"],
        ["bb", "SUCCESS", None],
        ["bb", "SUCCESS", None],
    ]


def test_workers_that_cannot_start_fail_the_runs_instead_of_respawning():
    # code read from stdin has a __main__ file, "<stdin>", that spawned workers fail to re-run
    code = textwrap.dedent(
        """
        import json, multiprocessing.process, threading
        import nb_backfill as nbb
        from nb_backfill.executors.process import ProcessExecutor
        from nb_backfill.executors.run import RunRequest
        from nb_backfill.jobs import Job, step

        starts, start = [], multiprocessing.process.BaseProcess.start
        multiprocessing.process.BaseProcess.start = lambda self: starts.append(self) or start(self)
        j = Job("stdin_job", [step(lambda: None, name="s")], nbb.StaticPartitionsDefinition(["a"]))
        finals, done = {}, threading.Event()
        def emit(e):
            if e.step is None and e.status in ("SUCCESS", "FAILURE", "CANCELED"):
                finals[e.run_id] = e.message
                if len(finals) == 200:
                    done.set()
        executor = ProcessExecutor(2, emit)
        for i in range(200):
            executor.submit(j, RunRequest(str(i), "a"))
        assert done.wait(30)
        executor.submit(j, RunRequest("late", "a"))
        executor.shutdown()
        print(json.dumps({"starts": len(starts), "messages": sorted(set(finals.values())), "late": finals["late"]}))
        """
    )
    result = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["starts"] <= 2
    (message,) = report["messages"]
    assert message.startswith("worker process could not start (exit code 1); its error is on the stderr")
    assert report["late"] == message


def test_workers_exit_when_the_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing, os, signal, sys, threading, time
            import nb_backfill as nbb
            from nb_backfill.executors.process import ProcessExecutor
            from nb_backfill.executors.run import RunRequest
            from nb_backfill.jobs import Job, step

            if __name__ == "__main__":
                j = Job("sleepy", [step(lambda: time.sleep(30), name="s")], nbb.StaticPartitionsDefinition(["a", "b"]))
                running = threading.Semaphore(0)
                executor = ProcessExecutor(2, lambda e: e.status == "RUNNING" and running.release())
                for key in "ab":
                    executor.submit(j, RunRequest(key, key))
                for _ in "ab":
                    assert running.acquire(timeout=20)
                with open(sys.argv[1], "w") as f:
                    f.write(" ".join(str(p.pid) for p in multiprocessing.active_children()))
                os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    pid_file = tmp_path / "pids"
    # no pipes: the workers inherit them, and waiting on them would wait for the workers
    subprocess.run([sys.executable, str(script), str(pid_file)], stdout=subprocess.DEVNULL, timeout=60)
    pids = [int(pid) for pid in pid_file.read_text().split()]
    assert len(pids) == 2

    def alive(pid: int) -> bool:  # an exited orphan may stay a zombie where init does not reap
        try:
            return "\tZ" not in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_runs_lent_to_a_busy_worker_are_taken_back_and_never_start(pool, tmp_path):
    executor, events = pool(1)
    marks, gate = str(tmp_path / "marks"), str(tmp_path / "gate")
    run_ids = submit(executor, one_step(marking(marks, gate)), ["p0", "p1", "p2", "p3"])
    events.wait_for(lambda e: e.run_id == run_ids[0] and e.status == "RUNNING")
    assert set(run_ids[1:]) <= set(executor._lenders)  # lent to the busy worker, not waiting here
    assert executor.withdraw(run_ids[0]) is False  # begun: it cannot come back
    assert executor.withdraw(run_ids[1]) is True
    assert executor.cancel(run_ids[2]) is True
    Path(gate).touch()
    finals = events.finals([run_ids[0], run_ids[3]])
    assert {e.status for e in finals.values()} == {"SUCCESS"}
    assert events.of(run_ids[1]) == events.of(run_ids[2]) == []
    assert [key for key, _ in marked(marks)] == ["p0", "p3"]


def test_a_killed_worker_fails_only_its_run_and_the_runs_lent_to_it_run_elsewhere(pool, tmp_path):
    executor, events = pool(1)
    marks, gate = str(tmp_path / "marks"), str(tmp_path / "gate")
    run_ids = submit(executor, one_step(marking(marks, gate)), ["p0", "p1", "p2", "p3"])
    events.wait_for(lambda e: e.run_id == run_ids[0] and e.status == "RUNNING")
    assert set(run_ids[1:]) <= set(executor._lenders)
    ((_, pid),) = marked(marks)
    os.kill(pid, signal.SIGKILL)
    finals = events.finals(run_ids)
    assert (finals[run_ids[0]].status, finals[run_ids[0]].message) == (
        "FAILURE",
        "worker process died (killed by signal SIGKILL)",
    )
    for run_id in run_ids[1:]:  # never begun by the dead worker: each starts once, on its replacement
        assert [(e.status, e.step) for e in events.of(run_id)] == [
            ("STARTING", None),
            ("STARTED", None),
            ("RUNNING", "main"),
            ("SUCCESS", "main"),
            ("SUCCESS", None),
        ]
    assert [key for key, p in marked(marks) if p != pid] == ["p1", "p2", "p3"]


def test_a_slow_run_does_not_hold_up_the_runs_lent_behind_it(pool, tmp_path):
    executor, events = pool(2)
    marks, gate = str(tmp_path / "marks"), str(tmp_path / "gate")
    run_ids = submit(executor, one_step(marking(marks, gate)), ["p0", "p1", "p2", "p3", "p4"])
    slow_worker = executor._lenders[run_ids[0]]
    behind = [r for r in run_ids[1:] if executor._lenders[r] is slow_worker]
    assert behind  # lent behind the slow run while the workers start
    events.wait_for(lambda e: e.run_id == run_ids[0] and e.status == "RUNNING")
    finals = events.finals(run_ids[1:])  # the gate stays shut: the other worker takes them
    assert {e.status for e in finals.values()} == {"SUCCESS"}
    assert [e.status for e in events.of(run_ids[0])][-1] == "RUNNING"  # still
    ((_, slow_pid),) = [(key, pid) for key, pid in marked(marks) if key == "p0"]
    assert all(pid != slow_pid for key, pid in marked(marks) if key != "p0")
    Path(gate).touch()
    assert events.finals(run_ids[:1])[run_ids[0]].status == "SUCCESS"


@pytest.mark.parametrize("verb", ["pause", "max_concurrent", "cancel"])
def test_runs_lent_ahead_come_back_on_pause_max_concurrent_and_cancel(tmp_path, verb):
    store = nbb.get_instance(tmp_path / "store")
    marks, gate = str(tmp_path / "marks"), str(tmp_path / "gate")
    parts = nbb.StaticPartitionsDefinition([f"p{i}" for i in range(6)])
    a_job = Job("lent", [step(marking(marks, gate), name="main")], parts)
    concurrency = {"coordinator": "queued", "max_concurrent": 3} if verb == "max_concurrent" else {}
    bf = nbb.launch_backfill(a_job, all=True, executor="process", max_workers=1, instance=store, **concurrency)
    wait_until(lambda: marked(marks))  # p0 runs; the runs handed with it are lent to its worker
    executor = Engine.existing(store)._active[bf.id].executor
    assert len(executor._lenders) > 1
    if verb == "cancel":
        bf.cancel()
        assert bf.wait(timeout=TIMEOUT) == "CANCELED"
        assert bf.counts()["CANCELED"] == 6
        assert [key for key, _ in marked(marks)] == ["p0"]
        return
    if verb == "pause":
        bf.pause()
    else:
        bf.set_max_concurrent(1)
    wait_until(lambda: bf.counts()["STARTED"] == 1 and bf.counts()["QUEUED"] == 5)
    assert list(executor._lenders) == [bf.runs_df().loc["p0", "run_id"]]  # the others came back
    Path(gate).touch()
    if verb == "pause":
        wait_until(lambda: bf.counts()["SUCCESS"] == 1)
        time.sleep(0.3)  # time enough for a run wrongly left with the worker to begin
        assert [key for key, _ in marked(marks)] == ["p0"]
        bf.resume()
    assert bf.wait(timeout=TIMEOUT) == "COMPLETED_SUCCESS"
    assert sorted(key for key, _ in marked(marks)) == [f"p{i}" for i in range(6)]  # each once


KILLED_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import nb_backfill as nbb

    store, marks, mode = sys.argv[1], sys.argv[2], sys.argv[3]

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition([f"p{i:03d}" for i in range(40)]))
    def work(context):
        with open(os.path.join(marks, f"{mode}-{os.getpid()}.txt"), "a") as f:
            f.write(context.partition_key + "\\n")
        time.sleep(0.02)

    if __name__ == "__main__":
        if mode == "launch":
            bf = nbb.launch_backfill(work, all=True, executor="process", max_workers=2, instance=store)
            print(bf.id, flush=True)
        else:
            bf = nbb.resume_backfill(sys.argv[4], instance=store)
        print(bf.wait(timeout=120), flush=True)
    """
)


def test_kill_9_of_the_launching_process_loses_nothing_recorded(tmp_path):
    script, store, marks = tmp_path / "job.py", tmp_path / "store", tmp_path / "marks"
    script.write_text(KILLED_SCRIPT)
    marks.mkdir()
    backfill_id = kill_after(start(script, store, marks, "launch"), marks, 12)
    runs = nbb.get_backfill(backfill_id, instance=store).runs_df()
    succeeded = set(runs.index[runs["status"] == "SUCCESS"])
    assert succeeded <= set(executed(marks, "launch"))  # a recorded success really ran
    resume = finish(script, store, marks, "resume", backfill_id)
    assert resume.returncode == 0, resume.stderr
    assert resume.stdout.strip() == "COMPLETED_SUCCESS"
    assert sorted(executed(marks, "resume")) == sorted(set(runs.index) - succeeded)  # the rest, each once


def test_overhead_per_run_is_small():
    # 5,000 no-op runs on 2 workers and 2 cores measured about 25,000 runs/s (40 us a run);
    # this loose bound only catches gross regressions such as pickling the job for every run
    done, count = threading.Event(), [0]

    def emit(event: Event) -> None:
        if event.step is None and event.status == "SUCCESS":
            count[0] += 1
            if count[0] in (2, 2002):
                done.set()

    executor = ProcessExecutor(2, emit)
    try:
        noop = one_step(lambda: None, name="noop")
        for i in range(2):  # start the workers and ship them the job
            executor.submit(noop, RunRequest(f"warm-{i}", "p0"))
        assert done.wait(TIMEOUT)
        done.clear()
        started = time.monotonic()
        for i in range(2000):
            executor.submit(noop, RunRequest(f"run-{i}", "p0"))
        assert done.wait(TIMEOUT)
        assert time.monotonic() - started < 4
    finally:
        executor.shutdown()
