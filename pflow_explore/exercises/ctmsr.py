"""Chapter 06 (ctmsr) exercises: the exact one-step map of scalar linear-Gaussian
super-resolution (a derivation), a point on the HR <-> LRup trajectory, and the consistency
training loss for given noise and times (the method's core step).

Each reference is the package's own implementation (``theory.super_resolution.GaussianSR``
for the map, ``super_resolution.SRPath.point`` and ``super_resolution.consistency_sides``
with ``sr_distance`` for the loss); the worked answers are in the chapter's instructor
notebook, between nbgrader's solution markers.

Time convention: diffusion, t in [0, 1]: t = 0 the high-resolution image, t = 1 the noisy
upsampled low-resolution image (as :mod:`pflow_explore.super_resolution`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pflow_explore import super_resolution as sr
from pflow_explore.exercises.check import Exercise
from pflow_explore.theory.super_resolution import GaussianSR

F64 = torch.float64


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=gen, dtype=F64))


def posterior_inputs(gen: torch.Generator) -> tuple:
    """m in (-1, 1), c in (0.2, 2), a in (0.3, 1.5), s in (0.05, 1), y (6, 1), z (6, 1)."""
    m, c = _uniform(gen, -1, 1), _uniform(gen, 0.2, 2.0)
    a, s = _uniform(gen, 0.3, 1.5), _uniform(gen, 0.05, 1.0)
    y, z = (torch.randn(6, 1, generator=gen, dtype=F64) for _ in range(2))
    return m, c, a, s, y, z


def exact_one_step_map(m: float, c: float, a: float, s: float, y: Tensor, z: Tensor) -> Tensor:
    """x ~ N(m, c), y = a x + s n: f*(y, z) = E[x | y] + sqrt(Var[x | y]) z
    (``GaussianSR.exact_map`` in one dimension)."""
    problem = GaussianSR(torch.tensor([m]), torch.tensor([[c]]), torch.tensor([[a]]), s)
    return problem.exact_map(y, z)


def point_inputs(gen: torch.Generator) -> tuple:
    """hr, lr_up, z (6, 4), t (6,) in [0, 1], sigma_max in (0.3, 1.5)."""
    hr, lr_up, z = (torch.randn(6, 4, generator=gen, dtype=F64) for _ in range(3))
    return hr, lr_up, z, torch.rand(6, generator=gen, dtype=F64), _uniform(gen, 0.3, 1.5)


def trajectory_point(hr: Tensor, lr_up: Tensor, z: Tensor, t: Tensor, sigma_max: float) -> Tensor:
    """x_t = HR + t (LRup - HR) + sigma_max t z (``SRPath.point``)."""
    return sr.SRPath(sigma_max).point(hr, lr_up, z, t)


def _small_model(gen: torch.Generator) -> nn.Module:
    """A one-step model f(x, t, LRup) on 4 pixels with random weights drawn from ``gen``."""
    model = sr.ConsistencySR(sr.ConditionalMLP(4, 16, 1)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=F64))
    return model


def loss_inputs(gen: torch.Generator) -> tuple:
    """model, hr, lr_up, z (8, 4), t_cur = n / N and t_next = (n + 1) / N (8,) for random
    n < N <= 6, sigma_max in (0.3, 1.5)."""
    model = _small_model(gen)
    hr, lr_up, z = (torch.randn(8, 4, generator=gen, dtype=F64) for _ in range(3))
    n_steps = int(torch.randint(2, 7, (1,), generator=gen))
    n = torch.randint(n_steps, (8,), generator=gen).to(F64)
    return model, hr, lr_up, z, n / n_steps, (n + 1) / n_steps, _uniform(gen, 0.3, 1.5)


def consistency_loss_l2(
    model: nn.Module,
    hr: Tensor,
    lr_up: Tensor,
    z: Tensor,
    t_cur: Tensor,
    t_next: Tensor,
    sigma_max: float,
) -> Tensor:
    """mean over rows and pixels of (f(x_{t_next}, t_next) - sg f(x_{t_cur}, t_cur))^2, both
    points on one trajectory (``consistency_sides`` and ``sr_distance(..., "l2")``)."""
    prediction, target = sr.consistency_sides(
        model, hr, lr_up, z, t_cur, t_next, sr.SRPath(sigma_max)
    )
    return sr.sr_distance(prediction, target, "l2").mean()


POSTERIOR = Exercise("the exact one-step map (derivation)", "exact_one_step_map",
                     posterior_inputs, exact_one_step_map)  # fmt: skip
POINT = Exercise("a point on the trajectory", "trajectory_point", point_inputs, trajectory_point)
CT_LOSS = Exercise("the consistency-training loss", "consistency_loss_l2", loss_inputs,
                   consistency_loss_l2)  # fmt: skip
