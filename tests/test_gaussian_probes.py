"""pflow_explore.gaussian_probes against independent numerics: scipy's ODE solver on the
PF-ODE written with an explicit matrix inverse, eigen-decompositions done here with numpy,
the closed forms of the card written out in the tests (f_k, the kick gain, sqrt(lambda_k)),
a rank formula for Spearman, and the exact Gaussian denoiser in place of a network, for which
every probe must report that the Gaussian theory explains everything."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from pflow_explore import gaussian_probes as gp
from pflow_explore.edm import heun_nfe
from pflow_explore.paths import karras_sigmas
from pflow_explore.theory.gaussian_flow import GaussianFlow

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


random_gaussian = GaussianFlow.random  # (d, seed) -> a random N(mu, Sigma)


def two_level_gaussian(d: int, seed: int, high: float = 3.0, low: float = 0.02) -> GaussianFlow:
    """A random rotation of diag(high, ..., low, ...): the spectrum has two values."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
    lam = torch.tensor([high] * (d // 2) + [low] * (d - d // 2), dtype=F64)
    return GaussianFlow(torch.randn(d, generator=gen, dtype=F64), q @ torch.diag(lam) @ q.T)


def noise(n: int, d: int, seed: int, sigma_max: float = 80.0) -> torch.Tensor:
    return sigma_max * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def scipy_pf_ode(mean: np.ndarray, cov: np.ndarray, x_T: np.ndarray, sigmas: np.ndarray):
    """dx/dsigma = sigma (Sigma + sigma^2 I)^-1 (x - mu), each path alone, with scipy's
    DOP853 at tight tolerance: (m, n, d) on the positive grid points sigmas (m,)."""
    eye = np.eye(len(mean))

    def velocity(s: float, x: np.ndarray) -> np.ndarray:
        return s * np.linalg.solve(cov + s**2 * eye, x - mean)

    out = [
        solve_ivp(
            velocity, (sigmas[0], sigmas[-1]), x, "DOP853", sigmas, rtol=1e-11, atol=1e-11
        ).y.T
        for x in x_T
    ]
    return np.stack(out, axis=1)


# ---- the closed form and the explained share ------------------------------------------------
def test_closed_form_error_is_tiny_and_sees_a_wrong_flow():
    g = random_gaussian(6, seed=7)
    sigmas = karras_sigmas(10)
    x_T = noise(3, 6, seed=8)
    assert gp.closed_form_error(g, x_T, sigmas) < 1e-7
    wrong = g.rescaled(1.1)  # eigenvalues x 1.21: its closed form solves another ODE
    wrong.ve_velocity = g.ve_velocity  # type: ignore[method-assign]
    assert gp.closed_form_error(wrong, x_T, sigmas) > 1e-3


def test_explained_share_of_the_gaussian_is_one_and_of_a_scaled_one_known():
    g = random_gaussian(6, seed=9)
    x0 = g.sample(300, torch.Generator().manual_seed(10))
    sig = torch.tensor([0.1, 1.0, 10.0], dtype=F64)
    one = gp.explained_share(g.ve_denoiser, g, x0, sig, torch.Generator().manual_seed(0))
    torch.testing.assert_close(one, torch.ones(3, dtype=F64))
    # D = mu + a (D_G - mu): share = 1 - (1 - a)^2 / a^2 whatever sigma and the data
    for a in (0.5, 2.0, 0.8):

        def scaled(x: torch.Tensor, s: float, a: float = a) -> torch.Tensor:
            return g.mean + a * (g.ve_denoiser(x, s) - g.mean)

        share = gp.explained_share(scaled, g, x0, sig, torch.Generator().manual_seed(0))
        torch.testing.assert_close(share, torch.full((3,), 1 - (1 - a) ** 2 / a**2, dtype=F64))


def test_sigma_star_scans_down_from_the_largest_sigma():
    sig = torch.tensor([0.01, 0.1, 1.0, 10.0, 80.0])
    assert gp.sigma_star(torch.tensor([1.0, 0.2, 0.95, 0.99, 1.0]), sig) == 1.0
    assert gp.sigma_star(torch.tensor([1.0, 0.95, 0.95, 0.99, 0.5]), sig) is None
    assert gp.sigma_star(torch.ones(5), sig) == pytest.approx(0.01)
    # order of the grid does not matter
    assert gp.sigma_star(torch.tensor([1.0, 0.99, 0.95, 0.2, 1.0]), sig.flip(0)) == 1.0


# ---- trajectories and kicks ----------------------------------------------------------------
def test_analytic_path_matches_scipy_and_its_x0_the_posterior_mean():
    g = random_gaussian(4, seed=21)
    x_T = noise(3, 4, seed=22, sigma_max=20.0)
    sigmas = karras_sigmas(12, sigma_max=20.0)
    states, x0 = gp.analytic_path(g, x_T, sigmas)
    assert states.shape == (13, 3, 4) and x0.shape == (12, 3, 4)
    mean, cov = g.mean.numpy(), g.cov.numpy()
    ode = scipy_pf_ode(mean, cov, x_T.numpy(), sigmas[:-1].numpy())
    np.testing.assert_allclose(states[:-1].numpy(), ode, rtol=1e-7, atol=1e-7)
    # E[x0 | x] = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu), solved here, not diagonalised
    for i, s in enumerate(sigmas[:-1].tolist()):
        sol = np.linalg.solve(cov + s**2 * np.eye(4), (states[i].numpy() - mean).T)
        np.testing.assert_allclose(x0[i].numpy(), mean + (cov @ sol).T, rtol=1e-9, atol=1e-9)


def test_trajectories_of_the_exact_denoiser_follow_the_closed_form_and_rotate():
    g = two_level_gaussian(6, seed=23)
    x_T = noise(5, 6, seed=24)
    pair = gp.trajectories(g.ve_denoiser, g, x_T, karras_sigmas(200))
    assert pair.learned.shape == pair.analytic.shape == (201, 5, 6)
    # Heun on the exact field: second order, so 200 steps leave a tiny gap
    assert float(pair.gap.max()) < 1e-3 * float(x_T.norm(dim=1).max())
    # a two-valued spectrum keeps every path in span{x_T - mu, x_0 - mu} (card, "Rotation")
    assert float(pair.residual_analytic.abs().max()) < 1e-8
    assert float(pair.residual_learned.abs().max()) < 1e-3
    # a spread-out spectrum does leave the plane: the residual can fail
    g3 = GaussianFlow.from_spectrum(
        g.mean, torch.tensor([4.0, 1.0, 0.3, 0.1, 0.03, 0.01], dtype=F64), g.eigenvectors
    )
    spread = gp.trajectories(g3.ve_denoiser, g3, x_T, karras_sigmas(40))
    assert float(spread.residual_analytic.max()) > 1e-3


def test_perturbation_gain_of_the_exact_denoiser_is_the_closed_form():
    g = random_gaussian(5, seed=11)
    x_T = noise(64, 5, seed=12)
    sigmas = karras_sigmas(200)
    p = gp.perturbation_experiment(
        g.ve_denoiser, g, x_T, sigmas, (0, 2), kick=0.3, sigma_data=0.7, indices=(20, 80, 140)
    )
    lam = torch.linalg.eigvalsh(g.cov).flip(0)[[0, 2]]  # descending, computed here
    predicted = (lam[:, None] / (lam[:, None] + p.sigmas_t[None] ** 2)).sqrt()
    torch.testing.assert_close(p.sigmas_t, sigmas[[20, 80, 140]])
    torch.testing.assert_close(p.predicted, predicted)
    torch.testing.assert_close(p.gain, predicted, rtol=2e-2, atol=0)
    torch.testing.assert_close(p.along, predicted, rtol=2e-2, atol=0)
    torch.testing.assert_close(p.delta, torch.full((3,), 0.3 * 0.7, dtype=F64))  # fixed size
    # exactly, on this grid: the flow carries the kick to the last positive sigma_e with
    # sqrt((lam + sigma_e^2) / (lam + sigma_t^2)), and the last (Euler) step to 0 returns the
    # denoiser, which keeps lam / (lam + sigma_e^2) of it; only Heun's error is left
    end = sigmas[-2]
    flow = ((lam[:, None] + end**2) / (lam[:, None] + p.sigmas_t[None] ** 2)).sqrt()
    torch.testing.assert_close(
        p.gain, flow * lam[:, None] / (lam[:, None] + end**2), rtol=1e-3, atol=0
    )


def test_fit_gaussian_guards_the_pixel_range():
    x = torch.rand(200, 16, generator=torch.Generator().manual_seed(13)) * 2 - 1
    g = gp.fit_gaussian(x)
    torch.testing.assert_close(g.mean, x.double().mean(0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gp.fit_gaussian((x + 1) / 2)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        gp.fit_gaussian(3 * x)
    # the card's trap, done right: fit in [0, 1], rescale by 2 x - 1
    back = GaussianFlow.from_samples(((x + 1) / 2).flatten(1)).rescaled(2.0, -1.0)
    torch.testing.assert_close(back.mean, g.mean)
    torch.testing.assert_close(back.cov, g.cov)


def test_spearman_is_the_rank_formula():
    gen = torch.Generator().manual_seed(31)
    for _ in range(5):
        a, b = torch.randn(9, generator=gen), torch.randn(9, generator=gen)
        ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
        n = len(a)
        rho = 1 - 6 * float(((ra - rb) ** 2).sum()) / (n * (n**2 - 1))  # no ties
        assert gp.spearman(a, b) == pytest.approx(rho, abs=1e-12)
    up = torch.arange(6.0)
    assert gp.spearman(up, up**3) == pytest.approx(1.0)
    assert gp.spearman(up, -up) == pytest.approx(-1.0)


def test_rank_order_samples_the_permutation_probability_beyond_exact_enumeration():
    # 8! = 40320 orderings > 9999 resamples: the p-value is a Monte Carlo estimate of the
    # exact share, within 4 binomial standard errors of it
    from itertools import permutations

    gen = torch.Generator().manual_seed(33)
    a = torch.randn(8, generator=gen)
    b = a + 2.0 * torch.randn(8, generator=gen)
    rho, p = gp.rank_order(a, b)
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    rhos = np.array(
        [1 - 6 * float(((ra - rb[list(q)]) ** 2).sum()) / (8 * 63) for q in permutations(range(8))]
    )
    exact = float(np.mean(rhos >= rho - 1e-12))
    assert 0.02 < exact < 0.5  # a case where sampling error is visible
    assert p == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 9999))
    ties = torch.tensor([1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 5.0, 9.0])
    assert gp.spearman(ties, ties) == pytest.approx(1.0)


def test_rank_order_p_value_is_the_permutation_probability():
    gen = torch.Generator().manual_seed(32)
    a = torch.randn(7, generator=gen)
    b = a + 1.5 * torch.randn(7, generator=gen)
    rho, p = gp.rank_order(a, b)
    assert rho == pytest.approx(gp.spearman(a, b))
    # one-sided p: the share of the 7! orderings of b with a rank correlation >= rho
    from itertools import permutations

    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    rhos = [
        1 - 6 * float(((ra - rb[list(q)]) ** 2).sum()) / (7 * 48) for q in permutations(range(7))
    ]
    assert p == pytest.approx(np.mean(np.array(rhos) >= rho - 1e-12), abs=1e-9)
    assert gp.rank_order(torch.arange(6.0), torch.arange(6.0))[1] == pytest.approx(1 / 720)
    assert math.isnan(gp.rank_order(torch.zeros(5), torch.arange(5.0))[0])


# ---- teleportation ---------------------------------------------------------------------------
def test_skip_steps_rounds_the_fraction_of_the_grid():
    assert [gp.skip_steps(f, 20) for f in (0.0, 0.1, 0.26, 0.5, 0.99)] == [0, 2, 5, 10, 20]


def test_frechet_to_clamps_and_is_near_zero_for_the_same_set():
    gen = torch.Generator().manual_seed(41)
    x = torch.rand(300, 64, generator=gen) * 2 - 1
    assert gp.frechet_to(x, x, (1, 8, 8)) == pytest.approx(0.0, abs=1e-3)
    # values beyond [-1, 1] are clamped first: 3 x is the same set as sign-saturated x
    far = gp.frechet_to(3 * x, x, (1, 8, 8))
    assert far == pytest.approx(gp.frechet_to((3 * x).clamp(-1, 1), x, (1, 8, 8)), rel=1e-6)
    assert far > 0.1


def test_teleportation_with_the_exact_denoiser_changes_nothing():
    g = random_gaussian(64, seed=43)  # d = 64: the digits classifier's 8x8 images
    x_T = noise(200, 64, seed=44)
    reference = g.sample(400, torch.Generator().manual_seed(45))
    sigmas = karras_sigmas(80)
    t = gp.teleportation_sweep(
        g.ve_denoiser, g, x_T, sigmas, (0.0, 0.25, 0.5), reference, (1, 8, 8)
    )
    assert t.skipped.tolist() == [0, 20, 40]
    assert t.nfe.tolist() == [heun_nfe(80, k) for k in (0, 20, 40)] == [159, 119, 79]
    # the closed-form jump is the exact path: every fraction ends where the closed form does,
    # up to Heun's error on the remaining steps
    exact = g.ve_solution(x_T[:16], 80.0, torch.tensor([0.0], dtype=F64))[0]
    assert float((t.samples - exact).abs().max()) < 1e-2
    assert t.best_fraction == 0.5 and t.nfe_saved == pytest.approx(1 - 79 / 159)
    assert math.isnan(t.fd_floor) and t.samples.shape == (3, 16, 64)


def test_teleportation_best_fraction_stops_at_the_first_loss(monkeypatch):
    fds = iter([1.0, 1.05, 1.2, 1.0])  # the third fraction loses > 10%: the fourth never counts
    monkeypatch.setattr(gp, "flat_digits_features", lambda x, shape: x)
    monkeypatch.setattr(gp, "frechet_distance", lambda *args: next(fds))
    g = random_gaussian(3, seed=47)
    x_T = noise(4, 3, seed=48)
    t = gp.teleportation_sweep(
        g.ve_denoiser, g, x_T, karras_sigmas(10), (0.0, 0.1, 0.2, 0.3), x_T, (3,)
    )
    assert t.best_fraction == 0.1
    assert t.nfe_saved == pytest.approx(1 - heun_nfe(10, 1) / heun_nfe(10, 0))


# ---- outline first: when each feature is fixed ----------------------------------------------
def test_feature_shares_on_exact_paths_are_sqrt_lambda_over_lambda_plus_sigma2():
    gen = torch.Generator().manual_seed(51)
    d = 5
    a = torch.randn(d, d, generator=gen, dtype=F64)
    cov = a @ a.T / d + 0.05 * torch.eye(d, dtype=F64)
    mean = torch.randn(d, generator=gen, dtype=F64)
    lam, u = torch.linalg.eigh(cov)  # ascending here; GaussianFlow sorts descending
    x_T = noise(7, d, seed=52, sigma_max=10.0)
    sigmas = torch.tensor([10.0, 3.0, 1.0, 0.3, 0.1], dtype=F64)
    # exact paths and posterior means in the eigenbasis, built here
    c_T = (x_T - mean) @ u
    c = [c_T * ((lam + s**2) / (lam + 100.0)).sqrt() for s in sigmas.tolist()]
    x0_hat = torch.stack(
        [mean + (ck * lam / (lam + s**2)) @ u.T for ck, s in zip(c, sigmas.tolist(), strict=True)]
    )
    final = mean + (c_T * (lam / (lam + 100.0)).sqrt()) @ u.T  # the path at sigma = 0
    g = GaussianFlow(mean, cov)
    shares = gp.feature_shares(x0_hat, final, g, [0, 1, 2])
    top = lam.flip(0)[:3]
    torch.testing.assert_close(shares, (top / (top + sigmas[:, None] ** 2)).sqrt())


def test_crossing_of_known_curves():
    lam = torch.tensor([4.0, 1.0, 0.09], dtype=F64)
    sigmas = karras_sigmas(64)[:-1]
    shares = (lam / (lam + sigmas[:, None] ** 2)).sqrt()  # f_k, written out here
    torch.testing.assert_close(gp.crossing(shares, sigmas), lam.sqrt(), rtol=5e-3, atol=0)
    # a share linear in log sigma is crossed exactly where the line says, between grid points
    grid = torch.logspace(1, -2, 5, dtype=F64)  # log10 sigma = 1, 0.25, -0.5, -1.25, -2
    line = (0.2 * (1 - grid.log10()))[:, None]  # f = 0.2 (1 - log10 sigma)
    level = 0.5  # reached at log10 sigma = -1.5
    assert float(gp.crossing(line, grid, level)[0]) == pytest.approx(10**-1.5, rel=1e-12)
    flat = torch.cat([torch.full((64, 1), 0.9), torch.full((64, 1), 0.1)], 1).double()
    both = gp.crossing(flat, sigmas)
    assert float(both[0]) == pytest.approx(80.0) and math.isnan(float(both[1]))
    # the last crossing counts: up, down, up again
    wiggle = torch.tensor([[0.1], [0.9], [0.1], [0.9], [0.95]], dtype=F64)
    five = torch.tensor([16.0, 8.0, 4.0, 2.0, 1.0], dtype=F64)
    assert 2.0 < float(gp.crossing(wiggle, five)[0]) < 4.0


def test_feature_emergence_of_the_exact_denoiser_is_at_sqrt_lambda():
    g = random_gaussian(5, seed=11)
    x_T = noise(64, 5, seed=12)
    e = gp.feature_emergence(g.ve_denoiser, g, x_T, karras_sigmas(64), 4)
    sqrt_lam = torch.linalg.eigvalsh(g.cov).flip(0)[:4].sqrt()
    torch.testing.assert_close(e.sqrt_lambda, sqrt_lam)
    torch.testing.assert_close(e.crossing_learned, sqrt_lam, rtol=2e-2, atol=0)
    torch.testing.assert_close(e.crossing_gaussian, sqrt_lam, rtol=2e-2, atol=0)
    assert e.share_learned.shape == e.share_gaussian.shape == (64, 4)
