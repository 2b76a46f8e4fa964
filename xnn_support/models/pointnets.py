"""Mini PointNet++ and Mini PointSIFT with the switchable architecture modules of paper 06.

Shen, Wei, Huang, Zhang, Chen, Zhao, Zhang, "Verifiability and Predictability: Interpreting Utilities of
Network Architectures for Point Cloud Processing", CVPR 2021 (arXiv 1911.09053; official TF code
``ada-shen/utility``). Spec: ``06_pointcloud_utilities.md`` sections 2.1 (modules) and 6 (mini backbones).

:class:`MiniPointNet2` (PointNet++ classifier, SSG by default): SA1 (FPS to ``centres[0]`` of N, ball query
``radii[0]``, ``k`` neighbours, MLP, max), SA2 (same on the SA1 centres), global SA (all SA2 points, absolute
coordinates, MLP, max), then :func:`make_head`. Switches:

* ``density`` (Arch 1): in SA1, SA2 and the global SA the per-neighbour MLP output is multiplied by
  :class:`DensityReweight` weights before pooling; rho_j = :func:`ball_density` over point j's own ball
  (radius = the layer's radius, at most 32 neighbours; global SA radius 1.0) with variance radius/2, recomputed
  on the current (possibly noisy) coordinates with the cached neighbour indices.
* ``weightnet`` (Arch 2): SA1/SA2 replace the neighbour max by ``pool_weighted(F, WeightNet(x_nk - c_j))``.
* ``msg`` (Arch 3): SA1/SA2 use ``msg_scales`` groupings, radius r * 2^(t - S//2) and k * 2^(t - S//2)
  ((r/2, r, 2r), (k/2, k, 2k) for S = 3), each with its own MLP (hidden widths halved, last width ceil(w/S)) so
  the concatenated width and the parameter count stay close to SSG (the official MSG is not
  parameter-matched, spec section 5).
* ``orientation`` (Arch 4): one :class:`OrientationEncoding` unit (octant radius ``oe_radius`` = 0.85) on the
  SA2 centres, between SA2 and the global SA, added to the SA2 features (residual).

:class:`MiniPointSIFT`: two stacked OE units on all input points (octant radius ``radius``; the second one
residual), one SA layer and the global SA + head. ``orientation=False`` ("nosift") replaces each OE unit by a
per-point 3-layer :class:`SharedMLP` on [xyz, f] of the same widths: the same depth and output width, about
half the parameters of an OE unit (whose convs see octant pairs).

Geometry (``model.geometry(x)``, batch-first long tensors computed on the clean cloud, reused for noisy copies):
``sa1_fps`` (B, M1) into x, ``sa1_group{t}`` (B, M1, k_t), ``sa2_fps`` (B, M2) into the SA1 centres,
``sa2_group{t}``, ``sa{1,2,3}_dens`` (B, n, 32) density balls, ``oe_oct`` (B, M2, 8); PointSIFT: ``oe_oct``
(B, N, 8), ``sa1_fps``, ``sa1_group0``. Grouped coordinates are the current coordinates gathered with the
cached indices minus the current centres (gathered with the cached FPS indices). FPS starts at index 0, so
the forward has no randomness (and is not invariant to point order).

Deviations from the official code: narrower layers and fewer centres (CPU scale; centres as fractions of N),
BatchNorm everywhere, the head of :func:`make_head` (FC -> 128 -> classes), density balls capped at 32
neighbours (official 128), WeightNet on SA1/SA2 only (the official PN++ weight model file is missing), MSG
parameter-matched, and PointSIFT shrunk to two OE units + one SA layer.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .pointgeom import ball_density, ball_query, farthest_point_sample, gather, octant_neighbors
from .pointnets_base import (DensityReweight, OrientationEncoding, PointCloudNet, SharedMLP, WeightNet,
                             group_features, make_head, pool_weighted)

__all__ = ["MiniPointNet2", "MiniPointSIFT", "SetAbstraction", "register_all"]

Geometry = Dict[str, torch.Tensor]
DENSITY_K = 32


def _count(spec: Union[int, float], n: int) -> int:
    """Number of centres: a float is a fraction of ``n`` (the input cloud's N, for every layer), an int a
    count; clamped to [1, n]."""
    m = int(round(spec * n)) if isinstance(spec, float) else int(spec)
    return max(1, min(n, m))


class SetAbstraction(nn.Module):
    """One set-abstraction layer with one or more groupings ``scales`` = [(radius, k, widths), ...]
    (``widths`` excludes the input width 3 + c_in). ``group_all``: one group of all points in absolute
    coordinates (the global SA). Output (B, M, sum of last widths)."""

    def __init__(self, c_in: int, scales: Sequence[Tuple[float, int, Sequence[int]]], density: bool = False,
                 weightnet: bool = False, density_radius: float = 0.25, group_all: bool = False):
        super().__init__()
        self.scales = [(float(r), int(k)) for r, k, _ in scales]
        self.group_all, self.density_radius = group_all, float(density_radius)
        self.mlps = nn.ModuleList(SharedMLP([3 + c_in, *w]) for _, _, w in scales)
        self.dens = nn.ModuleList(DensityReweight() for _ in scales) if density else None
        self.wnets = nn.ModuleList(WeightNet() for _ in scales) if weightnet else None
        self.c_out = sum(w[-1] for _, _, w in scales)

    def geometry(self, xyz: torch.Tensor, centres: Optional[torch.Tensor], prefix: str) -> Geometry:
        geo = {}
        if not self.group_all:
            for t, (r, k) in enumerate(self.scales):
                geo[f"{prefix}_group{t}"] = ball_query(xyz, centres, r, k)
        if self.dens is not None:
            geo[f"{prefix}_dens"] = ball_query(xyz, xyz, self.density_radius, DENSITY_K)
        return geo

    def forward(self, xyz: torch.Tensor, feats: Optional[torch.Tensor], centres: Optional[torch.Tensor],
                geo: Geometry, prefix: str) -> torch.Tensor:
        B, n = xyz.shape[:2]
        rho = None
        if self.dens is not None:
            rho = ball_density(xyz, geo[f"{prefix}_dens"], self.density_radius / 2).unsqueeze(-1)  # (B, n, 1)
        outs = []
        for t in range(len(self.scales)):
            if self.group_all:
                idx = torch.arange(n, device=xyz.device).expand(B, 1, n)
                centres = xyz.new_zeros(B, 1, 3)
            else:
                idx = geo[f"{prefix}_group{t}"]
            g = group_features(xyz, feats, centres, idx)                     # (B, 3 + C, M, k)
            f = self.mlps[t](g)
            if rho is not None:
                f = f * self.dens[t](gather(rho, idx).squeeze(-1))
            f = pool_weighted(f, self.wnets[t](g[:, :3])) if self.wnets is not None else f.max(-1).values
            outs.append(f)
        return torch.cat(outs, 1).transpose(1, 2)                            # (B, M, C_out)


def _msg_widths(widths: Sequence[int], s: int) -> list:
    if s == 1:
        return list(widths)
    return [max(4, math.ceil(w / 2)) for w in widths[:-1]] + [max(4, math.ceil(widths[-1] / s))]


class MiniPointNet2(PointCloudNet):
    """Small PointNet++ classifier (SSG by default) with the paper's four switchable modules (module doc)."""

    def __init__(self, num_classes: int = 10, centres: Sequence[Union[int, float]] = (0.25, 0.0625),
                 radii: Sequence[float] = (0.25, 0.5), k: int = 16,
                 widths: Sequence[Sequence[int]] = ((32, 32, 64), (64, 64, 128), (128, 256)),
                 hidden: int = 128, dropout: float = 0.5, msg: bool = False, msg_scales: int = 3,
                 density: bool = False, weightnet: bool = False, orientation: bool = False,
                 oe_radius: float = 0.85, global_radius: float = 1.0):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if len(centres) != 2 or len(radii) != 2 or len(widths) != 3:
            raise ValueError("need 2 centre counts, 2 radii and 3 MLP width lists (SA1, SA2, global SA)")
        if msg and msg_scales < 1:
            raise ValueError(f"msg_scales must be >= 1, got {msg_scales!r}")
        self.centres, self.k = tuple(centres), int(k)
        self.msg, self.density, self.weightnet, self.orientation = msg, density, weightnet, orientation
        self.oe_radius = float(oe_radius)
        S = msg_scales if msg else 1
        c = 0
        for i, (r, w) in enumerate(zip(radii, widths[:2])):
            f = [2.0 ** (t - S // 2) for t in range(S)] if S > 1 else [1.0]
            scales = [(r * a, max(1, int(round(k * a))), _msg_widths(w, S)) for a in f]
            sa = SetAbstraction(c, scales, density, weightnet, density_radius=r)
            setattr(self, f"sa{i + 1}", sa)
            c = sa.c_out
        self.oe = OrientationEncoding(c, c) if orientation else None
        self.sa3 = SetAbstraction(c, [(0.0, 0, widths[2])], density, False, density_radius=global_radius,
                                  group_all=True)
        self.head = make_head(self.sa3.c_out, hidden, num_classes, dropout)

    @torch.no_grad()
    def geometry(self, x: torch.Tensor) -> Geometry:
        x = x.detach()
        fps1 = farthest_point_sample(x, _count(self.centres[0], x.shape[1]))
        l1 = gather(x, fps1)
        fps2 = farthest_point_sample(l1, min(l1.shape[1], _count(self.centres[1], x.shape[1])))
        l2 = gather(l1, fps2)
        geo = {"sa1_fps": fps1, "sa2_fps": fps2, **self.sa1.geometry(x, l1, "sa1"),
               **self.sa2.geometry(l1, l2, "sa2"), **self.sa3.geometry(l2, None, "sa3")}
        if self.oe is not None:
            geo["oe_oct"] = octant_neighbors(l2, self.oe_radius)
        return geo

    def _forward(self, x: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        l1 = gather(x, geometry["sa1_fps"])
        f1 = self.sa1(x, None, l1, geometry, "sa1")
        l2 = gather(l1, geometry["sa2_fps"])
        f2 = self.sa2(l1, f1, l2, geometry, "sa2")
        if self.oe is not None:
            f2 = f2 + self.oe(l2, f2, geometry["oe_oct"])
        return self.head(self.sa3(l2, f2, None, geometry, "sa3").flatten(1))


class _PointMLP(nn.Module):
    """"nosift" stand-in for an OE unit: per-point SharedMLP on [xyz, f] with the OE unit's 3 layers."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.net = SharedMLP([3 + c_in, c_out, c_out, c_out], dims=1)

    def forward(self, xyz: torch.Tensor, feats: Optional[torch.Tensor], octants=None) -> torch.Tensor:
        g = xyz if feats is None else torch.cat([xyz, feats], -1)
        return self.net(g.transpose(1, 2)).transpose(1, 2)


class MiniPointSIFT(PointCloudNet):
    """Small PointSIFT classifier: 2 OE units (second residual) on all points, one SA layer, global SA, head.
    ``orientation=False`` is the "nosift" control (per-point MLPs instead of OE units, module doc)."""

    def __init__(self, num_classes: int = 10, orientation: bool = True, width: int = 64, radius: float = 0.25,
                 centres: Union[int, float] = 0.25, sa_radius: float = 0.5, k: int = 16,
                 sa_widths: Sequence[int] = (128, 128), global_widths: Sequence[int] = (128, 256),
                 hidden: int = 128, dropout: float = 0.5, residual: bool = True):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.orientation, self.radius, self.centres, self.residual = orientation, float(radius), centres, residual
        unit = OrientationEncoding if orientation else _PointMLP
        self.oe1, self.oe2 = unit(0, width), unit(width, width)
        self.sa1 = SetAbstraction(width, [(sa_radius, k, sa_widths)])
        self.sa3 = SetAbstraction(self.sa1.c_out, [(0.0, 0, global_widths)], group_all=True)
        self.head = make_head(self.sa3.c_out, hidden, num_classes, dropout)

    @torch.no_grad()
    def geometry(self, x: torch.Tensor) -> Geometry:
        x = x.detach()
        fps = farthest_point_sample(x, _count(self.centres, x.shape[1]))
        geo = {"sa1_fps": fps, **self.sa1.geometry(x, gather(x, fps), "sa1")}
        if self.orientation:
            geo["oe_oct"] = octant_neighbors(x, self.radius)
        return geo

    def _forward(self, x: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        octs = geometry.get("oe_oct")
        f = self.oe1(x, None, octs)
        f2 = self.oe2(x, f, octs)
        f = f2 + f if self.residual else f2
        l1 = gather(x, geometry["sa1_fps"])
        f1 = self.sa1(x, f, l1, geometry, "sa1")
        return self.head(self.sa3(l1, f1, None, geometry, "sa3").flatten(1))


def register_all(register) -> None:
    """Register "pointnet2" -> :class:`MiniPointNet2` and "pointsift" -> :class:`MiniPointSIFT` with the
    zoo's ``register(name, factory)``."""
    register("pointnet2", MiniPointNet2)
    register("pointsift", MiniPointSIFT)
