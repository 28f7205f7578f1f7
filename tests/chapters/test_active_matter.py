"""Chapter 12 active_matter: the score losses against their closed-form expectations, the
EPR estimators on exact Gaussian cases, the per-particle divergence against a full Jacobian,
the region / current / phase tools on constructed configurations, the exercises, the gpu
preset's models for one step on CPU, and a tiny end-to-end run."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from pflow_explore.chapters import active_matter as M
from pflow_explore.claims import Claim
from pflow_explore.datasets import particles
from pflow_explore.exercises import check
from pflow_explore.theory import linear_sde
from pflow_explore.training import fit

F64 = torch.float64


def gaussian_trap_samples(A, v0, gamma, eps, n, seed):
    """Exact stationary samples of one trapped AOUP in d = 2 (not the simulator): (x, g)
    each (n, 1, 2), and the per-dimension covariance S."""
    S = linear_sde.trapped_aoup_covariance(A, v0, gamma, eps)
    chol = torch.linalg.cholesky(torch.as_tensor(S))
    z = torch.randn(n, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=F64) @ chol.T
    return z[:, :, 0].reshape(n, 1, 2), z[:, :, 1].reshape(n, 1, 2), S


def linear_score(P):
    """s(x, g) = -P z per dimension, z = (x, g): a score function of the chapter's form."""
    P = torch.as_tensor(P, dtype=F64)

    def score(x, g):
        z = torch.stack([x, g], dim=-1)  # (n, N, d, 2)
        s = -(z @ P.T.to(z.dtype))
        return s[..., 0], s[..., 1]

    return score


# ---- losses -------------------------------------------------------------------------------
def test_denoising_loss_matches_its_closed_form_for_a_linear_score():
    # z ~ N(0, S), s(z) = -P z: E[|s(z')|^2 + 2 s(z') . xi / sigma] = tr(P^2 (S + sigma^2)) - 2 tr P
    # per dimension, summed over d = 2 (both signs of the antithetic pair have it)
    A, v0, gamma, eps, sigma = 1.3, 0.8, 0.7, 0.9, 0.3
    x, g, S = gaussian_trap_samples(A, v0, gamma, eps, 80_000, seed=1)
    P = np.array([[0.9, -0.2], [-0.2, 1.4]])
    gen = torch.Generator().manual_seed(2)
    values = [
        float(M.denoising_loss(linear_score(P), xb, gb, sigma, gen))
        for xb, gb in zip(x.split(8_000), g.split(8_000), strict=True)
    ]
    expected = 2 * (np.trace(P @ P @ (S + sigma**2 * np.eye(2))) - 2 * np.trace(P))
    se = np.std(values) / math.sqrt(len(values))
    assert abs(np.mean(values) - expected) < 5 * se + 1e-3, (np.mean(values), expected, se)
    # noise on g only: only the g-row counts, and x is left as it is
    values_g = [
        float(M.denoising_loss(linear_score(P), xb, gb, sigma, gen, noise_x=False))
        for xb, gb in zip(x.split(8_000), g.split(8_000), strict=True)
    ]
    cov = S + np.diag([0.0, sigma**2])
    expected_g = 2 * ((P @ cov @ P.T)[1, 1] - 2 * P[1, 1])
    se_g = np.std(values_g) / math.sqrt(len(values_g))
    assert abs(np.mean(values_g) - expected_g) < 5 * se_g + 1e-3


def test_dynamics_denoising_loss_matches_its_closed_form_and_is_minimised_by_the_score():
    # z' = (I - B dt) z + sqrt(2 D dt) xi, z ~ N(0, S): with s = -P z the loss is
    # tr(P C' P) - 2 tr P per dimension, C' = F S F^T + 2 D dt, F = I - B dt
    A, v0, gamma, eps, dt = 1.0, 1.2, 0.8, 0.6, 0.01
    model = particles.AOUP(1, v0, gamma=gamma, eps=eps, A=A)
    x, g, S = gaussian_trap_samples(A, v0, gamma, eps, 80_000, seed=3)
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
    F = np.eye(2) - B * dt
    C = F @ S @ F.T + 2 * D * dt

    def expected(P):
        return 2 * (np.trace(P @ C @ P.T) - 2 * np.trace(P))

    P = np.linalg.inv(S) + np.array([[0.1, 0.05], [0.05, -0.1]])
    gen = torch.Generator().manual_seed(4)
    values = [
        float(M.dynamics_denoising_loss(linear_score(P), model, xb, gb, dt, gen))
        for xb, gb in zip(x.split(8_000), g.split(8_000), strict=True)
    ]
    se = np.std(values) / math.sqrt(len(values))
    assert abs(np.mean(values) - expected(P)) < 5 * se + 2e-3, (np.mean(values), expected(P))
    # the exact score of z' (= of rho up to O(dt)) minimises it; the loss is quadratic in P
    best = np.linalg.inv(C)
    assert expected(best) < expected(P)
    assert np.abs(best - np.linalg.inv(S)).max() < 0.05


# ---- estimators ---------------------------------------------------------------------------
@pytest.mark.parametrize("params", [(1.0, 0.5, 1.0, 1.0), (0.4, 1.7, 2.0, 0.3)])
def test_local_epr_with_the_exact_score_gives_the_exact_epr(params):
    A, v0, gamma, eps = params
    x, g, S = gaussian_trap_samples(A, v0, gamma, eps, 100_000, seed=5)
    model = particles.AOUP(1, v0, gamma=gamma, eps=eps, A=A)
    s_x, s_g = linear_sde.particle_linear_score(S, x, g)
    loc = M.local_epr(model, x, g, s_x, s_g)
    per = loc.per_particle.sum(-1)
    se = float(per.std()) / math.sqrt(len(per))
    exact = linear_sde.trapped_aoup_epr(A, v0, gamma, eps)
    assert abs(M.total_epr(loc) - exact) < 4 * se
    g_part = loc.g_part.sum(-1)
    exact_g = linear_sde.trapped_aoup_epr_g(A, v0, gamma, eps)
    assert abs(float(g_part.mean()) - exact_g) < 4 * float(g_part.std()) / math.sqrt(len(per))
    # v = b - D s: the velocity is divergence free, so E[v] = 0 and E[v . s] = 0
    v_x, v_g = M.probability_velocity(model, x, g, s_x, s_g)
    assert float((v_x * s_x + v_g * s_g).sum(-1).mean().abs()) < 0.02


def test_per_particle_divergence_is_unbiased_against_the_full_jacobian():
    gen = torch.Generator().manual_seed(6)
    n, N, d = 3, 5, 2
    W = torch.randn(N * d, N * d, generator=gen, dtype=F64) / 3
    V = torch.randn(N * d, N * d, generator=gen, dtype=F64) / 3

    def score(x, g):  # couples all particles: s_g depends on every g and x
        h = torch.tanh(g.reshape(g.shape[0], -1) @ W.T + x.reshape(x.shape[0], -1) @ V.T)
        return None, h.reshape(g.shape)

    x = torch.randn(n, N, d, generator=gen, dtype=F64)
    g = torch.randn(n, N, d, generator=gen, dtype=F64)
    exact = torch.zeros(n, N, dtype=F64)
    for b in range(n):
        jac = torch.autograd.functional.jacobian(
            lambda gg, b=b: score(x[b : b + 1], gg[None])[1][0], g[b]
        )  # (N, d, N, d)
        exact[b] = torch.einsum("iaia->i", jac)
    est = M.per_particle_g_divergence(score, x, g, torch.Generator().manual_seed(7), probes=4000)
    torch.testing.assert_close(est, exact, atol=0.06, rtol=0)
    form = M.epr_g_divergence_form(exact, gamma=0.5, dim=d)
    torch.testing.assert_close(form, -0.5 * exact - 0.5 * d)


def test_per_region_epr_sums_to_the_total_and_counts_density():
    box, bins = 8.0, 4
    x = torch.tensor(
        [[[-3.5, -3.5], [3.9, 3.9], [0.1, 0.1], [0.2, 0.3]]]
    )  # cells (0,0),(3,3),(2,2)
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    edges, density, number = M.per_region_epr(x, values, box, bins)
    area = (box / bins) ** 2
    assert float(density.sum() * area) == pytest.approx(10.0)
    assert float(density[0, 0] * area) == pytest.approx(1.0)
    assert float(density[3, 3] * area) == pytest.approx(2.0)
    assert float(density[2, 2] * area) == pytest.approx(7.0)
    assert float(number.sum() * area) == pytest.approx(4.0)
    torch.testing.assert_close(edges, torch.linspace(-4, 4, 5, dtype=F64))


def test_probability_current_field_of_a_uniform_flow():
    gen = torch.Generator().manual_seed(8)
    pts = torch.rand(200_000, 2, generator=gen, dtype=F64) * 2 - 1  # uniform on [-1, 1]^2
    vel = torch.tensor([0.5, -2.0], dtype=F64).expand(200_000, 2)
    cx, cy, J, rho = M.probability_current_field(pts, vel, (-1, 1), (-1, 1), 5)
    torch.testing.assert_close(rho, torch.full((5, 5), 0.25, dtype=F64), atol=0.01, rtol=0)
    torch.testing.assert_close(J, rho[..., None] * torch.tensor([0.5, -2.0], dtype=F64))
    torch.testing.assert_close(cx, torch.linspace(-0.8, 0.8, 5, dtype=F64))


def test_phase_labels_on_a_constructed_droplet():
    radius, box = 1.0, 60.0
    i, j = np.meshgrid(np.arange(9), np.arange(9), indexing="ij")
    hexagon = np.stack([(i + 0.5 * (j % 2)) * 2.0, j * math.sqrt(3)], -1).reshape(-1, 2)
    hexagon = hexagon - hexagon.mean(0)
    loners = np.array([[25.0, 25.0], [-25.0, 20.0], [20.0, -25.0]])
    x = torch.as_tensor(np.concatenate([hexagon, loners])[None], dtype=torch.float32)
    labels = M.phase_labels(x, box, radius)[0]
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
        return M.denoising_loss(
            lambda a, b: model(a, b, box), x, g, s.mips_sigma, gen, noise_x=False
        )

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
    xr, gr = torch.randn(2, 24, 2, generator=gen), torch.randn(2, 24, 2, generator=gen)
    loss = fit(
        ring,
        lambda m, i: M.dynamics_denoising_loss(m, model, xr, gr, s.dyn_dt, gen),
        steps=1,
        progress=False,
    )
    assert math.isfinite(loss.losses[0])
    trap = M.TrapScore(2, s.trap_hidden, s.trap_depth)
    tm = M.trap_model(s, 1.0)
    xt, gt = torch.randn(8, 1, 2, generator=gen), torch.randn(8, 1, 2, generator=gen)
    loss = fit(
        trap,
        lambda m, i: M.dynamics_denoising_loss(
            lambda a, b: m(a, b, 1.0), tm, xt, gt, s.dyn_dt, gen
        ),
        steps=1,
        progress=False,
    )
    assert math.isfinite(loss.losses[0])


def test_tiny_run_end_to_end_and_from_the_cache(data_dir):
    s = M.settings("tiny")
    M.prepare(s)
    assert list((data_dir / "cache" / "active_matter").glob("trap_score-*.pt"))
    r = M.run(s)
    assert r.from_cache and r.trained_seconds == 0.0
    assert r.trap.learned.shape == (len(s.trap_v0s),)
    assert r.ring.sizes.tolist() == [s.ring_n, *s.ring_n_eval]
    assert r.mips.local.shape == (s.mips_replicas * s.mips_frames, s.mips_n)
    assert r.movie.frames.shape == (s.movie_frames, s.mips_n, 2)
    assert r.movie.colors.shape == (s.movie_frames, s.mips_n)
    # the theory checks do not depend on training
    assert r.theory.formula_vs_lyapunov < 1e-9 and abs(r.theory.div_total) < 1e-9
    assert r.theory.div_x == pytest.approx(-r.theory.div_g)
    torch.testing.assert_close(
        r.trap.exact,
        torch.tensor(
            [linear_sde.trapped_aoup_epr(1.0, v, 1.0, 1.0) for v in s.trap_v0s], dtype=F64
        ),
    )
    cs = M.claims(r)
    assert len(cs) >= 6 and all(isinstance(c, Claim) and c.scale == "tiny" for c in cs)
    assert cs[0].holds and cs[1].holds
    figs = M.figures(r)
    assert {"trap_sweep", "trap_current", "ring", "mips_snapshot", "mips_regions"} <= set(figs)
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(M.preview(), go.Figure)
