"""Tests for pflow_explore.solvers: orders of convergence against exact solutions, NFE,
trajectories, reverse time, dopri5 tolerance, and Euler-Maruyama on Ornstein-Uhlenbeck."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pflow_explore.solvers import (
    METHODS,
    Solution,
    collect,
    euler,
    euler_maruyama,
    heun,
    noise_steps,
    odeint,
    randn_like,
    rk4,
    sde_steps,
    steps,
)

F64 = torch.float64
X0 = torch.tensor([[1.0, -0.5], [0.3, 2.0], [-1.2, 0.7]], dtype=F64)  # (B=3, d=2)


def decay(x, t):
    """dx/dt = -t x, exact x(t) = x(t0) exp(-(t^2 - t0^2) / 2)."""
    return -t * x


def decay_exact(x0, t0, t1):
    return x0 * math.exp(-(t1**2 - t0**2) / 2)


A = torch.tensor([[-0.2, 1.5], [-1.5, -0.2]], dtype=F64)  # damped rotation


def rotation(x, t):
    """dx/dt = A x (row vectors: x A^T), exact x(t) = x(t0) exp(A (t - t0))^T."""
    return x @ A.T


def rotation_exact(x0, t0, t1):
    return x0 @ torch.linalg.matrix_exp(A * (t1 - t0)).T


PROBLEMS = {"decay": (decay, decay_exact), "rotation": (rotation, rotation_exact)}
ORDERS = {"euler": 1, "heun": 2, "rk4": 4}


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("method", list(ORDERS))
@pytest.mark.parametrize("t0,t1", [(0.0, 1.5), (1.5, 0.0)])
def test_order_of_convergence(problem, method, t0, t1):
    f, exact = PROBLEMS[problem]
    counts = [8, 16, 32, 64] if method != "rk4" else [4, 8, 16, 32]
    errors = []
    for n in counts:
        sol = odeint(f, X0, torch.linspace(t0, t1, n + 1, dtype=F64), method)
        errors.append(float((sol.x - exact(X0, t0, t1)).abs().max()))
    slope = np.polyfit(np.log([abs(t1 - t0) / n for n in counts]), np.log(errors), 1)[0]
    assert abs(slope - ORDERS[method]) < 0.3, (slope, errors)


@pytest.mark.parametrize("method", list(ORDERS))
def test_nfe_is_exact(method):
    calls = []

    def f(x, t):
        calls.append(float(t))
        return -x

    n = 7
    sol = odeint(f, X0, torch.linspace(1, 0, n + 1), method)
    per_step = {"euler": 1, "heun": 2, "rk4": 4}[method]
    assert sol.nfe == len(calls) == per_step * n


def test_dopri5_meets_tolerance_and_counts_nfe():
    calls = []

    def f(x, t):
        calls.append(1)
        return rotation(x, t)

    exact = rotation_exact(X0, 2.0, 0.0)
    previous = math.inf
    for tol in (1e-4, 1e-7, 1e-10):
        calls.clear()
        sol = odeint(f, X0, torch.tensor([2.0, 0.0], dtype=F64), "dopri5", rtol=tol, atol=tol)
        err = float((sol.x - exact).abs().max())
        assert err < 20 * tol * (1 + float(exact.abs().max())), (tol, err)
        assert sol.nfe == len(calls) > 0
        assert sol.nfe > previous or previous == math.inf
        previous = sol.nfe


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("reverse", [False, True])
def test_evaluations_stay_inside_the_grid(method, reverse):
    """A PF-ODE velocity may be undefined past the ends (sigma(0) = 0, t < 0): no solver
    may evaluate f there (torchdiffeq's dopri5 would, left alone)."""
    seen = []

    def f(x, t):
        seen.append(float(t))
        return rotation(x, t)

    times = torch.tensor([0.0, 0.3, 1.0], dtype=F64)
    times = times.flip(0) if reverse else times
    for tol in (1e-3, 1e-8):
        seen.clear()
        sol = odeint(f, 100 * X0, times, method, trajectory=True, rtol=tol, atol=tol)
        assert 0.0 <= min(seen) and max(seen) <= 1.0, (min(seen), max(seen))
    if method == "dopri5":  # landing on grid points keeps the answer right
        exact = rotation_exact(100 * X0, float(times[0]), float(times[1]))
        torch.testing.assert_close(sol.trajectory[1], exact, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_trajectory(method):
    times = torch.linspace(1.0, 0.2, 6, dtype=F64)
    sol = odeint(decay, X0, times, method, trajectory=True, rtol=1e-8, atol=1e-8)
    assert isinstance(sol, Solution)
    assert sol.trajectory.shape == (6, *X0.shape)
    assert torch.equal(sol.trajectory[0], X0)
    assert torch.equal(sol.trajectory[-1], sol.x)
    assert torch.equal(sol.times, times)
    # every recorded state is near the exact solution at its grid time
    for t, x in zip(times.tolist(), sol.trajectory, strict=True):
        torch.testing.assert_close(x, decay_exact(X0, 1.0, t), rtol=0.1, atol=0.02)
    assert odeint(decay, X0, times, method).trajectory is None


def test_named_wrappers_and_steps_agree_with_odeint():
    times = torch.linspace(0, 1, 9, dtype=F64)
    for fn, method in ((euler, "euler"), (heun, "heun"), (rk4, "rk4")):
        sol = fn(rotation, X0, times, trajectory=True)
        ref = odeint(rotation, X0, times, method, trajectory=True)
        assert torch.equal(sol.x, ref.x) and sol.nfe == ref.nfe
        yielded = list(steps(rotation, X0, times, method))
        assert len(yielded) == len(times) - 1
        assert torch.equal(torch.stack([t for t, _ in yielded]), times[1:])
        assert torch.equal(torch.stack([x for _, x in yielded]), ref.trajectory[1:])


def test_float32_state_and_list_times():
    x0 = X0.float()
    sol = odeint(decay, x0, [0.0, 0.5, 1.0], "heun")
    assert sol.x.dtype == torch.float32
    torch.testing.assert_close(sol.x, decay_exact(x0, 0.0, 1.0), rtol=0.02, atol=0.02)


def test_batched_image_shaped_state():
    x0 = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    sol = odeint(decay, x0, torch.linspace(0, 1, 33, dtype=F64), "rk4", trajectory=True)
    assert sol.trajectory.shape == (33, 2, 1, 4, 4)
    torch.testing.assert_close(sol.x, decay_exact(x0, 0.0, 1.0), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize(
    "times,match",
    [
        (torch.tensor([0.5]), ">= 2 points"),
        (torch.zeros(2, 2), "1-D"),
        (torch.tensor([0.0, 0.5, 0.5, 1.0]), "strictly monotone"),
        (torch.tensor([0.0, 0.5, 0.2]), "strictly monotone"),
        (torch.tensor([0.0, float("nan")]), "finite"),
    ],
)
def test_bad_times_raise(times, match):
    with pytest.raises(ValueError, match=match):
        odeint(decay, X0, times)
    with pytest.raises(ValueError, match=match):
        steps(decay, X0, times)  # validated at call time, before iterating
    with pytest.raises(ValueError, match=match):
        euler_maruyama(decay, lambda t: 1.0, X0, times)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="euler, heun, rk4, dopri5"):
        odeint(decay, X0, [0.0, 1.0], "midpoint")
    with pytest.raises(ValueError, match="euler, heun, rk4"):
        steps(decay, X0, [0.0, 1.0], "dopri5")


@pytest.mark.parametrize("x0,theta,s,horizon", [(2.0, 1.0, 0.8, 1.5), (-1.0, 3.0, 1.5, 0.7)])
def test_euler_maruyama_ornstein_uhlenbeck_moments(x0, theta, s, horizon):
    """dx = -theta x dt + s dW: mean x0 e^{-theta T}, var s^2 (1 - e^{-2 theta T}) / (2 theta)."""
    n, n_steps = 20_000, 200
    g = torch.Generator().manual_seed(42)
    sol = euler_maruyama(
        lambda x, t: -theta * x,
        lambda t: s,
        torch.full((n, 1), x0, dtype=F64),
        torch.linspace(0, horizon, n_steps + 1, dtype=F64),
        generator=g,
    )
    assert sol.nfe == n_steps
    mean = x0 * math.exp(-theta * horizon)
    var = s**2 * (1 - math.exp(-2 * theta * horizon)) / (2 * theta)
    assert abs(float(sol.x.mean()) - mean) < 4.5 * math.sqrt(var / n)
    # relative standard error of a Gaussian sample variance is sqrt(2 / n); EM adds
    # a bias of order theta dt / 2 ~ 1%, so allow for both
    assert abs(float(sol.x.var()) / var - 1) < 4.5 * math.sqrt(2 / n) + theta * horizon / n_steps


def test_euler_maruyama_reverse_time_and_tensor_diffusion():
    """Brownian motion run on a decreasing grid still has variance g^2 |T|, per coordinate."""
    n = 20_000
    g = torch.Generator().manual_seed(3)
    scale = torch.tensor([0.5, 2.0], dtype=F64)
    sol = euler_maruyama(
        lambda x, t: torch.zeros_like(x),
        lambda t: scale,
        torch.zeros(n, 2, dtype=F64),
        torch.linspace(1.0, 0.0, 11, dtype=F64),
        generator=g,
        trajectory=True,
    )
    assert sol.trajectory.shape == (11, n, 2)
    var = sol.x.var(0)
    assert (torch.abs(var / scale**2 - 1) < 4.5 * math.sqrt(2 / n)).all(), var


def test_euler_maruyama_seeding():
    def run(seed):
        return euler_maruyama(
            lambda x, t: -x,
            lambda t: 0.7,
            torch.zeros(5, 3),
            torch.linspace(0, 1, 21),
            generator=torch.Generator().manual_seed(seed),
            trajectory=True,
        ).trajectory

    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))
    g = torch.Generator().manual_seed(0)
    stepped = [
        x
        for _, x in sde_steps(
            lambda x, t: -x, lambda t: 0.7, torch.zeros(5, 3), torch.linspace(0, 1, 21), g
        )
    ]
    assert torch.equal(torch.stack(stepped), run(0)[1:])


def test_collect_runs_a_step_generator_to_a_solution():
    # a hand-written generator of exact rotation states, so the expected values do not come
    # from any solver
    times = torch.linspace(0.0, 1.0, 5, dtype=F64)
    exact = [rotation_exact(X0, 0.0, float(t)) for t in times]

    def gen():
        return zip(times[1:], exact[1:], strict=True)

    sol = collect(gen(), X0, times, 7, trajectory=True)
    assert isinstance(sol, Solution) and sol.nfe == 7 and sol.times is times
    assert torch.equal(sol.x, exact[-1])
    assert sol.trajectory.shape == (5, *X0.shape)
    assert torch.equal(sol.trajectory, torch.stack(exact))
    bare = collect(gen(), X0, times, 0)
    assert bare.trajectory is None and torch.equal(bare.x, exact[-1])
    # no steps at all: the start is the end
    assert torch.equal(collect(iter(()), X0, times[:1], 0).x, X0)


def test_collect_reads_the_count_of_a_counted_field_after_the_last_step():
    # odeint's nfe is collect's reading of the counter after the generator is exhausted:
    # rk4 evaluates f 4 times per step, 6 steps
    sol = odeint(decay, X0, torch.linspace(0.0, 1.0, 7, dtype=F64), "rk4", trajectory=True)
    assert sol.nfe == 24 and sol.trajectory.shape == (7, *X0.shape)
    stepped = [x for _, x in steps(decay, X0, torch.linspace(0.0, 1.0, 7, dtype=F64), "rk4")]
    assert torch.equal(sol.trajectory[1:], torch.stack(stepped))


def test_randn_like_draws_from_the_generator_in_the_state_dtype():
    x = torch.zeros(4, 3, dtype=torch.float32)
    z = randn_like(x, torch.Generator().manual_seed(3))
    assert z.shape == x.shape and z.dtype == torch.float32 and z.device == x.device
    assert torch.equal(z, torch.randn(4, 3, generator=torch.Generator().manual_seed(3)))
    z64 = randn_like(x.double(), torch.Generator().manual_seed(3))
    assert z64.dtype == F64 and not torch.equal(z64.float(), torch.zeros(4, 3))


def test_noise_steps_hands_each_update_one_fresh_standard_normal_draw():
    # the hook's contract, checked against draws made here: update i gets (x_i, t_i, dt_i,
    # xi_i) with xi_i the i-th draw of x's shape from the generator, and x_{i+1} = its result
    times = torch.tensor([0.0, 0.1, 0.3, 0.6], dtype=F64)
    seen = []

    def update(x, t, dt, xi):
        seen.append((float(t), float(dt), xi))
        return x + xi

    out = list(noise_steps(update, X0, times, torch.Generator().manual_seed(4)))
    ref = torch.Generator().manual_seed(4)
    draws = [torch.randn(X0.shape, generator=ref, dtype=F64) for _ in range(3)]
    assert [(t, round(dt, 12)) for t, dt, _ in seen] == [(0.0, 0.1), (0.1, 0.2), (0.3, 0.3)]
    assert all(torch.equal(xi, d) for (_, _, xi), d in zip(seen, draws, strict=True))
    assert [float(t) for t, _ in out] == [0.1, 0.3, 0.6]
    assert torch.equal(out[-1][1], X0 + draws[0] + draws[1] + draws[2])
    with pytest.raises(ValueError, match="monotone"):
        noise_steps(update, X0, [0.0, 0.5, 0.2])  # validated when called, not when stepped


def test_sde_steps_is_noise_steps_with_the_euler_maruyama_update():
    times = torch.linspace(1.0, 0.0, 9, dtype=F64)  # a decreasing grid: variance |dt|

    def em(x, t, dt, xi):
        return x + dt * (-x) + 0.5 * (dt.abs().sqrt() * xi)

    hooked = list(noise_steps(em, X0, times, torch.Generator().manual_seed(1)))
    direct = list(
        sde_steps(lambda x, t: -x, lambda t: 0.5, X0, times, torch.Generator().manual_seed(1))
    )
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(hooked, direct, strict=True))
