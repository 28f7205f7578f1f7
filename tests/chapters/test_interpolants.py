"""Chapter 02 interpolants: the learned pair's score, the likelihood-control experiment
against closed forms and scipy quadrature, the exercises' references, the settings, the gpu
preset's models on CPU, and a tiny end-to-end run (prepare -> cache -> run -> claims)."""

from __future__ import annotations

import math
from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch
from scipy.integrate import quad

from pflow_explore import samplers
from pflow_explore.chapters import interpolants as M
from pflow_explore.claims import Claim
from pflow_explore.exercises import interpolants as EX
from pflow_explore.theory import interpolant_checks as C
from pflow_explore.training import fit

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


# (losses, field errors: tests/test_interpolant_learning.py; Monte Carlo, residuals, perturbed
# KL: tests/theory/test_interpolant_checks.py; figures: tests/viz/test_interpolant_figures.py)


# ---- the learned pair (the samplers themselves: tests/test_samplers.py) --------------------------
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
    b, sc = samplers.pair_callables(model)
    assert b(x.double(), 0.5).dtype == F64 and sc(x, 0.0).shape == (4, 2)


# ---- likelihood control --------------------------------------------------------------------------
def test_likelihood_control_matches_closed_forms():
    s = M.settings("tiny", lc_steps=400, lc_strength=0.8, lc_eps=(0.2, 1.0, 3.0))
    lc = M.likelihood_control(s)
    k, d = 0.8, s.lc_dim
    # ODE: the perturbation -k (x - m_t) scales the covariance by e^{-2k}, the mean stays
    assert lc.kl_ode == pytest.approx(d * (math.exp(2 * k) - 1 - 2 * k) / 2, rel=1e-6)
    # bound: k^2 int tr C_t dt / (4 eps), C_t = (1-t)^2 I + t^2 C1 + t (1-t) I, by quadrature
    _, rho1 = C.gaussian_endpoints(d, s.seed + 7)
    tr1 = float(torch.trace(rho1.covs[0]))
    integral, _ = quad(lambda t: (1 - t) ** 2 * d + t**2 * tr1 + t * (1 - t) * d, 0, 1)
    for eps, bound, kl in zip(s.lc_eps, lc.bound.tolist(), lc.kl_sde.tolist(), strict=True):
        assert bound == pytest.approx(k**2 * integral / (4 * eps), rel=1e-6)
        assert 0 < kl <= bound
    assert lc.delta_sq == pytest.approx(k**2 * integral, rel=1e-6)
    assert bool((lc.kl_sde.diff() < 0).all())  # more noise, more control here
    assert lc.kl_ode > float(lc.kl_sde.max())


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
    x, t, m0, C0, m1, C1 = EX.gaussian_score_inputs(gen)
    m_t = (1 - t) * m0 + t * m1
    C_t = (1 - t) ** 2 * C0 + t**2 * C1 + t * (1 - t) * torch.eye(3, dtype=F64)
    logp = torch.distributions.MultivariateNormal(m_t, C_t).log_prob
    h = 1e-5
    fd = torch.stack(
        [(logp(x + h * e) - logp(x - h * e)) / (2 * h) for e in torch.eye(3, dtype=F64)], -1
    )
    torch.testing.assert_close(EX.gaussian_score(x, t, m0, C0, m1, C1), fd, rtol=1e-6, atol=1e-6)


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


def test_the_likelihood_control_is_stored_and_shipped_at_cpu_scale(shipped_only, monkeypatch):
    """A dashboard's first open loads the likelihood control (2 s of moment ODEs)."""
    shipped_only("interpolants")

    def never(*args, **kwargs):
        raise AssertionError("the shipped likelihood control was computed again")

    monkeypatch.setattr(C, "likelihood_sweep", never)
    lc = M.likelihood_control(M.settings("cpu"))
    s = M.settings("cpu")
    assert lc.eps.tolist() == list(s.lc_eps) and lc.strengths.tolist() == list(s.lc_strengths)
    # the ODE's KL is the closed form d (e^{2k} - 1 - 2k) / 2
    k, d = s.lc_strength, s.lc_dim
    assert lc.kl_ode == pytest.approx(d * (math.exp(2 * k) - 1 - 2 * k) / 2, rel=1e-4)
