"""Metrics of interpretable CNNs (Zhang, Wu, Zhu, CVPR 2018, arXiv 1710.00935).

* :func:`location_instability` -- the official protocol (``computeStability.m``,
  ``getDistSqrtVar.m``): per filter f and landmark k, sort images by f's score, drop images where
  k is invisible FIRST, keep the top ``top_n``, ``D_fk = sqrt(var_I ||p_f(I) - p_k(I)||) / diag``
  (variance with N-1, diag = norm([H, W])), NaN with < 2 images; mean over landmarks, then over
  filters (NaN dropped). Dividing by the diagonal matches the corrected arXiv version (v2+: values
  divided by sqrt(2) compared to v1).
* :func:`peak_positions` -- peak of each filter's map mapped to the image (receptive-field
  centre ``(i + 0.5) S / n - 0.5`` px; the code's x2p for VGG-16 is 8.5 + 16 (i - 1), 1-based).
* :func:`part_iou` -- Network-Dissection-style part IoU (Bau et al. 2017; in neither code base):
  maps up-sampled bilinearly to the image, one threshold per filter at its top ``1 - quantile``
  over all images and pixels, dataset IoU with each part mask.

Deviations: positions are pixel centres of the argmax (not of the pre-ReLU map when it is all
non-positive: then the argmax of the pre-ReLU conv output is used, as the code does).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from ...core import validate as V
from ...core.capture import capture

__all__ = ["location_instability", "instability_per_filter", "credited_instability", "peak_positions", "layer_maps",
           "part_iou"]


def _shape(t) -> str:
    return f"shape {tuple(t.shape)}" if torch.is_tensor(t) else type(t).__name__


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _image_size(image_size) -> Tuple[float, float]:
    """(H, W) from S or (H, W), each a finite number > 0."""
    hw = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if len(hw) != 2:
        raise V.fail("image_size", "S or (H, W)", image_size, "pass the image side in pixels, e.g. 64")
    return tuple(V.positive("image_size", v, fix="pass the image side(s) in pixels, e.g. image_size=64")
                 for v in hw)


def instability_per_filter(positions, landmarks, image_size: Union[int, Sequence[int]], *, top_n: int = 100,
                           scores=None) -> np.ndarray:
    """(F,) mean over landmarks of D_fk (NaN where no landmark has >= 2 valid images)."""
    pos, lm = _np(positions).astype(np.float64), _np(landmarks).astype(np.float64)
    if pos.ndim != 3 or pos.shape[-1] != 2:
        raise V.fail("positions", "(F, N, 2) peak positions", V.Shown(f"shape {pos.shape}"),
                     "pass peak_positions(...)[0]")
    if not np.isfinite(pos).all():
        raise V.fail("positions", "finite", V.Shown(f"{int((~np.isfinite(pos)).sum())} NaN or inf value(s)"),
                     "pass the peaks of every filter on every image (mark invisible landmarks NaN, not positions)")
    if lm.ndim != 3 or lm.shape[-1] != 2 or lm.shape[0] != pos.shape[1]:
        raise V.fail("landmarks", f"(N, K, 2) with N = {pos.shape[1]}", V.Shown(f"shape {lm.shape}"),
                     "pass one (K, 2) row of landmarks per image, NaN where invisible")
    V.integer("top_n", top_n, minimum=2)
    Fn, N = pos.shape[:2]
    sc = np.zeros((Fn, N)) if scores is None else _np(scores).astype(np.float64)
    if sc.shape != (Fn, N) or not np.isfinite(sc).all():
        raise V.fail("scores", f"finite (F, N) = {(Fn, N)} scores", V.Shown(f"shape {sc.shape}"),
                     "pass peak_positions(...)[1] or None")
    hw = _image_size(image_size)
    diag = float(np.hypot(*hw))
    valid = ~np.isnan(lm).any(-1)                                   # (N, K)
    out = np.full(Fn, np.nan)
    for f in range(Fn):
        order = np.argsort(-sc[f], kind="stable")
        dist = np.linalg.norm(pos[f][:, None, :] - lm, axis=-1)     # (N, K)
        per_k = []
        for k in range(lm.shape[1]):
            idx = order[valid[order, k]][:top_n]
            if len(idx) >= 2:
                per_k.append(np.sqrt(np.var(dist[idx, k], ddof=1)) / diag)
        if per_k:
            out[f] = float(np.mean(per_k))
    return out


def location_instability(positions, landmarks, image_size: Union[int, Sequence[int]], *, top_n: int = 100,
                         scores=None) -> float:
    """Mean location instability E_{f,k}[D_fk] (see the module docstring).

    ``positions`` (F, N, 2) peak (row, col) in pixels of each filter on each image; ``landmarks``
    (N, K, 2), NaN where invisible; ``image_size`` S or (H, W); ``scores`` (F, N) pick each filter's
    top images (default: the first ``top_n`` valid images). Returns NaN if no filter qualifies.
    """
    per = instability_per_filter(positions, landmarks, image_size, top_n=top_n, scores=scores)
    return float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")


def credited_instability(positions: torch.Tensor, scores: torch.Tensor, landmarks: torch.Tensor, labels: torch.Tensor,
                         image_size: Union[int, Sequence[int]], *, top_n: int = 100) -> np.ndarray:
    """(F,) location instability of each filter on the images of the category it is credited to (the one
    where its mean peak score is highest; notebook 02's multi-category protocol, also 08's and the real
    network's): ``positions`` (F, N, 2) and ``scores`` (F, N) of :func:`peak_positions`, ``landmarks``
    and ``labels`` of the same N images. NaN for a filter whose category has no images."""
    classes = sorted(set(labels.tolist()))
    credit = torch.stack([scores[:, labels == c].mean(1) for c in classes], 1).argmax(1)
    per = np.full(positions.shape[0], np.nan)
    for ci, c in enumerate(classes):
        f_idx = torch.nonzero(credit == ci).flatten()
        if len(f_idx):
            sel = labels == c
            per[f_idx.numpy()] = instability_per_filter(positions[f_idx][:, sel], landmarks[sel], image_size,
                                                        top_n=top_n, scores=scores[f_idx][:, sel])
    return per


def layer_maps(model: nn.Module, layer: str, images: torch.Tensor, *, batch_size: int = 128) -> torch.Tensor:
    """(N, D, n, n) output of ``layer`` (CPU), run in eval mode, chunked, truncated after the layer."""
    V.name("layer", layer, fix="pass the dotted name of a conv layer, e.g. 'features.1'")
    V.finite_tensor("images", images, dims=(4,), what="(N, C, H, W) images")
    V.model_input(model, images, "images")
    V.positive_int("batch_size", batch_size)
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model, [layer], stop=True) as cap:
            return cap.run(images, batch_size=batch_size)[layer]
    finally:
        model.train(was)


def peak_positions(model: nn.Module, layer: str, images: torch.Tensor, *, batch_size: int = 128
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Peaks of each filter of ``layer`` on each image.

    Returns ``positions`` (F, N, 2) pixel (row, col) of the receptive-field centre of the argmax,
    ``scores`` (F, N) the max activation, ``maps`` (N, F, n, m).
    """
    V.finite_tensor("images", images, dims=(4,), what="(N, C, H, W) images")
    maps = layer_maps(model, layer, images, batch_size=batch_size)
    if not torch.is_tensor(maps) or maps.dim() != 4:
        raise V.fail("layer", "a conv layer whose output is (N, D, n, m) maps",
                     V.Shown(f"{layer!r} with output {_shape(maps)}"), "name a conv layer, e.g. 'features.1'")
    N, D, h, w = maps.shape
    flat = maps.flatten(2)
    scores, idx = flat.max(2)
    H, W = images.shape[-2:]
    r = (idx // w).float().add(0.5).mul(H / h).sub(0.5)
    c = (idx % w).float().add(0.5).mul(W / w).sub(0.5)
    return torch.stack([r, c], -1).transpose(0, 1).contiguous(), scores.t().contiguous(), maps


def part_iou(maps: torch.Tensor, part_masks: torch.Tensor, *, quantile: float = 0.995,
             batch_size: int = 16) -> torch.Tensor:
    """(F, P) dataset IoU of each filter's thresholded, up-sampled map with each part mask.

    ``maps`` (N, F, n, m); ``part_masks`` (N, P, H, W) bool. ``batch_size``: filters per chunk
    (memory N x batch_size x H x W floats).
    """
    if maps.dim() != 4 or part_masks.dim() != 4 or maps.shape[0] != part_masks.shape[0]:
        raise ValueError(f"maps (N, F, n, m) and part_masks (N, P, H, W) must share N, got "
                         f"{tuple(maps.shape)} and {tuple(part_masks.shape)}")
    V.in_range("quantile", quantile, 0, 1, low_open=True, high_open=True)
    V.positive_int("batch_size", batch_size)
    N, Fn = maps.shape[:2]
    H, W = part_masks.shape[-2:]
    pm = part_masks.bool().to(maps.device)
    area = pm.flatten(2).sum((0, 2)).double()                        # (P,)
    out = torch.zeros(Fn, pm.shape[1], dtype=torch.float64)
    for f0 in range(0, Fn, batch_size):
        up = F.interpolate(maps[:, f0:f0 + batch_size].float(), size=(H, W), mode="bilinear",
                           align_corners=False)                      # (N, f, H, W)
        flat = up.transpose(0, 1).reshape(up.shape[1], -1)
        k = max(1, int(round((1 - quantile) * flat.shape[1])))
        thr = flat.topk(k, dim=1).values[:, -1]
        on = up >= thr[None, :, None, None]                          # (N, f, H, W)
        inter = torch.einsum("nfhw,nphw->fp", on.float(), pm.float()).double()
        on_area = on.flatten(2).sum((0, 2)).double()
        out[f0:f0 + batch_size] = (inter / (on_area[:, None] + area[None, :] - inter).clamp_min(1)).cpu()
    return out
