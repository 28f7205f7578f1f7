"""Tests for theory.interpolant_fields against Monte Carlo, autograd, finite differences,
ODE/SDE integration and an independent discrete-path KL (random parameters, fixed seeds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from pflow_explore.datasets.mixture import GaussianMixture
from pflow_explore.interpolants import get_interpolant
from pflow_explore.solvers import euler_maruyama, odeint
from pflow_explore.theory.interpolant_fields import (
    InterpolantFields,
    derivation_gaussian,
    expected_sq_affine,
    gaussian_drift_affine,
    gaussian_kl,
    gaussian_moments_flow,
    girsanov_bound,
    scalar_gaussian_fields,
    score_affine,
    transport_residual,
    velocity_affine,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: see conftest


def random_mixture(k: int, d: int, seed: int, spread: float = 2.0) -> GaussianMixture:
    gen = torch.Generator().manual_seed(seed)
    means = spread * torch.randn(k, d, generator=gen, dtype=F64)
    root = 0.5 * torch.randn(k, d, d, generator=gen, dtype=F64)
    covs = root @ root.transpose(-1, -2) + 0.2 * torch.eye(d, dtype=F64)
    weights = 0.5 + torch.rand(k, generator=gen, dtype=F64)
    return GaussianMixture(weights, means, covs)


def _sample(gm: GaussianMixture, n: int, gen: torch.Generator) -> torch.Tensor:
    labels = torch.multinomial(gm.weights, n, replacement=True, generator=gen)
    z = torch.randn(n, gm.dim, generator=gen, dtype=F64)
    return gm.means[labels] + torch.einsum("nij,nj->ni", torch.linalg.cholesky(gm.covs)[labels], z)


# (interpolant, gamma, t): interior times, gamma > 0 so x_t | (x0, x1) has a density
MC_CASES = [
    ("linear", "sqrt", 0.4),
    ("trigonometric", "quadratic", 0.6),
    ("encoder_decoder", "sin2", 0.3),
    ("mirror", "sqrt", 0.7),
    ("one_sided", "sigmoid", 0.5),
]


@pytest.mark.parametrize(("name", "gamma", "t"), MC_CASES)
def test_fields_match_monte_carlo_conditional_expectations(name, gamma, t):
    """Self-normalized importance sampling: E[f | x_t = x] = E[w f] / E[w] with
    w = N(x; I(t, x0, x1), gamma^2 I) over independent (x0, x1); z = (x - I) / gamma given them."""
    d = 2
    it = get_interpolant(name, gamma)
    rho1 = random_mixture(3, d, seed=11)
    if name == "mirror":
        rho0 = rho1
    elif name == "one_sided":
        rho0 = GaussianMixture.isotropic(torch.zeros(1, d), 1.0)
    else:
        rho0 = random_mixture(2, d, seed=12)
    fields = InterpolantFields(rho0, rho1, it)
    gen = torch.Generator().manual_seed(5)
    queries = fields.sample(t, 3, gen, dtype=F64)
    n = 200_000
    x0, x1 = _sample(rho0, n, gen), _sample(rho1, n, gen)
    g, dg = float(it.gamma.gamma(t)), float(it.gamma.dgamma(t))
    mean_i = it.interpolate(t, x0, x1)
    d_i = it.dt_interpolate(t, x0, x1)
    exact = {
        "logp": fields.log_prob(queries, t),
        "b": fields.velocity(queries, t),
        "v": fields.mean_velocity(queries, t),
        "eta": fields.denoiser(queries, t),
        "s": fields.score(queries, t),
    }
    for q in range(queries.shape[0]):
        x = queries[q]
        logw = -0.5 * ((x - mean_i) ** 2).sum(-1) / g**2 - d * math.log(g * math.sqrt(2 * math.pi))
        w = torch.exp(logw - logw.max())
        w = w / w.sum()
        z = (x - mean_i) / g
        # the density itself: rho(x) = E[N(x; I, g^2)], plain Monte Carlo
        dens = torch.exp(logw)
        rho_mc, rho_se = float(dens.mean()), float(dens.std() / math.sqrt(n))
        rho_exact = float(exact["logp"][q].exp())
        assert abs(rho_mc - rho_exact) < 4 * rho_se + 1e-12, (rho_mc, rho_exact, rho_se)
        targets = {"b": d_i + dg * z, "v": d_i, "eta": -z, "s": -z / g}
        for key, f in targets.items():
            est = (w[:, None] * f).sum(0)
            se = torch.sqrt((w[:, None] ** 2 * (f - est) ** 2).sum(0))
            err = (est - exact[key][q]).abs()
            assert (err < 4 * se + 1e-9).all(), (key, q, est, exact[key][q], se)
        ess = 1.0 / float((w**2).sum())
        assert ess > 200, ess  # the check above means something only with enough samples


@pytest.mark.parametrize(("name", "gamma"), [("linear", "sqrt"), ("encoder_decoder", "sin2")])
def test_score_is_gradient_of_log_prob(name, gamma):
    fields = InterpolantFields(
        random_mixture(2, 3, seed=1), random_mixture(2, 3, seed=2), get_interpolant(name, gamma)
    )
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    for t in (0.0, 0.25, 0.8, 1.0):
        xg = x.clone().requires_grad_(True)
        grad = torch.autograd.grad(fields.log_prob(xg, t).sum(), xg)[0]
        assert torch.allclose(fields.score(x, t), grad, rtol=1e-8, atol=1e-10)


def test_log_prob_integrates_to_one_and_endpoints_are_rho0_rho1():
    rho0, rho1 = random_mixture(2, 1, seed=3), random_mixture(3, 1, seed=4)
    fields = InterpolantFields(rho0, rho1, get_interpolant("trigonometric", "sqrt"))
    grid = torch.linspace(-15, 15, 6001, dtype=F64)[:, None]
    for t in (0.0, 0.2, 0.5, 0.9, 1.0):
        mass = torch.trapezoid(fields.log_prob(grid, t).exp(), grid[:, 0])
        assert float(mass) == pytest.approx(1.0, abs=1e-8)
    assert torch.allclose(fields.log_prob(grid, 0.0), rho0.log_prob(grid), atol=1e-10)
    assert torch.allclose(fields.log_prob(grid, 1.0), rho1.log_prob(grid), atol=1e-10)


@pytest.mark.parametrize(
    ("name", "gamma", "t"),
    [("linear", "sqrt", 0.4), ("encoder_decoder", "sin2", 0.35), ("trigonometric", "sigmoid", 0.6)],
)
@pytest.mark.parametrize("eps", [0.0, 0.7, -0.3])
def test_transport_and_fokker_planck_residual_converge(name, gamma, t, eps):
    fields = InterpolantFields(
        random_mixture(2, 1, seed=6), random_mixture(2, 1, seed=7), get_interpolant(name, gamma)
    )
    errors = []
    for refine in (1, 2, 4):
        grid = torch.linspace(-12, 12, 240 * refine + 1, dtype=F64)
        res = transport_residual(fields, t, grid, eps=eps, dt=0.02 / refine)
        errors.append(float(res.abs().max()))
    # size of the terms that cancel: max |d_t rho| (a fine central difference)
    col = torch.linspace(-12, 12, 241, dtype=F64)[:, None]
    rate = (fields.log_prob(col, t + 1e-4).exp() - fields.log_prob(col, t - 1e-4).exp()) / 2e-4
    assert errors[1] < 0.4 * errors[0] and errors[2] < 0.4 * errors[1], errors
    assert errors[2] < 5e-3 * float(rate.abs().max()), errors


def test_transport_residual_detects_a_wrong_velocity():
    """Negative control: with v (the mean velocity) in place of b the residual does not vanish."""
    fields = InterpolantFields(
        random_mixture(2, 1, seed=6), random_mixture(2, 1, seed=7), get_interpolant("linear")
    )
    fields_wrong = InterpolantFields(fields.rho0, fields.rho1, fields.interpolant)
    fields_wrong.drift = lambda x, t, eps: fields.mean_velocity(x, t)  # type: ignore[method-assign]
    grid = torch.linspace(-12, 12, 961, dtype=F64)
    good = float(transport_residual(fields, 0.3, grid, dt=0.005).abs().max())
    bad = float(transport_residual(fields_wrong, 0.3, grid, dt=0.005).abs().max())
    assert bad > 100 * good


@pytest.mark.parametrize(
    ("name", "gamma"), [("linear", "sqrt"), ("trigonometric", "quadratic"), ("mirror", "sqrt")]
)
def test_sympy_derivation_agrees_with_fields(name, gamma):
    rng = np.random.default_rng(8)
    m0, m1 = rng.normal(size=2)
    c0, c1 = rng.uniform(0.3, 2.0, size=2)
    if name == "mirror":
        m0, c0 = m1, c1
    rho0 = GaussianMixture(torch.ones(1), torch.tensor([[m0]]), torch.tensor([[[c0]]]))
    rho1 = GaussianMixture(torch.ones(1), torch.tensor([[m1]]), torch.tensor([[[c1]]]))
    it = get_interpolant(name, gamma)
    fields = InterpolantFields(rho0, rho1, it)
    x = torch.tensor(rng.normal(scale=2.0, size=7), dtype=F64)
    for t in (0.0, 0.13, 0.5, 0.91, 1.0):
        sym = scalar_gaussian_fields(it, t, x, m0, c0, m1, c1)
        col = x[:, None]
        assert torch.allclose(sym["velocity"], fields.velocity(col, t)[:, 0], atol=1e-12)
        assert torch.allclose(sym["score"], fields.score(col, t)[:, 0], atol=1e-12)
        assert torch.allclose(sym["mean_velocity"], fields.mean_velocity(col, t)[:, 0], atol=1e-12)
        assert torch.allclose(sym["denoiser"], fields.denoiser(col, t)[:, 0], atol=1e-12)
    d = derivation_gaussian()
    assert "velocity b = E[d_t I + gamma' z | x_t = x]" in [label for label, _ in d.steps]
    assert d["transport: (d_t rho + d_x(b rho)) / rho"].rhs == 0
    assert "aligned" in d._repr_latex_()


def test_ode_of_exact_velocity_carries_rho0_to_rho1():
    d, n = 2, 4000
    rho0, rho1 = random_mixture(1, d, seed=20), random_mixture(1, d, seed=21)
    fields = InterpolantFields(rho0, rho1, get_interpolant("linear", "sqrt", a=0.5))
    gen = torch.Generator().manual_seed(0)
    x0 = _sample(rho0, n, gen)
    sol = odeint(lambda x, t: fields.velocity(x, float(t)), x0, torch.linspace(0, 1, 101), "rk4")
    x1 = sol.x
    m1, c1 = rho1.mean(), rho1.covariance()
    se_mean = torch.sqrt(torch.diagonal(c1) / n)
    assert ((x1.mean(0) - m1).abs() < 4 * se_mean).all()
    se_cov = torch.sqrt((torch.outer(torch.diagonal(c1), torch.diagonal(c1)) + c1**2) / n)
    assert ((torch.cov(x1.T) - c1).abs() < 4 * se_cov).all()


def test_sde_of_exact_drift_keeps_the_marginals():
    d, n, eps = 2, 3000, 0.5
    rho0, rho1 = random_mixture(2, d, seed=22), random_mixture(1, d, seed=23)
    fields = InterpolantFields(rho0, rho1, get_interpolant("linear", "sqrt"))
    gen = torch.Generator().manual_seed(1)
    x0 = _sample(rho0, n, gen)
    sol = euler_maruyama(
        lambda x, t: fields.drift(x, float(t), eps),
        lambda t: math.sqrt(2 * eps),
        x0,
        torch.linspace(0, 1, 201, dtype=F64),
        generator=gen,
    )
    m1, c1 = rho1.mean(), rho1.covariance()
    se_mean = torch.sqrt(torch.diagonal(c1) / n)
    # Euler-Maruyama with 200 steps adds a small bias: allow a little beyond 4 SE
    assert ((sol.x.mean(0) - m1).abs() < 4 * se_mean + 0.02).all()
    se_cov = torch.sqrt((torch.outer(torch.diagonal(c1), torch.diagonal(c1)) + c1**2) / n)
    assert ((torch.cov(sol.x.T) - c1).abs() < 4 * se_cov + 0.03).all()


def test_marginal_sampling_and_degenerate_marginal():
    rho0, rho1 = random_mixture(2, 2, seed=30), random_mixture(2, 2, seed=31)
    fields = InterpolantFields(rho0, rho1, get_interpolant("linear", "quadratic"))
    x = fields.sample(0.3, 20000, torch.Generator().manual_seed(0), dtype=F64)
    m, c = fields.gaussian_moments(0.3)
    assert ((x.mean(0) - m).abs() < 4 * torch.sqrt(torch.diagonal(c) / 20000)).all()
    assert fields.marginal(0.3).n_components == 4
    dec = InterpolantFields(rho0, rho1, get_interpolant("encoder_decoder", "zero"))
    with pytest.raises(ValueError, match="degenerate"):
        dec.score(x, 0.5)
    with pytest.raises(ValueError, match="degenerate"):
        dec.marginal(0.5)
    assert dec.sample(0.5, 3).abs().max() < 1e-12  # still drawn through the interpolant


def test_dtype_shapes_and_bad_input():
    fields = InterpolantFields(
        random_mixture(2, 2, seed=1), random_mixture(3, 2, seed=2), get_interpolant("linear")
    )
    x32 = torch.randn(5, 2)
    for f in (fields.score, fields.velocity, fields.mean_velocity, fields.denoiser):
        out = f(x32, 0.5)
        assert out.dtype == torch.float32 and out.shape == (5, 2)
        assert torch.allclose(out.double(), f(x32.double(), 0.5), atol=1e-5)
    assert fields.log_prob(x32, 0.5).shape == (5,)
    assert fields.drift(x32, 0.5, 0.3).shape == (5, 2)
    assert torch.allclose(
        fields.drift(x32.double(), 0.4, 0.3) + fields.backward_drift(x32.double(), 0.4, 0.3),
        2 * fields.velocity(x32.double(), 0.4),
    )
    with pytest.raises(ValueError, match="t must lie in"):
        fields.score(x32, 1.2)
    with pytest.raises(ValueError, match="shape \\(n, 2\\)"):
        fields.score(torch.randn(5, 3), 0.5)
    with pytest.raises(ValueError, match="one_sided"):
        InterpolantFields(
            random_mixture(1, 2, 0), random_mixture(1, 2, 1), get_interpolant("one_sided", None)
        )
    with pytest.raises(ValueError, match="mirror"):
        InterpolantFields(
            random_mixture(1, 2, 0), random_mixture(1, 2, 1), get_interpolant("mirror", None)
        )
    with pytest.raises(ValueError, match="1D grid"):
        transport_residual(fields, 0.5, torch.linspace(0, 1, 5))


# ---- likelihood control ------------------------------------------------------------------
def _gaussian_fields(d: int, seed: int, name: str = "linear", gamma: str = "sqrt"):
    return InterpolantFields(
        random_mixture(1, d, seed=seed),
        random_mixture(1, d, seed=seed + 1),
        get_interpolant(name, gamma),
    )


def test_affine_fields_match_fields():
    fields = _gaussian_fields(3, 40, "trigonometric", "quadratic")
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    for t in (0.0, 0.4, 1.0):
        a, c = velocity_affine(fields, t)
        assert torch.allclose(x @ a.T + c, fields.velocity(x, t), atol=1e-12)
        a, c = score_affine(fields, t)
        assert torch.allclose(x @ a.T + c, fields.score(x, t), atol=1e-12)
        a, c = gaussian_drift_affine(fields, t, 0.3)
        assert torch.allclose(x @ a.T + c, fields.drift(x, t, 0.3), atol=1e-12)
    with pytest.raises(ValueError, match="Gaussian endpoints"):
        velocity_affine(
            InterpolantFields(
                random_mixture(2, 2, 0), random_mixture(1, 2, 1), get_interpolant("linear")
            ),
            0.5,
        )


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_moment_flow_of_exact_drift_reproduces_marginals(eps):
    fields = _gaussian_fields(2, 50)
    m0, c0 = fields.gaussian_moments(0.0)
    times, ms, cs = gaussian_moments_flow(
        lambda t: gaussian_drift_affine(fields, t, eps)[0],
        lambda t: gaussian_drift_affine(fields, t, eps)[1],
        eps,
        m0,
        c0,
        steps=200,
        return_path=True,
    )
    for i in (60, 140, 200):
        m, c = fields.gaussian_moments(float(times[i]))
        assert torch.allclose(ms[i], m, atol=1e-8) and torch.allclose(cs[i], c, atol=1e-8)


def test_gaussian_kl_and_expected_square_against_monte_carlo():
    rng = np.random.default_rng(9)
    d, n = 3, 200_000
    mp, mq = rng.normal(size=d), rng.normal(size=d)
    rp, rq = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    cp, cq = rp @ rp.T + 0.5 * np.eye(d), rq @ rq.T + 0.5 * np.eye(d)
    x = rng.multivariate_normal(mp, cp, size=n)
    ratio = multivariate_normal(mp, cp).logpdf(x) - multivariate_normal(mq, cq).logpdf(x)
    kl = gaussian_kl(torch.tensor(mp), torch.tensor(cp), torch.tensor(mq), torch.tensor(cq))
    assert abs(kl - ratio.mean()) < 4 * ratio.std() / math.sqrt(n)
    assert gaussian_kl(
        torch.tensor(mp), torch.tensor(cp), torch.tensor(mp), torch.tensor(cp)
    ) == pytest.approx(0.0, abs=1e-12)
    dmat, e = rng.normal(size=(d, d)), rng.normal(size=d)
    sq = ((x @ dmat.T + e) ** 2).sum(-1)
    val = expected_sq_affine(
        torch.tensor(dmat), torch.tensor(e), torch.tensor(mp), torch.tensor(cp)
    )
    assert abs(val - sq.mean()) < 4 * sq.std() / math.sqrt(n)


def _perturbation(d: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    d0 = 0.8 * torch.randn(d, d, generator=gen, dtype=F64)
    e0 = torch.randn(d, generator=gen, dtype=F64)
    return (lambda t: math.sin(math.pi * t) * d0), (lambda t: (1 - t) * e0 + t * e0.flip(0))


def test_sde_kl_is_below_the_girsanov_bound():
    d = 2
    fields = _gaussian_fields(d, 60)
    da, dc = _perturbation(d, 61)
    m0, c0 = fields.gaussian_moments(0.0)
    m1, c1 = fields.gaussian_moments(1.0)
    kls = {}
    for eps in (0.0, 0.05, 0.3, 1.0, 4.0):
        mh, ch = gaussian_moments_flow(
            lambda t, eps=eps: gaussian_drift_affine(fields, t, eps)[0] + da(t),
            lambda t, eps=eps: gaussian_drift_affine(fields, t, eps)[1] + dc(t),
            eps,
            m0,
            c0,
            steps=200,
        )
        kls[eps] = gaussian_kl(m1, c1, mh, ch)
        bound = girsanov_bound(
            da,
            dc,
            lambda t: fields.gaussian_moments(t)[0],
            lambda t: fields.gaussian_moments(t)[1],
            eps,
            steps=200,
        )
        assert kls[eps] <= bound, (eps, kls[eps], bound)
    assert math.isinf(girsanov_bound(da, dc, lambda t: m0, lambda t: c0, 0.0))
    assert kls[0.0] > 0.01  # the ODE is perturbed too, only without a bound


def test_girsanov_constant_matches_discrete_path_kl():
    """The path KL of two Euler-Maruyama chains (jointly Gaussian paths, KL computed on the
    (K+1)-dim joint law, no Girsanov) tends to (1/(4 eps)) int E|delta|^2 dt as K grows."""
    fields = _gaussian_fields(1, 70)
    eps, steps = 0.4, 400
    da, dc = _perturbation(1, 71)
    h = 1.0 / steps
    m0, c0 = fields.gaussian_moments(0.0)

    def path_law(extra: bool):
        mean = [float(m0[0])]
        cov = torch.zeros(steps + 1, steps + 1, dtype=F64)
        cov[0, 0] = float(c0[0, 0])
        for k in range(steps):
            t = k * h
            a, c = gaussian_drift_affine(fields, t, eps)
            a, c = float(a[0, 0]), float(c[0])
            if extra:
                a, c = a + float(da(t)[0, 0]), c + float(dc(t)[0])
            g = 1 + h * a
            mean.append(g * mean[-1] + h * c)
            cov[k + 1, : k + 1] = g * cov[k, : k + 1]
            cov[: k + 1, k + 1] = cov[k + 1, : k + 1]
            cov[k + 1, k + 1] = g * g * cov[k, k] + 2 * eps * h
        return torch.tensor(mean, dtype=F64), cov

    mp, cp = path_law(False)
    mq, cq = path_law(True)
    path_kl = gaussian_kl(mp, cp, mq, cq)
    bound = girsanov_bound(
        da,
        dc,
        lambda t: fields.gaussian_moments(t)[0],
        lambda t: fields.gaussian_moments(t)[1],
        eps,
        steps=400,
    )
    assert path_kl == pytest.approx(bound, rel=0.01)
