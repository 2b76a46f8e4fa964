"""Network transplanting by back-distillation.

Quanshi Zhang, Yu Yang, Qian Yu, Ying Nian Wu (and Song-Chun Zhu). Network Transplanting. arXiv 1804.10272
(2018); extended abstract, AAAI-19 Workshop on Network Interpretability for Deep Learning (arXiv 1901.06978).
No official code exists; this is the reconstruction of the suite's spec (``shared/papers/09_network_transplanting.md``).

What is reproduced: a new category is added to a generic network by learning only a small adapter ``h`` between
the category's module ``f`` (from a category-specific "teacher" network ``T = g' o f``) and a frozen task module
``g`` trained on other categories; the student is ``S = g o h o f``. ``h`` is learned from K annotated images
(direct learning, the baseline), from unlabelled images by matching outputs (output distillation), or by
back-distillation: matching outputs *and* what flows back through the task module (vector-Jacobian products).

Deviations / reconstructed choices (the paper's method section was not readable; see the spec):

* back-distillation's loss is the spec's main reading, ``L = L_od + lambda_bd * L_bd`` with
  ``L_bd = E_u ||J_S(x)^T u - J_T(x)^T u||^2`` over Gaussian (or Rademacher) output directions ``u``; two other
  readings are options: ``"back_target"`` (spec 2.3 B: targets ``z*`` at g's input found by gradient steps back
  from the teacher's output, then regressed) and ``"gradient"`` (spec 2.3 C: ``L_bd`` alone);
* ``lambda_bd=None`` sets ``lambda_bd = L_od / L_bd`` on the first batch, then keeps it fixed;
* with labels, every method adds ``lambda_dir * L_dir`` on a batch of the annotated images (``images[:K]``);
* the features ``x = f(images)`` are computed once (f is frozen), in eval mode; g and the teacher are used in
  eval mode, never updated (only ``h``'s parameters are differentiated: no gradient lands on any other module).

Equations, in implementation order (spec 2.2):

* step 1, the adapter: :func:`.network.make_adapter`;
* step 2, direct learning ``L_dir = task_loss(S(I), y)``: :func:`task_loss`;
* step 3, output distillation ``L_od = ||S(I) - T(I)||^2``: :func:`output_distillation_loss`;
* step 4, back-distillation ``L_bd``: :func:`back_distillation_loss` (double backward, ``create_graph=True`` on
  the student's product only; ``n_dirs`` directions stacked in the batch; ``chunk_size`` bounds memory);
  option B: :func:`back_target_loss`; the whole objective and its optimisation: :func:`transplant`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ...core import validate as V
from ...core.utils import device_of, progress as _progress
from .network import make_adapter

__all__ = ["transplant", "Transplanted", "METHODS", "task_loss", "output_distillation_loss",
           "back_distillation_loss", "back_target_loss", "vjp", "cached_features"]

METHODS = ("direct", "output_distillation", "back_distillation", "back_target", "gradient")


class Transplanted(NamedTuple):
    """What :func:`transplant` returns (unpacks as ``adapter, history``): the trained adapter (eval mode, on
    the task module's device) and one dict per logged step (step, loss and each term)."""
    adapter: nn.Module
    history: List[Dict[str, float]]


# ----------------------------------------------------------------------------- the losses
def task_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Direct learning's loss: binary cross-entropy for one output channel (``y`` in {0, 1} per image or per
    pixel), cross-entropy for several (``y`` class indices, (N,) or (N, H, W))."""
    if out.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(out[:, 0], y.to(out.dtype).reshape(out[:, 0].shape))
    return F.cross_entropy(out, y.long())


def output_distillation_loss(student_out: torch.Tensor, teacher_out: torch.Tensor) -> torch.Tensor:
    """``L_od``: mean squared difference of outputs (logits or score maps)."""
    return (student_out - teacher_out).pow(2).mean()


def vjp(fn: nn.Module, x: torch.Tensor, u: torch.Tensor, *, create_graph: bool) -> tuple:
    """``(fn(x), J_fn(x)^T u)``: the output and the vector-Jacobian product w.r.t. ``x`` (x is not modified)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = fn(x)
        (v,) = torch.autograd.grad((y * u).sum(), x, create_graph=create_graph)
    return y, v


def _directions(shape, n_dirs: int, kind: str, generator: torch.Generator, device, dtype) -> torch.Tensor:
    u = torch.randn((n_dirs,) + tuple(shape), generator=generator, dtype=dtype)
    if kind == "rademacher":
        u = torch.sign(u)
    return u.to(device)


def back_distillation_loss(student: nn.Module, teacher: nn.Module, x: torch.Tensor, *, n_dirs: int = 2,
                           directions: str = "gaussian", generator: Optional[torch.Generator] = None,
                           out_shape=None, with_outputs: bool = False, u: Optional[torch.Tensor] = None):
    """``L_bd = mean over images, directions u and feature entries of (J_S(x)^T u - J_T(x)^T u)^2``.

    ``student`` and ``teacher`` map the same features ``x`` to outputs; ``n_dirs`` directions per image are
    stacked in the batch (x repeated), so one double backward handles all of them. The student's product keeps
    its graph (``create_graph=True``) so that the loss can be differentiated w.r.t. the student's parameters;
    the teacher's needs none. ``with_outputs=True`` also returns both outputs on the first copy of ``x``
    (for ``L_od`` without a second forward). ``u``: the directions, (n_dirs, N, *output shape) (default: drawn
    from ``generator``)."""
    n_dirs = V.positive_int("n_dirs", n_dirs)
    V.choice("directions", directions, ("gaussian", "rademacher"))
    n = x.shape[0]
    xr = x.detach().repeat((n_dirs,) + (1,) * (x.dim() - 1))
    if out_shape is None:
        with torch.no_grad():
            out_shape = teacher(x[:1]).shape[1:]
    if u is None:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        u = _directions((n,) + tuple(out_shape), n_dirs, directions, gen, x.device, x.dtype)
    u = u.reshape((n_dirs * n,) + tuple(u.shape[2:])).to(device=x.device, dtype=x.dtype)
    y_s, v_s = vjp(student, xr, u, create_graph=True)
    y_t, v_t = vjp(teacher, xr, u, create_graph=False)
    loss = (v_s - v_t.detach()).pow(2).mean()
    if with_outputs:
        return loss, y_s[:n], y_t[:n].detach()
    return loss


def back_target_loss(student_adapter: nn.Module, task_module: nn.Module, teacher_out: torch.Tensor,
                     x: torch.Tensor, *, mu: float = 1.0, inner_steps: int = 5, inner_lr: float = 0.1) -> torch.Tensor:
    """Option B (spec 2.3): ``z* = argmin_z ||g(z) - T(x)||^2 + mu ||z - h(x)||^2`` by ``inner_steps`` gradient
    steps through the frozen ``g`` from ``z = h(x)``; then ``||h(x) - z*||^2`` (z* held fixed)."""
    z_h = student_adapter(x)
    z = z_h.detach().clone().requires_grad_(True)
    anchor = z_h.detach()
    for _ in range(inner_steps):
        with torch.enable_grad():
            obj = (task_module(z) - teacher_out).pow(2).sum() + mu * (z - anchor).pow(2).sum()
            (gz,) = torch.autograd.grad(obj, z)
        z = (z - inner_lr * gz / x.shape[0]).detach().requires_grad_(True)
    return (z_h - z.detach()).pow(2).mean()


# ----------------------------------------------------------------------------- features
@torch.no_grad()
def cached_features(category_module: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """``f(images)`` in eval mode, batched, on ``f``'s device (the train flag is restored)."""
    dev = device_of(category_module)
    was = category_module.training
    category_module.eval()
    try:
        return torch.cat([category_module(images[i:i + batch_size].to(dev)) for i in range(0, len(images), batch_size)])
    finally:
        category_module.train(was)


@dataclass
class _Setup:
    method: str
    n_dirs: int
    directions: str
    lambda_bd: Optional[float]
    lambda_dir: float
    mu: float
    inner_steps: int
    inner_lr: float
    chunk_size: Optional[int]
    out_shape: Any = None
    log: Dict[str, float] = field(default_factory=dict)


def _distill_terms(s: _Setup, h, g, teacher, xb, u) -> torch.Tensor:
    """The unlabelled part of the objective for one batch (``s.log`` gets each term)."""
    student = nn.Sequential(h, g)
    if s.method == "output_distillation":
        with torch.no_grad():
            t_out = teacher(xb)
        l_od = output_distillation_loss(student(xb), t_out)
        s.log["od"] = s.log.get("od", 0.0) + float(l_od.detach())
        return l_od
    if s.method == "back_target":
        with torch.no_grad():
            t_out = teacher(xb)
        l_b = back_target_loss(h, g, t_out, xb, mu=s.mu, inner_steps=s.inner_steps, inner_lr=s.inner_lr)
        s.log["bt"] = s.log.get("bt", 0.0) + float(l_b.detach())
        return l_b
    l_bd, y_s, y_t = back_distillation_loss(student, teacher, xb, n_dirs=s.n_dirs, directions=s.directions,
                                            u=u, out_shape=s.out_shape, with_outputs=True)
    l_od = output_distillation_loss(y_s, y_t)
    if s.lambda_bd is None:   # equal terms at initialisation, then fixed
        s.lambda_bd = float(l_od.detach() / l_bd.detach()) if float(l_bd.detach()) > 0 else 1.0
    s.log["od"] = s.log.get("od", 0.0) + float(l_od.detach())
    s.log["bd"] = s.log.get("bd", 0.0) + float(l_bd.detach())
    return s.lambda_bd * l_bd + (l_od if s.method == "back_distillation" else 0.0)


# ----------------------------------------------------------------------------- the entry point
def _check(category_module, task_module, teacher, images, method, labels, epochs, steps, batch_size, lr, seed):
    V.model_device(category_module, "category_module")
    V.model_device(task_module, "task_module")
    V.choice("method", method, METHODS)
    if method != "direct" and not isinstance(teacher, nn.Module):
        raise V.fail("teacher", "an nn.Module (the teacher's upper part g', mapping f's features to the output)",
                     V.Shown(type(teacher).__name__), "pass teacher=, or method='direct' with labels=")
    V.finite_tensor("images", images, dims=(4,), what="(N, C, H, W) images of the new category")
    if labels is not None:
        if not torch.is_tensor(labels) or labels.dim() == 0 or not 0 < labels.shape[0] <= images.shape[0]:
            raise V.fail("labels", f"a tensor of 1..{images.shape[0]} labels of images[:K]",
                         V.Shown(f"{type(labels).__name__} {tuple(labels.shape) if torch.is_tensor(labels) else ''}"),
                         "pass the labels of the first K images (K <= len(images))")
    elif method == "direct":
        raise V.fail("labels", "a tensor of labels for method='direct'", None,
                     "pass labels= (of images[:K]) or choose a distillation method")
    V.positive_int("epochs", epochs)
    V.positive_int("steps", steps, optional=True)
    V.positive_int("batch_size", batch_size)
    V.positive("lr", lr)
    return V.non_negative_int("seed", seed)


def transplant(category_module: nn.Module, task_module: nn.Module, teacher: Optional[nn.Module], images: torch.Tensor,
               *, method: str = "back_distillation", labels: Optional[torch.Tensor] = None, epochs: int = 30,
               steps: Optional[int] = None, adapter: Optional[nn.Module] = None, adapter_kind: str = "linear",
               lr: float = 1e-2, schedule: Optional[str] = "cosine", betas=(0.9, 0.99), batch_size: int = 32, n_dirs: int = 2, directions: str = "gaussian",
               lambda_bd: Optional[float] = None, lambda_dir: float = 1.0, mu: float = 1.0, inner_steps: int = 5,
               inner_lr: float = 0.1, chunk_size: Optional[int] = None, log_every: int = 10, seed: int = 0,
               progress: bool = True) -> Transplanted:
    """Learn the adapter ``h`` that connects ``category_module`` (f, frozen) to ``task_module`` (g, frozen).

    ``teacher``: the category-specific network's upper part ``g'`` (f's features -> the task's output), so that
    ``T = g' o f``; not needed for ``method="direct"``. ``images``: (N, C, H, W) images of the new category, no
    annotation needed; ``labels``: annotations of ``images[:K]`` (per image, or per pixel for a dense task).
    ``method``: one of :data:`METHODS` (module docstring). ``steps``: optimisation steps (default ``epochs`` x
    batches per epoch over the images used: the K annotated ones for ``"direct"``, all N otherwise).
    ``adapter``: an initial adapter (trained in place; default :func:`.network.make_adapter` of
    ``adapter_kind`` with ``seed``). ``chunk_size``: images per double backward (memory); the gradient is
    the same. Adam with ``lr`` and ``betas`` (``schedule="cosine"``: decayed to 0 over the steps; None: constant;
    beta2 = 0.99, not torch's 0.999: the large early output-matching gradients would otherwise shrink the
    steps of the small gradient-matching term for ~1000 steps); batches and directions drawn from generators seeded with ``seed``.
    Returns :class:`Transplanted` ``(adapter, history)``; ``f``, ``g`` and the teacher are left unchanged.
    """
    seed = _check(category_module, task_module, teacher, images, method, labels, epochs, steps, batch_size, lr, seed)
    chunk_size = V.positive_int("chunk_size", chunk_size, optional=True)
    log_every = V.positive_int("log_every", log_every)
    V.choice("schedule", schedule, (None, "cosine"))
    n_dirs = V.positive_int("n_dirs", n_dirs)
    V.choice("directions", directions, ("gaussian", "rademacher"))
    dev = device_of(task_module)
    x = cached_features(category_module, images).to(dev)
    K = 0 if labels is None else int(labels.shape[0])
    y = None if labels is None else labels.to(dev)
    h = make_adapter(x.shape[1], _in_channels(task_module, x.shape[1]), kind=adapter_kind, seed=seed) \
        if adapter is None else adapter
    h = (h.to(device=dev, dtype=x.dtype) if adapter is None else h.to(dev)).train()
    modes = [(m, m.training) for m in (task_module, teacher) if m is not None]
    for m, _ in modes:
        m.eval()
    s = _Setup(method, n_dirs, directions, lambda_bd, V.non_negative("lambda_dir", lambda_dir), mu, inner_steps,
               inner_lr, chunk_size)
    params = [p for p in h.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, betas=tuple(betas))
    g_batch = torch.Generator().manual_seed(seed)
    g_dir = torch.Generator().manual_seed(seed + 1)
    n_pool = K if method == "direct" else x.shape[0]
    total = steps if steps is not None else epochs * max(1, math.ceil(n_pool / batch_size))
    if teacher is not None and method != "direct":
        with torch.no_grad():
            s.out_shape = teacher(x[:1]).shape[1:]
            got = task_module(h(x[:1])).shape[1:]
        if got != s.out_shape:
            raise V.fail("teacher", f"a module whose output has the task module's shape {tuple(got)}",
                         V.Shown(f"output shape {tuple(s.out_shape)}"),
                         "pass the teacher's upper part g' (f's features -> the same task output as task_module)")
    history: List[Dict[str, float]] = []
    try:
        for step in _progress(range(1, total + 1), desc=f"transplant ({method})", disable=not progress, unit="step"):
            s.log = {}
            if schedule == "cosine":
                for pg in opt.param_groups:
                    pg["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / total))
            grads = [torch.zeros_like(p) for p in params]
            if method != "direct":
                idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=g_batch)
                u = _directions((len(idx),) + tuple(s.out_shape), n_dirs, directions, g_dir, dev, x.dtype) \
                    if method in ("back_distillation", "gradient") else None
                for pos in (torch.arange(len(idx)).split(chunk_size) if chunk_size else (torch.arange(len(idx)),)):
                    loss = _distill_terms(s, h, task_module, teacher, x[idx[pos].to(dev)],
                                          None if u is None else u[:, pos.to(dev)]) * (len(pos) / len(idx))
                    _accumulate(grads, torch.autograd.grad(loss, params, allow_unused=True))
            if K > 0 and (method == "direct" or s.lambda_dir > 0):
                li = torch.randint(0, K, (min(batch_size, K),), generator=g_batch).to(dev)
                l_dir = task_loss(task_module(h(x[li])), y[li])
                w = 1.0 if method == "direct" else s.lambda_dir
                _accumulate(grads, torch.autograd.grad(w * l_dir, params, allow_unused=True))
                s.log["dir"] = float(l_dir.detach())
            for p, gr in zip(params, grads):
                p.grad = gr
            opt.step()
            if step == 1 or step % log_every == 0 or step == total:
                history.append(dict(step=step, lambda_bd=s.lambda_bd if s.lambda_bd is not None else float("nan"),
                                    **s.log))
    finally:
        for m, was in modes:
            m.train(was)
    return Transplanted(h.eval(), history)


def _accumulate(acc, grads) -> None:
    for a, g in zip(acc, grads):
        if g is not None:
            a.add_(g.detach())


def _in_channels(task_module: nn.Module, default: int) -> int:
    """The input channels of the task module's first convolution (``default`` if it has none)."""
    for m in task_module.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return default
