"""theory/code_gaussian.py: the Langevin recursion against direct matrix iteration, the
trade-off formulas against Monte Carlo on random parameters, limits."""

from __future__ import annotations

import pytest
import torch

from pflow_explore.theory import code_gaussian as cg

F64 = torch.float64


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_channel_equals_iterating_the_linear_maps(seed):
    gen = torch.Generator().manual_seed(seed)
    lam = 0.05 + torch.rand(4, generator=gen, dtype=F64)
    sigma = 0.2 + 0.7 * float(torch.rand(1, generator=gen))
    alpha, step, k = (1 - sigma**2) ** 0.5, 0.05 + 0.5 * float(torch.rand(1, generator=gen)), 7
    ch = cg.code_map(lam, alpha, sigma, step, k)
    a = 1 / (alpha**2 * lam + sigma**2)
    e = step * sigma**2
    r = ((alpha**2 * lam + sigma**2) / lam).sqrt()
    mean, var = r.clone(), torch.zeros_like(lam)  # encode u0 = 1
    for _ in range(k):
        mean, var = (1 - e * a) * mean, (1 - e * a) ** 2 * var + 2 * e
    mean, var = (1 - e * a) * mean, (1 - e * a) ** 2 * var
    assert torch.allclose(ch.gain, mean / r) and torch.allclose(ch.noise, var / r**2)
    long = cg.code_map(lam, alpha, sigma, step, 5000)  # the stationary law: the prior, biased
    assert (
        torch.allclose(long.noise, (1 - e * a) ** 2 * lam * 2 / (2 - e * a), rtol=1e-6)
        and long.gain.max() < 1e-6
    )


@pytest.mark.parametrize("seed", [3, 4])
def test_tradeoff_matches_monte_carlo(seed):
    gen = torch.Generator().manual_seed(seed)
    d, n = 5, 400_000
    lam = 0.1 + torch.rand(d, generator=gen, dtype=F64)
    m = torch.randn(d, generator=gen, dtype=F64)
    s = 0.4
    for ch in (cg.code_map(lam, 0.8, 0.6, 0.3, 6), cg.sdedit_map(lam, 0.7, 0.71)):
        x = lam.sqrt() * torch.randn(n, d, generator=gen, dtype=F64)
        y = x + m + s * torch.randn(n, d, generator=gen, dtype=F64)
        out = ch.gain * y + ch.noise.sqrt() * torch.randn(n, d, generator=gen, dtype=F64)
        t = cg.tradeoff(lam, m, s, ch)
        assert abs(((out - y) ** 2).sum(1).mean() - t["to_input"]) < 0.02 * t["to_input"]
        assert abs(((out - x) ** 2).sum(1).mean() - t["to_clean"]) < 0.02 * t["to_clean"]
        fd = (out.mean(0) ** 2).sum() + ((out.var(0).sqrt() - lam.sqrt()) ** 2).sum()
        assert abs(float(fd) - t["frechet"]) < 0.02 * t["frechet"] + 1e-3


def test_sdedit_limits():
    lam = torch.tensor([0.3, 1.0], dtype=F64)
    near = cg.sdedit_map(lam, 0.99999, 0.0045)
    assert torch.allclose(near.gain, torch.ones(2, dtype=F64), atol=1e-4)
    far = cg.sdedit_map(lam, 0.01, 0.99995)
    assert far.gain.max() < 1e-3 and torch.allclose(far.noise, lam, rtol=1e-2)


def test_bad_level_raises():
    with pytest.raises(ValueError):
        cg.code_map(torch.ones(2), 0.5, 1.2, 0.1, 3)
