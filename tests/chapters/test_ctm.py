"""Chapter 04 ctm: settings, the theory check, seeded training, the gpu preset's models for
one step of every stage on the CPU, a tiny end-to-end run, and negative controls for the
claims that depend on training (each fed a wrong input must fail). The method itself is
tested in tests/test_consistency.py and tests/theory/test_consistency.py."""

from __future__ import annotations

from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch

from pflow_explore import consistency as ct
from pflow_explore.chapters import ctm as C
from pflow_explore.claims import Claim
from pflow_explore.paths import karras_sigmas

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="image_size"):
        C.settings("tiny", image_size=12)
    with pytest.raises(ValueError, match="nfe_steps"):
        C.settings("tiny", nfe_steps=(2, 4))
    with pytest.raises(ValueError, match="distance"):
        C.settings("tiny", distance="l1")
    with pytest.raises(ValueError, match="ema_decay"):
        C.settings("tiny", ema_decay=1.0)
    with pytest.raises(ValueError, match="score_sigmas"):
        C.settings("tiny", score_sigmas=(0.0, 1.0))


def test_gpu_preset_builds_and_takes_one_step_of_every_stage_on_cpu():
    s = replace(C.SETTINGS["gpu"], batch=4, batch_2d=4)
    grid = karras_sigmas(s.n_grid, 0.002, C.T_MAX)
    flow = C.exact_flow()
    for kind, dim, hidden, depth in (("ctm", 2, s.hidden_2d, s.depth_2d),
                                     ("cm", 2, s.hidden_2d, s.depth_2d),
                                     ("dsm", s.image_size**2, s.hidden, s.depth),
                                     ("ctm", s.image_size**2, s.hidden, s.depth)):  # fmt: skip
        net = ct.JumpNet(dim, hidden, depth)
        teacher = flow.denoiser if dim == 2 else ct.denoiser_of(ct.JumpNet(dim, 8, 1))
        sample = lambda n, g, d=dim: torch.randn(n, d, generator=g)
        loss_fn = ct.objective(kind, teacher, sample, grid, 4, torch.Generator().manual_seed(0))
        loss = loss_fn(net, 0)
        loss.backward()
        assert torch.isfinite(loss) and net.f[0].weight.grad is not None


def test_theory_check_holds_and_its_control_fails():
    s = C.settings("tiny")
    th = C.theory_check(s)
    assert th.jump_error < 1e-5
    assert max(th.energy.values()) < th.threshold < th.euler_control
    rows = C.claims_theory(th, "tiny")
    assert all(c.holds for c in rows)
    wrong = replace(th, energy={g: th.euler_control for g in th.gammas})  # Euler jumps
    assert not C.claims_theory(wrong, "tiny")[1].holds


def test_training_is_seeded_whatever_ran_before(data_dir, monkeypatch):
    s = C.settings("tiny", steps_2d=2)
    weights = []
    for i, draw in enumerate((0, 5)):
        monkeypatch.setenv("PFLOW_DATA", str(data_dir / f"run{i}"))
        torch.manual_seed(draw)
        torch.rand(draw + 1)
        fits = C.train_2d(s)
        assert not fits["CTM"].from_cache
        weights.append([p.detach().clone() for p in fits["CTM"].model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_tiny_run_end_to_end(tiny_results):
    s, r = tiny_results
    assert all(f.from_cache for f in r.two_d.fits.values())  # prepare trained, run loaded
    assert set(r.two_d.samples) >= {C.label(m, g, n) for m, g in C.SAMPLERS for n in s.nfe_steps}
    assert all(x.shape == (s.n_eval_2d, 2) for x in r.two_d.samples.values())
    assert r.two_d.score_error["CTM"].shape == (len(s.score_sigmas),)
    assert r.digits.samples[r.digits.teacher].shape == (10, 1, 8, 8)
    cs = C.claims(r)
    assert len(cs) == 8 and all(isinstance(c, Claim) and c.scale == "tiny" for c in cs)
    figs = C.figures(r)
    assert {"gamma_exact", "nfe_2d", "samples_2d", "paths_2d", "score_error"} <= set(figs)
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(C.preview(), go.Figure)
    assert list(r.seconds) == ["theory check", "2D", "digits"]


def test_2d_claims_fail_on_swapped_or_untrained_students(tiny_results):
    s, r = tiny_results
    rows = {c.name: c for c in C.claims_2d(r.two_d, s)}
    one_step = "one step: CTM < CM (2D, energy distance)"
    improves = f"CTM gamma=0 improves from 1 to {s.nfe_steps[-1]} NFE"
    assert rows[one_step].holds and rows[improves].holds  # measured at tiny scale too
    # controls: swap the CTM and CM samples; reverse the NFE curve
    e = dict(r.two_d.energy)
    a, b = C.label("CTM", 0, 1), C.label("CM", 1, 1)
    e[a], e[b] = e[b], e[a]
    top = C.label("CTM", 0, s.nfe_steps[-1])
    e[top] = r.two_d.energy[b] + 1.0
    wrong = {c.name: c for c in C.claims_2d(replace(r.two_d, energy=e), s)}
    assert not wrong[one_step].holds and not wrong[improves].holds
    # the score row against an untrained network's score error
    bad = dict(r.two_d.score_error, CTM=r.two_d.score_error["CM"] + 1)
    row = next(c for c in C.claims_2d(replace(r.two_d, score_error=bad), s) if "score" in c.name)
    assert not row.holds


def test_digits_claim_fails_when_more_jumps_do_not_help(tiny_results):
    s, r = tiny_results
    one, two = C.label("CTM", 0, 1), C.label("CTM", 0, s.digits_nfe[1])
    fd = dict(r.digits.fd, **{two: r.digits.fd[one] + 10})
    assert not C.claims_digits(replace(r.digits, fd=fd), s)[0].holds


def test_the_stored_exact_jump_is_the_dopri5_jump_solved_once(data_dir, monkeypatch):
    flow = C.exact_flow()
    x = flow.mixture.sample(50, torch.Generator().manual_seed(0)) + 2.0 * torch.randn(50, 2)
    stored = C.stored_exact_jump(flow)
    first = stored(x, 2.0, 0.5)
    assert torch.equal(first, ct.exact_jump(flow.denoiser, x, 2.0, 0.5, rtol=1e-5, atol=1e-5))
    monkeypatch.setattr(ct, "exact_jump", lambda *a, **k: pytest.fail("solved again"))
    assert torch.equal(stored(x.clone(), 2.0, 0.5), first)  # the same x, t, s: read back
    with pytest.raises(pytest.fail.Exception, match="solved again"):
        stored(x, 2.0, 0.25)  # another s
    with pytest.raises(pytest.fail.Exception, match="solved again"):
        C.stored_exact_jump(flow, rtol=1e-6)(x, 2.0, 0.5)  # other tolerances


def test_a_fresh_clone_opens_chapter_04s_explorer_without_an_ode_solve(shipped_only, monkeypatch):
    """The notebook's explorer: its exact jumps at every t of the slider are shipped."""
    from pflow_explore.widgets.jump_explorer import JumpExplorer

    shipped_only("ctm")
    s = C.settings("cpu")
    two_d, flow = C.experiment_2d(s), C.exact_flow()
    monkeypatch.setattr(ct, "exact_jump", lambda *a, **k: pytest.fail("solved again"))
    student = two_d.fits["CTM"].model
    z_cloud = torch.randn(300, 2, generator=torch.Generator().manual_seed(8))
    x0_cloud = flow.mixture.sample(300, torch.Generator().manual_seed(9))
    JumpExplorer(  # as notebooks/04_ctm.ipynb builds it
        learned=lambda x, t, s: ct.jump(student, x.float(), t, s),
        exact=C.stored_exact_jump(flow),
        cloud=lambda t: (x0_cloud + t * z_cloud).float(),
        x_T=80.0 * torch.randn(300, 2, generator=torch.Generator().manual_seed(10)),
        target=two_d.target[:600],
    )
