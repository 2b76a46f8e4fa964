"""Old import paths, kept for one release: ``xnn_support.icnn`` -> ``xnn_support.papers.icnn.method``.

Before the layout of issue 14 every module sat flat in ``xnn_support/``. Importing an old path still
works and gives the *same* module object as the new path (so monkeypatching either affects both),
with a :class:`DeprecationWarning` naming the new path. A meta-path finder serves the aliases, so no
alias file clutters the package's folder listing. :data:`ALIASES` is also the record of the move.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

#: old module (under xnn_support) -> new module (under xnn_support)
ALIASES = {
    "capture": "core.capture", "ledger": "core.ledger", "utils": "core.utils", "train": "core.train",
    "cache": "core.cache", "predict": "core.predict", "augment": "core.augment",
    "sigma_config": "sigma.presets", "sigma_adapters": "sigma.adapters", "sigma_result": "sigma.result",
    "explanatory_graph": "papers.graph.method", "explanatory_graph_loop": "papers.graph.loop",
    "graph_eval": "papers.graph.metrics", "graph_experiments": "papers.graph.experiments",
    "bench_graph": "papers.graph.bench",
    "icnn": "papers.icnn",  # the package: method + metrics (location_instability, issue 6)
    "icnn_metrics": "papers.icnn.metrics",
    "icnn_experiments": "papers.icnn.experiments", "bench_icnn": "papers.icnn.bench",
    "semantic": "papers.semantic.method", "semantic_scores": "papers.semantic.scores",
    "semantic_faces": "papers.semantic.experiments", "bench_semantic": "papers.semantic.bench",
    "discarding": "papers.discarding.method", "discarding_text": "papers.discarding.text",
    "bench_discarding": "papers.discarding.bench",
    "consistency": "papers.consistency.method", "consistency_net": "papers.consistency.net",
    "consistency_experiments": "papers.consistency.experiments",
    "bench_consistency": "papers.consistency.bench",
    "pointcloud": "papers.pointcloud.method", "pointcloud_experiments": "papers.pointcloud.experiments",
    "bench_pointcloud": "papers.pointcloud.bench",
    "runner": "run.runner", "report": "run.report", "cli": "run.cli",
    "bench_core": "bench.core", "bench_train": "bench.train",
}
PACKAGE = "xnn_support"


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        warnings.warn(f"{self.old} is deprecated and will be removed in the next release; import {self.new} "
                      f"instead", DeprecationWarning, stacklevel=4)
        return importlib.import_module(self.new)

    def exec_module(self, module):  # the target module is already executed
        pass


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(PACKAGE + "."):
            return None
        old = fullname[len(PACKAGE) + 1:]
        if old not in ALIASES:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(fullname, f"{PACKAGE}.{ALIASES[old]}"))


class _Package(types.ModuleType):
    """The root package's class: importing an old alias must not replace a top-level name that the
    package re-exports (``xnn_support.capture`` is the function, not the alias module)."""

    def __setattr__(self, name, value):
        if (name in ALIASES and isinstance(value, types.ModuleType) and name in self.__dict__
                and not isinstance(self.__dict__[name], types.ModuleType)):
            return
        super().__setattr__(name, value)


def install(package_name: str = PACKAGE) -> None:
    """Register the alias finder once and give the root package its guarded class."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
    sys.modules[package_name].__class__ = _Package


def new_name(old: str) -> str:
    """The new dotted path of an old one (``"xnn_support.icnn"`` -> ``"xnn_support.papers.icnn.method"``);
    unchanged if it was not moved. Longest old prefix wins."""
    rest = old[len(PACKAGE) + 1:] if old.startswith(PACKAGE + ".") else None
    if rest is None:
        return old
    head, _, tail = rest.partition(".")
    if head in ALIASES:
        return f"{PACKAGE}.{ALIASES[head]}" + (f".{tail}" if tail else "")
    return old
