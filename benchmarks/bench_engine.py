"""End-to-end engine overhead, next to the engine issue's goals. Run by hand:

    python benchmarks/bench_engine.py [--repeat 3] [--sizes 10000 100000] [--process-size 10000]

A no-op one-step job over N partitions with every status stored, against a bare loop calling the
same function; each measurement runs in a fresh process (fresh store, honest peak memory).
Dagster 1.13 here: 29 ms a partition in process, 2.8 s a partition through `dagster job backfill`.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
import nb_backfill as nbb

n, executor, home = int(sys.argv[1]), sys.argv[2], sys.argv[3]
parts = nbb.StaticPartitionsDefinition([f"p{i:07d}" for i in range(n)])

def noop(context):
    return None

job = nbb.job(partitions_def=parts, name="noop")(noop)
store = nbb.get_instance(home)
keys = parts.get_partition_keys()

class Context:
    partition_key = None

start = time.perf_counter()
ctx = Context()
for key in keys:
    ctx.partition_key = key
    noop(ctx)
bare = time.perf_counter() - start

rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
bf = nbb.launch_backfill(job, all=True, executor=executor, instance=store)
launched = time.perf_counter() - start
status = bf.wait(timeout=3600)
total = time.perf_counter() - start
rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
counts = bf.counts()
assert status == "COMPLETED_SUCCESS" and counts["SUCCESS"] == n, (status, counts)
events = store.query("SELECT COUNT(*) FROM events")[0][0]
print(json.dumps({"bare": bare, "launch": launched, "total": total, "extra_mb": (rss_after - rss_before) / 1024, "events": events}))
"""


def measure(n: int, executor: str, repeat: int) -> dict:
    results = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as home:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(n), executor, home], capture_output=True, text=True, check=True
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--process-size", type=int, default=10_000)
    args = parser.parse_args()
    print(f"median of {args.repeat} fresh processes each\n")
    for n in args.sizes:
        r = measure(n, "thread", args.repeat)
        overhead_us = (r["total"] - r["bare"]) / n * 1e6
        print(
            f"thread executor, {n:,} partitions: {r['total']:.2f} s end to end ({r['events']:,.0f} events stored), "
            f"bare loop {r['bare'] * 1000:.1f} ms\n"
            f"    overhead {overhead_us:.1f} us a partition (goal < 100 us: {'met' if overhead_us < 100 else 'MISSED'}; "
            f"Dagster in process: 29,000 us)\n"
            f"    launch_backfill returned in {r['launch'] * 1000:.1f} ms"
            + (f" (goal < 50 ms for 10,000: {'met' if r['launch'] < 0.05 else 'MISSED'})" if n == 10_000 else "")
            + f"\n    extra peak memory {r['extra_mb']:.0f} MB"
            + (f" (goal < 150 MB for 100,000: {'met' if r['extra_mb'] < 150 else 'MISSED'})" if n == 100_000 else "")
        )
    if args.process_size:
        n = args.process_size
        r = measure(n, "process", args.repeat)
        per_ms = (r["total"] - r["bare"]) / n * 1000
        print(
            f"process executor, {n:,} partitions: {r['total']:.2f} s, {n / r['total']:,.0f} runs a second, "
            f"{per_ms:.3f} ms a partition (goal < 1 ms: {'met' if per_ms < 1 else 'MISSED'}; "
            f"dagster job backfill: 2,800 ms)"
        )


if __name__ == "__main__":
    main()
