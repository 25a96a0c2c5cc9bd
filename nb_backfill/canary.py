"""Canary order: the partitions most likely to break a job run first, so a bug shows before the
rest of a backfill is spent. They are the first and last chosen partitions, for time partitions
those whose window spans a DST change in the definition's time zone or ends a month, and a small
random sample (the same for the same keys: a launch can be told again); the others follow in
definition order."""

from __future__ import annotations

import random
from collections.abc import Sequence

from .partitions import PartitionsDefinition, TimeWindowPartitionsDefinition

SAMPLE = 10  # random partitions among the canaries (fewer when there are fewer)
MOST = 100  # canaries at most (the first and last always among them)


def _time_canaries(definition: TimeWindowPartitionsDefinition, keys: Sequence[str]) -> list[str]:
    """Keys whose window spans a DST change (its two ends at different UTC offsets) or ends a month."""
    found = []
    for key in keys:
        window = definition.time_window_for_partition_key(key)
        start, end = window.start, window.end
        month_end = end.day == 1 and (end.hour, end.minute) == (0, 0) and start.month != end.month
        if start.utcoffset() != end.utcoffset() or month_end:
            found.append(key)
    return found


def canaries(definition: PartitionsDefinition, keys: Sequence[str]) -> list[str]:
    """The canaries among `keys` (in definition order), at most MOST of them."""
    if not keys:
        return []
    chosen = {keys[0], keys[-1]}
    if isinstance(definition, TimeWindowPartitionsDefinition):
        chosen.update(_time_canaries(definition, keys)[: MOST - 2 - SAMPLE])
    rest = [k for k in keys if k not in chosen]
    chosen.update(random.Random(len(keys)).sample(rest, min(SAMPLE, len(rest))))
    return [k for k in keys if k in chosen]


def canary_first(definition: PartitionsDefinition, keys: Sequence[str]) -> tuple[list[str], int]:
    """`keys` with their canaries first; and how many canaries there are."""
    first = canaries(definition, keys)
    chosen = set(first)
    return first + [k for k in keys if k not in chosen], len(first)
