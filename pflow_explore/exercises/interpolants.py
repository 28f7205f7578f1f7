"""Chapter 02 (interpolants) exercises: the regression target of the velocity b for the
trigonometric interpolant, the exact score of a Gaussian marginal, and one step of the
generative SDE.

Each reference is the package's own implementation (``Interpolant.velocity_target``,
``InterpolantFields.score``, ``samplers.sde_step``); the worked answers are in
the chapter's instructor notebook, between nbgrader's solution markers.

Time convention: flow (t = 0 is rho0, t = 1 is rho1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pflow_explore import samplers
from pflow_explore.datasets.toy2d import single_gaussian
from pflow_explore.exercises.check import Exercise
from pflow_explore.interpolants import get_interpolant
from pflow_explore.theory.interpolant_fields import InterpolantFields

F64 = torch.float64


def trig_target_inputs(gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor, float]:
    """(t (6,), x0, x1, z (6, 3), a): times away from the ends, where gamma' is finite."""
    t = 0.05 + 0.9 * torch.rand(6, generator=gen, dtype=F64)
    x0, x1, z = (torch.randn(6, 3, generator=gen, dtype=F64) for _ in range(3))
    return t, x0, x1, z, 0.5 + 1.5 * float(torch.rand(1, generator=gen))


def trig_target(t: Tensor, x0: Tensor, x1: Tensor, z: Tensor, a: float) -> Tensor:
    """d_t I + gamma' z of the trigonometric interpolant with gamma = sqrt(a t (1 - t))."""
    return get_interpolant("trigonometric", "sqrt", a=a).velocity_target(t, x0, x1, z)


def gaussian_score_inputs(gen: torch.Generator) -> tuple:
    """(x (5, 3), t, m0, C0, m1, C1): points, a time, and two random Gaussian endpoints."""
    d = 3
    t = 0.05 + 0.9 * float(torch.rand(1, generator=gen))
    out: list = [2 * torch.randn(5, d, generator=gen, dtype=F64), t]
    for _ in range(2):
        q = torch.randn(d, d, generator=gen, dtype=F64)
        out += [torch.randn(d, generator=gen, dtype=F64), q @ q.T / d + 0.2 * torch.eye(d)]
    return tuple(out)


def gaussian_score(x: Tensor, t: float, m0: Tensor, C0: Tensor, m1: Tensor, C1: Tensor) -> Tensor:
    """s(x, t) of the linear interpolant, gamma = sqrt(t (1 - t)), N(m0, C0) -> N(m1, C1)."""
    interp = get_interpolant("linear", "sqrt")
    return InterpolantFields(single_gaussian(m0, C0), single_gaussian(m1, C1), interp).score(x, t)


def sde_step_inputs(gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, float, float, Tensor]:
    """(x, b, s, eps, dt, xi): a state (7, 2), the two fields there, eps, a step, the noise."""
    x, b, s, xi = (torch.randn(7, 2, generator=gen, dtype=F64) for _ in range(4))
    eps = 2 * float(torch.rand(1, generator=gen))
    return x, b, s, eps, 0.001 + 0.05 * float(torch.rand(1, generator=gen)), xi


TRIG_TARGET = Exercise(
    "trigonometric velocity target", "velocity_target", trig_target_inputs, trig_target
)
GAUSSIAN_SCORE = Exercise(
    "Gaussian marginal score", "gaussian_score", gaussian_score_inputs, gaussian_score
)
SDE_STEP = Exercise("SDE step", "sde_step", sde_step_inputs, samplers.sde_step)
