"""The one parser from a user's choice of partitions to keys, shared by the API, widget, magic and CLI.

A choice is everything, a list of keys (a Python list, or a comma-separated string where a key with
a comma is quoted or backslash-escaped), or an inclusive from-to range, optionally narrowed to the
missing or failed partitions. Every face builds one `Choice`; keys come back in definition order.
Every mistake raises a SelectionError that names the bad value and what would be valid.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import SelectionError, UnknownPartitionError, quoted_list
from .partitions import PartitionKeyRange, PartitionsDefinition

CHOICES = "a list of partitions, a from/to range, or all"


def split_keys(text: str) -> list[str]:
    """Keys from a comma-separated string: `a,b`, `"a,1",b` or `a\\,1,b`; blanks around keys dropped."""
    if not isinstance(text, str):
        raise SelectionError(f"partitions must be a string or a list of strings, got {text!r}")
    if not text.strip():
        return []
    try:
        row = next(csv.reader([text], skipinitialspace=True, escapechar="\\", strict=True))
    except csv.Error as error:
        raise SelectionError(
            f"cannot split the partitions {text!r} into keys ({error}): separate keys with commas, and close "
            f'every quote ("a,1",b) or escape a comma in a key with a backslash (a\\,1,b)'
        ) from None
    return [key.strip() for key in row if key.strip()]


def _check_text(key: str) -> str:
    """A key that can be stored and shown: no lone surrogates (bytes decoded with surrogateescape)."""
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise SelectionError(
                f"partition key {key!r} is not valid text: it holds bytes that are not UTF-8 (a lone surrogate, as "
                f"os.listdir returns for such file names); decode the name with the right encoding first"
            ) from None
    return key


def _as_key_list(partitions: str | Sequence[str]) -> list[str]:
    if isinstance(partitions, str):
        return [_check_text(k) for k in split_keys(partitions)]
    if isinstance(partitions, (bytes, bytearray)) or not isinstance(partitions, (Sequence, set, frozenset)):
        raise SelectionError(
            f"partitions must be a string or a list of strings, got {partitions!r} ({type(partitions).__name__})"
        )
    keys = list(partitions)
    not_str = [k for k in keys if not isinstance(k, str)]
    if not_str:
        raise SelectionError(f"partition keys must be strings, got {quoted_list([repr(k) for k in not_str])}")
    return [_check_text(k) for k in keys]


def _chosen(partitions: object, from_: object, to: object, all: bool) -> list[str]:
    chosen = []
    if partitions is not None:
        chosen.append("a list of partitions")
    if from_ is not None or to is not None:
        chosen.append("a from/to range")
    if all:
        chosen.append("all")
    return chosen


def select_partitions(
    partitions_def: PartitionsDefinition,
    partitions: str | Sequence[str] | None = None,
    *,
    from_: str | None = None,
    to: str | None = None,
    all: bool = False,
    current_time: datetime | None = None,
) -> list[str]:
    """The keys a user chose, in definition order, without duplicates.

    Exactly one of `partitions`, a range (`from_` and/or `to`; a missing end means the first or last
    partition) or `all=True`. Raises SelectionError for anything else.
    """
    if not isinstance(partitions_def, PartitionsDefinition):
        raise SelectionError(f"expected a partitions definition, got {partitions_def!r}")
    chosen = _chosen(partitions, from_, to, all)
    if len(chosen) > 1:
        raise SelectionError(f"choose one selection: {CHOICES}; got {' and '.join(chosen)}")
    if not chosen:
        raise SelectionError(f"no partitions selected: choose {CHOICES}")

    if all:
        keys = partitions_def.get_partition_keys(current_time)
        if not keys:
            raise SelectionError("the selection is empty: the definition has no partitions yet")
        return keys
    if partitions is not None:
        return _select_list(partitions_def, _as_key_list(partitions), current_time)
    return _select_range(partitions_def, from_, to, current_time)


def _select_list(definition: PartitionsDefinition, wanted: list[str], current_time: datetime | None) -> list[str]:
    if not wanted:
        raise SelectionError("the selection is empty: the list of partitions has no keys")
    keys = definition.get_partition_keys(current_time)
    position = {key: i for i, key in enumerate(keys)}
    unknown = [key for key in dict.fromkeys(wanted) if key not in position]
    if unknown:
        error = definition.unknown_key_error(unknown[0], current_time)
        others = f" (also unknown: {quoted_list(unknown[1:])})" if len(unknown) > 1 else ""
        raise UnknownPartitionError(f"{error}{others}")
    return [keys[i] for i in sorted({position[key] for key in wanted})]


def _select_range(
    definition: PartitionsDefinition, from_: str | None, to: str | None, current_time: datetime | None
) -> list[str]:
    for name, value in (("from", from_), ("to", to)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise SelectionError(f"{name} must be a partition key, got {value!r}")
        if value is not None:
            _check_text(value)
    start = from_.strip() if from_ is not None else definition.get_first_partition_key(current_time)
    end = to.strip() if to is not None else definition.get_last_partition_key(current_time)
    if start is None or end is None:
        raise SelectionError("the selection is empty: the definition has no partitions yet")
    keys = definition.get_partition_keys_in_range(PartitionKeyRange(start, end), current_time)
    if not keys:
        raise SelectionError(
            f"from {start!r} comes after to {end!r}: ranges are inclusive and run in definition order, "
            f"so swap them (from {end!r} to {start!r})"
        )
    return keys


@dataclass(frozen=True)
class Choice:
    """A person's choice of partitions, the same value from every face: a list, a from/to range or
    all, optionally only the missing (never run, or latest run failed) or the failed ones. Missing
    or failed alone means "of all partitions"."""

    partitions: str | Sequence[str] | None = None
    from_: str | None = None
    to: str | None = None
    all: bool = False
    missing: bool = False
    failed: bool = False
    stale: bool = False  # only partitions that succeeded with older code

    def __post_init__(self) -> None:
        if self.missing and self.failed:
            raise SelectionError(
                "choose missing_only or failed_only, not both (missing_only already includes failed partitions)"
            )
        if self.stale and (self.missing or self.failed):
            raise SelectionError("choose stale_only or missing_only/failed_only, not both: each narrows the choice")

    @property
    def narrows(self) -> bool:
        """Whether only some of the chosen keys launch (missing, failed or stale ones): read from the store."""
        return self.missing or self.failed or self.stale

    def keys(self, definition: PartitionsDefinition, current_time: datetime | None = None) -> list[str]:
        """The chosen keys in definition order (before narrowing to missing or failed ones)."""
        narrowing_all = self.narrows and self.partitions is None and self.from_ is None and self.to is None
        return select_partitions(
            definition,
            self.partitions,
            from_=self.from_,
            to=self.to,
            all=self.all or narrowing_all,
            current_time=current_time,
        )

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> Choice:
        """The widget's selector: mode all | range | list | missing | failed, with from, to and keys."""
        mode = form.get("mode", "all")
        if mode == "range":
            return cls(from_=form.get("from") or None, to=form.get("to") or None)
        if mode == "list":
            return cls(partitions=form.get("keys", ""))
        if mode in ("missing", "failed", "stale"):
            return cls(missing=mode == "missing", failed=mode == "failed", stale=mode == "stale")
        if mode != "all":
            raise SelectionError(
                f"the selector's mode must be one of 'all', 'range', 'list', 'missing', 'failed', 'stale', got {mode!r}"
            )
        return cls(all=True)
