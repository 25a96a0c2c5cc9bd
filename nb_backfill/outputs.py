"""Kept outputs: a step's return value saved per partition and run attempt, so results come back
as data after the run (and re-execution can reuse them).

By default a value is kept when it is not None, can be pickled and takes at most KEEP_LIMIT bytes
(`keep_outputs=True` on a job or `keep_output=True` on a step insists: a value that cannot be kept
fails the step; False never keeps). The default IO writes files under the store's folder,
`outputs/<job>/<step>/<run id>-<attempt>.pkl` (`.parquet` for a pandas DataFrame when pyarrow is
installed), each written to a temporary name and renamed, so a killed process never leaves half a
file that a load would read. A job's `io=` object (`save(context, value)`, `load(context)`)
puts them anywhere else: a table, an object store.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote, unquote

KEEP_LIMIT = 100 * 2**20  # bytes a value kept by default may take (pickled); larger ones are not kept
OUTPUTS_DIR = "outputs"
_TEMPORARY = ".writing-"  # the prefix of a file being written (never read as an output)
_SUFFIXES = (".pkl", ".parquet")


class OutputContext(NamedTuple):
    """Which output: a step's value in one run attempt of one partition (what `io.save` and
    `io.load` are given)."""

    job_name: str
    step: str
    partition_key: str
    run_id: str
    attempt: int
    root: str | None  # the default IO's folder (the store's `outputs`), None when it has none


class OutputIO(Protocol):
    def save(self, context: OutputContext, value: Any) -> None: ...

    def load(self, context: OutputContext) -> Any: ...


class CannotKeep(Exception):
    """A value the IO cannot keep (not picklable, too large): the message says why."""


def _is_frame(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith("pandas") and type(value).__name__ == "DataFrame"


@functools.cache
def _parquet() -> bool:
    """Whether DataFrames can be kept as Parquet (looked up once: a lookup walks sys.path)."""
    return importlib.util.find_spec("pyarrow") is not None


class FileIO:
    """Outputs as files under the store's folder: pickle, or Parquet for DataFrames with pyarrow."""

    def __init__(self) -> None:
        self._made: set[Path] = set()  # folders known to exist: one mkdir each, not one a save

    def folder(self, context: OutputContext) -> Path:
        if context.root is None:
            raise CannotKeep("this run has no folder for outputs")
        return Path(context.root) / quote(context.job_name, safe="") / quote(context.step, safe="")

    def path(self, context: OutputContext) -> Path | None:
        """The file holding this output, if there is one."""
        base = self.folder(context) / f"{context.run_id}-{context.attempt}"
        return next((p for p in (base.with_suffix(s) for s in _SUFFIXES) if p.exists()), None)

    def save(self, context: OutputContext, value: Any, limit: int | None = None) -> None:
        folder = self.folder(context)
        if folder not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        name = f"{context.run_id}-{context.attempt}"
        if _is_frame(value) and _parquet():
            _write(folder / f"{name}.parquet", lambda path: value.to_parquet(path))
            return
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            raise CannotKeep(f"it cannot be pickled ({type(error).__name__}: {error})") from None
        if limit is not None and len(data) > limit:
            raise CannotKeep(f"it takes {len(data):,} bytes pickled, more than the {limit:,} kept by default")
        _write(folder / f"{name}.pkl", lambda path: _write_bytes(path, data))

    def load(self, context: OutputContext) -> Any:
        path = self.path(context)
        if path is None:
            raise FileNotFoundError(f"no kept output of step {context.step!r} for run {context.run_id}")
        if path.suffix == ".parquet":
            import pandas as pd

            return pd.read_parquet(path)
        with open(path, "rb") as file:
            return pickle.load(file)


def _write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, renamed into place once whole (its name
    is the output's own: one run attempt has one writer)."""
    temporary = path.with_name(f"{_TEMPORARY}{path.name}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _write_bytes(path: Path, data: bytes) -> None:
    """One file's bytes with the fewest system calls (outputs are written one a step)."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = memoryview(data)
        while left:
            left = left[os.write(handle, left) :]
    finally:
        os.close(handle)


FILES = FileIO()


class FsspecIO:
    """Outputs pickled under any fsspec URL (`s3://bucket/prefix`, `gcs://...`, `memory://...`, a
    local folder), as `<root>/<job>/<step>/<run id>-<attempt>.pkl`: `@nbb.job(..., io=FsspecIO(url))`.
    Needs fsspec (and the filesystem's own package, such as s3fs). A value is written whole, to
    a temporary name then moved, where the filesystem can move; object stores write whole objects."""

    def __init__(self, root: str, **storage_options: Any):
        import fsspec

        self.fs, self.root = fsspec.core.url_to_fs(root, **storage_options)
        self.root = self.root.rstrip("/")

    def path(self, context: OutputContext) -> str:
        name = f"{quote(context.job_name, safe='')}/{quote(context.step, safe='')}"
        return f"{self.root}/{name}/{context.run_id}-{context.attempt}.pkl"

    def save(self, context: OutputContext, value: Any) -> None:
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            raise CannotKeep(f"it cannot be pickled ({type(error).__name__}: {error})") from None
        path = self.path(context)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        temporary = path.rsplit("/", 1)[0] + f"/{_TEMPORARY}{path.rsplit('/', 1)[1]}"
        self.fs.pipe_file(temporary, data)
        self.fs.mv(temporary, path)

    def load(self, context: OutputContext) -> Any:
        path = self.path(context)
        if not self.fs.exists(path):
            raise FileNotFoundError(f"no kept output of step {context.step!r} for run {context.run_id} at {path}")
        return pickle.loads(self.fs.cat_file(path))


def keep(io: OutputIO | None, insist: bool, context: OutputContext, value: Any) -> str | None:
    """Save a step's value as the job asks; returns a note for the run's log when a value kept by
    default was not kept. With `insist`, a value that cannot be kept raises CannotKeep."""
    if value is None and not insist:
        return None
    try:
        if io is None:
            FILES.save(context, value, limit=None if insist else KEEP_LIMIT)
        else:
            io.save(context, value)
        return None
    except (CannotKeep, OSError) as error:  # a custom io's own errors fail the step
        if insist or (io is not None and not isinstance(error, CannotKeep)):
            raise CannotKeep(f"the output of step {context.step!r} could not be kept: {error}") from error
        return f"[nb_backfill did not keep the output of step {context.step!r}: {error}]\n"


def stored_files(root: Path, job_name: str) -> Iterator[tuple[str, str, int, Path]]:
    """(step, run id, attempt, path) of every output file the default IO holds for a job."""
    folder = root / quote(job_name, safe="")
    if not folder.is_dir():
        return
    for step_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(step_dir.iterdir()):
            if path.suffix not in _SUFFIXES or path.name.startswith("."):
                continue
            run_id, _, attempt = path.stem.rpartition("-")
            if run_id and attempt.isdigit():
                yield unquote(step_dir.name), run_id, int(attempt), path


def remove_stale_temporaries(root: Path, job_name: str, older_than: float = 3600.0) -> int:
    """Temporary files a killed writer left (never read as outputs), removed once old; how many."""
    folder = root / quote(job_name, safe="")
    removed = 0
    for path in folder.glob(f"*/{_TEMPORARY}*") if folder.is_dir() else ():
        if time.time() - path.stat().st_mtime > older_than:
            path.unlink(missing_ok=True)
            removed += 1
    return removed
