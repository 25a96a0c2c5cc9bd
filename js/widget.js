// The nb_backfill widget front end: a selector, the launch form, a health bar and a partitions x
// steps grid that reads at any size (1 to 1,000,000 partitions, up to 10 steps).
//
// Every step is a band of its own, named when there are several. When every band fits the
// widget's width and MAX_GRID_HEIGHT at a readable cell size, a band is the kernel's calendar-like
// layout (`grid`, `positions`: a row per day, month or year) painted 4 canvas pixels a cell and
// scaled up by CSS. Otherwise the grid is the overview: a band is a strip of bins over the
// partitions in key order, and a bin shows the worst kind among its cells (SEVERITY), so one
// failure among a million still shows; wheel, +/-, arrows and "Fit" zoom and pan it down to one
// bin a partition. The health bar above does the same over the whole key space and every step.
// Bins keep counts of each kind: a delta from the kernel moves changed cells between counts and
// repaints, it never recounts. Hover names the partition, or the range of a bin with its counts,
// and the step; a click on one partition opens its log; a drag fills the selector's from/to.
// The kernel pushes changed cells as binary deltas (applied to the model's buffers once per
// model, in `initialize`); this module never pulls during a run. Colours, fonts and controls come
// from JupyterLab's --jp-* CSS variables (light and dark). Every user-provided text is set with
// textContent.

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
  reused: ["#009e73", (r, c) => (r + c) % 2 === 0], // success's green, checkered: taken from the attempt before
  stale: ["#009e73", (r, c) => (r + 4 - c) % 4 !== 0], // success's green, hatched: succeeded with older code
};

// The kinds from best to worst. A pixel that stands for many cells shows the worst of them, so a
// rare problem is never averaged away: a failure needs action; running and queued say the work is
// not finished (running is what moves); canceled and skipped ended short of success; missing was
// never asked for, which still says more than success (a bin is only green when all of it is); a
// success reused from the attempt before is a success; a stale one (older code) is worse than a
// success and better than nothing at all.
export const SEVERITY = ["reused", "success", "stale", "missing", "skipped", "canceled", "queued", "running", "failure"];
const KINDS = SEVERITY.length;
const MIN_CELL = 6; // css px: a calendar cell smaller than this is hard to read and to point at
const MAX_CELL = 16;
const MAX_GRID_HEIGHT = 480; // css px for all the calendar's bands; a taller calendar becomes the overview
const BAND_CHROME = 22; // css px a calendar band adds: its step name and the gap
const BIN_PX = 2; // css px a bin of the overview and the health bar
const STRIP_HEIGHT = 24; // css px of a step's strip in the overview
const HEALTH_HEIGHT = 12;
const GUTTER = 104; // css px left of every canvas: step names, row labels (see .nbb-gutter)
const FALLBACK_WIDTH = 720; // css px before the widget is laid out
const ZOOM_STEP = 0.8; // a wheel notch or a + keeps this share of the range in view

function rgba(hex, alpha = 255) {
  const n = parseInt(hex.slice(1), 16);
  return ((alpha << 24) | ((n & 0xff) << 16) | (n & 0xff00) | (n >> 16)) >>> 0;
}

function mix(hex, weight, paper = "#ffffff") {
  const [n, m] = [hex, paper].map((h) => parseInt(h.slice(1), 16));
  const c = [16, 8, 0].map((shift) => Math.round(((n >> shift) & 0xff) * weight + ((m >> shift) & 0xff) * (1 - weight)));
  return `#${c.map((v) => v.toString(16).padStart(2, "0")).join("")}`;
}

/** The colours and patterns of the cell codes `names`, indexed by code; `theme` may set the `missing` colour and the `paper` tints fade to. */
export function palette(names, theme = {}) {
  const styles = names.map((name) => STYLES[name] || STYLES.missing);
  const colours = names.map((name, i) => (theme.missing && styles[i] === STYLES.missing ? theme.missing : styles[i][0]));
  const masks = styles.map(([, inside]) => {
    let mask = 0; // bit (row * 4 + column) set where the pattern takes the colour
    for (let r = 0; r < 4; r++) for (let c = 0; c < 4; c++) if (inside(r, c)) mask |= 1 << (r * 4 + c);
    return mask;
  });
  return { names, solid: colours.map((c) => rgba(c)), pale: colours.map((c) => rgba(mix(c, 0.3, theme.paper))), masks };
}

/** The severity (index in SEVERITY) of each cell code of `names`; a kind not in SEVERITY ranks as missing. */
export function severities(names) {
  const rank = new Uint8Array(256).fill(SEVERITY.indexOf("missing"));
  names.forEach((name, code) => SEVERITY.includes(name) && (rank[code] = SEVERITY.indexOf(name)));
  return rank;
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

/** The `count` newline-joined keys of `view`, one decoded on demand: key(p). Equal-length keys need no index. */
export function keyReader(view, count) {
  const raw = bytes(view);
  const decoder = new TextDecoder();
  const first = raw.indexOf(10);
  const stride = (first < 0 ? raw.length : first) + 1;
  let fixed = raw.length === count * stride - 1;
  for (let p = 1; fixed && p < count; p++) fixed = raw[p * stride - 1] === 10;
  let starts = null; // where each key starts, found on the first call when keys differ in length
  const start = (p) => {
    if (fixed) return p * stride;
    if (!starts) {
      starts = new Uint32Array(count + 1);
      let k = 1;
      for (let i = 0; i < raw.length && k < count; i++) if (raw[i] === 10) starts[k++] = i + 1;
      starts[count] = raw.length + 1;
    }
    return starts[p];
  };
  return { count, key: (p) => (p >= 0 && p < count ? decoder.decode(raw.subarray(start(p), start(p + 1) - 1)) : "") };
}

/** The bin of partition p when partitions [from, to) are cut into `bins` runs of nearly equal length. */
export function binOf(from, to, bins, p) {
  return Math.floor(((p - from + 1) * bins - 1) / (to - from));
}

/** The partitions [start, end) of bin b: the inverse of binOf. */
export function binRange(from, to, bins, b) {
  const n = to - from;
  return [from + Math.floor((b * n) / bins), from + Math.floor(((b + 1) * n) / bins)];
}

/** How many cells of each severity each (bin, step) holds: counts[(bin * steps + step) * KINDS + severity]. */
export function binCounts(status, steps, from, to, bins, severity) {
  const counts = new Uint32Array(bins * steps * KINDS);
  const n = to - from;
  let cell = from * steps;
  for (let b = 0; b < bins; b++) {
    const end = (from + Math.floor(((b + 1) * n) / bins)) * steps;
    const base = b * steps * KINDS;
    for (let s = 0; cell < end; cell++) {
      counts[base + s * KINDS + severity[status[cell]]]++;
      if (++s === steps) s = 0;
    }
  }
  return counts;
}

/** Move the cells of a delta (`before` and `after` codes, one a cell) between the counts of each binning ({from, to, bins, counts}). */
export function recount(binnings, steps, cells, before, after, severity) {
  for (const { from, to, bins, counts } of binnings) {
    for (let i = 0; i < cells.length; i++) {
      const p = (cells[i] / steps) | 0;
      if (before[i] === after[i] || p < from || p >= to) continue;
      const base = (binOf(from, to, bins, p) * steps + cells[i] - p * steps) * KINDS;
      counts[base + severity[before[i]]]--;
      counts[base + severity[after[i]]]++;
    }
  }
}

/** The worst severity in each group of `size` counts (size KINDS: a bin's step; steps * KINDS: a bin), -1 for an empty group. */
export function worstOf(counts, size) {
  const worst = new Int8Array(counts.length / size).fill(-1);
  for (let i = 0; i < counts.length; i++) {
    const g = (i / size) | 0;
    if (counts[i] && i % KINDS > worst[g]) worst[g] = i % KINDS;
  }
  return worst;
}

/** Counts of a group in words, worst first: "1 failure, 99,999 success". */
export function countsText(counts, start, size) {
  const total = new Array(KINDS).fill(0);
  for (let i = start; i < start + size; i++) total[i % KINDS] += counts[i];
  return total.map((n, k) => [n, k]).filter(([n]) => n).reverse().map(([n, k]) => `${n.toLocaleString("en-US")} ${SEVERITY[k]}`).join(", ");
}

/** Paint a strip one canvas column a bin, each in the colour and pattern of its worst kind (colors: palette(SEVERITY)); worst[x * stride + offset]. */
export function paintStrip(pixels, width, height, worst, stride, offset, colors) {
  for (let x = 0; x < width; x++) {
    const k = worst[x * stride + offset];
    const [mask, solid, pale] = k < 0 ? [0, 0, 0] : [colors.masks[k], colors.solid[k], colors.pale[k]];
    for (let y = 0; y < height; y++) pixels[y * width + x] = (mask >> ((y & 3) * 4 + (x & 3))) & 1 ? solid : pale;
  }
}

/** Calendar (cell px) when every step's band fits `width` x MAX_GRID_HEIGHT readably, else the overview (bins). */
export function chooseLayout(grid, partitions, steps, width) {
  const columns = Math.max(1, grid.width | 0), rows = Math.max(1, grid.rows | 0);
  const tall = Math.floor((MAX_GRID_HEIGHT - (steps > 1 ? steps * BAND_CHROME : 0)) / (steps * rows));
  const cell = Math.min(MAX_CELL, Math.floor(width / columns), tall);
  if (cell >= MIN_CELL || !partitions) return { mode: "calendar", cell: Math.max(cell, MIN_CELL) };
  return { mode: "overview", bins: Math.max(1, Math.min(partitions, Math.floor(width / BIN_PX))) };
}

/** The calendar's geometry: partition p sits at column positions[p] % width of row positions[p] / width of each band, 4 canvas px a cell. */
export function geometry(grid) {
  const width = Math.max(1, grid.width | 0);
  const rows = Math.max(1, grid.rows | 0);
  return { width, rows, pixelWidth: width * 4, pixelHeight: rows * 4 };
}

/** The partition at cell (x, y) of a calendar band, or null. */
export function partitionAt(geo, lookup, x, y) {
  if (x < 0 || y < 0 || x >= geo.width || y >= geo.rows) return null;
  const partition = lookup[y * geo.width + x];
  return partition < 0 ? null : partition;
}

/** The partition at each calendar position, -1 where none is. */
export function lookupTable(geo, positions) {
  const table = new Int32Array(geo.width * geo.rows).fill(-1);
  for (let p = 0; p < positions.length; p++) table[positions[p]] = p;
  return table;
}

function paintBlock(pixels, pixelWidth, x, y, mask, solid, pale) {
  for (let dy = 0; dy < 4; dy++) {
    const base = (y * 4 + dy) * pixelWidth + x * 4;
    for (let dx = 0; dx < 4; dx++) pixels[base + dx] = (mask >> (dy * 4 + dx)) & 1 ? solid : pale;
  }
}

/** Paint cells (all when `cells` is null) into the calendar bands' pixels, one Uint32Array a step; returns each band's touched box or null. */
export function paint(bands, geo, positions, status, cells, colors) {
  const steps = bands.length;
  const box = bands.map(() => [Infinity, Infinity, -1, -1]);
  const count = cells ? cells.length : positions.length * steps;
  for (let i = 0; i < count; i++) {
    const cell = cells ? cells[i] : i;
    const p = (cell / steps) | 0;
    const s = cell - p * steps;
    if (p >= positions.length) continue;
    const x = positions[p] % geo.width;
    const y = (positions[p] / geo.width) | 0;
    const code = status[cell] < colors.solid.length ? status[cell] : 0;
    paintBlock(bands[s], geo.pixelWidth, x, y, colors.masks[code], colors.solid[code], colors.pale[code]);
    const b = box[s];
    [b[0], b[1], b[2], b[3]] = [Math.min(b[0], x), Math.min(b[1], y), Math.max(b[2], x), Math.max(b[3], y)];
  }
  return box.map(([x0, y0, x1, y1]) => (x1 < 0 ? null : { x: x0 * 4, y: y0 * 4, w: (x1 - x0 + 1) * 4, h: (y1 - y0 + 1) * 4 }));
}

/** Partitions to label under `width` px of the range [from, to): the first, the last and some between, at fractions of the width. */
export function axisTicks(from, to, width, spacing = 160) {
  const count = Math.min(to - from, Math.max(2, Math.floor(width / spacing) + 1));
  if (count <= 1) return to > from ? [{ at: 0, partition: from }] : [];
  return Array.from({ length: count }, (_, i) => {
    const at = i / (count - 1);
    return { at, partition: i === count - 1 ? to - 1 : from + Math.floor(at * (to - from)) };
  });
}

/** The range [from, to) of n partitions zoomed by `factor` (< 1 in) around partition `anchor`, kept within [0, n) and at least 10 wide. */
export function zoomRange([from, to], n, factor, anchor) {
  const span = Math.max(Math.min(n, 10), Math.min(n, Math.round((to - from) * factor)));
  const start = Math.round(anchor - ((anchor - from) * span) / (to - from));
  return panRange([start, start + span], n, 0);
}

/** The range [from, to) moved by `delta` partitions, kept within [0, n). */
export function panRange([from, to], n, delta) {
  const start = Math.max(0, Math.min(n - (to - from), from + Math.round(delta)));
  return [start, start + (to - from)];
}

// Apply a delta message to the model's buffers in place, so every view (and a view opened
// later) sees the current state. Returns the codes the cells had before (a cell out of range
// keeps its code), from which each view moves its bins' counts.
export function applyDelta(model, buffers) {
  const cells = u32(buffers[0]);
  const codes = bytes(buffers[1]);
  const attempts = bytes(buffers[2]);
  const durations = f32(buffers[3]);
  const status = bytes(model.get("status"));
  const attempt = bytes(model.get("attempts"));
  const duration = f32(model.get("durations"));
  const before = codes.slice(0, cells.length);
  for (let i = 0; i < cells.length; i++) {
    const c = cells[i];
    if (c < status.length) {
      before[i] = status[c];
      status[c] = codes[i];
      attempt[c] = attempts[i];
      if (c < duration.length) duration[c] = durations[i];
    }
  }
  return before;
}

// The codes each delta's cells had before it (applyDelta's answer), by the delta's buffers.
const BEFORE = new WeakMap();

/** The Dask dashboard of a backfill run on Dask: an http(s) address only (never a script URL). */
export function dashboardLink(backfill) {
  const link = backfill && backfill.executor === "dask" ? backfill.dashboard : null;
  return typeof link === "string" && /^https?:\/\//i.test(link) ? link : null;
}

/** A duration in seconds for people: "12 ms", "1 min 15 s". */
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

function legendItems(colors) {
  return colors.names.map((name, code) => {
    const swatch = h("canvas", { width: 4, height: 4, class: "nbb-swatch", title: name });
    const ctx = swatch.getContext && swatch.getContext("2d");
    if (ctx) {
      const image = ctx.createImageData(4, 4);
      paintBlock(new Uint32Array(image.data.buffer), 4, 0, 0, colors.masks[code], colors.solid[code], colors.pale[code]);
      ctx.putImageData(image, 0, 0);
    }
    return h("span", { class: `nbb-legend-item nbb-${name}` }, [swatch, h("span", { text: name })]);
  });
}

// The canvas colours the theme sets on .nbb-widget (--nbb-missing, --nbb-paper), as #rrggbb.
function themeOf(node) {
  const view = node.ownerDocument && node.ownerDocument.defaultView;
  const probe = h("canvas").getContext?.("2d");
  if (!probe || !view || !view.getComputedStyle) return {};
  const style = view.getComputedStyle(node);
  const hex = (name) => {
    probe.fillStyle = "#000000";
    probe.fillStyle = style.getPropertyValue(name).trim() || "#000000";
    return /^#[0-9a-f]{6}$/i.test(probe.fillStyle) && style.getPropertyValue(name).trim() ? probe.fillStyle : undefined;
  };
  return { missing: hex("--nbb-missing"), paper: hex("--nbb-paper") };
}

// A canvas and the pixels painted into it (kept in memory when the DOM has no 2d context).
function surface(canvas, width, height) {
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext && canvas.getContext("2d");
  const image = ctx ? ctx.createImageData(width, height) : null;
  return { canvas, ctx, image, pixels: image ? new Uint32Array(image.data.buffer) : new Uint32Array(width * height) };
}

function put(target, box = null) {
  if (!target.ctx) return;
  if (box) target.ctx.putImageData(target.image, 0, 0, box.x, box.y, box.w, box.h);
  else target.ctx.putImageData(target.image, 0, 0);
}

const count = (n) => n.toLocaleString("en-US");

function render({ model, el }) {
  const names = model.get("codes") || [];
  const severity = severities(names);
  const root = h("div", { class: "nbb-widget" });
  el.replaceChildren(root);

  // header
  const title = h("div", { class: "nbb-title" });
  const backfillLine = h("div", { class: "nbb-backfill" });
  const backfillError = h("pre", { class: "nbb-backfill-error nbb-error", hidden: "" }); // why the backfill FAILED
  const dashboard = h("a", { class: "nbb-dashboard", target: "_blank", rel: "noopener noreferrer", text: "Dask dashboard", hidden: "" });
  // selector and launch form
  const mode = select("mode", [["all", "all"], ["range", "from-to range"], ["list", "list of keys"], ["missing", "missing only"], ["failed", "failed only"], ["stale", "stale only"]], "all");
  const from = h("input", { class: "nbb-from", placeholder: "from", size: 16 });
  const to = h("input", { class: "nbb-to", placeholder: "to", size: 16 });
  const list = h("input", { class: "nbb-list", placeholder: "key1, key2, \"key,with,commas\"", size: 40 });
  const preview = h("span", { class: "nbb-preview" });
  const coordinator = select("coordinator", [["default", "default coordinator"], ["queued", "queued coordinator"]], "default");
  const maxConcurrent = h("input", { class: "nbb-max-concurrent", type: "number", min: 1, placeholder: "max concurrent", size: 6 });
  const executor = select("executor", [["thread", "threads"], ["process", "processes"], ["dask", "Dask cluster"]], "thread");
  const order = select("order", [["asc", "oldest first"], ["desc", "newest first"], ["canary", "canaries first"]], "asc");
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
  const legend = h("div", { class: "nbb-legend" });
  // health bar, zoom controls, grid bands and their axis, tooltip and detail pane
  const healthCanvas = h("canvas", { class: "nbb-health", "data-step": "-1" });
  const healthView = h("div", { class: "nbb-health-view", hidden: "" }); // the overview's zoomed range
  const healthName = h("div", { class: "nbb-gutter" });
  const [healthFirst, healthCount, healthLast] = ["first", "count", "last"].map((k) => h("span", { class: `nbb-health-${k}` }));
  const health = h("div", { class: "nbb-health-box" }, [
    healthName,
    h("div", { class: "nbb-health-body" }, [
      h("div", { class: "nbb-health-track" }, [healthCanvas, healthView]),
      h("div", { class: "nbb-health-keys" }, [healthFirst, healthCount, healthLast]),
    ]),
  ]);
  const zoomOut = h("button", { class: "nbb-zoom-out", text: "−", title: "zoom out (-)", "aria-label": "zoom out" });
  const zoomIn = h("button", { class: "nbb-zoom-in", text: "+", title: "zoom in (+, wheel)", "aria-label": "zoom in" });
  const fit = h("button", { class: "nbb-fit", text: "Fit", title: "show every partition (0)" });
  const zoomText = h("span", { class: "nbb-zoom-text" });
  const zoomBar = h("div", { class: "nbb-zoom", hidden: "" }, [zoomOut, zoomIn, fit, zoomText]);
  const bandsBox = h("div", { class: "nbb-bands" });
  const axis = h("div", { class: "nbb-axis" });
  const gridBox = h("div", { class: "nbb-grid-box", tabindex: "0", "aria-label": "partitions by step" }, [bandsBox, axis]);
  const plot = h("div", { class: "nbb-plot" }, [health, zoomBar, gridBox]);
  const tooltip = h("div", { class: "nbb-tooltip", hidden: "" });
  const detail = h("div", { class: "nbb-detail", hidden: "" });

  root.append(
    h("div", { class: "nbb-header" }, [title, backfillLine, dashboard, backfillError]),
    h("div", { class: "nbb-selector" }, [h("span", { text: "Partitions: " }), mode, from, to, list, preview]),
    h("div", { class: "nbb-options" }, [coordinator, maxConcurrent, executor, order, tags, launch]),
    h("div", { class: "nbb-controls" }, [summary, cancel, pause, retry, liveConcurrency, setConcurrency,
      h("label", { class: "nbb-history-label" }, [history, h("span", { text: " all history" })])]),
    notice,
    legend,
    plot,
    detail,
    tooltip, // outside the grid, so it is never clipped
  );

  // What is drawn: n partitions x steps; `whole` bins every partition (the health bar), `view`
  // the overview's range (whole when not zoomed). Their counts follow the model's status through
  // every delta, as each one says what its cells were before.
  let n = 0, steps = 1, width = 0, reader, positions, layout, geo, lookup, whole, view, bands = [];
  let colors, kinds, zoom = null;
  // the canvases' css width: the widget's less the gutter (the last one known while it is not laid out)
  const measure = () => (root.clientWidth ? Math.max(120, root.clientWidth - GUTTER) : width || FALLBACK_WIDTH - GUTTER);
  const stepName = (s) => (model.get("steps") || [])[s] || "";
  const binning = (from, to, bins) => ({ from, to, bins, counts: binCounts(bytes(model.get("status")), steps, from, to, bins, severity) });

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
    const theme = themeOf(root);
    colors = palette(names, theme);
    kinds = palette(SEVERITY, theme);
    legend.replaceChildren(...legendItems(colors));
    positions = u32(model.get("positions"));
    n = positions.length;
    steps = Math.max(1, (model.get("steps") || []).length);
    reader = keyReader(model.get("key_text"), n);
    width = measure();
    layout = chooseLayout(model.get("grid") || {}, n, steps, width);
    if (layout.mode !== "overview" || (zoom && zoom[1] > n)) zoom = null;
    whole = binning(0, n, Math.max(1, Math.min(n, Math.floor(width / BIN_PX))));
    health.hidden = !n;
    healthName.textContent = steps > 1 ? "all steps" : "";
    healthFirst.textContent = reader.key(0);
    healthLast.textContent = n > 1 ? reader.key(n - 1) : "";
    healthCount.textContent = `${count(n)} partition${n === 1 ? "" : "s"}`;
    healthSurface = surface(healthCanvas, whole.bins, HEALTH_HEIGHT);
    healthCanvas.style.width = `${width}px`;
    healthCanvas.style.height = `${HEALTH_HEIGHT}px`;
    paintHealth();
    bands = Array.from({ length: steps }, (_, s) => h("canvas", { class: "nbb-grid", "data-step": String(s) }));
    if (layout.mode === "calendar") drawCalendar();
    else drawOverview();
  }

  let healthSurface;
  function paintHealth() {
    paintStrip(healthSurface.pixels, whole.bins, HEALTH_HEIGHT, worstOf(whole.counts, steps * KINDS), 1, 0, kinds);
    put(healthSurface);
  }

  function drawCalendar() {
    geo = geometry(model.get("grid") || {});
    lookup = null;
    view = whole;
    const cell = layout.cell;
    const every = Math.ceil(14 / cell); // a row label every few rows, far enough apart to read
    const rowLabels = (model.get("grid") || {}).row_labels || [];
    bands = bands.map((canvas, s) => {
      canvas.style.width = `${geo.width * cell}px`;
      canvas.style.height = `${geo.rows * cell}px`;
      return surface(canvas, geo.pixelWidth, geo.pixelHeight);
    });
    bandsBox.replaceChildren(...bands.map(({ canvas }, s) => {
      const labels = [];
      for (let r = 0; r < geo.rows && rowLabels.length; r += every) {
        const tall = Math.min(every, geo.rows - r) * cell;
        labels.push(h("div", { class: "nbb-row-label", text: rowLabels[r] || "", style: `height:${tall}px;line-height:${Math.min(tall, Math.max(cell, 12))}px` }));
      }
      return h("div", { class: "nbb-band" }, [
        ...(steps > 1 ? [h("div", { class: "nbb-band-name nbb-band-heading", text: stepName(s), title: stepName(s) })] : []),
        h("div", { class: "nbb-band-body" }, [h("div", { class: "nbb-gutter nbb-row-labels" }, labels), canvas]),
      ]);
    }));
    paint(bands.map((b) => b.pixels), geo, positions, bytes(model.get("status")), null, colors);
    bands.forEach((b) => put(b));
    showZoom();
  }

  function drawOverview() {
    bands = bands.map((canvas) => ({ canvas }));
    bandsBox.replaceChildren(...bands.map(({ canvas }, s) =>
      h("div", { class: "nbb-band nbb-strip" }, [
        h("div", { class: "nbb-gutter nbb-band-name", text: steps > 1 ? stepName(s) : "", title: stepName(s) }),
        canvas,
      ])));
    setZoom(zoom);
  }

  function setZoom(range) {
    zoom = range && (range[0] > 0 || range[1] < n) ? range : null;
    const [lo, hi] = zoom || [0, n];
    const bins = Math.max(1, Math.min(hi - lo, Math.floor(width / BIN_PX)));
    view = !zoom && bins === whole.bins ? whole : binning(lo, hi, bins);
    bands = bands.map(({ canvas }) => {
      canvas.style.width = `${width}px`;
      canvas.style.height = `${STRIP_HEIGHT}px`;
      return surface(canvas, bins, STRIP_HEIGHT);
    });
    paintStrips();
    axis.style.width = `${width}px`;
    axis.replaceChildren(...axisTicks(lo, hi, width).map(({ at, partition }) =>
      h("span", { class: "nbb-tick", text: reader.key(partition), style: `left:${at * 100}%;transform:translateX(-${at * 100}%)` })));
    showZoom();
  }

  function showZoom() {
    const overview = layout.mode === "overview";
    zoomBar.hidden = !overview;
    axis.hidden = !overview;
    healthView.hidden = !zoom;
    if (!overview) return;
    const [lo, hi] = zoom || [0, n];
    healthView.style.left = `${(lo / n) * 100}%`;
    healthView.style.width = `${((hi - lo) / n) * 100}%`;
    zoomText.textContent = `${count(hi - lo)} of ${count(n)} partitions, ${count(Math.ceil((hi - lo) / view.bins))} a bin at most`;
    fit.disabled = zoomOut.disabled = !zoom;
    zoomIn.disabled = hi - lo <= Math.min(n, 10);
  }

  function paintStrips() {
    const worst = worstOf(view.counts, KINDS);
    for (const [s, b] of bands.entries()) {
      paintStrip(b.pixels, view.bins, STRIP_HEIGHT, worst, steps, s, kinds);
      put(b);
    }
  }

  function drawCells(buffers) {
    const before = BEFORE.get(buffers);
    if (!whole || !before) return drawAll(); // a delta this module did not apply: count again
    const cells = u32(buffers[0]);
    recount(view === whole ? [whole] : [whole, view], steps, cells, before, bytes(buffers[1]), severity);
    paintHealth();
    if (layout.mode === "overview") return paintStrips();
    const boxes = paint(bands.map((b) => b.pixels), geo, positions, bytes(model.get("status")), cells, colors);
    bands.forEach((b, s) => boxes[s] && put(b, boxes[s]));
  }

  // What is under the mouse: partitions first..last of one step (step -1: the health bar's every step).
  function hitAt(event) {
    const canvas = event.target;
    const step = canvas && canvas.dataset ? Number(canvas.dataset.step) : NaN;
    if (!whole || !n || Number.isNaN(step)) return null;
    const rect = canvas.getBoundingClientRect();
    const fx = (event.clientX - rect.left) / rect.width, fy = (event.clientY - rect.top) / rect.height;
    if (!(fx >= 0 && fx < 1 && fy >= 0 && fy < 1)) return null;
    if (step < 0) return binHit(whole, Math.floor(fx * whole.bins), step);
    if (layout.mode === "overview") return binHit(view, Math.floor(fx * view.bins), step);
    lookup = lookup || lookupTable(geo, positions);
    const p = partitionAt(geo, lookup, Math.floor(fx * geo.width), Math.floor(fy * geo.rows));
    return p == null ? null : { first: p, last: p, step, cell: p * steps + step };
  }
  function binHit(b, bin, step) {
    const [first, end] = binRange(b.from, b.to, b.bins, bin);
    const group = step < 0 ? [bin * steps * KINDS, steps * KINDS] : [(bin * steps + step) * KINDS, KINDS];
    return { first, last: end - 1, step, group: [b.counts, ...group], cell: first === end - 1 && step >= 0 ? first * steps + step : null };
  }

  function describe(hit) {
    if (hit.cell != null) return describeCell(hit);
    const many = hit.last > hit.first;
    const keys = many ? `${reader.key(hit.first)} … ${reader.key(hit.last)} (${count(hit.last - hit.first + 1)} partitions)` : reader.key(hit.first);
    return [keys, hit.step < 0 ? "all steps" : stepName(hit.step), countsText(...hit.group)].join(" · ");
  }
  function describeCell(hit) {
    const status = bytes(model.get("status"))[hit.cell];
    const attempt = bytes(model.get("attempts"))[hit.cell];
    const duration = f32(model.get("durations"))[hit.cell];
    const parts = [reader.key(hit.first), stepName(hit.step), names[status] || "?"];
    if (attempt) parts.push(`attempt ${attempt}`);
    const took = formatDuration(duration);
    if (took) parts.push(took);
    return parts.join(" · ");
  }

  let dragFrom = null;
  plot.addEventListener("mousemove", (event) => {
    const hit = hitAt(event);
    if (!hit) {
      tooltip.hidden = true;
      return;
    }
    tooltip.textContent = describe(hit);
    tooltip.hidden = false;
    const origin = root.getBoundingClientRect();
    const x = event.clientX - origin.left; // right of the pointer, or left of it near the right edge
    tooltip.style.left = `${x + 12 + tooltip.offsetWidth > root.clientWidth ? Math.max(0, x - 12 - tooltip.offsetWidth) : x + 12}px`;
    tooltip.style.top = `${event.clientY - origin.top + 12}px`;
    if (dragFrom && (hit.first !== dragFrom.first || hit.last !== dragFrom.last)) {
      const a = Math.min(dragFrom.first, hit.first), b = Math.max(dragFrom.last, hit.last);
      preview.textContent = `${count(b - a + 1)} partitions: ${reader.key(a)} … ${reader.key(b)}`;
    }
  });
  plot.addEventListener("mouseleave", () => (tooltip.hidden = true));
  plot.addEventListener("mousedown", (event) => {
    dragFrom = hitAt(event);
    if (dragFrom) event.preventDefault();
  });
  plot.addEventListener("mouseup", (event) => {
    const hit = hitAt(event);
    const start = dragFrom;
    dragFrom = null;
    if (!hit || !start) return;
    if (hit.first === start.first && hit.last === start.last) {
      if (hit.cell != null) model.send({ type: "detail", cell: hit.cell });
      else if (layout.mode === "overview") setZoom(zoomRange([hit.first, hit.last + 1], n, 1, hit.first)); // a bin of many: look inside
      return;
    }
    const a = Math.min(start.first, hit.first), b = Math.max(start.last, hit.last);
    mode.value = "range";
    from.value = reader.key(a);
    to.value = reader.key(b);
    askPreview();
  });
  // zoom and pan the overview: wheel (sideways pans), buttons, keys
  const range = () => zoom || [0, n];
  const zoomBy = (factor, anchor) => setZoom(zoomRange(range(), n, factor, anchor ?? (range()[0] + range()[1]) / 2));
  const panBy = (share) => setZoom(panRange(range(), n, share * (range()[1] - range()[0])));
  gridBox.addEventListener("wheel", (event) => {
    const hit = layout && layout.mode === "overview" ? hitAt(event) : null;
    if (!hit) return;
    event.preventDefault();
    if (Math.abs(event.deltaX) > Math.abs(event.deltaY)) panBy(event.deltaX / width);
    else zoomBy(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP, (hit.first + hit.last + 1) / 2);
  }, { passive: false });
  gridBox.addEventListener("keydown", (event) => {
    if (!layout || layout.mode !== "overview") return;
    const act = { "+": () => zoomBy(ZOOM_STEP), "=": () => zoomBy(ZOOM_STEP), "-": () => zoomBy(1 / ZOOM_STEP),
      ArrowLeft: () => panBy(-0.1), ArrowRight: () => panBy(0.1), 0: () => setZoom(null) }[event.key];
    if (!act) return;
    event.preventDefault();
    act();
  });
  zoomIn.addEventListener("click", () => zoomBy(ZOOM_STEP));
  zoomOut.addEventListener("click", () => zoomBy(1 / ZOOM_STEP));
  fit.addEventListener("click", () => setZoom(null));

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
    if (msg.type === "delta") drawCells(buffers);
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
  // a new width lays the grid out again; a new JupyterLab theme repaints it in its colours
  const resized = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => {
    if (measure() !== width) drawAll();
  });
  if (resized) resized.observe(root);
  const themed = typeof MutationObserver === "undefined" ? null : new MutationObserver(drawAll);
  if (themed) themed.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name"] });

  showSelector();
  showHeader();
  showSummary();
  showPreview();
  showNotice();
  drawAll();
  return () => {
    clearInterval(clock);
    if (resized) resized.disconnect();
    if (themed) themed.disconnect();
    for (const [name, fn] of handlers) model.off(name, fn);
  };
}

function initialize({ model }) {
  // Registered once per model, before any view: keeps the model's buffers current.
  model.on("msg:custom", (msg, buffers) => {
    if (msg.type === "delta") BEFORE.set(buffers, applyDelta(model, buffers));
  });
}

export default { initialize, render };
