"""Chapter 00 (start here) exercises: the PF-ODE velocity from a denoiser, and the solver
loop itself, which the chapter then runs.

References: the velocity is ``paths.Linear().velocity_from_denoiser`` (the general formula
v = alpha' D + sigma' (x - alpha D) / sigma, which the learner simplifies for the linear path
by hand); the loop is ``solvers.euler`` keeping the trajectory.

Time convention: diffusion (t = 0 data, t = 1 noise; the loop integrates backwards).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pflow_explore import paths, solvers
from pflow_explore.exercises.check import Exercise

F64 = torch.float64


def velocity_inputs(gen: torch.Generator) -> tuple[Tensor, float, Tensor]:
    """(x (9, 2), t in (0.05, 1), D (9, 2)): points, a time and a denoiser's output there."""
    x = torch.randn(9, 2, generator=gen, dtype=F64) * 2
    t = float(torch.rand(1, generator=gen)) * 0.95 + 0.05
    return x, t, torch.randn(9, 2, generator=gen, dtype=F64)


def linear_velocity(x: Tensor, t: float, D: Tensor) -> Tensor:
    """PF-ODE velocity of the linear path (alpha = 1 - t, sigma = t) from D(x, t): (n, d)."""
    return paths.Linear().velocity_from_denoiser(x, D, t)


def loop_inputs(gen: torch.Generator) -> tuple[Callable[[Tensor, Tensor], Tensor], Tensor, Tensor]:
    """(v, x (6, 3), times (k + 1,)): a random linear, time-dependent field v(x, t) =
    t A x + b, start points, and a decreasing grid from 1 with k in 3..8 steps."""
    A = torch.randn(3, 3, generator=gen, dtype=F64) * 0.5
    b = torch.randn(3, generator=gen, dtype=F64)
    k = int(torch.randint(3, 9, (1,), generator=gen))
    times = torch.linspace(1.0, float(torch.rand(1, generator=gen)) * 0.5, k + 1, dtype=F64)

    def v(x: Tensor, t: Tensor) -> Tensor:
        return torch.as_tensor(t, dtype=F64) * x @ A.T + b

    return v, torch.randn(6, 3, generator=gen, dtype=F64), times


def euler_trajectory(v: Callable[[Tensor, Tensor], Tensor], x: Tensor, times: Tensor) -> Tensor:
    """Euler's method over the grid ``times`` (k + 1,), keeping every state: (k + 1, n, d)."""
    return solvers.euler(v, x, times, trajectory=True).trajectory


LINEAR_VELOCITY = Exercise(
    "velocity from the denoiser", "linear_velocity", velocity_inputs, linear_velocity
)
EULER_TRAJECTORY = Exercise(
    "the solver loop (Euler)", "euler_trajectory", loop_inputs, euler_trajectory
)
