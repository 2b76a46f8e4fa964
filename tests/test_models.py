"""Tests for the model zoo (xnn_support.models): names, shapes, layer naming, seeding, user
weights (weights_only, no downloads), PointNet invariance, text models from embeddings."""
import pytest
import torch
from torch import nn

from xnn_support import capture, models
from xnn_support.models import build

SMALL = ["vgg_small", "alexnet_small", "resnet_small"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_available_lists_every_contract_name():
    names = set(models.available())
    assert {"vgg_small", "alexnet_small", "resnet_small", "vgg16", "vgg19", "alexnet", "resnet18",
            "resnet50", "pointnet", "text_cnn", "text_lstm", "text_transformer"} <= names


def test_unknown_name_lists_available_and_suggests():
    with pytest.raises(ValueError, match="available: .*vgg_small") as e:
        build("vgg_smal")
    assert "did you mean 'vgg_small'" in str(e.value)


def test_bad_config_is_value_error():
    with pytest.raises(ValueError, match="bad config for model 'vgg_small'"):
        build("vgg_small", no_such_arg=1)


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("size", [32, 64, 128])
def test_small_cnn_shapes(name, size):
    m = build(name, num_classes=3, in_size=size, width=0.5, seed=0).eval()
    assert m(torch.rand(2, 3, size, size)).shape == (2, 3)
    assert m.xnn_config == {"name": name, "num_classes": 3, "in_size": size, "width": 0.5}


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("bad", [16, 129, 64.0])
def test_small_cnn_rejects_bad_in_size(name, bad):
    with pytest.raises(ValueError, match="in_size"):
        build(name, in_size=bad)


@pytest.mark.parametrize("name", SMALL)
def test_small_cnn_rejects_bad_input(name):
    m = build(name, in_size=64)
    with pytest.raises(ValueError, match="input channels"):
        m(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        m(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="at least"):
        m(torch.rand(1, 3, 4, 4))


def test_vgg_small_layout_and_map_sizes():
    m = build("vgg_small", in_size=64, seed=0).eval()
    assert isinstance(m.features, nn.Sequential) and isinstance(m.classifier, nn.Sequential)
    convs = [i for i, l in enumerate(m.features) if isinstance(l, nn.Conv2d)]
    names = [f"features.{i}" for i in convs]
    with capture(m, names) as cap:
        m(torch.rand(2, 3, 64, 64))
    sizes = [cap[n].shape[-1] for n in names]
    assert sizes[0] == 64 and 32 in sizes and 16 in sizes and sizes[-1] == 8
    assert not any(getattr(l, "inplace", False) for l in m.modules())  # hook-safe ReLUs


def test_resnet_small_torchvision_names():
    m = build("resnet_small", in_size=64, seed=0)
    named = dict(m.named_modules())
    for n in ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc", "layer3.0.merge",
              "layer4.0.conv2"]:
        assert n in named
    x = torch.rand(2, 3, 64, 64)
    with capture(m.eval(), ["layer3.0.merge", "layer3"]) as cap:
        m(x)
    pre, post = cap["layer3.0.merge"], cap["layer3"]
    assert pre.shape == post.shape == (2, 64, 16, 16)
    assert torch.allclose(post, pre.clamp_min(0)) and (pre < 0).any()  # merge = pre-ReLU sum


def test_build_seed_reproducible_and_leaves_global_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build("vgg_small", width=0.5, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = build("vgg_small", width=0.5, seed=7)
    c = build("vgg_small", width=0.5, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["features.0.weight"], sc["features.0.weight"])


def test_torchvision_head_and_no_download(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("tried to download")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    m = build("resnet18", num_classes=5)
    assert m.fc.out_features == 5
    assert build("alexnet", num_classes=4).classifier[6].out_features == 4


def test_torchvision_user_weights(tmp_path):
    import torchvision
    src = torchvision.models.resnet18(weights=None, num_classes=7)
    p = tmp_path / "w.pt"
    torch.save({"state_dict": src.state_dict()}, p)
    m = build("resnet18", num_classes=3, weights_path=str(p))
    assert torch.equal(m.conv1.weight, src.conv1.weight) and m.fc.out_features == 3
    same = build("resnet18", num_classes=7, weights_path=p)
    assert torch.equal(same.fc.weight, src.fc.weight)
    assert len(m.xnn_config["weights_sha256"]) == 64
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in src.state_dict().items() if not k.startswith("layer4")}, partial)
    with pytest.raises(ValueError, match="do not fit"):
        build("resnet18", weights_path=partial)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        build("resnet18", weights_path=tmp_path / "missing.pt")


class _Evil:
    pass


def test_user_weights_loaded_with_weights_only(tmp_path):
    import pickle
    import torchvision
    p = tmp_path / "evil.pt"
    torch.save({"state_dict": torchvision.models.resnet18(weights=None).state_dict(), "x": _Evil()}, p)
    with pytest.raises(pickle.UnpicklingError):
        build("resnet18", weights_path=p)


def test_pointnet_shapes_invariance_and_global_feature():
    m = build("pointnet", num_classes=4, seed=0).eval()
    x = torch.randn(3, 128, 3)
    perm = torch.randperm(128)
    with capture(m, "global_feature") as cap:
        out = m(x)
    assert out.shape == (3, 4) and cap["global_feature"].shape == (3, 256)
    assert torch.allclose(m(x[:, perm]), out, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        m(torch.randn(3, 3, 128)[:, :, :2])
    t = build("pointnet", num_classes=2, input_transform=True, seed=0).eval()
    assert t(x).shape == (3, 2)


TEXT = ["text_cnn", "text_lstm", "text_transformer"]


@pytest.mark.parametrize("name", TEXT)
def test_text_models_embeddings_padding_and_layers(name):
    m = build(name, vocab_size=30, num_classes=3, seed=0).eval()
    ids = torch.randint(1, 30, (4, 9), generator=torch.Generator().manual_seed(0))
    ids[1, 6:] = 0
    out = m(ids)
    assert out.shape == (4, 3)
    emb = m.embedding(ids)
    assert torch.allclose(m.forward_embeddings(emb, ids != 0), out, atol=1e-5)
    # extra right padding changes nothing
    padded = torch.cat([ids, torch.zeros(4, 5, dtype=torch.long)], 1)
    assert torch.allclose(m(padded), out, atol=1e-5)
    with capture(m, ["layers.0", "layers.1"]) as cap:
        m(ids)
    assert cap["layers.1"].shape[:2] == (4, 9)


@pytest.mark.parametrize("name", TEXT)
def test_text_models_reject_bad_inputs(name):
    m = build(name, vocab_size=30)
    with pytest.raises(ValueError, match=r"\[0, 30\)"):
        m(torch.tensor([[1, 30]]))
    with pytest.raises(ValueError, match="integer"):
        m(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="at least one real token"):
        m(torch.tensor([[0, 0], [1, 2]]))
    with pytest.raises(ValueError, match="embeddings must be"):
        m.forward_embeddings(torch.randn(2, 5, 7))
