"""Chapter 10 (flexiclip) exercises: a cubic Bezier trajectory, the per-triangle Jacobians
of a deformed mesh, and the ARAP energy with the closest 2D rotation.

Each reference is the package's own implementation (:mod:`pflow_explore.animation`); the
worked answers are in the chapter's instructor notebook, between nbgrader's solution markers.

Time convention: physical time of the animation, clip time tau in [0, 1] (tau = 0 the
rest clipart).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pflow_explore import animation as an
from pflow_explore.exercises.check import Exercise

F64 = torch.float64


def bezier_inputs(gen: torch.Generator) -> tuple:
    """P (5, 4, 2) control points of 5 keypoints, tau (9,) in [0, 1]."""
    return torch.randn(5, 4, 2, generator=gen, dtype=F64), torch.rand(9, generator=gen, dtype=F64)


def cubic_bezier(P: Tensor, tau: Tensor) -> Tensor:
    """p(tau) = sum_i C(3, i) (1 - tau)^(3 - i) tau^i P_i, (K, F, 2)."""
    return an.bezier(P, tau)


def _mesh(gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random mesh: 8 random points, 6 counter-clockwise triangles among them."""
    V = torch.randn(8, 2, generator=gen, dtype=F64)
    faces = torch.stack([torch.randperm(8, generator=gen)[:3] for _ in range(6)])
    flip = an.areas(V, faces) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return V, faces


def jacobian_inputs(gen: torch.Generator) -> tuple:
    """V_rest (8, 2), V (8, 2) a random deformation of it, faces (6, 3)."""
    V, faces = _mesh(gen)
    A = torch.eye(2, dtype=F64) + 0.3 * torch.randn(2, 2, generator=gen, dtype=F64)
    return V, V @ A.T + 0.1 * torch.randn(8, 2, generator=gen, dtype=F64), faces


def triangle_jacobians(V_rest: Tensor, V: Tensor, faces: Tensor) -> Tensor:
    """J_T = [v1 - v0, v2 - v0](V) [v1 - v0, v2 - v0](V_rest)^{-1}, (T, 2, 2)."""
    return an.jacobians(V_rest, V, faces)


def arap_inputs(gen: torch.Generator) -> tuple:
    """J (6, 2, 2) Jacobians (rotations times random stretches), weights (6,) > 0."""
    R = an.rotation(6.3 * torch.rand(6, generator=gen, dtype=F64))
    S = torch.eye(2, dtype=F64) + 0.2 * torch.randn(6, 2, 2, generator=gen, dtype=F64)
    return R @ S, 0.1 + torch.rand(6, generator=gen, dtype=F64)


def arap_energy(J: Tensor, weights: Tensor) -> Tensor:
    """sum_T w_T ||J_T - R(J_T)||_F^2 / sum_T w_T, R the closest rotation (a 0-d tensor)."""
    return an.arap_energy(J, weights)


BEZIER = Exercise("the cubic Bezier trajectory", "cubic_bezier", bezier_inputs, cubic_bezier)
JACOBIANS = Exercise(
    "the per-triangle Jacobians", "triangle_jacobians", jacobian_inputs, triangle_jacobians
)
ARAP = Exercise("the ARAP energy", "arap_energy", arap_inputs, arap_energy)
