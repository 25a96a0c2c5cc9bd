"""Cron schedules and the instants they tick at in a time zone, counted the way Dagster counts them.

Ticks are computed in bulk with numpy: the wall-clock times a cron names are laid out day by day,
then mapped to UTC through the zone's offset periods. When every day ticks alike in a zone of fixed
offset (hourly and daily in UTC), single ticks and counts are plain arithmetic and numpy is not
imported until something is computed in bulk. DST follows Dagster's rules: a schedule whose
hour field is `*` skips nonexistent wall times and ticks at both occurrences of a repeated one; any
other schedule moves a nonexistent tick to the end of the gap and takes the second occurrence of a
repeated one.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, NamedTuple

from ._lazy import lazy_module
from .errors import DefinitionError

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")  # imported by the first bulk computation: single ticks of a regular timeline need none

DAY = 86_400
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_WEEKDAYS = "sun mon tue wed thu fri sat".split()
# (name, low, high, names for values from `low`)
_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True)
class CronSchedule:
    """A parsed five-field cron string: the allowed values of each field."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool
    every_hour: bool  # the hour field is `*`: DST repeats and skips hours, like the clock

    @property
    def every_day(self) -> bool:
        """Every day of every month matches (hourly and daily schedules): no calendar to check."""
        return len(self.months) == 12 and len(self.days) == 31 and len(self.weekdays) == 7

    @functools.cached_property
    def times_of_day(self) -> tuple[int, ...]:
        """Seconds after local midnight of every tick in a matching day, ascending."""
        return tuple(sorted(h * 3600 + m * 60 for h in self.hours for m in self.minutes))


def _bad_cron(text: str, why: str) -> DefinitionError:
    return DefinitionError(
        f"invalid cron schedule {text!r}: {why}; expected five fields "
        "'minute hour day-of-month month day-of-week', e.g. '0 * * * *' or '30 6 * * 1-5'"
    )


def _parse_value(token: str, names: tuple[str, ...], low: int, text: str, field: str) -> int:
    if token.isdigit():
        return int(token)
    lowered = token.lower()
    if lowered in names:
        return names.index(lowered) + low
    raise _bad_cron(text, f"{token!r} is not a valid {field}")


def _parse_field(part: str, spec: tuple, text: str) -> tuple[int, ...]:
    field, low, high, names = spec
    values: set[int] = set()
    for item in part.split(","):
        if not item:
            raise _bad_cron(text, f"empty item in the {field} field {part!r}")
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _bad_cron(text, f"step {step_text!r} in the {field} field must be a positive integer")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            first = _parse_value(a, names, low, text, field)
            last = _parse_value(b, names, low, text, field)
        else:
            first = _parse_value(base, names, low, text, field)
            last = high if step_text else first
        for value in (first, last):
            if not low <= value <= high:
                raise _bad_cron(text, f"{field} {value} is out of range {low}-{high}")
        if first > last:
            raise _bad_cron(text, f"range {base!r} in the {field} field runs backwards")
        values.update(range(first, last + 1, step))
    return tuple(sorted(values))


@functools.lru_cache(maxsize=256)
def parse_cron(text: str) -> CronSchedule:
    """Parse a five-field cron string (names, ranges, steps, lists and @aliases allowed)."""
    if not isinstance(text, str):
        raise DefinitionError(f"cron schedule must be a string, got {text!r}")
    expanded = _ALIASES.get(text.strip().lower(), text)
    parts = expanded.split()
    if len(parts) != 5:
        raise _bad_cron(text, f"found {len(parts)} field{'s' if len(parts) != 1 else ''}")
    minutes, hours, days, months, weekdays = (_parse_field(p, s, text) for p, s in zip(parts, _FIELDS))
    weekdays = tuple(sorted({d % 7 for d in weekdays}))
    days_restricted = not parts[2].startswith("*")
    if days_restricted and all(d > max(_DAYS_IN_MONTH[m] for m in months) for d in days):
        raise _bad_cron(text, "that day of the month never occurs in those months")
    return CronSchedule(
        text=text,
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=weekdays,
        days_restricted=days_restricted,
        weekdays_restricted=not parts[4].startswith("*"),
        every_hour=parts[1] == "*",
    )


# ---------------------------------------------------------------------------------------------
# Time zones as offset periods


_MIN_TS, _MAX_TS = -62_135_596_800 + 2 * DAY, 253_402_300_799 - 2 * DAY  # years 1 to 9999, less a margin
_SAMPLE_STEP = 2 * DAY  # DST changes are months apart; two days apart never happens in practice
_FAR_PAST = -(2**62)
# Zones whose offset never changes (tzdata defines the Etc zones as fixed offsets): no sampling.
_FIXED_ZONE = re.compile(r"(Etc/)?(UTC|UCT|Universal|Zulu|Greenwich|GMT([+-]\d{1,2})?|GMT0)")


def _is_fixed(tz: tzinfo) -> bool:
    key = getattr(tz, "key", None)
    return isinstance(tz, timezone) or (isinstance(key, str) and _FIXED_ZONE.fullmatch(key) is not None)


def _offset_at(tz: tzinfo, ts: int) -> int:
    return int(datetime.fromtimestamp(ts, tz).utcoffset().total_seconds())


@functools.lru_cache(maxsize=256)
def fixed_offset(tz: tzinfo) -> int | None:
    """The zone's UTC offset (seconds) if it never changes, else None."""
    return _offset_at(tz, 0) if _is_fixed(tz) else None


@functools.lru_cache(maxsize=512)
def _year_changes(tz: tzinfo, year: int) -> tuple[int, tuple[tuple[int, int], ...]]:
    """The zone's UTC offset at the start of `year` and its (instant, new offset) changes during it,
    found by sampling every two days and bisecting to the second. Cached a year at a time, so
    looking at a few days of 2024 costs one year's sampling, not three."""
    lo = int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp())
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    lo, hi = max(lo, _MIN_TS), min(lo + (366 if leap else 365) * DAY, _MAX_TS)
    samples = [*range(lo, hi, _SAMPLE_STEP), hi]
    offsets_at = [_offset_at(tz, s) for s in samples]
    changes = []
    for (a, oa), (b, ob) in zip(zip(samples, offsets_at), zip(samples[1:], offsets_at[1:])):
        if oa == ob:
            continue
        while b - a > 1:  # bisect to the second of the change
            mid = (a + b) // 2
            if _offset_at(tz, mid) == oa:
                a = mid
            else:
                b = mid
        changes.append((b, ob))
    return offsets_at[0], tuple(changes)


@functools.lru_cache(maxsize=64)
def _offset_periods(tz: tzinfo, lo_year: int, hi_year: int) -> tuple[np.ndarray, np.ndarray]:
    """The instants where the zone's UTC offset changes within [lo_year, hi_year] and the offsets.

    Returns (starts, offsets): period i has offset offsets[i] from starts[i] (seconds, UTC) until
    starts[i + 1]; starts[0] is a sentinel far in the past.
    """
    if _is_fixed(tz):
        return np.array([_FAR_PAST], dtype=np.int64), np.array([_offset_at(tz, 0)], dtype=np.int64)
    first, _ = _year_changes(tz, lo_year)
    starts, offsets = [_FAR_PAST], [first]
    for year in range(lo_year, hi_year + 1):
        for instant, offset in _year_changes(tz, year)[1]:
            starts.append(instant)
            offsets.append(offset)
    return np.array(starts, dtype=np.int64), np.array(offsets, dtype=np.int64)


def _year_of(ts: int) -> int:
    return datetime.fromtimestamp(min(max(ts, _MIN_TS), _MAX_TS), timezone.utc).year


@dataclass(frozen=True)
class Ticks:
    """Ticks of a schedule, ascending: UTC instants, local wall times (both in epoch seconds) and
    whether each is the second occurrence of a repeated wall time (which needs an offset suffix)."""

    utc: np.ndarray
    wall: np.ndarray
    repeated: np.ndarray

    def __len__(self) -> int:
        return len(self.utc)

    def offsets(self) -> np.ndarray:
        return self.wall - self.utc


def _matching_days(schedule: CronSchedule, first_day: int, last_day: int) -> np.ndarray:
    """Days (since the epoch) in [first_day, last_day] that the schedule's day fields allow."""
    days = np.arange(first_day, last_day + 1, dtype=np.int64)
    if schedule.every_day:
        return days
    month_starts = days.astype("datetime64[D]").astype("datetime64[M]")
    month = month_starts.astype(np.int64) % 12 + 1
    dom = days - month_starts.astype("datetime64[D]").astype(np.int64) + 1
    dow = (days + 4) % 7  # 1970-01-01 was a Thursday; 0 = Sunday
    allowed = np.zeros(13, bool)
    allowed[list(schedule.months)] = True
    keep = allowed[month]
    dom_ok = np.zeros(32, bool)
    dom_ok[list(schedule.days)] = True
    dow_ok = np.zeros(7, bool)
    dow_ok[list(schedule.weekdays)] = True
    if schedule.days_restricted and schedule.weekdays_restricted:
        keep &= dom_ok[dom] | dow_ok[dow]
    else:
        keep &= dom_ok[dom] & dow_ok[dow]
    return days[keep]


@functools.lru_cache(maxsize=256)
def _times_array(schedule: CronSchedule) -> np.ndarray:
    """schedule.times_of_day as an array, for the bulk computations; kept here rather than on the
    schedule, so that a definition pickled for a worker process never holds a numpy array."""
    return np.array(schedule.times_of_day, dtype=np.int64)


def ticks_between(schedule: CronSchedule, tz: tzinfo, lo: int, hi: int) -> Ticks:
    """Every tick t of the schedule in `tz` with lo <= t < hi (epoch seconds, UTC)."""
    if hi <= lo:
        empty = np.empty(0, np.int64)
        return Ticks(empty, empty, np.empty(0, bool))
    # wall times from two days before lo to two after hi, offsets of up to a day either way
    starts, offsets = _offset_periods(tz, _year_of(lo - 5 * DAY), _year_of(hi + 4 * DAY))
    days = _matching_days(schedule, lo // DAY - 2, hi // DAY + 1)
    wall = (days[:, None] * DAY + _times_array(schedule)[None, :]).ravel()
    if len(starts) == 1:  # one offset throughout (UTC, or no change these years): no gaps, no repeats
        utc = wall - offsets[0]
        keep = (utc >= lo) & (utc < hi)
        return Ticks(utc[keep], wall[keep], np.zeros(np.count_nonzero(keep), bool))

    wall_starts = starts + offsets
    wall_ends = np.append(starts[1:] + offsets[:-1], np.iinfo(np.int64).max)
    period = np.searchsorted(wall_starts, wall, side="right") - 1
    exists = wall < wall_ends[period]
    previous = np.maximum(period - 1, 0)
    repeated = exists & (period > 0) & (wall < wall_ends[previous])

    if schedule.every_hour:
        first = wall[repeated] - offsets[previous[repeated]]
        utc = np.concatenate([wall[exists] - offsets[period[exists]], first])
        local = np.concatenate([wall[exists], wall[repeated]])
        second = np.concatenate([repeated[exists], np.zeros(len(first), bool)])
    else:
        after = np.minimum(period + 1, len(starts) - 1)
        utc = np.where(exists, wall - offsets[period], starts[after])
        local = np.where(exists, wall, starts[after] + offsets[after])
        second = np.zeros(len(utc), bool)

    if len(utc) > 1 and np.all(utc[1:] > utc[:-1]):
        index = np.arange(len(utc))
    else:  # repeated hours came last, or gap ticks coincide: sort and merge
        utc, index = np.unique(utc, return_index=True)
    keep = (utc >= lo) & (utc < hi)
    index = index[keep]
    return Ticks(utc[keep], local[index], second[index])


class TickChunk(NamedTuple):
    """The ticks in [lo, lo + span) of a timeline, as Python values for looking up one at a time:
    UTC instants (ascending, for bisect), their local wall times, and the instants that are the
    second occurrence of a repeated wall time; and as the arrays they came from."""

    utc: list[int]
    wall: list[int]
    repeated: frozenset[int]
    ticks: Ticks


@functools.lru_cache(maxsize=128)
def _chunk(timeline: Timeline, index: int) -> TickChunk:
    """Chunk `index` of a timeline, computed once in bulk and kept while recently used: a single
    tick is then found by bisecting a short list. At most 128 chunks of about 1024 ticks stay."""
    lo = index * timeline.span
    if lo + timeline.span <= _MIN_TS or lo >= _MAX_TS:
        raise timeline.out_of_years()
    ticks = timeline.between(lo, lo + timeline.span)
    return TickChunk(ticks.utc.tolist(), ticks.wall.tolist(), frozenset(ticks.utc[ticks.repeated].tolist()), ticks)


class Timeline:
    """A schedule in a time zone: find, count and list its ticks without listing all of them.

    Single ticks (next, previous, the wall time of one) come from chunks of about 1024 ticks kept
    in a bounded cache shared by every definition on the same schedule and zone; lists of ticks
    come straight from `ticks_between`, or tick by tick when there are few. When every day ticks
    alike in a zone of fixed offset (hourly and daily in UTC), single ticks, counts and a few ticks
    are plain arithmetic and need no chunk at all.
    """

    _CHUNK_TICKS = 1024
    _COUNT_STEP = 366 * DAY

    def __init__(self, schedule: CronSchedule, tz: tzinfo):
        self.schedule = schedule
        self.tz = tz
        regular = schedule.every_day and _is_fixed(tz)
        self._times: tuple[int, ...] | None = schedule.times_of_day if regular else None
        self._offset = _offset_at(tz, 0) if regular else 0

    @functools.cached_property
    def span(self) -> int:
        """Seconds of a chunk: about _CHUNK_TICKS ticks, counted in four years of UTC days (a leap
        cycle covers any day pattern), from one day to ten years. Computed when the first chunk
        is, since a regular timeline needs none."""
        per_four_years = len(_matching_days(self.schedule, 0, 4 * 366 - 1)) * len(self.schedule.times_of_day)
        days = 4 * 366 * self._CHUNK_TICKS // max(per_four_years, 1)
        return min(max(days, 1), 3660) * DAY

    def out_of_years(self) -> DefinitionError:
        return DefinitionError(f"cron schedule {self.schedule.text!r} has no tick between the years 1 and 9999 here")

    def _regular_index(self, ts: int) -> int:
        """The number of the first tick at or after ts, counted from the first of 1970-01-01
        (local), when ticks are regular."""
        day, second = divmod(ts + self._offset, DAY)
        return day * len(self._times) + bisect.bisect_left(self._times, second)

    def _regular_tick(self, index: int) -> int:
        """Tick number `index` counted from the first of 1970-01-01 (local), when ticks are regular."""
        day, j = divmod(index, len(self._times))
        tick = day * DAY + self._times[j] - self._offset
        if not _MIN_TS <= tick <= _MAX_TS:
            raise self.out_of_years()
        return tick

    def between(self, lo: int, hi: int) -> Ticks:
        return ticks_between(self.schedule, self.tz, lo, hi)

    def ticks_in(self, lo: int, hi: int) -> Ticks:
        """between(lo, hi), from the cached chunks when they cover it in a few (a short range
        asked for by its keys, whose chunks were just read), else in bulk."""
        if hi <= lo or self._times is not None:
            return self.between(lo, hi)
        first, last = lo // self.span, (hi - 1) // self.span
        if last - first >= 4:
            return self.between(lo, hi)
        parts = []
        for index in range(first, last + 1):
            chunk = _chunk(self, index)
            a, b = bisect.bisect_left(chunk.utc, lo), bisect.bisect_left(chunk.utc, hi)
            parts.append((chunk.ticks.utc[a:b], chunk.ticks.wall[a:b], chunk.ticks.repeated[a:b]))
        if len(parts) == 1:
            return Ticks(*parts[0])
        return Ticks(*(np.concatenate(column) for column in zip(*parts)))

    def count(self, lo: int, hi: int) -> int:
        """How many ticks lie in [lo, hi): arithmetic when ticks are regular, else computed a year
        at a time to keep memory flat."""
        if self._times is not None:
            return max(0, self._regular_index(hi) - self._regular_index(lo))
        total = 0
        for a in range(lo, hi, self._COUNT_STEP):
            total += len(self.between(a, min(a + self._COUNT_STEP, hi)))
        return total

    def few(self, lo: int, hi: int, limit: int) -> list[int] | None:
        """The ticks in [lo, hi) if there are at most `limit`, found one at a time (so without
        numpy when ticks are regular); None if there are more."""
        if self._times is not None:
            first, end = self._regular_index(lo), self._regular_index(hi)
            return [self._regular_tick(i) for i in range(first, end)] if end - first <= limit else None
        ticks: list[int] = []
        tick = self.next(lo)
        while tick < hi:
            if len(ticks) == limit:
                return None
            ticks.append(tick)
            tick = self.next(tick + 1)
        return ticks

    def next(self, ts: int, n: int = 1) -> int:
        """The n-th tick at or after ts (n >= 1)."""
        if self._times is not None:
            return self._regular_tick(self._regular_index(ts) + n - 1)
        index = ts // self.span
        utc = _chunk(self, index).utc
        i = bisect.bisect_left(utc, ts) + n - 1
        while i >= len(utc):
            i -= len(utc)
            index += 1
            utc = _chunk(self, index).utc
        return utc[i]

    def prev(self, ts: int, n: int = 1) -> int:
        """The n-th tick at or before ts (n >= 1)."""
        if self._times is not None:
            return self._regular_tick(self._regular_index(ts + 1) - n)
        index = ts // self.span
        utc = _chunk(self, index).utc
        i = bisect.bisect_right(utc, ts) - n
        while i < 0:
            index -= 1
            utc = _chunk(self, index).utc
            i += len(utc)
        return utc[i]

    def wall_of(self, tick: int) -> tuple[int, bool]:
        """The local wall time of a tick (epoch seconds) and whether it is the second occurrence
        of a repeated wall time; `tick` must be a tick of the timeline."""
        if self._times is not None:
            return tick + self._offset, False
        chunk = _chunk(self, tick // self.span)
        return chunk.wall[bisect.bisect_left(chunk.utc, tick)], tick in chunk.repeated


@functools.lru_cache(maxsize=128)
def timeline(schedule: CronSchedule, tz: tzinfo) -> Timeline:
    """The timeline of a schedule in a zone, shared by every definition that uses both, so they
    share its cached chunks too."""
    return Timeline(schedule, tz)
