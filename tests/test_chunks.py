"""A large backfill's runs written by its engine in chunks after launch (chunks.py): every
partition runs once and in order, counts include the runs not yet written, a cancel leaves them
never created, resume writes them, a kill -9 while chunks are written loses nothing and runs
nothing twice, and the faces (Tracker, widget) take the new runs in."""

import textwrap
import time

import pytest
from job_scripts import executed, finish, kill_after, start

import nb_backfill as nbb
from nb_backfill import chunks
from nb_backfill.errors import BackfillStateError
from nb_backfill.progress import Tracker, all_counts

N = 60


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(chunks, "FIRST_CHUNK", 4)
    monkeypatch.setattr(chunks, "MAX_CHUNK", 8)


@pytest.fixture
def store(tmp_path):
    return nbb.get_instance(tmp_path / "store")


def recording_job(seen: list[str], keys: list[str], sleep: float = 0.0, name: str = "chunked"):
    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(keys), name=name)
    def job(context):
        seen.append(context.partition_key)
        time.sleep(sleep)

    return job


def written(store, backfill_id) -> int:
    return store.query("SELECT COUNT(*) FROM runs WHERE backfill_id = ?", (backfill_id,))[0][0]


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_every_partition_runs_once_in_order(store, order):
    keys = [f"p{i:03d}" for i in range(N)]
    seen: list[str] = []
    job = recording_job(seen, keys, sleep=0.001)
    bf = nbb.launch_backfill(job, from_="p005", to="p054", order=order, max_workers=1, instance=store)
    assert bf.record.num_partitions == 50 and sum(bf.counts().values()) == 50  # the unwritten count as QUEUED
    assert bf.wait(timeout=30) == "COMPLETED_SUCCESS"
    chosen = keys[5:55]
    assert seen == (chosen if order == "asc" else chosen[::-1])  # one worker: run order is start order
    runs = bf.runs_df()
    assert list(runs.index) == seen and (runs["status"] == "SUCCESS").all()
    assert list(runs["run_id"]) == [f"{bf.id}-{i:06d}" for i in range(50)]
    assert bf.record.unwritten == 0


def test_a_small_backfill_is_written_whole_at_launch(store):
    job = recording_job([], [f"p{i}" for i in range(4)])
    bf = nbb.launch_backfill(job, all=True, instance=store)
    assert bf.record.written is None and bf.record.selection is None and written(store, bf.id) == 4
    assert bf.wait(timeout=30) == "COMPLETED_SUCCESS"


def test_lists_and_missing_only_are_written_whole_at_launch(store):
    keys = [f"p{i:03d}" for i in range(N)]
    job = recording_job([], keys)
    gate = nbb.launch_backfill(job, partitions=keys[:30], instance=store)
    assert written(store, gate.id) == 30 and gate.record.selection is None
    assert gate.wait(timeout=30) == "COMPLETED_SUCCESS"
    rest = nbb.launch_backfill(job, missing_only=True, instance=store)
    assert written(store, rest.id) == 30 and rest.record.selection is None
    assert rest.wait(timeout=30) == "COMPLETED_SUCCESS"


def test_cancel_leaves_the_unwritten_never_created_and_resume_writes_them(store):
    seen: list[str] = []
    job = recording_job(seen, [f"p{i:03d}" for i in range(N)], sleep=0.02)
    bf = nbb.launch_backfill(job, all=True, max_workers=1, instance=store)
    bf.cancel()
    assert bf.wait(timeout=30) == "CANCELED"
    counts = bf.counts()
    assert sum(counts.values()) == N and counts["QUEUED"] == 0
    assert counts["CANCELED"] == N - counts["SUCCESS"] and bf.record.unwritten > 0
    assert len(bf.runs_df()) == written(store, bf.id) < N  # the frame holds the runs that exist
    with pytest.raises(BackfillStateError, match="resume runs canceled and unstarted"):
        bf.retry_failed()
    bf = nbb.resume_backfill(bf.id, job=job, instance=store)
    assert bf.wait(timeout=60) == "COMPLETED_SUCCESS"
    assert sorted(seen) == sorted(set(seen)) and len(seen) == N  # nothing ran twice, everything ran
    assert written(store, bf.id) == N and bf.record.unwritten == 0


def test_resume_refuses_when_the_partitions_changed(store):
    keys = [f"p{i:03d}" for i in range(N)]
    job = recording_job([], keys, sleep=0.02)
    bf = nbb.launch_backfill(job, all=True, max_workers=1, instance=store)
    bf.cancel()
    assert bf.wait(timeout=30) == "CANCELED"
    changed = recording_job([], keys[:-1])
    with pytest.raises(BackfillStateError, match="changed since it was launched"):
        nbb.resume_backfill(bf.id, job=changed, instance=store)
    assert nbb.get_backfill(bf.id, instance=store).status == "CANCELED"  # nothing was written


def test_the_tracker_takes_in_runs_as_they_are_written(store):
    job = recording_job([], [f"p{i:03d}" for i in range(N)], sleep=0.005)
    bf = nbb.launch_backfill(job, all=True, max_workers=1, instance=store)
    tracker = Tracker(store, bf.id)
    grew = set()
    while bf.status not in ("COMPLETED_SUCCESS", "COMPLETED_FAILED"):
        tracker.poll()
        grew.add(len(tracker.run_ids))
        assert sum(tracker.counts.values()) == N
        time.sleep(0.005)
    tracker.poll()
    assert len(grew) > 1  # it saw the runs come in chunks...
    assert all_counts(tracker.counts) == all_counts(store.run_counts(bf.id))  # ...and agrees with the store
    assert tracker.partitions == [f"p{i:03d}" for i in range(N)]


def test_the_widget_grid_fills_as_runs_are_written(store):
    pytest.importorskip("anywidget")
    job = recording_job([], [f"p{i:03d}" for i in range(N)], sleep=0.005)
    bf = nbb.launch_backfill(job, all=True, max_workers=1, instance=store)
    widget = bf.widget()
    assert bf.wait(timeout=30) == "COMPLETED_SUCCESS"
    deadline = time.monotonic() + 10
    while widget.summary.get("counts") != {"SUCCESS": N} and time.monotonic() < deadline:
        time.sleep(0.02)
    assert widget.summary["counts"] == {"SUCCESS": N}
    assert {widget.codes[c] for c in widget.status} == {"success"}
    widget.close()


SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import nb_backfill as nbb
    from nb_backfill import chunks

    chunks.FIRST_CHUNK, chunks.MAX_CHUNK = 2, 3
    store, marks, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    parts = nbb.StaticPartitionsDefinition([f"p{i:04d}" for i in range(1200)])

    @nbb.job(partitions_def=parts)
    def work(context):
        with open(marks / f"{mode}-{os.getpid()}.txt", "a") as f:
            f.write(context.partition_key + "\\n")

    if mode == "launch":
        bf = nbb.launch_backfill(work, all=True, max_workers=2, instance=store)
        print(bf.id, flush=True)
        print(bf.wait(timeout=120), flush=True)
    else:
        print(nbb.resume_backfill(sys.argv[4], instance=store).wait(timeout=120), flush=True)
    """
)


@pytest.mark.parametrize("killed_at", [0, 100, 600])
def test_a_kill_while_chunks_are_written_loses_nothing(tmp_path, killed_at):
    """Chunks of 3 runs: the engine writes a chunk every turn, so a kill -9 lands among them."""
    script, store, marks = tmp_path / "job.py", tmp_path / "store", tmp_path / "marks"
    script.write_text(SCRIPT)
    marks.mkdir()
    backfill_id = kill_after(start(script, store, marks, "launch"), marks, killed_at)

    bf = nbb.get_backfill(backfill_id, instance=store)
    record = bf.record
    assert record.written is not None and written(bf._storage, backfill_id) == record.written  # whole chunks only
    runs = bf.runs_df()
    succeeded = set(runs.index[runs["status"] == "SUCCESS"])
    assert succeeded <= set(executed(marks, "launch"))
    resume = finish(script, store, marks, "resume", backfill_id)
    assert resume.returncode == 0, resume.stderr
    assert resume.stdout.strip() == "COMPLETED_SUCCESS"
    again = executed(marks, "resume")
    assert not succeeded & set(again) and len(again) == len(set(again))  # nothing finished ran again, nor twice
    runs = nbb.get_backfill(backfill_id, instance=store).runs_df()
    assert len(runs) == 1200 and (runs["status"] == "SUCCESS").all()
    assert list(runs.index) == [f"p{i:04d}" for i in range(1200)]
    assert set(executed(marks, "launch")) | set(again) == set(runs.index)


def test_a_chunk_is_written_only_after_the_one_before_it(tmp_path):
    """Two writers of the same chunk (a process that lost a race): the second is refused, whole."""
    store = nbb.get_instance(tmp_path / "store")
    job = recording_job([], [f"p{i:03d}" for i in range(N)], sleep=0.05)
    bf = nbb.launch_backfill(job, all=True, max_workers=1, instance=store)
    start = store.get_backfill(bf.id).written
    with pytest.raises(nbb.StorageError, match="another process wrote them"):
        store.write_more_runs(bf.id, start - 1, [(f"{bf.id}-x", "p000", start - 1)])
    bf.cancel(now=True)
    assert store.query("SELECT COUNT(*) FROM runs WHERE run_id = ?", (f"{bf.id}-x",))[0][0] == 0


def test_a_chunk_the_store_refuses_fails_the_backfill_saying_why(store):
    """A key SQLite cannot store (a lone surrogate) past the first chunk: FAILED with the reason, never a hang."""
    keys = [f"p{i:03d}" for i in range(N)]
    keys[40] = b"caf\xe9".decode("utf-8", "surrogateescape")
    job = recording_job([], keys)
    bf = nbb.launch_backfill(job, all=True, max_workers=1, instance=store)
    assert bf.wait(timeout=30) == "FAILED"
    assert "could not write its runs" in bf.record.error and bf.record.unwritten > 0
    assert "could not write its runs" in bf.progress().line()
