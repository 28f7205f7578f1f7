"""Tests for pflow_explore.paths against autograd, closed identities and ODE integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from pflow_explore.paths import EDM, PATHS, VE, VPCosine, VPLinear, get_path, karras_sigmas

RNG = np.random.default_rng(0)
TIMES = RNG.uniform(0.03, 0.97, size=7).tolist()


@pytest.mark.parametrize("name", list(PATHS))
@pytest.mark.parametrize("t", TIMES)
def test_derivatives_match_autograd(name, t):
    path = PATHS[name]()
    tt = torch.tensor(t, dtype=torch.float64, requires_grad=True)
    for value, deriv in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma)):
        out = value(tt)
        # constant coefficients (alpha = 1 for VE/EDM) carry no graph: their derivative is 0
        grad = torch.autograd.grad(out, tt)[0] if out.requires_grad else torch.zeros_like(tt)
        assert torch.allclose(deriv(t), grad, rtol=1e-9, atol=1e-12), (name, value.__name__)


@pytest.mark.parametrize("name", list(PATHS))
def test_coefficients_broadcast_over_tensor_t(name):
    path = PATHS[name]()
    t = torch.tensor(TIMES, dtype=torch.float64)
    for fn in (path.alpha, path.sigma, path.d_alpha, path.d_sigma):
        batch = fn(t)
        assert batch.shape == t.shape
        assert torch.allclose(batch, torch.stack([fn(float(s)) for s in t]))


@pytest.mark.parametrize("name", ["vp_linear", "vp_cosine", "trigonometric"])
def test_variance_preserving(name):
    path = PATHS[name]()
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert torch.allclose(path.alpha(t) ** 2 + path.sigma(t) ** 2, torch.ones_like(t), atol=1e-12)


@pytest.mark.parametrize("name", list(PATHS))
def test_endpoints_and_log_snr_decreasing(name):
    path = PATHS[name]()
    assert float(path.alpha(0.0)) == pytest.approx(1.0)
    t = torch.linspace(0.02, 0.98, 50, dtype=torch.float64)
    assert (path.log_snr(t).diff() < 0).all()


def test_karras_sigmas():
    n, smin, smax, rho = 18, 0.002, 80.0, 7.0
    sig = karras_sigmas(n, smin, smax, rho)
    assert sig.shape == (n + 1,)
    assert float(sig[0]) == pytest.approx(smax, rel=1e-12)
    assert float(sig[n - 1]) == pytest.approx(smin, rel=1e-12)
    assert float(sig[-1]) == 0.0
    assert (sig.diff() < 0).all()
    # the EDM path on a uniform t grid is the same ramp
    edm = EDM(smin, smax, rho)
    grid = torch.linspace(1, 0, n, dtype=torch.float64)
    assert torch.allclose(edm.sigma(grid), sig[:-1], rtol=1e-10)


def test_karras_sigmas_rejects_bad_input():
    with pytest.raises(ValueError, match="n >= 2"):
        karras_sigmas(1)
    with pytest.raises(ValueError, match="sigma_min"):
        karras_sigmas(10, sigma_min=1.0, sigma_max=0.5)


def test_edm_t_of_sigma_inverts_sigma():
    edm = EDM()
    t = torch.tensor(TIMES + [0.0, 1.0], dtype=torch.float64)
    assert torch.allclose(edm.t_of_sigma(edm.sigma(t)), t, atol=1e-12)
    s = torch.tensor([0.002, 0.1, 1.0, 17.0, 80.0], dtype=torch.float64)
    assert torch.allclose(edm.sigma(edm.t_of_sigma(s)), s, rtol=1e-12)


@pytest.mark.parametrize("name", list(PATHS))
def test_drift_and_diffusion_reproduce_marginal_moments(name):
    """x_t = alpha x0 + sigma z with E x0 = m0, Var x0 = v0 has mean alpha m0 and
    variance alpha^2 v0 + sigma^2; the SDE dx = f x dt + g dW gives dm/dt = f m and
    dVar/dt = 2 f Var + g^2. Integrate those from t0 and compare."""
    path = PATHS[name]()
    m0, v0 = 1.3, 0.7
    t0, t1 = 0.02, 0.95

    def mean_var(t):
        a, s = float(path.alpha(t)), float(path.sigma(t))
        return np.array([a * m0, a**2 * v0 + s**2])

    def rhs(t, y):
        f, g2 = (float(c) for c in path.drift_and_diffusion(t))
        return [f * y[0], 2 * f * y[1] + g2]

    sol = solve_ivp(rhs, (t0, t1), mean_var(t0), t_eval=[0.3, 0.6, t1], rtol=1e-10, atol=1e-12)
    assert sol.success
    for t, y in zip(sol.t, sol.y.T, strict=True):
        np.testing.assert_allclose(y, mean_var(t), rtol=1e-6, atol=1e-8)


def test_vp_linear_beta_is_minus_twice_dlog_alpha():
    path = VPLinear()
    t = torch.tensor(TIMES, dtype=torch.float64)
    assert torch.allclose(path.beta(t), -2 * path.d_alpha(t) / path.alpha(t))
    # and for VP paths the diffusion is g^2 = beta
    f, g2 = path.drift_and_diffusion(t)
    assert torch.allclose(g2, path.beta(t))
    assert torch.allclose(f, -0.5 * path.beta(t))


def test_velocity_and_score_from_denoiser_on_a_pair():
    """For a single data point x0 (D = x0), the PF-ODE velocity is d/dt x_t for the pair
    and the score is that of N(alpha x0, sigma^2 I)."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64)
    for name in PATHS:
        path = PATHS[name]()
        t = torch.rand(5, generator=g, dtype=torch.float64) * 0.9 + 0.05
        x = path.sample(x0, t, z)
        v = path.velocity_from_denoiser(x, x0, t)
        expected = path.d_alpha(t)[:, None] * x0 + path.d_sigma(t)[:, None] * z
        assert torch.allclose(v, expected, atol=1e-10), name
        s = path.score_from_denoiser(x, x0, t)
        assert torch.allclose(s, -z / path.sigma(t)[:, None], atol=1e-10), name
        eps_v = path.velocity_from_noise(x, z, t)
        assert torch.allclose(eps_v, expected, atol=1e-8), name


def test_get_path():
    assert isinstance(get_path("ve", sigma_max=10.0), VE)
    assert get_path("ve", sigma_max=10.0).sigma_max == 10.0
    assert isinstance(get_path("vp_cosine"), VPCosine)
    with pytest.raises(ValueError, match="valid paths"):
        get_path("nope")


def test_ve_endpoints():
    ve = VE(0.01, 50.0)
    assert float(ve.sigma(0.0)) == pytest.approx(0.01)
    assert float(ve.sigma(1.0)) == pytest.approx(50.0)
    assert math.isclose(float(ve.alpha(0.5)), 1.0)
