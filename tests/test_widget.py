"""The widget model without a browser: a recording comm stands in for the front end.

The widget follows the store's change feed (`feed.Feed`): every ~150 ms tick it applies what
changed, pushes the changed cells as a binary delta and the summary line. These tests check the
model (status bytes decoded with the widget's own `codes`, `summary`, `backfill`, `notice`)
against the store, whatever changed it: the API, the widget's buttons, another process.
"""

import gc
import re
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import comm
import numpy as np
import pytest

import nb_backfill as nbb
from nb_backfill.feed import FEED_SECONDS, Feed
from nb_backfill.progress import rate_text
from nb_backfill.statuses import CELL_OF_PENDING_STEP, CELL_OF_STEP, CELLS, Cell, RunStatus
from nb_backfill.widget import HISTORY_SECONDS, BackfillWidget

DAILY = nbb.DailyPartitionsDefinition("2024-01-01", end_date="2024-03-01")  # 60 partitions
CODE = {cell.value: code for code, cell in enumerate(CELLS)}
MISSING, QUEUED, SUCCESS, FAILURE, CANCELED = (CODE[c] for c in ("missing", "queued", "success", "failure", "canceled"))
SETTLE_TICKS = 2  # the model matches a settled store within this many feed ticks
WALL = 10.0  # seconds any wait may take before the test fails (a hang, not slowness)


class RecordingComm(comm.base_comm.BaseComm):
    """Records what the widget publishes; `kernel` must be truthy or ipywidgets sends nothing."""

    kernel = True

    def __init__(self, *args, **kwargs):
        self.messages = []
        super().__init__(*args, **kwargs)

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        self.messages.append((msg_type, data or {}, [bytes(b) for b in buffers or []]))


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setattr(comm, "create_comm", RecordingComm)


@pytest.fixture
def ticks(monkeypatch):
    """Counts the feed's calls of each widget (`widget._ticks`), so a test can say "within two ticks"."""
    original = BackfillWidget._on_changes

    def counted(self, changes):
        try:
            return original(self, changes)
        finally:
            self._ticks += 1

    monkeypatch.setattr(BackfillWidget, "_on_changes", counted)
    monkeypatch.setattr(BackfillWidget, "_ticks", 0, raising=False)


@pytest.fixture
def store(tmp_path):
    return nbb.get_instance(tmp_path / "store")


@pytest.fixture
def gate():
    """Runs of a gated job wait (checking for cancel) until the gate opens; it opens at teardown."""
    event = threading.Event()
    yield event
    event.set()


# --- helpers


def send_from_front_end(widget, content):
    widget.comm.handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


def custom(widget, kind):
    return [
        (d["content"], b)
        for t, d, b in widget.comm.messages
        if d.get("method") == "custom" and d["content"].get("type") == kind
    ]


def updates(widget, trait):
    """State updates of a trait (binary traits travel as buffers named by buffer_paths)."""
    return [
        d
        for t, d, b in widget.comm.messages
        if d.get("method") == "update" and (trait in d.get("state", {}) or [trait] in d.get("buffer_paths", []))
    ]


def wait_for(predicate, timeout=WALL, what="the condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.01)


def cells(widget):
    """Each cell's status name, decoded with the codes the widget sends the front end."""
    return [widget.codes[code] for code in widget.status]


def nonzero(counts):
    return {status: n for status, n in counts.items() if n}


def expected_cells(store, backfill_id, job):
    """What each cell should show, read from the store now (statuses' rules, not the widget's arrays)."""
    keys = job.partitions_def.get_partition_keys()
    shown = {key: [Cell.MISSING.value] * len(job.step_names) for key in keys}
    step_of = {}
    for run_id, step, status, _start, _end in store.step_rows(backfill_id):
        step_of.setdefault(run_id, {})[step] = status
    for run_id, partition, status, *_ in store.run_rows(backfill_id):
        steps = step_of.get(run_id, {})
        if status == RunStatus.FAILURE and not steps:  # failed before any step ran
            shown[partition] = [Cell.FAILURE.value] * len(job.step_names)
            continue
        shown[partition] = [
            (CELL_OF_STEP[steps[name]] if name in steps else CELL_OF_PENDING_STEP[status]).value
            for name in job.step_names
        ]
    return [cell for key in keys for cell in shown[key]]


def mismatch(widget, bf, job, store):
    """Why the widget's model differs from the store (None when it matches)."""
    with widget._lock:  # not halfway through a tick
        shown, summary, header = cells(widget), dict(widget.summary), dict(widget.backfill)
    want, counts, status = expected_cells(store, bf.id, job), nonzero(bf.counts()), bf.status
    if header.get("id") != bf.id or header.get("status") != status or summary.get("status") != status:
        return f"status: header {header.get('status')}, summary {summary.get('status')}, store {status}"
    if summary.get("counts") != counts:
        return f"counts: widget {summary.get('counts')}, store {counts}"
    if shown != want:
        wrong = [(i, a, b) for i, (a, b) in enumerate(zip(shown, want)) if a != b]
        return f"{len(wrong)} cells differ (cell, widget, store): {wrong[:5]}"
    return None


def matches_within_ticks(widget, bf, job, store, n=SETTLE_TICKS):
    """Once the store has settled, the widget must match it after at most `n` more feed ticks."""
    start = widget._ticks
    deadline = time.monotonic() + WALL
    while True:
        done_ticks = widget._ticks - start
        why = mismatch(widget, bf, job, store)
        if why is None:
            return done_ticks
        assert done_ticks < n, f"after {done_ticks} feed ticks the widget still differs from the store: {why}"
        assert time.monotonic() < deadline, f"the feed did not tick: {why}"
        time.sleep(0.005)


def make_job(fail=("2024-01-05",), sleep=0.0):
    @nbb.job(partitions_def=DAILY)
    def daily_job(context):
        print(f"working on {context.partition_key}")
        time.sleep(sleep)
        if context.partition_key in fail:
            raise ValueError(f"no data for {context.partition_key}")

    return daily_job


def gated_job(gate, name="gated", partitions_def=DAILY):
    def body(context):
        while not gate.is_set():
            context.check_canceled()
            time.sleep(0.005)

    body.__name__ = name
    return nbb.job(partitions_def=partitions_def)(body)


def running(store, backfill_id):
    counts = store.run_counts(backfill_id)
    return counts.get(RunStatus.STARTED, 0)


def in_flight(store, backfill_id):
    counts = store.run_counts(backfill_id)
    return sum(counts.get(s, 0) for s in (RunStatus.STARTING, RunStatus.STARTED, RunStatus.CANCELING))


# --- layout, launch, deltas


def test_a_new_widget_shows_the_grid_and_history(recording, store):
    widget = nbb.backfill(make_job(), instance=store)
    assert widget.codes == [c.value for c in CELLS]
    assert widget.description == "daily from 2024-01-01, UTC, 60 partitions"
    assert widget.grid["kind"] == "by month" and widget.grid["width"] == 31 and widget.grid["rows"] == 2
    assert widget.grid["row_labels"] == ["2024-01", "2024-02"]
    positions = np.frombuffer(widget.positions, "<u4")
    assert len(positions) == 60 and positions[0] == 0 and positions[31] == 31 and positions[59] == 31 + 28
    assert widget.key_text.decode().split("\n")[:2] == ["2024-01-01", "2024-01-02"]
    assert widget.view == "history" and set(cells(widget)) == {"missing"} and len(widget.status) == 60
    assert widget.backfill == {} and widget.summary == {}
    widget.close()


def test_launch_from_the_front_end_and_watch_deltas(recording, store):
    job = make_job(sleep=0.01)
    widget = nbb.backfill(job, instance=store)
    widget.comm.messages.clear()
    send_from_front_end(
        widget,
        {
            "type": "launch",
            "selection": {"mode": "range", "from": "2024-01-01", "to": "2024-01-31"},
            "options": {"coordinator": "queued", "max_concurrent": "2"},
        },
    )
    backfill_id = widget.backfill["id"]
    assert (
        widget.view == "backfill"
        and widget.backfill["coordinator"] == "queued"
        and widget.backfill["max_concurrent"] == 2
    )
    bf = nbb.get_backfill(backfill_id, instance=store)
    assert bf.wait(timeout=20) == "COMPLETED_FAILED"
    wait_for(lambda: widget.summary.get("done") == 31 and widget.backfill["status"] == "COMPLETED_FAILED")

    codes = np.frombuffer(widget.status, np.uint8)
    assert codes[4] == FAILURE and codes[0] == SUCCESS and codes[40] == MISSING and (codes[:31] != QUEUED).all()
    deltas = custom(widget, "delta")
    assert deltas, "no delta was pushed"
    for content, buffers in deltas:
        changed_cells, status, attempts, durations = buffers
        n = content["count"]
        assert (len(changed_cells), len(status), len(attempts), len(durations)) == (4 * n, n, n, 4 * n)
    changed = sum(c["count"] for c, _ in deltas)
    sent = sum(len(b) for _, bufs in deltas for b in bufs)
    assert sent == 10 * changed  # bytes grow with changed cells: 4 + 1 + 1 + 4 a cell
    assert len(deltas) < changed  # pushes are batched by feed tick, not one per cell change
    # the full status is not re-sent while the backfill runs, only deltas
    assert len(updates(widget, "status")) == 1  # the one full state when the backfill came into view
    assert widget.summary["counts"] == {"SUCCESS": 30, "FAILURE": 1} and widget.summary["percent"] == 100.0
    assert widget.summary["text"] == "30 success, 1 failure — 100% done"
    widget.close()


def test_a_push_that_changes_most_of_the_grid_sends_the_whole_state(recording, store):
    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["a", "b", "c", "d"]))
    def quick(context):
        pass

    widget = nbb.backfill(quick, instance=store)
    widget.comm.messages.clear()
    with widget._lock:  # four of four cells change: 40 bytes as a delta, 24 as the whole state
        widget._status[:] = SUCCESS
        widget._send_cells(np.arange(4))
    assert len(custom(widget, "delta")) == 0 and len(updates(widget, "status")) == 1
    with widget._lock:  # one cell: 10 bytes as a delta
        widget._status[2] = FAILURE
        widget._send_cells(np.array([2]))
    assert len(custom(widget, "delta")) == 1 and len(updates(widget, "status")) == 1
    ((content, buffers),) = custom(widget, "delta")
    assert content["count"] == 1 and np.frombuffer(buffers[0], "<u4").tolist() == [2] and buffers[1] == bytes([FAILURE])
    assert list(np.frombuffer(widget.status, np.uint8)) == [
        SUCCESS,
        SUCCESS,
        FAILURE,
        SUCCESS,
    ]  # the traits hold it all
    widget.close()


def test_preview_counts_what_a_launch_would_run(recording, store):
    widget = nbb.backfill(make_job(), instance=store)
    send_from_front_end(
        widget, {"type": "preview", "selection": {"mode": "range", "from": "2024-01-10", "to": "2024-01-19"}}
    )
    assert widget.preview == {"count": 10, "first": "2024-01-10", "last": "2024-01-19", "error": None}
    send_from_front_end(
        widget, {"type": "preview", "selection": {"mode": "range", "from": "2024-01-19", "to": "2024-01-10"}}
    )
    assert widget.preview["count"] == 0 and "comes after" in widget.preview["error"]
    widget.close()


def test_bad_launch_shows_the_error_and_writes_nothing(recording, store):
    widget = nbb.backfill(make_job(), instance=store)
    send_from_front_end(
        widget, {"type": "launch", "selection": {"mode": "list", "keys": "2024-01-01,nope"}, "options": {}}
    )
    assert widget.notice["kind"] == "error" and "'nope'" in widget.notice["text"]
    send_from_front_end(widget, {"type": "launch", "selection": {"mode": "all"}, "options": {"tags": "novalue"}})
    assert "key=value" in widget.notice["text"] and "novalue" in widget.notice["text"]
    send_from_front_end(
        widget,
        {"type": "launch", "selection": {"mode": "all"}, "options": {"coordinator": "queued", "max_concurrent": "two"}},
    )
    assert widget.notice["text"] == "max concurrent must be a whole number >= 1, got 'two'"
    assert store.query("SELECT COUNT(*) FROM backfills")[0][0] == 0
    assert widget.view == "history" and widget.backfill == {}
    widget.close()


def test_click_a_cell_for_its_log_and_traceback(recording, store):
    job = make_job()
    bf = nbb.launch_backfill(job, from_="2024-01-04", to="2024-01-06", instance=store)
    bf.wait(timeout=10)
    widget = bf.widget()
    send_from_front_end(widget, {"type": "detail", "cell": 4})
    reply = custom(widget, "detail")[-1][0]
    assert reply["partition"] == "2024-01-05" and reply["status"] == "FAILURE" and reply["attempt"] == 1
    assert "working on 2024-01-05" in reply["log"] and "ValueError: no data for 2024-01-05" in reply["error"]
    send_from_front_end(widget, {"type": "detail", "cell": 30})  # not in this backfill
    assert custom(widget, "detail")[-1][0]["status"] is None
    widget.close()


def test_buttons_cancel_pause_resume_retry_and_concurrency(recording, store):
    broken = {"2024-01-02"}

    @nbb.job(partitions_def=DAILY)
    def controlled(context):
        time.sleep(0.02)
        if context.partition_key in broken:
            raise ValueError("broken")

    widget = nbb.backfill(controlled, instance=store)
    send_from_front_end(
        widget,
        {"type": "launch", "selection": {"mode": "all"}, "options": {"coordinator": "queued", "max_concurrent": 1}},
    )
    bf = nbb.get_backfill(widget.backfill["id"], instance=store)
    send_from_front_end(widget, {"type": "pause"})
    assert bf.status == "PAUSED" and widget.backfill["status"] == "PAUSED"
    # the engine's answer, shown after (not under) the "is paused" announcement it caused
    assert widget.notice["text"].startswith(f"paused backfill {bf.id}: no new run starts")
    send_from_front_end(widget, {"type": "max_concurrent", "value": 4})
    assert bf.record.options["max_concurrent"] == 4
    send_from_front_end(widget, {"type": "resume"})
    assert bf.wait(timeout=20) == "COMPLETED_FAILED"
    broken.clear()
    send_from_front_end(widget, {"type": "retry_failed"})
    assert bf.wait(timeout=20) == "COMPLETED_SUCCESS"
    wait_for(lambda: widget.summary.get("counts") == {"SUCCESS": 60})
    assert np.frombuffer(widget.status, np.uint8)[1] == SUCCESS
    assert widget.attempts[1] == 2 and widget.attempts[0] == 1  # the retried partition is on its second attempt

    other = nbb.launch_backfill(controlled, all=True, instance=store)
    widget.show_backfill(other.id)
    send_from_front_end(widget, {"type": "cancel"})
    assert other.wait(timeout=10) == "CANCELED"
    widget.close()


def test_redisplay_after_a_restart_shows_the_stored_state(recording, store):
    job = make_job()
    bf = nbb.launch_backfill(job, from_="2024-01-01", to="2024-01-10", instance=store)
    bf.wait(timeout=10)
    fresh = nbb.get_backfill(bf.id, instance=store).widget()  # as a new kernel would
    codes = np.frombuffer(fresh.status, np.uint8)
    assert (codes[:10] == [SUCCESS] * 4 + [FAILURE] + [SUCCESS] * 5).all() and (codes[10:] == MISSING).all()
    assert fresh.summary["counts"] == {"SUCCESS": 9, "FAILURE": 1}
    assert fresh.backfill["status"] == "COMPLETED_FAILED" and fresh.backfill["done"] and fresh.backfill["process"] == ""
    assert nbb.backfill(job, instance=store).backfill["id"] == bf.id  # the job's latest backfill
    bundle = bf._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data
    fresh.close()


def test_history_toggle(recording, store):
    job = make_job()
    nbb.launch_backfill(job, from_="2024-01-01", to="2024-01-03", instance=store).wait(timeout=10)
    second = nbb.launch_backfill(job, partitions="2024-01-10", instance=store)
    second.wait(timeout=10)
    widget = second.widget()
    assert np.frombuffer(widget.status, np.uint8)[0] == MISSING  # not in this backfill
    widget.view = "history"
    codes = np.frombuffer(widget.status, np.uint8)
    assert codes[0] == SUCCESS and codes[9] == SUCCESS and codes[20] == MISSING
    widget.view = "backfill"
    codes = np.frombuffer(widget.status, np.uint8)
    assert codes[0] == MISSING and codes[9] == SUCCESS
    widget.close()


def test_multi_step_multi_partition_layout(recording, store):
    multi = nbb.MultiPartitionsDefinition({"date": DAILY, "region": nbb.StaticPartitionsDefinition(["eu", "us", "ap"])})

    @nbb.step
    def a():
        return 1

    @nbb.step
    def b(a):
        if a:
            raise ValueError("b fails")

    job = nbb.Job("matrix", [a, b], multi)
    widget = nbb.backfill(job, instance=store)
    assert widget.grid["kind"] == "matrix" and widget.grid["width"] == 3 and widget.grid["rows"] == 60
    assert widget.steps == ["a", "b"] and len(widget.status) == 180 * 2
    assert widget.description == "date x region, 180 partitions"
    keys = widget.key_text.decode().split("\n")
    bf = nbb.launch_backfill(job, partitions=[keys[4]], instance=store)
    assert bf.wait(timeout=10) == "COMPLETED_FAILED"
    wait_for(lambda: cells(widget)[8:10] == ["success", "failure"], what="step a success, step b failure")
    assert set(cells(widget)[:8] + cells(widget)[10:]) == {"missing"}
    widget.close()


def test_resuming_keeps_a_reopened_widget_live(recording, store, gate):
    bf = nbb.launch_backfill(gated_job(gate), from_="2024-01-01", to="2024-01-08", max_workers=2, instance=store)
    wait_for(lambda: running(store, bf.id) == 2)
    bf.cancel()
    assert bf.wait(timeout=10) == "CANCELED"
    reopened = nbb.get_backfill(bf.id, instance=store).widget()  # as after a kernel restart
    assert set(np.frombuffer(reopened.status, np.uint8)[:8]) == {CANCELED}
    gate.set()
    nbb.resume_backfill(bf.id, instance=store).wait(timeout=20)
    wait_for(lambda: reopened.summary.get("counts") == {"SUCCESS": 8})
    assert (np.frombuffer(reopened.status, np.uint8)[:8] == SUCCESS).all()
    assert any(c["count"] for c, _ in custom(reopened, "delta"))
    reopened.close()


def test_showing_a_backfill_always_sends_its_whole_state(recording, store):
    # the traits may already hold the state quietly (a delta stores it without syncing); a view
    # change must still reach the front end, or old cells stay painted under the new deltas
    job = make_job()
    bf = nbb.launch_backfill(job, from_="2024-01-01", to="2024-01-03", instance=store)
    bf.wait(timeout=10)
    widget = bf.widget()
    widget.comm.messages.clear()
    widget.show_backfill(bf.id)  # same state as the traits hold
    assert len(updates(widget, "status")) == 1
    widget.close()


# --- the model matches the store after control, whoever asked


def test_after_cancel_from_the_api_the_model_matches_the_store(recording, ticks, store, gate):
    job = gated_job(gate)
    bf = nbb.launch_backfill(job, all=True, max_workers=2, instance=store)
    widget = bf.widget()
    wait_for(
        lambda: running(store, bf.id) == 2 and cells(widget).count("running") == 2, what="two runs running in the grid"
    )
    bf.cancel()
    assert bf.wait(timeout=10) == "CANCELED"
    matches_within_ticks(widget, bf, job, store)
    shown = cells(widget)
    assert "queued" not in shown and "running" not in shown
    assert shown.count("canceled") == 60 and widget.summary["counts"] == {"CANCELED": 60} == nonzero(bf.counts())
    assert widget.summary["eta_seconds"] is None and widget.summary["per_minute"] is None
    widget.close()


def test_after_cancel_pressed_in_the_widget_the_model_matches_the_store(recording, ticks, store, gate):
    job = gated_job(gate, "pressed")
    widget = nbb.backfill(job, instance=store)
    send_from_front_end(
        widget,
        {"type": "launch", "selection": {"mode": "all"}, "options": {"coordinator": "queued", "max_concurrent": "3"}},
    )
    bf = nbb.get_backfill(widget.backfill["id"], instance=store)
    wait_for(lambda: running(store, bf.id) == 3, what="three runs started")
    gate.set()  # the running ones complete (or stop at their next check): both are fine
    send_from_front_end(widget, {"type": "cancel"})
    assert bf.wait(timeout=10) == "CANCELED"
    matches_within_ticks(widget, bf, job, store)
    assert widget.notice["text"].startswith(f"backfill {bf.id} was canceled: ")
    shown = cells(widget)
    assert "queued" not in shown and "running" not in shown
    counts = nonzero(bf.counts())
    assert counts.get("CANCELED", 0) >= 57 and sum(counts.values()) == 60 and set(counts) <= {"SUCCESS", "CANCELED"}
    assert shown.count("canceled") == counts["CANCELED"] and shown.count("success") == counts.get("SUCCESS", 0)
    widget.close()


def test_while_paused_the_model_matches_the_store_without_rate_or_eta(recording, ticks, store, gate):
    job = gated_job(gate, "pausing")
    bf = nbb.launch_backfill(job, all=True, max_workers=2, instance=store)
    widget = bf.widget()
    wait_for(lambda: running(store, bf.id) == 2)
    bf.pause()
    gate.set()  # the two running runs finish; nothing new starts
    wait_for(lambda: in_flight(store, bf.id) == 0, what="the running runs to finish")
    assert bf.status == "PAUSED"
    matches_within_ticks(widget, bf, job, store)
    assert nonzero(bf.counts()) == {"SUCCESS": 2, "QUEUED": 58} == widget.summary["counts"]
    shown = cells(widget)
    assert shown.count("success") == 2 and shown.count("queued") == 58
    for _ in range(3):  # over several ticks: no rate, no ETA, nothing moves
        seen = widget._ticks
        wait_for(lambda seen=seen: widget._ticks > seen)
        summary = widget.summary
        assert summary["status"] == "PAUSED" and summary["per_minute"] is None and summary["eta_seconds"] is None
        assert summary["done"] == 2 and "ETA" not in summary["text"] and "runs/" not in summary["text"]
        assert summary["text"] == "58 queued, 2 success — 3.3% done, paused: resume it to go on" == bf.progress().line()
    bf.resume()
    assert bf.wait(timeout=20) == "COMPLETED_SUCCESS"
    matches_within_ticks(widget, bf, job, store)
    assert widget.summary["counts"] == {"SUCCESS": 60}
    widget.close()


# --- whatever changes the store shows: another process, new dynamic keys, the history


REMOTE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import nb_backfill as nbb

    store, gate = sys.argv[1], Path(sys.argv[2])

    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["a", "b", "c", "d", "e", "f"]))
    def shared_job(context):
        while context.partition_key != "a" and not gate.exists():
            context.check_canceled()
            time.sleep(0.01)

    bf = nbb.launch_backfill(shared_job, all=True, max_workers=2, instance=store)
    print(bf.id, flush=True)
    print(bf.wait(timeout=60), flush=True)
    """
)


def test_a_backfill_launched_by_another_process_shows_live(recording, store, tmp_path):
    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["a", "b", "c", "d", "e", "f"]))
    def shared_job(context):
        pass

    widget = nbb.backfill(shared_job, instance=store)
    assert widget.view == "history" and widget.backfill == {}
    script, go = tmp_path / "remote.py", tmp_path / "go"
    script.write_text(REMOTE)
    process = subprocess.Popen(
        [sys.executable, str(script), str(store.home), str(go)], stdout=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: widget.backfill.get("id"), timeout=30, what="the other process's backfill to appear")
        backfill_id = widget.backfill["id"]
        assert widget.view == "backfill" and widget.notice["text"].startswith(
            f"backfill {backfill_id} was launched: 6 partitions"
        )
        # live: "a" done while the others wait for the gate, and the header names the other process
        wait_for(lambda: cells(widget)[0] == "success" and widget.summary.get("counts", {}).get("SUCCESS") == 1)
        assert widget.backfill["status"] == "REQUESTED" and widget.backfill["process"].startswith(
            f"pid {process.pid} on "
        )
        assert set(cells(widget)[1:]) <= {"queued", "running"} and cells(widget).count("running") == 2
        go.touch()
        wait_for(lambda: cells(widget) == ["success"] * 6 and widget.backfill["status"] == "COMPLETED_SUCCESS")
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert out.split() == [backfill_id, "COMPLETED_SUCCESS"]
    assert widget.summary["counts"] == {"SUCCESS": 6} and widget.backfill["process"] == ""
    # the cells came as they changed: pushes after the one that brought the backfill into view (a
    # push of 4 or more of these 6 cells goes as the whole state, being smaller than a delta)
    assert len(custom(widget, "delta")) + len(updates(widget, "status")) >= 3
    widget.close()


def test_a_dynamic_key_added_later_appears_in_the_grid(recording, store):
    regions = nbb.DynamicPartitionsDefinition("regions", instance=store)
    regions.add_partitions(["eu", "us"])

    @nbb.job(partitions_def=regions)
    def by_region(context):
        pass

    widget = nbb.backfill(by_region, instance=store)
    assert widget.key_text == b"eu\nus" and len(widget.status) == 2
    regions.add_partitions(["ap"])
    wait_for(lambda: widget.key_text == b"eu\nus\nap", what="the new key in the widget")
    assert len(widget.status) == 3 and len(np.frombuffer(widget.positions, "<u4")) == 3
    assert widget.description == "dynamic 'regions', 3 partitions"
    bf = nbb.launch_backfill(by_region, partitions=["ap"], instance=store)
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"
    wait_for(lambda: cells(widget) == ["missing", "missing", "success"], what="the new key's run in the grid")
    widget.close()


def test_the_history_view_updates_live_as_runs_finish(recording, store, gate):
    job = gated_job(gate, "history_live")
    gate.set()
    assert (
        nbb.launch_backfill(job, from_="2024-01-01", to="2024-01-02", instance=store).wait(timeout=10)
        == "COMPLETED_SUCCESS"
    )
    gate.clear()
    bf = nbb.launch_backfill(job, from_="2024-01-10", to="2024-01-13", max_workers=4, instance=store)
    widget = bf.widget()
    widget.view = "history"
    shown = cells(widget)
    assert shown[:2] == ["success", "success"] and shown[9:13] == ["running"] * 4 and set(shown[13:]) == {"missing"}
    widget.comm.messages.clear()
    started = time.monotonic()
    gate.set()
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"
    wait_for(
        lambda: cells(widget)[9:13] == ["success"] * 4,
        timeout=HISTORY_SECONDS + 3,
        what="the history to show the runs done",
    )
    assert time.monotonic() - started < HISTORY_SECONDS + 3
    assert cells(widget)[:2] == ["success", "success"] and set(cells(widget)[13:]) == {"missing"}
    assert custom(widget, "delta")  # as deltas, without leaving the history view
    assert widget.view == "history" and widget.summary["counts"] == {"SUCCESS": 4}  # the summary followed too
    widget.close()


# --- what the buttons and boxes say


def test_retry_failed_with_nothing_failed_says_so(recording, store):
    job = make_job(fail=())
    bf = nbb.launch_backfill(job, from_="2024-01-01", to="2024-01-03", instance=store)
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"
    widget = bf.widget()
    before = bf.counts()
    send_from_front_end(widget, {"type": "retry_failed"})
    assert widget.notice["kind"] == "error"
    assert widget.notice["text"].startswith(f"nothing to retry: backfill {bf.id!r} has no failed run (3 SUCCESS)")
    assert bf.status == "COMPLETED_SUCCESS" and bf.counts() == before
    widget.close()


def test_a_bad_max_concurrent_value_is_named_and_changes_nothing(recording, store, gate):
    job = gated_job(gate, "concurrency")
    widget = nbb.backfill(job, instance=store)
    send_from_front_end(
        widget,
        {"type": "launch", "selection": {"mode": "all"}, "options": {"coordinator": "queued", "max_concurrent": "2"}},
    )
    bf = nbb.get_backfill(widget.backfill["id"], instance=store)
    options = bf.record.options
    for value, shown in [(None, "None"), ("", "''"), ("2.5", "'2.5'"), ("x", "'x'"), (0, "0"), ("-1", "'-1'")]:
        send_from_front_end(widget, {"type": "max_concurrent", "value": value})
        assert widget.notice["kind"] == "error"
        assert widget.notice["text"] == f"max concurrent must be a whole number >= 1, got {shown}"
        assert bf.record.options == options
    send_from_front_end(widget, {"type": "max_concurrent", "value": "3"})
    assert widget.notice == {
        **widget.notice,
        "kind": "info",
        "text": f"backfill {bf.id} now runs at most 3 runs at once",
    }
    assert bf.record.options["max_concurrent"] == 3 and bf.record.options["coordinator"] == "queued"
    wait_for(lambda: widget.backfill.get("max_concurrent") == 3, what="the header to show 3")
    wait_for(lambda: running(store, bf.id) == 3, what="a third run to start")
    bf.cancel()
    assert bf.wait(timeout=10) == "CANCELED"
    widget.close()


def notices(widget):
    """The texts the notice line showed, in order."""
    return [u["state"]["notice"]["text"] for u in updates(widget, "notice")]


def test_the_notice_follows_the_backfill_to_its_end(recording, store, gate):
    widget = nbb.backfill(gated_job(gate, "noticed"), instance=store)
    send_from_front_end(
        widget,
        {"type": "launch", "selection": {"mode": "range", "from": "2024-01-01", "to": "2024-01-05"}, "options": {}},
    )
    backfill_id = widget.backfill["id"]
    assert widget.notice == {**widget.notice, "kind": "info", "text": f"launched backfill {backfill_id}: 5 partitions"}
    gate.set()
    wait_for(
        lambda: widget.notice["text"].startswith(f"backfill {backfill_id} completed"), what="the completion notice"
    )
    assert widget.notice == {
        **widget.notice,
        "kind": "info",
        "text": f"backfill {backfill_id} completed: 5 success — 100% done",
    }

    closed = threading.Event()  # runs of the second backfill wait until canceled
    try:
        widget = nbb.backfill(gated_job(closed, "noticed_again"), instance=store)
        send_from_front_end(widget, {"type": "launch", "selection": {"mode": "all"}, "options": {}})
        backfill_id = widget.backfill["id"]
        send_from_front_end(widget, {"type": "cancel"})
        wait_for(
            lambda: widget.notice["text"].startswith(f"backfill {backfill_id} was canceled"), what="the canceled notice"
        )
        assert widget.notice["kind"] == "info" and widget.notice["text"].endswith(": 60 canceled — 100% done")
        shown = notices(widget)
        assert shown[0] == f"launched backfill {backfill_id}: 60 partitions" and shown[-1] == widget.notice["text"]
    finally:
        closed.set()
    widget.close()

    failing = make_job(fail=("2024-01-02",))
    widget = nbb.backfill(failing, instance=store)
    send_from_front_end(
        widget,
        {"type": "launch", "selection": {"mode": "range", "from": "2024-01-01", "to": "2024-01-03"}, "options": {}},
    )
    backfill_id = widget.backfill["id"]
    wait_for(lambda: "completed with failures" in widget.notice["text"], what="the completed-with-failures notice")
    assert widget.notice == {
        **widget.notice,
        "kind": "error",
        "text": f"backfill {backfill_id} completed with failures: 2 success, 1 failure — 100% done",
    }
    widget.close()


def test_a_backfill_that_ends_before_it_comes_into_view_is_still_announced(recording, store, monkeypatch):
    import nb_backfill.widget as widget_module

    real_launch = widget_module.launch

    def launch_and_finish(*args, **kwargs):  # the quickest backfill: done before the widget shows it
        handle = real_launch(*args, **kwargs)
        handle.wait(timeout=10)
        return handle

    monkeypatch.setattr(widget_module, "launch", launch_and_finish)
    widget = nbb.backfill(make_job(fail=()), instance=store)
    send_from_front_end(
        widget,
        {"type": "launch", "selection": {"mode": "range", "from": "2024-01-01", "to": "2024-01-02"}, "options": {}},
    )
    backfill_id = widget.backfill["id"]
    assert notices(widget) == [
        f"launched backfill {backfill_id}: 2 partitions",
        f"backfill {backfill_id} completed: 2 success — 100% done",
    ]
    widget.close()


def test_a_new_status_is_shown_and_announced_with_the_counts_it_ended_with(recording, store, gate, monkeypatch):
    import nb_backfill.widget as widget_module

    job = gated_job(gate, "raced")
    bf = nbb.launch_backfill(job, from_="2024-01-01", to="2024-01-04", max_workers=4, instance=store)
    widget = bf.widget()
    wait_for(lambda: widget.summary.get("counts") == {"STARTED": 4})
    real_record = widget_module._record

    def finished_meanwhile(storage, backfill_id):  # the store moves on between the feed's read and the header's
        if not gate.is_set():
            gate.set()
            bf.wait(timeout=10)
        return real_record(storage, backfill_id)

    monkeypatch.setattr(widget_module, "_record", finished_meanwhile)
    wait_for(
        lambda: widget.notice.get("text", "").startswith(f"backfill {bf.id} completed"), what="the completion notice"
    )
    assert widget.notice["text"] == f"backfill {bf.id} completed: 4 success — 100% done"  # not "4 started — 0% done"
    assert [u["state"]["summary"]["counts"] for u in updates(widget, "summary")][-1] == {"SUCCESS": 4}
    assert not [
        u
        for u in updates(widget, "summary")
        if u["state"]["summary"]["status"] == "COMPLETED_SUCCESS" and u["state"]["summary"]["counts"] != {"SUCCESS": 4}
    ]  # never the new status with old counts
    assert cells(widget)[:4] == ["success"] * 4
    widget.close()


def test_rates_read_well():
    assert rate_text(1124752.2) == "18,746 runs/s"
    assert rate_text(12) == "12 runs/min" and rate_text(3.44) == "3.4 runs/min"
    assert rate_text(204) == "3.4 runs/s" and rate_text(6000) == "100 runs/s"


def test_the_summary_prints_its_rate_readably(recording, store):
    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition([f"p{i:04d}" for i in range(1200)]))
    def fast(context):
        time.sleep(0.008)

    bf = nbb.launch_backfill(fast, all=True, max_workers=8, instance=store)  # about 1,000 runs/s for a second
    widget = bf.widget()
    assert bf.wait(timeout=30) == "COMPLETED_SUCCESS"
    wait_for(lambda: widget.summary.get("counts") == {"SUCCESS": 1200})
    summaries = [u["state"]["summary"] for u in updates(widget, "summary")]
    rated = [s for s in summaries if s["per_minute"]]
    assert rated, f"no summary carried a rate: {[s['text'] for s in summaries]}"
    for summary in rated:
        text = summary["text"]
        assert rate_text(summary["per_minute"]) in text and "ETA " in text
        number = re.search(r"([\d,.]+) runs/(min|s)", text).group(1)
        assert re.fullmatch(r"\d{1,3}(,\d{3})*(\.\d)?", number), text  # no 1124752.2
    widget.close()


# --- the feed lets go


def _feed_callbacks(feed):
    with feed._lock:
        return [s.callback() for s in feed._subscriptions]


def test_a_closed_widget_is_no_longer_called_and_the_feed_thread_ends(recording, ticks, store, gate):
    job = gated_job(gate, "closing")
    bf = nbb.launch_backfill(job, from_="2024-01-01", to="2024-01-04", instance=store)
    widget = bf.widget()
    feed = Feed.for_storage(store)
    assert feed.following and widget._on_changes in _feed_callbacks(feed)
    clock = []
    stop_clock = feed.subscribe(clock.append, store.last_seq())  # counts the feed's ticks
    wait_for(lambda: widget._ticks >= 2)
    widget.close()
    assert widget._on_changes not in _feed_callbacks(feed)
    wait_for(lambda: len(clock) >= 2)  # a tick under way when it closed may still have called it
    after_close = widget._ticks
    seen = len(clock)
    gate.set()  # the store changes: a widget still followed would be called
    assert bf.wait(timeout=10) == "COMPLETED_SUCCESS"
    wait_for(lambda: len(clock) >= seen + 3)
    assert widget._ticks == after_close
    assert any(clock[seen:]), "the clock saw the runs finish"
    stop_clock()
    wait_for(lambda: not feed.following, timeout=2, what="the feed thread to end")
    assert feed._thread is None
    assert not [t for t in threading.enumerate() if t.name == "nb_backfill-feed" and t is feed._thread]


def test_a_collected_widget_is_dropped_and_the_feed_thread_ends(recording, store):
    widget = nbb.backfill(make_job(), instance=store)
    feed = Feed.for_storage(store)
    wait_for(lambda: feed.following)
    thread = feed._thread
    with feed._lock:  # the feed's next tick waits here: nothing of it holds the widget meanwhile
        super(BackfillWidget, widget).close()  # the comm closes without our close: the subscription stays
        assert len(feed._subscriptions) == 1
        ref = weakref.ref(widget)
        del widget
        gc.collect()
    wait_for(lambda: gc.collect() is not None and ref() is None, timeout=2, what="the closed widget to be collected")
    wait_for(lambda: not feed.following, timeout=2, what="the feed to drop it and end")
    assert feed._subscriptions == [] and not thread.is_alive()


def test_the_feed_holds_its_subscribers_weakly(store):
    calls = []

    class Follower:
        def on_changes(self, changes):
            calls.append(len(changes))

    follower = Follower()
    feed = Feed.for_storage(store)
    feed.subscribe(follower.on_changes, store.last_seq())
    wait_for(lambda: len(calls) >= 3, what="three ticks")  # called every tick, with or without changes
    assert FEED_SECONDS <= 0.2
    ref = weakref.ref(follower)
    del follower
    wait_for(lambda: gc.collect() is not None and ref() is None, timeout=2, what="the follower to be collected")
    wait_for(lambda: not feed.following, timeout=2, what="the feed thread to end")
    assert feed._subscriptions == []
