"""pflow_explore.edm against independent numerics: Monte Carlo for the preconditioning and
the loss, the closed-form Gaussian PF-ODE (theory.gaussian_flow) for the Heun sampler
(second-order convergence, teleportation, gradients), and a brute-force log-sum-exp in
numpy (and the Gaussian's closed-form denoiser) for the empirical denoiser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pflow_explore import edm, paths
from pflow_explore.theory.gaussian_flow import GaussianFlow

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


random_gaussian = GaussianFlow.random  # (d, seed) -> a random N(mu, Sigma)


def noise(n: int, d: int, seed: int, sigma_max: float = 80.0) -> torch.Tensor:
    return sigma_max * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


class Zero(nn.Module):
    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.seen = (x.shape, sigma)
        return torch.zeros_like(x)


# ---- preconditioning ------------------------------------------------------------------------
@pytest.mark.parametrize("sigma, sd", [(0.05, 0.5), (1.3, 0.75), (40.0, 0.3)])
def test_coefficients_make_input_and_target_unit_variance(sigma, sd):
    # Monte Carlo over x0 ~ N(0, sd^2), x = x0 + sigma z: c_skip is the least-squares
    # coefficient of x0 on x, c_out^2 the residual variance, c_in^2 the inverse variance of x
    gen = torch.Generator().manual_seed(0)
    n = 400_000
    x0 = sd * torch.randn(n, generator=gen, dtype=F64)
    x = x0 + sigma * torch.randn(n, generator=gen, dtype=F64)
    c_skip, c_out, c_in = edm.edm_coefficients(torch.tensor(sigma, dtype=F64), sd)
    regression = (x0 * x).mean() / (x * x).mean()
    assert float(c_skip) == pytest.approx(float(regression), rel=2e-2, abs=2e-3)
    target = (x0 - c_skip * x) / c_out
    assert float(target.var()) == pytest.approx(1.0, rel=1e-2)
    assert float((c_in * x).var()) == pytest.approx(1.0, rel=1e-2)
    # the EDM loss weight lambda = 1 / c_out^2 turns |D - x0|^2 into |F - target|^2
    f = torch.randn(n, generator=gen, dtype=F64)
    d = c_skip * x + c_out * f
    assert float(((d - x0) ** 2).mean() / c_out**2) == pytest.approx(
        float(((f - target) ** 2).mean()), rel=1e-9
    )
    # c_noise maps EDM's sigma range [0.002, 80] into about [-1.6, 1.1]
    assert float(edm.c_noise(torch.tensor(sigma))) == pytest.approx(math.log(sigma) / 4)


def test_denoiser_with_zero_network_returns_c_skip_x():
    sd = 0.6
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    sig = torch.tensor([0.01, 0.3, 1.0, 5.0, 80.0])
    den = edm.edm_denoiser(Zero(), sd)
    expected = sd**2 / (sig**2 + sd**2)
    torch.testing.assert_close(den(x, sig), expected[:, None] * x)
    torch.testing.assert_close(den(x, 2.0), sd**2 / (4.0 + sd**2) * x)
    # a convolutional F sees images scaled by c_in = 1 / sqrt(sigma^2 + sd^2)
    net = Zero()
    img = edm.edm_denoiser(net, sd, (1, 8, 8))
    img(x, sig)
    assert net.seen[0] == (5, 1, 8, 8)
    torch.testing.assert_close(net.seen[1], sig)
    with pytest.raises(ValueError, match="sigma_data"):
        edm.edm_denoiser(Zero(), 0.0)


class IdealF(nn.Module):
    """The F that makes the preconditioned D the exact denoiser of N(0, diag(lam)):
    F = (D*(x) - c_skip x) / c_out, computed from the net's own input c_in x."""

    def __init__(self, lam: torch.Tensor, sd: float) -> None:
        super().__init__()
        self.lam, self.sd = lam, sd

    def forward(self, inp: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s2 = sigma[:, None] ** 2
        x = inp * (s2 + self.sd**2).sqrt()
        exact = self.lam / (self.lam + s2) * x
        c_skip = self.sd**2 / (s2 + self.sd**2)
        c_out = sigma[:, None] * self.sd / (s2 + self.sd**2).sqrt()
        return (exact - c_skip * x) / c_out


def test_preconditioned_ideal_network_gives_the_closed_form_denoiser():
    lam = torch.tensor([2.0, 0.5, 0.1], dtype=F64)
    g = GaussianFlow.from_spectrum(torch.zeros(3, dtype=F64), lam, torch.eye(3, dtype=F64))
    den = edm.edm_denoiser(IdealF(lam, 0.9), 0.9)
    x = noise(7, 3, seed=2, sigma_max=3.0)
    sig = torch.tensor([0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 80.0], dtype=F64)
    expected = torch.stack([g.ve_denoiser(x[i : i + 1], float(s))[0] for i, s in enumerate(sig)])
    torch.testing.assert_close(den(x, sig), expected)


# ---- loss -----------------------------------------------------------------------------------
def test_loss_is_one_for_a_zero_network_on_data_of_variance_sigma_data():
    # F = 0: the loss is E |target|^2 / d = 1 for data of variance sd^2 (unit-variance target)
    sd = 0.8
    x0 = sd * torch.randn(20_000, 4, generator=torch.Generator().manual_seed(2))
    den = edm.edm_denoiser(Zero(), sd)
    loss = edm.edm_loss(den, x0, torch.Generator().manual_seed(3))
    assert float(loss) == pytest.approx(1.0, rel=3e-2)


def test_loss_draws_log_normal_sigma_then_noise_and_weights_by_one_over_c_out_squared():
    sd, p_mean, p_std = 0.7, -0.4, 0.9
    loss = edm.EDMLoss(p_mean, p_std)
    log_sigma = loss.sample_sigma(200_000, torch.Generator().manual_seed(4)).log()
    assert float(log_sigma.mean()) == pytest.approx(p_mean, abs=1e-2)
    assert float(log_sigma.std()) == pytest.approx(p_std, rel=1e-2)
    # written out by hand: sigma first, then z, from the same generator; weight
    # (sigma^2 + sd^2) / (sigma sd)^2 (EDM Table 1)
    x0 = torch.randn(64, 5, generator=torch.Generator().manual_seed(5))
    den = edm.edm_denoiser(Zero(), sd)
    gen = torch.Generator().manual_seed(6)
    sigma = torch.exp(p_mean + p_std * torch.randn(64, generator=gen))
    z = torch.randn(64, 5, generator=gen)
    d = sd**2 / (sigma[:, None] ** 2 + sd**2) * (x0 + sigma[:, None] * z)
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    expected = (weight * ((d - x0) ** 2).mean(1)).mean()
    got = loss(den, x0, torch.Generator().manual_seed(6))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
    assert float(edm.edm_loss(den, x0, torch.Generator().manual_seed(6), p_mean, p_std)) == float(
        got
    )


# ---- grid and sampler -----------------------------------------------------------------------
def test_karras_grid_is_the_one_in_paths_and_is_even_in_sigma_to_the_one_over_rho():
    assert edm.karras_sigmas is paths.karras_sigmas
    sig = edm.karras_sigmas(9, 0.01, 50.0, 5.0)
    root = sig[:-1] ** (1 / 5.0)
    torch.testing.assert_close(root.diff(), torch.full((8,), (0.01**0.2 - 50**0.2) / 8, dtype=F64))
    assert float(sig[-1]) == 0.0


def test_heun_sampler_with_exact_denoiser_converges_at_order_two():
    g = random_gaussian(5, seed=3)
    x_T = noise(6, 5, seed=4)
    errors = []
    for n in (12, 24, 48, 96):
        sigmas = edm.karras_sigmas(n)
        out = edm.edm_sampler(g.ve_denoiser, x_T, sigmas, trajectory=True)
        assert out.nfe == 2 * n - 1 == edm.heun_nfe(n)
        assert out.trajectory.shape == (n + 1, 6, 5) and out.denoised.shape == (n, 6, 5)
        exact = g.ve_solution(x_T, 80.0, sigmas[n - 1 : n])[0]  # at sigma_min
        errors.append(float((out.trajectory[n - 1] - exact).norm() / (exact - g.mean).norm()))
    orders = [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:], strict=True)]
    assert errors[-1] < 3e-3, errors
    assert 1.7 < orders[-1] < 2.3, (errors, orders)
    # the last (Euler) step lands near the data end of the exact path
    exact0 = g.ve_solution(x_T, 80.0, [0.0])[0]
    assert float((out.x - exact0).norm() / (exact0 - g.mean).norm()) < 1e-2


def test_the_generator_yields_every_step_and_ends_where_the_one_shot_call_ends():
    g = random_gaussian(4, seed=13)
    x_T = noise(5, 4, seed=14)
    sigmas = edm.karras_sigmas(15)
    full = edm.edm_sampler(g.ve_denoiser, x_T, sigmas, trajectory=True)
    steps = list(edm.heun_steps(g.ve_denoiser, x_T, sigmas))
    assert [s.i for s in steps] == list(range(15))
    assert [s.nfe for s in steps] == [2 * i + 2 for i in range(14)] + [29]
    torch.testing.assert_close(steps[-1].x_next, full.x, rtol=0, atol=0)
    for i, step in enumerate(steps):
        assert step.sigma == float(sigmas[i]) and step.sigma_next == float(sigmas[i + 1])
        torch.testing.assert_close(step.x, full.trajectory[i], rtol=0, atol=0)
        torch.testing.assert_close(step.denoised, full.denoised[i], rtol=0, atol=0)
    # stopping early is allowed: the state after 5 steps is the trajectory's
    it = edm.heun_steps(g.ve_denoiser, x_T, sigmas)
    for _ in range(5):
        last = next(it)
    torch.testing.assert_close(last.x_next, full.trajectory[5], rtol=0, atol=0)
    with pytest.raises(ValueError, match="end with 0"):
        next(edm.heun_steps(g.ve_denoiser, x_T, sigmas[:-1]))


def test_teleportation_with_exact_denoiser_changes_nothing_but_solver_error():
    g = random_gaussian(4, seed=5)
    x_T = noise(8, 4, seed=6)
    n = 40
    sigmas = edm.karras_sigmas(n)
    exact = g.ve_solution(x_T, 80.0, sigmas)
    full = edm.edm_sampler(g.ve_denoiser, x_T, sigmas, trajectory=True)
    solver_err = (full.trajectory[n - 1] - exact[n - 1]).norm()
    for k in (4, 12, 20):
        tele = edm.edm_sampler(
            g.ve_denoiser, x_T, sigmas, teleport_to=k, gaussian=g, trajectory=True
        )
        assert tele.nfe == 2 * (n - k) - 1 and tele.skipped == k
        torch.testing.assert_close(tele.trajectory[: k + 1], exact[: k + 1])
        diff = (tele.trajectory[n - 1] - full.trajectory[n - 1]).norm()
        assert diff <= 1.5 * solver_err + 1e-12
        steps = list(edm.heun_steps(g.ve_denoiser, x_T, sigmas, teleport_to=k, gaussian=g))
        assert [s.teleported for s in steps] == [True] * k + [False] * (n - k)
    # teleporting all the way is the closed form itself, with no network evaluation
    all_way = edm.edm_sampler(g.ve_denoiser, x_T, sigmas, teleport_to=n, gaussian=g)
    assert all_way.nfe == 0
    torch.testing.assert_close(all_way.x, exact[-1])
    with pytest.raises(ValueError, match="gaussian"):
        edm.edm_sampler(g.ve_denoiser, x_T, sigmas, teleport_to=3)
    with pytest.raises(ValueError, match="teleport_to"):
        edm.edm_sampler(g.ve_denoiser, x_T, sigmas, teleport_to=n + 1, gaussian=g)


def test_gradients_are_off_by_default_and_match_the_closed_form_jacobian_when_on():
    g = random_gaussian(3, seed=15)
    sigmas = edm.karras_sigmas(64)
    x_T = noise(4, 3, seed=16).requires_grad_(True)
    assert not edm.edm_sampler(g.ve_denoiser, x_T, sigmas).x.requires_grad
    assert torch.is_grad_enabled()  # no_grad never leaks out of the generator
    out = edm.edm_sampler(g.ve_denoiser, x_T, sigmas, grad=True)
    w = torch.randn(4, 3, generator=torch.Generator().manual_seed(17), dtype=F64)
    (grad,) = torch.autograd.grad((out.x * w).sum(), x_T)
    # d x(0) / d x_T = U diag(sqrt(lambda / (lambda + sigma_T^2))) U^T (symmetric)
    lam, u = g.eigenvalues, g.eigenvectors
    jac = u @ torch.diag((lam / (lam + 80.0**2)).sqrt()) @ u.T
    torch.testing.assert_close(grad, w @ jac, rtol=2e-2, atol=1e-6)


# ---- the empirical (ideal) denoiser ---------------------------------------------------------
def test_empirical_denoiser_is_the_softmax_average_of_the_data():
    gen = torch.Generator().manual_seed(7)
    data = torch.randn(300, 6, generator=gen, dtype=F64)
    x = 1.5 * torch.randn(40, 6, generator=gen, dtype=F64)
    den = edm.empirical_denoiser(data, chunk=16)  # several chunks
    xn, dn = x.numpy(), data.numpy()
    for sigma in (0.05, 0.4, 1.0, 7.0):
        logw = -((xn[:, None, :] - dn[None]) ** 2).sum(-1) / (2 * sigma**2)
        logw -= logw.max(1, keepdims=True)
        w = np.exp(logw)
        expected = (w / w.sum(1, keepdims=True)) @ dn
        np.testing.assert_allclose(den(x, sigma).numpy(), expected, rtol=1e-9, atol=1e-12)
    # at tiny sigma it snaps to the nearest data point; it keeps the input dtype
    nearest = data[torch.cdist(x, data).argmin(1)]
    torch.testing.assert_close(den(x, 1e-3), nearest)
    assert den(x.float(), 0.5).dtype == torch.float32


def test_empirical_denoiser_of_many_gaussian_samples_is_the_closed_form():
    g = random_gaussian(2, seed=8)
    data = g.sample(200_000, torch.Generator().manual_seed(9))
    den = edm.empirical_denoiser(data, chunk=64)
    for sigma in (0.7, 1.5, 4.0):
        x = g.sample(64, torch.Generator().manual_seed(10)) + sigma * noise(
            64, 2, seed=11, sigma_max=1.0
        )
        err = (den(x, sigma) - g.ve_denoiser(x, sigma)).norm(dim=1)
        scale = g.eigenvalues.sum().sqrt()
        assert float(err.max() / scale) < 3e-2, (sigma, float(err.max()))


def test_ancestral_sampler_converges_to_the_data_distribution_of_a_gaussian():
    """Exact Gaussian denoiser: the spread of the samples approaches the data's as the grid
    gets finer (the left-out posterior spread of x0 is a discretisation error); the
    deterministic Euler jump to 0 in one step (a negative control) collapses to the mean."""
    g = edm.GaussianFlow(
        torch.tensor([1.0, -2.0], dtype=F64), torch.diag(torch.tensor([0.5, 2.0], dtype=F64))
    )
    x_T = 80.0 * torch.randn(40000, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    errors = []
    for n in (16, 64, 256):
        gen = torch.Generator().manual_seed(1)
        steps = list(edm.ancestral_steps(g.ve_denoiser, x_T, edm.karras_sigmas(n), gen))
        assert len(steps) == n and steps[-1].nfe == n
        out = steps[-1].x_next
        errors.append(float((out.var(0) / torch.tensor([0.5, 2.0], dtype=F64) - 1).abs().max()))
        assert float((out.mean(0) - g.mean).abs().max()) < 0.05
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.06, errors  # measured ~1/n
    one = list(edm.ancestral_steps(g.ve_denoiser, x_T, torch.tensor([80.0, 0.0], dtype=F64)))
    assert float(one[-1].x_next.var(0).max()) < 0.01  # one step: every sample at D(x_T) ~ mu
    with pytest.raises(ValueError, match="end with 0"):
        next(edm.ancestral_steps(g.ve_denoiser, x_T, torch.tensor([80.0, 1.0])))
