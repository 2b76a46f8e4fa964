"""``xnn bench`` rows of notebook 09 (network transplanting), measured side by side (interleaved), one torch thread.

* ``transplant/step``: one optimisation step of back-distillation (``L_od + lambda L_bd``: the student's
  vector-Jacobian products with ``create_graph=True``, then the double backward to the adapter, plus the
  teacher's products; 2 directions per image stacked in the batch) against one output-distillation step (a
  forward and a backward), the same adapter, task module, teacher and batch of 32 features: the cost of the
  double backward. Rows for the classification module (one logit) and the segmentation module (a 64x64 score
  map). Target: ratio (back / output) <= 6 (the spec expects 2-3x for the products alone; directions double the
  batch); quick mode: batch 8.
"""
from __future__ import annotations

import torch
from torch import nn

from ...bench import Row, benchmark, one_thread, paired
from .method import _distill_terms, _directions, _Setup
from .network import ClassTask, FixedLinear, SegTask, freeze, make_adapter, planted_map


def _step_fn(method: str, h: nn.Module, g: nn.Module, teacher: nn.Module, x: torch.Tensor):
    opt = torch.optim.Adam(h.parameters(), lr=1e-3)
    s = _Setup(method, 2, "gaussian", 1.0, 0.0, 1.0, 5, 0.1, None, out_shape=teacher(x[:1]).shape[1:])
    gen = torch.Generator().manual_seed(0)
    params = list(h.parameters())

    def step():
        u = _directions((len(x),) + tuple(s.out_shape), 2, "gaussian", gen, x.device, x.dtype) \
            if method == "back_distillation" else None
        loss = _distill_terms(s, h, g, teacher, x, u)
        grads = torch.autograd.grad(loss, params)
        for p, gr in zip(params, grads):
            p.grad = gr
        opt.step()
    return step


@benchmark("transplant/step")
@one_thread
def _step_rows(quick: bool):
    n = 8 if quick else 32
    torch.manual_seed(0)
    x = torch.randn(n, 32, 8, 8)
    Minv = torch.linalg.inv(planted_map(32, seed=0))
    rows = []
    for name, g in (("cls (1 logit)", freeze(ClassTask(32))), ("seg (2 x 64 x 64 map)", freeze(SegTask(32)))):
        teacher = nn.Sequential(FixedLinear(Minv), g).eval()
        bd = _step_fn("back_distillation", make_adapter(32, 32), g, teacher, x)
        od = _step_fn("output_distillation", make_adapter(32, 32), g, teacher, x)
        t_bd, t_od = paired(bd, od, repeat=5 if quick else 15, warmup=2)
        rows.append(Row(f"back-distillation step, {name}, batch {n}", t_bd, t_od, "output-distillation step",
                        target="" if quick else "ratio <= 6", ok=None if quick else bool(t_bd / t_od <= 6),
                        note="double backward (create_graph=True) through the frozen task module, 2 directions"))
    return rows
