"""Chapter 04 (ctm) exercises: the CTM jump G, the exact network output g* of Gaussian data
(a derivation), and one step of gamma-sampling.

Each reference is the package's own implementation (``consistency.jump``,
``theory.consistency.gaussian_jump`` turned into g* by eq. 2, ``consistency.gamma_step``);
the worked answers are in the chapter's instructor notebook, between nbgrader's solution
markers.

Time convention: diffusion, EDM's x_t = x0 + t z with the time equal to the noise level.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from pflow_explore import consistency as ct
from pflow_explore.exercises.check import Exercise

F64 = torch.float64


class RandomJumpNet:
    """g(x, t, s) = tanh(x A^T) (1 + s / t) + b log(t) on R^3: a smooth stand-in network."""

    def __init__(self, gen: torch.Generator) -> None:
        self.a = torch.randn(3, 3, generator=gen, dtype=F64)
        self.b = torch.randn(3, generator=gen, dtype=F64)

    def __call__(self, x: Tensor, t: float | Tensor, s: float | Tensor) -> Tensor:
        t, s = ct._rows(t, x)[:, None], ct._rows(s, x)[:, None]
        return torch.tanh(x @ self.a.T) * (1 + s / t) + self.b * t.log()


def jump_inputs(gen: torch.Generator) -> tuple:
    """g, x (8, 3), t in (0.5, 20.5), s in [0, t) (s = 0 one time in four)."""
    t = 0.5 + 20 * float(torch.rand(1, generator=gen))
    s = (
        0.0
        if float(torch.rand(1, generator=gen)) < 0.25
        else t * float(torch.rand(1, generator=gen))
    )
    return RandomJumpNet(gen), torch.randn(8, 3, generator=gen, dtype=F64) * (1 + t), t, s


def ctm_jump(g: Callable[..., Tensor], x: Tensor, t: float, s: float) -> Tensor:
    """G(x, t, s) = (s/t) x + (1 - s/t) g(x, t, s) (``consistency.jump``)."""
    return ct.jump(g, x, t, s)


def g_star_inputs(gen: torch.Generator) -> tuple:
    """x (6, 2), t in (0.2, 10.2), s in [0, 0.9 t), mu (2,), var in (0.05, 2.05)."""
    t = 0.2 + 10 * float(torch.rand(1, generator=gen))
    s = 0.9 * t * float(torch.rand(1, generator=gen))
    mu = torch.randn(2, generator=gen, dtype=F64)
    var = 0.05 + 2 * float(torch.rand(1, generator=gen))
    return mu + math.sqrt(var + t**2) * torch.randn(6, 2, generator=gen, dtype=F64), t, s, mu, var


def gaussian_g_star(x: Tensor, t: float, s: float, mu: Tensor, var: float) -> Tensor:
    """g*(x, t, s) for data N(mu, var I): (G* - (s/t) x) / (1 - s/t), with G* the exact jump
    (``theory.consistency.gaussian_jump``, from the sympy solution of the PF-ODE)."""
    from pflow_explore.theory.consistency import gaussian_jump  # sympy: on use
    from pflow_explore.theory.gaussian_flow import GaussianFlow

    flow = GaussianFlow(mu, var * torch.eye(len(mu), dtype=F64))
    return (gaussian_jump(flow, x, t, s) - (s / t) * x) / (1 - s / t)


def gamma_inputs(gen: torch.Generator) -> tuple:
    """A jump G (the random net's), x (8, 3), t > t_next >= 0, gamma in [0, 1], z (8, 3)."""
    g = RandomJumpNet(gen)
    t = 1 + 10 * float(torch.rand(1, generator=gen))
    t_next = t * float(torch.rand(1, generator=gen))
    gamma = float(torch.rand(1, generator=gen))
    x, z = (torch.randn(8, 3, generator=gen, dtype=F64) for _ in range(2))
    return (lambda y, a, b: ct.jump(g, y, a, b)), x, t, t_next, gamma, z


JUMP = Exercise("the CTM jump G", "ctm_jump", jump_inputs, ctm_jump)
G_STAR = Exercise(
    "g* of Gaussian data (derivation)", "gaussian_g_star", g_star_inputs, gaussian_g_star
)
GAMMA_STEP = Exercise("one gamma-sampling step", "gamma_step", gamma_inputs, ct.gamma_step)
