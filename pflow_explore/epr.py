"""The probability velocity of a stationary SDE and where it produces entropy
(docs/papers.md §12; "Probability flow and entropy production"; Boffi & Vanden-Eijnden
2023).

For dz = b(z) dt + sqrt(2 D) dW with D diagonal and stationary density rho, score
s = grad log rho:

    v = b - D s                       the probability velocity (here, everywhere in this
                                      module; stationarity: div(rho v) = 0, rho v the current)
    ep(z) = v . D^-1 v                the local entropy production rate (noisy coordinates)
    EPR = E_rho[v . D^-1 v]           the total entropy production rate, its average.

v = 0 exactly when the system is in equilibrium (b = -D grad U, rho ~ e^-U: detailed
balance). Decompositions used by chapter 12: per particle and per degree of freedom
(:func:`aoup_local_epr`, x- and g-parts), per region of space (:func:`per_region_epr`), the
g-part by integration by parts (:func:`local_epr_g_from_divergence`), and the current
rho v on a grid (:func:`probability_current_field`; two velocities at the same samples,
learned and exact: :func:`plane_currents`).

(``theory.linear_sde.linear_probability_velocity(B, D, S, z)`` is the same object,
v = b - D s, for a linear SDE in closed form.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pflow_explore.datasets import particles
from pflow_explore.datasets.particles import AOUP


# ---- any SDE with diagonal diffusion ---------------------------------------------------------
def probability_velocity(drift: Tensor, diffusion: float | Tensor, score: Tensor) -> Tensor:
    """v = b - D s (paper). drift b, score s: (..., n); diffusion: the diagonal of D, a scalar
    or (n,). Returns v (..., n)."""
    return drift - diffusion * score


def local_epr(velocity: Tensor, diffusion: float | Tensor) -> Tensor:
    """The local entropy production rate v . D^-1 v summed over the last axis (paper).

    velocity (..., n); diffusion: the diagonal of D (scalar or (n,)), all > 0 (leave out the
    coordinates without noise). Returns (...)."""
    if isinstance(diffusion, Tensor):
        return (velocity**2 / diffusion).sum(-1)
    return (velocity**2).sum(-1) / diffusion


def total_epr(local: Tensor) -> float:
    """EPR = E_rho[sum of the local parts]: local (n, ...) at n samples of rho, summed over
    every axis but the first (particles, ...), averaged over the samples."""
    return float(local.reshape(local.shape[0], -1).sum(-1).mean())


# ---- active Ornstein-Uhlenbeck particles -----------------------------------------------------
def aoup_drift(model: AOUP, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """b = (b_x, b_g) = (v0 g - A x + F(x), -gamma g) for x, g (n, N, d) (docs/papers.md);
    the diffusion is D = (eps, gamma)."""
    return particles.drift(model, x, g), -model.gamma * g


def aoup_probability_velocity(
    model: AOUP, x: Tensor, g: Tensor, s_x: Tensor | None, s_g: Tensor
) -> tuple[Tensor, Tensor]:
    """v = b - D s for AOUPs (paper): v_x = v0 g - A x + F(x) - eps s_x,
    v_g = -gamma g - gamma s_g = -gamma (g + s_g).

    x, g, s_x, s_g: (n, N, d) -> (v_x, v_g). With eps = 0 (or s_x None), v_x = b_x."""
    b_x = particles.drift(model, x, g)
    v_x = b_x if model.eps == 0 or s_x is None else probability_velocity(b_x, model.eps, s_x)
    return v_x, -model.gamma * (g + s_g)  # factored: one rounding fewer than b_g - gamma s_g


@dataclass
class LocalEPR:
    """The probability velocity and the local EPR per particle at n configurations.

    v_x (n, N, d) or None (eps = 0: x is not noisy); v_g (n, N, d); x_part (n, N) =
    |v_{x_i}|^2 / eps or None; g_part (n, N) = |v_{g_i}|^2 / gamma. Averaged over the
    configurations each is particle i's share of the EPR by degree of freedom.
    """

    v_x: Tensor | None
    v_g: Tensor
    x_part: Tensor | None
    g_part: Tensor

    @property
    def per_particle(self) -> Tensor:
        """x_part + g_part (n, N) (g_part alone when eps = 0)."""
        return self.g_part if self.x_part is None else self.x_part + self.g_part


def aoup_local_epr(model: AOUP, x: Tensor, g: Tensor, s_x: Tensor | None, s_g: Tensor) -> LocalEPR:
    """Per-particle EPR v_i . D_i^-1 v_i split into x- and g-parts (docs/papers.md);
    :func:`total_epr` of ``per_particle`` is the EPR. x, g: (n, N, d)."""
    v_x, v_g = aoup_probability_velocity(model, x, g, s_x, s_g)
    x_part = None if model.eps == 0 or s_x is None else local_epr(v_x, model.eps)
    return LocalEPR(v_x, v_g, x_part, local_epr(v_g, model.gamma))


def local_epr_g_from_divergence(div_g: Tensor, gamma: float, dim: int = 2) -> Tensor:
    """The paper's per-particle g-part -gamma div_{g_i} s_{g_i} - gamma d, (n, N), from
    div_g (n, N): equal in expectation over rho to gamma |g_i + s_{g_i}|^2 (integrate by
    parts, g ~ N(0, I)), pointwise different. (The sample mean of it is
    ``theory.linear_sde.per_particle_epr_g_from_divergence``.)"""
    return -gamma * div_g - gamma * dim


# ---- decompositions in space -----------------------------------------------------------------
def _binned_sums(rows: Tensor, cols: Tensor, bins: int, values: Tensor) -> tuple[Tensor, Tensor]:
    """Per cell of a bins x bins grid, flattened row-major: the sums of ``values`` (m,) or
    (m, k) and the counts, for points in cells (rows, cols) (m,) each. float64."""
    flat = rows * bins + cols
    sums = torch.zeros(bins * bins, *values.shape[1:], dtype=torch.float64)
    counts = torch.zeros(bins * bins, dtype=torch.float64)
    ones = torch.ones(flat.shape, dtype=torch.float64)
    return sums.index_add_(0, flat, values), counts.index_add_(0, flat, ones)


def per_region_epr(
    x: Tensor, values: Tensor, box: float, bins: int
) -> tuple[Tensor, Tensor, Tensor]:
    """EPR density on a bins x bins grid over the box [-L/2, L/2)^2: the sum of per-particle
    EPR in each cell, averaged over configurations, divided by the cell area.

    x: (n, N, 2), values (n, N). Returns (edges (bins + 1,), density (bins, bins) indexed
    [row y, column x], number density (bins, bins)). Summed times the cell area, the EPR
    density gives the total EPR.
    """
    edges = torch.linspace(-box / 2, box / 2, bins + 1, dtype=torch.float64)
    xw = particles.wrap(x.double().cpu(), box).reshape(-1, 2)
    cols = torch.bucketize(xw[:, 0].contiguous(), edges[1:-1])
    rows = torch.bucketize(xw[:, 1].contiguous(), edges[1:-1])
    epr, counts = _binned_sums(rows, cols, bins, values.double().cpu().reshape(-1))
    norm = x.shape[0] * (box / bins) ** 2  # configurations x cell area
    return edges, (epr / norm).reshape(bins, bins), (counts / norm).reshape(bins, bins)


def probability_current_field(
    points: Tensor,
    velocity: Tensor,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    bins: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The current J = rho v binned on a grid, from samples z_k ~ rho and v(z_k).

    J(cell) = sum_{z_k in cell} v(z_k) / (n area): a Monte Carlo estimate of the mean of
    rho v over the cell. points, velocity: (n, 2) (two coordinates of the state, e.g. one
    particle's (x_1, g_1)). Returns centres_x (bins,), centres_y (bins,), J (bins, bins, 2)
    and rho (bins, bins), indexed [row y, column x].
    """
    p = points.double().cpu()
    v = velocity.double().cpu()
    ex = torch.linspace(*xlim, bins + 1, dtype=torch.float64)
    ey = torch.linspace(*ylim, bins + 1, dtype=torch.float64)
    inside = (p[:, 0] >= ex[0]) & (p[:, 0] < ex[-1]) & (p[:, 1] >= ey[0]) & (p[:, 1] < ey[-1])
    cols = torch.bucketize(p[inside, 0].contiguous(), ex[1:-1])
    rows = torch.bucketize(p[inside, 1].contiguous(), ey[1:-1])
    current, rho = _binned_sums(rows, cols, bins, v[inside])
    norm = p.shape[0] * float((ex[1] - ex[0]) * (ey[1] - ey[0]))  # samples x cell area
    return (
        (ex[1:] + ex[:-1]) / 2,
        (ey[1:] + ey[:-1]) / 2,
        (current / norm).reshape(bins, bins, 2),
        (rho / norm).reshape(bins, bins),
    )


@dataclass
class PlaneCurrents:
    """Two currents rho v binned on one grid at the same samples: cx, cy (bins,) cell
    centres, rho (bins, bins), J_learned and J_exact (bins, bins, 2), indexed [row y, column x]."""

    cx: Tensor
    cy: Tensor
    rho: Tensor
    J_learned: Tensor
    J_exact: Tensor


def plane_currents(
    points: Tensor,
    v_learned: Tensor,
    v_exact: Tensor,
    xlim: tuple[float, float],
    ylim: tuple[float, float],
    bins: int,
) -> PlaneCurrents:
    """:func:`probability_current_field` of a learned and an exact velocity (n, 2) at the
    same samples ``points`` (n, 2) of rho, on one grid."""
    cx, cy, J_learned, rho = probability_current_field(points, v_learned, xlim, ylim, bins)
    J_exact = probability_current_field(points, v_exact, xlim, ylim, bins)[2]
    return PlaneCurrents(cx, cy, rho, J_learned, J_exact)


def linear_current_grid(B: Tensor, D: Tensor, S: Tensor, lin: Tensor) -> tuple[Tensor, Tensor]:
    """The exact stationary current of dz = -B z dt + sqrt(2 D) dW in 2D, z ~ N(0, S), on
    the grid lin x lin (k,): rho(z) = exp(-z . S^-1 z / 2) (unnormalised) and
    J = rho M z, M = -B + D S^-1 (the velocity v = b - D s with s = -S^-1 z). B, S (2, 2),
    D (2,) its diagonal. Returns rho (k, k) and J (k, k, 2), indexed [row y, column x]."""
    k, S_inv = lin.shape[0], torch.linalg.inv(S)
    M = -B + torch.diag(D) @ S_inv
    gx, gy = torch.meshgrid(lin, lin, indexing="xy")
    z = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    rho = torch.exp(-0.5 * (z @ S_inv * z).sum(-1))
    return rho.reshape(k, k), (rho[:, None] * (z @ M.T)).reshape(k, k, 2)


def trapped_plane_currents(
    A: float, v0: float, gamma: float, eps: float, x: Tensor, g: Tensor, local: LocalEPR,
    bins: int = 12,
) -> PlaneCurrents:  # fmt: skip
    """The current of one trapped AOUP (trap A, speed v0, gamma, eps) in its (x_1, g_1)
    plane at samples x, g (n, 1, d): learned (the velocities in ``local``) and exact
    (v = M z of the Lyapunov solution, ``theory.linear_sde``), binned by :func:`plane_currents`
    over +-2.5 standard deviations of each coordinate."""
    from pflow_explore.theory import linear_sde as ls  # imports sympy: not at module import

    B, D, S = ls.spring_network([[0.0]], A, 0.0, v0, gamma, eps)
    z = torch.stack([x[:, 0, 0], g[:, 0, 0]], dim=-1).double().cpu()
    lims = ((-2.5 * math.sqrt(S[0, 0]), 2.5 * math.sqrt(S[0, 0])), (-2.5, 2.5))
    v_learned = torch.stack([local.v_x[:, 0, 0], local.v_g[:, 0, 0]], -1)
    return plane_currents(z, v_learned, ls.linear_probability_velocity(B, D, S, z), *lims, bins)
