"""Pixel-wise information discarding on a real ImageNet-pretrained CNN (notebook 04, issue 16).

What it does: the foreground / background test of Ma et al. (ICML 2022) on EfficientNet-Lite0
(:func:`xnn_support.models.build`, timm ``tf_efficientnet_lite0`` with the packaged ImageNet
weights) against the same architecture at several random initialisations, on the same images
with the same noise (common random numbers). On the cartoon ``creatures`` an untrained small CNN
already shows the background - foreground entropy gap; this module asks whether a net trained at
ImageNet scale shows a gap that its untrained twin does not (the gap *learned*).

* :class:`Normalized` -- ``net((x - 0.5) / 0.5)``: the model's preprocessing inside the measured
  function, so sigma (and the noise) live in [0, 1] pixel space, per cell of the input image. The
  wrapped net is the attribute ``net``: layer ``"blocks.3"`` of the net is ``"net.blocks.3"`` of
  the wrapper (:func:`real_network_study` adds the prefix; its tables use the net's own names).
* :func:`real_network_study` -- per-layer pixel-wise entropy (:func:`~.method.pixel_information`)
  for the pretrained net and the random inits: a tidy table, one row per (net, init, image, layer).
* :func:`real_summary` -- per layer: trained gap (sd over images), random gap (mean and sd over
  inits), trained minus random (per init), growth with depth.
* :func:`real_reading` / :func:`reading_lines` -- the verdicts (gap positive? growing? learned?) beside
  the toy result, and whether the "scale" explanation of the toy result held.

Deviations from the ICML 2022 settings (VGG-16 / ResNet on CUB and ILSVRC at 224 px, a 16 x 16
grid, deepinfo's clamp + SGD 1e-4 for 100 steps at 8 noise samples, read at F = 1.5):
EfficientNet-Lite0 instead of VGG-16; 112 px images (the net is fully convolutional; resized
with the preprocessing's bilinear antialiased resize) and an 8 x 8 grid (14 px cells) to fit a
2-core CPU; the engine's ``clean`` preset (log-sigma from 0.01, Adam, cosine decay, F held at 1.5 by
dual ascent from lam = 3) with 30 steps and 2 noise samples, lr 0.1, the dual ascent twice as fast,
and the ICML22 read-out at F = 1.5 instead of the tail average (:data:`FAST`; the read-out F is in
the table; a pair whose F stays far from 1.5 can be read at its initial sigma, a uniform map with gap
0: :func:`real_summary` counts them as ``uniform_maps``); coarse hand-drawn photo masks; creatures
rendered at 224 px and resized; the taps are block outputs (the linear bottleneck of each MBConv
stage, no activation) and the head conv (before its BN and ReLU6); random inits in eval mode like
the pretrained net (BatchNorm with its initial running statistics, mean 0 and variance 1).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ...data import creatures
from ...models import build
from ...models.pretrained import MEAN, STD
from .method import fg_bg_entropy, pixel_information

__all__ = ["Normalized", "load_net", "creature_images", "resize_images", "resize_masks", "real_network_study",
           "real_summary", "real_reading", "reading_lines", "entropy_maps", "LAYERS", "FAST", "COLUMNS"]

ARCH = "efficientnet_lite0"
#: the taps: one block output per resolution change (56 -> 28, 14 -> 7, 7 -> 4 at 112 px) and the head
LAYERS = ("blocks.1", "blocks.3", "blocks.5", "conv_head")
#: overrides of the clean preset for short runs (30-40 steps): sigma lr 0.1, the dual ascent of lam (from 3,
#: the optimum of a locally quadratic F at F = 1.5) at twice the default rate, and the ICML22 read-out (the
#: step whose F is closest to 1.5), so that every (image, layer, net) is read at about the same F although
#: the held F is not yet stationary after so few steps
FAST = dict(lr=0.1, dual_lr=0.1, readout="target", target=1.5)
_TOL = 1e-5  # |gap| below this is rounding (a uniform map, read at the initial sigma): not positive
COLUMNS = ["dataset", "net", "init", "image", "layer", "depth", "fg", "bg", "gap", "entropy", "F", "entropy_map"]


class Normalized(nn.Module):
    """``net((x - mean) / std)`` for images ``x`` in [0, 1] (EfficientNet-Lite0: mean = std = 0.5,
    the normalisation of :func:`xnn_support.models.pretrained.preprocess`, without its resize)."""

    def __init__(self, net: nn.Module, mean: Sequence[float] = MEAN, std: Sequence[float] = STD):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def load_net(kind: str = "trained", seed: int = 0) -> Normalized:
    """EfficientNet-Lite0 in a :class:`Normalized` wrapper, eval mode, parameters frozen:
    ``"trained"`` (ImageNet weights) or ``"random"`` (timm's init with ``seed``)."""
    if kind not in ("trained", "random"):
        raise ValueError(f"kind must be 'trained' or 'random', got {kind!r}")
    net = build(ARCH, weights="imagenet" if kind == "trained" else None, seed=int(seed))
    model = Normalized(net).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3, size, size): the resize of ``preprocess`` (bilinear, antialiased)."""
    if tuple(images.shape[-2:]) == (size, size):
        return images.float()
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp(0.0, 1.0)


def resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W) bool -> (B, size, size) bool: a pixel is foreground when most of its area is."""
    if tuple(masks.shape[-2:]) == (size, size):
        return masks.bool()
    area = F.interpolate(masks[:, None].float(), size=(size, size), mode="area")[:, 0]
    return area > 0.5


def creature_images(n: int, *, size: int = 224, seed: int = 0):
    """The first ``n`` positive ``creatures`` images (an object on a cluttered background) rendered at
    ``size`` px: ``(images, fg_masks, names)``, names like ``"bird 3"`` (class and index)."""
    ds = creatures(max(2 * n, 4), size=size, seed=seed)
    idx = (ds.labels > 0).nonzero().flatten()[:n]
    if len(idx) < n:
        raise ValueError(f"only {len(idx)} positive creatures for n={n}")
    names = [f"{ds.class_names[int(ds.labels[i])]} {int(i)}" for i in idx]
    return ds.images[idx], ds.fg_mask[idx], names


def _net_rows(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, layers: Sequence[str],
              meta: Dict[str, Any], names: Sequence[str], **px_kw) -> List[Dict[str, Any]]:
    """Rows of one net: pixel_information at ``"net." + layer``, fg / bg entropy per image."""
    px = pixel_information(model, images, ["net." + l for l in layers], **px_kw)
    rows = []
    for depth, layer in enumerate(layers):
        info = px["net." + layer]
        fb = fg_bg_entropy(info.entropy_map, masks)
        for i, name in enumerate(names):
            rows.append(dict(meta, image=name, layer=layer, depth=depth, fg=float(fb["fg"][i]),
                             bg=float(fb["bg"][i]), gap=float(fb["gap"][i]), entropy=float(info.entropy[i]),
                             F=float(info.F[i]), entropy_map=info.entropy_map[i].cpu().numpy()))
    return rows


def real_network_study(images: torch.Tensor, fg_masks: torch.Tensor, *, layers: Sequence[str] = LAYERS,
                       seeds: Sequence[int] = (0, 1, 2), size: int = 112, grid: int = 8, steps: int = 30,
                       samples: int = 2, seed: int = 0, names: Optional[Sequence[str]] = None,
                       dataset: str = "", batch_size: Optional[int] = None, config="clean",
                       trained: bool = True, **overrides) -> pd.DataFrame:
    """Pixel-wise entropy of EfficientNet-Lite0, ImageNet-pretrained and at each random init of
    ``seeds``, on the same ``images`` (B, 3, H, W) in [0, 1] resized to ``size`` px, with the same
    noise (``seed``). ``fg_masks`` (B, H', W') bool: the foreground (any resolution).

    The sigma optimisation: :func:`~.method.pixel_information` on a ``grid`` x ``grid`` grid,
    ``steps`` steps, ``samples`` noise samples, preset ``config`` with :data:`FAST` and then
    ``overrides`` on top. ``trained=False`` skips the pretrained net.

    Returns one row per (net, init, image, layer) with columns :data:`COLUMNS`: ``net``
    ("trained" / "random"), ``init`` (the random init's seed; -1 for the pretrained net), ``image``
    (``names`` or the index), ``depth`` (index in ``layers``), ``fg`` / ``bg`` mean entropy (nats
    per input dimension), ``gap = bg - fg`` (> 0: background discarded more), ``entropy`` (mean
    over cells), ``F`` (read-out normalised feature change) and ``entropy_map`` (grid x grid array).
    """
    if images.dim() != 4 or fg_masks.dim() != 3 or images.shape[0] != fg_masks.shape[0]:
        raise ValueError(f"need images (B, 3, H, W) and masks (B, H, W), got {tuple(images.shape)} and "
                         f"{tuple(fg_masks.shape)}")
    names = [str(i) for i in range(images.shape[0])] if names is None else [str(n) for n in names]
    if len(names) != images.shape[0]:
        raise ValueError(f"{len(names)} names for {images.shape[0]} images")
    x, masks = resize_images(images, size), resize_masks(fg_masks, size)
    px_kw = dict(grid=grid, steps=steps, samples=samples, seed=seed, batch_size=batch_size, config=config,
                 **{**FAST, **overrides})
    nets = ([("trained", -1)] if trained else []) + [("random", int(k)) for k in seeds]
    rows: List[Dict[str, Any]] = []
    for kind, init in nets:
        model = load_net(kind, max(init, 0))
        rows += _net_rows(model, x, masks, list(layers), dict(dataset=dataset, net=kind, init=init), names,
                          **px_kw)
    return pd.DataFrame(rows, columns=COLUMNS)


def _per_init(df: pd.DataFrame, col: str, layers: List[str]) -> pd.DataFrame:
    """Mean over images of ``col``: layers x init (random inits only)."""
    r = df[df["net"] == "random"]
    return r.groupby(["layer", "init"])[col].mean().unstack("init").reindex(layers)


def real_summary(df: pd.DataFrame) -> Dict[str, Any]:
    """Per layer of a :func:`real_network_study` table (one data set): ``table`` with the trained
    net's gap / entropy / F (mean and sd over images), the random inits' (mean and sd over inits of
    their image means) and ``trained_minus_random`` (trained minus the mean random gap, sd over
    inits); ``random_per_init`` (layers x init gaps); and the headline numbers at the last layer:
    ``gap_last_trained``, ``gap_last_random`` (+ ``_per_init``), ``trained_minus_random`` (+
    ``_per_init``: trained minus each init), ``growth_trained`` / ``growth_random_per_init`` (last
    layer minus first), ``rises_trained`` and ``rises_random_fraction``, ``F_trained`` / ``F_random``
    (mean read-out F) and ``uniform_maps`` (rows read at the initial sigma, of ``n_rows``)."""
    layers = list(dict.fromkeys(df.sort_values("depth")["layer"]))
    tr = df[df["net"] == "trained"].groupby("layer").agg(
        trained_gap=("gap", "mean"), trained_gap_sd=("gap", "std"), trained_entropy=("entropy", "mean"),
        trained_F=("F", "mean")).reindex(layers)
    per = _per_init(df, "gap", layers)
    diff = tr["trained_gap"].values[:, None] - per.values
    table = pd.concat([tr, pd.DataFrame({
        "random_gap": per.mean(axis=1), "random_gap_sd": per.std(axis=1, ddof=1),
        "random_entropy": _per_init(df, "entropy", layers).mean(axis=1),
        "random_F": _per_init(df, "F", layers).mean(axis=1),
        "trained_minus_random": diff.mean(1), "trained_minus_random_sd": pd.Series(
            [float(np.std(d, ddof=1)) if len(d) > 1 else math.nan for d in diff], index=layers)},
        index=layers)], axis=1)
    table.index.name = "layer"
    g_first, g_last = per.iloc[0], per.iloc[-1]
    return {"layers": layers, "table": table, "random_per_init": per,
            "inits": [int(c) for c in per.columns], "n_images": int(df["image"].nunique()),
            "gap_first_trained": float(tr["trained_gap"].iloc[0]),
            "gap_last_trained": float(tr["trained_gap"].iloc[-1]),
            "gap_last_random": float(g_last.mean()), "gap_last_random_per_init": [float(v) for v in g_last],
            "trained_minus_random": float(diff[-1].mean()),
            "trained_minus_random_per_init": [float(v) for v in diff[-1]],
            "growth_trained": float(tr["trained_gap"].iloc[-1] - tr["trained_gap"].iloc[0]),
            "growth_random_per_init": [float(v) for v in g_last - g_first],
            "rises_trained": bool(tr["trained_gap"].iloc[-1] > tr["trained_gap"].iloc[0]),
            "rises_random_fraction": float((g_last > g_first).mean()),
            "F_trained": float(tr["trained_F"].mean()), "F_random": float(table["random_F"].mean()),
            "uniform_maps": int(sum(float(np.ptp(m)) == 0.0 for m in df["entropy_map"])), "n_rows": int(len(df))}


def _learned(s: Dict[str, Any]) -> bool:
    """Trained gap above every random init's at the last layer, the mean difference beyond its sd."""
    d = np.asarray(s["trained_minus_random_per_init"], float)
    sd = float(np.std(d, ddof=1)) if d.size > 1 else 0.0
    return bool(d.size and (d > 0).all() and d.mean() > sd)


def real_reading(summaries: Dict[str, Dict[str, Any]], *, toy_gap_init: float, toy_gap_trained: float,
                 share: float = 0.5) -> Dict[str, Any]:
    """The verdicts of the real-network section. ``summaries``: ``{data set: real_summary}``;
    ``toy_gap_init`` / ``toy_gap_trained``: the toy VGG-like net's last-layer gap at epoch 0 and
    after training (notebook 04, section 5).

    Per data set: ``positive`` (the trained net's last-layer gap > 0: background discarded more,
    ICML22), ``grows`` (larger at the last layer than at the first), ``learned`` (above every random
    init, mean difference beyond its sd) and ``reversed`` (below every random init). Overall:
    ``toy_untrained`` (the toy gap at init exceeds ``share`` x the trained one, as
    :func:`~.experiments.reading`) and ``scale_explains`` (the scale explanation held: on the real
    photos the pretrained net's gap is positive and learned)."""
    out: Dict[str, Any] = {"datasets": {}}
    for name, s in summaries.items():
        d = np.asarray(s["trained_minus_random_per_init"], float)
        out["datasets"][name] = {
            "positive": s["gap_last_trained"] > _TOL, "grows": s["rises_trained"], "learned": _learned(s),
            "reversed": bool(d.size and (d < 0).all()), "gap_trained": s["gap_last_trained"],
            "gap_random": s["gap_last_random"], "per_init": list(d), "layers": s["layers"],
            "growth_trained": s["growth_trained"], "rises_random_fraction": s["rises_random_fraction"],
            "F_trained": s["F_trained"], "F_random": s["F_random"], "n_images": s["n_images"],
            "uniform_maps": s.get("uniform_maps", 0), "n_rows": s.get("n_rows", 0)}
    first = out["datasets"].get("photos", next(iter(out["datasets"].values())))
    out["toy_untrained"] = bool(toy_gap_init > share * toy_gap_trained)
    out["toy"] = {"init": float(toy_gap_init), "trained": float(toy_gap_trained), "share": share}
    out["scale_explains"] = bool(first["positive"] and first["learned"])
    return out


def _dataset_line(name: str, r: Dict[str, Any]) -> str:
    per = ", ".join(f"{v:+.3f}" for v in r["per_init"])
    sign = ("positive (background discarded more)" if r["positive"] else
            "negative (the foreground is discarded more)")
    depth = "grows" if r["grows"] else "does not grow"
    if r["learned"]:
        cmp = "larger than at every random init: **learned**"
    elif r["reversed"]:
        cmp = "smaller than at every random init: training **reduces** it"
    else:
        cmp = "not separated from the random inits"
    return (f"* {name} ({r['n_images']} images): the pretrained net's last-layer gap is {r['gap_trained']:+.3f} nats, "
            f"{sign}; it {depth} with depth ({r['growth_trained']:+.3f} from `{r['layers'][0]}` to "
            f"`{r['layers'][-1]}`); random inits {r['gap_random']:+.3f} (rising in "
            f"{int(round(100 * r['rises_random_fraction']))} % of them); trained minus random per init {per}: "
            f"{cmp}. Read-out F: trained {r['F_trained']:.2f}, random {r['F_random']:.2f} (read where F is closest "
            f"to 1.5; {r['uniform_maps']} of {r['n_rows']} maps read at the initial σ).")


def _verdict(rd: Dict[str, Any]) -> str:
    """The sentence on the scale explanation, from the photos' (first data set's) verdicts."""
    r = rd["datasets"].get("photos", next(iter(rd["datasets"].values())))
    if rd["scale_explains"]:
        return ("the scale explanation **holds**: the ImageNet-pretrained net discards the background more than the "
                "foreground, and more than its random inits do: at scale the gap is learned.")
    head = "the scale explanation **does not hold**: "
    if r["reversed"]:
        return head + ("on the real photos the random inits show the larger gap and the pretrained net the smaller "
                       "one: the architecture and image statistics make the gap, and ImageNet training reduces it"
                       + (" (its mean over the images is below zero)." if not r["positive"] else "."))
    if r["learned"]:
        return head + ("training raises the gap above the random inits', but the pretrained net's gap is not "
                       "positive: it does not discard the background more than the foreground.")
    return head + ("the pretrained net's gap is not separated from its random inits': with the architecture and "
                   "these images, training does not change it measurably.")


def reading_lines(rd: Dict[str, Any]) -> List[str]:
    """Markdown bullets of :func:`real_reading`: one per data set, the toy result, the verdict."""
    lines = [_dataset_line(name, r) for name, r in rd["datasets"].items()]
    toy = rd["toy"]
    lines.append(f"* Toy (VGG-like on `creatures`, section 5): last-layer gap {toy['init']:+.3f} at initialisation vs "
                 f"{toy['trained']:+.3f} after training: " + ("already there untrained." if rd["toy_untrained"] else
                                                             "mostly created by training."))
    lines.append("* Verdict: " + _verdict(rd))
    return lines


def entropy_maps(df: pd.DataFrame, net: str, init: int, images: Sequence[str],
                 layers: Optional[Sequence[str]] = None, label: str = "") -> Dict[str, np.ndarray]:
    """``{label + layer: (n, grid, grid)}`` maps of one net (``net``, ``init``) for ``images`` (names,
    in that order), for :func:`xnn_support.viz.entropy_grid`."""
    sel = df[(df["net"] == net) & (df["init"] == init)]
    layers = list(dict.fromkeys(sel.sort_values("depth")["layer"])) if layers is None else list(layers)
    out = {}
    for layer in layers:
        by = sel[sel["layer"] == layer].set_index("image")["entropy_map"]
        out[f"{label}{layer}"] = np.stack([by[str(n)] for n in images])
    return out
