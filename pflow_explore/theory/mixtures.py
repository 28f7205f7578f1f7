"""A Gaussian mixture pushed through a noise path: the exact teacher.

Data p0 = sum_k w_k N(mu_k, C_k) and a path x_t = alpha(t) x0 + sigma(t) z, z ~ N(0, I)
(``pflow_explore.paths``) give the marginal, again a Gaussian mixture,

    p_t(x) = sum_k w_k N(x; alpha mu_k, S_k(t)),      S_k(t) = alpha^2 C_k + sigma^2 I,

so its score, its denoiser E[x0 | x_t = x] and its probability-flow ODE velocity are
available in closed form. Chapters compare learned networks and samplers against them.

Why eigen-coordinates: with C_k = U_k diag(lambda_k) U_k^T, every S_k(t) is
U_k diag(alpha^2 lambda_k + sigma^2) U_k^T. One eigendecomposition per component, done
once, serves every t (also a different t per sample) with no matrix inverse and no
per-t factorisation; the variances v_k = alpha^2 lambda_k + sigma^2 >= sigma^2 keep it
well conditioned.

Dtypes: the arithmetic is float64; outputs have the dtype (and device) of ``x``, so
float32 samples get float32 answers and float64 inputs keep full precision (and autograd).

Time convention: diffusion (t = 0 data, t = 1 noise), through :mod:`pflow_explore.paths`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.paths import Path


class MixtureFlow:
    """Exact log-density, score, denoiser and PF-ODE velocity of p_t for a mixture p0.

    Shapes: x is (n, d); t is a float, a 0-d tensor or an (n,) tensor (one time per row).
    ``log_prob``, ``score`` and ``denoiser`` hold for every t where alpha and sigma are not
    both 0 (the covariances are positive definite, so sigma = 0 is fine: that is p0);
    ``velocity`` divides by sigma and needs sigma(t) > 0.
    """

    def __init__(self, mixture: GaussianMixture, path: Path) -> None:
        self.mixture = mixture
        self.path = path
        # lambda: (K, d) ascending eigenvalues, u: (K, d, d) eigenvectors as columns
        self._lam, self._u = torch.linalg.eigh(mixture.covs)

    def __repr__(self) -> str:
        return f"MixtureFlow(K={self.mixture.n_components}, d={self.mixture.dim}, {self.path!r})"

    # ---- helpers ------------------------------------------------------------------------
    def _coefficients(self, t: float | Tensor, n: int, device: torch.device) -> tuple[Tensor, ...]:
        """alpha, sigma as float64 of shape (m, 1, 1), m = 1 (shared t) or n (per-row t)."""
        t = torch.as_tensor(t, dtype=torch.float64, device=device)
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, n)):
            raise ValueError(f"t must be a float, a 0-d tensor or shape ({n},); got {t.shape}")
        t = t.reshape(-1)
        a, s = self.path.alpha(t), self.path.sigma(t)
        if ((a == 0) & (s == 0)).any():
            raise ValueError("alpha(t) and sigma(t) are both 0: p_t is a point mass")
        return a[:, None, None], s[:, None, None]

    def _check_x(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.mixture.dim:
            raise ValueError(f"x must be (n, {self.mixture.dim}), got {tuple(x.shape)}")
        return x.to(torch.float64)

    def _parts(self, x: Tensor, t: float | Tensor) -> tuple[Tensor, ...]:
        """Everything the formulas need, float64:

        y = U_k^T (x - alpha mu_k) (n, K, d), v = alpha^2 lambda_k + sigma^2 (m, K, d),
        alpha (m, 1, 1), and log w_k + log N(x; alpha mu_k, S_k) (n, K).
        """
        dev = x.device
        a, s = self._coefficients(t, x.shape[0], dev)
        mu, lam, u = self.mixture.means.to(dev), self._lam.to(dev), self._u.to(dev)
        y = torch.einsum("kji,nkj->nki", u, x[:, None, :] - a * mu[None])
        v = a**2 * lam[None] + s**2
        quad = (y**2 / v).sum(-1) + torch.log(v).sum(-1) + self.mixture.dim * math.log(2 * math.pi)
        logp = torch.log(self.mixture.weights.to(dev))[None] - 0.5 * quad
        return y, v, a, logp

    def _denoiser64(self, x: Tensor, t: float | Tensor) -> Tensor:
        y, v, a, logp = self._parts(x, t)
        lam, u = self._lam.to(x.device), self._u.to(x.device)
        # alpha C_k S_k^{-1} (x - alpha mu_k) = U_k diag(alpha lambda_k / v_k) y_k
        shift = torch.einsum("kij,nkj->nki", u, a * lam[None] * y / v)
        means = self.mixture.means.to(x.device)[None]
        return (torch.softmax(logp, dim=-1)[..., None] * (means + shift)).sum(1)

    # ---- public API ---------------------------------------------------------------------
    def component_log_probs(self, x: Tensor, t: float | Tensor) -> Tensor:
        """log w_k + log N(x; alpha mu_k, alpha^2 C_k + sigma^2 I), shape (n, K)."""
        return self._parts(self._check_x(x), t)[3].to(x.dtype)

    def log_prob(self, x: Tensor, t: float | Tensor) -> Tensor:
        """log p_t(x) = logsumexp_k [log w_k + log N(x; alpha mu_k, S_k)], shape (n,)."""
        return torch.logsumexp(self._parts(self._check_x(x), t)[3], dim=-1).to(x.dtype)

    def responsibilities(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Posterior component probabilities r_k(x, t) = p(k | x_t = x), shape (n, K)."""
        return torch.softmax(self._parts(self._check_x(x), t)[3], dim=-1).to(x.dtype)

    def score(self, x: Tensor, t: float | Tensor) -> Tensor:
        """grad_x log p_t(x) = sum_k r_k(x) S_k^{-1} (alpha mu_k - x), shape (n, d)."""
        x64 = self._check_x(x)
        y, v, _, logp = self._parts(x64, t)
        r = torch.softmax(logp, dim=-1)
        per = -torch.einsum("kij,nkj->nki", self._u.to(x.device), y / v)
        return (r[..., None] * per).sum(1).to(x.dtype)

    def denoiser(self, x: Tensor, t: float | Tensor) -> Tensor:
        """E[x0 | x_t = x], shape (n, d):

        D(x, t) = sum_k r_k(x) [mu_k + alpha C_k (alpha^2 C_k + sigma^2 I)^{-1} (x - alpha mu_k)]

        (the posterior mean of each Gaussian component, weighted by the responsibilities).
        Tweedie's formula ties it to the score: alpha D = x + sigma^2 grad log p_t(x).
        """
        return self._denoiser64(self._check_x(x), t).to(x.dtype)

    def velocity(self, x: Tensor, t: float | Tensor) -> Tensor:
        """PF-ODE velocity dx/dt = alpha' D + sigma' (x - alpha D) / sigma, shape (n, d).

        Integrating it from t = 1 towards t = 0 carries samples of p_1 to samples of p_t
        (the marginals are preserved). Needs sigma(t) > 0; raises ValueError otherwise.
        """
        x64 = self._check_x(x)
        t64 = torch.as_tensor(t, dtype=torch.float64, device=x.device)
        if not (self.path.sigma(t64) > 0).all():  # also catches NaN (t outside [0, 1])
            raise ValueError(
                "velocity needs sigma(t) > 0 (the PF-ODE divides by sigma); "
                f"stop the integration at a small t > 0 instead of t = {t64.min().item():g}"
            )
        d = self._denoiser64(x64, t64)
        return self.path.velocity_from_denoiser(x64, d, t64).to(x.dtype)

    def marginal(self, t: float | Tensor) -> GaussianMixture:
        """p_t as a GaussianMixture: weights w_k, means alpha mu_k, covs alpha^2 C_k + sigma^2 I.

        t must be a single time (float or 0-d tensor).
        """
        t = torch.as_tensor(t, dtype=torch.float64)
        if t.numel() != 1:
            raise ValueError(f"marginal needs a single time t, got shape {tuple(t.shape)}")
        a, s = self.path.alpha(t.reshape(())), self.path.sigma(t.reshape(()))
        if a == 0 and s == 0:
            raise ValueError("alpha(t) and sigma(t) are both 0: p_t is a point mass")
        eye = torch.eye(self.mixture.dim, dtype=torch.float64)
        m = self.mixture
        return GaussianMixture(m.weights, a * m.means, a**2 * m.covs + s**2 * eye)

    def sample(self, n: int, t: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
        """n samples of p_t, shape (n, d), float32: x = alpha(t) x0 + sigma(t) z, x0 ~ p0.

        t is a float, a 0-d tensor or an (n,) tensor (one time per sample).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        x0 = self.mixture.sample(n, generator).to(torch.float64)
        z = torch.randn(n, self.mixture.dim, generator=generator, dtype=torch.float64)
        a, s = self._coefficients(t, n, torch.device("cpu"))
        return (a[:, :, 0] * x0 + s[:, :, 0] * z).float()
