"""The time log behind ``--profile-time``: ``fit`` logs a span per training it runs (never for a cache
hit), and the profile splits each cell into its measured training seconds and the rest."""
import datetime as dt
import json

import nbformat
import pytest

from xnn_support.core import timelog
from xnn_support.core.train import fit
from xnn_support.data import creatures
from xnn_support.run.timing import cell_times, write_time_profile


def test_fit_logs_one_training_span_and_none_for_a_cache_hit(tmp_path, monkeypatch):
    monkeypatch.setenv("XNN_CACHE", str(tmp_path / "cache"))
    log = tmp_path / "nb.time.jsonl"
    monkeypatch.setenv(timelog.ENV, str(log))
    ds = creatures(32, 32, seed=0)
    kw = dict(model_config={"width": 0.25}, epochs=1, batch_size=16, progress=False, seed=0)
    r = fit("vgg_small", ds, None, **kw)
    spans = timelog.read_spans(log)
    assert not r.from_cache and len(spans) == 1
    assert spans[0]["kind"] == "training" and spans[0]["name"] == "vgg_small"
    assert 0 < spans[0]["end"] - spans[0]["start"] < 600
    assert fit("vgg_small", ds, None, **kw).from_cache
    assert len(timelog.read_spans(log)) == 1  # loading is not training


def test_without_the_variable_a_span_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(timelog.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with timelog.span("training", "x"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_span_is_written_when_its_block_raises(tmp_path, monkeypatch):
    log = tmp_path / "t.jsonl"
    monkeypatch.setenv(timelog.ENV, str(log))
    with pytest.raises(KeyError):
        with timelog.span("training", "boom"):
            raise KeyError("x")
    log.write_text(log.read_text() + "{torn line\n")  # a torn or foreign line is skipped
    assert [s["name"] for s in timelog.read_spans(log)] == ["boom"]


T0 = dt.datetime(2026, 12, 2, 12, 0, 0, tzinfo=dt.timezone.utc)


def _executed(path, cells):
    """A notebook as papermill leaves it: each code cell with duration, start and end (seconds after T0)."""
    nb = nbformat.v4.new_notebook()
    for src, a, b in cells:
        c = nbformat.v4.new_code_cell(src)
        c.metadata["papermill"] = {"duration": b - a, "start_time": (T0 + dt.timedelta(seconds=a)).isoformat(),
                                   "end_time": (T0 + dt.timedelta(seconds=b)).isoformat(), "status": "completed"}
        nb.cells.append(c)
    nbformat.write(nb, str(path))


def _span(a, b, kind="training"):
    return {"kind": kind, "name": "n", "start": T0.timestamp() + a, "end": T0.timestamp() + b}


def test_cells_split_into_measured_training_and_the_rest(tmp_path):
    nb = tmp_path / "07_x.ipynb"
    _executed(nb, [("import torch", 0, 2), ("rows = run_study(cfg)", 2, 102), ("viz.plot(rows)", 102, 110)])
    # two workers' trainings overlap (counted once: 20-60 and 40-80 -> 60 s), one span crosses into cell 3
    spans = [_span(20, 60), _span(40, 80), _span(100, 105), _span(0, 1, kind="other")]
    with open(tmp_path / "07_x.time.jsonl", "w") as f:
        f.write("".join(json.dumps(s) + "\n" for s in spans))
    df = cell_times(nb)
    got = {(r.cell, r.category): round(r.seconds, 6) for r in df.itertuples()}
    assert got == {(0, "setup"): 2, (1, "training"): 62, (1, "method"): 38, (2, "training"): 3,
                   (2, "figures"): 5}
    assert df["seconds"].sum() == pytest.approx(110)  # every second once


def test_without_a_time_log_training_is_guessed_and_named_so(tmp_path):
    nb = tmp_path / "07_x.ipynb"
    _executed(nb, [("r = fit('vgg_small', ds)", 0, 30), ("viz.plot(r)", 30, 31)])
    df = cell_times(nb)
    assert list(df["category"]) == ["training (guessed)", "figures"] and list(df["training s"]) == [0, 0]
    empty = cell_times(nb, spans=[])  # a log without trainings: nothing trained, nothing guessed
    assert list(empty["category"]) == ["method", "figures"]


def test_the_profile_tables_show_the_training_share(tmp_path):
    nb = tmp_path / "07_x.ipynb"
    _executed(nb, [("rows = run_study(cfg)", 0, 100)])
    (tmp_path / "07_x.time.jsonl").write_text(json.dumps(_span(10, 50)) + "\n")
    (tmp_path / "07_x.run.json").write_text(json.dumps({"name": "07_x", "status": "ok", "output": "07_x.ipynb"}))
    md = write_time_profile(tmp_path).read_text()
    assert "| 07_x | 60.0 | 40.0 | 100.0 |" in md, md  # method, training, total
    assert "| 0 | 100.0 | 40.0 | method | `rows = run_study(cfg)` |" in md, md


def test_a_notebook_run_measures_its_training(tmp_path, monkeypatch):
    from nbfactory import make_notebook
    from xnn_support.run.catalog import find_notebook
    from xnn_support.run.runner import run_notebook
    from xnn_support.run.timing import time_profile
    monkeypatch.setenv("XNN_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "nbs"
    d.mkdir()
    make_notebook(d / "00_fit.ipynb", 'profile: str = "default"  # p\nseed: int = 0  # s', [
        "import torch\nfrom xnn_support.core.train import fit\nfrom xnn_support.data import creatures",
        "torch.set_num_threads(1)\nr = fit('vgg_small', creatures(32, 32, seed=0), None, model_config={'width': 0.25}, "
        "epochs=1, batch_size=16, progress=False)", "x = sum(range(10))"])
    r = run_notebook(find_notebook("00", d), {}, tmp_path / "out")
    assert r.status == "ok", r.error
    prof = time_profile(tmp_path / "out")
    train = prof[prof["category"] == "training"]
    assert list(train["cell"]) == [3] and float(train["seconds"].iloc[0]) > 0  # the fit cell, measured
    assert "training (guessed)" not in set(prof["category"])
    assert (tmp_path / "out" / "00_fit.time.jsonl").is_file()
