"""Chapter 07 adjoint: settings, the gpu preset's networks for one training step on the CPU,
a tiny end-to-end run, and negative controls for the claims (an untrained fine-tuning, an
attack of zero steps, a flat naive memory line, wrong gradients: each must fail). The method
is tested in tests/test_adjoint.py, tests/test_memory.py and tests/theory/test_adjoint.py."""

from __future__ import annotations

from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch

from pflow_explore import adjoint as ad
from pflow_explore import paths
from pflow_explore.chapters import adjoint as C
from pflow_explore.claims import Claim
from pflow_explore.nets import MLP

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="mem_steps"):
        C.settings("tiny", mem_steps=(10, 5))
    with pytest.raises(ValueError, match="image_size"):
        C.settings("tiny", image_size=12)
    with pytest.raises(ValueError, match="box_low"):
        C.settings("tiny", box_low=(2.0, 0.0))


def test_gpu_preset_networks_take_one_training_step_on_cpu():
    s = C.SETTINGS["gpu"]
    path = paths.get_path(s.path)
    for net, d in (
        (C.make_net(s), 2),
        (MLP(s.image_size**2, s.digits_hidden, s.digits_depth), 1024),
    ):
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss = ad.eps_matching_loss(net, path, torch.randn(4, d), torch.Generator().manual_seed(0))
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)


def test_tiny_run_end_to_end(tiny_results):
    s, r = tiny_results
    assert set(r.theory.x_T) == set(C.ROUTES) and r.theory.steps == list(s.theory_steps)
    assert r.theory.weights_reached == r.theory.weights_total
    assert set(r.memory.peak) == set(C.MEMORY_ROUTES)
    assert all(len(v) == len(s.mem_steps) for v in r.memory.peak.values())
    assert r.finetune.before.shape == (s.n_eval, 2) and len(r.finetune.losses) == s.ft_iters
    assert r.attack.images_before.shape[1:] == (1, 8, 8) and len(r.attack.margins) == s.attack_iters
    cs = C.claims(r)
    assert len(cs) == 8 and all(isinstance(c, Claim) and c.scale == "tiny" for c in cs)
    figs = C.figures(r)
    assert set(figs) == {"gradient_error", "memory", "finetune", "attack"}
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(C.preview(), go.Figure)
    assert list(r.seconds) == ["theory", "memory", "fine-tuning", "attack"]


def test_theory_claims_hold_and_fail_on_wrong_gradients(tiny_results):
    _, r = tiny_results
    rows = C.claims_theory(r.theory, "tiny")
    assert all(c.holds for c in rows), rows
    flat = {k: [v[0]] * len(v) for k, v in r.theory.x_T.items()}  # no convergence
    wrong = replace(r.theory, x_T=flat, fd_error=1e-2)
    rows = C.claims_theory(wrong, "tiny")
    assert not rows[0].holds and not rows[1].holds and not rows[2].holds


def test_memory_claims_fail_when_the_adjoint_grows_like_naive(tiny_results):
    _, r = tiny_results
    m = r.memory
    same = replace(m, mib_per_step=dict(m.mib_per_step, adjoint=m.mib_per_step["naive"]))
    assert not C.claims_memory(same, "tiny")[1].holds
    flat = replace(m, mib_per_step=dict(m.mib_per_step, naive=0.0))
    assert not C.claims_memory(flat, "tiny")[0].holds


def test_finetune_negative_control_fails(tiny_results):
    """Zero learning rate: the model does not move, so the in-box share cannot rise."""
    s, _ = tiny_results
    s0 = replace(s, ft_lr=1e-12, ft_iters=2)
    fit = C.train_2d(s0)
    f = C.finetune_eval(s0, fit)
    assert abs(f.share_after - f.share_before) < 0.01
    assert not C.claim_finetune(f, s0).holds


def test_attack_negative_control_fails(tiny_results):
    """Zero attack steps: no decision changes; the claim fails."""
    s, _ = tiny_results
    a = C.attack_run(s, C.train_digits(s), iters=0)
    assert a.success == 0.0 and a.noise_moved == 0.0
    assert not C.claim_attack(a, s).holds
    assert C.claim_attack_close(a, s).holds  # nothing moved: the closeness claim can hold
    moved = replace(a, image_moved=0.5)
    assert not C.claim_attack_close(moved, s).holds


def test_rel_and_fit_line():
    assert C.rel(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])) == pytest.approx(1.0)
    assert C.fit_line([1, 2, 3], [2, 4, 6]) == pytest.approx((2.0, 0.0))
