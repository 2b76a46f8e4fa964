"""The notebooks of the suite and their declared parameters: :func:`catalog`, :func:`find_notebook`,
:func:`coerce_params` (unknown names and wrong types are errors, unlike papermill's warning).

Notebook metadata (``metadata.xnn`` in each ``.ipynb``) carries title, paper, arXiv id, expected run
time per profile, the metrics the notebook always records (``metrics``), the few shown in the report's
summary row (``key_metrics``) and the paper's claims (``claims``, read by :mod:`.claims`).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import nbformat
import papermill as pm

from .claims import Claim, parse_claims

__all__ = ["NotebookInfo", "catalog", "find_notebook", "coerce_params", "ParameterError",
           "default_notebooks_dir", "PROFILES", "expected_seconds"]

PROFILES = ("smoke", "default", "paper")


class ParameterError(ValueError):
    """A parameter the notebook does not declare, or a value of the wrong type."""


def default_notebooks_dir() -> Path:
    """``$XNN_NOTEBOOKS``, else the ``notebooks/`` folder next to the package (editable install)."""
    env = os.environ.get("XNN_NOTEBOOKS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "notebooks"
    if here.is_dir():
        return here
    raise FileNotFoundError("cannot find the notebooks folder: pass --notebooks DIR or set XNN_NOTEBOOKS")


@dataclass
class NotebookInfo:
    id: str                      # "04"
    name: str                    # "04_layerwise_discarding"
    path: Path
    title: str = ""
    paper: str = ""
    arxiv: str = ""
    runtime: Dict[str, str] = field(default_factory=dict)
    metrics: List[str] = field(default_factory=list)
    key_metrics: List[str] = field(default_factory=list)
    parameters: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    claims: List[Claim] = field(default_factory=list)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(?:\s*-\s*(\d+(?:\.\d+)?))?\s*(s|min|h)\b")


def expected_seconds(info: NotebookInfo, profile: str) -> Optional[float]:
    """Seconds a cold run of ``info`` with ``profile`` is expected to take, read from its declared run time
    ("~55 min first run + ~15-20 min real-network section, ~3 min cached" -> 75 min: every term outside
    the cached one, ranges at their upper end); None when the notebook declares none (e.g. "GPU")."""
    text = str(info.runtime.get(profile, ""))
    total, found = 0.0, False
    for part in text.split(","):
        if "cached" in part:
            continue
        for lo, hi, unit in _DURATION.findall(part):
            total += float(hi or lo) * {"s": 1, "min": 60, "h": 3600}[unit]
            found = True
    return total if found else None


def _read_info(path: Path) -> NotebookInfo:
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as e:  # nbformat raises several types for damaged files
        raise ParameterError(f"{path} does not parse as a notebook ({type(e).__name__}); fix it or move it out of "
                             "the notebooks folder") from None
    meta = nb.metadata.get("xnn", {})
    title = meta.get("title") or next(
        (c.source.splitlines()[0].lstrip("# ").strip() for c in nb.cells
         if c.cell_type == "markdown" and c.source.strip()), path.stem)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        params = pm.inspect_notebook(str(path))
    return NotebookInfo(id=path.stem.split("_")[0], name=path.stem, path=path, title=title,
                        paper=meta.get("paper", ""), arxiv=meta.get("arxiv", ""),
                        runtime=dict(meta.get("runtime", {})), metrics=list(meta.get("metrics", [])),
                        key_metrics=list(meta.get("key_metrics", meta.get("metrics", [])[:3])),
                        parameters=params, claims=parse_claims(path.stem, meta.get("claims")))


def catalog(notebooks_dir=None) -> List[NotebookInfo]:
    """Every ``NN_name.ipynb`` in the notebooks folder, in order."""
    d = Path(notebooks_dir) if notebooks_dir else default_notebooks_dir()
    if not d.is_dir():
        raise FileNotFoundError(f"notebooks folder {d} {'is a file' if d.exists() else 'does not exist'}; pass "
                                "--notebooks DIR (a folder of NN_name.ipynb notebooks) or set XNN_NOTEBOOKS")
    paths = sorted(p for p in d.glob("[0-9][0-9]_*.ipynb") if not p.name.startswith("."))
    return [_read_info(p) for p in paths]


def find_notebook(key: str, notebooks_dir=None) -> NotebookInfo:
    """A notebook by id (``"04"``, ``"4"``), full name, or path."""
    p = Path(key)
    if p.suffix == ".ipynb" and p.exists():
        return _read_info(p)
    cat = catalog(notebooks_dir)
    k = key.strip()
    if k.isdigit():
        k = f"{int(k):02d}"
    for info in cat:
        if k in (info.id, info.name):
            return info
    raise KeyError(f"no notebook {key!r}; available: " + ", ".join(i.name for i in cat))


def _coerce(name: str, spec: Dict[str, Any], value):
    if not isinstance(value, str):
        return value
    kind = spec.get("inferred_type_name", "None")
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind == "str":
            return value
    except ValueError:
        raise ParameterError(f"parameter {name!r} expects {kind}, got {value!r}; pass a value of that type, e.g. "
                             f"-p {name} {spec.get('default')} (see `xnn list`)") from None
    try:  # untyped: accept JSON literals (numbers, lists, true/false), else keep the string
        return json.loads(value)
    except ValueError:
        return value


def coerce_params(info: NotebookInfo, raw: Dict[str, Any]) -> Dict[str, Any]:
    """Check ``raw`` against the notebook's parameters cell and convert values to their types."""
    valid = info.parameters
    unknown = [k for k in raw if k not in valid]
    if unknown:
        listing = "\n".join(f"  {k}: {v.get('inferred_type_name')} = {v.get('default')}"
                            + (f"  # {v['help']}" if v.get("help") else "") for k, v in valid.items())
        raise ParameterError(f"{info.name} has no parameter(s) {', '.join(map(repr, unknown))}. "
                             f"Valid parameters:\n{listing}")
    out = {k: _coerce(k, valid[k], v) for k, v in raw.items()}
    prof = out.get("profile")
    if prof is not None and prof not in PROFILES:
        raise ParameterError(f"profile must be one of {PROFILES}, got {prof!r}")
    return out
