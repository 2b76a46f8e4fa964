"""Vectorised point geometry (xnn_support.models.pointgeom) against brute-force loops: FPS from
index 0, TF-style ball query, kNN with the point itself first, PointSIFT octants, ball density."""
import math

import pytest
import torch

from xnn_support.models import pointgeom as G

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def x():
    return torch.rand(3, 40, 3, generator=torch.Generator().manual_seed(0))


def test_fps_matches_brute_force(x):
    idx = G.farthest_point_sample(x, 12)
    for b in range(3):
        sel, d = [0], ((x[b] - x[b, 0]) ** 2).sum(-1)
        for _ in range(11):
            j = int(d.argmax())
            sel.append(j)
            d = torch.minimum(d, ((x[b] - x[b, j]) ** 2).sum(-1))
        assert idx[b].tolist() == sel


def test_fps_is_deterministic_and_distinct(x):
    a, b = G.farthest_point_sample(x, 40), G.farthest_point_sample(x, 40)
    assert torch.equal(a, b) and all(len(set(r.tolist())) == 40 for r in a)
    with pytest.raises(ValueError, match="cannot sample"):
        G.farthest_point_sample(x, 41)


def test_ball_query_tf_semantics(x):
    c = x[:, :6]
    bq = G.ball_query(x, c, 0.3, 8)
    for b in range(3):
        for m in range(6):
            inr = [j for j in range(40) if float(((x[b, j] - c[b, m]) ** 2).sum()) < 0.09][:8]
            assert bq[b, m].tolist() == inr + [inr[0]] * (8 - len(inr))   # first k by index, padded with the first
    far = torch.full((3, 1, 3), 10.0)
    assert G.ball_query(x, far, 0.1, 4).eq(0).all()                        # empty ball: index 0
    assert torch.equal(G.ball_query(x, c, 0.3, 8, batch_size=1), bq)


def test_knn_includes_self_first_and_matches_sort(x):
    kn = G.knn(x, 6)
    for b in range(3):
        for n in range(40):
            d = ((x[b] - x[b, n]) ** 2).sum(-1)
            ref = torch.argsort(d, stable=True)[:6].tolist()
            assert kn[b, n, 0] == n and set(kn[b, n].tolist()) == set(ref)
    q = torch.rand(3, 5, 3)
    kq = G.knn(x, 4, q)
    d = G.sqdist(q, x)
    assert torch.allclose(d.gather(2, kq), d.sort(-1).values[..., :4])
    assert G.knn(torch.rand(2, 10, 7), 3).shape == (2, 10, 3)              # any feature dimension (DGCNN)


def test_octants_match_brute_force(x):
    o = G.octant_neighbors(x, 0.4)
    for n in range(40):
        for code in range(8):
            best = None
            for j in range(40):
                if j == n:
                    continue
                dx = x[0, j] - x[0, n]
                cc = 4 * int(dx[0] > 0) + 2 * int(dx[1] > 0) + int(dx[2] > 0)
                dd = float((dx ** 2).sum())
                if cc == code and dd <= 0.16 and (best is None or dd < best[0]):
                    best = (dd, j)
            assert int(o[0, n, code]) == (best[1] if best else n)


def test_octant_codes_of_cube_corners():
    corners = torch.tensor([[sx, sy, sz] for sx in (-1.0, 1.0) for sy in (-1.0, 1.0) for sz in (-1.0, 1.0)]) * 0.1
    pts = torch.cat([torch.zeros(1, 3), corners]).unsqueeze(0)
    o = G.octant_neighbors(pts, 1.0)[0, 0]
    assert o.tolist() == list(range(1, 9))                                 # corner k sits in octant k - 1
    lone = G.octant_neighbors(torch.tensor([[[0.0, 0, 0], [5.0, 5, 5]]]), 1.0)
    assert lone[0, 0].eq(0).all()                                          # empty octants: the point itself


def test_ball_density_is_a_gaussian_kde():
    pts = torch.tensor([[[0.0, 0, 0], [0.1, 0, 0], [0.0, 0.2, 0]]])
    idx = torch.tensor([[[0, 1, 2]] * 3])
    v = 0.05
    rho = G.ball_density(pts, idx, v)
    ref = sum(math.exp(-float(((pts[0, j] - pts[0, 0]) ** 2).sum()) / (2 * v)) for j in range(3)) / 3
    assert float(rho[0, 0]) == pytest.approx(ref / (2 * math.pi * v) ** 1.5, rel=1e-5)


def test_knn_selection_equals_the_stable_sort_with_ties():
    """knn's topk path returns exactly the first k of a stable (distance, index) sort, ties included."""
    from xnn_support.models.pointgeom import _smallest_k
    g = torch.Generator().manual_seed(0)
    for trial in range(60):
        n = int(torch.randint(5, 60, (1,), generator=g))
        k = int(torch.randint(1, n + 1, (1,), generator=g))
        d = [torch.rand(2, 7, n, generator=g), torch.randint(0, 4, (2, 7, n), generator=g).float(),
             torch.rand(2, 7, n, generator=g).round(decimals=1)][trial % 3]
        assert torch.equal(_smallest_k(d, k), torch.sort(d, dim=-1, stable=True).indices[..., :k])
    d = torch.rand(2, 5, 9, generator=g)
    d[0, 0, 3] = float("nan")
    assert torch.equal(_smallest_k(d, 4), torch.sort(d, dim=-1, stable=True).indices[..., :4])
