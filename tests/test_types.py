"""Dataset containers: subsets, splits and fingerprints."""
import torch

from xnn_support.data.types import ImageSet, TextSet, fingerprint


def _img(seed):
    g = torch.Generator().manual_seed(seed)
    return ImageSet(images=torch.rand(10, 3, 8, 8, generator=g), labels=torch.arange(10) % 2, class_names=["a", "b"])


def test_split_is_stratified_deterministic_and_disjoint():
    ds = _img(0)
    tr, va = ds.split(0.2, seed=1)
    tr2, va2 = ds.split(0.2, seed=1)
    assert torch.equal(va.images, va2.images) and len(tr) + len(va) == 10
    assert sorted(va.labels.tolist()) == [0, 1]
    assert tr.class_names == ["a", "b"]


def test_fingerprints_of_handmade_subsets_differ():
    assert fingerprint(_img(0).subset([1, 2])) != fingerprint(_img(1).subset([1, 2]))
    assert fingerprint(_img(0).subset([1, 2])) == fingerprint(_img(0).subset([1, 2]))
    assert fingerprint(_img(0).subset([1, 2])) != fingerprint(_img(0).subset([1, 3]))


def test_textset_without_tokens_can_be_split():
    t = TextSet(ids=torch.zeros(4, 3, dtype=torch.long), mask=torch.ones(4, 3, dtype=torch.bool),
                labels=torch.tensor([0, 1, 0, 1]))
    tr, va = t.split(0.5)
    assert len(tr) == 2 and tr.tokens == []
