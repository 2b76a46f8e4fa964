"""Browser test of the widgets (issue 22): JupyterLab from the venv on a free loopback port with a token,
driven by headless Chromium (Debian's ``chromium`` + ``chromium-driver``, through selenium; nothing
downloads a browser). For every notebook with widget cells: open it (profile smoke injected), Run All
(widget cells included), check that no cell raised, then move one control of every widget and check
that its rendered output changed. Screenshots go to the test's tmp dir; on failure their paths are
printed. Skipped, with the reason, where Chromium, chromedriver or selenium is missing.

Time goes almost all into running the notebooks' cells, so the notebooks run side by side:
``XNN_BROWSER_WORKERS`` (default: 2 where there are 2 or more CPUs) browsers, each with JupyterLab loaded
once, take the notebooks longest first from one queue and open each in the loaded app (no page reload),
one notebook open at a time, its kernel shut down when done; kernels get ``cpus // workers`` torch/OpenMP
threads (as ``xnn reproduce --jobs`` does). Each test waits for its notebook and re-raises what failed.

Named so that it runs after ``test_notebooks.py``: the smoke models are then in the cache.
"""
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
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
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    from urllib3.exceptions import ReadTimeoutError
    HAVE_SELENIUM = True
except ImportError:  # pragma: no cover - the test extra is missing
    HAVE_SELENIUM = False

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and DRIVER and HAVE_SELENIUM),
    reason="browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) "
           "and selenium (the test extra)")]

WORKERS = max(1, int(os.environ.get("XNN_BROWSER_WORKERS") or min(2, os.cpu_count() or 1)))
# seconds Run All took here in the smoke profile (2-core CPU, loaded): only the order, longest first
EXPECTED_S = {"01": 127, "02": 60, "08": 38, "04": 33, "09": 33, "00": 30, "05": 22, "10": 22, "03": 18,
              "06": 14, "07": 13}


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
    threads = str(max(1, (os.cpu_count() or 1) // WORKERS))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(base / "cfg"), JUPYTER_RUNTIME_DIR=str(base / "rt"),
               JUPYTERLAB_SETTINGS_DIR=str(base / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(base / "ws"),
               MPLBACKEND="module://matplotlib_inline.backend_inline", XNN_QUIET="1",
               OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    log = open(base / "server.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--allow-root",
                             f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={nbdir}", "--LabApp.expose_app_in_browser=True"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    else:
        pytest.fail(f"JupyterLab did not start; log: {base / 'server.log'}")
    yield {"url": url, "token": token, "dir": nbdir, "base": base}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def _new_browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
              "--disable-dev-shm-usage"):
        opts.add_argument(a)
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager must not fetch anything
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.set_script_timeout(60)
    return d


class _Stopped(Exception):
    """The module is tearing down (a test failed with -x, or the run ended)."""


def _wait(pred, timeout, what, shots, stop=None, every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = pred()
        except (TimeoutException, ReadTimeoutError):  # the page did not answer in time (a stalled machine):
            v = None                                   # ask again until the deadline
        if v:
            return v
        if stop is not None and stop.is_set():
            raise _Stopped()
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {what}; screenshots: {shots()}")


# the open notebook only: window.__xnn.w is the NotebookPanel this browser opened last
PANEL = "(window.__xnn && window.__xnn.w.node)"
JS_PROMPTS = f"return Array.from({PANEL}.querySelectorAll('.jp-CodeCell .jp-InputPrompt')).map(e => e.innerText)"
JS_ERRORS = f"""return Array.from({PANEL}.querySelectorAll('.jp-OutputArea-output'))
  .map(e => e.innerText).filter(t => t.includes('Traceback (most recent call last)') || /^\\w+Error: /m.test(t))
  .map(t => t.slice(0, 600))"""
# cells whose output holds a widget with a control (a progress bar is a widget too, but has none)
JS_WIDGET_CELLS = f"""return Array.from({PANEL}.querySelectorAll('.jp-CodeCell')).filter(
  c => c.querySelector('.jp-OutputArea .jupyter-widgets .widget-slider, .jp-OutputArea .jupyter-widgets .widget-dropdown,'
                       + ' .jp-OutputArea .jupyter-widgets .widget-toggle-buttons'))"""
JS_KERNEL = "const k = window.__xnn && window.__xnn.w.sessionContext.session; return k && k.kernel ? k.kernel.status : ''"
# open a notebook in the loaded app (as the file browser does), activate it, record its panel
JS_OPEN = """const [path, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  const app = window.jupyterapp;
  const w = await app.commands.execute('docmanager:open', {path: path, factory: 'Notebook'});
  await w.context.ready;
  app.shell.activateById(w.id);
  const x = window.__xnn = {w: w, ran: null, stderr: []};
  // what the kernel writes to stderr outside a cell's execution (a widget observer that raised: the comm
  // layer logs its traceback there, and the widget's output stays as it was)
  w.sessionContext.iopubMessage.connect((_, msg) => {
    const parent = (msg.parent_header || {}).msg_type;
    if (parent === 'execute_request') return;
    if (msg.header.msg_type === 'stream' && msg.content.name === 'stderr') x.stderr.push(msg.content.text);
    if (msg.header.msg_type === 'error') x.stderr.push((msg.content.traceback || []).join('\\n'));
  });
  done({id: w.id});
})().catch(e => done({err: String(e)}));"""
# Run All (the Run menu's command) on that notebook; its promise resolves once every cell has run
JS_RUN_ALL = """window.__xnn.ran = null;
window.jupyterapp.commands.execute('notebook:run-all-cells', {widgetId: window.__xnn.w.id})
  .then(r => { window.__xnn.ran = {ok: r}; }, e => { window.__xnn.ran = {err: String(e)}; });"""
# close it without a save dialog; its kernel shuts down in the background
JS_CLOSE = """const x = window.__xnn; window.__xnn = null;
if (x) { x.w.sessionContext.shutdown().catch(() => {}); x.w.context.model.dirty = false; x.w.dispose(); }"""
JS_WIDGET_STDERR = """const x = window.__xnn; const t = x ? x.stderr.join('').replace(/\\x1b\\[[0-9;]*m/g, '') : '';
if (!/Traceback \\(most recent call last\\)|^\\w+Error: /m.test(t)) return '';
return t.length > 1800 ? t.slice(0, 400) + '\\n[...]\\n' + t.slice(-1400) : t"""
JS_OUTPUT = "return Array.from(arguments[0].querySelectorAll('.widget-output')).map(e => e.innerHTML).join('|')"


def _remember_output(driver, cell) -> None:
    """Keep (in the page) what the widget in ``cell`` draws: its Output areas (figures, tables, text), not
    its controls."""
    driver.execute_script(f"arguments[0].__xnnBefore = (() => {{ {JS_OUTPUT} }})()", cell)


def _output_changed(driver, cell) -> bool:
    return driver.execute_script(f"return (() => {{ {JS_OUTPUT} }})() !== arguments[0].__xnnBefore", cell)


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


def _check_notebook(lab, driver, name, shot_dir, stop) -> str:
    """Open ``name`` in the loaded JupyterLab, Run All, then move one control of every widget and check
    its output changed (fails the test through pytest.fail / assert). Returns a timing line."""
    shots, t = [], [time.time()]

    def shot(tag):
        p = shot_dir / f"{Path(name).stem}-{tag}.png"
        driver.save_screenshot(str(p))
        shots.append(str(p))
        return shots

    def mark():
        t.append(time.time())
        return f"{t[-1] - t[-2]:.1f}"

    def kernel_idle():
        return driver.execute_script(JS_KERNEL) == "idle"

    r = driver.execute_async_script(JS_OPEN, name)
    assert "err" not in r, f"{name}: JupyterLab could not open it: {r['err']}"
    _wait(lambda: driver.execute_script(f"return {PANEL}.querySelectorAll('.jp-Notebook .jp-Cell').length"), 90,
          "the notebook", lambda: shot("open"), stop)
    _wait(kernel_idle, 120, "an idle kernel", lambda: shot("kernel"), stop)
    timing = f"open {mark()} s"
    driver.execute_script(JS_RUN_ALL)

    def finished():
        if not driver.execute_script("return window.__xnn.ran"):
            return False
        prompts = driver.execute_script(JS_PROMPTS)
        return kernel_idle() and prompts and not any("*" in p for p in prompts) and prompts

    prompts = _wait(finished, 600, "Run All to finish", lambda: shot("run"), stop, every=0.25)
    timing += f", run all {mark()} s"
    shot("ran")
    errors = driver.execute_script(JS_ERRORS)
    assert not errors, f"{name}: a cell raised: {errors[0]}; screenshots: {shots}"
    assert all(p.strip("[]: ").isdigit() for p in prompts), f"{name}: cells not run: {prompts}; {shots}"
    cells = driver.execute_script(JS_WIDGET_CELLS)
    n_widget_cells = sum("skip-execution" in c.metadata.get("tags", [])
                         for c in nbformat.read(str(ROOT / "notebooks" / name), as_version=4).cells)
    assert len(cells) >= n_widget_cells, f"{name}: {n_widget_cells} widget cells, {len(cells)} rendered; {shots}"
    for k, cell in enumerate(cells):
        _remember_output(driver, cell)
        driver.execute_script("window.__xnn.stderr = []")
        what = _move_one_control(driver, cell)
        # a traceback drawn into an output, or one the kernel sent to stderr (an update that raised inside an
        # observer leaves the output as it was), ends the wait at once; else the timeout reports no change
        _wait(lambda: (_output_changed(driver, cell) or driver.execute_script(JS_ERRORS)
                       or driver.execute_script(JS_WIDGET_STDERR)), 180,
              f"{name}: widget {k} ({what}) to redraw (no change: did its update raise in the kernel, or draw "
              "the same figure?)", lambda: shot(f"widget{k}"), stop)
        tb = driver.execute_script(JS_WIDGET_STDERR)
        if tb:
            pytest.fail(f"{name}: widget {k} ({what}): its update raised in the kernel (traceback on its stderr):\n{tb}\n"
                        f"screenshots: {shots}")
        _wait(kernel_idle, 180, "the kernel after the move", lambda: shot(f"widget{k}-idle"), stop)
        shot(f"widget{k}")
        errors = driver.execute_script(JS_ERRORS)
        assert not errors, f"{name}: widget {k} ({what}) raised: {errors[0]}; screenshots: {shots}"
        timing += f", widget {k} ({what}) {mark()} s"
    return timing


class _Runner:
    """``WORKERS`` threads, each with its own headless Chromium and JupyterLab page, checking the notebooks
    of one queue (longest first); :meth:`result` waits for one notebook's outcome."""

    def __init__(self, lab, names, shot_dirs):
        self.lab, self.shot_dirs = lab, shot_dirs
        self.stop = threading.Event()
        self.todo = queue.Queue()
        for n in sorted(names, key=lambda n: -EXPECTED_S.get(n[:2], 60)):  # unknown ones early
            self.todo.put(n)
        self.done = {n: threading.Event() for n in names}
        self.outcome = {}
        self.t0 = time.time()
        self.threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(WORKERS)]
        for th in self.threads:
            th.start()

    def _load_lab(self, driver, i):
        driver.get(f"{self.lab['url']}/lab/workspaces/xnn-browser-{i}?reset&token={self.lab['token']}")
        _wait(lambda: driver.execute_script("return !!(window.jupyterapp && window.jupyterapp.shell)"), 90,
              "JupyterLab to load", lambda: [], self.stop, every=0.2)
        driver.execute_async_script("window.jupyterapp.restored.then(() => arguments[arguments.length - 1]())")

    def _work(self, i):
        driver = None
        fresh = True
        while not self.stop.is_set():
            try:
                name = self.todo.get_nowait()
            except queue.Empty:
                break
            t = time.time()
            try:
                if driver is None:
                    driver = _new_browser()
                if fresh:
                    self._load_lab(driver, i)
                    fresh = False
                timing = _check_notebook(self.lab, driver, name, self.shot_dirs[name], self.stop)
                self.outcome[name] = None
                print(f"\n  [browser {i}] {name}: {time.time() - t:.1f} s ({timing}); "
                      f"at {time.time() - self.t0:.0f} s", flush=True)
            except BaseException as e:  # pytest.fail raises an exception outside Exception
                self.outcome[name] = e
                fresh = True  # whatever state the page is in, the next notebook gets a freshly loaded app
                print(f"\n  [browser {i}] {name}: FAILED after {time.time() - t:.1f} s", flush=True)
            finally:
                try:
                    if driver is not None:
                        driver.execute_script(JS_CLOSE)
                except Exception:
                    fresh = True
                self.done[name].set()
        if driver is not None:
            driver.quit()

    def result(self, name, timeout=1800):
        if not self.done[name].wait(timeout):
            pytest.fail(f"{name}: no browser finished it within {timeout} s")
        e = self.outcome[name]
        if e is not None and not isinstance(e, _Stopped):
            raise e

    def close(self):
        self.stop.set()
        for th in self.threads:
            th.join(60)


@pytest.fixture(scope="module")
def runner(lab, tmp_path_factory, request):
    # only the notebooks this session selected (-k, node ids), in any order
    names = [it.callspec.params["name"] for it in request.session.items
             if getattr(it, "originalname", None) == "test_notebook_widgets_in_a_real_browser"
             and it.module is request.module]
    r = _Runner(lab, names, {n: tmp_path_factory.mktemp(f"shots-{Path(n).stem}") for n in names})
    yield r
    r.close()


@pytest.mark.parametrize("name", [p.name for p in _widget_notebooks()])
def test_notebook_widgets_in_a_real_browser(runner, name):
    runner.result(name)
