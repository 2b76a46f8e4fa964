"""``xnn bench`` rows of notebook 10 (evaluating attribution maps), one torch thread, random VGG-like net (64 px,
width 0.5, BN folded), explained layer ``features.6``.

* ``attribution/table``: :func:`~.metrics.coherency_table` (every transform R1-R10: surgery in float64, function
  check, maps, comparison) per image, method and transform, against the floor = the same maps computed by
  :func:`~.maps.attribution_maps` on the already-built transformed nets (so the row measures the table's own
  overhead); one row for the Captum methods (maps in float64), one for the sigma methods. Target ratio <= 1.5.
* ``attribution/sigma_floor``: one entropy map (clean preset, whitened metric through :class:`~.maps.MetricFeatures`)
  against its floor = steps x (forward of the net truncated at the layer + backward to the input) at the same batch
  (images x samples). Target ratio <= 1.5 (the whitening adds one C x C product per position and step).
"""
from __future__ import annotations

import copy
import time

import torch

from ...bench import Row, benchmark, one_thread
from ...models import build
from .maps import SIGMA_METHODS, attribution_maps, sigma_map
from .method import fold_batchnorm, reparameterise
from .metrics import TRANSFORMS, coherency_table

_LAYER = "features.6"
_CAPTUM = ("saliency", "integrated_gradients", "occlusion", "input_x_gradient", "smoothgrad", "layer_gradient_l1",
           "layer_gradient_l2", "grad_x_act", "gradcam_raw", "gradcam", "layer_ig")


def _net_and_images(n: int):
    m = fold_batchnorm(build("vgg_small", seed=0, in_size=64, width=0.5).eval())
    return m, torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _table_row(m, x, methods, transforms, kw, label, float64):
    hi = torch.float64 if float64 else torch.float32
    nets = [(m, _LAYER, lambda v: v)]
    for k in transforms:
        mt, ep = reparameterise(copy.deepcopy(m).double(), k, _LAYER, example=x[:2].double())
        nets.append((mt, ep.layer, ep.inputs))
    t = m(x).argmax(1)

    def floor():
        for net, layer, u in nets:
            attribution_maps(copy.deepcopy(net).to(hi), u(x.double()).to(hi), t, layer, methods, **kw)

    def ours():
        coherency_table(m, x, t, transforms=transforms, methods=methods, layer=_LAYER, show_progress=False, **kw)

    floor()
    tf, to = _timed(floor), _timed(ours)
    per = len(x) * len(methods) * (len(transforms) + 1)
    return Row(f"coherency table, {label}: per image, method and transform ({len(x)} images, "
               f"{len(transforms)} transforms + original)", to / per, tf / per,
               "floor: the same maps on pre-built transformed nets", target="ratio <= 1.5", ok=to / tf <= 1.5,
               note="1 torch thread; vgg_small 64 px width 0.5; surgery + float64 check + comparison are the overhead")


@benchmark("attribution/table")
@one_thread
def _table_rows(quick: bool):
    m, x = _net_and_images(2 if quick else 4)
    trans = ("R1", "R4g", "R9") if quick else TRANSFORMS
    sig = {"clean": dict(steps=8 if quick else 30, samples=4, lr=0.1), "icml22": dict(steps=8 if quick else 40, samples=4)}
    return [_table_row(m, x, _CAPTUM, trans, dict(ig_steps=16, smooth_samples=8), "Captum methods (float64)", True),
            _table_row(m, x, SIGMA_METHODS, trans, dict(sigma=sig), "sigma methods (float32)", False)]


@benchmark("attribution/sigma_floor")
@one_thread
def _sigma_rows(quick: bool):
    m, x = _net_and_images(4)
    steps, M = (10 if quick else 40), 4
    for p in m.parameters():
        p.requires_grad_(False)
    k = int(_LAYER.split(".")[1])
    xin = x.repeat(M, 1, 1, 1)

    def floor():
        for _ in range(steps):
            xi = xin.clone().requires_grad_(True)
            torch.autograd.grad(m.features[:k + 1](xi).pow(2).mean(), xi)

    def ours():
        sigma_map(m, x, _LAYER, preset="clean", metric="whitened", steps=steps, samples=M)

    floor(), ours()
    tf = min(_timed(floor) for _ in range(1 if quick else 3))
    to = min(_timed(ours) for _ in range(1 if quick else 3))
    return [Row(f"entropy map (clean, whitened metric), {len(x)} images, {M} samples, {steps} steps", to, tf,
                "floor: steps x fwd+bwd of the net truncated at the layer", target="ratio <= 1.5", ok=to / tf <= 1.5,
                note="1 torch thread; vgg_small 64 px width 0.5, grid 16")]
