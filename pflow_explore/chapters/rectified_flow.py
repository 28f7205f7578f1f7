"""Chapter 03: rectified flow, reflow and one-step distillation, with guidance (InstaFlow).

Liu et al. 2022 and 2023, card 03_rectified_flow. Time runs the paper's way, as in
:mod:`flow_matching`: t = 0 noise, t = 1 data, X_t = t X1 + (1 - t) X0. The method lives in
:mod:`flow_matching` (loss, guidance, sampling, couplings, 1-RF training) and
:mod:`distillation` (reflow, one-step distillation); this module holds the experiments:
:func:`theory_check` (the exact Gaussian case), :func:`experiment_2d` (per 2D target: 1-, 2-,
3-RF and the distilled 1-, 2-RF; straightness, crossings, one-step quality) and
:func:`experiment_digits` (class-conditional digits as the stand-in for text-to-image: guided
1-RF teacher, 2-RF, both distilled; Frechet distance in the shipped classifier's features).
Guidance for the reflow pairs (``guidance_reflow``) and for the distillation pairs
(``guidance_distill``) are separate settings (InstaFlow issue #24). ``run`` composes the three.
Every training run seeds its own batches and initial weights (:data:`SEEDS_2D`, ...).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

import plotly.graph_objects as go
import torch
from torch import Tensor, nn

from pflow_explore import scale
from pflow_explore.claims import Claim, claim_below, claim_within
from pflow_explore.distillation import DISTILL_LOSSES, distill, reflow
from pflow_explore.experiment import Seeds, Stopwatch, cache_key, choose, one_thread_on_cpu, presets
from pflow_explore.flow_matching import (
    Artifact,
    Pairs,
    Stage,
    VelocityNet,
    euler_sample,
    one_step,
    sample_pairs,
    train_rectified_flow,
    velocity_field,
)
from pflow_explore.training import FitResult

CHAPTER = "rectified_flow"
# part of every cache key: bump when training changes. 2: initial weights seeded (SEEDS_*)
VERSION = 2
NETS = ("mlp", "unet")
DATASETS_2D = ("eight_gaussians", "two_moons", "checkerboard")
N_CLASSES = 10
ROUNDS = ("1-RF", "2-RF", "3-RF")
STUDENTS = ("distilled 1-RF", "distilled 2-RF")
# seed streams, base + offset; never renumber a shipped stream (the offsets are in the weights)
SEEDS_2D = dict(
    rf=0, init=5, pairs=(10, 1), reflow=(20, 1), distill=(30, 1), noise=100, target=101, sw=102
)
SEEDS_DIGITS = dict(
    teacher=0, floor=0, init=5, teacher_pairs=11, teacher_labels=12, rf2_pairs=13,
    rf2_labels=14, reflow=21, distill=(30, 1), noise=200, augment=1000,
)  # fmt: skip


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter. ``scale``: the preset's name.

    2D (``*_2d``): the target densities ``datasets`` (``datasets.toy2d.TOY_2D``), an MLP
    (hidden_2d, depth_2d), Adam steps per stage (1-RF, each reflow, each distillation),
    ``n_pairs_2d`` coupled pairs per reflow (rk4, ``pair_steps_2d`` steps); evaluation on
    ``n_eval_2d`` samples, the many-step reference with ``reference_steps_2d`` Euler steps,
    straightness with ``straightness_steps`` rk4 steps, crossings on ``n_paths_2d`` paths.

    Digits: class-conditional 1-RF teacher (an MLP on d = image_size^2, or a UNet) trained
    with label dropout ``p_uncond``; ``guidance_reflow``: the teacher's guidance scale when it
    generates the reflow pairs (which also serve to distil the teacher directly, InstaFlow's
    baseline); ``guidance_distill``: the 2-RF's when it generates its distillation pairs.
    ``n_pairs`` pairs (rk4, ``pair_steps``). ``distill_loss``: "l2" or "pseudo_huber"
    (c = huber_c sqrt(d)). Evaluation: ``n_fd`` samples, Euler steps ``nfe_steps``.
    """

    scale: str
    # 2D
    datasets: tuple[str, ...] = DATASETS_2D
    hidden_2d: int = 96
    depth_2d: int = 3
    batch_2d: int = 256
    lr_2d: float = 2e-3
    rf_steps_2d: int = 2000
    reflow_steps_2d: int = 1000
    distill_steps_2d: int = 800
    n_pairs_2d: int = 8000
    pair_steps_2d: int = 32
    n_eval_2d: int = 2000
    reference_steps_2d: int = 100
    straightness_steps: int = 32
    n_paths_2d: int = 64
    # digits
    image_size: int = 8
    augment: bool = False
    aug_copies: int = 1
    net: str = "mlp"
    hidden: int = 192
    depth: int = 3
    unet_base: int = 48
    unet_mults: tuple[int, ...] = (1, 2, 2)
    batch: int = 256
    lr: float = 1e-3
    ema_decay: float = 0.999
    teacher_steps: int = 3000
    reflow_steps: int = 1500
    distill_steps: int = 1000
    p_uncond: float = 0.1
    guidance_reflow: float = 1.5
    guidance_distill: float = 1.0
    n_pairs: int = 5000
    pair_steps: int = 16
    distill_loss: str = "l2"
    huber_c: float = 0.00054
    n_fd: int = 1000
    nfe_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    t_eps: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        from pflow_explore.datasets.toy2d import TOY_2D

        positive = (
            "hidden_2d depth_2d batch_2d rf_steps_2d reflow_steps_2d distill_steps_2d "
            "n_pairs_2d pair_steps_2d reference_steps_2d straightness_steps hidden depth "
            "batch teacher_steps reflow_steps distill_steps n_pairs pair_steps aug_copies"
        ).split()
        g_r, g_d, steps = self.guidance_reflow, self.guidance_distill, list(self.nfe_steps)
        checks = [
            (bool(self.datasets) and set(self.datasets) <= set(TOY_2D),
             f"datasets must be a non-empty tuple of names in {tuple(TOY_2D)}, "
             f"got {self.datasets!r}"),
            (self.image_size in (8, 16, 32),
             f"image_size must be 8, 16 or 32, got {self.image_size}"),
            (self.net in NETS, f"net must be one of {NETS}, got {self.net!r}"),
            (self.distill_loss in DISTILL_LOSSES,
             f"distill_loss must be one of {DISTILL_LOSSES}, got {self.distill_loss!r}"),
            *[(getattr(self, n) >= 1, f"{n} must be >= 1, got {getattr(self, n)}")
              for n in positive],
            (min(self.n_eval_2d, self.n_fd) >= 16,
             f"n_eval_2d and n_fd must be >= 16, got {self.n_eval_2d}, {self.n_fd}"),
            (self.n_paths_2d >= 2, f"n_paths_2d must be >= 2, got {self.n_paths_2d}"),
            *[(math.isfinite(g) and g >= 0, f"{n} must be a finite number >= 0, got {g}")
              for n, g in (("guidance_reflow", g_r), ("guidance_distill", g_d))],
            (0 <= self.p_uncond < 1, f"p_uncond must lie in [0, 1), got {self.p_uncond}"),
            (self.p_uncond > 0 or g_r == g_d == 1,
             "guidance scales other than 1 need the null class: set p_uncond > 0 "
             f"(got p_uncond=0, guidance_reflow={g_r}, guidance_distill={g_d})"),
            (0 <= self.t_eps < 1, f"t_eps must lie in [0, 1), got {self.t_eps}"),
            (steps[:1] == [1] and steps == sorted(set(steps)),
             f"nfe_steps must increase strictly from 1, got {self.nfe_steps!r}"),
            (min(self.huber_c, self.lr, self.lr_2d) > 0, "huber_c, lr and lr_2d must be > 0"),
            (0 < self.ema_decay < 1, f"ema_decay must lie in (0, 1), got {self.ema_decay}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


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
FIELDS_2D = (
    "hidden_2d depth_2d batch_2d lr_2d rf_steps_2d reflow_steps_2d distill_steps_2d "
    "n_pairs_2d pair_steps_2d t_eps seed"
).split()
FIELDS_DIGITS = (
    "image_size augment aug_copies net hidden depth unet_base unet_mults batch lr ema_decay "
    "teacher_steps reflow_steps distill_steps p_uncond guidance_reflow guidance_distill "
    "n_pairs pair_steps distill_loss huber_c t_eps seed"
).split()


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return choose(SETTINGS, scale_name, **changes)


def make_net_2d(s: Settings) -> VelocityNet:
    """A fresh 2D velocity MLP(2, hidden_2d, depth_2d), unconditional."""
    from pflow_explore.nets import MLP

    return VelocityNet(MLP(2, hidden=s.hidden_2d, depth=s.depth_2d))


def image_shape(s: Settings) -> tuple[int, int, int]:
    """(1, S, S): how a flat digit (d,) = (S * S,) is an image."""
    return (1, s.image_size, s.image_size)


def make_net_digits(s: Settings) -> VelocityNet:
    """A fresh class-conditional velocity net for digits: MLP(d, n_classes=10) or UNet."""
    from pflow_explore.nets import MLP, UNet

    if s.net == "mlp":
        return VelocityNet(MLP(s.image_size**2, s.hidden, s.depth, n_classes=N_CLASSES))
    unet = UNet(1, base=s.unet_base, channel_mults=s.unet_mults, n_classes=N_CLASSES)
    return VelocityNet(unet, image_shape(s))


def noise(n: int, d: int, seed: int, device: torch.device | None = None) -> Tensor:
    """Z0 ~ N(0, I_d): (n, d) float32, seeded."""
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return z.to(device or scale.device())


def target_2d_batch(name: str, n: int, generator: torch.Generator) -> Tensor:
    """A fresh batch (n, 2) of the toy density ``name`` (``datasets.toy2d``) from a CPU
    ``generator``."""
    from pflow_explore.datasets.toy2d import sample_toy

    return sample_toy(name, n, generator)


# ---- 2D experiment ------------------------------------------------------------------------
def _key_2d(s: Settings, name: str, stage: str) -> Artifact:
    key = cache_key(s, FIELDS_2D, dataset=name, stage=stage)
    return Artifact(CHAPTER, f"2d-{name}-{stage}", key, VERSION)


def _stage_2d(s: Settings, steps: int, desc: str, seed: int, init: int | None = None) -> Stage:
    return Stage(steps, s.batch_2d, s.lr_2d, None, s.t_eps, seed, desc=desc, init_seed=init)


def train_chain_2d(s: Settings, name: str) -> dict[str, FitResult]:
    """1-RF, 2-RF, 3-RF and the distilled 1-RF and 2-RF for the 2D target ``name``.

    The (k+1)-RF is reflowed on fresh pairs of the k-RF (``n_pairs_2d`` rk4 solves); the
    distilled k-RF is trained on the same pairs. Every model is cached; pairs are generated
    only when a model that needs them is trained.
    """
    dev, seeds = scale.device(), Seeds(s.seed, **SEEDS_2D)
    out = {
        "1-RF": train_rectified_flow(
            lambda: make_net_2d(s).to(dev),
            lambda n, gen: (target_2d_batch(name, n, gen), None),
            _stage_2d(s, s.rf_steps_2d, f"{name}: 1-RF", seeds["rf"], seeds["init"]),
            cache=_key_2d(s, name, "1rf"),
        )
    }
    for k in (1, 2):
        parent = out[f"{k}-RF"].model

        @functools.cache
        def pairs(parent: nn.Module = parent, k: int = k) -> Pairs:
            z0 = noise(s.n_pairs_2d, 2, seeds.seed("pairs", k), dev)
            return sample_pairs(parent, z0, n_steps=s.pair_steps_2d)

        out[f"{k + 1}-RF"] = reflow(
            parent,
            pairs,
            _stage_2d(
                s, s.reflow_steps_2d, f"{name}: reflow to {k + 1}-RF", seeds.seed("reflow", k)
            ),
            _key_2d(s, name, f"{k + 1}rf"),
        )
        out[f"distilled {k}-RF"] = distill(
            parent,
            pairs,
            _stage_2d(s, s.distill_steps_2d, f"{name}: distil {k}-RF", seeds.seed("distill", k)),
            _key_2d(s, name, f"distill{k}"),
        )
    for r in out.values():
        r.model.eval()
    return out


@dataclass
class Chain2D:
    """One 2D target through 1-, 2-, 3-RF and the distilled models.

    models: label -> net (ROUNDS and STUDENTS); losses: label -> loss per step;
    straightness: k-RF -> S (rk4 on ``straightness_steps``); samples: method -> (n, 2)
    one-step (and many-step reference) samples from the same z0; target (n, 2);
    sliced_w2, energy: method -> distance to target; paths: k-RF -> (T + 1, m, 2) Euler
    trajectories from z0_paths (m, 2); lines: coupling -> (2, m, 2) straight interpolation
    segments (independent pairs, 1-RF and 2-RF couplings); crossings: name -> count;
    on_support: for the checkerboard, method -> share of samples on its black squares.
    """

    name: str
    models: dict[str, nn.Module]
    losses: dict[str, list[float]]
    trained_seconds: dict[str, float]
    straightness: dict[str, float]
    samples: dict[str, Tensor]
    target: Tensor
    sliced_w2: dict[str, float]
    energy: dict[str, float]
    z0_paths: Tensor
    paths: dict[str, Tensor]
    lines: dict[str, Tensor]
    crossings: dict[str, int]
    on_support: dict[str, float] = field(default_factory=dict)


def one_step_label(k: int) -> str:
    """The results' label of the k-RF sampled with one Euler step."""
    return f"{k}-RF, 1 Euler step"


@torch.no_grad()
def evaluate_2d(s: Settings, name: str, fits: dict[str, FitResult]) -> Chain2D:
    """Straightness per round, one-step quality of every model, crossings before/after.

    One-step samples from the same z0 (n_eval_2d): k-RF with one Euler step, the distilled
    models, and 1-RF with ``reference_steps_2d`` Euler steps; sliced W2 (fixed projections)
    and energy distance to the same fresh target samples (common random numbers, so the
    differences are less noisy than the values).
    """
    from pflow_explore.metrics import energy_distance, sliced_w2
    from pflow_explore.trajectories import crossing_count, straightness_of_field

    seeds = Seeds(s.seed, **SEEDS_2D)
    models = {k: r.model for k, r in fits.items()}
    z0 = noise(s.n_eval_2d, 2, seeds["noise"], scale.device())
    target = target_2d_batch(name, s.n_eval_2d, seeds.generator("target"))
    straight = {
        k: straightness_of_field(velocity_field(models[k]), z0[:500], s.straightness_steps)
        for k in ROUNDS
    }
    samples = {one_step_label(k): one_step(models[f"{k}-RF"], z0) for k in (1, 2, 3)}
    for k in (1, 2):
        samples[f"distilled {k}-RF"] = one_step(models[f"distilled {k}-RF"], z0)
    ref = f"1-RF, {s.reference_steps_2d} Euler steps"
    samples[ref] = euler_sample(models["1-RF"], z0, s.reference_steps_2d).x
    samples = {k: v.cpu() for k, v in samples.items()}
    sw2 = {k: sliced_w2(x, target, 256, seeds.generator("sw")) for k, x in samples.items()}
    energy = {k: energy_distance(x, target) for k, x in samples.items()}
    zp = z0[: s.n_paths_2d]
    paths = {
        k: euler_sample(models[k], zp, s.straightness_steps, trajectory=True).trajectory.cpu()
        for k in ROUNDS
    }
    lines = {
        "independent pairs (1-RF training)": torch.stack([zp.cpu(), target[: s.n_paths_2d]]),
        "1-RF coupling (2-RF training)": torch.stack([zp.cpu(), paths["1-RF"][-1]]),
        "2-RF coupling (3-RF training)": torch.stack([zp.cpu(), paths["2-RF"][-1]]),
    }
    crossings = {f"lines: {k}": crossing_count(v) for k, v in lines.items()}
    crossings.update({f"paths: {k}": crossing_count(v) for k, v in paths.items()})
    on_support = {}
    if name == "checkerboard":  # the sliced W2 barely sees the squares: count them directly
        from pflow_explore.datasets.toy2d import checkerboard_log_prob

        on_support = {
            k: float(checkerboard_log_prob(x).isfinite().float().mean())
            for k, x in {"target": target, **samples}.items()
        }
    losses = {k: r.losses for k, r in fits.items()}
    seconds = {k: r.seconds for k, r in fits.items()}
    return Chain2D(
        name, models, losses, seconds, straight, samples, target, sw2, energy, zp.cpu(), paths,
        lines, crossings, on_support,
    )  # fmt: skip


def experiment_2d(s: Settings, name: str) -> Chain2D:
    """The 2D experiment on target ``name``: train (or load) the chain, then evaluate it."""
    with one_thread_on_cpu(blas=True):
        return evaluate_2d(s, name, train_chain_2d(s, name))


# ---- digits experiment --------------------------------------------------------------------
def digits_data(s: Settings) -> tuple[Tensor, Tensor, Tensor]:
    """(train images (N, d), train labels (N,), held-out test images (M, d)), flat, [-1, 1].

    With ``augment``, the training split is ``aug_copies`` augmented copies (seeded)."""
    from pflow_explore.datasets.digits import augment, digits

    images, labels = digits(s.image_size, "train")
    if s.augment:
        gen = Seeds(s.seed, **SEEDS_DIGITS, allow_shared=True).generator("augment")
        images = torch.cat([augment(images, gen) for _ in range(s.aug_copies)])
        labels = labels.repeat(s.aug_copies)
    test, _ = digits(s.image_size, "test")
    return images.flatten(1), labels, test.flatten(1)


def _key_digits(s: Settings, stage: str) -> Artifact:
    return Artifact(CHAPTER, f"digits-{stage}", cache_key(s, FIELDS_DIGITS, stage=stage), VERSION)


def _stage_digits(
    s: Settings, steps: int, desc: str, seed: int, distil: bool = False, init: int | None = None
) -> Stage:
    loss = s.distill_loss if distil else "l2"
    return Stage(steps, s.batch, s.lr, s.ema_decay, s.t_eps, seed, loss, s.huber_c, desc, init)


def pair_labels(n: int, p_uncond: float, seed: int) -> Tensor:
    """Labels of n pairs: classes 0..9 in turn, a random share ``p_uncond`` set to null
    (those pairs follow the teacher's unconditional field, so the reflowed net keeps a null
    branch for guidance)."""
    from pflow_explore.nets import drop_labels

    y = torch.arange(n) % N_CLASSES
    return drop_labels(y, p_uncond, N_CLASSES, torch.Generator().manual_seed(seed))


def train_digits(s: Settings) -> dict[str, FitResult]:
    """Teacher (1-RF, guidance-trained), 2-RF on guided teacher pairs, distilled 1-RF on the
    same pairs, distilled 2-RF on the 2-RF's own pairs (guidance ``guidance_distill``)."""
    dev, seeds = scale.device(), Seeds(s.seed, **SEEDS_DIGITS, allow_shared=True)
    train, labels, _ = digits_data(s)

    def sample_data(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(train), (n,), generator=gen)
        return train[idx], labels[idx]

    def coupling(v: nn.Module, z_seed: str, y_seed: str, alpha: float) -> Pairs:
        z0 = noise(s.n_pairs, train.shape[1], seeds[z_seed], dev)
        y = pair_labels(s.n_pairs, s.p_uncond, seeds[y_seed]).to(dev)
        return sample_pairs(v, z0, y, alpha, s.pair_steps, batch=2048)

    teacher = train_rectified_flow(
        lambda: make_net_digits(s).to(dev),
        sample_data,
        _stage_digits(
            s, s.teacher_steps, "digits: 1-RF teacher", seeds["teacher"], init=seeds["init"]
        ),
        s.p_uncond,
        N_CLASSES,
        _key_digits(s, "teacher"),
    )
    teacher_pairs = functools.cache(
        lambda: coupling(teacher.model, "teacher_pairs", "teacher_labels", s.guidance_reflow)
    )
    rf2 = reflow(
        teacher.model,
        teacher_pairs,
        _stage_digits(s, s.reflow_steps, "digits: reflow to 2-RF", seeds["reflow"]),
        _key_digits(s, "2rf"),
    )
    d1 = distill(
        teacher.model,
        teacher_pairs,
        _stage_digits(s, s.distill_steps, "digits: distil 1-RF", seeds.seed("distill", 1), True),
        _key_digits(s, "distill1"),
    )
    rf2_pairs = functools.cache(
        lambda: coupling(rf2.model, "rf2_pairs", "rf2_labels", s.guidance_distill)
    )
    d2 = distill(
        rf2.model,
        rf2_pairs,
        _stage_digits(s, s.distill_steps, "digits: distil 2-RF", seeds.seed("distill", 2), True),
        _key_digits(s, "distill2"),
    )
    out = {"1-RF teacher": teacher, "2-RF": rf2, "distilled 1-RF": d1, "distilled 2-RF": d2}
    for r in out.values():
        r.model.eval()
    return out


def class_accuracy(images: Tensor, labels: Tensor) -> float:
    """Share of images (n, 1, S, S) that the shipped digits classifier labels ``labels``."""
    from pflow_explore.nets.classifier import load_digits_classifier

    clf = load_digits_classifier()
    with torch.no_grad():
        pred = torch.cat([clf(chunk).argmax(1) for chunk in images.float().cpu().split(1024)])
    return float((pred == labels.cpu()).float().mean())


@dataclass
class DigitsResult:
    """Digits: models (label -> net), losses; fd / accuracy per method on n_fd samples from
    the same z0 and balanced labels; curves: model -> (steps (K,), fd (K,), accuracy (K,))
    for Euler sampling; straightness of teacher (guided) and 2-RF; fd_floor (training
    images vs held-out); samples: method -> (20, 1, S, S) images (two per class); z0 and
    labels of those samples (for the widget); the guidance each model samples with."""

    models: dict[str, nn.Module]
    losses: dict[str, list[float]]
    trained_seconds: dict[str, float]
    from_cache: bool
    fd: dict[str, float]
    accuracy: dict[str, float]
    curves: dict[str, tuple[Tensor, Tensor, Tensor]]
    straightness: dict[str, float]
    fd_floor: float
    samples: dict[str, Tensor]
    z0: Tensor
    labels: Tensor
    guidance: dict[str, float]


@torch.no_grad()
def evaluate_digits(s: Settings, fits: dict[str, FitResult]) -> DigitsResult:
    """One-step FD / accuracy of the distilled models vs teacher and 2-RF at every step count.

    FD (``metrics.frechet_distance`` of the shipped digits classifier's features) to the
    held-out test digits; the floor is the FD of the training images themselves. Teacher
    samples with ``guidance_reflow`` (the distribution its pairs carry), the 2-RF with
    ``guidance_distill``, the students with their own field (guidance 1).
    """
    from pflow_explore.metrics import digits_features, frechet_distance
    from pflow_explore.trajectories import straightness_of_field

    seeds = Seeds(s.seed, **SEEDS_DIGITS, allow_shared=True)
    shape = image_shape(s)
    train, _, test = digits_data(s)
    ref = digits_features(test.reshape(-1, *shape))  # once, not per FD
    models = {k: r.model for k, r in fits.items()}
    guidance = {"1-RF teacher": s.guidance_reflow, "2-RF": s.guidance_distill}
    guidance.update({k: 1.0 for k in STUDENTS})
    z0 = noise(s.n_fd, shape[1] * shape[2], seeds["noise"], scale.device())
    y = (torch.arange(s.n_fd) % N_CLASSES).to(z0.device)

    def sample(label: str, n_steps: int) -> Tensor:
        chunks = zip(z0.split(2048), y.split(2048), strict=True)
        if label in STUDENTS:
            return torch.cat([one_step(models[label], zb, yb) for zb, yb in chunks])
        alpha = guidance[label]
        return torch.cat(
            [euler_sample(models[label], zb, n_steps, yb, alpha).x for zb, yb in chunks]
        )

    def score(x: Tensor) -> tuple[float, float]:
        imgs = x.clamp(-1, 1).reshape(-1, *shape).float().cpu()
        return frechet_distance(digits_features(imgs), ref), class_accuracy(imgs, y)

    fd, acc, samples, curves = {}, {}, {}, {}
    top = s.nfe_steps[-1]
    for label in ("1-RF teacher", "2-RF"):
        scores = []
        for n in s.nfe_steps:
            x = sample(label, n)
            scores.append(score(x))
            keys = [f"{label}, 1 Euler step"] if n == 1 else []
            keys += [f"{label}, {top} Euler steps"] if n == top else []
            for key in keys:
                (fd[key], acc[key]), samples[key] = scores[-1], x[:20].cpu()
        fds, accs = zip(*scores, strict=True)
        curves[label] = (
            torch.tensor(s.nfe_steps),
            torch.tensor(fds, dtype=torch.float64),
            torch.tensor(accs, dtype=torch.float64),
        )
    for label in STUDENTS:
        x = sample(label, 1)
        (fd[label], acc[label]), samples[label] = score(x), x[:20].cpu()
    n_s = min(256, s.n_fd)
    straight = {
        label: straightness_of_field(
            velocity_field(models[label], y[:n_s], guidance[label]), z0[:n_s], s.straightness_steps
        )
        for label in ("1-RF teacher", "2-RF")
    }
    floor_idx = torch.randperm(len(train), generator=seeds.generator("floor"))
    floor = frechet_distance(digits_features(train[floor_idx[: s.n_fd]].reshape(-1, *shape)), ref)
    return DigitsResult(
        models,
        {k: r.losses for k, r in fits.items()},
        {k: r.seconds for k, r in fits.items()},
        all(r.from_cache for r in fits.values()),
        fd, acc, curves, straight, floor,
        {k: v.reshape(-1, *shape) for k, v in samples.items()},
        z0[:20].cpu(), y[:20].cpu(), guidance,
    )  # fmt: skip


def experiment_digits(s: Settings) -> DigitsResult:
    """The digits experiment: train (or load) the four models, then evaluate them."""
    with one_thread_on_cpu(s.net == "mlp", blas=True):
        return evaluate_digits(s, train_digits(s))


# ---- theory check -------------------------------------------------------------------------
@dataclass
class TheoryCheck:
    """The Gaussian case N(0, I_d) -> N(mu, sigma^2 I_d) checked numerically.

    straightness / straightness_formula: S(1-RF) from the exact velocity (rk4 + Simpson on
    n paths) vs d sigma (2 - pi/2), with its Monte Carlo standard error; euler_2rf_error:
    max |Z0 + v2(Z0, 0) - (mu + sigma Z0)| (one Euler step of 2-RF vs the exact coupling);
    one_step_spread: max |Z0 + v(Z0, 0) - mu| for 1-RF; w2_sq / w2_sq_formula: E|X1 - mu|^2
    (the W2^2 of the collapsed one-step samples, by Monte Carlo) vs d sigma^2.
    """

    d: int
    mu: Tensor
    sigma: float
    n: int
    straightness: float
    straightness_se: float
    straightness_formula: float
    euler_2rf_error: float
    one_step_spread: float
    w2_sq: float
    w2_sq_formula: float


def theory_check(
    d: int = 2, sigma: float = 0.6, n: int = 20000, n_steps: int = 64, seed: int = 7
) -> TheoryCheck:
    """Check the card's exact case numerically (random mu; float64)."""
    from pflow_explore.theory import rectified_flow as exact
    from pflow_explore.trajectories import straightness_of_field

    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    mu = torch.randn(d, generator=gen, dtype=f64)
    z0 = torch.randn(n, d, generator=gen, dtype=f64)

    def v(x: Tensor, t: Tensor) -> Tensor:
        return exact.gaussian_rf_velocity(x, t, mu, sigma)

    # S per path is (int (r' - (sigma - 1))^2 dt) |Z0|^2: the standard error of the mean is
    # S sd(|Z0|^2) / (E|Z0|^2 sqrt(n)) = S sqrt(2 / (d n))
    s_num = straightness_of_field(v, z0, n_steps)
    euler2 = z0 + exact.gaussian_2rf_velocity(z0, 0.0, mu, sigma)
    err2 = float((euler2 - (mu + sigma * z0)).abs().max())
    spread = float((z0 + v(z0, torch.tensor(0.0, dtype=f64)) - mu).abs().max())
    x1 = mu + sigma * torch.randn(n, d, generator=gen, dtype=f64)
    w2 = float(((x1 - mu) ** 2).sum(1).mean())
    formula = exact.gaussian_rf_straightness(d, sigma)
    se = s_num * math.sqrt(2 / (d * n))
    return TheoryCheck(
        d, mu, sigma, n, s_num, se, formula, err2, spread, w2, exact.one_step_w2_sq(d, sigma)
    )


# ---- the chapter --------------------------------------------------------------------------
@dataclass
class Results:
    """Everything the chapter shows: the theory check, one :class:`Chain2D` per 2D target,
    the digits experiment, and the wall seconds of each step of ``run``."""

    settings: Settings
    scale: str
    theory: TheoryCheck
    chains: dict[str, Chain2D]
    digits: DigitsResult
    seconds: dict[str, float] = field(default_factory=dict)


def prepare(s: Settings) -> None:
    """Train (or find in the cache / shipped folder) every model of the chapter."""
    with one_thread_on_cpu(blas=True):
        for name in s.datasets:
            train_chain_2d(s, name)
    with one_thread_on_cpu(s.net == "mlp", blas=True):
        train_digits(s)


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


def _support_note(ch: Chain2D) -> str:
    """For the checkerboard: the share of samples on its black squares (target 1, a
    uniform square 0.5), which the distances above hardly see."""
    if not ch.on_support:
        return ""
    ref = [k for k in ch.on_support if k.endswith("Euler steps") and k.startswith("1-RF")]
    keys = ["distilled 2-RF", "distilled 1-RF", *ref]
    return "; on black squares: " + ", ".join(f"{k} {ch.on_support[k]:.0%}" for k in keys)


def _ordering(values: dict[str, float], chain: list[str]) -> bool:
    return all(values[a] < values[b] for a, b in zip(chain[:-1], chain[1:], strict=True))


def claims_theory(th: TheoryCheck, sc: str) -> list[Claim]:
    """The exact Gaussian case (identities checked numerically)."""
    se = f"{math.sqrt(2 / (th.d * th.n)):.1%}"
    return [
        claim_within(
            "S(1-RF) Gaussian: numerics vs d sigma (2 - pi/2)",
            "S(1-RF) = d sigma (2 - pi/2) for N(0, I) -> N(mu, sigma^2 I)",
            th.straightness, th.straightness_formula, 0.03, sc,
            f"d = {th.d}, sigma = {th.sigma}, {th.n} paths (MC standard error "
            f"{th.straightness_se / th.straightness_formula:.1%}), rk4 + Simpson, exact field",
        ),
        claim_below(
            "Gaussian 2-RF: one Euler step is exact (max error)",
            "2-RF is straight (S = 0): one step is exact", th.euler_2rf_error, 1e-9, sc,
            f"|Z0 + v2(Z0, 0) - (mu + sigma Z0)| over {th.n} points; 1-RF one step lands "
            f"on mu to {th.one_step_spread:.1e}",
        ),
        claim_within(
            "Gaussian 1-RF one step: W2^2 = d sigma^2",
            "one Euler step of 1-RF collapses to mu: W2^2 = d sigma^2", th.w2_sq,
            th.w2_sq_formula, 0.03, sc, f"E|X1 - mu|^2 by Monte Carlo, {th.n} samples (SE {se})",
        ),
    ]  # fmt: skip


def claims_2d(chains: dict[str, Chain2D], s: Settings) -> list[Claim]:
    """Reflow straightens (S drops), rectified couplings cross less, and the one-step
    ranking distilled 2-RF < distilled 1-RF < 1-RF with one Euler step, per target."""
    out = []
    for a, b in (("1-RF", "2-RF"), ("2-RF", "3-RF")):
        ratios = {n: c.straightness[b] / c.straightness[a] for n, c in chains.items()}
        worst = max(ratios.values())
        note = "; ".join(
            f"{n}: S {chains[n].straightness[a]:.3g} -> {chains[n].straightness[b]:.3g} (x{v:.2f})"
            for n, v in ratios.items()
        )
        out.append(Claim(
            f"S({b}) / S({a}) on 2D targets (largest ratio)",
            "each reflow straightens the paths (S decreases)", worst, "< 1 on every target",
            bool(worst < 1), s.scale, note,
        ))  # fmt: skip
    ind, c1 = "lines: independent pairs (1-RF training)", "lines: 1-RF coupling (2-RF training)"
    c2 = "lines: 2-RF coupling (3-RF training)"
    counts = {n: c.crossings for n, c in chains.items()}
    out.append(Claim(
        "crossing interpolation lines: 1-RF coupling vs independent pairs",
        "rectified couplings have (nearly) non-crossing straight interpolations",
        "; ".join(f"{n}: {c[ind]} -> {c[c1]}" for n, c in counts.items()),
        "fewer crossings on every target", all(c[c1] < c[ind] for c in counts.values()), s.scale,
        f"{s.n_paths_2d} pairs per target; 2-RF coupling: "
        + ", ".join(f"{n} {c[c2]}" for n, c in counts.items()),
    ))  # fmt: skip
    order = ["distilled 2-RF", "distilled 1-RF", one_step_label(1)]
    ref = f"1-RF, {s.reference_steps_2d} Euler steps"
    for n, ch in chains.items():
        sw, en = ch.sliced_w2, ch.energy
        out.append(Claim(
            f"one-step ranking on {n}: distilled 2-RF < distilled 1-RF < 1-RF 1 step",
            "CIFAR-10 one-step FID: distilled 2-RF 4.85 < distilled 1-RF 6.18 "
            "< 1-RF one Euler step",
            " < ".join(f"{sw[k]:.3f}" for k in order) + " (SW2)",
            "ordering holds in sliced W2 and in energy distance",
            bool(_ordering(sw, order) and _ordering(en, order)), s.scale,
            "energy: " + " / ".join(f"{en[k]:.4f}" for k in order)
            + f"; many-step 1-RF reference SW2 {sw[ref]:.3f}, "
            f"2-RF 1 step {sw[one_step_label(2)]:.3f}" + _support_note(ch),
        ))  # fmt: skip
    return out


def claims_digits(dg: DigitsResult, s: Settings) -> list[Claim]:
    """Distilling the 2-RF beats distilling the 1-RF teacher directly (InstaFlow)."""
    fd, acc, top = dg.fd, dg.accuracy, f"1-RF teacher, {s.nfe_steps[-1]} Euler steps"
    return [Claim(
        "digits one-step FD: distilled 2-RF < distilled 1-RF",
        "CIFAR-10 one-step FID 6.18 (distilled 1-RF) -> 4.85 (distilled 2-RF)",
        f"{fd['distilled 1-RF']:.3g} -> {fd['distilled 2-RF']:.3g}",
        "FD(distilled 2-RF) < FD(distilled 1-RF)",
        bool(fd["distilled 2-RF"] < fd["distilled 1-RF"]), s.scale,
        f"class accuracy {acc['distilled 1-RF']:.1%} -> {acc['distilled 2-RF']:.1%}; teacher "
        f"{s.nfe_steps[-1]} steps: FD {fd[top]:.3g}, accuracy {acc[top]:.1%}; teacher 1 step FD "
        f"{fd['1-RF teacher, 1 Euler step']:.3g}; floor {dg.fd_floor:.3g}; n = {s.n_fd}, "
        f"guidance {s.guidance_reflow} (reflow) / {s.guidance_distill} (distillation)",
    )]  # fmt: skip


def claims(r: Results) -> list[Claim]:
    """The card's claims at this scale; criteria fixed before measuring."""
    s = replace(r.settings, scale=r.scale)
    return claims_theory(r.theory, r.scale) + claims_2d(r.chains, s) + claims_digits(r.digits, s)


# ---- figures ------------------------------------------------------------------------------
COLORS = {
    "1-RF": "#1f77b4", "2-RF": "#ff7f0e", "3-RF": "#2ca02c",
    "distilled 1-RF": "#9467bd", "distilled 2-RF": "#d62728",
}  # fmt: skip
LINE = dict(width=1, color="rgba(31,119,180,0.5)")
END = dict(size=4, color="#d62728")


def _v(t: Tensor, decimals: int = 4) -> list[float]:
    """Plain floats for plotly (it converts tensors element by element, slowly), rounded:
    a dashboard page parses every figure's JSON while its widgets start, and the digits
    beyond the fourth decimal would only make it longer."""
    return torch.as_tensor(t).detach().cpu().double().round(decimals=decimals).tolist()


def _points(x: Tensor, marker: dict, decimals: int = 4) -> go.Scatter:
    return go.Scatter(
        x=_v(x[:, 0], decimals), y=_v(x[:, 1], decimals), mode="markers", marker=marker
    )


def _lines(paths: Tensor, line: dict = LINE) -> go.Scatter:
    """All m paths (T + 1, m, 2) as one polyline with None breaks (a NaN would stop a live
    figure's updates)."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for j in range(paths.shape[1]):
        xs += _v(paths[:, j, 0]) + [None]
        ys += _v(paths[:, j, 1]) + [None]
    return go.Scatter(x=xs, y=ys, mode="lines", line=line)


def _plane_grid(
    panels: list[list[list[go.Scatter]]],
    titles: list[str],
    spacing: tuple[float, float],
    axes: dict | None = None,
    font: int = 10,
    **layout: object,
) -> go.Figure:
    """Rows of equal-aspect panels (each a list of traces), titled row by row."""
    from plotly.subplots import make_subplots

    rows, cols = len(panels), len(panels[0])
    fig = make_subplots(
        rows,
        cols,
        subplot_titles=titles,
        horizontal_spacing=spacing[0],
        vertical_spacing=spacing[1],
    )
    for i, (row, col) in enumerate(((r, c) for r in range(rows) for c in range(cols)), start=1):
        for trace in panels[row][col]:
            fig.add_trace(trace, row=row + 1, col=col + 1)
        fig.update_xaxes(**(axes or {}), row=row + 1, col=col + 1)
        fig.update_yaxes(
            **(axes or {}), scaleanchor=f"x{i}", scaleratio=1, row=row + 1, col=col + 1
        )
    fig.update_annotations(font_size=font)
    fig.update_layout(template="plotly_white", showlegend=False, **layout)
    return fig


def _bars(
    groups: dict[str, dict[str, float]], colors: dict[str, str], **layout: object
) -> go.Figure:
    """Grouped bars: groups {series: {x label: value}}."""
    fig = go.Figure(
        [
            go.Bar(name=k, x=list(g), y=list(g.values()), marker_color=colors.get(k))
            for k, g in groups.items()
        ]
    )
    fig.update_layout(template="plotly_white", barmode="group", **layout)
    return fig


def straightness_figure(chains: dict[str, Chain2D]) -> go.Figure:
    """S of 1-, 2-, 3-RF on every 2D target (bars)."""
    groups = {k: {n: c.straightness[k] for n, c in chains.items()} for k in ROUNDS}
    return _bars(
        groups, COLORS, title="Straightness S per reflow round (0 = straight paths)",
        height=360, width=600, yaxis_title="S = int E|(Z1 - Z0) - v|^2 dt",
    )  # fmt: skip


def one_step_quality_figure(chains: dict[str, Chain2D]) -> go.Figure:
    """Sliced W2 to the target of every one-step method (and the many-step reference)."""
    methods = list(next(iter(chains.values())).sliced_w2)
    groups = {m: {n: c.sliced_w2[m] for n, c in chains.items()} for m in methods}
    return _bars(
        groups, {}, title="One-step quality: sliced W2 to the target (lower is better)",
        height=380, width=700, yaxis_title="sliced W2",
    )  # fmt: skip


def one_step_samples_figure(chains: dict[str, Chain2D], n: int = 300) -> go.Figure:
    """Samples of each one-step method beside the target, one row per 2D target (first n
    samples of each)."""
    methods = ["target", *next(iter(chains.values())).samples]
    panels = [
        [[_points(x[:n], dict(size=2.5, color="#444" if k == "target" else "#1f77b4"), 3)]
         for k, x in {"target": ch.target, **ch.samples}.items()]
        for ch in chains.values()
    ]  # fmt: skip
    titles = [f"{ch}: {m}" if j == 0 else m for ch in chains for j, m in enumerate(methods)]
    return _plane_grid(
        panels, titles, (0.01, 0.08), dict(range=[-3.5, 3.5], visible=False),
        title="One network evaluation per sample (the many-step 1-RF is the reference)",
        height=60 + 200 * len(chains), width=170 * len(methods),
        margin=dict(l=10, r=10, t=70, b=10),
    )  # fmt: skip


def crossings_figure(chains: dict[str, Chain2D]) -> go.Figure:
    """Straight interpolation lines of independent pairs, of the 1-RF and of the 2-RF
    couplings (what 1-RF, 2-RF, 3-RF are trained on) with their crossing counts, one row
    per 2D target."""
    panels = [
        [[_lines(x), _points(x[-1], END)] for x in ch.lines.values()] for ch in chains.values()
    ]
    titles = [
        f"{ch.name}: {k}<br>{ch.crossings['lines: ' + k]} crossing pairs"
        for ch in chains.values()
        for k in ch.lines
    ]
    return _plane_grid(
        panels, titles, (0.03, 0.1), dict(visible=False), font=11,
        title="The straight lines each round trains on (noise -> red end points)",
        height=70 + 300 * len(chains), width=900, margin=dict(l=10, r=10, t=90, b=10),
    )  # fmt: skip


def nfe_figure(dg: DigitsResult) -> go.Figure:
    """Digits FD against Euler steps for the teacher and the 2-RF, with the distilled
    one-step models at 1."""
    fig = go.Figure()
    for label, color in (("1-RF teacher", COLORS["1-RF"]), ("2-RF", COLORS["2-RF"])):
        steps, fd, acc = dg.curves[label]
        fig.add_scatter(
            x=_v(steps), y=_v(fd), mode="lines+markers", line=dict(color=color),
            name=f"{label} (guidance {dg.guidance[label]})",
            text=[f"accuracy {a:.0%}" for a in acc.tolist()],
        )  # fmt: skip
    for label in STUDENTS:
        fig.add_scatter(
            x=[1], y=[dg.fd[label]], mode="markers", name=label,
            marker=dict(size=12, symbol="star", color=COLORS[label]),
            text=[f"accuracy {dg.accuracy[label]:.0%}"],
        )  # fmt: skip
    if math.isfinite(dg.fd_floor):
        fig.add_hline(
            y=dg.fd_floor, line_dash="dot", annotation_text="training images vs held-out",
            annotation_position="top left",
        )  # fmt: skip
    fig.update_layout(
        title="Digits: Frechet distance vs number of Euler steps", template="plotly_white",
        height=380, width=620, yaxis=dict(title="digits Frechet distance", type="log"),
        xaxis=dict(title="Euler steps (a guided step evaluates the net twice)", type="log"),
    )  # fmt: skip
    return fig


def digits_samples_figure(dg: DigitsResult) -> go.Figure:
    """The first 10 samples (one per class, same z0) of every method, one row each."""
    from pflow_explore.viz import image_grid_figure

    images = torch.cat([x[:10] for x in dg.samples.values()]).clamp(-1, 1)
    titles = [k if i == 0 else "" for k in dg.samples for i in range(10)]
    return image_grid_figure(
        images, nrow=10, titles=titles, tile_px=40, title="Digits 0-9 from the same noise"
    )


def gaussian_rf_figure(
    mu: tuple[float, float] = (2.5, 0.0), sigma: float = 0.35, n: int = 40, seed: int = 3
) -> go.Figure:
    """Exact 1-RF paths (``theory.gaussian_rf_flow``) and the exact 2-RF straight lines from
    the same starts to the same ends, N(0, I) -> N(mu, sigma^2 I) in 2D, with the one Euler
    step of 1-RF (every start lands on mu)."""
    from pflow_explore.theory.rectified_flow import gaussian_2rf_flow, gaussian_rf_flow

    z0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    m = torch.tensor(mu, dtype=torch.float64)
    t = torch.linspace(0, 1, 25, dtype=torch.float64)
    one_step_end = _points(m[None], dict(size=12, symbol="x", color="black"))
    panels = {
        "1-RF: curved, bunching at mid-time": gaussian_rf_flow(z0, t, m, sigma),
        "2-RF: straight lines, same end points": gaussian_2rf_flow(z0, t, m, sigma),
    }
    traces = [[_lines(p), _points(p[-1], END)] for p in panels.values()]
    return _plane_grid(
        [[traces[0] + [one_step_end], traces[1]]], list(panels), (0.05, 0.1),
        title=f"Exact rectified flows N(0, I) -> N({mu}, {sigma}^2 I); x: where one Euler "
        "step of 1-RF sends every start", height=340, width=820,
    )  # fmt: skip


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
    fig = go.Figure(
        [_lines(rf1, dict(width=1, color="rgba(31,119,180,0.6)")),
         _lines(rf2, dict(width=1, color="rgba(255,127,14,0.7)"))]
    )  # fmt: skip
    fig.update_layout(
        height=220, width=220, margin=dict(l=5, r=5, t=5, b=5), showlegend=False,
        template="plotly_white",
    )  # fmt: skip
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1)
    return fig
