"""Tests of notebook 09 (network transplanting): planted truth first (the ideal adapter is exact; gradient
matching pins it where output matching cannot), then the reference outputs of the spec (section 8), then the
contracts of the entry point (existing categories unchanged bit for bit, nothing else trained, chunking,
determinism, argument checks)."""
import ipywidgets
import matplotlib.figure
import pandas as pd
import pytest
import torch
from torch import nn

from xnn_support import viz, widgets
from xnn_support.papers import transplant as TP
from xnn_support.papers.transplant import experiments as X
from xnn_support.papers.transplant import metrics as M
from xnn_support.papers.transplant.method import back_distillation_loss, back_target_loss, vjp
from xnn_support.papers.transplant.network import (CategoryModule, ClassTask, FixedLinear, SegTask, TransplantNet,
                                                   freeze, make_adapter, perturbed_adapter, planted_map)

pytestmark = pytest.mark.usefixtures("one_thread")


def _seeded(seed, build):
    torch.manual_seed(seed)
    return build()


@pytest.fixture(scope="module")
def planted64():
    """Small float64 planted setting: random f (8 channels, 8x8) and g; M invertible; teacher g o M^-1."""
    f = freeze(_seeded(0, lambda: CategoryModule(channels=8, width=4, pools=1)).double())
    g = freeze(_seeded(1, lambda: ClassTask(8, width=8)).double())
    Mx = planted_map(8, seed=3).double()
    Minv = torch.linalg.inv(Mx)
    images = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return dict(f=f, g=g, M=Mx, Minv=Minv, fp=nn.Sequential(f, FixedLinear(Mx)), teacher=nn.Sequential(FixedLinear(Minv), g),
                images=images)


# ----------------------------------------------------------------------------- planted truth
def test_ideal_adapter_makes_every_loss_and_its_gradient_vanish(planted64):
    p = planted64
    h = nn.Conv2d(8, 8, 1, bias=False).double()
    with torch.no_grad():
        h.weight.copy_(p["Minv"][:, :, None, None])
    x = TP.cached_features(p["fp"], p["images"])
    student = nn.Sequential(h, p["g"])
    l_od = TP.output_distillation_loss(student(x), p["teacher"](x))
    l_bd = back_distillation_loss(student, p["teacher"], x, n_dirs=3)
    l_bt = back_target_loss(h, p["g"], p["teacher"](x).detach(), x)
    for loss in (l_od, l_bd, l_bt):
        (gw,) = torch.autograd.grad(loss, h.weight, allow_unused=True)
        assert float(loss.detach()) < 1e-20 and (gw is None or float(gw.abs().max()) < 1e-6)
    assert float(M.recovery_error(h, p["Minv"])) == 0.0


def _linear_toy(seed=0, C=4, S=4):
    """g(z) = sum_ij a_ij^T z_ij (linear, one output, the a_ij span R^C); f' = M o identity features."""
    gen = torch.Generator().manual_seed(seed)

    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.randn(C, S, S, generator=gen, dtype=torch.float64), requires_grad=False)

        def forward(self, z):
            return (z * self.a).sum((1, 2, 3))[:, None]

    Mx = planted_map(C, seed=seed).double()
    return G(), Mx, torch.linalg.inv(Mx), gen


def test_linear_toy_one_image_pins_the_adapter_for_gradients_not_for_outputs():
    """Spec 8: with g linear, L_bd determines H = M^-1 from ONE image; output matching with one scalar per image
    leaves a C*C - N dimensional set of adapters (here 16 unknowns, 5 images): not recovered."""
    g, Mx, Minv, gen = _linear_toy()
    feats = lambda n: torch.randn(n, 4, 4, 4, generator=gen, dtype=torch.float64)  # noqa: E731
    teacher = nn.Sequential(FixedLinear(Minv), g)
    ident = nn.Identity()
    h_bd, _ = TP.transplant(ident, g, teacher, feats(1), method="gradient", steps=600, lr=3e-2,
                            adapter=make_adapter(4, 4, seed=0).double(), progress=False)
    h_od, _ = TP.transplant(ident, g, teacher, feats(5), method="output_distillation", steps=600, lr=3e-2,
                            adapter=make_adapter(4, 4, seed=0).double(), progress=False)
    assert M.recovery_error(h_bd, Minv) < 1e-2
    assert M.recovery_error(h_od, Minv) > 0.2


def test_back_distillation_recovers_the_planted_adapter_through_a_relu_task_module(planted64):
    """The acceptance test: a random ReLU task module (conv-pool-conv-avg-linear), 12 images, the planted
    M (condition number <= e^2), the adapter starting at M^-1 + delta (||delta|| = 0.3 ||M^-1||): gradient
    matching (back-distillation's gradient term, option C) pulls it back to within 5% of M^-1; output
    distillation on the same images matches the outputs (loss / 100) but leaves the adapter where it started
    (> 20%). The main reading (L_od + lambda L_bd, lambda equalising the terms at the start) is not asserted: it
    reaches the ideal adapter on some seeds only (measured in the notebook)."""
    p = planted64
    kw = dict(steps=800, lr=1e-2, batch_size=12, progress=False, seed=0)
    h_bd, hist = TP.transplant(p["fp"], p["g"], p["teacher"], p["images"], method="gradient",
                               adapter=perturbed_adapter(p["Minv"], 0.3, seed=0), **kw)
    h_od, hist_od = TP.transplant(p["fp"], p["g"], p["teacher"], p["images"], method="output_distillation",
                                  adapter=perturbed_adapter(p["Minv"], 0.3, seed=0), **kw)
    err_bd, err_od = M.recovery_error(h_bd, p["Minv"]), M.recovery_error(h_od, p["Minv"])
    assert err_bd < 0.05, (err_bd, err_od)
    assert err_od > 0.2, (err_bd, err_od)
    assert hist[-1]["bd"] < 0.1 * hist[0]["bd"] and hist_od[-1]["od"] < 0.01 * hist_od[0]["od"]


# ----------------------------------------------------------------------------- reference outputs (spec 8)
def test_vjp_matches_finite_differences(planted64):
    p = planted64
    x = TP.cached_features(p["fp"], p["images"][:2])
    u = torch.randn(2, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, v = vjp(p["teacher"], x, u, create_graph=False)
    e = torch.randn_like(x) * 1e-6
    fd = ((p["teacher"](x + e) - p["teacher"](x - e)) * u).sum() / 2
    assert float((v * e).sum()) == pytest.approx(float(fd), rel=1e-5)
    assert torch.autograd.gradcheck(lambda z: p["teacher"](z), (x[:1].clone().requires_grad_(True),))


def test_hutchinson_mean_of_squared_vjp_is_the_frobenius_norm():
    torch.manual_seed(0)
    g = SegTask(4, width=4, upsample=2).double()
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(g, x).reshape(-1, x.numel())
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(2000, 2, 6, 6, generator=gen, dtype=torch.float64)
    _, v = vjp(g, x.repeat(2000, 1, 1, 1), u, create_graph=False)
    assert float(v.pow(2).sum((1, 2, 3)).mean()) == pytest.approx(float(J.pow(2).sum()), rel=0.05)


def test_double_backward_is_batched_and_chunking_gives_the_same_adapter(planted64):
    p = planted64
    kw = dict(method="back_distillation", steps=5, batch_size=12, progress=False, seed=2)
    a, ha = TP.transplant(p["fp"], p["g"], p["teacher"], p["images"], adapter=make_adapter(8, 8).double(), **kw)
    c, _ = TP.transplant(p["fp"], p["g"], p["teacher"], p["images"], adapter=make_adapter(8, 8).double(), **kw)
    assert torch.equal(a.weight, c.weight)                       # deterministic
    b2, _ = TP.transplant(p["fp"], p["g"], p["teacher"], p["images"], adapter=make_adapter(8, 8).double(),
                          chunk_size=5, lambda_bd=ha[0]["lambda_bd"], **kw)
    a2, _ = TP.transplant(p["fp"], p["g"], p["teacher"], p["images"], adapter=make_adapter(8, 8).double(),
                          lambda_bd=ha[0]["lambda_bd"], **kw)
    torch.testing.assert_close(a2.weight, b2.weight, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- existing categories unchanged
def test_transplanting_leaves_existing_categories_unchanged_bit_for_bit():
    torch.manual_seed(0)
    net = TransplantNet({"a": CategoryModule(8, 4, 2), "b": CategoryModule(8, 4, 2)},
                        {"cls": ClassTask(8, 8), "seg": SegTask(8, 8, upsample=4)})
    for m in net.category_modules.values():     # non-trivial BN statistics
        m.train()
        m(torch.rand(16, 3, 16, 16))
    freeze(net)
    imgs = {c: torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i, c in enumerate("ab")}
    fwd = lambda n, x, c, t: n(x, c, t)  # noqa: E731
    before = M.snapshot(net, imgs, ["cls", "seg"], fwd)
    f_new = freeze(_seeded(5, lambda: CategoryModule(8, 4, 2)))
    teacher = {t: freeze(_seeded(6, lambda: T(8, 8, **kw))) for t, T, kw in
               (("cls", ClassTask, {}), ("seg", SegTask, {"upsample": 4}))}
    new = torch.rand(10, 3, 16, 16)
    adapters = {}
    for t in ("cls", "seg"):
        adapters[t], _ = TP.transplant(f_new, net.task_modules[t], teacher[t], new, method="back_distillation",
                                       steps=3, progress=False)
    adapters["cls"], _ = TP.transplant(f_new, net.task_modules["cls"], teacher["cls"], new, method="direct",
                                       labels=torch.tensor([0, 1, 1, 0]), steps=3, progress=False)
    net.add_category("new", f_new, adapters)
    after = M.snapshot(net, imgs, ["cls", "seg"], fwd)
    res = M.unchanged(before, after)
    assert res == {"identical": 1.0, "max_abs_change": 0.0, "changed_tensors": 0.0}
    for k, v in before["outputs"].items():
        assert torch.equal(v, after["outputs"][k])
    assert all(p.grad is None for p in net.task_modules.parameters())
    assert net(new, "new", "seg").shape == (10, 2, 16, 16)
    with pytest.raises(ValueError, match="name"):
        net.add_category("a", f_new, {})
    # the check can fail: a changed weight is caught
    with torch.no_grad():
        net.task_modules["cls"].body[0].weight[0, 0, 0, 0] += 1e-7
    bad = M.unchanged(before, M.snapshot(net, imgs, ["cls", "seg"], fwd))
    assert bad["identical"] == 0.0 and bad["changed_tensors"] == 1.0


def test_transplant_trains_only_the_adapter_and_restores_modes(planted64):
    p = planted64
    g = _seeded(1, lambda: ClassTask(8, width=8)).double().train()       # requires_grad True, train mode
    state = {k: v.clone() for k, v in g.state_dict().items()}
    h, hist = TP.transplant(p["fp"], g, p["teacher"], p["images"], method="back_target", steps=3, progress=False)
    assert g.training and all(q.grad is None for q in g.parameters())
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in state.items())
    assert isinstance(h, nn.Module) and not h.training and hist and {"step", "bt"} <= set(hist[-1])


# ----------------------------------------------------------------------------- contracts
def test_entry_point_contract_and_argument_checks(planted64):
    p = planted64
    out = TP.transplant(p["fp"], p["g"], p["teacher"], p["images"], steps=2, progress=False)
    adapter, history = out
    assert isinstance(adapter, nn.Conv2d) and isinstance(history, list) and out.adapter is adapter
    for kw, match in [(dict(method="nope"), "method"), (dict(method="direct"), "labels"),
                      (dict(steps=0), "steps"), (dict(epochs=0), "epochs"), (dict(lr=0.0), "lr"),
                      (dict(labels=torch.zeros(13)), "labels"), (dict(schedule="step"), "schedule")]:
        with pytest.raises(ValueError, match=match):
            TP.transplant(p["fp"], p["g"], p["teacher"], p["images"], progress=False, **kw)
    with pytest.raises(ValueError, match="teacher"):
        TP.transplant(p["fp"], p["g"], None, p["images"], progress=False)
    with pytest.raises(ValueError, match="teacher.*shape"):
        TP.transplant(p["fp"], p["g"], nn.Sequential(p["teacher"], nn.Flatten(0)), p["images"], progress=False)
    with pytest.raises(ValueError, match="images"):
        TP.transplant(p["fp"], p["g"], p["teacher"], p["images"][0], progress=False)
    h, _ = TP.transplant(p["fp"], p["g"], None, p["images"], method="direct", labels=torch.tensor([0, 1] * 3),
                         epochs=2, progress=False)
    assert h.weight.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_transplant_runs_on_cuda(planted64):
    p = planted64
    dev = torch.device("cuda")
    fp, g, t = (nn.Sequential(p["f"], FixedLinear(p["M"])).to(dev), p["g"].to(dev), p["teacher"].to(dev))
    h, _ = TP.transplant(fp, g, t, p["images"], steps=3, progress=False)
    assert h.weight.device.type == "cuda"
    for m in (p["f"], p["g"], p["teacher"]):
        m.cpu()


# ----------------------------------------------------------------------------- protocol, figures, widget
def test_joint_training_inputs_and_metrics():
    d = X.make_data(120, 0)
    assert set(d) == {"bird_train", "bird_test", "gen_train", "gen_test", "pool"}
    assert (d["bird_train"].labels <= 1).all() and (d["gen_train"].labels != 1).all()
    (imgs, cat), y = X.joint_inputs(d["gen_train"])
    assert y.shape == (len(imgs), 1 + 64 * 64) and set(cat.tolist()) <= {0, 1}
    net = TransplantNet({"q": CategoryModule(), "w": CategoryModule()}, {"cls": ClassTask(), "seg": SegTask()})
    out = X.JointTasks(net)(imgs[:4], cat[:4])
    assert out.shape == (4, 1 + 2 * 64 * 64) and float(X.joint_loss(out, y[:4])) > 0
    assert M.accuracy(torch.tensor([[1.0], [-1.0]]), torch.tensor([1, 1])) == 0.5
    assert M.mask_iou(torch.tensor([[[[0.0, 0]], [[1, -1]]]]), torch.tensor([[[1, 1]]])) == 0.5
    assert M.output_gap(torch.ones(4), torch.tensor([0.0, 1, 2, 3])) == pytest.approx(1.5 / (5 / 3))


def _fake_runs():
    rows = []
    for seed in (0, 1):
        for m in X.DISTILL:
            for nu in (10, 50):
                rows.append(dict(seed=seed, task="cls", teacher="planted", method=m, K=0, N_u=nu, score=0.8,
                                 gap=0.1, recovery=1.0 / nu, func_recovery=0.5, seconds=0.1))
        for k in (10, 100):
            rows.append(dict(seed=seed, task="cls", teacher="planted", method="direct", K=k, N_u=k, score=0.5 + k / 1000,
                             gap=0.2, recovery=1.2, func_recovery=1.0, seconds=0.1))
            rows.append(dict(seed=seed, task="cls", teacher="planted", method="back_distillation+direct", K=k, N_u=50,
                             score=0.85, gap=0.1, recovery=0.5, func_recovery=0.4, seconds=0.1))
    return pd.DataFrame(rows)


def test_headline_table_and_figures():
    runs = _fake_runs()
    hd = X.headline(runs, "cls", "planted")
    assert list(hd.columns) == ["seed", "zero_shot", "direct_K100", "difference"]
    assert hd.difference.tolist() == pytest.approx([0.2, 0.2])
    refs = pd.DataFrame([dict(seed=0, task="cls", teacher="planted", model="teacher", score=0.9)])
    for fig in (viz.transplant_diagram(), viz.transplant_score_curves(runs, refs),
                viz.transplant_recovery_curves(runs)):
        assert isinstance(fig, matplotlib.figure.Figure)
    w = widgets.transplant_explorer(runs, refs)
    assert isinstance(w, ipywidgets.Widget)
