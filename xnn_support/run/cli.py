"""The ``xnn`` command: ``list``, ``run``, ``reproduce``, ``bench``.

    xnn list [--json]
    xnn run 04 -p steps 300 --profile smoke --out DIR
    xnn reproduce [--profile smoke|default|paper] [--only 01,04] [--out DIR] [--resume] [--jobs N|auto] [--cluster SPEC]
    xnn sweep 00 -p seed 0,1 -p n_images 200,300 [--profile smoke] [--cluster local:2] [--out DIR] [--resume]
    xnn bench [--only NAME,...] [--json FILE]

Exit status: 0 on success; 1 if a notebook failed (its name, cell and error are printed);
2 for a usage error (unknown notebook or parameter, bad value, a missing notebooks folder, ``--out``
naming a file, another run writing into the same ``--out``); 128 + N when stopped by signal N
(SIGINT: 130, SIGTERM: 143), with the interrupted notebook left under its partial names.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import List, Optional

from ..core.version import __version__
from .runner import catalog
from .runner import coerce_params, find_notebook, run_notebook
from .report import write_report
from .scaffold import ScaffoldError, scaffold
from .runner import reproduce
from ..bench import run_benchmarks, format_table
from .runner import ParameterError, RunInterrupted, RunLocked, out_lock
from .guard import out_folder
from .cluster import ClusterSpec, parse_cluster, parse_resources
from .sweep import parse_grid, reproduce_on_cluster, sweep
from .timing import write_time_profile

__all__ = ["main"]


def _params(pairs) -> dict:
    return {k: v for k, v in (pairs or [])}


def _cmd_list(args) -> int:

    cat = catalog(args.notebooks)
    if not cat and not args.json:
        print(f"xnn list: no notebooks (NN_name.ipynb) in {args.notebooks or 'the default notebooks folder'}",
              file=sys.stderr)
    if args.json:
        print(json.dumps([{"id": i.id, "name": i.name, "title": i.title, "paper": i.paper, "arxiv": i.arxiv,
                           "runtime": i.runtime, "metrics": i.metrics, "parameters": i.parameters}
                          for i in cat], indent=1))
        return 0
    for i in cat:
        print(f"{i.id}  {i.name}.ipynb — {i.title}")
        if i.paper:
            print(f"    paper: {i.paper}" + (f" (arXiv {i.arxiv})" if i.arxiv else ""))
        if i.runtime:
            print("    run time: " + ", ".join(f"{k} {v}" for k, v in i.runtime.items()))
        print("    parameters:")
        for name, p in i.parameters.items():
            help_ = f"  # {p['help']}" if p.get("help") else ""
            print(f"      {name}: {p.get('inferred_type_name')} = {p.get('default')}{help_}")
        print()
    return 0


def _report_failures(results) -> int:
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        print(f"FAILED {r.describe_error()}", file=sys.stderr)
        if r.output:
            print(f"       executed notebook: {r.output}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_run(args) -> int:

    info = find_notebook(args.notebook, args.notebooks)
    raw = _params(args.param)
    if args.profile:
        raw["profile"] = args.profile
    if args.seed is not None:
        raw["seed"] = str(args.seed)
    params = coerce_params(info, raw)
    out = out_folder(args.out or f"runs/{params.get('profile', 'default')}")
    print(f"{info.name}: running with {params or 'default parameters'} -> {out}")
    with out_lock(out):
        try:
            r = run_notebook(info, params, out, progress_bar=args.verbose, widgets=args.widgets, html=args.html)
        finally:
            write_report(out, profile=params.get("profile"), notebooks_dir=args.notebooks)
    print(f"{info.name}: {r.status} in {r.duration:.1f} s; executed notebook {r.output}")
    return _report_failures([r])


def _cmd_reproduce(args) -> int:

    only = args.only.split(",") if args.only is not None else None  # ",,," is refused by reproduce
    out = out_folder(args.out or f"runs/{args.profile}")
    jobs = _jobs(args.jobs)
    if args.cluster and jobs > 1:
        raise ParameterError(f"--jobs {args.jobs} runs notebooks side by side on a local cluster; with --cluster "
                             f"the cluster's workers decide: drop one of them")
    cluster = parse_cluster(args.cluster) if args.cluster else ClusterSpec("local", workers=jobs) if jobs > 1 else None
    if cluster is not None and (args.widgets or args.html):
        raise ParameterError("--widgets and --html run here, one notebook at a time, not on a cluster; drop "
                             "--cluster (or pass --jobs 1), or drop them")
    if cluster is not None:
        results = reproduce_on_cluster(cluster=cluster, profile=args.profile, only=only,
                                       out_dir=out, resume=args.resume, notebooks_dir=args.notebooks,
                                       params=_params(args.param), seed=args.seed, **_cluster_opts(args),
                                       log=lambda s: print(s, flush=True))
        _time_profile(args, out)
        print(f"report: {out}/report.md and {out}/report.html")
        return _report_failures(results)
    _refuse_cluster_only(args)
    results = reproduce(profile=args.profile, only=only, out_dir=out, resume=args.resume,
                        notebooks_dir=args.notebooks, params=_params(args.param), seed=args.seed,
                        progress_bar=args.verbose, widgets=args.widgets, html=args.html,
                        log=lambda s: print(s, flush=True))
    _time_profile(args, out)
    print(f"report: {out}/report.md and {out}/report.html")
    return _report_failures(results)


def _jobs(value: str) -> int:
    """``--jobs``: a count >= 1, or ``auto`` (one per CPU core, at most 4: the suite's critical path, notebook
    02, bounds the gain beyond that; every notebook trains with one torch thread)."""
    if value == "auto":
        return max(1, min(os.cpu_count() or 1, 4))
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ParameterError(f"--jobs must be an integer >= 1 or 'auto', got {value!r}; pass e.g. --jobs 2")
    return n


def _time_profile(args, out) -> None:
    if args.profile_time:
        print(f"time profile: {write_time_profile(out)}")


def _cluster_opts(args) -> dict:
    return {"in_place": args.in_place, "resources": parse_resources(args.resources),
            "worker_resources": parse_resources(args.worker_resources), "retries": args.retries,
            "timeout": args.timeout}


def _refuse_cluster_only(args) -> None:
    """Options that only mean something on a cluster are refused without one (nothing silently ignored)."""
    given = [o for o, v in (("--in-place", args.in_place), ("--resources", args.resources),
                            ("--worker-resources", args.worker_resources)) if v]
    if given:
        raise ParameterError(f"{', '.join(given)} only apply with --cluster; add e.g. --cluster local:2")


def _cmd_sweep(args) -> int:
    grid = parse_grid(args.param)
    cluster = parse_cluster(args.cluster) if args.cluster else None
    if cluster is None:
        _refuse_cluster_only(args)
    out = out_folder(args.out or f"runs/sweep-{args.notebook}")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    results = sweep(args.notebook, grid, out_dir=out, profile=args.profile, cluster=cluster, resume=args.resume,
                    metrics=metrics, notebooks_dir=args.notebooks, **_cluster_opts(args),
                    log=lambda s: print(s, flush=True))
    print(f"sweep report: {out}/report.md, table {out}/sweep.csv")
    return _report_failures(results)


def _cmd_new(args) -> int:
    try:
        paths = scaffold(args.nid, args.name, root=Path(args.root), title=args.title, paper=args.paper,
                         package=args.package)
    except ScaffoldError as e:
        print(f"xnn new: error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"created {p}")
    nb = paths[0].stem
    print(f"next: fill in the method docstring and code, declare metrics and claims in {nb}.ipynb's metadata, "
          f"and add a row for {nb} to README's notebook table")
    return 0


def _cmd_bench(args) -> int:

    only = [s.strip() for s in args.only.split(",")] if args.only else None
    rows = run_benchmarks(only=only, quick=args.quick, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.as_dict() for r in rows], f, indent=1)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="xnn", description="Run the xnn notebooks headless, report, benchmark.")
    ap.add_argument("--version", action="version", version=f"xnn {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--notebooks", default=None, help="notebooks folder (default: the suite's)")

    p = sub.add_parser("list", help="notebooks with their parameters and run times")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common(p)
    p.set_defaults(fn=_cmd_list)

    def run_opts(p):
        p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                       help="set a notebook parameter (repeatable); unknown names are refused")
        p.add_argument("--seed", type=int, default=None, help="set the notebooks' seed parameter")
        p.add_argument("--out", default=None, help="output folder (default runs/PROFILE)")
        p.add_argument("-v", "--verbose", action="store_true", help="show papermill's per-cell progress")
        p.add_argument("--widgets", action="store_true",
                       help="also run the widget cells and move every control through two values (fails if a "
                            "control changes nothing or raises): a pre-flight check before a lecture")
        p.add_argument("--html", action="store_true",
                       help="also write OUT/NN_name.html, a static page of each executed notebook (no kernel needed)")
        common(p)

    def cluster_opts(p):
        p.add_argument("--cluster", default=None, metavar="SPEC",
                       help="run on Dask: local:N (N worker processes here), tcp://host:8786 (a scheduler), "
                            "slurm:cores=4,memory=16GB,jobs=2[,queue=..,walltime=..,resources=gpu=1] or pbs:...")
        p.add_argument("--resources", default=None, metavar="NAME=N,...",
                       help="Dask resources a task needs, e.g. gpu=1 (reproduce: the notebooks that need a GPU)")
        p.add_argument("--worker-resources", default=None, metavar="NAME=N,...",
                       help="resources each local:N worker offers, e.g. gpu=1")
        p.add_argument("--retries", type=int, default=2,
                       help="worker deaths a notebook survives before it fails (default 2)")
        p.add_argument("--in-place", action="store_true",
                       help="workers write into OUT themselves (OUT on a shared file system)")
        p.add_argument("--timeout", type=int, default=None, help="seconds a cell may run (default: no limit)")

    p = sub.add_parser("run", help="run one notebook")
    p.add_argument("notebook", help="id (04), name (04_layerwise_discarding) or path")
    p.add_argument("--profile", choices=["smoke", "default", "paper"], default=None)
    run_opts(p)
    p.set_defaults(fn=_cmd_run)

    p = sub.add_parser("reproduce", help="run all notebooks in order and write the report")
    p.add_argument("--profile", choices=["smoke", "default", "paper"], default="default")
    p.add_argument("--only", default=None, help="comma-separated ids or names, e.g. 01,04")
    p.add_argument("--resume", action="store_true", help="skip notebooks already complete with the same inputs")
    p.add_argument("--jobs", default="1", metavar="N|auto",
                   help="notebooks run side by side (a local Dask cluster of N workers, longest expected first; "
                        "auto: one per core, at most 4). Results do not depend on it. Default 1")
    p.add_argument("--profile-time", action="store_true",
                   help="also write OUT/time_profile.md: seconds per notebook, category and slowest cells")
    run_opts(p)
    cluster_opts(p)
    p.set_defaults(fn=_cmd_reproduce)

    p = sub.add_parser("sweep", help="run one notebook at every point of a parameter grid (cartesian product)")
    p.add_argument("notebook", help="id (00), name or path")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "V1,V2,..."),
                   help="a swept parameter and its comma-separated values (repeatable; the grid is the product)")
    p.add_argument("--profile", choices=["smoke", "default", "paper"], default="smoke",
                   help="profile of every point unless profile itself is swept (default smoke)")
    p.add_argument("--out", default=None, help="output folder (default runs/sweep-NOTEBOOK); one subfolder per point")
    p.add_argument("--resume", action="store_true", help="skip grid points already complete with the same inputs")
    p.add_argument("--metrics", default=None, help="comma-separated metrics for the table and plots "
                                                   "(default: the notebook's key metrics)")
    common(p)
    cluster_opts(p)
    p.set_defaults(fn=_cmd_sweep)

    p = sub.add_parser("bench", help="print the benchmark table")
    p.add_argument("--only", default=None, help="comma-separated benchmark names")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke check of the benchmarks)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.set_defaults(fn=_cmd_bench)

    p = sub.add_parser("new", help="scaffold a new paper: notebook, papers/<name>/ subpackage, viz module, test file")
    p.add_argument("nid", metavar="NN", help="two-digit notebook number, e.g. 07")
    p.add_argument("name", help="lower_snake_case name, e.g. decision_trees (also the subpackage name)")
    p.add_argument("--title", default=None, help="notebook title (default: from the name)")
    p.add_argument("--paper", default="", help="citation: authors, title, venue year")
    p.add_argument("--package", default=None, help="subpackage name if not the same as NAME")
    p.add_argument("--root", default=".", help="repository root (default: the current folder)")
    p.set_defaults(fn=_cmd_new)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except BrokenPipeError:  # `xnn list | head`: the reader went away; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ParameterError, KeyError, FileNotFoundError, NotADirectoryError, RunLocked) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"xnn {args.cmd}: error: {msg}", file=sys.stderr)
        return 2
    except RunInterrupted as e:
        print(f"xnn {args.cmd}: {e}; finished notebooks are kept, the interrupted one is left under its partial "
              "names (rerun with --resume)", file=sys.stderr)
        return 128 + e.signum


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
