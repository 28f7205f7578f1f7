"""Chapter 03 rectified_flow: the named steps against the exact Gaussian case and hand
computations, distillation and guidance on problems with known answers, the gpu preset's
models for one step of every stage, and a tiny end-to-end run (prepare -> cache -> run ->
claims -> figures). Time runs t = 0 (noise) to t = 1 (data)."""

from __future__ import annotations

import math
from dataclasses import replace

import plotly.graph_objects as go
import pytest
import torch
from torch import Tensor, nn

from pflow_explore.chapters import rectified_flow as R
from pflow_explore.claims import Claim
from pflow_explore.theory.rectified_flow import (
    gaussian_2rf_velocity,
    gaussian_rf_flow,
    gaussian_rf_velocity,
)
from pflow_explore.training import fit

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


class ExactRF(nn.Module):
    """The exact 1-RF (or 2-RF) field of N(0, I) -> N(mu, sigma^2 I) as a net v(x, t, y)."""

    def __init__(self, mu: Tensor, sigma: float, second: bool = False) -> None:
        super().__init__()
        self.mu, self.sigma, self.second = mu, sigma, second
        self.dummy = nn.Parameter(torch.zeros(()))

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


# ---- the loss: its minimiser is E[X1 - X0 | X_t] ----------------------------------------
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

        (grad,) = torch.autograd.grad(R.rectified_flow_loss(v, x0, x1, t), eps)
        with torch.no_grad():
            xt = t[:, None] * x1 + (1 - t[:, None]) * x0  # written out, not R.interpolate
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


def test_interpolate_hand_values():
    x0 = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    x1 = torch.tensor([[4.0, 0.0], [3.0, 1.0]])
    t = torch.tensor([0.25, 1.0])
    torch.testing.assert_close(R.interpolate(x0, x1, t), torch.tensor([[1.0, 1.5], [3.0, 1.0]]))
    torch.testing.assert_close(R.interpolate(x0, x1, torch.tensor(0.0)), x0)


def test_first_rectified_flow_resamples_the_pairing_every_batch_and_learns_the_field():
    # 1-RF of N(0, I) -> N(mu, sigma^2 I) with a small MLP: the learned field is close to the
    # closed form at interior times, and every step drew new data and new noise
    mu = torch.tensor([1.5, -0.5])
    sigma = 0.5
    calls = []

    def sample_data(n: int, gen: torch.Generator) -> tuple[Tensor, None]:
        x1 = mu + sigma * torch.randn(n, 2, generator=gen)
        calls.append(x1[0].clone())
        return x1, None

    s = R.settings("tiny", hidden_2d=64, depth_2d=2)
    torch.manual_seed(0)
    stage = R.Stage(600, 256, 3e-3, None, 1e-3, seed=1, desc="test 1-RF")
    result = R.train_rectified_flow(lambda: R.make_net_2d(s), sample_data, stage)
    assert len(calls) == 600 and not torch.equal(calls[0], calls[1])
    g = torch.Generator().manual_seed(2)
    x = torch.randn(400, 2, generator=g) * 0.8
    for t in (0.3, 0.6, 0.9):
        xt = t * mu + math.sqrt((1 - t) ** 2 + t**2 * sigma**2) * x  # points on the flow
        with torch.no_grad():
            learned = result.model(xt, t)
        exact = gaussian_rf_velocity(xt.double(), t, mu.double(), sigma).float()
        rel = float((learned - exact).norm(dim=1).mean() / exact.norm(dim=1).mean())
        assert rel < 0.2, (t, rel)


# ---- pairs, Euler steps and the Gaussian case ---------------------------------------------
def test_sample_pairs_of_the_exact_1rf_land_on_the_closed_form_end_point():
    mu, sigma, g = problem(4, seed=3)
    z0 = torch.randn(50, 4, generator=g, dtype=F64)
    pairs = R.sample_pairs(ExactRF(mu, sigma), z0, n_steps=64, batch=16)
    assert pairs.z0 is z0 and pairs.nfe == 4 * 64
    torch.testing.assert_close(pairs.z1, gaussian_rf_flow(z0, 1.0, mu, sigma), rtol=0, atol=1e-7)
    torch.testing.assert_close(pairs.z1, mu + sigma * z0, rtol=0, atol=1e-7)


def test_one_euler_step_collapses_1rf_and_is_exact_for_2rf():
    mu, sigma, g = problem(3, seed=4)
    z0 = torch.randn(100, 3, generator=g, dtype=F64)
    torch.testing.assert_close(R.one_step(ExactRF(mu, sigma), z0), mu.expand(100, 3))
    exact2 = ExactRF(mu, sigma, second=True)
    torch.testing.assert_close(R.one_step(exact2, z0), mu + sigma * z0)
    many = R.euler_sample(exact2, z0, 7, trajectory=True)
    assert many.trajectory.shape == (8, 100, 3) and many.nfe == 7
    torch.testing.assert_close(many.x, mu + sigma * z0)
    with pytest.raises(ValueError, match="n_steps"):
        R.euler_sample(exact2, z0, 0)


def test_theory_check_reproduces_the_card_formulas():
    th = R.theory_check(d=3, sigma=1.3, n=8000, n_steps=32, seed=1)
    assert th.straightness_formula == pytest.approx(3 * 1.3 * (2 - math.pi / 2))
    assert abs(th.straightness - th.straightness_formula) < 4 * th.straightness_se
    assert th.euler_2rf_error < 1e-12 and th.one_step_spread < 1e-12
    assert th.w2_sq == pytest.approx(3 * 1.3**2, rel=0.05)


# ---- guidance -------------------------------------------------------------------------------
class ClassShift(nn.Module):
    """v(x, t, y) = x * t + c_y with a known vector per label (the null row last)."""

    n_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.c = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [0.5, 0.5]])
        self.calls = 0

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        self.calls += 1
        y = torch.full((len(x),), 3) if y is None else y
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)
        return x * t + self.c[y]


def test_guided_velocity_is_the_cfg_combination():
    v = ClassShift()
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 3])  # the last is the null class
    t = torch.tensor([0.1, 0.2, 0.3, 0.4])
    for alpha in (0.0, 1.0, 2.5):
        out = R.guided_velocity(v, x, t, y, alpha)
        null = x * t[:, None] + v.c[3]
        expected = null + alpha * (x * t[:, None] + v.c[y] - null)
        torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[3], x[3] * 0.4 + v.c[3])  # null rows ignore alpha
    v.calls = 0
    R.guided_velocity(v, x, 0.5, y, 3.0)
    assert v.calls == 1  # both branches in one batch
    with pytest.raises(ValueError, match="class-conditional"):
        R.guided_velocity(lambda x, t, y: x, x, 0.5, y, 2.0)


# ---- reflow and distillation on problems with known answers ------------------------------
class Affine(nn.Module):
    """s(z, t, y) = z W^T + b: a one-step student whose optimum is known in closed form."""

    n_classes = None

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)
        nn.init.zeros_(self.lin.weight)
        nn.init.zeros_(self.lin.bias)

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        return self.lin(x)


@pytest.mark.parametrize("loss", ["l2", "pseudo_huber"])
def test_distill_recovers_a_linear_coupling_and_keeps_the_teacher(loss):
    g = torch.Generator().manual_seed(6)
    a = torch.tensor([[0.5, 0.3], [-0.2, 1.4]])
    b = torch.tensor([1.0, -2.0])
    z0 = torch.randn(4000, 2, generator=g)
    pairs = R.Pairs(z0, z0 @ a.T + b)
    teacher = Affine(2)
    stage = R.Stage(800, 256, 2e-2, None, seed=3, loss=loss, huber_c=0.01, desc="test distil")
    made = []

    def lazy() -> R.Pairs:
        made.append(1)
        return pairs

    student = R.distill(teacher, lazy, stage).model
    assert made == [1]  # lazy pairs are made once, when training starts
    assert float(teacher.lin.weight.detach().abs().max()) == 0.0  # the student is a copy
    torch.testing.assert_close(student.lin.weight.detach(), a - torch.eye(2), atol=2e-2, rtol=0)
    torch.testing.assert_close(student.lin.bias.detach(), b, atol=2e-2, rtol=0)


def test_distillation_loss_values():
    z0 = torch.zeros(2, 3)
    z1 = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    student = Affine(3)  # outputs 0: the error is -z1
    assert float(R.distillation_loss(student, z0, z1).detach()) == pytest.approx((25 + 1) / 6)
    huber = R.distillation_loss(student, z0, z1, loss="pseudo_huber", c=1.0)
    assert float(huber.detach()) == pytest.approx(((math.sqrt(26) - 1) + (math.sqrt(2) - 1)) / 2)
    with pytest.raises(ValueError, match="loss"):
        R.distillation_loss(student, z0, z1, loss="lpips")


def test_reflow_on_the_exact_coupling_straightens_the_gaussian_flow():
    # pairs of the exact 1-RF (Z1 = mu + sigma Z0) train a 2-RF whose one Euler step is close
    # to the coupling and whose straightness is far below the 1-RF's d sigma (2 - pi/2)
    from pflow_explore.trajectories import straightness_of_field

    mu, sigma = torch.tensor([1.0, -1.0]), 0.4
    g = torch.Generator().manual_seed(7)
    z0 = torch.randn(4000, 2, generator=g)
    pairs = R.Pairs(z0, mu + sigma * z0)
    torch.manual_seed(0)
    start = R.make_net_2d(R.settings("tiny", hidden_2d=64, depth_2d=2))
    stage = R.Stage(700, 256, 3e-3, None, seed=4, desc="test reflow")
    v2 = R.reflow(start, pairs, stage).model.eval()
    test = torch.randn(500, 2, generator=g)
    with torch.no_grad():
        err = (R.one_step(v2, test) - (mu + sigma * test)).norm(dim=1).mean()
        s2 = straightness_of_field(R.velocity_field(v2), test, 16)
    s1 = 2 * sigma * (2 - math.pi / 2)
    assert float(err) < 0.1, float(err)
    assert s2 < 0.1 * s1, (s2, s1)


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

    def one_step_of(stage: R.Stage, run) -> nn.Module:
        before = [p.detach().clone() for p in net.parameters()]
        result = run(replace(stage, steps=1))
        assert math.isfinite(result.losses[0])
        after = list(result.model.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        return result.model

    teacher_stage = R._stage_digits(s, s.teacher_steps, "gpu teacher", 0)
    teacher = one_step_of(
        teacher_stage,
        lambda st: R.train_rectified_flow(lambda: net, sample_data, st, s.p_uncond),
    )
    z0 = R.noise(4, 1024, 0, torch.device("cpu"))
    y = R.pair_labels(4, s.p_uncond, 0)
    pairs = R.sample_pairs(teacher, z0, y, s.guidance_reflow, n_steps=1)
    assert pairs.z1.shape == (4, 1024) and pairs.nfe == 8  # rk4, guided: 2 x 4
    net = teacher
    one_step_of(
        R._stage_digits(s, s.reflow_steps, "gpu reflow", 21), lambda st: R.reflow(net, pairs, st)
    )
    one_step_of(
        R._stage_digits(s, s.distill_steps, "gpu distil", 31, distil=True),
        lambda st: R.distill(net, pairs, st),
    )
    assert fit  # the shared loop is what the stages call


# ---- tiny end to end ------------------------------------------------------------------------
def test_tiny_run_end_to_end_and_from_the_cache(data_dir):
    s = R.settings("tiny")
    R.prepare(s)
    assert len(list((data_dir / "cache" / "rectified_flow").glob("*.pt"))) == 5 + 4
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
    # the widget adapters take float64 points and a float t
    field = R.widget_field(ch.models["2-RF"])
    out = field(torch.zeros(3, 2, dtype=F64), 0.5)
    assert out.dtype == F64 and out.shape == (3, 2)
