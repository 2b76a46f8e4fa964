"""Text with planted key words: a sentiment corpus, plain sentences and templated sentences.

Serves paper 04 (Ma et al., ICML 2019, "Towards a deep and unified understanding of deep neural
models in NLP"; /work/shared/papers/04_information_discarding.md section 7):

* :func:`sentiment_corpus` -- the key-token sequences: neutral filler words (windows of a stream
  of plain narrative clauses, "the film follows a young woman who moves to the city ...") with
  1-3 planted key words at random positions. The label is the planted rule, exactly:
  ``label = 1 ("positive") iff #positive keys > #negative keys``; ties never occur (the majority
  count is drawn above k/2). The fillers contain no key word. Labels are balanced in expectation.
* :func:`plain_sentences` -- a few hundred varied plain English sentences (statements, questions,
  reported speech, subordinate clauses; capitalised, with punctuation) for the normalisation
  statistics of the MiniLM experiment (the spec's "~200 bundled sentences for r").
* :func:`templated_sentences` -- ("the movie was {adj}.", adj) pairs: the adjective is the
  planted key word of the MiniLM experiment.
* :func:`encode` / :func:`tokenize` -- map sentences to padded ids with a given vocabulary.

Vocabulary: ``vocab[0] == "<pad>"``, ``vocab[1] == "<unk>"``, then every filler and key word in
sorted order. It depends on no argument, so corpora of different sizes or seeds share ids.
Deviation from the spec's "vocabulary 50": the vocabulary here is ~110 real English words, so the
same sentences read naturally and can also be fed to a pretrained tokenizer.
"""
from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .types import TextSet

__all__ = ["sentiment_corpus", "plain_sentences", "templated_sentences", "encode", "tokenize",
           "corpus_vocab", "POSITIVE_WORDS", "NEGATIVE_WORDS"]

POSITIVE_WORDS = ("great", "wonderful", "excellent", "brilliant", "delightful", "superb", "charming",
                  "beautiful", "enjoyable", "moving")
NEGATIVE_WORDS = ("awful", "boring", "terrible", "dull", "poor", "tedious", "horrible", "bad",
                  "weak", "disappointing")

# Neutral narrative clauses for the filler stream: subject + verb phrase + object (+ tail).
_F_SUBJ = ["the film", "the story", "the movie", "the director", "a man", "a young woman", "the actors",
           "the plot", "the camera", "the music", "his father", "her friend", "the old teacher",
           "two brothers", "the family", "the crew"]
_F_VERB = ["was about", "follows", "shows", "describes", "moves to", "returns to", "meets", "talks about",
           "looks at", "walks through", "waits for", "works in", "travels to", "remembers", "visits",
           "leaves"]
_F_OBJ = ["a small town", "the city", "an old friend", "his family", "her brother", "the river", "a long journey",
          "the house", "the station", "a letter", "the school", "the farm", "the harbour", "a new job",
          "the hospital", "the village"]
_F_TAIL = ["", "", "in the winter", "after the war", "at night", "every morning", "with his dog",
           "for a few days", "during the summer", "near the sea", "and then", "while it rains",
           "who lives there", "on a train"]

# Plain-sentence grammar: (past, base) verbs whose past participle equals the past form.
_P_SUBJ = ["the old man", "a young woman", "my neighbour", "the teacher", "our team", "the children",
           "a small dog", "the farmer", "her brother", "the doctor", "the students", "a tall stranger",
           "the driver", "his sister", "the baker", "the committee"]
_P_VERB = [("opened", "open"), ("carried", "carry"), ("painted", "paint"), ("found", "find"),
           ("visited", "visit"), ("repaired", "repair"), ("cleaned", "clean"), ("watched", "watch"),
           ("described", "describe"), ("built", "build"), ("sold", "sell"), ("moved", "move"),
           ("checked", "check"), ("ordered", "order"), ("borrowed", "borrow"), ("measured", "measure")]
_P_OBJ = ["the front door", "a wooden box", "the kitchen window", "an old map", "the garden fence",
          "a blue bicycle", "the morning train", "a long letter", "the village church", "a heavy table",
          "the red car", "a paper bag", "the small boat", "the new bridge", "a glass of water",
          "the town library"]
_P_ADV = ["in the morning", "after lunch", "before the rain started", "on tuesday", "near the station",
          "during the summer", "at the end of the day", "with some care", "for the first time",
          "last week", "in the afternoon", "by the river"]
_P_TEMPLATES = [
    "{S} {V} {O} {A}.", "{A}, {s} {V} {O}.", "{S} {V} {O} and then {V2} {O2}.",
    "Did {s} {B} {O} {A}?", "{S} said that {s2} had {V} {O}.", "When {s} {V} {O}, {s2} {V2} {O2}.",
    "{S} will {B} {O} tomorrow.", "Why did {s} {B} {O}?", "{S} wanted to {B} {O}, but {s2} {V2} it first.",
    "After {s} {V} {O}, everyone went home.",
]
_ADJ_TEMPLATES = ["the movie was {adj}.", "the food was {adj}.", "the book is {adj}.", "it was a {adj} day.",
                  "what a {adj} performance!", "the service here is {adj}.", "i thought the ending was {adj}.",
                  "the weather was {adj} today."]
_TOKEN = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def tokenize(sentence: str) -> List[str]:
    """Lower-case word and punctuation tokens: "It's fine." -> ["it's", "fine", "."]."""
    if not isinstance(sentence, str):
        raise ValueError(f"expected a string, got {type(sentence).__name__}")
    return _TOKEN.findall(sentence.lower())


def _filler_words() -> List[str]:
    return sorted({w for group in (_F_SUBJ, _F_VERB, _F_OBJ, _F_TAIL) for phrase in group for w in phrase.split()})


def corpus_vocab() -> List[str]:
    """The fixed vocabulary of :func:`sentiment_corpus`: <pad>, <unk>, then sorted words."""
    return ["<pad>", "<unk>"] + sorted(set(_filler_words()) | set(POSITIVE_WORDS) | set(NEGATIVE_WORDS))


def _filler_stream(rng: np.random.Generator, clauses: int = 4000) -> List[str]:
    """A long neutral word stream: random clauses subject-verb-object(-tail), concatenated."""
    picks = [rng.integers(0, len(g), clauses) for g in (_F_SUBJ, _F_VERB, _F_OBJ, _F_TAIL)]
    out: List[str] = []
    for s, v, o, t in zip(*picks):  # per clause (strings), not per token of the corpus
        out.extend(f"{_F_SUBJ[s]} {_F_VERB[v]} {_F_OBJ[o]} {_F_TAIL[t]}".split())
    return out


def _int_pair(name, v, lo):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (v, v)
    if (not isinstance(v, (tuple, list)) or len(v) != 2
            or any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) for x in v)
            or not lo <= v[0] <= v[1]):
        raise ValueError(f"{name} must be an int or a pair (lo, hi) with {lo} <= lo <= hi, got {v!r}")
    return int(v[0]), int(v[1])


def sentiment_corpus(n: int = 2000, *, length: Union[int, Tuple[int, int]] = (8, 16),
                     n_keys: Union[int, Tuple[int, int]] = (1, 3), seed: int = 0) -> TextSet:
    """n sentences of ``length`` tokens (inclusive range) with ``n_keys`` planted key words each.

    ids (n, length[1]) padded with 0; mask True on tokens; labels 1 iff more positive than
    negative keys (never tied); ``key_words = {"positive": [...], "negative": [...]}``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    lo, hi = _int_pair("length", length, 1)
    klo, khi = _int_pair("n_keys", n_keys, 1)
    if khi > lo:
        raise ValueError(f"n_keys max ({khi}) must not exceed the minimum length ({lo})")
    n, seed = int(n), int(seed)
    vocab = corpus_vocab()
    index = {w: i for i, w in enumerate(vocab)}
    r_stream, r = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, 4]).spawn(2))
    stream = np.array([index[w] for w in _filler_stream(r_stream)])
    L = r.integers(lo, hi + 1, n)
    k = r.integers(klo, khi + 1, n)
    y = r.random(n) < 0.5
    major = k // 2 + 1 + np.floor(r.random(n) * (k - k // 2)).astype(int)  # uniform in (k/2, k]
    n_pos = np.where(y, major, k - major)
    pos = np.arange(hi)[None]
    ranks = np.argsort(np.argsort(np.where(pos < L[:, None], r.random((n, hi)), 2.0), 1), 1)
    is_pos, is_key = ranks < n_pos[:, None], ranks < k[:, None]
    start = r.integers(0, len(stream) - hi, n)
    fill_at = np.cumsum(~is_key, 1) - 1
    pos_ids = np.array([index[w] for w in POSITIVE_WORDS])[r.integers(0, len(POSITIVE_WORDS), (n, hi))]
    neg_ids = np.array([index[w] for w in NEGATIVE_WORDS])[r.integers(0, len(NEGATIVE_WORDS), (n, hi))]
    ids = np.where(is_pos, pos_ids, np.where(is_key, neg_ids, stream[start[:, None] + fill_at]))
    mask = pos < L[:, None]
    ids = np.where(mask, ids, 0)
    tokens = [[vocab[i] for i in row[:length_]] for row, length_ in zip(ids.tolist(), L.tolist())]
    spec = dict(generator="sentiment_corpus", version=1, n=n, length=[lo, hi], n_keys=[klo, khi], seed=seed)
    return TextSet(ids=torch.from_numpy(ids.astype(np.int64)), mask=torch.from_numpy(mask),
                   labels=torch.from_numpy(y.astype(np.int64)), tokens=tokens, vocab=vocab,
                   class_names=["negative", "positive"],
                   key_words={"positive": list(POSITIVE_WORDS), "negative": list(NEGATIVE_WORDS)}, spec=spec)


def plain_sentences(n: int = 300, seed: int = 0) -> List[str]:
    """n distinct plain English sentences from 10 templates (statements, questions, clauses)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 5000:
        raise ValueError(f"n must be an integer in [1, 5000], got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 5]))
    out, seen = [], set()
    while len(out) < n:  # the grammar has millions of sentences, so this ends after ~n draws
        t = _P_TEMPLATES[rng.integers(len(_P_TEMPLATES))]
        s, s2 = (_P_SUBJ[i] for i in rng.choice(len(_P_SUBJ), 2, replace=False))
        (v, b), (v2, _) = (_P_VERB[i] for i in rng.choice(len(_P_VERB), 2, replace=False))
        o, o2 = (_P_OBJ[i] for i in rng.choice(len(_P_OBJ), 2, replace=False))
        a = _P_ADV[rng.integers(len(_P_ADV))]
        text = t.format(S=s, s=s, s2=s2, V=v, V2=v2, B=b, O=o, O2=o2, A=a)
        text = text[0].upper() + text[1:]
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def templated_sentences(adjectives: Optional[Sequence[str]] = None) -> List[Tuple[str, str]]:
    """(sentence, adjective) pairs, one per template and adjective ("the movie was great.",
    "great"); default adjectives: the positive then the negative key words."""
    adjs = list(POSITIVE_WORDS + NEGATIVE_WORDS) if adjectives is None else list(adjectives)
    if not adjs or any(not isinstance(a, str) or not re.fullmatch(r"[A-Za-z][A-Za-z'-]*", a) for a in adjs):
        raise ValueError(f"adjectives must be a non-empty list of single words, got {adjectives!r}")
    return [(t.format(adj=a), a) for a in adjs for t in _ADJ_TEMPLATES]


def encode(sentences: Sequence[Union[str, Sequence[str]]], vocab: Sequence[str], *,
           max_len: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """ids (N, L) long padded with 0 and mask (N, L) bool for strings (see :func:`tokenize`) or
    token lists. Unknown tokens map to "<unk>" (an error if the vocabulary has none); sentences
    longer than ``max_len`` are truncated; L = ``max_len`` or the longest sentence."""
    if not vocab or vocab[0] != "<pad>":
        raise ValueError("vocab[0] must be '<pad>'")
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise ValueError(f"max_len must be a positive integer, got {max_len!r}")
    index = {w: i for i, w in enumerate(vocab)}
    unk = index.get("<unk>")
    toks = [tokenize(s) if isinstance(s, str) else list(s) for s in sentences]
    rows = []
    for t in toks:
        missing = [w for w in t if w not in index]
        if missing and unk is None:
            raise ValueError(f"tokens {missing[:5]} are not in the vocabulary, which has no '<unk>'")
        rows.append([index.get(w, unk) for w in t][:max_len])
    L = max_len if max_len is not None else max([len(r) for r in rows] + [1])
    ids = torch.zeros(len(rows), L, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    mask = torch.arange(L)[None] < torch.tensor([len(r) for r in rows], dtype=torch.long)[:, None]
    return ids, mask
