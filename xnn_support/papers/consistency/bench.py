"""Knowledge-consistency benchmark rows (issue 5), measured side by side in one run.

* ``g_theta training``: one epoch of the nonlinear stages of g (K = 2, C = 32 -> 32, 8 x 8 maps,
  batch 64) through :func:`xnn_support.consistency.fit_consistency`'s trainer (``train.fit``:
  per-stage std normalisation, gates, gate penalty, progress/bookkeeping) vs the floor: the same
  four convolutions wired the same way (z, skip, ReLU; the order-0 conv frozen in both, as after
  the least-squares fit) trained with plain MSE in a bare Adam loop over the same batches.
  Target ratio <= 1.5.
* ``decomposition``: all K+1 order components (masks replayed, one batched conv per stage) vs a
  plain forward of g. The stacked orders cost about (K+1)(K+2)/2 convolutions instead of K+1,
  so the target is ratio <= 3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...bench import Row, benchmark, paired
from .experiments import planted_pair
from .method import ConsistencyNet, FeaturePairs, _GateLoss, _pair_inputs, fit_order0
from ...core.train import fit


class _PlainG(nn.Module):
    """The floor: g's four convolutions without normalisation, gates or penalty."""

    def __init__(self, c: int):
        super().__init__()
        self.c0, self.c1, self.c2 = (nn.Conv2d(c, c, 3, padding=1, bias=b) for b in (False, False, True))
        self.v = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, z):
        u = self.c1(z + F.relu(self.c0(z)))
        return self.c2(z) + self.v(F.relu(u))


def _data(n: int, c: int = 32, size: int = 8):

    return planted_pair("mix", n=n, channels=c, size=size, seed=0)


@benchmark("consistency/g_theta")
def _g_rows(quick: bool):

    n, c = (256 if quick else 1024), 32
    xa, xb = _data(n, c)
    net = ConsistencyNet(c, c, 3, tied_output=False, seed=0)
    fit_order0(net, xa, xb)
    net.convs[-1].requires_grad_(False)
    var_b = float(xb.var())

    def ours():
        fit(net, FeaturePairs(xa, xb), epochs=1, lr=3e-3, batch_size=64, weight_decay=1e-4,
            schedule="cosine", seed=0, cache=False, loss_fn=_GateLoss(net, [0.1, 0.1], var_b),
            inputs=_pair_inputs, progress=False)

    plain_net = _PlainG(c)
    plain_net.c2.requires_grad_(False)  # like g's least-squares order 0: fixed while training
    opt = torch.optim.Adam([p for p in plain_net.parameters() if p.requires_grad], lr=3e-3, weight_decay=1e-4)

    def floor():
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        for s in range(0, n, 64):
            idx = perm[s:s + 64]
            loss = F.mse_loss(plain_net(xa[idx]), xb[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    t_ours, t_floor = paired(ours, floor, repeat=2 if quick else 5)
    rows = [Row(f"g_theta training: 1 epoch, K=2, C={c}, 8x8, {n} samples", t_ours, t_floor,
                "same convs, plain MSE loop", target="ratio <= 1.5", ok=t_ours / t_floor <= 1.5,
                note=f"{n / t_ours:.0f} vs {n / t_floor:.0f} samples/s")]

    net.eval()
    x = xa[:256]

    def dec():
        with torch.no_grad():
            net.decompose(x)

    def fwd():
        with torch.no_grad():
            net(x)

    t_dec, t_fwd = paired(dec, fwd, repeat=3 if quick else 10)
    rows.append(Row("order decomposition (3 orders) vs forward of g, 256 samples", t_dec, t_fwd,
                    "forward of g", target="ratio <= 3", ok=t_dec / t_fwd <= 3))
    return rows
