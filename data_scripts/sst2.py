"""SST-2 (GLUE) -> :class:`TextSet` (paper 04: word-level information discarding, SST-2 task).

Reads GLUE's ``SST-2/train.tsv`` and ``SST-2/dev.tsv`` (header ``sentence<TAB>label``, label 0 =
negative, 1 = positive; the text is already lower-cased and tokenised with spaces). GLUE's
``test.tsv`` has no labels and is not converted.

Output per split (``train``, ``dev``: GLUE's names): tokens = the whitespace-split sentence
(truncated to ``max_len``); vocabulary ``['<pad>', '<unk>', ...]`` built from the untruncated
sentences of the (possibly ``limit``-ed) train split, words with at least ``min_count`` occurrences sorted by decreasing
count then alphabetically; ids (N, L) padded with 0, unknown words -> 1; mask True on tokens;
L = ``max_len`` or, when 0, the longest sentence of the converted splits. ``key_words`` is empty
(real data has no planted words); class names ``['negative', 'positive']``.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch

from xnn_support.data.types import TextSet

from .common import Option, find_path, missing, pick, resolve_options

NAME = "sst2"
SPLITS = ("train", "dev")
OPTIONS = (
    Option("min_count", int, 1, "keep words seen at least this often in train", minimum=1),
    Option("max_len", int, 0, "truncate sentences to this many tokens (0 = longest)", minimum=0),
    Option("limit", int, 0, "at most this many sentences per split, seeded random (0 = all)",
           minimum=0),
    Option("seed", int, 0, "seed of --limit", minimum=0),
)


def read_tsv(path: Path) -> Tuple[List[str], np.ndarray]:
    """(sentences, labels) of a GLUE SST-2 tsv with header ``sentence<TAB>label``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].rstrip("\r").split("\t") != ["sentence", "label"]:
        raise ValueError(f"{path}: expected the header 'sentence<TAB>label'")
    sents, labels = [], []
    for i, ln in enumerate(lines[1:], start=2):
        if not ln.strip():
            continue
        parts = ln.rstrip("\r").rsplit("\t", 1)
        if len(parts) != 2 or parts[1].strip() not in ("0", "1"):
            raise ValueError(f"{path}:{i}: expected '<sentence>\\t<0|1>', got {ln[:60]!r}")
        sents.append(parts[0])
        labels.append(int(parts[1]))
    return sents, np.asarray(labels, dtype=np.int64)


def build_vocab(token_lists: List[List[str]], min_count: int) -> List[str]:
    counts = Counter(t for toks in token_lists for t in toks)
    words = sorted((w for w, c in counts.items() if c >= min_count and w not in ("<pad>", "<unk>")),
                   key=lambda w: (-counts[w], w))
    return ["<pad>", "<unk>"] + words


def encode(token_lists: List[List[str]], vocab: List[str], length: int):
    """(ids (N, L) long padded with 0, mask (N, L) bool); unknown words -> 1. Vectorised scatter."""
    index = {w: i for i, w in enumerate(vocab)}
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    flat = np.fromiter((index.get(w, 1) for toks in token_lists for w in toks), dtype=np.int64,
                       count=int(lengths.sum()))
    mask = np.arange(length)[None, :] < lengths[:, None]
    ids = np.zeros((len(token_lists), length), dtype=np.int64)
    ids[mask] = flat
    return torch.from_numpy(ids), torch.from_numpy(mask)


def convert(raw: Path, *, float_images: bool = True, source=None, **options) -> Tuple[dict, dict]:
    """Convert SST-2 under ``raw``; returns ({split: TextSet}, {split: extras}).
    ``float_images`` is ignored (no images)."""
    opts = resolve_options(OPTIONS, options)
    base = find_path(Path(raw), "SST-2", name=NAME, is_dir=True)
    data = {}
    for s in SPLITS:
        p = base / f"{s}.tsv"
        if not p.is_file():
            raise missing(NAME, f"file {p.name!r}", base)
        sents, labels = read_tsv(p)
        keep = pick(len(sents), opts["limit"], opts["seed"], s)
        data[s] = ([sents[i].split() for i in keep], labels[keep], keep)
    vocab = build_vocab(data["train"][0], opts["min_count"])     # before truncation
    if opts["max_len"]:
        data = {s: ([t[:opts["max_len"]] for t in toks], lab, keep)
                for s, (toks, lab, keep) in data.items()}
    longest = max((len(t) for d in data.values() for t in d[0]), default=0)
    length = opts["max_len"] or max(1, longest)
    out, extras = {}, {}
    for s, (toks, labels, keep) in data.items():
        ids, mask = encode(toks, vocab, length)
        out[s] = TextSet(ids=ids, mask=mask, labels=torch.from_numpy(labels), tokens=toks,
                         vocab=vocab, class_names=["negative", "positive"], key_words={},
                         spec={"source": NAME, "converter": "data_scripts.sst2", "version": 1,
                               "options": opts, "split": s, "n": len(toks),
                               "files": source or {}})
        extras[s] = {"rows": torch.as_tensor(keep, dtype=torch.long)}
    return out, extras
