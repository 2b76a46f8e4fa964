"""Figures of a parameter sweep (``xnn sweep``): each metric against a swept parameter.

:func:`sweep_metric` draws mean +- sd over seeds when ``seed`` is swept (one line per combination of the
other swept parameters), or the points themselves otherwise.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._base import _detached

__all__ = ["sweep_metric"]


def _sortable(values: Sequence) -> List:
    try:
        return sorted(set(values), key=float)
    except (TypeError, ValueError):
        return sorted(set(values), key=str)


@_detached
def sweep_metric(df: pd.DataFrame, metric: str, x: Optional[str], *, by: Sequence[str] = (), seed: str = "seed"):
    """``metric`` (a column of ``df``) against parameter ``x`` (None: against the seed alone), one line per
    combination of the ``by`` parameters, mean +- sd over ``seed`` when that column varies."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    data = df[pd.to_numeric(df[metric], errors="coerce").notna()].copy()
    data[metric] = data[metric].astype(float)
    groups = data.groupby(list(by), sort=True) if by else [((), data)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{b}={v}" for b, v in zip(by, key)) or None
        if x is None:
            ax.plot(g[seed].astype(str), g[metric], "o", label=label)
            continue
        xs = _sortable(g[x])
        stats = [g[g[x] == v][metric] for v in xs]
        mean = np.array([s.mean() for s in stats])
        sd = np.array([s.std(ddof=1) if len(s) > 1 else 0.0 for s in stats])
        pos = np.arange(len(xs))
        ax.errorbar(pos, mean, yerr=sd, marker="o", capsize=3, label=label)
        ax.set_xticks(pos, [str(v) for v in xs])
    ax.set_xlabel(x if x is not None else seed)
    ax.set_ylabel(metric)
    varies = seed in data and data[seed].nunique() > 1 and x is not None
    ax.set_title(f"{metric}" + (f" (mean ± sd over {data[seed].nunique()} seeds)" if varies else ""), fontsize=9)
    if by:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
