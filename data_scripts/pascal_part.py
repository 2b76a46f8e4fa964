"""Pascal-Part -> :class:`ImageSet` of object instances with part masks (papers 01, 02, 04, 05).

Reads ``Annotations_Part/<image>.mat`` (Pascal-Part ``trainval.tar.gz``) and the matching
``JPEGImages/<image>.jpg`` of PASCAL VOC 2010, both found anywhere under the raw folder. Each .mat
holds a MATLAB struct ``anno`` with ``imname`` and a struct array ``objects`` (fields ``class``,
``class_ind``, ``mask`` (H x W silhouette), ``parts``: struct array with ``part_name``, ``mask``).

One sample per object instance of the chosen ``categories``: the image cropped to the object's
box (from its silhouette; ``crop=image`` keeps the whole image), resized to ``size``; labels index
``categories``; ``fg_mask`` = the silhouette; ``part_masks`` (N, P, S, S); ``landmarks`` (N, P, 2) =
centroid (row, col) of each part mask, NaN when the part is absent (as the ICNN code's
``getPart.m``); boxes = the silhouette's box.

Parts: ``merged`` (default) groups the raw parts per category exactly as
``zqs1022/interpretableCNN:code/data_input/data_input_VOC/getPart.m`` (``partMerge``) does for
bird, cat, cow, dog, horse and sheep (head / torso / legs or front_legs, back_legs / tail; the
ICNN code drops the tail of cow, horse and sheep, and so do we). ``raw`` keeps every part name,
with numbered instances (``wheel_1``, ``wheel_2``) merged into one mask.

Splits: VOC 2010 ``ImageSets/Main/train.txt`` / ``val.txt`` when present, else a deterministic
80/20 split by a hash of the image name (recorded in ``spec["split_source"]``).
Deviations: boxes come from silhouettes, not from the VOC XML (Pascal-Part has no XML); no
truncated/difficult filtering (use ``min_size``).
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from xnn_support.data.types import ImageSet
from xnn_support.core.utils import progress

from .common import (Option, crop_boxes, find_path, load_rgb, map_boxes, map_points, missing,
                     pick, resize_crop, resolve_options, sample_nearest, to_float_images)

NAME = "pascal_part"
SPLITS = ("train", "val")
CATEGORIES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
              "cow", "table", "dog", "horse", "motorbike", "person", "pottedplant", "sheep",
              "sofa", "train", "tvmonitor")
_ALIASES = {"diningtable": "table"}
_HEAD4 = ["head", "leye", "reye", "lear", "rear"]
_FLEG = ["lfuleg", "lflleg", "rfuleg", "rflleg"]
_BLEG = ["lbuleg", "lblleg", "rbuleg", "rblleg"]
MERGED: Dict[str, Dict[str, List[str]]] = {
    "bird": {"head": ["head", "leye", "reye", "beak"], "torso": ["torso", "neck", "lwing", "rwing"],
             "legs": ["lleg", "lfoot", "rleg", "rfoot"], "tail": ["tail"]},
    "cat": {"head": _HEAD4 + ["nose"], "torso": ["torso", "neck"],
            "front_legs": ["lfleg", "lfpa", "rfleg", "rfpa"],
            "back_legs": ["lbleg", "lbpa", "rbleg", "rbpa"], "tail": ["tail"]},
    "dog": {"head": _HEAD4 + ["nose", "muzzle"], "torso": ["torso", "neck"],
            "front_legs": ["lfleg", "lfpa", "rfleg", "rfpa"],
            "back_legs": ["lbleg", "lbpa", "rbleg", "rbpa"], "tail": ["tail"]},
    "cow": {"head": _HEAD4 + ["muzzle", "lhorn", "rhorn"], "torso": ["torso", "neck"],
            "front_legs": _FLEG, "back_legs": _BLEG},
    "horse": {"head": _HEAD4 + ["muzzle"], "torso": ["torso", "neck"],
              "front_legs": _FLEG + ["lfho", "rfho"], "back_legs": _BLEG + ["lbho", "rbho"]},
}
MERGED["sheep"] = MERGED["cow"]
_GROUP_ORDER = ("head", "torso", "legs", "front_legs", "back_legs", "tail")

OPTIONS = (
    Option("size", int, 64, "output image side in pixels", minimum=8, maximum=1024),
    Option("categories", str, ["bird", "cat", "cow", "dog", "horse", "sheep"],
           "object categories, comma-separated", choices=CATEGORIES + tuple(_ALIASES),
           is_list=True),
    Option("parts", str, "merged", "merged: ICNN part groups; raw: every Pascal-Part part",
           choices=("merged", "raw")),
    Option("crop", str, "box", "box: the object's box; image: the whole image",
           choices=("box", "image")),
    Option("margin", float, 0.0, "with crop=box: enlarge the box by this fraction per side",
           minimum=0.0, maximum=2.0),
    Option("min_size", int, 0, "skip objects whose box is shorter than this (pixels)", minimum=0),
    Option("limit", int, 0, "at most this many objects per split, seeded random (0 = all)",
           minimum=0),
    Option("seed", int, 0, "seed of --limit", minimum=0),
)


def _s(v) -> str:
    a = np.asarray(v)
    return str(a.reshape(-1)[0]) if a.size else ""


def read_anno(path: Path) -> Tuple[str, list]:
    """(imname, [(class, silhouette bool (H,W), [(part_name, mask bool (H,W)), ...]), ...])."""
    from scipy.io import loadmat

    m = loadmat(str(path))
    if "anno" not in m:
        raise ValueError(f"{path}: no variable 'anno' (not a Pascal-Part annotation)")
    anno = m["anno"].reshape(-1)[0]
    objs = []
    for o in np.asarray(anno["objects"]).reshape(-1):
        parts = np.asarray(o["parts"])
        plist = []
        if parts.size and parts.dtype.names:
            plist = [(_s(p["part_name"]), np.asarray(p["mask"]).astype(bool))
                     for p in parts.reshape(-1)]
        objs.append((_s(o["class"]), np.asarray(o["mask"]).astype(bool), plist))
    return _s(anno["imname"]) or path.stem, objs


def _raw_name(n: str) -> str:
    return re.sub(r"_\d+$", "", n)


def _split_of(names: List[str], jpeg_dir: Path) -> Tuple[Dict[str, str], str]:
    main = jpeg_dir.parent / "ImageSets" / "Main"
    lists = {s: main / f"{s}.txt" for s in SPLITS}
    if all(p.is_file() for p in lists.values()):
        where = {}
        for s, p in lists.items():
            for ln in p.read_text().split():
                where[ln.strip()] = s
        return where, "VOC2010 ImageSets/Main"
    return ({n: ("val" if zlib.crc32(n.encode()) % 5 == 0 else "train") for n in names},
            "crc32(imname) % 5 == 0 -> val")


def convert(raw: Path, *, float_images: bool = True, source=None, **options) -> Tuple[dict, dict]:
    """Convert Pascal-Part objects under ``raw``; returns ({split: ImageSet}, {split: extras})."""
    opts = resolve_options(OPTIONS, options)
    cats = [_ALIASES.get(c, c) for c in opts["categories"]]
    if len(set(cats)) != len(cats):
        raise ValueError(f"duplicate categories in {opts['categories']}")
    if opts["parts"] == "merged":
        bad = [c for c in cats if c not in MERGED]
        if bad:
            raise ValueError(f"parts=merged is defined for {sorted(MERGED)}; got {bad} "
                             "(use parts=raw)")
        present = {g for c in cats for g in MERGED[c]}
        part_names = [g for g in _GROUP_ORDER if g in present]
    ann_dir = find_path(Path(raw), "Annotations_Part", name=NAME, is_dir=True)
    jpeg_dir = find_path(Path(raw), "JPEGImages", name=NAME, is_dir=True)
    files = sorted(ann_dir.glob("*.mat"))
    if not files:
        raise missing(NAME, "*.mat annotations", ann_dir)
    where, split_source = _split_of([f.stem for f in files], jpeg_dir)
    size = opts["size"]
    samples = {s: [] for s in SPLITS}
    for f in progress(files, desc="pascal_part"):
        split = where.get(f.stem)
        if split is None:
            continue
        imname, objs = read_anno(f)
        img = None
        for oi, (cls, sil, parts) in enumerate(objs):
            cls = _ALIASES.get(cls, cls)
            if cls not in cats or not sil.any():
                continue
            rows, cols = np.flatnonzero(sil.any(1)), np.flatnonzero(sil.any(0))
            box_rc = np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1], dtype=np.float64)
            if min(box_rc[2] - box_rc[0], box_rc[3] - box_rc[1]) < opts["min_size"]:
                continue
            if img is None:
                p = jpeg_dir / f"{imname}.jpg"
                if not p.is_file():
                    raise missing(NAME, f"image {p.name!r}", jpeg_dir)
                img = load_rgb(p)
                if img.size != (sil.shape[1], sil.shape[0]):
                    raise ValueError(f"{f.name}: mask {sil.shape} does not match image {img.size}")
            wh = np.array([[sil.shape[1], sil.shape[0]]])
            xywh = np.array([[box_rc[1], box_rc[0], box_rc[3] - box_rc[1], box_rc[2] - box_rc[0]]])
            crop = crop_boxes(wh, xywh if opts["crop"] == "box" else None, opts["margin"])[0]
            if opts["parts"] == "merged":
                groups = {g: set(MERGED[cls].get(g, ())) for g in part_names}
                pm = {g: np.zeros_like(sil) for g in part_names}
                for pn, mk in parts:
                    for g, members in groups.items():
                        if pn in members:
                            pm[g] |= mk
            else:
                pm = {}
                for pn, mk in parts:
                    key = _raw_name(pn)
                    pm[key] = pm[key] | mk if key in pm else mk.copy()
            samples[split].append({
                "image": resize_crop(img, size, crop), "label": cats.index(cls), "crop": crop,
                "fg": sample_nearest(sil, crop, size), "box": box_rc,
                "parts": {k: (sample_nearest(v, crop, size), _centroid(v)) for k, v in pm.items()},
                "ref": (imname, oi)})
    if opts["parts"] == "raw":
        part_names = sorted({k for s in samples.values() for d in s for k in d["parts"]})
    out, extras = {}, {}
    for split in SPLITS:
        ss = samples[split]
        ss = [ss[i] for i in pick(len(ss), opts["limit"], opts["seed"], split)]
        n, p = len(ss), len(part_names)
        masks = np.zeros((n, p, size, size), dtype=bool)
        cent = np.full((n, p, 2), np.nan)
        for j, d in enumerate(ss):
            for q, g in enumerate(part_names):
                if g in d["parts"]:
                    masks[j, q], cent[j, q] = d["parts"][g]
        crops = np.array([d["crop"] for d in ss]).reshape(n, 4)
        imgs = np.stack([d["image"] for d in ss]) if n else np.zeros((0, 3, size, size), np.uint8)
        out[split] = ImageSet(
            images=to_float_images(imgs) if float_images else torch.from_numpy(imgs),
            labels=torch.as_tensor([d["label"] for d in ss], dtype=torch.long),
            class_names=cats,
            landmarks=torch.from_numpy(map_points(cent, crops, size)),
            landmark_names=list(part_names),
            part_masks=torch.from_numpy(masks), part_names=list(part_names),
            fg_mask=torch.from_numpy(np.stack([d["fg"] for d in ss]) if n
                                     else np.zeros((0, size, size), dtype=bool)),
            boxes=torch.from_numpy(map_boxes(np.array([d["box"] for d in ss]).reshape(n, 4),
                                             crops, size)),
            spec={"source": NAME, "converter": "data_scripts.pascal_part", "version": 1,
                  "options": opts, "split": split, "n": n, "split_source": split_source,
                  "files": source or {}})
        extras[split] = {"objects": [[d["ref"][0], int(d["ref"][1])] for d in ss]}
    return out, extras


def _centroid(mask: np.ndarray) -> np.ndarray:
    """(row, col) mean of a boolean mask's pixels; NaN when empty."""
    r, c = np.nonzero(mask)
    return np.array([r.mean(), c.mean()]) if len(r) else np.full(2, np.nan)
