"""Small shared helpers: seeding, device placement, progress bars.

* :func:`seed_everything` seeds ``random``, NumPy and torch (CPU and CUDA) in one call.
* :func:`device_of` returns the device a model lives on ("device follows the model").
* :func:`progress` wraps ``tqdm.auto``; silent when the environment sets ``XNN_QUIET=1``.
* :func:`torch_threads` limits torch's CPU threads inside a block (the one thread helper).
* :func:`mean_sd` / :func:`mean_sd_by_key`: the one summary over seeds (mean, sample sd, n).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

__all__ = ["seed_everything", "device_of", "progress", "quiet", "to_device", "torch_threads", "mean_sd",
           "mean_sd_by_key", "MeanSD", "file_sha256", "summarise", "per_seed"]


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

    kwargs.setdefault("disable", quiet())
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


@contextlib.contextmanager
def torch_threads(n: Optional[int]):
    """Use ``n`` torch CPU threads inside the block (None: leave as is); restored afterwards."""
    old = torch.get_num_threads()
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_threads must be a positive integer or None, got {n!r}")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class MeanSD(NamedTuple):
    """Mean, sample standard deviation (n - 1; 0 for one value) and count. Unpacks as a tuple and
    also reads by name: ``ms.mean``, ``ms["mean"]``."""
    mean: float
    sd: float
    n: int

    def __getitem__(self, key):
        return getattr(self, key) if isinstance(key, str) else tuple.__getitem__(self, key)


def mean_sd(values: Iterable[float], *, skip_nan: bool = False) -> MeanSD:
    """:class:`MeanSD` of a sequence of numbers (``skip_nan``: NaNs left out; none left gives NaN, n 0)."""
    v = [float(x) for x in values]
    if skip_nan:
        v = [x for x in v if not math.isnan(x)]
        if not v:
            return MeanSD(float("nan"), float("nan"), 0)
    if not v:
        raise ValueError("mean_sd needs at least one value; pass the per-seed values of a metric")
    mu = sum(v) / len(v)
    sd = math.sqrt(sum((x - mu) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return MeanSD(mu, sd, len(v))


def mean_sd_by_key(runs: Sequence[Mapping[str, float]]) -> Dict[str, MeanSD]:
    """``{name: MeanSD}`` over per-seed metric dicts (the keys of the first; None and NaN skipped)."""
    if not runs:
        raise ValueError("mean_sd_by_key needs at least one run")
    return {k: mean_sd((r[k] for r in runs if r.get(k) is not None), skip_nan=True) for k in runs[0]}


def file_sha256(path) -> str:
    """sha256 (hex) of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def summarise(df: pd.DataFrame, by: Sequence[str], cols: Sequence[str]) -> pd.DataFrame:
    """Mean and sd over seeds of ``cols`` grouped by ``by`` (order kept), with ``n_seeds``."""
    g = df.groupby(list(by), sort=False)[list(cols)]
    out = g.agg(["mean", "std"])
    out[("n_seeds", "")] = g.size()
    return out


def per_seed(df: pd.DataFrame, where: Dict[str, Any], col: str) -> List[float]:
    """The values of ``col`` in the rows matching ``where`` (column -> value), in seed order."""
    sel = pd.Series(True, index=df.index)
    for k, v in where.items():
        sel &= df[k] == v
    return [float(v) for v in df[sel].sort_values("seed")[col]]
