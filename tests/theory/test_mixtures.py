"""Tests for pflow_explore.theory.mixtures against independent numerics.

Autograd and finite differences of log p_t, Tweedie's formula, self-normalised importance
sampling of E[x0 | x_t], the closed-form PF-ODE flow of a Gaussian integrated with
torchdiffeq, and moments of samples transported by the PF-ODE.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq

from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.paths import EDM, VE, Linear, Trigonometric, VPCosine, VPLinear
from pflow_explore.theory import MixtureFlow

F64 = torch.float64
PATHS = {
    "vp_linear": VPLinear(),
    "vp_cosine": VPCosine(),
    "ve": VE(0.01, 5.0),
    "edm": EDM(0.002, 5.0),
    "linear": Linear(),
    "trigonometric": Trigonometric(),
}


def random_mixture(d: int, k: int, seed: int) -> GaussianMixture:
    """K components with random means, weights and SPD covariances (eigenvalues 0.05..1)."""
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(k, d, generator=g, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(k, d, d, generator=g, dtype=F64))
    lam = 0.05 + 0.95 * torch.rand(k, d, generator=g, dtype=F64)
    covs = q @ torch.diag_embed(lam) @ q.transpose(-1, -2)
    covs = 0.5 * (covs + covs.transpose(-1, -2))
    weights = 0.2 + torch.rand(k, generator=g, dtype=F64)
    return GaussianMixture(weights, means, covs)


CASES = [(d, name) for d in (2, 3) for name in PATHS]


def _points(flow: MixtureFlow, n: int, t: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return flow.sample(n, t, g).to(F64)


@pytest.mark.parametrize("d,name", CASES)
def test_score_matches_autograd_and_finite_differences(d, name):
    flow = MixtureFlow(random_mixture(d, 3, seed=d), PATHS[name])
    g = torch.Generator().manual_seed(7)
    for t in (0.1 + 0.8 * torch.rand(3, generator=g, dtype=F64)).tolist():
        x = _points(flow, 16, t, seed=11).requires_grad_(True)
        (auto,) = torch.autograd.grad(flow.log_prob(x, t).sum(), x)
        score = flow.score(x.detach(), t)
        torch.testing.assert_close(score, auto, rtol=1e-9, atol=1e-9)
        h, fd = 1e-5, torch.empty_like(score)
        for i in range(d):
            e = torch.zeros(d, dtype=F64)
            e[i] = h
            fd[:, i] = (flow.log_prob(x.detach() + e, t) - flow.log_prob(x.detach() - e, t)) / (
                2 * h
            )
        torch.testing.assert_close(score, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("d,name", CASES)
def test_log_prob_matches_marginal_mixture_and_sigma_zero_is_data(d, name):
    mix = random_mixture(d, 4, seed=10 + d)
    flow = MixtureFlow(mix, PATHS[name])
    x = _points(flow, 20, 0.4, seed=3)
    # GaussianMixture evaluates with Cholesky factors: an independent implementation
    torch.testing.assert_close(flow.log_prob(x, 0.4), flow.marginal(0.4).log_prob(x))
    torch.testing.assert_close(flow.score(x, 0.4), flow.marginal(0.4).score(x))
    if float(PATHS[name].sigma(0.0)) == 0.0:
        torch.testing.assert_close(flow.log_prob(x, 0.0), mix.log_prob(x))
        torch.testing.assert_close(flow.score(x, 0.0), mix.score(x))


@pytest.mark.parametrize("d,name", CASES)
def test_denoiser_is_tweedie(d, name):
    flow = MixtureFlow(random_mixture(d, 3, seed=20 + d), PATHS[name])
    for t in (0.05, 0.3, 0.7, 0.95):
        x = _points(flow, 32, t, seed=5)
        a, s = float(PATHS[name].alpha(t)), float(PATHS[name].sigma(t))
        tweedie = (x + s**2 * flow.score(x, t)) / a
        torch.testing.assert_close(flow.denoiser(x, t), tweedie, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("d,name", [(2, "vp_linear"), (3, "linear"), (2, "ve"), (3, "edm")])
def test_denoiser_matches_importance_sampling(d, name):
    """E[x0 | x_t = x] = E_{x0 ~ p0}[x0 w(x0)] / E[w(x0)], w = N(x; alpha x0, sigma^2 I)."""
    path = PATHS[name]
    flow = MixtureFlow(random_mixture(d, 3, seed=30 + d), path)
    g = torch.Generator().manual_seed(123)
    x0 = flow.mixture.sample(200_000, g).to(F64)
    t = 0.5
    a, s = float(path.alpha(t)), float(path.sigma(t))
    x = _points(flow, 6, t, seed=9)
    logw = -0.5 * ((x[:, None, :] - a * x0[None]) ** 2).sum(-1) / s**2  # (6, N)
    w = torch.softmax(logw, dim=-1)
    est = w @ x0
    # standard error of a self-normalised estimate: sqrt(sum w^2 (x0 - est)^2)
    se = torch.sqrt((w[..., None] ** 2 * (x0[None] - est[:, None]) ** 2).sum(1))
    ess = 1.0 / (w**2).sum(-1)
    assert (ess > 200).all(), ess
    err = (flow.denoiser(x, t) - est).abs()
    assert (err < 5 * se + 1e-6).all(), (err, se)


@pytest.mark.parametrize("name", list(PATHS))
def test_velocity_flow_of_a_gaussian_matches_closed_form(name):
    """For p0 = N(mu, C) the PF-ODE is linear; in eigen-coordinates of C each coordinate
    c_i = u_i^T (x - alpha mu) scales by the ratio of standard deviations:

        c_i(t) = sqrt((alpha(t)^2 lam_i + sigma(t)^2) / (alpha(T)^2 lam_i + sigma(T)^2)) c_i(T)

    (for VE, alpha = 1: sqrt((lam + sigma^2)/(lam + sigma_T^2))). Integrate from T = 1 down
    to a small t with torchdiffeq and compare."""
    path = PATHS[name]
    mix = random_mixture(3, 1, seed=40)
    flow = MixtureFlow(mix, path)
    t_end = 0.02
    x1 = _points(flow, 8, 1.0, seed=2)
    grid = torch.tensor([1.0, t_end], dtype=F64)
    # step_t: land on t_end instead of stepping past it (the velocity needs sigma > 0)
    kw = {"method": "dopri5", "rtol": 1e-8, "atol": 1e-8, "options": {"step_t": grid}}
    sol = torchdiffeq.odeint(lambda t, x: flow.velocity(x, t), x1, grid, **kw)[-1]
    lam, u = torch.linalg.eigh(mix.covs[0])
    mu = mix.means[0]

    def coords(x, t):
        return (x - float(path.alpha(t)) * mu) @ u

    def var(t):
        return float(path.alpha(t)) ** 2 * lam + float(path.sigma(t)) ** 2

    expected = coords(x1, 1.0) * torch.sqrt(var(t_end) / var(1.0))
    torch.testing.assert_close(coords(sol, t_end), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "d,name,t1,t0",
    [(2, "vp_linear", 0.9, 0.1), (2, "trigonometric", 0.95, 0.15), (3, "ve", 0.8, 0.2)],
)
def test_pf_ode_transports_marginals(d, name, t1, t0):
    """Samples of p_{t1} pushed by the PF-ODE to t0 have the mean and covariance of p_{t0}."""
    flow = MixtureFlow(random_mixture(d, 3, seed=50 + d), PATHS[name])
    n = 3000
    x1 = _points(flow, n, t1, seed=4)
    grid = torch.tensor([t1, t0], dtype=F64)
    x0 = torchdiffeq.odeint(
        lambda t, x: flow.velocity(x, t),
        x1,
        grid,
        method="dopri5",
        rtol=1e-6,
        atol=1e-6,
        options={"step_t": grid},
    )[-1]
    target = flow.marginal(t0)
    m, c = target.mean(), target.covariance()
    mean_err = (x0.mean(0) - m).abs()
    assert (mean_err < 4.5 * torch.sqrt(torch.diagonal(c) / n)).all(), mean_err
    xc = x0 - x0.mean(0)
    prods = xc[:, :, None] * xc[:, None, :]  # (n, d, d)
    cov_err = (prods.mean(0) - c).abs()
    assert (cov_err < 4.5 * prods.std(0) / math.sqrt(n) + 1e-9).all(), cov_err
    # the transport is not a no-op: the covariance moved far more than the error
    assert (torch.cov(x1.T) - c).abs().max() > 10 * cov_err.max()


@pytest.mark.parametrize("name", list(PATHS))
def test_sample_moments_match_marginal(name):
    flow = MixtureFlow(random_mixture(2, 3, seed=60), PATHS[name])
    n, t = 20_000, 0.3
    x = _points(flow, n, t, seed=8)
    target = flow.marginal(t)
    c = target.covariance()
    assert ((x.mean(0) - target.mean()).abs() < 4.5 * torch.sqrt(torch.diagonal(c) / n)).all()
    torch.testing.assert_close(torch.cov(x.T), c, rtol=0.05, atol=0.05 * float(c.abs().max()))


def test_per_sample_times_match_scalar_times():
    flow = MixtureFlow(random_mixture(3, 3, seed=70), VPLinear())
    g = torch.Generator().manual_seed(0)
    t = 0.1 + 0.8 * torch.rand(10, generator=g, dtype=F64)
    x = flow.sample(10, t, g).to(F64)
    for method in ("log_prob", "score", "denoiser", "velocity", "responsibilities"):
        fn = getattr(flow, method)
        batch = fn(x, t)
        rows = torch.cat([fn(x[i : i + 1], float(t[i])) for i in range(10)])
        torch.testing.assert_close(batch, rows, msg=method)


def test_responsibilities_sum_to_one_and_dtype_follows_x():
    flow = MixtureFlow(random_mixture(2, 4, seed=80), Linear())
    x32 = flow.sample(50, 0.5, torch.Generator().manual_seed(1))
    assert x32.dtype == torch.float32
    r = flow.responsibilities(x32, 0.5)
    assert r.shape == (50, 4) and r.dtype == torch.float32
    torch.testing.assert_close(r.sum(-1), torch.ones(50))
    for method in ("score", "denoiser", "velocity"):
        out = getattr(flow, method)(x32, 0.5)
        assert out.shape == (50, 2) and out.dtype == torch.float32
    assert flow.log_prob(x32, 0.5).shape == (50,)
    assert flow.log_prob(x32.double(), 0.5).dtype == F64


def test_far_away_points_are_stable():
    """logsumexp keeps scores finite where every component density underflows."""
    flow = MixtureFlow(random_mixture(2, 3, seed=90), VE(0.01, 5.0))
    x = torch.tensor([[300.0, -400.0], [1e3, 1e3]], dtype=F64)
    for t in (0.0, 0.5):
        assert torch.isfinite(flow.log_prob(x, t)).all()
        assert torch.isfinite(flow.score(x, t)).all()
        assert torch.isfinite(flow.denoiser(x, t)).all()


def test_bad_input_raises():
    flow = MixtureFlow(random_mixture(2, 2, seed=1), VPLinear())
    x = torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="sigma"):
        flow.velocity(x, 0.0)
    with pytest.raises(ValueError, match="x must be"):
        flow.score(torch.zeros(4, 3), 0.5)
    with pytest.raises(ValueError, match="t must be"):
        flow.score(x, torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="single time"):
        flow.marginal(torch.tensor([0.1, 0.2]))
