"""Inference helpers shared by the trainer and the method modules: ``predict``, ``evaluate``.

* :func:`default_inputs` picks ``(x, y)`` from any dataset container of
  :mod:`xnn_support.data.types`: images, points or (ids, mask), and labels.
* :func:`predict` runs a model in batches on the model's device ("device follows the model"), in
  eval mode and without gradients, restoring the model's train/eval mode afterwards; outputs come
  back on the CPU.
* :func:`evaluate` is classification accuracy on a dataset.

Input checks (:func:`_check_xy`) are also what :func:`xnn_support.train.fit` runs before training:
empty sets, count mismatches, NaN/inf inputs and bad labels raise ``ValueError``.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
from torch import nn

from .utils import device_of, to_device

__all__ = ["predict", "evaluate", "default_inputs"]

Inputs = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


# ----------------------------------------------------------------------------- data handling

def default_inputs(ds) -> Tuple[Inputs, torch.Tensor]:
    """``(x, y)`` of a dataset: images / points / (ids, mask), and labels."""
    if getattr(ds, "images", None) is not None:
        x = ds.images
    elif getattr(ds, "points", None) is not None:
        x = ds.points
    elif getattr(ds, "ids", None) is not None:
        mask = getattr(ds, "mask", None)
        x = (ds.ids, mask) if mask is not None else ds.ids
    else:
        raise ValueError(f"cannot find inputs in {type(ds).__name__} (no images, points or ids); "
                         "pass inputs=lambda ds: (x, y)")
    y = getattr(ds, "labels", None)
    if y is None:
        raise ValueError(f"{type(ds).__name__} has no labels; pass inputs=lambda ds: (x, y)")
    return x, y


def _as_tuple(x: Inputs) -> Tuple[torch.Tensor, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _check_xy(x: Inputs, y: torch.Tensor, what: str, classify: bool) -> None:
    xs = _as_tuple(x)
    if not all(torch.is_tensor(t) for t in xs) or not torch.is_tensor(y):
        raise ValueError(f"{what}: inputs and labels must be torch tensors")
    n = int(y.shape[0]) if y.dim() else 0
    if n == 0:
        raise ValueError(f"{what} is empty: at least one sample is needed")
    for t in xs:
        if t.dim() == 0 or t.shape[0] != n:
            raise ValueError(f"{what}: {n} labels but inputs of shape {tuple(t.shape)} "
                             "(the first dimensions must match)")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).flatten(1).any(1).sum()) if t.dim() > 1 else -1
            raise ValueError(f"{what}: inputs contain NaN or inf ({bad} of {n} samples affected)")
    if classify:
        if y.dtype.is_floating_point or y.dtype == torch.bool or y.dim() != 1:
            raise ValueError(f"{what}: labels must be a 1-D integer tensor for classification, got "
                             f"{y.dtype} of shape {tuple(y.shape)} (pass loss_fn= for other targets)")
        if int(y.min()) < 0:
            raise ValueError(f"{what}: labels must be >= 0, got {int(y.min())}")
    elif y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError(f"{what}: targets contain NaN or inf")


# ----------------------------------------------------------------------------- evaluation

def _forward(model: nn.Module, xb: Tuple[torch.Tensor, ...]) -> torch.Tensor:
    return model(*xb)


@torch.no_grad()
def predict(model: nn.Module, x, *, batch_size: int = 256) -> torch.Tensor:
    """Outputs (logits) of ``model`` for ``x`` (a tensor, a tuple such as (ids, mask), or a
    dataset), in batches on the model's device, in eval mode, without gradients; on the CPU."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (torch.is_tensor(x) or isinstance(x, (tuple, list))):
        x = default_inputs(x)[0]
    xs = _as_tuple(x)
    dev, was_training = device_of(model), model.training
    model.eval()
    try:
        n = xs[0].shape[0]
        outs = [_forward(model, to_device(tuple(t[i:i + batch_size] for t in xs), dev)).cpu()
                for i in range(0, n, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, dataset, *, batch_size: int = 256, inputs: Optional[Callable] = None) -> float:
    """Classification accuracy of ``model`` on ``dataset`` (fraction in [0, 1])."""
    x, y = (inputs or default_inputs)(dataset)
    _check_xy(x, y, "evaluate dataset", classify=True)
    return float((predict(model, x, batch_size=batch_size).argmax(1) == y.cpu()).float().mean())


def _val_metrics(model, x, y, loss_fn, batch_size) -> Tuple[float, float]:
    out = predict(model, x, batch_size=batch_size)
    with torch.no_grad():
        loss = float(loss_fn(out, y.cpu()))
    acc = float((out.argmax(1) == y.cpu()).float().mean()) if _is_class(out, y) else float("nan")
    return loss, acc


def _is_class(out: torch.Tensor, y: torch.Tensor) -> bool:
    return out.dim() == 2 and y.dim() == 1 and not y.dtype.is_floating_point
