"""The errors nb_backfill raises: one family, so every face (API, widget, magic, CLI) shows the same words."""

from __future__ import annotations


class NbBackfillError(Exception):
    """Base of every error nb_backfill raises on purpose."""


class DefinitionError(NbBackfillError, ValueError):
    """A partitions definition (or a job) was given a value it cannot use."""


class SelectionError(NbBackfillError, ValueError):
    """A user's choice of partitions cannot be turned into keys."""


class UnknownPartitionError(SelectionError, KeyError):
    """A key that is not a partition of the definition."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def quoted_list(values: list[str], limit: int = 5) -> str:
    """`'a', 'b', 'c'` with at most `limit` items and a count of the rest, for error messages."""
    shown = ", ".join(repr(v) for v in values[:limit])
    more = len(values) - limit
    return shown + (f" and {more} more" if more > 0 else "")


class InvalidOptionError(NbBackfillError, ValueError):
    """A launch option (coordinator, concurrency, executor, order...) has a value it cannot take."""


class UnknownBackfillError(NbBackfillError, LookupError):
    """No backfill with that id in the store."""


class BackfillStateError(NbBackfillError, RuntimeError):
    """The backfill cannot do that now (e.g. resume one that another process is running)."""
