"""Where each partition sits on the status grid, and the one-byte code of what each cell shows.

Time partitions lie in calendar-like rows (a row per day for hourly, per month for daily, per
year for weekly and monthly); multi partitions form a matrix of their two dimensions; anything
else wraps into rows. A cell is one (partition, step); its code is the position of its
`statuses.Cell` in `statuses.CELLS`, which the front end receives with the grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .keyformat import civil_from_days, day_of_year
from .partitions import MultiPartitionsDefinition, PartitionsDefinition, TimeWindowPartitionsDefinition
from .schedules import DAY
from .statuses import (
    CELL_CODE,
    CELL_OF_PARTITION,
    CELL_OF_PENDING_STEP,
    CELL_OF_STEP,
    Cell,
    PartitionStatus,
    RunStatus,
    StepStatus,
)

# Statuses as small integers, so a whole grid's cells are computed with numpy.
RUN_NUMBER = {status: i for i, status in enumerate(RunStatus)}
STEP_NUMBER = {status: i for i, status in enumerate(StepStatus)}  # PENDING is 0: a step with no row yet
_CELL_TABLE = np.array(
    [[CELL_CODE[CELL_OF_STEP.get(step, CELL_OF_PENDING_STEP[run])] for step in StepStatus] for run in RunStatus],
    np.uint8,
)
MISSING = CELL_CODE[Cell.MISSING]
FAILURE = CELL_CODE[Cell.FAILURE]
HISTORY_CODES = {status: CELL_CODE[CELL_OF_PARTITION[status]] for status in PartitionStatus}


def cell_codes(runs: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """What each cell of some runs shows: `runs` holds run status numbers (n), `steps` step status
    numbers (n x steps); a step with a status shows it, a pending one its run's (a run that
    failed before any step ran shows failed on every step, one that failed later shows the steps
    it never reached as skipped)."""
    codes = _CELL_TABLE[runs[:, None], steps]
    never_ran = (runs == RUN_NUMBER[RunStatus.FAILURE]) & (steps == 0).all(axis=1)
    codes[never_ran] = FAILURE
    return codes


@dataclass(frozen=True)
class GridLayout:
    """Partition i sits at column positions[i] % width of row positions[i] // width."""

    kind: str
    width: int
    rows: int
    positions: np.ndarray  # uint32, one per partition
    row_labels: list[str]


def _rows_of(groups: np.ndarray) -> np.ndarray:
    """The row of each item: the rank of its group (groups are sorted)."""
    return np.cumsum(np.r_[False, groups[1:] != groups[:-1]])


def _row_starts(row: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[True, row[1:] != row[:-1]])


def _columns(base: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Columns from a natural position (hour of day, week of year...), nudged right where two
    items of a row would share one (the repeated hour of a DST change)."""
    index_in_row = np.arange(len(row)) - _row_starts(row)[row]
    spread = 1 << 40
    lifted = base - index_in_row + row * spread
    return index_in_row + np.maximum.accumulate(lifted) - row * spread


def _time_layout(definition: TimeWindowPartitionsDefinition, keys: Sequence[str]) -> GridLayout:
    wall = definition.local_starts()
    if len(wall) != len(keys):  # the definition moved on since keys were read: fall back
        return _flat_layout(keys)
    days = wall // DAY
    year, month, day = civil_from_days(days)
    gap = int(np.median(np.diff(wall))) if len(wall) > 1 else DAY
    if gap < DAY:
        kind, row = "by day", _rows_of(days)
        col = _columns(wall % DAY // gap, row)
        starts = _row_starts(row)
        labels = [f"{y:04d}-{m:02d}-{d:02d}" for y, m, d in zip(year[starts], month[starts], day[starts])]
    elif gap < 7 * DAY:
        kind = "by month"
        months = year * 12 + month - 1
        row, col = months - months[0], day - 1
        labels = [f"{m // 12:04d}-{m % 12 + 1:02d}" for m in range(int(months[0]), int(months[-1]) + 1)]
    else:
        kind, row = "by year", _rows_of(year)
        col = _columns(month - 1 if gap >= 28 * DAY else (day_of_year(days, year) - 1) // 7, row)
        labels = [str(y) for y in np.unique(year)]
    width = int(col.max()) + 1 if len(col) else 1
    return GridLayout(kind, width, len(labels), (row * width + col).astype(np.uint32), labels)


def _flat_layout(keys: Sequence[str]) -> GridLayout:
    n = len(keys)
    width = max(1, min(n, 50) if n <= 2500 else math.ceil(math.sqrt(n)))
    positions = np.arange(n, dtype=np.uint32)
    rows = math.ceil(n / width)
    return GridLayout("flat", width, rows, positions, [keys[r * width] for r in range(rows)])


def _multi_layout(definition: MultiPartitionsDefinition, keys: Sequence[str]) -> GridLayout:
    first, second = (d.partitions_def.get_partition_keys() for d in definition.partitions_defs)
    row_of = {k: i for i, k in enumerate(first)}
    col_of = {k: i for i, k in enumerate(second)}
    width = max(len(second), 1)
    positions = np.fromiter(
        (row_of[a] * width + col_of[b] for a, b in (str(k).split("|") for k in keys)), dtype=np.uint32, count=len(keys)
    )
    return GridLayout("matrix", width, len(first), positions, list(first))


def layout_for(definition: PartitionsDefinition, keys: Sequence[str]) -> GridLayout:
    """The grid layout of a definition's keys (keys as get_partition_keys() lists them)."""
    if isinstance(definition, TimeWindowPartitionsDefinition):
        return _time_layout(definition, keys)
    if isinstance(definition, MultiPartitionsDefinition):
        return _multi_layout(definition, keys)
    return _flat_layout(keys)


def describe(definition: PartitionsDefinition, count: int) -> str:
    """The definition in words, e.g. 'daily from 2024-01-01, UTC, 366 partitions'."""
    plural = f"{count:,} partition{'s' if count != 1 else ''}"
    if isinstance(definition, TimeWindowPartitionsDefinition):
        fields = definition.cron_schedule.split()
        cadence = {
            ("*", "*", "*", "*"): "hourly",
            ("H", "*", "*", "*"): "daily",
            ("H", "*", "*", "D"): "weekly",
            ("H", "D", "*", "*"): "monthly",
        }.get(tuple("*" if f == "*" else ("H" if i == 0 else "D") for i, f in enumerate(fields[1:])), None)
        if cadence is None or not fields[0].isdigit():
            cadence = f"cron '{definition.cron_schedule}'"
        first = definition.get_first_partition_key() or definition.start.strftime(definition.fmt)
        return f"{cadence} from {first}, {definition.timezone}, {plural}"
    if isinstance(definition, MultiPartitionsDefinition):
        return f"{' x '.join(definition.partition_dimension_names)}, {plural}"
    name = getattr(definition, "name", None)
    return f"dynamic '{name}', {plural}" if name else f"static, {plural}"
