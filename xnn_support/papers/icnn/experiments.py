"""Experiments of notebook 02 (interpretable CNNs, Zhang, Wu, Zhu, CVPR 2018): ordinary vs
interpretable networks on ``creatures``, from scratch and fine-tuned, with location instability,
part IoU and accuracy.

Protocol (deviations from the paper: synthetic 64 px creatures instead of ILSVRC/VOC/CUB crops,
zoo nets instead of ImageNet AlexNet/VGG, Adam instead of SGD, few epochs):
* ``vgg``: ``vgg_small`` with plan 16-M-32-32-M-64-64 (16x16 map), new interpretable 3x3 conv
  after ``features`` (layer ``features.1``, n = 16). ``alexnet``: ``alexnet_small``, new conv after
  relu5 ``features.16`` (15x15). The ordinary baseline gets the same new conv without mask/loss.
* ``vgg16`` (paper profile, meant for a GPU): torchvision ``vgg16_bn`` (BN so that it trains from
  scratch; no ImageNet weights offline) on 224 px creatures, new layer after relu5_3 (14x14).
* ``scratch``: train the whole net; ``finetune``: pretrain the ordinary net (cached), insert the
  new layer, fine-tune everything at lr / 3.
* Metrics on the positive validation images: location instability of the new layer's pre-ReLU
  map (per class for multi-category nets, each filter credited to its highest-mean-score class),
  mean over filters of the best part IoU, and validation accuracy.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from .method import FilterLoss, make_interpretable
from .metrics import instability_per_filter, part_iou, peak_positions
import pandas as pd
from ...data import creatures
from ...models import build
from ...core.train import fit
from ...core.predict import predict
from .metrics import location_instability
from ...core import validate as V
from ...core.utils import progress as bar

__all__ = ["ARCHS", "TASKS", "build_net", "load_data", "train_net", "evaluate_net", "run_grid", "run_sweep",
           "SWEEP", "sweep_effects", "immobile_instability", "summarise", "per_seed_changes"]

ARCHS: Dict[str, Dict[str, Any]] = {
    "vgg": {"name": "vgg_small", "config": {"plan": [16, "M", 32, 32, "M", 64, 64]},
            "insert": "features", "layer": "features.1", "lr": 3e-3},
    # placement variants of the sweep: a lower layer (after the 32-channel block, 32x32 map, n = 32)
    # and two regularised layers, as the official code (its masked relu5_3 input + the new layer):
    # the backbone's last conv is wrapped (masked, ``features.0.14``) and the new conv follows it
    "vgg_low": {"name": "vgg_small", "config": {"plan": [16, "M", 32, 32, "M", 64, 64]},
                "insert": "features.9", "layer": "features.9.1", "lr": 3e-3},
    "vgg_two": {"name": "vgg_small", "config": {"plan": [16, "M", 32, 32, "M", 64, 64]},
                "wrap": ["features.14"], "insert": "features", "layer": "features.1", "lr": 3e-3},
    "alexnet": {"name": "alexnet_small", "config": {}, "insert": "features.16", "layer": "features.16.1",
                "lr": 1e-3},
    # paper profile: torchvision VGG-16 (with BN: trainable from scratch, no pretrained weights offline)
    # at 224 px, new layer after relu5_3 (14x14, n = 14 as in the paper)
    "vgg16": {"name": "vgg16_bn", "config": {}, "insert": "features.42", "layer": "features.42.1",
              "lr": 1e-4, "size": 224},
}
TASKS = {"single": ("bird",), "multi": ("bird", "quadruped")}


def load_data(task: str, n: int, seed: int = 0, size: int = 64, object_centric: bool = True):
    """(train, val) creatures split 80/20 for ``task`` ("single" or "multi"); ``object_centric=False``
    gives the generator's full translation jitter (4x), i.e. more varied part positions."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    ds = creatures(n, size, categories=TASKS[task], object_centric=object_centric, seed=seed)
    return ds.split(0.2, seed=seed)


def build_net(arch: str, mode: str, num_classes: int, seed: int, in_size: int = 64, base=None):
    """The zoo net (or a copy of ``base``) with its new (interpretable or ordinary) layer."""
    spec = ARCHS[arch]
    size_kw = {} if "size" in spec else {"in_size": in_size}
    model = copy.deepcopy(base) if base is not None else build(
        spec["name"], seed=seed, num_classes=num_classes, **size_kw, **spec["config"])
    torch.manual_seed(seed)
    if spec.get("wrap"):
        model = make_interpretable(model, spec["wrap"], mode=mode, new_conv=False, num_classes=num_classes,
                                   negative_label=0)
    model = make_interpretable(model, spec["insert"], mode=mode, num_classes=num_classes, negative_label=0)
    new = model.get_submodule(spec["layer"]).conv     # Kaiming init (the code's N(0, 0.01) trains too slowly here)
    torch.nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    torch.nn.init.zeros_(new.bias)
    return model


def train_net(model, train, val, *, weight: float, epochs: int, lr: float, seed: int, batch_size: int = 64,
              tag: str = ""):
    steps = max(1, -(-len(train) // batch_size))
    obj = FilterLoss(model, weight=weight, steps_per_epoch=steps)
    return fit(model, train, val, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, schedule="cosine",
               augment="flip", loss_fn=obj, key_extra={**obj.key(), "tag": tag}, num_threads=1,
               progress=False)


def evaluate_net(model, arch: str, val, *, top_n: int = 100) -> Dict[str, float]:
    """Instability, part IoU (mean best over parts) and accuracy on ``val``."""
    layer = ARCHS[arch]["layer"] + ".conv"
    out = predict(model, val.images, batch_size=256)
    acc = float((out.argmax(1) == val.labels).float().mean())
    posm = val.labels > 0
    imgs, lms, y = val.images[posm], val.landmarks[posm], val.labels[posm]
    pos, sc, maps = peak_positions(model, layer, imgs)
    S = int(val.images.shape[-1])
    classes = sorted(set(y.tolist()))
    mean_sc = torch.stack([sc[:, y == c].mean(1) for c in classes], 1)     # (F, C)
    credit = mean_sc.argmax(1)
    per = np.full(pos.shape[0], np.nan)
    for ci, c in enumerate(classes):
        f_idx = torch.nonzero(credit == ci).flatten()
        if len(f_idx) == 0:
            continue
        sel = y == c
        per[f_idx.numpy()] = instability_per_filter(pos[f_idx][:, sel], lms[sel], S, top_n=top_n,
                                                    scores=sc[f_idx][:, sel])
    pm = val.part_masks[posm]
    present = pm.flatten(2).any(2).any(0)
    iou = part_iou(maps, pm[:, present])
    return {"acc": acc, "instability": float(np.nanmean(per)), "part_iou": float(iou.max(1).values.mean())}


def immobile_instability(val, *, top_n: int = 100, n_units: int = 64, seed: int = 0) -> float:
    """Location instability of units that never move (all at the image centre) on random top images
    of ``val``'s positives: the metric's value for no tracking at all, i.e. the landmarks' own spread
    of distances to the centre (a reference for reading the other values)."""
    posm = val.labels > 0
    lms = val.landmarks[posm]
    S = int(val.images.shape[-1])
    g = torch.Generator().manual_seed(seed)
    pos = torch.full((n_units, lms.shape[0], 2), (S - 1) / 2)
    return location_instability(pos, lms, S, top_n=top_n, scores=torch.rand(n_units, lms.shape[0], generator=g))


class _Runner:
    """Trains and evaluates one (arch, task, protocol, mode, seed) at a time, sharing data and the
    pretrained bases of the fine-tuning protocol between calls (every training is in the cache)."""

    def __init__(self, n: int, epochs: int, ft_epochs: Optional[int], top_n: int, batch_size: int):
        for nm, v in (("n", n), ("epochs", epochs), ("batch_size", batch_size)):
            V.positive_int(nm, v)
        V.positive_int("ft_epochs", ft_epochs, optional=True, fix="pass ft_epochs=None (the pretraining's epochs) or "
                                                                   "a count >= 1")
        V.integer("top_n", top_n, minimum=2)
        self.n, self.epochs, self.ft_epochs, self.top_n, self.bs = n, epochs, ft_epochs, top_n, batch_size
        self.data: Dict[tuple, Any] = {}
        self.bases: Dict[tuple, Any] = {}

    def __call__(self, arch: str, task: str, proto: str, mode: str, seed: int, weight: float, *,
                 epochs: Optional[int] = None, object_centric: bool = True) -> Dict[str, Any]:
        spec = ARCHS[arch]
        size = spec.get("size", 64)
        dkey = (task, seed, size, object_centric)
        if dkey not in self.data:
            self.data[dkey] = load_data(task, self.n, seed, size=size, object_centric=object_centric)
        train, val = self.data[dkey]
        C = len(TASKS[task]) + 1
        ep = self.epochs if epochs is None else V.positive_int("epochs", epochs)
        base = None
        if proto == "finetune":
            bkey = (spec["name"], str(spec["config"]), task, seed, object_centric, ep)
            if bkey not in self.bases:
                self.bases[bkey] = fit(
                    spec["name"], train, val, model_config=dict(spec["config"], num_classes=C), epochs=ep,
                    lr=spec["lr"], batch_size=self.bs, schedule="cosine", augment="flip", seed=seed,
                    num_threads=1, progress=False).model
            base = self.bases[bkey]
        model = build_net(arch, mode, C, seed, base=base)
        tag = f"{arch}/{task}/{proto}" + ("" if object_centric else "/jitter")
        res = train_net(model, train, val, weight=weight, seed=seed, tag=tag, batch_size=self.bs,
                        epochs=(ep if self.ft_epochs is None else self.ft_epochs) if proto == "finetune" else ep,
                        lr=spec["lr"] / 3 if proto == "finetune" else spec["lr"])
        m = evaluate_net(res.model, arch, val, top_n=self.top_n)
        return {"arch": arch, "task": task, "protocol": proto, "mode": mode, "seed": seed, "weight": weight,
                **m, "model": res.model, "val": val}


def _check_setting(arch, task, proto):
    if arch not in ARCHS or task not in TASKS or proto not in ("scratch", "finetune"):
        raise ValueError(f"bad setting {(arch, task, proto)!r}: (arch in {sorted(ARCHS)}, task in "
                         f"{sorted(TASKS)}, 'scratch'|'finetune', [modes])")


def run_grid(settings, *, seeds, n: int, epochs: int, weights: Dict[str, float], ft_epochs: Optional[int] = None,
             top_n: int = 100, batch_size: int = 32, progress: bool = True) -> List[Dict[str, Any]]:
    """Train and evaluate every ``(arch, task, protocol, modes)`` setting for every seed.

    ``settings``: list of tuples, e.g. ``("vgg", "single", "scratch", ["ordinary", "code"])``;
    ``protocol`` is ``"scratch"`` or ``"finetune"``; ``weights``: mode -> filter-loss weight.
    Returns one row per (setting, mode, seed): acc, instability, part_iou, the model and val set.
    """
    for s in settings:
        if len(s) != 4:
            raise ValueError(f"bad setting {s!r}: (arch, task, protocol, [modes])")
        _check_setting(*s[:3])
    run = _Runner(n, epochs, ft_epochs, top_n, batch_size)
    combos = [(st, sd) for st in settings for sd in seeds]
    rows: List[Dict[str, Any]] = []
    for (arch, task, proto, modes), seed in bar(combos, desc="icnn grid", disable=not progress):
        for mode in modes:
            rows.append(run(arch, task, proto, mode, seed, weights.get(mode, 0.0)))
    return rows


#: The notebook's "what we tried" sweep: VGG-like, single category, from scratch unless stated;
#: each variant changes one thing against the main grid's ordinary / code (weight 1) pair.
SWEEP: List[Dict[str, Any]] = [
    {"name": "code loss x10", "mode": "code", "weight": 10.0},
    {"name": "code loss x100", "mode": "code", "weight": 100.0},
    {"name": "paper loss x0.1", "mode": "paper", "weight": 0.1},
    {"name": "paper loss x0.01", "mode": "paper", "weight": 0.01},
    {"name": "ordinary, 3x epochs", "mode": "ordinary", "epochs_x": 3},
    {"name": "code, 3x epochs", "mode": "code", "weight": 1.0, "epochs_x": 3},
    {"name": "ordinary, lower layer (32x32)", "arch": "vgg_low", "mode": "ordinary"},
    {"name": "code, lower layer (32x32)", "arch": "vgg_low", "mode": "code", "weight": 1.0},
    {"name": "ordinary, two layers", "arch": "vgg_two", "mode": "ordinary"},
    {"name": "code, two layers (as the code)", "arch": "vgg_two", "mode": "code", "weight": 1.0},
    {"name": "ordinary, 4x position jitter", "mode": "ordinary", "object_centric": False},
    {"name": "code, 4x position jitter", "mode": "code", "weight": 1.0, "object_centric": False},
]


def run_sweep(variants: Sequence[Dict[str, Any]] = SWEEP, *, seeds, n: int, epochs: int, top_n: int = 100,
              batch_size: int = 32, progress: bool = True) -> List[Dict[str, Any]]:
    """One row per (variant, seed): each variant is a dict with ``name``, ``mode`` and optionally
    ``arch`` ("vgg"), ``task`` ("single"), ``protocol`` ("scratch"), ``weight`` (0), ``epochs_x``
    (multiplies ``epochs``) and ``object_centric`` (True). Rows carry ``variant`` = the name."""
    for v in variants:
        _check_setting(v.get("arch", "vgg"), v.get("task", "single"), v.get("protocol", "scratch"))
    run = _Runner(n, epochs, None, top_n, batch_size)
    rows: List[Dict[str, Any]] = []
    for v, seed in bar([(v, s) for v in variants for s in seeds], desc="icnn sweep", disable=not progress):
        r = run(v.get("arch", "vgg"), v.get("task", "single"), v.get("protocol", "scratch"), v["mode"], seed,
                float(v.get("weight", 0.0)), epochs=int(epochs * v.get("epochs_x", 1)),
                object_centric=bool(v.get("object_centric", True)))
        rows.append({"variant": v["name"], "epochs_x": v.get("epochs_x", 1),
                     "object_centric": bool(v.get("object_centric", True)), **r})
    return rows


def sweep_effects(sweep_rows: List[Dict[str, Any]], grid_rows: List[Dict[str, Any]] = ()):
    """Per interpretable sweep variant: its ordinary baseline (the ordinary variant with the same
    arch, length and data, else the grid's VGG single scratch ordinary net), and the change of
    location instability, relative to the baseline, per seed (mean, sd, seeds where it fell)."""

    def cond(r):
        return (r["arch"], r["task"], r["protocol"], r.get("epochs_x", 1), r.get("object_centric", True))

    base = {}
    for r in list(grid_rows) + list(sweep_rows):
        if r["mode"] == "ordinary":
            base[cond(r) + (r["seed"],)] = (r.get("variant", "grid ordinary"), r["instability"])
    out = []
    for name in dict.fromkeys(r["variant"] for r in sweep_rows if r["mode"] != "ordinary"):
        rel, bname, accs = [], None, []
        for r in (r for r in sweep_rows if r["variant"] == name):
            b = base.get(cond(r) + (r["seed"],))
            if b is None:
                continue
            bname = b[0]
            rel.append(r["instability"] / b[1] - 1)
            accs.append(r["acc"])
        if rel:
            out.append({"variant": name, "baseline": bname, "rel_change_mean": float(np.mean(rel)),
                        "rel_change_sd": float(np.std(rel, ddof=1)) if len(rel) > 1 else float("nan"),
                        "seeds_lower": int(sum(x < 0 for x in rel)), "n_seeds": len(rel),
                        "acc": float(np.mean(accs))})
    return pd.DataFrame(out).set_index("variant") if out else pd.DataFrame()


def per_seed_changes(rows: List[Dict[str, Any]]) -> Dict[tuple, List[float]]:
    """``{(arch, task, protocol, mode): [relative change of instability vs the ordinary net of the same
    setting and seed, per seed]}`` for every interpretable mode of a grid (the claims scoreboard's input)."""
    base = {(r["arch"], r["task"], r["protocol"], r["seed"]): r["instability"] for r in rows if r["mode"] == "ordinary"}
    out: Dict[tuple, List[float]] = {}
    for r in sorted((r for r in rows if r["mode"] != "ordinary"), key=lambda r: r["seed"]):
        b = base.get((r["arch"], r["task"], r["protocol"], r["seed"]))
        if b is not None:
            out.setdefault((r["arch"], r["task"], r["protocol"], r["mode"]), []).append(r["instability"] / b - 1)
    return out


def summarise(rows: List[Dict[str, Any]], by: Optional[Sequence[str]] = None):
    """pandas DataFrame: mean and sd over seeds of acc, instability, part_iou per setting (``by``:
    the grouping columns; default ``variant`` for sweep rows, else arch, task, protocol, mode)."""
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in ("model", "val")} for r in rows])
    if by is None:
        by = ["variant"] if "variant" in df else ["arch", "task", "protocol", "mode"]
    g = df.groupby(list(by), sort=False)[["acc", "instability", "part_iou"]]
    out = g.agg(["mean", "std"])
    out[("n_seeds", "")] = g.size()
    return out
