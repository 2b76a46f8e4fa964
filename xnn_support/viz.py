"""All plotting of the suite. Every function returns a matplotlib ``Figure`` and never calls
``plt.show()`` (a notebook displays the returned figure; a script saves it). Method modules import
nothing from here; notebooks and :mod:`xnn_support.widgets` do.

Sections: data sets (images with landmarks and masks, faces, point clouds, sentences), features
(feature-map grids), metrics (bars with the paper's number beside ours, training curves).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["image_grid", "face_grid", "cloud_grid", "sentence_table", "feature_maps",
           "training_curves", "compare_bars", "PART_COLORS"]

PART_COLORS = list(matplotlib.colormaps["tab10"].colors)


def _detached(fn):
    """Close the figure in pyplot before returning it: the notebook shows the returned figure once
    (no second copy from the inline backend) and loops that make many figures leak no memory."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        fig = fn(*args, **kwargs)
        plt.close(fig)
        return fig
    return wrapper


def _np_img(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()


def _grid(n: int, cols: int, size: float = 2.0):
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes.flat


@_detached
def image_grid(ds, idx: Optional[Sequence[int]] = None, *, n: int = 12, cols: int = 6, landmarks: bool = True,
               masks: bool = False, boxes: bool = True, title: Optional[str] = None):
    """Images of an :class:`~xnn_support.data.types.ImageSet` with landmarks (dots), part masks
    (tinted outlines) and object boxes drawn over them; the class name above each image."""
    idx = list(range(min(n, len(ds)))) if idx is None else list(idx)
    fig, axes = _grid(len(idx), cols)
    for ax, i in zip(axes, idx):
        ax.imshow(_np_img(ds.images[i]))
        if masks and ds.part_masks is not None:
            for p in range(ds.part_masks.shape[1]):
                m = ds.part_masks[i, p].numpy()
                if m.any():
                    ax.contour(m.astype(float), levels=[0.5], colors=[PART_COLORS[p % 10]], linewidths=1)
        if boxes and ds.boxes is not None and not torch.isnan(ds.boxes[i]).any():
            r0, c0, r1, c1 = ds.boxes[i].tolist()
            ax.add_patch(plt.Rectangle((c0, r0), c1 - c0, r1 - r0, fill=False, ec="w", lw=1, ls="--"))
        if landmarks and ds.landmarks is not None:
            for k, (r, c) in enumerate(ds.landmarks[i].tolist()):
                if not (np.isnan(r) or np.isnan(c)):
                    ax.plot(c, r, "o", ms=4, mec="k", mfc=PART_COLORS[k % 10])
        lab = int(ds.labels[i])
        ax.set_title(ds.class_names[lab] if ds.class_names else str(lab), fontsize=8)
        ax.axis("off")
    if landmarks and ds.landmarks is not None and ds.landmark_names:
        handles = [plt.Line2D([], [], marker="o", ls="", mfc=PART_COLORS[k % 10], mec="k", label=nm)
                   for k, nm in enumerate(ds.landmark_names)]
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05 if landmarks else 0, 1, 1))
    return fig


@_detached
def face_grid(ds, idx: Optional[Sequence[int]] = None, *, n: int = 8, cols: int = 4, show_attributes: int = 4,
              title: Optional[str] = None):
    """Faces of a :class:`~xnn_support.data.types.FaceSet` with their present attributes and target."""
    idx = list(range(min(n, len(ds)))) if idx is None else list(idx)
    fig, axes = _grid(len(idx), cols, size=2.4)
    for ax, i in zip(axes, idx):
        ax.imshow(_np_img(ds.images[i]))
        on = [nm for nm, a in zip(ds.attribute_names, ds.attributes[i].tolist()) if a > 0.5]
        label = ", ".join(on[:show_attributes]) + (" ..." if len(on) > show_attributes else "")
        tgt = f"\ntarget {float(ds.target[i]):+.2f}" if ds.target is not None else ""
        ax.set_title(label + tgt, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


@_detached
def cloud_grid(ds, idx: Optional[Sequence[int]] = None, *, n: int = 8, cols: int = 4, color=None,
               title: Optional[str] = None, cmap: str = "viridis", elev: float = 20, azim: float = -60):
    """3D scatter plots of clouds from a :class:`~xnn_support.data.types.PointCloudSet`; points are
    coloured by part label, by the fg mask, or by ``color`` ((N, P) values, e.g. per-point entropy)."""
    idx = list(range(min(n, len(ds)))) if idx is None else list(idx)
    cols = max(1, min(cols, len(idx)))
    rows = (len(idx) + cols - 1) // cols
    fig = plt.figure(figsize=(2.6 * cols, 2.6 * rows))
    for k, i in enumerate(idx):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        p = ds.points[i].numpy()
        if color is not None:
            c = np.asarray(color[k] if len(color) == len(idx) else color[i])
        elif ds.part_labels is not None:
            c = ds.part_labels[i].numpy()
        elif ds.fg_mask is not None:
            c = ds.fg_mask[i].numpy().astype(float)
        else:
            c = p[:, 2]
        ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=c, s=3, cmap=cmap, depthshade=False)
        ax.view_init(elev=elev, azim=azim)
        ax.set_axis_off()
        lab = int(ds.labels[i])
        ax.set_title(ds.class_names[lab] if ds.class_names else str(lab), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


@_detached
def sentence_table(ds, idx: Optional[Sequence[int]] = None, *, n: int = 6, values=None, title: Optional[str] = None,
                   cmap: str = "RdYlGn_r"):
    """Sentences of a :class:`~xnn_support.data.types.TextSet` as coloured words: planted key words
    highlighted, or each word shaded by ``values`` ((N, L), e.g. a word-wise entropy)."""
    idx = list(range(min(n, len(ds)))) if idx is None else list(idx)
    keys = {w: cls for cls, ws in (ds.key_words or {}).items() for w in ws}
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(idx) + 0.6))
    ax.axis("off")
    renderer = fig.canvas.get_renderer()
    cm = matplotlib.colormaps[cmap]
    for row, i in enumerate(idx):
        y = 1 - (row + 0.5) / len(idx)
        x = 0.0
        lab = ds.class_names[int(ds.labels[i])] if ds.class_names else str(int(ds.labels[i]))
        ax.text(x, y, f"[{lab}]", fontsize=8, va="center", family="monospace", transform=ax.transAxes)
        x += 0.11
        vals = None if values is None else np.asarray(values[row if len(values) == len(idx) else i], float)
        for j, w in enumerate(ds.tokens[i]):
            if vals is not None:
                lo, hi = np.nanmin(vals), np.nanmax(vals)
                bg = cm((vals[j] - lo) / (hi - lo + 1e-12))
            else:
                bg = {"positive": "#b7e4b0", "negative": "#f4b6b6"}.get(keys.get(w), "white")
            t = ax.text(x, y, w, fontsize=8, va="center", transform=ax.transAxes,
                        bbox=dict(boxstyle="round,pad=0.15", fc=bg, ec="none"))
            bb = t.get_window_extent(renderer=renderer).transformed(ax.transAxes.inverted())
            x = bb.x1 + 0.008
    if title:
        ax.set_title(title, fontsize=9)
    return fig


@_detached
def feature_maps(feats: torch.Tensor, *, n: int = 16, cols: int = 8, title: Optional[str] = None, cmap="magma"):
    """The first ``n`` channels of one feature map (C, H, W) as a grid of heat-maps."""
    feats = feats.detach().cpu()
    n = min(n, feats.shape[0])
    fig, axes = _grid(n, cols, size=1.3)
    for c, ax in zip(range(n), axes):
        ax.imshow(feats[c].numpy(), cmap=cmap)
        ax.set_title(f"ch {c}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@_detached
def training_curves(histories: Dict[str, List[dict]], *, keys=("loss", "val_acc"), title: Optional[str] = None):
    """Per-epoch curves (one line per model) from trainer histories."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, hist in histories.items():
            ys = [h.get(key) for h in hist]
            if any(y is not None for y in ys):
                ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


@_detached
def compare_bars(names: Sequence[str], ours: Sequence[float], paper: Optional[Sequence[Optional[float]]] = None,
                 *, errors: Optional[Sequence[float]] = None, ylabel: str = "", title: Optional[str] = None):
    """Bars of our values (with error bars, e.g. sd over seeds) beside the paper's numbers."""
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(names) + 2), 3.2))
    w = 0.38 if paper is not None else 0.6
    ax.bar(x - (w / 2 if paper is not None else 0), ours, w, yerr=errors, capsize=3, label="ours")
    if paper is not None:
        pv = [np.nan if p is None else p for p in paper]
        ax.bar(x + w / 2, pv, w, label="paper", color="0.7")
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Method sections are appended below, one per paper ("# --- NN: name ---"), by `cat >>`.
# ---------------------------------------------------------------------------------------------


# --- 05: knowledge consistency ---

__all__ += ["consistency_shares", "consistency_maps", "blind_spot_maps", "refinement_bars",
            "component_view"]


@_detached
def consistency_shares(rows, *, title: Optional[str] = None, group: str = "layer", ax=None):
    """Variance shares of each order and of the residual, grouped by ``group`` (a layer, a toy
    case): ``rows`` are dicts (or a DataFrame) with ``share_0 .. share_K`` and ``share_residual``;
    several rows per group (seeds) give mean bars with sd whiskers."""
    import pandas as pd

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
    import pandas as pd

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


# --- 04: information discarding ---
def entropy_grid(images, maps, *, fg_mask=None, n: int = 6, vmin=None, vmax=None, cmap: str = "magma",
                 titles=None, label: str = "entropy (nats / dim)", title=None):
    """Pixel-wise entropy maps per layer in a grid: one row per image (the image first, with the
    foreground outline when ``fg_mask`` (B, H, W) is given), one column per layer. ``maps``:
    ``{layer: (B, g, g) or (B, H, W)}``; one colour scale for the whole figure (bright = discarded)."""
    import matplotlib.pyplot as plt
    import numpy as np

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
    import matplotlib.pyplot as plt
    import numpy as np

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
    import matplotlib.pyplot as plt
    import numpy as np

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
    import matplotlib.pyplot as plt
    import numpy as np

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
    import matplotlib.pyplot as plt

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
    import matplotlib.pyplot as plt
    import numpy as np

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


# --- 03: semantic quantification ---------------------------------------------------------------
# Figures of notebook 03 (Chen et al., ICCV 2019; lipstick / rosy cheeks, Zhang et al., AAAI 2018).

@_detached
def contribution_bars(explanation, idx, *, images=None, k: int = 6, title=None, unit: str = "score"):
    """Per-image reasons (the lecture's 'attractive' chart): for each face in ``idx``, the image
    (when ``images`` is given) and the ``k`` largest contributions alpha_i * y_i (green > 0,
    red < 0), the bias b, the unexplained residual y - y_hat and the performer's y."""
    import matplotlib.pyplot as plt
    import numpy as np

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
    import matplotlib.pyplot as plt
    import numpy as np

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
    import matplotlib.pyplot as plt
    import numpy as np

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
    import matplotlib.pyplot as plt
    import numpy as np

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


# --- 02: interpretable CNN ---

__all__ += ["icnn_filter_panels", "icnn_top_images", "icnn_summary_bars", "icnn_templates"]


@_detached
def icnn_filter_panels(images, maps, filters: Sequence[int], *, k: int = 5, scores=None, landmarks=None,
                       title: Optional[str] = None, cmap: str = "magma"):
    """The lecture's per-filter panels: one row per filter, its top-``k`` images (by ``scores``
    (F, N), default the map max) with the filter's up-sampled map overlaid; landmarks as dots."""
    import torch.nn.functional as F

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
    from matplotlib.patches import Rectangle

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
def icnn_templates(n: int = 14, positions: Sequence[Tuple[int, int]] = ((3, 3), (7, 10)), beta: float = 4.0):
    """A few positive templates T_mu and the negative template (paper's tau = 0.5 / n^2)."""
    from .icnn import positive_templates

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


# --- 01: explanatory graph ---

__all__ += ["graph_by_layer", "graph_patch_gallery", "graph_localisation", "graph_bars"]


@_detached
def graph_by_layer(graph, parts=None, part_names=(), *, max_nodes: int = 60, scores=None, title=None):
    """The explanatory graph drawn by layer (bottom left, top right): each node at its mean
    (row, col) inside its layer's panel, coloured by its majority part (``parts``: {layer: (M,)},
    -1 = background), edges from the ``max_nodes`` strongest nodes (``scores``: {layer: (M,)}) to
    their parents."""
    import matplotlib.pyplot as plt

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
    import torch

    return torch.ones(n)


@_detached
def graph_patch_gallery(rows, labels, *, title=None):
    """Image patches per node (like the lecture's Figure 8): ``rows`` a list of (k, 3, s, s)
    tensors (one row per node), ``labels`` a row title each."""
    import matplotlib.pyplot as plt

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
    import matplotlib.pyplot as plt

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
    import matplotlib.pyplot as plt
    import numpy as np

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
