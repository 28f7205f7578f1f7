"""mean_reverting.py: the schedule, the forward marginals, the exact mixture denoiser and the
MR Sampler's solvers, checked against independent numerics (quadrature, Monte Carlo of the
forward SDE, autograd, the closed-form Gaussian PF-ODE flow and dopri5) on random parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from pflow_explore import mean_reverting as mr
from pflow_explore import solvers
from pflow_explore.datasets.mixture import GaussianMixture

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def random_schedule(seed: int, kind: str) -> mr.MRSchedule:
    g = np.random.default_rng(seed)
    return mr.MRSchedule(
        T=float(g.uniform(1, 50)),
        lambda_=float(g.uniform(0.1, 1)),
        schedule=kind,
        alpha_end=float(g.uniform(0.001, 0.05)),
    )


def gaussian_problem(seed: int = 0, schedule: mr.MRSchedule | None = None):
    g = torch.Generator().manual_seed(seed)
    a = 0.2 * torch.randn(2, 2, generator=g, dtype=F64)
    cov = a @ a.T + 0.01 * torch.eye(2, dtype=F64)
    mean, mu = (
        0.3 * torch.randn(2, generator=g, dtype=F64),
        0.3 * torch.randn(2, generator=g, dtype=F64),
    )
    sch = schedule or mr.MRSchedule()
    return sch, mean, cov, mu, mr.MixtureMR.gaussian(mean, cov, sch, mu)


def exact_flow(sch, mean, cov, mu, x, t_from, t_to):
    """The PF-ODE flow map of Gaussian data: along each eigenvector of cov the coordinate of
    x - mu - alpha (mean - mu) scales by the ratio of marginal standard deviations."""
    lam, u = torch.linalg.eigh(cov)
    var = lambda t: sch.alpha(t) ** 2 * lam + sch.sigmabar(t) ** 2
    c = (x - mu - sch.alpha(t_from) * (mean - mu)) @ u * (var(t_to) / var(t_from)).sqrt()
    return c @ u.T + mu + sch.alpha(t_to) * (mean - mu)


def slope(nfes, errs) -> float:
    return -float(np.polyfit(np.log(nfes), np.log(errs), 1)[0])


# ---- schedule ---------------------------------------------------------------------------------
def test_paper_schedule_endpoints():
    sch = mr.MRSchedule()
    assert abs(float(sch.alpha(sch.T)) - 0.005) < 1e-12 and float(sch.alpha(0.0)) == 1.0
    assert float(sch.theta(0.0)) == 0.0 and float(sch.sigmabar(0.0)) == 0.0
    assert abs(float(sch.sigmabar(sch.T)) - 50 / 255 * math.sqrt(1 - 0.005**2)) < 1e-12


@pytest.mark.parametrize("kind", ["cosine", "constant"])
def test_schedule_against_quadrature_and_inverse(kind):
    for seed in range(3):
        sch = random_schedule(seed, kind)
        grid = torch.linspace(0, sch.T, 20001, dtype=F64)
        integral = torch.cumulative_trapezoid(sch.theta(grid), grid)
        assert torch.allclose(sch.theta_bar(grid[1:]), integral, atol=1e-7, rtol=1e-6)
        assert abs(float(sch.alpha(sch.T)) - sch.alpha_end) < 1e-12
        t = torch.rand(50, dtype=F64) * sch.T * 0.999 + 1e-3 * sch.T
        lam = sch.lam(t)
        assert (sch.lam(grid[1:]).diff() < 0).all()
        assert torch.allclose(sch.t_of_lambda(lam), t, rtol=1e-9, atol=1e-9 * sch.T)
        assert torch.allclose(lam, torch.log(sch.alpha(t) / sch.sigmabar(t)))
        assert torch.allclose(sch.sigma(t) ** 2, 2 * sch.lambda_**2 * sch.theta(t))


def test_marginals_against_forward_sde_simulation():
    """Euler-Maruyama of dx = theta (mu - x) dt + sigma dW on 1000 steps vs (2)."""
    for seed, kind in [(1, "cosine"), (2, "constant")]:
        sch = random_schedule(seed, kind)
        g = torch.Generator().manual_seed(seed)
        x0, mu, n = (
            torch.randn(2, dtype=F64, generator=g),
            torch.randn(2, dtype=F64, generator=g),
            20000,
        )
        t_end = float(torch.rand((), dtype=F64, generator=g)) * sch.T * 0.7 + 0.2 * sch.T
        times = torch.linspace(0, t_end, 1001, dtype=F64)
        drift = lambda x, t, sch=sch, mu=mu: sch.theta(t) * (mu - x)
        x = solvers.euler_maruyama(drift, sch.sigma, x0.expand(n, 2), times, g).x
        a, s = float(sch.alpha(t_end)), float(sch.sigmabar(t_end))
        se_mean, se_var = s / math.sqrt(n), s**2 * math.sqrt(2 / n)
        assert (x.mean(0) - (mu + a * (x0 - mu))).abs().max() < 4 * se_mean + 1e-3 * s
        assert (x.var(0) - s**2).abs().max() < 4 * se_var + 3e-3 * s**2
        z = sch.q_sample(x0.expand(n, 2), t_end, mu, g)[0]
        assert (z.mean(0) - x.mean(0)).abs().max() < 6 * se_mean


# ---- exact denoiser, score, conversions --------------------------------------------------------
def test_mixture_denoiser_and_score_against_monte_carlo_and_autograd():
    sch = random_schedule(3, "cosine")
    g = torch.Generator().manual_seed(3)
    mix = GaussianMixture(
        torch.tensor([0.3, 0.7], dtype=F64),
        torch.randn(2, 2, dtype=F64, generator=g),
        torch.stack(
            [0.2 * torch.eye(2, dtype=F64), torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=F64)]
        ),
    )
    mu = torch.randn(2, dtype=F64, generator=g)
    ex, t = mr.MixtureMR(mix, sch, mu), 0.3 * sch.T
    x = ex.sample(5, t, g).requires_grad_(True)
    logp = ex.log_prob(x, t)
    (grad,) = torch.autograd.grad(logp.sum(), x)
    assert torch.allclose(ex.score(x, t), grad, atol=1e-10)
    x = x.detach()
    # Monte Carlo over x0 ~ p0: p_t(x) = E N(x; mu + a (x0 - mu), s^2), E[x0 | x] by weights
    x0 = mix.sample(400000, g).to(F64)
    a, s = float(sch.alpha(t)), float(sch.sigmabar(t))
    logw = -((x[:, None] - mu - a * (x0[None] - mu)) ** 2).sum(-1) / (2 * s**2)
    w = torch.softmax(logw, dim=1)
    mc_den = w @ x0
    mc_logp = torch.logsumexp(logw, 1) - math.log(len(x0)) - math.log(2 * math.pi * s**2)
    assert torch.allclose(ex.denoiser(x, t), mc_den, atol=0.02)
    assert torch.allclose(ex.log_prob(x, t), mc_logp, atol=0.1)  # MC: ~2% in density
    # Tweedie and the conversions
    eps = ex.eps(x, t)
    assert torch.allclose(sch.score_from_eps(eps, t), ex.score(x, t), atol=1e-10)
    assert torch.allclose(sch.eps_from_score(ex.score(x, t), t), eps, atol=1e-10)
    assert torch.allclose(sch.x0_from_eps(x, eps, t, mu), ex.denoiser(x, t), atol=1e-10)
    m = ex.marginal(t)
    assert torch.allclose(m.means, mu + a * (mix.means - mu))
    assert torch.allclose(m.covs, a**2 * mix.covs + s**2 * torch.eye(2, dtype=F64))


# ---- grids -------------------------------------------------------------------------------------
def test_time_grid_logsnr_uniform_and_clip():
    sch = mr.MRSchedule()
    grid = mr.time_grid(sch, 8)
    assert grid[0] == sch.T and abs(float(grid[-1]) - 0.1) < 1e-12
    assert torch.allclose(sch.lam(grid).diff(), sch.lam(grid).diff()[0].expand(8), atol=1e-9)
    assert torch.allclose(
        mr.time_grid(sch, 4, "uniform").diff(), torch.full((4,), -99.9 / 4, dtype=F64)
    )
    steep = mr.MRSchedule(schedule="constant", alpha_end=1e-4)  # lam(T) ~ -7.6 < -5
    clipped = mr.time_grid(steep, 4)
    assert float(steep.lam(clipped[0])) == pytest.approx(-5.0, abs=1e-9) and clipped[0] < steep.T


# ---- solvers: orders on the exact Gaussian problem ---------------------------------------------
def ode_errors(method, order, nfes, spacing="logsnr", seed=0):
    sch, mean, cov, mu, ex = gaussian_problem(seed)
    t0, t1 = sch.T, 0.1
    x = ex.sample(64, t0, torch.Generator().manual_seed(seed))
    ref = exact_flow(sch, mean, cov, mu, x, t0, t1)
    errs = []
    for n in nfes:
        sol = mr.sample(method, ex.denoiser, sch, x, mu, mr.time_grid(sch, n, spacing, t1), order)
        assert sol.nfe == n
        errs.append(float((sol.x - ref).norm(dim=1).max()))
    return errs


def test_exact_flow_matches_dopri5():
    sch, mean, cov, mu, ex = gaussian_problem(1)
    x = ex.sample(8, sch.T, torch.Generator().manual_seed(0))
    field = lambda y, t: sch.theta(t) * (mu - y) - sch.lambda_**2 * sch.theta(t) * ex.score(y, t)
    ode = solvers.odeint(field, x, [sch.T, 0.1], "dopri5", rtol=1e-10, atol=1e-10).x
    assert torch.allclose(ode, exact_flow(sch, mean, cov, mu, x, sch.T, 0.1), atol=1e-7)


NFES = [10, 20, 40, 80]
ORDER_BANDS = {1: (0.8, 1.3), 2: (1.7, 2.4), 3: (2.7, 4.3)}


@pytest.mark.parametrize("method", ["mrs_ode_noise", "mrs_ode_data"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_mrs_ode_orders(method, order):
    p = slope(NFES, ode_errors(method, order, NFES))
    lo, hi = ORDER_BANDS[order]
    assert lo < p < hi, f"{method} order {order}: slope {p:.2f}"


def test_euler_ode_order_and_mrs_beats_it():
    errs = ode_errors("euler_ode", 1, NFES, "uniform")
    assert 0.8 < slope(NFES, errs) < 1.3
    assert ode_errors("mrs_ode_data", 3, [20])[0] < errs[-1]  # 20 NFE beat Euler's 80


def test_order_test_catches_a_wrong_update(monkeypatch):
    """Negative control: dropping the second-derivative term of MRS-3 loses an order."""
    right = mr._taylor
    monkeypatch.setattr(mr, "_taylor", lambda hist: right(hist)[:2])
    p = slope(NFES, ode_errors("mrs_ode_data", 3, NFES))
    assert not ORDER_BANDS[3][0] < p < ORDER_BANDS[3][1], p


# ---- SDE solvers -------------------------------------------------------------------------------
def gauss_w2(x: torch.Tensor, m2: torch.Tensor, c2: torch.Tensor) -> float:
    m1, c1 = x.mean(0).numpy(), np.cov(x.numpy(), rowvar=False)
    root = linalg.sqrtm(c2.numpy())
    cross = linalg.sqrtm(root @ c1 @ root).real
    return math.sqrt(max(((m1 - m2.numpy()) ** 2).sum() + np.trace(c1 + c2.numpy() - 2 * cross), 0))


def test_euler_maruyama_w2_converges():
    sch, mean, cov, mu, ex = gaussian_problem(0)
    x = ex.sample(40000, sch.T, torch.Generator().manual_seed(1))
    marg = ex.marginal(0.1)
    nfes, w2 = [10, 20, 40], []
    for n in nfes:
        times = mr.time_grid(sch, n, "uniform", 0.1)
        sol = mr.sample(
            "euler_maruyama",
            ex.denoiser,
            sch,
            x,
            mu,
            times,
            generator=torch.Generator().manual_seed(2),
        )
        w2.append(gauss_w2(sol.x, marg.means[0], marg.covs[0]))
    assert 0.5 < slope(nfes, w2) < 1.3, w2


@pytest.mark.parametrize(("order", "n_steps"), [(1, 400), (2, 100)])
def test_mrs_sde_keeps_the_marginal(order, n_steps):
    sch, mean, cov, mu, ex = gaussian_problem(2)
    n = 20000
    x = ex.sample(n, sch.T, torch.Generator().manual_seed(3))
    times = mr.time_grid(sch, n_steps, t_end=0.1)
    out = mr.sample(
        "mrs_sde_data", ex.denoiser, sch, x, mu, times, order, torch.Generator().manual_seed(4)
    ).x
    marg = ex.marginal(0.1)
    c = marg.covs[0]
    se_mean = (torch.diagonal(c) / n).sqrt()
    assert ((out.mean(0) - marg.means[0]).abs() < 4 * se_mean).all()
    se_cov = ((torch.diagonal(c)[:, None] * torch.diagonal(c)[None] + c**2) / n).sqrt()
    assert ((torch.cov(out.T) - c).abs() < 4 * se_cov).all()
    # negative control: the deterministic ODE-data update with the SDE's noise is not a sampler
    few = mr.sample(
        "mrs_sde_data",
        ex.denoiser,
        sch,
        x,
        mu,
        mr.time_grid(sch, 5, t_end=0.1),
        order,
        torch.Generator().manual_seed(4),
    ).x
    assert ((torch.cov(few.T) - c).abs() > 4 * se_cov).any()


# ---- step-through, errors of a network, bad inputs ---------------------------------------------
def test_steps_match_sample_and_prediction_error():
    sch, mean, cov, mu, ex = gaussian_problem(0)
    x = ex.sample(300, sch.T, torch.Generator().manual_seed(0))
    times = mr.time_grid(sch, 6)
    steps = list(mr.steps("mrs_ode_data", ex.denoiser, sch, x, mu, times, 2))
    assert [s.nfe for s in steps] == list(range(1, 7)) and steps[0].t == sch.T
    sol = mr.sample("mrs_ode_data", ex.denoiser, sch, x, mu, times, 2, trajectory=True)
    assert torch.equal(steps[-1].x_next, sol.x) and sol.trajectory.shape == (7, 300, 2)
    assert torch.equal(steps[0].x0_hat, ex.denoiser(x, sch.T))
    err = mr.PredictionError(0.1, on="eps")
    noisy = lambda m: mr.sample(m, ex.denoiser, sch, x, mu, mr.time_grid(sch, 5), 2, error=err).x
    again = mr.sample(
        "mrs_ode_noise", ex.denoiser, sch, x, mu, mr.time_grid(sch, 5), 2, error=err
    ).x
    assert torch.equal(noisy("mrs_ode_noise"), again)  # seeded
    # an eps-network's error, divided by alpha ~ 0.005 when turned into x0: data prediction
    # from noise prediction goes wrong at low NFE, the noise-prediction update does not
    exact = mr.sample("mrs_ode_data", ex.denoiser, sch, x, mu, mr.time_grid(sch, 5), 2).x
    gap = lambda m: float((noisy(m) - exact).norm(dim=1).mean())
    assert gap("mrs_ode_data") > 5 * gap("mrs_ode_noise")
    den = mr.sample("mrs_ode_data", ex.denoiser, sch, x, mu, times, denoise_end=True)
    plain = mr.sample("mrs_ode_data", ex.denoiser, sch, x, mu, times).x
    assert den.nfe == 7 and torch.allclose(den.x, ex.denoiser(plain, float(times[-1])))


def test_bad_inputs_raise():
    sch, mean, cov, mu, ex = gaussian_problem(0)
    x, times = torch.zeros(3, 2, dtype=F64), mr.time_grid(sch, 4)
    bad = [
        lambda: mr.MRSchedule(schedule="linear"),
        lambda: mr.MRSchedule(alpha_end=1.5),
        lambda: mr.MRSchedule(T=-1.0),
        lambda: sch.alpha(sch.T + 1),
        lambda: sch.t_of_lambda(-100.0),
        lambda: mr.time_grid(sch, 0),
        lambda: mr.time_grid(sch, 4, "cosine"),
        lambda: mr.time_grid(sch, 4, t_end=0.0),
        lambda: mr.steps("heun", ex.denoiser, sch, x, mu, times),
        lambda: mr.steps("mrs_sde_data", ex.denoiser, sch, x, mu, times, order=3),
        lambda: mr.steps("mrs_ode_data", ex.denoiser, sch, x, mu, times.flip(0)),
        lambda: mr.steps("mrs_ode_data", ex.denoiser, sch, x, mu, torch.tensor([10.0, 0.0])),
        lambda: mr.PredictionError(-1.0),
        lambda: mr.PredictionError(0.1, on="score"),
        lambda: mr.MixtureMR.gaussian(mean, cov, sch, torch.zeros(3)),
        lambda: mr.phi(4, torch.tensor(1.0)),
    ]
    for make in bad:
        with pytest.raises(ValueError):
            make()


# ---- the library's Gaussian flow map, the forward simulation, clipping -------------------------
def test_library_flow_map_matches_dopri5():
    sch, mean, cov, mu, ex = gaussian_problem(3)
    x = ex.sample(8, 80.0, torch.Generator().manual_seed(0))
    field = lambda y, t: sch.theta(t) * (mu - y) - sch.lambda_**2 * sch.theta(t) * ex.score(y, t)
    ode = solvers.odeint(field, x, [80.0, 0.5], "dopri5", rtol=1e-10, atol=1e-10).x
    assert torch.allclose(ode, mr.gaussian_flow_map(mean, cov, sch, mu, x, 80.0, 0.5), atol=1e-7)


def test_simulate_forward_reaches_the_marginal():
    sch = random_schedule(5, "cosine")
    x0, mu = torch.tensor([1.0, -0.5], dtype=F64), torch.tensor([0.2, 0.3], dtype=F64)
    n, t = 20000, 0.6 * sch.T
    x = mr.simulate_forward(sch, x0.expand(n, 2), mu, t, 500, torch.Generator().manual_seed(0))
    mean, var = mu + sch.alpha(t) * (x0 - mu), float(sch.sigmabar(t)) ** 2
    assert ((x.mean(0) - mean).abs() < 4 * (var / n) ** 0.5).all()
    assert ((x.var(0) - var).abs() < 4 * var * (2 / n) ** 0.5).all()
    with pytest.raises(ValueError):
        mr.simulate_forward(sch, x0[None], mu, 2 * sch.T, 10)


def test_clip_bounds_x0_hat_and_is_refused_for_noise_prediction():
    sch, mean, cov, mu, ex = gaussian_problem(0)
    x = ex.sample(64, sch.T, torch.Generator().manual_seed(0))
    times = mr.time_grid(sch, 5, t_end=0.1)
    err = mr.PredictionError(1.0, "eps")
    clipped = list(mr.steps("mrs_ode_data", ex.denoiser, sch, x, mu, times, 2, error=err,
                            clip=(-0.2, 0.2)))  # fmt: skip
    assert all(float(s.x0_hat.abs().max()) <= 0.2 + 1e-12 for s in clipped)
    free = list(mr.steps("mrs_ode_data", ex.denoiser, sch, x, mu, times, 2, error=err))
    assert float(free[0].x0_hat.abs().max()) > 1.0  # the error divided by alpha_T, unclipped
    with pytest.raises(ValueError, match="clip"):
        mr.steps("mrs_ode_noise", ex.denoiser, sch, x, mu, times, 2, clip=(-1, 1))


def test_gaussian_denoiser_fast_path_equals_the_mixture_path():
    sch, mean, cov, mu, ex = gaussian_problem(4)
    g = torch.Generator().manual_seed(0)
    for t in (0.05, 3.0, 60.0, sch.T):
        x = ex.sample(64, t, g)
        assert torch.allclose(ex.denoiser(x, t), ex.mixture_denoiser(x, t), atol=1e-12)
    rows = torch.tensor([1.0, 50.0], dtype=F64)  # one t per row: the general path
    x = ex.sample(2, 50.0, g)
    assert torch.allclose(ex.denoiser(x, rows), ex.mixture_denoiser(x, rows), atol=1e-12)
