"""Benchmark rows of paper 06 (point-cloud architecture utilities), one torch thread.

* ``pointcloud/attack``: :func:`~xnn_support.pointcloud.attack` with all (cloud x target) rows in one
  batch vs ``engine="loop"`` (one row at a time, the official batch-1 loop) with the same steps, same
  initial deltas and same model (Mini-PointNet++, geometry recomputed on X + delta every step, as
  the official attack). Target: at least 10x (ratio <= 0.1).
* ``pointcloud/sigma``: :func:`~xnn_support.pointcloud.point_sigma` (fixed sampling) vs its floor =
  steps x one forward + backward of the same network on the same (samples x clouds) batch with the
  cached geometry. Target ratio <= 1.3.
"""
from __future__ import annotations

import time

import torch

from ...bench import Row, benchmark, one_thread, op_profile, paired
from ...models import build
from ...models.pointnets_base import take
from ..discarding.bench_equal import equal_accuracy_row, ladder, pearson
from .experiments import PROFILES, load_clouds, trained_model
from .method import SATURATED, _features, _layer, attack, drop_outsider, feature_scale, point_sigma


def _setup(n_clouds: int, points: int = 128):
    model = build("pointnet2", num_classes=10, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_clouds, points, 3, generator=g)
    x = x / x.norm(dim=-1, keepdim=True).amax(1, keepdim=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, x


def _trained_setup(n_clouds: int, quick: bool):
    """A Mini-PointNet++ trained with notebook 06's recipe (its ``default`` profile: 128 points, 24
    epochs, seed 0; ``smoke`` when quick) on digits3d, from the checkpoint cache when 06 already
    trained it, and the first ``n_clouds`` test clouds."""
    budget = dict(PROFILES["smoke" if quick else "default"])
    parts = load_clouds("digits3d", budget["points"], budget["n_train"])
    model = trained_model(parts, "pointnet2", "aligned", 0, budget).model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, parts[2].points[:n_clouds].contiguous()


@benchmark("pointcloud/attack")
@one_thread
def _attack_rows(quick: bool):
    model, x = _setup(4 if quick else 8)
    y = torch.zeros(x.shape[0], dtype=torch.long)
    steps, targets = (10 if quick else 30), (3 if quick else 9)
    kw = dict(targets=targets, steps=steps, seed=0, init="zeros")  # zero start: rows run every step in both
    t_b, t_l = paired(lambda: attack(model, x, y, **kw), lambda: attack(model, x, y, engine="loop", **kw),
                      repeat=1 if quick else 2, warmup=0)
    rows = x.shape[0] * targets
    short = dict(kw, steps=min(steps, 10))   # the CPU profile (issue 23: 10x is a GPU figure; say why here)
    prof_b = op_profile(lambda: attack(model, x, y, **short))
    prof_l = op_profile(lambda: attack(model, x, y, engine="loop", **short))
    return [Row(f"attack: {x.shape[0]} clouds x {targets} targets = {rows} rows, N = {x.shape[1]}, {steps} steps",
                t_b, t_l, "per-(cloud, target) loop, same steps", target="ratio <= 0.1 (>= 10x)",
                ok=t_b / t_l <= 0.1, note=f"{t_l / t_b:.1f}x faster; CPU profile of {short['steps']} steps, batched: "
                                          f"{prof_b}; loop: {prof_l}")]


@benchmark("pointcloud/sigma")
@one_thread
def _sigma_rows(quick: bool):
    model, x = _setup(8 if quick else 16)
    steps, M = (10 if quick else 40), 8
    geom = model.geometry(x)
    idx = torch.arange(x.shape[0]).repeat(M)
    gm = take(geom, idx)
    xin = x[idx]

    def floor():
        for _ in range(steps):
            xi = xin.clone().requires_grad_(True)
            f = model(xi, geometry=gm)  # logits; the feature is one layer earlier (head.2): same cost class
            torch.autograd.grad(f.pow(2).sum(), xi)

    def ours():
        point_sigma(model, x, steps=steps, samples=M, sigma_f=1.0, batch_size=None)

    t_o, t_f = paired(ours, floor, repeat=1 if quick else 3)
    return [Row(f"point sigma: {x.shape[0]} clouds x {M} samples, N = {x.shape[1]}, {steps} steps", t_o, t_f,
                "forward + backward floor (cached geometry)", target="ratio <= 1.3", ok=t_o / t_f <= 1.3)]


# ------------------------------------------------------------------------------------ equal accuracy
def _tf_style_sigma(model, x, sigma_f: float, *, steps: int = 2001, lam: float = 0.004, lr: float = 1e-4,
                    seed: int = 0, readout: str = "target", tail: float = 0.2) -> torch.Tensor:
    """The official TF loop (ada-shen/utility noisy.py, spec 06 section 2.2) on all B clouds in one batch:
    sigma (B, N) from 0.03, clipped to +-0.08 in the forward, one fresh noise sample per step, the model
    run on concat([X, X~]) with the clean cloud's geometry (fixed sampling), L = mean_b ||f~ - f||^2 /
    sigma_f - lam mean_b sum_i log|sigma_c|, Adam. ``readout``: "target" (the code's: the step where the
    batch F is closest to 2 among F >= 0.5) or "tail" (the mean clipped |sigma| of the last ``tail`` of
    the steps: the converged answer of a long run, its one-sample jitter averaged out)."""
    if readout not in ("target", "tail"):
        raise ValueError(f"readout must be 'target' or 'tail', got {readout!r}")
    B, N = x.shape[:2]
    g = torch.Generator().manual_seed(seed)
    feats = _features(model, _layer(model, None), model.geometry(x), None)
    idx2 = torch.arange(B).repeat(2)
    sigma = torch.full((B, N), 0.03, requires_grad=True)
    opt = torch.optim.Adam([sigma], lr=lr)
    best, best_key = sigma.detach().clone(), float("inf")
    acc, n_acc, first_tail = torch.zeros(B, N), 0, steps - max(1, int(tail * steps))
    for t in range(steps):
        sc = sigma.clamp(-0.08, 0.08)
        xt = x + sc[..., None] * torch.randn(B, N, 3, generator=g)
        f = feats([torch.cat([x, xt])], idx2)[0]
        Ft = (f[B:] - f[:B].detach()).pow(2).reshape(B, -1).sum(1).mean() / sigma_f
        loss = Ft - lam * sc.abs().log().sum(1).mean()
        Fv = float(Ft.detach())
        key = abs(Fv - 2.0) if Fv >= 0.5 else float("inf")
        if key < best_key:
            best, best_key = sigma.detach().clone(), key
        opt.zero_grad()
        loss.backward()
        opt.step()
        if t >= first_tail:
            acc += sigma.detach().clamp(-0.08, 0.08).abs()
            n_acc += 1
    return acc / n_acc if readout == "tail" else best


def _saturation(model, x, sf, steps, kw, ref_raw) -> str:
    """Where the two answers differ: the share of points at the clip (0.08) in ours (``steps``, before
    drop_outsider) and in the reference's seed-0 run, the Jaccard overlap of those sets, the r on the
    points neither saturates, and the same engine with the TF code's absorbing forward clip
    (``parameterization="clip"``), which saturates more the larger its step (issue 23)."""
    def one(**extra):
        s = point_sigma(model, x, steps=steps, samples=8, sigma_f=sf, batch_size=None, drop=False,
                        **dict(kw, **extra)).sigma.abs()
        a, b = s > SATURATED, ref_raw > SATURATED
        free = ~(a | b)
        return (f"{float(a.float().mean()):.3f} at the clip (reference {float(b.float().mean()):.3f}, Jaccard "
                f"{float((a & b).sum()) / max(1.0, float((a | b).sum())):.3f}), r on the points neither saturates "
                f"{pearson(s[free], ref_raw[free]):.3f}")
    clip = one(parameterization="clip") if kw else ""   # kw: the TF-objective engine; the preset has no clip form
    return (f"at {steps} steps ours {one()}" + (f"; with the absorbing clip instead of the projection: {clip}"
                                                if clip else ""))


@benchmark("pointcloud/equal_accuracy_sigma")
@one_thread
def _sigma_equal_rows(quick: bool):
    """Our estimator on a ladder of step counts vs the TF loop's converged answer (r >= 0.95 per cloud,
    mean over clouds, both after drop_outsider); see xnn_support/papers/discarding/bench_equal.py.

    On a trained Mini-PointNet++ (notebook 06's recipe) and real digits3d test clouds (on a random-init
    net, the first version of this row, F falls below 2 within ~10 steps and the TF read-out lands at
    step ~7, where sigma is still its start value). Measured (issue 23, 8 clouds): the official 2001-step
    answer is not converged (r 0.56 with the same loop's 12000-step answer), so the reference is the
    12000-step run, tail-averaged. One such run repeats itself only to r 0.93 (noise seed 0 vs 1, 4
    clouds), below the 0.95 target, because the clip at 0.08 stops the gradient of the ~40% of points
    that reach it, so which points saturate depends on the noise path. The converged answer of a
    stochastic optimiser is its expectation over the noise, so the reference answer is the mean of
    ``ref_seeds`` such runs (noise seeds 0..K-1); the reference's time is one run's, and its own accuracy
    (one run against the mean of the other K-1, which understates it) is printed with the row. Two rows:
    the notebook's ``points`` preset (F held at 2) and the engine on the TF objective (``cvpr21_points``:
    fixed lambda) with 8 samples, Adam 3e-3 and cosine decay.

    Measured 2026-12-02 (8 clouds): one reference run 132 s, r 0.954 against the mean of the other three;
    the TF-objective engine levels off at r 0.89 (400 steps, 15.6 s; 800 steps the same). The gap is the
    clip: 37% of the reference's points end at 0.08, ours 32% (Jaccard 0.81), and on the points neither
    saturates r is 0.974. The TF code clips in the forward, so a sigma that crosses 0.08 on the way gets no
    gradient again; which points it traps depends on the step size (the same engine with that absorbing
    clip, ``parameterization="clip"``, at lr 3e-3 traps 58%). A run 10x shorter cannot follow the lr 1e-4
    path that decides the reference's saturated set."""
    model, x = _trained_setup(4 if quick else 8, quick)
    sf = feature_scale(model, x)
    ref_steps, ref_seeds = (30, 2) if quick else (12000, 4)
    lam = 0.004 * 1024 / x.shape[1]   # the TF lambda for N = 1024 points, scaled so that F* = lam N / 2 stays 2
    rungs = (10,) if quick else (25, 50, 100, 200, 400, 800)
    engines = {"points preset (log-sigma, Adam 0.05 cosine, 8 samples, F held at 2, tail)": {},
               "TF objective (cvpr21_points: clamp, fixed lambda) with 8 samples, Adam 3e-3 cosine, tail":
                   dict(preset="cvpr21_points", lam=lam, lr=3e-3, lr_schedule="cosine", readout="tail")}
    raw, times = [], []
    for k in range(ref_seeds):
        t0 = time.perf_counter()
        raw.append(_tf_style_sigma(model, x, sf, steps=ref_steps, lam=lam, readout="tail", seed=k))
        times.append(time.perf_counter() - t0)
    runs, raw0 = [drop_outsider(r) for r in raw], raw[0].abs()
    t_ref, ref = min(times), torch.stack(runs).mean(0)
    own = [sum(pearson(runs[k][b], torch.stack([r[b] for j, r in enumerate(runs) if j != k]).mean(0))
               for b in range(x.shape[0])) / x.shape[0] for k in range(ref_seeds)]
    pair = sum(pearson(a, b) for a, b in zip(runs[0], runs[1])) / x.shape[0]
    rows = []
    for label, kw in engines.items():
        def ours(T, kw=kw):
            ps = point_sigma(model, x, steps=T, samples=8, sigma_f=sf, batch_size=None, **kw)
            return ps.seconds, list(ps.sigma)

        ours(rungs[0])
        before = ladder(ours, rungs, [torch.arange(float(x.shape[1]))] * x.shape[0])   # timings only
        after = ladder(ours, rungs, list(ref))
        sat = _saturation(model, x, sf, rungs[-1], kw, raw0)
        settings = (f"{x.shape[0]} clouds x N = {x.shape[1]}, Mini-PointNet++ trained (06 recipe, seed 0) on digits3d, "
                    f"its test clouds, sigma_f from feature_scale; reference: TF loop (1 sample, Adam 1e-4, lambda "
                    f"{lam:g} = 0.004 x 1024 / N) {ref_steps} steps, mean of the last 20%, averaged over noise seeds "
                    f"0-{ref_seeds - 1} (time: one run, best of {ref_seeds}); the reference's own accuracy: one run "
                    f"against the mean of the other {ref_seeds - 1} r {sum(own) / len(own):.3f} (seeds: "
                    f"{', '.join(f'{v:.3f}' for v in own)}), seed 0 against seed 1 r {pair:.3f}; ours: {label}; {sat}")
        rows.append(equal_accuracy_row(
            f"point sigma to r >= 0.95 with the TF {ref_steps}-step answer (mean of {ref_seeds} noise seeds, "
            f"{x.shape[0]} clouds), {'points preset' if not kw else 'TF objective'}", t_ref,
            f"TF loop, {ref_steps} steps, one run", before, after, quick, settings))
    return rows
