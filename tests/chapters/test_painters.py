"""Chapter 01 painters: the presets, and a tiny end-to-end run
(prepare -> cache -> run -> claims -> figures), each named experiment also run alone.
The EDM method (preconditioning, loss, Heun sampler, teleportation) is tested in
tests/test_edm.py, the data's Gaussian (its pixel-range guard) and the estimators that
probe the denoiser against the Gaussian theory in tests/test_gaussian_probes.py."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch

from pflow_explore.chapters import painters as P
from pflow_explore.claims import Claim
from pflow_explore.edm import heun_nfe
from pflow_explore.theory.gaussian_flow import GaussianFlow
from pflow_explore.training import fit

ROOT = Path(__file__).resolve().parents[2]


# ---- settings ------------------------------------------------------------------------------
def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="net must be"):
        P.settings("tiny", net="transformer")
    with pytest.raises(ValueError, match="skip_fractions"):
        P.settings("tiny", skip_fractions=(0.1, 0.2))
    with pytest.raises(ValueError, match="n_steps"):
        P.settings("tiny", n_steps=1)
    with pytest.raises(ValueError, match="image_size"):
        P.settings("tiny", image_size=10)
    with pytest.raises(ValueError, match="n_fd must be"):
        P.settings("tiny", n_fd=8)
    with pytest.raises(ValueError, match="kick_features"):
        P.settings("tiny", kick_features=(64,))


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
    assert cs[1].holds and cs[1].name.startswith("identity check")  # nor does this one
    # the training-dependent rows (their negative controls: test_painters_controls.py)
    names = [c.name for c in cs]
    assert any(n.startswith("outline first") for n in names)
    assert any(n.startswith("learned paths follow") for n in names)
    assert any(n.startswith("kicks along outline") for n in names)
    figs = P.figures(r)
    assert {"explained_share", "feature_emergence", "teleportation", "perturbation"} <= set(figs)
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(P.preview(), go.Figure)


def test_probes_are_stored_per_weights_and_recomputed_for_other_weights(data_dir):
    s = P.settings("tiny")
    m = P.setup(s)
    first = P.run_perturbation(m)
    assert len(list((data_dir / "cache" / "painters").glob("perturbation-*.pt"))) == 1
    again = P.run_perturbation(m)  # loaded: the same numbers
    torch.testing.assert_close(again.change, first.change, rtol=0, atol=0)
    with torch.no_grad():
        next(m.denoiser.parameters()).mul_(1.5)  # other weights: measured again
    moved = P.run_perturbation(m)
    assert len(list((data_dir / "cache" / "painters").glob("perturbation-*.pt"))) == 2
    assert not torch.allclose(moved.change, first.change)


def test_a_fresh_clone_loads_the_cpu_probes_it_ships(tmp_path, monkeypatch):
    """The dashboard's first open at cpu scale measures none of the stored probes again."""
    shutil.copytree(ROOT / "data" / "shipped" / "painters", tmp_path / "shipped" / "painters")
    monkeypatch.setenv("PFLOW_DATA", str(tmp_path))

    def never(*args, **kwargs):
        raise AssertionError("a shipped probe was measured again")

    for name in ("closed_form_error", "explained_share", "perturbation_experiment"):
        monkeypatch.setattr(P, name, never)
    monkeypatch.setattr(P, "feature_emergence", never)
    m = P.setup(P.settings("cpu"))
    assert m.from_cache
    assert P.run_closed_form(m) < 1e-5
    assert P.run_explained_share(m).learned.shape == (m.settings.n_share_sigmas,)
    assert P.run_perturbation(m).change.shape[0] == len(m.settings.kick_features)
    assert P.run_emergence(m).features.shape == (m.settings.n_features,)


def test_the_learners_jump_drives_teleportation_and_a_wrong_one_changes_the_samples():
    """exercises.painters.LearnerJump: the learner's two functions replace the GaussianFlow
    in edm.heun_steps; the reference functions give the same samples as the flow itself, a
    solution that forgets to shrink (x(sigma) = x_T) gives different ones."""
    from pflow_explore.edm import edm_sampler
    from pflow_explore.exercises import painters as ex
    from pflow_explore.paths import karras_sigmas

    gen = torch.Generator().manual_seed(11)
    _, _, mean, lam, u = ex.gaussian_inputs(gen)
    flow = GaussianFlow.from_spectrum(mean, lam, u)
    x_T = (mean + 20 * torch.randn(64, 5, generator=gen, dtype=torch.float64)).float()
    sigmas = karras_sigmas(8, 0.01, 20.0).to(torch.float64)
    model = flow.ve_denoiser  # an exact "trained" denoiser: only the jump differs
    ref = edm_sampler(model, x_T, sigmas, 4, flow, trajectory=True)
    mine = edm_sampler(
        model, x_T, sigmas, 4, ex.LearnerJump(flow, ex.gaussian_denoiser, ex.ve_solution), True
    )
    assert mine.x.dtype == x_T.dtype
    torch.testing.assert_close(mine.trajectory, ref.trajectory)
    torch.testing.assert_close(mine.denoised, ref.denoised)
    wrong = ex.LearnerJump(flow, ex.gaussian_denoiser, lambda x_T, s_T, s, *_: x_T)
    off = edm_sampler(model, x_T, sigmas, 4, wrong).x
    assert (off - ref.x).abs().max() > 0.1
