"""nb_backfill: Dagster-style partitioned jobs and backfills, native to Jupyter."""

from __future__ import annotations

from .backfills import (
    Backfill,
    get_backfill,
    get_instance,
    launch_backfill,
    list_backfills,
    partition_status,
    resume_backfill,
)
from .dynamic import DynamicPartitionsDefinition
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
from .storage import Storage as Instance
from .storage import StorageError

__version__ = "0.1.0"


def backfill(job: Job, backfill_id: str | None = None, *, instance: Instance | str | None = None):
    """The live widget of a job: its latest backfill (or `backfill_id`), or the partitions' history."""
    from .widget import backfill as widget_for

    return widget_for(job, backfill_id, instance=instance)


def __getattr__(name: str):
    """The widget class loads on first use: worker processes and the CLI never pay for anywidget."""
    if name == "BackfillWidget":
        from .widget import BackfillWidget

        return BackfillWidget
    raise AttributeError(f"module 'nb_backfill' has no attribute {name!r}")


__all__ = [
    "Backfill",
    "BackfillStateError",
    "BackfillStatus",
    "BackfillWidget",
    "Choice",
    "DailyPartitionsDefinition",
    "DefinitionError",
    "DynamicPartitionsDefinition",
    "HourlyPartitionsDefinition",
    "Instance",
    "InvalidOptionError",
    "Job",
    "MonthlyPartitionsDefinition",
    "MultiPartitionKey",
    "MultiPartitionsDefinition",
    "NbBackfillError",
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
    "partition_status",
    "resume_backfill",
    "select_partitions",
    "step",
]


def load_ipython_extension(ipython) -> None:
    """`%load_ext nb_backfill`: registers the `%backfill` magic (imported only then, so IPython stays optional)."""
    from .magic import load_ipython_extension as load

    load(ipython)
