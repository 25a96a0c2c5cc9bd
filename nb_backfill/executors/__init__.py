"""Executors: run one job for one partition and report events, behind one small interface.

An executor has a `name`, `max_workers`, `submit(job, *requests)`, `withdraw(run_id) -> bool` (take
back a run not yet started), `cancel(run_id) -> bool` (True when the run had not started, so it
never will) and `shutdown()`; it reports through the `emit` callback it was made with. "thread"
runs in the kernel, "process" in worker processes, "dask" on a Dask cluster (an optional extra).
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from ..errors import InvalidOptionError, quoted_list
from ..jobs import Job
from .run import Emit, RunRequest

EXECUTORS = ("thread", "process", "dask")
# more would exhaust the machine, not speed a backfill up (dask: worker processes of a local cluster)
MAX_WORKERS = {"thread": 256, "process": 64, "dask": 64}


class Executor(Protocol):
    name: str
    max_workers: int

    def submit(self, job: Job, *requests: RunRequest) -> None: ...

    def withdraw(self, run_id: str) -> bool: ...

    def cancel(self, run_id: str) -> bool: ...

    def shutdown(self) -> None: ...


def default_workers(executor: str) -> int:
    """Threads overlap waiting on I/O, so more than cores; processes compute, so one per core."""
    cores = os.cpu_count() or 1
    return min(32, cores + 4) if executor == "thread" else cores


def check_executor(executor: str) -> str:
    if executor not in EXECUTORS:
        raise InvalidOptionError(f"executor must be one of {quoted_list(list(EXECUTORS))}, got {executor!r}")
    if executor == "dask":
        from .dask import check_available

        check_available()
    return executor


def make_executor(
    executor: str, max_workers: int, emit: Emit, address: str | None = None, client: Any = None
) -> Executor:
    """An executor of `max_workers` threads or processes (dask: a local cluster of that many worker
    processes, unless `address` or `client` names a cluster to use)."""
    if check_executor(executor) == "thread":
        from .thread import ThreadExecutor

        return ThreadExecutor(max_workers, emit)
    if executor == "dask":
        from .dask import DaskExecutor

        return DaskExecutor(max_workers, emit, address, client)
    from .process import ProcessExecutor

    return ProcessExecutor(max_workers, emit)


__all__ = ["EXECUTORS", "MAX_WORKERS", "Executor", "RunRequest", "default_workers", "make_executor"]
