"""Shared pieces of the point-cloud networks of paper 06 (:mod:`.pointnets`, :mod:`.pointnets_seq`).

Contract of every network here (:class:`PointCloudNet`):

* ``forward(x, geometry=None) -> logits``: ``x`` (B, N, 3). ``geometry`` is a dict of batch-first
  index tensors (sampling, grouping, octants, ...) computed by ``model.geometry(x_clean)``; when
  given, the forward reuses them instead of recomputing (the official code's *fixed sampling*: noise
  on the points never changes the neighbourhood topology, spec section 2.2). Without it the forward
  computes the geometry from ``x`` itself (training, adversarial attacks).
* ``head``: ``Linear(c, hidden, bias=False), BatchNorm1d, ReLU, Dropout, Linear(hidden, classes)``;
  ``feature_layer = "head.2"`` names the diagnosed feature f (FC + BN + ReLU, before dropout).
* :func:`take` selects rows of a geometry dict (the sigma engine's noisy copies of input ``index``).

The paper's architecture modules, shared by every backbone (spec section 2.1, [CODE] details):

* :class:`DensityReweight` (Arch 1): s_jk = (1/rho_{n_k}) / max_k' (1/rho_{n_k'}), w = sigmoid(Conv(ReLU(BN(Conv(s))))),
  features multiplied by w after the per-point MLP, before pooling; rho is the ball KDE of
  :func:`.pointgeom.ball_density` (recomputed on the current, possibly noisy, coordinates).
* :class:`WeightNet` (Arch 2): W_jk = ReLU(BN(Conv_{3->32}(x_{n_k} - x_j))); ``pool_weighted`` returns
  max over the 32 columns of F^T W (replaces the neighbour max-pool).
* :class:`OrientationEncoding` (Arch 4, PointSIFT): gather [x_j - x_i, f_j] of the 8 octant neighbours
  (:func:`.pointgeom.octant_neighbors`), then three conv[1x2] stride-2 layers with BN + ReLU pairing the
  octants along z, then y, then x (8 -> 4 -> 2 -> 1).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from .pointgeom import gather
from .pointnet import check_points

__all__ = ["PointCloudNet", "take", "make_head", "SharedMLP", "DensityReweight", "WeightNet", "pool_weighted",
           "OrientationEncoding", "group_features"]

Geometry = Dict[str, torch.Tensor]


def take(geometry: Optional[Geometry], index: torch.Tensor) -> Optional[Geometry]:
    """The geometry of rows ``index`` (every tensor is batch-first)."""
    if geometry is None:
        return None
    return {k: v.index_select(0, index.to(v.device)) for k, v in geometry.items()}


def make_head(c_in: int, hidden: int, num_classes: int, dropout: float = 0.5, bn_momentum: float = 0.1) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, hidden, bias=False), nn.BatchNorm1d(hidden, momentum=bn_momentum), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class SharedMLP(nn.Sequential):
    """1x1 convolutions + BN + ReLU over a channels-first map (B, C, ...) of 1 or 2 spatial dims."""

    def __init__(self, widths: Sequence[int], dims: int = 2, bn_momentum: float = 0.1, last_relu: bool = True):
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv1d, nn.BatchNorm1d)
        layers = []
        n = len(widths) - 1
        for i, (ci, co) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [conv(ci, co, 1, bias=False), bn(co, momentum=bn_momentum)]
            if last_relu or i < n - 1:
                layers.append(nn.ReLU())
        super().__init__(*layers)


class PointCloudNet(nn.Module):
    """Base class: subclasses implement ``geometry(x)`` and ``_forward(x, geometry)``."""

    feature_layer = "head.2"

    def geometry(self, x: torch.Tensor) -> Geometry:
        return {}

    def _forward(self, x: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, geometry: Optional[Geometry] = None) -> torch.Tensor:
        check_points(x, type(self).__name__)
        if geometry is None:
            geometry = self.geometry(x)
        return self._forward(x, geometry)


def group_features(xyz: torch.Tensor, feats: Optional[torch.Tensor], centres: torch.Tensor,
                   idx: torch.Tensor) -> torch.Tensor:
    """Grouped input of a set-abstraction layer: (B, 3 + C, M, k) = [x_{n_k} - c_j, f_{n_k}] for
    neighbour indices ``idx`` (B, M, k) of centres (B, M, 3); ``feats`` (B, N, C) or None."""
    rel = gather(xyz, idx) - centres.unsqueeze(2)                  # (B, M, k, 3)
    g = rel if feats is None else torch.cat([rel, gather(feats, idx)], -1)
    return g.permute(0, 3, 1, 2).contiguous()


class DensityReweight(nn.Module):
    """Arch 1 (PointConv's inverse-density scale): weights (B, 1, M, k) from the densities of the
    grouped points ``rho`` (B, M, k)."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
                                 nn.Conv2d(hidden, 1, 1))

    def forward(self, rho: torch.Tensor) -> torch.Tensor:
        inv = 1.0 / rho.clamp_min(1e-12)
        s = inv / inv.max(dim=-1, keepdim=True).values
        return torch.sigmoid(self.net(s.unsqueeze(1)))


class WeightNet(nn.Module):
    """Arch 2 (PointConv's coordinate weight net): (B, 3, M, k) local coordinates -> (B, width, M, k)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())

    def forward(self, rel: torch.Tensor) -> torch.Tensor:
        return self.net(rel)


def pool_weighted(f: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """max over the weight columns of F^T W: f (B, C, M, k), w (B, D, M, k) -> (B, C, M)."""
    return torch.einsum("bcmk,bdmk->bcmd", f, w).max(dim=-1).values


class OrientationEncoding(nn.Module):
    """Arch 4: PointSIFT's orientation-encoding unit. Input xyz (B, N, 3), features (B, N, C) or
    None, octant indices (B, N, 8); output (B, N, c_out)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        layers, ci = [], c_in + 3
        for _ in range(3):
            layers += [nn.Conv2d(ci, c_out, (1, 2), stride=(1, 2), bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
            ci = c_out
        self.net = nn.Sequential(*layers)

    def forward(self, xyz: torch.Tensor, feats: Optional[torch.Tensor], octants: torch.Tensor) -> torch.Tensor:
        g = group_features(xyz, feats, xyz, octants)               # (B, 3 + C, N, 8), octant code order
        return self.net(g).squeeze(-1).transpose(1, 2)             # (B, N, c_out)
