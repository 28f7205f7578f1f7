"""Chapter 10 flexiclip: settings, the theory check, the gpu preset's prior for one training
step on the CPU, a tiny end-to-end run, and negative controls for the claims (an untrained
prior, swapped variants, a wrong geometry value must fail). The geometry is tested in
tests/test_animation.py, the prior in tests/test_motion_prior.py."""

from __future__ import annotations

from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch

from pflow_explore import motion_prior as mp
from pflow_explore.chapters import flexiclip as C
from pflow_explore.claims import Claim
from pflow_explore.datasets.motions import labelled_clips
from pflow_explore.flow_matching import rectified_flow_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="characters"):
        C.settings("tiny", characters=("dragon",))
    with pytest.raises(ValueError, match="motions"):
        C.settings("tiny", motions=("dance",))
    with pytest.raises(ValueError, match="spacing"):
        C.settings("tiny", spacing=1.0)
    with pytest.raises(ValueError, match="ode_method"):
        C.settings("tiny", ode_method="dopri5")


def test_gpu_preset_prior_takes_one_training_step_on_cpu():
    s = C.SETTINGS["gpu"]
    clips, labels = labelled_clips(4, s.frames, torch.Generator().manual_seed(0))
    x1 = C.flat(clips, s)
    net = mp.make_prior(x1.shape[1], s.hidden, s.depth)
    loss = rectified_flow_loss(net, torch.randn_like(x1), x1, torch.rand(4), labels)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.parameters())


def test_theory_check_holds_and_wrong_values_fail():
    th = C.theory_check(C.settings("tiny"))
    assert all(c.holds for c in C.claims_theory(th, "tiny"))
    wrong = replace(th, poisson_error=1e-3, rigid_arap=1e-4)
    rows = C.claims_theory(wrong, "tiny")
    assert not rows[1].holds and not rows[2].holds


def test_tiny_run_gives_claims_figures_and_animations(tiny_results):
    s, r = tiny_results
    rows = C.claims(r)
    assert all(isinstance(c, Claim) for c in rows) and len(rows) == 13
    figs = C.figures(r)
    assert all(isinstance(f, go.Figure) for f in figs.values())
    n_cases = len(C.cases(s))
    assert all(len(v) == n_cases for d in r.animation.metrics.values() for v in d.values())
    V, kp, P = r.animation.animations[f"{s.characters[0]}/{s.motions[0]}/{C.VARIANTS[1]}"]
    assert V.shape[0] == s.frames and kp.shape == (s.frames, 11, 2) and P.shape == (11, 4, 2)
    assert isinstance(C.preview(), go.Figure)


def test_prior_claim_fails_for_an_untrained_prior():
    # v = 0 maps x to itself: log N(x), the same for a clip and its frames shuffled
    s = C.settings("tiny", n_held=6)
    zero = lambda x, t, y=None: 0 * x
    p = C.evaluate_prior(s, zero)
    assert not C.claims_prior(p, "tiny")[0].holds


def test_animation_claims_fail_when_the_variants_are_swapped(tiny_results):
    s, r = tiny_results
    a = r.animation
    A, B, Cv = C.VARIANTS
    better = {
        A: {m: [x + 1.0 for x in a.metrics[B][m]] for m in C.METRICS},
        B: a.metrics[B],
        Cv: a.metrics[Cv],
    }
    rows = C.claims_animation(replace(a, metrics=better), s)
    assert all(rows[i].holds for i in range(3))  # 'without' much worse: the claims hold
    worse = {
        A: {m: [x - 1.0 for x in a.metrics[B][m]] for m in C.METRICS},
        B: a.metrics[B],
        Cv: a.metrics[Cv],
    }
    rows = C.claims_animation(replace(a, metrics=worse), s)
    assert not any(rows[i].holds for i in range(3))
    still = replace(a, still_loglik=[x + 1.0 for x in a.metrics[A]["log-lik / dim"]])
    assert not C.claims_animation(still, s)[5].holds  # the still clip as likely: NO


def test_animations_are_seeded():
    s = C.settings("tiny", iters=2)
    from pflow_explore import animation as an

    clip = an.make_clipart("stick", s.spacing)
    torch.manual_seed(0)
    prior = mp.make_prior(11 * s.frames * 2, 16, 1)
    torch.manual_seed(123)  # the global RNG must not matter
    a = C.animate(clip, prior, "walk", 1, s, 0)
    torch.manual_seed(456)
    b = C.animate(clip, prior, "walk", 1, s, 0)
    assert torch.equal(a.vertices, b.vertices)


def test_distillation_claim_fails_with_an_untrained_prior():
    # an untrained velocity pulls towards noise: the animation is no likelier than the still clip
    s = C.settings("tiny")
    torch.manual_seed(0)
    untrained = mp.make_prior(11 * s.frames * 2, s.hidden, s.depth).eval()
    r = C.evaluate_animation(s, untrained)
    assert not C.claims_animation(r, s)[5].holds
