"""Notebook 05's real-network section (issue 16): pretrained vs random-init EfficientNet-Lite0 on
creatures, a tiny study (columns, the net shared with notebook 02 through the cache, determinism), the
order-share view and the verdicts."""
import pandas as pd
import pytest

from xnn_support.papers.consistency import real as kreal
from xnn_support.papers.icnn import real as ireal

pytestmark = pytest.mark.usefixtures("one_thread")

KW = dict(n=15, epochs=1, n_fit=6, g_epochs=1, progress=False)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XNN_QUIET", "1")


def test_tiny_study_table_shared_net_and_determinism(tmp_path, monkeypatch):
    df = kreal.real_consistency_study([0], **KW)
    assert df["layer"].tolist() == list(kreal.LAYERS) and df["seed"].tolist() == [0] * len(kreal.LAYERS)
    for c in ["tap", "frozen", "shape", "acc_pretrained", "acc_scratch", "blind_0", "blind_2", "blind_residual",
              "unrel_0", "unrel_residual", "blind_minus_unreliable"]:
        assert c in df.columns, c
    assert df["shape"].tolist() == ["112x14x14", "112x14x14", "320x7x7"]
    assert (df["blind_minus_unreliable"] == df["blind_residual"] - df["unrel_residual"]).all()
    # the "pretrained" net is notebook 02's ordinary fine-tuning: the same call, one cache entry
    r02 = ireal.finetune("multi", "ordinary", 0, n=15, epochs=1)
    assert r02["result"].from_cache
    shares = kreal.order_shares(df, "unrel")
    assert {"share_0", "share_1", "share_2", "share_residual"} <= set(shares.columns)
    with pytest.raises(ValueError, match="direction"):
        kreal.order_shares(df, "sideways")
    summ = kreal.real_diagnosis_summary(df)
    assert list(summ.index) == list(kreal.LAYERS) and len(summ.iloc[0]["per_seed"]) == 1
    monkeypatch.setenv("XNN_CACHE", str(tmp_path / "other"))   # nets, features and g from scratch
    again = kreal.real_consistency_study([0], **KW)
    num = [c for c in df.columns if df[c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(df[num], again[num])


def test_verdicts_and_reading():
    assert kreal.diagnosis_verdict([0.1, 0.2, 0.15]) == "blind spots dominate"
    assert kreal.diagnosis_verdict([-0.1, -0.2, -0.15]) == "unreliable features dominate"
    assert kreal.diagnosis_verdict([0.1, -0.2, 0.15]) == "no clear asymmetry"
    assert kreal.diagnosis_verdict([0.1]).startswith("no clear asymmetry")
    assert kreal.compare_gaps([0.5, 0.6], [0.05, 0.09]) == "larger than"
    assert kreal.compare_gaps([0.06, 0.08], [0.05, 0.09]) == "about the same as"
    rows = [{"seed": s, "layer": "L", "frozen": False, "shape": "1x1x1", "acc_pretrained": 1.0, "acc_scratch": 0.5,
             "blind_0": 0.5, "unrel_0": 0.6, "blind_residual": b, "unrel_residual": u, "blind_minus_unreliable": b - u}
            for s, (b, u) in enumerate([(0.5, 0.3), (0.6, 0.3)])]
    lines = kreal.real_consistency_reading(pd.DataFrame(rows), toy_gap=[0.05, 0.09])
    assert any("blind spots dominate" in ln for ln in lines) and lines[-1].startswith("- **Toy nets**")
    assert "larger than" in lines[-1]
