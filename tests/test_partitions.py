"""One test per partition rule of the foundation issue (values checked against Dagster 1.13)."""

import itertools
import pickle
import zoneinfo
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

import nb_backfill as nbb
from nb_backfill import (
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    MonthlyPartitionsDefinition,
    MultiPartitionsDefinition,
    PartitionKeyRange,
    StaticPartitionsDefinition,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
)

NOW = datetime(2024, 12, 31, 12, 0)


# --- keys and bounds -------------------------------------------------------------------------


def test_default_formats():
    assert HourlyPartitionsDefinition("2024-01-01-00:00").get_first_partition_key(NOW) == "2024-01-01-00:00"
    assert DailyPartitionsDefinition("2024-01-01").get_first_partition_key(NOW) == "2024-01-01"
    assert WeeklyPartitionsDefinition("2024-01-01").get_first_partition_key(NOW) == "2024-01-07"
    assert MonthlyPartitionsDefinition("2024-01-01").get_first_partition_key(NOW) == "2024-01-01"


def test_first_window_starts_at_first_tick_at_or_after_start():
    # 2024-01-03 is a Wednesday; weekly day_offset 0 = Sunday, 3 = Wednesday
    assert WeeklyPartitionsDefinition("2024-01-03").get_first_partition_key(NOW) == "2024-01-07"
    assert WeeklyPartitionsDefinition("2024-01-03", day_offset=3).get_first_partition_key(NOW) == "2024-01-03"
    assert MonthlyPartitionsDefinition("2024-01-02").get_first_partition_key(NOW) == "2024-02-01"
    assert MonthlyPartitionsDefinition("2024-01-02", day_offset=5).get_first_partition_key(NOW) == "2024-01-05"
    daily = DailyPartitionsDefinition("2024-01-01", hour_offset=6, minute_offset=30)
    assert daily.time_window_for_partition_key("2024-01-01").start == datetime(2024, 1, 1, 6, 30, tzinfo=daily.tz)


def test_end_is_exclusive():
    daily = DailyPartitionsDefinition("2024-01-01", end_date="2024-01-05")
    assert daily.get_partition_keys(NOW) == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]


def test_window_is_included_once_it_has_ended():
    daily = DailyPartitionsDefinition("2024-01-01")
    assert daily.get_last_partition_key(datetime(2024, 1, 5, 0, 0)) == "2024-01-04"
    assert daily.get_last_partition_key(datetime(2024, 1, 4, 23, 59)) == "2024-01-03"
    assert daily.get_partition_keys(datetime(2024, 1, 1, 12)) == []


def test_naive_current_time_is_in_the_definition_time_zone():
    daily = DailyPartitionsDefinition("2024-01-01", timezone="America/New_York")
    # 03:00 UTC on the 5th is still the 4th in New York
    assert daily.get_last_partition_key(datetime(2024, 1, 5, 3, 0, tzinfo=timezone.utc)) == "2024-01-03"
    assert daily.get_last_partition_key(datetime(2024, 1, 5, 3, 0)) == "2024-01-04"


@pytest.mark.parametrize(
    ("end_offset", "last"),
    [(0, "2024-01-04"), (1, "2024-01-05"), (3, "2024-01-07"), (-1, "2024-01-03"), (-2, "2024-01-02")],
)
def test_end_offset(end_offset, last):
    daily = DailyPartitionsDefinition("2024-01-01", end_offset=end_offset)
    assert daily.get_last_partition_key(datetime(2024, 1, 5, 12, 0)) == last


def test_start_and_end_strings_are_parsed_with_fmt():
    daily = DailyPartitionsDefinition("01/02/2024", end_date="01/05/2024", fmt="%m/%d/%Y")
    assert daily.get_partition_keys(NOW) == ["01/02/2024", "01/03/2024", "01/04/2024"]
    assert DailyPartitionsDefinition(date(2024, 1, 2)).get_first_partition_key(NOW) == "2024-01-02"
    assert DailyPartitionsDefinition(datetime(2024, 1, 2)).get_first_partition_key(NOW) == "2024-01-02"


def test_time_window_is_tz_aware_start_and_end():
    hourly = HourlyPartitionsDefinition("2024-01-01-00:00", timezone="Europe/Berlin")
    window = hourly.time_window_for_partition_key("2024-01-01-05:00")
    assert window.start.isoformat() == "2024-01-01T05:00:00+01:00"
    assert window.end.isoformat() == "2024-01-01T06:00:00+01:00"


def test_time_zones_are_iana_names_read_by_zoneinfo_and_utc_in_any_case():
    """Zones come from zoneinfo (pendulum, which read them before, loads only for a 'did you mean');
    'utc' in any case names UTC, as it did."""
    zones = [DailyPartitionsDefinition("2024-01-01", timezone=name).tz for name in ("UTC", "utc", "Utc", None)]
    assert all(zone is zones[0] for zone in zones) and zones[0] == zoneinfo.ZoneInfo("UTC")
    assert DailyPartitionsDefinition("2024-01-01", timezone="utc").get_partition_keys(datetime(2024, 1, 3)) == [
        "2024-01-01",
        "2024-01-02",
    ]
    with pytest.raises(nbb.DefinitionError, match="did you mean 'Europe/Berlin'"):
        DailyPartitionsDefinition("2024-01-01", timezone="Europe/berlin")


def test_count_and_lookup_agree_with_the_list():
    hourly = HourlyPartitionsDefinition("2020-01-01-00:00", timezone="America/New_York")
    keys = hourly.get_partition_keys(NOW)
    assert hourly.get_num_partitions(NOW) == len(keys)
    for i in (0, 1, 7_000, len(keys) // 2, len(keys) - 1):
        assert hourly.index_of(keys[i], NOW) == i
        assert hourly.has_partition_key(keys[i], NOW)


# --- DST -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "start", "end", "expected"),
    [
        (
            "America/New_York",  # spring forward: 02:00 does not exist
            "2024-03-10-00:00",
            "2024-03-10-05:00",
            ["2024-03-10-00:00", "2024-03-10-01:00", "2024-03-10-03:00", "2024-03-10-04:00"],
        ),
        (
            "America/New_York",  # fall back: 01:00 happens twice
            "2024-11-03-00:00",
            "2024-11-03-03:00",
            ["2024-11-03-00:00", "2024-11-03-01:00", "2024-11-03-01:00-0500", "2024-11-03-02:00"],
        ),
        (
            "Europe/Berlin",
            "2024-10-27-01:00",
            "2024-10-27-04:00",
            ["2024-10-27-01:00", "2024-10-27-02:00", "2024-10-27-02:00+0100", "2024-10-27-03:00"],
        ),
        (
            "Europe/Berlin",
            "2024-03-31-01:00",
            "2024-03-31-05:00",
            ["2024-03-31-01:00", "2024-03-31-03:00", "2024-03-31-04:00"],
        ),
        (
            "Australia/Sydney",  # fall back in April: 02:00 AEDT then 02:00 AEST
            "2024-04-07-01:00",
            "2024-04-07-04:00",
            ["2024-04-07-01:00", "2024-04-07-02:00", "2024-04-07-02:00+1000", "2024-04-07-03:00"],
        ),
        (
            "Australia/Sydney",
            "2024-10-06-01:00",
            "2024-10-06-05:00",
            ["2024-10-06-01:00", "2024-10-06-03:00", "2024-10-06-04:00"],
        ),
        (
            "Australia/Adelaide",  # half-hour zone with DST
            "2024-04-07-01:00",
            "2024-04-07-04:00",
            ["2024-04-07-01:00", "2024-04-07-02:00", "2024-04-07-02:00+0930", "2024-04-07-03:00"],
        ),
        (
            "Asia/Kolkata",  # half-hour zone without DST
            "2024-04-07-01:00",
            "2024-04-07-04:00",
            ["2024-04-07-01:00", "2024-04-07-02:00", "2024-04-07-03:00"],
        ),
    ],
)
def test_hourly_keys_across_dst(tz, start, end, expected):
    hourly = HourlyPartitionsDefinition(start, end_date=end, timezone=tz)
    keys = hourly.get_partition_keys(NOW)
    assert keys == expected
    windows = [hourly.time_window_for_partition_key(k) for k in keys]
    assert all(w.end.timestamp() - w.start.timestamp() == 3600 for w in windows)
    assert all(a.end == b.start for a, b in itertools.pairwise(windows))


def test_repeated_hour_keys_map_to_distinct_instants():
    hourly = HourlyPartitionsDefinition("2024-11-03-00:00", end_date="2024-11-03-03:00", timezone="America/New_York")
    first = hourly.time_window_for_partition_key("2024-11-03-01:00").start
    second = hourly.time_window_for_partition_key("2024-11-03-01:00-0500").start
    assert first.isoformat() == "2024-11-03T01:00:00-04:00"
    assert second.isoformat() == "2024-11-03T01:00:00-05:00"


def test_fmt_with_offset_gets_no_suffix():
    hourly = HourlyPartitionsDefinition(
        "2024-11-03-00:00-0400", end_date="2024-11-03-02:00-0500", timezone="America/New_York", fmt="%Y-%m-%d-%H:%M%z"
    )
    assert hourly.get_partition_keys(NOW) == ["2024-11-03-00:00-0400", "2024-11-03-01:00-0400", "2024-11-03-01:00-0500"]


@pytest.mark.parametrize(
    ("tz", "day", "start"),
    [
        ("America/New_York", "2024-03-10", "2024-03-10T03:00:00-04:00"),  # 02:30 does not exist: next valid time
        ("America/New_York", "2024-11-03", "2024-11-03T01:30:00-05:00"),  # 01:30 repeats: second occurrence
        ("Europe/Berlin", "2024-03-31", "2024-03-31T03:00:00+02:00"),
        ("Europe/Berlin", "2024-10-27", "2024-10-27T02:30:00+01:00"),
        ("Australia/Sydney", "2024-10-06", "2024-10-06T03:00:00+11:00"),
        ("Australia/Sydney", "2024-04-07", "2024-04-07T02:30:00+10:00"),
    ],
)
def test_daily_tick_in_a_dst_change(tz, day, start):
    hour = 1 if tz == "America/New_York" and day.endswith("11-03") else 2
    daily = DailyPartitionsDefinition("2024-01-01", hour_offset=hour, minute_offset=30, timezone=tz)
    window = daily.time_window_for_partition_key(day)
    assert window.start.isoformat() == start
    assert daily.has_partition_key(day, NOW)


def test_daily_windows_are_23_and_25_hours_around_dst():
    daily = DailyPartitionsDefinition("2024-01-01", timezone="America/New_York")
    spring = daily.time_window_for_partition_key("2024-03-10")
    autumn = daily.time_window_for_partition_key("2024-11-03")
    assert spring.end.timestamp() - spring.start.timestamp() == 23 * 3600
    assert autumn.end.timestamp() - autumn.start.timestamp() == 25 * 3600


# --- ranges ----------------------------------------------------------------------------------


def test_ranges_are_inclusive_and_in_order():
    daily = DailyPartitionsDefinition("2024-01-01")
    assert daily.get_partition_keys_in_range(PartitionKeyRange("2024-01-03", "2024-01-05"), NOW) == [
        "2024-01-03",
        "2024-01-04",
        "2024-01-05",
    ]
    static = StaticPartitionsDefinition(["c", "a", "b"])
    assert static.get_partition_keys_in_range(PartitionKeyRange("a", "b")) == ["a", "b"]
    assert static.get_partition_keys_in_range(PartitionKeyRange("b", "a")) == []


def test_range_with_unknown_key_names_it():
    daily = DailyPartitionsDefinition("2024-01-01")
    with pytest.raises(nbb.UnknownPartitionError, match="'2023-12-31' is out of range"):
        daily.get_partition_keys_in_range(PartitionKeyRange("2023-12-31", "2024-01-05"), NOW)


# --- static ----------------------------------------------------------------------------------


def test_static_keeps_order_and_answers():
    static = StaticPartitionsDefinition(["us", "eu", "apac"])
    assert static.get_partition_keys() == ["us", "eu", "apac"]
    assert static.get_first_partition_key() == "us" and static.get_last_partition_key() == "apac"
    assert static.has_partition_key("eu") and not static.has_partition_key("EU")
    assert static.get_num_partitions() == 3


def test_static_keys_may_contain_commas_outside_multi():
    assert StaticPartitionsDefinition(["a,b", "c"]).get_partition_keys() == ["a,b", "c"]


# --- multi -----------------------------------------------------------------------------------


def _multi():
    return MultiPartitionsDefinition(
        {
            "region": StaticPartitionsDefinition(["us", "eu"]),
            "date": DailyPartitionsDefinition("2024-01-01", end_date="2024-01-04"),
        }
    )


def test_multi_keys_ordered_by_dimension_name():
    multi = _multi()
    assert multi.partition_dimension_names == ["date", "region"]
    keys = multi.get_partition_keys(NOW)
    assert keys[:3] == ["2024-01-01|us", "2024-01-01|eu", "2024-01-02|us"]
    assert len(keys) == multi.get_num_partitions(NOW) == 6
    assert keys[0].keys_by_dimension == {"date": "2024-01-01", "region": "us"}


def test_multi_dimension_order_is_code_point_order():
    multi = MultiPartitionsDefinition({"b": StaticPartitionsDefinition(["1"]), "B": StaticPartitionsDefinition(["2"])})
    assert multi.get_partition_keys() == ["2|1"]


def test_multi_range_is_cross_product():
    multi = _multi()
    assert multi.get_partition_keys_in_range(PartitionKeyRange("2024-01-02|us", "2024-01-03|eu"), NOW) == [
        "2024-01-02|us",
        "2024-01-02|eu",
        "2024-01-03|us",
        "2024-01-03|eu",
    ]
    assert multi.get_partition_keys_in_range(PartitionKeyRange("2024-01-01|eu", "2024-01-02|eu"), NOW) == [
        "2024-01-01|eu",
        "2024-01-02|eu",
    ]


def test_multi_has_key_and_time_window():
    multi = _multi()
    assert multi.has_partition_key("2024-01-02|eu", NOW)
    assert not multi.has_partition_key("eu|2024-01-02", NOW)
    assert multi.time_window_for_partition_key("2024-01-02|eu").start.day == 2
    assert multi.get_first_partition_key(NOW) == "2024-01-01|us"
    assert multi.get_last_partition_key(NOW) == "2024-01-03|eu"


# --- bad definitions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (
            lambda: DailyPartitionsDefinition("2024-01-01", timezone="America/NewYork"),
            ["'America/NewYork'", "America/New_York"],
        ),
        (lambda: DailyPartitionsDefinition("2024/01/01"), ["'2024/01/01'", "'%Y-%m-%d'", "2024-01-31"]),
        (lambda: HourlyPartitionsDefinition("2024-01-01"), ["'2024-01-01'", "'%Y-%m-%d-%H:%M'"]),
        (
            lambda: TimeWindowPartitionsDefinition("2024-01-01", "%Y-%m-%d", cron_schedule="0 0 * *"),
            ["'0 0 * *'", "five fields"],
        ),
        (
            lambda: TimeWindowPartitionsDefinition("2024-01-01", "%Y-%m-%d", cron_schedule="61 0 * * *"),
            ["minute 61", "0-59"],
        ),
        (
            lambda: TimeWindowPartitionsDefinition("2024-01-01", "%Y-%m-%d", cron_schedule="0 0 30 2 *"),
            ["'0 0 30 2 *'"],
        ),
        (
            lambda: TimeWindowPartitionsDefinition("2024-01-01", "%Y-%m-%d", cron_schedule="0 * * * *"),
            ["not precise enough"],
        ),
        (lambda: StaticPartitionsDefinition(["a", "b", "a"]), ["unique", "'a'"]),
        (lambda: StaticPartitionsDefinition("abc"), ["list of strings"]),
        (lambda: StaticPartitionsDefinition(["a", 1]), ["strings", "1"]),
        (lambda: StaticPartitionsDefinition(["a...b"]), ["'a...b'"]),
        (
            lambda: MultiPartitionsDefinition({k: StaticPartitionsDefinition(["x"]) for k in "abc"}),
            ["exactly two", "got 3"],
        ),
        (
            lambda: MultiPartitionsDefinition(
                {"a": StaticPartitionsDefinition(["x|y"]), "b": StaticPartitionsDefinition(["z"])}
            ),
            ["'x|y'", "'|'"],
        ),
        (lambda: DailyPartitionsDefinition("2024-01-01", hour_offset=24), ["hour_offset", "0 to 23", "24"]),
        (lambda: WeeklyPartitionsDefinition("2024-01-01", day_offset=7), ["day_offset", "0 to 6"]),
        (lambda: DailyPartitionsDefinition("2024-01-01", end_offset=1.5), ["end_offset", "1.5"]),
    ],
)
def test_bad_definitions_name_the_value_and_what_is_expected(make, words):
    with pytest.raises(ValueError) as info:
        make()
    assert isinstance(info.value, nbb.DefinitionError)
    for word in words:
        assert word in str(info.value)


def test_definitions_compare_by_value():
    assert DailyPartitionsDefinition("2024-01-01") == DailyPartitionsDefinition("2024-01-01")
    assert DailyPartitionsDefinition("2024-01-01") != DailyPartitionsDefinition("2024-01-02")
    assert len({StaticPartitionsDefinition(["a"]), StaticPartitionsDefinition(["a"])}) == 1
    assert "America/New_York" in repr(DailyPartitionsDefinition("2024-01-01", timezone="America/New_York"))


def test_cron_features():
    weekdays = TimeWindowPartitionsDefinition(
        "2024-01-01-00:00", "%Y-%m-%d-%H:%M", end="2024-01-08-09:30", cron_schedule="30 9 * * mon-fri"
    )
    # the Friday window ends on Monday 09:30
    assert weekdays.get_partition_keys(NOW) == [f"2024-01-0{d}-09:30" for d in range(1, 6)]
    monthly = TimeWindowPartitionsDefinition("2024-01", "%Y-%m", cron_schedule="@monthly", end="2024-04")
    assert monthly.get_partition_keys(NOW) == ["2024-01", "2024-02", "2024-03"]


# --- caches: answers at any current time, "now" included, are what a fresh definition says ----


def _fresh_answers(make, current_time, probes):
    """What a definition made just now (no bounds remembered) answers at current_time."""
    fresh = make()
    return (
        fresh.get_first_partition_key(current_time),
        fresh.get_last_partition_key(current_time),
        fresh.get_num_partitions(current_time),
        [fresh.has_partition_key(p, current_time) for p in probes],
    )


def _answers(definition, current_time, probes):
    return (
        definition.get_first_partition_key(current_time),
        definition.get_last_partition_key(current_time),
        definition.get_num_partitions(current_time),
        [definition.has_partition_key(p, current_time) for p in probes],
    )


@pytest.mark.parametrize("end_offset", [0, 1, 2, -1])
def test_answers_across_a_window_boundary_in_any_order(end_offset):
    def make():
        return DailyPartitionsDefinition("2024-01-01", end_offset=end_offset)

    boundary = datetime(2024, 1, 5)
    times = [boundary + timedelta(seconds=s) for s in (-1, 0, 1, 86_399, 86_400, -86_400, -86_401)]
    times += [datetime(2023, 12, 31), datetime(2023, 12, 31, 0, 0, 1), datetime(2023, 12, 30, 23, 59, 59)]
    probes = [f"2024-01-0{d}" for d in range(1, 9)] + ["2023-12-31"]
    shared = make()
    for current_time in times + times[::-1] + times[::2]:  # forwards, backwards, jumping
        assert _answers(shared, current_time, probes) == _fresh_answers(make, current_time, probes), current_time


def test_a_window_is_a_partition_from_the_second_it_ends():
    daily = DailyPartitionsDefinition("2024-01-01")
    before, on, after = datetime(2024, 1, 4, 23, 59, 59), datetime(2024, 1, 5), datetime(2024, 1, 5, 0, 0, 1)
    for current_time, has_the_4th in ((after, True), (before, False), (on, True), (before, False), (after, True)):
        assert daily.has_partition_key("2024-01-04", current_time) is has_the_4th
        assert daily.get_last_partition_key(current_time) == ("2024-01-04" if has_the_4th else "2024-01-03")


def test_end_offset_on_the_tick_itself_differs_from_a_second_later():
    # Dagster counts the n-th tick at or after now, so the exact second of a tick is its own case
    daily = DailyPartitionsDefinition("2024-01-01", end_offset=1)
    on, after = datetime(2023, 12, 31), datetime(2023, 12, 31, 0, 0, 1)
    assert daily.get_partition_keys(after) == ["2024-01-01"]
    assert daily.get_partition_keys(on) == []
    assert daily.get_partition_keys(after) == ["2024-01-01"]


def test_now_is_read_on_every_call_so_answers_follow_the_clock(monkeypatch):
    from nb_backfill import partitions

    clock = [datetime(2024, 1, 5, 23, 59, 59, tzinfo=timezone.utc).timestamp()]
    monkeypatch.setattr(partitions, "time", SimpleNamespace(time=lambda: clock[0]))
    daily = DailyPartitionsDefinition("2024-01-01")
    multi = MultiPartitionsDefinition({"date": daily, "region": StaticPartitionsDefinition(["eu", "us"])})
    hourly = HourlyPartitionsDefinition("2024-01-05-00:00")
    assert not daily.has_partition_key("2024-01-05") and daily.get_last_partition_key() == "2024-01-04"
    assert len(multi.get_partition_keys()) == 8
    assert hourly.get_last_partition_key() == "2024-01-05-22:00"
    with pytest.raises(nbb.UnknownPartitionError):
        daily.get_partition_keys_in_range(PartitionKeyRange("2024-01-04", "2024-01-05"))

    clock[0] += 1  # midnight: the 5th has ended
    assert daily.has_partition_key("2024-01-05") and daily.get_last_partition_key() == "2024-01-05"
    assert multi.get_partition_keys()[-2:] == ["2024-01-05|eu", "2024-01-05|us"]
    assert hourly.get_last_partition_key() == "2024-01-05-23:00"
    assert daily.get_partition_keys_in_range(PartitionKeyRange("2024-01-04", "2024-01-05")) == [
        "2024-01-04",
        "2024-01-05",
    ]

    clock[0] += 3600 * 24 * 30  # a month later, with nothing asked in between
    assert daily.get_last_partition_key() == "2024-02-04"
    assert multi.get_num_partitions() == len(multi.get_partition_keys()) == 2 * 35


def test_windows_and_key_checks_do_not_depend_on_what_was_asked_before():
    hourly = HourlyPartitionsDefinition("2024-11-01-00:00", timezone="America/New_York")
    keys = hourly.get_partition_keys(datetime(2024, 11, 5))
    windows = [hourly.time_window_for_partition_key(k) for k in keys]
    again = HourlyPartitionsDefinition("2024-11-01-00:00", timezone="America/New_York")
    assert [again.time_window_for_partition_key(k) for k in reversed(keys)] == windows[::-1]
    assert "2024-11-03-01:00-0500" in keys
    assert not hourly.has_partition_key("2024-11-03-01:00-0400", datetime(2024, 11, 5))  # not a key it makes
    assert not hourly.has_partition_key("2024-11-03-01:30", datetime(2024, 11, 5))
    assert not hourly.has_partition_key("2024-11-3-01:00", datetime(2024, 11, 5))  # strptime reads it; not a key


def test_key_lists_handed_out_are_copies():
    hourly = HourlyPartitionsDefinition("2024-01-01-00:00")
    month = PartitionKeyRange("2024-03-01-00:00", "2024-03-31-23:00")
    first = hourly.get_partition_keys_in_range(month, NOW)
    first.clear()
    assert len(hourly.get_partition_keys_in_range(month, NOW)) == 744
    multi = _multi()
    keys = multi.get_partition_keys(NOW)
    keys.append("junk")
    assert multi.get_partition_keys(NOW) == keys[:-1]


def test_multi_keys_follow_each_dimension():
    def make():
        return MultiPartitionsDefinition(
            {"date": DailyPartitionsDefinition("2024-01-01"), "region": StaticPartitionsDefinition(["eu", "us"])}
        )

    shared = make()
    for day in (3, 5, 4, 3, 10, 1, 5):
        current_time = datetime(2024, 1, day, 12)
        assert shared.get_partition_keys(current_time) == make().get_partition_keys(current_time)
        assert len(shared.get_partition_keys(current_time)) == 2 * (day - 1)
        if day > 2:
            span = PartitionKeyRange("2024-01-01|eu", f"2024-01-{day - 1:02d}|us")
            assert shared.get_partition_keys_in_range(span, current_time) == make().get_partition_keys_in_range(
                span, current_time
            )


def test_multi_with_a_dynamic_dimension_sees_new_keys(tmp_path):
    regions = nbb.DynamicPartitionsDefinition("regions", instance=nbb.get_instance(tmp_path / "store"))
    multi = MultiPartitionsDefinition({"date": DailyPartitionsDefinition("2024-01-01"), "region": regions})
    assert multi.get_partition_keys(NOW) == []
    regions.add_partitions(["eu"])
    assert len(multi.get_partition_keys(NOW)) == 365
    regions.add_partitions(["us"])
    assert multi.get_partition_keys(NOW)[:2] == ["2024-01-01|eu", "2024-01-01|us"]


def test_bulk_multi_keys_are_multi_partition_keys():
    keys = _multi().get_partition_keys(NOW)
    assert all(isinstance(k, nbb.MultiPartitionKey) for k in keys)
    assert [k.keys_by_dimension for k in keys[-2:]] == [
        {"date": "2024-01-03", "region": "us"},
        {"date": "2024-01-03", "region": "eu"},
    ]
    made = nbb.MultiPartitionKey({"region": "eu", "date": "2024-01-03"})
    assert made == keys[-1] and made.keys_by_dimension == keys[-1].keys_by_dimension
    for key in (keys[-1], made):
        back = pickle.loads(pickle.dumps(key))
        assert back == key and back.keys_by_dimension == key.keys_by_dimension
        assert isinstance(back, nbb.MultiPartitionKey)


def test_definitions_pickle_without_their_process_bound_state():
    for definition in (DailyPartitionsDefinition("2024-01-01"), StaticPartitionsDefinition(["a", "b"]), _multi()):
        hash(definition)
        assert "_hash" not in definition.__getstate__()
        back = pickle.loads(pickle.dumps(definition))
        assert back == definition and hash(back) == hash(definition)
        assert back.get_partition_keys(NOW) == definition.get_partition_keys(NOW)


def test_key_list_cache_holds_at_most_its_budget():
    from nb_backfill.partitions import _KeyLists

    cache = _KeyLists(budget=10)
    made = []

    def compute(n):
        def make():
            made.append(n)
            return [str(i) for i in range(n)]

        return make

    assert cache.get("a", compute(4)) == ["0", "1", "2", "3"]
    cache.get("b", compute(4))
    cache.get("a", compute(4))  # a is now the most recently used
    cache.get("c", compute(4))  # 12 > 10: b goes
    assert made == [4, 4, 4]
    cache.get("a", compute(4))
    cache.get("b", compute(4))
    assert made == [4, 4, 4, 4]
    assert cache._held <= 10
    assert cache.get("big", compute(11)) == [str(i) for i in range(11)]  # longer than the budget: not kept
    assert "big" not in cache._lists and cache._held <= 10


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("2000-02-29-23:00", (2000, 2, 29, 23, 0, 0)),
        ("1900-02-29-00:00", None),  # no such day: strptime refuses it too
        ("2023-02-29-00:00", None),
        ("2024-13-01-00:00", None),
        ("2024-01-01-24:00", None),
        ("0000-01-01-00:00", None),
        ("2024-1-01-00:00", None),  # strptime reads this one; it is left to strptime (and is not a key)
        ("٢٠٢٤-01-01-00:00", None),  # non-ASCII digits, which int() would take
        ("2024-01-01-+1:00", None),
        ("2024-01-01 00:00", None),
    ],
)
def test_keys_read_by_position_only_when_strptime_reads_them_the_same(text, fields):
    from nb_backfill.keyformat import parse_fields

    assert parse_fields(text, "%Y-%m-%d-%H:%M") == fields
    hourly = HourlyPartitionsDefinition("1899-01-01-00:00")
    assert hourly.has_partition_key(text, NOW) is (text == "2000-02-29-23:00")


def test_a_repeated_wall_time_as_current_time_keeps_its_fold():
    def make():
        return HourlyPartitionsDefinition("2024-11-02-00:00", timezone="America/New_York")

    hourly = make()
    first, second = datetime(2024, 11, 3, 1, 30), datetime(2024, 11, 3, 1, 30, fold=1)
    for current_time in (first, second, first, second.replace(tzinfo=hourly.tz), second):
        expected = "2024-11-03-00:00" if current_time.fold == 0 else "2024-11-03-01:00"
        assert hourly.get_last_partition_key(current_time) == expected
        assert make().get_last_partition_key(current_time) == expected


def test_a_large_static_definition_shows_its_ends_and_how_many_more():
    text = repr(StaticPartitionsDefinition([f"p{i}" for i in range(1000)]))
    assert len(text) < 400 and "'p0'" in text and "'p999'" in text and "(980 more)" in text
    assert repr(StaticPartitionsDefinition(["a", "b"])) == "StaticPartitionsDefinition(['a', 'b'])"


@pytest.mark.parametrize("name", ["America", "x" * 5000])
def test_a_zone_folder_or_an_overlong_name_is_a_definition_error(name):
    with pytest.raises(nbb.DefinitionError, match="unknown timezone"):
        DailyPartitionsDefinition("2024-01-01", timezone=name)
