"""Single-key partition work, next to issue 9's goals. Run by hand:

    python benchmarks/bench_single_key.py [--processes 5] [--case NAME ...]

Every case runs in `--processes` fresh processes; each figure is the median over those processes.
Inside a process the case runs twice. "first, fresh process" is the first call of the first run,
right after import and making the definition: it also pays Python's and numpy's own warm-up.
Then every cache of partitions/schedules/keyformat is emptied and the case runs again on new
definitions: "first" is its first call (no cached answer of ours, as for a new definition or range
in a notebook already at work), "repeated" the median per-call time of batches of the same call,
"distinct" the mean per call over keys never asked before (no per-key cache helps: what a backfill
of many partitions pays per run). `current_time` is None ("now") unless stated, as in a run.
Dagster 1.13 on this machine in brackets.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta

import nb_backfill as nbb

US, MS = 1e-6, 1e-3


def clear_caches():
    """Empty every cache of the partition modules; numpy's and Python's warm state stays."""
    from nb_backfill import keyformat, partitions, schedules

    for module in (keyformat, partitions, schedules):
        for value in vars(module).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()
    if hasattr(partitions, "KEY_LISTS"):  # (absent before issue 9: the benchmark also runs on older code)
        partitions.KEY_LISTS.clear()


def per_call(fn, calls=2000, batches=15):
    """Median over batches of the mean time of one call of fn (seconds); batches of at most
    `calls` calls and about 20 ms, so slow code is measured in reasonable time too."""
    fn()
    start = time.perf_counter()
    fn()
    calls = max(1, min(calls, int(0.02 / max(time.perf_counter() - start, 1e-7))))
    means = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        means.append((time.perf_counter() - start) / calls)
    return statistics.median(means)


def first_call(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def over_keys(fn, keys):
    """Mean time of fn(key) over keys, each called once."""
    start = time.perf_counter()
    for key in keys:
        fn(key)
    return (time.perf_counter() - start) / len(keys)


def _daily_keys(start, n):
    return [(start + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(n)]


def _hourly_keys(start, n):
    return [(start + timedelta(hours=i)).strftime("%Y-%m-%d-%H:%M") for i in range(n)]


def case_has_daily():
    daily = nbb.DailyPartitionsDefinition("2020-01-01")
    first = first_call(lambda: daily.has_partition_key("2023-06-15"))
    assert daily.has_partition_key("2023-06-15") and not daily.has_partition_key("2019-12-31")
    repeated = per_call(lambda: daily.has_partition_key("2023-06-15"))
    fixed = per_call(lambda: daily.has_partition_key("2023-06-15", datetime(2025, 1, 1)))
    distinct = over_keys(daily.has_partition_key, _daily_keys(datetime(2020, 1, 1), 2000))
    return {"first": first, "repeated": repeated, "repeated, fixed current_time": fixed, "distinct": distinct}


def case_has_hourly():
    hourly = nbb.HourlyPartitionsDefinition("2020-01-01-00:00")
    first = first_call(lambda: hourly.has_partition_key("2023-06-15-13:00"))
    assert hourly.has_partition_key("2023-06-15-13:00") and not hourly.has_partition_key("2023-06-15-13:30")
    repeated = per_call(lambda: hourly.has_partition_key("2023-06-15-13:00"))
    distinct = over_keys(hourly.has_partition_key, _hourly_keys(datetime(2023, 1, 1), 5000))
    return {"first": first, "repeated": repeated, "distinct": distinct}


def case_has_hourly_new_york():
    hourly = nbb.HourlyPartitionsDefinition("2020-01-01-00:00", timezone="America/New_York")
    first = first_call(lambda: hourly.has_partition_key("2023-06-15-13:00"))
    assert hourly.has_partition_key("2023-11-05-01:00-0500") and not hourly.has_partition_key("2023-03-12-02:00")
    repeated = per_call(lambda: hourly.has_partition_key("2023-06-15-13:00"))
    distinct = over_keys(hourly.has_partition_key, _hourly_keys(datetime(2023, 1, 1), 5000))
    return {"first": first, "repeated": repeated, "distinct": distinct}


def case_window_daily_utc():
    daily = nbb.DailyPartitionsDefinition("2020-01-01")
    first = first_call(lambda: daily.time_window_for_partition_key("2023-06-15"))
    repeated = per_call(lambda: daily.time_window_for_partition_key("2023-06-15"))
    distinct = over_keys(daily.time_window_for_partition_key, _daily_keys(datetime(2020, 1, 1), 2000))
    return {"first": first, "repeated": repeated, "distinct": distinct}


def case_window_hourly_new_york():
    hourly = nbb.HourlyPartitionsDefinition("2020-01-01-00:00", timezone="America/New_York")
    first = first_call(lambda: hourly.time_window_for_partition_key("2023-06-15-13:00"))
    repeated = per_call(lambda: hourly.time_window_for_partition_key("2023-06-15-13:00"))
    keys = [k for k in _hourly_keys(datetime(2023, 1, 1), 5000) if hourly.has_partition_key(k)]
    distinct = over_keys(hourly.time_window_for_partition_key, keys)
    return {"first": first, "repeated": repeated, "distinct": distinct}


def _context(job, key):
    import logging
    import threading

    from nb_backfill.jobs import RunContext

    return RunContext(job, key, "run", None, 1, {}, logging.getLogger("bench"), threading.Event())


def case_context_window():
    daily = nbb.DailyPartitionsDefinition("2020-01-01")
    job = nbb.job(partitions_def=daily, name="bench_single_key")(lambda context: None)
    context = _context(job, "2023-06-15")
    first = first_call(lambda: context.partition_time_window)
    repeated = per_call(lambda: context.partition_time_window)
    # a backfill: one run (one context) per partition, each asking once
    contexts = [_context(job, k) for k in _daily_keys(datetime(2020, 1, 1), 2000)]
    distinct = over_keys(lambda c: c.partition_time_window, contexts)
    # through a real run on the thread executor: the step reads it 1000 times
    seen = []

    def step(context):
        start = time.perf_counter()
        for _ in range(1000):
            _ = context.partition_time_window
        seen.append((time.perf_counter() - start) / 1000)

    import tempfile

    with tempfile.TemporaryDirectory() as home:
        store = nbb.get_instance(home)
        real = nbb.job(partitions_def=daily, name="bench_single_key_run")(step)
        status = nbb.launch_backfill(real, partitions=["2023-06-15"], instance=store).wait(timeout=60)
        assert status == "COMPLETED_SUCCESS", status
    return {"first": first, "repeated": repeated, "distinct (one context a run)": distinct, "in a real run": seen[0]}


def case_range_hourly():
    hourly = nbb.HourlyPartitionsDefinition("2020-01-01-00:00")
    month = nbb.PartitionKeyRange("2024-03-01-00:00", "2024-03-31-23:00")
    first = first_call(lambda: hourly.get_partition_keys_in_range(month))
    assert len(hourly.get_partition_keys_in_range(month)) == 744
    repeated = per_call(lambda: hourly.get_partition_keys_in_range(month), calls=200)
    return {"first": first, "repeated": repeated}


def case_multi():
    multi = nbb.MultiPartitionsDefinition(
        {
            "date": nbb.DailyPartitionsDefinition("2023-01-01", end_date="2025-01-01"),
            "region": nbb.StaticPartitionsDefinition([f"region{i:02d}" for i in range(50)]),
        }
    )
    first = first_call(multi.get_partition_keys)
    keys = multi.get_partition_keys()
    assert len(keys) == 36_550 and keys[0].keys_by_dimension == {"date": "2023-01-01", "region": "region00"}
    repeated = per_call(multi.get_partition_keys, calls=5, batches=21)
    return {"first": first, "repeated": repeated}


# (case, metric, goal in seconds or None, Dagster's figure)
GOALS = {
    "has_daily": [("first", None, ""), ("repeated", 3 * US, "57 us"), ("repeated, fixed current_time", 3 * US, "")],
    "has_hourly": [("first", None, ""), ("repeated", 3 * US, "57 us")],
    "has_hourly_new_york": [("first", None, ""), ("repeated", 3 * US, "57 us")],
    "window_daily_utc": [("first", None, ""), ("repeated", 2 * US, "2-3 us")],
    "window_hourly_new_york": [("first", None, ""), ("repeated", 2 * US, "2-3 us")],
    "context_window": [("first", None, ""), ("repeated", 2 * US, "~3 us"), ("in a real run", 2 * US, "~3 us")],
    "range_hourly": [("first", 500 * US, ""), ("repeated", 10 * US, "14 us cached")],
    "multi": [("first", 15 * MS, ""), ("repeated", 1 * MS, "1.9 ms cached")],
}
TITLES = {
    "has_daily": "has_partition_key, daily UTC",
    "has_hourly": "has_partition_key, hourly UTC",
    "has_hourly_new_york": "has_partition_key, hourly America/New_York",
    "window_daily_utc": "time_window_for_partition_key, daily UTC",
    "window_hourly_new_york": "time_window_for_partition_key, hourly America/New_York",
    "context_window": "context.partition_time_window (daily UTC)",
    "range_hourly": "get_partition_keys_in_range, 1 month of hourly (744 keys)",
    "multi": "Multi 731 days x 50 static (36,550 keys), get_partition_keys",
}


def _show(seconds):
    return f"{seconds / US:8.2f} us" if seconds < 10 * MS else f"{seconds / MS:8.2f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--case", action="append", choices=sorted(GOALS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case = globals()[f"case_{args.child}"]
        cold = case()
        clear_caches()
        print(json.dumps({"first, fresh process": cold["first"], **case()}))
        return
    print(f"medians over {args.processes} fresh processes\n")
    missed = 0
    for case in args.case or GOALS:
        runs = [
            json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--child", case], capture_output=True, text=True, check=True
                ).stdout
            )
            for _ in range(args.processes)
        ]
        print(TITLES[case])
        goals = {metric: (goal, dagster) for metric, goal, dagster in GOALS[case]}
        for metric in runs[0]:
            value = statistics.median(r[metric] for r in runs)
            goal, dagster = goals.get(metric, (None, ""))
            verdict = ""
            if goal is not None:
                met = value < goal
                missed += not met
                verdict = f"  goal < {_show(goal).strip()}: {'met' if met else 'MISSED'}"
            note = f"  [Dagster {dagster}]" if dagster else ""
            print(f"    {metric:32s}{_show(value)}{verdict}{note}")
    print(f"\n{'every goal met' if not missed else f'{missed} goal(s) missed'}")


if __name__ == "__main__":
    main()
