"""Worked answers to the exercises of chapter 12 (active_matter), one function per exercise
(checked by tests/test_solutions.py against ``pflow_explore.exercises.active_matter``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def probability_velocity(
    z: Tensor, s: Tensor, v0: float, A: float, gamma: float, eps: float
) -> Tensor:
    """Exercise 1: v = b - D s per dimension, z = (x, g) and s = (s_x, s_g), each (n, 2)."""
    x, g = z[:, 0], z[:, 1]
    return torch.stack([v0 * g - A * x - eps * s[:, 0], -gamma * g - gamma * s[:, 1]], dim=-1)


def epr_from_velocity(v_x: Tensor, v_g: Tensor, eps: float, gamma: float) -> Tensor:
    """Exercise 2: E[|v_x|^2 / eps + |v_g|^2 / gamma], summed over particles and dimensions,
    averaged over samples; v_x, v_g (n, N, d) -> a scalar."""
    return ((v_x**2).sum((-1, -2)) / eps + (v_g**2).sum((-1, -2)) / gamma).mean()


def ou_update(g: Tensor, xi: Tensor, gamma: float, dt: float) -> Tensor:
    """Exercise 3: the exact OU step g' = e^{-gamma dt} g + sqrt(1 - e^{-2 gamma dt}) xi."""
    return math.exp(-gamma * dt) * g + math.sqrt(1 - math.exp(-2 * gamma * dt)) * xi
