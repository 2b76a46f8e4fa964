"""Trainer benchmark rows (issue 3): the one trainer against a plain hand-written loop, and a
checkpoint-cache hit against training.

* ``fit epoch``: one epoch of ``vgg_small`` on 64 px ``creatures`` through :func:`train.fit` (no cache)
  vs a minimal Adam loop over the same batches (target ratio <= 1.10: the trainer's checks,
  progress bar and bookkeeping cost little).
* ``cache hit``: a second ``fit`` call with identical arguments (loads from the cache) vs training.
"""
from __future__ import annotations

import os
import tempfile
import time

import torch
from torch import nn

from . import Row, benchmark
from ..data import creatures
from ..models import build
from ..core.train import fit


@benchmark("train/fit")
def _fit_rows(quick: bool):

    n = 256 if quick else 1024
    ds = creatures(n, 64, seed=0)
    x, y = ds.images, ds.labels

    def plain():
        torch.manual_seed(0)
        m = build("vgg_small", num_classes=5, in_size=64, seed=0).train()
        opt = torch.optim.Adam(m.parameters(), 1e-3)
        g = torch.Generator().manual_seed(0)
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, 64):
            idx = perm[s:s + 64]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(m(x[idx]), y[idx])
            loss.backward()
            opt.step()

    def ours(cache=False):
        return fit("vgg_small", ds, None, model_config={"num_classes": 5, "in_size": 64}, epochs=1,
                   batch_size=64, seed=0, cache=cache, progress=False)

    reps = 1 if quick else 3
    t_plain, t_ours = [], []
    for _ in range(reps):
        t0 = time.perf_counter(); plain(); t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); ours(); t_ours.append(time.perf_counter() - t0)
    a, b = min(t_ours), min(t_plain)
    rows = [Row(f"fit: 1 epoch vgg_small, {n} images 64 px", a, b, "plain Adam loop",
                target="ratio <= 1.10", ok=a / b <= 1.10)]
    old = os.environ.get("XNN_CACHE")
    with tempfile.TemporaryDirectory() as d:
        os.environ["XNN_CACHE"] = d
        try:
            t0 = time.perf_counter(); ours(True); t_train = time.perf_counter() - t0
            t0 = time.perf_counter(); r = ours(True); t_hit = time.perf_counter() - t0
        finally:
            if old is None:
                os.environ.pop("XNN_CACHE", None)
            else:
                os.environ["XNN_CACHE"] = old
    rows.append(Row("fit: cache hit (second identical call)", t_hit, t_train, "training it",
                    target="hit < 2 s", ok=bool(r.from_cache) and t_hit < 2.0))
    return rows
