"""Headless widget checks (issue 22): :func:`xnn_support.run.exercise.exercise` moves every control and
sees whether the output changes; ``xnn run --widgets`` runs the widget cells and fails on a dead or
raising control; ``--html`` writes a static page. The notebooks' own widgets are exercised by
tests/test_notebooks.py (smoke runs with ``widgets=True``)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import ipywidgets as w
import matplotlib
import matplotlib.pyplot as plt
import pytest

from nbfactory import make_notebook
from xnn_support import widgets
from xnn_support.run.exercise import WidgetCheckError, exercise, widget_notebook

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]
XNN = [sys.executable, "-m", "xnn_support.run.cli"]


def _fig(v):
    f, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, v])
    plt.close(f)
    return f


def test_a_live_widget_passes_every_control():
    def update(i=0, k="a", flag=False):
        widgets._show(_fig(i + 10 * (k == "b") + 100 * flag))
    r = exercise(w.interact(update, i=w.IntSlider(0, 0, 3), k=w.Dropdown(options=["a", "b"]),
                            flag=w.Checkbox(False)))
    assert r.ok and len(r.rows) == 3 and r.check() is r
    assert list(r.table()["changed"]) == [True, True, True]


def test_a_control_that_changes_nothing_is_caught():
    def update(i=0, k="a"):
        widgets._show(_fig(1 if k == "a" else 2))  # i is ignored
    r = exercise(w.interact(update, i=w.IntSlider(0, 0, 3), k=w.Dropdown(options=["a", "b"])))
    assert not r.ok and list(r.table()["changed"]) == [False, True]
    with pytest.raises(WidgetCheckError, match="IntSlider 'i'"):
        r.check()


def test_an_update_that_raises_is_caught_even_inside_interact():
    def update(i=0):
        if i > 1:
            raise RuntimeError("boom")
        widgets._show(_fig(i))
    r = exercise(w.interact(update, i=w.IntSlider(0, 0, 3)))
    assert not r.ok and "RuntimeError: boom" in r.rows[0]["error"]


def test_manual_widgets_and_observer_widgets_are_driven():
    def update(i=0):
        widgets._show(_fig(i))
    assert exercise(w.interact_manual(update, i=w.IntSlider(0, 0, 3))).ok  # the Run button is clicked
    out, s = w.Output(), w.IntSlider(0, 0, 5)

    def observe(*_):
        with out:
            widgets.display(_fig(s.value))
    s.observe(observe, "value")
    assert exercise(w.VBox([s, out])).ok
    with pytest.raises(WidgetCheckError, match="expected a widget"):
        exercise(42)


def test_widget_cells_must_end_with_the_widget(tmp_path):
    nb = make_notebook(tmp_path / "00_w.ipynb", 'profile: str = "default"  # p', ["x = 1"])
    import nbformat
    book = nbformat.read(str(nb), as_version=4)
    c = nbformat.v4.new_code_cell("from xnn_support import widgets\nw = 1")
    c.metadata["tags"] = ["skip-execution"]
    book.cells.append(c)
    nbformat.write(book, str(nb))
    with pytest.raises(WidgetCheckError, match="must end with the widget expression"):
        widget_notebook(nb, tmp_path / "out.ipynb")


WIDGET_CELL = """import ipywidgets as w, matplotlib.pyplot as plt
from xnn_support import widgets
def update(i=0):
    if BROKEN and i > 0:
        raise ValueError("update broke")
    f, ax = plt.subplots(); ax.plot([0, i]); plt.close(f); widgets._show(f)
w.interact(update, i=w.IntSlider(0, 0, 2, description="i"))"""


def _widget_nb(d: Path, broken: bool) -> Path:
    import nbformat
    d.mkdir(parents=True, exist_ok=True)
    nb = make_notebook(d / "00_w.ipynb", 'profile: str = "default"  # p',
                       ["from xnn_support import record\nimport matplotlib.pyplot as plt\n"
                        "f, ax = plt.subplots(); ax.plot([1, 2]); plt.show()\nrecord('w/m', 1.0)"], metrics=["w/m"])
    book = nbformat.read(str(nb), as_version=4)
    c = nbformat.v4.new_code_cell(WIDGET_CELL.replace("BROKEN", str(broken)))
    c.metadata["tags"] = ["skip-execution"]
    book.cells.append(c)
    nbformat.write(book, str(nb))
    return d


@pytest.mark.slow
def test_xnn_run_widgets_passes_a_live_widget_and_fails_a_broken_one(tmp_path):
    env = dict(os.environ, XNN_QUIET="1")
    for broken in (False, True):
        d = _widget_nb(tmp_path / f"nbs-{broken}", broken)
        out = tmp_path / f"out-{broken}"
        r = subprocess.run(XNN + ["run", "00", "--notebooks", str(d), "--widgets", "--html", "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
        marker = json.loads((out / "00_w.run.json").read_text())
        if not broken:
            assert r.returncode == 0 and marker["status"] == "ok", r.stdout + r.stderr
            page = (out / "00_w.html").read_text()
            assert "data:image/png;base64" in page and "IntSlider" in page  # the exercise table is in it
            assert "static HTML" in (out / "report.md").read_text()
        else:
            assert r.returncode == 1 and marker["status"] == "failed", r.stdout + r.stderr
            assert marker["error"]["ename"] == "WidgetCheckError" and "update broke" in marker["error"]["evalue"]
    # without --widgets the widget cell is skipped as always, so the broken widget goes unnoticed
    r = subprocess.run(XNN + ["run", "00", "--notebooks", str(tmp_path / "nbs-True"), "--out", str(tmp_path / "plain")],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and not (tmp_path / "plain" / "00_w.html").exists()
