"""Flow matching / rectified flow: interpolation, loss, guidance, Euler and one-step sampling,
couplings, and the 1-RF training loop (docs/papers.md).

Time runs the rectified-flow way in this module: t = 0 is noise, t = 1 is data,

    X_t = (1 - t) X0 + t X1,   X0 ~ N(0, I),   X1 ~ data,   dX_t/dt = X1 - X0,

and samples move forward, dZ/dt = v(Z, t) from Z0 ~ N(0, I) at t = 0 to Z1 at t = 1.
(``paths.py`` and the diffusion chapters run the other way, data at t = 0.)

A velocity ``v(x, t, y)`` takes flat x (n, d), t a float / 0-d / (n,) tensor and labels
y (n,) or None, and returns (n, d). A class-conditional v has ``n_classes``; the label
``n_classes`` is the null class of classifier-free guidance.

    loss = rectified_flow_loss(v, x0, x1, t)                 # E |v(X_t, t) - (X1 - X0)|^2 / d
    z1 = euler_sample(v, z0, n_steps=8, y=y, alpha=1.5).x    # guided Euler sampling
    pairs = sample_pairs(v, z0)                              # the ODE coupling (Z0, Z1)

Time convention: flow (t = 0 noise, t = 1 data).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from pflow_explore import scale, solvers
from pflow_explore.training import FitResult, LossFn, fit, fit_cached

Velocity = Callable[..., Tensor]  # v(x (n, d), t, y (n,) | None) -> (n, d)
Field = solvers.Field  # f(x (n, d), t) -> dx/dt (n, d), what the ODE solvers integrate


class VelocityNet(nn.Module):
    """v(x, t, y) on flat x (n, d) -> (n, d), wrapping an MLP (which takes (n, d)) or a UNet
    (which takes images of ``image_shape`` (C, H, W)). ``n_classes``: the net's (None:
    unconditional)."""

    def __init__(self, net: nn.Module, image_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.net, self.image_shape = net, image_shape

    @property
    def n_classes(self) -> int | None:
        return getattr(self.net, "n_classes", None)

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        inp = x.reshape(-1, *self.image_shape) if self.image_shape is not None else x
        return self.net(inp, t, y).reshape(x.shape)


# ---- interpolation and loss ---------------------------------------------------------------
def interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """X_t = t X1 + (1 - t) X0. x0, x1: (n, ...); t: (n,) or 0-d -> (n, ...)."""
    t = t.reshape(-1, *([1] * (x0.dim() - 1))) if t.dim() else t
    return t * x1 + (1 - t) * x0


def uniform_time(n: int, eps: float, generator: torch.Generator, device: torch.device) -> Tensor:
    """t ~ U[eps, 1], (n,): eps keeps t off the noise end, as in the official code."""
    return eps + (1 - eps) * torch.rand(n, generator=generator, device=device)


def rectified_flow_loss(
    v: Velocity, x0: Tensor, x1: Tensor, t: Tensor, y: Tensor | None = None
) -> Tensor:
    """The rectified-flow (flow-matching) regression, a scalar:

        L = E |v(X_t, t | y) - (X1 - X0)|^2 / d,   X_t = t X1 + (1 - t) X0,

    the mean over the batch and the d coordinates. x0 (n, d) noise, x1 (n, d) data (or a
    coupled Z1), t (n,), y (n,) labels or None. Its minimiser is v(x, t) = E[X1 - X0 | X_t = x],
    whose flow has the marginals of X_t (for Gaussians: ``theory.gaussian_rf_velocity``).
    """
    xt = interpolate(x0, x1, t)
    return ((v(xt, t, y) - (x1 - x0)) ** 2).mean()


# ---- guidance and sampling ----------------------------------------------------------------
def guided_velocity(
    v: Velocity, x: Tensor, t: float | Tensor, y: Tensor | None, alpha: float
) -> Tensor:
    """Classifier-free guidance (InstaFlow's v_alpha), (n, d):

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


def velocity_field(v: Velocity, y: Tensor | None = None, alpha: float = 1.0) -> Field:
    """f(x, t) = v_alpha(x, t | y) for the ODE solvers (y fixed for the batch)."""

    def f(x: Tensor, t: Tensor) -> Tensor:
        return guided_velocity(v, x, t, y, alpha)

    return f


@torch.no_grad()
def euler_sample(
    v: Velocity,
    z0: Tensor,
    n_steps: int,
    y: Tensor | None = None,
    alpha: float = 1.0,
    trajectory: bool = False,
) -> solvers.Solution:
    """Z1 from Z0 (n, d) by ``n_steps`` Euler steps of dZ/dt = v_alpha(Z, t | y) on an even
    grid from t = 0 to 1: Z_{k+1} = Z_k + v(Z_k, k/N) / N. ``.x`` (n, d); with ``trajectory``
    also ``.trajectory`` (N + 1, n, d)."""
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    times = torch.linspace(0.0, 1.0, int(n_steps) + 1, dtype=torch.float64)
    return solvers.odeint(velocity_field(v, y, alpha), z0, times, "euler", trajectory)


def one_step(v: Velocity, z0: Tensor, y: Tensor | None = None, alpha: float = 1.0) -> Tensor:
    """One Euler step from t = 0 with dt = 1: Z1 = Z0 + v_alpha(Z0, 0 | y), (n, d).

    For a distilled model this *is* the one-step generator z0 -> z0 + s(z0, 0)."""
    return z0 + guided_velocity(v, z0, 0.0, y, alpha)


@torch.no_grad()
def generate(
    v: Velocity,
    z0: Tensor,
    n_steps: int = 1,
    y: Tensor | None = None,
    alpha: float = 1.0,
    batch: int = 2048,
    distilled: bool = False,
) -> Tensor:
    """Samples Z1 (n, d) from Z0 (n, d), ``batch`` rows at a time (bounded memory): a
    ``distilled`` one-step model's :func:`one_step` z0 + s(z0, 0 | y) (guidance alpha),
    else :func:`euler_sample` with ``n_steps`` steps of v_alpha(. | y)."""
    zs = z0.split(batch)
    chunks = zip(zs, [None] * len(zs) if y is None else y.split(batch), strict=True)
    if distilled:
        return torch.cat([one_step(v, zb, yb, alpha) for zb, yb in chunks])
    return torch.cat([euler_sample(v, zb, n_steps, yb, alpha).x for zb, yb in chunks])


# ---- samplers for widgets -----------------------------------------------------------------
def plain_field(v: Velocity) -> Callable[[Tensor, float], Tensor]:
    """f(x, t) = v(x, t) for widgets: x (n, d) of any float dtype, t a float -> (n, d) in x's
    dtype (the net runs in its own dtype, without gradients)."""
    dtype = next(v.parameters()).dtype

    def f(x: Tensor, t: float) -> Tensor:
        with torch.no_grad():
            return v(x.to(dtype), float(t)).to(x.dtype)

    return f


def one_step_map(v: Velocity) -> Callable[[Tensor], Tensor]:
    """z0 -> z0 + v(z0, 0) (the one-step generator of a distilled model), as
    :func:`plain_field`."""
    f = plain_field(v)
    return lambda z0: z0 + f(z0, 0.0)


def trajectory_sampler(
    v: nn.Module, shape: tuple[int, ...], one_step_only: bool = False
) -> Callable[[int, float, Tensor, Tensor], Tensor]:
    """sample(n_steps, alpha, z0 (n, d), labels (n,)) -> the Euler trajectory
    (n_steps + 1, n, *shape) of the guided field v_alpha, clamped to [-1, 1] for display.
    ``one_step_only``: a distilled model, whose final images (n, *shape) come from one step
    whatever n_steps (it was trained at t = 0 only)."""
    p = next(v.parameters())

    def sample(n_steps: int, alpha: float, z0: Tensor, labels: Tensor) -> Tensor:
        z = torch.as_tensor(z0).to(p.device, p.dtype).reshape(len(z0), -1)
        y = torch.as_tensor(labels).to(p.device).long()
        if one_step_only:
            x = euler_sample(v, z, 1, y, float(alpha)).x
            return x.clamp(-1, 1).reshape(-1, *shape).cpu()
        traj = euler_sample(v, z, int(n_steps), y, float(alpha), trajectory=True).trajectory
        return traj.clamp(-1, 1).reshape(len(traj), len(z), *shape).cpu()

    return sample


# ---- couplings ----------------------------------------------------------------------------
def gaussian_noise(n: int, d: int, seed: int, device: torch.device | None = None) -> Tensor:
    """Z0 ~ N(0, I_d), (n, d) float32, drawn on the CPU from a generator seeded ``seed`` (the
    same numbers whatever the device), then moved to ``device`` (None: ``scale.device()``)."""
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return z.to(device or scale.device())


def batch_sampler(
    x: Tensor, y: Tensor | None = None
) -> Callable[[int, torch.Generator], tuple[Tensor, Tensor | None]]:
    """sample(n, generator) -> (x[idx], y[idx] or None): n rows of a dataset x (N, d) with
    labels y (N,), drawn uniformly with replacement (idx from ``torch.randint(N, (n,))``), the
    data source :func:`train_rectified_flow` takes."""

    def sample(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        idx = torch.randint(len(x), (n,), generator=generator)
        return x[idx], None if y is None else y[idx]

    return sample


def balanced_labels(n: int, n_classes: int, p_uncond: float, seed: int) -> Tensor:
    """Labels (n,) of a class-conditional coupling: 0, 1, ..., n_classes - 1 in turn, each set
    to the null class ``n_classes`` with probability ``p_uncond`` (generator seeded ``seed``).
    Null rows follow the unconditional field, so a net reflowed on the pairs keeps its null
    branch for guidance."""
    from pflow_explore.nets import drop_labels

    y = torch.arange(n) % n_classes
    return drop_labels(y, p_uncond, n_classes, torch.Generator().manual_seed(seed))


@dataclass
class Pairs:
    """A coupling (Z0, Z1): z0, z1 (n, d) and labels y (n,) or None; ``seconds``: wall time
    to generate them; ``nfe``: network evaluations per pair (0: not generated by an ODE)."""

    z0: Tensor
    z1: Tensor
    y: Tensor | None = None
    seconds: float = 0.0
    nfe: int = 0


def independent_pairs(x1: Tensor, generator: torch.Generator) -> Pairs:
    """The independent coupling of the 1-RF: fresh noise X0 ~ N(0, I) (shape of x1, on its
    device, from ``generator``) beside the data x1 (n, d)."""
    x0 = torch.randn(x1.shape, generator=generator, device=x1.device)
    return Pairs(x0, x1)


@torch.no_grad()
def sample_pairs(
    v: Velocity,
    z0: Tensor,
    y: Tensor | None = None,
    alpha: float = 1.0,
    n_steps: int = 32,
    method: str = "rk4",
    batch: int = 8192,
) -> Pairs:
    """The ODE coupling of v (docs/papers.md): Z1 = Z0 + int_0^1 v_alpha(Z_t, t | y) dt,
    integrated with ``method`` on ``n_steps`` even steps, in batches of ``batch``.

    z0 (n, d) ~ N(0, I); y (n,) labels (null rows follow the unconditional field) or None;
    alpha the guidance. Returns Pairs(z0, z1 (n, d), y).
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


# ---- training -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    """How one network is trained: Adam ``steps`` on batches of ``batch``, ``lr`` with a
    short warm-up and cosine decay, EMA ``ema_decay`` (None: off), t ~ U[t_eps, 1],
    ``seed`` for batches and noise, ``init_seed`` for a fresh net's initial weights (None:
    the global RNG, only for nets that are copied, not drawn); for distillation the loss
    ("l2" / "pseudo_huber") and the pseudo-Huber c. ``desc`` labels the progress bar (and
    is part of the cache key)."""

    steps: int
    batch: int
    lr: float
    ema_decay: float | None = None
    t_eps: float = 1e-3
    seed: int = 0
    loss: str = "l2"
    huber_c: float = 0.0
    desc: str = "training"
    init_seed: int | None = None

    def fit_kwargs(self) -> dict[str, Any]:
        return dict(
            steps=self.steps,
            lr=self.lr,
            ema_decay=self.ema_decay,
            warmup=min(100, self.steps // 10),
            cosine=True,
            desc=self.desc,
        )


class Artifact(NamedTuple):
    """Where a trained model is cached: ``training.fit_cached(chapter, name, settings, ...,
    version=version)``."""

    chapter: str
    name: str
    settings: dict[str, Any]
    version: int


def seeded(make_model: Callable[[], nn.Module], seed: int | None) -> Callable[[], nn.Module]:
    """make_model with its initial weights drawn from torch.manual_seed(seed) inside a forked
    CPU RNG, so they depend on the seed only, not on what ran before, and the global RNG is
    left as it was. seed None: make_model itself."""
    if seed is None:
        return make_model

    def make() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return make_model()

    return make


def train_stage(
    make_model: Callable[[], nn.Module],
    loss_fn: LossFn,
    stage: Stage,
    cache: Artifact | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> FitResult:
    """``training.fit`` a fresh ``make_model()`` (seeded with ``stage.init_seed``), or
    ``fit_cached`` under ``cache`` so a chapter never trains a stage twice. ``callback(step,
    loss)``: after every step of an uncached fit (a cached one may not train at all)."""
    make = seeded(make_model, stage.init_seed)
    if cache is None:
        return fit(make(), loss_fn, callback=callback, **stage.fit_kwargs())
    chapter, name, settings, version = cache
    return fit_cached(chapter, name, settings, make, loss_fn, version=version, **stage.fit_kwargs())


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_rectified_flow(
    make_model: Callable[[], nn.Module],
    sample_data: Callable[[int, torch.Generator], tuple[Tensor, Tensor | None]],
    stage: Stage,
    p_uncond: float = 0.0,
    n_classes: int | None = None,
    cache: Artifact | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> FitResult:
    """1-rectified flow: minimise :func:`rectified_flow_loss` on :func:`independent_pairs`.

    Every batch draws new data X1 (``sample_data(n, cpu_generator) -> (x1 (n, d), y or
    None)``, generator seeded ``stage.seed``) and new noise X0 and times t (a generator on
    the model's device seeded ``stage.seed + 1``), so the pairing is resampled every batch
    (docs/papers.md, Traps: RectifiedFlow issue #36 fixed it once per epoch). Labels become the null
    class ``n_classes`` with probability ``p_uncond`` (classifier-free guidance training).
    """
    from pflow_explore.nets import drop_labels

    gen_cpu = torch.Generator().manual_seed(stage.seed)
    state: dict[str, torch.Generator] = {}

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        dev = device_of(model)
        if "gen" not in state:
            state["gen"] = torch.Generator(device=dev).manual_seed(stage.seed + 1)
        gen = state["gen"]
        x1, y = sample_data(stage.batch, gen_cpu)
        if y is not None:
            if n_classes is None:
                raise ValueError("labelled data needs n_classes (the null class)")
            y = drop_labels(y, p_uncond, n_classes, gen_cpu).to(dev)
        pairs = independent_pairs(x1.to(dev), gen)
        t = uniform_time(len(x1), stage.t_eps, gen, dev)
        return rectified_flow_loss(model, pairs.z0, pairs.z1, t, y)

    return train_stage(make_model, loss_fn, stage, cache, callback)


def straightness_per_path(v: Field, z0: Tensor, n_steps: int = 64) -> Tensor:
    """Each path's straightness, int_0^1 |(Z_1 - Z_0) - v(Z_t, t)|^2 dt, as (n,) float64:
    the terms whose mean is ``trajectories.straightness_of_field`` (rk4 on ``n_steps`` even
    steps from t = 0 to 1, v itself on the path, composite Simpson in time), kept apart so a
    claim can bootstrap over paths. v(x (n, d), t (0-d)) -> (n, d); z0 (n, d)."""
    if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 2 or n_steps % 2:
        raise ValueError(f"n_steps must be an even integer >= 2, got {n_steps!r}")
    if z0.dim() != 2:
        raise ValueError(f"z0 must be (n, d), got shape {tuple(z0.shape)}")
    times = torch.linspace(0.0, 1.0, n_steps + 1, dtype=z0.dtype, device=z0.device)
    with torch.no_grad():
        path = solvers.odeint(v, z0, times, method="rk4", trajectory=True).trajectory
        velocity = torch.stack([v(path[k], times[k]) for k in range(n_steps + 1)])
    f = ((path[-1] - path[0]).double() - velocity.double()).pow(2).sum(-1)  # (T + 1, n)
    w = torch.ones(n_steps + 1, dtype=torch.float64, device=f.device)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return (w[:, None] * f).sum(0) / (3 * n_steps)
