"""Job scripts run in processes of their own, shared by the tests that kill or race real
processes: each script takes (store, marks, mode, ...) and appends the partitions it executes to
`marks/{mode}-{pid}.txt`; a launch prints the backfill id first, then its final status."""

import os
import subprocess
import sys
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
