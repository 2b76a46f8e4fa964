"""Core benchmark rows (foundation): the cost of feature capture and of truncated forwards.

* ``capture overhead``: forward of a VGG-style net with 3 layers captured vs the plain forward
  (target ratio <= 1.10).
* ``truncated forward``: capture of an early layer with ``stop=True`` vs the full forward
  (it should cost a fraction of the full forward: ratio < 1).
"""
from __future__ import annotations

import torch

from . import Row, TinyConvNet, benchmark, paired
from ..core.capture import capture


def _net_and_batch(batch: int = 64, size: int = 64):
    torch.manual_seed(0)
    net = TinyConvNet().eval()
    x = torch.rand(batch, 3, size, size)
    with torch.no_grad():
        net(x[:2])  # materialise the lazy layer
    return net, x


@benchmark("core/capture")
def _capture_rows(quick: bool):
    net, x = _net_and_batch()
    layers = ["0.2", "0.6", "0.10"]
    rep = 3 if quick else 10

    def plain():
        with torch.no_grad():
            net(x)

    def hooked():
        with torch.no_grad(), capture(net, layers) as cap:
            net(x)
        return cap

    t_cap, t_plain = paired(hooked, plain, repeat=rep)
    ratio = t_cap / t_plain
    rows = [Row("capture overhead (3 layers, batch 64, 64 px)", t_cap, t_plain, "plain forward",
                target="ratio <= 1.10", ok=ratio <= 1.10)]

    def truncated():
        with torch.no_grad(), capture(net, ["0.2"], stop=True) as cap:
            cap.forward(x)

    t_tr, t_full = paired(truncated, plain, repeat=rep)
    rows.append(Row("truncated forward to the 1st block (stop=True)", t_tr, t_full, "full forward",
                    target="ratio < 1", ok=t_tr < t_full))
    return rows
