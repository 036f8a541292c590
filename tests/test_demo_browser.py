"""The demo in a real browser: JupyterLab headless, a notebook run in Chromium, the Generate button clicked.

Skipped, with the reason, where no Chromium or no Playwright is found (``make browser-deps``
installs both). Playwright only drives the system's Chromium (``executable_path``); it never
downloads a browser. The server, its kernel and the browser run in a temporary folder
with their own Jupyter config, and are stopped whatever happens. The last screen is
saved to ``build/demo-browser.png``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from llmimg.course.demo import EXAMPLE_PROMPT, MAX_GUIDANCE, PREVIEW_SIZE, Demo
from llmimg.pipelines.shapes import DEFAULT_SCHEDULER

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "build" / "demo-browser.png"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
INSTALL_HINT = "run `make browser-deps`"

# Generous but finite: a 2-core machine shared with other jobs is slow to start all of this.
SERVER_START_S = 90   # JupyterLab answering on its port
APP_READY_S = 90      # the JupyterLab page loaded, the notebook open, its kernel idle
RUN_ALL_S = 120       # importing torch and loading the smoke pipeline in the kernel, drawing the widget
GENERATE_S = 60       # one generation after the click


def find_chromium() -> tuple[str | None, str]:
    """The Chromium to drive and "", or None and why there is none ($LLMIMG_CHROMIUM first, then PATH)."""
    explicit = os.environ.get("LLMIMG_CHROMIUM")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit, ""
        return None, f"LLMIMG_CHROMIUM={explicit} is not an executable file: fix it, unset it, or {INSTALL_HINT}"
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path, ""
    return None, f"no Chromium found ({', '.join(CHROMIUM_NAMES)} on PATH, or $LLMIMG_CHROMIUM): {INSTALL_HINT}"


def _why_skip() -> str:
    if importlib.util.find_spec("playwright") is None:
        return f"playwright is not installed (pip install -e '.[browser]'): {INSTALL_HINT}"
    return find_chromium()[1]


WHY_SKIP = _why_skip()
pytestmark = [pytest.mark.browser, pytest.mark.skipif(bool(WHY_SKIP), reason=WHY_SKIP or "-")]

NOTEBOOK_CELLS = [
    ("markdown", "# The demo, in a browser\n\nWritten by `tests/test_demo_browser.py`."),
    ("code", "import torch\n"
             "from llmimg.course.demo import Demo\n"
             "from llmimg.pipelines import shapes\n\n"
             "torch.set_num_threads(1)  # as the tests' own process: tiny models, same numbers\n"
             "demo = Demo(shapes.get(\"smoke\", progress=False))"),
    ("code", "demo.widget()"),
]


def write_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
                for kind, src in NOTEBOOK_CELLS]
    nbformat.write(nb, path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen, url: str) -> None:
    """Shut the server down with its kernels (REST call), then SIGTERM, then SIGKILL anything left of the tree."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b""), timeout=5).close()
            proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            pass
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # Kernels run in sessions of their own, so the server's process group does not reach them.
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=10)


@pytest.fixture
def lab(tmp_path, smoke_cache, smoke_pipeline):
    """A JupyterLab on a free localhost port, serving a temporary folder that holds demo.ipynb; stopped afterwards.

    It reads the session's model cache (the smoke stages are trained there already, or
    now by ``smoke_pipeline``), so its kernel only loads them.
    """
    root, config, runtime, data = (tmp_path / name for name in ("lab", "config", "runtime", "data"))
    for folder in (root, config, runtime, data):
        folder.mkdir()
    write_notebook(root / "demo.ipynb")
    # No network: no news feed, no update check. The page exposes `window.jupyterapp` to run commands.
    (config / "jupyter_server_config.json").write_text(json.dumps({"LabApp": {
        "news_url": None, "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
        "expose_app_in_browser": True}}))
    # ... and no toast asking whether to fetch that news (it would cover part of the screenshot).
    settings = config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps(
        {"fetchNews": "false", "checkForUpdates": False}))
    port, token = free_port(), secrets.token_hex(16)
    env = os.environ | {"LLMIMG_PROFILE": "smoke", "LLMIMG_CACHE_DIR": str(smoke_cache),
                        "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(runtime),
                        "JUPYTER_DATA_DIR": str(data), "MPLBACKEND": "Agg",
                        "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}"]
    if hasattr(os, "getuid") and os.getuid() == 0:
        cmd.append("--allow-root")
    log_path = tmp_path / "jupyterlab.log"
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {proc.returncode} before answering; its log:\n"
                            f"{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer on {base} within {SERVER_START_S} s; its log:\n"
                            f"{_tail(log_path)}")
            time.sleep(0.5)
        yield {"base": base, "token": token, "log": log_path}
    finally:
        _stop(proc, f"{base}/api/shutdown?token={token}")


def _wait(page, check_js: str, timeout_s: float, what: str, log: Path) -> None:
    """Wait until ``check_js`` is true in the page, or fail saying ``what`` never happened."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(check_js, timeout=timeout_s * 1000, polling=250)
    except PlaywrightTimeout:
        pytest.fail(f"{what} within {timeout_s} s (screenshot: {SCREENSHOT}); server log:\n{_tail(log)}")


KERNEL_IDLE_JS = """() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!kernel && kernel.status === 'idle' && !!w.content && w.content.widgets.length === %d;
}""" % len(NOTEBOOK_CELLS)

# A cell's error, read from the notebook's model ("Name: message"), or null.
CELL_ERROR_JS = """() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    for (const cell of (w && w.content && w.content.widgets) || []) {
        const outputs = cell.model.outputs;
        for (let i = 0; outputs && i < outputs.length; i++) {
            const out = outputs.get(i).toJSON();
            if (out.output_type === 'error') return `${out.ename}: ${out.evalue}`;
        }
    }
    return null;
}"""
WIDGET_OR_ERROR_JS = """() => !!(%s)() || [...document.querySelectorAll('.jp-OutputArea button.jupyter-button')]
    .some(b => b.textContent.trim() === 'Generate')""" % CELL_ERROR_JS

PREVIEW_SHOWN_JS = """() => [...document.querySelectorAll('.jp-OutputArea img.widget-image')].some(
    i => i.complete && i.naturalWidth === %d && i.naturalHeight === %d)""" % (PREVIEW_SIZE, PREVIEW_SIZE)
# The timing chart is the other image: wider than tall, set last, after the preview.
TIMINGS_SHOWN_JS = """() => [...document.querySelectorAll('.jp-OutputArea img.widget-image')].some(
    i => i.complete && i.naturalWidth > i.naturalHeight && i.naturalHeight > 0)"""


def test_demo_generates_in_chromium(lab, smoke_pipeline):
    from playwright.sync_api import sync_playwright

    reference = Demo(smoke_pipeline)  # what the page should show: the widget's defaults, run here
    expected = reference.run(EXAMPLE_PROMPT, guidance=min(reference.default_guidance, MAX_GUIDANCE), seed=0)
    smoke_pipeline.use_scheduler(DEFAULT_SCHEDULER)
    assert expected.ok, expected.error
    SCREENSHOT.parent.mkdir(exist_ok=True)
    chromium, _ = find_chromium()
    log = lab["log"]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                                     chromium_sandbox=False, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            try:
                page.goto(f"{lab['base']}/lab/tree/demo.ipynb?token={lab['token']}", timeout=APP_READY_S * 1000)
                _wait(page, "() => !!window.jupyterapp && window.jupyterapp.commands.hasCommand("
                            "'notebook:run-all-cells')", APP_READY_S, "JupyterLab's app never started", log)
                _wait(page, KERNEL_IDLE_JS, APP_READY_S, "demo.ipynb never opened with an idle Python kernel", log)
                page.evaluate("() => { const app = window.jupyterapp;"
                              " if (!app.shell.leftCollapsed) app.shell.collapseLeft(); }")
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                _wait(page, WIDGET_OR_ERROR_JS, RUN_ALL_S,
                      "the demo's Generate button never appeared after Run All Cells", log)
                error = page.evaluate(CELL_ERROR_JS)
                if error:
                    pytest.fail(f"a cell of demo.ipynb failed in the browser: {error} (screenshot: {SCREENSHOT})")

                button = page.get_by_role("button", name="Generate")
                button.scroll_into_view_if_needed()
                button.click()
                _wait(page, PREVIEW_SHOWN_JS, GENERATE_S,
                      f"the generated {PREVIEW_SIZE}x{PREVIEW_SIZE} image never appeared after clicking Generate",
                      log)
                _wait(page, TIMINGS_SHOWN_JS, GENERATE_S, "the timing chart never appeared after clicking Generate",
                      log)
                _wait(page, KERNEL_IDLE_JS, GENERATE_S, "the kernel never went idle after the generation", log)
                label = page.get_by_text("(the LLM's description)")
                _wait(page, "() => document.body.innerText.includes(\"(the LLM's description)\")", GENERATE_S,
                      "the description never appeared after clicking Generate", log)
                shown = label.locator("xpath=..").locator("b").inner_text().strip()
                assert shown == expected.description, \
                    f"the page shows {shown!r}; Demo.run with the same settings gives {expected.description!r}"
                assert page.locator(".jp-OutputArea .widget-html-content", has_text="Error:").count() == 0
                page.locator(".jp-OutputArea img.widget-image").first.scroll_into_view_if_needed()
            finally:
                try:
                    page.screenshot(path=str(SCREENSHOT))
                except Exception as err:  # a failed screenshot must not hide why the test failed
                    print(f"no screenshot: {err}", file=sys.stderr)
        finally:
            browser.close()
