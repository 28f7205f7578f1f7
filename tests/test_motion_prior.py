"""motion_prior.py: the exact log-likelihood against a Gaussian's closed form (a linear
velocity whose flow is known), the divergence against a finite-difference trace, the SDS
gradient's direction, and the surrogate's ordering."""

from __future__ import annotations

import math

import torch

from pflow_explore import motion_prior as mp


class GaussianVelocity(torch.nn.Module):
    """The exact flow-matching velocity of data N(m, diag(s^2)): a linear field."""

    def __init__(self, m, s):
        super().__init__()
        self.m, self.s = m, s

    def forward(self, x, t, y=None):
        t = t[:, None]
        var = (1 - t) ** 2 + t**2 * self.s**2
        mean = t * self.m
        return self.m + (x - mean) * (t * self.s**2 - (1 - t)) / var


def test_exact_log_likelihood_of_a_gaussian():
    gen = torch.Generator().manual_seed(0)
    m, s = (
        torch.randn(4, generator=gen, dtype=torch.float64),
        0.3 + torch.rand(4, generator=gen, dtype=torch.float64),
    )
    x = m + s * torch.randn(6, 4, generator=gen, dtype=torch.float64)
    exact = (-0.5 * ((x - m) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)).sum(1)
    got = mp.log_likelihood(GaussianVelocity(m, s), x, None, 32)
    assert torch.allclose(got, exact, atol=1e-6)


def test_divergence_is_the_jacobian_trace():
    torch.manual_seed(0)
    net = mp.make_prior(6, hidden=16, depth=2)
    x, y = torch.randn(3, 6, dtype=torch.float64), torch.tensor([0, 1, 2])
    net = net.double()
    div = mp.divergence(net, x, 0.4, y)
    h, fd = 1e-6, torch.zeros(3, dtype=torch.float64)
    t = torch.full((3,), 0.4, dtype=torch.float64)
    for i in range(6):
        e = torch.zeros(6, dtype=torch.float64)
        e[i] = h
        fd += (net(x + e, t, y)[:, i] - net(x - e, t, y)[:, i]) / (2 * h)
    assert torch.allclose(div, fd, atol=1e-6)


def test_sds_pulls_towards_the_prior_and_the_surrogate_ranks_typical_clips_higher():
    m, s = torch.tensor([1.0, -1.0]), torch.tensor([0.1, 0.1])
    v = GaussianVelocity(m, s)
    x = torch.zeros(1, 2, requires_grad=True)
    mp.sds_loss(v, x, None, torch.Generator().manual_seed(0), n_draws=64).backward()
    assert (-x.grad[0] * m).sum() > 0  # the descent direction points at the data mean
    gen = torch.Generator().manual_seed(1)
    t, z = torch.rand(16, generator=gen), torch.randn(16, 2, generator=gen)
    lp = mp.surrogate_log_prob(v, torch.stack([m, torch.zeros(2), -m]), None, t, z)
    assert lp[0] > lp[1] > lp[2]
