"""Kept outputs with real files beside the store: results back as data, the latest output of a
partition, listing and pruning, values that cannot be kept, a custom io, and a killed writer."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

import nb_backfill as nbb
from nb_backfill import outputs
from nb_backfill.errors import DefinitionError, InvalidOptionError, UnknownPartitionError

KEYS = nbb.StaticPartitionsDefinition(["a", "b", "c"])


@pytest.fixture
def store(tmp_path):
    return nbb.get_instance(tmp_path / "store")


def etl(name: str = "etl", fail: str | None = None, **options) -> nbb.Job:
    @nbb.step
    def extract(context):
        return {"key": context.partition_key, "attempt": context.attempt}

    @nbb.step
    def transform(context, extract):
        if extract["key"] == fail:
            raise ValueError(f"bad {fail}")
        return pd.DataFrame({"n": [1, 2, 3], "key": extract["key"]})

    @nbb.step
    def report(transform):
        print("rows", len(transform))  # returns None: nothing to keep

    return nbb.Job(name, [extract, transform, report], KEYS, **options)


def test_results_come_back_as_data_per_partition_and_step(store):
    job = etl(fail="c")
    bf = nbb.launch_backfill(job, all=True, instance=store)
    assert bf.wait(timeout=30) == "COMPLETED_FAILED"
    assert bf.results(step="extract") == {k: {"key": k, "attempt": 1} for k in "abc"}
    frame = bf.results_df(step="transform")
    assert list(frame.columns) == ["partition", "n", "key"] and list(frame["partition"]) == ["a"] * 3 + ["b"] * 3
    assert set(bf.results(step="transform")) == {"a", "b"}  # c's transform failed: nothing of it
    with pytest.raises(InvalidOptionError, match=r"output was not kept .*None"):
        bf.results()  # the final step returned None
    with pytest.raises(InvalidOptionError, match="no step 'transfrom'; did you mean 'transform'"):
        bf.results(step="transfrom")


def test_the_latest_output_of_a_partition_across_backfills_and_pruning_the_rest(store):
    job = etl()
    first = nbb.launch_backfill(job, all=True, instance=store)
    first.wait(timeout=30)
    second = nbb.launch_backfill(job, partitions=["a"], instance=store)
    second.wait(timeout=30)
    assert nbb.load_output(job, "a", step="extract", instance=store) == {"key": "a", "attempt": 1}
    listing = nbb.list_outputs(job, instance=store)
    assert len(listing) == 8 and (listing["bytes"] > 0).all()  # 4 runs x 2 steps that returned values
    latest = listing[listing["latest"]]
    assert set(latest[latest["partition"] == "a"]["run_id"]) == {second.run("a").run_id}
    freed = nbb.prune_outputs(job, instance=store)
    assert freed == listing[~listing["latest"]]["bytes"].sum() > 0
    assert len(nbb.list_outputs(job, instance=store)) == 6
    assert nbb.load_output(job, "b", step="transform", instance=store)["key"].tolist() == ["b"] * 3
    nbb.prune_outputs(job, keep="none", instance=store)
    assert nbb.list_outputs(job, instance=store).empty
    with pytest.raises(InvalidOptionError, match="keep must be one of 'latest', 'none', got 'all'"):
        nbb.prune_outputs(job, keep="all", instance=store)


def test_load_output_names_what_is_missing(store):
    job = etl(name="unrun")
    with pytest.raises(
        UnknownPartitionError, match="no run of job 'unrun' has succeeded step 'report' for partition 'a'"
    ):
        nbb.load_output(job, "a", instance=store)


def test_a_value_that_cannot_be_kept_is_noted_by_default_and_fails_the_step_when_insisted(store, monkeypatch):
    lock = threading.Lock()

    @nbb.job(partitions_def=KEYS, name="unpicklable")
    def unpicklable(context):
        return lock

    bf = nbb.launch_backfill(unpicklable, partitions=["a"], instance=store)
    assert bf.wait(timeout=30) == "COMPLETED_SUCCESS"
    assert "did not keep the output of step 'unpicklable': it cannot be pickled" in bf.logs("a")

    monkeypatch.setattr(outputs, "KEEP_LIMIT", 10)

    @nbb.job(partitions_def=KEYS, name="large")
    def large(context):
        return "x" * 100

    bf = nbb.launch_backfill(large, partitions=["a"], instance=store)
    assert bf.wait(timeout=30) == "COMPLETED_SUCCESS"
    assert "more than the 10 kept by default" in bf.logs("a")

    @nbb.job(partitions_def=KEYS, name="insisted", keep_outputs=True)
    def insisted(context):
        return lock

    bf = nbb.launch_backfill(insisted, partitions=["a"], instance=store)
    assert bf.wait(timeout=30) == "COMPLETED_FAILED"
    assert "the output of step 'insisted' could not be kept: it cannot be pickled" in bf.error("a")


def test_keep_outputs_false_keeps_nothing_and_a_step_may_say_otherwise(store):
    @nbb.step(keep_output=True)
    def kept(context):
        return 1

    @nbb.step
    def dropped(kept):
        return 2

    job = nbb.Job("mixed", [kept, dropped], KEYS, keep_outputs=False)
    bf = nbb.launch_backfill(job, all=True, instance=store)
    bf.wait(timeout=30)
    assert bf.results(step="kept") == {"a": 1, "b": 1, "c": 1}
    assert set(nbb.list_outputs(job, instance=store)["step"]) == {"kept"}


def test_a_custom_io_keeps_them_where_it_likes(store):
    class DictIO:
        def __init__(self):
            self.kept = {}

        def save(self, context, value):
            self.kept[(context.partition_key, context.step, context.attempt)] = value

        def load(self, context):
            return self.kept[(context.partition_key, context.step, context.attempt)]

    io = DictIO()

    @nbb.job(partitions_def=KEYS, name="custom", io=io)
    def custom(context):
        return context.partition_key.upper()

    bf = nbb.launch_backfill(custom, all=True, instance=store)
    bf.wait(timeout=30)
    assert io.kept == {("a", "custom", 1): "A", ("b", "custom", 1): "B", ("c", "custom", 1): "C"}
    assert bf.results() == {"a": "A", "b": "B", "c": "C"}
    assert not (store.home / "outputs").exists()
    with pytest.raises(InvalidOptionError, match="keeps its outputs with its own io="):
        nbb.list_outputs(custom, instance=store)


def test_bad_definitions_are_refused():
    def one(context):
        return 1

    with pytest.raises(DefinitionError, match=r"keep_outputs must be True, False or None .*got 'yes'"):
        nbb.Job("bad", [one], KEYS, keep_outputs="yes")
    with pytest.raises(DefinitionError, match=r"io must have save\(context, value\) and load\(context\)"):
        nbb.Job("bad", [one], KEYS, io=object())
    with pytest.raises(DefinitionError, match="step 'one' keep_output must be True, False or None"):
        nbb.step(one, keep_output=1)


def test_a_writer_killed_mid_write_leaves_no_output_to_read(tmp_path):
    target = tmp_path / "out.pkl"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from nb_backfill.outputs import _write\n"
        "def half(path):\n"
        "    Path(path).write_bytes(b'half a value')\n"
        "    os.kill(os.getpid(), 9)\n"
        "_write(Path(sys.argv[1]), half)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True)
    assert result.returncode == -9
    assert not target.exists()  # a load never sees half a value
    (left,) = tmp_path.glob(".writing-*")
    os.utime(left, (0, 0))
    assert outputs.remove_stale_temporaries(tmp_path.parent, tmp_path.name) == 0  # not a job folder
    job_root = tmp_path / "root"
    (job_root / "job" / "step").mkdir(parents=True)
    moved = job_root / "job" / "step" / left.name
    left.rename(moved)
    os.utime(moved, (0, 0))
    assert outputs.remove_stale_temporaries(job_root, "job") == 1 and not moved.exists()


def test_outputs_are_kept_by_worker_processes_too(store):
    job = etl(name="in_processes")
    bf = nbb.launch_backfill(job, all=True, executor="process", max_workers=2, instance=store)
    assert bf.wait(timeout=60) == "COMPLETED_SUCCESS"
    assert bf.results(step="extract")["b"] == {"key": "b", "attempt": 1}
    assert Path(nbb.list_outputs(job, instance=store)["path"][0]).is_relative_to(store.home / "outputs")


def flaky_etl(name: str, marks: Path, broken: Path) -> nbb.Job:
    """extract -> transform -> load, where transform fails while the file `broken` exists; each
    step notes in `marks` that it ran (one file a run of a step)."""
    where, flag = str(marks), str(broken)

    def note(context, step):
        Path(where, f"{context.partition_key}-{step}-{context.attempt}").touch()

    @nbb.step
    def extract(context):
        note(context, "extract")
        return {"key": context.partition_key}

    @nbb.step
    def transform(context, extract):
        note(context, "transform")
        if os.path.exists(flag) and extract["key"] != "a":
            raise ValueError("transform is broken")
        return extract["key"].upper()

    @nbb.step
    def load(context, transform):
        note(context, "load")
        return f"loaded {transform}"

    return nbb.Job(name, [extract, transform, load], KEYS)


def failed_and_pruned(name: str, store, marks: Path, broken: Path) -> nbb.Backfill:
    """Partition b of a flaky job failed, and its kept outputs were pruned since."""
    marks.mkdir()
    broken.touch()
    job = flaky_etl(name, marks, broken)
    bf = nbb.launch_backfill(job, partitions=["b"], instance=store)
    bf.wait(timeout=30)
    nbb.prune_outputs(job, keep="none", instance=store)
    return bf


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_retry_from_failure_reruns_only_the_failed_step_and_after(store, tmp_path, executor):
    marks, broken = tmp_path / "marks", tmp_path / "broken"
    marks.mkdir()
    broken.touch()
    job = flaky_etl(f"flaky_{executor}", marks, broken)
    bf = nbb.launch_backfill(job, all=True, executor=executor, max_workers=2, instance=store)
    assert bf.wait(timeout=60) == "COMPLETED_FAILED"
    broken.unlink()  # the bug is fixed
    bf.retry_failed(from_failure=True)
    assert bf.wait(timeout=60) == "COMPLETED_SUCCESS"
    ran = sorted(p.name for p in marks.iterdir())
    assert [m for m in ran if m.startswith("b-")] == ["b-extract-1", "b-load-2", "b-transform-1", "b-transform-2"]
    steps = bf.steps_df()
    assert steps.loc["b", "extract"] == "REUSED" and steps.loc["b", "transform"] == "SUCCESS"
    assert steps.loc["a", "extract"] == "SUCCESS"  # a never failed: untouched
    assert bf.results() == {"a": "loaded A", "b": "loaded B", "c": "loaded C"}
    assert bf.results(step="extract")["b"] == {"key": "b"}  # kept again for attempt 2


def test_retry_from_failure_runs_again_a_step_whose_output_was_not_kept(store, tmp_path):
    marks, broken = tmp_path / "marks", tmp_path / "broken"
    bf = failed_and_pruned("flaky_pruned", store, marks, broken)
    broken.unlink()
    bf.retry_failed(from_failure=True)
    assert bf.wait(timeout=30) == "COMPLETED_SUCCESS"
    assert sorted(p.name for p in marks.iterdir()) == [
        "b-extract-1",
        "b-extract-2",
        "b-load-2",
        "b-transform-1",
        "b-transform-2",
    ]
    assert "runs step 'extract' again: its output of attempt 1 was not kept" in bf.logs("b")


def test_retry_from_failure_with_nothing_failed_says_so(store):
    job = etl(name="all_good")
    bf = nbb.launch_backfill(job, all=True, instance=store)
    bf.wait(timeout=30)
    with pytest.raises(nbb.BackfillStateError, match="nothing to retry"):
        bf.retry_failed(from_failure=True)


def test_debug_runs_the_failing_step_here_with_its_context_and_upstream_outputs(store, tmp_path):
    marks, broken = tmp_path / "marks", tmp_path / "broken"
    marks.mkdir()
    broken.touch()
    job = flaky_etl("flaky_debug", marks, broken)
    bf = nbb.launch_backfill(job, all=True, instance=store)
    bf.wait(timeout=30)
    context = bf.context_for("b")
    assert (context.partition_key, context.attempt, context.backfill_id) == ("b", 1, bf.id)
    assert context.tags["nb_backfill/partition"] == "b"
    with pytest.raises(ValueError, match="transform is broken") as caught:
        bf.debug("b", post_mortem=False)
    assert caught.traceback[-1].name == "transform"  # raised in the user's step, here
    broken.unlink()
    assert bf.debug("b", post_mortem=False) == "B"  # fixed: the step succeeds with the same input
    with pytest.raises(nbb.BackfillStateError, match=r"partition 'a' did not fail .*SUCCESS.*nothing to debug"):
        bf.debug("a")


def test_debug_says_which_upstream_output_was_not_kept(store, tmp_path):
    bf = failed_and_pruned("flaky_unkept", store, tmp_path / "marks", tmp_path / "broken")
    with pytest.raises(InvalidOptionError, match="takes the output of step 'extract', which was not kept"):
        bf.debug("b", post_mortem=False)


def test_debug_opens_the_debugger_at_the_failing_line(tmp_path):
    script = tmp_path / "debug_me.py"
    script.write_text(
        "import sys\n"
        "import nb_backfill as nbb\n"
        "@nbb.step\n"
        "def extract(context):\n"
        "    return {'key': context.partition_key}\n"
        "@nbb.step\n"
        "def transform(context, extract):\n"
        "    raise ValueError('transform is broken')\n"
        "job = nbb.Job('to_debug', [extract, transform], nbb.StaticPartitionsDefinition(['b']))\n"
        "bf = nbb.launch_backfill(job, all=True, instance=sys.argv[1])\n"
        "bf.wait(timeout=30)\n"
        "try:\n"
        "    bf.debug('b')\n"
        "except ValueError as error:\n"
        "    print('raised after the debugger:', error)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        input="p extract\nq\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "raise ValueError('transform is broken')" in result.stdout  # the debugger shows the failing line
    assert "{'key': 'b'}" in result.stdout  # and the frame's upstream input
    assert "raised after the debugger: transform is broken" in result.stdout


def test_the_magic_debugs_a_partition(store, tmp_path, monkeypatch):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    job = etl(name="magic_debug")
    bf = nbb.launch_backfill(job, all=True, instance=store)
    bf.wait(timeout=30)
    monkeypatch.setenv("NB_BACKFILL_HOME", str(store.home))
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nb_backfill")
    with pytest.raises(UsageError, match="partition 'a' did not fail"):
        shell.run_line_magic("backfill", f"debug {bf.id} a")


@pytest.mark.parametrize("url", ["memory://nbb-outputs", "local"])
def test_outputs_under_an_fsspec_url(store, tmp_path, url):
    pytest.importorskip("fsspec")
    root = str(tmp_path / "elsewhere") if url == "local" else url
    io = nbb.FsspecIO(root)

    @nbb.job(partitions_def=KEYS, name=f"fsspec_{url.split(':')[0]}", io=io)
    def remote(context):
        return {"key": context.partition_key}

    bf = nbb.launch_backfill(remote, all=True, instance=store)
    assert bf.wait(timeout=30) == "COMPLETED_SUCCESS"
    assert bf.results() == {k: {"key": k} for k in "abc"}
    assert nbb.load_output(remote, "b", instance=store) == {"key": "b"}
    assert io.fs.exists(io.path(outputs.OutputContext(remote.name, "remote", "a", bf.run("a").run_id, 1, None)))
    assert not (store.home / "outputs").exists()
