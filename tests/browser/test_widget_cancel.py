"""Cancel pressed in the widget, in a real JupyterLab: the grid and the summary line end as the store says."""

import json

from .lab import (
    cell_errors,
    cell_outputs,
    expect,
    open_notebook,
    run_all,
    run_cell,
    screenshot,
    wait_idle,
    write_notebook,
)

PARTITIONS = 24
SLOW = f"""import json, time
import nb_backfill as nbb

@nbb.job(partitions_def=nbb.StaticPartitionsDefinition([f"p{{i:02d}}" for i in range({PARTITIONS})]))
def slow_to_cancel(context):
    for _ in range(150):  # 3 s a run, stopping at once when canceled
        context.check_canceled()
        time.sleep(0.02)

bf = nbb.launch_backfill(slow_to_cancel, all=True, max_workers=2)
bf"""
REPORT = 'print(json.dumps({"status": bf.status, "counts": bf.counts(), "line": bf.progress().line()}))'

# js/widget.js STYLES: each cell kind's colour, and its pale tint (mix(colour, 0.3)); a cell's
# top-left pixel is one or the other, depending on the kind's pattern
STYLES = {
    "missing": "#e4e4e4",
    "queued": "#56b4e9",
    "running": "#0072b2",
    "success": "#009e73",
    "failure": "#d55e00",
    "skipped": "#f0e442",
    "canceled": "#cc79a7",
}


def _rgb(hex_colour, weight=1.0):
    n = int(hex_colour[1:], 16)
    return tuple(round(v * weight + 255 * (1 - weight)) for v in (n >> 16, (n >> 8) & 0xFF, n & 0xFF))


KIND_OF_PIXEL = {_rgb(c, w): name for name, c in STYLES.items() for w in (1.0, 0.3)}
assert len(KIND_OF_PIXEL) == 2 * len(STYLES)  # every kind tells apart from every other

PAINTED_CELLS = """(canvas, n) => {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const cells = [];
  for (let i = 0; i < n; i++) {  // a flat grid of n partitions x 1 step, 4 x 4 pixels a cell
    const at = (i * 4) * 4;
    cells.push([data[at], data[at + 1], data[at + 2]]);
  }
  return cells;
}"""


def painted(canvas):
    """The kind of each cell as painted on the canvas."""
    return [KIND_OF_PIXEL.get(tuple(rgb), f"unknown {rgb}") for rgb in canvas.evaluate(PAINTED_CELLS, PARTITIONS)]


def kernel_report(page):
    run_cell(page, 1)
    wait_idle(page, timeout=60)
    texts = [o.get("text", "") for o in cell_outputs(page)[1] if o.get("output_type") == "stream"]
    assert len(texts) == 1, cell_outputs(page)[1]
    return json.loads(texts[0])


def test_cancel_pressed_in_the_widget_leaves_no_queued_cell(lab, page, request, js_errors):
    open_notebook(page, lab, write_notebook(lab, "cancel_from_widget.ipynb", [SLOW, REPORT]))
    run_all(page)
    wait_idle(page, timeout=60)
    assert not cell_errors(page)
    widget = page.locator(".nbb-widget").first
    header, summary, canvas = (
        widget.locator(".nbb-backfill"),
        widget.locator(".nbb-summary"),
        widget.locator("canvas.nbb-grid"),
    )
    expect(header).to_contain_text("REQUESTED · this process", timeout=10_000)
    expect(summary).to_contain_text("2 started", timeout=10_000)  # two runs under way, the rest queued
    page.wait_for_function("(canvas) => canvas.width === 4 * 24", arg=canvas.element_handle(), timeout=10_000)
    assert painted(canvas).count("queued") >= PARTITIONS - 4
    screenshot(page, request, "1-running")

    widget.locator(".nbb-cancel").click()
    expect(header).to_contain_text("CANCELED", timeout=30_000)
    expect(widget.locator(".nbb-notice")).to_contain_text("was canceled", timeout=10_000)
    expect(widget.locator(".nbb-cancel")).to_be_disabled(timeout=5_000)

    report = kernel_report(page)
    assert report["status"] == "CANCELED"
    counts = report["counts"]
    assert sum(counts.values()) == PARTITIONS
    assert counts["QUEUED"] == counts["STARTING"] == counts["STARTED"] == counts["CANCELING"] == 0
    assert counts["CANCELED"] >= PARTITIONS - 4  # at most a few runs finished before the cancel
    # the line shown is the kernel's, word for word (counts, percent; no rate or ETA once done)
    expect(summary).to_have_text(report["line"], timeout=5_000)
    assert "queued" not in report["line"] and "ETA" not in report["line"]
    # and the painted grid holds what the store holds: no cell left queued or running
    cells = painted(canvas)
    assert "queued" not in cells and "running" not in cells, cells
    assert cells.count("canceled") == counts["CANCELED"] and cells.count("success") == counts["SUCCESS"]
    assert cells.count("failure") == counts["FAILURE"] == 0
    screenshot(page, request, "2-canceled")
    page.evaluate("0")  # let Playwright deliver any error still in flight
    assert js_errors == []
