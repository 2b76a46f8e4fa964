"""Mini PointNet++ / PointSIFT (paper 06): shapes, geometry cache, noise, gradients, training, sizes."""
import itertools

import pytest
import torch

from xnn_support.models.pointnets import MiniPointNet2, MiniPointSIFT, register_all
from xnn_support.models.pointnets_base import take

pytestmark = pytest.mark.usefixtures("one_thread")

SWITCHES = ("msg", "density", "weightnet", "orientation")
PN2_COMBOS = [dict(zip(SWITCHES, bits)) for bits in itertools.product([False, True], repeat=4)]
VARIANTS = [(MiniPointNet2, {}), (MiniPointNet2, dict(msg=True)), (MiniPointNet2, dict(density=True)),
            (MiniPointNet2, dict(weightnet=True)), (MiniPointNet2, dict(orientation=True)),
            (MiniPointNet2, dict(msg=True, density=True, weightnet=True, orientation=True)),
            (MiniPointSIFT, {}), (MiniPointSIFT, dict(orientation=False))]
IDS = ["ssg", "msg", "density", "weightnet", "orientation", "all", "sift", "nosift"]


def clouds(b, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    return x / x.norm(dim=-1).amax(1).view(b, 1, 1)


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def build(cls, kw, seed=0, **extra):
    torch.manual_seed(seed)
    return cls(**kw, **extra).eval()


@pytest.mark.parametrize("n", [64, 128])
def test_shapes_every_switch_combination(n):
    x = clouds(3, n)
    for kw in PN2_COMBOS:
        with torch.no_grad():
            assert build(MiniPointNet2, kw, num_classes=5)(x).shape == (3, 5), kw
    for o in (True, False):
        with torch.no_grad():
            assert build(MiniPointSIFT, dict(orientation=o), num_classes=5)(x).shape == (3, 5)


def test_small_n_and_int_centres():
    x = clouds(2, 32)
    with torch.no_grad():
        assert MiniPointNet2(centres=(16, 4), msg=True).eval()(x).shape == (2, 10)
        assert MiniPointSIFT(centres=8).eval()(x).shape == (2, 10)


@pytest.mark.parametrize("cls,kw", VARIANTS, ids=IDS)
def test_geometry_cache_exact_and_row_select(cls, kw):
    m, x = build(cls, kw), clouds(5, 64)
    geo = m.geometry(x)
    assert all(v.dtype == torch.long and v.shape[0] == 5 for v in geo.values())
    for key in geo:
        assert torch.equal(geo[key], m.geometry(x.clone())[key])
    with torch.no_grad():
        assert torch.equal(m(x), m(x, geometry=geo))
        idx = torch.tensor([4, 1, 1])
        assert torch.equal(m(x[idx], geometry=take(geo, idx)), m(x[idx]))


@pytest.mark.parametrize("cls,kw", VARIANTS, ids=IDS)
def test_noise_with_fixed_geometry(cls, kw):
    m, x = build(cls, kw), clouds(4, 64)
    geo = m.geometry(x)
    with torch.no_grad():
        y = m(x, geometry=geo)
        assert torch.equal(m(x + 0.0 * torch.randn_like(x), geometry=geo), y)
        y_noisy = m(x + 1e-4 * torch.randn_like(x), geometry=geo)
    assert not torch.equal(y_noisy, y)  # coordinates flow through the cached topology
    assert (y_noisy - y).abs().max() < 1e-2 * (1 + y.abs().max())


@pytest.mark.parametrize("cls,kw", VARIANTS, ids=IDS)
@pytest.mark.parametrize("cached", [False, True])
def test_gradient_reaches_input(cls, kw, cached):
    m, x0 = build(cls, kw), clouds(3, 64)
    geo = m.geometry(x0) if cached else None
    x = x0.clone().requires_grad_(True)
    m(x, geometry=geo).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_base_net_overfits_two_classes():
    torch.manual_seed(0)
    x = clouds(16, 64, seed=1)
    x[8:] = x[8:] * torch.tensor([1.0, 1.0, 0.3])  # class 1: flattened clouds
    y = torch.tensor([0] * 8 + [1] * 8)
    m = MiniPointNet2(num_classes=2, dropout=0.0).train()
    geo = m.geometry(x)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(m(x, geometry=geo), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    with torch.no_grad():  # the BN running statistics lag the fast-moving weights: refresh them first
        for _ in range(40):
            m(x, geometry=geo)
        assert (m.eval()(x).argmax(1) == y).float().mean() >= 0.9


def test_parameter_budgets():
    ssg, msg = nparams(MiniPointNet2()), nparams(MiniPointNet2(msg=True))
    print(f"SSG {ssg} MSG {msg}")
    assert 1 / 1.5 < msg / ssg < 1.5
    for cls in (MiniPointNet2, MiniPointSIFT):
        on, off = nparams(cls(orientation=True)), nparams(cls(orientation=False))
        print(f"{cls.__name__}: orientation {on} without {off}")
        assert 0.5 < on / off < 2.0


def test_register_all():
    zoo = {}
    register_all(lambda name, factory: zoo.__setitem__(name, factory))
    assert zoo == {"pointnet2": MiniPointNet2, "pointsift": MiniPointSIFT}
