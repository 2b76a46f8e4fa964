"""Notebook 05 on a real network (issue 16): knowledge consistency between the ImageNet-pretrained
EfficientNet-Lite0 fine-tuned on creatures and the same architecture trained from random init on
the same data.

What: for each seed k, two nets from :func:`xnn_support.papers.icnn.real.finetune` on the
multi-category creatures at 224 px (bird, quadruped, negatives), with the same arguments except the
initial weights:

* **pretrained** (the strong net): ImageNet weights, ``mode="ordinary"`` -- the very call of notebook
  02's ordinary fine-tuning, so the trainer's cache holds one entry for both notebooks;
* **scratch** (the weak net): ``weights=None``, timm's random init seeded with k, trained the same way.

Both keep ``conv_stem .. blocks.4`` frozen (see :mod:`..icnn.real`) and train the new 3x3 conv after
``blocks.4``, ``blocks.5-6``, the head and a new classifier. The taps (:data:`LAYERS`) are the frozen
``blocks.4.0`` output (14x14: ImageNet features vs random-init features of the same architecture,
the cached input of the top) and two trained layers (the new conv, 14x14; ``blocks.6``, 7x7). At each tap g
is fitted both ways on ``n_fit`` training images and the held-out validation images are decomposed
(:func:`..method.fit_consistency`): x_pretrained rebuilt from x_scratch leaves the scratch net's
**blind spots**, x_scratch rebuilt from x_pretrained leaves its **unreliable** features (the
paper's diagnosis, notebook 05 (b)); the order shares of both fits are the consistency by order.

Deviations (beyond notebook 05's): "scratch" trains only the top from random init, its lower stages
stay at their random init (the same protocol as the pretrained net, whose lower stages stay at the
ImageNet weights; a whole-net backward costs ~0.2-0.3 s per 224 px image on our CPU). So at the
frozen taps the comparison is ImageNet features vs random features of one architecture, and at the
trained taps two tops trained on those. g uses 1x1 convolutions by default (``kernel=1``; official
3x3: 9x the cost at 112-320 channels), fewer fitting images and epochs than the official code.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd
import torch
from torch import nn

from ...core.utils import mean_sd, progress as bar, torch_threads
from ...models.pretrained import preprocess
from ..icnn.real import BATCH_SIZE, LR, SIZE, finetune, real_data
from .experiments import tap_features
from .method import fit_consistency

__all__ = ["LAYERS", "TASK", "real_nets", "real_taps", "real_consistency_study", "order_shares",
           "real_diagnosis_summary", "diagnosis_verdict", "real_consistency_reading", "compare_gaps"]

#: taps: name in the tables -> (module in the timm net, frozen?)
LAYERS: Dict[str, tuple] = {"blocks.4": ("blocks.4.0", True), "new conv": ("blocks.4.1", False),
                            "blocks.6": ("blocks.6", False)}
FEATURES = "blocks.4.0"   # the frozen features every finetune result carries (no pass over the images)
TASK = "multi"
DIRECTIONS = (("blind", "x_pretrained from x_scratch"), ("unrel", "x_scratch from x_pretrained"))


class _OnImages(nn.Module):
    """The whole net on images in [0, 1] (``preprocess`` first), for taps below the frozen cut."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(preprocess(x, SIZE))


def real_nets(seed: int, *, n: int, epochs: int, lr: float = LR, batch_size: int = BATCH_SIZE, data_seed: int = 0,
              num_threads: Optional[int] = 1, data: Optional[tuple] = None) -> Dict[str, Dict[str, Any]]:
    """``{"pretrained": .., "scratch": ..}``: the two :func:`~..icnn.real.finetune` results of seed
    ``seed`` on the multi-category task (ordinary new layer; ImageNet weights vs random init)."""
    data = data if data is not None else real_data(TASK, n, data_seed)
    kw = dict(n=n, epochs=epochs, lr=lr, batch_size=batch_size, data_seed=data_seed, num_threads=num_threads,
              data=data)
    return {"pretrained": finetune(TASK, "ordinary", seed, weights="imagenet", **kw),
            "scratch": finetune(TASK, "ordinary", seed, weights=None, **kw)}


def real_taps(r: Dict[str, Any], idx: torch.Tensor, split: str, layers: Dict[str, tuple]) -> Dict[str, torch.Tensor]:
    """``{name: features}`` of one :func:`~..icnn.real.finetune` result at ``layers`` for the images
    ``idx`` of ``split`` ("train" / "val"): ``blocks.4.0`` is the cached frozen feature itself, trained
    taps come from it through the top, other frozen taps from a pass over the images."""
    feats = r["ftrain" if split == "train" else "fval"][idx]
    low = {k: "net." + v[0] for k, v in layers.items() if v[1] and v[0] != FEATURES}
    high = {k: "net." + v[0] for k, v in layers.items() if not v[1]}
    out = {k: feats for k, v in layers.items() if v[0] == FEATURES}
    if low:
        t = tap_features(_OnImages(r["net"]), r[split].images[idx], list(low.values()), batch_size=50)
        out.update({k: t[m] for k, m in low.items()})
    if high:
        t = tap_features(r["top"], feats, list(high.values()), batch_size=100)
        out.update({k: t[m] for k, m in high.items()})
    return {k: out[k].float().contiguous() for k in layers}


def _fit_both(xp: Dict[str, torch.Tensor], xs: Dict[str, torch.Tensor], ep: Dict[str, torch.Tensor],
              es: Dict[str, torch.Tensor], name: str, g: Dict[str, Any], seed: int) -> Dict[str, float]:
    """Both fits at one tap; the held-out shares as ``blind_k`` / ``unrel_k`` columns."""
    row: Dict[str, float] = {}
    for tag, (fa, fb, ea, eb) in (("blind", (xs, xp, es, ep)), ("unrel", (xp, xs, ep, es))):
        res = fit_consistency(fa[name], fb[name], seed=seed, progress=False, **g)
        ev = res.apply(ea[name], eb[name])
        row.update({f"{tag}_{k}": s for k, s in enumerate(ev.shares[:-1])})
        row[f"{tag}_residual"] = ev.shares[-1]
    return row


def real_consistency_study(seeds: Sequence[int] = (0, 1, 2), *, n: int, epochs: int, lr: float = LR,
                           n_fit: int = 200, layers: Optional[Dict[str, tuple]] = None, orders: int = 3,
                           alpha: float = 0.1, g_epochs: int = 20, kernel: int = 1, batch_size: int = BATCH_SIZE,
                           data_seed: int = 0, num_threads: Optional[int] = 1, progress: bool = True) -> pd.DataFrame:
    """Pretrained vs scratch (:func:`real_nets`) at every tap, for every seed: a tidy table, one row per
    (seed, layer): ``seed``, ``layer``, ``tap`` (module), ``frozen``, ``shape`` (C x H x W),
    ``acc_pretrained``, ``acc_scratch`` (validation), the held-out order shares ``blind_0 ..`` /
    ``unrel_0 ..`` and residual shares ``blind_residual`` (= blind-spot share of the scratch net) /
    ``unrel_residual`` (= its unreliable share), and ``blind_minus_unreliable``. g: ``orders``,
    ``alpha``, ``g_epochs``, ``kernel``, fitted on the first ``n_fit`` training images (seeded with
    the seed), decomposed on all validation images."""
    layers = dict(layers or LAYERS)
    if not seeds or not layers:
        raise ValueError("seeds and layers must not be empty")
    data = real_data(TASK, n, data_seed)
    idx_fit = torch.arange(min(int(n_fit), len(data[0])))
    idx_val = torch.arange(len(data[1]))
    g = dict(orders=orders, alpha=alpha, epochs=g_epochs, kernel=kernel, num_threads=num_threads)
    rows: List[Dict[str, Any]] = []
    for seed in bar(list(seeds), desc="consistency real", disable=not progress):
        nets = real_nets(seed, n=n, epochs=epochs, lr=lr, batch_size=batch_size, data_seed=data_seed,
                         num_threads=num_threads, data=data)
        with torch_threads(num_threads):
            tp = {k: (real_taps(r, idx_fit, "train", layers), real_taps(r, idx_val, "val", layers))
                  for k, r in nets.items()}
        (xp, ep), (xs, es) = tp["pretrained"], tp["scratch"]
        for name, (module, frozen) in layers.items():
            row = {"seed": seed, "layer": name, "tap": module, "frozen": frozen,
                   "shape": "x".join(str(s) for s in xp[name].shape[1:]),
                   "acc_pretrained": float(nets["pretrained"]["result"].val_acc),
                   "acc_scratch": float(nets["scratch"]["result"].val_acc)}
            row.update(_fit_both(xp, xs, ep, es, name, g, seed))
            row["blind_minus_unreliable"] = row["blind_residual"] - row["unrel_residual"]
            rows.append(row)
    return pd.DataFrame(rows)


def order_shares(df: pd.DataFrame, direction: str = "blind") -> pd.DataFrame:
    """The ``direction`` ("blind": x_pretrained from x_scratch; "unrel": the reverse) columns of a
    :func:`real_consistency_study` table renamed ``share_0 .. share_residual`` (one row per seed and
    layer), as ``viz.consistency_shares`` takes them."""
    if direction not in ("blind", "unrel"):
        raise ValueError(f"direction must be 'blind' or 'unrel', got {direction!r}")
    cols = [c for c in df.columns if c.startswith(direction + "_")]
    return df[["seed", "layer"] + cols].rename(columns={c: "share_" + c[len(direction) + 1:] for c in cols})


def real_diagnosis_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per layer (in tap order): mean and sd over seeds of the blind-spot share, the unreliable share,
    their difference, and the order-0 shares of both fits; ``per_seed`` differences; ``frozen``."""
    out = []
    for name, d in df.groupby("layer", sort=False):
        gap = mean_sd(d["blind_minus_unreliable"])
        b, u = mean_sd(d["blind_residual"]), mean_sd(d["unrel_residual"])
        out.append({"layer": name, "frozen": bool(d["frozen"].iloc[0]), "shape": d["shape"].iloc[0],
                    "blind": b.mean, "blind_sd": b.sd, "unreliable": u.mean, "unreliable_sd": u.sd,
                    "gap": gap.mean, "gap_sd": gap.sd, "n_seeds": gap.n,
                    "blind_order0": float(d["blind_0"].mean()), "unrel_order0": float(d["unrel_0"].mean()),
                    "per_seed": [float(v) for v in d.sort_values("seed")["blind_minus_unreliable"]]})
    return pd.DataFrame(out).set_index("layer")


def diagnosis_verdict(per_seed: Sequence[float]) -> str:
    """"blind spots dominate" (every seed > 0, mean beyond its sd), "unreliable features dominate" (the
    mirror), else "no clear asymmetry" -- from per-seed blind-minus-unreliable shares."""
    v = [float(x) for x in per_seed if x is not None and math.isfinite(float(x))]
    if len(v) < 2:
        return "no clear asymmetry (fewer than 2 seeds)"
    m = mean_sd(v)
    if all(x > 0 for x in v) and m.mean > m.sd:
        return "blind spots dominate"
    if all(x < 0 for x in v) and -m.mean > m.sd:
        return "unreliable features dominate"
    return "no clear asymmetry"


def real_consistency_reading(df: pd.DataFrame, toy_gap: Optional[Sequence[float]] = None) -> List[str]:
    """Markdown lines for the reading: per layer the real gap (blind minus unreliable, mean +- sd,
    :func:`diagnosis_verdict`), beside the toy nets' gap (``toy_gap``: its per-seed values) and the
    accuracies of both nets."""
    s = real_diagnosis_summary(df)
    acc_p, acc_s = mean_sd(df.drop_duplicates("seed")["acc_pretrained"]), mean_sd(df.drop_duplicates("seed")["acc_scratch"])
    lines = [f"- **Nets:** pretrained, fine-tuned: accuracy {acc_p.mean:.3f} +- {acc_p.sd:.3f}; scratch: "
             f"{acc_s.mean:.3f} +- {acc_s.sd:.3f} ({acc_p.n} seeds)."]
    for name, r in s.iterrows():
        kind = "frozen" if r["frozen"] else "trained"
        lines.append(f"- **{name}** ({kind}, {r['shape']}): blind spots {r['blind']:.3f} +- {r['blind_sd']:.3f}, "
                     f"unreliable {r['unreliable']:.3f} +- {r['unreliable_sd']:.3f}, difference {r['gap']:+.3f} +- "
                     f"{r['gap_sd']:.3f}: **{diagnosis_verdict(r['per_seed'])}**; order-0 share "
                     f"{r['blind_order0']:.2f} / {r['unrel_order0']:.2f}.")
    if toy_gap:
        t = mean_sd(toy_gap)
        top = s.iloc[-1]
        lines.append(f"- **Toy nets** (strong vs weak VGG-like, section (b)): difference {t.mean:+.3f} +- {t.sd:.3f}: "
                     f"**{diagnosis_verdict(toy_gap)}**. At the top trained tap ({s.index[-1]}) the real pair's "
                     f"difference is **{compare_gaps(top['per_seed'], toy_gap)}** the toy pair's (paper: no number; "
                     "it reports blind spots of weak nets qualitatively).")
    return lines


def compare_gaps(real: Sequence[float], toy: Sequence[float]) -> str:
    """"larger than" / "smaller than" (means apart by more than the larger sd) or "about the same as"."""
    r, t = mean_sd(real), mean_sd(toy)
    spread = max(r.sd, t.sd)
    if r.mean - t.mean > spread:
        return "larger than"
    if t.mean - r.mean > spread:
        return "smaller than"
    return "about the same as"
