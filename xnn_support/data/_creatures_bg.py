"""Backgrounds for :func:`xnn_support.data.creatures` (papers 01 and 02, spec section 7).

Three kinds, all vectorised over a batch:

* ``"plain"``: one random colour per image;
* ``"clutter"``: a low-frequency colour field (a base colour plus two random plane waves per
  channel), faint oriented sinusoidal stripes, and 1-3 distractor discs or rectangles. Stripes
  are smooth and low-contrast with a period of at least 0.2 S, so that they cannot be mistaken for
  the sharp, high-frequency patterns of the ``texture`` category;
* ``"photo"``: random crops of the photographs bundled with scikit-image (``skimage.data``
  reads them from the installed package, no network), bilinearly resized to S and compressed to
  the range [0.15, 0.85] so that objects stay visible. Loaded photos are cached in the
  module-level dict ``_PHOTOS``.

Parameters are drawn for the whole data set up front by :func:`sample_background` (so the result
does not depend on how rendering is chunked) and rendered per chunk by
:func:`render_background`. Distractors are never labelled as foreground.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
from skimage import data as skdata

__all__ = ["BACKGROUNDS", "sample_background", "render_background", "load_photos"]

BACKGROUNDS = ("plain", "clutter", "photo")
_PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                "immunohistochemistry", "camera", "grass")
_PHOTOS: Dict[str, np.ndarray] = {}
_F = np.float32


def load_photos() -> Dict[str, np.ndarray]:
    """The bundled skimage photos as float32 (H,W,3) arrays in [0,1] (cached)."""
    if not _PHOTOS:

        for name in _PHOTO_NAMES:
            im = np.asarray(getattr(skdata, name)())
            im = im.astype(_F) / (255.0 if im.dtype == np.uint8 else 1.0)
            if im.ndim == 2:
                im = np.repeat(im[..., None], 3, axis=2)
            _PHOTOS[name] = np.ascontiguousarray(im[..., :3])
    return _PHOTOS


def sample_background(kind: str, n: int, S: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Per-image background parameters (a dict of arrays with leading dimension n)."""
    p = {"base": rng.uniform(0.1, 0.9, (n, 3)).astype(_F)}
    if kind == "clutter":
        p["wave_f"] = rng.uniform(0.3, 1.5, (n, 2, 2)).astype(_F)          # cycles per image
        p["wave_dir"] = rng.uniform(0, 2 * np.pi, (n, 2)).astype(_F)
        p["wave_phase"] = rng.uniform(0, 2 * np.pi, (n, 2)).astype(_F)
        p["wave_amp"] = rng.uniform(-0.18, 0.18, (n, 2, 3)).astype(_F)
        p["stripe_dir"] = rng.uniform(0, np.pi, n).astype(_F)
        p["stripe_period"] = rng.uniform(0.2, 0.45, n).astype(_F) * S
        p["stripe_amp"] = rng.uniform(0.02, 0.07, n).astype(_F)
        p["stripe_phase"] = rng.uniform(0, 2 * np.pi, n).astype(_F)
        p["n_dist"] = rng.integers(1, 4, n)
        p["dist_kind"] = rng.integers(0, 2, (n, 3))                       # 0 disc, 1 rectangle
        p["dist_pos"] = rng.uniform(0.05, 0.95, (n, 3, 2)).astype(_F) * (S - 1)
        p["dist_size"] = rng.uniform(0.04, 0.11, (n, 3, 2)).astype(_F) * S
        p["dist_col"] = rng.uniform(0.05, 0.95, (n, 3, 3)).astype(_F)
    elif kind == "photo":
        load_photos()  # fail early (and cache) rather than in the middle of rendering
        p["photo"] = rng.integers(0, len(_PHOTO_NAMES), n)
        p["crop_frac"] = rng.uniform(0.25, 0.8, n).astype(_F)
        p["crop_pos"] = rng.uniform(0, 1, (n, 2)).astype(_F)
        p["mirror"] = rng.integers(0, 2, n)
    elif kind != "plain":
        raise ValueError(f"unknown background {kind!r}; valid: {list(BACKGROUNDS)}")
    return p


def _bilinear(photo: np.ndarray, r0: float, c0: float, side: float, S: int) -> np.ndarray:
    t = (np.arange(S, dtype=_F) + 0.5) * (side / S) - 0.5
    rr = np.clip(r0 + t, 0, photo.shape[0] - 1)
    cc = np.clip(c0 + t, 0, photo.shape[1] - 1)
    ri = np.minimum(rr.astype(np.int64), photo.shape[0] - 2)
    ci = np.minimum(cc.astype(np.int64), photo.shape[1] - 2)
    wr = (rr - ri)[:, None, None]
    wc = (cc - ci)[None, :, None]
    a = photo[ri][:, ci]
    b = photo[ri][:, ci + 1]
    c = photo[ri + 1][:, ci]
    d = photo[ri + 1][:, ci + 1]
    out = (a * (1 - wc) + b * wc) * (1 - wr) + (c * (1 - wc) + d * wc) * wr
    return out.transpose(2, 0, 1)


def render_background(kind: str, p: Dict[str, np.ndarray], idx: np.ndarray, S: int) -> np.ndarray:
    """Render backgrounds of images ``idx`` (rows of ``p``) as a float32 (B,3,S,S) array."""
    B = len(idx)
    if kind == "photo":
        photos = load_photos()
        out = np.empty((B, 3, S, S), _F)
        for j, i in enumerate(idx):  # one vectorised bilinear resize per image
            ph = photos[_PHOTO_NAMES[p["photo"][i]]]
            side = float(p["crop_frac"][i]) * min(ph.shape[:2])
            r0 = float(p["crop_pos"][i, 0]) * (ph.shape[0] - side)
            c0 = float(p["crop_pos"][i, 1]) * (ph.shape[1] - side)
            im = _bilinear(ph, r0, c0, side, S)
            out[j] = im[:, :, ::-1] if p["mirror"][i] else im
        return _F(0.15) + _F(0.7) * out
    base = p["base"][idx][:, :, None, None]
    out = np.broadcast_to(base, (B, 3, S, S)).copy()
    if kind == "plain":
        return out
    r = np.arange(S, dtype=_F).reshape(1, S, 1)
    c = np.arange(S, dtype=_F).reshape(1, 1, S)
    for k in range(2):  # low-frequency colour field
        ang = p["wave_dir"][idx, k].reshape(B, 1, 1)
        f = p["wave_f"][idx, k, 0].reshape(B, 1, 1) / S
        w = np.cos(2 * np.pi * f * (np.cos(ang) * r + np.sin(ang) * c) + p["wave_phase"][idx, k].reshape(B, 1, 1))
        out += p["wave_amp"][idx, k][:, :, None, None] * w[:, None]
    ang = p["stripe_dir"][idx].reshape(B, 1, 1)
    proj = np.cos(ang) * r + np.sin(ang) * c
    st = np.sin(2 * np.pi * proj / p["stripe_period"][idx].reshape(B, 1, 1) + p["stripe_phase"][idx].reshape(B, 1, 1))
    out += (p["stripe_amp"][idx].reshape(B, 1, 1) * st)[:, None]
    for k in range(3):  # distractors
        on = (k < p["n_dist"][idx]).reshape(B, 1, 1)
        pr = p["dist_pos"][idx, k, 0].reshape(B, 1, 1)
        pc = p["dist_pos"][idx, k, 1].reshape(B, 1, 1)
        hr = p["dist_size"][idx, k, 0].reshape(B, 1, 1)
        hc = p["dist_size"][idx, k, 1].reshape(B, 1, 1)
        disc = ((r - pr) ** 2 + (c - pc) ** 2) <= hr ** 2
        rect = (np.abs(r - pr) <= hr) & (np.abs(c - pc) <= hc)
        m = on & np.where(p["dist_kind"][idx, k].reshape(B, 1, 1) == 0, disc, rect)
        out = np.where(m[:, None], p["dist_col"][idx, k][:, :, None, None], out)
    return np.clip(out, 0.0, 1.0)
