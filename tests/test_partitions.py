"""One test per partition rule of the foundation issue (values checked against Dagster 1.13)."""

import itertools
from datetime import date, datetime, timezone

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
