"""Small text classifiers (CNN, LSTM, Transformer) for word-level information (paper 04, ICML19).

Every model maps token ids ``(B, L)`` (long, padded with ``pad_idx`` = 0) and an optional mask
``(B, L)`` bool (True on real tokens; default ``ids != pad_idx``) to logits ``(B, num_classes)``.
They share one layout so word-level methods treat them alike::

    embedding       nn.Embedding(vocab_size, embed_dim): perturb its output
    layers.0 .. k   token-level layers, each (B, L, D) -> (B, L, D'); padded positions are zeroed
    pool            masked pooling over tokens -> (B, D)  (max for CNN/LSTM, mean for Transformer)
    classifier      Linear -> logits

``forward_embeddings(emb, mask=None)`` runs the network from word embeddings ``(B, L, E)``, so a
method can add noise to ``model.embedding(ids)`` and read any ``layers.i`` output with
:func:`xnn_support.capture` (the "first l layers" of Ma et al.'s token-level Phi_l). The
Transformer adds its learned position embeddings inside ``forward_embeddings``.

Design notes: the LSTM is unidirectional so right padding never reaches real tokens (no
packing); each LSTM layer is wrapped so its hook output is a plain tensor rather than LSTM's
tuple. Transformer layers are pre-norm ``nn.TransformerEncoderLayer`` with
``src_key_padding_mask``. A row with no real token is an error (it would give NaN).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["TextCNN", "TextLSTM", "TextTransformer"]


def _pos_int(name: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


class _TextClassifier(nn.Module):
    """Shared embedding, input checks and masked pooling."""

    pooling = "max"

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int, pad_idx: int):
        super().__init__()
        _pos_int("vocab_size", vocab_size)
        _pos_int("num_classes", num_classes)
        _pos_int("embed_dim", embed_dim)
        if not isinstance(pad_idx, int) or not 0 <= pad_idx < vocab_size:
            raise ValueError(f"pad_idx must be in [0, vocab_size), got {pad_idx!r}")
        self.vocab_size, self.pad_idx = vocab_size, pad_idx
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_idx)
        self.layers = nn.ModuleList()

    def _mask(self, mask: Optional[torch.Tensor], shape, ids: Optional[torch.Tensor] = None):
        if mask is None:
            mask = ids != self.pad_idx if ids is not None else torch.ones(shape, dtype=torch.bool)
        if not torch.is_tensor(mask) or tuple(mask.shape) != tuple(shape):
            got = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
            raise ValueError(f"mask must be a (B, L) = {tuple(shape)} bool tensor, got {got}")
        mask = mask.to(dtype=torch.bool)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("every sequence needs at least one real token (a mask row is all False)")
        return mask

    def forward(self, ids: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        name = type(self).__name__
        if not torch.is_tensor(ids) or ids.dim() != 2:
            got = tuple(ids.shape) if torch.is_tensor(ids) else type(ids).__name__
            raise ValueError(f"{name} expects token ids shaped (B, L), got {got}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{name} expects integer (long) token ids, got {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got range "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        mask = self._mask(mask, ids.shape, ids).to(ids.device)
        return self.forward_embeddings(self.embedding(ids), mask)

    def forward_embeddings(self, emb: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run the network from word embeddings ``(B, L, E)`` (e.g. perturbed ones)."""
        if not torch.is_tensor(emb) or emb.dim() != 3 or emb.shape[-1] != self.embedding.embedding_dim:
            got = tuple(emb.shape) if torch.is_tensor(emb) else type(emb).__name__
            raise ValueError(f"embeddings must be (B, L, {self.embedding.embedding_dim}), got {got}")
        mask = self._mask(mask, emb.shape[:2]).to(emb.device)
        h = self._encode(emb, mask)
        return self.classifier(self.pool(h, mask))

    def _encode(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask.unsqueeze(-1).to(h.dtype)
        for layer in self.layers:
            h = layer(h, mask) * keep
        return h


class MaskedPool(nn.Module):
    """Masked max or mean over the token axis: (B, L, D), (B, L) -> (B, D)."""

    def __init__(self, mode: str = "max"):
        super().__init__()
        if mode not in ("max", "mean"):
            raise ValueError(f"pooling must be 'max' or 'mean', got {mode!r}")
        self.mode = mode

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1)
        if self.mode == "max":
            return h.masked_fill(~m, float("-inf")).max(dim=1).values
        m = m.to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class ConvLayer(nn.Module):
    """1-D conv over tokens + ReLU, (B, L, C) -> (B, L, C'); zero padding stands for pad tokens."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.relu = nn.ReLU()

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        L = h.shape[1]
        return self.relu(self.conv(h.transpose(1, 2)))[..., :L].transpose(1, 2)


class LSTMLayer(nn.Module):
    """One unidirectional LSTM layer returning only its outputs (B, L, H)."""

    def __init__(self, c_in: int, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(c_in, hidden, batch_first=True)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.lstm(h)[0]


class TransformerLayer(nn.Module):
    """A pre-norm Transformer encoder layer taking the token mask."""

    def __init__(self, d: int, nhead: int, ff: int, dropout: float):
        super().__init__()
        self.block = nn.TransformerEncoderLayer(d, nhead, ff, dropout, batch_first=True, norm_first=True)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.block(h, src_key_padding_mask=~mask)


class TextCNN(_TextClassifier):
    """Stacked 1-D convolutions (kernel 3) over word embeddings, masked max-pool, linear head."""

    def __init__(self, vocab_size: int, num_classes: int = 2, embed_dim: int = 64, hidden: int = 64,
                 num_layers: int = 2, kernel: int = 3, dropout: float = 0.1, pad_idx: int = 0):
        super().__init__(vocab_size, num_classes, embed_dim, pad_idx)
        _pos_int("hidden", hidden), _pos_int("num_layers", num_layers), _pos_int("kernel", kernel)
        dims = [embed_dim] + [hidden] * num_layers
        self.layers = nn.ModuleList(ConvLayer(a, b, kernel) for a, b in zip(dims[:-1], dims[1:]))
        self.pool = MaskedPool("max")
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class TextLSTM(_TextClassifier):
    """Stacked unidirectional LSTM layers, masked max-pool over time, linear head."""

    def __init__(self, vocab_size: int, num_classes: int = 2, embed_dim: int = 64, hidden: int = 64,
                 num_layers: int = 2, dropout: float = 0.1, pad_idx: int = 0):
        super().__init__(vocab_size, num_classes, embed_dim, pad_idx)
        _pos_int("hidden", hidden), _pos_int("num_layers", num_layers)
        dims = [embed_dim] + [hidden] * num_layers
        self.layers = nn.ModuleList(LSTMLayer(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.pool = MaskedPool("max")
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class TextTransformer(_TextClassifier):
    """Learned position embeddings + pre-norm Transformer encoder layers, masked mean-pool, head."""

    def __init__(self, vocab_size: int, num_classes: int = 2, embed_dim: int = 64, num_layers: int = 2,
                 nhead: int = 4, ff: int = 128, dropout: float = 0.1, max_len: int = 256,
                 pad_idx: int = 0):
        super().__init__(vocab_size, num_classes, embed_dim, pad_idx)
        _pos_int("num_layers", num_layers), _pos_int("nhead", nhead), _pos_int("ff", ff)
        _pos_int("max_len", max_len)
        if embed_dim % nhead:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by nhead ({nhead})")
        self.max_len = max_len
        self.pos_embedding = nn.Embedding(max_len, embed_dim)
        nn.init.normal_(self.pos_embedding.weight, std=0.02)
        self.layers = nn.ModuleList(TransformerLayer(embed_dim, nhead, ff, dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(embed_dim)
        self.pool = MaskedPool("mean")
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, num_classes))

    def _encode(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        L = h.shape[1]
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds max_len={self.max_len}")
        h = h + self.pos_embedding(torch.arange(L, device=h.device))
        return self.norm(super()._encode(h, mask))
