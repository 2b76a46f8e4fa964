"""01: explanatory graph: figures for notebook 01 (part of :mod:`xnn_support.viz`; returns figures, never shows them)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple  # noqa: F401

import matplotlib  # noqa: F401
import matplotlib.pyplot as plt  # noqa: F401
import numpy as np  # noqa: F401
import torch  # noqa: F401

from ._base import PART_COLORS, _detached, _grid, _np_img  # noqa: F401



@_detached
def graph_by_layer(graph, parts=None, part_names=(), *, max_nodes: int = 60, scores=None, title=None):
    """The explanatory graph drawn by layer (bottom left, top right): each node at its mean
    (row, col) inside its layer's panel, coloured by its majority part (``parts``: {layer: (M,)},
    -1 = background), edges from the ``max_nodes`` strongest nodes (``scores``: {layer: (M,)}) to
    their parents."""

    names = list(graph.layers)
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(4 * len(names), 4.2))
    xy, keep = {}, {}
    for li, name in enumerate(names):
        L = graph.layers[name]
        c = L.coord.reshape(-1, 2).cpu()
        x = li * 1.3 + (c[:, 1] + 0.5) / L.W
        y = 1 - (c[:, 0] + 0.5) / L.H
        xy[name] = (x, y)
        s = scores[name] if scores is not None else _graph_ones(len(x))
        keep[name] = s.argsort(descending=True)[:max_nodes]
        ax.add_patch(plt.Rectangle((li * 1.3, 0), 1, 1, fill=False, lw=0.8, color="0.6"))
        ax.text(li * 1.3 + 0.5, 1.04, f"{name}\n{L.C} filters x {L.P} nodes", ha="center", fontsize=8)
        cols = ["0.75"] * len(x) if parts is None else [cmap(int(p) % 10) if p >= 0 else "0.75"
                                                        for p in parts[name].tolist()]
        ax.scatter(x, y, s=3, c=cols, alpha=0.25)
        k = keep[name]
        ax.scatter(x[k], y[k], s=14, c=[cols[i] for i in k.tolist()], edgecolor="k", lw=0.3, zorder=3)
    for li, name in enumerate(names[:-1]):
        L, up = graph.layers[name], names[li + 1]
        if L.parents is None:
            continue
        for i in keep[name].tolist():
            for j in L.parents[i].tolist():
                ax.plot([xy[name][0][i], xy[up][0][j]], [xy[name][1][i], xy[up][1][j]], lw=0.3, color="0.4",
                        alpha=0.5)
    if parts is not None:
        for pi, pn in enumerate(part_names):
            ax.scatter([], [], color=cmap(pi % 10), label=pn)
        ax.scatter([], [], color="0.75", label="background")
        ax.legend(fontsize=7, loc="lower center", ncol=len(part_names) + 1, bbox_to_anchor=(0.5, -0.14))
    ax.set_xlim(-0.05, len(names) * 1.3 - 0.25)
    ax.set_ylim(-0.02, 1.15)
    ax.axis("off")
    ax.set_title(title or "explanatory graph: node positions by layer, edges to parents")
    return fig


def _graph_ones(n):

    return torch.ones(n)


@_detached
def graph_patch_gallery(rows, labels, *, title=None):
    """Image patches per node (like the lecture's Figure 8): ``rows`` a list of (k, 3, s, s)
    tensors (one row per node), ``labels`` a row title each."""

    k = max(r.shape[0] for r in rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(1.1 * k + 1.5, 1.15 * len(rows)), squeeze=False)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        for j in range(k):
            ax = axes[i, j]
            ax.axis("off")
            if j < r.shape[0]:
                ax.imshow(r[j].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[i, 0].text(-0.1, 0.5, lab, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=7)
    fig.suptitle(title or "top image patches per node", fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def graph_localisation(images, gt, preds, *, n: int = 6, title=None):
    """Few-shot localisation examples: ground truth (white circle) and each method's prediction
    (``preds``: {method: (N, 2) pixels}) on the first ``n`` images."""

    marks = ["x", "+", "^", "s"]
    cols = ["tab:red", "tab:blue", "tab:orange", "tab:green"]
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.2), squeeze=False)
    for i in range(n):
        ax = axes[0, i]
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.scatter([gt[i, 1]], [gt[i, 0]], s=60, facecolor="none", edgecolor="w", lw=1.5, label="truth")
        for (name, p), mk, c in zip(preds.items(), marks, cols):
            ax.scatter([p[i, 1]], [p[i, 0]], marker=mk, s=40, color=c, label=name)
        ax.axis("off")
    axes[0, 0].legend(fontsize=6, loc="upper left", bbox_to_anchor=(0, -0.02), ncol=len(preds) + 1)
    fig.suptitle(title or "few-shot part localisation", fontsize=9)
    return fig


@_detached
def graph_bars(groups, *, errors=None, ylabel="", title=None, lecture=None):
    """Grouped bars: ``groups`` {group: {method: value}}, optional ``errors`` of the same shape
    (sd over seeds) and ``lecture`` {group: {method: value}} drawn hatched beside ours."""

    gnames = list(groups)
    methods = list(dict.fromkeys(m for g in groups.values() for m in g))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(gnames) * max(1, len(methods)) / 2, 3.2))
    wd = 0.8 / len(methods)
    for j, m in enumerate(methods):
        x = np.arange(len(gnames)) + j * wd
        v = [groups[g].get(m, np.nan) for g in gnames]
        e = [errors[g].get(m, 0) for g in gnames] if errors else None
        ax.bar(x, v, wd, yerr=e, capsize=2, label=m)
    if lecture:
        for gi, g in enumerate(gnames):
            for j, m in enumerate(methods):
                if m in lecture.get(g, {}):
                    ax.scatter([gi + j * wd], [lecture[g][m]], marker="*", s=60, color="k", zorder=4)
        ax.scatter([], [], marker="*", color="k", label="lecture (VGG-16 / CUB)")
    ax.set_xticks(np.arange(len(gnames)) + 0.4 - wd / 2)
    ax.set_xticklabels(gnames, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title or "", fontsize=9)
    fig.tight_layout()
    return fig
