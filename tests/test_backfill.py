"""Backfills end to end in one process: launch, statuses, coordinators, cancel, pause, retries, frames."""

import threading
import time

import pandas as pd
import pytest

import nb_backfill as nbb
from nb_backfill.storage import SCHEMA_VERSION

DAILY = nbb.DailyPartitionsDefinition("2024-01-01", end_date="2024-01-11")  # 10 partitions


@pytest.fixture
def store(tmp_path):
    return nbb.get_instance(tmp_path / "store")


def test_launch_returns_at_once_and_the_backfill_completes(store):
    @nbb.job(partitions_def=DAILY)
    def slow(context):
        time.sleep(0.1)

    start = time.perf_counter()
    bf = nbb.launch_backfill(slow, all=True, max_workers=2, instance=store)
    assert time.perf_counter() - start < 0.3
    assert bf.status == "REQUESTED"
    assert bf.wait(timeout=20) == "COMPLETED_SUCCESS"
    assert bf.counts()["SUCCESS"] == 10 and sum(bf.counts().values()) == 10


def test_runs_carry_backfill_and_partition_tags(store):
    seen = {}

    @nbb.job(partitions_def=DAILY, tags={"team": "data"})
    def tagged(context):
        seen[context.partition_key] = context.tags

    bf = nbb.launch_backfill(tagged, partitions="2024-01-02", tags={"reason": "fix"}, instance=store)
    bf.wait(timeout=10)
    assert seen["2024-01-02"] == {
        "team": "data",
        "reason": "fix",
        "nb_backfill/backfill": bf.id,
        "nb_backfill/partition": "2024-01-02",
    }


def test_frames_have_categorical_statuses_and_aware_times(store):
    @nbb.job(partitions_def=DAILY)
    def sometimes(context):
        if context.partition_key == "2024-01-03":
            raise RuntimeError("bad day")

    bf = nbb.launch_backfill(sometimes, from_="2024-01-02", to="2024-01-04", instance=store)
    assert bf.wait(timeout=10) == "COMPLETED_FAILED"
    runs = bf.runs_df()
    assert list(runs.columns) == ["run_id", "status", "attempt", "start_time", "end_time", "duration", "error"]
    assert runs.index.name == "partition"  # the partition is the index, not also a column
    assert list(runs.index) == ["2024-01-02", "2024-01-03", "2024-01-04"]
    assert isinstance(runs["status"].dtype, pd.CategoricalDtype)
    assert str(runs["start_time"].dt.tz) == "UTC"
    assert (runs["duration"] >= pd.Timedelta(0)).all()
    assert runs.loc["2024-01-03", "status"] == "FAILURE" and "RuntimeError: bad day" in runs.loc["2024-01-03", "error"]
    steps = bf.steps_df()
    assert steps.loc["2024-01-03", "sometimes"] == "FAILURE" and steps.loc["2024-01-02", "sometimes"] == "SUCCESS"
    assert "RuntimeError: bad day" in bf.error("2024-01-03") and bf.error("2024-01-02") is None
    status = nbb.partition_status(sometimes, instance=store)["status"]
    assert status["2024-01-02"] == "SUCCESS" and status["2024-01-03"] == "FAILURE" and status["2024-01-05"] == "MISSING"
    assert isinstance(status.dtype, pd.CategoricalDtype)


def test_multi_partitions_are_a_multiindex(store):
    multi = nbb.MultiPartitionsDefinition({"date": DAILY, "region": nbb.StaticPartitionsDefinition(["eu", "us"])})

    @nbb.step
    def one(context):
        return context.partition_keys_by_dimension["region"]

    @nbb.step
    def two(one):
        return one

    bf = nbb.launch_backfill(
        nbb.Job("multi_job", steps=[one, two], partitions_def=multi),
        from_="2024-01-01|eu",
        to="2024-01-02|us",
        instance=store,
    )
    bf.wait(timeout=10)
    steps = bf.steps_df()
    assert steps.index.names == ["date", "region"] and list(steps.columns) == ["one", "two"]
    assert steps.loc[("2024-01-02", "us"), "two"] == "SUCCESS"
    assert bf.runs_df().index.names == ["date", "region"]


def test_logs_are_captured_per_partition_and_not_printed(store, capsys):
    @nbb.job(partitions_def=DAILY)
    def chatty(context):
        print(f"hello from {context.partition_key}")
        context.log.info("done %s", context.partition_key)

    bf = nbb.launch_backfill(chatty, all=True, max_workers=3, instance=store)
    bf.wait(timeout=10)
    assert "hello from 2024-01-04\n" in bf.logs("2024-01-04")
    assert "done 2024-01-04" in bf.logs("2024-01-04") and "2024-01-05" not in bf.logs("2024-01-04")
    assert "hello from" not in capsys.readouterr().out
    with pytest.raises(nbb.UnknownPartitionError, match="'2030-01-01' is not in backfill"):
        bf.logs("2030-01-01")


def test_a_long_steps_output_reads_while_it_runs_once_each(store):
    gate = threading.Event()

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["x"]))
    def talkative(context):
        for i in range(3):
            print(f"line {i}")
        gate.wait(10)
        print("last")

    bf = nbb.launch_backfill(talkative, all=True, instance=store)
    deadline = time.monotonic() + 10
    while "line 2" not in bf.logs("x") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bf.logs("x") == "line 0\nline 1\nline 2\n" and bf.run("x").status == "STARTED"
    gate.set()
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"
    assert bf.logs("x") == "line 0\nline 1\nline 2\nlast\n"


def test_output_of_threads_a_run_starts_goes_to_its_log(store, capsys):
    from concurrent.futures import ThreadPoolExecutor

    @nbb.job(partitions_def=DAILY)
    def fan_out(context):
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda i: print(f"chunk {i} of {context.partition_key}"), range(3)))

    bf = nbb.launch_backfill(fan_out, partitions="2024-01-02,2024-01-03", instance=store)
    bf.wait(timeout=10)
    assert sorted(bf.logs("2024-01-03").split("\n")[:3]) == [f"chunk {i} of 2024-01-03" for i in range(3)]
    assert "chunk" not in capsys.readouterr().out


def test_dry_run_returns_the_plan_and_writes_nothing(store):
    @nbb.job(partitions_def=DAILY)
    def planned(context):
        if context.partition_key == "2024-01-02":
            raise ValueError("x")

    nbb.launch_backfill(planned, partitions="2024-01-01,2024-01-02", instance=store).wait(timeout=10)

    def written():
        return store.query(
            "SELECT (SELECT COUNT(*) FROM runs), (SELECT COUNT(*) FROM backfills), (SELECT COUNT(*) FROM events)"
        )

    before = written()
    the_plan = nbb.launch_backfill(planned, missing_only=True, dry_run=True, instance=store)
    assert written() == before
    assert (
        the_plan.loc["2024-01-01", "reason"] == "already succeeded" and the_plan.loc["2024-01-01", "action"] == "skip"
    )
    assert the_plan.loc["2024-01-02", "reason"] == "failed" and the_plan.loc["2024-01-02", "action"] == "launch"
    assert the_plan.loc["2024-01-05", "reason"] == "missing" and the_plan.loc["2024-01-05", "action"] == "launch"
    failed = nbb.launch_backfill(planned, failed_only=True, instance=store)
    failed.wait(timeout=10)
    assert list(failed.runs_df().index) == ["2024-01-02"]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"coordinator": "fifo"}, nbb.InvalidOptionError, ["'fifo'", "'default'", "'queued'"]),
        ({"coordinator": "queued", "max_concurrent": 0}, nbb.InvalidOptionError, ["max_concurrent", "0"]),
        ({"max_concurrent": 2}, nbb.InvalidOptionError, ["coordinator='queued'"]),
        ({"coordinator": "queued", "tag_concurrency_limits": [{"key": "a"}]}, nbb.InvalidOptionError, ["'limit'"]),
        (
            {"coordinator": "queued", "tag_concurrency_limits": [{"key": "a", "limit": -1}]},
            nbb.InvalidOptionError,
            ["-1"],
        ),
        ({"executor": "gpu"}, nbb.InvalidOptionError, ["'gpu'", "'thread'", "'process'"]),
        ({"max_workers": "4"}, nbb.InvalidOptionError, ["max_workers", "'4'"]),
        ({"order": "random"}, nbb.InvalidOptionError, ["'random'", "'asc'", "'desc'"]),
        ({"retries": -2}, nbb.InvalidOptionError, ["-2"]),
        ({"tags": {"a": 1}}, nbb.InvalidOptionError, ["'a': 1"]),
        ({"partitions": "2024-13-01"}, nbb.SelectionError, ["'2024-13-01'"]),
        ({"from_": "2024-01-09", "to": "2024-01-02"}, nbb.SelectionError, ["comes after"]),
        ({}, nbb.SelectionError, ["no partitions selected"]),
        ({"all": True, "missing_only": True, "failed_only": True}, nbb.SelectionError, ["not both"]),
    ],
)
def test_bad_input_raises_a_clear_error_and_writes_nothing(store, kwargs, error, words):
    @nbb.job(partitions_def=DAILY)
    def never(context):
        raise AssertionError("must not run")

    with pytest.raises(error) as info:
        nbb.launch_backfill(never, instance=store, **kwargs)
    for word in words:
        assert word in str(info.value)
    assert store.query("SELECT COUNT(*) FROM backfills")[0][0] == 0
    assert store.query("SELECT COUNT(*) FROM runs")[0][0] == 0


def test_not_a_job(store):
    with pytest.raises(nbb.InvalidOptionError, match="job must be a Job"):
        nbb.launch_backfill(lambda context: None, all=True, instance=store)


def test_unknown_backfill_id_names_it(store):
    @nbb.job(partitions_def=DAILY)
    def known(context):
        pass

    bf = nbb.launch_backfill(known, partitions="2024-01-01", instance=store)
    bf.wait(timeout=10)
    typo = bf.id[:-1] + ("x" if bf.id[-1] != "x" else "y")
    with pytest.raises(nbb.UnknownBackfillError, match=f"'{typo}'.*did you mean '{bf.id}'"):
        nbb.get_backfill(typo, instance=store)
    assert nbb.get_backfill(bf.id, instance=store).status == "COMPLETED_SUCCESS"
    assert list(nbb.list_backfills(instance=store).index) == [bf.id]


def test_queued_coordinator_respects_max_concurrent_live(store):
    lock = threading.Lock()
    running = [0]
    peak = []

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition([str(i) for i in range(24)]))
    def counted(context):
        with lock:
            running[0] += 1
            peak.append(running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    bf = nbb.launch_backfill(counted, all=True, coordinator="queued", max_concurrent=1, max_workers=4, instance=store)
    deadline = time.time() + 10
    while bf.counts()["SUCCESS"] < 6 and time.time() < deadline:
        time.sleep(0.02)
    assert max(peak) == 1
    first = len(peak)
    bf.set_max_concurrent(3)
    assert bf.wait(timeout=20) == "COMPLETED_SUCCESS"
    assert max(peak[first:]) == 3
    assert bf.record.options["max_concurrent"] == 3


def test_max_concurrent_set_live_on_the_default_coordinator(store):
    lock = threading.Lock()
    running = [0]
    peak = []

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition([str(i) for i in range(30)]))
    def counted_default(context):
        with lock:
            running[0] += 1
            peak.append(running[0])
        time.sleep(0.03)
        with lock:
            running[0] -= 1

    bf = nbb.launch_backfill(counted_default, all=True, max_workers=4, instance=store)
    bf.set_max_concurrent(1)
    first = len(peak)
    assert bf.wait(timeout=20) == "COMPLETED_SUCCESS"
    assert max(peak[first + 4 :]) == 1  # once the runs already started are done, one at a time
    assert bf.record.options["coordinator"] == "queued"


def test_tag_limits_hold_back_only_matching_runs(store):
    multi = nbb.MultiPartitionsDefinition(
        {
            "day": nbb.StaticPartitionsDefinition([str(i) for i in range(6)]),
            "region": nbb.StaticPartitionsDefinition(["eu", "us"]),
        }
    )
    lock = threading.Lock()
    active: dict[str, int] = {"eu": 0, "us": 0}
    peaks: dict[str, int] = {"eu": 0, "us": 0}

    @nbb.job(partitions_def=multi)
    def regional(context):
        region = context.partition_keys_by_dimension["region"]
        with lock:
            active[region] += 1
            peaks[region] = max(peaks[region], active[region])
        time.sleep(0.05)
        with lock:
            active[region] -= 1

    limits = [{"key": "nb_backfill/partition/region", "value": "eu", "limit": 1}]
    bf = nbb.launch_backfill(
        regional, all=True, coordinator="queued", max_concurrent=4, tag_concurrency_limits=limits, instance=store
    )
    assert bf.wait(timeout=20) == "COMPLETED_SUCCESS"
    assert peaks["eu"] == 1 and peaks["us"] >= 2


def test_per_value_tag_limit(store):
    multi = nbb.MultiPartitionsDefinition(
        {
            "day": nbb.StaticPartitionsDefinition([str(i) for i in range(4)]),
            "region": nbb.StaticPartitionsDefinition(["eu", "us", "ap"]),
        }
    )
    lock = threading.Lock()
    active: dict[str, int] = {}
    peak = [0]

    @nbb.job(partitions_def=multi)
    def per_region(context):
        region = context.partition_keys_by_dimension["region"]
        with lock:
            active[region] = active.get(region, 0) + 1
            peak[0] = max(peak[0], max(active.values()))
        time.sleep(0.03)
        with lock:
            active[region] -= 1

    limits = [{"key": "nb_backfill/partition/region", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    bf = nbb.launch_backfill(
        per_region, all=True, coordinator="queued", max_concurrent=6, tag_concurrency_limits=limits, instance=store
    )
    assert bf.wait(timeout=20) == "COMPLETED_SUCCESS"
    assert peak[0] == 1


def test_priority_tag_goes_first_under_a_shared_limit(store):
    gate = threading.Event()
    order = []

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["a1", "a2", "a3", "b1", "b2"]))
    def pooled(context):
        order.append(context.partition_key)
        if context.partition_key == "a1":
            gate.wait(10)

    limits = [{"key": "pool", "value": "db", "limit": 1}]
    low = nbb.launch_backfill(
        pooled,
        partitions="a1,a2,a3",
        tags={"pool": "db"},
        coordinator="queued",
        tag_concurrency_limits=limits,
        instance=store,
    )
    while not order:
        time.sleep(0.01)
    high = nbb.launch_backfill(
        pooled,
        partitions="b1,b2",
        tags={"pool": "db", "priority": "10"},
        coordinator="queued",
        tag_concurrency_limits=limits,
        instance=store,
    )
    time.sleep(0.2)
    gate.set()
    assert high.wait(timeout=10) == "COMPLETED_SUCCESS" and low.wait(timeout=10) == "COMPLETED_SUCCESS"
    assert order == ["a1", "b1", "b2", "a2", "a3"]


def test_order_desc_runs_newest_first(store):
    order = []

    @nbb.job(partitions_def=DAILY)
    def ordered(context):
        order.append(context.partition_key)

    nbb.launch_backfill(ordered, from_="2024-01-01", to="2024-01-04", order="desc", max_workers=1, instance=store).wait(
        timeout=10
    )
    assert order == ["2024-01-04", "2024-01-03", "2024-01-02", "2024-01-01"]


def test_cancel_stops_queued_and_running_runs(store):
    started = threading.Event()

    @nbb.job(partitions_def=DAILY)
    def long(context):
        started.set()
        for _ in range(500):
            context.check_canceled()
            time.sleep(0.01)

    bf = nbb.launch_backfill(long, all=True, max_workers=1, instance=store)
    assert started.wait(5)
    bf.cancel()
    assert bf.wait(timeout=10) == "CANCELED"
    counts = bf.counts()
    assert counts["CANCELED"] == 10 and counts["SUCCESS"] == 0
    # the running step stopped where it called context.check_canceled(), and says so; the others never ran
    steps = bf.steps_df()["long"]
    assert steps["2024-01-01"] == "CANCELED" and (steps.iloc[1:] == "PENDING").all()
    first = bf.run("2024-01-01").run_id
    said = store.query("SELECT status, error FROM steps WHERE run_id = ?", (first,))
    assert said == [("CANCELED", "canceled where the step called context.check_canceled()")]


def test_cancel_between_steps(store):
    started = threading.Event()
    release = threading.Event()

    @nbb.step
    def first():
        started.set()
        release.wait(5)

    @nbb.step
    def second(first):
        raise AssertionError("must not run after cancel")

    bf = nbb.launch_backfill(nbb.Job("two_steps", [first, second], DAILY), partitions="2024-01-01", instance=store)
    assert started.wait(5)
    bf.cancel()
    release.set()
    assert bf.wait(timeout=10) == "CANCELED"
    assert bf.steps_df().loc["2024-01-01", "second"] == "CANCELED"  # never ran: the cancel stopped the run before it


def test_pause_and_resume(store):
    @nbb.job(partitions_def=DAILY)
    def paced(context):
        time.sleep(0.05)

    bf = nbb.launch_backfill(paced, all=True, coordinator="queued", max_concurrent=1, instance=store)
    time.sleep(0.12)
    bf.pause()
    assert bf.status == "PAUSED"
    time.sleep(0.15)
    done_while_paused = bf.counts()["SUCCESS"]
    time.sleep(0.3)
    assert bf.counts()["SUCCESS"] == done_while_paused < 10
    bf.resume()
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"


def test_job_retries_with_backoff_record_every_attempt(store):
    attempts = []

    @nbb.job(partitions_def=DAILY, retries=nbb.RetryPolicy(max_retries=2, delay=0.05))
    def flaky(context):
        attempts.append(context.attempt)
        if context.attempt < 3:
            raise ConnectionError(f"attempt {context.attempt}")

    bf = nbb.launch_backfill(flaky, partitions="2024-01-01", instance=store)
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"
    assert attempts == [1, 2, 3]
    run = bf.runs_df().iloc[0]
    assert run["attempt"] == 3 and run["status"] == "SUCCESS"
    attempts = bf.attempts_df()  # every attempt is recorded
    assert list(zip(attempts["status"], attempts["attempt"])) == [("FAILURE", 1), ("FAILURE", 2), ("SUCCESS", 3)]
    assert attempts["error"].iloc[0].endswith("ConnectionError: attempt 1\n")


def test_retry_failed(store):
    broken = {"2024-01-02"}

    @nbb.job(partitions_def=DAILY)
    def fixable(context):
        if context.partition_key in broken:
            raise ValueError("broken")

    bf = nbb.launch_backfill(fixable, from_="2024-01-01", to="2024-01-03", instance=store)
    assert bf.wait(timeout=10) == "COMPLETED_FAILED"
    broken.clear()
    bf.retry_failed()
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"
    assert bf.runs_df().loc["2024-01-02", "attempt"] == 2


def test_dynamic_partitions(store):
    customers = nbb.DynamicPartitionsDefinition("customers", instance=store)
    customers.add_partitions(["acme", "globex"])
    customers.add_partitions(["initech", "acme"])
    assert customers.get_partition_keys() == ["acme", "globex", "initech"]
    customers.delete_partition("globex")
    assert customers.get_partition_keys() == ["acme", "initech"]
    with pytest.raises(nbb.UnknownPartitionError):
        customers.delete_partition("globex")

    @nbb.job(partitions_def=customers)
    def per_customer(context):
        pass

    assert nbb.launch_backfill(per_customer, all=True, instance=store).wait(timeout=10) == "COMPLETED_SUCCESS"


def test_storage_location(tmp_path, monkeypatch):
    monkeypatch.delenv("NB_BACKFILL_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert nbb.get_instance().path == tmp_path / ".nb_backfill" / "nb_backfill.db"
    monkeypatch.setenv("NB_BACKFILL_HOME", str(tmp_path / "elsewhere"))
    store = nbb.get_instance()
    assert store.path == tmp_path / "elsewhere" / "nb_backfill.db"
    assert store.query("PRAGMA journal_mode")[0][0] == "wal"
    assert store.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    store = nbb.Instance(tmp_path / "s")
    with store.transaction() as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(nbb.NbBackfillError, match="schema version 99"):
        nbb.Instance(tmp_path / "s")


def test_process_executor_runs_notebook_lambdas_and_survives_a_dying_worker(store):
    import os

    parts = nbb.StaticPartitionsDefinition(["a", "b", "dies", "c"])
    offset = 10

    @nbb.step
    def compute(context):
        if context.partition_key == "dies":
            os._exit(3)
        print(f"pid {os.getpid()} computing {context.partition_key}")
        return (lambda x: x + offset)(len(context.partition_key))

    @nbb.step
    def check(compute):
        assert compute > offset

    job = nbb.Job("in_processes", [compute, check], parts)
    bf = nbb.launch_backfill(job, all=True, executor="process", max_workers=2, instance=store)
    assert bf.wait(timeout=60) == "COMPLETED_FAILED"
    runs = bf.runs_df()
    assert list(runs["status"]) == ["SUCCESS", "SUCCESS", "FAILURE", "SUCCESS"]
    assert "worker process died (exit code 3)" in bf.error("dies")
    assert f"pid {os.getpid()}" not in bf.logs("a") and "computing a" in bf.logs("a")
    assert bf.steps_df().loc["c", "check"] == "SUCCESS"


def test_cancel_terminates_process_runs(store):
    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["x", "y", "z"]))
    def stuck(context):
        import time as t

        t.sleep(60)

    bf = nbb.launch_backfill(stuck, all=True, executor="process", max_workers=1, instance=store)
    deadline = time.time() + 30
    while bf.counts()["STARTED"] == 0 and time.time() < deadline:
        time.sleep(0.05)
    started = time.time()
    bf.cancel()
    assert bf.wait(timeout=20) == "CANCELED"
    assert time.time() - started < 10
    assert bf.counts()["CANCELED"] == 3
