"""Dependencies are declared once (pyproject) and mirrored by environment.yml; the README's two
commands and .ci/run agree."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = data["project"]["dependencies"] + data["project"]["optional-dependencies"]["test"]
    return {_name(d): d for d in deps}


def _environment():
    conda, pip = {}, {}
    section = None
    for line in (ROOT / "environment.yml").read_text().splitlines():
        s = line.split("#")[0].rstrip()
        if re.match(r"^\w", s):  # a top-level key: name, channels, dependencies
            section = "deps" if s.startswith("dependencies:") else None
            continue
        if re.match(r"^\s+- pip:\s*$", s):
            section = "pip"
            continue
        if section is None:
            continue
        m = re.match(r"^(\s+)- (.+)$", s)
        if not m:
            continue
        item = m.group(2).strip()
        if section == "pip" and len(m.group(1)) > 2:
            pip[item] = item
        elif not item.startswith(("python", "pip")):
            conda[_name(item)] = item
    return conda, pip


def test_environment_yml_lists_the_same_packages_as_pyproject():
    py = _pyproject()
    conda, pip = _environment()
    pip_names = {_name(x): x for x in pip if not x.startswith("-e")}
    env_names = set(conda) | set(pip_names)
    assert env_names == set(py), f"only in pyproject: {set(py) - env_names}; only in environment.yml: {env_names - set(py)}"
    assert py["torch"] == "torch==2.14.1" and py["torchvision"] == "torchvision==0.29.1"
    assert pip_names["torch"] == "torch==2.14.1" and pip_names["torchvision"] == "torchvision==0.29.1"
    assert any(x.startswith("-e .") for x in pip), "environment.yml must install this package with pip"
    assert "conda-forge" in (ROOT / "environment.yml").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in readme and "make reproduce" in readme
    assert "make test" in ci
