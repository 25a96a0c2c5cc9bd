"""Smoke tests of the browser harness: a real JupyterLab runs the quickstart notebook and shows an anywidget."""

from .lab import cell_errors, cell_outputs_text, expect, open_notebook, run_all, screenshot, wait_idle, write_notebook


def test_quickstart_notebook_runs_in_lab(lab, page, request):
    open_notebook(page, lab, "notebooks/quickstart.ipynb")
    run_all(page)
    wait_idle(page, timeout=120)
    assert not cell_errors(page)
    assert "COMPLETED_SUCCESS" in cell_outputs_text(page)
    shown = page.locator(".jp-OutputArea-output", has_text="COMPLETED_SUCCESS").first
    shown.scroll_into_view_if_needed()
    expect(shown).to_be_visible(timeout=10_000)
    screenshot(page, request, "quickstart")


COUNTER = '''import anywidget

class Counter(anywidget.AnyWidget):
    _esm = """function render({ model, el }) { el.innerHTML = '<button class="t">x</button>'; }
export default { render };"""

Counter()'''


def test_anywidget_displays_in_lab(lab, page, request):
    open_notebook(page, lab, write_notebook(lab, "anywidget_counter.ipynb", [COUNTER]))
    run_all(page)
    wait_idle(page, timeout=60)
    assert not cell_errors(page)
    expect(page.locator(".jp-OutputArea-output button.t")).to_be_visible(timeout=20_000)
    screenshot(page, request, "counter")
