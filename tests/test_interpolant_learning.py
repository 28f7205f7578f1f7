"""Tests for interpolant_learning against independent numerics: the losses' minimisers (exact
fields of Gaussian endpoints), the antithetic variance reduction, field errors of the exact
and of a scaled velocity, the data samplers' moments, and an eps sweep of the exact fields
against target samples."""

from __future__ import annotations

import pytest
import torch

from pflow_explore import interpolant_learning as L
from pflow_explore import samplers
from pflow_explore.datasets.toy2d import (
    TOY_2D_MIXTURES,
    eight_gaussians,
    random_mixture,
    single_gaussian,
)
from pflow_explore.interpolants import get_interpolant
from pflow_explore.theory.interpolant_fields import InterpolantFields

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


def gaussian_fields(seed: int = 0, interp: str = "linear") -> InterpolantFields:
    """N(0, I) -> N(m1, C1) in 2D, random mean and covariance (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    rho1 = random_mixture(1, 2, generator=gen, mean_scale=1.0, std_range=(0.3, 1.2))
    rho0 = single_gaussian(torch.zeros(2, dtype=F64))
    return InterpolantFields(rho0, rho1, get_interpolant(interp, "sqrt"))


def mixture_fields() -> InterpolantFields:
    return InterpolantFields(
        eight_gaussians(), TOY_2D_MIXTURES["mixture"](), get_interpolant("linear", "sqrt")
    )


class ExactPair:
    """The exact fields in the shape of :class:`LearnedPair` (velocity, denoiser, score)."""

    def __init__(self, fields: InterpolantFields, scale_b: float = 1.0) -> None:
        self.fields, self.scale_b = fields, scale_b

    def velocity(self, x, t):
        return self.scale_b * self.fields.velocity(x, float(t))

    def denoiser(self, x, t):
        return self.fields.denoiser(x, float(t))

    def score(self, x, t):
        return self.fields.score(x, float(t))

    def parameters(self):
        yield torch.zeros(1)


class Shifted(torch.nn.Module):
    """Exact b and eta at one time, plus constant offsets (c_b, c_eta)."""

    def __init__(self, fields, t, c_b, c_eta):
        super().__init__()
        self.fields, self.t, self.c_b, self.c_eta = fields, t, c_b, c_eta

    def velocity(self, x, t):
        return self.fields.velocity(x, self.t) + self.c_b

    def denoiser(self, x, t):
        return self.fields.denoiser(x, self.t) + self.c_eta


@pytest.mark.parametrize("t0", [0.2, 0.7])
def test_losses_are_minimised_by_the_exact_fields(t0):
    # E L(f + c) - E L(f) = |c|^2 / (2 d) when f is the exact conditional expectation: the
    # cross term E[(f - target) . c] vanishes. Common random numbers make the difference
    # exact up to that zero-mean cross term.
    fields = gaussian_fields(seed=1, interp="trigonometric")
    interp = fields.interpolant
    gen = torch.Generator().manual_seed(1)
    n = 50_000
    x0 = fields.rho0.sample(n, gen).double()
    x1 = fields.rho1.sample(n, gen).double()
    z = torch.randn(n, 2, generator=gen, dtype=F64)
    t = torch.full((n,), t0, dtype=F64)
    zero = torch.zeros(2, dtype=F64)
    base_b, base_eta = L.interpolant_losses(Shifted(fields, t0, zero, zero), interp, x0, x1, t, z)
    c = torch.tensor([0.3, -0.2], dtype=F64)
    lb, le = L.interpolant_losses(Shifted(fields, t0, c, c), interp, x0, x1, t, z)
    expected = float((c**2).sum()) / 4  # |c|^2 / (2 d), d = 2
    assert float(lb - base_b) == pytest.approx(expected, abs=0.01)
    assert float(le - base_eta) == pytest.approx(expected, abs=0.005)

    # the mean velocity v = E[d_t I | x_t] is not the minimiser of L_b: it costs E|v - b|^2 / 2d
    class MeanVelocity(Shifted):
        def velocity(self, x, t):
            return self.fields.mean_velocity(x, self.t)

    lv, _ = L.interpolant_losses(MeanVelocity(fields, t0, zero, zero), interp, x0, x1, t, z)
    xt = interp.sample(t0, x0[:20000], x1[:20000], z[:20000])
    gap = ((fields.mean_velocity(xt, t0) - fields.velocity(xt, t0)) ** 2).sum(1).mean() / 4
    assert float(lv - base_b) == pytest.approx(float(gap), rel=0.1)


def test_antithetic_noise_cancels_the_singular_part_of_the_b_loss():
    # near t = 0 the target's gamma' z term is huge (gamma' ~ 1 / (2 sqrt t)); with +-z the
    # per-sample loss of a smooth b varies far less than with z alone
    fields = gaussian_fields()
    interp = fields.interpolant
    gen = torch.Generator().manual_seed(2)
    n, t0 = 20_000, 1e-4
    x0 = fields.rho0.sample(n, gen).double()
    x1 = fields.rho1.sample(n, gen).double()
    z = torch.randn(n, 2, generator=gen, dtype=F64)
    t = torch.full((n,), t0, dtype=F64)
    xt = interp.sample(t, x0, x1, z)
    b = fields.velocity(xt, t0)
    single = 0.5 * (b**2).sum(1) - (interp.velocity_target(t, x0, x1, z) * b).sum(1)
    x_minus = interp.sample(t, x0, x1, -z)
    b_minus = fields.velocity(x_minus, t0)
    pair = 0.5 * (
        single
        + 0.5 * (b_minus**2).sum(1)
        - (interp.velocity_target(t, x0, x1, -z) * b_minus).sum(1)
    )
    assert float(pair.var()) < 0.01 * float(single.var())


def test_training_times_stay_inside_the_interval():
    t = L.training_times(10_000, 0.05, torch.Generator().manual_seed(0))
    assert float(t.min()) >= 0.05 and float(t.max()) <= 0.95
    assert float(t.mean()) == pytest.approx(0.5, abs=0.01)


def test_field_errors_are_zero_for_the_exact_fields_and_see_a_scaled_b():
    fields = mixture_fields()
    times = torch.tensor([0.2, 0.5, 0.8])
    gen = torch.Generator().manual_seed(10)
    exact = L.field_errors(ExactPair(fields), fields, times, 300, gen)
    assert exact.b_total < 1e-6 and exact.eta_total < 1e-6  # the model sees float32 x
    scaled = L.field_errors(ExactPair(fields, scale_b=1.1), fields, times, 300, gen)
    assert scaled.b_total == pytest.approx(0.1, rel=1e-5)
    torch.testing.assert_close(scaled.b, torch.full((3,), 0.1, dtype=F64), rtol=1e-5, atol=0)


def test_mixture_sampler_has_the_mixture_moments():
    gm = TOY_2D_MIXTURES["mixture"]()
    x = L.mixture_sampler(gm)(200_000, torch.Generator().manual_seed(3)).double()
    w, mu, cov = gm.weights, gm.means, gm.covs
    mean = w @ mu  # law of total expectation / variance, independent of the sampler
    second = torch.einsum("k,kij->ij", w, cov) + torch.einsum("k,ki,kj->ij", w, mu, mu)
    torch.testing.assert_close(x.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), second - torch.outer(mean, mean), atol=0.05, rtol=0)
    assert x.dtype == torch.float32 or x.dtype == F64


def test_rows_sampler_draws_rows_of_the_data():
    data = torch.arange(12.0).reshape(6, 2)
    x = L.rows_sampler(data)(500, torch.Generator().manual_seed(0))
    assert x.shape == (500, 2)
    assert bool((x[:, 1] == x[:, 0] + 1).all()) and bool((x[:, 0] % 2 == 0).all())
    assert len(torch.unique(x[:, 0])) == 6


def test_eps_sweep_of_the_exact_fields_reaches_the_floor_and_a_wrong_b_does_not():
    fields = mixture_fields()
    sample0 = L.mixture_sampler(fields.rho0)
    sample1 = L.mixture_sampler(fields.rho1)
    pair = L.PairData("mixtures", 2, sample0, sample1, sample1, fields.rho0, fields.rho1)

    def draw(model, x0, eps, gen):
        grid = samplers.cosine_grid(40 if eps == 0 else 200)
        return samplers.sample(model, x0.double(), eps, grid, gen).x

    def sweep(model):
        gens = lambda i: torch.Generator().manual_seed(100 + i)  # noqa: E731
        gen = torch.Generator().manual_seed(4)
        return L.eps_sweep(
            model, pair, (0.0, 0.5), 800, 50, draw, gen, gens, 0, torch.device("cpu")
        )

    sw = sweep(ExactPair(fields))
    assert sw.eps.tolist() == [0.0, 0.5] and sw.samples.shape == (2, 50, 2)
    assert sw.target.shape == (50, 2) and sw.frechet is None
    # the exact transport: samples as close to the target as independent target sets are
    assert float(sw.energy.max()) < 3 * sw.floor_energy
    assert sw.source_energy > 10 * sw.floor_energy
    bad = sweep(ExactPair(fields, scale_b=0.6))
    assert float(bad.energy[0]) > 3 * bad.floor_energy


@pytest.mark.parametrize("eps", [0.0, 0.5, 2.0])
def test_generate_with_the_exact_fields_reaches_rho1(eps):
    # Gaussian endpoints: the chapter's ODE and every SDE from the exact (b, s) end at N(m1, C1)
    fields = gaussian_fields(seed=4)
    gen = torch.Generator().manual_seed(5)
    n = 4000
    x0 = fields.rho0.sample(n, gen).double()
    x = L.generate(
        ExactPair(fields), x0, eps, 40, 200, torch.Generator().manual_seed(6), batch=1500
    )
    m1, c1 = fields.rho1.means[0], fields.rho1.covs[0]
    se_mean = (torch.diagonal(c1) / n).sqrt()
    assert bool(((x.mean(0) - m1).abs() < 4 * se_mean + 0.01).all()), (x.mean(0), m1)
    torch.testing.assert_close(x.T.cov(), c1, atol=0.05, rtol=0.08)
    # the criterion separates: a wrong velocity (b scaled by 0.7) stops short of the mean
    if eps == 0:
        bad = L.generate(ExactPair(fields, scale_b=0.7), x0, eps, 40, 200)
        assert bool(((bad.mean(0) - m1).abs() > 4 * se_mean + 0.01).any())


def test_field_error_standard_error_matches_the_spread_over_independent_samples():
    """The bootstrap SE of b_total against an independent estimate of the same thing: the
    spread of b_total over independent sample sets (a b with a constant offset, so the error
    varies from sample to sample); a b off by a constant factor has a sample-free error."""
    fields = mixture_fields()
    times = torch.tensor([0.3, 0.6])

    class Offset(ExactPair):
        def velocity(self, x, t):
            return self.fields.velocity(x, float(t)) + torch.tensor([0.4, -0.2], dtype=x.dtype)

    gens = [torch.Generator().manual_seed(i) for i in range(16)]
    runs = [L.field_errors(Offset(fields), fields, times, 200, g) for g in gens]
    spread = float(torch.tensor([r.b_total for r in runs]).std())
    ses = torch.tensor([r.b_total_se for r in runs])
    assert float(ses.median()) == pytest.approx(spread, rel=0.5)
    scaled = L.field_errors(ExactPair(fields, scale_b=1.3), fields, times, 200, gens[0])
    assert scaled.b_total == pytest.approx(0.3, rel=1e-5) and scaled.b_total_se < 1e-6


def test_moment_matched_gaussian_has_the_samples_moments():
    gen = torch.Generator().manual_seed(2)
    x = TOY_2D_MIXTURES["mixture"]().sample(20000, gen).double()
    g = L.moment_matched(x, 20000, torch.Generator().manual_seed(3))
    torch.testing.assert_close(g.mean(0), x.mean(0), atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(g.T), torch.cov(x.T), atol=0.08, rtol=0.03)
