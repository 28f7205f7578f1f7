"""Chapter 06 ctmsr: settings, the exact problem's references, seeded training, the gpu
preset's model for one training step on the CPU, a tiny end-to-end run, and negative
controls for the claims (each fed a wrong input, or an untrained model, must fail). The
method is tested in tests/test_super_resolution.py and tests/theory/test_super_resolution.py."""

from __future__ import annotations

import copy
from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch

from pflow_explore import super_resolution as sr
from pflow_explore.chapters import ctmsr as C
from pflow_explore.claims import Claim
from pflow_explore.training import FitResult

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="diffusion_nfe"):
        C.settings("tiny", diffusion_nfe=(1, 4))
    with pytest.raises(ValueError, match="n_large"):
        C.settings("tiny", n_large=3)
    with pytest.raises(ValueError, match="divisible"):
        C.settings("tiny", factor=3)
    with pytest.raises(ValueError, match="distance"):
        C.settings("tiny", distance="lpips")
    with pytest.raises(ValueError, match="n_eval"):
        C.settings("tiny", n_eval=400)


def test_exact_problem_references_are_ordered():
    s = C.settings("tiny")
    prob, up = C.exact_problem(s)
    b = sr.exact_map_batch(prob, up, sr.SRPath(s.sigma_max), 1000, torch.Generator().manual_seed(0))
    err = {n: C.rms(b.squared_error(prob.euler_map(b.x_1, b.y, b.lr_up, 1.0, n))) for n in (3, 16)}
    assert err[16] < err[3] < C.rms(b.squared_error(b.mean))  # more Euler steps, closer to f*
    assert C.checkpoints(s)[-1] == s.exact_steps and len(C.checkpoints(s)) >= 3


def test_gpu_preset_models_take_one_training_step_on_cpu():
    s = replace(C.SETTINGS["gpu"], batch=2)
    assert s.net == "unet" and s.factor == 4 and s.image_size == 64
    train = C.images(s, "train")[:6]
    pairs, path, gen = sr.degraded_pairs(train, C.degradation(s)), sr.SRPath(1.0), torch.Generator()
    ct = C.make_model(s, "consistency")
    loss = sr.consistency_objective(pairs, path, 2, gen.manual_seed(0), 10, dtm_weight=1.0)(ct, 0)
    loss.backward()
    assert torch.isfinite(loss) and ct.backbone.net.conv_in.weight.grad is not None
    diff = C.make_model(s, "diffusion")
    loss = sr.diffusion_objective(pairs, 2, gen.manual_seed(1))(diff, 0)
    loss.backward()
    assert torch.isfinite(loss)


def test_training_is_seeded_whatever_ran_before(data_dir, monkeypatch):
    s = C.settings("tiny", steps=2, dtm_steps=2)
    weights = []
    for i, draw in enumerate((0, 5)):
        monkeypatch.setenv("PFLOW_DATA", str(data_dir / f"run{i}"))
        torch.manual_seed(draw)
        torch.rand(draw + 1)
        fits = C.train_images(s)
        assert not fits[C.CT].from_cache
        weights.append([p.detach().clone() for p in fits[C.DTM].model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_tiny_run_end_to_end(tiny_results):
    s, r = tiny_results
    assert all(f.from_cache for f in r.images.fits.values())  # prepare trained, run loaded
    assert list(r.exact.errors) == list(C.labels(s))
    assert all(len(v) == len(r.exact.steps) for v in r.exact.errors.values())
    labels = {C.INPUT, C.L1, C.CT, C.LONGER, C.DTM} | {
        C.diffusion_label(n) for n in s.diffusion_nfe
    }
    assert set(r.images.psnr) == labels == set(r.images.latency) == set(r.images.fd)
    assert r.images.examples["truth"].shape == (8, 1, 8, 8)
    assert r.images.examples[C.CT]._base is None or r.images.examples[C.CT].numel() == 8 * 64
    cs = C.claims(r)
    assert len(cs) == 8 and all(isinstance(c, Claim) and c.scale == "tiny" for c in cs)
    figs = C.figures(r)
    assert set(figs) == {"exact_error", "spread", "quality", "fd_latency", "examples"}
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(C.preview(), go.Figure)
    assert list(r.seconds) == ["exact problem", "images"]


def test_exact_claims_fail_for_an_untrained_model_and_a_flat_curve(tiny_results):
    s, r = tiny_results
    e = r.exact
    untrained = {k: [e.untrained] * len(v) for k, v in e.errors.items()}
    rows = C.claims_exact(replace(e, errors=untrained, control=e.untrained), s)
    assert [c.holds for c in rows] == [False, False, False, False]
    # a model at the exact map would pass the first two rows
    perfect = {k: [*v[:-1], 0.0] for k, v in e.errors.items()}
    assert all(c.holds for c in C.claims_exact(replace(e, errors=perfect), s)[:2])


def test_image_claims_fail_on_wrong_inputs(tiny_results):
    s, r = tiny_results
    d = r.images
    # L1 against itself is not sharper; a sharper stand-in at equal PSNR is
    assert not C.claim_sharper(d, s, one_step=C.L1).holds
    fake = replace(d, sharpness=dict(d.sharpness, **{C.CT: d.sharpness[C.L1] + 1.0}),
                   psnr=dict(d.psnr, **{C.CT: d.psnr[C.L1]}))  # fmt: skip
    assert C.claim_sharper(fake, s).holds
    # DTM rows: swapping the two Frechet distances flips the ordering's verdict
    rows = {c.name: c for c in C.claims_images(d, s)}
    swapped = replace(d, fd=dict(d.fd, **{C.DTM: d.fd[C.LONGER], C.LONGER: d.fd[C.DTM]}))
    name = "DTM improves the distribution match (Frechet distance)"
    assert not (rows[name].holds and C.claims_images(swapped, s)[1].holds)
    # latency: a one-step model as slow as the multi-step one fails
    slow = replace(
        d, latency=dict(d.latency, **{C.CT: d.latency[C.diffusion_label(max(s.diffusion_nfe))]})
    )
    assert not C.claims_images(slow, s)[2].holds


def test_an_untrained_one_step_model_does_not_match_the_baseline(tiny_results):
    s, r = tiny_results
    fits = dict(r.images.fits)
    fresh = C.make_model(s, "consistency").eval()
    with torch.no_grad():  # an untrained net far from the identity: outputs of size ~3
        for p in fresh.parameters():
            p.mul_(10.0)
    fits[C.DTM] = FitResult(fresh, [], 0.0)
    fits[C.L1] = FitResult(copy.deepcopy(fits[C.L1].model), [], 0.0)
    d = C.evaluate_images(s, fits)
    row = C.claims_images(d, s)[3]
    assert not row.holds and "worse" in row.measured
