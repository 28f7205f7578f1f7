"""Chapter 03 rectified_flow: the theory check against the card's formulas, settings, seeded
training (weights independent of what ran before), the gpu preset's models for one step of
every stage, and a tiny end-to-end run (prepare -> cache -> run -> claims -> figures). The
method itself is tested in tests/test_flow_matching.py and tests/test_distillation.py."""

from __future__ import annotations

import math
from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch
from torch import Tensor, nn

from pflow_explore import distillation as D
from pflow_explore import flow_matching as FM
from pflow_explore.chapters import rectified_flow as R
from pflow_explore.claims import Claim

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


# ---- the Gaussian case ------------------------------------------------------------------
def test_theory_check_reproduces_the_card_formulas():
    # the chapter's wiring of theory.gaussian_rf_check (tested there with another estimator)
    th = R.theory_check(d=3, sigma=1.3, n=8000, n_steps=32, seed=1)
    assert th.straightness_formula == pytest.approx(3 * 1.3 * (2 - math.pi / 2))
    assert abs(th.straightness - th.straightness_formula) < 4 * th.straightness_se
    assert th.euler_2rf_error < 1e-12 and th.one_step_spread < 1e-12
    assert abs(th.w2_sq - 3 * 1.3**2) < 4 * th.w2_sq_se  # measured on the one-step samples
    assert th.reflow_residual < 1e-9 < 0.3 < th.reflow_residual_independent


# ---- settings, presets ----------------------------------------------------------------------
def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="net must be"):
        R.settings("tiny", net="transformer")
    with pytest.raises(ValueError, match="datasets"):
        R.settings("tiny", datasets=("swiss_roll",))
    with pytest.raises(ValueError, match="guidance_reflow"):
        R.settings("tiny", guidance_reflow=-1.0)
    with pytest.raises(ValueError, match="p_uncond"):
        R.settings("tiny", p_uncond=0.0)  # guidance 1.5 needs the null class
    with pytest.raises(ValueError, match="nfe_steps"):
        R.settings("tiny", nfe_steps=(2, 4))
    with pytest.raises(ValueError, match="distill_loss"):
        R.settings("tiny", distill_loss="lpips")
    with pytest.raises(ValueError, match="teacher_steps"):
        R.settings("tiny", teacher_steps=0)
    assert R.settings("tiny", p_uncond=0.0, guidance_reflow=1.0).p_uncond == 0.0


def test_gpu_preset_builds_and_takes_one_step_of_every_stage_on_cpu():
    s = replace(R.SETTINGS["gpu"], batch=4)  # same code path, a batch a CPU does at once
    train, labels, test = R.digits_data(s)
    assert train.shape == (8 * 1438, 32 * 32) and labels.shape == (8 * 1438,)
    assert test.shape == (359, 1024)
    net = R.make_net_digits(s)
    n_params = sum(p.numel() for p in net.parameters())
    assert 1.5e6 < n_params < 2.5e6, n_params  # "UNet ~2M parameters" (issue 6)
    assert net.image_shape == (1, 32, 32)

    def sample_data(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(train), (n,), generator=gen)
        return train[idx], labels[idx]

    def one_step_of(stage: FM.Stage, run) -> nn.Module:
        before = [p.detach().clone() for p in net.parameters()]
        result = run(replace(stage, steps=1))
        assert math.isfinite(result.losses[0])
        after = list(result.model.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        return result.model

    teacher_stage = R._stage_digits(s, s.teacher_steps, "gpu teacher", 0)
    teacher = one_step_of(
        teacher_stage,
        lambda st: FM.train_rectified_flow(lambda: net, sample_data, st, s.p_uncond, 10),
    )
    z0 = FM.gaussian_noise(4, 1024, 0, torch.device("cpu"))
    y = FM.balanced_labels(4, R.N_CLASSES, s.p_uncond, 0)
    pairs = FM.sample_pairs(teacher, z0, y, s.guidance_reflow, n_steps=1)
    assert pairs.z1.shape == (4, 1024) and pairs.nfe == 8  # rk4, guided: 2 x 4
    net = teacher
    one_step_of(
        R._stage_digits(s, s.reflow_steps, "gpu reflow", 21), lambda st: D.reflow(net, pairs, st)
    )
    one_step_of(
        R._stage_digits(s, s.distill_steps, "gpu distil", 31, distil=True),
        lambda st: D.distill(net, pairs, st),
    )


def test_training_is_seeded_whatever_ran_before(data_dir, monkeypatch):
    # issue 12: the 1-RF's initial weights come from its own seed (SEEDS_2D["init"]), so
    # two fresh trainings after different global RNG draws give the same weights
    s = R.settings("tiny", rf_steps_2d=2, reflow_steps_2d=1, distill_steps_2d=1, n_pairs_2d=64)
    weights = []
    for i, draw in enumerate((0, 5)):
        monkeypatch.setenv("PFLOW_DATA", str(data_dir / f"run{i}"))
        torch.manual_seed(draw)
        torch.rand(draw + 1)
        fits = R.train_chain_2d(s, "eight_gaussians")
        assert not fits["1-RF"].from_cache
        weights.append([p.detach().clone() for p in fits["distilled 2-RF"].model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


# ---- tiny end to end ------------------------------------------------------------------------
def test_tiny_run_end_to_end_and_from_the_cache(data_dir):
    s = R.settings("tiny")
    R.prepare(s)
    # 5 models per 2D target and 4 digits models, and one measurement per experiment
    assert len(list((data_dir / "cache" / "rectified_flow").glob("*.pt"))) == 5 + 4 + 2
    r = R.run(s)
    assert r.digits.from_cache
    ch = r.chains["eight_gaussians"]
    assert set(ch.straightness) == set(R.ROUNDS)
    assert ch.paths["1-RF"].shape == (s.straightness_steps + 1, s.n_paths_2d, 2)
    assert all(x.shape == (s.n_eval_2d, 2) for x in ch.samples.values())
    steps, fd, acc = r.digits.curves["2-RF"]
    assert steps.tolist() == list(s.nfe_steps) and fd.shape == acc.shape == (len(s.nfe_steps),)
    assert r.digits.samples["distilled 2-RF"].shape == (20, 1, 8, 8)
    cs = R.claims(r)
    assert len(cs) >= 8 and all(isinstance(c, Claim) and c.scale == "tiny" for c in cs)
    assert all(c.holds for c in cs[:3])  # the theory checks do not depend on training
    figs = R.figures(r)
    assert {"straightness", "crossings", "one_step_quality", "digits_nfe"} <= set(figs)
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(R.preview(), go.Figure)
    # the named experiments alone give what run gives (run composes them)
    torch.testing.assert_close(R.experiment_2d(s, "eight_gaussians").samples, ch.samples)
    assert R.experiment_digits(s).fd == r.digits.fd
    assert list(r.seconds) == ["theory check", "2D eight_gaussians", "digits"]
