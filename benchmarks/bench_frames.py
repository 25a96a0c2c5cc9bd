"""The DataFrames of a large backfill, each figure beside issue 9's goal. Run by hand:

    python benchmarks/bench_frames.py [--sizes 100000 1000000] [--repeat 5] [--steps 1]

For each N a store is made by writing through the Storage API (no engine): one backfill of N
runs of a static job, each run started, its steps run and ended; every 50th run failed (an error
with non-ASCII text) and every 100th was then retried and succeeded (a second attempt), and the
backfill completed. Then runs_df, steps_df, partition_status and attempts_df are each timed in
fresh processes (pandas imported before the clock starts); figures are medians, beside the peak
RSS each frame added to its process, and the peak RSS of one process that builds all four in turn.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

FRAMES = ("runs_df", "steps_df", "partition_status", "attempts_df")
BATCH = 20_000  # runs written a transaction

COMMON = r"""
import sys
import nb_backfill as nbb

n, steps, home = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
parts = nbb.StaticPartitionsDefinition([f"p{i:07d}" for i in range(n)])
job = nbb.Job("bench", [nbb.step(lambda context: None, name=f"s{i}") for i in range(steps)], partitions_def=parts)
store = nbb.get_instance(home)
"""

BUILD = (
    COMMON
    + r"""
from nb_backfill.statuses import Event, BackfillStatus
from nb_backfill.storage import BackfillRecord, run_id_of

batch = int(sys.argv[4])
keys = parts.get_partition_keys()
now = 1_700_000_000.123456789
record = BackfillRecord(
    id="bench", job_name=job.name, status=BackfillStatus.REQUESTED, created=now, updated=now, ended=None,
    num_partitions=n, options={}, tags={}, partitions_def=repr(parts), owner=None, heartbeat=None,
)
store.create_backfill(record, ((run_id_of("bench", i), k, i) for i, k in enumerate(keys)))


def attempt(run_id, attempt, t, fails, i):
    yield Event(run_id, "STARTED", t, attempt)
    for s, name in enumerate(job.step_names):
        ts = t + (s + 1) / 7
        yield Event(run_id, "RUNNING", ts, attempt, name)
        failed = fails and s == len(job.step_names) - 1
        yield Event(run_id, "FAILURE" if failed else "SUCCESS", ts + 1 / 3, attempt, name, "step failed" if failed else None)
    if fails:
        yield Event(run_id, "FAILURE", t + 1 / 3 + steps, attempt, None, f"ValueError: partition {i} — naïve ✗ {i / 3}")
    else:
        yield Event(run_id, "SUCCESS", t + 1 / 3 + steps, attempt)


for start in range(0, n, batch):
    events = []
    for i in range(start, min(n, start + batch)):
        run_id, t = run_id_of("bench", i), now + i / 1000
        events += attempt(run_id, 1, t, i % 50 == 0, i)
        if i % 100 == 0:
            events.append(Event(run_id, "QUEUED", t + 10, 2))
            events += attempt(run_id, 2, t + 11, False, i)
    store.write_batch(events)
store.set_backfill_status("bench", BackfillStatus.COMPLETED_FAILED)
store.query("PRAGMA wal_checkpoint(TRUNCATE)")
"""
)

TIME = (
    COMMON
    + r"""
import json, resource, time
import pandas  # noqa: F401  (its import is start-up's figure, not the frames')

bf = nbb.get_backfill("bench", job=job, instance=store)
reads = {
    "runs_df": bf.runs_df,
    "steps_df": bf.steps_df,
    "partition_status": lambda: nbb.partition_status(job, instance=store),
    "attempts_df": bf.attempts_df,
}
store.query("SELECT COUNT(*) FROM runs")  # the store opened, its schema checked
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
figures = {}
for name in sys.argv[4].split(","):
    t = time.perf_counter()
    frame = reads[name]()
    figures[name] = time.perf_counter() - t
    del frame
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({**figures, "added_mb": peak - before, "peak_mb": peak}))
"""
)


def child(script: str, *args: object) -> str:
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    return out.stdout


def measure(n: int, steps: int, home: str, frames: list[str], repeat: int) -> dict:
    """Medians over `repeat` fresh processes, each building `frames` in turn."""
    results = [json.loads(child(TIME, n, steps, home, ",".join(frames))) for _ in range(repeat)]
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def beside(value: float, goal: float, unit: str) -> str:
    return f"{value:,.3f} {unit} (goal < {goal:,g} {unit}: {'met' if value < goal else 'MISSED'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1, help="steps of the job")
    args = parser.parse_args()
    print(f"median of {args.repeat} fresh processes each; a {args.steps}-step job\n")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as home:
            start = time.perf_counter()
            child(BUILD, n, args.steps, home, BATCH)
            print(f"{n:,} runs (store made in {time.perf_counter() - start:.1f} s):")
            for name in FRAMES:
                r = measure(n, args.steps, home, [name], args.repeat)
                print(f"  {name:<17} {beside(r[name], 0.4, 's')}, peak RSS added {r['added_mb']:,.0f} MB")
            r = measure(n, args.steps, home, list(FRAMES), args.repeat)
            print(
                f"  all four in turn in one process: peak RSS {r['peak_mb']:,.0f} MB (the frames added "
                f"{r['added_mb']:,.0f} MB to nb_backfill, pandas and the job's {n:,} keys)\n"
            )


if __name__ == "__main__":
    main()
