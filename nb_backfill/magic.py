"""The `%backfill` line magic: the command line's flags in a notebook, launching into this kernel.

`%load_ext nb_backfill` registers it. The line is split with shlex and parsed by the parser the
command line shares (nb_backfill.arguments); every mistake is one UsageError line, never a traceback.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Mapping

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display

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
    jobs_in,
    launch_from,
    selection_given,
)
from .backfills import Backfill, get_backfill, list_backfills, resume_backfill
from .errors import NbBackfillError
from .jobs import Job

WHERE = "this notebook"


def magic_parser() -> Parser:
    """The parser of a `%backfill` line: launch flags, `--wait`, and the backfill commands."""
    parser = Parser(
        prog="%backfill",
        usage="%(prog)s -p JOB [selection] [options]  |  %(prog)s list | status [ID] | cancel ID | resume ID | retry ID | debug ID KEY",
        description=(
            "Launch a backfill of JOB (a job's name or the variable holding it) in this kernel and show it; "
            "returns at once unless --wait. Without a selection, shows the job's partitions to choose from."
        ),
    )
    add_launch_arguments(parser)
    parser.add_argument("--wait", action="store_true", help="block until the backfill is done")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    add_backfill_commands(commands)
    debug = commands.add_parser("debug", help="run a failed partition's failing step here, under the debugger")
    debug.add_argument("id", metavar="ID", help="the backfill")
    debug.add_argument("key", metavar="KEY", help="the failed partition")
    add_store_argument(debug)
    return parser


PARSER = magic_parser()


def show_selector(job: Job, home: str | None) -> None:
    """The job's widget, to choose partitions and launch from it."""
    from .widget import backfill as widget_for

    display(widget_for(job, instance=home))


def wait(bf: Backfill) -> None:
    """Block until the backfill is done; an interrupt stops waiting, not the backfill."""
    try:
        print(f"backfill {bf.id}: {bf.wait()}")
    except KeyboardInterrupt:
        print(f"stopped waiting: backfill {bf.id} goes on (`%backfill cancel {bf.id}` stops it)")


def launch(args: argparse.Namespace, namespace: Mapping[str, object]) -> None:
    """Launch (or plan, or offer to choose) a backfill of the job the line names."""
    job = find_job(args.job, jobs_in(namespace), WHERE)
    if not selection_given(args):
        show_selector(job, home_of(args))
        return
    result = launch_from(args, job, all_by_default=False)
    display(result)
    if args.wait and isinstance(result, Backfill):
        wait(result)


COMMANDS = {
    "list": lambda args: display(list_backfills(instance=home_of(args))),
    "status": lambda args: display(backfill_or_latest(args.id, home_of(args))),
    "cancel": lambda args: print(cancel(args.id, home_of(args))),
    "resume": lambda args: display(resume_backfill(args.id, instance=home_of(args))),
    "retry": lambda args: display(get_backfill(args.id, instance=home_of(args)).retry_failed(args.from_failure)),
    "debug": lambda args: get_backfill(args.id, instance=home_of(args)).debug(args.key),
}


def run_line(line: str, namespace: Mapping[str, object]) -> None:
    """Parse one `%backfill` line and do it; nb_backfill's errors become one UsageError line."""
    try:
        words = shlex.split(line)
    except ValueError as error:
        raise UsageError(f"cannot split the line {line!r}: {error}") from None
    try:
        args = PARSER.parse_args(words)
        if args.command is None:
            launch(args, namespace)
        else:
            COMMANDS[args.command](args)
    except HelpShown:
        return
    except NbBackfillError as error:
        raise UsageError(str(error)) from None


@magics_class
class BackfillMagics(Magics):
    """Holds the `%backfill` magic."""

    @line_magic
    def backfill(self, line: str) -> None:
        run_line(line, self.shell.user_ns)


BackfillMagics.backfill.__doc__ = PARSER.format_help()


def load_ipython_extension(ipython) -> None:
    """Register `%backfill` (what `%load_ext nb_backfill` calls)."""
    ipython.register_magics(BackfillMagics)
