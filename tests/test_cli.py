"""The installed `nb-backfill` console script, end to end: the seed documentation's commands, prompts,
exit codes, Ctrl-C and resume, notebooks as job files, run exports, and long or many keys."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import nb_backfill as nbb
from nb_backfill.cli import columns, notebook_code, partition_listing, progress_line
from nb_backfill.progress import Progress

SCRIPT = Path(sys.executable).parent / "nb-backfill"

JOBS = textwrap.dedent(
    """
    import os, time
    import nb_backfill as nbb

    @nbb.job(partitions_def=nbb.DailyPartitionsDefinition(start_date="2021-04-01", end_date="2021-06-01"))
    def do_stuff_partitioned(context):
        pass

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["a", "b", "bad"]))
    def flaky(context):
        if context.partition_key == "bad" and os.path.exists(os.environ.get("FAIL_FLAG", "")):
            raise RuntimeError("bad partition")

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition([f"s{i:02d}" for i in range(20)]))
    def slow(context):
        time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["k" * 300, "short"]))
    def long_keys(context):
        pass

    @nbb.step
    def first(context):
        return context.partition_key

    @nbb.step
    def second(context, first):
        if first == "bad" and os.path.exists(os.environ.get("FAIL_FLAG", "")):
            raise RuntimeError("bad partition")
        return first

    two_steps = nbb.Job("two_steps", [first, second], nbb.StaticPartitionsDefinition(["a", "bad"]))
    """
)


def _notebook(*cells: tuple[str, str]) -> str:
    return json.dumps(
        {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {},
            "cells": [
                {"cell_type": kind, "metadata": {}, "source": source}
                | ({"outputs": [], "execution_count": None} if kind == "code" else {})
                for kind, source in cells
            ],
        }
    )


class Cli:
    """Runs the installed script in a folder with its own store and job file."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.store = folder / "store"
        self.fail_flag = folder / "fail"
        (folder / "jobs.py").write_text(JOBS)
        self.env = {
            **os.environ,
            "NB_BACKFILL_HOME": str(self.store),
            "COLUMNS": "100",
            "FAIL_FLAG": str(self.fail_flag),
        }

    def __call__(self, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SCRIPT), *args],
            cwd=self.folder,
            env={**self.env, **env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        """A running command that a SIGINT interrupts (even if this test runs where SIGINT is ignored)."""
        return subprocess.Popen(
            [str(SCRIPT), *args],
            cwd=self.folder,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def backfills(self):
        return nbb.list_backfills(instance=self.store)

    def wait_for_successes(self, count: int) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.store.exists():
                listing = self.backfills()
                if len(listing) and listing["succeeded"].iloc[0] >= count:
                    return listing.index[0]
            time.sleep(0.05)
        raise AssertionError(f"no backfill reached {count} successes")


@pytest.fixture
def cli(tmp_path):
    return Cli(tmp_path)


def _error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_the_seed_documentations_three_commands(cli):
    everything = cli("job", "backfill", "-p", "do_stuff_partitioned", "-f", "jobs.py", stdin="y\n")
    assert everything.returncode == 0, everything.stderr
    assert "Do you want to proceed with the backfill (61 partitions)? [y/N]" in everything.stdout
    assert "Job: do_stuff_partitioned" in everything.stdout
    assert "2021-04-01  2021-04-02" in everything.stdout and "2021-05-31" in everything.stdout
    assert "COMPLETED_SUCCESS" in everything.stdout

    two = cli(
        "job",
        "backfill",
        "-p",
        "do_stuff_partitioned",
        "-f",
        "jobs.py",
        "--partitions",
        "2021-04-01,2021-04-02",
        stdin="y\n",
    )
    assert two.returncode == 0 and "(2 partitions)? [y/N]" in two.stdout

    month = cli(
        "job",
        "backfill",
        "-p",
        "do_stuff_partitioned",
        "-f",
        "jobs.py",
        "--from",
        "2021-04-01",
        "--to",
        "2021-05-01",
        stdin="y\n",
    )
    assert month.returncode == 0 and "(31 partitions)? [y/N]" in month.stdout

    listing = cli.backfills()
    assert list(listing["partitions"]) == [31, 2, 61]  # newest first
    assert set(listing["status"]) == {"COMPLETED_SUCCESS"}


@pytest.mark.parametrize("answer", ["n\n", ""])
def test_no_or_no_answer_launches_nothing(cli, answer):
    result = cli("job", "backfill", "-j", "flaky", "-f", "jobs.py", stdin=answer)
    assert result.returncode == 0
    assert "(3 partitions)? [y/N]" in result.stdout and "Aborted: nothing was launched." in result.stdout
    assert len(cli.backfills()) == 0


def test_exit_code_is_1_when_a_run_fails_and_the_summary_names_it(cli):
    cli.fail_flag.touch()
    result = cli(
        "job",
        "backfill",
        "-p",
        "flaky",
        "-f",
        "jobs.py",
        "--noprompt",
        "--tags",
        '{"team": "data"}',
        "--tags",
        "owner=me",
    )
    assert result.returncode == 1
    assert "Do you want" not in result.stdout
    assert "COMPLETED_FAILED" in result.stdout
    assert "failed partitions (1):\n  bad  RuntimeError: bad partition" in result.stdout
    assert "3/3 done: 2 success, 1 failure" in result.stderr  # progress as plain lines: stderr is not a terminal
    backfill_id = cli.backfills().index[0]
    assert nbb.get_backfill(backfill_id, instance=cli.store).record.tags == {"team": "data", "owner": "me"}


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["-p", "flakx"],
            "error: unknown job 'flakx' in 'jobs.py'; did you mean 'flaky'? (available jobs: 'do_stuff_partitioned', 'flaky'",
        ),
        ([], "error: choose a job with -p JOB: 'jobs.py' has 'do_stuff_partitioned', 'flaky'"),
        (["-p", "flaky", "--partitions", "a,zz"], "error: unknown partition key 'zz'"),
        (["-p", "flaky", "--from", "bad", "--to", "a"], "error: from 'bad' comes after to 'a'"),
        (
            ["-p", "flaky", "--executor", "gpu"],
            "error: argument --executor: invalid choice: 'gpu' (choose from 'thread', 'process', 'dask')",
        ),
        (["-p", "flaky", "--tags", "team"], "error: argument --tags: expected key=value or JSON"),
        (
            ["-p", "flaky", "--max-concurrent", "2"],
            "error: max_concurrent and tag_concurrency_limits apply to the queued coordinator",
        ),
    ],
)
def test_usage_errors_are_one_line_exit_2_and_write_nothing(cli, args, expected):
    result = cli("job", "backfill", "-f", "jobs.py", "--noprompt", *args)
    assert result.returncode == 2
    assert _error_line(result).startswith(expected)
    assert not cli.store.exists()


def test_the_seed_commands_verbatim_with_the_project_in_pyproject(cli):
    (cli.folder / "pyproject.toml").write_text('[tool.nb_backfill]\npython_file = "jobs.py"\n')
    seed = [
        ["job", "backfill", "-p", "do_stuff_partitioned"],
        ["job", "backfill", "-p", "do_stuff_partitioned", "--partitions", "2021-04-01,2021-04-02"],
        ["job", "backfill", "-p", "do_stuff_partitioned", "--from", "2021-04-01", "--to", "2021-05-01"],
    ]
    for args, count in zip(seed, (61, 2, 31)):
        result = cli(*args, stdin="y\n")
        assert result.returncode == 0, result.stderr
        assert f"({count} partitions)? [y/N]" in result.stdout and "COMPLETED_SUCCESS" in result.stdout
    (cli.folder / "pyproject.toml").write_text('[tool.dagster]\nmodule_name = "jobs"\n')
    assert cli("job", "list").returncode == 0


def test_a_job_source_is_required_and_must_exist(cli):
    assert "pass -f FILE.py (or a .ipynb notebook) or -m MODULE, or set python_file" in _error_line(
        cli("job", "backfill", "-p", "flaky")
    )
    assert (
        _error_line(cli("job", "list", "-f", "nothere.py"))
        == "error: no such file 'nothere.py' (-f takes a .py file or a .ipynb notebook)"
    )
    assert "cannot import module 'nothere'" in _error_line(cli("job", "list", "-m", "nothere"))


def test_ctrl_c_cancels_cleanly_and_resume_finishes(cli):
    running = cli.start(
        "job", "backfill", "-p", "slow", "-f", "jobs.py", "--noprompt", "--max-workers", "2", SLOW_SECONDS="0.3"
    )
    backfill_id = cli.wait_for_successes(2)
    running.send_signal(signal.SIGINT)
    _out, err = running.communicate(timeout=20)
    assert running.returncode == 130, err
    assert f"resume it with: nb-backfill backfill resume {backfill_id} -f jobs.py" in err
    assert "Traceback" not in err
    bf = nbb.get_backfill(backfill_id, instance=cli.store)
    assert bf.status == "CANCELED"
    assert 2 <= bf.counts()["SUCCESS"] < 20 and bf.counts()["CANCELED"] == 20 - bf.counts()["SUCCESS"]

    resumed = cli("backfill", "resume", backfill_id, "-f", "jobs.py")
    assert resumed.returncode == 0, resumed.stderr
    assert bf.status == "COMPLETED_SUCCESS" and bf.counts()["SUCCESS"] == 20


def test_cancel_from_another_terminal_stops_the_running_command(cli):
    running = cli.start(
        "job", "backfill", "-p", "slow", "-f", "jobs.py", "--noprompt", "--max-workers", "2", SLOW_SECONDS="0.3"
    )
    backfill_id = cli.wait_for_successes(1)
    canceled = cli("backfill", "cancel", backfill_id)
    assert canceled.returncode == 0 and canceled.stdout.startswith(f"canceling backfill {backfill_id}: ")
    assert canceled.stdout.splitlines()[-1].startswith(f"backfill {backfill_id}: CANCEL")
    out, err = running.communicate(timeout=20)
    assert running.returncode == 1, err  # not every run succeeded
    assert f"backfill {backfill_id} of job 'slow': CANCELED" in out


def test_retry_runs_the_failed_partitions_again(cli):
    cli.fail_flag.touch()
    assert cli("job", "backfill", "-p", "flaky", "-f", "jobs.py", "--noprompt").returncode == 1
    backfill_id = cli.backfills().index[0]
    cli.fail_flag.unlink()
    retried = cli("backfill", "retry", backfill_id, "-f", "jobs.py")
    assert retried.returncode == 0, retried.stderr
    assert f"backfill {backfill_id} of job 'flaky': COMPLETED_SUCCESS" in retried.stdout
    runs = nbb.get_backfill(backfill_id, instance=cli.store).runs_df()
    assert runs.loc["bad", "attempt"] == 2


def test_retry_from_failure_reuses_the_steps_that_succeeded(cli):
    cli.fail_flag.touch()
    assert cli("job", "backfill", "-p", "two_steps", "-f", "jobs.py", "--noprompt").returncode == 1
    backfill_id = cli.backfills().index[0]
    cli.fail_flag.unlink()
    retried = cli("backfill", "retry", backfill_id, "--from-failure", "-f", "jobs.py")
    assert retried.returncode == 0, retried.stderr
    bad = nbb.get_backfill(backfill_id, instance=cli.store).run("bad")
    rows = nbb.get_instance(cli.store).step_rows(backfill_id)
    assert bad.attempt == 2 and sorted(r[1:3] for r in rows if r[0] == bad.run_id) == [
        ("first", "REUSED"),
        ("second", "SUCCESS"),
    ]


def test_list_status_and_runs_in_every_format(cli):
    cli.fail_flag.touch()
    cli("job", "backfill", "-p", "flaky", "-f", "jobs.py", "--noprompt")
    backfill_id = cli.backfills().index[0]

    listing = cli("backfill", "list")
    assert listing.returncode == 0 and backfill_id in listing.stdout and "COMPLETED_FAILED" in listing.stdout
    latest = cli("backfill", "status")
    assert latest.stdout == cli("backfill", "status", backfill_id).stdout
    assert latest.stdout.startswith(f"backfill {backfill_id} of job 'flaky': COMPLETED_FAILED")
    assert "unknown backfill id 'nope'" in _error_line(cli("backfill", "status", "nope"))

    rows = list(csv.DictReader(io.StringIO(cli("runs", "--backfill", backfill_id, "--format", "csv").stdout)))
    assert [(r["partition"], r["status"]) for r in rows] == [("a", "SUCCESS"), ("b", "SUCCESS"), ("bad", "FAILURE")]
    records = json.loads(cli("runs", "--backfill", backfill_id, "--format", "json").stdout)
    assert [r["status"] for r in records] == ["SUCCESS", "SUCCESS", "FAILURE"]
    assert records[0]["error"] is None and "RuntimeError: bad partition" in records[2]["error"]
    assert isinstance(records[0]["duration"], float) and records[0]["start_time"].endswith("+00:00")
    table = cli("runs", "--backfill", backfill_id).stdout.splitlines()
    assert table[0].split() == [
        "partition",
        "run_id",
        "status",
        "attempt",
        "start_time",
        "end_time",
        "duration",
        "error",
    ]
    assert table[3].endswith("RuntimeError: bad partition")


def test_a_300_character_key_prints_alone_on_its_line(cli):
    result = cli("job", "backfill", "-p", "long_keys", "-f", "jobs.py", "--noprompt", COLUMNS="80")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "k" * 300 in lines and "short" in lines


def test_jobs_load_from_a_notebook_skipping_magics_and_shell_lines(cli):
    (cli.folder / "jobs.ipynb").write_text(
        _notebook(
            ("markdown", "# Jobs"),
            ("code", "%load_ext nb_backfill\nimport nb_backfill as nbb\n!echo hello"),
            ("code", "%%bash\nexit 1"),
            (
                "code",
                "@nbb.job(partitions_def=nbb.StaticPartitionsDefinition(['x', 'y']))\ndef from_notebook(context):\n    if False:\n        !ls\n",
            ),
            ("code", "%backfill -p from_notebook --all"),
        )
    )
    assert (
        cli("job", "list", "-f", "jobs.ipynb").stdout
        == "from_notebook: 2 partitions from 'x' to 'y' (steps: from_notebook)\n"
    )
    result = cli("job", "backfill", "-p", "from_notebook", "-f", "jobs.ipynb", "--noprompt")
    assert result.returncode == 0, result.stderr
    assert "COMPLETED_SUCCESS" in result.stdout


def test_an_error_in_a_notebook_cell_names_the_cell(cli):
    (cli.folder / "broken.ipynb").write_text(
        _notebook(("code", "import nb_backfill as nbb"), ("code", "\nx = 1\ny = x / 0"))
    )
    result = cli("job", "list", "-f", "broken.ipynb")
    assert result.returncode == 2
    assert (
        _error_line(result)
        == "error: notebook 'broken.ipynb', cell 2 ('x = 1'): ZeroDivisionError: division by zero (line 3)"
    )


def test_dry_run_prints_the_plan_and_python_m_works(cli):
    cli("job", "backfill", "-p", "flaky", "-f", "jobs.py", "--partitions", "a", "--noprompt")
    plan = subprocess.run(
        [
            sys.executable,
            "-m",
            "nb_backfill",
            "job",
            "backfill",
            "-p",
            "flaky",
            "-f",
            "jobs.py",
            "--missing",
            "--dry-run",
        ],
        cwd=cli.folder,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    assert [line.split()[:2] for line in plan.stdout.splitlines()[1:]] == [
        ["a", "skip"],
        ["b", "launch"],
        ["bad", "launch"],
    ]
    assert len(cli.backfills()) == 1


def test_columns_fit_the_width_and_long_keys_stand_alone():
    assert columns(["a", "bb", "ccc", "d"], width=11) == ["a    bb", "ccc  d"]
    assert columns(["short", "x" * 30, "tiny"], width=20) == ["short", "x" * 30, "tiny"]
    assert columns(["x" * 30], width=20) == ["x" * 30]


def test_huge_selections_show_the_first_and_last_50():
    keys = [f"p{i:04d}" for i in range(1000)]
    lines = partition_listing(keys, width=1000)
    assert len(lines) == 3 and lines[1] == "... 900 more ..."
    assert lines[0].split() == keys[:50] and lines[2].split() == keys[-50:]
    assert partition_listing(keys[:200], width=10_000)[0].split() == keys[:200]  # 200 are all shown


def test_notebook_code_keeps_line_numbers():
    assert notebook_code("%%time\nx = 1") is None
    assert notebook_code("%matplotlib inline\nx = 1\nif x:\n    !ls") == "pass\nx = 1\nif x:\n    pass"


def test_progress_line():
    counts = {"QUEUED": 5, "SUCCESS": 4, "FAILURE": 1}
    line = progress_line(Progress("b", "REQUESTED", counts, per_minute=120.0), bar=10)
    assert line == "[#####-----] 5/10 done: 5 queued, 4 success, 1 failure — 50% done, 2.0 runs/s, ETA 2.5 s"
    assert progress_line(Progress("b", "REQUESTED", {}), bar=0) == "0/0 done: no runs — 0% done"
    paused = Progress("b", "PAUSED", counts, note="paused: resume it to go on")
    assert progress_line(paused, bar=0).endswith("50% done, paused: resume it to go on")  # no rate, no ETA while paused


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--partitions", 'a,"b'], "error: cannot split the partitions 'a,\"b' into keys (unexpected end of data): "),
        (["--partitions", b"a,caf\xe9"], "error: partition key 'caf\\udce9' is not valid text"),
        (
            ["--max-workers", "100000"],
            "error: max_workers=100,000 is more than the thread executor can run at once here: give at most 256",
        ),
    ],
    ids=["unbalanced-quote", "not-utf8", "too-many-workers"],
)
def test_bad_values_are_one_error_line_exit_2_and_write_nothing(cli, args, expected):
    result = cli("job", "backfill", "-p", "flaky", "-f", "jobs.py", "--noprompt", *args)
    assert result.returncode == 2
    assert _error_line(result).startswith(expected)
    assert not cli.store.exists()


def test_a_second_ctrl_c_stops_the_runs_now_and_leaves_the_backfill_canceled(cli):
    running = cli.start(
        "job", "backfill", "-p", "slow", "-f", "jobs.py", "--noprompt", "--max-workers", "2", SLOW_SECONDS="20"
    )
    deadline = time.monotonic() + 20
    backfill_id = None
    while time.monotonic() < deadline and backfill_id is None:  # two runs sleeping: a cancel would wait for them
        if cli.store.exists() and len(listing := cli.backfills()):
            bf = nbb.get_backfill(listing.index[0], instance=cli.store)
            backfill_id = bf.id if bf.counts()["STARTED"] == 2 else None
        time.sleep(0.05)
    assert backfill_id is not None, "the runs did not start"
    running.send_signal(signal.SIGINT)
    while "interrupted: canceling backfill" not in (line := running.stderr.readline()):
        assert line, "the first Ctrl-C was not acknowledged"
    running.send_signal(signal.SIGINT)
    out, err = running.communicate(timeout=10)  # not the 20 s the runs would take to stop by themselves
    assert running.returncode == 130, err
    assert f"resume it with: nb-backfill backfill resume {backfill_id} -f jobs.py" in err
    assert "Traceback" not in err
    assert f"backfill {backfill_id} of job 'slow': CANCELED" in out
    bf = nbb.get_backfill(backfill_id, instance=cli.store)
    assert bf.status == "CANCELED"
    assert bf.counts()["CANCELED"] == 20
