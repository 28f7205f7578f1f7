"""distillation against independent numerics: pseudo-Huber's limits and its gradient by finite
differences, distillation of a known linear coupling and of an exactly straight field,
reflow on Gaussian pairs straightening the paths (trajectories.straightness_of_field against
the closed form d sigma (2 - pi/2)), and the EMA target against its closed form."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from pflow_explore import distillation as D
from pflow_explore import flow_matching as FM
from pflow_explore.theory.rectified_flow import (
    gaussian_2rf_velocity,
    gaussian_rf_straightness,
    gaussian_rf_velocity,
)
from pflow_explore.trajectories import straightness_of_field

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


# ---- pseudo-Huber -------------------------------------------------------------------------
def test_pseudo_huber_tends_to_l2_over_2c_and_to_l1():
    g = torch.Generator().manual_seed(0)
    err = torch.randn(50, 3, 2, generator=g, dtype=F64)
    norm = err.flatten(1).norm(dim=1)
    big = 1e4
    torch.testing.assert_close(D.pseudo_huber(err, big), norm**2 / (2 * big), rtol=1e-6, atol=0)
    torch.testing.assert_close(D.pseudo_huber(err, 1e-9), norm, rtol=0, atol=2e-9)
    # in between: strictly below both |e| and |e|^2 / (2c)
    mid = D.pseudo_huber(err, 1.0)
    assert bool((mid < norm).all() and (mid < norm**2 / 2).all())


@pytest.mark.parametrize("c", [1e-3, 0.7, 1e3])
def test_pseudo_huber_gradient_by_finite_differences(c):
    g = torch.Generator().manual_seed(1)
    err = torch.randn(6, 4, generator=g, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(D.pseudo_huber(err, c).sum(), err)
    h, fd = 1e-5, torch.zeros_like(err)
    with torch.no_grad():
        for i in range(err.shape[0]):
            for j in range(err.shape[1]):
                e = torch.zeros_like(err)
                e[i, j] = h
                up, down = D.pseudo_huber(err + e, c)[i], D.pseudo_huber(err - e, c)[i]
                fd[i, j] = (up - down) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-5, atol=1e-7)
    e = err.detach()
    limit = e / c if c > 1e2 else e / e.norm(dim=1, keepdim=True) if c < 1e-2 else None
    if limit is not None:  # L2 / 2c -> e / c; L1 -> the unit vector
        torch.testing.assert_close(grad, limit, rtol=1e-3, atol=1e-3)


def test_distillation_loss_hand_values():
    z0 = torch.zeros(2, 3)
    z1 = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    zero = lambda x, t, y=None: torch.zeros_like(x)  # noqa: E731  the error is -z1
    assert float(D.distillation_loss(zero, z0, z1)) == pytest.approx((25 + 1) / 6)
    huber = D.distillation_loss(zero, z0, z1, loss="pseudo_huber", c=1.0)
    assert float(huber) == pytest.approx(((math.sqrt(26) - 1) + (math.sqrt(2) - 1)) / 2)
    with pytest.raises(ValueError, match="loss"):
        D.distillation_loss(zero, z0, z1, loss="lpips")


# ---- distillation -------------------------------------------------------------------------
class Affine(nn.Module):
    """s(z, t, y) = z W^T + b: a one-step student whose optimum is known in closed form."""

    def __init__(self, d: int, weight: Tensor | None = None, bias: Tensor | None = None) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)
        with torch.no_grad():
            self.lin.weight.copy_(0 if weight is None else weight)
            self.lin.bias.copy_(0 if bias is None else bias)

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        return self.lin(x)


@pytest.mark.parametrize("loss", ["l2", "pseudo_huber"])
def test_distill_recovers_a_linear_coupling_and_keeps_the_teacher(loss):
    g = torch.Generator().manual_seed(6)
    a = torch.tensor([[0.5, 0.3], [-0.2, 1.4]])
    b = torch.tensor([1.0, -2.0])
    z0 = torch.randn(4000, 2, generator=g)
    made = []

    def lazy() -> FM.Pairs:
        made.append(1)
        return FM.Pairs(z0, z0 @ a.T + b)

    teacher = Affine(2)
    stage = FM.Stage(800, 256, 2e-2, seed=3, loss=loss, huber_c=0.01, desc="test distil")
    student = D.distill(teacher, lazy, stage).model
    assert made == [1]  # lazy pairs are made once, when training starts
    assert float(teacher.lin.weight.detach().abs().max()) == 0.0  # the student is a copy
    torch.testing.assert_close(student.lin.weight.detach(), a - torch.eye(2), atol=2e-2, rtol=0)
    torch.testing.assert_close(student.lin.bias.detach(), b, atol=2e-2, rtol=0)


def test_one_step_distillation_of_an_exactly_straight_field_is_exact():
    # the 2-RF of N(0, I) -> N(mu, sigma^2 I) is straight: its ODE coupling (rk4) is reached
    # by one Euler step, so the distillation loss is zero at the teacher and training a
    # student started there leaves it in place; the curved 1-RF's one step is off by sigma^2
    g = torch.Generator().manual_seed(2)
    mu, sigma = torch.tensor([1.0, -2.0], dtype=F64), 0.6

    def v2(x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        return gaussian_2rf_velocity(x, t, mu, sigma)

    def v1(x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        tt = torch.as_tensor(t, dtype=F64)
        return gaussian_rf_velocity(x, tt.clamp(0, 1), mu, sigma)

    z0 = torch.randn(3000, 2, generator=g, dtype=F64)
    pairs = FM.sample_pairs(v2, z0, n_steps=8)
    assert float(D.distillation_loss(v2, pairs.z0, pairs.z1)) < 1e-24
    curved = FM.sample_pairs(v1, z0, n_steps=64)
    assert float(D.distillation_loss(v1, z0, curved.z1)) == pytest.approx(sigma**2, rel=0.1)
    # at t = 0 the 2-RF field is mu + (sigma - 1) z: an affine student there stays there
    start = Affine(2, (sigma - 1) * torch.eye(2, dtype=F64), mu).double()
    student = D.distill(start, pairs, FM.Stage(50, 256, 1e-3))
    # (Adam normalises round-off gradients; a real error would move the weights by ~lr * 50)
    w, w0 = student.model.lin.weight.detach(), start.lin.weight.detach()
    torch.testing.assert_close(w, w0, atol=1e-4, rtol=0)
    assert student.losses[0] < 1e-15 and max(student.losses) < 1e-6


# ---- reflow -------------------------------------------------------------------------------
def test_reflow_on_the_ode_coupling_straightens_the_gaussian_flow():
    # pairs of the exact 1-RF (its ODE coupling Z1 = mu + sigma Z0) train a 2-RF MLP whose
    # straightness is far below the 1-RF's, measured by the same quadrature on both and
    # checked against the closed form d sigma (2 - pi/2)
    from pflow_explore.nets import MLP

    mu, sigma = torch.tensor([1.0, -1.0], dtype=F64), 0.4

    def v1(x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        return gaussian_rf_velocity(x, torch.as_tensor(t, dtype=F64).clamp(0, 1), mu, sigma)

    g = torch.Generator().manual_seed(7)
    z0 = torch.randn(4000, 2, generator=g, dtype=F64)
    pairs = FM.sample_pairs(v1, z0, n_steps=32)
    pairs = FM.Pairs(pairs.z0.float(), pairs.z1.float())
    start = FM.seeded(lambda: FM.VelocityNet(MLP(2, hidden=64, depth=2)), 0)()
    stage = FM.Stage(700, 256, 3e-3, seed=4, desc="test reflow")
    v2 = D.reflow(start, pairs, stage).model.eval()
    test = torch.randn(500, 2, generator=g)
    s1 = straightness_of_field(FM.velocity_field(v1), test.double(), 32)
    assert s1 == pytest.approx(gaussian_rf_straightness(2, sigma), rel=0.15)
    with torch.no_grad():
        s2 = straightness_of_field(FM.velocity_field(v2), test, 16)
        err = (FM.one_step(v2, test) - (mu.float() + sigma * test)).norm(dim=1).mean()
    assert s2 < 0.1 * s1, (s2, s1)
    assert float(err) < 0.1, float(err)


def test_pair_batches_keep_pairs_together():
    z0 = torch.arange(20.0)[:, None]
    pairs = FM.Pairs(z0, 3 * z0 + 1, torch.arange(20))
    draw = D.pair_batches(pairs, FM.Stage(1, 8, 1e-3, seed=0))
    a, b, y, _ = draw(nn.Linear(1, 1))
    torch.testing.assert_close(b, 3 * a + 1)
    torch.testing.assert_close(y.float(), a[:, 0])


# ---- frozen and EMA targets ---------------------------------------------------------------
def test_frozen_copy_and_ema_target_match_their_closed_forms():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = D.frozen_copy(online)
    assert not target.training and all(not p.requires_grad for p in target.parameters())
    start = [p.detach().clone() for p in target.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
        online[1].running_mean.fill_(2.0)
    mu, k = 0.9, 7
    for _ in range(k):  # a constant online net: theta^-_k = theta + mu^k (theta^-_0 - theta)
        D.ema_update(target, online, mu)
    for p0, p_t, p in zip(start, target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(p_t, p.detach() + mu**k * (p0 - p.detach()))
    torch.testing.assert_close(target[1].running_mean, torch.full((4,), 2.0))
    D.ema_update(target, online, 0.0)
    pairs = zip(target.parameters(), online.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    with pytest.raises(ValueError, match="decay"):
        D.ema_update(target, online, 1.5)


# ---- one round: reflow and distillation on one coupling -------------------------------------
def test_rectify_makes_the_coupling_once_and_trains_both_models_on_it():
    # teacher v(x) = A x on R^2: its ODE coupling is Z1 = e^A Z0 (matrix exponential, an
    # independent closed form), which the student learns as its one-step map; the reflowed
    # net is the one reflow trains on those pairs; the pairs are made exactly once
    a = torch.tensor([[-0.3, 0.5], [-0.4, 0.2]])
    teacher = nn.Linear(2, 2, bias=False)
    teacher.weight.data.copy_(a)

    class Linear(nn.Module):  # v(x, t, y) = W x, started from the teacher
        def __init__(self) -> None:
            super().__init__()
            self.lin = copy_of(teacher)

        def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
            return self.lin(x)

    calls = []

    def coupling(v: nn.Module) -> FM.Pairs:
        calls.append(v)
        z0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
        return FM.sample_pairs(v, z0, n_steps=64)

    net = Linear()
    stage = FM.Stage(400, 256, 2e-2, seed=3, desc="test rectify")
    rf2, student = D.rectify(net, coupling, stage, stage)
    assert len(calls) == 1 and calls[0] is net
    expm = torch.linalg.matrix_exp(a)
    z = torch.randn(100, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(FM.one_step(student.model, z), z @ expm.T, atol=0.02, rtol=0)
    alone = D.reflow(net, coupling(Linear()), stage).model
    for p, q in zip(rf2.model.parameters(), alone.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    none, only = D.rectify(net, coupling, None, replace(stage, steps=1))
    assert none is None and only is not None and len(calls) == 3


def copy_of(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module)
