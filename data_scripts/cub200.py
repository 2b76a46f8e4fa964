"""CUB-200-2011 -> :class:`ImageSet` (papers 01, 02, 04, 05: birds with 15 part landmarks).

Reads the official tarball layout (``CUB_200_2011/`` found anywhere under the raw folder)::

    images.txt               <image_id> <class_dir>/<file>.jpg
    image_class_labels.txt   <image_id> <class_id>                  (1-based class ids)
    classes.txt              <class_id> <NNN.Class_name>
    train_test_split.txt     <image_id> <1 = train, 0 = test>
    bounding_boxes.txt       <image_id> <x> <y> <width> <height>
    parts/parts.txt          <part_id> <part name, may contain spaces>
    parts/part_locs.txt      <image_id> <part_id> <x> <y> <visible>
    images/<class_dir>/<file>.jpg

Output per split (``train``, ``test``: the official split): images (N,3,S,S) resized (whole image,
or the bounding box enlarged by ``margin`` with ``crop=box``; aspect ratio not kept), labels
0..C-1 in ``classes.txt`` order, class names without the ``NNN.`` prefix, landmarks (N,15,2)
(row, col) NaN where not visible (or outside the crop), boxes (N,4) of the bird.
No part masks / fg masks (CUB's segmentations are a separate download, not handled here).

Deviation / assumption [INFER]: the x, y of ``part_locs.txt`` are taken as 0-based pixel-centre
coordinates (the file does not say); the resulting error is below half a source pixel.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from xnn_support.data.types import ImageSet
from xnn_support.core.utils import progress

from .common import (Option, crop_boxes, find_path, load_rgb, map_boxes, map_points, pick,
                     resize_crop, resolve_options, to_float_images)

NAME = "cub200"
SPLITS = ("train", "test")
OPTIONS = (
    Option("size", int, 64, "output image side in pixels", minimum=8, maximum=1024),
    Option("crop", str, "none", "none: whole image; box: the bird's bounding box",
           choices=("none", "box")),
    Option("margin", float, 0.0, "with crop=box: enlarge the box by this fraction per side",
           minimum=0.0, maximum=2.0),
    Option("num_classes", int, 0, "keep the first K classes (0 = all 200)", minimum=0),
    Option("limit", int, 0, "at most this many images per split, seeded random (0 = all)",
           minimum=0),
    Option("seed", int, 0, "seed of --limit", minimum=0),
)


def _rows(path: Path, ncols: int, name: str = NAME):
    """Whitespace-split lines of a CUB table; the last column keeps its spaces."""
    if not path.is_file():
        from .common import missing
        raise missing(name, f"file {path.name!r}", path.parent)
    rows = [ln.split(maxsplit=ncols - 1) for ln in path.read_text().splitlines() if ln.strip()]
    bad = [i + 1 for i, r in enumerate(rows) if len(r) != ncols]
    if bad:
        raise ValueError(f"{path}: expected {ncols} columns, lines {bad[:5]} differ")
    return rows


def _by_id(ids: np.ndarray, values: np.ndarray, want: np.ndarray, what: str) -> np.ndarray:
    order = np.argsort(ids)
    pos = np.searchsorted(ids[order], want)
    pos = np.clip(pos, 0, len(ids) - 1)
    ok = ids[order][pos] == want
    if not ok.all():
        raise ValueError(f"{what}: no entry for image id(s) {want[~ok][:5].tolist()}")
    return values[order][pos]


def read_tables(base: Path) -> Dict[str, object]:
    """All CUB annotation tables as arrays aligned with ``images.txt`` order."""
    im = _rows(base / "images.txt", 2)
    ids = np.array([int(r[0]) for r in im])
    paths = [r[1] for r in im]
    lab = np.array([[int(a) for a in r] for r in _rows(base / "image_class_labels.txt", 2)])
    spl = np.array([[int(a) for a in r] for r in _rows(base / "train_test_split.txt", 2)])
    bb = np.array([[float(a) for a in r] for r in _rows(base / "bounding_boxes.txt", 5)])
    classes = _rows(base / "classes.txt", 2)
    parts = _rows(base / "parts" / "parts.txt", 2)
    locs = np.array([[float(a) for a in r] for r in _rows(base / "parts" / "part_locs.txt", 5)])
    class_ids = [int(r[0]) for r in classes]
    if class_ids != list(range(1, len(classes) + 1)):
        raise ValueError(f"{base / 'classes.txt'}: class ids must be 1..C in order")
    part_ids = [int(r[0]) for r in parts]
    if part_ids != list(range(1, len(parts) + 1)):
        raise ValueError(f"{base / 'parts' / 'parts.txt'}: part ids must be 1..K in order")
    labels = _by_id(lab[:, 0], lab[:, 1], ids, "image_class_labels.txt") - 1
    is_train = _by_id(spl[:, 0], spl[:, 1], ids, "train_test_split.txt") == 1
    boxes_xywh = _by_id(bb[:, 0].astype(int), bb[:, 1:], ids, "bounding_boxes.txt")
    n, k = len(ids), len(parts)
    rc = np.full((n, k, 2), np.nan)
    if len(locs):
        li = np.searchsorted(np.sort(ids), locs[:, 0].astype(int))
        row = np.argsort(ids)[np.clip(li, 0, n - 1)]
        pj = locs[:, 1].astype(int) - 1
        valid = (ids[row] == locs[:, 0].astype(int)) & (pj >= 0) & (pj < k)
        if not valid.all():
            raise ValueError("part_locs.txt: unknown image or part id(s)")
        vis = locs[:, 4] > 0
        rc[row[vis], pj[vis]] = locs[vis][:, [3, 2]]          # (row, col) = (y, x)
    names = [r[1].split(".", 1)[1] if "." in r[1] and r[1].split(".", 1)[0].isdigit() else r[1]
             for r in classes]
    return {"ids": ids, "paths": paths, "labels": labels, "is_train": is_train,
            "boxes_xywh": boxes_xywh, "landmarks": rc, "class_names": names,
            "part_names": [r[1] for r in parts]}


def convert(raw: Path, *, float_images: bool = True, source=None, **options) -> Tuple[dict, dict]:
    """Convert the CUB files under ``raw``; returns ({split: ImageSet}, {split: extras}).
    ``source`` (the fetch manifest: archive checksums) is recorded in each ``spec``."""
    opts = resolve_options(OPTIONS, options)
    base = find_path(Path(raw), "CUB_200_2011", name=NAME, is_dir=True)
    t = read_tables(base)
    n_cls = len(t["class_names"])
    k = opts["num_classes"] or n_cls
    if k > n_cls:
        raise ValueError(f"num_classes={k} but the data has {n_cls} classes")
    size = opts["size"]
    out, extras = {}, {}
    for split in SPLITS:
        idx = np.flatnonzero((t["is_train"] == (split == "train")) & (t["labels"] < k))
        idx = idx[pick(len(idx), opts["limit"], opts["seed"], split)]
        imgs = np.zeros((len(idx), 3, size, size), dtype=np.uint8)
        wh = np.zeros((len(idx), 2))
        crops = np.zeros((len(idx), 4))
        for j, i in enumerate(progress(idx, desc=f"cub200 {split}")):
            p = base / "images" / t["paths"][i]
            if not p.is_file():
                from .common import missing
                raise missing(NAME, f"image {t['paths'][i]!r}", base / "images")
            img = load_rgb(p)
            wh[j] = img.size
            b = t["boxes_xywh"][i:i + 1] if opts["crop"] == "box" else None
            crops[j] = crop_boxes(wh[j:j + 1], b, opts["margin"])[0]
            imgs[j] = resize_crop(img, size, crops[j])
        bx = t["boxes_xywh"][idx]
        boxes_rc = np.stack([bx[:, 1], bx[:, 0], bx[:, 1] + bx[:, 3], bx[:, 0] + bx[:, 2]], 1)
        ims = to_float_images(imgs) if float_images else torch.from_numpy(imgs)
        out[split] = ImageSet(
            images=ims, labels=torch.as_tensor(t["labels"][idx], dtype=torch.long),
            class_names=t["class_names"][:k],
            landmarks=torch.from_numpy(map_points(t["landmarks"][idx], crops, size)),
            landmark_names=list(t["part_names"]),
            boxes=torch.from_numpy(map_boxes(boxes_rc, crops, size)),
            spec={"source": NAME, "converter": "data_scripts.cub200", "version": 1,
                  "options": opts, "split": split, "n": int(len(idx)), "files": source or {}})
        extras[split] = {"source_size_wh": torch.from_numpy(wh.astype(np.int64)),
                         "image_ids": torch.as_tensor(t["ids"][idx], dtype=torch.long)}
    return out, extras
