"""SDEStepper, headless: ODE and SDE from one exact (b, s) pair against Gaussian closed forms.

The pair is written here from the card's Gaussian formulas (02_interpolants, "Exact cases"),
independently of ``pflow_explore.theory``: linear interpolant x_t = (1 - t) x0 + t x1 +
gamma z with gamma^2 = a t (1 - t), x0 ~ N(m0, C0), x1 ~ N(m1, C1),

    m_t = (1 - t) m0 + t m1,   C_t = (1 - t)^2 C0 + t^2 C1 + gamma^2 I,
    s = -C_t^-1 (x - m_t),
    b = m1 - m0 + (-(1 - t) C0 + t C1 + (a (1 - 2t) / 2) I) C_t^-1 (x - m_t).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pflow_explore.metrics import energy_distance
from pflow_explore.widgets.sde_stepper import SDEStepper

A = 1.0
M0 = torch.tensor([0.0, 0.0], dtype=torch.float64)
C0 = torch.eye(2, dtype=torch.float64)
M1 = torch.tensor([1.5, -0.5], dtype=torch.float64)
C1 = torch.tensor([[0.6, 0.3], [0.3, 0.4]], dtype=torch.float64)
EYE = torch.eye(2, dtype=torch.float64)


def mean_cov(t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """m_t (2,), C_t (2, 2) of x_t."""
    return (1 - t) * M0 + t * M1, (1 - t) ** 2 * C0 + t**2 * C1 + A * t * (1 - t) * EYE


def score(x: torch.Tensor, t: float) -> torch.Tensor:
    m, c = mean_cov(t)
    return -torch.linalg.solve(c, (x.double() - m).T).T.to(x.dtype)


def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    m, c = mean_cov(t)
    k = -(1 - t) * C0 + t * C1 + 0.5 * A * (1 - 2 * t) * EYE
    return (M1 - M0 + (k @ torch.linalg.solve(c, (x.double() - m).T)).T).to(x.dtype)


def gaussian_samples(n: int, seed: int, mean=M0, cov=C0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return mean + z @ torch.linalg.cholesky(cov).T


def assert_moments(x: np.ndarray, mean: torch.Tensor, cov: torch.Tensor, slack: float) -> None:
    """Sample mean and covariance of x (n, 2) within 4 standard errors (+ slack) of the truth.

    SE(mean_i) = sqrt(C_ii / n); SE(C_ij) = sqrt((C_ii C_jj + C_ij^2) / n) (Gaussian).
    """
    n = x.shape[0]
    m, c = mean.numpy(), cov.numpy()
    se_m = np.sqrt(np.diag(c) / n)
    se_c = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / n)
    assert np.all(np.abs(x.mean(0) - m) < 4 * se_m + slack), (x.mean(0), m)
    assert np.all(np.abs(np.cov(x.T) - c) < 4 * se_c + slack), (np.cov(x.T), c)


def figure_data(fig) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.array(t.x, dtype=float), np.array(t.y, dtype=float)) for t in fig.data]


def same_data(a, b) -> bool:
    return all(
        np.array_equal(x1, x2, equal_nan=True) and np.array_equal(y1, y2, equal_nan=True)
        for (x1, y1), (x2, y2) in zip(a, b, strict=True)
    )


@pytest.fixture(scope="module")
def small():
    x0 = gaussian_samples(200, seed=1)
    target = gaussian_samples(200, seed=2, mean=M1, cov=C1)
    return SDEStepper(velocity, score, x0, target, n_steps=20, n_traj_shown=5, seed=3)


def test_construction_and_controls(small):
    assert small.slider.max == 20 and small.play.max == 20 and small.step == 20
    assert small.eps == 0.5 and small.eps_slider.value == 0.5 and small.eps_box.value == 0.5
    assert small.ode.shape == small.sde.shape == (21, 200, 2)
    assert "pflow-input" in small.eps_box._dom_classes
    assert "pflow-input" in small.steps_box._dom_classes
    assert "pflow-message" in small.message._dom_classes
    assert small.figure is small.children[0]
    np.testing.assert_allclose(small.ode[0], small.sde[0])  # one x0 for both


def test_step_slider_shows_the_particles_at_that_step(small):
    small.slider.value = 7  # what the browser does
    assert small.step == 7
    ode_now, sde_now = small.figure.data[3], small.figure.data[7]
    np.testing.assert_allclose(ode_now.x, small.ode[7, :, 0])
    np.testing.assert_allclose(sde_now.y, small.sde[7, :, 1])
    traced = small.figure.data[2]
    assert len(traced.x) == 5 * (7 + 2)  # 5 paths of 8 points, each with a NaN break
    small.next_button.click()
    assert small.step == 8 and small.slider.value == 8
    small.step_to(20)


def test_eps_resamples_only_the_sde_and_a_fixed_seed_repeats(small):
    ode_before = small.ode.copy()
    first = small.sde.copy()
    assert small.set_eps(2.0)
    assert small.eps_box.value == 2.0 and small.eps_slider.value == 2.0
    assert not np.allclose(small.sde[-1], first[-1])
    np.testing.assert_array_equal(small.ode, ode_before)
    assert "ε = 2" in small.figure.layout.annotations[1].text
    small.eps_slider.value = 0.5  # the slider resamples too
    np.testing.assert_array_equal(small.sde, first)


def test_readout_distances_are_computed_from_the_final_samples(small):
    d = small.distances
    target = gaussian_samples(200, seed=2, mean=M1, cov=C1)
    expect = energy_distance(torch.as_tensor(small.sde[-1], dtype=torch.float64), target)
    assert d["SDE"]["energy"] == pytest.approx(expect, rel=1e-5)
    assert f"{d['ODE']['energy']:.4f}" in small.readout.value
    # x0 (the source, far from the target) is much further away than either model's output
    far = energy_distance(gaussian_samples(200, seed=1), target)
    assert d["ODE"]["energy"] < 0.2 * far and d["SDE"]["energy"] < 0.2 * far


@pytest.mark.parametrize(
    "act",
    [
        lambda w: w.set_eps(-1.0),
        lambda w: setattr(w.eps_box, "value", -1.0),
        lambda w: w.set_eps(float("nan")),
        lambda w: w.set_n_steps(0),
        lambda w: setattr(w.steps_box, "value", -3),
    ],
)
def test_bad_input_shows_a_message_and_keeps_the_picture(small, act):
    before = figure_data(small.figure)
    state = small.state
    act(small)  # never raises
    assert small.message.value != "" and "previous picture" in small.message.value
    assert small.state is state
    assert same_data(before, figure_data(small.figure))
    small.step_to(3)  # stepping still works after the error
    assert not same_data(before, figure_data(small.figure))
    assert small.set_eps(0.5) and small.set_n_steps(20) and small.message.value == ""
    small.step_to(20)


def test_n_steps_changes_the_grid_and_the_slider(small):
    assert small.set_n_steps(10)
    assert small.slider.max == 10 and small.step == 10 and small.ode.shape[0] == 11
    assert small.steps_box.value == 10
    assert small.set_n_steps(20) and small.slider.max == 20


def test_a_diverging_sde_is_a_message_not_a_traceback():
    x0 = gaussian_samples(20, seed=4)
    w = SDEStepper(velocity, lambda x, t: 1e200 * x, x0, n_steps=5, eps=0.0)
    before = figure_data(w.figure)
    assert not w.set_eps(1.0)
    assert "diverged" in w.message.value
    assert same_data(before, figure_data(w.figure))


def test_bad_constructor_arguments_raise_clear_value_errors():
    x0 = gaussian_samples(10, seed=0)
    with pytest.raises(ValueError, match="x0 must have shape"):
        SDEStepper(velocity, score, x0[:, :1])
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        SDEStepper(velocity, score, x0, eps_values=(0.0, -1.0))
    with pytest.raises(ValueError, match="n_steps must be an integer"):
        SDEStepper(velocity, score, x0, n_steps=0)
    with pytest.raises(ValueError, match="must return"):
        SDEStepper(lambda x, t: x[:, :1], score, x0, n_steps=2)


def test_exact_ode_carries_the_source_to_the_target_moments():
    x0 = gaussian_samples(4000, seed=5)
    w = SDEStepper(velocity, score, x0, n_steps=60, eps_values=(0.0,), n_traj_shown=2)
    # Heun with 60 steps: discretization error far below the MC error of 4000 samples
    assert_moments(w.ode[-1].astype(np.float64), M1, C1, slack=0.0)
    assert_moments(w.ode[30].astype(np.float64), *mean_cov(0.5), slack=0.0)


def test_exact_sde_keeps_the_marginals_for_eps_above_zero():
    x0 = gaussian_samples(4000, seed=6)
    w = SDEStepper(velocity, score, x0, n_steps=100, eps=1.0, n_traj_shown=2, seed=7)
    # Euler-Maruyama has weak error O(dt): allow 0.03 beyond 4 standard errors
    for i in (50, 100):
        assert_moments(w.sde[i].astype(np.float64), *mean_cov(i / 100), slack=0.03)
    # and the noise really acts: SDE paths differ from the ODE paths
    assert np.abs(w.sde[-1] - w.ode[-1]).mean() > 0.1


def test_a_wrong_sign_of_the_score_term_would_fail_the_marginal_check():
    """The check above can fail: drift b - eps s with the same noise widens the marginal."""
    x0 = gaussian_samples(4000, seed=6)
    w = SDEStepper(velocity, lambda x, t: -score(x, t), x0, n_steps=100, eps=1.0, seed=7)
    with pytest.raises(AssertionError):
        assert_moments(w.sde[-1].astype(np.float64), M1, C1, slack=0.03)


def test_t_range_sets_the_time_grid():
    x0 = gaussian_samples(10, seed=0)
    w = SDEStepper(velocity, score, x0, n_steps=4, t_range=(0.1, 0.9))
    np.testing.assert_allclose(w.state.times, [0.1, 0.3, 0.5, 0.7, 0.9])
    w.step_to(2)
    assert w.time_label.value == "t = 0.500"
    assert math.isclose(float(w.state.times[-1]), 0.9)


def test_a_learners_sde_step_drives_the_sde_and_the_packages_gives_the_same_paths():
    from pflow_explore.samplers import sde_step
    from pflow_explore.widgets.sde_stepper import sde_trajectories

    x0 = gaussian_samples(50, seed=6)
    times = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)
    default = sde_trajectories(velocity, score, 0.7, x0, times, seed=9)
    mine = sde_trajectories(velocity, score, 0.7, x0, times, seed=9, step=sde_step)
    torch.testing.assert_close(mine, default, rtol=1e-10, atol=1e-10)

    def wrong(x, b, s, eps, dt, xi):  # forgets the score term
        return x + b * dt + math.sqrt(2 * eps * dt) * xi

    off = sde_trajectories(velocity, score, 0.7, x0, times, seed=9, step=wrong)
    assert (off[-1] - default[-1]).abs().max() > 1e-3
    # the learner's SDE keeps the marginals exactly as the package's does (t = 1: rho1)
    many = gaussian_samples(4000, seed=7)
    w = SDEStepper(velocity, score, many, n_steps=100, eps=1.0, sde_step=sde_step)
    assert_moments(w.sde[-1], M1, C1, slack=0.05)


@pytest.mark.parametrize(
    ("step", "says"),
    [
        (lambda x, b, s, eps, dt, xi: (_ for _ in ()).throw(NotImplementedError), "raised"),
        (lambda x, b, s, eps, dt, xi: None, "must return the next state"),
        (lambda x, b, s, eps, dt, xi: x[:3], "must return the next state"),
    ],
)
def test_a_broken_sde_step_is_a_clear_error(step, says):
    """Notebooks pass ``Exercise.use(...)``, which never hands over a failing step; handed
    one anyway, the widget refuses it with the reason, not a traceback from deep inside."""
    x0 = gaussian_samples(20, seed=4)
    with pytest.raises(ValueError, match=says):
        SDEStepper(velocity, score, x0, n_steps=5, eps=1.0, sde_step=step)
