"""nb_backfill: Dagster-style partitioned jobs and backfills, native to Jupyter."""

from .backfill import Backfill, get_backfill, get_instance, launch_backfill, list_backfills, partition_status, resume_backfill
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
from .selection import select_partitions
from .storage import Storage as Instance

__version__ = "0.1.0"

__all__ = [
    "Backfill",
    "BackfillStateError",
    "Instance",
    "InvalidOptionError",
    "Job",
    "RetryPolicy",
    "RunCanceled",
    "RunContext",
    "UnknownBackfillError",
    "get_backfill",
    "get_instance",
    "job",
    "launch_backfill",
    "list_backfills",
    "partition_status",
    "resume_backfill",
    "step",
    "DailyPartitionsDefinition",
    "DefinitionError",
    "DynamicPartitionsDefinition",
    "HourlyPartitionsDefinition",
    "MonthlyPartitionsDefinition",
    "MultiPartitionKey",
    "MultiPartitionsDefinition",
    "NbBackfillError",
    "PartitionKeyRange",
    "PartitionsDefinition",
    "SelectionError",
    "StaticPartitionsDefinition",
    "TimeWindow",
    "TimeWindowPartitionsDefinition",
    "UnknownPartitionError",
    "WeeklyPartitionsDefinition",
    "select_partitions",
]
