"""Tests for xnn_support.data.clouds (digits3d, shapes3d, parts3d)."""
import numpy as np
import pytest
import torch

from xnn_support.data.clouds import PART_CLASSES, SHAPE_CLASSES, digits3d, parts3d, shapes3d
from xnn_support.data.types import PointCloudSet


def _shares(ds):
    return torch.stack([(ds.part_labels == k).float().mean(1) for k in range(len(ds.part_names))], 1)


@pytest.fixture(scope="module")
def shapes():
    return shapes3d(6, 256, seed=1)


@pytest.fixture(scope="module")
def parts():
    return parts3d(8, 256, seed=1)


def test_shapes3d_layout(shapes):
    assert isinstance(shapes, PointCloudSet) and len(SHAPE_CLASSES) >= 10
    assert shapes.points.shape == (6 * len(SHAPE_CLASSES), 256, 3) and shapes.points.dtype == torch.float32
    assert shapes.class_names == SHAPE_CLASSES and shapes.fg_mask is None
    assert torch.equal(torch.bincount(shapes.labels), torch.full((len(SHAPE_CLASSES),), 6))
    assert torch.isfinite(shapes.points).all()


@pytest.mark.parametrize("make", [lambda: shapes3d(3, 128, rotate=True, seed=2),
                                  lambda: parts3d(3, 128, density="view", seed=2),
                                  lambda: digits3d(40, 128, mode="extrude", seed=2)])
def test_unit_sphere_and_centred(make):
    ds = make()
    norms = ds.points.norm(dim=-1)
    assert norms.max() <= 1.0 and (norms.max(1).values > 0.999).all()
    assert ds.points.mean(1).abs().max() < 1e-5


def test_determinism():
    for make in (lambda s: shapes3d(2, 64, classes=["mug", "torus"], rotate=True, background=16, seed=s),
                 lambda s: parts3d(2, 64, density="parts", seed=s), lambda s: digits3d(30, 64, seed=s)):
        a, b, c = make(0), make(0), make(1)
        assert torch.equal(a.points, b.points) and torch.equal(a.labels, b.labels) and a.spec == b.spec
        assert not torch.equal(a.points, c.points)


def test_parts_cover_all_points(parts):
    assert parts.class_names == PART_CLASSES and parts.points.shape == (8 * len(PART_CLASSES), 256, 3)
    pl = parts.part_labels
    assert pl.shape == (len(parts), 256) and pl.min() >= 0 and pl.max() < len(parts.part_names)
    owner = torch.tensor([PART_CLASSES.index(p.split("/")[0]) for p in parts.part_names])
    assert torch.equal(owner[pl], parts.labels[:, None].expand_as(pl))  # every point in its class's parts
    big = parts3d(30, 256, seed=1)
    assert set(big.part_labels.unique().tolist()) == set(range(len(big.part_names)))  # every part used
    counts = [len(set(p.split("/")[1] for p in big.part_names if p.startswith(c + "/"))) for c in PART_CLASSES]
    assert min(counts) >= 2 and max(counts) <= 5


def test_density_changes_part_share_but_not_shapes():
    kw = dict(classes=["chair", "airplane", "lamp", "table"], seed=0)
    a, b, c = parts3d(40, 256, **kw), parts3d(40, 256, density="parts", **kw), parts3d(40, 256, density="view", **kw)
    assert torch.equal(a.labels, b.labels)
    assert (_shares(a) - _shares(b)).abs().sum(1).mean() > 0.15
    assert (_shares(a) - _shares(c)).abs().sum(1).mean() > 0.06
    # uniform density: each part's share tracks its area, so it varies far less between clouds
    def spread(ds):
        sh = _shares(ds)
        means = torch.stack([sh[ds.labels == c].mean(0) for c in range(len(ds.class_names))])
        return (sh - means[ds.labels]).abs().sum(1).mean()
    assert spread(b) > 2 * spread(a)

def test_view_density_is_one_sided():
    uni = shapes3d(20, 512, classes=["sphere"], seed=0).points.norm(dim=-1).std(1).mean()
    view = shapes3d(20, 512, classes=["sphere"], density="view", seed=0).points.norm(dim=-1).std(1).mean()
    assert view > 3 * uni


def test_area_uniform_sampling():
    sph = shapes3d(4, 4000, classes=["sphere"], seed=0).points.double()
    z = torch.sort(sph[..., 2].flatten()).values  # Archimedes: z is uniform on [-1, 1] for a sphere
    ks = (z - torch.linspace(-1, 1, len(z), dtype=torch.float64)).abs().max()
    assert ks < 0.03
    tor = shapes3d(4, 4000, classes=["torus"], seed=0).points.double()
    rho = tor[..., :2].norm(dim=-1)
    R = (rho.max(1).values + rho.min(1).values) / 2
    r = (rho.max(1).values - rho.min(1).values) / 2
    outer = (rho > R[:, None]).double().mean(1)
    assert torch.allclose(outer, (np.pi * R + 2 * r) / (2 * np.pi * R), atol=0.025)
    cyl = shapes3d(4, 4000, classes=["cylinder"], seed=0).points.double()
    zc, rc = cyl[..., 2], cyl[..., :2].norm(dim=-1).max(1).values
    h = zc.max(1).values - zc.min(1).values
    lo, hi = zc.min(1, keepdim=True).values, zc.max(1, keepdim=True).values
    on_caps = ((zc - lo < 1e-6) | (hi - zc < 1e-6)).double().mean(1)
    assert torch.allclose(on_caps, rc / (rc + h), atol=0.025)


def test_background_points():
    ds = shapes3d(3, 128, classes=["chair", "box"], background=32, seed=0)
    assert ds.points.shape == (6, 160, 3) and ds.fg_mask.shape == (6, 160)
    assert (ds.fg_mask.sum(1) == 128).all()
    for p, m in zip(ds.points, ds.fg_mask):
        assert torch.cdist(p[~m], p[m]).min() >= 0.05 - 1e-5
        assert p[~m].norm(dim=-1).max() <= 1.0
        assert p[m].mean(0).abs().max() < 1e-5
    # the object points are those of the set without background
    plain = shapes3d(3, 128, classes=["chair", "box"], seed=0)
    assert torch.allclose(torch.sort(ds.points[ds.fg_mask].flatten()).values,
                          torch.sort(plain.points.flatten()).values)


def test_rotation_is_rigid():
    kw = dict(classes=["chair", "cone"], seed=4)
    a, b, c = shapes3d(2, 64, **kw), shapes3d(2, 64, rotate=True, **kw), shapes3d(2, 64, rotate="z", **kw)
    assert not torch.allclose(a.points, b.points)
    assert torch.allclose(torch.cdist(a.points, a.points, compute_mode="donot_use_mm_for_euclid_dist"),
                          torch.cdist(b.points, b.points, compute_mode="donot_use_mm_for_euclid_dist"), atol=1e-5)
    assert torch.allclose(a.points[..., 2], c.points[..., 2], atol=1e-5)


def test_digits3d():
    from sklearn.datasets import load_digits

    full = digits3d(points=64)
    assert full.points.shape == (1797, 64, 3) and full.class_names == [str(i) for i in range(10)]
    assert torch.equal(torch.bincount(full.labels), torch.bincount(torch.from_numpy(load_digits().target)))
    small = digits3d(50, 64)
    assert torch.equal(torch.bincount(small.labels), torch.full((10,), 5))
    assert len(digits3d(1800, 16)) == 1800
    emb, ext = digits3d(20, 256, seed=3), digits3d(20, 256, mode="extrude", seed=3)
    # extrusion spreads z uniformly; emboss puts z on the ink-intensity relief
    assert not torch.allclose(emb.points[..., 2], ext.points[..., 2])
    assert len(digits3d(10, 64, density="view")) == 10


@pytest.mark.parametrize("call", [
    lambda: shapes3d(0), lambda: shapes3d(2, 0), lambda: shapes3d(2, 8, classes=["dragon"]),
    lambda: shapes3d(2, 8, classes=["box", "box"]), lambda: shapes3d(2, 8, classes=[]),
    lambda: shapes3d(2, 8, density="fog"), lambda: shapes3d(2, 8, rotate="x"),
    lambda: shapes3d(2, 8, background=-1), lambda: shapes3d(2, 8, seed=-1), lambda: shapes3d(2.5, 8),
    lambda: parts3d(2, 8, classes=["sphere"]), lambda: digits3d(0), lambda: digits3d(5, 8, mode="carve"),
    lambda: digits3d(5, 8, density="parts"), lambda: digits3d(5, -3),
])
def test_bad_inputs(call):
    with pytest.raises(ValueError):
        call()
