"""ODE and SDE integrators, written out, that can return whole trajectories.

A velocity field is a callable ``f(x, t) -> dx/dt`` with x of shape (B, ...) and t a 0-d
tensor; a time grid ``times`` is a 1-D tensor of T + 1 strictly monotone points. Sampling
usually runs backwards, from t = 1 (noise) to t = 0 (data): a decreasing grid just gives
negative steps dt = t_{i+1} - t_i.

Fixed-step methods, one step from t to t + dt (k's are evaluations of f):

    euler  x + dt k1,                           k1 = f(x, t)                    1 NFE
    heun   x + dt (k1 + k2) / 2,                k2 = f(x + dt k1, t + dt)       2 NFE
    rk4    x + dt (k1 + 2 k2 + 2 k3 + k4) / 6   (classical Runge-Kutta)         4 NFE

``heun`` is plain Heun (explicit trapezoid) and evaluates f at every grid point,
the last one included. EDM's sampler (Karras et al. 2022, Alg. 1) instead takes an
Euler step on the last step to sigma = 0, where the velocity divides by sigma; with plain
Heun, end the grid at a small t > 0 (or take that last step with ``euler``).

``dopri5`` is torchdiffeq's adaptive Dormand-Prince 5(4) with tolerances rtol, atol: a
reference solution, slower per evaluation (see DESIGN.md, Known traps). It is made to land
on every grid point and never to evaluate f outside [min(times), max(times)].

``euler_maruyama`` integrates dx = f(x, t) dt + g(t) dW. ``steps`` and ``sde_steps`` are
generators yielding (t, x) after each step, for step-through widgets; ``noise_steps`` is
the loop of every SDE scheme with one standard normal draw per step, its update a hook;
``collect`` runs such a generator to a :class:`Solution`, and :func:`collected` makes a
generator's whole-run function from it (``euler_maruyama`` from ``sde_steps``).

Time convention: the caller's. A solver integrates from times[0] to times[-1] in
whichever direction the grid runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

Field = Callable[[Tensor, Tensor], Tensor]
Diffusion = Callable[[Tensor], "Tensor | float"]
# one step of an SDE scheme: (x, t, dt, xi) -> x_next, xi ~ N(0, I) shaped like x
NoisyUpdate = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
R = TypeVar("R")

FIXED_STEP_METHODS: tuple[str, ...] = ("euler", "heun", "rk4")
METHODS: tuple[str, ...] = (*FIXED_STEP_METHODS, "dopri5")


@dataclass
class Solution:
    """Result of an integration.

    x: final state, shape of x0; trajectory: (T + 1, *x0.shape) starting with x0, or None;
    times: (T + 1,) the grid; nfe: number of evaluations of f.
    """

    x: Tensor
    trajectory: Tensor | None
    times: Tensor
    nfe: int


class _Counted:
    """Wraps f and counts its calls, so NFE is exact for every method."""

    def __init__(self, f: Field) -> None:
        self.f, self.nfe = f, 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.nfe += 1
        return self.f(x, t)


def collect(
    steps: Iterator[tuple[Tensor, Tensor]],
    x0: Tensor,
    times: Tensor,
    nfe: int | _Counted,
    trajectory: bool = False,
) -> Solution:
    """Run a step generator (yielding (t_{i+1}, x_{i+1}), T items) to its end as a Solution.

    x0: (B, ...) the state at times[0] (T + 1,); trajectory=True stacks x0 and every yielded
    state, (T + 1, B, ...). nfe: a count, or the :class:`_Counted` field the steps call,
    read after the last step. :func:`collected` makes such a run a function of its own.
    """
    x, traj = run_to_end(steps, x0, trajectory)
    return Solution(x, traj, times, nfe.nfe if isinstance(nfe, _Counted) else int(nfe))


def run_to_end(steps: Iterator[Any], x0: Tensor, trajectory: bool) -> tuple[Tensor, Tensor | None]:
    """(last state (B, ...), x0 and every step's state stacked (T + 1, B, ...) or None) of a
    step generator run to its end. A step's state is x of a (t, x) item, else its ``x_next``
    (``GammaStep``, ``MRStep``, ...). The one loop where step-through generators become
    whole runs."""
    states = [x0] if trajectory else None
    x = x0
    for item in steps:
        x = item[1] if isinstance(item, tuple) else item.x_next
        if states is not None:
            states.append(x)
    return x, torch.stack(states) if states is not None else None


def collected(
    steps: Callable[..., Iterator[Any]],
    start: str = "x0",
    after: str | None = None,
    **extra: object,
) -> Callable[[Callable[[dict[str, Any], Tensor, Tensor | None], R]], Callable[..., R]]:
    """Decorator making the whole-run function of a step generator, which stays the one
    implementation: ``@collected(steps)`` on ``def name(arguments, x, states)`` gives ``name``
    the parameters of ``steps``, plus ``trajectory: bool = False`` (right after parameter
    ``after``; last by default) and the keyword-only ``extra`` ones (name=default).

    A call runs ``steps`` to its end and returns the decorated function's value at: the
    call's arguments by name (defaults filled in), x the last state (B, ...), and states,
    with trajectory=True argument ``start`` and every step's state stacked, (T + 1, B, ...),
    else None (:func:`run_to_end`). The result keeps the decorated function's name and
    docstring (which says what it returns).
    """
    signature = inspect.signature(steps)
    own = list(signature.parameters.values())
    at = len(own) if after is None else [p.name for p in own].index(after) + 1
    kind = inspect.Parameter
    flag = kind("trajectory", kind.POSITIONAL_OR_KEYWORD, default=False, annotation="bool")
    more = [
        kind(k, kind.KEYWORD_ONLY, default=v, annotation=type(v).__name__) for k, v in extra.items()
    ]
    full = signature.replace(parameters=[*own[:at], flag, *own[at:], *more])

    def decorate(finish: Callable[[dict[str, Any], Tensor, Tensor | None], R]) -> Callable[..., R]:
        @functools.wraps(finish)
        def collector(*args: Any, **kwargs: Any) -> R:
            call = full.bind(*args, **kwargs)
            call.apply_defaults()
            arguments = call.arguments
            items = steps(**{p.name: arguments[p.name] for p in own})
            return finish(arguments, *run_to_end(items, arguments[start], arguments["trajectory"]))

        returns = inspect.signature(finish).return_annotation
        collector.__signature__ = full.replace(return_annotation=returns)  # type: ignore[attr-defined]
        return collector

    return decorate


def check_times(times: Tensor | Sequence[float]) -> Tensor:
    """Validate a time grid: 1-D, >= 2 finite points, strictly increasing or decreasing.

    Returns it as a floating tensor (float64 unless it already was floating).
    """
    times = torch.as_tensor(times)
    if not times.is_floating_point():
        times = times.to(torch.float64)
    if times.dim() != 1 or times.numel() < 2:
        raise ValueError(f"times must be 1-D with >= 2 points, got shape {tuple(times.shape)}")
    if not torch.isfinite(times).all():
        raise ValueError("times must be finite")
    dt = times.diff()
    if not ((dt > 0).all() or (dt < 0).all()):
        raise ValueError("times must be strictly monotone (all increasing or all decreasing)")
    return times


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")


def _step(f: Field, x: Tensor, t: Tensor, dt: Tensor, method: str) -> Tensor:
    """One fixed step of the named method from t to t + dt."""
    if method == "euler":
        return x + dt * f(x, t)
    if method == "heun":
        k1 = f(x, t)
        k2 = f(x + dt * k1, t + dt)
        return x + 0.5 * dt * (k1 + k2)
    # rk4
    half = 0.5 * dt
    k1 = f(x, t)
    k2 = f(x + half * k1, t + half)
    k3 = f(x + half * k2, t + half)
    k4 = f(x + dt * k3, t + dt)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def steps(
    f: Field, x0: Tensor, times: Tensor | Sequence[float], method: str = "euler"
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (t_{i+1}, x_{i+1}) after each fixed step over the grid; T items in all.

    f(x, t) -> dx/dt, x0: (B, ...), times: (T + 1,). method: "euler", "heun" or "rk4".
    x0 itself is not yielded (it is at times[0]).
    """
    if method not in FIXED_STEP_METHODS:
        raise ValueError(
            f"unknown step method {method!r}; valid methods: {', '.join(FIXED_STEP_METHODS)}"
        )
    return _fixed_steps(f, x0, check_times(times), method)


def _fixed_steps(
    f: Field, x: Tensor, times: Tensor, method: str
) -> Iterator[tuple[Tensor, Tensor]]:
    # a separate generator so that steps() validates its arguments when called, not later
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        x = _step(f, x, t, t_next - t, method)
        yield t_next, x


def odeint(
    f: Field,
    x0: Tensor,
    times: Tensor | Sequence[float],
    method: str = "euler",
    trajectory: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> Solution:
    """Integrate dx/dt = f(x, t) over the grid ``times``, shape (T + 1,), from x0 (B, ...).

    method: "euler", "heun", "rk4" (one step per grid interval) or "dopri5" (adaptive,
    torchdiffeq, rtol/atol, as many steps as it needs, landing on each grid point; it hands
    f a t of x0's dtype). trajectory=True keeps
    the state at every grid point, shape (T + 1, B, ...), x0 first.
    """
    _check_method(method)
    times = check_times(times)
    counted = _Counted(f)
    if method == "dopri5":
        import torchdiffeq

        times = times.to(x0.device)
        lo, hi = times.min(), times.max()
        # torchdiffeq steps past the last output time and interpolates back, and probes
        # f(t0 + h0) to choose its first step: either can leave the grid's interval, where a
        # PF-ODE velocity may be undefined (sigma < 0, alpha > 1). step_t makes it land on
        # every grid point; clamping t only affects that first-step probe.
        traj = torchdiffeq.odeint(
            lambda t, x: counted(x, t.clamp(lo, hi)),
            x0,
            times,
            method="dopri5",
            rtol=rtol,
            atol=atol,
            options={"step_t": times},
        )
        return Solution(traj[-1], traj if trajectory else None, times, counted.nfe)
    return collect(_fixed_steps(counted, x0, times, method), x0, times, counted, trajectory)


def euler(
    f: Field, x0: Tensor, times: Tensor | Sequence[float], trajectory: bool = False
) -> Solution:
    """Euler's method, x_{i+1} = x_i + dt f(x_i, t_i); see :func:`odeint`."""
    return odeint(f, x0, times, "euler", trajectory)


def heun(
    f: Field, x0: Tensor, times: Tensor | Sequence[float], trajectory: bool = False
) -> Solution:
    """Plain Heun (explicit trapezoid), 2 NFE per step; see :func:`odeint`."""
    return odeint(f, x0, times, "heun", trajectory)


def rk4(
    f: Field, x0: Tensor, times: Tensor | Sequence[float], trajectory: bool = False
) -> Solution:
    """Classical 4th-order Runge-Kutta, 4 NFE per step; see :func:`odeint`."""
    return odeint(f, x0, times, "rk4", trajectory)


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like x (and of its dtype), drawn on the generator's device
    (so a CPU generator gives the same draws whatever x's device), then moved to x's."""
    device = generator.device if generator is not None else x.device
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device)
    return z.to(x.device)


def sde_steps(
    f: Field,
    g: Diffusion,
    x0: Tensor,
    times: Tensor | Sequence[float],
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (t_{i+1}, x_{i+1}) after each Euler-Maruyama step (see :func:`euler_maruyama`):
    :func:`noise_steps` with the update x + dt f(x, t) + g(t) sqrt(|dt|) xi."""

    def update(x: Tensor, t: Tensor, dt: Tensor, xi: Tensor) -> Tensor:
        # Brownian increments have variance |dt| whichever way time runs
        return x + dt * f(x, t) + g(t) * (dt.abs().sqrt() * xi)

    return noise_steps(update, x0, times, generator)


def noise_steps(
    update: NoisyUpdate,
    x0: Tensor,
    times: Tensor | Sequence[float],
    generator: torch.Generator | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """The step hook of the SDE schemes: yield (t_{i+1}, x_{i+1}) with

        x_{i+1} = update(x_i, t_i, dt_i, xi_i),   dt_i = t_{i+1} - t_i,   xi_i ~ N(0, I),

    xi_i drawn with :func:`randn_like` from ``generator`` before each update (one draw of
    x's shape per step). Euler-Maruyama (:func:`sde_steps`), samplers' exponential
    integrator and a learner's own step (the SDE stepper widget) are this loop with their
    own ``update``, so one generator state gives the same noise to each of them."""
    return _noise_steps(update, x0, check_times(times), generator)


def _noise_steps(
    update: NoisyUpdate, x: Tensor, times: Tensor, generator: torch.Generator | None
) -> Iterator[tuple[Tensor, Tensor]]:
    # a separate generator so that noise_steps() validates its arguments when called
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        xi = randn_like(x, generator)
        x = update(x, t, t_next - t, xi)
        yield t_next, x


@collected(sde_steps)
def euler_maruyama(arguments: dict[str, Any], x: Tensor, states: Tensor | None) -> Solution:
    """Euler-Maruyama for dx = f(x, t) dt + g(t) dW over the grid ``times`` (T + 1,): runs
    :func:`sde_steps` (same parameters, then ``trajectory``) to a :class:`Solution`.

    x_{i+1} = x_i + f(x_i, t_i) dt + g(t_i) sqrt(|dt|) xi_i,  xi_i ~ N(0, I),
    with dt = t_{i+1} - t_i (negative on a decreasing grid: for a reverse-time SDE pass the
    reverse drift, e.g. f - g^2 score, and a decreasing grid). x0: (B, ...); g(t) returns a
    float or a tensor broadcastable to x. nfe counts calls of f (one per step).
    The same generator state gives the same path.
    """
    times = check_times(arguments["times"])
    return Solution(x, states, times, len(times) - 1)
