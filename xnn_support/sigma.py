"""The sigma engine: learn per-unit noise scales of maximum entropy under a bound on feature change.

One optimiser serves three papers; a *unit* is whatever gets its own noise scale: a grid cell of an
image (ICML 2022), a word (ICML 2019), a point of a cloud (CVPR 2021, notebook 06).

* Guan, Wang, Zhang, Chen, He, Xie, "Towards a Deep and Unified Understanding of Deep Neural
  Models in NLP", ICML 2019 (official code: icml2019paper2428/...:Interpreter.py).
* Ma, Zhang, Zhang, Zhou, Zhang, "Quantification and Analysis of Layer-wise and Pixel-wise
  Information Discarding", ICML 2022, arXiv 1906.04109 (code: haotianSustc/deepinfo, noise layer of
  Jenniferlyx/Explaining-Knowledge-Distillation-by-Quantifying-the-Knowledge).
* Shen et al., "Verifiability and Predictability: Interpreting Utilities of Network Architectures
  for Point Cloud Processing", CVPR 2021 (same optimisation, one sigma per point).

What is optimised (one Lagrangian per (input b, layer l) pair, eq. "L(sigma)" of both papers)::

    x~ = x + expand(sigma) * eps,  eps ~ N(0, I), M samples per step          (:meth:`Units.expand`)
    F_lb(sigma) = mean_{M, feature elements} (phi_l(x~) - phi_l(x))^2 / sigma_f  (normalised feature change)
    H_lb(sigma) = mean_{units u} [log sigma_u + 0.5 log(2 pi e)]                 (entropy per input dimension)
    loss = sum_{l, b} [F_lb - lam * H_lb]                                        (:func:`optimize_sigma`)

The sum (not a mean) over pairs and the element-wise optimisers (Adam, plain SGD) make every pair's
trajectory exactly the one it would have alone; with ``noise="shared"`` (common random numbers, the
default) every pair also sees the same draw eps_t, so a batched run equals one-at-a-time runs with
the same seed up to float rounding. Clean features phi_l(x) are computed once. A copy that targets
layer l stops at layer l (:class:`ModuleFeatures` truncates the forward with ``capture(stop=True)``;
:class:`StagedFeatures` runs a staircase over explicit stages, dropping finished copies).

Normalisation ``sigma_f`` (a variance-like divisor of the squared change): ``"init"`` = F at the
initial sigma, per pair, detached (ICML22 code, so F_0 ~ 1); ``"power"`` = mean phi(x)^2 per pair
(ICML19 code without ``regularization``); a number or tensor per layer (ICML19's r_j^2 from a
sample of inputs, 06's dataset constant).

Parameterisations (``SigmaConfig.parameterization``):
``"sigmoid"`` sigma = scale * sigmoid(rho) (ICML19); ``"log"`` sigma = exp(rho), rho projected onto
[log sigma_min, log sigma_max] after each step (clean default); ``"clamp"`` rho = sigma, clamped to
[sigma_min, sigma_max] after each step (ICML22 parity: the code clamps in place at every forward).

Read-outs (all tracked online, per pair): ``"final"`` last evaluated iterate; ``"tail"`` geometric
mean of sigma over the last ``tail`` fraction of steps; ``"snapshot"`` the step with the lowest
noisy loss (ICML19 code; biased towards lucky draws, spec section 5); ``"target"`` the step whose F
is closest to ``target`` (ICML22: 1.5; 06: 2 with ``target_min`` 0.5); ``"entropy_target"`` the
step whose H is closest to ``entropy_target`` (KD repo: -2.8).

Deviations from the official codes (all switchable back): seeded noise and initialisation; common
random numbers across pairs; several noise samples and antithetic pairs are options for the ICML19
path; default read-out tail average instead of the snapshot; entropy and data terms are means
(``*_reduction="sum"`` gives the papers' sums: lam_paper = lam / n_units for the entropy).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .capture import capture, resolve_layers
from .utils import device_of, progress as _progress

__all__ = ["SigmaConfig", "config", "PRESETS", "optimize_sigma", "SigmaResult", "GridUnits", "AxisUnits",
           "ModuleFeatures", "StagedFeatures", "CallableFeatures", "HALF_LOG_2PIE", "READOUTS"]

HALF_LOG_2PIE = 0.5 * math.log(2 * math.pi * math.e)
READOUTS = ("final", "tail", "snapshot", "target", "entropy_target")


# ------------------------------------------------------------------------------------ config
@dataclass
class SigmaConfig:
    """Every option of the optimisation; build with :func:`config` (presets + overrides)."""
    parameterization: str = "log"       # sigmoid (ICML19) | log (clean) | clamp (ICML22 parity)
    sigma_init: Union[float, str] = 0.01  # a value, or "random" (sigmoid only: rho ~ N(0, 1))
    scale: float = 1.0                  # sigmoid: max sigma
    sigma_min: float = 1e-3             # log / clamp: bounds
    sigma_max: float = 1.0
    steps: int = 200
    lr: float = 0.05
    optimizer: str = "adam"             # adam | sgd (plain)
    lr_schedule: Any = None             # None | "cosine" | ("step", every, gamma)
    lam: Any = 3.0                      # float, or callable(step, steps) -> float
    samples: int = 8                    # noise samples per step (M)
    antithetic: bool = False            # use (eps, -eps) pairs (M even)
    sigma_f: Any = "init"               # "init" | "power" | "none" | number | tensor(s) per layer
    sigma_f_samples: int = 0            # samples for sigma_f="init" (0: max(samples, 8))
    readout: str = "tail"
    tail: float = 0.1
    target: float = 1.5
    target_min: Optional[float] = None
    entropy_target: float = -2.8
    noise: str = "shared"               # shared (common random numbers) | independent
    data_reduction: str = "mean"        # over feature elements: mean | sum
    entropy_reduction: str = "mean"     # over units: mean | sum

    def replace(self, **kw) -> "SigmaConfig":
        return dataclasses.replace(self, **kw)

    def validate(self) -> "SigmaConfig":
        def bad(msg):
            raise ValueError(f"SigmaConfig: {msg}")
        if self.parameterization not in ("sigmoid", "log", "clamp"):
            bad(f"parameterization must be sigmoid, log or clamp, got {self.parameterization!r}")
        for nm in ("steps", "samples"):
            v = getattr(self, nm)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(f"{nm} must be a positive integer, got {v!r}")
        if self.antithetic and self.samples % 2:
            bad(f"antithetic noise needs an even number of samples, got {self.samples}")
        for nm in ("lr", "scale", "sigma_min", "sigma_max"):
            v = getattr(self, nm)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                bad(f"{nm} must be a positive finite number, got {v!r}")
        if self.sigma_min >= self.sigma_max:
            bad(f"sigma_min ({self.sigma_min}) must be below sigma_max ({self.sigma_max})")
        s0 = self.sigma_init
        if isinstance(s0, str):
            if s0 != "random" or self.parameterization != "sigmoid":
                bad(f"sigma_init must be a number (or 'random' with parameterization='sigmoid'), got {s0!r}")
        else:
            lo, hi = (0.0, self.scale) if self.parameterization == "sigmoid" else (self.sigma_min, self.sigma_max)
            ok = isinstance(s0, (int, float)) and math.isfinite(s0) and (
                lo < s0 < hi if self.parameterization == "sigmoid" else lo <= s0 <= hi)
            if not ok:
                bad(f"sigma init {s0!r} is out of range for parameterization {self.parameterization!r}: "
                    f"it must lie in {'(' if self.parameterization == 'sigmoid' else '['}{lo}, {hi}"
                    f"{')' if self.parameterization == 'sigmoid' else ']'}")
        if self.optimizer not in ("adam", "sgd"):
            bad(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        ls = self.lr_schedule
        if not (ls is None or ls == "cosine" or (isinstance(ls, (tuple, list)) and len(ls) == 3 and ls[0] == "step"
                                                 and int(ls[1]) >= 1 and 0 < float(ls[2]) <= 1)):
            bad(f"lr_schedule must be None, 'cosine' or ('step', every, gamma), got {ls!r}")
        if not callable(self.lam) and (not isinstance(self.lam, (int, float)) or not math.isfinite(self.lam)
                                       or self.lam < 0):
            bad(f"lam must be a non-negative number or a callable(step, steps), got {self.lam!r}")
        if self.readout not in READOUTS:
            bad(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if not 0 < self.tail <= 1:
            bad(f"tail must be a fraction in (0, 1], got {self.tail!r}")
        if self.noise not in ("shared", "independent"):
            bad(f"noise must be 'shared' or 'independent', got {self.noise!r}")
        for nm in ("data_reduction", "entropy_reduction"):
            if getattr(self, nm) not in ("mean", "sum"):
                bad(f"{nm} must be 'mean' or 'sum', got {getattr(self, nm)!r}")
        if isinstance(self.sigma_f, str) and self.sigma_f not in ("init", "power", "none"):
            bad(f"sigma_f must be 'init', 'power', 'none', a number or tensors, got {self.sigma_f!r}")
        return self


#: Named settings. ``icml19``: the official word-level code (Interpreter.py) except the read-out
#: (tail average; ``readout="snapshot"`` is the code's). ``icml22``: the deepinfo noise layer and
#: x-step. ``clean``: xnn's default for images/points: log-sigma, Adam, cosine decay, several samples,
#: lam = 2 x target (the optimum of a locally quadratic F sits at F = lam / 2), tail average.
PRESETS: Dict[str, Dict[str, Any]] = {
    "icml19": dict(parameterization="sigmoid", scale=0.5, sigma_init="random", steps=5000, lr=0.01,
                   optimizer="adam", lam=0.1, samples=1, sigma_f="power", readout="tail"),
    "icml22": dict(parameterization="clamp", sigma_init=0.01, sigma_min=1e-3, sigma_max=1.0, steps=100,
                   lr=1e-4, optimizer="sgd", lam=5.0, samples=8, sigma_f="init", readout="target", target=1.5),
    "clean": dict(parameterization="log", sigma_init=0.01, sigma_min=1e-3, sigma_max=1.0, steps=200, lr=0.05,
                  optimizer="adam", lr_schedule="cosine", lam=3.0, samples=8, sigma_f="init", readout="tail"),
}


def config(preset: Union[str, SigmaConfig, None] = "clean", **overrides) -> SigmaConfig:
    """A validated :class:`SigmaConfig`: a preset name (see :data:`PRESETS`) or a config, plus overrides."""
    if isinstance(preset, SigmaConfig):
        base = preset
    elif preset is None:
        base = SigmaConfig()
    elif preset in PRESETS:
        base = SigmaConfig(**PRESETS[preset])
    else:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)} or pass a SigmaConfig")
    bad = [k for k in overrides if k not in {f.name for f in dataclasses.fields(SigmaConfig)}]
    if bad:
        raise ValueError(f"unknown SigmaConfig options {bad}; valid: {[f.name for f in dataclasses.fields(SigmaConfig)]}")
    return base.replace(**overrides).validate()


# ------------------------------------------------------------------------------------ units
class GridUnits:
    """One sigma per cell of a ``grid x grid`` partition of an image (B, C, H, W), shared by the
    channels and the pixels of the cell (nearest upsampling, as the ICML22 noise layer)."""

    prefix_stable = False

    def __init__(self, grid: int = 16):
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be a positive integer, got {grid!r}")
        self.grid = grid
        self.map_shape = (grid, grid)

    def check(self, x: torch.Tensor) -> int:
        if x.dim() != 4:
            raise ValueError(f"GridUnits expects images (B, C, H, W), got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.grid:
            raise ValueError(f"grid {self.grid} is finer than the image {tuple(x.shape[-2:])}")
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
    model on a batch of (noisy) inputs whose rows belong to inputs ``index`` of the current chunk
    (e.g. ``model.forward_embeddings(x, mask[index])``); default ``model(x)``. ``activation="relu"``
    applies a ReLU to the captured output (the ICML22 code's f = ReLU(layer output))."""

    def __init__(self, model: nn.Module, layers, *, call: Optional[Callable] = None, activation: Optional[str] = None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        if activation not in (None, "relu"):
            raise ValueError(f"activation must be None or 'relu', got {activation!r}")
        self.model, self.activation = model, activation
        self.names = list(resolve_layers(model, layers))  # clear error for unknown layers
        self._wrap = _Wrap(model, call)
        self.device = device_of(model)

    def __call__(self, xs: List[torch.Tensor], index: torch.Tensor) -> List[torch.Tensor]:
        out = []
        for name, x in zip(self.names, xs):
            with capture(self._wrap, ["m." + name if name else "m"], detach=False, stop=True) as cap:
                cap.forward(x, index)
                f = cap["m." + name if name else "m"]
            if not torch.is_tensor(f):
                raise ValueError(f"layer {name!r} returns {type(f).__name__}, not a tensor; capture a submodule "
                                 "that returns one")
            out.append(torch.relu(f) if self.activation == "relu" else f)
        return out


class StagedFeatures:
    """Features read after stages of a sequential computation (e.g. the encoder layers of a
    Transformer), evaluated as a staircase: one pass over the stages, each copy dropped once its
    stage is done. ``stages[k](h, index) -> h``; ``depths[l]`` (1-based) is the stage after which
    layer l is read; ``head(h, index, depth) -> feature`` optionally maps a stage output to the
    feature (e.g. mean pooling)."""

    def __init__(self, stages: Sequence[Callable], depths: Sequence[int], names: Optional[Sequence[str]] = None,
                 head: Optional[Callable] = None, device=None):
        depths = [int(d) for d in depths]
        if not depths or any(not 1 <= d <= len(stages) for d in depths):
            raise ValueError(f"depths must lie in [1, {len(stages)}], got {depths}")
        if sorted(depths) != depths or len(set(depths)) != len(depths):
            raise ValueError(f"depths must be strictly increasing, got {depths}")
        self.stages, self.depths, self.head = list(stages), depths, head
        self.names = list(names) if names is not None else [f"stage{d}" for d in depths]
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def __call__(self, xs: List[torch.Tensor], index: torch.Tensor) -> List[torch.Tensor]:
        n_rows = [x.shape[0] for x in xs]
        h, idx = torch.cat(xs), torch.cat([index] * len(xs))
        out: List[torch.Tensor] = []
        pending = list(zip(self.depths, n_rows))
        for k, stage in enumerate(self.stages, start=1):
            if not pending:
                break  # nothing left: the later stages never run
            h = stage(h, idx)
            while pending and pending[0][0] == k:
                n = pending.pop(0)[1]
                f, h, i_done, idx = h[:n], h[n:], idx[:n], idx[n:]
                out.append(self.head(f, i_done, k) if self.head is not None else f)
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
