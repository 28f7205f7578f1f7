"""Chapter 03: rectified flow, reflow and one-step distillation, with guidance (InstaFlow).

Liu et al. 2022 (rectified flow) and Liu et al. 2023 (InstaFlow), card 03_rectified_flow.
Time runs the paper's way in this chapter: t = 0 is noise, t = 1 is data,

    X_t = t X1 + (1 - t) X0,   X0 ~ N(0, I),   X1 ~ data,

and samples move forward, dZ/dt = v(Z, t) from Z0 ~ N(0, I). (``paths.py`` has the
opposite convention; nothing here uses it.) The algorithm, as named steps:

1. :func:`rectified_flow_loss` E |v(X_t, t) - (X1 - X0)|^2: the 1-RF trains it on
   independent pairs (X0, X1), drawn afresh for every batch (:func:`train_rectified_flow`);
2. :func:`sample_pairs` couples noise and samples by integrating the ODE: (Z0, Z1 = ODE(Z0));
3. :func:`reflow` retrains on those coupled pairs: k-RF -> (k+1)-RF, straighter paths;
4. :func:`distill` trains a one-step map z0 -> z0 + s(z0, 0) onto the coupled Z1;
5. :func:`guided_velocity` v(.|null) + alpha (v(.|y) - v(.|null)): classifier-free guidance.
   Guidance during pair generation for reflow (``guidance_reflow``) and during
   distillation (``guidance_distill``) are separate, explicit settings (InstaFlow issue #24).

Experiments: 2D mixtures (Gaussian noise -> 8 Gaussians, moons, checkerboard), where
straightness, crossings and one-step quality are measured for 1-, 2-, 3-RF and the
distilled models; class-conditional digits (8x8 at cpu, 32x32 at gpu) as the stand-in for
text-to-image, measured by Frechet distance in the shipped classifier's features and the
classifier's accuracy on the conditioning label.

Networks see flat vectors x (n, d) (:class:`VelocityNet` reshapes for a UNet). The nets'
sinusoidal time embedding multiplies t by 1000, the official code's ``999 t`` (card, Traps).
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any

import plotly.graph_objects as go
import torch
from torch import Tensor, nn

from pflow_explore import scale, solvers
from pflow_explore.claims import Claim, claim_below, claim_within
from pflow_explore.training import FitResult, fit, fit_cached

CHAPTER = "rectified_flow"
VERSION = 1  # part of every cache key: bump when training code changes
NETS = ("mlp", "unet")
DISTILL_LOSSES = ("l2", "pseudo_huber")
DATASETS_2D = ("eight_gaussians", "two_moons", "checkerboard")
N_CLASSES = 10
Field = Callable[[Tensor, Tensor], Tensor]  # f(x (n, d), t) -> dx/dt (n, d), for solvers


# ---- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that sizes the chapter. ``scale``: the preset's name.

    2D (``*_2d``): the target densities ``datasets`` (names in ``datasets.toy2d.TOY_2D``),
    an MLP (hidden_2d, depth_2d), Adam steps per stage (1-RF, each reflow, each distillation),
    ``n_pairs_2d`` coupled pairs per reflow from rk4 with ``pair_steps_2d`` steps;
    evaluation on ``n_eval_2d`` samples, the many-step reference with
    ``reference_steps_2d`` Euler steps, straightness with ``straightness_steps`` rk4 steps,
    crossings on ``n_paths_2d`` paths.

    Digits: class-conditional 1-RF teacher (an MLP on d = image_size^2, or a UNet) trained
    with label dropout ``p_uncond`` for classifier-free guidance; ``guidance_reflow`` is the
    teacher's guidance scale when it generates the reflow pairs (which also serve to distil
    the teacher directly, as InstaFlow's baseline), ``guidance_distill`` the 2-RF's scale when
    it generates its distillation pairs (1: the 2-RF already learned a guided coupling).
    ``n_pairs`` pairs from rk4 with ``pair_steps`` steps. ``distill_loss``: "l2" or
    "pseudo_huber" (sqrt(|e|^2 + c^2) - c with c = huber_c sqrt(d)). Evaluation: ``n_fd``
    samples, Euler steps ``nfe_steps`` for the steps-vs-FD curves.
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

        if not self.datasets or any(name not in TOY_2D for name in self.datasets):
            raise ValueError(
                f"datasets must be a non-empty tuple of names in {tuple(TOY_2D)}, "
                f"got {self.datasets!r}"
            )
        if self.image_size not in (8, 16, 32):
            raise ValueError(f"image_size must be 8, 16 or 32, got {self.image_size}")
        if self.net not in NETS:
            raise ValueError(f"net must be one of {NETS}, got {self.net!r}")
        if self.distill_loss not in DISTILL_LOSSES:
            raise ValueError(
                f"distill_loss must be one of {DISTILL_LOSSES}, got {self.distill_loss!r}"
            )
        positive = (
            "hidden_2d depth_2d batch_2d rf_steps_2d reflow_steps_2d distill_steps_2d "
            "n_pairs_2d pair_steps_2d reference_steps_2d straightness_steps hidden depth "
            "batch teacher_steps reflow_steps distill_steps n_pairs pair_steps aug_copies"
        ).split()
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_eval_2d < 16 or self.n_fd < 16:
            raise ValueError(f"n_eval_2d and n_fd must be >= 16, got {self.n_eval_2d}, {self.n_fd}")
        if self.n_paths_2d < 2:
            raise ValueError(f"n_paths_2d must be >= 2, got {self.n_paths_2d}")
        for name in ("guidance_reflow", "guidance_distill"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"p_uncond must lie in [0, 1), got {self.p_uncond}")
        guided = self.guidance_reflow != 1 or self.guidance_distill != 1
        if guided and self.p_uncond == 0:
            raise ValueError(
                "guidance scales other than 1 need the null class: set p_uncond > 0 "
                f"(got p_uncond=0, guidance_reflow={self.guidance_reflow}, "
                f"guidance_distill={self.guidance_distill})"
            )
        if not 0 <= self.t_eps < 1:
            raise ValueError(f"t_eps must lie in [0, 1), got {self.t_eps}")
        steps = self.nfe_steps
        if (
            not steps
            or steps[0] != 1
            or any(b <= a for a, b in zip(steps[:-1], steps[1:], strict=True))
        ):
            raise ValueError(f"nfe_steps must increase strictly from 1, got {steps!r}")
        if not self.huber_c > 0 or not self.lr > 0 or not self.lr_2d > 0:
            raise ValueError("huber_c, lr and lr_2d must be > 0")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in (0, 1), got {self.ema_decay}")


SETTINGS = {
    "tiny": Settings(
        scale="tiny",
        datasets=("eight_gaussians",),
        hidden_2d=64,
        depth_2d=2,
        rf_steps_2d=300,
        reflow_steps_2d=150,
        distill_steps_2d=150,
        n_pairs_2d=2000,
        pair_steps_2d=8,
        n_eval_2d=1000,
        reference_steps_2d=32,
        straightness_steps=16,
        n_paths_2d=48,
        hidden=64,
        depth=2,
        batch=128,
        lr=2e-3,
        ema_decay=0.99,
        teacher_steps=300,
        reflow_steps=100,
        distill_steps=100,
        n_pairs=512,
        pair_steps=4,
        n_fd=256,
        nfe_steps=(1, 8),
    ),
    "cpu": Settings(scale="cpu"),
    "gpu": Settings(
        scale="gpu",
        rf_steps_2d=4000,
        reflow_steps_2d=2000,
        distill_steps_2d=2000,
        n_pairs_2d=50000,
        pair_steps_2d=64,
        n_eval_2d=5000,
        n_paths_2d=96,
        image_size=32,
        augment=True,
        aug_copies=8,
        net="unet",
        unet_base=48,
        unet_mults=(1, 2, 2),
        batch=256,
        lr=5e-4,
        ema_decay=0.9995,
        teacher_steps=8000,
        reflow_steps=6000,
        distill_steps=4000,
        n_pairs=100_000,
        pair_steps=8,
        n_fd=5000,
        nfe_steps=(1, 2, 4, 8, 16, 32, 64),
    ),
}

FIELDS_2D = (
    "hidden_2d",
    "depth_2d",
    "batch_2d",
    "lr_2d",
    "rf_steps_2d",
    "reflow_steps_2d",
    "distill_steps_2d",
    "n_pairs_2d",
    "pair_steps_2d",
    "t_eps",
    "seed",
)
FIELDS_DIGITS = (
    "image_size",
    "augment",
    "aug_copies",
    "net",
    "hidden",
    "depth",
    "unet_base",
    "unet_mults",
    "batch",
    "lr",
    "ema_decay",
    "teacher_steps",
    "reflow_steps",
    "distill_steps",
    "p_uncond",
    "guidance_reflow",
    "guidance_distill",
    "n_pairs",
    "pair_steps",
    "distill_loss",
    "huber_c",
    "t_eps",
    "seed",
)


def settings(scale_name: str | None = None, **changes: object) -> Settings:
    """The preset for the resolved scale, with ``changes`` applied (validated)."""
    return replace(scale.preset(SETTINGS, scale_name), **changes)


# ---- the velocity network -----------------------------------------------------------------
class VelocityNet(nn.Module):
    """v(x, t, y): flat x (n, d), t float / 0-d / (n,), y (n,) labels or None -> (n, d).

    Wraps an MLP (which takes (n, d)) or a UNet (which takes images, ``image_shape``
    (C, H, W)). ``n_classes`` is the net's (None: unconditional); label ``n_classes`` is
    the null class of classifier-free guidance.
    """

    def __init__(self, net: nn.Module, image_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.net, self.image_shape = net, image_shape

    @property
    def n_classes(self) -> int | None:
        return getattr(self.net, "n_classes", None)

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        inp = x.reshape(-1, *self.image_shape) if self.image_shape is not None else x
        return self.net(inp, t, y).reshape(x.shape)


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


# ---- the algorithm ------------------------------------------------------------------------
def interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """X_t = t X1 + (1 - t) X0 (card, "1-rectified flow"). x0, x1: (n, d); t: (n,) or ()."""
    t = t.reshape(-1, *([1] * (x0.dim() - 1))) if t.dim() else t
    return t * x1 + (1 - t) * x0


def rectified_flow_loss(
    v: Callable[..., Tensor], x0: Tensor, x1: Tensor, t: Tensor, y: Tensor | None = None
) -> Tensor:
    """The rectified-flow regression (card, "Method"), a scalar:

        L = E |v(X_t, t | y) - (X1 - X0)|^2 / d,   X_t = t X1 + (1 - t) X0,

    the mean over the batch and the d coordinates. x0 (n, d) noise, x1 (n, d) data (or a
    coupled Z1), t (n,) in [eps, 1], y (n,) labels or None. Its minimiser is
    v(x, t) = E[X1 - X0 | X_t = x], whose flow has the marginals of X_t.
    """
    xt = interpolate(x0, x1, t)
    return ((v(xt, t, y) - (x1 - x0)) ** 2).mean()


def guided_velocity(
    v: Callable[..., Tensor], x: Tensor, t: float | Tensor, y: Tensor | None, alpha: float
) -> Tensor:
    """Classifier-free guidance (InstaFlow's v_alpha; card), (n, d):

        v_alpha(x, t | y) = v(x, t | null) + alpha (v(x, t | y) - v(x, t | null)).

    alpha = 1: the conditional field; 0: the unconditional one; > 1: guided. Rows whose
    label is already the null class get v(.|null) whatever alpha. y None: unconditional v.
    Both branches run as one batch of 2 n.
    """
    if y is None or alpha == 1.0:
        return v(x, t, y)
    n_classes = getattr(v, "n_classes", None)
    if n_classes is None:
        raise ValueError("guidance needs a class-conditional net (n_classes set)")
    null = torch.full_like(y, n_classes)
    tt = torch.cat([t, t]) if isinstance(t, Tensor) and t.numel() > 1 else t
    cond, uncond = v(torch.cat([x, x]), tt, torch.cat([y, null])).chunk(2)
    return uncond + alpha * (cond - uncond)


def velocity_field(v: Callable[..., Tensor], y: Tensor | None = None, alpha: float = 1.0) -> Field:
    """f(x, t) = v_alpha(x, t | y) for the ODE solvers (y fixed for the batch)."""

    def f(x: Tensor, t: Tensor) -> Tensor:
        return guided_velocity(v, x, t, y, alpha)

    return f


@torch.no_grad()
def euler_sample(
    v: Callable[..., Tensor],
    z0: Tensor,
    n_steps: int,
    y: Tensor | None = None,
    alpha: float = 1.0,
    trajectory: bool = False,
) -> solvers.Solution:
    """Z1 from Z0 (n, d) by ``n_steps`` Euler steps of dZ/dt = v_alpha(Z, t | y) on an even
    grid from t = 0 to 1: Z_{k+1} = Z_k + v(Z_k, k/N) / N. One step: Z0 + v(Z0, 0)."""
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    times = torch.linspace(0.0, 1.0, int(n_steps) + 1, dtype=torch.float64)
    return solvers.odeint(velocity_field(v, y, alpha), z0, times, "euler", trajectory)


def one_step(
    v: Callable[..., Tensor], z0: Tensor, y: Tensor | None = None, alpha: float = 1.0
) -> Tensor:
    """One Euler step from t = 0 with dt = 1: Z1 = Z0 + v_alpha(Z0, 0 | y), (n, d).

    For a distilled model this *is* the one-step generator z0 -> z0 + s(z0, 0)."""
    return z0 + guided_velocity(v, z0, 0.0, y, alpha)


@dataclass
class Pairs:
    """Coupled pairs (Z0, Z1 = ODE(Z0)): z0, z1 (n, d) and labels y (n,) or None;
    ``seconds``: wall time to generate them; ``nfe``: network evaluations per pair."""

    z0: Tensor
    z1: Tensor
    y: Tensor | None = None
    seconds: float = 0.0
    nfe: int = 0


@torch.no_grad()
def sample_pairs(
    v: Callable[..., Tensor],
    z0: Tensor,
    y: Tensor | None = None,
    alpha: float = 1.0,
    n_steps: int = 32,
    method: str = "rk4",
    batch: int = 8192,
) -> Pairs:
    """Couple noise and data through the current flow (card, "Reflow"):

        Z1 = Z0 + int_0^1 v_alpha(Z_t, t | y) dt,

    integrated with ``method`` on ``n_steps`` even steps, in batches. z0 (n, d) ~ N(0, I);
    y (n,) labels (null rows follow the unconditional field) or None; alpha the guidance.
    """
    times = torch.linspace(0.0, 1.0, n_steps + 1, dtype=torch.float64)
    start = time.perf_counter()
    outs, nfe = [], 0
    for i in range(0, len(z0), batch):
        yb = None if y is None else y[i : i + batch]
        sol = solvers.odeint(velocity_field(v, yb, alpha), z0[i : i + batch], times, method)
        outs.append(sol.x)
        nfe = sol.nfe * (2 if (y is not None and alpha != 1.0) else 1)
    return Pairs(z0, torch.cat(outs), y, time.perf_counter() - start, nfe)


@dataclass(frozen=True)
class Stage:
    """How one network is trained: Adam ``steps`` on batches of ``batch``, ``lr`` with a
    short warm-up and cosine decay, EMA ``ema_decay`` (None: off), t ~ U[t_eps, 1],
    ``seed`` for batches and noise; for distillation the loss ("l2" / "pseudo_huber") and
    the pseudo-Huber c. ``desc`` labels the progress bar."""

    steps: int
    batch: int
    lr: float
    ema_decay: float | None = None
    t_eps: float = 1e-3
    seed: int = 0
    loss: str = "l2"
    huber_c: float = 0.0
    desc: str = "training"

    def fit_kwargs(self) -> dict[str, Any]:
        return dict(
            steps=self.steps,
            lr=self.lr,
            ema_decay=self.ema_decay,
            warmup=min(100, self.steps // 10),
            cosine=True,
            desc=self.desc,
        )


PairsLike = Pairs | Callable[[], Pairs]


def _resolve(pairs: PairsLike) -> Pairs:
    return pairs() if callable(pairs) else pairs


def _train(
    make_model: Callable[[], nn.Module],
    loss_fn: Callable[[nn.Module, int], Tensor],
    stage: Stage,
    key: tuple[str, dict[str, Any]] | None,
) -> FitResult:
    """fit, or fit_cached under (name, settings) = ``key`` so ``run`` never trains twice."""
    if key is None:
        return fit(make_model(), loss_fn, **stage.fit_kwargs())
    name, key_settings = key
    return fit_cached(
        CHAPTER, name, key_settings, make_model, loss_fn, version=VERSION, **stage.fit_kwargs()
    )


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _uniform_t(n: int, eps: float, gen: torch.Generator, device: torch.device) -> Tensor:
    return eps + (1 - eps) * torch.rand(n, generator=gen, device=device)


def train_rectified_flow(
    make_model: Callable[[], nn.Module],
    sample_data: Callable[[int, torch.Generator], tuple[Tensor, Tensor | None]],
    stage: Stage,
    p_uncond: float = 0.0,
    key: tuple[str, dict[str, Any]] | None = None,
) -> FitResult:
    """1-rectified flow: minimise :func:`rectified_flow_loss` on independent pairs.

    Every batch draws new data X1 (``sample_data(n, generator) -> (x1 (n, d), y or None)``)
    and new noise X0 ~ N(0, I), so the pairing is resampled every batch (card, Traps:
    RectifiedFlow issue #36 fixed it once per epoch). Labels are replaced by the null class
    with probability ``p_uncond`` (classifier-free guidance training).
    """
    from pflow_explore.nets import drop_labels

    gen_cpu = torch.Generator().manual_seed(stage.seed)
    state: dict[str, torch.Generator] = {}

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        dev = _device_of(model)
        if "gen" not in state:
            state["gen"] = torch.Generator(device=dev).manual_seed(stage.seed + 1)
        gen = state["gen"]
        x1, y = sample_data(stage.batch, gen_cpu)
        x1 = x1.to(dev)
        if y is not None:
            y = drop_labels(y, p_uncond, N_CLASSES, gen_cpu).to(dev)
        x0 = torch.randn(x1.shape, generator=gen, device=dev)
        t = _uniform_t(len(x1), stage.t_eps, gen, dev)
        return rectified_flow_loss(model, x0, x1, t, y)

    return _train(make_model, loss_fn, stage, key)


def _pair_batches(
    pairs: PairsLike, stage: Stage
) -> Callable[[nn.Module], tuple[Tensor, Tensor, Tensor | None, torch.Generator]]:
    """A batch drawer over coupled pairs, resolving lazy pairs on the first draw."""
    state: dict[str, Any] = {}

    def draw(model: nn.Module) -> tuple[Tensor, Tensor, Tensor | None, torch.Generator]:
        dev = _device_of(model)
        if "pairs" not in state:
            p = _resolve(pairs)
            state["pairs"] = (p.z0.to(dev), p.z1.to(dev), None if p.y is None else p.y.to(dev))
            state["gen"] = torch.Generator(device=dev).manual_seed(stage.seed)
        z0, z1, y = state["pairs"]
        gen = state["gen"]
        idx = torch.randint(len(z0), (stage.batch,), generator=gen, device=dev)
        return z0[idx], z1[idx], None if y is None else y[idx], gen

    return draw


def reflow(
    v_k: nn.Module,
    pairs: PairsLike,
    stage: Stage,
    key: tuple[str, dict[str, Any]] | None = None,
) -> FitResult:
    """Reflow (card, "Reflow"): the (k+1)-RF minimises :func:`rectified_flow_loss` on the
    coupled pairs (Z0, Z1) of the k-RF, the same pair for X0 and X1 (not re-paired):

        v_{k+1} = argmin E |v(t Z1 + (1 - t) Z0, t) - (Z1 - Z0)|^2.

    The coupling of v_{k+1} has the same marginals and straighter paths. The net starts
    from a copy of v_k (warm start); ``pairs`` may be a zero-argument function that makes
    them, called only if training happens (a cached model needs no pairs).
    """
    draw = _pair_batches(pairs, stage)

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        z0, z1, y, gen = draw(model)
        t = _uniform_t(len(z0), stage.t_eps, gen, z0.device)
        return rectified_flow_loss(model, z0, z1, t, y)

    return _train(lambda: copy.deepcopy(v_k).train(), loss_fn, stage, key)


def distillation_loss(
    student: Callable[..., Tensor],
    z0: Tensor,
    z1: Tensor,
    y: Tensor | None = None,
    loss: str = "l2",
    c: float = 0.0,
) -> Tensor:
    """One-step distillation loss (card, "Distillation"), a scalar over the batch:

        e = z0 + s(z0, 0 | y) - z1,   l2: |e|^2 / d,   pseudo_huber: sqrt(|e|^2 + c^2) - c.

    The paper uses LPIPS for images; here L2 or pseudo-Huber (Song & Dhariwal 2023).
    """
    if loss not in DISTILL_LOSSES:
        raise ValueError(f"loss must be one of {DISTILL_LOSSES}, got {loss!r}")
    err = (one_step(student, z0, y) - z1).flatten(1)
    if loss == "l2":
        return (err**2).mean()
    return ((err**2).sum(1) + c**2).sqrt().sub(c).mean()


def distill(
    v_k: nn.Module,
    pairs: PairsLike,
    stage: Stage,
    key: tuple[str, dict[str, Any]] | None = None,
) -> FitResult:
    """Distil the k-RF into a one-step generator z0 -> z0 + s(z0, 0 | y) on its coupled pairs
    (Z0, Z1): the student s starts from a copy of v_k (at t = 0 it already gives the one-step
    Euler map) and minimises :func:`distillation_loss` with ``stage.loss``."""
    draw = _pair_batches(pairs, stage)

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        z0, z1, y, _ = draw(model)
        c = stage.huber_c * math.sqrt(z0[0].numel())
        return distillation_loss(model, z0, z1, y, stage.loss, c)

    return _train(lambda: copy.deepcopy(v_k).train(), loss_fn, stage, key)


# ---- 2D experiment ------------------------------------------------------------------------
def noise(n: int, d: int, seed: int, device: torch.device | None = None) -> Tensor:
    """Z0 ~ N(0, I_d): (n, d) float32, seeded."""
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return z.to(device or scale.device())


def target_2d(name: str, n: int, seed: int) -> Tensor:
    """n samples (n, 2) of the toy density ``name`` (``datasets.toy2d``), seeded."""
    return target_2d_batch(name, n, torch.Generator().manual_seed(seed))


ROUNDS = ("1-RF", "2-RF", "3-RF")
STUDENTS = ("distilled 1-RF", "distilled 2-RF")


def _key_2d(s: Settings, name: str, stage: str) -> tuple[str, dict[str, Any]]:
    fields = {f: getattr(s, f) for f in FIELDS_2D}
    return f"2d-{name}-{stage}", {"dataset": name, "stage": stage, **fields}


def _stage_2d(s: Settings, steps: int, desc: str, offset: int) -> Stage:
    return Stage(steps, s.batch_2d, s.lr_2d, None, s.t_eps, s.seed + offset, desc=desc)


def train_chain_2d(s: Settings, name: str) -> dict[str, FitResult]:
    """1-RF, 2-RF, 3-RF and the distilled 1-RF and 2-RF for the 2D target ``name``.

    The (k+1)-RF is reflowed on fresh pairs of the k-RF (``n_pairs_2d`` rk4 solves); the
    distilled k-RF is trained on the same pairs. Every model is cached; pairs are generated
    only when a model that needs them is trained.
    """
    dev = scale.device()
    d1 = train_rectified_flow(
        lambda: make_net_2d(s).to(dev),
        lambda n, gen: (target_2d_batch(name, n, gen), None),
        _stage_2d(s, s.rf_steps_2d, f"{name}: 1-RF", 0),
        key=_key_2d(s, name, "1rf"),
    )
    out = {"1-RF": d1}
    for k in (1, 2):
        parent = out[f"{k}-RF"].model

        @functools.cache
        def pairs(parent: nn.Module = parent, k: int = k) -> Pairs:
            z0 = noise(s.n_pairs_2d, 2, s.seed + 10 + k, dev)
            return sample_pairs(parent, z0, n_steps=s.pair_steps_2d)

        out[f"{k + 1}-RF"] = reflow(
            parent,
            pairs,
            _stage_2d(s, s.reflow_steps_2d, f"{name}: reflow to {k + 1}-RF", 20 + k),
            key=_key_2d(s, name, f"{k + 1}rf"),
        )
        out[f"distilled {k}-RF"] = distill(
            parent,
            pairs,
            _stage_2d(s, s.distill_steps_2d, f"{name}: distil {k}-RF", 30 + k),
            key=_key_2d(s, name, f"distill{k}"),
        )
    for r in out.values():
        r.model.eval()
    return out


def target_2d_batch(name: str, n: int, generator: torch.Generator) -> Tensor:
    """A fresh batch (n, 2) of the toy density ``name`` from ``generator`` (CPU)."""
    from pflow_explore.datasets.toy2d import sample_toy

    return sample_toy(name, n, generator)


@dataclass
class Chain2D:
    """One 2D target through 1-, 2-, 3-RF and the distilled models.

    models: label -> net (ROUNDS and STUDENTS); losses: label -> loss per step;
    straightness: k-RF -> S (rk4 on ``straightness_steps``); samples: method -> (n, 2)
    one-step (and many-step reference) samples from the same z0; target (n, 2);
    sliced_w2, energy: method -> distance to target; paths: k-RF -> (T + 1, m, 2) Euler
    trajectories from z0_paths (m, 2); lines: coupling -> (2, m, 2) straight interpolation
    segments (independent pairs, 1-RF and 2-RF couplings); crossings: name -> count.
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


def evaluate_2d(s: Settings, name: str, fits: dict[str, FitResult]) -> Chain2D:
    """Straightness per round, one-step quality of every model, crossings before/after.

    One-step samples from the same z0 (n_eval_2d): k-RF with one Euler step, the distilled
    models, and 1-RF with ``reference_steps_2d`` Euler steps; sliced W2 (fixed projections)
    and energy distance to the same fresh target samples (common random numbers, so the
    differences are less noisy than the values).
    """
    from pflow_explore.metrics import energy_distance, sliced_w2
    from pflow_explore.trajectories import crossing_count, straightness_of_field

    dev = scale.device()
    models = {k: r.model for k, r in fits.items()}
    z0 = noise(s.n_eval_2d, 2, s.seed + 100, dev)
    target = target_2d(name, s.n_eval_2d, s.seed + 101)
    with torch.no_grad():
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
        sw2 = {
            k: sliced_w2(x, target, 256, torch.Generator().manual_seed(s.seed + 102))
            for k, x in samples.items()
        }
        energy = {k: energy_distance(x, target) for k, x in samples.items()}
        m = s.n_paths_2d
        zp = z0[:m]
        paths = {
            k: euler_sample(models[k], zp, s.straightness_steps, trajectory=True).trajectory.cpu()
            for k in ROUNDS
        }
        independent = torch.stack([zp.cpu(), target[:m]])
        lines = {
            "independent pairs (1-RF training)": independent,
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
    return Chain2D(
        name,
        models,
        {k: r.losses for k, r in fits.items()},
        {k: r.seconds for k, r in fits.items()},
        straight,
        samples,
        target,
        sw2,
        energy,
        zp.cpu(),
        paths,
        lines,
        crossings,
        on_support,
    )


# ---- digits experiment --------------------------------------------------------------------
def digits_data(s: Settings) -> tuple[Tensor, Tensor, Tensor]:
    """(train images (N, d), train labels (N,), held-out test images (M, d)), flat, [-1, 1].

    With ``augment``, the training split is ``aug_copies`` augmented copies (seeded)."""
    from pflow_explore.datasets.digits import augment, digits

    images, labels = digits(s.image_size, "train")
    if s.augment:
        gen = torch.Generator().manual_seed(s.seed + 1000)
        images = torch.cat([augment(images, gen) for _ in range(s.aug_copies)])
        labels = labels.repeat(s.aug_copies)
    test, _ = digits(s.image_size, "test")
    return images.flatten(1), labels, test.flatten(1)


def _key_digits(s: Settings, stage: str) -> tuple[str, dict[str, Any]]:
    fields = {f: getattr(s, f) for f in FIELDS_DIGITS}
    return f"digits-{stage}", {"stage": stage, **fields}


def _stage_digits(s: Settings, steps: int, desc: str, offset: int, distil: bool = False) -> Stage:
    return Stage(
        steps,
        s.batch,
        s.lr,
        s.ema_decay,
        s.t_eps,
        s.seed + offset,
        s.distill_loss if distil else "l2",
        s.huber_c,
        desc,
    )


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
    dev = scale.device()
    train, labels, _ = digits_data(s)
    d = train.shape[1]

    def sample_data(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(train), (n,), generator=gen)
        return train[idx], labels[idx]

    teacher = train_rectified_flow(
        lambda: make_net_digits(s).to(dev),
        sample_data,
        _stage_digits(s, s.teacher_steps, "digits: 1-RF teacher", 0),
        p_uncond=s.p_uncond,
        key=_key_digits(s, "teacher"),
    )

    @functools.cache
    def teacher_pairs() -> Pairs:
        z0 = noise(s.n_pairs, d, s.seed + 11, dev)
        y = pair_labels(s.n_pairs, s.p_uncond, s.seed + 12).to(dev)
        return sample_pairs(teacher.model, z0, y, s.guidance_reflow, s.pair_steps, batch=2048)

    rf2 = reflow(
        teacher.model,
        teacher_pairs,
        _stage_digits(s, s.reflow_steps, "digits: reflow to 2-RF", 21),
        key=_key_digits(s, "2rf"),
    )
    d1 = distill(
        teacher.model,
        teacher_pairs,
        _stage_digits(s, s.distill_steps, "digits: distil 1-RF", 31, distil=True),
        key=_key_digits(s, "distill1"),
    )

    @functools.cache
    def rf2_pairs() -> Pairs:
        z0 = noise(s.n_pairs, d, s.seed + 13, dev)
        y = pair_labels(s.n_pairs, s.p_uncond, s.seed + 14).to(dev)
        return sample_pairs(rf2.model, z0, y, s.guidance_distill, s.pair_steps, batch=2048)

    d2 = distill(
        rf2.model,
        rf2_pairs,
        _stage_digits(s, s.distill_steps, "digits: distil 2-RF", 32, distil=True),
        key=_key_digits(s, "distill2"),
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


def evaluate_digits(s: Settings, fits: dict[str, FitResult]) -> DigitsResult:
    """One-step FD / accuracy of the distilled models vs teacher and 2-RF at every step count.

    FD (``metrics.digits_frechet_distance``: the Frechet distance of the shipped digits
    classifier's features) to the held-out test digits; the floor is the
    FD of the training images themselves. Teacher samples with ``guidance_reflow`` (the
    distribution its pairs carry), the 2-RF and both students with ``guidance_distill``.
    """
    from pflow_explore.metrics import digits_features, frechet_distance
    from pflow_explore.trajectories import straightness_of_field

    dev = scale.device()
    shape = image_shape(s)
    train, _, test = digits_data(s)
    ref = digits_features(test.reshape(-1, *shape))  # once, not per FD
    models = {k: r.model for k, r in fits.items()}
    guidance = {
        "1-RF teacher": s.guidance_reflow,
        "2-RF": s.guidance_distill,
        "distilled 1-RF": 1.0,
        "distilled 2-RF": 1.0,
    }
    z0 = noise(s.n_fd, shape[1] * shape[2], s.seed + 200, dev)
    y = (torch.arange(s.n_fd) % N_CLASSES).to(dev)

    def score(x: Tensor) -> tuple[float, float]:
        imgs = x.clamp(-1, 1).reshape(-1, *shape).float().cpu()
        return frechet_distance(digits_features(imgs), ref), class_accuracy(imgs, y)

    fd, acc, samples, curves = {}, {}, {}, {}
    for label in ("1-RF teacher", "2-RF"):
        fds, accs = [], []
        for n in s.nfe_steps:
            x = torch.cat(
                [
                    euler_sample(models[label], zb, n, yb, guidance[label]).x
                    for zb, yb in zip(z0.split(2048), y.split(2048), strict=True)
                ]
            )
            f, a = score(x)
            fds.append(f)
            accs.append(a)
            if n == 1:
                fd[f"{label}, 1 Euler step"], acc[f"{label}, 1 Euler step"] = f, a
                samples[f"{label}, 1 Euler step"] = x[:20].cpu()
        top = s.nfe_steps[-1]
        fd[f"{label}, {top} Euler steps"], acc[f"{label}, {top} Euler steps"] = fds[-1], accs[-1]
        samples[f"{label}, {top} Euler steps"] = x[:20].cpu()
        curves[label] = (
            torch.tensor(s.nfe_steps),
            torch.tensor(fds, dtype=torch.float64),
            torch.tensor(accs, dtype=torch.float64),
        )
    with torch.no_grad():
        for label in ("distilled 1-RF", "distilled 2-RF"):
            x = torch.cat(
                [
                    one_step(models[label], zb, yb)
                    for zb, yb in zip(z0.split(2048), y.split(2048), strict=True)
                ]
            )
            fd[label], acc[label] = score(x)
            samples[label] = x[:20].cpu()
        n_s = min(256, s.n_fd)
        straight = {
            label: straightness_of_field(
                velocity_field(models[label], y[:n_s], guidance[label]),
                z0[:n_s],
                s.straightness_steps,
            )
            for label in ("1-RF teacher", "2-RF")
        }
    floor_idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(s.seed))
    floor = frechet_distance(digits_features(train[floor_idx[: s.n_fd]].reshape(-1, *shape)), ref)
    return DigitsResult(
        models,
        {k: r.losses for k, r in fits.items()},
        {k: r.seconds for k, r in fits.items()},
        all(r.from_cache for r in fits.values()),
        fd,
        acc,
        curves,
        straight,
        floor,
        {k: v.reshape(-1, *shape) for k, v in samples.items()},
        z0[:20].cpu(),
        y[:20].cpu(),
        guidance,
    )


# ---- adapters for the widgets -------------------------------------------------------------
def widget_field(v: nn.Module) -> Callable[[Tensor, float], Tensor]:
    """v(x, t) for ``ReflowExplorer``: x (n, 2) of any float dtype, t a float -> (n, 2) in
    x's dtype (the net runs in its own dtype, without gradients)."""
    dtype = next(v.parameters()).dtype

    def f(x: Tensor, t: float) -> Tensor:
        with torch.no_grad():
            return v(x.to(dtype), float(t)).to(x.dtype)

    return f


def widget_one_step(v: nn.Module) -> Callable[[Tensor], Tensor]:
    """z0 -> z0 + s(z0, 0) for ``ReflowExplorer``'s one-step maps (distilled models)."""
    field_fn = widget_field(v)
    return lambda z0: z0 + field_fn(z0, 0.0)


def digits_sampler(
    v: nn.Module, shape: tuple[int, ...], one_step_only: bool = False
) -> Callable[[int, float, Tensor, Tensor], Tensor]:
    """sample(n_steps, guidance, z0 (n, d), labels (n,)) for ``FewStepDigits``: the Euler
    trajectory (n_steps + 1, n, *shape) of the guided field, clamped to [-1, 1] for display.
    ``one_step_only``: a distilled model, whose final images (n, *shape) come from one step
    whatever n_steps (it was trained at t = 0 only)."""
    dtype = next(v.parameters()).dtype
    device = next(v.parameters()).device

    def sample(n_steps: int, guidance: float, z0: Tensor, labels: Tensor) -> Tensor:
        z = torch.as_tensor(z0).to(device, dtype).reshape(len(z0), -1)
        y = torch.as_tensor(labels).to(device).long()
        if one_step_only:
            x = euler_sample(v, z, 1, y, float(guidance)).x
            return x.clamp(-1, 1).reshape(-1, *shape).cpu()
        traj = euler_sample(v, z, int(n_steps), y, float(guidance), trajectory=True).trajectory
        return traj.clamp(-1, 1).reshape(len(traj), len(z), *shape).cpu()

    return sample


# ---- theory checks ------------------------------------------------------------------------
@dataclass
class TheoryCheck:
    """The Gaussian case N(0, I_d) -> N(mu, sigma^2 I_d) checked numerically.

    straightness / straightness_formula: S(1-RF) from the exact velocity (rk4 +
    Simpson on n paths) vs d sigma (2 - pi/2), with its Monte Carlo standard error;
    euler_2rf_error: max |Z0 + v2(Z0, 0) - (mu + sigma Z0)| (one Euler step of 2-RF vs the
    exact coupling); one_step_spread: max |Z0 + v(Z0, 0) - mu| for 1-RF; w2_sq /
    w2_sq_formula: E|X1 - mu|^2 (the W2^2 of the collapsed one-step samples, by Monte
    Carlo) vs d sigma^2.
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
    from pflow_explore.theory.rectified_flow import (
        gaussian_2rf_velocity,
        gaussian_rf_straightness,
        gaussian_rf_velocity,
        one_step_w2_sq,
    )
    from pflow_explore.trajectories import straightness_of_field

    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    mu = torch.randn(d, generator=gen, dtype=f64)
    z0 = torch.randn(n, d, generator=gen, dtype=f64)

    def v(x: Tensor, t: Tensor) -> Tensor:
        return gaussian_rf_velocity(x, t, mu, sigma)

    # S per path is (int (r' - (sigma - 1))^2 dt) |Z0|^2: the standard error of the mean is
    # S sd(|Z0|^2) / (E|Z0|^2 sqrt(n)) = S sqrt(2 / (d n))
    s_num = straightness_of_field(v, z0, n_steps)
    se = s_num * math.sqrt(2 / (d * n))
    euler2 = z0 + gaussian_2rf_velocity(z0, 0.0, mu, sigma)
    err2 = float((euler2 - (mu + sigma * z0)).abs().max())
    spread = float((z0 + v(z0, torch.tensor(0.0, dtype=f64)) - mu).abs().max())
    x1 = mu + sigma * torch.randn(n, d, generator=gen, dtype=f64)
    w2 = float(((x1 - mu) ** 2).sum(1).mean())
    return TheoryCheck(
        d,
        mu,
        sigma,
        n,
        s_num,
        se,
        gaussian_rf_straightness(d, sigma),
        err2,
        spread,
        w2,
        one_step_w2_sq(d, sigma),
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


def small_net_threads(s: Settings, small: bool = True) -> AbstractContextManager[None]:
    """One torch and BLAS thread inside the block when the nets are small and on the CPU.

    Why (:func:`scale.torch_threads`): the 2D MLPs and the 8x8 digits MLP work on a few
    hundred rows and the Frechet distance on a 128 x 128 matrix square root; measured on the
    loaded 2-core box, one Frechet distance took 1.3 s with two BLAS threads, 0.07 s with one.
    """
    active = small and scale.device().type == "cpu"
    return scale.torch_threads(1 if active else None, blas=True)


def prepare(s: Settings) -> None:
    """Train (or find in the cache / shipped folder) every model of the chapter."""
    with small_net_threads(s):
        for name in s.datasets:
            train_chain_2d(s, name)
    with small_net_threads(s, s.net == "mlp"):
        train_digits(s)


def run(s: Settings) -> Results:
    """Compose the steps: theory check, 2D chains (train, cached), digits (train, cached),
    and their evaluations."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    chains = {}
    with small_net_threads(s):
        theory = theory_check()
        tick("theory check")
        for name in s.datasets:
            fits = train_chain_2d(s, name)
            tick(f"2D {name}: train")
            chains[name] = evaluate_2d(s, name, fits)
            tick(f"2D {name}: evaluate")
    with small_net_threads(s, s.net == "mlp"):
        fits = train_digits(s)
        tick("digits: train")
        digits_result = evaluate_digits(s, fits)
        tick("digits: evaluate")
    return Results(s, s.scale, theory, chains, digits_result, seconds)


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


def claims(r: Results) -> list[Claim]:
    """The card's claims at this scale; criteria fixed before measuring."""
    sc, th = r.scale, r.theory
    out = [
        claim_within(
            "S(1-RF) Gaussian: numerics vs d sigma (2 - pi/2)",
            "S(1-RF) = d sigma (2 - pi/2) for N(0, I) -> N(mu, sigma^2 I)",
            th.straightness,
            th.straightness_formula,
            0.03,
            sc,
            f"d = {th.d}, sigma = {th.sigma}, {th.n} paths (MC standard error "
            f"{th.straightness_se / th.straightness_formula:.1%}), rk4 + Simpson, exact field",
        ),
        claim_below(
            "Gaussian 2-RF: one Euler step is exact (max error)",
            "2-RF is straight (S = 0): one step is exact",
            th.euler_2rf_error,
            1e-9,
            sc,
            f"|Z0 + v2(Z0, 0) - (mu + sigma Z0)| over {th.n} points; 1-RF one step lands "
            f"on mu to {th.one_step_spread:.1e}",
        ),
        claim_within(
            "Gaussian 1-RF one step: W2^2 = d sigma^2",
            "one Euler step of 1-RF collapses to mu: W2^2 = d sigma^2",
            th.w2_sq,
            th.w2_sq_formula,
            0.03,
            sc,
            f"E|X1 - mu|^2 by Monte Carlo, {th.n} samples (SE {math.sqrt(2 / (th.d * th.n)):.1%})",
        ),
    ]
    names = list(r.chains)
    for a, b in (("1-RF", "2-RF"), ("2-RF", "3-RF")):
        ratios = {n: r.chains[n].straightness[b] / r.chains[n].straightness[a] for n in names}
        worst = max(ratios.values())
        out.append(
            Claim(
                f"S({b}) / S({a}) on 2D targets (largest ratio)",
                "each reflow straightens the paths (S decreases)",
                worst,
                "< 1 on every target",
                bool(worst < 1),
                sc,
                "; ".join(
                    f"{n}: S {r.chains[n].straightness[a]:.3g} -> "
                    f"{r.chains[n].straightness[b]:.3g} (x{v:.2f})"
                    for n, v in ratios.items()
                ),
            )
        )
    ind, c1 = "lines: independent pairs (1-RF training)", "lines: 1-RF coupling (2-RF training)"
    c2 = "lines: 2-RF coupling (3-RF training)"
    counts = {n: r.chains[n].crossings for n in names}
    out.append(
        Claim(
            "crossing interpolation lines: 1-RF coupling vs independent pairs",
            "rectified couplings have (nearly) non-crossing straight interpolations",
            "; ".join(f"{n}: {c[ind]} -> {c[c1]}" for n, c in counts.items()),
            "fewer crossings on every target",
            all(c[c1] < c[ind] for c in counts.values()),
            sc,
            f"{r.settings.n_paths_2d} pairs per target; 2-RF coupling: "
            + ", ".join(f"{n} {c[c2]}" for n, c in counts.items()),
        )
    )
    order = ["distilled 2-RF", "distilled 1-RF", one_step_label(1)]
    for n in names:
        ch = r.chains[n]
        ok_sw = _ordering(ch.sliced_w2, order)
        ok_en = _ordering(ch.energy, order)
        out.append(
            Claim(
                f"one-step ranking on {n}: distilled 2-RF < distilled 1-RF < 1-RF 1 step",
                "CIFAR-10 one-step FID: distilled 2-RF 4.85 < distilled 1-RF 6.18 "
                "< 1-RF one Euler step",
                " < ".join(f"{ch.sliced_w2[k]:.3f}" for k in order) + " (SW2)",
                "ordering holds in sliced W2 and in energy distance",
                bool(ok_sw and ok_en),
                sc,
                "energy: "
                + " / ".join(f"{ch.energy[k]:.4f}" for k in order)
                + f"; many-step 1-RF reference SW2 "
                f"{ch.sliced_w2[f'1-RF, {r.settings.reference_steps_2d} Euler steps']:.3f}, "
                f"2-RF 1 step {ch.sliced_w2[one_step_label(2)]:.3f}" + _support_note(ch),
            )
        )
    dg = r.digits
    top = r.settings.nfe_steps[-1]
    out.append(
        Claim(
            "digits one-step FD: distilled 2-RF < distilled 1-RF",
            "CIFAR-10 one-step FID 6.18 (distilled 1-RF) -> 4.85 (distilled 2-RF)",
            f"{dg.fd['distilled 1-RF']:.3g} -> {dg.fd['distilled 2-RF']:.3g}",
            "FD(distilled 2-RF) < FD(distilled 1-RF)",
            bool(dg.fd["distilled 2-RF"] < dg.fd["distilled 1-RF"]),
            sc,
            f"class accuracy {dg.accuracy['distilled 1-RF']:.1%} -> "
            f"{dg.accuracy['distilled 2-RF']:.1%}; teacher {top} steps: FD "
            f"{dg.fd[f'1-RF teacher, {top} Euler steps']:.3g}, accuracy "
            f"{dg.accuracy[f'1-RF teacher, {top} Euler steps']:.1%}; teacher 1 step FD "
            f"{dg.fd['1-RF teacher, 1 Euler step']:.3g}; floor {dg.fd_floor:.3g}; "
            f"n = {r.settings.n_fd}, guidance {r.settings.guidance_reflow} (reflow) / "
            f"{r.settings.guidance_distill} (distillation)",
        )
    )
    return out


# ---- figures ------------------------------------------------------------------------------
def _v(t: Tensor, decimals: int = 4) -> list[float]:
    """Plain floats for plotly (it converts tensors element by element, slowly), rounded:
    a dashboard page parses every figure's JSON while its widgets start, and the digits
    beyond the fourth decimal would only make it longer."""
    return torch.as_tensor(t).detach().cpu().double().round(decimals=decimals).tolist()


COLORS = {
    "1-RF": "#1f77b4",
    "2-RF": "#ff7f0e",
    "3-RF": "#2ca02c",
    "distilled 1-RF": "#9467bd",
    "distilled 2-RF": "#d62728",
}


def straightness_figure(r: Results) -> go.Figure:
    """S of 1-, 2-, 3-RF on every 2D target (bars)."""
    fig = go.Figure(
        [
            go.Bar(
                name=k,
                x=list(r.chains),
                y=[c.straightness[k] for c in r.chains.values()],
                marker_color=COLORS[k],
            )
            for k in ROUNDS
        ]
    )
    fig.update_layout(
        title="Straightness S per reflow round (0 = straight paths)",
        template="plotly_white",
        barmode="group",
        height=360,
        width=600,
        yaxis_title="S = int E|(Z1 - Z0) - v|^2 dt",
    )
    return fig


def one_step_quality_figure(r: Results) -> go.Figure:
    """Sliced W2 to the target of every one-step method (and the many-step reference)."""
    methods = list(next(iter(r.chains.values())).sliced_w2)
    fig = go.Figure(
        [
            go.Bar(name=m, x=list(r.chains), y=[c.sliced_w2[m] for c in r.chains.values()])
            for m in methods
        ]
    )
    fig.update_layout(
        title="One-step quality: sliced W2 to the target (lower is better)",
        template="plotly_white",
        barmode="group",
        height=380,
        width=700,
        yaxis_title="sliced W2",
    )
    return fig


def one_step_samples_figure(r: Results, n: int = 300) -> go.Figure:
    """Samples of each one-step method beside the target, one row per 2D target (first n
    samples of each)."""
    from plotly.subplots import make_subplots

    chains = list(r.chains.values())
    methods = ["target", *chains[0].samples]
    titles = [f"{ch.name}: {m}" if j == 0 else m for ch in chains for j, m in enumerate(methods)]
    fig = make_subplots(
        len(chains),
        len(methods),
        subplot_titles=titles,
        horizontal_spacing=0.01,
        vertical_spacing=0.08,
    )
    for row, ch in enumerate(chains, start=1):
        panels = {"target": ch.target, **ch.samples}
        for col, (label, x) in enumerate(panels.items(), start=1):
            fig.add_scatter(
                x=_v(x[:n, 0], 3),
                y=_v(x[:n, 1], 3),
                mode="markers",
                marker=dict(size=2.5, color="#444" if label == "target" else "#1f77b4"),
                row=row,
                col=col,
            )
            i = (row - 1) * len(methods) + col
            fig.update_xaxes(range=[-3.5, 3.5], visible=False, row=row, col=col)
            fig.update_yaxes(
                range=[-3.5, 3.5],
                visible=False,
                scaleanchor=f"x{i}",
                scaleratio=1,
                row=row,
                col=col,
            )
    fig.update_annotations(font_size=10)
    fig.update_layout(
        title="One network evaluation per sample (the many-step 1-RF is the reference)",
        template="plotly_white",
        showlegend=False,
        height=60 + 200 * len(chains),
        width=170 * len(methods),
        margin=dict(l=10, r=10, t=70, b=10),
    )
    return fig


def _segments_xy(paths: Tensor) -> tuple[list[float | None], list[float | None]]:
    """All m paths (T + 1, m, 2) as one polyline with None breaks."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for j in range(paths.shape[1]):
        xs += _v(paths[:, j, 0]) + [None]
        ys += _v(paths[:, j, 1]) + [None]
    return xs, ys


def crossings_figure(r: Results) -> go.Figure:
    """Straight interpolation lines of independent pairs, of the 1-RF and of the 2-RF
    couplings (what 1-RF, 2-RF, 3-RF are trained on) with their crossing counts, one row
    per 2D target."""
    from plotly.subplots import make_subplots

    chains = list(r.chains.values())
    kinds = list(chains[0].lines)
    titles = [
        f"{ch.name}: {k}<br>{ch.crossings['lines: ' + k]} crossing pairs"
        for ch in chains
        for k in kinds
    ]
    fig = make_subplots(
        len(chains),
        len(kinds),
        subplot_titles=titles,
        horizontal_spacing=0.03,
        vertical_spacing=0.1,
    )
    for row, ch in enumerate(chains, start=1):
        for col, lines in enumerate(ch.lines.values(), start=1):
            xs, ys = _segments_xy(lines)
            fig.add_scatter(
                x=xs,
                y=ys,
                mode="lines",
                line=dict(width=1, color="rgba(31,119,180,0.5)"),
                row=row,
                col=col,
            )
            fig.add_scatter(
                x=_v(lines[-1, :, 0]),
                y=_v(lines[-1, :, 1]),
                mode="markers",
                marker=dict(size=4, color="#d62728"),
                row=row,
                col=col,
            )
            i = (row - 1) * len(kinds) + col
            fig.update_xaxes(visible=False, row=row, col=col)
            fig.update_yaxes(visible=False, scaleanchor=f"x{i}", scaleratio=1, row=row, col=col)
    fig.update_annotations(font_size=11)
    fig.update_layout(
        title="The straight lines each round trains on (noise -> red end points)",
        template="plotly_white",
        showlegend=False,
        height=70 + 300 * len(chains),
        width=900,
        margin=dict(l=10, r=10, t=90, b=10),
    )
    return fig


def nfe_figure(r: Results) -> go.Figure:
    """Digits FD against Euler steps for the teacher and the 2-RF, with the distilled
    one-step models at 1."""
    dg = r.digits
    fig = go.Figure()
    for label, color in (("1-RF teacher", COLORS["1-RF"]), ("2-RF", COLORS["2-RF"])):
        steps, fd, acc = dg.curves[label]
        fig.add_scatter(
            x=_v(steps),
            y=_v(fd),
            mode="lines+markers",
            name=f"{label} (guidance {dg.guidance[label]})",
            line=dict(color=color),
            text=[f"accuracy {a:.0%}" for a in acc.tolist()],
        )
    for label in STUDENTS:
        fig.add_scatter(
            x=[1],
            y=[dg.fd[label]],
            mode="markers",
            name=label,
            marker=dict(size=12, symbol="star", color=COLORS[label]),
            text=[f"accuracy {dg.accuracy[label]:.0%}"],
        )
    if math.isfinite(dg.fd_floor):
        fig.add_hline(
            y=dg.fd_floor,
            line_dash="dot",
            annotation_text="training images vs held-out",
            annotation_position="top left",
        )
    fig.update_layout(
        title="Digits: Frechet distance vs number of Euler steps",
        template="plotly_white",
        height=380,
        width=620,
        xaxis=dict(title="Euler steps (a guided step evaluates the net twice)", type="log"),
        yaxis=dict(title="digits Frechet distance", type="log"),
    )
    return fig


def digits_samples_figure(r: Results) -> go.Figure:
    """The first 20 samples (two per class, same z0) of every method, one row each."""
    from pflow_explore.viz import image_grid_figure

    dg = r.digits
    rows = list(dg.samples)
    images = torch.cat([dg.samples[k][:10] for k in rows]).clamp(-1, 1)
    titles = [k if i == 0 else "" for k in rows for i in range(10)]
    return image_grid_figure(
        images, nrow=10, titles=titles, tile_px=40, title="Digits 0-9 from the same noise"
    )


def gaussian_rf_figure(
    mu: tuple[float, float] = (2.5, 0.0), sigma: float = 0.35, n: int = 40, seed: int = 3
) -> go.Figure:
    """Exact 1-RF paths (``theory.gaussian_rf_flow``) and the exact 2-RF straight lines from
    the same starts to the same ends, N(0, I) -> N(mu, sigma^2 I) in 2D, with the one Euler
    step of 1-RF (every start lands on mu)."""
    from plotly.subplots import make_subplots

    from pflow_explore.theory.rectified_flow import gaussian_2rf_flow, gaussian_rf_flow

    z0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    m = torch.tensor(mu, dtype=torch.float64)
    t = torch.linspace(0, 1, 25, dtype=torch.float64)
    panels = {
        "1-RF: curved, bunching at mid-time": gaussian_rf_flow(z0, t, m, sigma),
        "2-RF: straight lines, same end points": gaussian_2rf_flow(z0, t, m, sigma),
    }
    fig = make_subplots(1, 2, subplot_titles=list(panels), horizontal_spacing=0.05)
    for i, paths in enumerate(panels.values(), start=1):
        xs, ys = _segments_xy(paths)
        fig.add_scatter(
            x=xs, y=ys, mode="lines", line=dict(width=1, color="rgba(31,119,180,0.5)"), row=1, col=i
        )
        fig.add_scatter(
            x=_v(paths[-1, :, 0]),
            y=_v(paths[-1, :, 1]),
            mode="markers",
            marker=dict(size=4, color="#d62728"),
            row=1,
            col=i,
        )
        fig.update_yaxes(scaleanchor=f"x{i}", scaleratio=1, row=1, col=i)
    fig.add_scatter(
        x=[mu[0]],
        y=[mu[1]],
        mode="markers",
        marker=dict(size=12, symbol="x", color="black"),
        row=1,
        col=1,
    )
    fig.update_layout(
        title=f"Exact rectified flows N(0, I) -> N({mu}, {sigma}^2 I); x: where one Euler "
        "step of 1-RF sends every start",
        template="plotly_white",
        showlegend=False,
        height=340,
        width=820,
    )
    return fig


def figures(r: Results) -> dict[str, go.Figure]:
    """The chapter's figures by name (what ``pflow-explore figures`` writes)."""
    return {
        "straightness": straightness_figure(r),
        "crossings": crossings_figure(r),
        "one_step_quality": one_step_quality_figure(r),
        "one_step_samples": one_step_samples_figure(r),
        "digits_nfe": nfe_figure(r),
        "digits_samples": digits_samples_figure(r),
    }


def preview() -> go.Figure:
    """Gaussian 1-RF paths Z_t = t mu + sqrt((1-t)^2 + t^2 sigma^2) Z0 (curved: they bunch
    up mid-way) beside the straight 2-RF paths with the same end points; closed form
    evaluated directly (the sympy derivation takes seconds)."""
    gen = torch.Generator().manual_seed(3)
    z0 = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    mu, sigma = torch.tensor([2.5, 0.0], dtype=torch.float64), 0.35
    t = torch.linspace(0, 1, 30, dtype=torch.float64)[:, None, None]
    rf1 = t * mu + ((1 - t) ** 2 + t**2 * sigma**2).sqrt() * z0
    rf2 = t * mu + (1 - t + t * sigma) * z0
    fig = go.Figure()
    for paths, color in ((rf1, "rgba(31,119,180,0.6)"), (rf2, "rgba(255,127,14,0.7)")):
        xs, ys = _segments_xy(paths)
        fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(width=1, color=color))
    fig.update_layout(
        title=None,
        height=220,
        width=220,
        margin=dict(l=5, r=5, t=5, b=5),
        showlegend=False,
        template="plotly_white",
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x", scaleratio=1)
    return fig
