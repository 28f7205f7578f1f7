"""Worked answers to the exercises of chapter 03 (rectified_flow), one function per exercise
(checked by tests/test_solutions.py against ``pflow_explore.exercises.rectified_flow``).
Time: t = 0 noise, t = 1 data."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def rf_loss(v: Callable[..., Tensor], x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """Exercise 1: mean over the batch and coordinates of |v(X_t, t) - (x1 - x0)|^2, with
    X_t = t x1 + (1 - t) x0; x0, x1 (n, d), t (n,)."""
    xt = t[:, None] * x1 + (1 - t[:, None]) * x0
    return ((v(xt, t) - (x1 - x0)) ** 2).mean()


def discrete_straightness(path: Tensor, times: Tensor) -> Tensor:
    """Exercise 2: (1/n) sum_j sum_k |dt_k| |chord_j - (Z_{k+1,j} - Z_{k,j}) / dt_k|^2 with
    the chord velocity (Z_T - Z_0) / (t_T - t_0); path (T+1, n, d), times (T+1,)."""
    dt = times.diff()
    velocity = path.diff(dim=0) / dt[:, None, None]
    chord = (path[-1] - path[0]) / (times[-1] - times[0])
    return (dt.abs()[:, None] * ((chord - velocity) ** 2).sum(-1)).sum(0).mean()


def guided_velocity(
    v: Callable[..., Tensor], x: Tensor, t: float | Tensor, y: Tensor, alpha: float
) -> Tensor:
    """Exercise 3: v(x, t | null) + alpha (v(x, t | y) - v(x, t | null)), the null class
    being the label v.n_classes."""
    null = torch.full_like(y, v.n_classes)
    return v(x, t, null) + alpha * (v(x, t, y) - v(x, t, null))
