"""super_resolution.py: the SR operator as function and matrix, the HR <-> LRup trajectory,
consistency training against the exact linear-Gaussian map, DTM's pull, the baselines and
the sharpness statistic."""

from __future__ import annotations

import pytest
import torch

from pflow_explore import super_resolution as sr
from pflow_explore.super_resolution import (
    ConditionalDenoiser,
    ConditionalMLP,
    ConditionalUNet,
    ConsistencySR,
    RegressionSR,
    SRDegradation,
    SRPath,
)
from pflow_explore.theory.super_resolution import GaussianSR
from pflow_explore.training import fit

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


# ---- the operator ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "factor, blur, shape, mode",
    [
        (2, 0.0, (1, 2, 2), "bilinear"),
        (2, 0.8, (3, 8, 6), "bilinear"),
        (4, 1.5, (1, 8, 8), "nearest"),
        (2, 3.0, (2, 8, 8), "bilinear"),  # radius 9 is cut to 7 by the 8x8 reflect padding
    ],
)
def test_operator_matrix_equals_the_function(factor, blur, shape, mode):
    d = SRDegradation(factor, blur, noise=0.0, up_mode=mode)
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(factor), dtype=F64)
    a = d.matrix(shape)
    assert torch.allclose(x.flatten(1) @ a.T, d.clean(x).flatten(1), atol=1e-12)
    y = d.clean(x)
    u = d.up_matrix(shape)
    assert torch.allclose(y.flatten(1) @ u.T, d.lr_up(y).flatten(1), atol=1e-12)
    # rows of A are averages of a normalised blur: they sum to 1
    assert torch.allclose(a.sum(1), torch.ones(a.shape[0], dtype=F64))


def test_operator_matrix_control_wrong_blur_differs():
    shape = (1, 8, 8)
    x = torch.randn(3, *shape, dtype=F64)
    wrong = SRDegradation(2, 1.2).matrix(shape)
    assert not torch.allclose(x.flatten(1) @ wrong.T, SRDegradation(2, 1.0).clean(x).flatten(1))


def test_degradation_noise_and_pairs():
    d = SRDegradation(2, 0.5, noise=0.3)
    x = torch.zeros(4000, 1, 4, 4)
    y, up = d.pair(x, torch.Generator().manual_seed(0))
    assert y.shape == (4000, 1, 2, 2) and up.shape == (4000, 1, 4, 4)
    assert y.std().item() == pytest.approx(0.3, rel=0.03)
    sampler = sr.degraded_pairs(torch.randn(10, 1, 4, 4), d)
    hr, lr = sampler(7, torch.Generator().manual_seed(1))
    assert hr.shape == lr.shape == (7, 16)


def test_degradation_errors():
    with pytest.raises(ValueError, match="factor"):
        SRDegradation(0)
    with pytest.raises(ValueError, match="blur"):
        SRDegradation(2, -1.0)
    with pytest.raises(ValueError, match="noise"):
        SRDegradation(2, 0.0, float("nan"))
    with pytest.raises(ValueError, match="up_mode"):
        SRDegradation(2, up_mode="bicubic")
    with pytest.raises(ValueError, match="divisible"):
        SRDegradation(4).matrix((1, 6, 8))
    with pytest.raises(ValueError, match="image batch"):
        sr.degraded_pairs(torch.zeros(3, 16), SRDegradation(2))


# ---- the trajectory ----------------------------------------------------------------------
def test_path_endpoints_and_velocity():
    path = SRPath(0.7)
    gen = torch.Generator().manual_seed(0)
    hr, up, z = (torch.randn(6, 1, 4, 4, generator=gen, dtype=F64) for _ in range(3))
    assert torch.allclose(path.point(hr, up, z, 0.0), hr)
    assert torch.allclose(path.point(hr, up, z, 1.0), up + 0.7 * z)
    assert torch.allclose(path.start(up, z), up + 0.7 * z)
    t = torch.rand(6, generator=gen, dtype=F64) * 0.8 + 0.1
    h = 1e-6
    fd = (path.point(hr, up, z, t + h) - path.point(hr, up, z, t - h)) / (2 * h)
    assert torch.allclose(path.velocity(hr, up, z, t), fd, atol=1e-8)
    # control: the velocity is not the straight HR -> LRup difference once there is noise
    assert not torch.allclose(up - hr, fd, atol=1e-3)
    with pytest.raises(ValueError, match="t must"):
        path.point(hr, up, z, torch.zeros(3))
    with pytest.raises(ValueError, match="sigma_max"):
        SRPath(0.0)


@pytest.mark.parametrize("kind", sr.PARAMETERIZATIONS)
def test_boundary_condition_holds_for_an_untrained_model(kind):
    model = ConsistencySR(ConditionalMLP(4, 16, 2), kind)
    x, up = torch.randn(5, 4), torch.randn(5, 4)
    assert torch.allclose(model(x, 0.0, up), x)
    assert not torch.allclose(model(x, 0.5, up), x)  # control: only t = 0 is pinned
    with pytest.raises(ValueError, match="parameterization"):
        ConsistencySR(ConditionalMLP(4), "edm")


def test_n_steps_schedule():
    ns = [sr.n_steps_at(k, 100) for k in range(100)]
    assert ns[0] == 4 and ns[-1] == 3 and ns == sorted(ns, reverse=True)
    assert sr.n_steps_at(5, 10, 8, 8) == 8
    with pytest.raises(ValueError, match="n_start"):
        sr.n_steps_at(0, 10, 0, 3)


# ---- consistency training on the exact linear-Gaussian problem ---------------------------
SHAPE, SMAX = (1, 2, 2), 1.0


def gaussian_problem():
    d = SRDegradation(2, 0.0, noise=0.1)
    prob = GaussianSR.random(d.matrix(SHAPE), 0, noise_std=d.noise)
    return prob, d.up_matrix(SHAPE)


def pairs_of(prob, up, shuffle=False):
    def sample_pairs(batch, gen):
        x, y = prob.sample(batch, gen)
        lr_up = y @ up.T
        if shuffle:  # the negative control: LRup of another image
            lr_up = lr_up[torch.randperm(batch, generator=gen)]
        return x.float(), lr_up.float()

    return sample_pairs


def exact_map_error(model, prob, up, n=2000):
    """RMS |f(LRup + z, 1, LRup) - f*(y, z)| over fresh (y, z), and the same for E[x|y]."""
    gen = torch.Generator().manual_seed(123)
    _, y = prob.sample(n, gen)
    lr_up = y @ up.T
    z = torch.randn(n, 4, generator=gen, dtype=F64)
    exact = prob.exact_map(y, z)
    with torch.no_grad():
        out = model(SRPath(SMAX).start(lr_up, z).float(), 1.0, lr_up.float()).double()
    rms = lambda a: ((a - exact) ** 2).sum(1).mean().sqrt().item()  # noqa: E731
    floor = {n_: rms(prob.euler_map(lr_up + SMAX * z, y, lr_up, SMAX, n_)) for n_ in (3, 8)}
    return rms(out), rms(prob.posterior_mean(y)), floor


def train_ct(prob, up, steps, n_start, n_end, shuffle=False, checkpoints=()):
    torch.manual_seed(0)
    model = ConsistencySR(ConditionalMLP(4, 64, 2), "ctmsr")
    gen = torch.Generator().manual_seed(0)
    loss_fn = sr.consistency_objective(
        pairs_of(prob, up, shuffle), SRPath(SMAX), 256, gen, steps, n_start, n_end, "l2"
    )
    errors = {}

    def record(i, loss):
        if i + 1 in checkpoints:
            errors[i + 1] = exact_map_error(model, prob, up)[0]

    fit(model, loss_fn, steps=steps, lr=1e-3, cosine=True, progress=False, callback=record)
    return model, errors


def test_consistency_training_approaches_the_exact_map():
    prob, up = gaussian_problem()
    untrained = ConsistencySR(ConditionalMLP(4, 64, 2), "ctmsr")
    err_untrained, err_mean, floor = exact_map_error(untrained, prob, up)
    model, errors = train_ct(prob, up, 800, 8, 8, checkpoints=(25, 800))
    late, _, _ = exact_map_error(model, prob, up)
    # measured (seed 0): untrained 2.60, E[x|y] 1.80, step 25 ~1.0, step 800 0.47, floor 0.29
    assert errors[25] > late + 0.2  # the error decreases with training
    assert late < 0.35 * err_mean  # far better than the posterior mean: it learned the z-part
    assert late > 0.8 * floor[8]  # and, as theory says, not past the N = 8 Euler floor
    assert err_untrained > err_mean  # control: an untrained model is far from f*
    _, shuffled = train_ct(prob, up, 800, 8, 8, shuffle=True, checkpoints=(800,))
    assert shuffled[800] > 2 * late + 0.3  # control: without the true LRup it cannot be f*


def test_the_card_schedule_n_4_to_3_stops_at_the_coarse_floor():
    """N annealed 4 -> 3 (the paper's) converges to about 3 Euler steps of the PF-ODE, which
    keeps much less of the posterior spread than N = 8 (theory.super_resolution)."""
    prob, up = gaussian_problem()
    model, _ = train_ct(prob, up, 800, 4, 3)
    err, err_mean, floor = exact_map_error(model, prob, up)
    assert abs(err - floor[3]) < 0.15  # measured 0.74 vs the floor 0.69
    assert err > floor[8] + 0.2 and err < err_mean - 0.5


# ---- DTM ---------------------------------------------------------------------------------
class ExactD(torch.nn.Module):
    """D(x_t, t, LRup) = the exact consistency map of the 2x2 -> 1x1 problem (eq. 4 of
    theory.super_resolution); bilinear upsampling of one pixel is constant, so y = LRup[:, 0]."""

    def __init__(self, prob, sign=1.0):
        super().__init__()
        self.prob, self.sign = prob, sign

    def forward(self, x, t, lr_up):
        y = lr_up[:, :1]
        return self.sign * self.prob.consistency_map(x, t, y, lr_up, SMAX)


def dtm_setup(n=4000):
    prob, up = gaussian_problem()
    gen = torch.Generator().manual_seed(7)
    hr, y = prob.sample(n, gen)
    return prob, hr, y, y @ up.T


def dtm_grad(x_hat, hr, lr_up, frozen, seed=0):
    x_hat = x_hat.clone().requires_grad_(True)
    loss = sr.dtm_loss(x_hat, hr, lr_up, frozen, SRPath(SMAX), torch.Generator().manual_seed(seed))
    (grad,) = torch.autograd.grad(loss, x_hat)
    return grad * x_hat.numel()  # per entry: w g


def test_dtm_gradient_is_w_times_g():
    prob, hr, _, lr_up = dtm_setup(50)
    x_hat = hr + 0.3
    grad = dtm_grad(x_hat, hr, lr_up, ExactD(prob), seed=3)
    gen = torch.Generator().manual_seed(3)
    t = 0.1 + 0.4 * torch.rand(50, generator=gen, dtype=F64)
    z = torch.randn(hr.shape, generator=gen, dtype=F64)
    path, d = SRPath(SMAX), ExactD(prob)
    g = d(path.point(x_hat, lr_up, z, t), t, lr_up) - d(path.point(hr, lr_up, z, t), t, lr_up)
    w = 1 / (x_hat - hr).abs().mean(1, keepdim=True)
    assert torch.allclose(grad, w * g, atol=1e-10)


def test_dtm_pulls_a_shifted_output_distribution_toward_the_data():
    prob, hr, _, lr_up = dtm_setup()
    bias = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=F64)
    x_hat = hr + bias
    grad = dtm_grad(x_hat, hr, lr_up, ExactD(prob))
    stepped = x_hat - 0.2 * grad
    assert (grad.mean(0) @ bias) > 0  # descent moves against the bias
    assert (stepped.mean(0) - hr.mean(0)).norm() < 0.8 * bias.norm()
    # controls: a D that ignores its input gives no pull; a reversed D pushes away
    blind = dtm_grad(x_hat, hr, lr_up, lambda x, t, u: u)
    assert blind.abs().max() == 0
    away = dtm_grad(x_hat, hr, lr_up, ExactD(prob, sign=-1.0))
    assert (away.mean(0) @ bias) < 0


def test_dtm_with_the_exact_d_shrinks_unpaired_spread():
    """A measured property, not the card's reading: outputs that are exact posterior samples
    but not the paired HR are pulled toward E[x|y] (the spread shrinks): in the linear case
    DTM acts as a fidelity term, it does not restore variance."""
    prob, hr, y, lr_up = dtm_setup()
    gen = torch.Generator().manual_seed(11)
    x_hat = prob.exact_map(y, torch.randn(hr.shape, generator=gen, dtype=F64))
    grad = dtm_grad(x_hat, hr, lr_up, ExactD(prob))
    spread = x_hat - prob.posterior_mean(y)
    stepped = x_hat - 0.05 * grad - prob.posterior_mean(y)
    assert (grad * spread).sum(1).mean() > 0
    assert stepped.pow(2).sum(1).mean() < 0.97 * spread.pow(2).sum(1).mean()
    # control: the paired HR itself feels no pull
    assert dtm_grad(hr, hr, lr_up, ExactD(prob)).abs().max() < 1e-6


def test_dtm_objective_refreshes_the_frozen_copy(monkeypatch):
    copies = []
    real = sr.frozen_copy
    monkeypatch.setattr(sr, "frozen_copy", lambda m: copies.append(1) or real(m))
    prob, up = gaussian_problem()
    gen = torch.Generator().manual_seed(0)
    loss_fn = sr.consistency_objective(
        pairs_of(prob, up), SRPath(), 16, gen, 10, dtm_weight=0.5, dtm_start=1, dtm_refresh=2
    )
    model = ConsistencySR(ConditionalMLP(4, 16, 1))
    for step in range(6):
        loss = loss_fn(model, step)
        loss.backward()
        assert torch.isfinite(loss)
    assert len(copies) == 3  # at steps 1, 3 and 5
    with pytest.raises(ValueError, match="t_range"):
        sr.dtm_loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 4), model, SRPath(),
                    t_range=(0.5, 0.1))  # fmt: skip


# ---- baselines ---------------------------------------------------------------------------
class ExactConditionalDenoiser:
    """bind(LRup) -> D(x; sigma) = E[x | y] + P (P + sigma^2 I)^{-1} (x - E[x | y]), the
    exact EDM denoiser of the posterior (y = LRup[:, 0])."""

    def __init__(self, prob):
        self.prob = prob

    def bind(self, lr_up):
        mean, p = self.prob.posterior_mean(lr_up[:, :1]), self.prob.posterior_cov()

        def denoise(x, sigma):
            gain = torch.linalg.solve(p + float(sigma) ** 2 * torch.eye(4, dtype=F64), p)
            return mean + (x - mean) @ gain.T

        return denoise


def test_diffusion_sampler_with_the_exact_denoiser_samples_the_posterior():
    prob, up = gaussian_problem()
    n = 4000
    y = prob.sample(1, torch.Generator().manual_seed(2))[1].expand(n, -1)
    lr_up = y @ up.T
    exact = ExactConditionalDenoiser(prob)
    # measured: relative covariance error 0.33 at nfe 19, 0.064 at 39, 0.029 at 79 and 199
    # (the sampling noise of 4000 draws); nfe 3 (two Heun steps, 80 -> 0.002 -> 0) blows up
    out = sr.diffusion_sr(exact, lr_up, nfe=79, generator=torch.Generator().manual_seed(3))
    assert out.nfe == 79 and out.x.shape == (n, 4)
    mean, cov = prob.posterior_mean(y[:1])[0], prob.posterior_cov()
    var = cov.diagonal()
    assert ((out.x.mean(0) - mean).abs() < 5 * (var / n).sqrt()).all()
    cov_se = ((var[:, None] * var[None] + cov**2) / n).sqrt()
    assert ((torch.cov(out.x.T) - cov).abs() < 5 * cov_se).all()
    # control: one evaluation collapses onto the posterior mean
    one = sr.diffusion_sr(exact, lr_up, nfe=1, generator=torch.Generator().manual_seed(3))
    assert one.nfe == 1 and torch.cov(one.x.T).diagonal().max() < 0.01 * var.min()
    anc = sr.diffusion_sr(exact, lr_up[:10], 6, torch.Generator().manual_seed(0), "ancestral")
    assert anc.nfe == 6 and anc.x.shape == (10, 4)
    with pytest.raises(ValueError, match="odd"):
        sr.diffusion_sr(exact, lr_up, nfe=4)
    with pytest.raises(ValueError, match="sampler"):
        sr.diffusion_sr(exact, lr_up, nfe=3, sampler="dpm")


def test_regression_and_diffusion_objectives_train_with_fit():
    prob, up = gaussian_problem()
    sample_pairs = pairs_of(prob, up)
    torch.manual_seed(0)
    reg = RegressionSR(ConditionalMLP(4, 64, 2))
    _, y = prob.sample(1000, torch.Generator().manual_seed(5))

    def error_to_posterior_mean():
        with torch.no_grad():
            pred = reg((y @ up.T).float()).double()
        return (pred - prob.posterior_mean(y)).pow(2).sum(1).mean().sqrt().item()

    before = error_to_posterior_mean()
    gen = torch.Generator().manual_seed(0)
    fit(reg, sr.regression_objective(sample_pairs, 256, gen), steps=300, lr=2e-3, progress=False)
    after = error_to_posterior_mean()
    # an L1 regression lands near the posterior median = mean (the posterior is Gaussian);
    # the untrained net (LRup itself) is the control
    assert after < 0.4 * before, (before, after)
    den = ConditionalDenoiser(ConditionalMLP(4, 32, 2))
    result = fit(den, sr.diffusion_objective(sample_pairs, 64, gen), steps=20, progress=False)
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_unet_backbone_one_step_and_objective():
    shape = (1, 8, 8)
    hr = torch.rand(12, *shape) * 2 - 1
    d = SRDegradation(2, 0.6, noise=0.05)
    model = ConsistencySR(ConditionalUNet(shape, base=8, channel_mults=(1, 2), attention=False))
    gen = torch.Generator().manual_seed(0)
    loss_fn = sr.consistency_objective(sr.degraded_pairs(hr, d), SRPath(), 4, gen, 5,
                                       dtm_weight=1.0, dtm_start=2)  # fmt: skip
    fit(model, loss_fn, steps=4, progress=False)
    _, up = d.pair(hr[:3])
    out = sr.super_resolve(model, up.flatten(1), SRPath(), gen)
    assert out.shape == (3, 64) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="x and cond"):
        ConditionalUNet(shape)(torch.zeros(2, 63), 0.5, torch.zeros(2, 63))


def test_distances():
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    assert torch.allclose(sr.sr_distance(a, b, "l2"), ((a - b) ** 2).mean(1))
    assert torch.allclose(sr.sr_distance(a, b, "l1"), (a - b).abs().mean(1))
    assert torch.allclose(sr.sr_distance(a, b, "charbonnier", 1e-6), (a - b).abs().mean(1))
    ph = sr.sr_distance(a, b, "pseudo_huber", 0.03)
    c = 0.03 * 8**0.5
    assert torch.allclose(ph, ((a - b).pow(2).sum(1) + c**2).sqrt() - c)
    with pytest.raises(ValueError, match="distance"):
        sr.sr_distance(a, b, "lpips")


# ---- sharpness ---------------------------------------------------------------------------
def test_high_frequency_energy_parseval_and_ratio():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 8, 8, generator=gen, dtype=F64)
    # cutoff 0: everything but DC, which by Parseval is the centred energy
    centred = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2).sum(dim=(1, 2, 3))
    assert torch.allclose(sr.high_frequency_energy(x, cutoff=0.0), centred)
    assert sr.sharpness_ratio(x, x).item() == pytest.approx(1.0)
    blurred = SRDegradation(1, 1.0).clean(x)
    assert sr.sharpness_ratio(blurred, x).item() < 0.2
    noisy = x + 0.5 * torch.randn(x.shape, generator=gen, dtype=F64)
    assert sr.sharpness_ratio(noisy, x).item() > 1.1
    # a pure low-frequency pattern has no energy above half Nyquist
    grid = torch.arange(8, dtype=F64)
    smooth = torch.cos(2 * torch.pi * grid / 8)[None, None, :, None].expand(1, 1, 8, 8)
    assert sr.high_frequency_energy(smooth).item() < 1e-20
    with pytest.raises(ValueError, match="no energy"):
        sr.sharpness_ratio(x[:1, :1], smooth)
    with pytest.raises(ValueError, match="one shape"):
        sr.sharpness_ratio(x, x[:3])


# ---- the exact test bed and latency ------------------------------------------------------
def test_linear_gaussian_pairs_and_the_shuffled_control():
    prob, up = gaussian_problem()
    x, lr_up = sr.linear_gaussian_pairs(prob, up)(4000, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.shape == lr_up.shape == (4000, 4)
    # LRup carries y: its correlation with the mean pixel of x is high; shuffled it is ~0
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a, b]))[0, 1])  # noqa: E731
    assert corr(x.mean(1), lr_up[:, 0]) > 0.8
    xs, ls = sr.linear_gaussian_pairs(prob, up, shuffle=True)(
        4000, torch.Generator().manual_seed(0)
    )
    assert abs(corr(xs.mean(1), ls[:, 0])) < 0.1
    with pytest.raises(ValueError, match="up must be"):
        sr.linear_gaussian_pairs(prob, up.T)


def test_exact_map_batch_errors_match_the_theory():
    prob, up = gaussian_problem()
    path = SRPath(SMAX)
    b = sr.exact_map_batch(prob, up, path, 3000, torch.Generator().manual_seed(1))
    assert torch.allclose(b.x_1, b.lr_up + SMAX * b.z)
    assert b.squared_error(b.exact).max() == 0
    # E|f* - E[x|y]|^2 = tr P; the one-step consistency map at t = 1 is f*
    mean_err = float(b.squared_error(b.mean).mean())
    assert mean_err == pytest.approx(float(torch.trace(prob.posterior_cov())), rel=0.08)
    f1 = prob.consistency_map(b.x_1, 1.0, b.y, b.lr_up, SMAX)
    assert float(b.squared_error(f1).max()) < 1e-20
    # Euler optima: more steps, closer
    e3, e16 = (
        b.squared_error(prob.euler_map(b.x_1, b.y, b.lr_up, SMAX, n)).mean() for n in (3, 16)
    )
    assert e16 < e3 < mean_err


def test_latency_per_image_measures_wall_time():
    import time

    mean, se = sr.latency_per_image(lambda: time.sleep(0.02), 10, repeats=3)
    assert 0.0018 < mean < 0.01 and se >= 0
    with pytest.raises(ValueError, match="repeats"):
        sr.latency_per_image(lambda: None, 1, repeats=1)


def test_consistency_sides_is_the_core_of_consistency_pair():
    torch.manual_seed(0)
    model = ConsistencySR(ConditionalMLP(4, 16, 1))
    g = torch.Generator().manual_seed(3)
    hr, lr_up = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    pred, target, t_next = sr.consistency_pair(model, hr, lr_up, SRPath(0.7), 4, g.manual_seed(5))
    g.manual_seed(5)
    n = torch.randint(4, (8,), generator=g)
    z = torch.randn(8, 4, generator=g)
    p2, t2 = sr.consistency_sides(model, hr, lr_up, z, n / 4, (n + 1) / 4, SRPath(0.7))
    assert torch.equal(pred, p2) and torch.equal(target, t2) and torch.equal(t_next, (n + 1) / 4)
    assert pred.requires_grad and not t2.requires_grad
    # at t_cur = 0 the target is HR itself (the boundary condition)
    _, at_zero = sr.consistency_sides(model, hr, lr_up, z, 0.0, 0.25, SRPath(0.7))
    assert torch.allclose(at_zero, hr)
