from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.datasets.toy2d import (
    TOY_2D,
    TOY_2D_MIXTURES,
    checkerboard,
    checkerboard_log_prob,
    concentric_rings,
    eight_gaussians,
    random_mixture,
    sample_toy,
    single_gaussian,
    spirals,
    two_moons,
)

NAMES = ["gaussian", "eight_gaussians", "two_moons", "checkerboard", "spirals", "rings", "mixture"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_names():
    assert sorted(TOY_2D) == sorted(NAMES)
    assert set(TOY_2D_MIXTURES) <= set(TOY_2D)


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_scale_and_seeding(name):
    x = sample_toy(name, 4000, gen(0))
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    std = x.std(0)
    assert ((std > 0.5) & (std < 2.5)).all(), std
    assert torch.equal(x, sample_toy(name, 4000, gen(0)))
    assert not torch.equal(x, sample_toy(name, 4000, gen(1)))
    assert TOY_2D[name](3, gen(2)).shape == (3, 2)


@pytest.mark.parametrize("name", sorted(TOY_2D_MIXTURES))
def test_mixture_entries_have_exact_density(name):
    gm = TOY_2D_MIXTURES[name]()
    assert isinstance(gm, GaussianMixture) and gm.dim == 2
    x = sample_toy(name, 100_000, gen(3)).double()
    # Monte Carlo moments of the registry sampler agree with the closed-form ones.
    torch.testing.assert_close(x.mean(0), gm.mean(), rtol=0, atol=0.03)
    torch.testing.assert_close(torch.cov(x.T), gm.covariance(), rtol=0.04, atol=0.04)


def test_sample_toy_bad_input():
    with pytest.raises(ValueError, match="valid names: gaussian, eight_gaussians"):
        sample_toy("moons", 10)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="n .* must be an int >= 1"):
            sample_toy("checkerboard", bad)
    with pytest.raises(ValueError, match="noise"):
        two_moons(10, noise=-0.1)
    with pytest.raises(ValueError, match="radii"):
        concentric_rings(10, radii=(1.0, -2.0))


def _checkerboard_cells(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cells = np.floor(x + 2.0).astype(int)
    inside = ((cells >= 0) & (cells <= 3)).all(1)
    return cells, inside


def test_checkerboard_samples_uniform_on_black_squares():
    x = checkerboard(16_000, gen(4)).numpy()
    cells, inside = _checkerboard_cells(x)
    assert inside.all()
    assert (cells.sum(1) % 2 == 0).all()
    counts = np.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    black = [4 * i + j for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    assert counts.sum() == counts[black].sum()
    # Each black cell gets 1/8 of the samples; binomial sd ~ 42, allow ~5 sd.
    assert np.abs(counts[black] - 2000).max() < 210
    # Uniform within a cell: the fractional parts have mean 1/2 and variance 1/12.
    frac = x - np.floor(x)
    np.testing.assert_allclose(frac.mean(0), 0.5, atol=0.01)
    np.testing.assert_allclose(frac.var(0), 1 / 12, atol=0.005)


def test_checkerboard_log_prob_values_and_normalisation():
    pts = torch.tensor([[-1.5, -1.5], [-0.5, -1.5], [0.5, 0.5], [1.5, -0.5], [2.5, 0.0]])
    lp = checkerboard_log_prob(pts)
    expected = [-math.log(8), -math.inf, -math.log(8), -math.log(8), -math.inf]
    assert lp.tolist() == pytest.approx(expected)
    # Midpoint rule on a grid over [-3, 3]^2 whose lines avoid the cell edges.
    m = 600
    h = 6.0 / m
    g = -3.0 + h * (torch.arange(m, dtype=torch.float64) + 0.5)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    total = torch.exp(checkerboard_log_prob(grid)).sum() * h * h
    assert float(total) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"x must be \(n, 2\)"):
        checkerboard_log_prob(torch.zeros(3))


@pytest.mark.parametrize("radius,std", [(2.0, 0.2), (3.0, 0.5)])
def test_eight_gaussians_geometry_and_std(radius, std):
    gm = eight_gaussians(radius, std)
    angles = np.arange(8) * np.pi / 4
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    np.testing.assert_allclose(gm.means.numpy(), centres, atol=1e-12)
    x = gm.sample(40_000, gen(5)).double().numpy()
    # Assign each sample to its nearest centre (well separated), independent of the labels.
    nearest = np.argmin(((x[:, None] - centres[None]) ** 2).sum(-1), 1)
    resid = x - centres[nearest]
    np.testing.assert_allclose(resid.std(0), std, rtol=0.03)
    np.testing.assert_allclose(np.bincount(nearest) / len(x), 1 / 8, atol=0.01)


def test_single_gaussian():
    cov = [[1.0, 0.6], [0.6, 0.5]]
    gm = single_gaussian((1.0, -2.0), cov)
    x = gm.sample(100_000, gen(6)).double()
    torch.testing.assert_close(x.mean(0), torch.tensor([1.0, -2.0]).double(), rtol=0, atol=0.02)
    torch.testing.assert_close(torch.cov(x.T), torch.tensor(cov).double(), rtol=0, atol=0.02)
    torch.testing.assert_close(single_gaussian().covs[0], torch.eye(2).double())
    with pytest.raises(ValueError, match="cov must be"):
        single_gaussian((0.0, 0.0), torch.eye(3))


@pytest.mark.parametrize("k,dim", [(1, 2), (5, 2), (3, 4)])
def test_random_mixture(k, dim):
    lo, hi = 0.2, 0.6
    gm = random_mixture(k, dim, gen(7), std_range=(lo, hi))
    assert gm.means.shape == (k, dim) and gm.covs.shape == (k, dim, dim)
    eig = np.linalg.eigvalsh(gm.covs.numpy())
    assert (eig >= lo**2 - 1e-12).all() and (eig <= hi**2 + 1e-12).all()
    np.testing.assert_allclose(gm.covs.numpy(), gm.covs.transpose(-1, -2).numpy())
    assert (gm.weights > 0).all()
    same = random_mixture(k, dim, gen(7), std_range=(lo, hi))
    assert torch.equal(gm.means, same.means) and torch.equal(gm.covs, same.covs)
    assert not torch.equal(gm.means, random_mixture(k, dim, gen(8)).means)
    with pytest.raises(ValueError, match="k"):
        random_mixture(0)


def test_two_moons_noiseless_points_lie_on_the_two_half_circles():
    scale = 2.0
    x = two_moons(5000, noise=0.0, generator=gen(9), scale=scale).double().numpy()
    upper_c = scale * np.array([-0.5, -0.25])  # centre of (cos a, sin a), shifted and scaled
    lower_c = scale * np.array([0.5, 0.25])  # centre of (1 - cos a, 1/2 - sin a)
    d_up = np.linalg.norm(x - upper_c, axis=1)
    d_lo = np.linalg.norm(x - lower_c, axis=1)
    on_up = np.abs(d_up - scale) < 1e-5
    on_lo = np.abs(d_lo - scale) < 1e-5
    assert (on_up | on_lo).all()
    assert (x[on_up, 1] >= upper_c[1] - 1e-5).all()  # upper half of its circle
    assert (x[on_lo, 1] <= lower_c[1] + 1e-5).all()  # lower half of its circle
    assert abs(on_up.mean() - 0.5) < 0.03
    noisy = two_moons(20_000, noise=0.1, generator=gen(10), scale=1.0).double().numpy()
    # Gaussian noise of std 0.1 added to the clean curve: check the distance spread.
    d = np.minimum(
        np.abs(np.linalg.norm(noisy - [-0.5, -0.25], axis=1) - 1),
        np.abs(np.linalg.norm(noisy - [0.5, 0.25], axis=1) - 1),
    )
    assert 0.05 < np.median(d) < 0.08  # median |N(0, 0.1^2)| = 0.0674


def test_spirals_noiseless_geometry():
    turns, rmax = 1.5, 3.0
    x = spirals(5000, noise=0.0, generator=gen(11), turns=turns, max_radius=rmax).double()
    r = x.norm(dim=1)
    assert (r <= rmax + 1e-5).all()
    theta = r / rmax * 2 * math.pi * turns
    direction = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    # x = +/- r (cos theta, sin theta): parallel to the direction, either sign.
    cross = x[:, 0] * direction[:, 1] - x[:, 1] * direction[:, 0]
    assert cross.abs().max() < 1e-4
    sign = torch.sign((x * direction).sum(1))
    assert abs(float((sign > 0).double().mean()) - 0.5) < 0.03


def test_rings_noiseless_radii_and_weights():
    x = concentric_rings(30_000, radii=(1.0, 2.0, 4.0), noise=0.0, generator=gen(12)).double()
    r = x.norm(dim=1).numpy()
    ring = np.argmin(np.abs(r[:, None] - np.array([1.0, 2.0, 4.0])), axis=1)
    np.testing.assert_allclose(r, np.array([1.0, 2.0, 4.0])[ring], atol=1e-5)
    np.testing.assert_allclose(np.bincount(ring) / len(r), np.array([1, 2, 4]) / 7, atol=0.01)
    angle = np.arctan2(x[:, 1].numpy(), x[:, 0].numpy())
    # Uniform angle on (-pi, pi]: mean 0, variance pi^2 / 3.
    assert abs(angle.mean()) < 0.05
    assert angle.var() == pytest.approx(np.pi**2 / 3, rel=0.03)
