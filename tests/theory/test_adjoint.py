"""theory/adjoint.py: the sympy adjoint and the closed-form gradients of Gaussian data, against
independent numerics (the PF-ODE in t by dopri5, autograd of the map, finite differences)."""

from __future__ import annotations

import pytest
import sympy as sp
import torch

from pflow_explore import paths, solvers
from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.theory import adjoint as ta
from pflow_explore.theory.gaussian_flow import GaussianFlow
from pflow_explore.theory.mixtures import MixtureFlow

F64 = torch.float64


def test_derivation_checks():
    d = ta.scalar_adjoint()
    assert d["minus the VE PF-ODE"] == 0  # (1) is the VE flow with sigma = rho
    for label in ("check y_T", "check m", "check lambda"):
        assert d[label] == 0, label  # adjoint integrals = derivatives of the solution
    a_sol = d["adjoint solution"].rhs
    assert sp.simplify(a_sol.subs(ta.rho, ta.rho_e) - ta.g_sym) == 0  # a(rho_e) = g
    # the adjoint ODE holds for the solution (an independent differentiation)
    residual = a_sol.diff(ta.rho) + a_sol * ta.rho / (ta.lam + ta.rho**2)
    assert sp.simplify(residual) == 0


@pytest.mark.parametrize("path", [paths.VPLinear(), paths.NoiseLevel(), paths.VPCosine()])
def test_gaussian_eps_is_the_posterior_mean_of_the_noise(path):
    """eps = (x - alpha D) / sigma with D the exact denoiser of theory.mixtures (one component)."""
    gen = torch.Generator().manual_seed(3)
    for d, seed in ((2, 0), (4, 1)):
        flow = GaussianFlow.random(d, seed)
        eps = ta.GaussianEps.from_flow(flow, path)
        exact = MixtureFlow(GaussianMixture(torch.ones(1), flow.mean[None], flow.cov[None]), path)
        x = torch.randn(7, d, generator=gen, dtype=F64)
        for t in (0.1, 0.5, 0.9):
            a, s = float(path.alpha(t)), float(path.sigma(t))
            want = (x - a * exact.denoiser(x, t)) / s
            assert torch.allclose(eps(x, t), want, atol=1e-10), (d, t)
        shift = torch.randn(d, generator=gen, dtype=F64)
        moved = MixtureFlow(
            GaussianMixture(torch.ones(1), (flow.mean + shift)[None], flow.cov[None]), path
        )
        a, s = float(path.alpha(0.4)), float(path.sigma(0.4))
        want = (x - a * moved.denoiser(x, 0.4)) / s
        assert torch.allclose(eps(x, 0.4, shift), want, atol=1e-10)


def _random_case(seed: int) -> tuple[GaussianFlow, torch.Generator, int]:
    d = 2 + seed % 3
    return GaussianFlow.random(d, 100 + seed), torch.Generator().manual_seed(seed), d


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_flow_map_matches_dopri5_in_t(seed):
    """The closed form in rho against the PF-ODE in the path's own time, dx/dt from eps
    (paths.Path.velocity_from_noise), solved by dopri5: no rho anywhere in the reference."""
    flow, gen, d = _random_case(seed)
    for path, t_T, t_e in ((paths.VPLinear(), 1.0, 1e-3), (paths.NoiseLevel(), 30.0, 1e-3)):
        eps = ta.GaussianEps.from_flow(flow, path)
        rho = lambda t, path=path: float(path.sigma(t) / path.alpha(t))  # noqa: E731
        x_T = float(path.sigma(t_T)) * torch.randn(20, d, generator=gen, dtype=F64)
        field = lambda x, t, path=path, eps=eps: path.velocity_from_noise(x, eps(x, t), t)  # noqa: E731
        ref = solvers.odeint(field, x_T, [t_T, t_e], "dopri5", rtol=1e-10, atol=1e-10).x
        got = ta.exact_flow_map(
            eps, x_T, rho(t_T), float(path.alpha(t_T)), rho(t_e), float(path.alpha(t_e))
        )
        assert torch.allclose(got, ref, atol=1e-6, rtol=1e-6), (seed, path)
        # and the same map as the existing VE solution in sigma = rho
        ve = flow.ve_solution(x_T / float(path.alpha(t_T)), rho(t_T), [rho(t_e)])[0]
        assert torch.allclose(got, float(path.alpha(t_e)) * ve, atol=1e-10)


class _Leaves:
    """A spectrum whose mean and eigenvalues are autograd leaves."""

    def __init__(self, flow: GaussianFlow) -> None:
        self.mean = flow.mean.clone().requires_grad_(True)
        self.eigenvalues = flow.eigenvalues.clone().requires_grad_(True)
        self.eigenvectors = flow.eigenvectors


def _loss(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (w * x).sum() + 0.5 * (x**2).sum()  # dL/dx = w + x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_gradients_match_autograd_and_finite_differences(seed):
    flow, gen, d = _random_case(seed)
    u = lambda: float(torch.rand((), generator=gen, dtype=F64))  # noqa: E731
    rho_T, rho_e, alpha_T, alpha_e = 2 + 20 * u(), 0.3 * u(), 0.1 + u(), 0.5 + 0.5 * u()
    n = 9
    x_T = alpha_T * rho_T * torch.randn(n, d, generator=gen, dtype=F64)
    c = 0.5 * torch.randn(n, d, generator=gen, dtype=F64)
    w = torch.randn(n, d, generator=gen, dtype=F64)
    args = (rho_T, alpha_T, rho_e, alpha_e)

    leaves = _Leaves(flow)
    x_leaf, c_leaf = x_T.clone().requires_grad_(True), c.clone().requires_grad_(True)
    x_e = ta.exact_flow_map(leaves, x_leaf, *args, condition=c_leaf)
    auto = torch.autograd.grad(_loss(x_e, w), (x_leaf, c_leaf, leaves.mean, leaves.eigenvalues))
    exact = ta.exact_gradients(flow, x_T, (w + x_e).detach(), *args, condition=c)
    assert torch.allclose(exact.x_T, auto[0], atol=1e-10)
    assert torch.allclose(exact.mean_per_row, auto[1], atol=1e-10)
    assert torch.allclose(exact.mean, auto[2], atol=1e-10)
    assert torch.allclose(exact.eigenvalues, auto[3], atol=1e-9)

    def loss_at(eigenvalues: torch.Tensor, mean: torch.Tensor) -> float:
        spec = GaussianFlow.from_spectrum(mean, eigenvalues, flow.eigenvectors)
        return float(_loss(ta.exact_flow_map(spec, x_T, *args, condition=c), w))

    h = 1e-6
    for k in range(d):
        e = torch.zeros(d, dtype=F64)
        e[k] = h
        fd_lam = loss_at(flow.eigenvalues + e, flow.mean) - loss_at(flow.eigenvalues - e, flow.mean)
        fd_mu = loss_at(flow.eigenvalues, flow.mean + e) - loss_at(flow.eigenvalues, flow.mean - e)
        assert fd_lam / (2 * h) == pytest.approx(float(exact.eigenvalues[k]), rel=1e-6, abs=1e-7)
        assert fd_mu / (2 * h) == pytest.approx(float(exact.mean[k]), rel=1e-6, abs=1e-7)
    # the sign matters: the flipped formulas are far off (the checks above could fail)
    assert not torch.allclose(-exact.eigenvalues, auto[3], atol=1e-3)
    assert not torch.allclose(-exact.mean, auto[2], atol=1e-3)


def test_flow_gain_limits_and_errors():
    lam = torch.tensor([0.3, 1.0, 4.0], dtype=F64)
    assert torch.allclose(ta.flow_gain(lam, 2.0, 2.0), torch.ones(3, dtype=F64))  # no flow
    assert torch.allclose(ta.flow_gain(lam, 1e6), torch.zeros(3, dtype=F64), atol=1e-5)
    assert torch.allclose(ta.gain_derivative(lam, 2.0, 2.0), torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="rho_end <= rho_T"):
        ta.flow_gain(lam, 1.0, 2.0)
    with pytest.raises(ValueError, match="eigenvalues"):
        ta.flow_gain(-lam, 1.0)
    flow = GaussianFlow.random(3, 0)
    with pytest.raises(ValueError, match="must match x_T"):
        ta.exact_gradients(flow, torch.zeros(4, 3, dtype=F64), torch.zeros(5, 3, dtype=F64), 1.0)
    with pytest.raises(ValueError, match=r"x must be \(n, 3\)"):
        ta.GaussianEps.from_flow(flow)(torch.zeros(4, 2, dtype=F64), 1.0)
    with pytest.raises(ValueError, match="positive|> 0|eigenvalues"):
        ta.GaussianEps(flow.mean, -flow.eigenvalues, flow.eigenvectors)
