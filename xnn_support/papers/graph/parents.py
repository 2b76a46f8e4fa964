"""Parent selection of the explanatory graph (Zhang, Cao, Shi, Wu, Zhu, AAAI 2018, arXiv 1708.01785;
spec ``01_explanatory_graph.md`` section 2.2(a)): which nodes of the layer above each node follows.
Used by :func:`xnn_support.papers.graph.method.mine` (re-exported there)."""
from __future__ import annotations

import torch

from ...core import validate as V

__all__ = ["select_parents"]


def select_parents(pix, score, pix_up, score_up, K: int, top_m: int = 300, batch_size: int = 64, *,
                   candidates: str = "active", bounds=None):
    """Parents of each child node (spec 2.2(a)): ``pix`` (N, M, 2) child positions in pixels,
    ``score`` (N, M); ``pix_up``, ``score_up`` the same for the layer above. Score of a candidate V'
    for V: sum_I s_V^I exp(-||d_V^I - d_V'^I||^2 / (2 m_V)), d = position minus its mean over images,
    m_V = mean squared distance over candidates and images. ``candidates="code"`` (the official
    code, B3): drop the half of the nodes above with the smallest positional variance and those whose
    mean position lies within 10% of the border (``bounds`` = ((row lo, row hi), (col lo, col hi)) in
    pixels), then keep the ``top_m`` with the largest total score, unweighted means. ``"active"``
    (default): the ``top_m`` most active nodes, score-weighted means and s_V s_V' weights. Both let a
    few always-on background nodes parent most nodes ("hubs"; "code" spreads the edges over ~4x more
    parents) and "active" localises better on our data (notebook 01's reproduction notes).
    Returns (M, K) indices into the layer above."""
    V.choice("candidates", candidates, ("code", "active"))
    V.positive_int("K", K)
    V.positive_int("top_m", top_m)
    V.positive_int("batch_size", batch_size)
    w = score / score.amax(0, keepdim=True).clamp_min(1e-12)
    wu = score_up / score_up.amax(0, keepdim=True).clamp_min(1e-12)
    total = score_up.sum(0)
    if candidates == "code":
        var = pix_up.var(0).sum(-1)
        ok = var >= var.median()
        if bounds is not None:
            mp = pix_up.mean(0)
            for ax, (lo, hi) in enumerate(bounds):
                mg = 0.1 * (hi - lo)
                ok &= (mp[:, ax] >= lo + mg) & (mp[:, ax] <= hi - mg)
        if int(ok.sum()) >= K:
            total = torch.where(ok, total, torch.full_like(total, -float("inf")))
        cand = torch.topk(total, min(top_m, int(torch.isfinite(total).sum()))).indices
        d = pix - pix.mean(0)
        du = (pix_up - pix_up.mean(0))[:, cand]
        wm, wu = torch.ones_like(w), torch.ones_like(wu[:, cand])
    else:
        cand = torch.topk(total, min(top_m, score_up.shape[1])).indices
        d = pix - (w.unsqueeze(-1) * pix).sum(0) / w.sum(0).clamp_min(1e-12).unsqueeze(-1)
        du = (pix_up - (wu.unsqueeze(-1) * pix_up).sum(0) / wu.sum(0).clamp_min(1e-12).unsqueeze(-1))[:, cand]
        wm, wu = w, wu[:, cand]
    N = d.shape[0]
    m = torch.zeros(d.shape[1], device=d.device)
    for s in range(0, N, batch_size):  # pass 1: m_V
        D = torch.cdist(d[s:s + batch_size], du[s:s + batch_size]).pow(2)   # (b, M, Mc)
        m += (wm[s:s + batch_size].unsqueeze(-1) * D).sum((0, 2))
    m = (m / (wm.sum(0) * du.shape[1]).clamp_min(1e-12)).clamp_min(1e-6)
    sc = torch.zeros(d.shape[1], du.shape[1], device=d.device)
    for s in range(0, N, batch_size):  # pass 2: the exp-sum
        D = torch.cdist(d[s:s + batch_size], du[s:s + batch_size]).pow(2)
        sc += (w[s:s + batch_size].unsqueeze(-1) * wu[s:s + batch_size].unsqueeze(1)
               * torch.exp(-D / (2 * m.view(1, -1, 1)))).sum(0)
    return cand[torch.topk(sc, min(K, sc.shape[1]), dim=1).indices]
