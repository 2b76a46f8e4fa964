"""In-memory dataset containers shared by the embedded generators and the real-data converters.

Every generator in :mod:`xnn_support.data` and every converter in ``data_scripts/`` returns one of
these, so a notebook can switch from embedded to real data by changing one call. All arrays are
torch tensors on the CPU. ``spec`` is a JSON-serialisable dict that identifies the data exactly
(generator name and arguments, or converter name and file checksums); the trainer's checkpoint
cache keys on it.

Coordinates are pixel (row, col) for images and (x, y, z) for points; a missing landmark is NaN.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = ["ImageSet", "FaceSet", "PointCloudSet", "TextSet", "subset", "fingerprint"]


def _index(v, idx):
    if v is None:
        return None
    if torch.is_tensor(v) or isinstance(v, np.ndarray):
        return v[idx]
    if isinstance(v, list):
        return [v[i] for i in idx.tolist()] if v else []
    return v


def subset(ds, idx) -> Any:
    """Rows ``idx`` (index tensor, array or slice) of a dataset; per-sample fields are indexed,
    per-dataset fields (names, weights, vocabularies, ``spec``) are kept."""
    n = len(ds)
    if isinstance(idx, slice):
        idx = torch.arange(n)[idx]
    idx = torch.as_tensor(idx, dtype=torch.long)
    out = {}
    for f in dataclasses.fields(ds):
        v = getattr(ds, f.name)
        per_sample = f.metadata.get("per_sample", False)
        out[f.name] = _index(v, idx) if per_sample else v
    # a hand-made dataset has no spec: identify the parent by its tensors, so two different
    # datasets split the same way never share a fingerprint
    base = ds.spec if ds.spec else {"tensors": fingerprint(ds)}
    out["spec"] = dict(base, subset=fingerprint_tensor(idx))
    return type(ds)(**out)


def fingerprint_tensor(t) -> str:
    a = t.detach().cpu().contiguous().numpy() if torch.is_tensor(t) else np.ascontiguousarray(t)
    h = hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()[:16]


def fingerprint(ds) -> str:
    """A short stable hash of a dataset: its ``spec`` when it has one, else its tensors."""
    if getattr(ds, "spec", None):
        return hashlib.sha256(json.dumps(ds.spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    parts = [fingerprint_tensor(getattr(ds, f.name)) for f in dataclasses.fields(ds)
             if torch.is_tensor(getattr(ds, f.name))]
    return hashlib.sha256("".join(parts).encode()).hexdigest()[:16]


def _ps(**kw):
    """Field marked per-sample (indexed by :func:`subset`)."""
    return field(metadata={"per_sample": True}, **kw)


class _Base:
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx):
        return subset(self, idx)

    def split(self, val_fraction: float = 0.2, seed: int = 0):
        """Deterministic stratified train/validation split."""
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        g = torch.Generator().manual_seed(seed)
        labels = self.labels
        val = []
        for c in torch.unique(labels):
            members = torch.nonzero(labels == c).flatten()
            members = members[torch.randperm(len(members), generator=g)]
            val.append(members[: max(1, int(round(len(members) * val_fraction)))])
        val = torch.sort(torch.cat(val)).values
        mask = torch.ones(len(self), dtype=torch.bool)
        mask[val] = False
        return self.subset(torch.nonzero(mask).flatten()), self.subset(val)


@dataclass
class ImageSet(_Base):
    """Images with part-level ground truth.

    images (N,3,S,S) float32 in [0,1]; labels (N,) long; landmarks (N,K,2) float32 (row, col) in
    pixels, NaN where invisible; part_masks (N,P,S,S) bool; fg_mask (N,S,S) bool; boxes (N,4)
    float32 (row0, col0, row1, col1), NaN for images without an object.
    """
    images: torch.Tensor = _ps()
    labels: torch.Tensor = _ps()
    class_names: List[str] = field(default_factory=list)
    landmarks: Optional[torch.Tensor] = _ps(default=None)
    landmark_names: List[str] = field(default_factory=list)
    part_masks: Optional[torch.Tensor] = _ps(default=None)
    part_names: List[str] = field(default_factory=list)
    fg_mask: Optional[torch.Tensor] = _ps(default=None)
    boxes: Optional[torch.Tensor] = _ps(default=None)
    spec: Dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


@dataclass
class FaceSet(_Base):
    """Cartoon faces with binary attributes and a planted target.

    images (N,3,S,S); attributes (N,A) float32 in {0,1}; region_masks (N,A,S,S) bool (where each
    attribute is drawn); target (N,) float32 = bias + attributes @ weights + noise;
    labels (N,) long = (target > threshold) for classification use.
    """
    images: torch.Tensor = _ps()
    attributes: torch.Tensor = _ps()
    attribute_names: List[str] = field(default_factory=list)
    region_masks: Optional[torch.Tensor] = _ps(default=None)
    target: Optional[torch.Tensor] = _ps(default=None)
    labels: Optional[torch.Tensor] = _ps(default=None)
    weights: Optional[torch.Tensor] = None
    bias: float = 0.0
    spec: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class PointCloudSet(_Base):
    """Point clouds. points (N,P,3) float32 inside the unit sphere; labels (N,) long;
    part_labels (N,P) long or None; fg_mask (N,P) bool or None."""
    points: torch.Tensor = _ps()
    labels: torch.Tensor = _ps()
    class_names: List[str] = field(default_factory=list)
    part_labels: Optional[torch.Tensor] = _ps(default=None)
    part_names: List[str] = field(default_factory=list)
    fg_mask: Optional[torch.Tensor] = _ps(default=None)
    spec: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TextSet(_Base):
    """Tokenised sentences. ids (N,L) long, padded with 0 (vocab[0] == '<pad>'); mask (N,L) bool
    (True on real tokens); tokens: list of token lists; labels (N,) long; key_words: the planted
    words per class name (e.g. {'positive': [...], 'negative': [...]})."""
    ids: torch.Tensor = _ps()
    mask: torch.Tensor = _ps()
    labels: torch.Tensor = _ps()
    tokens: List[List[str]] = _ps(default_factory=list)
    vocab: List[str] = field(default_factory=list)
    class_names: List[str] = field(default_factory=list)
    key_words: Dict[str, Sequence[str]] = field(default_factory=dict)
    spec: Dict[str, Any] = field(default_factory=dict)
