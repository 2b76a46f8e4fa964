"""The studies of notebook 04 (information discarding, ICML 2019 / ICML 2022): the multi-seed protocols.

The methods live in :mod:`.method` (pixels, layers, reconstruction) and :mod:`.text` (words); this
module runs them the way the notebook reports them:

* :func:`train_image_nets` -- the image networks: several VGG-like seeds (the first with epoch
  checkpoints), one AlexNet- and one ResNet-like net, optionally the torchvision nets.
* :func:`pixel_study` -- pixel-wise information of several networks on the same images.
* :func:`seed_study` -- layer tables of several trained nets, their mean +- sd over seeds and the
  per-seed checks (gap rising with depth, entropy never decreasing); :func:`network_tables` one
  table per architecture; :func:`epoch_study` the first net at several training epochs.
* :func:`text_study` -- word-level information of text classifiers trained with several seeds: a
  tidy table, one row per (model, seed, layer); :func:`text_summary` its mean +- sd over seeds.
* :func:`reading` -- the verdicts of the papers' claims on this run, with the numbers they used
  (:func:`verdict_text` words them).

Protocol choices are ours (see the notebook's reproduction notes): the training recipe of the image
nets (Adam lr 2e-3, batch 64, flips, cosine schedule), 3-layer text classifiers trained at lr 2e-3,
r_l of the words from the first 256 training sentences, AUC of -sigma for key words vs fillers.
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import pandas as pd
import torch

from ...core.train import fit
from .method import across_seeds, layer_summary, pixel_information, tap_layers
from .text import auc_per_layer, selection_depth, text_information

__all__ = ["train_image_nets", "pixel_study", "seed_study", "network_tables", "epoch_study", "text_study",
           "text_summary", "reading", "verdict_text", "IMAGE_RECIPE", "TORCHVISION_NETS", "TEXT_MODELS",
           "TEXT_LAYERS"]

#: training recipe of the image networks (ours; the papers use pretrained ImageNet nets)
IMAGE_RECIPE = dict(lr=2e-3, batch_size=64, augment="flip", schedule="cosine", progress=False)
#: the papers' architectures, trained here from random weights in the ``paper`` profile
TORCHVISION_NETS = ("vgg16", "vgg19", "alexnet")
TEXT_MODELS = ("text_cnn", "text_lstm", "text_transformer")
TEXT_LAYERS = ("layers.0", "layers.1", "layers.2", "classifier")


# ------------------------------------------------------------------------------------ images
def train_image_nets(train_set, val_set, *, seeds: int = 1, seed: int = 0, epochs: int = 10,
                     others: Sequence[str] = ("alexnet_small", "resnet_small"), torchvision: bool = False,
                     **recipe) -> Dict[Tuple[str, int], Any]:
    """Train (or load from the cache) the image networks; ``{(architecture, k): TrainResult}``.

    ``seeds`` VGG-like nets with seeds ``seed .. seed + seeds - 1`` (k = 0 .. seeds - 1; the first
    saves its epoch checkpoints), then one net of each of ``others`` and, with ``torchvision``, of
    :data:`TORCHVISION_NETS` (seed ``seed``, k = 0). ``recipe`` overrides :data:`IMAGE_RECIPE`.
    """
    kw = dict(IMAGE_RECIPE, epochs=epochs, **recipe)
    nets = {}
    for k in range(seeds):
        nets[("vgg_small", k)] = fit("vgg_small", train_set, val_set, seed=seed + k, checkpoints=(k == 0), **kw)
    for name in others:
        nets[(name, 0)] = fit(name, train_set, val_set, seed=seed, **kw)
    if torchvision:
        for name in TORCHVISION_NETS:
            nets[(name, 0)] = fit(name, train_set, val_set, seed=seed,
                                  model_config={"num_classes": len(train_set.class_names)}, **kw)
    return nets


def pixel_study(nets: Dict[Hashable, Any], keys: Sequence[Hashable], images: torch.Tensor, *,
                layers: Optional[Sequence[str]] = None, size: int = 32, **img_kw) -> Dict[Hashable, Dict]:
    """:func:`~.method.pixel_information` of ``nets[key].model`` for each key, in order, on the same
    ``images``: ``{key: {layer: PixelInfo}}``. ``layers``: the same layers for every net (default:
    each net's own :func:`~.method.tap_layers` at ``size`` px). ``img_kw`` go to pixel_information."""
    out = {}
    for key in keys:
        model = nets[key].model
        out[key] = pixel_information(model, images, list(layers) if layers is not None else tap_layers(model, size),
                                     **img_kw)
    return out


def seed_study(px: Dict[Hashable, Dict], keys: Sequence[Hashable], fg_mask: torch.Tensor) -> Dict[str, Any]:
    """Layer tables of several trained nets of one architecture (``px[key]`` for each key, e.g. the
    VGG-like seeds) and the checks over them. Returns ``tables`` (one :func:`~.method.layer_summary`
    per net), ``summary`` (:func:`~.method.across_seeds`), ``gap_first`` / ``gap_last`` (per net,
    background - foreground at the first / last layer), ``gap_rises`` / ``gap_rises_fraction``
    (number / share of nets whose gap is larger at the last layer) and ``entropy_monotone_fraction`` (share of nets whose mean
    entropy never decreases with depth)."""
    tables = [layer_summary(px[k], fg_mask) for k in keys]
    gap_first = [t["gap"].iloc[0] for t in tables]
    gap_last = [t["gap"].iloc[-1] for t in tables]
    rises = sum(l > f for f, l in zip(gap_first, gap_last))
    return {"tables": tables, "summary": across_seeds(tables), "gap_first": gap_first, "gap_last": gap_last,
            "gap_rises": rises, "gap_rises_fraction": rises / len(tables),
            "entropy_monotone_fraction": sum(bool((t["entropy"].diff().dropna() >= 0).all())
                                             for t in tables) / len(tables)}


def network_tables(px: Dict[Hashable, Dict], keys: Sequence[Tuple[str, int]],
                   fg_mask: torch.Tensor) -> Dict[str, pd.DataFrame]:
    """``{architecture: layer_summary}`` for keys ``(architecture, k)`` (one net per architecture)."""
    return {f"{n}": layer_summary(px[(n, k)], fg_mask) for n, k in keys}


def epoch_study(run, images: torch.Tensor, layers: Sequence[str], fg_mask: torch.Tensor,
                epochs: Sequence[int], **img_kw) -> Dict[int, pd.DataFrame]:
    """The net of ``run`` (trained with checkpoints) at each of ``epochs`` that it saved (0 = its
    initialisation): ``{epoch: layer_summary of its pixel_information}``."""
    shown = [e for e in epochs if e < len(run.epoch_checkpoints)]
    return {e: layer_summary(pixel_information(run.load_epoch(e), images, layers, **img_kw), fg_mask)
            for e in shown}


# ------------------------------------------------------------------------------------ words
def text_study(train, val, ids: torch.Tensor, mask: torch.Tensor, is_key: torch.Tensor, *,
               models: Sequence[str] = TEXT_MODELS, layers: Sequence[str] = TEXT_LAYERS, seeds: int = 1,
               seed: int = 0, epochs: int = 6, fit_lr: float = 2e-3, num_layers: int = 3, n_reference: int = 256,
               **word_kw) -> Tuple[pd.DataFrame, Dict[Tuple[str, int], Any]]:
    """Train each text classifier of ``models`` with seeds ``seed .. seed + seeds - 1`` (cached,
    ``num_layers`` token layers, ``epochs`` at lr ``fit_lr``) and compute the word-level information
    of the sentences ``ids`` (``mask``) at ``layers`` (:func:`~.text.text_information`, noise seed
    ``seed``, r_l from the first ``n_reference`` training sentences; ``word_kw`` go to it) and the
    key-word AUC of -sigma (``is_key``).

    Returns ``(table, words)``: ``table`` has one row per (model, seed, layer) with columns
    ``model``, ``seed``, ``k`` (0 .. seeds - 1), ``layer``, ``auc`` and ``val_acc`` (of that net);
    ``words[(model, k)]`` is the :class:`~.text.WordInfo`.
    """
    reference = (train.ids[:n_reference], train.mask[:n_reference])
    rows, words = [], {}
    for name in models:
        for k in range(seeds):
            run = fit(name, train, val, model_config={"num_layers": num_layers}, epochs=epochs, lr=fit_lr,
                      seed=seed + k, progress=False)
            words[(name, k)] = text_information(run.model, ids, mask, list(layers), seed=seed, reference=reference,
                                                **word_kw)
            aucs = auc_per_layer(words[(name, k)], is_key)
            rows += [{"model": name, "seed": seed + k, "k": k, "layer": layer, "auc": a, "val_acc": run.val_acc}
                     for layer, a in zip(layers, aucs)]
    return pd.DataFrame(rows, columns=["model", "seed", "k", "layer", "auc", "val_acc"]), words


def text_summary(table: pd.DataFrame, layers: Sequence[str] = TEXT_LAYERS,
                 threshold: float = 0.75) -> Dict[str, Any]:
    """Mean and sd over seeds of a :func:`text_study` table: ``auc_mean`` and ``auc_sd`` (models x
    ``layers``), ``val_acc`` (mean per model) and ``selection_layer`` (per model, the first layer whose
    mean AUC reaches ``threshold``, :func:`~.text.selection_depth`)."""
    layers = list(layers)
    aucs, accs = {}, {}
    for (name, k), g in table.groupby(["model", "k"], sort=False):
        aucs[(name, k)] = list(g.set_index("layer").loc[layers, "auc"])
        accs.setdefault(name, []).append(g["val_acc"].iloc[0])
    auc = pd.DataFrame(aucs, index=layers).T
    auc_mean, auc_sd = auc.groupby(level=0).mean(), auc.groupby(level=0).std()
    return {"auc_mean": auc_mean, "auc_sd": auc_sd,
            "val_acc": pd.Series({n: float(pd.Series(a).mean()) for n, a in accs.items()}),
            "selection_layer": pd.Series({n: selection_depth(layers, list(auc_mean.loc[n]), threshold)
                                          for n in auc_mean.index})}


# ------------------------------------------------------------------------------------ reading
def verdict_text(holds: bool) -> str:
    """The wording of a checked claim: ``**holds**`` or ``**does not hold**``."""
    return "**holds**" if holds else "**does not hold**"


def reading(summary: pd.DataFrame, epochs: Dict[int, pd.DataFrame], ru_table: pd.DataFrame,
            auc_mean: pd.DataFrame, minilm_auc: pd.Series, *, first_layer: str = "layers.0",
            learned_share: float = 0.5, minilm_threshold: float = 0.5) -> Dict[str, Dict[str, Any]]:
    """The papers' claims checked on this run; per claim ``holds`` (bool) and the numbers it used.

    * ``gap`` (ICML22): the background - foreground gap of ``summary`` (:func:`seed_study`) is larger
      at the last layer than at the first, the first is above -1 and the last positive.
    * ``learned``: ``untrained`` is True when the last-layer gap at the first of ``epochs``
      (:func:`epoch_study`) exceeds ``learned_share`` x the gap at the last epoch (then the gap comes
      from the architecture and the images, not from training).
    * ``entropy``: the mean entropy is higher at the last layer than at the first.
    * ``ru``: the reconstruction uncertainty (``ru_table`` entropy) is higher at the last layer.
    * ``words`` (ICML19): the Transformer's key-word AUC at ``first_layer`` beats the CNN's and LSTM's.
    * ``minilm``: every MiniLM layer keeps the planted adjective better than chance
      (AUC > ``minilm_threshold``).
    """
    g, ent, ru = summary["gap"], summary["entropy"], ru_table["entropy"]
    e = list(epochs)
    e0, ef = epochs[e[0]]["gap"].iloc[-1], epochs[e[-1]]["gap"].iloc[-1]
    tr = auc_mean.loc["text_transformer", first_layer]
    other = max(auc_mean.loc["text_cnn", first_layer], auc_mean.loc["text_lstm", first_layer])
    return {
        "gap": {"holds": bool(g.iloc[-1] > g.iloc[0] > -1 and g.iloc[-1] > 0), "first": g.iloc[0], "last": g.iloc[-1]},
        "learned": {"untrained": bool(e0 > learned_share * ef), "epoch_first": e[0], "epoch_last": e[-1],
                    "gap_first_epoch": e0, "gap_last_epoch": ef, "share": learned_share},
        "entropy": {"holds": bool(ent.iloc[-1] > ent.iloc[0]), "first": ent.iloc[0], "last": ent.iloc[-1]},
        "ru": {"holds": bool(ru.iloc[-1] > ru.iloc[0]), "first": ru.iloc[0], "last": ru.iloc[-1]},
        "words": {"holds": bool(tr > other), "transformer": tr, "best_other": other, "layer": first_layer},
        "minilm": {"holds": bool((minilm_auc > minilm_threshold).all()), "min": float(minilm_auc.min()),
                   "threshold": minilm_threshold},
    }
