"""``xnn bench`` rows of notebook 08 (explainer networks), measured side by side (interleaved), one torch thread.

* ``explainer/train step``: one Adam step of the explainer (forward on cached performer features, the full loss:
  distillation + icnn filter loss + the -log p prior, backward, step) in ``code`` and in ``paper`` mode, against
  the same encoder-decoder (same masked interpretable track, same norm and mixing) trained with the
  reconstruction loss only. Target: ratio <= 1.3 (issue 18). Features of the notebook's explained layer (16x16x32)
  and target (8x8x64), batch 64 (quick: 32).
"""
from __future__ import annotations

import torch

from ...bench import Row, benchmark, one_thread, paired
from .method import DEFAULT_LAMBDA_F, ExplainerLoss
from .net import Explainer


def _stepper(mode: str, full: bool, f: torch.Tensor, y: torch.Tensor):
    torch.manual_seed(0)
    ex = Explainer(32, {"t": (64, 8, 8)}, mode=mode, num_classes=4).train()
    loss = ExplainerLoss(ex, [64 * 64], [1.0], lambda_f=DEFAULT_LAMBDA_F[mode] if full else 0.0,
                         lambda_p=0.1 if full else 0.0)
    opt = torch.optim.Adam(ex.parameters(), 1e-3)

    def step():
        out = loss(ex(f), y)
        opt.zero_grad(set_to_none=True)
        out.backward()
        opt.step()
    return step


@benchmark("explainer/train step")
@one_thread
def _train_rows(quick: bool):
    B = 32 if quick else 64
    g = torch.Generator().manual_seed(0)
    f = torch.rand(B, 32, 16, 16, generator=g)
    y = torch.cat([torch.randn(B, 64 * 64, generator=g), torch.randint(0, 4, (B, 1), generator=g).float()], 1)
    rep = 3 if quick else 10
    rows = []
    for mode in ("code", "paper"):
        t_full, t_rec = paired(_stepper(mode, True, f, y), _stepper(mode, False, f, y), repeat=rep, warmup=1)
        rows.append(Row(f"explainer train step ({mode} filter loss + prior), 16x16x32 -> 8x8x64, batch {B}",
                        t_full, t_rec, "same encoder-decoder, reconstruction loss only",
                        target="ratio <= 1.3", ok=None if quick else bool(t_full / t_rec <= 1.3)))
    return rows
