"""The probability flow of Gaussian data in closed form (Wang & Vastola 2023, docs/papers.md §01).

Data x0 ~ N(mu, Sigma), Sigma = U diag(lambda) U^T, pushed through x = alpha x0 + sigma z.
Along each eigenvector u_k the PF-ODE decouples into a scalar linear ODE for the
coordinate c_k = u_k^T (x - alpha mu), so it can be solved exactly:

    VE / EDM, x = x0 + sigma z:
        c_k(sigma) = sqrt((lambda_k + sigma^2) / (lambda_k + sigma_T^2)) c_k(sigma_T)
    VP, x = sqrt(abar) x0 + sqrt(1 - abar) z:
        c_k(abar) = sqrt((1 + (lambda_k - 1) abar) / (1 + (lambda_k - 1) abar_T)) c_k(abar_T)

One source of truth: the functions in the first half derive these with sympy and return
:class:`Derivation` objects (labelled steps a notebook can display); :class:`GaussianFlow`
evaluates the *same* sympy results, lambdified to torch and vectorised over samples,
times and eigen-directions. Nothing numeric is typed in twice.

The VP solution depends on the schedule only through abar, so it is exact on a sampler's
own discrete abar grid (no discretisation error), with abar_T kept as it is (not set to 0).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sympy as sp
import torch
from torch import Tensor

from pflow_explore.theory.derivation_store import stored

F64 = torch.float64

# ---- symbols ---------------------------------------------------------------------------
# Positivity lets sympy take square roots without sign cases; evaluating at sigma = 0 or
# abar = 0 afterwards (subs, or the lambdified function) is still fine.
sigma, sigma_T, sigma_t = sp.symbols("sigma sigma_T sigma_t", positive=True)
abar, abar_T = sp.symbols("alphabar alphabar_T", positive=True)  # prints as \bar{\alpha}
theta, theta_T = sp.symbols("theta theta_T", positive=True)
lam = sp.Symbol("lambda", positive=True)  # one eigenvalue of Sigma
t = sp.Symbol("t", real=True)
m = sp.Symbol("m", real=True)  # m = u_k^T mu, the mean along u_k
c_T, c_0 = sp.symbols("c_T c_0", real=True)  # c at the start (noise end) and at the data end
c_sym = sp.Symbol("c", real=True)  # a coordinate u_k^T (x - alpha mu) at one time
c = sp.Function("c")  # the same coordinate along a trajectory
alphabar_of_t = sp.Function("alphabar")(t)
D_sym, f_sym, g_sym = sp.symbols("d f g", real=True)  # denoiser coordinate, share, gain


@dataclass(frozen=True)
class Derivation:
    """A derivation as labelled sympy steps; ``result`` is the equation the numerics use.

    ``d["label"]`` returns one step. In a notebook the object renders as aligned LaTeX.
    """

    title: str
    steps: tuple[tuple[str, sp.Basic], ...]
    result: sp.Eq

    def __getitem__(self, label: str) -> sp.Basic:
        for name, expr in self.steps:
            if name == label:
                return expr
        raise KeyError(f"no step {label!r}; steps: {', '.join(n for n, _ in self.steps)}")

    def __str__(self) -> str:
        lines = [self.title] + [f"  {name}: {sp.sstr(expr)}" for name, expr in self.steps]
        return "\n".join(lines)

    def _repr_latex_(self) -> str:
        def text(label: str) -> str:  # labels are plain text: escape LaTeX's specials
            return label.replace("_", r"\_").replace("^", r"\^{}")

        rows = [rf"\text{{{text(n)}}} &:\quad {sp.latex(expr)}" for n, expr in self.steps]
        return r"$\displaystyle\begin{aligned}" + r"\\ ".join(rows) + r"\end{aligned}$"


# ---- derivations ---------------------------------------------------------------------------
def _pf_ode_in_eigencoords(alpha: sp.Expr, sig: sp.Expr, time: sp.Symbol) -> dict[str, sp.Expr]:
    """The PF-ODE of x = alpha(time) x0 + sig(time) z along u_k, for c = u_k^T (x - alpha mu).

    Marginal along u_k: N(alpha m, alpha^2 lambda + sig^2), so the score is -c / (that
    variance). Drift and diffusion as in paths.Path.drift_and_diffusion:
    f = alpha'/alpha, g^2 = 2 sig sig' - 2 f sig^2; PF-ODE dx/dt = f x - g^2/2 score.
    """
    coord = c(time)
    variance = alpha**2 * lam + sig**2
    score = -coord / variance
    f = sp.simplify(alpha.diff(time) / alpha)
    g2 = sp.simplify(2 * sig * sig.diff(time) - 2 * f * sig**2)
    dx = f * (coord + alpha * m) - g2 / 2 * score
    dc = sp.simplify(dx - (alpha * m).diff(time))  # the moving mean alpha m drops out
    return {"variance": variance, "score": score, "f": f, "g2": g2, "dc": dc}


@stored
def pf_ode_eigen_ve() -> Derivation:
    """VE / EDM: dc/dsigma = sigma c / (lambda + sigma^2), solved from c(sigma_T) = c_T.

    Result: c(sigma) = c_T sqrt(lambda + sigma^2) / sqrt(lambda + sigma_T^2) (docs/papers.md).
    """
    parts = _pf_ode_in_eigencoords(sp.Integer(1), sigma, sigma)  # sigma itself is the time
    ode = sp.Eq(c(sigma).diff(sigma), parts["dc"])
    general = sp.dsolve(ode, c(sigma))
    solution = sp.dsolve(ode, c(sigma), ics={c(sigma_T): c_T})
    steps = (
        ("variance along u_k", sp.Eq(sp.Symbol("v"), parts["variance"])),
        ("score along u_k", sp.Eq(sp.Symbol("s"), parts["score"])),
        ("drift f and g^2", sp.Tuple(parts["f"], parts["g2"])),
        ("PF-ODE", ode),
        ("general solution", general),
        ("solution", solution),
    )
    return Derivation("VE probability flow of N(mu, Sigma) along u_k", steps, solution)


@stored
def pf_ode_eigen_vp() -> Derivation:
    """VP: x = sqrt(abar) x0 + sqrt(1 - abar) z; in the variable abar,

    dc/dabar = (lambda - 1) c / (2 (1 + (lambda - 1) abar)),   c = u_k^T (x - sqrt(abar) mu),

    solved from c(abar_T) = c_T: c = c_T sqrt(1 + (lambda-1) abar) / sqrt(1 + (lambda-1) abar_T).
    Any schedule abar(t) gives the same ODE after dividing by abar'(t) (the chain rule).
    """
    a = alphabar_of_t
    parts = _pf_ode_in_eigencoords(sp.sqrt(a), sp.sqrt(1 - a), t)
    in_abar = sp.factor(sp.simplify((parts["dc"] / a.diff(t)).subs(c(t), c(abar)).subs(a, abar)))
    ode = sp.Eq(c(abar).diff(abar), in_abar)
    general = sp.dsolve(ode, c(abar))
    solution = sp.dsolve(ode, c(abar), ics={c(abar_T): c_T})
    steps = (
        ("variance along u_k", sp.Eq(sp.Symbol("v"), parts["variance"])),
        ("drift f and g^2", sp.Tuple(parts["f"], parts["g2"])),
        ("PF-ODE in t", sp.Eq(c(t).diff(t), parts["dc"])),
        ("PF-ODE", ode),
        ("general solution", general),
        ("solution", solution),
    )
    return Derivation("VP probability flow of N(mu, Sigma) along u_k", steps, solution)


def _denoiser_in_eigencoords(alpha: sp.Expr, sig: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """Tweedie, alpha D = x + sig^2 score, along u_k: (raw form, simplified u_k^T (D - mu))."""
    score = -c_sym / (alpha**2 * lam + sig**2)
    raw = (c_sym + alpha * m + sig**2 * score) / alpha - m
    return raw, sp.factor(sp.simplify(raw))


@stored
def gaussian_denoiser_eigen() -> Derivation:
    """VE denoiser D(x; sigma) = E[x0 | x0 + sigma z = x] along u_k:

    u_k^T (D - mu) = lambda c / (lambda + sigma^2)   (Tweedie: D = x + sigma^2 score).
    """
    raw, simple = _denoiser_in_eigencoords(sp.Integer(1), sigma)
    result = sp.Eq(D_sym, simple)
    steps = (("Tweedie along u_k", sp.Eq(D_sym, raw)), ("denoiser", result))
    return Derivation("Gaussian denoiser (VE), d = u_k^T (D - mu)", steps, result)


@stored
def gaussian_denoiser_eigen_vp() -> Derivation:
    """VP denoiser along u_k: u_k^T (D - mu) = sqrt(abar) lambda c / (1 + (lambda - 1) abar)."""
    raw, simple = _denoiser_in_eigencoords(sp.sqrt(abar), sp.sqrt(1 - abar))
    result = sp.Eq(D_sym, simple)
    steps = (("Tweedie along u_k", sp.Eq(D_sym, raw)), ("denoiser", result))
    return Derivation("Gaussian denoiser (VP), d = u_k^T (D - mu)", steps, result)


@stored
def feature_share() -> Derivation:
    """Share of feature k already fixed in the predicted x0, f_k = sqrt(lambda/(lambda+sigma^2)).

    Along a VE trajectory ending at c_0 = c(0), the denoiser's coordinate is
    lambda/(lambda + sigma^2) c(sigma) = f c_0. f = 1/sqrt(2) exactly at sigma = sqrt(lambda):
    feature k "appears" near sigma ~ sqrt(lambda_k) (outline first: large lambda, early).
    """
    along = pf_ode_eigen_ve().result.rhs.subs({sigma_T: 0, c_T: c_0})
    denoised = gaussian_denoiser_eigen().result.rhs.subs(c_sym, along)
    share = sp.simplify(denoised / c_0)
    result = sp.Eq(f_sym, share)
    crossing = sp.solve(sp.Eq(share, 1 / sp.sqrt(2)), sigma)
    steps = (
        ("trajectory through c(0) = c_0", sp.Eq(c(sigma), along)),
        ("denoiser along it", sp.Eq(D_sym, sp.simplify(denoised))),
        ("share", result),
        ("at sigma = sqrt(lambda)", sp.Eq(f_sym, share.subs(sigma, sp.sqrt(lam)))),
        (
            "f = 1/sqrt(2) at",
            sp.Eq(sigma, crossing[0] if len(crossing) == 1 else sp.Tuple(*crossing)),
        ),
    )
    return Derivation("Feature share f_k(sigma)", steps, result)


@stored
def perturbation_gain() -> Derivation:
    """A kick delta along u_k at noise level sigma_t reaches x0 as g delta,

    g = sqrt(lambda / (lambda + sigma_t^2)).

    From the VE solution started at sigma_t and run to sigma -> 0; the map is linear, so the
    gain is d c(0) / d c(sigma_t). It equals the feature share at sigma_t.
    """
    from_kick = pf_ode_eigen_ve().result.rhs.subs(sigma_T, sigma_t)
    at_data = sp.limit(from_kick, sigma, 0)
    gain = sp.simplify(at_data.diff(c_T))
    result = sp.Eq(g_sym, gain)
    steps = (
        ("solution from sigma_t", sp.Eq(c(sigma), from_kick)),
        ("at sigma -> 0", sp.Eq(c(0), at_data)),
        ("gain d c(0) / d c(sigma_t)", result),
    )
    return Derivation("Perturbation gain", steps, result)


@stored
def rotation_form() -> Derivation:
    """VP solution with abar = sin^2 theta: c(theta) = c_T sqrt(cos^2 th + lambda sin^2 th) / N_T.

    N_T = sqrt(cos^2 theta_T + lambda sin^2 theta_T). What holds exactly: this form for every
    abar_T; the paper's c(t) = c(T) sqrt(cos^2 theta + lambda sin^2 theta) only for abar_T = 0
    (theta_T = 0, x_T pure noise), otherwise up to the factor 1/N_T = 1 + O(abar_T).
    theta runs from theta_T (noise) to pi/2 (data, where c = sqrt(lambda) c_T / N_T).
    """
    vp = pf_ode_eigen_vp().result.rhs
    substituted = vp.subs({abar: sp.sin(theta) ** 2, abar_T: sp.sin(theta_T) ** 2})

    def n(th: sp.Symbol) -> sp.Expr:
        return sp.sqrt(sp.cos(th) ** 2 + lam * sp.sin(th) ** 2)

    identity = sp.Eq(
        1 + (lam - 1) * sp.sin(theta) ** 2, sp.cos(theta) ** 2 + lam * sp.sin(theta) ** 2
    )
    if sp.simplify(identity.lhs - identity.rhs) != 0:  # pragma: no cover - sympy sanity
        raise AssertionError("rotation identity failed")
    form = c_T * n(theta) / n(theta_T)
    if sp.simplify(sp.expand_trig(substituted - form)) != 0:  # pragma: no cover
        raise AssertionError("rotation form does not match the VP solution")
    result = sp.Eq(c(theta), form)
    steps = (
        ("substitution", sp.Eq(abar, sp.sin(theta) ** 2)),
        ("VP solution in theta", sp.Eq(c(theta), substituted)),
        ("identity", identity),
        ("rotation form", result),
        ("from pure noise (theta_T = 0)", sp.Eq(c(theta), form.subs(theta_T, 0))),
    )
    return Derivation("Rotation form of the VP solution", steps, result)


# ---- lambdified numerics -------------------------------------------------------------------
@functools.cache
def _lambdified(expr: sp.Expr, args: tuple[sp.Symbol, ...]) -> Callable[..., Tensor]:
    """torch function of ``args`` evaluating ``expr`` (elementwise, broadcasting)."""
    return sp.lambdify(args, expr, modules="torch")


def _ve_solution_fn() -> Callable[..., Tensor]:
    return _lambdified(pf_ode_eigen_ve().result.rhs, (c_T, sigma, sigma_T, lam))


def _ve_velocity_fn() -> Callable[..., Tensor]:
    rhs = pf_ode_eigen_ve()["PF-ODE"].rhs.subs(c(sigma), c_sym)
    return _lambdified(rhs, (c_sym, sigma, lam))


def _vp_solution_fn() -> Callable[..., Tensor]:
    return _lambdified(pf_ode_eigen_vp().result.rhs, (c_T, abar, abar_T, lam))


def _vp_velocity_fn() -> Callable[..., Tensor]:
    rhs = pf_ode_eigen_vp()["PF-ODE"].rhs.subs(c(abar), c_sym)
    return _lambdified(rhs, (c_sym, abar, lam))


def _ve_denoiser_fn() -> Callable[..., Tensor]:
    return _lambdified(gaussian_denoiser_eigen().result.rhs, (c_sym, sigma, lam))


def _vp_denoiser_fn() -> Callable[..., Tensor]:
    return _lambdified(gaussian_denoiser_eigen_vp().result.rhs, (c_sym, abar, lam))


def _feature_share_fn() -> Callable[..., Tensor]:
    return _lambdified(feature_share().result.rhs, (sigma, lam))


def _perturbation_gain_fn() -> Callable[..., Tensor]:
    return _lambdified(perturbation_gain().result.rhs, (sigma_t, lam))


def _as64(value: float | Tensor | Sequence[float], device: torch.device) -> Tensor:
    return torch.as_tensor(value, dtype=F64, device=device)


def _check_range(
    v: Tensor, name: str, lo: float, hi: float | None = None, open_lo: bool = False
) -> Tensor:
    bad = ~torch.isfinite(v) | ((v <= lo) if open_lo else (v < lo))
    if hi is not None:
        bad = bad | (v > hi)
    if bad.any():
        interval = f"{'(' if open_lo else '['}{lo}, {hi if hi is not None else 'inf'}"
        interval += "]" if hi is not None else ")"
        raise ValueError(f"{name} must lie in {interval}, got {v[bad].flatten()[0].item()}")
    return v


class GaussianFlow:
    """Exact PF-ODE trajectories, denoisers and feature curves of data N(mean, cov).

    mean: (d,), cov: (d, d) symmetric positive definite. The eigendecomposition is done once
    and held in float64, eigenvalues in *descending* order (feature k = 0 is the principal
    component): ``eigenvalues`` (d,), ``eigenvectors`` (d, d) with u_k as column k.
    Arithmetic is float64; tensor outputs have the dtype and device of the input ``x``.
    """

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        mean = torch.as_tensor(mean)
        cov = torch.as_tensor(cov).to(dtype=F64, device=mean.device)
        mean = mean.to(F64)
        if mean.dim() != 1:
            raise ValueError(f"mean must be (d,), got shape {tuple(mean.shape)}")
        d = mean.shape[0]
        if cov.shape != (d, d):
            raise ValueError(f"cov must be ({d}, {d}) to match mean, got {tuple(cov.shape)}")
        scale = cov.abs().max().clamp_min(1e-300)
        if not torch.allclose(cov, cov.T, rtol=0.0, atol=1e-10 * float(scale)):
            raise ValueError("cov must be symmetric")
        lam, u = torch.linalg.eigh(0.5 * (cov + cov.T))
        if not (lam > 0).all():
            raise ValueError(
                f"cov must be positive definite (smallest eigenvalue {lam.min().item():.3g}); "
                "for a sample covariance use GaussianFlow.from_samples(x, shrinkage > 0)"
            )
        self._set(mean, lam.flip(0), u.flip(1))

    def _set(self, mean: Tensor, lam: Tensor, u: Tensor) -> None:
        self.mean, self.eigenvalues, self.eigenvectors = mean, lam, u

    @classmethod
    def from_spectrum(cls, mean: Tensor, eigenvalues: Tensor, eigenvectors: Tensor) -> GaussianFlow:
        """Build from the spectrum: cov = U diag(eigenvalues) U^T, U (d, d) orthogonal.

        The eigenvalues (d,) must be > 0; they are sorted descending (with U's columns).
        """
        mean = torch.as_tensor(mean).to(F64)
        lam = torch.as_tensor(eigenvalues).to(dtype=F64, device=mean.device)
        u = torch.as_tensor(eigenvectors).to(dtype=F64, device=mean.device)
        d = mean.shape[0] if mean.dim() == 1 else -1
        if mean.dim() != 1 or lam.shape != (d,) or u.shape != (d, d):
            raise ValueError(
                "need mean (d,), eigenvalues (d,), eigenvectors (d, d); got "
                f"{tuple(mean.shape)}, {tuple(lam.shape)}, {tuple(u.shape)}"
            )
        _check_range(lam, "eigenvalues", 0.0, open_lo=True)
        eye = torch.eye(d, dtype=F64, device=mean.device)
        if not torch.allclose(u.T @ u, eye, atol=1e-8):
            raise ValueError("eigenvectors must be orthogonal (U^T U = I)")
        order = torch.argsort(lam, descending=True)
        flow = cls.__new__(cls)
        flow._set(mean, lam[order], u[:, order])
        return flow

    @classmethod
    def random(cls, d: int, seed: int) -> GaussianFlow:
        """A random N(mu, Sigma) in R^d for tests and exercises: mu ~ N(0, I) and
        Sigma = A A^T / d + 0.05 I with A (d, d) standard normal (so no eigenvalue is below
        0.05), drawn in float64 from a generator seeded ``seed`` (A first, then mu)."""
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(d, d, generator=gen, dtype=F64)
        cov = a @ a.T / d + 0.05 * torch.eye(d, dtype=F64)
        return cls(torch.randn(d, generator=gen, dtype=F64), cov)

    @classmethod
    def from_samples(cls, x: Tensor, shrinkage: float = 1e-3) -> GaussianFlow:
        """Fit mean and covariance to samples x (n, d) (flatten images with x.flatten(1)).

        cov = (1 - s) C + s (tr C / d) I, C the unbiased sample covariance, s = shrinkage in
        [0, 1): the trace is kept and every eigenvalue is >= s tr C / d > 0, so pixels with no
        variance (digit borders) still give an SPD covariance. The shrinkage is scale-free:
        fitting a x + b gives exactly ``from_samples(x).rescaled(a, b)``.
        """
        x = torch.as_tensor(x)
        if x.dim() != 2 or x.shape[0] < 2:
            raise ValueError(
                f"x must be (n, d) with n >= 2 (flatten images first), got {tuple(x.shape)}"
            )
        if not 0.0 <= shrinkage < 1.0:
            raise ValueError(f"shrinkage must lie in [0, 1), got {shrinkage}")
        x = x.to(F64)
        mean = x.mean(0)
        xc = x - mean
        cov = xc.T @ xc / (x.shape[0] - 1)
        d = x.shape[1]
        target = torch.trace(cov) / d * torch.eye(d, dtype=F64, device=x.device)
        return cls(mean, (1 - shrinkage) * cov + shrinkage * target)

    # ---- basic -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @property
    def cov(self) -> Tensor:
        """U diag(lambda) U^T, (d, d) float64."""
        u = self.eigenvectors
        return (u * self.eigenvalues) @ u.T

    def __repr__(self) -> str:
        lam = self.eigenvalues
        return f"GaussianFlow(d={self.dim}, eigenvalues in [{lam[-1]:.3g}, {lam[0]:.3g}])"

    def _parts(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        return (
            self.mean.to(device),
            self.eigenvalues.to(device),
            self.eigenvectors.to(device),
        )

    def _check_x(self, x: Tensor, name: str = "x") -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must be (n, {self.dim}), got {tuple(x.shape)}")
        return x.to(F64)

    def _per_row(self, v: float | Tensor, n: int, device: torch.device, name: str) -> Tensor:
        """A float, 0-d or (n,) level as (m, 1) float64 for broadcasting against (n, d)."""
        v = _as64(v, device)
        if v.dim() > 1 or (v.dim() == 1 and v.shape[0] not in (1, n)):
            raise ValueError(f"{name} must be a float, a 0-d tensor or shape ({n},); got {v.shape}")
        return v.reshape(-1, 1)

    def _grid(self, v: Tensor | Sequence[float], device: torch.device, name: str) -> Tensor:
        v = _as64(v, device)
        if v.dim() != 1:
            raise ValueError(f"{name} must be 1-D (m,), got shape {tuple(v.shape)}")
        return v

    def _scalar(self, v: float | Tensor, device: torch.device, name: str) -> Tensor:
        v = _as64(v, device)
        if v.numel() != 1:
            raise ValueError(f"{name} must be a single number, got shape {tuple(v.shape)}")
        return v.reshape(())

    def to_eigen(self, x: Tensor) -> Tensor:
        """c = U^T (x - mu): (..., d) -> (..., d), column k the coordinate along u_k."""
        mu, _, u = self._parts(x.device)
        return ((x.to(F64) - mu) @ u).to(x.dtype)

    def from_eigen(self, c: Tensor) -> Tensor:
        """x = mu + U c: (..., d) -> (..., d), the inverse of :meth:`to_eigen`."""
        mu, _, u = self._parts(c.device)
        return (mu + c.to(F64) @ u.T).to(c.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples of N(mu, Sigma), (n, d) float64: x = mu + U diag(sqrt(lambda)) z."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        z = torch.randn(n, self.dim, generator=generator, dtype=F64).to(self.mean.device)
        return self.mean + (z * self.eigenvalues.sqrt()) @ self.eigenvectors.T

    # ---- VE / EDM ------------------------------------------------------------------------
    def ve_solution(
        self, x_T: Tensor, sigma_T: float | Tensor, sigmas: Tensor | Sequence[float]
    ) -> Tensor:
        """Exact VE PF-ODE trajectory from x_T (n, d) at sigma_T to each sigma in sigmas (m,).

        x(sigma) = mu + U diag(sqrt((lambda + sigma^2) / (lambda + sigma_T^2))) U^T (x_T - mu),
        shape (m, n, d). sigmas >= 0 (sigma = 0 is the data end), any order. For EDM's
        scaled form x = s(t) (x0 + sigma z), apply it to x / s.
        """
        x64 = self._check_x(x_T, "x_T")
        dev = x64.device
        s_T = _check_range(self._scalar(sigma_T, dev, "sigma_T"), "sigma_T", 0.0)
        s = _check_range(self._grid(sigmas, dev, "sigmas"), "sigmas", 0.0)
        mu, lam, u = self._parts(dev)
        ct = _ve_solution_fn()((x64 - mu) @ u, s[:, None, None], s_T, lam)
        return (mu + ct @ u.T).to(x_T.dtype)

    def ve_denoiser(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """E[x0 | x0 + sigma z = x] = mu + U diag(lambda / (lambda + sigma^2)) U^T (x - mu).

        x: (n, d); sigma: float, 0-d or (n,) (one per row), >= 0. Returns (n, d).
        """
        x64 = self._check_x(x)
        s = _check_range(self._per_row(sigma, x.shape[0], x.device, "sigma"), "sigma", 0.0)
        mu, lam, u = self._parts(x.device)
        return (mu + _ve_denoiser_fn()((x64 - mu) @ u, s, lam) @ u.T).to(x.dtype)

    def ve_velocity(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """VE PF-ODE velocity dx/dsigma = sigma (Sigma + sigma^2 I)^{-1} (x - mu), (n, d).

        x: (n, d); sigma: float, 0-d or (n,), >= 0. Equals (x - D(x; sigma)) / sigma.
        """
        x64 = self._check_x(x)
        s = _check_range(self._per_row(sigma, x.shape[0], x.device, "sigma"), "sigma", 0.0)
        mu, lam, u = self._parts(x.device)
        return (_ve_velocity_fn()((x64 - mu) @ u, s, lam) @ u.T).to(x.dtype)

    # ---- VP --------------------------------------------------------------------------------
    def vp_solution(
        self, x_T: Tensor, abar_T: float | Tensor, abars: Tensor | Sequence[float]
    ) -> Tensor:
        """Exact VP PF-ODE trajectory from x_T (n, d) at abar_T to each abar in abars (m,).

        With y = x - sqrt(abar) mu: y(abar) = U diag(sqrt((1 + (lambda-1) abar) /
        (1 + (lambda-1) abar_T))) U^T y(abar_T); shape (m, n, d). abar_T, abars in [0, 1].
        Only abar matters, not the schedule: pass a sampler's discrete abar grid as it is.
        """
        x64 = self._check_x(x_T, "x_T")
        dev = x64.device
        a_T = _check_range(self._scalar(abar_T, dev, "abar_T"), "abar_T", 0.0, 1.0)
        a = _check_range(self._grid(abars, dev, "abars"), "abars", 0.0, 1.0)
        mu, lam, u = self._parts(dev)
        ct = _vp_solution_fn()((x64 - a_T.sqrt() * mu) @ u, a[:, None, None], a_T, lam)
        return (a.sqrt()[:, None, None] * mu + ct @ u.T).to(x_T.dtype)

    def vp_denoiser(self, x: Tensor, abar: float | Tensor) -> Tensor:
        """E[x0 | sqrt(abar) x0 + sqrt(1-abar) z = x], (n, d):

        mu + U diag(sqrt(abar) lambda / (1 + (lambda - 1) abar)) U^T (x - sqrt(abar) mu).
        x: (n, d); abar: float, 0-d or (n,), in [0, 1].
        """
        x64 = self._check_x(x)
        a = _check_range(self._per_row(abar, x.shape[0], x.device, "abar"), "abar", 0.0, 1.0)
        mu, lam, u = self._parts(x.device)
        return (mu + _vp_denoiser_fn()((x64 - a.sqrt() * mu) @ u, a, lam) @ u.T).to(x.dtype)

    def vp_velocity(self, x: Tensor, abar: float | Tensor) -> Tensor:
        """VP PF-ODE velocity in the variable abar, dx/dabar, (n, d):

        mu / (2 sqrt(abar)) + U diag((lambda - 1) / (2 (1 + (lambda - 1) abar))) U^T y,
        y = x - sqrt(abar) mu. Times dabar/dt gives dx/dt for any schedule. abar in (0, 1].
        """
        x64 = self._check_x(x)
        a = self._per_row(abar, x.shape[0], x.device, "abar")
        a = _check_range(a, "abar", 0.0, 1.0, open_lo=True)
        mu, lam, u = self._parts(x.device)
        dc = _vp_velocity_fn()((x64 - a.sqrt() * mu) @ u, a, lam)
        return (mu / (2 * a.sqrt()) + dc @ u.T).to(x.dtype)

    # ---- features, perturbations, rotation -------------------------------------------------
    def _curve(self, fn: Callable[..., Tensor], v: float | Tensor) -> Tensor:
        """fn(sigma (m, 1), lambda (d,)) for sigma a float/0-d (-> (d,)) or (m,) (-> (m, d))."""
        dtype = v.dtype if isinstance(v, Tensor) and v.is_floating_point() else F64
        v64 = _check_range(_as64(v, self.mean.device), "sigma", 0.0)
        if v64.dim() > 1:
            raise ValueError(f"sigma must be a float, 0-d or (m,), got shape {tuple(v64.shape)}")
        return fn(v64[..., None], self.eigenvalues).to(dtype)

    def feature_share(self, sigma: float | Tensor) -> Tensor:
        """f_k(sigma) = sqrt(lambda_k / (lambda_k + sigma^2)): share of feature k fixed in D.

        sigma: float / 0-d -> (d,); (m,) -> (m, d). float64 unless sigma is a float tensor.
        """
        return self._curve(_feature_share_fn(), sigma)

    def perturbation_gain(self, sigma: float | Tensor) -> Tensor:
        """g_k(sigma) = sqrt(lambda_k / (lambda_k + sigma^2)): the factor by which a kick along
        u_k at noise level sigma reaches x0 (VE flow run to sigma = 0). Shapes as feature_share.
        """
        return self._curve(_perturbation_gain_fn(), sigma)

    def rotation_residual(self, trajectory: Tensor, abars: Tensor | None = None) -> Tensor:
        """:func:`rotation_residual` of a trajectory (m, n, d) of this flow, centred first.

        VE (abars None): centre mu. VP: abars (m,) the trajectory's abar values, centre
        sqrt(abar) mu. Returns (m, n); exactly 0 when the spectrum has two distinct values.
        """
        if abars is None:
            center = self.mean
        else:
            a = self._grid(abars, self.mean.device, "abars")
            center = a.sqrt()[:, None] * self.mean
        return rotation_residual(trajectory, center)

    def rescaled(self, a: float, b: float | Tensor = 0.0) -> GaussianFlow:
        """The flow of the mapped data a x + b: mean a mu + b, eigenvalues a^2 lambda, same U.

        The pixel-range trap: [0, 1] -> [-1, 1] is a = 2, b = -1 (mean 2 mu - 1, 4 lambda);
        a flow fitted in one range is wrong in the other. a != 0; b a float or (d,).
        """
        if not a or not torch.isfinite(torch.tensor(float(a))):
            raise ValueError(f"a must be a finite non-zero number, got {a}")
        b64 = _as64(b, self.mean.device)
        if b64.dim() > 1 or (b64.dim() == 1 and b64.shape[0] != self.dim):
            raise ValueError(f"b must be a float or ({self.dim},), got {tuple(b64.shape)}")
        flow = GaussianFlow.__new__(GaussianFlow)
        flow._set(a * self.mean + b64, a**2 * self.eigenvalues, self.eigenvectors)
        return flow


def rotation_residual(trajectory: Tensor, center: Tensor | None = None) -> Tensor:
    """Share of each trajectory point outside the plane of its two end points, (m, n).

    trajectory: (m, n, d), step s = 0 the start (x_T), s = m - 1 the end; center: None, (d,)
    or (m, d), subtracted first (y_s = x_s - center_s). With P_j the orthogonal projector on
    span{y_0, y_{m-1}} of sample j (one direction if they are parallel),

        r_{s,j} = |y_s - P_j y_s| / |y_s|     (0 where |y_s| = 0),

    0 at both ends by construction, in [0, 1]. For Gaussian data (centred trajectories) it is
    exactly 0 when Sigma has at most two distinct eigenvalues, and positive otherwise.
    """
    if trajectory.dim() != 3 or trajectory.shape[0] < 2:
        raise ValueError(f"trajectory must be (m, n, d) with m >= 2, got {tuple(trajectory.shape)}")
    y = trajectory.to(F64)
    if center is not None:
        cen = center.to(dtype=F64, device=y.device)
        if cen.shape not in ((y.shape[2],), (y.shape[0], y.shape[2])):
            raise ValueError(f"center must be (d,) or (m, d), got {tuple(cen.shape)}")
        y = y - (cen if cen.dim() == 1 else cen[:, None, :])
    start, end = y[0], y[-1]
    tiny = torch.finfo(F64).tiny
    e1 = start / start.norm(dim=-1, keepdim=True).clamp_min(tiny)
    w = end - (end * e1).sum(-1, keepdim=True) * e1
    # end parallel to start (or zero): the plane degenerates to a line
    keep = w.norm(dim=-1, keepdim=True) > 1e-12 * end.norm(dim=-1, keepdim=True)
    e2 = torch.where(keep, w / w.norm(dim=-1, keepdim=True).clamp_min(tiny), torch.zeros_like(w))
    proj = (y * e1).sum(-1, keepdim=True) * e1 + (y * e2).sum(-1, keepdim=True) * e2
    norm = y.norm(dim=-1)
    res = (y - proj).norm(dim=-1) / norm.clamp_min(tiny)
    return torch.where(norm > 0, res, torch.zeros_like(res)).to(trajectory.dtype)
