"""Probes of a denoiser and its sampler against the Gaussian theory (docs/papers.md §01).

Wang & Vastola (2023) solve the probability-flow ODE of Gaussian data N(mu, Sigma),
Sigma = U diag(lambda) U^T, in closed form (``theory.gaussian_flow.GaussianFlow``). Under
EDM's variance-exploding noise x = x0 + sigma z, in the eigen-coordinates c_k = u_k^T (x - mu),

    c_k(sigma) = sqrt((lambda_k + sigma^2) / (lambda_k + sigma_T^2)) c_k(sigma_T),      (VE)
    D_G(x; sigma) = mu + sum_k lambda_k / (lambda_k + sigma^2) c_k u_k,               (denoiser)
    f_k(sigma) = sqrt(lambda_k / (lambda_k + sigma^2)).                    (share of feature k)

The estimators here ask how far a *learned* denoiser D(x (n, d), sigma) -> (n, d) and its
Heun sampler (``edm``) follow that theory, each returning a small dataclass of tensors:

- :func:`fit_gaussian`: the data's Gaussian, with the pixel-range guard;
- :func:`closed_form_error`: the closed form against an adaptive numerical PF-ODE solve;
- :func:`explained_share`, :func:`sigma_star`: the R^2 of D_G as a predictor of D, per sigma;
- :func:`trajectories` (:class:`TrajectoryPair`): analytic vs learned paths from the same
  x_T, and their rotation residual (share outside span{x_T, x_0});
  :func:`trajectory_deviation`: how far apart they are in the early phase;
- :func:`perturbation_experiment` (:class:`Perturbation`): kicks of fixed size along u_k
  at sigma_t against the predicted gain f_k(sigma_t); :func:`rank_order`: a rank
  correlation with its permutation p-value, for "outline first" as an order;
- :func:`teleportation_sweep` (:class:`Teleportation`): skip the first Heun steps with the
  closed-form jump, sample quality by :func:`frechet_to`;
- :func:`feature_emergence` (:class:`Emergence`): :func:`feature_shares` along the paths
  and the sigma where each :func:`crossing` of 1/sqrt(2) happens (sqrt(lambda_k) for D_G).

States are flat, x (n, d); grids of noise levels decrease from sigma_max to 0.
Time convention: noise level (sigma; sigma = 0 is the data).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pflow_explore import solvers
from pflow_explore.edm import Denoiser, edm_sampler, heun_nfe, heun_steps
from pflow_explore.metrics import flat_digits_features, flat_digits_frechet, frechet_distance
from pflow_explore.theory.gaussian_flow import GaussianFlow


# ---- the closed form and the explained share ------------------------------------------------
def fit_gaussian(images: Tensor, shrinkage: float = 1e-3) -> GaussianFlow:
    """The Gaussian N(mu, Sigma) of the data: mu the mean image, Sigma its covariance (PCA).

    images: (N, d) or (N, 1, S, S), pixels in [-1, 1], the range the denoiser sees. The
    pixel-range trap (paper): a Gaussian fitted to [0, 1] pixels is wrong for [-1, 1] ones
    (mean 2 mu - 1, eigenvalues 4 lambda); convert with ``GaussianFlow.rescaled(2, -1)``.
    Sigma is shrunk by ``shrinkage`` towards (tr Sigma / d) I so blank border pixels still
    give a positive definite matrix (``GaussianFlow.from_samples``).
    """
    x = images.flatten(1)
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - 1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"images must lie in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]")
    if lo >= 0:
        raise ValueError(
            "images look like [0, 1] pixels (no negative value): map them with 2 x - 1 "
            "first, or fit them and use .rescaled(2, -1)"
        )
    return GaussianFlow.from_samples(x, shrinkage=shrinkage)


def closed_form_error(
    gaussian: GaussianFlow, x_T: Tensor, sigmas: Tensor, tol: float = 1e-10
) -> float:
    """Max relative error of the closed form against an adaptive numerical PF-ODE solve.

    Integrates dx/dsigma = sigma (Sigma + sigma^2 I)^-1 (x - mu) (``ve_velocity``) with
    dopri5 (rtol = atol = tol, float64) from sigma_0 over the positive grid points, and
    returns max_{i, j} |x_ode - x_cf| / |x_cf - mu| over grid points i and paths j.
    x_T: (n, d) starts at sigmas[0]; sigmas: (m,) decreasing (a trailing 0 is dropped).
    """
    x64 = x_T.detach().double().cpu()
    times = sigmas[sigmas > 0].double()
    ode = solvers.odeint(gaussian.ve_velocity, x64, times, "dopri5", True, rtol=tol, atol=tol)
    exact = gaussian.ve_solution(x64, float(times[0]), times)
    err = (ode.trajectory - exact).norm(dim=-1)
    return float((err / (exact - gaussian.mean).norm(dim=-1)).max())


@torch.no_grad()
def explained_share(
    denoiser: Denoiser,
    gaussian: GaussianFlow,
    images: Tensor,
    sigmas: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """How much of the learned denoiser the Gaussian one explains, at each sigma: (m,).

    On noisy data x = x0 + sigma z (x0 the rows of ``images`` (n, d), z ~ N(0, I)),

        share(sigma) = 1 - E |D_theta(x; sigma) - D_G(x; sigma)|^2 / E |D_theta(x; sigma) - mu|^2,

    the R^2 of the Gaussian denoiser D_G as a predictor of D_theta, against the baseline of
    predicting the data mean mu. 1: D_G explains D_theta fully; 0: no better than mu.
    At small sigma every denoiser tends to x itself, so the share returns to 1 trivially;
    what matters is where it first drops when coming down from sigma_max (:func:`sigma_star`).
    """
    dev = images.device
    mu = gaussian.mean.to(dev, images.dtype)
    z = torch.randn(images.shape, generator=generator).to(dev, images.dtype)
    out = []
    for sig in sigmas.tolist():
        x = images + sig * z
        learned = denoiser(x, sig)
        gauss = gaussian.ve_denoiser(x, sig)
        unexplained = ((learned - gauss) ** 2).sum(1).mean()
        out.append(1 - unexplained / ((learned - mu) ** 2).sum(1).mean())
    return torch.stack(out).double().cpu()


def sigma_star(shares: Tensor, sigmas: Tensor, level: float = 0.9) -> float | None:
    """The smallest grid sigma above which the share stays >= level (None if the share
    is below level already at the largest sigma). shares, sigmas: (m,), any order."""
    found = None
    for i in torch.argsort(sigmas, descending=True).tolist():
        if float(shares[i]) < level:
            break
        found = float(sigmas[i])
    return found


# ---- trajectories and kicks ----------------------------------------------------------------
@dataclass
class TrajectoryPair:
    """Analytic (Gaussian) and learned PF-ODE paths from the same x_T on one grid.

    sigmas (m,); analytic, learned: (m, n, d) states; analytic_x0, learned_x0: (m, n, d)
    x0-estimates (at sigma = 0 the state itself); residual_analytic, residual_learned:
    (m, n) rotation residuals; gap: (m,) RMS pixel distance between the two paths.
    """

    sigmas: Tensor
    analytic: Tensor
    learned: Tensor
    analytic_x0: Tensor
    learned_x0: Tensor
    residual_analytic: Tensor
    residual_learned: Tensor
    gap: Tensor


def analytic_path(gaussian: GaussianFlow, x_T: Tensor, sigmas: Tensor) -> tuple[Tensor, Tensor]:
    """(states (m, n, d), x0-estimates (m - 1, n, d) at the positive sigmas) of the closed
    form x_G(sigma) = mu + U diag(sqrt((lambda + sigma^2) / (lambda + sigma_0^2))) U^T
    (x_T - mu) on the grid sigmas (m,), float64 on the CPU."""
    at = gaussian.ve_solution(x_T.double().cpu(), float(sigmas[0]), sigmas)
    x0 = [gaussian.ve_denoiser(a, float(s)) for a, s in zip(at[:-1], sigmas[:-1], strict=True)]
    return at, torch.stack(x0)


def trajectories(
    denoiser: Denoiser, gaussian: GaussianFlow, x_T: Tensor, sigmas: Tensor
) -> TrajectoryPair:
    """Run the closed form (:func:`analytic_path`) and the learned sampler from the same
    x_T (n, d) over sigmas. Rotation residual (``GaussianFlow.rotation_residual``): the
    share of each point x(sigma) - mu outside span{x_T - mu, x(0) - mu}; 0 for an exact
    2D rotation."""
    learned = edm_sampler(denoiser, x_T, sigmas, trajectory=True)
    lt = learned.trajectory.double().cpu()
    at, a_x0 = analytic_path(gaussian, x_T, sigmas)
    l_x0 = torch.cat([learned.denoised.double().cpu(), lt[-1:]])
    gap = ((lt - at) ** 2).mean(dim=(1, 2)).sqrt()
    res_a, res_l = gaussian.rotation_residual(at), gaussian.rotation_residual(lt)
    return TrajectoryPair(sigmas, at, lt, torch.cat([a_x0, at[-1:]]), l_x0, res_a, res_l, gap)


def trajectory_deviation(
    pair: TrajectoryPair, gaussian: GaussianFlow, sigma_early: float
) -> tuple[float, float]:
    """How closely the learned sampler follows the Gaussian paths in the early phase.

    On the grid points sigma_i >= sigma_early of ``pair`` (same x_T for both paths),

        dev(sigma) = RMS_j |x_learned - x_G| / RMS_j |x_G - mu|,

    the deviation relative to the size of the state; returns (max of dev over the early
    phase, ratio at the last early grid point of RMS |x_learned - x_G| to RMS |x_learned -
    x_mean|), where x_mean(sigma) = mu + (x_T - mu) sigma / sigma_0 is the path of the
    mean-only model (D = mu). The ratio < 1 says the learned path is closer to the Gaussian
    than to a model that knows only the data's mean: the covariance, not just mu, explains it.
    """
    sig = pair.sigmas.double()
    early = [i for i in range(len(sig)) if sig[i] >= sigma_early and sig[i] > 0]
    mu = gaussian.mean.to(pair.analytic)
    x_T = pair.analytic[0]

    def rms(a: Tensor) -> Tensor:
        return (a**2).sum(-1).mean(-1).sqrt()

    lt, at = pair.learned[early], pair.analytic[early]
    dev = rms(lt - at) / rms(at - mu)
    last = early[-1]
    mean_path = mu + (x_T - mu) * float(sig[last] / sig[0])
    ratio = rms(pair.learned[last] - pair.analytic[last]) / rms(pair.learned[last] - mean_path)
    return float(dev.max()), float(ratio)


@dataclass
class Perturbation:
    """Kicks along eigenvectors during sampling and their effect on the final sample.

    sigmas_t (p,) kick noise levels; features (q,) kicked eigen-directions, eigenvalues
    (q,); delta (p,) kick sizes; change (q, p) mean |x0_kicked - x0|; gain (q, p) =
    change / delta; along (q, p) = mean u_k^T (x0_kicked - x0) / delta; predicted (q, p) =
    sqrt(lambda_k / (lambda_k + sigma_t^2)).
    """

    sigmas_t: Tensor
    features: Tensor
    eigenvalues: Tensor
    delta: Tensor
    change: Tensor
    gain: Tensor
    along: Tensor
    predicted: Tensor


def perturbation_experiment(
    denoiser: Denoiser,
    gaussian: GaussianFlow,
    x_T: Tensor,
    sigmas: Tensor,
    features: tuple[int, ...],
    kick: float = 0.5,
    sigma_data: float = 1.0,
    indices: tuple[int, ...] | None = None,
) -> Perturbation:
    """Kick the learned sampler along u_k at grid step i and follow the kick to the end.

    At sigma_t = sigmas[i] (``indices``, default every interior step), x_i -> x_i + delta u_k
    with delta = kick sigma_data: one FIXED size at every sigma_t and for every feature, so
    no trend in sigma_t or lambda_k is built into the kick itself. The closed form predicts
    the kick reaches x0 scaled by g_k = sqrt(lambda_k / (lambda_k + sigma_t^2)): a kick
    along a high-variance feature (outline) still matters at larger sigma_t than one along
    a low-variance feature (detail).
    x_T: (n, d) at sigmas[0]; sigmas: (N + 1,) ending at 0; features: the q indices k.
    The n unkicked and q n kicked states run the rest of the grid as one batch.
    """
    indices = indices or tuple(range(1, len(sigmas) - 2))
    states = [step.x for step in heun_steps(denoiser, x_T, sigmas)]  # x_i at sigma_i, i < N
    u = gaussian.eigenvectors[:, list(features)].T.to(x_T)  # (q, d)
    n, q = x_T.shape[0], len(features)
    change, along, deltas = [], [], []
    for i in indices:
        delta = kick * sigma_data
        kicked = torch.cat([states[i]] + [states[i] + delta * u[j] for j in range(q)])
        diff = edm_sampler(denoiser, kicked, sigmas[i:]).x.reshape(q + 1, n, -1)
        diff = diff[1:] - diff[:1]  # (q, n, d)
        change.append(diff.norm(dim=-1).mean(1))
        along.append((diff * u[:, None, :]).sum(-1).mean(1) / delta)
        deltas.append(delta)
    sigmas_t = sigmas[list(indices)].double()
    delta_t = torch.tensor(deltas, dtype=torch.float64)
    change_t = torch.stack(change, 1).double().cpu()
    return Perturbation(
        sigmas_t,
        torch.tensor(features),
        gaussian.eigenvalues[list(features)].cpu(),
        delta_t,
        change_t,
        change_t / delta_t,
        torch.stack(along, 1).double().cpu(),
        gaussian.perturbation_gain(sigmas_t)[:, list(features)].T.cpu(),
    )


def _ranks(v: Tensor) -> np.ndarray:
    """Ranks 1..p of a (p,) sequence, ties given their average rank (as ``rankdata``)."""
    x = v.detach().cpu().double().numpy()
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    _, tie, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(tie, weights=ranks) / counts)[tie]


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of x (..., p) with y (p,)."""
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean()
    return (xc * yc).sum(-1) / np.sqrt((xc**2).sum(-1) * (yc**2).sum())


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two (p,) sequences (Pearson correlation of ranks)."""
    return float(_pearson_rows(_ranks(a), _ranks(b)))


def rank_order(a: Tensor, b: Tensor, resamples: int = 9999) -> tuple[float, float]:
    """(rho, p): Spearman rank correlation of two (p,) sequences and the one-sided p-value
    of "a increases with b" by a permutation test over the pairings: the share of the p!
    orderings of a with a correlation >= rho when p! <= ``resamples`` (exact), else
    (1 + #{rho* >= rho}) / (1 + resamples) over ``resamples`` seeded random orderings.
    (numpy, as scipy.stats.permutation_test does it: importing scipy.stats takes ~1 s,
    which a dashboard's first open pays.) A rho > 0 alone passes half the time by chance;
    p < 0.05 does 5 % of the time. NaN and p = 1 when either sequence is constant."""
    ra, rb = _ranks(a), _ranks(b)
    if len(ra) < 2 or np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return math.nan, 1.0
    rho = float(_pearson_rows(ra, rb))
    if math.factorial(len(ra)) <= resamples:
        orders = np.array(list(itertools.permutations(range(len(ra)))))
        return rho, float(np.mean(_pearson_rows(ra[orders], rb) >= rho - 1e-12))
    rng = np.random.default_rng(0)
    orders = np.argsort(rng.random((resamples, len(ra))), axis=1)
    hits = int((_pearson_rows(ra[orders], rb) >= rho - 1e-12).sum())
    return rho, (1 + hits) / (1 + resamples)


# ---- teleportation ---------------------------------------------------------------------------
def skip_steps(fraction: float, n_steps: int) -> int:
    """The number of leading steps that a skip fraction X replaces: round(X N)."""
    return int(round(fraction * n_steps))


@dataclass
class Teleportation:
    """Sample quality against the share of skipped steps.

    fractions (F,); skipped (F,) steps; nfe (F,); fd (F,) Frechet distance to held-out
    digits; fd_floor: the distance of the training images themselves (sampling noise);
    best_fraction: the largest X with FD(X') <= 1.1 FD(0) for every X' <= X; nfe_saved:
    the share of evaluations it saves; samples: (F, 16, d) the first samples per fraction.
    """

    fractions: Tensor
    skipped: Tensor
    nfe: Tensor
    fd: Tensor
    fd_floor: float
    best_fraction: float
    nfe_saved: float
    samples: Tensor


frechet_to = flat_digits_frechet  # sample quality of flat digits (n, d) vs a reference


def teleportation_sweep(
    denoiser: Denoiser,
    gaussian: GaussianFlow,
    x_T: Tensor,
    sigmas: Tensor,
    fractions: tuple[float, ...],
    reference: Tensor,
    shape: tuple[int, ...],
    floor_images: Tensor | None = None,
    batch: int = 2000,
) -> Teleportation:
    """FD of samples from the same x_T (n, d) when the first X of the N steps are replaced
    by the closed-form jump (``edm_sampler(teleport_to=...)``, X in ``fractions``, the
    first being 0), and the NFE saved. The same x_T for every X (common random numbers)
    makes the differences in FD far less noisy than the FD values themselves.
    """
    n_steps = len(sigmas) - 1
    ref = flat_digits_features(reference, shape)  # once: every FD below is to it
    fds, nfes, skipped, firsts = [], [], [], []
    for frac in fractions:
        k = skip_steps(frac, n_steps)
        outs = [edm_sampler(denoiser, xb, sigmas, k, gaussian).x for xb in x_T.split(batch)]
        x = torch.cat(outs)
        fds.append(frechet_distance(flat_digits_features(x, shape), ref))
        nfes.append(heun_nfe(n_steps, k))
        skipped.append(k)
        firsts.append(x[:16].cpu())
    fd = torch.tensor(fds, dtype=torch.float64)
    ok = (fd <= 1.1 * fd[0]).tolist()
    best = 0
    while best + 1 < len(ok) and ok[best + 1]:
        best += 1
    floor = math.nan
    if floor_images is not None:
        floor = frechet_distance(flat_digits_features(floor_images[: len(x_T)], shape), ref)
    return Teleportation(
        torch.tensor(fractions, dtype=torch.float64),
        torch.tensor(skipped),
        torch.tensor(nfes),
        fd,
        floor,
        float(fractions[best]),
        1 - nfes[best] / nfes[0],
        torch.stack(firsts),
    )


# ---- outline first: when each feature is fixed ----------------------------------------------
@dataclass
class Emergence:
    """When each eigen-feature is fixed in the x0-estimate.

    features (q,); sqrt_lambda (q,); sigmas (m,) the grid (sigma > 0); share_learned,
    share_gaussian: (m, q) f_k(sigma); crossing_learned, crossing_gaussian: (q,) the sigma
    below which f_k stays >= 1/sqrt(2) (NaN if it never does before sigma_min).
    """

    features: Tensor
    sqrt_lambda: Tensor
    sigmas: Tensor
    share_learned: Tensor
    share_gaussian: Tensor
    crossing_learned: Tensor
    crossing_gaussian: Tensor


def feature_shares(
    x0_estimates: Tensor, final: Tensor, gaussian: GaussianFlow, features: list[int]
) -> Tensor:
    """Share of feature k of the final sample already present in the x0-estimate: (m, q).

    With c_k(sigma) = u_k^T (D(x(sigma); sigma) - mu) along each path and c_k(0) its final
    value, f_k(sigma) = sum_j c_k,j(sigma) c_k,j(0) / sum_j c_k,j(0)^2 over the n paths
    (the regression slope of c_k(sigma) on c_k(0)). For Gaussian data every path has
    c_k(sigma) = sqrt(lambda_k / (lambda_k + sigma^2)) c_k(0), so f_k is exactly that.
    x0_estimates: (m, n, d); final: (n, d).
    """
    u = gaussian.eigenvectors[:, features].to(x0_estimates.device)  # only the q features
    mu = gaussian.mean.to(x0_estimates.device)
    c = torch.stack([(x.double() - mu) @ u for x in x0_estimates])  # (m, n, q)
    c0 = (final.double().to(u.device) - mu) @ u  # (n, q)
    return ((c * c0).sum(1) / (c0**2).sum(0)).cpu()


def crossing(shares: Tensor, sigmas: Tensor, level: float = 1 / math.sqrt(2)) -> Tensor:
    """The sigma at which each share f_k crosses ``level`` for the last time: (q,).

    shares: (m, q) on sigmas (m,) decreasing and > 0. From the last grid point where
    f_k < level to the next one, log sigma is interpolated linearly in f. sigma_0 if
    f_k >= level everywhere; NaN if f_k < level at the last grid point.
    """
    out = []
    logs = sigmas.double().log()
    for f in shares.T.double():
        below = (f < level).nonzero().flatten()
        if len(below) == 0 or int(below[-1]) == len(f) - 1:
            out.append(float(sigmas[0]) if len(below) == 0 else math.nan)
            continue
        i = int(below[-1])
        w = (level - f[i]) / (f[i + 1] - f[i])
        out.append(float(torch.exp(logs[i] + w * (logs[i + 1] - logs[i]))))
    return torch.tensor(out, dtype=torch.float64)


def feature_emergence(
    denoiser: Denoiser, gaussian: GaussianFlow, x_T: Tensor, sigmas: Tensor, n_features: int
) -> Emergence:
    """Outline first: the sigma at which feature k's share f_k(sigma) crosses 1/sqrt(2).

    For the Gaussian the crossing is sigma = sqrt(lambda_k) exactly (docs/papers.md); here it is
    measured with :func:`feature_shares` on analytic paths and on the
    learned sampler's paths from the same x_T (n, d) over the grid sigmas (N + 1,).
    """
    feats = list(range(n_features))
    learned = edm_sampler(denoiser, x_T, sigmas, trajectory=True)
    share_l = feature_shares(learned.denoised, learned.x, gaussian, feats)
    at, a_x0 = analytic_path(gaussian, x_T, sigmas)
    share_g = feature_shares(a_x0, at[-1], gaussian, feats)
    positive = sigmas[:-1]
    cross_l, cross_g = crossing(share_l, positive), crossing(share_g, positive)
    sqrt_lam = gaussian.eigenvalues[:n_features].sqrt().cpu()
    return Emergence(torch.tensor(feats), sqrt_lam, positive, share_l, share_g, cross_l, cross_g)
