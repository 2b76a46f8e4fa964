"""Build tiny notebooks for runner tests (in the suite's conventions)."""
import nbformat


def make_notebook(path, params_src, cells, *, metrics=(), title="Test notebook"):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["xnn"] = {"title": title, "paper": "Nobody, Test (2026)", "runtime": {"smoke": "5 s"},
                          "metrics": list(metrics), "key_metrics": list(metrics)}
    p = nbformat.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}"), p] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, str(path))
    return path
