"""Parameter sweeps and cluster runs: ``xnn sweep NN -p name v1,v2 ...`` and ``xnn reproduce --cluster``.

A sweep is the cartesian product of the ``-p`` value lists (in the order given); each grid point is one
papermill run of the notebook, written into its own folder ``OUT/<point>/`` (``seed-1_n_images-200``)
with the runner's files and rules (marker last; ``--resume`` skips a point whose outputs are sound).
Points run one by one here, or on a Dask cluster (:mod:`.cluster`). ``OUT/sweep.json`` lists the grid,
``OUT/sweep.csv`` holds one row per point with the chosen metrics as columns, and ``OUT/report.md``
shows the table and a figure of each metric against each swept parameter (mean +- sd over seeds when
``seed`` is swept, :func:`xnn_support.viz.sweep_metric`); every point also has its own report.
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pandas as pd

from ..core.ledger import atomic_write_text
from .. import viz
from .catalog import NotebookInfo, ParameterError, catalog, coerce_params, expected_seconds, find_notebook
from .cluster import Task, connect, parse_cluster, run_on_cluster
from .guard import out_folder, out_lock
from .integrity import output_problem, paths, read_marker, read_metrics
from .report import write_report
from .runner import RunResult, check_run_params, inputs_hash, notebook_params, run_notebook, select

__all__ = ["parse_grid", "grid_points", "point_label", "sweep", "reproduce_on_cluster", "sweep_table",
           "write_sweep_report"]


def parse_grid(pairs: Optional[Sequence[Tuple[str, str]]]) -> Dict[str, List[str]]:
    """``[("seed", "0,1"), ("steps", "100,300")]`` -> ``{"seed": ["0", "1"], "steps": ["100", "300"]}``."""
    grid: Dict[str, List[str]] = {}
    for name, values in pairs or []:
        vals = [v.strip() for v in str(values).split(",")]
        if not name or any(v == "" for v in vals):
            raise ParameterError(f"-p {name} {values!r}: give comma-separated values without blanks, e.g. -p seed 0,1,2")
        if name in grid:
            raise ParameterError(f"-p {name} given twice; list all its values once, e.g. -p {name} "
                                 f"{','.join(grid[name] + vals)}")
        grid[name] = vals
    if not grid:
        raise ParameterError("a sweep needs at least one -p NAME v1,v2,...; e.g. xnn sweep 00 -p seed 0,1")
    return grid


def grid_points(info: NotebookInfo, grid: Dict[str, List[str]], base: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every point of the grid as the notebook's parameters (``base`` plus the point's values, coerced to
    the declared types); unknown names are refused like ``xnn run`` refuses them."""
    unknown = [k for k in grid if k not in info.parameters]
    if unknown:
        raise ParameterError(f"{info.name} has no parameter(s) {unknown}; declared: {sorted(info.parameters)}")
    names = list(grid)
    return [coerce_params(info, {**base, **dict(zip(names, combo))}) for combo in itertools.product(*grid.values())]


def point_label(point: Dict[str, Any], names: Sequence[str]) -> str:
    """The folder name of a point: ``seed-1_n_images-200`` (only the swept names, safe characters)."""
    return "_".join(f"{n}-{re.sub(r'[^A-Za-z0-9.+-]', '~', str(point[n]))}" for n in names)


def _run_tasks(tasks: List[Task], *, cluster, resume: bool, in_place: bool, retries: int,
               worker_resources, timeout, log) -> List[RunResult]:
    """Skip what ``resume`` finds complete; run the rest one by one or on the cluster."""
    done, todo = [], []
    for t in tasks:
        problem = output_problem(t.info, inputs_hash(t.info, t.params), t.out_dir) if resume else "not resumed"
        if problem is None:
            m = read_marker(t.out_dir, t.info.name) or {}
            log(f"{t.label}: done earlier ({m.get('duration', 0):.1f} s), skipped (--resume)")
            out, _, ledger, _, _ = paths(t.out_dir, t.info.name)
            done.append(RunResult(t.info.name, "skipped", m.get("duration", 0.0), str(out), str(ledger), None, t.params))
        else:
            todo.append(t)
    if cluster is None:
        ran = []
        for k, t in enumerate(todo, 1):
            log(f"[{k - 1}/{len(todo)}] {t.label}: running here")
            r = run_notebook(t.info, t.params, t.out_dir, timeout=timeout)
            log(f"[{k}/{len(todo)}] {t.label}: {r.status} in {r.duration:.1f} s")
            ran.append(r)
    elif todo:
        with connect(cluster, retries=retries, worker_resources=worker_resources, log=log) as client:
            ran = run_on_cluster(client, todo, in_place=in_place, timeout=timeout, log=log)
    else:
        ran = []
    by_task = dict(zip([id(t) for t in todo], ran))
    skipped = iter(done)
    return [by_task[id(t)] if id(t) in by_task else next(skipped) for t in tasks]


def sweep(notebook: str, grid: Dict[str, List[str]], *, out_dir, profile: Optional[str] = "smoke",
          params: Optional[Dict[str, Any]] = None, cluster=None, resume: bool = False, in_place: bool = False,
          resources: Optional[Dict[str, float]] = None, worker_resources: Optional[Dict[str, float]] = None,
          retries: int = 2, metrics: Optional[Sequence[str]] = None, timeout: Optional[int] = None,
          notebooks_dir=None, log: Callable[[str], None] = print) -> List[RunResult]:
    """Run ``notebook`` at every point of ``grid`` (values as strings, see :func:`parse_grid`) into
    ``out_dir/<point>/``; write ``sweep.json``, ``sweep.csv`` and the sweep report. ``cluster``: None (one by
    one here) or a ``--cluster`` spec; ``resources``: a Dask annotation every point carries."""
    info = find_notebook(notebook, notebooks_dir)
    cluster = parse_cluster(cluster) if isinstance(cluster, str) else cluster
    base = dict(params or {})
    if profile is not None and "profile" in info.parameters and "profile" not in grid:
        base["profile"] = profile
    points = grid_points(info, grid, base)
    names = list(grid)
    out_dir = out_folder(out_dir)
    with out_lock(out_dir):
        tasks = [Task(point_label(p, names), info, p, out_dir / point_label(p, names), dict(resources or {}))
                 for p in points]
        atomic_write_text(out_dir / "sweep.json", json.dumps(
            {"notebook": info.name, "grid": grid, "base": base, "cluster": str(cluster) if cluster else None,
             "points": [{"folder": t.label, "params": t.params} for t in tasks]}, indent=1, default=str))
        log(f"sweep {info.name}: {len(tasks)} point(s) of {' x '.join(f'{n}[{len(v)}]' for n, v in grid.items())}"
            f" -> {out_dir}")
        try:
            results = _run_tasks(tasks, cluster=cluster, resume=resume, in_place=in_place, retries=retries,
                                 worker_resources=worker_resources, timeout=timeout, log=log)
        finally:
            for t in tasks:
                if t.out_dir.exists():
                    write_report(t.out_dir, profile=t.params.get("profile"), notebooks_dir=notebooks_dir)
            write_sweep_report(out_dir, metrics=metrics, notebooks_dir=notebooks_dir)
    return results


def sweep_table(out_dir, metrics: Optional[Sequence[str]] = None, notebooks_dir=None) -> pd.DataFrame:
    """One row per grid point of the sweep in ``out_dir``: the swept parameters, status, duration and the
    metrics (default: the notebook's key metrics, else its declared metrics) as columns."""
    out_dir = Path(out_dir)
    spec = json.loads((out_dir / "sweep.json").read_text())
    info = find_notebook(spec["notebook"], notebooks_dir)
    wanted = list(metrics) if metrics else (info.key_metrics or info.metrics)
    rows = []
    for pt in spec["points"]:
        folder = out_dir / pt["folder"]
        m = read_marker(folder, info.name) or {}
        recs, _ = read_metrics(paths(folder, info.name)[2])
        vals = {r["name"]: r["value"] for r in recs}
        rows.append({**{k: pt["params"].get(k) for k in spec["grid"]}, "status": m.get("status", "not run"),
                     "duration_s": round(float(m.get("duration", 0.0)), 1), "folder": pt["folder"],
                     **{w: vals.get(w) for w in wanted}})
    return pd.DataFrame(rows)


def _md_table(df: pd.DataFrame) -> List[str]:
    def cell(v):
        return "–" if v is None or (isinstance(v, float) and v != v) else (f"{v:.4g}" if isinstance(v, float) else str(v))
    return ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)] + [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]


def write_sweep_report(out_dir, metrics: Optional[Sequence[str]] = None, notebooks_dir=None) -> Path:
    """``sweep.csv`` and ``report.md`` (table, then one figure per metric and swept parameter) in ``out_dir``."""
    out_dir = Path(out_dir)
    spec = json.loads((out_dir / "sweep.json").read_text())
    df = sweep_table(out_dir, metrics, notebooks_dir)
    atomic_write_text(out_dir / "sweep.csv", df.to_csv(index=False))
    swept = list(spec["grid"])
    metric_cols = [c for c in df.columns if c not in swept + ["status", "duration_s", "folder"]]
    n_ok = int((df["status"] == "ok").sum())
    md = [f"# xnn sweep — {spec['notebook']}", "",
          f"{n_ok}/{len(df)} grid points completed; grid {spec['grid']}, fixed {spec['base']}, "
          f"cluster {spec.get('cluster') or 'none (one by one)'}.", "", *_md_table(df), ""]
    xs = [p for p in swept if p != "seed"] or [None]
    for metric in metric_cols:
        if pd.to_numeric(df[metric], errors="coerce").notna().sum() == 0:
            continue
        for x in xs:
            by = [p for p in swept if p not in (x, "seed")]
            png = f"sweep_{re.sub(r'[^A-Za-z0-9]+', '_', metric)}__{x or 'seed'}.png"
            fig = viz.sweep_metric(df, metric, x, by=by)
            fig.savefig(out_dir / png, dpi=110)
            md += [f"## {metric} against {x or 'seed'}", "", f"![{metric}]({png})", ""]
    atomic_write_text(out_dir / "report.md", "\n".join(md))
    return out_dir / "report.md"


def reproduce_on_cluster(*, cluster, profile: str = "default", only: Optional[Sequence[str]] = None, out_dir="runs",
                         resume: bool = False, notebooks_dir=None, params: Optional[Dict[str, Any]] = None,
                         seed: Optional[int] = None, in_place: bool = False,
                         resources: Optional[Dict[str, float]] = None,
                         worker_resources: Optional[Dict[str, float]] = None, retries: int = 2,
                         timeout: Optional[int] = None, log: Callable[[str], None] = print) -> List[RunResult]:
    """:func:`~.runner.reproduce` with the notebooks as tasks of a Dask cluster (same OUT layout, report and
    ``--resume``). ``resources`` are attached to the notebooks whose run time for ``profile`` says GPU."""
    cat = select(catalog(notebooks_dir), only)
    check_run_params(cat, params, seed)
    out_dir = out_folder(out_dir)
    gpu = [i.name for i in cat if "gpu" in str(i.runtime.get(profile, "")).lower()]
    if resources:
        log(f"--resources {resources}: for {', '.join(gpu) or 'no notebook'} (profile {profile} needs a GPU there)")
    tasks = [Task(i.name, i, notebook_params(i, profile, params, seed), out_dir,
                  dict(resources or {}) if i.name in gpu else {}) for i in cat]
    # longest expected first (LPT): the critical path starts at once, short notebooks fill the gaps
    order = sorted(range(len(tasks)), key=lambda k: -(expected_seconds(tasks[k].info, profile) or 0.0))
    with out_lock(out_dir):
        try:
            ran = _run_tasks([tasks[k] for k in order],
                             cluster=parse_cluster(cluster) if isinstance(cluster, str) else cluster,
                             resume=resume, in_place=in_place, retries=retries, worker_resources=worker_resources,
                             timeout=timeout, log=log)
            back = dict(zip(order, ran))
            return [back[k] for k in range(len(tasks))]  # in catalog order, as reproduce returns them
        finally:
            write_report(out_dir, profile=profile, notebooks_dir=notebooks_dir)
