"""Tests for pflow_explore.interpolants against autograd, finite differences and endpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pflow_explore.interpolants import (
    GAMMAS,
    INTERPOLANTS,
    Gamma,
    Interpolant,
    SqrtGamma,
    get_gamma,
    get_interpolant,
)

F64 = torch.float64
RNG = np.random.default_rng(2)
TIMES = RNG.uniform(0.02, 0.98, size=6).tolist()
GAMMA_KW = {"sqrt": {"a": 1.7}, "sigmoid": {"f": 7.0}}
# (interpolant, gamma) pairs that are defined (trigonometric refuses gamma reaching 1)
PAIRS = [(i, g) for i in INTERPOLANTS for g in GAMMAS if not (i == "trigonometric" and g == "sin2")]


def _gamma(name: str) -> Gamma:
    return get_gamma(name, **GAMMA_KW.get(name, {}))


def _interp(name: str, gamma: str) -> Interpolant:
    return get_interpolant(name, gamma, **GAMMA_KW.get(gamma, {}))


def _autograd(fn, t: float) -> float:
    tt = torch.tensor(t, dtype=F64, requires_grad=True)
    out = fn(tt)
    return float(torch.autograd.grad(out, tt)[0]) if out.requires_grad else 0.0


@pytest.mark.parametrize("name", list(GAMMAS))
def test_gamma_derivative_matches_autograd(name):
    g = _gamma(name)
    for t in TIMES:
        assert float(g.dgamma(t)) == pytest.approx(_autograd(g.gamma, t), rel=1e-9, abs=1e-12)
        assert float(g.gamma_dgamma(t)) == pytest.approx(
            float(g.gamma(t)) * _autograd(g.gamma, t), rel=1e-9, abs=1e-12
        )


@pytest.mark.parametrize("name", list(GAMMAS))
def test_gamma_vanishes_at_ends_and_gamma_dgamma_is_finite(name):
    g = _gamma(name)
    for t, h in ((0.0, 1e-6), (1.0, -1e-6)):
        assert abs(float(g.gamma(t))) < 1e-12
        gg = float(g.gamma_dgamma(t))
        assert np.isfinite(gg)
        # gamma gamma' = (gamma^2)'/2: one-sided finite difference from the endpoint
        fd = (float(g.gamma(t + h)) ** 2 - float(g.gamma(t)) ** 2) / (2 * h)
        assert gg == pytest.approx(fd, abs=1e-5)
    assert (g.gamma(torch.linspace(0, 1, 101, dtype=F64)) >= -1e-15).all()
    grid_max = float(g.gamma(torch.linspace(0, 1, 4001, dtype=F64)).max())
    assert g.max() == pytest.approx(grid_max, abs=1e-6)


def test_sqrt_gamma_values():
    g = SqrtGamma(2.5)
    assert float(g.gamma(0.3)) == pytest.approx(np.sqrt(2.5 * 0.3 * 0.7))
    assert float(g.gamma_dgamma(0.0)) == pytest.approx(1.25)
    assert float(g.gamma_dgamma(1.0)) == pytest.approx(-1.25)
    assert torch.isinf(g.dgamma(0.0))


@pytest.mark.parametrize(("name", "gamma"), PAIRS)
def test_coefficient_derivatives_match_autograd(name, gamma):
    it = _interp(name, gamma)
    for t in TIMES:
        assert float(it.da(t)) == pytest.approx(_autograd(it.a, t), rel=1e-9, abs=1e-12)
        assert float(it.db(t)) == pytest.approx(_autograd(it.b, t), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("name", "gamma"), PAIRS)
def test_endpoint_conditions(name, gamma):
    it = _interp(name, gamma)
    gen = torch.Generator().manual_seed(0)
    x0, x1, z = (torch.randn(5, 3, generator=gen, dtype=F64) for _ in range(3))
    start, end = it.sample(0.0, x0, x1, z), it.sample(1.0, x0, x1, z)
    # mirror: I = x1 at every t, the endpoints agree with x0 only in law (rho0 = rho1)
    assert torch.allclose(start, x1 if name == "mirror" else x0, atol=1e-12)
    assert torch.allclose(end, x1, atol=1e-12)


@pytest.mark.parametrize(("name", "gamma"), PAIRS)
def test_velocity_target_is_time_derivative_of_sample(name, gamma):
    it = _interp(name, gamma)
    gen = torch.Generator().manual_seed(1)
    x0, x1, z = (torch.randn(4, 2, generator=gen, dtype=F64) for _ in range(3))
    h = 1e-6
    for t in TIMES:
        fd_i = (it.interpolate(t + h, x0, x1) - it.interpolate(t - h, x0, x1)) / (2 * h)
        assert torch.allclose(it.dt_interpolate(t, x0, x1), fd_i, atol=1e-6)
        fd_x = (it.sample(t + h, x0, x1, z) - it.sample(t - h, x0, x1, z)) / (2 * h)
        assert torch.allclose(it.velocity_target(t, x0, x1, z), fd_x, atol=1e-6)


@pytest.mark.parametrize("shape", ["flat", "column"])
def test_per_row_times_broadcast(shape):
    it = get_interpolant("trigonometric", "quadratic")
    gen = torch.Generator().manual_seed(3)
    n = len(TIMES)
    x0, x1, z = (torch.randn(n, 2, generator=gen) for _ in range(3))
    t = torch.tensor(TIMES, dtype=torch.float32)
    t = t if shape == "flat" else t[:, None]
    batch = it.velocity_target(t, x0, x1, z)
    rows = torch.cat(
        [
            it.velocity_target(s, x0[i : i + 1], x1[i : i + 1], z[i : i + 1])
            for i, s in enumerate(TIMES)
        ]
    )
    assert batch.dtype == torch.float32 and batch.shape == (n, 2)
    assert torch.allclose(batch, rows, atol=1e-5)


def test_dtypes():
    g = get_gamma("sin2")
    assert g.gamma(0.3).dtype == F64
    assert g.gamma(torch.tensor([0.3], dtype=torch.float32)).dtype == torch.float32
    it = get_interpolant("linear")
    x = torch.zeros(2, 2, dtype=torch.float32)
    assert it.sample(0.5, x, x, x).dtype == torch.float32


def test_trigonometric_is_variance_preserving():
    """a^2 + b^2 + gamma^2 = 1: standard normal endpoints give a standard normal x_t."""
    it = get_interpolant("trigonometric", "sqrt", a=2.0)
    t = torch.linspace(0, 1, 11, dtype=F64)
    assert torch.allclose(it.a(t) ** 2 + it.b(t) ** 2 + it.gamma.gamma(t) ** 2, torch.ones_like(t))


def test_defaults_and_named_interpolants():
    assert get_interpolant("encoder_decoder", None).gamma.name == "sin2"
    assert get_interpolant("one_sided", None).gamma.name == "zero"
    assert get_interpolant("mirror", None).gamma.name == "sqrt"
    assert get_interpolant("linear").gamma.name == "sqrt"
    assert get_interpolant("linear", SqrtGamma(0.5)).gamma.a == 0.5
    ed = get_interpolant("encoder_decoder", None)
    assert float(ed.a(0.5)) == 0.0 and float(ed.b(0.5)) == pytest.approx(0.0, abs=1e-30)
    assert float(ed.gamma.gamma(0.5)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: get_gamma("cubic"), "valid gammas: sqrt"),
        (lambda: SqrtGamma(0.0), "a > 0"),
        (lambda: get_gamma("sqrt", a=-1.0), "a > 0"),
        (lambda: get_gamma("quadratic", a=1.0), "does not take"),
        (lambda: get_interpolant("bridge"), "valid interpolants: linear"),
        (lambda: get_interpolant("trigonometric", "sin2"), "gamma\\(t\\) < 1"),
        (lambda: get_interpolant("trigonometric", "sqrt", a=4.0), "gamma\\(t\\) < 1"),
        (lambda: get_interpolant("linear", SqrtGamma(), a=2.0), "gamma_kw"),
        (lambda: get_interpolant("linear").a(1.5), "t must lie in \\[0, 1\\]"),
        (lambda: get_gamma("sin2").gamma(torch.tensor([0.2, -0.1])), "t must lie"),
    ],
)
def test_bad_input_raises_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
