"""Chapter 01 painters: every training-dependent claim row can come out NO.

Each row is fed the exact denoiser of a known Gaussian (the theory explains everything:
the row must hold) and negative controls that must make it fail: a shuffled or reversed
lambda, the denoiser of a Gaussian with the wrong spectrum, a model that knows only the
mean, and the chapter's untrained network on the digits."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from pflow_explore import gaussian_probes as gp
from pflow_explore.chapters import painters as P
from pflow_explore.paths import karras_sigmas
from pflow_explore.theory.gaussian_flow import GaussianFlow

F64 = torch.float64
D = 8
LAM = torch.logspace(0.6, -2, D, dtype=F64)  # 4 down to 0.01: sqrt(lambda) 2 down to 0.1
S = P.settings("tiny")
pytestmark = pytest.mark.usefixtures("one_thread")


def gaussians() -> tuple[GaussianFlow, GaussianFlow]:
    """(the true Gaussian, one with the same axes but the spectrum reversed on them)."""
    gen = torch.Generator().manual_seed(5)
    u, _ = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=F64))
    mu = 0.3 * torch.randn(D, generator=gen, dtype=F64)
    return GaussianFlow.from_spectrum(mu, LAM, u), GaussianFlow.from_spectrum(mu, LAM, u.flip(1))


def starts(n: int, d: int = D, seed: int = 6) -> torch.Tensor:
    return 80.0 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def mean_only(g: GaussianFlow):
    """The denoiser of a model that knows only the data's mean: D(x; sigma) = mu."""
    return lambda x, sigma: g.mean.to(x).expand_as(x)


@pytest.fixture(scope="module")
def untrained():
    """(the digits' Gaussian, the chapter's network at its initial weights)."""
    train, _ = P.dataset(S)
    torch.manual_seed(0)
    return P.fit_gaussian(train), P.make_denoiser(S, float(train.std())).eval()


# ---- outline first: the order of emergence --------------------------------------------------
def test_order_claim_holds_for_the_exact_denoiser_and_not_for_controls():
    g, wrong = gaussians()
    grid = karras_sigmas(64)
    e = gp.feature_emergence(g.ve_denoiser, g, starts(128), grid, D)
    assert P.order_claim(e, "tiny").holds
    # reversed lambda: the same crossings read against the wrong order
    assert not P.order_claim(replace(e, sqrt_lambda=e.sqrt_lambda.flip(0)), "tiny").holds
    # shuffled lambda: holds only as often as chance allows (p < 0.05 one-sided)
    gen = torch.Generator().manual_seed(7)
    shuffles = [e.sqrt_lambda[torch.randperm(D, generator=gen)] for _ in range(40)]
    passes = sum(P.order_claim(replace(e, sqrt_lambda=s), "tiny").holds for s in shuffles)
    assert passes <= 6
    # a denoiser whose large-variance axes are the true small ones
    bad = gp.feature_emergence(wrong.ve_denoiser, g, starts(128), grid, D)
    assert not P.order_claim(bad, "tiny").holds


def test_order_claim_fails_for_the_untrained_net(untrained):
    g, net = untrained
    x_T = P.initial_noise(S, 128, 1, torch.device("cpu"))
    e = gp.feature_emergence(net, g, x_T, P.sampling_grid(S, 24), 8)
    assert not P.order_claim(e, "tiny").holds


# ---- the early phase: learned paths against Gaussian paths ---------------------------------
def test_early_phase_claim_holds_for_the_exact_denoiser_and_not_for_controls():
    g, _ = gaussians()
    sigmas, x_T = karras_sigmas(20), starts(32)
    sqrt_l1 = float(LAM[0].sqrt())
    exact = gp.trajectories(g.ve_denoiser, g, x_T, sigmas)
    c = P.early_phase_claim(exact, g, S, sqrt_l1)
    assert c.holds and c.measured < 1e-2
    # the mean-only model follows x_mean exactly: no closer to the Gaussian than to it
    flat = gp.trajectories(mean_only(g), g, x_T, sigmas)
    assert not P.early_phase_claim(flat, g, S, sqrt_l1).holds


def test_early_phase_claim_fails_for_the_untrained_net(untrained):
    g, net = untrained
    x_T = P.initial_noise(S, 16, 3, torch.device("cpu"))
    pair = gp.trajectories(net, g, x_T, P.sampling_grid(S))
    c = P.early_phase_claim(pair, g, S, float(g.eigenvalues[0].sqrt()))
    assert not c.holds and c.measured > 0.05


def test_trajectory_deviation_by_hand():
    g, _ = gaussians()
    sigmas, x_T = karras_sigmas(10), starts(4)
    pair = gp.trajectories(g.ve_denoiser, g, x_T, sigmas)
    off = torch.zeros(D, dtype=F64)
    off[0] = 0.5
    moved = replace(pair, learned=pair.analytic + off)  # every state shifted by 0.5 along e_0
    sigma_early = float(sigmas[3])
    dev, ratio = gp.trajectory_deviation(moved, g, sigma_early)
    norms = [(pair.analytic[i] - g.mean).pow(2).sum(1).mean().sqrt() for i in range(4)]
    assert dev == pytest.approx(0.5 / float(min(norms)), rel=1e-9)
    mean_path = g.mean + (x_T - g.mean) * float(sigmas[3] / sigmas[0])
    to_mean = (pair.analytic[3] + off - mean_path).pow(2).sum(1).mean().sqrt()
    assert ratio == pytest.approx(0.5 / float(to_mean), rel=1e-9)


# ---- kicks of fixed size ---------------------------------------------------------------------
def test_kick_claim_holds_for_the_exact_denoiser_and_not_for_controls():
    g, wrong = gaussians()
    sigmas, x_T = karras_sigmas(24), starts(16)
    feats = tuple(range(D))
    p = gp.perturbation_experiment(g.ve_denoiser, g, x_T, sigmas, feats, 0.5, 1.0)
    torch.testing.assert_close(p.delta, torch.full_like(p.delta, 0.5))  # one fixed size
    assert P.kick_claim(p, S).holds
    assert not P.kick_claim(replace(p, eigenvalues=p.eigenvalues.flip(0)), S).holds
    for den in (wrong.ve_denoiser, mean_only(g)):
        bad = gp.perturbation_experiment(den, g, x_T, sigmas, feats, 0.5, 1.0)
        assert not P.kick_claim(bad, S).holds


def test_kick_claim_fails_for_the_untrained_net(untrained):
    g, net = untrained
    x_T = P.initial_noise(S, 16, 4, torch.device("cpu"))
    p = gp.perturbation_experiment(net, g, x_T, P.sampling_grid(S), S.kick_features, 0.5, 0.6)
    assert not P.kick_claim(p, S).holds
