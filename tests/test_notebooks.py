"""Every notebook in notebooks/: committed without outputs, one typed parameters cell with profile
and seed, a "How to explore" cell naming its widgets, metadata for `xnn list`; and each runs end to
end with profile=smoke, every cell completed (the widget cells too, every control exercised) and its
declared metrics in the ledger."""
import json
import re
from pathlib import Path

import nbformat
import pytest

from xnn_support.run.runner import catalog, read_marker, run_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean_and_conventional(path):
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.get("outputs") for c in code), "commit notebooks without outputs"
    assert not any(c.get("execution_count") for c in code), "commit notebooks without execution counts"
    assert not any("papermill" in c.metadata for c in nb.cells), "papermill metadata left in the notebook"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[1] is params[0], \
        "cell 1 = title/citation markdown, cell 2 = parameters"
    src = params[0].source
    assert 'profile: str = "default"' in src and "seed: int" in src
    for line in src.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert ":" in line.split("=")[0] and "#" in line, f"parameter not typed and commented: {line!r}"
    # papermill silently drops a parameter it cannot parse (e.g. an '=' in its comment); the runner
    # would then refuse it: every assigned name must be visible to papermill's inspection
    import papermill as pm
    assigned = {line.split(":")[0].split("=")[0].strip() for line in src.splitlines()
                if line.strip() and not line.lstrip().startswith("#")}
    assert assigned <= set(pm.inspect_notebook(str(path))), "papermill cannot see some parameters"
    meta = nb.metadata.get("xnn", {})
    assert meta.get("title") and "smoke" in meta.get("runtime", {}) and isinstance(meta.get("metrics"), list)
    used = []
    for c in code:
        if "skip-execution" in c.metadata.get("tags", []):
            assert "xnn_support.widgets" in c.source or "widgets." in c.source, "widget cells call xnn_support.widgets"
            used += re.findall(r"widgets\.(\w+)\(", c.source)
    if used:  # the notebook opens (right after its parameters) with a cell saying how to explore its widgets
        explore = nb.cells[2]
        assert explore.cell_type == "markdown" and explore.source.startswith("## How to explore"), \
            "cell 3 must be a '## How to explore' markdown cell listing the widgets and what to try"
        missing = [f for f in used if f"widgets.{f}" not in explore.source]
        assert not missing, f"'How to explore' does not mention {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("info", catalog(ROOT / "notebooks") if NOTEBOOKS else [], ids=lambda i: i.name)
def test_notebook_runs_in_smoke_profile(info, tmp_path):
    # widget cells run too, each control moved through two values (xnn run --widgets)
    r = run_notebook(info, {"profile": "smoke"}, tmp_path, widgets=True)
    assert r.status == "ok", r.describe_error()
    assert read_marker(tmp_path, info.name)["status"] == "ok"
    nb = nbformat.read(r.output, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.metadata["papermill"]["status"] == "completed"
    names = {m["name"] for m in json.loads(Path(r.ledger).read_text())["metrics"]}
    assert set(info.metrics) <= names, f"declared metrics missing: {set(info.metrics) - names}"
