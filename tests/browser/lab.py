"""Helpers to drive a real JupyterLab with headless Debian Chromium through Playwright.

The fixtures in ``conftest.py`` build on these; end-to-end tests use them like this::

    def test_something(lab, page, request):
        open_notebook(page, lab, "notebooks/quickstart.ipynb")   # or a path in lab.root_dir
        run_all(page)                 # returns at once: watch the page while cells run
        wait_idle(page, timeout=120)  # every cell finished
        assert not cell_errors(page)
        assert "COMPLETED_SUCCESS" in cell_outputs_text(page)
        screenshot(page, request, "done")

Facts these rely on are in ``../shared/browser-tests.md``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

try:
    from playwright.sync_api import expect  # re-exported for tests: `from .lab import expect`
except ImportError:  # the fixtures skip (or fail, with CI=true) and say why
    expect = None

REPO = Path(__file__).resolve().parent.parent.parent
OUTPUT_DIR = Path(__file__).resolve().parent / "output"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    # Without these Chromium keeps trying to reach outside hosts.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
SERVER_START_TIMEOUT = 60.0


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


@dataclass
class Lab:
    """A running JupyterLab server: ``url`` is ``http://127.0.0.1:<port>``."""

    url: str
    token: str
    root_dir: Path  # the server's root: notebooks opened in Lab must be inside it
    home: Path  # NB_BACKFILL_HOME of the kernels started by this server
    base: Path  # temporary folder holding everything above, runtime and settings dirs
    log_path: Path  # the server's stdout and stderr
    process: subprocess.Popen
    timings: dict = field(default_factory=dict)  # seconds: "server_start"

    def page_url(self, path: str, **query: str) -> str:
        """Absolute URL of ``path`` (e.g. ``lab/tree/x.ipynb``) with the token in the query."""
        query = {**query, "token": self.token}
        return f"{self.url}/{path.lstrip('/')}?{urllib.parse.urlencode(query)}"

    def api(self, method: str, path: str, timeout: float = 10.0):
        """Call the REST API (``path`` like ``api/sessions``); returns the decoded JSON or None."""
        request = urllib.request.Request(
            f"{self.url}/{path.lstrip('/')}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Shut down every session and kernel (between tests, so kernels do not pile up)."""
        try:
            for session in self.api("GET", "api/sessions"):
                self.api("DELETE", f"api/sessions/{session['id']}")
            for kernel in self.api("GET", "api/kernels"):
                self.api("DELETE", f"api/kernels/{kernel['id']}")
        except (OSError, urllib.error.URLError):
            pass  # the server is gone already: stop_lab kills what is left

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def jupyterlab_available() -> bool:
    """The server runs with this interpreter (``sys.executable -m jupyterlab``)."""
    return importlib.util.find_spec("jupyterlab") is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_settings(settings_dir: Path) -> None:
    # The "Jupyter news" notification would cover part of the page.
    notification = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def _die_with_parent() -> None:
    """In the child before exec: on Linux, SIGTERM the server if the test process dies without tearing
    down (killed with SIGKILL); its kernels follow, as they watch their parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_lab(base: Path, timeout: float = SERVER_START_TIMEOUT, attempts: int = 3) -> Lab:
    """Start JupyterLab in its own process group with everything under ``base``; wait until it answers.

    Picks a free port with ``port_retries=0``; if another process takes the port in between, it
    tries again on a new one.
    """
    base.mkdir(parents=True, exist_ok=True)
    root_dir, home = base / "root", base / "nb_backfill_home"
    dirs = {name: base / name for name in ("runtime", "settings", "workspaces", "config", "data")}
    for path in [root_dir, home, *dirs.values()]:
        path.mkdir(parents=True, exist_ok=True)
    _write_settings(dirs["settings"])
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
        "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
        "NB_BACKFILL_HOME": str(home),
        # Ignore the machine's ~/.jupyter and ~/.local/share/jupyter; the venv's config still applies.
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "PYTHONUNBUFFERED": "1",
    }
    started = time.monotonic()
    last_error = ""
    for attempt in range(attempts):
        port, token = _free_port(), secrets.token_hex(16)
        log_path = base / f"jupyterlab-{attempt}.log"
        command = [
            sys.executable, "-m", "jupyterlab",
            "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            "--allow-root", "--no-browser",
            f"--ServerApp.root_dir={root_dir}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command, cwd=root_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole in stop_lab
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        lab = Lab(f"http://127.0.0.1:{port}", token, root_dir, home, base, log_path, process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{lab.url}/api/status?token={token}", timeout=2) as response:
                    if response.status == 200:
                        lab.timings["server_start"] = time.monotonic() - started
                        return lab
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        last_error = lab.log_tail()
        stop_lab(lab)
        if not re.search(r"already in use|not available", last_error):
            break  # not a port taken in between: trying again would not help
    raise RuntimeError(f"JupyterLab did not start within {timeout:.0f} s; its log ends with:\n{last_error}")


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (kernels run in sessions of their own, outside the server's group)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def browser_processes() -> list[int]:
    """Chromium and Playwright driver processes started by this test process."""
    if not Path("/proc").is_dir():
        return []
    return [pid for pid in _descendants(os.getpid()) if re.search(r"chromium|playwright", _cmdline(pid))]


def wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    """Wait until ``pids`` have exited and been reaped (orphans are reaped by init a moment after they
    exit); SIGKILL whatever is still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def stop_lab(lab: Lab, grace: float = 10.0) -> None:
    """Stop the server and everything it started; leaves no process behind."""
    process = lab.process
    if process.poll() is None:
        lab.shutdown_kernels()
    below = _descendants(process.pid) if Path("/proc").is_dir() else []
    groups = {process.pid}  # start_new_session: the server's pid is its process group id
    for pid in below:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    for group in groups:
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in below):
        time.sleep(0.1)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in below:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if process.poll() is None:
        process.wait(timeout=grace)
    wait_gone(below, timeout=grace)


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------

_KERNEL_READY_JS = """(path) => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  if (!w || !w.context || !w.sessionContext || w.context.path !== path) return false;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  return w.context.isReady && w.sessionContext.isReady && !!kernel
    && kernel.status === 'idle' && kernel.connectionStatus === 'connected';
}"""


def prepare_notebook(lab: Lab, source: str | Path, name: str | None = None) -> str:
    """Copy a notebook into the lab's root dir (JupyterLab writes ``.ipynb_checkpoints`` beside what it
    opens), giving it the python3 kernelspec so no "Select Kernel" dialog blocks the page.

    ``source`` is a path relative to the repository (``notebooks/quickstart.ipynb``), an absolute path,
    or a path already inside ``lab.root_dir``. Returns the path relative to the root dir.
    """
    source = Path(source)
    if not source.is_absolute():
        source = lab.root_dir / source if (lab.root_dir / source).is_file() else REPO / source
    source = source.resolve()
    if source.is_relative_to(lab.root_dir.resolve()):
        target = source
    else:
        target = lab.root_dir / (name or source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    notebook = json.loads(target.read_text())
    if notebook.setdefault("metadata", {}).get("kernelspec") != KERNELSPEC:
        notebook["metadata"]["kernelspec"] = dict(KERNELSPEC)
        target.write_text(json.dumps(notebook, indent=1))
    return target.relative_to(lab.root_dir.resolve()).as_posix()


def write_notebook(lab: Lab, name: str, cells: list[str]) -> str:
    """Write a notebook of code ``cells`` into the lab's root dir; returns its path there."""
    notebook = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
            for source in cells
        ],
        "metadata": {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    for index, cell in enumerate(notebook["cells"]):
        cell["id"] = f"cell-{index}"
    target = lab.root_dir / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(notebook, indent=1))
    return name


def open_notebook(page, lab: Lab, path_in_root: str | Path, timeout: float = 60.0, name: str | None = None) -> str:
    """Copy the notebook into the lab (see ``prepare_notebook``; ``name`` renames the copy), open it
    in a fresh Lab workspace and wait until its kernel is really ready (idle and connected, not just
    the toolbar saying so).

    Returns the notebook's path in the root dir. ``timeout`` in seconds.
    """
    path = prepare_notebook(lab, path_in_root, name)
    started = time.monotonic()
    # A workspace of its own: Lab would otherwise restore the notebooks earlier tests opened.
    workspace = f"t{secrets.token_hex(4)}"
    page.goto(lab.page_url(f"lab/workspaces/{workspace}/tree/{urllib.parse.quote(path)}"), timeout=timeout * 1000)
    page.wait_for_function(_KERNEL_READY_JS, arg=path, timeout=timeout * 1000, polling=100)
    lab.timings.setdefault("page_ready", []).append(time.monotonic() - started)
    return path


def run_all(page) -> None:
    """Fire "Run All Cells" on the current notebook and return at once (the command's promise
    resolves only when every cell has finished; ``wait_idle`` waits for that)."""
    page.evaluate(
        """() => {
      const state = window.__nbb_run_all = {done: false, error: null};
      void window.jupyterapp.commands.execute('notebook:run-all-cells').then(
        () => { state.done = true; },
        (e) => { state.done = true; state.error = String(e); });
    }"""
    )


def run_cell(page, index: int) -> None:
    """Run code cell ``index`` (0-based) of the current notebook again and return at once (like
    ``run_all``; ``wait_idle`` waits for it). Its new outputs replace the old ones."""
    page.evaluate(
        """(index) => {
      const state = window.__nbb_run_all = {done: false, error: null};
      window.jupyterapp.shell.currentWidget.content.activeCellIndex = index;
      void window.jupyterapp.commands.execute('notebook:run-cell').then(
        () => { state.done = true; },
        (e) => { state.done = true; state.error = String(e); });
    }""",
        index,
    )


_IDLE_JS = """() => {
  const state = window.__nbb_run_all;
  if (state && !state.done) return false;
  const w = window.jupyterapp.shell.currentWidget;
  if (!w || !w.content || !w.sessionContext) return false;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  if (!kernel || kernel.status !== 'idle') return false;
  for (const prompt of w.content.node.querySelectorAll('.jp-InputArea-prompt')) {
    if (prompt.textContent.includes('[*]')) return false;
  }
  return true;
}"""


def wait_idle(page, timeout: float = 120.0) -> None:
    """Wait until every cell has finished: Run All (if fired) done, no ``[*]`` prompt, kernel idle.
    ``timeout`` in seconds."""
    page.wait_for_function(_IDLE_JS, timeout=timeout * 1000, polling=100)
    error = page.evaluate("() => window.__nbb_run_all && window.__nbb_run_all.error")
    assert not error, f"running the notebook's cells failed: {error}"


def cell_outputs(page) -> list[list[dict]]:
    """The outputs of every code cell of the current notebook, as nbformat JSON, read from the model
    (independent of which cells the notebook has rendered)."""
    return page.evaluate(
        """() => {
      const w = window.jupyterapp.shell.currentWidget;
      const cells = w.content.model.cells, result = [];
      for (let i = 0; i < cells.length; i++) {
        const cell = cells.get(i);
        result.push(cell.type === 'code' ? cell.outputs.toJSON() : []);
      }
      return result;
    }"""
    )


def cell_errors(page) -> list[str]:
    """``"ename: evalue"`` of every error output in the current notebook."""
    return [
        f"{output.get('ename')}: {output.get('evalue')}"
        for outputs in cell_outputs(page)
        for output in outputs
        if output.get("output_type") == "error"
    ]


def cell_outputs_text(page) -> str:
    """The text rendered in every output area of the current notebook, cells separated by newlines."""
    return page.evaluate(
        """() => {
      const w = window.jupyterapp.shell.currentWidget;
      return Array.from(w.content.node.querySelectorAll('.jp-OutputArea-output'))
        .map((node) => node.textContent).join('\\n');
    }"""
    )


def output_dir(request) -> Path:
    """``tests/browser/output/<test name>/``, created."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")[:120]
    path = OUTPUT_DIR / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(page, request, name: str, full_page: bool = True) -> Path:
    """Save a PNG of the page under the test's output folder; returns its path."""
    path = output_dir(request) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
