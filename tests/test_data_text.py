"""Tests for xnn_support.data.text (sentiment_corpus, plain_sentences, templated_sentences, encode)."""
import pytest
import torch

from xnn_support.data.text import (NEGATIVE_WORDS, POSITIVE_WORDS, corpus_vocab, encode, plain_sentences,
                                   sentiment_corpus, templated_sentences, tokenize)
from xnn_support.data.types import TextSet


@pytest.fixture(scope="module")
def corpus():
    return sentiment_corpus(1500, length=(6, 12), n_keys=(1, 4), seed=2)


def test_layout(corpus):
    assert isinstance(corpus, TextSet) and len(corpus) == 1500
    assert corpus.ids.shape == corpus.mask.shape == (1500, 12) and corpus.ids.dtype == torch.long
    assert corpus.vocab[0] == "<pad>" and corpus.vocab == corpus_vocab()
    assert corpus.class_names == ["negative", "positive"]
    assert corpus.key_words == {"positive": list(POSITIVE_WORDS), "negative": list(NEGATIVE_WORDS)}


def test_labels_follow_planted_rule(corpus):
    pos, neg = set(POSITIVE_WORDS), set(NEGATIVE_WORDS)
    n_keys = []
    for toks, y in zip(corpus.tokens, corpus.labels.tolist()):
        p, q = sum(t in pos for t in toks), sum(t in neg for t in toks)
        assert p != q and y == int(p > q)
        n_keys.append(p + q)
    assert set(n_keys) == {1, 2, 3, 4}
    assert 0.45 < corpus.labels.float().mean() < 0.55


def test_padding_and_mask_consistent(corpus):
    lengths = corpus.mask.sum(1)
    assert lengths.min() >= 6 and lengths.max() <= 12 and set(lengths.tolist()) == set(range(6, 13))
    assert torch.equal(corpus.mask, torch.arange(12)[None] < lengths[:, None])  # a prefix
    assert (corpus.ids[~corpus.mask] == 0).all() and (corpus.ids[corpus.mask] > 1).all()
    assert [len(t) for t in corpus.tokens] == lengths.tolist()
    assert all(corpus.vocab[i] == t for row, toks in zip(corpus.ids.tolist(), corpus.tokens)
               for i, t in zip(row, toks))
    ids, mask = encode(corpus.tokens[:50], corpus.vocab, max_len=12)
    assert torch.equal(ids, corpus.ids[:50]) and torch.equal(mask, corpus.mask[:50])


def test_fillers_are_neutral():
    keys = set(POSITIVE_WORDS) | set(NEGATIVE_WORDS)
    ds = sentiment_corpus(300, n_keys=1, seed=0)
    assert all(sum(t in keys for t in toks) == 1 for toks in ds.tokens)


def test_determinism():
    a, b, c = sentiment_corpus(200, seed=1), sentiment_corpus(200, seed=1), sentiment_corpus(200, seed=2)
    assert torch.equal(a.ids, b.ids) and a.tokens == b.tokens and a.spec == b.spec
    assert not torch.equal(a.ids, c.ids)
    assert plain_sentences(50, seed=4) == plain_sentences(50, seed=4) != plain_sentences(50, seed=5)


def test_plain_sentences():
    s = plain_sentences(300)
    assert len(s) == 300 == len(set(s))
    assert all(x[0].isupper() and x[-1] in ".?" for x in s)
    assert sum(x.endswith("?") for x in s) > 20 and sum("," in x for x in s) > 30
    keys = set(POSITIVE_WORDS) | set(NEGATIVE_WORDS)
    assert not any(keys & set(tokenize(x)) for x in s)


def test_templated_sentences():
    pairs = templated_sentences()
    assert ("the movie was great.", "great") in pairs
    assert all(adj in tokenize(sent) for sent, adj in pairs)
    assert {a for _, a in pairs} == set(POSITIVE_WORDS + NEGATIVE_WORDS)
    assert {a for _, a in templated_sentences(["red"])} == {"red"}


def test_encode_strings():
    vocab = corpus_vocab()
    ids, mask = encode(["The movie was great!", "", "zzz"], vocab)
    assert ids.shape == (3, 5) and mask.sum(1).tolist() == [5, 0, 1]
    assert [vocab[i] for i in ids[0].tolist()] == ["the", "movie", "was", "great", "<unk>"]  # "!" is unknown
    assert ids[2, 0].item() == vocab.index("<unk>") and ids[1].eq(0).all()
    assert tokenize("It's fine.") == ["it's", "fine", "."]
    assert encode(["a b c d"], vocab, max_len=2)[0].shape == (1, 2)


@pytest.mark.parametrize("call", [
    lambda: sentiment_corpus(0), lambda: sentiment_corpus(5, length=(8, 4)), lambda: sentiment_corpus(5, length=0),
    lambda: sentiment_corpus(5, n_keys=(0, 2)), lambda: sentiment_corpus(5, length=(2, 4), n_keys=(1, 3)),
    lambda: sentiment_corpus(5, seed=-1), lambda: sentiment_corpus(5, length=(1.5, 4)),
    lambda: plain_sentences(0), lambda: plain_sentences(10 ** 6), lambda: templated_sentences([]),
    lambda: templated_sentences(["two words"]), lambda: encode(["a"], ["a", "b"]),
    lambda: encode(["zzz"], ["<pad>", "a"]), lambda: encode(["a"], ["<pad>", "a"], max_len=0),
])
def test_bad_inputs(call):
    with pytest.raises(ValueError):
        call()
