"""CODE (van Delft, Martorella & Alahi 2024): blind editing of a corrupted image with a
diffusion prior by probability-flow inversion, Langevin at one noise level and decoding;
SDEdit (Meng et al. 2022) as the baseline (card 08_code_editing).

Time convention: diffusion (t = 0 data, t = 1 noise) on a variance-preserving path of
:mod:`pflow_explore.paths`, x_t = alpha_t x0 + sigma_t z, alpha_t^2 + sigma_t^2 = 1
(abar_t = alpha_t^2 in DDPM's notation). An eps-model eps(x, t) ~ E[z | x_t = x] takes x
(n, ...) and a 0-d float t of x's dtype (the convention of :mod:`pflow_explore.adjoint`).

The method, one function per step:

- :func:`ddim_step`: the deterministic PF-ODE step (DDIM, eta = 0; Euler in rho = sigma /
  alpha), x' = alpha' x0_hat + sigma' eps, x0_hat = (x - sigma eps) / alpha; the same
  formula runs up (inversion, t' > t) and down (decoding, t' < t);
- :func:`invert` and :func:`decode`: DDIM from t_min up to the editing level t_L, and
  back from t_L to 0, on :func:`time_grid`;
- :func:`langevin_at`: K Langevin steps at the fixed level t_L along the score
  s = -eps / sigma_t with step e = step_scale sigma_t^2 (card, "Traps": unscaled steps
  diverge, since the score's Lipschitz constant grows like 1 / sigma^2),

      x <- x + e s(x) + sqrt(2 e) z,                                                (1)

  then one noise-free step x <- x + e s(x);
- :func:`clip_bound`: the confidence interval of clean data in [-1, 1] at level t,
  |x_t| <= alpha_t + eta sigma_t per pixel, which holds with probability >= 2 Phi(eta) - 1
  (|alpha x0 + sigma z| <= alpha + sigma |z|). With ``eta`` set, latents are clamped to it
  after every inversion and Langevin step (and the input to [-1, 1] first): pixel values
  no clean image can produce are discarded;
- :func:`code_edit` composes them; :func:`sdedit` noises the input to t_L with fresh noise
  and runs the stochastic DDPM sampler (DDIM with eta = 1) back to 0.

Shapes: inputs (n, ...) in the model's layout (flat (n, d) here), float32 or float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pflow_explore import paths

__all__ = [
    "EditResult",
    "clip_bound",
    "clip_rate",
    "code_edit",
    "coverage",
    "ddim_step",
    "ddim_update",
    "ddpm_step",
    "decode",
    "invert",
    "langevin_at",
    "langevin_update",
    "sdedit",
    "time_grid",
]

EpsModel = Callable[[Tensor, Tensor], Tensor]
T_MIN = 1e-3  # the inversion starts here: eps(x, 0) = E[z | x_0] is not defined


def _ab(path: paths.Path, t: float, like: Tensor) -> tuple[Tensor, Tensor]:
    tt = torch.as_tensor(float(t), dtype=torch.float64)
    return path.alpha(tt).to(like), path.sigma(tt).to(like)


def _eps(model: EpsModel, x: Tensor, t: float) -> Tensor:
    return model(x, torch.tensor(float(t), dtype=x.dtype, device=x.device))


def time_grid(t_L: float, n_steps: int, t_min: float = T_MIN) -> Tensor:
    """Increasing times (n_steps + 1,) float64 from t_min to t_L, uniform in t (as the DDIM
    papers' grids)."""
    if not t_min < t_L <= 1 or n_steps < 1:
        raise ValueError(f"need t_min={t_min} < t_L={t_L} <= 1 and n_steps >= 1, got {n_steps}")
    return torch.linspace(t_min, t_L, n_steps + 1, dtype=torch.float64)


def clip_bound(path: paths.Path, t: float, eta: float) -> float:
    """alpha_t + eta sigma_t: the per-pixel confidence bound on |x_t| for data in [-1, 1]."""
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    tt = torch.as_tensor(float(t), dtype=torch.float64)
    return float(path.alpha(tt) + eta * path.sigma(tt))


def coverage(eta: float) -> float:
    """2 Phi(eta) - 1 = erf(eta / sqrt 2): the bound's guaranteed coverage (eta = 2: 0.954)."""
    return math.erf(eta / math.sqrt(2))


def clip_rate(x: Tensor, bound: float) -> float:
    """Share of the entries of x outside [-bound, bound]."""
    return float((x.abs() > bound).double().mean())


def _clamp(x: Tensor, path: paths.Path, t: float, eta: float | None) -> Tensor:
    if eta is None:
        return x
    b = clip_bound(path, t, eta)
    return x.clamp(-b, b)


def ddim_update(
    x: Tensor, eps: Tensor, alpha: float, sigma: float, alpha_next: float, sigma_next: float
) -> Tensor:
    """x' = alpha' (x - sigma eps) / alpha + sigma' eps: one DDIM step (n, ...) given eps."""
    return alpha_next * (x - sigma * eps) / alpha + sigma_next * eps


def langevin_update(
    x: Tensor, eps: Tensor, sigma: float, step_scale: float, z: Tensor | None
) -> Tensor:
    """One step of (1): x + e (-eps / sigma) + sqrt(2 e) z, e = step_scale sigma^2; z None:
    the noise-free step. Shapes (n, ...)."""
    e = step_scale * sigma**2
    x = x - e * eps / sigma
    return x if z is None else x + math.sqrt(2 * e) * z


def ddim_step(model: EpsModel, path: paths.Path, x: Tensor, t: float, t_next: float) -> Tensor:
    """:func:`ddim_update` with eps = model(x, t) (n, ...)."""
    a, s = _ab(path, t, x)
    a2, s2 = _ab(path, t_next, x)
    return ddim_update(x, _eps(model, x, t), a, s, a2, s2)


def ddpm_step(
    model: EpsModel,
    path: paths.Path,
    x: Tensor,
    t: float,
    t_next: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One ancestral step t -> t' < t (DDIM with eta = 1, the DDPM posterior
    q(x_{t'} | x_t, x0_hat)): x' = alpha' x0_hat + sqrt(sigma'^2 - c^2) eps + c z,
    c^2 = sigma'^2 (1 - (alpha / alpha')^2) / sigma^2."""
    a, s = _ab(path, t, x)
    a2, s2 = _ab(path, t_next, x)
    eps = _eps(model, x, t)
    x0 = (x - s * eps) / a
    c2 = (s2**2 * (1 - (a / a2) ** 2) / s**2).clamp_min(0)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return a2 * x0 + (s2**2 - c2).clamp_min(0).sqrt() * eps + c2.sqrt() * z


def invert(
    model: EpsModel,
    path: paths.Path,
    x0: Tensor,
    t_L: float,
    n_steps: int,
    eta: float | None = None,
) -> Tensor:
    """x_{t_L} (n, ...) from x0 by DDIM up the grid :func:`time_grid`; ``eta``: clamp the
    input to [-1, 1] and every latent to +-(alpha_t + eta sigma_t)."""
    g = time_grid(t_L, n_steps).tolist()
    x = x0.clamp(-1, 1) if eta is not None else x0
    for t, t_next in zip(g[:-1], g[1:], strict=True):
        x = _clamp(ddim_step(model, path, x, t, t_next), path, t_next, eta)
    return x


def decode(model: EpsModel, path: paths.Path, x_L: Tensor, t_L: float, n_steps: int) -> Tensor:
    """x_0 (n, ...) from x_{t_L} by DDIM down the grid :func:`time_grid` and a last step
    to t = 0 (no clipping: the decoder is the plain PF-ODE)."""
    g = time_grid(t_L, n_steps).tolist()[::-1] + [0.0]
    x = x_L
    for t, t_next in zip(g[:-1], g[1:], strict=True):
        x = ddim_step(model, path, x, t, t_next)
    return x


def langevin_at(
    model: EpsModel,
    path: paths.Path,
    x: Tensor,
    t: float,
    n_steps: int,
    step_scale: float,
    generator: torch.Generator | None = None,
    eta: float | None = None,
) -> Tensor:
    """(1) ``n_steps`` times at level t with e = step_scale sigma_t^2 and s = -eps / sigma_t,
    then one noise-free step; ``eta``: clamp after each step. n_steps = 0: x unchanged."""
    if n_steps < 0 or not step_scale >= 0:
        raise ValueError(f"need n_steps >= 0 and step_scale >= 0, got {n_steps}, {step_scale}")
    if n_steps == 0:
        return x
    s = float(path.sigma(torch.as_tensor(float(t), dtype=torch.float64)))
    for k in range(n_steps + 1):
        eps = _eps(model, x, t)
        z = None
        if k < n_steps:  # the last step is noise-free
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = _clamp(langevin_update(x, eps, s, step_scale, z), path, t, eta)
    return x


@dataclass
class EditResult:
    """The edited images x0 (n, ...), the latent after inversion and after Langevin, and the
    share of the inverted latent's entries held at the clipping bound (0 without clipping)."""

    x0: Tensor
    inverted: Tensor
    latent: Tensor
    clipped: float


def code_edit(
    model: EpsModel,
    path: paths.Path,
    y: Tensor,
    t_L: float,
    n_langevin: int,
    step_scale: float,
    n_steps: int,
    generator: torch.Generator | None = None,
    eta: float | None = None,
) -> EditResult:
    """CODE on the guidance images y (n, ...): :func:`invert` to t_L (``n_steps`` DDIM
    steps), :func:`langevin_at` (``n_langevin`` steps), :func:`decode`. ``eta``: the
    confidence-interval clipping (None: off)."""
    with torch.no_grad():
        inv = invert(model, path, y, t_L, n_steps, eta)
        b = clip_bound(path, t_L, eta) if eta is not None else math.inf
        clipped = float((inv.abs() >= b * (1 - 1e-6)).double().mean())
        lat = langevin_at(model, path, inv, t_L, n_langevin, step_scale, generator, eta)
        return EditResult(decode(model, path, lat, t_L, n_steps), inv, lat, clipped)


def sdedit(
    model: EpsModel,
    path: paths.Path,
    y: Tensor,
    t_L: float,
    n_steps: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SDEdit on y (n, ...): x_{t_L} = alpha y + sigma z, then ``n_steps`` ancestral steps
    (:func:`ddpm_step`) down to t_min and a last DDIM step to 0."""
    with torch.no_grad():
        a, s = _ab(path, t_L, y)
        z = torch.randn(y.shape, generator=generator, dtype=y.dtype).to(y.device)
        x = a * y + s * z
        g = time_grid(t_L, n_steps).tolist()[::-1]
        for t, t_next in zip(g[:-1], g[1:], strict=True):
            x = ddpm_step(model, path, x, t, t_next, generator)
        return ddim_step(model, path, x, g[-1], 0.0)
