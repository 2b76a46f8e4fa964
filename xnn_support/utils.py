"""Small shared helpers: seeding, device placement, progress bars.

* :func:`seed_everything` seeds ``random``, NumPy and torch (CPU and CUDA) in one call.
* :func:`device_of` returns the device a model lives on ("device follows the model").
* :func:`progress` wraps ``tqdm.auto``; silent when the environment sets ``XNN_QUIET=1``.
"""
from __future__ import annotations

import os
import random
from typing import Iterable, Optional

import numpy as np
import torch

__all__ = ["seed_everything", "device_of", "progress", "quiet", "to_device"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python ``random``, NumPy and torch (all devices); return a seeded CPU generator."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        torch.cuda.manual_seed_all(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def device_of(model: Optional[torch.nn.Module]) -> torch.device:
    """Device of the model's first parameter (or buffer); CPU for a parameter-free module."""
    if model is None:
        return torch.device("cpu")
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def to_device(x, device):
    """Move a tensor, or a (nested) tuple/list/dict of tensors, to ``device``."""
    if torch.is_tensor(x):
        return x.to(device)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x


def quiet() -> bool:
    """True when progress output is switched off (``XNN_QUIET=1``)."""
    return os.environ.get("XNN_QUIET", "0").strip().lower() not in ("", "0", "false", "no")


def progress(iterable: Optional[Iterable] = None, **kwargs):
    """A ``tqdm.auto`` progress bar for long loops; disabled when ``XNN_QUIET=1``."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", quiet())
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
