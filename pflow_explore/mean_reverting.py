"""Mean-reverting diffusion (IR-SDE, Luo et al. 2023) and its fast samplers (MR Sampler).

Time convention: diffusion, t in [0, T] (T = 100 in the paper): t = 0 is the clean x0,
t = T is mu plus noise of std ~lambda; sampling runs from T down to a small t_end > 0.

The forward SDE pulls x towards the condition mu (for restoration: the degraded image),

    dx = theta_t (mu - x) dt + sigma_t dW,      sigma_t^2 = 2 lambda^2 theta_t,          (1)

and with alpha_t = exp(-int_0^t theta), sigmabar_t = lambda sqrt(1 - alpha_t^2) its marginal is

    x_t = mu + alpha_t (x0 - mu) + sigmabar_t z,      z ~ N(0, I)                         (2)

(:class:`MRSchedule`; ``theory.mean_reverting`` derives (2) from (1)). With y = x - mu and a
denoiser x0^(x, t) = E[x0 | x_t = x] (exact for Gaussian-mixture data: :class:`MixtureMR`),
eps^ = (y - alpha x0^) / sigmabar, score = -eps^ / sigmabar; the reverse SDE is
dx = [theta (mu - x) - sigma^2 score] dt + sigma dW_bar, the PF-ODE drops the noise and half
of the score term.

In the log-SNR lam = log(alpha / sigmabar) (decreasing; sigma^2 / 2 = -sigmabar^2 dlam/dt)
the PF-ODE is DPM-Solver's, dy/dt = (log alpha)' y - sigmabar lam' eps^, and variation of
constants from s to t, h = lam_t - lam_s > 0, d = x0^ - mu, gives (MR Sampler)

    noise: y_t = (alpha_t / alpha_s) y_s - alpha_t int_{lam_s}^{lam_t} e^{-l} eps^(l) dl    (3)
    data:  y_t = (sigmabar_t / sigmabar_s) y_s + sigmabar_t int e^{l} d(l) dl            (4)
    SDE:   y_t = (sigmabar_t / sigmabar_s) e^{-h} y_s + 2 sigmabar_t e^{-lam_t} int e^{2l} d dl
                 + sigmabar_t sqrt(1 - e^{-2h}) z                                         (5)

MRS-k (:func:`steps`) replaces the prediction p (eps^ or d) by its Taylor polynomial in lam
at lam_s, p + (l - lam_s) p' + (l - lam_s)^2 p'' / 2, integrated exactly with
phi_1(z) = (e^z - 1) / z, phi_2(z) = (e^z - 1 - z) / z^2, phi_3 = (e^z - 1 - z - z^2/2) / z^3:

    noise: y_t = (alpha_t / alpha_s) y_s - sigmabar_t sum_j h^{j+1} phi_{j+1}(h) p^(j)
    data:  y_t = (sigmabar_t / sigmabar_s) y_s + alpha_t sum_j h^{j+1} phi_{j+1}(-h) p^(j)
    SDE:   decay as (5), + alpha_t sum_j (2h)^{j+1} phi_{j+1}(-2h) p^(j) / 2^j, + noise as (5)

(j < k; k = 1: h phi_1(h) = e^h - 1, h phi_1(-h) = 1 - e^{-h}, the paper's updates). The
derivatives are multistep (as DPM-Solver++(2M/3M)), from the newest points (l0, p0), (l1,
p1), (l2, p2): D1 = (p0 - p1) / (l0 - l1), D2 = (D1 - (p1 - p2) / (l1 - l2)) / (l0 - l2),
p' = D1 (k = 2), p' = D1 + D2 (l0 - l1), p'' = 2 D2 (k = 3: the Newton interpolant at l0);
the first steps take the orders their history allows. One NFE per step; global O(h^k).

Trap: data prediction from a noise-prediction network, x0^ = mu + (y - sigmabar eps^) / alpha,
divides the network's error by alpha ~ 0.005 near T; in (3) the same gain sits in
e^h - 1 ~ alpha_t / alpha_s on a long first step. :class:`PredictionError` models a
network's error (seeded N(0, std^2) on eps^ or on x0^). Shapes: x (n, d); mu (d,) or (n, d);
t a float; grids (N + 1,) descending float64; denoiser(x (n, d), t: float) -> x0^ (n, d).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.paths import Path
from pflow_explore.solvers import Solution, collected, randn_like
from pflow_explore.theory.mixtures import MixtureFlow

F64 = torch.float64
SCHEDULES = ("cosine", "constant")
METHODS = ("euler_maruyama", "euler_ode", "mrs_ode_noise", "mrs_ode_data", "mrs_sde_data")
MAX_ORDER = dict(zip(METHODS, (1, 1, 3, 3, 2), strict=True))  # orders each method offers
Denoiser = Callable[[Tensor, float], Tensor]
Generator = torch.Generator | None


@dataclass
class MRSchedule:
    """theta_t, alpha_t, sigmabar_t and the log-SNR of (1)-(2) on t in [0, T], float64.

    ``"cosine"`` (IR-SDE's): theta_t = c (1 - cos^2 a(t/T) / cos^2 a(0)), a(u) = pi/2 (u + s) /
    (1 + s): 0 at t = 0, largest at T (IR-SDE's 1 - DDPM cosine alpha-bar, here continuous,
    int theta in closed form). ``"constant"``: theta_t = c. c makes alpha_T = ``alpha_end``
    (as IR-SDE's dt makes exp(-sum theta dt) = eps). Defaults: the paper's T = 100, lambda =
    50/255, alpha_T = 0.005. Methods take t (float or tensor in [0, T]) -> float64, t's shape.
    """

    T: float = 100.0
    lambda_: float = 50 / 255
    schedule: str = "cosine"
    alpha_end: float = 0.005
    s: float = 0.008

    def __post_init__(self) -> None:
        if not (self.T > 0 and self.lambda_ > 0 and self.s > 0):
            raise ValueError(f"need T, lambda_, s > 0, got {self.T}, {self.lambda_}, {self.s}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 < self.alpha_end < 1:
            raise ValueError(f"alpha_end must lie in (0, 1), got {self.alpha_end}")
        area = float(self._shape_integral(torch.tensor(1.0, dtype=F64)))
        self.c = -math.log(self.alpha_end) / (self.T * (area if self.schedule == "cosine" else 1))

    def _t(self, t: float | Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=F64)
        if not torch.isfinite(t).all() or (t < 0).any() or (t > self.T * (1 + 1e-12)).any():
            raise ValueError(f"t must lie in [0, T] = [0, {self.T}]")
        return t

    def _phase(self, u: Tensor) -> Tensor:
        return 0.5 * math.pi * (u + self.s) / (1 + self.s)

    def _shape_integral(self, u: Tensor) -> Tensor:
        """int_0^u (1 - cos^2 a(v) / cos^2 a(0)) dv, with cos^2 = (1 + cos 2a) / 2."""
        F = lambda v: v / 2 + (1 + self.s) / (2 * math.pi) * torch.sin(2 * self._phase(v))
        return (
            u
            - (F(u) - F(torch.zeros_like(u))) / math.cos(0.5 * math.pi * self.s / (1 + self.s)) ** 2
        )

    def theta(self, t: float | Tensor) -> Tensor:
        """theta_t, the mean-reversion rate."""
        t = self._t(t)
        if self.schedule == "constant":
            return torch.full_like(t, self.c)
        cos0 = math.cos(0.5 * math.pi * self.s / (1 + self.s))
        return self.c * (1 - torch.cos(self._phase(t / self.T)) ** 2 / cos0**2).clamp_min(0)

    def theta_bar(self, t: float | Tensor) -> Tensor:
        """int_0^t theta_s ds = -log alpha_t."""
        t = self._t(t)
        if self.schedule == "constant":
            return self.c * t
        return self.c * self.T * self._shape_integral(t / self.T)

    def alpha(self, t: float | Tensor) -> Tensor:
        """alpha_t = exp(-int_0^t theta)."""
        return torch.exp(-self.theta_bar(t))

    def sigmabar(self, t: float | Tensor) -> Tensor:
        """sigmabar_t = lambda sqrt(1 - alpha_t^2), the std of x_t given x0."""
        return self.lambda_ * torch.sqrt(-torch.expm1(-2 * self.theta_bar(t)))

    def sigma(self, t: float | Tensor) -> Tensor:
        """sigma_t = sqrt(2 lambda^2 theta_t), the diffusion coefficient of (1)."""
        return torch.sqrt(2 * self.lambda_**2 * self.theta(t))

    def lam(self, t: float | Tensor) -> Tensor:
        """Log-SNR lam_t = log(alpha_t / sigmabar_t), strictly decreasing, +inf at t = 0."""
        tb = self.theta_bar(t)
        return -tb - math.log(self.lambda_) - 0.5 * torch.log(-torch.expm1(-2 * tb))

    def t_of_lambda(self, lam: float | Tensor) -> Tensor:
        """The inverse of :meth:`lam` by bisection on [0, T] (64 halvings: ~1e-17 T)."""
        lam = torch.as_tensor(lam, dtype=F64)
        lam_T = float(self.lam(self.T))
        if not torch.isfinite(lam).all() or (lam < lam_T - 1e-12).any():
            raise ValueError(f"lam must be finite and >= lam(T) = {lam_T:.4g}")
        lo, hi = torch.zeros_like(lam), torch.full_like(lam, self.T)
        for _ in range(64):
            mid = (lo + hi) / 2
            above = self.lam(mid) > lam  # lam decreases: the root lies later
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return (lo + hi) / 2

    # ---- the forward process (2) and conversions between predictions ----
    def q_sample(
        self, x0: Tensor, t: float | Tensor, mu: Tensor | float, generator: Generator = None
    ) -> tuple[Tensor, Tensor]:
        """(x_t, z): x_t = mu + alpha_t (x0 - mu) + sigmabar_t z; x0 (n, d), t float or (n,)."""
        z = randn_like(x0, generator)
        return mu + _col(self.alpha(t), x0) * (x0 - mu) + _col(self.sigmabar(t), x0) * z, z

    def prior_sample(self, mu: Tensor, n: int, generator: Generator = None) -> Tensor:
        """A sampler's start mu + sigmabar_T z (alpha_T (x0 - mu) left out), mu (d,) -> (n, d)."""
        mu = torch.as_tensor(mu).expand(n, -1)
        return mu + float(self.sigmabar(self.T)) * randn_like(mu, generator)

    def eps_from_x0(self, x: Tensor, x0: Tensor, t: float | Tensor, mu: Tensor | float) -> Tensor:
        """eps = (x - mu - alpha_t (x0 - mu)) / sigmabar_t (t > 0)."""
        return (x - mu - _col(self.alpha(t), x) * (x0 - mu)) / _col(self.sigmabar(t), x)

    def x0_from_eps(self, x: Tensor, eps: Tensor, t: float | Tensor, mu: Tensor | float) -> Tensor:
        """x0 = mu + (x - mu - sigmabar_t eps) / alpha_t: eps's error divided by alpha_t."""
        return mu + (x - mu - _col(self.sigmabar(t), x) * eps) / _col(self.alpha(t), x)

    def score_from_eps(self, eps: Tensor, t: float | Tensor) -> Tensor:
        """grad log p_t = -eps / sigmabar_t."""
        return -eps / _col(self.sigmabar(t), eps)

    def eps_from_score(self, score: Tensor, t: float | Tensor) -> Tensor:
        """eps = -sigmabar_t grad log p_t."""
        return -_col(self.sigmabar(t), score) * score


def simulate_forward(
    schedule: MRSchedule,
    x0: Tensor,
    mu: Tensor,
    t: float,
    n_steps: int,
    generator: Generator = None,
) -> Tensor:
    """Euler-Maruyama on the forward SDE (1) from x0 (n, d) at time 0 to t, ``n_steps``
    equal steps: x <- x + theta (mu - x) dt + sigma sqrt(dt) xi. An independent check of the
    marginal (2) (its weak error is O(dt)). -> (n, d), x0's dtype."""
    if n_steps < 1 or not 0 < t <= schedule.T:
        raise ValueError(f"need n_steps >= 1 and t in (0, T], got {n_steps}, {t}")
    x, times = x0.clone(), torch.linspace(0, t, n_steps + 1, dtype=F64)
    for a, b in zip(times[:-1], times[1:], strict=True):
        dt = float(b - a)
        noise = float(schedule.sigma(a)) * math.sqrt(dt) * randn_like(x, generator)
        x = x + float(schedule.theta(a)) * (mu - x) * dt + noise
    return x


def _col(c: Tensor, x: Tensor) -> Tensor:
    """A float64 coefficient of shape () or (n,) as x's dtype, broadcastable to x (n, d)."""
    c = c.to(dtype=x.dtype, device=x.device)
    return c.reshape(c.shape + (1,) * (x.dim() - c.dim())) if c.dim() else c


# ---- exact denoiser for Gaussian-mixture data ---------------------------------------------------
class _SchedulePath(Path):
    """(alpha_t, sigmabar_t) as a ``paths.Path``, so ``MixtureFlow`` serves y = x - mu."""

    def __init__(self, schedule: MRSchedule) -> None:
        self.schedule = schedule

    def alpha(self, t: float | Tensor) -> Tensor:
        return self.schedule.alpha(t)

    def sigma(self, t: float | Tensor) -> Tensor:
        return self.schedule.sigmabar(t)


class MixtureMR:
    """x0 ~ sum_k w_k N(m_k, C_k) with a fixed mu: x_t given mu is the mixture with means
    mu + alpha_t (m_k - mu) and covariances alpha_t^2 C_k + sigmabar_t^2 I, so its density,
    score, denoiser E[x0 | x_t] and eps are exact (``theory.mixtures.MixtureFlow`` on y = x - mu).
    x (n, d); t a float or (n,); mu (d,). Outputs in x's dtype (float64 arithmetic)."""

    def __init__(self, mixture: GaussianMixture, schedule: MRSchedule, mu: Tensor) -> None:
        self.mu = torch.as_tensor(mu, dtype=F64)
        if self.mu.shape != (mixture.dim,):
            raise ValueError(f"mu must have shape ({mixture.dim},), got {tuple(self.mu.shape)}")
        self.mixture, self.schedule = mixture, schedule
        shifted = GaussianMixture(mixture.weights, mixture.means - self.mu, mixture.covs)
        self._flow = MixtureFlow(shifted, _SchedulePath(schedule))
        self._gain: tuple[tuple[float, float], Tensor] | None = None  # the last t's gain

    @classmethod
    def gaussian(cls, mean: Tensor, cov: Tensor, schedule: MRSchedule, mu: Tensor) -> MixtureMR:
        """One component: x0 ~ N(mean (d,), cov (d, d))."""
        mean, cov = torch.as_tensor(mean, dtype=F64), torch.as_tensor(cov, dtype=F64)
        return cls(GaussianMixture(torch.ones(1, dtype=F64), mean[None], cov[None]), schedule, mu)

    def marginal(self, t: float) -> GaussianMixture:
        """The law of x_t given mu, one time t."""
        m = self._flow.marginal(t)
        return GaussianMixture(m.weights, m.means + self.mu, m.covs)

    def sample(self, n: int, t: float | Tensor, generator: Generator = None) -> Tensor:
        """n draws of x_t given mu, (n, d) float64 (x0 from the mixture, then (2))."""
        x0 = self.mixture.sample(n, generator).to(F64)
        return self.schedule.q_sample(x0, t, self.mu, generator)[0]

    def log_prob(self, x: Tensor, t: float | Tensor) -> Tensor:
        """log p_t(x | mu), (n,)."""
        return self._flow.log_prob(x - self.mu.to(x), t)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        """grad_x log p_t(x | mu), (n, d)."""
        return self._flow.score(x - self.mu.to(x), t)

    def denoiser(self, x: Tensor, t: float | Tensor) -> Tensor:
        """E[x0 | x_t = x, mu], (n, d). One Gaussian component and one t: the linear map
        m + alpha C (alpha^2 C + sigmabar^2 I)^-1 (x - mu - alpha (m - mu)) (a matrix product
        instead of the mixture's responsibilities; :meth:`mixture_denoiser` is the general
        path, and a test keeps the two equal)."""
        if len(self.mixture.weights) > 1 or torch.as_tensor(t).numel() > 1:
            return self.mixture_denoiser(x, t)
        a, sb = float(self.schedule.alpha(t)), float(self.schedule.sigmabar(t))
        mean, cov = self.mixture.means[0].to(F64), self.mixture.covs[0].to(F64)
        if self._gain is None or self._gain[0] != (a, sb):
            eye = torch.eye(len(cov), dtype=F64)
            self._gain = ((a, sb), a * torch.linalg.solve(a * a * cov + sb * sb * eye, cov).T)
        gain, centre = self._gain[1], self.mu + a * (mean - self.mu)
        out = mean + (x.to(F64) - centre) @ gain.T
        return out.to(x.dtype)

    def mixture_denoiser(self, x: Tensor, t: float | Tensor) -> Tensor:
        """E[x0 | x_t = x, mu] by the mixture's responsibilities (any number of components)."""
        mu = self.mu.to(x)
        return mu + self._flow.denoiser(x - mu, t)

    def eps(self, x: Tensor, t: float | Tensor) -> Tensor:
        """E[z | x_t = x, mu] = (x - mu - alpha (x0^ - mu)) / sigmabar, (n, d); t > 0."""
        return self.schedule.eps_from_x0(x, self.denoiser(x, t), t, self.mu.to(x))


def gaussian_flow_map(
    mean: Tensor, cov: Tensor, schedule: MRSchedule, mu: Tensor, x: Tensor, t: float, s: float
) -> Tensor:
    """The exact PF-ODE map from time t to s for x0 ~ N(mean (d,), cov (d, d)), x (n, d):
    along each eigenvector u_k of cov (eigenvalue c_k) the coordinate of x - mu - alpha_t
    (mean - mu) scales by the ratio of marginal standard deviations,

        X_s = mu + alpha_s (mean - mu) + U diag(sqrt(v_k(s) / v_k(t))) U^T (x - mu - alpha_t
        (mean - mu)),      v_k(t) = alpha_t^2 c_k + sigmabar_t^2,

    (each coordinate's marginal stays Gaussian and the flow is linear). float64 (n, d)."""
    mean, cov, mu = (torch.as_tensor(v, dtype=F64) for v in (mean, cov, mu))
    c, u = torch.linalg.eigh(cov)
    var = lambda r: schedule.alpha(r) ** 2 * c + schedule.sigmabar(r) ** 2
    centre = lambda r: mu + schedule.alpha(r) * (mean - mu)
    coords = (x.to(F64) - centre(t)) @ u * (var(s) / var(t)).sqrt()
    return coords @ u.T + centre(s)


# ---- time grids --------------------------------------------------------------------------------
def time_grid(
    schedule: MRSchedule,
    n_steps: int,
    spacing: str = "logsnr",
    t_end: float | None = None,
    lambda_min: float = -5.0,
) -> Tensor:
    """(n_steps + 1,) float64 times from t_start down to t_end (default 1e-3 T), uniform in
    log-SNR (``spacing="logsnr"``, t_i = t_of_lambda(lam_i)) or in t (``"uniform"``).
    t_start = T unless lam(T) < ``lambda_min``: then t(lambda_min), the noisy end clipped."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if spacing not in ("logsnr", "uniform"):
        raise ValueError(f"spacing must be 'logsnr' or 'uniform', got {spacing!r}")
    t_end = 1e-3 * schedule.T if t_end is None else float(t_end)
    t_start = schedule.T
    if float(schedule.lam(schedule.T)) < lambda_min:
        t_start = float(schedule.t_of_lambda(lambda_min))
    if not 0 < t_end < t_start:
        raise ValueError(f"t_end must lie in (0, t_start = {t_start:.4g}), got {t_end}")
    if spacing == "uniform":
        return torch.linspace(t_start, t_end, n_steps + 1, dtype=F64)
    lo, hi = float(schedule.lam(t_start)), float(schedule.lam(t_end))
    lams = torch.linspace(lo, hi, n_steps + 1, dtype=F64)
    times = schedule.t_of_lambda(lams)
    times[0], times[-1] = t_start, t_end
    return times


# ---- solvers -----------------------------------------------------------------------------------
@dataclass
class MRStep:
    """Step i of a sampler: x (n, d) at t, the prediction x0_hat (n, d) it used (error
    included), x_next at t_next; nfe: denoiser calls so far."""

    i: int
    t: float
    t_next: float
    x: Tensor
    x0_hat: Tensor
    x_next: Tensor
    nfe: int


def phi(k: int, z: Tensor) -> Tensor:
    """phi_k(z) = (e^z - sum_{j<k} z^j / j!) / z^k, k = 1, 2, 3 (a 4-term series for |z| < 1e-3)."""
    if k not in (1, 2, 3):
        raise ValueError(f"k must be 1, 2 or 3, got {k}")
    z = torch.as_tensor(z, dtype=F64)
    head = torch.expm1(z) - (z if k >= 2 else 0) - (z**2 / 2 if k == 3 else 0)
    safe = torch.where(z.abs() < 1e-3, torch.ones_like(z), z)
    series = sum(z**j / math.factorial(k + j) for j in range(4))
    return torch.where(z.abs() < 1e-3, series, head / safe**k)


@dataclass(frozen=True)
class PredictionError:
    """A network's error: N(0, std^2) added to each prediction, drawn from a generator seeded
    with ``seed``, on ``on`` = "eps" (then x0^ = mu + (y - sigmabar eps^) / alpha: the error
    divided by alpha) or "x0" (then eps^ from it); None: the solver's own prediction (eps for
    "mrs_ode_noise", x0 otherwise)."""

    std: float
    on: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.std >= 0 or self.on not in (None, "eps", "x0"):
            raise ValueError(f"need std >= 0 and on None, 'eps' or 'x0', got {self}")


def _taylor(hist: list[tuple[float, Tensor]]) -> list[Tensor]:
    """[p, p', p''] at the newest lam from 1-3 points (lam, p), newest last (Newton form)."""
    (l0, p0) = hist[-1]
    if len(hist) == 1:
        return [p0]
    (l1, p1) = hist[-2]
    d1 = (p0 - p1) / (l0 - l1)
    if len(hist) == 2:
        return [p0, d1]
    (l2, p2) = hist[-3]
    d2 = (d1 - (p1 - p2) / (l1 - l2)) / (l0 - l2)
    return [p0, d1 + d2 * (l0 - l1), 2 * d2]


def steps(
    method: str,
    denoiser: Denoiser,
    schedule: MRSchedule,
    x: Tensor,
    mu: Tensor | float,
    times: Tensor,
    order: int = 1,
    generator: Generator = None,
    error: PredictionError | None = None,
    clip: tuple[float, float] | None = None,
) -> Iterator[MRStep]:
    """Yield one :class:`MRStep` per interval of ``times`` (descending, (N + 1,)), from x (n, d)
    at times[0]; one denoiser call per step. ``method`` (one of ``METHODS``):

    - "euler_maruyama": x + dt [theta (mu - x) - sigma^2 score] + sigma sqrt(|dt|) xi (dt < 0);
    - "euler_ode": x + dt [theta (mu - x) - sigma^2 score / 2];
    - "mrs_ode_noise" / "mrs_ode_data": MRS-``order`` (1-3) ODE updates (3) / (4) in eps^ / d;
    - "mrs_sde_data": MRS-``order`` (1-2) SDE update (5).

    ``generator``: the SDE noise xi (one draw per step); ``error``: a modelled network error;
    ``clip`` = (low, high): clamp x0^ to the data's range before it is used (only where the
    update uses x0^: not "mrs_ode_noise", whose eps^ has no range; then eps^ follows)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if order not in range(1, MAX_ORDER[method] + 1):
        raise ValueError(f"{method} has orders 1..{MAX_ORDER[method]}, got {order!r}")
    times = torch.as_tensor(times, dtype=F64)
    if times.dim() != 1 or len(times) < 2 or not bool((times.diff() < 0).all()):
        raise ValueError("times must be a 1-D grid of >= 2 strictly decreasing times")
    if not (0 < float(times[-1]) and float(times[0]) <= schedule.T):
        raise ValueError("times must lie in (0, T]: end at a small t_end > 0 (as time_grid does)")
    if clip is not None and (method == "mrs_ode_noise" or not clip[0] < clip[1]):
        raise ValueError(f"clip needs low < high and an x0^-using method, got {clip} ({method})")
    err = error or PredictionError(0.0)
    on = err.on or ("eps" if method == "mrs_ode_noise" else "x0")
    sch, lam, a, sb = schedule, schedule.lam(times), schedule.alpha(times), schedule.sigmabar(times)
    gen = torch.Generator().manual_seed(err.seed)

    def predict(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        """(x0^, eps^) with the modelled error (:class:`PredictionError`)."""
        x0 = denoiser(x, t)
        if err.std > 0 and on == "eps":
            eps = sch.eps_from_x0(x, x0, t, mu) + err.std * randn_like(x, gen)
            x0 = sch.x0_from_eps(x, eps, t, mu)
            if clip is None:
                return x0, eps
        elif err.std > 0:
            x0 = x0 + err.std * randn_like(x, gen)
        x0 = x0.clamp(*clip) if clip is not None else x0
        return x0, sch.eps_from_x0(x, x0, t, mu)

    def run(x: Tensor) -> Iterator[MRStep]:  # a generator apart, so steps() validates at once
        hist: list[tuple[float, Tensor]] = []
        for i in range(len(times) - 1):
            t, t_next = float(times[i]), float(times[i + 1])
            x0, eps = predict(x, t)
            if method in ("euler_maruyama", "euler_ode"):
                dt, score = t_next - t, sch.score_from_eps(eps, t)
                th, g2 = float(sch.theta(t)), float(sch.sigma(t)) ** 2
                share = 1.0 if method == "euler_maruyama" else 0.5
                x_next = x + dt * (th * (mu - x) - share * g2 * score)
                if method == "euler_maruyama":
                    x_next = x_next + math.sqrt(g2 * abs(dt)) * randn_like(x, generator)
            else:
                noise_pred = method == "mrs_ode_noise"
                hist = (hist + [(float(lam[i]), eps if noise_pred else x0 - mu)])[-order:]
                p, h = _taylor(hist), lam[i + 1] - lam[i]
                factor, c = _ei_coefficients(method, h, len(p))
                forcing = sum(cj * pj for cj, pj in zip(c, p, strict=True))
                gain = -sb[i + 1] if noise_pred else a[i + 1]
                y = float(sb[i + 1] / sb[i] * factor) * (x - mu) + float(gain) * forcing
                if method == "mrs_sde_data":
                    std = float(sb[i + 1] * (-torch.expm1(-2 * h)).sqrt())
                    y = y + std * randn_like(x, generator)
                x_next = mu + y
            yield MRStep(i, t, t_next, x, x0, x_next, i + 1)
            x = x_next

    return run(x)


def _ei_coefficients(method: str, h: Tensor, k: int) -> tuple[Tensor, list[float]]:
    """(y_s's factor beyond sigmabar_t / sigmabar_s, [c_0 .. c_{k-1}]) of the MRS updates:
    alpha_t / alpha_s = (sigmabar_t / sigmabar_s) e^h for noise prediction."""
    if method == "mrs_ode_noise":
        return torch.exp(h), [float(h ** (j + 1) * phi(j + 1, h)) for j in range(k)]
    if method == "mrs_ode_data":
        return torch.ones_like(h), [float(h ** (j + 1) * phi(j + 1, -h)) for j in range(k)]
    return torch.exp(-h), [float((2 * h) ** (j + 1) * phi(j + 1, -2 * h) / 2**j) for j in range(k)]


@collected(steps, start="x", after="error", denoise_end=False)
def sample(arguments: dict[str, Any], x: Tensor, states: Tensor | None) -> Solution:
    """Run :func:`steps` to times[-1] (same parameters, ``trajectory`` after ``error``):
    ``solvers.Solution`` (x (n, d), trajectory (N + 1, n, d) or None, times, nfe).
    ``denoise_end``: return x0^(x, t_end) instead (one more NFE)."""
    times = arguments["times"]
    nfe = len(times) - 1
    if arguments["denoise_end"]:
        x, nfe = arguments["denoiser"](x, float(times[-1])), nfe + 1
    return Solution(x, states, torch.as_tensor(times), nfe)
