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
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from .icnn import FilterLoss, make_interpretable
from .icnn_metrics import instability_per_filter, part_iou, peak_positions

__all__ = ["ARCHS", "TASKS", "build_net", "load_data", "train_net", "evaluate_net", "run_grid", "summarise"]

ARCHS: Dict[str, Dict[str, Any]] = {
    "vgg": {"name": "vgg_small", "config": {"plan": [16, "M", 32, 32, "M", 64, 64]},
            "insert": "features", "layer": "features.1", "lr": 3e-3},
    "alexnet": {"name": "alexnet_small", "config": {}, "insert": "features.16", "layer": "features.16.1",
                "lr": 1e-3},
    # paper profile: torchvision VGG-16 (with BN: trainable from scratch, no pretrained weights offline)
    # at 224 px, new layer after relu5_3 (14x14, n = 14 as in the paper)
    "vgg16": {"name": "vgg16_bn", "config": {}, "insert": "features.42", "layer": "features.42.1",
              "lr": 1e-4, "size": 224},
}
TASKS = {"single": ("bird",), "multi": ("bird", "quadruped")}


def load_data(task: str, n: int, seed: int = 0, size: int = 64):
    """(train, val) creatures split 80/20 for ``task`` ("single" or "multi")."""
    from .data import creatures
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    ds = creatures(n, size, categories=TASKS[task], object_centric=True, seed=seed)
    return ds.split(0.2, seed=seed)


def build_net(arch: str, mode: str, num_classes: int, seed: int, in_size: int = 64, base=None):
    """The zoo net (or a copy of ``base``) with its new (interpretable or ordinary) layer."""
    from .models import build
    spec = ARCHS[arch]
    size_kw = {} if "size" in spec else {"in_size": in_size}
    model = copy.deepcopy(base) if base is not None else build(
        spec["name"], seed=seed, num_classes=num_classes, **size_kw, **spec["config"])
    torch.manual_seed(seed)
    model = make_interpretable(model, spec["insert"], mode=mode, num_classes=num_classes, negative_label=0)
    new = model.get_submodule(spec["layer"]).conv     # Kaiming init (the code's N(0, 0.01) trains too slowly here)
    torch.nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    torch.nn.init.zeros_(new.bias)
    return model


def train_net(model, train, val, *, weight: float, epochs: int, lr: float, seed: int, batch_size: int = 64,
              tag: str = ""):
    from .train import fit
    steps = max(1, -(-len(train) // batch_size))
    obj = FilterLoss(model, weight=weight, steps_per_epoch=steps)
    return fit(model, train, val, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, schedule="cosine",
               augment="flip", loss_fn=obj, key_extra={**obj.key(), "tag": tag}, num_threads=1,
               progress=False)


def evaluate_net(model, arch: str, val, *, top_n: int = 100) -> Dict[str, float]:
    """Instability, part IoU (mean best over parts) and accuracy on ``val``."""
    from .predict import predict
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


def run_grid(settings, *, seeds, n: int, epochs: int, weights: Dict[str, float], ft_epochs: Optional[int] = None,
             top_n: int = 100, batch_size: int = 32, progress: bool = True) -> List[Dict[str, Any]]:
    """Train and evaluate every ``(arch, task, protocol, modes)`` setting for every seed.

    ``settings``: list of tuples, e.g. ``("vgg", "single", "scratch", ["ordinary", "code"])``;
    ``protocol`` is ``"scratch"`` or ``"finetune"``; ``weights``: mode -> filter-loss weight.
    Returns one row per (setting, mode, seed): acc, instability, part_iou, the model and val set.
    """
    from .train import fit
    from .utils import progress as bar
    for s in settings:
        if len(s) != 4 or s[0] not in ARCHS or s[1] not in TASKS or s[2] not in ("scratch", "finetune"):
            raise ValueError(f"bad setting {s!r}: (arch in {sorted(ARCHS)}, task in {sorted(TASKS)}, "
                             "'scratch'|'finetune', [modes])")
    rows: List[Dict[str, Any]] = []
    data: Dict[tuple, Any] = {}
    bases: Dict[tuple, Any] = {}
    combos = [(st, sd) for st in settings for sd in seeds]
    for (arch, task, proto, modes), seed in bar(combos, desc="icnn grid", disable=not progress):
        size = ARCHS[arch].get("size", 64)
        if (task, seed, size) not in data:
            data[(task, seed, size)] = load_data(task, n, seed, size=size)
        train, val = data[(task, seed, size)]
        C = len(TASKS[task]) + 1
        spec = ARCHS[arch]
        lr = spec["lr"]
        base = None
        if proto == "finetune":
            if (arch, task, seed) not in bases:
                bases[(arch, task, seed)] = fit(
                    spec["name"], train, val, model_config=dict(spec["config"], num_classes=C), epochs=epochs,
                    lr=lr, batch_size=batch_size, schedule="cosine", augment="flip", seed=seed, num_threads=1,
                    progress=False).model
            base = bases[(arch, task, seed)]
        for mode in modes:
            model = build_net(arch, mode, C, seed, base=base)
            w = weights.get(mode, 0.0)
            res = train_net(model, train, val, weight=w, seed=seed, tag=f"{arch}/{task}/{proto}", batch_size=batch_size,
                            epochs=(ft_epochs or epochs) if proto == "finetune" else epochs,
                            lr=lr / 3 if proto == "finetune" else lr)
            m = evaluate_net(res.model, arch, val, top_n=top_n)
            rows.append({"arch": arch, "task": task, "protocol": proto, "mode": mode, "seed": seed,
                         "weight": w, **m, "model": res.model, "val": val})
    return rows


def summarise(rows: List[Dict[str, Any]]):
    """pandas DataFrame: mean and sd over seeds of acc, instability, part_iou per setting."""
    import pandas as pd
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in ("model", "val")} for r in rows])
    g = df.groupby(["arch", "task", "protocol", "mode"], sort=False)[["acc", "instability", "part_iou"]]
    out = g.agg(["mean", "std"])
    out["n_seeds"] = g.size()
    return out
