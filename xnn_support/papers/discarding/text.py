"""Word-wise information (Guan et al., ICML 2019) on the shared sigma engine; used by
:mod:`xnn_support.discarding` (which re-exports the public names).

Citation: Chaoyu Guan, Xiting Wang, Quanshi Zhang, Runjin Chen, Di He, Xing Xie, "Towards a Deep and
Unified Understanding of Deep Neural Models in NLP", ICML 2019 (official code
icml2019paper2428/Towards-A-Deep-and-Unified-Understanding-of-Deep-Neural-Models-in-NLP:Interpreter.py).

What is reproduced (spec 04 section 2.1): x~_i = x_i + sigma_i eps_i on the word embeddings,
L(sigma) = mean_j (Phi(x~)_j - Phi(x)_j)^2 / r_j^2 - rate * mean_i log(sigma_i / scale), sigma =
scale * sigmoid(rho). Small sigma_i: word i's information is kept by Phi; large: discarded.

* :func:`word_information` -- the Interpreter for one phi (official defaults: scale 0.5, rate 0.1,
  5000 Adam steps at lr 0.01, one noise sample; ``regularization`` = r_j, the std of Phi over a
  sample of inputs; without it the data term is mean(Delta^2) / mean(Phi(x)^2) as in the code).
* :func:`text_information` -- zoo text classifiers (``forward_embeddings``), many sentences x layers.
* :func:`minilm_information` / :func:`minilm_inputs` -- all-MiniLM-L6-v2 (a BertModel), perturbed
  after the embedding LayerNorm as the authors' BERT tutorial; Phi_l = the first l encoder layers
  (token states), run as a staircase; optional sentence-level Phi = normalised mean pooling.
* :func:`feature_std` -- r_l: population std over a sample of sentences of token-averaged states
  (the tutorial's ``regular.json``), clamped >= 1e-6.
* :func:`key_word_auc` -- planted-word selection: AUC of -sigma for key words vs fillers.

Deviations: the default read-out is the tail average of sigma (the code keeps the lowest noisy
loss, a biased snapshot: ``readout="snapshot"``); rho starts from a seeded N(0, 1) draw; padding is
masked out of both terms (sum over real tokens only); ``scale`` for the zoo models defaults to 10 x
the std of their embedding weights (the code's docstring recommendation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ... import sigma as _sigma
from ...sigma import AxisUnits, CallableFeatures, ModuleFeatures, SigmaResult, StagedFeatures, optimize_sigma
from ...core import validate as V
from ...core.utils import device_of
import math
from ...data import templated_sentences
from ...data.text import NEGATIVE_WORDS, POSITIVE_WORDS

__all__ = ["WordInfo", "word_information", "text_information", "minilm_information", "minilm_inputs",
           "minilm_features", "feature_std", "key_word_auc", "MiniLMInputs", "key_mask", "auc_per_layer",
           "selection_depth", "minilm_pairs", "icml19_linear_toy", "TOY_OFFICIAL", "TOY_NLP_RECIPES",
           "relative_log_sigma"]


@dataclass
class WordInfo:
    """Word-level result. ``sigma`` / ``entropy`` (per word, nats per embedding dimension):
    (n,) for one sentence and one phi, (B, n) for a batch, (L, B, n) from the multi-layer functions
    (NaN on padding); ``names`` the layers; ``result`` the engine's :class:`SigmaResult`."""
    sigma: torch.Tensor
    entropy: torch.Tensor
    names: List[str]
    result: SigmaResult = field(repr=False)
    mask: Optional[torch.Tensor] = None
    tokens: Optional[List[List[str]]] = None


def _token_masks(mask: Optional[torch.Tensor]):
    """feature_masks callable: token-level features (B, n, ...) get the padding mask."""
    if mask is None:
        return None

    def fm(l, f, index):
        m = mask.to(f.device)[index.to(f.device)]
        if f.dim() >= 3 and f.shape[1] <= m.shape[1] and bool(m[:, f.shape[1]:].sum() == 0):
            m = m[:, :f.shape[1]]                   # token-level features (padding may have been cut)
            return m.reshape(*m.shape, *([1] * (f.dim() - 2)))
        return None
    return fm


def _check_regularization(r, dtype=None) -> torch.Tensor:
    """r_j as a tensor: finite and >= 0 (a std; 0 for a dead feature is clamped to 1e-6 as the code)."""
    try:
        t = torch.as_tensor(r, dtype=dtype)
    except (TypeError, ValueError, RuntimeError):
        raise V.fail("regularization", "a number or tensor of feature stds", V.Shown(type(r).__name__),
                     "pass the std of each output element (feature_std) or None") from None
    if not t.is_floating_point():
        t = t.float() if dtype is None else t.to(dtype)
    if t.numel() == 0 or not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        raise V.fail("regularization", "finite feature stds >= 0",
                     V.Shown(f"min {float(t.min()):.3g}" if t.numel() else "an empty tensor"),
                     "pass the std of each output element (feature_std) or None (mean phi(x)^2)")
    return t


def word_information(phi: Callable, x: torch.Tensor, *, rate: float = 0.1, scale: float = 0.5, steps: int = 5000,
                     lr: float = 0.01, regularization=None, seed: int = 0, mask: Optional[torch.Tensor] = None,
                     samples: int = 1, readout: str = "tail", batch_size: Optional[int] = None,
                     progress: bool = False, **overrides) -> WordInfo:
    """ICML19 Interpreter: per-word sigma for ``phi`` on embeddings ``x`` (n, K) or (B, n, K).

    ``phi`` maps a batch of (noisy) embeddings (b, n, K) to features (b, ...); it must be
    differentiable. ``regularization``: r_j (std of phi's output elements, broadcastable to one
    input's features) or None (normalise by mean phi(x)^2). ``mask`` (B, n) marks real tokens for
    padded batches. Other engine options (``sigma_init``, ``lr_schedule``, ...) go in ``overrides``.
    Returns :class:`WordInfo` with ``.sigma`` (n,) or (B, n).
    """
    if not callable(phi):
        raise ValueError(f"phi must be callable, got {type(phi).__name__}")
    if not torch.is_tensor(x) or x.dim() not in (2, 3):
        raise ValueError(f"x must be word embeddings (n, K) or (B, n, K), got "
                         f"{tuple(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    single = x.dim() == 2
    xb = x.unsqueeze(0) if single else x
    if mask is not None and single:
        mask = mask.reshape(1, -1)
    if regularization is None:
        sf = "power"
    else:
        sf = _check_regularization(regularization, xb.dtype).clamp_min(1e-6).pow(2)
    cfg = _sigma.config("icml19", lam=rate, scale=scale, steps=steps, lr=lr, samples=samples, readout=readout,
                        sigma_f=sf, **overrides)
    dev = xb.device
    res = optimize_sigma(xb, AxisUnits(mask), CallableFeatures([phi], ["phi"], device=dev), config=cfg, seed=seed,
                         batch_size=batch_size, feature_masks=_token_masks(mask), progress=progress)
    s, h = res.sigma[0], res.entropy_map[0]
    return WordInfo(sigma=s[0] if single else s, entropy=h[0] if single else h, names=res.names, result=res,
                    mask=None if mask is None else mask.cpu())


def _embedding_std(model: nn.Module) -> float:
    emb = getattr(model, "embedding", None)
    if not isinstance(emb, nn.Embedding):
        raise ValueError(f"{type(model).__name__} has no nn.Embedding attribute 'embedding'; pass scale=")
    w = emb.weight.detach()
    if emb.padding_idx is not None:
        w = torch.cat([w[:emb.padding_idx], w[emb.padding_idx + 1:]])
    return float(w.std())


def feature_std(features, x: torch.Tensor, mask: Optional[torch.Tensor] = None, *, token_average: bool = True,
                batch_size: int = 64) -> List[torch.Tensor]:
    """r_l per layer: population std (ddof 0) over the sample ``x`` of each layer's features, after
    averaging token-level features over real tokens (``token_average``); clamped >= 1e-6."""
    outs: List[List[torch.Tensor]] = [[] for _ in features.names]
    dev = features.device
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            xb = x[s:s + batch_size].to(dev)
            idx = torch.arange(s, s + xb.shape[0], device=dev)
            for l, f in enumerate(features([xb] * len(features.names), idx)):
                if token_average and mask is not None and f.dim() >= 3 and f.shape[1] == mask.shape[1]:
                    m = mask[s:s + xb.shape[0]].to(dev, f.dtype).reshape(*f.shape[:2], *([1] * (f.dim() - 2)))
                    f = (f * m).sum(1) / m.sum(1)
                elif token_average and f.dim() >= 3:
                    f = f.mean(1)
                outs[l].append(f.cpu())
    return [torch.cat(o).std(0, unbiased=False).clamp_min(1e-6) for o in outs]


def _text_features(model: nn.Module, layers, mask_d: torch.Tensor) -> ModuleFeatures:
    def call(m, x, index):
        return m.forward_embeddings(x, mask_d[index, :x.shape[1]])
    return ModuleFeatures(model, layers, call=call)


def text_information(model: nn.Module, ids: torch.Tensor, mask: Optional[torch.Tensor], layers, *,
                     rate: float = 0.1, scale: Optional[float] = None, steps: int = 300, lr: float = 0.05,
                     regularization: Union[str, None, Sequence[torch.Tensor]] = "auto",
                     reference: Optional[tuple] = None, seed: int = 0, samples: int = 4, readout: str = "tail",
                     batch_size: Optional[int] = None, progress: bool = False, **overrides) -> WordInfo:
    """Word-level sigma of a zoo text classifier for B sentences x ``layers`` (e.g. ``"layers.0"``,
    ``"layers.1"``, ``"pool"``, ``"classifier"``) in one optimisation; ``.sigma`` is (L, B, n).

    ``regularization``: ``"auto"`` = :func:`feature_std` of each layer over ``reference`` = (ids, mask)
    (default: the sentences themselves), None (mean phi^2), or a list of r tensors per layer.
    ``scale`` default: 10 x the std of the embedding weights. Defaults differ from the official 5000
    steps at lr 0.01 (see the module docstring); the ICML19 loss and parameterisation are kept.
    """
    if not hasattr(model, "forward_embeddings"):
        raise ValueError(f"{type(model).__name__} has no forward_embeddings(emb, mask); use word_information")
    if not torch.is_tensor(ids) or ids.dim() != 2 or ids.shape[0] == 0:
        raise ValueError(f"ids must be a non-empty (B, n) tensor, got "
                         f"{tuple(ids.shape) if torch.is_tensor(ids) else type(ids).__name__}")
    dev = device_of(model)
    mask = (ids != getattr(model, "pad_idx", 0)) if mask is None else mask.bool()
    mask_d = mask.to(dev)
    feats = _text_features(model, layers, mask_d)
    with torch.no_grad():
        emb = model.embedding(ids.to(dev)).detach()
    if isinstance(regularization, str):
        if regularization != "auto":
            raise ValueError(f"regularization must be 'auto', None or a list of tensors, got {regularization!r}")
        r_ids, r_mask = reference if reference is not None else (ids, mask)
        r_mask = (r_ids != getattr(model, "pad_idx", 0)) if r_mask is None else r_mask.bool()
        with torch.no_grad():
            r_emb = model.embedding(r_ids.to(dev))
        rs = feature_std(_text_features(model, layers, r_mask.to(dev)), r_emb, r_mask)
        sf = [r.pow(2) for r in rs]
    elif regularization is None:
        sf = "power"
    else:
        sf = [_check_regularization(r).clamp_min(1e-6).pow(2) for r in regularization]
    scale = 10 * _embedding_std(model) if scale is None else float(scale)
    cfg = _sigma.config("icml19", lam=rate, scale=scale, steps=steps, lr=lr, samples=samples, readout=readout,
                        sigma_f=sf, **overrides)
    res = optimize_sigma(emb, AxisUnits(mask_d), feats, config=cfg, seed=seed, batch_size=batch_size,
                         feature_masks=_token_masks(mask_d), progress=progress)
    return WordInfo(sigma=res.sigma, entropy=res.entropy_map, names=res.names, result=res, mask=mask.cpu())


# ------------------------------------------------------------------------------------ MiniLM
@dataclass
class MiniLMInputs:
    """Tokenised sentences for :func:`minilm_information`: ``emb`` (B, n, 384) the embedding
    LayerNorm output (where the noise goes), ``mask`` (B, n) bool, ``tokens`` word pieces."""
    emb: torch.Tensor
    mask: torch.Tensor
    tokens: List[List[str]]
    ids: torch.Tensor


def _bert(st):
    bert = st[0].auto_model if hasattr(st, "__getitem__") and hasattr(st[0], "auto_model") else st
    if not hasattr(bert, "encoder") or not hasattr(bert, "embeddings"):
        raise ValueError("expected a sentence-transformers model (st[0].auto_model is a BertModel) or a BertModel")
    return bert


def minilm_inputs(st, sentences: Sequence[str], tokenizer=None) -> MiniLMInputs:
    """Tokenise ``sentences`` and compute the (clean) embedding-LayerNorm output of MiniLM."""
    if isinstance(sentences, str) or not sentences:
        raise ValueError("sentences must be a non-empty list of strings")
    tok = tokenizer if tokenizer is not None else st.tokenizer
    bert = _bert(st)
    enc = tok(list(sentences), padding=True, return_tensors="pt")
    dev = device_of(bert)
    bert.eval()
    with torch.no_grad():
        emb = bert.embeddings(input_ids=enc["input_ids"].to(dev), token_type_ids=enc.get("token_type_ids").to(dev)
                              if enc.get("token_type_ids") is not None else None)
    mask = enc["attention_mask"].bool()
    tokens = [tok.convert_ids_to_tokens(row[m]) for row, m in zip(enc["input_ids"], mask)]
    return MiniLMInputs(emb=emb.detach(), mask=mask, tokens=tokens, ids=enc["input_ids"])


def minilm_features(st, mask: torch.Tensor, depths: Sequence[int] = (1, 2, 3, 4, 5, 6), *,
                    sentence: bool = False) -> StagedFeatures:
    """Staircase features of MiniLM's encoder: token states after ``depths`` layers, plus (with
    ``sentence=True``) the normalised mean-pooled sentence embedding after the last layer."""
    bert = _bert(st)
    dev = device_of(bert)
    mask_d = mask.to(dev).bool()
    layers = list(bert.encoder.layer)

    def make(layer):
        def stage(h, idx):
            out = layer(h, mask_d[idx, :h.shape[1]][:, None, None, :])
            return out[0] if isinstance(out, tuple) else out
        return stage

    def pool(h, idx):
        m = mask_d[idx, :h.shape[1]].unsqueeze(-1).to(h.dtype)
        v = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(v, dim=-1)

    depths = list(depths)
    names = [f"layer{d}" for d in depths]
    heads = [None] * len(depths)
    if sentence:
        depths.append(len(layers))
        names.append("sentence")
        heads.append(pool)
    feats = StagedFeatures([make(lay) for lay in layers], depths, names, heads=heads, device=dev)
    feats.model = bert
    return feats


def minilm_information(st, inputs: MiniLMInputs, *, depths: Sequence[int] = (1, 2, 3, 4, 5, 6),
                       sentence: bool = False, reference: Optional[MiniLMInputs] = None, rate: float = 0.1,
                       scale: float = 0.5, steps: int = 300, lr: float = 0.05, seed: int = 0, samples: int = 1,
                       readout: str = "tail", batch_size: Optional[int] = None, progress: bool = False,
                       **overrides) -> WordInfo:
    """Word-level sigma of all-MiniLM-L6-v2 for every sentence of ``inputs`` and every depth, in one
    staircase optimisation; ``r_l`` from :func:`feature_std` over ``reference`` (default: the inputs).
    ``.sigma`` is (L, B, n) with NaN on padding."""
    for p in _bert(st).parameters():
        p.requires_grad_(False)
    feats = minilm_features(st, inputs.mask, depths, sentence=sentence)
    ref = reference if reference is not None else inputs
    rs = feature_std(minilm_features(st, ref.mask, depths, sentence=sentence), ref.emb, ref.mask)
    cfg = _sigma.config("icml19", lam=rate, scale=scale, steps=steps, lr=lr, samples=samples, readout=readout,
                        sigma_f=[r.pow(2) for r in rs], **overrides)
    res = optimize_sigma(inputs.emb, AxisUnits(inputs.mask), feats, config=cfg, seed=seed, batch_size=batch_size,
                         feature_masks=_token_masks(inputs.mask.to(feats.device)), progress=progress)
    return WordInfo(sigma=res.sigma, entropy=res.entropy_map, names=res.names, result=res, mask=inputs.mask,
                    tokens=inputs.tokens)


# ------------------------------------------------------------------------------------ metrics
def key_word_auc(sigma: torch.Tensor, is_key: torch.Tensor, mask: Optional[torch.Tensor] = None) -> float:
    """Probability that a random key word has a smaller sigma than a random filler word of the same
    sentence (AUC of -sigma, ties count 1/2), pooled over sentences; NaN if no sentence has both."""
    sigma, is_key = torch.as_tensor(sigma, dtype=torch.float64), torch.as_tensor(is_key).bool()
    if sigma.dim() == 1:
        sigma, is_key = sigma[None], is_key[None]
        mask = None if mask is None else torch.as_tensor(mask)[None]
    valid = ~torch.isnan(sigma) if mask is None else torch.as_tensor(mask).bool() & ~torch.isnan(sigma)
    wins, pairs = 0.0, 0
    for s, k, v in zip(sigma, is_key, valid):
        a, b = s[k & v], s[~k & v]
        if a.numel() and b.numel():
            d = a[:, None] - b[None, :]
            wins += float((d < 0).sum()) + 0.5 * float((d == 0).sum())
            pairs += d.numel()
    return wins / pairs if pairs else float("nan")


def key_mask(tokens: Sequence[Sequence[str]], keys, n: Optional[int] = None) -> torch.Tensor:
    """(B, n) bool: True where a token is a planted key word (``keys``: a set of words, or one
    word per sentence). ``n`` defaults to the longest sentence."""
    n = max(len(t) for t in tokens) if n is None else n
    out = torch.zeros(len(tokens), n, dtype=torch.bool)
    for i, toks in enumerate(tokens):
        k = {keys[i]} if isinstance(keys, (list, tuple)) else set(keys)
        for j, w in enumerate(toks[:n]):
            out[i, j] = w in k
    return out


def auc_per_layer(info: WordInfo, is_key: torch.Tensor, exclude: Optional[torch.Tensor] = None) -> List[float]:
    """:func:`key_word_auc` of every layer of a multi-layer :class:`WordInfo` (sigma (L, B, n));
    ``exclude`` (B, n) bool drops tokens (e.g. [CLS]/[SEP]) from both groups."""
    valid = ~torch.isnan(info.sigma[0])
    if exclude is not None:
        valid &= ~exclude
    return [key_word_auc(s, is_key, valid) for s in info.sigma]


def selection_depth(names: Sequence[str], aucs: Sequence[float], threshold: float = 0.75) -> str:
    """The first layer whose key-word AUC reaches ``threshold`` ("none" if no layer does)."""
    return next((n for n, a in zip(names, aucs) if a == a and a >= threshold), "none")


def minilm_pairs(n: int, tokenizer=None) -> List[tuple]:
    """n (sentence, adjective) pairs from :func:`xnn_support.data.templated_sentences`, one template
    after the other with a new adjective each time; adjectives that the tokenizer splits into
    several word pieces are skipped (the key word must be one token)."""

    adjs = [a for a in POSITIVE_WORDS + NEGATIVE_WORDS
            if tokenizer is None or len(tokenizer.tokenize(a)) == 1]
    pairs = templated_sentences(adjs)
    n_t = len(pairs) // len(adjs)
    return [pairs[(i % len(adjs)) * n_t + i % n_t] for i in range(n)]


# Published outputs for the authors' linear toy (spec 04 section 8): official repo and nlp-recipes.
TOY_OFFICIAL = [0.00315634, 0.00181308, 0.00633237, 0.00174878, 0.0030807]
TOY_NLP_RECIPES = [0.00316059, 0.00158621, 0.00629779, 0.00158636, 0.0030826]


def icml19_linear_toy(*, steps: int = 5000, lr: float = 0.5, samples: int = 1, seed: int = 0) -> Dict[str, torch.Tensor]:
    """The authors' toy (Torturial.ipynb): Phi(x) = W x with W = [10, 20, 5, -20, -10], x ~ randn(5, 256)/100,
    r from 100 random inputs, scale 1, rate 0.1, official init (rho ~ N(0, 1)). Returns the closed form
    r_eff sqrt(rate / 2n) / |w_i|, our read-outs (tail, final, snapshot) and the published outputs."""

    w = torch.tensor([10.0, 20.0, 5.0, -20.0, -10.0])
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 256, generator=g) / 100

    def phi(e):
        return (w.view(1, 5, 1) * e).sum(1)
    r = phi(torch.randn(100, 5, 256, generator=g) / 100).std(0, unbiased=False)
    closed = r.pow(-2).mean().pow(-0.5) * math.sqrt(0.1 / (2 * 5)) / w.abs()
    info = word_information(phi, x, regularization=r, scale=1.0, rate=0.1, steps=steps, lr=lr, samples=samples,
                            seed=seed)
    out = {"closed form": closed}
    for k in ("tail", "final", "snapshot"):
        out[f"ours ({k})"] = info.result.use(k).sigma[0, 0]
    out["official repo"] = torch.tensor(TOY_OFFICIAL)
    out["nlp-recipes"] = torch.tensor(TOY_NLP_RECIPES)
    return out


def relative_log_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """log sigma minus its mean over the real words of each layer (..., n): which words a layer keeps
    relative to the others, for heat-maps whose layers differ in overall level (NaN stays NaN)."""
    ls = torch.as_tensor(sigma).log()
    return ls - ls.nanmean(-1, keepdim=True)
