"""A tiny flow-matching motion prior over keypoint clips, used as the stand-in for a video
diffusion model (chapter 10): score distillation, a log-probability surrogate and the exact
log-likelihood by the instantaneous change of variables.

A clip x (n, d) is a flattened keypoint motion (K x F x 2 displacements, scaled); the prior
is a class-conditional velocity v(x, t, y) trained with ``flow_matching.rectified_flow_loss``
(labels y = the motion: walk, wave, jump).

- Score distillation (SDS) on a flow prior: draw t, z; x_t = (1 - t) z + t x; the prior's
  denoised clip x^ = x_t + (1 - t) v(x_t, t, y). The loss 1/2 ||x - sg(x^)||^2 has the
  gradient x - x^ = (1 - t)(z^ - z)-type residual: DreamFusion's SDS gradient for this
  parameterisation, with its weight; no gradient runs through the prior.
- Log-probability surrogate: minus the flow-matching loss at fixed (t, z) draws, a monotone
  proxy of log p used inside the optimisation (cheap, differentiable), NOT a likelihood.
- Exact log-likelihood: log p_1(x) = log N(z_0; 0, I) - int_0^1 div v(x_t, t) dt along the
  ODE from x back to z_0 (rk4, divergence by a full Jacobian trace: exact up to the ODE
  solver's error).

Time convention: flow (t = 0 noise, t = 1 data), as :mod:`flow_matching`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pflow_explore.flow_matching import Velocity, VelocityNet
from pflow_explore.nets.mlp import MLP


def make_prior(dim: int, hidden: int = 256, depth: int = 3, n_classes: int = 3) -> VelocityNet:
    """The prior's velocity net: an MLP on flat clips, conditioned on t and the motion."""
    return VelocityNet(MLP(dim, hidden, depth, n_classes=n_classes))


def denoised(v: Velocity, x_t: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
    """x^ = x_t + (1 - t) v(x_t, t, y): the prior's estimate of the clean clip, (n, d)."""
    return x_t + (1 - t)[:, None] * v(x_t, t, y)


def sds_loss(
    v: Velocity,
    x: Tensor,
    y: Tensor | None,
    generator: torch.Generator,
    t_range: tuple[float, float] = (0.2, 0.9),
    n_draws: int = 1,
) -> Tensor:
    """Score-distillation loss (a scalar) whose gradient in x is mean (x - sg(x^)) / n:
    pulls x towards the prior's denoised estimate at random (t, z), ``n_draws`` per clip."""
    xs = x.repeat(n_draws, 1)
    ys = None if y is None else y.repeat(n_draws)
    t = t_range[0] + (t_range[1] - t_range[0]) * torch.rand(len(xs), generator=generator)
    z = torch.randn(xs.shape, generator=generator)
    with torch.no_grad():
        target = denoised(v, (1 - t)[:, None] * z + t[:, None] * xs.detach(), t, ys)
    return 0.5 * ((xs - target) ** 2).sum(-1).mean()


def surrogate_log_prob(v: Velocity, x: Tensor, y: Tensor | None, t: Tensor, z: Tensor) -> Tensor:
    """-(d / 2) mean_j |v(x_tj, t_j, y) - (x - z_j)|^2 / d over fixed draws t (m,), z (m, d):
    (n,), a differentiable proxy that rises as x becomes typical for the prior."""
    n, m = x.shape[0], t.shape[0]
    xs = x[:, None, :].expand(n, m, -1).reshape(n * m, -1)
    zs = z[None].expand(n, m, -1).reshape(n * m, -1)
    ts = t.repeat(n)
    ys = None if y is None else y.repeat_interleave(m)
    x_t = (1 - ts)[:, None] * zs + ts[:, None] * xs
    err = ((v(x_t, ts, ys) - (xs - zs)) ** 2).sum(-1).reshape(n, m)
    return -0.5 * err.mean(1)


def divergence(v: Velocity, x: Tensor, t: float, y: Tensor | None) -> Tensor:
    """div_x v(x, t, y) (n,), exactly: the trace of the Jacobian, from d vector-Jacobian
    products with the basis vectors (batched: ``is_grads_batched``)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = v(x, torch.full((len(x),), t, dtype=x.dtype), y)
        d = x.shape[1]
        basis = torch.eye(d, dtype=x.dtype).unsqueeze(1).expand(d, len(x), d)
        (g,) = torch.autograd.grad(out, x, basis, is_grads_batched=True)
    return torch.einsum("ini->n", g).detach()


@torch.no_grad()
def log_likelihood(v: Velocity, x: Tensor, y: Tensor | None, n_steps: int = 16) -> Tensor:
    """log p_1(x) under the prior's flow, (n,): integrate (x, l) backwards from t = 1 with
    dx/dt = v, dl/dt = div v (rk4, ``n_steps``), then add log N(x_0; 0, I)."""

    def f(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        return v(x, torch.full((len(x),), t, dtype=x.dtype), y), divergence(v, x, t, y)

    h, logdet = 1.0 / n_steps, torch.zeros(len(x), dtype=x.dtype)
    for k in range(n_steps):
        t = 1.0 - k * h
        k1, d1 = f(x, t)
        k2, d2 = f(x - h / 2 * k1, t - h / 2)
        k3, d3 = f(x - h / 2 * k2, t - h / 2)
        k4, d4 = f(x - h * k3, t - h)
        x = x - h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        logdet = logdet + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    d = x.shape[1]
    return -0.5 * (x**2).sum(1) - 0.5 * d * math.log(2 * math.pi) - logdet
