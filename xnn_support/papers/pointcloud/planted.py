"""Planted checks of notebook 06 (Shen et al., CVPR 2021): two point-cloud networks whose rotation
robustness is known by construction, to check the rotation non-robustness estimator.

* :class:`DistanceNet` sees only distances, so its feature is exactly rotation-invariant: its rotation
  non-robustness must sit at the estimator's noise floor;
* :class:`CoordinateNet` is a plain per-point MLP on raw coordinates: nothing makes it rotation-robust.
"""
from __future__ import annotations

import torch

__all__ = ["DistanceNet", "CoordinateNet"]


class _PlantedNet(torch.nn.Module):
    """Per-point MLP on ``point_features(x)`` + max-pool + head (``feature_layer = "head"``)."""
    feature_layer = "head"
    in_features = 3

    def __init__(self, num_classes: int = 10, width: int = 64):
        super().__init__()
        self.point = torch.nn.Sequential(torch.nn.Linear(self.in_features, width), torch.nn.ReLU(),
                                         torch.nn.Linear(width, width))
        self.head = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU())
        self.out = torch.nn.Linear(width, num_classes)

    def point_features(self, x):
        return x

    def forward(self, x):
        return self.out(self.head(self.point(self.point_features(x)).max(1).values))


class DistanceNet(_PlantedNet):
    """A network that sees only distances (to the centroid and between points): its feature is exactly
    rotation-invariant, so its rotation non-robustness must sit at the estimator's noise floor."""
    in_features = 4

    def point_features(self, x):
        d = torch.cdist(x, x)
        c = (x - x.mean(1, keepdim=True)).norm(dim=-1)
        return torch.stack([c, d.mean(-1), torch.exp(-4 * d).mean(-1), d.max(-1).values], -1)


class CoordinateNet(_PlantedNet):
    """A plain per-point MLP on raw coordinates + max-pool: nothing makes it rotation-robust."""
