"""Concept scores, performer scores and the result container of paper 03's additive explanation.

Part of the reimplementation of Chen, Chen, Ren, Huang, Zhang, "Explaining Neural Networks
Semantically and Quantitatively", ICCV 2019 (arXiv 1812.07169); see :mod:`xnn_support.semantic`
for the method, its equations and the deviations. Not verified by the original authors.

* :func:`concept_scores` -- y_i = f_i(I) from a frozen multi-label concept model, (N, C);
* :func:`target_scores` -- the frozen performer's scalar y(I) (an output column or a logit margin);
* :class:`Explanation` -- eq. 1, y_hat = b + sum_i alpha_i y_i, evaluated on a set of images, with
  the contributions c_i = alpha_i y_i, their shares, the unexplained residual y - y_hat, fidelity
  R^2, dataset-level importance and the effective number of concepts (concentration).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from ...core.utils import device_of, torch_threads  # noqa: F401  (torch_threads: re-exported)

__all__ = ["concept_scores", "target_scores", "Explanation", "r2_score", "torch_threads"]


# ----------------------------------------------------------------------------- scores of frozen nets
@torch.no_grad()
def _forward_all(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    if not torch.is_tensor(images) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor (N, C, H, W), got "
                         f"{tuple(images.shape) if torch.is_tensor(images) else type(images).__name__}")
    if len(images) == 0:
        raise ValueError("images is empty")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev, was_training = device_of(model), model.training
    model.eval()
    try:
        out = [model(images[i:i + batch_size].to(dev)).detach().float() for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).to(images.device)


def concept_scores(model: nn.Module, images: torch.Tensor, *, kind: str = "signed",
                   outputs: Optional[Sequence[int]] = None, batch_size: int = 256) -> torch.Tensor:
    """Concept scores y_i = f_i(I), (N, C), from a multi-label concept model with one logit per
    concept. ``kind``: ``"signed"`` (2 sigmoid(logit) - 1 in (-1, 1): present > 0, absent < 0, so
    "not X" can contribute, as in the lecture's "not blurry"), ``"prob"`` or ``"logit"``.
    ``outputs`` keeps these output columns only. Runs in eval mode on the model's device."""
    if kind not in ("signed", "prob", "logit"):
        raise ValueError(f"kind must be 'signed', 'prob' or 'logit', got {kind!r}")
    z = _forward_all(model, images, batch_size)
    if z.dim() != 2:
        raise ValueError(f"the concept model must output (N, C) logits, got shape {tuple(z.shape)}")
    if outputs is not None:
        z = z[:, list(outputs)]
    return {"signed": lambda t: 2 * torch.sigmoid(t) - 1, "prob": torch.sigmoid, "logit": lambda t: t}[kind](z)


def target_scores(model: nn.Module, images: torch.Tensor, *, output: Union[int, str] = 0,
                  batch_size: int = 256) -> torch.Tensor:
    """The performer's scalar y(I) to explain, (N,): output column ``output`` (an int), or
    ``"margin"`` = logit[1] - logit[0] of a two-class classifier (the score of the positive class)."""
    z = _forward_all(model, images, batch_size)
    if z.dim() == 1:
        z = z[:, None]
    if output == "margin":
        if z.shape[1] != 2:
            raise ValueError(f"output='margin' needs a two-class model, got {z.shape[1]} outputs")
        return z[:, 1] - z[:, 0]
    if isinstance(output, bool) or not isinstance(output, int) or not -z.shape[1] <= output < z.shape[1]:
        raise ValueError(f"output must be 'margin' or a column index < {z.shape[1]}, got {output!r}")
    return z[:, output]


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot (NaN for a constant target)."""
    pred, target = pred.double().flatten(), target.double().flatten()
    ss_tot = float(((target - target.mean()) ** 2).sum())
    return float("nan") if ss_tot == 0 else 1.0 - float(((target - pred) ** 2).sum()) / ss_tot



@dataclass
class Explanation:
    """Eq. 1 evaluated on a set of images. ``alpha``, ``concepts`` (N, C); ``bias`` the scalar b;
    ``target`` (N,) the performer's output when given. Tensors on the CPU."""
    alpha: torch.Tensor
    concepts: torch.Tensor
    bias: float
    names: List[str]
    target: Optional[torch.Tensor] = None

    @property
    def contributions(self) -> torch.Tensor:
        """c_i = alpha_i * y_i, (N, C)."""
        return self.alpha * self.concepts

    @property
    def prediction(self) -> torch.Tensor:
        """y_hat = b + sum_i c_i, (N,)."""
        return self.bias + self.contributions.sum(1)

    @property
    def residual(self) -> Optional[torch.Tensor]:
        """The unexplained part y - y_hat, (N,) (None without a target)."""
        return None if self.target is None else self.target - self.prediction

    def shares(self) -> torch.Tensor:
        """|c_i| / sum_j |c_j| per image, (N, C); each row sums to 1 (0 where all c vanish)."""
        a = self.contributions.abs()
        return a / a.sum(1, keepdim=True).clamp_min(1e-12)

    def unexplained_share(self) -> torch.Tensor:
        """|y - y_hat| / (sum_i |c_i| + |y - y_hat|) per image, (N,): the share of the prediction's
        concept-level evidence that the additive model leaves unexplained."""
        if self.target is None:
            raise ValueError("unexplained_share needs the performer's target (explain(..., target=y))")
        r = self.residual.abs()
        return r / (self.contributions.abs().sum(1) + r).clamp_min(1e-12)

    def fidelity(self) -> float:
        """R^2 of y_hat against the performer's y (the share of its variance explained)."""
        if self.target is None:
            raise ValueError("fidelity needs the performer's target (explain(..., target=y))")
        return r2_score(self.prediction, self.target)

    def importance(self, signed: bool = False) -> torch.Tensor:
        """Dataset-level importance of each concept, (C,): mean |c_i| normalised to sum 1, or with
        ``signed=True`` the mean signed contribution mean(c_i) (in the target's units)."""
        c = self.contributions
        if signed:
            return c.mean(0)
        m = c.abs().mean(0)
        return m / m.sum().clamp_min(1e-12)

    def effective_concepts(self) -> torch.Tensor:
        """exp(entropy of the shares) per image, (N,): 1 when one concept carries everything, C
        when all contribute equally (the concentration measure for the bias-interpreting problem)."""
        p = self.shares().clamp_min(1e-12)
        return torch.exp(-(p * p.log()).sum(1))

    def top_reasons(self, i: int, k: int = 5) -> List[tuple]:
        """The ``k`` largest |contributions| of image ``i`` as (name, contribution), largest first."""
        c = self.contributions[i]
        order = torch.argsort(c.abs(), descending=True)[:k]
        return [(self.names[j], float(c[j])) for j in order.tolist()]



def _check_concepts(concepts, n: int, c: Optional[int] = None) -> None:
    if not torch.is_tensor(concepts) or concepts.dim() != 2 or not concepts.is_floating_point():
        raise ValueError(f"concepts must be a float tensor (N, C), got "
                         f"{tuple(concepts.shape) if torch.is_tensor(concepts) else type(concepts).__name__}")
    if concepts.shape[0] != n or (c is not None and concepts.shape[1] != c):
        raise ValueError(f"concepts must have shape ({n}, {c if c is not None else 'C'}), "
                         f"got {tuple(concepts.shape)}")
    if not bool(torch.isfinite(concepts).all()):
        raise ValueError("concepts contain NaN or inf")


def _check_target(target, n: int) -> None:
    if not torch.is_tensor(target) or target.dim() != 1 or target.shape[0] != n:
        raise ValueError(f"target must be a tensor of shape ({n},), got "
                         f"{tuple(target.shape) if torch.is_tensor(target) else type(target).__name__}")
    if not bool(torch.isfinite(target.float()).all()):
        raise ValueError("target contains NaN or inf")
