"""g_theta of the knowledge-consistency paper: the network, its exact order decomposition, and the
closed-form least-squares fit of order 0. The entry point, metrics and the rationale (citation,
deviations, equations) are in :mod:`xnn_support.consistency`, which re-exports these names.

* :func:`check_pair` -- input checks shared by every function (shapes, sample counts, NaN).
* :func:`normalize` -- the official ``Norm(u) = u / (std_HW(u) + 1e-5)`` with a detached divisor.
* :class:`ConsistencyNet` -- g (``forward``) and the order components (``decompose``).
* :func:`fit_order0` -- ridge least squares of the output convolution on unfolded patches of z.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConsistencyNet", "check_pair", "normalize", "fit_order0", "EPS"]

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
    hw = u.shape[-1] * u.shape[-2]
    if hw == 1:
        a = torch.ones_like(u)
    else:
        a = _std_hw(u.detach(), hw).add_(EPS)
    return u / a, a


def _std_hw(u: torch.Tensor, hw: int) -> torch.Tensor:
    """Unbiased std over (H, W), keepdim: two passes (mean, then the centred sum of squares).
    Equals ``u.std(dim=(2, 3), unbiased=True)`` to float rounding (~1 ulp; torch's Welford
    kernel differs in the last bit) and is ~10-20x faster on the CPU for small maps."""
    d = u - u.mean((2, 3), keepdim=True)
    return (d * d).sum((2, 3), keepdim=True).div_(hw - 1).sqrt_()


class _ContiguousNCHW(torch.autograd.Function):
    """``u.contiguous()`` whose backward hands the gradient back channels-last (a plain
    ``contiguous`` would pass the loss's NCHW gradient to the convolutions' slow mixed-layout
    backward). Values are unchanged; only the memory layout differs."""

    @staticmethod
    def forward(ctx, u):
        return u.contiguous()

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous(memory_format=torch.channels_last)


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

    def _norm_div(self, u):
        """The divisor of ``_norm(u)`` alone (detached; (N, C, 1, 1), or a scalar 1)."""
        if not self.use_norm or u.shape[-1] * u.shape[-2] == 1:
            return torch.ones((), dtype=u.dtype, device=u.device)
        return _std_hw(u.detach(), u.shape[-1] * u.shape[-2]).add_(EPS)

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
        nhwc = x.device.type == "cpu" and x.shape[-1] * x.shape[-2] > 1
        if nhwc:  # oneDNN's convolutions (forward and backward) are faster on channels-last maps
            x = x.contiguous(memory_format=torch.channels_last)
        z, _ = self._norm(x)
        p = self.gates
        u = self.convs[0](z)
        for k in range(1, self.K + 1):
            # p ReLU(u / a) = ReLU(u) (p / a) (a > 0): one pass less each way than dividing u first
            h = F.relu(u) * (p[k - 1] / self._norm_div(u))
            if k == self.K and not self.tied:
                u = self.convs[k](z) + self.out_nl(h)
            else:
                u = self.convs[k](z + h)
        if nhwc:
            u = _ContiguousNCHW.apply(u)
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
