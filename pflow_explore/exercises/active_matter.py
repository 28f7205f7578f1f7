"""Chapter 12 (active_matter) exercises: the probability velocity of a trapped AOUP, the EPR
from samples of the velocity, and the exact Ornstein-Uhlenbeck step of the propulsion.

Each reference is the package's own implementation (``epr``, ``datasets.particles``); the
worked answers are in the chapter's instructor notebook, between nbgrader's solution markers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pflow_explore import epr
from pflow_explore.datasets.particles import AOUP, ou_step
from pflow_explore.exercises.check import Exercise


def trapped_probability_velocity(
    z: Tensor, s: Tensor, v0: float, A: float, gamma: float, eps: float
) -> Tensor:
    """v = b - D s of one trapped AOUP per dimension: z = (x, g), s = (s_x, s_g), (n, 2) each,
    b = (v0 g - A x, -gamma g) (``epr.aoup_drift``), D = diag(eps, gamma). Returns (n, 2)."""
    model = AOUP(1, v0, gamma=gamma, eps=eps, A=A, dim=1)
    b_x, b_g = epr.aoup_drift(model, z[:, None, :1], z[:, None, 1:])  # (n, N = 1, d = 1) each
    drift = torch.cat([b_x, b_g], dim=-1)[:, 0]
    return epr.probability_velocity(drift, torch.tensor([eps, gamma], dtype=z.dtype), s)


def velocity_inputs(gen: torch.Generator) -> tuple:
    z = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    s = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    a, v0, gamma, eps = (float(v) for v in torch.rand(4, generator=gen) * 2 + 0.2)
    return z, s, v0, a, gamma, eps


def epr_from_velocity(v_x: Tensor, v_g: Tensor, eps: float, gamma: float) -> float:
    """EPR = E[|v_x|^2 / eps + |v_g|^2 / gamma] summed over particles and dimensions, mean
    over samples: ``epr.total_epr`` of the ``epr.local_epr`` parts. v_x, v_g (n, N, d)."""
    return epr.total_epr(epr.local_epr(v_x, eps) + epr.local_epr(v_g, gamma))


def epr_inputs(gen: torch.Generator) -> tuple:
    v_x = torch.randn(64, 3, 2, generator=gen, dtype=torch.float64)
    v_g = torch.randn(64, 3, 2, generator=gen, dtype=torch.float64)
    eps, gamma = (float(v) for v in torch.rand(2, generator=gen) * 2 + 0.1)
    return v_x, v_g, eps, gamma


def ou_inputs(gen: torch.Generator) -> tuple:
    g = torch.randn(32, 2, generator=gen, dtype=torch.float64)
    xi = torch.randn(32, 2, generator=gen, dtype=torch.float64)
    gamma, dt = float(torch.rand(1, generator=gen)) * 2 + 0.05, float(torch.rand(1, generator=gen))
    return g, xi, gamma, dt


PROBABILITY_VELOCITY = Exercise(
    "trapped AOUP probability velocity",
    "probability_velocity",
    velocity_inputs,
    trapped_probability_velocity,
)
EPR_FROM_VELOCITY = Exercise("EPR estimator", "epr_from_velocity", epr_inputs, epr_from_velocity)
OU_UPDATE = Exercise("exact OU step", "ou_update", ou_inputs, ou_step)
