"""``xnn bench``: the benchmark table. Every row is measured side by side in one run: our code and
its reference (a floor such as a plain forward, or a faithful loop written like the official code),
so the ratio column is meaningful on whatever machine runs it.

Rows are registered with :func:`benchmark`. The core rows live in :mod:`xnn_support.bench.core` and
:mod:`xnn_support.bench.train`; every paper contributes rows through its ``papers/<paper>/bench.py``,
found by :func:`plugins` without a hand-kept list (imported lazily, so a broken plugin shows up as a
failed row instead of breaking the table).
"""
from __future__ import annotations

import importlib
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ..core.utils import torch_threads

__all__ = ["Row", "benchmark", "run_benchmarks", "format_table", "timeit", "paired", "one_thread", "plugins",
           "TinyConvNet", "op_profile"]

#: the core rows; the papers' rows are found by :func:`plugins`
CORE_PLUGINS = ("xnn_support.bench.core", "xnn_support.bench.train", "xnn_support.bench.cluster")
_PAPERS = Path(__file__).resolve().parent.parent / "papers"


def plugins() -> List[str]:
    """Every module that registers rows: the core ones, then ``xnn_support.papers.<p>.bench`` for each
    paper subpackage that has a ``bench.py`` (sorted by name)."""
    found = sorted(d.name for d in _PAPERS.iterdir() if (d / "bench.py").is_file() and (d / "__init__.py").is_file())
    return list(CORE_PLUGINS) + [f"xnn_support.papers.{name}.bench" for name in found]


def one_thread(fn):
    """Run a benchmark with one torch thread: on a shared 2-core machine two OpenMP threads run small
    kernels 4-7x slower and erratically (contention), which would drown the ratio in noise."""
    def wrapped(quick):
        with torch_threads(1):
            return fn(quick)
    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped

_REGISTRY: Dict[str, Callable[[bool], List["Row"]]] = {}


@dataclass
class Row:
    name: str
    ours: float                 # seconds (or the unit given)
    reference: float
    reference_name: str
    unit: str = "s"
    target: str = ""            # e.g. "ratio <= 1.2"
    note: str = ""
    ok: Optional[bool] = None   # target met? (None: no target)

    @property
    def ratio(self) -> float:
        return self.ours / self.reference if self.reference else float("nan")

    def as_dict(self):
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def benchmark(name: str):
    """Register ``fn(quick: bool) -> list[Row]`` under ``name``."""
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


def timeit(fn: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired(fn_a, fn_b, *, repeat: int = 5, warmup: int = 1):
    """Time two callables interleaved (a, b, a, b, ...) so machine load hits both alike."""
    for _ in range(warmup):
        fn_a(), fn_b()
    ta, tb = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn_a()
        t1 = time.perf_counter()
        fn_b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return statistics.median(ta), statistics.median(tb)


def op_profile(fn: Callable[[], object], top: int = 5) -> str:
    """Where ``fn()``'s CPU time goes: the ``top`` torch operators by self CPU time, each as its share
    of all operator self time (``"aten::mm 31%, ..."``), then the calls per operator summed (launch
    overhead shows as many calls). For a row's note: why a batched engine gains what it gains."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ev = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in ev) or 1.0
    ev.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    shares = ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in ev[:top])
    return f"{shares}; {sum(e.count for e in ev)} op calls"


def _load_plugins(log) -> List[Row]:
    failed = []
    for mod in plugins():
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:  # the plugin exists but one of its imports is missing
                failed.append(Row(f"{mod} (import failed)", float("nan"), float("nan"), "-", note=str(e)[:80]))
        except Exception as e:  # pragma: no cover - shown in the table
            log(f"bench: could not import {mod}: {e}")
            failed.append(Row(f"{mod} (import failed)", float("nan"), float("nan"), "-", note=str(e)[:80]))
    return failed


def run_benchmarks(only: Optional[List[str]] = None, *, quick: bool = False, log=print) -> List[Row]:
    rows = _load_plugins(log)
    names = [n for n in _REGISTRY if not only or any(o in n for o in only)]
    if only and not names:
        raise KeyError(f"no benchmark matches {only}; available: {sorted(_REGISTRY)}")
    torch.set_grad_enabled(True)
    for n in names:
        log(f"bench: {n} ...")
        try:
            rows.extend(_REGISTRY[n](quick))
        except Exception as e:  # a failing benchmark is a row, not a crash
            rows.append(Row(f"{n} (failed)", float("nan"), float("nan"), "-", note=f"{type(e).__name__}: {e}"[:120]))
    return rows


def format_table(rows: List[Row]) -> str:
    head = ("benchmark", "ours", "reference", "reference is", "ratio", "target", "met")
    body = []
    for r in rows:
        met = "" if r.ok is None else ("yes" if r.ok else "NO")
        body.append((r.name, f"{r.ours:.4g} {r.unit}", f"{r.reference:.4g} {r.unit}", r.reference_name,
                     f"{r.ratio:.3g}", r.target, met))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)] if body else [len(h) for h in head]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [line(head), line("-" * w for w in widths)] + [line(b) for b in body]
    notes = [f"  {r.name}: {r.note}" for r in rows if r.note]
    if notes:
        out += ["", "notes:"] + notes
    try:
        nthreads = torch.get_num_threads()
    except Exception:  # pragma: no cover
        nthreads = "?"
    out += ["", f"torch {torch.__version__}, {nthreads} threads, "
            + ("CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU")]
    return "\n".join(out)


class TinyConvNet(nn.Sequential):
    """A small VGG-style net used by core benchmarks that must not depend on the zoo."""

    def __init__(self, width: int = 32, num_classes: int = 5):
        layers, c = [], 3
        for i, w in enumerate([width, width * 2, width * 4, width * 4]):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        super().__init__(nn.Sequential(*layers), nn.Flatten(), nn.LazyLinear(num_classes))
