"""Unchecked and raw errors: bad input gets one clear nb_backfill error naming the bad value and
what would be valid, and writes nothing; faults of the store and of our own machinery (worker
processes, a script without a main guard) are surfaced in words, never a hang or a raw traceback.

Where the point is about processes, the tests run real ones.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

import nb_backfill as nbb
from nb_backfill import storage as storage_module
from nb_backfill.engine import Engine
from nb_backfill.executors.process import WORKER_NAME, ProcessExecutor

KEYS = ["t1", "t2", "t3"]
PARTS = nbb.StaticPartitionsDefinition(KEYS)
SURROGATE = b"caf\xe9".decode("utf-8", "surrogateescape")


@pytest.fixture
def store(tmp_path):
    return nbb.get_instance(tmp_path / "store")


@pytest.fixture
def quick():
    @nbb.job(partitions_def=PARTS)
    def quick(context):
        pass

    return quick


def _nothing_written(store) -> None:
    assert store.list_backfills() == []
    assert store.query("SELECT COUNT(*) FROM runs")[0][0] == 0


def _wait_until(predicate, timeout: float = 15.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- 1. max_workers


def test_max_workers_beyond_the_maximum_is_refused_before_anything_is_written(store, quick):
    threads = threading.active_count()
    with pytest.raises(nbb.InvalidOptionError) as raised:
        nbb.launch_backfill(quick, all=True, max_workers=100_000, instance=store)
    message = str(raised.value)
    assert "max_workers=100,000" in message and "at most 256" in message
    _nothing_written(store)
    assert threading.active_count() == threads  # no executor threads, no engine started
    assert Engine.existing(store) is None
    with pytest.raises(nbb.InvalidOptionError, match=r"max_workers=65 .*process executor.*at most 64"):
        nbb.launch_backfill(quick, all=True, executor="process", max_workers=65, instance=store)
    _nothing_written(store)


def test_max_workers_above_the_partition_count_is_capped_at_it(store):
    release = threading.Event()

    @nbb.job(partitions_def=PARTS)
    def held(context):
        release.wait(10)

    try:
        bf = nbb.launch_backfill(held, all=True, max_workers=200, instance=store)
        executor = Engine.existing(store)._active[bf.id].executor
        assert executor.max_workers == len(KEYS)
        _wait_until(lambda: bf.counts()["STARTED"] == len(KEYS), what="every run to start")
    finally:
        release.set()
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"
    assert bf.record.options["max_workers"] == 200  # what was asked is kept; the pool is what is needed


# --- 2. tag concurrency limit of 0


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_a_tag_limit_that_could_never_start_a_run_is_refused(store, quick, limit):
    with pytest.raises(nbb.InvalidOptionError) as raised:
        nbb.launch_backfill(
            quick,
            all=True,
            coordinator="queued",
            tag_concurrency_limits=[{"key": "team", "limit": limit}],
            instance=store,
        )
    message = str(raised.value)
    assert "the 'limit' of tag 'team' must be a whole number >= 1" in message and f"got {limit!r}" in message
    _nothing_written(store)


# --- 3. unbalanced quotes


@pytest.mark.parametrize("text", ['t1,"t2', '"t1'])
def test_an_unbalanced_quote_is_a_selection_error(store, quick, text):
    with pytest.raises(nbb.SelectionError) as raised:
        nbb.launch_backfill(quick, partitions=text, instance=store)
    message = str(raised.value)
    assert repr(text) in message and "close every quote" in message
    _nothing_written(store)


# --- 4. values of the wrong kind


NOT_TEXT = ["'caf\\udce9'", "is not valid text", "decode the name with the right encoding"]
NOT_STRINGS = ["partitions must be a string or a list of strings"]


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"partitions": [SURROGATE]}, nbb.SelectionError, NOT_TEXT),
        ({"partitions": f"t1,{SURROGATE}"}, nbb.SelectionError, NOT_TEXT),
        ({"from_": SURROGATE}, nbb.SelectionError, NOT_TEXT),
        ({"from_": "t1", "to": SURROGATE}, nbb.SelectionError, NOT_TEXT),
        ({"partitions": b"t1"}, nbb.SelectionError, [*NOT_STRINGS, "got b't1' (bytes)"]),
        ({"partitions": bytearray(b"t1")}, nbb.SelectionError, [*NOT_STRINGS, "(bytearray)"]),
        ({"partitions": ["t1", 2]}, nbb.SelectionError, ["partition keys must be strings, got '2'"]),
        ({"all": True, "instance": 123}, nbb.InvalidOptionError, ["got 123 (int)", "the path of a store's folder"]),
    ],
)
def test_values_of_the_wrong_kind_get_one_clear_error(store, quick, kwargs, error, words):
    with pytest.raises(nbb.NbBackfillError) as raised:
        nbb.launch_backfill(quick, **{"instance": store, **kwargs})
    assert type(raised.value) is error, repr(raised.value)
    assert not isinstance(raised.value, (TypeError, UnicodeError))
    message = str(raised.value)
    for word in words:
        assert word in message, message
    message.encode("utf-8")  # the message itself can be printed anywhere
    _nothing_written(store)


def test_a_surrogate_key_is_refused_by_a_dynamic_definition_too(store):
    dynamic = nbb.DynamicPartitionsDefinition("files", instance=store)
    dynamic.add_partitions(["a"])

    @nbb.job(partitions_def=dynamic)
    def files(context):
        pass

    with pytest.raises(nbb.SelectionError, match="not valid text"):
        nbb.launch_backfill(files, partitions=[SURROGATE], instance=store)
    _nothing_written(store)


# --- 5. '|' in a dynamic key of a multi definition


def test_a_pipe_in_a_dynamic_key_of_a_multi_definition_is_named_not_dropped(store):
    regions = nbb.DynamicPartitionsDefinition("regions", instance=store)
    regions.add_partitions(["eu", "us"])
    multi = nbb.MultiPartitionsDefinition({"region": regions, "color": nbb.StaticPartitionsDefinition(["red", "blue"])})
    assert multi.get_partition_keys() == ["red|eu", "red|us", "blue|eu", "blue|us"]

    @nbb.job(partitions_def=multi)
    def painted(context):
        pass

    regions.add_partitions(["us|west"])  # fine for the dynamic definition on its own...
    assert regions.get_partition_keys() == ["eu", "us", "us|west"]
    with pytest.raises(nbb.DefinitionError) as raised:  # ...but not as a dimension of a multi
        multi.get_partition_keys()
    message = str(raised.value)
    assert "'us|west'" in message and "'region'" in message
    assert "delete_partition('us|west')" in message
    with pytest.raises(nbb.DefinitionError, match="us\\|west"):
        multi.get_num_partitions()
    with pytest.raises(nbb.DefinitionError, match="us\\|west"):
        nbb.launch_backfill(painted, all=True, instance=store)
    _nothing_written(store)

    regions.delete_partition("us|west")  # the fix the message names
    bf = nbb.launch_backfill(painted, all=True, instance=store)
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS" and bf.counts()["SUCCESS"] == 4


# --- 6. store faults


def _store_file(tmp_path: Path, name: str) -> Path:
    home = tmp_path / name
    home.mkdir()
    return home / storage_module.DB_NAME


def _sqlite(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "fault, words",
    [
        ("garbage", ["is damaged or not an nb_backfill store", "move it away"]),
        ("sqlite without meta", ["has tables but no nb_backfill schema version", "move it away"]),
        ("missing meta row", ["has tables but no nb_backfill schema version", "move it away"]),
        ("bad schema value", ["unreadable schema version 'abc'", "move it away"]),
        ("schema 0", ["invalid schema version '0'", "move it away"]),
        ("newer schema", ["schema version 99", f"knows 1 to {storage_module.SCHEMA_VERSION}", "upgrade nb_backfill"]),
    ],
)
def test_a_store_that_cannot_be_used_is_one_storage_error_naming_it(tmp_path, quick, fault, words):
    path = _store_file(tmp_path, "store")
    if fault == "garbage":
        path.write_bytes(bytes(range(256)) * 64)
    elif fault == "sqlite without meta":
        _sqlite(path, "CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    else:
        value = {"missing meta row": None, "bad schema value": "abc", "schema 0": "0", "newer schema": "99"}[fault]
        insert = [f"INSERT INTO meta VALUES ('schema_version', '{value}')"] if value is not None else []
        _sqlite(path, *storage_module._V1, *insert)
    before = path.read_bytes()
    for attempt in (
        lambda: nbb.get_instance(path.parent),
        lambda: nbb.list_backfills(instance=path.parent),
        lambda: nbb.launch_backfill(quick, all=True, instance=str(path.parent)),
    ):
        with pytest.raises(nbb.StorageError) as raised:
            attempt()
        message = str(raised.value)
        assert repr(str(path)) in message
        for word in words:
            assert word in message, message
    assert path.read_bytes() == before  # a store we cannot use is left as it was
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_an_empty_file_is_initialised_as_a_new_store(tmp_path, quick):
    path = _store_file(tmp_path, "store")
    path.write_bytes(b"")  # a 0-byte file is a valid, empty SQLite database
    store = nbb.get_instance(path.parent)
    assert store.schema_version == storage_module.SCHEMA_VERSION
    bf = nbb.launch_backfill(quick, all=True, instance=store)
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"
    assert list(nbb.list_backfills(instance=store).index) == [bf.id]


def test_a_version_1_store_is_migrated_and_its_backfills_still_read(tmp_path, quick):
    path = _store_file(tmp_path, "store")
    t = 1_700_000_000.0
    runs = [
        ("old-r1", "t1", 0, "SUCCESS", "NULL"),
        ("old-r2", "t2", 1, "FAILURE", "'boom'"),
        ("old-r3", "t3", 2, "SUCCESS", "NULL"),
    ]
    _sqlite(
        path,
        *storage_module._V1,
        "INSERT INTO meta VALUES ('schema_version', '1')",
        f"INSERT INTO backfills VALUES ('old', 'quick', 'COMPLETED_FAILED', {t}, {t + 9}, {t + 9}, 3, '{{}}', "
        f"'{{\"team\": \"data\"}}', 'StaticPartitionsDefinition([''t1'', ''t2'', ''t3''])', NULL, NULL)",
        *(
            f"INSERT INTO runs VALUES ('{r}', 'old', 'quick', '{p}', {s}, '{status}', 1, {t}, {t + 1}, {t + 2}, {err}, NULL)"
            for r, p, s, status, err in runs
        ),
        *(
            f"INSERT INTO events (run_id, step, status, attempt, ts, message) VALUES ('{r}', NULL, '{e}', 1, {t + i}, "
            f"{err if e == status else 'NULL'})"
            for r, _, _, status, err in runs
            for i, e in enumerate(("STARTED", status), 1)
        ),
    )
    store = nbb.get_instance(path.parent)
    assert store.schema_version == storage_module.SCHEMA_VERSION
    bf = nbb.get_backfill("old", job=quick, instance=store)
    assert bf.status == "COMPLETED_FAILED" and bf.record.tags == {"team": "data"} and bf.record.error is None
    assert bf.counts()["SUCCESS"] == 2 and bf.counts()["FAILURE"] == 1
    assert bf.error("t2") == "boom"
    assert list(bf.runs_df()["status"]) == ["SUCCESS", "FAILURE", "SUCCESS"]
    attempts = bf.attempts_df()  # from the migrated change feed
    assert list(attempts["status"]) == ["SUCCESS", "FAILURE", "SUCCESS"] and attempts["start_time"].notna().all()
    assert list(nbb.list_backfills(instance=store).index) == ["old"]
    bf.retry_failed()  # the migrated store is written as any other
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"
    assert bf.runs_df().loc["t2", "attempt"] == 2
    assert len(sqlite3.connect(path).execute("SELECT * FROM commands").fetchall()) == 0


# A read-only store, for real: root writes anywhere, so the reader drops to user nobody. The
# interpreter lives where nobody may not look, so the reader imports first and drops after.
READ_ONLY_READER = textwrap.dedent(
    """
    import os, sys
    import nb_backfill as nbb
    import nb_backfill.executors.thread, nb_backfill.frames, pandas  # what it reads later, imported while it may
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    home = sys.argv[1]

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["a", "b"]))
    def ro(context):
        pass

    listing = nbb.list_backfills(instance=home)
    bf = nbb.get_backfill(listing.index[0], job=ro, instance=home)
    print("read", os.geteuid(), bf.status, bf.counts()["SUCCESS"], list(bf.runs_df()["status"]), flush=True)
    for what, attempt in [
        ("launch", lambda: nbb.launch_backfill(ro, all=True, instance=home)),
        ("retry", lambda: bf.retry_failed()),
        ("new-store", lambda: nbb.get_instance(os.path.join(home, "inner"))),
    ]:
        try:
            attempt()
            print(what, "no error")
        except nbb.NbBackfillError as error:
            print(what, f"{type(error).__name__}:", error)
    print("backfills", len(nbb.list_backfills(instance=home)))
    """
)


@pytest.mark.parametrize("held_open", [False, True], ids=["closed", "held-open-by-its-writer"])
def test_a_read_only_store_is_readable_and_refuses_writes(held_open):
    if os.geteuid() == 0:
        try:  # can this machine drop root at all?
            probe = subprocess.run([sys.executable, "-c", "import os; os.setgid(65534); os.setuid(65534)"], timeout=30)
        except OSError as error:
            pytest.skip(f"cannot run a process as user nobody: {error}")
        if probe.returncode != 0:
            pytest.skip("setuid to user nobody is not permitted here, so a read-only store cannot be tested for real")
    base = Path(tempfile.mkdtemp(prefix="nbb-readonly-"))  # not under pytest's tmp: nobody must reach it
    writer = None
    try:
        base.chmod(0o755)
        home = base / "store"
        make = textwrap.dedent(
            f"""
            import sys, time, nb_backfill as nbb
            @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["a", "b"]))
            def ro(context):
                pass
            bf = nbb.launch_backfill(ro, all=True, instance={str(home)!r})
            print(bf.wait(timeout=20), flush=True)
            if {held_open!r}:
                time.sleep(60)
            """
        )
        writer = subprocess.Popen([sys.executable, "-c", make], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "COMPLETED_SUCCESS"
        if not held_open:
            writer.wait(timeout=20)
        for file in home.iterdir():
            file.chmod(0o444)
        home.chmod(0o555)
        reader = subprocess.run(
            [sys.executable, "-c", READ_ONLY_READER, str(home)], capture_output=True, text=True, timeout=60, cwd=base
        )
        assert reader.returncode == 0, reader.stderr
        assert "Traceback" not in reader.stderr
        lines = dict(line.split(" ", 1) for line in reader.stdout.splitlines())
        assert lines["read"] == "65534 COMPLETED_SUCCESS 2 ['SUCCESS', 'SUCCESS']" or (
            os.geteuid() != 0 and lines["read"].endswith("COMPLETED_SUCCESS 2 ['SUCCESS', 'SUCCESS']")
        )
        where = repr(str(home / storage_module.DB_NAME))
        assert lines["launch"].startswith(f"StorageError: the nb_backfill store {where} is read-only")
        assert "make the folder writable or use another one with $NB_BACKFILL_HOME" in lines["launch"]
        assert lines["retry"].startswith("BackfillStateError: nothing to retry")  # known without writing anything
        assert lines["new-store"].startswith(
            f"StorageError: cannot create the nb_backfill store in {str(home / 'inner')!r}"
        )
        assert lines["backfills"] == "1"
    finally:
        if writer is not None:
            writer.kill()
            writer.wait()
        shutil.rmtree(base, ignore_errors=True)


# --- 7. a script that starts process workers without a main guard

UNGUARDED = """\
import sys
import nb_backfill as nbb

@nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["a", "b"]))
def work(context):
    pass

bf = nbb.launch_backfill(work, all=True, executor="process", instance=sys.argv[1])
print(bf.wait(timeout=30))
"""


def test_a_script_without_a_main_guard_is_refused_and_creates_no_backfill(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    store = tmp_path / "store"
    result = subprocess.run([sys.executable, str(script), str(store)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("nb_backfill.errors.InvalidOptionError: the process executor starts worker processes")
    assert (
        repr(str(script)) in last and 'line 8 (`bf = nbb.launch_backfill(work, all=True, executor="process", ' in last
    )
    assert 'put it under `if __name__ == "__main__":`' in last and "executor='thread'" in last
    assert last.endswith("nothing was launched")
    assert not store.exists()  # refused before the store is even opened

    guarded = tmp_path / "guarded.py"
    lines = UNGUARDED.splitlines()
    guarded.write_text(
        "\n".join(lines[:7] + ['if __name__ == "__main__":'] + ["    " + line for line in lines[7:]]) + "\n"
    )
    result = subprocess.run([sys.executable, str(guarded), str(store)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "COMPLETED_SUCCESS"
    listing = nbb.list_backfills(instance=store)
    assert len(listing) == 1 and listing["status"].iloc[0] == "COMPLETED_SUCCESS"  # no phantom backfills from workers


# --- 8. smaller points


def test_counts_name_run_statuses_only(store, quick):
    bf = nbb.launch_backfill(quick, all=True, instance=store)
    bf.wait(timeout=10)
    counts = bf.counts()
    assert "NOT_STARTED" not in counts
    assert list(counts) == [str(s) for s in nbb.RunStatus]
    assert counts["SUCCESS"] == 3 and sum(counts.values()) == 3


def test_runs_df_has_the_partition_only_as_its_index(store, quick):
    bf = nbb.launch_backfill(quick, all=True, instance=store)
    bf.wait(timeout=10)
    for frame in (bf.runs_df(), bf.attempts_df()):
        assert "partition" not in frame.columns
        assert frame.index.name == "partition" and list(frame.index) == KEYS


def test_attempts_df_shows_every_attempt_after_a_retry(store, tmp_path):
    flag = tmp_path / "fail"
    flag.touch()

    @nbb.job(partitions_def=PARTS)
    def flaky(context):
        if context.partition_key == "t2" and flag.exists():
            raise RuntimeError("boom")

    bf = nbb.launch_backfill(flaky, all=True, instance=store)
    assert bf.wait(timeout=10) == "COMPLETED_FAILED"
    flag.unlink()
    bf.retry_failed()
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"
    attempts = bf.attempts_df()
    t2 = attempts.loc[["t2"]]
    assert list(t2["attempt"]) == [1, 2]
    assert list(t2["status"]) == ["FAILURE", "SUCCESS"]
    assert "RuntimeError: boom" in t2["error"].iloc[0] and t2["error"].isna().iloc[1]
    assert t2["start_time"].notna().all() and t2["end_time"].notna().all()
    assert (t2["end_time"] >= t2["start_time"]).all()
    assert t2["start_time"].iloc[1] >= t2["end_time"].iloc[0]
    assert list(attempts.loc[["t1"]]["attempt"]) == [1]
    assert len(attempts) == 4


ORPHANS = textwrap.dedent(
    """
    import sys, time
    import nb_backfill as nbb

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition([f"p{i}" for i in range(4)]))
    def chatty(context):
        for _ in range(400):
            print("tick", flush=True)
            time.sleep(0.005)

    if __name__ == "__main__":
        bf = nbb.launch_backfill(chatty, all=True, executor="process", max_workers=2, instance=sys.argv[1])
        while bf.counts()["STARTED"] < 2:
            time.sleep(0.02)
        print("started", flush=True)
        bf.wait(timeout=60)
    """
)


def _children(pid: int) -> list[int]:
    """Child processes of `pid`, whichever of its threads started them."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_orphaned_workers_leave_quietly_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "orphans.py"
    script.write_text(ORPHANS)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "store")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout.readline().strip() == "started", parent.stderr.read()
        workers = _children(parent.pid)
        assert len(workers) >= 2
        os.kill(parent.pid, signal.SIGKILL)
        _, err = parent.communicate(timeout=20)  # the pipes close once every worker, which holds them too, exited
    finally:
        parent.kill()
    _wait_until(lambda: not any(_alive(pid) for pid in workers), timeout=10, what="the orphaned workers to exit")
    assert "BrokenPipeError" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("when", ["running", "just-launched"])
def test_cancel_stops_process_workers_without_starting_new_ones(store, monkeypatch, when):
    started = []
    original = ProcessExecutor._start_worker_locked

    def counting(self):
        worker = original(self)
        started.append(worker.process.pid)
        return worker

    monkeypatch.setattr(ProcessExecutor, "_start_worker_locked", counting)

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition([f"p{i}" for i in range(8)]))
    def sleepy(context):
        import time

        time.sleep(30)

    bf = nbb.launch_backfill(sleepy, all=True, executor="process", max_workers=2, instance=store)
    if when == "running":
        _wait_until(lambda: bf.counts()["STARTED"] == 2, what="two runs to start in workers")
        assert len(started) == 2
    Engine.existing(store).call(lambda: None)  # a turn of the engine later: the launch's workers are started
    before = len(started)
    assert before == 2
    bf.cancel()
    assert bf.wait(timeout=15) == "CANCELED"
    time.sleep(0.3)  # a worker started late would show here
    assert len(started) == before, f"cancel started {len(started) - before} new worker processes"
    assert not any(_alive(pid) for pid in started)
    counts = bf.counts()
    assert counts["CANCELED"] == 8 and counts["SUCCESS"] == 0
    assert not [t for t in threading.enumerate() if t.name.startswith(WORKER_NAME)]  # their readers are gone too
