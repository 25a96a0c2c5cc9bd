"""The backfill widget: pick partitions, launch, and watch a partitions x steps grid live.

Runs never touch the widget. The engine tells the widget's listener what it committed; the
listener only notes which cells changed, and a flusher thread pushes those changes at most every
150 ms as one binary message (cell indices, status codes, attempts, durations), so bytes sent grow
with the cells that changed, not with the grid. The full state stays in the model's traits
(one status byte per cell), so a re-displayed or reloaded view shows the current state.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets

from . import frames
from .backfills import Backfill, get_backfill, launch_backfill
from .coordinator import Engine
from .arguments import parse_tags
from .errors import InvalidOptionError, NbBackfillError, UnknownPartitionError
from .grid import CANCELED, FAILURE, HISTORY_CODES, MISSING, QUEUED, RUN_CODES, RUNNING, SKIPPED, STEP_CODES, SUCCESS, describe, layout_for
from .jobs import Job
from .storage import BACKFILL_DONE, RUN_DONE, RUN_STATUSES, Event, Storage, get_instance

FLUSH_SECONDS = 0.15
DELTA_BYTES = 10  # a changed cell in a delta: index 4, status 1, attempt 1, duration 4
FULL_BYTES = 6  # a cell in the full state: status 1, attempt 1, duration 4
_FINAL_CELLS = (SUCCESS, FAILURE, SKIPPED, CANCELED)


def _asset(name: str) -> Path:
    """The front-end file: packaged beside this module in a wheel, in js/ in a source checkout."""
    packaged = Path(__file__).parent / "static" / name
    return packaged if packaged.exists() else Path(__file__).parent.parent / "js" / name


def _selection_kwargs(selection: dict[str, Any]) -> dict[str, Any]:
    """launch_backfill keyword arguments from the front end's selector state."""
    mode = selection.get("mode", "all")
    if mode == "range":
        return {"from_": selection.get("from") or None, "to": selection.get("to") or None}
    if mode == "list":
        return {"partitions": selection.get("keys", "")}
    if mode == "missing":
        return {"missing_only": True}
    if mode == "failed":
        return {"failed_only": True}
    return {"all": True}


def _option_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """launch_backfill options from the front end's form (empty fields mean the default)."""
    kwargs: dict[str, Any] = {}
    for name in ("coordinator", "executor", "order"):
        if options.get(name):
            kwargs[name] = options[name]
    value = options.get("max_concurrent")
    if value not in (None, ""):
        try:
            kwargs["max_concurrent"] = int(value)
        except (TypeError, ValueError):
            raise InvalidOptionError(f"max concurrent must be a whole number >= 1, got {value!r}") from None
    tags: dict[str, str] = {}
    text = str(options.get("tags") or "").strip()
    for pair in [text] if text.startswith("{") else [p for p in text.split(",") if p.strip()]:
        try:
            tags.update(parse_tags(pair))  # the same rules and words as `--tags`
        except argparse.ArgumentTypeError as error:
            raise InvalidOptionError(f"tags: {error}") from None
    if tags:
        kwargs["tags"] = tags
    return kwargs


class BackfillWidget(anywidget.AnyWidget):
    """A job's partitions as a live grid, with the selector and the buttons of a backfill."""

    _esm = _asset("widget.js")
    _css = _asset("widget.css")

    job_name = traitlets.Unicode().tag(sync=True)
    description = traitlets.Unicode().tag(sync=True)
    steps = traitlets.List(traitlets.Unicode()).tag(sync=True)
    key_text = traitlets.Bytes().tag(sync=True)  # utf-8 keys joined by newlines (keys never contain one)
    grid = traitlets.Dict().tag(sync=True)  # kind, width, rows, row_labels
    positions = traitlets.Bytes().tag(sync=True)  # uint32 per partition: row * width + column
    status = traitlets.Bytes().tag(sync=True)  # uint8 per cell (partition * steps + step)
    attempts = traitlets.Bytes().tag(sync=True)  # uint8 per cell
    durations = traitlets.Bytes().tag(sync=True)  # float32 seconds per cell, NaN when unknown
    backfill = traitlets.Dict().tag(sync=True)  # the backfill in view
    summary = traitlets.Dict().tag(sync=True)  # counts, percent, runs a minute, ETA
    view = traitlets.Unicode("backfill").tag(sync=True)  # "backfill" or "history"
    preview = traitlets.Dict().tag(sync=True)  # what the selector would launch
    notice = traitlets.Dict().tag(sync=True)  # the last error or information for the person

    def __init__(self, job: Job, backfill_id: str | None = None, instance: Storage | str | None = None):
        self._job = job
        self._storage = get_instance(instance)
        self._partition_keys = job.partitions_def.get_partition_keys()
        self._index = {k: i for i, k in enumerate(self._partition_keys)}
        self._n_steps = len(job.steps)
        self._step_index = {name: i for i, name in enumerate(job.step_names)}
        layout = layout_for(job.partitions_def, self._partition_keys)
        self._lock = threading.Condition()  # the grid's arrays and pending changes
        self._send_lock = threading.RLock()  # one push at a time, in the order the state changed
        self._pending: dict[int, tuple[int, int, float]] = {}
        self._closed = False
        self._backfill_id: str | None = None
        self._runs: dict[str, int] = {}
        self._run_status: dict[str, str] = {}
        self._counts: Counter[str] = Counter()  # runs by status, kept as events arrive (read every push)
        self._run_attempt: dict[str, int] = {}
        self._started_at: dict[int, float] = {}
        self._progress: deque[tuple[float, int]] = deque()  # (time, runs done) at each summary, last minute
        cells = len(self._partition_keys) * self._n_steps
        self._status = np.zeros(cells, np.uint8)
        self._attempts = np.zeros(cells, np.uint8)
        self._durations = np.full(cells, np.nan, np.float32)
        super().__init__(
            job_name=job.name,
            description=describe(job.partitions_def, len(self._partition_keys)),
            steps=job.step_names,
            key_text="\n".join(self._partition_keys).encode(),
            grid={"kind": layout.kind, "width": layout.width, "rows": layout.rows, "row_labels": layout.row_labels},
            positions=layout.positions.astype("<u4").tobytes(),
        )
        self.on_msg(self._on_message)
        self.observe(self._on_view, names="view")
        self._unsubscribe = Engine.for_storage(self._storage).subscribe(self._on_events)
        self._flusher = threading.Thread(target=self._flush_loop, name="nb_backfill-widget-flusher", daemon=True)
        self._flusher.start()
        if backfill_id is not None:
            self.show_backfill(backfill_id)
        else:
            self.view = "history"
            self._load_history()

    # --- what is in view
    def show_backfill(self, backfill_id: str) -> None:
        """Show one backfill's runs (read from storage) and follow it live."""
        get_backfill(backfill_id, job=self._job, instance=self._storage)  # raises for an unknown id
        self._backfill_id = backfill_id
        if self.view == "backfill":
            self._load_backfill()
        else:
            self.view = "backfill"  # the observer loads it

    def _load_backfill(self) -> None:
        """Read the backfill in view from storage and send it whole. Under the lock, so events
        the engine commits meanwhile are applied after the read, never lost or overwritten."""
        backfill_id = self._backfill_id
        record = get_backfill(backfill_id, job=self._job, instance=self._storage).record
        with self._send_lock, self._lock:
            self._runs, self._run_status, self._run_attempt = {}, {}, {}
            self._progress.clear()
            self._pending.clear()
            self._status[:] = MISSING
            self._attempts[:] = 0
            self._durations[:] = np.nan
            runs = self._storage.query(
                "SELECT run_id, partition, status, attempt FROM runs WHERE backfill_id = ? ORDER BY seq", (backfill_id,)
            )
            runs = [(r, self._index[p], status, attempt) for r, p, status, attempt in runs if p in self._index]
            steps = self._n_steps
            if runs:
                run_ids, index, statuses, attempts = zip(*runs)
                self._runs = dict(zip(run_ids, index))
                self._run_status = dict(zip(run_ids, statuses))
                self._run_attempt = dict(zip(run_ids, attempts))
                cells = (np.array(index)[:, None] * steps + np.arange(steps)).ravel()
                codes = np.array([QUEUED if s not in RUN_DONE else RUN_CODES[s] for s in statuses], np.uint8)
                self._status[cells] = np.repeat(codes, steps)
                self._attempts[cells] = np.repeat(np.minimum(attempts, 255), steps)
            rows = [
                (self._runs[r] * steps + self._step_index[step], STEP_CODES[status], (end - start) if end and start else np.nan)
                for r, step, status, start, end in self._storage.step_rows(backfill_id)
                if r in self._runs and step in self._step_index
            ]
            if rows:
                cells, codes, durations = (np.array(column) for column in zip(*rows))
                self._status[cells] = codes
                self._durations[cells] = durations
            self._counts = Counter(self._run_status.values())
            for run_id, status in self._run_status.items():
                if status == "CANCELED":  # a step stopped by the cancel shows canceled, not failed
                    base = self._runs[run_id] * steps
                    block = self._status[base : base + steps]
                    block[block != SUCCESS] = CANCELED
            state = self._store_quietly()
            summary = self._summary()
        with self._send_lock:
            self.backfill = self._backfill_state(record)
            self.send_state(list(state))
            self.summary = summary

    def _load_history(self) -> None:
        latest = frames.latest_statuses(self._storage, self._job.name)
        codes = np.array([HISTORY_CODES[latest.get(k, "MISSING")] for k in self._partition_keys], np.uint8)
        with self._send_lock:
            with self._lock:
                self._status[:] = np.repeat(codes, self._n_steps)
                self._attempts[:] = 0
                self._durations[:] = np.nan
                state = self._store_quietly()
            self.send_state(list(state))

    def _on_view(self, change: dict[str, Any]) -> None:
        if change["new"] == "history":
            self._load_history()
        elif self._backfill_id is not None:
            self._load_backfill()

    def _store_quietly(self) -> dict[str, bytes]:
        """Put the grid's state in the traits without syncing it (call with the lock held).

        Setting the traits would sync them, and would skip a value equal to the stored one even
        when the front end has not seen it; so the state goes in traitlets' store, and callers
        send it explicitly (send_state) or leave it for a view opened later."""
        state = {
            "status": self._status.tobytes(),
            "attempts": self._attempts.tobytes(),
            "durations": self._durations.astype("<f4").tobytes(),
        }
        self._trait_values.update(state)
        return state

    def _backfill_state(self, record) -> dict[str, Any]:
        return {
            "id": record.id, "status": record.status, "created": record.created, "ended": record.ended,
            "partitions": record.num_partitions, "coordinator": record.options.get("coordinator"),
            "max_concurrent": record.options.get("max_concurrent"), "executor": record.options.get("executor"),
        }

    # --- events from the engine (engine thread: note and return)
    def _on_events(self, events: Sequence[Event], finished: dict[str, str]) -> None:
        if self._closed:
            raise RuntimeError("widget closed")  # the engine drops a listener that raises
        with self._lock:
            for event in events:
                index = self._runs.get(event.run_id)
                if index is None or event.status == "LOG" or self.view != "backfill":
                    continue
                if event.step is None:
                    self._on_run_event(index, event)
                elif event.step in self._step_index:
                    cell = index * self._n_steps + self._step_index[event.step]
                    self._on_step_event(cell, event, self._run_attempt.get(event.run_id, 1))
            if self._pending or self._backfill_id in finished:
                self._lock.notify()

    def _mark(self, cell: int, code: int, attempt: int, duration: float = float("nan")) -> None:
        self._status[cell] = code
        self._pending[cell] = (code, min(attempt, 255), duration)

    def _on_run_event(self, index: int, event: Event) -> None:
        self._counts[self._run_status.get(event.run_id)] -= 1
        self._counts[event.status] += 1
        self._run_status[event.run_id] = event.status
        self._run_attempt[event.run_id] = event.attempt
        cells = range(index * self._n_steps, (index + 1) * self._n_steps)
        if event.status == "QUEUED":
            for cell in cells:
                self._mark(cell, QUEUED, event.attempt)
        elif event.status == "CANCELED":
            for cell in cells:
                if self._status[cell] != SUCCESS:
                    self._mark(cell, CANCELED, event.attempt)
        elif event.status == "FAILURE":
            failed = any(self._status[c] == FAILURE for c in cells)
            for cell in cells:
                if self._status[cell] not in _FINAL_CELLS:  # a dead worker or an interruption left it open
                    code = FAILURE if self._status[cell] == RUNNING or not failed else SKIPPED
                    failed = failed or code == FAILURE
                    self._mark(cell, code, event.attempt)

    def _on_step_event(self, cell: int, event: Event, run_attempt: int) -> None:
        """A step's cell shows its run's attempt (step retries happen within one attempt)."""
        if event.status == "RUNNING":
            self._started_at[cell] = event.ts
            self._mark(cell, RUNNING, run_attempt)
        else:
            start = self._started_at.pop(cell, None)
            self._mark(cell, STEP_CODES[event.status], run_attempt, float("nan") if start is None else event.ts - start)

    # --- the flusher (its own thread: at most one push every FLUSH_SECONDS)
    def _flush_loop(self) -> None:
        last = 0.0
        while not self._closed:
            with self._lock:
                if not self._pending:
                    self._lock.wait(1.0)
            wait = last + FLUSH_SECONDS - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            last = time.monotonic()
            if self._pending or self.backfill.get("status") not in (None, *BACKFILL_DONE):
                try:
                    self.flush()
                except Exception:  # the comm closed under us
                    if not self._closed:
                        raise

    def flush(self) -> int:
        """Push the cells changed since the last flush as one binary message; returns how many."""
        with self._send_lock:  # a delta never crosses a whole state sent for another backfill
            with self._lock:
                pending, self._pending = self._pending, {}
                if pending:
                    cells = np.fromiter(pending, np.uint32, len(pending))
                    values = list(pending.values())
                    codes = np.array([v[0] for v in values], np.uint8)
                    attempts = np.array([v[1] for v in values], np.uint8)
                    durations = np.array([v[2] for v in values], "<f4")
                    self._attempts[cells] = attempts
                    self._durations[cells] = durations
                    state = self._store_quietly()
                summary = self._summary()  # of the same moment as the cells pushed with it
            if pending:
                if DELTA_BYTES * len(cells) > FULL_BYTES * len(self._status):
                    self.send_state(list(state))  # most of the grid changed: the whole state is smaller
                else:
                    buffers = [cells.astype("<u4").tobytes(), codes.tobytes(), attempts.tobytes(), durations.tobytes()]
                    self.send({"type": "delta", "count": len(cells)}, buffers=buffers)
            self._flush_summary(summary)
        return len(pending)

    def _flush_summary(self, summary: dict[str, Any]) -> None:
        """The header and summary line of the backfill in view (small traits, synced as they change)."""
        if self._backfill_id is not None:
            record = self._storage.get_backfill(self._backfill_id)
            if record is not None:
                state = self._backfill_state(record)
                if state != self.backfill:
                    self.backfill = state
            self.summary = summary

    def _summary(self) -> dict[str, Any]:
        counts = {s: self._counts[s] for s in RUN_STATUSES}
        total = len(self._run_status)
        done = sum(counts[s] for s in RUN_DONE)
        per_minute = self._rate(done)
        left = total - done
        return {
            "counts": {k: v for k, v in counts.items() if v},
            "total": total,
            "done": done,
            "percent": round(100.0 * done / total, 1) if total else 0.0,
            "per_minute": round(per_minute, 1),
            "eta_seconds": round(60.0 * left / per_minute, 1) if per_minute and left else None,
        }

    def _rate(self, done: int) -> float:
        """Runs finished a minute, over the last minute of summaries."""
        now = time.monotonic()
        self._progress.append((now, done))
        while now - self._progress[0][0] > 60:
            self._progress.popleft()
        since, done_then = self._progress[0]
        return 60.0 * (done - done_then) / (now - since) if now - since > 0.5 else 0.0

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
            elif kind in ("cancel", "pause", "resume", "retry_failed", "max_concurrent"):
                self._control(kind, content)
        except (NbBackfillError, ValueError) as error:
            self.notice = {"kind": "error", "text": str(error), "at": time.time()}

    def _preview(self, selection: dict[str, Any]) -> None:
        try:
            plan = launch_backfill(self._job, dry_run=True, instance=self._storage, **_selection_kwargs(selection))
        except (NbBackfillError, ValueError) as error:
            self.preview = {"count": 0, "error": str(error)}
            return
        chosen = plan.loc[plan["action"] == "launch", "partition"].tolist()
        self.preview = {"count": len(chosen), "first": chosen[0] if chosen else None, "last": chosen[-1] if chosen else None, "error": None}

    def _launch(self, selection: dict[str, Any], options: dict[str, Any]) -> None:
        handle = launch_backfill(self._job, instance=self._storage, **_selection_kwargs(selection), **_option_kwargs(options))
        self.show_backfill(handle.id)
        self.notice = {"kind": "info", "text": f"launched backfill {handle.id}: {handle.record.num_partitions} partitions", "at": time.time()}

    def _handle(self) -> Backfill:
        if self._backfill_id is None:
            raise NbBackfillError("no backfill in view: launch one first")
        return Backfill(self._backfill_id, self._storage, self._job)

    def _control(self, kind: str, content: dict[str, Any]) -> None:
        handle = self._handle()
        if kind == "max_concurrent":
            handle.set_max_concurrent(int(content.get("value")))
        else:
            getattr(handle, kind)()
        self.flush()

    def _detail(self, cell: int) -> None:
        partition_index, step_index = divmod(cell, self._n_steps)
        partition = self._partition_keys[partition_index]
        step = self._job.step_names[step_index]
        reply = {"type": "detail", "cell": cell, "partition": partition, "step": step, "log": "", "error": None, "status": None}
        if self._backfill_id is not None:
            handle = self._handle()
            try:
                run = handle.run(partition)
            except UnknownPartitionError:
                run = None
            if run is not None:
                reply.update(log=handle.logs(partition), error=run.error, status=run.status, attempt=run.attempt)
        self.send(reply)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._lock.notify_all()
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
        super().close()


def backfill(job: Job, backfill_id: str | None = None, *, instance: Storage | str | None = None) -> BackfillWidget:
    """The widget of a job: its latest backfill (or `backfill_id`), or the partitions' history if none."""
    if not isinstance(job, Job):
        raise NbBackfillError(f"backfill() needs a Job (made with @nbb.job or nbb.Job(...)), got {job!r}")
    storage = get_instance(instance)
    if backfill_id is None:
        latest = storage.list_backfills(job.name)
        backfill_id = latest[0].id if latest else None
    return BackfillWidget(job, backfill_id, storage)
