"""theory/consistency.py: the sympy CTM jump of Gaussian data against ODE integration."""

from __future__ import annotations

import sympy as sp
import torch

from pflow_explore.consistency import exact_jump
from pflow_explore.theory.consistency import ctm_jump_eigen, gaussian_jump, lam, t_next
from pflow_explore.theory.gaussian_flow import GaussianFlow


def test_derivation_checks():
    d = ctm_jump_eigen()
    assert d["lim minus denoiser"] == 0  # g(x, t, t) is the denoiser
    assert sp.simplify(d["variance after a gamma step"].rhs - (lam + t_next**2)) == 0


def test_gaussian_jump_matches_numerical_pf_ode_on_random_gaussians():
    for seed in range(3):
        flow = GaussianFlow.random(3, seed)
        gen = torch.Generator().manual_seed(seed)
        t = float(0.3 + 10 * torch.rand(1, generator=gen))
        x = flow.mean + (1 + t) * torch.randn(30, 3, generator=gen, dtype=torch.float64)
        for s in (0.0, 0.05, t / 2):
            numeric = exact_jump(flow.ve_denoiser, x, t, s)
            assert torch.allclose(gaussian_jump(flow, x, t, s), numeric, atol=1e-5), (seed, s)
