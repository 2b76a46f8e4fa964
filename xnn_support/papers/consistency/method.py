"""Knowledge consistency between two networks: the network g_theta and its order decomposition.

Ruofan Liang*, Tianlin Li*, Longfei Li, Jing Wang, Quanshi Zhang. "Knowledge Consistency between
Neural Networks and Beyond." ICLR 2020 (arXiv 1908.01581; v1 "Knowledge Isomorphism between Neural
Networks"). Official code: github.com/nexuslrf/knowledge_consistency (``LinearTester``,
``Training_TransNet.py``, ``Variance.py``); read for facts, not copied.

What is reproduced. Features x_A, x_B of two networks (same images) are split as

    x_B = g(x_A) + x_delta,      g(x_A) = x^(0) + x^(1) + ... + x^(K)

where x^(k) is the component of x_B that x_A explains through exactly k nonlinear (ReLU) stages
(k = 0: a linear map, "0-order consistent") and x_delta is the inconsistent component (blind spots
or unreliable features). g is the official stack of K+1 convolutions with gated skips:

    Norm(u) = u / (std_{HxW}(u) + 1e-5)   per sample and channel, unbiased, divisor DETACHED,
                                           not mean-centred; divisor 1 for vectors / 1x1 maps
    z   = Norm(x_A)                         p_k = sigmoid(q_k), q_k trainable
    u_0 = W_0 z,   u_k = W_k (z + p_{k-1} ReLU(Norm(u_{k-1}))),   g(x_A) = u_K + b

Functions and equations (the network and order 0 live in :mod:`xnn_support.consistency_net`):

* :class:`ConsistencyNet` -- g (``forward``) and the exact order decomposition (``decompose``):
  the ReLU masks M_k and divisors a_k of the same pass are replayed, S_{k,0} = W_k z,
  S_{k,j} = W_k (p_{k-1} M_{k-1} o S_{k-1,j-1} / a_{k-1}) (V instead of W_K for j >= 1 at the last
  stage when untied), x^(j) = S_{K,j}; the components sum to g(x_A) up to float rounding (one
  batched convolution per stage over the stacked orders).
* :func:`fit_order0` -- closed-form ridge least squares of the output convolution on unfolded
  patches of z (order 0 fitted first, see below).
* :func:`fit_consistency` -- the entry point: order 0 by least squares, then the nonlinear stages
  by Adam through :func:`xnn_support.train.fit` (progress bar, checkpoint cache) on
  ``MSE(g(x_A), x_B) / Var(x_B) + sum_k alpha_k p_k^2`` (the official gate penalty).
* :func:`variance_shares` -- the official variance metric: per-channel dataset mean removed,
  mean of squares over samples, channels and positions, divided by the same for x_B.

Deviations from the paper / official code (each is a choice, stated):

* **Order 0 is fitted first** (``linear_first=True``): the output convolution W_K (on z) and a bias
  are the ridge least-squares fit of x_B on z, then frozen while the ReLU stages learn the
  remainder; the gated input of the last stage gets its own output convolution V, initialised at
  zero (``tied_output=False``: u_K = W_K z + V p_{K-1} ReLU(Norm(u_{K-1})); official: one W_K
  applied to the sum). Without V a frozen least-squares W_K would also cap the nonlinear orders
  (e.g. W_K ~ 0 when x_B has no linear part). In a joint fit from random weights the ReLU branches
  absorb linear structure (order 0 alone then misses much of an exactly linear x_B, see the tests
  and the notebook). ``linear_first=False`` gives the official joint fit with a tied W_K.
* The output convolution has a bias (an affine order 0; the official convs have none): the
  variance metric is mean-centred anyway, and without a bias the channel means of x_B must be
  made from z. Hidden convolutions have no bias, as in the official code.
* The MSE is divided by Var(x_B) so that the gate penalty alpha does not depend on the feature
  scale; Adam with a cosine schedule over tens of epochs instead of a log-spaced 1e-4 -> 1e-6 over
  800-1000 epochs (CPU budget).
* A and B may have different channel counts: W_0..W_{K-1} map C_A -> C_A and W_K maps C_A -> C_B.
  Vectors (N, D) are treated as (N, D, 1, 1) maps with 1x1 kernels.
* ``orders`` counts the orders, order 0 included: ``orders=3`` is the official K = 2.

Known property kept for parity: the official normalisation makes g invariant to a positive
per-(sample, channel) scaling of x_A, so how strongly an image drives a channel cannot be passed
on and lands in x_delta; on real features the paper's permutation example (x_B = P x_A) then gives
an order-0 share of ~0.86-0.94 instead of 1 (notebook 05). ``normalize=False`` switches it off.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .net import (EPS, ConsistencyNet, _as_maps, _check_orders, check_pair,  # noqa: F401
                              fit_order0, normalize)
from ...core import validate as V
from ...core.utils import device_of
import inspect
from ...core.train import fit

__all__ = ["ConsistencyNet", "ConsistencyResult", "Decomposition", "FeaturePairs", "fit_consistency",
           "decompose", "fit_order0", "variance_shares", "check_pair", "normalize"]


# ----------------------------------------------------------------------------- metrics

def _centred_power(t: torch.Tensor, mean: Optional[torch.Tensor] = None) -> float:
    """Mean over (samples, channels, positions) of (t - per-channel dataset mean)^2."""
    t = _as_maps(t).double()
    m = t.mean(dim=(0, 2, 3), keepdim=True) if mean is None else mean
    return float(((t - m) ** 2).mean())


def variance_shares(components: Sequence[torch.Tensor], residual: torch.Tensor,
                    feat_b: torch.Tensor) -> List[float]:
    """Var(part) / Var(x_B) for each component and the residual (official ``Variance.py``:
    per-channel dataset means removed, mean over samples, channels and positions). The shares
    need not sum to 1: the parts are not orthogonal."""
    vb = _centred_power(feat_b)
    if vb <= 0:
        raise ValueError("feat_b has zero variance: shares are undefined")
    return [_centred_power(c) / vb for c in components] + [_centred_power(residual) / vb]


# ----------------------------------------------------------------------------- fitting

def _threads_kw(fn, num_threads) -> Dict[str, Any]:
    """``num_threads=`` only where the trainer supports it."""

    if num_threads is None or "num_threads" not in inspect.signature(fn).parameters:
        return {}
    return {"num_threads": num_threads}


@dataclass
class FeaturePairs:
    """Feature pairs as a data set for :func:`xnn_support.train.fit` (hashed by its tensors)."""
    feat_a: torch.Tensor
    feat_b: torch.Tensor
    spec: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.feat_a.shape[0])


def _pair_inputs(ds: FeaturePairs):
    return ds.feat_a, ds.feat_b


class _GateLoss:
    """MSE(g, x_B) / Var(x_B) + sum_k alpha_k p_k^2 (the official gate penalty, scale-free)."""

    def __init__(self, net: ConsistencyNet, alpha: Sequence[float], var_b: float):
        self.net, self.alpha, self.var_b = net, list(alpha), float(var_b)
        self._alpha: Optional[torch.Tensor] = None  # alpha as a tensor, built once per dtype/device

    def __call__(self, out, target):
        loss = F.mse_loss(out, target) / self.var_b
        if self.net.K:
            alpha = self._alpha
            if alpha is None or alpha.dtype != out.dtype or alpha.device != out.device:
                alpha = self._alpha = torch.tensor(self.alpha, dtype=out.dtype, device=out.device)
            loss = loss + (alpha * self.net.gates ** 2).sum()
        return loss


@dataclass
class Decomposition:
    """x_B = sum(components) + residual. ``components[k]``: order k, shaped like ``feat_b``;
    ``shares``: Var of each order, then of the residual, over Var(x_B)."""
    components: List[torch.Tensor]
    residual: torch.Tensor
    shares: List[float]

    @property
    def g(self) -> torch.Tensor:
        """g(x_A) = the sum of the components."""
        return torch.stack(self.components).sum(0)

    def low_order(self, upto: int) -> torch.Tensor:
        """x^(0) + ... + x^(upto)."""
        if not 0 <= upto < len(self.components):
            raise ValueError(f"upto must be in [0, {len(self.components) - 1}], got {upto!r}")
        return torch.stack(self.components[: upto + 1]).sum(0)


@dataclass
class ConsistencyResult(Decomposition):
    """What :func:`fit_consistency` returns: the decomposition of the fitting features plus the
    trained ``net`` (eval mode), ``history`` (one dict per epoch), ``linear_residual`` (relative
    error of the order-0 least-squares fit), ``from_cache`` and ``gates`` (p_k after training)."""
    net: Optional[ConsistencyNet] = None
    history: List[Dict[str, float]] = field(default_factory=list)
    linear_residual: float = float("nan")
    from_cache: bool = False
    gates: List[float] = field(default_factory=list)

    def apply(self, feat_a: torch.Tensor, feat_b: Optional[torch.Tensor] = None, *,
              batch_size: int = 256) -> Decomposition:
        """Decompose other features (e.g. a validation set) with the trained g. Without
        ``feat_b`` the residual is empty and the shares are NaN."""
        return decompose(self.net, feat_a, feat_b, batch_size=batch_size)


@torch.no_grad()
def decompose(net: ConsistencyNet, feat_a: torch.Tensor, feat_b: Optional[torch.Tensor] = None, *,
              batch_size: int = 256) -> Decomposition:
    """Order components of g(feat_a) (CPU tensors shaped like ``feat_b``), the residual and the
    variance shares, in chunks of ``batch_size`` samples on the net's device."""
    if feat_b is None:
        if not torch.is_tensor(feat_a) or feat_a.dim() not in (2, 4) or not feat_a.is_floating_point():
            raise ValueError("feat_a must be float (N, C, H, W) maps or (N, D) vectors")
        if not bool(torch.isfinite(feat_a).all()):
            raise ValueError("decompose: feat_a contains NaN or inf")
    else:
        check_pair(feat_a, feat_b, what="decompose")
        if _as_maps(feat_b).shape[1] != net.c_out:
            raise ValueError(f"decompose: feat_b has {_as_maps(feat_b).shape[1]} channels, g was fitted "
                             f"for {net.c_out}")
    a = feat_a.float()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = device_of(net)
    was = net.training
    net.eval()
    try:
        parts = [net.decompose(a[s:s + batch_size].to(dev)).cpu() for s in range(0, a.shape[0], batch_size)]
    finally:
        net.train(was)
    S = torch.cat(parts, dim=1)
    comps = list(S.unbind(0))
    if feat_b is None:
        return Decomposition(comps, torch.empty(0), [float("nan")] * (len(comps) + 1))
    b = feat_b.float().cpu()
    res = b - S.sum(0)
    return Decomposition(comps, res, variance_shares(comps, res, b))


def fit_consistency(feat_a: torch.Tensor, feat_b: torch.Tensor, *, orders: int = 3, epochs: int = 30,
                    seed: int = 0, kernel: Optional[int] = None, alpha: Union[float, Sequence[float]] = 0.1,
                    lr: float = 3e-3, weight_decay: float = 1e-4, batch_size: int = 32,
                    linear_first: bool = True, normalize: bool = True, bias: bool = True,
                    ridge: float = 1e-4, cache: Union[bool, str] = True, progress: bool = True,
                    device=None, num_threads: Optional[int] = None) -> ConsistencyResult:
    """Fit g_theta: feat_a -> feat_b and decompose feat_b into orders 0..K plus a residual.

    ``feat_a`` (N, C_A, H, W) or (N, D_A); ``feat_b`` (N, C_B, H, W) or (N, D_B): the same N
    images in the same order, the same spatial size, any channel counts. ``orders``: K+1 (3 =
    the official K = 2). ``epochs``: Adam epochs for the nonlinear stages (``epochs=0`` keeps
    the initial nonlinear weights). ``alpha``: gate penalty per gate (a float or K values).
    ``linear_first``: order 0 by closed-form least squares, frozen (see the module docstring);
    False: the official joint fit. ``kernel``: default 3 for maps, 1 for vectors / 1x1 maps.
    ``device``: where g trains (default CUDA if available). Training goes through
    :func:`xnn_support.train.fit` (progress bar, checkpoint cache; ``cache`` as there).

    Returns a :class:`ConsistencyResult`: ``components`` (K+1 tensors shaped like ``feat_b``),
    ``residual`` (x_B - g(x_A)), ``shares`` (K+2 floats: each order's share of Var(x_B), then
    the residual's), ``net``, ``history``, ``gates``, ``linear_residual``.
    """

    orders = _check_orders(orders)
    a, b = check_pair(feat_a, feat_b, what="fit_consistency")
    V.non_negative_int("epochs", epochs, fix="pass epochs >= 0 (0 keeps the initial nonlinear weights)")
    V.non_negative_int("seed", seed)
    V.positive_int("kernel", kernel, optional=True)
    V.positive("lr", lr)
    V.non_negative("weight_decay", weight_decay)
    V.positive_int("batch_size", batch_size)
    V.non_negative("ridge", ridge)
    K = orders - 1
    alphas = [float(alpha)] * K if isinstance(alpha, (int, float)) else [float(v) for v in alpha]
    if len(alphas) != K or any(not math.isfinite(v) or v < 0 for v in alphas):
        raise ValueError(f"alpha must be a number >= 0 or {K} such numbers (one per gate), got {alpha!r}; pass "
                         "e.g. alpha=0.1")
    if kernel is None:
        kernel = 1 if a.shape[-1] * a.shape[-2] == 1 else 3
    var_b = _centred_power(b)
    if var_b <= 0:
        raise ValueError("feat_b has zero variance: nothing to explain")
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    net = ConsistencyNet(a.shape[1], b.shape[1], orders, kernel=kernel, normalize=normalize, bias=bias,
                         tied_output=not linear_first, seed=seed).to(dev)
    lin_res = float("nan")
    if linear_first:
        lin_res = fit_order0(net, a, b, ridge=ridge)
        net.convs[-1].requires_grad_(False)
    history: List[Dict[str, float]] = []
    from_cache = False
    trainable = [p for p in net.parameters() if p.requires_grad and p.numel()]
    if epochs > 0 and trainable:
        out_b = b if feat_b.dim() == 4 else b[:, :, 0, 0]
        in_a = a if feat_a.dim() == 4 else a[:, :, 0, 0]
        res = fit(net, FeaturePairs(in_a, out_b), epochs=epochs, lr=lr, batch_size=batch_size,
                  weight_decay=weight_decay, schedule="cosine", seed=seed, cache=cache,
                  loss_fn=_GateLoss(net, alphas, var_b), inputs=_pair_inputs, progress=progress,
                  **_threads_kw(fit, num_threads),
                  key_extra={"method": "consistency-v1", "alpha": alphas, "linear_first": linear_first,
                             "var_b": var_b})
        history, from_cache = list(res.history), bool(res.from_cache)
    net.eval()
    d = decompose(net, feat_a, feat_b)
    return ConsistencyResult(components=d.components, residual=d.residual, shares=d.shares, net=net,
                             history=history, linear_residual=lin_res, from_cache=from_cache,
                             gates=[float(v) for v in net.gates.detach().cpu()])
