"""Chapter 12 active_matter: the chapter's score networks (any N, permutation
equivariance), the exercise references, the presets, the gpu preset's models for one step on
CPU, and a tiny end-to-end run whose experiments also run one at a time. (The losses,
estimators, networks and phases are tested in tests/test_score_matching.py, tests/test_epr.py,
tests/nets/test_particle_scores.py and tests/test_mips.py.)"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import pytest
import scipy.linalg
import torch

from pflow_explore.chapters import active_matter as M
from pflow_explore.claims import Claim
from pflow_explore.epr import aoup_drift
from pflow_explore.exercises import active_matter as ex
from pflow_explore.nets.particle_scores import TrapScore
from pflow_explore.score_matching import denoising_loss, dynamics_denoising_loss
from pflow_explore.theory import linear_sde as ls
from pflow_explore.training import fit
from pflow_explore.viz.epr import phi_sweep_figure

F64 = torch.float64


# ---- networks -----------------------------------------------------------------------------
def test_chapter_networks_run_at_any_n_and_are_permutation_equivariant():
    torch.manual_seed(0)
    s = M.settings("tiny")
    ring = M.make_ring_score(s)
    for n in (16, 40):
        x, g = torch.randn(2, n, 2), torch.randn(2, n, 2)
        s_x, s_g = ring(x, g)
        assert s_x.shape == s_g.shape == (2, n, 2)
        assert ring.net.box == n * s.ring_spacing
    mips = M.make_mips_score(s)
    box = M.mips_model(s).box
    x = (torch.rand(1, 64, 2) - 0.5) * box
    g = torch.randn(1, 64, 2)
    perm = torch.randperm(64)
    with torch.no_grad():
        _, out = mips(x, g, box)
        _, out_perm = mips(x[:, perm], g[:, perm], box)
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)


# ---- exercises ----------------------------------------------------------------------------
def test_exercise_references_against_independent_formulas():
    """The references (package functions) against formulas written out here, and the
    checker rejecting a wrong answer."""
    gen = torch.Generator().manual_seed(9)
    z, s, v0, A, gamma, eps = ex.velocity_inputs(gen)
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
    torch.testing.assert_close(
        ex.PROBABILITY_VELOCITY.reference(z, s, v0, A, gamma, eps),
        -z @ torch.as_tensor(B.T) - s @ torch.as_tensor(D),
    )
    v_x, v_g, eps2, gamma2 = ex.epr_inputs(gen)
    by_loop = sum(
        float(v_x[k].pow(2).sum()) / eps2 + float(v_g[k].pow(2).sum()) / gamma2
        for k in range(len(v_x))
    ) / len(v_x)
    assert float(ex.EPR_FROM_VELOCITY.reference(v_x, v_g, eps2, gamma2)) == pytest.approx(by_loop)
    g, xi, gamma3, dt = ex.ou_inputs(gen)
    decay = math.exp(-gamma3 * dt)
    torch.testing.assert_close(
        ex.OU_UPDATE.reference(g, xi, gamma3, dt), decay * g + math.sqrt(1 - decay**2) * xi
    )
    forgot_eps = ex.PROBABILITY_VELOCITY.check(
        lambda z, s, v0, A, gamma, eps: -z @ torch.as_tensor(B.T)  # b alone: D s left out
    )
    assert not forgot_eps.passed and "differs" in forgot_eps.message
    assert not ex.OU_UPDATE.check(lambda g, xi, gamma, dt: g - gamma * g * dt + xi).passed


# ---- the exact EPR, independently ---------------------------------------------------------
def _lyapunov_epr(
    A: float, v0: float, gamma: float, eps: float, dim: int = 2
) -> tuple[float, float]:
    """Total and g-part EPR of one trapped AOUP from scipy's Lyapunov solver: per dimension
    dz = -B z dt + sqrt(2 D) dW, B S + S B^T = 2 D, v = (-B + D S^-1) z, and
    EPR_j = (M S M^T)_jj / D_jj, summed over the dim dimensions."""
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
    S = scipy.linalg.solve_continuous_lyapunov(-B, -2 * D)  # (-B) S + S (-B)^T = -2 D
    Mv = -B + D @ np.linalg.inv(S)
    per_dof = np.diag(Mv @ S @ Mv.T) / np.diag(D)
    return dim * float(per_dof.sum()), dim * float(per_dof[1])


def test_trapped_aoup_epr_matches_a_numeric_lyapunov_solve_on_random_parameters():
    """The chapter's exact columns (``linear_sde.trapped_aoup_epr`` / ``_g``) against scipy."""
    rng = np.random.default_rng(12)
    for A, v0, gamma, eps in rng.uniform(0.1, 4.0, size=(25, 4)):
        total, g_part = _lyapunov_epr(A, v0, gamma, eps)
        assert ls.trapped_aoup_epr(A, v0, gamma, eps) == pytest.approx(total, rel=1e-9)
        assert ls.trapped_aoup_epr_g(A, v0, gamma, eps) == pytest.approx(g_part, rel=1e-9)
    # and the Lyapunov EPR against a Monte Carlo mean of v . D^-1 v at exact samples
    A, v0, gamma, eps = 1.3, 1.7, 0.8, 0.6
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
    S = scipy.linalg.solve_continuous_lyapunov(-B, -2 * D)
    z = rng.multivariate_normal(np.zeros(2), S, size=200_000)
    v = z @ (-B + D @ np.linalg.inv(S)).T
    per_sample = (v**2 / np.diag(D)).sum(-1)
    mc, se = per_sample.mean(), per_sample.std() / math.sqrt(len(per_sample))
    assert abs(mc - ls.trapped_aoup_epr(A, v0, gamma, eps, dim=1)) < 4 * se


# ---- settings and presets -------------------------------------------------------------------
def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="trap_v0s"):
        M.settings("tiny", trap_v0s=(0.5, -1.0))
    with pytest.raises(ValueError, match="mips_phi"):
        M.settings("tiny", mips_phi=0.95)
    with pytest.raises(ValueError, match="ring sizes"):
        M.settings("tiny", ring_n_eval=(4,))
    with pytest.raises(ValueError, match="dyn_dt"):
        M.settings("tiny", dyn_dt=0.5)
    with pytest.raises(ValueError, match="mips_steps"):
        M.settings("tiny", mips_steps=0)


def test_gpu_preset_models_take_one_training_step_on_cpu_and_run_chunked():
    s = M.SETTINGS["gpu"]
    assert s.mips_n == 4096 and s.mips_knn == 32 and s.mips_width == 128 and s.mips_layers == 3
    assert s.mips_eval_n == 32768
    gen = torch.Generator().manual_seed(10)
    # the MIPS network: one g-denoising step on 2 configurations of a smaller box
    small = replace(s, mips_n=512)
    box = M.mips_model(small).box
    net = M.make_mips_score(small)
    x = (torch.rand(2, 512, 2, generator=gen) - 0.5) * box
    g = torch.randn(2, 512, 2, generator=gen)

    def mips_loss(model, step):
        return denoising_loss(lambda a, b: model(a, b, box), x, g, s.mips_sigma, gen, noise_x=False)

    before = [p.detach().clone() for p in net.parameters()]
    out = fit(net, mips_loss, steps=1, lr=s.mips_lr, progress=False)
    assert math.isfinite(out.losses[0])
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    with torch.no_grad():
        _, full = net(x[:1], g[:1], box)
        _, chunked = net(x[:1], g[:1], box, chunk=100)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-4)
    # the ring and trap networks of the preset, one dynamics-denoising step each
    ring = M.make_ring_score(s)
    model = M.ring_model(s, 24)
    drift = lambda a, b: aoup_drift(model, a, b)  # noqa: E731
    noise = (model.eps, model.gamma)
    xr, gr = torch.randn(2, 24, 2, generator=gen), torch.randn(2, 24, 2, generator=gen)
    loss = fit(
        ring,
        lambda m, i: dynamics_denoising_loss(m, drift, noise, xr, gr, s.dyn_dt, gen),
        steps=1,
        progress=False,
    )
    assert math.isfinite(loss.losses[0])
    trap = TrapScore(2, s.trap_hidden, s.trap_depth)
    tm = M.trap_model(s, 1.0)
    xt, gt = torch.randn(8, 1, 2, generator=gen), torch.randn(8, 1, 2, generator=gen)
    loss = fit(
        trap,
        lambda m, i: dynamics_denoising_loss(
            lambda a, b: m(a, b, 1.0),
            lambda a, b: aoup_drift(tm, a, b),
            (tm.eps, tm.gamma),
            xt,
            gt,
            s.dyn_dt,
            gen,
        ),
        steps=1,
        progress=False,
    )
    assert math.isfinite(loss.losses[0])


def test_tiny_run_end_to_end_and_from_the_cache(data_dir):
    s = M.settings("tiny")
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    M.prepare(s)
    # every training seeds its own initial weights and leaves the global generator alone
    torch.testing.assert_close(torch.rand(3), expected_draw)
    assert list((data_dir / "cache" / "active_matter").glob("trap_score-*.pt"))
    r = M.run(s)
    assert r.from_cache and r.trained_seconds == 0.0
    assert r.trap.learned.shape == (len(s.trap_v0s),)
    assert r.ring.sizes.tolist() == [s.ring_n, *s.ring_n_eval]
    assert r.mips.local.local.shape == (s.mips_replicas * s.mips_frames, s.mips_n)
    assert r.movie.frames.shape == (s.movie_frames, s.mips_n, 2)
    assert r.movie.colors.shape == (s.movie_frames, s.mips_n)
    # the theory checks do not depend on training
    assert r.theory.formula_vs_lyapunov < 1e-9 and abs(r.theory.div_total) < 1e-9
    assert r.theory.div_x == pytest.approx(-r.theory.div_g)
    # the exact columns against a numeric Lyapunov solve written here (scipy)
    for j, v0 in enumerate(s.trap_v0s):
        total, g_part = _lyapunov_epr(s.trap_A, v0, s.trap_gamma, s.trap_eps)
        assert float(r.trap.exact[j]) == pytest.approx(total, rel=1e-9)
        assert float(r.trap.exact_g[j]) == pytest.approx(g_part, rel=1e-9)
    cs = M.claims(r)
    assert len(cs) >= 6 and all(isinstance(c, Claim) and c.scale == "tiny" for c in cs)
    assert cs[0].holds and cs[1].holds
    figs = M.figures(r)
    assert {"trap_sweep", "trap_current", "ring", "mips_snapshot", "mips_regions"} <= set(figs)
    assert {"mips_phases", "mips_sweep", "losses"} <= set(figs)
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(M.preview(), go.Figure)
    # each experiment runs on its own (as the notebook calls them) with the same numbers
    trap = M.trap_experiment(s)
    torch.testing.assert_close(trap.learned, r.trap.learned, rtol=0, atol=0)
    torch.testing.assert_close(trap.learned_g_div, r.trap.learned_g_div, rtol=0, atol=0)
    ring = M.ring_experiment(s)
    torch.testing.assert_close(ring.learned, r.ring.learned, rtol=0, atol=0)
    mips = M.mips_experiment(s)
    torch.testing.assert_close(mips.local.local_div, r.mips.local.local_div, rtol=0, atol=0)
    sweep = M.mips_phi_sweep(s, mips)
    torch.testing.assert_close(sweep.epr, r.mips_sweep.epr, rtol=0, atol=0)
    assert M.mips_large_box(s, mips) is None  # tiny evaluates no larger box
    assert isinstance(phi_sweep_figure(sweep), go.Figure)
    # the measurements are stored under the weights they measured: read back, they are what
    # measuring those weights gives now; other weights are measured anew
    with M.scale.torch_threads(s.threads):  # as trap_experiment measures
        now = M._trap_estimate(s, trap.fit.model, trap.fit)
    torch.testing.assert_close(now.learned_x, trap.learned_x, rtol=0, atol=0)
    torch.testing.assert_close(now.current.J_learned, trap.current.J_learned, rtol=0, atol=0)
    assert trap.settings == s and type(trap.current) is type(now.current)
    measured = []
    estimate = lambda: measured.append(1) or now
    M._measured(M.TrapResult, "trap_measured", s, trap.fit, estimate, settings=s, fit=trap.fit)
    with torch.no_grad():
        next(trap.fit.model.parameters()).add_(1e-3)
    M._measured(M.TrapResult, "trap_measured", s, trap.fit, estimate, settings=s, fit=trap.fit)
    assert measured == [1]  # stored for the trained weights; measured for the nudged ones


def test_a_fresh_clone_opens_the_chapter_with_the_shipped_measurements(shipped_only, monkeypatch):
    """The cpu-scale estimates are shipped for the shipped weights: no estimate runs."""
    shipped_only("active_matter")

    def never(*args, **kwargs):
        raise AssertionError("a shipped measurement was computed again")

    for name in ("_trap_estimate", "_ring_estimate", "_mips_estimate", "mips_local_epr"):
        monkeypatch.setattr(M, name, never)
    s = M.settings("cpu")
    trap, ring, box = M.trap_experiment(s), M.ring_experiment(s), M.mips_experiment(s)
    sweep, large = M.mips_phi_sweep(s, box), M.mips_large_box(s, box)
    assert trap.fit.from_cache and trap.learned.shape == (len(s.trap_v0s),)
    assert ring.sizes.tolist() == [s.ring_n, *s.ring_n_eval]
    assert box.local.local.shape[1] == s.mips_n and sweep.phis.numel() == len(s.mips_phis) + 1
    assert large is not None and large.local.shape[1] == s.mips_eval_n
