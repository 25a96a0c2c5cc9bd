"""The dask executor against a real LocalCluster of two worker processes (shared by the module):
statuses and logs come back live, a killed worker fails only its run, cancel, pause and the
queued coordinator's limit hold on the cluster, notebook code travels, and the CLI drives it."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

import nb_backfill as nbb
from nb_backfill.errors import InvalidOptionError
from nb_backfill.executors import dask as dask_executor

distributed = pytest.importorskip("distributed")
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
MARKS = "NBB_TEST_MARKS"


@pytest.fixture(scope="module")
def cluster():
    local = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
    )
    yield local.scheduler_address
    local.close()


@pytest.fixture
def store(tmp_path):
    return nbb.get_instance(tmp_path / "store")


def _mark(folder: str, key: str, what: str = "") -> None:
    """A worker notes that it executed `key` (one file a run), with its pid."""
    Path(folder, f"{key}-{time.time_ns()}").write_text(f"{os.getpid()} {what}")


def _marks(folder: Path, key: str) -> list[str]:
    return [p.read_text() for p in folder.glob(f"{key}-*")]


def _job(name, keys, step, **kw):
    return nbb.job(partitions_def=nbb.StaticPartitionsDefinition(keys), name=name, **kw)(step)


def _marking(name: str, keys: list[str], folder: Path, seconds: float, slow: str | None = None):
    """A job whose step marks its partition as executed, then sleeps (a minute for `slow`)."""
    where = str(folder)

    def work(context):
        _mark(where, context.partition_key)
        time.sleep(60 if context.partition_key == slow else seconds)

    return _job(name, keys, work)


def _launch(job, cluster, store, **options):
    return nbb.launch_backfill(job, all=True, executor="dask", dask_address=cluster, instance=store, **options)


def _wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_a_multi_step_backfill_with_a_failure_and_a_retry(cluster, store, tmp_path):
    folder = str(tmp_path)

    @nbb.step
    def extract(context):
        return context.partition_key

    @nbb.step
    def transform(context, extract):
        _mark(folder, context.partition_key, f"attempt {context.attempt}")
        if (extract == "b" and context.attempt == 1) or extract == "c":
            raise ValueError(f"bad {extract}")
        print("transformed", extract)
        return extract.upper()

    @nbb.step
    def load(context, transform):
        return transform

    job = nbb.Job("etl", [extract, transform, load], nbb.StaticPartitionsDefinition(["a", "b", "c"]), retries=1)
    bf = _launch(job, cluster, store)
    assert bf.wait(timeout=120) == "COMPLETED_FAILED"
    runs = bf.runs_df()
    assert runs["status"].to_dict() == {"a": "SUCCESS", "b": "SUCCESS", "c": "FAILURE"}
    assert runs["attempt"].to_dict() == {"a": 1, "b": 2, "c": 2}
    assert "ValueError: bad c" in runs.loc["c", "error"]
    steps = bf.steps_df()
    assert steps.loc["c", "transform"] == "FAILURE" and steps.loc["c", "load"] == "SKIPPED"
    assert "transformed a" in bf.logs("a")
    assert bf.results(step="extract") == {"a": "a", "b": "b", "c": "c"}  # kept by the workers
    assert bf.results() == {"a": "A", "b": "B"}
    assert len(_marks(tmp_path, "a")) == 1 and len(_marks(tmp_path, "b")) == 2
    assert bf.record.options["dask_address"] == cluster


def test_statuses_and_logs_come_back_while_a_run_executes(cluster, store):
    def slow(context):
        print("begun", flush=True)
        time.sleep(2.0)

    bf = nbb.launch_backfill(_job("slow", ["x"], slow), all=True, executor="dask", dask_address=cluster, instance=store)
    run = _wait_for(lambda: store.run_of(bf.id, "x").status == "STARTED" and store.run_of(bf.id, "x"))
    assert run.end_time is None
    assert _wait_for(lambda: "begun" in bf.logs("x"), timeout=2.0)  # the log, readable during the run
    assert bf.steps_df().loc["x", "slow"] == "RUNNING"
    assert bf.wait(timeout=60) == "COMPLETED_SUCCESS"


def test_a_killed_worker_fails_only_its_run(cluster, store, tmp_path):
    keys = [f"k{i}" for i in range(8)]
    bf = _launch(_marking("killed", keys, tmp_path, 0.2, slow="k2"), cluster, store)
    pid = int(_wait_for(lambda: _marks(tmp_path, "k2"))[0].split()[0])
    _wait_for(lambda: store.run_of(bf.id, "k2").status == "STARTED")
    os.kill(pid, signal.SIGKILL)
    assert bf.wait(timeout=120) == "COMPLETED_FAILED"
    runs = bf.runs_df()
    assert runs.loc["k2", "status"] == "FAILURE"
    assert "Dask worker" in runs.loc["k2", "error"] and "died" in runs.loc["k2", "error"]
    assert (runs.drop(index="k2")["status"] == "SUCCESS").all()
    assert bf.steps_df().loc["k2", "work"] == "FAILURE"  # no step left RUNNING
    assert all(len(_marks(tmp_path, key)) == 1 for key in keys)  # nothing ran twice
    with distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)  # the nanny's new one, for the tests after this


def test_cancel_mid_backfill(cluster, store, tmp_path):
    keys = [f"c{i:02d}" for i in range(30)]
    bf = _launch(_marking("cancel", keys, tmp_path, 0.3), cluster, store)
    _wait_for(lambda: bf.counts()["SUCCESS"] >= 2)
    bf.cancel()
    assert bf.wait(timeout=60) == "CANCELED"
    counts = bf.counts()
    assert counts["CANCELED"] > 0 and counts["QUEUED"] == counts["STARTED"] == counts["STARTING"] == 0
    executed = {key for key in keys if _marks(tmp_path, key)}
    statuses = bf.runs_df()["status"]
    assert set(statuses[statuses == "SUCCESS"].index) <= executed
    time.sleep(0.5)  # a run taken back never begins later
    assert {key for key in keys if _marks(tmp_path, key)} == executed
    assert "RUNNING" not in set(bf.steps_df()["work"])


def test_pause_holds_new_runs_and_resume_finishes_each_once(cluster, store, tmp_path):
    keys = [f"p{i:02d}" for i in range(12)]
    bf = _launch(_marking("pause", keys, tmp_path, 0.2), cluster, store)
    _wait_for(lambda: bf.counts()["SUCCESS"] >= 2)
    bf.pause()
    time.sleep(0.6)  # the runs that were running finish
    executed = sum(len(_marks(tmp_path, key)) for key in keys)
    time.sleep(0.8)
    assert sum(len(_marks(tmp_path, key)) for key in keys) == executed < len(keys)
    bf.resume()
    assert bf.wait(timeout=60) == "COMPLETED_SUCCESS"
    assert all(len(_marks(tmp_path, key)) == 1 for key in keys)


def test_the_queued_coordinators_limit_holds_on_the_cluster(cluster, store):
    def work(context):
        time.sleep(0.15)

    keys = [f"q{i}" for i in range(6)]
    bf = nbb.launch_backfill(
        _job("queued", keys, work),
        all=True,
        executor="dask",
        dask_address=cluster,
        coordinator="queued",
        max_concurrent=1,
        instance=store,
    )
    assert bf.wait(timeout=60) == "COMPLETED_SUCCESS"
    spans = sorted(zip(bf.runs_df()["start_time"], bf.runs_df()["end_time"]))
    most = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert most == 1


def test_notebook_code_travels_to_the_workers(cluster, store):
    namespace = {"__name__": "__main__", "nbb": nbb}
    exec(
        "double = lambda x: 2 * x\n"
        "@nbb.job(partitions_def=nbb.StaticPartitionsDefinition(['1', '2']), name='notebook')\n"
        "def notebook(context):\n"
        "    print('twice', double(int(context.partition_key)))\n",
        namespace,
    )
    bf = nbb.launch_backfill(namespace["notebook"], all=True, executor="dask", dask_address=cluster, instance=store)
    assert bf.wait(timeout=60) == "COMPLETED_SUCCESS"
    assert "twice 4" in bf.logs("2")


def test_a_client_passed_in_is_used_and_its_address_kept(cluster, store):
    with distributed.Client(cluster, set_as_default=False) as client:
        bf = nbb.launch_backfill(
            _job("client", ["a"], lambda context: None), all=True, executor="dask", dask_client=client, instance=store
        )
        assert bf.wait(timeout=60) == "COMPLETED_SUCCESS"
    assert bf.record.options["dask_address"] == cluster


def test_the_cli_runs_on_dask(cluster, tmp_path):
    (tmp_path / "jobs.py").write_text(
        "import nb_backfill as nbb\n"
        "@nbb.job(partitions_def=nbb.StaticPartitionsDefinition(['a', 'b', 'c']))\n"
        "def cli_job(context):\n"
        "    print('on', context.partition_key)\n"
    )
    script = Path(sys.executable).with_name("nb-backfill")
    result = subprocess.run(
        [str(script), "job", "backfill", "-f", "jobs.py", "-p", "cli_job", "--executor", "dask"]
        + ["--dask-address", cluster, "--noprompt"],
        cwd=tmp_path,
        env={**os.environ, "NB_BACKFILL_HOME": str(tmp_path / "store")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    listing = nbb.list_backfills(instance=tmp_path / "store")
    assert listing["succeeded"].iloc[0] == 3


def test_resources_are_checked_at_launch_and_runs_no_worker_offers_fail(cluster, store, monkeypatch):
    job = _job("gpu", ["a"], lambda context: None, tags={"dask/resources": "GPU"})
    with pytest.raises(InvalidOptionError, match=r"tag 'dask/resources' must name Dask worker resources.*'GPU'"):
        _launch(job, cluster, store)
    assert len(nbb.list_backfills(instance=store)) == 0
    monkeypatch.setattr(dask_executor, "NO_WORKER_LIMIT", 0.5)
    job = _job("gpu", ["a"], lambda context: None, tags={"dask/resources": '{"GPU": 1}'})
    bf = _launch(job, cluster, store)
    assert bf.wait(timeout=60) == "COMPLETED_FAILED"
    assert "needs resources {'GPU': 1.0}" in bf.runs_df().loc["a", "error"]


def test_without_the_extra_dask_is_one_clear_error_and_writes_nothing(store, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails, as when it is missing
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else find_spec(name, *a)
    )
    job = _job("extra", ["a"], lambda context: None)
    with pytest.raises(InvalidOptionError, match=r'pip install "nb-backfill\[dask\]"'):
        nbb.launch_backfill(job, all=True, executor="dask", instance=store)
    assert len(nbb.list_backfills(instance=store)) == 0


def test_a_dask_address_needs_the_dask_executor(store):
    with pytest.raises(InvalidOptionError, match=r"dask_address .* for executor='dask'.*executor='thread'"):
        nbb.launch_backfill(
            _job("addr", ["a"], lambda context: None), all=True, dask_address="tcp://x:1", instance=store
        )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_processes(address: str) -> list[subprocess.Popen]:
    """A scheduler at `address` and one worker, each a process of its own (so the scheduler can be killed)."""
    dask = str(Path(sys.executable).with_name("dask"))
    port = address.rsplit(":", 1)[1]
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"]
    worker = [dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
    processes = [subprocess.Popen(scheduler, stderr=subprocess.DEVNULL)]
    processes.append(subprocess.Popen(worker, stderr=subprocess.DEVNULL))
    with distributed.Client(address, timeout=30, set_as_default=False) as client:
        client.wait_for_workers(1, timeout=30)
    return processes


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.wait()


def test_a_lost_scheduler_fails_the_unfinished_runs_and_resume_finishes(store, tmp_path, monkeypatch):
    monkeypatch.setattr(dask_executor, "LOST_AFTER", 1.0)
    address = f"tcp://127.0.0.1:{_free_port()}"
    job = _marking("lost", [f"l{i:02d}" for i in range(20)], tmp_path, 0.3)
    processes = _cluster_processes(address)
    try:
        bf = _launch(job, address, store)
        _wait_for(lambda: bf.counts()["SUCCESS"] >= 2)
        processes[0].kill()  # the scheduler
        assert bf.wait(timeout=60) == "COMPLETED_FAILED"
    finally:
        _stop(processes)
    runs = bf.runs_df()
    lost = runs[runs["status"] == "FAILURE"]
    assert len(lost) and lost["error"].str.contains("lost the connection to the Dask scheduler").all()
    assert set(runs["status"]) == {"SUCCESS", "FAILURE"}
    assert "RUNNING" not in set(bf.steps_df()["work"])
    processes = _cluster_processes(address)  # the cluster is back, at the address the backfill keeps
    try:
        nbb.resume_backfill(bf.id, job=job, instance=store)
        assert bf.wait(timeout=60) == "COMPLETED_SUCCESS"
    finally:
        _stop(processes)


def test_without_an_address_a_local_cluster_is_started_with_its_dashboard_and_closed_after(store):
    import urllib.request

    def work(context):
        time.sleep(1.0)

    bf = nbb.launch_backfill(_job("own", ["a"], work), all=True, executor="dask", max_workers=1, instance=store)
    options = bf.record.options
    assert options["dask_address"] is None  # its own cluster: a resume starts a new one
    link = options["dask_dashboard"]
    assert link.startswith("http://")
    with urllib.request.urlopen(link, timeout=10) as page:  # served while the backfill runs
        assert page.status == 200
    state = bf.widget()._backfill_state(bf.record)
    assert state["executor"] == "dask" and state["dashboard"] == link
    assert bf.wait(timeout=60) == "COMPLETED_SUCCESS"
    _wait_for(lambda: _refused(link), timeout=20)  # closed after it


def _refused(link: str) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(link, timeout=2).close()
    except OSError:
        return True
    return False


def test_the_kernels_default_client_is_used(cluster, store):
    with distributed.Client(cluster):  # the default client, as a user's `Client()` in a cell
        bf = nbb.launch_backfill(
            _job("default", ["a"], lambda context: None), all=True, executor="dask", instance=store
        )
        assert bf.wait(timeout=60) == "COMPLETED_SUCCESS"
    assert bf.record.options["dask_address"] == cluster


def test_the_magic_runs_on_dask(cluster, tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    import nb_backfill.magic

    monkeypatch.setenv("NB_BACKFILL_HOME", str(tmp_path / "store"))
    shown: list[object] = []
    monkeypatch.setattr(nb_backfill.magic, "display", shown.append)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nb_backfill")
    shell.user_ns["magic_dask"] = _job("magic_dask", ["a", "b"], lambda context: None)
    try:
        shell.run_line_magic("backfill", f"-p magic_dask --all --executor dask --dask-address {cluster} --wait")
    finally:
        shell.user_ns.pop("magic_dask")
    bf = shown[-1]
    assert bf.status == "COMPLETED_SUCCESS" and bf.record.options["executor"] == "dask"


@pytest.mark.parametrize("seed", range(3))
def test_random_control_never_runs_a_partition_twice_nor_leaves_one_stuck(cluster, store, tmp_path, seed):
    """Pause, resume and max_concurrent at random moments, then resume (or cancel) to the end."""
    import random

    rng = random.Random(seed)
    keys = [f"r{i:02d}" for i in range(60)]  # at least 1 s of work at 3 at once: longer than the actions
    bf = _launch(_marking("random", keys, tmp_path, 0.05), cluster, store, coordinator="queued", max_concurrent=2)
    for _ in range(6):
        time.sleep(rng.uniform(0, 0.15))
        action = rng.choice(["pause", "resume", "limit"])
        if action == "limit":
            bf.set_max_concurrent(rng.randint(1, 3))
        elif bf.status in ("REQUESTED", "PAUSED"):
            getattr(bf, action)()
    if seed == 2:
        bf.cancel()
        assert bf.wait(timeout=60) == "CANCELED"
    else:
        if bf.status == "PAUSED":
            bf.resume()
        assert bf.wait(timeout=60) == "COMPLETED_SUCCESS"
    runs = bf.runs_df()
    executed = {key: len(_marks(tmp_path, key)) for key in keys}
    assert max(executed.values()) <= 1  # nothing ran twice
    assert all(executed[key] == 1 for key in runs.index[runs["status"] == "SUCCESS"])
    assert set(runs["status"]) <= {"SUCCESS", "CANCELED"}
    assert "RUNNING" not in set(bf.steps_df()["work"])
