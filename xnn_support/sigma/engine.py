"""The sigma engine: learn per-unit noise scales of maximum entropy under a bound on feature change.

One optimiser serves three papers; a *unit* is whatever gets its own noise scale: a grid cell of an
image (ICML 2022), a word (ICML 2019), a point of a cloud (CVPR 2021, notebook 06).

* Guan, Wang, Zhang, Chen, He, Xie, "Towards a Deep and Unified Understanding of Deep Neural
  Models in NLP", ICML 2019 (official code: icml2019paper2428/...:Interpreter.py).
* Ma, Zhang, Zhang, Zhou, Zhang, "Quantification and Analysis of Layer-wise and Pixel-wise
  Information Discarding", ICML 2022, arXiv 1906.04109 (code: haotianSustc/deepinfo, noise layer of
  Jenniferlyx/Explaining-Knowledge-Distillation-by-Quantifying-the-Knowledge).
* Shen et al., "Verifiability and Predictability: Interpreting Utilities of Network Architectures
  for Point Cloud Processing", CVPR 2021 (same optimisation, one sigma per point).

What is optimised (one Lagrangian per (input b, layer l) pair, eq. "L(sigma)" of both papers)::

    x~ = x + expand(sigma) * eps,  eps ~ N(0, I), M samples per step          (:meth:`Units.expand`)
    F_lb(sigma) = mean_{M, feature elements} (phi_l(x~) - phi_l(x))^2 / sigma_f  (normalised feature change)
    H_lb(sigma) = mean_{units u} [log sigma_u + 0.5 log(2 pi e)]                 (entropy per input dimension)
    loss = sum_{l, b} [F_lb - lam * H_lb]                                        (:func:`optimize_sigma`)

The sum (not a mean) over pairs and the element-wise optimisers (Adam, plain SGD) make every pair's
trajectory exactly the one it would have alone; with ``noise="shared"`` (common random numbers, the
default) every pair also sees the same draw eps_t, so a batched run equals one-at-a-time runs with
the same seed up to float rounding. Clean features phi_l(x) are computed once. A copy that targets
layer l stops at layer l (:class:`ModuleFeatures` truncates the forward with ``capture(stop=True)``;
:class:`StagedFeatures` runs a staircase over explicit stages, dropping finished copies).

Normalisation ``sigma_f`` (a variance-like divisor of the squared change): ``"init"`` = F at the
initial sigma, per pair, detached (ICML22 code, so F_0 ~ 1); ``"power"`` = mean phi(x)^2 per pair
(ICML19 code without ``regularization``); a number or tensor per layer (ICML19's r_j^2 from a
sample of inputs, 06's dataset constant).

Parameterisations (``SigmaConfig.parameterization``):
``"sigmoid"`` sigma = scale * sigmoid(rho) (ICML19); ``"log"`` sigma = exp(rho), rho projected onto
[log sigma_min, log sigma_max] after each step (clean default); ``"clamp"`` rho = sigma, clamped to
[sigma_min, sigma_max] after each step (ICML22 parity: the code clamps in place at every forward);
``"clip"`` rho = sigma, unbounded, and sigma = clamp(rho, sigma_min, sigma_max) in the forward only
(the CVPR21 TF code's tf.clip_by_value: a sigma that crosses a bound gets no gradient and stays out,
so the bound absorbs it, unlike ``"clamp"``, whose projection lets it come back).

Constraint: with ``constraint=c`` each pair's lam follows dual ascent, log lam += dual_lr (c - F) / c
per step, so the optimum satisfies the papers' constraint E||f' - f||^2 / sigma_f = c (the lecture's
"max H s.t. E||f' - f||^2 = epsilon") instead of a fixed trade-off: the fair-comparison device of
ICML22 (its code reads the trajectory at F = 1.5) made exact.

Read-outs (all tracked online, per pair): ``"final"`` last evaluated iterate; ``"tail"`` geometric
mean of sigma over the last ``tail`` fraction of steps; ``"snapshot"`` the step with the lowest
noisy loss (ICML19 code; biased towards lucky draws, spec section 5); ``"target"`` the step whose F
is closest to ``target`` (ICML22: 1.5; 06: 2 with ``target_min`` 0.5); ``"entropy_target"`` the
step whose H is closest to ``entropy_target`` (KD repo: -2.8).

Where things are: :func:`optimize_sigma` (the Lagrangian above, batched over pairs, chunked over
inputs) and its loop ``_optimize_chunk``; units and feature sources in :mod:`.sigma_adapters`;
options and presets in :mod:`.sigma_config`; the result type, seeded noise and chunk
concatenation in :mod:`.sigma_result`.

Deviations from the official codes (all switchable back): seeded noise and initialisation; common
random numbers across pairs; several noise samples and antithetic pairs are options for the ICML19
path; default read-out tail average instead of the snapshot; entropy and data terms are means
(``*_reduction="sum"`` gives the papers' sums: lam_paper = lam / n_units for the entropy).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .adapters import AxisUnits, CallableFeatures, GridUnits, ModuleFeatures, StagedFeatures  # noqa: F401
from .presets import HALF_LOG_2PIE, PRESETS, READOUTS, SigmaConfig, config  # noqa: F401
from .result import SigmaResult, _cat_results, _check_input, _chunk_result, _Noise, _normaliser, _Track  # noqa: F401
from ..core import validate as V
from ..core.utils import progress as _progress

__all__ = ["SigmaConfig", "config", "PRESETS", "optimize_sigma", "SigmaResult", "GridUnits", "AxisUnits",
           "ModuleFeatures", "StagedFeatures", "CallableFeatures", "HALF_LOG_2PIE", "READOUTS"]


# ------------------------------------------------------------------------------------ engine
_config_fn = config
_SALT_INIT, _SALT_SF, _SALT_NOISE = 1, 2, 3  # _Noise salts: initial rho, sigma_f's draw, the steps' draws


def optimize_sigma(x: torch.Tensor, units, features, *, config: Union[str, SigmaConfig, None] = "clean",
                   seed: int = 0, batch_size: Optional[int] = None, feature_masks=None,
                   entropy: Optional[Callable] = None, progress: bool = False, keep_sigma: bool = False,
                   trim_padding: bool = True, **overrides) -> SigmaResult:
    """Optimise one sigma per unit for every (input, layer) pair; see the module docstring.

    Args:
        x: clean inputs (B, ...), float, finite.
        units: :class:`GridUnits`, :class:`AxisUnits` or an object with the same methods.
        features: :class:`ModuleFeatures`, :class:`StagedFeatures`, :class:`CallableFeatures` (or any
            object with ``names``, ``device`` and ``__call__(xs, index) -> list of tensors``).
        config: preset name or :class:`SigmaConfig`; ``overrides`` replace its fields.
        seed: seeds noise and initialisation; same seed, same device: same result.
        batch_size: inputs optimised together (all layers of each); memory ~ batch_size x samples.
            With ``noise="shared"`` the result does not depend on it.
        feature_masks: None, a list (per layer) of bool tensors broadcastable to (B, *feature shape),
            or ``callable(l, clean_features, index) -> mask or None`` (padding of token-level
            features; ``index``: the inputs of the chunk).
        trim_padding: with a unit mask, chunks of ``batch_size`` inputs are formed by length and their
            padding cut (exact, faster); results come back in the input order.
        entropy: ``callable(l, sigma (b, U), feats (M, b, ...), x (b, ...)) -> map (b, ...)``
            replacing the input entropy (e.g. the entropy of an input reconstruction).
    """
    cfg = config if isinstance(config, SigmaConfig) and not overrides else _config_fn(config, **overrides)
    cfg.validate()
    x = _check_input(x)
    seed = V.non_negative_int("seed", seed)
    n_units = units.check(x)
    B = x.shape[0]
    bs = B if batch_size is None else V.positive_int("batch_size", batch_size, optional=True)
    if isinstance(getattr(features, "model", None), nn.Module):
        V.model_input(features.model, x, "x")   # float64 data into a float32 net, a meta-device net
    dev = getattr(features, "device", torch.device("cpu"))
    x = x.to(dev)
    mask = units.mask(x)
    # padded units (words): optimise sentences of similar length together and cut each chunk's
    # padding (exact: padding is masked and the noise is prefix-stable; only the speed changes)
    trim = mask is not None and trim_padding
    order = torch.argsort(mask.sum(1).cpu(), stable=True) if trim else torch.arange(B)
    model = getattr(features, "model", None)
    was_training = model.training if isinstance(model, nn.Module) else None
    t0 = time.perf_counter()
    parts = []
    try:
        if model is not None:
            model.eval()  # BatchNorm must not couple the copies, dropout must be off
        for s in range(0, B, bs):
            idx = order[s:s + bs].to(dev)
            xi, mi, Ui = x[idx], None if mask is None else mask[idx], n_units
            if trim:
                Ui = int(mi.sum(1).max())
                xi, mi = xi[:, :Ui], mi[:, :Ui]
            fm = feature_masks
            if isinstance(fm, (list, tuple)):
                fm = [None if m is None else m[idx.to(m.device)] for m in fm]
            parts.append(_optimize_chunk(xi, mi, Ui, units, features, cfg, seed, fm, entropy, progress, keep_sigma,
                                         idx))
    finally:
        if model is not None and was_training:
            model.train()
    res = parts[0] if len(parts) == 1 and not trim else _cat_results(parts, order, n_units, entropy is None)
    res.seconds = time.perf_counter() - t0
    return res


def _optimize_chunk(x, mask, U, units, features, cfg: SigmaConfig, seed, feature_masks, entropy, progress,
                    keep_sigma, idx_clean) -> SigmaResult:
    """Optimise one chunk of inputs, all layers at once: setup, the step loop, the result."""
    names, dev = list(features.names), x.device
    L, Bc, M, T = len(names), x.shape[0], cfg.samples, cfg.steps
    index = idx_clean.repeat(M)                      # noisy row m * Bc + b belongs to input idx_clean[b]
    f0 = _clean_features(features, x, idx_clean, names)
    data_raw = _data_term(f0, feature_masks, idx_clean, cfg, names, Bc, dev)
    rho = _init_rho(cfg, seed, units, L, Bc, U, dev, x.dtype)
    umask = None if mask is None else mask.to(x.dtype)  # (Bc, U)
    shared = cfg.noise == "shared"
    sf = _sigma_f(cfg, seed, features, x, units, umask, rho, f0, data_raw, idx_clean, names)
    sf_div = sf if sf is not None else torch.ones(L, Bc, device=dev, dtype=x.dtype)

    # --- optimiser, noise, read-out state, dual variable
    opt = (torch.optim.Adam([rho], lr=cfg.lr) if cfg.optimizer == "adam" else torch.optim.SGD([rho], lr=cfg.lr))
    noise = _Noise(tuple(x.shape[1:]), seed, _SALT_NOISE, dev, pairs=L * Bc, shared=shared,
                   prefix_stable=units.prefix_stable, antithetic=cfg.antithetic)
    track = _Track(cfg, L, Bc, T, keep_sigma, dev, x.dtype)
    map_shape = None
    log_lam = None if cfg.constraint is None else \
        torch.full((L, Bc), math.log(max(float(cfg.lam), 1e-6)), device=dev, dtype=x.dtype)
    steps = _progress(range(T), desc="sigma", total=T) if progress else range(T)
    for t in steps:
        if cfg.lr_schedule == "cosine":
            fac = 0.5 * (1 + math.cos(math.pi * t / T))
        elif isinstance(cfg.lr_schedule, (tuple, list)):
            fac = float(cfg.lr_schedule[2]) ** (t // int(cfg.lr_schedule[1]))
        else:
            fac = 1.0
        for g in opt.param_groups:
            g["lr"] = cfg.lr * fac
        lam = float(cfg.lam(t, T)) if callable(cfg.lam) else float(cfg.lam)
        if log_lam is not None:
            lam = log_lam.exp()
        sig, logs = _sigma_of(rho, cfg)
        feats = features(_noisy_inputs(x, units, umask, shared, sig, noise.draw(M), M), index)
        if t == 0:
            _check_noisy(feats, f0, names, M, Bc)
        D = torch.stack([data_raw(l, feats[l], M) for l in range(L)]) / sf_div
        H, extra, map_shape = _entropy_term(cfg, entropy, sig, logs, umask, U, feats, x, M, map_shape)
        loss = D - lam * H
        grad, = torch.autograd.grad(loss.sum(), rho)
        with torch.no_grad():
            Dd, Hd, ld = D.detach(), H.detach(), loss.detach()
            track.update(t, logs, extra, Dd, Hd, ld, lam)
        rho.grad = grad
        opt.step()
        _project(rho, cfg)
        if log_lam is not None:  # dual ascent: more weight on entropy while F is below the constraint
            with torch.no_grad():
                log_lam += cfg.dual_lr * fac * (cfg.constraint - Dd) / cfg.constraint
                log_lam.clamp_(-12.0, 12.0)
    return _chunk_result(track, names, cfg, mask, U, entropy, map_shape, sf)



def _clean_features(features, x, idx_clean, names):
    """Clean features phi_l(x) of every layer (detached), checked: one row per input, finite."""
    L, Bc = len(names), x.shape[0]
    with torch.no_grad():
        f0 = features([x] * L, idx_clean)
    for l, f in enumerate(f0):
        if not torch.is_tensor(f) or f.shape[:1] != (Bc,):
            raise ValueError(f"features of {names[l]!r} must be a tensor with one row per input ({Bc}), got "
                             f"{tuple(f.shape) if torch.is_tensor(f) else type(f).__name__}")
        if not bool(torch.isfinite(f).all()):
            raise ValueError(f"the clean features of {names[l]!r} contain NaN or inf")
    return [f.detach() for f in f0]


def _data_term(f0, feature_masks, idx_clean, cfg, names, Bc, dev):
    """The data term ``data_raw(l, noisy feats, m) -> (Bc,)`` with feature masks and per-element sigma_f."""
    L = len(names)
    fmask, count = [], []
    for l, f in enumerate(f0):
        m = feature_masks(l, f, idx_clean) if callable(feature_masks) else (feature_masks[l] if feature_masks else None)
        if m is not None:
            m = m.to(dev, torch.bool)
            for d in range(1, min(m.dim(), f.dim())):   # padding cut from the chunk: cut the mask alike
                if m.shape[d] > f.shape[d]:
                    m = m.narrow(d, 0, f.shape[d])
            m = torch.broadcast_to(m, f.shape).to(f.dtype)
            count.append(m.reshape(Bc, -1).sum(1).clamp_min(1.0))
        else:
            count.append(torch.full((Bc,), float(f[0].numel()), device=dev))
        fmask.append(m)
    mean_data = cfg.data_reduction == "mean"
    elem_norm: List[Optional[torch.Tensor]] = [None] * L
    if not isinstance(cfg.sigma_f, str):
        for l in range(L):
            v = _normaliser(cfg.sigma_f, l, names)
            v = torch.as_tensor(v, dtype=f0[l].dtype, device=dev)
            if not bool(torch.isfinite(v).all()) or bool((v <= 0).any()):
                raise ValueError(f"sigma_f for {names[l]!r} must be positive and finite")
            try:
                torch.broadcast_shapes(v.shape, f0[l].shape)
            except RuntimeError:
                raise ValueError(f"sigma_f for {names[l]!r} has shape {tuple(v.shape)}, which does not broadcast "
                                 f"to the features {tuple(f0[l].shape[1:])}") from None
            elem_norm[l] = v

    def data_raw(l, f, m):  # (m * Bc, ...) noisy features -> (Bc,) mean (or sum) squared change
        d = (f.reshape(m, Bc, *f.shape[1:]) - f0[l].unsqueeze(0)).pow(2)
        if elem_norm[l] is not None:
            d = d / elem_norm[l]
        if fmask[l] is not None:
            d = d * fmask[l]
        s = d.sum(0).reshape(Bc, -1).sum(1) / m
        return s / count[l] if mean_data else s
    return data_raw


def _init_rho(cfg, seed, units, L, Bc, U, dev, dtype):
    """The parameter rho (L, Bc, U) at the initial sigma of the parameterisation, projected."""
    if cfg.parameterization == "sigmoid":
        if cfg.sigma_init == "random":
            r0 = _Noise((U,), seed, _SALT_INIT, dev, pairs=1, shared=True, prefix_stable=units.prefix_stable).draw(1)[0]
            rho0 = r0.expand(L, Bc, U)
        else:
            p = cfg.sigma_init / cfg.scale
            rho0 = torch.full((L, Bc, U), math.log(p / (1 - p)), device=dev)
    elif cfg.parameterization == "log":
        rho0 = torch.full((L, Bc, U), math.log(cfg.sigma_init), device=dev)
    else:
        rho0 = torch.full((L, Bc, U), float(cfg.sigma_init), device=dev)
    rho = rho0.clone().to(dtype).requires_grad_(True)
    _project(rho, cfg)
    return rho


def _sigma_of(r, cfg):
    """(sigma, log sigma) from the parameter r."""
    if cfg.parameterization == "sigmoid":
        return cfg.scale * torch.sigmoid(r), math.log(cfg.scale) - F.softplus(-r)  # F.logsigmoid is ~1000x slower on CPU
    if cfg.parameterization == "log":
        return r.exp(), r
    if cfg.parameterization == "clip":
        s = r.clamp(cfg.sigma_min, cfg.sigma_max)
        return s, s.log()
    return r, r.log()


def _project(rho, cfg):
    """Project rho in place onto the sigma bounds (log and clamp parameterisations)."""
    with torch.no_grad():
        if cfg.parameterization == "log":
            rho.clamp_(math.log(cfg.sigma_min), math.log(cfg.sigma_max))
        elif cfg.parameterization == "clamp":
            rho.clamp_(cfg.sigma_min, cfg.sigma_max)


def _noisy_inputs(x, units, umask, shared, sig, eps, m):
    """One noisy copy of the chunk per layer, (m * Bc, ...) each: x + expand(sigma) * eps."""
    Bc, per_input, xs = x.shape[0], tuple(x.shape[1:]), []
    for l in range(sig.shape[0]):
        s = sig[l] if umask is None else sig[l] * umask
        std = units.expand(s, x).unsqueeze(0)           # (1, Bc, ...)
        e = eps if shared else eps[:, l * Bc:(l + 1) * Bc]
        e = e.unsqueeze(1) if shared else e
        xs.append((x.unsqueeze(0) + std * e).reshape(m * Bc, *per_input))
    return xs


def _sigma_f(cfg, seed, features, x, units, umask, rho, f0, data_raw, idx_clean, names):
    """Per-pair normaliser (L, Bc) for ``sigma_f="init"`` or ``"power"`` (checked positive), else None."""
    if not isinstance(cfg.sigma_f, str) or cfg.sigma_f == "none":
        return None
    L, Bc, shared = len(names), x.shape[0], cfg.noise == "shared"
    with torch.no_grad():
        if cfg.sigma_f == "init":
            m_sf = cfg.sigma_f_samples or max(cfg.samples, 8)
            nz = _Noise(tuple(x.shape[1:]), seed, _SALT_SF, x.device, pairs=L * Bc, shared=shared,
                        prefix_stable=units.prefix_stable)
            eps = nz.draw(m_sf)
            feats = features(_noisy_inputs(x, units, umask, shared, _sigma_of(rho, cfg)[0], eps, m_sf),
                             idx_clean.repeat(m_sf))
            sf = torch.stack([data_raw(l, feats[l], m_sf) for l in range(L)])
        else:  # power
            sf = torch.stack([data_raw(l, torch.zeros_like(f0[l]), 1) for l in range(L)])
    for l in range(L):
        zero = (sf[l] <= 0) | ~torch.isfinite(sf[l])
        if bool(zero.any()):
            b = int(zero.nonzero()[0])
            raise ValueError(f"sigma_f is {float(sf[l, b])} for layer {names[l]!r}, input {b}: the feature does "
                             "not change under the initial noise (does it depend on the input?)")
    return sf


def _check_noisy(feats, f0, names, M, Bc):
    """First step: the noisy features must carry a graph back to the input and have the clean shape."""
    for l, f in enumerate(feats):
        if not torch.is_tensor(f) or not f.requires_grad:
            raise ValueError(
                f"the features of {names[l]!r} have no autograd graph back to the noisy input: phi must be "
                "differentiable (do not detach, convert to numpy, or run it under torch.no_grad())")
        if f.shape != (M * Bc, *f0[l].shape[1:]):
            raise ValueError(f"noisy features of {names[l]!r} have shape {tuple(f.shape)}, expected "
                             f"{(M * Bc, *f0[l].shape[1:])}")


def _entropy_term(cfg, entropy, sig, logs, umask, U, feats, x, M, map_shape):
    """H (L, Bc), the extra packed read-out state and the custom map's shape (input entropy or ``entropy``)."""
    if entropy is None:
        hm = logs if umask is None else logs * umask
        H = hm.sum(-1) / (U if umask is None else umask.sum(-1)) if cfg.entropy_reduction == "mean" \
            else hm.sum(-1)
        H = H + HALF_LOG_2PIE if cfg.entropy_reduction == "mean" else \
            H + HALF_LOG_2PIE * (U if umask is None else umask.sum(-1))
        return H, [], map_shape
    L, Bc = sig.shape[:2]
    hmap = torch.stack([entropy(l, sig[l], feats[l].reshape(M, Bc, *feats[l].shape[1:]), x) for l in range(L)])
    H = hmap.reshape(L, Bc, -1).mean(-1) if cfg.entropy_reduction == "mean" else hmap.reshape(L, Bc, -1).sum(-1)
    return H, [hmap.detach().reshape(L, Bc, -1)], tuple(hmap.shape[2:])
