"""05: knowledge consistency: figures for notebook 05 (part of :mod:`xnn_support.viz`; returns figures, never shows them)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple  # noqa: F401

import matplotlib  # noqa: F401
import matplotlib.pyplot as plt  # noqa: F401
import numpy as np  # noqa: F401
import torch  # noqa: F401

from ._base import PART_COLORS, _detached, _grid, _np_img  # noqa: F401
import pandas as pd



@_detached
def consistency_shares(rows, *, title: Optional[str] = None, group: str = "layer", ax=None):
    """Variance shares of each order and of the residual, grouped by ``group`` (a layer, a toy
    case): ``rows`` are dicts (or a DataFrame) with ``share_0 .. share_K`` and ``share_residual``;
    several rows per group (seeds) give mean bars with sd whiskers."""

    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows
    parts = sorted([c for c in df.columns if c.startswith("share_") and c[6:].isdigit()],
                   key=lambda c: int(c[6:])) + ["share_residual"]
    groups = list(dict.fromkeys(df[group]))
    stats = df.groupby(group, sort=False)[parts].agg(["mean", "std"])
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(1.6 + 1.5 * len(groups), 3.4))
    width = 0.8 / len(parts)
    colors = list(matplotlib.colormaps["Blues_r"](np.linspace(0.1, 0.7, len(parts) - 1))) + ["#d62728"]
    for j, p in enumerate(parts):
        m = stats[(p, "mean")].reindex(groups).to_numpy()
        s = np.nan_to_num(stats[(p, "std")].reindex(groups).to_numpy())
        label = "residual x_delta" if p == "share_residual" else f"order {p[6:]}"
        ax.bar(np.arange(len(groups)) + (j - (len(parts) - 1) / 2) * width, m, width, yerr=s,
               color=colors[j], label=label, capsize=2, edgecolor="k", linewidth=0.4)
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_ylabel("Var(part) / Var(x_B)")
    ax.axhline(1.0, color="0.6", lw=0.6, ls=":")
    ax.legend(fontsize=7, ncol=len(parts), loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def _kc_energy(t):
    """Per-position centred energy over channels, (N, C, H, W) -> (N, H, W) numpy."""
    t = t.detach().cpu().double()
    return ((t - t.mean(dim=(0, 2, 3), keepdim=True)) ** 2).sum(1).numpy()


def _kc_heat(ax, img, emap, vmax, fg=None, cmap="magma"):
    """An RMS map (H, W) stretched over the image frame, with the object outline if given."""
    S = img.shape[-1]
    ax.imshow(np.sqrt(np.maximum(emap, 0)), cmap=cmap, vmin=0, vmax=np.sqrt(vmax),
              extent=(-0.5, S - 0.5, S - 0.5, -0.5), interpolation="nearest")
    if fg is not None:
        ax.contour(fg.float().cpu().numpy(), levels=[0.5], colors=["c"], linewidths=0.7)
    ax.axis("off")


@_detached
def consistency_maps(images, feat_b, decomposition, idx: Sequence[int], *, fg_mask=None,
                     title: Optional[str] = None):
    """For each image in ``idx``: the image, then the per-position magnitude of x_B, of each order
    component and of the residual (square root of the sum over channels of the centred square),
    on one colour scale relative to x_B's mean energy; the object outline when ``fg_mask`` is
    given."""
    comps = list(decomposition.components)
    parts = [("x_B", feat_b)] + [(f"order {k}", c) for k, c in enumerate(comps)] + \
            [("residual", decomposition.residual)]
    E = {nm: _kc_energy(t) for nm, t in parts}
    ref = E["x_B"].mean()
    idx = list(idx)
    fig, axes = plt.subplots(len(idx), len(parts) + 1, figsize=(1.7 * (len(parts) + 1), 1.75 * len(idx)),
                             squeeze=False)
    vmax = max(np.percentile(E["x_B"][idx] / ref, 99), 1e-6)
    for r, i in enumerate(idx):
        axes[r, 0].imshow(_np_img(images[i]))
        axes[r, 0].axis("off")
        for c, (nm, _) in enumerate(parts):
            _kc_heat(axes[r, c + 1], images[i], E[nm][i] / ref, vmax, None if fg_mask is None else fg_mask[i])
            if r == 0:
                axes[r, c + 1].set_title(nm, fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def blind_spot_maps(images, diagnosis, idx: Sequence[int], *, fg_mask=None, title: Optional[str] = None):
    """Network diagnosis maps: the image, the strong net's feature energy, its residual when rebuilt
    from the weak net (**blind spots** of the weak net), the weak net's feature energy and its
    residual when rebuilt from the strong net (**unreliable** features). Each residual is shown
    relative to the mean energy of the feature it belongs to; the object outline is drawn when
    ``fg_mask`` is given."""
    d = diagnosis
    cols = [("strong x_S", _kc_energy(d.feat_strong), None),
            ("blind spots\n(x_S not rebuilt from weak)", _kc_energy(d.blind_eval.residual), "S"),
            ("weak x_W", _kc_energy(d.feat_weak), None),
            ("unreliable\n(x_W not rebuilt from strong)", _kc_energy(d.unreliable_eval.residual), "W")]
    refs = {"S": cols[0][1].mean(), "W": cols[2][1].mean()}
    idx = list(idx)
    fig, axes = plt.subplots(len(idx), 5, figsize=(9.2, 1.85 * len(idx)), squeeze=False)
    for r, i in enumerate(idx):
        axes[r, 0].imshow(_np_img(images[i]))
        axes[r, 0].axis("off")
        for c, (nm, E, which) in enumerate(cols):
            ref = refs[which or ("S" if c == 0 else "W")]
            vmax = max(np.percentile(cols[0 if c < 2 else 2][1][idx] / ref, 99), 1e-6)
            _kc_heat(axes[r, c + 1], images[i], E[i] / ref, vmax, None if fg_mask is None else fg_mask[i],
                  cmap="magma" if which is None else "inferno")
            if r == 0:
                axes[r, c + 1].set_title(nm, fontsize=7)
    axes[0, 0].set_title("image", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def refinement_bars(rows, *, title: Optional[str] = None):
    """Test accuracy of network B before refinement and after fine-tuning its upper layers on each
    feature variant (mean over seeds, sd whiskers, one dot per seed); one panel per experiment.
    ``rows``: dicts with ``experiment``, ``variant``, ``accuracy`` (and ``seed``)."""

    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows
    exps = list(dict.fromkeys(df["experiment"]))
    fig, axes = plt.subplots(1, len(exps), figsize=(3.6 * len(exps), 3.2), squeeze=False)
    for ax, e in zip(axes[0], exps):
        sub = df[df["experiment"] == e]
        variants = list(dict.fromkeys(sub["variant"]))
        st = sub.groupby("variant", sort=False)["accuracy"].agg(["mean", "std"]).reindex(variants)
        ax.bar(range(len(variants)), st["mean"], yerr=np.nan_to_num(st["std"]), capsize=3,
               color=["0.75"] + list(PART_COLORS[: len(variants) - 1]), edgecolor="k", linewidth=0.4)
        for j, v in enumerate(variants):
            ys = sub[sub["variant"] == v]["accuracy"].to_numpy()
            ax.plot(np.full(len(ys), j) + np.linspace(-0.12, 0.12, len(ys)), ys, "k.", ms=4)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels(variants, fontsize=7, rotation=20)
        lo = float(sub["accuracy"].min())
        ax.set_ylim(max(0.0, lo - 0.1), min(1.0, float(sub["accuracy"].max()) + 0.05))
        ax.set_title(e, fontsize=8)
        ax.set_ylabel("test accuracy")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def component_view(image, parts: Dict[str, torch.Tensor], show: str, *, n_channels: int = 8,
                   title: Optional[str] = None):
    """One image, one layer: the image, the magnitude maps of every part on one scale (relative to the first part's mean energy, normally x_B), and
    the first ``n_channels`` channels of ``show``. ``parts``: ``{"x_B": (C, H, W), "order 0": ...,
    "residual": ...}`` for this image (per-channel means over positions removed)."""
    if show not in parts:
        raise ValueError(f"show must be one of {list(parts)}, got {show!r}")
    E = {k: ((v - v.mean(dim=(1, 2), keepdim=True)) ** 2).sum(0).double().cpu().numpy()
         for k, v in parts.items()}
    ref = max(float(next(iter(E.values())).mean()), 1e-30)
    vmax = max(max(float(np.percentile(e / ref, 99)) for e in E.values()), 1e-6)
    ch = parts[show].detach().cpu()
    ncols = max(len(parts) + 1, min(n_channels, ch.shape[0]))
    fig, axes = plt.subplots(2, ncols, figsize=(1.7 * ncols, 3.8), squeeze=False)
    for a in axes.flat:
        a.axis("off")
    axes[0, 0].imshow(_np_img(image))
    axes[0, 0].set_title("image", fontsize=8)
    for j, (k, e) in enumerate(E.items()):
        _kc_heat(axes[0, j + 1], image, e / ref, vmax)
        axes[0, j + 1].set_title(k, fontsize=8, fontweight="bold" if k == show else "normal")
    lim = float(ch.abs().max()) or 1.0
    for j in range(min(n_channels, ch.shape[0], ncols)):
        axes[1, j].imshow(ch[j].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[1, j].set_title(f"{show}, channel {j}", fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
