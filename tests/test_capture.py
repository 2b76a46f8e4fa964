"""Capture core: hook removal (also on exceptions), bad names, double calls, truncation,
in-place safety, batched runs."""
import gc

import pytest
import torch
import torchvision
from torch import nn

from xnn_support.core.capture import CaptureError, capture, layer_names, resolve_layers


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()


class Shared(nn.Module):
    """Uses the same ReLU twice in one forward (Captum's BasicModelWithReusedModules)."""

    def __init__(self):
        super().__init__()
        self.lin1, self.lin2, self.relu = nn.Linear(4, 4), nn.Linear(4, 2), nn.ReLU()

    def forward(self, x):
        return self.relu(self.lin2(self.relu(self.lin1(x))))


def n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_outputs_match_manual_forward_and_inputs_are_captured():
    net, x = small_net(), torch.rand(2, 3, 8, 8)
    with torch.no_grad(), capture(net, ["0", "3"], inputs=True) as cap:
        net(x)
        ref0 = net[0](x)
    assert torch.allclose(cap["0"], ref0)
    assert torch.equal(cap.inputs["0"], x)
    assert cap["3"].shape == (2, 8, 8, 8)


def test_hooks_removed_on_exit_and_on_exception():
    net = small_net()
    before = n_hooks(net)
    with capture(net, ["0", "3"]):
        assert n_hooks(net) > before
    assert n_hooks(net) == before
    with pytest.raises(RuntimeError, match="boom"):
        with capture(net, ["0", "3"]):
            raise RuntimeError("boom")
    assert n_hooks(net) == before
    with pytest.raises(RuntimeError):  # an exception inside the forward itself
        with capture(net, ["0"]):
            net(torch.rand(2, 5, 8, 8))  # wrong channel count
    assert n_hooks(net) == before


def test_no_memory_growth_over_many_captures():
    net, x = small_net(), torch.rand(2, 3, 8, 8)
    for _ in range(50):
        with torch.no_grad(), capture(net, ["0"]):
            net(x)
    gc.collect()
    assert n_hooks(net) == 0


def test_bad_name_lists_closest_names():
    net = torchvision.models.resnet18(weights=None)
    with pytest.raises(CaptureError) as e:
        with capture(net, ["layer4.1.con2"]):
            pass
    msg = str(e.value)
    assert "layer4.1.conv2" in msg and "closest" in msg
    assert n_hooks(net) == 0
    with pytest.raises(CaptureError):
        resolve_layers(net, [])
    with pytest.raises(CaptureError, match="not a submodule"):
        resolve_layers(net, [nn.Linear(2, 2)])


def test_module_objects_and_names_mix():
    net = small_net()
    got = resolve_layers(net, [net[0], "3"])
    assert list(got) == ["0", "3"]
    assert "0" in layer_names(net)


def test_double_call_is_reported_or_kept():
    m, x = Shared(), torch.rand(3, 4)
    with pytest.raises(CaptureError, match="called 2 times"):
        with capture(m, ["relu"]):
            m(x)
    with capture(m, ["relu"], repeats="all") as cap:
        m(x)
    assert len(cap["relu"]) == 2 and cap["relu"][0].shape == (3, 4) and cap["relu"][1].shape == (3, 2)
    with pytest.warns(RuntimeWarning):
        with capture(m, ["relu"], repeats="warn") as cap:
            m(x)
    assert cap["relu"].shape == (3, 2)
    # two separate forwards are not a double call
    with capture(m, ["lin1"]) as cap:
        m(x)
        m(x)
        m.lin1(x)  # a direct call of the submodule is a forward of its own
    assert n_hooks(m) == 0


def test_inplace_relu_after_hooked_layer_does_not_change_capture():
    net, x = small_net(), torch.randn(2, 3, 8, 8)
    with torch.no_grad(), capture(net, ["1"]) as cap:  # BN, followed by ReLU(inplace=True)
        net(x)
        ref = net[1](net[0](x))
    assert cap["1"].min() < 0  # pre-ReLU values survived
    assert torch.allclose(cap["1"], ref)


def test_functional_inplace_is_detected_and_clone_true_fixes_it():
    r = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad(), capture(r, ["layer1.0.bn2"]) as cap:
        r(x)
    with pytest.raises(CaptureError, match="modified in place"):
        cap["layer1.0.bn2"]
    with torch.no_grad(), capture(r, ["layer1.0.bn2"], clone=True) as cap:
        r(x)
        blk = r.layer1[0]
        h = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        ref = blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(h)))))
    assert torch.allclose(cap["layer1.0.bn2"], ref, atol=1e-6)


def test_truncated_forward_stops_after_deepest_requested_layer():
    """Truncated forwards never run later layers; only the one probe forward before the first of them
    does (to see a layer called twice), with the RNG and the buffers restored afterwards."""
    net, x = small_net(), torch.rand(2, 3, 8, 8)
    calls = []
    h = net[7].register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad(), capture(net, ["0", "3"], stop=True) as cap:
        assert cap.forward(x) is None
        assert len(calls) == 1                     # the probe
        assert cap.forward(x) is None and cap.forward(x) is None
    assert len(calls) == 1 and cap["3"].shape == (2, 8, 8, 8)
    h.remove()
    with torch.no_grad(), capture(net, ["3"]) as plain:
        net(x)
    assert torch.equal(plain["3"], cap["3"])


def test_truncated_forward_reports_a_layer_called_twice():
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.relu(self.bn(self.conv(self.relu(x))))

    net, x = Reuse().train(), torch.rand(2, 3, 8, 8)
    with pytest.raises(CaptureError, match="'relu'.*called 2 times.*repeats="):
        with capture(net, ["relu"], stop=True) as cap:
            cap.forward(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.warns(RuntimeWarning, match="called 2 times"), capture(net, ["relu"], stop=True, repeats="warn") as cap:
        cap.forward(x)                              # the probe restored the buffers: one BN update only
    assert int(net.bn.num_batches_tracked) == int(state["bn.num_batches_tracked"]) + 1


def test_run_in_batches_equals_one_pass_and_keeps_grad_when_asked():
    net, x = small_net(), torch.rand(10, 3, 8, 8)
    with capture(net, ["3"]) as cap:
        a = cap.run(x, batch_size=3)["3"]
        b = cap.run(x)["3"]
    assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        with capture(net, ["3"]) as cap:
            cap.run(x[:0])
    xg = torch.rand(2, 3, 8, 8, requires_grad=True)
    with capture(net, ["3"], detach=False) as cap:
        net(xg)
    cap["3"].sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
