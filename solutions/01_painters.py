"""Worked answers to the exercises of chapter 01 (painters), one function per exercise
(checked by tests/test_solutions.py against ``pflow_explore.exercises.painters``).

Time convention: noise level (sigma; sigma = 0 is the data)."""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_denoiser(x: Tensor, sigma: float, mean: Tensor, lam: Tensor, U: Tensor) -> Tensor:
    """Exercise 1: D(x; sigma) = mu + sum_k lam_k / (lam_k + sigma^2) c_k u_k, with the
    eigen-coordinates c = U^T (x - mu); x (n, d)."""
    c = (x - mean) @ U
    return mean + (lam / (lam + sigma**2) * c) @ U.T


def ve_solution(
    x_T: Tensor, sigma_T: float, sigma: float, mean: Tensor, lam: Tensor, U: Tensor
) -> Tensor:
    """Exercise 2: each eigen-coordinate of x_T - mu shrunk by
    sqrt((lam_k + sigma^2) / (lam_k + sigma_T^2)); x_T (n, d)."""
    c = (x_T - mean) @ U
    return mean + (torch.sqrt((lam + sigma**2) / (lam + sigma_T**2)) * c) @ U.T


def emergence_sigma(lam: Tensor, level: float) -> Tensor:
    """Exercise 3: solve sqrt(lam / (lam + sigma^2)) = level for sigma:
    sigma = sqrt(lam (1 / level^2 - 1)); lam (d,)."""
    return torch.sqrt(lam * (1 / level**2 - 1))
