"""Tests of notebook 06's experiment plumbing: pair bookkeeping, the Delta sign convention, the
lecture's numbers, and one tiny end-to-end study."""
import math

import pytest
import torch

from xnn_support.papers.pointcloud import experiments as X

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pairs_cover_every_architecture_and_model_family():
    archs = {p.arch for p in X.PAIRS}
    assert archs == {"Arch 1", "Arch 2", "Arch 3", "Arch 4"}
    names = {v[0] for v in X.variants().values()}
    assert names == {"pointconv", "pointnet2", "point2sequence", "pointsift", "dgcnn"}
    for p in X.PAIRS:
        assert X.variant_key(p.with_) != X.variant_key(p.without)
        assert set(p.metrics) <= set(X.METRICS)
        if (p.label, p.metrics[0]) in X.PAPER:  # the lecture's Delta has the documented sign
            for w, wo, d in X.PAPER[(p.label, p.metrics[0])].values():
                lower = X.METRICS[p.metrics[0]][1]
                if w is not None:
                    assert d == pytest.approx((wo - w) if lower else (w - wo), abs=2e-3)


def _rows(metric, w_vals, wo_vals, pair):
    rows = []
    for s, (a, b) in enumerate(zip(w_vals, wo_vals)):
        rows.append({"dataset": "digits3d", "seed": s, "variant": X.variant_key(pair.with_), metric: a})
        rows.append({"dataset": "digits3d", "seed": s, "variant": X.variant_key(pair.without), metric: b})
    return rows


def test_pair_table_signs_and_spread():
    rot = next(p for p in X.PAIRS if p.metrics == ("rotation",))
    adv = next(p for p in X.PAIRS if p.metrics == ("adversarial",))
    rows = _rows("rotation", [1.0, 2.0, 3.0], [2.0, 2.5, 4.0], rot) + _rows("adversarial", [3.0, 3.0], [2.0, 3.5], adv)
    t = X.pair_table(rows, [rot, adv], dataset="digits3d")
    r = t[t.metric == "rotation non-robustness"].iloc[0]
    assert r["Delta"] == pytest.approx((1.0 + 0.5 + 1.0) / 3)      # lower is better: w/o - w/
    assert r["seeds Delta>0"] == "3/3" and r["Delta sd"] == pytest.approx(torch.tensor([1.0, 0.5, 1.0]).std().item())
    a = t[t.metric == "adversarial robustness"].iloc[0]
    assert a["Delta"] == pytest.approx((1.0 - 0.5) / 2) and a["seeds Delta>0"] == "1/2"  # higher is better
    assert not math.isnan(r["paper Delta"])


def test_planted_networks_are_what_they_claim():
    x = torch.randn(2, 32, 3)
    R = torch.linalg.qr(torch.randn(3, 3))[0]
    inv, coord = X.DistanceNet(3), X.CoordinateNet(3)
    assert torch.allclose(inv(x), inv(x @ R), atol=1e-5)
    assert not torch.allclose(coord(x), coord(x @ R), atol=1e-3)


def test_tiny_study_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path))
    budget = dict(X.PROFILES["smoke"], n_train=60, epochs=1)
    pairs = [p for p in X.PAIRS if p.model == "PointNet++" and p.arch in ("Arch 2", "Arch 3")]
    rows = X.run_study("digits3d", budget, pairs=pairs, rotation_training="separate", progress=False)
    t = X.pair_table(rows, pairs, dataset="digits3d")
    assert set(t.metric) == {"rotation non-robustness", "adversarial robustness", "neighbourhood inconsistency"}
    assert t[["w/", "w/o", "Delta"]].notna().all().all()
    trainings = {(r["variant"], r["training"]) for r in rows}
    assert ("pointnet2", "so3") in trainings and ("pointnet2", "aligned") in trainings
    assert not any(r["metrics_cached"] for r in rows)
    again = X.run_study("digits3d", budget, pairs=pairs, rotation_training="separate", progress=False)  # all cached
    assert all(r["metrics_cached"] and r["from_cache"] for r in again)
    keep = lambda r: {k: v for k, v in r.items() if k not in ("metrics_cached", "from_cache", "eval_seconds")}  # noqa: E731
    import pandas as pd
    assert pd.DataFrame([keep(r) for r in again]).equals(pd.DataFrame([keep(r) for r in rows]))  # NaN == NaN


def test_all_metrics_for_every_pair_on_aligned_networks(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path))
    budget = dict(X.PROFILES["smoke"], n_train=60, epochs=1)
    pairs = [p for p in X.PAIRS if p.model == "PointNet++" and p.arch in ("Arch 1", "Arch 4")]
    jobs = X.study_jobs(budget, pairs, "aligned", all_metrics=True)
    assert {j[0] for j in jobs} == {"pointnet2", "pointnet2[density=True]", "pointnet2[orientation=True]"}
    assert all(j[3] == ("adversarial", "inconsistency", "rotation") for j in jobs)
    only = X.study_jobs(budget, pairs, "aligned", all_metrics=False)
    assert dict((j[0], j[3]) for j in only)["pointnet2[density=True]"] == ("adversarial",)
    rows = X.run_study("digits3d", budget, pairs=pairs, progress=False)
    full = X.pair_table(rows, pairs, dataset="digits3d", all_metrics=True)
    assert len(full) == 6 and full.hypothesis.sum() == 2
    assert set(full[full.hypothesis].metric) == {"adversarial robustness", "rotation non-robustness"}
