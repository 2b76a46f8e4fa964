"""Knowledge consistency (paper 05): g_theta, its exact order decomposition, planted-truth fits,
input checks, the checkpoint cache, the splice used for feature refinement, and the notebook's
studies (xnn_support.papers.consistency.studies) on tiny sizes."""
import math

import pandas as pd
import pytest
import torch
from torch import nn

from xnn_support import data
from xnn_support.papers.consistency import method as kc
from xnn_support.papers.consistency import experiments as kx
from xnn_support.papers.consistency import studies as ks
from xnn_support.papers.consistency.method import ConsistencyNet, fit_consistency

FAST = dict(epochs=8, progress=False, cache=False)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XNN_QUIET", "1")
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs: one thread is fastest on a shared CPU
    yield
    torch.set_num_threads(n)


def _randomise(net: ConsistencyNet, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# ----------------------------------------------------------------------------- exact decomposition

@pytest.mark.parametrize("orders", [1, 2, 3, 4])
@pytest.mark.parametrize("tied", [True, False])
def test_components_sum_to_g_exactly(orders, tied):
    net = ConsistencyNet(5, 7, orders, tied_output=tied)  # C_A != C_B
    _randomise(net)
    x = torch.randn(6, 5, 9, 7)
    with torch.no_grad():
        S, g = net.decompose(x), net(x)
    assert S.shape == (orders, 6, 7, 9, 7)
    assert torch.allclose(S.sum(0), g, atol=1e-5 * float(g.abs().max()), rtol=0)


def test_vectors_and_1x1_maps():
    net = ConsistencyNet(6, 3, 3, kernel=1)
    _randomise(net)
    v = torch.randn(10, 6)
    S = net.decompose(v)
    assert S.shape == (3, 10, 3) and net(v).shape == (10, 3)
    assert torch.allclose(S.sum(0), net(v), atol=1e-5)
    # divisor 1 on 1x1 maps: the vector and the (N, D, 1, 1) map give the same g
    assert torch.allclose(net(v[:, :, None, None])[:, :, 0, 0], net(v), atol=1e-6)


def test_order_counting():
    """p -> 0 leaves only order 0; W_0 = 0 kills order 2 (K = 2) exactly."""
    net = ConsistencyNet(4, 4, 3)
    _randomise(net)
    x = torch.randn(3, 4, 6, 6)
    with torch.no_grad():
        net.q.fill_(-60.0)
    S = net.decompose(x)
    assert S[1:].abs().max() < 1e-20 and torch.allclose(S[0], net(x), atol=1e-6)
    _randomise(net)
    with torch.no_grad():
        net.convs[0].weight.zero_()
    S = net.decompose(x)
    assert S[2].abs().max() == 0 and S[1].abs().max() > 0


def test_scale_invariance_of_g():
    """The official per-(sample, channel) std divisor makes g(c x) = g(x) for c > 0."""
    net = ConsistencyNet(4, 3, 3)
    _randomise(net)
    x = torch.randn(5, 4, 6, 6)
    c = torch.rand(5, 4, 1, 1) * 3 + 0.5
    assert torch.allclose(net(c * x), net(x), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- planted truth

def test_linear_map_gives_order0_share_near_one():
    xa, xb = kx.planted_pair("linear", n=192, channels=8, channels_b=6, seed=1)
    r = fit_consistency(xa, xb, **FAST)
    assert len(r.components) == 3 and len(r.shares) == 4
    assert all(c.shape == xb.shape for c in r.components) and r.residual.shape == xb.shape
    assert r.shares[0] > 0.95, r.shares
    assert r.shares[-1] < 0.05, r.shares
    assert max(r.shares[1:3]) < 0.05, r.shares


def test_independent_features_give_residual_share_near_one():
    xa, xb = kx.planted_pair("independent", n=192, channels=8, seed=2)
    r = fit_consistency(xa, xb, **FAST)
    assert r.shares[-1] > 0.9, r.shares
    # and on held-out features the residual is (almost) all of x_B
    xa2, xb2 = kx.planted_pair("independent", n=96, channels=8, seed=3)
    assert r.apply(xa2, xb2).shares[-1] > 0.95


def test_nonlinear_relation_is_found_by_higher_orders():
    """x_B = W2 |W1 x_A| has no linear part: order 0 explains ~nothing, orders >= 1 a good part."""
    xa, xb = kx.planted_pair("nonlinear", n=192, channels=8, seed=4)
    r = fit_consistency(xa, xb, epochs=40, batch_size=32, lr=1e-2, progress=False, cache=False)
    assert r.shares[0] < 0.05, r.shares
    assert r.shares[1] + r.shares[2] > 0.2 and r.shares[-1] < 0.7, r.shares
    assert r.linear_residual > 0.95


def test_linear_first_beats_the_joint_fit_on_a_linear_pair():
    """The pitfall the issue names: in a joint fit the ReLU branches take linear structure, so
    order 0 alone no longer rebuilds x_B; fitted first, it does."""
    xa, xb = kx.planted_pair("linear", n=192, channels=8, seed=5)
    first = fit_consistency(xa, xb, **FAST)
    joint = fit_consistency(xa, xb, linear_first=False, **FAST)

    def order0_error(r):
        return float(((xb - r.components[0]) ** 2).mean() / xb.var())

    assert order0_error(first) < 0.05
    assert order0_error(joint) > order0_error(first) + 0.05
    assert joint.net.tied and not first.net.tied


def test_vector_features_fit():
    g = torch.Generator().manual_seed(0)
    xa = torch.randn(300, 10, generator=g)
    xb = xa @ torch.randn(10, 4, generator=g)
    r = fit_consistency(xa, xb, **FAST)
    assert r.components[0].shape == (300, 4)
    assert r.shares[0] > 0.99 and r.shares[-1] < 0.01


def test_deterministic_and_cached(tmp_path):
    xa, xb = kx.planted_pair("mix", n=96, channels=6, seed=6)
    a = fit_consistency(xa, xb, epochs=3, progress=False)
    b = fit_consistency(xa, xb, epochs=3, progress=False)
    assert not a.from_cache and b.from_cache
    assert a.shares == b.shares
    c = fit_consistency(xa, xb, epochs=3, progress=False, cache=False)
    assert c.shares == a.shares
    assert fit_consistency(xa, xb, epochs=3, seed=1, progress=False).shares != a.shares


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("bad, match", [
    (lambda a, b: (a, b[:-1]), "different sample counts"),
    (lambda a, b: (a, b[..., :-1, :-1]), "different spatial sizes"),
    (lambda a, b: (a.clone().index_fill_(0, torch.tensor([3]), float("nan")), b), "NaN"),
    (lambda a, b: (a, b.clone().index_fill_(0, torch.tensor([0]), float("inf"))), "NaN or inf"),
    (lambda a, b: (a[:, :, 0], b), "must be"),
    (lambda a, b: (a, b.flatten(1)), "both"),
    (lambda a, b: (a.long(), b), "float"),
    (lambda a, b: (a.numpy(), b), "torch tensor"),
])
def test_bad_input_is_a_clear_error(bad, match):
    a, b = kx.planted_pair("linear", n=8, channels=3, seed=0)
    fa, fb = bad(a, b)
    with pytest.raises(ValueError, match=match):
        fit_consistency(fa, fb, **FAST)


@pytest.mark.parametrize("orders", [0, -1, 1.5, True])
def test_orders_below_one_rejected(orders):
    a, b = kx.planted_pair("linear", n=8, channels=3, seed=0)
    with pytest.raises(ValueError, match="orders"):
        fit_consistency(a, b, orders=orders, **FAST)


def test_other_argument_errors():
    a, b = kx.planted_pair("linear", n=8, channels=3, seed=0)
    with pytest.raises(ValueError, match="alpha"):
        fit_consistency(a, b, alpha=[0.1], **FAST)
    with pytest.raises(ValueError, match="epochs"):
        fit_consistency(a, b, epochs=-1, progress=False)
    with pytest.raises(ValueError, match="zero variance"):
        fit_consistency(a, torch.ones_like(b), **FAST)
    with pytest.raises(ValueError, match="input channels"):
        ConsistencyNet(3, 3)(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match="kernel"):
        ConsistencyNet(3, 3, kernel=2)


def test_single_order_is_pure_least_squares():
    xa, xb = kx.planted_pair("mix", n=64, channels=4, seed=7)
    r = fit_consistency(xa, xb, orders=1, **FAST)
    assert len(r.components) == 1 and len(r.shares) == 2 and r.history == []
    assert abs(r.shares[-1] - r.linear_residual) < 0.02


# ----------------------------------------------------------------------------- experiments helpers

def _tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2)).eval()


def test_splice_with_own_feature_reproduces_the_model_and_freezes_lower_layers():
    net = _tiny_net()
    x = torch.rand(5, 3, 8, 8)
    feat = kx.tap_features(net, x, ["2"])["2"]
    sp = kx.Spliced(net, "2")
    with torch.no_grad():
        assert torch.allclose(sp(x, feat), net(x), atol=1e-6)
        assert not torch.allclose(sp(x, torch.zeros_like(feat)), net(x))
    names = sp.freeze_lower(x[:2], feat[:2])
    assert names == ["3.weight", "3.bias", "7.weight", "7.bias"]
    assert not net[0].weight.requires_grad and net[3].weight.requires_grad
    y = torch.tensor([0, 1, 0, 1, 1])
    acc = kx.accuracy_with_feature(net, "2", x, feat, y)
    assert acc == float((net(x).argmax(1) == y).float().mean())


def test_energy_maps_and_foreground_share_on_planted_maps():
    part = torch.zeros(4, 3, 8, 8)
    part[:, :, 2:4, 2:4] = torch.randn(4, 3, 2, 2)  # energy only inside the planted box
    fg = torch.zeros(4, 32, 32, dtype=torch.bool)
    fg[:, 8:16, 8:16] = True
    e = kx.energy_maps(part, part)
    assert e.shape == (4, 8, 8) and abs(float(e.mean()) - 1.0) < 1e-5
    s = kx.foreground_share(e, fg)
    assert s["energy_on_fg"] > 0.95 and abs(s["fg_area"] - 1 / 16) < 1e-6 and s["ratio"] > 10
    with pytest.raises(ValueError):
        kx.foreground_share(e, fg[:2])


def test_consistency_by_layer_on_two_tiny_nets():
    a, b = _tiny_net(), _tiny_net()
    torch.manual_seed(1)
    b[3].reset_parameters()
    x = torch.rand(40, 3, 8, 8)
    rows = kx.consistency_by_layer(a, b, x[:30], x[30:], ["0", "3"], epochs=2, progress=False, cache=False,
                                   normalize=False)
    assert [r["layer"] for r in rows] == ["0", "3"]
    assert rows[0]["share_0"] > 0.999 and rows[0]["share_residual"] < 1e-3  # same first conv
    with pytest.raises(Exception, match="closest"):
        kx.consistency_by_layer(a, b, x[:30], x[30:], ["nope"], epochs=1, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_fit_matches_layout():
    xa, xb = kx.planted_pair("linear", n=64, channels=4, seed=0)
    r = fit_consistency(xa, xb, device="cuda", **FAST)
    assert r.components[0].device.type == "cpu" and r.shares[0] > 0.9
    assert next(r.net.parameters()).device.type == "cuda"


def test_diagnose_and_refine_run_on_tiny_nets():
    strong, weak = _tiny_net(), _tiny_net()
    torch.manual_seed(2)
    weak[0].reset_parameters()
    x, y = torch.rand(48, 3, 8, 8), torch.arange(48) % 2
    d = kx.diagnose(strong, weak, x[:32], x[32:], "3", "0", epochs=2, progress=False, cache=False)
    assert d.blind_eval.residual.shape == d.feat_strong.shape == (16, 4, 8, 8)
    assert 0 <= d.blind_share and 0 <= d.unreliable_share
    ftr = kx.tap_features(weak, x[:32], ["3"])["3"]
    fte = kx.tap_features(weak, x[32:], ["3"])["3"]
    acc = kx.refine(weak, "3", x[:32], y[:32], {"own": ftr, "zero": ftr * 0}, x[32:], y[32:],
                    {"own": fte, "zero": fte * 0}, epochs=1, batch_size=16, progress=False, cache=False)
    assert set(acc) == {"before", "own", "zero"} and all(0 <= v <= 1 for v in acc.values())
    assert all(p.requires_grad for p in weak.parameters())  # B itself is untouched (copies are tuned)
    with pytest.raises(ValueError, match="same names"):
        kx.refine(weak, "3", x, y, {"own": ftr}, x, y, {"other": fte}, epochs=1, progress=False)


# ----------------------------------------------------------------------------- the notebook's studies

def test_toy_study_table_and_determinism(tmp_path, monkeypatch):
    kw = dict(n=16, orders=2, epochs=1, seed=0, channels=4, kinds=("linear", "independent"), joint=("linear",))
    df, res = ks.toy_study(**kw)
    assert list(df.relation) == ["linear", "linear\n(joint)", "independent"]
    assert list(df.columns) == ["relation", "fit", "share_0", "share_1", "share_residual", "x_B - x0 error"]
    assert set(res) == {("linear", True), ("linear", False), ("independent", True)}
    assert df.share_0[0] > 0.9 and df.share_residual[2] > 0.5  # least squares first finds the planted order 0
    monkeypatch.setenv("XNN_CACHE", str(tmp_path / "other"))  # refit from scratch: same numbers
    pd.testing.assert_frame_equal(df, ks.toy_study(**kw)[0])
    x = kx.planted_pair("mix", n=8, channels=4, seed=0)[0]
    assert ks.max_sum_error(res[("linear", True)].net, x) < 1e-5


def test_seed_pairs():
    assert ks.seed_pairs([0, 1]) == [(0, 1)]
    assert ks.seed_pairs([3, 4, 5]) == [(3, 4), (4, 5), (5, 3)]


def test_studies_on_tiny_nets(tmp_path, monkeypatch):
    torch.manual_seed(0)
    ds = data.creatures(48, 32, background="clutter", seed=0)
    train, test = ds.split(0.3, seed=0)
    seeds = [0, 1]
    strong = ks.train_nets(train, test, seeds, plan=[4, "M", 4, "M", 4, 4], epochs=1, num_threads=1)
    weak = ks.train_nets(train, test, seeds, plan=[4, "M", 4, "M", 4], epochs=1, num_threads=1)
    assert set(strong) == set(seeds) and all(0 <= r.val_acc <= 1 for r in weak.values())
    G = dict(orders=2, epochs=1, num_threads=1)
    fit_x, eval_x = train.images[:16], test.images
    perm = ks.permutation_study(strong[0].model, fit_x, eval_x, "features.11", seed=0, **G)
    assert list(perm.normalisation) == ["official (per-sample std)", "off"]
    assert list(perm.columns) == ["normalisation", "share_0", "share_1", "share_residual"]
    pairs = ks.seed_pairs(seeds)
    layers = {"conv3": "features.8", "conv4": "features.11"}
    stab_df, stab = ks.stability_study(strong, pairs, fit_x, eval_x, layers, **G)
    assert list(stab_df.columns) == ["pair", "layer", "share_0", "share_1", "share_residual", "share_g"]
    assert list(stab_df.layer) == ["conv3", "conv4"] and set(stab) == {(0, 1, "conv3"), (0, 1, "conv4")}
    fg = ks.pair_fg_ratios_mean(stab, pairs, "conv4", test.fg_mask)
    assert list(fg.index) == ["x_B", "order 0", "order 1", "residual"]
    diag_df, diag = ks.diagnosis_study(strong, weak, seeds, fit_x, eval_x, "features.11", "features.8",
                                       test.fg_mask, **G)
    assert list(diag_df.index) == seeds and "blind spot share" in diag_df and "fg ratio x_weak" in diag_df
    variants = ks.refinement_variants(2)
    assert variants == ["own feature (control)", "orders 0-1", "order 0"]
    kw = dict(strong_tap="features.11", weak_tap="features.8", pair_layer="conv4", orders=2, epochs=1, num_threads=1)
    ref = ks.refinement_study(strong, weak, seeds, pairs, diag, stab, train, test, **kw)
    assert list(ref.columns) == ["experiment", "seed", "variant", "accuracy"]
    assert len(ref) == (2 + 1) * 4  # strong -> weak for both seeds, one seed pair; 4 variants each
    assert list(ref.variant[:4]) == ["as trained"] + variants and ref.accuracy.between(0, 1).all()
    monkeypatch.setenv("XNN_CACHE", str(tmp_path / "other"))  # fine-tune from scratch: same accuracies
    pd.testing.assert_frame_equal(ref, ks.refinement_study(strong, weak, seeds, pairs, diag, stab, train, test, **kw))
    wide = ref.pivot_table(index=["experiment", "seed"], columns="variant", values="accuracy", sort=False)
    gains = ks.refinement_gains(wide, variants)
    assert list(gains.tag) == ["gain_all_orders", "gain_order0", "control_gain"] * 2
    assert list(gains.n) == [2, 2, 2, 1, 1, 1] and math.isnan(gains.se.iloc[-1])


def _wide(gains_over_control):
    rows = []
    for exp in ("strong -> weak", "seed pair"):
        for s, d in enumerate(gains_over_control):
            rows += [{"experiment": exp, "seed": s, "variant": v, "accuracy": a}
                     for v, a in [("as trained", 0.5), ("own", 0.6), ("all", 0.6 + d), ("zero", 0.6 - d)]]
    return pd.DataFrame(rows).pivot_table(index=["experiment", "seed"], columns="variant", values="accuracy",
                                          sort=False)


def test_refinement_verdicts_pass_and_fail():
    v = ["own", "all", "zero"]
    g = ks.refinement_gains(_wide([0.10, 0.11, 0.12]), v).set_index(["experiment", "tag"])
    row = g.loc[("strong -> weak", "gain_all_orders")]
    assert row.verdict == "improved" and row["mean"] == pytest.approx(0.11) and row.n == 3
    assert row.se == pytest.approx(row.sd / math.sqrt(3)) and row.per_seed == pytest.approx([0.10, 0.11, 0.12])
    assert g.loc[("seed pair", "gain_order0")].verdict == "lowered"
    assert g.loc[("seed pair", "control_gain")]["mean"] == pytest.approx(0.1)
    noisy = ks.refinement_gains(_wide([0.10, -0.09, 0.02]), v).set_index(["experiment", "tag"])
    assert set(noisy.verdict[noisy.index.get_level_values("tag") != "control_gain"]) == {"did not clearly change"}
    one = ks.refinement_gains(_wide([0.3]), v)
    assert set(one.verdict) == {"did not clearly change"}  # one seed: no standard error, no verdict
