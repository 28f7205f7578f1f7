"""Chapter 01 (painters) exercises: the Gaussian denoiser, the closed-form VE trajectory, and
the noise level at which a feature is fixed.

The references are the package's sympy-derived closed forms
(``theory.gaussian_flow.GaussianFlow``: ``ve_denoiser``, ``ve_solution``, and
``feature_share`` inverted by bisection, so the third exercise is checked against the share
curve itself rather than against a formula for its inverse); the worked answers are in
the chapter's instructor notebook, between nbgrader's solution markers.

Time convention: noise level (sigma; sigma = 0 is the data).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pflow_explore.exercises.check import Exercise
from pflow_explore.theory.gaussian_flow import GaussianFlow

F64 = torch.float64


def gaussian_inputs(gen: torch.Generator) -> tuple[Tensor, float, Tensor, Tensor, Tensor]:
    """(x (7, 5), sigma, mean (5,), lam (5,), U (5, 5)): a random Gaussian and points."""
    d = 5
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
    lam = torch.rand(d, generator=gen, dtype=F64) * 3 + 0.05
    mean = torch.randn(d, generator=gen, dtype=F64)
    x = torch.randn(7, d, generator=gen, dtype=F64) * 2
    sigma = float(torch.rand(1, generator=gen)) * 3 + 0.01
    return x, sigma, mean, lam, q


def gaussian_denoiser(x: Tensor, sigma: float, mean: Tensor, lam: Tensor, U: Tensor) -> Tensor:
    """D(x; sigma) of N(mean, U diag(lam) U^T), x (n, d) -> (n, d)."""
    return GaussianFlow.from_spectrum(mean, lam, U).ve_denoiser(x, sigma)


def start_inputs(gen: torch.Generator) -> tuple:
    """(x_T (7, 5), sigma_T, sigma, mean, lam, U) with sigma_T = sigma + 5 > sigma."""
    x, sigma, mean, lam, U = gaussian_inputs(gen)
    return x, sigma + 5.0, sigma, mean, lam, U


def ve_solution(
    x_T: Tensor, sigma_T: float, sigma: float, mean: Tensor, lam: Tensor, U: Tensor
) -> Tensor:
    """The exact VE trajectory from x_T at sigma_T, evaluated at sigma: (n, d)."""
    flow = GaussianFlow.from_spectrum(mean, lam, U)
    return flow.ve_solution(x_T, sigma_T, torch.tensor([sigma], dtype=F64))[0]


def level_inputs(gen: torch.Generator) -> tuple[Tensor, float]:
    """(lam (6,), level in (0.05, 0.95))."""
    lam = torch.rand(6, generator=gen, dtype=F64) * 4 + 0.01
    return lam, float(torch.rand(1, generator=gen)) * 0.9 + 0.05


def emergence_sigma(lam: Tensor, level: float, iterations: int = 64) -> Tensor:
    """sigma_k with f_k(sigma_k) = level, found by bisection on ``feature_share`` (which falls
    from 1 at sigma = 0 towards 0), one feature at a time: lam (d,) -> (d,)."""
    out = []
    for lam_k in lam.tolist():
        one = torch.ones(1, 1, dtype=F64)
        flow = GaussianFlow.from_spectrum(
            torch.zeros(1, dtype=F64), torch.tensor([lam_k], dtype=F64), one
        )
        lo, hi = 0.0, 1.0
        while float(flow.feature_share(hi)[0]) > level:  # grow until the root is bracketed
            hi *= 2
        for _ in range(iterations):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if float(flow.feature_share(mid)[0]) > level else (lo, mid)
        out.append((lo + hi) / 2)
    return torch.tensor(out, dtype=F64)


class LearnerJump:
    """The teleportation jump made of the learner's two functions.

    ``edm.heun_steps(teleport_to=k, gaussian=...)`` calls two methods of its ``gaussian``:
    ``ve_solution(x_T, sigma_T, sigmas) -> (m, n, d)`` for the jump and
    ``ve_denoiser(x, sigma) -> (n, d)`` for the x0-estimate it shows. This object answers
    both with ``solution(x_T, sigma_T, sigma, mean, lam, U)`` (one sigma at a time) and
    ``denoiser(x, sigma, mean, lam, U)`` on ``gaussian``'s spectrum, in float64 like the
    checker's inputs, and returns x's dtype.
    """

    def __init__(
        self,
        gaussian: GaussianFlow,
        denoiser: Callable[..., Tensor],
        solution: Callable[..., Tensor],
    ) -> None:
        self.gaussian, self.denoiser, self.solution = gaussian, denoiser, solution

    def _spectrum(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        g = self.gaussian
        return g.mean.to(device), g.eigenvalues.to(device), g.eigenvectors.to(device)

    def ve_solution(self, x_T: Tensor, sigma_T: float, sigmas: Tensor) -> Tensor:
        """(m, n, d): the learner's x(sigma) for each sigma in ``sigmas`` (m,)."""
        mean, lam, u = self._spectrum(x_T.device)
        x64 = x_T.to(F64)
        out = [self.solution(x64, float(sigma_T), float(s), mean, lam, u) for s in sigmas]
        return torch.stack(out).to(x_T.dtype)

    def ve_denoiser(self, x: Tensor, sigma: float) -> Tensor:
        """(n, d): the learner's D(x; sigma)."""
        mean, lam, u = self._spectrum(x.device)
        return self.denoiser(x.to(F64), float(sigma), mean, lam, u).to(x.dtype)


GAUSSIAN_DENOISER = Exercise(
    "Gaussian denoiser", "gaussian_denoiser", gaussian_inputs, gaussian_denoiser
)
VE_SOLUTION = Exercise("closed-form VE trajectory", "ve_solution", start_inputs, ve_solution)
EMERGENCE_SIGMA = Exercise("feature emergence", "emergence_sigma", level_inputs, emergence_sigma)
