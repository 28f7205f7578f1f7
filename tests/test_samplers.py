"""pflow_explore.samplers against independent numerics: Ornstein-Uhlenbeck closed forms
(mean, variance, Euler-Maruyama's first-order weak error), the exact Gaussian-mixture
interpolant fields (the SDE keeps rho_t for every eps, forward and backward), scipy's ODE
solver for eps = 0, and the stationary law of Langevin dynamics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from pflow_explore import samplers
from pflow_explore.datasets.toy2d import (
    TOY_2D_MIXTURES,
    eight_gaussians,
    random_mixture,
    single_gaussian,
)
from pflow_explore.interpolants import get_interpolant
from pflow_explore.metrics import energy_distance
from pflow_explore.theory.interpolant_fields import InterpolantFields

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


class ExactPair:
    """InterpolantFields as a samplers.VelocityScore (float time)."""

    def __init__(self, fields: InterpolantFields, score_sign: float = 1.0) -> None:
        self.fields, self.score_sign = fields, score_sign

    def velocity(self, x, t):
        return self.fields.velocity(x, float(t))

    def score(self, x, t):
        return self.score_sign * self.fields.score(x, float(t))


class LinearPair:
    """b(x) = -theta x, s = 0: the SDE (F) is the Ornstein-Uhlenbeck process."""

    def __init__(self, theta: float) -> None:
        self.theta = theta

    def velocity(self, x, t):
        return -self.theta * x

    def score(self, x, t):
        return torch.zeros_like(x)


def ou_moments(x0: float, theta: float, eps: float, t: float) -> tuple[float, float]:
    """dX = -theta X dt + sqrt(2 eps) dW from X(0) = x0: mean x0 e^{-theta t}, variance
    eps (1 - e^{-2 theta t}) / theta."""
    return x0 * math.exp(-theta * t), eps * (1 - math.exp(-2 * theta * t)) / theta


# ---- time grids ------------------------------------------------------------------------------
def test_uniform_grid_with_and_without_clamps():
    g = samplers.uniform_grid(4)
    torch.testing.assert_close(g, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=F64))
    c = samplers.uniform_grid(10, clamp=1e-3)
    assert float(c[0]) == pytest.approx(1e-3) and float(c[-1]) == pytest.approx(1 - 1e-3)
    assert np.allclose(np.diff(c.numpy()), (1 - 2e-3) / 10)
    down = samplers.uniform_grid(5, 1.0, 0.0, clamp=0.1)
    assert float(down[0]) == pytest.approx(0.9) and float(down[-1]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="clamp"):
        samplers.uniform_grid(5, clamp=0.5)
    with pytest.raises(ValueError, match="n_steps"):
        samplers.uniform_grid(0)


def test_cosine_grid_is_dense_at_both_ends():
    g = samplers.cosine_grid(200)
    u = np.arange(201) / 200
    np.testing.assert_allclose(g.numpy(), np.sin(np.pi * u / 2) ** 2, atol=1e-15)  # identity
    assert float(g[0]) == 0.0 and float(g[-1]) == pytest.approx(1.0)
    # an Euler step from t_i never passes t = 1 by more than the remaining time
    assert float((g.diff() / (1 - g[:-1])).max()) <= 1.0 + 1e-9
    assert float(g.diff()[0]) < 0.01 * float(g.diff()[100])  # ~ pi / (4 N) of the middle


# ---- Euler-Maruyama on Ornstein-Uhlenbeck ----------------------------------------------------
def test_euler_maruyama_reproduces_ou_moments_within_monte_carlo_error():
    theta, eps, x0, n = 2.0, 0.5, 3.0, 100_000
    start = torch.full((n, 1), x0, dtype=F64)
    gen = torch.Generator().manual_seed(0)
    x = samplers.sample(LinearPair(theta), start, eps, samplers.uniform_grid(1000), gen).x
    mean, var = ou_moments(x0, theta, eps, 1.0)
    se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2 / (n - 1))
    assert abs(float(x.mean()) - mean) < 4 * se_mean + 1e-3  # + EM's O(dt) bias at dt = 1e-3
    assert abs(float(x.var()) - var) < 4 * se_var + 1e-3


def test_euler_maruyama_weak_error_is_first_order_in_dt():
    # bias of mean and variance at t = 1 for N = 10, 20, 40 steps: halving dt halves it
    theta, eps, x0, n = 2.0, 0.5, 3.0, 200_000
    mean, var = ou_moments(x0, theta, eps, 1.0)
    start = torch.full((n, 1), x0, dtype=F64)
    errs = []
    for k, steps in enumerate((10, 20, 40)):
        gen = torch.Generator().manual_seed(k)
        x = samplers.sample(LinearPair(theta), start, eps, samplers.uniform_grid(steps), gen).x
        errs.append((abs(float(x.mean()) - mean), abs(float(x.var()) - var)))
    for coarse, fine in zip(errs[:-1], errs[1:], strict=True):
        for e_coarse, e_fine in zip(coarse, fine, strict=True):
            assert 1.5 < e_coarse / e_fine < 2.7, errs


def test_exponential_integrator_is_exact_for_ou_at_any_step():
    # 4 steps only: Euler-Maruyama is off by ~10 % there, the exponential step not at all
    theta, eps, mu, x0, n = 2.0, 0.5, -1.0, 3.0, 100_000
    start = torch.full((n, 1), x0, dtype=F64)
    sol = samplers.exponential_integrator(
        lambda t: theta,
        mu,
        lambda t: math.sqrt(2 * eps),
        start,
        samplers.uniform_grid(4),
        torch.Generator().manual_seed(1),
        trajectory=True,
    )
    assert sol.trajectory.shape == (5, n, 1) and sol.nfe == 0
    mean, var = ou_moments(x0 - mu, theta, eps, 1.0)
    mean += mu
    assert abs(float(sol.x.mean()) - mean) < 4 * math.sqrt(var / n)
    assert abs(float(sol.x.var()) - var) < 4 * var * math.sqrt(2 / n)
    em = samplers.sample(
        LinearPair(theta), start - mu, eps, samplers.uniform_grid(4), torch.Generator()
    ).x
    assert abs(float(em.var()) - var) > 0.05 * var  # the negative control: EM's step error


def test_exponential_step_limits_and_remainder():
    x = torch.tensor([[2.0, -1.0]], dtype=F64)
    xi = torch.tensor([[0.5, 1.5]], dtype=F64)
    # theta -> 0: an Euler-Maruyama step of dX = N dt + g dW
    step0 = samplers.exponential_step(x, 0.0, 0.0, 0.3, 0.1, xi, remainder=2.0)
    torch.testing.assert_close(step0, x + 2.0 * 0.1 + 0.3 * math.sqrt(0.1) * xi)
    # constant remainder N: the exact ODE solution mu + N / theta + e^{-theta t}(x - ...)
    theta, n_const, dt = 1.7, 0.8, 0.3
    out = samplers.exponential_step(x, theta, 0.0, 0.0, dt, xi, remainder=n_const)
    fixed = n_const / theta
    torch.testing.assert_close(out, fixed + math.exp(-theta * dt) * (x - fixed))
    # theta < 0 (a repelling linear part): still the exact transition, mean and variance
    theta, g = -0.9, 0.4
    out = samplers.exponential_step(x, theta, 1.0, g, dt, xi)
    mean = 1.0 + math.exp(-theta * dt) * (x - 1.0)
    var = g**2 * (math.exp(-2 * theta * dt) - 1) / (-2 * theta)  # int_0^dt e^{-2 theta u} du
    torch.testing.assert_close(out, mean + math.sqrt(var) * xi)
    with pytest.raises(ValueError, match="increase"):
        samplers.exponential_integrator(lambda t: 1.0, 0.0, lambda t: 1.0, x, [1.0, 0.0])


# ---- the interpolant's SDE with the exact fields ---------------------------------------------
def mixture_fields() -> InterpolantFields:
    return InterpolantFields(
        eight_gaussians(), TOY_2D_MIXTURES["mixture"](), get_interpolant("linear", "sqrt")
    )


@pytest.mark.parametrize("eps", [0.0, 0.5, 2.0])
def test_sde_with_exact_mixture_fields_keeps_the_interpolant_marginal(eps):
    fields = mixture_fields()
    gen = torch.Generator().manual_seed(2)
    n = 1500
    x0 = fields.rho0.sample(n, gen).double()
    target = fields.rho1.sample(n, gen).double()
    floor = energy_distance(fields.rho1.sample(n, gen), target)
    times = samplers.cosine_grid(40 if eps == 0 else 150)
    sol = samplers.sample(ExactPair(fields), x0, eps, times, gen, trajectory=True)
    assert sol.trajectory.shape == (len(times), n, 2)
    assert energy_distance(sol.x, target) < 3 * floor
    # and on the way: the mean of x_t at t ~ 1/2 is the exact one
    i = len(times) // 2
    m_t, c_t = fields.gaussian_moments(float(times[i]))
    se = (torch.diagonal(c_t) / n).sqrt()
    assert bool(((sol.trajectory[i].mean(0) - m_t).abs() < 4 * se + 0.02).all())
    if eps > 0:  # negative control: the wrong sign of eps s leaves rho_t
        wrong = samplers.sample(ExactPair(fields, -1.0), x0, eps, times, gen).x
        assert energy_distance(wrong, target) > 3 * floor


@pytest.mark.parametrize("eps", [0.0, 1.0])
def test_backward_sde_carries_rho1_back_to_rho0(eps):
    rho0 = single_gaussian(torch.zeros(2, dtype=F64))
    rho1 = random_mixture(1, 2, generator=torch.Generator().manual_seed(3), std_range=(0.3, 1.0))
    fields = InterpolantFields(rho0, rho1, get_interpolant("linear", "sqrt"))
    gen = torch.Generator().manual_seed(4)
    n = 20_000
    x1 = rho1.sample(n, gen).double()
    times = samplers.cosine_grid(200).flip(0)
    x = samplers.sample(ExactPair(fields), x1, eps, times, gen).x
    assert bool((x.mean(0).abs() < 4 * math.sqrt(1 / n) + 0.01).all()), x.mean(0)
    torch.testing.assert_close(x.T.cov(), torch.eye(2, dtype=F64), atol=0.05, rtol=0)


def test_ode_matches_scipy_on_the_exact_gaussian_velocity():
    rho1 = random_mixture(1, 2, generator=torch.Generator().manual_seed(5), std_range=(0.3, 1.2))
    fields = InterpolantFields(
        single_gaussian(torch.zeros(2, dtype=F64)), rho1, get_interpolant("trigonometric", "sqrt")
    )
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
    times = samplers.uniform_grid(200)
    ours = samplers.sample(ExactPair(fields), x0, 0.0, times).x

    def rhs(t, y):
        x = torch.as_tensor(y, dtype=F64).reshape(1, 2)
        return fields.velocity(x, min(max(t, 0.0), 1.0)).reshape(-1).numpy()

    for i in range(len(x0)):
        ref = solve_ivp(rhs, (0.0, 1.0), x0[i].numpy(), rtol=1e-10, atol=1e-10).y[:, -1]
        np.testing.assert_allclose(ours[i].numpy(), ref, atol=1e-6)
    # batching and trajectories give the same end point
    sol = samplers.sample(ExactPair(fields), x0, 0.0, times, trajectory=True, batch=2)
    torch.testing.assert_close(sol.x, ours)
    torch.testing.assert_close(sol.trajectory[-1], ours)
    assert sol.nfe == 3 * 4 * 200  # three chunks of rk4
    with pytest.raises(ValueError, match="eps"):
        samplers.sample(ExactPair(fields), x0, -0.1, times)


@pytest.mark.parametrize("eps", [0.0, 0.8])
def test_sample_steps_walks_the_same_path_as_sample(eps):
    fields = mixture_fields()
    x0 = fields.rho0.sample(50, torch.Generator().manual_seed(9)).double()
    times = samplers.cosine_grid(30)
    whole = samplers.sample(
        ExactPair(fields), x0, eps, times, torch.Generator().manual_seed(1), True
    )
    steps = list(
        samplers.sample_steps(ExactPair(fields), x0, eps, times, torch.Generator().manual_seed(1))
    )
    assert len(steps) == 30 and float(steps[-1][0]) == pytest.approx(1.0)
    torch.testing.assert_close(torch.stack([x for _, x in steps]), whole.trajectory[1:])
    with pytest.raises(ValueError, match="eps"):
        samplers.sample_steps(ExactPair(fields), x0, -1.0, times)


def test_sde_step_is_the_euler_maruyama_update():
    gen = torch.Generator().manual_seed(7)
    x, b, s, xi = (torch.randn(4, 3, generator=gen, dtype=F64) for _ in range(4))
    eps, dt = 0.7, 0.02
    expected = x + dt * b + eps * dt * s + np.sqrt(2 * eps) * np.sqrt(dt) * xi
    torch.testing.assert_close(samplers.sde_step(x, b, s, eps, dt, xi), expected)


# ---- Langevin --------------------------------------------------------------------------------
def test_langevin_with_the_exact_gaussian_score_reaches_its_law():
    gen = torch.Generator().manual_seed(8)
    m = torch.tensor([1.0, -2.0], dtype=F64)
    cov = torch.tensor([[1.0, 0.4], [0.4, 0.6]], dtype=F64)
    prec = torch.linalg.inv(cov)
    h, n = 0.01, 20_000
    x0 = torch.full((n, 2), 5.0, dtype=F64)  # far from the mode
    steps = int(10 * float(torch.linalg.eigvalsh(cov).max()) / h)  # ten relaxation times

    def score(x):
        return -(x - m) @ prec

    x = samplers.langevin(score, x0, h, steps, gen).x
    xi = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    one = samplers.langevin(score, x0[:3], h, 1, torch.Generator().manual_seed(0)).x
    torch.testing.assert_close(one, samplers.langevin_step(x0[:3], score(x0[:3]), h, xi))
    se = (torch.diagonal(cov) / n).sqrt()
    assert bool(((x.mean(0) - m).abs() < 4 * se).all()), (x.mean(0), m)
    # covariance: O(h) bias (h / 2 relative at most) plus Monte-Carlo error
    torch.testing.assert_close(x.T.cov(), cov, rtol=0.04 + h, atol=0.02)
    # negative control: a score of the wrong Gaussian settles elsewhere
    x_bad = samplers.langevin(lambda x: -(x - 2 * m) @ prec, x0, h, steps, gen).x
    assert float((x_bad.mean(0) - m).abs().max()) > 0.5


def test_pair_callables_evaluate_the_nets_in_x_t_order_without_gradients():
    # b_net(x, t) = x + t and eta_net(x, t) = 2 x: s = eta / gamma with gamma = sqrt(t (1 - t))
    class Net(torch.nn.Module):
        def __init__(self, scale: float, shift: bool) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(scale))
            self.shift = shift

        def forward(self, x, t):
            return self.w * x + (torch.as_tensor(t, dtype=x.dtype) if self.shift else 0)

    gamma = get_interpolant("linear", "sqrt").gamma
    pair = samplers.LearnedPair(Net(1.0, True), Net(2.0, False), gamma, 1e-3)
    b, s = samplers.pair_callables(pair)
    x = torch.tensor([[1.0, -2.0]], dtype=F64)
    out_b, out_s = b(x, 0.25), s(x, 0.25)
    assert out_b.dtype == F64 and not out_b.requires_grad
    torch.testing.assert_close(out_b, x + 0.25)
    torch.testing.assert_close(out_s, 2 * x / math.sqrt(0.25 * 0.75), rtol=1e-6, atol=0)
