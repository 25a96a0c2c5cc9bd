"""Staleness by code version: a partition that succeeded with older code reads STALE; launching
the stale ones reruns only the steps whose code changed and the steps after them."""

import sys
from pathlib import Path

import pytest

import nb_backfill as nbb
from nb_backfill.codeversion import version_of
from nb_backfill.errors import DefinitionError, SelectionError

NOTEBOOK = """
import nb_backfill as nbb
RATE = {rate}

def scale(x):
    return x * RATE

@nbb.step
def extract(context):
    note(context, "extract")
    return len(context.partition_key)

@nbb.step
def transform(context, extract):
    note(context, "transform")
    return scale(extract)

@nbb.step(code_version="{load_version}")
def load(context, transform):
    note(context, "load")
    return transform + {offset}

job = nbb.Job("stale_etl", [extract, transform, load], nbb.StaticPartitionsDefinition(["a", "bb", "ccc"]))
"""


def notebook(ran: list, rate: int = 2, offset: int = 0, load_version: str = "v1") -> nbb.Job:
    """The job as a notebook cell defines it (its functions live in `__main__`, as in a kernel)."""
    namespace = {"__name__": "__main__", "note": lambda context, step: ran.append((context.partition_key, step))}
    exec(NOTEBOOK.format(rate=rate, offset=offset, load_version=load_version), namespace)
    return namespace["job"]


@pytest.fixture
def store(tmp_path):
    return nbb.get_instance(tmp_path / "store")


def test_a_change_of_code_makes_partitions_stale_and_reruns_only_what_changed(store):
    ran = []
    job = notebook(ran)
    assert nbb.launch_backfill(job, all=True, instance=store).wait(timeout=30) == "COMPLETED_SUCCESS"
    assert set(nbb.partition_status(job, instance=store)["status"]) == {"SUCCESS"}
    assert set(nbb.partition_status(notebook([]), instance=store)["status"]) == {"SUCCESS"}  # same code again

    changed = notebook(ran, rate=3)  # a constant that transform's helper uses
    assert set(nbb.partition_status(changed, instance=store)["status"]) == {"STALE"}
    plan = nbb.launch_backfill(changed, stale_only=True, dry_run=True, instance=store)
    assert set(plan["reason"]) == {"stale: succeeded with older code"}
    ran.clear()
    bf = nbb.launch_backfill(changed, stale_only=True, instance=store)
    assert bf.wait(timeout=30) == "COMPLETED_SUCCESS"
    assert sorted(ran) == sorted((k, s) for k in ("a", "bb", "ccc") for s in ("transform", "load"))
    steps = bf.steps_df()
    assert set(steps["extract"]) == {"REUSED"} and set(steps["transform"]) == {"SUCCESS"}
    assert bf.results() == {"a": 3, "bb": 6, "ccc": 9}
    assert set(nbb.partition_status(changed, instance=store)["status"]) == {"SUCCESS"}


def test_a_given_code_version_decides_alone(store):
    ran = []
    nbb.launch_backfill(notebook(ran), all=True, instance=store).wait(timeout=30)
    same_version = notebook(ran, offset=1)  # load's code changed, its code_version did not
    assert set(nbb.partition_status(same_version, instance=store)["status"]) == {"SUCCESS"}
    bumped = notebook(ran, offset=1, load_version="v2")
    assert set(nbb.partition_status(bumped, instance=store)["status"]) == {"STALE"}
    ran.clear()
    nbb.launch_backfill(bumped, stale_only=True, partitions=["a"], instance=store).wait(timeout=30)
    assert ran == [("a", "load")]
    assert nbb.load_output(bumped, "a", instance=store) == 3


def test_nothing_stale_is_said(store):
    job = notebook([])
    nbb.launch_backfill(job, all=True, instance=store).wait(timeout=30)
    with pytest.raises(SelectionError, match="none of the 3 selected partitions is stale"):
        nbb.launch_backfill(job, stale_only=True, instance=store)
    with pytest.raises(SelectionError, match="choose stale_only or missing_only/failed_only, not both"):
        nbb.launch_backfill(job, stale_only=True, missing_only=True, instance=store)


def test_what_is_hashed():
    k = 1

    def helper():
        return k

    def step_fn(context):
        return helper()

    before = version_of(step_fn)
    assert version_of(step_fn) == before  # stable
    assert version_of(step_fn, "v7") == "v7"
    with pytest.raises(DefinitionError, match="code_version must be a non-empty string"):
        nbb.step(step_fn, code_version="")


def test_the_cli_launches_stale_partitions(tmp_path):
    import subprocess

    jobs = tmp_path / "jobs.py"
    source = (
        "import nb_backfill as nbb\n"
        "@nbb.job(partitions_def=nbb.StaticPartitionsDefinition(['a', 'b']))\n"
        "def cli_stale(context):\n"
        "    return {}\n"
    )
    env = {"NB_BACKFILL_HOME": str(tmp_path / "store"), "PATH": str(Path(sys.executable).parent)}
    script = str(Path(sys.executable).with_name("nb-backfill"))
    base = [script, "job", "backfill", "-f", "jobs.py", "-p", "cli_stale", "--noprompt"]
    jobs.write_text(source)
    assert subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, timeout=60).returncode == 0
    jobs.write_text(source.replace("{}", "{'v': 2}"))
    result = subprocess.run([*base, "--stale"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    listing = nbb.list_backfills(instance=tmp_path / "store")
    assert len(listing) == 2 and listing["succeeded"].iloc[0] == 2
