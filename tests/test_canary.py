"""Canary order: the partitions likeliest to break run first (first, last, DST days, month ends,
a sample), and stop_on_canary_failure pauses the backfill before the rest start."""

import threading
import time

import pytest

import nb_backfill as nbb
from nb_backfill.canary import MOST, SAMPLE, canaries
from nb_backfill.errors import InvalidOptionError

NEW_YORK = nbb.DailyPartitionsDefinition("2024-01-01", end_date="2025-01-01", timezone="America/New_York")


@pytest.fixture
def store(tmp_path):
    return nbb.get_instance(tmp_path / "store")


def test_the_canaries_of_a_year_of_days():
    keys = NEW_YORK.get_partition_keys()
    found = canaries(NEW_YORK, keys)
    month_ends = ["2024-01-31", "2024-02-29", "2024-06-30", "2024-12-31"]
    assert {"2024-01-01", "2024-03-10", "2024-11-03", *month_ends} <= set(found)  # first/last, DST, month ends
    assert found == sorted(found) and len(found) == 2 + 2 + 11 + SAMPLE  # 2024-12-31 is both last and a month end
    assert canaries(NEW_YORK, keys) == found  # the same sample every time
    static = nbb.StaticPartitionsDefinition([f"k{i}" for i in range(1000)])
    assert len(canaries(static, static.get_partition_keys())) == 2 + SAMPLE <= MOST


def test_canaries_run_first_and_a_failed_one_pauses_the_backfill(store):
    order, lock = [], threading.Lock()

    @nbb.job(partitions_def=NEW_YORK)
    def daily(context):
        with lock:
            order.append(context.partition_key)
        if context.partition_key == "2024-03-10":
            raise ValueError("the DST day breaks it")

    bf = nbb.launch_backfill(
        daily, all=True, order="canary", stop_on_canary_failure=True, max_workers=4, instance=store
    )
    deadline = time.monotonic() + 30
    while bf.status != "PAUSED" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert bf.status == "PAUSED"
    assert "canary partition '2024-03-10' failed" in bf.error()
    expected = set(canaries(NEW_YORK, NEW_YORK.get_partition_keys()))
    assert set(order) <= expected and "2024-03-10" in order  # nothing but canaries ran
    bf.resume()
    assert bf.wait(timeout=60) == "COMPLETED_FAILED"
    assert len(order) == 366 and bf.counts()["FAILURE"] == 1


def test_stop_on_canary_failure_needs_the_canary_order(store):
    @nbb.job(partitions_def=NEW_YORK)
    def other(context):
        pass

    with pytest.raises(InvalidOptionError, match="stop_on_canary_failure is for order='canary', got order='asc'"):
        nbb.launch_backfill(other, all=True, stop_on_canary_failure=True, instance=store)
