"""Benchmark rows of paper 02 (interpretable CNNs, :mod:`xnn_support.icnn`).

* ``icnn/train step``: one Adam training step (forward, cross-entropy + filter loss, backward,
  step) of the notebook's VGG-like net with its interpretable layer, in ``code`` and in ``paper``
  mode, vs the same masked network with the filter loss switched off (weight 0). Target: ratio
  <= 1.2 (issue 6). A third, informational row compares the code mode with the ordinary layer
  (no mask, no loss).
* ``icnn/template scores``: all n^2 template scores by one convolution, and by one GEMM with the
  template bank (the default for n <= 64), vs the explicit einsum over the n^2 templates (n = 16,
  64 images x 64 filters). No target: informational.
"""
from __future__ import annotations

import torch
from torch import nn

from ...bench import Row, benchmark, paired
from .experiments import build_net
from .method import FilterLoss
from .method import positive_templates, template_scores


def _net(mode: str):
    return build_net("vgg", mode, 2, seed=0).train()


@benchmark("icnn/train step")
def _train_rows(quick: bool):

    B = 32 if quick else 64
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 3, 64, 64, generator=g)
    y = torch.randint(0, 2, (B,), generator=g)

    def stepper(mode: str, weight: float):
        net = _net(mode)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        obj = FilterLoss(net, weight=weight)

        def step():
            loss = obj(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    rep = 3 if quick else 10
    rows = []
    for mode in ("code", "paper"):
        t_o, t_p = paired(stepper(mode, 1.0), stepper(mode, 0.0), repeat=rep, warmup=1)
        rows.append(Row(f"ICNN train step ({mode} loss), vgg_small + 16x16x64 layer, batch {B}, 64 px",
                        t_o, t_p, "same masked net, filter loss off", target="ratio <= 1.2",
                        ok=t_o / t_p <= 1.2))
    t_o, t_p = paired(stepper("code", 1.0), stepper("ordinary", 0.0), repeat=rep, warmup=1)
    rows.append(Row(f"ICNN train step (code: mask + loss), batch {B}, 64 px", t_o, t_p,
                    "same net, ordinary layer (no mask), CE only", note="informational"))
    return rows


@benchmark("icnn/template scores")
def _template_rows(quick: bool):

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
