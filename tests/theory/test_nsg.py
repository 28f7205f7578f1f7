"""theory/nsg.py: the identity v^T NSG = -1 for a translating Gaussian, by sympy and by
autograd on random covariances, velocities and points; the closed form against autograd;
a compressive (zoom) flow breaks the identity though it obeys the continuity equation."""

from __future__ import annotations

import pytest
import sympy as sp
import torch

from pflow_explore.theory import nsg as T

F64 = torch.float64


def random_gaussian(seed: int, d: int):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=F64)
    cov = a @ a.T + 0.3 * torch.eye(d, dtype=F64)
    mu0, v = torch.randn(2, d, generator=g, dtype=F64)
    x = torch.randn(50, d, generator=g, dtype=F64) * 2
    return cov, mu0, v, x


def test_sympy_identity_and_zoom():
    d = T.identity_derivation()
    assert sp.simplify(d["v^T NSG"] + 1) == 0
    assert sp.simplify(d["zoom: continuity residual d_t log p + div v + v.s"]) == 0
    zoom = d["zoom: v^T NSG"]
    values = {"x_1": 1.0, "x_2": 0.5, "mu_1": 0, "mu_2": 0, "a": 1, "b": 0, "c": 1, "k": 0.3,
              "t": 0.5}  # fmt: skip
    value = zoom.subs({sym: values[sym.name] for sym in zoom.free_symbols})
    assert abs(float(value) + 1) > 0.1


@pytest.mark.parametrize("seed", range(4))
def test_autograd_identity_and_closed_form_on_random_gaussians(seed):
    d = 2 + seed
    cov, mu0, v, x = random_gaussian(seed, d)
    t = 0.3 + seed * 0.4
    auto = T.autograd_nsg(T.translating(mu0, v, cov), x, t)
    assert torch.allclose(auto @ v, -torch.ones(len(x), dtype=F64), atol=1e-9)
    assert torch.allclose(
        auto, T.translating_gaussian_nsg(x, t, mu0, v, cov), rtol=1e-8, atol=1e-10
    )


def test_a_wrong_velocity_or_formula_fails():
    cov, mu0, v, x = random_gaussian(7, 3)
    auto = T.autograd_nsg(T.translating(mu0, v, cov), x, 0.5)
    assert ((auto @ (1.1 * v)) + 1).abs().max() > 1e-3  # the identity pins v
    wrong = -(x - mu0 - v * 0.5) / ((x - mu0 - v * 0.5) @ v)[:, None]  # Sigma^-1 forgotten
    assert not torch.allclose(auto, wrong, atol=1e-3)


@pytest.mark.parametrize("rate", [-0.3, 0.2])
def test_zoom_breaks_the_identity_but_keeps_the_continuity_equation(rate):
    cov, mu0, _, x = random_gaussian(3, 3)
    t = 0.5
    log_p = T.zooming(mu0, cov, rate)
    nsg = T.autograd_nsg(log_p, x, t)
    vz = T.zoom_velocity(x, t, mu0, rate)
    assert ((nsg * vz).sum(1) + 1).abs().median() > 0.05
    # continuity: d_t log p = -div v - v . s with div v = d rate / a(t), by finite differences
    h = 1e-6
    tn = lambda tt: torch.full((len(x),), tt, dtype=F64)
    dt = (log_p(x, tn(t + h)) - log_p(x, tn(t - h))) / (2 * h)
    xs = x.clone().requires_grad_(True)
    (s,) = torch.autograd.grad(log_p(xs, tn(t)).sum(), xs)
    div = 3 * rate / (1 + rate * t)
    assert torch.allclose(dt, -div - (vz * s).sum(1), atol=1e-5)
