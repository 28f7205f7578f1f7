"""Chapter 12: the probability flow of active particles and where entropy is produced
(Boffi & Vanden-Eijnden 2023, card 12_active_matter).

Active Ornstein-Uhlenbeck particles (``datasets.particles``) have a stationary density rho
over positions x and propulsions g that nobody can write down. Its score s = grad log rho
can be *learned* from samples, and with the known drift b and diffusion D it gives the
probability velocity v = b - D s: the object of physics here, not a sampler. From v:

- the entropy production rate EPR = E[v . D^-1 v] (:func:`total_epr`), split per particle,
  per region and per degree of freedom (:func:`local_epr`, :func:`per_region_epr`);
- the probability current rho v on a grid (:func:`probability_current_field`).

The named steps:

1. score losses: :func:`denoising_loss` (fixed sigma, antithetic, optionally g only, the
   eps = 0 case) and :func:`dynamics_denoising_loss` (one Euler-Maruyama step of the
   dynamics is the noise, antithetic);
2. networks: :class:`TrapScore` (an MLP conditioned on v0, one network for the whole
   sweep), :class:`ChainScore` and :class:`PropulsionScore` (the local transformer of
   ``nets.local_transformer``: the same weights at any N);
3. the experiments: :func:`trap_sweep` (learned vs exact EPR across v0),
   :func:`ring_transfer` (per-particle EPR of a spring ring vs the modal formula, trained at
   one N, evaluated at a larger N), :func:`mips_local_epr` (a small MIPS box: the local
   EPR map and its interface / bulk ratio, :func:`phase_labels`), :func:`mips_phi_sweep`
   and :func:`mips_movie`.

Shapes: particle states are (n, N, d): n configurations of N particles in d = 2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import plotly.graph_objects as go
import torch
from torch import Tensor, nn

from pflow_explore import cache, scale
from pflow_explore.claims import Claim, claim_within
from pflow_explore.datasets import particles
from pflow_explore.datasets.particles import AOUP
from pflow_explore.nets.local_transformer import LocalTransformer, knn
from pflow_explore.training import FitResult, fit_cached

CHAPTER = "active_matter"
VERSION = 1  # part of every cache key: bump when simulation or training code changes
ScoreFn = Callable[[Tensor, Tensor], tuple[Tensor | None, Tensor]]  # (x, g) -> (s_x, s_g)


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter. ``scale``: the preset's name.

    Trap (experiment 1): one particle in a trap A, propulsion gamma, noise eps, at each
    v0 of ``trap_v0s``; ``trap_samples`` training and ``trap_test`` held-out samples per
    v0; an MLP (trap_hidden x trap_depth) conditioned on v0, ``trap_steps`` of Adam.
    Ring (experiment 2): ``ring_n`` particles on a spring ring (spring k, trap A, ...),
    rest sites ``ring_spacing`` apart on a periodic line; a local transformer (ring_knn
    neighbours, ring_width x ring_layers) trained on ``ring_samples`` configurations and
    evaluated on ``ring_test`` configurations at ``ring_n`` and at each of ``ring_n_eval``.
    MIPS (experiment 3): ``mips_n`` soft discs at packing fraction ``mips_phi`` (A = 0,
    eps = 0), ``mips_replicas`` replicas thermalized for ``mips_thermalize`` time units,
    then ``mips_frames`` frames ``mips_frame_every`` apart; g-denoising at ``mips_sigma``;
    ``mips_phis``: packing fractions where the trained network is evaluated (EPR vs phi),
    ``mips_eval_n``: a larger system evaluated with chunked inference (0: none).
    ``dyn_dt``: the step of the dynamics-denoising loss; ``sim_dt``: the simulator's step
    for the linear systems.
    """

    scale: str
    # trapped AOUP
    trap_v0s: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    trap_A: float = 1.0
    trap_gamma: float = 1.0
    trap_eps: float = 1.0
    trap_samples: int = 65536
    trap_test: int = 8192
    trap_hidden: int = 64
    trap_depth: int = 3
    trap_steps: int = 1500
    trap_batch: int = 256
    trap_lr: float = 3e-3
    # spring ring
    ring_n: int = 64
    ring_n_eval: tuple[int, ...] = (256,)
    ring_v0: float = 2.0
    ring_A: float = 1.0
    ring_k: float = 1.0
    ring_gamma: float = 1.0
    ring_eps: float = 1.0
    ring_spacing: float = 4.0
    ring_samples: int = 512
    ring_test: int = 64
    ring_knn: int = 8
    ring_width: int = 32
    ring_layers: int = 2
    ring_heads: int = 4
    ring_steps: int = 800
    ring_batch: int = 8
    ring_lr: float = 2e-3
    # MIPS
    mips_n: int = 256
    mips_phi: float = 0.5
    mips_v0: float = 0.1
    mips_gamma: float = 0.002
    mips_radius: float = 1.0
    mips_dt: float = 0.25
    mips_replicas: int = 2
    mips_thermalize: float = 2000.0
    mips_frames: int = 16
    mips_frame_every: float = 25.0
    mips_sigma: float = 0.01
    mips_knn: int = 12
    mips_width: int = 32
    mips_layers: int = 2
    mips_heads: int = 4
    mips_steps: int = 800
    mips_batch: int = 2
    mips_lr: float = 2e-3
    mips_phis: tuple[float, ...] = (0.3, 0.7)
    mips_sweep_replicas: int = 1
    mips_eval_n: int = 1024
    mips_eval_chunk: int = 256
    movie_frames: int = 40
    movie_every: float = 5.0
    # shared
    dyn_dt: float = 1e-3
    sim_dt: float = 0.01
    ema_decay: float = 0.995
    threads: int | None = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.trap_v0s) < 1 or any(not v > 0 for v in self.trap_v0s):
            raise ValueError(f"trap_v0s must be one or more speeds > 0, got {self.trap_v0s}")
        for name in ("trap_A", "trap_gamma", "trap_eps", "ring_gamma", "ring_eps", "ring_A"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.mips_phi < 0.9:
            raise ValueError(f"mips_phi must lie in (0, 0.9), got {self.mips_phi}")
        if any(not 0 < p < 0.9 for p in self.mips_phis):
            raise ValueError(f"mips_phis must lie in (0, 0.9), got {self.mips_phis}")
        if self.ring_n < 8 or any(n < 8 for n in self.ring_n_eval):
            raise ValueError(f"ring sizes must be >= 8, got {self.ring_n}, {self.ring_n_eval}")
        if self.mips_n < 16:
            raise ValueError(f"mips_n must be >= 16, got {self.mips_n}")
        for name in (
            "trap_samples",
            "trap_test",
            "trap_steps",
            "trap_batch",
            "ring_samples",
            "ring_test",
            "ring_steps",
            "ring_batch",
            "mips_replicas",
            "mips_frames",
            "mips_steps",
            "mips_batch",
            "movie_frames",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dyn_dt", "sim_dt", "mips_dt", "mips_sigma", "mips_frame_every"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.dyn_dt > 0.05:
            raise ValueError(
                f"dyn_dt must be <= 0.05 (a small step of the dynamics), got {self.dyn_dt}"
            )


SETTINGS = {
    "tiny": Settings(
        scale="tiny",
        trap_samples=4096,
        trap_test=1024,
        trap_hidden=32,
        trap_depth=2,
        trap_steps=400,
        trap_batch=128,
        ring_n=16,
        ring_n_eval=(32,),
        ring_samples=64,
        ring_test=16,
        ring_knn=4,
        ring_width=16,
        ring_layers=1,
        ring_steps=60,
        ring_batch=4,
        mips_n=64,
        mips_replicas=1,
        mips_thermalize=50.0,
        mips_frames=4,
        mips_phis=(),
        mips_eval_n=0,
        mips_knn=8,
        mips_width=16,
        mips_layers=1,
        mips_steps=40,
        mips_batch=2,
        movie_frames=8,
    ),
    "cpu": Settings(scale="cpu"),
    "gpu": Settings(
        scale="gpu",
        trap_samples=262144,
        trap_test=65536,
        trap_hidden=128,
        trap_steps=4000,
        trap_batch=1024,
        ring_n_eval=(256, 1024),
        ring_samples=2048,
        ring_test=256,
        ring_knn=16,
        ring_width=64,
        ring_steps=3000,
        ring_batch=32,
        mips_n=4096,
        mips_replicas=16,
        mips_thermalize=2000.0,
        mips_frames=16,
        mips_frame_every=25.0,
        mips_knn=32,
        mips_width=128,
        mips_layers=3,
        mips_steps=2000,
        mips_batch=4,
        mips_lr=1e-3,
        mips_phis=(0.3, 0.4, 0.6, 0.7),
        mips_sweep_replicas=4,
        mips_eval_n=32768,
        mips_eval_chunk=2048,
        movie_frames=60,
        threads=None,
    ),
}


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return replace(scale.preset(SETTINGS, scale_name), **changes)


def _fields(s: Settings, prefix: str, extra: tuple[str, ...] = ()) -> dict[str, object]:
    """The settings starting with ``prefix`` (plus ``extra``): one experiment's cache key."""
    names = [f for f in s.__dataclass_fields__ if f.startswith(prefix)] + list(extra)
    return {name: getattr(s, name) for name in names}


# ---- the physical models ------------------------------------------------------------------
def trap_model(s: Settings, v0: float) -> AOUP:
    """One AOUP in the harmonic trap A (card, "Exact cases"); independent particles."""
    return AOUP(1, v0, gamma=s.trap_gamma, eps=s.trap_eps, A=s.trap_A, interaction="none")


def ring_model(s: Settings, n: int) -> AOUP:
    """n AOUPs on a spring ring: dx = (v0 g - (A I + k L) x) dt + sqrt(2 eps) dW."""
    return AOUP(
        n,
        s.ring_v0,
        gamma=s.ring_gamma,
        eps=s.ring_eps,
        A=s.ring_A,
        k=s.ring_k,
        interaction="ring",
    )


def mips_model(s: Settings, phi: float | None = None, n: int | None = None) -> AOUP:
    """Soft discs in a periodic box at packing fraction phi (A = 0, eps = 0: card, MIPS)."""
    return particles.mips_model(
        n or s.mips_n, phi or s.mips_phi, v0=s.mips_v0, gamma=s.mips_gamma, radius=s.mips_radius
    )


# ---- step 1: score-matching losses --------------------------------------------------------
def _noise_term(s_part: Tensor, xi: Tensor, scale_: float, sign: float) -> Tensor:
    """|s|^2 + 2 sign s . xi / scale, summed over the last axis: (n, N)."""
    return (s_part**2).sum(-1) + 2 * sign * (s_part * xi).sum(-1) / scale_


def denoising_loss(
    score: ScoreFn,
    x: Tensor,
    g: Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
    noise_x: bool = True,
    box: float | None = None,
) -> Tensor:
    """Fixed-sigma denoising score matching with antithetic noise (card, "Score learning").

    z' = z +- sigma xi (xi ~ N(0, I) on g, and on x when ``noise_x``), minimise
    E[|s(z')|^2 + 2 s(z') . (+-xi) / sigma] over the noised parts, averaged over the two
    signs: the minimiser is the score of rho * N(0, sigma^2). The antithetic pair cancels
    the O(1/sigma) term whose variance would swamp a small sigma (card, "Traps").
    ``noise_x=False``: noise on g only, the loss for eps = 0 (s_x is then not learned).
    x, g: (n, N, d). Returns the mean per particle (a scalar).
    """
    xi_g = torch.randn(g.shape, generator=generator, dtype=g.dtype, device=g.device)
    xi_x = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    total = torch.zeros((), dtype=x.dtype, device=x.device)
    for sign in (1.0, -1.0):
        xp = particles.wrap(x + sign * sigma * xi_x, box) if noise_x else x
        s_x, s_g = score(xp, g + sign * sigma * xi_g)
        term = _noise_term(s_g, xi_g, sigma, sign)
        if noise_x:
            term = term + _noise_term(s_x, xi_x, sigma, sign)
        total = total + term.mean()
    return total / 2


def dynamics_denoising_loss(
    score: ScoreFn,
    model: AOUP,
    x: Tensor,
    g: Tensor,
    dt: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ "Dynamics denoising" (card): one Euler-Maruyama step is the noise.

    z' = z + b(z) dt +- sqrt(2 D dt) xi (antithetic), minimise
    E[|s(z')|^2 + 2 s(z') . (+-xi) / sqrt(2 D dt)] over the noisy degrees of freedom
    (x only when eps > 0). Because rho is stationary, z' is again distributed as rho (up to
    the O(dt) bias of one Euler step), so the minimiser is the score of rho itself, with no
    smoothing bias. x, g: (n, N, d) stationary samples. Returns the mean per particle.
    """
    b_x = particles.drift(model, x, g)
    mean_x, mean_g = x + b_x * dt, g - model.gamma * g * dt
    sd_x, sd_g = math.sqrt(2 * model.eps * dt), math.sqrt(2 * model.gamma * dt)
    xi_x = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    xi_g = torch.randn(g.shape, generator=generator, dtype=g.dtype, device=g.device)
    total = torch.zeros((), dtype=x.dtype, device=x.device)
    for sign in (1.0, -1.0):
        xp = particles.wrap(mean_x + sign * sd_x * xi_x, model.box)
        s_x, s_g = score(xp, mean_g + sign * sd_g * xi_g)
        term = _noise_term(s_g, xi_g, sd_g, sign)
        if model.eps > 0:
            term = term + _noise_term(s_x, xi_x, sd_x, sign)
        total = total + term.mean()
    return total / 2


# ---- step 2: networks ---------------------------------------------------------------------
class TrapScore(nn.Module):
    """s(x_i, g_i; v0) for independent trapped particles, one network for a v0 sweep.

    f = MLP([x_i, g_i, v0]) in R^{2d}; s_x = f_x, s_g = -g_i + f_g. The -g_i is the score
    of the propulsion's own law N(0, I) (exact for v0 = 0), so the network learns only what
    the coupling to x changes. x, g: (n, N, d), v0: float or (n,) -> (s_x, s_g), each
    (n, N, d).
    """

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 3) -> None:
        super().__init__()
        if hidden < 1 or depth < 1:
            raise ValueError(f"hidden and depth must be >= 1, got {hidden}, {depth}")
        self.dim = dim
        layers: list[nn.Module] = []
        width = 2 * dim + 1
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, 2 * dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, g: Tensor, v0: float | Tensor) -> tuple[Tensor, Tensor]:
        v = torch.as_tensor(v0, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        v = v.expand(x.shape[0], x.shape[1], 1)
        out = self.net(torch.cat([x, g, v], dim=-1))
        return out[..., : self.dim], out[..., self.dim :] - g


def make_local_net(
    feature_dim: int, out_dim: int, k: int, width: int, layers: int, heads: int, scale_: float
) -> LocalTransformer:
    """The local transformer of the card (k nearest neighbours, wrapped coordinates)."""
    return LocalTransformer(
        dim=2,
        feature_dim=feature_dim,
        out_dim=out_dim,
        k=k,
        width=width,
        layers=layers,
        heads=heads,
        box=1.0,  # replaced per call: the box follows N (ring) or the packing fraction
        length_scale=scale_,
    )


class ChainScore(nn.Module):
    """Score of a spring ring from a local transformer, the same weights at any N.

    The ring's springs have zero rest length, so to give the network a geometry, particle i
    sits at x_i + r_i with rest site r_i = (i a, 0) on a periodic line of length N a (a
    ring: the box closes it), a = ``spacing``. The network sees these positions (its
    neighbours) and the features c_i = (x_i, g_i); out = (s_x, -g + f_g) like
    :class:`TrapScore`. x, g: (n, N, d) -> (s_x, s_g), each (n, N, d).
    """

    def __init__(self, net: LocalTransformer, spacing: float) -> None:
        super().__init__()
        if net.feature_dim != 4 or net.out_dim != 4:
            raise ValueError("ChainScore needs a LocalTransformer with feature_dim = out_dim = 4")
        self.net, self.spacing = net, float(spacing)

    def sites(self, n: int, like: Tensor) -> Tensor:
        """Rest sites r_i = (i a - N a / 2, 0), (N, 2)."""
        line = (torch.arange(n, dtype=like.dtype, device=like.device) - n / 2) * self.spacing
        return torch.stack([line, torch.zeros_like(line)], dim=-1)

    def forward(self, x: Tensor, g: Tensor, chunk: int | None = None) -> tuple[Tensor, Tensor]:
        n = x.shape[1]
        box = n * self.spacing
        self.net.box = box  # the periodic line grows with N; the weights do not
        pos = particles.wrap(x + self.sites(n, x), box)
        out = self.net.forward_chunked(pos, torch.cat([x, g], dim=-1), chunk)
        return out[..., :2], out[..., 2:] - g


class PropulsionScore(nn.Module):
    """s_g(x, g) = -g + f(x, g) for eps = 0, f a local transformer (positions x in the
    periodic box, features g). Only the g-part exists: x has no noise, so the card's
    g-only losses and estimators apply. Returns (None, s_g), s_g (n, N, d)."""

    def __init__(self, net: LocalTransformer) -> None:
        super().__init__()
        if net.feature_dim != 2 or net.out_dim != 2:
            raise ValueError(
                "PropulsionScore needs a LocalTransformer with feature_dim = out_dim = 2"
            )
        self.net = net

    def forward(
        self, x: Tensor, g: Tensor, box: float, chunk: int | None = None
    ) -> tuple[None, Tensor]:
        self.net.box = float(box)
        return None, self.net.forward_chunked(x, g, chunk) - g


# ---- step 3: estimators -------------------------------------------------------------------
@dataclass
class LocalEPR:
    """The probability velocity and the EPR per particle at n configurations.

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


def probability_velocity(
    model: AOUP, x: Tensor, g: Tensor, s_x: Tensor | None, s_g: Tensor
) -> tuple[Tensor, Tensor]:
    """v = b - D s (card): v_x = v0 g - A x + F(x) - eps s_x, v_g = -gamma (g + s_g).

    x, g, s_x, s_g: (n, N, d) -> (v_x, v_g). With eps = 0, v_x = b_x (s_x unused)."""
    b_x = particles.drift(model, x, g)
    v_x = b_x if model.eps == 0 or s_x is None else b_x - model.eps * s_x
    return v_x, -model.gamma * (g + s_g)


def local_epr(model: AOUP, x: Tensor, g: Tensor, s_x: Tensor | None, s_g: Tensor) -> LocalEPR:
    """Per-particle EPR v_i . D_i^-1 v_i split into x- and g-parts (card, "Local
    decomposition"); E over rho of the sum over i is the total EPR. x, g: (n, N, d)."""
    v_x, v_g = probability_velocity(model, x, g, s_x, s_g)
    x_part = None if model.eps == 0 or s_x is None else (v_x**2).sum(-1) / model.eps
    return LocalEPR(v_x, v_g, x_part, (v_g**2).sum(-1) / model.gamma)


def total_epr(local: LocalEPR) -> float:
    """EPR = E[v . D^-1 v]: the per-particle values summed over particles, averaged over
    configurations."""
    return float(local.per_particle.sum(-1).mean())


def per_particle_g_divergence(
    score: ScoreFn, x: Tensor, g: Tensor, generator: torch.Generator | None = None, probes: int = 1
) -> Tensor:
    """div_{g_i} s_{g_i} for every particle i at once, unbiased (Hutchinson per particle).

    With a Rademacher probe u on all g's and w = grad_g (s_g . u), E[u_i . w_i] =
    sum_j E[u_i^T J_ji^T u_j] = tr J_ii, the divergence of particle i's own block: one
    backward pass gives all N of them. x, g: (n, N, d) -> (n, N), averaged over ``probes``.
    """
    out = torch.zeros(g.shape[:2], dtype=g.dtype, device=g.device)
    for _ in range(probes):
        gg = g.detach().requires_grad_(True)
        with torch.enable_grad():
            _, s_g = score(x, gg)
            u = torch.randint(0, 2, g.shape, generator=generator, device=g.device).to(g) * 2 - 1
            (w,) = torch.autograd.grad((s_g * u).sum(), gg)
        out = out + (u * w).sum(-1).detach()
    return out / probes


def epr_g_divergence_form(div_g: Tensor, gamma: float, dim: int = 2) -> Tensor:
    """The card's per-particle g-part, -gamma div_{g_i} s_{g_i} - gamma d, (n, N): equal in
    expectation to gamma |g_i + s_{g_i}|^2 (integration by parts), pointwise different."""
    return -gamma * div_g - gamma * dim


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
    xw = particles.wrap(x.double().cpu(), box)
    cols = torch.bucketize(xw[..., 0].contiguous(), edges[1:-1])
    rows = torch.bucketize(xw[..., 1].contiguous(), edges[1:-1])
    flat = (rows * bins + cols).reshape(-1)
    area = (box / bins) ** 2
    n = x.shape[0]
    epr = torch.zeros(bins * bins, dtype=torch.float64).index_add_(
        0, flat, values.double().cpu().reshape(-1)
    )
    counts = torch.zeros(bins * bins, dtype=torch.float64).index_add_(
        0, flat, torch.ones(flat.shape, dtype=torch.float64)
    )
    return edges, (epr / (n * area)).reshape(bins, bins), (counts / (n * area)).reshape(bins, bins)


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
    flat = rows * bins + cols
    area = float((ex[1] - ex[0]) * (ey[1] - ey[0]))
    n = p.shape[0]
    current = torch.zeros(bins * bins, 2, dtype=torch.float64).index_add_(0, flat, v[inside])
    rho = torch.zeros(bins * bins, dtype=torch.float64).index_add_(
        0, flat, torch.ones(flat.shape, dtype=torch.float64)
    )
    return (
        (ex[1:] + ex[:-1]) / 2,
        (ey[1:] + ey[:-1]) / 2,
        (current / (n * area)).reshape(bins, bins, 2),
        (rho / (n * area)).reshape(bins, bins),
    )


@torch.no_grad()
def evaluate_score(
    score: ScoreFn, x: Tensor, g: Tensor, batch: int = 64
) -> tuple[Tensor | None, Tensor]:
    """score(x, g) in batches of configurations without gradients: (s_x or None, s_g)."""
    parts_x, parts_g = [], []
    for xb, gb in zip(x.split(batch), g.split(batch), strict=True):
        s_x, s_g = score(xb, gb)
        parts_x.append(s_x)
        parts_g.append(s_g)
    s_x = None if parts_x[0] is None else torch.cat(parts_x)
    return s_x, torch.cat(parts_g)


# ---- caching helpers ------------------------------------------------------------------------
def _cached(name: str, key: dict[str, object], build: Callable[[], dict]) -> dict:
    obj, _ = cache.cached(CHAPTER, name, key, build, version=VERSION)
    return obj


def _seconds(clock: list[float]) -> float:
    now = time.perf_counter()
    out, clock[0] = now - clock[0], now
    return out


# ---- experiment 1: the trapped AOUP across v0 -----------------------------------------------
def trap_data(s: Settings) -> dict[str, Tensor]:
    """Held-out stationary samples of the trapped AOUP from the simulator, per v0 (cached,
    shipped): {"x_test", "g_test"} each (m, n, 1, d) for the m values of ``trap_v0s``."""
    names = ("trap_v0s", "trap_A", "trap_gamma", "trap_eps", "trap_test")
    key = {name: getattr(s, name) for name in (*names, "sim_dt", "seed")}

    def build() -> dict[str, Tensor]:
        x, g = trap_samples(s, s.trap_test, s.seed)
        return {"x_test": x, "g_test": g}

    return _cached("trap_data", key, build)


def trap_samples(s: Settings, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """n stationary samples per v0 from n independent replicas, each thermalized for
    10 relaxation times (card, "Traps"): (x, g) each (m, n, 1, d)."""
    gen = torch.Generator().manual_seed(seed)
    xs, gs = [], []
    for v0 in s.trap_v0s:
        x, g = particles.stationary_samples(
            trap_model(s, v0), n, s.sim_dt, n_replicas=n, generator=gen
        )
        xs.append(x)
        gs.append(g)
    return torch.stack(xs), torch.stack(gs)


def _lazy(build: Callable[[], tuple[Tensor, ...]]) -> Callable[[], tuple[Tensor, ...]]:
    """build() on first call, the same tensors afterwards: training data is simulated only
    when a network is actually trained (a cache hit never needs it)."""
    memo: list[tuple[Tensor, ...]] = []

    def get() -> tuple[Tensor, ...]:
        if not memo:
            memo.append(build())
        return memo[0]

    return get


def train_trap_score(s: Settings) -> FitResult:
    """One :class:`TrapScore` for every v0 of the sweep, trained with
    :func:`dynamics_denoising_loss` on ``trap_batch`` samples per v0 and step, drawn from
    ``trap_samples`` fresh simulated samples per v0 (cached)."""
    dev = scale.device()
    data = _lazy(lambda: tuple(t.to(dev) for t in trap_samples(s, s.trap_samples, s.seed + 1)))
    models = [trap_model(s, v0) for v0 in s.trap_v0s]
    gen = torch.Generator(device=dev).manual_seed(s.seed + 1)

    def loss_fn(net: nn.Module, step: int) -> Tensor:
        xs, gs = data()
        total = torch.zeros((), device=dev)
        for j, model in enumerate(models):
            idx = torch.randint(xs.shape[1], (s.trap_batch,), generator=gen, device=dev)
            score = lambda x, g, v0=model.v0: net(x, g, v0)  # noqa: E731
            total = total + dynamics_denoising_loss(
                score, model, xs[j, idx], gs[j, idx], s.dyn_dt, gen
            )
        return total / len(models)

    torch.manual_seed(s.seed)
    key = _fields(s, "trap_", ("dyn_dt", "sim_dt", "seed"))
    with scale.torch_threads(s.threads):
        return fit_cached(
            CHAPTER,
            "trap_score",
            key,
            lambda: TrapScore(2, s.trap_hidden, s.trap_depth),
            loss_fn,
            version=VERSION,
            device=dev,
            steps=s.trap_steps,
            lr=s.trap_lr,
            warmup=min(100, s.trap_steps // 10),
            cosine=True,
            ema_decay=s.ema_decay,
            desc=f"active_matter: trap score ({s.scale})",
        )


@dataclass
class TrapSweep:
    """Learned vs exact EPR of the trapped AOUP (total over d = 2 dimensions) per v0.

    v0s (m,); exact, learned (m,): the total EPR; exact_g, learned_g (m,): the g-part;
    learned_g_div (m,): the g-part by the card's divergence form; learned_x (m,);
    per_sample (m, n): the per-sample EPR v . D^-1 v (its histogram); rel_error (m,).
    """

    v0s: Tensor
    exact: Tensor
    learned: Tensor
    exact_g: Tensor
    learned_g: Tensor
    learned_g_div: Tensor
    learned_x: Tensor
    per_sample: Tensor

    @property
    def rel_error(self) -> Tensor:
        return (self.learned - self.exact) / self.exact


def trap_sweep(s: Settings, net: TrapScore, data: dict[str, Tensor]) -> TrapSweep:
    """Estimate the EPR from the learned score on held-out samples at every v0 and set it
    beside the exact gamma v0^2 / (eps (A + gamma)) per dimension (card, "Exact cases")."""
    from pflow_explore.theory import linear_sde

    dev = next(net.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(s.seed + 2)
    rows: dict[str, list[float]] = {k: [] for k in ("ex", "le", "exg", "leg", "legd", "lex")}
    per_sample = []
    for j, v0 in enumerate(s.trap_v0s):
        model = trap_model(s, v0)
        x, g = data["x_test"][j].to(dev), data["g_test"][j].to(dev)
        score = lambda xx, gg, v0=v0: net(xx, gg, v0)  # noqa: E731
        s_x, s_g = evaluate_score(score, x, g, batch=4096)
        loc = local_epr(model, x, g, s_x, s_g)
        div = per_particle_g_divergence(score, x, g, gen, probes=4)
        rows["ex"].append(linear_sde.trapped_aoup_epr(s.trap_A, v0, s.trap_gamma, s.trap_eps))
        rows["exg"].append(linear_sde.trapped_aoup_epr_g(s.trap_A, v0, s.trap_gamma, s.trap_eps))
        rows["le"].append(total_epr(loc))
        rows["leg"].append(float(loc.g_part.sum(-1).mean()))
        rows["lex"].append(float(loc.x_part.sum(-1).mean()))
        rows["legd"].append(float(epr_g_divergence_form(div, s.trap_gamma).sum(-1).mean()))
        per_sample.append(loc.per_particle.sum(-1).cpu())

    def t(name: str) -> Tensor:
        return torch.tensor(rows[name], dtype=torch.float64)

    return TrapSweep(
        torch.tensor(s.trap_v0s, dtype=torch.float64),
        t("ex"),
        t("le"),
        t("exg"),
        t("leg"),
        t("legd"),
        t("lex"),
        torch.stack(per_sample),
    )


@dataclass
class PhaseCurrent:
    """The probability current in one particle's (x_1, g_1) plane at one v0: learned
    (from the network's v) and exact (v = M z of the Lyapunov solution) at the same samples,
    binned (:func:`probability_current_field`). cx, cy (bins,), J_* (bins, bins, 2)."""

    v0: float
    cx: Tensor
    cy: Tensor
    rho: Tensor
    J_learned: Tensor
    J_exact: Tensor


def trap_phase_current(
    s: Settings, net: TrapScore, data: dict[str, Tensor], index: int = -1, bins: int = 12
) -> PhaseCurrent:
    """Learned and exact probability currents of the trapped AOUP in the (x_1, g_1) plane."""
    from pflow_explore.theory import linear_sde

    v0 = s.trap_v0s[index]
    model = trap_model(s, v0)
    dev = next(net.parameters()).device
    x, g = data["x_test"][index].to(dev), data["g_test"][index].to(dev)
    s_x, s_g = evaluate_score(lambda a, b: net(a, b, v0), x, g, batch=4096)
    v_x, v_g = probability_velocity(model, x, g, s_x, s_g)
    B = linear_sde.spring_network_B([[0.0]], s.trap_A, 0.0, v0, s.trap_gamma)
    D = linear_sde.spring_network_D(1, s.trap_eps, s.trap_gamma)
    S = linear_sde.lyapunov_covariance(B, D)
    z = torch.stack([x[:, 0, 0], g[:, 0, 0]], dim=-1).double().cpu()
    v_exact = linear_sde.probability_velocity(B, D, S, z)
    lim_x = 2.5 * math.sqrt(S[0, 0])
    pts = z
    cx, cy, J_l, rho = probability_current_field(
        pts, torch.stack([v_x[:, 0, 0], v_g[:, 0, 0]], -1), (-lim_x, lim_x), (-2.5, 2.5), bins
    )
    _, _, J_e, _ = probability_current_field(pts, v_exact, (-lim_x, lim_x), (-2.5, 2.5), bins)
    return PhaseCurrent(float(v0), cx, cy, rho, J_l, J_e)


# ---- experiment 2: a spring ring, trained at one N, evaluated at larger N ----------------------
def ring_samples(s: Settings, n: int, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` stationary configurations of the n-particle ring from the simulator:
    (x, g) each (count, n, d)."""
    gen = torch.Generator().manual_seed(seed)
    return particles.stationary_samples(ring_model(s, n), count, s.sim_dt, generator=gen)


def ring_data(s: Settings, n: int, count: int, seed: int) -> dict[str, Tensor]:
    """Held-out ring configurations (cached, shipped): {"x", "g"} each (count, n, d)."""
    names = ("ring_v0", "ring_A", "ring_k", "ring_gamma", "ring_eps")
    key = {**{k: getattr(s, k) for k in names}, "n": n, "count": count, "seed": seed}
    key["sim_dt"] = s.sim_dt

    def build() -> dict[str, Tensor]:
        x, g = ring_samples(s, n, count, seed)
        return {"x": x, "g": g}

    return _cached(f"ring_data_{n}", key, build)


def make_ring_score(s: Settings) -> ChainScore:
    net = make_local_net(
        4, 4, s.ring_knn, s.ring_width, s.ring_layers, s.ring_heads, s.ring_spacing
    )
    return ChainScore(net, s.ring_spacing)


def train_ring_score(s: Settings) -> FitResult:
    """The local transformer of the ring, trained at N = ``ring_n`` with
    :func:`dynamics_denoising_loss` on ``ring_batch`` configurations per step, drawn from
    ``ring_samples`` simulated configurations (cached)."""
    dev = scale.device()
    data = _lazy(
        lambda: tuple(t.to(dev) for t in ring_samples(s, s.ring_n, s.ring_samples, s.seed + 10))
    )
    model = ring_model(s, s.ring_n)
    gen = torch.Generator(device=dev).manual_seed(s.seed + 11)

    def loss_fn(net: nn.Module, step: int) -> Tensor:
        x, g = data()
        idx = torch.randint(x.shape[0], (s.ring_batch,), generator=gen, device=dev)
        return dynamics_denoising_loss(net, model, x[idx], g[idx], s.dyn_dt, gen)

    torch.manual_seed(s.seed)
    key = _fields(s, "ring_", ("dyn_dt", "sim_dt", "seed"))
    key.pop("ring_n_eval")
    key.pop("ring_test")
    with scale.torch_threads(s.threads):
        return fit_cached(
            CHAPTER,
            "ring_score",
            key,
            lambda: make_ring_score(s),
            loss_fn,
            version=VERSION,
            device=dev,
            steps=s.ring_steps,
            lr=s.ring_lr,
            warmup=min(50, s.ring_steps // 10),
            cosine=True,
            ema_decay=s.ema_decay,
            desc=f"active_matter: ring local score ({s.scale})",
        )


@dataclass
class RingTransfer:
    """Per-particle EPR of the spring ring, learned vs exact, at each evaluated N.

    sizes (q,): N (the training N first); exact (q,): the modal formula / N; learned (q,):
    mean over particles and configurations; learned_x, learned_g (q,): its x- and g-parts;
    exact_x, exact_g (q,); per_particle: list of (N,) learned per-particle EPR at each N.
    """

    sizes: Tensor
    exact: Tensor
    learned: Tensor
    exact_x: Tensor
    exact_g: Tensor
    learned_x: Tensor
    learned_g: Tensor
    per_particle: list[Tensor]

    @property
    def rel_error(self) -> Tensor:
        return (self.learned - self.exact) / self.exact


def ring_exact(s: Settings, n: int) -> tuple[float, float, float]:
    """(total, x-part, g-part) per particle of the n-ring in d = 2: the modal formula
    sum_q gamma v0^2 / (eps (A + k lambda_q + gamma)) for the total (card), the Lyapunov
    solution (``linear_sde``) for the parts."""
    from pflow_explore.theory import linear_sde

    lap = particles.ring_laplacian(n)
    eig = torch.linalg.eigvalsh(lap)
    total = linear_sde.spring_modal_epr(
        eig, s.ring_A, s.ring_k, s.ring_v0, s.ring_gamma, s.ring_eps, dim=2
    )
    B = linear_sde.spring_network_B(lap, s.ring_A, s.ring_k, s.ring_v0, s.ring_gamma)
    D = linear_sde.spring_network_D(n, s.ring_eps, s.ring_gamma)
    S = linear_sde.lyapunov_covariance(B, D)
    part_g = 2 * linear_sde.linear_epr(B, D, S, parts=range(n, 2 * n))
    part_x = 2 * linear_sde.linear_epr(B, D, S, parts=range(n))
    return total / n, part_x / n, part_g / n


def ring_transfer(s: Settings, net: ChainScore) -> RingTransfer:
    """Evaluate the ring network at N = ``ring_n`` and at every N of ``ring_n_eval`` on
    fresh configurations, without retraining (card, "Small reproduction")."""
    dev = next(net.parameters()).device
    rows: dict[str, list[float]] = {k: [] for k in ("ex", "le", "exx", "exg", "lex", "leg")}
    per_particle = []
    sizes = (s.ring_n, *s.ring_n_eval)
    for j, n in enumerate(sizes):
        count = max(4, s.ring_test * s.ring_n // n)
        data = ring_data(s, n, count, s.seed + 20 + j)
        x, g = data["x"].to(dev), data["g"].to(dev)
        s_x, s_g = evaluate_score(net, x, g, batch=16)
        loc = local_epr(ring_model(s, n), x, g, s_x, s_g)
        total, part_x, part_g = ring_exact(s, n)
        rows["ex"].append(total)
        rows["exx"].append(part_x)
        rows["exg"].append(part_g)
        rows["le"].append(float(loc.per_particle.mean()))
        rows["lex"].append(float(loc.x_part.mean()))
        rows["leg"].append(float(loc.g_part.mean()))
        per_particle.append(loc.per_particle.mean(0).cpu().double())

    def t(name: str) -> Tensor:
        return torch.tensor(rows[name], dtype=torch.float64)

    return RingTransfer(
        torch.tensor(sizes),
        t("ex"),
        t("le"),
        t("exx"),
        t("exg"),
        t("lex"),
        t("leg"),
        per_particle,
    )


# ---- experiment 3: a small MIPS box ---------------------------------------------------------
def force_method(model: AOUP) -> str:
    """Cell lists whenever the box holds >= 3 interaction ranges a side: at N = 256 they
    took half the CPU time of all pairs here (the simulator's "auto" switches at N = 1024)."""
    return (
        "cells" if model.box is not None and model.box >= 3 * model.interaction_range else "dense"
    )


def mips_trajectory(
    s: Settings,
    phi: float,
    n: int,
    replicas: int,
    frames: int,
    every: float,
    seed: int,
    thermalize: float | None = None,
) -> dict[str, Tensor]:
    """Frames of the MIPS system (cached): {"x", "g"} each (frames, replicas, N, d), taken
    ``every`` time units apart after ``thermalize`` (default ``mips_thermalize``) from a
    uniform start (g from its stationary law N(0, I))."""
    thermalize = s.mips_thermalize if thermalize is None else thermalize
    key = {
        "phi": phi,
        "n": n,
        "replicas": replicas,
        "frames": frames,
        "every": every,
        "seed": seed,
        "thermalize": thermalize,
        **{k: getattr(s, k) for k in ("mips_v0", "mips_gamma", "mips_radius", "mips_dt")},
    }

    def build() -> dict[str, Tensor]:
        dev = scale.device()
        model = mips_model(s, phi, n)
        record = max(1, round(every / s.mips_dt))
        traj = particles.simulate(
            model,
            replicas,
            (frames - 1) * record,
            s.mips_dt,
            record_every=record,
            thermalize=thermalize,
            generator=torch.Generator(device=dev).manual_seed(seed),
            device=dev,
            method=force_method(model),
        )
        return {"x": traj.x.cpu(), "g": traj.g.cpu()}

    return _cached(f"mips_traj_{n}", key, build)


def make_mips_score(s: Settings) -> PropulsionScore:
    net = make_local_net(
        2, 2, s.mips_knn, s.mips_width, s.mips_layers, s.mips_heads, 2 * mips_model(s).radius
    )
    return PropulsionScore(net)


def train_mips_score(s: Settings, data: dict[str, Tensor] | None = None) -> FitResult:
    """The local transformer for MIPS, trained with the g-only :func:`denoising_loss`
    (sigma = ``mips_sigma``, antithetic) on ``mips_batch`` configurations per step (cached)."""
    if data is None:
        data = mips_trajectory(
            s, s.mips_phi, s.mips_n, s.mips_replicas, s.mips_frames, s.mips_frame_every, s.seed
        )
    dev = scale.device()
    x = data["x"].reshape(-1, *data["x"].shape[2:]).to(dev)
    g = data["g"].reshape(-1, *data["g"].shape[2:]).to(dev)
    box = mips_model(s).box
    gen = torch.Generator(device=dev).manual_seed(s.seed + 31)

    def loss_fn(net: nn.Module, step: int) -> Tensor:
        idx = torch.randint(x.shape[0], (s.mips_batch,), generator=gen, device=dev)
        score = lambda xx, gg: net(xx, gg, box)  # noqa: E731
        return denoising_loss(score, x[idx], g[idx], s.mips_sigma, gen, noise_x=False)

    torch.manual_seed(s.seed)
    key = _fields(s, "mips_", ("seed",))
    for name in ("mips_phis", "mips_sweep_replicas", "mips_eval_n", "mips_eval_chunk"):
        key.pop(name)
    with scale.torch_threads(s.threads):
        return fit_cached(
            CHAPTER,
            "mips_score",
            key,
            lambda: make_mips_score(s),
            loss_fn,
            version=VERSION,
            device=dev,
            steps=s.mips_steps,
            lr=s.mips_lr,
            warmup=min(50, s.mips_steps // 10),
            cosine=True,
            desc=f"active_matter: MIPS local score ({s.scale})",
        )


GAS, INTERFACE, BULK = 0, 1, 2
PHASE_NAMES = ("gas", "interface", "bulk")


def phase_labels(
    x: Tensor, box: float, radius: float, within: float | None = None, dense_min: int = 4
) -> Tensor:
    """Gas / interface / bulk label of every particle, (n, N) long (0, 1, 2).

    Neighbours: the other particles within ``within`` (default 2.4 r, 1.2 diameters; at most
    12 are looked at). A particle is *dense* with >= ``dense_min`` neighbours (a close-packed
    disc has 6, a gas at phi = 0.5 about 2). Bulk: dense, and every neighbour dense.
    Interface: dense, with at least one dilute neighbour. Gas: the rest (dilute particles).
    x: (n, N, 2) in the periodic box of side ``box``.
    """
    within = 2.4 * radius if within is None else within
    idx, _, dist = knn(x, 12, box)
    near = dist < within  # (n, N, 12)
    dense = near.sum(-1) >= dense_min
    nb_dense = torch.gather(dense, 1, idx.reshape(x.shape[0], -1)).reshape(idx.shape)
    all_dense = (nb_dense | ~near).all(-1)
    labels = torch.full(dense.shape, GAS, dtype=torch.long, device=x.device)
    labels[dense & ~all_dense] = INTERFACE
    labels[dense & all_dense] = BULK
    return labels


def phase_means(values: Tensor, labels: Tensor) -> Tensor:
    """Mean of values (n, N) over the particles of each phase: (3,) gas, interface, bulk
    (NaN for an empty phase)."""
    out = []
    for p in (GAS, INTERFACE, BULK):
        sel = values[labels == p]
        out.append(sel.double().mean() if sel.numel() else torch.tensor(math.nan))
    return torch.stack(out).cpu().double()


def ratio_spread(values: Tensor, labels: Tensor) -> float:
    """Standard error of the interface / bulk ratio from its spread over configurations:
    std of the per-configuration ratios / sqrt(their number) (NaN with fewer than 2)."""
    ratios = [
        _ratio(phase_means(v[None], lab[None])) for v, lab in zip(values, labels, strict=True)
    ]
    finite = torch.tensor([r for r in ratios if math.isfinite(r)], dtype=torch.float64)
    return float(finite.std() / math.sqrt(len(finite))) if len(finite) > 1 else math.nan


def _ratio(phase_values: Tensor) -> float:
    """Interface / bulk of per-phase means (NaN when either phase is empty)."""
    bulk = float(phase_values[BULK])
    return float(phase_values[INTERFACE]) / bulk if bulk > 0 else math.nan


@dataclass
class MIPSResult:
    """The local EPR of MIPS from the learned g-score.

    x, g (n, N, 2): the evaluated configurations; local (n, N): gamma |g_i + s_{g_i}|^2;
    local_div (n, N): the card's divergence form; labels (n, N): phase per particle;
    phase_epr (3,), phase_epr_div (3,): mean local EPR in gas / interface / bulk;
    fractions (3,): share of particles per phase; ratio: interface / bulk of the card's
    divergence form (unbiased for the learned score), ratio_se: its standard error over
    configurations (:func:`ratio_spread`), ratio_pointwise: of gamma |g + s_g|^2;
    epr_per_particle: the mean g-part per particle; region_edges, region_density:
    :func:`per_region_epr` of the first configuration set; box.
    """

    x: Tensor
    g: Tensor
    local: Tensor
    local_div: Tensor
    labels: Tensor
    phase_epr: Tensor
    phase_epr_div: Tensor
    fractions: Tensor
    ratio: float
    ratio_se: float
    ratio_pointwise: float
    epr_per_particle: float
    region_edges: Tensor
    region_density: Tensor
    box: float


def mips_local_epr(
    s: Settings, net: PropulsionScore, x: Tensor, g: Tensor, phi: float, chunk: int | None = None
) -> MIPSResult:
    """Local EPR of MIPS configurations x, g (n, N, 2) at packing fraction phi."""
    n_part = x.shape[1]
    model = mips_model(s, phi, n_part)
    box = float(model.box)
    dev = next(net.parameters()).device
    x, g = x.to(dev), g.to(dev)
    score = lambda xx, gg: net(xx, gg, box, chunk)  # noqa: E731
    _, s_g = evaluate_score(score, x, g, batch=8)
    loc = local_epr(model, x, g, None, s_g)
    gen = torch.Generator(device=dev).manual_seed(s.seed + 40)
    div = torch.cat(
        [
            per_particle_g_divergence(score, xb, gb, gen, probes=1)
            for xb, gb in zip(x.split(4), g.split(4), strict=True)
        ]
    )
    local_div = epr_g_divergence_form(div, model.gamma)
    labels = phase_labels(x, box, model.radius)
    pe, pd = phase_means(loc.g_part, labels), phase_means(local_div, labels)
    fractions = torch.stack([(labels == p).double().mean() for p in range(3)]).cpu()
    edges, density, _ = per_region_epr(x, loc.g_part, box, bins=max(4, round(box / 2.5)))
    return MIPSResult(
        x.cpu(),
        g.cpu(),
        loc.g_part.cpu(),
        local_div.cpu(),
        labels.cpu(),
        pe,
        pd,
        fractions,
        _ratio(pd),
        ratio_spread(local_div, labels),
        _ratio(pe),
        float(loc.g_part.mean()),
        edges,
        density,
        box,
    )


@dataclass
class MIPSSweep:
    """EPR per particle vs packing fraction with the one network trained at ``mips_phi``:
    phis (p,), epr (p,), interface / bulk ratio (p,), share of dense particles (p,)."""

    phis: Tensor
    epr: Tensor
    ratio: Tensor
    dense_share: Tensor


def mips_phi_sweep(s: Settings, net: PropulsionScore, trained: MIPSResult) -> MIPSSweep:
    """Evaluate the network at the packing fractions ``mips_phis`` (plus the trained one)."""
    phis, eprs, ratios, dense = [s.mips_phi], [trained.epr_per_particle], [trained.ratio], []
    dense.append(float(trained.fractions[1:].sum()))
    for j, phi in enumerate(s.mips_phis):
        data = mips_trajectory(
            s, phi, s.mips_n, s.mips_sweep_replicas, 4, s.mips_frame_every, s.seed + 50 + j
        )
        x = data["x"].reshape(-1, *data["x"].shape[2:])
        g = data["g"].reshape(-1, *data["g"].shape[2:])
        r = mips_local_epr(s, net, x, g, phi)
        phis.append(phi)
        eprs.append(r.epr_per_particle)
        ratios.append(r.ratio)
        dense.append(float(r.fractions[1:].sum()))
    order = torch.tensor(phis).argsort()

    def t(v: list[float]) -> Tensor:
        return torch.tensor(v, dtype=torch.float64)[order]

    return MIPSSweep(t(phis), t(eprs), t(ratios), t(dense))


@dataclass
class Movie:
    """A recorded snippet of one MIPS replica for the particle movie: frames (T, N, 2),
    local EPR colours (T, N), currents v_x (T, N, 2) (for eps = 0 the probability velocity
    of x is the drift b_x itself), times (T,), box."""

    frames: Tensor
    colors: Tensor
    currents: Tensor
    times: Tensor
    box: float


def mips_movie(s: Settings, net: PropulsionScore, start: dict[str, Tensor]) -> Movie:
    """Record ``movie_frames`` frames of replica 0, starting from its last training frame,
    and colour each particle by its local EPR (cached simulation, network evaluated here)."""
    key = {
        **_fields(s, "movie_"),
        **{
            k: getattr(s, k) for k in ("mips_n", "mips_phi", "mips_v0", "mips_gamma", "mips_radius")
        },
        **{k: getattr(s, k) for k in ("mips_dt", "mips_thermalize", "mips_frames", "seed")},
    }
    model = mips_model(s)

    def build() -> dict[str, Tensor]:
        dev = scale.device()
        record = max(1, round(s.movie_every / s.mips_dt))
        traj = particles.simulate(
            model,
            1,
            (s.movie_frames - 1) * record,
            s.mips_dt,
            record_every=record,
            thermalize=0.0,
            x0=start["x"][-1, :1].to(dev),
            g0=start["g"][-1, :1].to(dev),
            generator=torch.Generator(device=dev).manual_seed(s.seed + 60),
            method=force_method(model),
        )
        return {"x": traj.x[:, 0].cpu(), "g": traj.g[:, 0].cpu(), "times": traj.times}

    rec = _cached("mips_movie", key, build)
    dev = next(net.parameters()).device
    x, g = rec["x"].to(dev), rec["g"].to(dev)
    _, s_g = evaluate_score(lambda a, b: net(a, b, model.box), x, g, batch=8)
    loc = local_epr(model, x, g, None, s_g)
    return Movie(rec["x"], loc.g_part.cpu(), loc.v_x.cpu(), rec["times"], float(model.box))


# ---- theory checks ------------------------------------------------------------------------
@dataclass
class TheoryChecks:
    """Numbers behind the theory section.

    formula_vs_lyapunov: max relative difference of the card's S and EPR formulas from a
    numeric Lyapunov solve over random parameters; mc_z: the largest |S_MC - S| / standard
    error over the covariance entries of the simulated trap samples (all v0, both dims);
    div_total, div_x, div_g: div v of the spring ring (x-part, g-part, total);
    modal_vs_lyapunov: relative difference of the ring's modal EPR and the Lyapunov EPR.
    """

    formula_vs_lyapunov: float
    mc_z: float
    div_total: float
    div_x: float
    div_g: float
    modal_vs_lyapunov: float


def theory_checks(s: Settings, data: dict[str, Tensor], n_random: int = 20) -> TheoryChecks:
    """Check the exact results numerically (card, "Exact cases")."""
    import numpy as np

    from pflow_explore.theory import linear_sde

    rng = np.random.default_rng(s.seed)
    worst = 0.0
    for _ in range(n_random):
        A, v0, gamma, eps = rng.uniform(0.2, 3.0, 4)
        B = np.array([[A, -v0], [0.0, gamma]])
        D = np.diag([eps, gamma])
        S = linear_sde.lyapunov_covariance(B, D)
        S_card = linear_sde.trapped_aoup_covariance(A, v0, gamma, eps)
        worst = max(worst, float(np.abs(S - S_card).max() / np.abs(S).max()))
        num, card = linear_sde.linear_epr(B, D, S), gamma * v0**2 / (eps * (A + gamma))
        worst = max(worst, abs(num - card) / card)
        num_g = linear_sde.linear_epr(B, D, S, parts=[1])
        card_g = A * gamma * v0**2 / (eps * (A + gamma) ** 2 + gamma * v0**2)
        worst = max(worst, abs(num_g - card_g) / card_g)
    z_max = 0.0
    for j, v0 in enumerate(s.trap_v0s):
        S = linear_sde.trapped_aoup_covariance(s.trap_A, v0, s.trap_gamma, s.trap_eps)
        for dim in range(2):
            z = torch.stack([data["x_test"][j, :, 0, dim], data["g_test"][j, :, 0, dim]], -1)
            z = z.double()
            prod = z[:, :, None] * z[:, None, :]  # (n, 2, 2): E[z z^T] = S (mean 0)
            mean, se = prod.mean(0), prod.std(0) / math.sqrt(z.shape[0])
            z_max = max(z_max, float(((mean - torch.as_tensor(S)) / se).abs().max()))
    n = s.ring_n
    lap = particles.ring_laplacian(n)
    B = linear_sde.spring_network_B(lap, s.ring_A, s.ring_k, s.ring_v0, s.ring_gamma)
    D = linear_sde.spring_network_D(n, s.ring_eps, s.ring_gamma)
    S = linear_sde.lyapunov_covariance(B, D)
    div_x = linear_sde.divergence_of_velocity(B, D, S, parts=range(n))
    div_g = linear_sde.divergence_of_velocity(B, D, S, parts=range(n, 2 * n))
    modal = linear_sde.spring_modal_epr(
        torch.linalg.eigvalsh(lap), s.ring_A, s.ring_k, s.ring_v0, s.ring_gamma, s.ring_eps, 1
    )
    lyap = linear_sde.linear_epr(B, D, S)
    return TheoryChecks(
        worst,
        z_max,
        linear_sde.divergence_of_velocity(B, D, S),
        div_x,
        div_g,
        abs(modal - lyap) / lyap,
    )


# ---- the chapter --------------------------------------------------------------------------
@dataclass
class Results:
    """Everything the chapter shows; ``seconds``: wall time of each step."""

    settings: Settings
    scale: str
    theory: TheoryChecks
    trap: TrapSweep
    trap_current: PhaseCurrent
    trap_losses: list[float]
    ring: RingTransfer
    ring_losses: list[float]
    mips: MIPSResult
    mips_sweep: MIPSSweep
    mips_losses: list[float]
    movie: Movie
    large: MIPSResult | None
    from_cache: bool
    trained_seconds: float
    seconds: dict[str, float] = field(default_factory=dict)


def prepare(s: Settings) -> None:
    """Simulate and train everything (or find it in the cache / shipped folder)."""
    run(s)


def run(s: Settings) -> Results:
    """Compose the steps: the three experiments, each simulate -> train (cached) -> estimate."""
    with scale.torch_threads(s.threads):
        return _run(s)


def _run(s: Settings) -> Results:
    seconds: dict[str, float] = {}
    clock = [time.perf_counter()]
    data = trap_data(s)
    fit_trap = train_trap_score(s)
    seconds["trap: simulate + train"] = _seconds(clock)
    theory = theory_checks(s, data)
    trap = trap_sweep(s, fit_trap.model, data)
    current = trap_phase_current(s, fit_trap.model, data)
    seconds["trap: estimate"] = _seconds(clock)

    fit_ring = train_ring_score(s)
    seconds["ring: simulate + train"] = _seconds(clock)
    ring = ring_transfer(s, fit_ring.model)
    seconds["ring: transfer"] = _seconds(clock)

    traj = mips_trajectory(
        s, s.mips_phi, s.mips_n, s.mips_replicas, s.mips_frames, s.mips_frame_every, s.seed
    )
    fit_mips = train_mips_score(s, traj)
    seconds["mips: simulate + train"] = _seconds(clock)
    evaluation = mips_trajectory(
        s, s.mips_phi, s.mips_n, s.mips_replicas, s.mips_frames, s.mips_frame_every, s.seed + 1
    )
    ex = evaluation["x"].reshape(-1, *evaluation["x"].shape[2:])
    eg = evaluation["g"].reshape(-1, *evaluation["g"].shape[2:])
    mips = mips_local_epr(s, fit_mips.model, ex, eg, s.mips_phi)
    sweep = mips_phi_sweep(s, fit_mips.model, mips)
    movie = mips_movie(s, fit_mips.model, traj)
    large = None
    if s.mips_eval_n:
        big = mips_trajectory(s, s.mips_phi, s.mips_eval_n, 1, 1, 1.0, s.seed + 70)
        large = mips_local_epr(
            s, fit_mips.model, big["x"][0], big["g"][0], s.mips_phi, s.mips_eval_chunk
        )
    seconds["mips: estimate"] = _seconds(clock)
    fits = (fit_trap, fit_ring, fit_mips)
    return Results(
        s,
        s.scale,
        theory,
        trap,
        current,
        fit_trap.losses,
        ring,
        fit_ring.losses,
        mips,
        sweep,
        fit_mips.losses,
        movie,
        large,
        all(f.from_cache for f in fits),
        sum(f.seconds for f in fits),
        seconds,
    )


def claims(r: Results) -> list[Claim]:
    """The card's claims, measured at this scale (criteria fixed before measuring)."""
    sc, s = r.scale, r.settings
    t = r.trap
    worst = int(t.rel_error.abs().argmax())
    out = [
        Claim(
            "exact formulas = numeric Lyapunov (max rel. difference)",
            "S and EPR of the trapped AOUP in closed form (card)",
            r.theory.formula_vs_lyapunov,
            "< 1e-9",
            bool(r.theory.formula_vs_lyapunov < 1e-9),
            sc,
            "20 random (A, v0, gamma, eps); total EPR and g-part; div v of the ring: "
            f"x-part {r.theory.div_x:.3g}, g-part {r.theory.div_g:.3g}, total "
            f"{r.theory.div_total:.2g}",
        ),
        Claim(
            "simulator covariance = Lyapunov (max |z-score|)",
            "the simulator samples the stationary law",
            r.theory.mc_z,
            "< 4.5 standard errors",
            bool(r.theory.mc_z < 4.5),
            sc,
            f"{s.trap_test} held-out samples per v0, {len(s.trap_v0s)} v0 x 2 dims x 3 entries",
        ),
        Claim(
            "learned EPR within 10% of exact across the v0 sweep (max |rel. error|)",
            "learned EPR tracks gamma v0^2 / (eps (A + gamma)) (card)",
            float(t.rel_error.abs().max()),
            "< 0.1 at every v0",
            bool(t.rel_error.abs().max() < 0.1),
            sc,
            f"v0 = {', '.join(f'{v:g}' for v in s.trap_v0s)}; worst at v0 = "
            f"{float(t.v0s[worst]):g}: {float(t.learned[worst]):.4g} vs "
            f"{float(t.exact[worst]):.4g}; one network conditioned on v0",
        ),
    ]
    rg = r.ring
    out.append(
        claim_within(
            f"ring per-particle EPR at the training N = {int(rg.sizes[0])}",
            "per-particle EPR matches the spring-ring modal values (card)",
            float(rg.learned[0]),
            float(rg.exact[0]),
            0.1,
            sc,
            f"x-part {float(rg.learned_x[0]):.3g} (exact {float(rg.exact_x[0]):.3g}), g-part "
            f"{float(rg.learned_g[0]):.3g} (exact {float(rg.exact_g[0]):.3g}); local "
            f"transformer k = {s.ring_knn}",
        )
    )
    for j in range(1, len(rg.sizes)):
        out.append(
            claim_within(
                f"transfer: same network at N = {int(rg.sizes[j])} (no retraining)",
                "a local network trained at N = 64 keeps per-particle EPR at N = 256-512 (card)",
                float(rg.learned[j]),
                float(rg.exact[j]),
                0.1,
                sc,
                f"relative error {float(rg.rel_error[j]):+.3f} (at training N: "
                f"{float(rg.rel_error[0]):+.3f})",
            )
        )
    m = r.mips
    pd_gas = float(m.phase_epr_div[GAS])
    pd_dense = float(
        (m.phase_epr_div[1:] * m.fractions[1:]).sum() / m.fractions[1:].sum().clamp_min(1e-12)
    )
    out.append(
        Claim(
            "MIPS: EPR concentrates at cluster interfaces (interface / bulk local EPR)",
            "the EPR concentrates at MIPS cluster interfaces (paper, N = 4096)",
            m.ratio,
            "> 1",
            bool(m.ratio > 1),
            sc,
            f"+- {m.ratio_se:.2g} (standard error over configurations); N = {s.mips_n}, phi = "
            f"{s.mips_phi}; local EPR -gamma div_(g_i) s_(g_i) - gamma d (card); phases by "
            f"neighbours within 1.2 diameters: dense >= 4, bulk = dense with all neighbours dense,"
            f" interface = dense with a dilute neighbour; shares gas / "
            f"interface / bulk {', '.join(f'{float(f):.2f}' for f in m.fractions)}; "
            f"gamma |g_i + s_(g_i)|^2 gives ratio {m.ratio_pointwise:.3g}; gas {pd_gas:.3g} vs "
            f"dense {pd_dense:.3g}",
        )
    )
    if r.large is not None:
        big = r.large
        out.append(
            claim_within(
                f"same MIPS network at N = {big.x.shape[1]}: EPR per particle",
                "one network trained at 4096 particles generalises to 32768 (paper, gpu scale)",
                big.epr_per_particle,
                m.epr_per_particle,
                0.1,
                sc,
                f"trained at N = {s.mips_n}, evaluated with chunked inference (chunk "
                f"{s.mips_eval_chunk}) on {big.x.shape[0]} configuration(s) of a freshly "
                f"simulated box at the same phi; interface / bulk there {big.ratio:.3g}; "
                f"gamma |g + s_g|^2 per particle, the reference is the N = {s.mips_n} value",
            )
        )
    return out


# ---- figures ------------------------------------------------------------------------------
def _v(t: Tensor) -> list[float | None]:
    """Plain floats for plotly; NaN (an empty phase) becomes None, a gap: a NaN in a
    FigureWidget's data is not valid JSON and stops the widget's updates in the browser."""
    return [v if math.isfinite(v) else None for v in t.detach().cpu().double().reshape(-1).tolist()]


def _style(fig: go.Figure, title: str, x: str, y: str, height: int = 380) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", height=height, width=560)
    fig.update_xaxes(title=x)
    fig.update_yaxes(title=y)
    return fig


def trap_sweep_figure(r: Results) -> go.Figure:
    """Learned vs exact EPR (total and g-part) against v0."""
    t = r.trap
    grid = torch.linspace(0, float(t.v0s.max()) * 1.05, 60, dtype=torch.float64)
    s = r.settings
    exact = 2 * s.trap_gamma * grid**2 / (s.trap_eps * (s.trap_A + s.trap_gamma))
    fig = go.Figure(
        [
            go.Scatter(x=_v(grid), y=_v(exact), name="exact 2 gamma v0^2 / (eps (A + gamma))"),
            go.Scatter(
                x=_v(t.v0s),
                y=_v(t.learned),
                mode="markers",
                name="learned, total",
                marker=dict(size=10),
            ),
            go.Scatter(
                x=_v(t.v0s),
                y=_v(t.exact_g),
                mode="lines",
                name="exact g-part",
                line=dict(dash="dash"),
            ),
            go.Scatter(
                x=_v(t.v0s),
                y=_v(t.learned_g),
                mode="markers",
                name="learned g-part",
                marker=dict(symbol="diamond", size=9),
            ),
        ]
    )
    return _style(fig, "Trapped AOUP: entropy production vs v0", "v0", "EPR (d = 2)")


def trap_current_figure(r: Results) -> go.Figure:
    """Probability current rho v in the (x_1, g_1) plane: learned (arrows) and exact."""
    from pflow_explore.viz.fields import quiver_trace

    c = r.trap_current
    gx, gy = torch.meshgrid(c.cx, c.cy, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    J_l, J_e = c.J_learned.reshape(-1, 2), c.J_exact.reshape(-1, 2)
    spacing = float(min(c.cx[1] - c.cx[0], c.cy[1] - c.cy[0]))
    scale_ = 0.9 * spacing / max(float(J_e.norm(dim=-1).max()), 1e-12)
    fig = go.Figure(
        [
            go.Heatmap(
                x=_v(c.cx),
                y=_v(c.cy),
                z=c.rho.tolist(),
                colorscale="Blues",
                showscale=False,
                opacity=0.6,
            ),
            quiver_trace(
                pts.numpy(), J_e.numpy(), scale_, color="rgba(120,120,120,0.8)", name="exact"
            ),
            quiver_trace(
                pts.numpy(), J_l.numpy(), scale_, color="rgba(200,30,30,0.9)", name="learned"
            ),
        ]
    )
    fig.update_layout(showlegend=True)
    return _style(
        fig, f"Probability current in (x_1, g_1), v0 = {c.v0:g}", "x_1", "g_1", height=420
    )


def ring_figure(r: Results) -> go.Figure:
    """Per-particle EPR along the ring at each N, learned, with the exact modal value."""
    rg = r.ring
    fig = go.Figure()
    for j, n in enumerate(rg.sizes.tolist()):
        fig.add_scatter(
            x=_v(torch.arange(n) / n),
            y=_v(rg.per_particle[j]),
            mode="markers",
            name=f"learned, N = {n}",
            marker=dict(size=4),
        )
        fig.add_scatter(
            x=[0, 1],
            y=[float(rg.exact[j])] * 2,
            mode="lines",
            name=f"exact, N = {n}",
            line=dict(dash="dash"),
        )
    return _style(
        fig,
        "Spring ring: per-particle EPR (trained at the first N)",
        "position along the ring i / N",
        "EPR per particle",
    )


def mips_snapshot_figure(r: Results, index: int = 0) -> go.Figure:
    """One MIPS configuration: particles coloured by local EPR, shaped by phase (open
    circle: gas, circle: interface, square: bulk)."""
    m = r.mips
    x = particles.wrap(m.x[index], m.box)
    symbols = ["circle-open", "circle", "square"]
    labels = m.labels[index].tolist()
    fig = go.Figure(
        go.Scatter(
            x=_v(x[:, 0]),
            y=_v(x[:, 1]),
            mode="markers",
            text=[PHASE_NAMES[p] for p in labels],
            marker=dict(
                size=7,
                symbol=[symbols[p] for p in labels],
                color=_v(m.local[index]),
                colorscale="Viridis",
                cmin=0.0,
                cmax=float(m.local.quantile(0.98)),
                showscale=True,
                colorbar=dict(title=dict(text="local EPR")),
            ),
            hovertemplate="%{text}<br>local EPR %{marker.color:.3g}<extra></extra>",
        )
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return _style(
        fig,
        f"MIPS (N = {x.shape[0]}): local EPR; open circle gas, dot interface, square bulk",
        "x",
        "y",
        height=520,
    )


def mips_region_figure(r: Results) -> go.Figure:
    """EPR density per region (a coarse grid over the box), averaged over configurations."""
    m = r.mips
    e = m.region_edges
    c = (e[1:] + e[:-1]) / 2
    fig = go.Figure(
        go.Heatmap(
            x=_v(c),
            y=_v(c),
            z=m.region_density.tolist(),
            colorscale="Magma",
            colorbar=dict(title="EPR / area"),
        )
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return _style(fig, "MIPS: EPR per region", "x", "y", height=480)


def mips_phase_figure(r: Results) -> go.Figure:
    """Mean local EPR in gas, interface and bulk, both estimators."""
    m = r.mips
    fig = go.Figure(
        [
            go.Bar(x=list(PHASE_NAMES), y=_v(m.phase_epr), name="gamma |g + s_g|^2"),
            go.Bar(x=list(PHASE_NAMES), y=_v(m.phase_epr_div), name="-gamma div_g s_g - gamma d"),
        ]
    )
    return _style(
        fig,
        f"MIPS: local EPR by phase (interface / bulk = {m.ratio:.2f})",
        "phase",
        "mean local EPR",
    )


def mips_sweep_figure(r: Results) -> go.Figure:
    """EPR per particle vs packing fraction (one network trained at mips_phi)."""
    w = r.mips_sweep
    fig = go.Figure(
        [
            go.Scatter(x=_v(w.phis), y=_v(w.epr), mode="lines+markers", name="EPR per particle"),
            go.Scatter(
                x=_v(w.phis),
                y=_v(w.dense_share),
                mode="lines+markers",
                name="share of dense particles",
                yaxis="y2",
            ),
        ]
    )
    fig.update_layout(yaxis2=dict(overlaying="y", side="right", title="dense share", range=[0, 1]))
    return _style(
        fig,
        f"EPR vs packing fraction (trained at phi = {r.settings.mips_phi})",
        "packing fraction phi",
        "g-part EPR per particle",
    )


def losses_figure(r: Results) -> go.Figure:
    """Training losses of the three networks."""
    fig = go.Figure()
    for name, losses in (("trap", r.trap_losses), ("ring", r.ring_losses), ("MIPS", r.mips_losses)):
        fig.add_scatter(y=losses, name=name, mode="lines")
    return _style(fig, "Score-matching losses (per particle)", "step", "loss")


def figures(r: Results) -> dict[str, go.Figure]:
    return {
        "trap_sweep": trap_sweep_figure(r),
        "trap_current": trap_current_figure(r),
        "ring": ring_figure(r),
        "mips_snapshot": mips_snapshot_figure(r),
        "mips_regions": mips_region_figure(r),
        "mips_phases": mips_phase_figure(r),
        "mips_sweep": mips_sweep_figure(r),
        "losses": losses_figure(r),
    }


def preview() -> go.Figure:
    """The exact probability current of a trapped AOUP in its (x, g) plane: v = M z with
    M = -B + D S^-1 and the card's closed-form S (A = gamma = eps = v0 = 1), a rotation
    around the density's ellipse. Evaluated directly (no sympy, no training)."""
    from pflow_explore.viz.fields import quiver_trace

    A = gamma = eps = v0 = 1.0
    S = torch.tensor(
        [[(eps + v0**2 / (A + gamma)) / A, v0 / (A + gamma)], [v0 / (A + gamma), 1.0]],
        dtype=torch.float64,
    )
    B = torch.tensor([[A, -v0], [0.0, gamma]], dtype=torch.float64)
    D = torch.diag(torch.tensor([eps, gamma], dtype=torch.float64))
    M = -B + D @ torch.linalg.inv(S)
    lin = torch.linspace(-2.2, 2.2, 11, dtype=torch.float64)
    gx, gy = torch.meshgrid(lin, lin, indexing="xy")
    z = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    rho = torch.exp(-0.5 * (z @ torch.linalg.inv(S) * z).sum(-1))
    current = rho[:, None] * (z @ M.T)
    fig = go.Figure(
        [
            go.Heatmap(
                x=lin.tolist(),
                y=lin.tolist(),
                z=rho.reshape(11, 11).tolist(),
                colorscale="Blues",
                showscale=False,
            ),
            quiver_trace(z.numpy(), current.numpy(), 0.35, color="rgba(180,20,20,0.9)"),
        ]
    )
    fig.update_layout(
        height=220,
        width=220,
        margin=dict(l=5, r=5, t=5, b=5),
        showlegend=False,
        template="plotly_white",
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


# ---- exercises: references and random inputs --------------------------------------------------
def _solution_probability_velocity(
    z: Tensor, s: Tensor, v0: float, A: float, gamma: float, eps: float
) -> Tensor:
    """Exercise 1: v = b - D s for the trapped AOUP per dimension, z = (x, g), s (n, 2)."""
    x, g = z[:, 0], z[:, 1]
    v_x = v0 * g - A * x - eps * s[:, 0]
    v_g = -gamma * g - gamma * s[:, 1]
    return torch.stack([v_x, v_g], dim=-1)


def exercise_velocity_inputs(gen: torch.Generator) -> tuple:
    z = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    s = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    a, v0, gamma, eps = (float(v) for v in torch.rand(4, generator=gen) * 2 + 0.2)
    return z, s, v0, a, gamma, eps


def _solution_epr_from_velocity(v_x: Tensor, v_g: Tensor, eps: float, gamma: float) -> Tensor:
    """Exercise 2: EPR = E[|v_x|^2 / eps + |v_g|^2 / gamma], sum over particles and dims,
    mean over samples; v_x, v_g (n, N, d) -> scalar."""
    return ((v_x**2).sum((-1, -2)) / eps + (v_g**2).sum((-1, -2)) / gamma).mean()


def exercise_epr_inputs(gen: torch.Generator) -> tuple:
    v_x = torch.randn(64, 3, 2, generator=gen, dtype=torch.float64)
    v_g = torch.randn(64, 3, 2, generator=gen, dtype=torch.float64)
    eps, gamma = (float(v) for v in torch.rand(2, generator=gen) * 2 + 0.1)
    return v_x, v_g, eps, gamma


def _solution_ou_update(g: Tensor, xi: Tensor, gamma: float, dt: float) -> Tensor:
    """Exercise 3: the exact OU step g' = e^{-gamma dt} g + sqrt(1 - e^{-2 gamma dt}) xi."""
    return math.exp(-gamma * dt) * g + math.sqrt(1 - math.exp(-2 * gamma * dt)) * xi


def exercise_ou_inputs(gen: torch.Generator) -> tuple:
    g = torch.randn(32, 2, generator=gen, dtype=torch.float64)
    xi = torch.randn(32, 2, generator=gen, dtype=torch.float64)
    gamma, dt = float(torch.rand(1, generator=gen)) * 2 + 0.05, float(torch.rand(1, generator=gen))
    return g, xi, gamma, dt
