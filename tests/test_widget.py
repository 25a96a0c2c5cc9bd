"""The widget model without a browser: a recording comm stands in for the front end."""

import time

import comm
import numpy as np
import pytest

import nb_backfill as nbb
from nb_backfill.grid import CANCELED, FAILURE, MISSING, QUEUED, SUCCESS

DAILY = nbb.DailyPartitionsDefinition("2024-01-01", end_date="2024-03-01")  # 60 partitions


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
def store(tmp_path):
    return nbb.get_instance(tmp_path / "store")


def send_from_front_end(widget, content):
    widget.comm.handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


def custom(widget, kind):
    return [(d["content"], b) for t, d, b in widget.comm.messages if d.get("method") == "custom" and d["content"].get("type") == kind]


def updates(widget, trait):
    """State updates of a trait (binary traits travel as buffers named by buffer_paths)."""
    return [
        d for t, d, b in widget.comm.messages
        if d.get("method") == "update" and (trait in d.get("state", {}) or [trait] in d.get("buffer_paths", []))
    ]


def wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def make_job(fail=("2024-01-05",), sleep=0.0):
    @nbb.job(partitions_def=DAILY)
    def daily_job(context):
        print(f"working on {context.partition_key}")
        time.sleep(sleep)
        if context.partition_key in fail:
            raise ValueError(f"no data for {context.partition_key}")

    return daily_job


def test_a_new_widget_shows_the_grid_and_history(recording, store):
    widget = nbb.backfill(make_job(), instance=store)
    assert widget.description == "daily from 2024-01-01, UTC, 60 partitions"
    assert widget.grid["kind"] == "by month" and widget.grid["width"] == 31 and widget.grid["rows"] == 2
    assert len(np.frombuffer(widget.positions, "<u4")) == 60
    assert widget.key_text.decode().split("\n")[:2] == ["2024-01-01", "2024-01-02"]
    assert widget.view == "history" and set(widget.status) == {MISSING} and len(widget.status) == 60
    widget.close()


def test_launch_from_the_front_end_and_watch_deltas(recording, store):
    job = make_job(sleep=0.01)
    widget = nbb.backfill(job, instance=store)
    widget.comm.messages.clear()
    send_from_front_end(widget, {"type": "launch", "selection": {"mode": "range", "from": "2024-01-01", "to": "2024-01-31"}, "options": {"coordinator": "queued", "max_concurrent": "2"}})
    backfill_id = widget.backfill["id"]
    assert widget.view == "backfill" and widget.backfill["coordinator"] == "queued"
    bf = nbb.get_backfill(backfill_id, instance=store)
    assert bf.wait(timeout=20) == "COMPLETED_FAILED"
    wait_for(lambda: widget.summary.get("done") == 31 and widget.backfill["status"] == "COMPLETED_FAILED")

    codes = np.frombuffer(widget.status, np.uint8)
    assert codes[4] == FAILURE and codes[0] == SUCCESS and codes[40] == MISSING and (codes[:31] != QUEUED).all()
    deltas = custom(widget, "delta")
    assert deltas, "no delta was pushed"
    for content, buffers in deltas:
        cells, status, attempts, durations = buffers
        n = content["count"]
        assert (len(cells), len(status), len(attempts), len(durations)) == (4 * n, n, n, 4 * n)
    changed = sum(c["count"] for c, _ in deltas)
    sent = sum(len(b) for _, bufs in deltas for b in bufs)
    assert sent == 10 * changed  # bytes grow with changed cells: 4 + 1 + 1 + 4 a cell
    # pushes are batched: far fewer messages than cell changes, at most one per 100 ms or so
    assert len(deltas) < changed
    # the full status is not re-sent while the backfill runs, only deltas
    assert len(updates(widget, "status")) == 1  # the one full state when the backfill came into view
    assert widget.summary["counts"] == {"SUCCESS": 30, "FAILURE": 1} and widget.summary["percent"] == 100.0
    widget.close()


def test_a_push_that_changes_most_of_the_grid_sends_the_whole_state(recording, store):
    @nbb.job(partitions_def=nbb.StaticPartitionsDefinition(["a", "b", "c", "d"]))
    def quick(context):
        pass

    widget = nbb.backfill(quick, instance=store)
    widget.comm.messages.clear()
    with widget._lock:  # four of four cells change: 40 bytes as a delta, 24 as the whole state
        for cell in range(4):
            widget._mark(cell, SUCCESS, 1)
    widget.flush()
    assert len(custom(widget, "delta")) == 0 and len(updates(widget, "status")) == 1
    with widget._lock:  # one cell: 10 bytes as a delta
        widget._mark(2, FAILURE, 1)
    widget.flush()
    assert len(custom(widget, "delta")) == 1 and len(updates(widget, "status")) == 1
    assert list(np.frombuffer(widget.status, np.uint8)) == [SUCCESS, SUCCESS, FAILURE, SUCCESS]
    widget.close()


def test_preview_counts_what_a_launch_would_run(recording, store):
    widget = nbb.backfill(make_job(), instance=store)
    send_from_front_end(widget, {"type": "preview", "selection": {"mode": "range", "from": "2024-01-10", "to": "2024-01-19"}})
    assert widget.preview == {"count": 10, "first": "2024-01-10", "last": "2024-01-19", "error": None}
    send_from_front_end(widget, {"type": "preview", "selection": {"mode": "range", "from": "2024-01-19", "to": "2024-01-10"}})
    assert widget.preview["count"] == 0 and "comes after" in widget.preview["error"]
    widget.close()


def test_bad_launch_shows_the_error_and_writes_nothing(recording, store):
    widget = nbb.backfill(make_job(), instance=store)
    send_from_front_end(widget, {"type": "launch", "selection": {"mode": "list", "keys": "2024-01-01,nope"}, "options": {}})
    assert widget.notice["kind"] == "error" and "'nope'" in widget.notice["text"]
    send_from_front_end(widget, {"type": "launch", "selection": {"mode": "all"}, "options": {"tags": "novalue"}})
    assert "key=value" in widget.notice["text"] and "novalue" in widget.notice["text"]
    send_from_front_end(widget, {"type": "launch", "selection": {"mode": "all"}, "options": {"coordinator": "queued", "max_concurrent": "two"}})
    assert widget.notice["text"] == "max concurrent must be a whole number >= 1, got 'two'"
    assert store.query("SELECT COUNT(*) FROM backfills")[0][0] == 0
    widget.close()


def test_click_a_cell_for_its_log_and_traceback(recording, store):
    job = make_job()
    bf = nbb.launch_backfill(job, from_="2024-01-04", to="2024-01-06", instance=store)
    bf.wait(timeout=10)
    widget = bf.widget()
    send_from_front_end(widget, {"type": "detail", "cell": 4})
    reply = custom(widget, "detail")[-1][0]
    assert reply["partition"] == "2024-01-05" and reply["status"] == "FAILURE"
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
    send_from_front_end(widget, {"type": "launch", "selection": {"mode": "all"}, "options": {"coordinator": "queued", "max_concurrent": 1}})
    bf = nbb.get_backfill(widget.backfill["id"], instance=store)
    send_from_front_end(widget, {"type": "pause"})
    assert bf.status == "PAUSED"
    send_from_front_end(widget, {"type": "max_concurrent", "value": 4})
    assert bf.record.options["max_concurrent"] == 4
    send_from_front_end(widget, {"type": "resume"})
    assert bf.wait(timeout=20) == "COMPLETED_FAILED"
    broken.clear()
    send_from_front_end(widget, {"type": "retry_failed"})
    assert bf.wait(timeout=20) == "COMPLETED_SUCCESS"
    wait_for(lambda: widget.summary["counts"] == {"SUCCESS": 60})  # pushed by the flusher, a moment later
    assert np.frombuffer(widget.status, np.uint8)[1] == SUCCESS

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
    widget.close()


def test_multi_step_multi_partition_layout(recording, store):
    multi = nbb.MultiPartitionsDefinition({"date": DAILY, "region": nbb.StaticPartitionsDefinition(["eu", "us", "ap"])})

    @nbb.step
    def a():
        return 1

    @nbb.step
    def b(a):
        return a

    widget = nbb.backfill(nbb.Job("matrix", [a, b], multi), instance=store)
    assert widget.grid["kind"] == "matrix" and widget.grid["width"] == 3 and widget.grid["rows"] == 60
    assert widget.steps == ["a", "b"] and len(widget.status) == 180 * 2
    assert widget.description == "date x region, 180 partitions"
    widget.close()


def test_resuming_keeps_a_reopened_widget_live(recording, store):
    gate = {"open": False}

    @nbb.job(partitions_def=DAILY)
    def gated(context):
        while not gate["open"]:
            context.check_canceled()
            time.sleep(0.01)

    bf = nbb.launch_backfill(gated, from_="2024-01-01", to="2024-01-08", max_workers=2, instance=store)
    time.sleep(0.1)
    bf.cancel()
    assert bf.wait(timeout=10) == "CANCELED"
    reopened = nbb.get_backfill(bf.id, instance=store).widget()  # as after a kernel restart
    assert set(np.frombuffer(reopened.status, np.uint8)[:8]) == {CANCELED}
    gate["open"] = True
    nbb.resume_backfill(bf.id, instance=store).wait(timeout=20)
    wait_for(lambda: reopened.summary.get("counts") == {"SUCCESS": 8})
    assert (np.frombuffer(reopened.status, np.uint8)[:8] == SUCCESS).all()
    assert any(c["count"] for c, _ in custom(reopened, "delta"))
    reopened.close()


def test_runs_a_minute_and_eta_come_from_the_last_minute(recording, store):
    widget = nbb.backfill(make_job(), instance=store)
    assert widget._rate(0) == 0.0  # a single sample: no rate yet
    time.sleep(0.6)
    rate = widget._rate(30)
    assert 2000 < rate < 3100  # 30 runs in about 0.6 s
    widget.close()


def test_showing_a_backfill_always_sends_its_whole_state(recording, store):
    # the traits may already hold the state quietly (a flush stores it without syncing); a view
    # change must still reach the front end, or old cells stay painted under the new deltas
    job = make_job()
    bf = nbb.launch_backfill(job, from_="2024-01-01", to="2024-01-03", instance=store)
    bf.wait(timeout=10)
    widget = bf.widget()
    widget.comm.messages.clear()
    widget.show_backfill(bf.id)  # same state as the traits hold
    assert len(updates(widget, "status")) == 1
    widget.close()
