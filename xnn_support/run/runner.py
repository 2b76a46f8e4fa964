"""Headless notebook runner behind ``xnn run`` and ``xnn reproduce`` (papermill underneath).

What papermill does not do and this module adds:

* **Unknown parameters are errors** (papermill only warns): :func:`coerce_params` checks every
  ``-p name value`` against the notebook's ``parameters`` cell (``papermill.inspect_notebook``)
  and converts the value to the declared type.
* **A notebook counts as done only if every cell ran**: a cell that raised, a ``sys.exit`` that
  ended the kernel silently (papermill exits 0 then), a dead kernel, or a declared metric that was
  never recorded all make the run *failed*, with notebook, cell and error named.
* **Crash-safe outputs and resume**: the executed notebook is written to ``.NN_name.partial.ipynb``
  and the ledger to ``.NN_name.partial.metrics.json``, both renamed when the run ends; a marker
  ``NN_name.run.json`` is written atomically *last*, holding the hash of the inputs (notebook file,
  parameters, package version and source) and the sha256 of the notebook and ledger it vouches for.
  ``--resume`` skips a notebook only when :func:`~.integrity.output_problem` finds nothing wrong
  (ok marker, same inputs, the notebook parses and every code cell ran, the ledger parses and holds
  the declared metrics, both files match their digests) and runs it again otherwise, saying why. A
  run killed by SIGKILL at any point resumes without redoing finished notebooks and never leaves a
  file that looks complete; SIGTERM and SIGINT stop the kernel and leave the partial names (no
  marker), see :mod:`.guard`.
* **One run per output folder**: ``OUT/.xnn.lock`` (:func:`~.guard.out_lock`) refuses a second
  concurrent run into the same folder.

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
from ..core.ledger import atomic_write_text
from ..core import timelog
from .catalog import (PROFILES, NotebookInfo, ParameterError, catalog, coerce_params,  # noqa: F401
                      default_notebooks_dir, find_notebook)
from .guard import (Interrupts, RunInterrupted, RunLocked, TrackedKernelManager, interrupts, out_folder,  # noqa: F401
                    out_lock, run_interruptible)
from .integrity import (file_digest, incomplete_cells, marker_digest, output_problem, paths, read_marker,  # noqa: F401
                        read_metrics, time_log_path)
from .report import notebook_html, write_report
from .exercise import widget_notebook
import nbformat
import sys
import papermill as pm
from papermill.exceptions import PapermillExecutionError

__all__ = ["NotebookInfo", "RunResult", "catalog", "find_notebook", "coerce_params", "run_notebook",
           "reproduce", "ParameterError", "default_notebooks_dir", "inputs_hash", "PROFILES", "RunLocked",
           "RunInterrupted", "out_lock", "check_run_params", "notebook_params", "select"]

KERNEL = "python3"


def _source_hash() -> str:
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]  # the whole xnn_support package
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def inputs_hash(info: NotebookInfo, params: Dict[str, Any], *, widgets: bool = False) -> str:
    """Hash of what determines a run's result: notebook bytes, parameters, package version/source (and
    whether the widget cells were exercised)."""
    h = hashlib.sha256()
    h.update(info.path.read_bytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(__version__.encode())
    h.update(_source_hash().encode())
    if widgets:
        h.update(b"+widgets")
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


def is_complete(info: NotebookInfo, params: Dict[str, Any], out_dir) -> bool:
    """Whether ``--resume`` may skip ``info`` (see :func:`~.integrity.output_problem`)."""
    return output_problem(info, inputs_hash(info, params), out_dir) is None


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


def _execute(info: NotebookInfo, params, partial: Path, out_dir: Path, *, kernel, progress_bar, timeout,
             state: Interrupts, source: Optional[Path] = None) -> Optional[Dict[str, Any]]:
    """Run papermill on ``source`` (default the notebook) into ``partial`` (in a worker thread, see
    :func:`~.guard.run_interruptible`); the error dict of a failed run, None for a run that ended;
    :class:`RunInterrupted` on a signal."""
    def work():
        with _stderr_to(out_dir / f".{info.name}.kernel.log", enabled=not progress_bar):
            pm.execute_notebook(str(source or info.path), str(partial), parameters=params, kernel_name=kernel,
                                progress_bar=progress_bar, cwd=str(out_dir), execution_timeout=timeout,
                                kernel_manager_class=TrackedKernelManager)
    try:
        run_interruptible(work, state)
    except PapermillExecutionError as e:
        return {"cell": _source_index(info.path, e.source, e.cell_index), "exec_count": e.exec_count,
                "ename": e.ename, "evalue": str(e.evalue)[:2000], "source": (e.source or "").splitlines()[:3]}
    except Exception as e:  # dead kernel, timeout, bad notebook
        return {"cell": None, "ename": type(e).__name__, "evalue": str(e)[:2000]}
    return None


def _check_output(info: NotebookInfo, out: Path, ledger: Path) -> Optional[Dict[str, Any]]:
    """The error dict of a run papermill finished: no notebook, a cell that did not run, a ledger that
    does not parse, a declared metric never recorded; None when the run is complete."""
    if not out.exists():
        return {"cell": None, "ename": "MissingOutput", "evalue": "papermill wrote no notebook"}
    bad = incomplete_cells(out)
    if bad:
        b = bad[0]
        return {"cell": b["cell"], "ename": "IncompleteRun",
                "evalue": f"{len(bad)} code cell(s) did not run (first: cell {b['cell']}, status "
                          f"{b['status']}, `{b['source']}`); sys.exit() or a dead kernel?"}
    metrics, problem = read_metrics(ledger)
    if problem:
        return {"cell": None, "ename": "LedgerUnreadable", "evalue": problem}
    missing = [m for m in info.metrics if m not in {r["name"] for r in metrics}]
    if missing:
        return {"cell": None, "ename": "MissingMetrics",
                "evalue": f"declared metrics not recorded: {', '.join(missing)}"}
    return None


def run_notebook(info: NotebookInfo, params: Dict[str, Any], out_dir, *, kernel: str = KERNEL,
                 progress_bar: bool = False, timeout: Optional[int] = None,
                 state: Optional[Interrupts] = None, widgets: bool = False, html: bool = False) -> RunResult:
    """Execute one notebook into ``out_dir``; never raises for a notebook failure (see status). A
    SIGTERM/SIGINT raises :class:`RunInterrupted` and leaves only partial names (no marker). The caller
    holds the folder's lock (:func:`~.guard.out_lock`), as ``xnn run`` and :func:`reproduce` do.
    ``widgets``: also run the ``skip-execution`` widget cells, each followed by
    :func:`~.exercise.exercise` (every control moved through two values; the run fails if one changes
    nothing or raises). ``html``: also write ``NN_name.html``, a static page of the executed notebook."""
    out_dir = out_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = coerce_params(info, params)
    out, partial, ledger, marker, part_ledger = paths(out_dir, info.name)
    tlog = time_log_path(out_dir, info.name)
    for p in (marker, ledger, out, partial, part_ledger, out.with_suffix(".html"), tlog):  # marker first: not complete
        p.unlink(missing_ok=True)
    tlog.write_text("")  # exists even if nothing trains: the profile then knows training was measured
    key = inputs_hash(info, params, widgets=widgets)
    source = None
    if widgets:
        source = out_dir / f".{info.name}.widgets.ipynb"
        widget_notebook(info.path, source)
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    old_env = {k: os.environ.get(k) for k in ("XNN_LEDGER", "MPLBACKEND", "XNN_QUIET", timelog.ENV)}
    os.environ["XNN_LEDGER"] = str(part_ledger.resolve())
    os.environ[timelog.ENV] = str(tlog.resolve())  # training spans, for --profile-time
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ["XNN_QUIET"] = "1"  # progress bars cannot render in a stored notebook
    try:
        with contextlib.ExitStack() as stack:
            st = state if state is not None else stack.enter_context(interrupts())
            error = _execute(info, params, partial, out_dir, kernel=kernel, progress_bar=progress_bar,
                             timeout=timeout, state=st, source=source)
    finally:
        if source is not None:
            source.unlink(missing_ok=True)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    duration = time.perf_counter() - t0
    if partial.exists():
        os.replace(partial, out)
    if part_ledger.exists():
        os.replace(part_ledger, ledger)
    if error is None:
        error = _check_output(info, out, ledger)
    if html and out.exists():
        notebook_html(out)  # derived from the notebook, so written before the marker that vouches for it
    status = "ok" if error is None else "failed"
    m = json.loads(json.dumps({
        "name": info.name, "status": status, "inputs": key, "params": params, "duration": duration,
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"), "xnn_version": __version__,
        "output": out.name, "ledger": ledger.name, "error": error,
        "digests": {"output": file_digest(out), "ledger": file_digest(ledger)}}, default=str))  # as read back
    m["digest"] = marker_digest(m)
    atomic_write_text(marker, json.dumps(m, indent=1))
    return RunResult(info.name, status, duration, str(out) if out.exists() else None,
                     str(ledger) if ledger.exists() else None, error, params)


def select(cat: List[NotebookInfo], only: Optional[Sequence[str]]) -> List[NotebookInfo]:
    """The notebooks named by ``only`` (ids or names, in catalog order); all for None."""
    if only is None:
        return cat
    wanted = {f"{int(k):02d}" if str(k).strip().isdigit() else str(k).strip() for k in only} - {""}
    if not wanted:
        raise ParameterError(f"--only names no notebook ({list(only)!r}); pass ids or names such as 01,04, or "
                             f"leave it out for all: {[i.name for i in cat]}")
    unknown = wanted - {i.id for i in cat} - {i.name for i in cat}
    if unknown:
        raise KeyError(f"no notebook(s) {sorted(unknown)}; available: {[i.name for i in cat]}")
    return [i for i in cat if i.id in wanted or i.name in wanted]


def check_run_params(cat: List[NotebookInfo], params: Optional[Dict[str, Any]], seed: Optional[int]) -> None:
    """Refuse a ``-p`` name that none of the notebooks of the run declares (a typo such as ``seeed``) and a
    negative ``--seed``, as ``xnn run`` does for one notebook."""
    declared = sorted({n for i in cat for n in i.parameters})
    unknown = [k for k in (params or {}) if k not in declared]
    if unknown:
        raise ParameterError(f"no notebook of this run has parameter(s) {', '.join(map(repr, unknown))}; "
                             f"declared: {', '.join(declared)} (see `xnn list`)")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ParameterError(f"--seed must be an integer >= 0, got {seed!r}; pass e.g. --seed 0")


def reproduce(*, profile: str = "default", only: Optional[Sequence[str]] = None, out_dir="runs",
              resume: bool = False, notebooks_dir=None, params: Optional[Dict[str, Any]] = None,
              seed: Optional[int] = None, log=print, progress_bar: bool = False,
              widgets: bool = False, html: bool = False) -> List[RunResult]:
    """Run every (or the ``only``) notebook in order with ``profile``; write the report. Holds the
    folder's lock; a SIGTERM/SIGINT writes the report of what finished and raises :class:`RunInterrupted`."""
    if profile not in PROFILES:
        raise ParameterError(f"profile must be one of {PROFILES}, got {profile!r}")
    cat = select(catalog(notebooks_dir), only)
    check_run_params(cat, params, seed)
    out_dir = out_folder(out_dir)
    results: List[RunResult] = []
    with out_lock(out_dir), interrupts() as state:
        try:
            for k, info in enumerate(cat, 1):
                state.check()
                results.append(_one(info, k, len(cat), profile, params, seed, out_dir, resume, log, progress_bar,
                                    state, widgets, html))
        finally:
            write_report(out_dir, profile=profile, notebooks_dir=notebooks_dir)
    return results


def notebook_params(info: NotebookInfo, profile: str, params: Optional[Dict[str, Any]],
                    seed: Optional[int]) -> Dict[str, Any]:
    """The parameters a run of the suite gives ``info``: the profile, the seed, and those of ``params`` it
    declares (converted to their declared types)."""
    p: Dict[str, Any] = {"profile": profile} if "profile" in info.parameters else {}
    if seed is not None and "seed" in info.parameters:
        p["seed"] = seed
    for name, v in (params or {}).items():
        if name in info.parameters:
            p[name] = v
    return coerce_params(info, p)


def _one(info, k, n, profile, params, seed, out_dir, resume, log, progress_bar, state, widgets=False,
         html=False) -> RunResult:
    """One notebook of :func:`reproduce`: skipped when ``resume`` finds its outputs sound, else run."""
    p = notebook_params(info, profile, params, seed)
    head = f"[{k}/{n}] {info.name}"
    if resume:
        problem = output_problem(info, inputs_hash(info, p, widgets=widgets), out_dir)
        if problem is None:
            m = read_marker(out_dir, info.name) or {}
            log(f"{head}: done earlier ({m.get('duration', 0):.1f} s), skipped (--resume)")
            out, _, ledger, _, _ = paths(out_dir, info.name)
            return RunResult(info.name, "skipped", m.get("duration", 0.0), str(out),
                             str(ledger) if ledger.exists() else None, None, p)
        if read_marker(out_dir, info.name) is not None or (out_dir / f"{info.name}.ipynb").exists():
            log(f"{head}: earlier output not reusable ({problem}); running it again")
    log(f"{head}: running (profile {profile}, expected {info.runtime.get(profile, '?')}) ...")
    r = run_notebook(info, p, out_dir, progress_bar=progress_bar, state=state, widgets=widgets, html=html)
    log(f"{head}: {r.status} in {r.duration:.1f} s" + ("" if r.status == "ok" else f"  -- {r.describe_error()}"))
    return r
