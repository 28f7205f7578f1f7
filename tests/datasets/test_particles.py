"""Tests for pflow_explore.datasets.particles against independent numerics.

- Monte Carlo of the simulator (many independent replicas, one stationary frame each) against
  (a) the exact stationary covariance of the *discrete* scheme (Euler-Maruyama in x, exact OU
  in g), from scipy's discrete Lyapunov solver, within 4.5 standard errors, and (b) the
  continuous Lyapunov covariance within 4.5 standard errors + the scheme's O(dt) bias
  |S_dt - S|; standard errors of a Gaussian sample covariance, sqrt((S_ii S_jj + S_ij^2) / n);
- the exact OU update of g against its transition law at a large dt;
- repulsion: a naive double loop over pairs in float64, Newton's third law, the minimum image
  across the boundary, the force magnitude against math.log1p at chosen separations, and the
  force against central finite differences of the pair energy, integrated in closed form with
  the dilogarithm: int softplus_beta(u) du = -Li2(-e^{beta u}) / beta^2 (scipy.special.spence).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.special import spence

from pflow_explore.datasets import particles as P
from pflow_explore.theory import linear_sde as ls

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


def z_scores(sample_cov: np.ndarray, target: np.ndarray, n: int) -> np.ndarray:
    d = np.diag(target)
    se = np.sqrt((np.outer(d, d) + target**2) / n)
    return np.abs(sample_cov - target) / se


# ---- validation and geometry ------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(interaction="repulsion", A=0.0), "box"),
        (dict(interaction="spring"), "interaction"),
        (dict(eps=-1.0), "eps"),
        (dict(gamma=0.0), "gamma"),
        (dict(box=10.0), "A = 0"),
        (dict(interaction="ring", A=0.0, box=10.0), "free space"),
        (dict(interaction="repulsion", A=0.0, box=3.0), "box"),
        (dict(interaction="lattice", lattice_shape=(2, 8)), "lattice_shape"),
        (dict(n_particles=0), "n_particles"),
        (dict(interaction="repulsion", cutoff=0.5), "cutoff"),
    ],
)
def test_bad_parameters_raise_clear_errors(kwargs, match):
    base = dict(n_particles=16, v0=1.0)
    with pytest.raises(ValueError, match=match):
        P.AOUP(**{**base, **kwargs})


def test_eps_zero_and_mips_preset_are_allowed():
    m = P.mips_model(64, 0.5)
    assert m.eps == 0 and m.A == 0 and m.k == 1 and m.interaction == "repulsion"
    assert (m.v0, m.gamma, m.radius, m.beta) == (0.025, 1e-4, 1.0, 7.5)  # the official code
    assert P.packing_fraction(64, m.radius, m.box) == pytest.approx(0.5)
    assert P.box_for_packing_fraction(64, 0.5, 0.5) == pytest.approx(math.sqrt(64 * math.pi / 2))
    assert P.AOUP(4, 1.0, eps=0.0).eps == 0.0


def test_wrap_and_minimum_image():
    L = 3.0
    x = torch.linspace(-10, 10, 101, dtype=F64)
    w = P.wrap(x, L)
    assert (w >= -L / 2).all() and (w < L / 2).all()
    shift = (w - x) / L
    torch.testing.assert_close(shift, shift.round())  # moved by whole box lengths
    m = P.minimum_image(x, L)
    assert (m.abs() <= L / 2 + 1e-12).all()
    assert P.wrap(x, None) is x


def test_spring_forces_vs_explicit_neighbour_sums():
    gen = torch.Generator().manual_seed(0)
    ring = P.AOUP(7, 1.0, interaction="ring", k=1.7)
    x = torch.randn(3, 7, 2, generator=gen, dtype=F64)
    expect = torch.zeros_like(x)
    for i in range(7):
        for j in ((i - 1) % 7, (i + 1) % 7):
            expect[:, i] += 1.7 * (x[:, j] - x[:, i])
    torch.testing.assert_close(P.forces(ring, x), expect)
    lat = P.AOUP(12, 1.0, interaction="lattice", lattice_shape=(3, 4), k=0.6)
    x = torch.randn(2, 12, 2, generator=gen, dtype=F64)
    expect = torch.zeros_like(x)
    for r in range(3):
        for c in range(4):
            i = r * 4 + c
            for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                expect[:, i] += 0.6 * (x[:, (rr % 3) * 4 + cc % 4] - x[:, i])
    torch.testing.assert_close(P.forces(lat, x), expect)
    open_lat = P.lattice_laplacian(3, 4, periodic=False)
    assert open_lat.sum(1).abs().max() == 0 and open_lat.diag().tolist()[:4] == [2, 3, 3, 2]


# ---- the exact OU update of g -----------------------------------------------------------------
def test_exact_ou_update_at_large_dt():
    gamma, dt, n = 1.3, 2.5, 100_000
    m = P.AOUP(1, 0.7, gamma=gamma, eps=0.4)
    gen = torch.Generator().manual_seed(1)
    g0 = torch.full((n, 1, 2), 1.7, dtype=F64)
    _, g1 = P.step(m, torch.zeros_like(g0), g0, dt, gen)
    mean, var = math.exp(-gamma * dt) * 1.7, 1 - math.exp(-2 * gamma * dt)
    se_mean, se_var = math.sqrt(var / (2 * n)), var * math.sqrt(2 / (2 * n))
    assert abs(float(g1.mean()) - mean) < 4 * se_mean
    assert abs(float(g1.var()) - var) < 4 * se_var
    # from the stationary law it stays N(0, 1) however large dt is
    _, g2 = P.step(m, torch.zeros_like(g0), torch.randn(n, 1, 2, generator=gen, dtype=F64), dt, gen)
    assert abs(float(g2.var()) - 1) < 4 * math.sqrt(2 / (2 * n))


def test_ou_step_is_the_transition_law_and_the_step_of_the_simulator():
    gamma, dt, n = 0.7, 0.5, 200_000
    gen = torch.Generator().manual_seed(2)
    g0, xi = (torch.randn(n, generator=gen, dtype=F64) for _ in range(2))
    g1 = P.ou_step(g0, xi, gamma, dt)
    # from N(0, 1) it stays N(0, 1), with autocorrelation e^{-gamma dt} (the OU kernel)
    assert float(g1.var()) == pytest.approx(1.0, abs=4 * math.sqrt(2 / n))
    assert float((g0 * g1).mean()) == pytest.approx(math.exp(-gamma * dt), abs=4 / math.sqrt(n))
    # the small-dt limit is Euler-Maruyama: g - gamma g dt + sqrt(2 gamma dt) xi
    tiny = 1e-7
    em = g0 - gamma * g0 * tiny + math.sqrt(2 * gamma * tiny) * xi
    torch.testing.assert_close(P.ou_step(g0, xi, gamma, tiny), em, rtol=0, atol=1e-6)
    # the simulator's g update is this step, fed by the generator after x's noise
    m = P.AOUP(3, 0.7, gamma=gamma, eps=0.4)
    x, g = torch.randn(2, 3, 2, dtype=F64), torch.randn(2, 3, 2, dtype=F64)
    _, g_sim = P.step(m, x, g, dt, torch.Generator().manual_seed(5))
    draws = torch.Generator().manual_seed(5)
    torch.randn(x.shape, generator=draws, dtype=F64)  # the x noise comes first
    xi_g = torch.randn(g.shape, generator=draws, dtype=F64)
    torch.testing.assert_close(g_sim, P.ou_step(g, xi_g, gamma, dt), rtol=0, atol=0)


def test_simulate_frames_spacing_and_same_states_as_simulate():
    m = P.AOUP(4, 1.0, gamma=1.0, eps=0.5, A=1.0)
    kw = dict(thermalize=0.0, dtype=F64)
    traj = P.simulate_frames(m, 2, 5, 0.3, 0.1, generator=torch.Generator().manual_seed(3), **kw)
    assert traj.x.shape == (5, 2, 4, 2)
    torch.testing.assert_close(traj.times, torch.arange(5, dtype=F64) * 0.3)
    ref = P.simulate(m, 2, 12, 0.1, 3, generator=torch.Generator().manual_seed(3), **kw)
    torch.testing.assert_close(traj.x, ref.x, rtol=0, atol=0)
    # an interval shorter than one step still records every step
    assert P.simulate_frames(m, 1, 3, 0.01, 0.1, **kw).times.tolist() == pytest.approx(
        [0, 0.1, 0.2]
    )


# ---- Monte Carlo of the simulator vs the Lyapunov covariance ------------------------------------
def discrete_covariance(B: np.ndarray, D: np.ndarray, n: int, gamma: float, dt: float):
    """Stationary covariance of the scheme z' = M z + noise (EM in x with the old g, exact OU in
    g): M = [[I - dt B_xx, -dt B_xg], [0, e^{-gamma dt} I]], noise cov diag(2 D_x dt, 1 - a^2)."""
    a = math.exp(-gamma * dt)
    M = np.eye(2 * n) - dt * B
    M[n:, n:] = a * np.eye(n)
    Q = np.diag(np.concatenate([2 * np.diag(D)[:n] * dt, np.full(n, 1 - a * a)]))
    return scipy.linalg.solve_discrete_lyapunov(M, Q)


def pooled_covariance(x: torch.Tensor, g: torch.Tensor) -> tuple[np.ndarray, int]:
    """Covariance of z = (x_1..x_N, g_1..g_N) over replicas and dimensions (iid copies)."""
    z = torch.cat([x, g], dim=1).transpose(1, 2).reshape(-1, 2 * x.shape[1]).double().numpy()
    return z.T @ z / len(z), len(z)  # mean zero by symmetry


@pytest.mark.parametrize("seed", [0, 1])
def test_trapped_aoup_stationary_covariance_monte_carlo(seed):
    rng = np.random.default_rng(seed)
    A, v0, gamma, eps = (float(v) for v in rng.uniform(0.8, 2.0, size=4))
    dt, R = 0.02, 10_000
    m = P.AOUP(1, v0, gamma=gamma, eps=eps, A=A)
    gen = torch.Generator().manual_seed(seed)
    # one frame after 6 relaxation times: the start's imprint on S is ~e^-12, far below 1 SE
    traj = P.simulate(m, R, 0, dt, thermalize=6 * m.relaxation_time, generator=gen, dtype=F64)
    assert traj.x.shape == (1, R, 1, 2) and traj.times.tolist() == [0.0]
    cov, n = pooled_covariance(traj.x[-1], traj.g[-1])
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
    S = ls.trapped_aoup_covariance(A, v0, gamma, eps)
    S_dt = discrete_covariance(B, D, 1, gamma, dt)
    assert z_scores(cov, S_dt, n).max() < 4.5
    bias = np.abs(S_dt - S)
    assert bias.max() < 5 * dt * np.abs(S).max()  # the O(dt) bias is small at this dt
    se = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S**2) / n)
    assert (np.abs(cov - S) < 4.5 * se + bias).all()


def test_small_ring_stationary_covariance_monte_carlo():
    n_p, dt, R = 5, 0.02, 4000
    A, k, v0, gamma, eps = 0.8, 1.1, 1.2, 1.5, 0.5
    m = P.AOUP(n_p, v0, gamma=gamma, eps=eps, A=A, k=k, interaction="ring")
    gen = torch.Generator().manual_seed(5)
    traj = P.simulate(m, R, 0, dt, thermalize=6 * m.relaxation_time, generator=gen, dtype=F64)
    cov, n = pooled_covariance(traj.x[-1], traj.g[-1])
    B = ls.spring_network_B(P.ring_laplacian(n_p), A, k, v0, gamma)
    D = ls.spring_network_D(n_p, eps, gamma)
    S, S_dt = ls.lyapunov_covariance(B, D), discrete_covariance(B, D, n_p, gamma, dt)
    assert z_scores(cov, S_dt, n).max() < 5.0  # 55 distinct entries
    se = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S**2) / n)
    assert (np.abs(cov - S) < 5.0 * se + np.abs(S_dt - S)).all()


def test_simulate_records_and_is_reproducible():
    m = P.AOUP(3, 1.0, interaction="ring")
    kw = dict(n_replicas=2, n_steps=10, dt=0.1, record_every=3, thermalize=0.5)
    a = P.simulate(m, generator=torch.Generator().manual_seed(3), **kw)
    b = P.simulate(m, generator=torch.Generator().manual_seed(3), **kw)
    assert a.x.shape == (4, 2, 3, 2) and a.g.shape == a.x.shape and a.x.dtype == torch.float32
    torch.testing.assert_close(a.times, torch.tensor([0.0, 0.3, 0.6, 0.9], dtype=F64))
    torch.testing.assert_close(a.x, b.x)
    box = P.mips_model(32, 0.3)
    t = P.simulate(box, 2, 20, 0.1, thermalize=0, generator=torch.Generator().manual_seed(0))
    assert (t.x.abs() <= box.box / 2).all()
    x, g = P.stationary_samples(
        m, 7, 0.05, n_replicas=3, generator=torch.Generator().manual_seed(1)
    )
    assert x.shape == (7, 3, 2) and g.shape == (7, 3, 2)
    with pytest.raises(ValueError, match="dt"):
        P.simulate(m, 2, 10, 0.0)
    with pytest.raises(ValueError, match="x0"):
        P.simulate(m, 2, 1, 0.1, x0=torch.zeros(2, 4, 2))


# ---- repulsion -------------------------------------------------------------------------------
def softplus64(u: float, beta: float) -> float:
    return math.log1p(math.exp(beta * u)) / beta


def naive_forces(model: P.AOUP, x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    for r in range(x.shape[0]):
        for i in range(x.shape[1]):
            for j in range(x.shape[1]):
                if i == j:
                    continue
                dx = x[r, i] - x[r, j]
                if model.box is not None:
                    dx = dx - model.box * np.round(dx / model.box)
                dist = np.linalg.norm(dx)
                if dist < model.interaction_range:
                    out[r, i] += (
                        model.k * softplus64(2 * model.radius - dist, model.beta) * dx / dist
                    )
    return out


def test_repulsion_dense_chunked_cells_and_naive_agree():
    m = P.mips_model(60, 0.45, k=1.3)
    assert P._cells_per_side(m) >= 3
    gen = torch.Generator().manual_seed(2)
    x, _ = P.initial_state(m, 2, gen, dtype=F64)
    ref = naive_forces(m, x.numpy())
    for f in (
        P.forces(m, x, "dense"),
        P.repulsion_forces_dense(m, x, chunk=7),
        P.forces(m, x, "cells"),
        P.forces(m, x),
    ):
        np.testing.assert_allclose(f.numpy(), ref, atol=1e-12)
    assert np.abs(ref).max() > 0.1  # some pairs do overlap
    np.testing.assert_allclose(ref.sum(1), 0.0, atol=1e-12)  # Newton's third law
    f32 = P.forces(m, x.float(), "cells")
    assert f32.dtype == torch.float32 and torch.allclose(
        f32.double(), torch.as_tensor(ref), atol=1e-5
    )
    # a trap instead of a box: dense only
    trapped = P.AOUP(20, 1.0, A=1.0, interaction="repulsion")
    xt, _ = P.initial_state(trapped, 1, gen, dtype=F64)
    np.testing.assert_allclose(P.forces(trapped, xt).numpy(), naive_forces(trapped, xt.numpy()))
    with pytest.raises(ValueError, match="dense"):
        P.forces(trapped, xt, "cells")


@pytest.mark.parametrize("sep", [0.3, 0.9, 1.0, 1.4, 2.0])
def test_pair_force_magnitude_and_minimum_image(sep):
    m = P.AOUP(2, 1.0, A=0.0, k=0.7, interaction="repulsion", box=8.0)
    # particle 0 sits just left of the right wall, particle 1 just right of the left wall:
    # the short way between them crosses the boundary, so 0 is pushed left (-x) through it
    x = torch.tensor([[[4.0 - sep / 2, 0.3], [-4.0 + sep / 2, 0.3]]], dtype=F64)
    f = P.forces(m, x, "dense")
    mag = 0.7 * softplus64(2 * m.radius - sep, m.beta) if sep < m.interaction_range else 0.0
    torch.testing.assert_close(f[0, 0], torch.tensor([-mag, 0.0], dtype=F64), rtol=1e-12, atol=0)
    torch.testing.assert_close(f[0, 1], -f[0, 0])


def pair_energy(model: P.AOUP, dist: float) -> float:
    """U(d) = k int_d^rc softplus_beta(2r - s) ds, closed form via Li2(z) = spence(1 - z)."""
    if dist >= model.interaction_range:
        return 0.0
    b = model.beta

    def prim(u: float) -> float:  # d/du prim(u) = softplus_beta(u)
        return -float(spence(1 + math.exp(b * u))) / b**2

    return model.k * (
        prim(2 * model.radius - dist) - prim(2 * model.radius - model.interaction_range)
    )


def test_force_is_minus_gradient_of_pair_energy():
    m = P.AOUP(6, 1.0, A=0.0, k=1.4, interaction="repulsion", box=6.0, radius=0.6)
    gen = torch.Generator().manual_seed(4)
    x = ((torch.rand(1, 6, 2, generator=gen, dtype=F64) - 0.5) * 2.2).numpy()  # crowded

    def energy(y: np.ndarray) -> float:
        total = 0.0
        for i in range(6):
            for j in range(i + 1, 6):
                dx = y[0, i] - y[0, j]
                total += pair_energy(m, float(np.linalg.norm(dx - 6.0 * np.round(dx / 6.0))))
        return total

    h = 1e-5
    fd = np.zeros_like(x)
    for i in range(6):
        for a in range(2):
            e = np.zeros_like(x)
            e[0, i, a] = h
            fd[0, i, a] = -(energy(x + e) - energy(x - e)) / (2 * h)
    f = P.forces(m, torch.as_tensor(x)).numpy()
    assert np.abs(f).max() > 0.1
    np.testing.assert_allclose(f, fd, atol=1e-7)


def test_cluster_fraction_on_constructed_configurations():
    m = P.mips_model(64, 0.3, radius=0.5)
    # an 8 x 8 triangular patch at contact distance: interior particles have 6 neighbours
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    pos = np.stack([i + 0.5 * (j % 2), j * math.sqrt(3) / 2], -1).reshape(1, 64, 2) * 1.0
    x = torch.as_tensor(pos - pos.mean((0, 1)), dtype=torch.float32)
    counts = P.neighbour_counts(m, x)
    assert counts.max() == 6 and counts.min() >= 2
    assert float(P.cluster_fraction(m, x)) > 0.7
    # the same particles spread over a square grid with spacing 2.5 r: nobody has a neighbour
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(1, 64, 2)
    spread = torch.as_tensor(grid * (m.box / 8), dtype=torch.float32)
    assert float(P.cluster_fraction(m, spread)) == 0.0
    assert float(P.gas_fraction(m, spread)) == 1.0 and float(P.gas_fraction(m, x)) == 0.0
    labels = P.phase_labels(m, x)
    assert set(labels.unique().tolist()) <= {1, 2} and (labels == 2).float().mean() > 0.7
    # the default shell is 2.4 r: a neighbour at 2.3 r counts, one at 2.5 r does not
    pair = torch.tensor([[[0.0, 0.0], [2.3 * m.radius, 0.0], [0.0, -2.5 * m.radius]]])
    m3 = P.mips_model(3, 0.01, radius=0.5)
    assert P.neighbour_counts(m3, pair).tolist() == [[1, 1, 0]]


def test_cluster_layout_is_one_close_packed_droplet():
    m = P.mips_model(61, 0.3)
    x, g = P.initial_state(m, 3, torch.Generator().manual_seed(0), layout="cluster")
    assert x.shape == (3, 61, 2) and (x.abs() <= m.box / 2).all()
    dist = P.minimum_image(x[:, :, None] - x[:, None], m.box).norm(dim=-1)
    dist = dist + 1e9 * torch.eye(61)
    torch.testing.assert_close(dist.min(), torch.tensor(2 * m.radius), rtol=1e-5, atol=1e-5)
    assert float(P.cluster_fraction(m, x).min()) > 0.7
    with pytest.raises(ValueError, match="layout"):
        P.initial_state(m, 1, layout="ring")


def test_small_box_method_takes_cells_from_three_ranges_a_side():
    """The range is 2r + 8/beta (r = 0.5, beta = 8: 2): cells from a box of 3 ranges, 6."""
    kw = dict(interaction="repulsion", radius=0.5, beta=8.0, A=0.0, eps=0.0)
    assert P.small_box_method(P.AOUP(4, 1.0, box=6.0, **kw)) == "cells"
    assert P.small_box_method(P.AOUP(4, 1.0, box=5.99, **kw)) == "dense"
    assert P.small_box_method(P.AOUP(4, 1.0, box=6.0, cutoff=2.5, **kw)) == "dense"
    assert P.small_box_method(P.AOUP(4, 1.0, interaction="ring")) == "dense"  # no box


def test_stationary_sweep_stacks_one_replica_per_sample_for_each_model():
    models = [P.AOUP(1, v0, interaction="none") for v0 in (0.5, 2.0)]
    x, g = P.stationary_sweep(models, 6, 0.05, torch.Generator().manual_seed(3))
    assert x.shape == g.shape == (2, 6, 1, 2)
    gen = torch.Generator().manual_seed(3)
    for j, m in enumerate(models):  # the same draws, model after model
        xj, gj = P.stationary_samples(m, 6, 0.05, n_replicas=6, generator=gen)
        torch.testing.assert_close(x[j], xj, rtol=0, atol=0)
        torch.testing.assert_close(g[j], gj, rtol=0, atol=0)
    assert not torch.equal(x[0], x[1])
