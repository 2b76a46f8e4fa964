"""The protocol of notebook 09 (network transplanting): data, the networks (trained through ``core.train.fit``,
cached), the transplants, seeds; each study returns tidy pandas DataFrames; the notebook only calls, plots and
records.

Per seed (:func:`build_networks`, :func:`transplant_seed`; spec section 7):

1. ``creatures`` (64 px, clutter) of birds, quadrupeds and wheels with 30% negatives (scattered parts); a third of
   the negatives go with the birds (the new category's domain), the rest with quadrupeds and wheels.
2. The generic network: category modules ``f_quadruped``, ``f_wheels`` and the task modules ``g_cls`` ("is this an
   object of the category": one logit) and ``g_seg`` (object mask), trained jointly on quadrupeds, wheels and
   their negatives only.
3. The oracle category module ``f_bird``, trained through the *frozen* ``g_cls`` and ``g_seg`` on the bird training
   images: the ceiling of any transplant onto g.
4. Teachers (bird-specific networks): **planted** ``f' = M o f_bird``, ``g'_t = g_t o M^-1`` with an invertible
   ``M = Q diag(exp(s))``: it computes exactly the oracle and the ideal adapter is ``M^-1``; **realistic** an
   independently trained bird network (its own ``f_T``, ``g_T,cls``, ``g_T,seg``), no known ideal adapter.
5. Transplants of the teacher's category module onto ``g_t`` with every method: distillation from ``N_u``
   unlabelled bird-domain training images (birds and negatives, no annotation: "without training samples"
   means K = 0 annotated, N_u images still seen), direct learning from the first K of them with annotations,
   back-distillation + direct (N_u = max, K annotated). Every method gets the same images (the K annotated are
   a subset of the N_u). Scores on held-out bird-domain images: accuracy (cls) or object IoU (seg); the
   teacher-student gap; for the planted teacher the adapter's recovery error.
6. The generic net after transplanting the bird (both adapters added): outputs of the existing categories on
   held-out images and every tensor of its state, compared bit for bit with before.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ...core.predict import predict
from ...core.train import fit
from ...core.utils import seed_everything, per_seed, summarise  # noqa: F401 (re-exported)
from ...data import creatures
from . import metrics as M
from .method import cached_features, transplant
from .network import (TASKS, CategoryModule, ClassTask, FixedLinear, SegTask, TransplantNet, freeze,
                      make_adapter, perturbed_adapter, planted_map)

__all__ = ["CATEGORIES", "NEW", "DISTILL", "make_data", "build_networks", "transplant_seed", "recovery_effects", "summarise",
           "per_seed", "headline", "JointTasks", "joint_loss", "joint_inputs"]

CATEGORIES = ("bird", "quadruped", "wheels")
NEW = "bird"
DISTILL = ("output_distillation", "back_distillation", "back_target", "gradient")
NET = dict(channels=32, width=16, pools=3)


# ----------------------------------------------------------------------------- data
def make_data(n: int, seed: int, *, size: int = 64, test: float = 0.3) -> Dict[str, Any]:
    """The bird domain (birds + a third of the negatives) and the generic domain (quadrupeds, wheels, the rest),
    each split into train / test (stratified, ``test`` held out); ``pool``: the bird training images in a seeded
    random order (the first N_u are the unlabelled images, the first K of those the annotated ones)."""
    ds = creatures(n, size, categories=CATEGORIES, negatives=0.3, background="clutter", seed=seed)
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 3, (len(ds),), generator=g)
    bird_dom = (ds.labels == 1) | ((ds.labels == 0) & (r == 0))
    bird = ds.subset(torch.nonzero(bird_dom).flatten())
    gen = ds.subset(torch.nonzero(~bird_dom).flatten())
    bird_tr, bird_te = bird.split(test, seed)
    gen_tr, gen_te = gen.split(0.2, seed)
    pool = bird_tr.subset(torch.randperm(len(bird_tr), generator=g))
    return dict(bird_train=bird_tr, bird_test=bird_te, gen_train=gen_tr, gen_test=gen_te, pool=pool)


def object_mask(ds) -> torch.Tensor:
    """(N, S, S) bool: the pixels of the object's parts (empty for negatives, whose parts form no object)."""
    return ds.part_masks.any(1)


def targets(ds, task: str) -> torch.Tensor:
    """Annotations per task: ``labels > 0`` (cls) or the object mask (seg)."""
    return (ds.labels > 0).long() if task == "cls" else object_mask(ds).long()


# ----------------------------------------------------------------------------- training through fit
class JointTasks(nn.Module):
    """``fit``-able view of a :class:`TransplantNet`: ``forward(images, category_index)`` runs every image
    through its category module (index modulo the number of categories) and both task modules; returns the
    class logit and the flattened mask logits, concatenated."""

    def __init__(self, net: TransplantNet):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        names = self.net.categories
        cat = cat % len(names)
        feats = None
        for k, c in enumerate(names):
            sel = torch.nonzero(cat == k).flatten()
            if len(sel):
                fk = self.net.features(images[sel], c)
                feats = fk.new_zeros((len(images),) + fk.shape[1:]) if feats is None else feats
                feats = feats.index_copy(0, sel, fk)
        cls = self.net.task_modules["cls"](feats)
        seg = self.net.task_modules["seg"](feats)
        return torch.cat([cls, seg.flatten(1)], 1)


def joint_inputs(ds):
    """``((images, category index), y)``: quadrupeds -> 0, wheels -> 1, negatives alternate; y = [label > 0,
    object mask (flattened)]."""
    lab = ds.labels
    cat = torch.where(lab >= 2, lab - 2, torch.arange(len(lab)) % 2)
    y = torch.cat([(lab > 0).float()[:, None], object_mask(ds).flatten(1).float()], 1)
    return (ds.images, cat), y


def joint_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the class logit + cross-entropy of the mask logits."""
    n, hw = out.shape[0], y.shape[1] - 1
    seg = out[:, 1:].reshape(n, 2, hw)
    return F.binary_cross_entropy_with_logits(out[:, 0], y[:, 0]) + F.cross_entropy(seg, y[:, 1:].long())


def _train(net: TransplantNet, train, val, *, epochs: int, seed: int, role: str, lr: float = 3e-3):
    res = fit(JointTasks(net), train, val, epochs=epochs, lr=lr, batch_size=32, seed=seed, loss_fn=joint_loss,
              inputs=joint_inputs, schedule="cosine", num_threads=None, key_extra={"paper": "09", "role": role})
    return res


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_networks(data: Dict[str, Any], seed: int, *, epochs: int) -> Dict[str, Any]:
    """The generic network (trained on quadrupeds and wheels), the oracle ``f_bird`` (through the frozen task
    modules), the planted and the realistic teacher; every training through ``fit`` (cached)."""
    seed_everything(seed)
    generic = _seeded(seed, lambda: TransplantNet(
        {c: CategoryModule(**NET) for c in ("quadruped", "wheels")},
        {"cls": ClassTask(NET["channels"]), "seg": SegTask(NET["channels"], upsample=2 ** NET["pools"])}))
    r_gen = _train(generic, data["gen_train"], data["gen_test"], epochs=epochs, seed=seed, role="generic")
    freeze(generic)
    oracle = TransplantNet({NEW: _seeded(seed + 1, lambda: CategoryModule(**NET))}, dict(generic.task_modules))
    r_or = _train(oracle, data["bird_train"], data["bird_test"], epochs=epochs, seed=seed, role="oracle")
    f_bird = freeze(oracle.category_modules[NEW])
    real = _seeded(seed + 2, lambda: TransplantNet(
        {NEW: CategoryModule(**NET)},
        {"cls": ClassTask(NET["channels"]), "seg": SegTask(NET["channels"], upsample=2 ** NET["pools"])}))
    r_real = _train(real, data["bird_train"], data["bird_test"], epochs=epochs, seed=seed, role="realistic")
    freeze(real)
    Mx = planted_map(NET["channels"], seed=seed)
    Minv = torch.linalg.inv(Mx.double()).float()
    planted = dict(f=nn.Sequential(f_bird, FixedLinear(Mx)).eval(), M=Mx, Minv=Minv,
                   upper={t: nn.Sequential(FixedLinear(Minv), generic.task_modules[t]).eval() for t in TASKS})
    realistic = dict(f=real.category_modules[NEW], upper=dict(real.task_modules.items()))
    return dict(generic=generic, f_bird=f_bird, planted=planted, realistic=realistic,
                train=dict(generic=r_gen, oracle=r_or, realistic=r_real))


# ----------------------------------------------------------------------------- transplants
def _evaluate(task, adapter, f, g, upper, x_te, y_te, ideal=None) -> Dict[str, float]:
    student = nn.Sequential(adapter, g)
    s_out, t_out = predict(student, x_te), predict(upper, x_te)
    row = dict(score=M.task_score(task, s_out, y_te), gap=M.output_gap(s_out, t_out))
    if ideal is not None:
        row["recovery"] = M.recovery_error(adapter, ideal)
        row["func_recovery"] = M.functional_recovery_error(adapter, FixedLinear(ideal), x_te)
    return row


def _run(rows, base, task, teacher, f, g, upper, pool, test, x_te, *, method, n_images, k, steps, seed, ideal,
         start=None, **kw) -> nn.Module:
    imgs = pool.images[:n_images]
    labels = targets(pool, task)[:k] if k > 0 else None
    adapter = None if start is None else perturbed_adapter(ideal, start, seed=seed)
    t0 = time.perf_counter()
    h, hist = transplant(f, g, upper if method != "direct" else None, imgs, method=method, labels=labels,
                         steps=steps, seed=seed, progress=False, adapter=adapter, **kw)
    sec = time.perf_counter() - t0
    rows.append(dict(base, task=task, teacher=teacher, method=method if not (k and method != "direct")
                     else f"{method}+direct", K=k, N_u=n_images, seconds=sec,
                     **_evaluate(task, h, f, g, upper, x_te, targets(test, task), ideal)))
    return h


def transplant_seed(seed: int, *, n: int, epochs: int, steps: int, n_u: Sequence[int] = (10, 50, 500),
                    ks: Sequence[int] = (10, 20, 50, 100), ks_combined: Sequence[int] = (10, 100),
                    curve_tasks: Sequence[str] = TASKS, recovery_tasks: Sequence[str] = ("cls",),
                    realistic_tasks: Sequence[str] = ("cls",), combined_tasks: Sequence[str] = ("cls",),
                    recovery_start: float = 0.3,
                    methods: Sequence[str] = DISTILL, **kw) -> Dict[str, Any]:
    """One seed of the study (module docstring). ``runs``: one row per study, task, teacher, method, K, N_u (score,
    gap, recovery errors, seconds). Study ``"curve"``: adapters start at the identity; every method at K = 0
    with the most unlabelled images, direct learning for each K in ``ks``, back-distillation + direct for
    ``ks_combined`` (planted, ``combined_tasks``); planted teacher for ``curve_tasks``, realistic for ``realistic_tasks``. Study
    ``"recovery"`` (planted, ``recovery_tasks``): every distillation method for each N_u in ``n_u``, adapters
    starting at ``M^-1 + delta`` with ``||delta|| = recovery_start ||M^-1||``: does the loss pin the adapter at
    the ideal one? ``refs``: teacher and identity adapter per task and teacher; ``unchanged``: the bit-for-bit
    check; ``train``: the networks' held-out losses."""
    data = make_data(n, seed)
    nets = build_networks(data, seed, epochs=epochs)
    pool, test, gen = data["pool"], data["bird_test"], nets["generic"]
    n_u = [min(v, len(pool)) for v in n_u]
    batches, fwd = _existing_batches(data["gen_test"])
    before = M.snapshot(gen, batches, list(TASKS), fwd)    # before any transplant
    rows: List[Dict[str, Any]] = []
    refs: List[Dict[str, Any]] = []
    keep: Dict[str, nn.Module] = {}
    plan = [(t, "planted") for t in curve_tasks] + [(t, "realistic") for t in realistic_tasks]
    for task, name in plan:
        T, g = nets[name], gen.task_modules[task]
        f, upper, ideal = T["f"], T["upper"][task], T.get("Minv")
        x_te = cached_features(f, test.images)
        base = dict(seed=seed, study="curve")
        for lab, mod in (("identity adapter", nn.Sequential(make_adapter(x_te.shape[1], x_te.shape[1], seed=seed), g)),
                         ("teacher", upper)):
            refs.append(dict(seed=seed, task=task, teacher=name, model=lab,
                             score=M.task_score(task, predict(mod, x_te), targets(test, task))))
        common = dict(steps=steps, seed=seed, ideal=ideal, **kw)
        for m in methods:
            h = _run(rows, base, task, name, f, g, upper, pool, test, x_te, method=m, n_images=n_u[-1], k=0, **common)
            if m == "back_distillation":
                keep[f"{name}/{task}"] = h
        for k in ks:
            _run(rows, base, task, name, f, g, upper, pool, test, x_te, method="direct", n_images=k, k=k, **common)
        for k in (ks_combined if name == "planted" and task in combined_tasks else ()):
            _run(rows, base, task, name, f, g, upper, pool, test, x_te, method="back_distillation", n_images=n_u[-1],
                 k=k, **common)
    P = nets["planted"]
    for task in recovery_tasks:
        g, upper = gen.task_modules[task], P["upper"][task]
        x_te = cached_features(P["f"], test.images)
        for m in methods:
            for nu in n_u:
                _run(rows, dict(seed=seed, study="recovery"), task, "planted", P["f"], g, upper, pool, test, x_te,
                     method=m, n_images=nu, k=0, steps=steps, seed=seed, ideal=P["Minv"], start=recovery_start, **kw)
    adapters = {t: keep.get(f"planted/{t}", nn.Identity()) for t in TASKS}
    gen.add_category(NEW, P["f"], adapters)            # transplant the bird into the generic network
    unch = M.unchanged(before, M.snapshot(gen, batches, list(TASKS), fwd))
    train = pd.DataFrame([dict(seed=seed, net=k, val_loss=r.history[-1]["val_loss"], from_cache=r.from_cache)
                          for k, r in nets["train"].items()])
    return dict(runs=pd.DataFrame(rows), refs=pd.DataFrame(refs), unchanged=dict(seed=seed, **unch), train=train,
                data=data, nets=nets, adapters=keep)


def _existing_batches(test):
    """Held-out images of the existing categories (with negatives) and the forward used to compare them."""
    lab = test.labels
    batches = {"quadruped": test.images[(lab == 2) | (lab == 0)][:64], "wheels": test.images[(lab == 3) | (lab == 0)][:64]}
    return batches, lambda net, x, c, t: predict(_Path(net, c, t), x)


class _Path(nn.Module):
    def __init__(self, net, category, task):
        super().__init__()
        self.net, self.category, self.task = net, category, task

    def forward(self, x):
        return self.net(x, self.category, self.task)


# ----------------------------------------------------------------------------- tables


def headline(runs: pd.DataFrame, task: str, teacher: str, method: str = "back_distillation",
             k_ref: int = 100) -> pd.DataFrame:
    """Per seed: the score of ``method`` with K = 0 and the most unlabelled images, of direct learning with
    ``k_ref`` annotated images (the largest K when ``k_ref`` was not run), and the difference (> 0: the paper's
    claim holds)."""
    sel = runs[(runs.task == task) & (runs.teacher == teacher)]
    if "study" in sel:
        sel = sel[sel.study == "curve"]
    zero = sel[(sel.method == method) & (sel.K == 0)]
    zero = zero[zero.N_u == zero.N_u.max()].set_index("seed").score
    d = sel[sel.method == "direct"]
    kk = k_ref if (d.K == k_ref).any() else d.K.max()
    d = d[d.K == kk].set_index("seed").score
    return pd.DataFrame({"zero_shot": zero, f"direct_K{kk}": d, "difference": zero - d}).reset_index()


def recovery_effects(runs: pd.DataFrame, task: str = "cls") -> pd.DataFrame:
    """Per seed (recovery study, planted): the recovery error of each method at the fewest and the most unlabelled
    images, and the effects the claims read: output distillation's error minus back-distillation's
    (``od_minus_bd``) and minus option C's (``od_minus_gradient``) at the fewest images (> 0: gradient matching
    pins the adapter better)."""
    sel = runs[(runs.study == "recovery") & (runs.task == task)]
    lo, hi = sel.N_u.min(), sel.N_u.max()
    out = {}
    for (m, nu), grp in sel[sel.N_u.isin([lo, hi])].groupby(["method", "N_u"]):
        out[f"{m}/N{'min' if nu == lo else 'max'}"] = grp.set_index("seed").recovery
    df = pd.DataFrame(out)
    df["od_minus_bd"] = df["output_distillation/Nmin"] - df["back_distillation/Nmin"]
    if "gradient/Nmin" in df:
        df["od_minus_gradient"] = df["output_distillation/Nmin"] - df["gradient/Nmin"]
    return df.reset_index()
