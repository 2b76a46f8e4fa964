"""CelebA (aligned & cropped) -> :class:`FaceSet` (paper 03: a target attribute explained by the
other attributes, e.g. "Attractive").

Reads the official files, found anywhere under the raw folder::

    img_align_celeba/000001.jpg ...           178 x 218 aligned faces
    list_attr_celeba.txt                      line 1: count; line 2: 40 attribute names;
                                              then "<file> 1 -1 ..." (1 = present, -1 = absent)
    list_eval_partition.txt                   "<file> <0 train | 1 val | 2 test>"
    list_landmarks_align_celeba.txt           line 1: count; line 2: lefteye_x lefteye_y ...;
                                              then "<file> x y x y ..." (5 points; optional)

Output per split (``train``, ``val``, ``test``: the official partition): images (N,3,S,S) after a
centred square crop (``crop=center``: rows 20..198 of the 178 x 218 faces) or a plain resize
(``crop=none``); ``attributes`` (N, 39) in {0, 1}: the 40 attributes minus ``target``;
``target`` (N,) float in {0, 1} = the chosen attribute; ``labels`` = target as long;
``weights`` None (no planted weights in real data); ``region_masks`` None.

Deviation: :class:`FaceSet` has no landmark field; the 5 landmarks, mapped to (row, col) in the
output like every ImageSet landmark, are returned as extras (``load_real(..., return_extras=True)``
gives ``extras["landmarks"]``, ``extras["landmark_names"]``) together with the file names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from xnn_support.data.types import FaceSet
from xnn_support.core.utils import progress

from .common import (Option, find_path, load_rgb, map_points, missing, pick, resize_crop,
                     resolve_options, to_float_images)

NAME = "celeba"
SPLITS = ("train", "val", "test")
OPTIONS = (
    Option("size", int, 64, "output image side in pixels", minimum=8, maximum=1024),
    Option("target", str, "Attractive", "attribute used as target (removed from attributes)"),
    Option("crop", str, "center", "center: centred square crop; none: plain resize",
           choices=("center", "none")),
    Option("limit", int, 0, "at most this many faces per split, seeded random (0 = all)",
           minimum=0),
    Option("seed", int, 0, "seed of --limit", minimum=0),
)


def _table(path: Path, header: bool, dtype=np.int64) -> Tuple[List[str], List[str], np.ndarray]:
    """(column names, file names, values) of a CelebA list file."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    names: List[str] = []
    if header:
        if len(lines) < 2 or not lines[0].strip().isdigit():
            raise ValueError(f"{path}: expected a count line and a header line")
        count, names, lines = int(lines[0]), lines[1].split(), lines[2:]
        if count != len(lines):
            raise ValueError(f"{path}: header says {count} rows, found {len(lines)}")
    rows = [ln.split() for ln in lines]
    width = len(names) + 1 if header else 2
    bad = [i for i, r in enumerate(rows) if len(r) != width]
    if bad:
        raise ValueError(f"{path}: {len(bad)} malformed row(s), first: {lines[bad[0]]!r}")
    files = [r[0] for r in rows]
    try:
        vals = np.array([r[1:] for r in rows], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}: non-numeric values") from None
    if dtype is np.int64 and not np.all(vals == np.round(vals)):
        raise ValueError(f"{path}: expected integer values")
    vals = vals.astype(dtype).reshape(len(rows), width - 1)
    return names, files, vals


def _align(files: List[str], ref: List[str], vals: np.ndarray, what: str) -> np.ndarray:
    pos = {f: i for i, f in enumerate(files)}
    idx = [pos.get(f, -1) for f in ref]
    if min(idx, default=0) < 0:
        raise ValueError(f"{what}: no row for {ref[idx.index(-1)]!r}")
    return vals[np.asarray(idx, dtype=np.int64)]


def convert(raw: Path, *, float_images: bool = True, source=None, **options) -> Tuple[dict, dict]:
    """Convert CelebA under ``raw``; returns ({split: FaceSet}, {split: extras})."""
    opts = resolve_options(OPTIONS, options)
    raw = Path(raw)
    names, files, attrs = _table(find_path(raw, "list_attr_celeba.txt", name=NAME), True)
    if opts["target"] not in names:
        raise ValueError(f"unknown target attribute {opts['target']!r}; choose from {names}")
    if not np.isin(attrs, (-1, 1)).all():
        raise ValueError("list_attr_celeba.txt: attribute values must be 1 or -1")
    _, pfiles, part = _table(find_path(raw, "list_eval_partition.txt", name=NAME), False)
    partition = _align(pfiles, files, part[:, 0], "list_eval_partition.txt")
    try:
        lm_path = find_path(raw, "list_landmarks_align_celeba.txt", name=NAME)
    except FileNotFoundError:
        lm_path = None
    if lm_path is not None:
        lm_cols, lfiles, lm = _table(lm_path, True, np.float64)
        lm = _align(lfiles, files, lm, "list_landmarks_align_celeba.txt").astype(np.float64)
        lm_names = [c[:-2] for c in lm_cols[0::2]]
        lm_rc = lm.reshape(len(files), -1, 2)[..., ::-1]           # (x, y) -> (row, col)
    img_dir = find_path(raw, "img_align_celeba", name=NAME, is_dir=True)
    t = names.index(opts["target"])
    keep = [i for i in range(len(names)) if i != t]
    size = opts["size"]
    out, extras = {}, {}
    for code, split in enumerate(SPLITS):
        idx = np.flatnonzero(partition == code)
        idx = idx[pick(len(idx), opts["limit"], opts["seed"], split)]
        imgs = np.zeros((len(idx), 3, size, size), dtype=np.uint8)
        crops = np.zeros((len(idx), 4))
        for j, i in enumerate(progress(idx, desc=f"celeba {split}")):
            p = img_dir / files[i]
            if not p.is_file():
                raise missing(NAME, f"image {files[i]!r}", img_dir)
            img = load_rgb(p)
            w, h = img.size
            s = min(w, h)
            crops[j] = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2) \
                if opts["crop"] == "center" else (0, 0, w, h)
            imgs[j] = resize_crop(img, size, crops[j])
        a01 = (attrs[idx] > 0).astype(np.float32)
        target = torch.from_numpy(a01[:, t].copy())
        out[split] = FaceSet(
            images=to_float_images(imgs) if float_images else torch.from_numpy(imgs),
            attributes=torch.from_numpy(np.ascontiguousarray(a01[:, keep])),
            attribute_names=[names[i] for i in keep], region_masks=None,
            target=target, labels=target.long(), weights=None, bias=0.0,
            spec={"source": NAME, "converter": "data_scripts.celeba", "version": 1,
                  "options": opts, "split": split, "n": int(len(idx)), "files": source or {}})
        ex: Dict[str, object] = {"files": [files[i] for i in idx]}
        if lm_path is not None:
            ex["landmarks"] = torch.from_numpy(map_points(lm_rc[idx], crops, size))
            ex["landmark_names"] = lm_names
        extras[split] = ex
    return out, extras
