"""Chapter 05 (mr_sampler) exercises: the marginal of a mean-reverting SDE (a derivation),
the first-order MR Sampler update in data prediction, and its second-order multistep
correction.

Each reference is the package's own implementation (``mean_reverting.MRSchedule`` for the
marginal, ``mean_reverting.steps`` for the updates); the worked answers are in the chapter's
instructor notebook, between nbgrader's solution markers.

Time convention: diffusion, t in [0, T]: t = 0 the clean x0, t = T the condition mu plus
noise of std lambda (as :mod:`pflow_explore.mean_reverting`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pflow_explore import mean_reverting as mr
from pflow_explore.exercises.check import Exercise

F64 = torch.float64


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(1, generator=gen, dtype=F64))


def marginal_inputs(gen: torch.Generator) -> tuple:
    """x0 (5, 3), mu (3,), t in (0.1, 20), theta (constant) in (0.01, 0.5), lam in (0.1, 1),
    z (5, 3)."""
    x0, mu = torch.randn(5, 3, generator=gen, dtype=F64), torch.randn(3, generator=gen, dtype=F64)
    t, theta, lam = _uniform(gen, 0.1, 20), _uniform(gen, 0.01, 0.5), _uniform(gen, 0.1, 1.0)
    return x0, mu, t, theta, lam, torch.randn(5, 3, generator=gen, dtype=F64)


def mr_marginal(x0: Tensor, mu: Tensor, t: float, theta: float, lam: float, z: Tensor) -> Tensor:
    """x_t = mean + std z for dx = theta (mu - x) dt + sqrt(2 lam^2 theta) dW with a constant
    theta: mean mu + e^{-theta t} (x0 - mu), std lam sqrt(1 - e^{-2 theta t})
    (``MRSchedule.q_sample``'s formula)."""
    sch = mr.MRSchedule(T=t, lambda_=lam, schedule="constant", alpha_end=math.exp(-theta * t))
    return mu + sch.alpha(t) * (x0 - mu) + sch.sigmabar(t) * z


def _schedule_and_times(gen: torch.Generator) -> tuple[mr.MRSchedule, float, float]:
    sch = mr.MRSchedule(T=_uniform(gen, 20, 100), lambda_=_uniform(gen, 0.1, 0.5))
    t = sch.T * _uniform(gen, 0.3, 1.0)
    return sch, t, t * _uniform(gen, 0.2, 0.9)


def step_inputs(gen: torch.Generator) -> tuple:
    """x (6, 2) at t, x0_hat (6, 2), mu (2,), and alpha_t, sigmabar_t at t and at t_next < t."""
    sch, t, t_next = _schedule_and_times(gen)
    mu = torch.randn(2, generator=gen, dtype=F64)
    x, x0_hat = (torch.randn(6, 2, generator=gen, dtype=F64) for _ in range(2))
    coeffs = [float(f(r)) for r in (t, t_next) for f in (sch.alpha, sch.sigmabar)]
    return (x, x0_hat, mu, *coeffs)


def _constant(x0_hat: Tensor) -> mr.Denoiser:
    return lambda x, t: x0_hat


def _from_coefficients(alpha_s: float, sigmabar_s: float, alpha_t: float, sigmabar_t: float):
    """A constant-theta schedule (theta = 1) and two times s > t with these (alpha, sigmabar)
    pairs: the update depends on the times only through them."""
    lam = sigmabar_s / math.sqrt(1 - alpha_s**2)
    s, t = -math.log(alpha_s), -math.log(alpha_t)
    sch = mr.MRSchedule(T=s, lambda_=lam, schedule="constant", alpha_end=alpha_s)
    if not math.isclose(float(sch.sigmabar(t)), sigmabar_t, rel_tol=1e-9):
        raise ValueError("(alpha, sigmabar) pairs from two schedules: lambda must be shared")
    return sch, s, t


def mrs1_data_step(
    x: Tensor,
    x0_hat: Tensor,
    mu: Tensor,
    alpha_s: float,
    sigmabar_s: float,
    alpha_t: float,
    sigmabar_t: float,
) -> Tensor:
    """MRS-1, data prediction, from time s to t < s: y_t = (sigmabar_t / sigmabar_s) y_s +
    alpha_t (1 - e^{-h}) (x0^ - mu), y = x - mu, h = lam_t - lam_s (``mean_reverting.steps``)."""
    sch, s, t = _from_coefficients(alpha_s, sigmabar_s, alpha_t, sigmabar_t)
    times = torch.tensor([s, t], dtype=F64)
    return next(mr.steps("mrs_ode_data", _constant(x0_hat), sch, x, mu, times)).x_next


def multistep_inputs(gen: torch.Generator) -> tuple:
    """x (6, 2) at t_i, d0 = x0^ - mu at t_i and d1 at t_{i-1} (6, 2), mu (2,), the log-SNRs
    lam_prev < lam_s < lam_t of t_{i-1} > t_i > t_{i+1}, alpha and sigmabar at t_i and t_{i+1}."""
    sch = mr.MRSchedule(T=_uniform(gen, 20, 100), lambda_=_uniform(gen, 0.1, 0.5))
    t_prev = sch.T * _uniform(gen, 0.6, 1.0)
    t = t_prev * _uniform(gen, 0.4, 0.9)
    t_next = t * _uniform(gen, 0.3, 0.9)
    x, d0, d1 = (torch.randn(6, 2, generator=gen, dtype=F64) for _ in range(3))
    mu = torch.randn(2, generator=gen, dtype=F64)
    lams = [float(sch.lam(r)) for r in (t_prev, t, t_next)]
    coeffs = [float(f(r)) for r in (t, t_next) for f in (sch.alpha, sch.sigmabar)]
    return (x, d0, d1, mu, *lams, *coeffs)


def mrs2_data_step(
    x: Tensor,
    d0: Tensor,
    d1: Tensor,
    mu: Tensor,
    lam_prev: float,
    lam_s: float,
    lam_t: float,
    alpha_s: float,
    sigmabar_s: float,
    alpha_t: float,
    sigmabar_t: float,
) -> Tensor:
    """MRS-2 (multistep), data prediction: d(l) ~ d0 + (l - lam_s) D1, D1 = (d0 - d1) /
    (lam_s - lam_prev), integrated exactly: y_t = (sigmabar_t / sigmabar_s) y_s + alpha_t
    [(1 - e^{-h}) d0 + (e^{-h} - 1 + h) D1] (the package's update from the same history)."""
    sch, s, t = _from_coefficients(alpha_s, sigmabar_s, alpha_t, sigmabar_t)
    hist = [(lam_prev, d1), (lam_s, d0)]
    p, h = mr._taylor(hist), torch.tensor(lam_t - lam_s, dtype=F64)
    factor, c = mr._ei_coefficients("mrs_ode_data", h, 2)
    forcing = c[0] * p[0] + c[1] * p[1]
    return mu + float(sigmabar_t / sigmabar_s * factor) * (x - mu) + alpha_t * forcing


MARGINAL = Exercise("the marginal of the MR SDE (derivation)", "mr_marginal", marginal_inputs,
                    mr_marginal)  # fmt: skip
MRS1 = Exercise("the MRS-1 data-prediction step", "mrs1_data_step", step_inputs, mrs1_data_step)
MRS2 = Exercise("the MRS-2 multistep correction", "mrs2_data_step", multistep_inputs,
                mrs2_data_step)  # fmt: skip
