"""Second opinions from Quantus (0.6.0; its implementations are not verified by the original authors, as it says):
input invariance (Kindermans et al.), model parameter randomisation (Adebayo et al.), faithfulness correlation, and
localisation against the creatures' foreground masks; plus the spec's note on InputInvariance's padding pitfall.

* :func:`input_invariance_pitfall` -- Quantus' ``add_mean_shift_to_first_layer`` compensates the shift of the input
  (-1) in the bias of ``named_modules()[1]`` by ``torch.unique(conv(const))[0]``; with zero padding that response is
  not constant, so the "compensated" model is not function-preserving. Measured: max |F_s(x - 1) - F(x)| for our
  net with padding 1 and for a padding-free variant (conv 1 with padding 0), then Quantus' own verdicts.
* :func:`quantus_scores` -- MPRT (last-layer Spearman, ``normalise=False``), FaithfulnessCorrelation
  (``subset_size`` for 64 px), RelevanceMassAccuracy / RelevanceRankAccuracy against ``s_batch`` (fg masks).
* :func:`score_invariance` -- an input-level score must not change under a function-preserving transform.

Quantus is imported lazily (its import costs seconds); ``explainer(method)`` adapts :func:`.maps.attribution_maps`.
"""
from __future__ import annotations

import copy
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ...core.utils import device_of
from .maps import INPUT_METHODS, attribution_maps

__all__ = ["explainer", "flat_model", "input_invariance_pitfall", "quantus_scores", "score_invariance"]


def explainer(method: str, layer: str = "", **kw) -> Callable:
    """A Quantus ``explain_func(model, inputs, targets, **kwargs) -> (B, 1, H, W)`` for one of our methods
    (sigma maps are upsampled to the input and turned into importances: max H - H)."""
    def explain(model, inputs, targets, **_):
        dev = device_of(model)
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=dev)
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=dev).reshape(-1)
        a = attribution_maps(model, x, t, layer, [method], **kw)[method].float()
        if a.shape[-2:] != x.shape[-2:]:
            a = torch.nn.functional.interpolate(a[:, None], size=x.shape[-2:], mode="nearest")[:, 0]
        if method.startswith("sigma"):
            a = a.amax((1, 2), keepdim=True) - a
        return a[:, None].detach().cpu().numpy()
    return explain


def flat_model(model: nn.Module, *, padding: Optional[int] = None) -> nn.Sequential:
    """A VGG-like net as one flat Sequential (so ``named_modules()[1]`` is conv 1, as Quantus assumes); with
    ``padding`` set, conv 1 gets that padding (0: the padding-free variant, a different function)."""
    mods = [copy.deepcopy(m) for m in list(model.features) + [model.pool, model.classifier]]
    if padding is not None:
        mods[0].padding = (padding, padding)
    return nn.Sequential(*mods).eval()


def _shifted(model: nn.Module, x: torch.Tensor, shift: float) -> nn.Module:
    from quantus.helpers.model.pytorch_model import PyTorchModel
    qm = PyTorchModel(model, channel_first=True, softmax=False, device=str(device_of(model)))
    return qm.add_mean_shift_to_first_layer(shift, tuple(x[:1].shape)).eval()


def _shift_error(model: nn.Module, shifted: nn.Module, x: torch.Tensor, shift: float) -> float:
    with torch.no_grad():
        return float((shifted(x + shift) - model(x)).abs().max() / model(x).abs().max())


def input_invariance_pitfall(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                             methods: Sequence[str] = ("saliency", "integrated_gradients", "input_x_gradient"),
                             **kw) -> pd.DataFrame:
    """Per variant (padding 1 = our net, padding 0) the relative error of Quantus' compensated model, per method
    the max change of the map between (F, x) and (F_shifted, x - 1) relative to max |map| (ours, float32), and the
    fraction of images Quantus' InputInvariance calls invariant (atol 1e-4 on every pixel, its default)."""
    import quantus
    rows = []
    for pad in (1, 0):
        m = flat_model(model, padding=pad)
        sh = _shifted(m, x, -1.0)
        err = _shift_error(m, sh, x, -1.0)
        for meth in methods:
            a, b = explainer(meth, **kw)(m, x.numpy(), y.numpy()), explainer(meth, **kw)(sh, (x - 1).numpy(), y.numpy())
            ours = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
            metric = quantus.InputInvariance(input_shift=-1, disable_warnings=True)
            s = metric(model=m, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=None, explain_func=explainer(meth, **kw),
                       device=str(device_of(m)))
            rows.append(dict(first_conv_padding=pad, compensated_rel_error=err, method=meth,
                             map_rel_change=ours, invariant_fraction=float(np.mean(s))))
    return pd.DataFrame(rows)


def quantus_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, methods: Sequence[str],
                   *, layer: str = "", nr_runs: int = 20, subset_size: int = 64, seed: int = 0, **kw) -> pd.DataFrame:
    """Per method: MPRT (Spearman between the maps of the trained and the fully randomised net, lower = more
    sensitive to the parameters), FaithfulnessCorrelation, RelevanceMassAccuracy and RelevanceRankAccuracy (fg
    masks). MPRT only for input-level methods (each explains every randomised copy)."""
    import quantus
    xb, yb, sb = x.numpy(), y.numpy(), masks[:, None].numpy().astype(float)
    dev = str(device_of(model))
    rows = []
    for meth in methods:
        ex = explainer(meth, layer, **kw)
        a = ex(model, xb, yb)
        row = dict(method=meth)
        if meth in INPUT_METHODS:
            mprt = quantus.MPRT(return_last_correlation=True, normalise=False, abs=False, disable_warnings=True,
                                seed=seed)
            row["mprt_last_spearman"] = float(np.nanmean(mprt(model=model, x_batch=xb, y_batch=yb, a_batch=a,
                                                              explain_func=ex, device=dev)))
        np.random.seed(seed)
        fc = quantus.FaithfulnessCorrelation(nr_runs=nr_runs, subset_size=subset_size, normalise=False,
                                             disable_warnings=True, return_aggregate=False)
        row["faithfulness_corr"] = float(np.nanmean(fc(model=model, x_batch=xb, y_batch=yb, a_batch=a, device=dev)))
        for name, cls in (("relevance_mass", quantus.RelevanceMassAccuracy),
                          ("relevance_rank", quantus.RelevanceRankAccuracy)):
            metric = cls(disable_warnings=True)
            row[name] = float(np.nanmean(metric(model=model, x_batch=xb, y_batch=yb, a_batch=np.clip(a, 0, None),
                                                s_batch=sb, device=dev)))
        rows.append(row)
    return pd.DataFrame(rows)


def score_invariance(model: nn.Module, model_t: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str,
                     *, nr_runs: int = 20, subset_size: int = 64, seed: int = 0) -> Dict[str, float]:
    """FaithfulnessCorrelation of ``method`` on ``model`` and on a function-preserving ``model_t`` (same seed):
    both scores and their difference (must be ~0; anything else is an implementation bug)."""
    import quantus
    out = {}
    for k, m in (("original", model), ("transformed", model_t)):
        a = explainer(method)(m, x.numpy(), y.numpy())
        np.random.seed(seed)
        fc = quantus.FaithfulnessCorrelation(nr_runs=nr_runs, subset_size=subset_size, normalise=False,
                                             disable_warnings=True, return_aggregate=False)
        out[k] = float(np.nanmean(fc(model=m, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a,
                                     device=str(device_of(m)))))
    out["difference"] = out["transformed"] - out["original"]
    return out
