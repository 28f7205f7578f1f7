"""The adjoint of the probability flow of Gaussian data, exactly (chapter 07, AdjointDPM).

Time convention: diffusion (t = 0 data, t = 1 noise, through :mod:`pflow_explore.paths`);
the flow itself runs in rho = sigma_t / alpha_t (rho = 0 is data), card 07 "Method".

For data x0 ~ N(mu, Sigma), Sigma = U diag(lambda) U^T, and x_t = alpha x0 + sigma z, the
noise predictor E[z | x_t = x] in the variables y = x / alpha, rho = sigma / alpha is

    eps(y, rho) = rho (Sigma + rho^2 I)^{-1} (y - mu),                                  (1)

whatever the schedule, so the reparameterized PF-ODE dy/drho = eps decouples along each
u_k into the scalar ODE that :func:`scalar_adjoint` solves with sympy, and from rho_T down
to rho_e (card 07, "Exact case")

    y(rho_e) = mu + M (y_T - mu),   M = U diag(m) U^T,
    m_k = sqrt((lambda_k + rho_e^2) / (lambda_k + rho_T^2)).

For a loss L(x_e) of x_e = alpha_e y(rho_e), x_T = alpha_T y_T, g = dL/dx_e (n, d):

    dL/dx_T    = (alpha_e / alpha_T) M^T g                                                (2)
    dL/dmu     = alpha_e (I - M)^T sum_i g_i                                              (3)
    dL/dlambda_k = alpha_e sum_i (u_k . g_i) (u_k . (y_T,i - mu)) dm_k/dlambda_k,         (4)
    dm_k/dlambda_k = m_k (rho_T^2 - rho_e^2) / (2 (lambda_k + rho_e^2) (lambda_k + rho_T^2))

(U held fixed). The same numbers come out of the adjoint ODE a' = -a d eps/dy,
dL/dtheta = -int a d eps/dtheta drho: :func:`scalar_adjoint` integrates it with sympy and
checks it against differentiating the solution directly, and :func:`flow_gain` and
:func:`gain_derivative` evaluate those sympy results (lambdified; nothing typed twice).

:class:`GaussianEps` is (1) as a torch module on any path (x, t in the path's own
variables), with the mean and the eigenvalues as parameters: the exact "network" that the
gradient routes of :mod:`pflow_explore.adjoint` are tested on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import sympy as sp
import torch
from torch import Tensor, nn

from pflow_explore.paths import NoiseLevel, Path
from pflow_explore.theory.derivation_store import stored
from pflow_explore.theory.gaussian_flow import Derivation, GaussianFlow, pf_ode_eigen_ve

F64 = torch.float64

rho, rho_T = sp.symbols("rho rho_T", positive=True)
rho_e = sp.Symbol("rho_e", nonnegative=True)  # where the solve ends (0: the data)
lam = sp.Symbol("lambda", positive=True)  # one eigenvalue of Sigma
m_sym, y_T, g_sym = sp.symbols("m y_T g", real=True)  # mean along u_k, start, dL/dy(rho_e)
y = sp.Function("y")
a = sp.Function("a")


# ---- the scalar derivation ------------------------------------------------------------------
@stored
def scalar_adjoint() -> Derivation:
    """The PF-ODE, its adjoint and the three gradients along one eigenvector u_k, by sympy.

    Steps: "eps" (1) along u_k; "PF-ODE" dy/drho = eps; "minus the VE PF-ODE" (0: the same
    ODE as the VE flow in sigma = rho, :func:`theory.gaussian_flow.pf_ode_eigen_ve`);
    "solution" from y(rho_T) = y_T; "adjoint ODE" a' = -a d eps/dy; "adjoint solution" from
    a(rho_e) = g; "dL/dy_T = a(rho_T)"; "dL/dm" and "dL/dlambda" = -int_{rho_e}^{rho_T}
    a d eps/d(m, lambda) drho along the solution; and three checks (each 0): these minus
    g times the derivative of y(rho_e) with respect to y_T, m and lambda.
    """
    eps = rho * (y(rho) - m_sym) / (lam + rho**2)
    ode = sp.Eq(y(rho).diff(rho), eps)
    ve = pf_ode_eigen_ve()["PF-ODE"].rhs
    c_fn = ve.atoms(sp.Function).pop()  # the coordinate c(sigma) of the VE derivation
    ve_here = ve.subs(c_fn, y(rho) - m_sym).subs(c_fn.args[0], rho)
    solution = sp.dsolve(ode, y(rho), ics={y(rho_T): y_T}).rhs
    y_end = solution.subs(rho, rho_e)

    deps_dy = sp.diff(eps.subs(y(rho), sp.Symbol("Y")), sp.Symbol("Y"))
    adjoint_ode = sp.Eq(a(rho).diff(rho), -a(rho) * deps_dy)
    a_sol = sp.simplify(sp.dsolve(adjoint_ode, a(rho), ics={a(rho_e): g_sym}).rhs)

    along = eps.subs(y(rho), solution)  # eps on the trajectory, as a function of (m, lambda)
    grad_y_T = sp.simplify(a_sol.subs(rho, rho_T))

    def parameter_gradient(p: sp.Symbol) -> sp.Expr:
        # d eps/dp at fixed y (the state is held, only the parameter moves)
        partial = sp.diff(eps.subs(y(rho), sp.Symbol("Y")), p).subs(sp.Symbol("Y"), solution)
        return sp.simplify(-sp.integrate(sp.simplify(a_sol * partial), (rho, rho_e, rho_T)))

    grad_m, grad_lam = parameter_gradient(m_sym), parameter_gradient(lam)
    steps = (
        ("eps", sp.Eq(sp.Symbol("epsilon"), eps)),
        ("PF-ODE", ode),
        ("minus the VE PF-ODE", sp.simplify(eps - ve_here)),
        ("solution", sp.Eq(y(rho), solution)),
        ("eps along the solution", sp.Eq(sp.Symbol("epsilon"), sp.simplify(along))),
        ("adjoint ODE", adjoint_ode),
        ("adjoint solution", sp.Eq(a(rho), a_sol)),
        ("dL/dy_T = a(rho_T)", sp.Eq(sp.Symbol("dL/dy_T"), grad_y_T)),
        ("dL/dm", sp.Eq(sp.Symbol("dL/dm"), grad_m)),
        ("dL/dlambda", sp.Eq(sp.Symbol("dL/dlambda"), grad_lam)),
        ("check y_T", sp.simplify(grad_y_T - g_sym * sp.diff(y_end, y_T))),
        ("check m", sp.simplify(grad_m - g_sym * sp.diff(y_end, m_sym))),
        ("check lambda", sp.simplify(grad_lam - g_sym * sp.diff(y_end, lam))),
    )
    return Derivation("Adjoint of the reparameterized PF-ODE along u_k", steps, steps[6][1])


# ---- lambdified numerics --------------------------------------------------------------------
@functools.cache
def _gain_fn() -> Callable[..., Tensor]:
    """m(lambda, rho_T, rho_e) = dL/dy_T / g (the flow's gain along u_k)."""
    expr = scalar_adjoint()["dL/dy_T = a(rho_T)"].rhs / g_sym
    return sp.lambdify((lam, rho_T, rho_e), sp.simplify(expr), modules="torch")


@functools.cache
def _gain_derivative_fn() -> Callable[..., Tensor]:
    """dm/dlambda (lambda, rho_T, rho_e) = dL/dlambda / (g (y_T - m))."""
    expr = scalar_adjoint()["dL/dlambda"].rhs / (g_sym * (y_T - m_sym))
    return sp.lambdify((lam, rho_T, rho_e), sp.simplify(expr), modules="torch")


def _levels(eigenvalues: Tensor, rho_start: float, rho_end: float) -> tuple[Tensor, Tensor]:
    if not 0 <= rho_end <= rho_start:
        raise ValueError(
            f"need 0 <= rho_end <= rho_T, got rho_T = {rho_start}, rho_end = {rho_end}"
        )
    if not bool((eigenvalues > 0).all()):
        raise ValueError("eigenvalues must all be > 0")
    like = torch.zeros((), dtype=eigenvalues.dtype, device=eigenvalues.device)
    return like + float(rho_start), like + float(rho_end)


def flow_gain(eigenvalues: Tensor, rho_start: float, rho_end: float = 0.0) -> Tensor:
    """m_k = sqrt((lambda_k + rho_e^2) / (lambda_k + rho_T^2)), (d,) from eigenvalues (d,):
    how much of u_k . (y_T - mu) survives the flow from rho_T = ``rho_start`` to ``rho_end``
    (the sympy "dL/dy_T = a(rho_T)" divided by g). Differentiable in the eigenvalues."""
    r_T, r_e = _levels(eigenvalues, rho_start, rho_end)
    return _gain_fn()(eigenvalues, r_T, r_e)


def gain_derivative(eigenvalues: Tensor, rho_start: float, rho_end: float = 0.0) -> Tensor:
    """dm_k/dlambda_k, (d,), eq. (4) (the sympy "dL/dlambda" divided by g (y_T - m))."""
    r_T, r_e = _levels(eigenvalues, rho_start, rho_end)
    return _gain_derivative_fn()(eigenvalues, r_T, r_e)


class Spectrum(Protocol):
    """Anything holding mean (d,), eigenvalues (d,) and eigenvectors (d, d) (columns u_k):
    :class:`~pflow_explore.theory.gaussian_flow.GaussianFlow` or :class:`GaussianEps`."""

    mean: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor


def flow_matrix(gauss: Spectrum, rho_start: float, rho_end: float = 0.0) -> Tensor:
    """M = U diag(m) U^T (d, d): y(rho_e) - mu = M (y(rho_T) - mu) for the data N(mu, Sigma)."""
    u = gauss.eigenvectors
    return (u * flow_gain(gauss.eigenvalues, rho_start, rho_end)) @ u.T


def exact_flow_map(
    gauss: Spectrum,
    x_T: Tensor,
    rho_start: float,
    alpha_start: float = 1.0,
    rho_end: float = 0.0,
    alpha_end: float = 1.0,
    condition: Tensor | None = None,
) -> Tensor:
    """x_e = alpha_e (mu' + M (x_T / alpha_T - mu')), x_T (n, d) -> (n, d): the exact PF-ODE
    solution from rho_T = ``rho_start`` (alpha_T = ``alpha_start``) to ``rho_end`` (alpha_e).
    mu' = mu + c with ``condition`` c (d,) or (n, d) (:class:`GaussianEps`'s shift), else mu.
    Differentiable in x_T, c and the spectrum (autograd checks (2)-(4) with it)."""
    mean = gauss.mean if condition is None else gauss.mean + condition
    y_start = x_T / alpha_start
    return alpha_end * (mean + (y_start - mean) @ flow_matrix(gauss, rho_start, rho_end).T)


@dataclass
class ExactGradients:
    """Gradients of L(x_e) by eqs. (2)-(4): x_T (n, d); mean (d,); eigenvalues (d,);
    mean_per_row (n, d): row i's share of dL/dmu, which is dL/dc_i for a per-row condition
    c (n, d) shifting the mean (sum it for a shared c (d,))."""

    x_T: Tensor
    mean: Tensor
    eigenvalues: Tensor
    mean_per_row: Tensor


def exact_gradients(
    gauss: Spectrum,
    x_T: Tensor,
    grad_x_end: Tensor,
    rho_start: float,
    alpha_start: float = 1.0,
    rho_end: float = 0.0,
    alpha_end: float = 1.0,
    condition: Tensor | None = None,
) -> ExactGradients:
    """Closed-form gradients (2)-(4) given g = dL/dx_e (n, d) at the end of the flow of
    :func:`exact_flow_map` (same arguments). The eigenvectors are held fixed."""
    if grad_x_end.shape != x_T.shape:
        raise ValueError(f"grad_x_end {tuple(grad_x_end.shape)} must match x_T {tuple(x_T.shape)}")
    u, lam_k = gauss.eigenvectors, gauss.eigenvalues
    mean = gauss.mean if condition is None else gauss.mean + condition
    m = flow_matrix(gauss, rho_start, rho_end)
    eye = torch.eye(m.shape[0], dtype=m.dtype, device=m.device)
    per_row = alpha_end * grad_x_end @ (eye - m)  # rows g_i^T (I - M) = ((I - M)^T g_i)^T
    along_g = grad_x_end @ u  # (n, d): u_k . g_i
    along_y = (x_T / alpha_start - mean) @ u  # (n, d): u_k . (y_T,i - mu)
    dm = gain_derivative(lam_k, rho_start, rho_end)
    return ExactGradients(
        x_T=(alpha_end / alpha_start) * grad_x_end @ m,  # rows g_i^T M = (M^T g_i)^T
        mean=per_row.sum(0),
        eigenvalues=alpha_end * (along_g * along_y).sum(0) * dm,
        mean_per_row=per_row,
    )


# ---- the exact noise predictor as a module ---------------------------------------------------
class GaussianEps(nn.Module):
    """eps(x, t, c) = E[z | x_t = x] for data N(mean + c, U diag(eigenvalues) U^T) on ``path``:

        eps = sigma U diag(1 / (alpha^2 lambda + sigma^2)) U^T (x - alpha (mu + c)),

    which is (1) in y = x / alpha, rho = sigma / alpha. x: (n, d); t: float or 0-d tensor
    (the path's time; :class:`paths.NoiseLevel` by default, t = sigma = rho); c: None, (d,)
    or (n, d), a shift of the mean (the "conditioning" whose gradient (3) gives).
    ``mean`` (d,) and ``eigenvalues`` (d,) are parameters (float64), ``eigenvectors`` (d, d)
    a buffer; the attributes make it a :class:`Spectrum`.
    """

    def __init__(
        self, mean: Tensor, eigenvalues: Tensor, eigenvectors: Tensor, path: Path | None = None
    ) -> None:
        super().__init__()
        flow = GaussianFlow.from_spectrum(mean, eigenvalues, eigenvectors)  # validates
        self.mean = nn.Parameter(flow.mean.clone())
        self.eigenvalues = nn.Parameter(flow.eigenvalues.clone())
        self.register_buffer("eigenvectors", flow.eigenvectors.clone())
        self.path = NoiseLevel() if path is None else path

    @classmethod
    def from_flow(cls, flow: GaussianFlow, path: Path | None = None) -> GaussianEps:
        """The exact eps of a :class:`GaussianFlow`'s data on ``path``."""
        return cls(flow.mean, flow.eigenvalues, flow.eigenvectors, path)

    def forward(self, x: Tensor, t: float | Tensor, c: Tensor | None = None) -> Tensor:
        """x: (n, d), t: float or 0-d, c: None, (d,) or (n, d) -> eps (n, d), x's dtype."""
        d = self.mean.shape[0]
        if x.dim() != 2 or x.shape[1] != d:
            raise ValueError(f"x must be (n, {d}), got {tuple(x.shape)}")
        tt = torch.as_tensor(t, dtype=F64, device=x.device)
        if tt.numel() != 1:
            raise ValueError(f"t must be a single time, got shape {tuple(tt.shape)}")
        alpha, sigma = self.path.alpha(tt.reshape(())), self.path.sigma(tt.reshape(()))
        mean = self.mean if c is None else self.mean + c.to(F64)
        u = self.eigenvectors
        scale = sigma / (alpha**2 * self.eigenvalues + sigma**2)
        return (((x.to(F64) - alpha * mean) @ u) * scale @ u.T).to(x.dtype)
