"""Samplers built from a velocity b and a score s: ODE or SDE from one function, Langevin,
exponential integrators.

Card 02_interpolants, "Method": one pair (b, s) of a stochastic interpolant gives the ODE
dX = b dt and, for every eps >= 0, the forward SDE

    dX = b_F(X, t) dt + sqrt(2 eps) dW,   b_F = b + eps s,                           (F)

and the backward SDE with drift b_B = b - eps s, run from t = 1 down to t = 0. For every
eps the law of X(t) is the interpolant's rho_t: the extra drift eps s and the noise cancel
in the Fokker-Planck equation (eps div(rho s) = eps lap rho). eps = 0 is the
probability-flow ODE.

- time grids: :func:`uniform_grid` (with endpoint clamps, for fields singular at an end)
  and :func:`cosine_grid` (dense at both ends, for the stiff score near t = 1);
- :func:`forward_drift` / :func:`backward_drift` from a :class:`VelocityScore` pair
  (:class:`LearnedPair`: two networks, b and the denoiser eta = gamma s;
  :func:`pair_callables`: its b and s as plain functions);
- :func:`sample`: ODE (``solvers.odeint``) for eps = 0, Euler-Maruyama
  (``solvers.euler_maruyama``) otherwise, forward on an increasing grid and backward on a
  decreasing one, whole trajectories on request; :func:`sde_step` is one step of (F);
- :func:`sample_steps`: the same, one step at a time (a generator, for step-through widgets);
- :func:`langevin` (:func:`langevin_step`): unadjusted Langevin x + h s(x) + sqrt(2 h) xi
  (Euler-Maruyama of dX = s(X) dt + sqrt(2) dW, stationary law p up to O(h));
- :func:`exponential_steps`: the exponential-Euler step of a mean-reverting SDE
  dX = [-theta(t) (X - mu) + N(X, t)] dt + g(t) dW (exact for Ornstein-Uhlenbeck), the
  hook chapter 05 (mean-reverting SDEs) builds on.

Fields take (x, t) in this order, as in ``solvers``: x (n, d), t a float, a 0-d or an (n,)
tensor.

Time convention: flow (t = 0 is rho0, t = 1 is rho1; the backward SDE runs from 1 down to 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from pflow_explore import solvers
from pflow_explore.interpolants import Gamma
from pflow_explore.solvers import Field, Solution


class VelocityScore(Protocol):
    """A pair of fields: velocity b(x, t) and score s(x, t), both (n, d) -> (n, d)."""

    def velocity(self, x: Tensor, t: float | Tensor) -> Tensor: ...

    def score(self, x: Tensor, t: float | Tensor) -> Tensor: ...


class LearnedPair(nn.Module):
    """The learned velocity b(x, t) and denoiser eta(x, t) = -E[z | x_t = x], x: (n, d).

    The score is s = eta / gamma (docs/papers.md). Both nets were trained on
    t in [t_delta, 1 - t_delta] only, where gamma > 0; :meth:`score` holds gamma at its
    value at the nearer end of that interval outside it, so s stays finite at t = 0 and 1
    (the samplers take steps of length ~ gamma^2 there, so the choice barely matters).
    """

    def __init__(self, b_net: nn.Module, eta_net: nn.Module, gamma: Gamma, t_delta: float) -> None:
        super().__init__()
        self.b_net, self.eta_net = b_net, eta_net
        self.gamma, self.t_delta = gamma, float(t_delta)

    def velocity(self, x: Tensor, t: float | Tensor) -> Tensor:
        """b(x, t): (n, d); t a float, 0-d or (n,)."""
        return self.b_net(x, t)

    def denoiser(self, x: Tensor, t: float | Tensor) -> Tensor:
        """eta(x, t) = gamma(t) s(x, t): (n, d)."""
        return self.eta_net(x, t)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        """s(x, t) = eta(x, t) / gamma(t), gamma held at [t_delta, 1 - t_delta]: (n, d)."""
        tt = torch.as_tensor(t, dtype=torch.float64).clamp(self.t_delta, 1 - self.t_delta)
        g = self.gamma.gamma(tt.cpu()).to(x.device, x.dtype)
        g = g[:, None] if g.dim() == 1 else g
        return self.eta_net(x, t) / g

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        return self.velocity(x, t)


def pair_callables(
    pair: LearnedPair,
) -> tuple[Callable[[Tensor, float], Tensor], Callable[[Tensor, float], Tensor]]:
    """(b, s) of a learned pair as plain callables (x (n, d), t: float) -> (n, d) in x's
    dtype, evaluated in float32 on the CPU without gradients (``widgets.SDEStepper``'s
    input). Moves ``pair`` to the CPU and to eval mode."""
    cpu = pair.to("cpu").eval()

    def b(x: Tensor, t: float) -> Tensor:
        with torch.no_grad():
            return cpu.velocity(x.float(), float(t)).to(x.dtype)

    def s(x: Tensor, t: float) -> Tensor:
        with torch.no_grad():
            return cpu.score(x.float(), float(t)).to(x.dtype)

    return b, s


# ---- time grids ------------------------------------------------------------------------------
def uniform_grid(
    n_steps: int,
    t_start: float = 0.0,
    t_end: float = 1.0,
    clamp: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """t_i = t_start + (t_end - t_start) i / N, i = 0..N: (N + 1,), either direction.

    ``clamp`` > 0 moves both ends inward by that much (a grid on [clamp, 1 - clamp] for
    t_start = 0, t_end = 1): for fields that are singular at an end, such as s ~ 1 / gamma.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if not 0 <= 2 * clamp < abs(t_end - t_start):
        raise ValueError(f"clamp must lie in [0, |t_end - t_start| / 2), got {clamp}")
    sign = 1.0 if t_end >= t_start else -1.0
    lo, hi = t_start + sign * clamp, t_end - sign * clamp
    return torch.linspace(lo, hi, n_steps + 1, dtype=torch.float64).to(dtype)


def cosine_grid(n_steps: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """t_i = (1 - cos(pi i / N)) / 2, i = 0..N: (N + 1,), from 0 to 1, dense at both ends.

    Near t = 1 the SDE drift eps s ~ eps (x - m) / gamma^2 is stiff (rate ~ eps / (1 - t));
    this grid keeps dt / (1 - t) bounded, so Euler-Maruyama stays stable there.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    u = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
    return ((1 - torch.cos(math.pi * u)) / 2).to(dtype)


# ---- drifts and the SDE step -----------------------------------------------------------------
def forward_drift(pair: VelocityScore, eps: float) -> Field:
    """f(x, t) = b(x, t) + eps s(x, t), the forward SDE drift (F) (eps = 0: the ODE velocity,
    and s is not evaluated)."""

    def f(x: Tensor, t: Tensor) -> Tensor:
        v = pair.velocity(x, t)
        return v + eps * pair.score(x, t) if eps > 0 else v

    return f


def backward_drift(pair: VelocityScore, eps: float) -> Field:
    """f(x, t) = b(x, t) - eps s(x, t), the backward SDE drift, integrated from t = 1 down to
    t = 0 (on a decreasing grid, with noise sqrt(2 eps) per unit of |dt|)."""

    def f(x: Tensor, t: Tensor) -> Tensor:
        v = pair.velocity(x, t)
        return v - eps * pair.score(x, t) if eps > 0 else v

    return f


def sde_step(x: Tensor, b: Tensor, s: Tensor, eps: float, dt: float, xi: Tensor) -> Tensor:
    """One Euler-Maruyama step of dX = (b + eps s) dt + sqrt(2 eps) dW:

    x + (b + eps s) dt + sqrt(2 eps dt) xi,   x, b, s, xi: (n, d), xi ~ N(0, I).
    """
    return x + (b + eps * s) * dt + math.sqrt(2 * eps * dt) * xi


def _sde(
    pair: VelocityScore, eps: float, times: Tensor | Sequence[float]
) -> tuple[Tensor, Field, Callable[[Tensor], float]]:
    """(times checked, drift, g) of the SDE that :func:`sample` integrates on ``times``: the
    forward drift b + eps s on an increasing grid, the backward b - eps s on a decreasing one,
    and the noise amplitude g(t) = sqrt(2 eps)."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    times = solvers.check_times(times)
    drift = (backward_drift if bool(times[1] < times[0]) else forward_drift)(pair, eps)
    g = math.sqrt(2 * eps)
    return times, drift, lambda t: g


def sample(
    pair: VelocityScore,
    x0: Tensor,
    eps: float,
    times: Tensor | Sequence[float],
    generator: torch.Generator | None = None,
    trajectory: bool = False,
    ode_method: str = "rk4",
    batch: int | None = None,
    grad: bool = False,
) -> Solution:
    """X at the end of ``times`` (T + 1,) from X = x0 (n, d) at times[0]: one function for the
    ODE (eps = 0, ``ode_method``) and the SDEs (eps > 0, Euler-Maruyama).

    Increasing ``times``: the forward SDE (F), drift b + eps s; decreasing: the backward
    SDE, drift b - eps s (dt < 0, noise variance 2 eps |dt|). ``trajectory``: states at every
    grid point, (T + 1, n, d). ``batch``: integrate x0 in chunks of this many rows (one
    generator, drawn chunk after chunk; trajectories are joined along dim 1, nfe summed).
    ``grad``: keep the autograd graph (off by default: sampling only).
    """
    times, drift, g = _sde(pair, eps, times)
    parts = []
    with torch.set_grad_enabled(grad):
        for xb in x0.split(batch) if batch else (x0,):
            if eps == 0:
                parts.append(solvers.odeint(drift, xb, times, ode_method, trajectory))
            else:
                parts.append(solvers.euler_maruyama(drift, g, xb, times, generator, trajectory))
    if len(parts) == 1:
        return parts[0]
    traj = torch.cat([p.trajectory for p in parts], 1) if trajectory else None
    return Solution(torch.cat([p.x for p in parts]), traj, times, sum(p.nfe for p in parts))


def sample_steps(
    pair: VelocityScore,
    x0: Tensor,
    eps: float,
    times: Tensor | Sequence[float],
    generator: torch.Generator | None = None,
    ode_method: str = "rk4",
) -> Iterator[tuple[Tensor, Tensor]]:
    """:func:`sample` one step at a time: yields (t_{i+1}, x_{i+1}) after each step (T items),
    for step-through widgets; the same generator state gives the same path as :func:`sample`.
    Gradients are not tracked."""
    times, drift, g = _sde(pair, eps, times)
    if eps == 0:
        inner = solvers.steps(drift, x0, times, ode_method)
    else:
        inner = solvers.sde_steps(drift, g, x0, times, generator)

    def run() -> Iterator[tuple[Tensor, Tensor]]:
        with torch.no_grad():
            yield from inner

    return run()


# ---- Langevin dynamics ---------------------------------------------------------------------------
def langevin_step(x: Tensor, s: Tensor, step: float, xi: Tensor) -> Tensor:
    """One unadjusted Langevin step x + h s + sqrt(2 h) xi; x, s = score(x), xi: (n, d)."""
    return x + step * s + math.sqrt(2 * step) * xi


def langevin(
    score: Callable[[Tensor], Tensor],
    x0: Tensor,
    step: float,
    n_steps: int,
    generator: torch.Generator | None = None,
    trajectory: bool = False,
) -> Solution:
    """Unadjusted Langevin: x_{k+1} = x_k + h s(x_k) + sqrt(2 h) xi_k, xi_k ~ N(0, I).

    score: x (n, d) -> grad log p (n, d); x0: (n, d); h = ``step``. It is Euler-Maruyama of
    dX = s(X) dt + sqrt(2) dW, whose stationary law is p; the chain's own stationary law
    differs from p by O(h) (for N(m, sigma^2): variance sigma^2 / (1 - h / (2 sigma^2))).
    ``times`` of the returned Solution: k h, k = 0..n_steps.
    """
    if not step > 0 or n_steps < 1:
        raise ValueError(f"step must be > 0 and n_steps >= 1, got {step}, {n_steps}")
    times = step * torch.arange(n_steps + 1, dtype=torch.float64)
    root2 = math.sqrt(2.0)
    return solvers.euler_maruyama(
        lambda x, t: score(x), lambda t: root2, x0, times, generator, trajectory
    )


# ---- exponential integrators (mean-reverting SDEs) ------------------------------------------
def exponential_step(
    x: Tensor,
    theta: float | Tensor,
    mu: float | Tensor,
    g: float | Tensor,
    dt: float,
    xi: Tensor,
    remainder: Tensor | float = 0.0,
) -> Tensor:
    """One exponential-Euler step of dX = [-theta (X - mu) + N] dt + g dW over dt > 0, with
    theta, mu, g and N = ``remainder`` frozen at the start of the step:

        x' = mu + e^{-theta dt} (x - mu) + phi_1 N + g sqrt(phi_2) xi,
        phi_1 = (1 - e^{-theta dt}) / theta,   phi_2 = (1 - e^{-2 theta dt}) / (2 theta),

    the exact solution when theta, mu, g, N are constant (the Ornstein-Uhlenbeck transition:
    no step-size error in mean or variance, unlike Euler-Maruyama). theta of either sign
    (theta < 0: the repelling linear part of a reverse-time SDE, run in reversed time);
    theta -> 0 gives phi_1 = phi_2 = dt. x, xi: (n, d); the others broadcast to x.
    """
    theta = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
    decay = torch.exp(-theta * dt)
    small = (theta * dt).abs() < 1e-8  # phi's series: dt (1 - theta dt / 2 ...) -> dt
    safe = torch.where(small, torch.ones_like(theta), theta)
    phi1 = torch.where(small, torch.full_like(theta, dt), -torch.expm1(-safe * dt) / safe)
    phi2 = torch.where(small, torch.full_like(theta, dt), -torch.expm1(-2 * safe * dt) / (2 * safe))
    return mu + decay * (x - mu) + phi1 * remainder + g * phi2.sqrt() * xi


def exponential_steps(
    theta: Callable[[Tensor], float | Tensor],
    mu: float | Tensor,
    g: Callable[[Tensor], float | Tensor],
    x0: Tensor,
    times: Tensor | Sequence[float],
    generator: torch.Generator | None = None,
    remainder: Field | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (t_{i+1}, x_{i+1}) after each :func:`exponential_step` on an increasing grid
    (T + 1,), theta(t), g(t) and ``remainder(x, t)`` (the non-linear part N, default 0)
    evaluated at t_i. For step-through widgets; :func:`exponential_integrator` collects."""
    times = solvers.check_times(times)
    if not bool(times[1] > times[0]):
        raise ValueError("exponential_steps integrates forward: times must increase")

    def update(x: Tensor, t: Tensor, dt: Tensor, xi: Tensor) -> Tensor:
        n = remainder(x, t) if remainder is not None else 0.0
        return exponential_step(x, theta(t), mu, g(t), float(dt), xi, n)

    return solvers.noise_steps(update, x0, times, generator)


@solvers.collected(exponential_steps)
def exponential_integrator(arguments: dict[str, Any], x: Tensor, states: Tensor | None) -> Solution:
    """Integrate dX = [-theta(t) (X - mu) + N(X, t)] dt + g(t) dW: :func:`exponential_steps`
    (same parameters, then ``trajectory``) run to a Solution (x (n, d), trajectory
    (T + 1, n, d) or None); nfe counts calls of ``remainder`` (0 without one)."""
    times = solvers.check_times(arguments["times"])
    nfe = (len(times) - 1) if arguments["remainder"] is not None else 0
    return Solution(x, states, times, nfe)
