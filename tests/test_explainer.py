"""Tests of notebook 08 (explainer networks): planted truth first, then the reference outputs of the spec
(section 8) and the contracts of the entry point."""
import copy

import matplotlib.figure
import numpy as np
import pytest
import torch
from torch import nn

from xnn_support import viz
from xnn_support.models import build
from xnn_support.papers import explainer as ex
from xnn_support.papers.explainer import experiments as X
from xnn_support.papers.explainer import metrics as M
from xnn_support.papers.explainer.net import Explainer, TrackNorm
from xnn_support.papers.explainer.planted import planted_blocks, planted_target, unmix

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- planted truth (spec 7 B)
@pytest.fixture(scope="module")
def planted():
    """A performer trained briefly (cached) on creatures, its F_l, and the planted blocks."""
    data = X.make_data(400, 0)
    perf, _ = X.train_performer(data, 0, epochs=3)
    blocks = planted_blocks(data["ds"], 8, seed=0)
    feats = ex.cache_features(perf, data["train"].images, [X.LAYER])
    return data, perf, blocks, feats


def test_p_rises_with_the_planted_part_share(planted):
    data, perf, blocks, feats = planted
    b_tr = blocks.subset(data["train_idx"])
    ps = []
    for a in (0.0, 0.5, 1.0):
        net = ex.fit_explainer_net(perf, data["train"].images, X.LAYER, planted_target(b_tr, a), epochs=10, seed=0,
                                   decoder="linear", features=feats, progress=False, cache=False,
                                   **dict(X.EXPLAINER, batch_size=32))
        ps.append(net.p)
    assert ps[0] < ps[1] < ps[2], ps
    assert ps[2] - ps[0] > 0.05, ps


def test_planted_target_is_exactly_a_linear_map_of_the_blocks(planted):
    """Spec 8: a least-squares 1x1 map from the true P and T to the target reconstructs it exactly."""
    _, _, blocks, _ = planted
    tgt = planted_target(blocks, 0.3)
    X_ = torch.cat([blocks.P, blocks.T], 1).double().transpose(0, 1).flatten(1).T
    Y_ = tgt.double().transpose(0, 1).flatten(1).T
    W = torch.linalg.lstsq(X_, Y_).solution
    assert float((X_ @ W - Y_).norm() / Y_.norm()) < 1e-6
    P, T = unmix(blocks, tgt)
    torch.testing.assert_close(P, blocks.P * 0.3 ** 0.5, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(T, blocks.T * 0.7 ** 0.5, atol=1e-4, rtol=1e-4)
    assert torch.linalg.matrix_rank(blocks.P.transpose(0, 1).flatten(1).double()) <= blocks.P.shape[1]


# ----------------------------------------------------------------------------- reference outputs (spec 8)
def _explainer(**kw):
    torch.manual_seed(0)
    return Explainer(8, {"t": (5, 6, 6)}, **kw)


def _scale_int_track(e, c=7.0):
    with torch.no_grad():
        e.icnn.conv.weight.mul_(c)
        e.icnn.conv.bias.mul_(c)


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_norm_makes_p_identifiable(mode):
    """With the norm layer, scaling the interpretable track's weights by 7 leaves z, the loss and dL/drho
    unchanged; without it, the same change moves z."""
    f = torch.rand(6, 8, 6, 6)
    y = torch.cat([torch.randn(6, 5 * 36), torch.tensor([0., 1, 1, 0, 1, 1])[:, None]], 1)
    outs = []
    for scale in (1.0, 7.0):
        e = _explainer(mode=mode, num_classes=2).train()
        _scale_int_track(e, scale)
        loss = ex.ExplainerLoss(e, [5 * 36], [1.0], lambda_f=ex.DEFAULT_LAMBDA_F[mode], lambda_p=0.1)
        z = e.mix(f)
        L = loss(e(f), y)
        L.backward()
        outs.append((z.detach(), float(L.detach()), float(e.rho.grad)))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    assert outs[0][1] == pytest.approx(outs[1][1], rel=1e-4)
    assert outs[0][2] == pytest.approx(outs[1][2], rel=1e-3, abs=1e-7)
    e0, e7 = _explainer(mode=mode, norm=False), _explainer(mode=mode, norm=False)
    _scale_int_track(e7)
    assert not torch.allclose(e0.mix(f), e7.mix(f))


def test_p_is_half_at_init_and_identical_tracks_give_no_gradient():
    e = _explainer(mode="ordinary", ord_depth=2).train()
    assert float(e.ratio(None).detach()) == 0.5
    with torch.no_grad():   # the ordinary track made a copy of the interpretable one (mask off)
        e.ord_track[0].load_state_dict(e.int_pre[0].state_dict())
        e.ord_track[2].load_state_dict(e.icnn.conv.state_dict())
    f = torch.rand(4, 8, 6, 6)
    z_int, z_ord, _ = e.tracks(f)
    torch.testing.assert_close(z_int, z_ord)
    loss = ex.ExplainerLoss(e, [5 * 36], [1.0], lambda_f=0.0, lambda_p=0.0)
    loss(e(f), torch.cat([torch.randn(4, 180), torch.zeros(4, 1)], 1)).backward()
    assert float(e.rho.grad) == 0.0


def test_linear_decoder_splits_exactly_into_the_tracks():
    e = _explainer(decoder="linear", p_mode="channel").eval()
    f = torch.rand(3, 8, 6, 6)
    a, b, bias = e.split(f)["t"]
    torch.testing.assert_close(a + b + bias, e.reconstruct(f)["t"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="linear"):
        _explainer().split(f)


def test_tracknorm_uses_batch_rms_in_training_and_its_ema_in_eval():
    n = TrackNorm(3, momentum=1.0)
    x = torch.rand(4, 3, 5, 5) * torch.tensor([1.0, 2.0, 3.0])[None, :, None, None]
    y = n.train()(x)
    assert torch.allclose(y.pow(2).mean((0, 2, 3)), torch.ones(3), atol=1e-4)
    torch.testing.assert_close(n.eval()(x), y)
    torch.testing.assert_close(n(2 * x), 2 * y)           # eval: a fixed divisor


# ----------------------------------------------------------------------------- the replacement test
class _Trivial(nn.Module):
    """conv -> ReLU ("body.1") -> Identity ("up") -> global average pool -> linear: the upper "layer" is the
    explained one itself, so a perfect explainer is an identity."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.up = nn.Identity()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))

    def forward(self, x):
        return self.head(self.up(self.body(x)))


def test_identity_replacement_reproduces_the_logits_and_removes_its_hooks():
    m, x = _Trivial().eval(), torch.rand(5, 3, 8, 8)
    ref = m(x)
    with ex.replaced_forward(m, "body.1", {"up": lambda f: f.clone()}):
        torch.testing.assert_close(m(x), ref, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="boom"):
        with ex.replaced_forward(m, "body.1", {"up": lambda f: torch.zeros_like(f)}):
            raise RuntimeError("boom")
    assert not m.up._forward_hooks and not m.body[1]._forward_hooks
    torch.testing.assert_close(m(x), ref)


def test_explainer_of_a_trivial_performer_reconstructs_and_keeps_predictions():
    m = _Trivial().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(160, 3, 8, 8, generator=g)
    net = ex.fit_explainer_net(m, x, "body.1", "up", epochs=100, seed=0, mode="ordinary", lambda_p=0.0, lr=1e-2,
                               decoder="linear", progress=False, cache=False, batch_size=16)
    err = M.reconstruction_error(net.reconstruct(x), {"up": ex.cache_features(m, x, ["up"])["up"]})["up"]
    assert err < 0.05, err
    rep = M.replacement_accuracy(net, x, m(x).argmax(1).detach())
    assert rep["acc"] == 1.0 and rep["agreement"] >= 0.95 and rep["logit_error"] < 0.1
    assert not m.up._forward_hooks


# ----------------------------------------------------------------------------- the entry point's contract
@pytest.fixture(scope="module")
def small():
    perf = build("vgg_small", seed=0, num_classes=4, in_size=64, width=0.5).eval()
    x = torch.rand(24, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return perf, x


@pytest.mark.parametrize("p_mode,mode", [("scalar", "code"), ("channel", "paper"), ("image", "code")])
def test_fit_explainer_net_contract(small, p_mode, mode):
    perf, x = small
    net = ex.fit_explainer_net(perf, x, X.LAYER, [X.TARGET], epochs=1, seed=0, p_mode=p_mode, mode=mode,
                               progress=False, cache=False)
    if p_mode == "channel":
        assert net.p.shape == (32,) and ((net.p > 0) & (net.p < 1)).all()
    else:
        assert isinstance(net.p, float) and 0 < net.p < 1
    enc = net.encode(x[:5], batch_size=2)
    assert enc.z_int.shape == enc.z_ord.shape == (5, 32, 16, 16) and enc.p.shape[0] == 5
    rec = net.reconstruct(x[:5], batch_size=3)
    assert rec[X.TARGET].shape == (5, 64, 8, 8)
    assert net.interpretable_filters.mode == mode and net.interpretable_filters.conv.weight.shape[0] == 32
    assert perf.training is False and not any(mod._forward_hooks for mod in perf.modules())


def test_fit_explainer_net_is_cached_and_deterministic(small, tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path))
    perf, x = small
    a = ex.fit_explainer_net(perf, x, X.LAYER, X.TARGET, epochs=1, seed=3, progress=False)
    b = ex.fit_explainer_net(perf, x, X.LAYER, X.TARGET, epochs=1, seed=3, progress=False)
    assert not a.from_cache and b.from_cache and a.p == b.p
    c = ex.fit_explainer_net(perf, x, X.LAYER, X.TARGET, epochs=1, seed=3, progress=False, cache=False)
    assert c.p == a.p                                    # same seed, same CPU: the same explainer
    d = ex.fit_explainer_net(perf, x, X.LAYER, X.TARGET, epochs=1, seed=4, progress=False, cache=False)
    assert d.p != a.p
    torch.testing.assert_close(a.reconstruct(x[:4])[X.TARGET], b.reconstruct(x[:4])[X.TARGET])


@pytest.mark.parametrize("kw,match", [
    (dict(layer="features.99"), "features"), (dict(epochs=0), "epochs"), (dict(mode="icnn"), "mode"),
    (dict(p_mode="pixel"), "p_mode"), (dict(lambda_p=-1.0), "lambda_p"), (dict(targets=3), "targets"),
    (dict(targets=torch.rand(3, 4, 8, 8)), "targets"), (dict(decoder="mlp"), "decoder")])
def test_fit_explainer_net_refuses_bad_arguments(small, kw, match):
    perf, x = small
    args = dict(layer=X.LAYER, targets=X.TARGET)
    args.update({k: v for k, v in kw.items() if k in args})
    with pytest.raises((ValueError, KeyError), match=match):
        ex.fit_explainer_net(perf, x, args["layer"], args["targets"], progress=False, cache=False,
                             **{k: v for k, v in kw.items() if k not in args})


def test_filter_interpretability_reads_explainer_and_performer_layers(planted):
    data, perf, _, feats = planted
    net = ex.fit_explainer_net(perf, data["train"].images, X.LAYER, X.TARGET, epochs=1, seed=0, features=feats,
                               progress=False, cache=False)
    df = X.filters_table(net, perf, data["test"], top_n=20)
    assert list(df.filters_of) == ["explainer z_int", "explainer z_ord", f"performer {X.LAYER}",
                                   f"performer {X.TARGET}"]
    assert df.part_iou.between(0, 1).all() and (df.instability > 0).all()


def test_figures(planted):
    data, perf, _, feats = planted
    net = ex.fit_explainer_net(perf, data["train"].images, X.LAYER, X.TARGET, epochs=1, seed=0, features=feats,
                               progress=False, cache=False)
    fig = viz.explainer_tracks(net, data["test"].images[:3])
    assert isinstance(fig, matplotlib.figure.Figure)


def test_two_target_layers_and_their_replacement(small):
    perf, x = small
    net = ex.fit_explainer_net(perf, x, X.LAYER, ["features.20", X.TARGET], epochs=1, seed=0, progress=False,
                               cache=False)
    rec = net.reconstruct(x[:3])
    assert set(rec) == {"features.20", X.TARGET} and rec["features.20"].shape == (3, 64, 8, 8)
    assert set(net.variances) == set(rec) and all(v > 0 for v in net.variances.values())
    ref = perf(x[:3])
    with net.replaced([X.TARGET]):
        out = perf(x[:3])
    assert out.shape == ref.shape and not torch.equal(out, ref)
    torch.testing.assert_close(perf(x[:3]), ref)        # hooks gone


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_follows_the_performer(small):
    perf, x = small
    perf = copy.deepcopy(perf).cuda()
    net = ex.fit_explainer_net(perf, x, X.LAYER, X.TARGET, epochs=1, seed=0, progress=False, cache=False)
    assert next(net.explainer.parameters()).is_cuda
    assert net.reconstruct(x[:2])[X.TARGET].device.type == "cpu"


def test_helpers_refuse_bad_arguments(planted):
    _, _, blocks, _ = planted
    with pytest.raises(ValueError, match="a must be"):
        planted_target(blocks, 1.5)
    m = _Trivial()
    with pytest.raises(KeyError, match="closest valid names"):
        with ex.replaced_forward(m, "body.7", {"up": lambda f: f}):
            pass
    with pytest.raises(ValueError, match="shape"):
        with ex.replaced_forward(m, "body.1", {"up": lambda f: f[:, :2]}):
            m(torch.rand(2, 3, 8, 8))
    assert not m.up._forward_hooks and not m.body[1]._forward_hooks
    with pytest.raises(ValueError, match="channels"):
        TrackNorm(0)
