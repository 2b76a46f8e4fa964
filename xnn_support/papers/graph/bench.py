"""Explanatory-graph benchmark rows (issue 7), measured side by side in one run.

* ``graph/mining``: :func:`explanatory_graph.mine` with the vectorised E step vs the same mining
  with ``engine="loop"`` (the E step looped over images, filters and nodes like the official MEX
  kernels; same settings, same M step and parent selection). Target: at least 20x faster
  (ratio <= 0.05). Maps: 16 filters of 16x16 under 16 of 8x8, 12 / 6 nodes per filter.
* ``graph/scaling``: mining time on 4N images vs 4 x the time on N images (linear growth:
  target ratio <= 1.3).
* ``graph/real_mining``: mining time per image on the conv features of the ImageNet-pretrained
  EfficientNet-Lite0 (notebook 01's real-network section, :mod:`.real`) at 224 px (maps 40x28x28,
  80x14x14, 112x14x14; default nodes per filter 40 / 10 / 20), beside the forward that makes the
  maps and the pooled feature (no target: it says what a real network's maps cost to mine).

All rows run with one torch thread, as the other benchmarks: on a shared 2-core machine two
OpenMP threads make these small kernels slower and erratic.
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from ...bench import Row, benchmark, one_thread, paired, timeit
from ...data import creatures
from . import real
from .method import mine


def _maps(n: int, c: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return OrderedDict([("low", torch.rand(n, c, 16, 16, generator=g) ** 4),
                        ("top", torch.rand(n, c, 8, 8, generator=g) ** 4)])


_GEO = {"low": (4.0, 1.5), "top": (8.0, 3.5)}


@benchmark("graph/mining")
@one_thread
def _mining_rows(quick: bool):

    n = 8 if quick else 16
    fm = _maps(n)
    kw = dict(geometry=_GEO, nodes_per_filter=[12, 6], parents=2, iters=2, seed=0)
    t_ours, t_loop = paired(lambda: mine(fm, **kw), lambda: mine(fm, engine="loop", **kw),
                            repeat=1 if quick else 3)
    return [Row(f"mining: {n} images, 16x16 + 8x8 maps, 16 filters, 12/6 nodes, 2 iters", t_ours, t_loop,
                "per-image loop E step", target="ratio <= 0.05 (>= 20x)", ok=t_ours / t_loop <= 0.05,
                note=f"{t_loop / t_ours:.0f}x faster")]


@benchmark("graph/scaling")
@one_thread
def _scaling_rows(quick: bool):

    n = 32 if quick else 128
    kw = dict(geometry=_GEO, nodes_per_filter=[12, 6], parents=2, iters=3, seed=0, batch_size=32)
    small, big = _maps(n), _maps(4 * n)
    t_small = timeit(lambda: mine(small, **kw), repeat=1 if quick else 3)
    t_big = timeit(lambda: mine(big, **kw), repeat=1 if quick else 3)
    return [Row(f"mining time vs images: {4 * n} images vs 4 x {n}", t_big, 4 * t_small,
                f"4 x time({n})", target="ratio <= 1.3 (linear)", ok=t_big / (4 * t_small) <= 1.3,
                note=f"time({n}) = {t_small:.3f} s")]


@benchmark("graph/real_mining")
@one_thread
def _real_mining_rows(quick: bool):

    model = real.load_model()
    n, iters = (8, 1) if quick else (32, 2)
    birds = creatures(n, 224, categories=("bird",), negatives=0.0, object_centric=True, seed=0).images
    fm, _ = real.features(model, birds, real.LAYERS, batch_size=n)       # warm-up + the maps
    t_fwd = timeit(lambda: real.features(model, birds, real.LAYERS, batch_size=n), repeat=1, warmup=0)
    t_mine = timeit(lambda: mine(fm, parents=3, iters=iters, seed=0, batch_size=n), repeat=1 if quick else 3,
                    warmup=0)
    shapes = ", ".join("x".join(map(str, v.shape[1:])) for v in fm.values())
    return [Row(f"mining on EfficientNet-Lite0 features at 224 px ({shapes}), {iters} EM iter(s): time per image",
                t_mine / n, t_fwd / n, "the net's forward (maps + pooled feature), per image",
                note=f"{n} birds; {t_mine / n / iters * 1e3:.0f} ms per image per EM iteration; 1 torch thread")]
