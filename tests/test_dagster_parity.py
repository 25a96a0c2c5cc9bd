"""nb_backfill answers what Dagster 1.13 answers, for 412 definitions recorded from Dagster itself.

tests/golden/make_dagster_golden.py wrote the file with Dagster installed; nb_backfill never imports
Dagster. The cases cover hourly, daily, weekly, monthly and cron definitions in eight time zones
(DST, half- and quarter-hour offsets), start and end bounds, end offsets and current times.
"""

import json
from datetime import datetime
from pathlib import Path

import pytest

import nb_backfill as nbb

GOLDEN = json.loads((Path(__file__).parent / "golden" / "dagster_golden.json").read_text())
CLASSES = {
    "hourly": nbb.HourlyPartitionsDefinition,
    "daily": nbb.DailyPartitionsDefinition,
    "weekly": nbb.WeeklyPartitionsDefinition,
    "monthly": nbb.MonthlyPartitionsDefinition,
    "cron": nbb.TimeWindowPartitionsDefinition,
}


def _ids(case):
    params = case["params"]
    return f"{case['kind']}-{params.get('timezone', 'UTC')}-{params.get('start_date', params.get('start'))}"


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[_ids(c) for c in GOLDEN["cases"]])
def test_same_answers_as_dagster(case):
    definition = CLASSES[case["kind"]](**case["params"])
    now = datetime.fromisoformat(case["current_time"])

    assert definition.get_partition_keys(now) == case["keys"]
    assert definition.get_num_partitions(now) == len(case["keys"])
    assert definition.get_first_partition_key(now) == case["first"]
    assert definition.get_last_partition_key(now) == case["last"]
    for key, (start, end) in case["windows"].items():
        window = definition.time_window_for_partition_key(key)
        assert [window.start.isoformat(), window.end.isoformat()] == [start, end]
        assert window.start.tzinfo is not None
    for start, end, expected in case["ranges"]:
        assert definition.get_partition_keys_in_range(nbb.PartitionKeyRange(start, end), now) == expected


def test_golden_file_is_big_enough_to_mean_something():
    cases = GOLDEN["cases"]
    assert GOLDEN["dagster"].startswith("1.13")
    assert len(cases) >= 400
    assert sum(len(c["keys"]) for c in cases) > 10_000
    assert {c["params"].get("timezone") for c in cases} >= {"America/New_York", "Europe/Berlin", "Australia/Sydney"}
    assert any(k.endswith("-0500") for c in cases for k in c["keys"])


def test_has_partition_key_agrees_with_dagster_where_dagster_agrees_with_itself():
    # Dagster's has_partition_key accepts some keys its own get_partition_keys never lists (an
    # hourly key at minute 07, say); nb_backfill answers exactly "is it one of the keys".
    checked = 0
    for case in GOLDEN["cases"]:
        definition = CLASSES[case["kind"]](**case["params"])
        now = datetime.fromisoformat(case["current_time"])
        keys = set(case["keys"])
        for probe, dagster_answer in case.get("probes", {}).items():
            assert definition.has_partition_key(probe, now) == (probe in keys), probe
            if dagster_answer is not None and dagster_answer == (probe in keys):
                checked += 1
    assert checked > 5000
