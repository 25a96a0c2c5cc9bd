"""End-to-end engine overhead at growing sizes, each figure beside issue 9's goal. Run by hand:

    python benchmarks/bench_engine.py [--repeat 3] [--sizes 1000 10000 100000 1000000]
                                      [--process-size 10000] [--steps-size 100000]
                                      [--dask-size 10000] [--dask-long]

A no-op job over N partitions with every status stored (and no output kept: bench_outputs.py times
keeping them), against a bare loop calling the same function; each measurement runs in a fresh
process (fresh store, honest peak memory), and the figures are medians. Dagster 1.13.29 on this machine: 15.7 ms a partition (27.6 ms for 3 steps).
The dask executor runs on a local cluster of two worker processes, started before the clock
starts (issue 10's goals: >= 500 runs a second; 100 runs of 1 s within 5% of 50 s).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, resource, sys, time
import nb_backfill as nbb

n, executor, steps, home, sleep = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
parts = nbb.StaticPartitionsDefinition([f"p{i:07d}" for i in range(n)])
where = {}
if executor == "dask":
    from distributed import LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=50)
    where = {"dask_address": cluster.scheduler_address}

def noop(context):
    if sleep:
        time.sleep(sleep)
    return None

if steps == 1:
    job = nbb.job(partitions_def=parts, name="noop", keep_outputs=False)(noop)
    calls = [noop]
else:
    @nbb.step
    def extract(context):
        return 1

    @nbb.step
    def transform(context, extract):
        return extract

    @nbb.step
    def load(context, transform):
        return transform

    job = nbb.Job("three", [extract, transform, load], partitions_def=parts, keep_outputs=False)
    calls = [lambda c: extract.fn(c), lambda c: transform.fn(c, 1), lambda c: load.fn(c, 1)]
store = nbb.get_instance(home)
keys = parts.get_partition_keys()

class Context:
    partition_key = None

start = time.perf_counter()
ctx = Context()
for key in keys if not sleep else ():  # runs that sleep are timed against their sleep, not a loop
    ctx.partition_key = key
    for call in calls:
        call(ctx)
bare = time.perf_counter() - start

start = time.perf_counter()
bf = nbb.launch_backfill(job, all=True, executor=executor, instance=store, **where)
launched = time.perf_counter() - start
status = bf.wait(timeout=3600)
total = time.perf_counter() - start
counts = bf.counts()
assert status == "COMPLETED_SUCCESS" and counts["SUCCESS"] == n, (status, counts)
import pandas  # noqa: F401  (its import is start-up's figure, not the frames')

frames = {}
for name, read in (("runs_df", bf.runs_df), ("steps_df", bf.steps_df),
                   ("partition_status", lambda: nbb.partition_status(job, instance=store))):
    t = time.perf_counter()
    read()
    frames[name] = time.perf_counter() - t
store.query("PRAGMA wal_checkpoint(TRUNCATE)")
size = sum(os.path.getsize(os.path.join(home, f)) for f in os.listdir(home) if os.path.isfile(os.path.join(home, f)))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"bare": bare, "launch": launched, "total": total, "peak_mb": peak, "bytes": size / n, **frames}))
"""


def measure(n: int, executor: str, steps: int, repeat: int, sleep: float = 0.0) -> dict:
    """Medians over `repeat` fresh processes."""
    results = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as home:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(n), executor, str(steps), home, str(sleep)],
                capture_output=True,
                text=True,
                check=True,
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def beside(value: float, goal: float, unit: str) -> str:
    return f"{value:,.1f} {unit} (goal < {goal:,g} {unit}: {'met' if value < goal else 'MISSED'})"


def overhead_us(r: dict, n: int) -> float:
    """Wall time a partition beyond the bare loop, launch included."""
    return (r["total"] - r["bare"]) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--process-size", type=int, default=10_000, help="0 to skip")
    parser.add_argument("--steps-size", type=int, default=100_000, help="0 to skip")
    parser.add_argument("--dask-size", type=int, default=10_000, help="0 to skip (needs the dask extra)")
    parser.add_argument("--dask-long", action="store_true", help="also 100 runs of 1 s on 2 workers (about a minute)")
    args = parser.parse_args()
    print(f"median of {args.repeat} fresh processes each; thread executor, no-op one-step job\n")
    print(
        f"{'N':>10} {'us/partition':>13} {'launch ms':>10} {'peak MB':>8} {'bytes/partition':>16} "
        f"{'runs_df s':>10} {'steps_df s':>11} {'partition_status s':>19}"
    )
    results = {}
    for n in args.sizes:
        r = results[n] = measure(n, "thread", 1, args.repeat)
        print(
            f"{n:>10,} {overhead_us(r, n):>13.1f} {r['launch'] * 1000:>10.1f} {r['peak_mb']:>8.0f} {r['bytes']:>16.0f} "
            f"{r['runs_df']:>10.2f} {r['steps_df']:>11.2f} {r['partition_status']:>19.2f}"
        )
    print()
    for n, r in results.items():
        print(
            f"{n:,} partitions: overhead {beside(overhead_us(r, n), 15, 'us')} a partition; "
            f"launch_backfill {beside(r['launch'] * 1000, 50, 'ms')}"
        )
    largest = max(results)
    r = results[largest]
    print(
        f"at {largest:,}: peak RSS {beside(r['peak_mb'], 400, 'MB')}; store {beside(r['bytes'], 250, 'bytes')} "
        f"a partition"
    )
    for name in ("runs_df", "steps_df", "partition_status"):
        print(f"at {largest:,}: {name} {beside(r[name], 0.4, 's')}")
    if args.process_size:
        n = args.process_size
        r = measure(n, "process", 1, args.repeat)
        print(f"process executor, {n:,} partitions: overhead {beside(overhead_us(r, n), 40, 'us')} a partition")
    if args.steps_size:
        n = args.steps_size
        r = measure(n, "thread", 3, args.repeat)
        print(
            f"3-step job, thread executor, {n:,} partitions: overhead {beside(overhead_us(r, n), 25, 'us')} a partition"
        )
    if args.dask_size:
        n = args.dask_size
        r = measure(n, "dask", 1, args.repeat)
        rate = n / r["total"]
        print(
            f"dask executor, local cluster of 2 workers, {n:,} partitions: {rate:,.0f} runs a second "
            f"(goal >= 500: {'met' if rate >= 500 else 'MISSED'}); overhead {overhead_us(r, n):,.1f} us a partition"
        )
    if args.dask_long:
        r = measure(100, "dask", 1, 1, sleep=1.0)
        off = (r["total"] - 50) / 50 * 100
        print(
            f"dask executor, 100 runs of 1 s on 2 workers: {r['total']:.1f} s, {off:+.1f}% of 50 s "
            f"(goal within 5%: {'met' if abs(off) <= 5 else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
