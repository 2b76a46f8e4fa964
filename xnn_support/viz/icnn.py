"""02: interpretable CNN: figures for notebook 02 (part of :mod:`xnn_support.viz`; returns figures, never shows them)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple  # noqa: F401

import matplotlib  # noqa: F401
import matplotlib.pyplot as plt  # noqa: F401
import numpy as np  # noqa: F401
import torch  # noqa: F401

from ._base import PART_COLORS, _detached, _grid, _np_img  # noqa: F401
import torch.nn.functional as F
from matplotlib.patches import Rectangle
from ..papers.icnn.method import positive_templates



@_detached
def icnn_filter_panels(images, maps, filters: Sequence[int], *, k: int = 5, scores=None, landmarks=None,
                       title: Optional[str] = None, cmap: str = "magma"):
    """The lecture's per-filter panels: one row per filter, its top-``k`` images (by ``scores``
    (F, N), default the map max) with the filter's up-sampled map overlaid; landmarks as dots."""

    maps = maps.detach().float().cpu()
    sc = maps.flatten(2).amax(2).t() if scores is None else torch.as_tensor(scores)
    S = images.shape[-1]
    fig, axes = plt.subplots(len(filters), k, figsize=(1.6 * k, 1.6 * len(filters)), squeeze=False)
    for r, f in enumerate(filters):
        top = torch.argsort(sc[f], descending=True)[:k].tolist()
        up = F.interpolate(maps[top, f:f + 1], size=(S, S), mode="bilinear", align_corners=False)[:, 0]
        vmax = float(up.max()) or 1.0
        for c, i in enumerate(top):
            ax = axes[r, c]
            ax.imshow(_np_img(images[i]))
            ax.imshow(up[c].numpy(), cmap=cmap, alpha=0.55, vmin=0, vmax=vmax)
            if landmarks is not None:
                lm = np.asarray(landmarks[i])
                ax.scatter(lm[:, 1], lm[:, 0], s=8, c="cyan", edgecolors="k", linewidths=0.3)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"filter {f}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@_detached
def icnn_top_images(images, positions, scores, f: int, *, k: int = 8, rf: float = 16.0, landmarks=None,
                    landmark_names=None, title: Optional[str] = None):
    """Filter ``f``'s top-``k`` images with a receptive-field box (side ``rf`` px) centred on its
    peak (``positions`` (F, N, 2) px, ``scores`` (F, N)) and the ground-truth landmarks."""

    sc = torch.as_tensor(scores)[f]
    top = torch.argsort(sc, descending=True)[:k].tolist()
    fig, axes = _grid(len(top), min(k, 8), 1.7)
    for ax, i in zip(axes, top):
        ax.imshow(_np_img(images[i]))
        r, c = (float(v) for v in positions[f, i])
        ax.add_patch(Rectangle((c - rf / 2, r - rf / 2), rf, rf, fill=False, ec="yellow", lw=1.5))
        ax.plot([c], [r], "y+", ms=8)
        if landmarks is not None:
            lm = np.asarray(landmarks[i])
            ok = ~np.isnan(lm).any(1)
            ax.scatter(lm[ok, 1], lm[ok, 0], s=10, c="cyan", edgecolors="k", linewidths=0.3)
        ax.set_title(f"#{i} {float(sc[i]):.2f}", fontsize=7)
    fig.suptitle(title or f"filter {f}: top images, receptive-field box at the peak, landmarks (cyan)",
                 fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def icnn_summary_bars(table, metric: str = "instability", *, paper: Optional[Dict[str, float]] = None,
                      title: Optional[str] = None):
    """Grouped bars (mean +- sd over seeds) of ``metric`` per setting, one bar per mode, from
    :func:`xnn_support.icnn_experiments.summarise`; ``paper``: {label: value} drawn as dashed lines."""
    modes = list(dict.fromkeys(table.index.get_level_values("mode")))
    settings = list(dict.fromkeys(tuple(ix[:3]) for ix in table.index))
    x = np.arange(len(settings))
    w = 0.8 / max(1, len(modes))
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(settings) + 2), 3.4))
    for j, m in enumerate(modes):
        mean = [table.loc[s + (m,), (metric, "mean")] if s + (m,) in table.index else np.nan for s in settings]
        sd = [table.loc[s + (m,), (metric, "std")] if s + (m,) in table.index else np.nan for s in settings]
        ax.bar(x + (j - (len(modes) - 1) / 2) * w, mean, w, yerr=np.nan_to_num(sd), capsize=2, label=m)
    for name, v in (paper or {}).items():
        ax.axhline(v, ls="--", lw=1, color="0.4")
        ax.text(len(settings) - 0.5, v, name, fontsize=7, va="bottom", ha="right", color="0.3")
    ax.set_xticks(x, ["\n".join(s) for s in settings], fontsize=7)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or f"{metric}: mean +- sd over seeds", fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def icnn_sweep_bars(table, metric: str = "instability", *, reference: Optional[Dict[str, float]] = None,
                    title: Optional[str] = None):
    """Horizontal bars (mean +- sd over seeds) of ``metric`` per sweep variant, from
    :func:`xnn_support.icnn_experiments.summarise` of sweep rows; ``reference``: {label: value}
    drawn as vertical lines (e.g. the main grid's ordinary and code nets); accuracy is printed
    beside each bar when the table has it."""
    names = list(table.index)
    mean = table[(metric, "mean")].to_numpy(float)
    sd = np.nan_to_num(table[(metric, "std")].to_numpy(float))
    y = np.arange(len(names))[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(names) + 1.4))
    colors = ["0.6" if str(n).startswith("ordinary") else "C1" for n in names]
    ax.barh(y, mean, xerr=sd, color=colors, capsize=2)
    if ("acc", "mean") in table.columns:
        for yi, m, s_, a in zip(y, mean, sd, table[("acc", "mean")].to_numpy(float)):
            ax.text(m + s_, yi, f"  acc {a:.2f}", va="center", fontsize=7, color="0.3")
    for j, (lab, v) in enumerate((reference or {}).items()):
        ax.axvline(v, ls="--", lw=1, color=f"C{j + 2}", label=f"{lab}: {v:.3f}")
    if reference:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_yticks(y, [str(n) for n in names], fontsize=7)
    ax.set_xlabel(f"{metric} (mean +- sd over seeds)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"{metric} per variant (grey: ordinary nets)", fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def icnn_templates(n: int = 14, positions: Sequence[Tuple[int, int]] = ((3, 3), (7, 10)), beta: float = 4.0):
    """A few positive templates T_mu and the negative template (paper's tau = 0.5 / n^2)."""

    T = positive_templates(n, beta=beta)
    tau = 0.5 / n ** 2
    fig, axes = plt.subplots(1, len(positions) + 1, figsize=(2.3 * (len(positions) + 1), 2.4))
    for ax, (r, c) in zip(axes, positions):
        ax.imshow(T[r, c].numpy(), cmap="RdBu_r", vmin=-tau, vmax=tau)
        ax.set_title(f"T_mu, mu=({r},{c})", fontsize=8)
        ax.axis("off")
    axes[-1].imshow(np.full((n, n), -tau), cmap="RdBu_r", vmin=-tau, vmax=tau)
    axes[-1].set_title("T^- (no part)", fontsize=8)
    axes[-1].axis("off")
    fig.tight_layout()
    return fig
