"""Surface primitives and composite objects for the point-cloud generators (private).

Serves paper 06 (Shen et al., point-cloud utilities; /work/shared/papers/06_pointcloud_utilities.md
section 7, datasets D2 "Prims-N" and D3 "Parts-16"). :mod:`xnn_support.data.clouds` is the public
side; this module only knows geometry.

Design: an object is a list of :class:`Part` (a primitive, its random dimensions for a whole batch
of n instances as arrays, a rigid placement R, t, a semantic part name, and an optional per-instance
presence flag). Every primitive has an exact surface area and an area-uniform sampler that returns
points and outward unit normals for all n instances at once, shape (n, m, 3); there is no loop
over instances or points. Curved primitives whose parametrisation is not area-preserving
(ellipsoid, torus) use vectorised rejection with a fixed number of tries (24); the acceptance rate
is >= min/max axis (ellipsoid) or (R - r)/(R + r) (torus), so for the dimensions used here the
fallback to the last try is rare (measured < 1e-3 of the points) and only biases density slightly.

Canonical up is +z. A composite with an absent optional part (chair arms, plane engines, extra
shelf boards) gives that part zero area, so it receives no points.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

_TRIES = 24
_EPS = 1e-12


@dataclass
class Part:
    kind: str                       # box | frustum | ellipsoid | torus | capsule | pyramid
    prm: Dict[str, np.ndarray]      # per-instance dimensions, arrays of shape (n,) or (n, 3)
    t: np.ndarray                   # (n, 3) translation
    label: str                      # semantic part name, e.g. "leg"
    R: Optional[np.ndarray] = None  # (n, 3, 3) rotation (applied before t)
    present: Optional[np.ndarray] = None  # (n,) bool; absent parts get no points
    caps: tuple = (True, True)      # frustum: (bottom, top) discs drawn


def choose(prob: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF choice per row: prob (n, K) >= 0, u (n, m) uniform in [0, 1) -> indices (n, m).

    One ``searchsorted`` over all rows (row i's CDF is shifted by i), so memory stays O(n (K + m)).
    A row with zero total probability chooses uniformly."""
    n, K = prob.shape
    tot = prob.sum(1, keepdims=True)
    prob = np.where(tot > 0, prob, 1.0)
    cdf = np.cumsum(prob, 1) / prob.sum(1, keepdims=True)
    cdf[:, -1] = 1.0
    rows = np.arange(n, dtype=np.float64)[:, None]
    u = np.clip(u, 1e-9, 1 - 1e-9)
    idx = np.searchsorted((cdf + rows).ravel(), (u + rows).ravel()).reshape(u.shape)
    return np.clip(idx - (np.arange(n) * K)[:, None], 0, K - 1)


def _unit(v):
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), _EPS)


def _sphere_dirs(rng, shape):
    return _unit(rng.standard_normal(shape + (3,)))


def _reject(rng, accept_p, n, m):
    """Index (n, m) of the first accepted try; accept_p (n, m, T) in [0, 1]."""
    ok = rng.random(accept_p.shape) < accept_p
    ok[..., -1] = True
    return ok.argmax(-1)


def _pick(a, idx):
    return np.take_along_axis(a, idx[..., None, None], axis=2)[:, :, 0]


def _tri_sample(rng, tris, m):
    """tris (n, T, 3, 3) -> points, normals (n, m, 3); normals point away from the centroid."""
    e1, e2 = tris[:, :, 1] - tris[:, :, 0], tris[:, :, 2] - tris[:, :, 0]
    cr = np.cross(e1, e2)
    k = choose(0.5 * np.linalg.norm(cr, axis=-1), rng.random((tris.shape[0], m)))
    tri = np.take_along_axis(tris, k[..., None, None], axis=1)  # (n, m, 3, 3)
    s, u2 = np.sqrt(rng.random((tris.shape[0], m, 1))), rng.random((tris.shape[0], m, 1))
    p = (1 - s) * tri[:, :, 0] + s * (1 - u2) * tri[:, :, 1] + s * u2 * tri[:, :, 2]
    nrm = _unit(np.take_along_axis(cr, k[..., None], axis=1))
    c = tris.reshape(tris.shape[0], -1, 3).mean(1)[:, None]
    nrm = np.where(((p - c) * nrm).sum(-1, keepdims=True) < 0, -nrm, nrm)
    return p, nrm


def _box_tris(size):
    h = size[:, None, :] / 2 * np.array([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1],
                                         [-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]])
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
                  [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]])
    return h[:, f]  # (n, 12, 3, 3)


def _pyramid_tris(base, height):
    b = base[:, None] / 2
    z = np.zeros_like(b)
    v = np.stack([np.concatenate([-b, b, b, -b, z], 1), np.concatenate([-b, -b, b, b, z], 1),
                  np.concatenate([z, z, z, z, height[:, None]], 1)], -1)  # (n, 5, 3)
    f = np.array([[0, 1, 2], [0, 2, 3], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    return v[:, f]


def area(part: Part) -> np.ndarray:
    """Exact surface area per instance (n,); zero for absent instances."""
    p, k = part.prm, part.kind
    if k in ("box", "pyramid"):
        tris = _box_tris(p["size"]) if k == "box" else _pyramid_tris(p["base"], p["height"])
        cr = np.cross(tris[:, :, 1] - tris[:, :, 0], tris[:, :, 2] - tris[:, :, 0])
        a = 0.5 * np.linalg.norm(cr, axis=-1).sum(1)
    elif k == "frustum":
        r0, r1, h = p["r0"], p["r1"], p["h"]
        a = np.pi * (r0 + r1) * np.sqrt(h ** 2 + (r0 - r1) ** 2)
        a = a + part.caps[0] * np.pi * r0 ** 2 + part.caps[1] * np.pi * r1 ** 2
    elif k == "ellipsoid":  # Knud Thomsen's approximation (relative error < 1.1 %)
        ax = p["axes"] ** 1.6075
        pairs = ax[:, 0] * ax[:, 1] + ax[:, 0] * ax[:, 2] + ax[:, 1] * ax[:, 2]
        a = 4 * np.pi * (pairs / 3) ** (1 / 1.6075)
    elif k == "torus":
        a = 2 * np.pi * p["r"] * p["R"] * p["arc"]
    elif k == "capsule":
        a = 2 * np.pi * p["r"] * p["L"] + 4 * np.pi * p["r"] ** 2
    else:
        raise ValueError(f"unknown primitive {k!r}")
    return a if part.present is None else a * part.present


def sample(part: Part, rng: np.random.Generator, m: int):
    """Area-uniform surface samples of every instance: points, normals (n, m, 3), placed by R, t."""
    p, k = part.prm, part.kind
    n = part.t.shape[0]
    if k in ("box", "pyramid"):
        tris = _box_tris(p["size"]) if k == "box" else _pyramid_tris(p["base"], p["height"])
        pts, nrm = _tri_sample(rng, tris, m)
    elif k == "frustum":
        r0, r1, h = (p[q][:, None] for q in ("r0", "r1", "h"))
        s = np.sqrt(h ** 2 + (r0 - r1) ** 2)
        areas = np.concatenate([np.pi * (r0 + r1) * s, part.caps[0] * np.pi * r0 ** 2,
                                part.caps[1] * np.pi * r1 ** 2], 1)
        reg = choose(areas, rng.random((n, m)))
        u, phi = rng.random((n, m)), rng.uniform(0, 2 * np.pi, (n, m))
        t = u * (r0 + r1) / np.maximum(r0 + np.sqrt(r0 ** 2 + u * (r1 ** 2 - r0 ** 2)), _EPS)
        rad = np.where(reg == 0, r0 + (r1 - r0) * t, np.sqrt(rng.random((n, m))) * np.where(reg == 1, r0, r1))
        z = np.where(reg == 0, t * h, np.where(reg == 1, 0.0, h))
        c, sn = np.cos(phi), np.sin(phi)
        pts = np.stack([rad * c, rad * sn, z], -1)
        side = np.stack([h / s * c, h / s * sn, np.broadcast_to((r0 - r1) / s, c.shape)], -1)
        cap = np.zeros_like(side)
        cap[..., 2] = np.where(reg == 1, -1.0, 1.0)
        nrm = np.where((reg == 0)[..., None], side, cap)
    elif k == "ellipsoid":
        ax = p["axes"][:, None, None, :]
        d = _sphere_dirs(rng, (n, m, _TRIES))
        g = np.linalg.norm(d / ax, axis=-1)
        idx = _reject(rng, g * ax.min(-1), n, m)
        d = _pick(d, idx)
        pts, nrm = d * ax[:, :, 0], _unit(d / ax[:, :, 0])
    elif k == "torus":
        R, r = p["R"][:, None, None], p["r"][:, None, None]
        th = rng.uniform(0, 2 * np.pi, (n, m, _TRIES))
        keep = _reject(rng, (R + r * np.cos(th)) / (R + r), n, m)
        th = np.take_along_axis(th, keep[..., None], 2)[..., 0]
        phi = p["phi0"][:, None] + rng.random((n, m)) * p["arc"][:, None]
        R, r = R[..., 0], r[..., 0]
        nrm = np.stack([np.cos(th) * np.cos(phi), np.cos(th) * np.sin(phi), np.sin(th)], -1)
        rho = R + r * np.cos(th)
        pts = np.stack([rho * np.cos(phi), rho * np.sin(phi), r * np.sin(th)], -1)
    elif k == "capsule":
        r, L = p["r"][:, None], p["L"][:, None]
        reg = choose(np.concatenate([2 * np.pi * r * L, 4 * np.pi * r ** 2], 1), rng.random((n, m)))
        d = _sphere_dirs(rng, (n, m))
        phi = rng.uniform(0, 2 * np.pi, (n, m))
        side = np.stack([np.cos(phi), np.sin(phi), np.zeros_like(phi)], -1)
        nrm = np.where((reg == 0)[..., None], side, d)
        z = np.where(reg == 0, (rng.random((n, m)) - 0.5) * L, np.sign(d[..., 2]) * L / 2)
        pts = nrm * r[..., None] + np.stack([np.zeros_like(z), np.zeros_like(z), z], -1)
    else:
        raise ValueError(f"unknown primitive {k!r}")
    if part.R is not None:
        pts, nrm = pts @ part.R.transpose(0, 2, 1), nrm @ part.R.transpose(0, 2, 1)
    return pts + part.t[:, None], nrm


# ----------------------------------------------------------------------------- placements
def rot(axis: str, ang) -> np.ndarray:
    """Rotation matrices (n, 3, 3) about a coordinate axis by angles ``ang`` (n,)."""
    ang = np.asarray(ang, np.float64)
    c, s, o, z = np.cos(ang), np.sin(ang), np.ones_like(ang), np.zeros_like(ang)
    m = {"x": [[o, z, z], [z, c, -s], [z, s, c]], "y": [[c, z, s], [z, o, z], [-s, z, c]],
         "z": [[c, -s, z], [s, c, z], [z, z, o]]}[axis]
    return np.stack([np.stack(row, -1) for row in m], -2)


def _xyz(*cols):
    return np.stack(np.broadcast_arrays(*cols), -1).astype(np.float64)


# ----------------------------------------------------------------------------- classes
def _u(rng, n, *ranges):
    """One uniform array (n,) per (lo, hi) range, drawn in order."""
    return tuple(rng.uniform(lo, hi, n) for lo, hi in ranges)


def _at(n, x=0.0, y=0.0, z=0.0):
    """Translations (n, 3) from scalars or arrays."""
    return _xyz(np.zeros(n) + x, y, z)


def _cone(rng, n):
    r0, h = _u(rng, n, (0.4, 0.8), (0.8, 1.8))
    return [Part("frustum", dict(r0=r0, r1=np.zeros(n), h=h), _at(n), "surface", caps=(True, False))]


def _cyl(rng, n):
    r, h = _u(rng, n, (0.3, 0.6), (0.8, 2.0))
    return [Part("frustum", dict(r0=r, r1=r, h=h), _at(n), "surface")]


def _legs(rng, n, w, d, H, inset, label="leg", square=False, count=4):
    """Vertical legs (cylinders or square boxes) under a w x d footprint, from z=0 to z=H."""
    (th,) = _u(rng, n, (0.04, 0.07))
    out = []
    corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)] if count == 4 else \
        [(np.cos(a), np.sin(a)) for a in (0.5 * np.pi, 0.5 * np.pi + 2.0944, 0.5 * np.pi + 4.1888)]
    for sx, sy in corners:
        x, y = sx * (w / 2 - inset), sy * (d / 2 - inset)
        if square:
            out.append(Part("box", dict(size=_xyz(2 * th, 2 * th, H)), _at(n, x, y, H / 2), label))
        else:
            out.append(Part("frustum", dict(r0=th, r1=th, h=H), _at(n, x, y), label))
    return out


def _table(rng, n):
    w, d, t, H = _u(rng, n, (1.4, 2.2), (0.8, 1.3), (0.05, 0.1), (0.7, 1.0))
    return [Part("box", dict(size=_xyz(w, d, t)), _at(n, z=H + t / 2), "top")] + _legs(rng, n, w, d, H, 0.1)


def _chair(rng, n):
    s, t, H, hb, tilt = _u(rng, n, (0.8, 1.0), (0.06, 0.1), (0.8, 1.0), (0.7, 1.1), (0.0, 0.25))
    arms = rng.random(n) < 0.5
    back_at = _at(n, 0, -s / 2 - hb / 2 * np.sin(tilt), H + t + hb / 2 * np.cos(tilt))
    parts = [Part("box", dict(size=_xyz(s, s, t)), _at(n, z=H + t / 2), "seat"),
             Part("box", dict(size=_xyz(s, 0.07, hb)), back_at, "back", R=rot("x", tilt))]
    parts += _legs(rng, n, s, s, H, 0.06, square=True)
    for sx in (-1, 1):
        parts.append(Part("box", dict(size=_xyz(0.07, 0.8 * s, 0.06)), _at(n, sx * s / 2, 0, H + t + 0.3),
                          "arm", present=arms))
    return parts


def _stool(rng, n):
    r, t, H = _u(rng, n, (0.35, 0.5), (0.06, 0.1), (0.7, 1.0))
    return [Part("frustum", dict(r0=r, r1=r, h=t), _at(n, z=H), "seat")] + \
        _legs(rng, n, 1.6 * r, 1.6 * r, H, 0.0, count=3)


def _bench(rng, n):
    L, d, t, H, hb = _u(rng, n, (2.0, 3.0), (0.4, 0.6), (0.06, 0.1), (0.45, 0.6), (0.4, 0.6))
    back = rng.random(n) < 0.5
    return [Part("box", dict(size=_xyz(L, d, t)), _at(n, z=H + t / 2), "seat"),
            Part("box", dict(size=_xyz(L, 0.05, hb)), _at(n, 0, -d / 2, H + t + hb / 2), "back", present=back)] + \
        _legs(rng, n, L, d, H, 0.08, square=True)


def _lamp(rng, n):
    rb, hb, hp, rp, r0, r1, hs = _u(rng, n, (0.3, 0.45), (0.05, 0.1), (1.0, 1.6), (0.03, 0.05), (0.35, 0.5),
                                    (0.15, 0.25), (0.3, 0.5))
    return [Part("frustum", dict(r0=rb, r1=0.8 * rb, h=hb), _at(n), "base"),
            Part("frustum", dict(r0=rp, r1=rp, h=hp), _at(n, z=hb), "pole", caps=(False, True)),
            Part("frustum", dict(r0=r0, r1=r1, h=hs), _at(n, z=hb + hp - 0.6 * hs), "shade", caps=(False, False))]


def _mug(rng, n):
    r, h, R, rt = _u(rng, n, (0.35, 0.5), (0.7, 1.1), (0.2, 0.3), (0.04, 0.07))
    handle = dict(R=R, r=rt, phi0=np.full(n, -np.pi / 2), arc=np.full(n, np.pi))  # half ring, x >= 0
    return [Part("frustum", dict(r0=r, r1=r, h=h), _at(n), "body", caps=(True, False)),
            Part("torus", handle, _at(n, r, 0, h / 2), "handle", R=rot("x", np.full(n, np.pi / 2)))]


def _bottle(rng, n):
    r, h, rn, hs, hn, hc = _u(rng, n, (0.3, 0.45), (0.8, 1.2), (0.1, 0.15), (0.15, 0.3), (0.25, 0.45), (0.08, 0.15))
    return [Part("frustum", dict(r0=r, r1=r, h=h), _at(n), "body", caps=(True, False)),
            Part("frustum", dict(r0=r, r1=rn, h=hs), _at(n, z=h), "body", caps=(False, False)),
            Part("frustum", dict(r0=rn, r1=rn, h=hn), _at(n, z=h + hs), "neck", caps=(False, False)),
            Part("frustum", dict(r0=1.15 * rn, r1=1.15 * rn, h=hc), _at(n, z=h + hs + hn), "cap")]


def _airplane(rng, n):
    rf, L, span, chord, fin, stab = _u(rng, n, (0.12, 0.18), (1.6, 2.4), (1.8, 2.6), (0.3, 0.5), (0.3, 0.5),
                                       (0.6, 0.9))
    eng = rng.random(n) < 0.6
    parts = [Part("capsule", dict(r=rf, L=L), _at(n), "body", R=rot("y", np.full(n, np.pi / 2))),
             Part("box", dict(size=_xyz(chord, span, 0.04)), _at(n, 0.1 * L), "wing"),
             Part("box", dict(size=_xyz(0.3, 0.04, fin)), _at(n, -L / 2, 0, rf + fin / 2 - 0.02), "tail"),
             Part("box", dict(size=_xyz(0.25, stab, 0.03)), _at(n, -L / 2, 0, 0.5 * rf), "tail")]
    for sy in (-1, 1):  # engines under the wings, axis along -x
        parts.append(Part("frustum", dict(r0=0.6 * rf, r1=0.6 * rf, h=np.full(n, 0.35)),
                          _at(n, 0.1 * L + chord / 2 + 0.05, sy * span / 4, -rf), "engine",
                          R=rot("y", np.full(n, -np.pi / 2)), present=eng))
    return parts


def _shelf(rng, n):
    w, d, H = _u(rng, n, (0.8, 1.4), (0.3, 0.45), (1.2, 1.8))
    count, back = rng.integers(3, 6, n), rng.random(n) < 0.5
    parts = [Part("box", dict(size=_xyz(0.05, d, H)), _at(n, sx * w / 2, 0, H / 2), "side") for sx in (-1, 1)]
    for k in range(5):  # 3-5 boards, evenly spaced; boards beyond the count are absent
        zk = np.minimum(0.03 + k * (H - 0.06) / (count - 1), H)
        parts.append(Part("box", dict(size=_xyz(w, d, 0.04)), _at(n, z=zk), "board", present=k < count))
    parts.append(Part("box", dict(size=_xyz(w, 0.03, H)), _at(n, 0, -d / 2, H / 2), "back", present=back))
    return parts


def _one(kind, **prm):
    return [Part(kind, prm, _at(len(next(iter(prm.values())))), "surface")]


PRIMITIVES: Dict[str, Callable] = {
    "sphere": lambda rng, n: _one("ellipsoid", axes=np.repeat(rng.uniform(0.5, 1.0, (n, 1)), 3, 1)),
    "ellipsoid": lambda rng, n: _one("ellipsoid", axes=_xyz(*_u(rng, n, (1.0, 1.5), (0.55, 0.8), (0.25, 0.45)))),
    "box": lambda rng, n: _one("box", size=rng.uniform(0.5, 1.5, (n, 3))),
    "cylinder": _cyl,
    "cone": _cone,
    "torus": lambda rng, n: _one("torus", **dict(zip(("R", "r"), _u(rng, n, (0.8, 1.0), (0.15, 0.35)))),
                                 phi0=np.zeros(n), arc=np.full(n, 2 * np.pi)),
    "capsule": lambda rng, n: _one("capsule", **dict(zip(("r", "L"), _u(rng, n, (0.25, 0.45), (0.6, 1.6))))),
    "pyramid": lambda rng, n: _one("pyramid", **dict(zip(("base", "height"), _u(rng, n, (0.8, 1.4), (0.6, 1.4))))),
}
COMPOSITES: Dict[str, Callable] = {"airplane": _airplane, "chair": _chair, "table": _table, "lamp": _lamp,
                                   "mug": _mug, "bottle": _bottle, "stool": _stool, "bench": _bench,
                                   "shelf": _shelf}
# Semantic parts of each composite, in label order (parts3d's part_names are "class/part").
COMPOSITE_PARTS: Dict[str, List[str]] = {
    "airplane": ["body", "wing", "tail", "engine"], "chair": ["seat", "back", "leg", "arm"],
    "table": ["top", "leg"], "lamp": ["base", "pole", "shade"], "mug": ["body", "handle"],
    "bottle": ["body", "neck", "cap"], "stool": ["seat", "leg"], "bench": ["seat", "leg", "back"],
    "shelf": ["side", "board", "back"]}
ALL_CLASSES: Dict[str, Callable] = {**PRIMITIVES, **COMPOSITES}
