"""Evaluation of notebook 07 (Interpreting CNNs via decision trees; spec ``07_decision_trees.md`` section 3).

Reconstructed definitions (the paper's tables are not transcribed; names from a paper summary, formulas from
the giam port unless stated, each checked against the spec):

* :func:`filter_parts` -- filters to parts: how often each filter's peak falls inside each part mask (within
  half a map cell) on held-out images; a filter belongs to its most frequent part when that part holds at
  least ``min_share`` of the images, else to ``"other"`` (giam matches peaks to part centres within 20 px).
* :func:`part_contributions` -- ``rho_part = A^T rho`` for a (D, K) assignment ``A``.
* :func:`jaccard_fitness` -- ``sum_d min(|rho_d|, max(0, rho_hat_d sign rho_d)) / sum_d max(...)``.
* :func:`evaluate_depths` -- per tree depth: prediction error ``E|y_hat - y| / (max y - min y)`` (all test
  images), classification accuracy of ``y_hat > 0`` next to the CNN's (``y > 0``), and on the positives the
  Jaccard fitness, the rationale error ``||rho_hat - rho|| / ||rho||``, the part-contribution error
  ``E sum_k |rho_hat_k - rho_k| / E |y|`` against the linear truth ``rho_k = sum_{d in k} g_d x_d`` and against
  the ablation ``q_k = y - y(part-k filters zeroed)`` (:func:`ablation_parts`), and the entropy of the part
  contributions (lower = more concentrated on few parts).
* :func:`mode_recovery` -- adjusted Rand index of a tree level against planted modes, beside k-means on x and
  on g with the same number of clusters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from torch import nn

from ...core.capture import resolve_layers
from ...core.utils import device_of
from ..icnn.metrics import layer_maps
from .method import DecisionTree, _score_fn

__all__ = ["FilterParts", "filter_parts", "part_contributions", "jaccard_fitness", "rationale_error",
           "part_entropy", "ablation_parts", "evaluate_depths", "mode_recovery", "node_parts", "support_jaccard"]


def _np(a) -> np.ndarray:
    return a.detach().cpu().double().numpy() if torch.is_tensor(a) else np.asarray(a, dtype=np.float64)


@dataclass
class FilterParts:
    """``names`` (K,) parts + ``"other"``; ``freq`` (D, K) share of images whose peak falls on each; ``label``
    (D,) the assigned part index; ``A`` (D, K) one-hot of ``label``."""
    names: List[str]
    freq: np.ndarray
    label: np.ndarray
    A: np.ndarray


def filter_parts(model: nn.Module, layer: str, images: torch.Tensor, part_masks: torch.Tensor,
                 part_names: Sequence[str], *, radius: Optional[int] = None, min_share: float = 0.1,
                 batch_size: int = 128) -> FilterParts:
    """Assign every filter of ``layer`` to the part its peak falls on most often over ``images`` (held-out
    positives; ``part_masks`` (N, P, S, S) bool), counting a hit when the peak's receptive-field centre is within
    ``radius`` px of the part (default: half the map's stride). A filter goes to its most frequent part if that
    part has at least ``min_share`` of the images, else to ``"other"``; parts absent from every mask are dropped.
    ``freq`` (D, K): share of images hitting each part, and (last column) hitting none."""
    if part_masks.dim() != 4 or part_masks.shape[0] != images.shape[0] or part_masks.shape[1] != len(part_names):
        raise ValueError(f"part_masks must be (N, P, H, W) with N = {images.shape[0]} images and P = "
                         f"{len(part_names)} part_names, got {tuple(part_masks.shape)}")
    maps = layer_maps(model, layer, images, batch_size=batch_size)      # (N, D, h, w)
    N, D, h, w = maps.shape
    H, W = part_masks.shape[-2:]
    rad = int(round(H / h / 2)) if radius is None else int(radius)
    present = part_masks.flatten(2).any(2).any(0)
    pm = part_masks[:, present].float()
    if rad > 0:
        pm = F.max_pool2d(pm, 2 * rad + 1, stride=1, padding=rad)
    idx = maps.flatten(2).argmax(2)
    r = ((idx // w).double().add(0.5).mul(H / h).sub(0.5)).round().long().clamp(0, H - 1)
    c = ((idx % w).double().add(0.5).mul(W / w).sub(0.5)).round().long().clamp(0, W - 1)
    hit = pm[torch.arange(N)[:, None].expand(N, D), :, r, c].double()   # (N, D, P')
    hit = hit * (maps.flatten(2).amax(2) > 0).double()[..., None]        # a filter that never fires hits nothing
    freq = hit.mean(0).numpy()
    none = (hit.sum(2) == 0).double().mean(0).numpy()[:, None]
    best = freq.argmax(1)
    label = np.where(freq.max(1) >= min_share, best, freq.shape[1])
    names = [n for n, p in zip(part_names, present.tolist()) if p] + ["other"]
    return FilterParts(names=names, freq=np.hstack([freq, none]), label=label, A=np.eye(len(names))[label])


def part_contributions(contrib, A) -> np.ndarray:
    """(N, K) per-part contributions ``contrib @ A`` of (N, D) filter contributions."""
    return _np(contrib) @ _np(A)


def jaccard_fitness(rho, rho_hat) -> np.ndarray:
    """(N,) Jaccard fitness of estimated contributions ``rho_hat`` against the truth ``rho`` (1: identical)."""
    rho, rh = _np(rho), _np(rho_hat)
    est = np.maximum(0.0, rh * np.sign(rho))
    num, den = np.minimum(np.abs(rho), est).sum(1), np.maximum(np.abs(rho), est).sum(1)
    return np.divide(num, den, out=np.ones_like(num), where=den > 0)


def rationale_error(rho, rho_hat) -> np.ndarray:
    """(N,) ``||rho_hat - rho|| / ||rho||``."""
    rho, rh = _np(rho), _np(rho_hat)
    return np.linalg.norm(rh - rho, axis=1) / np.maximum(np.linalg.norm(rho, axis=1), 1e-300)


def part_entropy(part_contrib) -> np.ndarray:
    """(N,) entropy of ``|rho_part|`` normalised over the K parts, divided by log K (0: one part, 1: uniform)."""
    p = np.abs(_np(part_contrib))
    p = p / np.maximum(p.sum(1, keepdims=True), 1e-300)
    ent = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(1)
    return ent / np.log(p.shape[1]) if p.shape[1] > 1 else np.zeros(len(p))


def ablation_parts(model: nn.Module, images: torch.Tensor, layer: str, target, A, *, contrast: Optional[int] = None,
                   norm=None, batch_size: int = 64) -> np.ndarray:
    """(N, K) ``q_k = y(x) - y(x with the filters of part k zeroed at layer)``, divided by ``norm`` (the
    rationales' ``||g||``) so it is in the units of the tree's y. ``A`` (D, K) assignment."""
    A = _np(A)
    mod = resolve_layers(model, [layer])[layer]
    score, dev = _score_fn(target, contrast), device_of(model)
    keep = torch.ones(A.shape[1] + 1, A.shape[0], device=dev)
    keep[1:] = torch.as_tensor(1.0 - A.T, dtype=torch.float32, device=dev)
    state = {"k": 0}

    def hook(_m, _a, out):
        s = keep[state["k"]]
        return out * (s[None, :, None, None] if out.dim() == 4 else s[None, :])

    was = model.training
    model.eval()
    h = mod.register_forward_hook(hook)
    try:
        ys = []
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                xb, row = images[s:s + batch_size].to(dev), []
                for k in range(A.shape[1] + 1):
                    state["k"] = k
                    row.append(score(model(xb)).double().cpu())
                ys.append(torch.stack(row, 1))
    finally:
        h.remove()
        model.train(was)
    Y = torch.cat(ys).numpy()
    q = Y[:, :1] - Y[:, 1:]
    return q / (_np(norm)[:, None] if norm is not None else 1.0)


def _depth_name(d) -> str:
    return "leaf" if d == "leaf" else str(int(d))


def evaluate_depths(tree: DecisionTree, x, g, y, positive, A, *, depths: Sequence = (1, 2, 3, 4, 5, 6, "leaf"),
                    ablation=None) -> pd.DataFrame:
    """One row per depth: the metrics of the module docstring for images with rationales ``x, g, y`` (test
    positives and negatives; ``positive`` (N,) bool), filter-to-part assignment ``A`` (D, K), and optionally the
    ablation truth (n_pos, K) of the positives. Returns a DataFrame (depth, n_nodes, pred_error, accuracy,
    cnn_accuracy, fitness, rationale_error, part_error, part_error_ablation, part_entropy)."""
    X, Gi, Y, pos = _np(x), _np(g), _np(y), np.asarray(positive, bool)
    A = _np(A)
    rho = Gi * X
    rho_k = part_contributions(rho[pos], A)
    span = max(Y.max() - Y.min(), 1e-300)
    n_at = {i + 1: len(lv) for i, lv in enumerate(tree.levels)}
    rows = []
    for d in depths:
        y_hat, contrib, nodes = tree.explain(X, Gi, d)
        rh_k = part_contributions(contrib[pos], A)
        row = dict(depth=_depth_name(d), n_nodes=n_at.get(d, len(np.unique(nodes))) if d != "leaf" else tree.n_leaves,
                   pred_error=float(np.mean(np.abs(y_hat - Y)) / span),
                   accuracy=float(np.mean((y_hat > 0) == pos)), cnn_accuracy=float(np.mean((Y > 0) == pos)),
                   fitness=float(jaccard_fitness(rho[pos], contrib[pos]).mean()),
                   rationale_error=float(rationale_error(rho[pos], contrib[pos]).mean()),
                   part_error=float(np.abs(rh_k - rho_k).sum(1).mean() / np.abs(Y[pos]).mean()),
                   part_entropy=float(part_entropy(rh_k).mean()))
        if ablation is not None:
            row["part_error_ablation"] = float(np.abs(rh_k - _np(ablation)).sum(1).mean() / np.abs(Y[pos]).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def mode_recovery(tree: DecisionTree, modes, x, g, *, depth: int = 2, seed: int = 0) -> Dict[str, float]:
    """ARI of the tree's nodes at ``depth`` (ancestor of each training leaf) against ``modes`` (n_leaves,),
    beside k-means (``n_init=10``) on x and on g with the same number of clusters (at least 2) and with as many
    clusters as planted modes (``*_m``); ``purity``: share of leaves in their node's majority mode."""
    modes = np.asarray(modes)
    lab = tree.ancestor_at(depth)
    k, m = max(2, len(np.unique(lab))), max(2, len(np.unique(modes)))
    km = lambda z, c: KMeans(min(c, len(z)), n_init=10, random_state=seed).fit_predict(_np(z))  # noqa: E731
    ari = lambda z, c: float(adjusted_rand_score(modes, km(z, c)))  # noqa: E731
    pur = sum(np.bincount(modes[lab == v]).max() for v in np.unique(lab)) / len(modes)
    return dict(k=int(len(np.unique(lab))), ari_tree=float(adjusted_rand_score(modes, lab)),
                ari_kmeans_x=ari(x, k), ari_kmeans_g=ari(g, k), ari_kmeans_x_m=ari(x, m), ari_kmeans_g_m=ari(g, m),
                purity=float(pur))


def node_parts(tree: DecisionTree, x, A, nodes: Optional[Sequence[int]] = None) -> np.ndarray:
    """(len(nodes), K) mean over each node's training leaves of ``A^T (w_v o x_I)``, as shares of the summed
    absolute part contributions (what the tree figure prints as a node's top parts)."""
    X, A = _np(x), _np(A)
    nodes = range(len(tree.w)) if nodes is None else nodes
    out = []
    for v in nodes:
        pc = part_contributions(X[tree.members[v]] * tree.w[v], A).mean(0)
        out.append(pc / max(np.abs(pc).sum(), 1e-300))
    return np.array(out)


def support_jaccard(w, support) -> float:
    """Jaccard index of ``w != 0`` (|w| above 1e-6 of its max) and a planted boolean ``support`` (D,)."""
    w = np.abs(_np(w))
    s = w > 1e-6 * max(w.max(), 1e-300)
    sup = np.asarray(support, bool)
    return float((s & sup).sum() / max((s | sup).sum(), 1))
