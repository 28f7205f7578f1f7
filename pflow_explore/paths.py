"""Noise schedules and interpolants: x_t = alpha(t) x0 + sigma(t) z, z ~ N(0, I).

The diffusion convention: t in [0, 1], t = 0 is data, t = 1 is noise. The flow modules
(``interpolants``, ``flow_matching``, ``theory.rectified_flow``) put the source at t = 0
and the data at t = 1, as their papers do: to convert, use ``1 - t``.

Each path gives alpha(t), sigma(t) and their exact time derivatives (tested against
autograd). From those, any x0-prediction (denoiser) D(x, t) = E[x0 | x_t = x] turns into
the probability-flow ODE velocity and the score:

    z_hat    = (x - alpha D) / sigma
    v(x, t)  = alpha'(t) D + sigma'(t) z_hat                        (PF-ODE dx/dt)
    s(x, t)  = grad log p_t(x) = (alpha D - x) / sigma^2

All methods accept a float or a tensor t and broadcast elementwise.

Time convention: diffusion (t = 0 data, t = 1 noise; sampling runs from t = 1 down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def _t(t: float | Tensor) -> Tensor:
    return t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float64)


def _expand(c: Tensor, x: Tensor) -> Tensor:
    """Broadcast a per-sample coefficient c of shape () or (B,) against x of shape (B, ...)."""
    c = c.to(dtype=x.dtype, device=x.device)
    return c.reshape(c.shape + (1,) * (x.dim() - c.dim())) if c.dim() else c


class Path:
    """x_t = alpha(t) x0 + sigma(t) z. Subclasses define the four coefficient functions."""

    name = "path"

    def alpha(self, t: float | Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: float | Tensor) -> Tensor:
        raise NotImplementedError

    def d_alpha(self, t: float | Tensor) -> Tensor:
        raise NotImplementedError

    def d_sigma(self, t: float | Tensor) -> Tensor:
        raise NotImplementedError

    # ---- derived quantities -------------------------------------------------------------
    def sample(self, x0: Tensor, t: float | Tensor, z: Tensor) -> Tensor:
        """x_t = alpha(t) x0 + sigma(t) z; x0, z: (B, ...), t: () or (B,)."""
        t = _t(t)
        return _expand(self.alpha(t), x0) * x0 + _expand(self.sigma(t), x0) * z

    def log_snr(self, t: float | Tensor) -> Tensor:
        """lambda(t) = log(alpha^2 / sigma^2), decreasing in t."""
        t = _t(t)
        return 2 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def velocity_from_denoiser(self, x: Tensor, d: Tensor, t: float | Tensor) -> Tensor:
        """PF-ODE velocity dx/dt = alpha' D + sigma' (x - alpha D) / sigma. x, d: (B, ...)."""
        t = _t(t)
        a, s = _expand(self.alpha(t), x), _expand(self.sigma(t), x)
        da, ds = _expand(self.d_alpha(t), x), _expand(self.d_sigma(t), x)
        return da * d + ds * (x - a * d) / s

    def score_from_denoiser(self, x: Tensor, d: Tensor, t: float | Tensor) -> Tensor:
        """Tweedie: grad log p_t(x) = (alpha D - x) / sigma^2. x, d: (B, ...)."""
        t = _t(t)
        a, s = _expand(self.alpha(t), x), _expand(self.sigma(t), x)
        return (a * d - x) / s**2

    def velocity_from_noise(self, x: Tensor, eps: Tensor, t: float | Tensor) -> Tensor:
        """PF-ODE velocity from a noise prediction eps = E[z | x_t = x]. x, eps: (B, ...)."""
        t = _t(t)
        a, s = _expand(self.alpha(t), x), _expand(self.sigma(t), x)
        d = (x - s * eps) / a
        return self.velocity_from_denoiser(x, d, t)

    def drift_and_diffusion(self, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """(f(t), g(t)^2) of the forward SDE dx = f x dt + g dW with these marginals.

        f = alpha'/alpha, g^2 = 2 sigma sigma' - 2 f sigma^2 (Kingma et al. 2021).
        """
        t = _t(t)
        a, s, da, ds = self.alpha(t), self.sigma(t), self.d_alpha(t), self.d_sigma(t)
        f = da / a
        return f, 2 * s * ds - 2 * f * s**2

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


@dataclass(repr=False)
class VPLinear(Path):
    """Variance preserving with linear beta (DDPM / Song et al. 2021).

    alpha(t) = exp(-t^2 (b_max - b_min) / 4 - t b_min / 2), sigma = sqrt(1 - alpha^2).
    alpha(1) = exp(-5.025) ~ 0.0066 with the defaults: abar_T is kept, never set to 0.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    name = "vp_linear"

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t: float | Tensor) -> Tensor:
        return torch.exp(self._log_alpha(_t(t)))

    def sigma(self, t: float | Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(2 * self._log_alpha(_t(t))))

    def beta(self, t: float | Tensor) -> Tensor:
        """beta(t) = b_min + t (b_max - b_min) = -2 d log alpha / dt."""
        return self.beta_min + _t(t) * (self.beta_max - self.beta_min)

    def d_alpha(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return -0.5 * self.beta(t) * self.alpha(t)

    def d_sigma(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        a = self.alpha(t)
        return -a * self.d_alpha(t) / self.sigma(t)


@dataclass(repr=False)
class VPCosine(Path):
    """Variance preserving cosine schedule (Nichol & Dhariwal 2021).

    alpha(t) = cos(pi/2 (t + s)/(1 + s)) / cos(pi/2 s/(1 + s)), sigma = sqrt(1 - alpha^2).
    alpha(1) = 0 exactly; use t < 1 for the PF-ODE start (sigma' blows up at t = 0).
    """

    s: float = 0.008
    name = "vp_cosine"

    def _phase(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * (t + self.s) / (1 + self.s)

    def alpha(self, t: float | Tensor) -> Tensor:
        c0 = math.cos(0.5 * math.pi * self.s / (1 + self.s))
        return torch.cos(self._phase(_t(t))) / c0

    def sigma(self, t: float | Tensor) -> Tensor:
        return torch.sqrt(torch.clamp(1 - self.alpha(t) ** 2, min=0.0))

    def d_alpha(self, t: float | Tensor) -> Tensor:
        c0 = math.cos(0.5 * math.pi * self.s / (1 + self.s))
        return -torch.sin(self._phase(_t(t))) * 0.5 * math.pi / (1 + self.s) / c0

    def d_sigma(self, t: float | Tensor) -> Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)


class Exploding(Path):
    """A variance-exploding path: alpha = 1, x_t = x0 + sigma(t) z (VE, EDM, NoiseLevel)."""

    def alpha(self, t: float | Tensor) -> Tensor:
        return torch.ones_like(_t(t))

    def d_alpha(self, t: float | Tensor) -> Tensor:
        return torch.zeros_like(_t(t))


@dataclass(repr=False)
class VE(Exploding):
    """Variance exploding (Song et al. 2021): alpha = 1, sigma(t) = s_min (s_max/s_min)^t."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    name = "ve"

    def sigma(self, t: float | Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _t(t)

    def d_sigma(self, t: float | Tensor) -> Tensor:
        return self.sigma(t) * math.log(self.sigma_max / self.sigma_min)


@dataclass(repr=False)
class NoiseLevel(Exploding):
    """The noise level as the time (EDM's choice sigma(t) = t): alpha = 1, sigma = t, t >= 0.

    Unbounded (t runs up to sigma_max, 80 in EDM): the time axis of consistency models and
    CTM, whose jumps G(x_t, t, s) are written in noise levels (:mod:`pflow_explore.consistency`).
    """

    name = "noise_level"

    def sigma(self, t: float | Tensor) -> Tensor:
        return _t(t).clone()

    def d_sigma(self, t: float | Tensor) -> Tensor:
        return torch.ones_like(_t(t))


@dataclass(repr=False)
class EDM(Exploding):
    """EDM / Karras et al. 2022: alpha = 1 and sigma runs along the Karras ramp

    sigma(t) = (s_min^(1/rho) + t (s_max^(1/rho) - s_min^(1/rho)))^rho,

    so a uniform grid in t is the Karras sigma grid (:func:`karras_sigmas`).
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    name = "edm"

    def _ramp(self, t: Tensor) -> Tensor:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return lo + t * (hi - lo)

    def sigma(self, t: float | Tensor) -> Tensor:
        return self._ramp(_t(t)) ** self.rho

    def d_sigma(self, t: float | Tensor) -> Tensor:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return self.rho * self._ramp(_t(t)) ** (self.rho - 1) * (hi - lo)

    def t_of_sigma(self, sigma: float | Tensor) -> Tensor:
        """Inverse of sigma(t)."""
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (_t(sigma) ** (1 / self.rho) - lo) / (hi - lo)


@dataclass(repr=False)
class Linear(Path):
    """Linear interpolant of rectified flow / flow matching: alpha = 1 - t, sigma = t.

    The PF-ODE velocity is v = z - x0 in expectation: straight lines for a single pair.
    """

    name = "linear"

    def alpha(self, t: float | Tensor) -> Tensor:
        return 1 - _t(t)

    def sigma(self, t: float | Tensor) -> Tensor:
        return _t(t) * 1.0

    def d_alpha(self, t: float | Tensor) -> Tensor:
        return -torch.ones_like(_t(t))

    def d_sigma(self, t: float | Tensor) -> Tensor:
        return torch.ones_like(_t(t))


@dataclass(repr=False)
class Trigonometric(Path):
    """Trigonometric interpolant (Albergo & Vanden-Eijnden): alpha = cos(pi t/2), sigma = sin."""

    name = "trigonometric"

    def alpha(self, t: float | Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * _t(t))

    def sigma(self, t: float | Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * _t(t))

    def d_alpha(self, t: float | Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * _t(t))

    def d_sigma(self, t: float | Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * _t(t))


PATHS: dict[str, type[Path]] = {
    cls.name: cls for cls in (VPLinear, VPCosine, VE, NoiseLevel, EDM, Linear, Trigonometric)
}


def get_path(name: str, **kwargs: float) -> Path:
    """Build a path by name (``PATHS`` keys); an unknown name lists the valid ones."""
    if name not in PATHS:
        raise ValueError(f"unknown path {name!r}; valid paths: {', '.join(PATHS)}")
    return PATHS[name](**kwargs)


def karras_sigmas(
    n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> Tensor:
    """The EDM sampling grid: n decreasing sigmas from sigma_max to sigma_min, then 0.

    sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, shape (n + 1,).
    """
    if n < 2:
        raise ValueError(f"karras_sigmas needs n >= 2 steps, got {n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sig, torch.zeros(1, dtype=torch.float64)])
