"""Loop reference of the explanatory graph's E step (tests and the mining benchmark).

Same equations as :func:`xnn_support.explanatory_graph.e_step`, written as loops over images,
filters and nodes like the official MEX kernels; kept apart so the main module stays short.
"""
from __future__ import annotations

import math

import torch

__all__ = ["e_step_loop", "cell_grid"]


def cell_grid(H, W, dev):
    """(H, W, 2) float coordinates (row, col) of every cell; shared by the vectorised and loop E steps."""
    r = torch.arange(H, dtype=torch.float32, device=dev)
    c = torch.arange(W, dtype=torch.float32, device=dev)
    return torch.stack(torch.meshgrid(r, c, indexing="ij"), -1)  # (H, W, 2)


def e_step_loop(A, mu, sigma, half, valid_tau=0.1):
    """Reference E step: loops over images, filters and nodes (like the official MEX kernels).
    Returns ``score`` (B, C, P), ``pos`` (B, C, P, 2), ``mean`` (B, C, P, 2) and ``var_sum`` (C, P)
    = sum over images and cells of w * ||x - mu||^2 (the M step's accumulator)."""
    B, C, H, W = A.shape
    P = mu.shape[2]
    g = cell_grid(H, W, A.device)
    score = torch.zeros(B, C, P)
    pos = torch.zeros(B, C, P, 2)
    mean = torch.zeros(B, C, P, 2)
    var_sum = torch.zeros(C, P)
    for i in range(B):
        priors, d2s = [], []
        for c in range(C):
            for p in range(P):
                d = g - mu[i, c, p]
                s2 = float(sigma[c, p]) ** 2
                d2 = (d ** 2).sum(-1)
                pr = torch.exp(-d2 / (2 * s2)) / (2 * math.pi * s2)
                priors.append(pr * (d.abs().amax(-1) <= half + 1e-6))
                d2s.append(d2)
        tau = valid_tau * float(torch.stack([q.sum() for q in priors]).mean())
        for c in range(C):
            S = sum(priors[c * P + p] for p in range(P))
            for p in range(P):
                w = priors[c * P + p] / (S + tau).clamp_min(1e-7) * A[i, c]
                sc = float(w.sum())
                score[i, c, p] = sc
                k = int(w.flatten().argmax())
                pos[i, c, p, 0], pos[i, c, p, 1] = k // W, k % W
                mean[i, c, p] = (w.unsqueeze(-1) * g).sum((0, 1)) / sc if sc > 1e-12 else mu[i, c, p]
                var_sum[c, p] += float((w * d2s[c * P + p]).sum())
    return score, pos, mean, var_sum
