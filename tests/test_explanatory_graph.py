"""Explanatory graph (issue 7): planted-truth recovery, E step vs loop reference, geometry, evals."""
from collections import OrderedDict

import pytest
import torch

from xnn_support.papers.graph import metrics as ge
from xnn_support.papers.graph.method import e_step, e_step_loop, mine


def planted(N=160, seed=0, noise=0.01):
    """Top layer (8x8, stride 2): filter 0 fires at A, filter 1 at B (moving +-1 cell). Child layer
    (16x16, stride 1): filter 0 fires on TWO patterns, at 2A + d1 and 2B + d2; filter 1 is constant."""
    g = torch.Generator().manual_seed(seed)
    A = torch.tensor([2., 2.]) + torch.randint(-1, 2, (N, 2), generator=g).float()
    B = torch.tensor([5., 5.]) + torch.randint(-1, 2, (N, 2), generator=g).float()
    top = noise * torch.rand(N, 3, 8, 8, generator=g)
    ch = noise * torch.rand(N, 2, 16, 16, generator=g)
    d1, d2 = torch.tensor([3., -2.]), torch.tensor([-2., 3.])
    i = torch.arange(N)
    top[i, 0, A[:, 0].long(), A[:, 1].long()] += 1
    top[i, 1, B[:, 0].long(), B[:, 1].long()] += 1
    a, b = (2 * A + d1).long(), (2 * B + d2).long()
    ch[i, 0, a[:, 0], a[:, 1]] += 1
    ch[i, 0, b[:, 0], b[:, 1]] += 1
    ch[:, 1, 8, 8] += 1
    return OrderedDict(child=ch, top=top), 2 * A + d1, 2 * B + d2, d1, d2


@pytest.fixture(scope="module")
def mined():
    fm, ta, tb, d1, d2 = planted()
    G = mine(fm, geometry={"child": (1, 0), "top": (2, 0)}, nodes_per_filter=[12, 6], parents=1,
             iters=6, max_range=0.5, seed=0)
    return G, fm, ta, tb, d1, d2


def test_planted_displacements_and_two_nodes_per_filter(mined):
    G, fm, ta, tb, d1, d2 = mined
    inf = G.infer(fm)
    pos, sc = inf.pos["child"], inf.score["child"]
    P = G.layers["child"].P
    nodes = [n for n in G.nodes if n["layer"] == "child" and n["filter"] == 0]
    hit_a = ((pos[:, :P] - ta.unsqueeze(1)).abs().amax(-1) <= 1).float().mean(0)
    hit_b = ((pos[:, :P] - tb.unsqueeze(1)).abs().amax(-1) <= 1).float().mean(0)
    ia, ib = int(hit_a.argmax()), int(hit_b.argmax())
    assert ia != ib, "one filter with two patterns must give two nodes"
    assert hit_a[ia] >= 0.95 and hit_b[ib] >= 0.95, (hit_a, hit_b)
    Ptop = G.layers["top"].P
    na, nb = nodes[ia], nodes[ib]
    # each node follows its own parent: the top filter of its pattern, at the planted displacement
    assert na["parents"][0][1] // Ptop == 0 and nb["parents"][0][1] // Ptop == 1
    assert (torch.tensor(na["displacement"][0]) - d1).abs().max() <= 1.0
    assert (torch.tensor(nb["displacement"][0]) - d2).abs().max() <= 1.0
    # a node is not its filter's argmax: the filter argmax can follow only one of the two patterns
    pk, _ = ge.filter_peaks(fm["child"])
    fa = ((pk[:, 0] - ta).abs().amax(-1) <= 1).float().mean()
    fb = ((pk[:, 0] - tb).abs().amax(-1) <= 1).float().mean()
    assert min(fa, fb) < 0.6


def test_shuffled_parents_break_tracking(mined):
    """Control: the same child maps with the parent layer permuted across images -> no tracking."""
    G, fm, ta, tb, d1, d2 = mined
    perm = torch.randperm(fm["top"].shape[0], generator=torch.Generator().manual_seed(1))
    bad = OrderedDict(child=fm["child"], top=fm["top"][perm])
    pos = G.infer(bad).pos["child"][:, :G.layers["child"].P]
    hit = ((pos - ta.unsqueeze(1)).abs().amax(-1) <= 1).float().mean(0).max()
    assert hit < 0.9


def test_vectorised_e_step_equals_loop_reference():
    g = torch.Generator().manual_seed(0)
    A = torch.rand(3, 2, 7, 6, generator=g)
    mu = torch.rand(3, 2, 4, 2, generator=g) * 6
    sigma = 0.5 + torch.rand(2, 4, generator=g)
    sc, pos, mean, vs = e_step(A, mu, sigma, half=2, valid_tau=0.1)
    sc2, pos2, mean2, vs2 = e_step_loop(A, mu, sigma, half=2, valid_tau=0.1)
    torch.testing.assert_close(sc, sc2, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(pos, pos2)
    torch.testing.assert_close(mean, mean2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vs, vs2, rtol=1e-4, atol=1e-5)


def test_competition_sanity_single_node_no_tau():
    """Spec section 8: P = 1, tau = 0 -> responsibilities are 1 inside the window, w = F."""
    A = torch.rand(1, 1, 5, 5)
    mu = torch.full((1, 1, 1, 2), 2.0)
    sc, pos, _, _ = e_step(A, mu, torch.tensor([[1.0]]), half=2, valid_tau=0.0)
    torch.testing.assert_close(sc[0, 0, 0], A.sum())
    k = int(A.flatten().argmax())
    assert pos[0, 0, 0].tolist() == [k // 5, k % 5]


def test_receptive_field_vgg_small():
    from xnn_support.models import build

    m = build("vgg_small", seed=0, in_size=64, num_classes=2)
    geo = ge.receptive_field(m, ["features.2", "features.9", "features.16", "features.23"], 64)
    assert geo["features.2"] == (1.0, 0.0)
    assert geo["features.9"] == (2.0, 0.5)
    assert geo["features.16"] == (4.0, 1.5)
    assert geo["features.23"] == (8.0, 3.5)


def test_receptive_field_vgg16_matches_spec():
    """Spec 2.3 (1-based): conv4 unit 1 -> 4.5, conv5 unit 14 -> 216.5 at 224 px."""
    import torchvision

    m = torchvision.models.vgg16(weights=None)
    geo = ge.receptive_field(m, ["features.21", "features.28"], 224)
    s4, o4 = geo["features.21"]
    s5, o5 = geo["features.28"]
    assert s4 == 8 and o4 + 1 == 4.5
    assert s5 == 16 and o5 + 1 + 13 * 16 == 216.5


def test_instability_planted():
    """A unit glued to the landmark is perfectly stable; a random one is not."""
    g = torch.Generator().manual_seed(0)
    lm = torch.rand(50, 2, 2, generator=g) * 60
    pix = torch.stack([lm[:, 0], torch.rand(50, 2, generator=g) * 60], 1)
    score = torch.ones(50, 2)
    s_glued = ge.instability(pix[:, :1], score[:, :1], lm[:, :1], top_images=50, diag=90.0)
    s_rand = ge.instability(pix[:, 1:], score[:, 1:], lm[:, :1], top_images=50, diag=90.0)
    assert s_glued < 1e-5 < s_rand


def test_instability_of_an_immobile_unit_is_the_landmark_spread():
    """The reference the notebook reports: a unit that never moves scores the sd of the landmark's
    distance to it, so a small landmark spread alone gives a small instability."""
    g = torch.Generator().manual_seed(1)
    lm = torch.randn(60, 1, 2, generator=g) * 3 + 32
    pix = torch.full((60, 1, 2), 31.5)
    s = ge.instability(pix, torch.ones(60, 1), lm, top_images=60, diag=90.0)
    ref = (lm[:, 0] - 31.5).norm(dim=-1).std() / 90.0
    assert s == pytest.approx(float(ref), rel=1e-5)
    wide = ge.instability(pix, torch.ones(60, 1), (lm - 32) * 4 + 32, top_images=60, diag=90.0)
    assert wide > 3 * s


def test_fewshot_picks_the_tracking_node():
    g = torch.Generator().manual_seed(0)
    N = 40
    lm = torch.rand(N, 2, generator=g) * 50 + 5
    good = lm - torch.tensor([3.0, 4.0])
    noise = torch.rand(N, 5, 2, generator=g) * 64
    pix = torch.cat([good.unsqueeze(1), noise], 1)
    score = torch.ones(N, 6)
    pred = ge.fewshot_localise(pix[:3], score[:3], lm[:3], pix[3:], score[3:], n_select=1)
    torch.testing.assert_close(pred, lm[3:])


def test_mine_rejects_bad_input():
    with pytest.raises(ValueError, match="geometry"):
        mine(OrderedDict(a=torch.rand(2, 1, 4, 4)))
    with pytest.raises(ValueError, match="N, C, H, W"):
        mine(OrderedDict(a=torch.rand(2, 4, 4)), geometry={"a": 1})
    with pytest.raises(ValueError, match="same images"):
        mine(OrderedDict(a=torch.rand(2, 1, 4, 4), b=torch.rand(3, 1, 2, 2)), geometry={"a": 1, "b": 2})


def test_mobility_zero_for_immobile_and_matches_rms():
    g = torch.Generator().manual_seed(2)
    still = torch.full((30, 1, 2), 10.0)
    moving = torch.randn(30, 1, 2, generator=g) * 2 + 20
    assert ge.mobility(still, torch.ones(30, 1), top_images=30) == 0.0
    ref = (moving[:, 0] - moving[:, 0].mean(0)).pow(2).sum(-1).mean().sqrt() / 5.0
    assert ge.mobility(moving, torch.ones(30, 1), top_images=30, diag=5.0) == pytest.approx(float(ref), rel=1e-5)


def test_mirror_moves_landmarks_with_the_pixels_and_is_an_involution():
    from xnn_support import data
    from xnn_support.papers.graph.experiments import facing_right, mirror
    ds = data.creatures(12, 64, categories=("bird",), negatives=0.0, object_centric=True, seed=3)
    which = torch.arange(12) % 2 == 0
    mi = mirror(ds, which)
    assert torch.equal(mi.images[1], ds.images[1]) and torch.equal(mi.images[0], ds.images[0].flip(-1))
    # the head landmark stays inside the (mirrored) head mask
    h = ds.part_names.index("head")
    r, c = mi.landmarks[0, 0].round().long().tolist()
    assert mi.part_masks[0, h, max(r - 2, 0):r + 3, max(c - 2, 0):c + 3].any()
    assert torch.equal(facing_right(mi)[which], ~facing_right(ds)[which])
    back = mirror(mi, which)
    torch.testing.assert_close(back.landmarks, ds.landmarks, equal_nan=True)
    torch.testing.assert_close(back.boxes, ds.boxes, equal_nan=True)
    assert torch.equal(back.images, ds.images)


def test_choose_flips_aligns_planted_mirrored_maps():
    """Half the images are the mirrors of the other half's pattern; without labels the choice must put
    (nearly) all of them in one orientation."""
    from xnn_support.papers.graph.experiments import choose_flips
    fm, *_ = planted(N=120, seed=4)
    g = torch.Generator().manual_seed(0)
    flip = torch.rand(120, generator=g) < 0.5
    obs = OrderedDict((k, torch.where(flip.view(-1, 1, 1, 1), v.flip(-1), v)) for k, v in fm.items())
    mir = OrderedDict((k, v.flip(-1)) for k, v in obs.items())
    geo = {"child": (1, 0), "top": (2, 0)}
    for dct in (obs, mir):
        for k, v in dct.items():
            v.geometry = geo[k]
    choice = choose_flips(obs, mir, n_mine=80, rounds=8, nodes_per_filter=[12, 6], parents=1, iters=4,
                          max_range=0.5, seed=0)
    facing = flip ^ choice          # orientation after the choice
    share = float(facing.float().mean())
    assert max(share, 1 - share) > 0.95


def test_select_parents_code_candidates_drop_immobile_and_border_nodes():
    from xnn_support.papers.graph.method import select_parents
    g = torch.Generator().manual_seed(0)
    N = 80
    move = torch.randn(N, 2, generator=g) * 3
    child = (30 + move).unsqueeze(1)                                       # (N, 1, 2)
    up = torch.stack([torch.full((N, 2), 30.0),                           # immobile, always on (a hub)
                      20 + move,                                          # moves with the child
                      torch.stack([1 + move[:, 0].abs(), 30 + move[:, 1]], 1),   # moving, at the border
                      30 + torch.randn(N, 2, generator=g) * 3], 1)        # moving, unrelated
    s_up = torch.tensor([5.0, 1.0, 1.0, 1.0]).expand(N, 4).clone()
    s = torch.ones(N, 1)
    bounds = [(0.0, 60.0), (0.0, 60.0)]
    assert select_parents(child, s, up, s_up, 1, candidates="code", bounds=bounds).item() == 1
    two = set(select_parents(child, s, up, s_up, 2, candidates="code", bounds=bounds).flatten().tolist())
    assert two == {1, 3}                                                 # never the hub or the border node
    assert select_parents(child, s, up, s_up, 1, candidates="active").item() == 1
    with pytest.raises(ValueError, match="candidates"):
        select_parents(child, s, up, s_up, 1, candidates="nope")


def test_seed_table_and_seed_summary():
    from xnn_support.papers.graph.experiments import seed_summary, seed_table
    runs = [{"metrics": {"a": 1.0, "b": 4.0}}, {"metrics": {"a": 3.0, "b": 4.0}}]
    t = seed_table(runs, 5)
    assert list(t.columns) == ["seed 5", "seed 6"] and list(t.index) == ["a", "b"]
    ms = seed_summary(t)
    assert ms.loc["a", "mean"] == 2.0 and ms.loc["a", "sd"] == pytest.approx(2 ** 0.5) and ms.loc["b", "sd"] == 0.0
    assert seed_summary(seed_table(runs[:1], 0)).loc["a", "sd"] == 0.0


def test_instability_verdict_pass_and_fail():
    ok = ge.instability_verdict({"instability/nodes": 0.04, "instability/filters": 0.07, "other": 1.0})
    assert ok == {"nodes": 0.04, "filters": 0.07, "lower": True, "verdict": "lower"}
    bad = ge.instability_verdict({"instability/nodes": 0.07, "instability/filters": 0.07})
    assert not bad["lower"] and bad["verdict"] == "NOT lower"
