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


def test_below_and_above_respect_the_noise_margin():
    # 0.8 + 2 * 0.05 = 0.9 < 1: holds; 0.8 + 2 * 0.15 = 1.1: does not
    assert claims.claim_below("x", "p", 0.8, 1.0, "cpu", se=0.05).holds
    c = claims.claim_below("x", "p", 0.8, 1.0, "cpu", se=0.15)
    assert not c.holds and c.measured == 0.8 and "2 SE" in c.criterion
    assert claims.claim_below("x", "p", 0.05, 0.05, "cpu", inclusive=True).holds
    # "> 1" with ratio 1.3 +- 0.1: 1.3 - 0.2 = 1.1 > 1 holds; +- 0.2 (z = 2) does not
    assert claims.claim_above("ratio", "p", 1.3, 1.0, "cpu", se=0.1).holds
    assert not claims.claim_above("ratio", "p", 1.3, 1.0, "cpu", se=0.2).holds
    assert claims.claim_above("ratio", "p", 1.3, 1.0, "cpu", se=0.2, z=1.0).holds
    assert not claims.claim_above("s", "p", 0.15, 0.15, "cpu").holds  # strict by default
    assert claims.claim_above("s", "p", 0.15, 0.15, "cpu", inclusive=True).holds
    assert claims.claim_above("s", "p", 0.2, 0.15, "cpu").criterion == "> 0.15"
    assert not claims.claim_above("s", "p", float("nan"), 0.0, "cpu").holds


def test_band_is_closed():
    assert claims.claim_band("m", "p", 0.5, 0.5, 2.0, "cpu").holds
    assert claims.claim_band("m", "p", 2.0, 0.5, 2.0, "cpu").holds
    assert not claims.claim_band("m", "p", 2.01, 0.5, 2.0, "cpu").holds
    assert not claims.claim_band("m", "p", 0.49, 0.5, 2.0, "cpu").holds
    assert claims.claim_band("m", "p", 1.0, 0.5, 2.0, "cpu").criterion == "in [0.5, 2]"


def test_compare_gives_three_verdicts():
    # margin 2 * hypot(0.3, 0.4) = 1.0
    assert claims.compare(1.0, 2.1, 0.3, 0.4) == "better"
    assert claims.compare(2.1, 1.0, 0.3, 0.4) == "worse"
    assert claims.compare(1.0, 1.9, 0.3, 0.4) == "indistinguishable"
    assert claims.compare(1.0, 1.9, 0.3, 0.4, z=1.0) == "better"  # margin 0.5
    assert claims.compare(2.1, 1.0, 0.3, 0.4, lower_is_better=False) == "better"
    assert claims.compare(1.0, 1.0) == "indistinguishable"
    assert claims.compare(1.0, 1.0 + 1e-12) == "better"  # no noise given: any gap counts
    assert claims.compare(float("nan"), 1.0) == "indistinguishable"


def test_ordered_claim_names_the_pair_that_fails():
    values = {"distilled 2-RF": 0.10, "distilled 1-RF": 0.20, "1-RF": 0.50}
    c = claims.claim_ordered("rank", "p", values, "cpu")
    assert c.holds and c.measured == "distilled 2-RF 0.1 < distilled 1-RF 0.2 < 1-RF 0.5"
    noisy = claims.claim_ordered(
        "rank", "p", values, "cpu", ses={"distilled 2-RF": 0.04, "distilled 1-RF": 0.04}
    )
    # 0.2 - 0.1 = 0.1 < 2 * hypot(0.04, 0.04) = 0.113: the first pair is indistinguishable
    assert not noisy.holds
    assert noisy.note == "distilled 2-RF vs distilled 1-RF: indistinguishable"
    swapped = claims.claim_ordered("rank", "p", {"a": 2.0, "b": 1.0}, "cpu", note="n")
    assert not swapped.holds and swapped.note == "a vs b: worse; n"
    higher = claims.claim_ordered("acc", "p", {"a": 0.9, "b": 0.8}, "cpu", lower_is_better=False)
    assert higher.holds and " > " in str(higher.measured)
    with pytest.raises(ValueError, match="two values"):
        claims.claim_ordered("x", "p", {"a": 1.0}, "cpu")


def test_below_and_above_are_named_documented_and_share_one_signature():
    import inspect

    for fn, name in ((claims.claim_below, "claim_below"), (claims.claim_above, "claim_above")):
        assert fn.__name__ == name and "Holds when" in fn.__doc__
        params = inspect.signature(fn).parameters
        assert list(params) == [
            *("name", "paper", "measured", "bound", "scale", "note"),
            *("se", "z", "inclusive"),
        ]
        assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in ("se", "z"))
    # the two sides mirror each other: x below b beyond the margin <=> -x above -b
    for x, b, se in ((0.8, 1.0, 0.05), (0.8, 1.0, 0.15), (1.3, 1.0, 0.1), (0.5, 0.5, 0.0)):
        below = claims.claim_below("x", "p", x, b, "cpu", se=se).holds
        assert below == claims.claim_above("x", "p", -x, -b, "cpu", se=se).holds
        assert below == (x + 2 * se < b)


def test_claim_parts_within_needs_every_part_beyond_its_noise():
    from pflow_explore.claims import claim_parts_within

    exact = {"total": 2.0, "x-part": 1.2, "g-part": 0.8}
    good = {k: (e * 1.02, 0.001, e) for k, e in exact.items()}
    assert claim_parts_within("r", "p", good, 0.1, "tiny").holds
    # the right total from a wrong split: +14% and -21% in the parts
    split = dict(good, **{"x-part": (1.2 * 1.14, 0.001, 1.2), "g-part": (0.8 * 0.79, 0.001, 0.8)})
    row = claim_parts_within("r", "p", split, 0.1, "tiny")
    assert not row.holds and row.measured == pytest.approx(0.21)
    noisy = {k: (e * 1.02, 0.05 * e, e) for k, e in exact.items()}  # 2% off, SE 5%
    assert not claim_parts_within("r", "p", noisy, 0.1, "tiny").holds


def test_replica_z_is_students_t():
    from pflow_explore.claims import replica_z

    # table values of the 97.5% quantile: 12.706 (1 dof), 2.365 (7), 2.045 (29)
    assert replica_z(2) == pytest.approx(12.706, abs=1e-3)
    assert replica_z(8) == pytest.approx(2.3646, abs=1e-4)
    assert replica_z(30) == pytest.approx(2.0452, abs=1e-4)
    assert replica_z(1) == float("inf")
