"""Experiments of the knowledge-consistency paper on any pair of networks (notebook 05).

Liang, Li, Li, Wang, Zhang, "Knowledge Consistency between Neural Networks and Beyond", ICLR 2020
(arXiv 1908.01581). The g_theta network and its decomposition live in
:mod:`xnn_support.consistency`; this module runs the paper's experiments with it:

* :func:`tap_features` -- features of named layers for a batch of images (``capture``, chunked).
* :func:`consistency_by_layer` -- (a) stability of learning: g fitted on training features of a
  pair of networks, variance shares of each order and of x_delta on held-out features, per layer.
* :func:`diagnose` -- (b) network diagnosis: a strong and a weak network, both directions. The
  residual of the strong net's features reconstructed from the weak net's = the weak net's
  **blind spots**; the residual of the weak net's features reconstructed from the strong net's =
  its **unreliable** features [LECTURE]. :func:`energy_maps` turns any part into per-position maps
  and :func:`foreground_share` measures how much of it lies on the object.
* :func:`refine` -- (c) feature refinement: the tapped feature of network B is replaced by low-order
  consistent components of g(x_A) (a splice, :class:`Spliced`), B's layers after the tap are
  fine-tuned, and the test accuracy is compared with the same fine-tuning on B's own feature.
* :func:`planted_pair` -- feature pairs with a planted relation (linear, permutation, nonlinear,
  independent, mix) for tests and the notebook's toy section; :func:`mean_sd` for seed summaries;
  :func:`part_fg_ratios` -- how much each part's energy lies on the object.

The notebook's multi-seed protocols built on these (seeds x settings x splits, tidy tables) are in
:mod:`.studies`, which imports this module (so they are not re-exported here: that would be an
import cycle).

Deviations: small VGG-like nets on the embedded ``creatures`` images instead of VGG-16/ResNets on
CUB-200 / VOC; g is fitted on a few hundred training images and evaluated on held-out ones;
refinement fine-tunes for a few epochs with Adam (official: 100 epochs, lr 1e-5 with log decay)
and compares with a control fine-tuned the same way on B's own feature (the paper reports the
accuracy before and after refinement).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from ...core.capture import capture, resolve_layers
from .method import ConsistencyResult, Decomposition, _threads_kw, fit_consistency
from ...core.utils import device_of, mean_sd  # noqa: F401  (mean_sd: the core one, re-exported)
import copy
from .method import variance_shares
from ...core.train import predict
from ...core.train import evaluate, fit

__all__ = ["tap_features", "consistency_by_layer", "diagnose", "Diagnosis", "energy_maps",
           "foreground_share", "part_fg_ratios", "planted_pair", "mean_sd", "Spliced", "refine",
           "accuracy_with_feature", "SplicedSet"]


@torch.no_grad()
def tap_features(model: nn.Module, images: torch.Tensor, layers: Sequence[str], *,
                 batch_size: int = 256) -> Dict[str, torch.Tensor]:
    """``{layer: features}`` (CPU float tensors) of ``model`` for ``images``, in chunks of
    ``batch_size`` on the model's device, eval mode, forward stopped after the last layer."""
    was = model.training
    model.eval()
    try:
        with capture(model, list(layers), stop=True, clone=True) as cap:
            out = cap.run(images, batch_size=batch_size)
    finally:
        model.train(was)
    return {k: v.float() for k, v in out.items()}


def consistency_by_layer(model_a: nn.Module, model_b: nn.Module, fit_images: torch.Tensor,
                         eval_images: torch.Tensor, layers: Sequence[str], *,
                         layers_b: Optional[Sequence[str]] = None, orders: int = 3, epochs: int = 25,
                         seed: int = 0, batch_size: int = 256, num_threads: Optional[int] = None,
                         progress: bool = True, **fit_kw) -> List[Dict[str, Any]]:
    """(a) For each layer: fit g: x_A -> x_B on ``fit_images``, decompose held-out ``eval_images``.

    ``layers_b`` names B's layers when they differ from A's (default: the same names). Returns one
    dict per layer: ``layer``, ``share_0 .. share_K``, ``share_residual``, ``share_g`` (Var of g(x_A)
    over Var(x_B)), ``fit_shares`` (on the fitting images), ``result`` (the
    :class:`~xnn_support.consistency.ConsistencyResult`) and ``eval`` (the held-out
    :class:`~xnn_support.consistency.Decomposition`).
    """
    layers = list(layers)
    layers_b = list(layers_b) if layers_b is not None else layers
    if len(layers_b) != len(layers):
        raise ValueError(f"layers_b must name one layer of B per layer of A; got {len(layers_b)} for "
                         f"{len(layers)}")
    resolve_layers(model_a, layers)
    resolve_layers(model_b, layers_b)
    fa = tap_features(model_a, fit_images, layers, batch_size=batch_size)
    fb = tap_features(model_b, fit_images, layers_b, batch_size=batch_size)
    ea = tap_features(model_a, eval_images, layers, batch_size=batch_size)
    eb = tap_features(model_b, eval_images, layers_b, batch_size=batch_size)
    fit_kw.setdefault("device", device_of(model_b))  # g trains where the networks live
    rows = []
    for la, lb in zip(layers, layers_b):
        res = fit_consistency(fa[la], fb[lb], orders=orders, epochs=epochs, seed=seed, progress=progress,
                              num_threads=num_threads, **fit_kw)
        ev = res.apply(ea[la], eb[lb], batch_size=batch_size)
        rows.append(_share_row(la if la == lb else f"{la} -> {lb}", ev, res))
    return rows


def _share_row(layer: str, ev: Decomposition, res: ConsistencyResult) -> Dict[str, Any]:

    g_share = variance_shares([ev.g], ev.residual, ev.g + ev.residual)[0]
    row: Dict[str, Any] = {"layer": layer}
    for k, s in enumerate(ev.shares[:-1]):
        row[f"share_{k}"] = s
    row["share_residual"] = ev.shares[-1]
    row["share_g"] = g_share
    row["fit_shares"] = list(res.shares)
    row["gates"] = list(res.gates)
    row["result"], row["eval"] = res, ev
    return row


@dataclass
class Diagnosis:
    """(b) Strong vs weak network. ``blind``: x_strong reconstructed from x_weak (its residual =
    the weak net's blind spots); ``unreliable``: x_weak reconstructed from x_strong (its residual =
    the weak net's unreliable features). ``*_eval`` are the held-out decompositions, whose
    ``shares[-1]`` are the residual shares."""
    blind: ConsistencyResult
    unreliable: ConsistencyResult
    blind_eval: Decomposition
    unreliable_eval: Decomposition
    feat_strong: torch.Tensor
    feat_weak: torch.Tensor
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def blind_share(self) -> float:
        return float(self.blind_eval.shares[-1])

    @property
    def unreliable_share(self) -> float:
        return float(self.unreliable_eval.shares[-1])


def diagnose(strong: nn.Module, weak: nn.Module, fit_images: torch.Tensor, eval_images: torch.Tensor,
             layer_strong: str, layer_weak: str, *, orders: int = 3, epochs: int = 25, seed: int = 0,
             batch_size: int = 256, num_threads: Optional[int] = None, progress: bool = True,
             **fit_kw) -> Diagnosis:
    """(b) Fit g in both directions between ``strong``'s ``layer_strong`` and ``weak``'s
    ``layer_weak`` (same map size; channel counts may differ) on ``fit_images``; decompose
    ``eval_images``. See :class:`Diagnosis`."""
    fs = tap_features(strong, fit_images, [layer_strong], batch_size=batch_size)[layer_strong]
    fw = tap_features(weak, fit_images, [layer_weak], batch_size=batch_size)[layer_weak]
    es = tap_features(strong, eval_images, [layer_strong], batch_size=batch_size)[layer_strong]
    ew = tap_features(weak, eval_images, [layer_weak], batch_size=batch_size)[layer_weak]
    fit_kw.setdefault("device", device_of(strong))
    kw = dict(orders=orders, epochs=epochs, seed=seed, progress=progress, num_threads=num_threads, **fit_kw)
    blind = fit_consistency(fw, fs, **kw)
    unrel = fit_consistency(fs, fw, **kw)
    return Diagnosis(blind=blind, unreliable=unrel, blind_eval=blind.apply(ew, es),
                     unreliable_eval=unrel.apply(es, ew), feat_strong=es, feat_weak=ew,
                     info={"layer_strong": layer_strong, "layer_weak": layer_weak})


def energy_maps(part: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-position energy of a feature part: sum over channels of (part - its per-channel dataset
    mean)^2, divided by the mean per-position energy of ``reference`` (e.g. x_B), so maps of the
    components, the residual and x_B share one scale. (N, C, H, W) -> (N, H, W)."""
    if part.dim() != 4 or reference.dim() != 4 or part.shape[-2:] != reference.shape[-2:]:
        raise ValueError(f"energy_maps needs (N, C, H, W) tensors with the same map size, got "
                         f"{tuple(part.shape)} and {tuple(reference.shape)}")
    e = ((part - part.mean(dim=(0, 2, 3), keepdim=True)) ** 2).sum(1)
    ref = ((reference - reference.mean(dim=(0, 2, 3), keepdim=True)) ** 2).sum(1).mean()
    return e / ref.clamp_min(1e-30)


def foreground_share(maps: torch.Tensor, fg_mask: torch.Tensor) -> Dict[str, float]:
    """How much of the energy in ``maps`` (N, h, w) falls on the object: the foreground masks
    (N, S, S) are area-averaged to the map size. Returns ``energy_on_fg`` (fraction of the total
    energy on foreground positions, weighted by their foreground fraction), ``fg_area`` (mean
    foreground fraction of a position) and ``ratio`` (= energy_on_fg / fg_area; > 1: the energy
    concentrates on the object)."""
    if maps.dim() != 3 or fg_mask.dim() != 3 or maps.shape[0] != fg_mask.shape[0]:
        raise ValueError(f"maps (N, h, w) and fg_mask (N, S, S) must have the same N, got "
                         f"{tuple(maps.shape)} and {tuple(fg_mask.shape)}")
    fg = torch.nn.functional.adaptive_avg_pool2d(fg_mask.float()[:, None], maps.shape[-2:])[:, 0]
    on = float((maps * fg).sum() / maps.sum().clamp_min(1e-30))
    area = float(fg.mean())
    return {"energy_on_fg": on, "fg_area": area, "ratio": on / max(area, 1e-12)}


def part_fg_ratios(decomposition: Decomposition, fg_mask: torch.Tensor) -> Dict[str, float]:
    """:func:`foreground_share` ratio of x_B (= g + residual), of each order and of the residual:
    ``{"x_B": .., "order 0": .., ..., "residual": ..}`` (> 1: the part concentrates on the object)."""
    x_b = decomposition.g + decomposition.residual
    parts = {"x_B": x_b, **{f"order {k}": c for k, c in enumerate(decomposition.components)},
             "residual": decomposition.residual}
    return {k: foreground_share(energy_maps(v, x_b), fg_mask)["ratio"] for k, v in parts.items()}


# ----------------------------------------------------------------------------- (c) refinement

class Spliced(nn.Module):
    """``model`` with the output of ``layer`` replaced by a given feature: ``forward(x, feat)``.

    The part of the model before the tap still runs (so the splice works on any nn.Module, skip
    connections included), but its output at ``layer`` is replaced by ``feat``;
    :meth:`freeze_lower` freezes every parameter that does not receive a gradient from the
    spliced feature, so fine-tuning touches only the layers after the tap.
    """

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        self.model = model
        self.layer = layer
        self._module = resolve_layers(model, [layer])[layer]

    def forward(self, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        h = self._module.register_forward_hook(lambda m, i, o: feat)
        try:
            return self.model(x)
        finally:
            h.remove()

    def freeze_lower(self, x: torch.Tensor, feat: torch.Tensor) -> List[str]:
        """Freeze the parameters the spliced feature does not reach; return the trainable names."""
        for p in self.model.parameters():
            p.requires_grad_(True)
            p.grad = None
        was = self.model.training
        self.model.eval()
        try:
            self(x, feat.detach()).float().sum().backward()
        finally:
            self.model.train(was)
        names = []
        for n, p in self.model.named_parameters():
            upper = p.grad is not None
            p.grad = None
            p.requires_grad_(upper)
            if upper:
                names.append(n)
        if not names:
            raise ValueError(f"no parameter after layer {self.layer!r}: nothing to fine-tune")
        return names


@dataclass
class SplicedSet:
    """Images, the feature to splice in for each image, labels (a data set for ``train.fit``)."""
    images: torch.Tensor
    feats: torch.Tensor
    labels: torch.Tensor
    spec: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _spliced_inputs(ds: SplicedSet):
    return (ds.images, ds.feats), ds.labels


@torch.no_grad()
def accuracy_with_feature(model: nn.Module, layer: str, images: torch.Tensor, feats: torch.Tensor,
                          labels: torch.Tensor, *, batch_size: int = 256) -> float:
    """Accuracy of ``model`` when the output of ``layer`` is replaced by ``feats``."""

    if not (images.shape[0] == feats.shape[0] == labels.shape[0]):
        raise ValueError(f"images, feats and labels need the same count, got {images.shape[0]}, "
                         f"{feats.shape[0]}, {labels.shape[0]}")
    out = predict(Spliced(model, layer), (images, feats), batch_size=batch_size)
    return float((out.argmax(1) == labels.cpu()).float().mean())


def refine(model_b: nn.Module, layer: str, train_images: torch.Tensor, train_labels: torch.Tensor,
           train_feats: Dict[str, torch.Tensor], test_images: torch.Tensor, test_labels: torch.Tensor,
           test_feats: Dict[str, torch.Tensor], *, epochs: int = 5, lr: float = 3e-4, batch_size: int = 64,
           seed: int = 0, num_threads: Optional[int] = None, progress: bool = True,
           cache=True) -> Dict[str, float]:
    """(c) Fine-tune ``model_b``'s layers after ``layer`` on each named feature and test it.

    ``train_feats`` / ``test_feats``: ``{name: feature}`` for the training and test images, e.g.
    ``{"own": x_B, "orders<=2": g(x_A)}`` (the same names in both). A fresh copy of B is fine-tuned
    per name with :func:`xnn_support.train.fit` (same epochs, lr, seed and batches; BN and dropout
    in training mode, layers before the tap frozen). Returns ``{"before": test accuracy of B as
    trained, name: test accuracy after fine-tuning on that feature, ...}``.
    """


    if set(train_feats) != set(test_feats):
        raise ValueError(f"train_feats and test_feats must have the same names, got {sorted(train_feats)} "
                         f"and {sorted(test_feats)}")

    class _Images:  # evaluate() wants a data set with images and labels
        def __init__(self, x, y):
            self.images, self.labels = x, y

    out = {"before": evaluate(model_b, _Images(test_images, test_labels))}
    dev = device_of(model_b)
    for name in train_feats:
        m = copy.deepcopy(model_b)
        sp = Spliced(m, layer)
        sp.freeze_lower(train_images[:2].to(dev), train_feats[name][:2].to(dev))
        fit(sp, SplicedSet(train_images, train_feats[name], train_labels), epochs=epochs, lr=lr,
            batch_size=batch_size, seed=seed, inputs=_spliced_inputs, progress=progress, cache=cache,
            key_extra={"method": "consistency-refine-v1", "layer": layer},
            **_threads_kw(fit, num_threads))
        m.eval()
        out[name] = accuracy_with_feature(m, layer, test_images, test_feats[name], test_labels)
    return out


# ----------------------------------------------------------------------------- planted toys

def planted_pair(kind: str, n: int = 256, channels: int = 8, size: int = 8, *, channels_b: Optional[int] = None,
                 seed: int = 0):
    """Feature pairs with a planted relation (x_A, x_B), both (n, C, size, size).

    ``kind``: ``"linear"`` (x_B = a 1x1 channel mix of x_A: purely 0-order), ``"permutation"``
    (x_B = x_A with channels shuffled, the paper's footnote), ``"nonlinear"`` (x_B = W2 |W1 x_A|, an
    even function: no linear part), ``"independent"`` (x_B independent of x_A: all residual) or
    ``"mix"`` (0.7 linear + 0.5 W2 ReLU(W1 x_A) + 0.3 independent). x_A is Gaussian, so its
    per-(sample, channel) spatial std is nearly constant (see the scale-invariance note in the
    spec): the official normalisation then loses almost nothing.
    """
    kinds = ("linear", "permutation", "nonlinear", "independent", "mix")
    if kind not in kinds:
        raise ValueError(f"kind must be one of {kinds}, got {kind!r}")
    cb = channels if channels_b is None else channels_b
    if kind == "permutation" and cb != channels:
        raise ValueError("a permutation needs channels_b == channels")
    g = torch.Generator().manual_seed(seed)
    xa = torch.randn(n, channels, size, size, generator=g)

    def mix(c_out, x):
        m = torch.randn(c_out, x.shape[1], generator=g) / x.shape[1] ** 0.5
        return torch.einsum("dc,nchw->ndhw", m, x)

    if kind == "linear":
        xb = mix(cb, xa)
    elif kind == "permutation":
        xb = xa[:, torch.randperm(channels, generator=g)]
    elif kind == "nonlinear":
        xb = mix(cb, mix(channels, xa).abs())
    elif kind == "independent":
        xb = torch.randn(n, cb, size, size, generator=g)
    else:
        xb = 0.7 * mix(cb, xa) + 0.5 * mix(cb, torch.relu(mix(channels, xa))) \
            + 0.3 * torch.randn(n, cb, size, size, generator=g)
    return xa, xb
