"""Interpretable CNNs: the interpretable conv layer and its filter loss.

Citation: Quanshi Zhang, Ying Nian Wu, Song-Chun Zhu, "Interpretable Convolutional Neural Networks",
CVPR 2018, arXiv 1710.00935; official code ``zqs1022/interpretableCNN`` (MATLAB/MatConvNet).

What is reproduced
* :class:`InterpretableConv2d` -- a conv layer whose filters are pushed to fire at one location:
  ``a = relu(conv(x))``; ``mu`` = the peak of each filter's map; the output is
  ``relu(a * mask_mu)`` with the mask (template) ``max(1 - beta ||[i,j] - mu||_1 / n, -1)`` held
  constant in the backward pass (paper section 3.1, "forward masking").
* :func:`filter_loss` -- the filter loss on the pre-mask map ``a`` in two documented modes:

  ``"paper"``: ``Loss_f = -MI(X; T)`` as published (eq. 1-2): positive templates
  ``T_mu: t_ij = tau max(1 - beta ||[i,j]-mu||_1/n, -1)`` for all n^2 positions plus the negative
  template ``T^- = -tau``, ``tau = 0.5/n^2``, ``beta = 4``, priors ``1/(1+n^2)`` each;
  ``p(x|T) = exp(<x,T>)/Z_T`` with ``Z_T`` summed over the images of the batch (the batch stands
  for X). All n^2 template scores come from one convolution with a (2n-1)x(2n-1) kernel, or,
  faster on CPU for n <= 64, one GEMM with the template bank (:func:`template_scores`); the loss
  is differentiated by autograd.

  ``"code"``: the official code's surrogate gradient (spec section 2.2; ``our_vl_simplenn.m``):
  centroid ``mu``, per-channel learned slope ``w3`` (relaxed toward ``clamp(3/sigma, 1.5, 3)``),
  unit-amplitude masks, the injected gradient with temperature 0.5, batch normalisation, absolute
  scale 1e-5 and 1/epoch decay, class-balanced weights. It is returned as ``sum(a * G) / B`` with G
  computed without grad, so autograd gives ``dL/da = G / B`` (MatConvNet sums over the batch; our
  task loss is a batch mean) -- :func:`code_gradient` computes G.

Deviations (also listed in the notebook)
* Forward masks have amplitude 1 in both modes (the official code's choice; the paper's tau only
  rescales the masked map). ``"paper"`` mode is label-free like the formula; ``"code"`` mode uses
  labels (positive images of the filter's category vs the rest) as the official code does.
* One interpretable layer: a new 3x3 conv inserted after a named layer
  (:func:`make_interpretable`, the official code's surgery) or a named Conv2d wrapped in place; the
  code also masks the input of the new layer (a second regularised layer): call it on both (notebook 02's
  sweep does, ``icnn_experiments.ARCHS["vgg_two"]``).
* Filter category (multi-class): EMA (0.9) of the per-image max activation per class, as the code.

Equations -> functions: templates (eq. for t_ij) :func:`template_kernel`, :func:`positive_templates`;
``<x, T_mu>`` for all mu :func:`template_scores` (one convolution, or one GEMM); -MI(X;T) :func:`_paper_loss` (closed-form backward, :class:`_MinusMI`); official gradient
:func:`code_gradient`; masking :class:`InterpretableConv2d`. Templates live in :mod:`.templates`, the
layer in :mod:`.layer` (both re-exported here); metrics are in :mod:`.metrics`.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Union

import torch
from torch import nn
from ...core import validate as V
from ...core.capture import resolve_layers
from .layer import MODES, InterpretableConv2d
from .templates import positive_templates, template_kernel, template_scores  # noqa: F401

__all__ = ["InterpretableConv2d", "make_interpretable", "interpretable_layers", "filter_loss",
           "FilterLoss", "template_kernel", "positive_templates", "template_scores", "code_gradient",
           "MODES"]

ALPHA_C = 0.5      # temperature of the official gradient
CODE_SCALE = 1e-5  # absolute scale of the official injected gradient


def _channels(module: nn.Module) -> Optional[int]:
    for m in reversed(list(module.modules())):
        if isinstance(m, nn.Conv2d):
            return m.out_channels
        if isinstance(m, nn.BatchNorm2d):
            return m.num_features
    return None


def _channels_before(model: nn.Module, target: nn.Module) -> Optional[int]:
    """Channels of the last Conv2d/BatchNorm2d registered before ``target`` (e.g. a ReLU)."""
    c = None
    for m in model.modules():
        if m is target:
            return c
        if isinstance(m, nn.Conv2d):
            c = m.out_channels
        elif isinstance(m, nn.BatchNorm2d):
            c = m.num_features
    return None


_MAPS = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)
_FLAT = (nn.Linear, nn.Bilinear, nn.Flatten, nn.Unflatten, nn.Embedding, nn.EmbeddingBag, nn.Conv1d, nn.Conv3d,
         nn.BatchNorm1d, nn.LayerNorm, nn.RNNBase, nn.MultiheadAttention, nn.TransformerEncoderLayer)


def _feeds_maps(model: nn.Module, target: nn.Module) -> Optional[bool]:
    """Whether ``target``'s output is a conv feature map: the last module among those that decide
    the output's kind (conv/BN 2-D: maps; Linear, Flatten, Embedding, ...: flat), taken inside ``target``
    when it has submodules, else up to it in registration order. None when nothing decides."""
    scope = list(target.modules()) if any(True for _ in target.children()) else None
    if scope is None:
        scope = []
        for m in model.modules():
            scope.append(m)
            if m is target:
                break
    last = None
    for m in scope:
        if isinstance(m, _MAPS):
            last = True
        elif isinstance(m, _FLAT):
            last = False
    return last


def _check_layer_names(model: nn.Module, layers, new_conv: bool, channels) -> list:
    """The checked layer names of :func:`make_interpretable` (non-empty, distinct, not nested, each
    giving a conv feature map), with the fix in every error."""
    names = [layers] if isinstance(layers, str) else list(layers) if isinstance(layers, (list, tuple)) else None
    if not names:
        raise V.fail("layers", "a layer name or a non-empty list of them", layers,
                     "pass the dotted name of a conv layer (or of a ReLU/block after one), e.g. 'features.19'")
    for n in names:
        V.name("layers", n, fix="pass the dotted name of a conv layer (or of a ReLU/block after one), e.g. "
                               "'features.19'; the root model itself cannot be made interpretable")
    if len(set(names)) != len(names) or any(a != b and b.startswith(a + ".") for a in names for b in names):
        raise V.fail("layers", "distinct, non-nested layer names", names, "name each layer once, none inside another")
    V.positive_int("channels", channels, optional=True)
    mods = resolve_layers(model, names)
    for n, m in mods.items():
        if _feeds_maps(model, m) is False:
            raise V.fail("layers", "layers whose output is a conv feature map (B, C, H, W)",
                         V.Shown(f"{n!r} ({type(m).__name__}) after flat features"),
                         "name a conv layer, a ReLU/BatchNorm/pool after one, or a block of them (e.g. "
                         "'features.19' of VGG, 'layer4' of ResNet)")
    return names


def make_interpretable(model: nn.Module, layers: Union[str, Sequence[str]], *, mode: str = "paper",
                       new_conv: bool = True, channels: Optional[int] = None, **layer_kw) -> nn.Module:
    """Make ``model`` interpretable in place at the named layers (dotted names) and return it.

    ``new_conv=True`` (the official surgery): module ``name`` becomes ``Sequential(original,
    InterpretableConv2d(C, C))``, so the interpretable layer is ``name + ".1"``; C from
    ``channels`` or the last Conv2d/BatchNorm2d inside the module. Put it after a ReLU / block
    output (VGG ``features.29``, ResNet ``layer4``, zoo ``features``). ``new_conv=False``: the named
    module must be an ``nn.Conv2d``; it is wrapped (``name + ".conv"`` holds its weights).
    ``layer_kw`` go to :class:`InterpretableConv2d` (``beta``, ``num_classes``, ...). Refused (ValueError
    naming the fix): the empty name (the model itself), a repeated or nested name, a layer whose output
    is not a conv feature map (a Linear, a Flatten, a ReLU after a Linear).
    """
    V.model_device(model)
    V.choice("mode", mode, MODES)
    names = _check_layer_names(model, layers, new_conv, channels)
    mods = resolve_layers(model, names)
    for name in names:
        old = mods[name]
        if new_conv:
            c = channels if channels is not None else (_channels(old) or _channels_before(model, old))
            if c is None:
                raise ValueError(f"cannot infer the channels after {name!r} ({type(old).__name__}); "
                                 "pass channels=")
            new = nn.Sequential(old, InterpretableConv2d((c, c), mode=mode, **layer_kw))
        else:
            if not isinstance(old, nn.Conv2d):
                raise ValueError(f"{name!r} is a {type(old).__name__}, not an nn.Conv2d "
                                 "(use new_conv=True to insert a new conv after it)")
            new = InterpretableConv2d(old, mode=mode, **layer_kw)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        new.to(next(old.parameters(), torch.zeros(())).device)
        setattr(parent, attr, new)
    return model


def interpretable_layers(model: nn.Module) -> Dict[str, InterpretableConv2d]:
    """Name -> every :class:`InterpretableConv2d` inside ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, InterpretableConv2d)}


# ----------------------------------------------------------------------------- the filter loss
class _MinusMI(torch.autograd.Function):
    """-MI(X; T) per filter from the scores s (B, D, T) with a uniform prior over the T templates,
    p(x_b | t) = softmax over the batch of s[:, d, t]. Closed-form backward (two element-wise
    passes instead of autograd through log-softmax, exp and logsumexp):
    dMI/dP_bt = p_t (log P_bt - log q_b), q_b = sum_t p_t P_bt; dMI/ds = P (g - sum_b P g)."""

    @staticmethod
    def forward(ctx, s):
        T = s.shape[2]
        L = s - torch.logsumexp(s, dim=0, keepdim=True)              # log p(x | t)
        P = L.exp()
        logq = torch.logsumexp(L, dim=2, keepdim=True) - math.log(T)  # log p(x), stable when all P_bt underflow
        g = (L - logq) / T                                           # p_t (log p(x|t) - log p(x))
        ctx.save_for_backward(P, g)
        return -(P * g).sum((0, 2))

    @staticmethod
    def backward(ctx, grad_out):
        P, g = ctx.saved_tensors
        Pg = P * g
        return -(Pg - P * Pg.sum(0, keepdim=True)) * grad_out[None, :, None]


def _paper_loss(a: torch.Tensor, beta: float = 4.0) -> torch.Tensor:
    """-MI(X; T) per filter, (D,), with X = the B maps of the batch (eq. 1-2 of the paper)."""
    B, D, n, _ = a.shape
    tau = 0.5 / n ** 2
    s_pos = template_scores(a, tau, beta).flatten(2)                 # (B, D, n^2)
    s_neg = -tau * a.sum((2, 3))[..., None]                          # (B, D, 1)
    return _MinusMI.apply(torch.cat([s_pos, s_neg], 2))              # uniform prior 1/(1 + n^2)


def _update_classes(layer: InterpretableConv2d, a: torch.Tensor, y: torch.Tensor) -> None:
    """EMA (0.9) over batches of the mean per-image max activation of each class (official code)."""
    peak = a.detach().flatten(2).amax(2)                             # (B, D)
    for c in torch.unique(y).tolist():
        if c == layer.negative_label or not 0 <= c < layer.num_classes:
            continue
        m = peak[y == c].mean(0).to(layer.class_strength.dtype)
        layer.class_strength[:, c] = 0.9 * layer.class_strength[:, c] + 0.1 * m


def filter_classes(layer: InterpretableConv2d) -> torch.Tensor:
    """(D,) the category each filter serves (argmax of its class-strength EMA)."""
    return layer.class_strength.argmax(1)


def code_gradient(a: torch.Tensor, mask: torch.Tensor, positive: torch.Tensor, epoch: int = 1) -> torch.Tensor:
    """The official code's injected gradient G = dLoss/da (MatConvNet scale, summed over the batch).

    ``a`` (B, D, n, n) post-ReLU map, ``mask`` (B, D, n, n) its masks, ``positive`` (B, D) bool:
    image b belongs to filter d's category. Positives: s = mean_ij(a mask), log Z+ = 0.5 log mean_b
    exp(mean_ij(a mask') / 0.5) with mask' the masks reversed over batch and channel, c = exp(s/0.5)
    (s - log Z+ + 0.5); G -= mask c 1e-5 w_pos. Negatives: s = mean_ij(a), log Z- = 0.5 log mean_b
    exp(-s/0.5), c = exp(-s/0.5)(-s - log Z- + 0.5); G += c 1e-5 w_neg. c is divided by
    mean_b(c) * epoch / 0.1 over the positives (negatives); w = 0.5 / density (0.5 / (1 - density)).
    """
    with torch.no_grad():
        a, mask = a.detach(), mask.detach()
        pos = positive.bool()
        neg = ~pos
        B = a.shape[0]
        coef_pos = torch.zeros(pos.shape, dtype=torch.float64, device=a.device)  # multiplies -mask
        coef_neg = torch.zeros_like(coef_pos)                                     # uniform over ij
        mag = epoch / 0.1

        def norm(c, sel):
            c = torch.nan_to_num(c, nan=0.0, posinf=torch.finfo(c.dtype).max / 1e6)
            m = (c * sel).sum(0) / sel.sum(0).clamp_min(1)
            return c / (m * mag).where(m != 0, torch.ones_like(m))

        if pos.any():
            s = (a * mask).mean((2, 3)).double()
            s_rev = (a * mask.flip(0).flip(1)).mean((2, 3)).double()
            w = pos.double()
            logz = ALPHA_C * (torch.logsumexp(torch.where(pos, s_rev / ALPHA_C, -math.inf), 0)
                              - torch.log(w.sum(0).clamp_min(1)))
            c = torch.exp(s / ALPHA_C) * (s - logz + ALPHA_C)
            c = norm(c, w) * pos
            w_pos = 0.5 / (w.sum(0) / B).clamp_min(1e-12)
            coef_pos = c * CODE_SCALE * w_pos
        if neg.any():
            s = a.mean((2, 3)).double()
            w = neg.double()
            logz = ALPHA_C * (torch.logsumexp(torch.where(neg, -s / ALPHA_C, -math.inf), 0)
                              - torch.log(w.sum(0).clamp_min(1)))
            c = torch.exp(-s / ALPHA_C) * (-s - logz + ALPHA_C)
            c = norm(c, w) * neg
            w_neg = 0.5 / (w.sum(0) / B).clamp_min(1e-12)
            coef_neg = c * CODE_SCALE * w_neg
        return (coef_neg.to(a.dtype)[..., None, None] - mask * coef_pos.to(a.dtype)[..., None, None])


def _relax_slope(layer: InterpretableConv2d, a: torch.Tensor, mu: torch.Tensor, pos: torch.Tensor) -> None:
    """w3 <- w3 + r (clamp(3 / sigma_bar, 1.5, 3) - w3); sigma_bar = strength-weighted spatial std."""
    with torch.no_grad():
        B, D, n, _ = a.shape
        m = a.detach().clamp_min(0)
        g = torch.linspace(-1, 1, n, device=a.device, dtype=a.dtype)
        tot = m.sum((2, 3)).clamp_min(1e-12)
        r = (m.sum(3) * g).sum(2) / tot
        c = (m.sum(2) * g).sum(2) / tot
        var = (m * ((g[:, None] - r[..., None, None]) ** 2 + (g[None, :] - c[..., None, None]) ** 2)
               ).sum((2, 3)) / tot
        wts = tot * pos
        sig = (var.sqrt() * wts).sum(0) / wts.sum(0).clamp_min(1e-12)
        target = torch.clamp(3 / sig.clamp_min(1e-6), 1.5, 3.0)
        has = wts.sum(0) > 0
        layer.slope[has] += layer.slope_rate * (target[has] - layer.slope[has])


def filter_loss(model: nn.Module, labels: Optional[torch.Tensor] = None, *, epoch: int = 1,
                update: bool = True) -> torch.Tensor:
    """The summed filter loss of every :class:`InterpretableConv2d` in ``model`` after a forward.

    ``"paper"`` layers: sum over filters of -MI(X;T) (labels unused). ``"code"`` layers: the
    official surrogate (needs ``labels``; ``epoch`` >= 1 drives the 1/epoch decay); with
    ``update`` (and the model in training mode) the filter categories and slopes are updated too.
    ``"ordinary"`` layers add 0. Multiply by your loss weight.
    """
    V.positive_int("epoch", epoch)
    total = None
    for name, layer in interpretable_layers(model).items():
        a = layer.last_a
        if a is None:
            raise RuntimeError(f"{name}: no forward pass recorded; run the model before filter_loss")
        if layer.mode == "ordinary":
            term = a.sum() * 0
        elif layer.mode == "paper":
            term = _paper_loss(a, layer.beta).sum()
        else:
            if labels is None:
                raise ValueError("code mode needs the labels of the batch")
            y = labels.to(a.device).long()
            if y.shape[0] != a.shape[0]:
                raise ValueError(f"{a.shape[0]} maps but {y.shape[0]} labels")
            if update and layer.training:
                _update_classes(layer, a, y)
            pos = (y[:, None] == filter_classes(layer)[None, :])
            if update and layer.training:
                _relax_slope(layer, a, layer.last_mu, pos)
            G = code_gradient(a, layer.last_mask, pos, epoch)
            term = (a * G).sum() / a.shape[0]
        total = term if total is None else total + term
    if total is None:
        raise ValueError("the model has no InterpretableConv2d layer")
    return total


class FilterLoss:
    """``loss_fn(out, y)`` for :func:`xnn_support.train.fit`: cross-entropy + ``weight`` x filter loss.

    Counts training steps to know the epoch (``steps_per_epoch``) for the code mode's 1/epoch decay.
    Pass ``key_extra=obj.key()`` to ``fit`` so the cache tells settings apart.
    """

    def __init__(self, model: nn.Module, weight: float = 1.0, steps_per_epoch: int = 1):
        V.non_negative("weight", weight)
        V.positive_int("steps_per_epoch", steps_per_epoch)
        self.model, self.weight, self.steps_per_epoch = model, float(weight), int(steps_per_epoch)
        self.step = 0
        self.ce = nn.CrossEntropyLoss()

    def key(self) -> Dict[str, object]:
        return {"filter_loss_weight": self.weight,
                "modes": sorted({m.mode for m in interpretable_layers(self.model).values()})}

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.ce(out, y)
        if not self.model.training or not torch.is_grad_enabled() or self.weight == 0:
            return loss
        epoch = 1 + self.step // self.steps_per_epoch
        self.step += 1
        return loss + self.weight * filter_loss(self.model, y, epoch=epoch)
