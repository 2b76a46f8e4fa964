"""Whether a run's files in ``OUT`` are what they claim to be: the checks behind ``--resume`` and the
report.

* :func:`read_marker` -- ``NN_name.run.json`` as a dict, or None (missing, truncated, or not an object:
  ``[1, 2]`` is no marker).
* :func:`read_metrics` -- a ledger's metrics and a problem string: a truncated ``metrics.json``, or one
  whose shape is not ``{"metrics": [{"name": ..., "value": ...}, ...]}``, gives ``([], "unreadable ...")``
  instead of a traceback.
* :func:`incomplete_cells` -- code cells of an executed notebook that did not complete.
* :func:`marker_digest` -- the marker's own ``digest``: sha256 of the canonical JSON of its other fields.
* :func:`output_problem` -- why a finished-looking notebook cannot be skipped by ``--resume``: no ok
  marker (or one that fails its digest), other inputs, a notebook that does not parse or has a cell
  that did not run, a ledger that does not parse or lacks a declared metric, a file whose sha256
  differs from the one in the marker.
  None when every check passes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import nbformat

from ..core.cache import canonical_json

__all__ = ["file_digest", "read_marker", "read_metrics", "incomplete_cells", "output_problem", "paths",
           "marker_digest", "marker_problem"]


def paths(out_dir: Path, name: str):
    """(notebook, partial notebook, ledger, marker, partial ledger) of notebook ``name`` in ``out_dir``."""
    return (out_dir / f"{name}.ipynb", out_dir / f".{name}.partial.ipynb", out_dir / f"{name}.metrics.json",
            out_dir / f"{name}.run.json", out_dir / f".{name}.partial.metrics.json")


def time_log_path(out_dir: Path, name: str) -> Path:
    """The spans notebook ``name`` logged while it ran (see :mod:`xnn_support.core.timelog`)."""
    return Path(out_dir) / f"{name}.time.jsonl"


def file_digest(path: Path) -> Optional[str]:
    """sha256 of a file, None if it does not exist."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except FileNotFoundError:
        return None
    return h.hexdigest()


def read_marker(out_dir, name: str) -> Optional[Dict[str, Any]]:
    """The run marker of ``name`` as a dict, or None when it is missing or damaged."""
    p = Path(out_dir) / f"{name}.run.json"
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def marker_digest(m: Dict[str, Any]) -> str:
    """sha256 of the canonical JSON of every field of a marker but ``digest``."""
    return hashlib.sha256(canonical_json({k: v for k, v in m.items() if k != "digest"}).encode()).hexdigest()


def marker_problem(m: Dict[str, Any], name: str) -> Optional[str]:
    """Why a marker cannot be trusted (no digest, or one that does not match its fields); None if sound."""
    if "digest" not in m:
        return f"{name}.run.json holds no digest (written by an older version)"
    if m["digest"] != marker_digest(m):
        return f"{name}.run.json failed its digest (edited or damaged)"
    return None


def read_metrics(path: Path) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """(metrics, problem) of a ledger file; a missing file is ([], None), a damaged one ([], why)."""
    path = Path(path)
    if not path.exists():
        return [], None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [], f"{path.name} is unreadable ({type(e).__name__}: {str(e)[:120]}; truncated?)"
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, list) or not all(isinstance(m, dict) and isinstance(m.get("name"), str)
                                                and "value" in m for m in metrics):
        return [], f"{path.name} is not a metrics ledger (expected {{\"metrics\": [{{\"name\", \"value\"}}, ...]}})"
    return metrics, None


def incomplete_cells(nb_path: Path) -> List[Dict[str, Any]]:
    """Code cells that did not complete (skip-execution cells excepted); raises if the notebook does
    not parse."""
    nb = nbformat.read(str(nb_path), as_version=4)
    bad, idx = [], 0
    for c in nb.cells:
        if "papermill-error-cell-tag" in c.metadata.get("tags", []):
            continue
        if c.cell_type == "code" and "skip-execution" not in c.metadata.get("tags", []):
            st = c.metadata.get("papermill", {}).get("status")
            if st != "completed":
                bad.append({"cell": idx, "status": st, "source": c.source.splitlines()[0] if c.source else ""})
        idx += 1
    return bad


def _notebook_problem(out: Path) -> Optional[str]:
    if not out.exists():
        return f"{out.name} is missing"
    try:
        bad = incomplete_cells(out)
    except Exception as e:  # nbformat raises several types for damaged files
        return f"{out.name} does not parse ({type(e).__name__}; truncated?)"
    if bad:
        return f"{out.name}: {len(bad)} code cell(s) did not run (first: cell {bad[0]['cell']})"
    return None


def output_problem(info, inputs: str, out_dir) -> Optional[str]:
    """Why notebook ``info``'s outputs in ``out_dir`` cannot be reused for inputs hash ``inputs``; None
    when they can (see the module docstring)."""
    out_dir = Path(out_dir)
    out, _, ledger, _, _ = paths(out_dir, info.name)
    m = read_marker(out_dir, info.name)
    if m is None:
        return "no readable run marker"
    problem = marker_problem(m, info.name)
    if problem:
        return problem
    if m.get("status") != "ok":
        return f"the earlier run has status {m.get('status')!r}"
    if m.get("inputs") != inputs:
        return "its inputs changed (notebook, parameters or package source)"
    problem = _notebook_problem(out)
    if problem:
        return problem
    metrics, problem = read_metrics(ledger)
    if problem:
        return problem
    missing = sorted(set(info.metrics) - {x["name"] for x in metrics})
    if missing:
        return f"{ledger.name} lacks declared metric(s) {', '.join(missing)}"
    digests = m.get("digests")
    if not isinstance(digests, dict):
        return "the marker holds no digests (written by an older version)"
    for key, p in (("output", out), ("ledger", ledger)):
        if digests.get(key) != file_digest(p):
            return f"{p.name} differs from the file the run wrote (sha256 mismatch)"
    return None
