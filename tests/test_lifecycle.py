"""The run lifecycle under cancel, faults and bad steps: each test is the repro of a way status
went wrong before storage enforced one lifecycle, kept so that it cannot come back."""

import asyncio
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from feed_checks import assert_feed_is_a_valid_lifecycle, feed_by_run
from job_scripts import start

import nb_backfill as nbb
from nb_backfill import engine as engine_module
from nb_backfill.engine import Engine
from nb_backfill.statuses import (
    BACKFILL_DONE,
    RUN_DONE,
    RunStatus,
    StepStatus,
    backfill_change_allowed,
    run_change_allowed,
    step_change_allowed,
)
from nb_backfill.storage import BackfillRecord, Event, StorageError

STATIC = nbb.StaticPartitionsDefinition([f"p{i:03d}" for i in range(300)])
DAILY = nbb.DailyPartitionsDefinition("2024-01-01", end_date="2024-01-11")  # 10 partitions


@pytest.fixture
def store(tmp_path):
    return nbb.get_instance(tmp_path / "store")


def run_paths(store, backfill_id):
    """Each run's sequence of statuses, as the change feed recorded them (one entry a run per write)."""
    feed = feed_by_run(store, backfill_id)
    return {r.run_id: [status for status, _ in feed.get(r.run_id, [])] for r in store.runs(backfill_id)}


# --- the lifecycle table


def test_terminal_is_final_for_its_attempt_and_only_a_next_attempt_reopens_a_run():
    for done in RUN_DONE:
        assert not any(run_change_allowed(done, 1, status, 1) for status in RunStatus)
        assert run_change_allowed(done, 1, RunStatus.QUEUED, 2)
        assert not run_change_allowed(done, 1, RunStatus.QUEUED, 3)
    assert not run_change_allowed(RunStatus.QUEUED, 1, RunStatus.QUEUED, 2)  # only a done run gets a new attempt
    assert [s for s in RunStatus if run_change_allowed(s, 1, RunStatus.CANCELING, 1)] == [
        RunStatus.STARTING,
        RunStatus.STARTED,
    ]
    assert not run_change_allowed(RunStatus.STARTED, 2, RunStatus.SUCCESS, 1)  # an older attempt never speaks
    assert step_change_allowed(None, StepStatus.RUNNING) and step_change_allowed(StepStatus.FAILURE, StepStatus.RUNNING)
    assert not step_change_allowed(StepStatus.SUCCESS, StepStatus.FAILURE)
    assert not backfill_change_allowed("CANCELING", "REQUESTED")  # a retry never un-cancels
    for done in BACKFILL_DONE:
        assert [s for s in nbb.BackfillStatus if backfill_change_allowed(done, s)] == ["REQUESTED"]


def test_storage_drops_a_change_the_lifecycle_does_not_allow(store):
    record = BackfillRecord("bf", "j", "REQUESTED", 0.0, 0.0, None, 1, {}, {}, "x", None, None)
    store.create_backfill(record, [("bf-x-000000", "a", 0)])
    accepted = store.write_batch(
        [
            Event("bf-x-000000", "STARTED", 1.0),
            Event("bf-x-000000", "SUCCESS", 2.0),
            Event("bf-x-000000", "CANCELING", 3.0),  # the race of issue point 1: after SUCCESS, refused
            Event("bf-x-000000", "FAILURE", 4.0, message="late"),
            Event("bf-x-000000", "RUNNING", 5.0, step="s"),  # a step of a finished run: refused
        ]
    )
    assert accepted == 2
    run = store.runs("bf")[0]
    assert (run.status, run.error) == ("SUCCESS", None)
    assert run_paths(store, "bf") == {"bf-x-000000": ["SUCCESS"]}  # one feed entry a run per write: its state now
    assert store.step_rows("bf") == []
    store.write_batch([Event("bf-x-000000", "CANCELING", 6.0)])  # alone, too
    assert run_paths(store, "bf") == {"bf-x-000000": ["SUCCESS"]}


# --- 1. cancel never overwrites a finished run


def test_cancel_in_the_middle_of_many_short_runs_leaves_every_run_done(store):
    completed = []

    @nbb.job(partitions_def=STATIC)
    def short(context):
        time.sleep(0.02)
        completed.append(context.partition_key)  # its body completed: it must end SUCCESS

    for trial in range(8):
        completed.clear()
        bf = nbb.launch_backfill(short, all=True, max_workers=8, instance=store)
        time.sleep(0.05 + 0.01 * trial)
        bf.cancel()
        assert bf.wait(timeout=30) == "CANCELED"
        counts = bf.counts()
        assert counts["CANCELING"] == counts["QUEUED"] == counts["STARTED"] == 0, counts
        assert counts["SUCCESS"] + counts["CANCELED"] == 300
        runs = bf.runs_df()
        assert set(runs.index[runs["status"] == "SUCCESS"]) == set(completed)  # never SUCCESS > CANCELING
        assert_feed_is_a_valid_lifecycle(store, bf.id)
        status = nbb.partition_status(short, instance=store)["status"]
        assert "IN_PROGRESS" not in set(status)


CANCEL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import nb_backfill as nbb
    parts = nbb.StaticPartitionsDefinition([f"p{i:03d}" for i in range(200)])

    @nbb.job(partitions_def=parts)
    def short(context):
        time.sleep(0.02)

    if __name__ == "__main__":
        bf = nbb.launch_backfill(short, all=True, max_workers=8, instance=sys.argv[1])
        print(bf.id, flush=True)
        print(bf.wait(timeout=60), flush=True)
    """
)


def test_cancel_from_another_process_is_decided_by_the_owner(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(CANCEL_SCRIPT)
    owner = subprocess.Popen([sys.executable, str(script), str(tmp_path / "store")], stdout=subprocess.PIPE, text=True)
    try:
        backfill_id = owner.stdout.readline().strip()
        bf = nbb.get_backfill(backfill_id, instance=tmp_path / "store")
        while bf.counts()["SUCCESS"] < 5:
            time.sleep(0.01)
        said = bf.cancel()  # a command through the store, answered by the owner's engine
        assert said.startswith(f"canceling backfill {backfill_id}: ")
        assert owner.stdout.readline().strip() == "CANCELED"
        counts = bf.counts()
        assert counts["SUCCESS"] + counts["CANCELED"] == 200 and counts["CANCELING"] == 0
        assert_feed_is_a_valid_lifecycle(nbb.get_instance(tmp_path / "store"), backfill_id)
    finally:
        owner.kill()
        owner.wait()


# --- 2. one bad event never loses a batch, and a store that stays unwritable fails the backfill visibly


def test_output_with_lone_surrogates_is_stored_escaped_and_loses_nothing(store):
    name = b"caf\xe9.csv".decode("utf-8", "surrogateescape")  # as os.listdir returns an undecodable name

    @nbb.job(partitions_def=DAILY)
    def lists_files(context):
        print(f"reading {name}")
        if context.partition_key == "2024-01-03":
            raise FileNotFoundError(name)

    bf = nbb.launch_backfill(lists_files, all=True, instance=store)
    assert bf.wait(timeout=20) == "COMPLETED_FAILED"
    assert bf.counts()["SUCCESS"] == 9 and bf.counts()["FAILURE"] == 1
    assert "reading caf\\udce9.csv" in bf.logs("2024-01-05")
    assert "FileNotFoundError: caf\\udce9.csv" in bf.error("2024-01-03")


def test_a_log_over_the_limit_is_capped_in_the_store_and_kept_whole_in_a_file(store, monkeypatch):
    monkeypatch.setattr(engine_module, "LOG_LIMIT", 1000)

    @nbb.job(partitions_def=DAILY)
    def chatty(context):
        for i in range(300):
            print(f"line {i:04d}")

    bf = nbb.launch_backfill(chatty, partitions="2024-01-02", instance=store)
    assert bf.wait(timeout=20) == "COMPLETED_SUCCESS"
    log = bf.logs("2024-01-02")
    assert log.startswith("line 0000") and "this run's log reached 1,000 characters; the rest is in" in log
    assert len(log) < 1300
    path = store.home / "logs" / f"{bf.run('2024-01-02').run_id}-1.log"
    rest = path.read_text()
    assert rest.endswith("line 0299\n") and (log.split("\n[nb_backfill")[0] + rest).count("line ") == 300


def test_a_write_the_store_refuses_is_retried_and_nothing_is_lost(store, monkeypatch):
    real = store.write_batch
    failures = {"left": 3}

    def flaky(events):
        if failures["left"] and any(e.status == "SUCCESS" and e.step is None for e in events):
            failures["left"] -= 1
            raise StorageError("could not write: database or disk is full", "transient")
        return real(events)

    monkeypatch.setattr(store, "write_batch", flaky)

    @nbb.job(partitions_def=DAILY)
    def quick(context):
        time.sleep(0.01)

    bf = nbb.launch_backfill(quick, all=True, max_workers=2, instance=store)
    assert bf.wait(timeout=30) == "COMPLETED_SUCCESS"
    assert failures["left"] == 0 and bf.counts()["SUCCESS"] == 10
    assert_feed_is_a_valid_lifecycle(store, bf.id)


def test_a_value_sqlite_refuses_loses_only_itself(store, monkeypatch):
    real = store.write_batch

    def picky(events):
        if any(e.message and "POISON" in e.message for e in events):
            raise StorageError("could not write: DataError: string or blob too big", "data")
        return real(events)

    monkeypatch.setattr(store, "write_batch", picky)

    @nbb.job(partitions_def=DAILY)
    def poisoned(context):
        print("POISON" if context.partition_key == "2024-01-04" else "fine")

    bf = nbb.launch_backfill(poisoned, all=True, instance=store)
    assert bf.wait(timeout=30) == "COMPLETED_SUCCESS"
    assert bf.counts()["SUCCESS"] == 10
    assert bf.logs("2024-01-05") == "fine\n"
    assert bf.logs("2024-01-04").startswith("[nb_backfill could not store this output: could not write: DataError")


def test_a_full_disk_that_stays_full_fails_the_backfill_visibly_and_never_hangs(store, monkeypatch):
    monkeypatch.setattr(engine_module, "WRITE_FAULT_LIMIT", 1.0)
    gate = threading.Event()

    @nbb.job(partitions_def=DAILY)
    def gated(context):
        gate.wait(10)

    bf = nbb.launch_backfill(gated, all=True, max_workers=2, instance=store)
    engine = Engine.existing(store)
    pages = store.query("PRAGMA page_count")[0][0]
    engine.call(
        lambda: store._connection().execute(f"PRAGMA max_page_count = {pages}")
    )  # the engine's writes: SQLITE_FULL
    big = "x" * 200_000
    engine.emit(Event(store.runs(bf.id)[0].run_id, "LOG", time.time(), 1, None, big))  # needs pages it cannot get
    gate.set()
    started = time.monotonic()
    assert bf.wait(timeout=30) == "FAILED"
    assert time.monotonic() - started < 15
    assert "could not write to the store" in bf.error() and "full" in bf.error()
    assert "failed: could not write to the store" in bf.progress().line()
    engine.call(lambda: store._connection().execute("PRAGMA max_page_count = 1073741823"))
    # the store is writable again: the failure is stored, and resume finishes the backfill
    deadline = time.monotonic() + 10
    while store.get_backfill(bf.id).status != "FAILED" and time.monotonic() < deadline:
        time.sleep(0.05)
    bf.resume()
    assert bf.wait(timeout=30) == "COMPLETED_SUCCESS"


# --- 3. whatever a step raises fails the step, not the worker


@pytest.mark.parametrize(
    "raised", [KeyboardInterrupt, asyncio.CancelledError, GeneratorExit, BaseException, SystemExit]
)
def test_a_base_exception_in_a_step_fails_that_run_only(store, raised):
    @nbb.job(partitions_def=DAILY)
    def abrupt(context):
        print("before the exception")
        if context.partition_key == "2024-01-02":
            raise raised("stop here")

    bf = nbb.launch_backfill(abrupt, all=True, max_workers=2, instance=store)
    assert bf.wait(timeout=20) == "COMPLETED_FAILED"
    assert bf.counts()["SUCCESS"] == 9 and bf.counts()["FAILURE"] == 1
    assert f"{raised.__name__}: stop here" in bf.error("2024-01-02")
    assert bf.logs("2024-01-02") == "before the exception\n"


def raises_keyboard_interrupt(context):
    print("before the exception")
    if context.partition_key == "2024-01-02":
        raise KeyboardInterrupt("stop here")


def test_a_base_exception_on_the_process_executor_keeps_its_traceback_and_output(store):
    job = nbb.job(partitions_def=DAILY, name="abrupt_in_a_process")(raises_keyboard_interrupt)
    bf = nbb.launch_backfill(job, partitions="2024-01-01,2024-01-02", executor="process", max_workers=1, instance=store)
    assert bf.wait(timeout=60) == "COMPLETED_FAILED"
    error = bf.error("2024-01-02")
    assert "KeyboardInterrupt: stop here" in error and "worker process died" not in error
    assert bf.logs("2024-01-02") == "before the exception\n"
    assert bf.run("2024-01-01").status == "SUCCESS"  # the same worker went on


# --- 4. steps written the Dagster way


def test_steps_take_context_and_inputs_in_any_order_keyword_only_and_with_defaults(store):
    @nbb.step
    def extract(context):
        return [context.partition_key]

    @nbb.step
    def transform(extract, /, context, scale=2):  # positional-only input, context in the middle, a default
        return extract * scale

    @nbb.step
    def load(context, transform, *, extract, limit=10):  # Dagster's order: context first
        return len(transform) + len(extract) + limit

    bf = nbb.launch_backfill(
        nbb.Job("dagster_way", [extract, transform, load], DAILY), partitions="2024-01-01", instance=store
    )
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS", bf.error("2024-01-01")
    assert list(bf.steps_df().loc["2024-01-01"]) == ["SUCCESS"] * 3


def test_a_failing_step_traceback_starts_at_the_users_code(store):
    @nbb.step
    def broken(context):
        raise ValueError("no data")

    bf = nbb.launch_backfill(nbb.Job("broken_step", [broken], DAILY), partitions="2024-01-01", instance=store)
    bf.wait(timeout=10)
    error = bf.error("2024-01-01")
    assert "in broken" in error and "nb_backfill" not in error.split("Traceback (most recent call last):")[1]


def test_a_parameter_that_names_no_step_and_has_no_default_is_refused_at_definition():
    @nbb.step
    def needs(context, missing):
        return missing

    with pytest.raises(nbb.DefinitionError, match=r"'missing', which is not a step.*or have a default"):
        nbb.Job("needs_missing", [needs], DAILY)


# --- 7. control is decided in the engine: one meaning for retry and resume


def test_retry_reruns_failures_only_and_says_so_when_nothing_failed(store):
    gate = threading.Event()

    @nbb.job(partitions_def=DAILY)
    def mixed(context):
        if context.partition_key == "2024-01-03" and context.attempt == 1:
            raise RuntimeError("first time")
        if context.partition_key >= "2024-01-08":
            gate.wait(10)

    bf = nbb.launch_backfill(mixed, all=True, coordinator="queued", max_concurrent=3, instance=store)
    while bf.run("2024-01-03").status != "FAILURE":
        time.sleep(0.01)
    bf.retry_failed()  # while it runs: only the failed run goes again
    gate.set()
    assert bf.wait(timeout=20) == "COMPLETED_SUCCESS"
    assert bf.run("2024-01-03").attempt == 2 and {bf.run(k).attempt for k in ["2024-01-01", "2024-01-09"]} == {1}
    owner = store.get_backfill(bf.id).owner
    with pytest.raises(nbb.BackfillStateError, match=r"nothing to retry: backfill .* has no failed run \(10 SUCCESS\)"):
        bf.retry_failed()
    assert store.get_backfill(bf.id).owner == owner and bf.status == "COMPLETED_SUCCESS"  # refused before taking it


def test_retry_while_canceling_never_uncancels(store):
    gate = threading.Event()

    @nbb.job(partitions_def=DAILY)
    def stuck(context):
        if context.partition_key == "2024-01-01":
            raise RuntimeError("fails at once")
        gate.wait(10)

    bf = nbb.launch_backfill(stuck, all=True, coordinator="queued", max_concurrent=3, instance=store)
    while bf.run("2024-01-01").status != "FAILURE":
        time.sleep(0.01)
    bf.cancel()
    assert bf.status == "CANCELING"
    with pytest.raises(nbb.BackfillStateError, match="is canceling: retry it once it is CANCELED"):
        bf.retry_failed()
    with pytest.raises(nbb.BackfillStateError, match="is canceling"):
        bf.resume()
    gate.set()
    assert bf.wait(timeout=20) == "CANCELED"
    assert bf.counts()["QUEUED"] == 0


def test_resume_takes_canceled_and_unstarted_runs_retry_does_not(store):
    gate = threading.Event()

    @nbb.job(partitions_def=DAILY)
    def slow(context):
        gate.wait(10)
        if context.partition_key == "2024-01-02" and context.attempt == 1:
            raise RuntimeError("x")

    bf = nbb.launch_backfill(slow, all=True, coordinator="queued", max_concurrent=2, instance=store)
    while bf.counts()["STARTED"] < 2:
        time.sleep(0.01)
    bf.cancel()
    gate.set()
    assert bf.wait(timeout=20) == "CANCELED"
    counts = bf.counts()
    assert counts["FAILURE"] == 1 and counts["CANCELED"] == 8 and counts["SUCCESS"] == 1
    bf.retry_failed()  # the failed run only; canceled ones stay canceled
    assert bf.wait(timeout=20) == "COMPLETED_FAILED"
    assert bf.counts()["SUCCESS"] == 2 and bf.counts()["CANCELED"] == 8
    bf.resume()  # the canceled ones too
    assert bf.wait(timeout=20) == "COMPLETED_SUCCESS"


def test_control_racing_the_end_of_a_backfill_never_leaves_it_stuck(store):
    @nbb.job(partitions_def=DAILY)
    def flaky(context):
        time.sleep(0.002)
        if context.attempt == 1 and context.partition_key in ("2024-01-02", "2024-01-07"):
            raise RuntimeError("first attempt fails")

    for trial in range(10):
        bf = nbb.launch_backfill(flaky, all=True, max_workers=4, instance=store)
        time.sleep(0.004 * trial)
        try:
            bf.retry_failed()
        except nbb.BackfillStateError:
            pass  # nothing had failed yet
        status = bf.wait(timeout=20)
        counts = bf.counts()
        assert counts["SUCCESS"] + counts["FAILURE"] == 10, counts  # every run done, none left queued
        assert status == ("COMPLETED_FAILED" if counts["FAILURE"] else "COMPLETED_SUCCESS")
        assert_feed_is_a_valid_lifecycle(store, bf.id)


# --- 8. cancel on the thread executor never mislabels finished work


def test_a_run_whose_steps_all_completed_after_the_cancel_is_success(store):
    inside = threading.Event()
    release = threading.Event()
    written = []

    @nbb.job(partitions_def=DAILY)
    def writes(context):
        inside.set()
        release.wait(10)
        written.append(context.partition_key)  # its side effect happens

    bf = nbb.launch_backfill(writes, partitions="2024-01-01,2024-01-02", max_workers=1, instance=store)
    assert inside.wait(5)
    bf.cancel()
    release.set()
    assert bf.wait(timeout=10) == "CANCELED"
    assert written == ["2024-01-01"]
    assert bf.run("2024-01-01").status == "SUCCESS"  # its body completed: missing_only will not run it again
    assert bf.run("2024-01-02").status == "CANCELED"
    plan = nbb.launch_backfill(writes, missing_only=True, dry_run=True, instance=store)
    assert plan.loc["2024-01-01", "action"] == "skip" and plan.loc["2024-01-02", "action"] == "launch"


# --- a second process at the worst moment


RESUMER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import nb_backfill as nbb
    store, marks = sys.argv[1], Path(sys.argv[2])
    parts = nbb.StaticPartitionsDefinition([f"p{i:02d}" for i in range(30)])

    @nbb.job(partitions_def=parts)
    def work(context):
        with open(marks / f"{os.getpid()}.txt", "a") as f:
            f.write(context.partition_key + "\\n")
        time.sleep(0.01)

    if __name__ == "__main__":
        if sys.argv[3] == "launch":
            bf = nbb.launch_backfill(work, all=True, max_workers=2, instance=store)
            print(bf.id, flush=True)
            time.sleep(60)
        else:
            Path(sys.argv[5]).touch()
            while not all(Path(p).exists() for p in sys.argv[6:]):
                time.sleep(0.001)
            try:
                bf = nbb.resume_backfill(sys.argv[4], instance=store)
                print("RESUMED", bf.wait(timeout=60), flush=True)
            except nbb.BackfillStateError as error:
                print("REFUSED", error, flush=True)
    """
)


def test_two_processes_resuming_a_dead_backfill_at_once_run_it_once(tmp_path):
    script, marks, store = tmp_path / "job.py", tmp_path / "marks", tmp_path / "store"
    script.write_text(RESUMER)
    marks.mkdir()
    owner = start(script, store, marks, "launch")
    backfill_id = owner.stdout.readline().strip()
    while sum(len(f.read_text().split()) for f in marks.glob("*.txt")) < 8:
        time.sleep(0.005)
    owner.kill()
    owner.wait()
    before = {line for f in marks.glob("*.txt") for line in f.read_text().split()}
    ready = [tmp_path / "ready-a", tmp_path / "ready-b"]
    resumers = [
        subprocess.Popen(
            [sys.executable, str(script), str(store), str(marks), "resume", backfill_id, str(mine), *map(str, ready)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for mine in ready
    ]
    outputs = [p.communicate(timeout=120)[0].strip() for p in resumers]
    # one takes it over; the other is refused, or told by the new owner that it already runs it
    assert "RESUMED COMPLETED_SUCCESS" in outputs and all(
        o.startswith(("REFUSED", "RESUMED COMPLETED_SUCCESS")) for o in outputs
    ), outputs
    runs = {f.stem: f.read_text().split() for f in marks.glob("*.txt")}
    takers = [pid for pid in runs if pid != str(owner.pid)]
    assert len(takers) == 1  # exactly one process ran what was left...
    after = runs[takers[0]]
    assert len(after) == len(set(after))  # ...each partition once
    assert before | set(after) == {f"p{i:02d}" for i in range(30)}
    bf = nbb.get_backfill(backfill_id, instance=store)
    assert bf.status == "COMPLETED_SUCCESS" and bf.counts()["SUCCESS"] == 30
