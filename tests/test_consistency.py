"""consistency.py: the CTM jump, its teacher solver, losses and gamma-sampling, checked
against closed forms (Gaussian data) and independent ODE integration."""

from __future__ import annotations

import math

import pytest
import torch

from pflow_explore import consistency as ct
from pflow_explore.datasets.toy2d import eight_gaussians
from pflow_explore.distillation import frozen_copy
from pflow_explore.paths import NoiseLevel
from pflow_explore.theory.mixtures import MixtureFlow

F64 = torch.float64


def iso_gaussian(mu: float, var: float):
    """Exact D, G* and g* of isotropic data N(mu, var I) (per-row t, s)."""

    def D(x, t):
        t = ct._rows(t, x)[:, None]
        return mu + var / (var + t**2) * (x - mu)

    def G(x, t, s):
        t, s = ct._rows(t, x)[:, None], ct._rows(s, x)[:, None]
        return mu + ((var + s**2) / (var + t**2)).sqrt() * (x - mu)

    def g(x, t, s):
        tt, ss = ct._rows(t, x)[:, None], ct._rows(s, x)[:, None]
        r = ss / tt
        same = (ss >= tt).expand_as(x)
        return torch.where(same, D(x, t), (G(x, t, s) - r * x) / (1 - r).clamp_min(1e-300))

    return D, G, g


def test_jumpnet_shapes_and_errors():
    net = ct.JumpNet(3, hidden=16, depth=2)
    x = torch.randn(5, 3)
    assert net(x, 2.0, 0.5).shape == (5, 3)
    assert net(x, torch.full((5,), 2.0), torch.zeros(5)).shape == (5, 3)
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(5, 2), 1.0, 0.0)
    with pytest.raises(ValueError, match="times"):
        net(x, torch.ones(4), 0.0)
    with pytest.raises(ValueError, match="hidden"):
        ct.JumpNet(3, hidden=0)


def test_jump_boundary_and_euler_limit():
    """G(x, t, t) = x; with g = D (no s-dependence) G is one Euler step of the PF-ODE."""
    D, _, _ = iso_gaussian(0.3, 0.7)
    g = lambda x, t, s: D(x, t)
    x, t, s = torch.randn(6, 2, dtype=F64), 3.0, 1.2
    assert torch.equal(ct.jump(g, x, t, t), x)
    euler = x + (s - t) * (x - D(x, t)) / t
    assert torch.allclose(ct.jump(g, x, t, s), euler, atol=1e-12)
    # t = s = 0 rows: identity, no division by zero
    zero = torch.zeros(6, dtype=F64)
    assert torch.equal(ct.jump(g, x, zero, zero), x)


def test_denoiser_of_is_the_diagonal():
    net = ct.JumpNet(2, hidden=8, depth=1)
    x = torch.randn(4, 2)
    assert torch.allclose(ct.denoiser_of(net)(x, 1.5), net(x, 1.5, 1.5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_jump_matches_the_gaussian_closed_form(seed):
    gen = torch.Generator().manual_seed(seed)
    mu, var = float(torch.randn(1, generator=gen)), float(0.1 + torch.rand(1, generator=gen))
    D, G, _ = iso_gaussian(mu, var)
    t = float(0.5 + 20 * torch.rand(1, generator=gen))
    for s in (0.0, 0.01, t / 3):
        x = mu + math.sqrt(var + t**2) * torch.randn(50, 3, generator=gen, dtype=F64)
        got = ct.exact_jump(D, x, t, s)
        assert torch.allclose(got, G(x, t, s), atol=2e-6), (t, s)


def test_exact_jump_composes_for_a_mixture():
    flow = MixtureFlow(eight_gaussians(), NoiseLevel())
    x = flow.sample(40, 5.0, torch.Generator().manual_seed(0)).double()
    via = ct.exact_jump(flow.denoiser, ct.exact_jump(flow.denoiser, x, 5.0, 1.0), 1.0, 0.2)
    direct = ct.exact_jump(flow.denoiser, x, 5.0, 0.2)
    assert torch.allclose(via, direct, atol=1e-5)
    with pytest.raises(ValueError, match="0 <= s <= t"):
        ct.exact_jump(flow.denoiser, x, 1.0, 2.0)


def test_heun_between_rows_and_accuracy():
    D, G, _ = iso_gaussian(0.0, 0.5)
    grid = ct.sampling_grid(200, t_max=10.0)
    x = math.sqrt(0.5 + 100) * torch.randn(4, 2, dtype=F64)
    start, steps = torch.tensor([0, 0, 10, 50]), torch.tensor([200, 5, 0, 30])
    out = ct.heun_between(D, x, grid, start, steps)
    assert torch.equal(out[2], x[2])  # zero steps: unchanged
    for i in (0, 1, 3):  # each row alone, and against the exact solution (second order)
        alone = ct.heun_between(D, x[i : i + 1], grid, start[i : i + 1], steps[i : i + 1])
        assert torch.allclose(out[i], alone[0], atol=1e-12)
        t, s = float(grid[start[i]]), float(grid[start[i] + steps[i]])
        assert torch.allclose(out[i], G(x[i : i + 1], t, s)[0], atol=1e-3)
    with pytest.raises(ValueError, match="within the grid"):
        ct.heun_between(D, x, grid, start, steps + 200)


def test_teacher_pair_noises_then_follows_the_flow():
    """x_t = x0 + t z with z the generator's first draw; x_u = k Heun steps of the teacher,
    against the exact PF-ODE map G(x_t, t, u) of Gaussian data; k = 0 leaves x_t."""
    D, G, _ = iso_gaussian(0.3, 0.5)
    x0 = 0.3 + math.sqrt(0.5) * torch.randn(6, 2, dtype=F64)
    grid = ct.sampling_grid(200, t_max=10.0)
    i_t, k = torch.tensor([0, 10, 50, 120, 150, 199]), torch.tensor([30, 5, 0, 40, 50, 1])
    out_grid, x_t, x_u = ct.teacher_pair(D, x0, grid, i_t, k, torch.Generator().manual_seed(3))
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(3)).double()
    t = grid.double()[i_t]
    assert out_grid.dtype == F64 and torch.equal(x_t, x0 + t[:, None] * z)
    assert torch.equal(x_u[2], x_t[2])  # zero teacher steps
    u = grid.double()[i_t + k]
    for i in range(6):
        exact = G(x_t[i : i + 1], float(t[i]), float(u[i]))[0]
        assert torch.allclose(x_u[i], exact, atol=1e-3), (i, x_u[i], exact)
    assert not torch.allclose(x_u[0], x_t[0], atol=1e-2)  # the steps moved it


def test_draw_triples_respects_the_order():
    tri = ct.draw_triples(5000, 18, 4, torch.Generator().manual_seed(0))
    assert bool((tri.i_t < tri.i_u).all() and (tri.i_u <= tri.i_s).all())
    assert int(tri.i_s.max()) == 18 and int(tri.i_t.min()) == 0
    assert bool(((tri.i_u - tri.i_t) <= 4).all())
    assert set((tri.i_u - tri.i_t).tolist()) == {1, 2, 3, 4}


def test_ctm_loss_vanishes_for_the_exact_jump_only():
    """With g = g* (exact Gaussian) the soft consistency loss is the teacher's Heun error
    only (small); the Euler parametrisation g = D (a negative control) is far off."""
    D, _, g_star = iso_gaussian(0.5, 0.4)
    x0 = 0.5 + math.sqrt(0.4) * torch.randn(
        2000, 2, dtype=F64, generator=torch.Generator().manual_seed(1)
    )
    grid = ct.sampling_grid(40)
    g_euler = lambda x, t, s: D(x, t)
    loss = lambda g: float(ct.ctm_loss(g, g_star, D, x0, grid, 4, torch.Generator().manual_seed(2)))
    exact, euler = loss(g_star), loss(g_euler)
    assert exact < 1e-4 and euler > 100 * exact, (exact, euler)
    cm = lambda g: float(ct.cm_loss(g, g_star, D, x0, grid, torch.Generator().manual_seed(2)))
    assert cm(g_star) < 1e-4 < cm(g_euler)


def test_losses_train_only_the_student():
    student = ct.JumpNet(2, hidden=16, depth=2)
    target = frozen_copy(student)
    D, _, _ = iso_gaussian(0.0, 1.0)
    x0 = torch.randn(64, 2)
    loss = ct.ctm_loss(
        student, target, D, x0, ct.sampling_grid(18), 3, torch.Generator().manual_seed(0)
    )
    loss = loss + ct.dsm_loss(student, x0, torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in target.parameters())
    with pytest.raises(ValueError, match="distance"):
        ct.distance(x0, x0, "l1")


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_gamma_sampling_with_the_exact_jump_keeps_the_marginals(gamma):
    mu, var = 1.0, 0.3
    _, G, _ = iso_gaussian(mu, var)
    gen = torch.Generator().manual_seed(3)
    grid = ct.sampling_grid(4)
    x_T = mu + math.sqrt(var + 80.0**2) * torch.randn(40000, 2, generator=gen, dtype=F64)
    out, states = ct.gamma_sample(G, x_T, grid, gamma, gen, trajectory=True)
    assert states.shape == (5, 40000, 2)
    for k, t in enumerate(grid.tolist()):  # every state has the marginal N(mu, var + t^2)
        sd = math.sqrt(var + t**2)
        assert abs(float(states[k].mean()) - mu) < 4 * sd / math.sqrt(80000)
        assert abs(float(states[k].std()) / sd - 1) < 0.02, (gamma, k)
    assert torch.equal(out, states[-1])


def test_gamma_sampling_control_an_euler_jump_misses():
    """A negative control: the one-Euler-step jump (DDIM) at 2 steps gives the wrong spread."""
    D, _, _ = iso_gaussian(1.0, 0.3)
    G = lambda x, t, s: ct.jump(lambda y, tt, ss: D(y, tt), x, t, s)
    x_T = 1.0 + 80.0 * torch.randn(40000, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    out, _ = ct.gamma_sample(G, x_T, ct.sampling_grid(2), 0.0)
    assert abs(float(out.std()) / math.sqrt(0.3) - 1) > 0.1


def test_gamma_and_grid_errors():
    with pytest.raises(ValueError, match="gamma"):
        next(ct.gamma_steps(lambda x, t, s: x, torch.zeros(1, 2), ct.sampling_grid(2), 1.5))
    with pytest.raises(ValueError, match="n_steps"):
        ct.sampling_grid(0)
    assert ct.sampling_grid(1).tolist() == [80.0, 0.0]
    assert len(ct.sampling_grid(5)) == 6
