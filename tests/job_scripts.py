"""Job scripts run in processes of their own, shared by the tests that kill or race real
processes: each script takes (store, marks, mode, ...) and appends the partitions it executes to
`marks/{mode}-{pid}.txt`; a launch prints the backfill id first, then its final status."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def start(script: Path, store: Path, marks: Path, mode: str, *args: str, **env: str) -> subprocess.Popen:
    """The script in a process of its own, its stdout (and stderr) piped as text."""
    return subprocess.Popen(
        [sys.executable, str(script), str(store), str(marks), mode, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def finish(script: Path, store: Path, marks: Path, mode: str, *args: str) -> subprocess.CompletedProcess:
    """The script run to its end (two minutes at most)."""
    return subprocess.run(
        [sys.executable, str(script), str(store), str(marks), mode, *args], capture_output=True, text=True, timeout=120
    )


def executed(marks: Path, mode: str) -> list[str]:
    """The partitions the scripts of `mode` executed, each time they did."""
    return [line for f in marks.glob(f"{mode}-*.txt") for line in f.read_text().split()]


def kill_after(process: subprocess.Popen, marks: Path, count: int, timeout: float = 60.0) -> str:
    """The backfill id a launching script printed; then SIGKILL it once it executed `count`
    partitions (or after `timeout` seconds)."""
    backfill_id = process.stdout.readline().strip()
    deadline = time.time() + timeout
    while len(executed(marks, "launch")) < count and time.time() < deadline:
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return backfill_id
