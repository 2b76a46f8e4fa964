"""Tests for the trainer and its checkpoint cache (xnn_support.core.train, xnn_support.core.cache):
reuse, determinism, corruption -> rebuild, failed runs never write, input checks, checkpoints."""
import inspect
import time

import pytest
import torch
from torch import nn

from xnn_support.core import cache as xcache
from xnn_support.data.types import ImageSet, PointCloudSet, TextSet
from xnn_support.models import available, build
from xnn_support.core.train import RECIPES, TrainingError, evaluate, fit, predict, recipe

FAST = dict(model_config={"width": 0.25}, epochs=2, batch_size=16, progress=False)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XNN_QUIET", "1")


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n=64, size=32, seed=0):
    """Class 1 = a bright square in the centre; easy but not trivial."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.rand(n, 3, size, size, generator=g) * 0.6
    q = size // 4
    x[y == 1, :, q:3 * q, q:3 * q] += 0.4
    return ImageSet(images=x, labels=y, class_names=["plain", "square"])


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _cache_files():
    root = xcache.cache_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_cache_reuse_same_weights_and_history():
    tr, va = _images().split(0.25, seed=0)
    r1 = fit("vgg_small", tr, va, **FAST)
    assert not r1.from_cache and r1.path.is_file() and len(r1.history) == 2
    assert r1.path.parent.parent == xcache.cache_dir()
    assert not r1.model.training and 0.0 <= r1.val_acc <= 1.0
    r2 = fit("vgg_small", tr, va, **FAST)
    assert r2.from_cache and r2.key == r1.key and _same(r1.model, r2.model)
    assert r2.history == r1.history and r2.val_acc == r1.val_acc
    # any change of hyperparameter, seed or data gives another key
    assert fit("vgg_small", tr, va, **dict(FAST, epochs=1)).key != r1.key
    assert fit("vgg_small", tr, va, seed=1, **FAST).key != r1.key
    tr2, va2 = _images(seed=1).split(0.25, seed=0)
    assert fit("vgg_small", tr2, va2, **FAST).key != r1.key  # spec-less subsets: tensors hashed


def test_deterministic_without_cache_and_seed_matters():
    tr, va = _images().split(0.25, seed=0)
    kw = dict(FAST, cache=False, augment="flip+shift")
    a, b = fit("vgg_small", tr, va, **kw), fit("vgg_small", tr, va, **kw)
    assert _same(a.model, b.model) and a.path is None and _cache_files() == []
    c = fit("vgg_small", tr, va, seed=3, **kw)
    assert not _same(a.model, c.model)


def test_truncated_entry_is_detected_and_rebuilt():
    tr, va = _images().split(0.25, seed=0)
    r1 = fit("vgg_small", tr, va, **FAST)
    data = r1.path.read_bytes()
    r1.path.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="unreadable.*retraining"):
        r2 = fit("vgg_small", tr, va, **FAST)
    assert not r2.from_cache and _same(r1.model, r2.model)
    r3 = fit("vgg_small", tr, va, **FAST)  # the rebuilt entry is valid again
    assert r3.from_cache


def test_tampered_weights_and_wrong_key_are_detected():
    tr, va = _images().split(0.25, seed=0)
    r1 = fit("vgg_small", tr, va, **FAST)
    payload = torch.load(r1.path, weights_only=True)
    payload["state_dict"]["features.0.weight"][0, 0, 0, 0] += 1.0
    torch.save(payload, r1.path)
    with pytest.warns(RuntimeWarning, match="checksum"):
        assert not fit("vgg_small", tr, va, **FAST).from_cache
    r_other = fit("vgg_small", tr, va, **dict(FAST, epochs=1))
    r_other.path.write_bytes(r1.path.read_bytes())  # an entry stored under the wrong name
    with pytest.warns(RuntimeWarning, match="holds key"):
        assert not fit("vgg_small", tr, va, **dict(FAST, epochs=1)).from_cache


def test_failed_run_never_writes_or_overwrites(monkeypatch):
    tr, va = _images().split(0.25, seed=0)
    r1 = fit("vgg_small", tr, va, checkpoints=True, **FAST)
    before = r1.path.read_bytes()
    files_before = _cache_files()
    real_step = torch.optim.Adam.step

    def nan_step(self, *a, **k):  # poison the weights after the first update
        out = real_step(self, *a, **k)
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", nan_step)
    with pytest.raises(TrainingError, match="loss became nan"):
        fit("vgg_small", tr, va, cache="refresh", checkpoints=True, **FAST)
    assert r1.path.read_bytes() == before and _cache_files() == files_before
    with pytest.raises(TrainingError):  # a new key: no entry, no staging folder left behind
        fit("vgg_small", tr, va, checkpoints=True, **dict(FAST, lr=2e-3))
    assert _cache_files() == files_before


def test_bad_inputs_raise_before_training_and_write_nothing():
    ds = _images()
    bad = _images()
    bad.images[3, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf \\(1 of 64"):
        fit("vgg_small", bad, **FAST)
    with pytest.raises(ValueError, match="val_set: inputs contain NaN"):
        fit("vgg_small", ds, bad, **FAST)
    with pytest.raises(ValueError, match="empty"):
        fit("vgg_small", ds.subset(torch.arange(0)), **FAST)
    short = ImageSet(images=ds.images, labels=ds.labels[:10])
    with pytest.raises(ValueError, match="10 labels but inputs of shape"):
        fit("vgg_small", short, **FAST)
    with pytest.raises(ValueError, match="labels go up to 3 but the model has 2 outputs"):
        fit("vgg_small", ImageSet(images=ds.images, labels=ds.labels * 3),
            **dict(FAST, model_config={"width": 0.25, "num_classes": 2}))
    with pytest.raises(ValueError, match="unknown model 'vgg_tiny'.*available"):
        fit("vgg_tiny", ds, **FAST)
    with pytest.raises(ValueError, match="needs points"):
        fit("vgg_small", ds, augment="jitter", **FAST)
    for kw in ({"epochs": 0}, {"lr": float("nan")}, {"batch_size": -1}, {"cache": "yes"}):
        with pytest.raises(ValueError):
            fit("vgg_small", ds, **dict(FAST, **kw))
    assert _cache_files() == []


def test_epoch_checkpoints_cached_and_loadable():
    tr, va = _images().split(0.25, seed=0)
    r0 = fit("vgg_small", tr, va, **FAST)  # an entry without checkpoints ...
    r1 = fit("vgg_small", tr, va, checkpoints=True, schedule="cosine", **FAST)
    assert r1.key != r0.key and len(r1.epoch_checkpoints) == 3
    init = build("vgg_small", num_classes=2, in_size=32, width=0.25, seed=0)
    assert _same(r1.load_epoch(0), init) and _same(r1.load_epoch(2), r1.model)
    assert r1.history[-1]["lr"] < 1e-3 * 0.6  # cosine decayed
    r2 = fit("vgg_small", tr, va, checkpoints=True, schedule="cosine", **FAST)
    assert r2.from_cache and [p.name for p in r2.epoch_checkpoints] == [p.name for p in r1.epoch_checkpoints]
    assert _same(r2.load_epoch(1), r1.load_epoch(1))
    f = r2.epoch_checkpoints[1]
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(xcache.CacheError, match="unreadable"):
        r2.load_epoch(1)
    with pytest.raises(ValueError, match="epoch must be in"):
        r2.load_epoch(3)
    # ... asking for checkpoints from an entry trained without them retrains once
    r3 = fit("vgg_small", tr, va, checkpoints=True, **FAST)
    assert not r3.from_cache and len(r3.epoch_checkpoints) == 3
    assert fit("vgg_small", tr, va, checkpoints=True, **FAST).from_cache
    # in-memory checkpoints without the cache
    r4 = fit("vgg_small", tr, va, checkpoints=True, cache=False, **FAST)
    assert isinstance(r4.epoch_checkpoints[0], dict) and _same(r4.load_epoch(2), r4.model)


def test_module_identity_includes_initial_weights():
    tr, va = _images().split(0.25, seed=0)
    kw = dict(FAST)
    kw.pop("model_config")
    m1 = build("vgg_small", num_classes=2, in_size=32, width=0.25, seed=0)
    m2 = build("vgg_small", num_classes=2, in_size=32, width=0.25, seed=1)
    m1_copy = build("vgg_small", num_classes=2, in_size=32, width=0.25, seed=0)
    r1, r2 = fit(m1, tr, va, **kw), fit(m2, tr, va, **kw)
    assert r1.model is m1 and r1.key != r2.key
    r3 = fit(m1_copy, tr, va, **kw)
    assert r3.from_cache and r3.key == r1.key and _same(m1_copy, m1)


def test_predict_and_evaluate():
    ds = _images(n=40)
    m = build("vgg_small", num_classes=2, in_size=32, width=0.25, seed=0)
    m.train()
    full = predict(m, ds.images, batch_size=64)
    chunked = predict(m, ds, batch_size=7)
    assert m.training and full.shape == (40, 2) and torch.allclose(full, chunked, atol=1e-5)
    acc = evaluate(m, ds)
    assert acc == pytest.approx(float((full.argmax(1) == ds.labels).float().mean()))


def test_text_and_pointnet_learn_toy_tasks():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 20, (300, 10), generator=g)
    y = torch.arange(300) % 2
    ids[y == 1, torch.randint(0, 10, (150,), generator=g)] = 1  # key token 1 marks class 1
    ids[y == 0] = torch.where(ids[y == 0] == 1, 2, ids[y == 0])
    ids[::3, 8:] = 0
    vocab = ["<pad>"] + [f"w{i}" for i in range(1, 20)]
    tokens = [[vocab[i] for i in row if i] for row in ids.tolist()]
    text = TextSet(ids=ids, mask=ids != 0, labels=y, tokens=tokens, vocab=vocab, class_names=["no", "yes"])
    tr, va = text.split(0.3, seed=0)
    r = fit("text_cnn", tr, va, epochs=6, lr=3e-3, batch_size=32, progress=False, cache=False)
    assert r.val_acc >= 0.9

    n = 200
    pts = torch.randn(n, 64, 3, generator=g)
    pts = pts / pts.norm(dim=-1, keepdim=True)  # spheres
    cube = (torch.rand(n, 64, 3, generator=g) * 2 - 1)
    yy = torch.arange(n) % 2
    pts[yy == 1] = cube[yy == 1]
    clouds = PointCloudSet(points=pts, labels=yy, class_names=["sphere", "cube"])
    trp, vap = clouds.split(0.25, seed=0)
    rp = fit("pointnet", trp, vap, epochs=6, lr=3e-3, batch_size=16, augment="rotate_z+jitter",
             progress=False, cache=False, model_config={"bn_momentum": 0.3})
    assert rp.val_acc >= 0.9


def test_pointnet_separates_digits3d():
    from xnn_support.data import digits3d
    tr, va = digits3d(500, points=64, seed=0).split(0.2, seed=0)
    r = fit("pointnet", tr, va, epochs=5, lr=3e-3, batch_size=32, progress=False, cache=False,
            model_config={"bn_momentum": 0.3})
    assert r.val_acc >= 0.6  # chance is 0.1; measured 0.93


def test_custom_loss_and_inputs_enter_the_key():
    tr, va = _images().split(0.25, seed=0)
    base = fit("vgg_small", tr, va, **FAST)
    smooth = fit("vgg_small", tr, va, loss_fn=nn.CrossEntropyLoss(label_smoothing=0.1), **FAST)
    smooth2 = fit("vgg_small", tr, va, loss_fn=nn.CrossEntropyLoss(label_smoothing=0.2), **FAST)
    assert len({base.key, smooth.key, smooth2.key}) == 3
    assert 0.0 <= smooth.history[-1]["train_acc"] <= 1.0  # still a classifier: accuracy reported
    dim = fit("vgg_small", tr, va, inputs=lambda ds: (ds.images * 0.5, ds.labels), **FAST)
    assert dim.key != base.key and not dim.from_cache


def test_recipes_are_fit_arguments_and_copies():
    names, params = set(available()), inspect.signature(fit).parameters
    for name, rec in RECIPES.items():
        assert name in names and set(rec) <= set(params)
    r = recipe("vgg_small")
    r["lr"] = 1.0
    assert RECIPES["vgg_small"]["lr"] == 3e-3 and recipe("no_such_model") == {}


@pytest.mark.slow
def test_acceptance_vgg_small_on_creatures():
    """Issue 3 acceptance: >= 90% val acc; the second call loads the same weights from the cache. (The
    time targets, < 3 min to train and < 2 s to load on 2 cores, are `xnn bench` rows, not asserts:
    a timed unit test fails on a loaded machine for no fault of the code.)"""
    from xnn_support.data import creatures
    tr, va = creatures(2000, 64, seed=0).split(0.2, seed=0)
    r = fit("vgg_small", tr, va, progress=False, **recipe("vgg_small"))
    again = fit("vgg_small", tr, va, progress=False, **recipe("vgg_small"))
    assert r.val_acc >= 0.9, r.val_acc
    assert again.from_cache and _same(r.model, again.model)


def test_cache_key_names_do_not_depend_on_module_paths():
    """Issue 14: moving a class between modules must not change the checkpoint cache key."""
    from xnn_support.core import cache as C
    from xnn_support.papers.icnn.method import FilterLoss
    assert C.stable_name(FilterLoss) == "xnn:FilterLoss"
    assert C.stable_name(torch.nn.Conv2d) == "torch.nn.modules.conv.Conv2d"
    moved = type("FilterLoss", (), {"__module__": "xnn_support.somewhere.else"})
    assert C.stable_name(moved) == C.stable_name(FilterLoss)


def test_memory_format_channels_last_keyed_deterministic_and_contiguous_after():
    """'auto' trains an image conv net channels-last on the CPU: a different cache key from 'contiguous'
    (other rounding), the same weights on a re-run, a contiguous model returned; bad values are refused."""
    ds = _images()
    runs = {fmt: fit("vgg_small", ds, ds, seed=0, cache=False, memory_format=fmt, **FAST)
            for fmt in ("auto", "contiguous")}
    again = fit("vgg_small", ds, ds, seed=0, cache=False, memory_format="auto", **FAST)
    assert _same(runs["auto"].model, again.model)
    assert runs["auto"].key != runs["contiguous"].key
    assert all(p.is_contiguous() for p in runs["auto"].model.parameters())
    assert runs["auto"].key == fit("vgg_small", ds, ds, seed=0, cache=False, memory_format="channels_last",
                                   **FAST).key
    with pytest.raises(ValueError, match="memory_format"):
        fit("vgg_small", ds, ds, memory_format="nhwc", **FAST)
