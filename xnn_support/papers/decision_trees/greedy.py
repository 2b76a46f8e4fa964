"""The greedy bottom-up merging of the decision tree (Zhang, Yang, Ma, Wu, CVPR 2019, section "learning";
spec ``07_decision_trees.md`` sections 2.3-2.4 and 6): the engine behind :func:`.method.build_tree`.

State: the root's children ("slots"), each holding the images (leaves) below it, the sum ``S`` of their
unit rationales and its decision mode ``h(x) = w.x + b``; ``H[I]`` is the current prediction of image I by
the root child above it (the *ancestor* assignment used for learning), ``Theta = sum_J exp(gamma H_J)``.

Gain of merging root children v, v' into u (images Omega_u)::

    softmax:  Delta = beta + gamma sum_{Omega_u} (h_u - H) + N (log Theta - log(Theta + dTheta)),
              dTheta = sum_{Omega_u} [exp(gamma h_u) - exp(gamma H)],  gamma = 1 / mean(y)
    gaussian: Delta = beta - sum_{Omega_u} [(h_u - y)^2 - (H - y)^2] / (2 s^2),  s^2 = var(y)

Two stages (spec section 6): every pair gets a cheap *approximate* gain with ``alpha = 1`` (``w = g_u``)
and the closed-form bias ``b = mean(y - g_u.x)``; its two additive pieces (``A`` = everything but the
Theta term, ``dTheta``) depend only on the pair's own images, so they are cached in slot x slot matrices
and, after a merge, only the row and column of the merged node are recomputed (``cached=False``: every
row at every merge, the naive reference of the benchmark; the cached pieces are float32, as they only rank
candidates). The ``top_k`` best pairs get the exact node
(:func:`fit_node`: closed-form ``g_u``, LASSO ``alpha``), cached per pair of node ids; the best exact gain
is merged (exact gains within ``TIE`` count as ties, broken by the approximate gain), and merging stops when
it is <= 0 (or after ``max_merges``).
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import lasso_path

__all__ = ["merged_direction", "fit_node", "Merger", "LIKELIHOODS", "ALPHAS"]

LIKELIHOODS = ("softmax", "gaussian")
ALPHAS = ("continuous", "support")
TIE = 1e-6   # exact gains closer than this (relative) are ties, broken by the approximate gain


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


def merged_direction(g: np.ndarray) -> np.ndarray:
    """``g_u = argmax_{||g||=1} sum_I cos(g_I, g) = normalize(sum_I g_I / ||g_I||)`` (closed form of step 4)."""
    return _unit(_unit(np.atleast_2d(g)).sum(0))


def fit_node(x: np.ndarray, y: np.ndarray, g_u: np.ndarray, lam: float, alpha: str = "continuous",
             tol: float = 1e-8, max_iter: int = 300) -> Tuple[np.ndarray, float, np.ndarray]:
    """Parameters of a node over its images: ``(w, b, alpha)`` with ``w = alpha o g_u`` from

        argmin_{alpha, b} (1/n) sum_I ((alpha o g_u).x_I + b - y_I)^2 + lam ||alpha||_1

    i.e. sklearn's ``Lasso(alpha=lam/2, fit_intercept=True)`` on the features ``Z = g_u o x`` (solved by
    ``lasso_path`` on the centred data with its Gram matrix: the same coefficients without the estimator's
    overhead). ``alpha="continuous"`` keeps the coefficients; ``"support"`` binarises them (alpha in {0, 1},
    the paper's definition) and refits ``b``. With ``n <= D`` images and a tiny ``lam`` the problem interpolates
    and coordinate descent stops at ``max_iter`` (exact to ~1e-5 of y, all the gains need).
    """
    Z = x * g_u[None, :]
    zm, ym = Z.mean(0), float(y.mean())
    Zc, yc = np.asfortranarray(Z - zm), y - ym
    if lam > 0:
        with warnings.catch_warnings(), sklearn.config_context(skip_parameter_validation=True):
            warnings.simplefilter("ignore", ConvergenceWarning)
            a = lasso_path(Zc, yc, alphas=[lam / 2], precompute=Zc.T @ Zc, Xy=Zc.T @ yc, tol=tol,
                           max_iter=max_iter, check_input=False)[1][:, 0].astype(np.float64)
    else:   # plain least squares (minimum-norm solution when underdetermined)
        a = np.linalg.lstsq(Zc, yc, rcond=None)[0]
    if alpha == "support":
        a = (np.abs(a) > 1e-6 * max(1.0, np.abs(a).max())).astype(np.float64)
    b = ym - float(zm @ a)
    return a * g_u, b, a


class Merger:
    """Greedy merging over the leaves ``x, g, y`` (float64 numpy); see the module docstring.

    After :meth:`run`, ``nodes`` holds one dict per node (leaves first, then merged nodes in merge order:
    ``w, b, alpha, g, members, children, gain``) and ``top`` the node ids of the root's children.
    """

    def __init__(self, x, g, y, *, likelihood: str, lam0: float, beta: float, alpha: str, top_k: int,
                 per_image: bool, cached: bool, order: np.ndarray):
        self.X, self.Y = x, y
        self.N, self.D = x.shape
        self.U = _unit(g)
        self.lik, self.lam0, self.beta, self.alpha = likelihood, lam0, beta, alpha
        self.top_k, self.per_image, self.cached = top_k, per_image, cached
        self.gamma = 1.0 / float(np.mean(y)) if likelihood == "softmax" else 0.0
        self.s2 = float(np.var(y)) or 1.0
        self.c = self.gamma * float(np.max(y)) if likelihood == "softmax" else 0.0
        b = y - (g * x).sum(1)
        self.nodes: List[Dict] = [dict(w=g[i].copy(), b=float(b[i]), alpha=np.ones(self.D), g=self.U[i],
                                       members=np.array([i]), children=(), gain=np.nan) for i in range(self.N)]
        # slot k holds leaf order[k] (the order only decides exact ties)
        self.slot_node = np.array(order, dtype=np.int64)
        self.own = np.empty(self.N, np.int64)
        self.own[order] = np.arange(self.N)
        self.active = np.ones(self.N, bool)
        self.S = self.U[order].copy()
        self.cnt = np.ones(self.N)
        self.H = y.astype(np.float64).copy()
        # approximate pieces in float32: they only rank candidates (exact gains, float64, decide)
        self.A = np.full((self.N, self.N), np.nan, dtype=np.float32)
        self.dT = np.zeros((self.N, self.N), dtype=np.float32)
        self.exact: Dict[Tuple[int, int], tuple] = {}
        self.history: List[Dict] = []
        self.n_rows = 0
        self._theta()

    # ------------------------------------------------------------------ likelihood pieces
    def _theta(self):
        self.Theta = float(np.exp(self.gamma * self.H - self.c).sum()) if self.lik == "softmax" else 1.0

    def _pieces(self, h_new, h_old, y):
        """(A, dTheta) summed over axis 0 of the given per-image arrays."""
        if self.lik == "softmax":
            A = self.gamma * (h_new - h_old).sum(0)
            dT = (np.exp(self.gamma * h_new - self.c) - np.exp(self.gamma * h_old - self.c)).sum(0)
            return A, dT
        return -((h_new - y) ** 2 - (h_old - y) ** 2).sum(0) / (2 * self.s2), np.zeros(np.shape(h_new)[1:])

    def gain(self, A, dT):
        if self.lik == "softmax":
            T = np.asarray(self.Theta, dtype=np.result_type(A, dT))
            return (self.beta + self.N * np.log(T)) + A - self.N * np.log(T + dT)
        return self.beta + A

    # ------------------------------------------------------------------ approximate pair gains
    def _row(self, i: int) -> None:
        """Approximate (alpha = 1) pieces of every pair (i, j), j an active slot, into row/column i."""
        self.n_rows += 1
        act = np.nonzero(self.active)[0]
        act = act[act != i]
        if len(act) == 0:
            return
        col = np.full(self.N, -1)
        col[act] = np.arange(len(act))
        Gu = _unit(self.S[i][None, :] + self.S[act])                      # (m, D)
        mi = self.own == i
        Xi, yi, Hi = self.X[mi], self.Y[mi], self.H[mi]
        P = Xi @ Gu.T                                                     # (n_i, m)
        oth = np.nonzero(~mi)[0]
        c = col[self.own[oth]]
        q = (self.X[oth] * Gu[c]).sum(1)
        m = len(act)
        bias = ((yi[:, None] - P).sum(0) + np.bincount(c, self.Y[oth] - q, minlength=m)) / (
            self.cnt[i] + self.cnt[act])
        Ai, dTi = self._pieces(P + bias, Hi[:, None], yi[:, None])          # i's images, every pair
        ho, Ho, yo = q + bias[c], self.H[oth], self.Y[oth]                   # j's images, their own pair
        if self.lik == "softmax":
            Ao = np.bincount(c, self.gamma * (ho - Ho), minlength=m)
            dTo = np.bincount(c, np.exp(self.gamma * ho - self.c) - np.exp(self.gamma * Ho - self.c), minlength=m)
        else:
            Ao = np.bincount(c, -((ho - yo) ** 2 - (Ho - yo) ** 2) / (2 * self.s2), minlength=m)
            dTo = np.zeros(m)
        self.A[i, act] = self.A[act, i] = Ai + Ao
        self.dT[i, act] = self.dT[act, i] = dTi + dTo

    # ------------------------------------------------------------------ exact candidates
    def _fit(self, members: np.ndarray, S: np.ndarray):
        g_u = _unit(S)
        lam = self.lam0 * np.sqrt(len(members))
        w, b, a = fit_node(self.X[members], self.Y[members], g_u, lam, self.alpha)
        return dict(w=w, b=b, alpha=a, g=g_u)

    def _exact(self, i: int, j: int):
        key = tuple(sorted((int(self.slot_node[i]), int(self.slot_node[j]))))
        if key not in self.exact:
            mem = np.nonzero((self.own == i) | (self.own == j))[0]
            p = self._fit(mem, self.S[i] + self.S[j])
            h = self.X[mem] @ p["w"] + p["b"]
            A, dT = self._pieces(h[:, None], self.H[mem][:, None], self.Y[mem][:, None])
            self.exact[key] = (p, mem, h, float(A[0]), float(dT[0]))
        return self.exact[key]

    def _candidates(self) -> List[Tuple[int, int, float]]:
        """The ``top_k`` pairs (i < j) by approximate gain, best first (ties: lower slots first). Inactive slots
        hold NaN rows and columns, so the full slot x slot matrix is scanned without copies."""
        G = self.gain(self.A, self.dT)
        if self.per_image:
            G = G / (self.cnt[:, None] + self.cnt[None, :])
        G = np.where(np.isnan(G), -np.inf, G)                 # symmetric, NaN diagonal: each pair twice
        m = int(self.active.sum())
        k = min(2 * self.top_k, m * (m - 1))
        if k == 0:
            return []
        rows = np.argpartition(-G.max(1), min(k, self.N) - 1)[:k]   # the best k entries lie in the best k rows
        sub = G[rows].ravel()
        flat = np.argpartition(-sub, k - 1)[:k]
        flat = flat[np.lexsort((flat, -sub[flat]))]
        out, seen = [], set()
        for f in flat:
            i, j = sorted((int(rows[f // self.N]), int(f % self.N)))
            if (i, j) not in seen and np.isfinite(sub[f]):
                seen.add((i, j))
                out.append((i, j, float(sub[f])))
        return out[:self.top_k]

    # ------------------------------------------------------------------ the loop
    def step(self) -> bool:
        """One merge; False when no pair has a positive exact gain."""
        best = None
        for rank, (i, j, approx) in enumerate(self._candidates()):
            p, mem, h, A, dT = self._exact(i, j)
            ge = float(self.gain(A, dT))
            score = ge / len(mem) if self.per_image else ge
            if best is None or score > best[0] + TIE * max(1.0, abs(best[0])):   # ties: better approximate gain
                best = (score, ge, approx, i, j)
        if best is None or best[1] <= 0:
            return False
        _, ge, approx, i, j = best
        self._merge(i, j, ge, approx)
        return True

    def _merge(self, i: int, j: int, ge: float, approx: float) -> None:
        p, mem, h, _, _ = self._exact(i, j)
        u = len(self.nodes)
        self.nodes.append(dict(p, members=np.sort(mem), gain=ge,
                               children=(int(self.slot_node[i]), int(self.slot_node[j]))))
        self.slot_node[i] = u
        self.active[j] = False
        self.own[self.own == j] = i
        self.H[mem] = h
        self.S[i] += self.S[j]
        self.cnt[i] += self.cnt[j]
        self.A[j, :] = self.A[:, j] = np.nan
        self._theta()
        self.history.append(dict(step=len(self.history) + 1, node=u, size=len(mem), gain=ge, approx_gain=approx,
                                 n_top=int(self.active.sum())))
        for r in ([i] if self.cached else np.nonzero(self.active)[0]):
            self._row(int(r))

    def init_pairs(self) -> "Merger":
        """The approximate gain of every pair of leaves (the initial pass, the same with or without cache)."""
        for i in range(self.N):
            self._row(i)
        return self

    def run(self, max_merges: Optional[int] = None) -> "Merger":
        self.init_pairs()
        limit = self.N - 1 if max_merges is None else min(int(max_merges), self.N - 1)
        while len(self.history) < limit and self.active.sum() > 1 and self.step():
            pass
        return self

    @property
    def top(self) -> List[int]:
        return [int(self.slot_node[s]) for s in np.nonzero(self.active)[0]]
