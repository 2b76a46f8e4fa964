"""The shared sigma engine (xnn_support.sigma): planted-truth toys with closed forms, batched ==
one-at-a-time, read-out rules, the staircase, and clear errors on bad input."""
import math

import pytest
import torch
from torch import nn

from xnn_support import sigma as S
from xnn_support.core.capture import CaptureError

W = torch.tensor([10.0, 20.0, 5.0, -20.0, -10.0])


pytestmark = pytest.mark.usefixtures("one_thread")


def _phi(e):  # the authors' linear toy: (B, 5, K) -> (B, K)
    return (W.view(1, 5, 1) * e).sum(1)


def test_icml19_linear_toy_matches_closed_form():
    """Phi(x) = sum_i w_i x_i: sigma_i* = r sqrt(rate / (2n)) / |w_i| (spec 04 section 8), within 5 %."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 256, generator=g) / 100          # three sentences, optimised together
    r = _phi(torch.randn(100, 5, 256, generator=g) / 100).std(0, unbiased=False)
    r_eff = r.pow(-2).mean().pow(-0.5)
    closed = r_eff * math.sqrt(0.1 / (2 * 5)) / W.abs()
    res = S.optimize_sigma(x, S.AxisUnits(), S.CallableFeatures([_phi]), config="icml19", scale=1.0, lr=0.5,
                           steps=1000, samples=4, sigma_f=r.pow(2), sigma_init=0.003, seed=0)
    rel = (res.sigma[0] - closed).abs() / closed
    assert rel.max() < 0.05, (res.sigma[0], closed)
    assert abs(float(res.F.mean()) - 0.05) < 0.01       # data term at the optimum = rate / 2


def test_icml22_linear_toy_stationary_point():
    """f(x) = a * x elementwise, grid cells: sigma_c*^2 = lam n sigma_f / (2 G S_c) and F* = lam / 2."""
    g = torch.Generator().manual_seed(1)
    grid, size, lam = 4, 16, 5.0
    cell_scale = torch.rand(grid, grid, generator=g) * 3 + 0.5
    a = cell_scale.repeat_interleave(size // grid, 0).repeat_interleave(size // grid, 1)  # (16, 16)
    a = a.expand(3, size, size)

    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("a", a.clone())
            self.out = nn.Identity()

        def forward(self, x):
            return self.out(x * self.a)

    x = torch.rand(2, 3, size, size, generator=g)
    n, G = a.numel(), grid * grid
    S_c = (a ** 2).reshape(3, grid, size // grid, grid, size // grid).sum((0, 2, 4)).reshape(-1)
    kw = dict(config="clean", steps=600, lr=0.05, samples=16, lr_schedule=None, readout="tail", tail=0.3, seed=0)
    res = S.optimize_sigma(x, S.GridUnits(grid), S.ModuleFeatures(Linear(), ["out"]), lam=lam, constraint=None, **kw)
    for b in range(2):
        closed = (lam * n * res.sigma_f[0, b] / (2 * G * S_c)).sqrt()
        rel = (res.sigma[0, b] - closed).abs() / closed
        assert rel.max() < 0.05, (res.sigma[0, b], closed)
    assert abs(float(res.F.mean()) - lam / 2) < 0.15
    # with the constraint F = 1.5 (dual ascent on lam), the optimum is the closed form at lam = 2 x 1.5
    res = S.optimize_sigma(x, S.GridUnits(grid), S.ModuleFeatures(Linear(), ["out"]), lam=lam, constraint=1.5, **kw)
    assert abs(float(res.F.mean()) - 1.5) < 0.1
    closed = (3.0 * n * res.sigma_f[0, 0] / (2 * G * S_c)).sqrt()
    assert ((res.sigma[0, 0] - closed).abs() / closed).max() < 0.06
    assert abs(float(res.history["lam"][-1].mean()) - 3.0) < 0.3


class _IgnoresLeft(nn.Module):
    """A conv net that multiplies its input by a mask zeroing the left half: it provably ignores it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        keep = torch.ones(1, 1, 16, 16)
        keep[..., :8] = 0
        self.register_buffer("keep", keep)

    def forward(self, x):
        return self.body(x * self.keep)


def test_ignored_region_gets_the_largest_sigma():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    res = S.optimize_sigma(x, S.GridUnits(4), S.ModuleFeatures(_IgnoresLeft(), ["body.1", "body.3"]),
                           steps=150, samples=4, seed=0)
    sig = res.sigma.reshape(2, 2, 4, 4)                  # (layer, image, row, col)
    ignored, used = sig[..., :2], sig[..., 2:]
    assert (ignored.amin((-1, -2)) > used.amax((-1, -2))).all()
    # the ignored cells feel only the entropy term: within a pair, every one of them moved the same way
    flat = ignored.reshape(2, 2, -1)
    assert torch.allclose(flat, flat[..., :1].expand_as(flat))


def _vgg_like():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 16, 4)).double()


def test_batched_equals_one_at_a_time():
    """3 images x 2 layers in one optimisation == each (image, layer) alone, same seed (float64)."""
    model = _vgg_like()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    layers = ["1", "7"]
    kw = dict(steps=25, samples=3, seed=5, lr=0.1)
    both = S.optimize_sigma(x, S.GridUnits(4), S.ModuleFeatures(model, layers), **kw)
    chunked = S.optimize_sigma(x, S.GridUnits(4), S.ModuleFeatures(model, layers), batch_size=2, **kw)
    assert torch.allclose(both.sigma, chunked.sigma, rtol=1e-9, atol=0)
    for b in range(3):
        for l, name in enumerate(layers):
            alone = S.optimize_sigma(x[b:b + 1], S.GridUnits(4), S.ModuleFeatures(model, [name]), **kw)
            assert torch.allclose(alone.sigma[0, 0], both.sigma[l, b], rtol=1e-7, atol=0)
            assert torch.allclose(alone.history["F"][:, 0, 0], both.history["F"][:, l, b], rtol=1e-7)
    other = S.optimize_sigma(x, S.GridUnits(4), S.ModuleFeatures(model, layers), **{**kw, "seed": 6})
    assert not torch.allclose(other.sigma, both.sigma)


def test_padded_words_equal_alone_and_staircase_matches_direct():
    """Variable-length sentences padded in one batch == each alone (padding masked, prefix-stable
    noise); the staircase (StagedFeatures) gives the same result as per-layer callables."""
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(6, 6).double(), nn.Linear(6, 6).double()

    def stage1(h, idx):
        return torch.tanh(lin1(h.cumsum(1)))           # causal: pads at the end never reach real tokens

    def stage2(h, idx):
        return torch.tanh(lin2(h)).cumsum(1)

    x = torch.randn(3, 5, 6, dtype=torch.float64)
    lengths = [5, 3, 2]
    mask = torch.arange(5)[None] < torch.tensor(lengths)[:, None]
    x = x * mask[..., None]

    def fmask(l, f, index):
        return mask[index].reshape(len(index), 5, 1)

    kw = dict(config="icml19", steps=40, lr=0.05, samples=2, sigma_f="power", seed=3)
    staged = S.StagedFeatures([stage1, stage2], [1, 2])
    res = S.optimize_sigma(x, S.AxisUnits(mask), staged, feature_masks=fmask, **kw)
    direct = S.CallableFeatures([lambda e: stage1(e, None), lambda e: stage2(stage1(e, None), None)])
    res2 = S.optimize_sigma(x, S.AxisUnits(mask), direct, feature_masks=fmask, **kw)
    assert torch.allclose(res.sigma.nan_to_num(-1), res2.sigma.nan_to_num(-1), rtol=1e-9)
    assert torch.isnan(res.sigma[:, 1, 3:]).all() and not torch.isnan(res.sigma[:, 1, :3]).any()
    for b, n in enumerate(lengths):
        alone = S.optimize_sigma(x[b:b + 1, :n], S.AxisUnits(torch.ones(1, n, dtype=torch.bool)),
                                 S.StagedFeatures([stage1, stage2], [1, 2]), **kw)
        assert torch.allclose(alone.sigma[:, 0], res.sigma[:, b, :n], rtol=1e-7)


def test_readout_rules_pick_what_they_say():
    model = _vgg_like().float()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    res = S.optimize_sigma(x, S.GridUnits(4), S.ModuleFeatures(model, ["1", "4"]), config="icml22", steps=30,
                           lr=1e-3, samples=4, keep_sigma=True, seed=0)
    h = res.history
    assert res.readout == "target"
    t = (h["F"] - 1.5).abs().argmin(0)                   # (L, B)
    assert torch.equal(res.step, t)
    for l in range(2):
        for b in range(2):
            assert torch.allclose(res.log_sigma[l, b], h["log_sigma"][t[l, b], l, b])
    snap = res.use("snapshot")
    assert torch.equal(snap.step, h["loss"].argmin(0))
    tail = res.use("tail")
    n_tail = math.ceil(0.1 * 30)
    assert torch.allclose(tail.log_sigma, h["log_sigma"][-n_tail:].mean(0), atol=1e-6)
    assert torch.allclose(res.use("final").log_sigma, h["log_sigma"][-1])
    # ICML22 parity: sigma_f is the change at the initial sigma, so F starts near 1; sigma stays clamped
    assert 0.5 < float(h["F"][0].mean()) < 2.0
    assert float(res.sigma.min()) >= 1e-3 - 1e-9 and float(res.sigma.max()) <= 1.0


def test_model_state_is_restored_and_untouched():
    model = _vgg_like().float().train()
    x = torch.rand(1, 3, 16, 16)
    S.optimize_sigma(x, S.GridUnits(4), S.ModuleFeatures(model, ["4"]), steps=3, samples=2)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_bad_input_gives_clear_errors():
    model = _vgg_like().float()
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(CaptureError, match="closest valid names"):
        S.ModuleFeatures(model, ["features.99"])
    feats = S.ModuleFeatures(model, ["1"])
    with pytest.raises(ValueError, match="out of range"):
        S.optimize_sigma(x, S.GridUnits(4), feats, sigma_init=2.0)
    with pytest.raises(ValueError, match="out of range"):
        S.config("icml19", sigma_init=0.7)               # above scale = 0.5
    with pytest.raises(ValueError, match="empty batch"):
        S.optimize_sigma(x[:0], S.GridUnits(4), feats)
    bad = x.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        S.optimize_sigma(bad, S.GridUnits(4), feats)
    no_graph = S.CallableFeatures([lambda e: _phi(e).detach()])
    with pytest.raises(ValueError, match="autograd graph"):
        S.optimize_sigma(torch.randn(1, 5, 8), S.AxisUnits(), no_graph, config="icml19", steps=2)
    with pytest.raises(ValueError, match="unknown SigmaConfig options"):
        S.config("clean", stepz=3)
    with pytest.raises(ValueError, match="grid"):
        S.optimize_sigma(x, S.GridUnits(32), feats)
    with pytest.raises(ValueError, match="does not change"):
        S.optimize_sigma(x, S.GridUnits(4), S.ModuleFeatures(_Constant(), ["out"]), steps=2)


class _Constant(nn.Module):
    def __init__(self):
        super().__init__()
        self.out = nn.Identity()

    def forward(self, x):
        return self.out(x.sum() * 0 + torch.ones(x.shape[0], 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda_where_the_model_is():
    model = _IgnoresLeft().cuda()
    x = torch.rand(2, 3, 16, 16)
    res = S.optimize_sigma(x, S.GridUnits(4), S.ModuleFeatures(model, ["body.3"]), steps=60, samples=4, seed=0)
    assert res.sigma.device.type == "cpu" and res.sigma.shape == (1, 2, 16)
    sig = res.sigma.reshape(2, 4, 4)
    assert (sig[..., :2].amin((-1, -2)) > sig[..., 2:].amax((-1, -2))).all()


def test_explicit_lam_with_a_constraint_is_refused_or_acts():
    """Issue 14: an explicit lam with a preset that holds F (clean) was silently overridden."""
    with pytest.raises(ValueError, match="constraint=None"):
        S.config("clean", lam=0.1)
    cfg = S.config("clean", lam=0.1, constraint=None)
    assert cfg.lam == 0.1 and cfg.constraint is None
    assert S.config("clean").constraint == 1.5                       # unchanged default
    assert S.config("icml19", lam=0.2).lam == 0.2                    # no constraint: lam acts as before


def test_pixel_information_lam_acts_with_constraint_none():
    from xnn_support.papers import discarding as D
    from xnn_support.models import build
    model = build("vgg_small", num_classes=3, in_size=32, width=0.25, seed=0).eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="constraint=None"):
        D.pixel_information(model, x, ["features.2"], grid=4, steps=3, lam=0.1)
    lo = D.pixel_information(model, x, ["features.2"], grid=4, steps=20, lam=0.1, constraint=None, samples=2)
    hi = D.pixel_information(model, x, ["features.2"], grid=4, steps=20, lam=10.0, constraint=None, samples=2)
    assert not torch.equal(lo["features.2"].sigma, hi["features.2"].sigma)


def test_clip_absorbs_a_sigma_that_crosses_the_bound_and_clamp_lets_it_back():
    """``parameterization="clip"`` (the CVPR21 TF code's clip in the forward): a strong entropy weight
    for the first steps drives every sigma past sigma_max; when the weight drops, the projected
    ``clamp`` sigmas return to the interior optimum, the clipped ones get no gradient and stay at the bound."""
    x = torch.zeros(2, 5, 8)

    def lam(t, T):
        return 50.0 if t < 20 else 1e-4

    out = {}
    for p in ("clamp", "clip"):
        res = S.optimize_sigma(x, S.AxisUnits(), S.CallableFeatures([_phi]), parameterization=p, sigma_init=0.03,
                               sigma_min=1e-4, sigma_max=0.08, lam=lam, lr=0.01, steps=200, samples=2,
                               sigma_f=1.0, readout="final", constraint=None, seed=0)
        out[p] = res.sigma[0]
    assert torch.allclose(out["clip"], torch.full_like(out["clip"], 0.08)), out["clip"]
    assert bool((out["clamp"] < 0.07).all()), out["clamp"]
    with pytest.raises(ValueError, match="clip"):
        S.optimize_sigma(x, S.AxisUnits(), S.CallableFeatures([_phi]), parameterization="clipped", steps=2)
