"""Hostile and careless inputs (issue 15): every one is refused with the exact error type and a message
that names the argument and the fix, or handled correctly (a damaged cache entry or run output is
recomputed, never used). One parametrised test per entry-point family; tiny models and tensors, so the
module runs in well under a minute on a shared CPU."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

from nbfactory import make_notebook
from archives import make_tar
from data_scripts import common, fetch, registry
from xnn_support.core import cache as xcache
from xnn_support.core import validate as V
from xnn_support.core.capture import Capture, CaptureError, capture
from xnn_support.core.train import fit
from xnn_support.data.types import ImageSet
from xnn_support.papers.discarding.method import pixel_information
from xnn_support.papers.discarding.text import word_information
from xnn_support.papers.graph.method import mine
from xnn_support.papers.icnn.layer import InterpretableConv2d
from xnn_support.papers.icnn.method import FilterLoss, filter_loss, make_interpretable
from xnn_support.papers.icnn.metrics import location_instability, peak_positions
from xnn_support.papers.icnn.templates import template_kernel
from xnn_support.papers.pointcloud import method as pc
from xnn_support.papers.pointcloud.experiments import _read_result
from xnn_support.run import cli
from xnn_support.run.catalog import ParameterError, catalog, find_notebook
from xnn_support.run.guard import RunLocked, out_folder, out_lock
from xnn_support.run.integrity import file_digest, marker_digest, output_problem, paths
from xnn_support.run.report import collect, write_report
from xnn_support.run.runner import inputs_hash, reproduce
from xnn_support.sigma import GridUnits, ModuleFeatures, optimize_sigma

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XNN_QUIET", "1")


def _raises(fn, exc, pattern):
    with pytest.raises(exc, match=pattern) as e:
        fn()
    assert type(e.value) is exc, f"expected exactly {exc.__name__}, got {type(e.value).__name__}"


# ============================================================================ CLI and run arguments
def _nbdir(tmp: Path) -> Path:
    d = tmp / "nbs"
    d.mkdir(exist_ok=True)
    make_notebook(d / "00_ok.ipynb", 'profile: str = "default"\nseed: int = 0\nn: int = 3',
                  ["from xnn_support import record\nrecord('n_squared', n * n)"], metrics=["n_squared"])
    return d


CLI = [  # (id, argv with {nbs} {tmp}, the error line on stderr)
    ("reproduce-typo-p", ["reproduce", "-p", "seeed", "3"], r"parameter\(s\) 'seeed'; declared: n, profile, seed"),
    ("reproduce-only-commas", ["reproduce", "--only", ",,,"], r"--only names no notebook .*pass ids or names"),
    ("reproduce-only-empty", ["reproduce", "--only", ""], r"--only names no notebook"),
    ("reproduce-only-unknown", ["reproduce", "--only", "07"], r"no notebook\(s\) \['07'\]; available"),
    ("reproduce-negative-seed", ["reproduce", "--seed", "-1"], r"--seed must be an integer >= 0, got -1; pass"),
    ("reproduce-out-file", ["reproduce", "--out", "{tmp}/afile"],
     r"--out .*afile is a file, not a folder; pass a folder"),
    ("run-out-file", ["run", "00", "--out", "{tmp}/afile"], r"--out .*afile is a file, not a folder; pass a folder"),
    ("run-unknown-p", ["run", "00", "-p", "nope", "1"], r"has no parameter\(s\) 'nope'. Valid parameters"),
    ("run-bad-type", ["run", "00", "-p", "n", "four"], r"parameter 'n' expects int, got 'four'; pass .* -p n 3"),
    ("list-missing-folder", ["list", "--notebooks", "/nonexistent/xnn"], r"notebooks folder /nonexistent/xnn does not "
                                                                          r"exist; pass --notebooks DIR"),
    ("list-folder-is-file", ["list", "--notebooks", "{tmp}/afile"],
     r"notebooks folder .*afile is a file; pass --notebooks"),
    ("run-unknown-notebook", ["run", "42"], r"no notebook '42'; available: 00_ok"),
]


@pytest.mark.parametrize("case", CLI, ids=[c[0] for c in CLI])
def test_cli(case, tmp_path, capsys):
    _, argv, pattern = case
    nbs = _nbdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    argv = [a.format(nbs=nbs, tmp=tmp_path) for a in argv]
    if "--notebooks" not in argv:
        argv += ["--notebooks", str(nbs)]
    if "--out" not in argv and argv[0] != "list":
        argv += ["--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert not (tmp_path / "out" / "00_ok.run.json").exists()  # nothing ran


API = [  # the same refusals at the API the CLI calls
    ("reproduce-typo", lambda d, t: reproduce(params={"seeed": 3}, notebooks_dir=d, out_dir=t / "o"), ParameterError,
     r"no notebook of this run has parameter\(s\) 'seeed'; declared: .*see `xnn list`"),
    ("reproduce-only", lambda d, t: reproduce(only=["", " "], notebooks_dir=d, out_dir=t / "o"), ParameterError,
     r"--only names no notebook"),
    ("reproduce-profile", lambda d, t: reproduce(profile="huge", notebooks_dir=d, out_dir=t / "o"), ParameterError,
     r"profile must be one of"),
    ("catalog-missing", lambda d, t: catalog(t / "none"), FileNotFoundError, r"does not exist; pass --notebooks DIR"),
    ("out-folder-file", lambda d, t: out_folder(t / "afile"), NotADirectoryError,
     r"is a file, not a folder; pass a folder"),
    ("damaged-notebook", lambda d, t: catalog(_damaged_nb(d)), ParameterError,
     r"does not parse as a notebook .*fix it or move it out"),
]


def _damaged_nb(d: Path) -> Path:
    (d / "01_bad.ipynb").write_text('{"cells": [')
    return d


@pytest.mark.parametrize("case", API, ids=[c[0] for c in API])
def test_run_api(case, tmp_path):
    _, fn, exc, pattern = case
    d = _nbdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    _raises(lambda: fn(d, tmp_path), exc, pattern)


# ============================================================================ resume: outputs re-validated
def _fake_run(tmp: Path):
    """A finished-looking run of 00_ok in OUT, written as the runner writes it (no kernel)."""
    info = find_notebook("00", _nbdir(tmp))
    params = {"profile": "smoke"}
    out_dir = tmp / "out"
    out_dir.mkdir()
    out, _, ledger, marker, _ = paths(out_dir, info.name)
    nb = nbformat.read(str(info.path), as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.metadata["papermill"] = {"status": "completed"}
    nbformat.write(nb, str(out))
    ledger.write_text(json.dumps({"notebook": info.name, "metrics": [{"name": "n_squared", "value": 9}]}))
    m = {"name": info.name, "status": "ok", "inputs": inputs_hash(info, params), "params": params, "duration": 1.0,
         "output": out.name, "ledger": ledger.name, "error": None,
         "digests": {"output": file_digest(out), "ledger": file_digest(ledger)}}
    marker.write_text(json.dumps(dict(m, digest=marker_digest(m))))
    return info, params, out_dir, out, ledger, marker


def _truncate(p: Path, frac=3):
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // frac])


def _unran_cell(out: Path):
    nb = nbformat.read(str(out), as_version=4)
    nb.cells[-1].metadata["papermill"] = {"status": "pending"}
    nbformat.write(nb, str(out))


def _marker_edit(marker: Path, sign: bool = True, **kw):
    """Edit marker fields; ``sign``: as a consistent writer would (recomputing the marker's digest)."""
    m = json.loads(marker.read_text())
    m.update(kw)
    if sign:
        m["digest"] = marker_digest(m)
    marker.write_text(json.dumps(m))


RESUME = [  # (id, damage(out, ledger, marker), reason)
    ("notebook-truncated", lambda o, l, m: _truncate(o), r"00_ok.ipynb does not parse"),
    ("notebook-missing", lambda o, l, m: o.unlink(), r"00_ok.ipynb is missing"),
    ("cell-not-run", lambda o, l, m: _unran_cell(o), r"1 code cell\(s\) did not run"),
    ("ledger-truncated", lambda o, l, m: _truncate(l, 2), r"00_ok.metrics.json is unreadable"),
    ("ledger-not-a-ledger", lambda o, l, m: l.write_text("[1, 2]"), r"is not a metrics ledger"),
    ("ledger-lacks-metric", lambda o, l, m: l.write_text('{"metrics": []}'), r"lacks declared metric\(s\) n_squared"),
    ("ledger-edited", lambda o, l, m: l.write_text(l.read_text().replace("9", "999")),
     r"metrics.json differs .*sha256"),
    ("marker-list", lambda o, l, m: m.write_text("[1, 2]"), r"no readable run marker"),
    ("marker-truncated", lambda o, l, m: _truncate(m, 2), r"no readable run marker"),
    ("marker-failed", lambda o, l, m: _marker_edit(m, status="failed"), r"has status 'failed'"),
    ("marker-no-digests", lambda o, l, m: _marker_edit(m, digests=None), r"holds no digests"),
    ("inputs-changed", lambda o, l, m: _marker_edit(m, inputs="0" * 64), r"its inputs changed"),
    ("marker-edited", lambda o, l, m: _marker_edit(m, sign=False, duration=0.5), r"00_ok.run.json failed its digest"),
    ("marker-unsigned", lambda o, l, m: _strip_digest(m), r"00_ok.run.json holds no digest"),
]


def _strip_digest(marker: Path):
    m = json.loads(marker.read_text())
    m.pop("digest", None)
    marker.write_text(json.dumps(m))


@pytest.mark.parametrize("case", RESUME, ids=[c[0] for c in RESUME])
def test_resume_revalidates(case, tmp_path):
    _, damage, reason = case
    info, params, out_dir, out, ledger, marker = _fake_run(tmp_path)
    assert output_problem(info, inputs_hash(info, params), out_dir) is None   # sound: would be skipped
    damage(out, ledger, marker)
    problem = output_problem(info, inputs_hash(info, params), out_dir)
    assert problem is not None and re.search(reason, problem), problem
    write_report(out_dir, notebooks_dir=info.path.parent)                     # never a traceback
    assert (out_dir / "report.md").exists()


REPORT = [  # the report flags damaged files with one line instead of crashing
    ("marker-list", lambda o, l, m: m.write_text("[1, 2]"), r"00_ok.run.json is damaged \(not a JSON object"),
    ("marker-truncated", lambda o, l, m: _truncate(m, 2), r"00_ok.run.json is damaged"),
    ("metrics-truncated", lambda o, l, m: _truncate(l, 2), r"00_ok.metrics.json is unreadable .*truncated"),
    ("marker-wrong-types", lambda o, l, m: _marker_edit(m, duration="long", error="boom"),
     r"has field\(s\) of the wrong type: duration, error"),
    ("marker-edited", lambda o, l, m: _marker_edit(m, sign=False, duration=0.5), r"00_ok.run.json failed its digest"),
    ("notebook-edited", lambda o, l, m: _truncate(o), r"00_ok.ipynb differs from the file the run wrote"),
]


@pytest.mark.parametrize("case", REPORT, ids=[c[0] for c in REPORT])
def test_report_flags_damage(case, tmp_path):
    _, damage, line = case
    info, _, out_dir, out, ledger, marker = _fake_run(tmp_path)
    damage(out, ledger, marker)
    rows = collect(out_dir, info.path.parent)
    assert len(rows) == 1 and rows[0]["marker"]["status"] == "damaged"
    assert re.search(line, rows[0]["problem"]), rows[0]["problem"]
    md = write_report(out_dir, notebooks_dir=info.path.parent)["md"].read_text()
    assert "0/1 notebooks completed" in md and "**Damaged**" in md and "rerun it" in md


def test_resume_reruns_a_truncated_notebook_end_to_end(tmp_path):
    """One real run (a tiny notebook): a truncated executed notebook is run again by --resume, and the
    report then links a notebook that parses."""
    d = _nbdir(tmp_path)
    out = tmp_path / "out"
    args = ["reproduce", "--profile", "smoke", "--out", str(out), "--notebooks", str(d), "--resume"]
    assert cli.main(args) == 0
    _truncate(out / "00_ok.ipynb")
    logs = []
    res = reproduce(profile="smoke", out_dir=out, notebooks_dir=d, resume=True, log=logs.append)
    assert res[0].status == "ok" and any("not reusable (00_ok.ipynb does not parse" in s for s in logs), logs
    nbformat.read(str(out / "00_ok.ipynb"), as_version=4)
    assert collect(out, d)[0]["problem"] is None


LOCKS = [
    ("live-lock", "live", RunLocked, r"another xnn run \(pid \d+ .*is writing into .*pass another --out folder"),
    ("out-is-file", "file", NotADirectoryError, r"is a file, not a folder; pass a folder"),
]


@pytest.mark.parametrize("case", LOCKS, ids=[c[0] for c in LOCKS])
def test_out_lock(case, tmp_path):
    _, kind, exc, pattern = case
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("x")
        _raises(lambda: out_lock(out).__enter__(), exc, pattern)
        return
    with out_lock(out):
        _raises(lambda: out_lock(out).__enter__(), exc, pattern)
        code = ("import sys; from xnn_support.run.guard import out_lock, RunLocked\n"
                f"try:\n    out_lock({str(out)!r}).__enter__()\n"
                "except RunLocked as e:\n    print('refused'); sys.exit(3)")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode == 3 and "refused" in r.stdout, r.stderr[-800:]
    (out / ".xnn.lock").write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": "x"}))  # stale: dead owner
    with out_lock(out) as p:
        assert json.loads(p.read_text())["pid"] == os.getpid()


# ============================================================================ cache integrity
def _entry(tmp: Path, **extra):
    p = tmp / "cache" / "train" / "k.pt"
    xcache.save_file(p, "k", {"w": torch.arange(4.0)}, val_acc=0.375, history=[{"epoch": 1, "val_acc": 0.375}],
                     epoch_dir=None, **extra)
    return p


def _edit_entry(p: Path, **kw):
    payload = torch.load(p, weights_only=True)
    payload.update(kw)
    torch.save(payload, p)


def _drop(p: Path, key: str):
    payload = torch.load(p, weights_only=True)
    payload.pop(key)
    torch.save(payload, p)


CACHE = [  # (id, damage(path), error pattern of load_file)
    ("val-acc-flipped", lambda p: _edit_entry(p, val_acc=0.1875), r"failed its digest \(its metadata, e.g. val_acc"),
    ("history-edited", lambda p: _edit_entry(p, history=[{"epoch": 1, "val_acc": 1.0}]), r"failed its digest"),
    ("epoch-dir-edited", lambda p: _edit_entry(p, epoch_dir="../../outside"), r"failed its digest"),
    ("meta-added", lambda p: _edit_entry(p, note="x"), r"failed its digest"),
    ("no-digest", lambda p: _drop(p, "digest"), r"has no digest"),
    ("weights-edited", lambda p: _edit_entry(p, state_dict={"w": torch.ones(4)}), r"failed its checksum"),
    ("truncated", lambda p: _truncate(p, 2), r"is unreadable"),
    ("other-key", lambda p: _edit_entry(p, key="other"), r"holds key other"),
]


@pytest.mark.parametrize("case", CACHE, ids=[c[0] for c in CACHE])
def test_cache_entry_integrity(case, tmp_path):
    _, damage, pattern = case
    p = _entry(tmp_path)
    assert xcache.load_file(p, "k")["val_acc"] == 0.375
    damage(p)
    _raises(lambda: xcache.load_file(p, "k"), xcache.CacheError, pattern)


def _tiny_set():
    g = torch.Generator().manual_seed(0)
    return ImageSet(images=torch.rand(16, 3, 2, 2, generator=g), labels=torch.arange(16) % 2, class_names=["a", "b"])


def _tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 2))


FIT_TAMPER = [  # a tampered cached run is warned about and retrained, never used
    ("val-acc", lambda p: _edit_entry(p, val_acc=0.1875), r"failed its digest.*retraining"),
    ("epoch-dir-outside", lambda p: _resign(p, epoch_dir="../../outside", epoch_files=["epoch_000.pt"]),
     r"epoch_dir '../../outside' is not a plain name inside the cache.*retraining"),
    ("epoch-file-outside", lambda p: _resign(p, epoch_files=["../../../x.pt"]),
     r"epoch file '../../../x.pt' is not a plain name inside the cache.*retraining"),
]


def _resign(p: Path, **kw):
    """A tamperer who also recomputes the digest: the confinement check still refuses the paths."""
    payload = torch.load(p, weights_only=True)
    payload.update(kw)
    payload["digest"] = xcache.meta_digest(payload)
    torch.save(payload, p)


@pytest.mark.parametrize("case", FIT_TAMPER, ids=[c[0] for c in FIT_TAMPER])
def test_fit_never_uses_a_tampered_entry(case):
    _, damage, pattern = case
    ds = _tiny_set()
    kw = dict(epochs=1, batch_size=8, progress=False, checkpoints=True)
    r1 = fit(_tiny_net(), ds, ds, **kw)
    damage(r1.path)
    with pytest.warns(RuntimeWarning, match=pattern):
        r2 = fit(_tiny_net(), ds, ds, **kw)
    assert not r2.from_cache and r2.val_acc == r1.val_acc
    assert fit(_tiny_net(), ds, ds, **kw).from_cache    # the rebuilt entry is sound again


JSON_CACHE = [  # notebook 06's per-metric results cache
    ("all-999", lambda p: p.write_text(p.read_text().replace("0.25", "999")), r"failed its digest"),
    ("old-format", lambda p: p.write_text(json.dumps({"adversarial": 999})), r"is not an xnn-json-v1 file"),
    ("truncated", lambda p: _truncate(p, 2), r"is unreadable"),
    ("other-key", lambda p: p.write_text(p.read_text().replace('"key": "mk"', '"key": "zz"')), r"holds key zz"),
]


@pytest.mark.parametrize("case", JSON_CACHE, ids=[c[0] for c in JSON_CACHE])
def test_result_cache_integrity(case, tmp_path):
    _, damage, pattern = case
    p = tmp_path / "results" / "mk.json"
    xcache.save_json(p, "mk", {"adversarial": 0.25, "test_acc": 1.0, "saturated": float("nan")})
    assert _read_result(p, "mk")["adversarial"] == 0.25
    damage(p)
    _raises(lambda: xcache.load_json(p, "mk"), xcache.CacheError, pattern)
    with pytest.warns(RuntimeWarning, match="result cache: .*measuring again"):
        assert _read_result(p, "mk") is None          # the study measures it again


CONFINED = [("dotdot", "../../outside"), ("abs", "/etc"), ("sep", "a/b"), ("dot", ".."), ("empty", ""), ("none", None)]


@pytest.mark.parametrize("case", CONFINED, ids=[c[0] for c in CONFINED])
def test_cache_paths_confined(case, tmp_path):
    _raises(lambda: xcache.confined(tmp_path, case[1], "epoch_dir"), xcache.CacheError,
            r"epoch_dir .* is not a plain name inside the cache \(tampered metadata\?\)")


# ============================================================================ capture
class Reuse(nn.Module):
    """Calls its ReLU twice in one forward."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(self.relu(x))).mean((2, 3))


def _stop_run(model, layer, **kw):
    with capture(model, [layer], stop=True, **kw) as cap:
        cap.forward(torch.rand(2, 3, 4, 4))


CAPTURE = [
    ("stop-repeat", lambda: _stop_run(Reuse(), "relu"), CaptureError,
     r"layer 'relu' \(ReLU\) was called 2 times in one forward .*capture a distinct submodule, or pass repeats="),
    ("plain-repeat", lambda: _plain_repeat(), CaptureError,
     r"called 2 times in one forward"),
    ("bad-name", lambda: _stop_run(Reuse(), "rleu"), CaptureError,
     r"no layer named 'rleu' in Reuse; closest valid names: 'relu'"),
    ("no-layers", lambda: Capture(Reuse(), []), CaptureError,
     r"no layers requested: pass at least one dotted layer name"),
    ("bad-repeats", lambda: Capture(Reuse(), ["relu"], repeats="sometimes"), ValueError,
     r"repeats must be one of 'error', 'warn', 'all', got 'sometimes'; pass one of"),
    ("bad-clone", lambda: Capture(Reuse(), ["conv"], clone="yes"), ValueError,
     r"clone must be one of True, False, 'auto', got 'yes'; pass one of"),
    ("run-batch-0", lambda: _run(batch_size=0), ValueError,
     r"batch_size must be an integer >= 1, got 0; pass batch_size=None for the default"),
    ("run-empty", lambda: _run(x=torch.rand(0, 3, 4, 4)), ValueError,
     r"empty batch: x has 0 samples; pass at least one"),
]


def _plain_repeat():
    m = Reuse()
    with capture(m, ["relu"]):
        m(torch.rand(1, 3, 4, 4))


def _run(batch_size=None, x=None):
    m = Reuse()
    with capture(m, ["conv"]) as cap:
        cap.run(torch.rand(2, 3, 4, 4) if x is None else x, batch_size=batch_size)


@pytest.mark.parametrize("case", CAPTURE, ids=[c[0] for c in CAPTURE])
def test_capture(case):
    _, fn, exc, pattern = case
    _raises(fn, exc, pattern)


# ============================================================================ sigma engine
def _sigma(model=None, x=None, layer="conv", **kw):
    model = model if model is not None else Reuse()
    x = torch.rand(1, 3, 4, 4) if x is None else x
    return optimize_sigma(x, GridUnits(2), ModuleFeatures(model, [layer]), config="clean",
                          **dict(dict(steps=2, samples=2), **kw))


def _meta_model():
    with torch.device("meta"):
        return Reuse()


SIGMA = [
    ("repeat-layer", lambda: _sigma(layer="relu"), CaptureError,
     r"layer 'relu' \(ReLU\) was called 2 times.*pass repeats="),
    ("pixel-info-repeat", lambda: pixel_information(Reuse(), torch.rand(1, 3, 4, 4), ["relu"], grid=2, steps=2),
     CaptureError, r"called 2 times in one forward"),
    ("float64-input", lambda: _sigma(x=torch.rand(1, 3, 4, 4, dtype=torch.float64)), ValueError,
     r"x must be torch.float32 like the model's weights, got torch.float64; pass x.to\(torch.float32\)"),
    ("float16-input", lambda: _sigma(x=torch.rand(1, 3, 4, 4).half()), ValueError, r"got torch.float16; pass x.to"),
    ("meta-model", lambda: _sigma(model=_meta_model()), ValueError,
     r"model must be a model with real weights, got weights on the meta device .*model.to_empty"),
    ("seed-negative", lambda: _sigma(seed=-1), ValueError, r"seed must be an integer >= 0, got -1; pass"),
    ("batch-size-0", lambda: _sigma(batch_size=0), ValueError, r"batch_size must be an integer >= 1, got 0; pass"),
    ("steps-0", lambda: _sigma(steps=0), ValueError, r"steps must be a positive integer, got 0; pass a valid value"),
    ("nan-input", lambda: _sigma(x=torch.full((1, 3, 4, 4), float("nan"))), ValueError,
     r"x contains NaN or inf \(1 of 1 inputs affected\); replace or drop them"),
    ("grid-0", lambda: GridUnits(0), ValueError, r"grid must be a positive integer, got 0; pass e.g. grid=16"),
]


@pytest.mark.parametrize("case", SIGMA, ids=[c[0] for c in SIGMA])
def test_sigma(case):
    _, fn, exc, pattern = case
    _raises(fn, exc, pattern)


# ============================================================================ point clouds
class Cloud(nn.Module):
    feature_layer = "head"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.mlp, self.head, self.out = nn.Linear(3, 8), nn.Sequential(nn.Linear(8, 8), nn.ReLU()), nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.head(self.mlp(x).max(1).values))


X3 = torch.rand(2, 16, 3, generator=torch.Generator().manual_seed(0))
Y3 = torch.tensor([0, 1])


POINTS = [
    ("adv-steps-negative", lambda: pc.adversarial_robustness(Cloud(), X3, Y3, steps=-3), ValueError,
     r"steps must be an integer >= 1, got -3; pass steps=None for the default"),
    ("attack-steps-0", lambda: pc.attack(Cloud(), X3, Y3, steps=0), ValueError,
     r"steps must be an integer >= 1, got 0"),
    ("attack-lr-negative", lambda: pc.attack(Cloud(), X3, Y3, lr=-1.0), ValueError,
     r"lr must be a finite number > 0, got -1.0; pass lr=None for the default"),
    ("attack-lr-0", lambda: pc.attack(Cloud(), X3, Y3, lr=0), ValueError, r"lr must be a finite number > 0, got 0"),
    ("attack-lam-negative", lambda: pc.attack(Cloud(), X3, Y3, lam=-1), ValueError,
     r"lam must be a finite number >= 0"),
    ("attack-targets-0", lambda: pc.attack(Cloud(), X3, Y3, targets=0), ValueError,
     r"targets must be an integer >= 1, got 0; pass targets=None for every other class"),
    ("labels-outside", lambda: pc.attack(Cloud(), X3, torch.tensor([0, 7])), ValueError,
     r"labels must be class indices in \[0, 3\) \(the model's 3 outputs\), got values in \[0, 7\]; pass labels"),
    ("labels-float", lambda: pc.attack(Cloud(), X3, torch.tensor([0.0, 1.0])), ValueError,
     r"labels must be integer class indices, got torch.float32; pass labels as an integer tensor"),
    ("labels-count", lambda: pc.attack(Cloud(), X3, torch.tensor([0])), ValueError,
     r"labels must be one label per input \(2\), got 1 labels; pass exactly 2 labels"),
    ("attack-batch-0", lambda: pc.attack(Cloud(), X3, Y3, batch_size=0), ValueError,
     r"batch_size must be an integer >= 1"),
    ("attack-engine", lambda: pc.attack(Cloud(), X3, Y3, engine="fast"), ValueError,
     r"engine must be one of 'batched', 'loop'"),
    ("sigma-steps-0", lambda: pc.point_sigma(Cloud(), X3, steps=0), ValueError,
     r"steps must be an integer >= 1, got 0; pass steps=None for the default"),
    ("sigma-samples-0", lambda: pc.point_sigma(Cloud(), X3, samples=0), ValueError,
     r"samples must be an integer >= 1, got 0"),
    ("sigma-f-negative", lambda: pc.point_sigma(Cloud(), X3, sigma_f=-1.0), ValueError,
     r"sigma_f must be a finite number > 0, got -1.0; pass sigma_f=None to measure it"),
    ("clouds-nan", lambda: pc.point_sigma(Cloud(), X3 * float("nan")), ValueError,
     r"clouds must be finite, got 96 NaN or inf value\(s\) of 96; replace or drop them"),
    ("clouds-shape", lambda: pc.point_sigma(Cloud(), X3[..., :2]), ValueError,
     r"clouds must be a float tensor \(B, N, 3\) with N >= 1, got shape \(2, 16, 2\); pass clouds of shape"),
    ("clouds-empty", lambda: pc.point_sigma(Cloud(), X3[:0]), ValueError,
     r"clouds must be non-empty, got shape \(0, 16, 3\)"),
    ("clouds-float64", lambda: pc.point_sigma(Cloud(), X3.double()), ValueError,
     r"clouds must be torch.float32 like the model's weights, got torch.float64; pass clouds.to\(torch.float32\)"),
    ("rotations-1", lambda: pc.rotation_nonrobustness(Cloud(), X3, n_rotations=1), ValueError,
     r"n_rotations must be an integer >= 2, got 1"),
    ("k-0", lambda: pc.inconsistency_from_sigma(torch.ones(2, 16), X3, k=0), ValueError,
     r"k must be an integer >= 1, got 0"),
    ("feature-scale-passes", lambda: pc.feature_scale(Cloud(), X3, passes=0), ValueError,
     r"passes must be an integer >= 1"),
    ("rotation-table-n", lambda: pc.rotation_table(0, 3), ValueError, r"n must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize("case", POINTS, ids=[c[0] for c in POINTS])
def test_pointcloud(case):
    _, fn, exc, pattern = case
    _raises(fn, exc, pattern)


# ============================================================================ interpretable CNNs
def _vgg():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(features=nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
                                     classifier=nn.Sequential(nn.Flatten(), nn.Linear(4 * 16, 8), nn.ReLU(),
                                                              nn.Linear(8, 2))))


def _filter_loss_epoch_0():
    m = make_interpretable(_vgg(), "features.1")
    return filter_loss(m, epoch=0)


ICNN = [
    ("empty-name", lambda: make_interpretable(_vgg(), ""), ValueError,
     r"layers must be a non-empty name, got ''; pass the dotted name of a conv layer .*the root model itself"),
    ("blank-name", lambda: make_interpretable(_vgg(), "  "), ValueError, r"layers must be a non-empty name"),
    ("empty-list", lambda: make_interpretable(_vgg(), []), ValueError,
     r"layers must be a layer name or a non-empty list"),
    ("linear", lambda: make_interpretable(_vgg(), "classifier.1"), ValueError,
     r"layers must be layers whose output is a conv feature map .*'classifier.1' \(Linear\).*name a conv layer"),
    ("relu-after-linear", lambda: make_interpretable(_vgg(), "classifier.2"), ValueError,
     r"'classifier.2' \(ReLU\) after flat features"),
    ("classifier-block", lambda: make_interpretable(_vgg(), "classifier"), ValueError, r"'classifier' \(Sequential\)"),
    ("duplicate", lambda: make_interpretable(_vgg(), ["features.1", "features.1"]), ValueError,
     r"layers must be distinct, non-nested layer names.*name each layer once"),
    ("nested", lambda: make_interpretable(_vgg(), ["features", "features.1"]), ValueError, r"distinct, non-nested"),
    ("mode", lambda: make_interpretable(_vgg(), "features.1", mode="best"), ValueError, r"mode must be one of 'paper'"),
    ("channels-0", lambda: make_interpretable(_vgg(), "features.1", channels=0), ValueError,
     r"channels must be an integer >= 1"),
    ("unknown", lambda: make_interpretable(_vgg(), "features.9"), CaptureError, r"no layer named 'features.9'"),
    ("beta-negative", lambda: InterpretableConv2d((2, 2), beta=-1.0), ValueError,
     r"beta must be a finite number > 0, got -1.0; pass the template slope beta > 0"),
    ("template-beta", lambda: template_kernel(4, beta=-4.0), ValueError, r"beta must be a finite number > 0"),
    ("template-n", lambda: template_kernel(0), ValueError, r"n must be an integer >= 1, got 0"),
    ("epoch-0", _filter_loss_epoch_0, ValueError, r"epoch must be an integer >= 1, got 0"),
    ("steps-per-epoch-0", lambda: FilterLoss(_vgg(), steps_per_epoch=0), ValueError,
     r"steps_per_epoch must be an integer >= 1"),
    ("instability-nan", lambda: location_instability(torch.full((1, 3, 2), float("nan")), torch.zeros(3, 1, 2), 8),
     ValueError, r"positions must be finite, got 6 NaN or inf value\(s\); pass the peaks"),
    ("instability-size-negative", lambda: location_instability(torch.zeros(1, 3, 2), torch.zeros(3, 1, 2), -8),
     ValueError, r"image_size must be a finite number > 0, got -8; pass the image side"),
    ("instability-size-0", lambda: location_instability(torch.zeros(1, 3, 2), torch.zeros(3, 1, 2), (8, 0)),
     ValueError, r"image_size must be a finite number > 0, got 0"),
    ("instability-top-n", lambda: location_instability(torch.zeros(1, 3, 2), torch.zeros(3, 1, 2), 8, top_n=1),
     ValueError, r"top_n must be an integer >= 2, got 1"),
    ("peaks-root", lambda: peak_positions(_vgg(), "", torch.rand(2, 3, 4, 4)), ValueError,
     r"layer must be a non-empty name"),
    ("peaks-flat-layer", lambda: peak_positions(_vgg(), "classifier.1", torch.rand(2, 3, 4, 4)), ValueError,
     r"layer must be a conv layer whose output is \(N, D, n, m\) maps"),
]


@pytest.mark.parametrize("case", ICNN, ids=[c[0] for c in ICNN])
def test_icnn(case):
    _, fn, exc, pattern = case
    _raises(fn, exc, pattern)


def test_make_interpretable_root_leaves_a_sane_model():
    m = _vgg()
    with pytest.raises(ValueError):
        make_interpretable(m, "")
    m.state_dict(), repr(m), m.to("cpu")          # no RecursionError: the model does not contain itself


# ============================================================================ explanatory graph
def _maps(n=4, nan=False):
    x = torch.rand(n, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    if nan:
        x[0, 0, 0, 0] = float("nan")
    return OrderedDict(a=x)


GRAPH = [
    ("nan-maps", lambda: mine(_maps(nan=True), geometry={"a": 1}), ValueError,
     r"feature_maps\['a'\] must be finite, got 1 NaN or inf value\(s\) of 128; pass ReLU'd conv feature maps"),
    ("no-images", lambda: mine(_maps(n=0), geometry={"a": 1}), ValueError,
     r"feature_maps\['a'\] must be non-empty, got shape \(0, 2, 4, 4\)"),
    ("nodes-0", lambda: mine(_maps(), geometry={"a": 1}, nodes_per_filter=[0]), ValueError,
     r"nodes_per_filter must be an integer >= 1, got 0; pass a count >= 1 for every layer"),
    ("nodes-count", lambda: mine(_maps(), geometry={"a": 1}, nodes_per_filter=[1, 2]), ValueError,
     r"nodes_per_filter must be one count per layer \(1\)"),
    ("density-negative", lambda: mine(_maps(), geometry={"a": 1}, density=(-0.1,)), ValueError,
     r"density must be a finite number > 0 and <= 1, got -0.1; pass fractions"),
    ("density-above-1", lambda: mine(_maps(), geometry={"a": 1}, density=(2.0,)), ValueError,
     r"density must be a finite number > 0"),
    ("stride-0", lambda: mine(_maps(), geometry={"a": 0}), ValueError,
     r"geometry\['a'\] stride must be a finite number > 0, got 0.0; pass the layer's stride"),
    ("stride-negative", lambda: mine(_maps(), geometry={"a": (-2, 0)}), ValueError,
     r"stride must be a finite number > 0"),
    ("parents-0", lambda: mine(_maps(), geometry={"a": 1}, parents=0), ValueError,
     r"parents must be an integer >= 1, got 0"),
    ("iters-0", lambda: mine(_maps(), geometry={"a": 1}, iters=0), ValueError, r"iters must be an integer >= 1"),
    ("max-range-0", lambda: mine(_maps(), geometry={"a": 1}, max_range=0), ValueError,
     r"max_range must be a finite number > 0"),
    ("valid-tau-negative", lambda: mine(_maps(), geometry={"a": 1}, valid_tau=-1), ValueError,
     r"valid_tau must be a finite number >= 0"),
    ("not-a-dict", lambda: mine([torch.rand(1, 1, 2, 2)], geometry={}), ValueError,
     r"feature_maps must be a non-empty ordered dict .*pass \{layer: maps\}"),
]


@pytest.mark.parametrize("case", GRAPH, ids=[c[0] for c in GRAPH])
def test_graph(case):
    _, fn, exc, pattern = case
    _raises(fn, exc, pattern)


# ============================================================================ training and other entry points
def _fit(**kw):
    ds = _tiny_set()
    return fit(kw.pop("model", None) or _tiny_net(), kw.pop("train", ds), ds, **dict(dict(epochs=1, progress=False,
                                                                                     cache=False), **kw))


OTHER = [
    ("fit-lr-negative", lambda: _fit(lr=-1.0), ValueError,
     r"lr must be a finite number > 0, got -1.0; pass a learning rate"),
    ("fit-epochs-0", lambda: _fit(epochs=0), ValueError,
     r"epochs must be an integer >= 1, got 0; pass an integer >= 1"),
    ("fit-weight-decay", lambda: _fit(weight_decay=-1), ValueError, r"weight_decay must be a finite number >= 0"),
    ("fit-threads-0", lambda: _fit(num_threads=0), ValueError,
     r"num_threads must be an integer >= 1, got 0; pass num_threads=None"),
    ("fit-cache", lambda: _fit(cache="yes"), ValueError, r"cache must be one of True, False, 'refresh'"),
    ("fit-float64", lambda: _fit(train=ImageSet(images=torch.rand(8, 3, 2, 2, dtype=torch.float64),
                                                labels=torch.arange(8) % 2)), ValueError,
     r"train_set inputs must be torch.float32 like the model's weights, got torch.float64"),
    ("fit-meta", lambda: _fit(model=_meta_linear()), ValueError, r"model_or_name must be a model with real weights"),
    ("word-info-regularization", lambda: word_information(lambda e: e.sum(-1), torch.rand(3, 2), regularization=-1,
                                                          steps=2), ValueError,
     r"regularization must be finite feature stds >= 0, got min -1; pass the std"),
    ("pixel-info-nan", lambda: pixel_information(Reuse(), torch.full((1, 3, 4, 4), float("nan")), ["conv"], grid=2),
     ValueError, r"images must be finite, got 48 NaN or inf value\(s\)"),
    ("validate-bool-int", lambda: V.positive_int("steps", True), ValueError,
     r"steps must be an integer >= 1, got True"),
]


def _meta_linear():
    with torch.device("meta"):
        return nn.Sequential(nn.Flatten(), nn.Linear(12, 2))


@pytest.mark.parametrize("case", OTHER, ids=[c[0] for c in OTHER])
def test_other_entry_points(case):
    _, fn, exc, pattern = case
    _raises(fn, exc, pattern)


# ============================================================================ data scripts
_tar = make_tar


ARCHIVES = [  # (id, members or raw bytes, error type, one-line message)
    ("symlink-chain", [("good.txt", "file", None), ("l1", "sym", "."), ("l1/l2", "sym", ".."),
                       ("l1/l2/escape.txt", "file", None)], fetch.UnsafeArchiveError,
     r"refusing link 'l1/l2' -> '..' \(it leaves the target folder, directly or through other links\)"),
    ("chain-through-two", [("a", "sym", "b"), ("b", "sym", "c/../.."), ("x", "file", None)], fetch.UnsafeArchiveError,
     r"refusing link 'b' -> 'c/../..'"),
    ("loop", [("a", "sym", "b"), ("b", "sym", "a"), ("a/x", "file", None)], fetch.UnsafeArchiveError,
     r"a symlink loop"),
    ("abs-link", [("good.txt", "file", None), ("l", "sym", "/etc")], fetch.UnsafeArchiveError,
     r"refusing link 'l' -> absolute"),
    ("hardlink-out", [("h", "hard", "../../x")], fetch.UnsafeArchiveError, r"refusing link 'h' -> '../../x'"),
    ("corrupt", b"\x1f\x8b\x08\x00garbage", fetch.ArchiveError,
     r"cannot extract a.tar.gz: .*delete it and fetch again"),
]


@pytest.mark.parametrize("case", ARCHIVES, ids=[c[0] for c in ARCHIVES])
def test_data_scripts_archives(case, tmp_path, capsys):
    _, members, exc, pattern = case
    arc = tmp_path / "a.tar.gz"
    if isinstance(members, bytes):
        arc.write_bytes(members)
    else:
        _tar(arc, members)
    target = tmp_path / "data" / "sst2" / "raw"
    _raises(lambda: fetch.safe_extract(arc, target), exc, pattern)
    assert list(target.iterdir()) == [] and sorted(p.name for p in target.parent.iterdir()) == ["raw"]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "data" / "escape.txt").exists()
    # through fetch: one line on the CLI's stderr, nothing extracted, not listed as fetched
    res = registry.Resource(filename=arc.name, urls=(arc.as_uri(),))
    ds = registry.Dataset(name="sst2", title="t", resources=(res,), homepage="h", license="l", citation="c")
    with pytest.raises(exc):
        fetch.fetch("sst2", tmp_path / "data", dataset=ds)
    assert not (target / common.MANIFEST).exists() and not fetch.fetched("sst2", tmp_path / "data", dataset=ds)
    assert list(target.iterdir()) == []
    assert "\n" not in str(_last_error(lambda: fetch.safe_extract(arc, target)))    # one line


def _last_error(fn):
    try:
        fn()
    except Exception as e:  # the message printed by `python -m data_scripts`
        return e
    return None


def test_fetched_only_after_verification(tmp_path):
    arc = tmp_path / "SST-2.tar.gz"
    _tar(arc, [("SST-2/train.tsv", "file", None)])
    root = tmp_path / "data"
    res = registry.Resource(filename=arc.name, urls=(arc.as_uri(),), sha256="0" * 64)
    ds = registry.Dataset(name="sst2", title="t", resources=(res,), homepage="h", license="l", citation="c")
    with pytest.raises(fetch.DownloadError, match=r"sha256 mismatch .*delete it and fetch again"):
        fetch.fetch("sst2", root, dataset=ds)
    assert not fetch.fetched("sst2", root, dataset=ds)
    plain = registry.Resource(filename=arc.name, urls=(arc.as_uri(),))
    good = registry.Dataset(name="sst2", title="t", resources=(plain,), homepage="h", license="l", citation="c")
    fetch.fetch("sst2", root, dataset=good)
    assert fetch.fetched("sst2", root, dataset=good)
