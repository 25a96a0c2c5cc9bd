"""nb_backfill: Dagster-style partitioned jobs and backfills, native to Jupyter.

Partitions, jobs and selections load with the package; what launches and follows backfills (the
engine, the store, frames) and the widget load on first use of one of their names, so defining jobs,
a worker process and `import nb_backfill` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import (
    BackfillStateError,
    DefinitionError,
    InvalidOptionError,
    NbBackfillError,
    SelectionError,
    UnknownBackfillError,
    UnknownPartitionError,
)
from .jobs import Job, RetryPolicy, RunCanceled, RunContext, job, step
from .outputs import FileIO, FsspecIO, OutputContext
from .partitions import (
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    MonthlyPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    PartitionKeyRange,
    PartitionsDefinition,
    StaticPartitionsDefinition,
    TimeWindow,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
)
from .selection import Choice, select_partitions
from .statuses import BackfillStatus, PartitionStatus, RunStatus, StepStatus

if TYPE_CHECKING:
    from .backfills import (
        Backfill,
        get_backfill,
        get_instance,
        launch_backfill,
        list_backfills,
        list_outputs,
        load_output,
        partition_status,
        prune_outputs,
        resume_backfill,
    )
    from .dynamic import DynamicPartitionsDefinition
    from .storage import Storage as Instance
    from .storage import StorageError
    from .widget import BackfillWidget

# name -> "module.attribute" it is, for the names loaded on first use (see __getattr__)
_ON_FIRST_USE = {
    "Backfill": "backfills.Backfill",
    "get_backfill": "backfills.get_backfill",
    "get_instance": "backfills.get_instance",
    "launch_backfill": "backfills.launch_backfill",
    "list_backfills": "backfills.list_backfills",
    "list_outputs": "backfills.list_outputs",
    "load_output": "backfills.load_output",
    "partition_status": "backfills.partition_status",
    "prune_outputs": "backfills.prune_outputs",
    "resume_backfill": "backfills.resume_backfill",
    "DynamicPartitionsDefinition": "dynamic.DynamicPartitionsDefinition",
    "Instance": "storage.Storage",
    "StorageError": "storage.StorageError",
    "BackfillWidget": "widget.BackfillWidget",
}

__version__ = "0.1.0"


def backfill(job: Job, backfill_id: str | None = None, *, instance: Instance | str | None = None):
    """The live widget of a job: its latest backfill (or `backfill_id`), or the partitions' history."""
    from .widget import backfill as widget_for

    return widget_for(job, backfill_id, instance=instance)


def __getattr__(name: str):
    """A name of _ON_FIRST_USE, imported now and kept: worker processes never pay for the engine
    and the store, nor the command line for anywidget."""
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module 'nb_backfill' has no attribute {name!r}")
    module, attribute = _ON_FIRST_USE[name].split(".")
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """Every public name, loaded or not (for tab completion)."""
    return sorted(set(globals()) | set(_ON_FIRST_USE))


__all__ = [
    "Backfill",
    "BackfillStateError",
    "BackfillStatus",
    "BackfillWidget",
    "Choice",
    "DailyPartitionsDefinition",
    "DefinitionError",
    "DynamicPartitionsDefinition",
    "FileIO",
    "FsspecIO",
    "HourlyPartitionsDefinition",
    "Instance",
    "InvalidOptionError",
    "Job",
    "MonthlyPartitionsDefinition",
    "MultiPartitionKey",
    "MultiPartitionsDefinition",
    "NbBackfillError",
    "OutputContext",
    "PartitionKeyRange",
    "PartitionStatus",
    "PartitionsDefinition",
    "RetryPolicy",
    "RunCanceled",
    "RunContext",
    "RunStatus",
    "SelectionError",
    "StaticPartitionsDefinition",
    "StepStatus",
    "StorageError",
    "TimeWindow",
    "TimeWindowPartitionsDefinition",
    "UnknownBackfillError",
    "UnknownPartitionError",
    "WeeklyPartitionsDefinition",
    "backfill",
    "get_backfill",
    "get_instance",
    "job",
    "launch_backfill",
    "list_backfills",
    "list_outputs",
    "load_output",
    "partition_status",
    "prune_outputs",
    "resume_backfill",
    "select_partitions",
    "step",
]


def load_ipython_extension(ipython) -> None:
    """`%load_ext nb_backfill`: registers the `%backfill` magic (imported only then, so IPython stays optional)."""
    from .magic import load_ipython_extension as load

    load(ipython)
