"""The `nb-backfill` command line: Dagster's `job backfill` flags, run in this process with a progress bar.

`nb-backfill job backfill -p JOB -f jobs.py --from 2021-04-01 --to 2021-05-01` lists the partitions,
asks, runs the backfill here and exits 0 when every run succeeded, 1 when any failed, 2 on a usage
error and 130 on Ctrl-C (after canceling cleanly: the backfill stays resumable). It shares its flags
with the `%backfill` magic (nb_backfill.arguments) and its store with notebooks.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .arguments import (
    HelpShown,
    Parser,
    add_backfill_commands,
    add_launch_arguments,
    add_store_argument,
    backfill_or_latest,
    cancel,
    find_job,
    home_of,
    job_names,
    job_summary,
    jobs_in,
    launch_from,
    launch_request,
)
from .backfills import Backfill, check_main_guard, chosen_keys, get_backfill, list_backfills, resume_backfill
from .errors import BackfillStateError, NbBackfillError
from .jobs import Job
from .progress import Progress
from .statuses import BACKFILL_DONE, BackfillStatus, RunStatus
from .storage import Storage, get_instance

if TYPE_CHECKING:  # pandas loads when a command shows a frame: launching and following never do
    import pandas as pd

PROG = "nb-backfill"
MANY_PARTITIONS = 200  # beyond this, show the first and last EDGE keys
EDGE = 50
RUN_FORMATS = ("table", "csv", "json")
FAILURES_SHOWN = 10
REDRAW_SECONDS = 0.1  # progress is redrawn this often; the end of the backfill wakes the command at once


class JobSourceError(NbBackfillError):
    """A job file, notebook or module that cannot be loaded."""


@dataclass
class Terminal:
    """Where the command reads answers and writes output, fixed when it starts (runs later
    reroute sys.stdout and sys.stderr into their logs)."""

    out: TextIO
    err: TextIO
    stdin: TextIO
    err_is_tty: bool
    width: int

    @classmethod
    def current(cls) -> Terminal:
        width = max(20, shutil.get_terminal_size((100, 24)).columns)
        return cls(sys.stdout, sys.stderr, sys.stdin, sys.stderr.isatty(), width)

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def confirm(self, question: str) -> bool:
        """Ask a yes/no question on stdout; only y or yes (any case) is yes, end of input is no."""
        self.out.write(question)
        self.out.flush()
        answer = self.stdin.readline()
        if not self.stdin.isatty():
            self.out.write(answer.rstrip("\n") + "\n")  # echo what a terminal would have shown
        return answer.strip().lower() in ("y", "yes")


# --- loading jobs: -f FILE.py, -f NOTEBOOK.ipynb, -m MODULE


def add_job_source(parser: argparse.ArgumentParser) -> None:
    """Dagster's `-f/--python-file` and `-m/--module-name`: where the jobs are defined."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "-f", "--python-file", dest="file", metavar="FILE", help="a .py file or a .ipynb notebook defining the job"
    )
    source.add_argument(
        "-m", "--module-name", dest="module", metavar="MODULE", help="an importable module defining the job"
    )


def _failure(error: BaseException, filename: str) -> str:
    """`ValueError: bad (line 3)`: the error and the line of `filename` where it happened."""
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == filename]
    where = (
        f" (line {lines[-1]})" if lines and not isinstance(error, SyntaxError) else ""
    )  # a SyntaxError names its line
    return f"{type(error).__name__}: {error}{where}"


def notebook_code(source: str) -> str | None:
    """A code cell's Python: None for a `%%` cell magic, `pass` (same indent) for `%` and `!` lines."""
    if source.lstrip().startswith("%%"):
        return None
    lines = source.splitlines()
    python = [
        line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip()[:1] in ("%", "!") else line for line in lines
    ]
    return "\n".join(python)


def run_notebook(path: Path) -> dict[str, object]:
    """Execute a notebook's code cells in a fresh namespace; an error names the cell."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (ValueError, KeyError, TypeError) as error:
        raise JobSourceError(f"{str(path)!r} is not a Jupyter notebook ({error})") from None
    namespace: dict[str, object] = {"__name__": "__main__"}
    for number, cell in enumerate(cells, 1):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        code = notebook_code(source) if cell.get("cell_type") == "code" else None
        if code is None:
            continue
        filename = f"<{path.name} cell {number}>"
        try:
            exec(compile(code, filename, "exec"), namespace)
        except (Exception, SystemExit) as error:
            first = next((line.strip() for line in source.splitlines() if line.strip()), "")
            raise JobSourceError(
                f"notebook {str(path)!r}, cell {number} ({first[:60]!r}): {_failure(error, filename)}"
            ) from None
    return namespace


def run_python_file(path: Path) -> dict[str, object]:
    """Run a .py file as `__main__`, as `python FILE` would, and return its namespace."""
    try:
        return runpy.run_path(str(path), run_name="__main__")
    except (Exception, SystemExit) as error:
        raise JobSourceError(f"{str(path)!r} failed: {_failure(error, str(path))}") from None


def import_module(name: str) -> dict[str, object]:
    """Import a module (from the working directory too, as Dagster does) and return its namespace."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return vars(importlib.import_module(name))
    except Exception as error:
        raise JobSourceError(f"cannot import module {name!r}: {type(error).__name__}: {error}") from None


def project_source(folder: Path) -> tuple[str | None, str | None]:
    """(python_file, module_name) from `[tool.nb_backfill]` (or Dagster's `[tool.dagster]`) in
    folder/pyproject.toml: how `nb-backfill job backfill -p JOB` finds jobs without -f or -m."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return None, None
    path = folder / "pyproject.toml"
    if not path.is_file():
        return None, None
    try:
        tools = tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise JobSourceError(f"{str(path)!r} is not valid TOML: {error}") from None
    for table in (tools.get("nb_backfill"), tools.get("dagster")):
        if isinstance(table, dict) and (table.get("python_file") or table.get("module_name")):
            return table.get("python_file"), table.get("module_name")
    return None, None


def load_jobs(args: argparse.Namespace) -> tuple[dict[str, Job], str]:
    """The jobs of `-f FILE` or `-m MODULE` (else the project's pyproject.toml), and how to name where they came from."""
    if args.module is None and args.file is None:
        args.file, args.module = project_source(Path.cwd())
        if args.module is None and args.file is None:
            raise JobSourceError(
                "where are the jobs? pass -f FILE.py (or a .ipynb notebook) or -m MODULE, or set python_file or "
                "module_name under [tool.nb_backfill] in ./pyproject.toml"
            )
    if args.module is not None:
        return jobs_in(import_module(args.module)), f"module {args.module!r}"
    path = Path(args.file)
    loaders: dict[str, Callable[[Path], dict[str, object]]] = {".py": run_python_file, ".ipynb": run_notebook}
    if path.suffix not in loaders:
        raise JobSourceError(f"-f takes a .py file or a .ipynb notebook, got {args.file!r}")
    if not path.is_file():
        raise JobSourceError(f"no such file {args.file!r} (-f takes a .py file or a .ipynb notebook)")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the file imports its neighbours
    return jobs_in(loaders[path.suffix](path)), repr(args.file)


# --- showing partitions, progress and results


def columns(keys: Sequence[str], width: int) -> list[str]:
    """Keys in as many aligned columns as fit `width`; a key longer than `width` gets a line of its own."""
    cell = max((len(k) for k in keys if len(k) <= width), default=0) + 2
    per_line = max(1, (width + 2) // cell)
    lines: list[str] = []
    row: list[str] = []
    for key in keys:
        if len(key) > width:
            lines.extend(["".join(row).rstrip()] if row else [])
            lines.append(key)
            row = []
            continue
        row.append(key.ljust(cell))
        if len(row) == per_line:
            lines.append("".join(row).rstrip())
            row = []
    lines.extend(["".join(row).rstrip()] if row else [])
    return lines


def partition_listing(keys: Sequence[str], width: int) -> list[str]:
    """All keys in columns, or, beyond MANY_PARTITIONS, the first and last EDGE with a count between."""
    if len(keys) <= MANY_PARTITIONS:
        return columns(keys, width)
    return columns(keys[:EDGE], width) + [f"... {len(keys) - 2 * EDGE} more ..."] + columns(keys[-EDGE:], width)


def progress_line(progress: Progress, bar: int) -> str:
    """`[###-------] 12/40 done: 11 success, 1 failure, 28 queued — 30% done, 3.2 runs/s`; no bar when `bar` is 0."""
    filled = round(bar * progress.done / progress.total) if progress.total else bar
    drawn = f"[{'#' * filled}{'-' * (bar - filled)}] " if bar else ""
    return f"{drawn}{progress.done}/{progress.total} done: {progress.line()}"


@dataclass
class ProgressDisplay:
    """A progress bar redrawn in place on a terminal, or a plain line a second elsewhere."""

    terminal: Terminal
    printed_at: float = 0.0
    printed_done: int = -1

    def show(self, progress: Progress, final: bool = False) -> None:
        now = time.monotonic()
        if self.terminal.err_is_tty:
            line = progress_line(progress, bar=min(30, self.terminal.width // 3))
            self.terminal.err.write(
                "\r" + line[: self.terminal.width - 1].ljust(self.terminal.width - 1) + ("\n" if final else "")
            )
        elif final or (progress.done != self.printed_done and now - self.printed_at >= 1.0):
            self.terminal.err.write(progress_line(progress, bar=0) + "\n")
            self.printed_at, self.printed_done = now, progress.done
        self.terminal.err.flush()


def last_line(text: object) -> str:
    """The last non-blank line of an error (its message, after the traceback); "" for no error (None or NaN)."""
    lines = [line for line in text.splitlines() if line.strip()] if isinstance(text, str) else []
    return lines[-1].strip() if lines else ""


def partition_keys(frame: pd.DataFrame) -> list[str]:
    """The partition keys of a frame indexed by partition (multi keys joined with '|')."""
    return ["|".join(key) if isinstance(key, tuple) else key for key in frame.index]


def summary(bf: Backfill) -> str:
    """A backfill's status, its runs by status, and its failed partitions with their errors."""
    record = bf.record
    took = f" in {record.ended - record.created:.1f} s" if record.ended else ""
    progress = bf.progress()
    lines = [f"backfill {bf.id} of job {record.job_name!r}: {record.status}{took}"]
    counts = {status: n for status, n in progress.counts.items() if n}
    width = max((len(status) for status in counts), default=0)
    lines += [f"  {status.ljust(width)}  {n:>6}" for status, n in counts.items()]
    if progress.note:
        lines.append(progress.note)
    if not progress.counts.get(RunStatus.FAILURE):
        return "\n".join(lines)
    runs = bf.tracker()  # the runs' partitions and statuses, in backfill order (no frame: no pandas)
    failed = [key for key, status in zip(runs.partitions, runs.status) if status == RunStatus.FAILURE]
    if failed:
        lines.append(f"failed partitions ({len(failed)}):")
        lines += [f"  {key}  {last_line(bf.error(key))}" for key in failed[:FAILURES_SHOWN]]
        if len(failed) > FAILURES_SHOWN:
            lines.append(f"  ... {len(failed) - FAILURES_SHOWN} more: {PROG} runs --backfill {bf.id}")
    return "\n".join(lines)


def follow(bf: Backfill, terminal: Terminal, resume_command: str) -> int:
    """Show progress, following the store's change feed, until the backfill is done: 0 if every
    run succeeded, 1 if not, 130 on Ctrl-C (after canceling it and waiting for its runs to stop, so
    it can be resumed; a second Ctrl-C stops them at once)."""
    tracker = bf.tracker()
    display = ProgressDisplay(terminal)
    storage = tracker.storage
    try:
        while (record := bf.record).status not in BACKFILL_DONE:
            tracker.poll()
            display.show(tracker.progress(record))
            # the change of a backfill's status is announced under this lock: held from the look to the
            # wait, an end announced after the look still wakes the wait (this process runs the backfill)
            with storage.backfill_changed:
                if not _ended(storage, bf.id):
                    storage.backfill_changed.wait(REDRAW_SECONDS)
    except KeyboardInterrupt:
        try:  # the message is written inside: a second Ctrl-C right after it still stops the runs
            terminal.err.write(
                f"\ninterrupted: canceling backfill {bf.id} and waiting for its runs to stop (Ctrl-C again stops them now)...\n"
            )
            bf.cancel()
            bf.wait()
        except KeyboardInterrupt:
            terminal.err.write(f"\n{abort(bf)}\n")
        terminal.print(summary(bf))
        terminal.err.write(f"resume it with: {resume_command}\n")
        return 130
    tracker.poll()
    display.show(tracker.progress(bf.record), final=True)
    terminal.print(summary(bf))
    return 0 if bf.status == BackfillStatus.COMPLETED_SUCCESS else 1


def _ended(storage: Storage, backfill_id: str) -> bool:
    """Whether the stored backfill is done (a plain read: it runs under the store's change lock)."""
    record = storage.get_backfill(backfill_id)
    return record is None or record.status in BACKFILL_DONE


def abort(bf: Backfill) -> str:
    """Stop a backfill's runs now, marking them CANCELED (the process is about to exit)."""
    try:
        return bf.cancel(now=True)
    except BackfillStateError:
        record = bf.record
        if record.status in BACKFILL_DONE:  # it ended meanwhile: nothing left to stop
            return f"backfill {bf.id} is {record.status}"
        raise


def resume_command(args: argparse.Namespace, backfill_id: str) -> str:
    """The command that resumes a backfill with the same job source and store."""
    words = [PROG, "backfill", "resume", backfill_id] + (["-f", args.file] if args.file else ["-m", args.module])
    return shlex.join(words + (["--home", home_of(args)] if home_of(args) else []))


# --- commands


def launch_keys(args: argparse.Namespace, job: Job) -> tuple[list[str], int]:
    """The partitions a launch would run, and how many the flags selected, with the checks a
    launch makes, in its order (options, the process executor's guard of `__main__`, the
    selection's keys, the store), and without pandas: the launch that follows stays fast."""
    choice, options, _tags = launch_request(args, all_by_default=True)
    if options.executor == "process":
        check_main_guard()
    keys = choice.keys(job.partitions_def)
    return chosen_keys(job, choice, keys, get_instance(home_of(args))), len(keys)


def job_backfill(args: argparse.Namespace, terminal: Terminal) -> int:
    """`job backfill`: show the partitions, ask, launch and follow the backfill here."""
    jobs, where = load_jobs(args)
    job = find_job(args.job, jobs, where)
    if args.dry_run:
        terminal.print(launch_from(args, job, all_by_default=True, dry_run=True).to_string(index=False))
        return 0
    keys, selected = launch_keys(args, job)
    of = f" of {selected} selected" if len(keys) < selected else ""
    terminal.print(f"Job: {job.name}\nPartitions ({len(keys)}{of}):")
    terminal.print("\n".join(partition_listing(keys, terminal.width)))
    if (
        keys
        and not args.noprompt
        and not terminal.confirm(f"Do you want to proceed with the backfill ({len(keys)} partitions)? [y/N] ")
    ):
        terminal.print("Aborted: nothing was launched.")
        return 0
    bf = launch_from(
        args, job, all_by_default=True, dry_run=False
    )  # with nothing to launch, this raises the API's error
    terminal.print(f"Launched backfill {bf.id}")
    return follow(bf, terminal, resume_command(args, bf.id))


def job_list(args: argparse.Namespace, terminal: Terminal) -> int:
    """`job list`: one line per job of the file or module."""
    jobs, where = load_jobs(args)
    terminal.print("\n".join(job_summary(jobs[name]) for name in job_names(jobs, where)))
    return 0


def backfill_list(args: argparse.Namespace, terminal: Terminal) -> int:
    """`backfill list`: every stored backfill, newest first, with its run counts."""
    frame = list_backfills(instance=home_of(args))
    terminal.print(frame.to_string() if len(frame) else "no backfills yet")
    return 0


def backfill_status(args: argparse.Namespace, terminal: Terminal) -> int:
    """`backfill status [ID]`: the summary of a backfill (the latest without an id)."""
    terminal.print(summary(backfill_or_latest(args.id, home_of(args))))
    return 0


def backfill_cancel(args: argparse.Namespace, terminal: Terminal) -> int:
    """`backfill cancel ID`."""
    terminal.print(cancel(args.id, home_of(args)))
    return 0


def _job_of(args: argparse.Namespace) -> Job:
    """The job of backfill `args.id`, found in `-f/-m`."""
    jobs, where = load_jobs(args)
    return find_job(get_backfill(args.id, instance=home_of(args)).record.job_name, jobs, where)


def backfill_resume(args: argparse.Namespace, terminal: Terminal) -> int:
    """`backfill resume ID`: run here every partition not yet SUCCESS, and follow it."""
    bf = resume_backfill(args.id, job=_job_of(args), instance=home_of(args))
    return follow(bf, terminal, resume_command(args, bf.id))


def backfill_retry(args: argparse.Namespace, terminal: Terminal) -> int:
    """`backfill retry ID`: run the failed partitions again, and follow it."""
    bf = get_backfill(args.id, job=_job_of(args), instance=home_of(args)).retry_failed(args.from_failure)
    return follow(bf, terminal, resume_command(args, bf.id))


def runs_frame(bf: Backfill) -> pd.DataFrame:
    """A backfill's runs for export: the partition as a column, ISO times, durations in seconds."""
    import pandas as pd

    runs = bf.runs_df()
    keys = partition_keys(runs)
    runs = runs.reset_index(drop=True)
    runs.insert(0, "partition", keys)
    runs["duration"] = runs["duration"].dt.total_seconds()
    for column in ("start_time", "end_time"):
        runs[column] = runs[column].map(lambda t: t.isoformat() if pd.notna(t) else None)
    return runs


def runs(args: argparse.Namespace, terminal: Terminal) -> int:
    """`runs --backfill ID`: one row per run as a table, CSV or JSON."""
    frame = runs_frame(get_backfill(args.backfill, instance=home_of(args)))
    if args.format == "csv":
        terminal.out.write(frame.to_csv(index=False))
    elif args.format == "json":
        terminal.print(json.dumps(frame.astype(object).where(frame.notna(), None).to_dict("records"), indent=1))
    else:
        terminal.print(frame.assign(error=frame["error"].map(last_line)).to_string(index=False))
    return 0


def build_parser() -> Parser:
    """The `nb-backfill` parser: `job backfill|list`, `backfill list|status|cancel|resume|retry`, `runs`."""
    parser = Parser(prog=PROG, description="Dagster-style partitioned backfills, from a terminal.")
    groups = parser.add_subparsers(title="commands", dest="group", required=True, metavar="COMMAND")

    job = groups.add_parser("job", help="launch a backfill of a job, or list jobs").add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )
    launch = job.add_parser("backfill", help="list the partitions, ask, and run a backfill here")
    add_launch_arguments(launch)
    add_job_source(launch)
    launch.add_argument("--noprompt", action="store_true", help="do not ask before launching")
    launch.set_defaults(handler=job_backfill)
    listing = job.add_parser("list", help="the jobs of a file, notebook or module")
    add_job_source(listing)
    listing.set_defaults(handler=job_list)

    backfill = groups.add_parser("backfill", help="stored backfills").add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )
    add_backfill_commands(backfill)
    handlers = {
        "list": backfill_list,
        "status": backfill_status,
        "cancel": backfill_cancel,
        "resume": backfill_resume,
        "retry": backfill_retry,
    }
    for name, handler in handlers.items():
        backfill.choices[name].set_defaults(handler=handler)
    for name in ("resume", "retry"):
        add_job_source(backfill.choices[name])

    run_list = groups.add_parser("runs", help="the runs of a backfill as a table, CSV or JSON")
    run_list.add_argument("--backfill", required=True, metavar="ID", help="the backfill")
    run_list.add_argument("--format", choices=RUN_FORMATS, default="table", help="default: %(default)s")
    add_store_argument(run_list)
    run_list.set_defaults(handler=runs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `nb-backfill` and return its exit code: nb_backfill's errors are one `error:` line and 2."""
    terminal = Terminal.current()
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args, terminal)
    except HelpShown:
        return 0
    except NbBackfillError as error:
        terminal.err.write(f"error: {error}\n")
        return 2
    except KeyboardInterrupt:
        terminal.err.write("\ninterrupted\n")
        return 130
