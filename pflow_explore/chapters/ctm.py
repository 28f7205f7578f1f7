"""Chapter 04: consistency trajectory models (CTM): one network that jumps anywhere along the
probability flow.

Kim et al. 2023, docs/papers.md §04. Time convention: diffusion, EDM's x_t = x0 + t z with the
time equal to the noise level (t = 0 data, T = 80 noise), as in :mod:`consistency`, which holds
the method (the jump G, its network, the soft consistency / CM / DSM losses, gamma-sampling,
the exact jump by ODE integration). The experiments, each callable on its own:
:func:`theory_check` (exact Gaussian jump vs ODE; gamma-sampling with the exact jump keeps
the data distribution), :func:`experiment_2d` (a CTM and a CM student of the exact teacher of
a 2D Gaussian mixture) and :func:`experiment_digits` (an EDM teacher on digits and its CTM
student); ``run`` composes the three.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import plotly.graph_objects as go
import torch
from torch import Tensor

from pflow_explore import consistency as ct
from pflow_explore import experiment, metrics, viz
from pflow_explore.claims import Claim, claim_above, claim_below, claim_ordered
from pflow_explore.datasets.digits import flat_digits
from pflow_explore.datasets.toy2d import eight_gaussians
from pflow_explore.edm import edm_sampler
from pflow_explore.experiment import Seeds, cache_key, choose, one_thread_on_cpu, presets
from pflow_explore.paths import NoiseLevel, karras_sigmas
from pflow_explore.theory.consistency import ctm_jump_eigen, gaussian_jump
from pflow_explore.theory.gaussian_flow import Derivation, GaussianFlow
from pflow_explore.theory.mixtures import MixtureFlow
from pflow_explore.training import FitResult, fit_cached
from pflow_explore.viz import consistency_figures, style
from pflow_explore.viz.quality import quality_vs_steps_figure

CHAPTER = "ctm"
VERSION = 1  # part of every cache key: bump when training changes
METHODS = ("CTM", "CM")
T_MAX = 80.0
SEEDS = dict(init=0, train=1, noise=10, target=11, other=12, sample=(13, 1000), score=(14, 1000),
             boot=15, theory=(16, 1000), digits_init=30, digits_train=(31, 1000),
             digits_noise=32, augment=1000)  # fmt: skip


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter (``scale``: the preset's name). The fields that
    train models are in their cache keys (:data:`FIELDS_2D`, :data:`FIELDS_DIGITS`)."""

    scale: str
    # 2D: eight Gaussians (radius 2, std 0.2) with the exact mixture denoiser as the teacher
    hidden_2d: int = 128
    depth_2d: int = 3
    batch_2d: int = 256
    lr_2d: float = 1e-3
    steps_2d: int = 2000  # Adam steps of each student (CTM, CM)
    ema_decay: float = 0.99  # the stop-gradient target theta^-
    n_grid: int = 18  # training grid: Karras, N intervals, T = 80 .. 0.002, then 0
    max_teacher_steps: int = 4  # Heun steps of the teacher from t to u, at most
    dsm_weight: float = 1.0  # lambda of the denoising loss added to CTM's
    distance: str = "l2"  # or "pseudo_huber"
    huber_c: float = 0.03
    n_eval_2d: int = 2000  # samples per quality measurement
    nfe_steps: tuple[int, ...] = (1, 2, 4, 8)  # jumps per sample evaluated
    teacher_heun_steps: int = 18  # the exact teacher's reference: 2 N - 1 = 35 evaluations
    score_sigmas: tuple[float, ...] = (0.05, 0.2, 1.0, 5.0, 20.0)
    n_score: int = 1000
    n_boot: int = 20  # bootstrap resamples of every SE
    theory_gammas: tuple[float, ...] = (0.0, 0.5, 1.0)
    theory_steps: int = 4  # gamma-sampling steps with the exact jump
    # digits: an EDM teacher (the JumpNet's diagonal g(x, t, t) trained by DSM), its CTM student
    digits: bool = True
    image_size: int = 8  # 8, 16 or 32
    hidden: int = 384
    depth: int = 3
    batch: int = 256
    lr: float = 5e-4
    teacher_steps: int = 3000
    ctm_steps: int = 1000
    digits_nfe: tuple[int, ...] = (1, 2, 4)
    n_fd: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        need = experiment.require
        experiment.require_counts(self)
        experiment.require_at_least(self, "n_eval_2d n_fd n_score", low=16)
        experiment.require_at_least(self, "n_boot n_grid", low=2)
        experiment.require_choice(self, "image_size", (8, 16, 32))
        experiment.require_choice(self, "distance", ct.DISTANCES)
        need(0 < self.ema_decay < 1, f"ema_decay must lie in (0, 1), got {self.ema_decay}")
        need(min(self.lr, self.lr_2d, self.huber_c) > 0, "lr, lr_2d and huber_c must be > 0")
        need(self.dsm_weight >= 0, f"dsm_weight must be >= 0, got {self.dsm_weight}")
        for name in ("nfe_steps", "digits_nfe"):
            steps = list(getattr(self, name))
            ok = steps[:1] == [1] and steps == sorted(set(steps)) and len(steps) >= 2
            need(ok, f"{name} must increase strictly from 1 (two values at least), got {steps}")
        need(all(0 < v <= T_MAX for v in self.score_sigmas), "score_sigmas must lie in (0, 80]")
        need(all(0 <= g <= 1 for g in self.theory_gammas), "theory_gammas must lie in [0, 1]")


SETTINGS = presets(
    Settings,
    tiny=dict(
        hidden_2d=64, depth_2d=2, steps_2d=200, n_eval_2d=500, nfe_steps=(1, 4),
        score_sigmas=(0.2, 5.0), n_score=256, n_boot=5, theory_gammas=(0.0, 1.0),
        theory_steps=2, hidden=128, depth=2, teacher_steps=200, ctm_steps=100,
        digits_nfe=(1, 2), n_fd=256,
    ),
    cpu={},
    gpu=dict(
        hidden_2d=256, steps_2d=10000, n_eval_2d=5000, nfe_steps=(1, 2, 4, 8, 16),
        ema_decay=0.995, n_score=4000, n_boot=30, image_size=32, hidden=1024, depth=4,
        batch=512, teacher_steps=20000, ctm_steps=10000, digits_nfe=(1, 2, 4, 8), n_fd=5000,
    ),
)  # fmt: skip
FIELDS_2D = (
    "hidden_2d depth_2d batch_2d lr_2d steps_2d ema_decay n_grid max_teacher_steps dsm_weight "
    "distance huber_c seed"
).split()
EVAL_THEORY = "n_eval_2d theory_gammas theory_steps seed".split()
EVAL_2D = "n_eval_2d nfe_steps teacher_heun_steps score_sigmas n_score n_boot".split()
EVAL_DIGITS = "digits_nfe teacher_heun_steps n_fd n_boot".split()
FIELDS_DIGITS = (
    "image_size hidden depth batch lr teacher_steps ctm_steps ema_decay n_grid "
    "max_teacher_steps dsm_weight distance huber_c seed"
).split()


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


evaluated = experiment.chapter_results(CHAPTER, VERSION)  # cached_result, this chapter's folder


def exact_flow() -> MixtureFlow:
    """The 2D data (eight Gaussians) and its exact denoiser / PF-ODE at every noise level."""
    return MixtureFlow(eight_gaussians(), NoiseLevel())


def stored_exact_jump(
    flow: MixtureFlow, rtol: float = 1e-5, atol: float = 1e-5
) -> Callable[[Tensor, float, float], Tensor]:
    """G*(x, t, s) = ``consistency.exact_jump`` of ``flow``'s exact denoiser (a dopri5 solve,
    ``rtol``/``atol``), each answer kept in the chapter's cache under a digest of x, t, s
    and the mixture (``experiment.stored_calls``): the explorer asks for the same jumps at
    every open (one per t of its slider, 1.1 s at scale cpu)."""
    m = flow.mixture
    mixture = experiment.tensors_digest({"w": m.weights, "means": m.means, "covs": m.covs})
    key = dict(mixture=mixture, path=type(flow.path).__name__, rtol=rtol, atol=atol)
    exact = lambda x, t, s: ct.exact_jump(flow.denoiser, x, t, s, rtol=rtol, atol=atol)
    return experiment.stored_calls(CHAPTER, "exact-jump", exact, key, VERSION)


def data_std(flow: MixtureFlow) -> float:
    """sigma_data: the data's standard deviation per coordinate (EDM's preconditioning)."""
    return float(flow.mixture.covariance().diagonal().mean().sqrt())


# ---- theory -------------------------------------------------------------------------------
@dataclass
class TheoryCheck:
    """The exact jump for Gaussian data against dopri5, and gamma-sampling with the exact jump
    of the 2D mixture: energy distance to fresh data per gamma, the data-vs-data null
    (mean, SD over repeats), and the one-Euler-step jump as a control."""

    derivation: Derivation
    jump_error: float  # max |G*(sympy) - dopri5| over random Gaussians, times, samples
    gammas: tuple[float, ...]
    energy: dict[float, float]  # gamma -> energy distance to fresh data
    null_mean: float
    null_sd: float
    euler_control: float  # the same with G = one Euler step of the exact teacher (gamma 0)
    n: int
    steps: int

    @property
    def threshold(self) -> float:
        return self.null_mean + 3 * self.null_sd


def theory_check(s: Settings) -> TheoryCheck:
    """See :class:`TheoryCheck`; gamma-sampling on ``theory_steps`` jumps of ``n_eval_2d``
    samples, exact jumps by dopri5 (rtol 1e-6)."""
    seeds, flow = Seeds(s.seed, **SEEDS), exact_flow()
    errors = []
    for k in range(3):  # the sympy jump vs numerical integration, random Gaussians in d = 3
        g = GaussianFlow.random(3, seeds.seed("theory", k))
        gen = seeds.generator("theory", k)
        t = float(0.5 + 20 * torch.rand(1, generator=gen))
        x = g.mean + math.sqrt(t**2 + 1) * torch.randn(200, 3, generator=gen, dtype=torch.float64)
        for s_to in (0.0, 0.01, t / 4):
            diff = gaussian_jump(g, x, t, s_to) - ct.exact_jump(g.ve_denoiser, x, t, s_to)
            errors.append(float(diff.abs().max()))
    gen = seeds.generator("theory", 9)
    x_T = T_MAX * torch.randn(s.n_eval_2d, 2, generator=gen, dtype=torch.float64)
    data = lambda k: flow.mixture.sample(s.n_eval_2d, seeds.generator("theory", 10 + k))
    target, grid = data(0), ct.sampling_grid(s.theory_steps, T_MAX)
    exact = lambda x, t, s_to: ct.exact_jump(flow.denoiser, x, t, s_to, rtol=1e-6, atol=1e-6)
    energy = {}
    for gamma in s.theory_gammas:
        out, _ = ct.gamma_sample(exact, x_T, grid, gamma, seeds.generator("theory", 30))
        energy[gamma] = metrics.energy_distance(out, target)
    null = torch.tensor([metrics.energy_distance(data(k), target) for k in range(1, 9)])
    euler = lambda x, t, s_to: ct.jump(lambda y, tt, ss: flow.denoiser(y, tt), x, t, s_to)
    control = metrics.energy_distance(ct.gamma_sample(euler, x_T, grid, 0.0)[0], target)
    args = (float(null.mean()), float(null.std()), control, s.n_eval_2d, s.theory_steps)
    return TheoryCheck(ctm_jump_eigen(), max(errors), tuple(s.theory_gammas), energy, *args)


def theory(s: Settings) -> TheoryCheck:
    """:func:`theory_check`, cached (its dopri5 solves take seconds); the sympy derivation is
    derived afresh."""
    with one_thread_on_cpu(blas=True):
        key = cache_key(s, EVAL_THEORY)
        derivation = ctm_jump_eigen()
        return evaluated(TheoryCheck, "theory", key, lambda: theory_check(s), derivation=derivation)


# ---- 2D experiment ------------------------------------------------------------------------
def train_2d(s: Settings) -> dict[str, FitResult]:
    """The CTM student (soft consistency + DSM) and the CM student (consistency distillation
    only) of the exact mixture teacher: the same network, initial weights and data stream."""
    flow, seeds = exact_flow(), Seeds(s.seed, **SEEDS)
    grid = karras_sigmas(s.n_grid, 0.002, T_MAX)
    out = {}
    for method in METHODS:

        def make() -> ct.JumpNet:
            torch.manual_seed(seeds["init"])
            return ct.JumpNet(2, s.hidden_2d, s.depth_2d, data_std(flow))

        gen = seeds.generator("train")
        sample = lambda n, g: flow.mixture.sample(n, g).float()
        loss = ct.objective(
            method.lower(),
            flow.denoiser,
            sample,
            grid,
            s.batch_2d,
            gen,
            s.ema_decay,
            s.max_teacher_steps,
            s.dsm_weight,
            s.distance,
            s.huber_c,
        )
        key = cache_key(s, FIELDS_2D, method=method)
        out[method] = fit_cached(
            CHAPTER,
            f"2d-{method.lower()}",
            key,
            make,
            loss,
            version=VERSION,
            steps=s.steps_2d,
            lr=s.lr_2d,
            desc=f"2D: {method} student",
        )
    return out


def label(method: str, gamma: float, nfe: int) -> str:
    """The results' name of a sampler: e.g. "CTM gamma=0, 4 NFE"."""
    return f"{method} gamma={gamma:g}, {nfe} NFE"


SAMPLERS = (("CTM", 0.0), ("CTM", 1.0), ("CM", 1.0))  # CM only jumps to data: gamma = 1


@dataclass
class Result2D:
    """Samples and distances of the students at every NFE, the exact teacher, score errors."""

    fits: dict[str, FitResult]
    target: Tensor  # (n, 2) fresh data
    samples: dict[str, Tensor]  # sampler label -> (n, 2)
    energy: dict[str, float]
    energy_se: dict[str, float]
    floor: float  # energy distance between two fresh data sets
    teacher: str  # the label of the exact teacher's many-step reference
    euler: str  # the teacher's single Euler step
    score_error: dict[str, Tensor]  # method -> (len(score_sigmas),) relative score error
    paths: dict[str, Tensor]  # "teacher" (N + 1, m, 2) Heun states, "CTM" its gamma=0 jumps
    score_se: dict[str, float]  # method -> bootstrap SE of the mean relative score error


@torch.no_grad()
def evaluate_2d(s: Settings, fits: dict[str, FitResult]) -> Result2D:
    """Every sampler of :data:`SAMPLERS` at each of ``nfe_steps`` from the same x_T, the exact
    teacher (Heun, ``teacher_heun_steps``) and its one Euler step; energy distance to the
    same fresh data, SE by bootstrap; the relative error of the score each network holds,
    |D_theta - D*| / |x - D*| (= |s_theta - s*| / |s*|) on samples of p_sigma."""
    seeds, flow = Seeds(s.seed, **SEEDS), exact_flow()
    x_T = T_MAX * torch.randn(s.n_eval_2d, 2, generator=seeds.generator("noise"))
    target = flow.mixture.sample(s.n_eval_2d, seeds.generator("target")).float()
    other = flow.mixture.sample(s.n_eval_2d, seeds.generator("other")).float()
    nets = {k: r.model.eval() for k, r in fits.items()}
    samples = {}
    for method, gamma in SAMPLERS:
        G = lambda x, t, s_to, net=nets[method]: ct.jump(net, x, t, s_to)
        for n in s.nfe_steps:
            grid = ct.sampling_grid(n, T_MAX)
            gen = seeds.generator("sample")
            samples[label(method, gamma, n)] = ct.gamma_sample(G, x_T, grid, gamma, gen)[0]
    heun = edm_sampler(
        flow.denoiser,
        x_T.double(),
        karras_sigmas(s.teacher_heun_steps, 0.002, T_MAX),
        trajectory=True,
    )
    teacher, euler = f"exact teacher, Heun {heun.nfe} NFE", "exact teacher, 1 Euler step"
    samples[teacher] = heun.x.float()
    samples[euler] = ct.jump(lambda y, t, _: flow.denoiser(y, t), x_T, T_MAX, 0.0).float()
    energy = {k: metrics.energy_distance(v, target) for k, v in samples.items()}
    boot = seeds["boot"]
    se = {
        k: metrics.bootstrap_se(
            lambda i, v=v: metrics.energy_distance(v[i], target), len(v), s.n_boot, boot
        )
        for k, v in samples.items()
    }
    score_error, score_se = {}, {}
    for method, net in nets.items():
        parts = []  # per sigma: (|D_theta - D*|^2, |x - D*|^2), (n_score,) each
        for j, sig in enumerate(s.score_sigmas):
            x = flow.sample(s.n_score, sig, seeds.generator("score", j)).float()
            d_star = flow.denoiser(x, sig)
            parts.append(
                (((ct.denoiser_of(net)(x, sig) - d_star) ** 2).sum(1), ((x - d_star) ** 2).sum(1))
            )
        rel = lambda i, p=parts: torch.stack([(a[i].mean() / b[i].mean()).sqrt() for a, b in p])
        score_error[method] = rel(slice(None))
        mean_rel = lambda i, rel=rel: float(rel(i).mean())
        score_se[method] = metrics.bootstrap_se(mean_rel, s.n_score, s.n_boot, boot)
    m = 48
    G = lambda x, t, s_to: ct.jump(nets["CTM"], x, t, s_to)
    ctm_path = ct.gamma_sample(G, x_T[:m], ct.sampling_grid(4, T_MAX), 0.0, trajectory=True)[1]
    paths = {"teacher": heun.trajectory[:, :m].float(), "CTM": ctm_path}
    floor = metrics.energy_distance(other, target)
    args = (energy, se, floor, teacher, euler, score_error, paths, score_se)
    return Result2D(fits, target, samples, *args)


def experiment_2d(s: Settings) -> Result2D:
    """The 2D experiment: train (or load) the two students, then evaluate them (cached)."""
    with one_thread_on_cpu(blas=True):
        fits = train_2d(s)
        evaluate = lambda: evaluate_2d(s, fits)
        return evaluated(
            Result2D,
            "eval-2d",
            cache_key(s, FIELDS_2D + EVAL_2D, score_se=True),
            evaluate,
            fits=fits,
        )


# ---- digits experiment --------------------------------------------------------------------
def train_digits(s: Settings) -> dict[str, FitResult]:
    """The EDM teacher (a :class:`consistency.JumpNet` trained by DSM only: its diagonal
    g(x, t, t) is the denoiser) and its CTM student, started from the teacher's weights (so
    it starts as the teacher's one Euler step, G = (s/t) x + (1 - s/t) D)."""
    seeds = Seeds(s.seed, **SEEDS)
    train, _, _ = flat_digits(s.image_size, 0, seeds.generator("augment"))
    sd = float(train.std())
    sample = lambda n, g: train[torch.randint(len(train), (n,), generator=g)]
    grid = karras_sigmas(s.n_grid, 0.002, T_MAX)

    def make() -> ct.JumpNet:
        torch.manual_seed(seeds["digits_init"])
        return ct.JumpNet(s.image_size**2, s.hidden, s.depth, sd)

    key = lambda part: cache_key(s, FIELDS_DIGITS, part=part)
    fit = dict(lr=s.lr, version=VERSION)
    dsm = ct.objective("dsm", None, sample, grid, s.batch, seeds.generator("digits_train"))
    teacher = fit_cached(
        CHAPTER,
        "digits-teacher",
        key("teacher"),
        make,
        dsm,
        steps=s.teacher_steps,
        desc="digits: EDM teacher",
        **fit,
    )
    frozen = copy.deepcopy(teacher.model).eval()
    loss = ct.objective(
        "ctm",
        ct.denoiser_of(frozen),
        sample,
        grid,
        s.batch,
        seeds.generator("digits_train", 1),
        s.ema_decay,
        s.max_teacher_steps,
        s.dsm_weight,
        s.distance,
        s.huber_c,
    )
    start = lambda: copy.deepcopy(teacher.model).train()
    student = fit_cached(
        CHAPTER,
        "digits-ctm",
        key("ctm"),
        start,
        loss,
        steps=s.ctm_steps,
        desc="digits: CTM student",
        **fit,
    )
    return {"teacher": teacher, "CTM": student}


@dataclass
class DigitsResult:
    """FD (shipped classifier's features, to held-out digits) per sampler, with SEs."""

    fits: dict[str, FitResult]
    fd: dict[str, float]
    fd_se: dict[str, float]
    floor: float  # training vs held-out digits
    samples: dict[str, Tensor]  # sampler -> (10, 1, S, S)
    teacher: str
    euler: str


@torch.no_grad()
def evaluate_digits(s: Settings, fits: dict[str, FitResult]) -> DigitsResult:
    """CTM with gamma = 0 and 1 at each of ``digits_nfe``; the teacher with Heun
    (``teacher_heun_steps``) and with one Euler step; all from the same x_T."""
    seeds, shape = Seeds(s.seed, **SEEDS), (1, s.image_size, s.image_size)
    train, _, test = flat_digits(s.image_size, 0, seeds.generator("augment"))
    ref = metrics.digits_features(test.reshape(-1, *shape))
    x_T = T_MAX * torch.randn(s.n_fd, s.image_size**2, generator=seeds.generator("digits_noise"))
    teacher_net, student = fits["teacher"].model.eval(), fits["CTM"].model.eval()
    out = {}
    for gamma in (0.0, 1.0):
        for n in s.digits_nfe:
            G = lambda x, t, s_to: ct.jump(student, x, t, s_to)
            gen = seeds.generator("sample", 1)
            out[label("CTM", gamma, n)] = ct.gamma_sample(
                G, x_T, ct.sampling_grid(n, T_MAX), gamma, gen
            )[0]
    D = ct.denoiser_of(teacher_net)
    heun = edm_sampler(D, x_T, karras_sigmas(s.teacher_heun_steps, 0.002, T_MAX))
    teacher, euler = f"EDM teacher, Heun {heun.nfe} NFE", "EDM teacher, 1 Euler step"
    out[teacher], out[euler] = heun.x, ct.jump(lambda y, t, _: D(y, t), x_T, T_MAX, 0.0)
    feats = {k: metrics.digits_features(v.clamp(-1, 1).reshape(-1, *shape)) for k, v in out.items()}
    fd = {k: metrics.frechet_distance(f, ref) for k, f in feats.items()}
    se = {
        k: metrics.bootstrap_se(
            lambda i, f=f: metrics.frechet_distance(f[i], ref), len(f), s.n_boot, seeds["boot"]
        )
        for k, f in feats.items()
    }
    floor = metrics.frechet_distance(metrics.digits_features(train.reshape(-1, *shape)), ref)
    images = {k: v[:10].clamp(-1, 1).reshape(-1, *shape) for k, v in out.items()}
    return DigitsResult(fits, fd, se, floor, images, teacher, euler)


def experiment_digits(s: Settings) -> DigitsResult:
    """The digits experiment: train (or load) teacher and student, then evaluate them
    (cached)."""
    with one_thread_on_cpu(blas=True):
        fits = train_digits(s)
        key = cache_key(s, FIELDS_DIGITS + EVAL_DIGITS)
        return evaluated(
            DigitsResult, "eval-digits", key, lambda: evaluate_digits(s, fits), fits=fits
        )


# ---- the chapter --------------------------------------------------------------------------
@dataclass
class Results(experiment.ChapterResults):
    """What the chapter shows: the theory check, the 2D comparison and the digits (None
    unless ``s.digits``)."""

    theory: TheoryCheck
    two_d: Result2D
    digits: DigitsResult | None


EXPERIMENTS = {
    "theory check": theory,
    "2D": experiment_2d,
    "digits": lambda s: experiment_digits(s) if s.digits else None,
}


prepare, run = experiment.chapter_steps(EXPERIMENTS, Results)


# ---- claims -------------------------------------------------------------------------------
def claims_theory(th: TheoryCheck, sc: str) -> list[Claim]:
    """The exact jump equals the ODE solution; gamma-sampling with it keeps the data."""
    lim = th.derivation["lim minus denoiser"]
    name = "exact jump G* of Gaussian data (sympy) vs dopri5 integration of the PF-ODE"
    paper = "G(x_t, t, s) is the PF-ODE solution from t to s; g(x, t, t) is the denoiser"
    note = (
        f"3 random Gaussians in d = 3, 200 points, s in (0, 0.01, t/4); sympy: lim g* - D* = {lim}"
    )
    out = [claim_below(name, paper, th.jump_error, 1e-5, sc, note)]
    worst = max(th.energy, key=th.energy.get)
    name = "gamma-sampling with the exact jump reproduces the data (worst gamma, energy distance)"
    paper = "with the exact G, gamma-sampling keeps the marginals for every gamma"
    note = "; ".join(f"gamma {g:g}: {e:.2e}" for g, e in th.energy.items())
    note += (
        f"; {th.steps} jumps, n = {th.n}; bound: data-vs-data mean + 3 SD over 8 repeats; "
        f"control (one Euler step per jump): {th.euler_control:.2e}"
    )
    out.append(claim_below(name, paper, th.energy[worst], th.threshold, sc, note))
    return out


def claims_2d(r: Result2D, s: Settings) -> list[Claim]:
    """One step CTM vs CM; CTM improves with NFE (gamma 0), CM's multistep does not; one CTM
    step against the teacher; the score the CTM network holds (the CM net: no DSM)."""
    e, se, sc, top = r.energy, r.energy_se, s.scale, s.nfe_steps[-1]
    ctm1, cm1 = label("CTM", 0, 1), label("CM", 1, 1)
    ctm_top, cm_top = label("CTM", 0, top), label("CM", 1, top)
    note = (f"energy distance to {s.n_eval_2d} fresh data points (floor {r.floor:.1e}); SE: "
            f"bootstrap ({s.n_boot}); exact teacher {e[r.teacher]:.2e}, its 1 Euler step "
            f"{e[r.euler]:.2e}")  # fmt: skip
    curve = lambda m, g: (
        f"{m} gamma={g} by NFE: " + ", ".join(f"{n}: {e[label(m, g, n)]:.2e}" for n in s.nfe_steps)
    )

    def ordered(name: str, paper: str, keys: tuple[str, str], extra: str = "") -> Claim:
        values, ses = {k: e[k] for k in keys}, {k: se[k] for k in keys}
        return claim_ordered(name, paper, values, sc, extra + note, ses=ses)

    paper = "one-step FID: CTM 1.73 vs consistency distillation 3.55 (CIFAR-10)"
    out = [ordered("one step: CTM < CM (2D, energy distance)", paper, (ctm1, cm1))]
    paper = "CTM's gamma = 0 sampling improves with more steps"
    name = f"CTM gamma=0 improves from 1 to {top} NFE"
    out.append(ordered(name, paper, (ctm_top, ctm1), curve("CTM", 0) + "; "))
    paper = "CM's multistep sampling (gamma = 1) saturates; CTM's long jumps (gamma = 0) do not"
    name = f"at {top} NFE: CTM gamma=0 < CM gamma=1"
    out.append(ordered(name, paper, (ctm_top, cm_top), curve("CM", 1) + "; "))
    gap = (e[r.euler] - e[ctm1]) / (e[r.euler] - e[r.teacher])
    paper = "one CTM step matches the teacher's many-step quality"
    note2 = "share of the gap between the teacher's 1 Euler step and its many-step solve "
    name = "one CTM step closes > 90% of the teacher's 1-step gap"
    out.append(claim_above(name, paper, gap, 0.9, sc, note2 + "that one CTM step closes; " + note))
    err = {k: float(v.mean()) for k, v in r.score_error.items()}
    per = "; ".join(f"{k}: " + ", ".join(f"{x:.2f}" for x in v.tolist())
                    for k, v in r.score_error.items())  # fmt: skip
    paper = "the same network gives the score, D(x, t) = g(x, t, t) (DSM keeps it usable)"
    note3 = f"|s_theta - s*| / |s*| at sigma {list(s.score_sigmas)}: {per}"
    name = "score error (mean over sigma): CTM < CM"
    values, ses = {"CTM": err["CTM"], "CM": err["CM"]}, {k: r.score_se[k] for k in ("CTM", "CM")}
    note3 += f"; SE: bootstrap over the {s.n_score} samples per sigma"
    return out + [claim_ordered(name, paper, values, sc, note3, ses=ses)]


def claims_digits(d: DigitsResult, s: Settings) -> list[Claim]:
    """Digits: CTM 2 jumps better than 1 (gamma 0); where one step stands to the teacher."""
    one, two = label("CTM", 0, 1), label("CTM", 0, s.digits_nfe[1])
    note = (
        f"FD of the digits classifier's features to held-out digits, n = {s.n_fd}, "
        "SE: bootstrap; "
        f"EDM teacher {d.fd[d.teacher]:.3g} ({d.teacher}), 1 Euler step {d.fd[d.euler]:.3g}; "
        f"CTM gamma=1 1 / {s.digits_nfe[1]} NFE: {d.fd[label('CTM', 1, 1)]:.3g} / "
        f"{d.fd[label('CTM', 1, s.digits_nfe[1])]:.3g}; floor {d.floor:.3g}"
    )
    paper = "CTM 2-step FID 1.63 < 1-step 1.73 (CIFAR-10)"
    values, ses = {two: d.fd[two], one: d.fd[one]}, {two: d.fd_se[two], one: d.fd_se[one]}
    name = "digits: CTM 2 jumps < 1 jump (FD)"
    return [claim_ordered(name, paper, values, s.scale, note, ses=ses)]


def claims(r: Results) -> list[Claim]:
    """The paper's claims at this scale; criteria fixed before measuring."""
    s = replace(r.settings, scale=r.scale)
    out = claims_theory(r.theory, r.scale) + claims_2d(r.two_d, s)
    return out + (claims_digits(r.digits, s) if r.digits is not None else [])


# ---- figures ------------------------------------------------------------------------------
COLORS = {"CTM gamma=0": style.BLUE, "CTM gamma=1": style.ORANGE, "CM gamma=1": style.RED}
COLORS |= {"exact teacher": style.GREEN, "EDM teacher": style.GREEN}


def nfe_figure(r: Result2D, s: Settings) -> go.Figure:
    """Energy distance against NFE per sampler, the teacher at its NFE, the data floor."""
    curves = {}
    for method, gamma in SAMPLERS:
        name = f"{method} gamma={gamma:g}"
        e = [r.energy[label(method, gamma, n)] for n in s.nfe_steps]
        curves[name] = (torch.tensor(s.nfe_steps), torch.tensor(e), [f"{v:.2e}" for v in e])
    teacher_nfe = 2 * s.teacher_heun_steps - 1
    curves["exact teacher"] = (
        torch.tensor([1, teacher_nfe]),
        torch.tensor([r.energy[r.euler], r.energy[r.teacher]]),
        ["1 Euler step", f"Heun, {teacher_nfe} NFE"],
    )
    title = "2D: distance to the data vs network evaluations"
    axes = dict(x_title="NFE (jumps)", y_title="energy distance")
    return quality_vs_steps_figure(
        curves, {}, COLORS, r.floor, "two fresh data sets", title, **axes
    )


def samples_figure(r: Result2D, s: Settings, n: int = 600) -> go.Figure:
    """Data, the teacher, and the students at 1 and the most NFE."""
    top = s.nfe_steps[-1]
    keys = [r.teacher, *(label(m, g, k) for k in (1, top) for m, g in (("CTM", 0), ("CM", 1)))]
    sets = {"data": r.target, **{k: r.samples[k] for k in keys}}
    dots = lambda k, x: [viz.points_trace(x[:n], k, "#444" if k == "data" else style.BLUE, 2.5)]
    axes = dict(range=[-3.2, 3.2], visible=False)
    title = "Samples (one network evaluation per jump)"
    return viz.panel_grid([[dots(k, x) for k, x in sets.items()]], list(sets), (0.01, 0.05),
                          axes, height=260, width=1150, title=title)  # fmt: skip


def paths_figure(r: Result2D) -> go.Figure:
    """The exact teacher's Heun states and the CTM student's 4 jumps (gamma 0), same x_T."""
    titles = ["exact teacher: Heun steps", "CTM student: 4 long jumps (gamma 0)"]
    return consistency_figures.paths_figure(r.paths, titles)


def score_figure(r: Result2D, s: Settings) -> go.Figure:
    """The relative score error of each network's diagonal g(x, t, t) against sigma."""
    colors = {"CTM": COLORS["CTM gamma=0"], "CM": COLORS["CM gamma=1"]}
    return consistency_figures.score_error_figure(s.score_sigmas, r.score_error, colors)


def gamma_figure(th: TheoryCheck) -> go.Figure:
    """gamma-sampling with the exact jump: energy distance per gamma, control, bound."""
    return consistency_figures.exact_gamma_figure(th.energy, th.euler_control, th.threshold)


def digits_figure(d: DigitsResult) -> go.Figure:
    """Ten samples (same x_T) of every digits sampler, one row each."""
    images = torch.cat(list(d.samples.values()))
    titles = [k if i == 0 else "" for k in d.samples for i in range(10)]
    return viz.image_grid_figure(
        images, nrow=10, titles=titles, tile_px=40, title="Digits from the same noise"
    )


def figures(r: Results) -> dict[str, go.Figure]:
    """The chapter's figures by name (what ``pflow-explore figures`` writes)."""
    s = r.settings
    out = {
        "gamma_exact": gamma_figure(r.theory),
        "nfe_2d": nfe_figure(r.two_d, s),
        "samples_2d": samples_figure(r.two_d, s),
        "paths_2d": paths_figure(r.two_d),
        "score_error": score_figure(r.two_d, s),
    }
    if r.digits is not None:
        out["digits_samples"] = digits_figure(r.digits)
    return out


def preview() -> go.Figure:
    """A cloud at t = 2 of the eight Gaussians and its exact jumps to s = 0.5 (Euler would
    overshoot): the jump G in one picture, from the closed-form mixture (no training)."""
    flow = exact_flow()
    x = flow.sample(150, 2.0, torch.Generator().manual_seed(0))
    y = ct.exact_jump(flow.denoiser, x, 2.0, 0.3, rtol=1e-4, atol=1e-4)
    lines = viz.trajectories_trace(torch.stack([x, y]), "jump", "rgba(31,119,180,0.35)")
    fig = go.Figure([lines, viz.points_trace(y, "G(x, 2, 0.3)", style.BLUE, 3)])
    fig.update_layout(style.figure_layout(None, 220, keep_view=False))
    return style.thumbnail(fig.update_yaxes(scaleanchor="x", scaleratio=1))
