"""The score networks of active particles: shapes at any N, the symmetries the physics has
(per-particle for the trap, permutation equivariance for MIPS, cyclic shifts along the
spring ring), and the meaning of the built-in -g term: with the learned part switched off,
s_g is the score of N(0, I), checked against autograd of its log-density."""

from __future__ import annotations

import pytest
import torch

from pflow_explore.nets.particle_scores import (
    ChainScore,
    PropulsionScore,
    TrapScore,
    make_local_net,
)

F64 = torch.float64


def _switch_off(linear: torch.nn.Linear) -> None:
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()


def _gaussian_score(g: torch.Tensor) -> torch.Tensor:
    """grad_g log N(g; 0, I) by autograd (not the formula -g)."""
    g = g.detach().clone().requires_grad_(True)
    log_p = -0.5 * (g**2).sum() - 0.5 * g.numel() * torch.log(torch.tensor(2 * torch.pi))
    (grad,) = torch.autograd.grad(log_p, g)
    return grad


def test_trap_score_shapes_per_particle_and_v0_conditioning():
    torch.manual_seed(0)
    net = TrapScore(2, hidden=16, depth=2).double()
    x, g = torch.randn(5, 3, 2, dtype=F64), torch.randn(5, 3, 2, dtype=F64)
    s_x, s_g = net(x, g, 1.0)
    assert s_x.shape == s_g.shape == (5, 3, 2)
    # independent particles: particle i's score depends on (x_i, g_i) only
    perm = torch.tensor([2, 0, 1])
    s_x_p, s_g_p = net(x[:, perm], g[:, perm], 1.0)
    torch.testing.assert_close(s_x_p, s_x[:, perm])
    torch.testing.assert_close(s_g_p, s_g[:, perm])
    # one v0 per configuration equals the configurations evaluated one v0 at a time
    v0 = torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5], dtype=F64)
    _, s_g_each = net(x, g, v0)
    for k in range(5):
        torch.testing.assert_close(s_g_each[k], net(x[k : k + 1], g[k : k + 1], float(v0[k]))[1][0])
    assert not torch.allclose(net(x, g, 0.5)[1], net(x, g, 2.0)[1])
    with pytest.raises(ValueError, match="hidden and depth"):
        TrapScore(2, hidden=0)


def test_the_minus_g_term_is_the_free_propulsion_score():
    """With the learned part f = 0, s = (0, -g): the score of g ~ N(0, I) independent of x,
    the exact answer at v0 = 0. Every network here starts from it."""
    torch.manual_seed(1)
    x, g = torch.randn(4, 6, 2, dtype=F64), torch.randn(4, 6, 2, dtype=F64)
    trap = TrapScore(2, hidden=8, depth=1).double()
    _switch_off(trap.net[-1])
    s_x, s_g = trap(x, g, 0.0)
    torch.testing.assert_close(s_g, _gaussian_score(g))
    torch.testing.assert_close(s_x, torch.zeros_like(x))
    mips = PropulsionScore(make_local_net(2, 2, 4, 8, 1, 2, 1.0)).double()
    _switch_off(mips.net.out)
    none, s_g = mips(x * 3, g, box=20.0)
    assert none is None
    torch.testing.assert_close(s_g, _gaussian_score(g))
    ring = ChainScore(make_local_net(4, 4, 4, 8, 1, 2, 1.0), spacing=2.0).double()
    _switch_off(ring.net.out)
    s_x, s_g = ring(x, g)
    torch.testing.assert_close(s_g, _gaussian_score(g))
    torch.testing.assert_close(s_x, torch.zeros_like(x))


def test_propulsion_score_is_permutation_equivariant_and_chunks_agree():
    torch.manual_seed(2)
    net = PropulsionScore(make_local_net(2, 2, 6, 16, 2, 4, 2.0)).double()
    box = 24.0
    x = (torch.rand(2, 50, 2, dtype=F64) - 0.5) * box
    g = torch.randn(2, 50, 2, dtype=F64)
    perm = torch.randperm(50)
    with torch.no_grad():
        _, out = net(x, g, box)
        _, out_perm = net(x[:, perm], g[:, perm], box)
        _, chunked = net(x, g, box, chunk=7)
    torch.testing.assert_close(out_perm, out[:, perm])
    torch.testing.assert_close(chunked, out)
    assert net.net.box == box
    # the same weights in another box (another packing fraction) run unchanged
    _, other = net(x * 2, g, 2 * box)
    assert other.shape == (2, 50, 2) and net.net.box == 2 * box
    with pytest.raises(ValueError, match="feature_dim"):
        PropulsionScore(make_local_net(4, 4, 4, 8, 1, 2, 1.0))


def test_chain_score_runs_at_any_n_and_commutes_with_cyclic_shifts():
    """Particle i sits at x_i + r_i on a periodic line: shifting every particle one site
    along the ring is a translation of the whole picture, which the network cannot see."""
    torch.manual_seed(3)
    net = ChainScore(make_local_net(4, 4, 4, 16, 2, 4, 3.0), spacing=3.0).double()
    for n in (12, 30):
        x, g = torch.randn(2, n, 2, dtype=F64), torch.randn(2, n, 2, dtype=F64)
        with torch.no_grad():
            s_x, s_g = net(x, g)
            s_x_r, s_g_r = net(x.roll(1, dims=1), g.roll(1, dims=1))
        assert s_x.shape == s_g.shape == (2, n, 2) and net.net.box == n * 3.0
        torch.testing.assert_close(s_x_r, s_x.roll(1, dims=1))
        torch.testing.assert_close(s_g_r, s_g.roll(1, dims=1))
    sites = net.sites(4, torch.zeros(1, dtype=F64))
    torch.testing.assert_close(sites[:, 0], torch.tensor([-6.0, -3.0, 0.0, 3.0], dtype=F64))
    with pytest.raises(ValueError, match="feature_dim"):
        ChainScore(make_local_net(2, 2, 4, 8, 1, 2, 1.0), 1.0)
