"""score_matching: the denoising losses against their closed-form expectations and minimisers
on Gaussians (Lyapunov covariances from scipy, linear scores), the antithetic variance
reduction measured, the block Hutchinson divergence against exact traces and autograd
Jacobians, and the EPR of a score against the trace formula of a Gaussian."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from pflow_explore.datasets.particles import AOUP
from pflow_explore.score_matching import (
    aoup_dynamics_loss,
    aoup_minibatch_loss,
    block_hutchinson_divergence,
    denoising_integrand,
    denoising_loss,
    dynamics_denoising_loss,
    evaluate_score,
    g_block_divergence,
    learned_aoup_epr,
)

F64 = torch.float64


def trap_covariance(A, v0, gamma, eps):
    """Stationary covariance of dz = -B z dt + sqrt(2 D) dW per dimension, z = (x, g), from
    scipy's Lyapunov solver (B S + S B^T = 2 D)."""
    B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
    return B, D, scipy.linalg.solve_continuous_lyapunov(B, 2 * D)


def gaussian_samples(S, n, seed):
    """n configurations of one particle in d = 2 with (x, g) ~ N(0, S) per dimension:
    (x, g) each (n, 1, 2)."""
    chol = torch.linalg.cholesky(torch.as_tensor(S))
    z = torch.randn(n, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=F64) @ chol.T
    return z[:, :, 0].reshape(n, 1, 2), z[:, :, 1].reshape(n, 1, 2)


def linear_score(P):
    """s(x, g) = -P z per dimension, z = (x, g); P a (2, 2) tensor (may require grad)."""
    P = torch.as_tensor(P, dtype=F64)

    def score(x, g):
        s = -(torch.stack([x, g], dim=-1) @ P.T.to(x.dtype))  # (n, N, d, 2)
        return s[..., 0], s[..., 1]

    return score


def empirical_minimiser(loss_of_p, size):
    """The exact minimiser of a loss quadratic in p (size,): -H^-1 grad at 0 (autograd)."""
    p0 = torch.zeros(size, dtype=F64)
    grad = torch.autograd.functional.jacobian(loss_of_p, p0)
    hess = torch.autograd.functional.hessian(loss_of_p, p0)
    return -torch.linalg.solve(hess, grad)


def test_denoising_integrand_is_the_expanded_square():
    gen = torch.Generator().manual_seed(0)
    s, xi = torch.randn(5, 3, generator=gen, dtype=F64), torch.randn(5, 3, generator=gen, dtype=F64)
    tau = 0.3
    # |s + xi / tau|^2 = |s|^2 + 2 s . xi / tau + |xi|^2 / tau^2 (the DSM square, expanded)
    square = ((s + xi / tau) ** 2).sum(-1) - (xi**2).sum(-1) / tau**2
    torch.testing.assert_close(denoising_integrand(s, xi, tau), square)
    torch.testing.assert_close(
        denoising_integrand(s, xi, tau, -1.0), denoising_integrand(s, -xi, tau)
    )


@pytest.mark.parametrize("antithetic", [True, False])
def test_denoising_loss_matches_its_closed_form_for_a_linear_score(antithetic):
    # z ~ N(0, S), s(z) = -P z: E[|s(z')|^2 + 2 s(z') . xi / sigma] = tr(P (S + sigma^2) P^T)
    # - 2 tr P per dimension, summed over d = 2
    _, _, S = trap_covariance(1.3, 0.8, 0.7, 0.9)
    sigma = 0.3
    x, g = gaussian_samples(S, 80_000, seed=1)
    P = np.array([[0.9, -0.2], [-0.2, 1.4]])
    gen = torch.Generator().manual_seed(2)
    batches = list(zip(x.split(8_000), g.split(8_000), strict=True))
    values = [float(denoising_loss(linear_score(P), xb, gb, sigma, gen, antithetic=antithetic))
              for xb, gb in batches]  # fmt: skip
    expected = 2 * (np.trace(P @ (S + sigma**2 * np.eye(2)) @ P.T) - 2 * np.trace(P))
    se = np.std(values) / math.sqrt(len(values))
    assert abs(np.mean(values) - expected) < 5 * se + 1e-3, (np.mean(values), expected, se)
    # noise on g only: only the g-row counts, and x is left as it is
    values_g = [
        float(denoising_loss(linear_score(P), xb, gb, sigma, gen, noise_x=False))
        for xb, gb in batches
    ]
    cov = S + np.diag([0.0, sigma**2])
    expected_g = 2 * ((P @ cov @ P.T)[1, 1] - 2 * P[1, 1])
    se_g = np.std(values_g) / math.sqrt(len(values_g))
    assert abs(np.mean(values_g) - expected_g) < 5 * se_g + 1e-3


@pytest.mark.parametrize("antithetic", [True, False])
def test_plain_and_antithetic_losses_are_minimised_by_the_smoothed_gaussian_score(antithetic):
    # the minimiser over linear scores s = -P z of the empirical loss (fixed noise) is the
    # score of rho * N(0, sigma^2): P* = (S + sigma^2 I)^-1; for noise on g only, the g-row of
    # (S + diag(0, sigma^2))^-1
    _, _, S = trap_covariance(0.8, 1.5, 1.2, 0.6)
    sigma = 0.5
    x, g = gaussian_samples(S, 200_000, seed=3)

    def loss(p, noise_x=True):
        P = p.reshape(2, 2) if noise_x else torch.cat([torch.zeros(2, dtype=F64), p]).reshape(2, 2)
        gen = torch.Generator().manual_seed(4)  # the same noise at every p
        return denoising_loss(linear_score(P), x, g, sigma, gen, noise_x, antithetic=antithetic)

    best = empirical_minimiser(loss, 4).reshape(2, 2)
    exact = np.linalg.inv(S + sigma**2 * np.eye(2))
    assert np.abs(best.numpy() - exact).max() < 0.03, (best, exact)
    best_g = empirical_minimiser(lambda p: loss(p, noise_x=False), 2)
    exact_g = np.linalg.inv(S + np.diag([0.0, sigma**2]))[1]
    assert np.abs(best_g.numpy() - exact_g).max() < 0.03, (best_g, exact_g)
    # negative control: the unsmoothed score is not the minimiser at this sigma
    assert np.abs(np.linalg.inv(S) - exact).max() > 0.1


def test_antithetic_pairs_reduce_the_variance_at_small_sigma():
    _, _, S = trap_covariance(1.0, 1.0, 1.0, 1.0)
    sigma = 0.05
    P = np.linalg.inv(S + sigma**2 * np.eye(2))  # at the minimiser
    gen = torch.Generator().manual_seed(5)
    var = {}
    for antithetic in (True, False):
        x, g = gaussian_samples(S, 300 * 64, seed=6)
        values = [
            float(denoising_loss(linear_score(P), xb, gb, sigma, gen, antithetic=antithetic))
            for xb, gb in zip(x.split(64), g.split(64), strict=True)
        ]
        var[antithetic] = np.var(values)
    # the plain loss carries 2 s . xi / sigma, of variance ~ 1 / sigma^2; measured here
    # ~0.7 vs ~90 per batch of 64
    assert var[True] * 20 < var[False], var


def test_dynamics_denoising_loss_matches_its_closed_form_and_is_minimised_by_the_score():
    # z' = (I - B dt) z + sqrt(2 D dt) xi, z ~ N(0, S): with s = -P z the loss is
    # tr(P C' P^T) - 2 tr P per dimension, C' = F S F^T + 2 D dt, F = I - B dt (a large dt,
    # so that the drift's share of C' is well above the Monte Carlo error)
    A, v0, gamma, eps, dt = 1.0, 1.2, 0.8, 0.6, 0.05
    B, D, S = trap_covariance(A, v0, gamma, eps)
    x, g = gaussian_samples(S, 80_000, seed=7)
    F = np.eye(2) - B * dt
    C = F @ S @ F.T + 2 * D * dt

    def drift(x, g):  # b = -B z, written out
        return -A * x + v0 * g, -gamma * g

    def expected(P):
        return 2 * (np.trace(P @ C @ P.T) - 2 * np.trace(P))

    P = np.linalg.inv(S) + np.array([[0.1, 0.05], [0.05, -0.1]])
    gen = torch.Generator().manual_seed(8)
    values = [
        float(dynamics_denoising_loss(linear_score(P), drift, (eps, gamma), xb, gb, dt, gen))
        for xb, gb in zip(x.split(8_000), g.split(8_000), strict=True)
    ]
    se = np.std(values) / math.sqrt(len(values))
    assert abs(np.mean(values) - expected(P)) < 5 * se + 2e-3, (np.mean(values), expected(P))
    # negative control: the same loss without the drift's step has another expectation
    C_no_drift = S + 2 * D * dt
    no_drift = 2 * (np.trace(P @ C_no_drift @ P.T) - 2 * np.trace(P))
    assert abs(no_drift - expected(P)) > 10 * se

    # the empirical minimiser is the score of the law of z' (= rho up to O(dt))
    def loss(p):
        gen = torch.Generator().manual_seed(9)
        return dynamics_denoising_loss(
            linear_score(p.reshape(2, 2)), drift, (eps, gamma), x, g, dt, gen
        )

    best = empirical_minimiser(loss, 4).reshape(2, 2).numpy()
    assert np.abs(best - np.linalg.inv(C)).max() < 0.03, (best, np.linalg.inv(C))
    # x without noise (D_x = 0): only the g-part counts, s_x may be None
    value_g = dynamics_denoising_loss(
        lambda x, g: (None, linear_score(P)(x, g)[1]), drift, (0.0, gamma), x, g, dt, gen
    )
    C_g = F @ S @ F.T + np.diag([0.0, 2 * gamma * dt])
    expected_g = 2 * ((P @ C_g @ P.T)[1, 1] - 2 * P[1, 1])
    assert abs(float(value_g) - expected_g) < 0.1 * abs(expected_g)


# ---- Hutchinson ------------------------------------------------------------------------------
def replicated_estimates(field, z, copies, seed):
    """``copies`` independent single-probe estimates at the same z (one probe per copy):
    (copies, n, N)."""
    n = z.shape[0]
    zz = z.repeat(copies, 1, 1)
    est = block_hutchinson_divergence(field, zz, torch.Generator().manual_seed(seed))
    return est.reshape(copies, n, *est.shape[1:])


def test_block_hutchinson_is_unbiased_for_a_linear_map():
    gen = torch.Generator().manual_seed(10)
    n, N, d = 2, 4, 3
    W = torch.randn(N * d, N * d, generator=gen, dtype=F64)

    def field(z):  # f(z) = W z, coupling every block to every other
        return (z.reshape(z.shape[0], -1) @ W.T).reshape(z.shape)

    z = torch.randn(n, N, d, generator=gen, dtype=F64)
    blocks = torch.stack([W[i * d : (i + 1) * d, i * d : (i + 1) * d].trace() for i in range(N)])
    est = replicated_estimates(field, z, 20_000, seed=11)
    mean, se = est.mean(0), est.std(0) / math.sqrt(est.shape[0])
    assert ((mean - blocks).abs() < 4.5 * se).all(), (mean, blocks, se)
    # summed over blocks: the full trace
    full = est.sum(-1)
    assert abs(float(full.mean()) - float(W.trace())) < 4.5 * float(full.std()) / math.sqrt(
        full.numel()
    )
    # one probe: a single value u . W u per block, never the trace itself for a non-diagonal W
    assert not torch.allclose(est[0, 0], blocks)


def test_block_hutchinson_matches_autograd_for_a_small_mlp():
    gen = torch.Generator().manual_seed(12)
    n, N, d = 3, 5, 2
    W = torch.randn(N * d, N * d, generator=gen, dtype=F64) / 3
    V = torch.randn(N * d, N * d, generator=gen, dtype=F64) / 3
    U = torch.randn(N * d, N * d, generator=gen, dtype=F64) / 3

    def score(x, g):  # s_g depends on every g and every x
        h = torch.tanh(g.reshape(g.shape[0], -1) @ W.T + x.reshape(x.shape[0], -1) @ V.T)
        return None, (h @ U.T).reshape(g.shape)

    x = torch.randn(n, N, d, generator=gen, dtype=F64)
    g = torch.randn(n, N, d, generator=gen, dtype=F64)
    exact = torch.zeros(n, N, dtype=F64)
    for b in range(n):
        jac = torch.autograd.functional.jacobian(
            lambda gg, b=b: score(x[b : b + 1], gg[None])[1][0], g[b]
        )  # (N, d, N, d)
        exact[b] = torch.einsum("iaia->i", jac)
    copies = 4000
    est = g_block_divergence(
        score, x.repeat(copies, 1, 1), g.repeat(copies, 1, 1), torch.Generator().manual_seed(13)
    ).reshape(copies, n, N)
    mean, se = est.mean(0), est.std(0) / math.sqrt(copies)
    assert ((mean - exact).abs() < 5 * se).all(), (mean - exact) / se
    # probes average: the same estimator with 3 probes has a third of the variance
    three = g_block_divergence(score, x, g, torch.Generator().manual_seed(14), probes=3)
    assert three.shape == (n, N) and ((three - exact).abs() < 6 * se * math.sqrt(copies / 3)).all()


def test_evaluate_score_in_batches_equals_one_call():
    gen = torch.Generator().manual_seed(15)
    x, g = torch.randn(10, 3, 2, generator=gen), torch.randn(10, 3, 2, generator=gen)
    P = torch.tensor([[1.0, 0.3], [0.3, 2.0]])
    s_x, s_g = evaluate_score(linear_score(P), x, g, batch=3)
    ref_x, ref_g = linear_score(P)(x, g)
    torch.testing.assert_close(s_x, ref_x)
    torch.testing.assert_close(s_g, ref_g)
    none_x, _ = evaluate_score(lambda a, b: (None, b), x, g, batch=4)
    assert none_x is None


def test_aoup_dynamics_loss_uses_the_aoup_drift_and_noise():
    """The AOUP loss equals dynamics denoising with the drift (v0 g - A x - k L x, -gamma g)
    and noise (eps, gamma) written out here for a spring ring (L the ring's Laplacian)."""
    model = AOUP(5, 0.8, gamma=1.3, eps=0.4, A=0.7, k=0.9, interaction="ring")
    lap = 2 * torch.eye(5, dtype=F64) - torch.eye(5, dtype=F64).roll(1, 0)
    lap = lap - torch.eye(5, dtype=F64).roll(-1, 0)

    def drift(x, g):
        return 0.8 * g - 0.7 * x - 0.9 * torch.einsum("ij,njd->nid", lap, x), -1.3 * g

    gen = torch.Generator().manual_seed(4)
    x, g = (
        torch.randn(6, 5, 2, generator=gen, dtype=F64),
        torch.randn(6, 5, 2, generator=gen, dtype=F64),
    )
    score = lambda xx, gg: (-0.5 * xx, -gg)  # noqa: E731
    got = aoup_dynamics_loss(score, model, x, g, 0.01, torch.Generator().manual_seed(7))
    want = dynamics_denoising_loss(
        score, drift, (0.4, 1.3), x, g, 0.01, torch.Generator().manual_seed(7)
    )
    torch.testing.assert_close(got, want)


def test_learned_aoup_epr_of_the_exact_score_matches_the_trace_formula():
    """With the exact score s = -S^-1 z of the trapped AOUP (scipy's Lyapunov S), v = M z,
    M = -B + D S^-1, so EPR = d tr(M^T D^-1 M S) per dimension d (and its g-row alone for
    the g-part). The divergence form is exact here (a linear score, diagonal across the
    dimensions), the squared form a Monte Carlo mean."""
    A, v0, gamma, eps = 0.8, 1.7, 1.3, 0.6
    B, D, S = trap_covariance(A, v0, gamma, eps)
    M = -B + D @ np.linalg.inv(S)
    Dinv = np.diag(1 / np.diag(D))
    total = 2 * np.trace(M.T @ Dinv @ M @ S)
    g_part = 2 * (M[1] @ S @ M[1]) / gamma
    model = AOUP(1, v0, gamma=gamma, eps=eps, A=A, interaction="none")
    x, g = gaussian_samples(S, 40000, seed=3)
    score = linear_score(torch.as_tensor(np.linalg.inv(S)))
    est = learned_aoup_epr(model, score, x, g, torch.Generator().manual_seed(1), batch=999)
    assert est.g_div == pytest.approx(g_part, rel=1e-9)
    assert est.total == pytest.approx(total, rel=0.04)
    assert est.g_part == pytest.approx(g_part, rel=0.04)
    assert est.x_part + est.g_part == pytest.approx(est.total, rel=1e-9)
    assert est.per_sample.shape == (40000,)
    assert float(est.per_sample.mean()) == pytest.approx(est.total, rel=1e-9)
    no_x = learned_aoup_epr(model.with_(eps=0.0), lambda a, b: (None, score(a, b)[1]), x, g)
    assert math.isnan(no_x.x_part) and no_x.total == pytest.approx(no_x.g_part)


def test_aoup_minibatch_loss_draws_indices_then_noise_from_one_generator():
    model = AOUP(3, 0.8, gamma=1.3, eps=0.4, A=0.7, interaction="none")
    gen = torch.Generator().manual_seed(2)
    x, g = torch.randn(10, 3, 2, generator=gen), torch.randn(10, 3, 2, generator=gen)
    score = lambda xx, gg: (-0.5 * xx, -gg)  # noqa: E731
    got = aoup_minibatch_loss(score, model, x, g, 4, 0.01, torch.Generator().manual_seed(7))
    ref_gen = torch.Generator().manual_seed(7)
    idx = torch.randint(10, (4,), generator=ref_gen)
    want = aoup_dynamics_loss(score, model, x[idx], g[idx], 0.01, ref_gen)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.equal(got, aoup_dynamics_loss(score, model, x[:4], g[:4], 0.01, ref_gen))
