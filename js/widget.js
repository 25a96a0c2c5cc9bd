// The nb_backfill widget front end: a selector, the launch form, and a partitions x steps grid.
// The grid is one pixel block per cell in an ImageData on a small canvas, scaled up by CSS, so
// 300,000 cells paint in milliseconds. The kernel pushes changed cells as binary deltas; this
// module never pulls during a run. Every user-provided text is set with textContent.

// How each kind of cell looks: Okabe-Ito colours, told apart by colour-blind people, and a 4x4
// pattern per kind as the second cue (true = colour, false = a pale tint of it). Which kinds
// exist, and their codes, come from the kernel (the model's `codes`), never from a list kept here.
export const STYLES = {
  missing: ["#e4e4e4", () => true], // solid
  queued: ["#56b4e9", (r, c) => r === 0 || r === 3 || c === 0 || c === 3], // hollow square
  running: ["#0072b2", (r, c) => (r + c) % 4 < 2], // diagonal stripes
  success: ["#009e73", () => true], // solid
  failure: ["#d55e00", (r, c) => r !== c && r + c !== 3], // a pale cross
  skipped: ["#f0e442", (r) => r % 2 === 0], // horizontal bars
  canceled: ["#cc79a7", (r, c) => c % 2 === 0], // vertical bars
};
const BIG_GRID = 20000; // above this many cells a cell is one pixel, without pattern

function rgba(hex, alpha = 255) {
  const n = parseInt(hex.slice(1), 16);
  return ((alpha << 24) | ((n & 0xff) << 16) | (n & 0xff00) | (n >> 16)) >>> 0;
}

function mix(hex, weight) {
  const n = parseInt(hex.slice(1), 16);
  const c = [n >> 16, (n >> 8) & 0xff, n & 0xff].map((v) => Math.round(v * weight + 255 * (1 - weight)));
  return `#${c.map((v) => v.toString(16).padStart(2, "0")).join("")}`;
}

// The colours and patterns of the cell codes `names` (the model's `codes`), indexed by code.
export function palette(names) {
  const styles = names.map((name) => STYLES[name] || STYLES.missing);
  const masks = styles.map(([, inside]) => {
    let mask = 0; // bit (row * 4 + column) set where the pattern takes the colour
    for (let r = 0; r < 4; r++) for (let c = 0; c < 4; c++) if (inside(r, c)) mask |= 1 << (r * 4 + c);
    return mask;
  });
  return { names, solid: styles.map(([color]) => rgba(color)), pale: styles.map(([color]) => rgba(mix(color, 0.3))), masks };
}

export function bytes(view) {
  if (!view) return new Uint8Array(0);
  if (view instanceof Uint8Array) return view;
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

function typed(view, Type) {
  const raw = bytes(view);
  if (raw.byteOffset % Type.BYTES_PER_ELEMENT === 0) {
    return new Type(raw.buffer, raw.byteOffset, Math.floor(raw.byteLength / Type.BYTES_PER_ELEMENT));
  }
  return new Type(raw.slice().buffer);
}

export const u32 = (view) => typed(view, Uint32Array);
export const f32 = (view) => typed(view, Float32Array);

export function decodeKeys(view) {
  const raw = bytes(view);
  return raw.length ? new TextDecoder().decode(raw).split("\n") : [];
}

// Grid geometry: partition p, step s -> cell (x, y) = (column, row * steps + s).
export function geometry(grid, positions, steps) {
  const width = Math.max(1, grid.width | 0);
  const rows = Math.max(1, grid.rows | 0);
  const cells = positions.length * steps;
  const scale = cells > BIG_GRID ? 1 : 4;
  return { width, rows, steps, scale, pixelWidth: width * scale, pixelHeight: rows * steps * scale };
}

export function partitionAt(geo, lookup, x, y) {
  if (x < 0 || y < 0 || x >= geo.width || y >= geo.rows * geo.steps) return null;
  const row = Math.floor(y / geo.steps);
  const partition = lookup[row * geo.width + x];
  return partition < 0 ? null : { partition, step: y % geo.steps, cell: partition * geo.steps + (y % geo.steps) };
}

export function lookupTable(geo, positions) {
  const table = new Int32Array(geo.width * geo.rows).fill(-1);
  for (let p = 0; p < positions.length; p++) table[positions[p]] = p;
  return table;
}

// Paint cells into a Uint32 view of ImageData pixels; returns the touched bounding box.
export function paint(pixels, geo, positions, status, cells, colors) {
  const { width, steps, scale, pixelWidth } = geo;
  let x0 = Infinity, y0 = Infinity, x1 = -1, y1 = -1;
  const count = cells ? cells.length : positions.length * steps;
  for (let i = 0; i < count; i++) {
    const cell = cells ? cells[i] : i;
    const p = (cell / steps) | 0;
    const s = cell - p * steps;
    const pos = positions[p];
    const x = pos % width;
    const y = ((pos / width) | 0) * steps + s;
    const code = status[cell] < colors.solid.length ? status[cell] : 0;
    if (scale === 1) {
      pixels[y * pixelWidth + x] = colors.solid[code];
    } else {
      const mask = colors.masks[code], solid = colors.solid[code], pale = colors.pale[code];
      for (let dy = 0; dy < 4; dy++) {
        const base = (y * 4 + dy) * pixelWidth + x * 4;
        for (let dx = 0; dx < 4; dx++) pixels[base + dx] = (mask >> (dy * 4 + dx)) & 1 ? solid : pale;
      }
    }
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  return x1 < 0 ? null : { x: x0 * scale, y: y0 * scale, w: (x1 - x0 + 1) * scale, h: (y1 - y0 + 1) * scale };
}

// Apply a delta message to the model's buffers in place, so every view (and a view opened
// later) sees the current state. Returns the changed cells.
export function applyDelta(model, buffers) {
  const cells = u32(buffers[0]);
  const codes = bytes(buffers[1]);
  const attempts = bytes(buffers[2]);
  const durations = f32(buffers[3]);
  const status = bytes(model.get("status"));
  const attempt = bytes(model.get("attempts"));
  const duration = f32(model.get("durations"));
  for (let i = 0; i < cells.length; i++) {
    const c = cells[i];
    if (c < status.length) {
      status[c] = codes[i];
      attempt[c] = attempts[i];
      if (c < duration.length) duration[c] = durations[i];
    }
  }
  return cells;
}

/** The Dask dashboard of a backfill run on Dask: an http(s) address only (never a script URL). */
export function dashboardLink(backfill) {
  const link = backfill && backfill.executor === "dask" ? backfill.dashboard : null;
  return typeof link === "string" && /^https?:\/\//i.test(link) ? link : null;
}

export function formatDuration(seconds) {
  if (seconds == null || Number.isNaN(seconds)) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}


function h(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function select(name, options, value) {
  const node = h("select", { name, class: `nbb-${name}` });
  for (const [v, label] of options) node.append(h("option", { value: v, text: label }));
  node.value = value;
  return node;
}

function legend(colors) {
  const node = h("div", { class: "nbb-legend" });
  colors.names.forEach((name, code) => {
    const swatch = h("canvas", { width: 4, height: 4, class: "nbb-swatch", title: name });
    const ctx = swatch.getContext && swatch.getContext("2d");
    if (ctx) {
      const image = ctx.createImageData(4, 4);
      paint(new Uint32Array(image.data.buffer), { width: 1, steps: 1, scale: 4, pixelWidth: 4 }, [0], [code], null, colors);
      ctx.putImageData(image, 0, 0);
    }
    node.append(h("span", { class: `nbb-legend-item nbb-${name}` }, [swatch, h("span", { text: name })]));
  });
  return node;
}

function render({ model, el }) {
  const colors = palette(model.get("codes") || []);
  const root = h("div", { class: "nbb-widget" });
  el.replaceChildren(root);

  // header
  const title = h("div", { class: "nbb-title" });
  const backfillLine = h("div", { class: "nbb-backfill" });
  const backfillError = h("pre", { class: "nbb-backfill-error nbb-error", hidden: "" }); // why the backfill FAILED
  const dashboard = h("a", { class: "nbb-dashboard", target: "_blank", rel: "noopener noreferrer", text: "Dask dashboard", hidden: "" });
  // selector and launch form
  const mode = select("mode", [["all", "all"], ["range", "from-to range"], ["list", "list of keys"], ["missing", "missing only"], ["failed", "failed only"]], "all");
  const from = h("input", { class: "nbb-from", placeholder: "from", size: 16 });
  const to = h("input", { class: "nbb-to", placeholder: "to", size: 16 });
  const list = h("input", { class: "nbb-list", placeholder: "key1, key2, \"key,with,commas\"", size: 40 });
  const preview = h("span", { class: "nbb-preview" });
  const coordinator = select("coordinator", [["default", "default coordinator"], ["queued", "queued coordinator"]], "default");
  const maxConcurrent = h("input", { class: "nbb-max-concurrent", type: "number", min: 1, placeholder: "max concurrent", size: 6 });
  const executor = select("executor", [["thread", "threads"], ["process", "processes"], ["dask", "Dask cluster"]], "thread");
  const order = select("order", [["asc", "oldest first"], ["desc", "newest first"]], "asc");
  const tags = h("input", { class: "nbb-tags", placeholder: "tags: key=value, ...", size: 20 });
  const launch = h("button", { class: "nbb-launch", text: "Launch backfill" });
  // live controls
  const summary = h("span", { class: "nbb-summary" });
  const cancel = h("button", { class: "nbb-cancel", text: "Cancel" });
  const pause = h("button", { class: "nbb-pause", text: "Pause" });
  const retry = h("button", { class: "nbb-retry", text: "Retry failed" });
  const liveConcurrency = h("input", { class: "nbb-live-concurrency", type: "number", min: 1, size: 4, title: "max concurrent runs" });
  const setConcurrency = h("button", { class: "nbb-set-concurrency", text: "Set" });
  const history = h("input", { class: "nbb-history", type: "checkbox" });
  const notice = h("div", { class: "nbb-notice" });
  // grid, tooltip and detail pane
  const canvas = h("canvas", { class: "nbb-grid" });
  const tooltip = h("div", { class: "nbb-tooltip", hidden: "" });
  const rowLabels = h("div", { class: "nbb-row-labels" });
  const gridBox = h("div", { class: "nbb-grid-box" }, [rowLabels, h("div", { class: "nbb-canvas-box" }, [canvas])]);
  const detail = h("div", { class: "nbb-detail", hidden: "" });

  root.append(
    h("div", { class: "nbb-header" }, [title, backfillLine, dashboard, backfillError]),
    h("div", { class: "nbb-selector" }, [h("span", { text: "Partitions: " }), mode, from, to, list, preview]),
    h("div", { class: "nbb-options" }, [coordinator, maxConcurrent, executor, order, tags, launch]),
    h("div", { class: "nbb-controls" }, [summary, cancel, pause, retry, liveConcurrency, setConcurrency,
      h("label", { class: "nbb-history-label" }, [history, h("span", { text: " all history" })])]),
    notice,
    legend(colors),
    gridBox,
    detail,
    tooltip, // outside the scrolling grid, so it is never clipped
  );

  let keys = null;
  const keyOf = (p) => (keys || (keys = decodeKeys(model.get("key_text"))))[p];
  let geo, positions, lookup, image, ctx;

  function selection() {
    return { mode: mode.value, from: from.value.trim(), to: to.value.trim(), keys: list.value };
  }
  function showSelector() {
    from.hidden = to.hidden = mode.value !== "range";
    list.hidden = mode.value !== "list";
  }
  function askPreview() {
    showSelector();
    model.send({ type: "preview", selection: selection() });
  }

  function drawAll() {
    positions = u32(model.get("positions"));
    geo = geometry(model.get("grid"), positions, model.get("steps").length || 1);
    lookup = null;
    canvas.width = geo.pixelWidth;
    canvas.height = geo.pixelHeight;
    const cssCell = Math.max(3, Math.min(16, Math.floor(720 / geo.width)));
    canvas.style.width = `${geo.width * cssCell}px`;
    canvas.style.height = `${geo.rows * geo.steps * cssCell}px`;
    showRowLabels(cssCell * geo.steps);
    ctx = canvas.getContext("2d");
    if (!ctx) return;
    image = ctx.createImageData(geo.pixelWidth, geo.pixelHeight);
    paint(new Uint32Array(image.data.buffer), geo, positions, bytes(model.get("status")), null, colors);
    ctx.putImageData(image, 0, 0);
  }
  function showRowLabels(rowHeight) {
    // one label a row while rows are tall enough to read and few enough to be cheap
    const labels = (model.get("grid") || {}).row_labels || [];
    const shown = rowHeight >= 12 && labels.length <= 1000 ? labels : [];
    rowLabels.replaceChildren(...shown.map((text) => h("div", { class: "nbb-row-label", text, style: `height:${rowHeight}px;line-height:${rowHeight}px` })));
  }
  function drawCells(cells) {
    if (!ctx || !image) return;
    const box = paint(new Uint32Array(image.data.buffer), geo, positions, bytes(model.get("status")), cells, colors);
    if (box) ctx.putImageData(image, 0, 0, box.x, box.y, box.w, box.h);
  }

  function cellAt(event) {
    if (!geo) return null;
    const rect = canvas.getBoundingClientRect();
    const x = Math.floor(((event.clientX - rect.left) / rect.width) * geo.width);
    const y = Math.floor(((event.clientY - rect.top) / rect.height) * geo.rows * geo.steps);
    lookup = lookup || lookupTable(geo, positions);
    return partitionAt(geo, lookup, x, y);
  }

  function describeCell(hit) {
    const status = bytes(model.get("status"))[hit.cell];
    const attempt = bytes(model.get("attempts"))[hit.cell];
    const duration = f32(model.get("durations"))[hit.cell];
    const step = model.get("steps")[hit.step] || "";
    const parts = [keyOf(hit.partition), step, colors.names[status] || "?"];
    if (attempt) parts.push(`attempt ${attempt}`);
    const took = formatDuration(duration);
    if (took) parts.push(took);
    return parts.join(" · ");
  }

  let dragFrom = null;
  canvas.addEventListener("mousemove", (event) => {
    const hit = cellAt(event);
    if (!hit) {
      tooltip.hidden = true;
      return;
    }
    tooltip.textContent = describeCell(hit);
    tooltip.hidden = false;
    const origin = root.getBoundingClientRect();
    tooltip.style.left = `${event.clientX - origin.left + 12}px`;
    tooltip.style.top = `${event.clientY - origin.top + 12}px`;
    if (dragFrom && hit.partition !== dragFrom.partition) {
      const [a, b] = [dragFrom.partition, hit.partition].sort((x, y) => x - y);
      preview.textContent = `${b - a + 1} partitions: ${keyOf(a)} … ${keyOf(b)}`;
    }
  });
  canvas.addEventListener("mouseleave", () => (tooltip.hidden = true));
  canvas.addEventListener("mousedown", (event) => {
    dragFrom = cellAt(event);
    event.preventDefault();
  });
  canvas.addEventListener("mouseup", (event) => {
    const hit = cellAt(event);
    const start = dragFrom;
    dragFrom = null;
    if (!hit || !start) return;
    if (hit.partition === start.partition) {
      model.send({ type: "detail", cell: hit.cell });
      return;
    }
    const [a, b] = [start.partition, hit.partition].sort((x, y) => x - y);
    mode.value = "range";
    from.value = keyOf(a);
    to.value = keyOf(b);
    askPreview();
  });

  mode.addEventListener("change", askPreview);
  for (const input of [from, to, list]) input.addEventListener("change", askPreview);
  launch.addEventListener("click", () =>
    model.send({
      type: "launch",
      selection: selection(),
      options: { coordinator: coordinator.value, max_concurrent: maxConcurrent.value, executor: executor.value, order: order.value, tags: tags.value },
    }),
  );
  cancel.addEventListener("click", () => model.send({ type: "cancel" }));
  pause.addEventListener("click", () => model.send({ type: (model.get("backfill") || {}).status === "PAUSED" ? "resume" : "pause" }));
  retry.addEventListener("click", () => model.send({ type: "retry_failed" }));
  // what was typed, as typed: the kernel says what is wrong with it
  setConcurrency.addEventListener("click", () => model.send({ type: "max_concurrent", value: liveConcurrency.value }));
  history.addEventListener("change", () => {
    model.set("view", history.checked ? "history" : "backfill");
    model.save_changes();
  });

  function showHeader() {
    title.replaceChildren(h("b", { text: model.get("job_name") }), h("span", { text: ` — ${model.get("description")}` }));
    const b = model.get("backfill") || {};
    if (!b.id) {
      backfillLine.textContent = "no backfill yet: choose partitions and press Launch backfill";
    } else {
      const started = new Date(b.created * 1000);
      const end = b.ended ? b.ended * 1000 : Date.now();
      // who runs it ("this process", "pid 123 on host", "stopped: resume it"); nothing once done
      const parts = [`backfill ${b.id}`, b.status, ...(b.process ? [b.process] : [])];
      parts.push(`started ${started.toLocaleString()}`, `elapsed ${formatDuration((end - b.created * 1000) / 1000)}`);
      backfillLine.textContent = parts.join(" · ");
      backfillLine.dataset.status = b.status;
    }
    const link = dashboardLink(b);
    dashboard.hidden = !link;
    if (link && dashboard.getAttribute("href") !== link) dashboard.setAttribute("href", link);
    if (backfillError.textContent !== (b.error || "")) backfillError.textContent = b.error || "";
    backfillError.hidden = !(b.id && b.error);
    const running = b.id && !b.done;
    cancel.disabled = pause.disabled = !running;
    pause.textContent = b.status === "PAUSED" ? "Resume" : "Pause";
    retry.disabled = !b.id;
    setConcurrency.disabled = !running;
    if (b.max_concurrent && document.activeElement !== liveConcurrency) liveConcurrency.value = b.max_concurrent;
    history.checked = model.get("view") === "history";
  }
  function showSummary() {
    summary.textContent = (model.get("summary") || {}).text || "";
  }
  function showPreview() {
    const p = model.get("preview") || {};
    preview.textContent = p.error ? p.error : p.count != null ? `${p.count} partitions${p.count ? `: ${p.first} … ${p.last}` : ""}` : "";
    preview.classList.toggle("nbb-error", !!p.error);
  }
  function showNotice() {
    const n = model.get("notice") || {};
    notice.textContent = n.text || "";
    notice.className = `nbb-notice nbb-${n.kind || "info"}`;
  }
  function showDetail(msg) {
    detail.hidden = false;
    const log = h("pre", { class: "nbb-log", text: msg.log || "(no output)" });
    const children = [
      h("div", { class: "nbb-detail-title", text: `${msg.partition} · ${msg.step} · ${msg.status || "not run"}${msg.attempt ? ` · attempt ${msg.attempt}` : ""}` }),
      h("div", { text: "Captured log" }), log,
    ];
    if (msg.error) children.push(h("div", { text: "Error" }), h("pre", { class: "nbb-error-text", text: msg.error }));
    children.push(h("button", { class: "nbb-close", text: "Close", onclick: () => (detail.hidden = true) }));
    detail.replaceChildren(...children);
  }

  const onMessage = (msg, buffers) => {
    if (msg.type === "delta") drawCells(u32(buffers[0]));
    else if (msg.type === "detail") showDetail(msg);
  };
  const handlers = [
    ["msg:custom", onMessage],
    ["change:status", drawAll],
    ["change:positions", drawAll],
    ["change:backfill", showHeader],
    ["change:view", showHeader],
    ["change:summary", showSummary],
    ["change:preview", showPreview],
    ["change:notice", showNotice],
  ];
  for (const [name, fn] of handlers) model.on(name, fn);
  const clock = setInterval(showHeader, 1000);

  showSelector();
  showHeader();
  showSummary();
  showPreview();
  showNotice();
  drawAll();
  return () => {
    clearInterval(clock);
    for (const [name, fn] of handlers) model.off(name, fn);
  };
}

function initialize({ model }) {
  // Registered once per model, before any view: keeps the model's buffers current.
  model.on("msg:custom", (msg, buffers) => {
    if (msg.type === "delta") applyDelta(model, buffers);
  });
}

export default { initialize, render };
