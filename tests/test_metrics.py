from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import energy_distance as scipy_energy_distance

from pflow_explore import metrics as M
from pflow_explore.datasets.digits import digits


def gen(seed):
    return torch.Generator().manual_seed(seed)


def gaussian(n, mean, std, seed):
    mean = torch.as_tensor(mean, dtype=torch.float64)
    return mean + std * torch.randn(n, len(mean), generator=gen(seed), dtype=torch.float64)


# ---- Wasserstein -----------------------------------------------------------------------
def test_sliced_w2_of_a_pure_shift_is_norm_over_sqrt_d():
    # y = x + mu: every projection is shifted by <mu, theta>, so SW2^2 = E (mu.theta)^2 =
    # |mu|^2 / d for theta uniform on the circle (d = 2)
    x = gaussian(700, [0.0, 0.0], 1.3, seed=0)
    mu = torch.tensor([1.5, -2.0], dtype=torch.float64)
    sw = M.sliced_w2(x, x + mu, n_projections=8192, generator=gen(1))
    assert sw == pytest.approx(mu.norm().item() / math.sqrt(2), rel=0.02)


def test_sliced_w2_of_shifted_gaussians():
    # N(m1, s^2 I) vs N(m2, s^2 I): each projection is N(m.theta, s^2), W2 = |(m1-m2).theta|
    m1, m2 = torch.tensor([1.0, 2.0]), torch.tensor([-0.5, 0.0])
    x, y = gaussian(1500, m1, 0.5, seed=2), gaussian(1200, m2, 0.5, seed=3)
    sw = M.sliced_w2(x, y, n_projections=4096, generator=gen(4))
    assert sw == pytest.approx((m1 - m2).norm().item() / math.sqrt(2), rel=0.05)


def test_sliced_w2_in_1d_with_unequal_sizes_equals_exact_ot():
    # in 1D the only directions are +-1, so sliced W2 is W2 itself; POT's LP is independent
    x = gaussian(137, [0.0], 1.0, seed=5)
    y = torch.cat([gaussian(60, [2.0], 0.3, seed=6), gaussian(41, [-1.0], 2.0, seed=7)])
    assert M.sliced_w2(x, y, n_projections=3, generator=gen(0)) == pytest.approx(
        M.exact_w2(x, y), rel=1e-9
    )


def test_exact_w2_for_equal_sizes_equals_pots_linear_programme():
    # equal sizes take the assignment route; POT's network simplex is independent of it
    import ot

    x = gaussian(40, [0.0, 0.0, 0.0], 1.0, seed=8)
    y = gaussian(40, [0.5, 0.0, -1.0], 2.0, seed=9)
    cost = torch.cdist(x, y).numpy() ** 2
    w = np.full(40, 1 / 40)
    assert M.exact_w2(x, y) == pytest.approx(math.sqrt(ot.emd2(w, w, cost)), rel=1e-9)
    # y twice is the same measure as y: the unequal route (POT, 40 x 80) gives the same W2
    assert M.exact_w2(x, torch.cat([y, y])) == pytest.approx(M.exact_w2(x, y), rel=1e-9)


def test_exact_w2_between_shifted_gaussians_is_the_mean_distance():
    m1, m2 = torch.tensor([1.0, 2.0]), torch.tensor([-0.5, 0.0])
    x, y = gaussian(800, m1, 0.5, seed=10), gaussian(800, m2, 0.5, seed=11)
    assert M.exact_w2(x, y) == pytest.approx(2.5, abs=0.1)
    assert M.exact_w2(x, x + (m2 - m1).double()) == pytest.approx(2.5, rel=1e-6)


def test_exact_w2_refuses_large_problems():
    x = torch.zeros(30, 2)
    with pytest.raises(ValueError, match="sliced_w2"):
        M.exact_w2(x, x, max_pairs=100)
    with pytest.raises(ValueError, match="same dimension"):
        M.exact_w2(torch.zeros(3, 2), torch.zeros(3, 3))


@pytest.mark.parametrize(
    "distance",
    [
        lambda x, y: M.sliced_w2(x, y, generator=gen(0)) ** 2,
        lambda x, y: M.exact_w2(x, y) ** 2,
        M.energy_distance,
        M.mmd,
    ],
    ids=["sliced_w2", "exact_w2", "energy", "mmd"],
)
def test_same_distribution_is_near_zero_and_a_shift_is_larger(distance):
    # squared W2 so that all four scale like |shift|^2 for small shifts; the empirical W2
    # between two 500-point samples of one 2D Gaussian is still ~0.3 (slow convergence)
    x = gaussian(500, [0.0, 0.0], 1.0, seed=12)
    x2 = gaussian(500, [0.0, 0.0], 1.0, seed=13)
    shifted = gaussian(500, [1.0, 0.0], 1.0, seed=14)
    same, far = distance(x, x2), distance(x, shifted)
    assert abs(same) < far / 5
    assert abs(distance(x, x)) < 0.01


# ---- energy distance and MMD -----------------------------------------------------------
def test_energy_distance_matches_scipy_in_1d():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(0.5, 2.0, size=150)
    ours = M.energy_distance(torch.tensor(a)[:, None], torch.tensor(b)[:, None])
    assert ours == pytest.approx(scipy_energy_distance(a, b) ** 2, rel=1e-9)
    assert M.energy_distance(torch.tensor(a)[:, None], torch.tensor(a)[:, None]) == 0.0


def test_mmd_matches_the_gaussian_closed_form():
    # X ~ N(a, s^2 I), Y ~ N(b, s^2 I), k = exp(-|u-v|^2 / (2 h^2)):
    # E k(X, Y) = c exp(-|a-b|^2 / (2 (h^2 + 2 s^2))), c = (h^2 / (h^2 + 2 s^2))^(d/2),
    # E k(X, X') = c, so MMD^2 = 2 c (1 - exp(-|a-b|^2 / (2 (h^2 + 2 s^2))))
    s, h, d = 0.8, 1.0, 2
    a, b = torch.tensor([0.3, -0.2]), torch.tensor([1.0, 0.4])
    x, y = gaussian(1500, a, s, seed=15), gaussian(1200, b, s, seed=16)
    c = (h * h / (h * h + 2 * s * s)) ** (d / 2)
    exact = 2 * c * (1 - math.exp(-((a - b) ** 2).sum().item() / (2 * (h * h + 2 * s * s))))
    assert M.mmd(x, y, bandwidths=h) == pytest.approx(exact, abs=0.025)
    # the multi-bandwidth kernel is the mean of the single-bandwidth ones
    both = M.mmd(x, y, bandwidths=[0.5, 2.0])
    assert both == pytest.approx((M.mmd(x, y, 0.5) + M.mmd(x, y, 2.0)) / 2, rel=1e-9)


def test_mmd_rejects_bad_bandwidths():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="bandwidths"):
        M.mmd(x, x, bandwidths=[1.0, -1.0])
    with pytest.raises(ValueError, match="at least 2"):
        M.mmd(x[:1], x)


# ---- Frechet distance ------------------------------------------------------------------
def sqrtm_psd(c):
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def gaussian_w2_squared(mu_a, ca, mu_b, cb):
    """Closed form via the symmetric root (C_a^1/2 C_b C_a^1/2)^1/2 (eigendecompositions)."""
    ra = sqrtm_psd(ca)
    cross = sqrtm_psd(ra @ cb @ ra)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(ca + cb - 2 * cross))


def test_frechet_distance_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(1)
    d = 3
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    la, lb = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    ca, cb = la @ la.T + 0.5 * np.eye(d), lb @ lb.T + 0.5 * np.eye(d)
    a = rng.multivariate_normal(mu_a, ca, size=40_000)
    b = rng.multivariate_normal(mu_b, cb, size=40_000)
    fd = M.frechet_distance(torch.tensor(a), torch.tensor(b))
    # on the sample moments the formula is exact; on the population ones, up to sampling
    sample = gaussian_w2_squared(a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T))
    assert fd == pytest.approx(sample, rel=1e-8)
    assert fd == pytest.approx(gaussian_w2_squared(mu_a, ca, mu_b, cb), rel=0.05)
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_support_share_counts_the_samples_where_the_density_is_positive():
    from pflow_explore.datasets.toy2d import checkerboard, checkerboard_log_prob

    board = checkerboard(1000, gen(0))
    assert M.support_share(checkerboard_log_prob, board) == 1.0
    moved = torch.cat([board[:250] + torch.tensor([1.0, 0.0]), board[250:]])  # 1/4 on white
    assert M.support_share(checkerboard_log_prob, moved) == pytest.approx(0.75, abs=0.02)
    assert M.support_share(lambda x: torch.full((len(x),), -math.inf), board) == 0.0


def test_frechet_distance_from_a_point_mass_is_the_mean_squared_distance():
    # chapter 03's one-step row: every one-step sample at mu up to round-off (C_a ~ 1e-30),
    # so W2^2 = |m_a - m_b|^2 + tr C_b = E|X - mu|^2 over the target set
    mu = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    b = gaussian(200_000, [0.5, -1.0, 1.5], 0.8, seed=5)
    exact = float(((b - mu) ** 2).sum(1).mean())
    near = mu + 1e-15 * gaussian(50, [0.0] * 3, 1.0, seed=6)
    assert M.frechet_distance(near, b) == pytest.approx(exact, rel=1e-4)
    # an exactly constant set (C_a = 0, singular): the symmetric root needs no regularisation
    assert M.frechet_distance(mu.expand(50, 3), b) == pytest.approx(exact, rel=2e-5)  # n / (n - 1)


def test_frechet_distance_has_the_trace_of_scipys_sqrtm_of_the_product():
    # pytorch-fid's form, Tr sqrtm(C_a C_b), on random full-rank features at F = 12
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    a = (torch.randn(300, 12, generator=g) @ torch.randn(12, 12, generator=g)).double()
    b = 0.5 + torch.randn(250, 12, generator=g).double()
    ca, cb = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    cross = np.trace(linalg.sqrtm(ca @ cb).real)
    expected = float(((a.mean(0) - b.mean(0)) ** 2).sum()) + np.trace(ca + cb) - 2 * cross
    assert M.frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="feature dimensions"):
        M.frechet_distance(a, b[:, :3])


def test_frechet_distance_survives_singular_covariances():
    a = torch.randn(50, 8, generator=gen(0))
    a[:, 4:] = 0.0  # rank-deficient covariance
    b = a + 0.1  # same covariance, so FD = |shift|^2 = 8 * 0.1^2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fd = M.frechet_distance(a, b)
    assert fd == pytest.approx(8 * 0.01, rel=1e-3, abs=1e-4)


# ---- images ----------------------------------------------------------------------------
def test_psnr_of_a_constant_offset():
    x = torch.rand(5, 1, 8, 8, generator=gen(0)) * 2 - 1
    c = 0.1
    expected = 10 * math.log10(2.0**2 / c**2)
    torch.testing.assert_close(M.psnr(x, x + c), torch.full((5,), expected, dtype=torch.float64))
    assert M.psnr(x, x + c, reduction="mean").item() == pytest.approx(expected)
    assert M.psnr(x, x, data_range=1.0).isinf().all()
    with pytest.raises(ValueError, match="reduction"):
        M.psnr(x, x, reduction="sum")


def test_ssim_identity_noise_and_channels():
    x = torch.rand(4, 1, 8, 8, generator=gen(1)) * 2 - 1
    torch.testing.assert_close(M.ssim(x, x), torch.ones(4, dtype=torch.float64))
    noisy = x + 0.3 * torch.randn(x.shape, generator=gen(2))
    assert (M.ssim(x, noisy) < 0.95).all()
    rgb = torch.rand(2, 3, 16, 16, generator=gen(3)) * 2 - 1
    assert M.ssim(rgb, rgb).shape == (2,)
    assert M.ssim(x[:, 0], noisy[:, 0], reduction="mean").dim() == 0
    small = torch.rand(2, 1, 4, 4, generator=gen(4))
    assert M.ssim(small, small).tolist() == [1.0, 1.0]  # win_size drops to 3
    with pytest.raises(ValueError, match="win_size"):
        M.ssim(x, x, win_size=4)


def test_ssim_matches_the_formula_on_a_single_window():
    # a 3x3 image with win_size 3 has exactly one window: the whole image, sample moments
    rng = np.random.default_rng(2)
    a, b = rng.uniform(-1, 1, (3, 3)), rng.uniform(-1, 1, (3, 3))
    r = 2.0
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    ma, mb = a.mean(), b.mean()
    va, vb = a.var(ddof=1), b.var(ddof=1)
    cov = ((a - ma) * (b - mb)).sum() / 8
    expected = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    got = M.ssim(torch.tensor(a)[None, None], torch.tensor(b)[None, None], data_range=r)
    assert got.item() == pytest.approx(expected, rel=1e-9)


# ---- digits FID ------------------------------------------------------------------------
def test_digits_frechet_distance_separates_digits_from_noise():
    test_images, _ = digits(8, "test")
    train_images, _ = digits(8, "train")
    noise = torch.rand(test_images.shape, generator=gen(0)) * 2 - 1
    real = M.digits_frechet_distance(test_images, train_images)
    fake = M.digits_frechet_distance(test_images, noise)
    assert real < fake / 10
    assert M.digits_features(digits(16, "test")[0][:5]).shape == (5, 128)


def test_class_accuracy_of_real_digits_and_of_wrong_labels():
    images, labels = digits(8, "test")
    right = M.class_accuracy(images, labels)
    assert right > 0.9  # the shipped classifier on held-out digits
    assert M.class_accuracy(images, (labels + 1) % 10) < 0.1  # every label wrong by one
    # the share is a mean over images: two halves average to the whole, in any batch size
    half = len(images) // 2
    parts = [M.class_accuracy(images[:half], labels[:half], batch=7)]
    parts.append(M.class_accuracy(images[half:], labels[half:], batch=1000))
    whole = (parts[0] * half + parts[1] * (len(images) - half)) / len(images)
    assert right == pytest.approx(whole, abs=1e-6)  # a float32 mean
    assert M.class_accuracy(digits(16, "test")[0][:50], labels[:50]) > 0.8  # pooled to 8x8


def test_distances_to_target_in_1d_are_exact_w2_and_scipys_energy():
    # in 1D every direction is +-1, so the sliced W2 is the exact W2 of sorted samples
    g = torch.Generator().manual_seed(11)
    target = torch.randn(300, 1, generator=g, dtype=torch.float64)
    samples = {"near": target + 0.1 * torch.randn(300, 1, generator=g, dtype=torch.float64)}
    samples["far"] = 2.0 + 0.5 * torch.randn(300, 1, generator=g, dtype=torch.float64)
    sw2, energy = M.distances_to_target(samples, target, seed=3, n_projections=5)
    for k, x in samples.items():
        exact = np.sqrt(
            np.mean((np.sort(x.numpy().ravel()) - np.sort(target.numpy().ravel())) ** 2)
        )
        assert sw2[k] == pytest.approx(exact, rel=1e-10)
        ed = scipy_energy_distance(x.numpy().ravel(), target.numpy().ravel()) ** 2
        assert energy[k] == pytest.approx(ed, rel=1e-8)
    assert list(sw2) == list(energy) == ["near", "far"]


def test_distances_to_target_share_projections_across_sets():
    # common random numbers: equal sets get equal sliced W2 (same directions), and the
    # value depends on the seed only through the directions
    g = torch.Generator().manual_seed(5)
    target, x = torch.randn(200, 3, generator=g), 1.0 + torch.randn(200, 3, generator=g)
    sw2, _ = M.distances_to_target({"a": x, "b": x.clone()}, target, seed=7, n_projections=4)
    other, _ = M.distances_to_target({"a": x}, target, seed=8, n_projections=4)
    assert sw2["a"] == sw2["b"] and other["a"] != sw2["a"]


def test_bootstrap_se_of_a_mean_matches_the_standard_error():
    from pflow_explore.metrics import bootstrap_se

    x = torch.randn(4000, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2
    se = bootstrap_se(lambda idx: float(x[idx].mean()), len(x), n_boot=200, seed=1)
    exact = float(x.std() / math.sqrt(len(x)))  # the textbook SE of a mean
    assert se == pytest.approx(exact, rel=0.2)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_se(lambda idx: 0.0, 10, n_boot=1)


def test_sliced_w2_bootstrap_se_equals_the_generic_bootstrap_of_sliced_w2():
    from pflow_explore.metrics import bootstrap_se, sliced_w2, sliced_w2_bootstrap_se

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 3, generator=g), torch.randn(500, 3, generator=g) + 0.2
    generic = bootstrap_se(
        lambda i: sliced_w2(x[i], y, 64, torch.Generator().manual_seed(5)), 500, 20, 5
    )
    assert sliced_w2_bootstrap_se(x, y, 64, 5, 20) == pytest.approx(generic, rel=1e-9)
    with pytest.raises(ValueError, match="same size"):
        sliced_w2_bootstrap_se(x, y[:400])


def test_gaussian_w2_matches_the_bures_formula_and_sees_a_shift():
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(3, 3, generator=g, dtype=torch.float64),
        torch.randn(3, 3, generator=g, dtype=torch.float64),
    )
    c1, c2 = a @ a.T + 0.1 * torch.eye(3), b @ b.T + 0.1 * torch.eye(3)
    m1, m2 = (
        torch.randn(3, generator=g, dtype=torch.float64),
        torch.randn(3, generator=g, dtype=torch.float64),
    )
    x = m1 + torch.randn(200000, 3, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(c1).T
    root = linalg.sqrtm(c2.numpy())
    exact = (
        ((m1 - m2) ** 2).sum()
        + torch.trace(c1 + c2)
        - 2 * float(np.trace(linalg.sqrtm(root @ c1.numpy() @ root).real))
    )
    assert M.gaussian_w2(x, m2, c2) == pytest.approx(float(exact) ** 0.5, rel=0.02)
    assert M.gaussian_w2(x, m1, c1) < 0.02  # its own law: only the sampling error
    with pytest.raises(ValueError, match="need x"):
        M.gaussian_w2(x, m1[:2], c1)


def test_slope_and_crossing_of_a_power_law():
    steps = [5, 10, 20, 50]
    errors = [3.0 * n**-2.0 for n in steps]
    assert M.loglog_slope(steps, errors) == pytest.approx(2.0)
    target = 3.0 * 14.0**-2.0
    assert M.steps_to_reach(steps, errors, target) == pytest.approx(14.0)
    assert M.steps_to_reach(steps, errors, 10.0) == 5.0
    assert np.isnan(M.steps_to_reach(steps, errors, 1e-9))
    with pytest.raises(ValueError):
        M.loglog_slope([1], [1.0])
