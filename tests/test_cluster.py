"""Sweeps and cluster runs (issue 21): SPEC parsing, grids, job scripts, and real ``LocalCluster`` runs
with a killed worker and a killed client."""
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from nbfactory import make_notebook
from xnn_support.core import cache as xcache
from xnn_support.run import cluster as C
from xnn_support.run import sweep as S
from xnn_support.run.catalog import ParameterError, find_notebook

ROOT = Path(__file__).resolve().parents[1]
XNN = [sys.executable, "-m", "xnn_support.run.cli"]
PARAMS = 'profile: str = "default"  # smoke|default|paper\nseed: int = 0  # seed\nx: int = 1  # a number'


def _toy(d: Path, body: str = "") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    src = ("from xnn_support import record\nimport os, pathlib, time\n" + body +
           "record('toy/m', x * 2 + seed)\n")
    return make_notebook(d / "00_toy.ipynb", PARAMS, [src], metrics=["toy/m"])


def test_parse_cluster_specs_and_errors():
    assert C.parse_cluster("local:2") == C.ClusterSpec("local", workers=2)
    assert C.parse_cluster("local").workers == (os.cpu_count() or 1)
    assert C.parse_cluster("tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"
    s = C.parse_cluster("slurm:cores=4,memory=16GB,jobs=3,queue=gpu,resources=gpu=1")
    assert (s.kind, s.workers, s.options["resources"], s.options["queue"]) == ("slurm", 3, "gpu=1", "gpu")
    for bad, msg in [("local:0", "integer >= 1"), ("local:two", "integer >= 1"), ("", "local:N"),
                     ("k8s:x", "unknown kind"), ("slurm:cores", "key=value"), ("slurm:jobs=0", "jobs")]:
        with pytest.raises(ParameterError, match=msg):
            C.parse_cluster(bad)
    assert C.parse_resources("gpu=1,mem=2e9") == {"gpu": 1.0, "mem": 2e9} and C.parse_resources(None) == {}
    for bad in ("gpu", "gpu=x", "gpu=0", "=1"):
        with pytest.raises(ParameterError, match="--resources"):
            C.parse_resources(bad)


def test_grid_is_the_cartesian_product_with_typed_values(tmp_path):
    info = find_notebook("00", _toy(tmp_path / "nbs").parent)
    grid = S.parse_grid([("seed", "0,1"), ("x", "3,4,5")])
    pts = S.grid_points(info, grid, {"profile": "smoke"})
    assert len(pts) == 6 and pts[0] == {"profile": "smoke", "seed": 0, "x": 3} and pts[-1]["x"] == 5
    assert isinstance(pts[1]["x"], int)
    assert S.point_label(pts[0], list(grid)) == "seed-0_x-3"
    assert S.point_label({"a": "p/q r"}, ["a"]) == "a-p~q~r"
    with pytest.raises(ParameterError, match="no parameter"):
        S.grid_points(info, {"steps": ["1"]}, {})
    with pytest.raises(ParameterError, match="without blanks"):
        S.parse_grid([("seed", "0,,1")])
    with pytest.raises(ParameterError, match="given twice"):
        S.parse_grid([("seed", "0"), ("seed", "1")])
    with pytest.raises(ParameterError, match="at least one"):
        S.parse_grid([])


def test_slurm_job_script_is_built_without_submitting():
    script = C.job_script("slurm:cores=4,memory=16GB,queue=gpu,walltime=01:00:00,resources=gpu=1,jobs=2")
    assert "#SBATCH" in script and "-p gpu" in script and "01:00:00" in script
    assert "--resources gpu=1" in script and sys.executable in script
    assert "#PBS" in C.job_script("pbs:cores=2,memory=8GB")
    with pytest.raises(ParameterError, match="batch-queue"):
        C.job_script("local:2")


def test_cluster_only_options_are_refused_without_a_cluster(tmp_path, capsys):
    from xnn_support.run import cli
    d = _toy(tmp_path / "nbs").parent
    assert cli.main(["sweep", "00", "--notebooks", str(d), "-p", "x", "1", "--resources", "gpu=1",
                     "--out", str(tmp_path / "o")]) == 2
    assert "only apply with --cluster" in capsys.readouterr().err


def _hold(path, hold_s, q):
    with xcache.key_lock("k" * 64):
        q.put(("in", time.time()))
        time.sleep(hold_s)
        q.put(("out", time.time()))


def test_key_lock_excludes_other_processes_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path / "cache"))
    q = mp.get_context("fork").Queue()
    ps = [mp.get_context("fork").Process(target=_hold, args=(None, 0.5, q)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(30)
    ev = sorted([q.get(timeout=5) for _ in range(4)], key=lambda e: e[1])
    assert [e[0] for e in ev] == ["in", "out", "in", "out"], ev  # never two holders at once
    assert list((tmp_path / "cache").glob(".*.lock")) == []


def _sweep_cli(args, **kw):
    return subprocess.run(XNN + ["sweep"] + args, capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, XNN_QUIET="1"), **kw)


@pytest.mark.slow
def test_tour_2x2_sweep_on_a_two_worker_local_cluster(tmp_path):
    out = tmp_path / "sweep"
    r = _sweep_cli(["00", "-p", "seed", "0,1", "-p", "n_images", "200,300", "--profile", "smoke",
                    "--cluster", "local:2", "--out", str(out)], timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "dashboard http" in r.stdout and r.stdout.count(": ok in ") == 4
    workers = {line.rsplit(" on ", 1)[1] for line in r.stdout.splitlines() if ": ok in " in line}
    assert len(workers) == 2, r.stdout  # both workers did work
    df = pd.read_csv(out / "sweep.csv")
    assert len(df) == 4 and set(df["status"]) == {"ok"} and set(df["n_images"]) == {200, 300}
    acc = "model/vgg_small_creatures_val_acc"
    assert df[acc].between(0, 1).all()
    report = (out / "report.md").read_text()
    assert "4/4 grid points completed" in report and f"## {acc} against n_images" in report
    assert list(out.glob("sweep_*__n_images.png"))
    for folder in df["folder"]:  # each point is a complete run of its own, with the runner's marker
        m = json.loads((out / folder / "00_tour.run.json").read_text())
        assert m["status"] == "ok" and m["params"]["profile"] == "smoke"


@pytest.mark.slow
def test_a_worker_killed_mid_notebook_is_rerun_elsewhere(tmp_path):
    """The notebook writes its worker's pid and waits; the test kills that worker with SIGKILL; the
    scheduler runs the notebook again on the other worker and the grid completes."""
    pidfile, released = tmp_path / "worker.pid", tmp_path / "released"
    body = (f"if x == 2 and not pathlib.Path({str(released)!r}).exists():\n"
            f"    pathlib.Path({str(pidfile)!r}).write_text(str(os.getppid()))\n"
            f"    while not pathlib.Path({str(released)!r}).exists(): time.sleep(0.2)\n")
    d = _toy(tmp_path / "nbs", body).parent
    out = tmp_path / "out"
    proc = subprocess.Popen(XNN + ["sweep", "00", "--notebooks", str(d), "-p", "x", "1,2", "--cluster", "local:2",
                                   "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, XNN_QUIET="1"), start_new_session=True)
    try:
        deadline = time.time() + 300
        while not pidfile.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert pidfile.exists(), "the waiting notebook never started"
        os.kill(int(pidfile.read_text()), signal.SIGKILL)  # the worker process running the notebook
        released.touch()  # the re-run does not wait
        stdout, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stdout[-3000:]
    assert "x-2: re-running (worker" in stdout, stdout
    df = pd.read_csv(out / "sweep.csv")
    assert list(df["status"]) == ["ok", "ok"] and list(df["toy/m"]) == [2, 4]


@pytest.mark.slow
def test_a_killed_client_resumes_without_recomputing_finished_points(tmp_path):
    runs, gate = tmp_path / "runs.log", tmp_path / "gate"
    body = (f"open({str(runs)!r}, 'a').write(f'{{seed}}-{{x}}\\n')\n"
            f"while x == 2 and pathlib.Path({str(gate)!r}).exists(): time.sleep(0.2)\n")
    d = _toy(tmp_path / "nbs", body).parent
    out = tmp_path / "out"
    args = XNN + ["sweep", "00", "--notebooks", str(d), "-p", "seed", "0,1", "-p", "x", "1,2", "--cluster",
                  "local:2", "--out", str(out), "--resume"]
    gate.touch()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, XNN_QUIET="1"), start_new_session=True)
    done = [out / f"seed-{s}_x-1" / "00_toy.run.json" for s in (0, 1)]
    deadline = time.time() + 300
    while not all(p.exists() for p in done) and time.time() < deadline:
        time.sleep(0.2)
    assert all(p.exists() for p in done), "the x=1 points did not finish"
    os.killpg(proc.pid, signal.SIGKILL)  # client, scheduler, workers and kernels
    proc.wait()
    before = {p: p.stat().st_mtime_ns for p in done}
    assert not (out / "seed-0_x-2" / "00_toy.run.json").exists()
    gate.unlink()
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, XNN_QUIET="1"),
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("skipped (--resume)") == 2, r.stdout
    assert {p: p.stat().st_mtime_ns for p in done} == before  # finished points untouched
    lines = runs.read_text().split()
    assert lines.count("0-1") == 1 and lines.count("1-1") == 1  # never recomputed
    df = pd.read_csv(out / "sweep.csv")
    assert set(df["status"]) == {"ok"} and sorted(df["toy/m"]) == [2, 3, 4, 5]


@pytest.mark.slow
def test_reproduce_on_cluster_writes_the_same_layout_as_reproduce(tmp_path):
    d = _toy(tmp_path / "nbs").parent
    make_notebook(d / "01_other.ipynb", 'profile: str = "default"  # p', ["from xnn_support import record\n"
                                                                        "record('o/v', 1.5)"], metrics=["o/v"])
    out = tmp_path / "out"
    r = subprocess.run(XNN + ["reproduce", "--profile", "smoke", "--notebooks", str(d), "--cluster", "local:2",
                              "--out", str(out), "--profile-time"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, XNN_QUIET="1"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("00_toy", "01_other"):
        assert json.loads((out / f"{name}.run.json").read_text())["status"] == "ok"
    assert "2/2 notebooks completed" in (out / "report.md").read_text()
    prof = pd.read_csv(out / "time_profile.csv")  # --profile-time: every executed cell, timed
    assert set(prof["notebook"]) == {"00_toy", "01_other"} and (prof["seconds"] >= 0).all()
    assert "| all |" in (out / "time_profile.md").read_text()
    r = subprocess.run(XNN + ["reproduce", "--profile", "smoke", "--notebooks", str(d), "--cluster", "local:2",
                              "--out", str(out), "--resources", "gpu=1"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, XNN_QUIET="1"))
    assert r.returncode == 0 and "for no notebook" in r.stdout  # smoke needs no GPU: nothing is routed
    shared = tmp_path / "shared"  # --in-place: the workers write into OUT themselves
    r = subprocess.run(XNN + ["reproduce", "--profile", "smoke", "--notebooks", str(d), "--cluster", "local:2",
                              "--out", str(shared), "--in-place"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, XNN_QUIET="1"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads((shared / "00_toy.run.json").read_text())["status"] == "ok"
    assert "2/2 notebooks completed" in (shared / "report.md").read_text()


@pytest.mark.slow
def test_a_resource_no_worker_offers_is_refused_and_one_offered_is_used(tmp_path):
    d = _toy(tmp_path / "nbs").parent
    base = ["00", "--notebooks", str(d), "-p", "x", "1", "--cluster", "local:1", "--resources", "gpu=1"]
    r = _sweep_cli(base + ["--out", str(tmp_path / "a")], timeout=300)
    assert r.returncode == 2 and "no worker of this cluster offers it" in r.stderr, r.stdout + r.stderr
    r = _sweep_cli(base + ["--out", str(tmp_path / "b"), "--worker-resources", "gpu=1"], timeout=300)
    assert r.returncode == 0 and ": ok in " in r.stdout, r.stdout + r.stderr


def _fit_same_key(cache_root, q):
    os.environ["XNN_CACHE"] = cache_root
    import torch
    from xnn_support.core.train import fit
    from xnn_support.data import creatures
    torch.set_num_threads(1)
    ds = creatures(64, 32, seed=0)
    r = fit("vgg_small", ds, None, model_config={"width": 0.25}, epochs=2, batch_size=16, progress=False, seed=0)
    q.put((r.from_cache, r.key, sum(float(p.sum()) for p in r.model.state_dict().values())))


def test_two_processes_training_one_key_train_it_once(tmp_path):
    """Two workers asking the cache for the same model at once: one trains, the other waits and loads
    the entry (same weights); the cache holds one sound entry and no lock file afterwards."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=_fit_same_key, args=(str(tmp_path / "cache"), q)) for _ in range(2)]
    for p in ps:
        p.start()
    got = [q.get(timeout=300) for _ in ps]
    for p in ps:
        p.join(60)
    assert sorted(g[0] for g in got) == [False, True], got  # trained once, loaded once
    assert got[0][1] == got[1][1] and got[0][2] == got[1][2]
    assert len(list((tmp_path / "cache" / "train").glob("*.pt"))) == 1
    assert list((tmp_path / "cache").glob(".*.lock")) == []


def test_time_profile_categories():
    from xnn_support.run.timing import categorise
    assert categorise("import torch\nSIZES = {}") == "setup"
    assert categorise("r = fit('vgg_small', tr)\nviz.training_curves(r)") == "training (guessed)"
    assert categorise("r = fit('vgg_small', tr)\nviz.training_curves(r)", measured=True) == "figures"
    assert categorise("viz.image_grid(ds)") == "figures"
    assert categorise("rows = X.run_study(cfg)") == "method"
    assert categorise("widgets.tree_walker(t, x)") == "widgets"


def test_expected_seconds_reads_the_declared_run_time():
    from xnn_support.run.catalog import NotebookInfo, expected_seconds
    info = NotebookInfo("02", "02_x", Path("x"), runtime={
        "default": "~55 min first run (grid + sweep) + ~15-20 min real network, ~5-6 min cached",
        "smoke": "~40 s", "paper": "GPU"})
    assert expected_seconds(info, "default") == (55 + 20) * 60
    assert expected_seconds(info, "smoke") == 40 and expected_seconds(info, "paper") is None


def test_jobs_runs_notebooks_side_by_side_longest_first(tmp_path):
    """--jobs 2: the notebooks as tasks of a two-worker local cluster, the longest expected submitted first
    (it starts in the first pair although it comes last in the catalog); bad --jobs are usage errors."""
    import nbformat
    from xnn_support.run import cli
    d = tmp_path / "nbs"
    d.mkdir()
    starts = tmp_path / "starts.txt"
    body = f"pathlib.Path({str(starts)!r}).open('a').write(NAME + '\\n')\ntime.sleep(2)\n"
    for k, rt in (("00", "5 s"), ("01", "5 s"), ("02", "~3 min first run, ~5 s cached")):
        p = make_notebook(d / f"{k}_n{k}.ipynb", PARAMS, [f"NAME = {k!r}\nfrom xnn_support import record\n"
                                                          f"import pathlib, time\n{body}record('toy/m', x)"],
                          metrics=["toy/m"])
        nb = nbformat.read(str(p), as_version=4)
        nb.metadata["xnn"]["runtime"] = {"smoke": rt}
        nbformat.write(nb, str(p))
    out = tmp_path / "out"
    r = subprocess.run(XNN + ["reproduce", "--profile", "smoke", "--notebooks", str(d), "--jobs", "2",
                              "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, XNN_QUIET="1"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "3/3 notebooks completed" in (out / "report.md").read_text()
    assert "02" in starts.read_text().split()[:2]
    for bad, msg in ((["--jobs", "0"], "--jobs must be"), (["--jobs", "2", "--cluster", "local:2"], "drop one"),
                     (["--jobs", "2", "--widgets"], "--widgets and --html")):
        assert cli.main(["reproduce", "--notebooks", str(d), "--out", str(tmp_path / "o2")] + bad) == 2


def _worker_monitor_config():
    import dask.config as c
    return (c.get("distributed.worker.profile.enabled"), c.get("distributed.admin.system-monitor.gil.enabled"),
            c.get("distributed.admin.tick.interval"))


def test_local_workers_run_with_dasks_monitors_quiet():
    """The profiler, GIL monitor and 20 ms tick cost ~12% of a core next to two notebooks: the workers of a
    local cluster get :data:`QUIET_MONITORS`, and the caller's own dask config is left as it was."""
    import dask.config
    before = dask.config.get("distributed.worker.profile.enabled")
    with C.connect(C.ClusterSpec("local", workers=1), log=lambda m: None) as client:
        got = list(client.run(_worker_monitor_config).values())
    assert got == [(False, False, "1000ms")]
    assert dask.config.get("distributed.worker.profile.enabled") == before
