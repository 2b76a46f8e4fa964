"""Options of the sigma engine (:mod:`xnn_support.sigma`): :class:`SigmaConfig`, the named presets
(:data:`PRESETS`: ``icml19``, ``icml22``, ``clean``, ``cvpr21_points``, ``points``) and :func:`config`.

Each field says which paper or code path it comes from; :meth:`SigmaConfig.validate` gives the clear
errors (sigma init out of range, unknown options, inconsistent settings).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

__all__ = ["SigmaConfig", "config", "PRESETS", "HALF_LOG_2PIE", "READOUTS"]

HALF_LOG_2PIE = 0.5 * math.log(2 * math.pi * math.e)
READOUTS = ("final", "tail", "snapshot", "target", "entropy_target")


# ------------------------------------------------------------------------------------ config
@dataclass
class SigmaConfig:
    """Every option of the optimisation; build with :func:`config` (presets + overrides)."""
    parameterization: str = "log"       # sigmoid (ICML19) | log (clean) | clamp (ICML22 parity) | clip (CVPR21 TF)
    sigma_init: Union[float, str] = 0.01  # a value, or "random" (sigmoid only: rho ~ N(0, 1))
    scale: float = 1.0                  # sigmoid: max sigma
    sigma_min: float = 1e-3             # log / clamp: bounds
    sigma_max: float = 1.0
    steps: int = 200
    lr: float = 0.05
    optimizer: str = "adam"             # adam | sgd (plain)
    lr_schedule: Any = None             # None | "cosine" | ("step", every, gamma)
    lam: Any = 3.0                      # float, or callable(step, steps) -> float
    constraint: Optional[float] = None  # hold F at this level: per-pair lam by dual ascent (lam = start)
    dual_lr: float = 0.05               # step of log lam per unit of relative constraint violation
    samples: int = 8                    # noise samples per step (M)
    antithetic: bool = False            # use (eps, -eps) pairs (M even)
    sigma_f: Any = "init"               # "init" | "power" | "none" | number | tensor(s) per layer
    sigma_f_samples: int = 0            # samples for sigma_f="init" (0: max(samples, 8))
    readout: str = "tail"
    tail: float = 0.1
    target: float = 1.5
    target_min: Optional[float] = None
    entropy_target: float = -2.8
    noise: str = "shared"               # shared (common random numbers) | independent
    data_reduction: str = "mean"        # over feature elements: mean | sum
    entropy_reduction: str = "mean"     # over units: mean | sum

    def replace(self, **kw) -> "SigmaConfig":
        return dataclasses.replace(self, **kw)

    def validate(self) -> "SigmaConfig":
        def bad(msg):
            raise ValueError(f"SigmaConfig: {msg}; pass a valid value for that field (an override such as "
                             "steps=200, or SigmaConfig.replace)")
        if self.parameterization not in ("sigmoid", "log", "clamp", "clip"):
            bad(f"parameterization must be sigmoid, log, clamp or clip, got {self.parameterization!r}")
        for nm in ("steps", "samples"):
            v = getattr(self, nm)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad(f"{nm} must be a positive integer, got {v!r}")
        if self.antithetic and self.samples % 2:
            bad(f"antithetic noise needs an even number of samples, got {self.samples}")
        for nm in ("lr", "scale", "sigma_min", "sigma_max"):
            v = getattr(self, nm)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                bad(f"{nm} must be a positive finite number, got {v!r}")
        if self.sigma_min >= self.sigma_max:
            bad(f"sigma_min ({self.sigma_min}) must be below sigma_max ({self.sigma_max})")
        s0 = self.sigma_init
        if isinstance(s0, str):
            if s0 != "random" or self.parameterization != "sigmoid":
                bad(f"sigma_init must be a number (or 'random' with parameterization='sigmoid'), got {s0!r}")
        else:
            lo, hi = (0.0, self.scale) if self.parameterization == "sigmoid" else (self.sigma_min, self.sigma_max)
            ok = isinstance(s0, (int, float)) and math.isfinite(s0) and (
                lo < s0 < hi if self.parameterization == "sigmoid" else lo <= s0 <= hi)
            if not ok:
                bad(f"sigma init {s0!r} is out of range for parameterization {self.parameterization!r}: "
                    f"it must lie in {'(' if self.parameterization == 'sigmoid' else '['}{lo}, {hi}"
                    f"{')' if self.parameterization == 'sigmoid' else ']'}")
        if self.optimizer not in ("adam", "sgd"):
            bad(f"optimizer must be adam or sgd, got {self.optimizer!r}")
        ls = self.lr_schedule
        if not (ls is None or ls == "cosine" or (isinstance(ls, (tuple, list)) and len(ls) == 3 and ls[0] == "step"
                                                 and int(ls[1]) >= 1 and 0 < float(ls[2]) <= 1)):
            bad(f"lr_schedule must be None, 'cosine' or ('step', every, gamma), got {ls!r}")
        if not callable(self.lam) and (not isinstance(self.lam, (int, float)) or not math.isfinite(self.lam)
                                       or self.lam < 0):
            bad(f"lam must be a non-negative number or a callable(step, steps), got {self.lam!r}")
        if self.constraint is not None and (not isinstance(self.constraint, (int, float))
                                            or not math.isfinite(self.constraint) or self.constraint <= 0):
            bad(f"constraint must be None or a positive number (the target F), got {self.constraint!r}")
        if not isinstance(self.dual_lr, (int, float)) or not self.dual_lr > 0:
            bad(f"dual_lr must be positive, got {self.dual_lr!r}")
        if self.constraint is not None and callable(self.lam):
            bad("constraint adapts lam itself: give lam as a number (its starting value)")
        if self.readout not in READOUTS:
            bad(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if not 0 < self.tail <= 1:
            bad(f"tail must be a fraction in (0, 1], got {self.tail!r}")
        if self.noise not in ("shared", "independent"):
            bad(f"noise must be 'shared' or 'independent', got {self.noise!r}")
        for nm in ("data_reduction", "entropy_reduction"):
            if getattr(self, nm) not in ("mean", "sum"):
                bad(f"{nm} must be 'mean' or 'sum', got {getattr(self, nm)!r}")
        if isinstance(self.sigma_f, str) and self.sigma_f not in ("init", "power", "none"):
            bad(f"sigma_f must be 'init', 'power', 'none', a number or tensors, got {self.sigma_f!r}")
        return self


#: Named settings. ``icml19``: the official word-level code (Interpreter.py) except the read-out
#: (tail average; ``readout="snapshot"`` is the code's). ``icml22``: the deepinfo noise layer and
#: x-step. ``clean``: xnn's default for images/points: log-sigma, Adam, cosine decay, several samples,
#: tail average, and F held at 1.5 (the ICML22 read-out level) by a per-pair lam adapted by dual
#: ascent from lam = 3 (the optimum of a locally quadratic F sits at F = lam / 2). ``cvpr21_points``:
#: the point-cloud paper's TF settings for notebook 06 (pass its sigma_f constant).
PRESETS: Dict[str, Dict[str, Any]] = {
    "icml19": dict(parameterization="sigmoid", scale=0.5, sigma_init="random", steps=5000, lr=0.01,
                   optimizer="adam", lam=0.1, samples=1, sigma_f="power", readout="tail"),
    "icml22": dict(parameterization="clamp", sigma_init=0.01, sigma_min=1e-3, sigma_max=1.0, steps=100,
                   lr=1e-4, optimizer="sgd", lam=5.0, samples=8, sigma_f="init", readout="target", target=1.5),
    "clean": dict(parameterization="log", sigma_init=0.01, sigma_min=1e-3, sigma_max=1.0, steps=200, lr=0.05,
                  optimizer="adam", lr_schedule="cosine", lam=3.0, constraint=1.5, samples=8, sigma_f="init",
                  readout="tail"),
    # notebook 06 (spec 06 section 2.2, TF code): one sigma per point, clipped at 0.08, sum over points
    # of log sigma, ||f~ - f||^2 summed over the feature, read where F is closest to 2 among F >= 0.5;
    # sigma_f: pass the model's constant (a number)
    "cvpr21_points": dict(parameterization="clamp", sigma_init=0.03, sigma_min=1e-4, sigma_max=0.08, steps=2001,
                          lr=1e-4, optimizer="adam", lam=0.004, samples=1, data_reduction="sum",
                          entropy_reduction="sum", readout="target", target=2.0, target_min=0.5, sigma_f=1.0),
    # notebook 06, clean estimator (spec section 5 [MEAS]): 8 noise samples per step, cosine-annealed
    # lr in log-sigma space, F held at 2 by dual ascent (the TF read-out level, made exact; lam starts at 4,
    # the optimum of a locally quadratic F at F = lam / 2), tail read-out
    "points": dict(parameterization="log", sigma_init=0.03, sigma_min=1e-4, sigma_max=0.08, steps=200, lr=0.05,
                   optimizer="adam", lr_schedule="cosine", lam=4.0, constraint=2.0, samples=8,
                   data_reduction="sum", entropy_reduction="mean", readout="tail", tail=0.1, sigma_f=1.0),
}


def config(preset: Union[str, SigmaConfig, None] = "clean", **overrides) -> SigmaConfig:
    """A validated :class:`SigmaConfig`: a preset name (see :data:`PRESETS`) or a config, plus overrides.

    An explicit ``lam`` with a config that holds F by a constraint (``clean``, ``points``) is refused
    unless ``constraint`` is given too (``constraint=None`` fixes lam): it would otherwise be silently
    replaced by the dual ascent, whose starting value it only is."""
    if isinstance(preset, SigmaConfig):
        base = preset
    elif preset is None:
        base = SigmaConfig()
    elif preset in PRESETS:
        base = SigmaConfig(**PRESETS[preset])
    else:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)} or pass a SigmaConfig")
    bad = [k for k in overrides if k not in {f.name for f in dataclasses.fields(SigmaConfig)}]
    if bad:
        raise ValueError(f"unknown SigmaConfig options {bad}; valid: {[f.name for f in dataclasses.fields(SigmaConfig)]}")
    if "lam" in overrides and "constraint" not in overrides and base.constraint is not None:
        name = preset if isinstance(preset, str) else "this config"
        raise ValueError(
            f"lam={overrides['lam']!r} would be ignored: {name} holds F at {base.constraint} by adapting lam "
            f"(constraint={base.constraint}; lam is only its starting value). Pass constraint=None as well to fix "
            f"lam at {overrides['lam']!r} (F is then free), or leave lam out to keep F held")
    return base.replace(**overrides).validate()
