"""Chapter 05 mr_sampler: settings, the theory check, seeded training, the gpu preset's network
for one training step on the CPU, a tiny end-to-end run, and negative controls for the claims
(each fed a wrong input, or an untrained network, must fail). The method is tested in
tests/test_mean_reverting.py and tests/test_restoration.py."""

from __future__ import annotations

from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch

from pflow_explore import restoration as rs
from pflow_explore.chapters import mr_sampler as C
from pflow_explore.claims import Claim
from pflow_explore.training import FitResult

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


def test_bad_settings_fail_with_clear_messages():
    with pytest.raises(ValueError, match="em_reference"):
        C.settings("tiny", em_reference=7)
    with pytest.raises(ValueError, match="nfe"):
        C.settings("tiny", nfe=(10, 5))
    with pytest.raises(ValueError, match="net"):
        C.settings("tiny", net="transformer")
    with pytest.raises(ValueError, match="alpha_end"):
        C.settings("tiny", alpha_end=1.5)
    with pytest.raises(ValueError, match="digits_nfe"):
        C.settings("tiny", digits_nfe=(5, 20))


def test_gpu_preset_network_takes_one_training_step_on_cpu():
    s = replace(C.SETTINGS["gpu"], batch=2)
    net = C.make_net(s)
    assert net.kind == "unet" and net.dim == s.image_size**2
    train = C.images(s, "train")[:6]
    pairs = lambda n, g: rs.degrade_thirds(train[:n], g)
    loss = rs.objective(pairs, C.schedule(s), 3, torch.Generator().manual_seed(0))(net, 0)
    loss.backward()
    assert torch.isfinite(loss) and net.net.net.conv_in.weight.grad is not None


def test_theory_check_holds_and_wrong_values_fail():
    s = C.settings("tiny")
    th = C.theory_check(s)
    assert th.marginal_z < 4 and th.flow_map_error < 1e-6 and th.first_order_gap < 1e-9
    assert all(c.holds for c in C.claims_theory(th, "tiny"))
    # controls: a simulated variance off by 10% is many SEs away; a gap of one ULP-free 1e-6
    wrong = replace(th, marginal_z=th.marginal_z + 10, first_order_gap=1e-6)
    rows = C.claims_theory(wrong, "tiny")
    assert not rows[0].holds and not rows[2].holds


def test_training_is_seeded_whatever_ran_before(data_dir, monkeypatch):
    s = C.settings("tiny", steps=2)
    weights = []
    for i, draw in enumerate((0, 5)):
        monkeypatch.setenv("PFLOW_DATA", str(data_dir / f"run{i}"))
        torch.manual_seed(draw)
        torch.rand(draw + 1)
        fits = C.train_digits(s)
        assert not fits["data"].from_cache
        weights.append([p.detach().clone() for p in fits["data"].model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_tiny_run_end_to_end(tiny_results):
    s, r = tiny_results
    assert all(f.from_cache for f in r.digits.fits.values())  # prepare trained, run loaded
    assert set(r.exact.w2) == set(C.SOLVERS)
    assert len(r.exact.w2[C.EM]) == len(s.nfe)  # the others stop at exact_nfe_max
    short = [n for n in s.nfe if n <= s.exact_nfe_max]
    assert all(len(v) == len(short) for k, v in r.exact.w2.items() if k != C.EM)
    assert set(r.exact.orders) >= set(C.ODE_SOLVERS)
    assert r.digits.examples["truth"].shape == (8, 1, 8, 8)
    per_net_task = sum(len(C.nfe_of(k, s)) for k in C.DIGIT_SOLVERS)
    assert len(r.digits.psnr) == 2 * 3 * per_net_task and C.nfe_of(C.EM, s) == list(s.digits_nfe)
    assert set(r.digits.ssim) == {k for k in r.digits.psnr if k.endswith(("|10", "|50"))}
    cs = C.claims(r)
    assert len(cs) == 12 and all(isinstance(c, Claim) and c.scale == "tiny" for c in cs)
    figs = C.figures(r)
    assert {"w2_nfe", "orders", "mixture", "stability", "x0_error", "psnr_nfe"} <= set(figs)
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert isinstance(C.preview(), go.Figure)
    assert list(r.seconds) == ["theory check", "exact denoisers", "digits"]


def test_orders_hold_and_fail_on_a_first_order_curve(tiny_results):
    s, r = tiny_results
    rows = C.claims_exact(r.exact, s)
    assert [c.holds for c in rows[:3]] == [True, True, True]  # MRS-1/2/3: measured orders
    euler = r.exact.orders["Euler (PF-ODE)"]
    wrong = replace(r.exact, orders=dict(r.exact.orders, **{"MRS-3 ODE data": euler}))
    assert not C.claims_exact(wrong, s)[2].holds


def test_nfe_ratio_fails_when_mrs_is_no_faster_than_euler_maruyama(tiny_results):
    s, r = tiny_results
    same = {k: list(r.exact.w2[C.EM]) if k.startswith("MRS") else v for k, v in r.exact.w2.items()}
    needed = {k: C.metrics.steps_to_reach(r.exact.nfe, v, r.exact.target) for k, v in same.items()}
    row = next(
        c for c in C.claims_exact(replace(r.exact, nfe_needed=needed), s) if "ratio" in c.name
    )
    assert not row.holds and row.measured == pytest.approx(1.0)


def test_digits_claims_fail_for_an_untrained_network_and_a_slow_solver(tiny_results, data_dir):
    s, r = tiny_results
    d = r.digits
    # the NFE-match criterion rejects Euler-Maruyama at its fewest steps (measured, trained)
    assert not C.claim_nfe_match(d, s, fast=(C.EM, s.digits_nfe[0])).holds
    # an untrained "data" network: worse than the noise one is not claimed, nor restoration
    fresh = FitResult(C.make_net(s).eval(), [], 0.0)
    untrained = C.evaluate_digits(s, {"data": fresh, "noise": d.fits["noise"]})
    rows = {c.name: c for c in C.claims_digits(untrained, s)}
    assert not rows["digits: restored PSNR over the degraded input (dB, mean of tasks)"].holds
    trained = {c.name: c for c in C.claims_digits(d, s)}
    assert trained["digits: a data-prediction network restores better than a noise one"].holds


def test_the_stored_euler_maruyama_baseline_is_euler_maruyama_from_the_exercises_start(
    data_dir, monkeypatch
):
    from pflow_explore import mean_reverting as mr
    from pflow_explore.scale import torch_threads

    s = C.settings("tiny")
    gauss, x_T, w2 = C.exercise_start(s)
    sch, by_hand = C.schedule(s), []
    with torch_threads(1, blas=True):
        for n in (4, 16):
            times = mr.time_grid(sch, n, "uniform", s.t_end)
            noise = torch.Generator().manual_seed(2)
            x = mr.sample("euler_maruyama", gauss.denoiser, sch, x_T, gauss.mu, times, 1, noise)
            by_hand.append(w2(x.x))
    assert C.em_baseline(s, (4, 16)) == {4: by_hand[0], 16: by_hand[1]}
    monkeypatch.setattr(mr, "sample", lambda *a, **k: pytest.fail("sampled again"))
    assert C.em_baseline(s, (4, 16)) == {4: by_hand[0], 16: by_hand[1]}  # stored
    assert by_hand[1] < by_hand[0]  # finer steps, closer to the exact law
