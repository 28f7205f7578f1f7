"""AdjointDPM (Pan et al. 2023): gradients through the probability-flow ODE of a diffusion,
with memory that does not grow with the number of steps (card 07_adjoint).

Time convention: diffusion (t = 0 data, t = 1 noise, through :mod:`pflow_explore.paths`);
the ODE is solved in rho = sigma_t / alpha_t, which grows with t (rho = 0 is data), from
rho_T down to rho_e.

The reparameterized PF-ODE (card, "Method"): with x_t = alpha_t x0 + sigma_t z, a noise
predictor eps_theta(x, t, c) ~ E[z | x_t = x] and the variables y = x / alpha, rho = sigma / alpha,

    dy/drho = eps_theta(alpha(t(rho)) y, t(rho), c),                                    (1)

where alpha(t(rho)) = 1 / sqrt(1 + rho^2) on a variance-preserving path and 1 on a
variance-exploding one (EDM: rho = sigma). (1) is non-stiff: no 1/sigma, and Euler in rho
is DDIM (:class:`RhoFlow`, :func:`t_of_rho`, :func:`rho_grid`, :func:`rho_steps`).

Gradients of a loss L(x_e), x_e = alpha_e y(rho_e), with respect to x_T, c and theta, three ways:

- ``"naive"`` (:func:`naive_gradients`): autograd through a fixed-step solver of (1): the
  exact gradient of that discretization; the graph of every step is kept (memory ~ steps);
- ``"adjoint"`` (:func:`adjoint_gradients`): the paper's adjoint, written out. With
  a(rho) = dL/dy(rho), solve from rho_e up to rho_T the augmented ODE (:func:`augmented_dynamics`)

      dy/drho = eps,   da/drho = -a^T d eps/dy,   d g_theta/drho = -a^T d eps/dtheta,       (2)

  from y(rho_e) (the forward solution; y is re-solved backwards), a(rho_e) = alpha_e dL/dx_e
  and g(rho_e) = 0; then dL/dtheta = g_theta(rho_T) = -int_{rho_e}^{rho_T} a^T d eps/dtheta
  drho (the same for c) and dL/dx_T = a(rho_T) / alpha_T                               (3)
  (:func:`solve_augmented`: a fixed-step method on the reversed grid, or torchdiffeq's
  adaptive ones). One evaluation's graph at a time: memory flat in the steps;
- ``"torchdiffeq"`` (:func:`torchdiffeq_gradients`): ``torchdiffeq.odeint_adjoint`` on (1),
  with every trainable parameter and c passed as ``adjoint_params`` (card, "Traps": given
  only the input it returns no weight gradients). Fixed-step methods get the whole grid as
  output times, so torchdiffeq keeps y at every grid point and restarts the backward
  solve from those (memory ~ steps x one state, no graphs); adaptive ones get the two ends.

:func:`gradient_memory` measures peak memory and time of one route in a child process
(:mod:`pflow_explore.memory`: why the numbers can be trusted). :func:`finetune_step` and
:func:`noise_attack_step` are the two uses of the chapter (card, "Small reproduction").

Shapes: x_T (n, ...) as the eps-model takes it (flat (n, d) for the 2D models, images
(n, C, H, W)); c any tensor the eps-model takes (None: none); grids (N + 1,) float64,
decreasing; a loss maps x_e (n, ...) to a 0-d tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pflow_explore import paths
from pflow_explore.memory import PeakMemory, peak_memory

__all__ = [
    "METHODS",
    "ADAPTIVE",
    "ROUTES",
    "TORCHDIFFEQ_FIXED",
    "GaussianProblem",
    "Gradients",
    "GradientJob",
    "RhoFlow",
    "RhoStep",
    "StepResult",
    "adjoint_gradients",
    "augmented_dynamics",
    "check_grid",
    "distance_to_box",
    "eps_matching_loss",
    "finetune_step",
    "finite_difference_check",
    "fit_line",
    "gradient_memory",
    "gaussian_problem",
    "gradients",
    "margin_loss",
    "mean_square",
    "naive_gradients",
    "noise_attack_step",
    "rho_grid",
    "rho_of_t",
    "rho_steps",
    "sample",
    "solve_augmented",
    "t_of_rho",
    "torchdiffeq_gradients",
]

F64 = torch.float64
METHODS: tuple[str, ...] = ("euler", "heun", "dpm2", "rk4")  # fixed steps in rho
ADAPTIVE: tuple[str, ...] = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
TORCHDIFFEQ_FIXED: tuple[str, ...] = ("euler", "midpoint", "heun2", "heun3", "rk4")
ROUTES: tuple[str, ...] = ("naive", "adjoint", "torchdiffeq")
EpsModel = Callable[..., Tensor]  # eps(x (n, ...), t 0-d[, c]) -> (n, ...)
LossFn = Callable[[Tensor], Tensor]  # x_e (n, ...) -> 0-d
State = tuple[Tensor, ...]


# ---- rho and t ------------------------------------------------------------------------------
def rho_of_t(path: paths.Path, t: float | Tensor) -> Tensor:
    """rho(t) = sigma(t) / alpha(t), the noise-to-signal ratio (float64, t's shape)."""
    tt = torch.as_tensor(t, dtype=F64)
    return path.sigma(tt) / path.alpha(tt)


def _vp_linear_t(path: paths.VPLinear, rho: Tensor) -> Tensor:
    # alpha = 1 / sqrt(1 + rho^2): (b_max - b_min) t^2 / 4 + b_min t / 2 = log(1 + rho^2) / 2
    qa, qb, qc = (path.beta_max - path.beta_min) / 4, path.beta_min / 2, torch.log1p(rho**2) / 2
    if qa == 0:
        return qc / qb
    return 2 * qc / (qb + torch.sqrt(qb**2 + 4 * qa * qc))  # the positive root, cancellation-free


def _vp_cosine_t(path: paths.VPCosine, rho: Tensor) -> Tensor:
    c0 = math.cos(0.5 * math.pi * path.s / (1 + path.s))
    phase = torch.acos((c0 / torch.sqrt(1 + rho**2)).clamp(-1, 1))
    return phase * (1 + path.s) * 2 / math.pi - path.s


def _ve_t(path: paths.VE, rho: Tensor) -> Tensor:
    return torch.log(rho / path.sigma_min) / math.log(path.sigma_max / path.sigma_min)


_INVERSES: tuple[tuple[type, Callable[[Any, Tensor], Tensor]], ...] = (
    (paths.NoiseLevel, lambda p, r: r.clone()),
    (paths.EDM, lambda p, r: p.t_of_sigma(r)),
    (paths.VE, _ve_t),
    (paths.VPLinear, _vp_linear_t),
    (paths.VPCosine, _vp_cosine_t),
    (paths.Linear, lambda p, r: r / (1 + r)),
    (paths.Trigonometric, lambda p, r: 2 * torch.atan(r) / math.pi),
)


def t_of_rho(path: paths.Path, rho: float | Tensor) -> Tensor:
    """The time t with sigma(t) / alpha(t) = rho (float64, rho's shape), rho >= 0.

    Closed forms for the paths of :mod:`pflow_explore.paths`; any other path is inverted by
    bisection on t in [0, 1] (60 halvings, rho(t) assumed increasing there).
    """
    r = torch.as_tensor(rho, dtype=F64)
    if bool((r < 0).any()) or not bool(torch.isfinite(r).all()):
        raise ValueError(f"rho must be finite and >= 0, got {r.min().item()}")
    for kind, inverse in _INVERSES:
        if type(path) is kind:
            return inverse(path, r)
    lo, hi = torch.zeros_like(r), torch.ones_like(r)
    for _ in range(60):
        mid = (lo + hi) / 2
        above = rho_of_t(path, mid) > r
        lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
    return (lo + hi) / 2


def rho_grid(
    n_steps: int, rho_max: float, rho_min: float = 0.002, ramp: float = 7.0, to_zero: bool = True
) -> Tensor:
    """A decreasing grid in rho, (n_steps + 1,) float64: EDM's ramp (``paths.karras_sigmas``,
    exponent ``ramp``) from rho_max to rho_min, then 0 when ``to_zero`` (the last step lands on
    the data; (1) has no 1/rho, so that step is an ordinary one); else ending at rho_min."""
    if not isinstance(n_steps, int) or n_steps < 2:
        raise ValueError(f"n_steps must be an integer >= 2, got {n_steps!r}")
    if not 0 < rho_min < rho_max:
        raise ValueError(f"need 0 < rho_min < rho_max, got {rho_min}, {rho_max}")
    if to_zero:
        return paths.karras_sigmas(n_steps, rho_min, rho_max, ramp)
    return paths.karras_sigmas(n_steps + 1, rho_min, rho_max, ramp)[:-1]


def check_grid(grid: Tensor | Sequence[float]) -> Tensor:
    """A rho grid as float64 (N + 1,): 1-D, >= 2 points, finite, >= 0, strictly decreasing."""
    g = torch.as_tensor(grid, dtype=F64)
    if g.dim() != 1 or g.numel() < 2:
        raise ValueError(f"grid must be 1-D with >= 2 points, got shape {tuple(g.shape)}")
    if not bool(torch.isfinite(g).all()) or bool((g < 0).any()):
        raise ValueError("grid must be finite and >= 0 (rho = sigma / alpha)")
    if not bool((g.diff() < 0).all()):
        raise ValueError("grid must be strictly decreasing: from rho_T (noise) down to the data")
    return g


# ---- the ODE (1) ------------------------------------------------------------------------------
class RhoFlow(nn.Module):
    """The right-hand side of (1), f(rho, y) = eps_theta(alpha(t(rho)) y, t(rho), c), in
    torchdiffeq's argument order. y: (n, ...); rho: float or 0-d tensor.

    eps_model: the noise predictor, called eps_model(x, t) (or eps_model(x, t, c) when
    ``condition`` is set) with t a 0-d tensor of x's dtype, the ``path``'s own time;
    condition: c, held as a plain attribute (not a parameter of this module); ``nfe`` counts
    the evaluations of eps_model. The path maps t to rho and back (:func:`t_of_rho`). A rho
    below 0 (an adaptive solver stepping past the data end) is evaluated at rho = 0.
    """

    def __init__(
        self, eps_model: EpsModel, path: paths.Path, condition: Tensor | None = None
    ) -> None:
        super().__init__()
        self.eps_model, self.path, self.condition, self.nfe = eps_model, path, condition, 0

    def time(self, rho: float | Tensor) -> Tensor:
        """t(rho), float64."""
        return t_of_rho(self.path, rho)

    def alpha(self, rho: float | Tensor) -> Tensor:
        """alpha(t(rho)), float64: x = alpha y."""
        return self.path.alpha(self.time(rho))

    def trainable(self) -> list[Tensor]:
        """The eps-model's parameters that require gradients (the theta of (2)), in order."""
        if not isinstance(self.eps_model, nn.Module):
            return []
        return [p for p in self.eps_model.parameters() if p.requires_grad]

    def forward(self, rho: float | Tensor, y: Tensor) -> Tensor:
        """dy/drho at (rho, y): (n, ...) -> (n, ...)."""
        # an adaptive solver's probe or overshoot may step past the data end: hold rho at 0
        rho64 = torch.as_tensor(rho).detach().to(F64).clamp_min(0.0)
        t = self.time(rho64)
        x = self.path.alpha(t).to(y) * y
        self.nfe += 1
        if self.condition is None:
            return self.eps_model(x, t.to(y))
        return self.eps_model(x, t.to(y), self.condition)


# ---- fixed steps in rho --------------------------------------------------------------------------
def _axpy(z: State, h: Tensor | float, k: State) -> State:
    return tuple(zi + h * ki for zi, ki in zip(z, k, strict=True))


def _step(
    f: Callable[[Tensor, State], State], rho: Tensor, z: State, rho_next: Tensor, method: str
):
    """One step of ``method`` from rho to rho_next on a tuple state: (z_next, k1 = f(rho, z)).

    euler: z + h k1 (in rho: DDIM, the first-order exponential integrator);
    heun: z + h (k1 + f(rho_next, z + h k1)) / 2;
    dpm2: z + h f(r_m, z + (r_m - rho) k1), r_m = sqrt(rho rho_next) (the midpoint in
    log-rho: DPM-Solver-2; Euler when an end is 0); rk4: classical Runge-Kutta.
    """
    h = rho_next - rho
    k1 = f(rho, z)
    if method == "euler":
        return _axpy(z, h, k1), k1
    if method == "heun":
        k2 = f(rho_next, _axpy(z, h, k1))
        return tuple(zi + h * (a + b) / 2 for zi, a, b in zip(z, k1, k2, strict=True)), k1
    if method == "dpm2":
        mid = torch.sqrt(rho * rho_next)
        if float(mid) == 0.0:
            return _axpy(z, h, k1), k1
        return _axpy(z, h, f(mid, _axpy(z, mid - rho, k1))), k1
    half = h / 2
    k2 = f(rho + half, _axpy(z, half, k1))
    k3 = f(rho + half, _axpy(z, half, k2))
    k4 = f(rho_next, _axpy(z, h, k3))
    ks = zip(z, k1, k2, k3, k4, strict=True)
    return tuple(zi + h / 6 * (a + 2 * b + 2 * c + d) for zi, a, b, c, d in ks), k1


def _check_method(method: str, adaptive: bool = False) -> None:
    valid = METHODS + (ADAPTIVE if adaptive else ())
    if method not in valid:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(valid)}")


@dataclass
class RhoStep:
    """Step i of :func:`rho_steps`: y (n, ...) at ``rho`` to y_next at ``rho_next``;
    eps = f(rho, y), so y - rho eps is the x0-estimate; x_next = alpha(rho_next) y_next;
    nfe: evaluations so far."""

    i: int
    rho: float
    rho_next: float
    y: Tensor
    eps: Tensor
    y_next: Tensor
    x_next: Tensor
    nfe: int


def rho_steps(
    flow: RhoFlow,
    x_T: Tensor,
    grid: Tensor | Sequence[float],
    method: str = "euler",
    grad: bool = False,
) -> Iterator[RhoStep]:
    """Solve (1) on ``grid`` (N + 1,) from x_T (n, ...) at rho_T = grid[0], one step at a time
    (:func:`_step`'s methods). ``grad``: keep the autograd graph (the naive route), else each
    step runs under no_grad (the mode is set per step, never held across a ``yield``)."""
    _check_method(method)
    g = check_grid(grid)
    start = flow.nfe
    f = lambda r, z: (flow(r, z[0]),)  # noqa: E731 - the tuple form _step works on
    with torch.set_grad_enabled(grad):
        y = x_T / flow.alpha(g[0]).to(x_T)
    for i in range(len(g) - 1):
        with torch.set_grad_enabled(grad):
            (y_next,), (eps,) = _step(f, g[i], (y,), g[i + 1], method)
            x_next = flow.alpha(g[i + 1]).to(y_next) * y_next
        yield RhoStep(i, float(g[i]), float(g[i + 1]), y, eps, y_next, x_next, flow.nfe - start)
        y = y_next


def sample(
    flow: RhoFlow,
    x_T: Tensor,
    grid: Tensor | Sequence[float],
    method: str = "euler",
    grad: bool = False,
) -> Tensor:
    """x_e = alpha_e y(rho_e) (n, ...) from x_T at grid[0]: :func:`rho_steps` to its end."""
    x = x_T
    for step in rho_steps(flow, x_T, grid, method, grad):
        x = step.x_next
    return x


# ---- gradients ----------------------------------------------------------------------------------
@dataclass
class Gradients:
    """What a route returns. x_e: the generated sample (n, ...), detached; loss: L(x_e);
    x_T: dL/dx_T (n, ...); condition: dL/dc (c's shape; None without c); params: dL/dtheta,
    one per :meth:`RhoFlow.trainable` parameter (None: not computed, the odeint_adjoint trap);
    nfe: eps-model evaluations (forward and backward); reconstruction: max |y_T re-solved
    backwards - y_T| (the adjoint route; None elsewhere)."""

    route: str
    x_e: Tensor
    loss: float
    x_T: Tensor
    condition: Tensor | None
    params: tuple[Tensor | None, ...]
    nfe: int
    reconstruction: float | None = None


class _LeafCondition:
    """Within ``with``: the flow's condition replaced by a detached copy that requires grad
    (the tensor whose gradient is dL/dc); restored afterwards."""

    def __init__(self, flow: RhoFlow) -> None:
        self.flow, self.saved = flow, flow.condition

    def __enter__(self) -> Tensor | None:
        if self.saved is not None:
            self.flow.condition = self.saved.detach().requires_grad_(True)
        return self.flow.condition

    def __exit__(self, *exc: object) -> None:
        self.flow.condition = self.saved


def _scalar(loss: Tensor) -> Tensor:
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a 0-d tensor (a scalar loss), got {shape}")
    return loss


def _check_x(x_T: Tensor) -> Tensor:
    if not isinstance(x_T, Tensor) or x_T.dim() < 1 or not x_T.is_floating_point():
        raise ValueError("x_T must be a floating tensor (n, ...)")
    return x_T.detach().requires_grad_(True)


def _grad_or_none(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g


def naive_gradients(
    flow: RhoFlow,
    x_T: Tensor,
    grid: Tensor | Sequence[float],
    loss_fn: LossFn,
    method: str = "euler",
) -> Gradients:
    """Autograd through :func:`sample` (``method`` on ``grid``): the exact gradient of the
    discretized flow, with the graph of all N steps held until the backward pass."""
    x_leaf, start = _check_x(x_T), flow.nfe
    params = flow.trainable()
    with _LeafCondition(flow) as c:
        x_e = sample(flow, x_leaf, grid, method, grad=True)
        loss = _scalar(loss_fn(x_e))
        wrt = [x_leaf] + ([c] if c is not None else []) + params
        grads = list(torch.autograd.grad(loss, wrt, allow_unused=True))
    g_x = _grad_or_none(grads.pop(0), x_leaf)
    g_c = _grad_or_none(grads.pop(0), c) if c is not None else None
    g_p = tuple(_grad_or_none(gp, p) for gp, p in zip(grads, params, strict=True))
    return Gradients("naive", x_e.detach(), float(loss.detach()), g_x, g_c, g_p, flow.nfe - start)


def augmented_dynamics(flow: RhoFlow, wrt: Sequence[Tensor]) -> Callable[[Tensor, State], State]:
    """The right-hand side of (2) on the state (y, a, g_1, ..., g_k), g_j shaped like wrt[j]:

        (eps, -a^T d eps/dy, -a^T d eps/d wrt_1, ..., -a^T d eps/d wrt_k),

    each vector-Jacobian product by one backward pass through one evaluation of eps (its
    graph freed at once). wrt: tensors eps depends on that require grad (the condition the
    flow holds, the eps-model's parameters)."""
    wrt = tuple(wrt)

    def dynamics(rho: Tensor, state: State) -> State:
        y, a = state[0], state[1]
        with torch.enable_grad():
            y_in = y.detach().requires_grad_(True)
            eps = flow(rho, y_in)
            vjps = torch.autograd.grad(eps, (y_in, *wrt), grad_outputs=a, allow_unused=True)
        grads = tuple(-_grad_or_none(v, w) for v, w in zip(vjps, (y_in, *wrt), strict=True))
        return (eps.detach(), *grads)

    return dynamics


def solve_augmented(
    dynamics: Callable[[Tensor, State], State],
    state: State,
    grid_up: Tensor,
    method: str = "euler",
    rtol: float = 1e-6,
    atol: float = 1e-6,
) -> State:
    """Integrate a tuple-state ODE along ``grid_up`` (increasing in rho: the backward pass
    of (2); :func:`adjoint_gradients` also runs (1) forward with it, on a decreasing grid
    and the state (y,)).

    Fixed-step ``method`` (:data:`METHODS`): one step per grid interval; adaptive
    (:data:`ADAPTIVE`): torchdiffeq.odeint from grid_up[0] to grid_up[-1] with rtol, atol,
    landing on grid_up[-1] (``step_t``) instead of stepping past it and interpolating back.
    Runs under no_grad (the dynamics open their own graphs). Returns the state at the end.
    """
    _check_method(method, adaptive=True)
    with torch.no_grad():
        if method in ADAPTIVE:
            import torchdiffeq

            ends = torch.stack([grid_up[0], grid_up[-1]]).to(state[0])
            out = torchdiffeq.odeint(
                dynamics,
                state,
                ends,
                method=method,
                rtol=rtol,
                atol=atol,
                options={"step_t": ends},
            )
            return tuple(o[-1] for o in out)
        for r, r_next in zip(grid_up[:-1], grid_up[1:], strict=True):
            state, _ = _step(dynamics, r, state, r_next, method)
        return state


def adjoint_gradients(
    flow: RhoFlow,
    x_T: Tensor,
    grid: Tensor | Sequence[float],
    loss_fn: LossFn,
    method: str = "euler",
    rtol: float = 1e-6,
    atol: float = 1e-6,
) -> Gradients:
    """The adjoint (2)-(3), by hand: solve (1) forward without a graph, then the augmented
    ODE from rho_e back up to rho_T (``method`` on the reversed grid, or an adaptive
    torchdiffeq method between the ends with rtol, atol). Memory: one evaluation's graph.

    Measured (benchmarks/results/adjoint_memory_cpu.md): do not use "euler" here on a coarse
    grid. Going up, its step evaluates d eps/dy ~ 1/rho at the small end of each interval;
    EDM's grid has h ~ rho at the noisy end, where the step multiplies a by
    1 - h/rho ~ 0 instead of ~ rho/(rho + h) (forward, the same Euler step is DDIM and
    right), so dL/dx_T is lost (10 steps: ~100% error). "heun", "dpm2" and above all "rk4"
    converge as their order says."""
    _check_method(method, adaptive=True)
    g, start = check_grid(grid), flow.nfe
    x0 = _check_x(x_T).detach()
    alpha_T, alpha_e = flow.alpha(g[0]).to(x0), flow.alpha(g[-1]).to(x0)
    params = flow.trainable()
    with _LeafCondition(flow) as c:
        y_T = x0 / alpha_T
        # (1) forward without a graph: the same solver on the one-element state (y,)
        (y_e,) = solve_augmented(lambda r, z: (flow(r, z[0]),), (y_T,), g, method, rtol, atol)
        x_e = (alpha_e * y_e).requires_grad_(True)
        with torch.enable_grad():
            loss = _scalar(loss_fn(x_e))
            (g_x_e,) = torch.autograd.grad(loss, x_e)
        wrt = ([c] if c is not None else []) + params
        state = (y_e, alpha_e * g_x_e, *(torch.zeros_like(w) for w in wrt))
        out = solve_augmented(augmented_dynamics(flow, wrt), state, g.flip(0), method, rtol, atol)
    y_back, a_T, rest = out[0], out[1], list(out[2:])
    g_c = rest.pop(0) if c is not None else None
    error = float((y_back - y_T).abs().max())
    return Gradients(
        "adjoint",
        x_e.detach(),
        float(loss.detach()),
        a_T / alpha_T,
        g_c,
        tuple(rest),
        flow.nfe - start,
        error,
    )


def torchdiffeq_gradients(
    flow: RhoFlow,
    x_T: Tensor,
    grid: Tensor | Sequence[float],
    loss_fn: LossFn,
    method: str = "rk4",
    rtol: float = 1e-6,
    atol: float = 1e-6,
    adjoint_params: Sequence[Tensor] | None = None,
) -> Gradients:
    """``torchdiffeq.odeint_adjoint`` on (1). Fixed-step torchdiffeq methods ("euler",
    "midpoint", "rk4", ...) take ``grid`` as their output times (one step per interval;
    torchdiffeq keeps y there and restarts each backward interval from it); adaptive ones
    (:data:`ADAPTIVE`) solve between the ends with rtol, atol, and re-solve y backwards.

    adjoint_params: None passes every trainable parameter and the condition (what this
    method is for); pass () to see the trap of the card: no gradient reaches the weights or
    c (their entries come back None) while dL/dx_T is still right.
    """
    import torchdiffeq

    if method not in TORCHDIFFEQ_FIXED + ADAPTIVE:
        valid = ", ".join(TORCHDIFFEQ_FIXED + ADAPTIVE)
        raise ValueError(f"unknown torchdiffeq method {method!r}; valid methods: {valid}")
    g, start = check_grid(grid), flow.nfe
    x_leaf = _check_x(x_T)
    params = flow.trainable()
    with _LeafCondition(flow) as c:
        listed = ([c] if c is not None else []) + params
        chosen = tuple(listed) if adjoint_params is None else tuple(adjoint_params)
        adaptive = method in ADAPTIVE
        times = (torch.stack([g[0], g[-1]]) if adaptive else g).to(x_leaf)
        y_T = x_leaf / flow.alpha(g[0]).to(x_leaf)
        ys = torchdiffeq.odeint_adjoint(
            flow,
            y_T,
            times,
            method=method,
            rtol=rtol,
            atol=atol,
            adjoint_params=chosen,
            options={"step_t": times} if adaptive else None,
            adjoint_options={},
        )
        x_e = flow.alpha(g[-1]).to(ys) * ys[-1]
        loss = _scalar(loss_fn(x_e))
        grads = list(torch.autograd.grad(loss, [x_leaf, *listed], allow_unused=True))
    g_x = _grad_or_none(grads.pop(0), x_leaf)
    g_c = grads.pop(0) if c is not None else None
    return Gradients(
        "torchdiffeq", x_e.detach(), float(loss.detach()), g_x, g_c, tuple(grads), flow.nfe - start
    )


def gradients(
    route: str,
    flow: RhoFlow,
    x_T: Tensor,
    grid: Tensor | Sequence[float],
    loss_fn: LossFn,
    method: str = "euler",
    **options: Any,
) -> Gradients:
    """The gradients of ``loss_fn(x_e)`` by ``route`` (:data:`ROUTES`); options go to the
    route's function (rtol, atol; adjoint_params for "torchdiffeq")."""
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; valid routes: {', '.join(ROUTES)}")
    fn = {"naive": naive_gradients, "adjoint": adjoint_gradients}.get(route, torchdiffeq_gradients)
    return fn(flow, x_T, grid, loss_fn, method, **options)


# ---- memory and time ----------------------------------------------------------------------------
def mean_square(x: Tensor) -> Tensor:
    """L(x) = mean(x^2): the loss of :class:`GradientJob` (any loss costs the same memory)."""
    return x.pow(2).mean()


@dataclass(frozen=True)
class GradientJob:
    """One gradient computation, described by plain values so a child process rebuilds it.

    The eps-model is ``model()`` (a picklable factory: a class, or a functools.partial), by
    default ``nets.MLP(dim, hidden, depth)`` seeded with ``seed``; the path is
    ``paths.get_path(path)``; x_T: ``batch`` standard normal rows scaled to std
    alpha_T sqrt(1 + rho_T^2) (the marginal's scale at rho_T = ``rho_max``); the grid
    :func:`rho_grid` (n_steps, rho_max, rho_min); the loss :func:`mean_square`; gradients
    with respect to x_T and every weight, by ``route`` with ``method``.
    """

    route: str
    n_steps: int
    method: str = "euler"
    batch: int = 1024
    dim: int = 2
    hidden: int = 256
    depth: int = 3
    path: str = "vp_linear"
    rho_max: float = 80.0
    rho_min: float = 0.002
    seed: int = 0
    device: str = "cpu"
    rtol: float = 1e-5
    atol: float = 1e-5
    model: Callable[[], nn.Module] | None = field(default=None, compare=False)

    def setup(self) -> tuple[RhoFlow, Tensor, Tensor]:
        """(flow, x_T, grid) on ``device``, after a warm-up: the route run once on 2 rows and
        2 steps, so that what torch and torchdiffeq load or initialise on first use (the
        first autograd.grad call imports sympy and mpmath: ~40 MB; importing torchdiffeq
        ~45 MB more) is not counted as the computation's memory."""
        from pflow_explore.nets import MLP

        if self.route not in ROUTES:
            raise ValueError(f"unknown route {self.route!r}; valid routes: {', '.join(ROUTES)}")
        torch.manual_seed(self.seed)
        net = self.model() if self.model is not None else MLP(self.dim, self.hidden, self.depth)
        flow = RhoFlow(net.to(self.device), paths.get_path(self.path))
        grid = rho_grid(self.n_steps, self.rho_max, self.rho_min)
        scale = float(flow.alpha(grid[0])) * math.sqrt(1 + self.rho_max**2)
        x_T = scale * torch.randn(self.batch, self.dim, generator=torch.Generator().manual_seed(1))
        x_T = x_T.to(self.device)
        self.run((flow, x_T[:2], rho_grid(2, self.rho_max, self.rho_min)))
        return flow, x_T, grid

    def run(self, state: tuple[RhoFlow, Tensor, Tensor]) -> dict[str, float]:
        """Compute the gradients; returns {"loss", "nfe"} (the gradients stay in the child)."""
        flow, x_T, grid = state
        options = {"rtol": self.rtol, "atol": self.atol} if self.route != "naive" else {}
        out = gradients(self.route, flow, x_T, grid, mean_square, self.method, **options)
        return {"loss": out.loss, "nfe": float(out.nfe)}


def gradient_memory(job: GradientJob, threads: int = 1, timeout: float = 300.0) -> PeakMemory:
    """Peak memory above the set-up model and batch, and wall time, of ``job.run`` in a fresh
    child process (:func:`pflow_explore.memory.peak_memory`: VmHWM on Linux CPUs, torch's
    max_memory_allocated on CUDA). ``result`` holds the loss and the NFE."""
    return peak_memory(job.run, job.setup, job.device, threads, timeout)


# ---- the chapter's two uses ------------------------------------------------------------------
@dataclass
class StepResult:
    """One optimisation step: loss (the objective before the step), x_e (n, ...) the samples
    it was computed on, grad_norm: the 2-norm of the gradient that was applied."""

    loss: float
    x_e: Tensor
    grad_norm: float


def distance_to_box(
    x: Tensor, low: Sequence[float] | Tensor, high: Sequence[float] | Tensor
) -> Tensor:
    """mean_i |x_i - clamp(x_i, low, high)|^2: 0 inside the box [low, high] (per coordinate),
    the squared distance to it outside. x: (n, d); low, high: (d,). A goal for
    :func:`finetune_step` ("move the samples into a region")."""
    lo, hi = torch.as_tensor(low, dtype=x.dtype), torch.as_tensor(high, dtype=x.dtype)
    if lo.shape != (x.shape[-1],) or hi.shape != lo.shape or bool((lo > hi).any()):
        raise ValueError(f"low and high must be ({x.shape[-1]},) with low <= high")
    return (x - torch.maximum(torch.minimum(x, hi), lo)).pow(2).sum(-1).mean()


def margin_loss(
    logits: Tensor, labels: Tensor, target: Tensor | None = None, kappa: float = 0.0
) -> Tensor:
    """The Carlini-Wagner margin, mean over rows of logits (n, K), labels (n,) int64:
    untargeted (target None): max(z_label - max_{j != label} z_j, -kappa), < 0 once the
    decision leaves the label; targeted: max(max_{j != target} z_j - z_target, -kappa).
    Minimising it changes the classifier's decision; kappa > 0 asks for a margin."""
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"need logits (n, K) and labels (n,), got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    goal = labels if target is None else torch.as_tensor(target).expand_as(labels)
    own = logits.gather(1, goal[:, None])[:, 0]
    others = logits.masked_fill(nn.functional.one_hot(goal, logits.shape[1]).bool(), -math.inf)
    gap = own - others.max(1).values
    return (gap if target is None else -gap).clamp_min(-kappa).mean()


def _norm(grads: Sequence[Tensor | None]) -> float:
    return float(sum(g.pow(2).sum() for g in grads if g is not None) ** 0.5)


def finetune_step(
    flow: RhoFlow,
    x_T: Tensor,
    grid: Tensor | Sequence[float],
    goal: LossFn,
    optimizer: torch.optim.Optimizer,
    route: str = "adjoint",
    method: str = "euler",
    **options: Any,
) -> StepResult:
    """One step of fine-tuning the eps-model through its sampler: the gradient of
    goal(x_e) (e.g. :func:`distance_to_box`) with respect to the weights, by ``route``, is
    put in their .grad and ``optimizer`` (over :meth:`RhoFlow.trainable`) steps."""
    out = gradients(route, flow, x_T, grid, goal, method, **options)
    optimizer.zero_grad(set_to_none=True)
    for p, gp in zip(flow.trainable(), out.params, strict=True):
        p.grad = None if gp is None else gp.detach().clone()
    optimizer.step()
    return StepResult(out.loss, out.x_e, _norm(out.params))


def noise_attack_step(
    flow: RhoFlow,
    x_T: Tensor,
    grid: Tensor | Sequence[float],
    objective: LossFn,
    optimizer: torch.optim.Optimizer,
    anchor: Tensor,
    proximity: float = 1.0,
    route: str = "adjoint",
    method: str = "euler",
    **options: Any,
) -> StepResult:
    """One step of the paper's security audit: move the noise x_T (a leaf in ``optimizer``),
    and the condition c when the flow holds one that requires grad (add it to the optimizer
    too), to lower

        objective(x_e) + proximity * mean((x_T - anchor)^2) / s_T^2,   s_T = alpha_T rho_T,

    (the objective e.g. :func:`margin_loss` of a classifier on x_e). The second term keeps
    x_T near the noise it started from, in units of the noise's own scale, so x_e stays a
    sample of the model (near the data manifold) while the decision changes."""
    if anchor.shape != x_T.shape:
        raise ValueError(f"anchor {tuple(anchor.shape)} must match x_T {tuple(x_T.shape)}")
    if proximity < 0:
        raise ValueError(f"proximity must be >= 0, got {proximity}")
    g = check_grid(grid)
    out = gradients(route, flow, x_T, g, objective, method, **options)
    s_T = float(flow.alpha(g[0]) * g[0])
    with torch.enable_grad():
        x_leaf = x_T.detach().requires_grad_(True)
        near = proximity * (x_leaf - anchor).pow(2).mean() / s_T**2
        (g_near,) = torch.autograd.grad(near, x_leaf)
    optimizer.zero_grad(set_to_none=True)
    x_T.grad = out.x_T + g_near
    condition = flow.condition
    if condition is not None and condition.requires_grad and out.condition is not None:
        condition.grad = out.condition.detach().clone()
    optimizer.step()
    return StepResult(out.loss + float(near.detach()), out.x_e, _norm([x_T.grad, out.condition]))


# ---- training the eps-model -----------------------------------------------------------------
def eps_matching_loss(
    model: EpsModel,
    path: paths.Path,
    x0: Tensor,
    generator: torch.Generator | None = None,
    t_min: float = 1e-3,
) -> Tensor:
    """mean ||eps_theta(alpha_t x0 + sigma_t z, t) - z||^2 over the rows (and coordinates) of
    x0 (n, d), t ~ U(t_min, 1) per row, z ~ N(0, I): the noise-matching objective whose
    minimiser is E[z | x_t] (the eps of (1)). model(x (n, d), t (n,)) -> (n, d)."""
    if not 0 <= t_min < 1:
        raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
    n = x0.shape[0]
    t = t_min + (1 - t_min) * torch.rand(n, generator=generator, dtype=x0.dtype)
    z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    t, z = t.to(x0.device), z.to(x0.device)
    return (model(path.sample(x0, t, z), t) - z).pow(2).mean()


# ---- a problem with a closed form ------------------------------------------------------------
@dataclass
class GaussianProblem:
    """Gaussian data N(mu, Sigma) with its exact eps (``theory.adjoint.GaussianEps``) as a
    RhoFlow, n points x_T (n, d) at rho_T, L = |x_e - target|^2 / 2 summed, and the exact
    gradients dL/dx_T (n, d) and dL/dmu (d,) of the flow from rho_T to 0 (detached)."""

    flow: RhoFlow
    x_T: Tensor
    rho_T: float
    loss: LossFn
    exact_x_T: Tensor
    exact_mean: Tensor


def gaussian_problem(
    seed: int, d: int = 3, n: int = 32, rho_T: float = 40.0, path: paths.Path | None = None
) -> GaussianProblem:
    """A random N(mu, Sigma) in d dims (``GaussianFlow.random(d, 100 + seed)``) on ``path``
    (VP linear by default), x_T ~ alpha_T rho_T N(0, I) and a random target, float64: the
    test case of every gradient route (the chapter's and the explorer's)."""
    from pflow_explore.theory.adjoint import GaussianEps, exact_flow_map, exact_gradients
    from pflow_explore.theory.gaussian_flow import GaussianFlow

    path = paths.VPLinear() if path is None else path
    gen = torch.Generator().manual_seed(seed)
    eps = GaussianEps.from_flow(GaussianFlow.random(d, 100 + seed), path)
    flow = RhoFlow(eps, path)
    alpha_T = float(flow.alpha(rho_T))
    x_T = alpha_T * rho_T * torch.randn(n, d, generator=gen, dtype=F64)
    target = torch.randn(n, d, generator=gen, dtype=F64)

    def loss(x: Tensor) -> Tensor:
        return 0.5 * ((x - target) ** 2).sum()

    x_e = exact_flow_map(eps, x_T, rho_T, alpha_T)
    exact = exact_gradients(eps, x_T, (x_e - target).detach(), rho_T, alpha_T)
    return GaussianProblem(flow, x_T, rho_T, loss, exact.x_T.detach(), exact.mean.detach())


def relative_error(problem: GaussianProblem, route: str, method: str, n_steps: int) -> float:
    """|g - g*| / |g*| for g = dL/dx_T by ``route`` (:data:`ROUTES`) and ``method`` on
    :func:`rho_grid` (n_steps, rho_T), g* the closed form ``problem.exact_x_T``."""
    p = problem
    g = gradients(route, p.flow, p.x_T, rho_grid(n_steps, p.rho_T), p.loss, method)
    return float((g.x_T - p.exact_x_T).norm() / p.exact_x_T.norm())


def finite_difference_check(
    flow: RhoFlow,
    x_T: Tensor,
    grid: Tensor | Sequence[float],
    loss_fn: LossFn,
    method: str = "heun",
    per_tensor: int = 2,
    h: float = 1e-6,
    generator: torch.Generator | None = None,
) -> tuple[float, int, int]:
    """Weight gradients of the naive route against central finite differences of
    L(sample(...)), ``per_tensor`` random entries of every trainable tensor (float64 models):
    (max relative error, entries checked, weight tensors with a non-zero gradient)."""
    params = flow.trainable()
    naive = naive_gradients(flow, x_T, grid, loss_fn, method)
    worst, checked = 0.0, 0
    for p, gp in zip(params, naive.params, strict=True):
        for _ in range(per_tensor):
            k = int(torch.randint(p.numel(), (), generator=generator))
            with torch.no_grad():
                flat = p.view(-1)
                flat[k] += h
                up = float(loss_fn(sample(flow, x_T, grid, method)))
                flat[k] -= 2 * h
                down = float(loss_fn(sample(flow, x_T, grid, method)))
                flat[k] += h
            fd, auto = (up - down) / (2 * h), float(gp.reshape(-1)[k])
            worst, checked = max(worst, abs(fd - auto) / max(abs(auto), 1e-6)), checked + 1
    return worst, checked, sum(float(gp.norm()) > 0 for gp in naive.params)


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares y = a + b x: (slope b, intercept a), e.g. MiB per step of a memory sweep."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    b /= sum((x - mx) ** 2 for x in xs)
    return b, my - b * mx
