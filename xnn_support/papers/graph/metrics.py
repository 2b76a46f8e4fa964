"""Evaluations of the explanatory graph (Zhang et al., AAAI 2018; spec section 3) on planted truth.

* :func:`receptive_field` -- (stride, offset) of any CNN layer by dotted name, from the strides,
  kernels and paddings of the conv/pool modules met on the way (spec 2.3: pixel = offset + stride
  * cell, 0-based; the official ``getConvNetPara`` recursion).
* :func:`extract` -- feature maps of named layers (chunked, device of the model) with geometry.
* :func:`instability` -- location instability, spec 3(a): per node (or filter) its top-T images,
  D_k = sqrt(var_I ||pixel(p_V^I) - landmark_k^I||) (var with N-1), averaged over landmarks and
  the ``keep`` nodes with the largest mean top-T score, divided by the image diagonal.
* :func:`fewshot_localise` -- few-shot part localisation, spec 3(b): nodes are chosen on the 1-3
  annotated images (active, close to the part, consistent displacement); the part is predicted on
  new images as the score-weighted mean of (node position + displacement). The node-selection rule
  is ours (the paper's is [UNVERIFIED] in the spec). Baselines: the same rule on raw filter peaks;
  nearest neighbour of fc features (copy the nearest annotated landmark); the mean annotated position.
* :func:`purity` -- a purity proxy of part semantics (spec 7): the share of a node's top-T patch
  centres that fall in the node's majority part mask (background counts as a miss).
* :func:`disentangle` -- the two-identical-parts test: per filter, the best node for each wheel
  and whether two different nodes track the two wheels, against the filter's own argmax.
* :func:`instability_verdict` -- the notebook's reading: nodes more stable than filter peaks or not.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from ...core.capture import capture, resolve_layers

__all__ = ["receptive_field", "extract", "filter_peaks", "instability", "fewshot_localise",
           "normalised_distance", "purity", "node_parts", "disentangle", "node_patches", "part_label_map",
           "instability_verdict"]


def receptive_field(model: nn.Module, layers: Sequence[str], in_size: int) -> Dict[str, tuple]:
    """{layer: (stride, offset)} in input pixels for each named layer of ``model`` (0-based cells).

    A dummy forward at ``in_size`` tracks, for every tensor a leaf module produces, the geometry
    of its cells: conv/pool modules update it (offset += ((k-1)/2 * dilation - padding) * stride_in,
    stride *= s), other leaf modules pass it on. A tensor made outside modules (a functional add
    or reshape) falls back to stride = in_size / H, offset = (stride - 1) / 2."""
    mods = resolve_layers(model, list(layers))
    geo: Dict[int, tuple] = {}
    out: Dict[str, tuple] = {}
    names = {m: n for n, m in model.named_modules()}

    def pair(v):
        return v[0] if isinstance(v, (tuple, list)) else v

    def hook(m, inp, outp):
        if not torch.is_tensor(outp) or outp.dim() != 4:
            return
        x = inp[0] if inp and torch.is_tensor(inp[0]) else None
        if x is not None and x.dim() == 4:
            g = geo.get(id(x))
            if g is None:
                s = in_size / x.shape[-2]
                g = (s, (s - 1) / 2)
        else:
            g = (1.0, 0.0)
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p = pair(m.kernel_size), pair(m.stride), pair(m.padding)
            d = pair(getattr(m, "dilation", 1))
            g = (g[0] * s, g[1] + ((k - 1) / 2 * d - p) * g[0])
        geo[id(outp)] = g
        if m in mods.values():
            out[names[m]] = g

    hs = [m.register_forward_hook(hook) for m in model.modules() if len(list(m.children())) == 0]
    try:
        p = next(model.parameters())
        c = getattr(model, "in_channels", 3)
        with torch.no_grad():
            model.eval()(torch.zeros(1, c, in_size, in_size, device=p.device, dtype=p.dtype))
    finally:
        for h in hs:
            h.remove()
    return {n: out[n] for n in mods if n in out}


def extract(model: nn.Module, images: torch.Tensor, layers: Sequence[str], *, batch_size: int = 64):
    """OrderedDict layer -> (N, C, H, W) CPU maps, in the order given (bottom first, top last), each
    with a ``.geometry`` = (stride, offset) attribute, for :func:`explanatory_graph.mine`."""
    geo = receptive_field(model, layers, images.shape[-1])
    model.eval()
    with capture(model, list(layers), stop=True) as cap:
        feats = cap.run(images, batch_size=batch_size)
    out = OrderedDict()
    for n in layers:
        t = feats[n].float()
        t.geometry = geo[n]
        out[n] = t
    return out


def filter_peaks(x: torch.Tensor):
    """Raw filter peaks: (pos (N, C, 2) cells of the argmax, score (N, C) the max)."""
    N, C, H, W = x.shape
    v, i = x.flatten(2).max(-1)
    return torch.stack([(i // W).float(), (i % W).float()], -1), v


def _top(score, T):
    T = min(T, score.shape[0])
    return torch.topk(score, T, dim=0).indices  # (T, M)


def _kept(score, top_images, keep):
    """Top-``top_images`` image indices per unit (T, M) and the ``keep`` units with the largest mean top score."""
    idx = _top(score, top_images)                                   # (T, M)
    M = score.shape[1]
    keep = M if keep is None else min(int(keep), M)
    return idx, torch.topk(score.gather(0, idx).mean(0), keep).indices


def instability(pix, score, landmarks, *, top_images: int = 20, keep: Optional[int] = None,
                diag: float = 1.0) -> float:
    """Spec 3(a). ``pix`` (N, M, 2) node/filter positions in pixels, ``score`` (N, M), ``landmarks``
    (N, K, 2) (NaN = invalid). Lower = more stable. Returns the mean over landmarks and kept units / diag."""
    idx, units = _kept(score, top_images, keep)
    vals = []
    for m in units.tolist():
        ii = idx[:, m]
        p = pix[ii, m]                                              # (T, 2)
        lm = landmarks[ii]                                          # (T, K, 2)
        d = (p.unsqueeze(1) - lm).norm(dim=-1)                      # (T, K)
        ds = []
        for k in range(d.shape[1]):
            v = d[:, k][~torch.isnan(d[:, k])]
            if v.numel() >= 2:
                ds.append(v.var().sqrt())
        if ds:
            vals.append(torch.stack(ds).mean())
    return float(torch.stack(vals).mean() / diag) if vals else float("nan")


def mobility(pix, score, *, top_images: int = 20, keep: Optional[int] = None, diag: float = 1.0) -> float:
    """How much units move: mean over the kept units (as :func:`instability`) of the rms distance of
    a unit's position on its top images from its mean position, / diag. 0 = an immobile unit."""
    idx, units = _kept(score, top_images, keep)
    p = pix.gather(0, idx.unsqueeze(-1).expand(-1, -1, 2))[:, units]   # (T, U, 2)
    return float((p - p.mean(0)).pow(2).sum(-1).mean(0).sqrt().mean() / diag)


def fewshot_localise(pix_shots, score_shots, lm_shots, pix_test, score_test, *, n_select: int = 20,
                     radius: float = 8.0, score_ref=None):
    """Spec 3(b). ``pix_shots`` (S, M, 2) pixels and ``score_shots`` (S, M) on the annotated images,
    ``lm_shots`` (S, 2) the part; the same on test images. A unit's fitness = mean normalised shot
    score * exp(-(|mean displacement|^2 + spread^2) / (2 radius^2)); the ``n_select`` fittest vote
    with their test scores. ``score_ref`` (M,): per-unit score scale (default: test mean). Returns (N, 2)."""
    ref = (score_test.mean(0) if score_ref is None else score_ref).clamp_min(1e-12)
    disp = lm_shots.unsqueeze(1) - pix_shots                        # (S, M, 2)
    mdisp = disp.mean(0)
    spread = (disp - mdisp).pow(2).sum(-1).mean(0)
    fit = (score_shots / ref).mean(0) * torch.exp(-(mdisp.pow(2).sum(-1) + spread) / (2 * radius ** 2))
    sel = torch.topk(fit, min(n_select, fit.numel())).indices
    w = (score_test[:, sel] / ref[sel]) * fit[sel]
    pred = ((pix_test[:, sel] + mdisp[sel]) * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-12)
    return pred


def normalised_distance(pred, gt, boxes) -> float:
    """Mean ||pred - gt|| / diagonal of the object box, over images with a valid landmark."""
    diag = (boxes[:, 2:] - boxes[:, :2]).norm(dim=-1)
    d = (pred - gt).norm(dim=-1) / diag
    return float(d[~torch.isnan(d)].mean())


def part_label_map(part_masks: torch.Tensor) -> torch.Tensor:
    """(N, P, S, S) bool masks -> (N, S, S) long labels (0 = background, i + 1 = part i)."""
    lab = torch.zeros(part_masks.shape[0], *part_masks.shape[-2:], dtype=torch.long)
    for i in range(part_masks.shape[1]):
        lab[part_masks[:, i]] = i + 1
    return lab


def _labels_at(labels, ii, p):
    S = labels.shape[-1]
    r = p[..., 0].round().long().clamp(0, S - 1)
    c = p[..., 1].round().long().clamp(0, S - 1)
    return labels[ii, r, c]


def purity(pix, score, labels, *, top_images: int = 20, keep: Optional[int] = None):
    """Purity proxy: mean over kept units of the share of top-T patch centres in the unit's
    majority part (background = a miss). Returns (mean purity, majority part index per kept unit
    (-1 = background), kept unit indices)."""
    idx, units = _kept(score, top_images, keep)
    pur, major = [], []
    for m in units.tolist():
        lab = _labels_at(labels, idx[:, m], pix[idx[:, m], m])
        parts = lab[lab > 0]
        if parts.numel() == 0:
            pur.append(0.0)
            major.append(-1)
            continue
        mode = int(torch.mode(parts).values)
        pur.append(float((lab == mode).float().mean()))
        major.append(mode - 1)
    return sum(pur) / len(pur), torch.tensor(major), units


def node_parts(pix, score, labels, *, top_images: int = 20):
    """Majority part (-1 = background) of every unit's top-T patch centres, (M,) long."""
    idx = _top(score, top_images)
    out = []
    for m in range(score.shape[1]):
        lab = _labels_at(labels, idx[:, m], pix[idx[:, m], m])
        out.append(int(torch.mode(lab).values) - 1)
    return torch.tensor(out)


def disentangle(node_pix, node_score, P: int, peak_pix, lm_a, lm_b, *, radius: float = 6.0,
                min_hit: float = 0.5):
    """Two identical parts a, b (e.g. the two wheels) on images of their category. Per filter c:
    hit rates (share of images whose unit position is within ``radius`` px of the landmark) of the
    filter's argmax and of its P nodes. Wheel filters: argmax hit on a or b >= ``min_hit``/2 each
    summed >= ``min_hit``. Returns a dict: n_wheel_filters, split_share (share of wheel filters with
    two different nodes hitting a and b >= min_hit each), node_min_hit and filter_min_hit (mean over
    wheel filters of min(best hit a, best hit b): nodes vs the filter's argmax), and per-filter detail."""
    C = peak_pix.shape[1]
    ha = lambda p, lm: ((p - lm.unsqueeze(1)).norm(dim=-1) <= radius).float().mean(0)  # noqa: E731
    fa, fb = ha(peak_pix, lm_a), ha(peak_pix, lm_b)                   # (C,)
    na = ha(node_pix, lm_a).view(C, P)
    nb = ha(node_pix, lm_b).view(C, P)
    wheel = ((fa + fb) >= min_hit).nonzero().flatten()
    split, nmin, fmin, detail = [], [], [], []
    for c in wheel.tolist():
        ia, ib = int(na[c].argmax()), int(nb[c].argmax())
        ok = ia != ib and na[c, ia] >= min_hit and nb[c, ib] >= min_hit
        split.append(float(ok))
        nmin.append(float(min(na[c, ia], nb[c, ib])))
        fmin.append(float(min(fa[c], fb[c])))
        detail.append({"filter": c, "node_a": c * P + ia, "node_b": c * P + ib, "hit_a": float(na[c, ia]),
                       "hit_b": float(nb[c, ib]), "filter_hit_a": float(fa[c]), "filter_hit_b": float(fb[c])})
    nan = float("nan")
    return {"n_wheel_filters": len(split), "split_share": sum(split) / len(split) if split else nan,
            "node_min_hit": sum(nmin) / len(nmin) if nmin else nan,
            "filter_min_hit": sum(fmin) / len(fmin) if fmin else nan, "detail": detail}


def node_patches(images, pix, score, unit: int, *, k: int = 6, size: int = 16):
    """The top-``k`` image patches (k, C, size, size) of one unit, centred at its pixel position."""
    idx = torch.topk(score[:, unit], min(k, score.shape[0])).indices
    h = size // 2
    padded = torch.nn.functional.pad(images, (h, h, h, h))
    out = []
    for i in idx.tolist():
        r, c = (int(round(float(v))) for v in pix[i, unit])
        r = min(max(r, 0), images.shape[-2] - 1)
        c = min(max(c, 0), images.shape[-1] - 1)
        out.append(padded[i, :, r:r + size, c:c + size])
    return torch.stack(out), idx


def instability_verdict(means) -> Dict[str, object]:
    """The paper's stability claim on this run: are graph nodes more stable than raw filter peaks?

    ``means``: mean over seeds per metric name (a dict or Series with ``instability/nodes`` and
    ``instability/filters``). Returns ``nodes``, ``filters`` (the two instabilities), ``lower``
    (True when the nodes' instability is below the filters') and ``verdict`` (``"lower"`` /
    ``"NOT lower"``, the notebook's wording)."""
    nodes, filters = means["instability/nodes"], means["instability/filters"]
    lower = bool(nodes < filters)
    return {"nodes": nodes, "filters": filters, "lower": lower, "verdict": "lower" if lower else "NOT lower"}
