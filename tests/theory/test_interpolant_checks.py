"""Tests for theory.interpolant_checks against independent numerics: the 1D Gaussian closed
form of E[z | x_t], Monte-Carlo z-scores of exact and wrong fields, second-order grid
residuals, and the moment equations' KL (zero without a perturbation, the closed form
d (e^{2k} - 1 - 2k) / 2 for the ODE)."""

from __future__ import annotations

import math

import torch

from pflow_explore.datasets.toy2d import (
    TOY_2D_MIXTURES,
    eight_gaussians,
    random_mixture,
    single_gaussian,
)
from pflow_explore.interpolants import get_interpolant
from pflow_explore.theory import interpolant_checks as C
from pflow_explore.theory.interpolant_fields import InterpolantFields

F64 = torch.float64


def mixture_fields() -> InterpolantFields:
    return InterpolantFields(
        eight_gaussians(), TOY_2D_MIXTURES["mixture"](), get_interpolant("linear", "sqrt")
    )


def gaussian_affine(dim: int, seed: int) -> C.AffineFields:
    gen = torch.Generator().manual_seed(seed)
    rho1 = random_mixture(1, dim, generator=gen, mean_scale=1.0, std_range=(0.3, 1.2))
    rho0 = single_gaussian(torch.zeros(dim, dtype=F64))
    return C.AffineFields(InterpolantFields(rho0, rho1, get_interpolant("linear", "sqrt")))


def mixtures_1d(seed: int):
    gen = torch.Generator().manual_seed(seed)
    rho0 = random_mixture(2, 1, generator=gen, mean_scale=1.0, std_range=(0.3, 0.6))
    rho1 = random_mixture(3, 1, generator=gen, mean_scale=1.5, std_range=(0.2, 0.5))
    return rho0, rho1


def test_conditional_expectations_match_the_scalar_closed_form():
    # 1D Gaussians: E[z | x_t = x] is linear in x (sympy closed form of the derivation)
    rho0, rho1 = single_gaussian([0.5], [[0.8]]), single_gaussian([-1.0], [[0.3]])
    interp = get_interpolant("trigonometric", "sqrt")
    gen = torch.Generator().manual_seed(11)
    x0, x1 = rho0.sample(400_000, gen).double(), rho1.sample(400_000, gen).double()
    t = 0.35
    x = torch.tensor([[-1.2], [0.0], [0.9]], dtype=F64)
    est = C.conditional_expectations(interp, t, x, x0, x1)
    a, b, g = float(interp.a(t)), float(interp.b(t)), float(interp.gamma.gamma(t))
    m_t, c_t = a * 0.5 + b * -1.0, a * a * 0.8 + b * b * 0.3 + g * g
    exact_s = -(x - m_t) / c_t
    z_scores = (est["s"] - exact_s) / est["s_se"]
    assert float(z_scores.abs().max()) < 4
    assert float(est["ess"].min()) > 1000


def test_monte_carlo_check_passes_for_exact_fields_and_fails_for_a_wrong_one():
    fields = mixture_fields()
    gen = torch.Generator().manual_seed(12)
    ok = C.fields_vs_monte_carlo(fields, (0.3, 0.6), 2, 40_000, gen)
    assert len(ok.z) == 2 * 2 * 2 * 2 and ok.max_abs_z < 4
    wrong = mixture_fields()
    wrong.velocity = wrong.mean_velocity  # v instead of b: misses the gamma' z part
    bad = C.fields_vs_monte_carlo(wrong, (0.3, 0.6), 2, 40_000, torch.Generator().manual_seed(12))
    assert bad.max_abs_z > 10


def test_residuals_shrink_at_second_order_and_not_for_a_wrong_velocity():
    one0, one1 = mixtures_1d(3)
    fields = InterpolantFields(one0, one1, get_interpolant("linear", "sqrt"))
    res = C.residual_convergence(fields, 0.4, (0.0, 0.5), levels=3)
    assert res.rms.shape == (2, 3)
    assert bool(((res.ratio > 3.5) & (res.ratio < 4.5)).all()), res.ratio
    torch.testing.assert_close(res.h[:-1] / res.h[1:], torch.full((2,), 2.0, dtype=F64))

    class Wrong(InterpolantFields):
        def drift(self, x, t, eps):
            return super().drift(x, t, eps) + 0.05

    bad = C.residual_convergence(Wrong(one0, one1, fields.interpolant), 0.4, (0.0,), levels=3)
    assert float(bad.ratio.max()) < 1.5


def test_unperturbed_sde_keeps_the_exact_marginal():
    # with k = 0 the moment equations of the SDE (exact b + eps s, noise sqrt(2 eps)) must
    # return rho1 itself for every eps: an independent check of b + eps s = Fokker-Planck
    affine = gaussian_affine(3, 21)
    for eps in (0.0, 0.5, 2.0):
        kl, _ = C.perturbed_kl(affine, 1e-12, eps, 400)
        assert kl < 1e-7


def test_ode_kl_under_a_mean_pull_is_the_closed_form_and_the_sde_is_under_its_bound():
    # delta = -k (x - m_t) on the ODE scales the covariance by e^{-2k} (mean kept):
    # KL(N(m, C) || N(m, e^{-2k} C)) = d (e^{2k} - 1 - 2k) / 2, whatever C
    affine = gaussian_affine(2, 5)
    for k in (0.3, 1.0):
        kl, bound = C.perturbed_kl(affine, k, 0.0, 400)
        assert math.isclose(kl, 2 * (math.exp(2 * k) - 1 - 2 * k) / 2, rel_tol=1e-6)
        assert bound == math.inf
        kl_sde, bound_sde = C.perturbed_kl(affine, k, 1.0, 400)
        assert 0 < kl_sde <= bound_sde < math.inf
