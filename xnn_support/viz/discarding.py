"""04: information discarding: figures for notebook 04 (part of :mod:`xnn_support.viz`; returns figures, never shows them)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple  # noqa: F401

import matplotlib  # noqa: F401
import matplotlib.pyplot as plt  # noqa: F401
import numpy as np  # noqa: F401
import torch  # noqa: F401

from ._base import PART_COLORS, _detached, _grid, _np_img  # noqa: F401

def entropy_grid(images, maps, *, fg_mask=None, n: int = 6, vmin=None, vmax=None, cmap: str = "magma",
                 titles=None, label: str = "entropy (nats / dim)", title=None):
    """Pixel-wise entropy maps per layer in a grid: one row per image (the image first, with the
    foreground outline when ``fg_mask`` (B, H, W) is given), one column per layer. ``maps``:
    ``{layer: (B, g, g) or (B, H, W)}``; one colour scale for the whole figure (bright = discarded)."""

    names = list(maps)
    n = min(n, images.shape[0])
    vals = np.concatenate([np.asarray(maps[k][:n], float).ravel() for k in names])
    vals = vals[np.isfinite(vals)]
    lo = float(np.percentile(vals, 1)) if vmin is None else vmin
    hi = float(np.percentile(vals, 99)) if vmax is None else vmax
    fig, axes = plt.subplots(n, len(names) + 1, figsize=(1.55 * (len(names) + 1) + 0.6, 1.55 * n + 0.4),
                             squeeze=False)
    im = None
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(images[i].detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
        if fg_mask is not None:
            ax.contour(np.asarray(fg_mask[i], float), levels=[0.5], colors="w", linewidths=0.7)
        for j, k in enumerate(names):
            im = axes[i, j + 1].imshow(np.asarray(maps[k][i], float), cmap=cmap, vmin=lo, vmax=hi,
                                       extent=(0, 1, 1, 0))
            if i == 0:
                axes[i, j + 1].set_title((titles or names)[j], fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.subplots_adjust(right=0.88, wspace=0.05, hspace=0.05)
    cax = fig.add_axes([0.9, 0.15, 0.02, 0.7])
    fig.colorbar(im, cax=cax).set_label(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def layer_curves(curves, *, ylabel: str = "mean entropy (nats / dim)", xlabel: str = "relative depth",
                 title=None, ax=None, relative: bool = True, markers: bool = True):
    """Layer-wise curves: ``curves = {label: (layer_names, mean, sd or None)}``; x is the relative
    depth (i / (L - 1)) so networks of different depths share an axis, or the layer index."""

    fig, ax = (plt.subplots(figsize=(5.2, 3.3)) if ax is None else (ax.figure, ax))
    for label, (names, mean, sd) in curves.items():
        L = len(names)
        x = np.linspace(0, 1, L) if (relative and L > 1) else np.arange(L)
        mean = np.asarray(mean, float)
        line, = ax.plot(x, mean, marker="o" if markers else None, ms=3.5, label=label)
        if sd is not None:
            sd = np.asarray(sd, float)
            ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.18, lw=0)
    if not relative and curves:
        names = next(iter(curves.values()))[0]
        ax.set_xticks(np.arange(len(names)), names, rotation=25, ha="right", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def fg_bg_curves(layers, fg, bg, *, fg_sd=None, bg_sd=None, gap=None, gap_sd=None, title=None):
    """Foreground vs background entropy per layer (left) and their gap bg - fg (right), mean +- sd."""

    x = np.arange(len(layers))
    fig, axes = plt.subplots(1, 2 if gap is not None else 1, figsize=(9 if gap is not None else 5, 3.2),
                             squeeze=False)
    ax = axes[0, 0]
    for vals, sd, lab, c in ((fg, fg_sd, "foreground", "tab:green"), (bg, bg_sd, "background", "tab:purple")):
        ax.errorbar(x, vals, yerr=sd, marker="o", ms=4, capsize=3, label=lab, color=c)
    ax.set_ylabel("mean entropy (nats / dim)")
    ax.legend(fontsize=8)
    if gap is not None:
        ax2 = axes[0, 1]
        ax2.bar(x, gap, yerr=gap_sd, capsize=3, color="0.55")
        ax2.axhline(0, color="k", lw=0.8)
        ax2.set_ylabel("background - foreground")
    for a in axes.flat:
        a.set_xticks(x, layers, rotation=25, ha="right", fontsize=7)
        a.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def word_heatmap(tokens, values, layer_names, *, keys=None, title=None, cmap: str = "magma",
                 label: str = "sigma", ax=None, vmin=None, vmax=None):
    """Word heat-map of one sentence: rows = layers, columns = words (``values`` (L, n), NaN on
    padding is cut); planted key words (``keys``: indices or a bool mask) are underlined in red."""

    v = np.asarray(values, float)[:, :len(tokens)]
    fig, ax = (plt.subplots(figsize=(0.55 * len(tokens) + 1.8, 0.35 * len(layer_names) + 1.1))
               if ax is None else (ax.figure, ax))
    im = ax.imshow(v, cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xticks(np.arange(len(tokens)), tokens, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(layer_names)), layer_names, fontsize=7)
    if keys is not None:
        k = np.asarray(keys)
        idx = np.nonzero(k)[0] if k.dtype == bool else k
        for j in idx:
            if j < len(tokens):
                ax.get_xticklabels()[j].set_color("tab:red")
                ax.get_xticklabels()[j].set_fontweight("bold")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02).set_label(label, fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def word_heatmaps(rows, *, title=None, cmap: str = "magma", label: str = "log sigma"):
    """Several word heat-maps stacked: ``rows = [(name, tokens, values (L, n), layer_names, keys)]``,
    each row on its own colour scale."""

    width = max(len(r[1]) for r in rows)
    heights = [len(r[3]) + 1.5 for r in rows]
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.55 * width + 2.2, 0.33 * sum(heights) + 0.5),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (name, tokens, values, layer_names, keys) in zip(axes[:, 0], rows):
        word_heatmap(tokens, values, layer_names, keys=keys, title=name, cmap=cmap, label=label, ax=ax)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def sigma_trajectories(history, *, target=None, readout_steps=None, labels=None, title=None):
    """Optimisation traces of the sigma engine: normalised feature change F_t (left) and mean
    entropy H_t (right), one line per layer (mean over inputs); ``target`` marks the read-out
    level, ``readout_steps`` (per layer) the read-out step."""

    F = np.asarray(history["F"], float).mean(-1)
    H = np.asarray(history["H"], float).mean(-1)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    for l in range(F.shape[1]):
        lab = labels[l] if labels else f"layer {l}"
        line, = axes[0].plot(F[:, l], lw=1, label=lab)
        axes[1].plot(H[:, l], lw=1, color=line.get_color())
        if readout_steps is not None:
            axes[1].axvline(readout_steps[l], color=line.get_color(), lw=0.6, ls=":")
    if target is not None:
        axes[0].axhline(target, color="k", lw=0.8, ls="--")
    axes[0].set_ylabel("F (normalised feature change)")
    axes[1].set_ylabel("mean entropy H (nats / dim)")
    for a in axes:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def real_gap_curves(summaries, *, title=None, ylabel: str = "background − foreground (nats)"):
    """Gap vs depth, pretrained vs random init, one panel per data set. ``summaries``: ``{name:
    real_summary dict}`` (:func:`xnn_support.papers.discarding.real.real_summary`): the trained net's
    mean ± sd over images, the random inits' mean ± sd over inits, each init as a thin line."""

    fig, axes = plt.subplots(1, len(summaries), figsize=(4.6 * len(summaries), 3.3), squeeze=False, sharey=True)
    for ax, (name, s) in zip(axes[0], summaries.items()):
        t, per = s["table"], s["random_per_init"]
        x = np.arange(len(s["layers"]))
        for mean, sd, lab, c in ((t["trained_gap"], t["trained_gap_sd"], "ImageNet-pretrained (± sd over images)",
                                  "tab:red"),
                                 (t["random_gap"], t["random_gap_sd"], f"random init (± sd over {per.shape[1]} inits)",
                                  "tab:blue")):
            mean, sd = np.asarray(mean, float), np.nan_to_num(np.asarray(sd, float))
            ax.plot(x, mean, marker="o", ms=4, color=c, label=lab)
            ax.fill_between(x, mean - sd, mean + sd, color=c, alpha=0.15, lw=0)
        for k in per.columns:
            ax.plot(x, np.asarray(per[k], float), color="tab:blue", lw=0.7, ls=":", alpha=0.8)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(x, s["layers"], rotation=25, ha="right", fontsize=7)
        ax.set_title(f"{name} ({s['n_images']} images)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
