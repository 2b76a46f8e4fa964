"""Notebook 02 on a real network: ImageNet-pretrained EfficientNet-Lite0 with an interpretable top
conv layer, fine-tuned on creatures at 224 px, against ordinary fine-tuning of the same net (issue 16).

What: the paper's own protocol (Zhang, Wu, Zhu, CVPR 2018: an ImageNet-pretrained net, a new
interpretable conv layer added on top of its conv stack, fine-tuned on the part data) with the one
ImageNet CNN available offline, timm's ``tf_efficientnet_lite0`` with the packaged weights
(``models.build("efficientnet_lite0", weights="imagenet", num_classes=C)``). A new 3x3 conv
(112 -> 112 filters) is inserted after ``blocks.4``, the last stride-16 stage: a 14x14 map at 224 px,
the size of VGG-16's conv5 in the paper (n = 14). It is interpretable (``"code"`` or ``"paper"``
filter loss, :mod:`.method`) or ordinary (the same conv without mask and loss: the baseline, as in
:mod:`.experiments`), Kaiming-initialised as there.

Protocol
* Data: ``creatures(n, 224)``, object-centric, single = bird, multi = bird + quadruped (20%
  negatives), a third held out (:func:`real_data`); one data set per task (``data_seed``) for all
  seeds, which vary the new layers' initialisation and the batches (the toy grid draws new data per
  seed: here rendering and the frozen features would cost as much as the training).
* Frozen: ``conv_stem``, ``bn1``, ``blocks.0-4`` (ImageNet weights, BN running statistics). Their
  output on every image is computed once per data set (:func:`lower_features`, kept in the xnn cache
  under ``features/``).
* Trained: the new conv, ``blocks.5-6``, ``conv_head`` + ``bn2`` (from the ImageNet weights) and a
  new classifier (:class:`Top`), by :func:`xnn_support.core.train.fit` on the frozen features (Adam,
  lr 1e-3, cosine schedule, batch 16, BN in training mode, channels-last; cached like every training).
* Metrics as in the toy grid (:func:`evaluate_top`): location instability of the new layer's
  pre-ReLU map on the validation positives (official protocol; multi-category: each filter credited
  to its highest-mean-score class), part IoU (best part per filter, mean over filters; masks
  area-pooled to 56 px), accuracy.

:func:`finetune` is the one way to get a trained net: notebook 05 (:mod:`..consistency.real`) calls
it with ``mode="ordinary"`` for its "pretrained, fine-tuned" net (the same call as 02's ordinary
baseline, hence one cache entry) and with ``weights=None`` for the same architecture from random init.

Deviations (beyond the toy grid's, see notebook 02): EfficientNet-Lite0 instead of AlexNet / VGG-16;
the lower stages stay frozen (the paper fine-tunes the whole net; a full backward costs ~0.2-0.3 s
per 224 px image on our 2 shared CPU cores, ~20x the top's); no augmentation (the features are of
the images as drawn; creatures face left or right at random anyway); a few epochs of Adam;
synthetic creatures instead of ILSVRC / VOC / CUB part data.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ...core import cache as _cache
from ...core.predict import predict
from ...core.train import fit
from ...core.utils import mean_sd, progress as bar, torch_threads
from ...core.version import __version__
from ...data import creatures
from ...models import build
from ...models.pretrained import preprocess
from .experiments import TASKS
from .method import FilterLoss, make_interpretable
from .metrics import credited_instability, layer_maps, part_iou

__all__ = ["SIZE", "INSERT", "LAYER", "MODES", "Lower", "Top", "FeatureSet", "real_data", "build_real_net",
           "lower_features", "finetune", "evaluate_top", "real_study", "real_changes", "real_summary",
           "toy_reference", "scale_verdict", "real_reading", "reading_lines", "PAPER_CHANGE", "LR", "BATCH_SIZE"]

SIZE = 224             # input size: blocks.4 gives a 14x14 map, as VGG-16's conv5 in the paper
INSERT = "blocks.4"    # the new layer goes after this stage (the last one at stride 16)
LAYER = "blocks.4.1"   # the new layer in the full net (blocks.4.0 is the original stage)
MODES = ("ordinary", "code", "paper")
IOU_SIZE = 56          # part IoU on masks area-pooled to 56 px (4 pixels per map cell; the toy's is 64 px)
PAPER_CHANGE = 0.085 / 0.144 - 1   # VGG-16, Table 3: -41%
LR, BATCH_SIZE = 1e-3, 16          # Adam on the top; batch 16 costs about what 32 does per image, twice the steps


class Lower(nn.Module):
    """The frozen part of a net from :func:`build_real_net`: images in [0, 1] -> ``blocks.4.0`` output
    (``preprocess``: resize to 224, scale to [-1, 1])."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.stages = nn.ModuleList([net.conv_stem, net.bn1, *net.blocks[:4], net.blocks[4][0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = preprocess(x, SIZE).contiguous(memory_format=torch.channels_last)
        for m in self.stages:
            h = m(h)
        return h.contiguous()


class Top(nn.Module):
    """The trained part of a net from :func:`build_real_net`, on ``blocks.4.0`` features: the new layer,
    ``blocks.5-6``, ``conv_head``, ``bn2``, pooling and the classifier. Holds the whole net as ``net``
    (module names ``net.<name in the timm net>``); the lower stages are frozen (no gradient)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        for m in Lower(net).stages:
            m.requires_grad_(False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        x = self.net.blocks[4][1](f)
        for b in self.net.blocks[5:]:
            x = b(x)
        return self.net.forward_head(self.net.bn2(self.net.conv_head(x)))


@dataclass
class FeatureSet:
    """Frozen features of a data set and its labels (a data set for ``train.fit``; ``spec`` names the
    images and the lower net, so the trainer's cache key does not hash the tensors)."""
    feats: torch.Tensor
    labels: torch.Tensor
    spec: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _feature_inputs(ds: FeatureSet):
    return ds.feats, ds.labels


def real_data(task: str, n: int, seed: int = 0, val_fraction: float = 1 / 3):
    """(train, val) of ``creatures(n, 224)`` for ``task`` ("single": bird, "multi": bird + quadruped),
    object-centric, 20% negatives, split ``val_fraction`` (a third: more validation positives for the
    instability than the toy's 20%, at the same number of rendered images)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    return creatures(n, SIZE, categories=TASKS[task], object_centric=True, seed=seed).split(val_fraction, seed=seed)


def build_real_net(mode: str, num_classes: int, seed: int, *, weights: Optional[str] = "imagenet") -> nn.Module:
    """EfficientNet-Lite0 (``weights``: ImageNet or None = random init seeded by ``seed``) with a new
    ``num_classes`` classifier and the new ``mode`` layer after ``blocks.4`` (Kaiming init, seeded)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    net = build("efficientnet_lite0", weights=weights, num_classes=num_classes, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        make_interpretable(net, INSERT, mode=mode, num_classes=num_classes, negative_label=0)
        new = net.get_submodule(LAYER).conv
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(new.bias)
    return net.eval()


def _lower_id(net: nn.Module) -> Dict[str, Any]:
    return {"net": getattr(net, "xnn_config", None), "upto": INSERT, "size": SIZE,
            "weights": _cache.state_checksum(Lower(net).state_dict())[:32]}


def lower_features(net: nn.Module, ds, *, batch_size: int = 25, cache: bool = True,
                   num_threads: Optional[int] = None) -> torch.Tensor:
    """(N, 112, 14, 14) ``blocks.4.0`` output of ``net`` for ``ds.images`` (eval mode, no grad),
    read from / written to the xnn cache (``features/<key>.pt``, key: the lower weights + the data)."""
    lower = Lower(net).eval().to(memory_format=torch.channels_last)  # ~1.6x faster on the CPU
    key = _cache.make_key({"what": "icnn-real-lower-features", "lower": _lower_id(net),
                           "data": _cache.data_fingerprint(ds), "n": len(ds), "layout": "channels_last",
                           "version": __version__})
    path = _cache.cache_dir() / "features" / f"{key}.pt"
    if cache and path.exists():
        try:
            return _cache.load_file(path, key)["state_dict"]["feats"]
        except (_cache.CacheError, KeyError) as e:
            warnings.warn(f"feature cache: {e}; recomputing", RuntimeWarning, stacklevel=2)
    with torch.no_grad(), torch_threads(num_threads):
        feats = torch.cat([lower(ds.images[i:i + batch_size]) for i in range(0, len(ds), batch_size)])
    if cache:
        _cache.save_file(path, key, {"feats": feats})
    return feats


def finetune(task: str, mode: str, seed: int, *, n: int, epochs: int, lr: float = LR, weight: float = 1.0,
             weights: Optional[str] = "imagenet", batch_size: int = BATCH_SIZE, data_seed: int = 0,
             num_threads: Optional[int] = 1, data: Optional[tuple] = None) -> Dict[str, Any]:
    """Train the top of :func:`build_real_net` on the frozen features of creatures ``task`` (cached).

    ``weight``: the filter-loss weight (ignored for ``"ordinary"``); ``data``: the ``(train, val)`` of
    ``real_data(task, n, data_seed)`` if the caller has it already (else it is rendered). Returns a dict with
    ``net`` (the full net, eval mode), ``top`` (:class:`Top`), ``result`` (the ``TrainResult``),
    ``train`` / ``val`` (the images) and ``ftrain`` / ``fval`` (their frozen features).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    train, val = data if data is not None else real_data(task, n, data_seed)
    C = len(TASKS[task]) + 1
    net = build_real_net(mode, C, seed, weights=weights)
    ftr, fva = (lower_features(net, d, num_threads=num_threads) for d in (train, val))
    lid = _cache.make_key(_lower_id(net))
    sets = [FeatureSet(f, d.labels, {"lower": lid, "images": d.spec}) for f, d in ((ftr, train), (fva, val))]
    top = Top(net).to(memory_format=torch.channels_last)  # ~30% faster on the CPU than contiguous
    top.xnn_config = {"name": "icnn-real-top", "net": net.xnn_config, "mode": mode, "insert": INSERT}
    w = 0.0 if mode == "ordinary" else float(weight)
    obj = FilterLoss(top, weight=w, steps_per_epoch=max(1, -(-len(train) // batch_size)))
    res = fit(top, sets[0], sets[1], epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, schedule="cosine",
              loss_fn=obj, inputs=_feature_inputs, key_extra={**obj.key(), "tag": f"icnn-real/{task}"},
              num_threads=num_threads, progress=False)
    return {"net": net.eval(), "top": res.model, "result": res, "train": train, "val": val,
            "ftrain": ftr, "fval": fva}


def _peaks(maps: torch.Tensor, size: int):
    """(F, N, 2) pixel (row, col) of each filter's peak (receptive-field centre, as
    :func:`.metrics.peak_positions`) and (F, N) peak scores, from (N, F, n, n) maps."""
    N, D, h, w = maps.shape
    scores, idx = maps.flatten(2).max(2)
    r = (idx // w).float().add(0.5).mul(size / h).sub(0.5)
    c = (idx % w).float().add(0.5).mul(size / w).sub(0.5)
    return torch.stack([r, c], -1).transpose(0, 1).contiguous(), scores.t().contiguous()


def evaluate_top(top: nn.Module, fval: torch.Tensor, val, *, top_n: int = 100) -> Dict[str, float]:
    """Accuracy, location instability and part IoU of the new layer (pre-ReLU map) on ``val``'s
    positives, from their frozen features ``fval`` (notebook 02's ``evaluate_net``, on features)."""
    acc = float((predict(top, fval, batch_size=128).argmax(1) == val.labels).float().mean())
    posm = val.labels > 0
    lms, y = val.landmarks[posm], val.labels[posm]
    maps = layer_maps(top, f"net.{LAYER}.conv", fval[posm])
    pos, sc = _peaks(maps, int(val.images.shape[-1]))
    per = credited_instability(pos, sc, lms, y, int(val.images.shape[-1]), top_n=top_n)
    pm = val.part_masks[posm]
    pm = F.adaptive_avg_pool2d(pm[:, pm.flatten(2).any(2).any(0)].float(), IOU_SIZE) >= 0.5
    iou = part_iou(maps, pm, batch_size=16)
    return {"acc": acc, "instability": float(np.nanmean(per)), "part_iou": float(iou.max(1).values.mean())}


def real_study(tasks: Sequence[str] = ("single", "multi"), modes: Sequence[str] = MODES, seeds: Sequence[int] = (0, 1, 2),
               *, n: int, epochs: int, lr: float = LR, weights: Optional[Dict[str, float]] = None,
               batch_size: int = BATCH_SIZE, top_n: int = 100, data_seed: int = 0, num_threads: Optional[int] = 1,
               progress: bool = True) -> pd.DataFrame:
    """:func:`finetune` and :func:`evaluate_top` for every (task, mode, seed): a tidy table, one row each,
    columns ``task``, ``mode``, ``seed``, ``weight``, ``acc``, ``instability``, ``part_iou``,
    ``from_cache`` and ``seconds`` (training + evaluation). ``weights``: mode -> filter-loss weight
    (default 1 for the interpretable modes). One data set per task (``data_seed``) for all seeds."""
    weights = dict(weights or {})
    bad = [m for m in modes if m not in MODES]
    if bad or not seeds or not tasks:
        raise ValueError(f"modes must be among {MODES} (got {list(modes)}); tasks and seeds must not be empty")
    rows: List[Dict[str, Any]] = []
    for task in tasks:
        data = real_data(task, n, data_seed)
        for seed, mode in bar([(s, m) for s in seeds for m in modes], desc=f"icnn real {task}", disable=not progress):
            t0 = time.time()
            w = 0.0 if mode == "ordinary" else float(weights.get(mode, 1.0))
            r = finetune(task, mode, seed, n=n, epochs=epochs, lr=lr, weight=w, batch_size=batch_size,
                         data_seed=data_seed, num_threads=num_threads, data=data)
            with torch_threads(num_threads):
                m = evaluate_top(r["top"], r["fval"], r["val"], top_n=top_n)
            rows.append({"task": task, "mode": mode, "seed": seed, "weight": w, **m,
                         "from_cache": bool(r["result"].from_cache), "seconds": time.time() - t0})
    return pd.DataFrame(rows)


def real_changes(df: pd.DataFrame) -> Dict[tuple, List[float]]:
    """``{(task, mode): [relative change of instability vs the ordinary net of the same task and seed,
    per seed (in seed order)]}`` for every interpretable mode of a :func:`real_study` table."""
    base = {(r.task, r.seed): r.instability for r in df.itertuples() if r.mode == "ordinary"}
    out: Dict[tuple, List[float]] = {}
    for r in df.sort_values("seed").itertuples():
        if r.mode != "ordinary" and (r.task, r.seed) in base:
            out.setdefault((r.task, r.mode), []).append(float(r.instability / base[(r.task, r.seed)] - 1))
    return out


def real_summary(df: pd.DataFrame, arch: str = "effnet-lite0 (ImageNet)") -> pd.DataFrame:
    """Mean and sd over seeds of acc, instability and part IoU per (arch, task, "finetune", mode): the
    layout of :func:`.experiments.summarise`, so the real rows can stand beside the toy grid's."""
    d = df.assign(arch=arch, protocol="finetune")
    g = d.groupby(["arch", "task", "protocol", "mode"], sort=False)[["acc", "instability", "part_iou"]]
    out = g.agg(["mean", "std"])
    out[("n_seeds", "")] = g.size()
    return out


def toy_reference(toy_changes: Dict[tuple, List[float]], task: str, mode: str):
    """The toy grid's counterpart of a real (task, mode): ``((arch, task, protocol, mode), per-seed
    changes)`` of the VGG-like net fine-tuned, else from scratch; ``(None, [])`` if the grid lacks both."""
    for key in (("vgg", task, "finetune", mode), ("vgg", task, "scratch", mode)):
        if toy_changes.get(key):
            return key, list(toy_changes[key])
    return None, []


def scale_verdict(real: Sequence[float], toy: Sequence[float], paper: float = PAPER_CHANGE) -> str:
    """Did the scale explanation hold for one setting? From the per-seed relative changes of the real
    net (``real``) and of the toy net (``toy``; empty: no toy counterpart): "held" if every
    real seed lowers instability and the mean reaches half the paper's change; "partly" if every real
    seed lowers it, beyond the real sd, and the mean is below the toy mean by more than the larger of
    the two sds (a clearly larger reduction than the toy's, but short of half the paper's; not given
    without a toy counterpart); "did not hold" otherwise."""
    r = mean_sd(real)
    all_lower = len(real) >= 2 and all(v < 0 for v in real)
    if all_lower and r.mean <= paper / 2:
        return "held"
    if len(toy) and all_lower and abs(r.mean) > r.sd and r.mean < mean_sd(toy).mean - max(r.sd, mean_sd(toy).sd):
        return "partly"
    return "did not hold"


def real_reading(df: pd.DataFrame, toy_changes: Dict[tuple, List[float]], paper: float = PAPER_CHANGE) -> pd.DataFrame:
    """One row per interpretable (task, mode) of a :func:`real_study` table: the real net's change of
    instability (mean, sd, seeds lower), its accuracy and the ordinary net's, the toy counterpart
    (:func:`toy_reference`), the paper's change and :func:`scale_verdict`."""
    rows = []
    ch = real_changes(df)
    for (task, mode), vals in ch.items():
        r = mean_sd(vals)
        key, toy = toy_reference(toy_changes, task, mode)
        t = mean_sd(toy) if toy else None
        acc = df[(df.task == task) & (df["mode"] == mode)].acc.mean()
        acc0 = df[(df.task == task) & (df["mode"] == "ordinary")].acc.mean()
        rows.append({"task": task, "mode": mode, "real_change": r.mean, "real_sd": r.sd,
                     "seeds_lower": int(sum(v < 0 for v in vals)), "n_seeds": r.n, "acc": float(acc),
                     "acc_ordinary": float(acc0), "toy": "/".join(key) if key else "-",
                     "toy_change": t.mean if t else math.nan, "toy_sd": t.sd if t else math.nan,
                     "paper_change": paper, "verdict": scale_verdict(vals, toy, paper)})
    return pd.DataFrame(rows)


def _pct(v: float, fmt: str = "+.1%") -> str:
    return "-" if v is None or not math.isfinite(float(v)) else format(float(v), fmt)


def reading_lines(reading: pd.DataFrame, summary: Optional[pd.DataFrame] = None) -> List[str]:
    """Markdown lines from :func:`real_reading` (and the ordinary nets' instability from
    :func:`real_summary`): real beside toy beside the paper, with each setting's verdict."""
    lines = []
    if summary is not None:
        for (_, task, _, mode), r in summary.iterrows():
            if mode == "ordinary":
                lines.append(f"- **{task}, ordinary fine-tuning:** instability {r[('instability', 'mean')]:.4f} "
                             f"(paper, VGG-16 ordinary: 0.144), accuracy {r[('acc', 'mean')]:.3f}.")
    for r in reading.itertuples():
        lines.append(f"- **{r.task}, {r.mode} loss:** real net {_pct(r.real_change)} +- {_pct(r.real_sd, '.1%')} "
                     f"(lower in {r.seeds_lower}/{r.n_seeds} seeds; accuracy {r.acc:.3f}, ordinary {r.acc_ordinary:.3f}); "
                     f"toy ({r.toy}) {_pct(r.toy_change)}; paper {_pct(r.paper_change, '+.0%')} (VGG-16): "
                     f"scale explanation **{r.verdict}**.")
    held = sum(r.verdict == "held" for r in reading.itertuples())
    partly = sum(r.verdict == "partly" for r in reading.itertuples())
    lines.append(f"\nThe scale explanation **held in {held} of {len(reading)}** settings (partly in {partly}): held = "
                 "every seed lower and at least half the paper's change; partly = every seed lower, beyond the sd, and "
                 "a reduction clearly larger than the toy net's (by more than the larger sd).")
    return lines
