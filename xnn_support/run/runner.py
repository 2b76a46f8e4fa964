"""Headless notebook runner behind ``xnn run`` and ``xnn reproduce`` (papermill underneath).

What papermill does not do and this module adds:

* **Unknown parameters are errors** (papermill only warns): :func:`coerce_params` checks every
  ``-p name value`` against the notebook's ``parameters`` cell (``papermill.inspect_notebook``)
  and converts the value to the declared type.
* **A notebook counts as done only if every cell ran**: a cell that raised, a ``sys.exit`` that
  ended the kernel silently (papermill exits 0 then), a dead kernel, or a declared metric that was
  never recorded all make the run *failed*, with notebook, cell and error named.
* **Crash-safe outputs and resume**: the executed notebook is written to ``.NN_name.partial.ipynb``
  and renamed when the run ends; a marker ``NN_name.run.json`` is written atomically *last*, holding
  the hash of the inputs (notebook file, parameters, package version and source). ``--resume``
  skips a notebook only when its marker says ``ok``, the hash matches and the output exists, so a
  run killed by SIGKILL at any point resumes without redoing finished notebooks and never leaves
  a file that looks complete.

Notebook metadata (``metadata.xnn`` in each ``.ipynb``) carries title, paper, arXiv id, expected run
time per profile, the metrics the notebook always records (``metrics``) and the few shown in the
report's summary row (``key_metrics``).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..core.version import __version__
from ..core.ledger import atomic_write_text, read_ledger
from .catalog import (PROFILES, NotebookInfo, ParameterError, catalog, coerce_params,  # noqa: F401
                      default_notebooks_dir, find_notebook)
from .report import write_report
import nbformat
import sys
import papermill as pm
from papermill.exceptions import PapermillExecutionError

__all__ = ["NotebookInfo", "RunResult", "catalog", "find_notebook", "coerce_params", "run_notebook",
           "reproduce", "ParameterError", "default_notebooks_dir", "inputs_hash", "PROFILES"]

KERNEL = "python3"


def _source_hash() -> str:
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]  # the whole xnn_support package
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def inputs_hash(info: NotebookInfo, params: Dict[str, Any]) -> str:
    """Hash of what determines a run's result: notebook bytes, parameters, package version/source."""
    h = hashlib.sha256()
    h.update(info.path.read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(__version__.encode())
    h.update(_source_hash().encode())
    return h.hexdigest()


@dataclass
class RunResult:
    name: str
    status: str                       # "ok" | "failed" | "skipped" (resumed: output reused)
    duration: float = 0.0
    output: Optional[str] = None
    ledger: Optional[str] = None
    error: Optional[Dict[str, Any]] = None
    params: Dict[str, Any] = field(default_factory=dict)

    def describe_error(self) -> str:
        e = self.error or {}
        where = f"cell {e['cell']}" if e.get("cell") is not None else "notebook"
        src = f" (`{e['source'][0]}`)" if e.get("source") else ""
        return f"{self.name}: {where}{src}: {e.get('ename', 'Error')}: {e.get('evalue', '')}".rstrip()


def _paths(out_dir: Path, name: str):
    return (out_dir / f"{name}.ipynb", out_dir / f".{name}.partial.ipynb",
            out_dir / f"{name}.metrics.json", out_dir / f"{name}.run.json")


def read_marker(out_dir, name: str) -> Optional[Dict[str, Any]]:
    p = Path(out_dir) / f"{name}.run.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def is_complete(info: NotebookInfo, params: Dict[str, Any], out_dir) -> bool:
    out, _, _, _ = _paths(Path(out_dir), info.name)
    m = read_marker(out_dir, info.name)
    return bool(m and m.get("status") == "ok" and m.get("inputs") == inputs_hash(info, params)
                and out.exists())


def _incomplete_cells(nb_path: Path) -> List[Dict[str, Any]]:
    """Code cells that did not complete (skip-execution cells excepted)."""

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


@contextlib.contextmanager
def _stderr_to(path: Path, enabled: bool = True):
    """Send this process's (and so the kernel's) file descriptor 2 to ``path`` for the duration:
    the kernel's start-up chatter goes to a log file beside the outputs instead of the terminal."""
    if not enabled:
        yield
        return

    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "w") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _source_index(path: Path, source: str, fallback):
    """Index of the failing cell in the *source* notebook (papermill counts its injected cell)."""

    try:
        cells = nbformat.read(str(path), as_version=4).cells
        hits = [i for i, c in enumerate(cells) if c.cell_type == "code" and c.source == source]
        return hits[0] if len(hits) == 1 else fallback
    except Exception:  # pragma: no cover
        return fallback


def run_notebook(info: NotebookInfo, params: Dict[str, Any], out_dir, *, kernel: str = KERNEL,
                 progress_bar: bool = False, timeout: Optional[int] = None) -> RunResult:
    """Execute one notebook into ``out_dir``; never raises for a notebook failure (see status)."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = coerce_params(info, params)
    out, partial, ledger, marker = _paths(out_dir, info.name)
    for p in (marker, ledger, out, partial):  # the marker goes first: from here on, not complete
        p.unlink(missing_ok=True)
    key = inputs_hash(info, params)
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    error: Optional[Dict[str, Any]] = None
    old_env = {k: os.environ.get(k) for k in ("XNN_LEDGER", "MPLBACKEND", "XNN_QUIET")}
    os.environ["XNN_LEDGER"] = str(ledger.resolve())
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ["XNN_QUIET"] = "1"  # progress bars cannot render in a stored notebook
    try:
        with _stderr_to(out_dir / f".{info.name}.kernel.log", enabled=not progress_bar):
            pm.execute_notebook(str(info.path), str(partial), parameters=params, kernel_name=kernel,
                                progress_bar=progress_bar, cwd=str(out_dir), execution_timeout=timeout)
    except PapermillExecutionError as e:
        error = {"cell": _source_index(info.path, e.source, e.cell_index), "exec_count": e.exec_count,
                 "ename": e.ename,
                 "evalue": str(e.evalue)[:2000], "source": (e.source or "").splitlines()[:3]}
    except Exception as e:  # dead kernel, timeout, bad notebook
        error = {"cell": None, "ename": type(e).__name__, "evalue": str(e)[:2000]}
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    duration = time.perf_counter() - t0
    if partial.exists():
        os.replace(partial, out)
    if error is None:
        if not out.exists():
            error = {"cell": None, "ename": "MissingOutput", "evalue": "papermill wrote no notebook"}
        else:
            bad = _incomplete_cells(out)
            if bad:
                b = bad[0]
                error = {"cell": b["cell"], "ename": "IncompleteRun",
                         "evalue": f"{len(bad)} code cell(s) did not run (first: cell {b['cell']}, status "
                                   f"{b['status']}, `{b['source']}`); sys.exit() or a dead kernel?"}
    if error is None and info.metrics:
        have = {r["name"] for r in read_ledger(ledger)["metrics"]}
        missing = [m for m in info.metrics if m not in have]
        if missing:
            error = {"cell": None, "ename": "MissingMetrics",
                     "evalue": f"declared metrics not recorded: {', '.join(missing)}"}
    status = "ok" if error is None else "failed"
    atomic_write_text(marker, json.dumps({
        "name": info.name, "status": status, "inputs": key, "params": params, "duration": duration,
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "xnn_version": __version__,
        "output": out.name, "ledger": ledger.name, "error": error}, indent=1, default=str))
    return RunResult(info.name, status, duration, str(out) if out.exists() else None,
                     str(ledger) if ledger.exists() else None, error, params)


def reproduce(*, profile: str = "default", only: Optional[Sequence[str]] = None, out_dir="runs",
              resume: bool = False, notebooks_dir=None, params: Optional[Dict[str, Any]] = None,
              seed: Optional[int] = None, log=print, progress_bar: bool = False) -> List[RunResult]:
    """Run every (or the ``only``) notebook in order with ``profile``; write the report."""
    if profile not in PROFILES:
        raise ParameterError(f"profile must be one of {PROFILES}, got {profile!r}")
    cat = catalog(notebooks_dir)
    if only:
        wanted = {f"{int(k):02d}" if k.strip().isdigit() else k.strip() for k in only}
        unknown = wanted - {i.id for i in cat} - {i.name for i in cat}
        if unknown:
            raise KeyError(f"no notebook(s) {sorted(unknown)}; available: {[i.name for i in cat]}")
        cat = [i for i in cat if i.id in wanted or i.name in wanted]
    out_dir = Path(out_dir)
    results: List[RunResult] = []
    for k, info in enumerate(cat, 1):
        p = {"profile": profile} if "profile" in info.parameters else {}
        if seed is not None and "seed" in info.parameters:
            p["seed"] = seed
        for name, v in (params or {}).items():
            if name in info.parameters:
                p[name] = v
        p = coerce_params(info, p)
        head = f"[{k}/{len(cat)}] {info.name}"
        if resume and is_complete(info, p, out_dir):
            m = read_marker(out_dir, info.name)
            log(f"{head}: done earlier ({m.get('duration', 0):.1f} s), skipped (--resume)")
            out, _, ledger, _ = _paths(out_dir, info.name)
            results.append(RunResult(info.name, "skipped", m.get("duration", 0.0), str(out),
                                     str(ledger) if ledger.exists() else None, None, p))
            continue
        log(f"{head}: running (profile {profile}, expected {info.runtime.get(profile, '?')}) ...")
        r = run_notebook(info, p, out_dir, progress_bar=progress_bar)
        log(f"{head}: {r.status} in {r.duration:.1f} s" + ("" if r.status == "ok" else f"  -- {r.describe_error()}"))
        results.append(r)
    write_report(out_dir, profile=profile, notebooks_dir=notebooks_dir)
    return results
