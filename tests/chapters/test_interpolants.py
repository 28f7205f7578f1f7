"""Chapter 02 interpolants: the losses, samplers and theory checks against independent
numerics (exact fields, closed forms, Monte Carlo, scipy quadrature), the exercises, the
gpu preset's models on CPU, and a tiny end-to-end run (prepare -> cache -> run -> claims)."""

from __future__ import annotations

import math
from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch
from scipy.integrate import quad

from pflow_explore.chapters import interpolants as M
from pflow_explore.claims import Claim
from pflow_explore.datasets.toy2d import TOY_2D_MIXTURES, eight_gaussians, single_gaussian
from pflow_explore.exercises import interpolants as EX
from pflow_explore.interpolants import get_interpolant
from pflow_explore.theory.interpolant_fields import InterpolantFields
from pflow_explore.training import fit

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


class ExactPair:
    """The exact fields in the shape of :class:`LearnedPair` (velocity, denoiser, score)."""

    def __init__(self, fields: InterpolantFields, scale_b: float = 1.0) -> None:
        self.fields, self.scale_b = fields, scale_b

    def velocity(self, x, t):
        return self.scale_b * self.fields.velocity(float(t), x)

    def denoiser(self, x, t):
        return self.fields.denoiser(float(t), x)

    def score(self, x, t):
        return self.fields.score(float(t), x)

    def parameters(self):
        yield torch.zeros(1)


def gaussian_fields(seed: int = 0, interp: str = "linear") -> InterpolantFields:
    rho0, rho1 = M.gaussian_endpoints(2, seed)
    return InterpolantFields(rho0, rho1, get_interpolant(interp, "sqrt"))


def mixture_fields() -> InterpolantFields:
    return InterpolantFields(
        eight_gaussians(), TOY_2D_MIXTURES["mixture"](), get_interpolant("linear", "sqrt")
    )


# ---- the losses ------------------------------------------------------------------------------
class Shifted(torch.nn.Module):
    """Exact b and eta at one time, plus constant offsets (c_b, c_eta)."""

    def __init__(self, fields, t, c_b, c_eta):
        super().__init__()
        self.fields, self.t, self.c_b, self.c_eta = fields, t, c_b, c_eta

    def velocity(self, x, t):
        return self.fields.velocity(self.t, x) + self.c_b

    def denoiser(self, x, t):
        return self.fields.denoiser(self.t, x) + self.c_eta


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
    base_b, base_eta = M.interpolant_losses(Shifted(fields, t0, zero, zero), interp, x0, x1, t, z)
    c = torch.tensor([0.3, -0.2], dtype=F64)
    lb, le = M.interpolant_losses(Shifted(fields, t0, c, c), interp, x0, x1, t, z)
    expected = float((c**2).sum()) / 4  # |c|^2 / (2 d), d = 2
    assert float(lb - base_b) == pytest.approx(expected, abs=0.01)
    assert float(le - base_eta) == pytest.approx(expected, abs=0.005)

    # the mean velocity v = E[d_t I | x_t] is not the minimiser of L_b: it costs E|v - b|^2 / 2d
    class MeanVelocity(Shifted):
        def velocity(self, x, t):
            return self.fields.mean_velocity(self.t, x)

    lv, _ = M.interpolant_losses(MeanVelocity(fields, t0, zero, zero), interp, x0, x1, t, z)
    xt = interp.sample(t0, x0[:20000], x1[:20000], z[:20000])
    gap = ((fields.mean_velocity(t0, xt) - fields.velocity(t0, xt)) ** 2).sum(1).mean() / 4
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
    b = fields.velocity(t0, xt)
    single = 0.5 * (b**2).sum(1) - (interp.velocity_target(t, x0, x1, z) * b).sum(1)
    x_minus = interp.sample(t, x0, x1, -z)
    b_minus = fields.velocity(t0, x_minus)
    pair = 0.5 * (
        single
        + 0.5 * (b_minus**2).sum(1)
        - (interp.velocity_target(t, x0, x1, -z) * b_minus).sum(1)
    )
    assert float(pair.var()) < 0.01 * float(single.var())


def test_training_times_stay_inside_the_interval():
    t = M.training_times(10_000, 0.05, torch.Generator().manual_seed(0))
    assert float(t.min()) >= 0.05 and float(t.max()) <= 0.95
    assert float(t.mean()) == pytest.approx(0.5, abs=0.01)


# ---- sampling (the samplers themselves: tests/test_samplers.py) ---------------------------------
@pytest.mark.parametrize("eps", [0.0, 0.5, 2.0])
def test_generate_with_the_exact_fields_reaches_rho1(eps):
    # Gaussian endpoints: the chapter's ODE and every SDE from the exact (b, s) end at N(m1, C1)
    fields = gaussian_fields(seed=4)
    s = M.settings("tiny", n_ode_steps=40, n_sde_steps=200)
    gen = torch.Generator().manual_seed(5)
    n = 4000
    x0 = fields.rho0.sample(n, gen).double()
    x = M.generate(ExactPair(fields), x0, eps, s, torch.Generator().manual_seed(6), batch=1500)
    m1, c1 = fields.rho1.means[0], fields.rho1.covs[0]
    se_mean = (torch.diagonal(c1) / n).sqrt()
    assert bool(((x.mean(0) - m1).abs() < 4 * se_mean + 0.01).all()), (x.mean(0), m1)
    torch.testing.assert_close(x.T.cov(), c1, atol=0.05, rtol=0.08)
    # the criterion separates: a wrong velocity (b scaled by 0.7) stops short of the mean
    if eps == 0:
        bad = M.generate(ExactPair(fields, scale_b=0.7), x0, eps, s)
        assert bool(((bad.mean(0) - m1).abs() > 4 * se_mean + 0.01).any())


def test_learned_pair_score_is_eta_over_gamma_and_finite_at_the_ends():
    s = M.settings("tiny")
    pair = M.pair_data(s, "checkerboard")
    torch.manual_seed(0)
    model = M.make_model(s, pair)
    x = torch.randn(4, 2)
    gamma = M.make_interpolant(s).gamma
    for t in (0.3, 0.8):
        torch.testing.assert_close(model.score(x, t), model.denoiser(x, t) / float(gamma.gamma(t)))
    for t in (0.0, 1.0):
        assert torch.isfinite(model.score(x, t)).all()
    per_row = model.score(x, torch.tensor([0.1, 0.2, 0.3, 0.4]))
    torch.testing.assert_close(per_row[1], model.score(x[1:2], 0.2)[0])
    b, sc = M.pair_callables(model)
    assert b(0.5, x.double()).dtype == F64 and sc(0.0, x).shape == (4, 2)


# ---- learned vs exact, theory checks -------------------------------------------------------------
def test_field_errors_are_zero_for_the_exact_fields_and_see_a_scaled_b():
    fields = mixture_fields()
    times = torch.tensor([0.2, 0.5, 0.8])
    gen = torch.Generator().manual_seed(10)
    exact = M.field_errors(ExactPair(fields), fields, times, 300, gen)
    assert exact.b_total < 1e-6 and exact.eta_total < 1e-6  # the model sees float32 x
    scaled = M.field_errors(ExactPair(fields, scale_b=1.1), fields, times, 300, gen)
    assert scaled.b_total == pytest.approx(0.1, rel=1e-5)
    torch.testing.assert_close(scaled.b, torch.full((3,), 0.1, dtype=F64), rtol=1e-5, atol=0)


def test_conditional_expectations_match_the_scalar_closed_form():
    # 1D Gaussians: E[z | x_t = x] is linear in x (sympy closed form of the derivation)
    rho0, rho1 = single_gaussian([0.5], [[0.8]]), single_gaussian([-1.0], [[0.3]])
    interp = get_interpolant("trigonometric", "sqrt")
    gen = torch.Generator().manual_seed(11)
    x0, x1 = rho0.sample(400_000, gen).double(), rho1.sample(400_000, gen).double()
    t = 0.35
    x = torch.tensor([[-1.2], [0.0], [0.9]], dtype=F64)
    est = M.conditional_expectations(interp, t, x, x0, x1)
    a, b, g = float(interp.a(t)), float(interp.b(t)), float(interp.gamma.gamma(t))
    m_t, c_t = a * 0.5 + b * -1.0, a * a * 0.8 + b * b * 0.3 + g * g
    exact_s = -(x - m_t) / c_t
    z_scores = (est["s"] - exact_s) / est["s_se"]
    assert float(z_scores.abs().max()) < 4
    assert float(est["ess"].min()) > 1000


def test_monte_carlo_check_passes_for_exact_fields_and_fails_for_a_wrong_one():
    fields = mixture_fields()
    gen = torch.Generator().manual_seed(12)
    ok = M.fields_vs_monte_carlo(fields, (0.3, 0.6), 2, 40_000, gen)
    assert len(ok.z) == 2 * 2 * 2 * 2 and ok.max_abs_z < 4
    wrong = mixture_fields()
    wrong.velocity = wrong.mean_velocity  # v instead of b: misses the gamma' z part
    bad = M.fields_vs_monte_carlo(wrong, (0.3, 0.6), 2, 40_000, torch.Generator().manual_seed(12))
    assert bad.max_abs_z > 10


def test_monte_carlo_html_lists_every_entry_and_marks_large_z():
    check_ = M.fields_vs_monte_carlo(
        gaussian_fields(), (0.5,), 2, 5000, torch.Generator().manual_seed(14)
    )
    page = M.monte_carlo_html(check_)
    assert page.count("<tr>") == len(check_.z) + 1
    check_.z[0] = 9.0
    assert "font-weight:bold" in M.monte_carlo_html(check_)


def test_residuals_shrink_at_second_order_and_not_for_a_wrong_velocity():
    one0, one1 = M.mixtures_1d(3)
    fields = InterpolantFields(one0, one1, get_interpolant("linear", "sqrt"))
    res = M.residual_convergence(fields, 0.4, (0.0, 0.5), levels=3)
    assert res.rms.shape == (2, 3)
    assert bool(((res.ratio > 3.5) & (res.ratio < 4.5)).all()), res.ratio
    torch.testing.assert_close(res.h[:-1] / res.h[1:], torch.full((2,), 2.0, dtype=F64))

    class Wrong(InterpolantFields):
        def drift(self, t, x, eps):
            return super().drift(t, x, eps) + 0.05

    bad = M.residual_convergence(Wrong(one0, one1, fields.interpolant), 0.4, (0.0,), levels=3)
    assert float(bad.ratio.max()) < 1.5


# ---- likelihood control --------------------------------------------------------------------------
def test_likelihood_control_matches_closed_forms():
    s = M.settings("tiny", lc_steps=400, lc_strength=0.8, lc_eps=(0.2, 1.0, 3.0))
    lc = M.likelihood_control(s)
    k, d = 0.8, s.lc_dim
    # ODE: the perturbation -k (x - m_t) scales the covariance by e^{-2k}, the mean stays
    assert lc.kl_ode == pytest.approx(d * (math.exp(2 * k) - 1 - 2 * k) / 2, rel=1e-6)
    # bound: k^2 int tr C_t dt / (4 eps), C_t = (1-t)^2 I + t^2 C1 + t (1-t) I, by quadrature
    _, rho1 = M.gaussian_endpoints(d, s.seed + 7)
    tr1 = float(torch.trace(rho1.covs[0]))
    integral, _ = quad(lambda t: (1 - t) ** 2 * d + t**2 * tr1 + t * (1 - t) * d, 0, 1)
    for eps, bound, kl in zip(s.lc_eps, lc.bound.tolist(), lc.kl_sde.tolist(), strict=True):
        assert bound == pytest.approx(k**2 * integral / (4 * eps), rel=1e-6)
        assert 0 < kl <= bound
    assert lc.delta_sq == pytest.approx(k**2 * integral, rel=1e-6)
    assert bool((lc.kl_sde.diff() < 0).all())  # more noise, more control here
    assert lc.kl_ode > float(lc.kl_sde.max())


def test_unperturbed_sde_keeps_the_exact_marginal():
    # with k = 0 the moment equations of the SDE (exact b + eps s, noise sqrt(2 eps)) must
    # return rho1 itself for every eps: an independent check of b + eps s = Fokker-Planck
    s = M.settings("tiny")
    rho0, rho1 = M.gaussian_endpoints(3, 21)
    affine = M._AffineFields(InterpolantFields(rho0, rho1, M.make_interpolant(s)))
    for eps in (0.0, 0.5, 2.0):
        kl, _ = M.perturbed_kl(affine, 1e-12, eps, 400)
        assert kl < 1e-7


# ---- exercises -----------------------------------------------------------------------------------
# (each exercise against its worked answer: tests/test_solutions.py; here the references
# themselves against numerics that use neither the package nor the answers)
def test_trig_target_reference_agrees_with_autograd():
    # d/dt of I(t) + gamma(t) z by autograd
    t = torch.tensor([0.2, 0.55, 0.9], dtype=F64, requires_grad=True)
    gen = torch.Generator().manual_seed(13)
    x0, x1, z = (torch.randn(3, 2, generator=gen, dtype=F64) for _ in range(3))
    a = 1.3
    g = torch.sqrt(a * t * (1 - t))[:, None]
    r = torch.sqrt(1 - g**2)
    xt = r * (torch.cos(math.pi * t / 2)[:, None] * x0 + torch.sin(math.pi * t / 2)[:, None] * x1)
    xt = xt + g * z
    grads = torch.stack(
        [torch.autograd.grad(xt[:, j].sum(), t, retain_graph=True)[0] for j in range(2)], 1
    )
    torch.testing.assert_close(EX.trig_target(t.detach(), x0, x1, z, a), grads)


def test_gaussian_score_reference_agrees_with_finite_differences_of_the_density():
    gen = torch.Generator().manual_seed(5)
    t, x, m0, C0, m1, C1 = EX.gaussian_score_inputs(gen)
    m_t = (1 - t) * m0 + t * m1
    C_t = (1 - t) ** 2 * C0 + t**2 * C1 + t * (1 - t) * torch.eye(3, dtype=F64)
    logp = torch.distributions.MultivariateNormal(m_t, C_t).log_prob
    h = 1e-5
    fd = torch.stack(
        [(logp(x + h * e) - logp(x - h * e)) / (2 * h) for e in torch.eye(3, dtype=F64)], -1
    )
    torch.testing.assert_close(EX.gaussian_score(t, x, m0, C0, m1, C1), fd, rtol=1e-6, atol=1e-6)


# ---- settings and presets ------------------------------------------------------------------------
def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="pairs must be"):
        M.settings("tiny", pairs=("moons",))
    with pytest.raises(ValueError, match="eps_values must start with 0"):
        M.settings("tiny", eps_values=(0.5, 1.0))
    with pytest.raises(ValueError, match="gamma must be one of"):
        M.settings("tiny", gamma="zero")
    with pytest.raises(ValueError, match="t_delta"):
        M.settings("tiny", t_delta=0.0)
    with pytest.raises(ValueError, match="constrains rho0"):
        M.settings("tiny", interpolant="mirror")
    with pytest.raises(ValueError, match="gamma"):
        M.settings("tiny", interpolant="trigonometric", gamma="sin2")
    with pytest.raises(ValueError, match="lc_eps"):
        M.settings("tiny", lc_eps=(0.0, 1.0))
    with pytest.raises(ValueError, match="pair must be one of"):
        M.pair_kind("spirals")


def test_gpu_preset_builds_and_takes_one_training_step_on_cpu():
    s = replace(M.SETTINGS["gpu"], batch=4, image_batch=4)  # same code path, CPU-sized batch
    assert s.pairs == ("checkerboard", "mixtures", "gmm400", "digits32")
    for name, dim, params in (("gmm400", 400, 3_000_000), ("digits32", 1024, 1_000_000)):
        pair = M.pair_data(s, name)
        assert pair.dim == dim
        torch.manual_seed(0)
        model = M.make_model(s, pair)
        assert sum(p.numel() for p in model.b_net.parameters()) > params
        before = [p.detach().clone() for p in model.parameters()]
        loss_fn = M.pair_loss_fn(s, pair, torch.device("cpu"))
        result = fit(model, loss_fn, steps=1, lr=s.lr, ema_decay=s.ema_decay, progress=False)
        assert math.isfinite(result.losses[0])
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
        x = pair.sample0(2, torch.Generator().manual_seed(0))
        assert model.score(x, 0.5).shape == (2, dim)
    gmm = M.pair_data(s, "gmm400")
    assert gmm.exact and gmm.rho1.n_components == s.gmm_components
    images = M.pair_data(s, "digits32").sample1(3, torch.Generator().manual_seed(0))
    assert images.shape == (3, 1024) and float(images.min()) >= -1


def test_initial_weights_are_seeded_without_touching_the_global_generator():
    s = M.settings("tiny")
    pair = M.pair_data(s, "checkerboard")
    torch.manual_seed(0)
    expected = M.make_model(s, pair).state_dict()  # the historical torch.manual_seed(seed)
    torch.manual_seed(99)
    state = torch.random.get_rng_state()
    got = M.seeded_model(s, pair).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    other = M.seeded_model(replace(s, seed=1), pair).state_dict()
    assert any(not torch.equal(other[k], got[k]) for k in got)


def test_tiny_run_end_to_end_and_from_the_cache(data_dir):
    s = M.settings("tiny")
    M.prepare(s)
    assert len(list((data_dir / "cache" / "interpolants").glob("pair-*.pt"))) == 2
    assert len(list((data_dir / "cache" / "interpolants").glob("sweep-*.pt"))) == 2
    r = M.run(s)
    # each named experiment on its own gives what run composes
    alone = M.pair_experiment(s, "mixtures")
    torch.testing.assert_close(alone.sweep.energy, r.pairs["mixtures"].sweep.energy)
    assert alone.errors.b_total == r.pairs["mixtures"].errors.b_total
    assert M.likelihood_control(s).kl_ode == r.likelihood.kl_ode
    assert set(r.seconds) >= {"train mixtures", "eps sweep mixtures", "likelihood control"}
    assert all(pr.from_cache and pr.trained_seconds == 0.0 for pr in r.pairs.values())
    assert all(pr.sweep_from_cache for pr in r.pairs.values())
    sw = r.pairs["checkerboard"].sweep
    assert sw.energy.shape == (len(s.eps_values),) and sw.samples.shape[0] == len(s.eps_values)
    assert r.pairs["mixtures"].errors is not None and r.pairs["checkerboard"].errors is None
    cs = M.claims(r)
    assert len(cs) >= 8 and all(isinstance(c, Claim) and c.scale == "tiny" for c in cs)
    by_name = {c.name: c for c in cs}
    # these hold whatever the training: exact mathematics
    assert by_name["exact b and s = Monte-Carlo conditional expectations (max |z|)"].holds
    assert [c for c in cs if c.name.startswith("SDE: KL")][0].holds
    figs = M.figures(r)
    assert {"eps_sweep", "likelihood_control", "residuals", "monte_carlo"} <= set(figs)
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(M.preview(), go.Figure)
