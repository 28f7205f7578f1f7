"""adjoint.py: the reparameterized PF-ODE and the three gradient routes, against the closed
forms of Gaussian data (random dimension, mean and SPD covariance), finite differences on a
tiny network, and measured peak memory; with negative controls (a flipped adjoint, the
odeint_adjoint trap) that show the checks can fail."""

from __future__ import annotations

import pytest
import torch

from pflow_explore import adjoint as ad
from pflow_explore import paths
from pflow_explore.nets import MLP
from pflow_explore.theory.adjoint import GaussianEps, exact_flow_map, exact_gradients
from pflow_explore.theory.gaussian_flow import GaussianFlow

F64 = torch.float64


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


# ---- rho and t ---------------------------------------------------------------------------------
class _OtherVP(paths.VPLinear):
    """A path without a closed-form inverse here: t_of_rho falls back to bisection."""


@pytest.mark.parametrize(
    "path", [cls() for cls in paths.PATHS.values()] + [_OtherVP(beta_min=0.5, beta_max=12.0)]
)
def test_t_of_rho_inverts_rho_of_t(path):
    t = torch.linspace(0.05, 0.9, 7, dtype=F64)
    if isinstance(path, paths.NoiseLevel):
        t = 80 * t
    rho = ad.rho_of_t(path, t)
    assert torch.allclose(ad.t_of_rho(path, rho), t, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="rho must be finite and >= 0"):
        ad.t_of_rho(path, -1.0)


def test_rho_grid_and_grid_checks():
    g = ad.rho_grid(10, 80.0)
    assert g.shape == (11,) and g[0] == 80.0 and g[-1] == 0.0 and bool((g.diff() < 0).all())
    g = ad.rho_grid(10, 80.0, 0.01, to_zero=False)
    assert g.shape == (11,) and g[-1] == pytest.approx(0.01)
    for bad, match in (([1.0], ">= 2 points"), ([1.0, 2.0], "decreasing"), ([1.0, -1.0], ">= 0")):
        with pytest.raises(ValueError, match=match):
            ad.check_grid(bad)
    with pytest.raises(ValueError, match="n_steps"):
        ad.rho_grid(1, 80.0)
    with pytest.raises(ValueError, match="rho_min < rho_max"):
        ad.rho_grid(5, 1.0, 2.0)


# ---- the ODE (1) on Gaussian data -------------------------------------------------------------
def gaussian_case(seed: int, path: paths.Path, n: int = 12):
    """Random N(mu, Sigma) in d = 2..4, its exact eps on ``path`` with a condition c (a mean
    shift), x_T at rho_T, a quadratic loss: (flow, x_T, rho_T, loss, exact gradients)."""
    d = 2 + seed % 3
    gauss = GaussianFlow.random(d, 10 + seed)
    gen = torch.Generator().manual_seed(seed)
    c = 0.5 * torch.randn(d, generator=gen, dtype=F64)
    eps = GaussianEps.from_flow(gauss, path)
    flow = ad.RhoFlow(eps, path, c)
    rho_T = 10.0 + 40 * float(torch.rand((), generator=gen, dtype=F64))
    alpha_T = float(flow.alpha(rho_T))
    x_T = alpha_T * rho_T * torch.randn(n, d, generator=gen, dtype=F64)
    target = torch.randn(n, d, generator=gen, dtype=F64)
    loss = lambda x: 0.5 * ((x - target) ** 2).sum()  # noqa: E731
    x_e = exact_flow_map(eps, x_T, rho_T, alpha_T, condition=c)
    exact = exact_gradients(eps, x_T, (x_e - target).detach(), rho_T, alpha_T, condition=c)
    return flow, x_T, rho_T, loss, exact, x_e.detach()


def errors(g: ad.Gradients, exact) -> dict[str, float]:
    return {
        "x_T": rel(g.x_T, exact.x_T),
        "c": rel(g.condition, exact.mean),  # c shifts the mean: dL/dc = dL/dmu
        "mu": rel(g.params[0], exact.mean),
        "lambda": rel(g.params[1], exact.eigenvalues),
    }


@pytest.mark.parametrize("path", [paths.VPLinear(), paths.NoiseLevel()], ids=["vp", "ve"])
def test_sampler_converges_to_the_exact_flow_map_at_its_order(path):
    flow, x_T, rho_T, _, _, x_e = gaussian_case(1, path)
    for method, order in (("euler", 1), ("heun", 2), ("dpm2", 2), ("rk4", 3)):
        err = [rel(ad.sample(flow, x_T, ad.rho_grid(n, rho_T), method), x_e) for n in (16, 64)]
        assert err[1] < err[0] / 4 ** (order - 0.3), (method, err)
    steps = list(ad.rho_steps(flow, x_T, ad.rho_grid(8, rho_T), "heun"))
    assert len(steps) == 8 and steps[-1].rho_next == 0.0 and steps[-1].nfe == 16
    assert torch.equal(steps[-1].x_next, ad.sample(flow, x_T, ad.rho_grid(8, rho_T), "heun"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_routes_agree_with_the_closed_form_and_converge(seed):
    path = paths.VPLinear() if seed % 2 == 0 else paths.NoiseLevel()
    flow, x_T, rho_T, loss, exact, _ = gaussian_case(seed, path)
    runs = {
        ("naive", "euler"): (20, 80, 320),  # exact gradient of Euler: O(1/N)
        ("adjoint", "heun"): (20, 80, 320),  # the hand adjoint, second order
        ("adjoint", "dpm2"): (20, 80, 320),
        ("torchdiffeq", "rk4"): (10, 40),
    }
    shrink = {"euler": 3.0, "heun": 10.0, "dpm2": 10.0, "rk4": 50.0}
    for (route, method), steps in runs.items():
        table = [
            errors(ad.gradients(route, flow, x_T, ad.rho_grid(n, rho_T), loss, method), exact)
            for n in steps
        ]
        for key in table[0]:
            coarse, fine = table[0][key], table[-1][key]
            assert fine < 2e-2, (route, method, key, table)
            assert fine < coarse / shrink[method] ** (len(steps) - 1) * 4, (
                route,
                method,
                key,
                table,
            )
    for route in ("adjoint", "torchdiffeq"):
        table = []
        for tol in (1e-4, 1e-6, 1e-8):
            g = ad.gradients(
                route, flow, x_T, ad.rho_grid(2, rho_T), loss, "dopri5", rtol=tol, atol=tol
            )
            table.append(max(errors(g, exact).values()))
        assert table[2] < 1e-5 and table[2] < table[0] / 100, (route, table)


def test_flipped_adjoint_is_caught():
    """Negative control: da/drho = +a d eps/dy (the sign flipped) gives a large error where the
    right sign, on the same grid and solver, is accurate."""
    flow, x_T, rho_T, loss, exact, _ = gaussian_case(0, paths.VPLinear())
    grid = ad.rho_grid(80, rho_T)
    params = flow.trainable()
    right = ad.augmented_dynamics(flow, params)

    def flipped(rho, state):
        out = right(rho, state)
        return (out[0], -out[1], *out[2:])

    alpha_T = flow.alpha(grid[0])
    for dynamics, small in ((right, True), (flipped, False)):
        x_e = ad.sample(flow, x_T, grid, "heun").requires_grad_(True)
        (g_e,) = torch.autograd.grad(loss(x_e), x_e)
        state = (x_e.detach(), g_e, *(torch.zeros_like(p) for p in params))
        out = ad.solve_augmented(dynamics, state, grid.flip(0), "heun")
        err_x, err_lam = rel(out[1] / alpha_T, exact.x_T), rel(out[3], exact.eigenvalues)
        if small:
            assert err_x < 1e-2 and err_lam < 1e-2
        else:
            assert err_x > 0.5 and err_lam > 0.5, (err_x, err_lam)


def test_odeint_adjoint_trap_no_weight_gradients():
    """The card's trap: odeint_adjoint told only about the input gives no weight gradients
    (None here), while dL/dx_T is still right; with every parameter passed they are right."""
    flow, x_T, rho_T, loss, exact, _ = gaussian_case(2, paths.NoiseLevel())
    grid = ad.rho_grid(40, rho_T)
    bare = ad.torchdiffeq_gradients(flow, x_T, grid, loss, "rk4", adjoint_params=())
    assert bare.condition is None and all(p is None for p in bare.params)
    assert rel(bare.x_T, exact.x_T) < 1e-4
    full = ad.torchdiffeq_gradients(flow, x_T, grid, loss, "rk4")
    assert max(errors(full, exact).values()) < 1e-4


def test_adjoint_reconstructs_the_start_backwards():
    flow, x_T, rho_T, loss, _, _ = gaussian_case(1, paths.VPLinear())
    y_T = x_T / flow.alpha(rho_T)
    errs = [
        ad.adjoint_gradients(flow, x_T, ad.rho_grid(n, rho_T), loss, "heun").reconstruction
        / float(y_T.abs().max())
        for n in (20, 80)
    ]
    assert errs[1] < 1e-3 and errs[1] < errs[0] / 10, errs


@pytest.mark.parametrize("method", ["heun", "dopri5"])
def test_adjoint_forward_solve_is_the_sampler_and_plain_odeint(method):
    """The adjoint route's forward pass (solve_augmented on the state (y,), grid decreasing)
    lands where the fixed-step sampler does (the same steps, to the bit), and for adaptive
    methods where torchdiffeq.odeint on the bare flow (1) does (the same solve, to the bit)."""
    import torchdiffeq

    flow, x_T, rho_T, loss, _, _ = gaussian_case(1, paths.VPLinear())
    grid = ad.rho_grid(12, rho_T)
    x_e = ad.adjoint_gradients(flow, x_T, grid, loss, method, rtol=1e-7, atol=1e-7).x_e
    if method in ad.METHODS:
        expected = ad.sample(flow, x_T, grid, method)
    else:
        ends = torch.stack([grid[0], grid[-1]]).to(x_T)
        y_T = x_T / flow.alpha(grid[0]).to(x_T)
        with torch.no_grad():
            y_e = torchdiffeq.odeint(
                flow, y_T, ends, method=method, rtol=1e-7, atol=1e-7, options={"step_t": ends}
            )[-1]
        expected = flow.alpha(grid[-1]).to(y_e) * y_e
    assert torch.equal(x_e, expected)


# ---- a tiny network: weight gradients ------------------------------------------------------------
def tiny_mlp_case():
    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=2, time_dim=8).double()
    flow = ad.RhoFlow(net, paths.VPLinear())
    gen = torch.Generator().manual_seed(5)
    rho_T = 6.0
    x_T = float(flow.alpha(rho_T)) * rho_T * torch.randn(16, 2, generator=gen, dtype=F64)
    target = torch.tensor([1.0, -0.5], dtype=F64)
    loss = lambda x: ((x - target) ** 2).sum(1).mean()  # noqa: E731
    return flow, x_T, rho_T, loss


def test_mlp_weight_gradients_match_finite_differences_and_routes_converge():
    flow, x_T, rho_T, loss = tiny_mlp_case()
    params = flow.trainable()
    grid = ad.rho_grid(12, rho_T)
    naive = ad.naive_gradients(flow, x_T, grid, loss, "heun")
    assert all(float(g.norm()) > 0 for g in naive.params)  # every weight tensor is reached
    gen = torch.Generator().manual_seed(0)
    h = 1e-6
    for j in (0, 3, len(params) - 2, len(params) - 1):
        p = params[j]
        k = int(torch.randint(p.numel(), (), generator=gen))
        with torch.no_grad():
            flat = p.view(-1)
            flat[k] += h
            up = float(loss(ad.sample(flow, x_T, grid, "heun")))
            flat[k] -= 2 * h
            down = float(loss(ad.sample(flow, x_T, grid, "heun")))
            flat[k] += h
        assert (up - down) / (2 * h) == pytest.approx(
            float(naive.params[j].view(-1)[k]), rel=1e-5, abs=1e-8
        )
    # the reference: exact gradient of a fine rk4 discretization
    ref = ad.naive_gradients(flow, x_T, ad.rho_grid(200, rho_T), loss, "rk4")

    def err(g: ad.Gradients) -> float:
        return max(rel(a, b) for a, b in zip(g.params, ref.params, strict=True))

    hand = [
        err(ad.adjoint_gradients(flow, x_T, ad.rho_grid(n, rho_T), loss, "heun")) for n in (8, 32)
    ]
    assert hand[1] < 2e-2 and hand[1] < hand[0] / 10, hand  # second order: ~1/16
    tdq = ad.torchdiffeq_gradients(flow, x_T, grid, loss, "dopri5", rtol=1e-8, atol=1e-8)
    assert err(tdq) < 1e-5 and rel(tdq.x_T, ref.x_T) < 1e-5


# ---- memory --------------------------------------------------------------------------------
def test_naive_memory_grows_with_steps_and_the_adjoint_does_not():
    """Peak memory in a fresh child process (memory.peak_memory): 1024 points through an
    MLP(2, 256, 3), 4 and 20 Euler steps. Naive backprop keeps ~6 MB a step; the adjoint
    holds one evaluation's graph whatever the steps."""
    peaks = {}
    for route in ("naive", "adjoint"):
        for n in (4, 20):
            job = ad.GradientJob(route, n, batch=1024, hidden=256, depth=3)
            peaks[route, n] = ad.gradient_memory(job).peak_mb
    naive = peaks["naive", 20] - peaks["naive", 4]
    adjoint = peaks["adjoint", 20] - peaks["adjoint", 4]
    assert naive > 50.0, peaks  # ~16 steps x ~6 MB
    assert adjoint < 0.1 * naive and abs(adjoint) < 8.0, peaks


# ---- the chapter's two uses ----------------------------------------------------------------
def test_finetune_step_moves_samples_into_the_box():
    flow, x_T, rho_T, _ = tiny_mlp_case()
    grid = ad.rho_grid(6, rho_T)
    goal = lambda x: ad.distance_to_box(x, [1.0, 1.0], [2.0, 2.0])  # noqa: E731
    opt = torch.optim.Adam(flow.trainable(), lr=1e-2)
    losses = [
        ad.finetune_step(flow, x_T, grid, goal, opt, "adjoint", "heun").loss for _ in range(15)
    ]
    assert losses[-1] < 0.25 * losses[0], losses


def attack(proximity: float, steps: int = 30, with_condition: bool = False):
    """Gaussian data at rho_T = 3, a linear 'classifier' w on x_e, the untargeted margin."""
    d = 3
    gauss = GaussianFlow.random(d, 7)
    gen = torch.Generator().manual_seed(9)
    path = paths.VPLinear()
    c = torch.zeros(d, dtype=F64, requires_grad=with_condition)
    flow = ad.RhoFlow(GaussianEps.from_flow(gauss, path), path, c)
    rho_T, grid = 3.0, ad.rho_grid(10, 3.0)
    alpha_T = float(flow.alpha(rho_T))
    x_T = alpha_T * rho_T * torch.randn(16, d, generator=gen, dtype=F64)
    w = torch.randn(d, 3, generator=gen, dtype=F64)
    labels = (ad.sample(flow, x_T, grid) @ w).argmax(1)
    objective = lambda x: ad.margin_loss(x @ w, labels, kappa=0.2)  # noqa: E731
    noise = x_T.clone().requires_grad_(True)
    opt = torch.optim.Adam([noise, c] if with_condition else [noise], lr=0.05)
    for _ in range(steps):
        ad.noise_attack_step(flow, noise, grid, objective, opt, x_T, proximity)
    flipped = float(
        ((ad.sample(flow, noise.detach(), grid) @ w).argmax(1) != labels).double().mean()
    )
    return flipped, rel(noise.detach(), x_T), c.detach()


def test_noise_attack_step_changes_a_decision_and_proximity_keeps_it_near():
    """Gaussian data and a linear 'classifier' on x_e: the attack flips the decisions; a larger
    proximity weight ends nearer the starting noise; the condition moves when it is trained."""
    free, near = attack(0.0), attack(3.0)
    assert free[0] >= 0.9, free
    assert near[1] < 0.8 * free[1], (free, near)
    _, _, c = attack(0.0, steps=2, with_condition=True)
    assert float(c.norm()) > 0


def test_losses_and_errors():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    labels = torch.tensor([0, 2])
    assert float(ad.margin_loss(logits, labels)) == pytest.approx((2.0 + 3.0) / 2)
    assert float(ad.margin_loss(logits, labels, target=torch.tensor(1))) == pytest.approx(
        ((3.0 - 1.0) + (5.0 - 2.0)) / 2
    )
    assert float(ad.margin_loss(-logits, labels, kappa=0.5)) == pytest.approx(-0.5)
    x = torch.tensor([[0.5, 0.5], [3.0, 0.5]])
    assert float(ad.distance_to_box(x, [0.0, 0.0], [1.0, 1.0])) == pytest.approx(4.0 / 2)
    with pytest.raises(ValueError, match="low <= high"):
        ad.distance_to_box(x, [1.0, 1.0], [0.0, 0.0])
    flow, x_T, rho_T, loss, _, _ = gaussian_case(0, paths.NoiseLevel())
    grid = ad.rho_grid(4, rho_T)
    with pytest.raises(ValueError, match="unknown route"):
        ad.gradients("backprop", flow, x_T, grid, loss)
    with pytest.raises(ValueError, match="unknown method"):
        ad.gradients("adjoint", flow, x_T, grid, loss, "leapfrog")
    with pytest.raises(ValueError, match="unknown torchdiffeq method"):
        ad.gradients("torchdiffeq", flow, x_T, grid, loss, "dpm2")
    with pytest.raises(ValueError, match="0-d tensor"):
        ad.gradients("naive", flow, x_T, grid, lambda x: x)
    with pytest.raises(ValueError, match="decreasing"):
        ad.gradients("naive", flow, x_T, grid.flip(0), loss)
    with pytest.raises(ValueError, match="anchor"):
        ad.noise_attack_step(flow, x_T, grid, loss, None, x_T[:1])
    with pytest.raises(ValueError, match="unknown route"):
        ad.GradientJob("backprop", 4).setup()


def test_eps_matching_loss_is_minimised_by_the_exact_eps():
    """On Gaussian data the exact E[z | x_t] (GaussianEps) scores below a perturbed one, and
    the loss equals the Monte Carlo mean of ||eps - z||^2 it is defined as."""
    path = paths.VPLinear()
    gauss = GaussianFlow.random(2, 3)
    exact = GaussianEps.from_flow(gauss, path)
    x0 = gauss.sample(20000, torch.Generator().manual_seed(0))

    def per_row(shift: float):
        return lambda x, t: (
            torch.stack([exact(x[i : i + 1], t[i]) for i in range(len(x))])[:, 0] + shift
        )

    small = x0[:2000]
    best = ad.eps_matching_loss(per_row(0.0), path, small, torch.Generator().manual_seed(1))
    worse = ad.eps_matching_loss(per_row(0.3), path, small, torch.Generator().manual_seed(1))
    assert float(worse) > float(best) + 0.05
    zero = ad.eps_matching_loss(lambda x, t: torch.zeros_like(x), path, x0, torch.Generator())
    assert float(zero) == pytest.approx(1.0, abs=0.03)  # E|z|^2 / d = 1
    with pytest.raises(ValueError, match="t_min"):
        ad.eps_matching_loss(per_row(0.0), path, small, t_min=1.0)


def test_finite_difference_check_and_fit_line():
    flow, x_T, rho_T, loss = tiny_mlp_case()
    grid = ad.rho_grid(6, rho_T)
    worst, checked, reached = ad.finite_difference_check(
        flow, x_T, grid, loss, "heun", generator=torch.Generator().manual_seed(0)
    )
    assert worst < 1e-4 and checked == 2 * len(flow.trainable()) == 2 * reached
    # control: the finite differences of another loss disagree with these gradients
    other = lambda x: 2 * loss(x)  # noqa: E731
    g = ad.naive_gradients(flow, x_T, grid, other, "heun")
    assert max(float(a.norm()) for a in g.params) > 0
    assert ad.fit_line([1, 2, 3], [1, 3, 5]) == pytest.approx((2.0, -1.0))
