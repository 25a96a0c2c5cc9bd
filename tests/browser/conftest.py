"""Fixtures for end-to-end tests in a real JupyterLab with headless Debian Chromium (Playwright).

- ``lab`` (session): one JupyterLab server for the whole session (starting one takes 1.5 s here,
  opening a notebook until its kernel is ready 3 to 4 s). See ``lab.Lab``.
- ``browser`` (session): headless ``/usr/bin/chromium`` through Playwright.
- ``page`` (function): a fresh browser context and page; the test fails if the page logged a
  JavaScript error (``pageerror`` or console error) other than the known noise below. Kernels it
  started are shut down afterwards. A failing test leaves ``failure.png`` in its output folder.
- ``js_errors`` (function): the list those errors are collected in; a test that provokes errors on
  purpose can inspect and ``clear()`` it.

Browser tests skip, with the reason, when Chromium, Playwright or JupyterLab is missing; with
``CI=true`` they fail instead, so that a broken install is noticed. ``-m "not browser"`` leaves
them out.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from .lab import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Lab,
    browser_processes,
    jupyterlab_available,
    output_dir,
    start_lab,
    stop_lab,
    wait_gone,
)

HERE = Path(__file__).resolve().parent

# Console errors that are harmless and always there, as regular expressions matched against
# "<message text> @ <url>". Keep each one justified; anything else fails the test.
KNOWN_NOISE: list[tuple[str, str]] = [
    # (pattern, why it is harmless). None so far: with jupyterlab 4.6, anywidget 0.11 and Debian
    # chromium, opening and running notebooks logs no console error at all (the server is started
    # with news and update checks off, and Chromium with its background networking off).
]

_TIMINGS: dict = {"tests": {}}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _unavailable(reason: str):
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: browser tests must run in CI)", pytrace=False)
    pytest.skip(reason)


def _require_browser_stack() -> None:
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium fonts-liberation` "
                     "(bash scripts/test.sh does)")  # fmt: skip
    if importlib.util.find_spec("playwright") is None:
        _unavailable('playwright is not installed: pip install -e ".[test]"')
    if not jupyterlab_available():
        _unavailable('jupyterlab is not installed: pip install -e ".[test]"')


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: end-to-end test in a real JupyterLab and Chromium")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A running JupyterLab (``lab.Lab``): ``url``, ``token``, ``root_dir``, ``home``, ``page_url()``,
    ``api()``, ``shutdown_kernels()``, ``log_path``."""
    _require_browser_stack()
    started = time.monotonic()
    server = start_lab(tmp_path_factory.mktemp("lab"))
    _TIMINGS["lab"] = server.timings
    yield server
    stopping = time.monotonic()
    stop_lab(server)
    _TIMINGS["server_stop"] = time.monotonic() - stopping
    _TIMINGS["server_lifetime"] = time.monotonic() - started


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium through Playwright (never ``playwright install``)."""
    _require_browser_stack()
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    except Exception:
        playwright.stop()
        raise
    _TIMINGS["browser_launch"] = time.monotonic() - started
    yield chromium
    stopping = time.monotonic()
    processes = browser_processes()
    chromium.close()
    playwright.stop()
    wait_gone(processes)  # Chromium's helpers exit a moment after the browser: leave none behind
    _TIMINGS["browser_close"] = time.monotonic() - stopping


@pytest.fixture
def js_errors() -> list[str]:
    return []


def _is_noise(text: str) -> bool:
    return any(re.search(pattern, text) for pattern, _why in KNOWN_NOISE)


@pytest.fixture
def page(browser, lab: Lab, request, js_errors):
    """A fresh page in its own browser context; JavaScript errors fail the test."""
    shutil.rmtree(output_dir(request), ignore_errors=True)  # no stale screenshots of an earlier run
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)

    def on_page_error(error):
        js_errors.append(f"pageerror: {error}")

    def on_console(message):
        if message.type != "error":
            return
        location = message.location or {}
        text = f"{message.text} @ {location.get('url', '')}"
        if not _is_noise(text):
            js_errors.append(f"console.error: {text}")

    page.on("pageerror", on_page_error)
    page.on("console", on_console)
    yield page
    report = getattr(request.node, "_nbb_reports", {}).get("call")
    if report is not None and report.failed:
        try:
            page.screenshot(path=str(output_dir(request) / "failure.png"), full_page=True)
        except Exception:  # a screenshot is a courtesy: never hide the test's own failure
            pass
    context.close()
    lab.shutdown_kernels()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After the test body: fail it if its page logged JavaScript errors."""
    funcargs = getattr(item, "funcargs", {})
    errors = funcargs.get("js_errors")
    try:
        result = yield
    except BaseException:
        if errors:
            item.add_report_section("call", "javascript errors", "\n".join(errors))
        raise
    if errors is not None and "page" in funcargs:
        try:
            funcargs["page"].evaluate("0")  # let Playwright deliver events still in flight
        except Exception:
            pass
    if errors:
        pytest.fail("JavaScript errors in the page:\n" + "\n".join(errors), pytrace=False)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if HERE in Path(str(item.path)).resolve().parents:
        item.__dict__.setdefault("_nbb_reports", {})[report.when] = report
        _TIMINGS["tests"].setdefault(item.nodeid, {})[report.when] = report.duration
    return report


def pytest_terminal_summary(terminalreporter):
    lab_timings = _TIMINGS.get("lab")
    if not lab_timings:
        return
    write = terminalreporter.write_line
    terminalreporter.section("browser timings (s)")
    t = {key: _TIMINGS.get(key, 0.0) for key in ("browser_launch", "browser_close", "server_stop", "server_lifetime")}
    write(
        f"server start {lab_timings.get('server_start', 0):.1f}, stop {t['server_stop']:.1f}, lifetime "
        f"{t['server_lifetime']:.1f}; chromium launch {t['browser_launch']:.1f}, close {t['browser_close']:.1f}"
    )
    ready = lab_timings.get("page_ready", [])
    if ready:
        write("notebook page ready (open_notebook): " + ", ".join(f"{t:.1f}" for t in ready))
    for nodeid, phases in _TIMINGS["tests"].items():
        total = sum(phases.values())
        detail = ", ".join(f"{when} {duration:.1f}" for when, duration in phases.items())
        write(f"{nodeid}: {total:.1f} ({detail})")
