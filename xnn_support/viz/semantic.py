"""03: semantic quantification: figures for notebook 03 (part of :mod:`xnn_support.viz`; returns figures, never shows them)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple  # noqa: F401

import matplotlib  # noqa: F401
import matplotlib.pyplot as plt  # noqa: F401
import numpy as np  # noqa: F401
import torch  # noqa: F401

from ._base import PART_COLORS, _detached, _grid, _np_img  # noqa: F401

# Figures of notebook 03 (Chen et al., ICCV 2019; lipstick / rosy cheeks, Zhang et al., AAAI 2018).

@_detached
def contribution_bars(explanation, idx, *, images=None, k: int = 6, title=None, unit: str = "score"):
    """Per-image reasons (the lecture's 'attractive' chart): for each face in ``idx``, the image
    (when ``images`` is given) and the ``k`` largest contributions alpha_i * y_i (green > 0,
    red < 0), the bias b, the unexplained residual y - y_hat and the performer's y."""

    idx = list(idx)
    cols = 2 if images is not None else 1
    fig, axes = plt.subplots(len(idx), cols, figsize=(3.2 * cols + 1.8, 2.3 * len(idx)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2.4] if cols == 2 else [1]})
    c, shares = explanation.contributions, explanation.shares()
    for row, i in enumerate(idx):
        if images is not None:
            axes[row, 0].imshow(images[i].detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
            axes[row, 0].axis("off")
        ax = axes[row, -1]
        order = [j for j in np.argsort(-c[i].abs().numpy())[:k]][::-1]
        vals = [float(c[i, j]) for j in order]
        labels = [f"{'not ' if explanation.concepts[i, j] < 0 else ''}{explanation.names[j]} "
                  f"({100 * float(shares[i, j]):.0f}%)" for j in order]
        extra_v, extra_l = [explanation.bias], ["bias b"]
        if explanation.target is not None:
            extra_v.append(float(explanation.residual[i]))
            extra_l.append("unexplained")
        allv, alll = extra_v + vals, extra_l + labels
        colors = ["0.6"] * len(extra_v) + ["tab:green" if v >= 0 else "tab:red" for v in vals]
        ax.barh(range(len(allv)), allv, color=colors)
        ax.set_yticks(range(len(allv)), alll, fontsize=7)
        ax.axvline(0, color="k", lw=0.6)
        head = f"y_hat = {float(explanation.prediction[i]):+.2f}"
        if explanation.target is not None:
            head = f"performer y = {float(explanation.target[i]):+.2f}, " + head
        ax.set_title(head, fontsize=8)
        ax.set_xlabel(f"contribution to the {unit}", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def concept_importance(names, series, *, errors=None, ylabel: str = "share of |contributions|", title=None):
    """Grouped bars per concept, one bar per entry of ``series`` ({label: (C,) values}) with
    optional ``errors`` ({label: (C,) sd}): dataset-level importance, or recovered vs planted weights."""

    names = list(names)
    x = np.arange(len(names))
    w = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(names) + 2), 3.2))
    for k, (label, vals) in enumerate(series.items()):
        err = None if errors is None or label not in errors else np.asarray(errors[label], float)
        ax.bar(x + (k - (len(series) - 1) / 2) * w, np.asarray(vals, float), w, yerr=err, capsize=2, label=label)
    ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def paste_mask_faces(originals, pasted, masked, scores, *, row_titles=None, title=None):
    """The lecture's pasted / masked figure: for each face (row), the face as drawn, with the
    attribute pasted and with it masked, each titled with the scores in ``scores``
    ({model label: (rows, 3) array of (original, pasted, masked)})."""

    n = len(originals)
    fig, axes = plt.subplots(n, 3, figsize=(7.2, 2.6 * n), squeeze=False)
    for r in range(n):
        for c, (img, head) in enumerate(((originals[r], "original"), (pasted[r], "cheeks pasted"),
                                         (masked[r], "cheeks masked"))):
            ax = axes[r, c]
            ax.imshow(img.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
            ax.axis("off")
            lines = [head] + [f"{lab}: {float(np.asarray(s)[r, c]):+.2f}" for lab, s in scores.items()]
            ax.set_title("\n".join(lines), fontsize=7)
        if row_titles:
            axes[r, 0].text(-0.08, 0.5, row_titles[r], transform=axes[r, 0].transAxes, rotation=90,
                            va="center", ha="right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def paste_mask_summary(tables, *, errors=None, lecture=None, title=None):
    """Mean score of each model (panel) for faces without / with the group attribute under
    original / pasted / masked; ``tables`` = {model: {group: (orig, pasted, masked)}}, optional
    ``errors`` of the same shape (sd over seeds) and ``lecture`` = {group: (3 numbers)} drawn as a
    separate panel."""

    panels = dict(tables)
    if lecture:
        panels = dict(panels, **{"lecture (CelebA CNN)": lecture})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.0), squeeze=False)
    conds = ("original", "pasted", "masked")
    for ax, (name, tab) in zip(axes.flat, panels.items()):
        groups = list(tab)
        x = np.arange(len(groups))
        for k, cond in enumerate(conds):
            v = [tab[g][k] for g in groups]
            e = None if errors is None or name not in errors else [errors[name][g][k] for g in groups]
            ax.bar(x + (k - 1) * 0.27, v, 0.27, yerr=e, capsize=2, label=cond,
                   color=("0.55", "tab:pink", "tab:olive")[k])
        ax.set_xticks(x, [g.replace("_", " ") for g in groups], fontsize=8)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(name, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].set_ylabel("score of 'lipstick'", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
