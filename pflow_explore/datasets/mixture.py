"""Gaussian mixtures: samples, exact log-density and exact score.

p(x) = sum_k w_k N(x; mu_k, C_k), weights w (K,), means mu (K, d), covariances C (K, d, d).
The time-dependent versions (the mixture pushed through a noise path) live in
``pflow_explore.theory.mixtures``; this module is the data at t = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class GaussianMixture:
    """sum_k w_k N(mu_k, C_k). weights: (K,), means: (K, d), covs: (K, d, d), all float64."""

    weights: Tensor
    means: Tensor
    covs: Tensor

    def __post_init__(self) -> None:
        self.weights = torch.as_tensor(self.weights, dtype=torch.float64)
        self.means = torch.as_tensor(self.means, dtype=torch.float64)
        self.covs = torch.as_tensor(self.covs, dtype=torch.float64)
        if self.means.dim() != 2:
            raise ValueError(f"means must be (K, d), got shape {tuple(self.means.shape)}")
        k, d = self.means.shape
        if self.weights.shape != (k,):
            raise ValueError(f"weights must be ({k},), got {tuple(self.weights.shape)}")
        if self.covs.shape != (k, d, d):
            raise ValueError(f"covs must be ({k}, {d}, {d}), got {tuple(self.covs.shape)}")
        if (self.weights < 0).any() or float(self.weights.sum()) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        if not torch.allclose(self.covs, self.covs.transpose(-1, -2)):
            raise ValueError("covariances must be symmetric")
        if (torch.linalg.eigvalsh(self.covs) <= 0).any():
            raise ValueError("covariances must be positive definite (every eigenvalue > 0)")
        self.weights = self.weights / self.weights.sum()

    @classmethod
    def isotropic(cls, means: Tensor, std: float | Tensor, weights: Tensor | None = None):
        """Components N(mu_k, std_k^2 I); std a float or (K,)."""
        means = torch.as_tensor(means, dtype=torch.float64)
        k, d = means.shape
        std = torch.as_tensor(std, dtype=torch.float64).expand(k)
        covs = std[:, None, None] ** 2 * torch.eye(d, dtype=torch.float64)
        w = torch.full((k,), 1.0 / k) if weights is None else weights
        return cls(w, means, covs)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def mean(self) -> Tensor:
        """E[x], shape (d,)."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Cov[x] = sum_k w_k (C_k + mu_k mu_k^T) - m m^T, shape (d, d)."""
        m = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covs)
        second = second + torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        return second - torch.outer(m, m)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n samples, shape (n, d), float32; also see :meth:`sample_with_labels`."""
        return self.sample_with_labels(n, generator)[0]

    def sample_with_labels(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(x (n, d) float32, component index (n,) int64)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:  # torch.multinomial refuses to draw zero samples
            return torch.empty(0, self.dim), torch.empty(0, dtype=torch.int64)
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covs)  # (K, d, d)
        x = self.means[labels] + torch.einsum("nij,nj->ni", chol[labels], z)
        return x.float(), labels

    def component_log_probs(self, x: Tensor) -> Tensor:
        """log w_k + log N(x; mu_k, C_k), shape (n, K). x: (n, d)."""
        x = x.to(torch.float64)
        chol = torch.linalg.cholesky(self.covs)  # (K, d, d)
        diff = x[:, None, :] - self.means[None]  # (n, K, d)
        sol = torch.linalg.solve_triangular(
            chol[None].expand(x.shape[0], -1, -1, -1), diff[..., None], upper=False
        ).squeeze(-1)
        maha = (sol**2).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        return torch.log(self.weights)[None] - 0.5 * (
            maha + logdet[None] + self.dim * math.log(2 * math.pi)
        )

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x), shape (n,). x: (n, d)."""
        return torch.logsumexp(self.component_log_probs(x), dim=-1)

    def responsibilities(self, x: Tensor) -> Tensor:
        """Posterior component probabilities r_k(x) = p(k | x), shape (n, K)."""
        return torch.softmax(self.component_log_probs(x), dim=-1)

    def score(self, x: Tensor) -> Tensor:
        """grad log p(x) = sum_k r_k(x) C_k^{-1} (mu_k - x), shape (n, d), float64."""
        x = x.to(torch.float64)
        r = self.responsibilities(x)
        diff = self.means[None] - x[:, None, :]  # (n, K, d)
        per = torch.linalg.solve(self.covs[None], diff[..., None]).squeeze(-1)
        return (r[..., None] * per).sum(1)
