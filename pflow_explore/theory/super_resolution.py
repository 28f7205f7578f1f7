"""Exact linear-Gaussian super-resolution: the posterior, the one-step map, and the PF-ODE
between them (chapter 06, docs/papers 06_ctmsr.md, "Exact case").

Time convention: diffusion, t in [0, 1] with t = 0 the high-resolution image and t = 1 the
noisy upsampled low-resolution image (:mod:`pflow_explore.super_resolution`).

The problem: x ~ N(m, C) in R^d (a flat HR image), y = A x + n in R^k, n ~ N(0, s^2 I)
(A: blur + downsampling as a matrix, ``SRDegradation.matrix``). Conditioning the joint
Gaussian of (x, y) on y gives (K the Kalman gain)

    K = C A^T (A C A^T + s^2 I)^{-1},                                                  (1)
    E[x | y] = m + K (y - A m),    Cov[x | y] = P = C - K A C,                          (2)

and the exact one-step map from a standard normal z to a posterior sample is

    f*(y, z) = E[x | y] + P^{1/2} z,    P^{1/2} the symmetric square root.             (3)

Why (3) is *the* map a consistency model must learn: given y (and u = LRup(y)), the
trajectory x_t = (1 - t) x + t u + s_max t z has Gaussian marginals with mean
m_t = (1 - t) E[x | y] + t u and covariance S_t = (1 - t)^2 P + s_max^2 t^2 I; these
commute, so the PF-ODE moves every eigen-coordinate of P by the ratio of standard
deviations, and its consistency function (the map from time t to t = 0) is

    f*(x_t, t) = E[x | y] + P^{1/2} S_t^{-1/2} (x_t - m_t),                             (4)

which at t = 1, x_1 = u + s_max z, is (3). The velocity of that PF-ODE is the regression
of the path's velocity v = u - x + s_max z on x_t:

    E[v | x_t, y] = (u - E[x | y]) + (s_max^2 t I - (1 - t) P) S_t^{-1} (x_t - m_t).   (5)

Consistency training with N uniform steps and an L2 loss has, in this linear problem, an
exact optimum: f_{n+1}(x) = E[f_n(x_{t_n}) | x_{t_{n+1}} = x] with f_0 the identity; every
f_n is affine, and E[x_{t_n} | x_{t_{n+1}}] = x - (1/N) E[v | x_{t_{n+1}}] because the
velocity is constant along a path, so the optimum at t = 1 is N Euler steps of (5)
(:meth:`GaussianSR.euler_map`): a first-order error in 1 / N that shrinks the noise part
of (3). The sympy :func:`posterior_scalar` and :func:`posterior_2d` derive (1)-(5) for
d = 1 and d = 2 (what the chapter shows); :class:`GaussianSR` evaluates them in torch
float64 for any d.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sympy as sp
import torch
from torch import Tensor

from pflow_explore.theory.derivation_store import stored
from pflow_explore.theory.gaussian_flow import Derivation

F64 = torch.float64

__all__ = [
    "GaussianSR",
    "posterior_2d",
    "posterior_scalar",
]

# ---- sympy: the scalar and the 2-pixel case ----------------------------------------------
m_s, y_s, u_s, x_s, z_s = sp.symbols("m y u x z", real=True)
c_s, a_s, s_s, s_max = sp.symbols("c a s s_max", positive=True)
t_s = sp.Symbol("t", positive=True)


@stored
def posterior_scalar() -> Derivation:
    """x ~ N(m, c), y = a x + n, n ~ N(0, s^2): the posterior, the one-step map and the
    trajectory's consistency function, with checks (each a step that must be 0):

    - "gain", "posterior mean", "posterior variance": eqs. (1)-(2) by conditioning;
    - "precision check": 1 / var - (1 / c + a^2 / s^2), Bayes' rule as a product of
      Gaussians (0);
    - "mode check": the posterior mean minus the root of d/dx log p(x | y) (0);
    - "one-step map" f*(y, z) (3); "consistency map" f*(x_t, t) (4); "velocity" (5);
    - "consistency check": d/dt f*(x(t), t) along dx/dt = velocity (0): f* is constant on
      the PF-ODE's trajectories;
    - "boundary check": f*(x, 0) - x (0).
    """
    var_y = a_s**2 * c_s + s_s**2
    gain = a_s * c_s / var_y
    mean = m_s + gain * (y_s - a_s * m_s)
    var = sp.simplify(c_s - gain * a_s * c_s)
    precision = sp.simplify(1 / var - (1 / c_s + a_s**2 / s_s**2))
    log_post = -((x_s - m_s) ** 2) / (2 * c_s) - (y_s - a_s * x_s) ** 2 / (2 * s_s**2)
    mode = sp.solve(sp.diff(log_post, x_s), x_s)[0]
    one_step = mean + sp.sqrt(var) * z_s
    var_t = (1 - t_s) ** 2 * var + s_max**2 * t_s**2
    m_t = (1 - t_s) * mean + t_s * u_s
    cmap = mean + sp.sqrt(var / var_t) * (x_s - m_t)
    velocity = (u_s - mean) + (s_max**2 * t_s - (1 - t_s) * var) / var_t * (x_s - m_t)
    x_path = sp.Function("x")(t_s)
    along = cmap.subs(x_s, x_path)
    total = sp.diff(along, t_s).subs(sp.Derivative(x_path, t_s), velocity.subs(x_s, x_path))
    steps = (
        ("gain", sp.Eq(sp.Symbol("k"), gain)),
        ("posterior mean", sp.Eq(sp.Symbol("E[x|y]"), mean)),
        ("posterior variance", sp.Eq(sp.Symbol("Var[x|y]"), var)),
        ("precision check", precision),
        ("mode check", sp.simplify(mean - mode)),
        ("one-step map", sp.Eq(sp.Symbol("f*(y, z)"), one_step)),
        ("consistency map", sp.Eq(sp.Symbol("f*(x_t, t)"), cmap)),
        ("velocity", sp.Eq(sp.Symbol("E[v|x_t]"), velocity)),
        ("consistency check", sp.simplify(total)),
        ("boundary check", sp.simplify(cmap.subs(t_s, 0) - x_s)),
    )
    return Derivation("Linear-Gaussian SR, scalar: x ~ N(m, c), y = a x + n", steps, steps[5][1])


@stored
def posterior_2d() -> Derivation:
    """Two pixels x = (x1, x2) ~ N(m, C), C = [[c1, r], [r, c2]], observed through factor-2
    average pooling y = (x1 + x2) / 2 + n, n ~ N(0, s^2): eqs. (1)-(2) as matrices, with
    "precision check" = Cov[x|y]^{-1} - (C^{-1} + A^T A / s^2) (the zero matrix) and
    "null-space check" = the posterior variance along (1, -1), which y cannot see, equals
    the prior's conditional variance there (0)."""
    c1, c2 = sp.symbols("c_1 c_2", positive=True)
    r = sp.Symbol("r", real=True)
    m1, m2 = sp.symbols("m_1 m_2", real=True)
    cov = sp.Matrix([[c1, r], [r, c2]])
    mean0 = sp.Matrix([m1, m2])
    a = sp.Matrix([[sp.Rational(1, 2), sp.Rational(1, 2)]])
    var_y = (a * cov * a.T)[0, 0] + s_s**2
    gain = cov * a.T / var_y
    mean = sp.simplify(mean0 + gain * (y_s - (a * mean0)[0, 0]))
    post = sp.simplify(cov - gain * a * cov)
    precision = sp.simplify(post.inv() - (cov.inv() + a.T * a / s_s**2))
    # along w = (1, -1), y carries nothing when C is isotropic: then Var[w.x | y] = w.C.w
    w = sp.Matrix([1, -1])
    iso = {c2: c1, r: 0}
    null = sp.simplify((w.T * post * w)[0, 0].subs(iso) - (w.T * cov * w)[0, 0].subs(iso))
    steps = (
        ("operator A", a),
        ("gain K", gain),
        ("posterior mean", mean),
        ("posterior covariance", post),
        ("precision check", precision),
        ("null-space check", null),
    )
    return Derivation(
        "Linear-Gaussian SR, two pixels: y = (x1 + x2)/2 + n", steps, sp.Eq(sp.Symbol("P"), post)
    )


# ---- torch: any dimension ----------------------------------------------------------------
def _rows(t: float | Tensor, n: int) -> Tensor:
    t = torch.as_tensor(t, dtype=F64).reshape(-1)
    if t.numel() not in (1, n):
        raise ValueError(f"t must be a float or have shape ({n},), got {tuple(t.shape)}")
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError("t must lie in [0, 1]")
    return t.expand(n) if t.numel() == 1 else t


@dataclass(frozen=True)
class GaussianSR:
    """x ~ N(mean, cov) in R^d, y = A x + noise_std n in R^k: float64 throughout.

    mean (d,), cov (d, d) SPD, A (k, d), noise_std >= 0 (A cov A^T + s^2 I must be
    invertible). Batches: y (n, k), z and x (n, d).
    """

    mean: Tensor
    cov: Tensor
    A: Tensor
    noise_std: float

    def __post_init__(self) -> None:
        mean, cov, a = (torch.as_tensor(v, dtype=F64) for v in (self.mean, self.cov, self.A))
        d = mean.numel()
        if mean.dim() != 1 or cov.shape != (d, d):
            raise ValueError(f"mean must be (d,) and cov (d, d), got {mean.shape}, {cov.shape}")
        if a.dim() != 2 or a.shape[1] != d:
            raise ValueError(f"A must be (k, {d}), got {tuple(a.shape)}")
        if not self.noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if not torch.allclose(cov, cov.T) or torch.linalg.eigvalsh(cov).min() <= 0:
            raise ValueError("cov must be symmetric positive definite")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)
        object.__setattr__(self, "A", a)
        if torch.linalg.eigvalsh(self.obs_cov).min() <= 1e-12:
            raise ValueError("A cov A^T + s^2 I is singular: give noise_std > 0 or a full-rank A")

    @property
    def dim(self) -> int:
        return self.mean.numel()

    @property
    def obs_dim(self) -> int:
        return self.A.shape[0]

    @classmethod
    def random(cls, A: Tensor, seed: int, noise_std: float = 0.1) -> GaussianSR:
        """A random prior for the operator A (k, d): mean ~ 0.5 N(0, I), cov = B B^T / d +
        0.02 I, B (d, d) standard normal (B first, then the mean, from ``seed``)."""
        a = torch.as_tensor(A, dtype=F64)
        d = a.shape[1]
        gen = torch.Generator().manual_seed(seed)
        b = torch.randn(d, d, generator=gen, dtype=F64)
        cov = b @ b.T / d + 0.02 * torch.eye(d, dtype=F64)
        return cls(0.5 * torch.randn(d, generator=gen, dtype=F64), cov, a, noise_std)

    @property
    def obs_cov(self) -> Tensor:
        """A C A^T + s^2 I (k, k): the covariance of y."""
        k = self.A.shape[0]
        return self.A @ self.cov @ self.A.T + self.noise_std**2 * torch.eye(k, dtype=F64)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(x (n, d), y (n, k)) from the joint: x = mean + L e (L L^T = cov), then the noise."""
        chol = torch.linalg.cholesky(self.cov)
        x = self.mean + torch.randn(n, self.dim, generator=generator, dtype=F64) @ chol.T
        noise = torch.randn(n, self.obs_dim, generator=generator, dtype=F64)
        return x, x @ self.A.T + self.noise_std * noise

    def gain(self) -> Tensor:
        """K = C A^T (A C A^T + s^2 I)^{-1} (d, k), eq. (1)."""
        return self._gain

    @functools.cached_property
    def _gain(self) -> Tensor:  # computed once: the trajectory methods call it every step
        return torch.linalg.solve(self.obs_cov, self.A @ self.cov).T

    def _y(self, y: Tensor) -> Tensor:
        y = torch.as_tensor(y, dtype=F64)
        if y.dim() != 2 or y.shape[1] != self.obs_dim:
            raise ValueError(f"y must have shape (n, {self.obs_dim}), got {tuple(y.shape)}")
        return y

    def posterior_mean(self, y: Tensor) -> Tensor:
        """E[x | y] = m + K (y - A m), y (n, k) -> (n, d), eq. (2)."""
        y = self._y(y)
        return self.mean + (y - self.A @ self.mean) @ self.gain().T

    def posterior_cov(self) -> Tensor:
        """P = Cov[x | y] = C - K A C (d, d), eq. (2) (the same for every y); symmetrised."""
        p = self.cov - self.gain() @ self.A @ self.cov
        return (p + p.T) / 2

    def _eigen(self) -> tuple[Tensor, Tensor]:
        return self._posterior_eigen

    @functools.cached_property
    def _posterior_eigen(self) -> tuple[Tensor, Tensor]:
        lam, vecs = torch.linalg.eigh(self.posterior_cov())
        return lam.clamp_min(0.0), vecs

    def posterior_cov_sqrt(self) -> Tensor:
        """P^{1/2}, the symmetric PSD square root (d, d)."""
        lam, vecs = self._eigen()
        return (vecs * lam.sqrt()) @ vecs.T

    def exact_map(self, y: Tensor, z: Tensor) -> Tensor:
        """f*(y, z) = E[x | y] + P^{1/2} z, eq. (3): y (n, k), z (n, d) -> (n, d)."""
        mean = self.posterior_mean(y)
        z = torch.as_tensor(z, dtype=F64)
        if z.shape != mean.shape:
            raise ValueError(f"z must have shape {tuple(mean.shape)}, got {tuple(z.shape)}")
        return mean + z @ self.posterior_cov_sqrt()

    # ---- the trajectory x_t = (1 - t) x + t u + s_max t z, given y ----------------------
    def _centred(self, x_t: Tensor, t: Tensor, y: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        mean = self.posterior_mean(y)
        u = torch.as_tensor(u, dtype=F64)
        x_t = torch.as_tensor(x_t, dtype=F64)
        if u.shape != mean.shape or x_t.shape != mean.shape:
            raise ValueError(f"x_t and u must have shape {tuple(mean.shape)}")
        return mean, x_t - ((1 - t)[:, None] * mean + t[:, None] * u)

    def consistency_map(
        self, x_t: Tensor, t: float | Tensor, y: Tensor, u: Tensor, sigma_max: float
    ) -> Tensor:
        """f*(x_t, t) = E[x|y] + P^{1/2} S_t^{-1/2} (x_t - m_t), eq. (4), in P's eigenbasis
        (S_t = (1 - t)^2 P + s_max^2 t^2 I). x_t, u (n, d); y (n, k); t float or (n,) in
        [0, 1]. At t = 1 with x_1 = u + s_max z it is :meth:`exact_map` (y, z)."""
        t = _rows(t, len(torch.as_tensor(y)))
        mean, dx = self._centred(x_t, t, y, u)
        lam, vecs = self._eigen()
        var_t = (1 - t[:, None]) ** 2 * lam + (sigma_max * t[:, None]) ** 2
        return mean + ((dx @ vecs) * (lam / var_t).sqrt()) @ vecs.T

    def velocity(
        self, x_t: Tensor, t: float | Tensor, y: Tensor, u: Tensor, sigma_max: float
    ) -> Tensor:
        """The PF-ODE velocity E[u - x + s_max z | x_t, y], eq. (5), (n, d), by linear
        regression in P's eigenbasis (no square root: an independent form of (4))."""
        t = _rows(t, len(torch.as_tensor(y)))
        mean, dx = self._centred(x_t, t, y, u)
        lam, vecs = self._eigen()
        tt = t[:, None]
        var_t = (1 - tt) ** 2 * lam + (sigma_max * tt) ** 2
        slope = (sigma_max**2 * tt - (1 - tt) * lam) / var_t
        return (u - mean) + ((dx @ vecs) * slope) @ vecs.T

    def euler_map(
        self, x_1: Tensor, y: Tensor, u: Tensor, sigma_max: float, n_steps: int
    ) -> Tensor:
        """N Euler steps of (5) from t = 1 to 0 on t_n = n / N: the optimum of N-step
        consistency training with an L2 loss in this linear problem (module docstring).
        x_1, u (n, d), y (n, k) -> (n, d)."""
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
        x = torch.as_tensor(x_1, dtype=F64)
        for n in range(n_steps, 0, -1):
            x = x - self.velocity(x, n / n_steps, y, u, sigma_max) / n_steps
        return x
