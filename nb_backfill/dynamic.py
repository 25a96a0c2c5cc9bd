"""Dynamic partitions: keys added and removed at run time, kept in the store (Dagster's names)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime

from .errors import DefinitionError, quoted_list
from .partitions import INVALID_KEY_SUBSTRINGS, PartitionsDefinition
from .storage import Storage, get_instance


class DynamicPartitionsDefinition(PartitionsDefinition):
    """Partitions whose keys live in storage under `name`, in the order they were added."""

    def __init__(self, name: str, instance: Storage | str | os.PathLike[str] | None = None):
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError(f"a dynamic partitions definition needs a non-empty name, got {name!r}")
        self.name = name
        self._instance = instance

    @property
    def storage(self) -> Storage:
        return get_instance(self._instance)

    def get_partition_keys(self, current_time: datetime | None = None) -> list[str]:
        return self.storage.dynamic_partitions(self.name)

    def has_partition_key(self, partition_key: str, current_time: datetime | None = None) -> bool:
        return partition_key in set(self.get_partition_keys())

    def add_partitions(self, partition_keys: Sequence[str]) -> None:
        """Add keys (already present ones are kept where they are)."""
        if isinstance(partition_keys, str) or not isinstance(partition_keys, Sequence):
            raise DefinitionError(f"partition_keys must be a list of strings, got {partition_keys!r}")
        bad = [
            k for k in partition_keys if not isinstance(k, str) or not k or any(s in k for s in INVALID_KEY_SUBSTRINGS)
        ]
        if bad:
            raise DefinitionError(
                f"dynamic partition keys must be non-empty strings without '...' or control characters, got {quoted_list([repr(k) for k in bad])}"
            )
        self.storage.add_dynamic_partitions(self.name, list(dict.fromkeys(partition_keys)))

    def delete_partition(self, partition_key: str) -> None:
        if not self.storage.delete_dynamic_partition(self.name, partition_key):
            raise self.unknown_key_error(partition_key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DynamicPartitionsDefinition) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("dynamic", self.name))

    def __repr__(self) -> str:
        return f"DynamicPartitionsDefinition({self.name!r})"
