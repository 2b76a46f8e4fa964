"""Tests for xnn_support.data.faces (concept_faces, edit_faces, render_faces)."""
import numpy as np
import pytest
import torch

from xnn_support.data.faces import (DEFAULT_FACE_WEIGHTS, FACE_ATTRIBUTES, ConceptFaceSet,
                                    concept_faces, edit_faces, render_faces)
from xnn_support.data.types import FaceSet


@pytest.fixture(scope="module")
def faces():
    return concept_faces(600, 32, seed=3)


def test_shapes_and_types(faces):
    n, a = 600, len(FACE_ATTRIBUTES)
    assert isinstance(faces, FaceSet) and len(faces) == n
    assert faces.images.shape == (n, 3, 32, 32) and faces.images.dtype == torch.float32
    assert 0 <= faces.images.min() and faces.images.max() <= 1
    assert faces.attributes.shape == (n, a) and set(faces.attributes.unique().tolist()) == {0.0, 1.0}
    assert faces.region_masks.shape == (n, a, 32, 32) and faces.region_masks.dtype == torch.bool
    assert faces.weights.shape == (a,) and faces.weights.dtype == torch.float32
    assert faces.labels.dtype == torch.long and torch.equal(faces.labels, (faces.target > 0).long())
    assert 0.3 < faces.labels.float().mean() < 0.7  # bias centres the target
    assert faces.attribute_names == list(FACE_ATTRIBUTES)
    assert torch.allclose(faces.weights, torch.tensor([DEFAULT_FACE_WEIGHTS[k] for k in FACE_ATTRIBUTES]))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_masks_follow_attributes(size):
    ds = concept_faces(80, size, seed=1)
    present = ds.region_masks.flatten(2).any(-1)
    # a mask is non-empty exactly where the attribute is present, empty where absent
    assert torch.equal(present, ds.attributes.bool())
    # masks are visible drawn pixels: at least a few pixels each
    counts = ds.region_masks.flatten(2).sum(-1)[ds.attributes.bool()]
    assert counts.min() >= 2


def test_least_squares_recovers_planted_weights():
    ds = concept_faces(3000, 32, noise=0.1, seed=0)
    X = torch.cat([torch.ones(len(ds), 1), ds.attributes], 1).double()
    coef = torch.linalg.lstsq(X, ds.target.double()[:, None]).solution[:, 0]
    assert abs(coef[0].item() - ds.bias) < 0.03
    assert torch.allclose(coef[1:].float(), ds.weights, atol=0.03)
    resid = ds.target.double() - X @ coef
    assert abs(resid.std().item() - 0.1) < 0.01


def test_custom_weights_and_subset_of_attributes():
    names = ["lipstick", "rosy_cheeks", "hat"]
    ds = concept_faces(50, 32, attributes=names, weights={"hat": -2.0}, noise=0.0, seed=2)
    assert ds.attribute_names == names and ds.attributes.shape == (50, 3)
    planted = [DEFAULT_FACE_WEIGHTS["lipstick"], DEFAULT_FACE_WEIGHTS["rosy_cheeks"], -2.0]
    assert torch.allclose(ds.weights, torch.tensor(planted))
    assert torch.allclose(ds.target, ds.bias + ds.attributes @ ds.weights, atol=1e-5)
    ds2 = concept_faces(50, 32, attributes=names, weights=[1.0, 2.0, 3.0], noise=0.0, seed=2)
    assert ds2.weights.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("rate", [0.9, 0.2])
def test_cooccurrence_rate(rate):
    ds = concept_faces(4000, 32, cooccurrence={("lipstick", "rosy_cheeks"): rate}, seed=5)
    lip = ds.attributes[:, FACE_ATTRIBUTES.index("lipstick")].bool()
    cheeks = ds.attributes[:, FACE_ATTRIBUTES.index("rosy_cheeks")]
    assert abs(cheeks[lip].mean().item() - rate) < 0.03
    assert abs(cheeks[~lip].mean().item() - (1 - rate)) < 0.03
    # identities and noise streams do not depend on the coupling
    base = concept_faces(4000, 32, seed=5)
    assert torch.equal(base.latents, ds.latents)
    others = [i for i in range(len(FACE_ATTRIBUTES)) if i != FACE_ATTRIBUTES.index("rosy_cheeks")]
    assert torch.equal(base.attributes[:, others], ds.attributes[:, others])


def test_independent_attributes_without_cooccurrence():
    ds = concept_faces(4000, 32, seed=5)
    lip = ds.attributes[:, 1].bool()
    assert abs(ds.attributes[lip, 2].mean() - ds.attributes[~lip, 2].mean()) < 0.05


def test_determinism():
    a, b = concept_faces(40, 64, seed=7), concept_faces(40, 64, seed=7)
    for f in ("images", "attributes", "region_masks", "target", "labels", "latents"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert a.spec == b.spec
    c = concept_faces(40, 64, seed=8)
    assert not torch.equal(a.images, c.images)


def test_edit_faces_pastes_and_masks_cheeks(faces):
    k = FACE_ATTRIBUTES.index("rosy_cheeks")
    without = torch.nonzero(faces.attributes[:, k] == 0).flatten()[:5]
    pasted = edit_faces(faces, without, set={"rosy_cheeks": 1})
    assert isinstance(pasted, ConceptFaceSet) and len(pasted) == 5
    assert pasted.attributes[:, k].eq(1).all() and pasted.region_masks[:, k].flatten(1).any(1).all()
    # pixels change only inside the pasted cheek regions
    diff = (pasted.images - faces.images[without]).abs().sum(1) > 0
    assert diff.any() and not (diff & ~pasted.region_masks[:, k]).any()
    # target moves by exactly the cheek weight (same noise)
    assert torch.allclose(pasted.target - faces.target[without], faces.weights[k].expand(5), atol=1e-5)
    back = edit_faces(pasted, None, set={"rosy_cheeks": 0})
    assert torch.equal(back.images, faces.images[without])
    assert torch.allclose(back.target, faces.target[without], atol=1e-5)


def test_edit_survives_split(faces):
    _, val = faces.split(0.2, seed=0)
    same = edit_faces(val, [0, 1], set={})
    assert torch.equal(same.images, val.images[:2])
    assert torch.equal(same.region_masks, val.region_masks[:2])


def test_render_faces_matches_generator(faces):
    imgs, masks = render_faces(faces.latents[:3], faces.attributes[:3], size=32)
    assert torch.equal(imgs, faces.images[:3]) and torch.equal(masks, faces.region_masks[:3])


@pytest.mark.parametrize("kwargs", [
    dict(n=0), dict(n=-5), dict(size=48), dict(noise=-0.1), dict(noise=float("nan")),
    dict(attributes=["lipstick", "wings"]), dict(attributes=["hat", "hat"]), dict(seed=-1),
    dict(weights=[1.0, 2.0]), dict(weights={"lipstick": float("nan")}),
    dict(cooccurrence={("lipstick", "rosy_cheeks"): 1.5}),
    dict(cooccurrence={("lipstick", "lipstick"): 0.9}),
    dict(cooccurrence={("lipstick", "rosy_cheeks"): 0.9, ("hat", "rosy_cheeks"): 0.9}),
    dict(attributes=["hat"], cooccurrence={("lipstick", "hat"): 0.9}),
    dict(prevalence=1.5),
])
def test_bad_inputs(kwargs):
    kw = dict(n=4, size=32)
    kw.update(kwargs)
    with pytest.raises(ValueError):
        concept_faces(**kw)


def test_bad_edits(faces):
    with pytest.raises(ValueError):
        edit_faces(faces, [0], set={"wings": 1})
    with pytest.raises(ValueError):
        edit_faces(faces, [0], set={"hat": 2})
    plain = FaceSet(images=faces.images[:2], attributes=faces.attributes[:2])
    with pytest.raises(ValueError):
        edit_faces(plain, [0], set={"hat": 1})
    with pytest.raises(ValueError):
        render_faces(np.zeros((2, 3)), np.zeros((2, 12)))
