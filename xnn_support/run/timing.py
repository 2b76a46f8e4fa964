"""Where a run's time goes (``xnn reproduce --profile-time``): per notebook and per cell, from the cell
durations papermill stores in each executed notebook.

Each code cell is put in one category by what it calls (a heuristic, named as such in the output):
``setup`` (starts with imports: imports, sizes, data), ``widgets`` (a widget cell, exercised by
``--widgets``), ``training`` (calls ``fit(`` or a ``train``/``trained_`` function), ``figures`` (draws
through ``viz.``/``plt.`` and trains nothing; such a cell often computes what it draws too), ``method``
(everything else: the paper's computation and its metrics). ``OUT/time_profile.md`` has one table of totals per category and
notebook, then the five slowest cells of each notebook; ``OUT/time_profile.csv`` every cell.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

import nbformat
import pandas as pd

from ..core.ledger import atomic_write_text
from .integrity import read_marker

__all__ = ["cell_times", "time_profile", "write_time_profile", "categorise"]

_TRAIN = re.compile(r"\bfit\(|\btrain\w*\(|\btrained_\w*\(|\.train\(")
_FIG = re.compile(r"\bviz\.|\bplt\.|\.plot\(")


def categorise(source: str) -> str:
    """``setup`` | ``widgets`` | ``training`` | ``figures`` | ``method`` for a code cell's source (see the
    module doc)."""
    code = [ln for ln in source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if "_xnn_exercise" in source or (code and code[-1].lstrip().startswith("widgets.")):
        return "widgets"
    if code and code[0].lstrip().startswith(("import ", "from ")) and not _TRAIN.search(source):
        return "setup"
    if _TRAIN.search(source):
        return "training"
    if _FIG.search(source):
        return "figures"
    return "method"


def cell_times(ipynb) -> pd.DataFrame:
    """One row per executed code cell of ``ipynb``: cell index, seconds, category, first source line."""
    nb = nbformat.read(str(ipynb), as_version=4)
    rows = []
    for i, c in enumerate(nb.cells):
        meta = c.metadata.get("papermill", {}) if c.cell_type == "code" else {}
        if meta.get("duration") is None:
            continue
        first = next((ln for ln in c.source.splitlines() if ln.strip()), "")[:70]
        rows.append({"notebook": Path(ipynb).stem, "cell": i, "seconds": float(meta["duration"]),
                     "category": categorise(c.source), "first line": first})
    return pd.DataFrame(rows, columns=["notebook", "cell", "seconds", "category", "first line"])


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
        return pd.DataFrame(columns=["notebook", "cell", "seconds", "category", "first line"])
    return pd.concat(frames, ignore_index=True)


def write_time_profile(out_dir) -> Path:
    """Write ``time_profile.md`` and ``time_profile.csv`` into ``out_dir``; return the markdown's path."""
    out_dir = Path(out_dir)
    df = time_profile(out_dir)
    atomic_write_text(out_dir / "time_profile.csv", df.to_csv(index=False))
    md = ["# Where the time goes", "",
          "Seconds per notebook and category (categories by what a cell calls, a heuristic: setup (starts with "
          "imports), widgets, training (`fit`/`train*`), figures (`viz.`/`plt.` without training; may compute "
          "too), method (the rest)).", ""]
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
            md += ["", f"## {nb}: slowest cells", "", "| cell | seconds | category | first line |", "|---|---|---|---|"]
            for r in g.sort_values("seconds", ascending=False).head(5).itertuples(index=False):
                md.append(f"| {r.cell} | {r.seconds:.1f} | {r.category} | `{r[4].replace('|', '/')}` |")
    path = out_dir / "time_profile.md"
    atomic_write_text(path, "\n".join(md) + "\n")
    return path
