"""Benchmark rows of paper 02 (interpretable CNNs, :mod:`xnn_support.icnn`).

* ``icnn/train step``: one Adam training step (forward, cross-entropy + filter loss, backward,
  step) of the notebook's VGG-like net with its interpretable layer, in ``code`` and in ``paper``
  mode, vs the same network (same new conv, ``ordinary`` mode) trained with cross-entropy only.
  Target: ratio <= 1.2 (issue 6).
* ``icnn/template scores``: all n^2 template scores by one convolution, and by one GEMM with the
  template bank (the default for n <= 64), vs the explicit einsum over the n^2 templates (n = 16,
  64 images x 64 filters). No target: informational.
"""
from __future__ import annotations

import torch
from torch import nn

from .bench import Row, benchmark, paired


def _net(mode: str):
    from .icnn_experiments import build_net
    return build_net("vgg", mode, 2, seed=0).train()


@benchmark("icnn/train step")
def _train_rows(quick: bool):
    from .icnn import FilterLoss

    B = 32 if quick else 64
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, 64, 64, generator=g)
    y = torch.randint(0, 2, (B,), generator=g)
    ref = _net("ordinary")
    opt_ref = torch.optim.Adam(ref.parameters(), 1e-3)
    ce = nn.CrossEntropyLoss()

    def plain():
        loss = ce(ref(x), y)
        opt_ref.zero_grad(set_to_none=True)
        loss.backward()
        opt_ref.step()

    rows = []
    for mode in ("code", "paper"):
        net = _net(mode)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        obj = FilterLoss(net, weight=1.0)

        def ours():
            loss = obj(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t_o, t_p = paired(ours, plain, repeat=3 if quick else 10, warmup=1)
        rows.append(Row(f"ICNN train step ({mode} loss), vgg_small 16x16x64 layer, batch {B}, 64 px",
                        t_o, t_p, "same net, ordinary layer, CE only", target="ratio <= 1.2",
                        ok=t_o / t_p <= 1.2))
    return rows


@benchmark("icnn/template scores")
def _template_rows(quick: bool):
    from .icnn import positive_templates, template_scores

    n = 16
    x = torch.rand(32 if quick else 64, 64, n, n, generator=torch.Generator().manual_seed(0))
    T = positive_templates(n)

    rep = 3 if quick else 10
    explicit = lambda: torch.einsum("bdij,rcij->bdrc", x, T)  # noqa: E731
    rows = []
    for method in ("conv", "matmul"):
        t_c, t_e = paired(lambda: template_scores(x, method=method), explicit, repeat=rep)
        rows.append(Row(f"template scores ({method}), all {n}x{n} templates, {x.shape[0]}x{x.shape[1]} maps",
                        t_c, t_e, "explicit einsum over n^2 templates"))
    return rows
