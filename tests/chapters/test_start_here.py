import pytest
import torch

from pflow_explore.chapters import start_here as demo


def test_claims_hold_at_tiny():
    r = demo.run(demo.settings("tiny"))
    cs = demo.claims(r)
    assert all(c.holds for c in cs), [c for c in cs if not c.holds]
    assert {c.scale for c in cs} == {"tiny"}


def test_claims_catch_a_wrong_flow():
    # a velocity with the sigma' term dropped transports the wrong marginals
    s = demo.settings("tiny")
    r = demo.run(s)
    flow = r.flow
    wrong = lambda x, t: flow.path.d_alpha(t) * flow.denoiser(x, t)
    gen = torch.Generator().manual_seed(0)
    x1 = flow.sample(s.n_paths, 1.0, generator=gen)
    from pflow_explore import solvers

    sol = solvers.odeint(wrong, x1, r.times, method="rk4", trajectory=True)
    r.trajectories = sol.trajectory
    assert not all(c.holds for c in demo.claims(r))


def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="steps must be between"):
        demo.settings("tiny", n_steps=0)
    with pytest.raises(ValueError, match="blob std"):
        demo.settings("tiny", std=-1.0)
    with pytest.raises(ValueError, match="valid"):
        demo.settings("tiny", path="wiggly")
    with pytest.raises(ValueError, match="valid"):
        demo.settings("tiny", method="magic")


def test_trajectories_start_at_p1_and_have_the_grid():
    s = demo.settings("tiny")
    r = demo.run(s)
    assert r.trajectories.shape == (s.n_steps + 1, s.n_paths, 2)
    assert float(r.times[0]) == 1.0 and float(r.times[-1]) == pytest.approx(s.t_end)
    assert r.nfe == 4 * s.n_steps  # rk4
