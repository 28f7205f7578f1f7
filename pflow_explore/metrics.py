"""Distances between sample sets, and image-quality scores.

Sample sets are tensors (n, d); anything shaped (n, ...) is flattened to (n, d) (so image
batches (n, C, H, W) work directly). The set distances return Python floats computed in
float64 without gradients: they are for evaluation, not training.

- :func:`sliced_w2`, :func:`exact_w2`: Wasserstein-2 (sliced by random 1D projections, or
  exact by linear programming with POT);
- :func:`energy_distance`, :func:`mmd`: kernel-type two-sample statistics;
- :func:`support_share`: the share of samples where a density is positive;
- :func:`frechet_distance`: W2 between Gaussians fitted to features, and
  :func:`digits_frechet_distance`, the FID analogue with the shipped digits classifier,
  and :func:`class_accuracy`, how often that classifier agrees with the intended labels;
- :func:`psnr`, :func:`ssim`: per-image scores for restoration chapters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

EXACT_W2_MAX_PAIRS = 4_000_000
REDUCTIONS = ("none", "mean")


def _as_sets(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten (n, ...) and (m, ...) to float64 (n, d) and (m, d) on x's device."""
    x = torch.as_tensor(x).detach()
    y = torch.as_tensor(y).detach().to(x.device)
    if x.dim() < 1 or y.dim() < 1 or x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError("x and y must be non-empty sample sets shaped (n, d)")
    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension d, got {x.shape[1]} and {y.shape[1]}"
        )
    return x, y


def w2_1d_squared(a: Tensor, b: Tensor) -> Tensor:
    """Squared W2 between empirical 1D measures, batched over rows.

    a: (P, n), b: (P, m) -> (P,).  W2^2 = int_0^1 (F_a^{-1}(u) - F_b^{-1}(u))^2 du, exact
    for empirical measures: both quantile functions are step functions, constant between
    consecutive levels of {i/n} U {j/m}, so the integral is a finite sum over that grid.
    """
    a, b = a.sort(dim=1).values, b.sort(dim=1).values
    n, m = a.shape[1], b.shape[1]
    if n == m:
        return ((a - b) ** 2).mean(dim=1)
    levels = torch.cat(
        [torch.arange(1, n + 1, dtype=a.dtype) / n, torch.arange(1, m + 1, dtype=a.dtype) / m]
    ).unique()  # sorted, ends at 1
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    mid = levels - widths / 2
    # F^{-1}(u) = a_(ceil(n u)) (1-based) for u in ((i-1)/n, i/n]; midpoints avoid ties
    ia = (mid * n).floor().long().clamp_max(n - 1).to(a.device)
    ib = (mid * m).floor().long().clamp_max(m - 1).to(a.device)
    return (((a[:, ia] - b[:, ib]) ** 2) * widths.to(a.device)).sum(dim=1)


def sliced_w2(
    x: Tensor, y: Tensor, n_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-2 distance between sample sets x (n, d) and y (m, d).

    SW2(P, Q) = ( E_{theta ~ U(S^{d-1})} W2^2(theta#P, theta#Q) )^{1/2},

    estimated with ``n_projections`` random directions theta_k (normalised Gaussians from
    ``generator``, a CPU generator): SW2^2 ~ (1/K) sum_k W2^2(<theta_k, x>, <theta_k, y>).
    Each 1D W2^2 is exact (:func:`w2_1d_squared`: sorted samples for n = m, merged quantile
    levels otherwise). A pure shift y = x + mu gives SW2^2 = |mu|^2 / d in expectation.
    """
    if n_projections < 1:
        raise ValueError(f"n_projections must be >= 1, got {n_projections!r}")
    x, y = _as_sets(x, y)
    theta = torch.randn(n_projections, x.shape[1], generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=1, keepdim=True)).to(x.device)
    return math.sqrt(w2_1d_squared(theta @ x.T, theta @ y.T).mean().item())


def sliced_w2_bootstrap_se(
    x: Tensor, y: Tensor, n_projections: int = 256, seed: int = 0, n_boot: int = 30
) -> float:
    """Bootstrap SE of :func:`sliced_w2` (x, y) over resamples of x, y held fixed (a set
    common to every method compared): the directions are drawn as :func:`sliced_w2` draws
    them from a generator seeded ``seed``, x and y are projected once, y's projections
    sorted once; each resample sorts only x's. x (n, d), y (m, d) with n = m."""
    x, y = _as_sets(x, y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same size here, got {len(x)} and {len(y)}")
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(n_projections, x.shape[1], generator=gen, dtype=torch.float64)
    theta = (theta / theta.norm(dim=1, keepdim=True)).to(x.device)
    px, py = theta @ x.T, (theta @ y.T).sort(dim=1).values
    sw = lambda i: math.sqrt(((px[:, i].sort(dim=1).values - py) ** 2).mean().item())
    return bootstrap_se(sw, len(x), n_boot, seed)


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Squared energy distance (Szekely & Rizzo) between sample sets x (n, d), y (m, d).

    D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'|, estimated by the V-statistic

        D^2 = 2/(nm) sum_ij |x_i - y_j| - 1/n^2 sum_ij |x_i - x_j| - 1/m^2 sum_ij |y_i - y_j|,

    i.e. the exact energy distance between the two empirical measures: always >= 0 and 0
    exactly when the sets are equal as multisets. Its bias is O(1/n) (positive).
    Equals ``scipy.stats.energy_distance(x, y) ** 2`` in 1D. Memory O(n m).
    """
    x, y = _as_sets(x, y)
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return max((2 * xy - xx - yy).item(), 0.0)


def distances_to_target(
    samples: Mapping[str, Tensor], target: Tensor, seed: int, n_projections: int = 256
) -> tuple[dict[str, float], dict[str, float]]:
    """(sliced W2, energy distance) of every sample set (n, d) in ``samples`` to the one
    ``target`` set (m, d), by name. Every sliced W2 draws the same ``n_projections``
    directions (a fresh CPU generator seeded ``seed`` each time): common random numbers, so
    the differences between the sets are less noisy than the values."""
    projections = lambda: torch.Generator().manual_seed(seed)
    sw2 = {k: sliced_w2(x, target, n_projections, projections()) for k, x in samples.items()}
    return sw2, {k: energy_distance(x, target) for k, x in samples.items()}


def support_share(log_prob: Callable[[Tensor], Tensor], x: Tensor) -> float:
    """Share of the samples x (n, d) on the support of a density: the mean of
    1[log p(x_i) > -inf] over i, with ``log_prob`` x (n, d) -> log p(x) (n,). 1 for samples
    of p; the distances above hardly see mass put where p = 0 (the white squares of the
    checkerboard, ``datasets.toy2d.checkerboard_log_prob``), this share does."""
    return float(log_prob(x).isfinite().float().mean())


def bootstrap_se(stat: Callable[[Tensor], float], n: int, n_boot: int = 50, seed: int = 0) -> float:
    """Bootstrap standard error of a statistic of n samples: the standard deviation of
    ``stat(idx)`` over ``n_boot`` index sets ``idx`` (n,) drawn from range(n) with replacement
    (a CPU generator seeded ``seed``; the same index sets for every caller with that seed,
    so methods compared on paired samples are resampled alike)."""
    if n_boot < 2 or n < 2:
        raise ValueError(f"need n >= 2 samples and n_boot >= 2 resamples, got {n}, {n_boot}")
    gen = torch.Generator().manual_seed(seed)
    values = [stat(torch.randint(n, (n,), generator=gen)) for _ in range(n_boot)]
    return float(torch.tensor(values, dtype=torch.float64).std())


def median_bandwidth(x: Tensor, y: Tensor) -> float:
    """The median heuristic: median pairwise distance of the pooled set (x, y) flattened."""
    x, y = _as_sets(x, y)
    z = torch.cat([x, y])[:2000]  # the median is stable long before n = 2000
    d = torch.cdist(z, z)
    med = d[torch.triu_indices(len(z), len(z), 1, device=z.device).unbind()].median().item()
    return med if med > 0 else 1.0


def mmd(x: Tensor, y: Tensor, bandwidths: float | list[float] | None = None) -> float:
    """Unbiased squared maximum mean discrepancy with a multi-bandwidth RBF kernel.

    k(a, b) = (1/H) sum_h exp(-|a - b|^2 / (2 h^2)),  h in ``bandwidths``
    (default: the median heuristic times (0.5, 1, 2));

    MMD_u^2 = 1/(n(n-1)) sum_{i!=j} k(x_i, x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i, y_j)
              - 2/(nm) sum_{i,j} k(x_i, y_j)                         (Gretton et al. 2012)

    Unbiased, so it can be slightly negative when the distributions agree (and is about
    -2/n for a set compared with itself). Needs n, m >= 2. Memory O((n + m)^2).
    """
    x, y = _as_sets(x, y)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"mmd needs at least 2 samples in each set, got {len(x)} and {len(y)}")
    if bandwidths is None:
        med = median_bandwidth(x, y)
        bandwidths = [0.5 * med, med, 2.0 * med]
    hs = [float(bandwidths)] if isinstance(bandwidths, (int, float)) else list(bandwidths)
    if not hs or any(h <= 0 for h in hs):
        raise ValueError(f"bandwidths must be positive, got {bandwidths!r}")

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        d2 = torch.cdist(a, b) ** 2
        return sum(torch.exp(-d2 / (2 * h * h)) for h in hs) / len(hs)

    n, m = len(x), len(y)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return (term_x + term_y - 2 * kxy.mean()).item()


def exact_w2(x: Tensor, y: Tensor, max_pairs: int = EXACT_W2_MAX_PAIRS) -> float:
    """Exact Wasserstein-2 distance between empirical measures of x (n, d) and y (m, d).

    W2^2 = min_{P in U(1/n, 1/m)} sum_ij P_ij |x_i - y_j|^2, the optimal transport linear
    programme with uniform weights; returns W2. For n = m an optimal plan is a permutation
    (Birkhoff-von Neumann), so the programme is the assignment problem, solved by scipy's
    ``linear_sum_assignment`` (importing POT takes ~2 s, which a dashboard's first open
    pays); else POT's network simplex (``ot.emd2``). Cost O(n m) memory and roughly
    O(n^3) time: n * m above ``max_pairs`` is refused.
    """
    x, y = _as_sets(x, y)
    n, m = len(x), len(y)
    if n * m > max_pairs:
        raise ValueError(
            f"exact_w2 with n*m = {n}*{m} = {n * m} exceeds max_pairs = {max_pairs}: "
            "subsample the sets, raise max_pairs, or use sliced_w2 for large sets"
        )
    xs, ys = x.cpu().numpy(), y.cpu().numpy()
    cost = np.maximum((xs**2).sum(1)[:, None] + (ys**2).sum(1)[None] - 2 * xs @ ys.T, 0.0)
    if n == m:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cost)
        w2sq = cost[rows, cols].mean()
    else:
        import ot

        w2sq = ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost, numItermax=10_000_000)
    return math.sqrt(max(float(w2sq), 0.0))


def _images(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Check and return (N, C, H, W) float64 images; (N, H, W) gets a channel axis."""
    x, y = torch.as_tensor(x).detach().double(), torch.as_tensor(y).detach().double()
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if x.dim() == 3:
        x, y = x[:, None], y[:, None]
    if x.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W), got {tuple(x.shape)}")
    return x, y.to(x.device)


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return values.mean() if reduction == "mean" else values


def psnr(x: Tensor, y: Tensor, data_range: float = 2.0, reduction: str = "none") -> Tensor:
    """Peak signal-to-noise ratio per image, in dB.

    PSNR_i = 10 log10(R^2 / MSE_i),  MSE_i = mean over pixels of (x_i - y_i)^2,
    R = ``data_range`` (2 for images in [-1, 1]). x, y: (N, C, H, W) or (N, H, W) ->
    (N,) float64 (``reduction="mean"``: the mean over images, a () tensor). Identical
    images give +inf.
    """
    x, y = _images(x, y)
    mse = ((x - y) ** 2).flatten(1).mean(dim=1)
    return _reduce(10 * torch.log10(data_range**2 / mse), reduction)


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 2.0,
    win_size: int | None = None,
    reduction: str = "none",
) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), via scikit-image.

    SSIM = mean over windows of
    (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
    C1 = (0.01 R)^2, C2 = (0.03 R)^2, R = ``data_range``; uniform square windows of side
    ``win_size`` (default 7, or the largest odd number <= the image side for smaller
    images; must be odd and >= 3). Multi-channel images average SSIM over channels.
    x, y: (N, C, H, W) or (N, H, W) -> (N,) float64, or its mean for ``reduction="mean"``.
    """
    from skimage.metrics import structural_similarity

    x, y = _images(x, y)
    side = min(x.shape[-2:])
    if win_size is None:
        win_size = min(7, side if side % 2 else side - 1)
    if win_size < 3 or win_size % 2 == 0 or win_size > side:
        raise ValueError(
            f"win_size must be odd, >= 3 and <= the image side {side}, got {win_size!r}"
        )
    xs, ys = x.cpu().numpy(), y.cpu().numpy()
    values = [
        structural_similarity(
            a[0] if a.shape[0] == 1 else a,
            b[0] if b.shape[0] == 1 else b,
            data_range=data_range,
            win_size=win_size,
            channel_axis=None if a.shape[0] == 1 else 0,
        )
        for a, b in zip(xs, ys, strict=True)
    ]
    return _reduce(torch.tensor(values, dtype=torch.float64), reduction)


def frechet_distance(feat_a: Tensor | np.ndarray, feat_b: Tensor | np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets (n, F) and (m, F).

    FD = |mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2),

    the W2^2 between N(mu_a, C_a) and N(mu_b, C_b) (Dowson & Landau 1982; FID, Heusel et
    al. 2017), with sample means and unbiased covariances. The cross term has the trace of
    pytorch-fid's sqrtm(C_a C_b) (the same eigenvalues) but is computed from two symmetric
    eigendecompositions in float64 (:func:`_bures_w2_sq`): ~100x faster at
    F = 128, and exact for singular covariances (round-off's negative eigenvalues are
    clipped to 0, where sqrtm needs a 1e-6 I regularisation that moves FD by O(1e-3 F)).
    """
    a, b = (torch.as_tensor(f).detach().cpu().double() for f in (feat_a, feat_b))
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} and {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per set, got {len(a)} and {len(b)}")
    ca, cb = (torch.cov(f.T).reshape(f.shape[1], f.shape[1]) for f in (a, b))
    return max(float(_bures_w2_sq(a.mean(0), ca, b.mean(0), cb)), 0.0)


def loglog_slope(steps: Sequence[float], errors: Sequence[float]) -> float:
    """-d log(error) / d log(steps) by least squares: a solver's measured order."""
    if len(steps) != len(errors) or len(steps) < 2 or min(min(steps), min(errors)) <= 0:
        raise ValueError("need >= 2 positive steps and errors of the same length")
    return -float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def steps_to_reach(steps: Sequence[float], values: Sequence[float], target: float) -> float:
    """Where a quality curve (``values`` at increasing ``steps``) first reaches ``target``
    (values <= target): log-log interpolation between the grid points around the crossing;
    steps[0] if it starts there; nan if it never does."""
    v = np.asarray(values, dtype=float)
    hits = np.flatnonzero(v <= target)
    if not len(hits):
        return math.nan
    j = int(hits[0])
    if j == 0:
        return float(steps[0])
    x0, x1, y0, y1 = (math.log(a) for a in (steps[j - 1], steps[j], v[j - 1], v[j]))
    return math.exp(x0 + (math.log(target) - y0) * (x1 - x0) / (y1 - y0))


def _psd_sqrt(c: Tensor) -> Tensor:
    """The symmetric square root of a symmetric PSD matrix (eigenvalues clipped at 0)."""
    w, u = torch.linalg.eigh((c + c.T) / 2)
    return (u * w.clamp_min(0).sqrt()) @ u.T


def _bures_w2_sq(m_a: Tensor, c_a: Tensor, m_b: Tensor, c_b: Tensor) -> Tensor:
    """W2^2 between N(m_a, C_a) and N(m_b, C_b), float64:
    |m_a - m_b|^2 + Tr(C_a + C_b) - 2 Tr (C_a^1/2 C_b C_a^1/2)^1/2, the last trace as the sum
    of the square roots of that matrix's eigenvalues (round-off's negative ones clipped)."""
    root_a = _psd_sqrt(c_a)
    cross = torch.linalg.eigvalsh(root_a @ c_b @ root_a).clamp_min(0).sqrt().sum()
    return ((m_a - m_b) ** 2).sum() + c_a.trace() + c_b.trace() - 2 * cross


def gaussian_w2(x: Tensor, mean: Tensor, cov: Tensor) -> float:
    """W2 between the Gaussian fitted to samples x (n, d) (sample mean, unbiased covariance)
    and N(mean (d,), cov (d, d)):

        W2^2 = |m_x - mean|^2 + Tr(C_x + cov - 2 (cov^1/2 C_x cov^1/2)^1/2)

    (the Bures formula; float64). Exact for Gaussian x up to the sampling error of its
    moments, which sets a floor of order d / sqrt(n) in the square."""
    x = torch.as_tensor(x).double()
    mean, cov = torch.as_tensor(mean).double(), torch.as_tensor(cov).double()
    if x.dim() != 2 or mean.shape != x.shape[1:] or cov.shape != (x.shape[1],) * 2 or len(x) < 2:
        raise ValueError(
            f"need x (n >= 2, d), mean (d,), cov (d, d); got {tuple(x.shape)}, "
            f"{tuple(mean.shape)}, {tuple(cov.shape)}"
        )
    w2_sq = _bures_w2_sq(mean, cov, x.mean(0), torch.cov(x.T).reshape(cov.shape))
    return float(w2_sq.clamp_min(0).sqrt())


def digits_features(images: Tensor, batch: int = 512) -> Tensor:
    """Penultimate DigitsCNN features (N, 128) of digit images (N, 1, S, S) in [-1, 1].

    S = 8, 16 or 32 (larger images are average-pooled to 8x8). Runs on the CPU.
    """
    from pflow_explore.nets.classifier import load_digits_classifier

    model = load_digits_classifier()
    images = torch.as_tensor(images).detach().float().cpu()
    with torch.no_grad():
        return torch.cat([model.features(chunk) for chunk in images.split(batch)])


def digits_frechet_distance(images_a: Tensor, images_b: Tensor) -> float:
    """FID for digits: :func:`frechet_distance` of the shipped classifier's features.

    images_a (n, 1, S, S), images_b (m, 1, S, S) in [-1, 1]; use a few hundred images per
    set or more (the features are 128-dimensional), and compare values only at equal n.
    """
    return frechet_distance(digits_features(images_a), digits_features(images_b))


def class_accuracy(images: Tensor, labels: Tensor, batch: int = 1024) -> float:
    """Share of digit images (n, 1, S, S) in [-1, 1] that the shipped digits classifier
    labels as ``labels`` (n,): mean over i of [argmax_c p(c | image_i) = label_i].

    For class-conditional samples it says whether each sample shows the digit it was asked
    for (the Frechet distance cannot: it ignores which label produced which image).
    """
    from pflow_explore.nets.classifier import load_digits_classifier

    clf = load_digits_classifier()
    with torch.no_grad():
        pred = torch.cat([clf(chunk).argmax(1) for chunk in images.float().cpu().split(batch)])
    return float((pred == labels.cpu()).float().mean())


def flat_digits_features(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """:func:`digits_features` (n, 128) of flat images x (n, C H W), clamped to [-1, 1] (a
    sampler may overshoot the data range) and reshaped to ``shape`` (C, H, W). Compute a
    fixed reference's features once and pass them to :func:`frechet_distance` when many
    sample sets are compared with it."""
    return digits_features(x.clamp(-1, 1).reshape(-1, *shape).float().cpu())


def flat_digits_frechet(x: Tensor, reference: Tensor, shape: tuple[int, ...]) -> float:
    """:func:`frechet_distance` of the :func:`flat_digits_features` of flat samples x
    (n, C H W) and of flat ``reference`` images (m, C H W)."""
    return frechet_distance(flat_digits_features(x, shape), flat_digits_features(reference, shape))
