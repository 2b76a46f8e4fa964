"""Adapters of the sigma engine (:mod:`xnn_support.sigma`): what a unit is, and where features come from.

Units map one sigma per unit onto a noise scale shaped like the input:

* :class:`GridUnits` -- image grid cells (ICML 2022: 16 x 16 cells of a 224 px image, shared by the
  three colour channels), nearest upsampling;
* :class:`AxisUnits` -- one sigma per index along axis 1, shared by the trailing dimensions: words of
  (B, n, K) embeddings (ICML 2019), points of (B, N, 3) clouds (CVPR 2021, notebook 06); padding mask.

Feature sources return, for a list of noisy batches (one per layer), the features of each layer:

* :class:`ModuleFeatures` -- outputs of named layers of any ``nn.Module`` via :func:`xnn_support.capture`,
  each copy truncated at its own layer (``stop=True``);
* :class:`StagedFeatures` -- a staircase over explicit stages (Transformer encoder layers): one pass,
  copies dropped once their stage is done;
* :class:`CallableFeatures` -- plain callables phi_l(x).

A new unit type needs ``check(x) -> n_units``, ``mask(x)``, ``expand(sigma (B, U), x)`` (broadcastable
to x) and ``prefix_stable``; a new feature source needs ``names``, ``device`` and
``__call__(xs, index) -> list of tensors`` (row r of ``xs[l]`` belongs to input ``index[r]``), and
``model`` if an ``nn.Module`` should be put in eval mode during the optimisation.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.capture import Capture, CaptureError, resolve_layers
from ..core.validate import model_device

__all__ = ["GridUnits", "AxisUnits", "ModuleFeatures", "StagedFeatures", "CallableFeatures"]


# ------------------------------------------------------------------------------------ units
class GridUnits:
    """One sigma per cell of a ``grid x grid`` partition of an image (B, C, H, W), shared by the
    channels and the pixels of the cell (nearest upsampling, as the ICML22 noise layer)."""

    prefix_stable = False

    def __init__(self, grid: int = 16):
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be a positive integer, got {grid!r}; pass e.g. grid=16 (cells per side)")
        self.grid = grid
        self.map_shape = (grid, grid)

    def check(self, x: torch.Tensor) -> int:
        if x.dim() != 4:
            raise ValueError(f"GridUnits expects images (B, C, H, W), got shape {tuple(x.shape)}; pass x as a "
                             "batch of images")
        if min(x.shape[-2:]) < self.grid:
            raise ValueError(f"grid {self.grid} is finer than the image {tuple(x.shape[-2:])}; pass a grid <= the "
                             "image side")
        return self.grid * self.grid

    def mask(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        return None

    def expand(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B, U) unit sigmas -> (B, 1, H, W) per-pixel standard deviations."""
        g = self.grid
        return F.interpolate(sigma.reshape(-1, 1, g, g), size=tuple(x.shape[-2:]), mode="nearest")

    def cell_fraction(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, H, W) pixel masks -> (B, grid, grid) fraction of each cell's pixels inside the mask
        (the cells the nearest upsampling of :meth:`expand` assigns to each pixel)."""
        B, H, W = masks.shape
        g = self.grid
        rows = torch.div(torch.arange(H) * g, H, rounding_mode="floor")  # cell of each pixel (nearest)
        cols = torch.div(torch.arange(W) * g, W, rounding_mode="floor")
        cell = (rows[:, None] * g + cols[None, :]).reshape(-1).to(masks.device)
        tot = torch.zeros(g * g, device=masks.device).index_add_(0, cell, torch.ones_like(cell, dtype=torch.float))
        s = torch.zeros(B, g * g, device=masks.device).index_add_(1, cell, masks.reshape(B, -1).float())
        return (s / tot).reshape(B, g, g)


class AxisUnits:
    """One sigma per index along axis 1 of the input, shared by the trailing dimensions: the words
    of (B, n, K) embeddings, the points of (B, N, 3) clouds. ``mask`` (B, n) bool marks real units
    (padding is excluded from every term and gets no noise). ``prefix_stable`` (default: when a mask
    is given) draws each unit's noise from its own generator, so a sentence padded to any length sees
    the same noise as alone."""

    def __init__(self, mask: Optional[torch.Tensor] = None, prefix_stable: Optional[bool] = None):
        if mask is not None and (not torch.is_tensor(mask) or mask.dim() != 2):
            raise ValueError(f"mask must be a (B, n) bool tensor, got {getattr(mask, 'shape', type(mask))}")
        self._mask = None if mask is None else mask.bool()
        self.prefix_stable = (mask is not None) if prefix_stable is None else bool(prefix_stable)
        self.map_shape = None

    def check(self, x: torch.Tensor) -> int:
        if x.dim() < 2:
            raise ValueError(f"AxisUnits expects inputs (B, n, ...), got shape {tuple(x.shape)}")
        if self._mask is not None:
            if tuple(self._mask.shape) != tuple(x.shape[:2]):
                raise ValueError(f"mask shape {tuple(self._mask.shape)} does not match the input's (B, n) = "
                                 f"{tuple(x.shape[:2])}")
            if not bool(self._mask.any(1).all()):
                raise ValueError("every input needs at least one real unit (a mask row is all False)")
        self.map_shape = (x.shape[1],)
        return int(x.shape[1])

    def mask(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        return None if self._mask is None else self._mask.to(x.device)

    def expand(self, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(sigma.shape[0], sigma.shape[1], *([1] * (x.dim() - 2)))
        return s


# ------------------------------------------------------------------------------------ features
class _Wrap(nn.Module):
    def __init__(self, m: nn.Module, call):
        super().__init__()
        self.m, self.call = m, call

    def forward(self, x, index):
        return self.call(self.m, x, index) if self.call is not None else self.m(x)


class ModuleFeatures:
    """Features = outputs of named layers of any ``nn.Module`` (dotted names or modules), each copy
    run only up to its own layer (``capture(..., stop=True)``). ``call(model, x, index)`` runs the
    model on a batch of (noisy) inputs whose rows belong to inputs ``index`` (indices into the batch
    given to :func:`~xnn_support.sigma.optimize_sigma`, e.g. ``model.forward_embeddings(x, mask[index])``); default ``model(x)``. ``activation="relu"``
    applies a ReLU to the captured output (the ICML22 code's f = ReLU(layer output))."""

    def __init__(self, model: nn.Module, layers, *, call: Optional[Callable] = None, activation: Optional[str] = None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        if activation not in (None, "relu"):
            raise ValueError(f"activation must be None or 'relu', got {activation!r}")
        self.model, self.activation = model, activation
        self.names = list(resolve_layers(model, layers))  # clear error for unknown layers
        self._wrap = _Wrap(model, call)
        self.device = model_device(model)
        # one Capture per layer, kept: its first forward probes (once) for a layer called twice per forward
        self._caps = [Capture(self._wrap, ["m." + n if n else "m"], detach=False, stop=True) for n in self.names]

    def __call__(self, xs: List[torch.Tensor], index: torch.Tensor) -> List[torch.Tensor]:
        out = []
        for name, x, cap in zip(self.names, xs, self._caps):
            cap.attach()
            try:
                cap.forward(x, index)
                f = cap[cap.names[0]]
            except CaptureError as e:  # name the layer as the caller did, not as inside the wrapper
                raise CaptureError(str(e).replace("'m.", "'", 1)) from None
            finally:
                cap.remove()
                cap.outputs, cap._versions = {}, {}   # no reference to this step's graph is kept
            if not torch.is_tensor(f):
                raise ValueError(f"layer {name!r} returns {type(f).__name__}, not a tensor; capture a submodule "
                                 "that returns one")
            out.append(torch.relu(f) if self.activation == "relu" else f)
        return out


class StagedFeatures:
    """Features read after stages of a sequential computation (e.g. the encoder layers of a
    Transformer), evaluated as a staircase: one pass over the stages, each copy dropped once its
    stage is done, so the copies of layer l never run stages l+1... ``stages[k](h, index) -> h``;
    ``depths[l]`` (1-based, non-decreasing) is the stage after which layer l is read; ``heads`` (one
    callable or one per layer, ``head(h, index) -> feature``) optionally maps a stage output to the
    feature (e.g. pooling)."""

    def __init__(self, stages: Sequence[Callable], depths: Sequence[int], names: Optional[Sequence[str]] = None,
                 heads=None, device=None):
        depths = [int(d) for d in depths]
        if not depths or any(not 1 <= d <= len(stages) for d in depths):
            raise ValueError(f"depths must lie in [1, {len(stages)}], got {depths}")
        if sorted(depths) != depths:
            raise ValueError(f"depths must be non-decreasing, got {depths}")
        if heads is None or callable(heads):
            heads = [heads] * len(depths)
        if len(heads) != len(depths):
            raise ValueError(f"{len(heads)} heads for {len(depths)} depths")
        self.stages, self.depths, self.heads = list(stages), depths, list(heads)
        self.names = list(names) if names is not None else [f"stage{d}" for d in depths]
        if len(self.names) != len(depths):
            raise ValueError(f"{len(self.names)} names for {len(depths)} depths")
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def __call__(self, xs: List[torch.Tensor], index: torch.Tensor) -> List[torch.Tensor]:
        h, idx = torch.cat(xs), torch.cat([index] * len(xs))
        out: List[torch.Tensor] = []
        pending = [(d, x.shape[0], hd) for d, x, hd in zip(self.depths, xs, self.heads)]
        for k, stage in enumerate(self.stages, start=1):
            if not pending:
                break  # every copy is done: the later stages never run
            h = stage(h, idx)
            while pending and pending[0][0] == k:
                _, n, hd = pending.pop(0)
                f, h, i_done, idx = h[:n], h[n:], idx[:n], idx[n:]
                out.append(hd(f, i_done) if hd is not None else f)
        return out


class CallableFeatures:
    """Features from plain callables ``phi_l(x) -> tensor`` (one per layer; rows of x are noisy
    copies). ``batched=False`` calls phi once per row (for a phi that takes one input)."""

    def __init__(self, fns: Sequence[Callable], names: Optional[Sequence[str]] = None, *, batched: bool = True,
                 device=None):
        fns = list(fns)
        if not fns or not all(callable(f) for f in fns):
            raise ValueError("pass at least one callable phi")
        self.fns, self.batched = fns, batched
        self.names = list(names) if names is not None else [f"phi{i}" for i in range(len(fns))]
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def __call__(self, xs: List[torch.Tensor], index: torch.Tensor) -> List[torch.Tensor]:
        if self.batched:
            return [fn(x) for fn, x in zip(self.fns, xs)]
        return [torch.stack([fn(r) for r in x]) for fn, x in zip(self.fns, xs)]
