"""Tests for pflow_explore.theory.linear_sde against independent numerics.

- the sympy derivation against hand-typed card formulas and against the covariance ODE
  dS/dt = -B S - S B^T + 2D integrated to stationarity (scipy DOP853), on random parameters;
- scipy's Lyapunov solve against that ODE and its own residual;
- the EPR trace formula against Monte Carlo over exact Gaussian samples (4 standard errors);
- the spring-network EPR: the card's modal formula against the full 2N x 2N Lyapunov solve on
  rings (N = 8..16) and a periodic lattice, whose Laplacian spectra are typed in analytically;
- div v = 0 and v . s = 0 for random stable linear systems (not only AOUPs);
- the g-part estimators from a score, fed exact scores of exact samples, by Monte Carlo.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.integrate import solve_ivp

from pflow_explore.datasets.particles import lattice_laplacian, ring_laplacian
from pflow_explore.theory import linear_sde as ls


def random_aoup(seed: int) -> tuple[float, float, float, float]:
    rng = np.random.default_rng(seed)
    A, v0, gamma, eps = rng.uniform(0.2, 3.0, size=4)
    return float(A), float(v0), float(gamma), float(eps)


def covariance_ode(B: np.ndarray, D: np.ndarray, t_end: float) -> np.ndarray:
    """S(t_end) of dS/dt = -B S - S B^T + 2D from S(0) = 0 (independent of any Lyapunov solver)."""
    n = B.shape[0]

    def rhs(_t, s):
        S = s.reshape(n, n)
        return (-B @ S - S @ B.T + 2 * D).ravel()

    sol = solve_ivp(rhs, (0, t_end), np.zeros(n * n), method="DOP853", rtol=1e-11, atol=1e-12)
    return sol.y[:, -1].reshape(n, n)


def card_trapped(A, v0, gamma, eps):
    S = np.array([[(eps + v0**2 / (A + gamma)) / A, v0 / (A + gamma)], [v0 / (A + gamma), 1.0]])
    epr = gamma * v0**2 / (eps * (A + gamma))
    epr_g = A * gamma * v0**2 / (eps * (A + gamma) ** 2 + gamma * v0**2)
    return S, epr, epr_g


def test_derivation_steps_reduce_to_the_card_forms():
    d = ls.derivation_trapped_aoup()
    assert d["S minus paper's form"] == sp.zeros(3, 1)
    assert d["EPR minus paper's form"] == 0
    assert d["EPR_g minus paper's form"] == 0
    assert d["div v: x-part, g-part, total"][2] == 0
    assert d["div v: x-part, g-part, total"][0] != 0  # the parts are not separately zero
    assert sp.simplify(d["EPR_g as eps -> 0"].rhs - ls.A_s) == 0
    assert "EPR" in d._repr_latex_() and "Lyapunov" in str(d)


@pytest.mark.parametrize("seed", range(4))
def test_trapped_aoup_formulas_vs_ode_and_card(seed):
    A, v0, gamma, eps = random_aoup(seed)
    B = np.array([[A, -v0], [0.0, gamma]])
    D = np.diag([eps, gamma])
    S_ode = covariance_ode(B, D, t_end=40 / min(A, gamma))
    S_card, epr_card, epr_g_card = card_trapped(A, v0, gamma, eps)
    np.testing.assert_allclose(ls.trapped_aoup_covariance(A, v0, gamma, eps), S_ode, rtol=1e-8)
    np.testing.assert_allclose(ls.trapped_aoup_covariance(A, v0, gamma, eps), S_card, rtol=1e-12)
    S = ls.lyapunov_covariance(B, D)
    np.testing.assert_allclose(S, S_ode, rtol=1e-8)
    np.testing.assert_allclose(B @ S + S @ B.T, 2 * D, atol=1e-12)
    assert ls.trapped_aoup_epr(A, v0, gamma, eps, dim=3) == pytest.approx(3 * epr_card, rel=1e-12)
    assert ls.trapped_aoup_epr_g(A, v0, gamma, eps, dim=2) == pytest.approx(
        2 * epr_g_card, rel=1e-12
    )
    assert ls.linear_epr(B, D, S) == pytest.approx(epr_card, rel=1e-10)
    assert ls.linear_epr(B, D, S, parts=[1]) == pytest.approx(epr_g_card, rel=1e-10)


def test_limits_of_the_trapped_formulas():
    A, v0, gamma = 0.7, 1.3, 0.4
    assert ls.trapped_aoup_epr_g(A, v0, gamma, 0.0, dim=2) == pytest.approx(2 * A)
    assert ls.trapped_aoup_epr(A, v0, gamma, 0.0) == math.inf
    assert ls.trapped_aoup_epr(0.0, v0, gamma, 0.5, dim=1) == pytest.approx(v0**2 / 0.5)
    assert ls.trapped_aoup_epr(A, 0.0, gamma, 0.5) == 0.0
    # eps = 0: D is singular, S still exists (hypoelliptic); only the g-part counts
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([0.0, gamma])
    S = ls.lyapunov_covariance(B, D)
    assert ls.linear_epr(B, D, S) == pytest.approx(A, rel=1e-10)
    with pytest.raises(ValueError, match="A"):
        ls.trapped_aoup_covariance(0.0, v0, gamma, 1.0)
    with pytest.raises(ValueError, match="gamma"):
        ls.trapped_aoup_epr(A, v0, -1.0, 1.0)


def test_epr_trace_formula_vs_monte_carlo():
    A, v0, gamma, eps = random_aoup(11)
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
    S = ls.lyapunov_covariance(B, D)
    rng = np.random.default_rng(0)
    z = rng.multivariate_normal(np.zeros(2), S, size=200_000)
    v = ls.linear_probability_velocity(B, D, S, z)
    np.testing.assert_allclose(v, -z @ B.T - ls.linear_score(S, z) @ D.T, atol=1e-12)
    per_sample = v[:, 0] ** 2 / eps + v[:, 1] ** 2 / gamma
    se = per_sample.std() / math.sqrt(len(per_sample))
    assert abs(per_sample.mean() - ls.linear_epr(B, D, S)) < 4 * se


def ring_spectrum(n):
    return 2 - 2 * np.cos(2 * np.pi * np.arange(n) / n)


@pytest.mark.parametrize("n,seed", [(8, 0), (11, 1), (16, 2)])
def test_spring_ring_modal_formula_vs_lyapunov(n, seed):
    A, v0, gamma, eps = random_aoup(100 + seed)
    k = float(np.random.default_rng(seed).uniform(0.3, 2.0))
    L = ring_laplacian(n)
    np.testing.assert_allclose(
        np.sort(np.linalg.eigvalsh(L.numpy())), np.sort(ring_spectrum(n)), atol=1e-12
    )
    B, D = ls.spring_network_B(L, A, k, v0, gamma), ls.spring_network_D(n, eps, gamma)
    S = ls.lyapunov_covariance(B, D)
    total = 2 * ls.linear_epr(B, D, S)
    assert ls.spring_modal_epr(ring_spectrum(n), A, k, v0, gamma, eps, dim=2) == pytest.approx(
        total, rel=1e-9
    )
    per = ls.per_particle_linear_epr(B, D, S, n, dim=2)
    assert per.shape == (n,)
    np.testing.assert_allclose(per, total / n, rtol=1e-9)  # the ring is translation invariant
    # per-particle split of the x- and g-parts adds up to the index-set parts
    x_part = 2 * ls.linear_epr(B, D, S, parts=range(n))
    g_part = 2 * ls.linear_epr(B, D, S, parts=range(n, 2 * n))
    assert x_part + g_part == pytest.approx(total, rel=1e-12)


def test_periodic_lattice_modal_formula_vs_lyapunov():
    rows, cols = 3, 4
    A, v0, gamma, eps = random_aoup(7)
    L = lattice_laplacian(rows, cols)
    p, q = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    lam = (4 - 2 * np.cos(2 * np.pi * p / rows) - 2 * np.cos(2 * np.pi * q / cols)).ravel()
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(L.numpy())), np.sort(lam), atol=1e-12)
    n = rows * cols
    B, D = ls.spring_network_B(L, A, 0.8, v0, gamma), ls.spring_network_D(n, eps, gamma)
    S = ls.lyapunov_covariance(B, D)
    assert ls.spring_modal_epr(lam, A, 0.8, v0, gamma, eps, dim=2) == pytest.approx(
        2 * ls.linear_epr(B, D, S), rel=1e-9
    )
    assert ls.per_particle_linear_epr(B, D, S, n, dim=2).sum() == pytest.approx(
        2 * ls.linear_epr(B, D, S), rel=1e-10
    )


@pytest.mark.parametrize("seed", range(3))
def test_divergence_of_velocity_vanishes_for_random_linear_systems(seed):
    rng = np.random.default_rng(seed)
    n = 5
    B = rng.normal(size=(n, n)) + 3 * np.eye(n)
    assert np.linalg.eigvals(B).real.min() > 0
    D = np.diag(rng.uniform(0.1, 2.0, size=n) * (rng.uniform(size=n) > 0.3))
    D[0, 0] = max(D[0, 0], 0.5)
    S = ls.lyapunov_covariance(B, D)
    np.testing.assert_allclose(S, covariance_ode(B, D, t_end=30.0), atol=1e-8)
    assert np.linalg.eigvalsh(S).min() > 1e-6  # noise reaches every coordinate
    assert abs(ls.divergence_of_velocity(B, D, S)) < 1e-10
    z = rng.normal(size=(50, n))
    vs = np.einsum("bi,bi->b", ls.linear_probability_velocity(B, D, S, z), ls.linear_score(S, z))
    np.testing.assert_allclose(vs, 0.0, atol=1e-9)  # stationarity: div v + v . s = 0


def test_aoup_ring_divergence_parts_cancel():
    n = 9
    A, v0, gamma, eps = random_aoup(21)
    B = ls.spring_network_B(ring_laplacian(n), A, 1.2, v0, gamma)
    D = ls.spring_network_D(n, eps, gamma)
    S = ls.lyapunov_covariance(B, D)
    div_x = ls.divergence_of_velocity(B, D, S, parts=range(n))
    div_g = ls.divergence_of_velocity(B, D, S, parts=range(n, 2 * n))
    assert abs(div_x) > 1e-3
    assert div_x + div_g == pytest.approx(0.0, abs=1e-10)
    assert ls.divergence_of_velocity(B, D, S) == pytest.approx(0.0, abs=1e-10)


def test_epr_g_estimators_with_exact_scores_monte_carlo():
    n, d, n_samples = 8, 2, 20_000
    A, v0, gamma, eps = random_aoup(33)
    B = ls.spring_network_B(ring_laplacian(n), A, 0.9, v0, gamma)
    D = ls.spring_network_D(n, eps, gamma)
    S = ls.lyapunov_covariance(B, D)
    gen = torch.Generator().manual_seed(0)
    chol = torch.linalg.cholesky(torch.as_tensor(S))
    z = torch.randn(n_samples, d, 2 * n, generator=gen, dtype=torch.float64) @ chol.T
    x, g = z[..., :n].transpose(1, 2), z[..., n:].transpose(1, 2)  # (n_samples, N, d)
    s_x, s_g = ls.particle_linear_score(S, x, g)
    # the score by autograd of the exact Gaussian log-density, per dimension
    zz = z.clone().requires_grad_(True)
    logp = -0.5 * torch.einsum("bdi,ij,bdj->", zz, torch.linalg.inv(torch.as_tensor(S)), zz)
    (grad,) = torch.autograd.grad(logp, zz)
    torch.testing.assert_close(s_g, grad[..., n:].transpose(1, 2))
    torch.testing.assert_close(s_x, grad[..., :n].transpose(1, 2))

    exact_g = d * ls.linear_epr(B, D, S, parts=range(n, 2 * n))
    per_exact = d * np.array(
        [ls.linear_epr(B, D, S, parts=[n + i]) for i in range(n)]
    )  # g-part of particle i
    assert per_exact.sum() == pytest.approx(exact_g, rel=1e-10)

    est = ls.epr_g_from_score(s_g, gamma)
    per_sample = gamma * (s_g.pow(2).sum((-1, -2)) - n * d)
    se = float(per_sample.std()) / math.sqrt(n_samples)
    assert abs(float(est) - exact_g) < 4 * se
    per = ls.per_particle_epr_g_from_score(s_g, gamma)
    per_se = (gamma * s_g.pow(2).sum(-1)).std(0) / math.sqrt(n_samples)
    assert ((per - torch.as_tensor(per_exact)).abs() < 4 * per_se).all()
    # the divergence form: div_{g_i} s_{g_i} = -d (S^-1)_{N+i, N+i} exactly for a Gaussian
    prec = np.linalg.inv(S)
    div_g = torch.as_tensor(-d * np.diag(prec)[n:]).expand(5, n)
    torch.testing.assert_close(
        ls.per_particle_epr_g_from_divergence(div_g, gamma, dim=d),
        torch.as_tensor(per_exact),
        rtol=1e-9,
        atol=1e-12,
    )


def test_bad_input():
    with pytest.raises(ValueError, match="positive real part"):
        ls.lyapunov_covariance(np.array([[-1.0, 0.0], [0.0, 1.0]]), np.eye(2))
    with pytest.raises(ValueError, match="diagonal"):
        B = np.eye(2)
        ls.linear_epr(B, np.ones((2, 2)), np.eye(2))
    with pytest.raises(ValueError, match="eps"):
        ls.spring_modal_epr(ring_spectrum(5), 1.0, 1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="s_g"):
        ls.epr_g_from_score(torch.zeros(3, 4), 1.0)


def test_spring_network_solves_the_lyapunov_equation_and_the_card_check():
    lap = ring_laplacian(6)
    B, D, S = ls.spring_network(lap, 0.5, 1.2, 0.9, 1.1, 0.3)
    n = 6
    eye = np.eye(n)
    np.testing.assert_allclose(B[:n, :n], 0.5 * eye + 1.2 * lap.numpy())
    np.testing.assert_allclose(B[:n, n:], -0.9 * eye)
    np.testing.assert_allclose(np.diag(D), [0.3] * n + [1.1] * n)
    np.testing.assert_allclose(B @ S + S @ B.T, 2 * D, atol=1e-12)  # stationary covariance
    rng = np.random.default_rng(3)
    for _ in range(5):
        assert ls.trapped_aoup_formula_error(*rng.uniform(0.2, 3.0, 4)) < 1e-9


def test_covariance_z_score_passes_exact_samples_and_flags_a_wrong_covariance():
    S = np.array([[2.0, 0.6], [0.6, 1.0]])
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(20_000, 2, generator=gen, dtype=torch.float64) @ torch.as_tensor(
        np.linalg.cholesky(S).T
    )
    assert ls.covariance_z_score(z, S) < 4.5
    assert ls.covariance_z_score(z, S * 1.1) > 6


def test_linear_probability_velocity_is_b_minus_d_s():
    B, D = np.array([[1.0, -0.8], [0.0, 1.5]]), np.diag([0.4, 1.5])
    S = ls.lyapunov_covariance(B, D)
    z = np.random.default_rng(1).normal(size=(7, 2))
    s = -z @ np.linalg.inv(S)  # the Gaussian score, written out
    np.testing.assert_allclose(ls.linear_probability_velocity(B, D, S, z), -z @ B.T - s @ D)


def test_spring_epr_per_particle_sums_to_the_total_and_matches_per_particle_values():
    """On a ring every particle is alike: the per-particle parts equal the mean of
    per_particle_linear_epr (independent sum over the Lyapunov diagonal) and x + g = total."""
    lap = ring_laplacian(8)
    args = (0.7, 1.3, 1.6, 0.9, 0.5)
    total, part_x, part_g = ls.spring_epr_per_particle(lap, *args, dim=2)
    assert part_x + part_g == pytest.approx(total, rel=1e-10)
    B, D, S = ls.spring_network(lap, *args)
    each = ls.per_particle_linear_epr(B, D, S, 8, dim=2)
    np.testing.assert_allclose(each, total, rtol=1e-10)
    # numpy input gives the same numbers
    again = ls.spring_epr_per_particle(lap.numpy(), *args, dim=2)
    np.testing.assert_allclose(again, (total, part_x, part_g), rtol=1e-12)


def test_spring_network_checks_against_a_direct_lyapunov_solve():
    """div v and its parts from M = -B + D S^-1 with S from scipy, written out here; the
    modal formula agrees with the Lyapunov EPR."""
    import scipy.linalg

    n, (A, k, v0, gamma, eps) = 7, (0.6, 1.3, 1.8, 0.9, 0.5)
    L = ring_laplacian(n)
    Ln = L.double().numpy()
    B = np.block([[A * np.eye(n) + k * Ln, -v0 * np.eye(n)], [np.zeros((n, n)), gamma * np.eye(n)]])
    D = np.diag([eps] * n + [gamma] * n)
    S = scipy.linalg.solve_continuous_lyapunov(B, 2 * D)
    M = -B + D @ np.linalg.inv(S)
    div, div_x, div_g, modal_rel = ls.spring_network_checks(L, A, k, v0, gamma, eps)
    assert div_x == pytest.approx(np.trace(M[:n, :n]), rel=1e-9)
    assert div_g == pytest.approx(np.trace(M[n:, n:]), rel=1e-9)
    assert abs(div) < 1e-9 and div_x == pytest.approx(-div_g) and modal_rel < 1e-9
    assert ls.spring_network_checks(Ln, A, k, v0, gamma, eps)[1] == pytest.approx(div_x)


def test_trapped_aoup_sweep_z_passes_exact_samples_and_the_formula_worst_is_small():
    A, v0, gamma, eps = 1.2, 1.5, 0.7, 0.9
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
    import scipy.linalg

    chol = torch.as_tensor(np.linalg.cholesky(scipy.linalg.solve_continuous_lyapunov(B, 2 * D)))
    z = torch.randn(20000, 2, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = z @ chol.T  # (n, d, 2): (x, g) ~ N(0, S) per dimension
    x, g = z[None, :, None, :, 0], z[None, :, None, :, 1]  # (1, n, 1, d): one v0
    assert ls.trapped_aoup_sweep_z(x, g, A, [v0], gamma, eps) < 4.5
    assert ls.trapped_aoup_sweep_z(x, g, A, [2 * v0], gamma, eps) > 10  # the wrong law
    assert ls.trapped_aoup_sweep_z(x[..., :1], g[..., :1], A, [v0], gamma, eps) < 4.5
    wrong_second = ls.trapped_aoup_sweep_z(
        x.expand(2, -1, -1, -1), g.expand(2, -1, -1, -1), A, [v0, 2 * v0], gamma, eps
    )
    assert wrong_second > 10  # the max runs over every v0
    assert ls.trapped_aoup_formula_worst(5, seed=1) < 1e-9
