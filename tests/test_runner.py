"""The papermill runner: parameter refusal, failure reporting, incomplete runs, resume after kill."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbfactory import make_notebook
from xnn_support.run import cli as cli
from xnn_support.run.runner import ParameterError, coerce_params, find_notebook, reproduce

pytestmark = pytest.mark.slow
XNN = [sys.executable, "-m", "xnn_support.run.cli"]


@pytest.fixture
def nbdir(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    make_notebook(d / "00_ok.ipynb", 'profile: str = "default"  # smoke|default|paper\nseed: int = 0\nn: int = 3  # a count',
                  ["from xnn_support import record\nrecord('n_squared', n * n, paper=9)"], metrics=["n_squared"])
    return d


def test_unknown_parameter_is_refused_with_valid_names(nbdir, capsys):
    info = find_notebook("00", nbdir)
    with pytest.raises(ParameterError) as e:
        coerce_params(info, {"nonexistent": "1"})
    assert "n: int = 3" in str(e.value) and "profile" in str(e.value)
    assert coerce_params(info, {"n": "4", "profile": "smoke"}) == {"n": 4, "profile": "smoke"}
    with pytest.raises(ParameterError, match="expects int"):
        coerce_params(info, {"n": "four"})
    with pytest.raises(ParameterError, match="profile"):
        coerce_params(info, {"profile": "huge"})
    rc = cli.main(["run", "00", "-p", "nonexistent", "1", "--notebooks", str(nbdir)])
    assert rc == 2
    assert "nonexistent" in capsys.readouterr().err


def test_run_records_metrics_and_report(nbdir, tmp_path):
    out = tmp_path / "out"
    rc = cli.main(["run", "00", "-p", "n", "5", "--profile", "smoke", "--out", str(out), "--notebooks", str(nbdir)])
    assert rc == 0
    ledger = json.loads((out / "00_ok.metrics.json").read_text())
    assert ledger["metrics"][0]["value"] == 25 and ledger["metrics"][0]["paper"] == 9
    marker = json.loads((out / "00_ok.run.json").read_text())
    assert marker["status"] == "ok" and marker["params"] == {"n": 5, "profile": "smoke"}
    md = (out / "report.md").read_text()
    assert "00_ok" in md and "n_squared = 25 (paper 9)" in md
    assert (out / "report.html").exists()


def test_failures_name_notebook_cell_and_error(tmp_path, capsys):
    d = tmp_path / "nbs"
    d.mkdir()
    make_notebook(d / "01_fail.ipynb", 'profile: str = "default"', ["x = 1", "1 / 0"])
    make_notebook(d / "02_exit.ipynb", 'profile: str = "default"', ["import sys\nsys.exit(0)", "print('never')"])
    make_notebook(d / "03_nometric.ipynb", 'profile: str = "default"', ["pass"], metrics=["declared"])
    out = tmp_path / "out"
    rc = cli.main(["reproduce", "--profile", "smoke", "--out", str(out), "--notebooks", str(d)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "01_fail: cell 3 (`1 / 0`): ZeroDivisionError" in err
    assert "02_exit" in err and "IncompleteRun" in err
    assert "03_nometric" in err and "declared" in err
    assert "failed" in (out / "report.md").read_text()


def test_resume_after_sigkill_does_not_redo_finished_notebooks(tmp_path):
    d = tmp_path / "nbs"
    d.mkdir()
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    body = ("import pathlib, time\n"
            f"pathlib.Path({str(log)!r}).open('a').write(NAME + '\\n')\n"
            f"while NAME == 'second' and pathlib.Path({str(gate)!r}).exists(): time.sleep(0.2)\n")
    make_notebook(d / "00_first.ipynb", 'profile: str = "default"', [body.replace("NAME", "'first'")])
    make_notebook(d / "01_second.ipynb", 'profile: str = "default"', [body.replace("NAME", "'second'")])
    out = tmp_path / "out"
    args = XNN + ["reproduce", "--profile", "smoke", "--out", str(out), "--notebooks", str(d), "--resume"]
    env = dict(os.environ, XNN_QUIET="1")
    gate.touch()  # the second notebook waits at the gate, so the kill lands mid-notebook
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "00_first.run.json").exists():
        time.sleep(0.2)
    assert (out / "00_first.run.json").exists(), "first notebook did not finish"
    while time.time() < deadline and "second" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.2)
    assert "second" in log.read_text(), "second notebook did not start"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: runner and kernel
    proc.wait()
    assert not (out / "01_second.ipynb").exists()  # a half-run notebook never looks complete
    assert not (out / "01_second.run.json").exists()
    gate.unlink()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "00_first: done earlier" in done.stdout
    assert log.read_text().split() == ["first", "second", "second"]  # first ran once
    assert json.loads((out / "01_second.run.json").read_text())["status"] == "ok"
    # inputs changed (a parameter) -> re-run
    again = subprocess.run(args + ["--only", "00"], env=env, capture_output=True, text=True, timeout=180)
    assert "skipped" in again.stdout and log.read_text().split().count("first") == 1


def test_list_shows_parameters(nbdir, capsys):
    assert cli.main(["list", "--notebooks", str(nbdir)]) == 0
    out = capsys.readouterr().out
    assert "00_ok" in out and "n: int = 3" in out and "# a count" in out and "smoke 5 s" in out
