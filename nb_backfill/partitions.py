"""Partition definitions with Dagster's names and semantics: static, time window, multi.

A Dagster user's definition pastes in unchanged and yields the same keys. Time keys come from
`schedules` (ticks) and `keyformat` (strftime in bulk), so ten years of hourly keys take
milliseconds, and counting or looking up one key never builds the list.
"""

from __future__ import annotations

import difflib
import itertools
import math
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, tzinfo
from datetime import timezone as dt_timezone
from typing import NamedTuple

import numpy as np
import pendulum

from .errors import DefinitionError, UnknownPartitionError, quoted_list
from .keyformat import format_ticks
from .schedules import Timeline, parse_cron

DEFAULT_DATE_FORMAT = "%Y-%m-%d"
DEFAULT_HOURLY_FORMAT = "%Y-%m-%d-%H:%M"
MULTIPARTITION_KEY_DELIMITER = "|"
INVALID_STATIC_KEY_CHARACTERS = frozenset("|,[]")
INVALID_KEY_SUBSTRINGS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")
_EXAMPLE_TIME = datetime(2024, 1, 31, 13, 0)


class PartitionKeyRange(NamedTuple):
    """An inclusive range of partition keys, in definition order."""

    start: str
    end: str


class TimeWindow(NamedTuple):
    """The [start, end) instants of a time partition, tz-aware."""

    start: datetime
    end: datetime


class PartitionsDefinition:
    """What every definition answers; keys are strings in definition order."""

    def get_partition_keys(self, current_time: datetime | None = None) -> list[str]:
        raise NotImplementedError

    def get_num_partitions(self, current_time: datetime | None = None) -> int:
        return len(self.get_partition_keys(current_time))

    def has_partition_key(self, partition_key: str, current_time: datetime | None = None) -> bool:
        raise NotImplementedError

    def get_first_partition_key(self, current_time: datetime | None = None) -> str | None:
        keys = self.get_partition_keys(current_time)
        return keys[0] if keys else None

    def get_last_partition_key(self, current_time: datetime | None = None) -> str | None:
        keys = self.get_partition_keys(current_time)
        return keys[-1] if keys else None

    def get_partition_keys_in_range(
        self, partition_key_range: PartitionKeyRange, current_time: datetime | None = None
    ) -> list[str]:
        """Keys from range.start to range.end inclusive; empty when start comes after end."""
        keys = self.get_partition_keys(current_time)
        start, end = (self._index_of(keys, k, current_time) for k in partition_key_range)
        return keys[start : end + 1]

    def unknown_key_error(self, key: str, current_time: datetime | None = None) -> UnknownPartitionError:
        """The error for a key that is not a partition: names it and suggests close valid keys."""
        keys = self.get_partition_keys(current_time)
        close = difflib.get_close_matches(str(key), keys, n=3, cutoff=0.5) if len(keys) <= 50_000 else []
        hint = f"; did you mean {quoted_list(close)}?" if close else ""
        return UnknownPartitionError(f"unknown partition key {key!r}{hint} ({_span(keys)})")

    def _index_of(self, keys: list[str], key: str, current_time: datetime | None) -> int:
        try:
            return keys.index(key)
        except ValueError:
            raise self.unknown_key_error(key, current_time) from None


def _span(keys: Sequence[str]) -> str:
    if not keys:
        return "the definition has no partitions"
    if len(keys) == 1:
        return f"the only partition is {keys[0]!r}"
    return f"{len(keys)} partitions from {keys[0]!r} to {keys[-1]!r}"


# ---------------------------------------------------------------------------------------------
# Static


class StaticPartitionsDefinition(PartitionsDefinition):
    """A fixed list of keys, kept in the order given."""

    def __init__(self, partition_keys: Sequence[str]):
        if isinstance(partition_keys, str) or not isinstance(partition_keys, Sequence):
            raise DefinitionError(f"partition_keys must be a list of strings, got {partition_keys!r}")
        keys = list(partition_keys)
        not_str = [k for k in keys if not isinstance(k, str)]
        if not_str:
            raise DefinitionError(f"partition keys must be strings, got {quoted_list(not_str)}")
        bad = [k for k in keys if any(s in k for s in INVALID_KEY_SUBSTRINGS)]
        if bad:
            raise DefinitionError(f"partition keys may not contain '...' or control characters, got {quoted_list(bad)}")
        index: dict[str, int] = {}
        duplicates = []
        for i, key in enumerate(keys):
            if key in index:
                duplicates.append(key)
            index.setdefault(key, i)
        if duplicates:
            raise DefinitionError(f"partition keys must be unique; duplicated: {quoted_list(sorted(set(duplicates)))}")
        self._keys = keys
        self._index = index

    def get_partition_keys(self, current_time: datetime | None = None) -> list[str]:
        return list(self._keys)

    def get_num_partitions(self, current_time: datetime | None = None) -> int:
        return len(self._keys)

    def has_partition_key(self, partition_key: str, current_time: datetime | None = None) -> bool:
        return partition_key in self._index

    def _index_of(self, keys: list[str], key: str, current_time: datetime | None) -> int:
        if key not in self._index:
            raise self.unknown_key_error(key)
        return self._index[key]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StaticPartitionsDefinition) and self._keys == other._keys

    def __hash__(self) -> int:
        return hash(tuple(self._keys))

    def __repr__(self) -> str:
        return f"StaticPartitionsDefinition({self._keys!r})"


# ---------------------------------------------------------------------------------------------
# Time windows


def get_timezone(name: str) -> tzinfo:
    """The IANA zone `name`, or a DefinitionError that suggests close names."""
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"timezone must be an IANA name such as 'UTC' or 'America/New_York', got {name!r}")
    try:
        return pendulum.timezone(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):  # pendulum's InvalidTimezone is a ValueError
        close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=3)
        hint = f"; did you mean {quoted_list(close)}?" if close else ""
        raise DefinitionError(
            f"unknown timezone {name!r}: expected an IANA name such as 'UTC' or 'America/New_York'{hint}"
        ) from None


def _with_offset(fmt: str) -> str:
    return fmt if "%z" in fmt else fmt + "%z"


def parse_time_key(text: str, fmt: str, tz: tzinfo, what: str = "partition key") -> int:
    """The instant a key (or a start/end string) names, read with fmt; naive times are local, and
    a repeated wall time means its first occurrence unless an offset suffix says otherwise."""
    if not isinstance(text, str):
        raise DefinitionError(f"{what} must be a string, got {text!r}")
    try:
        parsed = datetime.strptime(text, fmt)
    except ValueError:
        try:
            parsed = datetime.strptime(text, _with_offset(fmt))
        except ValueError:
            raise DefinitionError(
                f"{what} {text!r} does not match the format {fmt!r} (for example {_EXAMPLE_TIME.strftime(fmt)!r})"
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz, fold=0)
    return math.floor(parsed.timestamp())


def _instant(value: datetime | date | str, fmt: str, tz: tzinfo, what: str) -> int:
    if isinstance(value, str):
        return parse_time_key(value, fmt, tz, what)
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=tz, fold=0) if value.tzinfo is None else value
        return math.ceil(aware.timestamp())
    if isinstance(value, date):
        return math.ceil(datetime(value.year, value.month, value.day, tzinfo=tz).timestamp())
    raise DefinitionError(f"{what} must be a datetime, a date or a string in format {fmt!r}, got {value!r}")


class TimeWindowPartitionsDefinition(PartitionsDefinition):
    """Partitions whose keys are the starts of a cron schedule's windows, formatted with fmt.

    The first window starts at the first tick at or after `start`; `end` is exclusive; a window is
    a partition once it has ended at `current_time`, and `end_offset` adds (or drops) windows.
    """

    def __init__(
        self,
        start: datetime | date | str,
        fmt: str,
        end: datetime | date | str | None = None,
        cron_schedule: str = "0 0 * * *",
        timezone: str | None = "UTC",
        end_offset: int = 0,
    ):
        if not isinstance(fmt, str) or "%" not in fmt:
            raise DefinitionError(f"fmt must be a strftime format such as '%Y-%m-%d', got {fmt!r}")
        if isinstance(end_offset, bool) or not isinstance(end_offset, int):
            raise DefinitionError(f"end_offset must be an integer, got {end_offset!r}")
        self.timezone = timezone or "UTC"
        self.tz = get_timezone(self.timezone)
        self.fmt = fmt
        self.cron_schedule = cron_schedule
        self.end_offset = end_offset
        self._schedule = parse_cron(cron_schedule)
        self._timeline = Timeline(self._schedule, self.tz)
        self._suffix_repeated = self._schedule.every_hour and "%z" not in fmt
        self._start_ts = _instant(start, fmt, self.tz, "start")
        self._end_ts = None if end is None or end == "" else _instant(end, fmt, self.tz, "end")
        first = self._timeline.next(self._start_ts)
        second = self._timeline.next(first + 1)
        if self._format_one(first) == self._format_one(second):
            raise DefinitionError(
                f"fmt {fmt!r} is not precise enough for cron schedule {cron_schedule!r}: "
                f"consecutive windows would share the key {self._format_one(first)!r}"
            )

    # --- Dagster's public attributes
    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self._start_ts, self.tz)

    @property
    def end(self) -> datetime | None:
        return None if self._end_ts is None else datetime.fromtimestamp(self._end_ts, self.tz)

    # --- instants
    def _now(self, current_time: datetime | None) -> int:
        if current_time is None:
            return math.floor(datetime.now(dt_timezone.utc).timestamp())
        if current_time.tzinfo is None:
            current_time = current_time.replace(tzinfo=self.tz)
        return math.floor(current_time.timestamp())

    def _bounds(self, current_time: datetime | None) -> tuple[int, int] | None:
        """Start instants of the first and last partitions at current_time, or None if there are none."""
        if self._end_ts is not None and self._end_ts <= self._start_ts:
            return None
        line, now, offset = self._timeline, self._now(current_time), self.end_offset
        first = line.next(self._start_ts)
        second = line.next(first + 1)
        if offset == 0:
            if second > now:
                return None
            last = line.prev(now if self._end_ts is None else min(now, self._end_ts), 2)
        else:
            if offset > 0:
                if second > line.next(now, offset + 1):
                    return None
                last = line.next(line.prev(now), offset)
            else:
                if second > line.prev(now, 1 - offset):
                    return None
                last = line.prev(now, 2 - offset)
            if self._end_ts is not None:
                last = min(last, line.prev(self._end_ts, 2))
        return first, max(first, last)

    def _format(self, lo: int, hi: int) -> list[str]:
        return format_ticks(self._timeline.between(lo, hi), self.fmt, self.tz, self._suffix_repeated)

    def _format_one(self, tick: int) -> str:
        return self._format(tick, tick + 1)[0]

    def _tick_of(self, key: str) -> int | None:
        """The window start a key names, or None if the key is not one of the schedule's."""
        try:
            instant = parse_time_key(key, self.fmt, self.tz)
        except DefinitionError:
            return None
        tick = self._timeline.next(instant)
        return tick if self._format_one(tick) == key else None

    # --- Dagster's methods
    def get_partition_keys(self, current_time: datetime | None = None) -> list[str]:
        bounds = self._bounds(current_time)
        return [] if bounds is None else self._format(bounds[0], bounds[1] + 1)

    def get_num_partitions(self, current_time: datetime | None = None) -> int:
        bounds = self._bounds(current_time)
        return 0 if bounds is None else self._timeline.count(bounds[0], bounds[1] + 1)

    def local_starts(self, current_time: datetime | None = None) -> np.ndarray:
        """Local wall-clock starts (epoch seconds) of get_partition_keys(), in bulk: for laying keys out."""
        bounds = self._bounds(current_time)
        return np.empty(0, np.int64) if bounds is None else self._timeline.between(bounds[0], bounds[1] + 1).wall

    def get_first_partition_key(self, current_time: datetime | None = None) -> str | None:
        bounds = self._bounds(current_time)
        return None if bounds is None else self._format_one(bounds[0])

    def get_last_partition_key(self, current_time: datetime | None = None) -> str | None:
        bounds = self._bounds(current_time)
        return None if bounds is None else self._format_one(bounds[1])

    def has_partition_key(self, partition_key: str, current_time: datetime | None = None) -> bool:
        bounds = self._bounds(current_time)
        tick = self._tick_of(partition_key) if isinstance(partition_key, str) else None
        return bounds is not None and tick is not None and bounds[0] <= tick <= bounds[1]

    def time_window_for_partition_key(self, partition_key: str) -> TimeWindow:
        """The [start, end) of the window a key names: any key of the schedule from `start` on,
        including windows not yet complete, as in Dagster."""
        tick = self._tick_of(partition_key)
        if tick is None or tick < self._timeline.next(self._start_ts):
            raise self.unknown_key_error(partition_key)
        return TimeWindow(
            datetime.fromtimestamp(tick, self.tz), datetime.fromtimestamp(self._timeline.next(tick + 1), self.tz)
        )

    def get_partition_keys_in_range(
        self, partition_key_range: PartitionKeyRange, current_time: datetime | None = None
    ) -> list[str]:
        bounds = self._bounds(current_time)
        ticks = []
        for key in partition_key_range:
            tick = self._tick_of(key)
            if bounds is None or tick is None or not bounds[0] <= tick <= bounds[1]:
                raise self.unknown_key_error(key, current_time)
            ticks.append(tick)
        return self._format(ticks[0], ticks[1] + 1)

    def index_of(self, partition_key: str, current_time: datetime | None = None) -> int:
        """Position of a key in get_partition_keys(), without building that list."""
        bounds = self._bounds(current_time)
        tick = self._tick_of(partition_key)
        if bounds is None or tick is None or not bounds[0] <= tick <= bounds[1]:
            raise self.unknown_key_error(partition_key, current_time)
        return self._timeline.count(bounds[0], tick)

    def unknown_key_error(self, key: str, current_time: datetime | None = None) -> UnknownPartitionError:
        """Names the key and says why: wrong format, not a window start, or out of range."""
        first, last = self.get_first_partition_key(current_time), self.get_last_partition_key(current_time)
        span = "the definition has no partitions" if first is None else f"partitions run from {first!r} to {last!r}"
        try:
            instant = parse_time_key(key, self.fmt, self.tz)
        except DefinitionError:
            guess = _guess_instant(key, self.tz)
            hint = ""
            if guess is not None:
                near = self._format_one(self._timeline.prev(guess))
                hint = f"; did you mean {near!r}?"
            return UnknownPartitionError(
                f"partition key {key!r} does not match the format {self.fmt!r} "
                f"(for example {_EXAMPLE_TIME.strftime(self.fmt)!r}){hint} ({span})"
            )
        tick = self._timeline.prev(instant)
        if self._format_one(tick) != key:
            return UnknownPartitionError(
                f"partition key {key!r} is not the start of a window of schedule {self.cron_schedule!r}; "
                f"the window containing it is {self._format_one(tick)!r} ({span})"
            )
        return UnknownPartitionError(f"partition key {key!r} is out of range: {span}")

    def _params(self) -> tuple:
        return (self._start_ts, self._end_ts, self.fmt, self.cron_schedule, self.timezone, self.end_offset)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._params() == self._params()

    def __hash__(self) -> int:
        return hash(self._params())

    def __repr__(self) -> str:
        end = "" if self._end_ts is None else f", end={self.end.isoformat()!r}"
        return (
            f"{type(self).__name__}(start={self.start.isoformat()!r}{end}, fmt={self.fmt!r}, "
            f"cron_schedule={self.cron_schedule!r}, timezone={self.timezone!r}, end_offset={self.end_offset})"
        )


def _guess_instant(text: str, tz: tzinfo) -> int | None:
    """What instant a key in some other format probably meant (for 'did you mean')."""
    try:
        parsed = pendulum.parse(text, strict=False, tz=tz)
    except Exception:  # pendulum raises several unrelated types for unparseable text
        return None
    return math.floor(parsed.timestamp()) if isinstance(parsed, datetime) else None


def _check_offset(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DefinitionError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


class HourlyPartitionsDefinition(TimeWindowPartitionsDefinition):
    """One partition per hour, keys like 2024-01-01-13:00."""

    def __init__(
        self,
        start_date: datetime | date | str,
        end_date: datetime | date | str | None = None,
        minute_offset: int = 0,
        timezone: str | None = None,
        fmt: str | None = None,
        end_offset: int = 0,
    ):
        minute = _check_offset("minute_offset", minute_offset, 0, 59)
        super().__init__(start_date, fmt or DEFAULT_HOURLY_FORMAT, end_date, f"{minute} * * * *", timezone, end_offset)


class DailyPartitionsDefinition(TimeWindowPartitionsDefinition):
    """One partition per day, keys like 2024-01-01."""

    def __init__(
        self,
        start_date: datetime | date | str,
        end_date: datetime | date | str | None = None,
        minute_offset: int = 0,
        hour_offset: int = 0,
        timezone: str | None = None,
        fmt: str | None = None,
        end_offset: int = 0,
    ):
        minute = _check_offset("minute_offset", minute_offset, 0, 59)
        hour = _check_offset("hour_offset", hour_offset, 0, 23)
        super().__init__(
            start_date, fmt or DEFAULT_DATE_FORMAT, end_date, f"{minute} {hour} * * *", timezone, end_offset
        )


class WeeklyPartitionsDefinition(TimeWindowPartitionsDefinition):
    """One partition per week, starting on `day_offset` (0 = Sunday)."""

    def __init__(
        self,
        start_date: datetime | date | str,
        end_date: datetime | date | str | None = None,
        minute_offset: int = 0,
        hour_offset: int = 0,
        day_offset: int = 0,
        timezone: str | None = None,
        fmt: str | None = None,
        end_offset: int = 0,
    ):
        minute = _check_offset("minute_offset", minute_offset, 0, 59)
        hour = _check_offset("hour_offset", hour_offset, 0, 23)
        day = _check_offset("day_offset", day_offset, 0, 6)
        cron = f"{minute} {hour} * * {day}"
        super().__init__(start_date, fmt or DEFAULT_DATE_FORMAT, end_date, cron, timezone, end_offset)


class MonthlyPartitionsDefinition(TimeWindowPartitionsDefinition):
    """One partition per month, starting on day `day_offset` of the month (default 1)."""

    def __init__(
        self,
        start_date: datetime | date | str,
        end_date: datetime | date | str | None = None,
        minute_offset: int = 0,
        hour_offset: int = 0,
        day_offset: int = 1,
        timezone: str | None = None,
        fmt: str | None = None,
        end_offset: int = 0,
    ):
        minute = _check_offset("minute_offset", minute_offset, 0, 59)
        hour = _check_offset("hour_offset", hour_offset, 0, 23)
        day = _check_offset("day_offset", day_offset, 1, 31)
        cron = f"{minute} {hour} {day} * *"
        super().__init__(start_date, fmt or DEFAULT_DATE_FORMAT, end_date, cron, timezone, end_offset)


# ---------------------------------------------------------------------------------------------
# Multi


class MultiPartitionKey(str):
    """A key of a multi definition: the dimension keys joined by '|', dimensions ordered by name."""

    keys_by_dimension: dict[str, str]

    def __new__(cls, keys_by_dimension: Mapping[str, str]):
        names = sorted(keys_by_dimension)
        key = super().__new__(cls, MULTIPARTITION_KEY_DELIMITER.join(keys_by_dimension[n] for n in names))
        key.keys_by_dimension = {n: keys_by_dimension[n] for n in names}
        return key


class PartitionDimensionDefinition(NamedTuple):
    name: str
    partitions_def: PartitionsDefinition


class MultiPartitionsDefinition(PartitionsDefinition):
    """The cross product of exactly two definitions; the first dimension by name varies slowest."""

    def __init__(self, partitions_defs: Mapping[str, PartitionsDefinition]):
        if not isinstance(partitions_defs, Mapping):
            raise DefinitionError(f"partitions_defs must be a dict of name to definition, got {partitions_defs!r}")
        if len(partitions_defs) != 2:
            raise DefinitionError(
                f"a multi-partitions definition needs exactly two dimensions, got {len(partitions_defs)}: "
                f"{quoted_list(list(map(str, partitions_defs)))}"
            )
        for name, definition in partitions_defs.items():
            if not isinstance(name, str) or not name:
                raise DefinitionError(f"dimension names must be non-empty strings, got {name!r}")
            if isinstance(definition, MultiPartitionsDefinition) or not isinstance(definition, PartitionsDefinition):
                raise DefinitionError(
                    f"dimension {name!r} must be a static, time window or dynamic definition, got {definition!r}"
                )
            if isinstance(definition, StaticPartitionsDefinition):
                bad = [k for k in definition.get_partition_keys() if INVALID_STATIC_KEY_CHARACTERS & set(k)]
                if bad:
                    raise DefinitionError(
                        f"keys of dimension {name!r} may not contain '|', ',', '[' or ']', got {quoted_list(bad)}"
                    )
        self.partitions_defs = [PartitionDimensionDefinition(n, partitions_defs[n]) for n in sorted(partitions_defs)]

    @property
    def partition_dimension_names(self) -> list[str]:
        return [d.name for d in self.partitions_defs]

    def _split(self, key: str) -> list[str] | None:
        parts = str(key).split(MULTIPARTITION_KEY_DELIMITER)
        return parts if len(parts) == len(self.partitions_defs) else None

    def get_partition_key_from_str(self, partition_key_str: str) -> MultiPartitionKey:
        parts = self._split(partition_key_str)
        if parts is None:
            raise self.unknown_key_error(partition_key_str)
        return MultiPartitionKey(dict(zip(self.partition_dimension_names, parts)))

    @staticmethod
    def _check_dimension_keys(dimensions: Iterable[tuple[PartitionDimensionDefinition, list[str]]]) -> None:
        """A dimension key with '|' (a dynamic key added at run time, or a time format with '|')
        would make keys that cannot be split back: a DefinitionError names it and the fix."""
        for d, keys in dimensions:
            bad = [k for k in keys if MULTIPARTITION_KEY_DELIMITER in k]
            if not bad:
                continue
            definition = d.partitions_def
            if hasattr(definition, "delete_partition"):  # dynamic: keys live in the store
                fix = (
                    f"delete it with {definition!r}.delete_partition({bad[0]!r}) and add it again without '|'"
                    if len(bad) == 1
                    else f"delete them with {definition!r}.delete_partition(key) and add them again without '|'"
                )
            else:
                fix = "give that dimension keys without '|'"
            raise DefinitionError(
                f"partition key{'s' if len(bad) > 1 else ''} {quoted_list(bad)} of dimension {d.name!r} "
                f"contain{'' if len(bad) > 1 else 's'} '|', which separates the dimensions of a multi-partition key, "
                f"so the keys made from {'them' if len(bad) > 1 else 'it'} could not be split back: {fix}"
            )

    def _product(self, per_dimension: list[list[str]]) -> list[str]:
        self._check_dimension_keys(zip(self.partitions_defs, per_dimension))
        names = self.partition_dimension_names
        return [MultiPartitionKey(dict(zip(names, combo))) for combo in itertools.product(*per_dimension)]

    def get_partition_keys(self, current_time: datetime | None = None) -> list[str]:
        return self._product([d.partitions_def.get_partition_keys(current_time) for d in self.partitions_defs])

    def get_num_partitions(self, current_time: datetime | None = None) -> int:
        # static keys were checked when the definition was made; dynamic ones change at run time
        changing = [
            d
            for d in self.partitions_defs
            if not isinstance(d.partitions_def, (StaticPartitionsDefinition, TimeWindowPartitionsDefinition))
        ]
        self._check_dimension_keys((d, d.partitions_def.get_partition_keys(current_time)) for d in changing)
        return math.prod(d.partitions_def.get_num_partitions(current_time) for d in self.partitions_defs)

    def get_first_partition_key(self, current_time: datetime | None = None) -> str | None:
        parts = [d.partitions_def.get_first_partition_key(current_time) for d in self.partitions_defs]
        return None if None in parts else MultiPartitionKey(dict(zip(self.partition_dimension_names, parts)))

    def get_last_partition_key(self, current_time: datetime | None = None) -> str | None:
        parts = [d.partitions_def.get_last_partition_key(current_time) for d in self.partitions_defs]
        return None if None in parts else MultiPartitionKey(dict(zip(self.partition_dimension_names, parts)))

    def has_partition_key(self, partition_key: str, current_time: datetime | None = None) -> bool:
        parts = self._split(partition_key) if isinstance(partition_key, str) else None
        return parts is not None and all(
            d.partitions_def.has_partition_key(p, current_time) for d, p in zip(self.partitions_defs, parts)
        )

    def get_partition_keys_in_range(
        self, partition_key_range: PartitionKeyRange, current_time: datetime | None = None
    ) -> list[str]:
        """The cross product of each dimension's range, as Dagster defines a multi range."""
        starts, ends = (self._split(k) for k in partition_key_range)
        for key, parts in zip(partition_key_range, (starts, ends)):
            if parts is None:
                raise self.unknown_key_error(key, current_time)
        return self._product(
            [
                d.partitions_def.get_partition_keys_in_range(PartitionKeyRange(a, b), current_time)
                for d, a, b in zip(self.partitions_defs, starts, ends)
            ]
        )

    @property
    def time_window_dimension(self) -> PartitionDimensionDefinition | None:
        timed = [d for d in self.partitions_defs if isinstance(d.partitions_def, TimeWindowPartitionsDefinition)]
        return timed[0] if len(timed) == 1 else None

    def time_window_for_partition_key(self, partition_key: str) -> TimeWindow:
        dimension = self.time_window_dimension
        if dimension is None:
            raise DefinitionError("time_window_for_partition_key needs exactly one time window dimension")
        key = self.get_partition_key_from_str(partition_key)
        return dimension.partitions_def.time_window_for_partition_key(key.keys_by_dimension[dimension.name])

    def unknown_key_error(self, key: str, current_time: datetime | None = None) -> UnknownPartitionError:
        parts = self._split(key)
        names = self.partition_dimension_names
        if parts is None:
            return UnknownPartitionError(
                f"partition key {key!r} is not a multi-partition key: expected "
                f"'<{names[0]}>|<{names[1]}>', for example {self.get_first_partition_key(current_time)!r}"
            )
        for d, part in zip(self.partitions_defs, parts):
            if not d.partitions_def.has_partition_key(part, current_time):
                inner = d.partitions_def.unknown_key_error(part, current_time)
                return UnknownPartitionError(f"partition key {key!r}: in dimension {d.name!r}, {inner}")
        return UnknownPartitionError(f"unknown partition key {key!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MultiPartitionsDefinition) and other.partitions_defs == self.partitions_defs

    def __hash__(self) -> int:
        return hash(tuple(self.partitions_defs))

    def __repr__(self) -> str:
        inner = ", ".join(f"{d.name!r}: {d.partitions_def!r}" for d in self.partitions_defs)
        return f"MultiPartitionsDefinition({{{inner}}})"


__all__ = [
    "DailyPartitionsDefinition",
    "HourlyPartitionsDefinition",
    "MonthlyPartitionsDefinition",
    "MultiPartitionKey",
    "MultiPartitionsDefinition",
    "PartitionKeyRange",
    "PartitionsDefinition",
    "StaticPartitionsDefinition",
    "TimeWindow",
    "TimeWindowPartitionsDefinition",
    "WeeklyPartitionsDefinition",
]
