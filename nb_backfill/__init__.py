"""nb_backfill: Dagster-style partitioned jobs and backfills, native to Jupyter."""

from .errors import DefinitionError, NbBackfillError, SelectionError, UnknownPartitionError
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

__version__ = "0.1.0"

__all__ = [
    "DailyPartitionsDefinition",
    "DefinitionError",
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
