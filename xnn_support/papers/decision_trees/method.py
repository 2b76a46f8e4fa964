"""Interpreting CNNs via decision trees: rationales, the tree, and explanations.

Citation: Quanshi Zhang, Yu Yang, Haotian Ma, Ying Nian Wu, "Interpreting CNNs via Decision Trees", CVPR 2019,
pp. 6261-6270, arXiv 1802.00121 (v2). **No official code exists**: this is a reconstruction from the paper's
description as summarised in the spec (``shared/papers/07_decision_trees.md``), which read the two incomplete
third-party ports (vyshka97/cnn_to_tree, giamdalessandro/neural_networks_project_2020) and marks every
unverified recollection of the paper.

What is reproduced
* Step 2, per-image local linearisation of the class score on an interpretable top conv layer
  (:func:`rationales`): ``x_d = sum_ij x_ijd / s_d``, ``g_d = (s_d / n^2) sum_ij dy/dx_ijd`` with ``s_d`` the
  filter's mean activation over the positive images, then ``g <- g/||g||``, ``y <- y/||g||``, ``b = y - g.x``.
* Steps 3-4, the tree (:func:`build_tree`, engine in :mod:`.greedy`): leaves = positive images (``w = g_I``,
  ``b = b_I``, so leaves reproduce y exactly); greedy merging of the root's children by the gain of the
  likelihood ``log P(X|Q) = sum_I [gamma h_{v(I)}(x_I) - log Theta]`` (softmax over images, ``gamma = 1/E[y]``)
  plus the prior ``-beta |children of root|``; merged direction in closed form, sparse ``alpha`` by LASSO with
  ``lambda = lambda0 sqrt(|Omega_u|)``.
* Step 5, explanations (:meth:`DecisionTree.explain`): from the root, the child with the largest cosine between
  the image's rationale ``g_I`` and the node's ``w_v``; at a depth, ``y_hat = w.x + b`` and the per-filter
  contributions ``w o x`` (per-part contributions: :mod:`.metrics`).

Deviations and choices the paper leaves open (each an option)
* ``rationales(reduce="max")``: ``x_d`` is the map's maximum and ``g_d`` the summed gradient, which makes
  ``g.x`` exact for a global-max-pooled head (the spatial sum, ``"sum"``, is the paper's and the default);
  ``unit=False`` skips the division of ``g`` and ``y`` by ``||g||`` (that normalisation follows a port).
* ``likelihood="gaussian"``: ``log P(X|Q) = -sum_I (h_{v(I)}(x_I) - y_I)^2 / (2 var(y))``, the spec's
  alternative, because the softmax form can reward under-fitting merges (spec 2.3).
* ``alpha="continuous"`` keeps the LASSO coefficients (``w = alpha o g_u``); ``"support"`` binarises them as
  alpha is binary in the paper's definition.
* Pair gains in two stages (approximate with ``alpha = 1`` for every pair, cached; exact LASSO for the ``top_k``
  best), a cap ``max_merges``, ``per_image=True`` ranks gains divided by |Omega_u| (vyshka's heuristic).
* Learning assigns an image to its ancestor (the root child above its leaf); explaining uses the cosine path.
* The root gets a mode fitted over all leaves, so depth 1 explains too (the paper's root is a container).
* ``seed`` only permutes the order in which exact ties between pairs are broken.

Equations -> functions: linearisation (x_d, g_d, b) :func:`rationales`; likelihood, prior and gain
:meth:`.greedy.Merger.gain` (pieces ``_pieces``/``_row``); ``g_u`` :func:`.greedy.merged_direction`; LASSO of
``alpha, b`` :func:`.greedy.fit_node`; node choice by cosine, ``y_hat``, ``w o x`` :meth:`DecisionTree.explain`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch
from torch import nn

from ...core.capture import capture
from ...core.utils import device_of
from .greedy import ALPHAS, LIKELIHOODS, Merger, fit_node, merged_direction

__all__ = ["Rationales", "rationales", "DecisionTree", "build_tree", "fit_node", "merged_direction",
           "LIKELIHOODS", "ALPHAS"]

Target = Union[int, Callable[[torch.Tensor], torch.Tensor]]


class Rationales(tuple):
    """``(x, g, y, b)`` (unpacks like the contract says) with more read-outs as attributes: ``scale`` (D,)
    the ``s_d`` used, ``norm`` (N,) ``||g||`` before normalising, ``divisor`` (N,) what g and y were divided by
    (``norm``, or 1 with ``unit=False``), ``score`` (N,) the raw score, ``gap`` (N,)
    ``e_I = sum_ijd (G_ijd - mean_ij G_d) x_ijd / ||g||``: what the mean-field ``g.x`` misses (0 for a
    global-average-pooled head)."""

    def __new__(cls, x, g, y, b, **info):
        self = super().__new__(cls, (x, g, y, b))
        self.__dict__.update(info)
        return self

    x = property(lambda self: self[0])
    g = property(lambda self: self[1])
    y = property(lambda self: self[2])
    b = property(lambda self: self[3])


def _score_fn(target: Target, contrast: Optional[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(target):
        return target
    if not isinstance(target, int) or isinstance(target, bool):
        raise ValueError(f"target must be a class index (int) or a callable(output) -> (B,) score, got {target!r}")
    if contrast is None:
        return lambda out: out[:, target]
    return lambda out: out[:, target] - out[:, contrast]


def _sums(model, images, layer, score, batch_size, reduce="sum"):
    """Per image: sum_ij x (N, D) and mean_ij G (N, D) (``reduce="max"``: max_ij x and sum_ij G), the exact
    sum_ijd G x (N,), the score (N,), and n^2."""
    dev = device_of(model)
    Sx, Gm, exact, ys = [], [], [], []
    with capture(model, [layer], detach=False, clone=False) as cap:
        for s in range(0, len(images), batch_size):
            xb = images[s:s + batch_size].to(dev).requires_grad_(True)
            with torch.enable_grad():
                y = score(model(xb))
                feat = cap[layer]
                if not torch.is_tensor(feat) or feat.dim() not in (2, 4):
                    raise ValueError(f"layer {layer!r} must output a (B, D, h, w) map or (B, D) features, got "
                                     f"{type(feat).__name__} {tuple(getattr(feat, 'shape', ()))}")
                if y.shape != (xb.shape[0],):
                    raise ValueError(f"target must give one score per image, (B,) = ({xb.shape[0]},), got "
                                     f"{tuple(y.shape)}; pass an int class index or a callable returning (B,)")
                G, = torch.autograd.grad(y.sum(), feat)
            f, G = feat.detach().double(), G.double()
            if f.dim() == 2:
                f, G = f[..., None, None], G[..., None, None]
            Sx.append((f.sum((2, 3)) if reduce == "sum" else f.amax((2, 3))).cpu())
            Gm.append((G.mean((2, 3)) if reduce == "sum" else G.sum((2, 3))).cpu())
            exact.append((f * G).sum((1, 2, 3)).cpu())
            ys.append(y.detach().double().cpu())
    return torch.cat(Sx), torch.cat(Gm), torch.cat(exact), torch.cat(ys), f.shape[-1] * f.shape[-2]


def rationales(model: nn.Module, images: torch.Tensor, layer: str, target: Target, *,
               contrast: Optional[int] = None, batch_size: int = 64, scale: Optional[torch.Tensor] = None,
               positives: Optional[torch.Tensor] = None, reduce: str = "sum", unit: bool = True) -> Rationales:
    """Per-image linearisation ``y ~ g.x + b`` of a class score on ``layer`` (step 2, see the module docstring).

    ``layer``: dotted name of the (masked, post-ReLU) top conv layer; ``target``: class index (score = its
    logit; with ``contrast=c`` the logit difference ``logit[target] - logit[c]``) or ``callable(output) -> (B,)``.
    ``scale``: the per-filter ``s_d`` to use (pass the training positives' ``.scale`` when explaining new
    images); default: the mean activation over ``images[positives]`` (``positives``: bool mask, default all).
    ``reduce="sum"`` (the paper's): ``x_d = sum_ij x_ijd / s_d``, ``g_d = s_d mean_ij G_ijd``; ``"max"``:
    ``x_d = max_ij x_ijd / s_d``, ``g_d = s_d sum_ij G_ijd``, exact (gap 0) for a global-max-pooled head whose
    gradient sits at each map's peak. ``unit=False`` keeps ``g`` and ``y`` in score units (no division by
    ``||g||``; the spec's normalisation follows a third-party port). One forward and one backward per chunk of
    ``batch_size`` images, in eval mode, on the model's device.
    Returns :class:`Rationales` ``(x, g, y, b)`` (float64, CPU) with ``.scale, .norm, .score, .gap``.
    """
    if reduce not in ("sum", "max"):
        raise ValueError(f"reduce must be 'sum' (the paper's spatial sum) or 'max', got {reduce!r}")
    if not torch.is_tensor(images) or images.dim() < 2 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, ...) tensor, got {getattr(images, 'shape', images)!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    score = _score_fn(target, contrast)
    was = model.training
    model.eval()
    try:
        Sx, Gm, exact, y, n2 = _sums(model, images, layer, score, batch_size, reduce)
    finally:
        model.train(was)
    if scale is None:
        pos = torch.ones(len(images), dtype=torch.bool) if positives is None else torch.as_tensor(positives).bool()
        if pos.shape != (len(images),) or not pos.any():
            raise ValueError(f"positives must be a (N,) = ({len(images)},) bool mask with at least one True")
        scale = Sx[pos].mean(0) / (n2 if reduce == "sum" else 1)
    scale = torch.as_tensor(scale, dtype=torch.float64).flatten()
    if scale.shape != (Sx.shape[1],):
        raise ValueError(f"scale must have one value per filter, ({Sx.shape[1]},), got {tuple(scale.shape)}")
    s = torch.where(scale > 1e-12, scale, torch.ones_like(scale))     # dead filters: x_d = 0 anyway
    x, g = Sx / s, Gm * s
    norm = g.norm(dim=1)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm)) if unit else torch.ones_like(norm)
    g, yn = g / safe[:, None], y / safe
    b = yn - (g * x).sum(1)
    gap = (exact - (Gm * Sx).sum(1)) / safe
    return Rationales(x, g, yn, b, scale=scale, norm=norm, divisor=safe, score=y, gap=gap)


def _np64(a, name: str) -> np.ndarray:
    out = (a.detach().cpu().double().numpy() if torch.is_tensor(a) else np.asarray(a, dtype=np.float64))
    if not np.isfinite(out).all():
        raise ValueError(f"{name} has non-finite values (NaN/inf); compute rationales on a trained model")
    return out


@dataclass
class DecisionTree:
    """A learned tree: node ``v`` has the mode ``h_v(x) = w_v.x + b_v`` with ``w_v = alpha_v o g_v``.

    Nodes ``0..n_leaves-1`` are the leaves (training images in the order given), then merged nodes in merge
    order, the root last. ``members[v]``: leaf indices below v; ``depth[v]``: 1 for the root.
    """
    w: np.ndarray
    b: np.ndarray
    g: np.ndarray
    alpha: np.ndarray
    parent: np.ndarray
    children: List[tuple]
    members: List[np.ndarray]
    gain: np.ndarray
    n_leaves: int
    settings: Dict = field(default_factory=dict)
    history: List[Dict] = field(default_factory=list)

    @property
    def root(self) -> int:
        return len(self.w) - 1

    @property
    def depth(self) -> np.ndarray:
        d = np.zeros(len(self.w), np.int64)
        for v in range(len(self.w) - 1, -1, -1):        # parents come after their children
            d[v] = 1 if self.parent[v] < 0 else d[self.parent[v]] + 1
        return d

    @property
    def levels(self) -> List[List[int]]:
        """Node ids per depth, root first."""
        d = self.depth
        return [np.nonzero(d == k)[0].tolist() for k in range(1, int(d.max()) + 1)]

    @property
    def max_depth(self) -> int:
        return int(self.depth.max())

    def ancestor_at(self, depth: int) -> np.ndarray:
        """(n_leaves,) the node at ``depth`` above each training leaf (the leaf itself when shallower)."""
        d = self.depth
        out = np.arange(self.n_leaves)
        for _ in range(int(d.max())):
            up = (d[out] > depth) & (self.parent[out] >= 0)
            out = np.where(up, self.parent[out], out)
        return out

    def explain(self, x, g, depth: Union[int, str] = 2):
        """Explain images by the node at ``depth`` (1 = root, 2 = its children, ..., ``"leaf"``) on the path of
        largest cosine between ``g_I`` and the children's ``w_v``. Returns ``y_hat`` (N,) ``= w_v.x + b_v``,
        contributions (N, D) ``= w_v o x``, node ids (N,); tensors if ``x`` is a tensor, else numpy."""
        X, Gi = _np64(x, "x"), _np64(g, "g")
        if X.ndim != 2 or X.shape != Gi.shape or X.shape[1] != self.w.shape[1]:
            raise ValueError(f"x and g must both be (N, D) with D = {self.w.shape[1]}, got {X.shape}, {Gi.shape}")
        steps = 10 ** 9 if depth == "leaf" else int(depth) - 1
        if steps < 0:
            raise ValueError(f"depth must be >= 1 (1 = root) or 'leaf', got {depth!r}")
        wn = self.w / np.maximum(np.linalg.norm(self.w, axis=1, keepdims=True), 1e-300)
        gn = Gi / np.maximum(np.linalg.norm(Gi, axis=1, keepdims=True), 1e-300)
        cur = np.full(len(X), self.root)
        for _ in range(min(steps, self.max_depth)):
            nxt = cur.copy()
            for v in np.unique(cur):
                kids = np.asarray(self.children[v], dtype=np.int64)
                if len(kids):
                    rows = np.nonzero(cur == v)[0]
                    nxt[rows] = kids[np.argmax(gn[rows] @ wn[kids].T, axis=1)]
            cur = nxt
        contrib = X * self.w[cur]
        y_hat = contrib.sum(1) + self.b[cur]
        if torch.is_tensor(x):
            return (torch.as_tensor(y_hat, dtype=x.dtype), torch.as_tensor(contrib, dtype=x.dtype),
                    torch.as_tensor(cur))
        return y_hat, contrib, cur


def build_tree(x, g, y, *, likelihood: str = "softmax", lam0: float = 1e-6, seed: int = 0, beta: float = 1.0,
               alpha: str = "continuous", top_k: int = 8, max_merges: Optional[int] = None, per_image: bool = False,
               cached: bool = True) -> DecisionTree:
    """Learn the decision tree from the leaves' rationales ``x, g`` (N, D) and scores ``y`` (N,) (steps 3-4).

    ``likelihood``: ``"softmax"`` (the paper's, gamma = 1/mean(y), needs mean(y) > 0) or ``"gaussian"``;
    ``lam0``: LASSO weight lambda0 (lambda = lam0 sqrt(|Omega|)); ``beta``: prior per root child; ``alpha``:
    ``"continuous"`` or ``"support"``; ``top_k``: pairs fitted exactly per merge; ``max_merges``: cap;
    ``per_image``: rank gains divided by |Omega_u|; ``cached=False``: recompute every pair gain at every merge
    (the benchmark's naive reference; same tree). ``seed`` permutes the order that breaks exact ties.
    """
    X, Gi, Y = _np64(x, "x"), _np64(g, "g"), _np64(y, "y")
    if X.ndim != 2 or Gi.shape != X.shape or Y.shape != (X.shape[0],):
        raise ValueError(f"x, g must be (N, D) and y (N,), got {X.shape}, {Gi.shape}, {Y.shape}")
    if X.shape[0] < 2:
        raise ValueError(f"build_tree needs at least 2 leaves, got {X.shape[0]}")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    if alpha not in ALPHAS:
        raise ValueError(f"alpha must be one of {ALPHAS}, got {alpha!r}")
    if likelihood == "softmax" and not Y.mean() > 0:
        raise ValueError(f"likelihood='softmax' needs mean(y) > 0 (gamma = 1/mean(y)), got {Y.mean():.4g}: pass the "
                         "positives' scores, or likelihood='gaussian'")
    if lam0 < 0 or beta < 0 or int(top_k) < 1:
        raise ValueError(f"lam0 and beta must be >= 0 and top_k >= 1, got {lam0!r}, {beta!r}, {top_k!r}")
    order = np.random.default_rng(seed).permutation(len(Y))
    m = Merger(X, Gi, Y, likelihood=likelihood, lam0=float(lam0), beta=float(beta), alpha=alpha, top_k=int(top_k),
               per_image=bool(per_image), cached=bool(cached), order=order).run(max_merges)
    nodes = m.nodes
    top = m.top
    allm = np.arange(len(Y))
    root = dict(m._fit(allm, m.U.sum(0)), members=allm, children=tuple(top), gain=np.nan)
    nodes = nodes + [root]
    parent = np.full(len(nodes), -1)
    for v, nd in enumerate(nodes):
        for c in nd["children"]:
            parent[c] = v
    stack = lambda k: np.stack([nd[k] for nd in nodes])  # noqa: E731
    return DecisionTree(w=stack("w"), b=np.array([nd["b"] for nd in nodes]), g=stack("g"), alpha=stack("alpha"),
                        parent=parent, children=[tuple(nd["children"]) for nd in nodes],
                        members=[nd["members"] for nd in nodes], gain=np.array([nd["gain"] for nd in nodes]),
                        n_leaves=len(Y), history=m.history,
                        settings=dict(likelihood=likelihood, lam0=lam0, beta=beta, alpha=alpha, top_k=top_k,
                                      gamma=m.gamma, per_image=per_image, seed=seed, rows=m.n_rows))
