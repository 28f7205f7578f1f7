"""Chapter 02: stochastic interpolants (Albergo, Boffi & Vanden-Eijnden 2023).

One interpolant x_t = I(t, x0, x1) + gamma(t) z between two densities rho0, rho1 defines a
velocity b and a score s; learned once, (b, s) gives the ODE dX = b dt and, for every eps > 0,
the SDE dX = (b + eps s) dt + sqrt(2 eps) dW (docs/papers.md). This module
holds the paper's presets, experiments, claims and figure wiring; the method lives in
``interpolant_learning`` (losses, sweeps), ``samplers``, ``theory.interpolant_fields`` /
``theory.interpolant_checks`` and ``viz.interpolant_figures``. The named experiments:

1. :func:`pair_experiment` per data pair (:func:`pair_data`): :func:`train_pair` fits b and
   eta = gamma s with the paper's quadratic losses; :func:`cached_sweep` samples the ODE and
   the SDEs for every eps from the same pair and measures distances to the target;
   :func:`learned_vs_exact` compares b and eta with the exact fields where known;
2. :func:`theory_checks`: exact fields against Monte Carlo, and the grid residuals of the
   transport and Fokker-Planck equations;
3. :func:`likelihood_control`: Gaussian endpoints, the exact drift plus a known error
   delta; KL(rho1 || rho1_hat) in closed form for the ODE and SDEs vs the Girsanov bound.

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
from functools import lru_cache, partial

import plotly.graph_objects as go
import torch
from torch import Tensor, nn

from pflow_explore import cache, scale
from pflow_explore import interpolant_learning as learn
from pflow_explore.claims import Claim, claim_below
from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.datasets.toy2d import (
    TOY_2D_MIXTURES,
    checkerboard,
    checkerboard_log_prob,
    checkerboard_to_white,
    eight_gaussians,
    random_mixture,
    single_gaussian,
)
from pflow_explore.experiment import (
    Seeds,
    Stopwatch,
    cache_key,
    cached_result,
    choose,
    one_thread_on_cpu,
    presets,
    require,
    require_at_least,
    torch_threads,
)
from pflow_explore.interpolant_learning import FieldErrors, PairData, Sweep
from pflow_explore.interpolants import GAMMAS, INTERPOLANTS, Interpolant, get_interpolant
from pflow_explore.samplers import LearnedPair
from pflow_explore.theory import interpolant_checks as checks
from pflow_explore.theory.interpolant_fields import InterpolantFields
from pflow_explore.training import FitResult, fit_cached
from pflow_explore.viz import interpolant_figures as figs

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
SUPPORT_SHARE = 0.9  # claim: share of checkerboard samples on the black squares above 90 %
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
        pairs, interp, eps = self.pairs, self.interpolant, self.eps_values
        ok_pairs = bool(pairs) and all(p in PAIRS for p in pairs)
        require(ok_pairs, f"pairs must be a non-empty subset of {PAIRS}, got {pairs!r}")
        require(len(set(pairs)) == len(pairs), f"pairs must not repeat, got {pairs!r}")
        names = ", ".join(INTERPOLANTS)
        require(interp in INTERPOLANTS, f"interpolant must be one of {names}, got {interp!r}")
        valid = ", ".join(g for g in GAMMAS if g != "zero")
        ok_gamma = self.gamma in GAMMAS and self.gamma != "zero"
        require(ok_gamma, f"gamma must be one of {valid} (the score needs gamma > 0)")
        ok_a = math.isfinite(self.gamma_a) and self.gamma_a > 0
        require(ok_a, f"gamma_a must be > 0, got {self.gamma_a}")
        require(0 < self.t_delta < 0.25, f"t_delta must lie in (0, 0.25), got {self.t_delta}")
        require_at_least(self, POSITIVE)
        require(
            min(self.n_eval, self.image_eval, self.n_field) >= 16 and self.n_mc >= 1000,
            "n_eval, image_eval and n_field must be >= 16 and n_mc >= 1000",
        )
        ok_eps = bool(eps) and eps[0] == 0 and min(eps) >= 0
        require(ok_eps, f"eps_values must start with 0 (the ODE) and hold numbers >= 0: {eps!r}")
        require(len(eps) >= 2, "eps_values needs an eps > 0 besides the ODE's 0")
        require(
            2 <= self.n_ode_steps <= 10_000 and 2 <= self.n_sde_steps <= 10_000,
            "n_ode_steps and n_sde_steps must lie in [2, 10000]",
        )
        ok_mc = bool(self.mc_times) and all(0.05 <= t <= 0.95 for t in self.mc_times)
        require(ok_mc, f"mc_times must lie in [0.05, 0.95], got {self.mc_times!r}")
        levels = self.residual_levels
        require(2 <= levels <= 7, f"residual_levels must lie in [2, 7]: {levels}")
        require(self.residual_eps > 0, f"residual_eps must be > 0, got {self.residual_eps}")
        require(
            bool(self.lc_eps) and min(self.lc_eps) > 0 and self.lc_eps_ref > 0,
            "lc_eps and lc_eps_ref must be > 0 (eps = 0 is the ODE, kept apart)",
        )
        ok_k = self.lc_strength > 0 and bool(self.lc_strengths) and min(self.lc_strengths) > 0
        require(ok_k, "lc_strength and lc_strengths must be > 0")
        require(self.lc_steps >= 10, f"lc_steps must be >= 10, got {self.lc_steps}")
        require(
            INTERPOLANTS[interp].rho0_constraint is None,
            f"the {interp!r} interpolant constrains rho0; the chapter's pairs need one between "
            "two different densities (linear, trigonometric, encoder_decoder)",
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
    """The densities of one experiment (docs/papers.md, "Small reproduction" and "GPU setting").

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
        return PairData(
            pair, 2, learn.mixture_sampler(rho0), checkerboard, checkerboard, rho0, None
        )
    if pair == "mixtures":
        rho0, rho1 = eight_gaussians(), TOY_2D_MIXTURES["mixture"]()
        s0, s1 = learn.mixture_sampler(rho0), learn.mixture_sampler(rho1)
        return PairData(pair, 2, s0, s1, s1, rho0, rho1)
    if kind == "hd":
        d = s.gmm_dim
        gen = Seeds(s.seed, **SEEDS).generator("gmm")
        rho1 = random_mixture(s.gmm_components, d, generator=gen)
        rho0 = single_gaussian(torch.zeros(d, dtype=torch.float64))
        s0, s1 = learn.mixture_sampler(rho0), learn.mixture_sampler(rho1)
        return PairData(pair, d, s0, s1, s1, rho0, rho1)
    train, test = _digits32(s.digit_copies, s.seed)
    noise = learn.mixture_sampler(single_gaussian(torch.zeros(1024, dtype=torch.float64)))
    return PairData(
        pair,
        1024,
        noise,
        learn.rows_sampler(train),
        learn.rows_sampler(test),
        None,
        None,
        (1, 32, 32),
    )


def exact_fields(s: Settings, pair: PairData) -> InterpolantFields | None:
    """The exact b, s, eta of the pair (``theory.interpolant_fields``), None if unknown."""
    if not pair.exact:
        return None
    return InterpolantFields(pair.rho0, pair.rho1, make_interpolant(s))


# ---- the learned pair (b, eta) and its losses ----------------------------------------------
def make_model(s: Settings, pair: PairData) -> LearnedPair:
    """Two fresh networks for b and eta (``samplers.LearnedPair``): an MLP (2D, gmm400) or a
    UNet (digits)."""
    from pflow_explore.nets import MLP, UNet
    from pflow_explore.nets.mlp import SHIPPED_TIME_SCALE

    kind = pair_kind(pair.name)

    def net() -> nn.Module:
        if kind == "2d":
            return MLP(pair.dim, hidden=s.hidden, depth=s.depth, time_scale=SHIPPED_TIME_SCALE)
        if kind == "hd":
            return MLP(
                pair.dim, hidden=s.hd_hidden, depth=s.hd_depth, time_scale=SHIPPED_TIME_SCALE
            )
        unet = UNet(pair.image_shape[0], base=s.unet_base, channel_mults=s.unet_mults)
        return learn.FlatUNet(unet, pair.image_shape)

    return LearnedPair(net(), net(), make_interpolant(s).gamma, s.t_delta)


def pair_loss_fn(
    s: Settings, pair: PairData, device: torch.device
) -> Callable[[nn.Module, int], Tensor]:
    """``interpolant_learning.interpolant_loss_fn`` with the preset's interpolant, batch and
    the pair's own seeded generator (stream ``loss``)."""
    interp = make_interpolant(s)
    gen = Seeds(s.seed, **SEEDS).generator("loss", PAIRS.index(pair.name))
    batch = s.image_batch if pair_kind(pair.name) == "image" else s.batch
    return learn.interpolant_loss_fn(pair, interp, batch, s.t_delta, gen, device)


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
            CHAPTER, f"pair-{pair}", training_key(s, pair), lambda: seeded_model(s, data),
            pair_loss_fn(s, data, dev), version=VERSION, rebuild=rebuild, device=dev,
            steps=fit["steps"], lr=fit["lr"], ema_decay=s.ema_decay,
            warmup=min(200, fit["steps"] // 10), cosine=True, progress=progress,
            desc=f"interpolants: b and eta, {PAIR_TITLES[pair]} ({s.scale})",
        )  # fmt: skip


# ---- sampling: one pair, many generative models ---------------------------------------------
def pair_sweep(
    model: LearnedPair, pair: PairData, s: Settings, device: torch.device | None = None
) -> Sweep:
    """``interpolant_learning.eps_sweep`` with the preset's eps values, sizes, sampler
    (``interpolant_learning.generate``) and seed streams."""
    seeds = Seeds(s.seed, **SEEDS)
    n = s.image_eval if pair.image_shape is not None else s.n_eval
    keep = s.n_show if pair.dim == 2 else min(s.n_show, 64)

    def draw(m: LearnedPair, x0: Tensor, eps: float, gen: torch.Generator) -> Tensor:
        return learn.generate(m, x0, eps, s.n_ode_steps, s.n_sde_steps, gen)

    sde = partial(seeds.generator, "sde")
    gen = seeds.generator("sweep")
    return learn.eps_sweep(model, pair, s.eps_values, n, keep, draw, gen, sde, s.seed, device)


def cached_sweep(
    model: LearnedPair, pair: PairData, s: Settings, rebuild: bool = False
) -> tuple[Sweep, bool]:
    """:func:`pair_sweep`, stored beside the weights (``interpolants/sweep-<pair>``), so that
    ``run`` and the dashboard load the samples and distances instead of integrating
    thousands of ODE / SDE paths again. Returns (sweep, loaded from the cache)."""

    def build() -> dict[str, object]:
        with threads_for(pair.name, next(model.parameters()).device):
            return dataclasses.asdict(pair_sweep(model, pair, s))

    key = sweep_key(s, pair.name)
    obj, hit = cache.cached(
        CHAPTER, f"sweep-{pair.name}", key, build, version=VERSION, rebuild=rebuild
    )
    return Sweep(**obj), hit


# ---- learned fields against the exact ones ---------------------------------------------------
def learned_vs_exact(s: Settings, model: LearnedPair, data: PairData) -> FieldErrors | None:
    """:func:`field_errors` of one pair at ``field_times`` times inside (delta, 1 - delta),
    or None where the exact fields are unknown (the checkerboard, digits)."""
    with threads_for(data.name, next(model.parameters()).device):
        fields = exact_fields(s, data)
        if fields is None:
            return None
        times = torch.linspace(s.t_delta, 1 - s.t_delta, s.field_times + 2)[1:-1]
        gen = Seeds(s.seed, **SEEDS).generator("fields")
        return learn.field_errors(model, fields, times, s.n_field, gen, data.name)


# ---- theory checks ---------------------------------------------------------------------------
def theory_checks(s: Settings) -> tuple[checks.MonteCarloCheck, checks.ResidualConvergence]:
    """Experiment: exact fields vs Monte Carlo (the 2D mixture pair) and the grid residuals
    of the transport and Fokker-Planck equations (two 1D mixtures)."""
    seeds = Seeds(s.seed, **SEEDS)
    interp = make_interpolant(s)
    with torch_threads(1):  # small float64 work on the CPU: a second thread only waits
        rho0, rho1 = eight_gaussians(), TOY_2D_MIXTURES["mixture"]()
        fields, gen = InterpolantFields(rho0, rho1, interp), seeds.generator("mc")
        mc = checks.fields_vs_monte_carlo(fields, s.mc_times, s.mc_points, s.n_mc, gen)
        fields_1d = InterpolantFields(*checks.mixtures_1d(seeds["mixtures_1d"]), interp)
        eps, levels = (0.0, s.residual_eps), s.residual_levels
        residuals = checks.residual_convergence(fields_1d, eps_values=eps, levels=levels)
    return mc, residuals


def likelihood_control(s: Settings) -> checks.LikelihoodControl:
    """Experiment: the exact likelihood control (docs/papers.md).

    Gaussian endpoints, the preset's interpolant: every field is affine, so rho1_hat is
    Gaussian and KL(rho1 || rho1_hat) exact. The drift error delta(x, t) = -k (x - m_t)
    shrinks the ODE's covariance to e^{-2k} C1, KL = d (e^{2k} - 1 - 2k) / 2, while every
    SDE stays below (1 / 4 eps) int E|delta|^2 dt = k^2 int tr C_t dt / (4 eps).
    """

    def sweep() -> checks.LikelihoodControl:
        with torch_threads(1):  # 2 x 2 matrices: a second thread only waits
            rho0, rho1 = checks.gaussian_endpoints(s.lc_dim, Seeds(s.seed, **SEEDS)["lc"])
            fields = InterpolantFields(rho0, rho1, make_interpolant(s))
            args = (s.lc_strength, s.lc_eps, s.lc_strengths, s.lc_eps_ref, s.lc_steps)
            return checks.likelihood_sweep(fields, *args)

    # closed-form moments, but 28,800 ODE right-hand sides (2 s): stored, as a run's numbers
    key = cache_key(s, ("interpolant", "gamma", "gamma_a", "seed"), prefix="lc_")
    return cached_result(CHAPTER, VERSION, checks.LikelihoodControl, "likelihood", key, sweep)


# ---- widgets' inputs -------------------------------------------------------------------------
def explorer_densities() -> dict[str, GaussianMixture]:
    """The 2D mixtures the interpolant explorer offers as rho0 and rho1."""
    return {
        "N(0, I)": single_gaussian((0.0, 0.0)),
        "eight Gaussians": eight_gaussians(),
        "mixture": TOY_2D_MIXTURES["mixture"](),
        "correlated Gaussian": TOY_2D_MIXTURES["gaussian"](),
    }


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
    monte_carlo: checks.MonteCarloCheck
    residuals: checks.ResidualConvergence
    likelihood: checks.LikelihoodControl
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
    losses, seconds, hit = fit.losses, fit.seconds, fit.from_cache
    return PairResult(data, model, losses, seconds, hit, sweep, errors, sweep_hit, watch.seconds)


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
    """The paper's claims, measured at this scale (criteria fixed before measuring)."""
    sc, st, mc, res, lc = r.scale, r.settings, r.monte_carlo, r.residuals, r.likelihood
    # fmt: off
    out = [
        claim_below(
            "exact b and s = Monte-Carlo conditional expectations (max |z|)",
            "b = E[d_t I + gamma' z | x_t], s = -E[z | x_t] / gamma, exact for mixtures",
            mc.max_abs_z, MC_Z_BOUND, sc,
            f"{len(mc.z)} entries (2D mixture pair, t in {tuple(st.mc_times)}), "
            f"{mc.n_mc} draws each, effective sample size >= {float(mc.ess.min()):.0f}",
        ),
        Claim(
            "transport / Fokker-Planck residual shrinks with the grid (min ratio per halving)",
            "rho_t solves d_t rho + div(b rho) = 0 and the FP equations for every eps",
            float(res.ratio.min()),
            f">= {RESIDUAL_RATIO:g} per halving of h and dt (second order: 4)",
            bool(float(res.ratio.min()) >= RESIDUAL_RATIO), sc,
            f"1D mixtures, t = {res.t}, eps in {tuple(res.eps.tolist())}; RMS residual "
            f"{float(res.rms[:, 0].max()):.2e} -> {float(res.rms[:, -1].max()):.2e} "
            f"over {len(res.h)} grids",
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
                "the learned b transports rho0 to rho1", float(sw.energy[0]), bound, sc,
                f"threshold {ENERGY_FACTOR:g} x the distance between two independent target "
                f"sets of n = {n_eval} ({sw.floor_energy:.2e}); "
                f"rho0 itself: {sw.source_energy:.3g}",
            ),
            claim_below(
                f"{title}: every SDE of the sweep (max energy distance)",
                "the same (b, s) gives a generative SDE for every eps",
                float(sw.energy[1:].max()), bound, sc,
                "eps in " + _listing(sdes, lambda e, v: f"{e:g}: {v:.2e}")
                + f"; {st.n_sde_steps} Euler-Maruyama steps",
            ),
        ]
        if pr.data.dim == 2:  # negative controls: a moment-matched Gaussian; off the squares
            board = (checkerboard_log_prob, checkerboard_to_white) if name == "checkerboard" else ()
            out += learn.control_claims(title, sw, st.seed, sc, *board, support=SUPPORT_SHARE)
        if pr.errors is not None:
            out.append(learn.field_error_claim(title, pr.errors, FIELD_ERROR_BOUND, sc))
    lcs = list(zip(lc.eps.tolist(), lc.kl_sde.tolist(), lc.bound.tolist(), strict=True))
    k = lc.strength
    ode_closed = lc.dim * (math.exp(2 * k) - 1 - 2 * k) / 2
    out += [
        Claim(
            "SDE: KL(rho1 || rho1_hat) under the Girsanov bound for every eps (max KL / bound)",
            "KL <= (1 / 4 eps) int E|b_hat - b|^2 dt for the SDE",
            float((lc.kl_sde / lc.bound).max()), "<= 1 for every eps tested",
            bool((lc.kl_sde <= lc.bound).all()), sc,
            f"d = {lc.dim}, delta = -{k:g} (x - m_t), int E|delta|^2 = {lc.delta_sq:.3g}; "
            + _listing(lcs, lambda e, kl, b: f"eps {e:g}: KL {kl:.3g}, bound {b:.3g}"),
        ),
        Claim(
            "ODE: no such control (KL with the same drift error)",
            "the ODE's KL is not bounded by int E|b_hat - b|^2; it can be large",
            lc.kl_ode, "> the KL of every SDE tested", bool(lc.kl_ode > float(lc.kl_sde.max())), sc,
            f"closed form d (e^2k - 1 - 2k) / 2 = {ode_closed:.4g}; "
            f"largest SDE KL {float(lc.kl_sde.max()):.3g}; at k = {lc.strengths[-1]:g}: "
            f"ODE {float(lc.kl_ode_k[-1]):.3g} vs SDE(eps = {lc.eps_ref:g}) "
            f"{float(lc.kl_sde_k[-1]):.3g}",
        ),
    ]
    # fmt: on
    return out


# ---- figures (builders in ``viz.interpolant_figures``; the chapter passes titles and bounds) ---
eps_sweep_figure = partial(figs.eps_sweep_figure, titles=PAIR_TITLES, threshold=ENERGY_FACTOR)
field_error_figure = partial(figs.field_error_figure, threshold=FIELD_ERROR_BOUND)
monte_carlo_html = partial(figs.monte_carlo_html, z_bound=MC_Z_BOUND)
losses_figure = partial(figs.losses_figure, titles=PAIR_TITLES)


def samples_figure(sw: Sweep) -> go.Figure:
    """Target, ODE and SDE samples of one 2D pair (``viz.interpolant_figures``)."""
    return figs.samples_figure(sw, f"{PAIR_TITLES[sw.pair]}: one learned (b, s), many samplers")


def figures(r: Results) -> dict[str, go.Figure]:
    pairs = r.pairs.items()
    out = {f"samples_{n}": samples_figure(pr.sweep) for n, pr in pairs if pr.data.dim == 2}
    out.update(
        eps_sweep=eps_sweep_figure({n: pr.sweep for n, pr in pairs}),
        likelihood_control=figs.likelihood_figure(r.likelihood),
        likelihood_strength=figs.strength_figure(r.likelihood),
        residuals=figs.residual_figure(r.residuals),
        monte_carlo=figs.monte_carlo_table(r.monte_carlo),
        losses=losses_figure({n: pr.losses for n, pr in pairs}),
    )
    errors = [pr.errors for pr in r.pairs.values() if pr.errors is not None]
    if errors:
        out["field_errors"] = field_error_figure(errors)
    if "digits32" in r.pairs:
        out["digits"] = figs.digits_figure(r.pairs["digits32"].sweep)
    return out


def preview() -> go.Figure:
    """Paths of the interpolant x_t = (1 - t) x0 + t x1 + sqrt(t (1 - t)) z from N(0, I) to
    eight Gaussians: noisy bridges (no training, no ODE solve)."""
    from pflow_explore.viz import points_figure
    from pflow_explore.viz.style import thumbnail

    gen = torch.Generator().manual_seed(2)
    n, steps = 40, 40
    x0 = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x1 = eight_gaussians().sample(n, gen).double()
    t = torch.linspace(0, 1, steps, dtype=torch.float64)[:, None, None]
    # a Brownian bridge per path, so each path is continuous (z fixed per path would be smooth)
    walk = torch.randn(steps, n, 2, generator=gen, dtype=torch.float64).cumsum(0) / math.sqrt(steps)
    paths = (1 - t) * x0 + t * x1 + walk - t * walk[-1:]
    return thumbnail(points_figure(paths[-1], trajectories=paths))
