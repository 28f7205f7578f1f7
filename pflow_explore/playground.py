"""The playground: a flow trained in seconds on points the learner draws (or a toy density),
with the package's own methods, then sampled with every step kept for the explorer.

Methods (:data:`METHODS`), all from the shared layers:

- ``rectified flow``: the 1-RF of ``flow_matching.train_rectified_flow``, sampled by Euler
  from z ~ N(0, I) at t = 0 to the data at t = 1 (flow time);
- ``rectified flow + reflow``: then ``distillation.reflow`` on the 1-RF's own ODE coupling
  (``flow_matching.sample_pairs``): the 2-RF, whose paths are straighter;
- ``diffusion (EDM)``: an ``edm.edm_denoiser`` trained with ``edm.edm_loss``, sampled by
  ``edm.heun_steps`` on the Karras grid from sigma_max down to 0 (noise-level time);
- ``diffusion (EDM), SDE sampler``: the same model (same training), sampled by the reverse
  SDE with ``edm.ancestral_steps`` on a grid ``SDE_STEPS_PER_ODE_STEP`` times finer;
- ``stochastic interpolant (SDE)``: the velocity b and denoiser eta of the linear interpolant
  x_t = (1 - t) x0 + t x1 + sqrt(t (1 - t)) z from N(0, I) to the points, learned with
  ``interpolant_learning.interpolant_losses`` (a ``samplers.LearnedPair``), sampled by the
  SDE dX = (b + eps s) dt + sqrt(2 eps) dW (``samplers.sample``; eps = 0: the ODE) on the
  cosine grid, flow time 0 -> 1.

The data a model sees is the drawn point cloud smoothed by a little Gaussian noise
(``jitter`` times its spread), so a few hundred clicks define a density. Training calls
``on_progress(stage, step, loss)`` after every step; ``cancel`` (a ``threading.Event``) set
from elsewhere stops it with :class:`Cancelled` at the next step.

Time convention: flow (rectified flow, interpolant: t = 0 noise, t = 1 data); noise level
(EDM: sigma).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from pflow_explore import distillation, edm, paths, samplers
from pflow_explore import flow_matching as fm
from pflow_explore.datasets.toy2d import TOY_2D, sample_toy
from pflow_explore.interpolant_learning import interpolant_losses, training_times
from pflow_explore.interpolants import get_interpolant
from pflow_explore.metrics import energy_distance
from pflow_explore.nets import MLP, NoiseLevelMLP
from pflow_explore.samplers import LearnedPair

METHODS = (
    "rectified flow",
    "rectified flow + reflow",
    "diffusion (EDM)",
    "diffusion (EDM), SDE sampler",
    "stochastic interpolant (SDE)",
)
INTERPOLANT = "stochastic interpolant (SDE)"
DIFFUSION = ("diffusion (EDM)", "diffusion (EDM), SDE sampler")  # one model, two samplers
SDE_STEPS_PER_ODE_STEP = 5  # the ancestral sampler's error shrinks like 1/steps (test_edm)
PRESETS = tuple(TOY_2D)
MIN_POINTS = 20
MAX_POINTS = 20000
Progress = Callable[[str, int, float], None]  # (stage, step, loss)
T_DELTA = 1e-3  # the interpolant trains on t in [T_DELTA, 1 - T_DELTA] (gamma > 0 there)


class Cancelled(Exception):
    """Training was stopped from outside (the playground's cancel button)."""


@dataclass(frozen=True)
class PlaygroundSettings:
    """Network width/depth, Adam steps (each stage), batch, learning rate, the jitter that
    smooths the points (a fraction of their spread), samples and sampler steps shown, the
    reflow's coupled pairs, the interpolant's SDE noise level eps, the seed."""

    steps: int = 1500
    batch: int = 256
    lr: float = 3e-3
    hidden: int = 128
    depth: int = 3
    jitter: float = 0.03
    n_samples: int = 500
    n_steps: int = 40
    reflow_pairs: int = 2000
    eps: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "hidden", "depth", "n_samples", "n_steps", "reflow_pairs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"the learning rate must be a positive number, got {self.lr!r}")
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise ValueError(f"eps (the SDE's noise level) must be >= 0, got {self.eps!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter!r}")


def check_points(points: object) -> Tensor:
    """The drawn points as a float32 tensor (n, 2); ValueError that says what is wrong."""
    try:
        x = torch.as_tensor(points, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"the points must be an (n, 2) array of numbers ({err})") from None
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"the points must have shape (n, 2), got {tuple(x.shape)}")
    if len(x) < MIN_POINTS:
        raise ValueError(
            f"draw at least {MIN_POINTS} points (there are {len(x)}): click or lasso on the canvas"
        )
    if len(x) > MAX_POINTS:
        raise ValueError(f"at most {MAX_POINTS} points, got {len(x)}")
    if not torch.isfinite(x).all():
        raise ValueError("the points contain NaN or infinite values")
    return x


def preset_points(name: str, n: int = 1000, seed: int = 0) -> Tensor:
    """n points (n, 2) of the toy density ``name`` (``datasets.toy2d.TOY_2D``)."""
    return sample_toy(name, n, torch.Generator().manual_seed(seed))


def smoothed_sampler(
    points: Tensor, jitter: float
) -> Callable[[int, torch.Generator], tuple[Tensor, None]]:
    """sample(n, generator) -> (n points drawn with replacement plus N(0, (jitter s)^2)
    noise, None), s the points' mean per-axis standard deviation."""
    spread = float(points.std(0).mean()) if len(points) > 1 else 1.0
    scale = jitter * (spread if spread > 0 else 1.0)

    def sample(n: int, generator: torch.Generator) -> tuple[Tensor, None]:
        idx = torch.randint(len(points), (n,), generator=generator)
        return points[idx] + scale * torch.randn(n, 2, generator=generator), None

    return sample


@dataclass
class TrainedFlow:
    """A trained model of ``method``: sample it with :meth:`trajectories`. losses: per stage."""

    method: str
    model: nn.Module
    points: Tensor
    settings: PlaygroundSettings
    losses: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    @torch.no_grad()
    def trajectories(self, n: int | None = None, seed: int = 1) -> tuple[Tensor, Tensor]:
        """(times (T + 1,), states (T + 1, n, 2)) from noise to samples: flow time 0 -> 1
        for rectified flows, sigma_max -> 0 for EDM (its noise starts at sigma_max z)."""
        s = self.settings
        z = torch.randn(n or s.n_samples, 2, generator=torch.Generator().manual_seed(seed))
        if self.method == DIFFUSION[1]:  # the reverse SDE: ancestral steps, a noise per step
            sigmas = paths.karras_sigmas(s.n_steps * SDE_STEPS_PER_ODE_STEP)
            gen = torch.Generator().manual_seed(seed + 1)
            steps = list(edm.ancestral_steps(self.model, z * float(sigmas[0]), sigmas, gen))
            return sigmas.double(), torch.stack([steps[0].x, *(st.x_next for st in steps)])
        if self.method == DIFFUSION[0]:
            sigmas = paths.karras_sigmas(s.n_steps)
            steps = list(edm.heun_steps(self.model, z * float(sigmas[0]), sigmas))
            states = torch.stack([steps[0].x, *(st.x_next for st in steps)])
            return sigmas.double(), states
        if self.method == INTERPOLANT:
            grid, gen = samplers.cosine_grid(s.n_steps), torch.Generator().manual_seed(seed + 1)
            traj = samplers.sample(self.model, z, s.eps, grid, gen, trajectory=True).trajectory
            return grid, traj
        traj = fm.euler_sample(self.model, z, s.n_steps, trajectory=True).trajectory
        return torch.linspace(0.0, 1.0, s.n_steps + 1, dtype=torch.float64), traj

    @torch.no_grad()
    def velocity(self, x: Tensor, time: float) -> Tensor:
        """The sampler's ODE field at ``time`` for points x (n, 2): the learned v(x, t) of a
        rectified flow (flow time), or EDM's dx/dsigma = (x - D(x; sigma)) / sigma at the
        noise level sigma = ``time`` > 0 (x - D at sigma = 0, where the field is singular), or
        the interpolant SDE's drift b + eps s (flow time)."""
        x = torch.as_tensor(x, dtype=torch.float32)
        if self.method == INTERPOLANT:
            return samplers.forward_drift(self.model, self.settings.eps)(x, torch.tensor(time))
        if self.method in DIFFUSION:
            sigma = max(float(time), 1e-3)
            return (x - self.model(x, sigma)) / (sigma if time > 0 else 1.0)
        return self.model(x, float(time))

    def quality(self, n: int = 1000, seed: int = 2) -> tuple[float, float]:
        """(energy distance of n samples to the m drawn points, its sampling floor).

        The floor is what two samples of one distribution give at these sizes: the distance
        between two halves of the points (sizes m/2, m/2), rescaled by the estimator's bias
        (1/n + 1/m) / (4/m), since the energy distance of two finite samples of one law is
        proportional to 1/n_1 + 1/n_2."""
        _, states = self.trajectories(n, seed)
        gen = torch.Generator().manual_seed(seed)
        perm, m = torch.randperm(len(self.points), generator=gen), len(self.points)
        halves = energy_distance(self.points[perm[: m // 2]], self.points[perm[m // 2 :]])
        return energy_distance(states[-1], self.points), halves * (1 / n + 1 / m) / (4 / m)


def _net(s: PlaygroundSettings) -> nn.Module:
    """The velocity MLP v(x, t) (n, 2) -> (n, 2) of the rectified flows."""
    return MLP(2, hidden=s.hidden, depth=s.depth)


def _hooks(stage: str, on_progress: Progress | None, cancel: threading.Event | None) -> Callable:
    def callback(step: int, loss: float) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"training stopped at step {step} of {stage}")
        if on_progress is not None:
            on_progress(stage, step, loss)

    return callback


def train(
    points: object,
    method: str,
    settings: PlaygroundSettings | None = None,
    on_progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> TrainedFlow:
    """Train ``method`` on the points (n, 2); raises ValueError for bad input, Cancelled
    when ``cancel`` is set, training.TrainingDiverged when the loss becomes NaN."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    s, x = settings or PlaygroundSettings(), check_points(points)
    start, losses = time.perf_counter(), {}
    stage = fm.Stage(s.steps, s.batch, s.lr, seed=s.seed, init_seed=s.seed, desc="playground")
    sample = smoothed_sampler(x, s.jitter)
    if method in DIFFUSION:
        sigma_data = float(x.std())
        gen = torch.Generator().manual_seed(s.seed + 1)

        def loss_fn(model: nn.Module, step: int) -> Tensor:
            x0, _ = sample(s.batch, gen)
            return edm.edm_loss(model, x0, gen)

        make = lambda: edm.edm_denoiser(NoiseLevelMLP(2, s.hidden, s.depth), sigma_data)  # noqa: E731
        fit = fm.train_stage(make, loss_fn, stage, callback=_hooks("EDM", on_progress, cancel))
        losses["EDM"] = fit.losses
        return TrainedFlow(method, fit.model, x, s, losses, time.perf_counter() - start)
    if method == INTERPOLANT:
        interp, gen = get_interpolant("linear", "sqrt"), torch.Generator().manual_seed(s.seed + 1)

        def pair_loss(model: nn.Module, step: int) -> Tensor:
            x1, _ = sample(s.batch, gen)
            x0, z = torch.randn(s.batch, 2, generator=gen), torch.randn(s.batch, 2, generator=gen)
            t = training_times(s.batch, T_DELTA, gen)
            return sum(interpolant_losses(model, interp, x0, x1, t, z))

        # two networks, four evaluations a step: each at half the width keeps it near 10 s
        half = replace(s, hidden=max(16, s.hidden // 2))
        make = lambda: LearnedPair(_net(half), _net(half), interp.gamma, T_DELTA)  # noqa: E731
        fit = fm.train_stage(make, pair_loss, stage, callback=_hooks("b, eta", on_progress, cancel))
        losses["b, eta"] = fit.losses
        return TrainedFlow(method, fit.model, x, s, losses, time.perf_counter() - start)
    fit = fm.train_rectified_flow(
        lambda: _net(s), sample, stage, callback=_hooks("1-RF", on_progress, cancel)
    )
    losses["1-RF"], model = fit.losses, fit.model
    if method == "rectified flow + reflow":
        z0 = fm.gaussian_noise(s.reflow_pairs, 2, s.seed + 2)
        pairs = fm.sample_pairs(model, z0, n_steps=16)
        stage2 = fm.Stage(s.steps, s.batch, s.lr, seed=s.seed + 3, desc="playground reflow")
        hooks = _hooks("2-RF", on_progress, cancel)
        fit = distillation.reflow(model, pairs, stage2, callback=hooks)
        losses["2-RF"], model = fit.losses, fit.model
    return TrainedFlow(method, model, x, s, losses, time.perf_counter() - start)
