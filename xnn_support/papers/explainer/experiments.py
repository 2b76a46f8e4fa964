"""The protocol of notebook 08 (explainer networks): data, the performer (through ``core.train.fit``, cached),
the explainers (cached too), seeds; each study returns tidy pandas DataFrames; the notebook only calls, plots and
records.

* :func:`performer_seed` -- spec 7 (A): ``creatures`` (bird, quadruped, wheels + negatives, clutter, 64 px),
  the zoo's ``vgg_small`` at half width as the performer; an explainer of ``features.16`` (the penultimate
  block's output, 16x16x32) reconstructing ``features.23`` (the last block's output, 8x8x64, pre-pool)
  per filter-loss mode, trained on the performer's training images; on held-out images: p, reconstruction error,
  the performer's accuracy with the reconstruction in place of its features, and location instability / part IoU
  of the explainer's interpretable filters, its ordinary filters and the performer's own filters at both layers.
* :func:`planted_seed` -- spec 7 (B): the same F_l, planted targets with part share a (:mod:`.planted`), a
  linear decoder; p per a, the share of planted part / texture variance carried by each track, part IoU of z_int.

Deviations: synthetic 64 px creatures and a small VGG-like performer trained from scratch instead of ILSVRC / VOC
/ CUB and ImageNet VGG-16 / AlexNet (half width, for CPU time); D = C_l channels per track; a few epochs.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import pandas as pd
import torch

from ...core.train import fit
from ...data import creatures
from . import metrics as M
from .method import cache_features, fit_explainer_net
from .planted import planted_blocks, planted_target
from ...core.utils import per_seed, summarise  # noqa: F401 (re-exported)

__all__ = ["PERFORMER", "CATEGORIES", "LAYER", "TARGET", "LOW_LAYER", "EXPLAINER", "make_data", "train_performer", "performer_seed",
           "planted_seed", "filters_table", "summarise", "per_seed"]

PERFORMER: Dict[str, Any] = {"width": 0.5}   # vgg_small at half width: 8-M-16-16-M-32-32-M-64-64
CATEGORIES = ("bird", "quadruped", "wheels")
LAYER = "features.16"     # explained: output of the penultimate block (ReLU, 16x16x32)
TARGET = "features.23"    # reconstructed: output of the last block (ReLU, 8x8x64), just before the global pool
LOW_LAYER = "features.9"  # a lower explained layer for "p per layer" (ReLU, 32x32x16)
#: explainer settings shared by every study (p is comparable only between identical settings, spec 2.3)
EXPLAINER: Dict[str, Any] = {"channels": None, "lr": 1e-3, "batch_size": 64, "lambda_p": 0.1}


def make_data(n: int, seed: int, *, size: int = 64, test: float = 0.25) -> Dict[str, Any]:
    """Creatures (spec 7 A) split at random into train / test; the indices are kept for the planted blocks."""
    ds = creatures(n, size, categories=CATEGORIES, negatives=0.2, background="clutter", object_centric=True,
                   seed=seed)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    k = int(round(n * test))
    te, tr = torch.sort(perm[:k]).values, torch.sort(perm[k:]).values
    return dict(ds=ds, train=ds.subset(tr), test=ds.subset(te), train_idx=tr, test_idx=te)


def train_performer(data: Dict[str, Any], seed: int, *, epochs: int, lr: float = 3e-3):
    """The performer (cached by the shared trainer); returns (model in eval mode, held-out accuracy)."""
    res = fit("vgg_small", data["train"], data["test"], model_config=dict(PERFORMER, num_classes=len(CATEGORIES) + 1),
              epochs=epochs, lr=lr, schedule="cosine", augment="flip", seed=seed, num_threads=1, progress=False)
    return res.model.eval(), float(res.val_acc)


def filters_table(net, performer, test, *, top_n: int = 100) -> pd.DataFrame:
    """Instability and part IoU of the explainer's two tracks and of the performer's filters at the explained
    and the target layer (one row each), on the held-out positives."""
    rows = []
    for who, model, layer in (("explainer z_int", net.pipeline, "explainer.norm_int"),
                              ("explainer z_ord", net.pipeline, "explainer.norm_ord"),
                              (f"performer {net.layer}", performer, net.layer),
                              (f"performer {net.targets[0]}", performer, net.targets[0])):
        rows.append(dict(filters_of=who, **M.filter_interpretability(model, layer, test, top_n=top_n)))
    return pd.DataFrame(rows)


def performer_seed(seed: int, *, n: int, epochs: int, ex_epochs: int, modes: Sequence[str] = ("code",),
                   layers: Sequence[str] = (), baseline: bool = True, top_n: int = 100,
                   lambda_p: Optional[float] = None, progress: bool = False) -> Dict[str, Any]:
    """One seed of spec 7 (A) (module docstring): an explainer of :data:`LAYER` per filter-loss mode in ``modes``,
    with ``baseline`` the same encoder-decoder without interpretability (mode ``"ordinary"``: no mask, no filter
    loss, no prior: what reconstruction alone costs), and one (``code`` mode) of each further layer in ``layers``
    (e.g. :data:`LOW_LAYER`: p per layer), every one reconstructing :data:`TARGET`. Returns ``nets`` (one row per explainer), ``filters`` (per explainer and filter
    set), the performer, the data and the explainers ((layer, mode) -> ExplainerNet)."""
    data = make_data(n, seed)
    performer, acc = train_performer(data, seed, epochs=epochs)
    train, test = data["train"], data["test"]
    feats = cache_features(performer, train.images, sorted({LAYER, TARGET, *layers}))
    test_t = cache_features(performer, test.images, [TARGET])
    kw = dict(EXPLAINER, **({} if lambda_p is None else {"lambda_p": lambda_p}))
    rows, frows, nets = [], [], {}
    settings = [(LAYER, m) for m in modes if m != "ordinary"] + [(LAYER, "ordinary")] * bool(baseline)
    for layer, mode in settings + [(lay, "code") for lay in layers if lay != LAYER]:
        net = fit_explainer_net(performer, train.images, layer, TARGET, epochs=ex_epochs, seed=seed, mode=mode,
                                features=feats, progress=progress, num_threads=1,
                                **dict(kw, lambda_p=0.0) if mode == "ordinary" else kw)
        err = M.reconstruction_error(net.reconstruct(test.images), {TARGET: test_t[TARGET]})[TARGET]
        rep = M.replacement_accuracy(net, test.images, test.labels)
        rows.append(dict(seed=seed, layer=layer, mode=mode, p=net.p, recon_error=err, performer_acc=acc, **rep,
                         acc_drop=rep["acc"] - rep["acc_replaced"]))
        ft = filters_table(net, performer, test, top_n=top_n)
        frows += [dict(seed=seed, layer=layer, mode=mode, **r) for r in ft.to_dict("records")]
        nets[(layer, mode)] = net
    return dict(nets=pd.DataFrame(rows), filters=pd.DataFrame(frows), performer=performer, data=data,
                explainers=nets)


def planted_seed(run: Dict[str, Any], levels: Sequence[float], *, ex_epochs: int, mode: str = "code",
                 lambda_p: Optional[float] = None, progress: bool = False) -> pd.DataFrame:
    """Spec 7 (B) on the performer and data of a :func:`performer_seed` result: one row per part share a (p,
    held-out reconstruction error, the tracks' shares of planted P / T variance, part IoU of z_int and z_ord)."""
    data, performer = run["data"], run["performer"]
    seed = int(data["ds"].spec["seed"])
    train, test = data["train"], data["test"]
    grid = int(next(iter(run["explainers"].values())).explainer.out_shapes[TARGET][-1])
    blocks = planted_blocks(data["ds"], grid, seed=seed)
    b_tr, b_te = blocks.subset(data["train_idx"]), blocks.subset(data["test_idx"])
    feats = cache_features(performer, train.images, [LAYER])
    kw = dict(EXPLAINER, **({} if lambda_p is None else {"lambda_p": lambda_p}))
    pm = test.part_masks[:, blocks.parts]
    rows = []
    for a in levels:
        net = fit_explainer_net(performer, train.images, LAYER, planted_target(b_tr, a), epochs=ex_epochs, seed=seed,
                                mode=mode, decoder="linear", features=feats, progress=progress, num_threads=1, **kw)
        err = M.reconstruction_error(net.reconstruct(test.images), {"target": planted_target(b_te, a)})["target"]
        sh = M.block_shares(net, test.images, b_te, a)
        enc = net.encode(test.images)
        iou = {f"iou_{k}": float(M.part_iou(z, pm).max(1).values.mean()) for k, z in (("int", enc.z_int), ("ord", enc.z_ord))}
        rows.append(dict(seed=seed, a=float(a), p=net.p, recon_error=err, **sh, **iou))
    return pd.DataFrame(rows)


