"""Figures of notebook 10 (evaluating attribution maps): maps before / after each transform, the verdict matrix
beside the prediction, the layer comparison in nats, the across-nets comparison. Plotting only."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ._base import _detached, _np_img

__all__ = ["maps_before_after", "verdict_heatmap", "layer_nats", "pair_bars"]

_SHORT = {"exact": "=", "up to normalisation": "n", "rank-only": "r", "approx": "~", "fails": "x"}


@_detached
def maps_before_after(maps: Dict[str, Dict[str, torch.Tensor]], methods: Sequence[str], *, image: int = 0,
                      images: Optional[torch.Tensor] = None, title: Optional[str] = None):
    """Rows = methods, columns = original + each transform; each row shares the original map's colour scale (so a
    rescaled map shows as brighter / darker, a shifted one as a uniform change)."""
    cols = list(maps)
    extra = images is not None
    fig, axes = plt.subplots(len(methods), len(cols) + extra, figsize=(1.35 * (len(cols) + extra), 1.35 * len(methods)),
                             squeeze=False)
    for r, m in enumerate(methods):
        ref = maps["original"][m][image].detach().float().cpu().numpy()
        lo, hi = float(ref.min()), float(ref.max())
        if extra:
            axes[r, 0].imshow(_np_img(images[image]))
        for c, k in enumerate(cols):
            ax = axes[r, c + extra]
            ax.imshow(maps[k][m][image].detach().float().cpu().numpy(), cmap="magma_r" if m.startswith("sigma")
                      else "magma", vmin=lo, vmax=hi if hi > lo else lo + 1e-12)
            if r == 0:
                ax.set_title(k, fontsize=8)
        axes[r, 0].set_ylabel(m.replace("_", " "), fontsize=7, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or "maps before and after each function-preserving transform (row: original's colour scale)",
                 fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def verdict_heatmap(summary: pd.DataFrame, *, title: Optional[str] = None):
    """Method x transform: the measured verdict (majority over seeds) as a symbol, green where it agrees with the
    spec's prediction (shown after a slash where it does not), red otherwise."""
    methods = list(dict.fromkeys(summary["method"]))
    trans = list(dict.fromkeys(summary["transform"]))
    fig, ax = plt.subplots(figsize=(0.75 * len(trans) + 2.5, 0.36 * len(methods) + 1.2))
    agree = np.full((len(methods), len(trans)), np.nan)
    for _, row in summary.iterrows():
        i, j = methods.index(row["method"]), trans.index(row["transform"])
        agree[i, j] = float(row["agrees"])
        txt = _SHORT.get(row["majority"], "?") + ("" if row["agrees"] else f" /{row['predicted']}")
        ax.text(j, i, txt, ha="center", va="center", fontsize=8)
    ax.imshow(agree, cmap="RdYlGn", vmin=-0.3, vmax=1.3, aspect="auto")
    ax.set_xticks(range(len(trans)), trans)
    ax.set_yticks(range(len(methods)), [m.replace("_", " ") for m in methods], fontsize=8)
    ax.set_title(title or "measured verdict (= exact, n normalised, r rank, ~ approx, x fails) / predicted", fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def layer_nats(table: pd.DataFrame, *, calibration: float, init: float, title: Optional[str] = None):
    """Left: ICML22 entropy per layer in nats (fg, bg, zero-influence cells) for the original and the E-layer net,
    with the calibration value (sigma cap) and the initial entropy. Right: Grad-CAM's mean |map| per layer (its own
    units, log scale) -- no common unit."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    for net, ls in (("original", "-"), ("erased", "--")):
        t = table[table.net == net]
        a.plot(t.depth, t.H_fg, ls, marker="o", color="C0", label=f"{net}: foreground")
        a.plot(t.depth, t.H_bg, ls, marker="o", color="C1", label=f"{net}: background")
        if net == "erased":
            a.plot(t.depth, t.H_zero, ls, marker="s", color="C3", label="erased net: zero-influence cells")
        b.plot(t.depth, t.cam_fg, ls, marker="o", color="C0", label=f"{net}: foreground")
        b.plot(t.depth, t.cam_bg, ls, marker="o", color="C1", label=f"{net}: background")
    a.axhline(calibration, color="k", lw=0.8, ls=":", label=f"calibration (sigma cap) {calibration:.3f}")
    a.axhline(init, color="grey", lw=0.8, ls=":", label=f"initial {init:.3f}")
    layers = list(dict.fromkeys(table.layer))
    for ax in (a, b):
        ax.set_xticks(range(len(layers)), layers, fontsize=7)
    a.set_ylabel("entropy per input dim (nats)")
    b.set_ylabel("mean |Grad-CAM| (layer's own units)")
    b.set_yscale("log")
    a.legend(fontsize=6)
    b.legend(fontsize=6)
    fig.suptitle(title or "across layers: one unit (nats) for the entropy, none for Grad-CAM", fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def pair_bars(df: pd.DataFrame, *, title: Optional[str] = None):
    """Across nets: the B-vs-A comparison per method before and after B's logits are multiplied by tau."""
    fig, ax = plt.subplots(figsize=(7, 3))
    x = np.arange(len(df))
    ax.bar(x - 0.2, df.before, 0.4, label="before")
    ax.bar(x + 0.2, df.after, 0.4, label="after R10 on B")
    ax.set_xticks(x, [f"{m}\n{c}" for m, c in zip(df.method, df.comparison)], fontsize=7)
    ax.legend(fontsize=7)
    ax.set_title(title or "net B vs net A: ratio of magnitudes (Captum) / entropy difference (sigma)", fontsize=9)
    fig.tight_layout()
    return fig
