"""The explainer network of notebook 08 (Zhang, Yang, Liu, Wu, Zhu, arXiv 1805.07468): its modules only.

Encoder, in the spec's implementation order (section 2.2; a reconstruction, no code exists):

    interpretable track  z_int = TrackNorm( ICNN( ReLU(conv3x3(F_l)) ) )    ICNN = icnn.InterpretableConv2d
    ordinary track       z_ord = TrackNorm( ReLU(conv3x3(F_l)) )            (``ord_depth`` convs, default 1)
    mixing               z = p z_int + (1 - p) z_ord,  p = sigmoid(rho)    (scalar, per channel, or per image)
    decoder              R_j = Dec_j(resize(z, H_j x W_j))                 conv3x3-ReLU-conv3x3, or one 1x1 conv

:class:`TrackNorm` is what makes p identifiable (spec 2.3): every channel of each track is divided by its RMS
(the batch's in training, with gradient, so the track's output is exactly invariant to the scale of its weights;
an EMA of it, frozen, in evaluation), so neither track can absorb p's share by growing its weights; the decoder
is shared by both tracks, so it cannot undo the ratio either.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...core import validate as V
from ..icnn.layer import InterpretableConv2d

__all__ = ["TrackNorm", "Explainer", "P_MODES", "DECODERS", "LOSS_MODES"]

P_MODES = ("scalar", "channel", "image")
DECODERS = ("conv", "linear")
LOSS_MODES = ("code", "paper", "ordinary")   # the icnn filter-loss modes ("ordinary": no mask, no loss)


class TrackNorm(nn.Module):
    """Per-channel RMS normalisation without a learnable gain: ``x / rms_c(x)``.

    Training: the batch's RMS over (batch, rows, cols), differentiated through, and an EMA (``momentum``) kept
    in the buffer ``rms``; evaluation (or ``fixed=True``): the buffer. A channel's divisor is at least ``floor``
    times the track's mean RMS (a relative floor, so the scale invariance holds): a nearly dead channel (an
    interpretable filter that fires on a handful of images) is not blown up to unit RMS, which made it explode on
    held-out images.
    """

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-6, floor: float = 0.1,
                 fixed: bool = False):
        super().__init__()
        V.positive_int("channels", channels)
        V.in_range("momentum", momentum, 0, 1)
        V.in_range("floor", floor, 0, 1)
        self.momentum, self.eps, self.floor, self.fixed = float(momentum), float(eps), float(floor), bool(fixed)
        self.register_buffer("rms", torch.ones(channels))

    def batch_rms(self, x: torch.Tensor) -> torch.Tensor:
        r = x.pow(2).mean((0, 2, 3)).add(self.eps ** 2).sqrt()
        return torch.maximum(r, self.floor * r.mean())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.fixed:
            r = self.batch_rms(x)
            with torch.no_grad():
                self.rms.mul_(1 - self.momentum).add_(self.momentum * r.detach())
        else:
            r = self.rms.to(x.dtype)
        return x / r[None, :, None, None]


def _conv_relu(c_in: int, c_out: int, depth: int) -> nn.Sequential:
    layers = []
    for i in range(depth):
        conv = nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU()]
    return nn.Sequential(*layers)


def _key(name: str) -> str:
    return name.replace(".", "__") or "__root"


class Explainer(nn.Module):
    """The explainer: two tracks, the mixing ratio p and one decoder head per target (module docstring).

    ``in_channels``: channels of the explained feature F_l; ``out_shapes``: target name -> (C_j, H_j, W_j);
    ``channels``: D, the width of both tracks (default ``in_channels``); ``mode``: the icnn filter-loss mode
    of the interpretable track (``"code"``, ``"paper"``; ``"ordinary"`` = no mask, for baselines);
    ``p_mode``: ``"scalar"`` (one rho), ``"channel"`` (one rho per channel), ``"image"``
    (p(I) = sigmoid(a^T GAP(F_l) + c)); ``decoder``: ``"conv"`` (conv3x3-ReLU-conv3x3) or ``"linear"``
    (one 1x1 conv: the reconstruction splits exactly into the two tracks' terms); ``rho_scale``: p =
    sigmoid(rho_scale * rho), so that Adam moves p as fast as the convs' weights (a learning-rate choice for the
    one parameter that must travel several units; it changes no optimum); ``norm``: the TrackNorm
    (False only to show that p is then meaningless); ``ord_depth``: convs of the ordinary track.
    ``num_classes`` / ``negative_label``: the categories of the performer's pseudo-labels (code mode).
    """

    def __init__(self, in_channels: int, out_shapes: Mapping[str, Sequence[int]], *, channels: Optional[int] = None,
                 mode: str = "code", p_mode: str = "scalar", decoder: str = "conv", norm: bool = True,
                 ord_depth: int = 1, num_classes: int = 2, negative_label: Optional[int] = 0, beta: float = 4.0,
                 rho_scale: float = 30.0):
        super().__init__()
        V.positive_int("in_channels", in_channels)
        D = V.positive_int("channels", in_channels if channels is None else channels)
        V.choice("mode", mode, LOSS_MODES)
        V.choice("p_mode", p_mode, P_MODES)
        V.choice("decoder", decoder, DECODERS)
        V.positive_int("ord_depth", ord_depth)
        self.rho_scale = V.positive("rho_scale", rho_scale)
        if not out_shapes:
            raise V.fail("out_shapes", "a non-empty mapping target -> (C, H, W)", out_shapes,
                         "pass at least one target layer")
        self.in_channels, self.channels, self.mode, self.p_mode, self.decoder_kind = in_channels, D, mode, p_mode, decoder
        self.out_shapes: Dict[str, Tuple[int, int, int]] = {k: tuple(int(s) for s in v) for k, v in out_shapes.items()}
        self.int_pre = _conv_relu(in_channels, D, 1)
        self.icnn = InterpretableConv2d((D, D), mode=mode, beta=beta, num_classes=num_classes,
                                        negative_label=negative_label)
        nn.init.kaiming_normal_(self.icnn.conv.weight, mode="fan_out", nonlinearity="relu")
        self.ord_track = _conv_relu(in_channels, D, ord_depth)
        self.norm_int = TrackNorm(D) if norm else nn.Identity()
        self.norm_ord = TrackNorm(D) if norm else nn.Identity()
        if p_mode == "image":
            self.p_head = nn.Linear(in_channels, 1)
            nn.init.zeros_(self.p_head.weight)
            nn.init.zeros_(self.p_head.bias)
            self.rho = None
        else:
            self.p_head = None
            self.rho = nn.Parameter(torch.zeros(1 if p_mode == "scalar" else D))   # p = 0.5 at init
        heads = {}
        for name, (C, _, _) in self.out_shapes.items():
            if decoder == "linear":
                heads[_key(name)] = nn.Conv2d(D, C, 1)
            else:
                heads[_key(name)] = nn.Sequential(nn.Conv2d(D, D, 3, padding=1), nn.ReLU(), nn.Conv2d(D, C, 3, padding=1))
        self.decoders = nn.ModuleDict(heads)

    # ------------------------------------------------------------------ the encoder
    def ratio(self, f: torch.Tensor) -> torch.Tensor:
        """p broadcastable to (B, D, 1, 1): (1, 1, 1, 1) scalar, (1, D, 1, 1) per channel, (B, 1, 1, 1) per image."""
        if self.p_head is not None:
            return torch.sigmoid(self.rho_scale * self.p_head(f.mean((2, 3))))[:, :, None, None]
        return torch.sigmoid(self.rho_scale * self.rho)[None, :, None, None]

    def tracks(self, f: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_int, z_ord, p): both normalised tracks (B, D, n, n) before mixing, and p (see :meth:`ratio`).
        Leaves the icnn layer's pre-mask map ``last_a`` divided by its batch RMS per channel (with gradient),
        so the filter loss too sees a map whose scale is fixed."""
        z_int = self.norm_int(self.icnn(self.int_pre(f)))
        a = self.icnn.last_a
        if isinstance(self.norm_int, TrackNorm) and a is not None:
            self.icnn.last_a = a / self.norm_int.batch_rms(a)[None, :, None, None]
        p = self.ratio(f)
        self._last_p = p                      # read by the prior term of the loss
        return z_int, self.norm_ord(self.ord_track(f)), p

    def mix(self, f: torch.Tensor) -> torch.Tensor:
        z_int, z_ord, p = self.tracks(f)
        return p * z_int + (1 - p) * z_ord

    # ------------------------------------------------------------------ the decoder
    def _resize(self, z: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        if tuple(z.shape[-2:]) == hw:
            return z
        if z.shape[-2] >= hw[0] and z.shape[-1] >= hw[1]:
            return F.adaptive_avg_pool2d(z, hw)           # linear, so the linear decoder still splits exactly
        return F.interpolate(z, size=hw, mode="bilinear", align_corners=False)

    def decode(self, z: torch.Tensor, bias: bool = True) -> Dict[str, torch.Tensor]:
        """Target name -> R_j = Dec_j(z). ``bias=False`` (linear decoder only) drops the 1x1 conv's bias: the
        contribution of ``z`` alone (:meth:`split`)."""
        out = {}
        for name, (_, H, W) in self.out_shapes.items():
            head, zr = self.decoders[_key(name)], self._resize(z, (H, W))
            out[name] = head(zr) if bias else F.conv2d(zr, head.weight)
        return out

    def reconstruct(self, f: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.decode(self.mix(f))

    def split(self, f: torch.Tensor) -> Dict[str, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Linear decoder: target -> (Dec(p z_int) w/o bias, Dec((1-p) z_ord) w/o bias, the bias map); the
        three add up to :meth:`reconstruct` to float precision."""
        if self.decoder_kind != "linear":
            raise ValueError("split needs decoder='linear' (a nonlinear decoder does not split into tracks)")
        z_int, z_ord, p = self.tracks(f)
        a, b = self.decode(p * z_int, bias=False), self.decode((1 - p) * z_ord, bias=False)
        return {k: (a[k], b[k], self.decoders[_key(k)].bias[None, :, None, None].expand_as(a[k]))
                for k in self.out_shapes}

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """(B, sum_j C_j H_j W_j): every reconstruction flattened and concatenated (the trainer's output)."""
        return torch.cat([r.flatten(1) for r in self.reconstruct(f).values()], 1)
