"""`xnn bench` prints a table with a ratio column; a failing benchmark is a row, not a crash."""
import math

import pytest

from xnn_support import bench
from xnn_support.run import cli as cli


def test_bench_table_has_ratio_for_every_row(capsys):
    assert cli.main(["bench", "--only", "core/capture", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "ratio" in out.splitlines()[0]
    rows = [r for r in out.splitlines()[2:] if r.strip() and not r.startswith(("notes", " ", "torch"))]
    assert len(rows) >= 2


def test_failing_benchmark_becomes_a_row():
    @bench.benchmark("zz/broken")
    def _broken(quick):
        raise RuntimeError("nope")
    try:
        rows = bench.run_benchmarks(only=["zz/broken"], log=lambda s: None)
        assert any("failed" in r.name and "nope" in r.note for r in rows)
        assert math.isnan(rows[-1].ratio)
    finally:
        bench._REGISTRY.pop("zz/broken")
    with pytest.raises(KeyError):
        bench.run_benchmarks(only=["no-such-benchmark"], log=lambda s: None)


def test_pointcloud_rows_run(capsys):
    assert cli.main(["bench", "--only", "pointcloud/attack,pointcloud/sigma", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "attack:" in out and "point sigma:" in out and "failed" not in out


def test_equal_accuracy_quick_rows_run():
    """The issue-23 equal-accuracy rows run in their quick form and claim no target there."""
    rows = bench.run_benchmarks(only=["discarding/equal_accuracy_", "pointcloud/equal_accuracy_"], quick=True,
                                log=lambda s: None)
    rows = [r for r in rows if "import failed" not in r.name]
    assert len(rows) == 4 and not any("failed" in r.name for r in rows)  # word, pixel, point x 2 engines
    for r in rows:
        assert r.ok is None and "no claim" in r.note and math.isfinite(r.ratio) and r.reference > 0


def test_op_profile_names_the_operators_that_take_the_time():
    import torch
    from xnn_support.bench import op_profile
    a = torch.randn(64, 64)
    got = op_profile(lambda: [a @ a for _ in range(20)], top=2)
    assert got.startswith("aten::") and "%" in got and "op calls" in got, got
    assert int(got.rsplit("; ", 1)[1].split()[0]) >= 20  # every matmul counted
