// Unit tests of the widget's ES module: pure functions, then render() with a fake model in happy-dom.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Window } from "happy-dom";

import widget, {
  STYLES,
  applyDelta,
  dashboardLink,
  decodeKeys,
  formatDuration,
  geometry,
  lookupTable,
  paint,
  palette,
  partitionAt,
} from "../widget.js";

// The cell names the kernel sends (nb_backfill.statuses.CELLS), in its order.
const NAMES = ["missing", "queued", "running", "success", "failure", "skipped", "canceled"];
const COLORS = palette(NAMES);

const dv = (typedArray) => new DataView(typedArray.buffer, typedArray.byteOffset, typedArray.byteLength);

class FakeModel {
  constructor(state) {
    this.state = { ...state };
    this.handlers = {};
    this.sent = [];
    this.saved = 0;
  }
  get(name) { return this.state[name]; }
  set(name, value) { this.state[name] = value; this.emit(`change:${name}`); }
  save_changes() { this.saved += 1; }
  send(content) { this.sent.push(content); }
  on(name, fn) { (this.handlers[name] ||= []).push(fn); }
  off(name, fn) { this.handlers[name] = (this.handlers[name] || []).filter((f) => f !== fn); }
  emit(name, ...args) { for (const fn of this.handlers[name] || []) fn(...args); }
}

function modelFor(keys, steps = ["only"], width = 31) {
  const positions = new Uint32Array(keys.length).map((_, i) => i);
  const cells = keys.length * steps.length;
  return new FakeModel({
    job_name: "daily_sales",
    description: "daily from 2024-01-01, UTC, 3 partitions",
    steps,
    key_text: dv(new TextEncoder().encode(keys.join("\n"))),
    grid: { kind: "by month", width, rows: Math.ceil(keys.length / width), row_labels: [] },
    positions: dv(positions),
    status: dv(new Uint8Array(cells)),
    attempts: dv(new Uint8Array(cells)),
    durations: dv(new Float32Array(cells).fill(NaN)),
    codes: NAMES,
    backfill: {},
    summary: {},
    view: "backfill",
    preview: {},
    notice: {},
  });
}

test("every status has its own colour and pattern", () => {
  assert.deepEqual(Object.keys(STYLES).sort(), [...NAMES].sort()); // a style for each name the kernel sends
  assert.equal(new Set(COLORS.solid).size, 7);
  assert.equal(COLORS.masks.length, 7);
  // patterns tell apart the statuses that matter most even without colour
  assert.equal(new Set(COLORS.masks.slice(1)).size, 6);
  // codes follow the kernel's order, whatever it is
  const reordered = palette(["success", "missing"]);
  assert.equal(reordered.solid[0], COLORS.solid[3]);
  assert.equal(palette(["no-such-kind"]).solid[0], COLORS.solid[0]); // an unknown kind shows as missing
});

test("paint fills each cell's block and reports the box it touched", () => {
  const geo = geometry({ width: 3, rows: 1 }, new Uint32Array([0, 1, 2]), 2);
  assert.deepEqual([geo.scale, geo.pixelWidth, geo.pixelHeight], [4, 12, 8]);
  const pixels = new Uint32Array(geo.pixelWidth * geo.pixelHeight);
  const status = new Uint8Array([3, 4, 0, 0, 0, 0]); // partition 0: success, failure
  const box = paint(pixels, geo, new Uint32Array([0, 1, 2]), status, new Uint32Array([0, 1]), COLORS);
  assert.deepEqual(box, { x: 0, y: 0, w: 4, h: 8 });
  assert.equal(pixels[0], COLORS.solid[3]); // success: solid
  assert.equal(pixels[4 * 12 + 0], COLORS.pale[4]); // failure's cross: pale on the diagonal
  assert.equal(pixels[4 * 12 + 1], COLORS.solid[4]);
});

test("big grids paint one pixel a cell", () => {
  const n = 30000;
  const positions = new Uint32Array(n).map((_, i) => i);
  const geo = geometry({ width: 200, rows: 150 }, positions, 1);
  assert.equal(geo.scale, 1);
  const pixels = new Uint32Array(geo.pixelWidth * geo.pixelHeight);
  const status = new Uint8Array(n).fill(2);
  const start = performance.now();
  paint(pixels, geo, positions, status, null, COLORS);
  assert.ok(performance.now() - start < 200);
  assert.equal(pixels[n - 1], COLORS.solid[2]);
});

test("hit testing maps a pixel back to partition, step and cell", () => {
  const positions = new Uint32Array([2, 3, 4]); // starts at column 2 of a 4-wide grid
  const geo = geometry({ width: 4, rows: 2 }, positions, 2);
  const lookup = lookupTable(geo, positions);
  assert.deepEqual(partitionAt(geo, lookup, 3, 1), { partition: 1, step: 1, cell: 3 });
  assert.deepEqual(partitionAt(geo, lookup, 0, 2), { partition: 2, step: 0, cell: 4 });
  assert.equal(partitionAt(geo, lookup, 0, 0), null); // an empty cell
  assert.equal(partitionAt(geo, lookup, 9, 0), null);
});

test("a delta updates the model's buffers in place", () => {
  const model = modelFor(["a", "b", "c"]);
  const cells = applyDelta(model, [dv(new Uint32Array([2, 0])), dv(new Uint8Array([4, 3])), dv(new Uint8Array([2, 1])), dv(new Float32Array([1.5, 0.25]))]);
  assert.deepEqual([...cells], [2, 0]);
  assert.deepEqual([...new Uint8Array(model.get("status").buffer)], [3, 0, 4]);
  assert.deepEqual([...new Uint8Array(model.get("attempts").buffer)], [1, 0, 2]);
  assert.equal(new Float32Array(model.get("durations").buffer)[2], 1.5);
});

test("keys and durations read well", () => {
  assert.deepEqual(decodeKeys(dv(new TextEncoder().encode("2024-01-01\n2024-01-02"))), ["2024-01-01", "2024-01-02"]);
  assert.deepEqual(decodeKeys(null), []);
  assert.equal(formatDuration(0.0123), "12 ms");
  assert.equal(formatDuration(75), "1 min 15 s");
  assert.equal(formatDuration(NaN), "");
});

test("the Dask dashboard link is shown only for an http(s) address of a Dask backfill", () => {
  assert.equal(dashboardLink({ executor: "dask", dashboard: "http://127.0.0.1:8787/status" }), "http://127.0.0.1:8787/status");
  assert.equal(dashboardLink({ executor: "dask", dashboard: "javascript:alert(1)" }), null);
  assert.equal(dashboardLink({ executor: "thread", dashboard: "http://x/status" }), null);
  assert.equal(dashboardLink({ executor: "dask", dashboard: null }), null);
  assert.equal(dashboardLink(null), null);
});

function withDom(fn) {
  const window = new Window();
  const saved = { document: globalThis.document };
  globalThis.document = window.document;
  try {
    return fn(window.document);
  } finally {
    globalThis.document = saved.document;
    window.happyDOM.abort();
  }
}

test("render builds the widget and sends what the buttons mean", () =>
  withDom((document) => {
    const model = modelFor(["2024-01-01", "2024-01-02", "2024-01-03"]);
    widget.initialize({ model });
    const el = document.createElement("div");
    const cleanup = widget.render({ model, el });
    assert.match(el.querySelector(".nbb-title").textContent, /daily_sales — daily from 2024-01-01/);
    assert.match(el.querySelector(".nbb-backfill").textContent, /no backfill yet/);
    assert.equal(el.querySelectorAll(".nbb-legend-item").length, 7);

    const mode = el.querySelector(".nbb-mode");
    mode.value = "range";
    mode.dispatchEvent(new document.defaultView.Event("change"));
    assert.equal(el.querySelector(".nbb-from").hidden, false);
    assert.deepEqual(model.sent.at(-1), { type: "preview", selection: { mode: "range", from: "", to: "", keys: "" } });

    el.querySelector(".nbb-launch").click();
    assert.equal(model.sent.at(-1).type, "launch");
    assert.equal(model.sent.at(-1).options.coordinator, "default");

    model.set("backfill", { id: "abcdefgh", status: "REQUESTED", created: Date.now() / 1000, max_concurrent: 2, process: "pid 4242 on lab" });
    assert.match(el.querySelector(".nbb-backfill").textContent, /^backfill abcdefgh · REQUESTED · pid 4242 on lab · started /);
    assert.equal(el.querySelector(".nbb-backfill-error").hidden, true);
    el.querySelector(".nbb-pause").click();
    assert.deepEqual(model.sent.at(-1), { type: "pause" });
    model.set("backfill", { id: "abcdefgh", status: "PAUSED", created: Date.now() / 1000 });
    assert.equal(el.querySelector(".nbb-pause").textContent, "Resume");
    el.querySelector(".nbb-pause").click();
    assert.deepEqual(model.sent.at(-1), { type: "resume" });
    el.querySelector(".nbb-cancel").click();
    assert.deepEqual(model.sent.at(-1), { type: "cancel" });
    el.querySelector(".nbb-retry").click();
    assert.deepEqual(model.sent.at(-1), { type: "retry_failed" });
    const liveConcurrency = el.querySelector(".nbb-live-concurrency");

    const history = el.querySelector(".nbb-history");
    history.checked = true;
    history.dispatchEvent(new document.defaultView.Event("change"));
    assert.equal(model.get("view"), "history");
    assert.equal(model.saved, 1);

    model.set("summary", { total: 3, text: "3 success — 100% done" }); // the kernel words it (progress.Progress.line)
    assert.equal(el.querySelector(".nbb-summary").textContent, "3 success — 100% done");
    liveConcurrency.value = "2.5";
    el.querySelector(".nbb-set-concurrency").click();
    assert.deepEqual(model.sent.at(-1), { type: "max_concurrent", value: "2.5" }); // as typed: the kernel judges it
    model.set("backfill", { id: "abcdefgh", status: "CANCELED", created: Date.now() / 1000, done: true, process: "" });
    assert.equal(el.querySelector(".nbb-cancel").disabled, true);
    assert.match(el.querySelector(".nbb-backfill").textContent, /^backfill abcdefgh · CANCELED · started /); // no process once done
    model.set("backfill", { id: "abcdefgh", status: "FAILED", created: Date.now() / 1000, done: true, error: "could not write to the store for 30 s" });
    assert.equal(el.querySelector(".nbb-backfill-error").hidden, false);
    assert.equal(el.querySelector(".nbb-backfill-error").textContent, "could not write to the store for 30 s");
    cleanup();
    assert.equal((model.handlers["change:summary"] || []).length, 0);
  }));

test("user text is shown as text, never as markup", () =>
  withDom((document) => {
    const evil = "<img src=x onerror=alert(1)>";
    const model = modelFor([evil]);
    model.state.job_name = evil;
    const el = document.createElement("div");
    const cleanup = widget.render({ model, el });
    model.emit("msg:custom", { type: "detail", partition: evil, step: evil, status: "FAILURE", log: evil, error: evil }, []);
    model.set("notice", { kind: "error", text: evil });
    model.set("preview", { count: 0, error: evil });
    model.set("backfill", { id: "abcdefgh", status: "FAILED", created: 0, done: true, error: evil, process: evil });
    assert.equal(el.querySelectorAll("img").length, 0);
    assert.equal(el.querySelector(".nbb-backfill-error").textContent, evil);
    assert.ok(el.querySelector(".nbb-log").textContent.includes(evil));
    assert.ok(el.querySelector(".nbb-title").textContent.includes(evil));
    cleanup();
  }));
