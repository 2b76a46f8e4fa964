"""The checkpoint cache behind :func:`xnn_support.train.fit`: train once, reuse.

Layout under :func:`cache_dir` (``$XNN_CACHE``, else ``~/.cache/xnn``)::

    train/<key>.pt                   the entry: final weights, history, metadata (one file)
    train/<key>.epochs-<run>/        per-epoch weights when ``checkpoints=True``
        epoch_000.pt ...             epoch 0 = the initial weights

The key is the sha256 of the canonical JSON (sorted keys, no whitespace) of whatever identifies a
run: model identity, data fingerprints, hyperparameters, seed and ``xnn_support.__version__``
(see :func:`make_key`). Classes and callables of the suite enter it by :func:`stable_name` (no module
path), so moving code does not invalidate the cache. Every file is a dict ``{"format", "key", "checksum",
"digest", "state_dict", ...}``:

* written atomically (temporary file in the same folder, fsync, ``os.replace``), so a reader sees
  the old file or the new one, never half of one, and only after training succeeded (the trainer
  stages epoch files in a folder that no entry references until the entry itself is written);
* read with ``torch.load(..., weights_only=True)`` (no arbitrary pickles);
* verified on load: a truncated/corrupt file, a wrong key, tensors whose sha256 differs from the
  stored ``checksum``, or metadata (``val_acc``, ``history``, ``epoch_dir``, ...) whose sha256 differs
  from the stored ``digest`` raise :class:`CacheError`; the trainer warns and retrains. The digest
  covers every field but itself and the tensors (which the checksum, itself a field, covers), so no
  byte of an entry is used unverified; entries without one (older versions) are rebuilt.
* paths inside an entry (its ``epoch_dir`` and ``epoch_files``) are plain names inside the cache:
  anything with a separator or ``..`` is refused (:func:`confined`).

Result caches (JSON, e.g. notebook 06's ``results/<key>.json``) go through :func:`save_json` /
:func:`load_json`: the same key, format and digest checks.

Design note: the checksum covers tensor bytes, so silent bit flips are caught too; hashing costs
about a second per 500 MB (VGG-16), nothing for the small nets. The digest hashes the canonical
JSON of the metadata (a few kB, ~0.2-0.5 ms): reading a cached checkpoint with it / without it
(issue 15, 1 thread, median or best of repeats) is 1.02 for vgg_small (1.2 MB), 1.005 for resnet18
(43 MB), 1.00 for vgg16 (512 MB), 1.05 for text_cnn (0.2 MB).
"""
from __future__ import annotations

import contextlib
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

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

import torch
from torch import nn
from ..data.types import fingerprint, fingerprint_tensor

__all__ = ["cache_dir", "make_key", "canonical_json", "state_checksum", "entry_path", "save_file",
           "load_file", "CacheError", "FORMAT", "epoch_dir", "remove_stale_epoch_dirs", "new_run_id",
           "data_fingerprint", "callable_id", "stable_name", "meta_digest", "confined", "save_json",
           "load_json", "JSON_FORMAT", "key_lock"]

FORMAT = "xnn-train-v1"
JSON_FORMAT = "xnn-json-v1"
_NOT_DIGESTED = ("digest", "state_dict")


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


def meta_digest(payload: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of every field of an entry but ``digest`` and ``state_dict`` (the
    tensors are covered through the ``checksum`` field)."""
    return hashlib.sha256(canonical_json({k: v for k, v in payload.items() if k not in _NOT_DIGESTED}).encode()
                          ).hexdigest()


def confined(root: Path, name: Any, what: str) -> Path:
    """``root / name`` for a plain file or folder name held in cache metadata; a name with a path
    separator, ``..`` or an absolute path (a tampered ``"../../outside"``) raises :class:`CacheError`."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\x00" in name or os.path.isabs(name)):
        raise CacheError(f"{what} {name!r} is not a plain name inside the cache (tampered metadata?)")
    p = Path(root) / name
    if p.resolve().parent != Path(root).resolve():
        raise CacheError(f"{what} {name!r} resolves outside the cache folder {root} (a symlink?)")
    return p


@contextlib.contextmanager
def key_lock(key: str):
    """Hold an exclusive, cross-process lock on ``key`` for the block (``flock`` on
    ``cache_dir()/.<key>.lock``). Two workers that train the same key at once (a sweep on a
    cluster sharing one cache) then train it once: the second waits, then finds the entry. Entries are
    written atomically either way, so without the lock (no ``fcntl``, a file system without locks) the
    cost is a second training, never a torn file."""
    if fcntl is None:  # pragma: no cover - not POSIX: the atomic writes alone keep the cache consistent
        yield
        return
    path = cache_dir() / f".{key}.lock"  # removed on release: an idle cache holds no lock files
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # the holder unlinks the file on release, so a waiter re-checks that it locked the live one
        f = open(path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                break
        except OSError:  # pragma: no cover - e.g. a network file system without locks
            f.close()
            yield
            return
        f.close()
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:  # pragma: no cover
            pass
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(file)`` into a temporary file beside ``path``, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_file(path: Path, key: str, state_dict: Mapping[str, torch.Tensor], **extra: Any) -> None:
    """Atomically write ``{"format", "key", "checksum", "digest", "state_dict", **extra}`` to ``path``."""
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    payload = dict(extra, format=FORMAT, key=key, checksum=state_checksum(state))
    payload["digest"] = meta_digest(payload)
    payload["state_dict"] = state
    _atomic_write(path, lambda f: torch.save(payload, f))


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
    if "digest" not in payload:
        raise CacheError(f"{path} has no digest (written before metadata digests)")
    if meta_digest(payload) != payload["digest"]:
        raise CacheError(f"{path} failed its digest (its metadata, e.g. val_acc or history, was altered "
                         "or corrupted)")
    if state_checksum(state) != payload.get("checksum"):
        raise CacheError(f"{path} failed its checksum (the weights were altered or corrupted)")
    return payload


def save_json(path: Path, key: str, value: Any) -> None:
    """Atomically write a JSON result cache ``{"format", "key", "digest", "value"}`` to ``path``."""
    body = {"format": JSON_FORMAT, "key": key, "value": value}
    body["digest"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    text = json.dumps(body, default=str)  # key order kept (callers build rows from it); the digest is canonical
    _atomic_write(Path(path), lambda f: f.write(text.encode()))


def load_json(path: Path, key: str) -> Any:
    """The ``value`` of a JSON result cache written by :func:`save_json`, verified (format, key and
    digest over everything); raise :class:`CacheError` on any problem (a missing file too)."""
    path = Path(path)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError(f"{path} does not exist") from None
    except (OSError, ValueError) as e:
        raise CacheError(f"{path} is unreadable ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(body, dict) or body.get("format") != JSON_FORMAT or "digest" not in body:
        raise CacheError(f"{path} is not an {JSON_FORMAT} file (no digest: written by an older version?)")
    if body.get("key") != key:
        raise CacheError(f"{path} holds key {str(body.get('key'))[:12]}..., expected {key[:12]}...")
    rest = {k: v for k, v in body.items() if k != "digest"}
    if hashlib.sha256(canonical_json(rest).encode()).hexdigest() != body["digest"]:
        raise CacheError(f"{path} failed its digest (the cached values were altered or corrupted)")
    return body["value"]


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
