"""Chapter 03 (rectified_flow) exercises: the 2-RF velocity of the Gaussian case (a
derivation), the rectified-flow loss, the discrete straightness of a sampled path, and
classifier-free guidance.

Each reference is the package's own implementation (``theory.rectified_flow``'s
``gaussian_2rf_velocity``, ``flow_matching.rectified_flow_loss``,
``trajectories.straightness``, ``flow_matching.guided_velocity``); the worked answers are in
the chapter's instructor notebook, between nbgrader's solution markers.

Time convention: flow (t = 0 noise, t = 1 data).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pflow_explore import flow_matching as fm
from pflow_explore.exercises.check import Exercise
from pflow_explore.trajectories import straightness

F64 = torch.float64


def loss_inputs(gen: torch.Generator) -> tuple:
    """A random smooth field v(x, t, y=None) on R^3, noise x0 (16, 3), data x1 (16, 3), t (16,)."""
    d = 3
    a = torch.randn(d, d, generator=gen, dtype=F64)
    b = torch.randn(d, generator=gen, dtype=F64)

    def v(x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return torch.tanh(x @ a.T) * (1 + t[:, None]) + b

    x0 = torch.randn(16, d, generator=gen, dtype=F64)
    x1 = torch.randn(16, d, generator=gen, dtype=F64) * 2 + 1
    return v, x0, x1, torch.rand(16, generator=gen, dtype=F64)


def path_inputs(gen: torch.Generator) -> tuple:
    """A random walk path (9, 5, 2) on an uneven grid of times (9,) from 0 to 1."""
    inner = torch.sort(torch.rand(7, generator=gen)).values
    times = torch.cat([torch.zeros(1), inner, torch.ones(1)]).double()
    path = torch.cumsum(torch.randn(9, 5, 2, generator=gen, dtype=F64), dim=0)
    return path, times


class RandomConditionalField:
    """v(x, t, y) = sin(x) t + table[y] on R^3 with 4 classes; label 4 is the null class."""

    n_classes = 4

    def __init__(self, gen: torch.Generator) -> None:
        self.table = torch.randn(5, 3, generator=gen, dtype=F64)

    def __call__(self, x: Tensor, t: float | Tensor, y: Tensor) -> Tensor:
        return torch.sin(x) * t + self.table[y]


def guidance_inputs(gen: torch.Generator) -> tuple:
    """A random conditional field, x (8, 3), t = 0.3, labels y (8,), a guidance scale in [0, 4)."""
    v = RandomConditionalField(gen)
    x = torch.randn(8, 3, generator=gen, dtype=F64)
    y = torch.randint(4, (8,), generator=gen)
    return v, x, 0.3, y, float(torch.rand(1, generator=gen)) * 4


def rf2_inputs(gen: torch.Generator) -> tuple:
    """x (6, 3), a time t in (0.05, 0.95), mu (3,), sigma in (0.2, 2)."""
    x = torch.randn(6, 3, generator=gen, dtype=F64) * 2
    t = float(torch.rand(1, generator=gen)) * 0.9 + 0.05
    return (
        x,
        t,
        torch.randn(3, generator=gen, dtype=F64),
        float(torch.rand(1, generator=gen)) * 1.8 + 0.2,
    )


def rf2_velocity(x: Tensor, t: float, mu: Tensor, sigma: float) -> Tensor:
    """The 2-RF velocity of N(0, I) -> N(mu, sigma^2 I) (sympy-derived, lambdified)."""
    from pflow_explore.theory.rectified_flow import gaussian_2rf_velocity  # sympy: on use

    return gaussian_2rf_velocity(x, t, mu, sigma)


RF2_VELOCITY = Exercise("2-RF velocity (Gaussian)", "rf2_velocity", rf2_inputs, rf2_velocity)
RF_LOSS = Exercise("rectified-flow loss", "rf_loss", loss_inputs, fm.rectified_flow_loss)
DISCRETE_STRAIGHTNESS = Exercise(
    "discrete straightness", "discrete_straightness", path_inputs, straightness
)
GUIDED_VELOCITY = Exercise(
    "guided velocity", "guided_velocity", guidance_inputs, fm.guided_velocity
)
