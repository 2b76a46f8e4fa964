"""The metrics ledger: atomic JSON, replace-by-name, memory mode, numpy/torch scalars."""
import json
import os

import numpy as np
import pytest
import torch

import xnn_support.core.ledger as rec


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv("XNN_LEDGER", raising=False)
    rec.set_ledger(None)
    yield
    rec.set_ledger(None)


def test_ledger_file_written_and_replaced_by_name(tmp_path, capsys):
    path = tmp_path / "04_x.metrics.json"
    rec.set_ledger(path)
    rec.record("acc", np.float32(0.5), paper=0.9, note="seed 0")
    rec.record("n", torch.tensor(3))
    rec.record("acc", 0.75, paper=0.9)
    data = json.loads(path.read_text())
    assert data["notebook"] == "04_x"
    assert [(m["name"], m["value"]) for m in data["metrics"]] == [("n", 3), ("acc", 0.75)]
    assert "[record] acc = 0.75" in capsys.readouterr().out
    assert list(rec.results_table().index) == ["n", "acc"]


def test_env_var_ledger_and_memory_mode(tmp_path, monkeypatch):
    rec.record("mem", 1.0, display=False)
    assert rec.records()[0]["name"] == "mem"
    path = tmp_path / "a.metrics.json"
    monkeypatch.setenv("XNN_LEDGER", str(path))
    rec.record("x", float("nan"), display=False)  # NaN becomes null (valid JSON)
    assert json.loads(path.read_text())["metrics"][0]["value"] is None


def test_write_is_atomic_no_partial_file_left(tmp_path, monkeypatch):
    path = tmp_path / "b.metrics.json"
    rec.set_ledger(path)
    rec.record("ok", 1, display=False)
    good = path.read_text()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        rec.record("second", 2, display=False)
    assert path.read_text() == good  # the old ledger is intact
    assert [p.name for p in tmp_path.iterdir()] == ["b.metrics.json"]  # no temp file left behind


def test_bad_values_and_names_are_refused():
    with pytest.raises(ValueError):
        rec.record("", 1)
    with pytest.raises(TypeError):
        rec.record("t", torch.ones(3))
