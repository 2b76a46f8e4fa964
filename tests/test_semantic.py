"""Paper 03 (semantic + quantitative explanations): planted-truth tests of the additive explainer
(recovery of planted weights, an irrelevant concept at 0, the prior deciding a split between
duplicated concepts, image-dependent weights) and of the paste/mask probe on planted models."""
import math

import pytest
import torch
from torch import nn

from xnn_support.papers.semantic import method as S
from xnn_support.papers.semantic import experiments as SF
from xnn_support.data import concept_faces


pytestmark = pytest.mark.usefixtures("one_thread")


def _planted(n=384, c=5, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    concepts = torch.randn(n, c, generator=g) * torch.linspace(0.5, 3.0, c) + 0.3
    w = torch.tensor([1.5, -0.7, 2.0, 0.0, 0.3])[:c]   # concept 3 is irrelevant
    return images, concepts, w, 0.5 + concepts @ w


def _linear_net(c, size=8):
    """A linear explainer g(I) = W vec(I) + b started near 0 (like ExplainerCNN's head)."""
    torch.manual_seed(0)
    lin = nn.Linear(3 * size * size, c)
    nn.init.normal_(lin.weight, 0, 1e-3)
    nn.init.zeros_(lin.bias)
    return nn.Sequential(nn.Flatten(), lin)


@pytest.mark.parametrize("init,epochs", [(None, 80), ("lstsq", 25)])
def test_planted_linear_target_recovers_weights_and_ignores_irrelevant_concept(init, epochs):
    """target = b + sum_i w_i y_i exactly: alpha(I) ~= w on every image, alpha of the irrelevant
    concept ~= 0. init=None: alpha is learnt from 0 by distillation + the prior."""
    images, concepts, w, y = _planted()
    ex = S.fit_explainer(images, concepts, y, epochs=epochs, seed=0, init=init, net=_linear_net(5),
                         lr=1e-2, progress=False)
    a = ex.alpha(images)
    assert a.shape == (len(images), 5)
    assert torch.allclose(a.mean(0), w, atol=0.03), (a.mean(0), w)
    assert abs(float(a[:, 3].mean())) < 0.01 and float(a[:, 3].abs().max()) < 0.1   # irrelevant concept
    assert abs(ex.bias - 0.5) < 0.1
    assert ex.explain(images, concepts, y).fidelity() > 0.995


def test_without_prior_the_fit_is_good_but_alpha_is_not_pinned():
    """The bias-interpreting problem: with alpha learnt from 0 and no prior, distillation alone
    reaches the same fidelity but with a different split (we only check the fit here)."""
    images, concepts, w, y = _planted()
    ex = S.fit_explainer(images, concepts, y, epochs=80, seed=0, init=None, prior=None, net=_linear_net(5),
                         lr=1e-2, progress=False)
    assert ex.prior is None and all(h["prior"] == 0 for h in ex.history)
    assert ex.explain(images, concepts, y).fidelity() > 0.99


def test_default_cnn_explainer_recovers_weights():
    images, concepts, w, y = _planted(n=256)
    ex = S.fit_explainer(images, concepts, y, epochs=10, seed=0, width=4, progress=False)
    a = ex.alpha(images)
    assert torch.allclose(a.mean(0), w, atol=0.02)
    assert float(a[:, 3].abs().max()) < 0.05
    assert len(ex.history) == 10 and ex.history[-1]["lambda"] < ex.history[0]["lambda"]


def test_additive_identity_shares_and_units():
    images, concepts, w, y = _planted(n=64)
    ex = S.fit_explainer(images, concepts, y, epochs=2, seed=0, net=_linear_net(5), progress=False)
    E = ex.explain(images, concepts, y)
    assert torch.allclose(E.prediction, E.bias + E.contributions.sum(1))
    assert torch.allclose(E.prediction, ex.predict(images, concepts), atol=1e-5)
    assert torch.allclose(E.residual, y - E.prediction)
    assert torch.allclose(E.shares().sum(1), torch.ones(64), atol=1e-5)
    assert math.isclose(float(E.importance().sum()), 1.0, rel_tol=1e-5)
    u = E.unexplained_share()
    assert bool(((u >= 0) & (u <= 1)).all())
    eff = E.effective_concepts()
    assert bool(((eff >= 1 - 1e-5) & (eff <= 5 + 1e-5)).all())
    top = E.top_reasons(0, k=3)
    assert len(top) == 3 and abs(top[0][1]) >= abs(top[1][1]) >= abs(top[2][1])
    # raw units: rescaling a concept rescales its alpha inversely, the explanation is unchanged
    ex2 = S.fit_explainer(images, concepts * torch.tensor([10.0, 1, 1, 1, 1]), y, epochs=2, seed=0,
                          net=_linear_net(5), progress=False)
    assert torch.allclose(ex2.alpha(images)[:, 0] * 10, ex.alpha(images)[:, 0], rtol=1e-3, atol=1e-4)


def test_prior_decides_split_between_duplicated_concepts():
    g = torch.Generator().manual_seed(1)
    n = 384
    images = torch.rand(n, 3, 8, 8, generator=g)
    c1, c2 = torch.randn(n, generator=g), torch.randn(n, generator=g)
    concepts = torch.stack([c1, c1 + 0.01 * torch.randn(n, generator=g), c2], 1)
    y = 1.0 * c1 + 0.5 * c2
    w = torch.tensor([1.0, 0.0, 0.5])           # the planted split: all on the first copy
    ex = S.fit_explainer(images, concepts, y, epochs=25, seed=0, prior=w, beta=2.0, net=_linear_net(3),
                         init=None, lr=1e-2, progress=False)
    a = ex.alpha(images).mean(0)
    assert float(a[0]) > 0.85 and abs(float(a[1])) < 0.15 and abs(float(a[2]) - 0.5) < 0.05
    # the reversed prior moves the weight to the second copy; the sum stays determined by the data
    ex_r = S.fit_explainer(images, concepts, y, epochs=25, seed=0, prior=torch.tensor([0.0, 1.0, 0.5]),
                           beta=2.0, net=_linear_net(3), init=None, lr=1e-2, progress=False)
    b = ex_r.alpha(images).mean(0)
    assert float(b[1]) > 0.85 and abs(float(b[0])) < 0.15
    assert abs(float(a[0] + a[1]) - 1.0) < 0.05 and abs(float(b[0] + b[1]) - 1.0) < 0.05


def test_image_dependent_weights_beat_a_global_linear_model():
    """Two contexts (dark / bright images) with different planted weights: only an image-dependent
    alpha(I) reaches fidelity ~1 (spec section 8, context test)."""
    g = torch.Generator().manual_seed(2)
    n = 512
    ctx = torch.rand(n, generator=g) < 0.5
    images = torch.where(ctx[:, None, None, None], 0.9, 0.1) + 0.05 * torch.rand(n, 3, 8, 8, generator=g)
    concepts = torch.randn(n, 3, generator=g)
    w = torch.where(ctx[:, None], torch.tensor([2.0, 0.0, 1.0]), torch.tensor([-1.0, 1.5, 0.0]))
    y = (concepts * w).sum(1)
    ex = S.fit_explainer(images, concepts, y, epochs=40, seed=0, net=_linear_net(3), lr=2e-2,
                         prior=None, progress=False)
    wl, bl = S.lstsq_weights(concepts, y)
    r2_global = S.r2_score(bl + concepts @ wl, y)
    r2_ex = ex.explain(images, concepts, y).fidelity()
    assert r2_ex > 0.97 and r2_global < 0.7, (r2_ex, r2_global)
    a = ex.alpha(images)
    assert torch.allclose(a[ctx].mean(0), torch.tensor([2.0, 0.0, 1.0]), atol=0.15)
    assert torch.allclose(a[~ctx].mean(0), torch.tensor([-1.0, 1.5, 0.0]), atol=0.15)


def test_cosine_prior_schedule_and_determinism():
    images, concepts, w, y = _planted(n=96)
    kw = dict(epochs=3, seed=3, prior_loss="cosine", net=None, width=4, progress=False)
    a1 = S.fit_explainer(images, concepts, y, **kw).alpha(images)
    a2 = S.fit_explainer(images, concepts, y, **kw).alpha(images)
    assert torch.equal(a1, a2)
    assert S.prior_weight(0, 10) == 1.0
    assert S.prior_weight(10, 10, beta=2.0, eta=3.0) == pytest.approx(2.0 * math.sqrt(10 / 40))


def test_bad_inputs_are_refused():
    images, concepts, w, y = _planted(n=16)
    with pytest.raises(ValueError, match="concepts"):
        S.fit_explainer(images, concepts[:10], y)
    with pytest.raises(ValueError, match="NaN"):
        S.fit_explainer(images, concepts.clone().fill_(float("nan")), y)
    with pytest.raises(ValueError, match="target"):
        S.fit_explainer(images, concepts, y[:3])
    with pytest.raises(ValueError, match="prior"):
        S.fit_explainer(images, concepts, y, prior=torch.ones(7))
    with pytest.raises(ValueError, match="prior_loss"):
        S.fit_explainer(images, concepts, y, prior_loss="kl")
    with pytest.raises(ValueError, match="images"):
        S.fit_explainer(images[:, 0], concepts, y)
    ex = S.fit_explainer(images, concepts, y, epochs=1, net=_linear_net(5), progress=False)
    with pytest.raises(ValueError, match="concepts"):
        ex.explain(images, concepts[:, :3])
    with pytest.raises(ValueError, match="margin"):
        S.target_scores(nn.Sequential(nn.Flatten(), nn.Linear(192, 3)), images, output="margin")


def test_concept_and_target_scores():
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 4))
    x = torch.rand(10, 3, 8, 8)
    logits = net(x).detach()
    assert torch.allclose(S.concept_scores(net, x, kind="logit", batch_size=3), logits, atol=1e-6)
    s = S.concept_scores(net, x, outputs=[1, 3])
    assert s.shape == (10, 2) and torch.allclose(s, 2 * torch.sigmoid(logits[:, [1, 3]]) - 1, atol=1e-6)
    two = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
    z = two(x).detach()
    assert torch.allclose(S.target_scores(two, x, output="margin"), z[:, 1] - z[:, 0], atol=1e-6)


class _Redness(nn.Module):
    """A planted 'lipstick' model that only looks at pinkness (R - G) of the whole face: rosy
    cheeks raise it, so pasting cheeks must raise the score and masking must lower it."""

    def __init__(self, use_cheeks=True):
        super().__init__()
        self.use = use_cheeks
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        s = (x[:, 0] - x[:, 1]).mean((1, 2)) * 100 if self.use else torch.zeros(len(x))
        return torch.stack([torch.zeros_like(s), s + self.dummy], 1)


def test_paste_mask_on_planted_models():
    ds = concept_faces(24, 32, seed=5)
    pm = SF.paste_mask(_Redness(True), ds, "rosy_cheeks", group="lipstick")
    assert bool((pm.pasted > pm.masked).all()) and pm.effect > 0
    tab = pm.table()
    assert sum(v["n"] for v in tab.values()) == 24
    pm0 = SF.paste_mask(_Redness(False), ds, "rosy_cheeks")
    assert pm0.effect == 0.0
    eff = SF.attribute_effects(_Redness(True), ds, output="margin")
    assert eff.shape == (24, len(ds.attribute_names))
    assert bool((eff[:, ds.attribute_names.index("rosy_cheeks")] > 0).all())
    with pytest.raises(ValueError, match="unknown attribute"):
        SF.paste_mask(_Redness(), ds, "freckles")


def test_recovered_weights_and_helpers():
    g = torch.Generator().manual_seed(0)
    att = (torch.rand(200, 3, generator=g) < 0.5).float()
    conc = 2 * att - 1                       # ideal signed concept scores: step = 2
    w = torch.tensor([1.0, -0.5, 0.0])
    E = S.Explanation(alpha=(w / 2).expand(200, 3).clone(), concepts=conc, bias=0.0, names=["a", "b", "c"])
    assert torch.allclose(SF.recovered_weights(E, att), w)
    assert torch.allclose(SF.concept_accuracy(conc, att), torch.ones(3))
    st = SF.mean_sd_by_key([{"x": 1.0, "y": float("nan")}, {"x": 3.0, "y": 2.0}])
    assert st["x"] == (2.0, math.sqrt(2.0), 2) and st["y"] == (2.0, 0.0, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_explainer_on_cuda():  # pragma: no cover - no GPU in CI
    images, concepts, w, y = _planted(n=64)
    ex = S.fit_explainer(images.cuda(), concepts.cuda(), y.cuda(), epochs=2, width=4, progress=False)
    assert ex.alpha(images.cuda()).device.type == "cuda"
    assert ex.explain(images.cuda(), concepts.cuda(), y.cuda()).alpha.device.type == "cpu"


def test_face_experiments_run_end_to_end(tmp_path, monkeypatch):
    """Tiny sizes: checks the plumbing and the result fields (the numbers mean nothing here)."""
    monkeypatch.setenv("XNN_CACHE", str(tmp_path))
    r = SF.run_attractive(0, size=32, n_train=64, n_test=24, net_epochs=1, explainer_epochs=1, n_effect=6,
                          progress=False)
    assert set(SF.VARIANTS) == set(r.explanations)
    for key in ("fidelity", "effect_err_scratch", "oracle_err", "concept_acc", "performer_r2"):
        assert key in r.metrics and math.isfinite(r.metrics[key])
    assert r.vectors["recovered"].shape == (12,) and r.explanation.alpha.shape == (24, 12)
    b = SF.run_bias(0, concept_model=r.models["concepts"], size=32, n_train=64, n_test=24, net_epochs=1,
                    explainer_epochs=1, progress=False)
    assert set(b.paste_mask) == {"biased", "unbiased"}
    assert {"biased/cheek_effect", "unbiased/cheek_share", "biased/no_lipstick/pasted"} <= set(b.metrics)
    originals, pasted, masked, scores, rows = SF.paste_mask_examples(b)
    assert originals.shape == pasted.shape == masked.shape == (2, 3, 32, 32) and scores["biased"].shape == (2, 3)
