"""Notebook 06's experiments: train every with/without pair, measure the three utility metrics over
seeds, and put the deltas beside the lecture's tables.

Paper: Shen et al., CVPR 2021 (arXiv 1911.09053); spec ``06_pointcloud_utilities.md`` sections 3-4, 7.
Not verified by the original authors. The metrics live in :mod:`xnn_support.pointcloud`, the
networks in :mod:`xnn_support.models.pointnets` / :mod:`~xnn_support.models.pointnets_seq`.

* :data:`PAIRS` -- the lecture's rows (Arch 1 density, Arch 2 coordinate weight net, Arch 3
  multi-scale, Arch 4 orientation encoding) on our mini backbones, plus DGCNN multi-scale as a
  "predictability" row (no paper number).
* :func:`load_clouds` -- the embedded analogues: ``digits3d`` (3D MNIST), ``shapes3d`` (ModelNet40),
  ``parts3d`` (ShapeNet; non-uniform per-part density, which gives Arch 1 something to act on).
* :func:`trained_model` -- one trainer and cache for all models; identical data, epochs, lr,
  augmentation and seed within a pair. ``rotation_training="separate"`` trains the rotation pairs'
  models a second time with random SO(3) augmentation (the official "rr" checkpoints) and measures
  rotation non-robustness on those only.
* :func:`evaluate` -- all metrics of every model on the same clouds, rotations, noise, initial
  perturbations and targets (paired comparisons).
* :func:`pair_table` -- per pair and metric: w/ and w/o mean +- sd over seeds, Delta with the lecture's
  sign (positive = the module helps), how many seeds agree; :data:`PAPER` holds the lecture's numbers.

Deviations: mini networks at 128 points (paper: full networks at 1024), CPU-sized budgets (see
:data:`PROFILES`), our synthetic datasets; the estimator and attack settings of
:mod:`xnn_support.pointcloud`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ... import data as _data
from .method import (attack, feature_scale, inconsistency_from_sigma, point_sigma,
                         nonrobustness_from_log_sigma, rotation_table)
from ...core.train import fit
from ...core.utils import progress as _progress
import time
import hashlib
from pathlib import Path
import warnings
import pandas as pd
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from ...core.cache import CacheError, cache_dir, data_fingerprint, load_json, make_key, save_json
from ...data.clouds import PART_CLASSES, SHAPE_CLASSES
from .planted import CoordinateNet, DistanceNet  # noqa: F401  (re-exported: notebook 06's planted checks)

__all__ = ["Pair", "PAIRS", "PAPER", "PROFILES", "variant_key", "variants", "load_clouds",
           "evaluate", "run_study", "study_jobs", "trained_model", "pair_table", "pair_slug", "METRICS", "DistanceNet", "CoordinateNet"]

#: metric -> (column, lower_is_better)
METRICS: Dict[str, Tuple[str, bool]] = {"rotation": ("rotation non-robustness", True),
                                        "adversarial": ("adversarial robustness", False),
                                        "inconsistency": ("neighbourhood inconsistency", True)}


@dataclass(frozen=True)
class Pair:
    arch: str
    model: str
    with_: Tuple[str, Tuple[Tuple[str, Any], ...]]
    without: Tuple[str, Tuple[Tuple[str, Any], ...]]
    metrics: Tuple[str, ...]
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.arch} {self.model}"


def _v(name: str, **cfg) -> Tuple[str, Tuple[Tuple[str, Any], ...]]:
    return name, tuple(sorted(cfg.items()))


# Point2Sequence scales: the paper's 16-128 neighbours of 1024 points, scaled to 128 points (4-32)
_PN2, _P2S = _v("pointnet2"), _v("point2sequence", scales=(4, 8, 16, 32))
PAIRS: List[Pair] = [
    Pair("Arch 1", "PointConv", _v("pointconv"), _v("pointconv", density=False), ("adversarial",)),
    Pair("Arch 1", "PointNet++", _v("pointnet2", density=True), _PN2, ("adversarial",)),
    Pair("Arch 1", "Point2Sequence", _v("point2sequence", density=True, scales=(4, 8, 16, 32)), _P2S,
         ("adversarial",)),
    Pair("Arch 2", "PointConv", _v("pointconv"), _v("pointconv", weightnet=False), ("rotation",)),
    Pair("Arch 2", "PointNet++", _v("pointnet2", weightnet=True), _PN2, ("rotation",)),
    Pair("Arch 2", "Point2Sequence", _v("point2sequence", weightnet=True, scales=(4, 8, 16, 32)), _P2S,
         ("rotation",)),
    Pair("Arch 3", "PointNet++", _v("pointnet2", msg=True), _PN2, ("adversarial", "inconsistency")),
    Pair("Arch 3", "Point2Sequence (4 vs 3 scales)", _P2S, _v("point2sequence", scales=(8, 16, 32)),
         ("adversarial", "inconsistency")),
    Pair("Arch 3", "Point2Sequence (4 vs 2 scales)", _P2S, _v("point2sequence", scales=(16, 32)),
         ("adversarial", "inconsistency")),
    Pair("Arch 3", "DGCNN (2 vs 1 scale)", _v("dgcnn", scales=(8, 16)), _v("dgcnn"), ("adversarial", "inconsistency"),
         note="predictability row, not in the lecture"),
    Pair("Arch 4", "PointSIFT", _v("pointsift"), _v("pointsift", orientation=False), ("rotation",)),
    Pair("Arch 4", "PointNet++", _v("pointnet2", orientation=True), _PN2, ("rotation",)),
    Pair("Arch 4", "Point2Sequence", _v("point2sequence", orientation=True, scales=(4, 8, 16, 32)), _P2S,
         ("rotation",)),
]

#: the lecture's tables (spec section 4): (label, metric) -> {dataset: (w/, w/o, Delta)}; our
#: analogues: digits3d ~ 3D MNIST, shapes3d ~ ModelNet40, parts3d ~ ShapeNet
_DS = ("shapes3d", "parts3d", "digits3d")


def _rows(vals):
    out = {}
    for ds, (w, wo, d) in zip(_DS, zip(*[iter(vals)] * 3)):
        out[ds] = (w, wo, d)
    return out


PAPER: Dict[Tuple[str, str], Dict[str, Tuple[Optional[float], float, float]]] = {
    ("Arch 2 PointConv", "rotation"): _rows([3.918, 3.954, 0.036, 4.250, 2.703, -1.547, 5.140, 6.221, 1.081]),
    ("Arch 2 PointNet++", "rotation"): _rows([2.658, 5.000, 2.342, 4.186, 6.709, 2.523, 5.256, 6.754, 1.498]),
    ("Arch 2 Point2Sequence", "rotation"): _rows([4.020, 5.786, 1.766, 2.821, 5.222, 2.401, 4.590, 7.410, 2.820]),
    ("Arch 4 PointSIFT", "rotation"): _rows([4.747, 7.090, 2.343, 4.598, 5.118, 0.520, 7.851, 6.154, -1.697]),
    ("Arch 4 PointNet++", "rotation"): _rows([5.505, 5.000, -0.505, 6.152, 6.709, 0.557, 5.298, 6.754, 1.456]),
    ("Arch 4 Point2Sequence", "rotation"): _rows([2.917, 5.786, 2.869, 2.909, 5.222, 2.313, 5.942, 7.410, 1.468]),
    ("Arch 1 PointConv", "adversarial"): _rows([2.878, 2.629, 0.249, 2.407, 2.271, 0.136, 2.737, 2.530, 0.207]),
    ("Arch 1 PointNet++", "adversarial"): _rows([2.519, 2.504, 0.015, 2.496, 2.437, 0.059, 2.427, 2.352, 0.075]),
    ("Arch 1 Point2Sequence", "adversarial"): _rows([2.544, 2.526, 0.018, 2.500, 2.520, -0.020, 2.475, 2.468, 0.007]),
    ("Arch 3 PointNet++", "adversarial"): _rows([3.010, 2.504, 0.506, 2.987, 2.437, 0.550, 2.604, 2.352, 0.252]),
    ("Arch 3 Point2Sequence (4 vs 3 scales)", "adversarial"):
        _rows([2.526, 2.521, 0.005, 2.520, 2.514, 0.006, 2.468, 2.479, -0.011]),
    ("Arch 3 Point2Sequence (4 vs 2 scales)", "adversarial"):
        _rows([None, 2.513, 0.013, None, 2.488, 0.032, None, 2.460, 0.008]),
    ("Arch 3 PointNet++", "inconsistency"): _rows([3.149, 3.451, 0.302, 3.321, 3.346, 0.025, 3.496, 3.519, 0.023]),
    ("Arch 3 Point2Sequence (4 vs 3 scales)", "inconsistency"):
        _rows([3.655, 4.182, 0.527, 3.091, 3.179, 0.088, 3.226, 3.411, 0.185]),
    ("Arch 3 Point2Sequence (4 vs 2 scales)", "inconsistency"):
        _rows([None, 4.253, 0.598, None, 3.199, 0.108, None, 3.537, 0.311]),
}

#: budgets per notebook profile (override any key from the notebook's parameters)
PROFILES: Dict[str, Dict[str, Any]] = {
    "smoke": dict(points=64, n_train=160, epochs=2, eval_clouds=2, rot_clouds=2, n_rotations=3, steps=25,
                  samples=4, attack_steps=40, targets=2, seeds=(0,)),
    "default": dict(points=128, n_train=640, epochs=24, eval_clouds=8, rot_clouds=4, n_rotations=6, steps=120,
                    samples=8, attack_steps=200, targets=3, seeds=(0, 1)),  # 2 seeds since 2026-12-02 (the hour)
    "paper": dict(points=256, n_train=1600, epochs=40, eval_clouds=50, rot_clouds=20, n_rotations=12, steps=400,
                  samples=16, attack_steps=1000, targets=None, seeds=(0, 1, 2)),
}


def variant_key(v: Tuple[str, Tuple[Tuple[str, Any], ...]]) -> str:
    """'pointnet2[msg=True]' style name of a model variant."""
    name, cfg = v
    return name if not cfg else name + "[" + ",".join(f"{k}={val}" for k, val in cfg) + "]"


def variants(pairs: Sequence[Pair] = PAIRS, metric: Optional[str] = None) -> Dict[str, Tuple[str, Dict[str, Any]]]:
    """Unique models of ``pairs`` (those measured on ``metric`` if given): key -> (name, config)."""
    out: Dict[str, Tuple[str, Dict[str, Any]]] = {}
    for p in pairs:
        if metric is not None and metric not in p.metrics:
            continue
        for v in (p.with_, p.without):
            out.setdefault(variant_key(v), (v[0], dict(v[1])))
    return out


def load_clouds(dataset: str, points: int, n_train: int, *, seed: int = 0, n_test: int = 64):
    """(train, val, test) :class:`~xnn_support.data.PointCloudSet` of an embedded analogue; the
    data seed is fixed (0) so every model seed sees the same clouds."""
    if dataset == "digits3d":
        ds = _data.digits3d(n_train + n_test, points, seed=seed)
    elif dataset in ("shapes3d", "parts3d"):
        fn = _data.shapes3d if dataset == "shapes3d" else _data.parts3d
        n_cls = len(SHAPE_CLASSES if dataset == "shapes3d" else PART_CLASSES)
        per = max(2, math.ceil((n_train + n_test) / n_cls))
        ds = fn(per, points, seed=seed, **({"density": "parts"} if dataset == "parts3d" else {}))
    else:
        raise ValueError(f"unknown dataset {dataset!r}; choose digits3d, shapes3d or parts3d")
    n_test = min(n_test, len(ds) // 5)
    rest, test = ds.split(n_test / len(ds), seed=seed)
    train, val = rest.split(0.15, seed=seed)
    return train, val, test


def evaluate(model, test, budget: Dict[str, Any], *, metrics: Sequence[str], seed: int = 0) -> Dict[str, float]:
    """The requested metrics of one model on the first clouds of ``test`` (same clouds, rotations,
    noise, initial deltas and targets for every model given the same seed). Also returns the
    test accuracy, attack failure rate and the estimator's mean read-out F."""
    t0 = time.perf_counter()
    model.eval()
    x, y = test.points, test.labels
    out: Dict[str, float] = {}
    with torch.no_grad():
        out["test_acc"] = float((model(x).argmax(1) == y).float().mean())
    xe, ye = x[:budget["eval_clouds"]], y[:budget["eval_clouds"]]
    sf = feature_scale(model, xe, seed=seed)
    kw = dict(steps=budget["steps"], samples=budget["samples"], seed=seed, sigma_f=sf)
    if "inconsistency" in metrics:
        ps = point_sigma(model, xe, batch_size=16, **kw)
        out["inconsistency"] = float(inconsistency_from_sigma(ps.sigma, xe, 16).mean())
        out["entropy"] = float(ps.entropy.mean())   # information discarding: mean H_i (nats per point)
        out["readout_F"] = float(ps.F.mean())
        out["saturated"] = ps.saturated
    if "rotation" in metrics:
        xr = x[:budget["rot_clouds"]]
        K = budget["n_rotations"]
        R = rotation_table(xr.shape[0], K, seed).reshape(-1, 3, 3)
        ps = point_sigma(model, xr.repeat_interleave(K, 0), rotations=R, batch_size=32, **kw)
        out["rotation"] = float(nonrobustness_from_log_sigma(ps.log_sigma.reshape(xr.shape[0], K, -1)).mean())
    if "adversarial" in metrics:
        res = attack(model, xe, ye, targets=budget["targets"], steps=budget["attack_steps"], seed=seed)
        B = xe.shape[0]
        per = torch.zeros(B).index_add_(0, res.cloud, res.norm2) / torch.bincount(res.cloud, minlength=B).clamp_min(1)
        out["adversarial"] = float(per.mean())
        out["attack_failure"] = res.failure_rate
        ok = res.success
        out["adversarial_success_only"] = float(res.norm2[ok].mean()) if bool(ok.any()) else float("nan")
    out["eval_seconds"] = time.perf_counter() - t0
    return out


AUGMENT = {"aligned": "jitter+scale", "so3": "rotate_so3+jitter+scale"}


def trained_model(parts, variant: str, training: str, seed: int, budget: Dict[str, Any], threads: int = 1):
    """The :class:`~xnn_support.train.TrainResult` of one variant (key of :func:`variants`) with the
    study's recipe: from the checkpoint cache when the study already trained it."""
    table = variants()
    if variant not in table:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(table)}")
    if training not in AUGMENT:
        raise ValueError(f"training must be one of {sorted(AUGMENT)}, got {training!r}")
    name, cfg = table[variant]
    train, val, _ = parts
    return fit(name, train, val, model_config=dict(cfg), epochs=budget["epochs"], lr=budget.get("lr", 2e-3),
               batch_size=32, schedule="cosine", augment=AUGMENT[training], seed=seed, progress=False,
               num_threads=threads)


_METRIC_SOURCES = ("papers/pointcloud/method.py", "papers/pointcloud/attack.py", "papers/pointcloud/experiments.py",
                   "sigma/engine.py",
                   "sigma/presets.py", "sigma/adapters.py", "sigma/result.py", "models/pointgeom.py", "models/pointnets_base.py", "models/pointnets.py",
                   "models/pointnets_seq.py")


def _metric_source_hash() -> str:
    root = Path(__file__).resolve().parents[2]  # the xnn_support package
    h = hashlib.sha256()
    for f in _METRIC_SOURCES:
        h.update((root / f).read_bytes())
    return h.hexdigest()[:16]


def _read_result(path: Path, mkey: str) -> Optional[Dict[str, Any]]:
    """A verified cached measurement, or None (absent; damaged or altered: warns, then it is measured again)."""
    if not path.exists():
        return None
    try:
        ev = load_json(path, mkey)
    except CacheError as e:
        warnings.warn(f"result cache: {e}; measuring again", RuntimeWarning, stacklevel=3)
        return None
    return ev if isinstance(ev, dict) else None


def _job(parts, key: str, training: str, seed: int, budget: Dict[str, Any], metrics: Sequence[str],
         threads: int = 1, memo: bool = True) -> Dict[str, Any]:
    """Train (or load) one variant and measure it: one row of :func:`run_study` (runs in a worker).
    With ``memo`` each metric's measurement is kept in the cache (``results/<key>.json``) under a key
    made of the trained weights' cache key, the test clouds, the budget, the metric and the source of
    the metric code: a re-run with nothing changed reads them back, and asking for one more metric
    measures only that one."""
    torch.set_num_threads(threads)
    tr = trained_model(parts, key, training, seed, budget, threads)
    row: Dict[str, Any] = {}
    cached, seconds = [], 0.0
    for met in sorted(metrics):
        mkey = make_key({"train": tr.key, "test": data_fingerprint(parts[2]), "budget": budget, "metric": met,
                         "seed": seed, "source": _metric_source_hash()})
        path = cache_dir() / "results" / f"{mkey}.json"
        ev = _read_result(path, mkey) if memo else None
        cached.append(ev is not None)
        if ev is None:
            ev = evaluate(tr.model, parts[2], budget, metrics=[met], seed=seed)
            if memo:
                save_json(path, mkey, ev)
        seconds += ev.pop("eval_seconds", 0.0)
        row.update(ev)
    return {"seed": seed, "variant": key, "training": training, "val_acc": tr.val_acc,
            "train_seconds": float(sum(h.get("time", 0.0) for h in tr.history)), "from_cache": tr.from_cache,
            **row, "eval_seconds": seconds, "metrics_cached": bool(cached) and all(cached)}


def study_jobs(budget: Dict[str, Any], pairs: Sequence[Pair] = PAIRS, rotation_training: str = "aligned",
               all_metrics: bool = True):
    """(variant key, training, seed, metrics) for every model the study needs. ``all_metrics``: every
    model gets every metric its training allows (so each pair shows all three), else only the
    metrics of its pairs' hypotheses."""
    if rotation_training not in ("separate", "aligned"):
        raise ValueError(f"rotation_training must be 'separate' or 'aligned', got {rotation_training!r}")
    plans = [("aligned", ("adversarial", "inconsistency") if rotation_training == "separate" else tuple(METRICS))]
    if rotation_training == "separate":
        plans.append(("so3", ("rotation",)))
    jobs = []
    for seed in budget["seeds"]:
        for training, mets in plans:
            need: Dict[str, Tuple[str, Dict[str, Any], set]] = {}
            for p in pairs:
                m = [k for k in (METRICS if all_metrics else p.metrics) if k in mets]
                if training == "so3" and not any(k in p.metrics for k in mets):
                    continue  # rotation copies only for the rotation pairs
                for v in (p.with_, p.without):
                    if m:
                        need.setdefault(variant_key(v), (v[0], dict(v[1]), set()))[2].update(m)
            jobs += [(key, training, seed, tuple(sorted(ms))) for key, (_, _, ms) in need.items()]
    return jobs


def run_study(dataset: str, budget: Dict[str, Any], *, pairs: Sequence[Pair] = PAIRS,
              rotation_training: str = "aligned", all_metrics: bool = True, workers: int = 1,
              progress: bool = True) -> List[Dict[str, Any]]:
    """Every model of ``pairs`` for every seed of ``budget['seeds']``: one row per (seed, variant,
    training) with its metrics. ``rotation_training``: "separate" (rotation metric on models trained
    with random SO(3) rotations, the other metrics on aligned training) or "aligned" (one set).
    ``workers``: processes (one torch thread each; results do not depend on it); trained weights go
    through the checkpoint cache, so a re-run loads them."""
    parts = load_clouds(dataset, budget["points"], budget["n_train"])
    jobs = study_jobs(budget, pairs, rotation_training, all_metrics)
    args = [(parts, key, training, seed, budget, mets) for key, training, seed, mets in jobs]
    rows: List[Dict[str, Any]] = []
    bar = _progress(total=len(args), desc=f"{dataset}: train + measure") if progress else None
    if workers <= 1:
        for a in args:
            rows.append(_job(*a))
            if bar is not None:
                bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
            futs = [ex.submit(_job, *a) for a in args]
            for f in futs:           # in submission order: rows come out in the same order as with 1 worker
                rows.append(f.result())
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    for r in rows:
        r["dataset"] = dataset
    return rows


def pair_table(rows: List[Dict[str, Any]], pairs: Sequence[Pair] = PAIRS, dataset: Optional[str] = None,
               all_metrics: bool = False):
    """pandas DataFrame, one row per (pair, metric): w/ and w/o mean +- sd over seeds, Delta (lecture
    sign: positive = the module helps), seeds agreeing with the hypothesis, the lecture's numbers.
    ``all_metrics``: every metric measured on both members (column ``hypothesis`` marks the pair's
    own), else only the hypotheses' metrics."""
    df = pd.DataFrame(rows)
    out = []
    for p in pairs:
        for met in (METRICS if all_metrics else p.metrics):
            col, lower = METRICS[met]
            sub = df[df[met].notna()] if met in df else df.iloc[0:0]
            if dataset is not None:
                sub = sub[sub.dataset == dataset]
            w = sub[sub.variant == variant_key(p.with_)].set_index("seed")[met]
            wo = sub[sub.variant == variant_key(p.without)].set_index("seed")[met]
            common = sorted(set(w.index) & set(wo.index))
            if not common:
                continue
            d = (wo[common] - w[common]) if lower else (w[common] - wo[common])
            paper = PAPER.get((p.label, met), {}).get(dataset or "", (None, None, None))
            out.append({"arch": p.arch, "model": p.model, "metric": col, "hypothesis": met in p.metrics,
                        "w/": w[common].mean(),
                        "w/ sd": w[common].std(ddof=1) if len(common) > 1 else float("nan"),
                        "w/o": wo[common].mean(), "w/o sd": wo[common].std(ddof=1) if len(common) > 1 else float("nan"),
                        "Delta": d.mean(), "Delta sd": d.std(ddof=1) if len(common) > 1 else float("nan"),
                        "seeds Delta>0": f"{int((d > 0).sum())}/{len(common)}",
                        "Delta per seed": [float(x) for x in d],
                        "paper w/": paper[0], "paper w/o": paper[1], "paper Delta": paper[2]})
    return pd.DataFrame(out)


def pair_slug(p: Pair) -> str:
    """Short stable name of a pair for the ledger, e.g. 'arch3_point2sequence4_vs_3scales'."""
    return (p.arch.replace(" ", "").lower() + "_" + p.model.lower().replace("+", "p").replace(" ", "")
            .replace("(", "").replace(")", "").replace("vs", "_vs_"))
