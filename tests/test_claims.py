"""The claims scoreboard (issue 14, item 8): the verdict rule, metadata checking, the report's table."""
import json

import pytest

from xnn_support.run.claims import ClaimError, parse_claims, score_claims, verdict
from xnn_support.run.catalog import catalog
from xnn_support.run.report import claim_results, write_report


@pytest.mark.parametrize("values,direction,expected", [
    ([-0.2, -0.3, -0.25], "-", "reproduced"),
    ([0.2, 0.3, 0.25], "+", "reproduced"),
    ([-0.2, 0.1, -0.3], "-", "mixed"),            # one seed disagrees
    ([-0.01, -0.5, -0.02], "-", "reproduced"),    # all agree, |mean| 0.177 > sd 0.28? no -> see below
    ([-0.1], "-", "mixed"),                        # a single value cannot be called reproduced
    ([0.1, 0.2], "-", "not reproduced"),
    ([0.0, 0.0], "+", "not reproduced"),
    ([], "+", "not run"),
    ([float("nan")], "+", "not run"),
])
def test_verdict(values, direction, expected):
    if values == [-0.01, -0.5, -0.02]:
        expected = "mixed"  # every seed agrees but the mean (-0.177) is within its sd (0.28)
    assert verdict(values, direction) == expected


def test_verdict_refuses_a_bad_direction():
    with pytest.raises(ClaimError, match="direction"):
        verdict([1.0], "up")


def test_parse_claims_names_the_field():
    with pytest.raises(ClaimError, match="nb: claims\\[0\\]: field 'metric'"):
        parse_claims("nb", [{"id": "a", "text": "t", "direction": "+"}])
    with pytest.raises(ClaimError, match="duplicate id"):
        parse_claims("nb", [{"id": "a", "text": "t", "metric": "m", "direction": "+"}] * 2)


def test_score_uses_per_seed_values_and_falls_back_to_the_value():
    claims = parse_claims("nb", [{"id": "a", "text": "t", "metric": "m", "direction": "-", "paper": -0.4},
                                 {"id": "b", "text": "t", "metric": "n", "direction": "+"},
                                 {"id": "c", "text": "t", "metric": "absent", "direction": "+"}])
    res = score_claims("nb", claims, [{"name": "m", "value": -0.2, "per_seed": [-0.1, -0.2, -0.3]},
                                      {"name": "n", "value": 0.5}])
    assert [r.verdict for r in res] == ["reproduced", "mixed", "not run"]
    assert res[0].n == 3 and res[0].agree == 3 and abs(res[0].mean + 0.2) < 1e-12


def test_every_notebook_declares_valid_claims():
    infos = catalog()
    assert infos
    with_claims = [i.name for i in infos if i.claims]
    assert len(with_claims) >= 6, with_claims   # every paper notebook (00 is the tour)
    for i in infos:  # a claim's metric may be recorded only in the default profile: "not run" in smoke
        assert len({c.id for c in i.claims}) == len(i.claims)


def test_report_opens_with_the_claims_table(tmp_path):
    nb = next(i for i in catalog() if i.claims)
    c = nb.claims[0]
    (tmp_path / f"{nb.name}.metrics.json").write_text(json.dumps(
        {"notebook": nb.name, "metrics": [{"name": c.metric, "value": -1.0, "per_seed": [-1.0, -1.1]}]}))
    (tmp_path / f"{nb.name}.run.json").write_text(json.dumps({"name": nb.name, "status": "ok", "duration": 1.0}))
    paths = write_report(tmp_path)
    md = paths["md"].read_text()
    first = md.index("## Claims")
    assert first < md.index("## Notebooks")
    assert "not run" in md                         # the notebooks that did not run
    html = paths["html"].read_text()
    assert html.index("Claims") < html.index("Notebooks")
    results = claim_results(tmp_path)
    assert {r.notebook for r in results} >= {i.name for i in catalog() if i.claims}
