"""Learning a score s = grad log rho from samples, and the divergence of a learned field
(docs/papers.md §12; "Score learning"; Boffi & Vanden-Eijnden 2023).

The states are particle systems: positions x and propulsions g, each (n, N, d) for n
configurations of N particles in d dimensions. A score function maps them to its two parts,

    score(x, g) -> (s_x, s_g),  s_x = grad_x log rho (or None where x carries no noise),
                                s_g = grad_g log rho,  each (n, N, d).

Every loss below is a per-particle mean (a scalar) of the denoising integrand

    |s(z')|^2 + 2 s(z') . xi / tau,    z' = z + tau xi,  xi ~ N(0, I),       (DSM)

whose minimiser over all functions is the score of the law of z' (integrate by parts: it is
E|s|^2 + 2 E div s = the implicit score-matching loss, up to a constant). Two ways to noise:

- :func:`denoising_loss`: a fixed tau = sigma, the minimiser is the score of rho * N(0, sigma^2)
  (g only when x has no noise, the paper's eps = 0 case);
- :func:`dynamics_denoising_loss`: one Euler-Maruyama step of the dynamics is the noise,
  z' = z + b dt + sqrt(2 D dt) xi, so z' is again distributed as rho (stationarity) and the
  minimiser is the score of rho itself.

Both are antithetic: the pair +-xi with the same z cancels the 2 s(z) . xi / tau term of
order 1/tau, whose variance would swamp a small tau (docs/papers.md).

:func:`block_hutchinson_divergence` estimates the divergence of each particle's own block,
div_{g_i} s_{g_i}, for all i with one backward pass (the paper's local g-part of the EPR).
:func:`aoup_dynamics_loss` is dynamics denoising with the AOUP's own drift and diffusion;
:func:`learned_aoup_epr` is the EPR a learned score gives, by both estimators of its g-part.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pflow_explore.datasets import particles
from pflow_explore.datasets.particles import AOUP
from pflow_explore.epr import (
    LocalEPR,
    aoup_drift,
    aoup_local_epr,
    local_epr_g_from_divergence,
    total_epr,
)

ScoreFn = Callable[[Tensor, Tensor], tuple[Tensor | None, Tensor]]  # (x, g) -> (s_x, s_g)
DriftFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]  # (x, g) -> (b_x, b_g)
FieldFn = Callable[[Tensor], Tensor]  # z (n, N, d) -> f(z) (n, N, d)


def denoising_integrand(s: Tensor, xi: Tensor, tau: float, sign: float = 1.0) -> Tensor:
    """|s|^2 + 2 sign s . xi / tau summed over the last axis (DSM at z' = z + sign tau xi).

    s, xi: (..., d) -> (...). Its expectation is minimal at the score of the law of z'."""
    return (s**2).sum(-1) + 2 * sign * (s * xi).sum(-1) / tau


def denoising_loss(
    score: ScoreFn,
    x: Tensor,
    g: Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
    noise_x: bool = True,
    box: float | None = None,
    antithetic: bool = True,
) -> Tensor:
    """Fixed-sigma denoising score matching (docs/papers.md).

    z' = z +- sigma xi (xi ~ N(0, I) on g, and on x when ``noise_x``; x wrapped into the
    periodic ``box``), the loss E[|s(z')|^2 + 2 s(z') . (+-xi) / sigma] over the noised parts,
    averaged over the two signs (one sign, +, when ``antithetic`` is False: same expectation,
    same minimiser, the score of rho * N(0, sigma^2); larger variance). ``noise_x=False``:
    noise on g only, the loss for eps = 0 (s_x is then not learned and may be None).
    x, g: (n, N, d). Returns the mean per particle (a scalar). xi_g is drawn before xi_x
    (both always, so the generator advances the same way in every variant).
    """
    xi_g = torch.randn(g.shape, generator=generator, dtype=g.dtype, device=g.device)
    xi_x = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    signs = (1.0, -1.0) if antithetic else (1.0,)
    total = torch.zeros((), dtype=x.dtype, device=x.device)
    for sign in signs:
        xp = particles.wrap(x + sign * sigma * xi_x, box) if noise_x else x
        s_x, s_g = score(xp, g + sign * sigma * xi_g)
        term = denoising_integrand(s_g, xi_g, sigma, sign)
        if noise_x:
            term = term + denoising_integrand(s_x, xi_x, sigma, sign)
        total = total + term.mean()
    return total / len(signs)


def dynamics_denoising_loss(
    score: ScoreFn,
    drift: DriftFn,
    diffusion: tuple[float, float],
    x: Tensor,
    g: Tensor,
    dt: float,
    generator: torch.Generator | None = None,
    box: float | None = None,
) -> Tensor:
    """ "Dynamics denoising" (docs/papers.md): one Euler-Maruyama step is the noise.

    For dx = b_x dt + sqrt(2 D_x) dW, dg = b_g dt + sqrt(2 D_g) dW' with ``drift(x, g) =
    (b_x, b_g)`` and ``diffusion = (D_x, D_g)`` (scalars):
    z' = z + b(z) dt +- sqrt(2 D dt) xi (antithetic), the loss
    E[|s(z')|^2 + 2 s(z') . (+-xi) / sqrt(2 D dt)] over the noisy parts (x only when
    D_x > 0; x' wrapped into ``box``). Because rho is stationary, z' is again distributed as
    rho (up to the O(dt) bias of one Euler step), so the minimiser is the score of rho
    itself, with no smoothing bias. x, g: (n, N, d) stationary samples. Returns the mean per
    particle (a scalar).
    """
    d_x, d_g = diffusion
    b_x, b_g = drift(x, g)
    mean_x, mean_g = x + b_x * dt, g + b_g * dt
    sd_x, sd_g = math.sqrt(2 * d_x * dt), math.sqrt(2 * d_g * dt)
    xi_x = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    xi_g = torch.randn(g.shape, generator=generator, dtype=g.dtype, device=g.device)
    total = torch.zeros((), dtype=x.dtype, device=x.device)
    for sign in (1.0, -1.0):
        xp = particles.wrap(mean_x + sign * sd_x * xi_x, box)
        s_x, s_g = score(xp, mean_g + sign * sd_g * xi_g)
        term = denoising_integrand(s_g, xi_g, sd_g, sign)
        if d_x > 0:
            term = term + denoising_integrand(s_x, xi_x, sd_x, sign)
        total = total + term.mean()
    return total / 2


def aoup_dynamics_loss(
    score: ScoreFn, model: AOUP, x: Tensor, g: Tensor, dt: float, generator: torch.Generator
) -> Tensor:
    """:func:`dynamics_denoising_loss` for active Ornstein-Uhlenbeck particles: drift
    (v0 g - A x + F(x), -gamma g), diffusion (eps, gamma), x wrapped into ``model.box``
    (docs/papers.md). x, g: (n, N, d) stationary samples -> a scalar."""
    drift = lambda xx, gg: aoup_drift(model, xx, gg)  # noqa: E731
    noise = (model.eps, model.gamma)
    return dynamics_denoising_loss(score, drift, noise, x, g, dt, generator, model.box)


def aoup_minibatch_loss(
    score: ScoreFn,
    model: AOUP,
    x: Tensor,
    g: Tensor,
    batch: int,
    dt: float,
    generator: torch.Generator,
) -> Tensor:
    """:func:`aoup_dynamics_loss` on ``batch`` samples of x, g (n, N, d) drawn with
    replacement by ``generator`` (first the indices, then the loss's own noise)."""
    idx = torch.randint(x.shape[0], (batch,), generator=generator, device=x.device)
    return aoup_dynamics_loss(score, model, x[idx], g[idx], dt, generator)


def block_hutchinson_divergence(
    field: FieldFn, z: Tensor, generator: torch.Generator | None = None, probes: int = 1
) -> Tensor:
    """Divergence of every block's own part, div_{z_i} f_i = tr J_ii, unbiased (Hutchinson
    with one Rademacher probe for all blocks at once).

    z: (n, N, d), a block is one z_i (d,), f = ``field``(z) (n, N, d), J_ij = d f_i / d z_j.
    With u uniform on {-1, 1}^(N d) and w = grad_z (f . u): E[u_i . w_i] =
    sum_j E[u_i^T J_ji^T u_j] = tr J_ii, so one backward pass gives all N traces. Returns
    (n, N), averaged over ``probes``; summed over blocks it is the full divergence tr J.
    """
    out = torch.zeros(z.shape[:2], dtype=z.dtype, device=z.device)
    for _ in range(probes):
        zz = z.detach().requires_grad_(True)
        with torch.enable_grad():
            f = field(zz)
            u = torch.randint(0, 2, z.shape, generator=generator, device=z.device).to(z) * 2 - 1
            (w,) = torch.autograd.grad((f * u).sum(), zz)
        out = out + (u * w).sum(-1).detach()
    return out / probes


def g_block_divergence(
    score: ScoreFn, x: Tensor, g: Tensor, generator: torch.Generator | None = None, probes: int = 1
) -> Tensor:
    """div_{g_i} s_{g_i} for every particle i, (n, N): :func:`block_hutchinson_divergence`
    of g -> s_g(x, g) at fixed x. x, g: (n, N, d)."""
    return block_hutchinson_divergence(lambda gg: score(x, gg)[1], g, generator, probes)


@torch.no_grad()
def evaluate_score(
    score: ScoreFn, x: Tensor, g: Tensor, batch: int = 64
) -> tuple[Tensor | None, Tensor]:
    """score(x, g) in batches of ``batch`` configurations without gradients: (s_x or None,
    s_g), each (n, N, d) for x, g (n, N, d)."""
    parts_x, parts_g = [], []
    for xb, gb in zip(x.split(batch), g.split(batch), strict=True):
        s_x, s_g = score(xb, gb)
        parts_x.append(s_x)
        parts_g.append(s_g)
    s_x = None if parts_x[0] is None else torch.cat(parts_x)
    return s_x, torch.cat(parts_g)


@dataclass
class LearnedEPR:
    """The EPR of a learned score at n samples (``epr.total_epr`` of each local part): total,
    x_part (NaN when eps = 0), g_part = E gamma |g + s_g|^2, g_div = E(-gamma div_g s_g -
    gamma d) (the paper's divergence form); per_sample (n,): v . D^-1 v per sample, on the CPU;
    local: the velocities and local parts (``epr.LocalEPR``) at the samples."""

    total: float
    x_part: float
    g_part: float
    g_div: float
    per_sample: Tensor
    local: LocalEPR


def learned_aoup_epr(
    model: AOUP,
    score: ScoreFn,
    x: Tensor,
    g: Tensor,
    generator: torch.Generator | None = None,
    probes: int = 1,
    batch: int = 64,
) -> LearnedEPR:
    """The :class:`LearnedEPR` of ``score`` at stationary samples x, g (n, N, d) of
    ``model``: the score evaluated ``batch`` samples at a time (:func:`evaluate_score`), then
    div_{g_i} s_{g_i} by :func:`g_block_divergence` with ``probes`` probes from
    ``generator`` (its only draws)."""
    loc = aoup_local_epr(model, x, g, *evaluate_score(score, x, g, batch))
    div = g_block_divergence(score, x, g, generator, probes=probes)
    x_part = math.nan if loc.x_part is None else total_epr(loc.x_part)
    g_div = total_epr(local_epr_g_from_divergence(div, model.gamma, x.shape[-1]))
    per_sample = loc.per_particle.sum(-1).cpu()
    total = total_epr(loc.per_particle)
    return LearnedEPR(total, x_part, total_epr(loc.g_part), g_div, per_sample, loc)
