"""Partition keys from ticks: `strftime` for a whole array of wall-clock times at once.

Formats made of fixed-width directives (%Y %m %d %H %M %S %y %j %I %p %a %b %F %T %%) and ASCII
text are built as a byte matrix with numpy, about 50x faster than calling strftime per key; any
other format falls back to `datetime.strftime`, so every format Python knows still works.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo

import numpy as np

from .schedules import DAY, Ticks

_WEEKDAY_NAMES = np.frombuffer(b"SunMonTueWedThuFriSat", np.uint8).reshape(7, 3)
_MONTH_NAMES = np.frombuffer(b"---JanFebMarAprMayJunJulAugSepOctNovDec", np.uint8).reshape(13, 3)
_AM_PM = np.frombuffer(b"AMPM", np.uint8).reshape(2, 2)
_WIDTHS = {"Y": 4, "m": 2, "d": 2, "H": 2, "M": 2, "S": 2, "y": 2, "j": 3, "I": 2, "p": 2, "a": 3, "b": 3, "%": 1}
_EXPANSIONS = {"%F": "%Y-%m-%d", "%T": "%H:%M:%S"}
_TOKEN = re.compile(r"%.|[^%]+", re.S)


def _tokens(fmt: str) -> list[str] | None:
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
    return tokens


_TWO_DIGITS = np.array([[48 + i // 10, 48 + i % 10] for i in range(100)], np.uint8)


def _digits(out: np.ndarray, column: int, values: np.ndarray, width: int) -> None:
    """Write `values` zero-padded to `width` digits, two digits per table lookup."""
    if width % 2:
        out[:, column] = (values // 10 ** (width - 1)) % 10 + 48
        column, width = column + 1, width - 1
    for k in range(0, width, 2):
        out[:, column + k : column + k + 2] = _TWO_DIGITS[(values // 10 ** (width - 2 - k)) % 100]


def civil_from_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Year, month, day of days since 1970-01-01 (proleptic Gregorian), in integer arithmetic."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (month <= 2), month, doy - (153 * mp + 2) // 5 + 1


def day_of_year(days: np.ndarray, year: np.ndarray) -> np.ndarray:
    """1-based day of the year of days since the epoch."""
    before = year - 1  # days from civil (year, 1, 1), counted from March of the year before
    era = before // 400
    yoe = before - era * 400
    return days - (era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + 306 - 719_468) + 1


_TIME_CODES = frozenset("HIMSp")


def _render(tokens: list[str], days: np.ndarray, seconds: np.ndarray, date_part: bool) -> np.ndarray:
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
        "p": lambda: _AM_PM[(hour >= 12).astype(np.int64)],
        "a": lambda: _WEEKDAY_NAMES[(days + 4) % 7],
        "b": lambda: _MONTH_NAMES[month],
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


def _fast_format(tokens: list[str], wall: np.ndarray) -> list[str] | None:
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
        times = _render(tokens, np.zeros(1, np.int64), np.arange(0, DAY, 60), date_part=False)
        out = dates[days - first] | times[seconds // 60]
    else:
        out = _render(tokens, days, seconds, date_part=True) | _render(tokens, days, seconds, date_part=False)
    return out.tobytes().decode("ascii").split("\0")[:-1]


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
