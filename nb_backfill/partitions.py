"""Partition definitions with Dagster's names and semantics: static, time window, multi.

A Dagster user's definition pastes in unchanged and yields the same keys. Time keys come from
`schedules` (ticks) and `keyformat` (strftime in bulk), so ten years of hourly keys take
milliseconds, and counting or looking up one key never builds the list. A few keys (up to
FEW_KEYS) are listed one tick at a time instead, which for hourly and daily partitions in UTC needs
no numpy: a small backfill launched from the terminal never imports it.

One key at a time (has_partition_key, time_window_for_partition_key, a run's window) takes the
single-key path: read the key, find its tick by bisecting a cached chunk of ticks, format that one
tick to check the key is a window start, and compare it with the bounds. Answers that do not
depend on the current time are cached per (definition, key); the bounds, which do, are kept with
the interval of current times they hold for; key lists (ranges, multi products) are cached by
what they depend on, within a budget of keys.
"""

from __future__ import annotations

import difflib
import functools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import date, datetime, tzinfo
from typing import TYPE_CHECKING, NamedTuple

from ._lazy import lazy_module
from .errors import DefinitionError, UnknownPartitionError, quoted_list
from .keyformat import format_tick, format_ticks, parse_fields
from .schedules import DAY, Ticks, fixed_offset, parse_cron, timeline

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")  # imported by the first bulk computation: a few keys need none

DEFAULT_DATE_FORMAT = "%Y-%m-%d"
DEFAULT_HOURLY_FORMAT = "%Y-%m-%d-%H:%M"
MULTIPARTITION_KEY_DELIMITER = "|"
INVALID_STATIC_KEY_CHARACTERS = frozenset("|,[]")
INVALID_KEY_SUBSTRINGS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")
_EXAMPLE_TIME = datetime(2024, 1, 31, 13, 0)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Up to this many keys are listed one at a time, as a run formats its own key: a small backfill of
# hourly or daily partitions in UTC then never imports numpy. Longer lists are made in bulk.
FEW_KEYS = 64


class PartitionKeyRange(NamedTuple):
    """An inclusive range of partition keys, in definition order."""

    start: str
    end: str


class TimeWindow(NamedTuple):
    """The [start, end) instants of a time partition, tz-aware."""

    start: datetime
    end: datetime


class _KeyLists:
    """Key lists by what they depend on (a hashable token), least recently used dropped first so
    that at most `budget` keys are held in all; a longer list is computed and not kept. Callers
    get their own copy, so changing it cannot change what later callers get."""

    def __init__(self, budget: int):
        self.budget = budget
        self._lists: OrderedDict[Hashable, list[str]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, token: Hashable, compute: Callable[[], list[str]]) -> list[str]:
        with self._lock:
            keys = self._lists.get(token)
            if keys is not None:
                self._lists.move_to_end(token)
        if keys is not None:
            return list(keys)
        keys = compute()
        if len(keys) <= self.budget:
            with self._lock:
                if token not in self._lists:
                    self._lists[token] = keys
                    self._held += len(keys)
                while self._held > self.budget:
                    self._held -= len(self._lists.popitem(last=False)[1])
            return list(keys)
        return keys

    def clear(self) -> None:
        with self._lock:
            self._lists.clear()
            self._held = 0


KEY_LISTS = _KeyLists(budget=500_000)


class PartitionsDefinition:
    """What every definition answers; keys are strings in definition order."""

    def _keys_token(self, current_time: datetime | None) -> Hashable | None:
        """A value that changes whenever get_partition_keys(current_time) may (with the definition
        itself, a cache key for lists made from those keys); None when there is no such value
        short of the keys themselves (dynamic keys live in a store)."""
        return None

    def __getstate__(self) -> dict:
        # a cached hash is only valid in the process that computed it (str hashes are salted)
        state = self.__dict__.copy()
        state.pop("_hash", None)
        return state

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


REPR_KEYS = 20  # keys a static definition's repr shows (a backfill stores it; a notebook prints it)


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

    def _keys_token(self, current_time: datetime | None) -> Hashable | None:
        return ()  # the keys never change

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
        if "_hash" not in self.__dict__:
            self._hash = hash(tuple(self._keys))
        return self._hash

    def __repr__(self) -> str:
        if len(self._keys) <= REPR_KEYS:
            return f"StaticPartitionsDefinition({self._keys!r})"
        head = ", ".join(map(repr, self._keys[: REPR_KEYS // 2]))
        tail = ", ".join(map(repr, self._keys[-(REPR_KEYS // 2) :]))
        return f"StaticPartitionsDefinition([{head}, ... ({len(self._keys) - REPR_KEYS:,} more) ..., {tail}])"


# ---------------------------------------------------------------------------------------------
# Time windows


def get_timezone(name: str) -> tzinfo:
    """The IANA zone `name` ('utc' in any case is UTC, as pendulum.timezone read it), or a
    DefinitionError that suggests close names."""
    import zoneinfo  # here, not at the top: its import reads the system's paths, which only time zones need

    if not isinstance(name, str) or not name:
        raise DefinitionError(f"timezone must be an IANA name such as 'UTC' or 'America/New_York', got {name!r}")
    try:
        return zoneinfo.ZoneInfo("UTC" if name.lower() == "utc" else name)
    # ValueError: not a relative path, e.g. '/etc/localtime'; OSError: a folder ('America'), a name too long
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
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
    fields = parse_fields(text, fmt)
    if fields is not None:  # the common shape, read by position: what strptime would read
        offset = fixed_offset(tz)
        if offset is None:
            return math.floor(datetime(*fields, tzinfo=tz).timestamp())
        year, month, day, hour, minute, second = fields
        return (date(year, month, day).toordinal() - _EPOCH_ORDINAL) * DAY + hour * 3600 + minute * 60 + second - offset
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
        self._timeline = timeline(self._schedule, self.tz)
        self._suffix_repeated = self._schedule.every_hour and "%z" not in fmt
        self._start_ts = _instant(start, fmt, self.tz, "start")
        self._end_ts = None if end is None or end == "" else _instant(end, fmt, self.tz, "end")
        self._first = self._timeline.next(self._start_ts)  # where the first window starts
        self._second = self._timeline.next(self._first + 1)  # and ends
        # (lo, hi, bounds): the bounds at every current time in [lo, hi) (see _bounds)
        self._bounds_memo: tuple[int, int, tuple[int, int] | None] = (0, 0, None)
        self._now_memo: tuple[datetime | None, int, int] = (None, 0, 0)  # (current_time, its fold, instant)
        if self._format_one(self._first) == self._format_one(self._second):
            raise DefinitionError(
                f"fmt {fmt!r} is not precise enough for cron schedule {cron_schedule!r}: "
                f"consecutive windows would share the key {self._format_one(self._first)!r}"
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
        """The instant current_time names (naive: in the definition's zone); None is the clock.
        The last one converted is remembered: the same current_time is often passed again."""
        if current_time is None:
            return math.floor(time.time())
        seen, fold, now = self._now_memo
        if seen == current_time and fold == current_time.fold:  # a naive time never equals an aware one
            return now
        aware = current_time.replace(tzinfo=self.tz) if current_time.tzinfo is None else current_time
        now = math.floor(aware.timestamp())
        self._now_memo = (current_time, current_time.fold, now)
        return now

    def _bounds(self, current_time: datetime | None) -> tuple[int, int] | None:
        """Start instants of the first and last partitions at current_time, or None if there are none.

        They change only when the current time reaches a tick, so they are kept with the interval
        of current times they hold for (from just after the latest tick at or before now to the
        next tick; a current time exactly on a tick gets an interval of its own second). A later
        or earlier current time, "now" included, falls outside it and is computed afresh: the
        answer cannot go stale.
        """
        now = self._now(current_time)
        lo, hi, bounds = self._bounds_memo
        if lo <= now < hi:
            return bounds
        bounds = self._bounds_at(now)
        latest = self._timeline.prev(now)
        lo, hi = (now, now + 1) if latest == now else (latest + 1, self._timeline.next(now + 1))
        self._bounds_memo = (lo, hi, bounds)
        return bounds

    def _bounds_at(self, now: int) -> tuple[int, int] | None:
        """_bounds at the instant `now`, computed: a few bisections of cached ticks."""
        if self._end_ts is not None and self._end_ts <= self._start_ts:
            return None
        line, offset, first, second = self._timeline, self.end_offset, self._first, self._second
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

    def _keys_token(self, current_time: datetime | None) -> Hashable | None:
        return (self._bounds(current_time),)

    def _format(self, lo: int, hi: int, ticks: Callable[[int, int], Ticks] | None = None) -> list[str]:
        """Keys of the ticks in [lo, hi): up to FEW_KEYS of them one at a time, more in bulk from
        `ticks(lo, hi)` (default: the bulk computation). Both give the same keys."""
        few = self._timeline.few(lo, hi, FEW_KEYS)
        if few is not None:
            return [self._format_one(tick) for tick in few]
        found = (ticks or self._timeline.between)(lo, hi)
        return format_ticks(found, self.fmt, self.tz, self._suffix_repeated)

    def _format_one(self, tick: int) -> str:
        wall, repeated = self._timeline.wall_of(tick)
        return format_tick(tick, wall, repeated, self.fmt, self.tz, self._suffix_repeated)

    def _tick_of(self, key: str) -> int | None:
        """The window start a key names, or None if the key is not one of the schedule's."""
        try:
            instant = parse_time_key(key, self.fmt, self.tz)
            tick = self._timeline.next(instant)
        except DefinitionError:
            return None
        return tick if self._format_one(tick) == key else None

    def _window_ticks(self, key: object) -> tuple[int, int] | None:
        """(start, end) instants of the window a key names, or None; cached per key."""
        return _window_ticks(self, key) if isinstance(key, str) else None

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
        window = self._window_ticks(partition_key)
        if window is None:
            return False
        bounds = self._bounds(current_time)
        return bounds is not None and bounds[0] <= window[0] <= bounds[1]

    def time_window_for_partition_key(self, partition_key: str) -> TimeWindow:
        """The [start, end) of the window a key names: any key of the schedule from `start` on,
        including windows not yet complete, as in Dagster."""
        window = _time_window(self, partition_key) if isinstance(partition_key, str) else None
        if window is None:
            raise self.unknown_key_error(partition_key)
        return window

    def get_partition_keys_in_range(
        self, partition_key_range: PartitionKeyRange, current_time: datetime | None = None
    ) -> list[str]:
        bounds = self._bounds(current_time)
        ticks = []
        for key in partition_key_range:
            window = self._window_ticks(key)
            if bounds is None or window is None or not bounds[0] <= window[0] <= bounds[1]:
                raise self.unknown_key_error(key, current_time)
            ticks.append(window[0])
        lo, hi = ticks
        if lo > hi:
            return []
        return KEY_LISTS.get(("range", self, lo, hi), lambda: self._format(lo, hi + 1, self._timeline.ticks_in))

    def index_of(self, partition_key: str, current_time: datetime | None = None) -> int:
        """Position of a key in get_partition_keys(), without building that list."""
        bounds = self._bounds(current_time)
        window = self._window_ticks(partition_key)
        if bounds is None or window is None or not bounds[0] <= window[0] <= bounds[1]:
            raise self.unknown_key_error(partition_key, current_time)
        return self._timeline.count(bounds[0], window[0])

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
        return other is self or (type(other) is type(self) and other._params() == self._params())

    def __hash__(self) -> int:
        if "_hash" not in self.__dict__:
            self._hash = hash(self._params())
        return self._hash

    def __repr__(self) -> str:
        end = "" if self._end_ts is None else f", end={self.end.isoformat()!r}"
        return (
            f"{type(self).__name__}(start={self.start.isoformat()!r}{end}, fmt={self.fmt!r}, "
            f"cron_schedule={self.cron_schedule!r}, timezone={self.timezone!r}, end_offset={self.end_offset})"
        )


@functools.lru_cache(maxsize=8192)
def _window_ticks(definition: TimeWindowPartitionsDefinition, key: str) -> tuple[int, int] | None:
    """(start, end) instants of the window `key` names in `definition`, or None if it names none.

    Neither depends on the current time, so they are kept per (definition, key) for the 8192 most
    recently asked; whether the window is a partition *now* is checked against the bounds.
    """
    tick = definition._tick_of(key)
    return None if tick is None else (tick, definition._timeline.next(tick + 1))


@functools.lru_cache(maxsize=4096)
def _time_window(definition: TimeWindowPartitionsDefinition, key: str) -> TimeWindow | None:
    """The TimeWindow of a key from `start` on (None otherwise), kept for the 4096 most recently
    asked: a run reads its window again and again. TimeWindow and datetime are immutable."""
    window = _window_ticks(definition, key)
    if window is None or window[0] < definition._first:
        return None
    return TimeWindow(
        datetime.fromtimestamp(window[0], definition.tz), datetime.fromtimestamp(window[1], definition.tz)
    )


def _guess_instant(text: str, tz: tzinfo) -> int | None:
    """What instant a key in some other format probably meant (for 'did you mean')."""
    import pendulum  # only for this message: imported when first needed

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
    """A key of a multi definition: the dimension keys joined by '|', dimensions ordered by name.

    Keys a definition lists are made in bulk as instances of a subclass that knows the dimension
    names (see _key_type): no dict and no attribute per key, so 36,550 keys cost little more than
    36,550 strings; keys_by_dimension is read from the string when asked for. A key made from a
    dict keeps that dict.
    """

    __slots__ = ()
    _dimension_names: tuple[str, ...] = ()

    def __new__(cls, keys_by_dimension: Mapping[str, str]) -> MultiPartitionKey:
        names = sorted(keys_by_dimension)
        text = MULTIPARTITION_KEY_DELIMITER.join(keys_by_dimension[n] for n in names)
        key = str.__new__(_KeyFromDict if cls is MultiPartitionKey else cls, text)
        key._keys_by_dimension = {n: keys_by_dimension[n] for n in names}
        return key

    @property
    def keys_by_dimension(self) -> dict[str, str]:
        """{dimension name: its key}."""
        given = getattr(self, "_keys_by_dimension", None)
        if given is not None:
            return given
        return dict(zip(self._dimension_names, self.split(MULTIPARTITION_KEY_DELIMITER)))

    def __reduce__(self) -> tuple:
        return MultiPartitionKey, (self.keys_by_dimension,)


class _KeyFromDict(MultiPartitionKey):
    """MultiPartitionKey({...}): a key that keeps the dict it was made from (in its __dict__)."""


@functools.lru_cache(maxsize=256)
def _key_type(names: tuple[str, ...]) -> type[MultiPartitionKey]:
    """The MultiPartitionKey subclass for keys listed in bulk with these dimension names: a key is
    then just `str.__new__(subclass, "a|b")`. Pickled keys come back as made from a dict."""
    return type("MultiPartitionKey", (MultiPartitionKey,), {"__slots__": (), "_dimension_names": names})


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
        timed = [
            i
            for i, d in enumerate(self.partitions_defs)
            if isinstance(d.partitions_def, TimeWindowPartitionsDefinition)
        ]
        self._time_index = timed[0] if len(timed) == 1 else None

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
        new, key_type = str.__new__, _key_type(tuple(self.partition_dimension_names))
        first, second = per_dimension
        return [new(key_type, p + k) for p in [k + MULTIPARTITION_KEY_DELIMITER for k in first] for k in second]

    def _keys_token(self, current_time: datetime | None) -> Hashable | None:
        tokens = tuple(d.partitions_def._keys_token(current_time) for d in self.partitions_defs)
        return None if any(t is None for t in tokens) else tokens

    def get_partition_keys(self, current_time: datetime | None = None) -> list[str]:
        """The cross product of the dimensions' keys, kept (within KEY_LISTS' budget) for as long
        as every dimension's keys stay the same; with a dynamic dimension, made afresh."""

        def product() -> list[str]:
            return self._product([d.partitions_def.get_partition_keys(current_time) for d in self.partitions_defs])

        token = self._keys_token(current_time)
        return product() if token is None else KEY_LISTS.get(("multi", self, token), product)

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

        def product() -> list[str]:
            return self._product(
                [
                    d.partitions_def.get_partition_keys_in_range(PartitionKeyRange(a, b), current_time)
                    for d, a, b in zip(self.partitions_defs, starts, ends)
                ]
            )

        token = self._keys_token(current_time)
        if token is None:
            return product()
        return KEY_LISTS.get(("multi range", self, token, tuple(starts), tuple(ends)), product)

    @property
    def time_window_dimension(self) -> PartitionDimensionDefinition | None:
        return None if self._time_index is None else self.partitions_defs[self._time_index]

    def time_window_for_partition_key(self, partition_key: str) -> TimeWindow:
        if self._time_index is None:
            raise DefinitionError("time_window_for_partition_key needs exactly one time window dimension")
        parts = self._split(partition_key)
        if parts is None:
            raise self.unknown_key_error(partition_key)
        dimension = self.partitions_defs[self._time_index]
        return dimension.partitions_def.time_window_for_partition_key(parts[self._time_index])

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
        if "_hash" not in self.__dict__:
            self._hash = hash(tuple(self.partitions_defs))
        return self._hash

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
