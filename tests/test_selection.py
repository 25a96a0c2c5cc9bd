"""The one selection parser: what a user chose becomes keys in definition order, or a clear error."""

from datetime import datetime

import pytest

import nb_backfill as nbb
from nb_backfill import SelectionError, select_partitions
from nb_backfill.selection import split_keys

NOW = datetime(2024, 12, 31, 12, 0)
DAILY = nbb.DailyPartitionsDefinition("2024-01-01", end_date="2024-02-01")
STATIC = nbb.StaticPartitionsDefinition(["north", "south", "east", "west", "a,b"])


def test_all():
    assert select_partitions(DAILY, all=True, current_time=NOW) == DAILY.get_partition_keys(NOW)


def test_list_comes_back_in_definition_order_without_duplicates():
    assert select_partitions(DAILY, "2024-01-05,2024-01-02, 2024-01-05", current_time=NOW) == [
        "2024-01-02",
        "2024-01-05",
    ]
    assert select_partitions(STATIC, ["west", "north"]) == ["north", "west"]


def test_inclusive_range_and_open_ends():
    assert select_partitions(DAILY, from_="2024-01-30", to="2024-01-31", current_time=NOW) == [
        "2024-01-30",
        "2024-01-31",
    ]
    assert select_partitions(DAILY, from_="2024-01-30", current_time=NOW) == ["2024-01-30", "2024-01-31"]
    assert select_partitions(DAILY, to="2024-01-02", current_time=NOW) == ["2024-01-01", "2024-01-02"]
    assert select_partitions(STATIC, from_="south", to="west") == ["south", "east", "west"]


def test_multi_range_is_the_cross_product():
    multi = nbb.MultiPartitionsDefinition({"date": DAILY, "region": nbb.StaticPartitionsDefinition(["eu", "us"])})
    assert select_partitions(multi, from_="2024-01-01|us", to="2024-01-02|us", current_time=NOW) == [
        "2024-01-01|us",
        "2024-01-02|us",
    ]


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("a,b", ["a", "b"]),
        (" a , b ", ["a", "b"]),
        ('"a,b",c', ["a,b", "c"]),
        ("a\\,b,c", ["a,b", "c"]),
        ("", []),
        (",,", []),
    ],
)
def test_split_keys(text, keys):
    assert split_keys(text) == keys


def test_keys_with_commas_can_be_selected():
    assert select_partitions(STATIC, ["a,b"]) == ["a,b"]
    assert select_partitions(STATIC, '"a,b",north') == ["north", "a,b"]
    assert select_partitions(STATIC, "a\\,b") == ["a,b"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"from_": "2024-01-20", "to": "2024-01-10"}, ["from '2024-01-20' comes after to '2024-01-10'", "swap"]),
        ({"partitions": "2024-01-05,2024-13-01"}, ["'2024-13-01'", "'%Y-%m-%d'"]),
        ({"partitions": "2024/01/05"}, ["'2024/01/05'", "'%Y-%m-%d'", "did you mean '2024-01-05'"]),
        ({"partitions": "2023-12-31"}, ["'2023-12-31'", "out of range", "'2024-01-01'", "'2024-01-31'"]),
        ({"from_": "2024-02-15"}, ["'2024-02-15'", "out of range"]),
        ({"partitions": ""}, ["empty"]),
        ({"partitions": []}, ["empty"]),
        ({}, ["no partitions selected", "a from/to range"]),
        ({"partitions": "2024-01-01", "all": True}, ["choose one", "a list of partitions and all"]),
        ({"from_": "2024-01-01", "all": True}, ["a from/to range and all"]),
        ({"partitions": "x", "to": "2024-01-01"}, ["a list of partitions and a from/to range"]),
        ({"partitions": [1, 2]}, ["strings"]),
        ({"from_": "  "}, ["from must be a partition key"]),
    ],
)
def test_bad_selections_say_what_is_wrong(kwargs, words):
    with pytest.raises(SelectionError) as info:
        select_partitions(DAILY, current_time=NOW, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_unknown_static_key_suggests_up_to_three_close_keys():
    with pytest.raises(nbb.UnknownPartitionError) as info:
        select_partitions(STATIC, "nrth,sooth")
    message = str(info.value)
    assert "'nrth'" in message and "did you mean 'north'" in message and "also unknown: 'sooth'" in message


def test_suggestions_are_at_most_three():
    static = nbb.StaticPartitionsDefinition([f"key{i}" for i in range(20)])
    with pytest.raises(nbb.UnknownPartitionError) as info:
        select_partitions(static, "key")
    assert str(info.value).count("'key") == 1 + 3 + 2  # the bad key, three suggestions, first and last


def test_hourly_key_not_on_a_window_start():
    hourly = nbb.HourlyPartitionsDefinition("2024-01-01-00:00", end_date="2024-01-02-00:00")
    with pytest.raises(nbb.UnknownPartitionError, match=r"not the start of a window.*'2024-01-01-05:00'"):
        select_partitions(hourly, "2024-01-01-05:30", current_time=NOW)


def test_definition_without_partitions_yet():
    future = nbb.DailyPartitionsDefinition("2030-01-01")
    with pytest.raises(SelectionError, match="no partitions"):
        select_partitions(future, all=True, current_time=NOW)
    with pytest.raises(SelectionError, match="no partitions"):
        select_partitions(future, from_="2030-01-01", current_time=NOW)


def test_not_a_definition():
    with pytest.raises(SelectionError, match="expected a partitions definition"):
        select_partitions("daily", all=True)
