"""Explanatory graph of a CNN's conv-layer knowledge: mining (EM, top-down) and inference.

Citation: Quanshi Zhang, Ruiming Cao, Feng Shi, Ying Nian Wu, Song-Chun Zhu, "Interpreting CNN
Knowledge via an Explanatory Graph", AAAI 2018 (arXiv 1708.01785); official MATLAB code
``zqs1022/explanatoryGraph``. Spec: ``shared/papers/01_explanatory_graph.md``.

What is reproduced. Each filter's (ReLU'd, per-channel normalised) feature map is a distribution
of "activation entities" F(x); it is explained by a mixture of P patterns (nodes) of that filter
plus a 'none' component. A node V of a lower layer has K parents V' in the layer above; its prior
position in image I is the mean of ``parent position + Delta_{V'->V}`` (mu_{V'->V} of the paper),
with a learned isotropic std sigma_V. Mining is top-down, one EM loop per layer:

* :func:`e_step` -- prior P(p_x|V) = N(p_x | mu_V^I, sigma_V^2) on a window of half-width h
  (spec 2.2(b)), competition of the filter's nodes S(x) = sum_V' prior_V'(x) and the 'none' mass
  tau_I = valid_tau * mean_V sum_x prior_V(x) (spec 2.2(c), code form, bug B4 kept as documented),
  responsibility r_V(x) = prior_V(x) / (S(x) + tau_I), weight w_V(x) = r_V(x) F(x); node score
  s_V^I = sum_x w_V(x), node position = argmax_x w_V(x). Vectorised over images, filters, nodes
  and positions (dense maps instead of the 36 candidates: every cell of the window is a candidate).
* :func:`_m_step` -- Delta_{V'->V} = weighted mean over images of (pos_V - pos_V'), weights s_V^I;
  sigma_V^2 = weighted mean of ||x - mu_V||^2 / 2 clipped to [max/10, max], max = n / sqrt(P)
  (bug B5: the code's radial std; here per axis).
* :func:`select_parents` -- parent score sum_I s_V^I s_V'^I exp(-||d_V - d_V'||^2 / 2m_V) over
  centred pixel positions (spec 2.2(a)); the K best of the top-M most active parent nodes
  (``candidates="code"``: the code's filtered candidates and child-score-only weights).
* :func:`e_step_loop` -- a per-image, per-filter loop reference of the E step (tests, bench).

Deviations and fixed bugs of the official code: B2 (unit mismatch between parent and child maps)
fixed: all displacements are converted through pixel geometry (``stride``, ``offset``) to the
child's cells; B6: F(x) = max(x, 0) / std over the mining images (no ImageNet negatives; eps for
dead units), fp32 storage instead of uint8; B7: window and prior share one (unrounded) centre;
B10 does not arise (dense candidates); B9: the first iteration of each lower layer runs
without parents; parents are re-selected every later iteration as in the code (``reselect=False``:
once), displacements Delta are re-estimated every iteration; B3 (variance/border filtering of
candidates) optional (``candidates="code"``), off by default: it localised worse on our data;
B1 (flips): the per-image flip choice lives in :func:`xnn_support.graph_experiments.choose_flips`.
Parent weights are equal (lambda = 1/K), not the code's 1/sigma^2 weighting.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ...core import validate as V
from .loop import cell_grid as _grid, e_step_loop  # noqa: F401  (e_step_loop: re-exported loop reference)
from .parents import select_parents

__all__ = ["GraphLayer", "ExplanatoryGraph", "mine", "e_step", "e_step_loop", "select_parents",
           "normalise_maps"]


@dataclass
class GraphLayer:
    """One graph layer. Positions are (row, col) in this layer's cells, 0-based; pixel = offset + stride*cell."""
    name: str
    C: int
    P: int
    H: int
    W: int
    stride: float
    offset: float
    scale: torch.Tensor                      # (C,) feature normalisation
    coord: torch.Tensor                      # (C, P, 2) mean position
    sigma: torch.Tensor                      # (C, P) std (cells)
    half: int                                # half window (cells)
    parents: Optional[torch.Tensor] = None   # (C*P, K) flat node index in the layer above
    delta: Optional[torch.Tensor] = None     # (C*P, K, 2) displacement parent -> node, this layer's cells
    valid_tau: float = 0.1

    @property
    def n_nodes(self) -> int:
        return self.C * self.P


@dataclass
class Inference:
    """Per layer: ``pos`` (N, C*P, 2) node positions (row, col, cells), ``score`` (N, C*P)."""
    pos: Dict[str, torch.Tensor] = field(default_factory=dict)
    score: Dict[str, torch.Tensor] = field(default_factory=dict)


def normalise_maps(x: torch.Tensor, scale: Optional[torch.Tensor] = None, eps: float = 1e-6):
    """F(x) = max(x, 0) / scale_c, scale_c = std of the channel over the batch (B6). Returns (F, scale)."""
    if x.dim() != 4:
        raise ValueError(f"feature maps must be (N, C, H, W), got shape {tuple(x.shape)}")
    x = x.float().clamp_min(0)
    if scale is None:
        scale = x.transpose(0, 1).reshape(x.shape[1], -1).std(1) + eps
    return x / scale.to(x.device).view(1, -1, 1, 1), scale


def _prior_1d(mu, sigma, half, H, W):
    """Separable factors of the window-truncated 2-D Gaussian prior of nodes centred at mu
    (B, C, P, 2): rows (B, C, P, H) and cols (B, C, P, W); prior = rows[..., :, None] * cols[..., None, :]."""
    s2 = sigma.pow(2).unsqueeze(0).unsqueeze(-1)                      # (1, C, P, 1)
    out = []
    for ax, n in ((0, H), (1, W)):
        d = torch.arange(n, dtype=torch.float32, device=mu.device) - mu[..., ax:ax + 1]
        g = torch.exp(-d.pow(2) / (2 * s2)) * (d.abs() <= half + 1e-6)
        out.append((g, d.pow(2)))
    (gr, dr2), (gc, dc2) = out
    return gr / (2 * math.pi * s2), gc, dr2, dc2


def e_step(A: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, half: int, valid_tau: float = 0.1):
    """Vectorised E step. ``A`` (B, C, H, W) entities F(x); ``mu`` (B, C, P, 2) prior centres (cells);
    ``sigma`` (C, P). Returns ``score`` (B, C, P), ``pos`` (B, C, P, 2) argmax of w = r_V(x) F(x),
    ``mean`` (B, C, P, 2) w-weighted mean position and ``var_sum`` (C, P) = sum over images and
    cells of w ||x - mu||^2 (the M step's accumulator). The prior is separable (rows x cols), so
    only the responsibilities need full (B, C, P, H, W) tensors."""
    B, C, H, W = A.shape
    if mu.shape[:2] != (B, C) or mu.shape[-1] != 2:
        raise ValueError(f"mu must be (B={B}, C={C}, P, 2), got {tuple(mu.shape)}")
    gr, gc, dr2, dc2 = _prior_1d(mu, sigma, half, H, W)
    mass = gr.sum(-1) * gc.sum(-1)                                    # (B, C, P)
    tau = valid_tau * mass.mean((1, 2)).view(B, 1, 1, 1)
    denom = (torch.einsum("bcph,bcpw->bchw", gr, gc) + tau).clamp_min(1e-7)   # S(x) + tau
    R = A / denom                                                     # (B, C, H, W)
    wr = gr * torch.einsum("bcpw,bchw->bcph", gc, R)                  # row marginal of w
    wc = gc * torch.einsum("bcph,bchw->bcpw", gr, R)                  # col marginal of w
    w = gr.unsqueeze(-1) * gc.unsqueeze(-2) * R.unsqueeze(2)          # only for the argmax
    score = wr.sum(-1)
    idx = w.flatten(-2).argmax(-1)
    pos = torch.stack([(idx // W).float(), (idx % W).float()], -1)
    ok = score > 1e-12
    sc = score.clamp_min(1e-12)
    mean = torch.stack([(wr * torch.arange(H, device=A.device)).sum(-1) / sc,
                        (wc * torch.arange(W, device=A.device)).sum(-1) / sc], -1)
    mean = torch.where(ok.unsqueeze(-1), mean, mu)
    var_sum = ((wr * dr2).sum(-1) + (wc * dc2).sum(-1)).sum(0)
    return score, pos, mean, var_sum


# ----------------------------------------------------------------------------- the graph
class ExplanatoryGraph:
    """Mined graph: ``layers`` (OrderedDict name -> :class:`GraphLayer`, bottom first, top last)."""

    def __init__(self, layers: "OrderedDict[str, GraphLayer]"):
        self.layers = layers

    @property
    def nodes(self) -> List[dict]:
        """Every node: layer, filter, index, coord, sigma, parents [(layer, flat index)], displacement."""
        out, names = [], list(self.layers)
        for li, (name, L) in enumerate(self.layers.items()):
            up = names[li + 1] if li + 1 < len(names) else None
            for c in range(L.C):
                for p in range(L.P):
                    k = c * L.P + p
                    par = [] if L.parents is None else [(up, int(j)) for j in L.parents[k]]
                    dl = [] if L.delta is None else L.delta[k].tolist()
                    out.append({"layer": name, "filter": c, "index": p, "flat": k,
                                "coord": L.coord[c, p].tolist(), "sigma": float(L.sigma[c, p]),
                                "parents": par, "displacement": dl})
        return out

    def children(self, layer: str, flat: int) -> List[Tuple[str, int]]:
        names = list(self.layers)
        i = names.index(layer)
        if i == 0:
            return []
        L = self.layers[names[i - 1]]
        if L.parents is None:
            return []
        ks = (L.parents == flat).any(1).nonzero().flatten().tolist()
        return [(names[i - 1], k) for k in ks]

    @staticmethod
    def _mu(L: GraphLayer, up: Optional[GraphLayer], up_pos, B):
        """Prior centres (B, C, P, 2): mean over parents of (parent position + Delta), child cells."""
        if L.parents is None or up is None:
            return L.coord.unsqueeze(0).expand(B, -1, -1, -1)
        pp = up_pos[:, L.parents]                                      # (B, C*P, K, 2) parent cells
        pp = (up.offset + up.stride * pp - L.offset) / L.stride          # -> child cells (B2 fixed)
        mu = (pp + L.delta.unsqueeze(0)).mean(2)
        return mu.view(B, L.C, L.P, 2)

    def infer(self, feature_maps: Mapping[str, torch.Tensor], *, batch_size: int = 64) -> Inference:
        """Node positions (row, col, 0-based cells) and scores on new images, top layer first."""
        names = list(self.layers)
        V.positive_int("batch_size", batch_size)
        missing = [n for n in names if n not in feature_maps]
        if missing:
            raise ValueError(f"feature_maps lacks graph layers {missing}; has {list(feature_maps)}; pass the "
                             "maps of every mined layer")
        for n in names:
            V.finite_tensor(f"feature_maps[{n!r}]", feature_maps[n], dims=(4,), floating=False,
                            what="(N, C, H, W) maps")
        N = feature_maps[names[-1]].shape[0]
        res = Inference()
        for s in range(0, N, batch_size):
            up_pos, up = None, None
            for name in reversed(names):
                L = self.layers[name]
                x = feature_maps[name][s:s + batch_size]
                if tuple(x.shape[1:]) != (L.C, L.H, L.W):
                    raise ValueError(f"layer {name}: expected (N, {L.C}, {L.H}, {L.W}), got {tuple(x.shape)}")
                A, _ = normalise_maps(x, L.scale)
                dev = A.device
                self._to(dev)
                mu = self._mu(L, up, up_pos, A.shape[0])
                sc, pos, _, _ = e_step(A, mu, L.sigma, L.half, L.valid_tau)
                up_pos, up = pos.flatten(1, 2), L
                res.pos.setdefault(name, []).append(up_pos.cpu())
                res.score.setdefault(name, []).append(sc.flatten(1).cpu())
        res.pos = {k: torch.cat(v) for k, v in res.pos.items()}
        res.score = {k: torch.cat(v) for k, v in res.score.items()}
        return res

    def _to(self, dev):
        for L in self.layers.values():
            for a in ("scale", "coord", "sigma", "parents", "delta"):
                t = getattr(L, a)
                if t is not None and t.device != dev:
                    setattr(L, a, t.to(dev))

    def pixels(self, layer: str, pos: torch.Tensor) -> torch.Tensor:
        """Cells -> input pixels (row, col) through the layer's receptive-field geometry."""
        L = self.layers[layer]
        return L.offset + L.stride * pos


# ----------------------------------------------------------------------------- mining (parents: .parents)
def _check_maps(feature_maps, geometry):
    """{layer: (stride, offset)} after checking the maps (non-empty ordered dict of finite (N, C, H, W)
    tensors of the same N >= 1) and their geometry (stride > 0, offset finite)."""
    if not isinstance(feature_maps, Mapping) or not feature_maps:
        raise V.fail("feature_maps", "a non-empty ordered dict layer -> (N, C, H, W)",
                     V.Shown(type(feature_maps).__name__),
                     "pass {layer: maps}, bottom layer first, top layer last (e.g. graph metrics' conv_maps)")
    N = None
    for k, v in feature_maps.items():
        V.finite_tensor(f"feature_maps[{k!r}]", v, dims=(4,), floating=False, what="(N, C, H, W) maps",
                        fix="pass ReLU'd conv feature maps of the mining images (drop or fix NaN/inf images first)")
        if N is not None and v.shape[0] != N:
            raise V.fail("feature_maps", "maps of the same images in every layer",
                         V.Shown(f"{k!r} has {v.shape[0]} images vs {N}"), "pass every layer's maps of the same images")
        N = v.shape[0]
    geo = {}
    for k, v in feature_maps.items():
        g = (geometry or {}).get(k, getattr(v, "geometry", None))
        if g is None:
            raise ValueError(f"no geometry for layer {k!r}: pass geometry={{layer: (stride, offset)}} "
                             "(see graph_eval.receptive_field) or a tensor attribute .geometry")
        g = (float(g), (float(g) - 1) / 2) if isinstance(g, (int, float)) else (float(g[0]), float(g[1]))
        V.positive(f"geometry[{k!r}] stride", g[0], fix="pass the layer's stride in input pixels (> 0), e.g. "
                                                         "from receptive_field(model, layers)")
        V.number(f"geometry[{k!r}] offset", g[1])
        geo[k] = g
    return geo


def _check_mine_args(names, *, nodes_per_filter, density, parents, iters, top_m, valid_tau, max_range,
                     candidates, batch_size, seed, engine) -> None:
    """The scalar arguments of :func:`mine` (ValueError naming the argument and the fix)."""
    V.choice("engine", engine, ("vectorised", "loop"))
    V.choice("candidates", candidates, ("code", "active"))
    for nm, v in (("parents", parents), ("iters", iters), ("batch_size", batch_size), ("top_m", top_m)):
        V.positive_int(nm, v)
    V.non_negative_int("seed", seed)
    V.non_negative("valid_tau", valid_tau)
    V.in_range("max_range", max_range, 0, 1, low_open=True)
    if nodes_per_filter is not None:
        if not isinstance(nodes_per_filter, (list, tuple)) or len(nodes_per_filter) != len(names):
            raise V.fail("nodes_per_filter", f"one count per layer ({len(names)})", nodes_per_filter,
                         "pass a list of positive counts in the maps' order, or None for the density rule")
        for p in nodes_per_filter:
            V.positive_int("nodes_per_filter", p, fix="pass a count >= 1 for every layer, or None for the density rule")
    if not isinstance(density, (list, tuple)) or not density:
        raise V.fail("density", "a non-empty sequence of fractions", density, "pass e.g. density=(0.05, 0.1)")
    for d in density:
        V.in_range("density", d, 0, 1, low_open=True,
                   fix="pass fractions of the map's cells in (0, 1], e.g. (0.05, 0.1)")


def mine(feature_maps: Mapping[str, torch.Tensor], *, geometry: Optional[Mapping] = None,
         nodes_per_filter: Optional[Sequence[int]] = None, density: Sequence[float] = (0.05, 0.1),
         parents: int = 3, iters: int = 10, top_m: int = 150, reselect: bool = True,
         valid_tau: float = 0.1, max_range: float = 0.3, candidates: str = "active",
         batch_size: int = 64, seed: int = 0, engine: str = "vectorised") -> ExplanatoryGraph:
    """Mine an explanatory graph top-down from ``feature_maps`` (ordered dict layer -> (N, C, H, W),
    bottom first, **top layer last**). ``geometry``: {layer: stride} or {layer: (stride, offset)} in
    input pixels (pixel = offset + stride * cell), or a ``.geometry`` attribute on each tensor.
    ``nodes_per_filter``: P per layer (in the dict's order); default ceil(H*W*density) with density
    the last value of ``density`` for the top layer and the first for the others (spec: 0.05 / 0.1).
    ``parents``: K. ``iters``: EM iterations per layer. ``top_m``: parent candidates (the most active
    nodes above; ``candidates="code"`` filters them as the official code, see :func:`select_parents`). ``reselect``: re-select parents every iteration >= 2 like the code (B9; False:
    select once after the parent-free first iteration, Delta still re-estimated each iteration). ``max_range``: the search window's
    half-width is at most max_range * n / 2 cells (code: 0.3). ``engine``: ``"vectorised"`` or ``"loop"``
    (reference E step, for benchmarks). Returns an :class:`ExplanatoryGraph`."""
    geo = _check_maps(feature_maps, geometry)
    names = list(feature_maps)
    _check_mine_args(names, nodes_per_filter=nodes_per_filter, density=density, parents=parents, iters=iters,
                     top_m=top_m, valid_tau=valid_tau, max_range=max_range, candidates=candidates,
                     batch_size=batch_size, seed=seed, engine=engine)
    gen = torch.Generator().manual_seed(int(seed))
    layers: "OrderedDict[str, GraphLayer]" = OrderedDict()
    up_res = None  # (pos (N, M, 2) cells, score (N, M)) of the layer above
    up_layer = None
    for li in reversed(range(len(names))):
        name = names[li]
        X = feature_maps[name]
        top = li == len(names) - 1
        P = int(nodes_per_filter[li]) if nodes_per_filter is not None else \
            max(1, math.ceil(X.shape[2] * X.shape[3] * (density[-1] if top else density[0])))
        L, A, n, smax = _init_layer(X, name, P, geo[name], gen, max_range=max_range, valid_tau=valid_tau)
        K = min(parents, up_layer.n_nodes) if up_layer is not None else 0
        # loop-carried: the previous iteration's E step (set in iteration 0, read from iteration 1 on)
        cur_mean = cur_score = cur_pos = None
        for it in range(iters):
            if K and (it == 1 or (reselect and it > 1)):  # B9: first iteration without parents
                pix = L.offset + L.stride * cur_mean
                pix_up = up_layer.offset + up_layer.stride * up_res[0]
                bounds = [(up_layer.offset, up_layer.offset + up_layer.stride * (up_layer.H - 1)),
                          (up_layer.offset, up_layer.offset + up_layer.stride * (up_layer.W - 1))]
                L.parents = select_parents(pix, cur_score, pix_up, up_res[1], K, top_m, batch_size,
                                           candidates=candidates, bounds=bounds)
            if K and it >= 1:
                L.delta = _displacements(L, up_layer, up_res, cur_mean, cur_score)
            acc, acc_u, acc_v, cur_mean, cur_score, cur_pos = _e_pass(L, A, up_layer, up_res, X.device,
                                                                      batch_size, valid_tau, engine)
            _m_step(L, acc, acc_u, acc_v, n, smax, max_range)
        if K and L.parents is not None:  # final displacements from the last E step
            L.delta = _displacements(L, up_layer, up_res, cur_mean, cur_score)
        # the layer below follows the positions of this layer's last E step (spec 2.2: code order)
        up_res = (cur_pos, cur_score)
        up_layer = L
        layers[name] = L
    return ExplanatoryGraph(OrderedDict((k, layers[k]) for k in names))


def _init_layer(X, name, P, geo, gen, *, max_range, valid_tau):
    """A graph layer before EM: P nodes per filter at random cells, initial sigma and window.
    Returns (layer, normalised maps, n = max(H, W), the sigma bound smax)."""
    N, C, H, W = X.shape
    dev = X.device
    P = min(P, H * W)
    A, scale = normalise_maps(X)
    n = max(H, W)
    smax = n / math.sqrt(P)
    cells = torch.stack([torch.randperm(H * W, generator=gen)[:P] for _ in range(C)])
    coord = torch.stack([(cells // W).float(), (cells % W).float()], -1).to(dev)
    sigma = torch.full((C, P), 0.15 * n, device=dev).clamp(smax / 10, smax)
    half = max(1, round(min(max_range * n / 2, 3 * 0.15 * n)))
    L = GraphLayer(name, C, P, H, W, geo[0], geo[1], scale, coord, sigma, half, valid_tau=valid_tau)
    return L, A, n, smax


def _displacements(L, up_layer, up_res, cur_mean, cur_score):
    """Delta (C*P, K, 2): score-weighted mean over images of node position minus parent position (child cells)."""
    N = cur_score.shape[0]
    pp = (up_layer.offset + up_layer.stride * up_res[0][:, L.parents] - L.offset) / L.stride
    wgt = cur_score / cur_score.sum(0, keepdim=True).clamp_min(1e-12)       # (N, M)
    return (wgt.view(N, -1, 1, 1) * (cur_mean.unsqueeze(2) - pp)).sum(0)


def _e_pass(L, A, up_layer, up_res, dev, batch_size, valid_tau, engine):
    """One E step over all images in batches: the M-step sums (acc, acc_u, acc_v) and the per-image
    node means, scores and positions (N, C*P, ...)."""
    N, C, P = A.shape[0], L.C, L.P
    acc = torch.zeros(C, P, device=dev)
    acc_u = torch.zeros(C, P, 2, device=dev)
    acc_v = torch.zeros(C, P, device=dev)
    means, scores, poss = [], [], []
    for s in range(0, N, batch_size):
        a = A[s:s + batch_size]
        B = a.shape[0]
        if L.parents is not None:
            mu = ExplanatoryGraph._mu(L, up_layer, up_res[0][s:s + batch_size], B)
        else:
            mu = L.coord.unsqueeze(0).expand(B, -1, -1, -1)
        if engine == "loop":
            sc, pos, mean, vs = e_step_loop(a, mu, L.sigma, L.half, valid_tau)
            acc_v += vs.to(dev)
            sc, pos, mean = sc.to(dev), pos.to(dev), mean.to(dev)
        else:
            sc, pos, mean, vs = e_step(a, mu, L.sigma, L.half, valid_tau)
            acc_v += vs
        acc += sc.sum(0)
        acc_u += (sc.unsqueeze(-1) * mean).sum(0)
        means.append(mean.flatten(1, 2))
        scores.append(sc.flatten(1))
        poss.append(pos.flatten(1, 2))
    return acc, acc_u, acc_v, torch.cat(means), torch.cat(scores), torch.cat(poss)


def _m_step(L, acc, acc_u, acc_v, n, smax, max_range):
    """M step in place: node coordinates, sigmas (bounded by smax) and the search window."""
    L.coord = acc_u / acc.clamp_min(1e-12).unsqueeze(-1)
    L.sigma = (acc_v / (2 * acc.clamp_min(1e-12))).sqrt().clamp(smax / 10, smax)
    L.half = max(1, round(min(max_range * n / 2, 3 * float(L.sigma.max()))))
