"""The one trainer: ``fit(model_or_name, train_set, val_set)`` with a checkpoint cache.

Every notebook trains its networks through :func:`fit`: a plain supervised loop (Adam/AdamW/SGD,
optional cosine schedule and augmentation) with a progress bar, validation accuracy per epoch, and
optional per-epoch checkpoints for training-dynamics analyses (papers 04 ICML22 and 05 look at
checkpoints per epoch). Results are cached by :mod:`xnn_support.cache`: a second call with the
same model, data, hyperparameters, seed and package version loads the weights instead of training.

Design notes

* Deterministic: ``seed_everything(seed)``, then the model is built with that seed, batches are
  drawn from a generator seeded with ``seed`` and augmentations from one seeded with ``seed + 1``;
  same seed, same weights bit for bit on the CPU (with the same thread count).
* Inputs are checked before any training: empty sets, label/input count mismatch, NaN/inf inputs,
  labels outside the model's outputs (after one forward) raise ``ValueError``. A NaN/inf loss
  during training raises :class:`TrainingError`. Either way nothing in the cache is written or
  overwritten: epoch checkpoints go to a staging folder that no entry references and that is
  deleted on failure; the entry itself is written atomically only after the last epoch.
* A model passed as an ``nn.Module`` is trained in place; its identity in the cache key is its
  class, its ``xnn_config`` if built by :func:`xnn_support.models.build`, and a hash of its
  initial weights. A model given by name is identified by name + config.
* Callables (augment, loss_fn, inputs, optimizer) enter the key by qualified name and source
  hash; closures over changed values are not detected: pass ``key_extra=`` or ``cache="refresh"``.
* The default data fingerprint is ``xnn_support.data.types.fingerprint``; for a dataset whose
  ``spec`` holds nothing but a subset index (a subset of a hand-made dataset), the tensors
  themselves are hashed, since the spec alone would not tell two such datasets apart.
"""
from __future__ import annotations

import contextlib
import copy
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from torch import nn

from . import cache as _cache
from . import validate as V
from . import timelog
from .augment import make_augment
from .predict import (Inputs, _as_tuple, _check_xy, _forward, _is_class, _val_metrics,  # noqa: F401
                      default_inputs, evaluate, predict)
from .utils import device_of, progress as _progress, quiet, seed_everything, to_device, torch_threads
from .version import __version__
from ..models import build

__all__ = ["fit", "evaluate", "predict", "TrainResult", "TrainingError", "default_inputs", "recipe",
           "RECIPES"]

#: Measured hyperparameters per model (pass as ``fit(name, tr, va, **recipe(name))``). Each comment
#: gives the data and the result it was measured with (one seed, 2 CPU cores shared with other
#: jobs). ``num_threads=1``: on such a machine one torch thread trained vgg_small in 85-90 s, two
#: threads in 173-399 s (spinning OpenMP threads fight the other jobs); the weights differ in the
#: last bits between thread counts, so 1 also makes runs identical across machines.
RECIPES: Dict[str, Dict[str, Any]] = {
    # creatures(2000, 64, seed=0), split(0.2, seed=0): val acc 0.975 after 10 epochs, 85-90 s
    "vgg_small": {"epochs": 10, "lr": 3e-3, "schedule": "cosine", "augment": "flip", "num_threads": 1},
    # sentiment_corpus(2000, seed=0), split(0.2): val acc 0.99 / 0.99 / 1.0 after 10 epochs, 5-8 s
    "text_cnn": {"epochs": 10, "lr": 3e-3, "schedule": "cosine", "num_threads": 1},
    "text_lstm": {"epochs": 10, "lr": 3e-3, "schedule": "cosine", "num_threads": 1},
    "text_transformer": {"epochs": 10, "lr": 3e-3, "schedule": "cosine", "num_threads": 1},
}


def recipe(name: str) -> Dict[str, Any]:
    """A copy of the measured hyperparameters for ``name`` (empty: use fit's defaults)."""
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in RECIPES.get(name, {}).items()}


class TrainingError(RuntimeError):
    """Training diverged (NaN/inf loss); nothing was written to the cache."""


@dataclass
class TrainResult:
    """What :func:`fit` returns. ``model`` is in eval mode on the training device.

    ``history``: one dict per epoch (epoch, loss, train_acc, val_loss, val_acc, lr, time seconds).
    ``val_acc``: final validation accuracy (NaN without a validation set). ``epoch_checkpoints``:
    with ``checkpoints=True``, entry i holds the weights after i epochs (0 = initial): a ``Path``
    in the cache, or a CPU state dict when ``cache=False``; :meth:`load_epoch` turns one into a model.
    """
    model: nn.Module
    history: List[Dict[str, float]]
    val_acc: float
    from_cache: bool
    key: str
    epoch_checkpoints: List[Any] = field(default_factory=list)
    path: Optional[Path] = None
    meta: Dict[str, Any] = field(default_factory=dict)

    def load_epoch(self, epoch: int) -> nn.Module:
        """A copy of ``model`` (eval mode) holding the weights saved after ``epoch`` epochs."""
        if not self.epoch_checkpoints:
            raise ValueError("no epoch checkpoints: train with fit(..., checkpoints=True)")
        if not isinstance(epoch, int) or not 0 <= epoch < len(self.epoch_checkpoints):
            raise ValueError(f"epoch must be in [0, {len(self.epoch_checkpoints) - 1}], got {epoch!r}")
        ck = self.epoch_checkpoints[epoch]
        state = ck if isinstance(ck, dict) else _cache.load_file(ck, self.key)["state_dict"]
        model = copy.deepcopy(self.model)
        model.load_state_dict(state)
        return model.eval()


# ----------------------------------------------------------------------------- the trainer

_AUTO_SIZE = ("vgg_small", "alexnet_small", "resnet_small")
_TEXT = ("text_cnn", "text_lstm", "text_transformer")


def _auto_config(name: str, cfg: Dict[str, Any], train_set, y: torch.Tensor,
                 classify: bool) -> Dict[str, Any]:
    """Fill num_classes / in_size / vocab_size from the data when the caller left them out."""
    cfg = dict(cfg)
    if classify and "num_classes" not in cfg:
        names = getattr(train_set, "class_names", None)
        cfg["num_classes"] = max(len(names) if names else 0, int(y.max()) + 1)
    if name in _AUTO_SIZE and "in_size" not in cfg and getattr(train_set, "images", None) is not None:
        cfg["in_size"] = int(train_set.images.shape[-1])
    if name in _TEXT and "vocab_size" not in cfg and getattr(train_set, "vocab", None):
        cfg["vocab_size"] = len(train_set.vocab)
    return cfg


def _batches(n: int, batch_size: int, g: torch.Generator) -> List[torch.Tensor]:
    """Shuffled index batches; a trailing batch of one sample is merged (BatchNorm needs two)."""
    perm = torch.randperm(n, generator=g)
    out = list(perm.split(batch_size))
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2] = torch.cat(out[-2:])
        out.pop()
    return out


def _make_optimizer(optimizer, params, lr: float, weight_decay: float):
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(params)
    opts = {"adam": lambda: torch.optim.Adam(params, lr=lr, weight_decay=weight_decay),
            "adamw": lambda: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
            "sgd": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay,
                                           nesterov=True)}
    if optimizer not in opts:
        raise ValueError(f"optimizer must be one of {sorted(opts)} or a callable(params), "
                         f"got {optimizer!r}")
    return opts[optimizer]()


def fit(model_or_name: Union[str, nn.Module], train_set, val_set=None, *,
        model_config: Optional[Dict[str, Any]] = None, epochs: int = 10, lr: float = 1e-3,
        batch_size: int = 64, optimizer: Union[str, Callable] = "adam", weight_decay: float = 0.0,
        schedule: Optional[str] = None, augment=None, seed: int = 0,
        cache: Union[bool, str] = True, checkpoints: bool = False, loss_fn: Optional[Callable] = None,
        inputs: Optional[Callable] = None, progress: bool = True, device=None,
        key_extra: Optional[Dict[str, Any]] = None, num_threads: Optional[int] = None,
        memory_format: str = "auto") -> TrainResult:
    """Train a classifier (or load it from the checkpoint cache) and return a :class:`TrainResult`.

    ``model_or_name``: an ``nn.Module`` (trained in place) or a name for
    :func:`xnn_support.models.build` with ``model_config`` (``num_classes``, ``in_size`` and
    ``vocab_size`` are filled from the data when missing). ``schedule``: None (constant lr) or
    ``"cosine"`` (per batch, to 0). ``augment``: None, a name (images: ``"flip"``, ``"shift"``,
    ``"flip+shift"``; points: ``"jitter"``, ``"scale"``, ``"rotate_z"``, joined by ``+``), or a
    callable ``(x, generator) -> x``. ``cache``: True (read and write), False (neither), or
    ``"refresh"`` (retrain and overwrite). ``checkpoints``: keep the weights after every epoch.
    ``loss_fn(out, y)``: default cross-entropy. ``inputs(ds) -> (x, y)``: default
    :func:`default_inputs`. ``device``: default the module's device; for a name, CUDA if available.
    ``key_extra``: anything JSON-able to add to the cache key. ``num_threads``: torch CPU threads
    while training (restored afterwards); 1 is much faster than 2 on a CPU shared with other jobs.
    Not part of the cache key (recorded in ``meta``): thread count changes only the last bits.
    ``memory_format``: ``"auto"`` (channels-last on the CPU for a network with 2-d convolutions fed
    images: 1.3-1.6x faster training, same math, different rounding), ``"channels_last"`` or
    ``"contiguous"``; channels-last is part of the cache key, and the returned model is contiguous again.
    """
    epochs, batch_size, seed, num_threads = _check_fit_args(
        epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, schedule=schedule, seed=seed,
        num_threads=num_threads, cache=cache, train_set=train_set)
    classify = loss_fn is None
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    x, y, vx, vy = _fit_data(train_set, val_set, inputs, classify)
    aug = make_augment(augment)
    if aug is not None:  # fail now, not after the first batch, if it does not fit the inputs
        aug(_as_tuple(x)[0][:2], torch.Generator().manual_seed(0))

    # --- the model and its identity
    model, model_id, dev = _model_identity(model_or_name, model_config, train_set, y, classify, seed, device)
    V.model_input(model, _as_tuple(x)[0], "train_set inputs")
    model.to(dev)
    fmt = _memory_format(memory_format, model, _as_tuple(x)[0], dev)
    parts = {"model": model_id,
             "data": {"train": _cache.data_fingerprint(train_set), "val": _cache.data_fingerprint(val_set)},
             "hparams": {"epochs": epochs, "lr": float(lr), "batch_size": batch_size,
                         "optimizer": _cache.callable_id(optimizer), "weight_decay": float(weight_decay),
                         "schedule": schedule, "augment": _cache.callable_id(augment),
                         "loss_fn": _cache.callable_id(loss_fn if not classify else None),
                         "inputs": _cache.callable_id(inputs), "extra": key_extra},
             "seed": seed, "version": __version__}
    if fmt is not None:  # absent otherwise: the keys of contiguous training stay as they were
        parts["hparams"]["memory_format"] = "channels_last"
    key = _cache.make_key(parts)
    path = _cache.entry_path(key)

    # one trainer per key across processes (a sweep's workers share the cache): the second waits, then hits
    with (_cache.key_lock(key) if cache else contextlib.nullcontext()):
        if cache is True and path.exists():
            res = _cache_hit(model, path, key, checkpoints, dev)
            if res is not None:
                return res
        return _train_and_write(model, x, y, vx, vy, parts=parts, key=key, path=path, cache=cache, dev=dev,
                                checkpoints=checkpoints, num_threads=num_threads, epochs=epochs, lr=lr,
                                batch_size=batch_size, optimizer=optimizer, weight_decay=weight_decay,
                                schedule=schedule, aug=aug, seed=seed, loss_fn=loss_fn, classify=classify,
                                progress=progress, model_id=model_id, fmt=fmt)


def _memory_format(choice: str, model: nn.Module, x0, dev):
    """``torch.channels_last`` when :func:`fit` trains in it (see its ``memory_format``), else None."""
    V.choice("memory_format", choice, ("auto", "channels_last", "contiguous"))
    if choice == "contiguous":
        return None
    image = torch.is_tensor(x0) and x0.dim() == 4 and x0.is_floating_point()
    if choice == "channels_last":
        if not image:
            raise ValueError("memory_format='channels_last' needs image inputs (N, C, H, W); pass 'auto' or "
                             "'contiguous' for other data")
        return torch.channels_last
    conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return torch.channels_last if (image and conv and torch.device(dev).type == "cpu") else None


def _train_and_write(model, x, y, vx, vy, *, parts, key, path, cache, dev, checkpoints, num_threads, epochs,
                     lr, batch_size, optimizer, weight_decay, schedule, aug, seed, loss_fn, classify, progress,
                     model_id, fmt=None):
    """Train ``model`` (failures leave the cache untouched) and write its entry (see :func:`fit`)."""
    stage = _cache.epoch_dir(key, _cache.new_run_id()) if (checkpoints and cache) else None
    t_start = time.time()
    if fmt is not None:
        model.to(memory_format=fmt)
    try:
        with torch_threads(num_threads), timelog.span("training", model_id.get("name", type(model).__name__)):
            history, ckpts = _train_loop(
                model, x, y, vx, vy, dev=dev, epochs=epochs, lr=lr, batch_size=batch_size,
                opt=_make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad],
                                    lr, weight_decay),
                schedule=schedule, aug=aug, seed=seed, loss_fn=loss_fn, classify=classify,
                checkpoints=checkpoints, stage=stage, key=key, show=progress and not quiet(),
                desc=f"train {model_id.get('name', type(model).__name__)}", fmt=fmt)
    except BaseException:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if fmt is not None:
            model.to(memory_format=torch.contiguous_format)
    return _write_entry(model, history, ckpts, parts=parts, key=key, path=path, cache=cache, stage=stage,
                        t_start=t_start, num_threads=num_threads, dev=dev)


def _check_fit_args(*, epochs, lr, batch_size, weight_decay, schedule, seed, num_threads, cache, train_set):
    """The argument checks of :func:`fit` (ValueError before anything is built); returns the integer
    arguments as plain ints (epochs, batch_size, seed, num_threads)."""
    epochs = V.positive_int("epochs", epochs)
    batch_size = V.positive_int("batch_size", batch_size)
    seed = V.non_negative_int("seed", seed)
    V.positive("lr", lr, fix="pass a learning rate > 0, e.g. lr=1e-3")
    V.non_negative("weight_decay", weight_decay)
    V.choice("schedule", schedule, (None, "cosine"))
    num_threads = V.positive_int("num_threads", num_threads, optional=True)
    V.choice("cache", cache, (True, False, "refresh"))
    if train_set is None:
        raise ValueError("train_set is required; pass a dataset (e.g. creatures(...).split(...)[0])")
    return epochs, batch_size, seed, num_threads


def _fit_data(train_set, val_set, inputs, classify):
    """Checked training and validation tensors (x, y, vx, vy); vx, vy are None without a validation set."""
    get_xy = inputs or default_inputs
    x, y = get_xy(train_set)
    _check_xy(x, y, "train_set", classify)
    vx = vy = None
    if val_set is not None:
        vx, vy = get_xy(val_set)
        _check_xy(vx, vy, "val_set", classify)
    return x, y, vx, vy


def _model_identity(model_or_name, model_config, train_set, y, classify, seed, device):
    """(model, its identity in the cache key, training device) for a registered name or an nn.Module."""
    if isinstance(model_or_name, str):
        cfg = _auto_config(model_or_name, model_config or {}, train_set, y, classify)
        seed_everything(seed)
        model = build(model_or_name, seed=seed, **cfg)
        model_id: Any = dict(model.xnn_config)
        dev = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
    elif isinstance(model_or_name, nn.Module):
        if model_config:
            raise ValueError("model_config is only used with a model name, not with an nn.Module")
        model = model_or_name
        V.model_device(model, "model_or_name")  # weights on the meta device: a clear error, not torch's
        model_id = {"class": _cache.stable_name(type(model)),
                    "config": getattr(model, "xnn_config", None),
                    "init": _cache.state_checksum(model.state_dict())[:32]}
        dev = torch.device(device) if device is not None else device_of(model)
    else:
        raise ValueError(f"model_or_name must be a registered name or an nn.Module, got "
                         f"{type(model_or_name).__name__}")
    return model, model_id, dev


def _cache_hit(model, path, key, checkpoints, dev) -> Optional[TrainResult]:
    """The cached TrainResult, or None (entry lacks requested checkpoints, or is broken: warns)."""
    try:
        return _load_entry(model, path, key, checkpoints, dev)
    except _cache.CacheError as e:
        warnings.warn(f"checkpoint cache: {e}; retraining and rebuilding the entry", RuntimeWarning,
                      stacklevel=3)
    return None


def _write_entry(model, history, ckpts, *, parts, key, path, cache, stage, t_start, num_threads, dev) -> TrainResult:
    """After training: eval mode, meta, the cache entry (written atomically when caching), the result."""
    model.eval()
    val_acc = history[-1]["val_acc"]
    meta = {"parts": _cache.canonical_json(parts), "train_seconds": time.time() - t_start,
            "num_threads": num_threads or torch.get_num_threads(),
            "device": str(dev), "torch": str(torch.__version__),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if cache:
        _cache.save_file(path, key, model.state_dict(), history=history, val_acc=val_acc, meta=meta,
                         epoch_dir=stage.name if stage is not None else None,
                         epoch_files=[p.name for p in ckpts] if stage is not None else [])
        _cache.remove_stale_epoch_dirs(key, stage, older_than=t_start)
    return TrainResult(model=model, history=history, val_acc=val_acc, from_cache=False, key=key,
                       epoch_checkpoints=ckpts, path=path if cache else None, meta=meta)


def _train_loop(model, x, y, vx, vy, *, dev, epochs, lr, batch_size, opt, schedule, aug, seed,
                loss_fn, classify, checkpoints, stage, key, show, desc, fmt=None):
    """The epoch loop of :func:`fit`; returns (history, epoch checkpoints)."""
    seed_everything(seed)
    g = torch.Generator().manual_seed(seed)
    g_aug = torch.Generator().manual_seed(seed + 1)
    n = int(y.shape[0])
    total_steps, step = epochs * len(_batches(n, batch_size, torch.Generator())), 0
    top = max(int(y.max()), int(vy.max()) if vy is not None else 0) if classify else -1
    ckpts: List[Any] = [_keep_epoch(model, stage, key, 0)] if checkpoints else []
    history: List[Dict[str, float]] = []
    bar = _progress(range(1, epochs + 1), desc=desc, disable=not show, unit="epoch")
    for epoch in bar:
        t0 = time.time()
        model.train()
        tot_loss, correct, seen = 0.0, 0, 0
        for idx in _progress(_batches(n, batch_size, g), desc=f"epoch {epoch}", disable=not show,
                             unit="batch"):
            if schedule == "cosine":
                for pg in opt.param_groups:
                    pg["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            xb = tuple(t[idx] for t in _as_tuple(x))
            if aug is not None:
                xb = (aug(xb[0], g_aug),) + xb[1:]
            if fmt is not None:
                xb = (xb[0].contiguous(memory_format=fmt),) + xb[1:]
            xb, yb = to_device(xb, dev), y[idx].to(dev)
            out = _forward(model, xb)
            if step == 0 and classify and _is_class(out, yb) and top >= out.shape[1]:
                raise ValueError(f"labels go up to {top} but the model has {out.shape[1]} outputs "
                                 "(set num_classes)")
            loss = loss_fn(out, yb)
            if not bool(torch.isfinite(loss.detach())):
                raise TrainingError(f"loss became {float(loss.detach())} at epoch {epoch}, step {step} "
                                    f"(lr={lr}); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tot_loss += float(loss.detach()) * len(idx)
            seen += len(idx)
            if _is_class(out, yb):
                correct += int((out.argmax(1) == yb).sum())
        rec = {"epoch": epoch, "loss": tot_loss / seen,
               "train_acc": correct / seen if _is_class(out, yb) else float("nan"),
               "val_loss": float("nan"), "val_acc": float("nan"), "lr": opt.param_groups[0]["lr"]}
        if vx is not None:
            rec["val_loss"], rec["val_acc"] = _val_metrics(model, vx, vy, loss_fn, max(256, batch_size))
        rec["time"] = time.time() - t0
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['train_acc']:.3f}", val=f"{rec['val_acc']:.3f}")
        if checkpoints:
            ckpts.append(_keep_epoch(model, stage, key, epoch))
    return history, ckpts


def _keep_epoch(model: nn.Module, stage: Optional[Path], key: str, epoch: int):
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if stage is None:
        return state
    p = stage / f"epoch_{epoch:03d}.pt"
    _cache.save_file(p, key, state, epoch=epoch)
    return p


def _load_entry(model: nn.Module, path: Path, key: str, checkpoints: bool, dev) -> Optional[TrainResult]:
    """A TrainResult from a verified cache entry; None if it lacks requested epoch checkpoints."""
    payload = _cache.load_file(path, key)
    ckpts: List[Path] = []
    if payload.get("epoch_dir"):  # returned whenever the entry has them
        d = _cache.confined(path.parent, payload["epoch_dir"], "epoch_dir")
        files = payload.get("epoch_files", [])
        if not isinstance(files, list):
            raise _cache.CacheError(f"{path}: epoch_files is not a list (tampered metadata?)")
        ckpts = [_cache.confined(d, f, "epoch file") for f in files]
        missing = [p.name for p in ckpts if not p.is_file() or p.stat().st_size == 0]
        if checkpoints and (missing or not ckpts):
            raise _cache.CacheError(f"epoch checkpoints missing in {d}: {missing[:3]}")
        if missing:
            ckpts = []
    elif checkpoints:
        return None  # trained without checkpoints: retrain with them (overwrites the entry)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise _cache.CacheError(f"{path} does not fit the model: {str(e)[:200]}") from None
    model.to(dev).eval()
    history = list(payload.get("history", []))
    return TrainResult(model=model, history=history, val_acc=float(payload.get("val_acc", float("nan"))),
                       from_cache=True, key=key, epoch_checkpoints=ckpts, path=path,
                       meta=dict(payload.get("meta", {})))
