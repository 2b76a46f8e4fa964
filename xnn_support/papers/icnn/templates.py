"""The templates of interpretable CNNs (Zhang, Wu, Zhu, CVPR 2018, arXiv 1710.00935, eq. for t_ij):
``T_mu: t_ij = tau max(1 - beta ||[i,j] - mu||_1 / n, -1)`` for every position mu of an n x n map.

* :func:`template_kernel` -- the (2n-1) x (2n-1) kernel of every template at once (offsets);
* :func:`positive_templates` -- all n^2 templates explicitly (tests, figures);
* :func:`template_scores` -- ``<x, T_mu>`` for every mu: one convolution, or one GEMM with the cached
  template bank (faster on CPU for n <= 64).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from ...core import validate as V

__all__ = ["template_kernel", "positive_templates", "template_scores"]


def template_kernel(n: int, tau: Optional[float] = None, beta: float = 4.0,
                    device=None, dtype=torch.float32) -> torch.Tensor:
    """(2n-1, 2n-1) kernel K[di, dj] = tau * max(1 - beta (|di| + |dj|) / n, -1), offsets -(n-1)..n-1."""
    V.positive_int("n", n)
    V.positive("beta", beta, fix="pass the template slope beta > 0 (the paper's 4)")
    tau = 0.5 / n ** 2 if tau is None else V.positive("tau", tau, optional=True)
    d = torch.arange(-(n - 1), n, device=device, dtype=dtype).abs()
    return tau * torch.clamp(1 - beta * (d[:, None] + d[None, :]) / n, min=-1.0)


def positive_templates(n: int, tau: Optional[float] = None, beta: float = 4.0) -> torch.Tensor:
    """All n^2 positive templates explicitly, (n, n, n, n): [mu_r, mu_c, i, j] (for tests, figures)."""
    K = template_kernel(n, tau, beta)
    i = torch.arange(n)
    off = i[None, :] - i[:, None] + n - 1          # [mu, i] -> kernel index of i - mu
    return K[off[:, None, :, None], off[None, :, None, :]]


def template_scores(x: torch.Tensor, tau: Optional[float] = None, beta: float = 4.0,
                    method: str = "auto") -> torch.Tensor:
    """<x, T_mu> for every position mu at once: (B, D, n, n) maps -> (B, D, n, n) scores.

    ``method="conv"``: one cross-correlation of each map with :func:`template_kernel` (padding
    n-1), ``S[b, d, mu] = sum_ij x[b, d, i, j] K[i - mu]``; O(n^2 (2n-1)^2) per map, no template
    bank. ``"matmul"``: one GEMM of the flattened maps with the (n^2, n^2) template bank (the same
    numbers; O(n^4) per map, n^4 floats of memory). ``"auto"``: matmul up to n = 64 (faster on
    CPU at these sizes, see ``xnn bench --only icnn``), conv above.
    """
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"template_scores expects square (B, D, n, n) maps, got {tuple(x.shape)}")
    if method not in ("auto", "conv", "matmul"):
        raise ValueError(f"method must be 'auto', 'conv' or 'matmul', got {method!r}")
    B, D, n, _ = x.shape
    if method == "matmul" or (method == "auto" and n <= 64):
        T = _template_bank(n, tau, beta, x.device, x.dtype)
        return (x.reshape(B * D, n * n) @ T).reshape(B, D, n, n)
    K = template_kernel(n, tau, beta, device=x.device, dtype=x.dtype)
    return F.conv2d(x.reshape(B * D, 1, n, n), K[None, None], padding=n - 1).reshape(B, D, n, n)


_BANKS: Dict[tuple, torch.Tensor] = {}


def _template_bank(n, tau, beta, device, dtype) -> torch.Tensor:
    """(n^2 [ij], n^2 [mu]) matrix of all positive templates, cached per (n, tau, beta, device, dtype)."""
    key = (n, tau, float(beta), str(device), dtype)
    if key not in _BANKS:
        if len(_BANKS) > 16:
            _BANKS.clear()
        T = positive_templates(n, tau, beta).to(device=device, dtype=dtype)   # (mu_r, mu_c, i, j)
        _BANKS[key] = T.reshape(n * n, n * n).t().contiguous()
    return _BANKS[key]
