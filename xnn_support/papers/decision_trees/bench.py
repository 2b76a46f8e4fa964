"""``xnn bench`` rows of notebook 07 (decision trees), measured side by side in one run, one torch thread.

* ``decision_trees/build``: merge steps with cached pair gains (after a merge only the pairs touching the
  merged node are recomputed) against the naive loop that recomputes every pair gain at every merge
  (``cached=False``: the same merges, checked). Both start from the same initial pass over all pairs (not
  timed) and run the same exact LASSO stage for the best pairs; timed: the first ``merges`` merge steps.
  Target: >= 10x at 500 leaves (ratio <= 0.1); quick mode 150 leaves. A second row times the whole tree
  (initial pass included) against the naive whole tree at 150 leaves (informational).
* ``decision_trees/leaves``: the whole tree (cached) against the number of leaves, each row relative to the
  smallest (informational).
Leaves: the planted maxout toy (:func:`.planted.maxout_toy`, D = 32), softmax likelihood (no early stop).
"""
from __future__ import annotations

import time

import numpy as np

from ...bench import Row, benchmark, one_thread
from .greedy import Merger
from .method import build_tree
from .planted import maxout_toy


def _leaves(n: int):
    t = maxout_toy(n, seed=0)
    return t["x"], t["g"], t["y"]


def _time(fn, repeat: int = 1):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _steps(x, g, y, cached: bool, merges: int):
    """Seconds of ``merges`` merge steps after the (untimed) initial pass; the merged node ids."""
    m = Merger(x, g, y, likelihood="softmax", lam0=1e-6, beta=1.0, alpha="continuous", top_k=8, per_image=False,
               cached=cached, order=np.arange(len(y))).init_pairs()
    t0 = time.perf_counter()
    for _ in range(merges):
        if not m.step():
            break
    return time.perf_counter() - t0, [h["node"] for h in m.history], m.n_rows


@benchmark("decision_trees/build")
@one_thread
def _build_rows(quick: bool):
    n, merges = (150, 20) if quick else (500, 40)
    x, g, y = _leaves(n)
    t_c, a, rows_c = _steps(x, g, y, True, merges)
    t_n, b, rows_n = _steps(x, g, y, False, merges)
    same = a == b
    out = [Row(f"tree merge steps, {n} leaves, first {merges} merges (cached pair gains)", t_c, t_n,
               "naive: every pair gain recomputed at every merge", target="" if quick else "ratio <= 0.1",
               ok=None if quick else bool(t_c / t_n <= 0.1 and same),
               note=f"same merges: {same}; pair-gain rows {rows_c} vs {rows_n} (initial pass of {n} included, "
                    "not timed)")]
    nw = 150 if not quick else 80
    xw, gw, yw = _leaves(nw)
    t_wc, ta = _time(lambda: build_tree(xw, gw, yw))
    t_wn, tb = _time(lambda: build_tree(xw, gw, yw, cached=False))
    out.append(Row(f"whole tree, {nw} leaves ({len(ta.history)} merges), cached", t_wc, t_wn, "naive whole tree",
                   note=f"informational; same tree: {ta.children == tb.children}"))
    return out


@benchmark("decision_trees/leaves")
@one_thread
def _leaf_rows(quick: bool):
    sizes = (50, 100) if quick else (100, 200, 400)
    times, merges = {}, {}
    for n in sizes:
        x, g, y = _leaves(n)
        times[n], tree = _time(lambda: build_tree(x, g, y))
        merges[n] = len(tree.history)
    return [Row(f"whole tree, {n} leaves ({merges[n]} merges)", times[n], times[sizes[0]],
                f"whole tree, {sizes[0]} leaves", note="informational: time against the number of leaves")
            for n in sizes[1:]]
