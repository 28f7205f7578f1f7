"""theory/super_resolution.py: the linear-Gaussian SR posterior, the one-step map and the
PF-ODE between them, against Monte Carlo, ODE integration and nested least squares."""

from __future__ import annotations

import pytest
import sympy as sp
import torch

from pflow_explore.theory import super_resolution as th
from pflow_explore.theory.super_resolution import GaussianSR

F64 = torch.float64


def problem(seed: int, d: int = 4, k: int = 1, noise: float = 0.2) -> GaussianSR:
    gen = torch.Generator().manual_seed(100 + seed)
    a = torch.rand(k, d, generator=gen, dtype=F64) / d + 0.1
    return GaussianSR.random(a, seed, noise_std=noise)


def test_sympy_checks_vanish():
    d = th.posterior_scalar()
    for label in ("precision check", "mode check", "consistency check", "boundary check"):
        assert sp.simplify(d[label]) == 0, label
    d2 = th.posterior_2d()
    assert d2["precision check"] == sp.zeros(2, 2)
    assert d2["null-space check"] == 0


def test_sympy_scalar_formulas_equal_the_torch_posterior():
    d = th.posterior_scalar()
    values = {th.m_s: 0.3, th.c_s: 1.7, th.a_s: 0.6, th.s_s: 0.4, th.y_s: -0.8, th.z_s: 1.3}
    prob = GaussianSR(
        torch.tensor([0.3], dtype=F64),
        torch.tensor([[1.7]], dtype=F64),
        torch.tensor([[0.6]], dtype=F64),
        0.4,
    )
    y = torch.tensor([[-0.8]], dtype=F64)
    mean = float(d["posterior mean"].rhs.subs(values))
    var = float(d["posterior variance"].rhs.subs(values))
    assert prob.posterior_mean(y).item() == pytest.approx(mean, rel=1e-12)
    assert prob.posterior_cov().item() == pytest.approx(var, rel=1e-12)
    one = float(d["one-step map"].rhs.subs(values))
    assert prob.exact_map(y, torch.tensor([[1.3]], dtype=F64)).item() == pytest.approx(
        one, rel=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_posterior_matches_importance_sampling(seed):
    """Prior samples weighted by the likelihood N(y0; A x, s^2 I) estimate E[x|y0] and
    Cov[x|y0]; tolerances from the effective sample size."""
    prob = problem(seed)
    gen = torch.Generator().manual_seed(seed)
    _, y0 = prob.sample(1, gen)
    x, _ = prob.sample(400_000, gen)
    logw = -((x @ prob.A.T - y0) ** 2).sum(1) / (2 * prob.noise_std**2)
    w = torch.softmax(logw, 0)
    ess = 1 / (w**2).sum()
    mean = w @ x
    cov = (w[:, None] * (x - mean)).T @ (x - mean)
    exact_mean, exact_cov = prob.posterior_mean(y0)[0], prob.posterior_cov()
    sd = exact_cov.diagonal().sqrt()
    assert ess > 1000
    assert ((mean - exact_mean).abs() < 5 * sd / ess.sqrt()).all()
    cov_se = (exact_cov.diagonal()[:, None] * exact_cov.diagonal()[None] + exact_cov**2).sqrt()
    assert ((cov - exact_cov).abs() < 6 * cov_se / ess.sqrt()).all()
    # negative control: the prior's moments are far outside those tolerances
    assert ((prob.mean - exact_mean).abs() > 5 * sd / ess.sqrt()).any()


@pytest.mark.parametrize("seed", [0, 3])
def test_exact_map_samples_have_the_posterior_moments(seed):
    prob = problem(seed, d=6, k=2)
    gen = torch.Generator().manual_seed(seed)
    _, y0 = prob.sample(1, gen)
    n = 200_000
    z = torch.randn(n, 6, generator=gen, dtype=F64)
    s = prob.exact_map(y0.expand(n, -1), z)
    exact_mean, exact_cov = prob.posterior_mean(y0)[0], prob.posterior_cov()
    var = exact_cov.diagonal()
    assert ((s.mean(0) - exact_mean).abs() < 5 * (var / n).sqrt()).all()
    cov_se = ((var[:, None] * var[None] + exact_cov**2) / n).sqrt()
    assert ((torch.cov(s.T) - exact_cov).abs() < 5 * cov_se).all()
    # control: a Cholesky factor instead of the symmetric root gives the same moments but a
    # different map, so the map itself is pinned by the next test, not by moments
    assert torch.allclose(prob.posterior_cov_sqrt() @ prob.posterior_cov_sqrt(), exact_cov)


def _rk4(prob, x, y, u, smax, t0, t1, steps=200):
    h = (t1 - t0) / steps
    for i in range(steps):
        t = t0 + i * h
        k1 = prob.velocity(x, t, y, u, smax)
        k2 = prob.velocity(x + h / 2 * k1, t + h / 2, y, u, smax)
        k3 = prob.velocity(x + h / 2 * k2, t + h / 2, y, u, smax)
        k4 = prob.velocity(x + h * k3, max(t + h, 0.0), y, u, smax)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


@pytest.mark.parametrize("seed, smax", [(0, 1.0), (1, 0.5), (2, 2.0)])
def test_pf_ode_integration_lands_on_the_exact_map(seed, smax):
    """Integrating the regression velocity (5) from x_1 = u + s_max z to t = 0 gives
    f*(y, z) (3), and f*(x_t, t) (4) is constant along the way."""
    prob = problem(seed)
    gen = torch.Generator().manual_seed(seed)
    _, y = prob.sample(50, gen)
    u = y.repeat(1, 4) + 0.1 * torch.randn(50, 4, generator=gen, dtype=F64)  # any LRup
    z = torch.randn(50, 4, generator=gen, dtype=F64)
    x1 = u + smax * z
    x_half = _rk4(prob, x1, y, u, smax, 1.0, 0.5)
    x0 = _rk4(prob, x_half, y, u, smax, 0.5, 0.0)
    exact = prob.exact_map(y, z)
    assert torch.allclose(x0, exact, atol=1e-6)
    assert torch.allclose(prob.consistency_map(x_half, 0.5, y, u, smax), exact, atol=1e-6)
    assert torch.allclose(prob.consistency_map(x1, 1.0, y, u, smax), exact, atol=1e-12)
    assert torch.allclose(prob.consistency_map(x0, 0.0, y, u, smax), x0, atol=1e-12)
    # control: one Euler step lands on the posterior mean, not on the map
    euler = prob.euler_map(x1, y, u, smax, 1)
    assert torch.allclose(euler, prob.posterior_mean(y), atol=1e-12)
    assert (euler - exact).norm(dim=1).mean() > 0.1


def test_euler_map_is_the_optimum_of_two_step_consistency_training():
    """f_1 = least-squares affine fit of HR on x_{1/2}; f_2 = fit of f_1(x_{1/2}) on x_1,
    all for one y (HR drawn from the posterior): f_2 equals two Euler steps of (5)."""
    prob, smax = problem(4), 1.0
    gen = torch.Generator().manual_seed(4)
    _, y0 = prob.sample(1, gen)
    n = 300_000
    y = y0.expand(n, -1)
    u = y.repeat(1, 4)
    hr = prob.exact_map(y, torch.randn(n, 4, generator=gen, dtype=F64))
    z = torch.randn(n, 4, generator=gen, dtype=F64)
    x_half = 0.5 * hr + 0.5 * u + smax * 0.5 * z
    x_one = u + smax * z

    def affine_fit(inputs, targets):
        design = torch.cat([inputs, torch.ones(len(inputs), 1, dtype=F64)], 1)
        coef = torch.linalg.lstsq(design, targets).solution
        return lambda v: torch.cat([v, torch.ones(len(v), 1, dtype=F64)], 1) @ coef

    f1 = affine_fit(x_half, hr)
    f2 = affine_fit(x_one, f1(x_half))
    probe = u[:200] + smax * torch.randn(200, 4, generator=gen, dtype=F64)
    euler = prob.euler_map(probe, y[:200], u[:200], smax, 2)
    to_euler = (f2(probe) - euler).norm(dim=1).mean()
    exact = prob.consistency_map(probe, 1.0, y[:200], u[:200], smax)
    to_exact = (f2(probe) - exact).norm(dim=1).mean()
    assert to_euler < 0.03  # Monte Carlo error of the two fits
    assert to_exact > 10 * to_euler  # the CT optimum is not f*


def test_euler_error_decays_like_one_over_n():
    prob, smax = problem(5), 1.0
    gen = torch.Generator().manual_seed(5)
    _, y = prob.sample(500, gen)
    u = y.repeat(1, 4)
    z = torch.randn(500, 4, generator=gen, dtype=F64)
    exact = prob.exact_map(y, z)
    errs = [
        (prob.euler_map(u + smax * z, y, u, smax, n) - exact).norm(dim=1).mean().item()
        for n in (4, 8, 16, 32, 64)
    ]
    assert all(a > b for a, b in zip(errs, errs[1:], strict=False))
    ratios = [a / b for a, b in zip(errs, errs[1:], strict=False)]
    assert 1.7 < ratios[-1] < 2.3  # first order


def test_errors():
    a = torch.ones(1, 2, dtype=F64)
    with pytest.raises(ValueError, match="positive definite"):
        GaussianSR(torch.zeros(2), -torch.eye(2), a, 0.1)
    with pytest.raises(ValueError, match="A must be"):
        GaussianSR(torch.zeros(2), torch.eye(2), torch.ones(1, 3), 0.1)
    with pytest.raises(ValueError, match="singular"):
        GaussianSR(torch.zeros(2), torch.eye(2), torch.ones(2, 2), 0.0)
    prob = GaussianSR(torch.zeros(2), torch.eye(2), a, 0.1)
    with pytest.raises(ValueError, match="y must have shape"):
        prob.posterior_mean(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="z must have shape"):
        prob.exact_map(torch.zeros(3, 1), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="t must lie"):
        prob.velocity(torch.zeros(1, 2), 1.5, torch.zeros(1, 1), torch.zeros(1, 2), 1.0)
    with pytest.raises(ValueError, match="n_steps"):
        prob.euler_map(torch.zeros(1, 2), torch.zeros(1, 1), torch.zeros(1, 2), 1.0, 0)
