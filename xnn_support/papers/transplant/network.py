"""The modules of notebook 09's generic ("transplant") network: category modules, task modules, adapters.

* :class:`CategoryModule` ``f``: image -> features (conv-BN-ReLU-pool twice, then conv-BN *without* ReLU, so the
  features fill their space and a linear map between two feature spaces is identifiable), (N, C, S/8, S/8).
* :class:`ClassTask` ``g_cls``: features -> one logit "is this a (well-formed) object of this module's category".
* :class:`SegTask` ``g_seg``: features -> two logits per pixel (object mask), upsampled to the image size.
* :class:`TransplantNet`: ``ModuleDict``s of category modules, task modules and adapters (key ``"c/t"``);
  ``forward(images, category, task) = g_t(h_ct(f_c(images)))``, the adapter being the identity for the
  categories the task modules were trained with; :meth:`TransplantNet.add_category` adds a category with its
  adapters, all frozen: nothing already in the net changes (tests/test_transplant.py checks it bit for bit).
* :func:`make_adapter`: the small adapter ``h`` (1x1 conv, or 1x1 conv plus a conv3x3-ReLU-conv3x3 residual).
* :func:`planted_map`, :class:`FixedLinear`: the invertible 1x1 map ``M = Q diag(exp(s))`` of the planted teacher
  (spec section 7): ``f' = M o f`` and ``g' = g o M^-1``, so the ideal adapter is ``M^-1``.

No BatchNorm or dropout in the task modules (their Jacobians must not depend on the batch); the category
modules' BatchNorm is frozen in eval mode whenever they are used as transplanting inputs.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...core import validate as V

__all__ = ["CategoryModule", "ClassTask", "SegTask", "TransplantNet", "FixedLinear", "ResidualAdapter",
           "make_adapter", "perturbed_adapter", "planted_map", "freeze", "TASKS"]

TASKS = ("cls", "seg")


def freeze(module: nn.Module) -> nn.Module:
    """``requires_grad = False`` on every parameter and eval mode; returns the module."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class CategoryModule(nn.Module):
    """``f``: (N, 3, S, S) images -> (N, channels, S/2^pools, S/2^pools) features: ``pools`` blocks
    conv-BN-ReLU-maxpool (widths ``width``, 2 ``width``, ...), then conv-BN without ReLU."""

    def __init__(self, channels: int = 32, width: int = 16, pools: int = 3):
        super().__init__()
        self.channels = V.positive_int("channels", channels)
        width, pools = V.positive_int("width", width), V.positive_int("pools", pools)
        layers, c = [], 3
        for i in range(pools):
            w = width * min(2 ** i, 4)
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        self.body = nn.Sequential(*layers, nn.Conv2d(c, channels, 3, padding=1), nn.BatchNorm2d(channels))

    def forward(self, x):
        return self.body(x)


class ClassTask(nn.Module):
    """``g_cls``: features -> (N, 1) logit (conv-ReLU-pool-conv-ReLU-global average-linear)."""

    def __init__(self, channels: int = 32, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1))

    def forward(self, x):
        return self.body(x)


class SegTask(nn.Module):
    """``g_seg``: features -> (N, 2, u h, u w) object-mask logits (conv-ReLU-conv-ReLU-1x1, bilinear x ``upsample``)."""

    def __init__(self, channels: int = 32, width: int = 32, upsample: int = 8):
        super().__init__()
        self.upsample = V.positive_int("upsample", upsample)
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2, 1))

    def forward(self, x):
        out = self.body(x)
        return F.interpolate(out, scale_factor=self.upsample, mode="bilinear", align_corners=False) \
            if self.upsample > 1 else out


class FixedLinear(nn.Module):
    """A 1x1 convolution with a fixed matrix ``W`` (buffer, not a parameter): ``y[:, i] = sum_j W[i, j] x[:, j]``."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        V.finite_tensor("weight", weight, dims=(2,))
        self.register_buffer("weight", weight.detach().clone())

    def forward(self, x):
        return F.conv2d(x, self.weight[:, :, None, None])


class ResidualAdapter(nn.Module):
    """``h(x) = W x + conv3x3(ReLU(conv3x3(x)))``: a linear 1x1 map plus a small non-linear correction
    (its last conv starts at zero, so ``h`` starts as the linear map)."""

    def __init__(self, c_in: int, c_out: int, width: Optional[int] = None):
        super().__init__()
        width = c_out if width is None else V.positive_int("width", width)
        self.linear = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.res = nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, c_out, 3, padding=1))
        nn.init.zeros_(self.res[2].weight)
        nn.init.zeros_(self.res[2].bias)

    def forward(self, x):
        return self.linear(x) + self.res(x)


def make_adapter(c_in: int, c_out: int, *, kind: str = "linear", noise: float = 0.01, seed: int = 0) -> nn.Module:
    """The adapter ``h`` between ``c_in`` feature channels and a task module expecting ``c_out`` (spec 2.2 step
    1): ``kind="linear"`` a 1x1 conv without bias, ``"conv"`` a :class:`ResidualAdapter`. The linear part
    starts at the identity plus ``noise`` * N(0, 1) when ``c_in == c_out``, else orthogonal; seeded."""
    c_in, c_out = V.positive_int("c_in", c_in), V.positive_int("c_out", c_out)
    V.choice("kind", kind, ("linear", "conv"))
    V.non_negative("noise", noise)
    seed = V.non_negative_int("seed", seed)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        h = nn.Conv2d(c_in, c_out, 1, bias=False) if kind == "linear" else ResidualAdapter(c_in, c_out)
    lin = h if kind == "linear" else h.linear
    with torch.no_grad():
        if c_in == c_out:
            w = torch.eye(c_in) + noise * torch.randn(c_in, c_in, generator=g)
        else:
            q, _ = torch.linalg.qr(torch.randn(max(c_in, c_out), min(c_in, c_out), generator=g))
            w = q if c_out >= c_in else q.T
        lin.weight.copy_(w[:, :, None, None])
    return h


def perturbed_adapter(ideal: torch.Tensor, rel: float, *, seed: int = 0) -> nn.Module:
    """A linear adapter (1x1 conv, no bias) at ``ideal + delta`` with ``||delta||_F = rel ||ideal||_F``, delta a
    seeded Gaussian direction: the start of the local recovery study (does a loss pull it back to ``ideal``?)."""
    V.finite_tensor("ideal", ideal, dims=(2,))
    V.non_negative("rel", rel)
    h = make_adapter(ideal.shape[1], ideal.shape[0], seed=seed).to(ideal.dtype)
    d = torch.randn(ideal.shape, generator=torch.Generator().manual_seed(seed + 7), dtype=ideal.dtype)
    with torch.no_grad():
        h.weight.copy_((ideal + d * (rel * ideal.norm() / d.norm()))[:, :, None, None])
    return h


def planted_map(channels: int, *, log_scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """``M = Q diag(exp(s))``, ``Q`` random orthogonal, ``s ~ U[-log_scale, log_scale]`` (condition number
    <= e^(2 log_scale)); float32, seeded (spec section 7 step 3)."""
    channels = V.positive_int("channels", channels)
    V.non_negative("log_scale", log_scale)
    g = torch.Generator().manual_seed(V.non_negative_int("seed", seed))
    q, r = torch.linalg.qr(torch.randn(channels, channels, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    s = (torch.rand(channels, generator=g, dtype=torch.float64) * 2 - 1) * log_scale
    return (q * torch.exp(s)[None, :]).float()


class TransplantNet(nn.Module):
    """The generic network: ``category_modules`` (name -> f), ``task_modules`` (name -> g) and ``adapters``
    (``"category/task"`` -> h; missing: identity). ``forward(images, category, task)``."""

    def __init__(self, category_modules: Dict[str, nn.Module], task_modules: Dict[str, nn.Module],
                 adapters: Optional[Dict[str, nn.Module]] = None):
        super().__init__()
        self.category_modules = nn.ModuleDict(category_modules)
        self.task_modules = nn.ModuleDict(task_modules)
        self.adapters = nn.ModuleDict({k.replace("/", "__"): v for k, v in (adapters or {}).items()})

    @property
    def categories(self):
        return list(self.category_modules)

    @property
    def tasks(self):
        return list(self.task_modules)

    def adapter(self, category: str, task: str) -> nn.Module:
        """The adapter of (category, task): the learned one, or the identity."""
        key = f"{category}__{task}"
        return self.adapters[key] if key in self.adapters else nn.Identity()

    def features(self, images: torch.Tensor, category: str) -> torch.Tensor:
        V.choice("category", category, self.categories)
        return self.category_modules[category](images)

    def forward(self, images: torch.Tensor, category: str, task: str) -> torch.Tensor:
        V.choice("task", task, self.tasks)
        return self.task_modules[task](self.adapter(category, task)(self.features(images, category)))

    def add_category(self, name: str, category_module: nn.Module, adapters: Dict[str, nn.Module]) -> "TransplantNet":
        """Transplant: add ``category_module`` and its ``adapters`` (task -> h), frozen; refuses an existing
        name or an unknown task. Nothing already in the net is touched."""
        V.name("name", name)
        if name in self.category_modules:
            raise V.fail("name", "a new category", name, f"choose a name not in {self.categories}")
        for t in adapters:
            V.choice("adapters task", t, self.tasks)
        self.category_modules[name] = freeze(category_module)
        for t, h in adapters.items():
            self.adapters[f"{name}__{t}"] = freeze(h)
        return self

    def task_parameters(self) -> Iterable[nn.Parameter]:
        return self.task_modules.parameters()
