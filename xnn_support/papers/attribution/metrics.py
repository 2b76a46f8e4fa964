"""Evaluation of notebook 10: how far a map moved under a function-preserving transform, the verdict, and the
spec's predicted verdict (section 2.2) beside it; :func:`coherency_table` is the entry point.

Per (method, transform), over the images: ``rel_l2`` = ||A_T - A|| / ||A|| (all images), ``rel_l2_norm`` the same
after dividing each image's map by its max |A|, ``spearman`` (rank correlation over pixels, mean over images),
``top10_iou`` (IoU of the 10% most important pixels; for entropy maps the lowest entropy), and the verdict
(spec section 3): "exact" if rel_l2 < tol (1e-6 float64 / 1e-4 float32 Captum maps, 1e-3 sigma maps), "up to
normalisation" if rel_l2_norm < tol, "rank-only" if Spearman > 0.999, "fails" if Spearman < 0.95 or rel_l2 > 0.1,
else "approx" (close but neither exact nor rank-preserving).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn

from ...core import validate as V
from ...core.utils import progress
from .maps import INPUT_METHODS, LAYER_METHODS, METHODS, SIGMA_METHODS, attribution_maps, entropy_reference
from .method import KINDS, _consumer, explainable_layers, reparameterise

__all__ = ["PREDICTED", "TRANSFORMS", "compare_maps", "verdict", "agrees", "coherency_table", "default_layer",
           "SYMBOLS", "summarise_table", "verdict_matrix"]

TRANSFORMS = ("R1", "R2", "R3", "R4o", "R4g", "R5", "R7", "R8", "R9", "R10")
SYMBOLS = {"=": "exact", "n": "up to normalisation", "r": "rank-only", "x": "fails", "t": "fails untransported"}


def _row(s: str) -> Dict[str, str]:
    return dict(zip(TRANSFORMS, s.split()))


#: The spec's prediction matrix (section 2.2), transforms R1 R2 R3 R4o R4g R5 R7 R8 R9 R10. "t" (sigma maps, R7):
#: passes only with sigma_init and clamps transported to raw units, which we do not do: a change is expected.
PREDICTED: Dict[str, Dict[str, str]] = {
    **{m: _row("= = = = = = x = = n") for m in INPUT_METHODS},
    "layer_gradient_l1": _row("n x = x x = = = = n"),
    "layer_gradient_l2": _row("n x = = x = = = x n"),
    "grad_x_act": _row("= = = = = x = = = n"),
    "gradcam_raw": _row("= = = = = r = = = n"),
    "gradcam": _row("= = = = = x = = = n"),
    "layer_ig": _row("= = = = = x = = = n"),
    "sigma_icml22": _row("= x = = x = t = x ="),
    "sigma_clean": _row("= x = = x = t = x ="),
    "sigma_channel_std": _row("= = = x x = t = x ="),
    "sigma_whitened": _row("= = = = = = t = = ="),
}


def _flat(a: torch.Tensor) -> torch.Tensor:
    return a.detach().double().reshape(a.shape[0], -1).cpu()


def _top_iou(a: torch.Tensor, b: torch.Tensor, frac: float) -> float:
    k = max(1, int(round(frac * a.shape[1])))
    out = []
    for u, v in zip(a, b):
        su, sv = set(torch.topk(u, k).indices.tolist()), set(torch.topk(v, k).indices.tolist())
        out.append(len(su & sv) / len(su | sv))
    return float(np.mean(out))


def compare_maps(a: torch.Tensor, b: torch.Tensor, *, low_is_important: bool = False, frac: float = 0.1) -> Dict[str, float]:
    """rel_l2, rel_l2_norm, spearman, top10_iou of map ``b`` (transformed) against ``a`` (original), (B, ...)."""
    if a.shape != b.shape:
        raise V.fail("b", f"a map of the shape of a {tuple(a.shape)}", V.Shown(str(tuple(b.shape))),
                     "compare maps at corresponding layers (upsample first)")
    A, B = _flat(a), _flat(b)
    den = float(A.norm())
    rel = float((B - A).norm()) / den if den > 0 else float("nan")
    na = A / A.abs().amax(1, keepdim=True).clamp_min(1e-300)
    nb = B / B.abs().amax(1, keepdim=True).clamp_min(1e-300)
    rel_n = float((nb - na).norm() / na.norm().clamp_min(1e-300))
    rhos = []
    for u, v in zip(A.numpy(), B.numpy()):
        if np.ptp(u) == 0 or np.ptp(v) == 0:
            rhos.append(1.0 if np.array_equal(u, v) else float("nan"))
        else:
            rhos.append(float(spearmanr(u, v).statistic))
    s = -1.0 if low_is_important else 1.0
    return {"rel_l2": rel, "rel_l2_norm": rel_n, "spearman": float(np.nanmean(rhos)) if not all(np.isnan(rhos)) else float("nan"),
            "top10_iou": _top_iou(s * A, s * B, frac)}


def verdict(m: Dict[str, float], tol: float) -> str:
    """The spec's verdict from :func:`compare_maps`' numbers (module docstring)."""
    if m["rel_l2"] < tol:
        return "exact"
    if m["rel_l2_norm"] < tol:
        return "up to normalisation"
    if m["spearman"] > 0.999:
        return "rank-only"
    if not m["spearman"] >= 0.95 or m["rel_l2"] > 0.1:
        return "fails"
    return "approx"


def agrees(predicted: str, measured: str) -> bool:
    """Does a measured verdict agree with the predicted symbol ("=", "n", "r", "x", "t")?"""
    return measured in {"=": ("exact",), "n": ("exact", "up to normalisation"), "r": ("rank-only",),
                        "x": ("approx", "fails"), "t": ("approx", "fails")}[predicted]


def default_layer(model: nn.Module) -> str:
    """The first layer that R1-R9 all accept: between two convs, feeding the next Conv2d directly."""
    for n in explainable_layers(model):
        if isinstance(model.get_submodule(_consumer(model, n)), nn.Conv2d):
            return n
    raise ValueError(f"{type(model).__name__} has no layer between two Conv2d of a Sequential that feeds the next "
                     "conv directly; pass layer=... (fold BatchNorm first: fold_batchnorm(model))")


def coherency_table(model: nn.Module, images: torch.Tensor, targets: Optional[torch.Tensor] = None, *,
                    transforms: Sequence[str] = TRANSFORMS, methods: Sequence[str] = METHODS,
                    layer: Optional[str] = None, seed: int = 0, params: Optional[Dict[str, Dict[str, Any]]] = None,
                    float64: bool = True, tol: Optional[float] = None, sigma_tol: float = 1e-3,
                    show_progress: bool = True, return_maps: bool = False, **map_kw):
    """Method x transform coherency (spec section 3): a pandas DataFrame with columns ``method, level, transform,
    rel_l2, rel_l2_norm, spearman, top10_iou, verdict, predicted, agrees, f_error`` (``predicted`` the spec's
    symbol, ``f_error`` the float64 function check of the transform).

    ``targets``: (B,) explained classes (default: the model's prediction on ``images``). ``transforms``: kinds of
    :func:`~.method.reparameterise` (R6 excluded: it changes what is explained). ``layer``: explained layer
    (default :func:`default_layer`). ``params``: per-kind parameters, e.g. ``{"R1": {"c": 10}}``. ``float64``:
    Captum maps on float64 copies (exact threshold ``tol`` 1e-6, not the spec's 1e-8: Captum's Occlusion loses
    precision internally, 5e-8 measured under R10; float32: 1e-4); sigma maps always in the model's dtype, compared
    as H - H(sigma_init) (the learned part; threshold ``sigma_tol``, the spec's 1e-3). ``map_kw``: options of :func:`~.maps.attribution_maps`
    (``ig_steps``, ``sigma``, ``batch_size``, ...). ``return_maps``: also return ``{"original" or transform:
    {method: maps}}`` (for the figures).
    """
    images = V.finite_tensor("images", images, dims=(4,), nonempty=True, what="(B, C, H, W) images")
    dev = V.model_input(model, images, "images")
    bad = [t for t in transforms if t not in KINDS or t == "R6"]
    if bad:
        raise V.fail("transforms", f"kinds from {list(TRANSFORMS)}", bad, "drop the unknown kinds")
    layer = default_layer(model) if layer is None else layer
    model = model.eval()
    x = images.to(dev)
    if targets is None:
        with torch.no_grad():
            targets = model(x).argmax(1)
    dtype = V.model_dtype(model) or torch.float32
    hi = torch.float64 if float64 else dtype
    tol = (1e-6 if hi == torch.float64 else 1e-4) if tol is None else V.positive("tol", tol)
    cap = [m for m in methods if m not in SIGMA_METHODS]
    sig = [m for m in methods if m in SIGMA_METHODS]

    def run(net, inputs, where):
        out = attribution_maps(copy.deepcopy(net).to(hi), inputs.to(hi), targets, where, cap, seed=seed, **map_kw) if cap else {}
        if sig:
            out.update(attribution_maps(copy.deepcopy(net).to(dtype), inputs.to(dtype), targets, where, sig, seed=seed,
                                        sigma_stats=inputs.to(dtype), **map_kw))
        return out

    base = run(model, x, layer)
    maps, rows = {"original": base}, []
    for kind in progress(list(transforms), desc="coherency", disable=not show_progress):
        mt, ep = reparameterise(copy.deepcopy(model).double(), kind, layer, seed=seed, example=x[:2].double(),
                                **(params or {}).get(kind, {}))
        got = run(mt, ep.inputs(x.double()), ep.layer)
        maps[kind] = got
        for m in methods:
            a, b = base[m], got[m]
            if m in SIGMA_METHODS:   # entropy in nats of the original unit, relative to the map at the initial sigma
                h0 = entropy_reference(m, map_kw.get("sigma"))
                a, b = a - h0, b + ep.log_unit - h0
            c = compare_maps(a, b, low_is_important=m in SIGMA_METHODS)
            v = verdict(c, sigma_tol if m in SIGMA_METHODS else tol)
            p = PREDICTED[m][kind]
            rows.append(dict(method=m, level=_level(m), transform=kind, **c, verdict=v, predicted=p,
                             agrees=agrees(p, v), f_error=ep.max_error))
    df = pd.DataFrame(rows)
    return (df, maps) if return_maps else df


def _level(m: str) -> str:
    return "input" if m in INPUT_METHODS else "layer" if m in LAYER_METHODS else "sigma"


def summarise_table(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Tables of several seeds -> one row per (method, transform): mean and sd of the numbers, the verdicts seen
    (e.g. "exact 3/3"), the prediction and whether every seed agrees."""
    df = pd.concat([t.assign(seed_idx=i) for i, t in enumerate(tables)], ignore_index=True)
    out = []
    for (m, t), g in df.groupby(["method", "transform"], sort=False):
        counts = g.verdict.value_counts()
        out.append(dict(method=m, transform=t, rel_l2=g.rel_l2.mean(), rel_l2_sd=g.rel_l2.std(ddof=0),
                        spearman=g.spearman.mean(), top10_iou=g.top10_iou.mean(),
                        verdict=", ".join(f"{k} {n}/{len(g)}" for k, n in counts.items()),
                        majority=counts.index[0], predicted=g.predicted.iloc[0], agrees=bool(g.agrees.all())))
    return pd.DataFrame(out)


def verdict_matrix(summary: pd.DataFrame, column: str = "majority") -> pd.DataFrame:
    """method x transform matrix of short verdicts (= exact, n normalisation, r rank-only, ~ approx, x fails),
    with the prediction after a slash where they disagree."""
    short = {"exact": "=", "up to normalisation": "n", "rank-only": "r", "approx": "~", "fails": "x"}
    s = summary.assign(cell=[short[v] + ("" if a else f" /{p}") for v, a, p in
                             zip(summary[column], summary.agrees, summary.predicted)])
    return s.pivot(index="method", columns="transform", values="cell").reindex(
        index=list(dict.fromkeys(summary["method"])), columns=list(dict.fromkeys(summary["transform"])))
