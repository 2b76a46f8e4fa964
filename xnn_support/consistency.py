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

Functions and equations:

* :class:`ConsistencyNet` -- g (``forward``) and the exact order decomposition (``decompose``):
  the ReLU masks M_k and divisors a_k of the same pass are replayed, S_{k,0} = W_k z,
  S_{k,j} = W_k (p_{k-1} M_{k-1} o S_{k-1,j-1} / a_{k-1}), x^(j) = S_{K,j}; the components sum to
  g(x_A) up to float rounding (one batched convolution per stage over the stacked orders).
* :func:`fit_order0` -- closed-form ridge least squares of the output convolution on unfolded
  patches of z (order 0 fitted first, see below).
* :func:`fit_consistency` -- the entry point: order 0 by least squares, then the nonlinear stages
  by Adam through :func:`xnn_support.train.fit` (progress bar, checkpoint cache) on
  ``MSE(g(x_A), x_B) / Var(x_B) + sum_k alpha_k p_k^2`` (the official gate penalty).
* :func:`variance_shares` -- the official variance metric: per-channel dataset mean removed,
  mean of squares over samples, channels and positions, divided by the same for x_B.

Deviations from the paper / official code (each is a choice, stated):

* **Order 0 is fitted first** (``linear_first=True``): the output convolution W_K and a bias are the
  ridge least-squares fit of x_B on z, then frozen while the ReLU stages learn the remainder. In a
  joint fit from random weights the ReLU branches absorb linear structure (an exactly linear pair
  gave an order-0 share of only ~0.4, see the tests and the notebook), so shares would say less
  about "how linear" the relation is. ``linear_first=False`` gives the official joint fit.
* The output convolution has a bias (an affine order 0; the official convs have none): the
  variance metric is mean-centred anyway, and without a bias the channel means of x_B must be
  made from z. Hidden convolutions have no bias, as in the official code.
* The MSE is divided by Var(x_B) so that the gate penalty alpha does not depend on the feature
  scale; Adam with a cosine schedule over tens of epochs instead of a log-spaced 1e-4 -> 1e-6 over
  800-1000 epochs (CPU budget).
* A and B may have different channel counts: W_0..W_{K-1} map C_A -> C_A and W_K maps C_A -> C_B.
  Vectors (N, D) are treated as (N, D, 1, 1) maps with 1x1 kernels.
* ``orders`` counts the orders, order 0 included: ``orders=3`` is the official K = 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .utils import device_of

__all__ = ["ConsistencyNet", "ConsistencyResult", "Decomposition", "FeaturePairs", "fit_consistency",
           "fit_order0", "variance_shares", "check_pair", "normalize"]

EPS = 1e-5


# ----------------------------------------------------------------------------- input checks

def _as_maps(x: torch.Tensor) -> torch.Tensor:
    """(N, D) vectors -> (N, D, 1, 1); (N, C, H, W) unchanged."""
    return x[:, :, None, None] if x.dim() == 2 else x


def check_pair(feat_a, feat_b, *, what: str = "features") -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair of feature tensors and return them as float (N, C, H, W) maps.

    Raises ``ValueError`` for non-tensors, other ranks than 2 or 4, different sample counts or
    spatial sizes, an empty batch, too few samples, and NaN/inf values.
    """
    for nm, t in (("feat_a", feat_a), ("feat_b", feat_b)):
        if not torch.is_tensor(t):
            raise ValueError(f"{what}: {nm} must be a torch tensor, got {type(t).__name__}")
        if t.dim() not in (2, 4):
            raise ValueError(f"{what}: {nm} must be (N, C, H, W) maps or (N, D) vectors, got shape "
                             f"{tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{what}: {nm} must be a float tensor, got {t.dtype}")
        if t.shape[0] < 2:
            raise ValueError(f"{what}: {nm} has {t.shape[0]} samples; at least 2 are needed")
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).flatten(1).any(1).sum())
            raise ValueError(f"{what}: {nm} contains NaN or inf ({bad} of {t.shape[0]} samples affected)")
    if feat_a.shape[0] != feat_b.shape[0]:
        raise ValueError(f"{what}: different sample counts: feat_a has {feat_a.shape[0]}, feat_b has "
                         f"{feat_b.shape[0]} (features must come from the same images, in the same order)")
    if feat_a.dim() != feat_b.dim():
        raise ValueError(f"{what}: feat_a {tuple(feat_a.shape)} and feat_b {tuple(feat_b.shape)} must both "
                         "be maps (N, C, H, W) or both vectors (N, D)")
    a, b = _as_maps(feat_a).float(), _as_maps(feat_b).float()
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"{what}: different spatial sizes: feat_a {tuple(a.shape[-2:])} vs feat_b "
                         f"{tuple(b.shape[-2:])}; tap layers with the same map size (or resize one with "
                         "torch.nn.functional.interpolate / adaptive pooling first)")
    return a, b


def _check_orders(orders) -> int:
    if isinstance(orders, bool) or not isinstance(orders, int) or orders < 1:
        raise ValueError(f"orders must be an integer >= 1 (orders 0..K with K = orders - 1 >= 0), "
                         f"got {orders!r}")
    return orders


# ----------------------------------------------------------------------------- the network g

def normalize(u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``Norm(u) = u / (std_HW(u) + 1e-5)`` per sample and channel (unbiased std, detached
    divisor, no centring); the divisor is 1 for 1x1 maps. Returns (normalised, divisor)."""
    if u.shape[-1] * u.shape[-2] == 1:
        a = torch.ones_like(u)
    else:
        a = u.detach().std(dim=(2, 3), keepdim=True, unbiased=True) + EPS
    return u / a, a


class ConsistencyNet(nn.Module):
    """g_theta: K+1 convolutions with gated skips (official ``LinearTester``), C_A -> C_B.

    ``orders``: number of orders K+1 (3 = the official K = 2). ``kernel``: odd conv size (3 as in
    the paper; 1 for vectors). ``normalize``: the official per-(sample, channel) std divisor on
    every stage input. ``bias``: a bias on the output convolution (order 0 becomes affine).
    """

    def __init__(self, c_in: int, c_out: int, orders: int = 3, *, kernel: int = 3, normalize: bool = True,
                 bias: bool = True, tied_output: bool = True, gate_init: float = 0.0,
                 seed: Optional[int] = 0):
        super().__init__()
        orders = _check_orders(orders)
        for nm, v in (("c_in", c_in), ("c_out", c_out)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{nm} must be a positive integer, got {v!r}")
        if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd integer, got {kernel!r}")
        self.c_in, self.c_out, self.orders, self.kernel = c_in, c_out, orders, kernel
        self.K = orders - 1
        self.use_norm = bool(normalize)
        pad = kernel // 2
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        convs = []
        for k in range(orders):
            co = c_out if k == self.K else c_in
            conv = nn.Conv2d(c_in, co, kernel, padding=pad, bias=bias and k == self.K)
            with torch.no_grad():  # Kaiming normal, fan_out, relu (the official init)
                std = math.sqrt(2.0 / (co * kernel * kernel))
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * std)
                if conv.bias is not None:
                    conv.bias.zero_()
            convs.append(conv)
        self.convs = nn.ModuleList(convs)
        self.q = nn.Parameter(torch.full((self.K,), float(gate_init)))
        self.tied = bool(tied_output) or self.K == 0
        # untied: the gated (order >= 1) input of the last stage has its own output conv V,
        # initialised at zero, so that a fitted order 0 (W_K) is not disturbed at the start
        self.out_nl = None if self.tied else nn.Conv2d(c_in, c_out, kernel, padding=pad, bias=False)
        if self.out_nl is not None:
            nn.init.zeros_(self.out_nl.weight)
        self.xnn_config = {"name": "consistency_net", "c_in": c_in, "c_out": c_out, "orders": orders,
                           "kernel": kernel, "normalize": self.use_norm, "bias": bool(bias),
                           "tied_output": self.tied}

    @property
    def gates(self) -> torch.Tensor:
        """p_k = sigmoid(q_k), k = 0..K-1 (p_k gates the input of stage k+1)."""
        return torch.sigmoid(self.q)

    def _norm(self, u):
        if not self.use_norm:
            return u, torch.ones((), dtype=u.dtype, device=u.device)
        return normalize(u)

    def _check(self, x):
        if not torch.is_tensor(x) or x.dim() not in (2, 4):
            raise ValueError(f"ConsistencyNet expects (N, C, H, W) or (N, D) features, got "
                             f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
        x = _as_maps(x)
        if x.shape[1] != self.c_in:
            raise ValueError(f"ConsistencyNet was built for {self.c_in} input channels, got {x.shape[1]}")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """g(x_A) (same rank as the input: maps, or vectors for (N, D) input)."""
        vec = x.dim() == 2
        x = self._check(x)
        z, _ = self._norm(x)
        p = self.gates
        u = self.convs[0](z)
        for k in range(1, self.K + 1):
            h = p[k - 1] * F.relu(self._norm(u)[0])
            if k == self.K and not self.tied:
                u = self.convs[k](z) + self.out_nl(h)
            else:
                u = self.convs[k](z + h)
        return u[:, :, 0, 0] if vec else u

    def decompose(self, x: torch.Tensor) -> torch.Tensor:
        """The K+1 order components, stacked: (K+1, N, C_B, H, W) (or (K+1, N, D) for vectors).

        Replays the masks and divisors of one pass; ``decompose(x).sum(0)`` equals ``forward(x)``
        up to float rounding.
        """
        vec = x.dim() == 2
        x = self._check(x)
        z, _ = self._norm(x)
        p = self.gates
        n = z.shape[0]
        S = self.convs[0](z).unsqueeze(0)                      # (1, N, C, H, W): S_{0,0}
        for k in range(1, self.K + 1):
            u = S.sum(0)
            a = self._norm(u)[1]
            gate = p[k - 1] * (u > 0).to(u.dtype) / a           # M_{k-1} p_{k-1} / a_{k-1}
            conv = self.convs[k]
            if k == self.K and not self.tied:                   # own weights for the gated input
                first = conv(z).unsqueeze(0)                    # S_{K,0} = W_K z + b
                rest = F.conv2d((S * gate).flatten(0, 1), self.out_nl.weight, None, padding=conv.padding)
                S = torch.cat([first, rest.unflatten(0, (S.shape[0], n))])
            else:                                               # one conv over [z, gated S_{k-1,j}]
                inp = torch.cat([z.unsqueeze(0), S * gate]).flatten(0, 1)
                S = F.conv2d(inp, conv.weight, None, padding=conv.padding).unflatten(0, (S.shape[0] + 1, n))
                if conv.bias is not None:                       # the bias belongs to order 0
                    S = torch.cat([S[:1] + conv.bias[:, None, None], S[1:]])
        return S[:, :, :, 0, 0] if vec else S


# ----------------------------------------------------------------------------- order 0 by least squares

def _patches(z: torch.Tensor, kernel: int) -> torch.Tensor:
    """Unfolded kernel x kernel patches of z as rows: (N*H*W, C*k*k)."""
    cols = F.unfold(z, kernel, padding=kernel // 2)            # (N, C*k*k, H*W)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


@torch.no_grad()
def fit_order0(net: ConsistencyNet, feat_a: torch.Tensor, feat_b: torch.Tensor, *, ridge: float = 1e-4,
               batch_size: int = 256) -> float:
    """Set ``net``'s output convolution (and bias) to the ridge least-squares fit of x_B on Norm(x_A).

    The normal equations are accumulated in float64 over chunks of ``batch_size`` samples;
    ``ridge`` is relative to the mean diagonal of X^T X. Returns the relative residual
    ||x_B - W z||^2 / ||x_B - mean||^2 on these features. The fit is order 0 of the decomposition:
    the higher orders then only model what a linear map of z cannot.
    """
    a, b = check_pair(feat_a, feat_b, what="fit_order0")
    conv = net.convs[-1]
    dev = conv.weight.device
    k = net.kernel
    d = net.c_in * k * k + (1 if conv.bias is not None else 0)
    xtx = torch.zeros(d, d, dtype=torch.float64, device=dev)
    xty = torch.zeros(d, net.c_out, dtype=torch.float64, device=dev)
    for s in range(0, a.shape[0], batch_size):
        z = net._norm(a[s:s + batch_size].to(dev))[0]
        X = _patches(z, k).double()
        if conv.bias is not None:
            X = torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype, device=dev)], 1)
        Y = b[s:s + batch_size].to(dev).permute(0, 2, 3, 1).reshape(-1, net.c_out).double()
        xtx += X.T @ X
        xty += X.T @ Y
    lam = ridge * float(xtx.diagonal().mean()) + 1e-12
    sol = torch.linalg.solve(xtx + lam * torch.eye(d, dtype=xtx.dtype, device=dev), xty)
    w = sol[: net.c_in * k * k].T.reshape(net.c_out, net.c_in, k, k)
    conv.weight.copy_(w.to(conv.weight.dtype))
    if conv.bias is not None:
        conv.bias.copy_(sol[-1].to(conv.bias.dtype))
    # relative residual of the linear fit (cheap second pass)
    err = tot = 0.0
    mean = b.mean(dim=(0, 2, 3), keepdim=True)
    for s in range(0, a.shape[0], batch_size):
        z = net._norm(a[s:s + batch_size].to(dev))[0]
        yb = b[s:s + batch_size].to(dev)
        err += float(((conv(z) - yb) ** 2).sum())
        tot += float(((yb - mean.to(dev)) ** 2).sum())
    return err / max(tot, 1e-30)


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
    import inspect

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

    def __call__(self, out, target):
        loss = F.mse_loss(out, target) / self.var_b
        if self.net.K:
            alpha = torch.tensor(self.alpha, dtype=out.dtype, device=out.device)
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
        if not torch.is_tensor(feat_a) or feat_a.dim() not in (2, 4):
            raise ValueError("feat_a must be (N, C, H, W) maps or (N, D) vectors")
        a = feat_a.float()
    else:
        check_pair(feat_a, feat_b, what="decompose")
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
                    lr: float = 3e-3, weight_decay: float = 1e-4, batch_size: int = 64,
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
    from .train import fit

    orders = _check_orders(orders)
    a, b = check_pair(feat_a, feat_b, what="fit_consistency")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    K = orders - 1
    alphas = [float(alpha)] * K if isinstance(alpha, (int, float)) else [float(v) for v in alpha]
    if len(alphas) != K or any(not math.isfinite(v) or v < 0 for v in alphas):
        raise ValueError(f"alpha must be a number >= 0 or {K} such numbers (one per gate), got {alpha!r}")
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
