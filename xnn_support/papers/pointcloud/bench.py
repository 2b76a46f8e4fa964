"""Benchmark rows of paper 06 (point-cloud architecture utilities), one torch thread.

* ``pointcloud/attack``: :func:`~xnn_support.pointcloud.attack` with all (cloud x target) rows in one
  batch vs ``engine="loop"`` (one row at a time, the official batch-1 loop) with the same steps, same
  initial deltas and same model (Mini-PointNet++, geometry recomputed on X + delta every step, as
  the official attack). Target: at least 10x (ratio <= 0.1).
* ``pointcloud/sigma``: :func:`~xnn_support.pointcloud.point_sigma` (fixed sampling) vs its floor =
  steps x one forward + backward of the same network on the same (samples x clouds) batch with the
  cached geometry. Target ratio <= 1.3.
"""
from __future__ import annotations

import torch

from ...bench import Row, benchmark, one_thread, paired
from ...models import build
from .method import attack
from ...models.pointnets_base import take
from .method import point_sigma


def _setup(n_clouds: int, points: int = 128):
    model = build("pointnet2", num_classes=10, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_clouds, points, 3, generator=g)
    x = x / x.norm(dim=-1, keepdim=True).amax(1, keepdim=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, x


@benchmark("pointcloud/attack")
@one_thread
def _attack_rows(quick: bool):
    model, x = _setup(4 if quick else 8)
    y = torch.zeros(x.shape[0], dtype=torch.long)
    steps, targets = (10 if quick else 30), (3 if quick else 9)
    kw = dict(targets=targets, steps=steps, seed=0, init="zeros")  # zero start: rows run every step in both
    t_b, t_l = paired(lambda: attack(model, x, y, **kw), lambda: attack(model, x, y, engine="loop", **kw),
                      repeat=1 if quick else 2, warmup=0)
    rows = x.shape[0] * targets
    return [Row(f"attack: {x.shape[0]} clouds x {targets} targets = {rows} rows, N = {x.shape[1]}, {steps} steps",
                t_b, t_l, "per-(cloud, target) loop, same steps", target="ratio <= 0.1 (>= 10x)",
                ok=t_b / t_l <= 0.1, note=f"{t_l / t_b:.1f}x faster")]


@benchmark("pointcloud/sigma")
@one_thread
def _sigma_rows(quick: bool):
    model, x = _setup(8 if quick else 16)
    steps, M = (10 if quick else 40), 8
    geom = model.geometry(x)
    idx = torch.arange(x.shape[0]).repeat(M)
    gm = take(geom, idx)
    xin = x[idx]

    def floor():
        for _ in range(steps):
            xi = xin.clone().requires_grad_(True)
            f = model(xi, geometry=gm)  # logits; the feature is one layer earlier (head.2): same cost class
            torch.autograd.grad(f.pow(2).sum(), xi)

    def ours():
        point_sigma(model, x, steps=steps, samples=M, sigma_f=1.0, batch_size=None)

    t_o, t_f = paired(ours, floor, repeat=1 if quick else 3)
    return [Row(f"point sigma: {x.shape[0]} clouds x {M} samples, N = {x.shape[1]}, {steps} steps", t_o, t_f,
                "forward + backward floor (cached geometry)", target="ratio <= 1.3", ok=t_o / t_f <= 1.3)]
