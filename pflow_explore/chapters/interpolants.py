"""Chapter 02: stochastic interpolants (Albergo, Boffi & Vanden-Eijnden 2023).

One interpolant x_t = I(t, x0, x1) + gamma(t) z between two densities rho0, rho1
(``pflow_explore.interpolants``) defines a velocity b and a score s. Learned once, the pair
(b, s) gives a whole family of generative models: the ODE dX = b dt and, for every eps > 0,
the SDE dX = (b + eps s) dt + sqrt(2 eps) dW (card 02_interpolants, "Method"; the samplers
live in ``pflow_explore.samplers``). The named experiments, each callable on its own:

1. :func:`pair_experiment` per data pair (:func:`pair_data`): :func:`train_pair` fits b and
   the denoiser eta = gamma s with the card's quadratic losses (:func:`interpolant_losses`,
   antithetic +-z, t ~ U[delta, 1 - delta]); :func:`cached_sweep` samples the ODE and the
   SDEs for every eps from the same pair and measures energy distance / sliced W2 to the
   target; :func:`learned_vs_exact` compares b and eta with the exact fields where known;
2. :func:`theory_checks`: exact fields against Monte-Carlo conditional expectations, and
   the grid residuals of the transport and Fokker-Planck equations;
3. :func:`likelihood_control`: Gaussian endpoints, the exact affine drift plus a known
   perturbation delta; KL(rho1 || rho1_hat) in closed form for the ODE and for SDEs with
   several eps, against the Girsanov bound (1 / 4 eps) int E|delta|^2 dt.

:func:`run` composes them; :func:`claims` and :func:`figures` read the results.
Convention (as in the paper, unlike ``pflow_explore.paths``): t = 0 is rho0 (the source,
often the Gaussian), t = 1 is rho1 (the target); sampling runs forward in t.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import lru_cache

import plotly.graph_objects as go
import torch
from torch import Tensor, nn

from pflow_explore import cache, samplers, scale
from pflow_explore.claims import Claim, claim_below
from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.datasets.toy2d import (
    TOY_2D_MIXTURES,
    checkerboard,
    eight_gaussians,
    random_mixture,
    single_gaussian,
)
from pflow_explore.experiment import (
    Seeds,
    Stopwatch,
    cache_key,
    choose,
    one_thread_on_cpu,
    presets,
    torch_threads,
)
from pflow_explore.interpolants import GAMMAS, INTERPOLANTS, Interpolant, get_interpolant
from pflow_explore.metrics import energy_distance, sliced_w2
from pflow_explore.samplers import LearnedPair
from pflow_explore.theory.interpolant_fields import (
    InterpolantFields,
    gaussian_kl,
    gaussian_moments_flow,
    girsanov_bound,
    score_affine,
    transport_residual,
    velocity_affine,
)
from pflow_explore.training import FitResult, fit_cached

CHAPTER = "interpolants"
VERSION = 1  # part of the cache key: bump when the training code changes
PAIRS = ("checkerboard", "mixtures", "gmm400", "digits32")
PAIR_TITLES = {
    "checkerboard": "N(0, I) -> checkerboard",
    "mixtures": "eight Gaussians -> mixture",
    "gmm400": "N(0, I) -> Gaussian mixture, d = 400",
    "digits32": "N(0, I) -> 32x32 digits",
}
ENERGY_FACTOR = 3.0  # claim: ED(model, target) < 3 x ED(target, independent target)
FIELD_ERROR_BOUND = 0.2  # claim: relative L2 error of the learned b below 20 %
MC_Z_BOUND = 4.0  # claim: every exact field within 4 Monte-Carlo standard errors
RESIDUAL_RATIO = 3.0  # claim: residual shrinks >= 3x per halving (second order: 4x)
# seed streams: the offsets are the shipped artifacts' historical "seed + k" (never renumber)
SEEDS = dict(
    init=0, loss=(1, 1), lc=7, mc=30, mixtures_1d=31, sweep=50, sde=(60, 1), fields=70, gmm=400
)
DIGIT_SEEDS = dict(augment=(1000, 1000))  # s.seed + 1000 (i + 1): train i = 0, test i = 1


def make_interpolant(s: Settings) -> Interpolant:
    """The preset's interpolant with its gamma (sqrt takes a = ``gamma_a``)."""
    kw = {"a": s.gamma_a} if s.gamma == "sqrt" else {}
    return get_interpolant(s.interpolant, s.gamma, **kw)


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter. ``scale``: the preset's name.

    Interpolant: ``interpolant`` and ``gamma`` by name (``gamma_a``: the a of
    sqrt(a t (1 - t))); training times t ~ U[t_delta, 1 - t_delta]. ``pairs``: the
    experiments (:data:`PAIRS`). Networks: 2D pairs an MLP (hidden, depth), gmm400 an MLP
    (hd_hidden, hd_depth), digits32 a UNet (unet_base, unet_mults); ``steps`` / ``hd_steps`` /
    ``image_steps`` Adam steps on batches of ``batch`` (``image_batch``) pairs (x0, x1), each
    used twice (+z and -z). Sampling: ``n_eval`` samples (``image_eval`` images),
    ``eps_values`` (0 = the ODE, RK4 on ``n_ode_steps``), SDEs by Euler-Maruyama on
    ``n_sde_steps``. Theory checks: ``n_mc`` Monte-Carlo draws at ``mc_points`` points for
    each of ``mc_times``; residual grids refined ``residual_levels`` times. Likelihood
    control: dimension ``lc_dim``, perturbation strength ``lc_strength`` (and the sweep
    ``lc_strengths``), SDEs with ``lc_eps``, ``lc_steps`` RK4 steps of the moment equations.
    """

    scale: str
    pairs: tuple[str, ...] = ("checkerboard", "mixtures")
    interpolant: str = "linear"
    gamma: str = "sqrt"
    gamma_a: float = 1.0
    t_delta: float = 1e-3
    hidden: int = 128
    depth: int = 3
    hd_hidden: int = 1024
    hd_depth: int = 3
    unet_base: int = 32
    unet_mults: tuple[int, ...] = (1, 2, 2)
    steps: int = 6000
    hd_steps: int = 4000
    image_steps: int = 3000
    batch: int = 256
    image_batch: int = 128
    lr: float = 2e-3
    image_lr: float = 5e-4
    ema_decay: float = 0.999
    gmm_dim: int = 400
    gmm_components: int = 5
    digit_copies: int = 8
    n_eval: int = 2000
    image_eval: int = 1000
    eps_values: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
    n_ode_steps: int = 100
    n_sde_steps: int = 200
    n_show: int = 1000
    n_field: int = 1000
    field_times: int = 16
    n_mc: int = 200_000
    mc_points: int = 4
    mc_times: tuple[float, ...] = (0.25, 0.5, 0.75)
    residual_levels: int = 4
    residual_eps: float = 0.5
    lc_dim: int = 2
    lc_strength: float = 1.0
    lc_strengths: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0)
    lc_eps: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
    lc_eps_ref: float = 1.0
    lc_steps: int = 400
    seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(
            bool(self.pairs) and all(p in PAIRS for p in self.pairs),
            f"pairs must be a non-empty subset of {PAIRS}, got {self.pairs!r}",
        )
        need(len(set(self.pairs)) == len(self.pairs), f"pairs must not repeat, got {self.pairs!r}")
        need(
            self.interpolant in INTERPOLANTS,
            f"interpolant must be one of {', '.join(INTERPOLANTS)}, got {self.interpolant!r}",
        )
        valid = ", ".join(g for g in GAMMAS if g != "zero")
        need(
            self.gamma in GAMMAS and self.gamma != "zero",
            f"gamma must be one of {valid} (the score needs gamma > 0)",
        )
        need(
            math.isfinite(self.gamma_a) and self.gamma_a > 0,
            f"gamma_a must be > 0, got {self.gamma_a}",
        )
        need(0 < self.t_delta < 0.25, f"t_delta must lie in (0, 0.25), got {self.t_delta}")
        for name in POSITIVE:
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(
            min(self.n_eval, self.image_eval, self.n_field) >= 16 and self.n_mc >= 1000,
            "n_eval, image_eval and n_field must be >= 16 and n_mc >= 1000",
        )
        need(
            bool(self.eps_values) and self.eps_values[0] == 0 and min(self.eps_values) >= 0,
            f"eps_values must start with 0 (the ODE) and hold numbers >= 0, "
            f"got {self.eps_values!r}",
        )
        need(len(self.eps_values) >= 2, "eps_values needs an eps > 0 besides the ODE's 0")
        need(
            2 <= self.n_ode_steps <= 10_000 and 2 <= self.n_sde_steps <= 10_000,
            "n_ode_steps and n_sde_steps must lie in [2, 10000]",
        )
        need(
            bool(self.mc_times) and all(0.05 <= t <= 0.95 for t in self.mc_times),
            f"mc_times must lie in [0.05, 0.95], got {self.mc_times!r}",
        )
        need(
            2 <= self.residual_levels <= 7,
            f"residual_levels must lie in [2, 7]: {self.residual_levels}",
        )
        need(self.residual_eps > 0, f"residual_eps must be > 0, got {self.residual_eps}")
        need(
            bool(self.lc_eps) and min(self.lc_eps) > 0 and self.lc_eps_ref > 0,
            "lc_eps and lc_eps_ref must be > 0 (eps = 0 is the ODE, kept apart)",
        )
        need(
            self.lc_strength > 0 and bool(self.lc_strengths) and min(self.lc_strengths) > 0,
            "lc_strength and lc_strengths must be > 0",
        )
        need(self.lc_steps >= 10, f"lc_steps must be >= 10, got {self.lc_steps}")
        need(
            INTERPOLANTS[self.interpolant].rho0_constraint is None,
            f"the {self.interpolant!r} interpolant constrains rho0; the chapter's pairs need "
            "one between two different densities (linear, trigonometric, encoder_decoder)",
        )
        make_interpolant(self)  # an undefined combination (trigonometric + sin2) fails here


POSITIVE = (
    "hidden", "depth", "hd_hidden", "hd_depth", "unet_base", "steps", "hd_steps", "image_steps",
    "batch", "image_batch", "gmm_dim", "gmm_components", "digit_copies", "n_show",
    "field_times", "mc_points", "lc_dim",
)  # fmt: skip
SETTINGS = presets(
    Settings,
    tiny=dict(
        hidden=64, depth=2, steps=200, batch=256, ema_decay=0.99, n_eval=500,
        eps_values=(0.0, 0.5, 1.0), n_ode_steps=20, n_sde_steps=60, n_show=500, n_field=256,
        field_times=6, n_mc=20_000, mc_points=2, residual_levels=3,
        lc_strengths=(0.5, 1.0, 2.0), lc_eps=(0.1, 0.5, 2.0), lc_steps=100,
    ),
    cpu={},
    gpu=dict(
        pairs=PAIRS, hidden=256, steps=10000, hd_steps=6000, image_steps=3000, batch=1024,
        image_batch=128, unet_base=64, n_eval=4000, n_sde_steps=300, n_show=2000,
        n_field=2000, field_times=24, n_mc=1_000_000, mc_points=8, residual_levels=5,
        lc_steps=2000,
    ),
)  # fmt: skip


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


def pair_kind(pair: str) -> str:
    """ "2d" (toy densities), "hd" (the d = 400 mixture) or "image" (digits)."""
    if pair not in PAIRS:
        raise ValueError(f"pair must be one of {PAIRS}, got {pair!r}")
    return {"gmm400": "hd", "digits32": "image"}.get(pair, "2d")


def fit_arguments(s: Settings, pair: str) -> dict[str, object]:
    """Adam steps and learning rate of one pair (part of its cache key)."""
    kind = pair_kind(pair)
    steps = {"2d": s.steps, "hd": s.hd_steps, "image": s.image_steps}[kind]
    return {"steps": steps, "lr": s.image_lr if kind == "image" else s.lr}


def training_key(s: Settings, pair: str) -> dict[str, object]:
    """The settings that determine one pair's trained weights (the cache key; steps, lr and
    EMA are added by ``fit_cached``). Experiment sizes never retrain."""
    common = ("interpolant", "gamma", "gamma_a", "t_delta", "seed")
    kind = pair_kind(pair)
    if kind == "2d":
        return cache_key(s, (*common, "hidden", "depth", "batch"), pair=pair)
    if kind == "hd":
        return cache_key(
            s,
            (*common, "batch"),
            pair=pair,
            hidden=s.hd_hidden,
            depth=s.hd_depth,
            dim=s.gmm_dim,
            components=s.gmm_components,
        )
    return cache_key(
        s,
        (*common, "unet_base", "unet_mults"),
        pair=pair,
        batch=s.image_batch,
        copies=s.digit_copies,
    )


def sweep_key(s: Settings, pair: str) -> dict[str, object]:
    """What an eps sweep depends on: the trained weights (their training key and fit
    arguments) and the sampling sizes."""
    fields = ("ema_decay", "eps_values", "n_ode_steps", "n_sde_steps", "n_show")
    n_eval = s.image_eval if pair_kind(pair) == "image" else s.n_eval
    return cache_key(
        s, fields, training=training_key(s, pair), **fit_arguments(s, pair), n_eval=n_eval
    )


# ---- the data pairs ------------------------------------------------------------------------
@dataclass
class PairData:
    """Where x0 and x1 come from. sample0, sample1: (n, generator) -> (n, d) float32 CPU;
    target(n, generator): held-out samples of rho1 to measure against (for digits: the
    test split); rho0, rho1: the exact mixtures where known (else None); image_shape:
    (C, H, W) for images, else None."""

    name: str
    dim: int
    sample0: Callable[[int, torch.Generator | None], Tensor]
    sample1: Callable[[int, torch.Generator | None], Tensor]
    target: Callable[[int, torch.Generator | None], Tensor]
    rho0: GaussianMixture | None
    rho1: GaussianMixture | None
    image_shape: tuple[int, int, int] | None = None

    @property
    def exact(self) -> bool:
        return self.rho0 is not None and self.rho1 is not None


def mixture_sampler(gm: GaussianMixture) -> Callable[[int, torch.Generator | None], Tensor]:
    """(n, generator) -> (n, d) float32 samples of ``gm``, its Cholesky factors computed once
    (``GaussianMixture.sample`` factors every covariance on every call: slow in d = 1024)."""
    chol = torch.linalg.cholesky(gm.covs)
    identity = gm.n_components == 1 and torch.equal(chol[0], torch.eye(gm.dim, dtype=chol.dtype))

    def sample(n: int, generator: torch.Generator | None = None) -> Tensor:
        labels = torch.multinomial(gm.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, gm.dim, generator=generator, dtype=torch.float64)
        if identity:
            return (gm.means[0] + z).float()
        return (gm.means[labels] + torch.einsum("nij,nj->ni", chol[labels], z)).float()

    return sample


def _rows(data: Tensor) -> Callable[[int, torch.Generator | None], Tensor]:
    """Sampler drawing n rows of ``data`` (N, d) with replacement."""
    return lambda n, generator=None: data[torch.randint(len(data), (n,), generator=generator)]


@lru_cache(maxsize=4)
def _digits32(copies: int, seed: int) -> tuple[Tensor, Tensor]:
    """(train (N, 1024), test (M, 1024)) flat augmented 32x32 digits in [-1, 1]."""
    from pflow_explore.datasets.digits import augment, digits

    seeds, out = Seeds(seed, **DIGIT_SEEDS), []
    for i, split in enumerate(("train", "test")):
        images, _ = digits(32, split)
        gen = seeds.generator("augment", i)
        out.append(torch.cat([augment(images, gen) for _ in range(copies)]).flatten(1))
    return out[0], out[1]


def pair_data(s: Settings, pair: str) -> PairData:
    """The densities of one experiment (card, "Small reproduction" and "GPU setting").

    - checkerboard: N(0, I) -> the 8-square checkerboard on [-2, 2]^2 (no exact fields);
    - mixtures: eight Gaussians (radius 2, std 0.2) -> the fixed random 5-component mixture
      ``TOY_2D_MIXTURES["mixture"]``: data to data, exact fields known;
    - gmm400: N(0, I_d) -> a random ``gmm_components``-component mixture in d = ``gmm_dim``
      (seeded), exact fields known (the repository's d = 400 case);
    - digits32: N(0, I_1024) -> augmented 32x32 digits (train split; target: test split).
    """
    kind = pair_kind(pair)
    if pair == "checkerboard":
        rho0 = single_gaussian((0.0, 0.0))
        return PairData(pair, 2, mixture_sampler(rho0), checkerboard, checkerboard, rho0, None)
    if pair == "mixtures":
        rho0, rho1 = eight_gaussians(), TOY_2D_MIXTURES["mixture"]()
        s0, s1 = mixture_sampler(rho0), mixture_sampler(rho1)
        return PairData(pair, 2, s0, s1, s1, rho0, rho1)
    if kind == "hd":
        d = s.gmm_dim
        gen = Seeds(s.seed, **SEEDS).generator("gmm")
        rho1 = random_mixture(s.gmm_components, d, generator=gen)
        rho0 = single_gaussian(torch.zeros(d, dtype=torch.float64))
        s0, s1 = mixture_sampler(rho0), mixture_sampler(rho1)
        return PairData(pair, d, s0, s1, s1, rho0, rho1)
    train, test = _digits32(s.digit_copies, s.seed)
    noise = mixture_sampler(single_gaussian(torch.zeros(1024, dtype=torch.float64)))
    return PairData(pair, 1024, noise, _rows(train), _rows(test), None, None, (1, 32, 32))


def exact_fields(s: Settings, pair: PairData) -> InterpolantFields | None:
    """The exact b, s, eta of the pair (``theory.interpolant_fields``), None if unknown."""
    if not pair.exact:
        return None
    return InterpolantFields(pair.rho0, pair.rho1, make_interpolant(s))


# ---- the learned pair (b, eta) and its losses ----------------------------------------------
class FlatUNet(nn.Module):
    """A UNet on flat images: x (n, C H W), t -> (n, C H W) (the UNet sees (n, C, H, W))."""

    def __init__(self, unet: nn.Module, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.unet, self.shape = unet, shape

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.unet(x.reshape(-1, *self.shape), t).reshape(x.shape[0], -1)


def make_model(s: Settings, pair: PairData) -> LearnedPair:
    """Two fresh networks for b and eta (``samplers.LearnedPair``): an MLP (2D, gmm400) or a
    UNet (digits)."""
    from pflow_explore.nets import MLP, UNet

    kind = pair_kind(pair.name)

    def net() -> nn.Module:
        if kind == "2d":
            return MLP(pair.dim, hidden=s.hidden, depth=s.depth)
        if kind == "hd":
            return MLP(pair.dim, hidden=s.hd_hidden, depth=s.hd_depth)
        unet = UNet(pair.image_shape[0], base=s.unet_base, channel_mults=s.unet_mults)
        return FlatUNet(unet, pair.image_shape)

    return LearnedPair(net(), net(), make_interpolant(s).gamma, s.t_delta)


def interpolant_losses(
    model: LearnedPair, interpolant: Interpolant, x0: Tensor, x1: Tensor, t: Tensor, z: Tensor
) -> tuple[Tensor, Tensor]:
    """The card's quadratic losses (L_b, L_eta) on one batch, with antithetic noise.

    x0, x1, z: (n, d), t: (n,) in (0, 1). With x_t^+- = I(t, x0, x1) +- gamma(t) z,

        L_b   = E[ 1/2 |b(x^+)|^2 - (d_t I + gamma' z) . b(x^+)
                 + 1/2 |b(x^-)|^2 - (d_t I - gamma' z) . b(x^-) ] / 2,
        L_eta = E[ 1/2 |eta(x^+)|^2 + z . eta(x^+) + 1/2 |eta(x^-)|^2 - z . eta(x^-) ] / 2,

    each divided by d. L_b is minimised by b = E[d_t I + gamma' z | x_t], L_eta by
    eta = -E[z | x_t] = gamma s: it is the card's L_s = E[1/2 |s|^2 + gamma^-1 z . s]
    weighted by gamma^2, which removes the 1/gamma singularity of its target. The pair
    +-z cancels the large gamma' z term of the b target to first order in gamma, where
    gamma' = a (1 - 2t) / (2 gamma) blows up (the variance reduction of the paper).
    """
    d = x0.shape[1]
    g = interpolant.gamma.gamma(t)[:, None].to(x0)
    mid = interpolant.interpolate(t, x0, x1)
    x_plus, x_minus = mid + g * z, mid - g * z
    target_plus = interpolant.velocity_target(t, x0, x1, z)
    target_minus = interpolant.velocity_target(t, x0, x1, -z)
    b_plus, b_minus = model.velocity(x_plus, t), model.velocity(x_minus, t)
    e_plus, e_minus = model.denoiser(x_plus, t), model.denoiser(x_minus, t)
    loss_b = (
        0.5 * (b_plus**2).sum(1)
        - (target_plus * b_plus).sum(1)
        + 0.5 * (b_minus**2).sum(1)
        - (target_minus * b_minus).sum(1)
    )
    loss_eta = (
        0.5 * (e_plus**2).sum(1)
        + (z * e_plus).sum(1)
        + 0.5 * (e_minus**2).sum(1)
        - (z * e_minus).sum(1)
    )
    return loss_b.mean() / (2 * d), loss_eta.mean() / (2 * d)


def training_times(n: int, t_delta: float, generator: torch.Generator | None = None) -> Tensor:
    """t ~ U[t_delta, 1 - t_delta], (n,) float32: away from the singular ends (card, "Traps")."""
    return t_delta + (1 - 2 * t_delta) * torch.rand(n, generator=generator)


def pair_loss_fn(
    s: Settings, pair: PairData, device: torch.device
) -> Callable[[nn.Module, int], Tensor]:
    """loss_fn(model, step) -> L_b + L_eta on a fresh batch, for ``training.fit``.

    Independent x0 ~ rho0 and x1 ~ rho1 (the independent coupling), t and z, all drawn on
    the CPU from the pair's own seeded generator and moved to ``device``.
    """
    interp = make_interpolant(s)
    gen = Seeds(s.seed, **SEEDS).generator("loss", PAIRS.index(pair.name))
    batch = s.image_batch if pair_kind(pair.name) == "image" else s.batch

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        x0 = pair.sample0(batch, gen).to(device)
        x1 = pair.sample1(batch, gen).to(device)
        t = training_times(batch, s.t_delta, gen).to(device)
        z = torch.randn(batch, pair.dim, generator=gen).to(device)
        loss_b, loss_eta = interpolant_losses(model, interp, x0, x1, t, z)
        return loss_b + loss_eta

    return loss_fn


def seeded_model(s: Settings, pair: PairData) -> LearnedPair:
    """:func:`make_model` with its initial weights drawn from the CPU generator seeded with
    the pair's ``init`` stream, leaving the caller's global random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(Seeds(s.seed, **SEEDS)["init"])
        return make_model(s, pair)


def threads_for(pair: str, device: torch.device | None = None) -> AbstractContextManager[None]:
    """One torch thread for a 2D pair on the CPU (tiny tensors: a second thread only
    waits); no change for the others."""
    return one_thread_on_cpu(pair_kind(pair) == "2d", device)


def train_pair(s: Settings, pair: str, rebuild: bool = False, progress: bool = True) -> FitResult:
    """Train b and eta of one pair with :func:`interpolant_losses` (or load them).

    AdamW with warm-up and cosine decay, gradient clipping, EMA weights; cached under
    ``interpolants/pair-<name>`` keyed by :func:`training_key` and the fit arguments.
    """
    dev = scale.device()
    data = pair_data(s, pair)
    fit = fit_arguments(s, pair)
    with threads_for(pair, dev):
        return fit_cached(
            CHAPTER,
            f"pair-{pair}",
            training_key(s, pair),
            lambda: seeded_model(s, data),
            pair_loss_fn(s, data, dev),
            version=VERSION,
            rebuild=rebuild,
            device=dev,
            steps=fit["steps"],
            lr=fit["lr"],
            ema_decay=s.ema_decay,
            warmup=min(200, fit["steps"] // 10),
            cosine=True,
            progress=progress,
            desc=f"interpolants: b and eta, {PAIR_TITLES[pair]} ({s.scale})",
        )


# ---- sampling: one pair, many generative models ---------------------------------------------
def generate(
    model: samplers.VelocityScore,
    x0: Tensor,
    eps: float,
    s: Settings,
    generator: torch.Generator | None = None,
    batch: int = 4096,
) -> Tensor:
    """Samples (n, d) from x0 (n, d) with ``samplers.sample``: the ODE (RK4 on
    ``n_ode_steps``) for eps = 0, else the SDE with this eps (Euler-Maruyama on
    ``n_sde_steps``), both on the cosine grid (dense at the stiff ends)."""
    steps = s.n_ode_steps if eps == 0 else s.n_sde_steps
    grid = samplers.cosine_grid(steps)
    return samplers.sample(model, x0, eps, grid, generator, batch=batch).x


@dataclass
class Sweep:
    """Distances to the target of samples from one learned pair, per eps.

    eps (E,) (0 = the ODE); energy, sliced_w2 (E,); floor_energy, floor_sw2: the same
    distances between two independent target sets of the same size (the noise floor);
    source_energy: rho0's samples against the target (where training starts from);
    samples: (E, n_show, d) the first samples per eps (CPU); target: (n_show, d);
    frechet (E,) and frechet_floor for images (digits classifier), else None.
    """

    pair: str
    eps: Tensor
    energy: Tensor
    sliced_w2: Tensor
    floor_energy: float
    floor_sw2: float
    source_energy: float
    samples: Tensor
    target: Tensor
    frechet: Tensor | None = None
    frechet_floor: float | None = None


def distances(x: Tensor, y: Tensor, seed: int) -> tuple[float, float]:
    """(energy distance, sliced W2 with 256 seeded projections) between x (n, d) and y."""
    return energy_distance(x, y), sliced_w2(x, y, 256, torch.Generator().manual_seed(seed))


def energy_floor(
    sample: Callable[[int, torch.Generator | None], Tensor],
    target: Callable[[int, torch.Generator | None], Tensor],
    n: int,
    generator: torch.Generator,
    repeats: int = 3,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """Mean (energy distance, sliced W2) between n draws of ``sample`` (training data) and n
    independent draws of ``target``, over ``repeats`` pairs: what a perfect model would
    measure at this n (for the 2D pairs both draw from rho1 itself)."""
    ed, sw = [], []
    for i in range(repeats):
        a, b = sample(n, generator).to(device), target(n, generator).to(device)
        e, w = distances(a, b, seed=i)
        ed.append(e)
        sw.append(w)
    return sum(ed) / repeats, sum(sw) / repeats


def eps_sweep(
    model: LearnedPair, pair: PairData, s: Settings, device: torch.device | None = None
) -> Sweep:
    """ODE and SDE samples from the same pair (b, s) for every eps in ``s.eps_values``, from
    the same x0, and their energy distance / sliced W2 to held-out target samples."""
    dev = device or next(model.parameters()).device
    seeds = Seeds(s.seed, **SEEDS)
    gen = seeds.generator("sweep")
    n = s.image_eval if pair.image_shape is not None else s.n_eval
    x0 = pair.sample0(n, gen).to(dev)
    target = pair.target(n, gen).to(dev)
    floor_e, floor_w = energy_floor(pair.sample1, pair.target, n, gen, device=dev)
    keep = s.n_show if pair.dim == 2 else min(s.n_show, 64)
    source_e = energy_distance(x0, target)
    energies, sws, shown, frechets = [], [], [], []
    for i, eps in enumerate(s.eps_values):
        x = generate(model, x0, float(eps), s, seeds.generator("sde", i))
        e, w = distances(x, target, seed=s.seed)
        energies.append(e)
        sws.append(w)
        shown.append(x[:keep].float().cpu())
        if pair.image_shape is not None:
            frechets.append(_frechet(x, target, pair.image_shape))
    frechet = frechet_floor = None
    if pair.image_shape is not None:
        frechet = torch.tensor(frechets, dtype=torch.float64)
        frechet_floor = _frechet(pair.sample1(n, gen), target, pair.image_shape)
    f64 = torch.float64
    return Sweep(
        pair.name,
        torch.tensor(s.eps_values, dtype=f64),
        torch.tensor(energies, dtype=f64),
        torch.tensor(sws, dtype=f64),
        floor_e,
        floor_w,
        source_e,
        torch.stack(shown),
        target[:keep].float().cpu(),
        frechet,
        frechet_floor,
    )


def cached_sweep(
    model: LearnedPair, pair: PairData, s: Settings, rebuild: bool = False
) -> tuple[Sweep, bool]:
    """:func:`eps_sweep`, stored beside the weights (``interpolants/sweep-<pair>``), so that
    ``run`` and the dashboard load the samples and distances instead of integrating
    thousands of ODE / SDE paths again. Returns (sweep, loaded from the cache)."""

    def build() -> dict[str, object]:
        with threads_for(pair.name, next(model.parameters()).device):
            return dataclasses.asdict(eps_sweep(model, pair, s))

    key = sweep_key(s, pair.name)
    obj, hit = cache.cached(
        CHAPTER, f"sweep-{pair.name}", key, build, version=VERSION, rebuild=rebuild
    )
    return Sweep(**obj), hit


def _frechet(x: Tensor, reference: Tensor, shape: tuple[int, ...]) -> float:
    from pflow_explore.metrics import digits_frechet_distance

    imgs = x.clamp(-1, 1).reshape(-1, *shape).float().cpu()
    return digits_frechet_distance(imgs, reference.reshape(-1, *shape).float().cpu())


# ---- learned fields against the exact ones ---------------------------------------------------
@dataclass
class FieldErrors:
    """Relative L2 errors of the learned fields on x ~ rho_t, per time and overall.

    times (T,); b, eta: (T,) |f_learned - f_exact|_2 / |f_exact|_2 over the samples at
    each t; b_total, eta_total: the same over all times together.
    """

    pair: str
    times: Tensor
    b: Tensor
    eta: Tensor
    b_total: float
    eta_total: float


@torch.no_grad()
def field_errors(
    model: LearnedPair,
    fields: InterpolantFields,
    times: Tensor,
    n: int,
    generator: torch.Generator | None = None,
    pair: str = "",
) -> FieldErrors:
    """Relative L2 error of the learned b and eta against the exact ones on x ~ rho_t.

    For each t in ``times`` (T,), n samples x ~ rho_t (``InterpolantFields.sample``):
    err_f(t) = sqrt(sum |f_hat - f|^2 / sum |f|^2), f in {b, eta}.
    """
    dev = next(model.parameters()).device
    num: dict[str, list[Tensor]] = {"b": [], "eta": []}
    den: dict[str, list[Tensor]] = {"b": [], "eta": []}
    for t in times.tolist():
        x = fields.sample(t, n, generator, dtype=torch.float64)
        xd = x.float().to(dev)
        learned = {
            "b": model.velocity(xd, t).double().cpu(),
            "eta": model.denoiser(xd, t).double().cpu(),
        }
        exact = {"b": fields.velocity(t, x), "eta": fields.denoiser(t, x)}
        for k in num:
            num[k].append(((learned[k] - exact[k]) ** 2).sum())
            den[k].append((exact[k] ** 2).sum())
    per = {k: (torch.stack(num[k]) / torch.stack(den[k])).sqrt() for k in num}
    total = {k: float((torch.stack(num[k]).sum() / torch.stack(den[k]).sum()).sqrt()) for k in num}
    return FieldErrors(pair, times.double(), per["b"], per["eta"], total["b"], total["eta"])


def learned_vs_exact(s: Settings, model: LearnedPair, data: PairData) -> FieldErrors | None:
    """:func:`field_errors` of one pair at ``field_times`` times inside (delta, 1 - delta),
    or None where the exact fields are unknown (the checkerboard, digits)."""
    with threads_for(data.name, next(model.parameters()).device):
        fields = exact_fields(s, data)
        if fields is None:
            return None
        times = torch.linspace(s.t_delta, 1 - s.t_delta, s.field_times + 2)[1:-1]
        gen = Seeds(s.seed, **SEEDS).generator("fields")
        return field_errors(model, fields, times, s.n_field, gen, data.name)


# ---- theory checks ---------------------------------------------------------------------------
@dataclass
class MonteCarloCheck:
    """Exact fields against Monte-Carlo conditional expectations at points x ~ rho_t.

    Rows (R entries): t, point index, field ("b" or "s"), coordinate, exact value, Monte-Carlo
    estimate, its standard error and the z-score (mc - exact) / se; ess: effective sample
    size of each (t, point). max_abs_z: the largest |z|.
    """

    t: Tensor
    point: Tensor
    field: list[str]
    coordinate: Tensor
    exact: Tensor
    mc: Tensor
    se: Tensor
    z: Tensor
    ess: Tensor
    n_mc: int

    @property
    def max_abs_z(self) -> float:
        return float(self.z.abs().max())


def conditional_expectations(
    interpolant: Interpolant, t: float, x: Tensor, x0: Tensor, x1: Tensor
) -> dict[str, Tensor]:
    """Self-normalised importance sampling of E[. | x_t = x] from joint draws (x0_i, x1_i).

    Given x_t = x, the posterior of (x0, x1) has weights w_i ~ N(x; I(t, x0_i, x1_i),
    gamma^2 I), and z_i = (x - I_i) / gamma. Estimates of b = E[d_t I + gamma' z | x] and
    s = -E[z | x] / gamma and their delta-method standard errors
    se^2 = sum_i w_i^2 (f_i - f_hat)^2 (w normalised). x: (p, d), x0, x1: (N, d), float64.
    Returns "b", "s", "b_se", "s_se": (p, d) and "ess": (p,) = 1 / sum w_i^2.
    """
    g = float(interpolant.gamma.gamma(t))
    dg = float(interpolant.gamma.dgamma(t))
    mid = interpolant.interpolate(t, x0, x1)  # (N, d)
    velocity_part = interpolant.dt_interpolate(t, x0, x1)
    out: dict[str, list[Tensor]] = {k: [] for k in ("b", "s", "b_se", "s_se", "ess")}
    for xp in x:
        z = (xp[None] - mid) / g  # (N, d)
        w = torch.softmax(-0.5 * (z**2).sum(1), 0)[:, None]
        for name, f in (("b", velocity_part + dg * z), ("s", -z / g)):
            est = (w * f).sum(0)
            out[name].append(est)
            out[f"{name}_se"].append(((w**2) * (f - est) ** 2).sum(0).sqrt())
        out["ess"].append(1 / (w**2).sum())
    return {k: torch.stack(v) for k, v in out.items()}


def fields_vs_monte_carlo(
    fields: InterpolantFields,
    times: tuple[float, ...],
    n_points: int,
    n_mc: int,
    generator: torch.Generator | None = None,
) -> MonteCarloCheck:
    """Exact b and s (``InterpolantFields``) against :func:`conditional_expectations` with
    n_mc fresh draws of (x0, x1) per time, at n_points samples of rho_t per time. Rows run
    over t, then the field (b, s), then the point, then the coordinate."""
    rows: dict[str, list[Tensor]] = {k: [] for k in ("t", "p", "c", "exact", "mc", "se", "ess")}
    names: list[str] = []
    d, f64 = fields.dim, torch.float64
    p_idx, c_idx = torch.arange(n_points).repeat_interleave(d), torch.arange(d).repeat(n_points)
    for t in times:
        x = fields.sample(t, n_points, generator, dtype=f64)
        x0 = fields.rho0.sample(n_mc, generator).double()
        x1 = fields.rho1.sample(n_mc, generator).double()
        est = conditional_expectations(fields.interpolant, t, x, x0, x1)
        exact = {"b": fields.velocity(t, x), "s": fields.score(t, x)}
        for name in ("b", "s"):
            names += [name] * (n_points * d)
            rows["t"].append(torch.full((n_points * d,), float(t), dtype=f64))
            rows["p"].append(p_idx)
            rows["c"].append(c_idx)
            rows["exact"].append(exact[name].to(f64).reshape(-1))
            rows["mc"].append(est[name].reshape(-1))
            rows["se"].append(est[f"{name}_se"].reshape(-1))
            rows["ess"].append(est["ess"].to(f64).repeat_interleave(d))
    col = {k: torch.cat(v) for k, v in rows.items()}
    z = (col["mc"] - col["exact"]) / col["se"]
    return MonteCarloCheck(
        col["t"], col["p"], names, col["c"], col["exact"], col["mc"], col["se"], z, col["ess"], n_mc
    )


def mixtures_1d(seed: int) -> tuple[GaussianMixture, GaussianMixture]:
    """Two random 1D mixtures (2 and 3 components, seeded) for the grid residual checks."""
    gen = torch.Generator().manual_seed(seed)
    rho0 = random_mixture(2, 1, generator=gen, mean_scale=1.0, std_range=(0.3, 0.6))
    rho1 = random_mixture(3, 1, generator=gen, mean_scale=1.5, std_range=(0.2, 0.5))
    return rho0, rho1


@dataclass
class ResidualConvergence:
    """Grid residuals of the transport (eps = 0) and Fokker-Planck (eps > 0) equations.

    h (L,) grid spacings, dt (L,) time steps (both halved per level), eps (E,), rms (E, L):
    root mean square of the residual over the interior grid; ratio (E, L - 1):
    rms[level] / rms[level + 1] (4 for a second-order scheme).
    """

    t: float
    h: Tensor
    dt: Tensor
    eps: Tensor
    rms: Tensor

    @property
    def ratio(self) -> Tensor:
        return self.rms[:, :-1] / self.rms[:, 1:]


def residual_convergence(
    fields: InterpolantFields,
    t: float = 0.4,
    eps_values: tuple[float, ...] = (0.0, 0.5),
    levels: int = 4,
    x_range: tuple[float, float] = (-5.0, 5.0),
    m0: int = 101,
    dt0: float = 0.02,
) -> ResidualConvergence:
    """RMS of ``transport_residual`` of the exact 1D density on grids of (m0 - 1) 2^k + 1
    points, spacing h_k = h_0 / 2^k on ``x_range`` and time step dt_k = dt0 / 2^k. The exact
    rho solves the equations, so what remains is the central-difference error
    O(h^2 + dt^2): it should fall ~4x per level, for the transport (eps = 0) and for every
    Fokker-Planck equation (eps > 0) alike (card, "Exact cases").
    """
    if fields.dim != 1:
        raise ValueError(f"residual_convergence needs 1D fields, got d = {fields.dim}")
    hs, dts, rms = [], [], []
    for k in range(levels):
        grid = torch.linspace(*x_range, (m0 - 1) * 2**k + 1, dtype=torch.float64)
        dt = dt0 / 2**k
        hs.append(float(grid[1] - grid[0]))
        dts.append(dt)
        residuals = [transport_residual(fields, t, grid, eps, dt) for eps in eps_values]
        rms.append([float(r.pow(2).mean().sqrt()) for r in residuals])
    f64 = torch.float64
    return ResidualConvergence(
        t,
        torch.tensor(hs, dtype=f64),
        torch.tensor(dts, dtype=f64),
        torch.tensor(eps_values, dtype=f64),
        torch.tensor(rms, dtype=f64).T,
    )


def theory_checks(s: Settings) -> tuple[MonteCarloCheck, ResidualConvergence]:
    """Experiment: exact fields vs Monte Carlo (the 2D mixture pair) and the grid residuals
    of the transport and Fokker-Planck equations (two 1D mixtures)."""
    seeds = Seeds(s.seed, **SEEDS)
    interp = make_interpolant(s)
    with torch_threads(1):  # small float64 work on the CPU: a second thread only waits
        rho0, rho1 = eight_gaussians(), TOY_2D_MIXTURES["mixture"]()
        mc = fields_vs_monte_carlo(
            InterpolantFields(rho0, rho1, interp),
            s.mc_times,
            s.mc_points,
            s.n_mc,
            seeds.generator("mc"),
        )
        one0, one1 = mixtures_1d(seeds["mixtures_1d"])
        residuals = residual_convergence(
            InterpolantFields(one0, one1, interp),
            eps_values=(0.0, s.residual_eps),
            levels=s.residual_levels,
        )
    return mc, residuals


# ---- likelihood control, exactly ----------------------------------------------------------------
@dataclass
class LikelihoodControl:
    """KL(rho1 || rho1_hat) with the drift b + delta, delta(t, x) = -k (x - m_t), in closed form.

    eps (E,) the SDEs; kl_sde (E,), bound (E,) = (1/(4 eps)) int E|delta|^2 dt; kl_ode: the
    ODE's KL; delta_sq: int_0^1 E_{rho_t} |delta|^2 dt; strength k. The sweep over k:
    strengths (K,), kl_ode_k, kl_sde_k, bound_k (K,) at eps = eps_ref.
    """

    dim: int
    strength: float
    eps: Tensor
    kl_sde: Tensor
    bound: Tensor
    kl_ode: float
    delta_sq: float
    eps_ref: float
    strengths: Tensor
    kl_ode_k: Tensor
    kl_sde_k: Tensor
    bound_k: Tensor


def gaussian_endpoints(dim: int, seed: int) -> tuple[GaussianMixture, GaussianMixture]:
    """rho0 = N(0, I), rho1 = N(m1, C1) with a random mean and SPD covariance (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    rho1 = random_mixture(1, dim, generator=gen, mean_scale=1.0, std_range=(0.3, 1.2))
    return single_gaussian(torch.zeros(dim, dtype=torch.float64)), rho1


class _AffineFields:
    """b = A_b x + c_b, s = A_s x + c_s, mean and covariance of rho_t, cached by t (the moment
    equations ask for the same few thousand times again for every eps)."""

    def __init__(self, fields: InterpolantFields) -> None:
        self.fields = fields
        self._memo: dict[float, tuple[Tensor, ...]] = {}

    def __call__(self, t: float) -> tuple[Tensor, ...]:
        # RK4's t + h can overshoot 1 by a rounding error, and theory's gaussian_moments_flow
        # passes it on unclamped: clamp here (theory is read-only for the chapter)
        t = min(max(float(t), 0.0), 1.0)
        if t not in self._memo:
            ab, cb = velocity_affine(self.fields, t)
            as_, cs = score_affine(self.fields, t)
            m, cov = self.fields.gaussian_moments(t)
            self._memo[t] = (ab, cb, as_, cs, m, cov)
        return self._memo[t]


def perturbed_kl(
    affine: _AffineFields, strength: float, eps: float, steps: int
) -> tuple[float, float]:
    """(KL(rho1 || rho1_hat), Girsanov bound) for the drift b + eps s + delta,
    delta(t, x) = -k (x - m_t), noise sqrt(2 eps) (eps = 0: the ODE; its bound is inf).

    rho1_hat is Gaussian: its moments solve dm/dt = A m + c, dC/dt = A C + C A^T + 2 eps I
    (``gaussian_moments_flow``) with A = A_b + eps A_s - k I, c = c_b + eps c_s + k m_t.
    """
    eye = torch.eye(affine.fields.dim, dtype=torch.float64)
    k = float(strength)

    def a_fn(t: float) -> Tensor:
        ab, _, as_, _, _, _ = affine(t)
        return ab + eps * as_ - k * eye

    def c_fn(t: float) -> Tensor:
        _, cb, _, cs, m, _ = affine(t)
        return cb + eps * cs + k * m

    m0, c0 = affine(0.0)[4:]
    m1_hat, c1_hat = gaussian_moments_flow(a_fn, c_fn, eps, m0, c0, steps=steps)
    m1, c1 = affine(1.0)[4:]
    kl = gaussian_kl(m1, c1, m1_hat, c1_hat)
    bound = girsanov_bound(
        lambda t: -k * eye,
        lambda t: k * affine(t)[4],
        lambda t: affine(t)[4],
        lambda t: affine(t)[5],
        eps,
        steps=steps,
    )
    return kl, bound


def likelihood_control(s: Settings) -> LikelihoodControl:
    """Experiment: the exact likelihood control (card, "likelihood control").

    Gaussian endpoints (:func:`gaussian_endpoints`), the preset's interpolant: every field
    is affine, so the generated density rho1_hat is Gaussian and KL(rho1 || rho1_hat)
    is exact. The drift error delta(t, x) = -k (x - m_t) pulls samples toward the mean
    (a model that under-estimates the spread): the ODE's covariance shrinks to
    e^{-2k} C1, KL = d (e^{2k} - 1 - 2k) / 2, growing exponentially in k, while every SDE
    stays below (1 / 4 eps) int E|delta|^2 dt = k^2 int tr C_t dt / (4 eps).
    """
    with torch_threads(1):  # 2 x 2 matrices: a second thread only waits
        rho0, rho1 = gaussian_endpoints(s.lc_dim, Seeds(s.seed, **SEEDS)["lc"])
        affine = _AffineFields(InterpolantFields(rho0, rho1, make_interpolant(s)))
        kl_ode, _ = perturbed_kl(affine, s.lc_strength, 0.0, s.lc_steps)
        sde = [perturbed_kl(affine, s.lc_strength, eps, s.lc_steps) for eps in s.lc_eps]
        ode_k = [perturbed_kl(affine, k, 0.0, s.lc_steps)[0] for k in s.lc_strengths]
        sde_k = [perturbed_kl(affine, k, s.lc_eps_ref, s.lc_steps) for k in s.lc_strengths]

    def f64(values: list[float] | tuple[float, ...]) -> Tensor:
        return torch.tensor(values, dtype=torch.float64)

    kls, bounds = (list(v) for v in zip(*sde, strict=True))
    return LikelihoodControl(
        s.lc_dim,
        s.lc_strength,
        f64(s.lc_eps),
        f64(kls),
        f64(bounds),
        kl_ode,
        bounds[0] * 4 * s.lc_eps[0],
        s.lc_eps_ref,
        f64(s.lc_strengths),
        f64(ode_k),
        f64([kl for kl, _ in sde_k]),
        f64([bound for _, bound in sde_k]),
    )


# ---- widgets' inputs -------------------------------------------------------------------------
def explorer_densities() -> dict[str, GaussianMixture]:
    """The 2D mixtures the interpolant explorer offers as rho0 and rho1."""
    return {
        "N(0, I)": single_gaussian((0.0, 0.0)),
        "eight Gaussians": eight_gaussians(),
        "mixture": TOY_2D_MIXTURES["mixture"](),
        "correlated Gaussian": TOY_2D_MIXTURES["gaussian"](),
    }


def pair_callables(
    model: LearnedPair,
) -> tuple[Callable[[float, Tensor], Tensor], Callable[[float, Tensor], Tensor]]:
    """(b, s) as plain callables (t: float, x (n, d)) -> (n, d) on the CPU, no gradients
    (the signature of ``widgets.SDEStepper``)."""
    cpu = model.to("cpu").eval()

    def b(t: float, x: Tensor) -> Tensor:
        with torch.no_grad():
            return cpu.velocity(x.float(), float(t)).to(x.dtype)

    def s(t: float, x: Tensor) -> Tensor:
        with torch.no_grad():
            return cpu.score(x.float(), float(t)).to(x.dtype)

    return b, s


# ---- the chapter: named experiments, run, claims ----------------------------------------------
@dataclass
class PairResult:
    """One trained pair: the model, its loss history, the eps sweep (``sweep_from_cache``:
    loaded, not sampled again) and (where the exact fields are known) the field errors;
    ``seconds``: wall time of each step."""

    data: PairData
    model: LearnedPair
    losses: list[float]
    trained_seconds: float
    from_cache: bool
    sweep: Sweep
    errors: FieldErrors | None
    sweep_from_cache: bool = False
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Results:
    """Everything the chapter shows. ``pairs``: name -> :class:`PairResult`; ``monte_carlo``,
    ``residuals``: the theory checks; ``likelihood``: the exact likelihood-control
    experiment; ``seconds``: wall time of each step."""

    settings: Settings
    scale: str
    pairs: dict[str, PairResult]
    monte_carlo: MonteCarloCheck
    residuals: ResidualConvergence
    likelihood: LikelihoodControl
    seconds: dict[str, float] = field(default_factory=dict)


def pair_experiment(s: Settings, name: str) -> PairResult:
    """Experiment: train (or load) one pair, sweep eps (or load the sweep), and compare the
    learned fields with the exact ones where they are known."""
    watch = Stopwatch()
    fit = train_pair(s, name)
    model, data = fit.model.eval(), pair_data(s, name)
    watch.tick(f"train {name}")
    sweep, sweep_hit = cached_sweep(model, data, s)
    watch.tick(f"eps sweep {name}")
    errors = learned_vs_exact(s, model, data)
    if errors is not None:
        watch.tick(f"field errors {name}")
    return PairResult(
        data,
        model,
        fit.losses,
        fit.seconds,
        fit.from_cache,
        sweep,
        errors,
        sweep_hit,
        watch.seconds,
    )


def prepare(s: Settings) -> None:
    """Train every pair of the preset and sweep its eps values (or find both in the cache /
    shipped folder)."""
    for pair in s.pairs:
        cached_sweep(train_pair(s, pair).model.eval(), pair_data(s, pair), s)


def run(s: Settings) -> Results:
    """The experiments in order: :func:`pair_experiment` for each pair, then
    :func:`theory_checks` and :func:`likelihood_control`."""
    pairs = {name: pair_experiment(s, name) for name in s.pairs}
    watch = Stopwatch()
    mc, residuals = theory_checks(s)
    watch.tick("theory checks")
    likelihood = likelihood_control(s)
    watch.tick("likelihood control")
    seconds = {k: v for pr in pairs.values() for k, v in pr.seconds.items()} | watch.seconds
    return Results(s, s.scale, pairs, mc, residuals, likelihood, seconds)


def _listing(pairs: list[tuple[float, ...]], fmt: Callable[..., str]) -> str:
    return ", ".join(fmt(*p) for p in pairs)


def claims(r: Results) -> list[Claim]:
    """The card's claims, measured at this scale (criteria fixed before measuring)."""
    sc, st, mc, res, lc = r.scale, r.settings, r.monte_carlo, r.residuals, r.likelihood
    out = [
        claim_below(
            "exact b and s = Monte-Carlo conditional expectations (max |z|)",
            "b = E[d_t I + gamma' z | x_t], s = -E[z | x_t] / gamma, exact for mixtures",
            mc.max_abs_z,
            MC_Z_BOUND,
            sc,
            f"{len(mc.z)} entries (2D mixture pair, t in {tuple(st.mc_times)}), "
            f"{mc.n_mc} draws each, effective sample size >= {float(mc.ess.min()):.0f}",
        ),
        Claim(
            "transport / Fokker-Planck residual shrinks with the grid (min ratio per halving)",
            "rho_t solves d_t rho + div(b rho) = 0 and the FP equations for every eps",
            float(res.ratio.min()),
            f">= {RESIDUAL_RATIO:g} per halving of h and dt (second order: 4)",
            bool(float(res.ratio.min()) >= RESIDUAL_RATIO),
            sc,
            f"1D mixtures, t = {res.t}, eps in {tuple(res.eps.tolist())}; "
            f"RMS residual {float(res.rms[:, 0].max()):.2e} -> "
            f"{float(res.rms[:, -1].max()):.2e} over {len(res.h)} grids",
        ),
    ]
    for name, pr in r.pairs.items():
        sw, title = pr.sweep, PAIR_TITLES[name]
        n_eval = st.image_eval if pr.data.image_shape is not None else st.n_eval
        bound = ENERGY_FACTOR * sw.floor_energy
        sdes = list(zip(sw.eps[1:].tolist(), sw.energy[1:].tolist(), strict=True))
        out += [
            claim_below(
                f"{title}: ODE energy distance to the target",
                "the learned b transports rho0 to rho1",
                float(sw.energy[0]),
                bound,
                sc,
                f"threshold {ENERGY_FACTOR:g} x the distance between two independent target "
                f"sets of n = {n_eval} ({sw.floor_energy:.2e}); rho0 itself: "
                f"{sw.source_energy:.3g}",
            ),
            claim_below(
                f"{title}: every SDE of the sweep (max energy distance)",
                "the same (b, s) gives a generative SDE for every eps",
                float(sw.energy[1:].max()),
                bound,
                sc,
                "eps in "
                + _listing(sdes, lambda e, v: f"{e:g}: {v:.2e}")
                + f"; {st.n_sde_steps} Euler-Maruyama steps",
            ),
        ]
        if pr.errors is not None:
            out.append(
                claim_below(
                    f"{title}: learned b vs exact b (relative L2 error)",
                    "the quadratic loss L_b has the exact b as its minimiser",
                    pr.errors.b_total,
                    FIELD_ERROR_BOUND,
                    sc,
                    f"x ~ rho_t at {len(pr.errors.times)} times in [delta, 1 - delta]; "
                    f"denoiser eta: {pr.errors.eta_total:.3f}",
                )
            )
    lcs = list(zip(lc.eps.tolist(), lc.kl_sde.tolist(), lc.bound.tolist(), strict=True))
    k = lc.strength
    ode_closed = lc.dim * (math.exp(2 * k) - 1 - 2 * k) / 2
    out += [
        Claim(
            "SDE: KL(rho1 || rho1_hat) under the Girsanov bound for every eps (max KL / bound)",
            "KL <= (1 / 4 eps) int E|b_hat - b|^2 dt for the SDE",
            float((lc.kl_sde / lc.bound).max()),
            "<= 1 for every eps tested",
            bool((lc.kl_sde <= lc.bound).all()),
            sc,
            f"d = {lc.dim}, delta = -{k:g} (x - m_t), int E|delta|^2 = {lc.delta_sq:.3g}; "
            + _listing(lcs, lambda e, kl, b: f"eps {e:g}: KL {kl:.3g}, bound {b:.3g}"),
        ),
        Claim(
            "ODE: no such control (KL with the same drift error)",
            "the ODE's KL is not bounded by int E|b_hat - b|^2; it can be large",
            lc.kl_ode,
            "> the KL of every SDE tested",
            bool(lc.kl_ode > float(lc.kl_sde.max())),
            sc,
            f"closed form d (e^2k - 1 - 2k) / 2 = {ode_closed:.4g}; "
            f"largest SDE KL {float(lc.kl_sde.max()):.3g}; at k = {lc.strengths[-1]:g}: "
            f"ODE {float(lc.kl_ode_k[-1]):.3g} vs SDE(eps = {lc.eps_ref:g}) "
            f"{float(lc.kl_sde_k[-1]):.3g}",
        ),
    ]
    return out


# ---- figures -----------------------------------------------------------------------------------
def _v(t: Tensor) -> list[float]:
    """Plain floats for plotly (it converts tensors element by element, slowly)."""
    return t.detach().cpu().double().tolist()


def _style(fig: go.Figure, title: str, height: int = 380, width: int = 620) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", height=height, width=width)
    return fig


def _lines(traces: list[tuple[Tensor, Tensor, str, dict]], x_title: str, y_title: str) -> go.Figure:
    """A figure of (x, y, name, scatter options) traces on log-y axes."""
    fig = go.Figure()
    for x, y, name, options in traces:
        fig.add_scatter(x=_v(x), y=_v(y), name=name, **{"mode": "lines+markers", **options})
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title, type="log")
    return fig


def samples_figure(sw: Sweep) -> go.Figure:
    """Target samples and the samples of the ODE and of each SDE from the same pair (2D)."""
    from plotly.subplots import make_subplots

    names = ["target"] + ["ODE" if e == 0 else f"SDE eps = {e:g}" for e in sw.eps.tolist()]
    sets = [sw.target] + list(sw.samples)
    fig = make_subplots(rows=1, cols=len(sets), subplot_titles=names, horizontal_spacing=0.02)
    lim = [float(sw.target.min()) - 0.5, float(sw.target.max()) + 0.5]
    for i, x in enumerate(sets):
        marker = dict(size=2, color="#7f7f7f" if i == 0 else "#1f77b4")
        fig.add_scatter(
            x=_v(x[:, 0]), y=_v(x[:, 1]), mode="markers", marker=marker, row=1, col=i + 1
        )
        fig.update_xaxes(range=lim, visible=False, row=1, col=i + 1)
        fig.update_yaxes(range=lim, visible=False, row=1, col=i + 1)
    fig.update_traces(showlegend=False)
    title = f"{PAIR_TITLES[sw.pair]}: one learned (b, s), many samplers"
    return _style(fig, title, height=260, width=190 * len(sets))


def eps_sweep_figure(sweeps: dict[str, Sweep]) -> go.Figure:
    """Energy distance and sliced W2 to the target against eps, each pair relative to its
    noise floor (the distance between two independent target sets)."""
    from plotly.subplots import make_subplots

    titles = ("energy distance / floor", "sliced W2 / floor")
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.12)
    for i, (name, sw) in enumerate(sweeps.items()):
        color = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"][i % 4]
        eps = [str(e) if e else "ODE" for e in sw.eps.tolist()]
        for col, ratio in ((1, sw.energy / sw.floor_energy), (2, sw.sliced_w2 / sw.floor_sw2)):
            line, legend = dict(color=color), col == 1
            fig.add_scatter(
                x=eps,
                y=_v(ratio),
                mode="lines+markers",
                name=PAIR_TITLES[name],
                line=line,
                showlegend=legend,
                row=1,
                col=col,
            )
    fig.add_hline(y=ENERGY_FACTOR, line_dash="dot", annotation_text="claim threshold", row=1, col=1)
    fig.add_hline(y=1.0, line_dash="dash", line_color="gray", row=1, col=2)
    fig.update_yaxes(type="log")
    fig.update_xaxes(title="eps (0: ODE)", type="category")
    title = "One pair (b, s), a family of samplers: distance to the target vs eps"
    return _style(fig, title, 400, 900)


def field_error_figure(errors: list[FieldErrors]) -> go.Figure:
    """Relative L2 error of the learned b and eta against t, for pairs with exact fields."""
    traces = []
    for e in errors:
        traces.append((e.times, e.b, f"b, {e.pair}", {}))
        traces.append((e.times, e.eta, f"eta, {e.pair}", {"line": dict(dash="dash")}))
    fig = _lines(traces, "t", "relative L2 error on x ~ rho_t")
    fig.add_hline(y=FIELD_ERROR_BOUND, line_dash="dot", annotation_text="claim threshold (b)")
    return _style(fig, "Learned fields against the exact ones")


def likelihood_figure(lc: LikelihoodControl) -> go.Figure:
    """KL(rho1 || rho1_hat) of SDEs against eps with the Girsanov bound, and the ODE's KL."""
    bound = (lc.eps, lc.bound, "bound (1/4 eps) int E|delta|^2", {"mode": "lines"})
    kl = (lc.eps, lc.kl_sde, "SDE: exact KL", {"mode": "markers", "marker": dict(size=9)})
    fig = _lines([bound, kl], "eps", "KL(rho1 || rho1_hat)")
    fig.add_hline(
        y=lc.kl_ode,
        line_dash="dash",
        line_color="#d62728",
        annotation_text=f"ODE: KL = {lc.kl_ode:.3g}",
    )
    fig.update_xaxes(type="log")
    return _style(fig, f"Likelihood control: drift error delta = -{lc.strength:g} (x - m_t)")


def strength_figure(lc: LikelihoodControl) -> go.Figure:
    """KL against the perturbation strength k: the ODE's grows like e^{2k}, the SDE's stays
    under a bound that grows like k^2."""
    k = lc.strengths
    traces = [
        (k, lc.kl_ode_k, "ODE", {}),
        (k, lc.kl_sde_k, f"SDE eps = {lc.eps_ref:g}", {}),
        (k, lc.bound_k, "its bound", {"mode": "lines", "line": dict(dash="dot")}),
    ]
    fig = _lines(traces, "perturbation strength k", "KL(rho1 || rho1_hat)")
    return _style(fig, "Where the ODE degrades and the SDE does not")


def residual_figure(res: ResidualConvergence) -> go.Figure:
    """RMS residual of the transport / Fokker-Planck equations against the grid spacing."""
    traces = [
        (res.h, res.rms[i], "transport (eps = 0)" if e == 0 else f"Fokker-Planck, eps = {e:g}", {})
        for i, e in enumerate(res.eps.tolist())
    ]
    ref = res.rms[:, 0].max() * (res.h / res.h[0]) ** 2
    traces.append(
        (res.h, ref, "slope 2", {"mode": "lines", "line": dict(dash="dot", color="gray")})
    )
    fig = _lines(traces, "grid spacing h (dt halved alongside)", "RMS residual")
    fig.update_xaxes(type="log")
    return _style(fig, "The exact density solves the equations: residual -> 0 with the grid")


MC_COLUMNS = ("t", "point", "field", "coord", "exact", "Monte Carlo", "SE", "z")


def _mc_cells(mc: MonteCarloCheck) -> list[list[str]]:
    """The Monte-Carlo check as text columns (:data:`MC_COLUMNS`)."""
    fmt = (".2f", "d", "s", "d", ".4f", ".4f", ".4f", "+.2f")
    cols = (mc.t, mc.point, mc.field, mc.coordinate, mc.exact, mc.mc, mc.se, mc.z)
    values = [c if isinstance(c, list) else c.tolist() for c in cols]
    return [[format(v, f) for v in col] for col, f in zip(values, fmt, strict=True)]


def monte_carlo_table(mc: MonteCarloCheck) -> go.Figure:
    """The Monte-Carlo check as a table: t, point, field, coordinate, exact, MC, SE, z."""
    header, cells = dict(values=list(MC_COLUMNS), align="left"), _mc_cells(mc)
    fig = go.Figure(go.Table(header=header, cells=dict(values=cells, align="left")))
    return _style(fig, f"Exact fields vs Monte Carlo ({mc.n_mc} draws per time)", 420, 700)


def monte_carlo_html(mc: MonteCarloCheck) -> str:
    """The Monte-Carlo check as an HTML table (a plotly Table shown as a FigureWidget ahead of
    other FigureWidgets stopped their updates in Voila here, so the notebook shows this)."""
    right = "style='text-align:right'"
    head = "".join(f"<th {right}>{h}</th>" for h in MC_COLUMNS)
    rows = []
    for i, row in enumerate(zip(*_mc_cells(mc), strict=True)):
        bold = ";color:#b00020;font-weight:bold" if abs(float(mc.z[i])) >= MC_Z_BOUND else ""
        cells = "".join(f"<td style='text-align:right{bold}'>{c}</td>" for c in row)
        rows.append(f"<tr>{cells}</tr>")
    return (
        "<div style='max-height:320px;overflow-y:auto'><table class='pflow-mc'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def losses_figure(losses: dict[str, list[float]]) -> go.Figure:
    """Training loss L_b + L_eta per step (smoothed over 50 steps), each pair."""
    fig = go.Figure()
    for name, values in losses.items():
        loss = torch.tensor(values, dtype=torch.float64)
        k = min(50, len(loss))
        fig.add_scatter(y=_v(loss.unfold(0, k, 1).mean(1)), mode="lines", name=PAIR_TITLES[name])
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="L_b + L_eta (per dimension)")
    return _style(fig, "Training the pair (b, eta)")


def digits_figure(sw: Sweep, n: int = 8) -> go.Figure:
    """The first n digits per eps (rows: ODE, then SDEs), from the same noise."""
    from pflow_explore.viz import image_grid_figure

    imgs = sw.samples[:, :n].reshape(-1, 1, 32, 32).clamp(-1, 1)
    labels = ["ODE" if e == 0 else f"eps={e:g}" for e in sw.eps.tolist()]
    titles = [label if i == 0 else "" for label in labels for i in range(n)]
    title = "Digits from noise, per eps"
    return image_grid_figure(imgs, nrow=n, titles=titles, tile_px=48, title=title)


def figures(r: Results) -> dict[str, go.Figure]:
    pairs = r.pairs.items()
    out = {f"samples_{n}": samples_figure(pr.sweep) for n, pr in pairs if pr.data.dim == 2}
    out.update(
        eps_sweep=eps_sweep_figure({n: pr.sweep for n, pr in pairs}),
        likelihood_control=likelihood_figure(r.likelihood),
        likelihood_strength=strength_figure(r.likelihood),
        residuals=residual_figure(r.residuals),
        monte_carlo=monte_carlo_table(r.monte_carlo),
        losses=losses_figure({n: pr.losses for n, pr in pairs}),
    )
    errors = [pr.errors for pr in r.pairs.values() if pr.errors is not None]
    if errors:
        out["field_errors"] = field_error_figure(errors)
    if "digits32" in r.pairs:
        out["digits"] = digits_figure(r.pairs["digits32"].sweep)
    return out


def preview() -> go.Figure:
    """Paths of the interpolant x_t = (1 - t) x0 + t x1 + sqrt(t (1 - t)) z from N(0, I) to
    eight Gaussians: noisy bridges (no training, no ODE solve)."""
    from pflow_explore.viz import points_figure

    gen = torch.Generator().manual_seed(2)
    n, steps = 40, 40
    x0 = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x1 = eight_gaussians().sample(n, gen).double()
    t = torch.linspace(0, 1, steps, dtype=torch.float64)[:, None, None]
    # a Brownian bridge per path, so each path is continuous (z fixed per path would be smooth)
    walk = torch.randn(steps, n, 2, generator=gen, dtype=torch.float64).cumsum(0) / math.sqrt(steps)
    paths = (1 - t) * x0 + t * x1 + walk - t * walk[-1:]
    fig = points_figure(paths[-1], trajectories=paths)
    fig.update_layout(
        title=None, height=220, width=220, margin=dict(l=5, r=5, t=5, b=5), showlegend=False
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig
