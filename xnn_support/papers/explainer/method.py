"""Explainer networks: unsupervised learning of a network that explains a network.

Citation: Quanshi Zhang, Yu Yang, Yuchen Liu, Ying Nian Wu, Song-Chun Zhu, "Unsupervised Learning of Neural
Networks to Explain Neural Networks", arXiv 1805.07468 (2018); extended abstract arXiv 1901.07538, AAAI-19
Workshop on Network Interpretability for Deep Learning. No official code exists; the design is the suite's
reconstruction (spec ``shared/papers/08_explainer_networks.md``, itself built from the abstracts and one figure
caption), so nothing here is verified against the paper's PDF.

What is reproduced: a frozen *performer* CNN; an *explainer* (:mod:`.net`) reads the feature map F_l of one of
its layers (addressed by dotted name, captured by the core's hooks), splits it into an interpretable track
(notebook 02's :class:`~xnn_support.papers.icnn.InterpretableConv2d` with its filter loss, ``code`` or
``paper`` mode) and an ordinary track, mixes them by a learned ratio p, and decodes the mix into the
performer's upper-layer features F_j. Training is distillation only: images, no labels, no part annotations
(the ``code`` mode's filter categories come from the performer's own predictions).

Loss (spec 2.2; :class:`ExplainerLoss`)::

    L = sum_j lambda_j ||R_j - F_j||^2 / (numel Var(F_j))        distillation, Var over the training set
      + lambda_f * sum_filters Loss_f(z_int)                     icnn.filter_loss, on the RMS-normalised map
      - lambda_p * mean log p                                    prior that rewards the interpretable track

Deviations / reconstructed choices: the norm layer (per-channel RMS, batch statistic in training, EMA in
evaluation, divisor floored at 0.1 x the track's mean RMS), p = sigmoid(30 rho) (a learning-rate choice), one 3x3 conv before the interpretable layer and one in the ordinary track, both of width
D = C_l; the -log p prior and its weight; lambda_j = 1; the filter loss computed on the pre-mask map divided by
its batch RMS (so lambda_f keeps one meaning whatever the track's scale); Adam with a cosine schedule on
features cached once (the performer never runs during training); float32 features (the spec's float16 storage
is not needed at these sizes); p per image is the spec's option, not a claim about the paper.

Equations -> functions: encoder, norm, mixing, decoder :class:`.net.Explainer` / :class:`.net.TrackNorm`;
the loss :class:`ExplainerLoss`; feature cache :func:`cache_features`; training :func:`fit_explainer_net`;
feeding R_j back into the performer :func:`replaced_forward`; the fitted explainer :class:`ExplainerNet`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ...core import validate as V
from ...core.capture import capture, resolve_layers
from ...core.predict import predict
from ...core.train import fit
from ...core.utils import device_of
from ..icnn.method import filter_loss
from .net import DECODERS, LOSS_MODES, P_MODES, Explainer

__all__ = ["fit_explainer_net", "ExplainerNet", "ExplainerLoss", "Explainer", "cache_features", "replaced_forward",
           "Pipeline", "DEFAULT_LAMBDA_F"]

#: filter-loss weight per icnn mode: ``code`` 1 (notebook 02's weight: the official 1e-5 scale), ``paper``
#: 0.01 (-MI summed over D filters is ~ D log(n^2 + 1), hundreds, against a distillation loss ~1)
DEFAULT_LAMBDA_F = {"code": 1.0, "paper": 0.01, "ordinary": 0.0}


def cache_features(performer: nn.Module, images: torch.Tensor, layers: Sequence[str], *, batch_size: int = 128
                   ) -> Dict[str, torch.Tensor]:
    """{layer: (N, ...) CPU features} and ``"__logits__"``: one no-grad, eval-mode pass of the performer."""
    V.finite_tensor("images", images, dims=(4,), what="(N, C, H, W) images")
    V.model_input(performer, images, "images")
    V.positive_int("batch_size", batch_size)
    was = performer.training
    performer.eval()
    try:
        with torch.no_grad(), capture(performer, list(layers)) as cap:
            dev, outs, feats = device_of(performer), [], {k: [] for k in layers}
            for s in range(0, images.shape[0], batch_size):
                outs.append(performer(images[s:s + batch_size].to(dev)).cpu())
                for k in layers:
                    feats[k].append(cap[k].cpu())
    finally:
        performer.train(was)
    out = {k: torch.cat(v) for k, v in feats.items()}
    out["__logits__"] = torch.cat(outs)
    return out


@dataclass
class _Distill:
    """The trainer's data set: explained features and the concatenated flat targets + pseudo-label (hashed by
    its tensors)."""
    feat: torch.Tensor
    target: torch.Tensor
    spec: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.feat.shape[0])


def _distill_inputs(ds: _Distill):
    return ds.feat, ds.target


class ExplainerLoss:
    """``loss(out, y)`` for :func:`xnn_support.core.train.fit` (module docstring). ``y`` holds the flattened
    targets and, last, the pseudo-label of each image. Keeps the last terms in ``last`` and counts steps for the
    code mode's 1/epoch decay."""

    def __init__(self, explainer: Explainer, sizes: Sequence[int], variances: Sequence[float], *, lambda_f: float,
                 lambda_p: float, lambda_targets: Optional[Sequence[float]] = None, steps_per_epoch: int = 1):
        self.ex, self.sizes, self.var = explainer, [int(s) for s in sizes], [float(v) for v in variances]
        self.lambda_f, self.lambda_p = float(lambda_f), float(lambda_p)
        self.lambda_t = [1.0] * len(self.sizes) if lambda_targets is None else [float(v) for v in lambda_targets]
        self.steps_per_epoch, self.step = int(steps_per_epoch), 0
        self.last: Dict[str, float] = {}

    def key(self) -> Dict[str, Any]:
        return {"lambda_f": self.lambda_f, "lambda_p": self.lambda_p, "lambda_targets": self.lambda_t,
                "variances": [round(v, 8) for v in self.var]}

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        labels = y[:, -1].round().long()
        parts = torch.split(out, self.sizes, 1)
        tparts = torch.split(y[:, :-1].to(out.dtype), self.sizes, 1)
        rec = sum(lam * F.mse_loss(r, t) / v for lam, r, t, v in zip(self.lambda_t, parts, tparts, self.var))
        self.last = {"recon": float(rec.detach())}
        if not self.ex.training or not torch.is_grad_enabled():
            return rec
        loss = rec
        if self.lambda_f and self.ex.mode != "ordinary":
            epoch = 1 + self.step // self.steps_per_epoch
            lf = filter_loss(self.ex, labels, epoch=epoch)
            loss = loss + self.lambda_f * lf
            self.last["filter"] = float(lf.detach())
        if self.lambda_p:
            p = self.ex._last_p
            lp = -torch.log(p.clamp_min(1e-12)).mean()
            loss = loss + self.lambda_p * lp
            self.last["prior"] = float(lp.detach())
        self.step += 1
        return loss


class Pipeline(nn.Module):
    """performer (truncated after ``layer``) -> explainer, as one module: the explainer's layers are addressable
    by dotted name (``"explainer.norm_int"`` = z_int, ``"explainer.norm_ord"`` = z_ord) for the core's capture
    and for icnn's ``peak_positions``. ``forward`` returns the flattened reconstructions."""

    def __init__(self, performer: nn.Module, layer: str, explainer: Explainer):
        super().__init__()
        self.performer, self.layer, self.explainer = performer, layer, explainer

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with capture(self.performer, [self.layer], stop=True) as cap:
            cap.forward(images)
            return cap[self.layer]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.explainer(self.features(images))


@contextlib.contextmanager
def replaced_forward(performer: nn.Module, source: str, replace: Dict[str, Callable[[torch.Tensor], torch.Tensor]]):
    """Within the block, the output of each layer ``j`` in ``replace`` is ``replace[j](F_source)``, with F_source
    the output of layer ``source`` in the same forward (which must run before every ``j``). The hooks are always
    removed. A module applied in place right after ``j`` (an in-place ReLU) acts on the replacement, as it would on
    the original output."""
    V.name("source", source, fix="pass the dotted name of the explained layer")
    mods = resolve_layers(performer, [source, *replace])
    store: Dict[str, torch.Tensor] = {}
    handles = []

    def keep(_m, _a, out):
        store["f"] = out

    def make(j):
        def hook(_m, _a, out):
            if "f" not in store:
                raise RuntimeError(f"layer {j!r} ran before {source!r}: the replacement needs F_{source} first")
            r = replace[j](store["f"])
            if tuple(r.shape) != tuple(out.shape):
                raise ValueError(f"replacement of {j!r} has shape {tuple(r.shape)}, the layer gives {tuple(out.shape)}")
            return r
        return hook

    try:
        handles.append(mods[source].register_forward_hook(keep))
        for j in replace:
            handles.append(mods[j].register_forward_hook(make(j)))
        yield performer
    finally:
        for h in handles:
            h.remove()
        store.clear()


# ----------------------------------------------------------------------------- the entry point
@dataclass
class Encoding:
    """The explainer's encoder read-out: both normalised tracks before mixing (N, D, n, n) and p."""
    z_int: torch.Tensor
    z_ord: torch.Tensor
    p: torch.Tensor


class ExplainerNet:
    """A fitted explainer around its frozen performer (returned by :func:`fit_explainer_net`).

    ``p``: the ratio of the interpretable track (float for ``p_mode="scalar"``, a (D,) tensor per channel, for
    ``"image"`` the mean over the training images); ``encode(images)`` -> :class:`Encoding`;
    ``reconstruct(images)`` -> {target: R_j}; ``interpretable_filters``: the interpretable conv layer
    (:class:`~xnn_support.papers.icnn.InterpretableConv2d`; its ``conv`` holds the filters); ``pipeline``: the
    performer + explainer as one module; ``replaced()``: a context in which the performer's target layers output
    the reconstructions; ``split(images)``: the two tracks' terms of a linear decoder."""

    def __init__(self, performer, layer, targets, explainer, *, history, variances, p_train, from_cache, key):
        self.performer, self.layer, self.targets, self.explainer = performer, layer, list(targets), explainer
        self.history, self.variances, self.from_cache, self.key = history, dict(variances), from_cache, key
        self._p_train = p_train
        self.pipeline = Pipeline(performer, layer, explainer)

    @property
    def p(self) -> Union[float, torch.Tensor]:
        if self.explainer.p_mode == "scalar":
            return float(self.explainer.ratio(None).item())
        if self.explainer.p_mode == "channel":
            return self.explainer.ratio(None).detach().flatten().cpu()
        return float(self._p_train)

    @property
    def interpretable_filters(self):
        return self.explainer.icnn

    @property
    def layer_targets(self) -> List[str]:
        """The targets that are layers of the performer (the ones :meth:`replaced` can substitute)."""
        names = dict(self.performer.named_modules())
        return [t for t in self.targets if t in names]

    def _run(self, images: torch.Tensor, fn: Callable, batch_size: int):
        V.finite_tensor("images", images, dims=(4,), what="(N, C, H, W) images")
        V.positive_int("batch_size", batch_size)
        dev, outs = device_of(self.performer), []
        modes = (self.performer.training, self.explainer.training)
        self.performer.eval()
        self.explainer.eval()
        try:
            with torch.no_grad():
                for s in range(0, images.shape[0], batch_size):
                    outs.append(fn(self.pipeline.features(images[s:s + batch_size].to(dev))))
        finally:
            self.performer.train(modes[0])
            self.explainer.train(modes[1])
        return outs

    def encode(self, images: torch.Tensor, *, batch_size: int = 128) -> Encoding:
        outs = self._run(images, lambda f: [t.cpu() for t in self.explainer.tracks(f)], batch_size)
        z_int, z_ord, p = (torch.cat([o[i].expand(o[0].shape[0], *o[i].shape[1:]) if i == 2 else o[i] for o in outs])
                           for i in range(3))
        return Encoding(z_int, z_ord, p)

    def reconstruct(self, images: torch.Tensor, *, batch_size: int = 128) -> Dict[str, torch.Tensor]:
        outs = self._run(images, lambda f: {k: v.cpu() for k, v in self.explainer.reconstruct(f).items()}, batch_size)
        return {k: torch.cat([o[k] for o in outs]) for k in self.targets}

    def split(self, images: torch.Tensor, *, batch_size: int = 128):
        """{target: (part-track term, ordinary-track term, bias)} of a linear decoder (see ``Explainer.split``)."""
        outs = self._run(images, lambda f: {k: tuple(t.cpu() for t in v) for k, v in self.explainer.split(f).items()},
                         batch_size)
        return {k: tuple(torch.cat([o[k][i] for o in outs]) for i in range(3)) for k in self.targets}

    def replaced(self, targets: Optional[Sequence[str]] = None):
        """Context manager: the performer's target layers (default: all layer targets) output R_j."""
        names = self.layer_targets if targets is None else list(targets)
        if not names:
            raise ValueError("no target of this explainer is a layer of the performer (planted targets cannot be "
                             "fed back); fit with layer names as targets")
        ex = self.explainer

        def make(j):
            return lambda f: ex.reconstruct(f)[j]
        return replaced_forward(self.performer, self.layer, {j: make(j) for j in names})


def _targets(targets, feats_fn, n: int) -> Dict[str, torch.Tensor]:
    """{name: (N, C, H, W)} from a layer name, a list of names, a tensor or a dict of tensors."""
    if isinstance(targets, str):
        targets = [targets]
    if torch.is_tensor(targets):
        targets = {"target": targets}
    if isinstance(targets, dict):
        out = dict(targets)
    elif isinstance(targets, (list, tuple)) and targets and all(isinstance(t, str) for t in targets):
        out = feats_fn(list(targets))
    else:
        raise V.fail("targets", "a layer name, a list of layer names, a (N, C, H, W) tensor or a dict of them",
                     V.Shown(type(targets).__name__), "pass e.g. targets='features.16'")
    for k, t in out.items():
        V.finite_tensor(f"targets[{k!r}]", t, dims=(4,), what="(N, C, H, W) upper-layer features")
        if t.shape[0] != n:
            raise V.fail(f"targets[{k!r}]", f"one map per image ({n})", V.Shown(f"{t.shape[0]} maps"),
                         "pass the targets of exactly these images, in order")
    return out


def fit_explainer_net(performer: nn.Module, images: torch.Tensor, layer: str, targets, *, epochs: int = 20,
                      seed: int = 0, mode: str = "code", p_mode: str = "scalar", decoder: str = "conv",
                      channels: Optional[int] = None, norm: bool = True, lambda_f: Optional[float] = None,
                      lambda_p: float = 0.1, lambda_targets: Optional[Sequence[float]] = None, labels=None,
                      lr: float = 1e-3, batch_size: int = 64, feature_batch_size: int = 128, ord_depth: int = 1,
                      features: Optional[Dict[str, torch.Tensor]] = None, cache: Union[bool, str] = True,
                      progress: bool = True, num_threads: Optional[int] = None) -> ExplainerNet:
    """Learn an explainer of the frozen ``performer``'s layer ``layer`` by distillation (module docstring).

    ``images`` (N, C, H, W) training images (no labels needed); ``targets``: upper layer name(s) of the performer
    to reconstruct, or planted target maps (a tensor or {name: tensor}, one per image). ``mode``: icnn filter
    loss of the interpretable track (``"code"`` | ``"paper"``; ``"ordinary"``: no mask and no loss);
    ``p_mode``: ``"scalar"`` | ``"channel"`` | ``"image"``; ``decoder``: ``"conv"`` | ``"linear"``;
    ``lambda_f``: filter-loss weight (default :data:`DEFAULT_LAMBDA_F` of the mode); ``lambda_p``: weight of
    -log p; ``labels``: pseudo-labels for the code mode (default: the performer's predictions); ``features``: the
    output of :func:`cache_features` for these images (reused, e.g. across planted targets). Trained through
    the shared trainer (Adam, cosine schedule), cached by weights, data and settings. Returns :class:`ExplainerNet`.
    """
    V.model_device(performer, "performer")
    V.finite_tensor("images", images, dims=(4,), what="(N, C, H, W) images")
    V.name("layer", layer, fix="pass the dotted name of the explained layer, e.g. 'features.13'")
    V.positive_int("epochs", epochs)
    V.non_negative_int("seed", seed)
    V.choice("mode", mode, LOSS_MODES)
    V.choice("p_mode", p_mode, P_MODES)
    V.choice("decoder", decoder, DECODERS)
    lambda_f = DEFAULT_LAMBDA_F[mode] if lambda_f is None else V.non_negative("lambda_f", lambda_f)
    V.non_negative("lambda_p", lambda_p)
    V.positive_int("batch_size", batch_size)
    n = images.shape[0]
    if features is None:
        features = {}

    def feats(names):
        missing = [k for k in [layer, *names] if k not in features]
        if missing or "__logits__" not in features:
            features.update(cache_features(performer, images, sorted(set([layer, *names])), batch_size=feature_batch_size))
        return {k: features[k] for k in names}

    tg = _targets(targets, feats, n)
    feats([])
    f_l = features[layer]
    if not torch.is_tensor(f_l) or f_l.dim() != 4 or f_l.shape[-1] != f_l.shape[-2]:
        raise V.fail("layer", "a layer with square (N, C, n, n) feature maps", V.Shown(f"output {tuple(f_l.shape)}"),
                     "name a conv layer / ReLU / block of the performer")
    logits = features["__logits__"]
    y = logits.argmax(1) if labels is None else V.labels("labels", labels, n=n)
    variances = {k: float(t.double().var()) for k, t in tg.items()}
    for k, v in variances.items():
        if not v > 0:
            raise V.fail(f"targets[{k!r}]", "features with non-zero variance", v, "choose another target layer")
    torch.manual_seed(seed)
    ex = Explainer(f_l.shape[1], {k: tuple(t.shape[1:]) for k, t in tg.items()}, channels=channels, mode=mode,
                   p_mode=p_mode, decoder=decoder, norm=norm, ord_depth=ord_depth,
                   num_classes=max(int(logits.shape[1]), 2), negative_label=0).to(device_of(performer))
    target = torch.cat([t.flatten(1).float() for t in tg.values()] + [y[:, None].float()], 1)
    loss = ExplainerLoss(ex, [t[0].numel() for t in tg.values()], list(variances.values()), lambda_f=lambda_f,
                         lambda_p=lambda_p, lambda_targets=lambda_targets,
                         steps_per_epoch=max(1, -(-n // batch_size)))
    res = fit(ex, _Distill(f_l.float(), target), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
              schedule="cosine", cache=cache, loss_fn=loss, inputs=_distill_inputs, progress=progress,
              num_threads=num_threads,
              key_extra={"method": "explainer-net-v1", **loss.key(), "mode": mode, "p_mode": p_mode,
                         "decoder": decoder, "norm": norm, "ord_depth": ord_depth, "targets": list(tg)})
    ex.eval()
    p_train = float("nan")
    if p_mode == "image":
        with torch.no_grad():
            p_train = float(torch.cat([ex.ratio(f_l[s:s + 512].to(device_of(ex))).flatten().cpu()
                                       for s in range(0, n, 512)]).mean())
    return ExplainerNet(performer, layer, list(tg), ex, history=res.history, variances=variances, p_train=p_train,
                        from_cache=bool(res.from_cache), key=res.key)
