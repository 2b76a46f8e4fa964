"""A handful of real colour photos that ship with installed packages, with coarse object masks.

:func:`real_photos` returns the offline photos of ``skimage.data`` (chelsea, coffee, astronaut,
rocket, and the left view of the stereo motorcycle) and scikit-learn's ``load_sample_images``
(china, flower), each centre-cropped to a square and resized to ``size`` px (bilinear,
antialiased), as a :class:`PhotoSet`. Nothing is downloaded: these files are inside the packages.

Labels: the ImageNet-1k index where one clearly applies, else -1:

=============  =====================================================  ===========================
name           what                                                   ImageNet label
=============  =====================================================  ===========================
chelsea        a striped ginger cat's face (skimage)                  281 tabby, tabby cat [1]_
coffee         an espresso cup on a saucer, with spoon (skimage)      967 espresso
astronaut      Eileen Collins in an orange flight suit (skimage)      -1 (no person class)
rocket         a Falcon 9 on its launch pad at dusk (skimage)         -1 (no launch-rocket class)
motorcycle     a red motorcycle in a garage (skimage stereo, left)    -1 (no motorcycle class)
china          Summer Palace, Beijing: Tower of Buddhist Incense      698 palace
flower         an orange pompon dahlia (scikit-learn)                 -1 (no dahlia class)
=============  =====================================================  ===========================

.. [1] ImageNet's three house-cat classes overlap; EfficientNet-Lite0 ranks 285 (Egyptian cat)
   first on this photo, then 282 (tiger cat) and 281.

Masks: COARSE foreground masks, rasterised from hand-drawn polygons (6-13 vertices each) in
``photo_masks.json`` beside this module. The polygons were placed by eye on a gridded render of
each square crop, in relative [x, y] = (column, row) / side coordinates, so they fit any
``size``. They are rough outlines, off by a few percent of the image at the edges: fine for
pointing-game or inside/outside-mask scores, not for pixel-accurate segmentation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skdata
from skimage.draw import polygon2mask
from sklearn.datasets import load_sample_images

from .types import _Base, _ps

__all__ = ["PhotoSet", "real_photos", "PHOTO_NAMES"]


def _sklearn(i: int) -> Callable[[], np.ndarray]:
    return lambda: load_sample_images().images[i]


# name -> (loader of an (H, W, 3) uint8 array, source, ImageNet index or -1)
_PHOTOS: Dict[str, Tuple[Callable[[], np.ndarray], str, int]] = {
    "chelsea": (skdata.chelsea, "skimage.data.chelsea", 281),
    "coffee": (skdata.coffee, "skimage.data.coffee", 967),
    "astronaut": (skdata.astronaut, "skimage.data.astronaut", -1),
    "rocket": (skdata.rocket, "skimage.data.rocket", -1),
    "motorcycle": (lambda: skdata.stereo_motorcycle()[0], "skimage.data.stereo_motorcycle[0]", -1),
    "china": (_sklearn(0), "sklearn.datasets.load_sample_images china.jpg", 698),
    "flower": (_sklearn(1), "sklearn.datasets.load_sample_images flower.jpg", -1),
}
PHOTO_NAMES: Tuple[str, ...] = tuple(_PHOTOS)
_LABEL_NAMES = {281: "tabby, tabby cat", 967: "espresso", 698: "palace"}


@dataclass
class PhotoSet(_Base):
    """Real photos with coarse masks.

    images (N, 3, S, S) float32 in [0, 1]; masks (N, S, S) bool (coarse foreground); labels (N,)
    long, an ImageNet-1k index or -1; names, label_names ("" where the label is -1) and sources
    (where each photo comes from) are lists of N strings.
    """
    images: torch.Tensor = _ps()
    masks: torch.Tensor = _ps()
    labels: torch.Tensor = _ps()
    names: List[str] = _ps(default_factory=list)
    label_names: List[str] = _ps(default_factory=list)
    sources: List[str] = _ps(default_factory=list)
    spec: Dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


@lru_cache(maxsize=1)
def _polygons() -> Dict[str, Tuple[Tuple[float, float], ...]]:
    text = resources.files(__package__).joinpath("photo_masks.json").read_text()
    raw = json.loads(text)["polygons"]
    out = {}
    for name, pts in raw.items():
        pts = tuple((float(x), float(y)) for x, y in pts)
        if len(pts) < 3 or not all(0.0 <= v <= 1.0 for p in pts for v in p):
            raise ValueError(f"photo_masks.json: polygon {name!r} needs >= 3 [x, y] vertices "
                             "in [0, 1]")
        out[name] = pts
    return out


def _square(img: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> centre square crop resized to (3, size, size) float in [0, 1]."""
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = torch.from_numpy(np.ascontiguousarray(img[top:top + s, left:left + s, :3]))
    x = x.permute(2, 0, 1)[None].float() / 255.0
    if s != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    return x[0].clamp_(0.0, 1.0)


def _mask(poly: Sequence[Tuple[float, float]], size: int) -> torch.Tensor:
    """Rasterise relative [x, y] vertices on a size x size grid (pixel centres at i + 0.5)."""
    rc = np.array([[y * size - 0.5, x * size - 0.5] for x, y in poly])
    return torch.from_numpy(polygon2mask((size, size), rc))


def real_photos(size: int = 224, names: Optional[Sequence[str]] = None) -> PhotoSet:
    """The offline photos (all of :data:`PHOTO_NAMES`, or those in ``names``, in that order) at
    ``size`` x ``size`` px, with coarse masks and ImageNet labels; see the module docstring."""
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 1024:
        raise ValueError(f"size must be an integer in [16, 1024] px, got {size!r}")
    if names is None:
        names = PHOTO_NAMES
    elif isinstance(names, str):
        names = [names]
    names = list(names)
    unknown = [n for n in names if n not in _PHOTOS]
    if unknown or not names:
        raise ValueError(f"names must be a non-empty list of photos from {list(PHOTO_NAMES)}, "
                         f"got {unknown or names!r}")
    polys = _polygons()
    images, masks = [], []
    for n in names:
        images.append(_square(_PHOTOS[n][0](), size))
        masks.append(_mask(polys[n], size))
    labels = [_PHOTOS[n][2] for n in names]
    spec = dict(generator="real_photos", version=1, size=size, names=names,
                masks=[[list(p) for p in polys[n]] for n in names])
    return PhotoSet(images=torch.stack(images), masks=torch.stack(masks),
                    labels=torch.tensor(labels, dtype=torch.long), names=names,
                    label_names=[_LABEL_NAMES.get(lab, "") for lab in labels],
                    sources=[_PHOTOS[n][1] for n in names], spec=spec)
