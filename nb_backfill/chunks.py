"""A large backfill's runs, written by its engine in chunks after `launch_backfill` returned.

A launch writes the backfill and its first FIRST_CHUNK runs at once; the rest come from the
`Selection` stored with it: positions in the job's partition keys as they were at launch (the
current time fixed), so the process that resumes it writes the very same runs. Each chunk is
written whole or not at all, and only after the one before it (`Storage.write_more_runs`), so a
kill -9 at any moment loses nothing and writes nothing twice. A list of keys, a choice narrowed to
missing or failed partitions and dynamic partitions cannot be recomputed: their runs are all
written at launch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from .dynamic import DynamicPartitionsDefinition
from .errors import BackfillStateError
from .partitions import MultiPartitionsDefinition, PartitionsDefinition

FIRST_CHUNK = 4096  # runs written by the launch itself
MAX_CHUNK = 16384  # runs the engine writes in one turn (a turn stays short)


@dataclass(frozen=True)
class Selection:
    """Where a backfill's runs come from: `count` keys from position `first` of the definition's
    keys at `current_time`, in run order (reversed for order='desc'). `size`, `first_key` and
    `last_key` check that a resuming process sees the same keys."""

    first: int
    count: int
    descending: bool
    current_time: datetime
    size: int
    first_key: str
    last_key: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "current_time": self.current_time.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Selection:
        return cls(**{**data, "current_time": datetime.fromisoformat(data["current_time"])})

    def keys(self, all_keys: Sequence[str], start: int, count: int) -> list[str]:
        """The keys of runs `start` to `start + count` (in run order)."""
        if not self.descending:
            return list(all_keys[self.first + start : self.first + start + count])
        end = self.first + self.count - start
        return list(reversed(all_keys[max(self.first, end - count) : end]))

    def all_keys(self, definition: PartitionsDefinition, backfill_id: str) -> list[str]:
        """The definition's keys as at launch; an error if they are not the same any more."""
        keys = definition.get_partition_keys(self.current_time)
        last = self.first + self.count - 1
        if len(keys) != self.size or keys[self.first] != self.first_key or keys[last] != self.last_key:
            raise BackfillStateError(
                f"the partitions of backfill {backfill_id!r} changed since it was launched ({self.size} keys, "
                f"{self.first_key!r} to {self.last_key!r} chosen; now {len(keys)} keys): its remaining runs cannot be "
                f"written; launch a new backfill for them"
            )
        return keys


def recomputable(definition: PartitionsDefinition) -> bool:
    """Whether a definition's keys at a given time can be computed again later (not stored keys)."""
    if isinstance(definition, MultiPartitionsDefinition):
        return all(recomputable(d.partitions_def) for d in definition.partitions_defs)
    return not isinstance(definition, DynamicPartitionsDefinition)


def selection_of(
    definition: PartitionsDefinition, chosen: list[str], descending: bool, current_time: datetime
) -> Selection | None:
    """The Selection of `chosen` (keys in definition order, a contiguous run of the definition's
    keys at `current_time`), or None when its runs are few enough to write at launch."""
    if len(chosen) <= FIRST_CHUNK or not recomputable(definition):
        return None
    size = definition.get_num_partitions(current_time)
    first = 0 if len(chosen) == size else definition.get_partition_keys(current_time).index(chosen[0])
    return Selection(first, len(chosen), descending, current_time, size, chosen[0], chosen[-1])


def chunk_size(written: int, left: int) -> int:
    """The next chunk: as many runs as are written (so a growing grid re-reads little), within
    FIRST_CHUNK and MAX_CHUNK."""
    return min(left, MAX_CHUNK, max(FIRST_CHUNK, written))
