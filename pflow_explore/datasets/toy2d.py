"""Two-dimensional toy densities: the pictures every flow chapter starts from.

Two kinds:

- Gaussian mixtures (:func:`single_gaussian`, :func:`eight_gaussians`, :func:`random_mixture`)
  are returned as :class:`~pflow_explore.datasets.mixture.GaussianMixture` objects, so they
  have an exact log-density and score (and, in ``theory/``, exact PF-ODE velocities);
- samplers without a closed-form score (:func:`two_moons`, :func:`checkerboard`,
  :func:`spirals`, :func:`concentric_rings`) return samples only; the checkerboard also has
  its exact (piecewise-constant) log-density :func:`checkerboard_log_prob`.

Every sampler has the signature ``fn(n, generator=None, **parameters)`` (the generator
second, so any of them can be called as ``fn(n, generator)``) and returns float32 samples
of shape (n, 2), roughly unit scale (the std of each coordinate is of order 1-2), on the
CPU, reproducible from a ``torch.Generator``.
:data:`TOY_2D` maps short names to ``(n, generator) -> (n, 2)`` samplers and
:func:`sample_toy` draws from one by name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
from torch import Tensor

from .mixture import GaussianMixture

Sampler = Callable[..., Tensor]

# The "gaussian" entry of TOY_2D is correlated so that it is not the standard-normal source.
GAUSSIAN_2D_MEAN = (0.5, -0.5)
GAUSSIAN_2D_COV = ((1.0, 0.8), (0.8, 1.0))
# The "mixture" entry of TOY_2D: a fixed random mixture, the same in every session.
MIXTURE_2D_COMPONENTS = 5
MIXTURE_2D_SEED = 0


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of samples) must be an int >= 1, got {n!r}")
    return n


def _check_nonneg(name: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _randn(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.randn(n, 2, generator=generator)


# ----------------------------------------------------------------------- Gaussian mixtures


def single_gaussian(
    mean: Sequence[float] | Tensor = (0.0, 0.0),
    cov: Sequence[Sequence[float]] | Tensor | None = None,
) -> GaussianMixture:
    """One Gaussian N(mean, cov) as a 1-component mixture; cov defaults to the identity.

    mean: (d,), cov: (d, d) symmetric positive definite. p(x) = N(x; m, C).
    """
    mean_t = torch.as_tensor(mean, dtype=torch.float64)
    if mean_t.dim() != 1:
        raise ValueError(f"mean must be a vector (d,), got shape {tuple(mean_t.shape)}")
    d = mean_t.shape[0]
    cov_t = (
        torch.eye(d, dtype=torch.float64)
        if cov is None
        else torch.as_tensor(cov, dtype=torch.float64)
    )
    if cov_t.shape != (d, d):
        raise ValueError(f"cov must be ({d}, {d}) to match mean, got {tuple(cov_t.shape)}")
    return GaussianMixture(torch.ones(1), mean_t[None], cov_t[None])


def eight_gaussians(radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """Ring of 8 equal isotropic Gaussians: p(x) = 1/8 sum_k N(x; r (cos a_k, sin a_k), s^2 I).

    a_k = 2 pi k / 8, r = ``radius``, s = ``std`` (the per-axis standard deviation of each
    component). Per-coordinate variance of the whole mixture: r^2 / 2 + s^2.

    Note: torchcfm's ``sample_8gaussians`` passes sqrt(var) where a covariance is expected,
    so its components have per-axis std 0.1**0.25 ~ 0.56 (and radius 5); this one uses the
    std stated. Pass ``std=0.1**0.25`` (and rescale) to match torchcfm.
    """
    _check_nonneg("radius", radius)
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"std must be a finite number > 0, got {std!r}")
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture.isotropic(means, std)


def random_mixture(
    k: int,
    dim: int = 2,
    generator: torch.Generator | None = None,
    mean_scale: float = 1.5,
    std_range: tuple[float, float] = (0.15, 0.5),
) -> GaussianMixture:
    """A random K-component mixture with random means, SPD covariances and weights.

    mu_k ~ N(0, mean_scale^2 I); C_k = Q_k diag(s_k^2) Q_k^T with Q_k a random rotation and
    each s_k,i ~ U(std_range) (so C_k is symmetric positive definite with eigenvalues in
    std_range^2); w_k proportional to 0.5 + U(0, 1) (no vanishing component).
    Returns a :class:`GaussianMixture` with means (K, dim), covs (K, dim, dim).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (number of components) must be an int >= 1, got {k!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1, got {dim!r}")
    lo, hi = std_range
    if not 0 < lo <= hi:
        raise ValueError(f"std_range must satisfy 0 < low <= high, got {std_range!r}")
    f64 = torch.float64
    means = mean_scale * torch.randn(k, dim, generator=generator, dtype=f64)
    q, r = torch.linalg.qr(torch.randn(k, dim, dim, generator=generator, dtype=f64))
    # Fix the QR sign ambiguity so Q is Haar-distributed rather than biased.
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    stds = lo + (hi - lo) * torch.rand(k, dim, generator=generator, dtype=f64)
    covs = q @ torch.diag_embed(stds**2) @ q.transpose(-1, -2)
    covs = 0.5 * (covs + covs.transpose(-1, -2))  # exact symmetry despite rounding
    weights = 0.5 + torch.rand(k, generator=generator, dtype=f64)
    return GaussianMixture(weights, means, covs)


# ------------------------------------------------------------- samplers without a score


def two_moons(
    n: int, generator: torch.Generator | None = None, noise: float = 0.05, scale: float = 2.0
) -> Tensor:
    """Two interleaved half circles (as sklearn's ``make_moons``, centred and scaled), (n, 2).

    With a ~ U(0, pi) and a fair coin c: upper moon (cos a, sin a), lower moon
    (1 - cos a, 1/2 - sin a); then x = scale * (moon - (1/2, 1/4) + noise * eps), eps ~ N(0, I).
    ``noise`` is in units of the moon radius (sklearn's convention, before scaling).
    """
    _check_n(n)
    _check_nonneg("noise", noise)
    a = math.pi * torch.rand(n, generator=generator)
    lower = torch.rand(n, generator=generator) < 0.5
    x = torch.where(lower, 1 - torch.cos(a), torch.cos(a))
    y = torch.where(lower, 0.5 - torch.sin(a), torch.sin(a))
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) + noise * _randn(n, generator)
    return scale * pts


def checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the 8 black squares of a 4x4 board on [-2, 2]^2, shape (n, 2).

    Cell (i, j) = [-2 + i, -1 + i) x [-2 + j, -1 + j) is black when i + j is even (the
    FFJORD / torchcfm convention); p(x) = 1/8 on black cells, 0 elsewhere.
    """
    _check_n(n)
    cell = torch.randint(8, (n,), generator=generator)
    i = cell // 2
    j = 2 * (cell % 2) + (i % 2)  # the two black cells of column i have j = i mod 2 (+2)
    u = torch.rand(n, 2, generator=generator)
    return torch.stack([i, j], dim=1).float() - 2.0 + u


def checkerboard_log_prob(x: Tensor) -> Tensor:
    """Exact log-density of :func:`checkerboard`: log(1/8) on black cells, -inf elsewhere.

    x: (n, 2) -> (n,), same floating dtype as x (float32 for integer input).
    """
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must be (n, 2), got shape {tuple(x.shape)}")
    x = x if x.is_floating_point() else x.float()
    ij = torch.floor(x + 2.0)
    inside = ((ij >= 0) & (ij <= 3)).all(dim=1)
    black = (ij.sum(dim=1) % 2) == 0
    out = torch.full(x.shape[:1], -math.inf, dtype=x.dtype, device=x.device)
    return out.masked_fill(inside & black, -math.log(8.0))


def checkerboard_to_white(x: Tensor) -> Tensor:
    """Points (n, 2) moved one square to the right, wrapping in [-2, 2): a point on a black
    square of :func:`checkerboard` lands on a white one (a wrong-support control)."""
    return torch.stack([(x[:, 0] + 3) % 4 - 2, x[:, 1]], 1)


def spirals(
    n: int,
    generator: torch.Generator | None = None,
    noise: float = 0.1,
    turns: float = 1.5,
    max_radius: float = 3.0,
) -> Tensor:
    """Two interleaved Archimedean spirals, shape (n, 2).

    theta = sqrt(u) * 2 pi turns with u ~ U(0, 1) (the sqrt makes points roughly uniform
    along the arc), r = max_radius * theta / (2 pi turns), x = +/- r (cos theta, sin theta)
    + noise * eps: the second spiral is the first rotated by pi.
    """
    _check_n(n)
    _check_nonneg("noise", noise)
    if not turns > 0 or not max_radius > 0:
        raise ValueError(f"turns and max_radius must be > 0, got {turns!r}, {max_radius!r}")
    theta_max = 2 * math.pi * turns
    theta = torch.sqrt(torch.rand(n, generator=generator)) * theta_max
    r = max_radius * theta / theta_max
    sign = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    pts = (sign * r)[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    return pts + noise * _randn(n, generator)


def concentric_rings(
    n: int,
    generator: torch.Generator | None = None,
    radii: Sequence[float] = (1.0, 2.0),
    noise: float = 0.08,
) -> Tensor:
    """Concentric circles, shape (n, 2): x = r_c (cos a, sin a) + noise * eps.

    a ~ U(0, 2 pi); ring c is chosen with probability r_c / sum(r) (proportional to its
    length, so points are uniform along the total length).
    """
    _check_n(n)
    _check_nonneg("noise", noise)
    r = torch.as_tensor(radii, dtype=torch.float32)
    if r.dim() != 1 or r.numel() < 1 or (r <= 0).any():
        raise ValueError(f"radii must be a non-empty sequence of numbers > 0, got {radii!r}")
    ring = torch.multinomial(r / r.sum(), n, replacement=True, generator=generator)
    a = 2 * math.pi * torch.rand(n, generator=generator)
    pts = r[ring][:, None] * torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    return pts + noise * _randn(n, generator)


# ---------------------------------------------------------------------------- registry


@lru_cache(maxsize=1)
def _fixed_mixture() -> GaussianMixture:
    g = torch.Generator().manual_seed(MIXTURE_2D_SEED)
    return random_mixture(MIXTURE_2D_COMPONENTS, 2, generator=g)


TOY_2D_MIXTURES: dict[str, Callable[[], GaussianMixture]] = {
    "gaussian": lambda: single_gaussian(GAUSSIAN_2D_MEAN, GAUSSIAN_2D_COV),
    "eight_gaussians": eight_gaussians,
    "mixture": _fixed_mixture,
}
"""The :data:`TOY_2D` entries with exact log-density and score, as GaussianMixture builders."""


def _mixture_sampler(name: str) -> Sampler:
    mixture = functools.cache(TOY_2D_MIXTURES[name])  # built once: a training step draws a batch

    def sample(n: int, generator: torch.Generator | None = None) -> Tensor:
        return mixture().sample(_check_n(n), generator)

    sample.__name__ = name
    sample.__doc__ = f"(n, generator) -> (n, 2) samples of TOY_2D_MIXTURES[{name!r}]()."
    return sample


TOY_2D: dict[str, Sampler] = {
    "gaussian": _mixture_sampler("gaussian"),
    "eight_gaussians": _mixture_sampler("eight_gaussians"),
    "two_moons": two_moons,
    "checkerboard": checkerboard,
    "spirals": spirals,
    "rings": concentric_rings,
    "mixture": _mixture_sampler("mixture"),
}
"""Name -> sampler ``(n, generator=None) -> (n, 2)`` float32, default parameters."""


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n samples (n, 2) float32 from the toy density ``name`` (a key of :data:`TOY_2D`)."""
    if name not in TOY_2D:
        raise ValueError(f"unknown toy density {name!r}; valid names: {', '.join(TOY_2D)}")
    return TOY_2D[name](_check_n(n), generator=generator)
