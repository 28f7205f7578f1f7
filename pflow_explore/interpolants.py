"""Stochastic interpolants (Albergo, Boffi & Vanden-Eijnden 2023, docs/papers.md §02).

Between two densities rho0 and rho1 (x0 ~ rho0, x1 ~ rho1, z ~ N(0, I) independent),

    x_t = I(t, x0, x1) + gamma(t) z,    I(t, x0, x1) = a(t) x0 + b(t) x1,    t in [0, 1].

Endpoint conditions (tested): I(0) = x0, I(1) = x1 (a(0) = b(1) = 1, a(1) = b(0) = 0) and
gamma(0) = gamma(1) = 0, so x_t runs from rho0 to rho1. Two members are exceptions on
purpose: "mirror" has a = 0, b = 1 (I = x1 at every t, so it needs rho0 = rho1), and
"one_sided" is the linear interpolant with rho0 required to be N(0, I) (the diffusion-like
case, x0 plays the role of the noise; its gamma is 0 by default).

The regression targets of the paper: the velocity b(t, x) = E[d_t I + gamma'(t) z | x_t = x]
(:meth:`Interpolant.velocity_target` is the quantity inside the expectation) and the
score s(t, x) = -E[z | x_t = x] / gamma(t). gamma' is singular at t = 0, 1 for
gamma = sqrt(a t (1 - t)), but the product gamma gamma' = a (1 - 2t) / 2 is not, so every
gamma also gives :meth:`Gamma.gamma_dgamma` (the combination b = v - gamma gamma' s uses).

Note: this is *not* the noise-path convention of :mod:`pflow_explore.paths` (t = 0 data,
t = 1 noise): here t = 0 is rho0 (often the Gaussian) and t = 1 is rho1 (the target).

Every coefficient accepts a float (-> 0-d float64 tensor) or a tensor t (same dtype and
shape), t in [0, 1]; a t outside [0, 1] raises ValueError.

Time convention: flow (t = 0 is rho0, t = 1 is rho1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

F64 = torch.float64


def _t(t: float | Tensor) -> Tensor:
    """t as a tensor (a float becomes a 0-d float64 tensor), checked to lie in [0, 1]."""
    tt = t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=F64)
    if not tt.is_floating_point():
        tt = tt.to(F64)
    if not bool(torch.isfinite(tt).all()) or bool(((tt < 0) | (tt > 1)).any()):
        bad = tt[~torch.isfinite(tt) | (tt < 0) | (tt > 1)].flatten()[0].item()
        raise ValueError(f"t must lie in [0, 1], got {bad}")
    return tt


def _positive(value: float, name: str, need: str) -> float:
    """``value`` as a float, checked to be finite and > 0; ``need`` opens the error message."""
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{need}, got {name} = {v}")
    return v


def _col(c: Tensor, x: Tensor) -> Tensor:
    """Coefficient c of shape (), (n,) or (n, 1) as something that broadcasts over x (n, d)."""
    c = c.to(dtype=x.dtype, device=x.device)
    if c.dim() == 1:
        c = c[:, None]
    if c.dim() > 2 or (c.dim() == 2 and c.shape[1] != 1):
        raise ValueError(f"t must be a float, 0-d, (n,) or (n, 1); got shape {tuple(c.shape)}")
    return c


# ---- gamma: the latent noise amplitude --------------------------------------------------------
class Gamma:
    """gamma(t) >= 0 with gamma(0) = gamma(1) = 0. Subclasses define gamma, dgamma, gamma_dgamma."""

    name = "gamma"

    def gamma(self, t: float | Tensor) -> Tensor:
        raise NotImplementedError

    def dgamma(self, t: float | Tensor) -> Tensor:
        """gamma'(t) (may be infinite at t = 0, 1, as for the sqrt choice)."""
        raise NotImplementedError

    def gamma_dgamma(self, t: float | Tensor) -> Tensor:
        """gamma(t) gamma'(t) = (gamma^2)'/2, finite on all of [0, 1] for every choice here."""
        return self.gamma(t) * self.dgamma(t)

    def max(self) -> float:
        """max of gamma over [0, 1] (on a fine grid; exact for the symmetric choices here)."""
        grid = torch.cat([torch.linspace(0, 1, 2001, dtype=F64), torch.tensor([0.5], dtype=F64)])
        return float(self.gamma(grid).max())

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class SqrtGamma(Gamma):
    """gamma = sqrt(a t (1 - t)) (Brownian-bridge amplitude); gamma gamma' = a (1 - 2t) / 2.

    gamma' = a (1 - 2t) / (2 gamma) is infinite at t = 0, 1 (docs/papers.md). a > 0.
    """

    name = "sqrt"

    def __init__(self, a: float = 1.0) -> None:
        self.a = _positive(a, "a", "SqrtGamma needs a > 0 (gamma = sqrt(a t (1-t)))")

    def gamma(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return torch.sqrt(self.a * t * (1 - t))

    def dgamma(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return self.gamma_dgamma(t) / self.gamma(t)

    def gamma_dgamma(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return 0.5 * self.a * (1 - 2 * t)

    def max(self) -> float:
        return 0.5 * math.sqrt(self.a)


class QuadraticGamma(Gamma):
    """gamma = t (1 - t), gamma' = 1 - 2t."""

    name = "quadratic"

    def gamma(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return t * (1 - t)

    def dgamma(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return 1 - 2 * t

    def max(self) -> float:
        return 0.25


class SinSquaredGamma(Gamma):
    """gamma = sin^2(pi t), gamma' = pi sin(2 pi t). Reaches 1 at t = 1/2."""

    name = "sin2"

    def gamma(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return torch.sin(math.pi * t) ** 2

    def dgamma(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return math.pi * torch.sin(2 * math.pi * t)

    def max(self) -> float:
        return 1.0


class SigmoidGamma(Gamma):
    """Sigmoid-shaped bump (the official repository's "sigmoid" choice), f the sharpness:

    gamma = S(f (t - 1/2) + 1) - S(f (t - 1/2) - 1) - S(1 - f/2) + S(-1 - f/2),  S = sigmoid,

    which vanishes at t = 0 and (by S(-u) = 1 - S(u)) at t = 1. f > 0.
    """

    name = "sigmoid"

    def __init__(self, f: float = 10.0) -> None:
        self.f = _positive(f, "f", "SigmoidGamma needs sharpness f > 0")

    def gamma(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        u = self.f * (t - 0.5)
        shift = 1 / (1 + math.exp(self.f / 2 - 1)) - 1 / (1 + math.exp(1 + self.f / 2))
        return torch.sigmoid(u + 1) - torch.sigmoid(u - 1) - shift

    def dgamma(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        u = self.f * (t - 0.5)
        p, q = torch.sigmoid(u + 1), torch.sigmoid(u - 1)
        return self.f * (p * (1 - p) - q * (1 - q))


class ZeroGamma(Gamma):
    """gamma = 0: the deterministic interpolant x_t = I(t, x0, x1)."""

    name = "zero"

    def gamma(self, t: float | Tensor) -> Tensor:
        return torch.zeros_like(_t(t))

    dgamma = gamma_dgamma = gamma  # gamma' = gamma gamma' = 0 as well

    def max(self) -> float:
        return 0.0


GAMMAS: dict[str, type[Gamma]] = {
    cls.name: cls for cls in (SqrtGamma, QuadraticGamma, SinSquaredGamma, SigmoidGamma, ZeroGamma)
}


def get_gamma(name: str, **kw: float) -> Gamma:
    """Build a gamma by name (``GAMMAS`` keys: sqrt, quadratic, sin2, sigmoid, zero)."""
    if name not in GAMMAS:
        raise ValueError(f"unknown gamma {name!r}; valid gammas: {', '.join(GAMMAS)}")
    try:
        return GAMMAS[name](**kw)
    except TypeError as err:
        raise ValueError(f"gamma {name!r} does not take parameters {sorted(kw)}: {err}") from None


# ---- interpolants ------------------------------------------------------------------------------
class Interpolant:
    """x_t = a(t) x0 + b(t) x1 + gamma(t) z. Subclasses define a, b, da, db.

    Attributes: ``name``, ``gamma`` (a :class:`Gamma`), ``default_gamma`` (the gamma name used
    when none is given), ``rho0_constraint`` (None, "standard_normal" or "equals_rho1").
    Methods taking samples accept x0, x1, z of shape (n, d) and t a float, 0-d, (n,) or (n, 1)
    tensor (one time per row); results are (n, d) in the dtype of x0.
    """

    name = "interpolant"
    default_gamma = "sqrt"
    rho0_constraint: str | None = None

    def __init__(self, gamma: Gamma | str | None = None) -> None:
        if gamma is None:
            gamma = self.default_gamma
        self.gamma = get_gamma(gamma) if isinstance(gamma, str) else gamma
        if not isinstance(self.gamma, Gamma):
            raise ValueError(f"gamma must be a Gamma or one of {', '.join(GAMMAS)}, got {gamma!r}")

    def a(self, t: float | Tensor) -> Tensor:
        raise NotImplementedError

    def b(self, t: float | Tensor) -> Tensor:
        raise NotImplementedError

    def da(self, t: float | Tensor) -> Tensor:
        raise NotImplementedError

    def db(self, t: float | Tensor) -> Tensor:
        raise NotImplementedError

    # ---- on samples ------------------------------------------------------------------------
    def interpolate(self, t: float | Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        """I(t, x0, x1) = a(t) x0 + b(t) x1, (n, d)."""
        t = _t(t)
        return _col(self.a(t), x0) * x0 + _col(self.b(t), x0) * x1

    def dt_interpolate(self, t: float | Tensor, x0: Tensor, x1: Tensor) -> Tensor:
        """d_t I = a'(t) x0 + b'(t) x1, (n, d): the mean-velocity v regression target."""
        t = _t(t)
        return _col(self.da(t), x0) * x0 + _col(self.db(t), x0) * x1

    def sample(self, t: float | Tensor, x0: Tensor, x1: Tensor, z: Tensor) -> Tensor:
        """x_t = I(t, x0, x1) + gamma(t) z, (n, d)."""
        t = _t(t)
        return self.interpolate(t, x0, x1) + _col(self.gamma.gamma(t), x0) * z

    def velocity_target(self, t: float | Tensor, x0: Tensor, x1: Tensor, z: Tensor) -> Tensor:
        """d_t I + gamma'(t) z, (n, d): the quantity whose conditional mean is b(t, x_t).

        Only finite for t in (0, 1) when gamma' is singular at the ends (sqrt gamma).
        """
        t = _t(t)
        return self.dt_interpolate(t, x0, x1) + _col(self.gamma.dgamma(t), x0) * z

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gamma={self.gamma!r})"


class LinearInterpolant(Interpolant):
    """I = (1 - t) x0 + t x1."""

    name = "linear"

    def a(self, t: float | Tensor) -> Tensor:
        return 1 - _t(t)

    def b(self, t: float | Tensor) -> Tensor:
        return _t(t) * 1.0

    def da(self, t: float | Tensor) -> Tensor:
        return -torch.ones_like(_t(t))

    def db(self, t: float | Tensor) -> Tensor:
        return torch.ones_like(_t(t))


class TrigonometricInterpolant(Interpolant):
    """I = sqrt(1 - gamma^2) [cos(pi t/2) x0 + sin(pi t/2) x1]; needs gamma < 1 on [0, 1].

    a' = -gamma gamma' / sqrt(1 - gamma^2) cos(pi t/2) - pi/2 sqrt(1 - gamma^2) sin(pi t/2)
    (and likewise for b), written with gamma gamma' so it stays finite at t = 0, 1.
    gamma = 1 somewhere (sin2) would make a = b = 0 there with d_t I undefined: refused.
    """

    name = "trigonometric"

    def __init__(self, gamma: Gamma | str | None = None) -> None:
        super().__init__(gamma)
        top = self.gamma.max()
        if top >= 1.0 - 1e-9:
            raise ValueError(
                f"the trigonometric interpolant needs gamma(t) < 1 on [0, 1] "
                f"(it uses sqrt(1 - gamma^2)); {self.gamma!r} reaches {top:.4g}"
            )

    def _root(self, t: Tensor) -> Tensor:
        return torch.sqrt(1 - self.gamma.gamma(t) ** 2)

    def _root_rate(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """r = sqrt(1 - gamma^2) and r' = -gamma gamma' / r (finite at t = 0, 1)."""
        r = self._root(t)
        return r, -self.gamma.gamma_dgamma(t) / r

    def a(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return self._root(t) * torch.cos(0.5 * math.pi * t)

    def b(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return self._root(t) * torch.sin(0.5 * math.pi * t)

    def da(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        r, dr = self._root_rate(t)
        return dr * torch.cos(0.5 * math.pi * t) - 0.5 * math.pi * r * torch.sin(0.5 * math.pi * t)

    def db(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        r, dr = self._root_rate(t)
        return dr * torch.sin(0.5 * math.pi * t) + 0.5 * math.pi * r * torch.cos(0.5 * math.pi * t)


class EncoderDecoderInterpolant(Interpolant):
    """I = cos^2(pi t) (1[t < 1/2] x0 + 1[t >= 1/2] x1), default gamma sin^2(pi t).

    x0 is encoded into pure noise at t = 1/2 (a = b = 0, gamma = 1) and decoded into x1.
    a, b are C^1: a' = -pi sin(2 pi t) 1[t < 1/2] vanishes at t = 1/2.
    """

    name = "encoder_decoder"
    default_gamma = "sin2"

    def a(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return torch.where(t < 0.5, torch.cos(math.pi * t) ** 2, torch.zeros_like(t))

    def b(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return torch.where(t >= 0.5, torch.cos(math.pi * t) ** 2, torch.zeros_like(t))

    def da(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return torch.where(t < 0.5, -math.pi * torch.sin(2 * math.pi * t), torch.zeros_like(t))

    def db(self, t: float | Tensor) -> Tensor:
        t = _t(t)
        return torch.where(t >= 0.5, -math.pi * torch.sin(2 * math.pi * t), torch.zeros_like(t))


class OneSidedInterpolant(LinearInterpolant):
    """One-sided (diffusion-like): rho0 must be N(0, I); x_t = (1 - t) x0 + t x1 (+ gamma z).

    With gamma = 0 (the default) this is the flow-matching / rectified-flow path from noise;
    the latent z is redundant with the Gaussian x0.
    """

    name = "one_sided"
    default_gamma = "zero"
    rho0_constraint = "standard_normal"


class MirrorInterpolant(Interpolant):
    """Mirror: rho0 = rho1, I = x1 (a = 0, b = 1), x_t = x1 + gamma(t) z; default sqrt gamma.

    The exception to I(0) = x0: the endpoints agree only in law (rho0 = rho1).
    """

    name = "mirror"
    rho0_constraint = "equals_rho1"

    def a(self, t: float | Tensor) -> Tensor:
        return torch.zeros_like(_t(t))

    def b(self, t: float | Tensor) -> Tensor:
        return torch.ones_like(_t(t))

    da = db = a  # constant coefficients: a' = b' = 0 = a


INTERPOLANTS: dict[str, type[Interpolant]] = {
    cls.name: cls
    for cls in (
        LinearInterpolant,
        TrigonometricInterpolant,
        EncoderDecoderInterpolant,
        OneSidedInterpolant,
        MirrorInterpolant,
    )
}


def get_interpolant(
    name: str, gamma: str | Gamma | None = "sqrt", **gamma_kw: float
) -> Interpolant:
    """Build an interpolant by name (``INTERPOLANTS`` keys) with a gamma by name or object.

    gamma=None takes the interpolant's own default (``default_gamma``: sin2 for
    encoder_decoder, zero for one_sided, sqrt otherwise). gamma_kw go to the gamma
    (e.g. a=2.0 for sqrt). Raises ValueError for an unknown name, an unknown gamma, or a
    combination that is not defined (trigonometric with max gamma >= 1).
    """
    if name not in INTERPOLANTS:
        valid = ", ".join(INTERPOLANTS)
        raise ValueError(f"unknown interpolant {name!r}; valid interpolants: {valid}")
    cls = INTERPOLANTS[name]
    if gamma is None:
        gamma = cls.default_gamma
    if isinstance(gamma, str):
        gamma = get_gamma(gamma, **gamma_kw)
    elif gamma_kw:
        raise ValueError("gamma_kw only apply when gamma is given by name")
    return cls(gamma)
