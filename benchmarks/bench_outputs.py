"""What keeping outputs costs, beside issue 12's goals. Run by hand:

    python benchmarks/bench_outputs.py [--repeat 5] [--runs 5000] [--results 10000]

A run keeping a small output (a dict, a 1,000-row DataFrame) against the same run keeping
nothing (goal: < 300 us more a run), and `bf.results()` of 10,000 small outputs (goal: < 1 s);
each measured in a fresh process with a fresh store, medians printed.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
import nb_backfill as nbb

n, kind, home = int(sys.argv[1]), sys.argv[2], sys.argv[3]
parts = nbb.StaticPartitionsDefinition([f"p{i:06d}" for i in range(n)])
import pandas as pd
frame = pd.DataFrame({"n": range(1000), "x": [0.5] * 1000})

def value(context):
    if kind == "dict":
        return {"partition": context.partition_key, "rows": 1000, "ok": True}
    if kind == "frame":
        return frame
    return 1

job = nbb.job(partitions_def=parts, name=f"out_{kind}", keep_outputs=kind != "none")(value)
store = nbb.get_instance(home)
start = time.perf_counter()
bf = nbb.launch_backfill(job, all=True, instance=store)
assert bf.wait(timeout=600) == "COMPLETED_SUCCESS"
total = time.perf_counter() - start
start = time.perf_counter()
got = bf.results() if kind != "none" else {}
read = time.perf_counter() - start
print(json.dumps({"total": total, "results": read, "count": len(got)}))
"""


def measure(n: int, kind: str, repeat: int) -> dict:
    results = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as home:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(n), kind, home], capture_output=True, text=True, check=True
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--results", type=int, default=10_000)
    args = parser.parse_args()
    print(f"median of {args.repeat} fresh processes each; thread executor")
    base = measure(args.runs, "none", args.repeat)
    for kind, what in (("dict", "a small dict"), ("frame", "a 1,000-row DataFrame")):
        r = measure(args.runs, kind, args.repeat)
        extra = (r["total"] - base["total"]) / args.runs * 1e6
        print(f"keeping {what}: {extra:,.0f} us more a run (goal < 300 us: {'met' if extra < 300 else 'MISSED'})")
    r = measure(args.results, "dict", max(1, args.repeat // 2))
    assert r["count"] == args.results
    print(
        f"bf.results() of {args.results:,} small outputs: {r['results']:.2f} s "
        f"(goal < 1 s: {'met' if r['results'] < 1 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
