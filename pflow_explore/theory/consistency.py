"""The exact consistency-trajectory jump of Gaussian data, derived with sympy (chapter 04).

Time convention: diffusion, EDM's variance-exploding form with time = noise level,
x_t = x0 + t z (t = 0 data); see :mod:`pflow_explore.consistency`.

For x0 ~ N(mu, Sigma) the PF-ODE decouples along each eigenvector u_k of Sigma (eigenvalue
lambda) into c(s) = c(t) sqrt((lambda + s^2) / (lambda + t^2)) for c = u_k^T (x - mu)
(:func:`theory.gaussian_flow.pf_ode_eigen_ve`, solved there from c(sigma_T) = c_T). So the
exact CTM jump and the network output it asks for, G = (s/t) x + (1 - s/t) g, are

    u_k^T (G* - mu) = sqrt((lambda + s^2) / (lambda + t^2)) c,
    u_k^T (g* - mu) = (t sqrt((lambda + s^2) / (lambda + t^2)) - s) c / (t - s),

and :func:`ctm_jump_eigen` also shows, with sympy's limit, that g*(x, t, s) -> D*(x, t) as
s -> t (the network's diagonal is the denoiser), and that gamma-sampling with G* keeps the
marginal variance lambda + t_next^2 for every gamma. :func:`gaussian_jump` evaluates G* for a
:class:`~pflow_explore.theory.gaussian_flow.GaussianFlow` (the same sympy solution, lambdified).
"""

from __future__ import annotations

import sympy as sp
from torch import Tensor

from pflow_explore.theory.derivation_store import stored
from pflow_explore.theory.gaussian_flow import (
    Derivation,
    GaussianFlow,
    c_sym,
    c_T,
    gaussian_denoiser_eigen,
    lam,
    pf_ode_eigen_ve,
    sigma,
    sigma_T,
)

t_sym, s_sym, t_next = sp.symbols("t s t_next", positive=True)
gamma = sp.Symbol("gamma", nonnegative=True)
G_sym, g_sym_out = sp.symbols("G g", real=True)


@stored
def ctm_jump_eigen() -> Derivation:
    """The exact jump G* and network target g* along u_k (c = u_k^T (x - mu)), with checks:

    - "G*": the VE solution from time t to s (sigma_T -> t, sigma -> s, c_T -> c);
    - "g* = (G* - (s/t) c) / (1 - s/t)": what eq. 2 of the chapter needs g to output;
    - "lim s -> t of g*": equals the Gaussian denoiser lambda c / (lambda + t^2);
    - "variance after a gamma step": lambda + t_next^2 whatever gamma (the marginal is kept).
    """
    solution = pf_ode_eigen_ve().result.rhs
    jump = sp.simplify(solution.subs({sigma_T: t_sym, sigma: s_sym, c_T: c_sym}))
    ratio = s_sym / t_sym
    g_star = sp.simplify((jump - ratio * c_sym) / (1 - ratio))
    limit = sp.simplify(sp.limit(g_star, s_sym, t_sym))
    denoiser = gaussian_denoiser_eigen().result.rhs.subs(sigma, t_sym)
    s_hat = sp.sqrt(1 - gamma**2) * t_next
    # c ~ N(0, lambda + t^2) jumped to s_hat: variance (lambda + s_hat^2); plus (gamma t_next)^2
    var_after = sp.simplify((lam + s_hat**2) + gamma**2 * t_next**2)
    steps = (
        ("G*", sp.Eq(G_sym, jump)),
        ("g* = (G* - (s/t) c) / (1 - s/t)", sp.Eq(g_sym_out, g_star)),
        ("lim s -> t of g*", sp.Eq(sp.Symbol("g(x, t, t)"), limit)),
        ("Gaussian denoiser at t", sp.Eq(sp.Symbol("D*(x, t)"), denoiser)),
        ("lim minus denoiser", sp.simplify(limit - denoiser)),
        ("variance after a gamma step", sp.Eq(sp.Symbol("Var"), var_after)),
    )
    return Derivation("CTM jump of N(mu, Sigma) along u_k, c = u_k^T (x - mu)", steps, steps[1][1])


def gaussian_jump(gaussian: GaussianFlow, x: Tensor, t: float, s: float) -> Tensor:
    """G*(x, t, s) for data N(mu, Sigma): the exact PF-ODE map from time t to s <= t,
    x (n, d) -> (n, d) (``GaussianFlow.ve_solution``, the sympy solution above)."""
    if not 0 <= s <= t:
        raise ValueError(f"need 0 <= s <= t, got t = {t}, s = {s}")
    return gaussian.ve_solution(x, t, [s])[0].to(x.dtype)
