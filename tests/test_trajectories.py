"""Tests for pflow_explore.trajectories: straightness estimators and path crossings.

Straightness against the closed form S(1-RF) = d sigma (2 - pi/2) (sampled exact flows and
rk4 solves) and against hand-computed piecewise-linear paths; crossings against a brute-force
loop that solves each 2 x 2 intersection system with numpy.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from pflow_explore.theory.rectified_flow import (
    gaussian_2rf_flow,
    gaussian_2rf_velocity,
    gaussian_rf_flow,
    gaussian_rf_straightness,
    gaussian_rf_velocity,
)
from pflow_explore.trajectories import (
    crossing_count,
    crossings,
    path_straightness,
    straightness,
    straightness_of_field,
)

F64 = torch.float64


def moment_matched(n: int, d: int, g: torch.Generator) -> torch.Tensor:
    """n points with empirical mean 0 and covariance exactly I: for paths affine in Z0 the
    sample mean of a quadratic equals its expectation, so only discretisation error is left."""
    z = torch.randn(n, d, generator=g, dtype=F64)
    z = z - z.mean(0)
    return z @ torch.linalg.inv(torch.linalg.cholesky(z.T @ z / n)).T


# ---- straightness ----------------------------------------------------------------------------
def test_straightness_of_hand_computed_paths():
    # a corner path: (0,0) -> (1,0) at t = 1/2 -> (1,1); chord velocity (1,1), segment
    # velocities (2,0), (0,2): S = 1/2 * 2 + 1/2 * 2 = 2
    corner = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[1.0, 1.0]]])
    assert straightness(corner) == pytest.approx(2.0)
    # a straight line run at non-constant speed is not "straight" in S's sense
    uneven = torch.tensor([[[0.0, 0.0]], [[0.9, 0.0]], [[1.0, 0.0]]])
    assert straightness(uneven) == pytest.approx(0.5 * 0.8**2 + 0.5 * 0.8**2)
    line = torch.linspace(0, 1, 7)[:, None, None] * torch.tensor([[1.0, -2.0]])
    assert straightness(line) == pytest.approx(0.0, abs=1e-12)  # float32 input
    # per-path values average to the total; times on [2, 4] rescale
    both = torch.cat([corner, uneven], dim=1)
    torch.testing.assert_close(path_straightness(both), torch.tensor([2.0, 0.64], dtype=F64))
    t = torch.tensor([2.0, 3.0, 4.0])
    assert straightness(corner, t) == pytest.approx(2 * 0.5**2 * 2)  # 2 steps of 1 * |(.5,-.5)|^2
    # a decreasing grid (paths.py convention) gives the same value
    assert straightness(corner.flip(0), t.flip(0)) == pytest.approx(straightness(corner, t))


@pytest.mark.parametrize("d", [2, 5])
def test_discrete_straightness_converges_from_below_to_formula(d):
    g = torch.Generator().manual_seed(d)
    mu, sigma = torch.randn(d, generator=g, dtype=F64), 0.3 + 2 * float(torch.rand((), generator=g))
    z0 = moment_matched(256, d, g)
    exact = gaussian_rf_straightness(d, sigma)
    gaps = []
    for steps in (100, 200, 400):
        times = torch.linspace(0, 1, steps + 1, dtype=F64)
        estimate = straightness(gaussian_rf_flow(z0, times, mu, sigma), times)
        gaps.append(exact - estimate)
    assert all(gap > 0 for gap in gaps)  # the documented bias: an underestimate
    assert gaps[-1] < 1e-4 * exact
    # O(dt^2): halving the step quarters the gap
    assert gaps[0] / gaps[1] == pytest.approx(4, rel=0.05)
    assert gaps[1] / gaps[2] == pytest.approx(4, rel=0.05)


def test_straightness_of_field_matches_formula_and_2rf_is_zero():
    d = 3
    g = torch.Generator().manual_seed(7)
    mu, sigma = torch.randn(d, generator=g, dtype=F64), 1.7
    z0 = moment_matched(128, d, g)
    s1 = straightness_of_field(lambda x, t: gaussian_rf_velocity(x, t, mu, sigma), z0, 64)
    assert s1 == pytest.approx(gaussian_rf_straightness(d, sigma), rel=1e-6)
    s_odd = straightness_of_field(lambda x, t: gaussian_rf_velocity(x, t, mu, sigma), z0, 63)
    assert s_odd == pytest.approx(gaussian_rf_straightness(d, sigma), rel=1e-3)  # trapezoid
    s2 = straightness_of_field(lambda x, t: gaussian_2rf_velocity(x, t, mu, sigma), z0, 8)
    assert s2 == pytest.approx(0.0, abs=1e-20)
    # the Euler path of the exact 2-RF is straight too
    times = torch.linspace(0, 1, 9, dtype=F64)
    assert straightness(gaussian_2rf_flow(z0, times, mu, sigma), times) < 1e-24


def test_straightness_bad_input():
    with pytest.raises(ValueError, match="trajectory"):
        straightness(torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="NaN"):
        straightness(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="times must have shape"):
        straightness(torch.zeros(3, 2, 2), torch.linspace(0, 1, 4))
    with pytest.raises(ValueError, match="monotone"):
        straightness(torch.zeros(3, 2, 2), torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="n_steps"):
        straightness_of_field(lambda x, t: x, torch.zeros(2, 2), 0)
    with pytest.raises(ValueError, match="z0"):
        straightness_of_field(lambda x, t: x, torch.zeros(2), 4)


# ---- crossings ---------------------------------------------------------------------------------
def brute_force_pairs(traj: np.ndarray, same_step: bool = False) -> set[tuple[int, int]]:
    """Pairs whose polylines cross, by solving p + s r = q + u w for every segment pair."""
    steps, n = traj.shape[0] - 1, traj.shape[1]
    found = set()
    for i, j in itertools.combinations(range(n), 2):
        pairs = (
            [(k, k) for k in range(steps)]
            if same_step
            else itertools.product(range(steps), range(steps))
        )
        for k, l in pairs:
            p, r = traj[k, i], traj[k + 1, i] - traj[k, i]
            q, w = traj[l, j], traj[l + 1, j] - traj[l, j]
            m = np.array([r, -w]).T
            if abs(np.linalg.det(m)) < 1e-12:
                continue  # parallel: no proper crossing
            s, u = np.linalg.solve(m, q - p)
            if 1e-9 < s < 1 - 1e-9 and 1e-9 < u < 1 - 1e-9:
                found.add((i, j))
                break
    return found


def as_set(pairs: torch.Tensor) -> set[tuple[int, int]]:
    assert pairs.dtype == torch.long and pairs.shape[1] == 2
    assert (pairs[:, 0] < pairs[:, 1]).all()
    return {tuple(p) for p in pairs.tolist()}


def test_crossings_of_constructed_lines():
    # path 0: (0,0) -> (1,1); path 1: (0,1) -> (1,0) crosses it; path 2 parallel to 0
    starts = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 0.5]])
    ends = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.5]])
    traj = torch.stack([starts, ends])
    assert as_set(crossings(traj)) == {(0, 1), (1, 2)}
    assert crossing_count(traj) == 2
    parallel = torch.stack([starts, starts + 1.0])
    assert crossing_count(parallel) == 0
    # all paths meeting in one end point (1-RF, one Euler step: everything lands on mu)
    fan = torch.stack(
        [torch.randn(20, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(20, 2)]
    )
    assert crossing_count(fan) == 0
    # crossing at different times: path 0 passes (0.5, 0.5) in step 0, path 1 in step 1
    bent = torch.tensor(
        [[[0.0, 0.0], [0.5, -1.0]], [[1.0, 1.0], [0.5, 0.0]], [[2.0, 2.0], [0.5, 1.0]]]
    )
    assert crossing_count(bent) == 1
    assert crossing_count(bent, same_step=True) == 0


@pytest.mark.parametrize(("steps", "n"), [(1, 25), (3, 25), (11, 12)])
def test_crossings_match_brute_force_on_random_paths(steps, n):
    g = torch.Generator().manual_seed(steps)
    traj = torch.cumsum(torch.randn(steps + 1, n, 2, generator=g, dtype=F64), dim=0)
    for same_step in (False, True):
        got = as_set(crossings(traj, same_step=same_step, block=97))  # small blocks: chunking
        assert got == brute_force_pairs(traj.numpy(), same_step)
    assert len(got) > 0


def test_exact_2rf_paths_never_cross_but_1rf_lines_do():
    """2-RF segments lie on rays from the common point mu / (1 - sigma), which lies outside
    every segment, so they cannot cross; the straight interpolation lines of independent
    pairs (what 1-RF is trained on) do cross."""
    g = torch.Generator().manual_seed(3)
    mu, sigma = torch.tensor([2.0, -1.0], dtype=F64), 0.5
    z0 = torch.randn(60, 2, generator=g, dtype=F64)
    times = torch.linspace(0, 1, 9, dtype=F64)
    assert crossing_count(gaussian_2rf_flow(z0, times, mu, sigma)) == 0
    x1 = mu + sigma * torch.randn(60, 2, generator=g, dtype=F64)
    assert crossing_count(torch.stack([z0, x1])) > 0


def test_crossings_bad_input():
    with pytest.raises(ValueError, match=r"\(T \+ 1, n, 2\)"):
        crossings(torch.zeros(3, 4, 3))
    assert crossings(torch.zeros(2, 1, 2)).shape == (0, 2)
    assert math.isfinite(crossing_count(torch.zeros(2, 2, 2)))


def test_field_is_the_one_solvers_field():
    # one name per mathematical object: trajectories uses solvers' velocity-field type
    from pflow_explore import solvers, trajectories

    assert trajectories.Field is solvers.Field
