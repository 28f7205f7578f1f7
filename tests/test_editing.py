"""editing.py: CODE and SDEdit with the exact eps of a Gaussian prior against the closed form
of theory/code_gaussian.py (Monte Carlo, random priors), the confidence bound's coverage,
clipping, and that a wrong channel is caught."""

from __future__ import annotations

import math

import pytest
import torch

from pflow_explore import editing, paths
from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.theory import code_gaussian as cg
from pflow_explore.theory.mixtures import MixtureFlow

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64
PATH = paths.VPLinear()


def exact_eps(prior: cg.GaussianPrior):
    flow = MixtureFlow(GaussianMixture(torch.ones(1), prior.mean[None], prior.cov[None]), PATH)
    return lambda x, t: -PATH.sigma(t.double()).to(x) * flow.score(x, t.double())


def z_scores(out, mean, cov, n):
    var = cov.diagonal()
    zm = float(((out.mean(1) - mean) / (var / n).sqrt()).abs().max())
    se = ((var[:, None] * var[None] + cov**2) / n).sqrt()
    zc = max(float(((o.T.cov() - cov) / se).abs().max()) for o in out)
    return zm, zc


@pytest.mark.parametrize("seed,t_L,k,step", [(1, 0.3, 5, 0.3), (2, 0.5, 12, 0.15)])
def test_code_and_sdedit_match_the_closed_form(seed, t_L, k, step):
    prior = cg.GaussianPrior.random(3, seed)
    gen = torch.Generator().manual_seed(seed)
    y0 = prior.mean + 0.8 * torch.randn(3, 3, generator=gen, dtype=F64)
    n = 2000
    y = y0.repeat_interleave(n, 0)
    a, s = float(PATH.alpha(t_L)), float(PATH.sigma(t_L))
    eps = exact_eps(prior)
    code = editing.code_edit(eps, PATH, y, t_L, k, step, 120, gen).x0.reshape(3, n, 3)
    mean, cov = prior.moments(cg.code_map(prior.lam, a, s, step, k), y0)
    zm, zc = z_scores(code, mean, cov, n)
    assert zm < 4.5 and zc < 4.5, (zm, zc)
    if t_L < 0.4:  # one Langevin step short (gain b^K): far outside the noise
        b = cg.code_map(prior.lam, a, s, step, k).gain ** (1 / (k + 1))
        wrong, _ = prior.moments(cg.EditMap(b**k, cov.diagonal()), y0)
        assert z_scores(code, wrong, cov, n)[0] > 6
    sde = editing.sdedit(eps, PATH, y, t_L, 150, gen).reshape(3, n, 3)
    mean, cov = prior.moments(cg.sdedit_map(prior.lam, a, s), y0)
    zm, zc = z_scores(sde, mean, cov, n)
    assert zm < 4.5 and zc < 4.5, (zm, zc)


def test_zero_langevin_steps_round_trip_the_ode():
    prior = cg.GaussianPrior.random(2, 3)
    y = prior.mean + torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    err = [
        float((editing.code_edit(exact_eps(prior), PATH, y, 0.4, 0, 0.2, n).x0 - y).abs().max())
        for n in (25, 200)
    ]
    assert err[1] < 0.05 and err[1] < err[0] / 4, err


def test_clip_bound_covers_forward_noised_data_in_the_box():
    gen = torch.Generator().manual_seed(0)
    x0 = 2 * torch.rand(200_000, dtype=F64, generator=gen) - 1
    for t in (0.05, 0.3, 0.7):
        for eta in (1.0, 2.0):
            a, s = PATH.alpha(t), PATH.sigma(t)
            x = a * x0 + s * torch.randn(x0.shape, dtype=F64, generator=gen)
            rate = editing.clip_rate(x, editing.clip_bound(PATH, t, eta))
            assert rate <= 1 - editing.coverage(eta)
    assert math.isclose(editing.coverage(2.0), 0.9545, abs_tol=1e-4)
    # the bound is attained for data at the box's edge: the Gaussian tail
    x = PATH.alpha(0.7) + PATH.sigma(0.7) * torch.randn(200_000, dtype=F64, generator=gen)
    rate = float((x > editing.clip_bound(PATH, 0.7, 1.0)).double().mean())
    assert abs(rate - (1 - editing.coverage(1.0)) / 2) < 0.005


def test_clipping_holds_latents_inside_the_bound():
    prior = cg.GaussianPrior.random(4, 5)
    y = 3 * torch.randn(50, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    r = editing.code_edit(exact_eps(prior), PATH, y, 0.3, 4, 0.2, 10, eta=1.0)
    b = editing.clip_bound(PATH, 0.3, 1.0)
    assert float(r.latent.abs().max()) <= b + 1e-12 and r.clipped > 0
    assert editing.code_edit(exact_eps(prior), PATH, y, 0.3, 4, 0.2, 10).clipped == 0.0


def test_updates_are_the_formulas():
    x, eps, z = torch.randn(3, 4, 2, dtype=F64).unbind(0)
    out = editing.langevin_update(x, eps, 0.5, 0.2, z)
    e = 0.2 * 0.25
    assert torch.allclose(out, x - e * eps / 0.5 + math.sqrt(2 * e) * z)
    assert torch.allclose(editing.langevin_update(x, eps, 0.5, 0.2, None), x - e * eps / 0.5)
    up = editing.ddim_update(x, eps, 0.8, 0.6, 0.6, 0.8)
    assert torch.allclose(editing.ddim_update(up, eps, 0.6, 0.8, 0.8, 0.6), x)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="eta"):
        editing.clip_bound(PATH, 0.3, -1.0)
    with pytest.raises(ValueError, match="t_L"):
        editing.time_grid(0.0, 5)
    with pytest.raises(ValueError, match="n_steps"):
        editing.langevin_at(lambda x, t: x, PATH, torch.zeros(2, 2), 0.3, -1, 0.2)
