"""Chapter 01 painters: the experiment estimators on cases with known answers (the exact
Gaussian denoiser in place of the network), the presets, and a tiny end-to-end run
(prepare -> cache -> run -> claims -> figures), each named experiment also run alone.
The EDM method (preconditioning, loss, Heun sampler, teleportation) is tested in
tests/test_edm.py."""

from __future__ import annotations

import math
from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch

from pflow_explore.chapters import painters as P
from pflow_explore.claims import Claim
from pflow_explore.edm import heun_nfe
from pflow_explore.paths import karras_sigmas
from pflow_explore.theory.gaussian_flow import GaussianFlow
from pflow_explore.training import fit

F64 = torch.float64


def random_gaussian(d: int, seed: int) -> GaussianFlow:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=gen, dtype=F64)
    cov = a @ a.T / d + 0.05 * torch.eye(d, dtype=F64)
    return GaussianFlow(torch.randn(d, generator=gen, dtype=F64), cov)


def noise(n: int, d: int, seed: int, sigma_max: float = 80.0) -> torch.Tensor:
    return sigma_max * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---- the chapter's estimators (the EDM method itself: tests/test_edm.py) ----------------
def test_closed_form_error_is_tiny_and_sees_a_wrong_flow():
    g = random_gaussian(6, seed=7)
    sigmas = karras_sigmas(10)
    x_T = noise(3, 6, seed=8)
    assert P.closed_form_error(g, x_T, sigmas) < 1e-7
    wrong = g.rescaled(1.1)  # eigenvalues x 1.21: its closed form solves another ODE
    wrong.ve_velocity = g.ve_velocity  # type: ignore[method-assign]
    assert P.closed_form_error(wrong, x_T, sigmas) > 1e-3


# ---- estimators ---------------------------------------------------------------------------
def test_explained_share_of_the_gaussian_is_one_and_of_a_scaled_one_known():
    g = random_gaussian(6, seed=9)
    x0 = g.sample(300, torch.Generator().manual_seed(10))
    sig = torch.tensor([0.1, 1.0, 10.0], dtype=F64)
    one = P.explained_share(g.ve_denoiser, g, x0, sig, torch.Generator().manual_seed(0))
    torch.testing.assert_close(one, torch.ones(3, dtype=F64))
    # D = mu + a (D_G - mu): share = 1 - (1 - a)^2 / a^2 whatever sigma and the data
    for a in (0.5, 2.0, 0.8):

        def scaled(x: torch.Tensor, s: float, a: float = a) -> torch.Tensor:
            return g.mean + a * (g.ve_denoiser(x, s) - g.mean)

        share = P.explained_share(scaled, g, x0, sig, torch.Generator().manual_seed(0))
        torch.testing.assert_close(share, torch.full((3,), 1 - (1 - a) ** 2 / a**2, dtype=F64))


def test_sigma_star_scans_down_from_the_largest_sigma():
    sig = torch.tensor([0.01, 0.1, 1.0, 10.0, 80.0])
    assert P.sigma_star(torch.tensor([1.0, 0.2, 0.95, 0.99, 1.0]), sig) == 1.0
    assert P.sigma_star(torch.tensor([1.0, 0.95, 0.95, 0.99, 0.5]), sig) is None
    assert P.sigma_star(torch.ones(5), sig) == pytest.approx(0.01)
    # order of the grid does not matter
    assert P.sigma_star(torch.tensor([1.0, 0.99, 0.95, 0.2, 1.0]), sig.flip(0)) == 1.0


def test_crossing_of_the_gaussian_share_curve_is_sqrt_lambda():
    lam = torch.tensor([4.0, 1.0, 0.09], dtype=F64)
    sigmas = karras_sigmas(64)[:-1]
    shares = (lam / (lam + sigmas[:, None] ** 2)).sqrt()  # f_k, written out here
    cross = P.crossing(shares, sigmas)
    torch.testing.assert_close(cross, lam.sqrt(), rtol=5e-3, atol=0)
    flat = torch.cat([torch.full((64, 1), 0.9), torch.full((64, 1), 0.1)], 1).double()
    both = P.crossing(flat, sigmas)
    assert float(both[0]) == pytest.approx(80.0) and math.isnan(float(both[1]))


def test_perturbation_and_emergence_with_the_exact_denoiser_follow_the_theory():
    g = random_gaussian(5, seed=11)
    x_T = noise(64, 5, seed=12)
    sigmas = karras_sigmas(48)
    p = P.perturbation_experiment(
        g.ve_denoiser, g, x_T, sigmas, (0, 2), kick=0.3, sigma_data=0.7, indices=(5, 20, 35)
    )
    lam = g.eigenvalues[[0, 2]]
    predicted = (lam[:, None] / (lam[:, None] + p.sigmas_t[None] ** 2)).sqrt()
    torch.testing.assert_close(p.predicted, predicted)
    torch.testing.assert_close(p.gain, predicted, rtol=2e-2, atol=0)
    torch.testing.assert_close(p.along, predicted, rtol=2e-2, atol=0)
    torch.testing.assert_close(p.delta, 0.3 * (0.49 + p.sigmas_t**2).sqrt())
    e = P.feature_emergence(g.ve_denoiser, g, x_T, karras_sigmas(64), 4)
    torch.testing.assert_close(e.crossing_learned, g.eigenvalues[:4].sqrt(), rtol=2e-2, atol=0)
    torch.testing.assert_close(e.crossing_gaussian, g.eigenvalues[:4].sqrt(), rtol=2e-2, atol=0)


def test_fit_gaussian_guards_the_pixel_range():
    x = torch.rand(200, 16, generator=torch.Generator().manual_seed(13)) * 2 - 1
    g = P.fit_gaussian(x)
    torch.testing.assert_close(g.mean, x.double().mean(0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        P.fit_gaussian((x + 1) / 2)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        P.fit_gaussian(3 * x)
    # the card's trap, done right: fit in [0, 1], rescale by 2 x - 1
    back = GaussianFlow.from_samples(((x + 1) / 2).flatten(1)).rescaled(2.0, -1.0)
    torch.testing.assert_close(back.mean, g.mean)
    torch.testing.assert_close(back.cov, g.cov)


def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="net must be"):
        P.settings("tiny", net="transformer")
    with pytest.raises(ValueError, match="skip_fractions"):
        P.settings("tiny", skip_fractions=(0.1, 0.2))
    with pytest.raises(ValueError, match="n_steps"):
        P.settings("tiny", n_steps=1)
    with pytest.raises(ValueError, match="image_size"):
        P.settings("tiny", image_size=10)


# ---- presets ------------------------------------------------------------------------------
def test_gpu_preset_builds_and_takes_one_training_step_on_cpu():
    s = replace(P.SETTINGS["gpu"], batch=4)  # same code path, a batch a CPU does at once
    train, test = P.dataset(s)
    assert train.shape[1] == 32 * 32 and len(train) == 8 * 1438 and len(test) == 8 * 359
    loss_fn, sd = P.denoiser_loss_fn(s, train, torch.device("cpu"))
    model = P.make_denoiser(s, sd)
    assert model.image_shape == (1, 32, 32)
    before = [p.detach().clone() for p in model.parameters()]
    result = fit(model, loss_fn, steps=1, lr=s.lr, ema_decay=s.ema_decay, progress=False)
    assert math.isfinite(result.losses[0])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert model(train[:2], 1.0).shape == (2, 1024)


def test_tiny_run_end_to_end_and_from_the_cache(data_dir):
    s = P.settings("tiny")
    P.prepare(s)
    assert list((data_dir / "cache" / "painters").glob("denoiser-*.pt"))
    r = P.run(s)
    assert r.from_cache and r.trained_seconds == 0.0 == r.fit.seconds
    assert r.sigmas.shape == (s.n_steps + 1,)
    assert r.share.learned.shape == r.share.ideal.shape == (s.n_share_sigmas,)
    assert list(r.seconds) == [
        "fit and train",
        "closed form vs ODE",
        "explained share",
        "trajectories",
        "perturbation",
        "teleportation",
        "feature emergence",
    ]
    assert r.pair.learned.shape == (s.n_steps + 1, s.n_paths, 64)
    assert r.teleport.nfe.tolist() == [heun_nfe(10, k) for k in r.teleport.skipped.tolist()]
    # each named experiment alone gives what run() gave (own seed streams, no hidden state)
    m = P.setup(s)
    alone = P.run_teleportation(m)
    torch.testing.assert_close(alone.fd, r.teleport.fd, rtol=0, atol=0)
    assert alone.fd_floor == r.teleport.fd_floor
    torch.testing.assert_close(P.run_explained_share(m).ideal, r.share.ideal, rtol=0, atol=0)
    torch.testing.assert_close(P.run_perturbation(m).change, r.perturbation.change)
    x = torch.randn(3, 64)
    assert r.denoiser(x, 0.5).shape == (3, 64)
    cs = P.claims(r)
    assert len(cs) >= 6 and all(isinstance(c, Claim) and c.scale == "tiny" for c in cs)
    assert cs[0].holds  # closed form vs ODE does not depend on training
    figs = P.figures(r)
    assert {"explained_share", "feature_emergence", "teleportation", "perturbation"} <= set(figs)
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(P.preview(), go.Figure)
