"""The protocol of notebook 10 (spec section 3): data, nets (through ``core.train.fit``, cached, BatchNorm folded),
seeds, and the studies, each returning tidy pandas DataFrames; the notebook only calls, plots and records.

* :func:`train_nets` -- VGG-like nets (width 0.5, 64 px creatures, object-centric), one per seed, BN folded (R6).
* :func:`coherency_study` -- :func:`~.metrics.coherency_table` per seed on held-out images, and its summary.
* :func:`layer_study` -- across layers in nats: ICML22 entropy (fg / bg) per layer against Grad-CAM's magnitudes,
  for the net and its E-layer copy (spec 2.4), with the zero-influence cells and the calibration value.
* :func:`pair_study` -- across nets: map magnitudes of net B over net A, before and after R10 (tau) on B.
* :func:`real_study` -- the coherency table on ImageNet-pretrained EfficientNet-Lite0 on the real photos, with the
  transforms its blocks admit (insertions at a linear point, input units, temperature).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd
import numpy as np
import torch
import torch.nn.functional as F

from ... import data
from ...core.train import fit
from ...sigma import HALF_LOG_2PIE
from ..discarding import pixel_information
from ..discarding.real import load_net, resize_images
from .maps import attribution_maps
from .method import fold_batchnorm, reparameterise
from .metrics import coherency_table, default_layer, summarise_table
from .planted import erase_layer, zero_influence

__all__ = ["NET", "make_data", "train_nets", "held_out", "coherency_study", "layer_study", "pair_study",
           "real_study", "REAL_TRANSFORMS", "REAL_METHODS", "REAL_LAYER", "LAYERS", "lecture_table", "exact_fraction",
           "HIDDEN", "FAMILIES"]

NET = dict(arch="vgg_small", width=0.5, size=64, lr=3e-3, schedule="cosine", augment="flip")
#: the net's post-ReLU layers read across depth (64 px, width 0.5: 64x64, 32x32, 16x16, 8x8)
LAYERS = ("features.2", "features.6", "features.13", "features.20")
REAL_LAYER = "net.blocks.4"          # stage-4 output of Lite0 (80 ch), consumed by blocks.5.0.conv_pw
REAL_TRANSFORMS = ("R4o", "R4g", "R5", "R7", "R10")
REAL_METHODS = ("saliency", "integrated_gradients", "input_x_gradient", "layer_gradient_l2", "grad_x_act",
                "gradcam_raw", "gradcam", "sigma_clean", "sigma_whitened")


def make_data(n: int, *, size: int = 64, seed: int = 0):
    """``creatures(n, size, object_centric=True)`` split 80 / 20 (seeded): ``(train, val)``."""
    return data.creatures(n, size, object_centric=True, seed=seed).split(0.2, seed=seed)


def train_nets(train, val, seeds: Sequence[int], *, epochs: int = 6) -> List[Dict[str, Any]]:
    """One VGG-like net per seed (``fit``, cached), BN folded: ``[{seed, model, bn_model, val_acc}]``."""
    out = []
    for s in seeds:
        r = fit(NET["arch"], train, val, model_config=dict(width=NET["width"]), epochs=epochs, lr=NET["lr"],
                schedule=NET["schedule"], augment=NET["augment"], seed=int(s), num_threads=1, progress=False)
        out.append(dict(seed=int(s), model=fold_batchnorm(r.model).eval(), bn_model=r.model.eval(),
                        val_acc=float(r.history[-1].get("val_acc", float("nan")))))
    return out


def held_out(val, k: int):
    """The first ``k`` held-out positives (an object on clutter): ``(images, fg masks)``."""
    idx = (val.labels > 0).nonzero().flatten()[:k]
    return val.images[idx], val.fg_mask[idx]


def coherency_study(nets: List[Dict[str, Any]], images: torch.Tensor, *, transforms, methods, **kw):
    """:func:`coherency_table` per net (targets = each net's prediction): ``(tables with a seed column, summary,
    maps of the first net)``."""
    tables, first_maps = [], None
    for i, n in enumerate(nets):
        df, maps = coherency_table(n["model"], images, transforms=transforms, methods=methods, seed=n["seed"],
                                   return_maps=True, **kw)
        tables.append(df.assign(seed=n["seed"]))
        first_maps = maps if i == 0 else first_maps
    return pd.concat(tables, ignore_index=True), summarise_table(tables), first_maps


def _cells(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """(H, W) bool -> (grid, grid) bool: a cell is True when all its pixels are."""
    return F.avg_pool2d(mask.float()[None, None], mask.shape[-1] // grid)[0, 0] > 0.999


def _fg_bg(maps: torch.Tensor, fg: torch.Tensor, upsample: bool) -> Dict[str, float]:
    m = maps.detach().float()
    if upsample:
        m = F.interpolate(m[:, None], size=fg.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    else:
        fg = F.adaptive_avg_pool2d(fg.float()[:, None], m.shape[-2:])[:, 0] > 0.5
    return {"fg": float(m[fg].mean()), "bg": float(m[~fg].mean())}


def layer_study(model, images: torch.Tensor, fg: torch.Tensor, *, layers: Sequence[str] = LAYERS,
                erase_at: str = "features.13", keep: float = 0.5, grid: int = 16, steps: int = 100,
                lr: float = 0.1, samples: int = 8, seed: int = 0) -> Dict[str, Any]:
    """Across layers: per (net in {original, erased}, layer) the ICML22 entropy (clean preset, nats, fg / bg / at
    the zero-influence cells) and Grad-CAM's mean |map| (fg / bg); ``{"table", "calibration", "zero_cells",
    "maps"}``. ``erase_at``: the E-layer (central ``keep`` square kept). ``steps``, ``lr``, ``samples``: the clean
    preset's (log sigma must travel log(1 / 0.01) = 4.6 to reach the cap: lr x steps well above that)."""
    model = model.eval()
    erased, mask_name = erase_layer(model, erase_at, images, keep=keep)
    zero = _cells(zero_influence(erased, mask_name, images[:2]), grid)
    with torch.no_grad():
        target = model(images).argmax(1)
    fg_cells = F.adaptive_avg_pool2d(fg.float()[:, None], grid)[:, 0] > 0.5
    rows, maps = [], {}
    depth_e = list(layers).index(erase_at) if erase_at in layers else len(layers)
    for net, m in (("original", model), ("erased", erased)):
        names = [(mask_name if (net == "erased" and l == erase_at) else l) for l in layers]
        px = pixel_information(m, images, names, grid=grid, steps=steps, seed=seed, config="clean", lr=lr,
                               samples=samples)
        for d, (l, n) in enumerate(zip(layers, names)):
            em = px[n].entropy_map
            cam = attribution_maps(m, images, target, n, ["gradcam_raw"])["gradcam_raw"].abs()
            fb, cb = _fg_bg(em, fg_cells, False), _fg_bg(cam, fg, True)
            rows.append(dict(net=net, layer=l, depth=d, after_erasure=net == "erased" and d >= depth_e,
                             H_fg=fb["fg"], H_bg=fb["bg"], H_zero=float(em[:, zero].mean()) if zero.any() else math.nan,
                             H_mean=float(em.mean()), F=float(px[n].F.mean()), cam_fg=cb["fg"], cam_bg=cb["bg"]))
            maps[(net, l)] = em
    return {"table": pd.DataFrame(rows), "calibration": math.log(1.0) + HALF_LOG_2PIE, "zero_cells": zero,
            "maps": maps, "init_entropy": math.log(0.01) + HALF_LOG_2PIE}


def _magnitude(maps: Dict[str, torch.Tensor], m: str) -> float:
    return float(maps[m].mean()) if m.startswith("sigma") else float(maps[m].abs().mean())


def pair_study(model_a, model_b, images: torch.Tensor, *, tau: float = 5.0, methods: Sequence[str] = (
        "saliency", "integrated_gradients", "layer_gradient_l2", "gradcam_raw", "sigma_clean"),
               layer: Optional[str] = None, seed: int = 0, **kw) -> pd.DataFrame:
    """Across nets (spec 2.4, biased pair's R10 step): per method, the comparison B vs A -- magnitude ratio for
    Captum maps, entropy difference (nats) for sigma maps -- before and after multiplying B's logits by ``tau``."""
    layer = default_layer(model_a) if layer is None else layer
    with torch.no_grad():
        ta, tb = model_a(images).argmax(1), model_b(images).argmax(1)
    bt, ep = reparameterise(model_b, "R10", layer, tau=tau, example=images[:2])
    A = attribution_maps(model_a, images, ta, layer, methods, seed=seed, **kw)
    B = attribution_maps(model_b, images, tb, layer, methods, seed=seed, **kw)
    BT = attribution_maps(bt, images, tb, ep.layer, methods, seed=seed, **kw)
    rows = []
    for m in methods:
        a, b, c = _magnitude(A, m), _magnitude(B, m), _magnitude(BT, m)
        sig = m.startswith("sigma")
        before, after = (b - a, c - a) if sig else (b / a, c / a)
        rows.append(dict(method=m, comparison="H_B - H_A (nats)" if sig else "|B| / |A|", before=before, after=after,
                         change=(after - before) if sig else after / before))
    return pd.DataFrame(rows)


def real_study(*, size: int = 128, photos: int = 3, transforms: Sequence[str] = REAL_TRANSFORMS,
               methods: Sequence[str] = REAL_METHODS, layer: str = REAL_LAYER, seed: int = 0, **kw):
    """:func:`coherency_table` on ImageNet-pretrained EfficientNet-Lite0 (``discarding.real.load_net``) on the
    first ``photos`` real photos at ``size`` px; targets = its top-1 class. Returns ``(table, images, names)``.
    R1-R3/R9 are not applicable: Lite0's convs reach the next conv through BatchNorm + ReLU6 (fused).
    Returns ``(table, maps, images, names)``."""
    ps = data.real_photos(size)
    x = resize_images(ps.images[:photos], size)
    net = load_net("trained")
    df, maps = coherency_table(net, x, transforms=transforms, methods=methods, layer=layer, seed=seed,
                               return_maps=True, **kw)
    return df, maps, x, list(ps.names[:photos])


def seed_values(df: pd.DataFrame, method: str, transform: str, col: str) -> List[float]:
    sel = df[(df["method"] == method) & (df["transform"] == transform)]
    return [float(v) for v in sel[col]]


__all__ += ["seed_values"]


# ------------------------------------------------------------------------------------ the lecture's table
HIDDEN = ("R1", "R2", "R3", "R4o", "R4g", "R5", "R8", "R9")   # transforms of the explained hidden layer
FAMILIES = {  # the lecture's rows -> our methods (layer-level where the family has one)
    "gradient-based": ("layer_gradient_l1", "layer_gradient_l2", "grad_x_act", "layer_ig"),
    "perturbation-based": ("occlusion",),
    "CAM-based": ("gradcam_raw", "gradcam"),
    "ours: ICML22 entropy, code metric (mse)": ("sigma_icml22", "sigma_clean"),
    "ours + whitened feature metric": ("sigma_whitened",),
}
LECTURE = {"gradient-based": "No / No / No", "perturbation-based": "No / No / No", "CAM-based": "No / No / No",
           "ours: ICML22 entropy, code metric (mse)": "Yes / Yes / Yes", "ours + whitened feature metric": "(not in lecture)"}
GENERALITY = {"gradient-based": "needs a scalar target", "perturbation-based": "needs a scalar target",
              "CAM-based": "needs a scalar target and a spatial conv layer",
              "ours: ICML22 entropy, code metric (mse)": "any layer, no target (choice: feature metric)",
              "ours + whitened feature metric": "any layer, no target (choice: feature metric)"}


def exact_fraction(tables: pd.DataFrame, methods: Sequence[str], transforms: Sequence[str] = HIDDEN) -> List[float]:
    """Per seed: the fraction of (method, transform) cells measured "exact" (the map did not move)."""
    sel = tables[tables["method"].isin(methods) & tables["transform"].isin(transforms)]
    return [float((g.verdict == "exact").mean()) for _, g in sel.groupby("seed", sort=True)]


def lecture_table(tables: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The lecture's table beside ours: per family, the exact fraction under the hidden-layer transforms (mean over
    seeds), the unit of the map, how a B-vs-A comparison moved under R10 on B (pair study), generality."""
    rows = []
    for fam, methods in FAMILIES.items():
        ex = exact_fraction(tables, methods)
        pm = pairs[pairs.method.isin(methods)] if len(pairs) else pairs
        if fam.startswith("perturbation"):
            pm = pairs[pairs.method == "integrated_gradients"].iloc[:0]
        sig = fam.startswith("ours")
        change = (f"{pm.change.abs().mean():+.3f} nats" if sig else f"x{pm.change.mean():.3f}") if len(pm) else "-"
        rows.append({"family": fam, "lecture (layers / nets / generality)": LECTURE[fam],
                     "exact under R1-R5, R8, R9 (hidden layer)": f"{np.mean(ex):.2f}" if ex else "-",
                     "unit": "nats per input dim" if sig else "logit units (x tau under R10)",
                     "B vs A after R10 (tau) on B": change, "generality": GENERALITY[fam]})
    return pd.DataFrame(rows)
