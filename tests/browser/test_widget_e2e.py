"""The backfill widget in a real JupyterLab: launch from the widget, watch, click, retry; and user text stays text."""

from .lab import cell_errors, expect, open_notebook, run_all, screenshot, wait_idle, write_notebook

SUCCESS_RGB = [0, 158, 115]  # js/widget.js COLORS
FAILURE_RGB = [213, 94, 0]
MISSING_RGB = [228, 228, 228]


def column_colours(widget, columns):
    return widget.locator("canvas.nbb-grid").evaluate(
        "(canvas, columns) => { const ctx = canvas.getContext('2d');"
        " return columns.map((c) => Array.from(ctx.getImageData(c * 4 + 1, 0, 1, 1).data.slice(0, 3))); }",
        columns,
    )


def click_column(widget, column, columns=31):
    canvas = widget.locator("canvas.nbb-grid")
    box = canvas.bounding_box()
    cell = box["width"] / columns
    canvas.click(position={"x": (column + 0.5) * cell, "y": 0.5 * cell})


def test_launch_watch_click_and_retry_in_the_quickstart(lab, page, request):
    open_notebook(page, lab, "notebooks/quickstart.ipynb")
    run_all(page)
    wait_idle(page, timeout=120)
    assert not cell_errors(page)
    widget = page.locator(".nbb-widget").first
    widget.scroll_into_view_if_needed()
    expect(widget.locator(".nbb-title")).to_contain_text(
        "daily_totals — daily from 2024-03-01, UTC, 31 partitions", timeout=10_000
    )
    screenshot(page, request, "1-widget")

    # a drag across the grid selects an inclusive range
    box = widget.locator("canvas.nbb-grid").bounding_box()
    cell = box["width"] / 31
    page.mouse.move(box["x"] + 2.5 * cell, box["y"] + 0.5 * cell)
    page.mouse.down()
    page.mouse.move(box["x"] + 6.5 * cell, box["y"] + 0.5 * cell, steps=5)
    page.mouse.up()
    expect(widget.locator(".nbb-preview")).to_contain_text("5 partitions: 2024-03-03 … 2024-03-07", timeout=10_000)
    assert widget.locator(".nbb-mode").input_value() == "range"
    assert widget.locator(".nbb-from").input_value() == "2024-03-03"

    widget.locator(".nbb-from").fill("2024-03-05")
    widget.locator(".nbb-to").fill("2024-03-12")
    widget.locator(".nbb-to").press("Tab")
    expect(widget.locator(".nbb-preview")).to_contain_text("8 partitions: 2024-03-05 … 2024-03-12", timeout=10_000)
    widget.locator(".nbb-launch").click()
    header = widget.locator(".nbb-backfill")
    expect(header).to_contain_text("backfill ", timeout=10_000)
    expect(header).to_contain_text("COMPLETED_FAILED", timeout=60_000)
    expect(widget.locator(".nbb-summary")).to_contain_text("7 success, 1 failure — 100% done", timeout=10_000)
    # columns are days of March: 2024-03-10 (column 9) is red, its neighbours green, 03-13 never ran
    colours = column_colours(widget, [4, 8, 9, 10, 11, 12])
    assert colours == [SUCCESS_RGB, SUCCESS_RGB, FAILURE_RGB, SUCCESS_RGB, SUCCESS_RGB, MISSING_RGB]
    screenshot(page, request, "2-failed")

    click_column(widget, 9)
    expect(widget.locator(".nbb-error-text")).to_contain_text("ValueError: bad input for 2024-03-10", timeout=10_000)
    expect(widget.locator(".nbb-log")).to_contain_text("computing 2024-03-10, attempt 1")
    screenshot(page, request, "3-traceback")

    widget.locator(".nbb-retry").click()
    expect(header).to_contain_text("COMPLETED_SUCCESS", timeout=60_000)
    page.wait_for_function(
        "(el) => { const d = el.getContext('2d').getImageData(9 * 4 + 1, 0, 1, 1).data; return d[0] === 0 && d[1] === 158; }",
        arg=widget.locator("canvas.nbb-grid").element_handle(),
        timeout=10_000,
    )
    widget.locator("canvas.nbb-grid").hover(position={"x": 9.5 * 16, "y": 8})
    expect(widget.locator(".nbb-tooltip")).to_contain_text(
        "2024-03-10 · daily_totals · success · attempt 2", timeout=5_000
    )
    screenshot(page, request, "4-retried")


EVIL = "<img src=x onerror=alert(1)>"
XSS_NOTEBOOK = f"""import nb_backfill as nbb

evil = nbb.StaticPartitionsDefinition([{EVIL!r}, "ok"])

@nbb.job(partitions_def=evil)
def xss(context):
    print("<img src=x onerror=alert(2)>")
    raise ValueError("<b>bold</b><img src=x onerror=alert(3)>")

nbb.backfill(xss)"""


def test_user_text_is_rendered_as_text(lab, page, request):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    open_notebook(page, lab, write_notebook(lab, "xss.ipynb", [XSS_NOTEBOOK]))
    run_all(page)
    wait_idle(page, timeout=60)
    widget = page.locator(".nbb-widget").first
    widget.locator(".nbb-launch").click()
    expect(widget.locator(".nbb-backfill")).to_contain_text("COMPLETED_FAILED", timeout=30_000)
    canvas = widget.locator("canvas.nbb-grid")
    cell = canvas.bounding_box()["width"] / 2
    canvas.hover(position={"x": cell / 2, "y": cell / 2})
    expect(widget.locator(".nbb-tooltip")).to_contain_text(EVIL, timeout=5_000)
    canvas.click(position={"x": cell / 2, "y": cell / 2})
    expect(widget.locator(".nbb-log")).to_contain_text("<img src=x onerror=alert(2)>", timeout=10_000)
    expect(widget.locator(".nbb-error-text")).to_contain_text("<b>bold</b>")
    screenshot(page, request, "xss")
    assert widget.locator("img").count() == 0 and widget.locator("b", has_text="bold").count() == 0
    assert page.locator(".jp-OutputArea img[src='x']").count() == 0
    assert dialogs == []
