"""Jobs and steps: `@job` for a one-step job, `@step` and `Job` for a small DAG of steps.

A step's parameters name the upstream steps whose return values it receives, plus optionally
`context`. Definitions are checked when they are made: unknown upstream names, cycles, duplicate
names and things that are not callable are refused with a message that names them.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .codeversion import version_of
from .errors import DefinitionError, NbBackfillError, quoted_list
from .partitions import MultiPartitionsDefinition, PartitionsDefinition, TimeWindow, TimeWindowPartitionsDefinition

BACKOFFS = ("linear", "exponential")


class RunCanceled(NbBackfillError):
    """Raised inside a run by `context.check_canceled()` once the run has been canceled."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often to retry a failed step or run, and how long to wait before each retry (Dagster's names)."""

    max_retries: int = 1
    delay: float = 0.0
    backoff: str = "linear"

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise DefinitionError(f"max_retries must be a whole number >= 0, got {self.max_retries!r}")
        if isinstance(self.delay, bool) or not isinstance(self.delay, (int, float)) or self.delay < 0:
            raise DefinitionError(f"retry delay must be a number of seconds >= 0, got {self.delay!r}")
        if self.backoff not in BACKOFFS:
            raise DefinitionError(f"backoff must be one of {quoted_list(list(BACKOFFS))}, got {self.backoff!r}")

    def wait_before(self, attempt: int) -> float:
        """Seconds to wait before `attempt` (2 = the first retry)."""
        n = max(attempt - 1, 1)
        return self.delay * (2 ** (n - 1) if self.backoff == "exponential" else n)


def retry_policy(retries: int | RetryPolicy | None) -> RetryPolicy:
    """A RetryPolicy from what a user wrote: a number of retries, a policy, or None."""
    if retries is None:
        return RetryPolicy(max_retries=0)
    if isinstance(retries, RetryPolicy):
        return retries
    if isinstance(retries, bool) or not isinstance(retries, int):
        raise DefinitionError(f"retries must be a whole number >= 0 or a RetryPolicy, got {retries!r}")
    return RetryPolicy(max_retries=retries)


CONTEXT = "context"


@dataclass(frozen=True)
class StepDefinition:
    """One function of a job. Its parameters name the upstream steps whose outputs it takes (in
    any order, positional or keyword-only), plus optionally `context`; a parameter with a default
    that names no step keeps its default."""

    name: str
    fn: Callable[..., Any]
    inputs: tuple[str, ...]  # upstream steps (until a Job resolves them: every parameter but context)
    takes_context: bool
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_retries=0))
    parameters: tuple[inspect.Parameter, ...] = ()
    positional: tuple[str, ...] = ()  # how a call passes them, set when a Job resolves the step
    keyword: tuple[str, ...] = ()
    keep_output: bool | None = None  # keep its value (see outputs): None as its job says
    code_version: str | None = None  # its version as given; else a hash of its code (see codeversion)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def call(self, outputs: Mapping[str, Any], context: Any) -> Any:
        """Call the step with its upstream outputs and context, each under its parameter's name."""
        args = [context if name == CONTEXT else outputs[name] for name in self.positional]
        if not self.keyword:
            return self.fn(*args)
        kwargs = {name: context if name == CONTEXT else outputs[name] for name in self.keyword}
        return self.fn(*args, **kwargs)

    def resolved(self, steps: Sequence[str], job_name: str) -> StepDefinition:
        """This step with its inputs among `steps` and its call plan; an error for a parameter it
        could not be given."""
        inputs, positional, keyword, unknown = [], [], [], []
        skipped_positional = None
        for p in self.parameters:
            wanted = p.name == CONTEXT or p.name in steps
            if not wanted and p.default is p.empty:
                unknown.append(p.name)
                continue
            if p.name != CONTEXT and wanted:
                inputs.append(p.name)
            if p.kind is p.POSITIONAL_ONLY:
                if not wanted:
                    skipped_positional = p.name
                elif skipped_positional is not None:
                    raise DefinitionError(
                        f"job {job_name!r}: step {self.name!r} takes {p.name!r} positionally after {skipped_positional!r}, "
                        f"which names no step and keeps its default: reorder its parameters or make them keyword parameters"
                    )
                else:
                    positional.append(p.name)
            elif not wanted:
                skipped_positional = skipped_positional or p.name
            elif p.kind is p.POSITIONAL_OR_KEYWORD and skipped_positional is None:
                positional.append(p.name)  # by position while none before it was skipped: a cheaper call
            else:
                keyword.append(p.name)
        if unknown:
            raise DefinitionError(
                f"job {job_name!r}: step {self.name!r} takes {quoted_list(unknown)}, which "
                f"{'is not a step' if len(unknown) == 1 else 'are not steps'}; its parameters must name "
                f"upstream steps ({quoted_list(list(steps))}), be 'context', or have a default"
            )
        return replace(self, inputs=tuple(inputs), positional=tuple(positional), keyword=tuple(keyword))


def _signature(fn: Callable[..., Any], what: str) -> inspect.Signature:
    if not callable(fn):
        raise DefinitionError(f"{what} must be a function, got {fn!r} ({type(fn).__name__})")
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        raise DefinitionError(f"cannot read the parameters of {what} {fn!r}") from None


def step(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    retries: int | RetryPolicy | None = None,
    keep_output: bool | None = None,
    code_version: str | None = None,
) -> Any:
    """Make a function a step; use as `@step` or `@step(name=..., retries=..., keep_output=...,
    code_version=...)`."""

    def wrap(f: Callable[..., Any]) -> StepDefinition:
        signature = _signature(f, "a step")
        step_name = name or getattr(f, "__name__", None)
        if not isinstance(step_name, str) or not step_name.isidentifier():
            raise DefinitionError(f"a step needs a name that is a Python identifier, got {step_name!r}")
        params = tuple(p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        return StepDefinition(
            step_name,
            f,
            tuple(p.name for p in params if p.name != CONTEXT),
            any(p.name == CONTEXT for p in params),
            retry_policy(retries),
            params,
            keep_output=_keep_flag(keep_output, f"step {step_name!r} keep_output"),
            code_version=_version(code_version, f"step {step_name!r}"),
        )

    return wrap if fn is None else wrap(fn)


def _keep_flag(value: Any, what: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise DefinitionError(f"{what} must be True, False or None (keep when it can), got {value!r}")
    return value


def _version(value: Any, what: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise DefinitionError(f"{what}: code_version must be a non-empty string such as 'v2', got {value!r}")
    return value


def _check_io(io: Any, job_name: str) -> Any:
    """A job's output IO: an object with save(context, value) and load(context), or None."""
    if io is not None and not (callable(getattr(io, "save", None)) and callable(getattr(io, "load", None))):
        raise DefinitionError(
            f"job {job_name!r}: io must have save(context, value) and load(context) methods, got {io!r}"
        )
    return io


def _topological_order(steps: Sequence[StepDefinition], job_name: str) -> tuple[StepDefinition, ...]:
    by_name = {s.name: s for s in steps}
    ordered: list[StepDefinition] = []
    state: dict[str, str] = {}

    def visit(s: StepDefinition, path: list[str]) -> None:
        if state.get(s.name) == "done":
            return
        if state.get(s.name) == "visiting":
            cycle = path[path.index(s.name) :] + [s.name]
            raise DefinitionError(f"job {job_name!r} has a cycle: {' -> '.join(cycle)}")
        state[s.name] = "visiting"
        for upstream in s.inputs:
            visit(by_name[upstream], path + [s.name])
        state[s.name] = "done"
        ordered.append(s)

    for s in steps:
        visit(s, [])
    return tuple(ordered)


class Job:
    """A partitioned job: steps in dependency order over a partitions definition."""

    def __init__(
        self,
        name: str,
        steps: Sequence[StepDefinition | Callable[..., Any]],
        partitions_def: PartitionsDefinition,
        tags: Mapping[str, str] | None = None,
        retries: int | RetryPolicy | None = 0,
        description: str | None = None,
        keep_outputs: bool | None = None,
        io: Any = None,
    ):
        """`keep_outputs`: keep each step's value (None: when it can be, see outputs; a step's
        `keep_output` wins); `io`: where values are kept, if not in files beside the store."""
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError(f"a job needs a non-empty name, got {name!r}")
        if not isinstance(partitions_def, PartitionsDefinition):
            raise DefinitionError(
                f"job {name!r}: partitions_def must be a partitions definition such as "
                f"DailyPartitionsDefinition(...), got {partitions_def!r}"
            )
        if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
            raise DefinitionError(f"job {name!r}: steps must be a non-empty list of steps, got {steps!r}")
        defs = [s if isinstance(s, StepDefinition) else step(s) for s in steps]
        names = [s.name for s in defs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DefinitionError(f"job {name!r}: step names must be unique; duplicated: {quoted_list(duplicates)}")
        defs = [s.resolved(names, name) for s in defs]
        self.name = name
        self.partitions_def = partitions_def
        self.steps = _topological_order(defs, name)
        self.tags = check_tags(tags, f"job {name!r} tags")
        self.retry = retry_policy(retries)
        self.description = description
        self.keep_outputs = _keep_flag(keep_outputs, f"job {name!r} keep_outputs")
        self.io = _check_io(io, name)
        _JOBS[name] = self

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def code_versions(self) -> dict[str, str]:
        """Each step's code version now (given, or a hash of its code as it is now defined)."""
        return {s.name: version_of(s.fn, s.code_version) for s in self.steps}

    def __repr__(self) -> str:
        return f"Job({self.name!r}, steps={self.step_names}, partitions_def={self.partitions_def!r})"


_JOBS: dict[str, Job] = {}


def get_job(name: str) -> Job | None:
    """The job most recently defined with this name in this process (re-running a cell redefines it)."""
    return _JOBS.get(name)


BACKFILL_TAG = "nb_backfill/backfill"
PARTITION_TAG = "nb_backfill/partition"
TAG_FORMS = 'key=value or JSON such as \'{"key": "value"}\''


def check_tags(tags: Mapping[str, str] | None, what: str) -> dict[str, str]:
    """Tags as given, if they map strings to strings; a DefinitionError naming the bad ones otherwise."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise DefinitionError(f"{what} must be a dict of strings, got {tags!r}")
    bad = [f"{k!r}: {v!r}" for k, v in tags.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise DefinitionError(f"{what} must map strings to strings, got {', '.join(bad)}")
    return dict(tags)


def parse_tags(text: str) -> dict[str, str]:
    """Tags a person typed (`--tags`, the widget): Dagster's JSON object or one `key=value`."""
    text = text.strip()
    if text.startswith("{"):
        try:
            tags = json.loads(text)
        except json.JSONDecodeError as error:
            raise DefinitionError(
                f"{text!r} is not a valid JSON object ({error.msg} at column {error.colno}); give {TAG_FORMS}"
            ) from None
        return check_tags(tags, "tags")
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise DefinitionError(f"expected {TAG_FORMS}, got {text!r}")
    return {key.strip(): value}


def run_tags(job: Job, backfill_tags: Mapping[str, str], backfill_id: str, partition: str) -> dict[str, str]:
    """A run's tags: the job's, the backfill's, and which backfill and partition it is (per
    dimension too, for multi partitions), as Dagster tags its backfill runs."""
    tags = {**job.tags, **backfill_tags, BACKFILL_TAG: backfill_id, PARTITION_TAG: partition}
    definition = job.partitions_def
    if isinstance(definition, MultiPartitionsDefinition):
        parts = definition.get_partition_key_from_str(partition).keys_by_dimension
        tags.update({f"{PARTITION_TAG}/{name}": key for name, key in parts.items()})
    return tags


def job(
    fn: Callable[..., Any] | None = None,
    *,
    partitions_def: PartitionsDefinition,
    name: str | None = None,
    tags: Mapping[str, str] | None = None,
    retries: int | RetryPolicy | None = 0,
    keep_outputs: bool | None = None,
    io: Any = None,
    code_version: str | None = None,
) -> Any:
    """Make a function taking `context` a one-step partitioned job: `@job(partitions_def=daily)`."""

    def wrap(f: Callable[..., Any]) -> Job:
        single = step(f, name=name if getattr(f, "__name__", "") == "<lambda>" else None, code_version=code_version)
        return Job(
            name or single.name,
            [single],
            partitions_def,
            tags=tags,
            retries=retries,
            description=f.__doc__,
            keep_outputs=keep_outputs,
            io=io,
        )

    return wrap if fn is None else wrap(fn)


class RunContext:
    """What a step sees of its run: the partition, ids, attempt, tags, a logger and cancellation."""

    def __init__(
        self,
        job: Job,
        partition_key: str,
        run_id: str,
        backfill_id: str | None,
        attempt: int,
        tags: Mapping[str, str],
        log: logging.Logger | logging.LoggerAdapter,
        canceled: threading.Event,
    ):
        self.job = job
        self.partition_key = partition_key
        self.run_id = run_id
        self.backfill_id = backfill_id
        self.attempt = attempt
        self.tags = dict(tags)
        self.log = log
        self._canceled = canceled

    @property
    def job_name(self) -> str:
        return self.job.name

    @property
    def partition_time_window(self) -> TimeWindow:
        """The [start, end) of the partition; for multi partitions, of its time dimension."""
        definition = self.job.partitions_def
        if isinstance(definition, (TimeWindowPartitionsDefinition, MultiPartitionsDefinition)):
            return definition.time_window_for_partition_key(self.partition_key)
        raise DefinitionError(f"job {self.job.name!r} is not partitioned by time: it has no partition_time_window")

    @property
    def partition_keys_by_dimension(self) -> dict[str, str]:
        """Per-dimension keys of a multi partition, e.g. {'date': '2024-01-01', 'region': 'eu'}."""
        definition = self.job.partitions_def
        if not isinstance(definition, MultiPartitionsDefinition):
            raise DefinitionError(f"job {self.job.name!r} is not multi-partitioned")
        return dict(definition.get_partition_key_from_str(self.partition_key).keys_by_dimension)

    @property
    def is_canceled(self) -> bool:
        return self._canceled.is_set()

    def check_canceled(self) -> None:
        """Stop the run here if its backfill was canceled. A thread cannot be killed from outside,
        so a step running on the thread executor stops only where it calls this (between steps
        the run stops by itself); call it now and then in long loops."""
        if self._canceled.is_set():
            raise RunCanceled(f"run {self.run_id} was canceled")
