"""Point-cloud datasets with planted ground truth: ``digits3d``, ``shapes3d``, ``parts3d``.

Serves paper 06 (Shen et al., "Verifiability and predictability: interpreting utilities of
network architectures for point cloud processing", CVPR 2021;
/work/shared/papers/06_pointcloud_utilities.md section 7):

* :func:`digits3d` -- D1, a 3D-MNIST analogue from scikit-learn's bundled 8x8 digits (1797 real
  images, no download): upsampled to 32x32 by bilinear interpolation, pixels drawn with
  probability ~ I^2 (jittered inside the pixel), z by emboss (z = 0.3 I + N(0, 0.01^2): a relief,
  truly 3-D) or extrusion (z ~ U[-0.125, 0.125]).
* :func:`shapes3d` -- D2, a ModelNet analogue: 8 primitives (sphere, ellipsoid, box, cylinder,
  cone, torus, capsule, pyramid) and 9 composites (airplane, chair, table, lamp, mug, bottle,
  stool, bench, shelf) with random dimensions and optional parts; near-duplicate pairs (table /
  bench / shelf, stool / chair). ``background > 0`` gives D4: that many extra points uniform in
  the unit ball at least 0.05 away from the object, with ``fg_mask`` marking the object.
* :func:`parts3d` -- D3, a ShapeNet-part analogue: the 9 composites with per-point
  ``part_labels`` into ``part_names`` ("chair/leg", ...), 2-4 parts per class.

All samples are area-uniform on the surfaces (:mod:`._cloud_shapes`), vectorised over instances and
points. Every cloud is centred on the mean of its object points and scaled so the farthest object
point has norm 1 (``max norm <= 1``). Canonical up is +z; ``rotate=True`` (or "so3") applies a
uniform random rotation, ``rotate="z"`` a random rotation about the up axis.

Non-uniform density (``density=``): ``"parts"`` multiplies each semantic part's sampling density
by a per-cloud factor, log-uniform in [0.3, 3] (exact: the factor enters the part probabilities);
``"view"`` keeps points with weight 0.1 + max(0, n . v) for a random view direction v per cloud
(n = outward normal; for digits3d the direction from the centre stands in for n), implemented as
weighted sampling without replacement from 4x as many area-uniform candidates, so the density is
only approximately proportional to the weight. Single-part primitives have one part, so
``"parts"`` leaves them uniform; digits3d has no parts and rejects ``"parts"``.

Determinism: each class draws from its own seeded streams (shape, points, density, rotation,
background), so the same ``seed`` gives the same objects whatever ``density``, ``rotate``,
``background`` or the other classes are; shapes3d and parts3d share the composites' shapes.
Samples are shuffled across classes with a seeded permutation.
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, Optional, Sequence

import numpy as np
import torch

from ._cloud_shapes import ALL_CLASSES, COMPOSITE_PARTS, COMPOSITES, area, choose, sample
from .types import PointCloudSet
from scipy.spatial import cKDTree
from sklearn.datasets import load_digits

__all__ = ["digits3d", "shapes3d", "parts3d", "random_rotations", "SHAPE_CLASSES", "PART_CLASSES"]

SHAPE_CLASSES: List[str] = list(ALL_CLASSES)
PART_CLASSES: List[str] = list(COMPOSITES)
_OVERSAMPLE = 4
_VIEW_FLOOR = 0.1
_MARGIN = 0.05
_BG_TRIES = 8


# ----------------------------------------------------------------------------- helpers
def _rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 6, *tags]))


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _check_common(points, rotate, density, seed, densities=(None, "parts", "view")):
    _check_int("points", points, 1)
    _check_int("seed", seed, 0)
    if rotate not in (False, None, True, "so3", "z"):
        raise ValueError(f"rotate must be False, True/'so3' or 'z', got {rotate!r}")
    if density not in densities:
        raise ValueError(f"density must be one of {densities}, got {density!r}")


def random_rotations(n: int, rng: np.random.Generator, kind="so3") -> np.ndarray:
    """n rotation matrices (n, 3, 3): uniform on SO(3) (normalised Gaussian quaternions), or
    uniform about the z axis (``kind="z"``)."""
    if kind == "z":
        a = rng.uniform(0, 2 * np.pi, n)
        c, s, o, z = np.cos(a), np.sin(a), np.ones(n), np.zeros(n)
        return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], 1)
    q = rng.standard_normal((n, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], 1)


def _view_select(pts, nrm, m, rng, *extra):
    """Keep m of the candidate points per cloud, weight 0.1 + max(0, n . v) (Gumbel top-k)."""
    n = pts.shape[0]
    v = rng.standard_normal((n, 1, 3))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    w = _VIEW_FLOOR + np.maximum(0.0, (nrm * v).sum(-1))
    key = np.log(w) - np.log(-np.log(np.clip(rng.random(w.shape), 1e-12, 1 - 1e-12)))
    idx = np.sort(np.argsort(-key, axis=1, kind="stable")[:, :m], axis=1)
    return (np.take_along_axis(pts, idx[..., None], 1),) + tuple(np.take_along_axis(e, idx, 1) for e in extra)


def _normalise_rotate(pts, rotate, rng):
    """Centre on the mean, rotate, scale so the max norm is 1 (float64 in, float64 out)."""
    pts = pts - pts.mean(1, keepdims=True)
    if rotate:
        pts = pts @ random_rotations(len(pts), rng, "z" if rotate == "z" else "so3").transpose(0, 2, 1)
    return pts / (np.linalg.norm(pts, axis=-1).max(1)[:, None, None] * (1 + 1e-6))


def _background(fg: np.ndarray, count: int, rng) -> np.ndarray:
    """count points per cloud, uniform in the unit ball, >= _MARGIN from every object point
    (first of _BG_TRIES candidates that qualifies; else the farthest candidate)."""
    n = fg.shape[0]
    d = rng.standard_normal((n, count * _BG_TRIES, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    cand = d * rng.random((n, count * _BG_TRIES, 1)) ** (1 / 3)

    dist = np.stack([cKDTree(fg[i]).query(cand[i], k=1)[0] for i in range(n)])
    cand, dist = cand.reshape(n, count, _BG_TRIES, 3), dist.reshape(n, count, _BG_TRIES)
    ok = dist >= _MARGIN
    idx = np.where(ok.any(-1), ok.argmax(-1), dist.argmax(-1))
    return np.take_along_axis(cand, idx[..., None, None], 2)[:, :, 0]


def _sample_class(name, n, m, density, seed):
    """Points (n, m, 3) float64 and local part indices (n, m) into the class's part list."""
    tag = SHAPE_CLASSES.index(name)
    parts = ALL_CLASSES[name](_rng(seed, tag, 0), n)
    labels = COMPOSITE_PARTS.get(name, ["surface"])
    lab = np.array([labels.index(p.label) for p in parts])
    prob = np.stack([area(p) for p in parts], 1)
    rd = _rng(seed, tag, 2)
    if density == "parts":
        prob = prob * np.exp(rd.uniform(np.log(0.3), np.log(3.0), (n, len(labels))))[:, lab]
    rs = _rng(seed, tag, 1)
    M = m * _OVERSAMPLE if density == "view" else m
    k = choose(prob, rs.random((n, M)))
    pts, nrm = np.zeros((n, M, 3)), np.zeros((n, M, 3))
    for j, part in enumerate(parts):
        p, q = sample(part, rs, M)
        sel = (k == j)[..., None]
        pts, nrm = np.where(sel, p, pts), np.where(sel, q, nrm)
    if density == "view":
        pts, k = _view_select(pts, nrm, m, rd, k)
    return pts, lab[k]


def _make(kind, classes, n_per_class, points, rotate, density, background, seed, valid):
    names = list(valid) if classes is None else list(classes)
    bad = [c for c in names if c not in valid]
    if bad or not names or len(set(names)) != len(names):
        raise ValueError(f"classes must be unique names from {list(valid)}, got {classes!r}")
    n_per_class = _check_int("n_per_class", n_per_class, 1)
    background = _check_int("background", background, 0)
    _check_common(points, rotate, density, seed)
    seed, pts_all, part_all, labels = int(seed), [], [], []
    offsets = np.cumsum([0] + [len(COMPOSITE_PARTS.get(c, ["surface"])) for c in names])
    for ci, name in enumerate(names):
        tag = SHAPE_CLASSES.index(name)
        pts, part = _sample_class(name, n_per_class, points, density, seed)
        pts = _normalise_rotate(pts, rotate, _rng(seed, tag, 3))
        pts_all.append(pts)
        part_all.append(part + offsets[ci])
        labels.append(np.full(n_per_class, ci))
    pts, part, labels = np.concatenate(pts_all), np.concatenate(part_all), np.concatenate(labels)
    fg = None
    if background:
        bg = _background(pts, background, _rng(seed, 1000, 0))
        fg = np.concatenate([np.ones(part.shape, bool), np.zeros(bg.shape[:2], bool)], 1)
        perm = np.argsort(_rng(seed, 1000, 1).random(fg.shape), axis=1)
        pts = np.take_along_axis(np.concatenate([pts, bg], 1), perm[..., None], 1)
        fg = np.take_along_axis(fg, perm, 1)
    order = _rng(seed, 1001).permutation(len(labels))
    part_names = [f"{c}/{p}" for c in names for p in COMPOSITE_PARTS.get(c, ["surface"])]
    spec = dict(generator=kind, version=1, classes=names, n_per_class=n_per_class, points=points,
                rotate=rotate, density=density, background=background, seed=seed)
    return PointCloudSet(points=torch.from_numpy(pts[order].astype(np.float32)),
                         labels=torch.from_numpy(labels[order].astype(np.int64)), class_names=names,
                         part_labels=torch.from_numpy(part[order].astype(np.int64)) if kind == "parts3d" else None,
                         part_names=part_names if kind == "parts3d" else [],
                         fg_mask=None if fg is None else torch.from_numpy(fg[order]), spec=spec)


# ----------------------------------------------------------------------------- public API
def shapes3d(n_per_class: int = 100, points: int = 512, *, classes: Optional[Sequence[str]] = None,
             rotate=False, density: Optional[str] = None, background: int = 0, seed: int = 0) -> PointCloudSet:
    """ModelNet-like clouds of :data:`SHAPE_CLASSES` (17 classes by default; ``classes`` picks a
    subset, labels follow its order). Each cloud has ``points`` object points plus ``background``
    background points (then ``fg_mask`` (N, P) is True on the object; else None)."""
    return _make("shapes3d", classes, n_per_class, points, rotate, density, background, seed, SHAPE_CLASSES)


def parts3d(n_per_class: int = 100, points: int = 512, *, classes: Optional[Sequence[str]] = None,
            rotate=False, density: Optional[str] = None, seed: int = 0) -> PointCloudSet:
    """ShapeNet-part-like clouds of the composite classes (:data:`PART_CLASSES`) with per-point
    ``part_labels`` (N, P) indexing ``part_names`` ("class/part", grouped by class)."""
    return _make("parts3d", classes, n_per_class, points, rotate, density, 0, seed, PART_CLASSES)


@lru_cache(maxsize=1)
def _digits_images():

    d = load_digits()
    img = torch.from_numpy(d.images.astype(np.float32))[:, None] / 16.0
    up = torch.nn.functional.interpolate(img, size=(32, 32), mode="bilinear", align_corners=False)
    return up[:, 0].clamp(0, 1).numpy().astype(np.float64), d.target.astype(np.int64)


def digits3d(n: Optional[int] = None, points: int = 512, *, mode: str = "emboss", rotate=False,
             density: Optional[str] = None, seed: int = 0) -> PointCloudSet:
    """3D point clouds of the 1797 real scikit-learn digits (D1). ``n=None`` uses each digit once
    (stratified order); a smaller n takes a class-balanced prefix of a seeded order; a larger n
    cycles through the digits again with fresh point samples (and rotations)."""
    _check_common(points, rotate, density, seed, densities=(None, "view"))
    if mode not in ("emboss", "extrude"):
        raise ValueError(f"mode must be 'emboss' or 'extrude', got {mode!r}")
    images, target = _digits_images()
    n = len(target) if n is None else _check_int("n", n, 1)
    seed = int(seed)
    rng = _rng(seed, 2000)
    rank = np.empty(len(target))
    for c in range(10):  # interleave classes: any prefix is class-balanced
        members = np.flatnonzero(target == c)
        rank[members[rng.permutation(len(members))]] = np.arange(len(members)) * 10 + c
    idx = np.argsort(rank, kind="stable")[np.arange(n) % len(target)]
    I = images[idx].reshape(n, -1)
    M = points * (_OVERSAMPLE if density == "view" else 1)
    rs = _rng(seed, 2001)
    pix = choose(I ** 2, rs.random((n, M)))
    row, col = pix // 32, pix % 32
    x = (col + rs.random((n, M))) / 16.0 - 1.0
    y = 1.0 - (row + rs.random((n, M))) / 16.0
    if mode == "emboss":
        z = 0.3 * np.take_along_axis(I, pix, 1) + 0.01 * rs.standard_normal((n, M))
    else:
        z = rs.uniform(-0.125, 0.125, (n, M))
    pts = np.stack([x, y, z], -1)
    if density == "view":
        c = pts - pts.mean(1, keepdims=True)
        (pts,) = _view_select(pts, c / np.maximum(np.linalg.norm(c, axis=-1, keepdims=True), 1e-12), points,
                              _rng(seed, 2002))
    pts = _normalise_rotate(pts, rotate, _rng(seed, 2003))
    spec = dict(generator="digits3d", version=1, n=n, points=points, mode=mode, rotate=rotate,
                density=density, seed=seed)
    return PointCloudSet(points=torch.from_numpy(pts.astype(np.float32)),
                         labels=torch.from_numpy(target[idx]), class_names=[str(i) for i in range(10)], spec=spec)
