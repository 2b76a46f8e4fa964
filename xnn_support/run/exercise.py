"""Exercise a notebook's widgets headless: move every control through two values, check the output moves.

Widget cells are tagged ``skip-execution``, so a plain run never executes them; ``xnn run NN --widgets``
(and the notebook tests) runs them too, each followed by :func:`exercise` on the widget the cell returns
(:func:`widget_notebook` rewrites the notebook so). :func:`exercise` finds the controls (sliders,
dropdowns, toggles, checkboxes) in the widget tree, sets each to two different values (clicking the
"Run" button of manual widgets after each), records what the widget displays (figure pixels, tables,
printed text) and reports per control whether the output changed and whether the update raised. An
exception inside an ``interact`` callback (which ipywidgets only logs) is caught and reported.
:meth:`ExerciseReport.check` raises with the table when a control left the output unchanged or raised.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import ipywidgets as w
import nbformat
import pandas as pd

__all__ = ["exercise", "ExerciseReport", "widget_notebook", "WidgetCheckError"]

_KINDS = (w.IntSlider, w.FloatSlider, w.IntRangeSlider, w.FloatRangeSlider, w.Dropdown, w.ToggleButtons,
          w.RadioButtons, w.Select, w.SelectionSlider, w.Checkbox, w.ToggleButton, w.BoundedIntText,
          w.BoundedFloatText, w.IntText, w.FloatText)


class WidgetCheckError(AssertionError):
    """A widget control whose move changed nothing, or whose update raised."""


@dataclass
class ExerciseReport:
    label: str
    rows: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r["changed"] and not r["error"] for r in self.rows)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["control", "values", "changed", "error"])

    def check(self) -> "ExerciseReport":
        if not self.rows:
            raise WidgetCheckError(f"{self.label}: no control found to move (is the widget returned by the cell?)")
        if not self.ok:
            raise WidgetCheckError(f"{self.label}: some controls did not change the output or raised:\n"
                                   f"{self.table().to_string(index=False)}")
        return self


def _walk(obj) -> List[w.Widget]:
    seen, out, todo = set(), [], [obj]
    while todo:
        x = todo.pop(0)
        if not isinstance(x, w.Widget) or id(x) in seen:
            continue
        seen.add(id(x))
        out.append(x)
        todo.extend(getattr(x, "children", ()) or ())
    return out


def _root(obj):
    """The widget of what a widget function returned: ``interact``'s function (``.widget``) or a widget."""
    root = getattr(obj, "widget", obj)
    if not isinstance(root, w.Widget):
        raise WidgetCheckError(f"expected a widget (or what ipywidgets.interact returns), got {type(obj).__name__}")
    return root


def _two_values(c) -> List[Any]:
    """Two different values for control ``c`` (its ends, or its first two options)."""
    if isinstance(c, (w.Checkbox, w.ToggleButton)):
        return [False, True]
    if hasattr(c, "options"):
        opts = list(c.options)
        vals = [o[1] if isinstance(o, tuple) else o for o in opts]
        return vals[:1] + [v for v in vals[1:] if v != vals[0]][-1:] if len(vals) > 1 else vals
    lo, hi = getattr(c, "min", None), getattr(c, "max", None)
    if isinstance(c.value, tuple):  # range sliders
        return [(lo, lo + (hi - lo) / 2 if isinstance(c.value[0], float) else (lo + hi) // 2), (lo, hi)]
    if lo is not None and hi is not None and lo != hi:
        return [lo, hi]
    return [c.value, c.value + (getattr(c, "step", 1) or 1)]


def _fingerprint(obj) -> str:
    if hasattr(obj, "savefig"):  # a matplotlib Figure (no plotting import here: that is viz's)
        buf = io.BytesIO()
        obj.savefig(buf, format="rgba")  # the pixels (closed figures have no canvas of their own to draw)
        return "fig:" + hashlib.sha256(buf.getvalue()).hexdigest()[:16]
    if isinstance(obj, pd.DataFrame):
        return "df:" + hashlib.sha256(obj.to_csv().encode()).hexdigest()[:16]
    return "obj:" + hashlib.sha256(repr(obj).encode()).hexdigest()[:16]


class _Recorder:
    def __init__(self):
        self.shown: List[str] = []
        self.stdout = io.StringIO()

    def mark(self) -> Tuple[int, int]:
        return len(self.shown), len(self.stdout.getvalue())

    def since(self, mark: Tuple[int, int]) -> Tuple[str, ...]:
        """What was displayed since ``mark``: the figures and tables, or, if none, the printed text (a
        progress line printed before a figure does not count as a change)."""
        shown = tuple(self.shown[mark[0]:])
        text = self.stdout.getvalue()[mark[1]:]
        return shown or ((hashlib.sha256(text.encode()).hexdigest()[:16],) if text else ())


@contextlib.contextmanager
def _recording(interactives, errors: List[str]):
    """Record what the widgets display (and print); catch exceptions ``interact`` would only log."""
    rec = _Recorder()
    # the widgets display through xnn_support.widgets' `display`; a cell that built one has imported it
    _widgets = sys.modules.get("xnn_support.widgets")
    old_display = getattr(_widgets, "display", None)
    old_f = {id(i): i.f for i in interactives}

    def display(*objs, **kw):
        rec.shown.extend(_fingerprint(o) for o in objs)

    def guard(f):
        def wrapped(**kw):
            try:
                return f(**kw)
            except Exception as e:  # noqa: BLE001 - reported as the control's error
                errors.append(f"{type(e).__name__}: {e}")
                raise
        return wrapped

    if _widgets is not None:
        _widgets.display = display
    for i in interactives:
        i.f = guard(i.f)
    try:
        with contextlib.redirect_stdout(rec.stdout):
            yield rec
    finally:
        if _widgets is not None:
            _widgets.display = old_display
        for i in interactives:
            i.f = old_f[id(i)]


def _move(c, v, buttons, rec, errors) -> Tuple[str, ...]:
    """Set control ``c`` to ``v`` (then click the manual widgets' Run buttons); what that displayed."""
    mark = rec.mark()
    try:
        c.value = v
        for b in buttons:
            b.click()
    except Exception as e:  # noqa: BLE001 - an observer that raised
        errors.append(f"{type(e).__name__}: {e}")
    return rec.since(mark)


def exercise(obj, *, label: str = "widget") -> ExerciseReport:
    """Move each control of ``obj`` (what a :mod:`xnn_support.widgets` function returned) through two values
    and report whether the displayed output changed and whether the update raised. Each control goes to
    its first value, then the second (output A), then back to the first (output B): A must be non-empty
    and differ from B."""
    root = _root(obj)
    tree = _walk(root)
    interactives = [x for x in tree if isinstance(x, w.interactive)]
    buttons = [x for x in tree if isinstance(x, w.Button) and any(x is getattr(i, "manual_button", None)
                                                                  for i in interactives)]
    controls = [x for x in tree if isinstance(x, _KINDS) and not x.disabled]
    report = ExerciseReport(label)
    for c in controls:
        name = f"{type(c).__name__} {c.description!r}".replace(" ''", "")
        original, vals, errors = c.value, _two_values(c), []
        changed = False
        with _recording(interactives, errors) as rec:
            if len(vals) > 1:
                _move(c, vals[0], buttons, rec, errors)
                a = _move(c, vals[1], buttons, rec, errors)
                b = _move(c, vals[0], buttons, rec, errors)
                changed = bool(a) and a != b
                if not a and not errors:
                    errors.append("nothing was displayed after the move")
            with contextlib.suppress(Exception):
                c.value = original
        report.rows.append({"control": name, "values": vals, "changed": changed,
                            "error": "; ".join(dict.fromkeys(errors))})
    return report


def _rewrite_widget_cell(src: str, label: str) -> str:
    """``src`` with its last expression bound and exercised (the widget cell must end with the widget)."""
    tree = ast.parse(src)
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        raise WidgetCheckError(f"{label}: a widget cell must end with the widget expression (e.g. "
                               "`widgets.tree_walker(...)`) so that it can be exercised")
    lines = src.splitlines()
    last = tree.body[-1]
    head = "\n".join(lines[:last.lineno - 1])
    expr = "\n".join(lines[last.lineno - 1:last.end_lineno])
    return (f"{head}\n_xnn_widget = (\n{expr}\n)\n"
            "from xnn_support.run.exercise import exercise as _xnn_exercise\n"
            f"_xnn_exercise(_xnn_widget, label={label!r}).check().table()\n")


def widget_notebook(nb_path, out_path) -> int:
    """Write a copy of the notebook whose ``skip-execution`` widget cells run and are exercised; return how
    many widget cells it has."""
    nb = nbformat.read(str(nb_path), as_version=4)
    n = 0
    for i, c in enumerate(nb.cells):
        tags = c.metadata.get("tags", [])
        if c.cell_type == "code" and "skip-execution" in tags:
            c.metadata["tags"] = [t for t in tags if t != "skip-execution"]
            c.source = _rewrite_widget_cell(c.source, f"cell {i}")
            n += 1
    nbformat.write(nb, str(out_path))
    return n
