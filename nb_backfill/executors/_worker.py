"""The worker-process side of the process executor: receive runs over a pipe, execute them, send
back every event.

Messages from the parent: `(job_id, payload, run_id, partition_key, attempt, backfill_id, tags)`,
where `payload` is the cloudpickled Job the first time this worker sees `job_id`, else None.
Messages to the parent: None once the worker is up (a hello), then the fields of each `Event`,
as a tuple.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait

import cloudpickle

from ..jobs import Job
from ..storage import Event
from .run import RunRequest, execute_run, install_capture


def _exit_with_parent() -> None:
    """Exit as soon as the parent process is gone, even in the middle of a long step."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        os._exit(0)


def _load(payload: bytes) -> Job | str:
    """The job, or the error text that fails every run of it when it cannot be unpickled here."""
    try:
        return cloudpickle.loads(payload)
    except Exception as error:
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        return f"the job cannot be loaded in a worker process: {detail}"


def main(conn: Connection) -> None:
    """Serve runs until the parent closes the pipe."""
    # Jupyter interrupts the kernel's whole process group: a cell's Ctrl-C must not kill runs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, name="nb_backfill-parent-watch", daemon=True).start()
    install_capture()
    jobs: dict[int, Job | str] = {}
    send = conn.send
    send(None)

    def emit(event: Event) -> None:
        send((event.run_id, event.status, event.ts, event.attempt, event.step, event.message))

    while True:
        try:
            job_id, payload, run_id, partition_key, attempt, backfill_id, tags = conn.recv()
        except EOFError:
            return
        if payload is not None:
            jobs[job_id] = _load(payload)
        job = jobs[job_id]
        if isinstance(job, str):
            send((run_id, "FAILURE", time.time(), attempt, None, job))
            continue
        execute_run(job, RunRequest(run_id, partition_key, attempt, backfill_id, tags), emit, threading.Event())
