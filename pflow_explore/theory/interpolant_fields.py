"""Exact fields of a stochastic interpolant between Gaussian mixtures (docs/papers.md §02).

x_t = a(t) x0 + b(t) x1 + gamma(t) z with x0 ~ rho0, x1 ~ rho1, z ~ N(0, I) independent
(:mod:`pflow_explore.interpolants`). For mixtures rho0 = sum_i w_i N(mu_i, C_i) and
rho1 = sum_j w'_j N(nu_j, D_j) every pair (i, j) is jointly Gaussian with x_t, so

    rho(t) = sum_ij w_i w'_j N(m_ij, S_ij),  m_ij = a mu_i + b nu_j,
                                             S_ij = a^2 C_i + b^2 D_j + gamma^2 I,

and every conditional expectation is a posterior-weighted sum over pairs, r_ij(x) =
p(ij | x_t = x) (a softmax of the component log-densities):

    s(x, t)   = grad log rho = -sum r_ij S_ij^-1 (x - m_ij)
    v(x, t)   = E[d_t I | x_t = x] = sum r_ij [m'_ij + (a a' C_i + b b' D_j) S_ij^-1 (x - m_ij)]
    b(x, t)   = E[d_t I + gamma' z | x_t = x] = v - gamma gamma' s
    eta(x, t) = -E[z | x_t = x] = gamma s          (the "denoiser"; docs/papers.md: s = eta / gamma)

(the paper's Gaussian formulas, one pair at a time). gamma gamma' is used as a product, so b
is finite at t = 0, 1 even where gamma' is not. The scalar Gaussian case is derived in
sympy (:func:`derivation_gaussian`), including the check that rho solves the transport
equation d_t rho + d_x(b rho) = 0 and the Fokker-Planck equations
d_t rho + d_x((b + eps s) rho) = eps d_xx rho for every eps.

The second half holds the tools of the exact likelihood-control experiment: with Gaussian
endpoints every field is affine in x, an affine SDE keeps Gaussians Gaussian, and its
moments solve linear ODEs, so KL(rho1 || rho1_hat) and the Girsanov bound are computed
without sampling.

Dtypes: arithmetic in float64; outputs have the dtype and device of ``x``. Argument order:
the fields take (x, t), x first, as ``solvers.Field`` (time convention: flow, t = 0 is rho0).

Time convention: flow (t = 0 is rho0, t = 1 is rho1).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import sympy as sp
import torch
from torch import Tensor

from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.interpolants import Interpolant
from pflow_explore.theory.derivation_store import stored
from pflow_explore.theory.gaussian_flow import Derivation

F64 = torch.float64

# ---- the scalar Gaussian derivation ----------------------------------------------------------
# The paper's a(t), b(t) are alpha(t), beta(t) here, so that "b" can name the velocity.
t_sym = sp.Symbol("t", real=True)
x_sym = sp.Symbol("x", real=True)
eps_sym = sp.Symbol("epsilon", nonnegative=True)
m0_sym, m1_sym = sp.symbols("m_0 m_1", real=True)
c0_sym, c1_sym = sp.symbols("c_0 c_1", positive=True)
alpha_fn = sp.Function("alpha", real=True)(t_sym)
beta_fn = sp.Function("beta", real=True)(t_sym)
gamma_fn = sp.Function("gamma", real=True)(t_sym)
# numeric stand-ins for the coefficient functions and their derivatives (lambdify arguments)
A_, dA_, B_, dB_, G_, GdG_ = sp.symbols("A dA B dB G GdG", real=True)


def _conditional_mean(
    coef_y: sp.Matrix,
    mean_y: sp.Expr,
    coef_x: sp.Matrix,
    cov: sp.Matrix,
    m_t: sp.Expr,
    c_t: sp.Expr,
) -> sp.Expr:
    """E[Y | x_t = x] for Y = coef_y . (x0, x1, z), x_t = coef_x . (x0, x1, z) jointly Gaussian:

    E[Y] + Cov(Y, x_t) / Var(x_t) (x - m_t), Cov(Y, x_t) = coef_y^T Cov coef_x.
    """
    cov_yx = (coef_y.T * cov * coef_x)[0, 0]
    return mean_y + cov_yx / c_t * (x_sym - m_t)


@stored
def derivation_gaussian() -> Derivation:
    """Scalar endpoints N(m0, c0), N(m1, c1), x_t = alpha x0 + beta x1 + gamma z, independent.

    Derived (not typed in) by Gaussian conditioning on the vector (x0, x1, z):
    m_t = alpha m0 + beta m1, c_t = alpha^2 c0 + beta^2 c1 + gamma^2,
    b = m_t' + (alpha alpha' c0 + beta beta' c1 + gamma gamma') (x - m_t) / c_t,
    s = -(x - m_t) / c_t, eta = gamma s = -E[z | x_t], and v = E[d_t I | x_t] = b + gamma gamma' s.
    The last two steps are the transport and Fokker-Planck residuals, simplified to 0.
    """
    t, x = t_sym, x_sym
    al, be, ga = alpha_fn, beta_fn, gamma_fn
    cov = sp.diag(c0_sym, c1_sym, 1)  # Cov of (x0, x1, z)
    coef_x = sp.Matrix([al, be, ga])
    m_t = al * m0_sym + be * m1_sym
    c_t = sp.expand((coef_x.T * cov * coef_x)[0, 0])
    rho = sp.exp(-((x - m_t) ** 2) / (2 * c_t)) / sp.sqrt(2 * sp.pi * c_t)

    target = coef_x.diff(t)  # d_t I + gamma' z has coefficients (alpha', beta', gamma')
    b_expr = _conditional_mean(
        target, al.diff(t) * m0_sym + be.diff(t) * m1_sym, coef_x, cov, m_t, c_t
    )
    v_coef = sp.Matrix([al.diff(t), be.diff(t), 0])
    v_expr = _conditional_mean(
        v_coef, al.diff(t) * m0_sym + be.diff(t) * m1_sym, coef_x, cov, m_t, c_t
    )
    z_given_x = _conditional_mean(sp.Matrix([0, 0, 1]), sp.Integer(0), coef_x, cov, m_t, c_t)
    s_expr = sp.simplify(sp.diff(sp.log(rho), x))
    eta_expr = ga * s_expr

    eta_check = sp.simplify(eta_expr + z_given_x)
    split_check = sp.simplify(b_expr - (v_expr - ga * ga.diff(t) * s_expr))
    transport = sp.diff(rho, t) + sp.diff(b_expr * rho, x)
    transport_zero = sp.simplify(sp.expand(sp.simplify(transport / rho)))
    fp = (
        sp.diff(rho, t)
        + sp.diff((b_expr + eps_sym * s_expr) * rho, x)
        - eps_sym * sp.diff(rho, x, 2)
    )
    fp_zero = sp.simplify(sp.expand(sp.simplify(fp / rho)))
    if any(e != 0 for e in (eta_check, split_check, transport_zero, fp_zero)):  # pragma: no cover
        raise AssertionError("Gaussian interpolant derivation failed its own checks")

    b_sym, s_sym, v_sym, eta_sym = sp.symbols("b s v eta")
    gain = sp.factor(sp.simplify((b_expr - m_t.diff(t)) * c_t / (x - m_t)))
    b_display = m_t.diff(t) + gain * (x - m_t) / c_t
    result = sp.Eq(b_sym, b_display)
    gain_v = sp.factor(sp.simplify((v_expr - m_t.diff(t)) * c_t / (x - m_t)))
    v_display = m_t.diff(t) + gain_v * (x - m_t) / c_t
    steps = (
        (
            "interpolant",
            sp.Eq(
                sp.Symbol("x_t"),
                al * sp.Symbol("x_0") + be * sp.Symbol("x_1") + ga * sp.Symbol("z"),
            ),
        ),
        ("mean m_t", sp.Eq(sp.Symbol("m_t"), m_t)),
        ("variance c_t", sp.Eq(sp.Symbol("c_t"), c_t)),
        ("Cov(d_t I + gamma' z, x_t)", sp.Eq(sp.Symbol("C_bx"), sp.expand(gain))),
        ("velocity b = E[d_t I + gamma' z | x_t = x]", result),
        ("score s = d_x log rho", sp.Eq(s_sym, s_expr)),
        ("E[z | x_t = x]", sp.Eq(sp.Symbol("E_z"), sp.simplify(z_given_x))),
        ("denoiser eta = gamma s = -E[z | x_t]", sp.Eq(eta_sym, eta_expr)),
        ("mean velocity v = E[d_t I | x_t]", sp.Eq(v_sym, v_display)),
        ("b - (v - gamma gamma' s)", sp.Eq(sp.Symbol("r_b"), split_check)),
        ("transport: (d_t rho + d_x(b rho)) / rho", sp.Eq(sp.Symbol("r_T"), transport_zero)),
        (
            "Fokker-Planck: (d_t rho + d_x((b + eps s) rho) - eps d_xx rho) / rho",
            sp.Eq(sp.Symbol("r_FP"), fp_zero),
        ),
    )
    return Derivation("Stochastic interpolant between scalar Gaussians", steps, result)


@functools.cache
def _scalar_fields_fn() -> Callable[..., tuple[Tensor, ...]]:
    """torch function (x, m0, c0, m1, c1, A, dA, B, dB, G, GdG) -> (m, c, s, b, v, eta).

    The derivation's expressions with alpha, alpha', ... replaced by numbers; gamma' enters
    only through the product gamma gamma' = GdG, so t = 0, 1 work for the sqrt gamma too.
    """
    d = derivation_gaussian()
    subs_d = {
        alpha_fn.diff(t_sym): dA_,
        beta_fn.diff(t_sym): dB_,
        gamma_fn.diff(t_sym): GdG_ / G_,
    }
    subs_f = {alpha_fn: A_, beta_fn: B_, gamma_fn: G_}

    def num(expr: sp.Expr) -> sp.Expr:
        return sp.simplify(expr.subs(subs_d).subs(subs_f))

    exprs = (
        num(d["mean m_t"].rhs),
        num(d["variance c_t"].rhs),
        num(d["score s = d_x log rho"].rhs),
        num(d.result.rhs),
        num(d["mean velocity v = E[d_t I | x_t]"].rhs),
        num(d["denoiser eta = gamma s = -E[z | x_t]"].rhs),
    )
    for e in exprs:  # gamma must not survive in a denominator (t = 0, 1 have gamma = 0)
        if sp.simplify(sp.denom(sp.together(e)).subs(G_, 0)) == 0:  # pragma: no cover
            raise AssertionError(f"1/gamma left in {e}")
    args = (x_sym, m0_sym, c0_sym, m1_sym, c1_sym, A_, dA_, B_, dB_, G_, GdG_)
    return sp.lambdify(args, exprs, modules="torch")


def scalar_gaussian_fields(
    interpolant: Interpolant,
    t: float,
    x: Tensor,
    m0: float,
    c0: float,
    m1: float,
    c1: float,
) -> dict[str, Tensor]:
    """The sympy result of :func:`derivation_gaussian`, evaluated: endpoints N(m0, c0), N(m1, c1).

    x: (n,) points; returns float64 tensors "mean", "var" (0-d) and "score", "velocity",
    "mean_velocity", "denoiser" (n,). An independent route to the scalar case of
    :class:`InterpolantFields` (tests compare the two).
    """
    tt = _check_time(t)
    x = torch.as_tensor(x, dtype=F64).reshape(-1)
    coef = [
        torch.as_tensor(f(tt), dtype=F64)
        for f in (
            interpolant.a,
            interpolant.da,
            interpolant.b,
            interpolant.db,
            interpolant.gamma.gamma,
            interpolant.gamma.gamma_dgamma,
        )
    ]
    m, c, s, b, v, eta = _scalar_fields_fn()(x, m0, c0, m1, c1, *coef)
    ones = torch.ones_like(x)
    return {
        "mean": torch.as_tensor(m, dtype=F64),
        "var": torch.as_tensor(c, dtype=F64),
        "score": s * ones,
        "velocity": b * ones,
        "mean_velocity": v * ones,
        "denoiser": eta * ones,
    }


# ---- exact fields for mixture endpoints ------------------------------------------------------
def _check_time(t: float | Tensor) -> float:
    if isinstance(t, Tensor):
        if t.numel() != 1:
            raise ValueError(f"t must be a float in [0, 1], got a tensor of shape {tuple(t.shape)}")
        t = t.item()
    t = float(t)
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise ValueError(f"t must lie in [0, 1], got {t}")
    return t


def _sample64(gm: GaussianMixture, n: int, generator: torch.Generator | None) -> Tensor:
    """n float64 samples of a mixture, (n, d)."""
    labels = torch.multinomial(gm.weights, n, replacement=True, generator=generator)
    z = torch.randn(n, gm.dim, generator=generator, dtype=F64)
    chol = torch.linalg.cholesky(gm.covs)
    return gm.means[labels] + torch.einsum("nij,nj->ni", chol[labels], z)


class _Pairs:
    """Per-pair parameters at one t: weights (P,), means m and m' (P, d), covariance S,
    its inverse and log-determinant, the gains G_b = a a' C + b b' D + gamma gamma' I and
    G_v = a a' C + b b' D (P, d, d)."""

    def __init__(self, fields: InterpolantFields, t: float) -> None:
        it = fields.interpolant
        a, b = float(it.a(t)), float(it.b(t))
        da, db = float(it.da(t)), float(it.db(t))
        g, gdg = float(it.gamma.gamma(t)), float(it.gamma.gamma_dgamma(t))
        eye = torch.eye(fields.dim, dtype=F64)
        c0, c1 = fields._covs0, fields._covs1
        self.weights = fields._weights
        self.mean = a * fields._means0 + b * fields._means1
        self.dmean = da * fields._means0 + db * fields._means1
        self.cov = a * a * c0 + b * b * c1 + g * g * eye
        chol, info = torch.linalg.cholesky_ex(self.cov)
        # a std below 1e-6 of the data's scale is a point mass for every practical purpose
        # (encoder_decoder with gamma = 0 at t = 1/2 has b^2 ~ 1e-65, which Cholesky accepts);
        # the pivots diag(L)^2 are conditional variances, each >= the smallest eigenvalue
        pivots = torch.diagonal(chol, dim1=-2, dim2=-1) ** 2
        if bool((info != 0).any()) or float(pivots.min()) < 1e-12 * fields._scale:
            raise ValueError(
                f"the marginal of x_t is degenerate at t = {t} (a = {a:.3g}, b = {b:.3g}, "
                f"gamma = {g:.3g}): a component covariance a^2 C + b^2 D + gamma^2 I is not "
                "positive definite; pick another t or a gamma > 0 there"
            )
        self.prec = torch.cholesky_inverse(chol)
        self.logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        self.gain_v = a * da * c0 + b * db * c1
        self.gain_b = self.gain_v + gdg * eye
        self.gamma = g

    def to(self, device: torch.device) -> _Pairs:
        if device == self.mean.device:
            return self
        out = _Pairs.__new__(_Pairs)
        for k, v in vars(self).items():
            setattr(out, k, v.to(device) if isinstance(v, Tensor) else v)
        return out


class InterpolantFields:
    """Exact density, score, velocity b, mean velocity v and denoiser eta of x_t, any dimension.

    rho0, rho1: GaussianMixture of the same dimension d (a Gaussian is a 1-component
    mixture); the coupling is independent. Methods take t a float in [0, 1] and x (n, d);
    outputs (n,) or (n, d) have x's dtype and device. Pairs (i, j) of components give
    P = K0 K1 components of the marginal; the work is batched over rows (in blocks of about
    4M numbers, so n = 1e5 in 2D runs in one go).

    Constraints of two interpolants are enforced: "one_sided" needs rho0 = N(0, I),
    "mirror" needs rho0 = rho1.
    """

    _BLOCK = 1 << 22

    def __init__(
        self, rho0: GaussianMixture, rho1: GaussianMixture, interpolant: Interpolant
    ) -> None:
        if not isinstance(rho0, GaussianMixture) or not isinstance(rho1, GaussianMixture):
            raise ValueError("rho0 and rho1 must be GaussianMixture objects")
        if rho0.dim != rho1.dim:
            raise ValueError(
                f"rho0 and rho1 must have the same dimension, got {rho0.dim} and {rho1.dim}"
            )
        if not isinstance(interpolant, Interpolant):
            raise ValueError(f"interpolant must be an Interpolant, got {interpolant!r}")
        d = rho0.dim
        if interpolant.rho0_constraint == "standard_normal":
            eye = torch.eye(d, dtype=F64)
            if not (
                rho0.n_components == 1
                and torch.allclose(rho0.means, torch.zeros(1, d, dtype=F64))
                and torch.allclose(rho0.covs[0], eye)
            ):
                raise ValueError("the one_sided interpolant needs rho0 = N(0, I)")
        if interpolant.rho0_constraint == "equals_rho1" and not _same_mixture(rho0, rho1):
            raise ValueError("the mirror interpolant needs rho0 = rho1 (same mixture)")
        self.rho0, self.rho1, self.interpolant = rho0, rho1, interpolant
        k0, k1 = rho0.n_components, rho1.n_components
        # pair p = i * K1 + j
        self._weights = (rho0.weights[:, None] * rho1.weights[None, :]).reshape(-1)
        self._means0 = rho0.means.repeat_interleave(k1, 0)
        self._means1 = rho1.means.repeat(k0, 1)
        self._covs0 = rho0.covs.repeat_interleave(k1, 0)
        self._covs1 = rho1.covs.repeat(k0, 1, 1)
        self._cache: tuple[float, _Pairs] | None = None
        variances = torch.cat([rho0.covs, rho1.covs]).diagonal(dim1=-2, dim2=-1)
        self._scale = max(1.0, float(variances.max()))

    @property
    def dim(self) -> int:
        return self.rho0.dim

    def __repr__(self) -> str:
        return (
            f"InterpolantFields(K0={self.rho0.n_components}, K1={self.rho1.n_components}, "
            f"d={self.dim}, {self.interpolant!r})"
        )

    # ---- helpers --------------------------------------------------------------------------
    def _pairs(self, t: float | Tensor) -> _Pairs:
        t = _check_time(t)
        if self._cache is None or self._cache[0] != t:
            self._cache = (t, _Pairs(self, t))
        return self._cache[1]

    def _check_x(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (n, {self.dim}), got {shape}")
        return x.to(F64)

    def _evaluate(self, x: Tensor, t: float | Tensor, what: tuple[str, ...]) -> dict[str, Tensor]:
        """Posterior-weighted fields named in ``what`` ("logp", "s", "b", "v"), float64."""
        pr = self._pairs(t)
        x64 = self._check_x(x)
        pr = pr.to(x64.device)
        n, (p, d) = x64.shape[0], pr.mean.shape
        block = max(1, self._BLOCK // max(1, p * d))
        out: dict[str, list[Tensor]] = {k: [] for k in what}
        const = torch.log(pr.weights) - 0.5 * (pr.logdet + d * math.log(2 * math.pi))
        for lo in range(0, n, block):
            xb = x64[lo : lo + block]
            diff = xb[:, None, :] - pr.mean[None]  # (m, P, d)
            y = torch.einsum("pde,mpe->mpd", pr.prec, diff)  # S^-1 (x - m)
            logc = const[None] - 0.5 * (diff * y).sum(-1)  # (m, P)
            if "logp" in what:
                out["logp"].append(torch.logsumexp(logc, -1))
            r = torch.softmax(logc, -1)[..., None]  # (m, P, 1)
            if "s" in what:
                out["s"].append(-(r * y).sum(1))
            for key, gain in (("b", pr.gain_b), ("v", pr.gain_v)):
                if key in what:
                    per = pr.dmean[None] + torch.einsum("pde,mpe->mpd", gain, y)
                    out[key].append((r * per).sum(1))
        return {
            k: torch.cat(v) if v else x64.new_zeros((0,) + (() if k == "logp" else (d,)))
            for k, v in out.items()
        }

    # ---- the marginal --------------------------------------------------------------------
    def marginal(self, t: float | Tensor) -> GaussianMixture:
        """rho(t) = sum_ij w_i w'_j N(a mu_i + b nu_j, a^2 C_i + b^2 D_j + gamma^2 I), K0 K1 parts.

        ValueError where a component is degenerate (not positive definite).
        """
        pr = self._pairs(t)
        return GaussianMixture(pr.weights.clone(), pr.mean.clone(), pr.cov.clone())

    def gaussian_moments(self, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """Mean (d,) and covariance (d, d) of x_t, float64 (exact for any mixture)."""
        pr = self._pairs(t)
        mean = pr.weights @ pr.mean
        second = torch.einsum("p,pij->ij", pr.weights, pr.cov)
        second = second + torch.einsum("p,pi,pj->ij", pr.weights, pr.mean, pr.mean)
        return mean, second - torch.outer(mean, mean)

    def log_prob(self, x: Tensor, t: float | Tensor) -> Tensor:
        """log rho(x, t), (n,)."""
        return self._evaluate(x, t, ("logp",))["logp"].to(x.dtype)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        """s(x, t) = grad log rho(x, t) = -E[z | x_t = x] / gamma, (n, d)."""
        return self._evaluate(x, t, ("s",))["s"].to(x.dtype)

    def velocity(self, x: Tensor, t: float | Tensor) -> Tensor:
        """b(x, t) = E[d_t I + gamma' z | x_t = x], (n, d): the transport-equation velocity."""
        return self._evaluate(x, t, ("b",))["b"].to(x.dtype)

    def mean_velocity(self, x: Tensor, t: float | Tensor) -> Tensor:
        """v(x, t) = E[d_t I | x_t = x] = b + gamma gamma' s, (n, d)."""
        return self._evaluate(x, t, ("v",))["v"].to(x.dtype)

    def denoiser(self, x: Tensor, t: float | Tensor) -> Tensor:
        """eta(x, t) = gamma(t) s(x, t) = -E[z | x_t = x], (n, d) (docs/papers.md: s = eta /
        gamma)."""
        g = self._pairs(t).gamma
        return (g * self._evaluate(x, t, ("s",))["s"]).to(x.dtype)

    def drift(self, x: Tensor, t: float | Tensor, eps: float) -> Tensor:
        """Forward SDE drift b + eps s of dX = (b + eps s) dt + sqrt(2 eps) dW, (n, d)."""
        f = self._evaluate(x, t, ("b", "s"))
        return (f["b"] + float(eps) * f["s"]).to(x.dtype)

    def backward_drift(self, x: Tensor, t: float | Tensor, eps: float) -> Tensor:
        """Backward SDE drift b - eps s (run from t = 1 to 0 with noise sqrt(2 eps)), (n, d)."""
        f = self._evaluate(x, t, ("b", "s"))
        return (f["b"] - float(eps) * f["s"]).to(x.dtype)

    def sample(
        self,
        t: float | Tensor,
        n: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """n samples of x_t = a x0 + b x1 + gamma z from independent x0, x1, z, (n, d).

        Drawn through the interpolant itself (so also at degenerate times).
        """
        t = _check_time(t)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            return torch.empty(0, self.dim, dtype=dtype)
        x0 = _sample64(self.rho0, n, generator)
        x1 = _sample64(self.rho1, n, generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=F64)
        return self.interpolant.sample(t, x0, x1, z).to(dtype)


def _same_mixture(p: GaussianMixture, q: GaussianMixture) -> bool:
    return (
        p.means.shape == q.means.shape
        and torch.allclose(p.weights, q.weights)
        and torch.allclose(p.means, q.means)
        and torch.allclose(p.covs, q.covs)
    )


# ---- residuals of the transport / Fokker-Planck equations on a 1D grid ------------------------
def transport_residual(
    fields: InterpolantFields,
    t: float,
    x_grid: Tensor,
    eps: float = 0.0,
    dt: float = 1e-3,
) -> Tensor:
    """Finite-difference residual of the Fokker-Planck equation at the interior grid points,

        R = d_t rho + d_x((b + eps s) rho) - eps d_xx rho,     shape (m - 2,),

    for d = 1; eps = 0 is the transport equation (docs/papers.md); eps < 0 is the
    backward equation with drift b - |eps| s. Central differences: in time with step dt
    (t - dt and t + dt must lie in [0, 1]), in space on the uniform grid x_grid (m,),
    spacing h: the residual is O(dt^2 + h^2) for the exact rho, and shrinks ~4x when both
    are halved.
    """
    if fields.dim != 1:
        raise ValueError(f"transport_residual works on a 1D grid; the fields have d = {fields.dim}")
    t = _check_time(t)
    if not (dt > 0 and 0.0 <= t - dt and t + dt <= 1.0):
        raise ValueError(f"need dt > 0 with [t - dt, t + dt] inside [0, 1]; got t={t}, dt={dt}")
    x = torch.as_tensor(x_grid, dtype=F64).reshape(-1)
    if x.numel() < 3:
        raise ValueError("x_grid needs at least 3 points")
    steps = x.diff()
    h = float(steps.mean())
    if h <= 0 or not torch.allclose(steps, torch.full_like(steps, h), rtol=1e-6, atol=0.0):
        raise ValueError("x_grid must be uniform and increasing")
    col = x[:, None]
    rho = fields.log_prob(col, t).exp()
    drho_dt = (fields.log_prob(col, t + dt).exp() - fields.log_prob(col, t - dt).exp()) / (2 * dt)
    flux = fields.drift(col, t, eps)[:, 0] * rho
    dflux = (flux[2:] - flux[:-2]) / (2 * h)
    lap = (rho[2:] - 2 * rho[1:-1] + rho[:-2]) / h**2
    return drho_dt[1:-1] + dflux - eps * lap


# ---- Gaussian endpoints: affine fields, moment flows, KL and the Girsanov bound ----------------
def _single_pair(fields: InterpolantFields, t: float | Tensor) -> _Pairs:
    if fields.rho0.n_components != 1 or fields.rho1.n_components != 1:
        raise ValueError(
            "affine fields need Gaussian endpoints (1-component mixtures); got "
            f"K0={fields.rho0.n_components}, K1={fields.rho1.n_components}"
        )
    return fields._pairs(t)


def velocity_affine(fields: InterpolantFields, t: float | Tensor) -> tuple[Tensor, Tensor]:
    """b(x, t) = A x + c for Gaussian endpoints: A = G_b S^-1, c = m' - A m. (d, d), (d,)."""
    pr = _single_pair(fields, t)
    a = pr.gain_b[0] @ pr.prec[0]
    return a, pr.dmean[0] - a @ pr.mean[0]


def score_affine(fields: InterpolantFields, t: float | Tensor) -> tuple[Tensor, Tensor]:
    """s(x, t) = A x + c for Gaussian endpoints: A = -S^-1, c = S^-1 m. (d, d), (d,)."""
    pr = _single_pair(fields, t)
    return -pr.prec[0], pr.prec[0] @ pr.mean[0]


def gaussian_drift_affine(
    fields: InterpolantFields, t: float | Tensor, eps: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Forward SDE drift b + eps s = A x + c for Gaussian endpoints, (d, d), (d,) float64."""
    av, cv = velocity_affine(fields, t)
    as_, cs = score_affine(fields, t)
    return av + eps * as_, cv + eps * cs


def gaussian_moments_flow(
    A_fn: Callable[[float], Tensor],
    c_fn: Callable[[float], Tensor],
    eps: float,
    m0: Tensor,
    C0: Tensor,
    t0: float = 0.0,
    t1: float = 1.0,
    steps: int = 1000,
    return_path: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """Moments of dX = (A(t) X + c(t)) dt + sqrt(2 eps) dW from X(t0) ~ N(m0, C0):

        dm/dt = A m + c,    dC/dt = A C + C A^T + 2 eps I,

    integrated with classical RK4 on ``steps`` uniform steps, float64. A_fn(t) -> (d, d),
    c_fn(t) -> (d,). Returns (m(t1) (d,), C(t1) (d, d)), or with return_path=True
    (times (steps + 1,), means (steps + 1, d), covs (steps + 1, d, d)).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    m = torch.as_tensor(m0, dtype=F64).clone()
    cov = torch.as_tensor(C0, dtype=F64).clone()
    d = m.shape[0]
    if cov.shape != (d, d):
        raise ValueError(f"C0 must be ({d}, {d}) to match m0, got {tuple(cov.shape)}")
    eye2 = 2 * eps * torch.eye(d, dtype=F64)

    def rhs(t: float, m: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
        a = torch.as_tensor(A_fn(t), dtype=F64)
        c = torch.as_tensor(c_fn(t), dtype=F64)
        return a @ m + c, a @ cov + cov @ a.T + eye2

    times = torch.linspace(t0, t1, steps + 1, dtype=F64)
    h = (t1 - t0) / steps
    ms, covs = [m], [cov]
    for i in range(steps):
        t = float(times[i])
        k1 = rhs(t, m, cov)
        k2 = rhs(t + h / 2, m + h / 2 * k1[0], cov + h / 2 * k1[1])
        k3 = rhs(t + h / 2, m + h / 2 * k2[0], cov + h / 2 * k2[1])
        k4 = rhs(t + h, m + h * k3[0], cov + h * k3[1])
        m = m + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        cov = cov + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        cov = 0.5 * (cov + cov.T)
        if return_path:
            ms.append(m)
            covs.append(cov)
    if return_path:
        return times, torch.stack(ms), torch.stack(covs)
    return m, cov


def gaussian_kl(m_p: Tensor, C_p: Tensor, m_q: Tensor, C_q: Tensor) -> float:
    """KL(N(m_p, C_p) || N(m_q, C_q)) = 1/2 [tr(C_q^-1 C_p) + dm^T C_q^-1 dm - d + log|C_q|/|C_p|].

    dm = m_q - m_p; means (d,), covariances (d, d) positive definite.
    """
    m_p, m_q = torch.as_tensor(m_p, dtype=F64), torch.as_tensor(m_q, dtype=F64)
    C_p, C_q = torch.as_tensor(C_p, dtype=F64), torch.as_tensor(C_q, dtype=F64)
    d = m_p.shape[0]
    lq, info_q = torch.linalg.cholesky_ex(C_q)
    lp, info_p = torch.linalg.cholesky_ex(C_p)
    if int(info_q) or int(info_p):
        raise ValueError("gaussian_kl needs positive definite covariances C_p and C_q")
    dm = (m_q - m_p)[:, None]
    trace = torch.cholesky_solve(C_p, lq).diagonal().sum()
    maha = (dm * torch.cholesky_solve(dm, lq)).sum()
    logdet = 2 * (torch.log(lq.diagonal()).sum() - torch.log(lp.diagonal()).sum())
    return float(0.5 * (trace + maha - d + logdet))


def expected_sq_affine(D: Tensor, e: Tensor, m: Tensor, C: Tensor) -> float:
    """E|D X + e|^2 for X ~ N(m, C): |D m + e|^2 + tr(D C D^T). D (d, d), e, m (d,), C (d, d)."""
    D, e = torch.as_tensor(D, dtype=F64), torch.as_tensor(e, dtype=F64)
    m, C = torch.as_tensor(m, dtype=F64), torch.as_tensor(C, dtype=F64)
    mean = D @ m + e
    return float(mean @ mean + torch.trace(D @ C @ D.T))


def girsanov_bound(
    delta_A_fn: Callable[[float], Tensor],
    delta_c_fn: Callable[[float], Tensor],
    m_fn: Callable[[float], Tensor],
    C_fn: Callable[[float], Tensor],
    eps: float,
    steps: int = 1000,
) -> float:
    """Likelihood-control bound for the SDE dX = b_F dt + sqrt(2 eps) dW (docs/papers.md): a drift
    error delta(x, t) = delta_A(t) x + delta_c(t) gives

        KL(rho1 || rho1_hat) <= KL(P || P_hat) = 1/(4 eps) int_0^1 E_{rho_t} |delta(x, t)|^2 dt,

    the path-space KL by Girsanov (the noise covariance is 2 eps I, so the Girsanov exponent
    is |delta|^2 / (2 * 2 eps)) followed by data processing; rho_t ~ N(m_fn(t), C_fn(t)) are
    the exact marginals, and the inner expectation is :func:`expected_sq_affine`. This is
    the form of the paper's likelihood-control statement for the forward SDE (Albergo,
    Boffi & Vanden-Eijnden 2023, Sec. 2, KL(rho1 || rho_hat(1)) <= (1 / 4 eps) int int
    |b_F_hat - b_F|^2 rho dx dt), with the same 1/(4 eps) constant. Composite Simpson on
    ``steps`` (rounded up to even) intervals. eps = 0 (the ODE) has no such bound: inf.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if eps == 0:
        return math.inf
    steps += steps % 2
    ts = torch.linspace(0.0, 1.0, steps + 1, dtype=F64)
    vals = torch.tensor(
        [
            expected_sq_affine(
                delta_A_fn(float(t)), delta_c_fn(float(t)), m_fn(float(t)), C_fn(float(t))
            )
            for t in ts
        ],
        dtype=F64,
    )
    w = torch.ones(steps + 1, dtype=F64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    integral = float((w * vals).sum()) / (3 * steps)
    return integral / (4 * eps)
