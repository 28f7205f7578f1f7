"""Chapter 07: AdjointDPM: gradients through the probability-flow ODE with constant memory.

Pan, Liew, Tan, Zhang & Yan 2023, docs/papers.md §07. Time convention: diffusion (t = 0
data, t = 1 noise, :mod:`pflow_explore.paths`); every flow runs in rho = sigma_t / alpha_t
from rho_T down to 0 (:mod:`pflow_explore.adjoint`, which holds the method: the
reparameterized ODE, the three gradient routes, the memory probe, the fine-tuning and the
noise-attack steps). The experiments, each callable on its own: :func:`theory` (the three
gradients against the closed form on Gaussian data, their errors against steps, weight
gradients against finite differences), :func:`memory` (peak memory and time against steps,
measured in child processes), :func:`finetune` (a 2D eps-model fine-tuned through its
sampler to move mass into a box) and :func:`attack` (the security audit: the noise of a
digits model optimised to change a classifier's decision); ``run`` composes the four.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import plotly.graph_objects as go
import torch
from torch import Tensor

from pflow_explore import adjoint as ad
from pflow_explore import experiment, paths, viz
from pflow_explore.claims import Claim, claim_above, claim_below
from pflow_explore.datasets.digits import flat_digits
from pflow_explore.datasets.toy2d import eight_gaussians
from pflow_explore.experiment import Seeds, cache_key, choose, one_thread_on_cpu, presets
from pflow_explore.nets import MLP
from pflow_explore.nets.classifier import load_digits_classifier
from pflow_explore.theory import adjoint as theory_ad
from pflow_explore.theory.gaussian_flow import Derivation, GaussianFlow
from pflow_explore.training import FitResult, fit_cached
from pflow_explore.viz import adjoint_figures as af
from pflow_explore.viz import style

CHAPTER = "adjoint"
VERSION = 1  # part of every cache key: bump when training or evaluation changes
SEEDS = dict(
    theory=(0, 100),
    fd=1,
    init=10,
    init_digits=17,
    train=11,
    data=12,
    sample=13,
    fresh=14,
    attack=15,
    finetune=16,
)
F64 = torch.float64
# the gradient routes compared on Gaussian data: label -> (route, method)
ROUTES = {
    "naive (heun)": ("naive", "heun"),
    "adjoint (heun)": ("adjoint", "heun"),
    "adjoint (rk4)": ("adjoint", "rk4"),
    "torchdiffeq (rk4)": ("torchdiffeq", "rk4"),
}
MEMORY_ROUTES = ("naive", "adjoint", "torchdiffeq")


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter (``scale``: the preset's name)."""

    scale: str
    path: str = "vp_linear"
    rho_max: float = 80.0  # every sampler starts at rho_T = 80 (x_T ~ N(0, I) on a VP path)
    # theory: N(mu, Sigma) in gauss_dim, its exact eps, L = |x_e - target|^2 / 2
    gauss_dim: int = 3
    gauss_points: int = 32
    gauss_rho: float = 40.0
    gauss_cases: int = 3  # random Gaussians
    theory_steps: tuple[int, ...] = (10, 20, 50, 100)
    fd_steps: int = 12  # the tiny MLP's sampler (heun) for the finite-difference check
    # memory and time: MLP(2, mem_hidden, mem_depth), mem_batch points, Euler in rho
    mem_steps: tuple[int, ...] = (10, 25, 50, 100)
    mem_batch: int = 512
    mem_hidden: int = 256
    mem_depth: int = 3
    # fine-tuning a 2D eps-model (eight Gaussians, radius 1, std 0.1)
    hidden: int = 128
    depth: int = 3
    batch: int = 512
    lr: float = 2e-3
    steps: int = 2000
    sample_steps: int = 8  # steps in rho for sampling and the adjoint
    method: str = "rk4"  # their solver (heun at 8 steps: fine-tuning diverged, docs/papers.md)
    ft_route: str = "adjoint"  # the fine-tuning's gradient route
    box_low: tuple[float, float] = (0.35, 0.35)
    box_high: tuple[float, float] = (1.05, 1.05)
    goal_margin: float = 0.15  # the goal pulls samples this far inside the box
    ft_iters: int = 30
    ft_batch: int = 128
    ft_lr: float = 3e-4
    n_eval: int = 2000  # fresh noise for the before / after shares
    # the security audit: a digits eps-model (flat 8x8 MLP) and the shipped classifier
    image_size: int = 8
    digits_hidden: int = 512
    digits_depth: int = 3
    digits_batch: int = 256
    digits_lr: float = 1e-3
    digits_steps: int = 2000
    n_attack: int = 48
    attack_iters: int = 25
    attack_lr: float = 0.1
    proximity: float = 1.0
    kappa: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        need = experiment.require
        experiment.require_counts(self)
        experiment.require_at_least(self, "n_eval n_attack gauss_points", low=8)
        experiment.require_choice(self, "image_size", (8, 16, 32))
        experiment.require_choice(self, "method", ("heun", "dpm2", "rk4"))
        experiment.require_choice(self, "ft_route", ad.ROUTES)
        rates = (self.rho_max, self.gauss_rho, self.lr, self.ft_lr, self.digits_lr)
        need(min(rates) > 0, "rho_max, gauss_rho and the learning rates must be > 0")
        need(
            min(self.attack_lr, self.proximity, self.kappa) >= 0, "attack_lr, proximity, kappa >= 0"
        )
        for name in ("theory_steps", "mem_steps"):
            grid = list(getattr(self, name))
            ok = grid == sorted(set(grid)) and len(grid) >= 2 and grid[0] >= 2
            need(ok, f"{name} must increase strictly from >= 2 (two values at least), got {grid}")
        gap = min(b - a for a, b in zip(self.box_low, self.box_high, strict=True))
        need(gap > 0, "box_low must be < box_high")
        need(0 <= 2 * self.goal_margin < gap, "goal_margin must be >= 0 and leave a box")


SETTINGS = presets(
    Settings,
    tiny=dict(gauss_cases=1, theory_steps=(10, 40), mem_steps=(4, 16), mem_batch=256,
              mem_hidden=128, hidden=64, depth=2, steps=150, ft_iters=6, n_eval=400,
              digits_hidden=128, digits_depth=2, digits_steps=100, n_attack=8, attack_iters=4),
    cpu={},
    gpu=dict(gauss_cases=5, theory_steps=(10, 20, 50, 100, 200), mem_steps=(25, 50, 100, 200),
             mem_batch=4096, mem_hidden=512, hidden=256, steps=10000, ft_iters=100,
             ft_batch=1024, n_eval=20000, image_size=32, digits_hidden=1024, digits_depth=4,
             digits_steps=20000, n_attack=256, attack_iters=50),
)  # fmt: skip
EVAL_THEORY = "gauss_dim gauss_points gauss_rho gauss_cases theory_steps fd_steps seed".split()
EVAL_MEMORY = "path rho_max mem_steps mem_batch mem_hidden mem_depth seed".split()
FIELDS_2D = "path hidden depth batch lr steps seed".split()
EVAL_2D = "rho_max sample_steps method ft_route box_low box_high goal_margin".split() + [
    "ft_iters", "ft_batch", "ft_lr", "n_eval"]  # fmt: skip
FIELDS_DIGITS = (
    "path image_size digits_hidden digits_depth digits_batch digits_lr digits_steps seed"
)
EVAL_DIGITS = "rho_max sample_steps method n_attack attack_iters attack_lr proximity kappa".split()


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


evaluated = experiment.chapter_results(CHAPTER, VERSION)  # cached_result, this chapter's folder


def rel(a: Tensor, b: Tensor) -> float:
    """Relative 2-norm error |a - b| / |b|."""
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm())


def grid(s: Settings, n: int | None = None) -> Tensor:
    """The sampling grid in rho: ``n`` (default ``sample_steps``) steps from rho_max to 0."""
    return ad.rho_grid(s.sample_steps if n is None else n, s.rho_max)


# ---- theory -------------------------------------------------------------------------------
def gaussian_case(s: Settings, k: int) -> ad.GaussianProblem:
    """The k-th random Gaussian problem of the theory check (``adjoint.gaussian_problem``)."""
    return ad.gaussian_problem(10 * s.seed + k, s.gauss_dim, s.gauss_points, s.gauss_rho)


def tiny_mlp(s: Settings) -> tuple[ad.RhoFlow, Tensor, Callable[[Tensor], Tensor]]:
    """A float64 MLP(2, 16, 2) eps-model on the path, 16 points at rho_T = 6, a quadratic loss."""
    torch.manual_seed(s.seed)
    flow = ad.RhoFlow(MLP(2, hidden=16, depth=2, time_dim=8).double(), paths.get_path(s.path))
    gen = Seeds(s.seed, **SEEDS).generator("fd")
    x_T = float(flow.alpha(6.0)) * 6.0 * torch.randn(16, 2, generator=gen, dtype=F64)
    target = torch.tensor([1.0, -0.5], dtype=F64)
    return flow, x_T, lambda x: ((x - target) ** 2).sum(1).mean()


@dataclass
class TheoryResult:
    """Relative errors against the closed form (max over the random Gaussians) per route
    and steps, for dL/dx_T and dL/dmu (a weight of the exact eps); the NFE of each; the
    adjoint's re-solve error of y_T; weight gradients of a tiny MLP against central finite
    differences (naive, heun) and the hand adjoint against a fine rk4 reference."""

    steps: list[int]
    x_T: dict[str, list[float]]
    mean: dict[str, list[float]]
    nfe: dict[str, list[int]]
    reconstruction: list[float]  # adjoint (heun): max |y_T re-solved - y_T| per steps
    fd_error: float  # max relative |autograd - finite difference| over sampled weights
    fd_checked: int
    weights_reached: int  # weight tensors with a non-zero gradient
    weights_total: int
    adjoint_weight_error: float  # adjoint (heun, fd_steps) vs naive rk4 200 steps


def theory_check(s: Settings) -> TheoryResult:
    """See :class:`TheoryResult`."""
    xs = {k: [0.0] * len(s.theory_steps) for k in ROUTES}
    ms, nfe, recon = {k: [0.0] * len(s.theory_steps) for k in ROUTES}, {k: [] for k in ROUTES}, []
    for c in range(s.gauss_cases):
        p = gaussian_case(s, c)
        for j, n in enumerate(s.theory_steps):
            for label, (route, method) in ROUTES.items():
                g = ad.gradients(route, p.flow, p.x_T, ad.rho_grid(n, p.rho_T), p.loss, method)
                xs[label][j] = max(xs[label][j], rel(g.x_T, p.exact_x_T))
                ms[label][j] = max(ms[label][j], rel(g.params[0], p.exact_mean))
                if c == 0:
                    nfe[label].append(g.nfe)
                if c == 0 and label == "adjoint (heun)":
                    recon.append(float(g.reconstruction))
    flow, x_T, loss = tiny_mlp(s)
    params, g12, gen = flow.trainable(), ad.rho_grid(s.fd_steps, 6.0), Seeds(s.seed, **SEEDS)
    worst, checked, reached = ad.finite_difference_check(
        flow, x_T, g12, loss, "heun", generator=gen.generator("fd")
    )
    ref = ad.naive_gradients(flow, x_T, ad.rho_grid(200, 6.0), loss, "rk4")
    hand = ad.adjoint_gradients(flow, x_T, g12, loss, "heun")
    err = max(rel(a, b) for a, b in zip(hand.params, ref.params, strict=True))
    return TheoryResult(
        list(s.theory_steps), xs, ms, nfe, recon, worst, checked, reached, len(params), err
    )


def derivations() -> dict[str, Derivation]:
    """The sympy derivation the chapter shows (``theory.adjoint.scalar_adjoint``)."""
    return {"scalar adjoint": theory_ad.scalar_adjoint()}


def theory(s: Settings) -> TheoryResult:
    """:func:`theory_check`, cached."""
    with one_thread_on_cpu(blas=True):
        return evaluated(TheoryResult, "theory", cache_key(s, EVAL_THEORY), lambda: theory_check(s))


# ---- memory and time ----------------------------------------------------------------------
@dataclass
class MemoryResult:
    """Peak MiB above the set-up model and batch, CPU seconds and NFE of one gradient (x_T
    and every weight) per route and steps; least-squares MiB and CPU ms per step; the probe
    (VmHWM: peak resident size of a fresh child process, or cuda.max_memory_allocated)."""

    steps: list[int]
    peak: dict[str, list[float]]
    cpu: dict[str, list[float]]
    nfe: dict[str, list[int]]
    mib_per_step: dict[str, float]
    ms_per_step: dict[str, float]
    probe: str
    device: str


fit_line = ad.fit_line  # least-squares (slope, intercept)


def memory_check(s: Settings) -> MemoryResult:
    """Each (route, steps) in a fresh child process (:func:`adjoint.gradient_memory`):
    an untrained MLP(2, mem_hidden, mem_depth) (memory does not depend on the weights),
    mem_batch points, Euler steps in rho from rho_max to 0 for all three routes."""
    from pflow_explore.scale import device

    dev = device().type
    peak, cpu, nfe, probe = {}, {}, {}, ""
    for route in MEMORY_ROUTES:
        peak[route], cpu[route], nfe[route] = [], [], []
        for n in s.mem_steps:
            sizes = dict(batch=s.mem_batch, hidden=s.mem_hidden, depth=s.mem_depth)
            job = ad.GradientJob(route, n, "euler", path=s.path, rho_max=s.rho_max,
                                 seed=s.seed, device=dev, **sizes)  # fmt: skip
            m = ad.gradient_memory(job)
            peak[route].append(m.peak_mb)
            cpu[route].append(m.cpu_seconds if dev == "cpu" else m.seconds)
            nfe[route].append(int(m.result["nfe"]))
            probe = m.probe
    xs = [float(n) for n in s.mem_steps]
    mib = {r: fit_line(xs, peak[r])[0] for r in MEMORY_ROUTES}
    ms = {r: 1e3 * fit_line(xs, cpu[r])[0] for r in MEMORY_ROUTES}
    return MemoryResult(list(s.mem_steps), peak, cpu, nfe, mib, ms, probe, dev)


def memory(s: Settings) -> MemoryResult:
    """:func:`memory_check`, cached (measured once per machine's cache)."""
    return evaluated(MemoryResult, "memory", cache_key(s, EVAL_MEMORY), lambda: memory_check(s))


# ---- fine-tuning a 2D model through its sampler -------------------------------------------
def make_net(s: Settings) -> MLP:
    """The 2D eps-model, seeded."""
    torch.manual_seed(Seeds(s.seed, **SEEDS).seed("init"))
    return MLP(2, s.hidden, s.depth)


def train_2d(s: Settings) -> FitResult:
    """An eps-model of eight Gaussians (radius 1, std 0.1), eps matching on the path."""
    mix, path = eight_gaussians(1.0, 0.1), paths.get_path(s.path)
    gen = Seeds(s.seed, **SEEDS).generator("train")

    def loss(m: MLP, step: int) -> Tensor:
        return ad.eps_matching_loss(m, path, mix.sample(s.batch, gen).float(), gen)

    fit_kw = dict(steps=s.steps, lr=s.lr, desc="eps-model, 2D")
    key = cache_key(s, FIELDS_2D)
    return fit_cached(CHAPTER, "eps-2d", key, lambda: make_net(s), loss, version=VERSION, **fit_kw)


def in_box(x: Tensor, s: Settings) -> Tensor:
    """(n,) bool: x inside [box_low, box_high]."""
    lo, hi = torch.tensor(s.box_low, dtype=x.dtype), torch.tensor(s.box_high, dtype=x.dtype)
    return ((x >= lo) & (x <= hi)).all(-1)


def on_mode(x: Tensor) -> Tensor:
    """(n,) bool: within 0.3 (3 std) of one of the eight component means."""
    return torch.cdist(x, eight_gaussians(1.0, 0.1).means.to(x)).min(1).values < 0.3


def modes_held(x: Tensor) -> Tensor:
    """(8,): the share of samples within 0.3 of each component mean."""
    near = torch.cdist(x, eight_gaussians(1.0, 0.1).means.to(x)) < 0.3
    return near.float().mean(0)


@dataclass
class FinetuneResult:
    """In-box share (with binomial SE) and on-mode share (within 3 std of a component)
    before and after fine-tuning, on fresh noise; the goal loss per iteration; the samples."""

    share_before: float
    share_after: float
    se_before: float
    se_after: float
    on_mode_before: float
    on_mode_after: float
    outside_moved: float  # median |after - before| of samples that stay outside the box
    modes_before: int  # components (of 8) holding >= 1% of the samples
    modes_after: int
    losses: list[float]
    nfe_per_iter: int
    before: Tensor  # (n_eval, 2)
    after: Tensor


def finetune_eval(s: Settings, fit: FitResult) -> FinetuneResult:
    """Fine-tune a copy of the trained model for ``ft_iters`` Adam steps on the goal
    distance_to_box(x_e) to the box shrunk by goal_margin (so mass lands inside, not on the
    edge), gradients by the adjoint (heun), a new x_T batch each iteration;
    then sample ``n_eval`` fresh x_T (the same for before and after)."""
    import copy

    seeds, path, g = Seeds(s.seed, **SEEDS), paths.get_path(s.path), grid(s)
    base = ad.RhoFlow(fit.model.eval(), path)
    tuned = ad.RhoFlow(copy.deepcopy(fit.model).eval(), path)
    m = s.goal_margin
    low, high = [v + m for v in s.box_low], [v - m for v in s.box_high]
    goal = lambda x: ad.distance_to_box(x, low, high)  # noqa: E731
    opt, gen = torch.optim.Adam(tuned.trainable(), lr=s.ft_lr), seeds.generator("finetune")
    losses, nfe = [], 0
    for _ in range(s.ft_iters):
        start = tuned.nfe
        x_T = torch.randn(s.ft_batch, 2, generator=gen)
        losses.append(ad.finetune_step(tuned, x_T, g, goal, opt, s.ft_route, s.method).loss)
        nfe = tuned.nfe - start
    x_T = torch.randn(s.n_eval, 2, generator=seeds.generator("fresh"))
    with torch.no_grad():
        before, after = ad.sample(base, x_T, g, s.method), ad.sample(tuned, x_T, g, s.method)
    n = s.n_eval
    pb, pa = float(in_box(before, s).float().mean()), float(in_box(after, s).float().mean())
    se = lambda p: math.sqrt(max(p * (1 - p), 1 / n) / n)  # noqa: E731
    out = ~in_box(after, s)
    moved = float((after[out] - before[out]).norm(dim=1).median()) if out.any() else 0.0
    modes = [float(on_mode(x).float().mean()) for x in (before, after)]
    held = [int((modes_held(x) >= 0.01).sum()) for x in (before, after)]
    return FinetuneResult(pb, pa, se(pb), se(pa), *modes, moved, *held, losses, nfe,
                          before.clone(), after.clone())  # fmt: skip


def finetune(s: Settings) -> FinetuneResult:
    """Train (or load) the 2D model, then fine-tune and evaluate it (cached)."""
    with one_thread_on_cpu(blas=True):
        fit = train_2d(s)
        key = cache_key(s, FIELDS_2D + EVAL_2D)
        return evaluated(FinetuneResult, "finetune", key, lambda: finetune_eval(s, fit))


# ---- the security audit -------------------------------------------------------------------
def train_digits(s: Settings) -> FitResult:
    """An eps-model of flat digits (size^2 dims in [-1, 1]): MLP, eps matching on the path."""
    x, _, _ = flat_digits(s.image_size)
    path, d = paths.get_path(s.path), s.image_size**2
    gen = Seeds(s.seed, **SEEDS).generator("data")

    def loss(m: MLP, step: int) -> Tensor:
        idx = torch.randint(len(x), (s.digits_batch,), generator=gen)
        return ad.eps_matching_loss(m, path, x[idx], gen)

    def make() -> MLP:
        torch.manual_seed(Seeds(s.seed, **SEEDS).seed("init_digits"))
        return MLP(d, s.digits_hidden, s.digits_depth)

    key = cache_key(s, FIELDS_DIGITS.split())
    fit_kw = dict(steps=s.digits_steps, lr=s.digits_lr, desc="eps-model, digits")
    return fit_cached(CHAPTER, "eps-digits", key, make, loss, version=VERSION, **fit_kw)


def classify(x: Tensor, size: int) -> Tensor:
    """Logits (n, 10) of the shipped classifier on flat images (n, size^2)."""
    return load_digits_classifier()(x.clamp(-1, 1).reshape(-1, 1, size, size))


@dataclass
class AttackResult:
    """The audit on n_attack samples: success (decision changed after the attack) with its
    binomial SE; the margin per iteration; how far x_T moved (RMS over its own RMS) and the
    images (RMS pixel change, range [-1, 1]); each image's distance to its nearest training
    digit before and after (the manifold); the labels and a few image pairs."""

    success: float
    success_se: float
    margins: list[float]
    noise_moved: float
    image_moved: float
    nearest_before: float
    nearest_after: float
    labels_before: list[int]
    labels_after: list[int]
    images_before: Tensor  # (k, 1, S, S)
    images_after: Tensor


def attack_run(s: Settings, fit: FitResult, iters: int | None = None) -> AttackResult:
    """Untargeted Carlini-Wagner margin (kappa) against the classifier's own label of each
    sample, plus ``proximity`` x the squared distance of x_T to its start (units of s_T),
    Adam on x_T with attack_lr, gradients by the adjoint (heun); ``iters`` overrides
    attack_iters (0: the negative control)."""
    size, d = s.image_size, s.image_size**2
    flow, g = ad.RhoFlow(fit.model.eval(), paths.get_path(s.path)), grid(s)
    for p in flow.trainable():
        p.requires_grad_(False)  # only x_T moves: no weight gradients to compute
    start = torch.randn(s.n_attack, d, generator=Seeds(s.seed, **SEEDS).generator("attack"))
    with torch.no_grad():
        before = ad.sample(flow, start, g, s.method)
        labels = classify(before, size).argmax(1)
    x_T = start.clone().requires_grad_(True)
    opt, margins = torch.optim.Adam([x_T], lr=s.attack_lr), []
    objective = lambda x: ad.margin_loss(classify(x, size), labels, kappa=s.kappa)  # noqa: E731
    for _ in range(s.attack_iters if iters is None else iters):
        args = (objective, opt, start, s.proximity, "adjoint", s.method)
        margins.append(ad.noise_attack_step(flow, x_T, g, *args).loss)
    with torch.no_grad():
        after = ad.sample(flow, x_T.detach(), g, s.method)
        new = classify(after, size).argmax(1)
    ok = (new != labels).float()
    p, n = float(ok.mean()), s.n_attack
    train, _, _ = flat_digits(size)
    near = lambda x: float(torch.cdist(x.clamp(-1, 1), train).min(1).values.mean() / math.sqrt(d))  # noqa: E731
    rms = lambda v: float(v.pow(2).mean().sqrt())  # noqa: E731
    k, shape = min(8, n), (-1, 1, size, size)
    moved = rms(x_T.detach() - start) / rms(start), rms(after.clamp(-1, 1) - before.clamp(-1, 1))
    pictures = [x[:k].clamp(-1, 1).reshape(shape).clone() for x in (before, after)]
    return AttackResult(p, math.sqrt(max(p * (1 - p), 1 / n) / n), margins, *moved, near(before),
                        near(after), labels.tolist(), new.tolist(), *pictures)  # fmt: skip


def attack(s: Settings) -> AttackResult:
    """Train (or load) the digits model, then run the audit (cached)."""
    with one_thread_on_cpu(blas=True):
        fit = train_digits(s)
        key = cache_key(s, FIELDS_DIGITS.split() + EVAL_DIGITS)
        return evaluated(AttackResult, "attack", key, lambda: attack_run(s, fit))


# ---- the chapter --------------------------------------------------------------------------
@dataclass
class Results(experiment.ChapterResults):
    """What the chapter shows: the theory check, memory, fine-tuning and the attack audit."""

    theory: TheoryResult
    memory: MemoryResult
    finetune: FinetuneResult
    attack: AttackResult


EXPERIMENTS = {"theory": theory, "memory": memory, "fine-tuning": finetune, "attack": attack}


prepare, run = experiment.chapter_steps(EXPERIMENTS, Results)


# ---- claims -------------------------------------------------------------------------------
def claims_theory(th: TheoryResult, sc: str) -> list[Claim]:
    """Agreement with the closed form at the most steps; shrinking errors; weights vs FD."""
    top, out = th.steps[-1], []
    worst = max(max(v[-1] for v in th.x_T.values()), max(v[-1] for v in th.mean.values()))
    note = "; ".join(f"{k}: dL/dx_T {', '.join(f'{e:.1e}' for e in v)}" for k, v in th.x_T.items())
    name = f"closed form, naive, adjoint, torchdiffeq agree at {top} steps (max rel. error)"
    paper = "the adjoint gives the gradients of the PF-ODE (dL/dx_T, dL/dtheta)"
    out.append(claim_below(name, paper, worst, 1e-2, sc, note + f"; steps {th.steps}"))
    shrink = min(v[0] / max(v[-1], 1e-300) for v in th.x_T.values())
    name = f"errors shrink with steps: min over routes of error({th.steps[0]}) / error({top})"
    out.append(claim_above(name, "error O(h^p) of the solver", shrink, 10.0, sc))
    note = (
        f"{th.fd_checked} weights, central differences h = 1e-6; weight tensors reached "
        f"{th.weights_reached}/{th.weights_total}; adjoint (heun) vs fine rk4 reference: "
        f"{th.adjoint_weight_error:.2e}"
    )
    name = "tiny MLP: weight gradients vs finite differences (max rel. error)"
    out.append(claim_below(name, "dL/dtheta by backpropagation", th.fd_error, 1e-4, sc, note))
    return out


def claims_memory(m: MemoryResult, sc: str) -> list[Claim]:
    """Naive memory grows linearly in steps; the adjoint's is flat (fitted slopes)."""
    note = f"probe {m.probe} ({m.device}); steps {m.steps}; peak MiB: " + "; ".join(
        f"{r} {', '.join(f'{v:.1f}' for v in m.peak[r])}" for r in MEMORY_ROUTES
    )
    naive, adj = m.mib_per_step["naive"], m.mib_per_step["adjoint"]
    out = [
        claim_above(
            "naive backprop: peak memory per step (MiB)",
            "memory grows with the number of steps",
            naive,
            1.0,
            sc,
            note,
        )
    ]
    ratio = max(adj, m.mib_per_step["torchdiffeq"]) / naive if naive > 0 else math.inf
    note = (
        f"MiB/step: naive {naive:.3f}, adjoint {adj:.3f}, torchdiffeq "
        f"{m.mib_per_step['torchdiffeq']:.3f}; CPU ms/step: "
        + ", ".join(f"{r} {v:.1f}" for r, v in m.ms_per_step.items())
    )
    name = "adjoint memory slope / naive slope (worst of hand and torchdiffeq)"
    return out + [
        claim_below(name, "constant memory in the number of steps", ratio, 0.05, sc, note)
    ]


def claim_finetune(f: FinetuneResult, s: Settings) -> Claim:
    """The in-box share after fine-tuning, above 1/2 and above before, beyond 2 SE."""
    gain = f.share_after - f.share_before
    se = math.sqrt(f.se_after**2 + f.se_before**2)
    note = (
        f"in-box share {f.share_before:.3f} +- {f.se_before:.3f} -> {f.share_after:.3f} +- "
        f"{f.se_after:.3f} ({s.n_eval} fresh x_T); on a mode {f.on_mode_before:.3f} -> "
        f"{f.on_mode_after:.3f}; components holding >= 1%: {f.modes_before} -> "
        f"{f.modes_after} of 8; outside samples moved {f.outside_moved:.3f} (median); "
        f"{s.ft_iters} Adam steps, {f.nfe_per_iter} NFE each"
    )
    name = "fine-tuning through the sampler: in-box share after (goal > 0.5)"
    ok = claim_above(
        name,
        "fine-tune the weights for a differentiable goal",
        f.share_after,
        0.5,
        s.scale,
        note,
        se=f.se_after,
    )
    return replace(ok, holds=ok.holds and gain > 2 * se)


def claim_attack(a: AttackResult, s: Settings) -> Claim:
    """The attack success rate above 1/2 beyond 2 binomial SE."""
    note = (
        f"{s.n_attack} samples, {s.attack_iters} Adam steps on x_T; x_T moved "
        f"{a.noise_moved:.3f} of its RMS, images {a.image_moved:.3f} RMS per pixel; nearest "
        f"training digit {a.nearest_before:.3f} -> {a.nearest_after:.3f} (RMS per pixel)"
    )
    name = "security audit: share of decisions changed by optimising x_T"
    paper = "adversarial noise x_T exists that changes a classifier's decision"
    return claim_above(name, paper, a.success, 0.5, s.scale, note, se=a.success_se)


def claim_attack_close(a: AttackResult, s: Settings) -> Claim:
    """The attacked images stay near their originals: RMS pixel change below 0.25 (pixels in
    [-1, 1]; an eighth of the range), i.e. the decision changes, not the digit."""
    note = (
        f"x_T moved {a.noise_moved:.3f} of its RMS (proximity {s.proximity:g}); nearest "
        f"training digit {a.nearest_before:.3f} -> {a.nearest_after:.3f} (RMS per pixel)"
    )
    name = "security audit: RMS pixel change of the attacked images"
    paper = "adversarial samples stay close to the originals"
    return claim_below(name, paper, a.image_moved, 0.25, s.scale, note)


def claims(r: Results) -> list[Claim]:
    """The paper's claims at this scale; criteria fixed before measuring."""
    s = replace(r.settings, scale=r.scale)
    out = claims_theory(r.theory, r.scale) + claims_memory(r.memory, r.scale)
    return out + [claim_finetune(r.finetune, s), claim_attack(r.attack, s),
                  claim_attack_close(r.attack, s)]  # fmt: skip


# ---- figures ------------------------------------------------------------------------------
COLORS = {
    "naive": style.RED,
    "adjoint": style.BLUE,
    "torchdiffeq": style.GREEN,
    "naive (heun)": style.RED,
    "adjoint (heun)": style.BLUE,
    "adjoint (rk4)": "#9467bd",
    "torchdiffeq (rk4)": style.GREEN,
}


def error_figure(th: TheoryResult) -> go.Figure:
    """Relative error of dL/dx_T against the closed form, per route, against steps."""
    title = "dL/dx_T: relative error vs the closed form (worst Gaussian)"
    color = {k: COLORS.get(k, style.BLUE) for k in th.x_T}
    traces = [viz.curve_trace(th.steps, v, k, line=dict(color=color[k])) for k, v in th.x_T.items()]
    axes = dict(x_title="steps", y_title="relative error", log_x=True, log_y=True, height=360)
    return viz.curves_figure(traces, title, **axes)


def memory_figure(m: MemoryResult) -> go.Figure:
    """Peak memory (left) and CPU time (right) against steps, per route."""
    return af.memory_time_figure(m.steps, m.peak, m.cpu, COLORS, f"One gradient ({m.probe})")


def finetune_figure(f: FinetuneResult, s: Settings) -> go.Figure:
    """Samples before and after fine-tuning (same x_T), and the box."""
    title = f"In the box: {f.share_before:.0%} before, {f.share_after:.0%} after fine-tuning"
    return af.box_figure(f.before, f.after, s.box_low, s.box_high, title)


def attack_figure(a: AttackResult) -> go.Figure:
    """Top: samples before the attack; bottom: after (same start), with the class labels."""
    k = len(a.images_before)
    titles = [f"{a.labels_before[i]}" for i in range(k)] + [
        f"-> {a.labels_after[i]}" for i in range(k)
    ]
    return viz.image_grid_figure(
        torch.cat([a.images_before, a.images_after]),
        nrow=k,
        titles=titles,
        tile_px=48,
        title="Before / after the noise attack",
    )


def figures(r: Results) -> dict[str, go.Figure]:
    """The chapter's figures by name (what ``pflow-explore figures`` writes)."""
    return {
        "gradient_error": error_figure(r.theory),
        "memory": memory_figure(r.memory),
        "finetune": finetune_figure(r.finetune, r.settings),
        "attack": attack_figure(r.attack),
    }


def preview() -> go.Figure:
    """The reparameterized flow (1) of 2D Gaussian data with its exact eps, 60 paths of 12
    Heun steps in rho (no training, no memory probe: computed afresh in milliseconds)."""
    gauss = GaussianFlow.random(2, 0)
    flow = ad.RhoFlow(theory_ad.GaussianEps.from_flow(gauss, paths.VPLinear()), paths.VPLinear())
    x_T = torch.randn(60, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    xs = [x_T] + [st.x_next for st in ad.rho_steps(flow, x_T, ad.rho_grid(12, 20.0), "heun")]
    traj = torch.stack(xs).float()
    lines = viz.trajectories_trace(traj, "paths", "rgba(31,119,180,0.35)")
    fig = go.Figure([lines, viz.points_trace(traj[-1], "x_e", style.BLUE, 3)])
    fig.update_layout(style.figure_layout(None, 220, keep_view=False))
    return style.thumbnail(fig.update_yaxes(scaleanchor="x", scaleratio=1))
