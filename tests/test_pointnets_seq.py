"""Tests for the PointConv / Point2Sequence / DGCNN backbones of paper 06 (xnn_support.models.pointnets_seq):
shapes of every switch combination, fixed-geometry caching, row selection, gradients, overfitting,
parameter counts."""
import itertools

import pytest
import torch

from xnn_support.models.pointnets_base import take
from xnn_support.models.pointnets_seq import DGCNN, MiniPoint2Sequence, MiniPointConv, register_all

pytestmark = pytest.mark.usefixtures("one_thread")

P2S_SCALES = [(8, 16, 32, 64), (16, 32, 64), (32, 64)]
VARIANTS = (
    [(MiniPointConv, dict(density=d, weightnet=w)) for d, w in itertools.product([True, False], repeat=2)]
    + [(MiniPoint2Sequence, dict(scales=s, density=d, weightnet=w, orientation=o))
       for s in P2S_SCALES for d, w, o in itertools.product([False, True], repeat=3)]
    + [(DGCNN, dict(scales=s)) for s in [(16,), (8, 16), (8, 16, 32)]]
)
BASE = [(MiniPointConv, {}), (MiniPoint2Sequence, {}), (DGCNN, {})]
# every module switched on at once: exercises every geometry entry
FULL = [(MiniPointConv, {}), (MiniPoint2Sequence, dict(density=True, weightnet=True, orientation=True)),
        (DGCNN, dict(scales=(8, 16)))]


def _ids(v):
    cls, kw = v
    return cls.__name__ + "-" + "-".join(f"{k}={val}" for k, val in kw.items())


def clouds(b, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, n, 3, generator=g) * 2 - 1
    return x / x.norm(dim=-1).amax(1).view(b, 1, 1)


def build(cls, kw, seed=0, **extra):
    torch.manual_seed(seed)
    return cls(num_classes=5, **kw, **extra)


@pytest.mark.parametrize("n", [64, 128])
def test_output_shapes_every_switch_combination(n):
    x = clouds(2, n)
    for cls, kw in VARIANTS:
        m = build(cls, kw).eval()
        with torch.no_grad():
            y = m(x)
        assert y.shape == (2, 5), (cls.__name__, kw)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("v", FULL, ids=_ids)
def test_min_points_and_train_mode(v):
    m = build(*v).train()
    assert m(clouds(3, 32)).shape == (3, 5)


@pytest.mark.parametrize("v", FULL, ids=_ids)
def test_fixed_geometry_equals_recomputed(v):
    m = build(*v).eval()
    x = clouds(4, 96, seed=1)
    g = m.geometry(x)
    g2 = m.geometry(x.clone())
    assert g.keys() == g2.keys() and all(torch.equal(g[k], g2[k]) for k in g)
    assert all(t.dtype == torch.long and t.shape[0] == 4 for t in g.values())
    with torch.no_grad():
        assert torch.equal(m(x, geometry=g), m(x))
        # a zero-noise copy with the cached geometry gives identical logits
        assert torch.equal(m(x + 0.0 * torch.randn_like(x), geometry=g), m(x))
        # noise with cached geometry runs and changes the logits
        assert not torch.equal(m(x + 0.02 * torch.randn_like(x), geometry=g), m(x))


@pytest.mark.parametrize("v", FULL, ids=_ids)
def test_row_select_consistency(v):
    m = build(*v).eval()
    x = clouds(5, 64, seed=2)
    idx = torch.tensor([3, 0, 3])
    g = m.geometry(x)
    gs = take(g, idx)
    gr = m.geometry(x[idx])
    assert all(torch.equal(gs[k], gr[k]) for k in g)
    with torch.no_grad():
        a, b = m(x[idx], geometry=gs), m(x[idx])
    # equal up to float reassociation of batch-size dependent kernels
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a, m(x)[idx].detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("v", FULL, ids=_ids)
@pytest.mark.parametrize("cached", [False, True])
def test_gradient_flows_to_input(v, cached):
    m = build(*v).eval()
    x0 = clouds(2, 64, seed=3)
    g = m.geometry(x0) if cached else None
    x = x0.clone().requires_grad_(True)
    m(x, geometry=g).logsumexp(-1).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("v", BASE, ids=_ids)
def test_base_nets_overfit_two_classes(v):
    x = clouds(16, 64, seed=4)
    y = torch.arange(16) % 2
    x[y == 1] = x[y == 1] * torch.tensor([0.4, 0.4, 1.0])       # class 1: squashed in x, y
    torch.manual_seed(0)
    m = v[0](num_classes=2, dropout=0.0, **v[1]).train()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first and last < 0.35, (first, last)


def test_parameter_counts(capsys):
    counts = {}
    extra = [(MiniPoint2Sequence, dict(scales=s, density=False, weightnet=False, orientation=False))
             for s in P2S_SCALES[1:]]
    for cls, kw in VARIANTS[:4] + VARIANTS[4:12] + extra + VARIANTS[-3:]:
        counts[_ids((cls, kw))] = sum(p.numel() for p in build(cls, kw).parameters())
    with capsys.disabled():
        print()
        for k, c in counts.items():
            print(f"  {k:90s} {c:8d}")
    single = counts[_ids((DGCNN, dict(scales=(16,))))]
    for s in [(8, 16), (8, 16, 32)]:
        assert counts[_ids((DGCNN, dict(scales=s)))] <= 1.5 * single


def test_dgcnn_later_graphs_are_dynamic():
    m = build(DGCNN, dict(scales=(8, 16))).eval()
    assert set(m.geometry(clouds(2, 64))) == {"knn8", "knn16"}


def test_noweight_is_order_dependent_linear_mix():
    m = build(MiniPointConv, dict(weightnet=False, density=False))
    assert m.convs[0][0].in_channels == m.mlps[0][0].out_channels * m.k


def test_register_all():
    reg = {}
    register_all(lambda name, factory: reg.__setitem__(name, factory))
    assert reg == {"pointconv": MiniPointConv, "point2sequence": MiniPoint2Sequence, "dgcnn": DGCNN}


def test_bad_scales():
    with pytest.raises(ValueError):
        MiniPoint2Sequence(scales=(8, 16, 32, 64, 128))
