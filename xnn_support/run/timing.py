"""Where a run's time goes (``xnn reproduce --profile-time``): per notebook and per cell, from the cell
durations papermill stores in each executed notebook.

Training is measured: :func:`~xnn_support.core.train.fit` logs a span for each training it runs (cache
hits are not training) to ``OUT/NN_name.time.jsonl`` (:mod:`xnn_support.core.timelog`), and a cell's
``training`` seconds are the wall time, inside the cell's papermill start and end, during which at least
one training ran (overlapping trainings of a notebook's workers count once). The rest of each cell goes to
one category by what it calls (a heuristic, named as such in the output): ``setup`` (starts with imports:
imports, sizes, data), ``widgets`` (a widget cell, exercised by ``--widgets``), ``figures`` (draws
through ``viz.``/``plt.``; such a cell often computes what it draws too), ``method`` (everything else:
the paper's computation and its metrics, including a method that itself optimises, such as an explainer
or a transplant). A notebook run before the time log existed has no log; its cells that call ``fit(`` or a
``train``/``trained_`` function are then filed as ``training (guessed)``. ``OUT/time_profile.md`` has one
table of totals per category and notebook, then the five slowest cells of each notebook with their
training share; ``OUT/time_profile.csv`` every cell.
"""
from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import nbformat
import pandas as pd

from ..core.ledger import atomic_write_text
from ..core.timelog import read_spans
from .integrity import read_marker, time_log_path

__all__ = ["cell_times", "time_profile", "write_time_profile", "categorise"]

_TRAIN = re.compile(r"\bfit\(|\btrain\w*\(|\btrained_\w*\(|\.train\(")
_FIG = re.compile(r"\bviz\.|\bplt\.|\.plot\(")


def categorise(source: str, measured: bool = False) -> str:
    """``setup`` | ``widgets`` | ``training (guessed)`` | ``figures`` | ``method`` for a code cell's source
    (see the module doc). ``measured``: training is measured from the time log, so a cell is never guessed
    to be training."""
    code = [ln for ln in source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    trains = not measured and bool(_TRAIN.search(source))
    if "_xnn_exercise" in source or (code and code[-1].lstrip().startswith("widgets.")):
        return "widgets"
    if code and code[0].lstrip().startswith(("import ", "from ")) and not trains:
        return "setup"
    if trains:
        return "training (guessed)"
    if _FIG.search(source):
        return "figures"
    return "method"


def _stamp(text) -> Optional[float]:
    """Seconds since the epoch of papermill's ISO time (naive means UTC); None if absent or unreadable."""
    if not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)).timestamp()


def _merge(spans: Sequence[Dict]) -> List[Tuple[float, float]]:
    """The union of the spans' [start, end] intervals, as sorted disjoint intervals."""
    out: List[List[float]] = []
    for a, b in sorted((s["start"], s["end"]) for s in spans if s["end"] >= s["start"]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _covered(intervals: Sequence[Tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of [lo, hi] inside the disjoint ``intervals``."""
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in intervals)


_COLS = ["notebook", "cell", "seconds", "category", "training s", "first line"]


def cell_times(ipynb, spans: Optional[Sequence[Dict]] = None) -> pd.DataFrame:
    """One row per executed code cell of ``ipynb`` and category: cell index, seconds, category, the cell's
    measured training seconds, first source line. ``spans``: the notebook's time log (default: read from
    ``NN_name.time.jsonl`` next to it); with none, training is guessed from the source (see the module doc).
    A cell that trained for part of its time gives two rows, ``training`` and its other category."""
    ipynb = Path(ipynb)
    if spans is None:
        log = time_log_path(ipynb.parent, ipynb.stem)
        spans = read_spans(log) if log.is_file() else None
    measured = spans is not None
    intervals = _merge([s for s in spans if s["kind"] == "training"]) if measured else []
    nb = nbformat.read(str(ipynb), as_version=4)
    rows = []
    for i, c in enumerate(nb.cells):
        meta = c.metadata.get("papermill", {}) if c.cell_type == "code" else {}
        if meta.get("duration") is None:
            continue
        first = next((ln for ln in c.source.splitlines() if ln.strip()), "")[:70]
        total = float(meta["duration"])
        lo, hi = _stamp(meta.get("start_time")), _stamp(meta.get("end_time"))
        train = min(total, _covered(intervals, lo, hi)) if (intervals and lo is not None and hi is not None) else 0.0
        base = {"notebook": ipynb.stem, "cell": i, "training s": train, "first line": first}
        if train > 0:
            rows.append({**base, "seconds": train, "category": "training"})
        if total - train > 0 or train == 0:
            rows.append({**base, "seconds": total - train, "category": categorise(c.source, measured)})
    return pd.DataFrame(rows, columns=_COLS)


def time_profile(out_dir) -> pd.DataFrame:
    """:func:`cell_times` of every executed notebook with a marker in ``out_dir``."""
    out_dir = Path(out_dir)
    frames: List[pd.DataFrame] = []
    for marker in sorted(out_dir.glob("*.run.json")):
        m = read_marker(out_dir, marker.name[: -len(".run.json")]) or {}
        nb = out_dir / str(m.get("output", ""))
        if m.get("output") and nb.is_file():
            frames.append(cell_times(nb))
    if not frames:
        return pd.DataFrame(columns=_COLS)
    return pd.concat(frames, ignore_index=True)


def _slowest(g: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` slowest cells of one notebook's rows, a cell's rows summed; ``category`` its non-training one."""
    rest = g[g["category"] != "training"].set_index("cell")["category"]
    cells = g.groupby("cell", sort=False).agg(seconds=("seconds", "sum"), train=("training s", "first"),
                                              first=("first line", "first"))
    cells["category"] = [rest.get(c, "method") for c in cells.index]
    return cells.sort_values("seconds", ascending=False).head(n)


def write_time_profile(out_dir) -> Path:
    """Write ``time_profile.md`` and ``time_profile.csv`` into ``out_dir``; return the markdown's path."""
    out_dir = Path(out_dir)
    df = time_profile(out_dir)
    atomic_write_text(out_dir / "time_profile.csv", df.to_csv(index=False))
    md = ["# Where the time goes", "",
          "Wall seconds per notebook and category. `training`: measured, the time a `fit` trained (cache hits "
          "are not training). The other categories by what a cell calls, a heuristic: setup (starts with "
          "imports), widgets, figures (`viz.`/`plt.`; may compute too), method (the rest, including methods "
          "that optimise). `training (guessed)`: a notebook run without a time log, whose cells calling "
          "`fit`/`train*` are filed there whole.", ""]
    if df.empty:
        md.append("No executed notebook found.")
    else:
        tab = df.pivot_table(index="notebook", columns="category", values="seconds", aggfunc="sum", fill_value=0.0)
        tab["total"] = tab.sum(axis=1)
        tab.loc["all"] = tab.sum(axis=0)
        cols = list(tab.columns)
        md += ["| notebook | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        md += [f"| {nb} | " + " | ".join(f"{v:.1f}" for v in row) + " |" for nb, row in tab.iterrows()]
        for nb, g in df.groupby("notebook", sort=True):
            md += ["", f"## {nb}: slowest cells", "",
                   "| cell | seconds | of which training | category of the rest | first line |", "|---|---|---|---|---|"]
            for c, r in _slowest(g).iterrows():
                md.append(f"| {c} | {r.seconds:.1f} | {r.train:.1f} | {r.category} | `{r['first'].replace('|', '/')}` |")
    path = out_dir / "time_profile.md"
    atomic_write_text(path, "\n".join(md) + "\n")
    return path
