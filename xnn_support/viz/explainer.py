"""08: figures of notebook 08 (explainer networks); every function returns a matplotlib Figure (the interactive
browser is :func:`xnn_support.widgets.explainer_filter_browser`)."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ._base import _detached, _np_img

__all__ = ["explainer_tracks", "explainer_filter", "explainer_p", "explainer_planted", "explainer_filters",
           "explainer_lambda_curve"]


def _top_filters(z: torch.Tensor, k: int) -> list:
    return [int(i) for i in z.flatten(2).amax(2).mean(0).argsort(descending=True)[:k]]


def _overlay(ax, img, m, size):
    ax.imshow(_np_img(img))
    up = F.interpolate(m[None, None].float(), size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    ax.imshow(up.numpy(), cmap="magma", alpha=0.6, vmin=0, vmax=max(float(up.max()), 1e-6))
    ax.set_xticks([])
    ax.set_yticks([])


@_detached
def explainer_tracks(net, images: torch.Tensor, *, k: int = 4, title: Optional[str] = None):
    """Rows: images; columns: the image, then the ``k`` most active interpretable filters (z_int) and the ``k``
    most active ordinary filters (z_ord), the same filters on every row, maps over the image."""
    enc = net.encode(images)
    fi, fo = _top_filters(enc.z_int, k), _top_filters(enc.z_ord, k)
    n, S = images.shape[0], images.shape[-1]
    fig, axes = plt.subplots(n, 1 + 2 * k, figsize=(1.5 * (1 + 2 * k), 1.5 * n + 0.6), squeeze=False)
    for r in range(n):
        axes[r, 0].imshow(_np_img(images[r]))
        axes[r, 0].axis("off")
        for c, f in enumerate(fi):
            _overlay(axes[r, 1 + c], images[r], enc.z_int[r, f], S)
            if r == 0:
                axes[r, 1 + c].set_title(f"int {f}", fontsize=8, color="tab:green")
        for c, f in enumerate(fo):
            _overlay(axes[r, 1 + k + c], images[r], enc.z_ord[r, f], S)
            if r == 0:
                axes[r, 1 + k + c].set_title(f"ord {f}", fontsize=8, color="tab:gray")
    p = net.p
    ptxt = f"{p:.2f}" if isinstance(p, float) else f"{float(torch.as_tensor(p).mean()):.2f} (mean)"
    fig.suptitle(title or f"interpretable track (green) vs ordinary track (grey); p = {ptxt}", fontsize=10)
    fig.tight_layout()
    return fig


@_detached
def explainer_filter(net, images: torch.Tensor, filter: int, *, track: str = "int", k: int = 8):
    """One filter's maps on its ``k`` top images (of ``images``), over the image."""
    enc = net.encode(images)
    z = enc.z_int if track == "int" else enc.z_ord
    top = z[:, filter].flatten(1).amax(1).argsort(descending=True)[:k].tolist()
    fig, axes = plt.subplots(1, len(top), figsize=(1.6 * len(top), 1.9), squeeze=False)
    for ax, i in zip(axes[0], top):
        _overlay(ax, images[i], z[i, filter], images.shape[-1])
        ax.set_title(f"#{i}", fontsize=8)
    fig.suptitle(f"{'interpretable' if track == 'int' else 'ordinary'} filter {filter}: top {len(top)} images",
                 fontsize=10)
    fig.tight_layout()
    return fig


@_detached
def explainer_p(df: pd.DataFrame, by: str = "mode", *, title: Optional[str] = None):
    """Bars of p (mean, sd over seeds, dots: seeds) per value of ``by``, with the held-out reconstruction error."""
    groups = list(dict.fromkeys(df[by]))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, col, lab in ((axes[0], "p", "p (share of the interpretable track)"),
                         (axes[1], "recon_error", "reconstruction error / Var")):
        for i, gname in enumerate(groups):
            v = df[df[by] == gname][col].to_numpy(float)
            ax.bar(i, v.mean(), yerr=v.std(ddof=1) if len(v) > 1 else 0, color="tab:green", alpha=0.6, capsize=3)
            ax.plot(np.full(len(v), i), v, "k.", ms=5)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([str(g) for g in groups], fontsize=8)
        ax.set_ylabel(lab, fontsize=9)
    axes[0].set_ylim(0, 1)
    fig.suptitle(title or f"p and reconstruction error per {by}", fontsize=10)
    fig.tight_layout()
    return fig


@_detached
def explainer_planted(df: pd.DataFrame, *, title: Optional[str] = None):
    """Planted part share a: p per seed (left), and the share of planted part / texture variance explained by
    each track (right, mean over seeds)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for s, g in df.groupby("seed"):
        axes[0].plot(g.a, g.p, "o-", label=f"seed {s}")
    axes[0].set_xlabel("planted part share a")
    axes[0].set_ylabel("p")
    axes[0].legend(fontsize=8)
    m = df.groupby("a")[["int_P", "ord_P", "int_T", "ord_T"]].mean()
    for col, st in (("int_P", "g-o"), ("ord_P", "g--s"), ("int_T", "m-o"), ("ord_T", "m--s")):
        axes[1].plot(m.index, m[col], st, label=col.replace("_", " track, ") + " variance")
    axes[1].set_xlabel("planted part share a")
    axes[1].set_ylabel("explained share")
    axes[1].legend(fontsize=7)
    fig.suptitle(title or "planted truth: p against the part share of the target", fontsize=10)
    fig.tight_layout()
    return fig


@_detached
def explainer_filters(df: pd.DataFrame, *, cols: Sequence[str] = ("instability", "part_iou"),
                      title: Optional[str] = None):
    """Bars per filter set (explainer tracks, performer layers): mean and sd over seeds of ``cols``."""
    groups = list(dict.fromkeys(df.filters_of))
    fig, axes = plt.subplots(1, len(cols), figsize=(4.5 * len(cols), 3.2), squeeze=False)
    colors = ["tab:green", "tab:gray", "tab:blue", "tab:purple"]
    for ax, col in zip(axes[0], cols):
        for i, gname in enumerate(groups):
            v = df[df.filters_of == gname][col].to_numpy(float)
            ax.bar(i, np.nanmean(v), yerr=np.nanstd(v, ddof=1) if len(v) > 1 else 0,
                   color=colors[i % len(colors)], alpha=0.7, capsize=3)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, rotation=25, ha="right", fontsize=8)
        ax.set_title(col.replace("_", " ") + (" (lower: more stable)" if col == "instability" else ""), fontsize=9)
    fig.suptitle(title or "interpretability of the explainer's filters vs the performer's", fontsize=10)
    fig.tight_layout()
    return fig


@_detached
def explainer_lambda_curve(df: pd.DataFrame, *, title: Optional[str] = None):
    """p (left) and held-out reconstruction error (right) against the prior's weight lambda_p, one line per
    planted part share a (spec 2.3: p is read only beside this curve)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for a, g in df.groupby("a"):
        g = g.groupby("lambda_p")[["p", "recon_error"]].mean()
        axes[0].plot(g.index, g.p, "o-", label=f"a = {a:g}")
        axes[1].plot(g.index, g.recon_error, "o-", label=f"a = {a:g}")
    for ax, lab in ((axes[0], "p"), (axes[1], "reconstruction error / Var")):
        ax.set_xscale("log")
        ax.set_xlabel("lambda_p")
        ax.set_ylabel(lab)
        ax.legend(fontsize=8)
    fig.suptitle(title or "p and reconstruction error against the prior's weight", fontsize=10)
    fig.tight_layout()
    return fig
