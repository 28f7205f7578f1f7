"""Negative controls for chapter 03's claims: each row that depends on training or sampling
is fed a wrong input (a coupling whose lines cross, a one-step map that does not collapse,
sample sets that differ only by noise, a model that returns its noise) and must fail; the
right input must hold. The rows are built by the chapter's own claims functions."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from pflow_explore.chapters import rectified_flow as R
from pflow_explore.datasets.toy2d import sample_toy
from pflow_explore.metrics import frechet_distance
from pflow_explore.theory import rectified_flow as rf

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the Gaussian rows ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def theory():
    return R.theory_check(d=2, sigma=0.6, n=20000, n_steps=16, seed=3)  # SE 0.7%: 2 SE < 3%


def test_reflow_row_holds_on_ode_pairs_and_fails_on_pairs_whose_lines_cross(theory):
    good = R.claims_theory(theory, "tiny")[1]
    assert good.holds and "reflow" in good.name
    assert theory.reflow_residual_independent > 0.3  # the control value the note reports
    # a coupling whose interpolation lines cross: the 1-RF pairs mirrored in a random half
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(2000, 2, generator=gen, dtype=F64)
    z1 = theory.mu + theory.sigma * z0
    flip = torch.rand(2000, generator=gen) < 0.5
    crossing = torch.where(flip[:, None], theory.mu - theory.sigma * z0, z1)
    times = torch.linspace(0.1, 0.9, 9, dtype=F64)
    wrong = replace(
        theory, reflow_residual=float(rf.reflow_regression_residual(z0, crossing, times).max())
    )
    assert not R.claims_theory(wrong, "tiny")[1].holds


def test_one_step_w2_row_fails_when_the_one_step_samples_do_not_collapse(theory):
    assert R.claims_theory(theory, "tiny")[2].holds
    # a one-step map that leaves the noise where it is (v = 0): measured on those samples
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(20000, 2, generator=gen, dtype=F64)
    x1 = theory.mu + theory.sigma * torch.randn(20000, 2, generator=gen, dtype=F64)
    wrong = replace(theory, w2_sq=frechet_distance(z0, x1))
    assert not R.claims_theory(wrong, "tiny")[2].holds


# ---- the 2D one-step ranking ----------------------------------------------------------------
def _chain(samples: dict[str, torch.Tensor], target: torch.Tensor, per_path=None, crossings=None):
    """A Chain2D carrying only what claims_2d reads, measured as evaluate_2d measures it;
    per_path: k-RF -> (n,) straightness of each path (default: halved each round)."""
    others = [f"1-RF, {R.settings('tiny').reference_steps_2d} Euler steps", R.ONE_STEP.format(2)]
    sw, en = R.metrics.distances_to_target(samples | dict.fromkeys(others, target), target, 7)
    se = {k: R.metrics.sliced_w2_bootstrap_se(samples[k], target, 256, 7, 30) for k in R.RANKED}
    if per_path is None:
        base = torch.rand(200, generator=torch.Generator().manual_seed(0), dtype=F64) + 0.5
        per_path = {k: base / 2**i for i, k in enumerate(R.ROUNDS)}
    rounds = {k: float(v.mean()) for k, v in per_path.items()}
    lines = ("independent pairs (1-RF training)", "1-RF coupling (2-RF training)")
    if crossings is None:
        crossings = {f"lines: {lines[0]}": 10, f"lines: {lines[1]}": 1}
        crossings["lines: 2-RF coupling (3-RF training)"] = 1
    return R.Chain2D("eight_gaussians", {}, rounds, samples, target, sw, en, None, {}, {},
                     crossings, {}, se, per_path)  # fmt: skip


def _rows(chain: R.Chain2D) -> list:
    return R.claims_2d({"eight_gaussians": chain}, R.settings("tiny"))


# ---- the 2D straightness and crossing rows --------------------------------------------------
def _gaussian_paths(seed: int, second: bool = False) -> torch.Tensor:
    """Per-path straightness of the exact 1-RF (or 2-RF) flow N(0, I) -> N(mu, 0.36 I) in 2D
    on 300 fresh starts (flow_matching.straightness_per_path: rk4 + Simpson)."""
    from pflow_explore import flow_matching as fm

    mu = torch.tensor([2.0, -1.0], dtype=F64)
    v = rf.gaussian_2rf_velocity if second else rf.gaussian_rf_velocity
    z0 = torch.randn(300, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return fm.straightness_per_path(lambda x, t: v(x, t, mu, 0.6), z0, 16)


def test_straightness_rows_hold_for_a_reflow_and_fail_for_a_round_that_only_redraws_noise():
    sets = _sets(300, 3)
    target = sets.pop("target")
    rf1, rf2 = _gaussian_paths(1), _gaussian_paths(1, second=True)
    good = _rows(_chain(sets, target, {"1-RF": rf1, "2-RF": rf2, "3-RF": rf2 + 0.0}))
    assert good[0].holds and "S(2-RF) / S(1-RF)" in good[0].name
    assert not good[1].holds  # 0 / 0 is no evidence that the 3-RF is straighter
    # a "2-RF" that is the 1-RF on other noise: its ratio is 1 up to noise, the row must fail
    same = {"1-RF": rf1, "2-RF": _gaussian_paths(2), "3-RF": _gaussian_paths(4)}
    rows = _rows(_chain(sets, target, same))
    assert not rows[0].holds and not rows[1].holds
    assert "SE" in rows[0].criterion


def test_crossing_row_fails_when_the_coupling_crosses_as_much_as_independent_pairs():
    sets = _sets(300, 3)
    target = sets.pop("target")
    lines = ("independent pairs (1-RF training)", "1-RF coupling (2-RF training)")
    counts = {f"lines: {lines[0]}": 40, f"lines: {lines[1]}": 40}
    counts["lines: 2-RF coupling (3-RF training)"] = 40
    row = next(c for c in _rows(_chain(sets, target, crossings=counts)) if "crossing" in c.name)
    assert not row.holds
    counts[f"lines: {lines[1]}"] = 2
    row = next(c for c in _rows(_chain(sets, target, crossings=counts)) if "crossing" in c.name)
    assert row.holds


def _ranking(samples: dict[str, torch.Tensor], target: torch.Tensor):
    return next(c for c in _rows(_chain(samples, target)) if c.name.startswith("one-step ranking"))


def _sets(n: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: sample_toy("eight_gaussians", n, gen) for k in (*R.RANKED, "target")}


@pytest.mark.parametrize("n", [1000])
def test_ranking_holds_for_a_real_order_and_not_for_noise_or_a_reversed_one(n):
    sets = _sets(n, 0)
    target = sets.pop("target")
    gen = torch.Generator().manual_seed(9)
    blur = lambda x, s: x + s * torch.randn(x.shape, generator=gen)
    ordered = {k: blur(x, s) for (k, x), s in zip(sets.items(), (0.0, 0.6, 1.5), strict=True)}
    assert _ranking(ordered, target).holds
    # three sets drawn from the target itself: any order is noise, so the row must not hold
    noise = _ranking(sets, target)
    assert not noise.holds and "indistinguishable" in noise.note
    # the order reversed (the wrong model is the best): fails with "worse"
    names = list(R.RANKED)
    reversed_ = dict(zip(names, [ordered[k] for k in reversed(names)], strict=True))
    worse = _ranking(reversed_, target)
    assert not worse.holds and "worse" in worse.note


def test_ranking_fails_for_a_student_that_returns_its_noise():
    sets = _sets(1000, 1)
    target = sets.pop("target")
    gen = torch.Generator().manual_seed(2)
    sets["distilled 2-RF"] = torch.randn(1000, 2, generator=gen)  # the source, unmoved
    assert not _ranking(sets, target).holds


# ---- the digits row -------------------------------------------------------------------------
def _digits_claim(fd: dict[str, float], se: dict[str, float]):
    s = R.settings("tiny")
    dg = R.DigitsResult({}, fd, dict.fromkeys(fd, 0.5), {}, {}, 1.0, {}, None, None, {}, se)
    return R.claims_digits(dg, s)[0]


def test_digits_row_needs_a_difference_beyond_its_bootstrap_noise():
    from pflow_explore import metrics

    train, _, test = R.digits_data(R.settings("tiny"))
    ref = metrics.digits_features(test.reshape(-1, 1, 8, 8))
    half = len(train) // 2
    keys = ("distilled 2-RF", "distilled 1-RF", "1-RF teacher, 1 Euler step")
    top = "1-RF teacher, 8 Euler steps"

    def measured(sets):
        feats = {k: metrics.digits_features(x.reshape(-1, 1, 8, 8)) for k, x in sets.items()}
        fd = {k: metrics.frechet_distance(f, ref) for k, f in feats.items()}
        se = {k: R.frechet_se(f, ref, 0) for k, f in feats.items()}
        return fd | {keys[2]: 1.0, top: 1.0}, se

    # two halves of the training digits: the same distribution, any difference is noise
    same = measured({keys[0]: train[:half], keys[1]: train[half : 2 * half]})
    assert not _digits_claim(*same).holds
    # a student that outputs noise-corrupted digits is worse beyond the noise
    gen = torch.Generator().manual_seed(4)
    noisy = (train[half : 2 * half] + 0.8 * torch.randn(half, train.shape[1], generator=gen)).clamp(
        -1, 1
    )
    good = measured({keys[0]: train[:half], keys[1]: noisy})
    assert _digits_claim(*good).holds
    assert math.isfinite(good[1][keys[0]]) and good[1][keys[0]] > 0


def test_gaussian_straightness_row_fails_for_the_field_of_another_target(theory):
    assert R.claims_theory(theory, "tiny")[0].holds
    # the exact 1-RF field of N(mu, 0.5^2 I), measured as the chapter measures S, against the
    # formula for sigma = 0.6: a wrong field must not pass
    z0 = torch.randn(20000, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    wrong_field = lambda x, t: rf.gaussian_rf_velocity(x, t, theory.mu, 0.5)
    wrong = replace(theory, straightness=R.straightness_of_field(wrong_field, z0, 16))
    assert not R.claims_theory(wrong, "tiny")[0].holds
