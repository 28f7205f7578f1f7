"""Chapter 01: diffusion models generate images like painters (Wang & Vastola 2023).

For Gaussian data N(mu, Sigma) the probability-flow ODE has a closed form
(``theory.gaussian_flow``). This module asks how much of a *trained* EDM denoiser that
closed form explains, on 8x8 digits (cpu) or 32x32 augmented digits (gpu). The method
(preconditioning, loss, Heun sampler with teleportation, ideal denoiser) is
``pflow_explore.edm``; here are the paper's experiments, each callable on its own:

    m = setup(s)                  data, their Gaussian, the trained denoiser (cached)
    run_closed_form(m)            closed form vs numerical PF-ODE
    run_explained_share(m)        how much of D_theta the Gaussian explains, per sigma
    run_trajectories(m)           analytic vs learned paths, rotation residual
    run_perturbation(m)           early kicks vs late kicks
    run_teleportation(m)          skip the first steps with the closed form
    run_emergence(m)              outline first: when each feature is fixed
    run(s) = all of them -> Results;  claims(r), figures(r)

States are flattened images x (n, d); ``image_shape`` puts them back. Noise levels follow
EDM: x = x0 + sigma z, sampling from sigma_max = 80 down to 0 (card 01_painters, "VE / EDM").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import plotly.graph_objects as go
import torch
from torch import Tensor, nn

from pflow_explore import scale, solvers
from pflow_explore.claims import Claim, claim_above, claim_below
from pflow_explore.datasets.digits import augment, digits
from pflow_explore.edm import (
    Denoiser,
    EDMDenoiser,
    edm_denoiser,
    edm_loss,
    edm_sampler,
    empirical_denoiser,
    heun_nfe,
    heun_steps,
    karras_sigmas,
)
from pflow_explore.experiment import Seeds, Stopwatch, cache_key, choose, presets
from pflow_explore.metrics import digits_frechet_distance
from pflow_explore.theory.gaussian_flow import GaussianFlow
from pflow_explore.training import FitResult, fit_cached

CHAPTER = "painters"
VERSION = 1  # part of the cache key: bump when the training code changes
NETS = ("mlp", "unet")


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter. ``scale``: the preset's name.

    Data: digits at ``image_size`` (8, 16, 32), ``aug_copies`` augmented copies when
    ``augment``. Net: ``"mlp"`` (hidden, depth) or ``"unet"`` (unet_base, unet_mults).
    Training (EDM): ``steps`` of Adam on batches of ``batch``, log-normal sigma
    (p_mean, p_std), EMA ``ema_decay``. Sampler: ``n_steps`` Heun steps on the Karras grid
    (sigma_min, sigma_max, rho). Experiments: sample counts ``n_*``, the features kicked and
    followed, the skip fractions of the teleportation sweep.
    """

    scale: str
    image_size: int = 8
    augment: bool = False
    aug_copies: int = 1
    net: str = "mlp"
    hidden: int = 256
    depth: int = 3
    unet_base: int = 32
    unet_mults: tuple[int, ...] = (1, 2, 2)
    embedding_scale: float = 1.0
    steps: int = 12000
    batch: int = 256
    lr: float = 2e-3
    ema_decay: float = 0.999
    p_mean: float = -1.2
    p_std: float = 1.2
    n_steps: int = 20
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    shrinkage: float = 1e-3
    n_share: int = 359
    n_share_sigmas: int = 25
    n_paths: int = 16
    n_show: int = 3
    n_emergence: int = 512
    emergence_steps: int = 64
    n_features: int = 16
    kick: float = 0.5
    kick_features: tuple[int, ...] = (0, 2, 4)
    n_kick: int = 64
    skip_fractions: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    n_fd: int = 1000
    ode_paths: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size not in (8, 16, 32):
            raise ValueError(f"image_size must be 8, 16 or 32, got {self.image_size}")
        if self.net not in NETS:
            raise ValueError(f"net must be one of {NETS}, got {self.net!r}")
        for name in ("steps", "batch", "aug_copies", "n_paths", "n_kick", "n_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 2 <= self.n_steps <= 1000:
            raise ValueError(f"n_steps must be between 2 and 1000, got {self.n_steps}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}"
            )
        if not self.skip_fractions or any(not 0 <= f < 1 for f in self.skip_fractions):
            raise ValueError(f"skip_fractions must lie in [0, 1), got {self.skip_fractions}")
        if self.skip_fractions[0] != 0:
            raise ValueError("skip_fractions must start with 0 (the no-skip baseline)")
        d = self.image_size**2
        if any(not 0 <= k < d for k in self.kick_features) or self.n_features > d:
            raise ValueError(f"kick_features and n_features must index features 0..{d - 1}")
        if self.n_fd < 16 or self.n_emergence < 16 or self.n_share < 16:
            raise ValueError("n_fd, n_emergence and n_share must be >= 16")


# fmt: off
SETTINGS = presets(
    Settings,
    tiny=dict(
        hidden=64, depth=2, steps=150, batch=128, n_steps=10, n_share=128, n_share_sigmas=12,
        n_paths=4, n_emergence=128, emergence_steps=24, n_features=8, n_kick=16, n_fd=256,
        ode_paths=2,
    ),
    cpu={},
    gpu=dict(
        image_size=32, augment=True, aug_copies=8, net="unet", unet_base=64,
        unet_mults=(1, 2, 2), steps=8000, batch=256, lr=1e-3, ema_decay=0.9995, n_steps=20,
        n_share=2048, n_paths=32, n_emergence=1024, n_features=32, n_kick=256, n_fd=10000,
    ),
)
# fmt: on

TRAINING_FIELDS = (
    "image_size augment aug_copies net hidden depth unet_base unet_mults embedding_scale "
    "batch p_mean p_std seed"
).split()

# seed streams: the offsets ARE the historical ``s.seed + k`` (never renumber a shipped one)
SEEDS = dict(train=0, ode=1, share=2, paths=3, kick=4, fd=5, emergence=6, augment=(1000, 1000))


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


def seeds(s: Settings) -> Seeds:
    """The chapter's named seed streams over ``s.seed`` (:data:`SEEDS`)."""
    return Seeds(s.seed, **SEEDS)


def training_key(s: Settings) -> dict[str, object]:
    """The settings that determine the trained weights (the cache key; steps, lr and EMA
    are added by ``fit_cached``). Changing an experiment size never retrains."""
    return cache_key(s, TRAINING_FIELDS)


# ---- data and the Gaussian ----------------------------------------------------------------
def image_shape(s: Settings) -> tuple[int, int, int]:
    """(1, S, S): how a flat sample (d,) = (S * S,) is an image."""
    return (1, s.image_size, s.image_size)


def dataset(s: Settings) -> tuple[Tensor, Tensor]:
    """(train (N, d), held-out test (M, d)) flattened digits in [-1, 1], float32.

    With ``augment`` each split is ``aug_copies`` augmented copies (seeded), so the
    Gaussian, the network and the Frechet reference all see the same distribution.
    """
    out = []
    for i, split in enumerate(("train", "test")):
        images, _ = digits(s.image_size, split)
        if s.augment:
            gen = seeds(s).generator("augment", i)
            images = torch.cat([augment(images, gen) for _ in range(s.aug_copies)])
        out.append(images.flatten(1))
    return out[0], out[1]


def fit_gaussian(images: Tensor, shrinkage: float = 1e-3) -> GaussianFlow:
    """The Gaussian N(mu, Sigma) of the data: mu the mean image, Sigma its covariance (PCA).

    images: (N, d) or (N, 1, S, S), pixels in [-1, 1], the range the denoiser sees. The
    pixel-range trap (card): a Gaussian fitted to [0, 1] pixels is wrong for [-1, 1] ones
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


# ---- the denoiser of this chapter (method: pflow_explore.edm) -------------------------------
def make_net(s: Settings) -> nn.Module:
    """The raw network F of the preset: an MLP on (n, d) or a UNet on (n, 1, S, S)."""
    from pflow_explore.nets import MLP, TimeEmbedding, UNet

    if s.net == "mlp":
        net = MLP(s.image_size**2, hidden=s.hidden, depth=s.depth, log_scale=True)
    else:
        net = UNet(1, base=s.unet_base, channel_mults=s.unet_mults, log_scale=True)
    # EDM's embedding of c_noise = log(sigma) / 4 (DDPM++ positional embedding): frequencies
    # embedding_scale * 10^(-4 k / half), i.e. 1 down to 1e-4. The default scale 1000 is made
    # for t in [0, 1]; in log sigma it oscillates fast and extrapolates erratically to the
    # large sigma that log-normal training rarely visits.
    dim = net.time_embedding.dim
    net.time_embedding = TimeEmbedding(dim, log_scale=True, scale=s.embedding_scale)
    return net


def make_denoiser(s: Settings, sigma_data: float) -> EDMDenoiser:
    """A fresh (untrained) EDM denoiser for the preset."""
    shape = image_shape(s) if s.net == "unet" else None
    return edm_denoiser(make_net(s), sigma_data, shape)


def denoiser_loss_fn(
    s: Settings, data: Tensor, device: torch.device
) -> tuple[Callable[[nn.Module, int], Tensor], float]:
    """(loss_fn(model, step) -> loss, sigma_data) for ``training.fit``: a random batch of
    ``data`` (N, d) per step and its :func:`edm.edm_loss`, all drawn from one generator
    (stream "train")."""
    data = data.to(device)
    gen = torch.Generator(device=device).manual_seed(seeds(s)["train"])

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        idx = torch.randint(len(data), (s.batch,), generator=gen, device=device)
        return edm_loss(model, data[idx], gen, s.p_mean, s.p_std)

    return loss_fn, float(data.std())


def train_denoiser(s: Settings, rebuild: bool = False) -> FitResult:
    """Train the preset's denoiser with the EDM loss (or load it from the cache).

    Adam with a 200-step warm-up and cosine decay, gradient clipping, EMA weights;
    sigma_data = std of all training pixels; initial weights seeded by stream "train".
    Cached under ``painters/denoiser`` keyed by :func:`training_key` and the fit arguments.
    """
    dev = scale.device()
    train, _ = dataset(s)
    loss_fn, sigma_data = denoiser_loss_fn(s, train, dev)
    torch.manual_seed(seeds(s)["train"])  # the initial weights
    return fit_cached(
        CHAPTER,
        "denoiser",
        training_key(s),
        lambda: make_denoiser(s, sigma_data),
        loss_fn,
        version=VERSION,
        rebuild=rebuild,
        device=dev,
        steps=s.steps,
        lr=s.lr,
        ema_decay=s.ema_decay,
        warmup=min(200, s.steps // 10),
        cosine=True,
        desc=f"painters: EDM denoiser ({s.scale})",  # part of the cache key: keep it
    )


def sampling_grid(s: Settings, n_steps: int | None = None) -> Tensor:
    """The Karras grid sigma_0 = sigma_max > ... > sigma_{N-1} = sigma_min > sigma_N = 0."""
    return karras_sigmas(n_steps or s.n_steps, s.sigma_min, s.sigma_max, s.rho)


def initial_noise(s: Settings, n: int, seed: int, device: torch.device | None = None) -> Tensor:
    """x_T = sigma_max z, z ~ N(0, I): (n, d) float32, seeded (so every experiment can
    start several methods from the same points)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, s.image_size**2, generator=gen)
    return (s.sigma_max * z).to(device or scale.device())


def skip_steps(fraction: float, n_steps: int) -> int:
    """The number of leading steps that a skip fraction X replaces: round(X N)."""
    return int(round(fraction * n_steps))


# ---- estimators ---------------------------------------------------------------------------
def closed_form_error(
    gaussian: GaussianFlow, x_T: Tensor, sigmas: Tensor, tol: float = 1e-10
) -> float:
    """Max relative error of the closed form against an adaptive numerical PF-ODE solve.

    Integrates dx/dsigma = sigma (Sigma + sigma^2 I)^-1 (x - mu) (``ve_velocity``) with
    dopri5 (rtol = atol = tol, float64) from sigma_0 over the positive grid points, and
    returns max_{i, j} |x_ode - x_cf| / |x_cf - mu| over grid points i and paths j.
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
    with delta = kick sqrt(sigma_data^2 + sigma_t^2): the same size relative to the
    state's scale at every noise level (c_in-normalised). The closed form predicts the kick
    reaches x0 scaled by g_k = sqrt(lambda_k / (lambda_k + sigma_t^2)), so the change of
    the output, delta g_k, grows with sigma_t when lambda_k > sigma_data^2.
    """
    indices = indices or tuple(range(1, len(sigmas) - 2))
    states = [step.x for step in heun_steps(denoiser, x_T, sigmas)]  # x_i at sigma_i, i < N
    u = gaussian.eigenvectors[:, list(features)].T.to(x_T)  # (q, d)
    n, q = x_T.shape[0], len(features)
    change, along, deltas = [], [], []
    for i in indices:
        delta = kick * math.sqrt(sigma_data**2 + float(sigmas[i]) ** 2)
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


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two (p,) sequences (Pearson correlation of ranks)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a.cpu().numpy(), b.cpu().numpy()).statistic)


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


def frechet_to(samples: Tensor, reference: Tensor, shape: tuple[int, ...]) -> float:
    """Digits Frechet distance (shipped classifier) of flat samples (n, d), clamped to
    [-1, 1], to flat reference images (m, d)."""
    imgs = samples.clamp(-1, 1).reshape(-1, *shape).float().cpu()
    return digits_frechet_distance(imgs, reference.reshape(-1, *shape).float().cpu())


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
    fds, nfes, skipped, firsts = [], [], [], []
    for frac in fractions:
        k = skip_steps(frac, n_steps)
        outs = [edm_sampler(denoiser, xb, sigmas, k, gaussian).x for xb in x_T.split(batch)]
        x = torch.cat(outs)
        fds.append(frechet_to(x, reference, shape))
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
        floor = frechet_to(floor_images[: len(x_T)], reference, shape)
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

    For the Gaussian the crossing is sigma = sqrt(lambda_k) exactly (card, "Outline
    first"); here it is measured with :func:`feature_shares` on analytic paths and on the
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


# ---- the named experiments ----------------------------------------------------------------
@dataclass
class Model:
    """What every experiment starts from: the data (train (N, d), test (M, d)), their
    Gaussian, the training result ``fit`` and its ``denoiser`` D(x (n, d), sigma) (eval
    mode), the sampler's grid ``sigmas`` (N + 1,) and the denoiser's sigma_data."""

    settings: Settings
    scale: str
    train: Tensor
    test: Tensor
    gaussian: GaussianFlow
    fit: FitResult
    denoiser: EDMDenoiser
    sigmas: Tensor
    sigma_data: float

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def from_cache(self) -> bool:  # the attribute every chapter's Results has
        return self.fit.from_cache

    @property
    def trained_seconds(self) -> float:
        return self.fit.seconds


def setup(s: Settings) -> Model:
    """Data, their Gaussian (:func:`fit_gaussian`), the trained denoiser (cached)."""
    train, test = dataset(s)
    gaussian = fit_gaussian(train, s.shrinkage)
    fit = train_denoiser(s)
    den = fit.model.eval()
    return Model(
        s, s.scale, train, test, gaussian, fit, den, sampling_grid(s), float(den.sigma_data)
    )


def run_closed_form(m: Model) -> float:
    """:func:`closed_form_error` on ``ode_paths`` paths (stream "ode")."""
    s = m.settings
    return closed_form_error(m.gaussian, initial_noise(s, s.ode_paths, seeds(s)["ode"]), m.sigmas)


@dataclass
class Shares:
    """Explained share (m,) on the grid ``sigmas`` (m,) of the trained net and of the ideal
    denoiser of the training set, with their :func:`sigma_star`."""

    sigmas: Tensor
    learned: Tensor
    ideal: Tensor
    sigma_star: float | None
    sigma_star_ideal: float | None


def run_explained_share(m: Model) -> Shares:
    """:func:`explained_share` of the trained net and of :func:`edm.empirical_denoiser`
    on held-out digits, on a log grid; the same noisy points for both (stream "share")."""
    s = m.settings
    sig = torch.logspace(
        math.log10(s.sigma_min), math.log10(s.sigma_max), s.n_share_sigmas, dtype=torch.float64
    )
    held_out = m.test[: s.n_share].to(m.device)
    learned = explained_share(m.denoiser, m.gaussian, held_out, sig, seeds(s).generator("share"))
    ideal = empirical_denoiser(m.train.to(m.device))
    shares_ideal = explained_share(ideal, m.gaussian, held_out, sig, seeds(s).generator("share"))
    return Shares(
        sig, learned, shares_ideal, sigma_star(learned, sig), sigma_star(shares_ideal, sig)
    )


def run_trajectories(m: Model) -> TrajectoryPair:
    """:func:`trajectories` from ``n_paths`` starts (stream "paths")."""
    s = m.settings
    x_T = initial_noise(s, s.n_paths, seeds(s)["paths"], m.device)
    return trajectories(m.denoiser, m.gaussian, x_T, m.sigmas)


def run_perturbation(m: Model) -> Perturbation:
    """:func:`perturbation_experiment` on ``n_kick`` starts (stream "kick")."""
    s = m.settings
    x_T = initial_noise(s, s.n_kick, seeds(s)["kick"], m.device)
    return perturbation_experiment(
        m.denoiser, m.gaussian, x_T, m.sigmas, s.kick_features, s.kick, m.sigma_data
    )


def run_teleportation(m: Model) -> Teleportation:
    """:func:`teleportation_sweep` on ``n_fd`` starts (stream "fd"), FD to the test digits,
    the floor from shuffled training digits."""
    s = m.settings
    gen = seeds(s).generator("share")
    # the floor's shuffle has always been drawn after the explained-share noise: keep it
    torch.randn(m.test[: s.n_share].shape, generator=gen)
    floor = m.train[torch.randperm(len(m.train), generator=gen)]
    x_T = initial_noise(s, s.n_fd, seeds(s)["fd"], m.device)
    return teleportation_sweep(
        m.denoiser, m.gaussian, x_T, m.sigmas, s.skip_fractions, m.test, image_shape(s), floor
    )


def run_emergence(m: Model) -> Emergence:
    """:func:`feature_emergence` on ``n_emergence`` starts (stream "emergence") over a finer
    grid of ``emergence_steps``."""
    s = m.settings
    x_T = initial_noise(s, s.n_emergence, seeds(s)["emergence"], m.device)
    return feature_emergence(
        m.denoiser, m.gaussian, x_T, sampling_grid(s, s.emergence_steps), s.n_features
    )


@dataclass
class Results(Model):
    """:class:`Model` and every experiment's output; ``seconds``: wall time of each step."""

    ode_error: float = math.nan
    share: Shares | None = None
    pair: TrajectoryPair | None = None
    perturbation: Perturbation | None = None
    teleport: Teleportation | None = None
    emergence: Emergence | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def prepare(s: Settings) -> None:
    """Train the denoiser (or find it in the cache / shipped folder)."""
    train_denoiser(s)


def run(s: Settings) -> Results:
    """Compose the steps: :func:`setup`, then the six experiments, timed."""
    watch = Stopwatch()
    m = setup(s)
    watch.tick("fit and train")
    out = {}
    for name, key, experiment in (
        ("closed form vs ODE", "ode_error", run_closed_form),
        ("explained share", "share", run_explained_share),
        ("trajectories", "pair", run_trajectories),
        ("perturbation", "perturbation", run_perturbation),
        ("teleportation", "teleport", run_teleportation),
        ("feature emergence", "emergence", run_emergence),
    ):
        out[key] = experiment(m)
        watch.tick(name)
    return Results(**vars(m), **out, seconds=watch.seconds)


# ---- claims -------------------------------------------------------------------------------
def claims(r: Results) -> list[Claim]:
    """The card's claims, measured at this scale (criteria fixed before measuring)."""
    sc, s, e, p, t, sh = r.scale, r.settings, r.emergence, r.perturbation, r.teleport, r.share
    ratio_g = e.crossing_gaussian / e.sqrt_lambda
    ratio_l = e.crossing_learned / e.sqrt_lambda
    median = float(ratio_l.nanmedian()) if ratio_l.isfinite().any() else math.nan
    lo, hi = float(ratio_l.nan_to_num(0).min()), float(ratio_l.nan_to_num(0).max())
    out = [
        claim_below(
            "closed form = numerical PF-ODE (max rel. error)",
            "exact solution of the PF-ODE for Gaussian data",
            r.ode_error,
            1e-5,
            sc,
            f"fitted Gaussian of the digits, dopri5 at tol 1e-10, {s.ode_paths} paths",
        ),
        claim_below(
            "feature k fixed at sigma = sqrt(lambda_k): Gaussian (max |ratio - 1|)",
            "f_k = 1/sqrt(2) exactly at sigma = sqrt(lambda_k)",
            float((ratio_g - 1).abs().max()),
            0.02,
            sc,
            f"measured on analytic paths, top {len(ratio_g)} features; grid interpolation",
        ),
        Claim(
            "feature k fixed near sigma ~ sqrt(lambda_k): trained model (median ratio)",
            "high-variance features (outline) appear first, at sigma ~ sqrt(lambda_k)",
            median,
            "crossing / sqrt(lambda) median in [0.5, 2]",
            bool(0.5 <= median <= 2),
            sc,
            f"top {len(ratio_l)} features; ratios from {lo:.2f} to {hi:.2f}",
        ),
    ]
    low = sh.sigmas.argmin()
    for name, paper, star, note in (
        (
            "Gaussian explains >= 90% of the learned denoiser above sigma*",
            "the Gaussian solution predicts the early phase of sampling",
            sh.sigma_star,
            f"share {float(sh.learned[sh.sigmas.argmax()]):.3f} at sigma_max, "
            f"{float(sh.learned[low]):.3f} at sigma_min",
        ),
        (
            "... and >= 90% of the ideal denoiser of the training set above sigma*",
            "the Gaussian is the large-sigma limit of the data's denoiser",
            sh.sigma_star_ideal,
            "exact denoiser of the empirical training distribution (no network), "
            f"share {float(sh.ideal[low]):.3f} at sigma_min",
        ),
    ):
        found = f"sigma* = {star:.3g}" if star is not None else "no sigma* on the grid"
        crit = "share >= 0.9 at every grid sigma >= sigma*, sigma* exists"
        out.append(Claim(name, paper, found, crit, star is not None, sc, note))
    rho = spearman(p.sigmas_t, p.change.mean(0))
    gain = float((p.gain / p.predicted).median())
    best = t.fractions.tolist().index(t.best_fraction)
    out += [
        claim_above(
            "early kicks change the output more (Spearman of change vs sigma_t)",
            "early perturbations have a greater impact than late ones",
            rho,
            0,
            sc,
            f"kicks of {s.kick} x the state's scale along u_k, k in "
            f"{tuple(p.features.tolist())}; measured / predicted gain: median {gain:.2f}",
        ),
        claim_above(
            "NFE saved by teleportation at <= 10% FD loss",
            "15-30% of evaluations saved at near-unchanged FID (CIFAR-10)",
            t.nfe_saved,
            0.15,
            sc,
            f"skip {t.best_fraction:.0%} of {s.n_steps} Heun steps; FD "
            f"{float(t.fd[0]):.3g} -> {float(t.fd[best]):.3g} (floor {t.fd_floor:.3g}); "
            f"n = {s.n_fd}",
            inclusive=True,
        ),
    ]
    return out


# ---- figures ------------------------------------------------------------------------------
DASH, DOT = dict(dash="dash"), dict(dash="dot", color="gray")


def _line(x: Tensor | list[float], y: Tensor | list[float], name: str, **kw: object) -> go.Scatter:
    """A trace from tensors as plain floats (plotly converts tensors element by element)."""
    x, y = [v.detach().cpu().double().tolist() if isinstance(v, Tensor) else v for v in (x, y)]
    return go.Scatter(x=x, y=y, name=name, **kw)


def _curves(traces: list[go.Scatter], x: str, y: str, title: str, log_y: bool = False) -> go.Figure:
    """A figure of ``traces`` on a log sigma axis (the chapter's common layout)."""
    fig = go.Figure(traces)
    fig.update_layout(title=title, template="plotly_white", height=380, width=560)
    fig.update_xaxes(title=x, type="log")
    fig.update_yaxes(title=y, type="log" if log_y else "linear")
    return fig


def explained_share_figure(sh: Shares) -> go.Figure:
    """The share of the learned denoiser that the Gaussian explains, against sigma."""
    ideal = "ideal denoiser of the training set"
    traces = [
        _line(sh.sigmas, sh.learned, "trained net", mode="lines+markers"),
        _line(sh.sigmas, sh.ideal, ideal, mode="lines+markers", line=DASH),
    ]
    title = "How much of D_theta the Gaussian explains"
    fig = _curves(traces, "sigma", "explained share", title)
    fig.update_yaxes(range=[min(-0.05, float(sh.learned.min()) - 0.05), 1.05])
    fig.add_hline(y=0.9, line_dash="dot", annotation_text="0.9")
    if sh.sigma_star is not None:
        fig.add_vline(x=sh.sigma_star, line_dash="dash", annotation_text="sigma*")
    return fig


def feature_emergence_figure(e: Emergence) -> go.Figure:
    """Crossing sigma of each feature against sqrt(lambda_k), Gaussian and trained model."""
    ends = [float(e.sqrt_lambda.min()) / 2, float(e.sqrt_lambda.max()) * 2]
    text = [f"k = {k}" for k in e.features.tolist()]
    traces = [
        _line(ends, ends, "sigma = sqrt(lambda)", mode="lines", line=DOT),
        _line(e.sqrt_lambda, e.crossing_gaussian, "Gaussian", mode="markers", text=text),
        _line(e.sqrt_lambda, e.crossing_learned, "trained model", mode="markers", text=text),
    ]
    title = "Outline first: feature k appears near sigma ~ sqrt(lambda_k)"
    return _curves(traces, "sqrt(lambda_k)", "sigma where f_k = 1/sqrt(2)", title, log_y=True)


def feature_shares_figure(e: Emergence, features: tuple[int, ...] = (0, 3, 7)) -> go.Figure:
    """f_k(sigma) along the paths: trained (solid) and Gaussian (dashed), a few features."""
    traces = []
    for k in [k for k in features if k < len(e.features)]:
        traces.append(_line(e.sigmas, e.share_learned[:, k], f"k = {k} trained"))
        traces.append(_line(e.sigmas, e.share_gaussian[:, k], f"k = {k} Gaussian", line=DASH))
    title = "Share of each feature fixed in the x0-estimate"
    fig = _curves(traces, "sigma (sampling runs right)", "share f_k of the final value", title)
    fig.add_hline(y=1 / math.sqrt(2), line_dash="dot")
    fig.update_xaxes(autorange="reversed")
    return fig


def teleportation_figure(t: Teleportation) -> go.Figure:
    """Frechet distance against the fraction of skipped steps."""
    text = [f"NFE {n}" for n in t.nfe.tolist()]
    mode = "lines+markers+text"
    fig = go.Figure(
        _line(100 * t.fractions, t.fd, "FD", mode=mode, text=text, textposition="top center")
    )
    fig.add_hline(y=1.1 * float(t.fd[0]), line_dash="dot", annotation_text="FD(0) + 10%")
    if math.isfinite(t.fd_floor):
        fig.add_hline(y=t.fd_floor, line_dash="dash", annotation_text="train vs test")
    fig.update_layout(
        title="Teleportation: skip the first X% of steps with the closed form",
        template="plotly_white",
        height=380,
        width=560,
        xaxis_title="skipped steps X (%)",
        yaxis_title="digits Frechet distance",
    )
    return fig


def perturbation_figure(p: Perturbation) -> go.Figure:
    """Measured gain |delta x0| / delta against sigma_t, with the predicted gain."""
    traces = []
    for j, k in enumerate(p.features.tolist()):
        traces.append(_line(p.sigmas_t, p.gain[j], f"u_{k} measured", mode="markers"))
        predicted = f"u_{k} predicted sqrt(l/(l+s^2))"
        traces.append(_line(p.sigmas_t, p.predicted[j], predicted, mode="lines", line=DASH))
    title = "A kick at sigma_t reaches the image scaled by the gain"
    return _curves(traces, "sigma_t of the kick", "gain |change of x0| / kick", title, log_y=True)


def trajectories_figure(pr: TrajectoryPair, s: Settings, columns: int = 8) -> go.Figure:
    """x0-estimates along analytic (Gaussian) and learned paths: rows analytic / learned
    per sample, columns from sigma_max to 0."""
    from pflow_explore.viz import image_grid_figure

    cols = torch.linspace(0, len(pr.sigmas) - 1, columns).round().long()
    rows, titles = [], []
    for j in range(min(s.n_show, pr.analytic.shape[1])):
        for name, path in (("G", pr.analytic_x0), ("net", pr.learned_x0)):
            rows.append(path[cols, j])
            titles += [f"{name} {float(pr.sigmas[c]):.2g}" for c in cols.tolist()]
    images = torch.cat(rows).reshape(-1, *image_shape(s)).clamp(-1, 1)
    title = "x0-estimates: Gaussian (G) vs trained (net), sigma from 80 to 0"
    return image_grid_figure(images, nrow=columns, titles=titles, tile_px=56, title=title)


def rotation_figure(pr: TrajectoryPair) -> go.Figure:
    """Rotation residual (mean over paths) along the analytic and learned trajectories."""
    inner = pr.sigmas[1:-1]
    traces = [
        _line(inner, pr.residual_analytic.mean(1)[1:-1], "Gaussian"),
        _line(inner, pr.residual_learned.mean(1)[1:-1], "trained"),
    ]
    y = "share of x(sigma) - mu outside span{x_T, x_0}"
    fig = _curves(traces, "sigma", y, "Trajectories are nearly 2D rotations")
    fig.update_xaxes(autorange="reversed")
    return fig


def teleported_samples_figure(t: Teleportation, s: Settings, n: int = 8) -> go.Figure:
    """The first n samples (same x_T) for every skip fraction, one row each."""
    from pflow_explore.viz import image_grid_figure

    imgs = t.samples[:, :n].reshape(-1, *image_shape(s)).clamp(-1, 1)
    titles = [f"X={f:.0%}" if i == 0 else "" for f in t.fractions.tolist() for i in range(n)]
    title = "Samples from the same x_T, skipping X of the steps"
    return image_grid_figure(imgs, nrow=n, titles=titles, tile_px=48, title=title)


def figures(r: Results) -> dict[str, go.Figure]:
    """Every figure of the chapter, by name (``pflow-explore figures painters``)."""
    s, pair, tel, e = r.settings, r.pair, r.teleport, r.emergence
    return {
        "explained_share": explained_share_figure(r.share),
        "feature_emergence": feature_emergence_figure(e),
        "feature_shares": feature_shares_figure(e),
        "teleportation": teleportation_figure(tel),
        "teleported_samples": teleported_samples_figure(tel, s),
        "perturbation": perturbation_figure(r.perturbation),
        "trajectories": trajectories_figure(pair, s),
        "rotation": rotation_figure(pair),
    }


def preview() -> go.Figure:
    """2D Gaussian, rotating PF-ODE paths from noise to the data ellipse (closed form).

    The rotation form of the VP solution (``theory.gaussian_flow.rotation_form``),
    c_k(theta) = c_k(0) sqrt(cos^2 theta + lambda_k sin^2 theta), theta from 0 (noise) to
    pi/2 (data), evaluated directly: the sympy derivation behind ``GaussianFlow`` costs
    seconds on first use, too slow for the landing page.
    """
    from pflow_explore.viz import points_figure

    lam = torch.tensor([1.0, 0.03], dtype=torch.float64)
    angle = torch.tensor(0.5)
    rot = torch.stack(
        [torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])]
    ).double()
    c_T = torch.randn(40, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    theta = torch.linspace(0, math.pi / 2, 40, dtype=torch.float64)[:, None, None]
    paths = c_T * (theta.cos() ** 2 + lam * theta.sin() ** 2).sqrt()  # (40, 40, 2)
    xy = paths @ rot.T
    fig = points_figure(xy[-1], trajectories=xy)
    fig.update_layout(
        title=None, height=220, width=220, margin=dict(l=5, r=5, t=5, b=5), showlegend=False
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig
