"""Tests for the ``creatures`` generator (xnn_support.data.creatures)."""
import json

import numpy as np
import pytest
import torch

import xnn_support
from xnn_support.data import creatures
from xnn_support.data.creatures import (CATEGORIES, LANDMARK_NAMES, LANDMARK_PARTS, PART_NAMES,
                                        object_landmarks, render_objects, _pose)
from xnn_support.data._creatures_shapes import MODELS
from xnn_support.data.types import ImageSet


@pytest.fixture(scope="module")
def ds64():
    return creatures(400, 64, seed=7)


@pytest.fixture(scope="module")
def ds32():
    return creatures(300, 32, seed=3, background="plain")


@pytest.fixture(scope="module")
def ds_occ():
    return creatures(200, 64, seed=9, background="photo", occlusion=0.5)


def _lm_part_index():
    return np.array([PART_NAMES.index(LANDMARK_PARTS[k]) for k in LANDMARK_NAMES])


# ------------------------------------------------------------------------------------ basics
@pytest.mark.parametrize("size,n", [(32, 20), (64, 20), (128, 6), (224, 3)])
def test_shapes_dtypes_ranges(size, n):
    ds = creatures(n, size, seed=1)
    K, P = len(LANDMARK_NAMES), len(PART_NAMES)
    assert isinstance(ds, ImageSet) and len(ds) == n and ds.size == size
    assert ds.images.shape == (n, 3, size, size) and ds.images.dtype == torch.float32
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    assert ds.labels.shape == (n,) and ds.labels.dtype == torch.long
    assert ds.landmarks.shape == (n, K, 2) and ds.landmarks.dtype == torch.float32
    assert ds.part_masks.shape == (n, P, size, size) and ds.part_masks.dtype == torch.bool
    assert ds.fg_mask.shape == (n, size, size) and ds.fg_mask.dtype == torch.bool
    assert ds.boxes.shape == (n, 4) and ds.boxes.dtype == torch.float32
    assert ds.class_names == ["negative", *CATEGORIES]
    assert ds.landmark_names == list(LANDMARK_NAMES) and ds.part_names == list(PART_NAMES)
    assert "wheel_front" in ds.part_names and "wheel_rear" in ds.part_names
    assert "wheel_front" in ds.landmark_names and "wheel_rear" in ds.landmark_names


def test_spec_is_json_and_complete():
    ds = creatures(10, 32, categories=("bird", "wheels"), negatives=0.3, background="plain",
                   object_centric=True, occlusion=0.5, seed=4)
    spec = json.loads(json.dumps(ds.spec))
    assert spec == dict(generator="creatures", n=10, size=32, categories=["bird", "wheels"],
                        negatives=0.3, background="plain", object_centric=True, occlusion=0.5,
                        seed=4, version=xnn_support.__version__)


def test_determinism_and_seed_dependence():
    a = creatures(40, 32, seed=5, occlusion=0.3)
    b = creatures(40, 32, seed=5, occlusion=0.3)
    c = creatures(40, 32, seed=6, occlusion=0.3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.part_masks, b.part_masks) and torch.equal(a.fg_mask, b.fg_mask)
    assert torch.allclose(a.landmarks, b.landmarks, equal_nan=True) and torch.isnan(a.landmarks).any()
    assert torch.allclose(a.boxes, b.boxes, equal_nan=True)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.labels, c.labels)


def test_every_category_appears_and_label_counts():
    ds = creatures(50, 32, seed=0, negatives=0.2)
    counts = torch.bincount(ds.labels, minlength=5).tolist()
    assert counts == [10, 10, 10, 10, 10]
    sub = creatures(9, 32, categories=("wheels", "bird"), negatives=0.0, seed=0)
    assert sub.class_names == ["negative", "wheels", "bird"]
    assert sorted(torch.bincount(sub.labels, minlength=3).tolist()) == [0, 4, 5]
    allneg = creatures(5, 32, negatives=1.0, seed=0)
    assert (allneg.labels == 0).all() and torch.isnan(allneg.boxes).all()


# ------------------------------------------------------------------------ ground-truth checks
@pytest.mark.parametrize("name", ["ds64", "ds32", "ds_occ"])
def test_landmarks_inside_their_part_masks(name, request):
    ds = request.getfixturevalue(name)
    lm, masks, labels = ds.landmarks.numpy(), ds.part_masks.numpy(), ds.labels.numpy()
    S = ds.size
    part_of = _lm_part_index()
    i, k = np.nonzero(~np.isnan(lm[:, :, 0]))
    assert len(i) > 0.75 * (labels > 0).sum() * 3  # most landmarks of positives are visible (avg 3)
    r, c = np.floor(lm[i, k, 0] + 0.5).astype(int), np.floor(lm[i, k, 1] + 0.5).astype(int)
    assert ((r >= 0) & (r < S) & (c >= 0) & (c < S)).all()
    assert masks[i, part_of[k], r, c].all()
    # landmarks belong to the image's category only
    for ci, cat in enumerate(ds.class_names[1:], 1):
        own = [LANDMARK_NAMES.index(n) for n in MODELS[cat].landmarks(MODELS[cat].sample(np.random.default_rng(0), 1))]
        other = [j for j in range(len(LANDMARK_NAMES)) if j not in own]
        sel = labels == ci
        assert np.isnan(lm[sel][:, other]).all()
        if own and ds.spec["occlusion"] == 0:  # without occlusion nearly every own landmark is visible
            assert (~np.isnan(lm[sel][:, own, 0])).mean() > 0.97
    assert np.isnan(lm[labels == 0]).all()


def test_masks_fg_boxes_consistent(ds64):
    masks, fg, labels = ds64.part_masks.numpy(), ds64.fg_mask.numpy(), ds64.labels.numpy()
    boxes = ds64.boxes.numpy()
    pos = labels > 0
    assert (masks.sum(1) <= 1).all()  # visible part masks are disjoint
    assert np.array_equal(masks[pos].any(1), fg[pos])  # fg = union of the object's parts
    assert not masks[~pos].any()  # negatives: no object parts ...
    assert fg[~pos].reshape((~pos).sum(), -1).any(1).all()  # ... but scattered parts are fg
    assert np.isnan(boxes[~pos]).all() and not np.isnan(boxes[pos]).any()
    tex = ds64.class_names.index("texture")
    assert np.array_equal(masks[labels == tex, PART_NAMES.index("texture")], fg[labels == tex])
    for i in np.nonzero(pos)[0][:50]:
        r0, c0, r1, c1 = boxes[i].astype(int)
        assert fg[i, r0:r1, c0:c1].sum() == fg[i].sum()  # box contains the object ...
        assert fg[i, r0].any() and fg[i, r1 - 1].any() and fg[i, :, c0].any() and fg[i, :, c1 - 1].any()
    # parts of every category are non-trivial
    for cat, parts in [("bird", ["head", "body", "tail", "legs"]),
                       ("quadruped", ["head", "body", "tail", "legs"]),
                       ("wheels", ["frame", "wheel_front", "wheel_rear"])]:
        sel = labels == ds64.class_names.index(cat)
        for part in parts:
            assert masks[sel, PART_NAMES.index(part)].reshape(sel.sum(), -1).sum(1).min() >= 3, (cat, part)


def test_two_identical_wheels_are_separate(ds64):
    sel = (ds64.labels == ds64.class_names.index("wheels")).numpy()
    masks, img, lm = ds64.part_masks.numpy()[sel], ds64.images.numpy()[sel], ds64.landmarks.numpy()[sel]
    f, r = PART_NAMES.index("wheel_front"), PART_NAMES.index("wheel_rear")
    mf, mr = masks[:, f], masks[:, r]
    assert not (mf & mr).any()
    af, ar = mf.reshape(len(mf), -1).sum(1), mr.reshape(len(mr), -1).sum(1)
    assert (af > 10).all() and (ar > 10).all() and (np.abs(af - ar) <= 0.25 * np.maximum(af, ar)).all()
    # identical look: same mean colour in both wheel masks (up to noise and pixel-grid effects)
    mean_f = (img * mf[:, None]).sum((2, 3)) / af[:, None]
    mean_r = (img * mr[:, None]).sum((2, 3)) / ar[:, None]
    assert np.abs(mean_f - mean_r).max() < 0.12
    # separate landmarks, front wheel on the cab side
    kf, kr, kc = (LANDMARK_NAMES.index(n) for n in ("wheel_front", "wheel_rear", "cab"))
    d = np.linalg.norm(lm[:, kf] - lm[:, kr], axis=1)
    assert (d > 10).all()
    assert (np.linalg.norm(lm[:, kc] - lm[:, kf], axis=1) < np.linalg.norm(lm[:, kc] - lm[:, kr], axis=1)).all()


@pytest.mark.parametrize("category", ["bird", "quadruped", "wheels", "texture"])
def test_flip_moves_landmarks_and_masks_consistently(category):
    S, m = 64, 16
    rng = np.random.default_rng(0)
    model = MODELS[category]
    p = model.sample(rng, m)
    pose = _pose(model.scale, model.centre, m, S, rng, 0.1)
    mirror = dict(pose, cc=(S - 1 - pose["cc"]).astype(np.float32), theta=-pose["theta"], flip=-pose["flip"])
    _, lab = render_objects(category, p, pose, S)
    _, lab_m = render_objects(category, p, mirror, S)
    assert (lab > 0).any()
    assert np.mean(lab_m != lab[:, :, ::-1]) < 2e-3  # mirror image, up to float ties at edges
    lm, lm_m = object_landmarks(category, p, pose), object_landmarks(category, p, mirror)
    np.testing.assert_allclose(lm_m[..., 1], S - 1 - lm[..., 1], atol=1e-3)
    np.testing.assert_allclose(lm_m[..., 0], lm[..., 0], atol=1e-3)
    flipped = pose["flip"] < 0  # facing direction: head/front landmark on the facing side
    front = {"bird": "head", "quadruped": "quad_head", "wheels": "wheel_front"}.get(category)
    back = {"bird": "tail_tip", "quadruped": "quad_tail_tip", "wheels": "wheel_rear"}.get(category)
    if front:
        kf, kb = LANDMARK_NAMES.index(front), LANDMARK_NAMES.index(back)
        small_rot = np.abs(pose["theta"]) < 0.3
        right = lm[:, kf, 1] > lm[:, kb, 1]
        assert np.array_equal(right[small_rot], ~flipped[small_rot])


def test_occlusion_makes_landmarks_nan():
    ds = creatures(120, 64, categories=("bird", "quadruped", "wheels"), negatives=0.0,
                   occlusion=1.0, object_centric=True, seed=2)
    lm, labels = ds.landmarks.numpy(), ds.labels.numpy()
    for ci, cat in enumerate(ds.class_names[1:], 1):
        own = [LANDMARK_NAMES.index(n) for n in MODELS[cat].landmarks(MODELS[cat].sample(np.random.default_rng(0), 1))]
        hidden = np.isnan(lm[labels == ci][:, own, 0]).any(1)
        assert hidden.all(), cat
    clean = creatures(120, 64, categories=("bird", "quadruped", "wheels"), negatives=0.0,
                      occlusion=0.0, object_centric=True, seed=2)
    assert (~np.isnan(clean.landmarks.numpy()[:, :, 0])).sum() == 120 // 3 * (4 + 5 + 3)


def test_object_centric_and_backgrounds():
    a = creatures(200, 64, object_centric=False, negatives=0.0, seed=1)
    b = creatures(200, 64, object_centric=True, negatives=0.0, seed=1)

    def spread(ds):
        bx = ds.boxes.numpy()
        return np.abs((bx[:, :2] + bx[:, 2:]) / 2 - 32).mean()

    assert spread(b) < 0.6 * spread(a)
    plain = creatures(8, 64, background="plain", seed=0).images
    photo = creatures(8, 64, background="photo", seed=0).images
    # plain backgrounds are flat up to the 0.03 pixel noise; photo crops are not
    corner_std = lambda x: x[:, :, :8, :8].std(dim=(2, 3)).mean().item()  # noqa: E731
    assert corner_std(plain) < 0.04 < corner_std(photo)
    assert not torch.equal(plain, photo)


def test_split_and_subset_work():
    ds = creatures(30, 32, seed=0)
    tr, va = ds.split(0.2, seed=0)
    assert len(tr) + len(va) == 30 and tr.part_masks.shape[0] == len(tr)
    assert tr.spec["generator"] == "creatures"


# ------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("kwargs,match", [
    (dict(size=48), "size"), (dict(size=0), "size"), (dict(n=0), "n must"), (dict(n=-3), "n must"),
    (dict(n=2.5), "n must"), (dict(categories=("bird", "dragon")), "dragon.*valid.*quadruped"),
    (dict(categories=()), "empty"), (dict(categories=("bird", "bird")), "unique"),
    (dict(background="sky"), "sky.*valid.*clutter"), (dict(negatives=1.5), "negatives"),
    (dict(negatives=float("nan")), "negatives"), (dict(occlusion=-0.1), "occlusion"),
    (dict(seed=-1), "seed"),
])
def test_bad_inputs(kwargs, match):
    args = dict(n=4, size=32)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        creatures(**args)
