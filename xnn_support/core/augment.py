"""Batch augmentations for the trainer (:func:`xnn_support.train.fit`), vectorised and seeded.

Names, joined with ``+`` (e.g. ``"flip+shift"``):

* images (B, C, H, W): ``flip`` (horizontal flip, p = 0.5), ``shift`` (random translation up to
  1/8 of the size, reflected borders, one ``grid_sample`` for the batch);
* point clouds (B, N, 3): ``jitter`` (Gaussian noise, sigma 0.01, clipped at 0.05), ``scale``
  (uniform 0.8-1.25), ``rotate_z`` (random rotation about the z axis), ``rotate_so3`` (uniform random
  rotation in SO(3): the "rr" training of paper 06).

Every function takes ``(x, generator)`` and draws all randomness from that CPU generator, so a run
is reproducible from its seed. A callable ``(x, generator) -> x`` can be passed instead of a name.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

__all__ = ["make_augment", "AUGMENTATIONS"]


def _uniform(n: int, g: torch.Generator, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _need(x: torch.Tensor, dims: int, what: str, name: str) -> None:
    if x.dim() != dims:
        raise ValueError(f"augmentation {name!r} needs {what}, got shape {tuple(x.shape)}")


def flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    _need(x, 4, "images (B, C, H, W)", "flip")
    m = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(m, x.flip(-1), x)


def shift(x: torch.Tensor, g: torch.Generator, frac: float = 0.125) -> torch.Tensor:
    _need(x, 4, "images (B, C, H, W)", "shift")
    b = x.shape[0]
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = (torch.rand(b, 2, generator=g) * 2 - 1) * 2 * frac  # grid units span 2
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def jitter(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    _need(x, 3, "points (B, N, 3)", "jitter")
    noise = (torch.randn(x.shape, generator=g) * 0.01).clamp(-0.05, 0.05)
    return x + noise.to(x.device, x.dtype)


def scale(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    _need(x, 3, "points (B, N, 3)", "scale")
    s = torch.exp(_uniform(x.shape[0], g, math.log(0.8), math.log(1.25)))
    return x * s.to(x.device, x.dtype).view(-1, 1, 1)


def rotate_z(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    _need(x, 3, "points (B, N, 3)", "rotate_z")
    a = _uniform(x.shape[0], g, 0.0, 2 * math.pi)
    c, s = torch.cos(a), torch.sin(a)
    z, o = torch.zeros_like(a), torch.ones_like(a)
    rot = torch.stack([c, -s, z, s, c, z, z, z, o], 1).view(-1, 3, 3)
    return x @ rot.transpose(1, 2).to(x.device, x.dtype)


def rotate_so3(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Uniform random rotations (QR of a Gaussian matrix, sign-fixed, det +1)."""
    _need(x, 3, "points (B, N, 3)", "rotate_so3")
    q, r = torch.linalg.qr(torch.randn(x.shape[0], 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)
    q[:, :, 0] *= torch.sign(torch.det(q)).unsqueeze(1)
    return x @ q.transpose(1, 2).to(x.device, x.dtype)


AUGMENTATIONS = {"flip": flip, "shift": shift, "jitter": jitter, "scale": scale, "rotate_z": rotate_z,
                 "rotate_so3": rotate_so3}


def make_augment(spec: Union[None, str, Callable]) -> Optional[Callable]:
    """None, a callable ``(x, generator) -> x``, or ``"name+name"``; returns a callable or None."""
    if spec is None or callable(spec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"augment must be None, a callable or a name string, got {spec!r}")
    names = [s.strip() for s in spec.split("+")]
    bad = [s for s in names if s not in AUGMENTATIONS]
    if bad:
        raise ValueError(f"unknown augmentation(s) {bad}; available: {sorted(AUGMENTATIONS)}")
    fns = [AUGMENTATIONS[s] for s in names]

    def apply(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for f in fns:
            x = f(x, g)
        return x

    return apply
