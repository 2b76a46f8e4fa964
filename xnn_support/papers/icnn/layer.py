"""The interpretable conv layer of Zhang, Wu, Zhu, "Interpretable Convolutional Neural Networks",
CVPR 2018 (arXiv 1710.00935; official code ``zqs1022/interpretableCNN``), paper section 3.1:
``a = relu(conv(x))``, ``mu`` = the peak of each filter's map, output ``relu(a * mask_mu)`` with the
template ``max(1 - beta ||[i,j] - mu||_1 / n, -1)`` held constant in the backward pass ("forward
masking"). The filter loss that reads ``last_a`` / ``last_mask`` / ``last_mu`` is in :mod:`.method`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ...core import validate as V

__all__ = ["InterpretableConv2d", "MODES"]

MODES = ("paper", "code", "ordinary")


class InterpretableConv2d(nn.Module):
    """A conv layer with interpretable filters: ``y = relu(a * mask)``, ``a = relu(conv(x))``.

    ``conv``: an ``nn.Conv2d`` to wrap, or ``(in_channels, out_channels)`` for a new 3x3 conv
    (padding 1, init N(0, 0.01) as the official code). ``mode``: ``"paper"`` (argmax ``mu``, fixed
    ``beta``), ``"code"`` (activation centroid ``mu``, per-channel slope ``w3`` in [1.5, 3], init
    2 ~ beta 4) or ``"ordinary"`` (no mask: the same layer without interpretability, for baselines).
    After each forward the layer keeps ``last_a`` (pre-mask map, with grad), ``last_mask`` and
    ``last_mu`` (row, col indices) for :func:`filter_loss`. Maps must be square.
    """

    def __init__(self, conv: Union[nn.Conv2d, Sequence[int]], mode: str = "paper", beta: float = 4.0,
                 num_classes: int = 2, negative_label: Optional[int] = 0, slope_rate: float = 0.02):
        super().__init__()
        V.choice("mode", mode, MODES)
        V.positive("beta", beta, fix="pass the template slope beta > 0 (the paper's 4)")
        V.positive_int("num_classes", num_classes)
        V.in_range("slope_rate", slope_rate, 0, 1)
        if not isinstance(conv, nn.Conv2d):
            if not isinstance(conv, (list, tuple)) or len(conv) != 2:
                raise V.fail("conv", "an nn.Conv2d or (in_channels, out_channels)", conv,
                             "pass conv=(C_in, C_out) for a new 3x3 conv, or the nn.Conv2d to wrap")
            ci, co = (V.positive_int("conv channels", c) for c in conv)
            conv = nn.Conv2d(ci, co, 3, padding=1)
            nn.init.normal_(conv.weight, 0, 0.01)
            nn.init.zeros_(conv.bias)
        self.conv, self.mode, self.beta = conv, mode, float(beta)
        self.num_classes, self.negative_label, self.slope_rate = int(num_classes), negative_label, slope_rate
        D = conv.out_channels
        self.register_buffer("slope", torch.full((D,), 2.0))                     # w3 (code mode)
        self.register_buffer("class_strength", torch.full((D, self.num_classes), 0.1))  # EMA, code
        if negative_label is not None and 0 <= negative_label < self.num_classes:
            self.class_strength[:, negative_label] = -1.0
        self.last_a: Optional[torch.Tensor] = None
        self.last_mask: Optional[torch.Tensor] = None
        self.last_mu: Optional[torch.Tensor] = None

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, beta={self.beta}"

    def peak(self, a: torch.Tensor) -> torch.Tensor:
        """(B, D, 2) long (row, col) of each map's peak: argmax (paper) or rounded centroid (code)."""
        B, D, h, w = a.shape
        if self.mode == "code":
            m = a.detach().clamp_min(0)
            tot = m.sum((2, 3)).clamp_min(1e-12)
            r = (m.sum(3) * torch.arange(h, device=a.device, dtype=a.dtype)).sum(2) / tot
            c = (m.sum(2) * torch.arange(w, device=a.device, dtype=a.dtype)).sum(2) / tot
            return torch.stack([r, c], -1).round().long()          # all-zero map -> (0, 0), as the code
        idx = a.detach().flatten(2).argmax(2)
        return torch.stack([idx // w, idx % w], -1)

    def make_mask(self, a: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        B, D, n, w = a.shape
        g = torch.arange(n, device=a.device, dtype=a.dtype)
        dist = (g[None, None, :, None] - mu[..., 0, None, None].to(a.dtype)).abs() + \
               (g[None, None, None, :] - mu[..., 1, None, None].to(a.dtype)).abs()
        if self.mode == "code":   # linspace(-1, 1, n) grid: distance x 2/(n-1), slope w3 per channel
            slope = self.slope.to(a.dtype)[None, :, None, None] * (2.0 / max(n - 1, 1))
        else:
            slope = self.beta / n
        return torch.clamp(1 - slope * dist, min=-1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.conv(x))
        if a.shape[-1] != a.shape[-2]:
            raise ValueError(f"InterpretableConv2d needs square maps, got {tuple(a.shape[-2:])}")
        self.last_a = a
        if self.mode == "ordinary":
            self.last_mask = self.last_mu = None
            return a
        mu = self.peak(a)
        mask = self.make_mask(a, mu)
        self.last_mu, self.last_mask = mu, mask
        return F.relu(a * mask.detach())
