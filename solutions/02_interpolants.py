"""Worked answers to the exercises of chapter 02 (interpolants), one function per exercise
(checked by tests/test_solutions.py against ``pflow_explore.exercises.interpolants``).

Time convention: flow (t = 0 is rho0, t = 1 is rho1)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def velocity_target(t: Tensor, x0: Tensor, x1: Tensor, z: Tensor, a: float) -> Tensor:
    """Exercise 1: d_t I + gamma' z for I = sqrt(1 - gamma^2) [cos(pi t / 2) x0 +
    sin(pi t / 2) x1] + gamma z, gamma = sqrt(a t (1 - t)); t (n,), x0, x1, z (n, d)."""
    t = t[:, None]
    g = torch.sqrt(a * t * (1 - t))
    g_dg = a * (1 - 2 * t) / 2  # gamma gamma' = (gamma^2)' / 2
    r = torch.sqrt(1 - g**2)
    c, s = torch.cos(math.pi * t / 2), torch.sin(math.pi * t / 2)
    d_interp = -g_dg / r * (c * x0 + s * x1) + r * math.pi / 2 * (c * x1 - s * x0)
    return d_interp + g_dg / g * z


def gaussian_score(x: Tensor, t: float, m0: Tensor, C0: Tensor, m1: Tensor, C1: Tensor) -> Tensor:
    """Exercise 2: s(x, t) = -C_t^{-1} (x - m_t), m_t = (1 - t) m0 + t m1,
    C_t = (1 - t)^2 C0 + t^2 C1 + t (1 - t) I; x (n, d)."""
    m_t = (1 - t) * m0 + t * m1
    C_t = (1 - t) ** 2 * C0 + t**2 * C1 + t * (1 - t) * torch.eye(len(m0), dtype=x.dtype)
    return -torch.linalg.solve(C_t, (x - m_t).T).T


def sde_step(x: Tensor, b: Tensor, s: Tensor, eps: float, dt: float, xi: Tensor) -> Tensor:
    """Exercise 3: one Euler-Maruyama step of dX = (b + eps s) dt + sqrt(2 eps) dW."""
    return x + (b + eps * s) * dt + math.sqrt(2 * eps * dt) * xi
