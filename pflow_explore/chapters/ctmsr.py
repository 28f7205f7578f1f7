"""Chapter 06: CTMSR, one-step super-resolution by consistency trajectory matching.

You et al. 2025, docs/papers.md §06. Time convention: diffusion, t in [0, 1]: t = 0 the
high-resolution image HR, t = 1 the noisy upsampled low-resolution image LRup + s_max z;
one-step inference jumps from t = 1 to 0 (:mod:`super_resolution`, which holds the method:
the degradation, the trajectory, the one-step model, consistency training, DTM, the L1 and
the conditional-diffusion baselines, the sharpness statistic; the diffusion baseline counts
in EDM noise levels). The experiments, each callable on its own: :func:`exact` (consistency
training on a linear-Gaussian problem whose one-step map f* is known, at the card's N and a
larger one, against the N-step Euler optimum; a shuffled-input control) and
:func:`experiment_images` (x2 super-resolution of 8x8 digits, x4 of 64x64 photo patches at
scale gpu: L1 regression, one-step CT, CT + DTM, conditional diffusion at several NFE);
``run`` composes the two.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pflow_explore import experiment, metrics, viz
from pflow_explore import super_resolution as sr
from pflow_explore.claims import Claim, claim_above, claim_below, claim_ordered, compare
from pflow_explore.datasets.image_splits import settings_images as images
from pflow_explore.experiment import Seeds, cache_key, choose, one_thread_on_cpu, presets
from pflow_explore.theory import super_resolution as theory_sr
from pflow_explore.theory.gaussian_flow import Derivation
from pflow_explore.training import FitResult, fit, fit_cached
from pflow_explore.viz import sr_figures as srf
from pflow_explore.viz import style

CHAPTER = "ctmsr"
VERSION = 1  # part of every cache key: bump when training or evaluation changes
SEEDS = dict(problem=0, init=10, train=11, data=12, eval=13, sample=14, boot=15, view=16)
EXACT_SHAPE = (1, 2, 2)  # the exact problem: a 2x2 image seen through x2 average pooling
L1, CT, LONGER, DTM = "L1 regression", "CT (1 step)", "CT, longer", "CT + DTM (1 step)"
INPUT = "bilinear LRup"


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter (``scale``: the preset's name). The fields that
    train models are in their cache keys (:data:`FIELDS_IMAGES`, :data:`FIELDS_EXACT`)."""

    scale: str
    sigma_max: float = 1.0  # x_1 = LRup + sigma_max z (the card: about 1)
    # exact linear-Gaussian problem: consistency training with an L2 distance
    exact_noise: float = 0.1
    exact_hidden: int = 64
    exact_depth: int = 2
    exact_batch: int = 256
    exact_lr: float = 1e-3
    exact_steps: int = 1600
    n_start: int = 4  # the card's discretisation, annealed n_start -> n_end
    n_end: int = 3
    n_large: int = 16  # a finer grid: the N-step optimum is closer to f*
    n_checkpoints: int = 8
    n_exact_eval: int = 2000
    # images: x factor SR of digits (or photo patches) with blur + noise
    data: str = "digits"  # or "patches" (skimage photos)
    image_size: int = 8
    factor: int = 2
    blur: float = 0.5
    noise: float = 0.05
    net: str = "mlp"  # or "unet"
    hidden: int = 256
    depth: int = 3
    base: int = 32
    batch: int = 128
    lr: float = 1e-3
    steps: int = 2000  # every network's first stage
    distance: str = "l2"  # consistency distance (pseudo-Huber diverged on the exact problem)
    c: float = 0.03
    dtm_weight: float = 1.0
    dtm_steps: int = 1000  # second stage: CT + DTM, and CT alone for as long (the control)
    dtm_refresh: int = 250
    diffusion_nfe: tuple[int, ...] = (1, 3, 9, 19, 39)
    n_eval: int = 359  # held-out images (the digits test split has 359)
    latency_repeats: int = 7
    latency_batch: int = 256  # images per timed call
    n_boot: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        need = experiment.require
        experiment.require_counts(self)
        experiment.require_at_least(self, "n_exact_eval n_eval", low=16)
        experiment.require_at_least(self, "latency_repeats n_boot n_checkpoints", low=2)
        experiment.require_choice(self, "data", ("digits", "patches"))
        experiment.require_choice(self, "net", ("mlp", "unet"))
        experiment.require_choice(self, "distance", sr.DISTANCES)
        need(
            min(self.sigma_max, self.exact_noise, self.lr, self.exact_lr) > 0,
            "sigma_max, exact_noise, lr and exact_lr must be > 0",
        )
        need(min(self.blur, self.noise, self.dtm_weight) >= 0, "blur, noise, dtm_weight >= 0")
        need(
            self.image_size % self.factor == 0,
            f"image_size {self.image_size} must be divisible by factor {self.factor}",
        )
        need(self.data == "patches" or self.image_size in (8, 16, 32), "digits: size 8, 16, 32")
        need(
            self.n_large > max(self.n_start, self.n_end),
            f"n_large must exceed the card's N ({self.n_start} -> {self.n_end})",
        )
        grid = list(self.diffusion_nfe)
        ok = grid == sorted(set(grid)) and len(grid) >= 2 and all(n % 2 for n in grid)
        need(ok, f"diffusion_nfe must increase strictly, odd values (Heun: 2 N - 1), got {grid}")
        need(self.data == "patches" or self.n_eval <= 359, "digits: n_eval <= 359 (test split)")


SETTINGS = presets(
    Settings,
    tiny=dict(exact_steps=200, exact_batch=128, n_large=8, n_checkpoints=4, n_exact_eval=500,
              hidden=64, depth=2, steps=150, dtm_steps=60, dtm_refresh=30, diffusion_nfe=(1, 3, 9),
              n_eval=96, latency_repeats=2, n_boot=8),
    cpu={},
    gpu=dict(exact_steps=4000, n_large=32, n_exact_eval=5000, data="patches", image_size=64,
             factor=4, blur=1.0, net="unet", base=64, batch=32, lr=2e-4, steps=6000,
             dtm_steps=3000, dtm_refresh=1000, diffusion_nfe=(1, 3, 9, 19, 39), n_eval=500,
             latency_batch=32, n_boot=50),
)  # fmt: skip
FIELDS_EXACT = (
    "sigma_max exact_noise exact_hidden exact_depth exact_batch exact_lr "
    "exact_steps n_start n_end n_large n_checkpoints n_exact_eval seed"
).split()
FIELDS_IMAGES = (
    "sigma_max data image_size factor blur noise net hidden depth base batch lr steps seed".split()
)
FIELDS_CT = "n_start n_end distance c".split()
FIELDS_DTM = "dtm_weight dtm_steps dtm_refresh".split()
EVAL_IMAGES = "diffusion_nfe n_eval latency_repeats latency_batch n_boot".split()


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


evaluated = experiment.chapter_results(CHAPTER, VERSION)  # cached_result, this chapter's folder


def derivations() -> dict[str, Derivation]:
    """The sympy derivations the chapter shows (``theory.super_resolution``)."""
    return {"scalar": theory_sr.posterior_scalar(), "two pixels": theory_sr.posterior_2d()}


# ---- the exact linear-Gaussian problem ----------------------------------------------------
def exact_problem(s: Settings) -> tuple[theory_sr.GaussianSR, Tensor]:
    """(problem, U): a random Gaussian prior on 2x2 images, y = 2x2 average + noise
    ``exact_noise``; U (4, 1) the (bilinear = constant) upsampling of one pixel."""
    deg = sr.SRDegradation(2, 0.0, s.exact_noise)
    prob = theory_sr.GaussianSR.random(
        deg.matrix(EXACT_SHAPE), Seeds(s.seed, **SEEDS)["problem"], s.exact_noise
    )
    return prob, deg.up_matrix(EXACT_SHAPE)


def checkpoints(s: Settings) -> list[int]:
    """Training steps at which the error to f* is measured: log-spaced from ~1/50 of the run."""
    grid = torch.logspace(
        math.log10(max(s.exact_steps / 50, 1)), math.log10(s.exact_steps), s.n_checkpoints
    )
    return sorted({int(round(float(v))) for v in grid})


def rms(sq: Tensor) -> float:
    """sqrt(mean) of per-row squared errors."""
    return float(sq.mean().sqrt())


def train_exact(
    s: Settings, n_start: int, n_end: int, batch: sr.ExactBatch, shuffle: bool = False
) -> tuple[nn.Module, list[float]]:
    """Consistency training (L2, the card's model form) of a small MLP on the exact problem,
    N annealed n_start -> n_end; returns the model and its RMS error to f* on ``batch`` at
    each of :func:`checkpoints` (a fit callback)."""
    seeds, (prob, up) = Seeds(s.seed, **SEEDS), exact_problem(s)
    torch.manual_seed(seeds["init"])
    model = sr.ConsistencySR(sr.ConditionalMLP(prob.dim, s.exact_hidden, s.exact_depth))
    pairs = sr.linear_gaussian_pairs(prob, up, shuffle)
    loss = sr.consistency_objective(
        pairs,
        sr.SRPath(s.sigma_max),
        s.exact_batch,
        seeds.generator("train"),
        s.exact_steps,
        n_start,
        n_end,
        "l2",
    )
    marks, errors = set(checkpoints(s)), []

    def record(i: int, _: float) -> None:
        if i + 1 in marks:
            errors.append(rms(one_step_error(model, batch)))

    desc = f"exact problem, N {n_start} -> {n_end}" + (", shuffled LRup" if shuffle else "")
    fit(model, loss, steps=s.exact_steps, lr=s.exact_lr, cosine=True, desc=desc, callback=record)
    return model, errors


def one_step_error(model: nn.Module, b: sr.ExactBatch) -> Tensor:
    """|f(x_1, 1, LRup) - f*(y, z)|^2 per test case (n,)."""
    with torch.no_grad():
        return b.squared_error(model(b.x_1.float(), 1.0, b.lr_up.float()))


@dataclass
class ExactResult:
    """RMS error to f* against training steps for each N, its bootstrap SE at the end, and
    the references: untrained model, E[x|y], the N-step Euler optimum; the shuffled-LRup
    control; one y's samples of f*, E[x|y] and each model (the spread figure)."""

    steps: list[int]
    errors: dict[str, list[float]]  # label -> RMS error to f* at each checkpoint
    final_se: dict[str, float]
    untrained: float
    posterior_mean: float
    euler: dict[str, float]  # label -> RMS error of the N-step Euler optimum (N = final N)
    control: float  # shuffled LRup, trained as the larger N
    control_se: float
    samples: dict[str, Tensor]  # "f*", "E[x|y]", label -> (m, 4) for one y


def labels(s: Settings) -> tuple[str, str]:
    """The two discretisations: the card's and the larger one."""
    return f"N {s.n_start} -> {s.n_end} (card)", f"N = {s.n_large}"


def exact_check(s: Settings) -> ExactResult:
    """See :class:`ExactResult`; every model starts from the same seeded weights and draws
    the same batches."""
    seeds, (prob, up), path = Seeds(s.seed, **SEEDS), exact_problem(s), sr.SRPath(s.sigma_max)
    b = sr.exact_map_batch(prob, up, path, s.n_exact_eval, seeds.generator("eval"))
    boot = lambda sq: metrics.bootstrap_se(lambda i: rms(sq[i]), len(sq), s.n_boot, seeds["boot"])
    card, large = labels(s)
    errors, final_se, euler, models = {}, {}, {}, {}
    for label, (n0, n1) in {card: (s.n_start, s.n_end), large: (s.n_large, s.n_large)}.items():
        models[label], errors[label] = train_exact(s, n0, n1, b)
        final_se[label] = boot(one_step_error(models[label], b))
        euler[label] = rms(b.squared_error(prob.euler_map(b.x_1, b.y, b.lr_up, s.sigma_max, n1)))
    control_model, _ = train_exact(s, s.n_large, s.n_large, b, shuffle=True)
    control_sq = one_step_error(control_model, b)
    torch.manual_seed(seeds["init"])
    fresh = sr.ConsistencySR(sr.ConditionalMLP(prob.dim, s.exact_hidden, s.exact_depth))
    # one y, many z: how much of the posterior's spread each map keeps
    gen = seeds.generator("view")
    view = sr.exact_map_batch(prob, up, path, 1, gen)
    z = torch.randn(400, prob.dim, generator=gen, dtype=torch.float64)
    y, lr_up = view.y.expand(400, -1), view.lr_up.expand(400, -1)
    samples = {"f*": prob.exact_map(y, z), "E[x|y]": prob.posterior_mean(y[:1])}
    with torch.no_grad():
        for label, m in models.items():
            samples[label] = m(path.start(lr_up, z).float(), 1.0, lr_up.float()).double()
    return ExactResult(
        checkpoints(s),
        errors,
        final_se,
        rms(one_step_error(fresh, b)),
        rms(b.squared_error(b.mean)),
        euler,
        rms(control_sq),
        boot(control_sq),
        samples,
    )


def exact(s: Settings) -> ExactResult:
    """:func:`exact_check`, cached (its three trainings take seconds)."""
    with one_thread_on_cpu(blas=True):
        return evaluated(ExactResult, "exact", cache_key(s, FIELDS_EXACT), lambda: exact_check(s))


# ---- images -------------------------------------------------------------------------------
def degradation(s: Settings) -> sr.SRDegradation:
    """y = Down_f(Blur(x)) + noise, LRup bilinear."""
    return sr.SRDegradation(s.factor, s.blur, s.noise)


def shape_of(s: Settings) -> tuple[int, int, int]:
    return (1, s.image_size, s.image_size)


def backbone(s: Settings) -> nn.Module:
    """F(x, tau, LRup): a conditional MLP (digits) or UNet (patches), fresh, seeded."""
    torch.manual_seed(Seeds(s.seed, **SEEDS)["init"])
    if s.net == "mlp":
        return sr.ConditionalMLP(math.prod(shape_of(s)), s.hidden, s.depth)
    return sr.ConditionalUNet(shape_of(s), s.base)


def make_model(s: Settings, kind: str) -> nn.Module:
    """ "regression" (L1 baseline), "consistency" (one-step CT) or "diffusion" (EDM)."""
    wrap = {
        "regression": sr.RegressionSR,
        "consistency": sr.ConsistencySR,
        "diffusion": sr.ConditionalDenoiser,
    }
    return wrap[kind](backbone(s))


def train_images(s: Settings) -> dict[str, FitResult]:
    """L1 regression, CT (``steps``), then from CT's weights ``dtm_steps`` more with DTM
    and, as the control, as many without it; the conditional diffusion baseline. The same
    data stream (pairs drawn from ``seeds.generator("train")``) for each."""
    seeds, deg, train = Seeds(s.seed, **SEEDS), degradation(s), images(s, "train")
    pairs, path, out = sr.degraded_pairs(train, deg), sr.SRPath(s.sigma_max), {}
    gen = lambda: seeds.generator("train")  # noqa: E731

    def fit_one(label, name, names, make, loss, steps, desc=None, **extra) -> None:  # noqa: ANN001
        key = cache_key(s, FIELDS_IMAGES + names, **extra)
        out[label] = fit_cached(CHAPTER, name, key, make, loss, version=VERSION, steps=steps,
                                lr=s.lr, cosine=True, desc=desc or label)  # fmt: skip

    fit_one(L1, "regression", [], lambda: make_model(s, "regression"),
            sr.regression_objective(pairs, s.batch, gen()), s.steps)  # fmt: skip
    loss = sr.consistency_objective(pairs, path, s.batch, gen(), s.steps, s.n_start, s.n_end,
                                    s.distance, s.c)  # fmt: skip
    fit_one(CT, "ct", FIELDS_CT, lambda: make_model(s, "consistency"), loss, s.steps,
            "consistency training")  # fmt: skip
    for label, w in ((LONGER, 0.0), (DTM, s.dtm_weight)):
        loss = sr.consistency_objective(pairs, path, s.batch, gen(), s.dtm_steps, s.n_end,
                                        s.n_end, s.distance, s.c, w, 0, s.dtm_refresh)  # fmt: skip
        fit_one(label, "ct-dtm" if w else "ct-longer", FIELDS_CT + FIELDS_DTM,
                lambda: copy.deepcopy(out[CT].model), loss, s.dtm_steps, weight=w)  # fmt: skip
    loss = sr.diffusion_objective(pairs, s.batch, gen())
    fit_one("diffusion", "diffusion", [], lambda: make_model(s, "diffusion"), loss, s.steps,
            "conditional diffusion")  # fmt: skip
    return out


def diffusion_label(nfe: int) -> str:
    return f"diffusion, {nfe} NFE"


@dataclass
class ImagesResult:
    """Per method (:data:`INPUT`, L1, CT, CT longer, CT + DTM, diffusion at each NFE) on
    ``n_eval`` held-out images: PSNR, SSIM, sharpness ratio, Frechet distance (digits:
    classifier features; patches: 8x8-pooled pixels), latency per image, with SEs
    (PSNR: SD / sqrt n; sharpness, FD: bootstrap; latency: over repeats)."""

    psnr: dict[str, float]
    psnr_se: dict[str, float]
    ssim: dict[str, float]
    sharpness: dict[str, float]
    sharpness_se: dict[str, float]
    fd: dict[str, float]
    fd_se: dict[str, float]
    latency: dict[str, float]  # seconds per image
    latency_se: dict[str, float]
    nfe: dict[str, int]
    examples: dict[str, Tensor]  # "truth" and every method -> (8, C, S, S)
    fits: dict[str, FitResult] = field(default_factory=dict)


def test_pairs(s: Settings) -> tuple[Tensor, Tensor]:
    """(HR, LRup) flat, ``n_eval`` held-out images degraded with seeded noise."""
    hr = images(s, "test")[: s.n_eval]
    _, lr_up = degradation(s).pair(hr, Seeds(s.seed, **SEEDS).generator("eval"))
    return hr.flatten(1), lr_up.flatten(1)


def features(s: Settings, x: Tensor) -> Tensor:
    """What the Frechet distance compares: digits classifier features, or 8x8-pooled pixels."""
    x = x.clamp(-1, 1).reshape(-1, *shape_of(s)).float().cpu()
    if s.data == "digits":
        return metrics.digits_features(x)
    return F.adaptive_avg_pool2d(x, 8).flatten(1)


def methods(
    s: Settings, fits: dict[str, FitResult], lr_up: Tensor
) -> dict[str, tuple[int, Callable[[], Tensor]]]:
    """label -> (NFE, a call returning the flat outputs for ``lr_up``): the same z (and
    diffusion noise) for every method, from ``seeds.generator("sample")``."""
    seeds, path = Seeds(s.seed, **SEEDS), sr.SRPath(s.sigma_max)
    gen = lambda: seeds.generator("sample")  # noqa: E731
    out: dict[str, tuple[int, Callable[[], Tensor]]] = {INPUT: (0, lambda: lr_up)}
    with torch.no_grad():
        reg = fits[L1].model.eval()
        out[L1] = (1, lambda: reg(lr_up).detach())
    for label in (CT, LONGER, DTM):
        m = fits[label].model.eval()
        out[label] = (1, lambda m=m: sr.super_resolve(m, lr_up, path, gen()))
    diff = fits["diffusion"].model.eval()
    for n in s.diffusion_nfe:
        out[diffusion_label(n)] = (n, lambda n=n: sr.diffusion_sr(diff, lr_up, n, gen()).x)
    return out


@torch.no_grad()
def evaluate_images(s: Settings, fits: dict[str, FitResult]) -> ImagesResult:
    """See :class:`ImagesResult`; outputs clamped to [-1, 1]."""
    seeds = Seeds(s.seed, **SEEDS)
    hr, lr_up = test_pairs(s)
    as_img = lambda v: v.clamp(-1, 1).reshape(-1, *shape_of(s))  # noqa: E731
    truth, n = as_img(hr), len(hr)
    real = features(s, hr)
    boot = lambda stat: metrics.bootstrap_se(stat, n, s.n_boot, seeds["boot"])  # noqa: E731
    r = ImagesResult({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {"truth": truth[:8].clone()})
    for label, (nfe, call) in methods(s, fits, lr_up).items():
        y = as_img(call())
        p = metrics.psnr(y, truth)
        r.psnr[label], r.psnr_se[label] = float(p.mean()), float(p.std() / math.sqrt(n))
        r.ssim[label] = float(metrics.ssim(y, truth).mean())
        r.sharpness[label] = float(sr.sharpness_ratio(y, truth))
        r.sharpness_se[label] = boot(lambda i, y=y: float(sr.sharpness_ratio(y[i], truth[i])))
        fake = features(s, y)
        r.fd[label] = metrics.frechet_distance(fake, real)
        r.fd_se[label] = boot(lambda i, f=fake: metrics.frechet_distance(f[i], real[i]))
        r.nfe[label], r.examples[label] = nfe, y[:8].clone()  # not the whole batch
    k = min(s.latency_batch, n)
    for label, (_, call) in methods(s, fits, lr_up[:k]).items():
        r.latency[label], r.latency_se[label] = sr.latency_per_image(
            lambda c=call: c().sum().item(), k, s.latency_repeats
        )
    return r


def experiment_images(s: Settings) -> ImagesResult:
    """Train (or load) every model, then evaluate them (cached)."""
    with one_thread_on_cpu(blas=True):
        fits = train_images(s)
        k = cache_key(s, FIELDS_IMAGES + FIELDS_CT + FIELDS_DTM + EVAL_IMAGES)
        return evaluated(
            ImagesResult, "eval-images", k, lambda: evaluate_images(s, fits), fits=fits
        )


# ---- the chapter --------------------------------------------------------------------------
@dataclass
class Results(experiment.ChapterResults):
    """What the chapter shows: the exact problem and the image super-resolution comparison."""

    exact: ExactResult
    images: ImagesResult


EXPERIMENTS = {"exact problem": exact, "images": experiment_images}


prepare, run = experiment.chapter_steps(EXPERIMENTS, Results)


# ---- claims -------------------------------------------------------------------------------
def claims_exact(r: ExactResult, s: Settings) -> list[Claim]:
    """f* approached (error below a quarter of E[x|y]'s) at the card's N and at a larger N;
    the error falls with training; the model uses LRup (shuffled control)."""
    out, paper, (_, large) = [], "a one-step model trained by CT learns the exact map f*", labels(s)
    for label in labels(s):
        note = (f"Euler optimum at this N {r.euler[label]:.3f}; E[x|y] {r.posterior_mean:.3f}; "
                f"untrained {r.untrained:.3f}; {s.exact_steps} steps, L2")  # fmt: skip
        name = f"exact map, {label}: RMS error to f* (bound: E[x|y]'s / 4)"
        err, se = r.errors[label][-1], r.final_se[label]
        out.append(claim_below(name, paper, err, r.posterior_mean / 4, s.scale, note, se=se))
    drop, curve = r.errors[large][0] - r.errors[large][-1], r.errors[large]
    note = f"RMS at steps {r.steps}: " + ", ".join(f"{e:.3f}" for e in curve)
    name, paper = f"exact map, {large}: error falls with training (first - last)", "error decreases"
    out.append(claim_above(name, paper, drop, 0.0, s.scale, note, se=r.final_se[large]))
    gap, se = r.control - curve[-1], math.hypot(r.control_se, r.final_se[large])
    note = f"shuffled LRup {r.control:.3f} vs true LRup {curve[-1]:.3f}"
    name = "control: the map uses LRup (shuffled minus true, RMS)"
    return out + [claim_above(name, "-", gap, 0.0, s.scale, note, se=se)]


def claim_sharper(d: ImagesResult, s: Settings, one_step: str = CT) -> Claim:
    """``one_step`` has a higher sharpness ratio than L1 regression beyond 2 SE, with a PSNR
    no more than 1 dB lower."""
    diff = d.sharpness[one_step] - d.sharpness[L1]
    se = math.hypot(d.sharpness_se[one_step], d.sharpness_se[L1])
    holds = bool(diff - 2 * se > 0 and d.psnr[L1] - d.psnr[one_step] <= 1.0)
    note = (f"sharpness {one_step} {d.sharpness[one_step]:.3f}, L1 {d.sharpness[L1]:.3f} "
            f"(truth 1); PSNR {d.psnr[one_step]:.2f} vs {d.psnr[L1]:.2f} dB")  # fmt: skip
    name = f"{one_step} sharper than L1 at similar PSNR (sharpness difference)"
    paper, crit = (
        "sharper than regression at similar fidelity",
        f"> 0 by 2 SE (SE {se:.2g}), PSNR within 1 dB",
    )
    return Claim(name, paper, diff, crit, holds, s.scale, note)


def claims_images(d: ImagesResult, s: Settings) -> list[Claim]:
    """Sharper than L1; DTM improves FD; one-step latency; one step matches multi-step."""
    out, top, other = (
        [claim_sharper(d, s)],
        diffusion_label(max(s.diffusion_nfe)),
        f"{LONGER} (no DTM)",
    )
    vals, ses = {DTM: d.fd[DTM], other: d.fd[LONGER]}, {DTM: d.fd_se[DTM], other: d.fd_se[LONGER]}
    note = f"CT before the second stage: FD {d.fd[CT]:.3f}; {s.dtm_steps} more steps each"
    name, paper = "DTM improves the distribution match (Frechet distance)", "DTM: more realistic"
    out.append(claim_ordered(name, paper, vals, s.scale, note, ses=ses))
    ratio = d.latency[top] / d.latency[CT]
    se = ratio * math.hypot(d.latency_se[top] / d.latency[top], d.latency_se[CT] / d.latency[CT])
    ms = {k: f"{1e3 * d.latency[k]:.3f} ms" for k in (CT, top, L1)}
    k = min(s.latency_batch, s.n_eval)
    note = (f"per image: CT {ms[CT]}, {top} {ms[top]}, L1 {ms[L1]} (batches of {k}, "
            f"{s.latency_repeats} repeats, median)")  # fmt: skip
    name = f"latency: {top} / one-step CT"
    out.append(claim_above(name, "one step: minimal latency", ratio, 2.0, s.scale, note, se=se))
    verdict = compare(d.fd[DTM], d.fd[top], d.fd_se[DTM], d.fd_se[top])
    by_nfe = ", ".join(f"{n}: {d.fd[diffusion_label(n)]:.3f}" for n in s.diffusion_nfe)
    note = f"FD by NFE: {by_nfe}; CT {d.fd[CT]:.3f}, L1 {d.fd[L1]:.3f}"
    name, paper = f"one step (CT + DTM) matches {top} (FD)", "matches multi-step ResShift / SinSR"
    measured = f"{d.fd[DTM]:.3f} vs {d.fd[top]:.3f}: {verdict}"
    crit = "not worse by 2 combined SE"
    return out + [Claim(name, paper, measured, crit, verdict != "worse", s.scale, note)]


def claims(r: Results) -> list[Claim]:
    """The paper's claims at this scale; criteria fixed before measuring."""
    s = replace(r.settings, scale=r.scale)
    return claims_exact(r.exact, s) + claims_images(r.images, s)


# ---- figures ------------------------------------------------------------------------------
COLORS = {L1: style.GRAY, CT: style.BLUE, LONGER: "#17becf", DTM: style.GREEN, INPUT: "#8c564b"}


def exact_figure(r: ExactResult, s: Settings) -> go.Figure:
    """RMS error to f* against training steps per N; each N's Euler optimum dotted; the
    posterior mean, the untrained model and the shuffled control dashed."""
    refs = {"E[x|y]": r.posterior_mean, "untrained": r.untrained, "shuffled LRup": r.control}
    title = "Exact problem: one-step error to f* vs training"
    return srf.error_curves_figure(r.steps, r.errors, r.euler, refs, title)


def spread_figure(r: ExactResult) -> go.Figure:
    """One y, 400 z: pixels (x1, x2) of f* and of each model; E[x|y] as a star."""
    return srf.spread_figure(r.samples, "Samples for one y: pixel 1 vs pixel 2", "E[x|y]")


def quality_figure(d: ImagesResult, s: Settings) -> go.Figure:
    """PSNR against sharpness ratio (1 = the truth's fine detail), every method."""
    title, diff = (
        "Fidelity (PSNR) vs sharpness, +- 2 SE",
        [diffusion_label(n) for n in s.diffusion_nfe],
    )
    return srf.methods_scatter_figure(
        d.sharpness,
        d.psnr,
        COLORS,
        title,
        "sharpness ratio (truth: 1)",
        "PSNR (dB)",
        d.sharpness_se,
        d.psnr_se,
        diff,
    )


def fd_latency_figure(d: ImagesResult, s: Settings) -> go.Figure:
    """Frechet distance against latency per image (log), every method but the input."""
    keys = [k for k in d.fd if k != INPUT]
    ms = {k: 1e3 * d.latency[k] for k in keys}
    diff = [diffusion_label(n) for n in s.diffusion_nfe]
    return srf.methods_scatter_figure(
        ms,
        {k: d.fd[k] for k in keys},
        COLORS,
        "Distribution match vs latency, +- 2 SE",
        "ms per image (batched, this machine)",
        "Frechet distance",
        y_se=d.fd_se,
        line=diff,
        log_x=True,
    )


def examples_figure(d: ImagesResult, s: Settings) -> go.Figure:
    """Rows: truth, input, L1, CT, CT + DTM, diffusion at the most NFE (same z)."""
    top = diffusion_label(max(s.diffusion_nfe))
    rows = ["truth", INPUT, L1, CT, DTM, top]
    titles = [k if i == 0 else "" for k in rows for i in range(8)]
    return viz.image_grid_figure(
        torch.cat([d.examples[k] for k in rows]),
        nrow=8,
        titles=titles,
        tile_px=40,
        title="Super-resolution (held-out images)",
    )


def figures(r: Results) -> dict[str, go.Figure]:
    """The chapter's figures by name (what ``pflow-explore figures`` writes)."""
    s = r.settings
    return {
        "exact_error": exact_figure(r.exact, s),
        "spread": spread_figure(r.exact),
        "quality": quality_figure(r.images, s),
        "fd_latency": fd_latency_figure(r.images, s),
        "examples": examples_figure(r.images, s),
    }


def preview() -> go.Figure:
    """One y of the exact problem: f*'s samples against three Euler steps (the card's N at
    its optimum), computed afresh (no training)."""
    s = settings("tiny")
    prob, up = exact_problem(s)
    b = sr.exact_map_batch(prob, up, sr.SRPath(s.sigma_max), 1, torch.Generator().manual_seed(0))
    z = torch.randn(150, prob.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y, lr_up = b.y.expand(150, -1), b.lr_up.expand(150, -1)
    exact_x = prob.exact_map(y, z)
    euler = prob.euler_map(lr_up + s.sigma_max * z, y, lr_up, s.sigma_max, 3)
    fig = go.Figure(
        [
            viz.points_trace(exact_x[:, :2].float(), "f*", style.GRAY, 3),
            viz.points_trace(euler[:, :2].float(), "N = 3 optimum", style.BLUE, 3),
        ]
    )
    fig.update_layout(style.figure_layout(None, 220, keep_view=False))
    return style.thumbnail(fig.update_yaxes(scaleanchor="x", scaleratio=1))
