"""CODE and SDEdit with a Gaussian prior: every step is linear, so the edit is a Gaussian
channel and the fidelity-realism trade-off is closed form (card 08_code_editing, "Exact
case").

Time convention: diffusion (t = 0 data, t = 1 noise) on a variance-preserving path,
x_t = alpha x0 + sigma z (:mod:`pflow_explore.paths`); alpha, sigma below are those of the
editing level t_L.

Prior N(mu, Sigma), Sigma = U diag(lam) U^T. In the eigen-coordinates u = U^T (x - mu)
everything is diagonal; per coordinate (lam one eigenvalue):

- encoding by the exact PF-ODE to t_L keeps the standardized coordinate:
  u_t = r u_0 with r = sqrt((alpha^2 lam + sigma^2) / lam) (decoding divides by r);
- the score at t_L is -a u_t, a = 1 / (alpha^2 lam + sigma^2) (u_t measured from alpha mu),
  so a Langevin step with e = step_scale sigma^2 is u <- b u + sqrt(2 e) z, b = 1 - e a:
  after K noisy steps and one noise-free step the mean is b^(K+1) u_t and the variance
  b^2 c_K, c_K = 2 e (1 - b^(2K)) / (1 - b^2) (c_{k+1} = b^2 c_k + 2 e, c_0 = 0);
- so CODE maps u_0 to g u_0 + sqrt(v) z with gain g = b^(K+1), noise v = b^2 c_K / r^2
  (K = 0: g = 1, v = 0, the ODE round trip is the identity). As K grows, g -> 0 and
  v -> b^2 lam 2 / (2 - e a): the prior, up to the step's discretization bias
  (and the noise-free last step's shrinkage b^2);
- SDEdit noises with fresh z and samples the exact reverse SDE, i.e. the posterior
  p(x0 | x_t = alpha y + sigma z): g = alpha^2 lam / (alpha^2 lam + sigma^2) and
  v = g^2 sigma^2 / alpha^2 + lam sigma^2 / (alpha^2 lam + sigma^2); one knob (t_L) moves
  both, where CODE has two (t_L for the gain's ceiling, K and the step for the rest).

A corrupted input y = x + n, x ~ prior, n ~ N(m, s^2 I) independent, then gives
(:func:`tradeoff`) E|out - y|^2 (fidelity to the input), E|out - x|^2 (distance to the
clean image) and the Frechet distance of the outputs' law to the prior (realism).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

F64 = torch.float64

__all__ = ["EditMap", "GaussianPrior", "code_map", "sdedit_map", "tradeoff", "tradeoff_curves"]


@dataclass
class EditMap:
    """A diagonal Gaussian channel in eigen-coordinates: out = g u + sqrt(v) z; gain g (d,)
    and noise variance v (d,), float64."""

    gain: Tensor
    noise: Tensor


def _check(lam: Tensor, alpha: float, sigma: float) -> Tensor:
    lam = torch.as_tensor(lam, dtype=F64)
    if (lam <= 0).any() or not (0 < alpha <= 1 and 0 < sigma < 1):
        raise ValueError("need lam > 0, 0 < alpha <= 1 and 0 < sigma < 1")
    return lam


def code_map(
    lam: Tensor, alpha: float, sigma: float, step_scale: float, n_langevin: int
) -> EditMap:
    """CODE's channel (module docstring) for eigenvalues lam (d,) at a level (alpha, sigma)."""
    lam = _check(lam, alpha, sigma)
    if n_langevin == 0:
        return EditMap(torch.ones_like(lam), torch.zeros_like(lam))
    v_t = alpha**2 * lam + sigma**2
    e = step_scale * sigma**2
    b = 1 - e / v_t
    b2 = b**2
    k = n_langevin
    geom = torch.where((1 - b2).abs() > 1e-12, (1 - b2**k) / (1 - b2), torch.full_like(b2, k))
    c_k = 2 * e * geom
    r2 = v_t / lam
    return EditMap(b ** (k + 1), b2 * c_k / r2)


def sdedit_map(lam: Tensor, alpha: float, sigma: float) -> EditMap:
    """SDEdit's channel with the exact reverse SDE: the posterior p(x0 | alpha y + sigma z)."""
    lam = _check(lam, alpha, sigma)
    v_t = alpha**2 * lam + sigma**2
    g = alpha**2 * lam / v_t
    return EditMap(g, g**2 * sigma**2 / alpha**2 + lam * sigma**2 / v_t)


def tradeoff(lam: Tensor, m: Tensor, s: float, channel: EditMap) -> dict[str, float]:
    """For y = x + n, x ~ N(mu, diag lam), n ~ N(m, s^2 I) (m (d,) in eigen-coordinates):

    to_input = sum (g - 1)^2 (lam + s^2 + m^2) + v            E|out - y|^2
    to_clean = sum (g - 1)^2 lam + g^2 (s^2 + m^2) + v        E|out - x|^2
    frechet  = sum (g m)^2 + (sqrt(g^2 (lam + s^2) + v) - sqrt(lam))^2

    (the W2^2 between the outputs' law N(mu + g m, diag(g^2 (lam + s^2) + v)) and the prior)."""
    lam, m = torch.as_tensor(lam, dtype=F64), torch.as_tensor(m, dtype=F64)
    g, v = channel.gain, channel.noise
    to_input = ((g - 1) ** 2 * (lam + s**2 + m**2) + v).sum()
    to_clean = ((g - 1) ** 2 * lam + g**2 * (s**2 + m**2) + v).sum()
    var_out = g**2 * (lam + s**2) + v
    frechet = ((g * m) ** 2 + (var_out.sqrt() - lam.sqrt()) ** 2).sum()
    return dict(to_input=float(to_input), to_clean=float(to_clean), frechet=float(frechet))


def tradeoff_curves(
    path: object,
    lam: Tensor,
    m: Tensor,
    s: float,
    levels: tuple[float, ...],
    step_scale: float,
    ks: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256),
) -> dict[str, dict[str, list[float]]]:
    """:func:`tradeoff` along curves: CODE over K at each level t_L of ``levels`` (label
    "CODE t_L=..."), SDEdit over t_L = 0.05 .. 0.95 ("SDEdit"); ``path`` gives alpha(t),
    sigma(t). Each curve: {"to_input", "to_clean", "frechet": [...], "K" or "t_L": [...]}."""
    out: dict[str, dict[str, list[float]]] = {}

    def level(t: float) -> tuple[float, float]:
        return float(path.alpha(t)), float(path.sigma(t))

    for t_L in levels:
        rows = [tradeoff(lam, m, s, code_map(lam, *level(t_L), step_scale, k)) for k in ks]
        out[f"CODE t_L={t_L:g}"] = {key: [r[key] for r in rows] for key in rows[0]} | {
            "K": list(ks)
        }
    grid = [0.05 * i for i in range(1, 20)]
    rows = [tradeoff(lam, m, s, sdedit_map(lam, *level(t))) for t in grid]
    out["SDEdit"] = {key: [r[key] for r in rows] for key in rows[0]} | {"t_L": grid}
    return out


class GaussianPrior:
    """N(mu, Sigma) in d dimensions: the channels in data coordinates.

    :meth:`moments` gives the mean (n, d) and covariance (d, d) of the edit of inputs y (n, d):
    mean = mu + U diag(g) U^T (y - mu), cov = U diag(v) U^T."""

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        self.mean = torch.as_tensor(mean, dtype=F64)
        self.cov = torch.as_tensor(cov, dtype=F64)
        self.lam, self.u = torch.linalg.eigh(self.cov)

    @classmethod
    def random(cls, d: int, seed: int) -> GaussianPrior:
        """mu ~ N(0, I / 4), eigenvalues in (0.05, 0.6), a random rotation."""
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64))
        lam = 0.05 + 0.55 * torch.rand(d, generator=gen, dtype=F64)
        return cls(0.5 * torch.randn(d, generator=gen, dtype=F64), q @ torch.diag(lam) @ q.T)

    def to_eigen(self, x: Tensor) -> Tensor:
        """u = U^T (x - mu) for rows x (n, d)."""
        return (x.to(F64) - self.mean) @ self.u

    def moments(self, channel: EditMap, y: Tensor) -> tuple[Tensor, Tensor]:
        """(mean (n, d), cov (d, d)) of the channel's output for inputs y (n, d)."""
        mean = self.mean + (self.to_eigen(y) * channel.gain) @ self.u.T
        return mean, self.u @ torch.diag(channel.noise) @ self.u.T
