"""Evaluation of notebook 09 (network transplanting): task accuracy / IoU of a student, the teacher-student gap,
adapter recovery against a planted ideal adapter, and the bit-for-bit check that existing categories did not
change. Each metric is a function of tensors or modules; nothing here trains."""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
from torch import nn

from ...core import validate as V
from ...core.predict import predict

__all__ = ["accuracy", "mask_iou", "task_score", "output_gap", "recovery_error", "functional_recovery_error",
           "snapshot", "unchanged"]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Binary accuracy of ``logits[:, 0] > 0`` against ``labels > 0``."""
    V.finite_tensor("logits", logits, dims=(2,))
    return float(((logits[:, 0] > 0) == (labels.to(logits.device) > 0)).float().mean())


def mask_iou(logits: torch.Tensor, masks: torch.Tensor) -> float:
    """Intersection over union of the predicted object pixels (``argmax`` over the 2 channels) with ``masks``,
    pooled over all images (an image without object and without prediction adds nothing)."""
    V.finite_tensor("logits", logits, dims=(4,))
    pred, m = logits.argmax(1).bool(), masks.to(logits.device).bool()
    union = int((pred | m).sum())
    return float((pred & m).sum()) / union if union else 1.0


def task_score(task: str, logits: torch.Tensor, targets: torch.Tensor) -> float:
    """``accuracy`` for ``"cls"``, ``mask_iou`` for ``"seg"``."""
    V.choice("task", task, ("cls", "seg"))
    return accuracy(logits, targets) if task == "cls" else mask_iou(logits, targets)


def output_gap(student_out: torch.Tensor, teacher_out: torch.Tensor) -> float:
    """Relative teacher-student gap on held-out inputs: ``mean (S - T)^2 / var(T)`` (0: the same function;
    1: no better than predicting the teacher's mean)."""
    var = float(teacher_out.var())
    return float((student_out - teacher_out).pow(2).mean()) / max(var, 1e-30)


def _matrix(adapter: nn.Module) -> torch.Tensor:
    lin = adapter if isinstance(adapter, nn.Conv2d) else getattr(adapter, "linear", None)
    if not isinstance(lin, nn.Conv2d) or lin.kernel_size != (1, 1):
        raise V.fail("adapter", "a 1x1 conv (or a module with a .linear 1x1 conv)", V.Shown(type(adapter).__name__),
                     "use make_adapter(kind='linear') for recovery experiments")
    return lin.weight.detach()[:, :, 0, 0]


def recovery_error(adapter: nn.Module, ideal: torch.Tensor) -> float:
    """``||H - H*||_F / ||H*||_F`` of the adapter's 1x1 matrix ``H`` against the ideal ``H*`` (spec section 7)."""
    V.finite_tensor("ideal", ideal, dims=(2,))
    H = _matrix(adapter).to(ideal)
    return float((H - ideal).norm() / ideal.norm())


@torch.no_grad()
def functional_recovery_error(adapter: nn.Module, ideal: nn.Module, x: torch.Tensor) -> float:
    """``||h(x) - h*(x)||^2 / ||h*(x)||^2`` over held-out features ``x`` (the directions the data occupy)."""
    a, b = predict(adapter, x), predict(ideal, x)
    return float((a - b).pow(2).sum() / b.pow(2).sum())


@torch.no_grad()
def snapshot(net: nn.Module, batches: Dict[str, torch.Tensor], tasks: Sequence[str],
             forward: Callable) -> Dict[str, object]:
    """Outputs ``forward(net, images, category, task)`` for every (category, task), and a copy of the state
    dict: what :func:`unchanged` compares."""
    out = {f"{c}/{t}": forward(net, x, c, t).detach().clone() for c, x in batches.items() for t in tasks}
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return {"outputs": out, "state": state}


def unchanged(before: Dict[str, object], after: Dict[str, object]) -> Dict[str, float]:
    """``identical`` (1.0 when every output in ``before`` and every tensor of ``before``'s state dict are
    ``torch.equal`` to ``after``'s), ``max_abs_change`` over the outputs, ``changed_tensors``."""
    outs = before["outputs"]
    diff = max(float((outs[k] - after["outputs"][k]).abs().max()) for k in outs)
    same_out = all(torch.equal(outs[k], after["outputs"][k]) for k in outs)
    changed = [k for k, v in before["state"].items() if k not in after["state"] or not torch.equal(v, after["state"][k])]
    return {"identical": float(same_out and not changed), "max_abs_change": diff, "changed_tensors": float(len(changed))}
