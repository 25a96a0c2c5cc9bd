"""The `%backfill` magic through a real IPython shell: launch, --wait, --dry-run, the selector, the
backfill commands, one-line usage errors, help, and a store shared with the command line."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import nb_backfill
import nb_backfill as nbb
import nb_backfill.magic

LETTERS = nbb.StaticPartitionsDefinition(["a", "b", "c", "d"])
FAILING: set[str] = set()
GATE = threading.Event()


@nbb.job(partitions_def=LETTERS)
def magic_letters(context):
    if context.partition_key in FAILING:
        raise ValueError(f"bad letter {context.partition_key}")


@nbb.job(partitions_def=LETTERS)
def magic_gated(context):
    GATE.wait(10)


@pytest.fixture
def shell(tmp_path, monkeypatch):
    """A shell with the extension loaded, a job under a variable name, a private store, and
    everything `display`ed collected in `shell.shown`."""
    monkeypatch.setenv("NB_BACKFILL_HOME", str(tmp_path / "store"))
    ipython = InteractiveShell.instance()
    ipython.run_line_magic("load_ext", "nb_backfill")
    shown: list[object] = []
    monkeypatch.setattr(nb_backfill.magic, "display", shown.append)
    ipython.user_ns.update(letters=magic_letters, magic_gated=magic_gated)
    ipython.shown = shown
    FAILING.clear()
    GATE.clear()
    yield ipython
    GATE.set()
    for name in ("letters", "magic_gated"):
        ipython.user_ns.pop(name, None)


def backfill(shell, line: str):
    shell.run_line_magic("backfill", line)
    return shell.shown[-1]


def test_launch_returns_at_once_and_wait_blocks_until_done(shell, capsys):
    start = time.perf_counter()
    bf = backfill(shell, "-p magic_gated --all")
    assert time.perf_counter() - start < 1.0
    assert isinstance(bf, nbb.Backfill) and bf.status == "REQUESTED"
    GATE.set()
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"

    waited = backfill(shell, "-p letters --from b --to c --tags team=data --wait")  # the variable's name works
    assert waited.status == "COMPLETED_SUCCESS" and waited.counts()["SUCCESS"] == 2
    assert waited.record.tags == {"team": "data"}
    assert capsys.readouterr().out.endswith(f"backfill {waited.id}: COMPLETED_SUCCESS\n")


def test_dry_run_shows_the_plan_and_launches_nothing(shell):
    plan = backfill(shell, "-p magic_letters --partitions a,c --dry-run")
    assert isinstance(plan, pd.DataFrame)
    assert list(plan["partition"]) == ["a", "c"] and set(plan["action"]) == {"launch"}
    assert len(nbb.list_backfills()) == 0


def test_a_job_alone_shows_the_selector_widget(shell):
    widget = backfill(shell, "-p letters")
    assert isinstance(widget, nbb.BackfillWidget) and widget.job_name == "magic_letters"
    assert widget.view == "history"  # nothing launched yet
    assert len(nbb.list_backfills()) == 0
    widget.close()


def test_list_status_cancel_resume(shell, capsys):
    bf = backfill(shell, "-p magic_gated --all --max-workers 1")
    listing = backfill(shell, "list")
    assert list(listing.index) == [bf.id] and listing.loc[bf.id, "job_name"] == "magic_gated"
    assert backfill(shell, "status").id == bf.id  # the latest
    assert backfill(shell, f"status {bf.id}").id == bf.id

    shell.run_line_magic("backfill", f"cancel {bf.id}")
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"backfill {bf.id}: CANCEL")
    GATE.set()
    assert bf.wait(timeout=10) == "CANCELED"

    resumed = backfill(shell, f"resume {bf.id}")
    assert resumed.id == bf.id and resumed.wait(timeout=10) == "COMPLETED_SUCCESS"
    assert resumed.counts()["SUCCESS"] == 4


def test_retry_runs_the_failed_partitions_again(shell):
    FAILING.add("b")
    bf = backfill(shell, "-p letters --all --wait")
    assert bf.status == "COMPLETED_FAILED"
    FAILING.clear()
    retried = backfill(shell, f"retry {bf.id}")
    assert retried.wait(timeout=10) == "COMPLETED_SUCCESS"
    assert retried.runs_df().loc["b", "attempt"] == 2


def test_unknown_job_lists_the_available_ones(shell):
    with pytest.raises(
        UsageError,
        match=r"unknown job 'leters' in this notebook; did you mean 'letters', 'magic_letters'\? \(available jobs: 'magic_gated', 'magic_letters'\)",
    ):
        shell.run_line_magic("backfill", "-p leters --all")


@pytest.mark.parametrize(
    "line, message",
    [
        ("-p letters --executor gpu", "UsageError: argument --executor: invalid choice: 'gpu'"),
        ("-p letters --partitions a,zz", "UsageError: unknown partition key 'zz'"),
        ("-p letters --all --partitions a", "UsageError: choose one selection"),
        (
            "-p letters --tags '{\"a\": 1}' --all",
            "UsageError: argument --tags: tags must map strings to strings, got 'a': 1",
        ),
        ("status nope", "UsageError: unknown backfill id 'nope'"),
        ("frobnicate", "UsageError: argument COMMAND: invalid choice: 'frobnicate'"),
        ("-p 'unclosed", "UsageError: cannot split the line"),
        ("", "UsageError: choose a job with -p JOB: this notebook has"),
    ],
)
def test_usage_errors_are_one_line_without_traceback(shell, capsys, line, message):
    shell.run_cell(f"%backfill {line}")
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(message), err
    assert len(nbb.list_backfills()) == 0


def test_help(shell, capsys):
    shell.run_cell("%backfill?")
    out = capsys.readouterr().out
    assert "usage: %backfill -p JOB [selection] [options]" in out and "--partitions KEYS" in out and "retry" in out
    shell.run_line_magic("backfill", "--help")
    assert "--dry-run" in capsys.readouterr().out


def test_a_backfill_launched_in_a_terminal_shows_in_backfill_list(shell, tmp_path):
    (tmp_path / "jobs.py").write_text(
        "import nb_backfill as nbb\n"
        "@nbb.job(partitions_def=nbb.StaticPartitionsDefinition(['x', 'y']))\n"
        "def from_terminal(context):\n    pass\n"
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "nb-backfill"),
            "job",
            "backfill",
            "-p",
            "from_terminal",
            "-f",
            "jobs.py",
            "--noprompt",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listing = backfill(shell, "list")
    assert list(listing["job_name"]) == ["from_terminal"] and list(listing["status"]) == ["COMPLETED_SUCCESS"]
