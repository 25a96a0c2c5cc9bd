"""Start-up costs, next to the speed issue's goals (issue 9). Run by hand:

    python benchmarks/bench_startup.py [--repeat 11]

1. `import nb_backfill`: the import statement timed inside a fresh interpreter (goal < 60 ms;
   Dagster 1.13: 369 ms), and which heavy libraries it loaded (none of pandas and the widget's
   libraries should be: they load when first needed).
2. `nb-backfill job backfill -p five -f jobs.py --noprompt`, a no-op job of 5 daily partitions in a
   fresh store: the whole command, from starting the process to its exit (goal < 150 ms; Dagster
   1.13: 10.7 s).

Every figure is the median over --repeat fresh processes. Bytecode caches are on, as in an
installed package (they go to a temporary folder, so PYTHONDONTWRITEBYTECODE does not turn them off
and the repository is not written to); one untimed run first fills them. The bare interpreter's
start-up (`python -c pass`) is printed as the floor under both.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

IMPORT_GOAL_MS = 60.0
COMMAND_GOAL_MS = 150.0
DAGSTER_IMPORT_MS = 369.0
DAGSTER_COMMAND_MS = 10_700.0
HEAVY = ("pandas", "numpy", "pendulum", "anywidget", "ipywidgets", "traitlets", "IPython", "cloudpickle")

IMPORT_CHILD = """
import time
start = time.perf_counter()
import nb_backfill
took = time.perf_counter() - start
import sys
print(took, *sorted(m for m in {heavy!r} if m in sys.modules))
"""

COMMAND_CHILD = """
import sys
from nb_backfill.cli import main
code = main(["job", "backfill", "-p", "five", "-f", "jobs.py", "--noprompt"])
print(*sorted(m for m in {heavy!r} if m in sys.modules))
sys.exit(code)
"""

JOBS = textwrap.dedent(
    """
    import nb_backfill as nbb

    @nbb.job(partitions_def=nbb.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-06"))
    def five(context):
        pass
    """
)


def environment(cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache
    return env


def timed(command: list[str], env: dict[str, str], cwd: str | None = None) -> tuple[float, str]:
    """Wall-clock seconds from starting the process to its exit, and what it printed."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return took, done.stdout


def verdict(ms: float, goal: float) -> str:
    return "met" if ms < goal else "MISSED"


def spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.1f} ms (min {min(values):.1f}, max {max(values):.1f}, {len(values)} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=11, help="fresh processes a figure (default: %(default)s)")
    args = parser.parse_args()
    python = sys.executable
    script = str(Path(python).parent / "nb-backfill")
    command = [script] if os.path.exists(script) else [python, "-m", "nb_backfill"]
    with tempfile.TemporaryDirectory() as folder:
        env = environment(os.path.join(folder, "pycache"))
        Path(folder, "jobs.py").write_text(JOBS)

        def backfill(run: int) -> float:
            env["NB_BACKFILL_HOME"] = os.path.join(folder, f"store{run}")
            took, out = timed(
                [*command, "job", "backfill", "-p", "five", "-f", "jobs.py", "--noprompt"], env, cwd=folder
            )
            if "COMPLETED_SUCCESS" not in out or "Partitions (5):" not in out:
                raise SystemExit(f"unexpected output:\n{out}")
            return took * 1000

        child = IMPORT_CHILD.format(heavy=HEAVY)
        timed([python, "-c", child], env, cwd=folder)  # fill the bytecode caches
        backfill(-1)
        env["NB_BACKFILL_HOME"] = os.path.join(folder, "store-libraries")
        command_loaded = timed([python, "-c", COMMAND_CHILD.format(heavy=HEAVY)], env, cwd=folder)[1].splitlines()[-1]
        bare, imports, loaded, commands = [], [], set(), []
        for run in range(args.repeat):  # interleaved, so a busy moment of the machine touches every figure alike
            bare.append(timed([python, "-c", "pass"], env, cwd=folder)[0] * 1000)
            out = timed([python, "-c", child], env, cwd=folder)[1].split()
            imports.append(float(out[0]) * 1000)
            loaded.update(out[1:])
            commands.append(backfill(run))

    importing, command_ms = statistics.median(imports), statistics.median(commands)
    print(f"interpreter start-up alone (python -c pass): {spread(bare)}")
    print(
        f"import nb_backfill: {spread(imports)}; goal < {IMPORT_GOAL_MS:.0f} ms: {verdict(importing, IMPORT_GOAL_MS)} "
        f"(Dagster 1.13: {DAGSTER_IMPORT_MS:.0f} ms)"
    )
    print(f"    heavy libraries it loaded: {', '.join(sorted(loaded)) or 'none'} (of {', '.join(HEAVY)})")
    print(
        f"nb-backfill job backfill, 5 partitions, whole command: {spread(commands)}; goal < {COMMAND_GOAL_MS:.0f} ms: "
        f"{verdict(command_ms, COMMAND_GOAL_MS)} (Dagster 1.13: {DAGSTER_COMMAND_MS / 1000:.1f} s)"
    )
    print(f"    heavy libraries it loaded: {', '.join(command_loaded.split()) or 'none'}")


if __name__ == "__main__":
    main()
