"""Partition keys from ticks: `strftime` for a whole array of wall-clock times at once.

Formats made of fixed-width directives (%Y %m %d %H %M %S %y %j %I %p %a %b %F %T %%) and ASCII
text are built as a byte matrix with numpy, about 50x faster than calling strftime per key; any
other format falls back to `datetime.strftime`, so every format Python knows still works.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from ._lazy import lazy_module
from .schedules import DAY, Ticks

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")  # imported by the first bulk formatting: one key at a time needs none

# Names looked up by index, one key at a time or (as rows of a _table) in bulk; there is no month 0,
# its name is a filler of the same width
_DAY_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_MONTH_NAMES = ("---", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_AM_PM = ("AM", "PM")
_TWO_DIGITS = tuple(f"{i:02d}" for i in range(100))
_WIDTHS = {"Y": 4, "m": 2, "d": 2, "H": 2, "M": 2, "S": 2, "y": 2, "j": 3, "I": 2, "p": 2, "a": 3, "b": 3, "%": 1}
_EXPANSIONS = {"%F": "%Y-%m-%d", "%T": "%H:%M:%S"}
_TOKEN = re.compile(r"%.|[^%]+", re.S)


@functools.lru_cache(maxsize=256)
def _tokens(fmt: str) -> tuple[str, ...] | None:
    """Split fmt into directives and literal text, or None when the fast path cannot format it."""
    for short, long in _EXPANSIONS.items():
        fmt = fmt.replace(short, long)
    tokens = _TOKEN.findall(fmt)
    if "".join(tokens) != fmt:  # a lone trailing '%'
        return None
    for token in tokens:
        if token.startswith("%") and token[1:] not in _WIDTHS:
            return None
        if not token.startswith("%") and (not token.isascii() or "\0" in token):
            return None
    return tuple(tokens)


@functools.lru_cache(maxsize=4)
def _table(names: tuple[str, ...]) -> np.ndarray:
    """One of the four name tuples above as rows of ASCII bytes, to look many up at once by index;
    built on first use and kept, so that importing this module does not import numpy."""
    return np.frombuffer("".join(names).encode("ascii"), np.uint8).reshape(len(names), -1)


def _digits(out: np.ndarray, column: int, values: np.ndarray, width: int) -> None:
    """Write `values` zero-padded to `width` digits, two digits per table lookup."""
    if width % 2:
        out[:, column] = (values // 10 ** (width - 1)) % 10 + 48
        column, width = column + 1, width - 1
    for k in range(0, width, 2):
        out[:, column + k : column + k + 2] = _table(_TWO_DIGITS)[(values // 10 ** (width - 2 - k)) % 100]


def civil_from_days(days: Any) -> tuple[Any, Any, Any]:
    """Year, month, day of days since 1970-01-01 (proleptic Gregorian), in integer arithmetic:
    of one day (ints) or of an array of them (arrays), with the same operations."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 - 12 * (mp >= 10)
    return yoe + era * 400 + (month <= 2), month, doy - (153 * mp + 2) // 5 + 1


def day_of_year(days: np.ndarray, year: np.ndarray) -> np.ndarray:
    """1-based day of the year of days since the epoch."""
    before = year - 1  # days from civil (year, 1, 1), counted from March of the year before
    era = before // 400
    yoe = before - era * 400
    return days - (era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + 306 - 719_468) + 1


_TIME_CODES = frozenset("HIMSp")


def _render(tokens: tuple[str, ...], days: np.ndarray, seconds: np.ndarray, date_part: bool) -> np.ndarray:
    """Rows of key bytes, NUL-terminated. With date_part, only text and date directives are
    written (time columns stay 0); without it, only time directives."""
    year, month, day = civil_from_days(days)
    hour = seconds // 3600
    fields = {
        "Y": lambda: year,
        "y": lambda: year % 100,
        "m": lambda: month,
        "d": lambda: day,
        "j": lambda: day_of_year(days, year),
        "H": lambda: hour,
        "I": lambda: (hour + 11) % 12 + 1,
        "M": lambda: seconds // 60 % 60,
        "S": lambda: seconds % 60,
        "p": lambda: _table(_AM_PM)[(hour >= 12).astype(np.int64)],
        "a": lambda: _table(_DAY_NAMES)[(days + 4) % 7],
        "b": lambda: _table(_MONTH_NAMES)[month],
    }
    width = sum(_WIDTHS[t[1]] if t.startswith("%") else len(t) for t in tokens)
    out = np.zeros((max(len(days), len(seconds)), width + 1), np.uint8)
    column = 0
    for token in tokens:
        code = token[1] if token.startswith("%") else None
        size = _WIDTHS[code] if code else len(token)
        if (code in _TIME_CODES) == date_part:
            column += size
            continue
        if code is None or code == "%":
            out[:, column : column + size] = np.frombuffer(token[-1].encode() if code else token.encode(), np.uint8)
        elif code in "pab":
            out[:, column : column + size] = fields[code]()
        else:
            _digits(out, column, fields[code](), size)
        column += size
    return out


def _fast_format(tokens: tuple[str, ...], wall: np.ndarray) -> list[str] | None:
    """Keys of many wall times: each distinct day and minute is rendered once, then rows are
    gathered and OR-ed together (the date and time columns do not overlap)."""
    if not len(wall):
        return []
    days = wall // DAY
    seconds = wall % DAY
    first, last = int(days.min()), int(days.max())
    if first < -354_285 or last > 2_932_896:  # outside years 1000 to 9999: strftime pads differently
        return None
    if last - first < len(wall) and not np.any(seconds % 60):
        dates = _render(tokens, np.arange(first, last + 1), np.zeros(1, np.int64), date_part=True)
        minutes = seconds // 60
        used = np.zeros(DAY // 60, bool)
        used[minutes] = True  # render only the minutes of the day that occur (24 for hourly keys)
        times = _render(tokens, np.zeros(1, np.int64), np.flatnonzero(used) * 60, date_part=False)
        out = dates[days - first]
        out |= times[(np.cumsum(used) - 1)[minutes]]
        del minutes
    else:
        out = _render(tokens, days, seconds, date_part=True) | _render(tokens, days, seconds, date_part=False)
    del days, seconds  # not needed while the strings are made: a lower peak
    return out.tobytes().decode("ascii").split("\0")[:-1]


# --- one key at a time: the same rules as the bulk path, in plain integer arithmetic

_SCALAR = {
    "Y": "{0:04d}",
    "y": "{1:02d}",
    "m": "{2:02d}",
    "d": "{3:02d}",
    "j": "{4:03d}",
    "H": "{5:02d}",
    "I": "{6:02d}",
    "M": "{7:02d}",
    "S": "{8:02d}",
    "p": "{9}",
    "a": "{10}",
    "b": "{11}",
    "%": "%",
}


@functools.lru_cache(maxsize=256)
def _template(tokens: tuple[str, ...]) -> str:
    """A str.format template writing the fields of one wall time as `tokens` say."""
    return "".join(_SCALAR[t[1]] if t.startswith("%") else t.replace("{", "{{").replace("}", "}}") for t in tokens)


def format_wall(fmt: str, wall: int) -> str | None:
    """fmt applied to one wall time (epoch seconds), exactly as the bulk path writes it; None when
    the bulk path would use strftime (a format it cannot write, or a year outside 1000 to 9999)."""
    tokens = _tokens(fmt)
    days, seconds = divmod(wall, DAY)
    if tokens is None or not -354_285 <= days <= 2_932_896:
        return None
    year, month, day = civil_from_days(days)
    hour = seconds // 3600
    before = year - 1
    year_start = before * 365 + before // 4 - before // 100 + before // 400 - 719_162  # days to year-01-01
    return _template(tokens).format(
        year,
        year % 100,
        month,
        day,
        days - year_start + 1,
        hour,
        (hour + 11) % 12 + 1,
        seconds // 60 % 60,
        seconds % 60,
        _AM_PM[hour >= 12],
        _DAY_NAMES[(days + 4) % 7],
        _MONTH_NAMES[month],
    )


_FIELD_ORDER = "YmdHMS"
_STRPTIME_DEFAULTS = (1900, 1, 1, 0, 0, 0)


@functools.lru_cache(maxsize=256)
def _key_pattern(fmt: str) -> tuple[re.Pattern[str], tuple[int, ...]] | None:
    """A regular expression reading a key of fmt by position (each number as ASCII digits of its
    fixed width, literal text as it is) and the field (index in "YmdHMS") of each group; None
    unless fmt is made of %Y %m %d %H %M %S (each at most once), %% and ASCII text (not %F or
    %T, which strptime does not read everywhere)."""
    tokens = None if "%F" in fmt or "%T" in fmt else _tokens(fmt)
    if tokens is None:
        return None
    pattern, fields = [], []
    for token in tokens:
        if token.startswith("%") and token != "%%":
            code = token[1]
            if code not in _FIELD_ORDER or _FIELD_ORDER.index(code) in fields:
                return None
            fields.append(_FIELD_ORDER.index(code))
            pattern.append(f"([0-9]{{{_WIDTHS[code]}}})")
        else:
            pattern.append(re.escape(token[-1] if token == "%%" else token))
    return re.compile("".join(pattern)), tuple(fields)


def parse_fields(text: str, fmt: str) -> tuple[int, int, int, int, int, int] | None:
    """(year, month, day, hour, minute, second) of a key written exactly as the bulk path writes
    fmt (fixed-width ASCII digits, valid values), with strptime's defaults for fields fmt lacks;
    None for anything else, which strptime then reads (or refuses) as before. On the keys it
    accepts it agrees with `datetime.strptime(text, fmt)`, at a fraction of the cost."""
    plan = _key_pattern(fmt)
    found = None if plan is None else plan[0].fullmatch(text)
    if found is None:
        return None
    values = list(_STRPTIME_DEFAULTS)
    for field, digits in zip(plan[1], found.groups()):
        values[field] = int(digits)
    year, month, day, hour, minute, second = values
    if not (year >= 1 and 1 <= month <= 12 and 1 <= day <= _month_days(year, month)):
        return None
    if hour > 23 or minute > 59 or second > 59:  # strptime reads a leap second 60 or 61: leave those to it
        return None
    return year, month, day, hour, minute, second


def _month_days(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def offset_suffix(offset_seconds: int) -> str:
    """`%z` of a UTC offset: +HHMM, or +HHMMSS when seconds are not zero."""
    sign = "-" if offset_seconds < 0 else "+"
    hours, rest = divmod(abs(int(offset_seconds)), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{sign}{hours:02d}{minutes:02d}" + (f"{seconds:02d}" if seconds else "")


def format_ticks(ticks: Ticks, fmt: str, tz: tzinfo, suffix_repeated: bool) -> list[str]:
    """Keys of the ticks: fmt applied to each local wall time, and for the second occurrence of a
    repeated hour (when `suffix_repeated`) the UTC offset appended, as Dagster does."""
    tokens = _tokens(fmt)
    keys = _fast_format(tokens, ticks.wall) if tokens is not None else None
    if keys is None:
        keys = [datetime.fromtimestamp(int(t), tz).strftime(fmt) for t in ticks.utc]
    if suffix_repeated:
        offsets = ticks.offsets()
        for i in np.flatnonzero(ticks.repeated).tolist():
            keys[i] += offset_suffix(int(offsets[i]))
    return keys


def format_tick(tick: int, wall: int, repeated: bool, fmt: str, tz: tzinfo, suffix_repeated: bool) -> str:
    """The key of one tick (UTC instant, local wall time, second occurrence or not): what
    format_ticks gives for it, without numpy's per-call cost."""
    key = format_wall(fmt, wall)
    if key is None:
        key = datetime.fromtimestamp(tick, tz).strftime(fmt)
    if suffix_repeated and repeated:
        key += offset_suffix(wall - tick)
    return key
