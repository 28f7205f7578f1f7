"""epr: the probability velocity vanishes in equilibrium (gradient systems, autograd scores);
the EPR of a trapped AOUP and the per-particle split of a spring ring from exact scores
against theory.linear_sde's closed forms; the trapped AOUP's EPR independently from a
simulated trajectory (the heat E[b . D^-1 o dz] / dt, no score at all); the region and current
binning on constructed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from pflow_explore import epr
from pflow_explore.datasets import particles
from pflow_explore.theory import linear_sde

F64 = torch.float64


def potential(z):
    """A non-quadratic potential U(z) on (n, 3): quartic plus a coupling term."""
    return (z**4).sum(-1) / 4 + torch.sin(z[:, 0] * z[:, 1]) + 0.5 * (z**2).sum(-1) * z[:, 2] ** 2


def grad_u(z):
    zz = z.detach().requires_grad_(True)
    (gu,) = torch.autograd.grad(potential(zz).sum(), zz)
    return gu


# ---- equilibrium ------------------------------------------------------------------------------
def test_probability_velocity_of_a_gradient_system_is_zero():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(50, 3, generator=gen, dtype=F64)
    D = torch.rand(3, generator=gen, dtype=F64) + 0.2
    # dz = -D grad U dt + sqrt(2 D) dW has rho ~ e^-U (detailed balance): s = -grad U
    v = epr.probability_velocity(-D * grad_u(z), D, -grad_u(z))
    torch.testing.assert_close(v, torch.zeros_like(v), atol=1e-12, rtol=0)
    # scalar D: dz = -grad U dt + sqrt(2 D) dW has rho ~ e^{-U / D}
    v = epr.probability_velocity(-grad_u(z), 0.7, -grad_u(z) / 0.7)
    torch.testing.assert_close(v, torch.zeros_like(v), atol=1e-12, rtol=0)
    # negative control: a rotational drift on top breaks detailed balance
    rot = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    v = epr.probability_velocity(-D * grad_u(z) + z @ rot.T, D, -grad_u(z))
    assert float(epr.local_epr(v, D).mean()) > 0.1


@pytest.mark.parametrize("interaction", ["none", "ring"])
def test_aoup_velocity_is_zero_without_propulsion(interaction):
    # v0 = 0: x is in equilibrium in U = A |x|^2 / 2 + k x^T L x / 2 at temperature eps and g is
    # its own OU process: s_x = -(A I + k L) x / eps, s_g = -g, so v = 0
    n, A, k, eps, gamma = 8, 0.7, 1.3, 0.4, 2.0
    model = particles.AOUP(n, 0.0, gamma=gamma, eps=eps, A=A, k=k, interaction=interaction)
    gen = torch.Generator().manual_seed(1)
    x, g = (
        torch.randn(5, n, 2, generator=gen, dtype=F64),
        torch.randn(5, n, 2, generator=gen, dtype=F64),
    )
    stiffness = A * torch.eye(n, dtype=F64)
    if interaction == "ring":
        stiffness = stiffness + k * particles.ring_laplacian(n)
    s_x = -(stiffness @ x) / eps
    v_x, v_g = epr.aoup_probability_velocity(model, x, g, s_x, -g)
    torch.testing.assert_close(v_x, torch.zeros_like(v_x), atol=1e-12, rtol=0)
    torch.testing.assert_close(v_g, torch.zeros_like(v_g), atol=1e-12, rtol=0)
    loc = epr.aoup_local_epr(model, x, g, s_x, -g)
    assert epr.total_epr(loc.per_particle) == pytest.approx(0.0, abs=1e-20)


# ---- the trapped AOUP ------------------------------------------------------------------------
def trap_samples(A, v0, gamma, eps, n, seed):
    """Exact stationary samples of one trapped AOUP in d = 2, S from scipy's Lyapunov solver:
    (x, g) each (n, 1, 2), and S."""
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
    S = scipy.linalg.solve_continuous_lyapunov(B, 2 * D)
    chol = torch.linalg.cholesky(torch.as_tensor(S))
    z = torch.randn(n, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=F64) @ chol.T
    return z[:, :, 0].reshape(n, 1, 2), z[:, :, 1].reshape(n, 1, 2), S


@pytest.mark.parametrize("params", [(1.0, 0.5, 1.0, 1.0), (0.4, 1.7, 2.0, 0.3)])
def test_trapped_aoup_epr_from_exact_b_and_s_equals_the_closed_form(params):
    A, v0, gamma, eps = params
    x, g, S = trap_samples(A, v0, gamma, eps, 100_000, seed=2)
    model = particles.AOUP(1, v0, gamma=gamma, eps=eps, A=A)
    P = torch.as_tensor(np.linalg.inv(S))
    s = -(torch.stack([x, g], -1) @ P)  # s = -S^-1 z per dimension, (n, 1, 2, 2)
    loc = epr.aoup_local_epr(model, x, g, s[..., 0], s[..., 1])
    per = loc.per_particle.sum(-1)
    se = float(per.std()) / math.sqrt(len(per))
    assert (
        abs(epr.total_epr(loc.per_particle) - linear_sde.trapped_aoup_epr(A, v0, gamma, eps))
        < 4 * se
    )
    g_part = loc.g_part.sum(-1)
    exact_g = linear_sde.trapped_aoup_epr_g(A, v0, gamma, eps)
    assert abs(epr.total_epr(loc.g_part) - exact_g) < 4 * float(g_part.std()) / math.sqrt(len(per))
    # the local values are v . D^-1 v of v = b - D s written out
    v_x = v0 * g - A * x - eps * s[..., 0]
    torch.testing.assert_close(loc.x_part, (v_x**2).sum(-1) / eps)
    # the g-part by integration by parts: div_{g_i} s_{g_i} = -d (S^-1)_gg here
    form = epr.local_epr_g_from_divergence(
        torch.full((1, 1), -2 * float(P[1, 1]), dtype=F64), gamma
    )
    assert float(form) == pytest.approx(exact_g, rel=1e-12)


def test_trapped_aoup_epr_from_a_simulated_trajectory():
    # No score at all: in the steady state EPR = E[b . D^-1 o dz] / dt (the heat, Stratonovich
    # midpoint), averaged along exact transitions z' = e^{-B dt} z + N(0, S - e^{-B dt} S
    # e^{-B^T dt}) of many chains (each spatial dimension is one chain).
    A, v0, gamma, eps, dt = 0.8, 1.4, 1.5, 0.6, 0.003
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
    S = scipy.linalg.solve_continuous_lyapunov(B, 2 * D)
    Phi = scipy.linalg.expm(-B * dt)
    Q = S - Phi @ S @ Phi.T
    gen = torch.Generator().manual_seed(3)
    chains, steps = 20_000, 1_500
    z = (
        torch.randn(chains, 2, generator=gen, dtype=F64)
        @ torch.linalg.cholesky(torch.as_tensor(S)).T
    )
    Phi_t, L_q = torch.as_tensor(Phi), torch.linalg.cholesky(torch.as_tensor(Q))
    Bt, D_inv = torch.as_tensor(B), torch.as_tensor(np.linalg.inv(D))
    heat = torch.zeros(chains, dtype=F64)
    for _ in range(steps):
        z_new = z @ Phi_t.T + torch.randn(chains, 2, generator=gen, dtype=F64) @ L_q.T
        b_mid = -(0.5 * (z + z_new)) @ Bt.T
        heat += ((b_mid @ D_inv) * (z_new - z)).sum(-1)
        z = z_new
    rate = heat / (steps * dt)  # per chain, one dimension
    mc, se = 2 * float(rate.mean()), 2 * float(rate.std()) / math.sqrt(chains)  # d = 2
    exact = linear_sde.trapped_aoup_epr(A, v0, gamma, eps)
    # the discrete heat's O(dt) bias: -0.34% here (exact for these transitions)
    assert abs(mc - exact) < 4 * se + 0.005 * exact, (mc, exact, se)
    # and the score-based estimator on the same law agrees
    x, g, _ = trap_samples(A, v0, gamma, eps, 100_000, seed=4)
    s = -(torch.stack([x, g], -1) @ torch.as_tensor(np.linalg.inv(S)))
    model = particles.AOUP(1, v0, gamma=gamma, eps=eps, A=A)
    from_score = epr.total_epr(epr.aoup_local_epr(model, x, g, s[..., 0], s[..., 1]).per_particle)
    assert abs(from_score - mc) < 4 * se + 0.03 * exact


# ---- the spring ring: per particle and per degree of freedom ------------------------------------
def test_spring_ring_local_epr_per_particle_and_per_part():
    n, A, k, v0, gamma, eps = 6, 0.5, 1.2, 1.5, 0.8, 0.7
    lap = particles.ring_laplacian(n).numpy()
    B = np.block(
        [[A * np.eye(n) + k * lap, -v0 * np.eye(n)], [np.zeros((n, n)), gamma * np.eye(n)]]
    )
    D = np.diag([eps] * n + [gamma] * n)
    S = scipy.linalg.solve_continuous_lyapunov(B, 2 * D)
    count = 60_000
    gen = torch.Generator().manual_seed(5)
    z = (
        torch.randn(count, 2, 2 * n, generator=gen, dtype=F64)
        @ torch.linalg.cholesky(torch.as_tensor(S)).T
    )  # (count, d, 2N)
    s = -(z @ torch.as_tensor(np.linalg.inv(S)))
    to_particles = lambda t: t.transpose(1, 2)  # (count, d, N) -> (count, N, d)  # noqa: E731
    x, g = to_particles(z[..., :n]), to_particles(z[..., n:])
    model = particles.AOUP(n, v0, gamma=gamma, eps=eps, A=A, k=k, interaction="ring")
    loc = epr.aoup_local_epr(model, x, g, to_particles(s[..., :n]), to_particles(s[..., n:]))
    # per particle, averaged over configurations, vs the Lyapunov diagonal (M S M^T)_jj / D_jj
    M = -B + D @ np.linalg.inv(S)
    var_v = np.diag(M @ S @ M.T) / np.diag(D)
    exact_per = 2 * (var_v[:n] + var_v[n:])
    mean, se = loc.per_particle.mean(0), loc.per_particle.std(0) / math.sqrt(count)
    assert ((mean - torch.as_tensor(exact_per)).abs() < 4.5 * se).all()
    # every particle is alike on a ring: the modal formula per particle
    modal = linear_sde.spring_modal_epr(np.linalg.eigvalsh(lap), A, k, v0, gamma, eps) / n
    assert exact_per.mean() == pytest.approx(modal, rel=1e-9)
    assert epr.total_epr(loc.per_particle) == pytest.approx(n * modal, rel=0.02)
    # the x- and g-parts
    assert float(loc.x_part.mean(0).sum()) == pytest.approx(2 * var_v[:n].sum(), rel=0.02)
    assert float(loc.g_part.mean(0).sum()) == pytest.approx(2 * var_v[n:].sum(), rel=0.02)


def test_local_epr_scalar_and_vector_diffusion_agree():
    gen = torch.Generator().manual_seed(6)
    v = torch.randn(7, 4, 3, generator=gen, dtype=F64)
    torch.testing.assert_close(
        epr.local_epr(v, 0.3), epr.local_epr(v, torch.full((3,), 0.3, dtype=F64))
    )
    D = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    torch.testing.assert_close(epr.local_epr(v, D), torch.einsum("...i,i,...i->...", v, 1 / D, v))
    # total: sum over particles, mean over configurations
    local = epr.local_epr(v, D)
    assert epr.total_epr(local) == pytest.approx(float(local.sum(-1).mean()))
    assert epr.total_epr(local[:, 0]) == pytest.approx(float(local[:, 0].mean()))


# ---- decompositions in space -------------------------------------------------------------------
def test_per_region_epr_sums_to_the_total_and_counts_density():
    box, bins = 8.0, 4
    x = torch.tensor(
        [[[-3.5, -3.5], [3.9, 3.9], [0.1, 0.1], [0.2, 0.3]]]
    )  # cells (0,0),(3,3),(2,2)
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    edges, density, number = epr.per_region_epr(x, values, box, bins)
    area = (box / bins) ** 2
    assert float(density.sum() * area) == pytest.approx(10.0)
    assert float(density[0, 0] * area) == pytest.approx(1.0)
    assert float(density[3, 3] * area) == pytest.approx(2.0)
    assert float(density[2, 2] * area) == pytest.approx(7.0)
    assert float(number.sum() * area) == pytest.approx(4.0)
    torch.testing.assert_close(edges, torch.linspace(-4, 4, 5, dtype=F64))
    # periodic: a particle outside the box is folded back in
    _, folded, _ = epr.per_region_epr(x + torch.tensor([8.0, -16.0]), values, box, bins)
    torch.testing.assert_close(folded, density)


def test_probability_current_field_of_a_uniform_flow():
    gen = torch.Generator().manual_seed(8)
    pts = torch.rand(200_000, 2, generator=gen, dtype=F64) * 2 - 1  # uniform on [-1, 1]^2
    vel = torch.tensor([0.5, -2.0], dtype=F64).expand(200_000, 2)
    cx, cy, J, rho = epr.probability_current_field(pts, vel, (-1, 1), (-1, 1), 5)
    torch.testing.assert_close(rho, torch.full((5, 5), 0.25, dtype=F64), atol=0.01, rtol=0)
    torch.testing.assert_close(J, rho[..., None] * torch.tensor([0.5, -2.0], dtype=F64))
    torch.testing.assert_close(cx, torch.linspace(-0.8, 0.8, 5, dtype=F64))


def test_plane_currents_bin_both_velocities_by_hand():
    """Four samples in a 2 x 2 grid over [0, 2]^2: each cell's J is the sum of its velocities
    / (n area), area 1, n = 4; rho counts / 4."""
    pts = torch.tensor([[0.5, 0.5], [0.6, 0.4], [1.5, 0.5], [0.5, 1.5]], dtype=F64)
    v_l = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0], [-8.0, 0.0]], dtype=F64)
    v_e = -2 * v_l
    c = epr.plane_currents(pts, v_l, v_e, (0.0, 2.0), (0.0, 2.0), 2)
    want = torch.zeros(2, 2, 2, dtype=F64)
    want[0, 0], want[0, 1] = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0])
    want[1, 0] = torch.tensor([-2.0, 0.0])  # row y = 1 (upper), column x = 0
    torch.testing.assert_close(c.J_learned, want)
    torch.testing.assert_close(c.J_exact, -2 * want)
    torch.testing.assert_close(c.rho, torch.tensor([[0.5, 0.25], [0.25, 0.0]], dtype=F64))
    torch.testing.assert_close(c.cx, torch.tensor([0.5, 1.5], dtype=F64))


@pytest.mark.parametrize("seed", [0, 1])
def test_linear_current_grid_is_divergence_free_and_rho_times_b_minus_d_s(seed):
    """For a random stable B and diagonal D (S from scipy): J = rho (b - D s) written out,
    and div J = 0 by central differences on the grid (stationarity)."""
    rng = np.random.default_rng(seed)
    B = np.diag(rng.uniform(0.5, 2.0, 2)) + np.triu(rng.normal(size=(2, 2)), 1)
    D = rng.uniform(0.3, 1.5, 2)
    S = scipy.linalg.solve_continuous_lyapunov(B, 2 * np.diag(D))
    t = lambda a: torch.as_tensor(a, dtype=F64)  # noqa: E731
    lin = torch.linspace(-1.5, 1.5, 301, dtype=F64)
    rho, J = epr.linear_current_grid(t(B), t(D), t(S), lin)
    z = torch.tensor([lin[40], lin[250]], dtype=F64)  # the cell [row 250, column 40]
    rho_z = math.exp(-0.5 * float(z @ t(np.linalg.inv(S)) @ z))
    v = -t(B) @ z + t(D) * (t(np.linalg.inv(S)) @ z)  # b - D s, s = -S^-1 z
    torch.testing.assert_close(J[250, 40], rho_z * v)
    h = float(lin[1] - lin[0])
    div = (J[1:-1, 2:, 0] - J[1:-1, :-2, 0] + J[2:, 1:-1, 1] - J[:-2, 1:-1, 1]) / (2 * h)
    assert float(div.abs().max()) < 1e-3 * float(J.norm(dim=-1).max())
