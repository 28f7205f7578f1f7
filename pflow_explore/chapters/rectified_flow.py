"""Chapter 03: rectified flow, reflow and one-step distillation, with guidance (InstaFlow).

Liu et al. 2022 and 2023, docs/papers.md §03; t = 0 noise, t = 1 data, as in
:mod:`flow_matching` (``fm``: loss, guidance, sampling, couplings, 1-RF training); reflow and
distillation are :mod:`distillation`'s. The experiments, each callable on its own:
:func:`theory_check` (the exact Gaussian case), :func:`experiment_2d` (per 2D target: 1-, 2-,
3-RF and the distilled 1-, 2-RF) and :func:`experiment_digits` (class-conditional digits as
the stand-in for text-to-image, guidance included); ``run`` composes the three.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import plotly.graph_objects as go
import torch
from torch import Tensor, nn

from pflow_explore import experiment, metrics, scale, viz
from pflow_explore import flow_matching as fm
from pflow_explore.claims import Claim, claim_below, claim_ordered, claim_parts_within
from pflow_explore.datasets.digits import flat_digits
from pflow_explore.datasets.toy2d import TOY_2D, checkerboard_log_prob, sample_toy
from pflow_explore.distillation import DISTILL_LOSSES, rectify
from pflow_explore.experiment import Seeds, Stopwatch, cache_key, choose, one_thread_on_cpu, presets
from pflow_explore.nets import MLP, UNet
from pflow_explore.nets.mlp import SHIPPED_TIME_SCALE
from pflow_explore.solvers import odeint
from pflow_explore.training import FitResult
from pflow_explore.trajectories import crossing_count, straightness_of_field
from pflow_explore.viz import style
from pflow_explore.viz.quality import quality_vs_steps_figure
from pflow_explore.viz.rectified_flows import paths_with_ends

if TYPE_CHECKING:  # sympy loads with the theory module: only when the theory check runs
    from pflow_explore.theory.rectified_flow import GaussianRFCheck

CHAPTER = "rectified_flow"
# part of every cache key: bump when training changes. 2: initial weights seeded (SEEDS_*)
VERSION = 2
NETS = ("mlp", "unet")
DATASETS_2D = ("eight_gaussians", "two_moons", "checkerboard")
N_CLASSES = 10
ROUNDS = ("1-RF", "2-RF", "3-RF")
STUDENTS = ("distilled 1-RF", "distilled 2-RF")
ONE_STEP = "{}-RF, 1 Euler step"  # the results' label of the k-RF sampled with one Euler step
RANKED = ("distilled 2-RF", "distilled 1-RF", ONE_STEP.format(1))  # the paper's one-step order
# seed streams, base + offset; never renumber a shipped stream (the offsets are in the weights)
SEEDS_2D = dict(
    rf=0, init=5, pairs=(10, 1), reflow=(20, 1), distill=(30, 1), noise=100, target=101, sw=102
)
SEEDS_DIGITS = dict(teacher=0, floor=0, init=5, teacher_pairs=11, teacher_labels=12, rf2_pairs=13,
                    rf2_labels=14, reflow=21, distill=(30, 1), noise=200, augment=1000)  # fmt: skip


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter (``scale``: the preset's name). The fields that
    train models are in their cache keys (:data:`FIELDS_2D`, :data:`FIELDS_DIGITS`)."""

    scale: str
    # 2D: toy targets, an unconditional MLP velocity, Adam steps per stage
    datasets: tuple[str, ...] = DATASETS_2D  # names in datasets.toy2d.TOY_2D
    hidden_2d: int = 96
    depth_2d: int = 3
    batch_2d: int = 256
    lr_2d: float = 2e-3
    rf_steps_2d: int = 2000  # the 1-RF
    reflow_steps_2d: int = 1000  # each reflow
    distill_steps_2d: int = 800  # each distillation
    n_pairs_2d: int = 8000  # coupled pairs per reflow, by rk4 on pair_steps_2d steps
    pair_steps_2d: int = 32
    n_eval_2d: int = 2000  # samples per one-step quality measurement
    reference_steps_2d: int = 100  # Euler steps of the many-step 1-RF reference
    straightness_steps: int = 32  # rk4 steps of the straightness integral
    n_paths_2d: int = 64  # paths whose crossings are counted
    # digits: class-conditional teacher (MLP on d = image_size^2, or UNet) with label dropout
    image_size: int = 8  # 8, 16 or 32
    augment: bool = False  # train on aug_copies augmented copies of the training digits
    aug_copies: int = 1
    net: str = "mlp"  # or "unet"
    hidden: int = 192
    depth: int = 3
    unet_base: int = 48
    unet_mults: tuple[int, ...] = (1, 2, 2)
    batch: int = 256
    lr: float = 1e-3
    ema_decay: float = 0.999
    teacher_steps: int = 3000  # Adam steps of the 1-RF teacher, each reflow, each distillation
    reflow_steps: int = 1500
    distill_steps: int = 1000
    p_uncond: float = 0.1  # share of null labels in training (the guidance branch)
    guidance_reflow: float = 1.5  # the teacher's guidance for its pairs (reflow and distil 1-RF)
    guidance_distill: float = 1.0  # the 2-RF's guidance for its distillation pairs
    n_pairs: int = 5000  # coupled pairs, by rk4 on pair_steps steps
    pair_steps: int = 16
    distill_loss: str = "l2"  # or "pseudo_huber" with c = huber_c sqrt(d)
    huber_c: float = 0.00054
    n_fd: int = 1000  # samples per Frechet distance
    nfe_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # Euler step counts evaluated
    t_eps: float = 1e-3  # t ~ U[t_eps, 1] in training
    seed: int = 0

    def __post_init__(self) -> None:
        need, guidance = experiment.require, (self.guidance_reflow, self.guidance_distill)
        experiment.require_counts(self)
        experiment.require_at_least(self, "n_eval_2d n_fd", low=16)
        experiment.require_at_least(self, "n_paths_2d", low=2)
        experiment.require_at_least(self, "guidance_reflow guidance_distill", low=0)
        need(all(map(math.isfinite, guidance)), f"guidance must be finite, got {guidance}")
        choices = dict(image_size=(8, 16, 32), net=NETS, distill_loss=DISTILL_LOSSES)
        for name, options in choices.items():
            experiment.require_choice(self, name, options)
        names = f"datasets must be a non-empty tuple of names in {tuple(TOY_2D)}"
        need(bool(self.datasets) and set(self.datasets) <= set(TOY_2D), names)
        for name in ("p_uncond", "t_eps"):
            value = getattr(self, name)
            need(0 <= value < 1, f"{name} must lie in [0, 1), got {value}")
        need(self.p_uncond > 0 or guidance == (1, 1), "guidance other than 1 needs p_uncond > 0")
        steps = list(self.nfe_steps)
        ok = steps[:1] == [1] and steps == sorted(set(steps))
        need(ok, f"nfe_steps must increase strictly from 1, got {self.nfe_steps!r}")
        need(min(self.huber_c, self.lr, self.lr_2d) > 0, "huber_c, lr and lr_2d must be > 0")
        need(0 < self.ema_decay < 1, f"ema_decay must lie in (0, 1), got {self.ema_decay}")


SETTINGS = presets(
    Settings,
    tiny=dict(
        datasets=("eight_gaussians",), hidden_2d=64, depth_2d=2, rf_steps_2d=300,
        reflow_steps_2d=150, distill_steps_2d=150, n_pairs_2d=2000, pair_steps_2d=8,
        n_eval_2d=1000, reference_steps_2d=32, straightness_steps=16, n_paths_2d=48, hidden=64,
        depth=2, batch=128, lr=2e-3, ema_decay=0.99, teacher_steps=300, reflow_steps=100,
        distill_steps=100, n_pairs=512, pair_steps=4, n_fd=256, nfe_steps=(1, 8),
    ),
    cpu={},
    gpu=dict(
        rf_steps_2d=4000, reflow_steps_2d=2000, distill_steps_2d=2000, n_pairs_2d=50000,
        pair_steps_2d=64, n_eval_2d=5000, n_paths_2d=96, image_size=32, augment=True,
        aug_copies=8, net="unet", unet_base=48, unet_mults=(1, 2, 2), batch=256, lr=5e-4,
        ema_decay=0.9995, teacher_steps=8000, reflow_steps=6000, distill_steps=4000,
        n_pairs=100_000, pair_steps=8, n_fd=5000, nfe_steps=(1, 2, 4, 8, 16, 32, 64),
    ),
)  # fmt: skip
# what the trained models depend on (their cache keys): never the evaluation sizes
FIELDS_2D = (
    "hidden_2d depth_2d batch_2d lr_2d rf_steps_2d reflow_steps_2d distill_steps_2d "
    "n_pairs_2d pair_steps_2d t_eps seed"
).split()
EVAL_2D = "n_eval_2d reference_steps_2d straightness_steps n_paths_2d".split()  # + evaluate_2d
FIELDS_DIGITS = (
    "image_size augment aug_copies net hidden depth unet_base unet_mults batch lr "
    "ema_decay teacher_steps reflow_steps distill_steps p_uncond guidance_reflow "
    "guidance_distill n_pairs pair_steps distill_loss huber_c t_eps seed"
).split()


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


def image_shape(s: Settings) -> tuple[int, int, int]:
    """(1, S, S): how a flat digit (d,) = (S * S,) is an image."""
    return (1, s.image_size, s.image_size)


def make_net_digits(s: Settings) -> fm.VelocityNet:
    """A fresh class-conditional velocity net for digits: MLP(d, n_classes=10) or UNet."""
    shipped = dict(time_scale=SHIPPED_TIME_SCALE)  # the scale the shipped weights have
    if s.net == "mlp":
        return fm.VelocityNet(
            MLP(s.image_size**2, s.hidden, s.depth, n_classes=N_CLASSES, **shipped)
        )
    unet = UNet(1, base=s.unet_base, channel_mults=s.unet_mults, n_classes=N_CLASSES)
    return fm.VelocityNet(unet, image_shape(s))


# ---- 2D experiment ------------------------------------------------------------------------
def train_chain_2d(s: Settings, name: str) -> dict[str, FitResult]:
    """1-RF, 2-RF, 3-RF and the distilled 1-RF and 2-RF for the 2D target ``name``: the
    (k+1)-RF is reflowed on fresh pairs of the k-RF (``n_pairs_2d`` rk4 solves), the distilled
    k-RF trained on the same pairs (``distillation.rectify``). Every model is cached."""
    dev, seeds = scale.device(), Seeds(s.seed, **SEEDS_2D)

    def stage(steps: int, desc: str, seed: int, init: int | None = None) -> fm.Stage:
        return fm.Stage(steps, s.batch_2d, s.lr_2d, None, s.t_eps, seed, desc=desc, init_seed=init)

    def key(part: str) -> fm.Artifact:  # where the model is cached
        settings_key = cache_key(s, FIELDS_2D, dataset=name, stage=part)
        return fm.Artifact(CHAPTER, f"2d-{name}-{part}", settings_key, VERSION)

    net = lambda: fm.VelocityNet(
        MLP(2, hidden=s.hidden_2d, depth=s.depth_2d, time_scale=SHIPPED_TIME_SCALE)
    ).to(dev)
    data = lambda n, gen: (sample_toy(name, n, gen), None)
    first = stage(s.rf_steps_2d, f"{name}: 1-RF", seeds["rf"], seeds["init"])
    out = {"1-RF": fm.train_rectified_flow(net, data, first, cache=key("1rf"))}
    for k in (1, 2):

        def coupling(v: nn.Module, k: int = k) -> fm.Pairs:
            z0 = fm.gaussian_noise(s.n_pairs_2d, 2, seeds.seed("pairs", k), dev)
            return fm.sample_pairs(v, z0, n_steps=s.pair_steps_2d)

        reflow = stage(s.reflow_steps_2d, f"{name}: reflow to {k + 1}-RF", seeds.seed("reflow", k))
        distil = stage(s.distill_steps_2d, f"{name}: distil {k}-RF", seeds.seed("distill", k))
        keys = (key(f"{k + 1}rf"), key(f"distill{k}"))
        out[f"{k + 1}-RF"], out[f"distilled {k}-RF"] = rectify(
            out[f"{k}-RF"].model, coupling, reflow, distil, keys
        )
    for r in out.values():
        r.model.eval()
    return out


@dataclass
class Chain2D:
    """One 2D target through 1-, 2-, 3-RF and the distilled models (labels: ROUNDS and
    STUDENTS; methods: the one-step samplers and the many-step reference)."""

    name: str
    fits: dict[str, FitResult]  # label -> trained net, its losses and seconds
    straightness: dict[str, float]  # k-RF -> S (rk4 on straightness_steps)
    samples: dict[str, Tensor]  # method -> (n, 2), all from the same z0
    target: Tensor  # (n, 2) fresh target samples
    sliced_w2: dict[str, float]  # method -> distance to the target
    energy: dict[str, float]
    z0_paths: Tensor  # (m, 2) starts of the drawn paths
    paths: dict[str, Tensor]  # k-RF -> (T + 1, m, 2) Euler trajectories
    lines: dict[str, Tensor]  # coupling -> (2, m, 2) straight interpolation segments
    crossings: dict[str, int]  # "lines: ..." / "paths: ..." -> crossing pairs
    on_support: dict[str, float] = field(default_factory=dict)  # checkerboard: on black
    sliced_w2_se: dict[str, float] = field(default_factory=dict)  # bootstrap, RANKED only
    straightness_paths: dict[str, Tensor] = field(default_factory=dict)  # k-RF -> (n,) S per path

    @property
    def models(self) -> dict[str, nn.Module]:
        return {k: r.model for k, r in self.fits.items()}


@torch.no_grad()
def evaluate_2d(s: Settings, name: str, fits: dict[str, FitResult]) -> Chain2D:
    """Straightness per round, one-step quality of every model, crossings before/after.
    One-step samples (k-RF with one Euler step, the distilled models; the many-step 1-RF as
    reference) from the same z0, their sliced W2 and energy distance to the same fresh target
    samples (``metrics.distances_to_target``: common random numbers)."""
    seeds, models = Seeds(s.seed, **SEEDS_2D), {k: r.model for k, r in fits.items()}
    z0 = fm.gaussian_noise(s.n_eval_2d, 2, seeds["noise"], scale.device())
    target = sample_toy(name, s.n_eval_2d, seeds.generator("target"))
    z_s, n_s = z0[:500], s.straightness_steps
    s_paths = {k: fm.straightness_per_path(fm.velocity_field(models[k]), z_s, n_s) for k in ROUNDS}
    straight = {k: float(v.mean()) for k, v in s_paths.items()}  # straightness_of_field's S
    samples = {ONE_STEP.format(k): fm.one_step(models[f"{k}-RF"], z0) for k in (1, 2, 3)}
    samples |= {k: fm.one_step(models[k], z0) for k in STUDENTS}
    ref = f"1-RF, {s.reference_steps_2d} Euler steps"
    samples[ref] = fm.euler_sample(models["1-RF"], z0, s.reference_steps_2d).x
    samples = {k: v.cpu() for k, v in samples.items()}
    distances = metrics.distances_to_target(samples, target, seeds["sw"])  # sliced W2, energy
    zp, start = z0[: s.n_paths_2d], z0[: s.n_paths_2d].cpu()
    euler = lambda k: fm.euler_sample(models[k], zp, s.straightness_steps, trajectory=True)
    paths = {k: euler(k).trajectory.cpu() for k in ROUNDS}  # (T + 1, m, 2)
    ends = {
        "independent pairs (1-RF training)": target[: s.n_paths_2d],  # what each round
        "1-RF coupling (2-RF training)": paths["1-RF"][-1],  # trains on: (2, m, 2)
        "2-RF coupling (3-RF training)": paths["2-RF"][-1],
    }
    lines = {k: torch.stack([start, z1]) for k, z1 in ends.items()}
    crossings = {f"lines: {k}": crossing_count(v) for k, v in lines.items()}
    crossings |= {f"paths: {k}": crossing_count(v) for k, v in paths.items()}
    # the sliced W2 barely sees the checkerboard's squares: count the samples on black ones
    pool = {"target": target, **samples} if name == "checkerboard" else {}
    on_support = {k: metrics.support_share(checkerboard_log_prob, x) for k, x in pool.items()}
    sw_se = lambda x: metrics.sliced_w2_bootstrap_se(
        x, target, 256, seeds["sw"], 30
    )  # fixed target
    se = {k: sw_se(samples[k]) for k in RANKED}  # the value's 256 directions
    args = (straight, samples, target, *distances, start, paths, lines, crossings, on_support, se)
    return Chain2D(name, fits, *args, {k: v.cpu() for k, v in s_paths.items()})


def experiment_2d(s: Settings, name: str) -> Chain2D:
    """The 2D experiment on target ``name``: train (or load) the chain, then evaluate it (the
    measurements cached beside the weights, ``experiment.cached_result``)."""
    with one_thread_on_cpu(blas=True):
        fits, key = train_chain_2d(s, name), cache_key(s, FIELDS_2D + EVAL_2D, dataset=name)
        measure = lambda: evaluate_2d(s, name, fits)
        return experiment.cached_result(
            CHAPTER, VERSION, Chain2D, f"eval-{name}", key, measure, fits=fits
        )


# ---- digits experiment --------------------------------------------------------------------
def digits_data(s: Settings) -> tuple[Tensor, Tensor, Tensor]:
    """(train images (N, d), train labels (N,), held-out test images (M, d)), flat, [-1, 1]
    (``datasets.digits.flat_digits``); with ``augment``, ``aug_copies`` augmented copies."""
    gen = Seeds(s.seed, **SEEDS_DIGITS, allow_shared=True).generator("augment")
    return flat_digits(s.image_size, s.aug_copies if s.augment else 0, gen)


def _stage_digits(
    s: Settings, steps: int, desc: str, seed: int, distil: bool = False, init: int | None = None
) -> fm.Stage:
    loss = s.distill_loss if distil else "l2"
    return fm.Stage(steps, s.batch, s.lr, s.ema_decay, s.t_eps, seed, loss, s.huber_c, desc, init)


def train_digits(s: Settings) -> dict[str, FitResult]:
    """Teacher (1-RF, guidance-trained), 2-RF on guided teacher pairs, distilled 1-RF on the
    same pairs, distilled 2-RF on the 2-RF's own pairs (guidance ``guidance_distill``)."""
    dev, seeds = scale.device(), Seeds(s.seed, **SEEDS_DIGITS, allow_shared=True)
    train, labels, _ = digits_data(s)
    stage = functools.partial(_stage_digits, s)

    def key(part: str) -> fm.Artifact:  # where the model is cached
        settings_key = cache_key(s, FIELDS_DIGITS, stage=part)
        return fm.Artifact(CHAPTER, f"digits-{part}", settings_key, VERSION)

    def coupling(z_seed: str, y_seed: str, alpha: float, v: nn.Module) -> fm.Pairs:
        """Guided ODE pairs of v from seeded noise, labels in turn (a share p_uncond null)."""
        z0 = fm.gaussian_noise(s.n_pairs, train.shape[1], seeds[z_seed], dev)
        y = fm.balanced_labels(s.n_pairs, N_CLASSES, s.p_uncond, seeds[y_seed]).to(dev)
        return fm.sample_pairs(v, z0, y, alpha, s.pair_steps, batch=2048)

    net, data = lambda: make_net_digits(s).to(dev), fm.batch_sampler(train, labels)
    first = stage(s.teacher_steps, "digits: 1-RF teacher", seeds["teacher"], init=seeds["init"])
    teacher = fm.train_rectified_flow(net, data, first, s.p_uncond, N_CLASSES, key("teacher"))
    pairs = functools.partial(coupling, "teacher_pairs", "teacher_labels", s.guidance_reflow)
    reflow = stage(s.reflow_steps, "digits: reflow to 2-RF", seeds["reflow"])
    distil = stage(s.distill_steps, "digits: distil 1-RF", seeds.seed("distill", 1), True)
    rf2, d1 = rectify(teacher.model, pairs, reflow, distil, (key("2rf"), key("distill1")))
    pairs = functools.partial(coupling, "rf2_pairs", "rf2_labels", s.guidance_distill)
    distil = stage(s.distill_steps, "digits: distil 2-RF", seeds.seed("distill", 2), True)
    _, d2 = rectify(rf2.model, pairs, None, distil, (None, key("distill2")))
    out = {"1-RF teacher": teacher, "2-RF": rf2, "distilled 1-RF": d1, "distilled 2-RF": d2}
    for r in out.values():
        r.model.eval()
    return out


@dataclass
class DigitsResult:
    """Digits: the four models, and fd / accuracy per method on n_fd samples from the same
    z0 and balanced labels (one step for the students, 1 and most steps for the others)."""

    fits: dict[str, FitResult]  # label -> trained net, its losses and seconds
    fd: dict[str, float]
    accuracy: dict[str, float]
    curves: dict[str, tuple[Tensor, Tensor, Tensor]]  # model -> steps, fd, accuracy (K,) each
    straightness: dict[str, float]  # teacher and 2-RF, of the guided fields they sample with
    fd_floor: float  # training images vs held-out
    samples: dict[str, Tensor]  # method -> (20, 1, S, S), two per class
    z0: Tensor  # the noise and labels of those samples
    labels: Tensor
    guidance: dict[str, float]  # the guidance each model samples with
    fd_se: dict[str, float] = field(default_factory=dict)  # students: bootstrap SE of fd

    @property
    def models(self) -> dict[str, nn.Module]:
        return {k: r.model for k, r in self.fits.items()}

    @property
    def from_cache(self) -> bool:
        return all(r.from_cache for r in self.fits.values())


def frechet_se(features: Tensor, ref: Tensor, seed: int, n_boot: int = 30) -> float:
    """Bootstrap SE of the Frechet distance of ``features`` (n, F) to the fixed ``ref``."""
    fd = lambda i: metrics.frechet_distance(features[i], ref)
    return metrics.bootstrap_se(fd, len(features), n_boot, seed)


@torch.no_grad()
def evaluate_digits(s: Settings, fits: dict[str, FitResult]) -> DigitsResult:
    """One-step FD / accuracy of the distilled models vs teacher and 2-RF at every step count.
    FD: of the shipped digits classifier's features to the held-out test digits (floor: the
    training images'). The teacher samples with ``guidance_reflow`` (the distribution its
    pairs carry), the 2-RF with ``guidance_distill``, the students with guidance 1."""
    seeds = Seeds(s.seed, **SEEDS_DIGITS, allow_shared=True)
    shape = image_shape(s)
    train, _, test = digits_data(s)
    ref = metrics.digits_features(test.reshape(-1, *shape))  # once, not per FD
    models = {k: r.model for k, r in fits.items()}
    guidance = {"1-RF teacher": s.guidance_reflow, "2-RF": s.guidance_distill}
    guidance |= dict.fromkeys(STUDENTS, 1.0)  # students: their own field (guidance is built in)
    z0 = fm.gaussian_noise(s.n_fd, shape[1] * shape[2], seeds["noise"], scale.device())
    y = (torch.arange(s.n_fd) % N_CLASSES).to(z0.device)

    def sample(label: str, n_steps: int) -> Tensor:
        return fm.generate(models[label], z0, n_steps, y, guidance[label], 2048, label in STUDENTS)

    def fd_to_test(images: Tensor) -> float:  # images (n, 1, S, S)
        return metrics.frechet_distance(metrics.digits_features(images), ref)

    def score(x: Tensor) -> tuple[float, float]:
        imgs = x.clamp(-1, 1).reshape(-1, *shape).float().cpu()
        return fd_to_test(imgs), metrics.class_accuracy(imgs, y)

    fd, acc, samples, curves, top = {}, {}, {}, {}, s.nfe_steps[-1]
    for label in ("1-RF teacher", "2-RF"):  # every step count; keep 1 and the most steps
        xs = [sample(label, n) for n in s.nfe_steps]
        fds, accs = zip(*[score(x) for x in xs], strict=True)
        curves[label] = (torch.tensor(s.nfe_steps), *torch.tensor([fds, accs], dtype=torch.float64))
        for i, key in ((0, f"{label}, 1 Euler step"), (-1, f"{label}, {top} Euler steps")):
            fd[key], acc[key], samples[key] = fds[i], accs[i], xs[i][:20].cpu()
    fd_se = {}
    for label in STUDENTS:
        x = sample(label, 1)
        (fd[label], acc[label]), samples[label] = score(x), x[:20].cpu()
        images = x.clamp(-1, 1).reshape(-1, *shape).float().cpu()
        fd_se[label] = frechet_se(metrics.digits_features(images), ref, seeds["noise"])
    n_s, straight = min(256, s.n_fd), {}
    for label in ("1-RF teacher", "2-RF"):  # of the guided field each samples with
        field_ = fm.velocity_field(models[label], y[:n_s], guidance[label])
        straight[label] = straightness_of_field(field_, z0[:n_s], s.straightness_steps)
    floor_idx = torch.randperm(len(train), generator=seeds.generator("floor"))
    floor = fd_to_test(train[floor_idx[: s.n_fd]].reshape(-1, *shape))
    images = {k: v.reshape(-1, *shape) for k, v in samples.items()}
    args = (fd, acc, curves, straight, floor, images, z0[:20].cpu(), y[:20].cpu(), guidance, fd_se)
    return DigitsResult(fits, *args)


def experiment_digits(s: Settings) -> DigitsResult:
    """The digits experiment: train (or load) the four models, then evaluate them (cached)."""
    with one_thread_on_cpu(s.net == "mlp", blas=True):
        fits, key = train_digits(s), cache_key(s, FIELDS_DIGITS + ["n_fd", "nfe_steps"])
        measure = lambda: evaluate_digits(s, fits)
        return experiment.cached_result(
            CHAPTER, VERSION, DigitsResult, "eval-digits", key, measure, fits=fits
        )


# ---- theory check and the chapter ---------------------------------------------------------
def theory_check(
    d: int = 2, sigma: float = 0.6, n: int = 20000, n_steps: int = 64, seed: int = 7
) -> GaussianRFCheck:
    """The paper's exact Gaussian case checked numerically (``theory.gaussian_rf_check``): S by
    rk4 paths of the exact field on ``n_steps`` steps and Simpson in time; the one-step W2^2
    by ``metrics.frechet_distance`` (W2^2 of the Gaussian fits); the 1-RF pairs of the
    reflow regression by the same rk4 solve."""
    from pflow_explore.theory.rectified_flow import GaussianRFCheck, gaussian_rf_check  # sympy

    grid = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    ends = lambda v, z0: odeint(v, z0, grid, method="rk4").x
    straight = lambda v, z: straightness_of_field(v, z, n_steps)
    w2_sq = metrics.frechet_distance
    check = lambda: gaussian_rf_check(straight, w2_sq, d, sigma, n, seed, endpoints_of=ends)
    # stored like the experiments' numbers: 20,000 rk4 paths cost a dashboard's open 0.4 s
    key = dict(d=d, sigma=sigma, n=n, n_steps=n_steps, seed=seed)
    return experiment.cached_result(CHAPTER, VERSION, GaussianRFCheck, "theory", key, check)


@dataclass
class Results:
    """Everything the chapter shows: the theory check, one :class:`Chain2D` per 2D target,
    the digits experiment, and the wall seconds of each step of ``run``."""

    settings: Settings
    scale: str
    theory: GaussianRFCheck
    chains: dict[str, Chain2D]
    digits: DigitsResult
    seconds: dict[str, float] = field(default_factory=dict)


def prepare(s: Settings) -> None:
    """Train (or find in the cache / shipped folder) every model and measure it (cached)."""
    for name in s.datasets:
        experiment_2d(s, name)
    experiment_digits(s)


def run(s: Settings) -> Results:
    """The three experiments in turn, with the wall time of each (training is cached)."""
    watch, chains = Stopwatch(), {}
    with one_thread_on_cpu(blas=True):  # the theory check's numbers as they were shipped
        theory = theory_check()
    watch.tick("theory check")
    for name in s.datasets:
        chains[name] = experiment_2d(s, name)
        watch.tick(f"2D {name}")
    digits_result = experiment_digits(s)
    watch.tick("digits")
    return Results(s, s.scale, theory, chains, digits_result, watch.seconds)


# ---- claims -------------------------------------------------------------------------------
def _support_note(ch: Chain2D) -> str:
    """For the checkerboard: the share of samples on its black squares (target 1, a
    uniform square 0.5), which the distances above hardly see."""
    if not ch.on_support:
        return ""
    ref = [k for k in ch.on_support if k.endswith("Euler steps") and k.startswith("1-RF")]
    shares = [f"{k} {ch.on_support[k]:.0%}" for k in ["distilled 2-RF", "distilled 1-RF", *ref]]
    return "; on black squares: " + ", ".join(shares)


def claims_theory(th: GaussianRFCheck, sc: str) -> list[Claim]:
    """The exact Gaussian case, measured numerically (rk4, Monte Carlo, least squares)."""
    rel_se = th.straightness_se / th.straightness_formula
    s_note = f"d = {th.d}, sigma = {th.sigma}, {th.n} paths (MC standard error {rel_se:.1%}), "
    s_note += "rk4 + Simpson, exact field"
    s_name = "S(1-RF) Gaussian: numerics vs d sigma (2 - pi/2)"
    s_paper = "S(1-RF) = d sigma (2 - pi/2) for N(0, I) -> N(mu, sigma^2 I)"
    r_name = "Gaussian 2-RF is straight: reflow regression residual on 1-RF ODE pairs (worst t)"
    r_paper = "reflowing the 1-RF coupling gives a straight flow (S = 0): one step is exact"
    r_note = (
        "Z1 - Z0 regressed on [X_t, 1] at t = 0.1 ... 0.9 (the reflow loss, exact in the affine "
        "class that holds the Gaussian 2-RF), pairs from rk4 solves of the exact 1-RF field; "
        f"the same regression on independent pairs leaves {th.reflow_residual_independent:.2f} "
        f"(a coupling whose lines cross); identity check of the closed form v2: one Euler step "
        f"misses mu + sigma Z0 by {th.euler_2rf_error:.1e}"
    )
    w_name = "Gaussian 1-RF one step: W2^2 of the one-step samples to the target"
    w_paper = "one Euler step of 1-RF collapses to mu: W2^2 = d sigma^2"
    w_note = (
        f"Z0 + v(Z0, 0) for {th.n} Z0 (spread {th.one_step_spread:.1e}) against {th.n} fresh "
        f"target samples, W2^2 of their Gaussian fits (exact here); SE: Monte Carlo"
    )
    s_part = {"S": (th.straightness, th.straightness_se, th.straightness_formula)}
    straight = claim_parts_within(s_name, s_paper, s_part, 0.03, sc, s_note)
    w2_part = {"W2^2": (th.w2_sq, th.w2_sq_se, th.w2_sq_formula)}
    w2 = claim_parts_within(w_name, w_paper, w2_part, 0.03, sc, w_note)
    return [straight, claim_below(r_name, r_paper, th.reflow_residual, 1e-6, sc, r_note), w2]


def claims_2d(chains: dict[str, Chain2D], s: Settings) -> list[Claim]:
    """Reflow straightens (S drops), rectified couplings cross less, and the one-step
    ranking distilled 2-RF < distilled 1-RF < 1-RF with one Euler step, per target."""
    out, sc = [], s.scale
    paper = "each reflow straightens the paths (S decreases)"
    for a, b in (("1-RF", "2-RF"), ("2-RF", "3-RF")):  # S ratio, its SE over the same paths
        per = {n: (c.straightness_paths[a], c.straightness_paths[b]) for n, c in chains.items()}
        q = {n: float(pb.mean() / pa.mean()) for n, (pa, pb) in per.items()}
        rse = {n: metrics.bootstrap_se(lambda i, p=p: float(p[1][i].mean() / p[0][i].mean()),
                                       len(p[0]), 30, s.seed) for n, p in per.items()}  # fmt: skip
        worst = max(q, key=lambda n: q[n] + 2 * rse[n])
        note = "; ".join(f"{n}: S {per[n][0].mean():.3g} -> {per[n][1].mean():.3g} (x{q[n]:.2g} "
                         f"+- {rse[n]:.1g})" for n in q)  # fmt: skip
        note += f"; SE: bootstrap over the {len(per[worst][0])} paths; worst (+ 2 SE): {worst}"
        name = f"S({b}) / S({a}) on 2D targets (largest ratio)"
        out.append(claim_below(name, paper, q[worst], 1.0, sc, note, se=rse[worst]))
    ind, c1 = "lines: independent pairs (1-RF training)", "lines: 1-RF coupling (2-RF training)"
    c2 = "lines: 2-RF coupling (3-RF training)"
    counts = {n: c.crossings for n, c in chains.items()}
    measured = "; ".join(f"{n}: {c[ind]} -> {c[c1]}" for n, c in counts.items())
    note = f"{s.n_paths_2d} pairs per target; 2-RF coupling: " + ", ".join(
        f"{n} {c[c2]}" for n, c in counts.items()
    )
    name = "crossing interpolation lines: 1-RF coupling vs independent pairs"
    paper = "rectified couplings have (nearly) non-crossing straight interpolations"
    holds = all(c[c1] < c[ind] for c in counts.values())
    out.append(Claim(name, paper, measured, "fewer crossings on every target", holds, sc, note))
    ref, one_step_2 = f"1-RF, {s.reference_steps_2d} Euler steps", ONE_STEP.format(2)
    paper = "CIFAR-10 one-step FID: distilled 2-RF 4.85 < distilled 1-RF 6.18 < 1-RF one Euler step"
    for n, ch in chains.items():
        sw, en = ch.sliced_w2, ch.energy
        note = "SE: bootstrap over the generated samples (30 resamples); energy distance: "
        note += " / ".join(f"{en[k]:.4f}" for k in RANKED)
        note += f"; many-step 1-RF reference SW2 {sw[ref]:.3f}, 2-RF 1 step {sw[one_step_2]:.3f}"
        name = f"one-step ranking on {n} (sliced W2): distilled 2-RF < distilled 1-RF < 1-RF 1 step"
        values, ses = {k: sw[k] for k in RANKED}, {k: ch.sliced_w2_se[k] for k in RANKED}
        out.append(claim_ordered(name, paper, values, sc, note + _support_note(ch), ses=ses))
    return out


def claims_digits(dg: DigitsResult, s: Settings) -> list[Claim]:
    """Distilling the 2-RF beats distilling the 1-RF teacher directly (InstaFlow)."""
    fd, acc, top = dg.fd, dg.accuracy, f"1-RF teacher, {s.nfe_steps[-1]} Euler steps"
    d1, d2 = "distilled 1-RF", "distilled 2-RF"
    note = (
        f"class accuracy {acc[d1]:.1%} -> {acc[d2]:.1%}; teacher {s.nfe_steps[-1]} steps: FD "
        f"{fd[top]:.3g}, accuracy {acc[top]:.1%}; teacher 1 step FD "
        f"{fd['1-RF teacher, 1 Euler step']:.3g}; floor {dg.fd_floor:.3g}; n = {s.n_fd}, "
        f"guidance {s.guidance_reflow} (reflow) / {s.guidance_distill} (distillation)"
    )
    name = "digits one-step FD: distilled 2-RF < distilled 1-RF"
    paper = "CIFAR-10 one-step FID 6.18 (distilled 1-RF) -> 4.85 (distilled 2-RF)"
    note += "; SE: bootstrap over the generated samples (30 resamples)"
    values, ses = {d2: fd[d2], d1: fd[d1]}, {d2: dg.fd_se[d2], d1: dg.fd_se[d1]}
    return [claim_ordered(name, paper, values, s.scale, note, ses=ses)]


def claims(r: Results) -> list[Claim]:
    """The paper's claims at this scale; criteria fixed before measuring."""
    s = replace(r.settings, scale=r.scale)
    return claims_theory(r.theory, r.scale) + claims_2d(r.chains, s) + claims_digits(r.digits, s)


# ---- figures ------------------------------------------------------------------------------
COLORS = {"1-RF": style.BLUE, "2-RF": style.ORANGE, "3-RF": style.GREEN}
COLORS |= {"distilled 1-RF": style.PURPLE, "distilled 2-RF": style.RED}


def _by_target(chains: dict[str, Chain2D], metric: str, series: tuple[str, ...]) -> dict:
    """series -> target -> ``getattr(chain, metric)[series]``: the bars' groups."""
    return {k: {n: getattr(c, metric)[k] for n, c in chains.items()} for k in series}


def straightness_figure(chains: dict[str, Chain2D]) -> go.Figure:
    """S of 1-, 2-, 3-RF on every 2D target (bars)."""
    title = "Straightness S per reflow round (0 = straight paths)"
    y_title = "S = int E|(Z1 - Z0) - v|^2 dt"
    groups = _by_target(chains, "straightness", ROUNDS)
    return viz.bars_figure(groups, COLORS, height=360, width=600, title=title, yaxis_title=y_title)


def one_step_quality_figure(chains: dict[str, Chain2D]) -> go.Figure:
    """Sliced W2 to the target of every one-step method (and the many-step reference)."""
    groups = _by_target(chains, "sliced_w2", tuple(next(iter(chains.values())).sliced_w2))
    title = "One-step quality: sliced W2 to the target (lower is better)"
    return viz.bars_figure(
        groups, None, height=380, width=700, title=title, yaxis_title="sliced W2"
    )


def one_step_samples_figure(chains: dict[str, Chain2D], n: int = 300) -> go.Figure:
    """Samples of each one-step method beside the target, one row per 2D target (first n
    samples of each)."""
    methods = ["target", *next(iter(chains.values())).samples]
    dots = lambda k, x: [viz.points_trace(x[:n], k, "#444" if k == "target" else style.BLUE, 2.5)]
    panels = [
        [dots(*kx) for kx in {"target": c.target, **c.samples}.items()] for c in chains.values()
    ]
    titles = [f"{ch}: {m}" if j == 0 else m for ch in chains for j, m in enumerate(methods)]
    size = dict(height=60 + 200 * len(chains), width=170 * len(methods))
    size |= dict(margin=style.margins(10, 10, 70, 10))
    title = "One network evaluation per sample (the many-step 1-RF is the reference)"
    axes = dict(range=[-3.5, 3.5], visible=False)
    return viz.panel_grid(panels, titles, (0.01, 0.08), axes, title=title, **size)


def crossings_figure(chains: dict[str, Chain2D]) -> go.Figure:
    """Straight interpolation lines of independent pairs, of the 1-RF and of the 2-RF
    couplings (what 1-RF, 2-RF, 3-RF are trained on) with their crossing counts, one row
    per 2D target."""
    panels = [[paths_with_ends(x, k) for k, x in ch.lines.items()] for ch in chains.values()]
    count = lambda ch, k: f"{ch.name}: {k}<br>{ch.crossings['lines: ' + k]} crossing pairs"
    titles = [count(ch, k) for ch in chains.values() for k in ch.lines]
    size = dict(height=70 + 300 * len(chains), width=900, margin=style.margins(10, 10, 90, 10))
    title = "The straight lines each round trains on (noise -> red end points)"
    return viz.panel_grid(
        panels, titles, (0.03, 0.1), dict(visible=False), font=11, title=title, **size
    )


def nfe_figure(dg: DigitsResult) -> go.Figure:
    """Digits FD against Euler steps for the teacher and the 2-RF, with the distilled
    one-step models at 1 (stars) and the FD of training images as the floor."""
    curves, colors = {}, dict(COLORS)
    for label, color in (("1-RF teacher", COLORS["1-RF"]), ("2-RF", COLORS["2-RF"])):
        steps, fd, acc = dg.curves[label]
        name = f"{label} (guidance {dg.guidance[label]})"
        curves[name] = (steps, fd, [f"accuracy {a:.0%}" for a in acc.tolist()])
        colors[name] = color
    one_step = {k: (dg.fd[k], f"accuracy {dg.accuracy[k]:.0%}") for k in STUDENTS}
    title = "Digits: Frechet distance vs number of Euler steps"
    floor = "training images vs held-out"
    x_title = "Euler steps (a guided step evaluates the net twice)"
    axes = dict(x_title=x_title, y_title="digits Frechet distance", width=620)
    return quality_vs_steps_figure(curves, one_step, colors, dg.fd_floor, floor, title, **axes)


def digits_samples_figure(dg: DigitsResult) -> go.Figure:
    """The first 10 samples (one per class, same z0) of every method, one row each."""
    images = torch.cat([x[:10] for x in dg.samples.values()]).clamp(-1, 1)
    titles = [k if i == 0 else "" for k in dg.samples for i in range(10)]
    return viz.image_grid_figure(
        images, nrow=10, titles=titles, tile_px=40, title="Digits 0-9 from the same noise"
    )


def figures(r: Results) -> dict[str, go.Figure]:
    """The chapter's figures by name (what ``pflow-explore figures`` writes)."""
    return {
        "straightness": straightness_figure(r.chains),
        "crossings": crossings_figure(r.chains),
        "one_step_quality": one_step_quality_figure(r.chains),
        "one_step_samples": one_step_samples_figure(r.chains),
        "digits_nfe": nfe_figure(r.digits),
        "digits_samples": digits_samples_figure(r.digits),
    }


def preview() -> go.Figure:
    """Gaussian 1-RF paths Z_t = t mu + sqrt((1-t)^2 + t^2 sigma^2) Z0 (curved: they bunch
    up mid-way) beside the straight 2-RF paths with the same end points; closed form
    evaluated directly (the sympy derivation takes seconds)."""
    z0 = torch.randn(30, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mu, sigma = torch.tensor([2.5, 0.0], dtype=torch.float64), 0.35
    t = torch.linspace(0, 1, 30, dtype=torch.float64)[:, None, None]
    rf1 = t * mu + ((1 - t) ** 2 + t**2 * sigma**2).sqrt() * z0
    rf2 = t * mu + (1 - t + t * sigma) * z0
    rf1 = viz.trajectories_trace(rf1, "1-RF", "rgba(31,119,180,0.6)")
    fig = go.Figure([rf1, viz.trajectories_trace(rf2, "2-RF", "rgba(255,127,14,0.7)")])
    fig.update_layout(style.figure_layout(None, 220, keep_view=False))
    return style.thumbnail(fig.update_yaxes(scaleanchor="x", scaleratio=1))
