"""Chapter 11 nsg_video: settings, the theory check and its claims (wrong values fail), the
gpu preset's denoiser and kernel taking one training step on the CPU, a tiny end-to-end run,
and negative controls for the detection claims (fakes replaced by fresh real videos make
the detector and the gains come out NO; a miscalibrated test fails its band). The method
is tested in tests/test_nsg.py, tests/test_two_sample.py, tests/theory/test_nsg.py and
tests/datasets/test_videos.py."""

from __future__ import annotations

import functools
from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch

from pflow_explore import nsg as N
from pflow_explore import two_sample as ts
from pflow_explore.chapters import nsg_video as C
from pflow_explore.claims import Claim
from pflow_explore.datasets import videos as V

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="ref_sizes"):
        C.settings("tiny", ref_sizes=(20, 5))
    with pytest.raises(ValueError, match="ref_sizes"):
        C.settings("tiny", ref_sizes=(5, 10))  # must end at n_ref
    with pytest.raises(ValueError, match="size"):
        C.settings("tiny", size=12)
    with pytest.raises(ValueError, match="alpha"):
        C.settings("tiny", alpha=0.7)


def test_gpu_preset_models_take_one_training_step_on_cpu():
    s = C.SETTINGS["gpu"]
    net = N.FrameDenoiser(s.size**2, s.den_hidden, s.den_depth)
    frames = torch.randn(8, s.size**2)
    loss = N.denoising_loss(frames, s.sigma, 4, torch.Generator().manual_seed(0))(net, 0)
    loss.backward()
    kernel = ts.DeepKernel(s.size**2, s.kernel_hidden, s.kernel_out)
    obj = ts.power_objective(kernel, torch.randn(6, s.size**2), torch.randn(6, s.size**2) + 1)
    obj.backward()
    assert torch.isfinite(loss) and torch.isfinite(obj) and kernel.phi[0].weight.grad is not None


def test_theory_check_holds_and_wrong_values_fail():
    th = C.theory_check(C.settings("tiny"), cases=3, n=16)
    rows = C.claims_theory(th, "tiny")
    assert all(c.holds for c in rows)
    wrong = replace(th, identity_error=1e-3, zoom_violation=1e-12, estimator_error=0.5)
    bad = C.claims_theory(wrong, "tiny")
    assert not bad[0].holds and not bad[2].holds and not bad[3].holds


def test_tiny_run_end_to_end(tiny_results):
    s, r = tiny_results
    d = r.detection
    assert r.detection.fits["denoiser"].from_cache  # prepare trained, run loaded
    assert set(d.metrics) == set(C.DETECTORS) and set(d.cross) == set(V.FAKES)
    assert d.examples["real"].shape == (s.n_examples, s.frames, s.size, s.size)
    assert d.example_nsg["zoom"].shape == d.examples["zoom"].shape
    assert set(d.view_threshold) == set(s.ref_sizes)
    assert len(d.ref_curve[C.MAIN]["auroc"]) == len(s.ref_sizes)
    cs = C.claims(r)
    assert len(cs) == 10 and all(isinstance(c, Claim) and c.scale == "tiny" for c in cs)
    figs = C.figures(r)
    assert {"ref_auroc", "detectors", "cross_type", "examples"} <= set(figs)
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(C.preview(), go.Figure)
    assert list(r.seconds) == ["theory check", "detection"]


def test_detection_claims_fail_when_the_fakes_are_real(tiny_results):
    """Label shuffle: every 'fake' video replaced by a fresh real one; the same detector
    pipeline then finds nothing, and the AUROC claim built from it is NO."""
    s, r = tiny_results
    s = replace(s, kernel_steps=30)
    data = C.split_videos(s)
    for i, (part, kind) in enumerate(list(data)):
        if kind != "real":
            data[(part, kind)] = C.make_videos(s, "real", len(data[(part, kind)]), 5 + i)
    model = C.gaussian_score(s)
    eps = s.eps_fraction * N.denominator_scale(data[("train", "real")], model)
    feature = functools.partial(N.video_features, score=model, kind="nsg", eps=eps)
    det = C.build_detector(s, data, feature, 0)
    sc, thr = C.score_videos(s, det, det.F[("ref", "real")], C.mixed(det.F, "ref", s.n_ref))
    shuffled = C.mean_metrics(C.type_metrics(sc, thr))
    d = r.detection
    metrics = dict(d.metrics, **{C.MAIN: shuffled})
    se = dict(d.metrics_se)
    rows = {c.name: c for c in C.claims_detection(replace(d, metrics=metrics, metrics_se=se), s)}
    assert not rows[f"{C.MAIN}: AUROC (all fake types)"].holds, shuffled
    # no gain over the baseline when the two detectors are the same one
    same = dict(d.gain, recall=0.0, f1=0.0)
    rows = {c.name: c for c in C.claims_detection(replace(d, gain=same), s)}
    assert not rows[f"recall gain over the {C.BASELINE}"].holds
    # a test that rejects true nulls 30% of the time is not calibrated
    at_cpu = replace(s, n_type1=C.SETTINGS["cpu"].n_type1)  # the band of the cpu preset
    rows = {c.name: c for c in C.claims_detection(replace(d, type1_rate=0.3), at_cpu)}
    assert not rows["MMD test: type-I error on real vs real"].holds
