"""Chapter 07 (adjoint) exercises: the exact gradient to the noise for scalar Gaussian data
(a derivation), one DDIM step of the reparameterized PF-ODE, and the right-hand side of the
adjoint ODE (a vector-Jacobian product).

Each reference is the package's own implementation (``theory.adjoint.exact_gradients``,
``adjoint.rho_steps``, ``adjoint.augmented_dynamics``); the worked answers are in the
chapter's instructor notebook, between nbgrader's solution markers.

Time convention: diffusion (t = 0 data); the flow runs in rho = sigma / alpha, from rho_T
down to 0 (as :mod:`pflow_explore.adjoint`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pflow_explore import adjoint as ad
from pflow_explore import paths
from pflow_explore.exercises.check import Exercise
from pflow_explore.theory.adjoint import GaussianEps, exact_gradients
from pflow_explore.theory.gaussian_flow import GaussianFlow

F64 = torch.float64


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=gen, dtype=F64))


def scalar_inputs(gen: torch.Generator) -> tuple:
    """lam (variance of the data) in (0.1, 4), rho_T in (2, 50), alpha_T in (0.02, 1), g =
    dL/dx_e (7,) at the data end (rho_e = 0, alpha_e = 1)."""
    lam, rho_T, alpha_T = _uniform(gen, 0.1, 4), _uniform(gen, 2, 50), _uniform(gen, 0.02, 1)
    return lam, rho_T, alpha_T, torch.randn(7, generator=gen, dtype=F64)


def scalar_noise_gradient(lam: float, rho_T: float, alpha_T: float, g: Tensor) -> Tensor:
    """dL/dx_T = sqrt(lam / (lam + rho_T^2)) g / alpha_T for 1-D data N(mu, lam) flowed from
    rho_T to 0 (``theory.adjoint.exact_gradients`` with d = 1)."""
    gauss = GaussianFlow.from_spectrum(
        torch.zeros(1, dtype=F64), torch.tensor([lam], dtype=F64), torch.eye(1, dtype=F64)
    )
    x_T = torch.zeros(len(g), 1, dtype=F64)
    return exact_gradients(gauss, x_T, g[:, None], rho_T, alpha_T).x_T[:, 0]


def _gaussian_flow(gen: torch.Generator) -> ad.RhoFlow:
    d = 2
    gauss = GaussianFlow.random(d, int(torch.randint(1000, (), generator=gen)))
    path = paths.VPLinear()
    return ad.RhoFlow(GaussianEps.from_flow(gauss, path), path)


def step_inputs(gen: torch.Generator) -> tuple:
    """flow (an exact Gaussian RhoFlow on the VP path), y (6, 2), rho in (1, 40), rho_next in
    (0, rho)."""
    flow = _gaussian_flow(gen)
    rho = _uniform(gen, 1, 40)
    return flow, 3 * torch.randn(6, 2, generator=gen, dtype=F64), rho, rho * _uniform(gen, 0, 0.9)


def ddim_step(flow: ad.RhoFlow, y: Tensor, rho: float, rho_next: float) -> Tensor:
    """One Euler step of dy/drho = eps in rho (DDIM): y + (rho_next - rho) flow(rho, y)
    (``adjoint.rho_steps`` with method "euler")."""
    grid = torch.tensor([rho, rho_next], dtype=F64)
    x = y * flow.alpha(rho).to(y)
    return next(ad.rho_steps(flow, x, grid, "euler")).y_next


def adjoint_inputs(gen: torch.Generator) -> tuple:
    """flow, rho in (0.5, 40), y (6, 2), a = dL/dy (6, 2)."""
    flow = _gaussian_flow(gen)
    y, a = (3 * torch.randn(6, 2, generator=gen, dtype=F64) for _ in range(2))
    return flow, _uniform(gen, 0.5, 40), y, a


def adjoint_rhs(flow: ad.RhoFlow, rho: float, y: Tensor, a: Tensor) -> Tensor:
    """da/drho = -a^T d eps/dy at (rho, y), one vector-Jacobian product per row
    (``adjoint.augmented_dynamics``'s second component)."""
    rho64 = torch.tensor(rho, dtype=F64)
    return ad.augmented_dynamics(flow, [])(rho64, (y, a))[1]


SCALAR = Exercise("the exact gradient to the noise (derivation)", "scalar_noise_gradient",
                  scalar_inputs, scalar_noise_gradient)  # fmt: skip
DDIM = Exercise("one DDIM step in rho", "ddim_step", step_inputs, ddim_step)
ADJOINT = Exercise("the adjoint's right-hand side", "adjoint_rhs", adjoint_inputs, adjoint_rhs)
