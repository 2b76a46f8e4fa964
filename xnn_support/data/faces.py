"""``concept_faces``: cartoon faces with binary attributes, known regions and a planted target.

Serves paper 03 (Chen et al., ICCV 2019, "Explaining neural networks semantically and
quantitatively"; /work/shared/papers/03_semantic_quantification.md sections 2 and 7): a target
("attractive") explained by other attributes, and the lecture's lipstick / rosy-cheeks example
(a CNN that uses cheek features to represent lipstick because both always co-appear; Zhang & Zhu,
AAAI 2018), reproduced with :func:`edit_faces` (paste or mask the cheeks of the same face).

Ground truth planted per face:

* ``attributes`` (N, A) in {0, 1}, drawn independently with ``prevalence`` p_a, then optionally
  coupled by ``cooccurrence`` (below);
* ``region_masks`` (N, A, S, S): the visible pixels drawn by attribute a in this face (after
  occlusion by later layers); all False when the attribute is absent. ``young`` is drawn as a
  wrinkle-free forehead (old faces get wrinkles), so its mask is the smooth forehead band;
  ``smiling`` and ``lipstick`` share the mouth pixels (curvature vs colour and thickness);
* ``target`` = bias + attributes @ weights + noise * N(0, 1), with ``bias = -sum_a w_a p_a`` so
  that the target is centred for independent attributes; ``labels = (target > 0)``. The threshold
  is 0 (not the sample median) so that it does not depend on ``n`` and edited faces keep it.

``cooccurrence={("lipstick", "rosy_cheeks"): r}`` redraws the second attribute so that it agrees
with the first at rate r: P(b = 1 | a = 1) = r and P(b = 1 | a = 0) = 1 - r (r = 1: always
together; r = 0.5: independent of a). Pairs are applied in order; an attribute may be the
dependent of one pair only and cannot be redrawn after it has served as a source.

Per-face drawing parameters (position, size, skin / hair / background / iris / hat colours, eye
and mouth layout) are stored as ``latents`` (N, L) in :class:`ConceptFaceSet`, a subclass of
:class:`~xnn_support.data.types.FaceSet` with two extra fields. Storing them (rather than
regenerating from seed + row index) keeps them attached to each face through ``subset`` and
``split``, so ``edit_faces(val_set, i, ...)`` redraws exactly that face. Random streams are
separate (latents, attributes, co-occurrence, noise): changing ``noise`` or ``cooccurrence``
leaves the faces' identities unchanged.

Deviation from section 7 of the spec: the spec's abstract "concept-sum" images use continuous
intensities and a context-dependent weight vector; here attributes are binary and the weights
global (the issue's CelebA-like design). Attributes not listed in ``attributes`` are drawn in
their neutral state (eyes open, young, everything else absent) and are not recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from .types import FaceSet

__all__ = ["concept_faces", "edit_faces", "render_faces", "ConceptFaceSet",
           "FACE_ATTRIBUTES", "FACE_LATENTS", "DEFAULT_FACE_WEIGHTS"]

FACE_ATTRIBUTES = ("smiling", "lipstick", "rosy_cheeks", "eyes_open", "glasses", "hat", "young",
                   "beard", "earrings", "bushy_eyebrows", "big_nose", "bangs")
# Planted default weights of the target "attractive" (same order as FACE_ATTRIBUTES).
DEFAULT_FACE_WEIGHTS = dict(smiling=1.0, lipstick=0.8, rosy_cheeks=0.5, eyes_open=0.6,
                            glasses=-0.4, hat=-0.3, young=1.2, beard=-0.5, earrings=0.3,
                            bushy_eyebrows=-0.6, big_nose=-0.9, bangs=0.2)
DEFAULT_PREVALENCE = dict(smiling=0.5, lipstick=0.45, rosy_cheeks=0.4, eyes_open=0.7, glasses=0.3,
                          hat=0.3, young=0.6, beard=0.3, earrings=0.35, bushy_eyebrows=0.4,
                          big_nose=0.35, bangs=0.4)
_NEUTRAL = dict(eyes_open=1, young=1)  # state of an attribute that is not generated
FACE_LATENTS = ("cx", "cy", "rx", "ry", "skin_r", "skin_g", "skin_b", "hair_r", "hair_g", "hair_b",
                "bg_r", "bg_g", "bg_b", "bg_gx", "bg_gy", "eye_dx", "eye_dy", "mouth_dy", "mouth_w",
                "iris_r", "iris_g", "iris_b", "hat_r", "hat_g", "hat_b")
SIZES = (32, 64, 128, 224)
_AIDX = {a: i for i, a in enumerate(FACE_ATTRIBUTES)}
_HAIR = np.array([[0.1, 0.08, 0.06], [0.35, 0.2, 0.1], [0.85, 0.7, 0.35], [0.6, 0.22, 0.08],
                  [0.5, 0.5, 0.5]], np.float32)
_IRIS = np.array([[0.35, 0.2, 0.08], [0.2, 0.45, 0.8], [0.25, 0.55, 0.3], [0.45, 0.45, 0.5]], np.float32)
_CHUNK = 256


@dataclass
class ConceptFaceSet(FaceSet):
    """A :class:`FaceSet` that also keeps each face's drawing parameters, so faces can be redrawn
    with attributes changed (:func:`edit_faces`). ``latents`` (N, L) float32, columns
    ``latent_names``; both survive ``subset``/``split`` (``latents`` is per-sample)."""
    latents: Optional[torch.Tensor] = field(default=None, metadata={"per_sample": True})
    latent_names: List[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- validation
def _check_names(names, what="attribute") -> List[str]:
    names = list(names)
    bad = [a for a in names if a not in _AIDX]
    if bad:
        raise ValueError(f"unknown {what}(s) {bad}; valid: {list(FACE_ATTRIBUTES)}")
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"{what} names must be non-empty and unique, got {names}")
    return names


def _per_attribute(value, names, default, what) -> np.ndarray:
    """A dict / sequence / tensor / scalar (or None for ``default``) -> float64 array (A,)."""
    if value is None:
        out = np.array([default[a] for a in names], np.float64)
    elif isinstance(value, Mapping):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(f"{what} given for attributes not generated: {unknown}; generated: {names}")
        out = np.array([float(value.get(a, default[a])) for a in names], np.float64)
    else:
        arr = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
        out = np.broadcast_to(arr.astype(np.float64), (len(names),)).copy() if arr.ndim == 0 \
            else arr.astype(np.float64).reshape(-1)
        if out.shape != (len(names),):
            raise ValueError(f"{what} must have one value per attribute ({len(names)}), got shape {arr.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{what} must be finite, got {out}")
    return out


def _check_cooccurrence(cooc, names):
    pairs, dependents, sources = [], set(), set()
    for key, r in (cooc or {}).items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"cooccurrence keys must be (source, dependent) pairs, got {key!r}")
        a, b = key
        if a not in names or b not in names:
            raise ValueError(f"cooccurrence pair {key} names attributes not generated ({names})")
        if a == b or b in dependents or b in sources:
            raise ValueError(f"cooccurrence pair {key}: an attribute may be the dependent of one pair "
                             "only, not of itself, and not after it served as a source")
        if not (isinstance(r, (int, float)) and 0.0 <= float(r) <= 1.0):
            raise ValueError(f"cooccurrence rate for {key} must be in [0, 1], got {r!r}")
        pairs.append((a, b, float(r)))
        dependents.add(b)
        sources.add(a)
    return pairs


# ----------------------------------------------------------------------------- drawing
def _sample_latents(n: int, rng: np.random.Generator) -> np.ndarray:
    u = lambda lo, hi, *s: rng.uniform(lo, hi, size=(n,) + s)  # noqa: E731
    t = u(0, 1, 1)
    skin = (1 - t) * np.array([1.0, 0.86, 0.74]) + t * np.array([0.5, 0.34, 0.22])
    hair = np.clip(_HAIR[rng.integers(0, len(_HAIR), n)] + u(-0.05, 0.05, 3), 0, 1)
    iris = _IRIS[rng.integers(0, len(_IRIS), n)]
    cols = [u(-0.06, 0.06), u(-0.06, 0.06), u(0.52, 0.6), u(0.64, 0.72), *skin.T, *hair.T,
            *u(0.15, 0.95, 3).T, u(-0.15, 0.15), u(-0.15, 0.15), u(0.34, 0.42), u(-0.08, 0.0),
            u(0.5, 0.6), u(0.28, 0.38), *iris.T, *u(0.0, 1.0, 3).T]
    return np.stack(cols, 1).astype(np.float32)


def _draw(lat: np.ndarray, state: np.ndarray, size: int):
    """Render faces. lat (c, L) latents, state (c, 12) full attribute states in FACE_ATTRIBUTES
    order -> images (c, 3, S, S) float32, owner (c, S, S) int32 bit-field of visible attributes."""
    c, S = lat.shape[0], size
    px = 2.0 / S  # one pixel in normalised units ([-1, 1] spans the image)
    g = (np.arange(S, dtype=np.float32) + 0.5) * px - 1.0
    Y, X = g[None, :, None], g[None, None, :]
    p = {k: lat[:, i][:, None, None] for i, k in enumerate(FACE_LATENTS)}
    cx, cy, rx, ry = p["cx"], p["cy"], p["rx"], p["ry"]
    U, V = (X - cx) / rx, (Y - cy) / ry
    col = lambda *ks: np.stack([lat[:, FACE_LATENTS.index(k)] for k in ks], 1)  # noqa: E731
    skin, hair = col("skin_r", "skin_g", "skin_b"), col("hair_r", "hair_g", "hair_b")
    on = {a: state[:, i].astype(bool)[:, None, None] for i, a in enumerate(FACE_ATTRIBUTES)}
    thin = lambda t: max(t, 1.2 * px)  # noqa: E731  strokes stay at least ~1 pixel wide
    rad = lambda r: np.maximum(r, 0.75 * px)  # noqa: E731  discs cover at least one pixel centre

    img = np.clip(col("bg_r", "bg_g", "bg_b")[:, :, None, None]
                  + (p["bg_gx"] * X + p["bg_gy"] * Y)[:, None], 0, 1).astype(np.float32)
    owner = np.zeros((c, S, S), np.int32)

    def paint(m, rgb, attrs=()):
        nonlocal img, owner
        rgb = np.broadcast_to(np.asarray(rgb, np.float32), (c, 3)) if np.ndim(rgb) < 2 else rgb
        img = np.where(m[:, None], rgb[:, :, None, None].astype(np.float32), img)
        bits = sum((on[a] & m).astype(np.int32) << _AIDX[a] for a in attrs) if attrs else 0
        owner = np.where(m, bits, owner)

    ell = lambda x0, y0, ax, ay: ((X - x0) / rad(ax)) ** 2 + ((Y - y0) / rad(ay)) ** 2 <= 1  # noqa: E731
    paint(((U / 1.12) ** 2 + ((V + 0.15) / 1.05) ** 2) <= 1, hair)                        # hair
    for s in (-1, 1):
        paint(ell(cx + s * rx, cy + 0.05 * ry, 0.07, 0.11), skin)                          # ears
    head = U ** 2 + V ** 2 <= 1
    paint(head, skin)
    band = head & (np.abs(U) < 0.45) & (V > -0.5) & (V < -0.3)
    paint(band & on["young"], skin, ("young",))                                            # forehead
    wr = np.zeros_like(band)
    for v0 in (-0.46, -0.34):
        wr |= (np.abs(Y - (cy + v0 * ry)) <= thin(0.02) / 2) & (np.abs(U) < 0.42)
    paint(wr & ~on["young"], skin * 0.6)                                                   # wrinkles
    paint(head & (V < -0.52 + 0.05 * np.cos(8 * U)) & on["bangs"], hair, ("bangs",))
    ex, ey = p["eye_dx"] * rx, cy + p["eye_dy"] * ry
    for s in (-1, 1):
        brow = (np.abs(Y - (ey - 0.19)) <= np.where(on["bushy_eyebrows"], 0.075, thin(0.025)) / 2) \
            & (np.abs(X - (cx + s * ex)) <= 0.09)
        paint(brow, hair * 0.7, ("bushy_eyebrows",))
        white = ell(cx + s * ex, ey, 0.085, 0.055)
        paint(white & on["eyes_open"], (0.97, 0.97, 0.97), ("eyes_open",))
        paint(ell(cx + s * ex, ey, 0.035, 0.035) & on["eyes_open"], col("iris_r", "iris_g", "iris_b"),
              ("eyes_open",))
        lid = (np.abs(Y - ey) <= thin(0.02) / 2) & (np.abs(X - (cx + s * ex)) <= 0.08)
        paint(lid & ~on["eyes_open"], (0.2, 0.15, 0.1))
    big = on["big_nose"]
    paint(ell(cx, cy + 0.2 * ry, np.where(big, 0.075, 0.035), np.where(big, 0.11, 0.06)), skin * 0.82,
          ("big_nose",))
    for s in (-1, 1):
        paint(ell(cx + s * 0.55 * rx, cy + 0.28 * ry, 0.1, 0.07) & on["rosy_cheeks"],
              0.45 * skin + 0.55 * np.array([0.95, 0.35, 0.45], np.float32), ("rosy_cheeks",))
    paint(head & (V > 0.42) & on["beard"], hair * 0.8, ("beard",))
    w, ym = p["mouth_w"] * rx, cy + p["mouth_dy"] * ry
    bend = np.where(on["smiling"], 0.07, 0.0)
    curve = ym + bend * (1 - ((X - cx) / w) ** 2) - bend / 2
    lip = on["lipstick"]
    mouth = (np.abs(Y - curve) <= np.where(lip, 0.07, thin(0.03)) / 2) & (np.abs(X - cx) <= w)
    paint(mouth, np.where(lip[:, 0], np.array([[0.8, 0.05, 0.2]], np.float32),
                          np.array([[0.45, 0.15, 0.15]], np.float32)), ("smiling", "lipstick"))
    rim = np.zeros_like(head)
    for s in (-1, 1):
        rim |= np.abs(np.sqrt((X - cx - s * ex) ** 2 + (Y - ey) ** 2) - 0.12) <= thin(0.025) / 2
    rim |= (np.abs(Y - ey) <= thin(0.025) / 2) & (np.abs(X - cx) <= ex - 0.11)
    paint(rim & on["glasses"], (0.08, 0.08, 0.1), ("glasses",))
    hat = (np.abs(X - cx) < 0.85 * rx) & (Y < cy - 0.68 * ry)
    hat |= (np.abs(X - cx) < 1.2 * rx) & (Y > cy - 0.78 * ry) & (Y < cy - 0.64 * ry)
    paint(hat & on["hat"], col("hat_r", "hat_g", "hat_b"), ("hat",))
    for s in (-1, 1):
        paint(ell(cx + s * 1.0 * rx, cy + 0.32 * ry, 0.045, 0.045) & on["earrings"], (0.95, 0.8, 0.2),
              ("earrings",))
    return img, owner


def render_faces(latents, attributes, *, attribute_names: Optional[Sequence[str]] = None,
                 size: int = 64):
    """Draw faces from drawing parameters and attribute states.

    latents (N, L) (columns :data:`FACE_LATENTS`); attributes (N, A) in {0, 1} for
    ``attribute_names`` (default: all of :data:`FACE_ATTRIBUTES`; missing ones take their neutral
    state). Returns ``images`` (N, 3, S, S) float32 in [0, 1] and ``region_masks`` (N, A, S, S) bool.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    names = _check_names(attribute_names if attribute_names is not None else FACE_ATTRIBUTES)
    lat = np.asarray(latents.detach().cpu() if torch.is_tensor(latents) else latents, np.float32)
    att = np.asarray(attributes.detach().cpu() if torch.is_tensor(attributes) else attributes, np.float64)
    if lat.ndim != 2 or lat.shape[1] != len(FACE_LATENTS) or not np.all(np.isfinite(lat)):
        raise ValueError(f"latents must be finite with shape (N, {len(FACE_LATENTS)}), got {lat.shape}")
    if att.shape != (lat.shape[0], len(names)) or not np.all((att == 0) | (att == 1)):
        raise ValueError(f"attributes must be 0/1 with shape ({lat.shape[0]}, {len(names)}), got {att.shape}")
    full = np.tile(np.array([_NEUTRAL.get(a, 0) for a in FACE_ATTRIBUTES], np.int64), (len(lat), 1))
    full[:, [_AIDX[a] for a in names]] = att.astype(np.int64)
    n = len(lat)
    images = np.empty((n, 3, size, size), np.float32)
    masks = np.empty((n, len(names), size, size), bool)
    shifts = np.array([_AIDX[a] for a in names], np.int32)[None, :, None, None]
    for i in range(0, n, _CHUNK):
        img, owner = _draw(lat[i:i + _CHUNK], full[i:i + _CHUNK], size)
        images[i:i + _CHUNK] = img
        masks[i:i + _CHUNK] = (owner[:, None] >> shifts) & 1
    return torch.from_numpy(images), torch.from_numpy(masks)


# ----------------------------------------------------------------------------- generator
def concept_faces(n: int = 2000, size: int = 64, *, attributes: Optional[Sequence[str]] = None,
                  weights=None, noise: float = 0.1, cooccurrence: Optional[Dict] = None,
                  prevalence=None, seed: int = 0) -> ConceptFaceSet:
    """Cartoon faces with binary attributes, region masks and a planted linear target.

    n faces of ``size`` pixels (32, 64, 128 or 224); ``attributes``: names from
    :data:`FACE_ATTRIBUTES` (default all 12, in that order); ``weights``: dict name -> weight,
    a sequence or tensor (A,) (default :data:`DEFAULT_FACE_WEIGHTS`); ``noise``: std of the
    Gaussian target noise; ``cooccurrence``: {(a, b): r} meaning P(b=1 | a=1) = r and
    P(b=1 | a=0) = 1 - r; ``prevalence``: P(attribute = 1) before co-occurrence (dict, scalar or
    sequence; default ``DEFAULT_PREVALENCE``). See the module docstring for masks and labels.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(noise, (int, float)) or not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    names = _check_names(attributes if attributes is not None else FACE_ATTRIBUTES)
    w = _per_attribute(weights, names, DEFAULT_FACE_WEIGHTS, "weights")
    prev = _per_attribute(prevalence, names, DEFAULT_PREVALENCE, "prevalence")
    if np.any((prev < 0) | (prev > 1)):
        raise ValueError(f"prevalence must lie in [0, 1], got {prev}")
    pairs = _check_cooccurrence(cooccurrence, names)
    n, seed = int(n), int(seed)
    s_lat, s_att, s_cooc, s_noise = np.random.SeedSequence([seed, 3]).spawn(4)
    lat = _sample_latents(n, np.random.default_rng(s_lat))
    u = np.random.default_rng(s_att).random((n, len(FACE_ATTRIBUTES)))
    uc = np.random.default_rng(s_cooc).random((n, len(FACE_ATTRIBUTES)))
    cols = [_AIDX[a] for a in names]
    att = (u[:, cols] < prev[None]).astype(np.int64)
    for a, b, r in pairs:
        ia, ib = names.index(a), names.index(b)
        thr = np.where(att[:, ia] == 1, r, 1.0 - r)
        att[:, ib] = (uc[:, _AIDX[b]] < thr).astype(np.int64)
    bias = float(-(w * prev).sum())
    eps = np.random.default_rng(s_noise).standard_normal(n)
    target = (bias + att @ w + noise * eps).astype(np.float32)
    images, masks = render_faces(lat, att, attribute_names=names, size=size)
    spec = dict(generator="concept_faces", version=1, n=n, size=size, attributes=names,
                weights=[float(x) for x in w], prevalence=[float(x) for x in prev],
                noise=float(noise), cooccurrence=[[a, b, r] for a, b, r in pairs], seed=seed,
                label_threshold=0.0)
    return ConceptFaceSet(images=images, attributes=torch.from_numpy(att.astype(np.float32)),
                          attribute_names=names, region_masks=masks, target=torch.from_numpy(target),
                          labels=torch.from_numpy((target > 0).astype(np.int64)),
                          weights=torch.from_numpy(w.astype(np.float32)), bias=bias, spec=spec,
                          latents=torch.from_numpy(lat), latent_names=list(FACE_LATENTS))


def edit_faces(ds: ConceptFaceSet, idx=None,
               set: Optional[Mapping[str, int]] = None) -> ConceptFaceSet:  # noqa: A002 (brief's name)
    """Redraw faces ``idx`` of ``ds`` (int, sequence, tensor, slice; None = all) with attributes
    changed, e.g. ``edit_faces(ds, idx, set={"rosy_cheeks": 1})`` pastes cheeks and
    ``set={"rosy_cheeks": 0}`` masks them. Identity (pose, colours, layout) and each face's target
    noise are kept; ``target`` and ``labels`` are recomputed with the planted weights and bias.
    Returns a new :class:`ConceptFaceSet` with the selected rows only."""
    if not isinstance(ds, ConceptFaceSet) or ds.latents is None:
        raise ValueError("edit_faces needs a ConceptFaceSet from concept_faces (it stores latents); "
                         f"got {type(ds).__name__}")
    changes = dict(set or {})
    for k, v in changes.items():
        if k not in ds.attribute_names:
            raise ValueError(f"cannot set {k!r}: not an attribute of this set ({ds.attribute_names})")
        if v not in (0, 1):
            raise ValueError(f"attribute values must be 0 or 1, got {k}={v!r}")
    if idx is None:
        idx = slice(None)
    if isinstance(idx, (int, np.integer)):
        idx = [int(idx)]
    sub = ds.subset(idx)
    att = sub.attributes.clone()
    for k, v in changes.items():
        att[:, ds.attribute_names.index(k)] = float(v)
    images, masks = render_faces(sub.latents, att, attribute_names=ds.attribute_names,
                                 size=int(ds.images.shape[-1]))
    out = ConceptFaceSet(images=images, attributes=att, attribute_names=list(ds.attribute_names),
                         region_masks=masks, weights=ds.weights, bias=ds.bias,
                         latents=sub.latents, latent_names=list(ds.latent_names),
                         spec=dict(sub.spec, edited={k: int(v) for k, v in changes.items()}))
    if sub.target is not None and ds.weights is not None:
        w = ds.weights.to(torch.float64)
        resid = sub.target.double() - ds.bias - sub.attributes.double() @ w
        out.target = (ds.bias + att.double() @ w + resid).float()
        out.labels = (out.target > ds.spec.get("label_threshold", 0.0)).long()
    return out
