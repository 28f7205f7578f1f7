"""The normalized spatiotemporal gradient (NSG) of a moving density, exactly.

Time convention: physical time (video time t, in frames); no diffusion time appears here.

A density carried by a velocity field v obeys the continuity equation
d_t p + div(p v) = 0, so d_t log p = -div v - v . grad log p. The NSG (NSG-VD, card eq. 1) is

    NSG = grad_x log p / d_t log p,

and when the motion is divergence-free (div v = 0: translation, rotation, brightness
constancy) v^T NSG = -(v . s) / (v . s) = -1 wherever v . s != 0. Exact case: the
translating Gaussian N(mu0 + v t, Sigma) gives

    NSG = -Sigma^-1 (x - mu_t) / (v^T Sigma^-1 (x - mu_t)),      v^T NSG = -1,

while a compressive (zoom) flow x -> x / a(t), a density N(mu0, a(t)^2 Sigma), has
div v = d a' / a != 0 and breaks the identity. :func:`identity_derivation` does both in sympy;
:func:`translating_gaussian_nsg` is the closed form; :func:`autograd_nsg` computes the NSG of
any differentiable log-density log p(x, t) by autograd, independently of the formula.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp
import torch
from torch import Tensor

from pflow_explore.theory.derivation_store import stored
from pflow_explore.theory.gaussian_flow import Derivation

LogDensity = Callable[[Tensor, Tensor], Tensor]  # log p(x (n, d), t (n,) or ()) -> (n,)


@stored
def identity_derivation() -> Derivation:
    """sympy, in 2D with a general symmetric Sigma: log p of N(mu0 + v t, Sigma), its spatial
    gradient s, d_t log p, the NSG and v^T NSG (simplifies to -1); then the zoom density
    N(mu0, a(t)^2 Sigma) with flow velocity a'/a (x - mu0), whose v^T NSG is not -1."""
    t = sp.Symbol("t", real=True)
    x1, x2, m1, m2, v1, v2 = sp.symbols("x_1 x_2 mu_1 mu_2 v_1 v_2", real=True)
    a, b, c = sp.symbols("a b c", positive=True)  # Sigma^-1 = [[a, b], [b, c]]
    P = sp.Matrix([[a, b], [b, c]])
    x, mu0, v = sp.Matrix([x1, x2]), sp.Matrix([m1, m2]), sp.Matrix([v1, v2])
    r = x - (mu0 + v * t)
    logp = -(r.T * P * r)[0] / 2 + sp.log(a * c - b**2) / 2 - sp.log(2 * sp.pi)
    s = sp.Matrix([sp.diff(logp, x1), sp.diff(logp, x2)])
    dt = sp.diff(logp, t)
    nsg = s / dt
    vt_nsg = sp.simplify((v.T * nsg)[0])
    # zoom: x_t = mu0 + a(t) (x_0 - mu0), a(t) = 1 + k t; velocity k / a (x - mu0), div = 2 k / a
    k = sp.Symbol("k", positive=True)
    scale = 1 + k * t
    rz = (x - mu0) / scale
    logz = -(rz.T * P * rz)[0] / 2 - 2 * sp.log(scale) + sp.log(a * c - b**2) / 2
    sz = sp.Matrix([sp.diff(logz, x1), sp.diff(logz, x2)])
    vz = k / scale * (x - mu0)
    continuity = sp.simplify(sp.diff(logz, t) + 2 * k / scale + (vz.T * sz)[0])
    vz_nsg = sp.simplify((vz.T * sz)[0] / sp.diff(logz, t))
    steps = (
        ("log p, translating Gaussian", logp),
        ("s = grad_x log p", s),
        ("d_t log p", sp.simplify(dt)),
        ("v^T NSG", vt_nsg),
        ("zoom: continuity residual d_t log p + div v + v.s", continuity),
        ("zoom: v^T NSG", vz_nsg),
    )
    return Derivation("NSG of a moving Gaussian", steps, sp.Eq(sp.Symbol("v^T NSG"), vt_nsg))


def translating_gaussian_nsg(x: Tensor, t: float, mu0: Tensor, v: Tensor, cov: Tensor) -> Tensor:
    """Closed form for N(mu0 + v t, cov): x (n, d) -> NSG (n, d),
    -P r / (v^T P r) with P = cov^-1, r = x - mu0 - v t."""
    r = x - mu0 - v * t
    pr = torch.linalg.solve(cov, r.T).T
    return -pr / (pr @ v)[:, None]


def autograd_nsg(log_p: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: float) -> Tensor:
    """NSG = grad_x log p / d_t log p by autograd: log_p(x (n, d), t (scalar tensor)) -> (n,).
    Returns (n, d) in x's dtype."""
    x = x.detach().clone().requires_grad_(True)
    # t as an (n,) tensor: d_t log p of each sample is then one backward pass for all
    tn = torch.full((len(x),), float(t), dtype=x.dtype, requires_grad=True)
    gx, gt = torch.autograd.grad(log_p(x, tn).sum(), (x, tn))
    return gx / gt[:, None]


def gaussian_log_density(
    mean_of_t: Callable[[Tensor], Tensor], cov_of_t: Callable[[Tensor], Tensor]
) -> LogDensity:
    """log p(x, t) of N(mean(t), cov(t)): mean_of_t(t (n,) or ()) -> (n, d) or (d,), cov_of_t
    likewise -> (n, d, d) or (d, d). For :func:`autograd_nsg`."""

    def log_p(x: Tensor, t: Tensor) -> Tensor:
        m, c = mean_of_t(t), cov_of_t(t)
        r = x - m
        if c.dim() == 2:
            c = c.expand(len(x), *c.shape)
        sol = torch.linalg.solve(c, r.unsqueeze(-1)).squeeze(-1)
        d = x.shape[-1]
        return (
            -0.5 * (r * sol).sum(-1)
            - 0.5 * torch.logdet(c)
            - 0.5 * d * torch.log(torch.tensor(2 * torch.pi, dtype=x.dtype))
        )

    return log_p


def translating(mu0: Tensor, v: Tensor, cov: Tensor) -> LogDensity:
    """log p(x, t) of N(mu0 + v t, cov) (divergence-free motion)."""
    mean = lambda t: mu0 + (t[..., None] if t.dim() else t) * v
    return gaussian_log_density(mean, lambda t: cov)


def zooming(mu0: Tensor, cov: Tensor, rate: float) -> LogDensity:
    """log p(x, t) of N(mu0, a(t)^2 cov), a = 1 + rate t: the flow x -> mu0 + a (x0 - mu0),
    velocity rate / a (x - mu0), divergence d rate / a (compressive for rate < 0)."""
    scale = lambda t: 1 + rate * t
    cov_t = lambda t: (scale(t)[..., None, None] ** 2 if t.dim() else scale(t) ** 2) * cov
    return gaussian_log_density(lambda t: mu0, cov_t)


def zoom_velocity(x: Tensor, t: float, mu0: Tensor, rate: float) -> Tensor:
    """The zoom flow's velocity rate / (1 + rate t) (x - mu0), (n, d)."""
    return rate / (1 + rate * t) * (x - mu0)
