"""Properties that hold for every definition: hypothesis draws zones, schedules, formats and times."""

import itertools
from datetime import datetime, timedelta, timezone

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import nb_backfill as nbb
from nb_backfill.keyformat import format_ticks
from nb_backfill.schedules import Ticks

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Sydney",
    "Australia/Adelaide",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "America/Sao_Paulo",
    "Pacific/Chatham",
]


@st.composite
def definitions(draw):
    tz = draw(st.sampled_from(ZONES))
    start = draw(st.datetimes(datetime(2000, 1, 1), datetime(2030, 1, 1))).replace(second=0, microsecond=0)
    kind = draw(st.sampled_from(["hourly", "daily", "weekly", "monthly"]))
    minute = draw(st.sampled_from([0, 15, 30, 45]))
    hour = draw(st.integers(0, 23))
    if kind == "hourly":
        definition = nbb.HourlyPartitionsDefinition(start, minute_offset=minute, timezone=tz)
        span = timedelta(days=draw(st.integers(1, 20)))
    elif kind == "daily":
        definition = nbb.DailyPartitionsDefinition(start, minute_offset=minute, hour_offset=hour, timezone=tz)
        span = timedelta(days=draw(st.integers(1, 400)))
    elif kind == "weekly":
        day = draw(st.integers(0, 6))
        definition = nbb.WeeklyPartitionsDefinition(
            start, minute_offset=minute, hour_offset=hour, day_offset=day, timezone=tz
        )
        span = timedelta(days=draw(st.integers(7, 700)))
    else:
        day = draw(st.integers(1, 28))
        definition = nbb.MonthlyPartitionsDefinition(
            start, minute_offset=minute, hour_offset=hour, day_offset=day, timezone=tz
        )
        span = timedelta(days=draw(st.integers(31, 2000)))
    return definition, start + span


@settings(max_examples=150, deadline=None)
@given(definitions())
def test_keys_are_unique_and_round_trip_through_contiguous_windows(case):
    definition, now = case
    keys = definition.get_partition_keys(now)
    assert len(set(keys)) == len(keys) == definition.get_num_partitions(now)
    windows = [definition.time_window_for_partition_key(k) for k in keys]
    for key, window in zip(keys, windows):
        assert window.start.timestamp() < window.end.timestamp()
        assert window.end.timestamp() <= now.replace(tzinfo=definition.tz).timestamp()
        assert definition.has_partition_key(key, now)
    for a, b in itertools.pairwise(windows):
        assert a.end.timestamp() == b.start.timestamp()
    if keys:
        assert windows[0].start.timestamp() >= definition.start.timestamp()


@settings(max_examples=100, deadline=None)
@given(definitions(), st.data())
def test_ranges_are_ordered_slices(case, data):
    definition, now = case
    keys = definition.get_partition_keys(now)
    if not keys:
        return
    i = data.draw(st.integers(0, len(keys) - 1))
    j = data.draw(st.integers(i, len(keys) - 1))
    assert definition.get_partition_keys_in_range(nbb.PartitionKeyRange(keys[i], keys[j]), now) == keys[i : j + 1]
    assert definition.index_of(keys[j], now) == j


FAST_FORMATS = ["%Y-%m-%d", "%Y-%m-%d-%H:%M", "%Y%m%d%H%M%S", "%y/%j %I%p", "%a %d %b %Y", "%F %T", "day %d, 100%%"]
SLOW_FORMATS = ["%B %d %Y", "%A %H:%M", "%Y-%m-%dT%H:%M:%S%z", "%d.%m.%Y %Z", "%G-W%V-%u", "jour %d é"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.datetimes(datetime(1000, 1, 1), datetime(9999, 12, 30)), min_size=1, max_size=20),
    st.sampled_from(FAST_FORMATS + SLOW_FORMATS),
)
def test_bulk_formatting_equals_strftime(times, fmt):
    times = [t.replace(microsecond=0) for t in times]
    utc = np.array([int(t.replace(tzinfo=timezone.utc).timestamp()) for t in times], dtype=np.int64)
    ticks = Ticks(utc, utc.copy(), np.zeros(len(utc), bool))
    expected = [t.replace(tzinfo=timezone.utc).strftime(fmt) for t in times]
    assert format_ticks(ticks, fmt, timezone.utc, suffix_repeated=False) == expected
