"""Browser test of the widgets (issue 22): JupyterLab from the venv on a free loopback port with a token,
driven by headless Chromium (Debian's ``chromium`` + ``chromium-driver``, through selenium; nothing
downloads a browser). For every notebook with widget cells: open it (profile smoke injected), Run All
(widget cells included), check that no cell raised, then move one control of every widget and check
that its rendered output changed. Screenshots go to the test's tmp dir; on failure their paths are
printed. Skipped, with the reason, where Chromium, chromedriver or selenium is missing.

Named so that it runs after ``test_notebooks.py``: the smoke models are then in the cache.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    HAVE_SELENIUM = True
except ImportError:  # pragma: no cover - the test extra is missing
    HAVE_SELENIUM = False

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and DRIVER and HAVE_SELENIUM),
    reason="browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) "
           "and selenium (the test extra)")]


def _widget_notebooks():
    out = []
    for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(str(p), as_version=4)
        if any("skip-execution" in c.metadata.get("tags", []) for c in nb.cells):
            out.append(p)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smoke_copy(src: Path, dst: Path) -> None:
    """The notebook with ``profile = "smoke"`` injected after its parameters cell (as papermill does)."""
    nb = nbformat.read(str(src), as_version=4)
    i = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell('profile = "smoke"')
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, cell)
    nbformat.write(nb, str(dst))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server (the venv's) on a free loopback port with a token, over smoke copies."""
    base = tmp_path_factory.mktemp("lab")
    nbdir = base / "notebooks"
    nbdir.mkdir()
    for p in _widget_notebooks():
        _smoke_copy(p, nbdir / p.name)
    settings = base / "settings" / "@jupyterlab"
    for ext, name, value in [("notebook-extension", "tracker", {"windowingMode": "none"}),
                             ("apputils-extension", "notification", {"fetchNews": "false", "checkForUpdates": False})]:
        (settings / ext).mkdir(parents=True, exist_ok=True)
        (settings / ext / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
    port, token = _free_port(), os.urandom(12).hex()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(base / "cfg"), JUPYTER_RUNTIME_DIR=str(base / "rt"),
               JUPYTERLAB_SETTINGS_DIR=str(base / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(base / "ws"),
               MPLBACKEND="module://matplotlib_inline.backend_inline", XNN_QUIET="1")
    log = open(base / "server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--allow-root",
                             f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={nbdir}"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        pytest.fail(f"JupyterLab did not start; log: {base / 'server.log'}")
    yield {"url": url, "token": token, "dir": nbdir, "base": base}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def browser(lab):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
              "--disable-dev-shm-usage"):
        opts.add_argument(a)
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager must not fetch anything
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.set_script_timeout(30)
    yield d
    d.quit()


def _wait(pred, timeout, what, shots):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}; screenshots: {shots()}")


PANEL = "(document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)') || document)"  # the open notebook only
JS_PROMPTS = f"return Array.from({PANEL}.querySelectorAll('.jp-CodeCell .jp-InputPrompt')).map(e => e.innerText)"
JS_ERRORS = f"""return Array.from({PANEL}.querySelectorAll('.jp-OutputArea-output'))
  .map(e => e.innerText).filter(t => t.includes('Traceback (most recent call last)') || /^\\w+Error: /m.test(t))
  .map(t => t.slice(0, 600))"""
# cells whose output holds a widget with a control (a progress bar is a widget too, but has none)
JS_WIDGET_CELLS = f"""return Array.from({PANEL}.querySelectorAll('.jp-CodeCell')).filter(
  c => c.querySelector('.jp-OutputArea .jupyter-widgets .widget-slider, .jp-OutputArea .jupyter-widgets .widget-dropdown,'
                       + ' .jp-OutputArea .jupyter-widgets .widget-toggle-buttons'))"""


def _api(lab, method, path):
    req = urllib.request.Request(f"{lab['url']}{path}", method=method,
                                 headers={"Authorization": f"token {lab['token']}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return json.loads(body) if body else None


def _shut_down_sessions(lab) -> None:
    """Close every notebook session (and its kernel) so the next notebook starts alone."""
    for sess in _api(lab, "GET", "/api/sessions") or []:
        _api(lab, "DELETE", f"/api/sessions/{sess['id']}")


def _output_html(driver, cell) -> str:
    """What the widget in ``cell`` draws (its Output areas: figures, tables, text), not its controls."""
    return driver.execute_script(
        "return Array.from(arguments[0].querySelectorAll('.widget-output')).map(e => e.innerHTML).join('|')", cell)


def _move_one_control(driver, cell) -> str:
    """Move the first control of the widget in ``cell`` (slider: End/Home key; dropdown: another option;
    toggle buttons: another button); click a manual widget's Run button; return what was moved."""
    sliders = cell.find_elements(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
    selects = cell.find_elements(By.CSS_SELECTOR, ".widget-dropdown select")
    toggles = cell.find_elements(By.CSS_SELECTOR, ".widget-toggle-buttons button:not(.mod-active)")
    if sliders:
        h = sliders[0]
        now, top = h.get_attribute("aria-valuenow"), h.get_attribute("aria-valuemax")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].focus();", h)
        h.send_keys(Keys.HOME if now == top else Keys.END)
        what = f"slider {now} -> {'min' if now == top else 'max'}"
    elif selects:
        s = Select(selects[0])
        cur = s.first_selected_option.text
        other = next(o.text for o in s.options if o.text != cur)
        s.select_by_visible_text(other)
        what = f"dropdown {cur!r} -> {other!r}"
    elif toggles:
        toggles[0].click()
        what = f"toggle -> {toggles[0].text!r}"
    else:
        pytest.fail("widget has no slider, dropdown or toggle buttons to move")
    for b in cell.find_elements(By.CSS_SELECTOR, ".widget-interact button.widget-button"):
        if "run" in b.text.lower():
            b.click()
    return what


@pytest.mark.parametrize("name", [p.name for p in _widget_notebooks()])
def test_notebook_widgets_in_a_real_browser(lab, browser, name, tmp_path):
    shots = []

    def shot(tag):
        p = tmp_path / f"{Path(name).stem}-{tag}.png"
        browser.save_screenshot(str(p))
        shots.append(str(p))
        return shots

    # a workspace of its own, reset: only this notebook is open (no tabs restored from the previous test)
    _shut_down_sessions(lab)
    browser.get(f"{lab['url']}/lab/workspaces/xnn-{Path(name).stem}/tree/{name}?reset&token={lab['token']}")
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"), 90, "the notebook", lambda: shot("open"))
    _wait(lambda: browser.execute_script("return document.body.innerText.includes('| Idle')"), 120,
          "an idle kernel", lambda: shot("kernel"))
    browser.find_element(By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][.//div[text()='Run']]").click()
    browser.find_element(By.CSS_SELECTOR, ".lm-Menu-item[data-command='runmenu:run-all']").click()
    t0 = time.time()

    def finished():
        prompts = browser.execute_script(JS_PROMPTS)
        idle = browser.execute_script("return document.body.innerText.includes('| Idle')")
        return idle and time.time() - t0 > 2 and prompts and not any("*" in p for p in prompts) and prompts

    prompts = _wait(finished, 600, "Run All to finish", lambda: shot("run"))
    shot("ran")
    errors = browser.execute_script(JS_ERRORS)
    assert not errors, f"{name}: a cell raised: {errors[0]}; screenshots: {shots}"
    assert all(p.strip("[]: ").isdigit() for p in prompts), f"{name}: cells not run: {prompts}; {shots}"
    cells = browser.execute_script(JS_WIDGET_CELLS)
    n_widget_cells = sum("skip-execution" in c.metadata.get("tags", [])
                         for c in nbformat.read(str(lab["dir"] / name), as_version=4).cells)
    assert len(cells) >= n_widget_cells, f"{name}: {n_widget_cells} widget cells, {len(cells)} rendered; {shots}"
    for k, cell in enumerate(cells):
        before = _output_html(browser, cell)
        what = _move_one_control(browser, cell)
        # a traceback drawn into an output ends the wait at once; an update that raised inside an observer
        # leaves the output as it was, which the timeout reports
        _wait(lambda: _output_html(browser, cell) != before or browser.execute_script(JS_ERRORS), 180,
              f"widget {k} ({what}) to redraw (no change: did its update raise in the kernel, or draw the "
              "same figure?)", lambda: shot(f"widget{k}"))
        _wait(lambda: browser.execute_script("return document.body.innerText.includes('| Idle')"), 180,
              "the kernel after the move", lambda: shot(f"widget{k}-idle"))
        shot(f"widget{k}")
        errors = browser.execute_script(JS_ERRORS)
        assert not errors, f"{name}: widget {k} ({what}) raised: {errors[0]}; screenshots: {shots}"
