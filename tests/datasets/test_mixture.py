from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from pflow_explore.datasets.mixture import GaussianMixture


def _random_mixture(seed: int, k: int = 3, d: int = 2) -> GaussianMixture:
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(k, d))
    a = rng.normal(size=(k, d, d))
    covs = a @ a.transpose(0, 2, 1) + 0.3 * np.eye(d)
    weights = rng.uniform(0.2, 1.0, size=k)
    return GaussianMixture(torch.tensor(weights), torch.tensor(means), torch.tensor(covs))


def _scipy_log_prob(gm: GaussianMixture, x: np.ndarray) -> np.ndarray:
    w = gm.weights.numpy()
    dens = sum(
        w[k] * multivariate_normal(gm.means[k].numpy(), gm.covs[k].numpy()).pdf(x)
        for k in range(gm.n_components)
    )
    return np.log(dens)


@pytest.mark.parametrize("seed,d", [(0, 1), (1, 2), (2, 3)])
def test_log_prob_matches_scipy(seed, d):
    gm = _random_mixture(seed, k=4, d=d)
    x = np.random.default_rng(seed + 10).normal(scale=2.5, size=(50, d))
    ours = gm.log_prob(torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours, _scipy_log_prob(gm, x), rtol=1e-10, atol=1e-10)


def test_weights_are_normalised_and_responsibilities_sum_to_one():
    gm = GaussianMixture(torch.tensor([1.0, 3.0]), torch.zeros(2, 2), torch.eye(2).repeat(2, 1, 1))
    torch.testing.assert_close(gm.weights, torch.tensor([0.25, 0.75], dtype=torch.float64))
    r = _random_mixture(3).responsibilities(torch.randn(20, 2))
    torch.testing.assert_close(r.sum(-1), torch.ones(20, dtype=torch.float64))


@pytest.mark.parametrize("seed,d", [(4, 2), (5, 3)])
def test_score_matches_autograd(seed, d):
    gm = _random_mixture(seed, k=3, d=d)
    x = torch.randn(40, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    x = (2 * x).requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    torch.testing.assert_close(gm.score(x.detach()), grad, rtol=1e-9, atol=1e-9)


def test_score_matches_finite_differences_of_scipy_log_prob():
    gm = _random_mixture(6, k=3, d=2)
    x = np.random.default_rng(7).normal(scale=2.0, size=(30, 2))
    h = 1e-5
    fd = np.stack(
        [
            (_scipy_log_prob(gm, x + h * e) - _scipy_log_prob(gm, x - h * e)) / (2 * h)
            for e in np.eye(2)
        ],
        axis=1,
    )
    np.testing.assert_allclose(gm.score(torch.tensor(x)).numpy(), fd, rtol=1e-5, atol=1e-5)


def test_isotropic_constructor():
    means = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    gm = GaussianMixture.isotropic(means, torch.tensor([0.5, 2.0]))
    expected = torch.stack([0.25 * torch.eye(2), 4.0 * torch.eye(2)]).double()
    torch.testing.assert_close(gm.covs, expected)
    torch.testing.assert_close(gm.weights, torch.full((2,), 0.5, dtype=torch.float64))


def test_sample_moments_match_mean_and_covariance():
    gm = _random_mixture(8, k=3, d=2)
    n = 200_000
    x, labels = gm.sample_with_labels(n, torch.Generator().manual_seed(0))
    assert x.shape == (n, 2) and x.dtype == torch.float32 and labels.shape == (n,)
    x = x.double()
    cov = gm.covariance()
    # Standard error of the mean is sqrt(diag(cov) / n); allow 5 of them.
    se = torch.sqrt(torch.diagonal(cov) / n)
    assert ((x.mean(0) - gm.mean()).abs() < 5 * se).all()
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0.03, atol=0.03 * cov.abs().max().item())
    # Component frequencies match the weights.
    freq = torch.bincount(labels, minlength=3).double() / n
    torch.testing.assert_close(freq, gm.weights, rtol=0, atol=0.01)


def test_mean_and_covariance_closed_form_against_numpy():
    gm = _random_mixture(9, k=4, d=3)
    w, mu, c = gm.weights.numpy(), gm.means.numpy(), gm.covs.numpy()
    m = (w[:, None] * mu).sum(0)
    cov = sum(w[k] * (c[k] + np.outer(mu[k] - m, mu[k] - m)) for k in range(4))
    np.testing.assert_allclose(gm.mean().numpy(), m, rtol=1e-12)
    np.testing.assert_allclose(gm.covariance().numpy(), cov, rtol=1e-10, atol=1e-12)


def test_sampling_is_seeded_and_zero_samples_work():
    gm = _random_mixture(10)
    a = gm.sample(100, torch.Generator().manual_seed(1))
    b = gm.sample(100, torch.Generator().manual_seed(1))
    c = gm.sample(100, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert gm.sample(0).shape == (0, 2)
    with pytest.raises(ValueError, match="n must be"):
        gm.sample(-1)


@pytest.mark.parametrize(
    "weights,means,covs,match",
    [
        ([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]], "symmetric"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], "positive definite"),
        ([1.0], [[0.0, 0.0]], [[[0.0, 0.0], [0.0, 1.0]]], "positive definite"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 0.0, 0.0]] * 3], "covs must be"),
        ([1.0, 1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]], "weights must be"),
        ([-1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]], "non-negative"),
        ([1.0], [0.0, 0.0], [[[1.0, 0.0], [0.0, 1.0]]], "means must be"),
    ],
)
def test_bad_parameters_rejected(weights, means, covs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(torch.tensor(weights), torch.tensor(means), torch.tensor(covs))
