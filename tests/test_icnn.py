"""Interpretable CNNs (paper 02): template scores, the layer, the filter loss in both modes, and the
location-instability / part-IoU metrics on planted truth."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from xnn_support.papers.icnn.method import (InterpretableConv2d, code_gradient, filter_loss, make_interpretable,
                              positive_templates, template_kernel, template_scores)
from xnn_support.papers.icnn.metrics import location_instability, part_iou, peak_positions


# ----------------------------------------------------------------------------- templates
def test_template_values_match_the_spec():
    n = 14
    T = positive_templates(n)
    tau = 0.5 / n ** 2
    assert T[3, 5, 3, 5] == pytest.approx(tau)
    assert T[0, 0, 13, 13] == pytest.approx(-tau)               # L1 distance >= n/2 -> -tau
    K = template_kernel(n)
    assert K[n - 1, n - 1] == pytest.approx(tau) and K.shape == (2 * n - 1, 2 * n - 1)


@pytest.mark.parametrize("n", [5, 14])
def test_template_scores_by_convolution_equal_the_explicit_sum(n):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, n, n, generator=g, dtype=torch.float64)
    T = positive_templates(n).double()                          # (n, n, n, n)
    explicit = torch.einsum("bdij,rcij->bdrc", x, T)
    for method in ("conv", "matmul", "auto"):
        assert torch.allclose(template_scores(x, method=method), explicit, atol=1e-12)


def test_template_scores_reject_non_square():
    with pytest.raises(ValueError, match="square"):
        template_scores(torch.rand(1, 1, 4, 5))


# ----------------------------------------------------------------------------- the layer
def test_layer_masks_around_the_peak_paper_mode():
    layer = InterpretableConv2d((1, 1), mode="paper")
    with torch.no_grad():
        layer.conv.weight.zero_()
        layer.conv.weight[0, 0, 1, 1] = 1.0
        layer.conv.bias.zero_()
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 2, 5] = 3.0
    x[0, 0, 7, 0] = 1.0                                        # far from the peak: masked out
    y = layer(x).detach()
    assert tuple(layer.last_mu[0, 0].tolist()) == (2, 5)
    assert y[0, 0, 2, 5] == pytest.approx(3.0) and y[0, 0, 7, 0] == 0
    # the mask is constant in the backward pass: d y / d a = mask where positive
    assert layer.last_mask[0, 0, 2, 5] == 1.0


def test_make_interpretable_on_torchvision_and_zoo_nets_and_errors():
    import torchvision
    from xnn_support.models import build

    vgg = torchvision.models.vgg11(weights=None, num_classes=3)
    make_interpretable(vgg, "features.19", mode="code")           # relu after the last conv
    assert isinstance(vgg.features[19][1], InterpretableConv2d)
    assert vgg(torch.rand(2, 3, 64, 64)).shape == (2, 3)
    res = torchvision.models.resnet18(weights=None, num_classes=3)
    make_interpretable(res, "layer4", mode="paper")
    out = res(torch.rand(2, 3, 64, 64))
    loss = filter_loss(res)
    (out.sum() + loss).backward()
    alex = torchvision.models.alexnet(weights=None, num_classes=3)
    make_interpretable(alex, "features.10", mode="paper", new_conv=False)  # wrap conv5 in place
    alex(torch.rand(2, 3, 96, 96))
    assert torch.isfinite(filter_loss(alex))
    net = build("vgg_small", num_classes=2, in_size=32)
    with pytest.raises(ValueError, match="not an nn.Conv2d"):
        make_interpretable(net, "features.2", new_conv=False)
    with pytest.raises(ValueError, match="no InterpretableConv2d"):
        filter_loss(net)
    with pytest.raises(ValueError, match="mode"):
        InterpretableConv2d((2, 2), mode="nope")


# ----------------------------------------------------------------------------- the losses
def test_paper_loss_is_minus_mutual_information():
    """-MI is <= 0, and lower for maps that each fire at one place than for flat maps."""
    n, B = 6, 12
    flat = torch.full((B, 1, n, n), 1.0, dtype=torch.float64)
    peaked = torch.zeros(B, 1, n, n, dtype=torch.float64)
    for b in range(B):
        peaked[b, 0, b % n, (2 * b) % n] = 200.0
    layer = nn.Sequential(InterpretableConv2d((1, 1), mode="paper"))
    from xnn_support.papers.icnn.method import _paper_loss
    lf, lp = float(_paper_loss(flat)), float(_paper_loss(peaked))
    assert lf == pytest.approx(0.0, abs=1e-9)                       # identical maps carry no information
    assert lp < -0.1
    assert lp >= -math.log(n * n + 1) - 1e-9                         # MI <= H(T)


def _official_gradient_loops(a, mask, pos, epoch):
    """The official backward (spec 02 section 2.2), written with explicit loops over b and d."""
    B, D, n, _ = a.shape
    G = np.zeros(a.shape)
    ac = 0.5
    for d in range(D):
        P = [b for b in range(B) if pos[b, d]]
        N_ = [b for b in range(B) if not pos[b, d]]
        if P:
            s = {b: float((a[b, d] * mask[b, d]).mean()) for b in P}
            srev = [float((a[b, d] * mask[B - 1 - b, D - 1 - d]).mean()) for b in P]
            logz = ac * math.log(sum(math.exp(v / ac) for v in srev) / len(P))
            c = {b: math.exp(s[b] / ac) * (s[b] - logz + ac) for b in P}
            mc = sum(c.values()) / len(P)
            w = 0.5 / (len(P) / B)
            for b in P:
                G[b, d] -= mask[b, d] * c[b] / (mc * epoch / 0.1) * 1e-5 * w
        if N_:
            s = {b: float(a[b, d].mean()) for b in N_}
            logz = ac * math.log(sum(math.exp(-v / ac) for v in s.values()) / len(N_))
            c = {b: math.exp(-s[b] / ac) * (-s[b] - logz + ac) for b in N_}
            mc = sum(c.values()) / len(N_)
            w = 0.5 / (len(N_) / B)
            for b in N_:
                G[b, d] += c[b] / (mc * epoch / 0.1) * 1e-5 * w
    return G


def test_code_mode_reproduces_the_official_gradient():
    g = torch.Generator().manual_seed(1)
    B, D, n = 5, 3, 4
    a = torch.rand(B, D, n, n, generator=g, dtype=torch.float64)
    mask = torch.rand(B, D, n, n, generator=g, dtype=torch.float64) * 2 - 1
    pos = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 1, 1]], dtype=torch.bool)
    ref = _official_gradient_loops(a.numpy(), mask.numpy(), pos.numpy(), epoch=3)
    G = code_gradient(a, mask, pos, epoch=3).double().numpy()
    assert np.allclose(G, ref, rtol=1e-5, atol=1e-14)
    # through the layer: autograd of the surrogate gives dL/da = G / B
    layer = InterpretableConv2d((2, D), mode="code", num_classes=2)
    x = torch.rand(B, 2, n, n, generator=g)
    y = torch.tensor([1, 1, 0, 1, 0])
    model = nn.Sequential(layer).eval()                              # eval: no EMA / slope update
    model(x)
    layer.last_a.retain_grad()
    filter_loss(model, y, epoch=2).backward()
    pos2 = (y[:, None] == layer.class_strength.argmax(1)[None]).numpy()
    ref2 = _official_gradient_loops(layer.last_a.detach().double().numpy(),
                                    layer.last_mask.double().numpy(), pos2, epoch=2) / B
    assert np.allclose(layer.last_a.grad.double().numpy(), ref2, rtol=1e-4, atol=1e-12)


def test_code_mode_hand_computed_case():
    """One positive filter map: B=2 identical images, mask 1 -> s = mean(a), c normalised to 1/mag."""
    a = torch.full((2, 1, 2, 2), 0.5, dtype=torch.float64)
    mask = torch.ones_like(a)
    pos = torch.ones(2, 1, dtype=torch.bool)
    G = code_gradient(a, mask, pos, epoch=1)
    # c / mean(c) = 1, mag = 10, w_pos = 0.5 / 1 -> G = -1 * 1/10 * 1e-5 * 0.5 = -5e-7 everywhere
    assert torch.allclose(G.double(), torch.full_like(a, -5e-7), atol=1e-15)


def test_code_mode_training_updates_classes_and_slopes():
    layer = InterpretableConv2d((3, 4), mode="code", num_classes=3)
    model = nn.Sequential(layer).train()
    x = torch.rand(8, 3, 6, 6)
    y = torch.tensor([0, 1, 2, 1, 2, 1, 0, 2])
    before = layer.slope.clone()
    model(x)
    loss = filter_loss(model, y, epoch=1)
    loss.backward()
    assert not torch.equal(before, layer.slope)
    assert ((layer.slope >= 1.5 - 1e-6) | (layer.slope <= 2.0 + 1e-6)).all()
    assert (layer.class_strength[:, 0] == -1).all()                     # negatives own no filter
    with pytest.raises(ValueError, match="labels"):
        filter_loss(model)


# ----------------------------------------------------------------------------- metrics
def _landmarks(N=150, K=3, S=64, seed=0):
    rng = np.random.default_rng(seed)
    lm = rng.uniform(8, 56, (N, K, 2))
    lm[rng.random((N, K)) < 0.2] = np.nan
    return lm


def test_location_instability_planted_truth():
    lm = _landmarks()
    N, K = lm.shape[:2]
    rng = np.random.default_rng(1)
    # filters 0..2 follow landmark k exactly (fixed offset); where k is invisible, anywhere
    follow = np.stack([np.where(np.isnan(lm[:, k]), rng.uniform(0, 64, (N, 2)), lm[:, k] + [3.0, -2.0])
                       for k in range(K)])
    # exact followers: D for their own landmark is 0, others large; make every landmark follow
    exact = np.nan_to_num(lm[:, :1], nan=0.0).repeat(1, 1).transpose(1, 0, 2) + 5.0   # (1, N, 2)
    lm_one = lm[:, :1]
    assert location_instability(exact, lm_one, 64) == pytest.approx(0.0, abs=1e-9)
    rand = rng.uniform(0, 64, (4, N, 2))
    r = location_instability(rand, lm_one, 64)
    assert r > 0.1                                                       # ~ uniform peaks: ~0.12-0.15
    assert location_instability(follow, lm, 64) < location_instability(rand, lm, 64)
    # top-N picking by scores and invalid landmarks dropped first
    scores = np.zeros((1, N))
    noisy = exact.copy()
    noisy[0, 50:] = rng.uniform(0, 64, (N - 50, 2))
    scores[0, :50] = 1.0
    assert location_instability(noisy, lm_one, 64, top_n=30, scores=scores) == pytest.approx(0, abs=1e-9)
    assert location_instability(noisy, lm_one, 64, top_n=100, scores=scores) > 0.05
    # diagonal normalisation: a 2x bigger image with 2x distances gives the same value
    assert location_instability(rand * 2, lm_one * 2, 128) == pytest.approx(r)
    # fewer than two valid images -> NaN
    assert math.isnan(location_instability(rand[:, :1], lm_one[:1], 64))
    with pytest.raises(ValueError, match="positions"):
        location_instability(rand[0], lm_one, 64)


def test_part_iou_and_peak_positions_on_a_planted_detector():
    N, S = 6, 16
    masks = torch.zeros(N, 2, S, S, dtype=torch.bool)
    for i in range(N):
        masks[i, 0, i:i + 4, 2:6] = True
        masks[i, 1, 10:14, 10:14] = True
    # filter 0 fires exactly on part 0 (maps at full resolution)
    maps = torch.stack([masks[:, 0].float(), torch.rand(N, S, S)], 1)
    iou = part_iou(maps, masks, quantile=1 - masks[:, 0].float().mean().item())
    assert iou[0, 0] > 0.9 and iou[1].max() < 0.5

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            return self.pool(x)

    x = torch.zeros(2, 1, 8, 8)
    x[0, 0, 5, 2] = 1.0
    x[1, 0, 0, 7] = 1.0
    pos, sc, mp = peak_positions(Net(), "pool", x)
    assert pos.shape == (1, 2, 2) and mp.shape == (2, 1, 4, 4)
    assert pos[0, 0].tolist() == [4.5, 2.5] and pos[0, 1].tolist() == [0.5, 6.5]


def _paper_loss_autograd(a, beta=4.0):
    """Reference: the same -MI through plain autograd."""
    import math
    from xnn_support.papers.icnn.method import template_scores
    B, D, n, _ = a.shape
    tau = 0.5 / n ** 2
    s = torch.cat([template_scores(a, tau, beta).flatten(2), -tau * a.sum((2, 3))[..., None]], 2)
    log_px_t = torch.log_softmax(s, dim=0)
    log_prior = -math.log(n * n + 1)
    log_px = torch.logsumexp(log_px_t + log_prior, dim=2, keepdim=True)
    return -(math.exp(log_prior) * log_px_t.exp() * (log_px_t - log_px)).sum((0, 2))


def test_paper_loss_closed_form_backward_matches_autograd():
    from xnn_support.papers.icnn.method import _MinusMI, _paper_loss
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 3, 6, 6, generator=g, dtype=torch.float64) ** 3 * 4
    a1, a2 = a.clone().requires_grad_(True), a.clone().requires_grad_(True)
    w = torch.rand(3, generator=g, dtype=torch.float64)
    l1, l2 = _paper_loss(a1), _paper_loss_autograd(a2)
    assert torch.allclose(l1, l2, rtol=1e-10, atol=1e-12)
    (l1 * w).sum().backward()
    (l2 * w).sum().backward()
    assert torch.allclose(a1.grad, a2.grad, rtol=1e-8, atol=1e-12)
    s = torch.randn(4, 2, 7, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_MinusMI.apply, (s,))


# ----------------------------------------------------------------------------- experiments (notebook 02)
def test_placements_put_the_interpretable_layers_where_the_sweep_says():
    from xnn_support.papers.icnn.method import interpretable_layers
    from xnn_support.papers.icnn.experiments import ARCHS, build_net
    x = torch.randn(2, 3, 64, 64)
    expect = {"vgg": ({"features.1"}, 16), "vgg_low": ({"features.9.1"}, 32),
              "vgg_two": ({"features.0.14", "features.1"}, 16)}
    for arch, (names, n) in expect.items():
        net = build_net(arch, "code", 2, seed=0).eval()
        assert set(interpretable_layers(net)) == names
        with torch.no_grad():
            assert net(x).shape == (2, 2)
        assert net.get_submodule(ARCHS[arch]["layer"]).last_a.shape[-1] == n
        # every regularised layer masks its map in the forward pass
        assert all(m.last_mask is not None for m in interpretable_layers(net).values())
    plain = build_net("vgg_two", "ordinary", 2, seed=0)
    assert all(m.mode == "ordinary" for m in interpretable_layers(plain).values())


def test_run_sweep_tiny_rows_and_validation(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path))
    from xnn_support.papers.icnn.experiments import run_sweep, summarise
    from xnn_support.papers.icnn.experiments import sweep_effects
    variants = [{"name": "ord", "mode": "ordinary"},
                {"name": "two", "arch": "vgg_two", "mode": "code", "weight": 1.0, "object_centric": False},
                {"name": "code", "mode": "code", "weight": 1.0}]
    rows = run_sweep(variants, seeds=[0], n=60, epochs=1, top_n=5, progress=False)
    assert [r["variant"] for r in rows] == ["ord", "two", "code"]
    eff = sweep_effects(rows)      # "two" has no ordinary twin (other arch and data): left out
    assert list(eff.index) == ["code"] and eff.loc["code", "baseline"] == "ord"
    assert eff.loc["code", "rel_change_mean"] == pytest.approx(rows[2]["instability"] / rows[0]["instability"] - 1)
    for r in rows:
        assert 0.0 <= r["acc"] <= 1.0 and np.isfinite(r["instability"]) and 0.0 <= r["part_iou"] <= 1.0
    assert rows[1]["arch"] == "vgg_two" and rows[1]["weight"] == 1.0
    assert len(summarise(rows)) == 3
    with pytest.raises(ValueError, match="bad setting"):
        run_sweep([{"name": "x", "arch": "nope", "mode": "code"}], seeds=[0], n=60, epochs=1)


def test_immobile_instability_is_the_landmark_spread_and_grows_with_it():
    from types import SimpleNamespace
    from xnn_support.papers.icnn.experiments import immobile_instability
    g = torch.Generator().manual_seed(0)
    lm = torch.randn(200, 1, 2, generator=g) * 2 + 31.5
    val = SimpleNamespace(labels=torch.ones(200, dtype=torch.long), landmarks=lm, images=torch.zeros(200, 3, 64, 64))
    small = immobile_instability(val, top_n=200, n_units=4)
    ref = float((lm[:, 0] - 31.5).norm(dim=-1).std() / (64 * math.sqrt(2)))
    assert small == pytest.approx(ref, rel=1e-4)
    val.landmarks = (lm - 31.5) * 5 + 31.5
    assert immobile_instability(val, top_n=200, n_units=4) > 4 * small


def test_paper_loss_stays_finite_when_the_batch_softmax_underflows():
    """Regression: seed 1 of the default grid hit NaN when every p(x_b | t) of an image underflowed
    (log of a zero mean); log p(x) now comes from a logsumexp."""
    from xnn_support.papers.icnn.method import _MinusMI
    s = (torch.randn(8, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 300).requires_grad_(True)
    out = _MinusMI.apply(s)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(s.grad).all()
