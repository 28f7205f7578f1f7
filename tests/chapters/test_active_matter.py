"""Chapter 12 active_matter: the phase labels on a constructed droplet, the score networks
(any N, permutation equivariance), the exercises, the presets, the gpu preset's models for
one step on CPU, and a tiny end-to-end run whose experiments also run one at a time. (The
losses and estimators are tested in tests/test_score_matching.py and tests/test_epr.py.)"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from pflow_explore.chapters import active_matter as M
from pflow_explore.claims import Claim
from pflow_explore.epr import aoup_drift
from pflow_explore.exercises import check
from pflow_explore.score_matching import denoising_loss, dynamics_denoising_loss
from pflow_explore.training import fit

F64 = torch.float64


def test_interface_labels_on_a_constructed_droplet():
    radius, box = 1.0, 60.0
    i, j = np.meshgrid(np.arange(9), np.arange(9), indexing="ij")
    hexagon = np.stack([(i + 0.5 * (j % 2)) * 2.0, j * math.sqrt(3)], -1).reshape(-1, 2)
    hexagon = hexagon - hexagon.mean(0)
    loners = np.array([[25.0, 25.0], [-25.0, 20.0], [20.0, -25.0]])
    x = torch.as_tensor(np.concatenate([hexagon, loners])[None], dtype=torch.float32)
    labels = M.interface_labels(x, box, radius)[0]
    centre = int(np.argmin((hexagon**2).sum(1)))
    assert int(labels[centre]) == M.BULK
    assert (labels[-3:] == M.GAS).all()
    # the patch's rim: its corner (2-3 neighbours) is gas, the particles next to it interface
    corner = int(np.argmax((hexagon**2).sum(1)))
    assert int(labels[corner]) == M.GAS
    assert (labels[:81] == M.INTERFACE).any() and (labels[:81] == M.BULK).sum() >= 25
    means = M.phase_means(torch.arange(84.0)[None], labels[None])
    assert means.shape == (3,) and math.isfinite(float(means[M.BULK]))


# ---- networks -----------------------------------------------------------------------------
def test_local_scores_run_at_any_n_and_are_permutation_equivariant():
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
    # s_g = -g + f: an untrained (small-output) network is close to the free propulsion score
    assert float((out + g).abs().mean()) < 0.5
    with pytest.raises(ValueError, match="feature_dim"):
        M.ChainScore(M.make_local_net(2, 2, 4, 8, 1, 2, 1.0), 1.0)


# ---- exercises ----------------------------------------------------------------------------
def test_exercise_references_against_independent_formulas():
    gen = torch.Generator().manual_seed(9)
    z, s, v0, A, gamma, eps = M.exercise_velocity_inputs(gen)
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
    torch.testing.assert_close(
        M._solution_probability_velocity(z, s, v0, A, gamma, eps),
        -z @ torch.as_tensor(B.T) - s @ torch.as_tensor(D),
    )
    v_x, v_g, eps2, gamma2 = M.exercise_epr_inputs(gen)
    by_loop = sum(
        float(v_x[k].pow(2).sum()) / eps2 + float(v_g[k].pow(2).sum()) / gamma2
        for k in range(len(v_x))
    ) / len(v_x)
    assert float(M._solution_epr_from_velocity(v_x, v_g, eps2, gamma2)) == pytest.approx(by_loop)
    # the exact OU step keeps N(0, 1) and has autocorrelation e^{-gamma dt}
    g0 = torch.randn(400_000, generator=gen, dtype=F64)
    xi = torch.randn(400_000, generator=gen, dtype=F64)
    g1 = M._solution_ou_update(g0, xi, 0.7, 0.5)
    assert float(g1.var()) == pytest.approx(1.0, abs=0.01)
    assert float((g0 * g1).mean()) == pytest.approx(math.exp(-0.35), abs=0.01)
    assert check(
        M._solution_probability_velocity,
        M._solution_probability_velocity,
        M.exercise_velocity_inputs,
    ).passed
    wrong = check(
        lambda z, s, v0, A, gamma, eps: M._solution_probability_velocity(z, s, v0, A, gamma, 0),
        M._solution_probability_velocity,
        M.exercise_velocity_inputs,
    )
    assert not wrong.passed and "differs" in wrong.message


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
    trap = M.TrapScore(2, s.trap_hidden, s.trap_depth)
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
    # the exact column is the card's formula d gamma v0^2 / (eps (A + gamma)), d = 2
    v0 = torch.tensor(s.trap_v0s, dtype=F64)
    card = 2 * s.trap_gamma * v0**2 / (s.trap_eps * (s.trap_A + s.trap_gamma))
    torch.testing.assert_close(r.trap.exact, card)
    cs = M.claims(r)
    assert len(cs) >= 6 and all(isinstance(c, Claim) and c.scale == "tiny" for c in cs)
    assert cs[0].holds and cs[1].holds
    figs = M.figures(r)
    assert {"trap_sweep", "trap_current", "ring", "mips_snapshot", "mips_regions"} <= set(figs)
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
    assert isinstance(M.mips_sweep_figure(sweep), go.Figure)
