"""Rectified flow between two Gaussians in closed form (Liu et al. 2022/2023, docs/papers.md §03).

Time convention of THIS chapter (the paper's): t = 0 is noise, t = 1 is data,

    X_t = t X1 + (1 - t) X0,    X0 ~ pi0 = N(0, I_d),   X1 ~ pi1 = N(mu, sigma^2 I_d),

and samples move forward in t, dZ/dt = v(Z, t) from Z0 ~ pi0. (``paths.py`` uses the
opposite convention, t = 1 noise; do not mix the two.)

Every coordinate is independent (isotropic pi0 and pi1), so the derivations are scalar:
x, z_0, mu stand for one coordinate of X_t, Z0 and the mean of pi1.

- 1-rectified flow (independent coupling): Gaussian conditioning gives
      v(x, t) = E[X1 - X0 | X_t = x] = mu + (t sigma^2 - (1 - t)) / r(t)^2 (x - t mu),
      r(t)^2 = (1 - t)^2 + t^2 sigma^2;
  its flow is Z_t = t mu + r(t) Z0 and its straightness
      S = int_0^1 E|(Z1 - Z0) - dZ_t/dt|^2 dt = d sigma (2 - pi/2).
  One Euler step from t = 0 sends every Z0 to Z0 + v(Z0, 0) = mu: W2^2 to pi1 = d sigma^2.
- 2-rectified flow (coupling (Z0, Z1) = (Z0, mu + sigma Z0) of the 1-RF flow):
      v2(x, t) = mu + (sigma - 1) (x - t mu) / (1 - t + t sigma),
  constant, mu + (sigma - 1) Z0, along each path: S = 0 and one Euler step is exact.

:func:`derivation_gaussian_rf` derives these with sympy; the numeric functions below
evaluate the same sympy results (lambdified to torch), vectorised over samples.
:func:`gaussian_rf_check` checks them against numerics (paths of the exact field, Monte Carlo).

Time convention: flow (t = 0 noise, t = 1 data).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp
import torch
from torch import Tensor

from pflow_explore.theory.derivation_store import stored
from pflow_explore.theory.gaussian_flow import Derivation

F64 = torch.float64

# ---- symbols ---------------------------------------------------------------------------
t_ = sp.Symbol("t", nonnegative=True)  # time in [0, 1]; t = 0 noise, t = 1 data
sigma_ = sp.Symbol("sigma", positive=True)  # std of pi1
mu_ = sp.Symbol("mu", real=True)  # one coordinate of the mean of pi1
x_ = sp.Symbol("x", real=True)  # one coordinate of X_t
z0_ = sp.Symbol("z_0", real=True)  # one coordinate of the start Z0
d_ = sp.Symbol("d", positive=True, integer=True)  # dimension
v_sym, S_sym, Z_sym = sp.symbols("v S Z_t")
_E, _Var, _Cov = sp.Function("E"), sp.Function("Var"), sp.Function("Cov")
_Xt, _Y = sp.symbols("X_t Y")  # Y = X1 - X0


def _conditional_velocity(cov: sp.Expr, mean_y: sp.Expr, var_xt: sp.Expr) -> sp.Expr:
    """E[Y | X_t = x] for jointly Gaussian (Y, X_t): E Y + Cov(Y, X_t) / Var X_t (x - E X_t)."""
    return sp.simplify(mean_y + cov / var_xt * (x_ - t_ * mu_))


@stored
def derivation_gaussian_rf() -> Derivation:
    """1-RF and 2-RF of N(0, I_d) -> N(mu, sigma^2 I_d), per coordinate; result: S(1-RF).

    Steps (labels): "mean of X_t", "variance of X_t", "Cov(X1 - X0, X_t)" (Y = X1 - X0),
    "velocity" (v = E[X1 - X0 | X_t = x] by Gaussian conditioning), "flow" (Z_t = t mu + r Z0),
    "flow solves dZ/dt = v" (residual, simplified to 0), "dZ/dt - (Z1 - Z0)",
    "int r'^2 dt" (sympy's integral), "straightness" (d (int r'^2 - (sigma - 1)^2), before
    the arctan identity), "atan identity" (d/dsigma of atan(sigma) + atan(1/sigma) = 0 and
    its value pi/2 at sigma = 1), "1-step Euler endpoint" (= mu), "one-step W2^2",
    "2-RF velocity", "2-RF flow", "2-RF velocity along path", "2-RF straightness" (= 0).
    The result is S(1-RF) = d sigma (2 - pi/2) (docs/papers.md).
    """
    # X_t = t X1 + (1 - t) X0 with X1 = mu + sigma e, e, X0 independent N(0, 1)
    mean_xt = t_ * mu_
    var_xt = t_**2 * sigma_**2 + (1 - t_) ** 2
    cov_y_xt = t_ * sigma_**2 - (1 - t_)  # Cov(X1 - X0, t X1 + (1 - t) X0)
    velocity = _conditional_velocity(cov_y_xt, mu_, var_xt)

    r = sp.sqrt(var_xt)
    flow = t_ * mu_ + r * z0_
    residual = sp.simplify(flow.diff(t_) - velocity.subs(x_, flow))
    if residual != 0:  # pragma: no cover - sympy sanity
        raise AssertionError(f"Z_t does not solve dZ/dt = v: residual {residual}")

    # dZ/dt - (Z1 - Z0) = (r' - (sigma - 1)) Z0, and E Z0^2 = 1 per coordinate; since
    # int_0^1 r' dt = r(1) - r(0) = sigma - 1, S/d = int r'^2 dt - (sigma - 1)^2.
    z1_minus_z0 = sp.simplify(flow.subs(t_, 1) - flow.subs(t_, 0))
    deviation = sp.factor(sp.simplify(flow.diff(t_) - z1_minus_z0))
    r_prime_sq = sp.simplify(r.diff(t_) ** 2)
    int_rp2 = sp.simplify(sp.integrate(r_prime_sq, (t_, 0, 1)))
    s_raw = sp.simplify(d_ * (int_rp2 - (sigma_ - 1) ** 2))
    atan_sum = sp.atan(sigma_) + sp.atan(1 / sigma_)
    if sp.simplify(atan_sum.diff(sigma_)) != 0 or atan_sum.subs(sigma_, 1) != sp.pi / 2:
        raise AssertionError("atan(sigma) + atan(1/sigma) is not pi/2")  # pragma: no cover
    s_closed = sp.factor(
        sp.simplify(s_raw.rewrite(sp.atan).subs(sp.atan(1 / sigma_), sp.pi / 2 - sp.atan(sigma_)))
    )
    target = d_ * sigma_ * (2 - sp.pi / 2)
    if sp.simplify(s_closed - target) != 0:  # pragma: no cover - sympy sanity
        raise AssertionError(f"S(1-RF) = {s_closed}, expected {target}")

    euler_end = sp.simplify(z0_ + velocity.subs({t_: 0, x_: z0_}))  # one step, dt = 1
    w2_one_step = d_ * sigma_**2  # W2^2(delta_mu, N(mu, sigma^2 I)) = E|X1 - mu|^2

    # 2-RF: retrain on (Z0, Z1) = (Z0, mu + sigma Z0): X_t = t mu + (1 - t + t sigma) Z0
    # determines Z0, hence X1 - X0 = mu + (sigma - 1) Z0 exactly.
    scale2 = 1 - t_ + t_ * sigma_
    velocity2 = sp.simplify(mu_ + (sigma_ - 1) * (x_ - t_ * mu_) / scale2)
    flow2 = t_ * mu_ + scale2 * z0_
    along2 = sp.simplify(velocity2.subs(x_, flow2))
    if sp.simplify(along2.diff(t_)) != 0 or sp.simplify(flow2.diff(t_) - along2) != 0:
        raise AssertionError("2-RF velocity is not constant along its paths")  # pragma: no cover
    deviation2 = sp.simplify(along2 - (flow2.subs(t_, 1) - flow2.subs(t_, 0)))
    s2 = sp.integrate(d_ * deviation2**2, (t_, 0, 1))

    result = sp.Eq(S_sym, target)
    steps = (
        ("mean of X_t", sp.Eq(_E(_Xt), mean_xt)),
        ("variance of X_t", sp.Eq(_Var(_Xt), var_xt)),
        ("Cov(X1 - X0, X_t)", sp.Eq(_Cov(_Y, _Xt), cov_y_xt)),
        ("velocity", sp.Eq(v_sym, velocity)),
        ("flow", sp.Eq(Z_sym, flow)),
        ("flow solves dZ/dt = v", sp.Eq(sp.Symbol("residual"), residual)),
        ("dZ/dt - (Z1 - Z0)", sp.Eq(sp.Symbol(r"\delta"), deviation)),
        ("int r'^2 dt", sp.Eq(sp.Symbol("I"), int_rp2)),
        ("straightness", sp.Eq(S_sym, s_raw)),
        ("atan identity", sp.Eq(atan_sum, sp.pi / 2)),
        ("straightness (closed form)", result),
        ("1-step Euler endpoint", sp.Eq(sp.Symbol("Z_1"), euler_end)),
        ("one-step W2^2", sp.Eq(sp.Symbol("W_2^2"), w2_one_step)),
        ("2-RF velocity", sp.Eq(v_sym, velocity2)),
        ("2-RF flow", sp.Eq(Z_sym, flow2)),
        ("2-RF velocity along path", sp.Eq(v_sym, along2)),
        ("2-RF straightness", sp.Eq(S_sym, s2)),
    )
    return Derivation("Rectified flow N(0, I) -> N(mu, sigma^2 I), per coordinate", steps, result)


# ---- lambdified numerics -------------------------------------------------------------------
@functools.cache
def _lambdified(label: str, args: tuple[sp.Symbol, ...]) -> Callable[..., Tensor]:
    return sp.lambdify(args, derivation_gaussian_rf()[label].rhs, modules="torch")


def _sigma(value: float) -> float:
    s = float(value)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"sigma (std of pi1) must be a finite number > 0, got {value!r}")
    return s


def _sigma64(value: float, device: torch.device) -> Tensor:
    # a tensor, not a float: lambdified torch code calls torch.pow(sigma, 2)
    return torch.tensor(_sigma(value), dtype=F64, device=device)


def _points(value: Tensor, name: str) -> Tensor:
    value = torch.as_tensor(value)
    if value.dim() != 2:
        raise ValueError(f"{name} must be (n, d), got shape {tuple(value.shape)}")
    return value


def _mean(mu: float | Tensor, d: int, device: torch.device) -> Tensor:
    mu64 = torch.as_tensor(mu, dtype=F64, device=device)
    if mu64.dim() > 1 or (mu64.dim() == 1 and mu64.shape[0] != d):
        raise ValueError(f"mu must be a float or ({d},), got shape {tuple(mu64.shape)}")
    return mu64


def _time(value: float | Tensor, n: int, device: torch.device) -> Tensor:
    """t as float64 (1, 1) or (n, 1), checked to lie in [0, 1]."""
    t64 = torch.as_tensor(value, dtype=F64, device=device)
    if t64.dim() > 1 or (t64.dim() == 1 and t64.shape[0] not in (1, n)):
        raise ValueError(f"t must be a float, a 0-d tensor or shape ({n},), got {t64.shape}")
    if not (torch.isfinite(t64) & (t64 >= 0) & (t64 <= 1)).all():
        raise ValueError("t must lie in [0, 1] (t = 0 noise, t = 1 data)")
    return t64.reshape(-1, 1)


def _velocity(label: str, x: Tensor, t: float | Tensor, mu: float | Tensor, sigma: float) -> Tensor:
    """The derivation's step ``label`` (a velocity in x, t) at x (n, d), in float64 and
    returned in x's dtype."""
    x = _points(x, "x")
    mu64 = _mean(mu, x.shape[1], x.device)
    fn = _lambdified(label, (x_, t_, mu_, sigma_))
    out = fn(x.to(F64), _time(t, x.shape[0], x.device), mu64, _sigma64(sigma, x.device))
    return out.to(x.dtype)


def _flow(label: str, z0: Tensor, t: float | Tensor, mu: float | Tensor, sigma: float) -> Tensor:
    """The derivation's step ``label`` (a flow in z0, t) from z0 (n, d): at one time (n, d),
    or on a 1-D grid of times (T + 1, n, d); returned in z0's dtype."""
    z0 = _points(z0, "z0")
    mu64 = _mean(mu, z0.shape[1], z0.device)
    times = torch.as_tensor(t, dtype=F64, device=z0.device)
    if times.dim() > 1:
        raise ValueError(f"t must be a float, 0-d or a 1-D grid (T + 1,), got {times.shape}")
    _time(times.reshape(-1), times.numel(), z0.device)  # range check only
    fn = _lambdified(label, (z0_, t_, mu_, sigma_))
    out = fn(z0.to(F64), times.reshape(-1, 1, 1), mu64, _sigma64(sigma, z0.device))
    out = out if times.dim() == 1 else out[0]
    return out.to(z0.dtype)


def gaussian_rf_velocity(x: Tensor, t: float | Tensor, mu: float | Tensor, sigma: float) -> Tensor:
    """1-RF velocity of N(0, I) -> N(mu, sigma^2 I) (docs/papers.md), shape (n, d).

    v(x, t) = E[X1 - X0 | X_t = x] = mu + (t sigma^2 - (1 - t)) / ((1 - t)^2 + t^2 sigma^2)
    (x - t mu). x: (n, d); t in [0, 1] (float, 0-d or (n,)); mu: float or (d,); sigma > 0.
    Computed in float64, returned in x's dtype.
    """
    return _velocity("velocity", x, t, mu, sigma)


def gaussian_rf_flow(z0: Tensor, t: float | Tensor, mu: float | Tensor, sigma: float) -> Tensor:
    """The exact 1-RF flow Z_t = t mu + sqrt((1 - t)^2 + t^2 sigma^2) Z0.

    z0: (n, d); t: float or 0-d -> (n, d); t a 1-D grid (T + 1,) -> a trajectory
    (T + 1, n, d). mu: float or (d,); sigma > 0. Returned in z0's dtype.
    """
    return _flow("flow", z0, t, mu, sigma)


def gaussian_rf_straightness(d: int, sigma: float) -> float:
    """S(1-RF) = d sigma (2 - pi/2) for N(0, I_d) -> N(mu, sigma^2 I_d); mu drops out.

    S = int_0^1 E|(Z1 - Z0) - dZ_t/dt|^2 dt (docs/papers.md); about 0.43 d sigma.
    """
    if int(d) != d or d < 1:
        raise ValueError(f"d (dimension) must be an integer >= 1, got {d!r}")
    expr = derivation_gaussian_rf().result.rhs
    return float(expr.subs({d_: int(d), sigma_: _sigma(sigma)}))


def gaussian_2rf_velocity(x: Tensor, t: float | Tensor, mu: float | Tensor, sigma: float) -> Tensor:
    """2-RF velocity v2(x, t) = mu + (sigma - 1) (x - t mu) / (1 - t + t sigma), (n, d).

    The flow of the 1-RF coupling (Z0, mu + sigma Z0) reflowed once; constant along each
    path Z_t = t mu + (1 - t + t sigma) Z0, so one Euler step Z0 + v2(Z0, 0) is exact.
    Arguments as :func:`gaussian_rf_velocity`.
    """
    return _velocity("2-RF velocity", x, t, mu, sigma)


def gaussian_2rf_flow(z0: Tensor, t: float | Tensor, mu: float | Tensor, sigma: float) -> Tensor:
    """The exact 2-RF flow Z_t = t mu + (1 - t + t sigma) Z0 (straight lines); shapes as
    :func:`gaussian_rf_flow`. Its end point Z1 = mu + sigma Z0 equals the 1-RF end point.
    """
    return _flow("2-RF flow", z0, t, mu, sigma)


def one_step_w2_sq(d: int, sigma: float) -> float:
    """W2^2 between 1-RF's one-Euler-step samples and pi1: d sigma^2.

    One step from t = 0 with dt = 1 gives Z0 + v(Z0, 0) = mu for every Z0 (all samples
    collapse onto the mean), and W2^2(delta_mu, N(mu, sigma^2 I_d)) = E|X1 - mu|^2.
    """
    if int(d) != d or d < 1:
        raise ValueError(f"d (dimension) must be an integer >= 1, got {d!r}")
    return float(int(d) * _sigma(sigma) ** 2)


# ---- the exact case checked numerically ------------------------------------------------------
@dataclass
class GaussianRFCheck:
    """The Gaussian case N(0, I_d) -> N(mu, sigma^2 I_d) checked numerically.

    straightness / straightness_formula: S(1-RF) from the exact velocity (rk4 + Simpson on
    n paths) vs d sigma (2 - pi/2), with its Monte Carlo standard error; euler_2rf_error:
    max |Z0 + v2(Z0, 0) - (mu + sigma Z0)| (one Euler step of 2-RF vs the exact coupling);
    one_step_spread: max |Z0 + v(Z0, 0) - mu| for 1-RF; w2_sq / w2_sq_formula: the W2^2
    between the one-step samples Z0 + v(Z0, 0) themselves and n fresh target samples
    (``w2_sq_of`` of :func:`gaussian_rf_check`: the W2^2 of their Gaussian fits, exact for
    Gaussian sets; the one-step set is a point) vs d sigma^2; w2_sq_se: its sampling
    standard error, d sigma^2 sqrt(2 / (d n)) (the target covariance's trace).
    reflow_residual: the reflow regression run on 1-RF ODE pairs
    (:func:`reflow_regression_residual`, worst t; ~0 when the coupling's interpolation
    lines never cross, i.e. the 2-RF is straight); reflow_residual_independent: the same on
    independent pairs (the 1-RF's own training pairs: far from 0). NaN without
    ``endpoints_of``.
    """

    d: int
    mu: Tensor
    sigma: float
    n: int
    straightness: float
    straightness_se: float
    straightness_formula: float
    euler_2rf_error: float
    one_step_spread: float
    w2_sq: float
    w2_sq_formula: float
    w2_sq_se: float = math.nan
    reflow_residual: float = math.nan
    reflow_residual_independent: float = math.nan


def gaussian_rf_check(
    straightness_of: Callable[[Callable[[Tensor, Tensor], Tensor], Tensor], float],
    w2_sq_of: Callable[[Tensor, Tensor], float],
    d: int = 2,
    sigma: float = 0.6,
    n: int = 20000,
    seed: int = 7,
    endpoints_of: Callable[[Callable[[Tensor, Tensor], Tensor], Tensor], Tensor] | None = None,
    n_reflow: int = 4000,
) -> GaussianRFCheck:
    """Check the paper's exact case numerically on a random mu (float64, seeded ``seed``).

    ``straightness_of(v, z0)``: a numerical estimate of S = int E|(Z1 - Z0) - v(Z_t, t)|^2 dt
    of the flow of v(x (n, d), t (0-d)) from z0 (n, d), e.g. rk4 paths and Simpson in time
    (``trajectories.straightness_of_field``; passed in because the solvers sit above this
    layer). ``w2_sq_of(a, b)``: W2^2 between Gaussians fitted to the sets a (n, d) and
    b (m, d), |m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2), the exact W2^2
    when both sets are Gaussian (a point mass included: C_a = 0), e.g. the Frechet distance
    ``metrics.frechet_distance`` (passed in for the same reason).
    Draws mu (d,), then Z0 (n, d), then X1 (n, d) from one generator.
    ``endpoints_of(v, z0)``: Z1 (n, d), the end of the flow of v from z0 (an ODE solve);
    when given, the reflow regression runs on the first ``n_reflow`` 1-RF pairs.
    """
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=gen, dtype=F64)
    z0 = torch.randn(n, d, generator=gen, dtype=F64)

    def v(x: Tensor, t: Tensor) -> Tensor:
        return gaussian_rf_velocity(x, t, mu, sigma)

    # S per path is (int (r' - (sigma - 1))^2 dt) |Z0|^2: the standard error of the mean is
    # S sd(|Z0|^2) / (E|Z0|^2 sqrt(n)) = S sqrt(2 / (d n))
    s_num = straightness_of(v, z0)
    euler2 = z0 + gaussian_2rf_velocity(z0, 0.0, mu, sigma)
    err2 = float((euler2 - (mu + sigma * z0)).abs().max())
    one_step = z0 + v(z0, torch.tensor(0.0, dtype=F64))
    spread = float((one_step - mu).abs().max())
    x1 = mu + sigma * torch.randn(n, d, generator=gen, dtype=F64)
    w2 = float(w2_sq_of(one_step, x1))
    formula, w2_formula = gaussian_rf_straightness(d, sigma), one_step_w2_sq(d, sigma)
    se, w2_se = s_num * math.sqrt(2 / (d * n)), w2_formula * math.sqrt(2 / (d * n))
    residual = independent = math.nan
    if endpoints_of is not None:
        z0r = z0[:n_reflow]
        times = torch.linspace(0.0, 1.0, 11, dtype=F64)[1:-1]
        residual = max(reflow_regression_residual(z0r, endpoints_of(v, z0r), times).tolist())
        independent = min(reflow_regression_residual(z0r, x1[:n_reflow], times).tolist())
    return GaussianRFCheck(
        d,
        mu,
        sigma,
        n,
        s_num,
        se,
        formula,
        err2,
        spread,
        w2,
        w2_formula,
        w2_se,
        residual,
        independent,
    )


def reflow_regression_residual(z0: Tensor, z1: Tensor, times: Tensor) -> Tensor:
    """The reflow objective solved exactly in the affine class, one t at a time: regress
    Y = Z1 - Z0 on [X_t, 1], X_t = (1 - t) Z0 + t Z1 (least squares), and return the RMS
    residual over the RMS of Y - E[Y], per t in ``times`` (k,). For Gaussian endpoints the
    reflowed velocity is affine in x at each t, so the residual is ~0 exactly when no two
    interpolation lines cross (the coupling's reflow is straight, S = 0) and large for a
    coupling whose lines cross (independent pairs). z0, z1: (n, d)."""
    z0, z1 = z0.to(F64), z1.to(F64)
    y, out = z1 - z0, []
    for t in times.tolist():
        x = torch.cat([(1 - t) * z0 + t * z1, torch.ones(len(z0), 1, dtype=F64)], 1)
        coef = torch.linalg.lstsq(x, y).solution
        rms = lambda r: r.pow(2).mean().sqrt()
        out.append(float(rms(y - x @ coef) / rms(y - y.mean(0))))
    return torch.tensor(out, dtype=F64)
