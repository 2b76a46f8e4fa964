"""Pixel-wise and layer-wise information discarding (ICML 2022) and word-wise information (ICML 2019).

* Ma, Zhang, Zhang, Zhou, Zhang, "Quantification and Analysis of Layer-wise and Pixel-wise
  Information Discarding", ICML 2022 (arXiv 1906.04109; code haotianSustc/deepinfo).
* Guan, Wang, Zhang, Chen, He, Xie, "Towards a Deep and Unified Understanding of Deep Neural Models
  in NLP", ICML 2019 (code icml2019paper2428/...:Interpreter.py).

What is reproduced: for every chosen layer l and input x, the maximum-entropy Gaussian perturbation
of the input that keeps the layer's feature f_l(x) within a bound, solved by the shared engine
:func:`xnn_support.sigma.optimize_sigma` (the papers' Lagrangian). Per unit (image grid cell,
word) the learned sigma measures how much of that unit's information the feature discards; its
entropy H = log sigma + 0.5 log(2 pi e) per input dimension is comparable across layers, networks
and epochs because every (input, layer) pair is read at the same normalised feature change F
(``sigma_f`` = the change caused by the common initial noise, ICML22).

Functions and equations:

* :func:`pixel_information` -- "entropy of the input information" per grid cell (ICML22 eq. of
  L(sigma) = E||f(x') - f||^2 / sigma_f - lambda sum_i H(X'_i)), many images x many layers at once.
* :func:`reconstruction_information` with :func:`train_decoders` -- "uncertainty of the input
  reconstruction": the same constraint, the entropy of D_l(f_l(x')) - x maximised instead (deepinfo
  step_capability_y.py), per pixel.
* :func:`fg_bg_entropy`, :func:`layer_summary` -- foreground vs background entropy (the paper's
  claim: background discarded more with depth) and layer-wise curves.
* word level (re-exported from :mod:`xnn_support.discarding_text`): :func:`word_information`
  (ICML19 Interpreter, phi on embeddings), :func:`text_information` (zoo text models, many
  sentences x layers), :func:`minilm_information` (all-MiniLM-L6-v2, staircase over its encoder).

Deviations: sigma lives in the model's input space (our nets take [0, 1] images, the paper's
ImageNet-normalised ones); the default optimiser is the engine's ``clean`` preset (log-sigma, Adam,
cosine decay, tail average, F held at 1.5 by a per-pair lam from dual ascent) rather than the code's
clamp + SGD 1e-4 + read-out at F = 1.5 (``config="icml22"`` gives the latter); RU uses the decoder's
error against the clean image as in the code, with features taken after the same activation for
decoder training and RU, and small upsampling-CNN decoders instead of 6-block ResNet decoders; no
running max over layers unless ``monotone=True`` in :func:`layer_summary`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

from ... import sigma as _sigma
from ...core import validate as V
from ...core.capture import capture, resolve_layers
from ...sigma import GridUnits, ModuleFeatures, SigmaResult, optimize_sigma
from ...core.utils import device_of
from .text import (MiniLMInputs, WordInfo, auc_per_layer, feature_std, icml19_linear_toy,  # noqa: F401
                              key_mask, key_word_auc, minilm_features, minilm_information, minilm_inputs,
                              minilm_pairs, relative_log_sigma, selection_depth, text_information,
                              word_information)
import pandas as pd
from ...core.train import fit

__all__ = ["pixel_information", "PixelInfo", "fg_bg_entropy", "layer_summary", "conv_layers", "stage_layers",
           "train_decoders", "reconstruction_information", "Decoder", "word_information", "text_information",
           "minilm_information", "minilm_inputs", "minilm_features", "RisingLam", "GridUnits",
           "tap_layers", "across_seeds", "key_mask", "auc_per_layer", "feature_std", "key_word_auc", "WordInfo",
           "MiniLMInputs", "selection_depth", "minilm_pairs", "icml19_linear_toy", "relative_log_sigma"]


# ------------------------------------------------------------------------------------ layers
def conv_layers(model: nn.Module) -> List[str]:
    """Names of the activation modules (ReLU) that follow each Conv2d, in registration order
    (the post-activation output of every conv layer; torchvision VGG/AlexNet and the zoo nets)."""
    names, pending = [], False
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and not name.endswith("downsample.0"):
            pending = True
        elif pending and isinstance(m, nn.ReLU):
            names.append(name)
            pending = False
    if not names:
        raise ValueError(f"{type(model).__name__} has no Conv2d followed by a ReLU module")
    return names


def stage_layers(model: nn.Module, size: int = 64, *, per_stage: int = 1) -> List[str]:
    """The last ``per_stage`` conv activations of every spatial resolution (the ICML22 taps: VGG-16
    conv1_2, conv2_2, conv3_3, conv4_3, conv5_3), found by one probe forward at ``size`` px."""
    names = conv_layers(model)
    dev = device_of(model)
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), capture(model, names, repeats="warn") as cap:
            model(torch.zeros(1, getattr(model, "in_channels", 3), size, size, device=dev))
    finally:
        model.train(was)
    by_size: Dict[tuple, List[str]] = {}
    for n in names:
        if n in cap:
            by_size.setdefault(tuple(cap[n].shape[-2:]), []).append(n)
    return [n for group in by_size.values() for n in group[-per_stage:]]


def tap_layers(model: nn.Module, size: int = 64) -> List[str]:
    """The layers notebook 04 reads: every conv activation when there are at most five (AlexNet:
    conv1-conv5, as the paper), else the first conv activation plus the last one of every spatial
    resolution (VGG-16: conv1_1, conv1_2, conv2_2, conv3_3, conv4_3, conv5_3)."""
    convs = conv_layers(model)
    if len(convs) <= 5:
        return convs
    ends = stage_layers(model, size)
    return ([convs[0]] if convs[0] not in ends else []) + ends


# ------------------------------------------------------------------------------------ pixels
@dataclass
class PixelInfo:
    """Per-layer view of a :class:`~xnn_support.sigma.SigmaResult` on an image grid.

    ``sigma`` and ``entropy_map`` (B, g, g); ``entropy`` (B,) mean over cells (nats per input
    dimension); ``F`` (B,) normalised feature change at the read-out; ``sigma_f`` (B,);
    ``history`` F and H (T, B); ``result`` the full engine result (every read-out rule)."""
    layer: str
    sigma: torch.Tensor
    entropy_map: torch.Tensor
    entropy: torch.Tensor
    F: torch.Tensor
    sigma_f: Optional[torch.Tensor]
    history: Dict[str, torch.Tensor]
    result: SigmaResult = field(repr=False)
    index: int = 0


def _split_layers(res: SigmaResult, shape) -> Dict[str, PixelInfo]:
    out = {}
    for l, name in enumerate(res.names):
        em = res.entropy_map[l]
        if em.dim() == 2 and em.shape[1] == math.prod(shape):  # per-cell input entropy
            em = em.reshape(-1, *shape)
        out[name] = PixelInfo(layer=name, sigma=res.sigma[l].reshape(-1, *shape), entropy_map=em,
                              entropy=res.entropy[l], F=res.F[l],
                              sigma_f=None if res.sigma_f is None else res.sigma_f[l],
                              history={"F": res.history["F"][:, l], "H": res.history["H"][:, l]},
                              result=res, index=l)
    return out


def _check_images(images) -> torch.Tensor:
    images = V.finite_tensor("images", images, dims=(4,), nonempty=False, what="(B, C, H, W) images")
    if images.shape[0] == 0:
        raise V.fail("images", "a non-empty batch", V.Shown(f"shape {tuple(images.shape)}"), "pass at least one image")
    return images


def pixel_information(model: nn.Module, images: torch.Tensor, layers, *, grid: int = 16,
                      steps: Optional[int] = None, lam: Optional[float] = None, seed: int = 0,
                      config="clean", activation: Optional[str] = None, batch_size: Optional[int] = None,
                      progress: bool = False, **overrides) -> Dict[str, PixelInfo]:
    """Pixel-wise entropy of the input information kept by each layer (ICML22), for B images and
    all ``layers`` in one optimisation; returns ``{layer: PixelInfo}`` in the order given.

    ``config``: an engine preset (``"clean"`` default, ``"icml22"`` for the official noise layer and
    read-out) or a :class:`~xnn_support.sigma.SigmaConfig`; ``steps``, ``lam`` and ``overrides``
    replace its fields. The default ``clean`` preset holds F at 1.5 by adapting lam: an explicit ``lam``
    is then refused unless ``constraint=None`` is passed too (lam fixed, F free). ``batch_size``: images optimised together (memory ~ batch x samples x layers).
    """
    images = _check_images(images)
    explicit = {k: v for k, v in (("steps", steps), ("lam", lam)) if v is not None}
    twice = sorted(set(explicit) & set(overrides))
    if twice:
        raise ValueError(f"{twice} given twice (as an argument and in overrides); give each once")
    cfg = _sigma.config(config, **overrides, **explicit)
    feats = ModuleFeatures(model, layers, activation=activation)
    res = optimize_sigma(images, GridUnits(grid), feats, config=cfg, seed=seed, batch_size=batch_size,
                         progress=progress)
    return _split_layers(res, (grid, grid))


def fg_bg_entropy(entropy_map: torch.Tensor, fg_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Foreground and background mean entropy per image from (B, g, g) cell maps and (B, H, W)
    pixel masks: each cell counts by its fraction of foreground (resp. background) pixels.
    Returns ``fg``, ``bg`` and ``gap = bg - fg`` (B,) (positive: background discarded more; NaN for
    an image without foreground or background)."""
    if entropy_map.dim() != 3 or fg_mask.dim() != 3 or entropy_map.shape[0] != fg_mask.shape[0]:
        raise ValueError(f"need (B, g, g) maps and (B, H, W) masks, got {tuple(entropy_map.shape)} and "
                         f"{tuple(fg_mask.shape)}")
    g = entropy_map.shape[-1]
    w = GridUnits(g).cell_fraction(fg_mask.cpu().bool()).to(entropy_map.dtype)
    h = entropy_map.cpu()
    fg = (w * h).sum((1, 2)) / w.sum((1, 2))
    bg = ((1 - w) * h).sum((1, 2)) / (1 - w).sum((1, 2))
    return {"fg": fg, "bg": bg, "gap": bg - fg}


def layer_summary(infos: Dict[str, PixelInfo], fg_mask: Optional[torch.Tensor] = None, *,
                  monotone: bool = False):
    """One row per layer: mean and sd over images of the entropy, the read-out F and (with masks)
    the fg / bg entropies and their gap. ``monotone=True`` applies the deepinfo post-processing
    (running max over layers) to the mean entropy, reported in ``entropy_runmax``."""

    rows = []
    for name, info in infos.items():
        row = {"layer": name, "entropy": float(info.entropy.mean()), "entropy_sd": float(info.entropy.std()),
               "F": float(info.F.mean())}
        if fg_mask is not None:
            fb = fg_bg_entropy(info.entropy_map, fg_mask)
            row.update(fg=float(fb["fg"].nanmean()), bg=float(fb["bg"].nanmean()),
                       gap=float(fb["gap"].nanmean()), gap_sd=float(_nanstd(fb["gap"])))
        rows.append(row)
    df = pd.DataFrame(rows).set_index("layer")
    if monotone:
        df["entropy_runmax"] = df["entropy"].cummax()
    return df


def across_seeds(tables: Sequence[Any]):
    """Mean and sd over seeds of per-layer tables from :func:`layer_summary` (same layers, same
    order): columns ``<col>`` (mean over seeds) and ``<col>_sd_seeds`` (sample sd, NaN for one seed)."""

    if not tables:
        raise ValueError("no tables")
    stack = pd.concat([t.reset_index() for t in tables], keys=range(len(tables)), names=["seed", "row"])
    num = stack.drop(columns=["layer"]).groupby(level="row")
    out = num.mean()
    sd = num.std(ddof=1)
    sd = sd[[c for c in sd.columns if not c.endswith("_sd")]].add_suffix("_sd_seeds")
    out = pd.concat([out, sd], axis=1)
    out.index = list(tables[0].index)
    out.index.name = "layer"
    return out


def _nanstd(t: torch.Tensor) -> float:
    t = t[~torch.isnan(t)]
    return float(t.std()) if t.numel() > 1 else float("nan")


# ------------------------------------------------------------------------------------ reconstruction
class Decoder(nn.Module):
    """Feature map (C, h, w) -> image (out_channels, H, W): a 3x3 conv, ``up`` blocks of (nearest x2
    upsampling, 3x3 conv, ReLU), a 3x3 conv to the image and a sigmoid (images in [0, 1]). A small
    stand-in for deepinfo's 6-block ResNet decoders. A final resize covers non-power-of-2 ratios."""

    def __init__(self, c_in: int, up: int, size: int, width: int = 32, out_channels: int = 3):
        super().__init__()
        if c_in < 1 or up < 0 or size < 1 or width < 1:
            raise ValueError(f"bad decoder shape: c_in={c_in}, up={up}, size={size}, width={width}")
        blocks: List[nn.Module] = [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
        for _ in range(up):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        blocks += [nn.Conv2d(width, out_channels, 3, padding=1)]
        self.net, self.size = nn.Sequential(*blocks), size

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        y = self.net(f)
        if y.shape[-1] != self.size or y.shape[-2] != self.size:
            y = nn.functional.interpolate(y, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return torch.sigmoid(y)


@dataclass
class _FeatImages:
    """(features, images) pairs for :func:`xnn_support.train.fit` (``spec`` empty: hashed by content)."""
    feats: torch.Tensor
    images: torch.Tensor
    spec: Dict[str, Any] = field(default_factory=dict)

    def __len__(self):
        return int(self.images.shape[0])


def _feat_image_inputs(ds):
    return ds.feats, ds.images


def _mse(out, y):
    return nn.functional.mse_loss(out, y)


def _clean_features(model: nn.Module, feats: ModuleFeatures, x: torch.Tensor, chunk: int = 64) -> List[torch.Tensor]:
    """Clean features of every layer for ``x`` (no grad, model in eval mode), on the CPU."""
    was, L = model.training, len(feats.names)
    model.eval()
    outs: List[List[torch.Tensor]] = [[] for _ in range(L)]
    try:
        with torch.no_grad():
            for s in range(0, x.shape[0], chunk):
                xb = x[s:s + chunk].to(feats.device)
                for l, f in enumerate(feats([xb] * L, torch.arange(s, s + xb.shape[0]))):
                    outs[l].append(f.cpu())
    finally:
        model.train(was)
    return [torch.cat(o) for o in outs]


def train_decoders(model: nn.Module, layers, images: torch.Tensor, *, val_images: Optional[torch.Tensor] = None,
                   activation: Optional[str] = None, epochs: int = 5, lr: float = 1e-3, batch_size: int = 32,
                   width: int = 32, seed: int = 0, cache=True) -> Dict[str, Any]:
    """Train one :class:`Decoder` per layer to reconstruct ``images`` from the layer's (clean)
    features, through :func:`xnn_support.train.fit` (checkpoint cache). deepinfo step_decoder.py:
    Adam lr 0.01, 5 epochs, batch 16, MSE. Returns ``{layer: Decoder}`` (eval mode, frozen) and, under
    ``"_val_mse"``, the validation MSE per layer when ``val_images`` is given."""

    images = _check_images(images)
    names = list(resolve_layers(model, layers))
    feats = ModuleFeatures(model, names, activation=activation)
    tr = _clean_features(model, feats, images)
    va = _clean_features(model, feats, val_images) if val_images is not None else None
    out: Dict[str, Any] = {}
    val_mse = {}
    for l, name in enumerate(names):
        f = tr[l]
        if f.dim() != 4:
            raise ValueError(f"layer {name!r} gives features of shape {tuple(f.shape[1:])}; decoders need (C, h, w) maps")
        up = max(0, int(round(math.log2(images.shape[-1] / f.shape[-1]))))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dec = Decoder(f.shape[1], up, images.shape[-1], width=width, out_channels=images.shape[1])
        res = fit(dec, _FeatImages(f, images.cpu()), None if va is None else _FeatImages(va[l], val_images.cpu()),
                  epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, loss_fn=_mse, inputs=_feat_image_inputs,
                  progress=False, cache=cache, key_extra={"decoder_for": name})
        dec = res.model.eval()
        for p in dec.parameters():
            p.requires_grad_(False)
        out[name] = dec.to(device_of(model))
        if va is not None:
            val_mse[name] = res.history[-1]["val_loss"]
    if val_mse:
        out["_val_mse"] = val_mse
    return out


class RisingLam:
    """A rising Lagrange multiplier lam_t = lam0 * exp(ratio * t / T) (deepinfo's RU step uses
    lam0 = 1e4, ratio = 1 in its own units); a plain class so configs stay picklable."""

    def __init__(self, lam0: float, ratio: float = 1.0):
        if not lam0 > 0 or not math.isfinite(ratio):
            raise ValueError(f"lam0 must be positive and ratio finite, got {lam0!r}, {ratio!r}")
        self.lam0, self.ratio = float(lam0), float(ratio)

    def __call__(self, t: int, T: int) -> float:
        return self.lam0 * math.exp(self.ratio * t / max(1, T))

    def __repr__(self):
        return f"RisingLam({self.lam0}, {self.ratio})"


def reconstruction_information(model: nn.Module, images: torch.Tensor, layers, decoders: Dict[str, nn.Module], *,
                               grid: int = 16, steps: Optional[int] = None, lam=None, seed: int = 0,
                               config="clean", activation: Optional[str] = None, batch_size: Optional[int] = None,
                               progress: bool = False, **overrides) -> Dict[str, PixelInfo]:
    """Pixel-wise uncertainty of the input reconstruction (ICML22 "RU"): the sigma of the input
    noise is optimised under the same feature-change bound, but the entropy maximised is that of
    the reconstruction error D_l(f_l(x~)) - x, per pixel: 0.5 log(2 pi e E[(D - x)^2] + 1e-6), the
    expectation over noise samples and channels (deepinfo: a mean of logs of single draws). Read at
    the step whose F is closest to ``target`` (default 1.5, as the code). The reconstruction entropy
    hardly depends on sigma, so lam must rise (default ``RisingLam(30, 3)``: F crosses 1.5 within
    ~100 steps on the zoo nets). ``entropy_map`` is (B, H, W)."""
    images = _check_images(images)
    lam = RisingLam(30.0, 3.0) if lam is None else lam
    cfg = _sigma.config(config, **({"readout": "target", "constraint": None} | overrides))
    cfg = cfg.replace(**{k: v for k, v in (("steps", steps), ("lam", lam)) if v is not None}).validate()
    feats = ModuleFeatures(model, layers, activation=activation)
    missing = [n for n in feats.names if n not in decoders]
    if missing:
        raise ValueError(f"no decoder for layers {missing}; train them with train_decoders()")
    decs = [decoders[n] for n in feats.names]

    def ru(l, sig, f, x):
        M, b = f.shape[:2]
        rec = decs[l](f.reshape(M * b, *f.shape[2:])).reshape(M, b, *x.shape[1:])
        err2 = (rec - x.unsqueeze(0)).pow(2).mean((0, 2))                 # (b, H, W)
        return 0.5 * torch.log(2 * math.pi * math.e * err2 + 1e-6)

    res = optimize_sigma(images, GridUnits(grid), feats, config=cfg, seed=seed, batch_size=batch_size,
                         entropy=ru, progress=progress)
    return _split_layers(res, (grid, grid))
