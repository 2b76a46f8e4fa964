"""The studies of notebook 05 (knowledge consistency, ICLR 2020): the multi-seed protocols.

The tools of each experiment live in :mod:`.experiments` (features at taps, consistency by layer,
diagnosis, refinement, planted pairs) and :mod:`.method` (g_theta); this module runs them over the
notebook's networks, seeds, settings and splits and returns tidy tables:

* :func:`toy_study` -- g on planted feature pairs, least squares first and the official joint fit;
  :func:`max_sum_error` checks that the orders sum to g(x_A).
* :func:`train_nets` -- the VGG-like nets of one plan, one per seed (cached trainer, zoo recipe).
* :func:`permutation_study` -- the paper's permutation example on a real feature.
* :func:`seed_pairs`, :func:`stability_study`, :func:`pair_fg_ratios_mean` -- (a) seed pairs by layer.
* :func:`diagnosis_study` -- (b) strong vs weak nets, per seed.
* :func:`refinement_study` -- (c) feature refinement over seeds x settings (strong -> weak, seed
  pair) x variants; :func:`refinement_gains` the gains over the control with their verdicts.

Protocol choices (ours, see the notebook's reproduction notes): pairs are cyclic (net i as A, net
i + 1 as B); the seed pair of refinement i is pair i, reusing its fit at ``pair_layer``; the weak
net is refined with the "unreliable" fit of its diagnosis; a verdict "improved" / "lowered" needs a
mean gain beyond two standard errors over seeds.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pandas as pd
import torch
from torch import nn

from ...core.train import fit, recipe
from ...core.utils import mean_sd
from .experiments import (consistency_by_layer, diagnose, energy_maps, foreground_share, part_fg_ratios,
                          planted_pair, refine, tap_features)
from .method import fit_consistency, variance_shares

__all__ = ["toy_study", "max_sum_error", "train_nets", "permutation_study", "seed_pairs", "stability_study",
           "pair_fg_ratios_mean", "diagnosis_study", "refinement_variants", "refinement_study",
           "refinement_gains", "TOY_KINDS", "REFINE_EXPERIMENTS"]

TOY_KINDS = ("linear", "permutation", "nonlinear", "mix", "independent")
#: the refinement settings: (name in the tables, key in the recorded metric names)
REFINE_EXPERIMENTS = (("strong -> weak", "strong_to_weak"), ("seed pair", "seed_pair"))


def _shares(ev) -> Dict[str, float]:
    return {**{f"share_{k}": s for k, s in enumerate(ev.shares[:-1])}, "share_residual": ev.shares[-1]}


# ----------------------------------------------------------------------------- planted toys
def toy_study(*, n: int, orders: int = 3, alpha: float = 0.1, epochs: int = 100, seed: int = 0, channels: int = 8,
              kinds: Sequence[str] = TOY_KINDS, joint: Sequence[str] = ("linear", "mix"),
              num_threads: Optional[int] = None) -> Tuple[pd.DataFrame, Dict[Tuple[str, bool], Any]]:
    """g on planted pairs (:func:`~.experiments.planted_pair`, ``n`` fitting + ``n // 2`` held-out
    samples per kind): order 0 by least squares first, and for the kinds in ``joint`` also the
    official joint fit. Returns ``(table, results)``: one row per (relation, fit) with the held-out
    shares ``share_0 .. share_residual`` and ``x_B - x0 error`` (Var(x_B - x^(0)) / Var(x_B));
    ``results[(kind, linear_first)]`` the :class:`~.method.ConsistencyResult`."""
    rows, results = [], {}
    for kind in kinds:
        xa, xb = planted_pair(kind, n=n * 3 // 2, channels=channels, seed=seed)
        (xa, xa2), (xb, xb2) = xa.split(n), xb.split(n)  # fit / held-out samples
        for how, first in [("least squares first", True), ("joint (official)", False)]:
            if not first and kind not in joint:
                continue
            res = fit_consistency(xa, xb, orders=orders, alpha=alpha, epochs=epochs, seed=seed, linear_first=first,
                                  batch_size=32, num_threads=num_threads, progress=False)
            ev = res.apply(xa2, xb2)
            err0 = variance_shares([], xb2 - ev.components[0], xb2)[0]  # Var(x_B - x^(0)) / Var(x_B)
            results[(kind, first)] = res
            rows.append({"relation": kind if first else f"{kind}\n(joint)", "fit": how, **_shares(ev),
                         "x_B - x0 error": err0})
    return pd.DataFrame(rows), results


@torch.no_grad()
def max_sum_error(net: nn.Module, x: torch.Tensor) -> float:
    """max |sum of the orders - g(x)| / max |g(x)| of a consistency net (0 up to float rounding)."""
    return float((net.decompose(x).sum(0) - net(x)).abs().max() / net(x).abs().max())


# ----------------------------------------------------------------------------- networks
def train_nets(train, test, seeds: Sequence[int], *, plan: Sequence[Any], epochs: int,
               num_threads: Optional[int] = None) -> Dict[int, Any]:
    """``{seed: TrainResult}``: one ``vgg_small`` with layer ``plan`` per seed, trained (or loaded
    from the cache) for ``epochs`` with the zoo's ``vgg_small`` recipe."""
    base = {k: v for k, v in recipe("vgg_small").items() if k != "epochs"}
    base["num_threads"] = num_threads
    return {s: fit("vgg_small", train, test, model_config={"plan": plan}, epochs=epochs, seed=s, **base)
            for s in seeds}


def permutation_study(model: nn.Module, fit_images: torch.Tensor, eval_images: torch.Tensor, layer: str, *,
                      seed: int = 0, **fit_kw) -> pd.DataFrame:
    """The paper's footnote: x_B = a channel permutation (seeded by ``seed``) of ``model``'s feature
    at ``layer``; g fitted on ``fit_images`` with and without the official per-sample
    normalisation. One row per normalisation with the held-out shares."""
    fa = tap_features(model, fit_images, [layer])[layer]
    ea = tap_features(model, eval_images, [layer])[layer]
    perm = torch.randperm(fa.shape[1], generator=torch.Generator().manual_seed(seed))
    rows = []
    for norm in (True, False):
        r = fit_consistency(fa, fa[:, perm], seed=seed, normalize=norm, progress=False, **fit_kw)
        ev = r.apply(ea, ea[:, perm])
        rows.append({"normalisation": "official (per-sample std)" if norm else "off", **_shares(ev)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- (a) seed pairs
def seed_pairs(seeds: Sequence[int]) -> List[Tuple[int, int]]:
    """Cyclic pairs (seed i as A, seed i + 1 as B); one pair only for two seeds."""
    seeds = list(seeds)
    return list(zip(seeds, seeds[1:] + seeds[:1]))[: len(seeds) if len(seeds) > 2 else 1]


def stability_study(nets: Dict[int, Any], pairs: Sequence[Tuple[int, int]], fit_images: torch.Tensor,
                    eval_images: torch.Tensor, layers: Dict[str, str], **fit_kw) -> Tuple[pd.DataFrame, Dict]:
    """(a) :func:`~.experiments.consistency_by_layer` of each pair ``(a, b)`` of ``nets`` at the
    ``layers`` ``{name: module path}`` (g seeded with a). Returns ``(table, rows)``: one table row
    per (pair, layer) with the held-out shares; ``rows[(a, b, name)]`` the full row (``result``,
    ``eval`` decomposition, ...)."""
    table, rows = [], {}
    for sa, sb in pairs:
        out = consistency_by_layer(nets[sa].model, nets[sb].model, fit_images, eval_images, list(layers.values()),
                                   seed=sa, progress=False, **fit_kw)
        for name, row in zip(layers, out):
            rows[(sa, sb, name)] = row
            table.append({"pair": f"{sa}->{sb}", "layer": name,
                          **{k: v for k, v in row.items() if k.startswith("share_")}})
    return pd.DataFrame(table), rows


def pair_fg_ratios_mean(rows: Dict, pairs: Sequence[Tuple[int, int]], layer: str, fg_mask: torch.Tensor) -> pd.Series:
    """Mean over ``pairs`` of :func:`~.experiments.part_fg_ratios` of the held-out decomposition at
    ``layer`` (``rows`` from :func:`stability_study`): x_B, each order, the residual."""
    return pd.DataFrame([part_fg_ratios(rows[(sa, sb, layer)]["eval"], fg_mask) for sa, sb in pairs]).mean()


# ----------------------------------------------------------------------------- (b) diagnosis
def diagnosis_study(strong: Dict[int, Any], weak: Dict[int, Any], seeds: Sequence[int], fit_images: torch.Tensor,
                    eval_images: torch.Tensor, strong_tap: str, weak_tap: str, fg_mask: torch.Tensor,
                    **fit_kw) -> Tuple[pd.DataFrame, Dict[int, Any]]:
    """(b) :func:`~.experiments.diagnose` of the strong and weak net of each seed (g seeded with it).
    Returns ``(table, diagnoses)``: one row per seed (index) with the blind-spot and unreliable
    residual shares, their order-0 shares and the foreground ratios (:func:`~.experiments.
    foreground_share`) of the blind spots, the unreliable part and both features."""
    diag, rows = {}, []
    for s in seeds:
        d = diagnose(strong[s].model, weak[s].model, fit_images, eval_images, strong_tap, weak_tap, seed=s,
                     progress=False, **fit_kw)
        diag[s] = d
        fg = {nm: foreground_share(energy_maps(part, ref), fg_mask)["ratio"]
              for nm, part, ref in [("blind", d.blind_eval.residual, d.feat_strong),
                                    ("unreliable", d.unreliable_eval.residual, d.feat_weak),
                                    ("x_strong", d.feat_strong, d.feat_strong), ("x_weak", d.feat_weak, d.feat_weak)]}
        rows.append({"seed": s, "blind spot share": d.blind_share, "unreliable share": d.unreliable_share,
                     "blind order 0": d.blind_eval.shares[0], "unreliable order 0": d.unreliable_eval.shares[0],
                     **{f"fg ratio {k}": v for k, v in fg.items()}})
    return pd.DataFrame(rows).set_index("seed"), diag


# ----------------------------------------------------------------------------- (c) refinement
def refinement_variants(orders: int) -> List[str]:
    """The features B is fine-tuned on: its own (the control), g(x_A) with all orders, order 0."""
    return ["own feature (control)", f"orders 0-{orders - 1}", "order 0"]


def _refine_setting(a: nn.Module, b: nn.Module, layer_a: str, layer_b: str, result, train, test,
                    variants: Sequence[str], *, epochs: int, seed: int, num_threads: Optional[int]) -> Dict[str, float]:
    feats = {}
    for split, imgs in (("train", train.images), ("test", test.images)):
        xa = tap_features(a, imgs, [layer_a])[layer_a]
        dec = result.apply(xa)
        feats[split] = {variants[0]: tap_features(b, imgs, [layer_b])[layer_b], variants[1]: dec.g,
                        variants[2]: dec.low_order(0)}
    return refine(b, layer_b, train.images, train.labels, feats["train"], test.images, test.labels, feats["test"],
                  epochs=epochs, seed=seed, num_threads=num_threads, progress=False)


def refinement_study(strong: Dict[int, Any], weak: Dict[int, Any], seeds: Sequence[int],
                     pairs: Sequence[Tuple[int, int]], diagnoses: Dict[int, Any], stability: Dict, train, test, *,
                     strong_tap: str, weak_tap: str, pair_layer: str, orders: int = 3, epochs: int = 5,
                     num_threads: Optional[int] = None) -> pd.DataFrame:
    """(c) For each seed s (index i): refine the weak net with the strong one (A = strong s at
    ``strong_tap``, B = weak s at ``weak_tap``, the "unreliable" fit of ``diagnoses[s]``) and, while
    i < len(pairs), the seed pair i (A, B = strong nets at ``strong_tap``, the fit of
    ``stability[(a, b, pair_layer)]``). B's layers above the tap are fine-tuned on each of
    :func:`refinement_variants` (fine-tuning seeded with s, ``epochs``) and tested.

    Returns a tidy table, one row per (experiment, seed, variant): columns ``experiment``,
    ``seed``, ``variant`` (``"as trained"`` and the variants) and ``accuracy`` (test set)."""
    variants = refinement_variants(orders)
    rows = []
    for i, s in enumerate(seeds):
        settings = [("strong -> weak", strong[s].model, weak[s].model, strong_tap, weak_tap, diagnoses[s].unreliable)]
        if i < len(pairs):
            sa, sb = pairs[i]
            settings.append(("seed pair", strong[sa].model, strong[sb].model, strong_tap, strong_tap,
                             stability[(sa, sb, pair_layer)]["result"]))
        for name, a, b, la, lb, res in settings:
            acc = _refine_setting(a, b, la, lb, res, train, test, variants, epochs=epochs, seed=s,
                                  num_threads=num_threads)
            rows += [{"experiment": name, "seed": s, "variant": v, "accuracy": x}
                     for v, x in [("as trained", acc["before"])] + [(v, acc[v]) for v in variants]]
    return pd.DataFrame(rows)


def _verdict(m, se: float) -> str:
    if m["mean"] > 0 and (m["n"] > 1 and m["mean"] > 2 * se):
        return "improved"
    if m["mean"] < 0 and (m["n"] > 1 and -m["mean"] > 2 * se):
        return "lowered"
    return "did not clearly change"


def refinement_gains(wide: pd.DataFrame, variants: Sequence[str]) -> pd.DataFrame:
    """Accuracy gains of refinement over seeds, from ``wide`` = the :func:`refinement_study` table
    pivoted to (experiment, seed) x variant. One row per (experiment, tag), tags ``gain_all_orders``
    and ``gain_order0`` (the variant minus the own-feature control) and ``control_gain`` (the control
    minus B as trained); columns ``experiment``, ``key``, ``tag``, ``variant``, ``baseline``,
    ``mean``, ``sd``, ``n``, ``se`` (sd / sqrt n; NaN for one seed), ``verdict`` ("improved" /
    "lowered" beyond two standard errors, else "did not clearly change") and ``per_seed``."""
    rows = []
    for exp, key in REFINE_EXPERIMENTS:
        sub = wide.loc[exp]
        for v, base, tag in [(variants[1], variants[0], "gain_all_orders"), (variants[2], variants[0], "gain_order0"),
                             (variants[0], "as trained", "control_gain")]:
            d = sub[v] - sub[base]
            m = mean_sd(d)
            se = m["sd"] / math.sqrt(m["n"]) if m["n"] > 1 else float("nan")
            rows.append({"experiment": exp, "key": key, "tag": tag, "variant": v, "baseline": base, "mean": m["mean"],
                         "sd": m["sd"], "n": m["n"], "se": se, "verdict": _verdict(m, se), "per_seed": list(d)})
    return pd.DataFrame(rows)
