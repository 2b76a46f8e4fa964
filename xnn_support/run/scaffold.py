"""``xnn new NN name``: scaffold a paper in the suite's layout.

Creates, and refuses to overwrite:

* ``notebooks/NN_name.ipynb``: cell 1 (title, citation, what you will see, run time per profile),
  cell 2 (the only ``parameters`` cell: ``profile`` and ``seed``), a calls cell, the results cell;
  ``metadata.xnn`` with title, paper, arXiv id, run times, declared metrics and claims (empty lists);
* ``xnn_support/papers/<package>/``: ``__init__.py`` (the public API), ``method.py`` (with the
  docstring the guide asks for), ``metrics.py``, ``experiments.py``, ``bench.py`` (found by ``xnn
  bench`` by itself);
* ``xnn_support/viz/<package>.py`` (joins ``viz``'s namespace by itself);
* ``tests/test_<package>.py``.

Nothing else is a hand-kept list, except README's notebook table (the command prints the row).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["scaffold", "ScaffoldError"]


class ScaffoldError(ValueError):
    """Bad arguments to ``xnn new`` (the message names the argument and the fix)."""


def _notebook(nid: str, name: str, title: str, paper: str) -> Dict:
    def md(text):
        return {"cell_type": "markdown", "metadata": {}, "source": text.splitlines(keepends=True)}

    def code(text, tags=None):
        meta = {"tags": tags} if tags else {}
        return {"cell_type": "code", "execution_count": None, "metadata": meta, "outputs": [],
                "source": text.splitlines(keepends=True)}

    pkg = name
    cells = [
        md(f"# {nid} — {title}\n\n*{paper or 'citation: authors, venue, year'}*\n\n"
           "**What you will see.** (the story in three lines: the claim, the experiment, the figure)\n\n"
           "**Run time** (2-core CPU): smoke ~? s, default ~? min, paper: GPU.\n"),
        code('profile: str = "default"  # smoke | default | paper: sizes below\n'
             "seed: int = 0  # first seed; every generator is seeded from it\n", tags=["parameters"]),
        code("from xnn_support import record, seed_everything, viz\n"
             f"from xnn_support.papers import {pkg}\n"
             f"from xnn_support.papers.{pkg} import experiments as X\n\n"
             'SIZES = {"smoke": dict(), "default": dict(), "paper": dict()}[profile]  # profile -> sizes, in one place\n'
             "seed_everything(seed)\n"),
        md("## Our numbers beside the paper's\n"),
        code("from xnn_support import results_table\nresults_table()\n"),
    ]
    for i, c in enumerate(cells):
        c["id"] = f"{nid}-{i:02d}"
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"},
                         "xnn": {"title": title, "paper": paper, "arxiv": "",
                                 "runtime": {"smoke": "?", "default": "?", "paper": "GPU"},
                                 "metrics": [], "key_metrics": [], "claims": []}}}


def _files(nid: str, name: str, pkg: str, title: str, paper: str) -> Dict[str, str]:
    cite = paper or "AUTHORS, TITLE, VENUE YEAR"
    return {
        f"xnn_support/papers/{pkg}/__init__.py":
            f'"""Notebook {nid}: {title}. ``method`` is the paper\'s algorithm, ``metrics`` its evaluation,\n'
            f'``experiments`` the notebook\'s protocol, ``bench`` its ``xnn bench`` rows."""\n'
            "from .method import *  # noqa: F401,F403\n",
        f"xnn_support/papers/{pkg}/method.py":
            f'"""{title}.\n\n{cite}.\n\n'
            "What is reproduced: (the paper's method, on which networks and data).\n\n"
            "Deviations: (every choice the paper leaves open or we changed, and why).\n\n"
            "Equations: (which function implements which equation, in implementation order).\n"
            "The spec is ``shared/papers/" + f"{nid}_{name}.md``; unverified recollections are marked there.\n"
            '"""\nfrom __future__ import annotations\n\nimport torch\nfrom torch import nn\n\n'
            "from ...core.utils import device_of  # noqa: F401  (the device follows the model)\n\n__all__: list = []\n",
        f"xnn_support/papers/{pkg}/metrics.py":
            f'"""Evaluation of notebook {nid} ({title}): each metric a function of tensors or a model."""\n'
            "from __future__ import annotations\n\n__all__: list = []\n",
        f"xnn_support/papers/{pkg}/experiments.py":
            f'"""The protocol of notebook {nid}: data, training (through ``core.train.fit``, cached), seeds,\n'
            'each study returning a tidy pandas DataFrame; the notebook only calls, plots and records."""\n'
            "from __future__ import annotations\n\n__all__: list = []\n",
        f"xnn_support/papers/{pkg}/bench.py":
            f'"""``xnn bench`` rows of notebook {nid}: ours against a reference (a floor or a faithful loop of the\n'
            'official code), side by side; register each with ``@benchmark("' + pkg + '/...")``."""\n'
            "from __future__ import annotations\n\nfrom ...bench import Row, benchmark, one_thread, paired  # noqa: F401\n",
        f"xnn_support/viz/{pkg}.py":
            f'"""Figures of notebook {nid} ({title}); every function returns a matplotlib Figure."""\n'
            "from __future__ import annotations\n\n__all__: list = []\n",
        f"tests/test_{pkg}.py":
            f'"""Tests of notebook {nid} ({title}): planted truth first, then the contracts of the entry points."""\n'
            f"from xnn_support.papers import {pkg}  # noqa: F401\n",
    }


def scaffold(nid: str, name: str, *, root: Path, title: Optional[str] = None, paper: str = "",
             package: Optional[str] = None) -> List[Path]:
    """Write the files of a new paper under ``root`` (the repository); return their paths."""
    if not re.fullmatch(r"\d{2}", str(nid)):
        raise ScaffoldError(f"NN must be two digits (e.g. 07), got {nid!r}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ScaffoldError(f"name must be lower_snake_case (e.g. decision_trees), got {name!r}")
    pkg = package or name
    if not re.fullmatch(r"[a-z][a-z0-9_]*", pkg) or pkg in {"method", "metrics", "experiments", "bench"}:
        raise ScaffoldError(f"--package must be a lower_snake_case Python name, got {pkg!r}")
    root = Path(root)
    if not (root / "xnn_support" / "papers").is_dir() or not (root / "notebooks").is_dir():
        raise ScaffoldError(f"{root} is not the repository root (no xnn_support/papers or notebooks/): pass --root")
    taken = sorted(p.name for p in (root / "notebooks").glob(f"{nid}_*.ipynb"))
    if taken:
        raise ScaffoldError(f"notebook number {nid} is taken by {taken[0]}; choose another NN")
    title = title or name.replace("_", " ").capitalize()
    files = {root / k: v for k, v in _files(nid, name, pkg, title, paper).items()}
    nb_path = root / "notebooks" / f"{nid}_{name}.ipynb"
    existing = [str(p) for p in [nb_path, *files] if p.exists()]
    if existing:
        raise ScaffoldError(f"refusing to overwrite {existing}; remove them or choose another name/--package")
    (root / "xnn_support" / "papers" / pkg).mkdir(parents=True)
    for p, text in files.items():
        p.write_text(text)
    nb_path.write_text(json.dumps(_notebook(nid, pkg, title, paper), indent=1, ensure_ascii=False) + "\n")
    return [nb_path, *files]
