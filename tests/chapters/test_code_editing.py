"""Chapter 08 code_editing: settings, the gpu preset's network for one training step on the
CPU, a tiny end-to-end run, and negative controls for the claims (an untrained eps-model,
a Gaussian check that disagrees, a clip rate over the bound: each must fail). The method is
tested in tests/test_editing.py and tests/theory/test_code_gaussian.py."""

from __future__ import annotations

from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch

from pflow_explore import paths
from pflow_explore.adjoint import eps_matching_loss
from pflow_explore.chapters import code_editing as C
from pflow_explore.claims import Claim

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="levels"):
        C.settings("tiny", levels=(0.5, 0.2))
    with pytest.raises(ValueError, match="step scales"):
        C.settings("tiny", step_scale=1.5)
    with pytest.raises(ValueError, match="corruptions"):
        C.settings("tiny", corruptions=("fog",))


def test_gpu_preset_network_takes_one_training_step_on_cpu():
    s = C.SETTINGS["gpu"]
    net = C.make_net(s)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(4, 64) * 2 - 1
    loss = eps_matching_loss(net, paths.get_path(s.path), x, torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_tiny_run_end_to_end(tiny_results):
    s, r = tiny_results
    assert set(r.gaussian.z_mean) == {"CODE", "SDEdit"}
    assert r.mixture.code.shape[1] == 2 and 0 <= r.mixture.share_code <= 1
    assert set(r.digits.rows) == set(s.corruptions)
    n_jobs = 2 * len(s.levels) * len(s.langevin) + len(s.step_scales) + len(s.levels)
    assert all(len(t["fd"]) == n_jobs for t in r.digits.rows.values())
    assert len(r.digits.clip_noised) == len(s.levels)
    cs = C.claims(r)
    assert len(cs) == 4 + len(s.corruptions) + 3
    assert all(isinstance(c, Claim) and c.scale == "tiny" for c in cs)
    figs = C.figures(r)
    assert {"gaussian_tradeoff", "mixture", "clip_rate"} <= set(figs)
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(C.preview(), go.Figure)
    assert list(r.seconds) == ["gaussian", "mixture", "digits"]


def test_gaussian_claim_holds_and_fails_when_the_simulation_disagrees(tiny_results):
    _, r = tiny_results
    assert C.claim_gaussian(r.gaussian, "tiny").holds
    off = replace(r.gaussian, z_mean={"CODE": 9.0, "SDEdit": 1.0})
    assert not C.claim_gaussian(off, "tiny").holds


def test_clip_claims_fail_above_the_bound(tiny_results):
    s, r = tiny_results
    assert C.claims_clip(r.digits, s)[0].holds  # a theorem
    over = replace(r.digits, clip_noised=[0.1] * len(s.levels), clip_inverted=[0.2] * len(s.levels))
    assert not any(c.holds for c in C.claims_clip(over, s))


def test_pareto_share_counts_dominated_points():
    rows = dict(method=["CODE", "SDEdit", "SDEdit"], to_input=[0.5, 0.6, 0.4], fd=[10.0, 20.0, 5.0],
                fd_se=[1.0, 1.0, 1.0])  # fmt: skip
    assert C.pareto_share(rows) == (0.5, 2)


def test_untrained_model_does_not_restore(tiny_results):
    """Negative control: an untrained eps-model's CODE does not raise the classifier's
    accuracy on the masked digits, and its clipping helps no more than chance."""
    s, _ = tiny_results
    s = replace(s, corruptions=("mask",), levels=(0.2, 0.4), langevin=(4, 8))
    d = C.digits_eval(s, C.make_net(s).eval())
    assert not C.claim_restores(d, s).holds
    assert not C.claims_dominance(d, s)[0].holds
