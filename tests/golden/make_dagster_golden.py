"""Write dagster_golden.json: what Dagster itself answers for many partition definitions.

Run by hand with Dagster installed (it is never a dependency of nb_backfill):
    python -m venv /tmp/dagvenv && /tmp/dagvenv/bin/pip install dagster==1.13.29
    /tmp/dagvenv/bin/python tests/golden/make_dagster_golden.py
The tests compare nb_backfill's answers with this file.
"""

import json
import random
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster._core.definitions.partitions.context import partition_loading_context

ZONES = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Kolkata",
         "Australia/Adelaide", "Asia/Kathmandu", "America/Sao_Paulo"]
# dates near DST changes in the zones above, and plain ones
ANCHORS = ["2024-03-10", "2024-11-03", "2024-03-31", "2024-10-27", "2024-04-07", "2024-10-06",
           "2023-02-28", "2024-02-28", "2023-12-30", "2024-06-15"]
CRONS = ["0 */6 * * *", "30 2 * * *", "15 1,13 * * 1-5", "0 0 1 */3 *", "45 * * * *", "0 3 * * 0"]


def iso(dt):
    return dt.isoformat()


def definition(rng):
    kind = rng.choice(["hourly", "daily", "weekly", "monthly", "cron"])
    tz = rng.choice(ZONES)
    anchor = datetime.fromisoformat(rng.choice(ANCHORS))
    span = {"hourly": timedelta(days=3), "daily": timedelta(days=40), "weekly": timedelta(days=120),
            "monthly": timedelta(days=900), "cron": timedelta(days=60)}[kind]
    start = anchor - span / 2 + timedelta(hours=rng.randrange(0, 48)) * (kind != "hourly")
    args = {"timezone": tz, "end_offset": rng.choice([0, 0, 0, 1, 2, -1, -2])}
    if rng.random() < 0.4:
        args["end_date"] = start + span * rng.uniform(0.2, 1.2)
    if kind == "hourly":
        args["minute_offset"] = rng.choice([0, 0, 15, 30])
        start_str = start.replace(minute=0).strftime("%Y-%m-%d-%H:%M")
    elif kind == "cron":
        cron = rng.choice(CRONS)
        start_str = start.strftime("%Y-%m-%d-%H:%M")
        args = dict(args, cron_schedule=cron, fmt="%Y-%m-%d-%H:%M")
        if "end_date" in args:
            args["end"] = args.pop("end_date").strftime("%Y-%m-%d-%H:%M")
        return kind, {"start": start_str, **args}
    else:
        args["minute_offset"] = rng.choice([0, 0, 30])
        args["hour_offset"] = rng.choice([0, 0, 1, 2, 3, 23])
        if kind == "weekly":
            args["day_offset"] = rng.randrange(0, 7)
        if kind == "monthly":
            args["day_offset"] = rng.choice([1, 1, 5, 28])
        start_str = start.strftime("%Y-%m-%d")
    if "end_date" in args:
        args["end_date"] = args["end_date"].strftime("%Y-%m-%d-%H:%M" if kind == "hourly" else "%Y-%m-%d")
    return kind, {"start_date": start_str, **args}


def build(kind, params):
    cls = {"hourly": dg.HourlyPartitionsDefinition, "daily": dg.DailyPartitionsDefinition,
           "weekly": dg.WeeklyPartitionsDefinition, "monthly": dg.MonthlyPartitionsDefinition,
           "cron": dg.TimeWindowPartitionsDefinition}[kind]
    return cls(**params)


def case(rng):
    kind, params = definition(rng)
    d = build(kind, params)
    start = d.start.replace(tzinfo=None)
    span = {"hourly": timedelta(days=3), "daily": timedelta(days=40), "weekly": timedelta(days=120),
            "monthly": timedelta(days=900), "cron": timedelta(days=60)}[kind]
    now = start + span * rng.uniform(-0.1, 1.3)
    now_str = now.strftime("%Y-%m-%dT%H:%M:%S")
    keys = list(d.get_partition_keys(current_time=now))
    windows = {}
    for key in rng.sample(keys, min(6, len(keys))):
        w = d.time_window_for_partition_key(key)
        windows[key] = [iso(w.start), iso(w.end)]
    probes = {}
    for key in rng.sample(keys, min(3, len(keys))) + ([keys[-1]] if keys else []):
        for probe in (key, key + "-0500", key[:-1] + "7", key.replace("-", "/", 1), key[:4] + "9" + key[5:]):
            with partition_loading_context(now):
                probes[probe] = d.has_partition_key(probe) if _quiet(d, probe) else None
    ranges = []
    if len(keys) >= 2:
        for _ in range(3):
            a, b = sorted(rng.sample(range(len(keys)), 2))
            ranges.append([keys[a], keys[b], list(d.get_partition_keys_in_range(dg.PartitionKeyRange(keys[a], keys[b])))])
    return {"kind": kind, "params": params, "current_time": now_str, "keys": keys,
            "first": keys[0] if keys else None, "last": keys[-1] if keys else None,
            "windows": windows, "ranges": ranges, "probes": probes}


def _quiet(d, probe):
    """Dagster raises on some malformed keys instead of answering False: record those as None."""
    try:
        d.has_partition_key(probe)
        return True
    except Exception:
        return False


def main():
    rng = random.Random(20261124)
    cases = [case(rng) for _ in range(400)]
    # fixed cases the tests name explicitly
    fixed = [
        ("hourly", {"start_date": "2024-11-02-20:00", "timezone": "America/New_York", "end_date": "2024-11-03-06:00"}),
        ("hourly", {"start_date": "2024-03-09-22:00", "timezone": "America/New_York", "end_date": "2024-03-10-06:00"}),
        ("hourly", {"start_date": "2024-10-26-23:00", "timezone": "Europe/Berlin", "end_date": "2024-10-27-05:00"}),
        ("hourly", {"start_date": "2024-04-06-23:00", "timezone": "Australia/Sydney", "end_date": "2024-04-07-05:00"}),
        ("hourly", {"start_date": "2024-10-05-23:00", "timezone": "Australia/Sydney", "end_date": "2024-10-06-05:00"}),
        ("hourly", {"start_date": "2024-04-06-23:00", "timezone": "Australia/Adelaide", "end_date": "2024-04-07-05:00"}),
        ("daily", {"start_date": "2024-03-08", "hour_offset": 2, "minute_offset": 30, "timezone": "America/New_York", "end_date": "2024-03-13"}),
        ("daily", {"start_date": "2024-10-25", "hour_offset": 2, "minute_offset": 30, "timezone": "Europe/Berlin", "end_date": "2024-10-30"}),
        ("weekly", {"start_date": "2024-01-01", "day_offset": 3, "end_date": "2024-03-01"}),
        ("monthly", {"start_date": "2024-01-01", "end_date": "2025-01-01"}),
        ("daily", {"start_date": "2024-01-01", "end_offset": 1}),
        ("daily", {"start_date": "2024-01-01", "end_offset": -2}),
    ]
    for kind, params in fixed:
        d = build(kind, params)
        now = "2024-12-31T12:00:00"
        keys = list(d.get_partition_keys(current_time=datetime.fromisoformat(now)))
        windows = {k: [iso(w.start), iso(w.end)] for k in keys[:12] for w in [d.time_window_for_partition_key(k)]}
        cases.append({"kind": kind, "params": params, "current_time": now, "keys": keys,
                      "first": keys[0] if keys else None, "last": keys[-1] if keys else None,
                      "windows": windows, "ranges": [], "fixed": True})
    out = Path(__file__).with_name("dagster_golden.json")
    out.write_text(json.dumps({"dagster": dg.__version__, "cases": cases}, indent=0))
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
