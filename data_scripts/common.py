"""Shared helpers of the dataset converters: folders, options, resizing, coordinate mapping.

Folder layout under the data root (``--root``, else ``$XNN_DATA``, else ``~/.cache/xnn/data``)::

    <root>/<name>/downloads/   archives as downloaded (``.part`` while in flight)
    <root>/<name>/raw/         extracted files, in the dataset's own layout
    <root>/<name>/converted/   <name>-<key>.pt + .json, read by xnn_support.data.real.load_real

Coordinate conventions (shared by all image converters, matching ``ImageSet``): landmarks are
(row, col) in pixel-centre coordinates -- pixel (i, j) has its centre at (i, j) -- and map between
resolutions as ``out = (in - origin + 0.5) * S / extent - 0.5`` (the ``align_corners=False``
convention of ``torch.nn.functional.interpolate``). Boxes are pixel *edges* (row0, col0, row1,
col1), mapped as ``out = (in - origin) * S / extent``. A crop box is (x0, y0, x1, y1) in edge
coordinates of the source image.

Design notes: images are decoded one file at a time with PIL (the only per-item Python loop,
unavoidable for file decoding); everything per pixel or per point is vectorised numpy.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from xnn_support.data.real import default_root

__all__ = ["Option", "resolve_options", "defaults_of", "dataset_dir", "downloads_dir", "raw_dir",
           "find_path", "missing", "pick", "load_rgb", "resize_crop", "crop_boxes",
           "map_points", "map_boxes", "sample_nearest", "read_manifest", "to_float_images",
           "MANIFEST"]

MANIFEST = ".xnn_fetch.json"


# --------------------------------------------------------------------------- options

@dataclass(frozen=True)
class Option:
    """One convert option: CLI flag ``--name-with-dashes``; ``is_list`` options are given on the
    command line comma-separated; ``choices`` restrict values (each element, for lists)."""
    name: str
    type: type
    default: Any
    help: str
    choices: Tuple[Any, ...] = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    is_list: bool = False


def defaults_of(specs: Sequence[Option]) -> Dict[str, Any]:
    return {o.name: (list(o.default) if o.is_list else o.default) for o in specs}


def _coerce(o: Option, v):
    if o.is_list:
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        if not isinstance(v, (list, tuple)) or not v:
            raise ValueError(f"option {o.name}: expected a non-empty list, got {v!r}")
        v = [o.type(x) for x in v]
        bad = [x for x in v if o.choices and x not in o.choices]
        if bad:
            raise ValueError(f"option {o.name}: unsupported {bad}; choose from {list(o.choices)}")
        return v
    if o.type is int:
        if isinstance(v, bool) or not (isinstance(v, (int, np.integer)) or
                                       (isinstance(v, str) and v.strip().lstrip("-").isdigit())):
            raise ValueError(f"option {o.name}: expected an integer, got {v!r}")
        v = int(v)
    elif o.type is float:
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"option {o.name}: expected a number, got {v!r}") from None
        if not np.isfinite(v):
            raise ValueError(f"option {o.name}: must be finite, got {v!r}")
    else:
        v = o.type(v)
    if o.minimum is not None and v < o.minimum:
        raise ValueError(f"option {o.name}: must be >= {o.minimum}, got {v!r}")
    if o.maximum is not None and v > o.maximum:
        raise ValueError(f"option {o.name}: must be <= {o.maximum}, got {v!r}")
    if o.choices and v not in o.choices:
        raise ValueError(f"option {o.name}: unsupported {v!r}; choose from {list(o.choices)}")
    return v


def resolve_options(specs: Sequence[Option], given: Dict[str, Any]) -> Dict[str, Any]:
    """Defaults updated with ``given``, type-checked; ``ValueError`` on unknown or bad values."""
    names = [o.name for o in specs]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; known: {names}")
    return {o.name: _coerce(o, given[o.name]) if o.name in given else defaults_of([o])[o.name]
            for o in specs}


# --------------------------------------------------------------------------- folders

def dataset_dir(name: str, root=None) -> Path:
    return default_root(root) / name


def downloads_dir(name: str, root=None) -> Path:
    return dataset_dir(name, root) / "downloads"


def raw_dir(name: str, root=None) -> Path:
    return dataset_dir(name, root) / "raw"


def missing(name: str, what: str, where: Path) -> FileNotFoundError:
    """The error for absent raw data: names the command that fetches it."""
    root = where
    for p in [where, *where.parents]:
        if p.name == name:
            root = p.parent
            break
    return FileNotFoundError(f"{what} not found under {where}. Fetch it with: "
                             f"python -m data_scripts fetch {name} --root {root}")


def find_path(base: Path, target: str, *, name: str, is_dir: bool = False,
              max_depth: int = 4) -> Path:
    """The shallowest ``target`` (file or folder name) under ``base``; raises :func:`missing`."""
    base = Path(base)
    level = [base] if base.is_dir() else []
    for _ in range(max_depth + 1):
        hits = sorted(p for d in level for p in [d / target]
                      if (p.is_dir() if is_dir else p.is_file()))
        if hits:
            return hits[0]
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir())
    raise missing(name, f"{'folder' if is_dir else 'file'} {target!r}", base)


def read_manifest(name: str, root=None) -> Dict[str, Any]:
    """Checksums of the archives that ``fetch`` verified and extracted (empty when the raw
    files were placed by hand); recorded in every converted ``spec``."""
    p = raw_dir(name, root) / MANIFEST
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# --------------------------------------------------------------------------- subsets

def pick(n: int, limit: int, seed: int, salt: str) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``limit`` out of ``n`` (all when limit is 0
    or >= n). ``salt`` (e.g. the split name) decorrelates splits."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if limit == 0 or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng([int(seed), zlib.crc32(salt.encode())])
    return np.sort(rng.choice(n, size=limit, replace=False))


# --------------------------------------------------------------------------- images

def load_rgb(path: Path):
    """Decode an image file as an RGB ``PIL.Image`` (grayscale and CMYK files converted)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def resize_crop(img, size: int, box: Optional[Sequence[float]] = None) -> np.ndarray:
    """(3, size, size) uint8 of ``img`` (PIL) cropped to ``box`` (x0, y0, x1, y1 edges; None =
    whole image) and resized with antialiased bilinear filtering (aspect ratio not kept)."""
    from PIL import Image

    w, h = img.size
    box = (0.0, 0.0, float(w), float(h)) if box is None else tuple(float(b) for b in box)
    out = img.resize((size, size), Image.BILINEAR, box=box)
    return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1).copy()


def crop_boxes(wh: np.ndarray, boxes_xywh: Optional[np.ndarray], margin: float) -> np.ndarray:
    """(N, 4) crop boxes (x0, y0, x1, y1): the whole image when ``boxes_xywh`` is None, else each
    box enlarged by ``margin`` x its size on every side and clipped to the image."""
    wh = np.asarray(wh, dtype=np.float64)
    if boxes_xywh is None:
        return np.concatenate([np.zeros_like(wh), wh], axis=1)
    b = np.asarray(boxes_xywh, dtype=np.float64)
    x0, y0 = b[:, 0] - margin * b[:, 2], b[:, 1] - margin * b[:, 3]
    x1, y1 = b[:, 0] + (1 + margin) * b[:, 2], b[:, 1] + (1 + margin) * b[:, 3]
    out = np.stack([np.clip(x0, 0, wh[:, 0]), np.clip(y0, 0, wh[:, 1]),
                    np.clip(x1, 0, wh[:, 0]), np.clip(y1, 0, wh[:, 1])], axis=1)
    small = (out[:, 2] - out[:, 0] < 1) | (out[:, 3] - out[:, 1] < 1)
    if small.any():
        raise ValueError(f"{int(small.sum())} crop box(es) smaller than one pixel")
    return out


def map_points(rc: np.ndarray, crop: np.ndarray, size: int, drop_outside: bool = True):
    """Map (N, K, 2) (row, col) pixel-centre coordinates into the (size x size) output of each
    crop (N, 4). NaN stays NaN; points outside the output become NaN when ``drop_outside``."""
    rc = np.asarray(rc, dtype=np.float64)
    crop = np.asarray(crop, dtype=np.float64)[:, None, :]
    origin = np.stack([crop[..., 1], crop[..., 0]], axis=-1)
    extent = np.stack([crop[..., 3] - crop[..., 1], crop[..., 2] - crop[..., 0]], axis=-1)
    out = (rc - origin + 0.5) * (size / extent) - 0.5
    if drop_outside:
        bad = ((out < -0.5) | (out > size - 0.5)).any(axis=-1)
        out[bad] = np.nan
    return out.astype(np.float32)


def map_boxes(boxes_rc: np.ndarray, crop: np.ndarray, size: int) -> np.ndarray:
    """Map (N, 4) (row0, col0, row1, col1) edge boxes into each crop's output, clipped."""
    b = np.asarray(boxes_rc, dtype=np.float64)
    c = np.asarray(crop, dtype=np.float64)
    sr, sc = size / (c[:, 3] - c[:, 1]), size / (c[:, 2] - c[:, 0])
    out = np.stack([(b[:, 0] - c[:, 1]) * sr, (b[:, 1] - c[:, 0]) * sc,
                    (b[:, 2] - c[:, 1]) * sr, (b[:, 3] - c[:, 0]) * sc], axis=1)
    return np.clip(out, 0, size).astype(np.float32)


def sample_nearest(masks: np.ndarray, crop: Sequence[float], size: int) -> np.ndarray:
    """(P, H, W) masks -> (P, size, size) by nearest sampling of each output pixel centre inside
    ``crop`` (x0, y0, x1, y1); vectorised fancy indexing."""
    m = np.asarray(masks)
    h, w = m.shape[-2:]
    x0, y0, x1, y1 = (float(v) for v in crop)
    g = (np.arange(size) + 0.5) / size
    rows = np.clip(np.floor(y0 + g * (y1 - y0)).astype(np.int64), 0, h - 1)
    cols = np.clip(np.floor(x0 + g * (x1 - x0)).astype(np.int64), 0, w - 1)
    return m[..., rows[:, None], cols[None, :]]


def to_float_images(u8: np.ndarray):
    """uint8 (N, 3, S, S) numpy -> float32 torch tensor in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(u8)).float().div_(255.0)
