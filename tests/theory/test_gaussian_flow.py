"""Tests for pflow_explore.theory.gaussian_flow against independent numerics.

The closed forms are checked against adaptive ODE solves (scipy DOP853, rtol = atol = 1e-10)
of PF-ODEs written independently: dx/dsigma = sigma (Sigma + sigma^2 I)^{-1} (x - mu) with a
dense linear solve, and MixtureFlow's velocity (1-component mixture) on VPLinear and EDM
paths. Denoisers against MixtureFlow; the sympy derivations against hand-typed card formulas
and against a separate posterior-mean derivation.
"""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
from scipy.integrate import solve_ivp

from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.paths import EDM, VE, VPLinear
from pflow_explore.theory import MixtureFlow
from pflow_explore.theory import gaussian_flow as gf
from pflow_explore.theory.gaussian_flow import GaussianFlow, rotation_residual

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)


def random_flow(d: int, seed: int, eigenvalues: torch.Tensor | None = None) -> GaussianFlow:
    """Random mean, random orthogonal U, eigenvalues log-uniform in [0.01, 4] unless given."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    if eigenvalues is None:
        eigenvalues = torch.exp(math.log(0.01) + math.log(400) * torch.rand(d, generator=g))
    cov = q @ torch.diag(eigenvalues.to(F64)) @ q.T
    return GaussianFlow(mean, 0.5 * (cov + cov.T))


def mixture_of(flow: GaussianFlow) -> GaussianMixture:
    return GaussianMixture(torch.ones(1), flow.mean[None], flow.cov[None])


def solve(f, x0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Reference solution of dx/dt = f(x (n, d), t) on the grid times (m,): (m, n, d)."""
    shape = x0.shape

    def rhs(t, y):
        x = torch.from_numpy(y.reshape(shape))
        return f(x, torch.tensor(t, dtype=F64)).numpy().ravel()

    ts = times.numpy()
    out = solve_ivp(rhs, (ts[0], ts[-1]), x0.numpy().ravel(), "DOP853", t_eval=ts, **TOL)
    assert out.success, out.message
    return torch.from_numpy(out.y.T.reshape(len(ts), *shape))


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over points of |a - b| / |b| (norms over the last axis)."""
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


# ---- closed form vs adaptive ODE solves ---------------------------------------------------
@pytest.mark.parametrize("d", [2, 8, 64])
def test_ve_solution_matches_numerical_pf_ode(d):
    flow = random_flow(d, seed=d)
    g = torch.Generator().manual_seed(100 + d)
    sigma_T = float(2 + 78 * torch.rand((), generator=g, dtype=F64))
    x_T = flow.sample(6, g) + sigma_T * torch.randn(6, d, generator=g, dtype=F64)
    sigmas = torch.logspace(math.log10(sigma_T), -3, 40, dtype=F64)
    cov, mu, eye = flow.cov, flow.mean, torch.eye(d, dtype=F64)

    def dx_dsigma(x, s):  # written from the PF-ODE, with a dense solve (no eigenbasis)
        return s * torch.linalg.solve(cov + s**2 * eye, (x - mu).T).T

    ref = solve(dx_dsigma, x_T, sigmas)
    closed = flow.ve_solution(x_T, sigma_T, sigmas)
    assert closed.shape == (40, 6, d)
    assert max_rel_err(closed, ref) <= 1e-6
    torch.testing.assert_close(flow.ve_velocity(x_T, sigma_T), dx_dsigma(x_T, sigma_T))


def test_ve_solution_matches_mixture_flow_on_edm_path():
    flow, path = random_flow(8, seed=3), EDM(0.002, 80.0)
    g = torch.Generator().manual_seed(5)
    times = torch.linspace(1.0, 0.05, 25, dtype=F64)
    sigmas = path.sigma(times)
    x_T = flow.sample(5, g) + sigmas[0] * torch.randn(5, 8, generator=g, dtype=F64)
    ref = solve(MixtureFlow(mixture_of(flow), path).velocity, x_T, times)
    assert max_rel_err(flow.ve_solution(x_T, sigmas[0], sigmas), ref) <= 1e-6


@pytest.mark.parametrize("d", [2, 8, 64])
def test_vp_solution_matches_numerical_pf_ode(d):
    flow, path = random_flow(d, seed=10 + d), VPLinear()
    mix = MixtureFlow(mixture_of(flow), path)
    g = torch.Generator().manual_seed(20 + d)
    x_T = mix.sample(6, 1.0, g).to(F64)
    times = torch.linspace(1.0, 1e-3, 30, dtype=F64)
    abars = path.alpha(times) ** 2
    ref = solve(mix.velocity, x_T, times)
    closed = flow.vp_solution(x_T, abars[0], abars)
    assert abars[0] > 0  # abar_T kept, not set to 0
    assert max_rel_err(closed, ref) <= 1e-6
    # dx/dabar times dabar/dt is the velocity in t
    t = torch.tensor(0.4, dtype=F64)
    dabar_dt = 2 * path.alpha(t) * path.d_alpha(t)
    torch.testing.assert_close(
        flow.vp_velocity(x_T, path.alpha(t) ** 2) * dabar_dt, mix.velocity(x_T, t)
    )


def test_vp_solution_exact_on_a_discrete_sampler_grid():
    """A DDPM grid (1000 linear betas, 25 steps): the closed form on the grid's own abar
    values equals the continuous PF-ODE solution at those abar values (here reached by
    integrating VPLinear's ODE up to the times with the same abar)."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    abar_all = torch.cumprod(1 - betas, 0)
    abars = abar_all[torch.linspace(999, 0, 25).round().long()]
    path = VPLinear()
    # invert VPLinear: log abar = -t^2 (b_max - b_min)/2 - t b_min
    qa, qb = 0.5 * (path.beta_max - path.beta_min), path.beta_min
    times = (-qb + torch.sqrt(qb**2 - 4 * qa * torch.log(abars))) / (2 * qa)
    torch.testing.assert_close(path.alpha(times) ** 2, abars, rtol=1e-12, atol=0)
    flow = random_flow(8, seed=4)
    mix = MixtureFlow(mixture_of(flow), path)
    g = torch.Generator().manual_seed(6)
    x_T = math.sqrt(abars[0]) * flow.sample(5, g) + torch.sqrt(1 - abars[0]) * torch.randn(
        5, 8, generator=g, dtype=F64
    )
    ref = solve(mix.velocity, x_T, times)
    assert max_rel_err(flow.vp_solution(x_T, abars[0], abars), ref) <= 1e-6


# ---- denoisers, feature share, perturbation gain -----------------------------------------
@pytest.mark.parametrize("d", [2, 8, 64])
def test_denoisers_match_mixture_flow(d):
    flow = random_flow(d, seed=30 + d)
    g = torch.Generator().manual_seed(d)
    x = 3 * torch.randn(12, d, generator=g, dtype=F64)
    t = 0.05 + 0.9 * torch.rand(12, generator=g, dtype=F64)  # one time per row
    ve, vp = VE(0.01, 50.0), VPLinear()
    ref_ve = MixtureFlow(mixture_of(flow), ve).denoiser(x, t)
    torch.testing.assert_close(flow.ve_denoiser(x, ve.sigma(t)), ref_ve, **TOL)
    ref_vp = MixtureFlow(mixture_of(flow), vp).denoiser(x, t)
    torch.testing.assert_close(flow.vp_denoiser(x, vp.alpha(t) ** 2), ref_vp, **TOL)


def test_feature_share_is_half_power_at_sqrt_lambda_and_matches_trajectory():
    flow = random_flow(8, seed=7)
    shares = flow.feature_share(flow.eigenvalues.sqrt())  # (d, d): row j at sigma_j
    assert shares.shape == (8, 8)
    torch.testing.assert_close(torch.diagonal(shares), torch.full((8,), 0.5**0.5, dtype=F64))
    # meaning: along a numerically solved trajectory, the denoiser's coordinate along u_k
    # is f_k(sigma) times the trajectory's end coordinate
    g = torch.Generator().manual_seed(8)
    sigmas = torch.tensor([20.0, 3.0, 1.0, 0.3, 0.1, 1e-5], dtype=F64)
    x_T = flow.sample(4, g) + sigmas[0] * torch.randn(4, 8, generator=g, dtype=F64)
    cov, mu, eye = flow.cov, flow.mean, torch.eye(8, dtype=F64)
    traj = solve(lambda x, s: s * torch.linalg.solve(cov + s**2 * eye, (x - mu).T).T, x_T, sigmas)
    end = flow.to_eigen(traj[-1])
    den = MixtureFlow(mixture_of(flow), VE(1e-6, 50.0))
    for s, x in zip(sigmas[:-1], traj[:-1], strict=True):
        t = torch.log(s / 1e-6) / math.log(50.0 / 1e-6)  # VE path time of this sigma
        measured = flow.to_eigen(den.denoiser(x, t)) / end
        expected = flow.feature_share(s).expand_as(measured)
        torch.testing.assert_close(measured, expected, rtol=1e-6, atol=1e-8)


def test_perturbation_gain_matches_finite_difference_of_numerical_flow():
    d = 8
    flow, eps = random_flow(d, seed=9), 1e-3
    g = torch.Generator().manual_seed(10)
    cov, mu, eye = flow.cov, flow.mean, torch.eye(d, dtype=F64)

    def dx_dsigma(x, s):
        return s * torch.linalg.solve(cov + s**2 * eye, (x - mu).T).T

    for sigma_t in (5.0, 0.5, 0.05):
        x = flow.sample(1, g) + sigma_t * torch.randn(1, d, generator=g, dtype=F64)
        kicked = torch.cat([x, x + eps * flow.eigenvectors.T])  # row k + 1: kick along u_k
        ends = solve(dx_dsigma, kicked, torch.tensor([sigma_t, 1e-5], dtype=F64))[-1]
        delta = flow.to_eigen(ends[1:]) - flow.to_eigen(ends[:1])  # (k, coordinate)
        gain = flow.perturbation_gain(sigma_t)
        torch.testing.assert_close(torch.diagonal(delta) / eps, gain, rtol=1e-6, atol=1e-9)
        off = delta - torch.diag(torch.diagonal(delta))  # a kick stays on its own axis
        assert off.abs().max() <= 1e-8
    # closed-form kicks, too
    x = flow.sample(1, g) + 2.0 * torch.randn(1, d, generator=g, dtype=F64)
    kicked = torch.cat([x, x + eps * flow.eigenvectors.T])
    ends = flow.ve_solution(kicked, 2.0, [0.0])[0]
    measured = (flow.to_eigen(ends[1:]) - flow.to_eigen(ends[:1])).diagonal() / eps
    torch.testing.assert_close(measured, flow.perturbation_gain(2.0))


# ---- sympy derivations ----------------------------------------------------------------------
def is_zero(expr: sp.Expr) -> bool:
    return sp.simplify(expr) == 0


def same_root(expr: sp.Expr, card: sp.Expr) -> bool:
    """expr == card for two positive square-root forms: equal squares, equal at one point
    (sympy will not merge sqrt(a)/sqrt(b) into sqrt(a/b) without knowing a, b > 0)."""
    point = {gf.lam: 0.7, gf.abar: 0.3, gf.abar_T: 0.01, gf.c_T: 1.3}
    return is_zero(expr**2 - card**2) and abs(float((expr - card).subs(point))) < 1e-14


def test_sympy_solutions_solve_their_odes_and_match_the_card():
    lam, s, sT, a, aT, cT = gf.lam, gf.sigma, gf.sigma_T, gf.abar, gf.abar_T, gf.c_T
    ve = gf.pf_ode_eigen_ve()
    sol = ve.result.rhs
    ode = ve["PF-ODE"]
    assert is_zero(ode.rhs.subs(gf.c(s), sol) - sp.diff(sol, s))
    assert is_zero(sol.subs(s, sT) - cT)
    assert is_zero(sol - cT * sp.sqrt((lam + s**2) / (lam + sT**2)))
    assert is_zero(ode.rhs - s * gf.c(s) / (lam + s**2))
    vp = gf.pf_ode_eigen_vp()
    sol = vp.result.rhs
    assert is_zero(vp["PF-ODE"].rhs.subs(gf.c(a), sol) - sp.diff(sol, a))
    assert is_zero(sol.subs(a, aT) - cT)
    assert same_root(sol, cT * sp.sqrt((1 + (lam - 1) * a) / (1 + (lam - 1) * aT)))


def test_sympy_denoisers_equal_gaussian_posterior_means():
    """Independent derivation: maximise the Gaussian posterior of e = u_k^T (x0 - mu)."""
    lam, s, a, c = gf.lam, gf.sigma, gf.abar, gf.c_sym
    e = sp.Symbol("e", real=True)
    for alpha, noise, derivation in (
        (1, s**2, gf.gaussian_denoiser_eigen()),
        (sp.sqrt(a), 1 - a, gf.gaussian_denoiser_eigen_vp()),
    ):
        log_post = -(e**2) / (2 * lam) - (c - alpha * e) ** 2 / (2 * noise)
        (mode,) = sp.solve(sp.diff(log_post, e), e)
        assert is_zero(derivation.result.rhs - mode)


def test_sympy_feature_share_gain_and_rotation():
    lam, s, st, cT = gf.lam, gf.sigma, gf.sigma_t, gf.c_T
    th, thT, a, aT = gf.theta, gf.theta_T, gf.abar, gf.abar_T
    f = gf.feature_share().result.rhs
    assert is_zero(f - sp.sqrt(lam / (lam + s**2)))
    assert is_zero(f.subs(s, sp.sqrt(lam)) - 1 / sp.sqrt(2))
    assert gf.feature_share()["f = 1/sqrt(2) at"].rhs == sp.sqrt(lam)
    gain = gf.perturbation_gain().result.rhs
    assert is_zero(gain - sp.sqrt(lam / (lam + st**2)))
    rot = gf.rotation_form()
    vp = gf.pf_ode_eigen_vp().result.rhs
    on_circle = vp.subs({a: sp.sin(th) ** 2, aT: sp.sin(thT) ** 2})
    assert is_zero(sp.expand_trig(on_circle - rot.result.rhs))
    card = cT * sp.sqrt(sp.cos(th) ** 2 + lam * sp.sin(th) ** 2)  # exact when abar_T = 0
    assert is_zero(rot.result.rhs.subs(thT, 0) - card)
    assert not is_zero(rot.result.rhs - card)  # ... and only then
    for derivation in (gf.pf_ode_eigen_ve(), rot, gf.feature_share()):
        assert r"\begin{aligned}" in derivation._repr_latex_() and derivation.title in str(
            derivation
        )


# ---- rotation residual -------------------------------------------------------------------
def test_rotation_residual_definition_on_a_known_path():
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(6, 3, generator=g, dtype=F64))
    s = torch.linspace(0, 1, 9, dtype=F64)
    a, b, h = torch.cos(s), torch.sin(s), 0.3 * torch.sin(math.pi * s)  # h = 0 at both ends
    traj = (a[:, None] * q[:, 0] + b[:, None] * q[:, 1] + h[:, None] * q[:, 2])[:, None, :]
    expected = h.abs() / torch.sqrt(a**2 + b**2 + h**2)
    torch.testing.assert_close(rotation_residual(traj)[:, 0], expected)
    shifted = traj + 5.0  # a centre moves the plane; passing it undoes that
    center = torch.full((6,), 5.0, dtype=F64)
    torch.testing.assert_close(rotation_residual(shifted, center), rotation_residual(traj))


def test_rotation_residual_zero_for_two_valued_spectrum_positive_otherwise():
    d = 8
    two = torch.tensor([2.0] * 3 + [0.05] * 5, dtype=F64)
    g = torch.Generator().manual_seed(2)
    sigmas = torch.logspace(1, -3, 30, dtype=F64)
    abars = torch.linspace(1e-3, 0.999, 30, dtype=F64)
    for spectrum, check in ((two, lambda r: r.max() <= 1e-10), (None, lambda r: r.max() > 1e-3)):
        flow = random_flow(d, seed=12, eigenvalues=spectrum)
        x_T = flow.sample(5, g) + 10.0 * torch.randn(5, d, generator=g, dtype=F64)
        res_ve = flow.rotation_residual(flow.ve_solution(x_T, 10.0, sigmas))
        x_T = torch.randn(5, d, generator=g, dtype=F64)
        res_vp = flow.rotation_residual(flow.vp_solution(x_T, abars[0], abars), abars)
        assert res_ve.shape == res_vp.shape == (30, 5)
        assert check(res_ve) and check(res_vp)


# ---- pixel range, construction, dtypes, bad input ------------------------------------------
def test_rescale_trap_from_unit_to_symmetric_range():
    g = torch.Generator().manual_seed(3)
    x01 = torch.rand(300, 5, generator=g, dtype=F64) ** 2  # data in [0, 1]
    flow01 = GaussianFlow.from_samples(x01)
    flow_pm = GaussianFlow.from_samples(2 * x01 - 1)
    torch.testing.assert_close(flow_pm.mean, 2 * x01.mean(0) - 1)
    torch.testing.assert_close(flow_pm.eigenvalues, 4 * flow01.eigenvalues)
    resc = flow01.rescaled(2.0, -1.0)
    torch.testing.assert_close(resc.mean, flow_pm.mean)
    torch.testing.assert_close(resc.eigenvalues, 4 * flow01.eigenvalues)
    torch.testing.assert_close(resc.cov, flow_pm.cov)
    # the flows agree once the noise level is rescaled too: sigma -> 2 sigma
    x_T = torch.randn(4, 5, generator=g, dtype=F64)
    sigmas = torch.tensor([3.0, 0.5, 0.01], dtype=F64)
    torch.testing.assert_close(
        resc.ve_solution(2 * x_T - 1, 6.0, 2 * sigmas),
        2 * flow01.ve_solution(x_T, 3.0, sigmas) - 1,
    )


def test_from_samples_handles_zero_variance_pixels():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(50, 6, generator=g, dtype=F64)
    x[:, 0] = -1.0  # a border pixel that never changes
    flow = GaussianFlow.from_samples(x, shrinkage=1e-3)
    assert flow.eigenvalues.min() > 0
    sample_cov = torch.cov(x.T)
    torch.testing.assert_close(
        flow.cov, 0.999 * sample_cov + 1e-3 * torch.trace(sample_cov) / 6 * torch.eye(6, dtype=F64)
    )
    with pytest.raises(ValueError, match="shrinkage"):
        GaussianFlow.from_samples(x, shrinkage=0.0)


def test_eigen_roundtrip_dtype_and_spectrum():
    flow = random_flow(5, seed=5)
    assert (flow.eigenvalues.diff() <= 0).all()  # descending
    torch.testing.assert_close(flow.eigenvectors.T @ flow.eigenvectors, torch.eye(5, dtype=F64))
    x = torch.randn(3, 5, dtype=F64)
    torch.testing.assert_close(flow.from_eigen(flow.to_eigen(x)), x)
    x32 = x.float()
    out = flow.ve_solution(x32, 2.0, [1.0, 0.0])
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, flow.ve_solution(x, 2.0, [1.0, 0.0]).float())
    assert flow.ve_denoiser(x32, 0.5).dtype == torch.float32
    assert flow.feature_share(torch.tensor([1.0], dtype=torch.float32)).dtype == torch.float32
    same = GaussianFlow.from_spectrum(
        flow.mean, flow.eigenvalues.flip(0), flow.eigenvectors.flip(1)
    )
    torch.testing.assert_close(same.cov, flow.cov)


def test_bad_input_raises_clear_errors():
    flow = random_flow(3, seed=6)
    x = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="positive definite"):
        GaussianFlow(torch.zeros(2), torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        GaussianFlow(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"cov must be \(3, 3\)"):
        GaussianFlow(torch.zeros(3), torch.eye(2))
    with pytest.raises(ValueError, match="sigmas"):
        flow.ve_solution(x, 1.0, [0.5, -0.1])
    with pytest.raises(ValueError, match="abar_T"):
        flow.vp_solution(x, 1.5, [0.5])
    with pytest.raises(ValueError, match="abar"):
        flow.vp_velocity(x, 0.0)
    with pytest.raises(ValueError, match=r"x must be \(n, 3\)"):
        flow.ve_denoiser(torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="a must be"):
        flow.rescaled(0.0)
    with pytest.raises(ValueError, match="trajectory"):
        rotation_residual(torch.zeros(1, 2, 3))
