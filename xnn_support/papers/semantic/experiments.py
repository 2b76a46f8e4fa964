"""Paper 03 on cartoon faces: concept models, performers, the pasted/masked bias test, and the
seed-level experiments of notebook 03 (the method itself is in :mod:`xnn_support.semantic`).

Citations: Chen, Chen, Ren, Huang, Zhang, "Explaining Neural Networks Semantically and
Quantitatively", ICCV 2019 (arXiv 1812.07169); the lipstick / rosy-cheeks example of the lecture
(Zhang, Wang, Zhu, "Examining CNN Representations with respect to Dataset Bias", AAAI 2018).
Not verified by the original authors.

What is reproduced, on :func:`xnn_support.data.concept_faces` (ground truth: binary attributes, a
planted linear "attractive" score, and :func:`~xnn_support.data.edit_faces` to redraw a face with
one attribute toggled):

* concept models f_i: one multi-label CNN with a logit per attribute (:func:`train_concept_model`);
* the performer: a CNN regressing the planted "attractive" score (:func:`train_performer`);
* the explainer of eq. 1 fitted to the performer (:func:`run_attractive`); the recovered weight of
  attribute i is mean_I alpha_i(I) * step_i, with step_i = E[y_i | a_i = 1] - E[y_i | a_i = 0]
  the jump of concept score i when the attribute appears (:func:`recovered_weights`); it is
  compared with the planted weights and with the performer's own intervention effects
  E[y(I with a_i = 1) - y(I with a_i = 0)] (:func:`attribute_effects`, by redrawing faces);
* four explainer variants per seed (:data:`VARIANTS`): default, no prior, and from alpha = 0
  without / with the prior; plus an "oracle" target exactly linear in the concept scores;
* dataset bias (:func:`run_bias`): a lipstick classifier trained where rosy cheeks always
  co-occur with lipstick, and one trained without the bias; the lecture's pasted/masked test
  (:func:`paste_mask`: the lipstick score of the same face as drawn, with cheeks pasted, with
  cheeks masked, i.e. redrawn without them) and the explainer's share of the lipstick score
  carried by the rosy-cheeks concept.

Deviations: CelebA's "attractive" is a human label on photographs; ours is a planted linear score
of 12 drawn attributes (so a ground truth exists), regressed rather than classified so that the
performer's output has a known linear form. The AAAI 2018 paper mined the bias without test images;
here it is exposed with the lecture's paste/mask test and with the ICCV 2019 explainer. Scores are
logit margins of small CNNs, so their scale differs from the lecture's (-16.44 ... +19.77).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from . import method as S
from ...data import concept_faces, edit_faces
from ...core.train import fit
from ...core.utils import device_of, mean_sd_by_key  # noqa: F401  (re-exported: summary over seeds)

__all__ = ["net_config", "train_concept_model", "train_performer", "train_attribute_model",
           "attribute_effects", "paste_mask", "PasteMask", "recovered_weights", "concept_accuracy",
           "run_attractive", "run_bias", "AttractiveRun", "BiasRun", "mean_sd_by_key", "LECTURE_SCORES", "VARIANTS",
           "explain_faces", "concept_steps", "paste_mask_examples"]

#: the lecture's "score of wearing lipstick" (original, pasted cheeks, masked cheeks)
LECTURE_SCORES = {"no_lipstick": (-16.44, -10.27, -12.96), "lipstick": (16.93, 19.77, 12.17)}


def net_config(size: int) -> Dict[str, Any]:
    """The zoo config of the small VGG-like nets used here: 3 (32 px) or 4 (64 px) pools, no
    dropout (a few thousand faces, fast on a CPU). Trained with Adam at a constant lr of 2e-3,
    batch 32: on 2,000 64-px faces, 30 epochs give 0.94-0.97 mean concept accuracy (bushy
    eyebrows and big nose, 1-2 px differences, are learnt last and least reliably); a cosine
    schedule over 30-40 epochs gave 0.94-0.95 (measured, one seed each)."""
    plan = [16, "M", 32, "M", 64, "M", 64] if size <= 48 else [16, "M", 32, "M", 64, "M", 64, "M", 64]
    return {"in_size": int(size), "plan": plan, "dropout": 0.0}


def _bce(out, y):
    return nn.functional.binary_cross_entropy_with_logits(out, y)


def _mse(out, y):
    return nn.functional.mse_loss(out[:, 0], y)


def _attributes_xy(ds):
    return ds.images, ds.attributes


def _target_xy(ds):
    return ds.images, ds.target


def _one_attribute_xy(ds, attribute: str = "lipstick"):
    return ds.images, ds.attributes[:, ds.attribute_names.index(attribute)].long()


def _train(train, val, cfg, *, epochs, lr, batch_size, seed, progress, model, num_threads, **kw):
    config = dict(net_config(int(train.images.shape[-1])) if model == "vgg_small" else {}, **(cfg or {}))
    return fit(model, train, val, model_config=config, epochs=epochs, lr=lr, batch_size=batch_size,
               seed=seed, progress=progress, num_threads=num_threads, **kw)


def train_concept_model(train, val=None, *, epochs: int = 30, lr: float = 2e-3, batch_size: int = 32,
                        seed: int = 0, model: str = "vgg_small", model_config=None, progress: bool = True,
                        num_threads: Optional[int] = 1):
    """One multi-label CNN, a logit per attribute of ``train`` (BCE), through ``train.fit``
    (checkpoint cache). Returns the :class:`~xnn_support.train.TrainResult`."""
    cfg = dict(model_config or {}, num_classes=len(train.attribute_names))
    return _train(train, val, cfg, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                  progress=progress, model=model, num_threads=num_threads, loss_fn=_bce, inputs=_attributes_xy)


def train_performer(train, val=None, *, epochs: int = 30, lr: float = 2e-3, batch_size: int = 32,
                    seed: int = 0, model: str = "vgg_small", model_config=None, progress: bool = True,
                        num_threads: Optional[int] = 1):
    """The performer: a CNN regressing ``train.target`` (one output, MSE)."""
    if train.target is None:
        raise ValueError("train_performer needs a FaceSet with a target")
    cfg = dict(model_config or {}, num_classes=1)
    return _train(train, val, cfg, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                  progress=progress, model=model, num_threads=num_threads, loss_fn=_mse, inputs=_target_xy)


def train_attribute_model(train, val=None, attribute: str = "lipstick", *, epochs: int = 10, lr: float = 2e-3,
                          batch_size: int = 32, seed: int = 0, model: str = "vgg_small", model_config=None,
                          progress: bool = True, num_threads: Optional[int] = 1):
    """A two-class CNN for one attribute (cross-entropy); its score is the logit margin."""
    if attribute not in train.attribute_names:
        raise ValueError(f"unknown attribute {attribute!r}; this set has {train.attribute_names}")
    cfg = dict(model_config or {}, num_classes=2)
    return _train(train, val, cfg, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                  progress=progress, model=model, num_threads=num_threads,
                  inputs=functools.partial(_one_attribute_xy, attribute=attribute))


# ----------------------------------------------------------------------------- ground-truth probes
def _score(model, images, output, batch_size):
    return S.target_scores(model, images, output=output, batch_size=batch_size)


def attribute_effects(model: nn.Module, ds, *, attributes: Optional[Sequence[str]] = None,
                      output: Union[int, str] = 0, batch_size: int = 256) -> torch.Tensor:
    """The performer's intervention effect of each attribute, (N, A): the score of each face
    redrawn with the attribute present minus redrawn without it (:func:`edit_faces`)."""
    names = list(attributes or ds.attribute_names)
    cols = []
    for a in names:
        on = edit_faces(ds, None, set={a: 1}).images
        off = edit_faces(ds, None, set={a: 0}).images
        cols.append(_score(model, on, output, batch_size) - _score(model, off, output, batch_size))
    return torch.stack(cols, 1)


@dataclass
class PasteMask:
    """Scores of the same faces as drawn, with ``attribute`` pasted and with it masked; ``group``
    (N,) bool splits the faces (e.g. wearing lipstick or not)."""
    original: torch.Tensor
    pasted: torch.Tensor
    masked: torch.Tensor
    group: torch.Tensor
    attribute: str
    group_name: str

    def table(self) -> Dict[str, Dict[str, float]]:
        """Mean score per group: {"with <group>": {original, pasted, masked, n}, "without ...": ...}."""
        out = {}
        for label, m in ((f"with {self.group_name}", self.group), (f"without {self.group_name}", ~self.group)):
            k = int(m.sum())
            out[label] = {"original": float(self.original[m].mean()) if k else float("nan"),
                          "pasted": float(self.pasted[m].mean()) if k else float("nan"),
                          "masked": float(self.masked[m].mean()) if k else float("nan"), "n": k}
        return out

    @property
    def effect(self) -> float:
        """Mean score change from masking to pasting the attribute, over all faces."""
        return float((self.pasted - self.masked).mean())


def paste_mask(model: nn.Module, ds, attribute: str = "rosy_cheeks", *, group: str = "lipstick",
               output: Union[int, str] = "margin", batch_size: int = 256) -> PasteMask:
    """The lecture's test: the model's score for each face of ``ds`` as drawn, redrawn with
    ``attribute`` (pasted), and redrawn without it (masked)."""
    for a in (attribute, group):
        if a not in ds.attribute_names:
            raise ValueError(f"unknown attribute {a!r}; this set has {ds.attribute_names}")
    return PasteMask(original=_score(model, ds.images, output, batch_size),
                     pasted=_score(model, edit_faces(ds, None, set={attribute: 1}).images, output, batch_size),
                     masked=_score(model, edit_faces(ds, None, set={attribute: 0}).images, output, batch_size),
                     group=ds.attributes[:, ds.attribute_names.index(group)] > 0.5, attribute=attribute,
                     group_name=group)


def concept_steps(concepts: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """step_i = E[y_i | a_i = 1] - E[y_i | a_i = 0] for each concept column i, (C,)."""
    on = attributes > 0.5
    s1 = (concepts * on).sum(0) / on.sum(0).clamp_min(1)
    s0 = (concepts * ~on).sum(0) / (~on).sum(0).clamp_min(1)
    return s1 - s0


def recovered_weights(explanation: "S.Explanation", attributes: torch.Tensor) -> torch.Tensor:
    """The explainer's weight per attribute, mean_I alpha_i(I) * step_i, (C,) (target units per
    attribute switched on), comparable with the planted weights."""
    return explanation.alpha.mean(0) * concept_steps(explanation.concepts, attributes)


def concept_accuracy(concepts: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Per-concept accuracy of signed scores (> 0 means present), (C,)."""
    return ((concepts > 0) == (attributes > 0.5)).float().mean(0)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    d = float(a.norm() * b.norm())
    return float((a * b).sum()) / d if d > 0 else float("nan")


# ----------------------------------------------------------------------------- the experiments
#: explainer variants fitted per seed (metric-name suffix -> fit_explainer arguments): the default
#: (least-squares start + prior), without the prior, and learnt from alpha = 0 without / with it
VARIANTS = {"": {}, "_no_prior": {"prior": None}, "_scratch": {"init": None, "prior": None},
            "_scratch_prior": {"init": None}}

@dataclass
class AttractiveRun:
    """One seed of the "attractive" experiment: ``metrics`` (flat dict of numbers), the test
    ``explanation`` of the performer (default explainer), ``explanations`` of every variant in
    :data:`VARIANTS` (keyed by suffix), per-attribute vectors, the models and the default explainer."""
    metrics: Dict[str, float]
    explanation: Any
    explanations: Dict[str, Any]
    test: Any
    vectors: Dict[str, torch.Tensor] = field(default_factory=dict)
    models: Dict[str, nn.Module] = field(default_factory=dict)
    explainer: Any = None


def run_attractive(seed: int = 0, *, size: int = 64, n_train: int = 2000, n_test: int = 500,
                   net_epochs: int = 30, explainer_epochs: int = 20, n_effect: int = 200,
                   explainer_kw: Optional[Dict[str, Any]] = None, progress: bool = True,
                   num_threads: Optional[int] = 1) -> AttractiveRun:
    """Concept model + performer + explainer for one seed; metrics on held-out faces.

    Metrics: ``concept_acc`` (mean over attributes), ``performer_r2`` (vs the planted target),
    ``performer_effect_err`` (its intervention effects vs the planted weights); per explainer
    variant (suffix from :data:`VARIANTS`): ``fidelity`` (R^2 of eq. 1 vs the performer),
    ``unexplained_share``, ``eff_concepts`` (concentration), ``planted_err`` / ``effect_err``
    (relative L2 error of the recovered weights vs the planted weights / the performer's effects),
    plus ``planted_corr`` / ``effect_corr`` for the default; ``oracle_err`` / ``oracle_fidelity`` /
    ``oracle_alpha_sd``: the explainer alone, on a target set to b* + sum_i w*_i y_i exactly.
    ``num_threads``: torch CPU threads for everything here (1: fastest on a shared CPU).
    """
    with S.torch_threads(num_threads):
        return _run_attractive(seed, size=size, n_train=n_train, n_test=n_test, net_epochs=net_epochs,
                               explainer_epochs=explainer_epochs, n_effect=n_effect,
                               explainer_kw=explainer_kw, progress=progress)


def _run_attractive(seed, *, size, n_train, n_test, net_epochs, explainer_epochs, n_effect, explainer_kw,
                    progress) -> AttractiveRun:
    kw = dict(explainer_kw or {})
    train = concept_faces(n_train, size, seed=seed)
    test = concept_faces(n_test, size, seed=10_000 + seed)
    cm = train_concept_model(train, epochs=net_epochs, seed=seed, progress=progress).model
    perf = train_performer(train, epochs=net_epochs, seed=seed, progress=progress).model
    kw.setdefault("device", device_of(perf))  # the explainer trains where the performer lives
    ytr, yte = S.concept_scores(cm, train.images), S.concept_scores(cm, test.images)
    ttr, tte = S.target_scores(perf, train.images), S.target_scores(perf, test.images)
    names = list(train.attribute_names)
    planted = train.weights.float()
    sub = test.subset(torch.arange(min(n_effect, n_test)))
    eff = attribute_effects(perf, sub).mean(0)
    m = {"concept_acc": float(concept_accuracy(yte, test.attributes).mean()),
         "performer_r2": S.r2_score(tte, test.target), "performer_effect_err": _rel_err(eff, planted)}
    vec = {"planted": planted, "effects": eff, "concept_acc": concept_accuracy(yte, test.attributes)}
    exps, main = {}, None
    for sfx, variant in VARIANTS.items():
        ex = S.fit_explainer(train.images, ytr, ttr, epochs=explainer_epochs, seed=seed, names=names,
                             progress=progress, **dict(kw, **variant))
        E = exps[sfx] = ex.explain(test.images, yte, tte)
        main = main or ex
        rec = recovered_weights(E, test.attributes)
        m.update({f"fidelity{sfx}": E.fidelity(), f"unexplained_share{sfx}": float(E.unexplained_share().mean()),
                  f"eff_concepts{sfx}": float(E.effective_concepts().mean()),
                  f"planted_err{sfx}": _rel_err(rec, planted), f"effect_err{sfx}": _rel_err(rec, eff)})
        if not sfx:
            m.update(planted_corr=_corr(rec, planted), effect_corr=_corr(rec, eff))
        vec.update({f"recovered{sfx}": rec, f"importance{sfx}": E.importance()})
    # oracle: a target exactly linear in these concept scores with the planted weights per unit of
    # concept score; the explainer alone should return alpha = w* on every face
    b_star = 0.5
    exo = S.fit_explainer(train.images, ytr, b_star + ytr @ planted, epochs=explainer_epochs, seed=seed,
                          names=names, progress=progress, **kw)
    Eo = exo.explain(test.images, yte, b_star + yte @ planted)
    m.update(oracle_err=_rel_err(Eo.alpha.mean(0), planted), oracle_fidelity=Eo.fidelity(),
             oracle_alpha_sd=float(Eo.alpha.std(0).mean() / planted.abs().mean()))
    vec.update(oracle_alpha=Eo.alpha.mean(0), oracle_true=planted)
    return AttractiveRun(metrics=m, explanation=exps[""], explanations=exps, test=test, vectors=vec,
                         models={"concepts": cm, "performer": perf}, explainer=main)


@dataclass
class BiasRun:
    """One seed of the lipstick / rosy-cheeks experiment, for the biased and the unbiased net."""
    metrics: Dict[str, float]
    paste_mask: Dict[str, PasteMask]
    explanations: Dict[str, Any]
    test: Any
    models: Dict[str, nn.Module] = field(default_factory=dict)


def run_bias(seed: int = 0, *, concept_model: nn.Module, size: int = 64, n_train: int = 2000,
             n_test: int = 500, rate: float = 1.0, net_epochs: int = 15, explainer_epochs: int = 20,
             explainer_kw: Optional[Dict[str, Any]] = None, progress: bool = True,
             num_threads: Optional[int] = 1) -> BiasRun:
    """Lipstick classifiers trained with rosy cheeks co-occurring at ``rate`` ("biased") and with
    independent attributes ("unbiased"), probed on independent test faces.

    Per net (``biased``/``unbiased``) the metrics hold the paste/mask table (mean lipstick score of
    faces without / with lipstick: original, pasted, masked), ``cheek_effect`` (mean pasted -
    masked), ``cheek_effect_rel`` (the same over the gap between the mean scores of lipstick and
    no-lipstick faces), ``flip_pasted`` (faces without lipstick called lipstick once cheeks are pasted),
    ``miss_masked`` (lipstick faces missed once cheeks are masked), ``conflict_acc`` (accuracy on
    faces whose cheeks disagree with their lipstick), and the explainer's ``cheek_share`` /
    ``lipstick_share`` (dataset-level importance) and ``cheek_weight`` (recovered weight).
    """
    with S.torch_threads(num_threads):
        return _run_bias(seed, concept_model=concept_model, size=size, n_train=n_train, n_test=n_test,
                         rate=rate, net_epochs=net_epochs, explainer_epochs=explainer_epochs,
                         explainer_kw=explainer_kw, progress=progress)


def _run_bias(seed, *, concept_model, size, n_train, n_test, rate, net_epochs, explainer_epochs,
              explainer_kw, progress) -> BiasRun:
    kw = dict(explainer_kw or {})
    free = concept_faces(n_train, size, seed=seed)
    biased = concept_faces(n_train, size, seed=seed, cooccurrence={("lipstick", "rosy_cheeks"): float(rate)})
    test = concept_faces(n_test, size, seed=20_000 + seed)
    names = list(test.attribute_names)
    kw.setdefault("device", device_of(concept_model))
    li, ci = names.index("lipstick"), names.index("rosy_cheeks")
    ytr, yte = S.concept_scores(concept_model, free.images), S.concept_scores(concept_model, test.images)
    lip, cheek = test.attributes[:, li] > 0.5, test.attributes[:, ci] > 0.5
    m: Dict[str, float] = {}
    pms, exps, models = {}, {}, {}
    for tag, data in (("biased", biased), ("unbiased", free)):
        net = train_attribute_model(data, attribute="lipstick", epochs=net_epochs, seed=seed,
                                    progress=progress).model
        pm = paste_mask(net, test, "rosy_cheeks", group="lipstick", output="margin")
        tab = pm.table()
        for grp, key in (("no_lipstick", "without lipstick"), ("lipstick", "with lipstick")):
            for col in ("original", "pasted", "masked"):
                m[f"{tag}/{grp}/{col}"] = tab[key][col]
        conflict = lip != cheek
        pred = pm.original > 0
        m[f"{tag}/acc"] = float((pred == lip).float().mean())
        m[f"{tag}/conflict_acc"] = (float((pred[conflict] == lip[conflict]).float().mean())
                                    if conflict.any() else float("nan"))
        m[f"{tag}/cheek_effect"] = pm.effect
        both = bool(lip.any() and (~lip).any())
        gap = float(pm.original[lip].mean() - pm.original[~lip].mean()) if both else float("nan")
        m[f"{tag}/cheek_effect_rel"] = pm.effect / gap if gap > 0 else float("nan")
        rate = lambda t: float(t.float().mean()) if t.numel() else float("nan")  # noqa: E731
        m[f"{tag}/flip_pasted"] = rate(pm.pasted[~lip] > 0) - rate(pm.masked[~lip] > 0)
        m[f"{tag}/miss_masked"] = rate(pm.masked[lip] <= 0) - rate(pm.pasted[lip] <= 0)
        ex = S.fit_explainer(free.images, ytr, S.target_scores(net, free.images, output="margin"),
                             epochs=explainer_epochs, seed=seed, names=names, progress=progress, **kw)
        E = ex.explain(test.images, yte, S.target_scores(net, test.images, output="margin"))
        imp = E.importance()
        m[f"{tag}/cheek_share"], m[f"{tag}/lipstick_share"] = float(imp[ci]), float(imp[li])
        m[f"{tag}/cheek_weight"] = float(recovered_weights(E, test.attributes)[ci])
        m[f"{tag}/lipstick_weight"] = float(recovered_weights(E, test.attributes)[li])
        m[f"{tag}/fidelity"] = E.fidelity()
        pms[tag], exps[tag], models[tag] = pm, E, net
    return BiasRun(metrics=m, paste_mask=pms, explanations=exps, test=test, models=models)



def explain_faces(ds, *, concept_model: nn.Module, performer: nn.Module, explainer, output: Union[int, str] = 0,
                  batch_size: int = 256):
    """Eq. 1 on the faces of ``ds``: concept scores of ``concept_model``, the performer's score
    (``output`` as in :func:`~xnn_support.semantic.target_scores`) and the explainer's alpha."""
    y = S.concept_scores(concept_model, ds.images, batch_size=batch_size)
    t = S.target_scores(performer, ds.images, output=output, batch_size=batch_size)
    return explainer.explain(ds.images, y, t, batch_size=batch_size)


def paste_mask_examples(run: BiasRun, *, attribute: str = "rosy_cheeks", group: str = "lipstick"):
    """The lecture's two example faces from a :class:`BiasRun`: the first test face without
    ``group`` and the first with it. Returns (originals, pasted, masked) images (2, 3, S, S),
    scores {net: (2, 3) array of original / pasted / masked} and row titles."""
    names = run.test.attribute_names
    has = run.test.attributes[:, names.index(group)] > 0.5
    if has.all() or (~has).all():
        raise ValueError(f"the test set needs faces with and without {group!r}")
    rows = [int(torch.nonzero(~has)[0]), int(torch.nonzero(has)[0])]
    sub = run.test.subset(rows)
    imgs = (sub.images, edit_faces(sub, None, set={attribute: 1}).images,
            edit_faces(sub, None, set={attribute: 0}).images)
    scores = {tag: torch.stack([pm.original[rows], pm.pasted[rows], pm.masked[rows]], 1).numpy()
              for tag, pm in run.paste_mask.items()}
    return imgs[0], imgs[1], imgs[2], scores, [f"no {group}", group]
