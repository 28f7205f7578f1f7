"""Chapter 12: the probability flow of active particles and where entropy is produced
(Boffi & Vanden-Eijnden 2023, card 12_active_matter).

Active Ornstein-Uhlenbeck particles (``datasets.particles``) have a stationary density rho
over positions x and propulsions g that nobody can write down. Its score s = grad log rho is
*learned* from samples (``score_matching``), and with the known drift b and diffusion D it
gives the probability velocity v = b - D s, the EPR and its local parts (``epr``).

The named experiments, each callable on its own (``run`` composes them):

0. :func:`theory_checks`: the closed forms against numeric Lyapunov solves and the simulator;
1. :func:`trap_experiment`: one MLP conditioned on v0 (:class:`TrapScore`) learns the trapped
   AOUP's score by dynamics denoising; learned vs exact EPR across v0, and the current;
2. :func:`ring_experiment`: a local transformer (:class:`ChainScore`) trained on a spring ring
   of one N, its per-particle EPR vs the modal formula there and at larger N;
3. :func:`mips_experiment`: a small MIPS box (eps = 0, g-denoising, :class:`PropulsionScore`),
   the local EPR by phase (:func:`interface_labels`); then :func:`mips_phi_sweep`,
   :func:`mips_movie` and :func:`mips_large_box` with the same network.

Shapes: particle states are (n, N, d): n configurations of N particles in d = 2.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import plotly.graph_objects as go
import torch
from torch import Tensor, nn

from pflow_explore import cache, scale
from pflow_explore.claims import Claim, claim_within
from pflow_explore.datasets import particles
from pflow_explore.datasets.particles import AOUP
from pflow_explore.epr import (
    aoup_drift,
    aoup_local_epr,
    aoup_probability_velocity,
    local_epr_g_from_divergence,
    per_region_epr,
    probability_current_field,
    total_epr,
)
from pflow_explore.experiment import Seeds, Stopwatch, cache_key, choose, presets, torch_threads
from pflow_explore.nets.local_transformer import LocalTransformer, knn
from pflow_explore.score_matching import (
    ScoreFn,
    denoising_loss,
    dynamics_denoising_loss,
    evaluate_score,
    g_block_divergence,
)
from pflow_explore.training import FitResult, fit_cached

T = TypeVar("T")
CHAPTER = "active_matter"
VERSION = 1  # part of every cache key: bump when simulation or training code changes


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
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(
            len(self.trap_v0s) >= 1 and all(v > 0 for v in self.trap_v0s),
            f"trap_v0s must be one or more speeds > 0, got {self.trap_v0s}",
        )
        for name in ("trap_A", "trap_gamma", "trap_eps", "ring_gamma", "ring_eps", "ring_A"):
            need(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        for phi in (self.mips_phi, *self.mips_phis):
            need(0 < phi < 0.9, f"mips_phi and mips_phis must lie in (0, 0.9), got {phi}")
        need(
            self.ring_n >= 8 and all(n >= 8 for n in self.ring_n_eval),
            f"ring sizes must be >= 8, got {self.ring_n}, {self.ring_n_eval}",
        )
        need(self.mips_n >= 16, f"mips_n must be >= 16, got {self.mips_n}")
        counts = ("trap_samples", "trap_test", "trap_steps", "trap_batch", "ring_samples")
        counts += ("ring_test", "ring_steps", "ring_batch", "mips_replicas", "mips_frames")
        for name in (*counts, "mips_steps", "mips_batch", "movie_frames"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("dyn_dt", "sim_dt", "mips_dt", "mips_sigma", "mips_frame_every"):
            need(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        need(self.dyn_dt <= 0.05, f"dyn_dt must be <= 0.05 (one small step), got {self.dyn_dt}")


# fmt: off
SETTINGS = presets(
    Settings,
    tiny=dict(
        trap_samples=4096, trap_test=1024, trap_hidden=32, trap_depth=2, trap_steps=400,
        trap_batch=128,
        ring_n=16, ring_n_eval=(32,), ring_samples=64, ring_test=16, ring_knn=4, ring_width=16,
        ring_layers=1, ring_steps=60, ring_batch=4,
        mips_n=64, mips_replicas=1, mips_thermalize=50.0, mips_frames=4, mips_phis=(),
        mips_eval_n=0, mips_knn=8, mips_width=16, mips_layers=1, mips_steps=40, mips_batch=2,
        movie_frames=8,
    ),
    cpu={},
    gpu=dict(
        trap_samples=262144, trap_test=65536, trap_hidden=128, trap_steps=4000,
        trap_batch=1024,
        ring_n_eval=(256, 1024), ring_samples=2048, ring_test=256, ring_knn=16, ring_width=64,
        ring_steps=3000, ring_batch=32,
        mips_n=4096, mips_replicas=16, mips_thermalize=2000.0, mips_frames=16,
        mips_frame_every=25.0, mips_knn=32, mips_width=128, mips_layers=3, mips_steps=2000,
        mips_batch=4, mips_lr=1e-3, mips_phis=(0.3, 0.4, 0.6, 0.7), mips_sweep_replicas=4,
        mips_eval_n=32768, mips_eval_chunk=2048,
        movie_frames=60, threads=None,
    ),
)
# fmt: on

# Seed streams, one per experiment: the offsets are the historical s.seed + k of the shipped
# artifacts (never renumber one). Every network's initial weights come from s.seed itself.
TRAP_SEEDS = dict(test=0, train=1, estimate=2)  # "train": the training samples and batches
RING_SEEDS = dict(train_data=10, train=11, test=(20, 1))
MIPS_SEEDS = dict(frames=0, eval_frames=1, train=31, estimate=40, sweep=(50, 1), movie=60, large=70)


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


def _cached(name: str, key: dict[str, object], build: Callable[[], dict]) -> dict:
    obj, _ = cache.cached(CHAPTER, name, key, build, version=VERSION)
    return obj


def _pinned(experiment: Callable[..., T]) -> Callable[..., T]:
    """Run an experiment ``f(s, ...)`` on ``s.threads`` torch threads, called alone (from the
    notebook) or from :func:`run`: the same thread count, so the same reductions and numbers."""

    @functools.wraps(experiment)
    def pinned(s: Settings, *args: Any, **kw: Any) -> T:
        with torch_threads(s.threads):
            return experiment(s, *args, **kw)

    return pinned


def aoup_dynamics_loss(
    score: ScoreFn, model: AOUP, x: Tensor, g: Tensor, dt: float, gen: torch.Generator
) -> Tensor:
    """``score_matching.dynamics_denoising_loss`` with the AOUP's drift
    (v0 g - A x + F(x), -gamma g) and diffusion (eps, gamma) (card, "Score learning")."""
    drift = lambda xx, gg: aoup_drift(model, xx, gg)  # noqa: E731
    noise = (model.eps, model.gamma)
    return dynamics_denoising_loss(score, drift, noise, x, g, dt, gen, model.box)


def _train(
    s: Settings, name: str, key: dict, make: Callable[[], nn.Module], loss_fn: Callable, **kw: Any
) -> FitResult:
    """fit_cached (cosine schedule) with the network's initial weights drawn from torch's
    global generator seeded with ``s.seed``, forked: nothing outside the run sees the draw."""
    with torch.random.fork_rng(devices=[]), torch_threads(s.threads):
        torch.manual_seed(s.seed)
        dev = scale.device()
        return fit_cached(
            CHAPTER, name, key, make, loss_fn, version=VERSION, device=dev, cosine=True, **kw
        )


# ---- the physical models and their score networks --------------------------------------------
def trap_model(s: Settings, v0: float) -> AOUP:
    """One AOUP in the harmonic trap A (card, "Exact cases"); independent particles."""
    return AOUP(1, v0, gamma=s.trap_gamma, eps=s.trap_eps, A=s.trap_A, interaction="none")


def ring_model(s: Settings, n: int) -> AOUP:
    """n AOUPs on a spring ring: dx = (v0 g - (A I + k L) x) dt + sqrt(2 eps) dW."""
    return AOUP(
        n, s.ring_v0, gamma=s.ring_gamma, eps=s.ring_eps, A=s.ring_A, k=s.ring_k, interaction="ring"
    )


def mips_model(s: Settings, phi: float | None = None, n: int | None = None) -> AOUP:
    """Soft discs in a periodic box at packing fraction phi (A = 0, eps = 0: card, MIPS)."""
    return particles.mips_model(
        n or s.mips_n, phi or s.mips_phi, v0=s.mips_v0, gamma=s.mips_gamma, radius=s.mips_radius
    )


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
        self.net = nn.Sequential(*layers, nn.Linear(width, 2 * dim))

    def forward(self, x: Tensor, g: Tensor, v0: float | Tensor) -> tuple[Tensor, Tensor]:
        v = torch.as_tensor(v0, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        out = self.net(torch.cat([x, g, v.expand(x.shape[0], x.shape[1], 1)], dim=-1))
        return out[..., : self.dim], out[..., self.dim :] - g


def make_local_net(
    feature_dim: int, out_dim: int, k: int, width: int, layers: int, heads: int, scale_: float
) -> LocalTransformer:
    """The local transformer of the card (k nearest neighbours, wrapped coordinates); its box
    is replaced per call: it follows N (ring) or the packing fraction (MIPS)."""
    return LocalTransformer(
        dim=2,
        feature_dim=feature_dim,
        out_dim=out_dim,
        k=k,
        width=width,
        layers=layers,
        heads=heads,
        box=1.0,
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
        self.net.box = box = n * self.spacing  # the periodic line grows with N; weights don't
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
            raise ValueError("PropulsionScore needs a LocalTransformer with feature_dim = 2")
        self.net = net

    def forward(
        self, x: Tensor, g: Tensor, box: float, chunk: int | None = None
    ) -> tuple[None, Tensor]:
        self.net.box = float(box)
        return None, self.net.forward_chunked(x, g, chunk) - g


# ---- experiment 0: the exact results, checked numerically -------------------------------------
@dataclass
class TheoryChecks:
    """formula_vs_lyapunov: max relative difference of the card's S and EPR formulas from a
    numeric Lyapunov solve over random parameters; mc_z: the largest |S_MC - S| / standard
    error over the covariance entries of the simulated trap samples (all v0, both dims);
    div_total, div_x, div_g: div v of the spring ring (x-part, g-part, total);
    modal_vs_lyapunov: relative difference of the ring's modal EPR and the Lyapunov EPR."""

    formula_vs_lyapunov: float
    mc_z: float
    div_total: float
    div_x: float
    div_g: float
    modal_vs_lyapunov: float


@_pinned
def theory_checks(s: Settings, data: dict[str, Tensor], n_random: int = 20) -> TheoryChecks:
    """Check the exact results numerically (card, "Exact cases")."""
    import numpy as np

    from pflow_explore.theory import linear_sde

    rng = np.random.default_rng(s.seed)
    worst = 0.0
    for _ in range(n_random):
        A, v0, gamma, eps = rng.uniform(0.2, 3.0, 4)
        B, D = np.array([[A, -v0], [0.0, gamma]]), np.diag([eps, gamma])
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
            prod = z.double()[:, :, None] * z.double()[:, None, :]  # E[z z^T] = S (mean 0)
            mean, se = prod.mean(0), prod.std(0) / math.sqrt(z.shape[0])
            z_max = max(z_max, float(((mean - torch.as_tensor(S)) / se).abs().max()))
    n, lap = s.ring_n, particles.ring_laplacian(s.ring_n)
    B = linear_sde.spring_network_B(lap, s.ring_A, s.ring_k, s.ring_v0, s.ring_gamma)
    D = linear_sde.spring_network_D(n, s.ring_eps, s.ring_gamma)
    S = linear_sde.lyapunov_covariance(B, D)
    modal = linear_sde.spring_modal_epr(
        torch.linalg.eigvalsh(lap), s.ring_A, s.ring_k, s.ring_v0, s.ring_gamma, s.ring_eps, 1
    )
    lyap = linear_sde.linear_epr(B, D, S)
    return TheoryChecks(
        worst,
        z_max,
        linear_sde.divergence_of_velocity(B, D, S),
        linear_sde.divergence_of_velocity(B, D, S, parts=range(n)),
        linear_sde.divergence_of_velocity(B, D, S, parts=range(n, 2 * n)),
        abs(modal - lyap) / lyap,
    )


# ---- experiment 1: the trapped AOUP across v0 -----------------------------------------------
def trap_samples(s: Settings, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """n stationary samples per v0 from n independent replicas, each thermalized for
    10 relaxation times (card, "Traps"): (x, g) each (m, n, 1, d)."""
    gen = torch.Generator().manual_seed(seed)
    samples = [
        particles.stationary_samples(trap_model(s, v0), n, s.sim_dt, n_replicas=n, generator=gen)
        for v0 in s.trap_v0s
    ]
    return torch.stack([x for x, _ in samples]), torch.stack([g for _, g in samples])


def trap_data(s: Settings) -> dict[str, Tensor]:
    """Held-out stationary samples of the trapped AOUP from the simulator, per v0 (cached,
    shipped): {"x_test", "g_test"} each (m, n, 1, d) for the m values of ``trap_v0s``."""
    key = cache_key(
        s, ("trap_v0s", "trap_A", "trap_gamma", "trap_eps", "trap_test", "sim_dt", "seed")
    )

    def build() -> dict[str, Tensor]:
        x, g = trap_samples(s, s.trap_test, Seeds(s.seed, **TRAP_SEEDS)["test"])
        return {"x_test": x, "g_test": g}

    return _cached("trap_data", key, build)


def train_trap_score(s: Settings) -> FitResult:
    """One :class:`TrapScore` for every v0 of the sweep, trained with the dynamics-denoising
    loss on ``trap_batch`` samples per v0 and step, drawn from ``trap_samples`` fresh
    simulated samples per v0 (cached)."""
    dev, seeds = scale.device(), Seeds(s.seed, **TRAP_SEEDS)
    data = functools.cache(
        lambda: tuple(t.to(dev) for t in trap_samples(s, s.trap_samples, seeds["train"]))
    )
    models = [trap_model(s, v0) for v0 in s.trap_v0s]
    gen = seeds.generator("train", device=dev)

    def loss_fn(net: nn.Module, step: int) -> Tensor:
        xs, gs = data()
        total = torch.zeros((), device=dev)
        for j, m in enumerate(models):
            idx = torch.randint(xs.shape[1], (s.trap_batch,), generator=gen, device=dev)
            score = lambda x, g, v0=m.v0: net(x, g, v0)  # noqa: E731
            total = total + aoup_dynamics_loss(score, m, xs[j, idx], gs[j, idx], s.dyn_dt, gen)
        return total / len(models)

    return _train(
        s,
        "trap_score",
        cache_key(s, ("dyn_dt", "sim_dt", "seed"), prefix="trap_"),
        lambda: TrapScore(2, s.trap_hidden, s.trap_depth),
        loss_fn,
        steps=s.trap_steps,
        lr=s.trap_lr,
        warmup=min(100, s.trap_steps // 10),
        ema_decay=s.ema_decay,
        desc=f"active_matter: trap score ({s.scale})",
    )


@dataclass
class PhaseCurrent:
    """The probability current in one particle's (x_1, g_1) plane at one v0: learned
    (from the network's v) and exact (v = M z of the Lyapunov solution) at the same samples,
    binned (``epr.probability_current_field``). cx, cy (bins,), J_* (bins, bins, 2)."""

    v0: float
    cx: Tensor
    cy: Tensor
    rho: Tensor
    J_learned: Tensor
    J_exact: Tensor


@dataclass
class TrapResult:
    """Learned vs exact EPR of the trapped AOUP (total over d = 2 dimensions) per v0.

    v0s (m,); exact, learned (m,): the total EPR; exact_g, learned_g (m,): the g-part;
    learned_g_div (m,): the g-part by the card's divergence form; learned_x (m,);
    per_sample (m, n): the per-sample EPR v . D^-1 v (its histogram); current: at the last
    v0; fit: the network and its losses.
    """

    settings: Settings
    v0s: Tensor
    exact: Tensor
    learned: Tensor
    exact_g: Tensor
    learned_g: Tensor
    learned_g_div: Tensor
    learned_x: Tensor
    per_sample: Tensor
    current: PhaseCurrent
    fit: FitResult

    @property
    def rel_error(self) -> Tensor:
        return (self.learned - self.exact) / self.exact


def trap_phase_current(
    s: Settings, net: TrapScore, data: dict[str, Tensor], index: int = -1, bins: int = 12
) -> PhaseCurrent:
    """Learned and exact probability currents of the trapped AOUP in the (x_1, g_1) plane."""
    from pflow_explore.theory import linear_sde  # imports sympy: not at module import

    v0 = s.trap_v0s[index]
    dev = next(net.parameters()).device
    x, g = data["x_test"][index].to(dev), data["g_test"][index].to(dev)
    s_x, s_g = evaluate_score(lambda a, b: net(a, b, v0), x, g, batch=4096)
    v_x, v_g = aoup_probability_velocity(trap_model(s, v0), x, g, s_x, s_g)
    B = linear_sde.spring_network_B([[0.0]], s.trap_A, 0.0, v0, s.trap_gamma)
    D = linear_sde.spring_network_D(1, s.trap_eps, s.trap_gamma)
    S = linear_sde.lyapunov_covariance(B, D)
    z = torch.stack([x[:, 0, 0], g[:, 0, 0]], dim=-1).double().cpu()
    lims = ((-2.5 * math.sqrt(S[0, 0]), 2.5 * math.sqrt(S[0, 0])), (-2.5, 2.5))
    v_learned = torch.stack([v_x[:, 0, 0], v_g[:, 0, 0]], -1)
    cx, cy, J_l, rho = probability_current_field(z, v_learned, *lims, bins)
    _, _, J_e, _ = probability_current_field(
        z, linear_sde.probability_velocity(B, D, S, z), *lims, bins
    )
    return PhaseCurrent(float(v0), cx, cy, rho, J_l, J_e)


@_pinned
def trap_experiment(s: Settings) -> TrapResult:
    """Train (or load) :class:`TrapScore`, then estimate the EPR from the learned score on
    held-out samples at every v0 beside the exact gamma v0^2 / (eps (A + gamma)) per
    dimension (card, "Exact cases"), and the current at the largest v0."""
    from pflow_explore.theory import linear_sde  # imports sympy: not at module import

    data, fit = trap_data(s), train_trap_score(s)
    net = fit.model
    dev = next(net.parameters()).device
    gen = Seeds(s.seed, **TRAP_SEEDS).generator("estimate", device=dev)
    names = ("exact", "learned", "exact_g", "learned_g", "learned_g_div", "learned_x")
    rows: dict[str, list[float]] = {k: [] for k in names}
    per_sample = []
    for j, v0 in enumerate(s.trap_v0s):
        model = trap_model(s, v0)
        x, g = data["x_test"][j].to(dev), data["g_test"][j].to(dev)
        score = lambda xx, gg, v0=v0: net(xx, gg, v0)  # noqa: E731
        loc = aoup_local_epr(model, x, g, *evaluate_score(score, x, g, batch=4096))
        div = g_block_divergence(score, x, g, gen, probes=4)
        args = (s.trap_A, v0, s.trap_gamma, s.trap_eps)
        rows["exact"].append(linear_sde.trapped_aoup_epr(*args))
        rows["exact_g"].append(linear_sde.trapped_aoup_epr_g(*args))
        rows["learned"].append(total_epr(loc.per_particle))
        rows["learned_g"].append(total_epr(loc.g_part))
        rows["learned_x"].append(total_epr(loc.x_part))
        rows["learned_g_div"].append(total_epr(local_epr_g_from_divergence(div, s.trap_gamma)))
        per_sample.append(loc.per_particle.sum(-1).cpu())
    return TrapResult(
        settings=s,
        v0s=torch.tensor(s.trap_v0s, dtype=torch.float64),
        **{k: torch.tensor(v, dtype=torch.float64) for k, v in rows.items()},
        per_sample=torch.stack(per_sample),
        current=trap_phase_current(s, net, data),
        fit=fit,
    )


# ---- experiment 2: a spring ring, trained at one N, evaluated at larger N ----------------------
def ring_samples(s: Settings, n: int, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` stationary configurations of the n-particle ring from the simulator:
    (x, g) each (count, n, d)."""
    gen = torch.Generator().manual_seed(seed)
    return particles.stationary_samples(ring_model(s, n), count, s.sim_dt, generator=gen)


def ring_data(s: Settings, n: int, count: int, seed: int) -> dict[str, Tensor]:
    """Held-out ring configurations (cached, shipped): {"x", "g"} each (count, n, d)."""
    names = ("ring_v0", "ring_A", "ring_k", "ring_gamma", "ring_eps", "sim_dt")
    key = cache_key(s, names, n=n, count=count, seed=seed)

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
    """The local transformer of the ring, trained at N = ``ring_n`` with the dynamics-
    denoising loss on ``ring_batch`` configurations per step, drawn from ``ring_samples``
    simulated configurations (cached)."""
    dev, seeds = scale.device(), Seeds(s.seed, **RING_SEEDS)
    data = functools.cache(
        lambda: tuple(
            t.to(dev) for t in ring_samples(s, s.ring_n, s.ring_samples, seeds["train_data"])
        )
    )
    m = ring_model(s, s.ring_n)
    gen = seeds.generator("train", device=dev)

    def loss_fn(net: nn.Module, step: int) -> Tensor:
        x, g = data()
        idx = torch.randint(x.shape[0], (s.ring_batch,), generator=gen, device=dev)
        return aoup_dynamics_loss(net, m, x[idx], g[idx], s.dyn_dt, gen)

    key = cache_key(
        s, ("dyn_dt", "sim_dt", "seed"), prefix="ring_", exclude=("ring_n_eval", "ring_test")
    )
    return _train(
        s,
        "ring_score",
        key,
        lambda: make_ring_score(s),
        loss_fn,
        steps=s.ring_steps,
        lr=s.ring_lr,
        warmup=min(50, s.ring_steps // 10),
        ema_decay=s.ema_decay,
        desc=f"active_matter: ring local score ({s.scale})",
    )


def ring_exact(s: Settings, n: int) -> tuple[float, float, float]:
    """(total, x-part, g-part) per particle of the n-ring in d = 2: the modal formula
    sum_q gamma v0^2 / (eps (A + k lambda_q + gamma)) for the total (card), the Lyapunov
    solution (``linear_sde``) for the parts."""
    from pflow_explore.theory import linear_sde  # imports sympy: not at module import

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


@dataclass
class RingResult:
    """Per-particle EPR of the spring ring, learned vs exact, at each evaluated N.

    sizes (q,): N (the training N first); exact (q,): the modal formula / N; learned (q,):
    mean over particles and configurations; learned_x, learned_g (q,): its x- and g-parts;
    exact_x, exact_g (q,); per_particle: list of (N,) learned per-particle EPR at each N;
    fit: the network and its losses.
    """

    sizes: Tensor
    exact: Tensor
    learned: Tensor
    exact_x: Tensor
    exact_g: Tensor
    learned_x: Tensor
    learned_g: Tensor
    per_particle: list[Tensor]
    fit: FitResult

    @property
    def rel_error(self) -> Tensor:
        return (self.learned - self.exact) / self.exact


@_pinned
def ring_experiment(s: Settings) -> RingResult:
    """Train (or load) the ring network at N = ``ring_n``, then evaluate it there and at
    every N of ``ring_n_eval`` on fresh configurations, without retraining (card, "Small
    reproduction")."""
    fit = train_ring_score(s)
    dev = next(fit.model.parameters()).device
    names = ("exact", "exact_x", "exact_g", "learned", "learned_x", "learned_g")
    rows: dict[str, list[float]] = {k: [] for k in names}
    per_particle = []
    sizes = (s.ring_n, *s.ring_n_eval)
    for j, n in enumerate(sizes):
        seed = Seeds(s.seed, **RING_SEEDS).seed("test", j)
        data = ring_data(s, n, max(4, s.ring_test * s.ring_n // n), seed)
        x, g = data["x"].to(dev), data["g"].to(dev)
        loc = aoup_local_epr(ring_model(s, n), x, g, *evaluate_score(fit.model, x, g, batch=16))
        learned = (loc.per_particle.mean(), loc.x_part.mean(), loc.g_part.mean())
        for name, value in zip(names, (*ring_exact(s, n), *learned), strict=True):
            rows[name].append(float(value))
        per_particle.append(loc.per_particle.mean(0).cpu().double())
    return RingResult(
        sizes=torch.tensor(sizes),
        **{k: torch.tensor(v, dtype=torch.float64) for k, v in rows.items()},
        per_particle=per_particle,
        fit=fit,
    )


# ---- experiment 3: a small MIPS box ---------------------------------------------------------
def force_method(model: AOUP) -> str:
    """Cell lists whenever the box holds >= 3 interaction ranges a side: at N = 256 they
    took half the CPU time of all pairs here (the simulator's "auto" switches at N = 1024)."""
    big = model.box is not None and model.box >= 3 * model.interaction_range
    return "cells" if big else "dense"


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
    key = cache_key(
        s,
        ("mips_v0", "mips_gamma", "mips_radius", "mips_dt"),
        phi=phi,
        n=n,
        replicas=replicas,
        frames=frames,
        every=every,
        seed=seed,
        thermalize=thermalize,
    )

    def build() -> dict[str, Tensor]:
        dev, model = scale.device(), mips_model(s, phi, n)
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


def _configurations(traj: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Frames x replicas pooled: (frames * replicas, N, d) each."""
    return traj["x"].reshape(-1, *traj["x"].shape[2:]), traj["g"].reshape(-1, *traj["g"].shape[2:])


def mips_training_frames(s: Settings) -> dict[str, Tensor]:
    """The frames the MIPS network is trained on."""
    args = (s.mips_phi, s.mips_n, s.mips_replicas, s.mips_frames, s.mips_frame_every)
    return mips_trajectory(s, *args, Seeds(s.seed, **MIPS_SEEDS)["frames"])


def make_mips_score(s: Settings) -> PropulsionScore:
    net = make_local_net(
        2, 2, s.mips_knn, s.mips_width, s.mips_layers, s.mips_heads, 2 * mips_model(s).radius
    )
    return PropulsionScore(net)


def train_mips_score(s: Settings) -> FitResult:
    """The local transformer for MIPS, trained with the g-only denoising loss
    (sigma = ``mips_sigma``, antithetic) on ``mips_batch`` configurations per step (cached)."""
    dev = scale.device()
    x, g = (t.to(dev) for t in _configurations(mips_training_frames(s)))
    box = mips_model(s).box
    gen = Seeds(s.seed, **MIPS_SEEDS).generator("train", device=dev)

    def loss_fn(net: nn.Module, step: int) -> Tensor:
        idx = torch.randint(x.shape[0], (s.mips_batch,), generator=gen, device=dev)
        score = lambda xx, gg: net(xx, gg, box)  # noqa: E731
        return denoising_loss(score, x[idx], g[idx], s.mips_sigma, gen, noise_x=False)

    not_trained = ("mips_phis", "mips_sweep_replicas", "mips_eval_n", "mips_eval_chunk")
    key = cache_key(s, ("seed",), prefix="mips_", exclude=not_trained)
    return _train(
        s,
        "mips_score",
        key,
        lambda: make_mips_score(s),
        loss_fn,
        steps=s.mips_steps,
        lr=s.mips_lr,
        warmup=min(50, s.mips_steps // 10),
        desc=f"active_matter: MIPS local score ({s.scale})",
    )


GAS, INTERFACE, BULK = 0, 1, 2
PHASE_NAMES = ("gas", "interface", "bulk")


def interface_labels(
    x: Tensor, box: float, radius: float, within: float | None = None, dense_min: int = 4
) -> Tensor:
    """Gas / interface / bulk label of every particle, (n, N) long (0, 1, 2).

    Neighbours: the other particles within ``within`` (default 2.4 r, 1.2 diameters; at most
    12 are looked at). A particle is *dense* with >= ``dense_min`` neighbours (a close-packed
    disc has 6, a gas at phi = 0.5 about 2). Bulk: dense, and every neighbour dense.
    Interface: dense, with at least one dilute neighbour. Gas: the rest (dilute particles).
    x: (n, N, 2) in the periodic box of side ``box``. (``particles.phase_labels`` is another
    labelling, gas / intermediate / solid by the neighbour count alone.)
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
    sel = [values[labels == p] for p in (GAS, INTERFACE, BULK)]
    return (
        torch.stack([v.double().mean() if v.numel() else torch.tensor(math.nan) for v in sel])
        .cpu()
        .double()
    )


def _ratio(phase_values: Tensor) -> float:
    """Interface / bulk of per-phase means (NaN when either phase is empty)."""
    bulk = float(phase_values[BULK])
    return float(phase_values[INTERFACE]) / bulk if bulk > 0 else math.nan


def ratio_spread(values: Tensor, labels: Tensor) -> float:
    """Standard error of the interface / bulk ratio from its spread over configurations:
    std of the per-configuration ratios / sqrt(their number) (NaN with fewer than 2)."""
    ratios = [_ratio(phase_means(v[None], b[None])) for v, b in zip(values, labels, strict=True)]
    finite = torch.tensor([r for r in ratios if math.isfinite(r)], dtype=torch.float64)
    return float(finite.std() / math.sqrt(len(finite))) if len(finite) > 1 else math.nan


@dataclass
class MIPSLocal:
    """The local EPR of MIPS configurations from the learned g-score.

    x, g (n, N, 2): the evaluated configurations; local (n, N): gamma |g_i + s_{g_i}|^2;
    local_div (n, N): the card's divergence form; labels (n, N): :func:`interface_labels`;
    phase_epr, phase_epr_div (3,): mean local EPR in gas / interface / bulk; fractions (3,):
    share of particles per phase; ratio: interface / bulk of the divergence form (unbiased
    for the learned score), ratio_se: its standard error over configurations,
    ratio_pointwise: of gamma |g + s_g|^2; epr_per_particle: the mean g-part per particle;
    region_edges, region_density: ``epr.per_region_epr``; box.
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
) -> MIPSLocal:
    """Local EPR of MIPS configurations x, g (n, N, 2) at packing fraction phi."""
    model = mips_model(s, phi, x.shape[1])
    box = float(model.box)
    dev = next(net.parameters()).device
    x, g = x.to(dev), g.to(dev)
    score = lambda xx, gg: net(xx, gg, box, chunk)  # noqa: E731
    loc = aoup_local_epr(model, x, g, *evaluate_score(score, x, g, batch=8))
    gen = Seeds(s.seed, **MIPS_SEEDS).generator("estimate", device=dev)
    blocks = zip(x.split(4), g.split(4), strict=True)
    div = torch.cat([g_block_divergence(score, xb, gb, gen, probes=1) for xb, gb in blocks])
    local_div = local_epr_g_from_divergence(div, model.gamma)
    labels = interface_labels(x, box, model.radius)
    pe, pd = phase_means(loc.g_part, labels), phase_means(local_div, labels)
    fractions = torch.stack([(labels == p).double().mean() for p in range(3)]).cpu()
    edges, density, _ = per_region_epr(x, loc.g_part, box, bins=max(4, round(box / 2.5)))
    return MIPSLocal(
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
class MIPSResult:
    """Experiment 3: the trained network (``fit``) and the local EPR of fresh configurations
    at the training packing fraction (``local``)."""

    settings: Settings
    fit: FitResult
    local: MIPSLocal


@_pinned
def mips_experiment(s: Settings) -> MIPSResult:
    """Simulate, train (cached) and evaluate the local EPR on a second, independent set of
    frames at ``mips_phi``."""
    fit = train_mips_score(s)
    args = (s.mips_phi, s.mips_n, s.mips_replicas, s.mips_frames, s.mips_frame_every)
    x, g = _configurations(mips_trajectory(s, *args, Seeds(s.seed, **MIPS_SEEDS)["eval_frames"]))
    return MIPSResult(s, fit, mips_local_epr(s, fit.model, x, g, s.mips_phi))


@dataclass
class MIPSSweep:
    """EPR per particle vs packing fraction with the one network trained at ``trained_phi``:
    phis (p,), epr (p,), interface / bulk ratio (p,), share of dense particles (p,)."""

    phis: Tensor
    epr: Tensor
    ratio: Tensor
    dense_share: Tensor
    trained_phi: float


@_pinned
def mips_phi_sweep(s: Settings, mips: MIPSResult) -> MIPSSweep:
    """Evaluate the network at the packing fractions ``mips_phis`` (plus the trained one)."""
    rows, seeds = [(s.mips_phi, mips.local)], Seeds(s.seed, **MIPS_SEEDS)
    for j, phi in enumerate(s.mips_phis):
        data = mips_trajectory(
            s, phi, s.mips_n, s.mips_sweep_replicas, 4, s.mips_frame_every, seeds.seed("sweep", j)
        )
        rows.append((phi, mips_local_epr(s, mips.fit.model, *_configurations(data), phi)))
    order = torch.tensor([phi for phi, _ in rows]).argsort()

    def t(v: list[float]) -> Tensor:
        return torch.tensor(v, dtype=torch.float64)[order]

    return MIPSSweep(
        t([phi for phi, _ in rows]),
        t([r.epr_per_particle for _, r in rows]),
        t([r.ratio for _, r in rows]),
        t([float(r.fractions[1:].sum()) for _, r in rows]),
        s.mips_phi,
    )


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


@_pinned
def mips_movie(s: Settings, mips: MIPSResult) -> Movie:
    """Record ``movie_frames`` frames of replica 0, starting from its last training frame,
    and colour each particle by its local EPR (cached simulation, network evaluated here)."""
    names = ("mips_n", "mips_phi", "mips_v0", "mips_gamma", "mips_radius", "mips_dt")
    key = cache_key(s, (*names, "mips_thermalize", "mips_frames", "seed"), prefix="movie_")
    model = mips_model(s)

    def build() -> dict[str, Tensor]:
        dev, start = scale.device(), mips_training_frames(s)
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
            generator=Seeds(s.seed, **MIPS_SEEDS).generator("movie", device=dev),
            method=force_method(model),
        )
        return {"x": traj.x[:, 0].cpu(), "g": traj.g[:, 0].cpu(), "times": traj.times}

    rec = _cached("mips_movie", key, build)
    net = mips.fit.model
    dev = next(net.parameters()).device
    x, g = rec["x"].to(dev), rec["g"].to(dev)
    _, s_g = evaluate_score(lambda a, b: net(a, b, model.box), x, g, batch=8)
    loc = aoup_local_epr(model, x, g, None, s_g)
    return Movie(rec["x"], loc.g_part.cpu(), loc.v_x.cpu(), rec["times"], float(model.box))


@_pinned
def mips_large_box(s: Settings, mips: MIPSResult) -> MIPSLocal | None:
    """The same network on one freshly simulated box of ``mips_eval_n`` particles at the
    same phi, with chunked inference (None when ``mips_eval_n`` is 0)."""
    if not s.mips_eval_n:
        return None
    big = mips_trajectory(
        s, s.mips_phi, s.mips_eval_n, 1, 1, 1.0, Seeds(s.seed, **MIPS_SEEDS)["large"]
    )
    return mips_local_epr(
        s, mips.fit.model, big["x"][0], big["g"][0], s.mips_phi, s.mips_eval_chunk
    )


# ---- the chapter --------------------------------------------------------------------------
@dataclass
class Results:
    """Everything the chapter shows; ``seconds``: wall time of each experiment."""

    settings: Settings
    theory: TheoryChecks
    trap: TrapResult
    ring: RingResult
    mips: MIPSResult
    mips_sweep: MIPSSweep
    movie: Movie
    large: MIPSLocal | None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def scale(self) -> str:
        return self.settings.scale

    @property
    def from_cache(self) -> bool:
        return all(f.from_cache for f in (self.trap.fit, self.ring.fit, self.mips.fit))

    @property
    def trained_seconds(self) -> float:
        return sum(f.seconds for f in (self.trap.fit, self.ring.fit, self.mips.fit))


def prepare(s: Settings) -> None:
    """Simulate and train everything (or find it in the cache / shipped folder)."""
    run(s)


def run(s: Settings) -> Results:
    """The named experiments in order, each simulate -> train (cached) -> estimate."""
    watch = Stopwatch()
    with torch_threads(s.threads):  # the data too, should it be simulated here
        theory = theory_checks(s, trap_data(s))
        watch.tick("theory checks")
        trap = trap_experiment(s)
        watch.tick("trap: simulate, train, estimate")
        ring = ring_experiment(s)
        watch.tick("ring: simulate, train, transfer")
        mips = mips_experiment(s)
        watch.tick("mips: simulate, train, estimate")
        sweep, movie = mips_phi_sweep(s, mips), mips_movie(s, mips)
        large = mips_large_box(s, mips)
        watch.tick("mips: phi sweep, movie, large box")
    return Results(s, theory, trap, ring, mips, sweep, movie, large, watch.seconds)


def claims(r: Results) -> list[Claim]:
    """The card's claims, measured at this scale (criteria fixed before measuring)."""
    sc, s, th, t, rg, m = r.scale, r.settings, r.theory, r.trap, r.ring, r.mips.local
    worst = int(t.rel_error.abs().argmax())
    out = [
        Claim(
            "exact formulas = numeric Lyapunov (max rel. difference)",
            "S and EPR of the trapped AOUP in closed form (card)",
            th.formula_vs_lyapunov,
            "< 1e-9",
            bool(th.formula_vs_lyapunov < 1e-9),
            sc,
            "20 random (A, v0, gamma, eps); total EPR and g-part; div v of the ring: "
            f"x-part {th.div_x:.3g}, g-part {th.div_g:.3g}, total {th.div_total:.2g}",
        ),
        Claim(
            "simulator covariance = Lyapunov (max |z-score|)",
            "the simulator samples the stationary law",
            th.mc_z,
            "< 4.5 standard errors",
            bool(th.mc_z < 4.5),
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
        ),
    ]
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
    dense = (m.phase_epr_div[1:] * m.fractions[1:]).sum() / m.fractions[1:].sum().clamp_min(1e-12)
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
            f"gamma |g_i + s_(g_i)|^2 gives ratio {m.ratio_pointwise:.3g}; gas "
            f"{float(m.phase_epr_div[GAS]):.3g} vs dense {float(dense):.3g}",
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


def _points(x: Tensor, y: Tensor, name: str | None, **kw: object) -> go.Scatter:
    return go.Scatter(x=_v(x), y=_v(y), name=name, **{"mode": "markers", **kw})


def trap_sweep_figure(t: TrapResult) -> go.Figure:
    """Learned vs exact EPR (total and g-part) against v0."""
    s = t.settings
    grid = torch.linspace(0, float(t.v0s.max()) * 1.05, 60, dtype=torch.float64)
    exact = 2 * s.trap_gamma * grid**2 / (s.trap_eps * (s.trap_A + s.trap_gamma))
    fig = go.Figure(
        [
            go.Scatter(x=_v(grid), y=_v(exact), name="exact 2 gamma v0^2 / (eps (A + gamma))"),
            _points(t.v0s, t.learned, "learned, total", marker=dict(size=10)),
            _points(t.v0s, t.exact_g, "exact g-part", mode="lines", line=dict(dash="dash")),
            _points(t.v0s, t.learned_g, "learned g-part", marker=dict(symbol="diamond", size=9)),
        ]
    )
    return _style(fig, "Trapped AOUP: entropy production vs v0", "v0", "EPR (d = 2)")


def trap_current_figure(t: TrapResult) -> go.Figure:
    """Probability current rho v in the (x_1, g_1) plane: learned (arrows) and exact."""
    from pflow_explore.viz.fields import quiver_trace

    c = t.current
    gx, gy = torch.meshgrid(c.cx, c.cy, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1).numpy()
    J_l, J_e = c.J_learned.reshape(-1, 2), c.J_exact.reshape(-1, 2)
    spacing = float(min(c.cx[1] - c.cx[0], c.cy[1] - c.cy[0]))
    scale_ = 0.9 * spacing / max(float(J_e.norm(dim=-1).max()), 1e-12)
    rho = go.Heatmap(x=_v(c.cx), y=_v(c.cy), z=c.rho.tolist(), colorscale="Blues", opacity=0.6)
    fig = go.Figure(
        [
            rho.update(showscale=False),
            quiver_trace(pts, J_e.numpy(), scale_, color="rgba(120,120,120,0.8)", name="exact"),
            quiver_trace(pts, J_l.numpy(), scale_, color="rgba(200,30,30,0.9)", name="learned"),
        ]
    )
    fig.update_layout(showlegend=True)
    title = f"Probability current in (x_1, g_1), v0 = {c.v0:g}"
    return _style(fig, title, "x_1", "g_1", height=420)


def ring_figure(rg: RingResult) -> go.Figure:
    """Per-particle EPR along the ring at each N, learned, with the exact modal value."""
    fig = go.Figure()
    for j, n in enumerate(rg.sizes.tolist()):
        pos = torch.arange(n) / n
        fig.add_trace(_points(pos, rg.per_particle[j], f"learned, N = {n}", marker=dict(size=4)))
        fig.add_scatter(
            x=[0, 1],
            y=[float(rg.exact[j])] * 2,
            mode="lines",
            name=f"exact, N = {n}",
            line=dict(dash="dash"),
        )
    title = "Spring ring: per-particle EPR (trained at the first N)"
    return _style(fig, title, "position along the ring i / N", "EPR per particle")


def mips_snapshot_figure(m: MIPSLocal, index: int = 0) -> go.Figure:
    """One MIPS configuration: particles coloured by local EPR, shaped by phase (open
    circle: gas, circle: interface, square: bulk)."""
    x = particles.wrap(m.x[index], m.box)
    labels = m.labels[index].tolist()
    marker = dict(
        size=7,
        symbol=[("circle-open", "circle", "square")[p] for p in labels],
        color=_v(m.local[index]),
        colorscale="Viridis",
        cmin=0.0,
        cmax=float(m.local.quantile(0.98)),
        showscale=True,
        colorbar=dict(title=dict(text="local EPR")),
    )
    fig = go.Figure(
        _points(
            x[:, 0],
            x[:, 1],
            None,
            text=[PHASE_NAMES[p] for p in labels],
            marker=marker,
            hovertemplate="%{text}<br>local EPR %{marker.color:.3g}<extra></extra>",
        )
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    title = f"MIPS (N = {x.shape[0]}): local EPR; open circle gas, dot interface, square bulk"
    return _style(fig, title, "x", "y", height=520)


def mips_region_figure(m: MIPSLocal) -> go.Figure:
    """EPR density per region (a coarse grid over the box), averaged over configurations."""
    c = (m.region_edges[1:] + m.region_edges[:-1]) / 2
    z = m.region_density.tolist()
    fig = go.Figure(
        go.Heatmap(x=_v(c), y=_v(c), z=z, colorscale="Magma", colorbar=dict(title="EPR / area"))
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return _style(fig, "MIPS: EPR per region", "x", "y", height=480)


def mips_phase_figure(m: MIPSLocal) -> go.Figure:
    """Mean local EPR in gas, interface and bulk, both estimators."""
    names = list(PHASE_NAMES)
    fig = go.Figure(
        [
            go.Bar(x=names, y=_v(m.phase_epr), name="gamma |g + s_g|^2"),
            go.Bar(x=names, y=_v(m.phase_epr_div), name="-gamma div_g s_g - gamma d"),
        ]
    )
    title = f"MIPS: local EPR by phase (interface / bulk = {m.ratio:.2f})"
    return _style(fig, title, "phase", "mean local EPR")


def mips_sweep_figure(w: MIPSSweep) -> go.Figure:
    """EPR per particle vs packing fraction (one network trained at mips_phi)."""
    fig = go.Figure(
        [
            _points(w.phis, w.epr, "EPR per particle", mode="lines+markers"),
            _points(
                w.phis, w.dense_share, "share of dense particles", mode="lines+markers", yaxis="y2"
            ),
        ]
    )
    fig.update_layout(yaxis2=dict(overlaying="y", side="right", title="dense share", range=[0, 1]))
    title = f"EPR vs packing fraction (trained at phi = {w.trained_phi})"
    return _style(fig, title, "packing fraction phi", "g-part EPR per particle")


def losses_figure(r: Results) -> go.Figure:
    """Training losses of the three networks."""
    fig = go.Figure()
    for name, res in (("trap", r.trap), ("ring", r.ring), ("MIPS", r.mips)):
        fig.add_scatter(y=res.fit.losses, name=name, mode="lines")
    return _style(fig, "Score-matching losses (per particle)", "step", "loss")


def figures(r: Results) -> dict[str, go.Figure]:
    m = r.mips.local
    return {
        "trap_sweep": trap_sweep_figure(r.trap),
        "trap_current": trap_current_figure(r.trap),
        "ring": ring_figure(r.ring),
        "mips_snapshot": mips_snapshot_figure(m),
        "mips_regions": mips_region_figure(m),
        "mips_phases": mips_phase_figure(m),
        "mips_sweep": mips_sweep_figure(r.mips_sweep),
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
