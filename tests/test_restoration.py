"""restoration.py: the degradations, the linear-Gaussian problem against the joint-Gaussian
conditioning formula and Monte Carlo, the network's shapes, and the denoiser a sampler reads
against the exact one of Gaussian data."""

from __future__ import annotations

import pytest
import torch

from pflow_explore import mean_reverting as mr
from pflow_explore import restoration as rs

F64 = torch.float64


def test_degradations_keep_shape_and_do_what_they_say():
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gen = torch.Generator().manual_seed(1)
    noisy = rs.degrade("denoise", x, gen)
    assert noisy.shape == x.shape and 0.15 < float((noisy - x).std()) < 0.25
    blurred = rs.degrade("deblur", x, gen)
    assert float((blurred - x).abs().mean()) > 0.1  # blur moved the pixels
    holes = rs.degrade("inpaint", x, gen)
    hidden = holes == 0
    assert int(hidden.flatten(1).sum(1).min()) >= 9  # a 3x3 hole per 8x8 image
    assert torch.equal(holes[~hidden], x[~hidden])
    x0, mu = rs.degrade_thirds(x, gen)
    assert x0.shape == mu.shape == (6, 64)
    with pytest.raises(ValueError, match="task"):
        rs.degrade("upscale", x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_gaussian_posterior_matches_conditioning_and_monte_carlo(seed):
    d = 6
    m, P, y, _ = rs.linear_gaussian_problem(d, torch.Generator().manual_seed(seed), noise=0.1)
    i = torch.arange(d, dtype=F64)
    C = 0.25 * torch.exp(-(i[:, None] - i[None]).abs() / 2)
    B = torch.exp(-((i[:, None] - i[None]) ** 2) / 2)
    B = B / B.sum(1, keepdim=True)
    gain = C @ B.T @ torch.linalg.inv(B @ C @ B.T + 0.01 * torch.eye(d, dtype=F64))
    assert torch.allclose(m, gain @ y, atol=1e-10)  # the joint-Gaussian formula
    assert torch.allclose(P, C - gain @ B @ C, atol=1e-10)
    # Monte Carlo: x - E[x | y] has covariance P whatever y is
    g = torch.Generator().manual_seed(seed + 10)
    n = 40000
    x = torch.randn(n, d, generator=g, dtype=F64) @ torch.linalg.cholesky(C).T
    ys = x @ B.T + 0.1 * torch.randn(n, d, generator=g, dtype=F64)
    resid = x - ys @ gain.T
    se = ((P.diagonal()[:, None] * P.diagonal()[None] + P**2) / n).sqrt()
    assert ((torch.cov(resid.T) - P).abs() < 5 * se).all()


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_network_shapes_and_errors(kind):
    net = rs.RestorationNet((1, 8, 8), 100.0, kind, hidden=16, depth=1, base=8, mults=(1, 2))
    x, mu = torch.randn(3, 64), torch.randn(3, 64)
    assert net(x, 50.0, mu).shape == (3, 64)
    assert net(x, torch.tensor([1.0, 50.0, 99.0]), mu).shape == (3, 64)
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(3, 63), 1.0, mu)
    with pytest.raises(ValueError, match="kind"):
        rs.RestorationNet((1, 8, 8), 100.0, "vit")


def test_denoiser_of_an_exact_eps_network_is_the_exact_denoiser():
    sch = mr.MRSchedule()
    g = torch.Generator().manual_seed(0)
    a = 0.3 * torch.randn(3, 3, generator=g, dtype=F64)
    mean, mu = torch.randn(3, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
    ex = mr.MixtureMR.gaussian(mean, a @ a.T + 0.05 * torch.eye(3, dtype=F64), sch, mu)
    x = ex.sample(50, 60.0, g)
    eps_net = lambda y, t, m: ex.eps(y, float(t))
    x0_net = lambda y, t, m: ex.denoiser(y, float(t))
    for net, prediction in ((eps_net, "eps"), (x0_net, "x0")):
        got = rs.denoiser_of(net, sch, mu, prediction)(x, 60.0)
        assert torch.allclose(got, ex.denoiser(x, 60.0), atol=1e-9)
    with pytest.raises(ValueError, match="prediction"):
        rs.denoiser_of(eps_net, sch, mu, "v")


def test_x0_network_learns_and_the_loss_falls():
    """A short fit of the x0 loss on a fixed 4-d Gaussian restoration: the loss falls by half
    (a wrong target, e.g. the noise for an x0-network, would not fall this way)."""
    from pflow_explore.training import fit

    sch = mr.MRSchedule()
    m, P, y, _ = rs.linear_gaussian_problem(4, torch.Generator().manual_seed(0))
    L = torch.linalg.cholesky(P)

    def pairs(n, g):
        x0 = m + torch.randn(n, 4, generator=g, dtype=F64) @ L.T
        return x0.float(), y.float().expand(n, 4)

    torch.manual_seed(0)
    net = rs.RestorationNet((1, 2, 2), sch.T, hidden=64, depth=2)
    loss = rs.objective(pairs, sch, 128, torch.Generator().manual_seed(1), prediction="x0")
    res = fit(net, loss, steps=300, lr=2e-3, progress=False)
    first, last = sum(res.losses[:20]) / 20, sum(res.losses[-20:]) / 20
    assert last < 0.5 * first
