"""The checkpoint cache behind :func:`xnn_support.train.fit`: train once, reuse.

Layout under :func:`cache_dir` (``$XNN_CACHE``, else ``~/.cache/xnn``)::

    train/<key>.pt                   the entry: final weights, history, metadata (one file)
    train/<key>.epochs-<run>/        per-epoch weights when ``checkpoints=True``
        epoch_000.pt ...             epoch 0 = the initial weights

The key is the sha256 of the canonical JSON (sorted keys, no whitespace) of whatever identifies a
run: model identity, data fingerprints, hyperparameters, seed and ``xnn_support.__version__``
(see :func:`make_key`). Classes and callables of the suite enter it by :func:`stable_name` (no module
path), so moving code does not invalidate the cache. Every file is a dict ``{"format", "key", "checksum", "state_dict", ...}``:

* written atomically (temporary file in the same folder, fsync, ``os.replace``), so a reader sees
  the old file or the new one, never half of one, and only after training succeeded (the trainer
  stages epoch files in a folder that no entry references until the entry itself is written);
* read with ``torch.load(..., weights_only=True)`` (no arbitrary pickles);
* verified on load: a truncated/corrupt file, a wrong key, or tensors whose sha256 differs from the
  stored checksum raise :class:`CacheError`; the trainer warns and retrains.

Design note: the checksum covers tensor bytes, so silent bit flips are caught too; hashing costs
about a second per 500 MB (VGG-16), nothing for the small nets.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn
from ..data.types import fingerprint, fingerprint_tensor

__all__ = ["cache_dir", "make_key", "canonical_json", "state_checksum", "entry_path", "save_file",
           "load_file", "CacheError", "FORMAT", "epoch_dir", "remove_stale_epoch_dirs", "new_run_id",
           "data_fingerprint", "callable_id", "stable_name"]

FORMAT = "xnn-train-v1"


class CacheError(RuntimeError):
    """A cache file is missing, unreadable, truncated, or belongs to another key."""


def cache_dir() -> Path:
    """The cache root: ``$XNN_CACHE`` if set, else ``~/.cache/xnn`` (created on demand)."""
    root = os.environ.get("XNN_CACHE", "").strip()
    return Path(root).expanduser() if root else Path.home() / ".cache" / "xnn"


def canonical_json(obj: Any) -> str:
    """Sorted-key, whitespace-free JSON; non-JSON leaves (paths, dtypes) become ``str``."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, allow_nan=True)


def make_key(parts: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``parts``."""
    return hashlib.sha256(canonical_json(dict(parts)).encode()).hexdigest()


def state_checksum(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of every tensor of a state dict."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        t = t.detach().cpu().contiguous().reshape(-1)
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def entry_path(key: str) -> Path:
    return cache_dir() / "train" / f"{key}.pt"


def epoch_dir(key: str, run_id: str) -> Path:
    return cache_dir() / "train" / f"{key}.epochs-{run_id}"


def save_file(path: Path, key: str, state_dict: Mapping[str, torch.Tensor], **extra: Any) -> None:
    """Atomically write ``{"format", "key", "checksum", "state_dict", **extra}`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    payload = dict(extra, format=FORMAT, key=key, checksum=state_checksum(state), state_dict=state)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_file(path: Path, key: str) -> Dict[str, Any]:
    """Load and verify a cache file; raise :class:`CacheError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CacheError(f"{path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, unsupported type under weights_only
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise CacheError(f"{path} is unreadable ({type(e).__name__}: {first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CacheError(f"{path} is not an {FORMAT} file")
    if payload.get("key") != key:
        raise CacheError(f"{path} holds key {str(payload.get('key'))[:12]}..., expected {key[:12]}...")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CacheError(f"{path} has no state dict")
    if state_checksum(state) != payload.get("checksum"):
        raise CacheError(f"{path} failed its checksum (the weights were altered or corrupted)")
    return payload


def remove_stale_epoch_dirs(key: str, keep: Optional[Path], older_than: float) -> None:
    """Best effort: delete ``<key>.epochs-*`` folders other than ``keep`` last modified before
    ``older_than`` (a time stamp), i.e. those of earlier, replaced entries."""
    root = cache_dir() / "train"
    for d in root.glob(f"{key}.epochs-*"):
        if keep is not None and d.resolve() == Path(keep).resolve():
            continue
        try:
            if d.stat().st_mtime < older_than:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def new_run_id() -> str:
    return f"{int(time.time() * 1000):x}-{os.getpid():x}-{os.urandom(3).hex()}"


def data_fingerprint(ds) -> Optional[str]:
    """Fingerprint of a dataset for the key: ``fingerprint(ds)``, but the tensors' hash when the
    ``spec`` is empty or only names a subset index (a subset of a hand-made dataset)."""
    if ds is None:
        return None

    spec = getattr(ds, "spec", None) or {}
    if dataclasses.is_dataclass(ds) and (not spec or set(spec) <= {"subset"}):
        parts = [fingerprint_tensor(getattr(ds, f.name)) for f in dataclasses.fields(ds)
                 if torch.is_tensor(getattr(ds, f.name))]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return fingerprint(ds)


def stable_name(obj) -> str:
    """The name a class or callable has in cache keys. For the suite's own objects it is ``xnn:`` plus
    the qualified name, without the module path, so that moving code between modules (issue 14's
    layout) does not silently re-train every cached network; a user's objects keep ``module.qualname``.
    Same-named objects of the suite are still told apart by what else the key holds (a callable's
    source hash; a model's configuration and initial-weights checksum)."""
    mod = getattr(obj, "__module__", None) or "?"
    qual = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    if mod == "xnn_support" or mod.startswith("xnn_support."):
        return f"xnn:{qual}"
    return f"{mod}.{qual}"


def callable_id(fn) -> Any:
    """A JSON-able identity for a callable / option (name + source hash, or the value itself)."""
    if fn is None or isinstance(fn, (str, int, float, bool)):
        return fn
    if isinstance(fn, (list, tuple)):
        return [callable_id(f) for f in fn]
    if isinstance(fn, functools.partial):
        return {"partial": callable_id(fn.func), "args": repr(fn.args),
                "kw": repr(sorted(fn.keywords.items()))}
    if isinstance(fn, nn.Module):
        plain = {k: v for k, v in vars(fn).items() if isinstance(v, (int, float, str, bool, type(None)))
                 and not k.startswith("_")}
        return {"module": stable_name(type(fn)), "attrs": plain}
    name = stable_name(fn)
    try:
        src = hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        src = None
    return {"callable": name, "source": src}
