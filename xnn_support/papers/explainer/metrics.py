"""Evaluation of notebook 08 (explainer networks), spec section 3; location instability, peak positions and part
IoU are notebook 02's (:mod:`xnn_support.papers.icnn.metrics`), not re-implemented.

* :func:`reconstruction_error` -- per target, mean squared error / Var(target) (0 = exact, 1 = the mean map).
* :func:`replacement_accuracy` -- the performer's accuracy with its own features and with the decoder's
  reconstruction in their place (:meth:`ExplainerNet.replaced`), and the agreement of the two predictions.
* :func:`filter_interpretability` -- location instability and part IoU of the filters of any named layer (of the
  performer, or of ``ExplainerNet.pipeline``: ``"explainer.norm_int"``), on the positive images, each filter
  credited to the category where it scores highest (as notebook 02 does).
* :func:`block_shares` -- planted targets: share of the planted part (P) and texture (T) variance explained by
  each track of a linear decoder.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from ...core import validate as V
from ...core.predict import predict
from ..icnn.metrics import credited_instability, part_iou, peak_positions
from .planted import PlantedBlocks, unmix

__all__ = ["reconstruction_error", "replacement_accuracy", "filter_interpretability", "block_shares"]


def reconstruction_error(recon: Dict[str, torch.Tensor], targets: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """{target: mean (R - F)^2 / Var(F)} over the given images."""
    out = {}
    for k, r in recon.items():
        t = targets[k].float()
        if tuple(r.shape) != tuple(t.shape):
            raise V.fail(f"targets[{k!r}]", f"shape {tuple(r.shape)} like its reconstruction",
                         V.Shown(f"shape {tuple(t.shape)}"), "pass the targets of the same images")
        out[k] = float(((r.double() - t.double()) ** 2).mean() / t.double().var())
    return out


def replacement_accuracy(net, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 128) -> Dict[str, float]:
    """``acc`` (the performer's own), ``acc_replaced`` (R_j fed in place of F_j at every layer target),
    ``agreement`` (same predicted class), ``logit_error`` (mean |logit change| / mean |logit|)."""
    y = V.labels("labels", labels, n=images.shape[0])
    out = predict(net.performer, images, batch_size=batch_size)
    with net.replaced():
        out_r = predict(net.performer, images, batch_size=batch_size)
    pred, pred_r = out.argmax(1), out_r.argmax(1)
    return {"acc": float((pred == y).float().mean()), "acc_replaced": float((pred_r == y).float().mean()),
            "agreement": float((pred == pred_r).float().mean()),
            "logit_error": float((out_r - out).abs().mean() / out.abs().mean().clamp_min(1e-12))}


def filter_interpretability(model: nn.Module, layer: str, ds, *, top_n: int = 100, batch_size: int = 128,
                            alive: Optional[float] = 1e-6) -> Dict[str, float]:
    """Location instability (mean over filters) and part IoU (mean over filters of the best part) of ``layer``'s
    filters on the positive images of ``ds`` (labels > 0, landmarks, part masks). Filters whose maps stay below
    ``alive`` on every image (dead) are left out and counted (``dead``); ``None`` keeps them."""
    posm = ds.labels > 0
    imgs, lms, y = ds.images[posm], ds.landmarks[posm], ds.labels[posm]
    pos, sc, maps = peak_positions(model, layer, imgs, batch_size=batch_size)
    keep = torch.ones(pos.shape[0], dtype=torch.bool) if alive is None else sc.amax(1) > alive
    pos, sc, maps = pos[keep], sc[keep], maps[:, keep]
    S = int(ds.images.shape[-1])
    per = credited_instability(pos, sc, lms, y, S, top_n=top_n)
    pm = ds.part_masks[posm]
    present = pm.flatten(2).any(2).any(0)
    iou = part_iou(maps, pm[:, present]) if maps.shape[1] else torch.zeros(0, 1)
    return {"instability": float(np.nanmean(per)) if np.isfinite(per).any() else float("nan"),
            "part_iou": float(iou.max(1).values.mean()) if len(iou) else float("nan"),
            "dead": int((~keep).sum()), "filters": int(keep.numel())}


def _explained(term: torch.Tensor, truth: torch.Tensor) -> float:
    """sum_c cov(term_c, truth_c) / sum_c var(truth_c) over images and positions (NaN when truth is 0)."""
    t = truth.double().transpose(0, 1).flatten(1)
    r = term.double().transpose(0, 1).flatten(1)
    t, r = t - t.mean(1, keepdim=True), r - r.mean(1, keepdim=True)
    den = float((t * t).sum())
    return float((r * t).sum()) / den if den > 1e-12 else float("nan")


def block_shares(net, images: torch.Tensor, blocks: PlantedBlocks, a: float, *, target: str = "target",
                 batch_size: int = 128) -> Dict[str, float]:
    """Linear decoder on planted targets: the share of the planted P (part) and T (texture) variance explained by
    the interpretable track (``int_P``, ``int_T``) and by the ordinary track (``ord_P``, ``ord_T``). The shares of
    one block add up to its R^2 (bias aside)."""
    r_int, r_ord, _ = net.split(images, batch_size=batch_size)[target]
    truth_P, truth_T = blocks.P * a ** 0.5, blocks.T * (1 - a) ** 0.5
    (iP, iT), (oP, oT) = unmix(blocks, r_int), unmix(blocks, r_ord)
    return {"int_P": _explained(iP, truth_P), "ord_P": _explained(oP, truth_P),
            "int_T": _explained(iT, truth_T), "ord_T": _explained(oT, truth_T)}
