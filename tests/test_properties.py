"""Properties that hold for every definition: hypothesis draws zones, schedules, formats and times."""

import itertools
import math
from datetime import datetime, timedelta, timezone
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import nb_backfill as nbb
from nb_backfill import partitions
from nb_backfill.keyformat import format_tick, format_ticks, parse_fields
from nb_backfill.schedules import DAY, Ticks, _offset_periods

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
    "Etc/GMT+5",
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


# --- the single-key path answers what the bulk path (and the code before it) answers ----------


@st.composite
def rich_definitions(draw):
    """Definitions with end offsets, ends and custom formats (some only strptime reads), and a
    current time."""
    definition, now = draw(definitions())
    params = {
        "start": definition.start,
        "fmt": definition.fmt,
        "cron_schedule": definition.cron_schedule,
        "timezone": definition.timezone,
        "end_offset": draw(st.integers(-3, 3)),
    }
    if definition._schedule.every_hour:
        params["fmt"] = draw(st.sampled_from(["%Y-%m-%d-%H:%M", "%Y%m%d %H%M", "%Y-%m-%dT%H:%M%z", "%d %b %Y %H:%M"]))
    else:
        params["fmt"] = draw(st.sampled_from(["%Y-%m-%d", "%Y/%m/%d %H:%M", "%Y-%m-%d %a", "%j of %Y"]))
    if draw(st.booleans()):
        params["end"] = now.replace(tzinfo=None) - timedelta(days=draw(st.integers(0, 40)))
    return nbb.TimeWindowPartitionsDefinition(**params), now


def reference_tick_of(definition, key):
    """_tick_of as it was before the single-key path: strptime, then the next tick found in bulk,
    formatted in bulk, compared with the key."""
    fmt, tz = definition.fmt, definition.tz
    try:
        parsed = datetime.strptime(key, fmt)
    except ValueError:
        try:
            parsed = datetime.strptime(key, fmt if "%z" in fmt else fmt + "%z")
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz, fold=0)
    instant = math.floor(parsed.timestamp())
    tick = int(definition._timeline.between(instant, instant + 800 * DAY).utc[0])
    key_of_tick = format_ticks(definition._timeline.between(tick, tick + 1), fmt, tz, definition._suffix_repeated)[0]
    return tick if key_of_tick == key else None


def _probes(keys, data):
    """Keys, and strings near keys that are not keys: shifted digits, other widths, suffixes."""
    picked = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=6)) if keys else []
    probes = list(picked)
    for key in picked:
        i = data.draw(st.integers(0, len(key) - 1))
        probes.append(key[:i] + data.draw(st.sampled_from("0123456789 -:")) + key[i + 1 :])
        probes.append(key[:i] + key[i + 1 :])
        probes += [key + "-0500", key + "+0100", key.replace("0", "", 1), " " + key]
    return probes


@settings(max_examples=150, deadline=None)
@given(rich_definitions(), st.data())
def test_single_key_answers_equal_the_bulk_answers(case, data):
    definition, now = case
    keys = definition.get_partition_keys(now)
    assert definition.get_first_partition_key(now) == (keys[0] if keys else None)
    assert definition.get_last_partition_key(now) == (keys[-1] if keys else None)
    if keys:  # windows from the bulk ticks: each key's window ends where the next starts
        bounds = definition._bounds(now)
        ticks = definition._timeline.between(bounds[0], bounds[1] + 1).utc.tolist()
        ticks.append(definition._timeline.next(ticks[-1] + 1))
        for i in data.draw(st.lists(st.integers(0, len(keys) - 1), max_size=8)):
            window = definition.time_window_for_partition_key(keys[i])
            assert (window.start.timestamp(), window.end.timestamp()) == (ticks[i], ticks[i + 1])
    listed = set(keys)
    for probe in _probes(keys, data):
        assert definition._tick_of(probe) == reference_tick_of(definition, probe), probe
        assert definition.has_partition_key(probe, now) == (probe in listed), probe


@settings(max_examples=100, deadline=None)
@given(rich_definitions(), st.lists(st.integers(-3 * DAY, 3 * DAY), min_size=1, max_size=12), st.data())
def test_answers_at_many_current_times_equal_a_fresh_definitions(case, shifts, data):
    definition, now = case
    base = math.floor(now.replace(tzinfo=definition.tz).timestamp())
    instants = [base + s for s in shifts]
    for t in list(instants):  # ticks themselves, and a second either side
        tick = definition._timeline.prev(t)
        instants += [tick - 1, tick, tick + 1]
    for instant in data.draw(st.permutations(instants)):
        current_time = datetime.fromtimestamp(instant, timezone.utc)
        fresh = nbb.TimeWindowPartitionsDefinition(
            definition.start,
            definition.fmt,
            definition.end,
            definition.cron_schedule,
            definition.timezone,
            definition.end_offset,
        )
        assert definition._bounds(current_time) == fresh._bounds_at(instant)
        assert definition.get_last_partition_key(current_time) == fresh.get_last_partition_key(current_time)


@settings(max_examples=100, deadline=None)
@given(definitions(), st.integers(-200 * DAY, 200 * DAY), st.integers(1, 30))
def test_next_and_prev_from_chunks_equal_a_bulk_search(case, shift, n):
    definition, now = case
    line = definition._timeline
    t = math.floor(now.replace(tzinfo=definition.tz).timestamp()) + shift
    reach = 60 * DAY * (n + 1)
    assert line.next(t, n) == int(line.between(t, t + reach).utc[n - 1])
    assert line.prev(t, n) == int(line.between(t - reach, t + 1).utc[-n])
    tick = line.next(t)
    ticks = line.between(tick, tick + 1)
    assert line.wall_of(tick) == (int(ticks.wall[0]), bool(ticks.repeated[0]))
    for lo, hi in ((t, t + reach), (t - reach, t), (tick, tick + 1), (t, t)):
        from_chunks, bulk = line.ticks_in(lo, hi), line.between(lo, hi)
        for column in ("utc", "wall", "repeated"):
            assert getattr(from_chunks, column).tolist() == getattr(bulk, column).tolist()


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ZONES), st.integers(1900, 2100), st.lists(st.integers(0, 366 * DAY), min_size=1, max_size=30))
def test_offset_periods_agree_with_the_zone(zone, year, moments):
    tz = nbb.partitions.get_timezone(zone)
    starts, offsets = _offset_periods(tz, year, year + 1)
    for moment in moments:
        t = int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp()) + moment
        expected = datetime.fromtimestamp(t, tz).utcoffset().total_seconds()
        assert offsets[np.searchsorted(starts, t, side="right") - 1] == expected


@settings(max_examples=300, deadline=None)
@given(st.datetimes(datetime(1000, 1, 1), datetime(9999, 12, 30)), st.sampled_from(FAST_FORMATS + SLOW_FORMATS))
def test_one_key_is_formatted_as_the_bulk_path_formats_it(moment, fmt):
    wall = int(moment.replace(microsecond=0, tzinfo=timezone.utc).timestamp())
    ticks = Ticks(np.array([wall]), np.array([wall]), np.array([False]))
    assert format_tick(wall, wall, False, fmt, timezone.utc, False) == format_ticks(ticks, fmt, timezone.utc, False)[0]


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)),
    st.sampled_from(["%Y-%m-%d", "%Y-%m-%d-%H:%M", "%Y%m%d%H%M%S", "%H:%M %d.%m.%Y", "%m/%d", "at %H%%"]),
    st.text("0123456789-:./ %at", max_size=4),
    st.integers(0, 20),
)
def test_reading_a_key_by_position_agrees_with_strptime(moment, fmt, noise, at):
    text = moment.strftime(fmt)
    for candidate in (text, text[:at] + noise + text[at:], text[:at] + text[at + len(noise) :]):
        try:
            parsed = datetime.strptime(candidate, fmt)
            expected = (parsed.year, parsed.month, parsed.day, parsed.hour, parsed.minute, parsed.second)
        except ValueError:
            expected = None
        fields = parse_fields(candidate, fmt)
        assert fields is None or fields == expected, candidate  # None: strptime decides, as before
        if candidate == text and expected is not None and moment.year >= 1000:  # the common case is fast
            assert fields == expected


# --- a few keys, listed one tick at a time, are the keys listed in bulk ----------------------

CRONS = ["*/15 * * * *", "0 */6 * * *", "30 2 * * 1-5", "0 0 1,15 * *", "0 9 * 1,7 mon", "45 1-3 * * *", "0 0 29 2 *"]
CHANGING_ZONES = [zone for zone in ZONES if zone not in ("UTC", "Asia/Kolkata", "Asia/Kathmandu", "Etc/GMT+5")]


@st.composite
def cron_definitions(draw, crons=CRONS, zones=ZONES):
    """Definitions on other cron schedules (some ticking in DST gaps and repeated hours, some on few
    days a year) in any zone, with end offsets, and a current time."""
    start = draw(st.datetimes(datetime(2000, 1, 1), datetime(2030, 1, 1))).replace(second=0, microsecond=0)
    definition = nbb.TimeWindowPartitionsDefinition(
        start,
        "%Y-%m-%d %H:%M",
        cron_schedule=draw(st.sampled_from(crons)),
        timezone=draw(st.sampled_from(zones)),
        end_offset=draw(st.integers(-3, 3)),
    )
    return definition, start + timedelta(hours=draw(st.integers(1, 24 * 40)))


@st.composite
def around_an_offset_change(draw):
    """A definition whose partitions run from a few days before one of its zone's offset changes
    (DST, or a zone changing its rules) to a few days after, and that current time (tz-aware). Its
    schedule is hourly, daily at an hour a change skips or repeats, or another cron."""
    zone = draw(st.sampled_from(CHANGING_ZONES))
    starts, _ = _offset_periods(nbb.partitions.get_timezone(zone), 2000, 2030)
    change = int(draw(st.sampled_from(starts[1:].tolist())))
    cron = draw(st.sampled_from(["0 * * * *", "30 * * * *", "0 2 * * *", "30 1 * * *", "0 3 * * 0", *CRONS]))
    definition = nbb.TimeWindowPartitionsDefinition(
        datetime.fromtimestamp(change - draw(st.integers(0, 5 * DAY)), timezone.utc),
        "%Y-%m-%d %H:%M",
        cron_schedule=cron,
        timezone=zone,
        end_offset=draw(st.integers(-3, 3)),
    )
    return definition, datetime.fromtimestamp(change + draw(st.integers(-DAY, 5 * DAY)), timezone.utc)


# every day alike in a zone of fixed offset: ticks found by arithmetic
REGULAR = cron_definitions(
    ["0 * * * *", "*/15 * * * *", "0 */6 * * *", "30 2 * * *"], ["UTC", "Etc/GMT+5", "Etc/GMT-14"]
)
ANY_DEFINITION = st.one_of(definitions(), rich_definitions(), cron_definitions(), around_an_offset_change(), REGULAR)


def _instant(now, tz):
    return math.floor((now if now.tzinfo else now.replace(tzinfo=tz)).timestamp())


@settings(max_examples=300, deadline=None)
@given(ANY_DEFINITION, st.data())
def test_a_few_ticks_found_one_at_a_time_are_the_bulk_ticks(case, data):
    definition, now = case
    line = definition._timeline
    near = st.sampled_from([-1, 0, 1])  # on a tick, or a second either side
    lo = line.next(_instant(now, definition.tz) + data.draw(st.integers(-3 * DAY, DAY))) + data.draw(near)
    hi = line.next(lo, data.draw(st.integers(1, 40))) + data.draw(near)
    bulk = line.between(lo, hi).utc.tolist()
    limit = max(0, len(bulk) + data.draw(near))
    assert line.few(lo, hi, limit) == (bulk if len(bulk) <= limit else None)
    assert line.count(lo, hi) == len(bulk)


def _key_lists(definition, now, picks, few_keys):
    """get_partition_keys(now) and ranges of it (picked by position, either way round), with
    lists of up to `few_keys` keys made one tick at a time and longer ones in bulk."""
    with mock.patch.object(partitions, "FEW_KEYS", few_keys):
        partitions.KEY_LISTS.clear()  # ranges are kept there, whichever way they were made
        keys = definition.get_partition_keys(now)
        ranges = [
            definition.get_partition_keys_in_range(nbb.PartitionKeyRange(keys[i % len(keys)], keys[j % len(keys)]), now)
            for i, j in (picks if keys else [])
        ]
        partitions.KEY_LISTS.clear()
    return keys, ranges, definition.get_num_partitions(now)


@settings(max_examples=300, deadline=None)
@given(ANY_DEFINITION, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), max_size=4))
def test_keys_listed_one_tick_at_a_time_are_the_keys_listed_in_bulk(case, picks):
    definition, now = case
    one_at_a_time = _key_lists(definition, now, picks, few_keys=10**9)
    assert one_at_a_time == _key_lists(definition, now, picks, few_keys=0)
    assert one_at_a_time[2] == len(one_at_a_time[0])
