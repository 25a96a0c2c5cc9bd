"""The grid at scale in a real JupyterLab: 100,000 hourly partitions x 3 steps become the overview,
where one failed partition shows in its step's strip and in the health bar (read from the painted
pixels), hover names the range, zoom and a click reach its log; light and dark themes."""

from .lab import cell_errors, expect, open_notebook, run_all, screenshot, wait_idle, write_notebook

PARTITIONS, BAD = 100_000, 77_777
NOTEBOOK = f"""import nb_backfill as nbb

hourly = nbb.HourlyPartitionsDefinition("2014-01-01-00:00", end_date="2025-05-29-16:00")
keys = hourly.get_partition_keys()
assert len(keys) == {PARTITIONS}
BAD = keys[{BAD}]

@nbb.step
def extract(context):
    return 1

@nbb.step
def transform(context, extract):
    if context.partition_key == BAD:
        raise ValueError(f"bad hour {{BAD}}")
    return extract

@nbb.step
def load(context, transform):
    return transform

job = nbb.Job("hourly_etl", [extract, transform, load], hourly)
# 2,000 hours around the bad one run for real (the other 98,000 stay missing: a short test)
bf = nbb.launch_backfill(job, from_=keys[{BAD} - 1000], to=keys[{BAD} + 999], max_workers=2)
assert bf.wait(timeout=120) == "COMPLETED_FAILED"
nbb.backfill(job)"""

# js/widget.js STYLES (the theme's --nbb-paper is what the pale tints of patterns fade to)
FAILURE, SUCCESS, SKIPPED = "#d55e00", "#009e73", "#f0e442"
LIGHT_MISSING, DARK_MISSING = "#e4e4e4", "#616161"  # js/widget.css --nbb-missing

# The kind of each column of a canvas, from its top KINDS rows of pixels (a pattern's 4 rows): a
# column is the kind whose colour or tint appears in it, or "?".
COLUMNS = """(canvas, kinds) => {
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, 4).data;
  const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const near = (a, b) => a.every((v, i) => Math.abs(v - b[i]) <= 1);
  const tint = (hex, paper) => rgb(hex).map((v, i) => Math.round(v * 0.3 + rgb(paper)[i] * 0.7));
  const columns = [];
  for (let x = 0; x < canvas.width; x++) {
    const pixels = [0, 1, 2, 3].map((y) => Array.from(data.slice((y * canvas.width + x) * 4, (y * canvas.width + x) * 4 + 3)));
    const kind = Object.entries(kinds.colours).find(([, hex]) => pixels.some((p) => near(p, rgb(hex))) &&
      pixels.every((p) => near(p, rgb(hex)) || near(p, tint(hex, kinds.paper))));
    columns.push(kind ? kind[0] : '?');
  }
  return columns;
}"""


def columns(canvas, paper, missing):
    colours = {"failure": FAILURE, "success": SUCCESS, "skipped": SKIPPED, "missing": missing}
    return canvas.evaluate(COLUMNS, {"colours": colours, "paper": paper})


def bin_of(partition, bins, n=PARTITIONS):
    return ((partition + 1) * bins - 1) // n  # js/widget.js binOf


def test_one_failure_among_100000_partitions_shows_in_the_overview(lab, page, request):
    open_notebook(page, lab, write_notebook(lab, "overview.ipynb", [NOTEBOOK]))
    run_all(page)
    wait_idle(page, timeout=180)
    assert not cell_errors(page)
    widget = page.locator(".nbb-widget").first
    widget.scroll_into_view_if_needed()
    expect(widget.locator(".nbb-backfill")).to_contain_text("COMPLETED_FAILED", timeout=30_000)
    strips = widget.locator("canvas.nbb-grid")
    expect(strips).to_have_count(3, timeout=10_000)
    names = widget.locator(".nbb-strip .nbb-band-name")
    assert names.all_text_contents() == ["extract", "transform", "load"]
    health = widget.locator("canvas.nbb-health")
    assert widget.locator(".nbb-health-first").text_content() == "2014-01-01-00:00"
    assert widget.locator(".nbb-health-last").text_content() == "2025-05-29-15:00"
    assert widget.locator(".nbb-health-count").text_content() == "100,000 partitions"
    page.wait_for_function("(c) => c.width > 100", arg=strips.nth(1).element_handle(), timeout=10_000)
    # the grid fits: no band scrolls, nothing is taller than a screen
    assert widget.locator(".nbb-grid-box").bounding_box()["height"] < 200
    screenshot(page, request, "1-overview-light")

    bins = strips.nth(1).evaluate("(c) => c.width")
    bad = bin_of(BAD, bins)
    ran = set(range(bin_of(BAD - 1000, bins), bin_of(BAD + 999, bins) + 1))
    extract, transform, load = (columns(strips.nth(s), "#ffffff", LIGHT_MISSING) for s in range(3))
    assert [x for x, kind in enumerate(transform) if kind == "failure"] == [bad]
    assert [x for x, kind in enumerate(load) if kind == "skipped"] == [bad]  # never reached
    assert "failure" not in extract and "?" not in extract + transform + load
    assert all(transform[x] == "success" for x in ran - {bad, min(ran), max(ran)})  # the edges share bins with missing
    assert {transform[x] for x in set(range(bins)) - ran} == {"missing"}
    health_columns = columns(health, "#ffffff", LIGHT_MISSING)
    assert [x for x, kind in enumerate(health_columns) if kind == "failure"] == [bin_of(BAD, len(health_columns))]

    # hover names the range of the failed bin, its step and what it holds
    box = strips.nth(1).bounding_box()
    x = box["x"] + (bad + 0.5) * box["width"] / bins
    page.mouse.move(x, box["y"] + box["height"] / 2)
    tooltip = widget.locator(".nbb-tooltip")
    expect(tooltip).to_contain_text(" · transform · 1 failure, ", timeout=5_000)
    assert "partitions)" in tooltip.text_content() and " … " in tooltip.text_content()
    screenshot(page, request, "2-hover")

    # keys zoom (+) and fit (0); a click on the failed bin looks inside it, one partition a bin,
    # and a click on the failed partition opens its log
    widget.locator(".nbb-grid-box").focus()
    page.keyboard.press("+")
    expect(widget.locator(".nbb-zoom-text")).to_contain_text("80,000 of 100,000 partitions", timeout=5_000)
    expect(widget.locator(".nbb-health-view")).to_be_visible(timeout=5_000)
    page.keyboard.press("0")
    expect(widget.locator(".nbb-health-view")).to_be_hidden(timeout=5_000)
    page.mouse.click(x, box["y"] + box["height"] / 2)
    expect(widget.locator(".nbb-zoom-text")).to_contain_text("1 a bin at most", timeout=5_000)
    transform = columns(strips.nth(1), "#ffffff", LIGHT_MISSING)
    assert transform.count("failure") == 1, transform
    bins = strips.nth(1).evaluate("(c) => c.width")
    box = strips.nth(1).bounding_box()
    page.mouse.click(box["x"] + (transform.index("failure") + 0.5) * box["width"] / bins, box["y"] + box["height"] / 2)
    expect(widget.locator(".nbb-error-text")).to_contain_text("ValueError: bad hour 2022-11-15-17:00", timeout=10_000)
    screenshot(page, request, "3-zoomed-detail")
    widget.locator(".nbb-fit").click()
    expect(widget.locator(".nbb-health-view")).to_be_hidden(timeout=5_000)

    # the dark theme: JupyterLab's colours around the grid, the same status colours in it
    try:
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
        page.wait_for_function(
            "(c) => { const d = c.getContext('2d').getImageData(0, 0, 1, 1).data; return d[0] === 0x61; }",
            arg=strips.nth(1).element_handle(),
            timeout=10_000,
        )  # repainted: the first bin (never run) in the dark theme's missing colour
        transform = columns(strips.nth(1), "#111111", DARK_MISSING)
        assert [x for x, kind in enumerate(transform) if kind == "failure"] == [bin_of(BAD, len(transform))]
        assert widget.evaluate("(el) => getComputedStyle(el).color").startswith(
            "rgba(255, 255, 255"
        )  # --jp-ui-font-color1
        page.wait_for_timeout(1_500)  # JupyterLab fades the new theme in: let the screenshot show it
        screenshot(page, request, "4-overview-dark")
    finally:  # the theme is a setting of the shared server: leave it light for the next tests
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
        page.wait_for_function("() => document.body.dataset.jpThemeLight === 'true'", timeout=30_000)
