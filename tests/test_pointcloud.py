"""Tests of the paper-06 metrics (xnn_support.papers.pointcloud.method) with planted truth: exactly invariant
vs coordinate networks, fragile vs robust decision margins, ignored points, reference values."""
import math

import pytest
import torch
from torch import nn

from xnn_support.papers.pointcloud import method as pc

pytestmark = pytest.mark.usefixtures("one_thread")


class Invariant(nn.Module):
    """Sees only pairwise distances: exactly rotation-invariant."""
    feature_layer = "head"

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 32))
        self.head = nn.Sequential(nn.Linear(32, 16), nn.ReLU())
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        d = torch.cdist(x, x)
        c = (x - x.mean(1, keepdim=True)).norm(dim=-1)
        f = torch.stack([c, d.mean(-1), (-4 * d).exp().mean(-1), d.max(-1).values], -1)
        return self.out(self.head(self.mlp(f).max(1).values))


class CoordMLP(nn.Module):
    """A plain per-point MLP on raw coordinates (no invariance); ``keep`` points only, if given."""
    feature_layer = "head"

    def __init__(self, keep=None):
        super().__init__()
        self.keep = keep
        self.mlp = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 32))
        self.head = nn.Sequential(nn.Linear(32, 16), nn.ReLU())
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        if self.keep is not None:
            x = x[:, :self.keep]
        return self.out(self.head(self.mlp(x).max(1).values))


class Margin(nn.Module):
    """Two classes decided by the sign of mean_x + b: the minimal flip moves every point by b."""

    def __init__(self, b):
        super().__init__()
        self.b = b

    def forward(self, x):
        m = x[..., 0].mean(1) + self.b
        return 20 * torch.stack([m, -m], 1)


def _clouds(b=4, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    return x / x.norm(dim=-1).max()


def _model(cls, seed=1, **kw):
    torch.manual_seed(seed)
    return cls(**kw)


def test_reference_values_of_divergences():
    a = torch.tensor([0.3, 1.0, 2.5])
    assert torch.allclose(pc.jslb(a, a), torch.zeros(3), atol=1e-7)
    b = torch.tensor([1.0, 0.2, 9.0])
    assert torch.allclose(pc.jslb(a, b), pc.jslb(b, a))
    assert bool((pc.jslb(a, b) >= 0).all()) and bool((pc.jslb(a, b) <= math.log(2)).all())
    assert float(pc.kl_normal(torch.tensor(1.0), torch.tensor(2.0))) == pytest.approx(math.log(2) + 1 / 8 - 0.5, abs=1e-6)


def test_nonrobustness_is_zero_for_identical_maps_and_counts_pairs():
    ls = torch.log(torch.rand(2, 1, 50) * 0.05 + 0.01).expand(2, 40, 50)
    assert float(pc.nonrobustness_from_log_sigma(ls).abs().max()) < 1e-6
    # one rotation differs from the 39 others: 39 of the 780 pairs carry its divergence
    ls2 = ls.clone()
    ls2[:, 0] = torch.log(torch.full((50,), 0.03))
    nr = pc.nonrobustness_from_log_sigma(ls2)
    c = -ls2.mean(-1, keepdim=True)
    s = torch.exp(ls2 / c)
    one = pc.jslb(s[:, 0], s[:, 1]).sum(-1)
    assert torch.allclose(nr, one * 39 / 780, rtol=1e-5)


def test_rotation_table_gives_rotations():
    R = pc.rotation_table(3, 5, seed=0)
    eye = torch.eye(3).expand(3, 5, 3, 3)
    assert torch.allclose(R @ R.transpose(-1, -2), eye, atol=1e-5)
    assert torch.allclose(torch.det(R), torch.ones(3, 5), atol=1e-5)
    assert torch.equal(R, pc.rotation_table(3, 5, seed=0)) and not torch.equal(R, pc.rotation_table(3, 5, seed=1))


def test_drop_outsider_and_constant_sigma_has_no_inconsistency():
    s = torch.tensor([[0.01, 0.03, 0.08, 0.08], [0.08, 0.08, 0.08, 0.08]])
    d = pc.drop_outsider(s)
    assert torch.allclose(d[0], torch.tensor([0.01, 0.03, 0.02, 0.02]))
    assert torch.equal(d[1], s[1])  # every point saturated: left as is
    x = _clouds(2, 32)
    assert float(pc.inconsistency_from_sigma(torch.full((2, 32), 0.03), x).abs().max()) == 0.0
    h = torch.full((2, 32), 0.03)
    h[0, 0] = 0.003  # one odd point: its neighbourhoods see a gap of log(100)
    assert float(pc.inconsistency_from_sigma(h, x)[0]) > 0


def test_invariant_network_is_at_the_noise_floor_and_coordinate_mlp_is_not():
    x = _clouds(3, 48)
    inv = pc.rotation_nonrobustness(_model(Invariant), x, n_rotations=4, steps=60, per_cloud=True)
    mlp = pc.rotation_nonrobustness(_model(CoordMLP), x, n_rotations=4, steps=60, per_cloud=True)
    assert float(inv.max()) < 1e-4           # common random numbers: exactly invariant -> 0 up to float error
    assert float(mlp.min()) > 100 * max(float(inv.max()), 1e-6)
    # the official protocol (fresh noise per rotation): the invariant net's value is the estimator's
    # noise floor; the coordinate MLP must still stand clearly above it
    inv_i = pc.rotation_nonrobustness(_model(Invariant), x, n_rotations=4, steps=60, noise="independent")
    mlp_i = pc.rotation_nonrobustness(_model(CoordMLP), x, n_rotations=4, steps=60, noise="independent")
    assert mlp_i > 3 * inv_i


def test_attack_finds_smaller_perturbations_for_a_fragile_model():
    x = _clouds(4, 32)
    x[..., 0] -= x[..., 0].mean(1, keepdim=True)  # mean_x = 0: the margin is exactly b
    y = torch.zeros(4, dtype=torch.long)
    fragile = pc.attack(Margin(0.05), x, y, steps=400, lr=0.02, init="zeros")
    robust = pc.attack(Margin(0.5), x, y, steps=400, lr=0.02, init="zeros")
    assert bool(fragile.success.all()) and bool(robust.success.all())
    assert float(fragile.norm2.mean()) < float(robust.norm2.mean()) / 20
    # the minimal flip moves every point by b along x: ||delta||^2 >= N b^2
    assert float(robust.norm2.min()) >= 32 * 0.5 ** 2 * 0.99
    assert float(fragile.norm2.min()) >= 32 * 0.05 ** 2 * 0.99
    # official Glorot start (||delta_0||^2 ~ 5.5 here): still ordered when the margin dominates
    g_fragile = pc.adversarial_robustness(Margin(0.05), x, y, steps=400, lr=0.02, init="glorot")
    g_robust = pc.adversarial_robustness(Margin(0.8), x, y, steps=400, lr=0.02, init="glorot")
    assert g_fragile < g_robust / 2
    ar = pc.adversarial_robustness(Margin(0.5), x, y, steps=400, lr=0.02, init="zeros")
    assert ar == pytest.approx(float(robust.norm2.mean()), rel=1e-6)


def test_batched_attack_equals_per_pair_loop():
    x = _clouds(3, 32)
    m = _model(CoordMLP).eval()
    y = m(x).argmax(1)
    a = pc.attack(m, x, y, steps=50)
    b = pc.attack(m, x, y, steps=50, engine="loop")
    assert a.cloud.tolist() == [0, 0, 1, 1, 2, 2] and torch.equal(a.target, b.target)
    assert torch.equal(a.success, b.success) and torch.equal(a.steps, b.steps)
    assert torch.allclose(a.norm2, b.norm2, rtol=1e-4, atol=1e-7)


def test_ignored_points_carry_the_noise():
    x = _clouds(2, 64)
    ps = pc.point_sigma(_model(CoordMLP, keep=32), x, steps=200, drop=False)  # saturation is the signal here
    fg = torch.zeros(2, 64, dtype=torch.bool)
    fg[:, :32] = True
    assert ps.entropy.shape == (2, 64) and ps.saturated > 0.5
    assert bool((ps.sigma[~fg] > pc.SATURATED).all())               # ignored points: at the cap
    assert pc.information_concentration(ps.entropy, fg) > 0.5
    assert float(ps.F.mean()) == pytest.approx(2.0, rel=0.25)   # held at the read-out level


def test_errors_are_clear():
    m = _model(CoordMLP)
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        pc.neighborhood_inconsistency(m, torch.rand(2, 10))
    with pytest.raises(ValueError, match="n_rotations"):
        pc.rotation_nonrobustness(m, _clouds(1, 16), n_rotations=1)
    with pytest.raises(ValueError, match="labels"):
        pc.adversarial_robustness(m, _clouds(2, 16), torch.tensor([0]))
    with pytest.raises(ValueError, match="does not change"):
        pc.feature_scale(nn.Sequential(nn.Flatten(), nn.Linear(48, 2), nn.Flatten(0)).requires_grad_(False)
                         .apply(lambda mod: nn.init.zeros_(mod.weight) if isinstance(mod, nn.Linear) else None),
                         _clouds(2, 16))
