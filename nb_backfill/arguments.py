"""The one definition of the backfill flags, shared by the `%backfill` magic and the `nb-backfill` command.

Both faces build their argparse parsers with these functions, launch what was parsed with
`launch_from` (one `Choice`, checked options, the Python API), and find jobs and backfills the same
way, so flags, help and error messages cannot drift apart.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, NoReturn

from . import jobs
from .backfills import Backfill, get_backfill, launch, launch_backfill
from .errors import DefinitionError, NbBackfillError, UnknownBackfillError, quoted_list
from .executors import EXECUTORS
from .jobs import Job
from .options import COORDINATORS, ORDERS, LaunchOptions, check_options
from .selection import Choice
from .storage import get_instance

if TYPE_CHECKING:
    import pandas as pd

SELECTION_FLAGS = ("partitions", "from_", "to", "all", "missing", "failed", "stale")
_API_DEFAULTS = {name: p.default for name, p in inspect.signature(launch_backfill).parameters.items()}


class UsageProblem(NbBackfillError, ValueError):
    """A command line or a magic line that cannot be parsed."""


class UnknownJobError(NbBackfillError, LookupError):
    """No job of that name where the face looked (a file, a module, a notebook's namespace)."""


class HelpShown(Exception):
    """Raised instead of exiting the process once `-h/--help` has printed the help."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises a one-line UsageProblem (or HelpShown) instead of exiting,
    so a notebook kernel survives a typo and the command line prints one `error:` line."""

    def error(self, message: str) -> NoReturn:
        raise UsageProblem(f"{message} (see '{self.prog} --help')")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise HelpShown()


def parse_tags(text: str) -> dict[str, str]:
    """A `--tags` value (jobs.parse_tags), as argparse wants its errors."""
    try:
        return jobs.parse_tags(text)
    except DefinitionError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_store_argument(parser: argparse.ArgumentParser) -> None:
    """`--home DIR`; left unset when absent (read it with `home_of`) so a command's `--home`
    and its parent's cannot overwrite each other."""
    parser.add_argument(
        "--home",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the store's folder, shared by notebooks and terminals (default: $NB_BACKFILL_HOME, else ./.nb_backfill)",
    )


def home_of(args: argparse.Namespace) -> str | None:
    """The `--home` given, or None for the default store."""
    return getattr(args, "home", None)


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a launch: job, selection (Dagster's names) and how to run it."""
    parser.add_argument(
        "-p", "-j", "--job", dest="job", metavar="JOB", help="the job's name (in a notebook, also its variable)"
    )
    selection = parser.add_argument_group("selection (choose one; --missing, --failed or --stale may narrow it)")
    selection.add_argument(
        "--partitions",
        metavar="KEYS",
        help="comma-separated partition keys; quote or \\-escape a key that contains a comma",
    )
    selection.add_argument("--from", dest="from_", metavar="KEY", help="first partition of an inclusive range")
    selection.add_argument("--to", metavar="KEY", help="last partition of an inclusive range")
    selection.add_argument("--all", action="store_true", help="every partition")
    selection.add_argument(
        "--missing", action="store_true", help="only partitions never run or whose latest run failed"
    )
    selection.add_argument("--failed", action="store_true", help="only partitions whose latest run failed")
    selection.add_argument(
        "--stale", action="store_true", help="only partitions that succeeded with older code (rerun what changed)"
    )
    running = parser.add_argument_group("running")
    running.add_argument(
        "--tags",
        action="append",
        type=parse_tags,
        metavar="TAGS",
        help='tags of the backfill: key=value (repeatable) or JSON such as \'{"key": "value"}\'',
    )
    running.add_argument(
        "--coordinator",
        choices=COORDINATORS,
        default=_API_DEFAULTS["coordinator"],
        help="how runs start (default: %(default)s; queued honours --max-concurrent)",
    )
    running.add_argument("--max-concurrent", type=int, metavar="N", help="runs at once (queued coordinator)")
    running.add_argument(
        "--executor", choices=EXECUTORS, default=_API_DEFAULTS["executor"], help="where runs run (default: %(default)s)"
    )
    running.add_argument(
        "--max-workers", type=int, metavar="N", help="threads or processes of the executor (dask: of a local cluster)"
    )
    running.add_argument(
        "--dask-address", metavar="ADDRESS", help="the Dask scheduler for --executor dask, such as tcp://host:8786"
    )
    running.add_argument("--retries", type=int, metavar="N", help="retries of a failed run (default: the job's)")
    running.add_argument(
        "--order",
        choices=ORDERS,
        default=_API_DEFAULTS["order"],
        help="launch order (default: %(default)s; canary: the partitions likeliest to break first)",
    )
    running.add_argument(
        "--stop-on-canary-failure", action="store_true", help="with --order canary: pause when a canary fails"
    )
    running.add_argument(
        "--dry-run", action="store_true", help="show the plan (partition, action, reason); launch nothing"
    )
    add_store_argument(parser)


def add_backfill_commands(commands: argparse._SubParsersAction) -> None:
    """The commands on stored backfills: list, status [ID], cancel ID, resume ID, retry ID."""
    commands.add_parser("list", help="every stored backfill, newest first")
    commands.add_parser("status", help="one backfill's status and counts").add_argument(
        "id", nargs="?", metavar="ID", help="the backfill (default: the latest)"
    )
    for name, text in (
        ("cancel", "cancel a backfill: queued runs never start, running ones stop"),
        ("resume", "run, here, every partition of a backfill not yet SUCCESS"),
        ("retry", "run a backfill's failed partitions again"),
    ):
        commands.add_parser(name, help=text).add_argument("id", metavar="ID", help="the backfill")
    commands.choices["retry"].add_argument(
        "--from-failure",
        action="store_true",
        help="rerun only each failed step and the steps after it, reusing the kept outputs of the others",
    )
    for parser in commands.choices.values():
        add_store_argument(parser)


def selection_given(args: argparse.Namespace) -> bool:
    """Whether any selection flag was given."""
    return any(getattr(args, flag) not in (None, False) for flag in SELECTION_FLAGS)


def choice_of(args: argparse.Namespace, *, all_by_default: bool) -> Choice:
    """The partitions the flags chose; `all_by_default` selects every partition when no list or
    range was given (the command line, as Dagster does)."""
    no_list_or_range = args.partitions is None and args.from_ is None and args.to is None
    return Choice(
        args.partitions,
        args.from_,
        args.to,
        args.all or (all_by_default and no_list_or_range),
        args.missing,
        args.failed,
        args.stale,
    )


def launch_request(
    args: argparse.Namespace, *, all_by_default: bool
) -> tuple[Choice, LaunchOptions, dict[str, str] | None]:
    """What parsed launch flags ask: the partitions chosen, the checked options and the tags."""
    tags = {k: v for given in args.tags for k, v in given.items()} if args.tags else None
    options = check_options(
        args.coordinator,
        args.max_concurrent,
        None,
        args.executor,
        args.max_workers,
        args.order,
        args.retries,
        args.dask_address,
        args.stop_on_canary_failure,
    )
    return choice_of(args, all_by_default=all_by_default), options, tags


def launch_from(
    args: argparse.Namespace, job: Job, *, all_by_default: bool, dry_run: bool | None = None
) -> Backfill | pd.DataFrame:
    """Launch (or with --dry-run or dry_run=True, plan) what parsed launch flags ask, through the Python API."""
    choice, options, tags = launch_request(args, all_by_default=all_by_default)
    return launch(
        job, choice, options, tags, dry_run=args.dry_run if dry_run is None else dry_run, instance=home_of(args)
    )


def jobs_in(namespace: Mapping[str, object]) -> dict[str, Job]:
    """Every Job of a namespace, by job name and by the variables holding it (IPython's `_`
    history names skipped: they may hold an older definition)."""
    variables = {
        name: value for name, value in namespace.items() if isinstance(value, Job) and not name.startswith("_")
    }
    return {**variables, **{job.name: job for job in variables.values()}}


def job_names(jobs: Mapping[str, Job], where: str) -> list[str]:
    """The names of the jobs, sorted; an error if `where` has none."""
    names = sorted({job.name for job in jobs.values()})
    if not names:
        raise UnknownJobError(f"no nb_backfill job in {where}: define one with @nbb.job(partitions_def=...)")
    return names


def find_job(name: str | None, jobs: Mapping[str, Job], where: str) -> Job:
    """The job called `name` (job name first, then variable), or an error listing what `where` has."""
    available = job_names(jobs, where)
    if name is None:
        raise UnknownJobError(f"choose a job with -p JOB: {where} has {quoted_list(available, limit=10)}")
    if name in jobs:
        return jobs[name]
    close = difflib.get_close_matches(name, list(jobs), n=3)
    hint = f"; did you mean {quoted_list(close)}?" if close else ""
    raise UnknownJobError(f"unknown job {name!r} in {where}{hint} (available jobs: {quoted_list(available, limit=10)})")


def backfill_or_latest(backfill_id: str | None, home: str | None) -> Backfill:
    """The backfill with this id, or the latest one when no id is given."""
    if backfill_id is None:
        storage = get_instance(home)
        ids = storage.backfill_ids()
        if not ids:
            raise UnknownBackfillError(f"the store {str(storage.path)!r} has no backfills yet")
        backfill_id = ids[0]
    return get_backfill(backfill_id, instance=home)


def cancel(backfill_id: str, home: str | None) -> str:
    """Cancel a backfill (also one another process runs: that process is asked); what happened, and its status now."""
    bf = get_backfill(backfill_id, instance=home)
    said = bf.cancel()
    return f"{said}\nbackfill {bf.id}: {bf.status}"


def job_summary(job: Job) -> str:
    """One line on a job: name, partition count, first and last keys, steps."""
    definition = job.partitions_def
    count = definition.get_num_partitions()
    span = f" from {definition.get_first_partition_key()!r} to {definition.get_last_partition_key()!r}" if count else ""
    return f"{job.name}: {count} partitions{span} (steps: {', '.join(job.step_names)})"
