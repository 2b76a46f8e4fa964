"""``creatures``: 2D part-based images with planted part-level ground truth.

Serves papers 01 (explanatory graph; spec 01_explanatory_graph.md section 7) and 02
(interpretable CNNs; 02_interpretable_cnn.md section 7), and the image experiments of 04/05.
Categories are assembled from parts (see :mod:`._creatures_shapes`): ``bird`` (head, body,
tail, legs), ``quadruped`` (same part names, other shapes and its own landmarks), ``wheels`` (a
cart whose two wheels look identical but get separate landmarks and masks) and ``texture`` (a
textured blob, no parts). Each object gets a random similarity pose (scale, rotation +-pi/7,
left/right flip with p = 0.5, translation +-12% of S, or +-3% with ``object_centric=True``) and
per-part articulation. Negatives (label 0) show 1-3 parts of the chosen categories scattered
with random poses, so the label depends on configuration, not on which parts are present.

Ground truth (all in an :class:`~xnn_support.data.types.ImageSet`):

* ``landmarks`` (N,K,2) float32 (row, col) pixels; NaN when the landmark is not part of the
  image's category, falls outside the canvas, or its pixel is not (visibly) its part, e.g. under
  an occluder. ``LANDMARK_PARTS`` maps each landmark to its part.
* ``part_masks`` (N,P,S,S) bool: the *visible* pixels of each part (disjoint within an image).
  Part names are semantic and shared: a quadruped's head is ``head`` like a bird's.
* ``fg_mask`` (N,S,S) bool: union of the object's parts (the texture blob for ``texture``).
  Decision for negatives: the scattered parts ARE foreground (they are object pixels, and the
  foreground/background comparisons of paper 04 should treat them so), but their ``part_masks``
  are all False (there is no object whose parts they are), landmarks are NaN, boxes are NaN.
* ``boxes`` (N,4) float32 (row0, col0, row1, col1) of the visible object, end-exclusive so that
  ``img[..., r0:r1, c0:c1]`` is the tight crop; NaN for negatives.

Deviations / design notes: images are float32 in [0,1] with Gaussian pixel noise sigma 0.03.
Part colours are random per part, pushed away from the background's mean colour when too close;
head and body share a colour in half of the birds and quadrupeds. ``occlusion`` is the
probability that a positive image gets an opaque, axis-aligned, smoothly shaded rectangle over
one of its landmarks (which then becomes NaN); truncation at the canvas border happens naturally
for large translations. Texture patches are not used as scattered parts (texture has no parts),
so with ``categories=("texture",)`` negatives are background only. All random parameters are
drawn up front from ``numpy.random.default_rng(seed)`` and the images are rendered in chunks of a
size fixed by S, so the output is bit-identical for the same arguments on CPU.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
import torch

from ._creatures_bg import BACKGROUNDS, render_background, sample_background
from ._creatures_draw import Canvas
from ._creatures_shapes import (CATEGORIES, LANDMARK_NAMES, LANDMARK_PARTS, MODELS, PART_NAMES,
                                draw_scattered, scatter_kinds)
from .types import ImageSet
import xnn_support

__all__ = ["creatures", "SIZES", "CATEGORIES", "PART_NAMES", "LANDMARK_NAMES", "LANDMARK_PARTS"]

SIZES = (32, 64, 128, 224)
NOISE_SIGMA = 0.03
_F = np.float32


# ------------------------------------------------------------------------------ validation
def _check(n, size, categories, negatives, background, occlusion, seed):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(size, bool) or size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
    if isinstance(categories, str):
        categories = (categories,)
    categories = tuple(categories)
    if not categories:
        raise ValueError(f"categories must not be empty; valid: {list(CATEGORIES)}")
    bad = [c for c in categories if c not in MODELS]
    if bad:
        raise ValueError(f"unknown categories {bad}; valid: {list(CATEGORIES)}")
    if len(set(categories)) != len(categories):
        raise ValueError(f"categories must be unique, got {list(categories)}")
    for name, v in (("negatives", negatives), ("occlusion", occlusion)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                or not math.isfinite(v) or not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; valid: {list(BACKGROUNDS)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return categories


# ------------------------------------------------------------------------------ sampling
def _labels(n, n_cat, negatives, rng):
    n_neg = int(round(negatives * n))
    n_pos = n - n_neg
    counts = [n_pos // n_cat + (i < n_pos % n_cat) for i in range(n_cat)]
    lab = np.concatenate([np.zeros(n_neg, np.int64)] + [np.full(c, i + 1, np.int64) for i, c in enumerate(counts)])
    return lab[rng.permutation(n)]


def _pose(model_scale, centre, m, S, rng, jitter, theta=None):
    """Similarity pose per image: origin (cr, cc), s px/unit, rotation, flip."""
    s = rng.uniform(*model_scale, m).astype(_F) * S
    th = rng.uniform(-np.pi / 7, np.pi / 7, m).astype(_F) if theta is None else theta
    f = np.where(rng.random(m) < 0.5, 1.0, -1.0).astype(_F)
    t = rng.uniform(-jitter, jitter, (m, 2)).astype(_F) * S
    ox, oy = centre
    c0 = (S - 1) / 2.0
    cc = c0 + t[:, 1] - s * (np.cos(th) * f * ox - np.sin(th) * oy)
    cr = c0 + t[:, 0] + s * (np.sin(th) * f * ox + np.cos(th) * oy)
    return {"cr": cr.astype(_F), "cc": cc.astype(_F), "s": s, "theta": th, "flip": f}


def _contrast(col, bg_mean, min_dist=0.35):
    """Push a (B,3) colour away from the background mean colour when they are too close."""
    close = np.linalg.norm(col - bg_mean, axis=1, keepdims=True) < min_dist
    pushed = np.where(bg_mean > 0.5, col * 0.35, 0.65 + 0.35 * col)
    return np.where(close, pushed, col).astype(_F)


def _take(d: Dict[str, np.ndarray], rows) -> Dict[str, np.ndarray]:
    return {k: v[rows] for k, v in d.items()}


def _prepare_colours(p, bg_mean):
    return {k: (_contrast(v, bg_mean) if k.startswith("col_") else v) for k, v in p.items()}


def object_landmarks(category: str, p: Dict[str, np.ndarray], pose: Dict[str, np.ndarray]) -> np.ndarray:
    """(B,K,2) pixel (row, col) of every landmark of ``category`` for explicit articulation
    parameters ``p`` and ``pose`` (NaN for other categories' landmarks; visibility NOT applied)."""
    B = len(pose["s"])
    out = np.full((B, len(LANDMARK_NAMES), 2), np.nan, _F)
    c, sn = np.cos(pose["theta"]), np.sin(pose["theta"])
    for name, (x, y) in MODELS[category].landmarks(p).items():
        fx = pose["flip"] * np.asarray(x, _F)
        k = LANDMARK_NAMES.index(name)
        out[:, k, 1] = pose["cc"] + pose["s"] * (c * fx - sn * y)
        out[:, k, 0] = pose["cr"] - pose["s"] * (sn * fx + c * y)
    return out


def render_objects(category: str, p, pose, S: int, img=None):
    """Draw ``category`` with explicit parameters into ``img`` ((B,3,S,S), grey if None).
    Returns (img, label map (B,S,S) int8). Exposed for tests (flip consistency) and debugging."""
    B = len(pose["s"])
    img = np.full((B, 3, S, S), 0.5, _F) if img is None else img
    label = np.zeros((B, S, S), np.int8)
    cv = Canvas(img, label, outline_px=max(0.7, S / 64))
    cv.set_frame(pose["cr"], pose["cc"], pose["s"], pose["theta"], pose["flip"])
    MODELS[category].draw(cv, p)
    return img, label


# ------------------------------------------------------------------------------ public API
def creatures(n: int = 2000, size: int = 64, *, categories: Sequence[str] = CATEGORIES,
              negatives: float = 0.2, background: str = "clutter", object_centric: bool = False,
              occlusion: float = 0.0, seed: int = 0) -> ImageSet:
    """Generate ``n`` part-based creature images of ``size`` px (see the module docstring).

    Args:
        n: number of images (> 0).
        size: 32, 64, 128 or 224.
        categories: subset of ``("bird", "quadruped", "wheels", "texture")``; label i + 1.
        negatives: fraction of images (label 0) with scattered, unassembled parts.
        background: ``"plain"``, ``"clutter"`` or ``"photo"`` (crops of skimage photos).
        object_centric: translation jitter x0.25 (objects near the centre; for graph mining).
        occlusion: probability that a positive image has one landmark occluded (-> NaN).
        seed: non-negative integer; same arguments and seed give identical tensors.

    Returns:
        ImageSet with class_names ``["negative", *categories]``, landmark_names
        (:data:`LANDMARK_NAMES`), part_names (:data:`PART_NAMES`) and a JSON-able ``spec``.
    """
    categories = _check(n, size, categories, negatives, background, occlusion, seed)
    n, S = int(n), int(size)
    rng = np.random.default_rng(int(seed))
    labels = _labels(n, len(categories), float(negatives), rng)
    jitter = 0.12 * (0.25 if object_centric else 1.0)
    bgp = sample_background(background, n, S, rng)
    rows, params, poses = _sample_objects(categories, labels, S, rng, jitter)
    kinds, scat = _sample_scattered(categories, labels, rows, S, rng)
    # occluders (positives only): which landmark, offset and half sizes in px, colours
    occ = {"on": rng.random(n) < occlusion, "pick": rng.random(n),
           "off": rng.uniform(-0.25, 0.25, (n, 2)).astype(_F),
           "half": rng.uniform(0.07, 0.13, (n, 2)).astype(_F) * S,
           "cols": rng.uniform(0.1, 0.9, (n, 2, 3)).astype(_F)}
    images, label_map, lms = _render(labels, rows, categories, params, poses, kinds, scat, occ, background, bgp,
                                     S, seed)
    return _assemble(images, label_map, lms, labels, categories, dict(
        generator="creatures", n=n, size=S, categories=list(categories), negatives=float(negatives),
        background=background, object_centric=bool(object_centric), occlusion=float(occlusion),
        seed=int(seed)))


def _sample_objects(categories, labels, S, rng, jitter):
    """Per-category articulation, colours and pose, drawn up front for every image; ``rows``: each
    image's row in its category's (or the negatives') parameter arrays."""
    rows = np.zeros(len(labels), np.int64)
    params, poses = {}, {}
    for ci, cat in enumerate(categories):
        idx = np.nonzero(labels == ci + 1)[0]
        rows[idx] = np.arange(len(idx))
        m = MODELS[cat]
        params[cat] = m.sample(rng, len(idx))
        poses[cat] = _pose(m.scale, m.centre, len(idx), S, rng, jitter)
    return rows, params, poses


def _sample_scattered(categories, labels, rows, S, rng):
    """Negatives: up to 3 scattered parts, each with its own random frame; fills ``rows`` of the
    negatives and returns (kinds, one slot per part)."""
    neg = np.nonzero(labels == 0)[0]
    rows[neg] = np.arange(len(neg))
    kinds = scatter_kinds(categories)
    scat = []
    if len(neg) and kinds:
        n_parts = rng.integers(1, 4, len(neg))
        for j in range(3):
            kind = rng.integers(0, len(kinds), len(neg))
            kind[j >= n_parts] = -1
            slot = {"kind": kind, "cparams": {}, "poses": {}}
            for c in categories:
                m = MODELS[c]
                slot["cparams"][c] = m.sample(rng, len(neg))
                pose = _pose(m.scale, (0.0, 0.0), len(neg), S, rng, 0.35,
                             theta=rng.uniform(-np.pi, np.pi, len(neg)).astype(_F))
                slot["poses"][c] = pose
            scat.append(slot)
    return kinds, scat


def _render(labels, rows, categories, params, poses, kinds, scat, occ, background, bgp, S, seed):
    """Render all images in chunks of a size fixed by S: background, objects, scattered parts,
    occluders, pixel noise. Returns (images, label map, landmarks before visibility)."""
    n = len(labels)
    chunk = max(1, (1 << 18) // (S * S))
    seeds = np.random.SeedSequence(int(seed)).spawn((n + chunk - 1) // chunk)

    images = np.empty((n, 3, S, S), _F)
    label_map = np.zeros((n, S, S), np.int8)
    lms = np.full((n, len(LANDMARK_NAMES), 2), np.nan, _F)
    for ck, a in enumerate(range(0, n, chunk)):
        gi = np.arange(a, min(a + chunk, n))
        img = render_background(background, bgp, gi, S)
        lab = np.zeros((len(gi), S, S), np.int8)
        bg_mean = img.mean(axis=(2, 3))
        _draw_creatures(img, lab, lms, gi, labels, rows, categories, params, poses, bg_mean, S)
        _draw_negatives(img, lab, gi, labels, rows, kinds, scat, bg_mean, S)
        _occlude(img, lab, lms[gi], occ, gi, labels[gi] > 0, S)
        rng_c = np.random.default_rng(seeds[ck])
        img += rng_c.standard_normal(img.shape, dtype=_F) * _F(NOISE_SIGMA)
        np.clip(img, 0.0, 1.0, out=img)
        images[gi], label_map[gi] = img, lab
    return images, label_map, lms


def _draw_creatures(img, lab, lms, gi, labels, rows, categories, params, poses, bg_mean, S):
    """Draw the positives of chunk ``gi`` into ``img``/``lab`` in place; their landmarks into ``lms``."""
    for ci, cat in enumerate(categories):
        sel = np.nonzero(labels[gi] == ci + 1)[0]
        if not len(sel):
            continue
        r = rows[gi[sel]]
        p = _prepare_colours(_take(params[cat], r), bg_mean[sel])
        pose = _take(poses[cat], r)
        sub_img, sub_lab = render_objects(cat, p, pose, S, img=img[sel])
        img[sel], lab[sel] = sub_img, sub_lab
        lms[gi[sel]] = object_landmarks(cat, p, pose)


def _draw_negatives(img, lab, gi, labels, rows, kinds, scat, bg_mean, S):
    """Draw the scattered parts of the negatives of chunk ``gi`` into ``img``/``lab`` in place."""
    negs = np.nonzero(labels[gi] == 0)[0]
    for slot in scat:
        for kk, (cat, kind) in enumerate(kinds):
            sel = negs[slot["kind"][rows[gi[negs]]] == kk]
            if not len(sel):
                continue
            r = rows[gi[sel]]
            p = _prepare_colours(_take(slot["cparams"][cat], r), bg_mean[sel])
            pose = _take(slot["poses"][cat], r)
            cv = Canvas(img[sel], lab[sel], outline_px=max(0.7, S / 64))
            cv.set_frame(pose["cr"], pose["cc"], pose["s"], pose["theta"], pose["flip"])
            draw_scattered(cv, cat, kind, p)
            img[sel], lab[sel] = cv.img, cv.label


def _occlude(img, lab, lms, occ, gi, positive, S):
    """Opaque shaded rectangle over one (pre-visibility) landmark of selected positive images."""
    valid = ~np.isnan(lms[:, :, 0])
    nvalid = valid.sum(1)
    sel = np.nonzero(occ["on"][gi] & positive & (nvalid > 0))[0]
    if not len(sel):
        return
    pick = np.minimum((occ["pick"][gi[sel]] * nvalid[sel]).astype(np.int64), nvalid[sel] - 1)
    k = np.argmax(np.cumsum(valid[sel], axis=1) > pick[:, None], axis=1)  # pick-th valid landmark
    centre = lms[sel, k] + occ["off"][gi[sel]] * occ["half"][gi[sel]]
    half = occ["half"][gi[sel]]
    r = np.arange(S, dtype=_F).reshape(1, S, 1)
    c = np.arange(S, dtype=_F).reshape(1, 1, S)
    inside = (np.abs(r - centre[:, 0, None, None]) <= half[:, 0, None, None]) & \
             (np.abs(c - centre[:, 1, None, None]) <= half[:, 1, None, None])
    t = np.clip((r - centre[:, 0, None, None]) / (2 * half[:, 0, None, None]) + 0.5, 0, 1)
    cols = occ["cols"][gi[sel]]
    shade = cols[:, 0, :, None, None] * (1 - t[:, None]) + cols[:, 1, :, None, None] * t[:, None]
    img[sel] = np.where(inside[:, None], shade, img[sel])
    lab[sel] = np.where(inside, 0, lab[sel])


def _assemble(images, label_map, lms, labels, categories, spec) -> ImageSet:

    n, S = images.shape[0], images.shape[-1]
    # visibility: inside the canvas and on a pixel labelled with the landmark's own part
    pid = np.array([PART_NAMES.index(LANDMARK_PARTS[k]) + 1 for k in LANDMARK_NAMES], np.int8)
    rc = np.floor(np.nan_to_num(lms, nan=-1.0) + 0.5).astype(np.int64)
    inside = (rc >= 0).all(-1) & (rc < S).all(-1) & ~np.isnan(lms).any(-1)
    rcc = np.clip(rc, 0, S - 1)
    on_part = label_map[np.arange(n)[:, None], rcc[..., 0], rcc[..., 1]] == pid[None]
    lms = np.where((inside & on_part)[..., None], lms, np.nan).astype(_F)

    fg = label_map > 0
    part_masks = label_map[:, None] == np.arange(1, len(PART_NAMES) + 1, dtype=np.int8)[None, :, None, None]
    part_masks[labels == 0] = False
    rows_any, cols_any = fg.any(2), fg.any(1)
    has = rows_any.any(1) & (labels > 0)
    idx = np.arange(S)
    boxes = np.full((n, 4), np.nan, _F)
    if has.any():
        ra, ca = rows_any[has], cols_any[has]
        boxes[has] = np.stack([np.where(ra, idx, S).min(1), np.where(ca, idx, S).min(1),
                               np.where(ra, idx, -1).max(1) + 1, np.where(ca, idx, -1).max(1) + 1], 1)
    spec["version"] = xnn_support.__version__
    return ImageSet(images=torch.from_numpy(images), labels=torch.from_numpy(labels),
                    class_names=["negative", *categories], landmarks=torch.from_numpy(lms),
                    landmark_names=list(LANDMARK_NAMES), part_masks=torch.from_numpy(part_masks),
                    part_names=list(PART_NAMES), fg_mask=torch.from_numpy(fg),
                    boxes=torch.from_numpy(boxes), spec=spec)
