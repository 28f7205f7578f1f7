import json

import pytest

from pflow_explore import claims
from pflow_explore.claims import Claim


def sample():
    return [
        claims.claim_below("error small", "0", 0.01, 0.05, "tiny"),
        claims.claim_within("speed-up", "4x", 2.0, 4.0, 0.25, "cpu", note="at 2 cores"),
        Claim("statement", "paths are straight", "mostly", "judged by eye", True, "gpu"),
    ]


def test_verdicts_come_from_the_criterion():
    below, within, _ = sample()
    assert below.holds and not within.holds
    assert claims.claim_within("x", "4", 3.5, 4.0, 0.2, "cpu").holds
    assert not claims.claim_below("x", "0", 0.05, 0.05, "cpu").holds  # strict
    assert not claims.all_hold(sample()) and claims.all_hold(sample()[:1])


def test_nan_never_holds_and_holds_must_be_bool():
    assert not claims.claim_below("x", "0", float("nan"), 1.0, "cpu").holds
    with pytest.raises(TypeError, match="bool"):
        Claim("x", "p", 1.0, "c", None, "cpu")


def test_renderings_show_failures_with_their_value():
    cs = sample()
    text = claims.to_text(cs, title="demo")
    assert text.splitlines()[0] == "demo"
    row = next(line for line in text.splitlines() if line.startswith("speed-up"))
    assert "NO" in row and "2" in row and "cpu" in row
    html = claims.to_html(cs)
    assert html.count("<tr>") == 4 and "NO" in html and "at 2 cores" in html
    assert "<script" not in claims.to_html([Claim("<script>", "p", 1.0, "c", True, "cpu")])
    data = json.loads(claims.to_json(cs))
    assert [d["holds"] for d in data] == [True, False, True]
    assert data[1]["measured"] == 2.0 and data[1]["scale"] == "cpu"
