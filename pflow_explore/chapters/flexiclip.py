"""Chapter 10: FlexiClip: smooth, locality-preserving clipart animation with Bezier
trajectories and temporal Jacobians.

Khandelwal (2025), docs/papers.md §10. Time convention: physical time of the animation, the
clip time tau in [0, 1], frame f at tau_f = f / (F - 1), frame 0 the clipart itself; the
motion prior is a flow (t = 0 noise, t = 1 data) as in :mod:`flow_matching`. The geometry is
in :mod:`animation` (Bezier curves, the clipart mesh, Jacobians, ARAP, Poisson recovery,
the Jacobian ODE, a soft rasterizer), the prior in :mod:`motion_prior`, the clips in
:mod:`datasets.motions`. The experiments:
:func:`theory` (the geometry against independent numerics), :func:`train_prior` and
:func:`experiment_prior` (a flow-matching prior over walk / wave / jump keypoint clips, its
exact log-likelihood), and :func:`experiment_animation` (the ablation: Bezier + ARAP only
-> + temporal Jacobians -> + the log-probability term, on every character and motion).
The paper's video diffusion model is replaced by the tiny motion prior: the toy can show
temporal and geometric regularity, not text alignment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import plotly.graph_objects as go
import torch
from torch import Tensor

from pflow_explore import animation as an
from pflow_explore import experiment
from pflow_explore import motion_prior as mp
from pflow_explore.claims import Claim, claim_above, claim_below
from pflow_explore.datasets.motions import JOINTS, MOTIONS, labelled_clips
from pflow_explore.experiment import (
    Seeds,
    cache_key,
    choose,
    lazy_tensors,
    one_thread_on_cpu,
    presets,
)
from pflow_explore.flow_matching import rectified_flow_loss, uniform_time
from pflow_explore.training import FitResult, fit_cached
from pflow_explore.viz import animation_figures as af
from pflow_explore.viz import style

CHAPTER = "flexiclip"
VERSION = 2  # part of every cache key: bump when training or evaluation changes
SEEDS = dict(theory=0, init=1, data=2, train=3, anim=(10, 1), eval=4, held=5)
VARIANTS = ("Bezier + ARAP", "+ temporal Jacobians", "+ log-prob term")
METRICS = (
    "jerk",
    "ARAP distortion",
    "area distortion",
    "skeleton error",
    "frame-0 error",
    "log-lik / dim",
)


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter (``scale``: the preset's name)."""

    scale: str
    frames: int = 16
    spacing: float = 0.08  # mesh resolution (distance between mesh points)
    characters: tuple[str, ...] = ("stick", "chubby", "kid")
    motions: tuple[str, ...] = MOTIONS
    seeds: tuple[int, ...] = (0,)  # animation seeds per (character, motion)
    clip_scale: float = 3.0  # displacements are multiplied by this for the prior
    # the motion prior (flow matching on keypoint clips)
    n_clips: int = 3000
    hidden: int = 256
    depth: int = 3
    batch: int = 256
    lr: float = 1e-3
    steps: int = 1000
    n_held: int = 30  # held-out clips for the log-likelihood check
    loglik_steps: int = 6  # rk4 steps of the exact log-likelihood
    # the animation (Adam on Bezier controls and the Jacobian ODE)
    iters: int = 40
    lr_bezier: float = 0.01
    lr_ode: float = 3e-3
    arap_iters: int = 2
    kappa: float = 8.0
    ode_hidden: int = 32
    ode_method: str = "midpoint"  # torchdiffeq's fixed-grid method over the frames
    w_skeleton: float = 20.0
    w_pose: float = 1.0  # || J - sg(J^pose) ||_1
    w_logp: float = 0.05  # (log p~(x_J) - sg(log p~(x_pose)))^2
    n_logp: int = 4  # (t, z) draws of the log-probability surrogate
    raster: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        need = experiment.require
        experiment.require_at_least(self, "n_clips batch steps iters n_logp loglik_steps", low=1)
        experiment.require_at_least(self, "frames n_held raster", low=3)
        need(0.005 <= self.spacing <= 0.2, f"spacing must lie in [0.005, 0.2], got {self.spacing}")
        need(
            set(self.characters) <= set(an.CHARACTERS) and len(self.characters) >= 1,
            f"characters must be some of {list(an.CHARACTERS)}",
        )
        need(
            set(self.motions) <= set(MOTIONS) and len(self.motions) >= 1,
            f"motions must be some of {MOTIONS}",
        )
        need(len(self.seeds) >= 1, "seeds: at least one")
        experiment.require_choice(self, "ode_method", ("euler", "midpoint", "rk4"))
        need(
            min(self.lr, self.lr_bezier, self.lr_ode, self.kappa, self.clip_scale) > 0,
            "learning rates, kappa and clip_scale must be > 0",
        )


SETTINGS = presets(
    Settings,
    tiny=dict(
        frames=8,
        spacing=0.1,
        characters=("stick",),
        motions=("walk", "jump"),
        n_clips=300,
        hidden=64,
        depth=2,
        steps=60,
        n_held=6,
        loglik_steps=2,
        iters=6,
        raster=16,
    ),
    cpu={},
    # the animation's ops are small and run on the CPU at every scale (launch-bound on a GPU):
    # sized from CPU timings (~0.1 s per step at this mesh) for ~10 min on a 16-core host
    gpu=dict(
        frames=24,
        spacing=0.05,
        n_clips=20000,
        hidden=512,
        depth=4,
        steps=8000,
        n_held=100,
        loglik_steps=12,
        iters=200,
        arap_iters=3,
        raster=48,
    ),
)
FIELDS_PRIOR = "frames clip_scale n_clips hidden depth batch lr steps seed".split()
FIELDS_ANIM = (
    "spacing characters motions seeds iters lr_bezier lr_ode arap_iters kappa "
    "ode_hidden ode_method w_skeleton w_pose w_logp n_logp raster loglik_steps"
).split()


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


evaluated = experiment.chapter_results(CHAPTER, VERSION)  # cached_result, this chapter's folder


def cases(s: Settings) -> list[tuple[str, str, int]]:
    """(character, motion, seed) of every animation."""
    return [(c, m, k) for c in s.characters for m in s.motions for k in s.seeds]


# ---- theory -------------------------------------------------------------------------------
@dataclass
class TheoryCheck:
    """The geometry against independent numerics on random inputs (float64)."""

    bezier_fd_error: float  # max |exact derivative - central difference| (orders 1, 2)
    poisson_error: float  # max |Poisson(own Jacobians) - mesh| over random deformations
    rigid_arap: float  # max ARAP energy of random rotations + translations
    rigid_arap_deform: float  # max |ARAP(rigidly moved handles) - rigidly moved mesh|
    raster_grad_error: float  # relative |autograd - finite difference| of the rasterizer
    ode_lag: float  # |J(1) - J^pose(1)| of the untrained Jacobian ODE on a pose ramp


def theory_check(s: Settings) -> TheoryCheck:
    """See :class:`TheoryCheck`; three random draws each."""
    gen = Seeds(s.seed, **SEEDS).generator("theory")
    f64, errs = torch.float64, []
    for _ in range(3):
        P, tau, h = (
            torch.randn(5, 4, 2, generator=gen, dtype=f64),
            torch.rand(7, generator=gen, dtype=f64),
            1e-5,
        )
        for k in (1, 2):
            fd = (an.bezier(P, tau + h, k - 1) - an.bezier(P, tau - h, k - 1)) / (2 * h)
            errs.append(float((an.bezier(P, tau, k) - fd).abs().max()))
    clip = an.make_clipart(s.characters[0], s.spacing)
    V0 = clip.vertices.double()
    system = an.PoissonSystem(V0, clip.faces)
    handle_system = an.PoissonSystem(V0, clip.faces, clip.handles)
    poisson, rigid, deform = [], [], []
    for _ in range(3):
        V = V0 + 0.05 * torch.randn(V0.shape, generator=gen, dtype=f64)
        J = an.jacobians(V0, V, clip.faces)
        poisson.append(float((system.solve(J, V.mean(0)) - V).abs().max()))
        R = an.rotation(2 * math.pi * torch.rand((), generator=gen, dtype=f64))
        b = torch.randn(2, generator=gen, dtype=f64)
        Vr = V0 @ R.T + b
        rigid.append(float(an.arap_energy(an.jacobians(V0, Vr, clip.faces), system.weights)))
        Vd, _ = an.arap_deform(clip, handle_system, clip.keypoints.double() @ R.T + b)
        deform.append(float((Vd - Vr).abs().max()))
    V = V0.clone().requires_grad_(True)
    img = lambda W: an.soft_rasterize(W, clip.faces, 16, 0.05)
    (grad,) = torch.autograd.grad(img(V).sum(), V)
    i, d = int(grad.abs().argmax()) // 2, torch.zeros_like(V0)
    d[i] = torch.randn(2, generator=gen, dtype=f64)
    fd = (img(V0 + 1e-6 * d).sum() - img(V0 - 1e-6 * d).sum()) / 2e-6
    raster = float((fd - (grad * d).sum()).abs() / fd.abs().clamp_min(1e-12))
    tau = torch.linspace(0, 1, s.frames, dtype=torch.float32)
    pose = an.rotation(tau * 0.5)[:, None].expand(-1, 4, 2, 2)  # a steady turn
    J = an.JacobianODE(s.ode_hidden, s.kappa)(pose, tau).detach()
    return TheoryCheck(
        max(errs),
        max(poisson),
        max(rigid),
        max(deform),
        raster,
        float((J[-1] - pose[-1]).abs().max()),
    )


def theory(s: Settings) -> TheoryCheck:
    """:func:`theory_check`, cached."""
    with one_thread_on_cpu(blas=True):
        key = cache_key(s, ["spacing", "frames", "kappa", "ode_hidden", "seed"], c=s.characters[0])
        return evaluated(TheoryCheck, "theory", key, lambda: theory_check(s))


# ---- the motion prior ---------------------------------------------------------------------
def flat(d: Tensor, s: Settings) -> Tensor:
    """Displacement clips (n, K, F, 2) -> the prior's flat, scaled inputs (n, K F 2)."""
    return (d * s.clip_scale).flatten(1)


def train_prior(s: Settings) -> FitResult:
    """Flow matching on labelled walk / wave / jump clips (cached)."""
    seeds = Seeds(s.seed, **SEEDS)

    def data() -> tuple[Tensor, Tensor]:
        clips, labels = labelled_clips(s.n_clips, s.frames, seeds.generator("data"))
        return flat(clips, s), labels

    prior_data = lazy_tensors("cpu", data)  # made at the first step: a cached prior needs none
    gen = seeds.generator("train")

    def loss(model: torch.nn.Module, step: int) -> Tensor:
        x1, labels = prior_data()
        i = torch.randint(len(x1), (s.batch,), generator=gen)
        x0 = torch.randn(s.batch, x1.shape[1], generator=gen)
        return rectified_flow_loss(
            model, x0, x1[i], uniform_time(s.batch, 0.0, gen, x1.device), labels[i]
        )

    make = lambda: (
        torch.manual_seed(seeds["init"]),
        mp.make_prior(len(JOINTS) * s.frames * 2, s.hidden, s.depth),  # flat (K F 2) clips
    )[1]
    with one_thread_on_cpu(blas=True):
        return fit_cached(
            CHAPTER,
            "prior",
            cache_key(s, FIELDS_PRIOR),
            make,
            loss,
            version=VERSION,
            steps=s.steps,
            lr=s.lr,
            desc="motion prior",
        )


@dataclass
class PriorResult:
    """Exact log-likelihood per dimension of held-out clips (with their own label), of the
    same clips with their frames shuffled (a motion with the same poses but no smooth
    time), and of the still clip (all zeros), under the trained prior."""

    losses: list[float]
    held: list[float]
    shuffled: list[float]
    still: list[float]


def evaluate_prior(s: Settings, v: torch.nn.Module) -> PriorResult:
    """See :class:`PriorResult`; ``n_held`` clips, every motion in turn."""
    seeds = Seeds(s.seed, **SEEDS)
    clips, labels = labelled_clips(s.n_held, s.frames, seeds.generator("held"))
    perm = torch.randperm(s.frames - 1, generator=seeds.generator("eval")) + 1
    shuffled = clips.clone()
    shuffled[:, :, 1:] = clips[:, :, perm]
    d = flat(clips, s).shape[1]
    ll = lambda x: (mp.log_likelihood(v, flat(x, s), labels, s.loglik_steps) / d).tolist()
    return PriorResult([], ll(clips), ll(shuffled), ll(torch.zeros_like(clips)))


def experiment_prior(s: Settings) -> tuple[FitResult, PriorResult]:
    """Train (or load) the prior, then measure it (cached)."""
    fit = train_prior(s)
    with one_thread_on_cpu(blas=True):
        key = cache_key(s, FIELDS_PRIOR + ["n_held", "loglik_steps"])
        r = evaluated(PriorResult, "eval-prior", key, lambda: evaluate_prior(s, fit.model.eval()))
    r.losses = fit.losses
    return fit, r


# ---- the animation (FlexiClip's optimisation) ---------------------------------------------
@dataclass
class Animation:
    """One optimised animation: vertices (F, N, 2), keypoints (F, K, 2), controls (K, 4, 2)."""

    vertices: Tensor
    keypoints: Tensor
    controls: Tensor


def animate(
    clip: an.Clipart, prior: torch.nn.Module, motion: str, variant: int, s: Settings, seed: int
) -> Animation:
    """Optimise the keypoints' cubic Bezier controls (P_0 fixed at the clipart) by score
    distillation from the prior and the skeleton-length loss; variant 0 poses the mesh by
    ARAP from the keypoints (AniClipart-like); variant 1 integrates the Jacobian ODE from the
    pose Jacobians and recovers the vertices by Poisson (+ ||J - sg(J^pose)||_1); variant 2
    adds the log-probability term (surrogate log p of the corrected vs the pose-only motion)."""
    gen = Seeds(s.seed, **SEEDS).generator("anim", seed)
    tau = torch.linspace(0, 1, s.frames)
    handles = an.PoissonSystem(clip.vertices, clip.faces, clip.handles)
    poisson = an.PoissonSystem(clip.vertices, clip.faces)
    controls = an.still_controls(clip.keypoints)
    free = torch.nn.Parameter(
        controls[:, 1:] + 0.01 * torch.randn(controls[:, 1:].shape, generator=gen)
    )
    torch.manual_seed(seed)
    ode = an.JacobianODE(s.ode_hidden, s.kappa)
    opt = torch.optim.Adam(
        [{"params": [free], "lr": s.lr_bezier}, {"params": ode.parameters(), "lr": s.lr_ode}]
    )
    y = torch.tensor([MOTIONS.index(motion)])
    t_lp, z_lp = torch.rand(s.n_logp, generator=gen), None
    clip_of = lambda kp: flat((kp - clip.keypoints).transpose(0, 1)[None], s)  # (F, K, 2) -> (1, d)

    def forward() -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        P = torch.cat([controls[:, :1], free], 1)
        targets = an.bezier(P, tau).transpose(0, 1)  # (F, K, 2)
        V_pose, J_pose = an.arap_deform(clip, handles, targets, s.arap_iters)
        kp_pose = V_pose[:, clip.handles]
        if variant == 0:
            return P, V_pose, kp_pose, J_pose, J_pose, kp_pose
        J = ode(J_pose, tau, s.ode_method)
        V = poisson.solve(J, V_pose.mean(-2))
        return P, V, V[:, clip.handles], J, J_pose, kp_pose

    for _ in range(s.iters):
        P, V, kp, J, J_pose, kp_pose = forward()
        x = clip_of(kp)
        loss = mp.sds_loss(prior, x, y, gen) / x.shape[1]
        loss = loss + s.w_skeleton * an.skeleton_loss(kp, clip.keypoints).mean()
        if variant >= 1:
            loss = loss + s.w_pose * (J - J_pose.detach()).abs().mean()
        if variant >= 2:
            z_lp = torch.randn(s.n_logp, x.shape[1], generator=gen) if z_lp is None else z_lp
            both = torch.cat([x, clip_of(kp_pose)])
            lp = mp.surrogate_log_prob(prior, both, y.repeat(2), t_lp, z_lp) / x.shape[1]
            loss = loss + s.w_logp * (lp[0] - lp[1].detach()) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        P, V, kp, *_ = forward()
    return Animation(V.detach().float().clone(), kp.detach().float().clone(), P.detach().clone())


def measure(
    anim: Animation, clip: an.Clipart, prior: torch.nn.Module, motion: str, s: Settings
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one animation."""
    w = an.areas(clip.vertices, clip.faces).abs()
    J = an.jacobians(clip.vertices, anim.vertices, clip.faces)
    img = lambda V: an.soft_rasterize(V, clip.faces, s.raster, 0.02)
    x = flat((anim.keypoints - clip.keypoints).transpose(0, 1)[None], s)
    ll = mp.log_likelihood(prior, x, torch.tensor([MOTIONS.index(motion)]), s.loglik_steps)
    return {
        "jerk": float(an.jerk(anim.vertices)),
        "ARAP distortion": float(an.arap_energy(J, w).mean()),
        "area distortion": float(an.area_distortion(J, w).mean()),
        "skeleton error": float(an.skeleton_length_error(anim.keypoints, clip.keypoints).mean()),
        "frame-0 error": float((img(anim.vertices[0]) - img(clip.vertices)).abs().mean()),
        "log-lik / dim": float(ll[0]) / x.shape[1],
    }


@dataclass
class AnimationResult:
    """metrics[variant][metric]: one value per case (:func:`cases`); the still clip's
    log-likelihood per case; the animations of seed 0 for the explorer:
    animations["character/motion/variant"] = (vertices, keypoints, controls)."""

    cases: list[str]
    metrics: dict[str, dict[str, list[float]]]
    still_loglik: list[float]
    animations: dict[str, list[Tensor]]


def evaluate_animation(s: Settings, prior: torch.nn.Module) -> AnimationResult:
    """Every case, every variant (see :func:`animate`), measured."""
    metrics = {v: {m: [] for m in METRICS} for v in VARIANTS}
    anims, still, names = {}, [], []
    for character, motion, seed in cases(s):
        clip = an.make_clipart(character, s.spacing)
        names.append(f"{character}/{motion}/{seed}")
        zero = flat(torch.zeros(1, len(clip.keypoints), s.frames, 2), s)
        still.append(
            float(
                mp.log_likelihood(
                    prior, zero, torch.tensor([MOTIONS.index(motion)]), s.loglik_steps
                )[0]
            )
            / zero.shape[1]
        )
        for i, variant in enumerate(VARIANTS):
            a = animate(clip, prior, motion, i, s, seed)
            for m, val in measure(a, clip, prior, motion, s).items():
                metrics[variant][m].append(val)
            if seed == s.seeds[0]:
                anims[f"{character}/{motion}/{variant}"] = [a.vertices, a.keypoints, a.controls]
    return AnimationResult(names, metrics, still, anims)


def experiment_animation(s: Settings) -> AnimationResult:
    """The ablation with the trained prior (cached)."""
    fit = train_prior(s)
    with one_thread_on_cpu(blas=True):
        key = cache_key(s, FIELDS_PRIOR + FIELDS_ANIM)
        return evaluated(
            AnimationResult, "animation", key, lambda: evaluate_animation(s, fit.model.eval())
        )


def mean_se(values: list[float]) -> tuple[float, float]:
    """(mean, standard error) of a list (SE 0 for one value)."""
    t = torch.tensor(values, dtype=torch.float64)
    se = float(t.std() / math.sqrt(len(t))) if len(t) > 1 else 0.0
    return float(t.mean()), se


def paired(r: AnimationResult, metric: str, a: str, b: str) -> tuple[float, float]:
    """(mean, SE) over cases of metric(a) - metric(b): the paired difference."""
    return mean_se([x - y for x, y in zip(r.metrics[a][metric], r.metrics[b][metric], strict=True)])


# ---- the chapter --------------------------------------------------------------------------
@dataclass
class Results(experiment.ChapterResults):
    """What the chapter shows: the theory check, the motion prior and the animation ablation."""

    theory: TheoryCheck
    prior: PriorResult
    animation: AnimationResult


EXPERIMENTS = {
    "theory check": theory,
    "motion prior": lambda s: experiment_prior(s)[1],
    "animation ablation": experiment_animation,
}


prepare, run = experiment.chapter_steps(EXPERIMENTS, Results)


# ---- claims -------------------------------------------------------------------------------
def claims_theory(th: TheoryCheck, sc: str) -> list[Claim]:
    """The geometry's identities (labelled identities: they check the code, not the paper)."""
    rows = [
        ("Bezier derivatives exact (max |exact - central difference|)", th.bezier_fd_error, 1e-6),
        ("identity: Poisson recovers the mesh from its own Jacobians", th.poisson_error, 1e-8),
        ("identity: ARAP energy of random rigid motions", th.rigid_arap, 1e-10),
        ("identity: ARAP from rigidly moved handles = the moved mesh", th.rigid_arap_deform, 1e-6),
        ("soft rasterizer: autograd vs finite difference (relative)", th.raster_grad_error, 1e-4),
    ]
    return [claim_below(n, "the geometry (Poisson / ARAP / Bezier)", v, b, sc) for n, v, b in rows]


def claims_prior(p: PriorResult, sc: str) -> list[Claim]:
    """The trained prior prefers real motion clips to the same poses in shuffled time."""
    diff, se = mean_se([a - b for a, b in zip(p.held, p.shuffled, strict=True)])
    note = (
        f"exact log-likelihood per dim: held-out {mean_se(p.held)[0]:.3f}, shuffled "
        f"{mean_se(p.shuffled)[0]:.3f}, still {mean_se(p.still)[0]:.3f}; {len(p.held)} clips"
    )
    name = "prior: log-lik / dim of real clips - frame-shuffled clips"
    return [claim_above(name, "the prior scores temporal coherence", diff, 0.0, sc, note, se=se)]


def claims_animation(r: AnimationResult, s: Settings) -> list[Claim]:
    """Jerk and distortion with / without temporal Jacobians; skeleton error; the log-prob
    term; the prior moved the animation; frame 0 is the clipart."""
    sc, n, out = s.scale, len(r.cases), []
    A, B, C = VARIANTS
    for metric in ("jerk", "ARAP distortion", "area distortion"):
        d, se = paired(r, metric, A, B)
        note = (
            f"{metric}: {A} {mean_se(r.metrics[A][metric])[0]:.4g}, {B} "
            f"{mean_se(r.metrics[B][metric])[0]:.4g}; paired over {n} animations"
        )
        name = f"{metric}: without - with temporal Jacobians"
        out.append(claim_above(name, "lower with temporal Jacobians", d, 0.0, sc, note, se=se))
    m, se = mean_se(r.metrics[C]["skeleton error"])
    out.append(
        claim_below(
            "skeleton-length error of the full method (mean |l / l0 - 1|)",
            "the skeleton keeps its lengths",
            m,
            0.05,
            sc,
            f"{n} animations",
            se=se,
        )
    )
    d, se = paired(r, "log-lik / dim", C, B)
    out.append(
        claim_above(
            "log-prob term: prior log-lik / dim, with - without",
            "the flow-matching (log-prob) term improves motion",
            d,
            0.0,
            sc,
            f"paired over {n} animations",
            se=se,
        )
    )
    d, se = mean_se(
        [a - b for a, b in zip(r.metrics[A]["log-lik / dim"], r.still_loglik, strict=True)]
    )
    out.append(
        claim_above(
            "score distillation: log-lik / dim of the animation - the still clip",
            "the prior drives the motion",
            d,
            0.0,
            sc,
            f"{A}; {n} animations",
            se=se,
        )
    )
    worst = max(max(v["frame-0 error"]) for v in r.metrics.values())
    out.append(
        claim_below(
            "identity: frame 0 is the clipart (mean |soft raster difference|)",
            "frame 0 = the input clipart",
            worst,
            1e-3,
            sc,
            "P_0 and J(0) fixed",
        )
    )
    return out


def claims(r: Results) -> list[Claim]:
    """The paper's claims at this scale; criteria fixed before measuring."""
    return (
        claims_theory(r.theory, r.scale)
        + claims_prior(r.prior, r.scale)
        + claims_animation(r.animation, r.settings)
    )


# ---- figures ------------------------------------------------------------------------------
def summary(r: AnimationResult) -> tuple[dict, dict]:
    """(means, SEs) per variant and metric."""
    stats = {v: {m: mean_se(r.metrics[v][m]) for m in METRICS} for v in VARIANTS}
    return (
        {v: {m: x[0] for m, x in d.items()} for v, d in stats.items()},
        {v: {m: x[1] for m, x in d.items()} for v, d in stats.items()},
    )


def ablation_figure(r: AnimationResult) -> go.Figure:
    """Each metric per variant, mean +- SE over the animations."""
    means, ses = summary(r)
    return af.ablation_figure(means, ses, METRICS, f"Ablation over {len(r.cases)} animations")


def filmstrip_figure(r: AnimationResult, s: Settings, character: str, motion: str) -> go.Figure:
    """The three variants' frames of one animation, side by side."""
    clip = an.make_clipart(character, s.spacing)
    rows = {v: r.animations[f"{character}/{motion}/{v}"][:2] for v in VARIANTS}
    frames = sorted({0, s.frames // 4, s.frames // 2, 3 * s.frames // 4, s.frames - 1})
    return af.filmstrip_figure(rows, clip.faces, frames, f"{character}, {motion}")


def prior_figure(p: PriorResult) -> go.Figure:
    """Training loss of the prior, and the held-out / shuffled / still log-likelihoods."""
    fig = go.Figure(
        go.Scatter(y=p.losses, name="flow-matching loss", **style.line_style(style.BLUE))
    )
    fig.update_layout(style.curves_layout("Motion prior: training loss", "step", "loss"))
    return fig


def loglik_figure(p: PriorResult) -> go.Figure:
    """Exact log-likelihood per dimension: held-out clips, shuffled in time, still."""
    fig = go.Figure(
        [
            go.Box(y=v, name=k, boxpoints="all")
            for k, v in (
                ("held-out clips", p.held),
                ("frames shuffled", p.shuffled),
                ("still", p.still),
            )
        ]
    )
    fig.update_layout(
        template=style.TEMPLATE,
        title="Prior log-likelihood per dimension",
        height=350,
        width=520,
        showlegend=False,
    )
    return fig


def figures(r: Results) -> dict[str, go.Figure]:
    """The chapter's figures by name (what ``pflow-explore figures`` writes)."""
    s = r.settings
    return {
        "prior_loss": prior_figure(r.prior),
        "prior_loglik": loglik_figure(r.prior),
        "ablation": ablation_figure(r.animation),
        "filmstrip": filmstrip_figure(r.animation, s, s.characters[0], s.motions[0]),
    }


def preview() -> go.Figure:
    """The stick-figure mesh and a waving arm's Bezier trajectory (no training)."""
    clip = an.make_clipart("stick", 0.1)
    P = an.still_controls(clip.keypoints)
    P[6, 1:] += torch.tensor([[0.3, 0.4], [0.5, 0.9], [0.2, 1.2]])
    fig = go.Figure(af.frame_traces(clip.vertices, clip.faces, clip.keypoints, P[6:7]))
    path = an.bezier(P[6], torch.linspace(0, 1, 30))
    fig.add_trace(
        go.Scatter(
            x=path[:, 0].tolist(),
            y=path[:, 1].tolist(),
            name="trajectory",
            **style.line_style(style.ORANGE, 2),
        )
    )
    fig.update_layout(style.figure_layout(None, 220, keep_view=False), showlegend=False)
    return style.thumbnail(fig.update_yaxes(scaleanchor="x", scaleratio=1))
