"""Pieces of the sigma engine (:mod:`xnn_support.sigma`): the result type :class:`SigmaResult`, the
seeded noise draws (:class:`_Noise`), argument checks and the concatenation of chunk results."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from .presets import HALF_LOG_2PIE, READOUTS, SigmaConfig

__all__ = ["SigmaResult"]


class _Noise:
    """Seeded standard-normal draws. ``shared``: one draw (M, *shape) for every pair (common random
    numbers); else (M, P, *shape). ``prefix_stable``: one generator per index of axis 0 of
    ``shape``, so the draws of the first n units do not depend on how many units follow."""

    def __init__(self, shape, seed: int, salt: int, device, *, pairs: int, shared: bool, prefix_stable: bool,
                 antithetic: bool = False):
        self.shape, self.pairs, self.shared = tuple(shape), pairs, shared
        self.prefix, self.antithetic, self.device = prefix_stable, antithetic, device
        base = (int(seed) * 1_000_003 + salt * 7919) % (2 ** 62)
        n = self.shape[0] if prefix_stable else 1
        self.gens = [torch.Generator(device=device).manual_seed((base + 104_729 * j) % (2 ** 62)) for j in range(n)]

    def draw(self, m: int) -> torch.Tensor:
        k = m // 2 if self.antithetic else m
        lead = (k,) if self.shared else (k, self.pairs)
        if self.prefix:
            eps = torch.stack([torch.randn(*lead, *self.shape[1:], generator=g, device=self.device) for g in self.gens],
                              dim=len(lead))
        else:
            eps = torch.randn(*lead, *self.shape, generator=self.gens[0], device=self.device)
        return torch.cat([eps, -eps]) if self.antithetic else eps


@dataclass
class SigmaResult:
    """Output of :func:`optimize_sigma`. Shapes: L layers, B inputs, U units (flat; adapters reshape).

    ``sigma``/``log_sigma`` (L, B, U) at the chosen read-out (NaN on padded units); ``entropy_map``
    (L, B, U or the custom map's shape): per-unit entropy per input dimension in nats
    (log sigma + 0.5 log 2 pi e) unless a custom ``entropy`` was given; ``entropy`` (L, B) its mean
    over real units; ``F`` (L, B) normalised feature change at the read-out (tail: its mean over the
    tail); ``step`` (L, B) the step read (tail: first tail step). ``readouts``: the same fields for
    every read-out rule. ``history``: ``F``, ``H``, ``loss`` and ``lam`` (T, L, B);
    ``log_sigma`` (T, L, B, U) with ``keep_sigma=True``. ``sigma_f`` (L, B) per-pair normaliser
    (None when per-element)."""
    names: List[str]
    sigma: torch.Tensor
    log_sigma: torch.Tensor
    entropy_map: torch.Tensor
    entropy: torch.Tensor
    F: torch.Tensor
    step: torch.Tensor
    readout: str
    readouts: Dict[str, Dict[str, torch.Tensor]]
    history: Dict[str, torch.Tensor]
    sigma_f: Optional[torch.Tensor]
    mask: Optional[torch.Tensor]
    config: SigmaConfig
    seconds: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)

    def use(self, readout: str) -> "SigmaResult":
        """The same result read out by another rule (one of :data:`READOUTS`)."""
        if readout not in self.readouts:
            raise ValueError(f"unknown readout {readout!r}; available: {list(self.readouts)}")
        r = self.readouts[readout]
        return dataclasses.replace(self, readout=readout, sigma=r["log_sigma"].exp(), log_sigma=r["log_sigma"],
                                   entropy_map=r["map"], entropy=r["H"], F=r["F"], step=r["step"])


def _pair_view(t: torch.Tensor, nd: int) -> torch.Tensor:
    return t.reshape(t.shape[0], *([1] * nd))


def _normaliser(spec, l: int, names: List[str]):
    """Per-layer entry of a user-given sigma_f: a number, a tensor, or a list/dict of them."""
    if isinstance(spec, dict):
        if names[l] not in spec:
            raise ValueError(f"sigma_f has no entry for layer {names[l]!r} (keys: {list(spec)})")
        return spec[names[l]]
    if isinstance(spec, (list, tuple)):
        if len(spec) != len(names):
            raise ValueError(f"sigma_f lists {len(spec)} entries for {len(names)} layers")
        return spec[l]
    return spec


def _check_input(x) -> torch.Tensor:
    if not torch.is_tensor(x):
        raise ValueError(f"x must be a torch tensor, got {type(x).__name__}; pass the inputs as a float tensor "
                         "(B, ...)")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}; pass x.float()")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"empty batch: x has shape {tuple(x.shape)}; pass at least one input")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).sum())
        raise ValueError(f"x contains NaN or inf ({bad} of {x.shape[0]} inputs affected); replace or drop them first "
                         "(torch.nan_to_num, or index the finite inputs)")
    return x



def _pad_last(t: Optional[torch.Tensor], n: int, value) -> Optional[torch.Tensor]:
    if t is None or t.shape[-1] == n:
        return t
    return torch.cat([t, t.new_full((*t.shape[:-1], n - t.shape[-1]), value)], -1)


def _cat_results(parts: List[SigmaResult], order: torch.Tensor, U: int, unit_maps: bool) -> SigmaResult:
    """Concatenate chunk results (pad the unit axis to U, put inputs back in their original order)."""
    inv = torch.argsort(order)

    def cat(vals, dim, pad=None):
        if vals[0] is None:
            return None
        if pad is not None:
            vals = [_pad_last(v, U, pad) for v in vals]
        return torch.cat(vals, dim).index_select(dim, inv)
    p0 = parts[0]
    readouts = {}
    for k in p0.readouts:
        readouts[k] = {f: cat([p.readouts[k][f] for p in parts], 1,
                              float("nan") if f == "log_sigma" or (f == "map" and unit_maps) else None)
                       for f in p0.readouts[k]}
    hist = {k: cat([p.history[k] for p in parts], 2, float("nan") if k == "log_sigma" else None)
            for k in p0.history}
    return dataclasses.replace(p0, readouts=readouts, history=hist, sigma_f=cat([p.sigma_f for p in parts], 1),
                               mask=cat([p.mask for p in parts], 0, False)).use(p0.readout)


# ------------------------------------------------------------------------------------ read-out
class _Track:
    """Online read-out state, packed per pair as [log sigma (U) | custom map | F | H] so that each rule
    costs three element-wise ops per step (the loop must stay close to the cost of forward + backward)."""
    rules = ("snapshot", "target", "entropy_target")

    def __init__(self, cfg, L, Bc, T, keep_sigma, dev, dtype):
        """Empty state for L x Bc pairs and T steps."""
        self.cfg, self.L, self.Bc, self.T, self.keep_sigma, self.dev = cfg, L, Bc, T, keep_sigma, dev
        self.n_tail = max(1, int(math.ceil(cfg.tail * T)))
        self.inf = torch.full((L, Bc), float("inf"), device=dev, dtype=dtype)
        self.best = {k: self.inf.clone() for k in self.rules}
        self.packed: Dict[str, torch.Tensor] = {}
        self.at = {k: torch.zeros(L, Bc, dtype=torch.long, device=dev) for k in self.rules}
        self.tail_sum, self.last, self.hist, self.hist_sig = None, None, [], []

    def update(self, t, logs, extra, Dd, Hd, ld, lam):
        """Record step t (call under no_grad): read-out candidates, tail sum, history."""
        cfg, packed = self.cfg, self.packed
        cur = torch.cat([logs.detach()] + extra + [Dd.unsqueeze(-1), Hd.unsqueeze(-1)], -1)
        self.last = cur
        keys = {"snapshot": ld, "target": (Dd - cfg.target).abs(), "entropy_target": (Hd - cfg.entropy_target).abs()}
        if cfg.target_min is not None:
            keys["target"] = torch.where(Dd >= cfg.target_min, keys["target"], self.inf)
        for k in self.rules:
            better = keys[k] < self.best[k]
            self.best[k] = torch.where(better, keys[k], self.best[k])
            packed[k] = cur if k not in packed else torch.where(better.unsqueeze(-1), cur, packed[k])
            self.at[k].masked_fill_(better, t)
        if t >= self.T - self.n_tail:
            self.tail_sum = cur if self.tail_sum is None else self.tail_sum + cur
        self.hist.append(torch.stack([Dd, Hd, ld, lam if torch.is_tensor(lam) else torch.full_like(Dd, lam)]))
        if self.keep_sigma:
            self.hist_sig.append(logs.detach())


def _chunk_result(track, names, cfg, mask, U, entropy, map_shape, sf) -> SigmaResult:
    """Check the history, unpack every read-out rule (NaN on padded units), assemble the :class:`SigmaResult`."""
    T, L, Bc, packed, at = track.T, track.L, track.Bc, track.packed, track.at
    hist = torch.stack(track.hist).cpu()  # (T, 4, L, Bc)
    if not bool(torch.isfinite(hist).all()):
        t_bad = int((~torch.isfinite(hist)).reshape(T, -1).any(1).nonzero()[0])
        raise FloatingPointError(f"the loss became NaN/inf at step {t_bad} (lr={cfg.lr}); lower lr or check the model")
    packed["final"], packed["tail"] = track.last, track.tail_sum / track.n_tail
    at["final"] = torch.full((L, Bc), T - 1, dtype=torch.long, device=track.dev)
    at["tail"] = torch.full((L, Bc), T - track.n_tail, dtype=torch.long, device=track.dev)
    bad = None if mask is None else ~mask.bool().cpu().unsqueeze(0)
    readouts = {}
    for k in READOUTS:
        v = packed[k].cpu()
        ls = v[..., :U]
        hmap = (ls + HALF_LOG_2PIE) if entropy is None else v[..., U:-2].reshape(L, Bc, *map_shape)
        if bad is not None:
            ls = ls.masked_fill(bad, float("nan"))
            if entropy is None:
                hmap = hmap.masked_fill(bad, float("nan"))
        readouts[k] = {"log_sigma": ls, "map": hmap, "F": v[..., -2], "H": v[..., -1], "step": at[k].cpu()}
    history = {"F": hist[:, 0], "H": hist[:, 1], "loss": hist[:, 2], "lam": hist[:, 3]}
    if track.keep_sigma:
        history["log_sigma"] = torch.stack(track.hist_sig).cpu()
    r = readouts[cfg.readout]
    return SigmaResult(names=names, sigma=r["log_sigma"].exp(), log_sigma=r["log_sigma"], entropy_map=r["map"],
                       entropy=r["H"], F=r["F"], step=r["step"], readout=cfg.readout, readouts=readouts,
                       history=history, sigma_f=None if sf is None else sf.cpu(),
                       mask=None if mask is None else mask.cpu(), config=cfg)
