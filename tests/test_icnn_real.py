"""Notebook 02's real-network section (issue 16): the num_classes head of the pretrained zoo entry,
the frozen-lower / trained-top split, a tiny study (columns, determinism) and the verdicts. (The cache
hit shared with notebook 05 is checked in test_consistency_real.py.)"""
import math

import pandas as pd
import pytest
import torch

from xnn_support.models import build
from xnn_support.papers.icnn import real
from xnn_support.papers.icnn.method import InterpretableConv2d

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XNN_QUIET", "1")


def test_num_classes_head_replaces_only_the_classifier():
    full = build("efficientnet_lite0", weights="imagenet")
    a = build("efficientnet_lite0", weights="imagenet", num_classes=3, seed=5)
    b = build("efficientnet_lite0", weights="imagenet", num_classes=3, seed=5)
    c = build("efficientnet_lite0", weights="imagenet", num_classes=3, seed=6)
    assert a.classifier.out_features == 3 and a.xnn_config["num_classes"] == 3 and not a.training
    assert torch.equal(a.classifier.weight, b.classifier.weight)            # seeded
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert float(a.classifier.weight.detach().abs().max()) <= 1 / math.sqrt(3) and not a.classifier.bias.any()
    sa, sf = a.state_dict(), full.state_dict()
    assert all(torch.equal(sa[k], sf[k]) for k in sf if not k.startswith("classifier."))
    assert full.classifier.out_features == 1000
    r = build("efficientnet_lite0", weights=None, num_classes=4, seed=0)
    assert r.classifier.out_features == 4 and r(torch.zeros(1, 3, 64, 64)).shape == (1, 4)
    for bad in (0, -2, 2.5, True, "3"):
        with pytest.raises(ValueError, match="num_classes"):
            build("efficientnet_lite0", weights=None, num_classes=bad)


def test_net_split_lower_frozen_top_trained():
    net = real.build_real_net("code", 2, 0)
    assert isinstance(net.get_submodule(real.LAYER), InterpretableConv2d)
    assert net.get_submodule(real.LAYER).conv.in_channels == 112
    top = real.Top(net)
    lower = real.Lower(net)
    assert not any(p.requires_grad for p in lower.parameters())
    assert all(p.requires_grad for n, p in top.named_parameters() if n.startswith(("net.blocks.5", "net.classifier")))
    x = torch.rand(2, 3, real.SIZE, real.SIZE)
    with torch.no_grad():
        f = lower.eval()(x)
        assert f.shape == (2, 112, 14, 14)
        # the two halves give the whole net's output
        assert torch.allclose(top.eval()(f), net.eval()(real.preprocess(x, real.SIZE)), atol=1e-4)
    with pytest.raises(ValueError, match="mode"):
        real.build_real_net("nope", 2, 0)


def test_tiny_study_columns_and_determinism(tmp_path, monkeypatch):
    kw = dict(n=15, epochs=1, progress=False)
    df = real.real_study(["single"], ["ordinary", "code"], [0], **kw)
    assert list(df.columns) == ["task", "mode", "seed", "weight", "acc", "instability", "part_iou", "from_cache",
                                "seconds"]
    assert len(df) == 2 and df["weight"].tolist() == [0.0, 1.0] and not df["from_cache"].any()
    assert df[["acc", "instability", "part_iou"]].notna().all().all()
    monkeypatch.setenv("XNN_CACHE", str(tmp_path / "other"))   # features and training from scratch
    fresh = real.real_study(["single"], ["ordinary", "code"], [0], **kw)
    cols = ["acc", "instability", "part_iou"]
    pd.testing.assert_frame_equal(df[cols], fresh[cols])
    ch = real.real_changes(df)
    assert list(ch) == [("single", "code")] and len(ch[("single", "code")]) == 1
    summ = real.real_summary(df)
    assert summ.index.names == ["arch", "task", "protocol", "mode"] and ("instability", "mean") in summ.columns
    with pytest.raises(ValueError, match="modes"):
        real.real_study(["single"], ["bogus"], [0], **kw)


def test_scale_verdict_and_reading():
    assert real.scale_verdict([-0.3, -0.25, -0.35], [-0.1]) == "held"
    assert real.scale_verdict([-0.12, -0.15, -0.1], [-0.02]) == "partly"
    assert real.scale_verdict([-0.12, -0.15, -0.1], []) == "did not hold"          # no toy counterpart
    assert real.scale_verdict([-0.026, -0.025, -0.031], [-0.02, -0.01, -0.05]) == "did not hold"
    assert real.scale_verdict([-0.12, 0.15, -0.1], [-0.02]) == "did not hold"
    assert real.scale_verdict([0.02, 0.01, 0.03], [0.05]) == "did not hold"
    toy = {("vgg", "single", "finetune", "code"): [-0.02, -0.01], ("vgg", "multi", "scratch", "code"): [0.05]}
    assert real.toy_reference(toy, "single", "code")[0] == ("vgg", "single", "finetune", "code")
    assert real.toy_reference(toy, "multi", "code")[0] == ("vgg", "multi", "scratch", "code")
    assert real.toy_reference(toy, "multi", "paper") == (None, [])
    df = pd.DataFrame([{"task": "single", "mode": m, "seed": s, "acc": 1.0, "instability": v}
                       for s, (a, b) in enumerate([(0.1, 0.07), (0.1, 0.06)])
                       for m, v in (("ordinary", a), ("code", b))])
    r = real.real_reading(df, toy).iloc[0]
    assert r["verdict"] == "held" and r["seeds_lower"] == 2 and r["toy"] == "vgg/single/finetune/code"
    assert r["real_change"] == pytest.approx(-0.35)
