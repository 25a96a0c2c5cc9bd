"""Cron schedules and the instants they tick at in a time zone, counted the way Dagster counts them.

Ticks are computed in bulk with numpy: the wall-clock times a cron names are laid out day by day,
then mapped to UTC through the zone's offset periods. DST follows Dagster's rules: a schedule whose
hour field is `*` skips nonexistent wall times and ticks at both occurrences of a repeated one; any
other schedule moves a nonexistent tick to the end of the gap and takes the second occurrence of a
repeated one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo

import numpy as np

from .errors import DefinitionError

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

    @functools.cached_property
    def times_of_day(self) -> np.ndarray:
        """Seconds after local midnight of every tick in a matching day, ascending."""
        return np.array(sorted(h * 3600 + m * 60 for h in self.hours for m in self.minutes), dtype=np.int64)


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


_SAMPLE_STEP = 2 * DAY  # DST changes are months apart; two days apart never happens in practice


@functools.lru_cache(maxsize=64)
def _offset_periods(tz: tzinfo, lo_year: int, hi_year: int) -> tuple[np.ndarray, np.ndarray]:
    """The instants where the zone's UTC offset changes within [lo_year, hi_year] and the offsets.

    Returns (starts, offsets): period i has offset offsets[i] from starts[i] (seconds, UTC) until
    starts[i + 1]; starts[0] is a sentinel far in the past.
    """
    lo = int(datetime(lo_year, 1, 1, tzinfo=timezone.utc).timestamp())
    hi = int(datetime(hi_year, 12, 31, tzinfo=timezone.utc).timestamp())

    def offset_at(ts: int) -> int:
        return int(datetime.fromtimestamp(ts, tz).utcoffset().total_seconds())

    samples = list(range(lo, hi + _SAMPLE_STEP, _SAMPLE_STEP))
    offsets_at = [offset_at(s) for s in samples]
    starts, offsets = [-(2**62)], [offsets_at[0]]
    for (a, oa), (b, ob) in zip(zip(samples, offsets_at), zip(samples[1:], offsets_at[1:])):
        if oa == ob:
            continue
        while b - a > 1:  # bisect to the second of the change
            mid = (a + b) // 2
            if offset_at(mid) == oa:
                a = mid
            else:
                b = mid
        starts.append(b)
        offsets.append(ob)
    return np.array(starts, dtype=np.int64), np.array(offsets, dtype=np.int64)


def _year_of(ts: int) -> int:
    return datetime.fromtimestamp(min(max(ts, -62_135_596_800 + 2 * DAY), 253_402_300_799 - 2 * DAY), timezone.utc).year


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


def ticks_between(schedule: CronSchedule, tz: tzinfo, lo: int, hi: int) -> Ticks:
    """Every tick t of the schedule in `tz` with lo <= t < hi (epoch seconds, UTC)."""
    if hi <= lo:
        empty = np.empty(0, np.int64)
        return Ticks(empty, empty, np.empty(0, bool))
    starts, offsets = _offset_periods(tz, _year_of(lo) - 1, _year_of(hi) + 1)
    days = _matching_days(schedule, lo // DAY - 2, hi // DAY + 1)
    wall = (days[:, None] * DAY + schedule.times_of_day[None, :]).ravel()

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


class Timeline:
    """A schedule in a time zone: find, count and list its ticks without listing all of them."""

    _CHUNK = 366 * DAY

    def __init__(self, schedule: CronSchedule, tz: tzinfo):
        self.schedule = schedule
        self.tz = tz
        gaps = np.diff(self.between(0, 4 * 366 * DAY).utc)  # a leap cycle covers any month pattern
        self._max_gap = int(gaps.max()) + 2 * DAY if len(gaps) else 9 * 366 * DAY

    def between(self, lo: int, hi: int) -> Ticks:
        return ticks_between(self.schedule, self.tz, lo, hi)

    def count(self, lo: int, hi: int) -> int:
        """How many ticks lie in [lo, hi), computed a year at a time to keep memory flat."""
        total = 0
        for a in range(lo, hi, self._CHUNK):
            total += len(self.between(a, min(a + self._CHUNK, hi)))
        return total

    def next(self, ts: int, n: int = 1) -> int:
        """The n-th tick at or after ts (n >= 1)."""
        span = max(self._max_gap, 1) * (n + 1)
        while True:
            found = self.between(ts, ts + span).utc
            if len(found) >= n:
                return int(found[n - 1])
            span *= 4

    def prev(self, ts: int, n: int = 1) -> int:
        """The n-th tick at or before ts (n >= 1)."""
        span = max(self._max_gap, 1) * (n + 1)
        while True:
            found = self.between(ts - span, ts + 1).utc
            if len(found) >= n:
                return int(found[-n])
            span *= 4
