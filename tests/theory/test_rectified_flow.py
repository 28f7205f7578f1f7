"""Tests for pflow_explore.theory.rectified_flow against independent numerics.

The closed-form flows are checked against adaptive ODE solves (scipy DOP853, rtol = atol
= 1e-10) of the velocity fields; the velocity against a self-normalised importance-sampling
estimate of E[X1 - X0 | X_t = x] (stated standard error); the straightness formula against
rk4 trajectories of the velocity integrated in time by Simpson's rule, and the sympy
integral against scipy quadrature. Time runs t = 0 (noise) to t = 1 (data).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.integrate import quad, simpson, solve_ivp

from pflow_explore.metrics import frechet_distance
from pflow_explore.solvers import odeint
from pflow_explore.theory import rectified_flow as rf

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)


def random_problem(d: int, seed: int) -> tuple[torch.Tensor, float, torch.Generator]:
    g = torch.Generator().manual_seed(seed)
    mu = 3 * torch.randn(d, generator=g, dtype=F64)
    sigma = float(torch.exp(math.log(0.2) + math.log(20) * torch.rand((), generator=g)))
    return mu, sigma, g  # sigma log-uniform in [0.2, 4]


def solve(f, x0: torch.Tensor, times: np.ndarray) -> torch.Tensor:
    """Reference solution of dx/dt = f(x (n, d), t) at ``times`` (m,): (m, n, d)."""
    shape = x0.shape

    def rhs(t, y):
        return f(torch.from_numpy(y.reshape(shape)), float(t)).numpy().ravel()

    out = solve_ivp(rhs, (times[0], times[-1]), x0.numpy().ravel(), "DOP853", t_eval=times, **TOL)
    assert out.success, out.message
    return torch.from_numpy(out.y.T.reshape(len(times), *shape))


# ---- flows vs ODE solves -----------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 3, 16])
def test_1rf_flow_solves_the_velocity_ode(d):
    mu, sigma, g = random_problem(d, seed=d)
    z0 = torch.randn(5, d, generator=g, dtype=F64)
    times = np.linspace(0.0, 1.0, 11)
    ref = solve(lambda x, t: rf.gaussian_rf_velocity(x, t, mu, sigma), z0, times)
    closed = rf.gaussian_rf_flow(z0, torch.from_numpy(times), mu, sigma)
    assert closed.shape == (11, 5, d)
    torch.testing.assert_close(closed, ref, rtol=1e-8, atol=1e-8)
    # the end points are distributed as pi1: Z1 = mu + sigma Z0
    torch.testing.assert_close(rf.gaussian_rf_flow(z0, 1.0, mu, sigma), mu + sigma * z0)


@pytest.mark.parametrize("d", [2, 7])
def test_2rf_is_the_reflow_of_1rf_and_exactly_straight(d):
    mu, sigma, g = random_problem(d, seed=10 + d)
    z0 = torch.randn(6, d, generator=g, dtype=F64)
    # the coupling of 1-RF, from an ODE solve (not the closed form)
    z1 = solve(lambda x, t: rf.gaussian_rf_velocity(x, t, mu, sigma), z0, np.array([0.0, 1.0]))[-1]
    for t in (0.0, 0.3, 0.8, 1.0):
        xt = t * z1 + (1 - t) * z0
        # on the coupled line X_t determines the pair, so E[Z1 - Z0 | X_t] = Z1 - Z0
        torch.testing.assert_close(rf.gaussian_2rf_velocity(xt, t, mu, sigma), z1 - z0)
    # one Euler step of the exact 2-RF lands on the ODE end point
    one_step = z0 + rf.gaussian_2rf_velocity(z0, 0.0, mu, sigma)
    torch.testing.assert_close(one_step, z1, rtol=1e-8, atol=1e-8)
    times = np.linspace(0.0, 1.0, 6)
    ref = solve(lambda x, t: rf.gaussian_2rf_velocity(x, t, mu, sigma), z0, times)
    torch.testing.assert_close(rf.gaussian_2rf_flow(z0, torch.from_numpy(times), mu, sigma), ref)
    # 4 Euler steps are just as exact
    euler = odeint(
        lambda x, t: rf.gaussian_2rf_velocity(x, t, mu, sigma),
        z0,
        torch.linspace(0, 1, 5, dtype=F64),
    )
    torch.testing.assert_close(euler.x, z1, rtol=1e-8, atol=1e-8)


def test_1rf_one_euler_step_collapses_to_mu():
    mu, sigma, g = random_problem(4, seed=3)
    z0 = torch.randn(2000, 4, generator=g, dtype=F64)
    one_step = z0 + rf.gaussian_rf_velocity(z0, 0.0, mu, sigma)
    torch.testing.assert_close(one_step, mu.expand_as(one_step))


def test_reflow_regression_is_zero_for_straight_couplings_only():
    g = torch.Generator().manual_seed(6)
    z0 = torch.randn(3000, 2, generator=g, dtype=F64)
    times = torch.linspace(0.1, 0.9, 9, dtype=F64)
    affine = z0 @ torch.tensor([[1.5, 0.3], [0.3, 0.5]], dtype=F64) + 2.0  # lines never cross
    assert float(rf.reflow_regression_residual(z0, affine, times).max()) < 1e-10
    independent = torch.randn(3000, 2, generator=g, dtype=F64)
    assert float(rf.reflow_regression_residual(z0, independent, times).min()) > 0.3
    mirrored = -z0  # every line passes through 0 at t = 1/2: the regression cannot fit there
    assert float(rf.reflow_regression_residual(z0, mirrored, times)[4]) > 0.9


# ---- velocity vs Monte Carlo ----------------------------------------------------------------
@pytest.mark.parametrize("t", [0.15, 0.5, 0.85])
def test_velocity_is_the_conditional_mean(t):
    """E[X1 - X0 | X_t = x] by importance sampling: draw the end with the smaller share in
    X_t from its law, solve X_t = x for the other end and weight by the other end's density
    (the Jacobian of that affine map is constant and cancels in the self-normalised mean).
    """
    d, n = 2, 200_000
    mu, sigma, g = random_problem(d, seed=int(100 * t))
    x = (t * mu + math.sqrt((1 - t) ** 2 + t**2 * sigma**2) * torch.randn(3, d, generator=g)).to(
        F64
    )
    exact = rf.gaussian_rf_velocity(x, t, mu, sigma)
    for k in range(len(x)):
        if t >= 0.5:
            x0 = torch.randn(n, d, generator=g, dtype=F64)
            x1 = (x[k] - (1 - t) * x0) / t
            logw = -0.5 * (((x1 - mu) / sigma) ** 2).sum(-1)
        else:
            x1 = mu + sigma * torch.randn(n, d, generator=g, dtype=F64)
            x0 = (x[k] - t * x1) / (1 - t)
            logw = -0.5 * (x0**2).sum(-1)
        w = torch.softmax(logw, 0)
        y = x1 - x0
        est = (w[:, None] * y).sum(0)
        se = ((w[:, None] ** 2) * (y - est) ** 2).sum(0).sqrt()  # delta-method SE
        assert float(1 / (w**2).sum()) > 1000  # enough effective samples
        assert ((est - exact[k]).abs() <= 5 * se + 1e-9).all(), (est, exact[k], se)


# ---- straightness ------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 5])
def test_straightness_formula_matches_integrated_trajectories(d):
    mu, sigma, g = random_problem(d, seed=40 + d)
    n, steps = 3000, 200
    z0 = torch.randn(n, d, generator=g, dtype=F64)
    times = torch.linspace(0, 1, steps + 1, dtype=F64)

    def v(x, t):
        return rf.gaussian_rf_velocity(x, t, mu, sigma)

    path = odeint(v, z0, times, method="rk4", trajectory=True).trajectory
    dz = torch.stack([v(path[k], times[k]) for k in range(steps + 1)])
    dev = ((path[-1] - path[0]) - dz).pow(2).sum(-1).numpy()  # (steps + 1, n)
    per_path = simpson(dev, x=times.numpy(), axis=0)
    se = per_path.std() / math.sqrt(n)
    formula = rf.gaussian_rf_straightness(d, sigma)
    assert abs(per_path.mean() - formula) < 5 * se, (per_path.mean(), formula, se)
    assert formula == pytest.approx(d * sigma * (2 - math.pi / 2), rel=1e-12)


@pytest.mark.parametrize("d", [2, 6])
def test_straightness_formula_tight_with_moment_matched_starts(d):
    """The velocity is affine in x, so the path is affine in Z0 and the integrand quadratic:
    with starts whose empirical mean is 0 and covariance exactly I the sample average equals
    the expectation, leaving only rk4 and Simpson errors (O(h^4))."""
    mu, sigma, g = random_problem(d, seed=60 + d)
    z = torch.randn(64, d, generator=g, dtype=F64)
    z = z - z.mean(0)
    cov = z.T @ z / len(z)
    z0 = z @ torch.linalg.inv(torch.linalg.cholesky(cov)).T
    torch.testing.assert_close(z0.T @ z0 / len(z0), torch.eye(d, dtype=F64))
    steps = 200
    times = torch.linspace(0, 1, steps + 1, dtype=F64)

    def v(x, t):
        return rf.gaussian_rf_velocity(x, t, mu, sigma)

    path = odeint(v, z0, times, method="rk4", trajectory=True).trajectory
    dz = torch.stack([v(path[k], times[k]) for k in range(steps + 1)])
    dev = ((path[-1] - path[0]) - dz).pow(2).sum(-1).mean(-1).numpy()
    measured = simpson(dev, x=times.numpy())
    assert measured == pytest.approx(rf.gaussian_rf_straightness(d, sigma), rel=1e-7)


def test_sympy_integral_matches_quadrature():
    steps = rf.derivation_gaussian_rf()

    def r_prime(t: float, s: float) -> float:  # r = sqrt((1 - t)^2 + t^2 s^2)
        return (t * s**2 - (1 - t)) / math.sqrt((1 - t) ** 2 + t**2 * s**2)

    for s in (0.3, 1.0, 2.7):
        numeric, _ = quad(lambda t, s=s: r_prime(t, s) ** 2, 0, 1, epsabs=1e-13)
        symbolic = float(steps["int r'^2 dt"].rhs.subs(rf.sigma_, s))
        assert symbolic == pytest.approx(numeric, rel=1e-10)
        s_quad, _ = quad(lambda t, s=s: (r_prime(t, s) - (s - 1)) ** 2, 0, 1, epsabs=1e-13)
        assert rf.gaussian_rf_straightness(3, s) == pytest.approx(3 * s_quad, rel=1e-10)


def test_derivation_steps():
    der = rf.derivation_gaussian_rf()
    t, s, mu, x, z0 = rf.t_, rf.sigma_, rf.mu_, rf.x_, rf.z0_
    card = mu + (t * s**2 - (1 - t)) / ((1 - t) ** 2 + t**2 * s**2) * (x - t * mu)
    assert sp.simplify(der["velocity"].rhs - card) == 0
    assert der["flow solves dZ/dt = v"].rhs == 0
    assert der["1-step Euler endpoint"].rhs == mu
    assert der["2-RF straightness"].rhs == 0
    assert sp.simplify(der["2-RF velocity along path"].rhs - (mu + (s - 1) * z0)) == 0
    assert sp.simplify(der.result.rhs - rf.d_ * s * (2 - sp.pi / 2)) == 0
    assert "aligned" in der._repr_latex_()
    with pytest.raises(KeyError):
        der["no such step"]


def test_shapes_dtypes_and_bad_input():
    x = torch.randn(4, 3)
    assert rf.gaussian_rf_velocity(x, 0.5, 1.0, 2.0).dtype == torch.float32
    per_row = rf.gaussian_rf_velocity(x, torch.tensor([0.0, 0.2, 0.5, 1.0]), 0.0, 2.0)
    row2 = rf.gaussian_rf_velocity(x[2:3], 0.5, 0.0, 2.0)
    torch.testing.assert_close(per_row[2:3], row2)
    assert rf.gaussian_rf_flow(x, 0.3, torch.zeros(3), 1.5).shape == (4, 3)
    with pytest.raises(ValueError, match="sigma"):
        rf.gaussian_rf_velocity(x, 0.5, 0.0, -1.0)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        rf.gaussian_rf_velocity(x, 1.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="mu"):
        rf.gaussian_2rf_velocity(x, 0.5, torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match=r"x must be \(n, d\)"):
        rf.gaussian_rf_velocity(torch.zeros(3), 0.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="d"):
        rf.gaussian_rf_straightness(0, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        rf.one_step_w2_sq(2, float("nan"))


# ---- the numerical check of the exact case ---------------------------------------------------
def euler_trapezoid_straightness(v, z0: torch.Tensor, n_steps: int = 400) -> float:
    """S = int E|(Z1 - Z0) - v(Z_t, t)|^2 dt by plain Euler paths and the trapezoid rule
    (first order: independent of the package's rk4 + Simpson)."""
    h, z, vs = 1.0 / n_steps, z0, []
    for k in range(n_steps + 1):
        vs.append(v(z, torch.tensor(k * h, dtype=F64)))
        if k < n_steps:
            z = z + h * vs[-1]
    chord = z - z0
    f = torch.stack([((chord - w) ** 2).sum(-1).mean() for w in vs])
    return float(h * (f.sum() - 0.5 * (f[0] + f[-1])))


def test_gaussian_rf_check_agrees_with_an_independent_estimator():
    seen = {}

    def estimator(v, z0):
        seen["shape"] = tuple(z0.shape)
        return euler_trapezoid_straightness(v, z0)

    th = rf.gaussian_rf_check(estimator, frechet_distance, d=3, sigma=1.4, n=4000, seed=2)
    assert seen["shape"] == (4000, 3) and th.mu.shape == (3,)
    assert th.straightness_formula == pytest.approx(3 * 1.4 * (2 - math.pi / 2), rel=1e-12)
    # Euler's O(h) bias is far below the Monte Carlo error at 400 steps
    assert abs(th.straightness - th.straightness_formula) < 4 * th.straightness_se + 0.01
    assert th.straightness_se == pytest.approx(th.straightness * math.sqrt(2 / (3 * 4000)))
    assert th.euler_2rf_error < 1e-12 and th.one_step_spread < 1e-12
    assert th.w2_sq_formula == 3 * 1.4**2 and abs(th.w2_sq - th.w2_sq_formula) < 4 * th.w2_sq_se
    assert math.isnan(th.reflow_residual)  # no endpoints_of: no regression
    # a wrong estimator shows up as a disagreement, not as a pass
    wrong = rf.gaussian_rf_check(
        lambda v, z0: 0.5 * euler_trapezoid_straightness(v, z0), frechet_distance, 3, 1.4, 4000, 2
    )
    assert abs(wrong.straightness - wrong.straightness_formula) > 10 * wrong.straightness_se
