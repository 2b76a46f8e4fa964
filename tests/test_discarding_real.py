"""The real-network study of notebook 04 (EfficientNet-Lite0, pretrained vs random init): tiny runs."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("timm")

from xnn_support.data import real_photos  # noqa: E402
from xnn_support.models.pretrained import preprocess  # noqa: E402
from xnn_support.papers.discarding import real as R  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # small convs on a shared 2-core CPU
TINY = dict(layers=("blocks.1", "conv_head"), size=64, grid=4, steps=3, samples=1)


@pytest.fixture(scope="module")
def photo():
    ph = real_photos(size=80, names=["coffee"])
    return ph.images, ph.masks, ph.names


def test_wrapper_normalisation_equals_preprocess(photo):
    x = photo[0]
    model = R.load_net("random", 0)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        ours = model(R.resize_images(x, 64))
        ref = model.net(preprocess(x, 64))
    assert torch.allclose(ours, ref, atol=1e-5)
    assert R.resize_masks(photo[1], 64).shape == (1, 64, 64)


def test_study_columns_and_summary(photo):
    x, m, names = photo
    df = R.real_network_study(x, m, seeds=(0,), names=names, dataset="photos", **TINY)
    assert list(df.columns) == R.COLUMNS
    assert len(df) == 2 * 1 * 2                      # (trained, random 0) x 1 image x 2 layers
    assert set(df["net"]) == {"trained", "random"} and set(df["init"]) == {-1, 0}
    assert np.allclose(df["gap"], df["bg"] - df["fg"])
    assert df["entropy_map"].iloc[0].shape == (4, 4)
    s = R.real_summary(df)
    assert s["layers"] == ["blocks.1", "conv_head"] and s["inits"] == [0]
    assert math.isclose(s["trained_minus_random_per_init"][0], s["gap_last_trained"] - s["gap_last_random"])
    rd = R.real_reading({"photos": s}, toy_gap_init=0.4, toy_gap_trained=0.38)
    assert rd["toy_untrained"] and isinstance(rd["scale_explains"], bool)
    lines = R.reading_lines(rd)
    assert len(lines) == 3 and lines[-1].startswith("* Verdict")
    maps = R.entropy_maps(df, "trained", -1, names, label="trained ")
    assert list(maps) == ["trained blocks.1", "trained conv_head"] and maps["trained conv_head"].shape == (1, 4, 4)


def test_study_deterministic(photo):
    x, m, names = photo
    kw = dict(TINY, layers=("blocks.1",), seeds=(1,), trained=False, seed=3, readout="final")
    a, b = R.real_network_study(x, m, **kw), R.real_network_study(x, m, **kw)
    num = ["fg", "bg", "gap", "entropy", "F"]
    pd.testing.assert_frame_equal(a[num], b[num])
    c = R.real_network_study(x, m, **dict(kw, seed=4))
    assert not np.allclose(a["entropy"], c["entropy"])


def test_study_rejects_bad_shapes(photo):
    x, m, _ = photo
    with pytest.raises(ValueError):
        R.real_network_study(x, m[0], **TINY)
