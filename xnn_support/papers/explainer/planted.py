"""Planted part share (spec section 7 (B)): upper-layer targets whose share a of part information is known.

    P(I) = part heat maps: each part mask of ``creatures`` area-downsampled to the target grid, Gaussian-blurred
           (sigma 1 cell), replicated to ``copies`` channels with random positive gains      localised, one blob
    T(I) = texture energy: squared responses of 4 fixed random zero-mean 5x5 filters of the grey image, pooled
           to the grid, restricted to background pixels, each replicated with random gains     spread out
    target(I) = Rmix [ sqrt(a) P / std(P) ; sqrt(1 - a) T / std(T) ],  Rmix random orthogonal

Rmix makes every target channel a mix of parts and texture ("chaotic", like a real performer channel); with a
linear decoder the reconstruction splits into the two tracks' terms, and ``Rmix^T`` maps each back onto the
planted blocks (:func:`.metrics.block_shares`). Only parts present in the images are used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn.functional as F

from ...core import validate as V

__all__ = ["PlantedBlocks", "planted_blocks", "planted_target", "unmix"]


@dataclass
class PlantedBlocks:
    """The planted blocks before mixing: ``P`` (N, KP, n, n), ``T`` (N, KT, n, n), both of unit std, ``Rmix``
    (KP + KT, KP + KT) orthogonal, ``parts`` (indices of the part masks used), ``part_names``."""
    P: torch.Tensor
    T: torch.Tensor
    Rmix: torch.Tensor
    parts: List[int]
    part_names: List[str]

    def subset(self, idx) -> "PlantedBlocks":
        """The blocks of images ``idx`` (same Rmix, same normalisation)."""
        return PlantedBlocks(self.P[idx], self.T[idx], self.Rmix, self.parts, self.part_names)


def _blur(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    r = int(2 * sigma + 0.5)
    g = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    C = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)


def planted_blocks(ds, grid: int, *, copies: int = 4, seed: int = 0) -> PlantedBlocks:
    """P and T blocks of the images of ``ds`` (an ImageSet with part masks and a foreground mask) on a
    ``grid`` x ``grid`` map, and a random orthogonal Rmix; same ``seed``, same blocks."""
    V.positive_int("grid", grid)
    V.positive_int("copies", copies)
    if getattr(ds, "part_masks", None) is None or getattr(ds, "fg_mask", None) is None:
        raise V.fail("ds", "an ImageSet with part_masks and fg_mask", V.Shown(type(ds).__name__),
                     "pass creatures(...) images")
    g = torch.Generator().manual_seed(int(seed))
    pm = ds.part_masks.float()
    parts = [int(k) for k in torch.nonzero(pm.flatten(2).sum((0, 2)) > 0).flatten()]
    P = _blur(F.adaptive_avg_pool2d(pm[:, parts], grid)).repeat_interleave(copies, 1)
    P = P * (0.5 + torch.rand(P.shape[1], generator=g))[None, :, None, None]
    grey = ds.images.float().mean(1, keepdim=True)
    k = torch.randn(4, 1, 5, 5, generator=g)
    k = k - k.mean((2, 3), keepdim=True)                       # zero mean: high-pass
    energy = F.conv2d(grey, k, padding=2) ** 2 * (~ds.fg_mask.bool()).float()[:, None]
    KP = P.shape[1]
    T = F.adaptive_avg_pool2d(energy, grid).repeat_interleave(-(-KP // 4), 1)[:, :KP]   # as many channels as P
    T = T * (0.5 + torch.rand(KP, generator=g))[None, :, None, None]
    C = P.shape[1] + T.shape[1]
    Q, R = torch.linalg.qr(torch.randn(C, C, generator=g, dtype=torch.float64))
    Q = Q * torch.sign(torch.diagonal(R))[None, :]
    names = [ds.part_names[k] for k in parts] if getattr(ds, "part_names", None) else [str(k) for k in parts]
    return PlantedBlocks(P / P.std(), T / T.std(), Q.float(), parts, names)


def planted_target(blocks: PlantedBlocks, a: float) -> torch.Tensor:
    """(N, C, n, n) target with part share ``a`` in [0, 1]: Rmix [sqrt(a) P ; sqrt(1 - a) T]."""
    a = V.in_range("a", a, 0, 1)
    x = torch.cat([blocks.P * a ** 0.5, blocks.T * (1 - a) ** 0.5], 1)
    return torch.einsum("ck,nkhw->nchw", blocks.Rmix, x)


def unmix(blocks: PlantedBlocks, r: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rmix^T r split into its (P block, T block) parts."""
    x = torch.einsum("ck,nchw->nkhw", blocks.Rmix, r.float())
    return x[:, :blocks.P.shape[1]], x[:, blocks.P.shape[1]:]
