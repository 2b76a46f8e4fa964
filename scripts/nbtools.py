"""Maintenance helpers for the committed notebooks (not part of the package).

    python scripts/nbtools.py strip notebooks/*.ipynb    # remove outputs, execution counts, papermill metadata
    python scripts/nbtools.py check notebooks/*.ipynb    # exit 1 if any notebook carries outputs

``build(path, cells, meta)`` writes a notebook from a list of ("md"|"code"|"params"|"widget", source)
pairs in the suite's conventions (used by one-off authoring scripts).
"""
from __future__ import annotations

import sys

import nbformat

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def build(path, cells, meta):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["xnn"] = meta
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
            continue
        c = nbformat.v4.new_code_cell(src)
        if kind == "params":
            c.metadata["tags"] = ["parameters"]
        elif kind == "widget":
            c.metadata["tags"] = ["skip-execution"]
        nb.cells.append(c)
    strip(nb)
    nbformat.write(nb, str(path))


def strip(nb):
    for c in nb.cells:
        c.metadata.pop("papermill", None)
        c.metadata.pop("execution", None)
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nb.metadata.pop("papermill", None)
    return nb


def main(argv):
    cmd, paths = argv[0], argv[1:]
    dirty = []
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        has = any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code")
        if cmd == "strip":
            nbformat.write(strip(nb), p)
        elif has:
            dirty.append(p)
    for p in dirty:
        print(f"{p}: has outputs")
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
