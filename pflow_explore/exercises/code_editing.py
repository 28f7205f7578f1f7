"""Chapter 08 (code_editing) exercises: the Gaussian CODE channel (a derivation), one DDIM
step given eps, and one Langevin step with the sigma^2-scaled step size.

Each reference is the package's own implementation (``theory.code_gaussian.code_map``,
``editing.ddim_update``, ``editing.langevin_update``); the worked answers are in the
chapter's instructor notebook, between nbgrader's solution markers.

Time convention: diffusion (t = 0 data, t = 1 noise), x_t = alpha x0 + sigma z.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pflow_explore import editing
from pflow_explore.exercises.check import Exercise
from pflow_explore.theory.code_gaussian import code_map

F64 = torch.float64


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=gen, dtype=F64))


def channel_inputs(gen: torch.Generator) -> tuple:
    """lam (5,) in (0.05, 2), a level: sigma in (0.1, 0.95), alpha = sqrt(1 - sigma^2), a
    step scale in (0.05, 0.6), K in 1..40."""
    lam = 0.05 + 1.95 * torch.rand(5, generator=gen, dtype=F64)
    sigma = _uniform(gen, 0.1, 0.95)
    k = int(torch.randint(1, 41, (), generator=gen))
    return lam, (1 - sigma**2) ** 0.5, sigma, _uniform(gen, 0.05, 0.6), k


def code_channel(lam: Tensor, alpha: float, sigma: float, step_scale: float, k: int) -> Tensor:
    """(2, d): gain g and noise variance v of CODE on N(mu, diag lam), K noisy Langevin steps
    and one noise-free step at (alpha, sigma) (``theory.code_gaussian.code_map``)."""
    m = code_map(lam, alpha, sigma, step_scale, k)
    return torch.stack([m.gain, m.noise])


def ddim_inputs(gen: torch.Generator) -> tuple:
    """x, eps (6, 4); two levels (alpha, sigma) on the unit circle, either order."""
    x, eps = (torch.randn(6, 4, generator=gen, dtype=F64) for _ in range(2))
    s1, s2 = _uniform(gen, 0.05, 0.99), _uniform(gen, 0.05, 0.99)
    return x, eps, (1 - s1**2) ** 0.5, s1, (1 - s2**2) ** 0.5, s2


def ddim_update(
    x: Tensor, eps: Tensor, alpha: float, sigma: float, alpha_next: float, sigma_next: float
) -> Tensor:
    """``editing.ddim_update``."""
    return editing.ddim_update(x, eps, alpha, sigma, alpha_next, sigma_next)


def langevin_inputs(gen: torch.Generator) -> tuple:
    """x, eps, z (6, 4); sigma in (0.05, 0.99); step scale in (0.01, 0.9); z None in a third
    of the trials (the noise-free step)."""
    x, eps, z = (torch.randn(6, 4, generator=gen, dtype=F64) for _ in range(3))
    free = float(torch.rand(1, generator=gen)) < 1 / 3
    return x, eps, _uniform(gen, 0.05, 0.99), _uniform(gen, 0.01, 0.9), None if free else z


def langevin_update(
    x: Tensor, eps: Tensor, sigma: float, step_scale: float, z: Tensor | None
) -> Tensor:
    """``editing.langevin_update``."""
    return editing.langevin_update(x, eps, sigma, step_scale, z)


CHANNEL = Exercise(
    "the Gaussian CODE channel (derivation)", "code_channel", channel_inputs, code_channel
)
DDIM = Exercise("one DDIM step, up or down", "ddim_update", ddim_inputs, ddim_update)
LANGEVIN = Exercise(
    "one Langevin step with e = step_scale sigma^2",
    "langevin_update",
    langevin_inputs,
    langevin_update,
)
