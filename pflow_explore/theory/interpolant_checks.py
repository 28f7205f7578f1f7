"""Checks of the exact interpolant fields against independent numerics (docs/papers.md §02).

- :func:`fields_vs_monte_carlo`: the exact b and s (``InterpolantFields``) against
  self-normalised importance-sampling estimates of the conditional expectations
  b = E[d_t I + gamma' z | x_t = x] and s = -E[z | x_t = x] / gamma
  (:func:`conditional_expectations`), with z-scores;
- :func:`residual_convergence`: grid residuals of the transport (eps = 0) and Fokker-Planck
  (eps > 0) equations for the exact 1D density, halving h and dt (second order: 4x);
- :func:`perturbed_kl`: the exact likelihood control for Gaussian endpoints: with the affine
  drift b + eps s + delta, delta(x, t) = -k (x - m_t), the generated density is Gaussian and
  KL(rho1 || rho1_hat) a closed form, against the Girsanov bound
  (1 / 4 eps) int_0^1 E|delta|^2 dt (:class:`LikelihoodControl` holds a sweep).

Time convention: flow (t = 0 is rho0, t = 1 is rho1). Fields take (x, t).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.datasets.toy2d import random_mixture, single_gaussian
from pflow_explore.interpolants import Interpolant
from pflow_explore.theory.interpolant_fields import (
    InterpolantFields,
    gaussian_kl,
    gaussian_moments_flow,
    girsanov_bound,
    score_affine,
    transport_residual,
    velocity_affine,
)


# ---- random endpoints of the checks ------------------------------------------------------
def gaussian_endpoints(dim: int, seed: int) -> tuple[GaussianMixture, GaussianMixture]:
    """rho0 = N(0, I), rho1 = N(m1, C1) with a random mean and SPD covariance (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    rho1 = random_mixture(1, dim, generator=gen, mean_scale=1.0, std_range=(0.3, 1.2))
    return single_gaussian(torch.zeros(dim, dtype=torch.float64)), rho1


def mixtures_1d(seed: int) -> tuple[GaussianMixture, GaussianMixture]:
    """Two random 1D mixtures (2 and 3 components, seeded) for the grid residual checks."""
    gen = torch.Generator().manual_seed(seed)
    rho0 = random_mixture(2, 1, generator=gen, mean_scale=1.0, std_range=(0.3, 0.6))
    rho1 = random_mixture(3, 1, generator=gen, mean_scale=1.5, std_range=(0.2, 0.5))
    return rho0, rho1


# ---- Monte Carlo conditional expectations ----------------------------------------------------
@dataclass
class MonteCarloCheck:
    """Exact fields against Monte-Carlo conditional expectations at points x ~ rho_t.

    Rows (R entries): t, point index, field ("b" or "s"), coordinate, exact value, Monte-Carlo
    estimate, its standard error and the z-score (mc - exact) / se; ess: effective sample
    size of each (t, point). max_abs_z: the largest |z|.
    """

    t: Tensor
    point: Tensor
    field: list[str]
    coordinate: Tensor
    exact: Tensor
    mc: Tensor
    se: Tensor
    z: Tensor
    ess: Tensor
    n_mc: int

    @property
    def max_abs_z(self) -> float:
        return float(self.z.abs().max())


def conditional_expectations(
    interpolant: Interpolant, t: float, x: Tensor, x0: Tensor, x1: Tensor
) -> dict[str, Tensor]:
    """Self-normalised importance sampling of E[. | x_t = x] from joint draws (x0_i, x1_i).

    Given x_t = x, the posterior of (x0, x1) has weights w_i ~ N(x; I(t, x0_i, x1_i),
    gamma^2 I), and z_i = (x - I_i) / gamma. Estimates of b = E[d_t I + gamma' z | x] and
    s = -E[z | x] / gamma and their delta-method standard errors
    se^2 = sum_i w_i^2 (f_i - f_hat)^2 (w normalised). x: (p, d), x0, x1: (N, d), float64.
    Returns "b", "s", "b_se", "s_se": (p, d) and "ess": (p,) = 1 / sum w_i^2.
    """
    g = float(interpolant.gamma.gamma(t))
    dg = float(interpolant.gamma.dgamma(t))
    mid = interpolant.interpolate(t, x0, x1)  # (N, d)
    velocity_part = interpolant.dt_interpolate(t, x0, x1)
    out: dict[str, list[Tensor]] = {k: [] for k in ("b", "s", "b_se", "s_se", "ess")}
    for xp in x:
        z = (xp[None] - mid) / g  # (N, d)
        w = torch.softmax(-0.5 * (z**2).sum(1), 0)[:, None]
        for name, f in (("b", velocity_part + dg * z), ("s", -z / g)):
            est = (w * f).sum(0)
            out[name].append(est)
            out[f"{name}_se"].append(((w**2) * (f - est) ** 2).sum(0).sqrt())
        out["ess"].append(1 / (w**2).sum())
    return {k: torch.stack(v) for k, v in out.items()}


def fields_vs_monte_carlo(
    fields: InterpolantFields,
    times: tuple[float, ...],
    n_points: int,
    n_mc: int,
    generator: torch.Generator | None = None,
) -> MonteCarloCheck:
    """Exact b and s (``InterpolantFields``) against :func:`conditional_expectations` with
    n_mc fresh draws of (x0, x1) per time, at n_points samples of rho_t per time. Rows run
    over t, then the field (b, s), then the point, then the coordinate."""
    rows: dict[str, list[Tensor]] = {k: [] for k in ("t", "p", "c", "exact", "mc", "se", "ess")}
    names: list[str] = []
    d, f64 = fields.dim, torch.float64
    p_idx, c_idx = torch.arange(n_points).repeat_interleave(d), torch.arange(d).repeat(n_points)
    for t in times:
        x = fields.sample(t, n_points, generator, dtype=f64)
        x0 = fields.rho0.sample(n_mc, generator).double()
        x1 = fields.rho1.sample(n_mc, generator).double()
        est = conditional_expectations(fields.interpolant, t, x, x0, x1)
        exact = {"b": fields.velocity(x, t), "s": fields.score(x, t)}
        for name in ("b", "s"):
            names += [name] * (n_points * d)
            rows["t"].append(torch.full((n_points * d,), float(t), dtype=f64))
            rows["p"].append(p_idx)
            rows["c"].append(c_idx)
            rows["exact"].append(exact[name].to(f64).reshape(-1))
            rows["mc"].append(est[name].reshape(-1))
            rows["se"].append(est[f"{name}_se"].reshape(-1))
            rows["ess"].append(est["ess"].to(f64).repeat_interleave(d))
    col = {k: torch.cat(v) for k, v in rows.items()}
    z = (col["mc"] - col["exact"]) / col["se"]
    return MonteCarloCheck(
        col["t"], col["p"], names, col["c"], col["exact"], col["mc"], col["se"], z, col["ess"], n_mc
    )


# ---- grid residuals of the transport and Fokker-Planck equations ------------------------
@dataclass
class ResidualConvergence:
    """Grid residuals of the transport (eps = 0) and Fokker-Planck (eps > 0) equations.

    h (L,) grid spacings, dt (L,) time steps (both halved per level), eps (E,), rms (E, L):
    root mean square of the residual over the interior grid; ratio (E, L - 1):
    rms[level] / rms[level + 1] (4 for a second-order scheme).
    """

    t: float
    h: Tensor
    dt: Tensor
    eps: Tensor
    rms: Tensor

    @property
    def ratio(self) -> Tensor:
        return self.rms[:, :-1] / self.rms[:, 1:]


def residual_convergence(
    fields: InterpolantFields,
    t: float = 0.4,
    eps_values: tuple[float, ...] = (0.0, 0.5),
    levels: int = 4,
    x_range: tuple[float, float] = (-5.0, 5.0),
    m0: int = 101,
    dt0: float = 0.02,
) -> ResidualConvergence:
    """RMS of ``transport_residual`` of the exact 1D density on grids of (m0 - 1) 2^k + 1
    points, spacing h_k = h_0 / 2^k on ``x_range`` and time step dt_k = dt0 / 2^k. The exact
    rho solves the equations, so what remains is the central-difference error
    O(h^2 + dt^2): it should fall ~4x per level, for the transport (eps = 0) and for every
    Fokker-Planck equation (eps > 0) alike (docs/papers.md).
    """
    if fields.dim != 1:
        raise ValueError(f"residual_convergence needs 1D fields, got d = {fields.dim}")
    hs, dts, rms = [], [], []
    for k in range(levels):
        grid = torch.linspace(*x_range, (m0 - 1) * 2**k + 1, dtype=torch.float64)
        dt = dt0 / 2**k
        hs.append(float(grid[1] - grid[0]))
        dts.append(dt)
        residuals = [transport_residual(fields, t, grid, eps, dt) for eps in eps_values]
        rms.append([float(r.pow(2).mean().sqrt()) for r in residuals])
    f64 = torch.float64
    return ResidualConvergence(
        t,
        torch.tensor(hs, dtype=f64),
        torch.tensor(dts, dtype=f64),
        torch.tensor(eps_values, dtype=f64),
        torch.tensor(rms, dtype=f64).T,
    )


# ---- likelihood control, exactly -------------------------------------------------------------
@dataclass
class LikelihoodControl:
    """KL(rho1 || rho1_hat) with the drift b + delta, delta(x, t) = -k (x - m_t), in closed form.

    eps (E,) the SDEs; kl_sde (E,), bound (E,) = (1/(4 eps)) int E|delta|^2 dt; kl_ode: the
    ODE's KL; delta_sq: int_0^1 E_{rho_t} |delta|^2 dt; strength k. The sweep over k:
    strengths (K,), kl_ode_k, kl_sde_k, bound_k (K,) at eps = eps_ref.
    """

    dim: int
    strength: float
    eps: Tensor
    kl_sde: Tensor
    bound: Tensor
    kl_ode: float
    delta_sq: float
    eps_ref: float
    strengths: Tensor
    kl_ode_k: Tensor
    kl_sde_k: Tensor
    bound_k: Tensor


class AffineFields:
    """b = A_b x + c_b, s = A_s x + c_s, mean and covariance of rho_t, cached by t (the moment
    equations ask for the same few thousand times again for every eps)."""

    def __init__(self, fields: InterpolantFields) -> None:
        self.fields = fields
        self._memo: dict[float, tuple[Tensor, ...]] = {}

    def __call__(self, t: float) -> tuple[Tensor, ...]:
        # RK4's t + h can overshoot 1 by a rounding error, and theory's gaussian_moments_flow
        # passes it on unclamped: clamp here (gaussian_moments_flow's contract)
        t = min(max(float(t), 0.0), 1.0)
        if t not in self._memo:
            ab, cb = velocity_affine(self.fields, t)
            as_, cs = score_affine(self.fields, t)
            m, cov = self.fields.gaussian_moments(t)
            self._memo[t] = (ab, cb, as_, cs, m, cov)
        return self._memo[t]


def perturbed_kl(
    affine: AffineFields, strength: float, eps: float, steps: int
) -> tuple[float, float]:
    """(KL(rho1 || rho1_hat), Girsanov bound) for the drift b + eps s + delta,
    delta(x, t) = -k (x - m_t), noise sqrt(2 eps) (eps = 0: the ODE; its bound is inf).

    rho1_hat is Gaussian: its moments solve dm/dt = A m + c, dC/dt = A C + C A^T + 2 eps I
    (``gaussian_moments_flow``) with A = A_b + eps A_s - k I, c = c_b + eps c_s + k m_t.
    """
    eye = torch.eye(affine.fields.dim, dtype=torch.float64)
    k = float(strength)

    def a_fn(t: float) -> Tensor:
        ab, _, as_, _, _, _ = affine(t)
        return ab + eps * as_ - k * eye

    def c_fn(t: float) -> Tensor:
        _, cb, _, cs, m, _ = affine(t)
        return cb + eps * cs + k * m

    m0, c0 = affine(0.0)[4:]
    m1_hat, c1_hat = gaussian_moments_flow(a_fn, c_fn, eps, m0, c0, steps=steps)
    m1, c1 = affine(1.0)[4:]
    kl = gaussian_kl(m1, c1, m1_hat, c1_hat)
    bound = girsanov_bound(
        lambda t: -k * eye,
        lambda t: k * affine(t)[4],
        lambda t: affine(t)[4],
        lambda t: affine(t)[5],
        eps,
        steps=steps,
    )
    return kl, bound


def likelihood_sweep(
    fields: InterpolantFields,
    strength: float,
    eps_values: tuple[float, ...],
    strengths: tuple[float, ...],
    eps_ref: float,
    steps: int,
) -> LikelihoodControl:
    """:func:`perturbed_kl` for Gaussian endpoints (``fields``): the ODE and the SDEs of
    ``eps_values`` at the perturbation ``strength``, then the ODE and the SDE with
    ``eps_ref`` for every k in ``strengths``; ``steps`` RK4 steps of the moment equations.
    int_0^1 E|delta|^2 dt is read off the first SDE's bound (bound x 4 eps)."""
    affine = AffineFields(fields)
    kl_ode, _ = perturbed_kl(affine, strength, 0.0, steps)
    sde = [perturbed_kl(affine, strength, eps, steps) for eps in eps_values]
    ode_k = [perturbed_kl(affine, k, 0.0, steps)[0] for k in strengths]
    sde_k = [perturbed_kl(affine, k, eps_ref, steps) for k in strengths]

    def f64(values: list[float] | tuple[float, ...]) -> Tensor:
        return torch.tensor(values, dtype=torch.float64)

    kls, bounds = (list(v) for v in zip(*sde, strict=True))
    return LikelihoodControl(
        fields.dim,
        strength,
        f64(eps_values),
        f64(kls),
        f64(bounds),
        kl_ode,
        bounds[0] * 4 * eps_values[0],
        eps_ref,
        f64(strengths),
        f64(ode_k),
        f64([kl for kl, _ in sde_k]),
        f64([bound for _, bound in sde_k]),
    )
