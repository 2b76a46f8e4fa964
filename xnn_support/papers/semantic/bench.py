"""Benchmark rows of paper 03 (semantic quantification, :mod:`xnn_support.semantic`).

* ``explainer epochs``: two epochs of :func:`~xnn_support.semantic.fit_explainer` (distillation +
  prior, normalisation, history) vs a minimal Adam loop over the same batches with the same
  network and the same eq. 1 loss without prior (target ratio <= 1.25: the prior and the
  bookkeeping cost little).
* ``alpha inference``: :meth:`~xnn_support.semantic.Explainer.alpha` (chunked, unit conversion)
  vs a plain forward of the explainer network (target ratio <= 1.10).

Both rows run on one torch thread (on a CPU shared with other jobs two threads are several times
slower and far noisier).
"""
from __future__ import annotations

import torch

from ...bench import Row, benchmark, paired
from .method import torch_threads
from .method import ExplainerCNN, fit_explainer


@benchmark("semantic/explainer")
def _explainer_rows(quick: bool):

    with torch_threads(1):  # both sides on one thread: stable on a shared CPU
        return _rows(quick)


def _rows(quick: bool):

    n, c, size = (256 if quick else 1024), 12, 64
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    conc = torch.randn(n, c, generator=g)
    y = conc @ torch.randn(c, generator=g)

    def plain():
        torch.manual_seed(0)
        net = ExplainerCNN(c, 3, 16).train()
        b = torch.zeros((), requires_grad=True)
        opt = torch.optim.Adam(list(net.parameters()) + [b], lr=2e-3)
        gen = torch.Generator().manual_seed(0)
        for _ in range(2):
            perm = torch.randperm(n, generator=gen)
            for s in range(0, n, 64):
                idx = perm[s:s + 64]
                loss = ((b + (net(x[idx]) * conc[idx]).sum(1) - y[idx]) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def ours():
        return fit_explainer(x, conc, y, epochs=2, seed=0, batch_size=64, progress=False)

    rep = 1 if quick else 3
    t_ours, t_plain = paired(ours, plain, repeat=rep, warmup=1)
    rows = [Row(f"fit_explainer: 2 epochs, {n} images 64 px, 12 concepts", t_ours, t_plain,
                "plain Adam loop, same net and loss", target="ratio <= 1.25", ok=t_ours / t_plain <= 1.25,
                note="1 torch thread for both")]

    ex = ours()
    net = ex.net

    def fwd():
        with torch.no_grad():
            net.eval()
            for s in range(0, n, 256):
                net(x[s:s + 256])

    t_a, t_f = paired(lambda: ex.alpha(x, batch_size=256), fwd, repeat=3 if quick else 10)
    rows.append(Row(f"Explainer.alpha: {n} images 64 px", t_a, t_f, "plain forward of the net",
                    target="ratio <= 1.10", ok=t_a / t_f <= 1.10))
    return rows
