"""theory/mean_reverting.py: the sympy derivations against the numerics of
``mean_reverting`` (schedule, one solver step) and finite differences, on random values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch

from pflow_explore import mean_reverting as mr
from pflow_explore.theory import mean_reverting as tm

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def test_marginal_moments_match_the_schedule():
    d = tm.marginal_moments()
    assert d["residuals for alpha = exp(-Theta(t))"] == sp.Tuple(0, 0)
    mean_fn = sp.lambdify((tm.t, tm.theta, tm.lam_, tm.x0, tm.mu), d.result.rhs[0])
    var_fn = sp.lambdify((tm.t, tm.theta, tm.lam_, tm.x0, tm.mu), d.result.rhs[1])
    g = np.random.default_rng(0)
    for _ in range(5):
        sch = mr.MRSchedule(T=g.uniform(1, 50), lambda_=g.uniform(0.1, 1), schedule="constant")
        t, x0, mu = g.uniform(0, sch.T), g.normal(), g.normal()
        x = torch.tensor([[x0]], dtype=F64)
        assert mean_fn(t, sch.c, sch.lambda_, x0, mu) == pytest.approx(
            float(mu + sch.alpha(t) * (x - mu)), rel=1e-12
        )
        assert var_fn(t, sch.c, sch.lambda_, x0, mu) == pytest.approx(
            float(sch.sigmabar(t)) ** 2, rel=1e-12
        )


def test_log_snr_rate_against_finite_differences():
    d = tm.log_snr_rate()
    assert d["checks (both 0)"] == sp.Tuple(0, 0)
    g = np.random.default_rng(1)
    sch = mr.MRSchedule(T=30.0, lambda_=0.4, schedule="cosine", alpha_end=0.01)
    for t in g.uniform(1, 29, 5):
        fd = float(sch.lam(t + 1e-5) - sch.lam(t - 1e-5)) / 2e-5
        claim = -float(sch.theta(t)) * sch.lambda_**2 / float(sch.sigmabar(t)) ** 2
        assert fd == pytest.approx(claim, rel=1e-6)
        a_fn = sp.lambdify((tm.l, tm.lam_), d["alpha(lam)"].rhs)
        assert a_fn(float(sch.lam(t)), sch.lambda_) == pytest.approx(float(sch.alpha(t)), rel=1e-10)


@pytest.mark.parametrize("method", ["mrs_ode_noise", "mrs_ode_data"])
def test_first_order_update_is_the_solver_step(method):
    d = tm.first_order_update()
    assert d["minus the card's forms (both 0)"] == sp.Tuple(0, 0)
    args = (tm.y_s, tm.eps, tm.d, tm.l_s, tm.l_t, tm.lam_)
    noise_fn, data_fn = (sp.lambdify(args, e) for e in d.result.rhs)
    sch, g = mr.MRSchedule(), torch.Generator().manual_seed(2)
    mu, x, x0 = (torch.randn(4, 1, dtype=F64, generator=g) for _ in range(3))
    times = torch.tensor([70.0, 20.0], dtype=F64)
    step = next(mr.steps(method, lambda y, t: x0, sch, x, mu, times))
    eps = sch.eps_from_x0(x, x0, 70.0, mu)
    l_s, l_t = float(sch.lam(70.0)), float(sch.lam(20.0))
    fn = noise_fn if method == "mrs_ode_noise" else data_fn
    want = fn((x - mu).numpy(), eps.numpy(), (x0 - mu).numpy(), l_s, l_t, sch.lambda_)
    assert np.allclose(step.x_next - mu, want, atol=1e-12)
    # negative control: the update held at the noisy end's alpha is not the solver's
    assert not np.allclose(step.x_next - mu, want * 1.01, atol=1e-6)


def test_taylor_coefficients_match_phi():
    d = tm.taylor_coefficients()
    assert d["differences"] == sp.Tuple(0, 0, 0)
    for h in (1e-5, 0.3, 2.0):
        for k, c in enumerate(d.result.rhs):
            want = float(c.subs(tm.h, sp.Float(h, 40)).evalf(30))
            got = float(h ** (k + 1) * mr.phi(k + 1, torch.tensor(-h, dtype=F64)))
            assert got == pytest.approx(want, rel=1e-8), (h, k)
    assert math.isfinite(float(mr.phi(3, torch.tensor(0.0, dtype=F64))))


def test_derivations_render():
    for make in (
        tm.marginal_moments,
        tm.log_snr_rate,
        tm.first_order_update,
        tm.taylor_coefficients,
    ):
        text, latex = str(make()), make()._repr_latex_()
        assert text.count("\n") >= 2 and latex.startswith("$")
