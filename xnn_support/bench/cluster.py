"""Scale-out benchmark rows (issue 21): a sweep on a 2-worker Dask ``LocalCluster`` against the same sweep
run one by one, and the per-task scheduling overhead.

* ``sweep local:2``: a 4-point smoke sweep of the tour (``seed`` x ``n_images``; a generated toy notebook
  that sleeps 3 s with ``--quick``) on ``local:2`` against the same 4 points run one after another in
  this process (target ratio <= 0.6 on 2 cores). Each side gets its own empty model cache, so neither
  reuses the other's training; the cluster side includes starting and stopping the cluster.
* ``task overhead``: the round trip of a no-op task through the scheduler (submit -> result), per task,
  over 40 tasks, against calling the function directly.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import nbformat

from . import Row, benchmark
from ..run.cluster import connect
from ..run.sweep import sweep


@contextlib.contextmanager
def _private_cache(root: Path):
    old = os.environ.get("XNN_CACHE")
    os.environ["XNN_CACHE"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("XNN_CACHE", None)
        else:
            os.environ["XNN_CACHE"] = old


def _toy_notebooks(d: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["xnn"] = {"title": "bench toy", "runtime": {"smoke": "3 s"}, "metrics": ["toy/m"]}
    p = nbformat.v4.new_code_cell('profile: str = "smoke"  # profile\nseed: int = 0  # seed\nn_images: int = 0  # size')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# bench toy"), p, nbformat.v4.new_code_cell(
        "import time\nfrom xnn_support import record\ntime.sleep(3)\nrecord('toy/m', seed + n_images)")]
    d.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(d / "00_toy.ipynb"))
    return d


@benchmark("run/sweep")
def _sweep_rows(quick: bool):
    grid = {"seed": ["0", "1"], "n_images": ["200", "300"]}
    times = {}
    with tempfile.TemporaryDirectory(prefix="xnn-bench-sweep-") as tmp:
        tmp = Path(tmp)
        nbs = _toy_notebooks(tmp / "nbs") if quick else None
        for side, cluster in (("one by one", None), ("local:2", "local:2")):
            with _private_cache(tmp / f"cache-{side}"):
                t0 = time.perf_counter()
                res = sweep("00", grid, out_dir=tmp / f"out-{side}", profile="smoke", cluster=cluster,
                            notebooks_dir=nbs, log=lambda s: None)
                times[side] = time.perf_counter() - t0
            bad = [r.name for r in res if r.status != "ok"]
            if bad:
                raise RuntimeError(f"sweep ({side}) failed: {bad}")
    what = "toy notebook (3 s sleep)" if quick else "tour notebook, smoke"
    ratio = times["local:2"] / times["one by one"]
    return [Row("run: 4-point sweep on local:2", times["local:2"], times["one by one"], "the same 4 points one by one",
                target="ratio <= 0.6", ok=ratio <= 0.6, note=f"{what}; cluster start/stop included")]


def _noop(i):
    return i


@benchmark("run/task_overhead")
def _overhead_rows(quick: bool):
    n = 10 if quick else 40
    with connect("local:2", log=lambda s: None) as client:
        client.submit(_noop, -1, pure=False).result()  # warm: workers up, function shipped once
        t0 = time.perf_counter()
        for i in range(n):
            client.submit(_noop, i, pure=False).result()
        per_task = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for i in range(n):
        _noop(i)
    direct = max((time.perf_counter() - t0) / n, 1e-9)
    return [Row("run: Dask task round trip", per_task * 1e3, direct * 1e3, "a direct call", unit="ms",
                note=f"{n} sequential no-op tasks on local:2 (submit -> result)")]
