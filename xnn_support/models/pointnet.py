"""A small PointNet classifier for point clouds (paper 06, the per-point sigma and utility studies).

Input ``(B, N, 3)`` points, output ``(B, num_classes)`` logits. Layout (torchvision-style names so
:func:`xnn_support.capture` can address every stage)::

    features         shared per-point MLP as 1x1 Conv1d + BN + ReLU: 3 -> 64 -> 64 -> 128 -> 256
                     (outputs are channels-first, (B, C, N))
    global_feature   max over the points -> (B, 256): the named global feature layer
    classifier       Linear 256 -> 128, BN, ReLU, Dropout, Linear 128 -> num_classes

Design notes: the max-pool is its own module so hooks see the global feature and so methods can
swap it; there is no T-Net (input/feature alignment) by default: ``input_transform=True`` adds a
small one (``tnet``) that predicts a 3x3 matrix initialised to the identity. The network is
invariant to the order of points by construction (tested). Deviation from Qi et al. (2017): fewer
and narrower layers (64-64-128-256 instead of 64-64-64-128-1024), sized for CPU training.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["PointNet", "GlobalMaxPool", "check_points"]


def check_points(x: torch.Tensor, name: str = "PointNet") -> None:
    """Raise a clear ``ValueError`` unless ``x`` is a (B, N, 3) floating point batch."""
    if not torch.is_tensor(x) or x.dim() != 3 or x.shape[-1] != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} expects points shaped (B, N, 3), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} expects floating point coordinates, got {x.dtype}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} needs at least one point per cloud")


class GlobalMaxPool(nn.Module):
    """Max over the point axis of a channels-first (B, C, N) map -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.max(dim=2).values


def _mlp1d(widths: Sequence[int], bn_momentum: float = 0.1) -> nn.Sequential:
    layers = []
    for ci, co in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv1d(ci, co, 1, bias=False), nn.BatchNorm1d(co, momentum=bn_momentum), nn.ReLU()]
    return nn.Sequential(*layers)


class TNet(nn.Module):
    """Predicts a 3x3 alignment matrix from the cloud (identity at initialisation)."""

    def __init__(self):
        super().__init__()
        self.features = _mlp1d([3, 32, 64])
        self.pool = GlobalMaxPool()
        self.fc = nn.Linear(64, 9)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(torch.eye(3).flatten())

    def forward(self, x_cf: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x_cf))).view(-1, 3, 3)


class PointNet(nn.Module):
    """Small PointNet: shared per-point MLP, global max-pool, MLP classifier.

    Args: num_classes; widths of the per-point MLP (first must be 3); hidden width of the
    classifier; dropout; input_transform (add a T-Net); bn_momentum (PyTorch convention; the
    original PointNet starts at 0.5, which helps when there are only a few batches per epoch).
    """

    def __init__(self, num_classes: int = 10, widths: Sequence[int] = (3, 64, 64, 128, 256),
                 hidden: int = 128, dropout: float = 0.3, input_transform: bool = False,
                 bn_momentum: float = 0.1):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        widths = list(widths)
        if len(widths) < 2 or widths[0] != 3 or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f"widths must start with 3 and list positive layer widths, got {widths!r}")
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
        self.tnet = TNet() if input_transform else None
        if not 0.0 < bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum must be in (0, 1], got {bn_momentum!r}")
        self.features = _mlp1d(widths, bn_momentum)
        self.global_feature = GlobalMaxPool()
        self.classifier = nn.Sequential(
            nn.Linear(widths[-1], hidden, bias=False), nn.BatchNorm1d(hidden, momentum=bn_momentum),
            nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_points(x, type(self).__name__)
        x_cf = x.transpose(1, 2)  # (B, 3, N)
        if self.tnet is not None:
            x_cf = torch.bmm(self.tnet(x_cf), x_cf)
        return self.classifier(self.global_feature(self.features(x_cf)))
