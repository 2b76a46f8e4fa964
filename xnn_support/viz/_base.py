"""Core figures of the suite (data sets, features, metrics).

All plotting of the suite. Every function returns a matplotlib ``Figure`` and never calls
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
import functools

__all__ = ["image_grid", "photo_grid", "face_grid", "cloud_grid", "sentence_table", "feature_maps",
           "training_curves", "compare_bars", "PART_COLORS"]

PART_COLORS = list(matplotlib.colormaps["tab10"].colors)


def _detached(fn):
    """Close the figure in pyplot before returning it: the notebook shows the returned figure once
    (no second copy from the inline backend) and loops that make many figures leak no memory."""

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
def photo_grid(ps, *, predictions: Optional[Sequence[str]] = None, cols: int = 4, title: Optional[str] = None):
    """Real photos (:func:`xnn_support.data.real_photos`) with their coarse foreground masks outlined
    (dashed white) and, under each, its ImageNet label and an optional prediction line."""
    n = len(ps.names)
    fig, axes = _grid(n, cols, size=2.6)
    for i, ax in enumerate(axes[:n]):
        ax.imshow(_np_img(ps.images[i]))
        ax.contour(ps.masks[i].numpy().astype(float), levels=[0.5], colors="w", linewidths=1.2, linestyles="--")
        head = f"{ps.names[i]}: {ps.label_names[i] or 'no ImageNet class'}"
        ax.set_title(head + (f"\n{predictions[i]}" if predictions is not None else ""), fontsize=7)
        ax.axis("off")
    for ax in axes[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
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
