"""Real processes: SIGKILL at several points loses no recorded status and resume runs each
unfinished partition exactly once; two processes share one store without lock errors."""

import sqlite3
import textwrap
import time
from pathlib import Path

import pytest
from job_scripts import executed, finish, kill_after, start

import nb_backfill as nbb
from nb_backfill.engine import Engine

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import nb_backfill as nbb

    store, marks, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    parts = nbb.StaticPartitionsDefinition([f"p{i:03d}" for i in range(int(os.environ.get("N", "60")))])

    @nbb.job(partitions_def=parts, code_version="1")
    def work(context):
        with open(marks / f"{mode}-{os.getpid()}.txt", "a") as f:
            f.write(context.partition_key + "\\n")
        time.sleep(float(os.environ.get("SLEEP", "0.02")))

    if mode == "launch":
        bf = nbb.launch_backfill(work, all=True, max_workers=4, instance=store)
        print(bf.id, flush=True)
        print(bf.wait(timeout=120), flush=True)
    else:
        bf = nbb.resume_backfill(sys.argv[4], instance=store)
        print(bf.wait(timeout=120), flush=True)
    """
)


def snapshot(store) -> tuple:
    """Everything a read could change, read straight from the SQLite file."""
    with sqlite3.connect(Path(store) / "nb_backfill.db") as conn:
        return tuple(
            conn.execute(sql).fetchall()
            for sql in (
                "SELECT * FROM backfills",
                "SELECT run_id, status, attempt FROM runs",
                "SELECT COUNT(*) FROM events",
            )
        )


def launch(script, store, marks, **env):
    """The job script launching its backfill in a process of its own (stdout: id, then final status)."""
    return start(script, store, marks, "launch", **env)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(SCRIPT)
    return path


@pytest.mark.parametrize("killed_at", [0, 12, 40])
def test_sigkill_then_resume(tmp_path, script, killed_at):
    store, marks = tmp_path / "store", tmp_path / "marks"
    marks.mkdir()
    backfill_id = kill_after(launch(script, store, marks), marks, killed_at)

    before = snapshot(store)
    bf = nbb.get_backfill(backfill_id, instance=store)
    runs = bf.runs_df()
    ran = set(executed(marks, "launch"))
    succeeded = set(runs.index[runs["status"] == "SUCCESS"])
    assert succeeded <= ran  # a recorded success really ran
    assert bf.status == "REQUESTED"  # unfinished, resumable, and says why it does not move:
    assert (
        "stopped before it finished" in bf.progress().note and f"resume_backfill('{backfill_id}')" in bf.progress().note
    )
    assert nbb.list_backfills(instance=store).loc[backfill_id, "process"] == "stopped: resume it"
    with pytest.raises(nbb.BackfillStateError, match="resume"):
        bf.wait(timeout=5)
    job = nbb.Job(  # a stand-in for the script's job: the same name, partitions and code version
        "work",
        [nbb.step(lambda: None, name="work", code_version="1")],
        nbb.StaticPartitionsDefinition([f"p{i:03d}" for i in range(60)]),
    )
    status = nbb.partition_status(job, instance=store)["status"]
    assert set(status[status == "SUCCESS"].index) == succeeded
    assert set(status[status != "SUCCESS"]) <= {"MISSING"}  # a dead owner's runs are not in progress
    plan = nbb.launch_backfill(job, missing_only=True, dry_run=True, instance=store)
    assert set(plan.index[plan["action"] == "launch"]) == set(runs.index) - succeeded
    assert snapshot(store) == before  # reading wrote nothing...
    assert Engine.existing(nbb.get_instance(store)) is None  # ...and started no engine thread

    resume = finish(script, store, marks, "resume", backfill_id)
    assert resume.returncode == 0, resume.stderr
    assert resume.stdout.strip() == "COMPLETED_SUCCESS"
    again = executed(marks, "resume")
    assert sorted(again) == sorted(set(runs.index) - succeeded)  # exactly the unfinished ones, each once
    bf = nbb.get_backfill(backfill_id, instance=store)
    assert (bf.runs_df()["status"] == "SUCCESS").all()
    attempts = bf.attempts_df()
    left_running = set(runs.index[runs["status"].isin(["STARTING", "STARTED"])])
    first = attempts[attempts["attempt"] == 1]
    assert set(first.index[first["error"].fillna("").str.startswith("interrupted")]) == left_running


def test_resume_refuses_while_the_owner_runs_it(tmp_path, script):
    store, marks = tmp_path / "store", tmp_path / "marks"
    marks.mkdir()
    launched = launch(script, store, marks, SLEEP="0.5", N="8")
    try:
        backfill_id = launched.stdout.readline().strip()
        with pytest.raises(nbb.BackfillStateError, match="being run by another process"):
            nbb.resume_backfill(
                backfill_id,
                job=nbb.Job("work", [nbb.step(lambda: None, name="w")], nbb.StaticPartitionsDefinition(["x"])),
                instance=store,
            )
        nbb.get_backfill(backfill_id, instance=store).cancel()  # the owner reads it back from storage
        assert launched.stdout.readline().strip() == "CANCELED"
    finally:
        launched.kill()
        launched.wait()


def test_pause_and_resume_from_another_process(tmp_path, script):
    store, marks = tmp_path / "store", tmp_path / "marks"
    marks.mkdir()
    launched = launch(script, store, marks, SLEEP="0.2", N="40")
    try:
        bf = nbb.get_backfill(launched.stdout.readline().strip(), instance=store)
        bf.pause()
        time.sleep(1.0)  # the owner polls storage twice a second
        paused_at = bf.counts()["SUCCESS"]
        time.sleep(0.5)
        assert bf.status == "PAUSED" and bf.counts()["SUCCESS"] == paused_at < 40
        bf.resume()
        assert launched.stdout.readline().strip() == "COMPLETED_SUCCESS"
        assert len(executed(marks, "launch")) == 40
    finally:
        launched.kill()
        launched.wait()


def test_two_processes_share_one_store(tmp_path, script):
    store, marks = tmp_path / "store", tmp_path / "marks"
    marks.mkdir()
    procs = [launch(script, store, marks, SLEEP="0", N="400") for _ in range(2)]
    reads = 0
    while any(p.poll() is None for p in procs):
        nbb.list_backfills(instance=store)  # a third process reading meanwhile
        reads += 1
        time.sleep(0.01)
    for p in procs:
        out, err = p.communicate()
        assert p.returncode == 0, err
        assert "locked" not in err
        assert out.split()[-1] == "COMPLETED_SUCCESS"
    listing = nbb.list_backfills(instance=store)
    assert len(listing) == 2 and (listing["succeeded"] == 400).all()
    assert reads > 0
