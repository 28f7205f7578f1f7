"""flow_matching against independent numerics: the loss's minimiser for Gaussian endpoints is
the closed-form 1-RF velocity (theory.rectified_flow), Euler on that velocity converges at
first order to the closed-form flow, guidance reduces to its two fields at w = 0 and 1, the
ODE coupling lands on the closed-form end point. Time: t = 0 noise, t = 1 data."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from pflow_explore import flow_matching as FM
from pflow_explore.theory.rectified_flow import (
    gaussian_2rf_velocity,
    gaussian_rf_flow,
    gaussian_rf_velocity,
)

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


class ExactRF(nn.Module):
    """The exact 1-RF (or 2-RF) field of N(0, I) -> N(mu, sigma^2 I) as a net v(x, t, y)."""

    def __init__(self, mu: Tensor, sigma: float, second: bool = False) -> None:
        super().__init__()
        self.mu, self.sigma, self.second = mu, sigma, second
        self.dummy = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        t = torch.as_tensor(t, dtype=F64).reshape(-1)
        t = t[0] if t.numel() == 1 else t
        f = gaussian_2rf_velocity if self.second else gaussian_rf_velocity
        return f(x, t.clamp(0, 1), self.mu, self.sigma)


def problem(d: int, seed: int) -> tuple[Tensor, float, torch.Generator]:
    g = torch.Generator().manual_seed(seed)
    mu = 2 * torch.randn(d, generator=g, dtype=F64)
    sigma = float(0.3 + 1.5 * torch.rand((), generator=g, dtype=F64))
    return mu, sigma, g


# ---- interpolation and loss ---------------------------------------------------------------
def test_interpolate_hand_values_and_time_convention():
    x0 = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    x1 = torch.tensor([[4.0, 0.0], [3.0, 1.0]])
    out = FM.interpolate(x0, x1, torch.tensor([0.25, 1.0]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.5], [3.0, 1.0]]))
    torch.testing.assert_close(FM.interpolate(x0, x1, torch.tensor(0.0)), x0)  # t = 0: noise
    imgs0, imgs1 = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    assert FM.interpolate(imgs0, imgs1, torch.tensor([0.5, 0.1]))[1].max() == pytest.approx(0.1)


def fit_affine(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """argmin over (A, b) of the loss with v(x) = x A^T + b, by L-BFGS through autograd."""
    d = x0.shape[1]
    a = torch.zeros(d, d, dtype=F64, requires_grad=True)
    b = torch.zeros(d, dtype=F64, requires_grad=True)
    opt = torch.optim.LBFGS([a, b], lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = FM.rectified_flow_loss(lambda x, tt, y: x @ a.T + b, x0, x1, t)
        loss.backward()
        return loss

    opt.step(closure)
    return a.detach(), b.detach()


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_minimiser_over_affine_fields_is_the_closed_form_velocity(seed):
    # At a fixed t, E[X1 - X0 | X_t = x] is affine in x for Gaussian endpoints. Minimise the
    # loss over affine fields v(x) = x A^T + b (L-BFGS, autograd through the loss) on samples
    # and compare with theory.gaussian_rf_velocity; the other time convention is far off.
    d, n = 2, 100_000
    mu, sigma, g = problem(d, seed)
    x0 = torch.randn(n, d, generator=g, dtype=F64)
    x1 = mu + sigma * torch.randn(n, d, generator=g, dtype=F64)
    for t_value in (0.3, 0.7):
        t = torch.full((n,), t_value, dtype=F64)
        a, b = fit_affine(x0, x1, t)
        probe = torch.randn(200, d, generator=g, dtype=F64) + t_value * mu
        learned = probe @ a.T + b
        exact = gaussian_rf_velocity(probe, t_value, mu, sigma)
        flipped = gaussian_rf_velocity(probe, 1 - t_value, mu, sigma)
        err = float((learned - exact).norm(dim=1).max())
        assert err < 0.05 * (1 + float(mu.norm())), (t_value, err)
        assert float((learned - flipped).norm(dim=1).max()) > 10 * err


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_velocity_is_a_stationary_point_of_the_rectified_flow_loss(seed):
    # L(v + eps u) is minimal at eps = 0 iff v(x, t) = E[X1 - X0 | X_t = x]: the derivative
    # dL/deps = 2 E <v - (X1 - X0), u> / d must vanish for every direction u (autograd,
    # Monte Carlo over independent pairs, within 4 standard errors). The field of the other
    # time convention (t -> 1 - t) is not stationary: the loss falls towards the exact one.
    d, n = 3, 60_000
    mu, sigma, g = problem(d, seed)
    x0 = torch.randn(n, d, generator=g, dtype=F64)
    x1 = mu + sigma * torch.randn(n, d, generator=g, dtype=F64)
    t = torch.rand(n, generator=g, dtype=F64)
    exact = ExactRF(mu, sigma)

    def flipped(x: Tensor, tt: Tensor, y: Tensor | None = None) -> Tensor:
        return exact(x, 1 - tt)

    def derivative(base, direction) -> tuple[float, float]:
        eps = torch.zeros((), dtype=F64, requires_grad=True)

        def v(x: Tensor, tt: Tensor, y: Tensor | None = None) -> Tensor:
            return base(x, tt) + eps * direction(x, tt)

        (grad,) = torch.autograd.grad(FM.rectified_flow_loss(v, x0, x1, t), eps)
        with torch.no_grad():
            xt = t[:, None] * x1 + (1 - t[:, None]) * x0  # written out, not FM.interpolate
            per = 2 * ((base(xt, t) - (x1 - x0)) * direction(xt, t)).mean(1)
        return float(grad), float(per.std() / math.sqrt(n))

    def wiggle(x: Tensor, tt: Tensor) -> Tensor:
        return torch.sin(x) * (1 + tt[:, None]) + 0.5

    def towards_flipped(x: Tensor, tt: Tensor) -> Tensor:
        return flipped(x, tt) - exact(x, tt)

    for direction in (wiggle, towards_flipped):
        grad, se = derivative(exact, direction)
        assert abs(grad) < 4 * se, (direction.__name__, grad, se)
    grad, se = derivative(flipped, lambda x, tt: exact(x, tt) - flipped(x, tt))
    assert grad < -10 * se, (grad, se)


def test_loss_hand_value():
    x0 = torch.zeros(2, 2)
    x1 = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    t = torch.tensor([0.5, 0.25])
    # v = 0: the loss is the mean of |X1 - X0|^2 over batch and coordinates
    loss = FM.rectified_flow_loss(lambda x, tt, y: torch.zeros_like(x), x0, x1, t)
    assert float(loss) == pytest.approx((4 + 16) / 4)
    # v = the straight-line velocity itself: zero
    assert float(FM.rectified_flow_loss(lambda x, tt, y: x1 - x0, x0, x1, t)) == 0.0


def test_uniform_time_and_independent_pairs():
    g = torch.Generator().manual_seed(0)
    t = FM.uniform_time(50_000, 0.2, g, torch.device("cpu"))
    assert float(t.min()) >= 0.2 and float(t.max()) <= 1.0
    assert float(t.mean()) == pytest.approx(0.6, abs=0.01)
    x1 = 3 + torch.randn(50_000, 2, generator=g)
    p = FM.independent_pairs(x1, torch.Generator().manual_seed(1))
    q = FM.independent_pairs(x1, torch.Generator().manual_seed(1))
    assert p.z1 is x1 and torch.equal(p.z0, q.z0) and p.nfe == 0
    assert float(p.z0.mean(0).abs().max()) < 0.03 and float((p.z0.std(0) - 1).abs().max()) < 0.03
    corr = torch.corrcoef(torch.stack([p.z0[:, 0], x1[:, 0]]))[0, 1]
    assert abs(float(corr)) < 0.03  # independent of the data


# ---- sampling -----------------------------------------------------------------------------
def test_euler_on_the_exact_velocity_converges_at_first_order():
    mu, sigma, g = problem(3, seed=2)
    z0 = torch.randn(400, 3, generator=g, dtype=F64)
    v = ExactRF(mu, sigma)
    errors = []
    for n_steps in (16, 32, 64, 128):
        sol = FM.euler_sample(v, z0, n_steps, trajectory=True)
        times = torch.linspace(0, 1, n_steps + 1, dtype=F64)
        exact = torch.stack([gaussian_rf_flow(z0, float(s), mu, sigma) for s in times])
        assert sol.trajectory.shape == (n_steps + 1, 400, 3) and sol.nfe == n_steps
        errors.append(float((sol.trajectory - exact).norm(dim=-1).max()))
    orders = [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:], strict=True)]
    assert all(0.85 < p < 1.15 for p in orders), (errors, orders)
    with pytest.raises(ValueError, match="n_steps"):
        FM.euler_sample(v, z0, 0)


def test_one_step_collapses_1rf_and_is_exact_for_2rf():
    mu, sigma, g = problem(3, seed=4)
    z0 = torch.randn(100, 3, generator=g, dtype=F64)
    torch.testing.assert_close(FM.one_step(ExactRF(mu, sigma), z0), mu.expand(100, 3))
    torch.testing.assert_close(FM.one_step(ExactRF(mu, sigma, True), z0), mu + sigma * z0)
    torch.testing.assert_close(FM.euler_sample(ExactRF(mu, sigma, True), z0, 5).x, mu + sigma * z0)


def test_ode_coupling_of_the_exact_1rf_lands_on_the_closed_form_end_point():
    mu, sigma, g = problem(4, seed=3)
    z0 = torch.randn(50, 4, generator=g, dtype=F64)
    pairs = FM.sample_pairs(ExactRF(mu, sigma), z0, n_steps=64, batch=16)
    assert pairs.z0 is z0 and pairs.nfe == 4 * 64  # rk4
    torch.testing.assert_close(pairs.z1, mu + sigma * z0, rtol=0, atol=1e-7)
    one_batch = FM.sample_pairs(ExactRF(mu, sigma), z0, n_steps=64)
    torch.testing.assert_close(one_batch.z1, pairs.z1, rtol=0, atol=1e-12)


# ---- guidance -----------------------------------------------------------------------------
class ClassShift(nn.Module):
    """v(x, t, y) = x t + c_y with a known vector per label (the null row last)."""

    n_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [0.5, 0.5]]))
        self.calls = 0

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        self.calls += 1
        y = torch.full((len(x),), 3) if y is None else y
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)
        return x * t + self.c[y].detach()


def test_guidance_reduces_to_the_unconditional_and_conditional_fields():
    v = ClassShift()
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 0])
    t = torch.tensor([0.1, 0.2, 0.3, 0.4])
    cond = x * t[:, None] + v.c.detach()[y]
    uncond = x * t[:, None] + v.c.detach()[3]
    torch.testing.assert_close(FM.guided_velocity(v, x, t, y, 0.0), uncond)
    torch.testing.assert_close(FM.guided_velocity(v, x, t, y, 1.0), cond)
    torch.testing.assert_close(FM.guided_velocity(v, x, t, y, 2.5), uncond + 2.5 * (cond - uncond))
    null = torch.full((4,), 3)
    torch.testing.assert_close(FM.guided_velocity(v, x, t, null, 4.0), uncond)  # null ignores w
    v.calls = 0
    FM.guided_velocity(v, x, 0.5, y, 3.0)
    assert v.calls == 1  # both branches in one batch
    f = FM.velocity_field(v, y, 2.0)
    torch.testing.assert_close(f(x, torch.tensor(0.5)), FM.guided_velocity(v, x, 0.5, y, 2.0))
    with pytest.raises(ValueError, match="class-conditional"):
        FM.guided_velocity(lambda x, t, y: x, x, 0.5, y, 2.0)


def test_guided_pairs_count_two_evaluations_per_step():
    v = ClassShift()
    z0 = torch.zeros(6, 2)
    pairs = FM.sample_pairs(v, z0, torch.tensor([0, 1, 2, 0, 1, 2]), 2.0, n_steps=3, method="euler")
    assert pairs.nfe == 6
    # dz/dt = z t + c_w: from z0 = 0, z1 = c_w (e^{1/2} - 1) / (1/2) exactly; Euler is close
    c_w = v.c.detach()[3] + 2.0 * (v.c.detach()[[0, 1, 2, 0, 1, 2]] - v.c.detach()[3])
    exact = c_w * (math.exp(0.5) - 1) / 0.5
    assert float((pairs.z1 - exact).abs().max()) < 0.15 * float(exact.abs().max())


# ---- training and adapters ----------------------------------------------------------------
def test_seeded_init_depends_on_the_seed_only_and_leaves_the_global_rng_alone():
    make = FM.seeded(lambda: nn.Linear(3, 3), 11)
    torch.manual_seed(0)
    a = make()
    state = torch.random.get_rng_state()
    torch.rand(5)  # whatever ran before
    b = make()
    assert torch.equal(a.weight, b.weight)
    torch.manual_seed(0)
    assert torch.equal(torch.random.get_rng_state(), state)  # make() drew nothing globally
    assert not torch.equal(FM.seeded(lambda: nn.Linear(3, 3), 12)().weight, a.weight)


def test_train_rectified_flow_resamples_every_batch_and_is_reproducible():
    from pflow_explore.nets import MLP

    mu, sigma = torch.tensor([1.5, -0.5]), 0.5
    calls = []

    def sample_data(n: int, gen: torch.Generator) -> tuple[Tensor, None]:
        x1 = mu + sigma * torch.randn(n, 2, generator=gen)
        calls.append(x1[0].clone())
        return x1, None

    stage = FM.Stage(600, 256, 3e-3, seed=1, desc="test 1-RF", init_seed=0)
    make = lambda: FM.VelocityNet(MLP(2, hidden=64, depth=2))  # noqa: E731
    result = FM.train_rectified_flow(make, sample_data, stage)
    assert len(calls) == 600 and not torch.equal(calls[0], calls[1])
    torch.rand(3)  # the global RNG moved: a seeded stage trains the same weights
    again = FM.train_rectified_flow(make, sample_data, stage)
    for p, q in zip(result.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(p, q)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(400, 2, generator=g) * 0.8
    for t in (0.3, 0.6, 0.9):
        xt = t * mu + math.sqrt((1 - t) ** 2 + t**2 * sigma**2) * x  # points on the flow
        with torch.no_grad():
            learned = result.model(xt, t)
        exact = gaussian_rf_velocity(xt.double(), t, mu.double(), sigma).float()
        rel = float((learned - exact).norm(dim=1).mean() / exact.norm(dim=1).mean())
        assert rel < 0.2, (t, rel)


def test_widget_adapters_keep_the_dtype():
    mu, sigma = torch.tensor([1.0, 2.0], dtype=F64), 0.5
    v = ExactRF(mu, sigma, second=True).float()
    x = torch.zeros(3, 2, dtype=F64)
    out = FM.plain_field(v)(x, 0.5)
    assert out.dtype == F64
    torch.testing.assert_close(FM.one_step_map(v)(x), mu.expand(3, 2))
    sample = FM.trajectory_sampler(v, (1, 2))
    assert sample(4, 1.0, torch.zeros(5, 2), torch.zeros(5)).shape == (5, 5, 1, 2)
    one = FM.trajectory_sampler(v, (1, 2), one_step_only=True)
    assert one(4, 1.0, torch.zeros(5, 2), torch.zeros(5)).shape == (5, 1, 2)


# ---- noise, labels and batched generation ---------------------------------------------------
def test_gaussian_noise_is_seeded_standard_normal_on_the_cpu_stream():
    z = FM.gaussian_noise(20000, 3, seed=4, device=torch.device("cpu"))
    assert z.shape == (20000, 3) and z.dtype == torch.float32
    # the same numbers as a CPU generator seeded 4 draws, whatever the device
    torch.testing.assert_close(z, torch.randn(20000, 3, generator=torch.Generator().manual_seed(4)))
    assert not torch.equal(z, FM.gaussian_noise(20000, 3, seed=5, device=torch.device("cpu")))
    se = 1 / math.sqrt(20000)  # standard errors of the mean and (about) of the variance
    assert z.mean(0).abs().max() < 4 * se
    assert (z.var(0) - 1).abs().max() < 4 * math.sqrt(2) * se


def test_balanced_labels_cycle_the_classes_and_null_a_share_p_uncond():
    torch.testing.assert_close(FM.balanced_labels(23, 10, 0.0, seed=0), torch.arange(23) % 10)
    n, p = 20000, 0.3
    y = FM.balanced_labels(n, 10, p, seed=1)
    null = y == 10
    assert abs(float(null.float().mean()) - p) < 4 * math.sqrt(p * (1 - p) / n)
    kept = ~null  # the others keep their turn
    torch.testing.assert_close(y[kept], (torch.arange(n) % 10)[kept])
    torch.testing.assert_close(y, FM.balanced_labels(n, 10, p, seed=1))


def test_generate_follows_the_closed_form_flow_in_any_batch_size():
    mu, sigma, g = problem(3, seed=6)
    z0 = torch.randn(300, 3, generator=g, dtype=F64)
    exact = gaussian_rf_flow(z0, 1.0, mu, sigma)
    v = ExactRF(mu, sigma)
    err = [float((FM.generate(v, z0, n, batch=64) - exact).abs().max()) for n in (32, 64)]
    assert 0.4 < err[1] / err[0] < 0.6  # Euler: first order, so twice the steps halve the error
    torch.testing.assert_close(FM.generate(v, z0, 8, batch=7), FM.generate(v, z0, 8, batch=1000))
    # a distilled (one-step) model: z0 + v(z0, 0), which for the 1-RF collapses onto mu
    torch.testing.assert_close(FM.generate(v, z0, 99, distilled=True, batch=50), mu.expand(300, 3))


def test_straightness_per_path_matches_a_quadrature_of_the_exact_gaussian_paths():
    """Per path Z_t = t mu + r(t) Z0, r = sqrt((1 - t)^2 + t^2 sigma^2), so (Z1 - Z0) - dZ/dt
    = (sigma - 1 - r'(t)) Z0 and S(path) = |Z0|^2 int_0^1 (sigma - 1 - r')^2 dt: scipy's quad
    of that integral, not the function's rk4 + Simpson."""
    from scipy.integrate import quad

    gen = torch.Generator().manual_seed(5)
    mu, sigma = torch.randn(3, generator=gen, dtype=F64), 0.3 + float(torch.rand(1, generator=gen))
    z0 = torch.randn(40, 3, generator=gen, dtype=F64)
    field = lambda x, t: gaussian_rf_velocity(x, t, mu, sigma)
    got = FM.straightness_per_path(field, z0, 64)
    r_dot = lambda t: (t * (1 + sigma**2) - 1) / math.sqrt((1 - t) ** 2 + t**2 * sigma**2)
    integral = quad(lambda t: (sigma - 1 - r_dot(t)) ** 2, 0, 1)[0]
    assert got.shape == (40,) and got.dtype == F64
    torch.testing.assert_close(got, (z0**2).sum(1) * integral, rtol=1e-5, atol=1e-9)
    straight = FM.straightness_per_path(lambda x, t: gaussian_2rf_velocity(x, t, mu, sigma), z0, 8)
    assert float(straight.abs().max()) < 1e-12


def test_straightness_per_path_averages_to_straightness_of_field_on_a_random_net():
    from pflow_explore.nets import MLP
    from pflow_explore.trajectories import straightness_of_field

    torch.manual_seed(3)
    net = MLP(2, hidden=16, depth=2).double()
    field = lambda x, t: net(x, t.expand(len(x)))
    z0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    per_path = FM.straightness_per_path(field, z0, 16)
    assert float(per_path.min()) >= 0 and float(per_path.std()) > 0
    assert float(per_path.mean()) == pytest.approx(straightness_of_field(field, z0, 16), rel=1e-10)
    with pytest.raises(ValueError, match="even"):
        FM.straightness_per_path(field, z0, 15)
