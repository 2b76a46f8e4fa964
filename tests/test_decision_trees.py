"""Tests of notebook 07 (Interpreting CNNs via decision trees): planted truth first, then the contracts of the
entry points and the reference outputs of the spec (section 8)."""
import ipywidgets
import matplotlib.figure
import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso
from torch import nn

from xnn_support import viz, widgets
from xnn_support.papers import decision_trees as dt
from xnn_support.papers.decision_trees import metrics as M
from xnn_support.papers.decision_trees.greedy import Merger, fit_node, merged_direction
from xnn_support.papers.decision_trees.planted import OCCLUDED_MODES, maxout_toy, occluded_creatures

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- planted truth: the maxout toy
@pytest.fixture(scope="module")
def toy():
    t = maxout_toy(300, seed=0)
    return t, dt.build_tree(t["x"], t["g"], t["y"], likelihood="gaussian", seed=0)


def test_second_level_recovers_the_planted_modes(toy):
    t, tree = toy
    rec = M.mode_recovery(tree, t["modes"], t["x"], t["g"])
    assert rec["k"] == 3 and rec["ari_tree"] >= 0.9 and rec["purity"] >= 0.95
    assert rec["ari_kmeans_x"] < 0.5          # the activations alone do not show the modes


def test_alpha_support_and_part_contributions_are_exact_at_level_two(toy):
    t, tree = toy
    for v in tree.levels[1]:
        mode = np.bincount(t["modes"][tree.members[v]]).argmax()
        assert M.support_jaccard(tree.w[v], t["support"][mode]) == 1.0
    y_hat, contrib, nodes = tree.explain(t["x"], t["g"], 2)
    truth = M.part_contributions(t["g"] * t["x"], t["A"])
    est = M.part_contributions(contrib, t["A"])
    assert np.abs(est - truth).max() / np.abs(t["y"]).mean() < 1e-3
    assert np.abs(y_hat - t["y"]).mean() / np.ptp(t["y"]) < 1e-4
    assert np.array_equal(nodes, tree.ancestor_at(2))   # the cosine path finds each image's own mode


def test_evaluation_per_depth_on_the_toy(toy):
    t, tree = toy
    df = M.evaluate_depths(tree, t["x"], t["g"], t["y"], np.ones(len(t["y"]), bool), t["A"], depths=(1, 2, "leaf"))
    assert list(df.depth) == ["1", "2", "leaf"]
    assert df.fitness.iloc[1] > 0.999 and df.fitness.iloc[2] == pytest.approx(1.0)
    assert df.pred_error.iloc[0] > 10 * df.pred_error.iloc[1]         # the root's single mode loses information
    assert df.part_entropy.iloc[1] < 1e-6                              # each mode uses one part


def test_softmax_likelihood_over_merges_the_toy(toy):
    """The spec's warning, measured: the paper's softmax-over-images likelihood does not stop at the modes."""
    t, _ = toy
    tree = dt.build_tree(t["x"], t["g"], t["y"], likelihood="softmax", seed=0)
    assert M.mode_recovery(tree, t["modes"], t["x"], t["g"])["ari_tree"] < 0.5


# ----------------------------------------------------------------------------- reference outputs (spec 8)
def test_leaves_reproduce_the_scores_and_explain_contract():
    t = maxout_toy(60, seed=1)
    tree = dt.build_tree(t["x"], t["g"], t["y"], likelihood="gaussian")
    leaf = np.arange(60)
    np.testing.assert_allclose((tree.w[leaf] * t["x"]).sum(1) + tree.b[leaf], t["y"], rtol=1e-12)
    assert tree.levels[0] == [tree.root] and sum(map(len, tree.levels)) == len(tree.w)
    y_hat, contrib, nodes = tree.explain(torch.as_tensor(t["x"]), torch.as_tensor(t["g"]), "leaf")
    assert torch.is_tensor(y_hat) and y_hat.shape == (60,) and contrib.shape == (60, 32) and nodes.shape == (60,)
    assert (tree.depth[nodes.numpy()] >= 2).all()
    with pytest.raises(ValueError, match="depth"):
        tree.explain(t["x"], t["g"], 0)


def test_closed_form_direction_is_the_constrained_maximiser():
    rng = np.random.default_rng(0)
    G = rng.normal(size=(7, 5)) + 1.0
    g = merged_direction(G)
    u = rng.normal(size=5)
    U = G / np.linalg.norm(G, axis=1, keepdims=True)
    for _ in range(2000):                           # projected gradient ascent of sum_I cos(g_I, u)
        u = u + 0.05 * U.sum(0)
        u /= np.linalg.norm(u)
    assert float(g @ u) > 0.9999


@pytest.mark.parametrize("likelihood", ["softmax", "gaussian"])
def test_merging_identical_leaves_gains_beta_and_incremental_equals_full(likelihood):
    rng = np.random.default_rng(2)
    x = rng.gamma(2.0, 1.0, (12, 6))
    g = rng.normal(size=(12, 6))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    x[1], g[1] = x[0], g[0]
    y = (g * x).sum(1) + rng.uniform(3, 5, 12)
    y[1] = y[0]
    m = Merger(x, g, y, likelihood=likelihood, lam0=1e-6, beta=1.0, alpha="continuous", top_k=4, per_image=False,
               cached=True, order=np.arange(12))
    for i in range(12):
        m._row(i)
    assert m.gain(m.A[0, 1], m.dT[0, 1]) == pytest.approx(1.0, abs=1e-9)

    def full(mm):   # log P(X|Q) + log P(Q) from scratch
        h = mm.H
        if likelihood == "softmax":
            ll = (mm.gamma * h).sum() - len(h) * np.log(np.exp(mm.gamma * h).sum())
        else:
            ll = -((h - y) ** 2).sum() / (2 * mm.s2)
        return ll - mm.beta * mm.active.sum()

    before = full(m)
    _, _, _, A, dT = m._exact(2, 5)
    gain = m.gain(A, dT)
    m._merge(2, 5, gain, float("nan"))
    assert full(m) - before == pytest.approx(gain, abs=1e-6)


def test_fit_node_matches_sklearn_lasso():
    rng = np.random.default_rng(3)
    for n in (40, 200):
        x = rng.gamma(2.0, 1.0, (n, 10))
        g_u = merged_direction(rng.normal(size=(3, 10)))
        y = x @ rng.normal(size=10) + 2.0
        lam = 0.05
        w, b, a = fit_node(x, y, g_u, lam, max_iter=5000, tol=1e-12)
        ref = Lasso(alpha=lam / 2, fit_intercept=True, tol=1e-12, max_iter=100000).fit(x * g_u, y)
        np.testing.assert_allclose(a, ref.coef_, atol=1e-4)
        assert b == pytest.approx(ref.intercept_, abs=1e-4)
        np.testing.assert_allclose(w, a * g_u)
    w, b, a = fit_node(x, y, g_u, lam, alpha="support")
    assert set(np.unique(a)) <= {0.0, 1.0}


def test_cached_and_naive_build_the_same_tree():
    t = maxout_toy(40, seed=4)
    a = dt.build_tree(t["x"], t["g"], t["y"], likelihood="softmax", cached=True)
    b = dt.build_tree(t["x"], t["g"], t["y"], likelihood="softmax", cached=False)
    assert [h["node"] for h in a.history] == [h["node"] for h in b.history]
    assert a.children == b.children
    assert a.settings["rows"] < b.settings["rows"]


def test_jaccard_fitness_bounds():
    rng = np.random.default_rng(5)
    rho = rng.normal(size=(8, 6))
    assert M.jaccard_fitness(rho, rho) == pytest.approx(np.ones(8))
    assert M.jaccard_fitness(rho, np.zeros_like(rho)) == pytest.approx(np.zeros(8))


def test_build_tree_errors_name_the_argument():
    t = maxout_toy(20, seed=0)
    with pytest.raises(ValueError, match="likelihood"):
        dt.build_tree(t["x"], t["g"], t["y"], likelihood="poisson")
    with pytest.raises(ValueError, match="mean\\(y\\) > 0"):
        dt.build_tree(t["x"], t["g"], -t["y"])
    with pytest.raises(ValueError, match="alpha"):
        dt.build_tree(t["x"], t["g"], t["y"], alpha="binary")
    with pytest.raises(ValueError, match="\\(N, D\\)"):
        dt.build_tree(t["x"], t["g"][:, :3], t["y"])


# ----------------------------------------------------------------------------- rationales on small CNNs
class GapNet(nn.Module):
    """conv -> ReLU (the 'top layer') -> global average pool -> linear: g.x is exact."""

    def __init__(self, pool="avg"):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def test_rationales_are_exact_with_an_average_pooled_head():
    net = GapNet()
    imgs = torch.rand(10, 3, 8, 8)
    x, g, y, b = R = dt.rationales(net, imgs, "features", 1, contrast=0, batch_size=4)
    out = net(imgs).detach().double()
    np.testing.assert_allclose(R.score, out[:, 1] - out[:, 0], rtol=1e-5)   # float32 batches
    np.testing.assert_allclose(g.norm(dim=1), torch.ones(10, dtype=torch.float64), rtol=1e-10)
    np.testing.assert_allclose((g * x).sum(1) + b, y, rtol=1e-10)
    assert R.gap.abs().max() < 1e-10
    # linear head: the ablation of a part equals its linear contribution rho_k = sum_{d in k} g_d x_d
    A = np.eye(3)[[0, 0, 1, 1, 2, 2]]
    q = M.ablation_parts(net, imgs, "features", 1, A, contrast=0, norm=R.norm)
    lin = M.part_contributions(g * x, A)
    np.testing.assert_allclose(q, lin, atol=1e-5 * np.abs(lin).max())    # float32 forwards


def test_rationales_report_the_gap_of_a_max_pooled_head_and_check_arguments():
    net = GapNet("max")
    imgs = torch.rand(6, 3, 8, 8)
    R = dt.rationales(net, imgs, "features", 0)
    assert R.gap.abs().max() > 1e-6
    np.testing.assert_allclose(R.score, net(imgs).detach().double()[:, 0], rtol=1e-5)
    Rm = dt.rationales(net, imgs, "features", 0, reduce="max")       # exact for a max-pooled head
    assert Rm.gap.abs().max() < 1e-10
    Ru = dt.rationales(net, imgs, "features", 0, reduce="max", unit=False)
    np.testing.assert_allclose(Ru.y, Ru.score)
    np.testing.assert_allclose(Ru.g, Rm.g * Rm.norm[:, None], rtol=1e-10)
    R2 = dt.rationales(net, imgs[:2], "features", 0, scale=R.scale)
    np.testing.assert_allclose(R2.x, R.x[:2], rtol=1e-10)
    with pytest.raises(KeyError, match="features"):
        dt.rationales(net, imgs, "featurez", 0)
    with pytest.raises(ValueError, match="target"):
        dt.rationales(net, imgs, "features", "cat")
    with pytest.raises(ValueError, match="batch_size"):
        dt.rationales(net, imgs, "features", 0, batch_size=0)
    with pytest.raises(ValueError, match="reduce"):
        dt.rationales(net, imgs, "features", 0, reduce="mean")


def test_filter_parts_counts_peaks_inside_masks():
    S, n = 16, 16
    maps = torch.zeros(5, 3, n, n)
    maps[:, 0, 2, 2] = 1.0          # filter 0 peaks on part 0, filter 1 on part 1, filter 2 never fires
    maps[:, 1, 12, 12] = 1.0
    masks = torch.zeros(5, 2, S, S, dtype=torch.bool)
    masks[:, 0, 0:5, 0:5] = True
    masks[:, 1, 10:14, 10:14] = True
    fp = M.filter_parts(nn.Sequential(nn.Identity()), "0", maps, masks, ["head", "tail"])
    assert fp.names == ["head", "tail", "other"] and fp.label.tolist() == [0, 1, 2]
    assert fp.A.shape == (3, 3) and fp.freq[0, 0] == 1.0


def test_occluded_creatures_hide_the_parts_of_their_mode():
    ds, mode = occluded_creatures(60, seed=0)
    assert set(mode[ds.labels.numpy() == 0]) == {-1}
    assert np.bincount(mode[mode >= 0]).min() >= 5
    pidx = {p: i for i, p in enumerate(ds.part_names)}
    for m, name in enumerate(("H", "T", "F")):
        for p in OCCLUDED_MODES[name]:
            assert not ds.part_masks[torch.as_tensor(mode == m)][:, pidx[p]].any()
    assert ds.part_masks[torch.as_tensor(mode == 2)][:, pidx["head"]].any()


def test_figures_and_the_walker_build():
    t = maxout_toy(40, seed=0)
    tree = dt.build_tree(t["x"], t["g"], t["y"], likelihood="gaussian")
    names = ["a", "b", "c", "d"]
    assert isinstance(viz.tree_levels(tree, t["x"], t["A"], names, max_depth=3), matplotlib.figure.Figure)
    _, contrib, _ = tree.explain(t["x"][:2], t["g"][:2], 2)
    fig = viz.tree_explanations(torch.rand(2, 3, 8, 8), {"depth 2": M.part_contributions(contrib, t["A"])}, names)
    assert isinstance(fig, matplotlib.figure.Figure)
    w = widgets.tree_walker(tree, torch.rand(40, 3, 8, 8), t["x"], t["g"], t["A"], names, y=t["y"])
    assert isinstance(w, ipywidgets.VBox)
