"""Launch options and their checks: how a backfill's runs start and where they run.

Every option is checked before anything is written; a bad one raises an InvalidOptionError that
names the value and what would be valid. The checked options are stored with the backfill, so a
resume in another process runs it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import InvalidOptionError, quoted_list
from .executors import MAX_WORKERS, check_executor, default_workers
from .jobs import Job, RetryPolicy, retry_policy
from .policy import PER_VALUE, TagLimit

COORDINATORS = ("default", "queued")
ORDERS = ("asc", "desc", "canary")  # canary: the likeliest to break first (see canary)


@dataclass(frozen=True)
class LaunchOptions:
    """The checked options of a backfill, as stored with it."""

    coordinator: str = "default"
    max_concurrent: int | None = None
    tag_concurrency_limits: tuple[dict[str, Any], ...] = ()
    executor: str = "thread"
    max_workers: int | None = None
    order: str = "asc"
    retries: dict[str, Any] | None = None
    dask_address: str | None = None  # the Dask scheduler runs go to (None: a local cluster, or the kernel's client)
    dask_dashboard: str | None = None  # where its Dask dashboard was, set at launch
    stop_on_canary_failure: bool = False  # order "canary": pause when a canary fails, before the rest

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tag_concurrency_limits"] = list(self.tag_concurrency_limits)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LaunchOptions:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "tag_concurrency_limits": tuple(known.get("tag_concurrency_limits", ()))})

    def with_max_concurrent(self, value: int) -> LaunchOptions:
        """These options with a new max_concurrent (which only the queued coordinator counts)."""
        return replace(self, coordinator="queued", max_concurrent=value)

    def retry(self, job: Job) -> RetryPolicy:
        return job.retry if self.retries is None else RetryPolicy(**self.retries)

    def workers(self, runs: int) -> int:
        """Threads or processes for `runs` runs: as asked, or the executor's default (at least
        max_concurrent), never more than there are runs."""
        wanted = (
            self.max_workers
            if self.max_workers is not None
            else max(default_workers(self.executor), self.max_concurrent or 0)
        )
        return max(1, min(wanted, runs))

    def executor_settings(self) -> dict[str, Any]:
        """What make_executor needs beyond the executor's name and size."""
        return {"address": self.dask_address} if self.executor == "dask" else {}

    def tag_limits(self) -> list[TagLimit]:
        return [
            TagLimit(
                d["key"],
                None if isinstance(d.get("value"), dict) else d.get("value"),
                d["limit"],
                isinstance(d.get("value"), dict),
            )
            for d in self.tag_concurrency_limits
        ]


def positive_int(name: str, value: Any, allow_none: bool = True) -> int | None:
    """`value` if it is a whole number >= 1 (or None when allowed), else an InvalidOptionError."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"{name} must be a whole number >= 1{' or None' if allow_none else ''}, got {value!r}")
    return value


def _one_of(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvalidOptionError(f"{name} must be one of {quoted_list(list(choices))}, got {value!r}")
    return value


def _tag_limits(limits: Any) -> tuple[dict[str, Any], ...]:
    if limits is None:
        return ()
    if isinstance(limits, (Mapping, str, bytes)) or not isinstance(limits, Sequence):
        raise InvalidOptionError(
            f"tag_concurrency_limits must be a list of {{'key', 'value', 'limit'}} dicts, got {limits!r}"
        )
    checked = []
    for item in limits:
        if (
            not isinstance(item, Mapping)
            or "key" not in item
            or "limit" not in item
            or set(item) - {"key", "value", "limit"}
        ):
            raise InvalidOptionError(
                f"each tag concurrency limit must be a dict with 'key', 'limit' and optionally 'value', got {item!r}"
            )
        value = item.get("value")
        per_value = isinstance(value, Mapping) and value == {PER_VALUE: True}
        if not isinstance(item["key"], str) or not (value is None or isinstance(value, str) or per_value):
            raise InvalidOptionError(
                f"a tag concurrency limit needs a string 'key' and a string 'value' (or {{{PER_VALUE!r}: True}}), got {item!r}"
            )
        limit = item["limit"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidOptionError(
                f"the 'limit' of tag {item['key']!r} must be a whole number >= 1 (a limit of 0 would never "
                f"start the runs it covers), got {limit!r}"
            )
        checked.append({"key": item["key"], "value": dict(value) if per_value else value, "limit": limit})
    return tuple(checked)


def check_options(
    coordinator: str = "default",
    max_concurrent: int | None = None,
    tag_concurrency_limits: Any = None,
    executor: str = "thread",
    max_workers: int | None = None,
    order: str = "asc",
    retries: int | RetryPolicy | None = None,
    dask_address: str | None = None,
    stop_on_canary_failure: bool = False,
) -> LaunchOptions:
    """Every launch option checked, or an InvalidOptionError naming the bad value and the valid ones."""
    _one_of("coordinator", coordinator, COORDINATORS)
    max_concurrent = positive_int("max_concurrent", max_concurrent)
    limits = _tag_limits(tag_concurrency_limits)
    if coordinator == "default" and (max_concurrent is not None or limits):
        raise InvalidOptionError(
            "max_concurrent and tag_concurrency_limits apply to the queued coordinator: pass coordinator='queued'"
        )
    check_executor(executor)
    if dask_address is not None and (executor != "dask" or not isinstance(dask_address, str) or not dask_address):
        raise InvalidOptionError(
            f"dask_address is the address of a Dask scheduler (such as 'tcp://host:8786') for executor='dask', "
            f"got {dask_address!r} with executor={executor!r}"
        )
    if stop_on_canary_failure and order != "canary":
        raise InvalidOptionError(f"stop_on_canary_failure is for order='canary', got order={order!r}")
    max_workers = positive_int("max_workers", max_workers)
    most = MAX_WORKERS[executor]
    # the workers started: max_workers if given, else enough for max_concurrent
    name, value = ("max_workers", max_workers) if max_workers is not None else ("max_concurrent", max_concurrent)
    if value is not None and value > most:
        raise InvalidOptionError(
            f"{name}={value:,} is more than the {executor} executor can run at once here: give at most {most}"
        )
    try:
        policy = None if retries is None else asdict(retry_policy(retries))
    except ValueError as error:
        raise InvalidOptionError(str(error)) from None
    return LaunchOptions(
        coordinator=coordinator,
        max_concurrent=max_concurrent,
        tag_concurrency_limits=limits,
        executor=executor,
        max_workers=max_workers,
        order=_one_of("order", order, ORDERS),
        retries=policy,
        dask_address=dask_address,
        stop_on_canary_failure=bool(stop_on_canary_failure),
    )
