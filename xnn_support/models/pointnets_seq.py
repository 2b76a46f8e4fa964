"""Small CPU-trainable PointConv, Point2Sequence and DGCNN backbones with the switchable architecture
modules of paper 06 (Shen et al., CVPR 2021; spec ``06_pointcloud_utilities.md`` sections 2.1, 6).

Original architectures:

* PointConv: W. Wu, Z. Qi, L. Fuxin, "PointConv: Deep Convolutional Networks on 3D Point Clouds",
  CVPR 2019.
* Point2Sequence: X. Liu, Z. Han, Y.-S. Liu, M. Zwicker, "Point2Sequence: Learning the Shape
  Representation of 3D Point Clouds with an Attention-based Sequence to Sequence Network", AAAI 2019.
* DGCNN: Y. Wang, Y. Sun, Z. Liu, S. E. Sarma, M. M. Bronstein, J. M. Solomon, "Dynamic Graph CNN for
  Learning on Point Clouds", ACM TOG 2019.

Switches (Arch numbers of the paper):

* :class:`MiniPointConv` -- ``density`` (Arch 1): grouped features times ``DensityReweight`` of the ball
  KDE (``pointgeom.ball_density``, variance 0.05 * (1, 2, 4) per layer) of every grouped point on its own
  kNN neighbourhood (indices cached, KDE recomputed on the current, possibly noisy, coordinates);
  ``weightnet`` (Arch 2): out = Linear(flatten(F^T W)), W = WeightNet(rel xyz) (32 columns): PointConv's
  [1 x C] conv over F^T W. ``weightnet=False`` is the official "noweight" model: the same linear layer on F
  flattened over the k kNN-sorted neighbours, an ORDER-DEPENDENT linear mix (not a max-pool).
* :class:`MiniPoint2Sequence` -- Arch 3 = ``scales`` (number of kNN scales, e.g. (8, 16, 32, 64) vs
  (16, 32, 64) vs (32, 64)); ``density`` (Arch 1) only in the global SA, as in the official release;
  ``weightnet`` (Arch 2): per-scale ``pool_weighted(F, WeightNet(rel))`` replaces the max-pool;
  ``orientation`` (Arch 4): one PointSIFT ``OrientationEncoding`` unit (octant radius ``oe_radius``) on the
  input points, whose output features are grouped with the relative coordinates at every scale.
* :class:`DGCNN` -- Arch 3 = ``scales``: (16,) single-scale EdgeConv; (8, 16) or more: one EdgeConv branch
  per k, outputs concatenated, widths split so the parameter count stays about the same.

Fixed sampling (spec 2.2): ``geometry(x)`` returns every index tensor that depends on coordinates only
(FPS, kNN groups, KDE neighbourhoods, octants, DGCNN's first-layer coordinate graph). DGCNN's later graphs
are kNN in FEATURE space and are always recomputed in the forward from the current features (the
"dynamic graph"), so noise can change them even with a cached geometry.

Deviations from the originals (all for small CPU budgets): kNN instead of ball query everywhere; few,
narrow layers; k = 16 fixed in PointConv (kNN padded with the nearest point when a layer has fewer than
k points, so the "noweight" linear layer has a fixed size for any N >= 32); PointConv's global layer is a
PointNet-style MLP + max over the centres (with Arch 1 when ``density``), because the official
noweight global conv has an N-dependent width; the Point2Sequence decoder is replaced by one GRU over the
scales + Luong-style attention with the last hidden state as query; DGCNN uses only the global max (no
avg pool) and an embedding of 128.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple, Union

import torch
from torch import nn

from .pointgeom import ball_density, farthest_point_sample, gather, knn, octant_neighbors
from .pointnets_base import (DensityReweight, OrientationEncoding, PointCloudNet, SharedMLP, WeightNet,
                             group_features, make_head, pool_weighted)

__all__ = ["MiniPointConv", "MiniPoint2Sequence", "DGCNN", "register_all"]

Geometry = Dict[str, torch.Tensor]
Count = Union[int, float]


def _count(spec: Count, n: int) -> int:
    """Number of centres: a fraction of ``n`` (float) or an absolute count (int), clipped to [1, n]."""
    m = int(round(spec * n)) if isinstance(spec, float) else int(spec)
    return max(1, min(n, m))


def _knn_padded(pts: torch.Tensor, k: int, queries: torch.Tensor = None) -> torch.Tensor:
    """kNN indices (B, M, k); when ``pts`` has fewer than k points, pad with the nearest one."""
    kk = min(k, pts.shape[1])
    idx = knn(pts, kk, queries)
    if kk < k:
        idx = torch.cat([idx, idx[..., :1].expand(*idx.shape[:-1], k - kk)], -1)
    return idx


def _grouped_rho(pts: torch.Tensor, dens_idx: torch.Tensor, variance: float, idx: torch.Tensor) -> torch.Tensor:
    """KDE of every point of ``pts`` on its own neighbourhood, gathered at group indices ``idx`` (B, M, k)."""
    rho = ball_density(pts, dens_idx, variance).unsqueeze(-1)           # (B, n, 1)
    return gather(rho, idx).squeeze(-1)


class MiniPointConv(PointCloudNet):
    """Two PointConv SA layers on kNN groups (FPS centres) + a global layer + head."""

    def __init__(self, num_classes: int = 10, density: bool = True, weightnet: bool = True,
                 widths: Sequence[Tuple[int, int]] = ((16, 32), (32, 64), (64, 128)),
                 centres: Sequence[Count] = (0.25, 0.0625), k: int = 16, hidden: int = 128,
                 dropout: float = 0.5, variances: Sequence[float] = (0.05, 0.1, 0.2), wn_width: int = 32):
        super().__init__()
        self.density, self.weightnet, self.k = density, weightnet, k
        self.centres, self.variances = tuple(centres), tuple(variances)
        (m1, o1), (m2, o2), (m3, o3) = widths
        self.mlps = nn.ModuleList([SharedMLP([3, m1]), SharedMLP([3 + o1, m2])])
        mix = wn_width if weightnet else k
        self.convs = nn.ModuleList([SharedMLP([m1 * mix, o1], dims=1), SharedMLP([m2 * mix, o2], dims=1)])
        self.wnets = nn.ModuleList([WeightNet(wn_width) for _ in range(2)]) if weightnet else None
        self.dens = nn.ModuleList([DensityReweight() for _ in range(3)]) if density else None
        self.glob = SharedMLP([3 + o2, m3, o3])
        self.head = make_head(o3, hidden, num_classes, dropout)

    def geometry(self, x: torch.Tensor) -> Geometry:
        n = x.shape[1]
        g = {"fps1": farthest_point_sample(x, _count(self.centres[0], n))}
        c1 = gather(x, g["fps1"])
        g["knn1"] = _knn_padded(x, self.k, c1)
        g["fps2"] = farthest_point_sample(c1, _count(self.centres[1], c1.shape[1]))
        c2 = gather(c1, g["fps2"])
        g["knn2"] = _knn_padded(c1, self.k, c2)
        if self.density:
            g["dens0"], g["dens1"], g["dens2"] = (_knn_padded(p, self.k) for p in (x, c1, c2))
        return g

    def _sa(self, i: int, pts, feats, centres, idx, dens_idx):
        grouped = group_features(pts, feats, centres, idx)            # (B, 3 + C, M, k)
        f = self.mlps[i](grouped)                                     # (B, C, M, k)
        if self.density:
            f = f * self.dens[i](_grouped_rho(pts, dens_idx, self.variances[i], idx))
        B, C, M, k = f.shape
        if self.weightnet:
            w = self.wnets[i](grouped[:, :3])                         # (B, D, M, k)
            mixed = torch.einsum("bcmk,bdmk->bcdm", f, w).reshape(B, C * w.shape[1], M)
        else:  # "noweight": order-dependent linear mix of the kNN-sorted neighbours
            mixed = f.permute(0, 1, 3, 2).reshape(B, C * k, M)
        return self.convs[i](mixed).transpose(1, 2)                  # (B, M, C_out)

    def _forward(self, x: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        g = geometry
        c1 = gather(x, g["fps1"])
        f1 = self._sa(0, x, None, c1, g["knn1"], g.get("dens0"))
        c2 = gather(c1, g["fps2"])
        f2 = self._sa(1, c1, f1, c2, g["knn2"], g.get("dens1"))
        h = self.glob(torch.cat([c2, f2], -1).transpose(1, 2).unsqueeze(2))   # (B, C, 1, M2)
        if self.density:
            all_idx = torch.arange(c2.shape[1], device=x.device).expand(x.shape[0], 1, -1)
            h = h * self.dens[2](_grouped_rho(c2, g["dens2"], self.variances[2], all_idx))
        return self.head(h.amax(dim=(2, 3)))


class MiniPoint2Sequence(PointCloudNet):
    """FPS centres, multi-scale kNN groups -> per-scale MLP + pool -> GRU + attention over the scales ->
    global SA (MLP + max over centres) -> head."""

    def __init__(self, num_classes: int = 10, scales: Sequence[int] = (8, 16, 32, 64), density: bool = False,
                 weightnet: bool = False, orientation: bool = False, centres: Count = 0.25,
                 scale_widths: Sequence[int] = (32, 64), rnn_hidden: int = 64,
                 global_widths: Sequence[int] = (128, 256), hidden: int = 128, dropout: float = 0.5,
                 oe_radius: float = 0.25, oe_width: int = 32, density_variance: float = 0.2,
                 density_k: int = 16, wn_width: int = 32):
        super().__init__()
        if not 1 <= len(scales) <= 4:
            raise ValueError(f"scales must list 1 to 4 neighbourhood sizes, got {scales}")
        self.scales, self.centres = tuple(int(s) for s in scales), centres
        self.density, self.weightnet, self.orientation = density, weightnet, orientation
        self.oe_radius, self.density_variance, self.density_k = oe_radius, density_variance, density_k
        self.oe = OrientationEncoding(0, oe_width) if orientation else None
        c_in = 3 + (oe_width if orientation else 0)
        c = scale_widths[-1]
        self.mlps = nn.ModuleList([SharedMLP([c_in, *scale_widths]) for _ in self.scales])
        self.wnets = nn.ModuleList([WeightNet(wn_width) for _ in self.scales]) if weightnet else None
        self.gru = nn.GRU(c, rnn_hidden, batch_first=True)
        self.att_w = nn.Linear(rnn_hidden, rnn_hidden, bias=False)
        self.att_out = nn.Linear(2 * rnn_hidden, rnn_hidden)
        self.dens = DensityReweight() if density else None
        self.glob = SharedMLP([3 + rnn_hidden, *global_widths])
        self.head = make_head(global_widths[-1], hidden, num_classes, dropout)

    def geometry(self, x: torch.Tensor) -> Geometry:
        n = x.shape[1]
        g = {"fps": farthest_point_sample(x, _count(self.centres, n))}
        c = gather(x, g["fps"])
        for s in self.scales:
            g[f"knn{s}"] = knn(x, min(s, n), c)
        if self.orientation:
            g["octants"] = octant_neighbors(x, self.oe_radius)
        if self.density:
            g["dens"] = knn(c, min(self.density_k, c.shape[1]))
        return g

    def _forward(self, x: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        g = geometry
        c = gather(x, g["fps"])                                         # (B, M, 3)
        feats = self.oe(x, None, g["octants"]) if self.orientation else None
        seq = []
        for i, s in enumerate(self.scales):
            grouped = group_features(x, feats, c, g[f"knn{s}"])         # (B, 3 + C, M, k)
            f = self.mlps[i](grouped)
            seq.append(pool_weighted(f, self.wnets[i](grouped[:, :3])) if self.weightnet else f.amax(-1))
        B, C, M = seq[0].shape
        seq = torch.stack(seq, 1).permute(0, 3, 1, 2).reshape(B * M, len(self.scales), C)
        out, last = self.gru(seq)                                       # (BM, T, H), (1, BM, H)
        q = last[0]
        a = torch.softmax(torch.einsum("bth,bh->bt", self.att_w(out), q), dim=1)
        ctx = torch.einsum("bt,bth->bh", a, out)
        h = torch.tanh(self.att_out(torch.cat([ctx, q], -1))).reshape(B, M, -1)
        h = self.glob(torch.cat([c, h], -1).transpose(1, 2).unsqueeze(2))    # (B, C, 1, M)
        if self.density:
            all_idx = torch.arange(M, device=x.device).expand(B, 1, -1)
            h = h * self.dens(_grouped_rho(c, g["dens"], self.density_variance, all_idx))
        return self.head(h.amax(dim=(2, 3)))


class EdgeConv(nn.Module):
    """[x_i, x_j - x_i] over the kNN graph idx (B, N, k) -> Conv2d + BN + LeakyReLU(0.2) -> max over j."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2 * c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
                                 nn.LeakyReLU(0.2))

    def forward(self, h: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:   # h (B, N, C) -> (B, N, C_out)
        nb = gather(h, idx)                                             # (B, N, k, C)
        ctr = h.unsqueeze(2).expand_as(nb)
        e = torch.cat([ctr, nb - ctr], -1).permute(0, 3, 1, 2)          # (B, 2C, N, k)
        return self.net(e).amax(-1).transpose(1, 2)


class DGCNN(PointCloudNet):
    """EdgeConv layers on dynamic kNN graphs (one branch per k in ``scales``) + Conv1d + global max + head."""

    def __init__(self, num_classes: int = 10, scales: Sequence[int] = (16,),
                 widths: Sequence[int] = (32, 32, 64), emb: int = 128, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        if len(scales) < 1:
            raise ValueError("scales must list at least one k")
        self.scales = tuple(int(s) for s in scales)
        self.layers = nn.ModuleList()
        c, total = 3, 0
        for w in widths:
            bw = max(1, -(-w // len(self.scales)))                      # branch width, total ~ w
            self.layers.append(nn.ModuleList([EdgeConv(c, bw) for _ in self.scales]))
            c = bw * len(self.scales)
            total += c
        self.embed = SharedMLP([total, emb], dims=1)
        self.embed[-1] = nn.LeakyReLU(0.2)
        self.head = make_head(emb, hidden, num_classes, dropout)

    def geometry(self, x: torch.Tensor) -> Geometry:
        """Only the first-layer (coordinate) graphs; later graphs depend on features (see module doc)."""
        return {f"knn{s}": knn(x, min(s, x.shape[1])) for s in self.scales}

    def _forward(self, x: torch.Tensor, geometry: Geometry) -> torch.Tensor:
        h, outs = x, []
        for li, branches in enumerate(self.layers):
            idx = [geometry[f"knn{s}"] if li == 0 else knn(h, min(s, h.shape[1])) for s in self.scales]
            h = torch.cat([b(h, i) for b, i in zip(branches, idx)], -1)
            outs.append(h)
        f = self.embed(torch.cat(outs, -1).transpose(1, 2))            # (B, emb, N)
        return self.head(f.amax(-1))


def register_all(register) -> None:
    """Register the three backbones with the zoo's ``register(name, factory)``."""
    register("pointconv", MiniPointConv)
    register("point2sequence", MiniPoint2Sequence)
    register("dgcnn", DGCNN)
