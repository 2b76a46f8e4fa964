"""Planted differences of notebook 10 (spec section 2.4): a known, non-function-preserving change.

* :func:`erase_layer` -- the E-layer: multiply the output of layer l by a binary spatial mask that keeps the central
  square. Input pixels whose receptive field at l lies outside the square have exactly zero influence on every
  layer >= l and unchanged influence below l (:func:`zero_influence` finds them by gradients, in float64).
* :func:`central_square` -- the kept square at a layer's resolution.
"""
from __future__ import annotations

import copy
from typing import Tuple

import torch
from torch import nn

from ...core import validate as V
from ...core.capture import resolve_layers
from ...core.utils import device_of

__all__ = ["SpatialMask", "erase_layer", "central_square", "zero_influence"]


class SpatialMask(nn.Module):
    """x * mask, mask (h, w) of 0 / 1 broadcast over batch and channels."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.float()[None, None])

    def forward(self, x):
        return x * self.mask.to(x.dtype)


def central_square(h: int, w: int, keep: float = 0.5) -> torch.Tensor:
    """(h, w) 0 / 1 mask keeping the central ``keep`` fraction of each side."""
    keep = V.in_range("keep", keep, 0.0, 1.0, low_open=True)
    m = torch.zeros(h, w)
    dh, dw = max(1, round(h * keep)), max(1, round(w * keep))
    m[(h - dh) // 2:(h - dh) // 2 + dh, (w - dw) // 2:(w - dw) // 2 + dw] = 1
    return m


@torch.no_grad()
def _out_shape(model: nn.Module, layer: str, x: torch.Tensor) -> Tuple[int, ...]:
    out = {}
    def hook(m, i, o):
        out["o"] = o.shape

    h = model.get_submodule(layer).register_forward_hook(hook)
    try:
        model(x[:1])
    finally:
        h.remove()
    return tuple(out["o"])


def erase_layer(model: nn.Module, layer, x: torch.Tensor, *, keep: float = 0.5) -> Tuple[nn.Module, str]:
    """A copy of ``model`` whose ``layer`` output is multiplied by :func:`central_square` (the E-layer); returns
    ``(model_E, name of the mask module)``: read the erased layer there."""
    layer = next(iter(resolve_layers(model, layer)))
    shape = _out_shape(model, layer, x)
    if len(shape) != 4:
        raise ValueError(f"erase_layer needs a spatial (B, C, h, w) layer; {layer!r} gives {shape}")
    m = copy.deepcopy(model).eval()
    head, _, tail = layer.rpartition(".")
    parent = m.get_submodule(head) if head else m
    mod = getattr(parent, tail)
    setattr(parent, tail, nn.Sequential(mod, SpatialMask(central_square(shape[2], shape[3], keep)).to(device_of(m))))
    return m, f"{layer}.1"


def zero_influence(model: nn.Module, layer: str, x: torch.Tensor, *, draws: int = 4, seed: int = 0) -> torch.Tensor:
    """(H, W) bool: input pixels with exactly zero gradient of ``layer``'s output (random projections, the images
    ``x`` and noisy copies, float64) -- the pixels the layer cannot see."""
    m = copy.deepcopy(model).double().eval()
    g = torch.Generator().manual_seed(seed)
    mod = m.get_submodule(layer)
    seen = torch.zeros(x.shape[-2:], dtype=torch.bool)
    for d in range(draws):
        xi = (x.double() + (0.1 * d) * torch.randn(x.shape, generator=g, dtype=torch.float64)).to(device_of(m))
        xi.requires_grad_(True)
        out = {}
        h = mod.register_forward_hook(lambda mm, i, o: out.update(o=o))
        try:
            m(xi)
        finally:
            h.remove()
        f = out["o"]
        proj = torch.randn(f.shape, generator=g, dtype=torch.float64).to(f.device)
        (gx,) = torch.autograd.grad((f * proj).sum(), xi)
        seen |= (gx.abs().sum((0, 1)) > 0).cpu()
    return ~seen
