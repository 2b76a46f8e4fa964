"""Planted decision modes for notebook 07 (spec ``07_decision_trees.md`` section 7).

* :func:`maxout_toy` -- unit level, exact truth: ``y = max_m (w_m.x + c_m)`` with sparse ``w_m`` on disjoint
  filter groups ("parts"), so each image's gradient is exactly ``w_{m(I)}``: the mode labels, the support of
  each mode and the part contributions are known.
* :func:`occluded_creatures` -- integration level: ``creatures`` birds in three sub-populations that hide
  different parts under smoothly shaded rectangles (mode ``H``: tail and legs hidden, ``T``: head hidden,
  ``F``: nothing hidden); each negative gets as many rectangles, at random places, as a positive of a random
  mode, so the number of rectangles alone says nothing about the label.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from ...data import creatures

__all__ = ["maxout_toy", "occluded_creatures", "OCCLUDED_MODES"]

#: mode name -> parts hidden in its images
OCCLUDED_MODES: Dict[str, Tuple[str, ...]] = {"H": ("tail", "legs"), "T": ("head",), "F": ()}


def maxout_toy(n: int = 300, d: int = 32, parts: int = 4, modes: int = 3, *, seed: int = 0) -> Dict[str, np.ndarray]:
    """Leaves with planted modes: ``x ~ Gamma(2, 1)`` (n, d), filters in ``parts`` groups of ``d // parts``;
    mode m's weights ``w_m`` ~ U(0.5, 1.5) on group m only (``modes <= parts``), offsets ``c_m`` balancing the
    modes. Returns the rationales as :func:`.method.rationales` would (``g = w_m / ||w_m||``, ``y`` and ``b``
    divided by ``||w_m||``) and the truth: ``modes`` (n,), ``w`` (M, d), ``c`` (M,), ``support`` (M, d) bool,
    ``groups`` (d,) part of each filter, ``A`` (d, parts) one-hot filter -> part."""
    if not (1 <= modes <= parts and d % parts == 0 and n >= 2 * modes):
        raise ValueError(f"need 1 <= modes <= parts, d divisible by parts and n >= 2 modes; got n={n}, d={d}, "
                         f"parts={parts}, modes={modes}")
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 1.0, (n, d))
    groups = np.repeat(np.arange(parts), d // parts)
    support = groups[None, :] == np.arange(modes)[:, None]
    w = np.where(support, rng.uniform(0.5, 1.5, (modes, d)), 0.0)
    s = x @ w.T                                            # (n, M)
    c = -np.median(s, axis=0)                              # equal medians: roughly balanced modes
    for _ in range(50):                                    # nudge offsets until every mode has >= n / (2M) images
        m = np.argmax(s + c, 1)
        cnt = np.bincount(m, minlength=modes)
        if cnt.min() >= n / (2 * modes):
            break
        c[np.argmin(cnt)] += 0.1 * s.std()
    m = np.argmax(s + c, 1)
    y = (s + c)[np.arange(n), m]
    nrm = np.linalg.norm(w, axis=1)
    g = w[m] / nrm[m, None]
    yn = y / nrm[m]
    b = yn - (g * x).sum(1)
    A = np.eye(parts)[groups]
    return dict(x=x, g=g, y=yn, b=b, modes=m, w=w, c=c, support=support, groups=groups, A=A, norm=nrm[m])


def _box(mask: np.ndarray, margin: int, S: int):
    r, c = np.nonzero(mask)
    return (max(0, r.min() - margin), max(0, c.min() - margin), min(S, r.max() + 1 + margin),
            min(S, c.max() + 1 + margin))


def _random_box(rng, S: int):
    cy, cx = rng.uniform(0.15, 0.85, 2) * S
    hy, hx = rng.uniform(0.07, 0.13, 2) * S
    return (int(max(0, cy - hy)), int(max(0, cx - hx)), int(min(S, cy + hy + 1)), int(min(S, cx + hx + 1)))


def _paint(img: np.ndarray, box, rng) -> None:
    """A smoothly shaded rectangle (linear blend of two colours along a random direction, pixel noise 0.03)."""
    r0, c0, r1, c1 = box
    if r1 <= r0 or c1 <= c0:
        return
    cols = rng.uniform(0.1, 0.9, (2, 3))
    ang = rng.uniform(0, 2 * np.pi)
    rr, cc = np.meshgrid(np.linspace(-1, 1, r1 - r0), np.linspace(-1, 1, c1 - c0), indexing="ij")
    t = np.clip(0.5 + 0.5 * (np.cos(ang) * rr + np.sin(ang) * cc), 0, 1)
    patch = cols[0][:, None, None] * (1 - t) + cols[1][:, None, None] * t
    img[:, r0:r1, c0:c1] = np.clip(patch + rng.normal(0, 0.03, patch.shape), 0, 1)


def occluded_creatures(n: int, size: int = 64, *, negatives: float = 0.5, background: str = "clutter",
                       margin: int = 2, modes: Sequence[str] = ("H", "T", "F"), seed: int = 0):
    """``creatures(n, size, categories=("bird",), object_centric=True)`` with the positives split into
    ``modes`` (balanced, random) that hide parts (:data:`OCCLUDED_MODES`) under shaded rectangles (the part's
    visible box plus ``margin`` px); a negative gets the rectangles of a random mode at random places. Part
    masks, the foreground mask and landmarks under a rectangle are cleared (NaN landmarks). Returns the
    :class:`~xnn_support.data.types.ImageSet` and ``mode`` (N,) int: index into ``modes``, -1 for negatives."""
    bad = [m for m in modes if m not in OCCLUDED_MODES]
    if bad or not modes:
        raise ValueError(f"modes must be names from {sorted(OCCLUDED_MODES)}, got {list(modes)!r}")
    ds = creatures(n, size, categories=("bird",), negatives=negatives, background=background, object_centric=True,
                   seed=seed)
    rng = np.random.default_rng([seed, 7])
    pos = np.nonzero(ds.labels.numpy() > 0)[0]
    mode = np.full(len(ds), -1)
    mode[pos] = rng.permutation(np.arange(len(pos)) % len(modes))
    imgs, pm = ds.images.numpy().copy(), ds.part_masks.numpy().copy()
    fg, lms = ds.fg_mask.numpy().copy(), ds.landmarks.numpy().copy()
    pidx = {p: i for i, p in enumerate(ds.part_names)}
    S = ds.size
    n_rect = [len(OCCLUDED_MODES[m]) for m in modes]
    for i in range(len(ds)):
        if mode[i] >= 0:
            hide = OCCLUDED_MODES[modes[mode[i]]]
            boxes = [_box(pm[i, pidx[p]], margin, S) for p in hide if pm[i, pidx[p]].any()]
        else:
            boxes = [_random_box(rng, S) for _ in range(n_rect[rng.integers(len(modes))])]
        for bx in boxes:
            _paint(imgs[i], bx, rng)
            r0, c0, r1, c1 = bx
            pm[i, :, r0:r1, c0:c1] = False
            fg[i, r0:r1, c0:c1] = False
            inside = (lms[i, :, 0] >= r0) & (lms[i, :, 0] < r1) & (lms[i, :, 1] >= c0) & (lms[i, :, 1] < c1)
            lms[i, inside] = np.nan
    spec = dict(ds.spec, occluded_modes=list(modes), negatives_rectangles="as a random mode", margin=margin)
    out = dataclasses.replace(ds, images=torch.from_numpy(imgs), part_masks=torch.from_numpy(pm),
                              fg_mask=torch.from_numpy(fg), landmarks=torch.from_numpy(lms), spec=spec)
    return out, mode
