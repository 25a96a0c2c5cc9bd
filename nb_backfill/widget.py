"""The backfill widget: pick partitions, launch, and watch a partitions x steps grid live.

The widget follows the store's change feed (`feed.Feed`), never the engine: whatever launched or
changed a backfill (this kernel, another kernel, the terminal, a process that died) shows in
every open widget. Each feed tick, the widget applies the changes to its arrays, computes the
cells of the runs that changed with `grid.cell_codes` (the same function that draws a whole
backfill), and pushes only the cells that differ as one binary message; so bytes sent grow with
the cells that changed, not with the grid. The full state stays in the model's traits (one
status byte per cell), so a re-displayed or reloaded view shows the current state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets

from . import frames
from .backfills import Backfill, _record, control, get_backfill, launch, plan, process_of, stopped_note
from .dynamic import DynamicPartitionsDefinition
from .errors import InvalidOptionError, NbBackfillError, UnknownPartitionError
from .feed import Feed
from .grid import HISTORY_CODES, MISSING, RUN_NUMBER, STEP_NUMBER, cell_codes, describe, layout_for
from .jobs import Job, parse_tags
from .options import check_options, positive_int
from .partitions import MultiPartitionsDefinition
from .progress import Progress, Tracker
from .selection import Choice
from .statuses import BACKFILL_DONE, CELLS, BackfillStatus, PartitionStatus, RunStatus
from .storage import BackfillRecord, Change, Storage, StorageError, get_instance

DELTA_BYTES = 10  # a changed cell in a delta: index 4, status 1, attempt 1, duration 4
FULL_BYTES = 6  # a cell in the full state: status 1, attempt 1, duration 4
HISTORY_SECONDS = 1.0  # the history view is recomputed at most this often while runs change
_VERBS = {
    "cancel": "cancel",
    "pause": "pause",
    "resume": "resume",
    "retry_failed": "retry",
    "max_concurrent": "max_concurrent",
}


def _asset(name: str) -> Path:
    """The front-end file: packaged beside this module in a wheel, in js/ in a source checkout."""
    packaged = Path(__file__).parent / "static" / name
    return packaged if packaged.exists() else Path(__file__).parent.parent / "js" / name


def whole_number(name: str, value: Any, allow_none: bool = True) -> int | None:
    """A number typed in a box: '' or None (when allowed) is None; '3', 3 and 3.0 are 3; anything
    else ('2.5', 'x', 0) an InvalidOptionError naming it."""
    if value in (None, "") and allow_none:
        return None
    number = value
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    try:
        return positive_int(name, number, allow_none=False)
    except InvalidOptionError:
        raise InvalidOptionError(f"{name} must be a whole number >= 1, got {value!r}") from None


def launch_form(form: dict[str, Any]):
    """The checked options and tags of the widget's launch form (empty fields mean the default)."""
    tags: dict[str, str] = {}
    text = str(form.get("tags") or "").strip()
    for pair in [text] if text.startswith("{") else [p for p in text.split(",") if p.strip()]:
        try:
            tags.update(parse_tags(pair))  # the same rules and words as `--tags`
        except NbBackfillError as error:
            raise InvalidOptionError(f"tags: {error}") from None
    options = check_options(
        coordinator=form.get("coordinator") or "default",
        max_concurrent=whole_number("max concurrent", form.get("max_concurrent")),
        executor=form.get("executor") or "thread",
        order=form.get("order") or "asc",
    )
    return options, tags or None


def _dynamic_names(definition) -> set[str]:
    """Names of the dynamic definitions whose keys make this definition's keys."""
    if isinstance(definition, DynamicPartitionsDefinition):
        return {definition.name}
    if isinstance(definition, MultiPartitionsDefinition):
        return set().union(*(_dynamic_names(d.partitions_def) for d in definition.partitions_defs))
    return set()


class BackfillWidget(anywidget.AnyWidget):
    """A job's partitions as a live grid, with the selector and the buttons of a backfill."""

    # The text, not the Path: for a Path anywidget connects every instance to a class-wide
    # file-watch signal that holds it strongly, so no widget could ever be freed.
    _esm = _asset("widget.js").read_text(encoding="utf-8")
    _css = _asset("widget.css").read_text(encoding="utf-8")

    job_name = traitlets.Unicode().tag(sync=True)
    description = traitlets.Unicode().tag(sync=True)
    steps = traitlets.List(traitlets.Unicode()).tag(sync=True)
    codes = traitlets.List(traitlets.Unicode()).tag(sync=True)  # what each cell code shows (statuses.CELLS)
    key_text = traitlets.Bytes().tag(sync=True)  # utf-8 keys joined by newlines (keys never contain one)
    grid = traitlets.Dict().tag(sync=True)  # kind, width, rows, row_labels
    positions = traitlets.Bytes().tag(sync=True)  # uint32 per partition: row * width + column
    status = traitlets.Bytes().tag(sync=True)  # uint8 per cell (partition * steps + step)
    attempts = traitlets.Bytes().tag(sync=True)  # uint8 per cell
    durations = traitlets.Bytes().tag(sync=True)  # float32 seconds per cell, NaN when unknown
    backfill = traitlets.Dict().tag(sync=True)  # the backfill in view
    summary = traitlets.Dict().tag(sync=True)  # progress.Progress.to_json() of the backfill in view
    view = traitlets.Unicode("backfill").tag(sync=True)  # "backfill" or "history"
    preview = traitlets.Dict().tag(sync=True)  # what the selector would launch
    notice = traitlets.Dict().tag(sync=True)  # the last thing that happened, or went wrong

    def __init__(
        self,
        job: Job,
        backfill_id: str | None = None,
        instance: Storage | str | None = None,
        follow_latest: bool = True,
    ):
        self._job = job
        self._storage = get_instance(instance)
        self._follow_latest = follow_latest  # switch to a backfill of this job launched anywhere
        self._lock = threading.RLock()  # the arrays and every push: one at a time, in order
        self._closed = False
        self._stale = False  # the store could not be read at the last tick: reload at the next
        seq = self._storage.last_seq()  # before reading anything: what changes after is in the feed
        self._n_steps = len(job.steps)
        self._step_index = {name: i for i, name in enumerate(job.step_names)}
        self._dynamic = _dynamic_names(job.partitions_def)
        self._job_backfills = {r.id for r in self._storage.list_backfills(job.name)}
        self._backfill_id: str | None = None
        self._tracker: Tracker | None = None
        self._history_dirty = False
        self._history_at = 0.0
        self._last_status: str | None = None
        super().__init__(job_name=job.name, steps=job.step_names, codes=[c.value for c in CELLS], **self._set_keys())
        self.on_msg(self._on_message)
        self.observe(self._on_view, names="view")
        if backfill_id is not None:
            self.show_backfill(backfill_id)
        else:
            self.view = "history"
            self._load_history()
        self._unsubscribe = Feed.for_storage(self._storage).subscribe(self._on_changes, seq)
        if self.comm is not None:
            self.comm.on_close(self._on_comm_close)  # the front end closed it: stop following

    # --- keys and layout (again when a dynamic definition gains or loses keys)
    def _set_keys(self) -> dict[str, Any]:
        keys = self._job.partitions_def.get_partition_keys()
        self._partition_keys = keys
        self._index = {k: i for i, k in enumerate(keys)}
        layout = layout_for(self._job.partitions_def, keys)
        cells = len(keys) * self._n_steps
        self._status = np.full(cells, MISSING, np.uint8)
        self._attempts = np.zeros(cells, np.uint8)
        self._durations = np.full(cells, np.nan, np.float32)
        return {
            "description": describe(self._job.partitions_def, len(keys)),
            "key_text": "\n".join(keys).encode(),
            "grid": {"kind": layout.kind, "width": layout.width, "rows": layout.rows, "row_labels": layout.row_labels},
            "positions": layout.positions.astype("<u4").tobytes(),
        }

    def _reload_keys(self) -> None:
        with self._lock:
            traits = self._set_keys()
            with self.hold_sync():
                for name, value in traits.items():
                    setattr(self, name, value)
            self._reload()

    # --- what is in view
    def show_backfill(self, backfill_id: str) -> None:
        """Show one backfill's runs (read from storage) and follow it live."""
        get_backfill(backfill_id, job=self._job, instance=self._storage)  # raises for an unknown id
        with self._lock:
            self._backfill_id = backfill_id
            if self.view == "backfill":
                self._load_backfill()
            else:
                self.view = "backfill"  # the observer loads it

    def _reload(self) -> None:
        if self.view == "history":
            self._load_history()
        elif self._backfill_id is not None:
            self._load_backfill()

    def _on_view(self, change: dict[str, Any]) -> None:
        self._reload()

    def _load_backfill(self) -> None:
        """Read the backfill in view from storage and send it whole."""
        with self._lock:
            self._load_runs()
            self._status[:] = MISSING
            self._attempts[:] = 0
            self._durations[:] = np.nan
            self._paint(np.arange(len(self._tracker.partitions)))
            self._last_status = self._tracker.record.status if self._tracker.record else None
            self._send_whole()
            self._send_header()

    def _load_runs(self) -> None:
        """Read the runs and steps of the backfill in view (its tracker and arrays), in any view:
        the summary follows the backfill in view in the history view too."""
        with self._lock:
            tracker = self._tracker = Tracker(self._storage, self._backfill_id)
            self._size_arrays(fresh=True)
            self._run_numbers[:] = [RUN_NUMBER[s] for s in tracker.status]
            self._run_attempts[:] = np.minimum(np.array(tracker.attempt, np.int64), 255)
            self._read_steps(self._storage.step_rows(self._backfill_id))

    def _size_arrays(self, fresh: bool = False) -> None:
        """The per-run arrays, one row a run the tracker holds: kept for the runs they had (unless
        `fresh`), new rows QUEUED with no step started (an engine writes a large backfill's runs
        in chunks)."""
        tracker, had = self._tracker, 0 if fresh else len(self._run_numbers)
        n, keep = len(tracker.partitions), min(had, len(tracker.partitions))

        def sized(old: np.ndarray | None, shape: tuple[int, ...], fill: float, dtype: type) -> np.ndarray:
            new = np.full(shape, fill, dtype)
            if old is not None:
                new[:keep] = old[:keep]
            return new

        old = (
            (None,) * 4 if not had else (self._run_numbers, self._run_attempts, self._step_numbers, self._step_duration)
        )
        self._cell_of_run = np.array([self._index.get(p, -1) for p in tracker.partitions], np.int64)
        self._run_numbers = sized(old[0], (n,), RUN_NUMBER[RunStatus.QUEUED], np.uint8)
        self._run_attempts = sized(old[1], (n,), 1, np.uint8)
        self._step_numbers = sized(old[2], (n, self._n_steps), 0, np.uint8)
        self._step_duration = sized(old[3], (n, self._n_steps), np.nan, np.float32)

    def _load_history(self) -> None:
        """Each partition's latest status across every backfill of the job, sent whole."""
        with self._lock:
            if self._backfill_id is not None and (
                self._tracker is None or self._tracker.backfill_id != self._backfill_id
            ):
                self._load_runs()
                self._last_status = self._tracker.record.status if self._tracker.record else None
            self._history_dirty, self._history_at = False, time.monotonic()
            self._status[:] = self._history_codes()
            self._attempts[:] = 0
            self._durations[:] = np.nan
            self._send_whole()
            self._send_header()

    def _history_codes(self) -> np.ndarray:
        latest = frames.latest_statuses(self._storage, self._job)
        codes = np.array(
            [HISTORY_CODES[latest.get(k, PartitionStatus.MISSING)] for k in self._partition_keys], np.uint8
        )
        return np.repeat(codes, self._n_steps)

    def _paint(self, runs: np.ndarray) -> np.ndarray:
        """Recompute the cells of these runs (indices into the tracker) into the grid arrays;
        returns the grid cells that changed."""
        runs = runs[self._cell_of_run[runs] >= 0]
        if not len(runs):
            return np.zeros(0, np.int64)
        codes = cell_codes(self._run_numbers[runs], self._step_numbers[runs])
        cells = (self._cell_of_run[runs][:, None] * self._n_steps + np.arange(self._n_steps)).ravel()
        attempts = np.repeat(self._run_attempts[runs], self._n_steps)
        durations = self._step_duration[runs].ravel()
        new = codes.ravel()
        changed = (
            (self._status[cells] != new)
            | (self._attempts[cells] != attempts)
            | ~((self._durations[cells] == durations) | (np.isnan(self._durations[cells]) & np.isnan(durations)))
        )
        cells = cells[changed]
        self._status[cells] = new[changed]
        self._attempts[cells] = attempts[changed]
        self._durations[cells] = durations[changed]
        return cells

    # --- following the feed (the feed's thread)
    def _on_changes(self, changes: Sequence[Change]) -> bool:
        if self._closed or self.comm is None:
            return False  # stop following
        with self._lock:
            try:
                if self._stale:  # what the last tick read is lost: read everything again
                    self._stale = False
                    self._reload_keys()
                else:
                    self._take_in(changes)
            except StorageError as error:  # the store is busy or unreadable for now: keep following
                self._stale = True
                self._notify("error", f"the store cannot be read right now ({error}); the grid catches up when it can")
            except Exception as error:  # a bug of ours: say so rather than freeze without a word
                self._notify("error", f"this widget stopped following the store: {type(error).__name__}: {error}")
                return False
        return True

    def _on_comm_close(self, _msg: Any) -> None:
        """The front end closed the widget: stop following the feed."""
        self._closed = True
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()

    def _take_in(self, changes: Sequence[Change]) -> None:
        if any(c.status == "PARTITIONS" and c.message in self._dynamic for c in changes):
            self._reload_keys()  # read whole: of this batch only new backfills still matter
            changes = [c for c in changes if c.run_id is None and c.backfill_id is not None]
        launched = []
        for change in changes:
            if (
                change.run_id is None
                and change.backfill_id is not None
                and change.backfill_id not in self._job_backfills
            ):
                record = self._storage.get_backfill(change.backfill_id)
                if record is not None and record.job_name == self._job.name:
                    self._job_backfills.add(record.id)
                    launched.append(record)
        if launched and self._follow_latest:
            record = launched[-1]  # the newest of this job, wherever it was launched
            first = self._backfill_id is None  # the history was shown for want of a backfill
            self._backfill_id = record.id
            where = process_of(self._storage, record)
            self._notify(
                "info",
                f"backfill {record.id} was launched: {record.num_partitions} partitions"
                + (f" ({where})" if where and where != "this process" else ""),
            )
            if first and self.view == "history":
                self.view = "backfill"  # the observer loads it
            else:
                self._reload()
            self._since_launch()
            return
        mine = [c for c in changes if c.backfill_id == self._backfill_id]
        if self.view == "history":
            if self._tracker is not None and self._tracker.backfill_id == self._backfill_id:
                self._apply(mine)  # the summary line stays current; cells are the history's
            # a run changed, or a backfill changed (one that ended took its runs' entries with it)
            if any(c.backfill_id in self._job_backfills for c in changes):
                self._history_dirty = True
            if self._history_dirty and time.monotonic() - self._history_at >= HISTORY_SECONDS:
                self._history_dirty, self._history_at = False, time.monotonic()
                codes = self._history_codes()
                cells = np.flatnonzero(codes != self._status)
                self._status[cells] = codes[cells]
                self._send_cells(cells)
            if mine:
                self._send_header()
            return
        if self._tracker is None:
            return
        runs = self._apply(mine)
        self._send_cells(self._paint(np.array(sorted(runs), np.int64)))
        self._send_header()

    def _apply(self, changes: Sequence[Change]) -> set[int]:
        """Apply the feed's run changes to the arrays and read the steps of the runs that changed
        (the feed has one entry a run per write); returns the runs touched."""
        tracker = self._tracker
        touched = set(tracker.apply(changes))  # every run, read again, when the backfill just ended
        if not touched:
            return touched
        if len(tracker.run_ids) != len(self._run_numbers):
            self._size_arrays()  # its engine wrote more of its runs, or it was read again
        runs = sorted(touched)
        self._run_numbers[runs] = [RUN_NUMBER[tracker.status[i]] for i in runs]
        self._run_attempts[runs] = [min(tracker.attempt[i], 255) for i in runs]
        self._step_numbers[runs] = 0  # a step with no row (a new attempt's) is pending
        self._step_duration[runs] = np.nan
        if len(runs) == len(tracker.run_ids):
            self._read_steps(self._storage.step_rows(tracker.backfill_id))
        else:
            self._read_steps(self._storage.step_rows_of([tracker.run_ids[i] for i in runs]))
        return touched

    def _read_steps(self, rows: Sequence[tuple]) -> None:
        """Step rows (run_id, step, status, start, end) into the arrays."""
        index = self._tracker.index
        for run_id, step, status, start, end in rows:
            i, j = index.get(run_id), self._step_index.get(step)
            if i is not None and j is not None:
                self._step_numbers[i, j] = STEP_NUMBER[status]
                self._step_duration[i, j] = end - start if start is not None and end is not None else np.nan

    # --- pushing to the front end
    def _send_whole(self) -> None:
        """Put the grid's state in the traits and send it whole. Setting the traits would skip a
        value equal to the stored one even when the front end has not seen it, so the state goes
        in traitlets' store and is sent explicitly."""
        state = {
            "status": self._status.tobytes(),
            "attempts": self._attempts.tobytes(),
            "durations": self._durations.astype("<f4").tobytes(),
        }
        self._trait_values.update(state)
        if self.comm is not None:
            self.send_state(list(state))

    def _send_cells(self, cells: np.ndarray) -> None:
        """Send changed cells as one binary delta (or the whole state when that is smaller)."""
        if not len(cells):
            return
        if DELTA_BYTES * len(cells) > FULL_BYTES * len(self._status):
            self._send_whole()
            return
        self._trait_values.update(
            status=self._status.tobytes(),
            attempts=self._attempts.tobytes(),
            durations=self._durations.astype("<f4").tobytes(),
        )
        buffers = [
            cells.astype("<u4").tobytes(),
            self._status[cells].tobytes(),
            self._attempts[cells].tobytes(),
            self._durations[cells].astype("<f4").tobytes(),
        ]
        self.send({"type": "delta", "count": len(cells)}, buffers=buffers)

    def _send_header(self) -> None:
        """The header (the backfill in view) and its summary line, as they are now."""
        if self._backfill_id is None:
            return
        record = _record(self._storage, self._backfill_id)
        note = stopped_note(self._storage, record)
        tracker = self._tracker if self._tracker is not None and self._tracker.backfill_id == record.id else None
        if tracker is not None and record.status != self._last_status:
            # The record is read now, the runs as of the feed's last read: a status reached since
            # (completed, canceled) would be shown and announced with older counts. Take in the
            # run changes that came before it first (the feed hands them over again: harmless).
            runs = self._apply(self._storage.changes(tracker.seq, record.id))
            if self.view == "backfill":
                self._send_cells(self._paint(np.array(sorted(runs), np.int64)))
        progress = (
            tracker.progress(record, note) if tracker is not None else Backfill(record.id, self._storage).progress()
        )
        state = self._backfill_state(record)
        summary = progress.to_json()
        with self.hold_sync():  # the header and its summary line reach the front end together
            if state != self.backfill:
                self.backfill = state
            if summary != self.summary:
                self.summary = summary
        if record.status != self._last_status:
            self._last_status = record.status
            self._announce(record, progress)

    def _announce(self, record: BackfillRecord, progress: Progress) -> None:
        """A notice when the backfill in view changes status (done, canceled, failed, paused...)."""
        words = {
            BackfillStatus.COMPLETED_SUCCESS: "completed",
            BackfillStatus.COMPLETED_FAILED: "completed with failures",
            BackfillStatus.CANCELED: "was canceled",
            BackfillStatus.CANCELING: "is canceling",
            BackfillStatus.PAUSED: "is paused",
            BackfillStatus.REQUESTED: "is running",
            BackfillStatus.FAILED: "failed",
        }
        kind = "error" if record.status in (BackfillStatus.FAILED, BackfillStatus.COMPLETED_FAILED) else "info"
        self._notify(kind, f"backfill {record.id} {words.get(record.status, record.status)}: {progress.line()}")

    def _backfill_state(self, record: BackfillRecord) -> dict[str, Any]:
        return {
            "id": record.id,
            "status": str(record.status),
            "created": record.created,
            "ended": record.ended,
            "partitions": record.num_partitions,
            "coordinator": record.options.get("coordinator"),
            "max_concurrent": record.options.get("max_concurrent"),
            "executor": record.options.get("executor"),
            "dashboard": record.options.get("dask_dashboard"),
            "error": record.error,
            "process": process_of(self._storage, record),
            "done": record.status in BACKFILL_DONE,
        }

    def _notify(self, kind: str, text: str) -> None:
        self.notice = {"kind": kind, "text": text, "at": time.time()}

    # --- messages from the front end (they arrive when no cell is running)
    def _on_message(self, _widget: Any, content: dict[str, Any], _buffers: list) -> None:
        kind = content.get("type")
        try:
            if kind == "preview":
                self._preview(content.get("selection", {}))
            elif kind == "launch":
                self._launch(content.get("selection", {}), content.get("options", {}))
            elif kind == "detail":
                self._detail(int(content["cell"]))
            elif kind in _VERBS:
                self._control(_VERBS[kind], content)
        except (NbBackfillError, ValueError) as error:
            self._notify("error", str(error))

    def _preview(self, selection: dict[str, Any]) -> None:
        try:
            the_plan = plan(self._job, Choice.from_form(selection), self._storage)
        except (NbBackfillError, ValueError) as error:
            self.preview = {"count": 0, "error": str(error)}
            return
        chosen = the_plan.loc[the_plan["action"] == "launch", "partition"].tolist()
        self.preview = {
            "count": len(chosen),
            "first": chosen[0] if chosen else None,
            "last": chosen[-1] if chosen else None,
            "error": None,
        }

    def _launch(self, selection: dict[str, Any], form: dict[str, Any]) -> None:
        options, tags = launch_form(form)
        with self._lock:  # the feed waits: it must not take the new backfill for one launched elsewhere
            handle = launch(self._job, Choice.from_form(selection), options, tags, instance=self._storage)
            self._job_backfills.add(handle.id)
            self.show_backfill(handle.id)
            self._notify("info", f"launched backfill {handle.id}: {handle.record.num_partitions} partitions")
            self._since_launch()

    def _since_launch(self) -> None:
        """A new backfill's notices run from its launch: one that ended (or paused...) before it
        came into view is announced now, after the launch notice, not never."""
        with self._lock:
            self._last_status = BackfillStatus.REQUESTED
            self._send_header()

    def _control(self, verb: str, content: dict[str, Any]) -> None:
        if self._backfill_id is None:
            raise NbBackfillError("no backfill in view: launch one first")
        if verb == "max_concurrent":
            arg = whole_number("max concurrent", content.get("value"), allow_none=False)
        else:  # Retry failed reruns from the failed step (a step whose output was not kept runs again)
            arg = True if verb == "retry" else None
        before = self._last_status
        said = control(self._storage, self._backfill_id, verb, arg, self._job)
        with self._lock:
            if self._tracker is not None:
                self._take_in(self._storage.changes(self._tracker.seq, self._backfill_id))
            # The answer says more than "is paused" or "is canceling", so it comes after the status
            # it caused was announced; but once the backfill ended meanwhile, its end has the last word.
            if not (self._last_status != before and self._last_status in BACKFILL_DONE):
                self._notify("info", said)

    def _detail(self, cell: int) -> None:
        partition_index, step_index = divmod(cell, self._n_steps)
        partition = self._partition_keys[partition_index]
        step = self._job.step_names[step_index]
        reply = {
            "type": "detail",
            "cell": cell,
            "partition": partition,
            "step": step,
            "log": "",
            "error": None,
            "status": None,
        }
        if self._backfill_id is not None:
            handle = Backfill(self._backfill_id, self._storage, self._job)
            try:
                run = handle.run(partition)
            except UnknownPartitionError:
                run = None
            if run is not None:
                reply.update(log=handle.logs(partition), error=run.error, status=run.status, attempt=run.attempt)
        self.send(reply)

    def close(self) -> None:
        self._closed = True
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
        super().close()


def backfill(job: Job, backfill_id: str | None = None, *, instance: Storage | str | None = None) -> BackfillWidget:
    """The widget of a job: its latest backfill (or `backfill_id`), or the partitions' history if
    none; it follows the job's next backfill wherever it is launched."""
    if not isinstance(job, Job):
        raise NbBackfillError(f"backfill() needs a Job (made with @nbb.job or nbb.Job(...)), got {job!r}")
    storage = get_instance(instance)
    if backfill_id is None:
        latest = storage.list_backfills(job.name)
        backfill_id = latest[0].id if latest else None
    return BackfillWidget(job, backfill_id, storage)
