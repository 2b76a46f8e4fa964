"""Attribution maps of notebook 10: the field's baselines from Captum, the ICML 2022 entropy maps from the shared
sigma engine, all reduced to one map per image (spec section 3).

* input level (l = 0; Captum, summed over colour channels): ``saliency`` (``Saliency``, abs=True),
  ``integrated_gradients`` (baseline 0 in the model's input space), ``occlusion`` (window 8 x 8, stride 4,
  baseline 0), ``input_x_gradient``, ``smoothgrad`` (``NoiseTunnel(Saliency)``, seeded: common random numbers).
* layer level (the layer's spatial grid; Captum): ``layer_gradient_l1`` / ``layer_gradient_l2`` (sum_k |g_k| /
  ||g||_2 over channels, ``LayerGradientXActivation(multiply_by_inputs=False)``), ``grad_x_act`` (sum_k g_k a_k),
  ``gradcam_raw`` / ``gradcam`` (``LayerGradCam``, relu_attributions False / True), ``layer_ig``
  (``LayerIntegratedGradients``, baseline 0 at the input, summed over channels).
* sigma (ICML 2022, pixel-wise entropy per grid cell in nats of the input unit; :func:`sigma_map`):
  ``sigma_icml22`` (the code's noise layer and read-out, plain squared change), ``sigma_clean`` (the engine's clean
  preset, plain squared change), ``sigma_channel_std`` (change divided by each channel's std over data) and
  ``sigma_whitened`` (Delta^T pinv(Sigma) Delta per position, Sigma the layer's channel covariance over data: the
  spec's proposed metric), all through :class:`MetricFeatures`, a linear map of the layer's features applied
  before the engine's squared norm (so the metric needs no change of the engine).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch
from captum.attr import (InputXGradient, IntegratedGradients, LayerGradCam, LayerGradientXActivation,
                         LayerIntegratedGradients, NoiseTunnel, Occlusion, Saliency)
from torch import nn

from ... import sigma as _sigma
from ...core import validate as V
from ...sigma import HALF_LOG_2PIE, GridUnits, ModuleFeatures, optimize_sigma

__all__ = ["INPUT_METHODS", "LAYER_METHODS", "SIGMA_METHODS", "METHODS", "attribution_maps", "sigma_map",
           "MetricFeatures", "feature_metric_matrix", "METRICS", "entropy_reference"]

INPUT_METHODS = ("saliency", "integrated_gradients", "occlusion", "input_x_gradient", "smoothgrad")
LAYER_METHODS = ("layer_gradient_l1", "layer_gradient_l2", "grad_x_act", "gradcam_raw", "gradcam", "layer_ig")
SIGMA_METHODS = ("sigma_icml22", "sigma_clean", "sigma_channel_std", "sigma_whitened")
METHODS = INPUT_METHODS + LAYER_METHODS + SIGMA_METHODS
METRICS = ("mse", "channel_std", "whitened")
_SIGMA = {"sigma_icml22": ("icml22", "mse"), "sigma_clean": ("clean", "mse"),
          "sigma_channel_std": ("clean", "channel_std"), "sigma_whitened": ("clean", "whitened")}


# ------------------------------------------------------------------------------------ feature metric
@torch.no_grad()
def feature_metric_matrix(feats: torch.Tensor, metric: str, *, cutoff: float = 1e-6) -> Optional[torch.Tensor]:
    """W (C, C) with ||W Delta||^2 the metric of a feature change Delta over channels (dim 1 of ``feats``,
    a data sample (N, C, ...)): None for ``"mse"``; diag(1/std_k) for ``"channel_std"``; pinv(Sigma)^(1/2) for
    ``"whitened"`` (Sigma the channel covariance pooled over samples and positions, float64, eigenvalues below
    ``cutoff`` x the largest dropped: exact under duplicated channels)."""
    metric = V.choice("metric", metric, METRICS)
    if metric == "mse":
        return None
    C = feats.shape[1]
    f = feats.double().transpose(0, 1).reshape(C, -1)
    if metric == "channel_std":
        s = f.std(1)
        inv = torch.where(s > cutoff * s.max(), 1.0 / s.clamp_min(1e-300), torch.zeros_like(s))
        return torch.diag(inv)
    cov = torch.cov(f)
    lam, U = torch.linalg.eigh(cov)
    keep = lam > cutoff * lam.max()
    inv_sqrt = torch.where(keep, lam.clamp_min(1e-300).rsqrt(), torch.zeros_like(lam))
    return inv_sqrt[:, None] * U.T


class MetricFeatures:
    """A feature source for :func:`~xnn_support.sigma.optimize_sigma`: the output of ``layer`` mapped by W over
    channels (:func:`feature_metric_matrix` from the clean features of ``stats`` images), so the engine's squared
    change becomes the chosen metric. Works on any layer whose dim 1 is channels (conv maps, fc vectors)."""

    def __init__(self, model: nn.Module, layer: str, metric: str = "mse", *, stats: torch.Tensor,
                 batch_size: int = 64):
        self.inner = ModuleFeatures(model, [layer])
        self.model, self.names, self.device = model, self.inner.names, self.inner.device
        self.metric = V.choice("metric", metric, METRICS)
        W = None
        if self.metric != "mse":
            with torch.no_grad():
                parts = [self.inner([stats[i:i + batch_size].to(self.device)], torch.arange(0))[0]
                         for i in range(0, len(stats), batch_size)]
            W = feature_metric_matrix(torch.cat(parts), self.metric)
        self.W = None if W is None else W.to(self.device, parts[0].dtype)

    def __call__(self, xs, index):
        f = self.inner(xs, index)[0]
        if self.W is None:
            return [f]
        return [torch.einsum("dc,bc...->bd...", self.W, f)]


def sigma_map(model: nn.Module, x: torch.Tensor, layer: str, *, preset: str = "clean", metric: str = "mse",
              stats: Optional[torch.Tensor] = None, grid: int = 16, seed: int = 0, batch_size: Optional[int] = None,
              **overrides) -> Dict[str, torch.Tensor]:
    """Pixel-wise entropy (ICML22) per grid cell of ``x`` for ``layer`` under ``metric``: ``{"map": (B, g, g)
    nats, "F": (B,), "entropy": (B,)}``; ``preset`` ``icml22`` or ``clean`` (+ engine ``overrides`` such as
    steps, samples); ``stats`` the images of the metric's statistics (default ``x``)."""
    cfg = _sigma.config(preset, **overrides)
    feats = MetricFeatures(model, layer, metric, stats=x if stats is None else stats)
    res = optimize_sigma(x, GridUnits(grid), feats, config=cfg, seed=seed, batch_size=batch_size)
    return {"map": res.entropy_map[0].reshape(-1, grid, grid), "F": res.F[0], "entropy": res.entropy[0]}


def entropy_reference(method: str, sigma: Optional[Dict] = None) -> float:
    """The entropy per input dimension at the initial sigma of a sigma method's preset (with ``sigma`` overrides
    per preset, as in :func:`attribution_maps`): log sigma_init + 0.5 log(2 pi e), the map before optimisation."""
    preset, _ = _SIGMA[V.choice("method", method, SIGMA_METHODS)]
    cfg = _sigma.config(preset, **dict((sigma or {}).get(preset, {})))
    return math.log(cfg.sigma_init) + HALF_LOG_2PIE


# ------------------------------------------------------------------------------------ captum
def _chunks(fn, x, target, batch_size):
    return torch.cat([fn(x[i:i + batch_size], target[i:i + batch_size]).detach()
                      for i in range(0, len(x), batch_size)])


def _input_map(model, name, x, t, *, ig_steps, smooth_samples, smooth_std, window, stride, seed):
    if name == "saliency":
        a = Saliency(model).attribute(x, target=t, abs=True)
    elif name == "integrated_gradients":
        a = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=ig_steps,
                                                 internal_batch_size=len(x) * ig_steps)
    elif name == "occlusion":
        a = Occlusion(model).attribute(x, sliding_window_shapes=(x.shape[1], window, window),
                                       strides=(x.shape[1], stride, stride), baselines=0.0, target=t,
                                       perturbations_per_eval=16)
    elif name == "input_x_gradient":
        a = InputXGradient(model).attribute(x, target=t)
    else:
        torch.manual_seed(seed)   # common random numbers: the same noise for every network
        a = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=smooth_samples,
                                                   nt_samples_batch_size=smooth_samples, stdevs=smooth_std,
                                                   target=t, abs=True)
    return a.sum(1)


def _layer_map(model, module, name, x, t, *, ig_steps):
    if name in ("layer_gradient_l1", "layer_gradient_l2"):
        g = LayerGradientXActivation(model, module, multiply_by_inputs=False).attribute(x, target=t)
        return g.abs().sum(1) if name.endswith("l1") else g.pow(2).sum(1).sqrt()
    if name == "grad_x_act":
        return LayerGradientXActivation(model, module).attribute(x, target=t).sum(1)
    if name in ("gradcam_raw", "gradcam"):
        return LayerGradCam(model, module).attribute(x, target=t, relu_attributions=name == "gradcam")[:, 0]
    return LayerIntegratedGradients(model, module).attribute(x, baselines=torch.zeros_like(x), target=t,
                                                             n_steps=ig_steps,
                                                             internal_batch_size=len(x) * ig_steps).sum(1)


def attribution_maps(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str,
                     methods: Sequence[str] = METHODS, *, seed: int = 0, batch_size: int = 16, ig_steps: int = 32,
                     smooth_samples: int = 16, smooth_std: float = 0.15, occlusion_window: int = 8,
                     occlusion_stride: int = 4, sigma_grid: int = 16, sigma_stats: Optional[torch.Tensor] = None,
                     sigma: Optional[Dict] = None) -> Dict[str, torch.Tensor]:
    """One map per image for each of ``methods`` (see the module docstring): ``{method: (B, h, w)}``, input-level
    maps at the input's resolution, layer maps at ``layer``'s, sigma maps on a ``sigma_grid`` grid (nats).

    ``target``: (B,) class per image (the explained logit). ``layer``: dotted name of the explained layer
    (layer and sigma methods). ``batch_size``: images per Captum call (memory: IG and SmoothGrad expand each
    batch by ``ig_steps`` / ``smooth_samples``). ``sigma``: engine overrides (steps, samples, ...) per preset name,
    e.g. ``{"clean": {"steps": 60}, "icml22": {"steps": 100}}``. Stochastic methods are seeded by ``seed``.
    """
    x = V.finite_tensor("x", x, dims=(4,), nonempty=True, what="(B, C, H, W) images")
    dev = V.model_input(model, x, "x")
    target = V.labels("target", target, n=len(x)).to(dev)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise V.fail("methods", f"names from {list(METHODS)}", bad, "drop the unknown names")
    batch_size = V.positive_int("batch_size", batch_size)
    x = x.to(dev)
    module = model.get_submodule(layer) if any(m not in INPUT_METHODS for m in methods) else None
    was = model.training
    model.eval()
    out: Dict[str, torch.Tensor] = {}
    try:
        for m in methods:
            if m in INPUT_METHODS:
                fn = lambda xb, tb, m=m: _input_map(model, m, xb, tb, ig_steps=ig_steps, smooth_samples=smooth_samples,
                                                    smooth_std=smooth_std, window=occlusion_window,
                                                    stride=occlusion_stride, seed=seed)
                out[m] = _chunks(fn, x, target, batch_size)
            elif m in LAYER_METHODS:
                out[m] = _chunks(lambda xb, tb, m=m: _layer_map(model, module, m, xb, tb, ig_steps=ig_steps),
                                 x, target, batch_size)
            else:
                preset, metric = _SIGMA[m]
                kw = dict((sigma or {}).get(preset, {}))
                out[m] = sigma_map(model, x, layer, preset=preset, metric=metric, stats=sigma_stats, grid=sigma_grid,
                                   seed=seed, **kw)["map"]
    finally:
        model.train(was)
    return out
