"""The metrics ledger: ``record(name, value, paper=..., note=...)``.

Every headline number a notebook produces goes through :func:`record`. It is appended to the
notebook's ledger, a JSON file written atomically (temporary file, fsync, rename) so a killed run
never leaves a half-written ledger, and shown in the notebook. The runner points the ledger at
``OUT/NN_name.metrics.json`` through the environment variable ``XNN_LEDGER``; in an interactive
session without it, records are kept in memory (and written if :func:`set_ledger` names a file).
The report reads the ledgers and puts each value beside the paper's.

Ledger format::

    {"notebook": "04_layerwise_discarding", "metrics": [
        {"name": "fg_bg_gap/conv4", "value": 0.31, "paper": null, "note": "...", "unit": null,
         "time": "2026-11-24T03:10:00Z"}, ...]}
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional
import pandas as pd

__all__ = ["record", "results_table", "set_ledger", "ledger_path", "read_ledger", "atomic_write_text",
           "atomic_write_bytes", "records"]

_state: Dict[str, Any] = {"path": None, "records": [], "loaded_from": None}


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def ledger_path() -> Optional[Path]:
    """The ledger file records go to: :func:`set_ledger`'s, else ``$XNN_LEDGER``, else None."""
    p = _state["path"] or os.environ.get("XNN_LEDGER")
    return Path(p) if p else None


def set_ledger(path) -> None:
    """Send later records to ``path`` (None: back to ``$XNN_LEDGER`` or memory only)."""
    _state["path"] = str(path) if path else None
    _state["records"], _state["loaded_from"] = [], None


def read_ledger(path) -> Dict[str, Any]:
    """Read a ledger file; a missing file is an empty ledger."""
    path = Path(path)
    if not path.exists():
        return {"notebook": path.name.replace(".metrics.json", ""), "metrics": []}
    return json.loads(path.read_text(encoding="utf-8"))


def _clean(value):
    """JSON-friendly version of a metric value (numpy/torch scalars, NaN -> None)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return None if math.isnan(v) else v
    raise TypeError(f"a metric value must be a number, bool, string or None, got {type(value).__name__}")


def records() -> List[Dict[str, Any]]:
    """Metrics recorded so far in this session (or in the ledger file being written)."""
    _sync()
    return list(_state["records"])


def _sync():
    p = ledger_path()
    key = str(p) if p else None
    if _state["loaded_from"] != key:
        _state["records"] = read_ledger(p)["metrics"] if p else []
        _state["loaded_from"] = key


def record(name: str, value, paper=None, note: Optional[str] = None, unit: Optional[str] = None,
           display: bool = True, per_seed=None) -> None:
    """Record a headline metric; a second record of the same ``name`` replaces the first.

    ``paper`` is the paper's number for the same quantity (or None when the paper has none),
    ``note`` says how it was measured (seeds, spread, protocol), ``unit`` is shown in the report.
    ``per_seed``: the value of each seed (a list of numbers), kept in the ledger for the claims
    scoreboard (:mod:`xnn_support.run.claims`), which decides "reproduced" from them.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("record() needs a non-empty metric name")
    entry = {"name": name, "value": _clean(value), "paper": _clean(paper), "note": note, "unit": unit,
             "time": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if per_seed is not None:
        seeds = [_clean(v) for v in per_seed]
        if not seeds or not all(v is None or isinstance(v, (int, float)) for v in seeds):
            raise ValueError(f"record({name!r}): per_seed must be a non-empty list of numbers (one per seed), "
                             f"got {per_seed!r}")
        entry["per_seed"] = seeds
    _sync()
    recs = [r for r in _state["records"] if r["name"] != name] + [entry]
    _state["records"] = recs
    p = ledger_path()
    if p is not None:
        nb = p.name.replace(".metrics.json", "")
        atomic_write_text(p, json.dumps({"notebook": nb, "metrics": recs}, indent=1))
    if display:
        _show(entry)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _show(entry) -> None:
    line = f"[record] {entry['name']} = {_fmt(entry['value'])}"
    if entry.get("unit"):
        line += f" {entry['unit']}"
    if entry.get("paper") is not None:
        line += f"   (paper: {_fmt(entry['paper'])})"
    if entry.get("note"):
        line += f"   -- {entry['note']}"
    print(line)


def results_table(prefix: Optional[str] = None):
    """The metrics recorded so far as a pandas DataFrame (ours beside the paper's)."""

    rows = [r for r in records() if prefix is None or r["name"].startswith(prefix)]
    df = pd.DataFrame(rows, columns=["name", "value", "paper", "unit", "note"])
    return df.set_index("name")
