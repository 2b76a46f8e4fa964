"""07: figures of notebook 07 (Interpreting CNNs via decision trees); every function returns a matplotlib Figure
(the interactive walker is :func:`xnn_support.widgets.tree_walker`)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._base import PART_COLORS, _detached, _np_img
from ..papers.decision_trees.metrics import node_parts, part_contributions

__all__ = ["tree_levels", "tree_explanations", "tree_depth_curves", "tree_mode_shares"]


def _layout(tree, max_depth: int) -> Dict[int, float]:
    """x position of every node down to ``max_depth``: leaves of the drawn subtree evenly spaced, parents at
    the mean of their children."""
    depth = tree.depth
    pos: Dict[int, float] = {}
    counter = [0]

    def place(v: int) -> float:
        kids = [c for c in tree.children[v]] if depth[v] < max_depth else []
        if not kids:
            pos[v] = float(counter[0])
            counter[0] += 1
        else:
            pos[v] = float(np.mean([place(c) for c in kids]))
        return pos[v]

    place(tree.root)
    return pos


@_detached
def tree_levels(tree, x, A, part_names: Sequence[str], *, max_depth: int = 4, max_nodes: int = 40,
                title: Optional[str] = None):
    """The top levels of a decision tree: one row per depth (1 = root), a disc per node sized by its number of
    training images and coloured by its top part (the part with the largest mean share of ``A^T (w o x)``
    over the node's images), labelled with that part and share. Levels with more than ``max_nodes`` nodes show
    their ``max_nodes`` largest nodes only (and say so)."""
    pos = _layout(tree, max_depth)
    depth = tree.depth
    shown = [v for v in pos if depth[v] <= max_depth]
    by_level = {d: sorted((v for v in shown if depth[v] == d), key=lambda v: -len(tree.members[v]))
                for d in range(1, max_depth + 1)}
    keep = set(v for d, vs in by_level.items() for v in vs[:max_nodes])
    shares = dict(zip(shown, node_parts(tree, x, A, shown)))
    width = max(6.0, min(16.0, 0.35 * (max(pos.values()) + 1)))
    fig, ax = plt.subplots(figsize=(width, 1.3 * max_depth + 0.8))
    n_all = tree.n_leaves
    for v in keep:
        for c in tree.children[v]:
            if c in keep:
                ax.plot([pos[v], pos[c]], [-depth[v], -depth[c]], color="0.75", lw=0.8, zorder=1)
    for v in keep:
        sh = np.abs(shares[v])
        k = int(np.argmax(sh))
        ax.scatter(pos[v], -depth[v], s=40 + 900 * len(tree.members[v]) / n_all, color=PART_COLORS[k % 10],
                   edgecolors="k", linewidths=0.5, zorder=2)
        if len(tree.members[v]) >= 0.03 * n_all or depth[v] <= 2:
            ax.annotate(f"{part_names[k]} {sh[k] / max(sh.sum(), 1e-300):.0%}\nn={len(tree.members[v])}",
                        (pos[v], -depth[v]), textcoords="offset points", xytext=(0, -16), ha="center", va="top",
                        fontsize=6)
    for d, vs in by_level.items():
        more = f" (largest {max_nodes} of {len(vs)})" if len(vs) > max_nodes else f" ({len(vs)} nodes)"
        ax.text(-0.5, -d, f"depth {d}{more}", ha="right", va="center", fontsize=7)
    ax.set_xlim(-0.5 - 0.25 * (max(pos.values()) + 1), max(pos.values()) + 0.5)
    ax.set_ylim(-max_depth - 0.8, -0.4)
    ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=PART_COLORS[i % 10], label=n)
               for i, n in enumerate(part_names)]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="top part",
              title_fontsize=7)
    ax.set_title(title or "decision tree: node size = images, colour = top part", fontsize=10)
    fig.tight_layout()
    return fig


@_detached
def tree_explanations(images, contribs: Dict[str, np.ndarray], part_names: Sequence[str], *,
                      y=None, y_hat: Optional[Dict[str, np.ndarray]] = None, title: Optional[str] = None):
    """The paper's per-image figure: each row an image and its part contributions at several depths
    (``contribs``: depth label -> (n, K)), one bar group per part; ``y`` and ``y_hat`` (label -> (n,)) printed."""
    n = len(images)
    labels = list(contribs)
    fig, axes = plt.subplots(n, 2, figsize=(8.0, 1.9 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 3]})
    K, wdt = len(part_names), 0.8 / max(len(labels), 1)
    for i in range(n):
        axes[i, 0].imshow(_np_img(images[i]))
        axes[i, 0].axis("off")
        if y is not None:
            axes[i, 0].set_title(f"y = {float(y[i]):.2f}", fontsize=8)
        ax = axes[i, 1]
        for j, lab in enumerate(labels):
            txt = lab if y_hat is None else f"{lab} (y_hat {float(y_hat[lab][i]):.2f})"
            ax.bar(np.arange(K) + (j - (len(labels) - 1) / 2) * wdt, contribs[lab][i], wdt, label=txt,
                   color=plt.cm.viridis(j / max(len(labels) - 1, 1)))
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xticks(np.arange(K), part_names, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(title or "part contributions to the score at three depths", fontsize=10)
    fig.tight_layout()
    return fig


@_detached
def tree_depth_curves(df: pd.DataFrame, metrics: Sequence[str] = ("pred_error", "fitness", "part_error",
                                                                   "accuracy"), *, hue: Sequence[str] = ("net",
                                                                                                         "likelihood"),
                      title: Optional[str] = None):
    """Each metric against the depth (1 = root ... leaf), mean and sd over seeds, one line per ``hue`` group;
    ``accuracy`` panels also draw the CNN's accuracy (dashed)."""
    order = list(dict.fromkeys(df["depth"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.0), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for j, (key, grp) in enumerate(df.groupby(list(hue), sort=False)):
            st = grp.groupby("depth", sort=False)[m].agg(["mean", "std"]).reindex(order)
            ax.errorbar(np.arange(len(order)), st["mean"], yerr=st["std"].fillna(0), marker="o", ms=3, capsize=2,
                        label=" / ".join(map(str, np.atleast_1d(key))), color=PART_COLORS[j % 10])
            if m == "accuracy":
                ax.axhline(grp["cnn_accuracy"].mean(), color=PART_COLORS[j % 10], ls="--", lw=0.8)
        ax.set_xticks(np.arange(len(order)), order, fontsize=8)
        ax.set_xlabel("tree depth (1 = root)", fontsize=8)
        ax.set_title(m, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@_detached
def tree_mode_shares(shares: pd.DataFrame, part_names: Sequence[str], *, title: Optional[str] = None):
    """Fig. 6 analogue: mean share of |part contribution| per part for each planted mode (rows of ``shares``,
    column ``mode``, mean over seeds), one panel per (net, likelihood)."""
    groups = list(shares.groupby(["net", "likelihood"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 2.9), squeeze=False, sharey=True)
    for ax, ((net, lik), grp) in zip(axes[0], groups):
        st = grp.groupby("mode", sort=False)[list(part_names)].mean()
        K, wdt = len(part_names), 0.8 / max(len(st), 1)
        for j, (mode, row) in enumerate(st.iterrows()):
            ax.bar(np.arange(K) + (j - (len(st) - 1) / 2) * wdt, row.values, wdt, label=f"mode {mode}",
                   color=PART_COLORS[(j + 4) % 10])
        ax.set_xticks(np.arange(K), part_names, fontsize=8)
        ax.set_title(f"{net}, {lik}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("share of |part contribution|", fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title or "second-level explanations per planted sub-population", fontsize=10)
    fig.tight_layout()
    return fig
