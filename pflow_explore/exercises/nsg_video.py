"""Chapter 11 (nsg_video) exercises: the NSG of a translating Gaussian (a derivation), and
the estimator's two pieces: the temporal differences of a video and the NSG of a frame.

Each reference is the package's own implementation (``theory.nsg.translating_gaussian_nsg``,
``nsg.temporal_difference``, ``nsg.nsg``); the worked answers are in the chapter's
instructor notebook, between nbgrader's solution markers.

Time convention: physical time (video time t in frames).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pflow_explore import nsg as N
from pflow_explore.exercises.check import Exercise
from pflow_explore.theory import nsg as theory_nsg

F64 = torch.float64


def gaussian_inputs(gen: torch.Generator) -> tuple:
    """x (6, 3), t in (0, 2), mu0 (3,), v (3,), cov (3, 3) = A A^T + I / 2."""
    a = torch.randn(3, 3, generator=gen, dtype=F64)
    x, mu0, v = (torch.randn(*shape, generator=gen, dtype=F64) for shape in ((6, 3), (3,), (3,)))
    t = 2 * float(torch.rand(1, generator=gen, dtype=F64))
    return x, t, mu0, v, a @ a.T + 0.5 * torch.eye(3, dtype=F64)


def gaussian_nsg(x: Tensor, t: float, mu0: Tensor, v: Tensor, cov: Tensor) -> Tensor:
    """NSG = grad log p / d_t log p of N(mu0 + v t, cov) at x (n, d): -P r / (v^T P r),
    P = cov^-1, r = x - mu0 - v t (``theory.nsg.translating_gaussian_nsg``)."""
    return theory_nsg.translating_gaussian_nsg(x, t, mu0, v, cov)


def video_inputs(gen: torch.Generator) -> tuple:
    """videos (3, T, 5) with T in 3..8."""
    frames = int(torch.randint(3, 9, (1,), generator=gen))
    return (torch.randn(3, frames, 5, generator=gen, dtype=F64),)


def temporal_difference(video: Tensor) -> Tensor:
    """dx_t: (x_{t+1} - x_{t-1}) / 2 inside, one-sided at the two ends (``nsg``)."""
    return N.temporal_difference(video)


def nsg_inputs(gen: torch.Generator) -> tuple:
    """scores (4, 5, 6), dx (4, 5, 6), eps in (0.01, 0.5); two frames have denominators
    below eps in magnitude: +0.3 eps and -0.5 eps."""
    s = torch.randn(4, 5, 6, generator=gen, dtype=F64)
    dx = torch.randn(4, 5, 6, generator=gen, dtype=F64)
    eps = 0.01 + 0.49 * float(torch.rand(1, generator=gen, dtype=F64))
    for (i, j), den in (((0, 0), 0.3 * eps), ((1, 2), -0.5 * eps)):
        u = s[i, j] / (s[i, j] @ s[i, j])
        dx[i, j] = dx[i, j] - (s[i, j] @ dx[i, j]) * u + den * u  # <s, dx> = den
    return s, dx, eps


def nsg_estimate(scores: Tensor, dx: Tensor, eps: float) -> Tensor:
    """NSG_t = s_t / den, den = <s_t, dx_t> with |den| floored at eps, sign kept (zero counts
    as positive) (``nsg.nsg``)."""
    return N.nsg(scores, dx, eps)


GAUSSIAN_NSG = Exercise(
    "the NSG of a translating Gaussian (derivation)",
    "gaussian_nsg",
    gaussian_inputs,
    gaussian_nsg,
    rtol=1e-6,
)
TEMPORAL = Exercise(
    "central temporal differences", "temporal_difference", video_inputs, temporal_difference
)
NSG = Exercise(
    "the NSG estimator of one frame", "nsg_estimate", nsg_inputs, nsg_estimate, rtol=1e-6
)
