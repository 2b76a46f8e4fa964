"""The claims scoreboard: each notebook declares its paper's claims, one function decides each.

A claim lives in the notebook's ``metadata.xnn.claims``::

    {"id": "01-instability", "text": "graph nodes are more stable than filter peaks",
     "metric": "graph/nodes_minus_filters_instability", "direction": "-", "paper": -0.2,
     "section": "Location instability"}

``metric`` is a recorded metric holding the *effect* (a difference or relative change, 0 = no
effect); ``direction`` is the sign the paper reports (``"+"`` or ``"-"``); ``paper`` the paper's
value of the same effect, or null where the paper gives none. The per-seed values are the metric's
``per_seed`` field in the ledger (``record(..., per_seed=[...])``); without them the one recorded
value counts as a single seed.

:func:`verdict` decides from the per-seed values alone:

* ``reproduced``: n >= 2, every seed has the paper's sign and the mean is beyond its sd
  (|mean| > sd);
* ``not reproduced``: the mean has the opposite sign or is zero, and no seed has the paper's sign;
* ``mixed``: anything in between (some seeds agree; or all agree but the mean is within its sd;
  or a single value with the paper's sign, which cannot be called reproduced);
* ``not run``: the metric was not recorded (or holds no finite number).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..core.utils import mean_sd

__all__ = ["verdict", "Claim", "ClaimResult", "parse_claims", "score_claims", "VERDICTS", "ClaimError"]

VERDICTS = ("reproduced", "mixed", "not reproduced", "not run")


class ClaimError(ValueError):
    """A claim in a notebook's metadata is malformed (the message names the notebook and the field)."""


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    metric: str
    direction: str              # "+" or "-"
    paper: Optional[float] = None
    section: str = ""


@dataclass
class ClaimResult:
    claim: Claim
    notebook: str
    verdict: str
    mean: float = float("nan")
    sd: float = float("nan")
    n: int = 0
    agree: int = 0              # seeds with the paper's sign

    @property
    def effect(self) -> str:
        if self.n == 0:
            return "-"
        return f"{self.mean:+.4g} ± {self.sd:.2g} ({self.n} seed{'s' if self.n != 1 else ''}, {self.agree} agree)"


def verdict(values: Sequence[float], direction: str) -> str:
    """``reproduced`` / ``mixed`` / ``not reproduced`` / ``not run`` for per-seed effect values."""
    if direction not in ("+", "-"):
        raise ClaimError(f"direction must be '+' or '-', got {direction!r}")
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return "not run"
    sign = 1.0 if direction == "+" else -1.0
    agree = sum(1 for x in v if sign * x > 0)
    ms = mean_sd(v)
    if len(v) >= 2 and agree == len(v) and abs(ms.mean) > ms.sd:
        return "reproduced"
    if sign * ms.mean <= 0 and agree == 0:
        return "not reproduced"
    return "mixed"


def parse_claims(notebook: str, raw: Any) -> List[Claim]:
    """The claims of one notebook's metadata, checked (a malformed one raises :class:`ClaimError`)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ClaimError(f"{notebook}: metadata.xnn.claims must be a list, got {type(raw).__name__}")
    out, seen = [], set()
    for i, c in enumerate(raw):
        where = f"{notebook}: claims[{i}]"
        if not isinstance(c, Mapping):
            raise ClaimError(f"{where} must be an object")
        for k in ("id", "text", "metric", "direction"):
            if not isinstance(c.get(k), str) or not c[k].strip():
                raise ClaimError(f"{where}: field {k!r} is required (a non-empty string)")
        if c["direction"] not in ("+", "-"):
            raise ClaimError(f"{where}: direction must be '+' or '-', got {c['direction']!r}")
        if c["id"] in seen:
            raise ClaimError(f"{where}: duplicate id {c['id']!r}")
        seen.add(c["id"])
        paper = c.get("paper")
        if paper is not None and not isinstance(paper, (int, float)):
            raise ClaimError(f"{where}: paper must be a number or null, got {paper!r}")
        out.append(Claim(c["id"], c["text"], c["metric"], c["direction"],
                         None if paper is None else float(paper), c.get("section", "")))
    return out


def _per_seed(entry: Optional[Mapping[str, Any]]) -> List[float]:
    if not entry:
        return []
    seeds = entry.get("per_seed")
    if isinstance(seeds, list) and seeds:
        return [float(x) for x in seeds if isinstance(x, (int, float))]
    value = entry.get("value")
    return [float(value)] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def score_claims(notebook: str, claims: Sequence[Claim], metrics: Sequence[Mapping[str, Any]]) -> List[ClaimResult]:
    """One :class:`ClaimResult` per claim, from a notebook's recorded metrics (ledger entries)."""
    by_name: Dict[str, Mapping[str, Any]] = {m["name"]: m for m in metrics if isinstance(m, Mapping) and "name" in m}
    out = []
    for c in claims:
        vals = [x for x in _per_seed(by_name.get(c.metric)) if math.isfinite(x)]
        v = verdict(vals, c.direction)
        if not vals:
            out.append(ClaimResult(c, notebook, v))
            continue
        ms = mean_sd(vals)
        sign = 1.0 if c.direction == "+" else -1.0
        out.append(ClaimResult(c, notebook, v, ms.mean, ms.sd, ms.n, sum(1 for x in vals if sign * x > 0)))
    return out
