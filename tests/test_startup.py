"""Start-up stays light (issue 9): `import nb_backfill` loads neither pandas, numpy, pendulum nor
the widget's libraries, which load when first needed, nor the engine and the store, which load with
the first name that needs them; a small backfill from the command line needs no pandas or numpy;
the command line's launch listing is the plan's, and its follow loop wakes when the backfill ends
instead of at its next redraw."""

import io
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

import nb_backfill as nbb
from nb_backfill import cli
from nb_backfill.arguments import launch_from

LAZY = (
    "pandas",
    "numpy",
    "pendulum",
    "anywidget",
    "ipywidgets",
    "traitlets",
    "IPython",
    "cloudpickle",
    "multiprocessing",
)
ON_FIRST_USE = ("nb_backfill.backfills", "nb_backfill.engine", "nb_backfill.storage", "nb_backfill.frames")


def fresh_python(code: str, cwd=None, **env: str) -> str:
    """What `code` prints in a new interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_loads_none_of_the_heavy_libraries():
    out = fresh_python(
        f"""
        import json, sys
        import nb_backfill
        print(json.dumps({{name: name in sys.modules for name in {LAZY!r}}}))
        """
    )
    assert json.loads(out) == dict.fromkeys(LAZY, False)


def test_the_engine_and_the_store_load_with_the_first_name_that_needs_them():
    out = fresh_python(
        f"""
        import json, sys
        import nb_backfill as nbb
        before = [name in sys.modules for name in {ON_FIRST_USE!r}]
        from nb_backfill import Instance, launch_backfill
        from nb_backfill.backfills import launch_backfill as launch
        from nb_backfill.storage import Storage
        named = [launch_backfill is launch, Instance is Storage, "DynamicPartitionsDefinition" in dir(nbb)]
        print(json.dumps([before, [name in sys.modules for name in {ON_FIRST_USE!r}], named]))
        """
    )
    before, after, named = json.loads(out)
    assert before == [False] * len(ON_FIRST_USE)
    assert after == [True] * len(ON_FIRST_USE)
    assert named == [True, True, True]
    with pytest.raises(AttributeError, match="no attribute 'launch'"):
        nbb.launch  # noqa: B018


def test_import_loads_no_pandas_the_seed_way():
    out = fresh_python(
        "import nb_backfill, sys; print('pandas' in sys.modules, 'anywidget' in sys.modules, 'ipywidgets' in sys.modules)"
    )
    assert out.split() == ["False", "False", "False"]


def test_frames_load_pandas_when_first_needed(tmp_path):
    out = fresh_python(
        """
        import sys
        import nb_backfill as nbb

        @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["a", "b"]))
        def two(context):
            pass

        before = "pandas" in sys.modules
        bf = nbb.launch_backfill(two, all=True)
        bf.wait(60)
        runs, listing, statuses = bf.runs_df(), nbb.list_backfills(), nbb.partition_status(two)
        print(before, type(runs).__module__.split(".")[0], list(runs.index), list(runs["status"].astype(str)))
        print(type(listing).__name__, len(listing), list(statuses["status"].astype(str)))
        print(nbb.launch_backfill(two, all=True, dry_run=True)["action"].tolist())
        """,
        NB_BACKFILL_HOME=str(tmp_path / "store"),
    )
    first, second, third = out.splitlines()
    assert first == "False pandas ['a', 'b'] ['SUCCESS', 'SUCCESS']"
    assert second == "DataFrame 1 ['SUCCESS', 'SUCCESS']"
    assert third == "['launch', 'launch']"


JOBS = """
import nb_backfill as nbb

@nbb.job(partitions_def=nbb.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-06"))
def five(context):
    pass
"""


def test_the_command_launches_and_follows_without_pandas_numpy_or_pendulum(tmp_path):
    """Five daily keys are listed one at a time, so the whole command needs none of them."""
    (tmp_path / "jobs.py").write_text(JOBS)
    out = fresh_python(
        """
        import sys
        from nb_backfill.cli import main
        code = main(["job", "backfill", "-p", "five", "-f", "jobs.py", "--noprompt"])
        print(code, *(name in sys.modules for name in ("pandas", "numpy", "pendulum")))
        """,
        cwd=tmp_path,
        NB_BACKFILL_HOME=str(tmp_path / "store"),
    )
    assert "COMPLETED_SUCCESS" in out
    assert "Partitions (5):" in out
    assert out.splitlines()[-1] == "0 False False False"


def test_numpy_loads_for_the_first_long_list_of_keys():
    out = fresh_python(
        """
        import sys
        import nb_backfill as nbb
        daily = nbb.DailyPartitionsDefinition("2024-01-01", end_date="2025-01-01")
        few = nbb.select_partitions(daily, from_="2024-01-01", to="2024-01-31")
        before = "numpy" in sys.modules
        print(len(few), before, len(daily.get_partition_keys()), "numpy" in sys.modules)
        """
    )
    assert out.split() == ["31", "False", "366", "True"]


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--all"],
        ["--partitions", "2024-01-02,2024-01-04"],
        ["--from", "2024-01-02", "--to", "2024-01-03"],
        ["--order", "desc"],
        ["--missing"],
        ["--failed"],
        ["--from", "2024-01-01", "--to", "2024-01-04", "--missing"],
        ["--executor", "process"],
    ],
)
def test_the_launch_listing_is_the_plans(tmp_path, flags):
    """Whether or not the command builds the plan to list what it launches, it lists the plan's partitions."""

    @nbb.job(partitions_def=nbb.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-06"), name="five")
    def five(context):
        if context.partition_key == "2024-01-03":
            raise RuntimeError("bad day")

    home = str(tmp_path / "store")
    nbb.launch_backfill(five, partitions=["2024-01-01", "2024-01-03"], instance=home).wait(60)
    args = cli.build_parser().parse_args(["job", "backfill", "-p", "five", "--home", home, *flags])
    plan = launch_from(args, five, all_by_default=True, dry_run=True)
    assert cli.launch_keys(args, five) == (plan.loc[plan["action"] == "launch", "partition"].tolist(), len(plan))


def test_follow_wakes_when_the_backfill_ends_not_at_its_next_redraw(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "REDRAW_SECONDS", 120.0)  # only the end's announcement can wake it in time

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["a", "b", "c"]))
    def slowish(context):
        time.sleep(0.2)

    bf = nbb.launch_backfill(slowish, all=True, max_workers=1, instance=str(tmp_path / "store"))
    out, err = io.StringIO(), io.StringIO()
    terminal = cli.Terminal(out, err, io.StringIO(), err_is_tty=False, width=100)
    start = time.monotonic()
    assert cli.follow(bf, terminal, "resume") == 0
    assert time.monotonic() - start < 30
    assert f"backfill {bf.id} of job 'slowish': COMPLETED_SUCCESS" in out.getvalue()
    assert err.getvalue().splitlines()[-1] == "3/3 done: 3 success — 100% done"


def test_the_summary_names_failures_as_the_runs_frame_does(tmp_path):
    """The summary reads failures without building the runs' frame: the same partitions, in backfill
    order, multi keys joined with '|', the first ten and a count of the rest."""

    @nbb.job(
        partitions_def=nbb.MultiPartitionsDefinition(
            {
                "day": nbb.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-11"),
                "site": nbb.StaticPartitionsDefinition(["x", "y"]),
            }
        )
    )
    def sites(context):
        if context.partition_key.keys_by_dimension["site"] == "y" or context.partition_key.startswith("2024-01-03"):
            raise ValueError(f"no data for {context.partition_key}")

    bf = nbb.launch_backfill(sites, all=True, order="desc", instance=str(tmp_path / "store"))
    bf.wait(60)
    runs = bf.runs_df()
    failed = runs[runs["status"] == "FAILURE"]
    assert len(failed) > cli.FAILURES_SHOWN
    named = [f"  {key}  {cli.last_line(error)}" for key, error in zip(cli.partition_keys(failed), failed["error"])]
    text = cli.summary(bf)
    assert text.endswith(
        "\n".join(
            [f"failed partitions ({len(failed)}):", *named[: cli.FAILURES_SHOWN]]
            + [f"  ... {len(failed) - cli.FAILURES_SHOWN} more: nb-backfill runs --backfill {bf.id}"]
        )
    )


def test_python_m_runs_a_process_executor_backfill(tmp_path):
    """`python -m nb_backfill` keeps its command under a main guard, as the process executor asks of
    the script that launches it (it used to refuse: 'line 5 would launch this backfill again')."""
    (tmp_path / "jobs.py").write_text(JOBS)
    done = subprocess.run(
        [sys.executable, "-m", "nb_backfill", "job", "backfill", "-p", "five", "-f", "jobs.py", "--noprompt"]
        + ["--executor", "process", "--max-workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "NB_BACKFILL_HOME": str(tmp_path / "store")},
    )
    assert done.returncode == 0, done.stderr
    assert "COMPLETED_SUCCESS" in done.stdout
