"""Explaining a prediction semantically and quantitatively: an additive model of concept scores.

Citation: Runjin Chen*, Hao Chen*, Jie Ren, Ge Huang, Quanshi Zhang, "Explaining Neural Networks
Semantically and Quantitatively", ICCV 2019 (arXiv 1812.07169). No official code exists; this is
a reimplementation from the lecture's equations and the spec
(/work/shared/papers/03_semantic_quantification.md), **not verified by the original authors**.

What is reproduced. A frozen "performer" gives a scalar y(I) per image (a logit or a score);
frozen concept models give concept scores y_i(I) = f_i(I). An explainer network g_theta, trained by
distillation, gives image-specific weights alpha(I) = g_theta(I) such that

    y(I) ~= b + sum_i alpha_i(I) * y_i(I)                       (eq. 1, :meth:`Explainer.predict`)

so c_i = alpha_i * y_i is the contribution of concept i, the residual y - b - sum_i c_i the part
of the prediction left unexplained (:class:`~xnn_support.semantic_scores.Explanation`: shares,
importance, fidelity; concept and performer scores of frozen nets are in that module too,
re-exported here). The training loss is

    L = E_I (b + alpha(I)^T y(I) - y(I))^2 + lambda(t) * L_prior(alpha(I), w(I))   (eq. 2)
    lambda(t) = beta * sqrt(T / (T + eta * t)),  t = epoch, T = number of epochs   (eq. 3)

(:func:`fit_explainer`). The prior term keeps alpha from explaining the prediction with a few
concepts or with arbitrary combinations of correlated concepts (the paper's "bias-interpreting"
problem): L2 form ``||alpha - w||^2`` or cosine form ``1 - cos(alpha, w)`` (``prior_loss=``).

Deviations and assumptions (the paper's Sections 3-4 could not be checked; every choice here is
a named argument):

* Prior weights w. The paper (as recollected) derives a per-image w from the performer's
  gradients with respect to concept activations that are intermediate features of the performer.
  Our concept models are separate networks, so the default ``prior="lstsq"`` is one global w: the
  ridge least-squares fit of y on the concept scores (a first-order, image-independent linear
  model). A per-image (N, C) or global (C,) prior can be passed instead (e.g. gradient-based).
* lambda(t) follows the recollected form of eq. 3 with beta = 1, eta = 1 by default (unknown in
  the paper); the prior is applied in normalised units (below), so beta is scale-free.
* Normalisation: concept scores are divided by their root mean square and the target is
  standardised for training only (spec section 5: alpha magnitudes are otherwise incomparable).
  Concepts are scaled, not centred, so that ``bias`` stays one scalar; :meth:`Explainer.alpha`
  and :attr:`Explainer.bias` are in the caller's raw units, and eq. 1 holds in raw units exactly.
* Explainer architecture: a small 3-block stride-2 CNN with an n-way head (:class:`ExplainerCNN`),
  or any ``nn.Module`` mapping images to (N, C) passed as ``net=``; Adam with a cosine schedule, no
  weight sharing with the performer. By default (``init="lstsq"``, our addition) alpha(I) =
  w_ls + g_theta(I), i.e. the net learns image-specific deviations from the least-squares
  weights; ``init=None`` learns alpha from 0 as the paper does.
* Shares of contributions are of |c_i| (signs kept in the contributions themselves); the
  unexplained share of an image is |y - y_hat| / (sum_i |c_i| + |y - y_hat|) (our definition).

Non-identifiability (spec section 5): with C concepts, each image's alpha has C - 1 directions
that leave eq. 1 unchanged; Adam moves along them with full-size steps, so without a prior (and
from alpha = 0) the split between concepts drifts although the fit is as good
(tests/test_semantic.py shows it on a planted linear target).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from .scores import (Explanation, _check_concepts, _check_target, _forward_all,  # noqa: F401
                              concept_scores, r2_score, target_scores, torch_threads)
from ...core import validate as V
from ...core.utils import device_of, progress as _progress, quiet, seed_everything

__all__ = ["fit_explainer", "Explainer", "ExplainerCNN", "Explanation", "concept_scores",
           "target_scores", "prior_weight", "r2_score", "lstsq_weights", "torch_threads"]


# ----------------------------------------------------------------------------- small helpers
def lstsq_weights(concepts: torch.Tensor, target: torch.Tensor, *, ridge: float = 1e-3):
    """Ridge least squares ``target ~= b + concepts @ w`` (no penalty on b): returns (w (C,), b)."""
    x, y = concepts.double(), target.double()
    xm, ym = x.mean(0), y.mean()
    xc = x - xm
    a = xc.T @ xc / len(x) + ridge * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    w = torch.linalg.solve(a, xc.T @ (y - ym) / len(x))
    return w.to(concepts.dtype), float(ym - xm @ w)


def prior_weight(epoch: int, epochs: int, *, beta: float = 1.0, eta: float = 1.0) -> float:
    """lambda(t) = beta * sqrt(T / (T + eta * t)) (eq. 3; recollected form, constants unknown)."""
    V.non_negative("beta", beta)
    V.non_negative("eta", eta)
    V.positive_int("epochs", epochs)
    return beta * math.sqrt(epochs / (epochs + eta * epoch))


# ----------------------------------------------------------------------------- the explainer
class ExplainerCNN(nn.Module):
    """g_theta: three stride-2 3x3 conv blocks (width, 2 width, 4 width; BN, ReLU), global average
    pooling and a linear head with one output per concept, started near 0 (so alpha starts at the
    offset chosen by :func:`fit_explainer`). About a fifth of the cost of notebook 03's concept nets."""

    def __init__(self, n_concepts: int, in_channels: int = 3, width: int = 16):
        super().__init__()
        if not isinstance(n_concepts, int) or n_concepts < 1:
            raise ValueError(f"n_concepts must be a positive integer, got {n_concepts!r}")
        layers, c = [], in_channels
        for co in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(c, co, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU()]
            c = co
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, n_concepts)
        nn.init.normal_(self.head.weight, 0, 0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Explainer(nn.Module):
    """A fitted additive explainer (eq. 1). ``alpha(images)`` (N, C) and ``bias`` are in the raw
    units of the concepts and target given to :func:`fit_explainer`; ``history`` holds per-epoch
    distillation loss, prior loss and lambda(t); ``prior`` the prior weights used (raw units)."""

    def __init__(self, net: nn.Module, concept_scale: torch.Tensor, target_mean: float, target_scale: float,
                 names: Sequence[str]):
        super().__init__()
        self.net = net
        self.register_buffer("concept_scale", concept_scale.detach().clone().float())
        self.register_buffer("alpha0", torch.zeros(len(names)))  # offset, normalised units
        self.target_mean, self.target_scale = float(target_mean), float(target_scale)
        self.b = nn.Parameter(torch.zeros(()))
        self.names = list(names)
        self.history: List[Dict[str, float]] = []
        self.prior: Optional[torch.Tensor] = None

    @property
    def bias(self) -> float:
        """b of eq. 1 in the target's units."""
        return self.target_mean + self.target_scale * float(self.b.detach())

    def _alpha_scaled(self, x: torch.Tensor) -> torch.Tensor:
        a = self.net(x)
        if a.dim() != 2 or a.shape[1] != len(self.names):
            raise ValueError(f"the explainer net must output (N, {len(self.names)}), got {tuple(a.shape)}")
        return self.alpha0 + a

    @torch.no_grad()
    def alpha(self, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """alpha(I) = g_theta(I), (N, C), in raw units; on the device of ``images``."""
        a = _forward_all(_Scaled(self), images, batch_size)
        return a

    def predict(self, images: torch.Tensor, concepts: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """y_hat = b + sum_i alpha_i(I) y_i (eq. 1), (N,)."""
        a = self.alpha(images, batch_size=batch_size)
        _check_concepts(concepts, len(images), len(self.names))
        return self.bias + (a * concepts.to(a.device, a.dtype)).sum(1)

    def explain(self, images: torch.Tensor, concepts: torch.Tensor, target: Optional[torch.Tensor] = None,
                *, batch_size: int = 256) -> Explanation:
        """An :class:`Explanation` (alpha, concepts, contributions, residual) for these images."""
        _check_concepts(concepts, len(images), len(self.names))
        if target is not None:
            _check_target(target, len(images))
            target = target.detach().float().cpu()
        a = self.alpha(images, batch_size=batch_size).cpu()
        return Explanation(alpha=a, concepts=concepts.detach().float().cpu(), bias=self.bias,
                           names=list(self.names), target=target)


class _Scaled(nn.Module):
    """Wraps an Explainer so a forward gives alpha in raw units (for chunked inference)."""

    def __init__(self, ex: Explainer):
        super().__init__()
        self.ex = ex

    def forward(self, x):
        return self.ex._alpha_scaled(x) * self.ex.target_scale / self.ex.concept_scale


def _prior_loss(a: torch.Tensor, w: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "l2":
        return ((a - w) ** 2).sum(1).mean()
    return (1 - nn.functional.cosine_similarity(a, w.expand_as(a), dim=1, eps=1e-8)).mean()


def fit_explainer(images: torch.Tensor, concepts: torch.Tensor, target: torch.Tensor, *, epochs: int = 30,
                  seed: int = 0, prior: Union[str, None, torch.Tensor] = "lstsq", prior_loss: str = "l2",
                  beta: float = 1.0, eta: float = 1.0, lr: float = 2e-3, batch_size: int = 64,
                  weight_decay: float = 1e-4, schedule: Optional[str] = "cosine",
                  net: Optional[nn.Module] = None, width: int = 16, names: Optional[Sequence[str]] = None,
                  ridge: float = 1e-3, init: Optional[str] = "lstsq", device=None, progress: bool = True,
                  num_threads: Optional[int] = None) -> Explainer:
    """Distil the performer's output ``target`` (N,) into eq. 1 with concept scores ``concepts``
    (N, C) and an explainer network on ``images`` (N, 3, S, S); return the :class:`Explainer`.

    ``prior``: ``"lstsq"`` (one global w from ridge least squares of target on concepts),
    a tensor (C,) or (N, C) of prior weights in raw units (per-image priors index with the
    images), or None (no prior term; the ablation). ``prior_loss``: ``"l2"`` or ``"cosine"``.
    ``beta``, ``eta``: lambda(t) of eq. 3. ``net``: any module mapping images to (N, C) (default
    :class:`ExplainerCNN` of ``width``). ``init="lstsq"``: alpha(I) = w_ls + net(I), i.e. the
    explainer learns image-specific deviations from the global least-squares weights (and b starts
    at the least-squares intercept); ``init=None``: alpha(I) = net(I).
    A ``net`` passed in is trained in place. ``schedule``: ``"cosine"`` (lr to 0 per batch) or
    None. ``weight_decay`` applies to the net, not to b. ``device``: default the net's, else that
    of ``images``. ``num_threads``: torch CPU threads while training (1 is much faster than 2 on
    a CPU shared with other jobs). Deterministic for a given seed, device and thread count.
    """
    with torch_threads(num_threads):
        return _fit_explainer(images, concepts, target, epochs=epochs, seed=seed, prior=prior,
                              prior_loss=prior_loss, beta=beta, eta=eta, lr=lr, batch_size=batch_size,
                              weight_decay=weight_decay, schedule=schedule, net=net, width=width,
                              names=names, ridge=ridge, init=init, device=device, progress=progress)


def _fit_explainer(images, concepts, target, *, epochs, seed, prior, prior_loss, beta, eta, lr, batch_size,
                   weight_decay, schedule, net, width, names, ridge, init, device, progress) -> Explainer:
    """:func:`fit_explainer` inside its thread setting: checks, normalisation, prior, the explainer, training."""
    n, c, names = _check_explainer_args(images, concepts, target, epochs=epochs, seed=seed, prior_loss=prior_loss,
                                        beta=beta, eta=eta, lr=lr, batch_size=batch_size,
                                        weight_decay=weight_decay, schedule=schedule, width=width, names=names,
                                        ridge=ridge, init=init)
    gen = seed_everything(seed)
    if net is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = ExplainerCNN(c, images.shape[1], width)
        dev = torch.device(device) if device is not None else images.device
    else:
        dev = torch.device(device) if device is not None else device_of(net)
    scale, t_mean, t_std, cs, ys, w_ls, b_ls = _normalise(concepts, target, n, ridge)
    w_s = _scaled_prior(prior, w_ls, scale, t_std, n, c)

    ex = Explainer(net, scale.float(), t_mean, t_std, names).to(dev)
    with torch.no_grad():
        ex.b.fill_(b_ls if init == "lstsq" else 0.0)
        if init == "lstsq":
            ex.alpha0.copy_(w_ls.to(dev))
    ex.prior = None if w_s is None else (w_s * t_std / scale.float()).squeeze(0)
    opt = torch.optim.Adam([{"params": list(ex.net.parameters()), "weight_decay": weight_decay},
                            {"params": [ex.b], "weight_decay": 0.0}], lr=lr)
    _train_explainer(ex, opt, images, cs, ys, w_s, gen, epochs=epochs, lr=lr, batch_size=batch_size,
                     schedule=schedule, beta=beta, eta=eta, prior_loss=prior_loss, dev=dev, progress=progress)
    return ex.eval()


def _check_explainer_args(images, concepts, target, *, epochs, seed, prior_loss, beta, eta, lr, batch_size,
                          weight_decay, schedule, width, names, ridge, init):
    """The input and argument checks of :func:`fit_explainer`; returns (n images, C concepts, names)."""
    V.finite_tensor("images", images, dims=(4,), what="(N, C, H, W) images")
    n = images.shape[0]
    if n < 2:
        raise V.fail("images", "at least 2 images", V.Shown(f"{n}"),
                     "pass more images (the explainer is fitted on a batch)")
    _check_concepts(concepts, n)
    _check_target(target, n)
    c = concepts.shape[1]
    for nm, v, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 2), ("seed", seed, 0),
                      ("width", width, 1)):
        V.integer(nm, v, minimum=lo)
    V.choice("schedule", schedule, ("cosine", None))
    V.choice("init", init, ("lstsq", None))
    V.choice("prior_loss", prior_loss, ("l2", "cosine"))
    V.positive("lr", lr)
    for nm, v in (("beta", beta), ("eta", eta), ("weight_decay", weight_decay), ("ridge", ridge)):
        V.non_negative(nm, v)
    names = [f"concept_{i}" for i in range(c)] if names is None else list(names)
    if len(names) != c:
        raise ValueError(f"names must have one entry per concept ({c}), got {len(names)}")
    return n, c, names


def _normalise(concepts, target, n, ridge):
    """Normalised units (concepts / rms, target standardised; eq. 1 is mapped back exactly) and the
    least-squares fit in them: (scale, t_mean, t_std, cs, ys, w_ls, b_ls)."""
    y = target.detach().double().cpu()
    yc = concepts.detach().double().cpu()
    scale = yc.pow(2).mean(0).sqrt()
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    t_mean, t_std = float(y.mean()), float(y.std()) if n > 1 else 1.0
    t_std = t_std if t_std > 1e-12 else 1.0
    ys = ((y - t_mean) / t_std).float()
    cs = (yc / scale).float()
    w_ls, b_ls = lstsq_weights(cs, ys, ridge=ridge)
    return scale, t_mean, t_std, cs, ys, w_ls, b_ls


def _scaled_prior(prior, w_ls, scale, t_std, n, c) -> Optional[torch.Tensor]:
    """The prior weights in normalised units, (1, C) or (N, C), or None (no prior term)."""
    if isinstance(prior, str) and prior == "none":
        prior = None
    if prior is None:
        return None
    if isinstance(prior, str):
        if prior != "lstsq":
            raise ValueError(f"prior must be 'lstsq', None or a tensor (C,) / (N, C), got {prior!r}")
        return w_ls[None]
    if torch.is_tensor(prior):
        p = prior.detach().double().cpu()
        if p.shape not in ((c,), (n, c)) or not bool(torch.isfinite(p).all()):
            raise ValueError(f"a prior tensor must be finite with shape ({c},) or ({n}, {c}), "
                             f"got {tuple(p.shape)}")
        return (p * scale / t_std).float().reshape(-1, c)
    raise ValueError(f"prior must be 'lstsq', None or a tensor, got {type(prior).__name__}")


def _train_explainer(ex, opt, images, cs, ys, w_s, gen, *, epochs, lr, batch_size, schedule, beta, eta, prior_loss,
                     dev, progress):
    """The distillation loop (eqs. 2-3) in normalised units; appends one record per epoch to ``ex.history``."""
    n = images.shape[0]
    cs_d, ys_d = cs.to(dev), ys.to(dev)
    w_d = None if w_s is None else w_s.to(dev)
    show = progress and not quiet()
    total, step = epochs * max(1, math.ceil(n / batch_size)), 0
    epoch_iter = _progress(range(epochs), desc="explainer", unit="epoch") if show else range(epochs)
    for epoch in epoch_iter:
        lam = prior_weight(epoch, epochs, beta=beta, eta=eta) if w_d is not None else 0.0
        ex.train()
        perm = torch.randperm(n, generator=gen)
        batches = list(perm.split(batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:  # BatchNorm needs two samples
            batches[-2] = torch.cat(batches[-2:])
            batches.pop()
        tot_d = tot_p = 0.0
        for idx in batches:
            if schedule == "cosine":
                for pg in opt.param_groups:
                    pg["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
            step += 1
            a = ex._alpha_scaled(images[idx].to(dev))
            pred = ex.b + (a * cs_d[idx.to(dev)]).sum(1)
            loss_d = ((pred - ys_d[idx.to(dev)]) ** 2).mean()
            loss = loss_d
            loss_p = torch.zeros((), device=dev)
            if w_d is not None:
                wb = w_d if w_d.shape[0] == 1 else w_d[idx.to(dev)]
                loss_p = _prior_loss(a, wb, prior_loss)
                loss = loss + lam * loss_p
            if not bool(torch.isfinite(loss.detach())):
                raise RuntimeError(f"explainer loss became {float(loss)} at epoch {epoch}; lower lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_d += float(loss_d.detach()) * len(idx)
            tot_p += float(loss_p.detach()) * len(idx)
        ex.history.append({"epoch": epoch + 1, "distill": tot_d / n, "prior": tot_p / n, "lambda": lam})
