"""Evaluating attribution maps: function-preserving reparameterisations as falsifiable coherency tests.

Sources: the lecture's table "coherency across layers / across networks / generality" (gradient-, perturbation-
and CAM-based maps: No / No / No; the pixel-wise entropy of discarded information of Ma, Zhang, Zhang, Zhou,
Zhang, ICML 2022, arXiv 1906.04109: Yes / Yes / Yes); H. Zhang, J. Chen, H. Xue, Q. Zhang, "Towards a Unified
Evaluation of Explanation Methods without Ground Truth", arXiv 1911.09017 (its four metrics could not be read
here and are NOT implemented); Kindermans et al. 2019 (input shift), Adebayo et al. 2018 (randomisation).

What is reproduced: the spec's operational test of coherency (shared/papers/10_attribution_evaluation.md,
section 2): a coherent map A(F, x, l) must not change when the network is replaced by one that computes the same
function with differently parameterised hidden layers. This module builds those networks by weight surgery on
any conv net addressed by dotted names, and checks each in float64 before it is used.

Functions and equations (spec section 2.1, layer l output a, next layer z = W * a + b):

* :func:`reparameterise` -- R1 scale (a' = c a, W <- W / c), R2 channel scale (a' = D a), R3 permutation
  (a' = P a, W <- W P^T), R4o / R4g mixing (insert a 1x1 conv A before conv l+1, fold A^-1 into it; A orthogonal
  or Q diag(e^s) Q2^T), R5 shift (a' = a + t, conv l+1 wrapped as conv(a' - t)), R6 BatchNorm fold, R7 input
  units (x' = (x - m') / s', compensated by a wrapper in front of conv 1), R8 identity layer (conv1x1 = I + ReLU
  after a ReLU), R9 channel duplication (a_k1 = a_k2 = a_k, next weights theta W, (1 - theta) W), R10 logit
  temperature (logits x tau; the control: argmax-preserving, not function-preserving).
* :func:`assert_same_function` -- max |F_T(u(x)) - F(x)| < 1e-10 in float64 (R10: against tau F(x)).
* :func:`fold_batchnorm` -- R6 on every Conv2d + BatchNorm2d pair (the plain conv net the tests use).

Deviations: R1-R3 and R9 act on a Conv2d whose output reaches the next Conv2d of the same ``nn.Sequential``
through ReLU / pooling / Identity / Dropout only (BatchNorm must be folded first: R6); R4, R5 insert before the
module that consumes the explained layer's output (any Conv2d with groups = 1: also inside timm's blocks);
R7 is implemented as a wrapper module (``InputUnits``), not by editing conv 1, so zero padding stays exact.
The predicted verdicts of section 2.2 live in :mod:`.metrics`, the Captum / sigma maps in :mod:`.maps`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ...core import validate as V
from ...core.capture import resolve_layers
from ...core.utils import device_of

__all__ = ["reparameterise", "assert_same_function", "fold_batchnorm", "ExplainPoint", "KINDS", "InputUnits",
           "Shift", "explainable_layers", "FunctionCheckError"]

KINDS = ("R1", "R2", "R3", "R4o", "R4g", "R5", "R6", "R7", "R8", "R9", "R10")
_COMMUTE = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Identity, nn.Dropout)  # commute with a' = D a, P a (D > 0)


class FunctionCheckError(AssertionError):
    """A reparameterised network does not compute the original function (the test would be void)."""


@dataclass
class ExplainPoint:
    """Where to read the layer in the new network: ``layer`` (dotted name in model_T) corresponds to
    ``reference`` (dotted name in the original model). ``input_map`` (R7) maps the original inputs to model_T's;
    ``output_scale`` (R10) is tau; ``log_unit`` the mean log of the new input unit per raw unit (R7: log s');
    ``max_error`` the float64 check's max |F_T - F|; ``params`` what was drawn."""
    kind: str
    layer: str
    reference: str
    input_map: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    output_scale: float = 1.0
    log_unit: float = 0.0
    max_error: float = float("nan")
    params: Dict[str, Any] = field(default_factory=dict)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_map is None else self.input_map(x)


class Shift(nn.Module):
    """x + t per channel (t of shape (C,)): R5's pair Shift(+t), Shift(-t) keeps zero padding exact."""

    def __init__(self, t: torch.Tensor):
        super().__init__()
        self.register_buffer("t", t.detach().clone())

    def forward(self, x):
        return x + self.t.view(1, -1, *([1] * (x.dim() - 2)))


class InputUnits(nn.Module):
    """R7: ``net(x' * s + m)``: the net fed inputs in new units x' = (x - m) / s (per colour channel)."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float64).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float64).view(1, -1, 1, 1))

    def forward(self, x):
        return self.net(x * self.std.to(x.dtype) + self.mean.to(x.dtype))


# ------------------------------------------------------------------------------------ addressing
def _parent(model: nn.Module, name: str) -> Tuple[nn.Module, str]:
    head, _, tail = name.rpartition(".")
    return (model.get_submodule(head) if head else model), tail


def _leaves(model: nn.Module) -> List[str]:
    return [n for n, m in model.named_modules() if n and not list(m.children())]


def _consumer(model: nn.Module, layer: str) -> str:
    """The first leaf module registered after ``layer`` and its descendants, Identity skipped (execution order in
    Sequential nets)."""
    names = [n for n, _ in model.named_modules()]
    i = names.index(layer)
    for n in names[i + 1:]:
        if n == layer or n.startswith(layer + "."):
            continue
        mod = model.get_submodule(n)
        if not list(mod.children()) and not isinstance(mod, nn.Identity):   # Identity: a folded BatchNorm
            return n
    raise ValueError(f"layer {layer!r} is the last module of the model: nothing consumes its output; pass an "
                     f"earlier layer (one of {explainable_layers(model)[:6]})")


def _seq_span(model: nn.Module, layer: str, hint: bool = True) -> Tuple[nn.Sequential, int, int, str, str]:
    """(parent Sequential, index of conv l, index of conv l+1, their names) around ``layer``, checked commuting."""
    parent, child = _parent(model, layer)
    if not isinstance(parent, nn.Sequential):
        raise ValueError(f"layer {layer!r} must sit in an nn.Sequential for R1-R3/R9 weight surgery; use R4/R5/R8 "
                         "(insertions) elsewhere")
    keys = list(parent._modules)
    j = keys.index(child)
    lo = next((k for k in range(j, -1, -1) if isinstance(parent[k], nn.Conv2d)), None)
    hi = next((k for k in range(j + 1, len(keys)) if isinstance(parent[k], nn.Conv2d)), None)
    if lo is None or hi is None:
        raise ValueError(f"layer {layer!r} must lie between two Conv2d of its Sequential; choose one of "
                         f"{explainable_layers(model)[:8] if hint else '...'}")
    bad = [f"{keys[k]} ({type(parent[k]).__name__})" for k in range(lo + 1, hi) if not isinstance(parent[k], _COMMUTE)]
    if bad:
        raise ValueError(f"between the convs around {layer!r} sit {bad}, which do not commute with channel scaling; "
                         "fold BatchNorm first (fold_batchnorm(model) or kind='R6') or pick another layer")
    if parent[lo].groups != 1 or parent[hi].groups != 1:
        raise ValueError(f"the convs around {layer!r} must have groups=1 for channel surgery")
    pre = layer.rpartition(".")[0]
    pre = pre + "." if pre else ""
    return parent, lo, hi, pre + keys[lo], pre + keys[hi]


def explainable_layers(model: nn.Module) -> List[str]:
    """Names of modules that R1-R3/R9 accept: between two Conv2d of a Sequential through commuting modules."""
    out = []
    for n in _leaves(model):
        if isinstance(model.get_submodule(n), (nn.ReLU, nn.MaxPool2d)):
            try:
                _seq_span(model, n, hint=False)
                out.append(n)
            except ValueError:
                pass
    return out


# ------------------------------------------------------------------------------------ surgery
def _scale_channels(conv_l: nn.Conv2d, conv_n: nn.Conv2d, c: torch.Tensor):
    c = c.to(conv_l.weight)
    conv_l.weight.mul_(c.view(-1, 1, 1, 1))
    if conv_l.bias is not None:
        conv_l.bias.mul_(c)
    conv_n.weight.div_(c.view(1, -1, 1, 1))


def _permute(conv_l: nn.Conv2d, conv_n: nn.Conv2d, perm: torch.Tensor):
    conv_l.weight.copy_(conv_l.weight[perm])
    if conv_l.bias is not None:
        conv_l.bias.copy_(conv_l.bias[perm])
    conv_n.weight.copy_(conv_n.weight[:, perm])


def _duplicate(parent: nn.Sequential, lo: int, hi: int, ks: torch.Tensor, theta: float):
    a, b = parent[lo], parent[hi]
    na = nn.Conv2d(a.in_channels, a.out_channels + len(ks), a.kernel_size, a.stride, a.padding, a.dilation,
                   bias=a.bias is not None, padding_mode=a.padding_mode).to(a.weight)
    nb = nn.Conv2d(b.in_channels + len(ks), b.out_channels, b.kernel_size, b.stride, b.padding, b.dilation,
                   bias=b.bias is not None, padding_mode=b.padding_mode).to(b.weight)
    na.weight.copy_(torch.cat([a.weight, a.weight[ks]]))
    if a.bias is not None:
        na.bias.copy_(torch.cat([a.bias, a.bias[ks]]))
    w = b.weight.clone()
    extra = (1 - theta) * w[:, ks]
    w[:, ks] *= theta
    nb.weight.copy_(torch.cat([w, extra], 1))
    if b.bias is not None:
        nb.bias.copy_(b.bias)
    parent[lo], parent[hi] = na, nb


def _mixing(C: int, kind: str, g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(C, C, generator=g, dtype=torch.float64))
    if kind == "R4o":
        return q
    q2, _ = torch.linalg.qr(torch.randn(C, C, generator=g, dtype=torch.float64))
    s = torch.rand(C, generator=g, dtype=torch.float64) * 2 - 1
    return q @ torch.diag(s.exp()) @ q2.T


def _insert_before(model: nn.Module, consumer: str, mods: List[Tuple[str, nn.Module]]) -> str:
    """Replace ``consumer`` by Sequential(*mods, conv=consumer); return the dotted name of the first inserted."""
    parent, child = _parent(model, consumer)
    conv = getattr(parent, child)
    seq = nn.Sequential()
    for n, m in mods:
        seq.add_module(n, m)
    seq.add_module("conv", conv)
    setattr(parent, child, seq)
    return f"{consumer}.{mods[0][0]}"


def _consumer_conv(model: nn.Module, layer: str) -> Tuple[str, nn.Conv2d]:
    nxt = _consumer(model, layer)
    conv = model.get_submodule(nxt)
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise ValueError(f"the output of {layer!r} feeds {nxt!r} ({type(conv).__name__}); R4/R5 need a Conv2d with "
                         "groups=1 right after the explained layer: pick a layer that feeds one")
    return nxt, conv


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, bias=True, padding_mode=conv.padding_mode).to(conv.weight)
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    new.weight.copy_(conv.weight * s.view(-1, 1, 1, 1))
    b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new.bias.copy_((b - bn.running_mean) * s + bn.bias)
    return new


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval) with every Conv2d immediately followed by a BatchNorm2d in the same Sequential
    folded into one conv (the BN becomes ``nn.Identity``, names unchanged): R6 everywhere."""
    V.model_device(model)
    m = copy.deepcopy(model).eval()
    for _, mod in list(m.named_modules()):
        if isinstance(mod, nn.Sequential):
            keys = list(mod._modules)
            for a, b in zip(keys, keys[1:]):
                if isinstance(mod._modules[a], nn.Conv2d) and isinstance(mod._modules[b], nn.BatchNorm2d):
                    mod._modules[a] = _fold_pair(mod._modules[a], mod._modules[b])
                    mod._modules[b] = nn.Identity()
    return m


# ------------------------------------------------------------------------------------ the entry point
def _probe(model: nn.Module, example: Optional[torch.Tensor], seed: int) -> torch.Tensor:
    if example is not None:
        return V.finite_tensor("example", example, nonempty=True)
    size, ch = getattr(model, "in_size", None), getattr(model, "in_channels", None)
    if not isinstance(size, int) or not isinstance(ch, int):
        raise V.fail("example", "a batch of inputs for the float64 function check", V.Shown("None"),
                     f"{type(model).__name__} does not say its input size: pass example=x[:4]")
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, ch, size, size, generator=g)


def _final_linear(model: nn.Module) -> str:
    lin = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not lin:
        raise ValueError(f"R10 scales the logits: {type(model).__name__} has no nn.Linear output layer")
    return lin[-1]


@torch.no_grad()
def _apply(m: nn.Module, kind: str, layer: str, g: torch.Generator, p: Dict[str, Any]) -> ExplainPoint:
    """Weight surgery in place on the copy ``m``; returns the explain point (no function check)."""
    ep = ExplainPoint(kind=kind, layer=layer, reference=layer)
    if kind in ("R1", "R2", "R3", "R9"):
        parent, lo, hi, _, _ = _seq_span(m, layer)
        C = parent[lo].out_channels
        if kind == "R1":
            c = V.positive("c", p.get("c", 3.0))
            _scale_channels(parent[lo], parent[hi], torch.full((C,), float(c), dtype=torch.float64))
            ep.params = {"c": c}
        elif kind == "R2":
            lo_c, hi_c = p.get("range", (0.1, 10.0))
            c = torch.exp(torch.empty(C, dtype=torch.float64).uniform_(math.log(lo_c), math.log(hi_c), generator=g))
            _scale_channels(parent[lo], parent[hi], c)
            ep.params = {"c": c}
        elif kind == "R3":
            perm = torch.randperm(C, generator=g)
            _permute(parent[lo], parent[hi], perm)
            ep.params = {"perm": perm}
        else:
            n = V.positive_int("duplicates", p.get("duplicates", max(1, C // 4)))
            theta = V.in_range("theta", p.get("theta", 0.3), 0.0, 1.0, low_open=True, high_open=True)
            ks = torch.randperm(C, generator=g)[:n]
            _duplicate(parent, lo, hi, ks, float(theta))
            ep.params = {"channels": ks, "theta": theta}
    elif kind in ("R4o", "R4g", "R5"):
        nxt, conv = _consumer_conv(m, layer)
        C = conv.in_channels
        if kind == "R5":
            t = torch.randn(C, generator=g, dtype=torch.float64) * float(p.get("shift", 1.0))
            ep.layer = _insert_before(m, nxt, [("shift", Shift(t.to(conv.weight))), ("unshift", Shift(-t.to(conv.weight)))])
            ep.params = {"t": t}
        else:
            A = _mixing(C, kind, g)
            mix = nn.Conv2d(C, C, 1, bias=False).to(conv.weight)
            mix.weight.copy_(A.view(C, C, 1, 1).to(conv.weight))
            w = torch.einsum("ocij,cd->odij", conv.weight.double(), torch.linalg.inv(A))
            conv.weight.copy_(w.to(conv.weight))
            ep.layer = _insert_before(m, nxt, [("mix", mix)])
            ep.params = {"A": A}
    elif kind == "R6":
        nxt = _consumer(m, layer)
        conv, bn = m.get_submodule(layer), m.get_submodule(nxt)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            raise ValueError(f"R6 folds a Conv2d followed by a BatchNorm2d: {layer!r} is {type(conv).__name__} "
                             f"and feeds {nxt!r} ({type(bn).__name__})")
        parent, child = _parent(m, layer)
        setattr(parent, child, _fold_pair(conv, bn))
        bp, bc = _parent(m, nxt)
        setattr(bp, bc, nn.Identity())
        ep.layer, ep.reference = nxt, layer   # the pre-BN tensor of the original, read after the fold
    elif kind == "R7":
        mean = torch.as_tensor(p.get("mean", (0.485, 0.456, 0.406)), dtype=torch.float64)
        std = torch.as_tensor(p.get("std", (0.229, 0.224, 0.225)), dtype=torch.float64)
        ep.input_map = lambda x, mu=mean, sd=std: (x - mu.to(x).view(1, -1, 1, 1)) / sd.to(x).view(1, -1, 1, 1)
        ep.layer, ep.log_unit = "net." + layer, float(std.log().mean())
        ep.params = {"mean": mean, "std": std}
    elif kind == "R8":
        mod = m.get_submodule(layer)
        C = p.get("channels")
        if C is None:
            nxt = m.get_submodule(_consumer(m, layer))
            C = getattr(nxt, "in_channels", None)
        if not isinstance(C, int):
            raise ValueError(f"R8 needs the channel count of {layer!r}: pass channels=...")
        eye = nn.Conv2d(C, C, 1).to(device_of(m))
        eye.weight.copy_(torch.eye(C).view(C, C, 1, 1))
        eye.bias.zero_()
        parent, child = _parent(m, layer)
        setattr(parent, child, nn.Sequential(mod, eye.to(V.model_dtype(m)), nn.ReLU()))
        ep.layer = f"{layer}.2"
    else:  # R10
        tau = V.positive("tau", p.get("tau", 5.0))
        last = m.get_submodule(_final_linear(m))
        last.weight.mul_(tau)
        if last.bias is not None:
            last.bias.mul_(tau)
        ep.output_scale, ep.params = float(tau), {"tau": tau}
    return ep


def reparameterise(model: nn.Module, kind: str, layer, *, seed: int = 0, example: Optional[torch.Tensor] = None,
                   check: bool = True, tol: float = 1e-10, **params) -> Tuple[nn.Module, ExplainPoint]:
    """A network computing the same function as ``model`` with layer ``layer`` reparameterised (spec 2.1).

    ``kind``: one of :data:`KINDS`. ``layer``: dotted name (or module) whose output is the explained tensor a
    (R1-R3/R9: a ReLU / pool between two convs of a Sequential; R4/R5: any module feeding a Conv2d; R6: a Conv2d
    followed by BatchNorm2d; R8: a ReLU; R7, R10: any layer, only renamed). ``seed`` draws c_k, P, A, t.
    ``params``: ``c`` (R1, 3.0), ``range`` (R2, (0.1, 10)), ``shift`` (R5 std of t, 1.0), ``mean``/``std`` (R7,
    ImageNet's), ``duplicates``/``theta`` (R9), ``tau`` (R10, 5.0). ``check``: verify in float64 on ``example``
    (default 4 random inputs of ``model.in_size``) that max |F_T(u(x)) - F(x)| < ``tol`` (R10: against tau F);
    raises :class:`FunctionCheckError` otherwise. Returns ``(model_T, ExplainPoint)``; ``model`` is not changed.
    """
    kind = V.choice("kind", kind, KINDS)
    V.model_device(model)
    layer = next(iter(resolve_layers(model, layer)))
    seed = V.non_negative_int("seed", seed)
    g = torch.Generator().manual_seed(seed)
    dtype = V.model_dtype(model) or torch.float32
    m = copy.deepcopy(model).double().eval()   # surgery in float64, so the check tests the transform itself
    ep = _apply(m, kind, layer, g, params)
    if kind == "R7":
        p = ep.params
        m = InputUnits(m, p["mean"], p["std"]).to(device_of(model)).double().eval()
    if check:
        ep.max_error = assert_same_function(model, m, _probe(model, example, seed), point=ep, tol=tol)
    m = m.to(dtype)
    return m, ep


@torch.no_grad()
def assert_same_function(model: nn.Module, model_t: nn.Module, x: torch.Tensor, *, point: Optional[ExplainPoint] = None,
                         tol: float = 1e-10) -> float:
    """max |F_T(u(x)) - s F(x)| in float64 (copies of both nets, eval mode; u, s from ``point``: R7's input map,
    R10's tau); raises :class:`FunctionCheckError` if it is not below ``tol``. Returns the max error."""
    x = V.finite_tensor("x", x, nonempty=True)
    tol = V.positive("tol", tol)
    a, b = copy.deepcopy(model).double().eval(), copy.deepcopy(model_t).double().eval()
    dev = device_of(a)
    xd = x.to(dev, torch.float64)
    y = a(xd) * (1.0 if point is None else point.output_scale)
    yt = b(xd if point is None else point.inputs(xd))
    err = float((yt - y).abs().max())
    if not err < tol:
        what = point.kind if point is not None else "model_t"
        raise FunctionCheckError(f"{what} does not preserve the function: max |F_T - F| = {err:.3g} >= tol {tol:g} "
                                 "(float64); the transform is not valid at this layer (check the ops around it)")
    return err
