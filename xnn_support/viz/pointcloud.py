"""06: point-cloud architecture utilities: figures for notebook 06 (part of :mod:`xnn_support.viz`;
returns figures, never shows them)."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ._base import _detached

__all__ = ["point_entropy_clouds", "rotation_entropy_rows", "adversarial_clouds", "pair_delta_bars"]


def _np(t):
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def _scatter(ax, p, c, vmin, vmax, cmap, size=6, elev=20, azim=-60):
    sc = ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=c, s=size, cmap=cmap, vmin=vmin, vmax=vmax, depthshade=False)
    ax.view_init(elev=elev, azim=azim)
    ax.set_axis_off()
    return sc


@_detached
def point_entropy_clouds(clouds, entropies, *, titles: Optional[Sequence[str]] = None, cols: int = 4,
                         cmap: str = "magma", title: Optional[str] = None, label: str = "entropy H_i (nats)",
                         elev: float = 20, azim: float = -60):
    """Clouds (n, N, 3) coloured by per-point entropy (n, N) on one colour scale: bright points are
    the ones the network lets vary (discarded information), dark ones it keeps."""
    clouds, ent = _np(clouds), _np(entropies)
    n = len(clouds)
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig = plt.figure(figsize=(2.8 * cols + 0.6, 2.8 * rows))
    vmin, vmax = np.nanpercentile(ent, 2), np.nanpercentile(ent, 98)
    sc = None
    for k in range(n):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        sc = _scatter(ax, clouds[k], ent[k], vmin, vmax, cmap, elev=elev, azim=azim)
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    fig.colorbar(sc, ax=fig.axes, shrink=0.6, label=label)
    if title:
        fig.suptitle(title)
    return fig


@_detached
def rotation_entropy_rows(cloud, entropies_by_model, *, cmap: str = "magma", title: Optional[str] = None,
                          elev: float = 20, azim: float = -60):
    """One row per model, one column per rotation: the per-point entropy of the rotated cloud drawn
    on the *unrotated* cloud, so a rotation-robust network shows the same pattern in every column.
    ``entropies_by_model``: {name: (K, N) entropies}."""
    p = _np(cloud)
    names = list(entropies_by_model)
    K = len(_np(entropies_by_model[names[0]]))
    fig = plt.figure(figsize=(2.3 * K + 1.2, 2.3 * len(names)))
    for r, name in enumerate(names):
        e = _np(entropies_by_model[name])
        vmin, vmax = np.nanpercentile(e, 2), np.nanpercentile(e, 98)
        for k in range(K):
            ax = fig.add_subplot(len(names), K, r * K + k + 1, projection="3d")
            _scatter(ax, p, e[k], vmin, vmax, cmap, size=4, elev=elev, azim=azim)
            if k == 0:
                ax.text2D(-0.15, 0.5, name, transform=ax.transAxes, rotation=90, va="center", fontsize=8)
            if r == 0:
                ax.set_title(f"rotation {k + 1}", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


@_detached
def adversarial_clouds(clouds, deltas, *, titles: Optional[Sequence[str]] = None, cmap: str = "viridis",
                       title: Optional[str] = None, elev: float = 20, azim: float = -60):
    """Top row: clean clouds; bottom row: X + delta coloured by |delta_i| (where the attack moved points)."""
    clouds, deltas = _np(clouds), _np(deltas)
    n = len(clouds)
    fig = plt.figure(figsize=(2.8 * n + 0.6, 5.4))
    mag = np.linalg.norm(deltas, axis=-1)
    vmax = np.percentile(mag, 99)
    sc = None
    for k in range(n):
        ax = fig.add_subplot(2, n, k + 1, projection="3d")
        _scatter(ax, clouds[k], clouds[k][:, 2], None, None, "Greys", size=4, elev=elev, azim=azim)
        ax.set_title(titles[k] if titles is not None else f"cloud {k}", fontsize=8)
        ax = fig.add_subplot(2, n, n + k + 1, projection="3d")
        sc = _scatter(ax, clouds[k] + deltas[k], mag[k], 0, vmax, cmap, size=5, elev=elev, azim=azim)
        ax.set_title(f"||delta||^2 = {float((deltas[k] ** 2).sum()):.2f}", fontsize=8)
    fig.colorbar(sc, ax=fig.axes, shrink=0.6, label="|delta_i|")
    if title:
        fig.suptitle(title)
    return fig


@_detached
def pair_delta_bars(table, *, title: Optional[str] = None):
    """One panel per metric: our Delta (mean +- sd over seeds; positive = the module helps) per pair,
    the lecture's Delta as a diamond where it exists (on its own scale: compare signs, not sizes)."""
    metrics = list(dict.fromkeys(table["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 0.5 * max(
        (table["metric"] == m).sum() for m in metrics) + 1.6), squeeze=False)
    for ax, met in zip(axes[0], metrics):
        sub = table[table["metric"] == met]
        y = np.arange(len(sub))
        ax.barh(y, sub["Delta"], xerr=sub["Delta sd"].fillna(0), color=["tab:green" if d > 0 else "tab:red"
                                                                        for d in sub["Delta"]], alpha=0.7)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{a} {m}" for a, m in zip(sub["arch"], sub["model"])], fontsize=8)
        ax.axvline(0, color="k", lw=0.8)
        span = float(np.nanmax(np.abs(sub["Delta"]) + sub["Delta sd"].fillna(0))) * 1.1 or 1.0
        ax.set_xlim(-span, span)  # zero in the middle, like the lecture's axis on top
        ax.set_title(met, fontsize=9)
        ax.set_xlabel("Delta (ours; + = module helps)")
        pap = sub["paper Delta"].astype(float)
        if pap.notna().any():
            ax2 = ax.twiny()
            ax2.plot(pap, y, "D", color="k", ms=5, label="lecture Delta (top axis)")
            lim = np.nanmax(np.abs(pap)) * 1.1 or 1
            ax2.set_xlim(-lim, lim)
            ax2.legend(loc="lower right", fontsize=7)
        ax.invert_yaxis()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
