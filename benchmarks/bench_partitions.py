"""Partition key generation speed and memory, next to the foundation issue's goals.

Run by hand: python benchmarks/bench_partitions.py [--repeat N]
Dagster 1.13 on this machine: 0.87 s for ten years of hourly UTC keys, 1.11 s in New York.
Single-key work (has_partition_key, windows, ranges, multi) against issue 9's goals, each in
fresh processes: benchmarks/bench_single_key.py.
"""

import argparse
import statistics
import time
import tracemalloc
from datetime import datetime

import nb_backfill as nbb

NOW = datetime(2026, 1, 1)
CASES = [
    (
        "hourly, 10 years, UTC",
        lambda: nbb.HourlyPartitionsDefinition("2012-01-01-00:00", end_date="2022-01-01-00:00"),
        0.030,
    ),
    (
        "hourly, 10 years, America/New_York",
        lambda: nbb.HourlyPartitionsDefinition(
            "2012-01-01-00:00", end_date="2022-01-01-00:00", timezone="America/New_York"
        ),
        0.100,
    ),
    ("daily, 30 years, UTC", lambda: nbb.DailyPartitionsDefinition("1990-01-01", end_date="2020-01-01"), None),
    (
        "daily, 30 years, Europe/Berlin",
        lambda: nbb.DailyPartitionsDefinition("1990-01-01", end_date="2020-01-01", timezone="Europe/Berlin"),
        None,
    ),
]


def timed(fn, repeat):
    """Median and first (cold) wall time of fn over `repeat` calls, and its last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times[0], result


def peak_memory(fn):
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=9)
    repeat = parser.parse_args().repeat
    print(f"median of {repeat} runs (first run in brackets: cold caches)\n")
    for name, make, goal in CASES:
        report(name, make, goal, repeat)


def report(name, make, goal, repeat):
    """Time listing, counting and looking up the keys of one case, and print the figures."""
    definition = make()
    median, cold, keys = timed(lambda: make().get_partition_keys(NOW), repeat)
    per_key = median / len(keys) * 1e9
    verdict = "" if goal is None else f"  goal < {goal * 1000:.0f} ms: {'met' if median < goal else 'MISSED'}"
    print(f"{name}: {len(keys):,} keys in {median * 1000:.1f} ms [{cold * 1000:.1f}] = {per_key:.0f} ns a key{verdict}")
    count, _, n = timed(lambda: definition.get_num_partitions(NOW), repeat)
    middle = keys[len(keys) // 2]
    lookup, _, _ = timed(lambda: definition.has_partition_key(middle, NOW), repeat)
    index, _, i = timed(lambda: definition.index_of(middle, NOW), repeat)
    assert n == len(keys) and i == len(keys) // 2
    peak = peak_memory(lambda: make().get_partition_keys(NOW))
    print(
        f"    count {count * 1000:.2f} ms, has_partition_key {lookup * 1e6:.1f} us, index_of {index * 1000:.2f} ms; "
        f"peak memory while listing {peak / 2**20:.1f} MiB ({peak / len(keys):.0f} B a key)"
    )


if __name__ == "__main__":
    main()
