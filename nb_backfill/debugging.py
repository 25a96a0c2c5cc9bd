"""Debug a failed partition in the kernel: its run's context rebuilt, and its failing step run
again here, with the upstream outputs of the failed attempt, under the debugger."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from .errors import BackfillStateError, InvalidOptionError
from .jobs import Job, RunContext, StepDefinition, run_tags
from .outputs import FILES, OUTPUTS_DIR, OutputContext
from .statuses import STEP_SUCCEEDED, RunStatus, StepStatus
from .storage import BackfillRecord, RunRecord, Storage

DEBUG_LOGGER = logging.getLogger("nb_backfill.debug")  # a debugged step's context.log: shown in the cell


def context_for(job: Job, record: BackfillRecord, run: RunRecord) -> RunContext:
    """The context the run had: partition key (and time window), ids, attempt, tags."""
    tags = run_tags(job, record.tags, record.id, run.partition)
    return RunContext(job, run.partition, run.run_id, record.id, run.attempt, tags, DEBUG_LOGGER, threading.Event())


def failing_step(job: Job, storage: Storage, run: RunRecord) -> StepDefinition:
    """The step that failed in the run's attempt (else the first that did not succeed)."""
    if run.status != RunStatus.FAILURE:
        raise BackfillStateError(
            f"partition {run.partition!r} did not fail (its run is {run.status}): there is nothing to debug"
        )
    statuses = {step: status for _, step, status, *_ in storage.step_rows_of([run.run_id])}
    failed = [s for s in job.steps if statuses.get(s.name) == StepStatus.FAILURE]
    return failed[0] if failed else next(s for s in job.steps if statuses.get(s.name) not in STEP_SUCCEEDED)


def upstream_outputs(job: Job, storage: Storage, run: RunRecord, step: StepDefinition) -> dict[str, Any]:
    """The kept outputs of the step's upstream steps in the failed attempt."""
    outputs = {}
    for name in step.inputs:
        where = OutputContext(job.name, name, run.partition, run.run_id, run.attempt, str(storage.home / OUTPUTS_DIR))
        try:
            outputs[name] = (job.io or FILES).load(where)
        except FileNotFoundError:
            raise InvalidOptionError(
                f"step {step.name!r} of partition {run.partition!r} takes the output of step {name!r}, which was "
                f"not kept in attempt {run.attempt}: keep it (keep_outputs=True) and retry, or call the step by "
                f"hand with bf.context_for({run.partition!r})"
            ) from None
    return outputs


def debug(job: Job, storage: Storage, record: BackfillRecord, run: RunRecord, post_mortem: bool = True) -> Any:
    """Run the partition's failing step here, as its run did; on an error, open the debugger at the
    failing line (with `post_mortem`), then raise it. Returns the step's output if it now succeeds."""
    step = failing_step(job, storage, run)
    outputs = upstream_outputs(job, storage, run, step)
    context = context_for(job, record, run)
    try:
        return step.call(outputs, context)
    except Exception:
        if post_mortem:
            _post_mortem(sys.exc_info()[2])
        raise


def _post_mortem(traceback: Any) -> None:
    """The debugger at the failing frame: IPython's in a kernel (as `%debug`), else pdb's."""
    import pdb  # only when debugging: most processes never need it

    try:
        from IPython.core.debugger import Pdb
        from IPython.core.getipython import get_ipython
    except ImportError:
        pdb.post_mortem(traceback)
        return
    if get_ipython() is None:
        pdb.post_mortem(traceback)
        return
    debugger = Pdb()
    debugger.reset()
    debugger.interaction(None, traceback)
