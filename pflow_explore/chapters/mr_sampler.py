"""Chapter 05: MR Sampler: semi-analytic solvers for mean-reverting diffusion.

Li et al. 2025, docs/papers.md §05. Time convention: diffusion, t in [0, T] (T = 100 as in
the paper): t = 0 is the clean image x0, t = T the degraded image mu plus noise of std
lambda, as in :mod:`mean_reverting`, which holds the method (the schedule, the exact mixture
denoiser, Euler-Maruyama, Euler and the MRS-1/2/3 updates), and :mod:`restoration` (the
degradations and the conditional network). The experiments, each callable on its own:
:func:`theory` (marginals against a simulated forward SDE, the exact flow map), :func:`exact`
(every solver with an exact denoiser: a linear-Gaussian restoration problem and a 2D
mixture; orders, the NFE each needs, an error-carrying network modelled) and
:func:`experiment_digits` (a noise- and a data-prediction network restoring 8x8 digits);
``run`` composes the three.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor

from pflow_explore import experiment, metrics, solvers, viz
from pflow_explore import mean_reverting as mr
from pflow_explore import restoration as rs
from pflow_explore.claims import Claim, claim_above, claim_band, claim_below, claim_ordered
from pflow_explore.datasets.image_splits import settings_images as images
from pflow_explore.datasets.toy2d import eight_gaussians
from pflow_explore.experiment import Seeds, cache_key, choose, one_thread_on_cpu, presets
from pflow_explore.theory import mean_reverting as theory_mr
from pflow_explore.theory.gaussian_flow import Derivation
from pflow_explore.training import FitResult, fit_cached
from pflow_explore.viz import solver_figures as sf
from pflow_explore.viz import style

CHAPTER = "mr_sampler"
VERSION = 1  # part of every cache key: bump when training or evaluation changes
SEEDS = dict(theory=(0, 1000), problem=1, start=2, noise=3, floor=(4, 1000), error=5, mix=6,
             init=10, train=11, data=12, eval=13, sample=14, boot=15)  # fmt: skip
# the solvers compared: label -> (method, order, time spacing)
SOLVERS = {
    "Euler-Maruyama": ("euler_maruyama", 1, "uniform"),
    "Euler (PF-ODE)": ("euler_ode", 1, "uniform"),
    "MRS-1 ODE": ("mrs_ode_data", 1, "logsnr"),  # noise and data forms agree at order 1
    "MRS-2 ODE noise": ("mrs_ode_noise", 2, "logsnr"),
    "MRS-2 ODE data": ("mrs_ode_data", 2, "logsnr"),
    "MRS-3 ODE noise": ("mrs_ode_noise", 3, "logsnr"),
    "MRS-3 ODE data": ("mrs_ode_data", 3, "logsnr"),
    "MRS-1 SDE": ("mrs_sde_data", 1, "logsnr"),
    "MRS-2 SDE": ("mrs_sde_data", 2, "logsnr"),
}
ODE_SOLVERS = [k for k, v in SOLVERS.items() if v[0] not in ("euler_maruyama", "mrs_sde_data")]
DIGIT_SOLVERS = ("Euler-Maruyama", "MRS-1 ODE", "MRS-2 ODE noise", "MRS-2 ODE data",
                 "MRS-3 ODE data", "MRS-2 SDE")  # fmt: skip
EM, FAST = "Euler-Maruyama", "MRS-2 ODE data"  # the baseline and the chapter's fast solver
NETS = {"noise": "eps", "data": "x0"}  # network name -> what it predicts


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter (``scale``: the preset's name). The fields that
    train models are in their cache keys (:data:`FIELDS_DIGITS`)."""

    scale: str
    # the paper's schedule: T = 100, cosine theta, lambda = 50/255, alpha_T = 0.005
    T: float = 100.0
    lambda_: float = 50 / 255
    alpha_end: float = 0.005
    t_end: float = 0.1  # samplers stop here (1e-3 T)
    # theory: the marginals (2) against an Euler-Maruyama simulation of the forward SDE (1)
    n_marginal: int = 4000
    sde_steps: int = 2000
    # exact denoisers: a linear-Gaussian restoration problem (1-D signal) and a 2D mixture
    signal_dim: int = 8
    n_exact: int = 50000  # samples per W2 (Gaussian moments)
    n_paths: int = 256  # paths per pathwise ODE error
    nfe: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
    em_reference: int = 200  # the EM quality the others must reach (in ``nfe``)
    exact_nfe_max: int = 100  # the other solvers stop here (the W2 floor is reached by then)
    error_std: float = 0.05  # a modelled network's eps error (std) for the stability study
    stability_nfe: tuple[int, ...] = (5, 10, 20)
    n_mix: int = 800  # samples per 2D W2 (exact optimal transport: ~0.3 s each)
    mix_nfe: tuple[int, ...] = (5, 10, 20, 50, 200)
    # digits restoration (denoise / deblur / inpaint), mu = the degraded image
    digits: bool = True
    data: str = "digits"  # or "patches" (skimage photos)
    image_size: int = 8
    net: str = "mlp"  # or "unet"
    hidden: int = 512
    depth: int = 3
    base: int = 32
    batch: int = 256
    lr: float = 1e-3
    steps: int = 2000
    n_eval: int = 300  # test images per task
    digits_nfe: tuple[int, ...] = (5, 10, 20, 100)
    fast_nfe_max: int = 20  # the MRS solvers stop here (flat beyond); Euler-Maruyama does not
    n_times: int = 12  # times at which the x0 error of each network is measured
    seed: int = 0

    def __post_init__(self) -> None:
        need = experiment.require
        experiment.require_counts(self)
        experiment.require_at_least(self, "n_marginal n_exact n_paths n_mix n_eval", low=16)
        experiment.require_choice(self, "data", ("digits", "patches"))
        experiment.require_choice(self, "net", rs.NETS)
        need(self.data == "patches" or self.image_size in (8, 16, 32), "digits: size 8, 16, 32")
        need(min(self.T, self.lambda_, self.lr) > 0, "T, lambda_ and lr must be > 0")
        need(0 < self.alpha_end < 1, f"alpha_end must lie in (0, 1), got {self.alpha_end}")
        need(0 < self.t_end < self.T, f"t_end must lie in (0, T), got {self.t_end}")
        need(self.error_std >= 0, f"error_std must be >= 0, got {self.error_std}")
        for name in ("nfe", "stability_nfe", "mix_nfe", "digits_nfe"):
            grid = list(getattr(self, name))
            ok = grid == sorted(set(grid)) and len(grid) >= 2 and grid[0] >= 2
            need(ok, f"{name} must increase strictly from >= 2 (two values at least), got {grid}")
        need(self.em_reference in self.nfe, f"em_reference must be one of nfe {self.nfe}")
        need(len([n for n in self.nfe if 10 <= n <= self.exact_nfe_max]) >= 2, "exact_nfe_max")
        need(10 in self.digits_nfe and max(self.digits_nfe) >= 50, "digits_nfe: 10 and >= 50")
        need(self.fast_nfe_max >= 10, f"fast_nfe_max must be >= 10, got {self.fast_nfe_max}")


SETTINGS = presets(
    Settings,
    tiny=dict(
        n_marginal=1000, sde_steps=200, n_exact=3000, n_paths=64, nfe=(5, 10, 20, 50),
        em_reference=50, exact_nfe_max=20, stability_nfe=(5, 10), n_mix=400, mix_nfe=(5, 20, 50),
        hidden=128, depth=2, steps=100, n_eval=48, digits_nfe=(5, 10, 50), n_times=6,
    ),
    cpu={},
    gpu=dict(
        n_marginal=20000, n_exact=200000, n_paths=1024, nfe=(5, 10, 20, 50, 100, 200, 500),
        exact_nfe_max=200,
        n_mix=1500, data="patches", image_size=64, net="unet", base=64, batch=128, lr=2e-4,
        steps=20000, n_eval=500, digits_nfe=(5, 10, 20, 50, 100, 200), fast_nfe_max=50,
    ),
)  # fmt: skip
EVAL_THEORY = "T lambda_ alpha_end n_marginal sde_steps t_end seed".split()
EVAL_EXACT = (
    "T lambda_ alpha_end t_end signal_dim n_exact n_paths nfe em_reference exact_nfe_max "
    "error_std "
    "stability_nfe n_mix mix_nfe seed"
).split()
FIELDS_DIGITS = (
    "T lambda_ alpha_end data image_size net hidden depth base batch lr steps seed".split()
)
EVAL_DIGITS = "t_end n_eval digits_nfe fast_nfe_max n_times".split()


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


def schedule(s: Settings) -> mr.MRSchedule:
    """The paper's mean-reverting schedule (cosine theta) at these settings."""
    return mr.MRSchedule(s.T, s.lambda_, "cosine", s.alpha_end)


evaluated = experiment.chapter_results(CHAPTER, VERSION)  # cached_result, this chapter's folder


def solve(label: str, denoiser: mr.Denoiser, sch: mr.MRSchedule, x: Tensor, mu: Tensor,
          nfe: int, t_end: float, generator: torch.Generator | None = None,
          **options: object) -> solvers.Solution:  # fmt: skip
    """Solver ``label`` of :data:`SOLVERS` with ``nfe`` steps from x at its grid's start."""
    method, order, spacing = SOLVERS[label]
    times = mr.time_grid(sch, nfe, spacing, t_end)
    return mr.sample(method, denoiser, sch, x, mu, times, order, generator, **options)


# ---- theory -------------------------------------------------------------------------------
@dataclass
class TheoryCheck:
    """The marginal (2) against a simulated forward SDE (1) on random schedules; the exact
    Gaussian flow map against dopri5; MRS-1 in noise and in data form side by side."""

    marginal_z: float  # max |z-score| of simulated means and variances against (2)
    n_marginal: int
    flow_map_error: float  # max |gaussian_flow_map - dopri5|
    first_order_gap: float  # max |MRS-1 noise - MRS-1 data| (float64, 2D mixture, 10 NFE)


def theory_check(s: Settings) -> TheoryCheck:
    """See :class:`TheoryCheck`: 3 random schedules (both theta shapes), x0 fixed, the SDE
    simulated with ``sde_steps`` Euler-Maruyama steps to a random t."""
    seeds, zs, n = Seeds(s.seed, **SEEDS), [], s.n_marginal
    for k in range(3):
        gen = seeds.generator("theory", k)
        u = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
        kind = ("cosine", "constant")[k % 2]
        sch = mr.MRSchedule(1 + 49 * u[0], 0.1 + u[1], kind, 0.01 + 0.1 * u[2])
        x0, mu = torch.randn(2, 3, generator=gen, dtype=torch.float64)
        t_to = sch.T * (0.2 + 0.8 * u[3])
        x = mr.simulate_forward(sch, x0.expand(n, 3), mu, t_to, s.sde_steps, gen)
        mean, var = mu + sch.alpha(t_to) * (x0 - mu), float(sch.sigmabar(t_to)) ** 2
        zs += ((x.mean(0) - mean) / math.sqrt(var / n)).abs().tolist()
        zs += ((x.var(0) - var) / (var * math.sqrt(2 / (n - 1)))).abs().tolist()
    sch, (mean, cov, mu, _) = schedule(s), restoration_problem(s)
    ex = mr.MixtureMR.gaussian(mean, cov, sch, mu)
    x = ex.sample(16, s.T, seeds.generator("theory", 9))
    field_fn = lambda y, t: sch.theta(t) * (mu - y) - sch.lambda_**2 * sch.theta(t) * ex.score(y, t)
    ode = solvers.odeint(field_fn, x, [s.T, s.t_end], "dopri5", rtol=1e-10, atol=1e-10).x
    flow_error = (ode - mr.gaussian_flow_map(mean, cov, sch, mu, x, s.T, s.t_end)).abs().max()
    mix = mixture_problem(s)
    x = mix.sample(200, s.T, seeds.generator("theory", 10))
    times = mr.time_grid(sch, 10, t_end=s.t_end)
    ends = [
        mr.sample(m, mix.denoiser, sch, x, mix.mu, times).x
        for m in ("mrs_ode_noise", "mrs_ode_data")
    ]
    gap = float((ends[0] - ends[1]).abs().max())
    return TheoryCheck(max(zs), s.n_marginal, float(flow_error), gap)


def derivations() -> dict[str, Derivation]:
    """The sympy derivations the chapter shows (``theory.mean_reverting``)."""
    names = ("marginal", "log-SNR", "first order", "Taylor")
    parts = (theory_mr.marginal_moments, theory_mr.log_snr_rate, theory_mr.first_order_update,
             theory_mr.taylor_coefficients)  # fmt: skip
    return {name: derive() for name, derive in zip(names, parts, strict=True)}


def theory(s: Settings) -> TheoryCheck:
    """:func:`theory_check`, cached (its simulations take seconds)."""
    with one_thread_on_cpu(blas=True):
        key = cache_key(s, EVAL_THEORY)
        return evaluated(TheoryCheck, "theory", key, lambda: theory_check(s))


# ---- exact denoisers ----------------------------------------------------------------------
def restoration_problem(s: Settings) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(m, P, mu = y, x_true): :func:`restoration.linear_gaussian_problem` in ``signal_dim``."""
    return rs.linear_gaussian_problem(s.signal_dim, Seeds(s.seed, **SEEDS).generator("problem"))


def mixture_problem(s: Settings) -> mr.MixtureMR:
    """The 2D picture: eight Gaussians (radius 1, std 0.1) with the condition mu = (0.3, -0.2)."""
    mix = eight_gaussians(1.0, 0.1)
    return mr.MixtureMR(mix, schedule(s), torch.tensor([0.3, -0.2], dtype=torch.float64))


@dataclass
class ExactResult:
    """Every solver with an exact denoiser. Gaussian restoration: W2 (Bures, sample moments)
    to the exact marginal at t_end per NFE, its floor; pathwise errors of the ODE solvers
    against the exact flow map; the NFE each needs to reach Euler-Maruyama's W2 at
    ``em_reference`` steps; W2 with a modelled eps error. 2D mixture: W2 (exact OT) per NFE
    and samples."""

    nfe: list[int]
    w2: dict[str, list[float]]  # solver -> W2 per nfe
    floor: float  # W2 of exact samples (the moments' sampling error)
    path_error: dict[str, list[float]]  # ODE solver -> max |x_N - exact flow map| per nfe
    orders: dict[str, float]  # ODE solver -> fitted slope; "Euler-Maruyama (W2)" too
    target: float  # EM's W2 at em_reference steps
    nfe_needed: dict[str, float]  # solver -> NFE (log-log interpolated) to reach target; nan
    stability: dict[str, list[float]]  # "<solver>, <error>" -> W2 per stability_nfe
    mix_nfe: list[int]
    mix_w2: dict[str, list[float]]
    mix_floor: float
    mix_data: Tensor  # (n_mix, 2)
    mix_samples: dict[str, Tensor]  # "<solver>, <nfe> NFE" -> (n_mix, 2)


def exact_check(s: Settings) -> ExactResult:
    """See :class:`ExactResult`; the samplers start from the exact marginal at the grid's
    first time, so every error is the solver's."""
    seeds, sch = Seeds(s.seed, **SEEDS), schedule(s)
    mean, cov, mu, _ = restoration_problem(s)
    ex = mr.MixtureMR.gaussian(mean, cov, sch, mu)
    start = float(mr.time_grid(sch, 2, t_end=s.t_end)[0])
    x = ex.sample(s.n_exact, start, seeds.generator("start"))
    end = ex.marginal(s.t_end)
    w2_of = lambda y: metrics.gaussian_w2(y, end.means[0], end.covs[0])
    run = lambda k, n, xs, **o: solve(k, ex.denoiser, sch, xs, mu, n, s.t_end, gen(), **o).x
    gen = lambda: seeds.generator("noise")
    upto = lambda k: [n for n in s.nfe if k == EM or n <= s.exact_nfe_max]  # a prefix of nfe
    w2 = {k: [w2_of(run(k, n, x)) for n in upto(k)] for k in SOLVERS}
    fresh = [ex.sample(s.n_exact, s.t_end, seeds.generator("floor", k)) for k in range(3)]
    floor = float(np.mean([w2_of(f) for f in fresh]))
    paths = x[: s.n_paths]
    exact_end = mr.gaussian_flow_map(mean, cov, sch, mu, paths, start, s.t_end)
    path_error = {
        k: [float((run(k, n, paths) - exact_end).abs().max()) for n in upto(k)] for k in ODE_SOLVERS
    }
    nfe = list(s.nfe)
    asymptotic = [i for i, n in enumerate(nfe) if n >= 10]
    fit = lambda e: [i for i in asymptotic if i < len(e)]  # the curve's own NFE >= 10
    orders = {
        k: metrics.loglog_slope([nfe[i] for i in fit(e)], [e[i] for i in fit(e)])
        for k, e in path_error.items()
    }
    above = [i for i in asymptotic if w2[EM][i] > 2 * floor]  # EM's own noise floor aside
    if len(above) >= 2:
        orders["Euler-Maruyama (W2)"] = metrics.loglog_slope(
            [nfe[i] for i in above], [w2[EM][i] for i in above]
        )
    target = w2[EM][nfe.index(s.em_reference)]
    needed = {k: metrics.steps_to_reach(nfe[: len(v)], v, target) for k, v in w2.items()}
    stability = {}
    for label in ("MRS-2 ODE noise", "MRS-2 ODE data", "MRS-3 ODE noise", "MRS-3 ODE data"):
        for name, err in (("exact", None), ("eps error", mr.PredictionError(s.error_std, "eps"))):
            stability[f"{label}, {name}"] = [
                w2_of(run(label, n, x, error=err)) for n in s.stability_nfe
            ]
    mix = mixture_problem(s)
    xm = mix.sample(s.n_mix, start, seeds.generator("mix"))
    data = mix.mixture.sample(s.n_mix, seeds.generator("floor", 5)).double()
    mix_floor = metrics.exact_w2(mix.mixture.sample(s.n_mix, seeds.generator("floor", 6)), data)
    mix_w2, mix_samples = {}, {}
    for label in (EM, "Euler (PF-ODE)", "MRS-2 ODE data", "MRS-3 ODE data", "MRS-2 SDE"):
        row = []
        for n in s.mix_nfe:
            out = solve(label, mix.denoiser, sch, xm, mix.mu, n, s.t_end, seeds.generator("noise"))
            row.append(metrics.exact_w2(out.x, data))
            mix_samples[f"{label}, {n} NFE"] = out.x.float()
        mix_w2[label] = row
    return ExactResult(nfe, w2, floor, path_error, orders, target, needed, stability,
                       list(s.mix_nfe), mix_w2, mix_floor, data.float(), mix_samples)  # fmt: skip


def exact(s: Settings) -> ExactResult:
    """:func:`exact_check`, cached."""
    with one_thread_on_cpu(blas=True):
        return evaluated(ExactResult, "exact", cache_key(s, EVAL_EXACT), lambda: exact_check(s))


# ---- the exercise's problem ---------------------------------------------------------------
def exercise_start(s: Settings) -> tuple[mr.MixtureMR, Tensor, Callable[[Tensor], float]]:
    """The exercise's problem (section 3): the restoration problem's exact law given mu as a
    MixtureMR, x_T (min(n_exact, 20000), d) drawn from it at the grid's first time (seed 1),
    and W2 to the exact law at ``t_end`` (Gaussian moments, ``metrics.gaussian_w2``)."""
    (mean, cov, mu, _), sch = restoration_problem(s), schedule(s)
    gauss = mr.MixtureMR.gaussian(mean, cov, sch, mu)
    law, start = gauss.marginal(s.t_end), float(mr.time_grid(sch, 2, t_end=s.t_end)[0])
    x_T = gauss.sample(min(s.n_exact, 20000), start, torch.Generator().manual_seed(1))
    return gauss, x_T, lambda x: metrics.gaussian_w2(x, law.means[0], law.covs[0])


def em_baseline(s: Settings, steps: Sequence[int] = (50, 200)) -> dict[int, float]:
    """{n: W2} of Euler-Maruyama (uniform steps, noise seeded 2) from the exercise's start,
    the baseline the reader's samplers are compared with; stored (2 s at scale cpu)."""
    steps = [int(n) for n in steps]
    fields = "T lambda_ alpha_end t_end signal_dim n_exact seed".split()

    def compute() -> dict[str, list[float]]:
        (gauss, x_T, w2), sch = exercise_start(s), schedule(s)
        noise = lambda: torch.Generator().manual_seed(2)
        run = lambda n: solve(EM, gauss.denoiser, sch, x_T, gauss.mu, n, s.t_end, noise())
        with one_thread_on_cpu(blas=True):
            return {"w2": [w2(run(n).x) for n in steps]}

    key = cache_key(s, fields, steps=steps)
    table = experiment.stored_numbers(CHAPTER, "em-baseline", {}, key, compute, VERSION)
    return dict(zip(steps, table["w2"], strict=True))


# ---- digits restoration -------------------------------------------------------------------
def make_net(s: Settings) -> rs.RestorationNet:
    """The conditional network eps_theta(x_t, t, mu) (or x0_theta), fresh, seeded."""
    torch.manual_seed(Seeds(s.seed, **SEEDS)["init"])
    shape = (images(s, "test").shape[1], s.image_size, s.image_size)
    return rs.RestorationNet(shape, s.T, s.net, s.hidden, s.depth, s.base)


def train_digits(s: Settings) -> dict[str, FitResult]:
    """The same network trained twice on the same data stream: to predict the noise (IR-SDE's
    loss, the paper's networks) and to predict the clean image."""
    seeds, sch, train = Seeds(s.seed, **SEEDS), schedule(s), images(s, "train")
    out = {}
    for name, prediction in NETS.items():
        gen = seeds.generator("train")
        pairs = lambda n, g: rs.degrade_thirds(
            train[torch.randint(len(train), (n,), generator=g)], g
        )
        loss = rs.objective(pairs, sch, s.batch, gen, prediction=prediction)
        key = cache_key(s, FIELDS_DIGITS, prediction=prediction)
        out[name] = fit_cached(CHAPTER, f"restore-{name}", key, lambda: make_net(s), loss,
                               version=VERSION, steps=s.steps, lr=s.lr,
                               desc=f"digits: {prediction}-prediction network")  # fmt: skip
    return out


@dataclass
class DigitsResult:
    """PSNR / SSIM of every (network, task, solver, NFE) on held-out images, the inputs',
    and each network's x0 error against t."""

    psnr: dict[str, float]  # "<net>|<task>|<solver>|<nfe>" -> mean PSNR (dB)
    psnr_se: dict[str, float]
    ssim: dict[str, float]  # at 10 NFE and at the most
    input_psnr: dict[str, float]  # task -> PSNR of mu
    times: list[float]
    x0_error: dict[str, list[float]]  # net -> RMS |x0^ - x0| per pixel at each time
    gain: list[float]  # sigmabar_t / alpha_t at each time
    examples: dict[str, Tensor]  # "truth", "<task> input", "<task> <net> <solver> <nfe>"
    fits: dict[str, FitResult] = field(default_factory=dict)


def nfe_of(solver: str, s: Settings) -> list[int]:
    """The NFE a digits solver is evaluated at: Euler-Maruyama at every one of
    ``digits_nfe``, the others up to ``fast_nfe_max`` (each evaluation costs a network call
    on every image)."""
    return [n for n in s.digits_nfe if solver == EM or n <= s.fast_nfe_max]


def key(net: str, task: str, solver: str, nfe: int) -> str:
    """The results' name of one restoration setting."""
    return f"{net}|{task}|{solver}|{nfe}"


def test_pairs(s: Settings) -> dict[str, tuple[Tensor, Tensor]]:
    """task -> (x0, mu) flat, ``n_eval`` held-out images each (the same images per task)."""
    x, gen = images(s, "test")[: s.n_eval], Seeds(s.seed, **SEEDS).generator("eval")
    return {task: (x.flatten(1), rs.degrade(task, x, gen).flatten(1)) for task in rs.TASKS}


@torch.no_grad()
def evaluate_digits(s: Settings, fits: dict[str, FitResult]) -> DigitsResult:
    """Every solver of :data:`DIGIT_SOLVERS` at each of ``digits_nfe`` from the same start
    mu + sigmabar_T z; restorations clamped to [-1, 1]; SE over images (SD / sqrt n)."""
    seeds, sch, shape = Seeds(s.seed, **SEEDS), schedule(s), images(s, "test").shape[1:]
    as_images = lambda v: v.clamp(-1, 1).reshape(-1, *shape)
    pairs, out = test_pairs(s), {}
    psnr, se, ssim, examples = {}, {}, {}, {"truth": as_images(pairs["denoise"][0][:8])}
    input_psnr = {
        t: float(metrics.psnr(as_images(mu), as_images(x0)).mean()) for t, (x0, mu) in pairs.items()
    }
    for task, (x0, mu) in pairs.items():
        examples[f"{task} input"] = as_images(mu[:8])
        start = sch.prior_sample(mu, len(mu), seeds.generator("sample"))
        for net, fit in fits.items():
            D = rs.denoiser_of(fit.model.eval(), sch, mu, NETS[net])
            for solver in DIGIT_SOLVERS:
                for n in nfe_of(solver, s):
                    y = as_images(
                        solve(solver, D, sch, start, mu, n, s.t_end, seeds.generator("noise")).x
                    )
                    p = metrics.psnr(y, as_images(x0))
                    k = key(net, task, solver, n)
                    psnr[k], se[k] = float(p.mean()), float(p.std() / math.sqrt(len(p)))
                    if n in (10, max(s.digits_nfe)):  # SSIM is slow (scikit-image per image)
                        ssim[k] = float(metrics.ssim(y, as_images(x0)).mean())
                    if n in (10, max(s.digits_nfe)) and solver in (EM, FAST):
                        examples[f"{task} {net} {solver} {n}"] = y[
                            :8
                        ].clone()  # not the whole batch
    times = torch.logspace(math.log10(s.t_end), math.log10(s.T), s.n_times, dtype=torch.float64)
    x0_all = torch.cat([p[0] for p in pairs.values()])
    mu_all = torch.cat([p[1] for p in pairs.values()])
    for net, fit in fits.items():
        D, errs = rs.denoiser_of(fit.model.eval(), sch, mu_all, NETS[net]), []
        for t in times.tolist():
            x_t, _ = sch.q_sample(x0_all, t, mu_all, seeds.generator("eval"))
            errs.append(float(((D(x_t, t) - x0_all) ** 2).mean().sqrt()))
        out[net] = errs
    gain = (sch.sigmabar(times) / sch.alpha(times)).tolist()
    return DigitsResult(psnr, se, ssim, input_psnr, times.tolist(), out, gain, examples)


def experiment_digits(s: Settings) -> DigitsResult:
    """Train (or load) the two networks, then evaluate them (cached)."""
    with one_thread_on_cpu(blas=True):
        fits = train_digits(s)
        key_ = cache_key(s, FIELDS_DIGITS + EVAL_DIGITS)
        return evaluated(
            DigitsResult, "eval-digits", key_, lambda: evaluate_digits(s, fits), fits=fits
        )


def mean_over_tasks(d: DigitsResult, net: str, solver: str, nfe: int) -> tuple[float, float]:
    """(mean PSNR over the three tasks, its SE)."""
    ks = [key(net, t, solver, nfe) for t in rs.TASKS]
    return sum(d.psnr[k] for k in ks) / 3, math.sqrt(sum(d.psnr_se[k] ** 2 for k in ks)) / 3


# ---- the chapter --------------------------------------------------------------------------
@dataclass
class Results(experiment.ChapterResults):
    """What the chapter shows: the theory check, the solvers on exact denoisers and the digits
    restorations (None unless ``s.digits``)."""

    theory: TheoryCheck
    exact: ExactResult
    digits: DigitsResult | None


EXPERIMENTS = {
    "theory check": theory,
    "exact denoisers": exact,
    "digits": lambda s: experiment_digits(s) if s.digits else None,
}


prepare, run = experiment.chapter_steps(EXPERIMENTS, Results)


# ---- claims -------------------------------------------------------------------------------
ORDER_BANDS = {1: (0.8, 1.3), 2: (1.6, 2.5), 3: (2.5, 4.5)}


def claims_theory(th: TheoryCheck, sc: str) -> list[Claim]:
    """The marginals, the exact flow map, and MRS-1's two forms being one update."""
    note = f"3 random schedules, {th.n_marginal} simulated paths each, means and variances"
    name, paper = "marginal (2) matches the simulated forward SDE (max |z|)", "x_t of (2)"
    out = [claim_below(name, paper, th.marginal_z, 4.0, sc, note)]
    name, paper = "exact Gaussian flow map vs dopri5 (max abs error)", "PF-ODE of Gaussian data"
    out.append(claim_below(name, paper, th.flow_map_error, 1e-6, sc))
    paper = "noise- and data-prediction updates differ (the paper compares them)"
    note = "float64, 2D mixture, 10 steps: the first-order updates are one formula rearranged"
    name = "MRS-1: noise form = data form (max abs difference)"
    return out + [claim_below(name, paper, th.first_order_gap, 1e-9, sc, note)]


def claims_exact(r: ExactResult, s: Settings) -> list[Claim]:
    """Orders, the NFE ratio at Euler-Maruyama's quality, the stability with an eps error."""
    sc, out = s.scale, []
    note = "; ".join(f"{n}: {v:.2f}" for n, v in r.orders.items())
    for k, (lo, hi) in ORDER_BANDS.items():
        label = "MRS-1 ODE" if k == 1 else f"MRS-{k} ODE data"
        name, paper = f"order of {label} (slope of the path error)", f"MRS-{k} has order {k}"
        out.append(claim_band(name, paper, r.orders[label], lo, hi, sc, note))
    em, paper = r.orders.get("Euler-Maruyama (W2)", math.nan), "EM converges with order 0.5-1"
    note = "fitted at NFE >= 10 where W2 > 2 x floor; W2 " + ", ".join(f"{v:.2e}" for v in r.w2[EM])
    out.append(claim_band("Euler-Maruyama: W2 slope", paper, em, 0.5, 1.3, sc, note))
    fast = {k: v for k, v in r.nfe_needed.items() if k.startswith("MRS") and math.isfinite(v)}
    best = min(fast, key=fast.get) if fast else "none"
    ratio = s.em_reference / fast[best] if fast else 0.0
    note = (f"target W2 {r.target:.2e} (EM at {s.em_reference} steps; floor {r.floor:.1e}); NFE "
            "needed: " + ", ".join(f"{k} {v:.3g}" for k, v in r.nfe_needed.items()))  # fmt: skip
    name, paper = f"NFE ratio EM / best MRS ({best}) at EM's W2", "10-20x fewer NFE, same quality"
    out.append(claim_above(name, paper, ratio, 10.0, sc, note))
    n0, labels = s.stability_nfe[0], ("MRS-2 ODE data", "MRS-2 ODE noise")
    vals = {f"{lab}, eps error": r.stability[f"{lab}, eps error"][0] for lab in labels}
    note = f"W2 by NFE {list(s.stability_nfe)}, eps^ error std {s.error_std}: " + "; ".join(
        f"{k} {', '.join(f'{x:.3g}' for x in v)}" for k, v in r.stability.items()
    )
    name = f"modelled eps error, {n0} NFE: data form < noise form (W2)"
    paper = "data prediction is more stable than noise prediction at low NFE"
    return out + [claim_ordered(name, paper, vals, sc, note)]


def claim_nfe_match(d: DigitsResult, s: Settings, fast: tuple[str, int] = (FAST, 10)) -> Claim:
    """The data-prediction network: ``fast`` = (solver, NFE) within 0.5 dB of Euler-Maruyama
    at the most NFE (mean PSNR over the tasks)."""
    top = max(s.digits_nfe)
    (a, a_se), (b, b_se) = mean_over_tasks(d, "data", *fast), mean_over_tasks(d, "data", EM, top)
    note = (f"{fast[0]} {fast[1]} NFE {a:.2f} +- {a_se:.2f} dB, EM {top} {b:.2f} +- {b_se:.2f} "
            f"dB, EM 10 {mean_over_tasks(d, 'data', EM, 10)[0]:.2f} dB; {s.n_eval} held-out "
            "images per task")  # fmt: skip
    name = f"digits: {fast[0]} at {fast[1]} NFE vs EM at {top} (PSNR difference, dB)"
    paper = "MRS at 5-10 NFE matches the baseline at 100"
    return claim_above(name, paper, a - b, -0.5, s.scale, note)


def claims_digits(d: DigitsResult, s: Settings) -> list[Claim]:
    """NFE match; the data-prediction network beats the noise one; restoration helps."""
    out, vals, ses = [claim_nfe_match(d, s)], {}, {}
    for net in ("data", "noise"):
        vals[f"{net} net"], ses[f"{net} net"] = mean_over_tasks(d, net, FAST, 10)
    note = (f"{FAST}, 10 NFE, mean PSNR over the tasks; x0 error at t = T: data "
            f"{d.x0_error['data'][-1]:.3f}, noise {d.x0_error['noise'][-1]:.3f} "
            f"(sigmabar_T / alpha_T = {d.gain[-1]:.1f})")  # fmt: skip
    name = "digits: a data-prediction network restores better than a noise one"
    paper = "noise prediction divides its error by alpha_T ~ 0.005 near T"
    out.append(claim_ordered(name, paper, vals, s.scale, note, ses=ses, lower_is_better=False))
    restored = {t: d.psnr[key("data", t, FAST, 10)] for t in rs.TASKS}
    gain = float(np.mean([restored[t] - d.input_psnr[t] for t in rs.TASKS]))
    note = "; ".join(
        f"{t}: input {d.input_psnr[t]:.2f}, restored {restored[t]:.2f}" for t in rs.TASKS
    )
    name = "digits: restored PSNR over the degraded input (dB, mean of tasks)"
    return out + [claim_above(name, "the sampler restores the image", gain, 0.0, s.scale, note)]


def claims(r: Results) -> list[Claim]:
    """The paper's claims at this scale; criteria fixed before measuring."""
    s = replace(r.settings, scale=r.scale)
    out = claims_theory(r.theory, r.scale) + claims_exact(r.exact, s)
    return out + (claims_digits(r.digits, s) if r.digits is not None else [])


# ---- figures ------------------------------------------------------------------------------
COLORS = dict(zip(SOLVERS, (style.RED, "#8c564b", style.GRAY, "#9467bd", style.BLUE, "#e377c2",
                            style.GREEN, style.ORANGE, "#17becf"), strict=True))  # fmt: skip


def w2_figure(r: ExactResult) -> go.Figure:
    """Gaussian restoration: W2 to the exact marginal against NFE, every solver."""
    title = "Linear-Gaussian restoration: W2 vs NFE (exact denoiser)"
    return sf.quality_vs_nfe_figure(
        r.nfe,
        r.w2,
        COLORS,
        title,
        "W2 to the exact law",
        r.floor,
        "sampling floor",
        r.target,
        "Euler-Maruyama's reference",
    )


def order_figure(r: ExactResult) -> go.Figure:
    """Pathwise error of the ODE solvers against the exact flow map, log-log."""
    return sf.orders_figure(r.nfe, r.path_error, r.orders, COLORS)


def mixture_figure(r: ExactResult, nfe: int = 10) -> go.Figure:
    """2D mixture: data and each solver's samples at ``nfe`` NFE (same start, same noise)."""
    keys = [k for k in r.mix_samples if k.endswith(f", {nfe} NFE")]
    sets = {"data": r.mix_data, **{k: r.mix_samples[k] for k in keys}}
    dots = lambda k, x: [viz.points_trace(x[:800], k, "#444" if k == "data" else style.BLUE, 2.5)]
    title = f"2D mixture, {nfe} NFE each (exact denoiser)"
    return viz.panel_grid(
        [[dots(k, x) for k, x in sets.items()]],
        list(sets),
        (0.01, 0.05),
        dict(range=[-1.6, 1.6], visible=False),
        height=250,
        width=1150,
        title=title,
    )


def stability_figure(r: ExactResult, s: Settings) -> go.Figure:
    """W2 with (dotted) and without a modelled eps error, noise vs data form, against NFE."""
    colors = {k: COLORS[k.split(",")[0]] for k in r.stability}
    dotted = [k for k in r.stability if "error" in k]
    title = f"Exact eps^ vs eps^ + N(0, {s.error_std:g}^2)"
    return sf.quality_vs_nfe_figure(
        s.stability_nfe, r.stability, colors, title, "W2", dotted=dotted
    )


def gain_figure(d: DigitsResult) -> go.Figure:
    """x0 error of each network against t, and sigmabar_t / alpha_t (the eps-to-x0 gain)."""
    errors = {f"{n}-prediction net": v for n, v in d.x0_error.items()}
    colors = {"data-prediction net": style.BLUE, "noise-prediction net": style.RED}
    return sf.error_gain_figure(d.times, errors, d.gain, colors, "x0^ error of each network vs t")


def psnr_figure(d: DigitsResult, s: Settings, net: str = "data") -> go.Figure:
    """Mean PSNR over the tasks against NFE, per solver, one network."""
    vals = {k: (nfe_of(k, s), [mean_over_tasks(d, net, k, n)[0] for n in nfe_of(k, s)])
            for k in DIGIT_SOLVERS}  # fmt: skip
    title = f"Restoration, {net}-prediction network: PSNR vs NFE (mean of 3 tasks)"
    base = float(np.mean(list(d.input_psnr.values())))
    return sf.psnr_vs_nfe_figure(vals, COLORS, title, base)


def examples_figure(d: DigitsResult, s: Settings) -> go.Figure:
    """Rows: truth; per task its input, EM at the most NFE and MRS-2 data at 10 NFE (data net)
    and MRS-2 data at 10 NFE with the noise net."""
    top, rows = max(s.digits_nfe), {"truth": d.examples["truth"]}
    for task in rs.TASKS:
        rows[f"{task}: input"] = d.examples[f"{task} input"]
        rows[f"{task}: EM {top}"] = d.examples[f"{task} data {EM} {top}"]
        rows[f"{task}: MRS-2 10"] = d.examples[f"{task} data {FAST} 10"]
        rows[f"{task}: noise net"] = d.examples[f"{task} noise {FAST} 10"]
    titles = [k if i == 0 else "" for k in rows for i in range(8)]
    return viz.image_grid_figure(
        torch.cat(list(rows.values())),
        nrow=8,
        titles=titles,
        tile_px=40,
        title="Restorations (same start)",
    )


def figures(r: Results) -> dict[str, go.Figure]:
    """The chapter's figures by name (what ``pflow-explore figures`` writes)."""
    s, e = r.settings, r.exact
    out = {
        "w2_nfe": w2_figure(e),
        "orders": order_figure(e),
        "mixture": mixture_figure(e, s.mix_nfe[1]),
        "stability": stability_figure(e, s),
    }
    if r.digits is not None:
        out |= {
            "x0_error": gain_figure(r.digits),
            "psnr_nfe": psnr_figure(r.digits, s),
            "restorations": examples_figure(r.digits, s),
        }
    return out


def preview() -> go.Figure:
    """Ten MRS-2 steps from mu + noise to the eight Gaussians (exact denoiser): the chapter in
    one picture, computed afresh (no training)."""
    s = settings("tiny")
    mix, sch = mixture_problem(s), schedule(s)
    x = mix.sample(120, s.T, torch.Generator().manual_seed(0))
    sol = solve(FAST, mix.denoiser, sch, x, mix.mu, 10, s.t_end, trajectory=True)
    lines = viz.trajectories_trace(sol.trajectory.float(), "paths", "rgba(31,119,180,0.35)")
    fig = go.Figure([lines, viz.points_trace(sol.x.float(), "MRS-2, 10 NFE", style.BLUE, 3)])
    fig.update_layout(style.figure_layout(None, 220, keep_view=False))
    return style.thumbnail(fig.update_yaxes(scaleanchor="x", scaleratio=1))
