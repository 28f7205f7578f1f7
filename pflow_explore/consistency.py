"""Consistency trajectory models (CTM, Kim et al. 2023) and consistency models as their s = 0
case (CM, Song et al. 2023): one network that jumps along the probability flow.

Time convention: diffusion, in EDM's variance-exploding form with the time equal to the noise
level (``paths.NoiseLevel``): x_t = x0 + t z, t = 0 data, t = T (80) noise; the PF-ODE is

    dx/dt = (x - D(x, t)) / t,            D(x, t) = E[x0 | x_t = x]                    (1)

(:mod:`pflow_explore.edm` eq. 1). Sampling runs from t = T down to 0.

The jump from t to any s <= t along (1) is written (CTM eq. 6)

    G(x_t, t, s) = (s / t) x_t + (1 - s / t) g(x_t, t, s),                             (2)

with a network g (:class:`JumpNet`). Three facts make this the right parametrisation:
at s = t, G = x_t (the boundary condition holds by construction); as s -> t, g(x, t, t) is
the denoiser D(x, t) (:func:`denoiser_of`), so the same network gives the score
(D - x) / t^2; and if g ignores s and equals D, G is exactly one Euler step of (1) from t
to s (DDIM). A consistency model is G(., t, 0) = g(., t, 0): only jumps to data.

Training (:func:`ctm_loss`): for t > u >= s on a grid, x_t = x0 + t z and x_u from a few
Heun steps of a teacher denoiser (:func:`heun_between`), compare the student's jump with
the teacher-assisted one, both carried to data by the stop-gradient target theta^-:

    L_CTM = d( G^-( G_theta(x_t, t, s), s, 0 ),  G^-( G^-(x_u, u, s), s, 0 ) )       (3)

(d: squared L2 per dimension or pseudo-Huber), plus lambda times EDM's denoising loss on
g(x, t, t) (:func:`dsm_loss`). The CM loss (:func:`cm_loss`) is (3) with s = 0 and u the
next grid point: d(G_theta(x_t, t, 0), G^-(x_u, u, 0)).

Sampling (:func:`gamma_steps`, CTM Algorithm 3): from x_0 ~ N(0, T^2 I) on a grid
T = t_0 > t_1 > ... > t_N = 0,

    x~ = G(x_n, t_n, sqrt(1 - gamma^2) t_{n+1}),    x_{n+1} = x~ + gamma t_{n+1} z,    (4)

gamma = 0: deterministic long jumps along the ODE; gamma = 1: the consistency model's
multistep sampler (jump to data, re-noise). With the exact G, (4) keeps the marginal
p_{t_{n+1}} for every gamma.

Shapes: states are flat, x (n, d); times are floats, 0-d or (n,) tensors (one per row).
A denoiser is D(x (n, d), t) -> (n, d) with t a float or (n,); a jump network is
g(x (n, d), t (n,), s (n,)) -> (n, d).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pflow_explore.distillation import ema_update, frozen_copy, pseudo_huber
from pflow_explore.edm import EDMLoss, edm_coefficients
from pflow_explore.paths import karras_sigmas
from pflow_explore.solvers import collected, odeint

__all__ = [
    "DISTANCES",
    "Denoiser",
    "GammaStep",
    "JumpNet",
    "TimeTriples",
    "cm_loss",
    "ctm_loss",
    "denoiser_of",
    "draw_triples",
    "dsm_loss",
    "exact_jump",
    "gamma_sample",
    "gamma_step",
    "gamma_steps",
    "heun_between",
    "jump",
    "objective",
    "sampling_grid",
    "teacher_pair",
]

Denoiser = Callable[[Tensor, "float | Tensor"], Tensor]
DISTANCES = ("l2", "pseudo_huber")


def _rows(t: float | Tensor, x: Tensor) -> Tensor:
    """t as a (n,) tensor of x's dtype and device (a float or 0-d t is shared by every row)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1)
    if t.numel() not in (1, x.shape[0]):
        raise ValueError(f"times must be a float or have shape ({x.shape[0]},), got {t.shape}")
    return t.expand(x.shape[0]) if t.numel() == 1 else t


# ---- the network and the jump -----------------------------------------------------------------
class JumpNet(nn.Module):
    """g_theta(x, t, s) with EDM's preconditioning in t (CTM eq. 7), x (n, d) -> (n, d):

        g = c_skip(t) x + c_out(t) F([c_in(t) x, log(t) / 4, s / t]),

    F a SiLU MLP with ``depth`` hidden layers of width ``hidden``; (c_skip, c_out, c_in)
    from :func:`edm.edm_coefficients` with ``sigma_data``. The target time enters as the
    ratio s / t in [0, 1] (the paper embeds c_noise(s); the ratio is bounded and keeps
    s = 0, the jump to data, an ordinary input). t > 0; s in [0, t].
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, sigma_data: float = 0.5):
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        widths = [dim + 2] + [hidden] * depth
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(w_in, w_out), nn.SiLU()]
        self.dim, self.f = dim, nn.Sequential(*layers, nn.Linear(hidden, dim))
        self.register_buffer("sigma_data", torch.tensor(float(sigma_data)))

    def forward(self, x: Tensor, t: float | Tensor, s: float | Tensor) -> Tensor:
        """x: (n, d); t, s: float or (n,), 0 <= s <= t, t > 0 -> g (n, d)."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        t, s = _rows(t, x), _rows(s, x)
        c_skip, c_out, c_in = edm_coefficients(t[:, None], float(self.sigma_data))
        feats = torch.cat([c_in * x, (t.log() / 4)[:, None], (s / t)[:, None]], dim=1)
        return c_skip * x + c_out * self.f(feats)


def jump(g: nn.Module | Callable, x: Tensor, t: float | Tensor, s: float | Tensor) -> Tensor:
    """G(x, t, s) = (s/t) x + (1 - s/t) g(x, t, s) (eq. 2), x (n, d); t, s float or (n,).

    Rows with s >= t (including t = s = 0) return x itself: the jump to the same time, and
    the identity "carry to data" of a state already at t = 0. g is called with t clamped
    to be > 0 there (its value is multiplied by 0)."""
    t, s = _rows(t, x), _rows(s, x)
    still = s >= t
    t_safe = torch.where(t > 0, t, torch.ones_like(t))
    ratio = torch.where(still, torch.ones_like(t), s / t_safe)
    s_safe = torch.where(still, t_safe, s)
    return ratio[:, None] * x + (1 - ratio)[:, None] * g(x, t_safe, s_safe)


def denoiser_of(g: nn.Module | Callable) -> Denoiser:
    """D(x, t) = g(x, t, t): the denoiser (and through it the score (D - x) / t^2) that the
    same CTM network holds (CTM section 4.2)."""
    return lambda x, t: g(x, _rows(t, x), _rows(t, x))


class DenoiserView(nn.Module):
    """g(x, t, t) as an EDM denoiser module (``sigma_data`` attribute, forward(x, sigma)),
    so :class:`edm.EDMLoss` trains the denoiser the network holds."""

    def __init__(self, g: JumpNet) -> None:
        super().__init__()
        self.g = g
        self.sigma_data = g.sigma_data

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        return denoiser_of(self.g)(x, sigma)


# ---- the teacher's solver and the exact jump ---------------------------------------------------
def heun_between(
    denoiser: Denoiser, x: Tensor, grid: Tensor, start: Tensor, steps: Tensor
) -> Tensor:
    """Heun steps of (1) along ``grid`` (N + 1,) descending (t_N may be 0), per row:
    row i goes from grid[start_i] over steps_i >= 0 grid intervals (EDM Algorithm 1; the
    step into t = 0 is Euler). x (n, d); start, steps (n,) int64. Returns x at
    grid[start + steps] (n, d). Rows finish at different steps; finished rows are kept."""
    grid = grid.to(x)
    last = len(grid) - 1
    if bool(((start + steps) > last).any()) or bool((steps < 0).any()):
        raise ValueError(f"start + steps must stay within the grid's {last} intervals")
    for j in range(int(steps.max()) if len(steps) else 0):
        moving = j < steps
        i = (start + j).clamp(max=last - 1)
        t, t_next = grid[i], grid[i + 1]
        d = (x - denoiser(x, t)) / t[:, None]
        x_euler = x + (t_next - t)[:, None] * d
        to_zero = t_next <= 0
        t_corr = torch.where(to_zero, t, t_next)  # avoid 0 in the corrector: its rows keep Euler
        d_next = (x_euler - denoiser(x_euler, t_corr)) / t_corr[:, None]
        x_heun = x + (t_next - t)[:, None] * (d + d_next) / 2
        x_new = torch.where(to_zero[:, None], x_euler, x_heun)
        x = torch.where(moving[:, None], x_new, x)
    return x


def exact_jump(
    denoiser: Denoiser,
    x: Tensor,
    t: float,
    s: float,
    rtol: float = 1e-7,
    atol: float = 1e-7,
    t_floor: float = 1e-4,
) -> Tensor:
    """The PF-ODE solution (1) from x (n, d) at time t to s <= t (the exact G for an exact
    denoiser, e.g. ``theory.mixtures.MixtureFlow(mixture, paths.NoiseLevel()).denoiser``):
    dopri5 (torchdiffeq, ``rtol``/``atol``) from t to max(s, t_floor), then for s = 0 the
    last leg as x <- D(x, t_floor), whose error is O(t_floor^2) times the curvature of
    the path. Float64 inside; returns x's dtype."""
    if not 0 <= s <= t:
        raise ValueError(f"need 0 <= s <= t, got t = {t}, s = {s}")
    if s == t:
        return x.clone()
    x64 = x.double()
    end = max(s, min(t_floor, t))
    field = lambda y, tt: (y - denoiser(y, float(tt))) / float(tt)
    if end < t:
        x64 = odeint(field, x64, [t, end], method="dopri5", rtol=rtol, atol=atol).x
    if s < end:
        x64 = denoiser(x64, end)
    return x64.to(x.dtype)


# ---- training --------------------------------------------------------------------------------
@dataclass
class TimeTriples:
    """Grid indices per row (n,) each, t = grid[i_t] > u = grid[i_u] >= s = grid[i_s]:
    ``i_u - i_t`` teacher Heun steps from t to u."""

    i_t: Tensor
    i_u: Tensor
    i_s: Tensor


def draw_triples(
    n: int, n_grid: int, max_teacher_steps: int, generator: torch.Generator | None = None
) -> TimeTriples:
    """Draw t > u >= s on a grid with ``n_grid`` + 1 points (index n_grid is t = 0):
    i_t ~ U{0 .. n_grid - 1}, i_s ~ U{i_t + 1 .. n_grid}, then k ~ U{1 .. min(K, i_s - i_t)}
    teacher steps, i_u = i_t + k (K = ``max_teacher_steps``; sony/ctm draws the same way)."""
    if n_grid < 1 or max_teacher_steps < 1:
        raise ValueError("need n_grid >= 1 and max_teacher_steps >= 1")
    u01 = lambda: torch.rand(n, generator=generator)
    i_t = (u01() * n_grid).long().clamp(max=n_grid - 1)
    i_s = i_t + 1 + (u01() * (n_grid - i_t)).long().clamp(max=n_grid - i_t - 1)
    k_max = (i_s - i_t).clamp(max=max_teacher_steps)
    k = 1 + (u01() * k_max).long().clamp(max=k_max - 1)
    return TimeTriples(i_t, i_t + k, i_s)


def distance(a: Tensor, b: Tensor, kind: str = "l2", huber_c: float = 0.03) -> Tensor:
    """d(a, b) per row (n,): mean squared difference over dimensions ("l2") or the
    pseudo-Huber norm sqrt(|a - b|^2 + c^2) - c with c = huber_c sqrt(d)."""
    if kind == "l2":
        return ((a - b) ** 2).flatten(1).mean(1)
    if kind == "pseudo_huber":
        return pseudo_huber(a - b, huber_c * math.sqrt(a[0].numel()))
    raise ValueError(f"distance must be one of {DISTANCES}, got {kind!r}")


def teacher_pair(
    teacher: Denoiser,
    x0: Tensor,
    grid: Tensor,
    i_t: Tensor,
    k: Tensor,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The two points of a distillation loss on clean data x0 (n, d): x_t = x0 + t z with
    t = grid[i_t] (n,) and z ~ N(0, I) (n, d) drawn from ``generator`` (float32 on the
    generator's device, then cast to x0), and x_u = ``k`` (n,) Heun steps of the teacher from
    x_t (:func:`heun_between`, no gradient), at u = grid[i_t + k]. Returns (grid (N + 1,)
    as x0's dtype and device, x_t, x_u). One random draw: z."""
    grid = grid.to(x0)
    t = grid[i_t]
    x_t = x0 + t[:, None] * torch.randn(x0.shape, generator=generator).to(x0)
    with torch.no_grad():
        x_u = heun_between(teacher, x_t, grid, i_t.to(x0.device), k.to(x0.device))
    return grid, x_t, x_u


def ctm_loss(
    student: nn.Module,
    target: nn.Module,
    teacher: Denoiser,
    x0: Tensor,
    grid: Tensor,
    max_teacher_steps: int = 4,
    generator: torch.Generator | None = None,
    kind: str = "l2",
    huber_c: float = 0.03,
) -> Tensor:
    """The soft consistency loss (eq. 3) on clean data x0 (n, d), mean over rows.

    student: g_theta (trained); target: g^- (EMA or frozen copy; no gradient); teacher: D,
    its Heun steps from t to u. grid: (N + 1,) descending, grid[N] = 0. Random draws, in
    order: the triples (:func:`draw_triples`), then z (n, d)."""
    tri = draw_triples(len(x0), len(grid) - 1, max_teacher_steps, generator)
    grid, x_t, x_u = teacher_pair(teacher, x0, grid, tri.i_t, tri.i_u - tri.i_t, generator)
    t, u, s = grid[tri.i_t], grid[tri.i_u], grid[tri.i_s]
    zero = torch.zeros_like(t)
    with torch.no_grad():
        aim = jump(target, jump(target, x_u, u, s), s, zero)
    guess = jump(target, jump(student, x_t, t, s), s, zero)  # gradient flows through the inner jump
    return distance(guess, aim, kind, huber_c).mean()


def cm_loss(
    student: nn.Module,
    target: nn.Module,
    teacher: Denoiser,
    x0: Tensor,
    grid: Tensor,
    generator: torch.Generator | None = None,
    kind: str = "l2",
    huber_c: float = 0.03,
) -> Tensor:
    """Consistency distillation (Song et al. 2023): t = grid[i], u = grid[i + 1] by one
    Heun step of the teacher, d(G_theta(x_t, t, 0), G^-(x_u, u, 0)), i ~ U{0 .. N - 1}.
    Random draws: i, then z."""
    n_grid = len(grid) - 1
    i_t = (torch.rand(len(x0), generator=generator) * n_grid).long().clamp(max=n_grid - 1)
    grid, x_t, x_u = teacher_pair(teacher, x0, grid, i_t, torch.ones_like(i_t), generator)
    t, u = grid[i_t], grid[i_t + 1]
    zero = torch.zeros_like(t)
    with torch.no_grad():
        aim = jump(target, x_u, u, zero)
    return distance(jump(student, x_t, t, zero), aim, kind, huber_c).mean()


def dsm_loss(
    g: JumpNet, x0: Tensor, generator: torch.Generator | None = None, loss: EDMLoss | None = None
) -> Tensor:
    """EDM's weighted denoising loss (``edm.EDMLoss``, log-normal t) on D(x, t) = g(x, t, t):
    what keeps the CTM network's score usable (CTM section 4.2)."""
    return (loss or EDMLoss())(DenoiserView(g), x0, generator)


def objective(
    kind: str,
    teacher: Denoiser,
    sample_x0: Callable[[int, torch.Generator], Tensor],
    grid: Tensor,
    batch: int,
    generator: torch.Generator,
    ema_decay: float = 0.99,
    max_teacher_steps: int = 4,
    dsm_weight: float = 1.0,
    distance_kind: str = "l2",
    huber_c: float = 0.03,
) -> Callable[[nn.Module, int], Tensor]:
    """The loss_fn(model, step) for ``training.fit``: ``kind`` "ctm" is :func:`ctm_loss` +
    ``dsm_weight`` x :func:`dsm_loss`, "cm" is :func:`cm_loss` alone, "dsm" the denoising
    loss alone (an EDM teacher held by a :class:`JumpNet`). The stop-gradient target
    theta^- is a frozen copy of the model at step 0, then theta^- <- mu theta^- + (1 - mu)
    theta before each later step (``distillation.ema_update``, mu = ``ema_decay``).
    x0 = sample_x0(batch, generator) (batch, d) each step."""
    if kind not in ("ctm", "cm", "dsm"):
        raise ValueError(f"kind must be 'ctm', 'cm' or 'dsm', got {kind!r}")
    state: dict[str, nn.Module] = {}

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        x0 = sample_x0(batch, generator)
        if kind == "dsm":
            return dsm_loss(model, x0, generator)
        if step == 0 or "target" not in state:
            state["target"] = frozen_copy(model)
        else:
            ema_update(state["target"], model, ema_decay)
        target = state["target"]
        if kind == "cm":
            return cm_loss(model, target, teacher, x0, grid, generator, distance_kind, huber_c)
        loss = ctm_loss(
            model, target, teacher, x0, grid, max_teacher_steps, generator, distance_kind, huber_c
        )
        return loss + dsm_weight * dsm_loss(model, x0, generator) if dsm_weight else loss

    return loss_fn


# ---- sampling --------------------------------------------------------------------------------
def sampling_grid(
    n_steps: int, t_max: float = 80.0, t_min: float = 0.002, rho: float = 7.0
) -> Tensor:
    """n_steps jumps T = t_0 > t_1 > ... > t_{n-1} > t_n = 0: (n_steps + 1,) float64, the
    inner times from the Karras ramp of n_steps + 1 points between T and t_min with t_min
    itself left out (a last jump from t_min = 0.002 to 0 would waste an evaluation). One
    step is the single jump [T, 0]; two are [T, 2.5..., 0] for the defaults."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    ramp = karras_sigmas(n_steps + 1, t_min, t_max, rho)[:n_steps]
    return torch.cat([ramp, torch.zeros(1, dtype=torch.float64)])


def gamma_step(
    G: Callable[[Tensor, float, float], Tensor],
    x: Tensor,
    t: float,
    t_next: float,
    gamma: float,
    z: Tensor,
) -> Tensor:
    """One step of gamma-sampling (eq. 4): jump from t to s_hat = sqrt(1 - gamma^2) t_next,
    then add gamma t_next z: x (n, d), z (n, d) ~ N(0, I) -> x_next (n, d)."""
    return G(x, t, math.sqrt(1.0 - gamma**2) * t_next) + gamma * t_next * z


@dataclass
class GammaStep:
    """Step n of :func:`gamma_steps`: x (n, d) at ``t`` jumped to ``s_hat`` = sqrt(1 - gamma^2)
    t_next (``jumped``), then re-noised to ``t_next`` (``x_next``); ``nfe`` jumps so far."""

    n: int
    t: float
    t_next: float
    s_hat: float
    x: Tensor
    jumped: Tensor
    x_next: Tensor
    nfe: int


def gamma_steps(
    G: Callable[[Tensor, float, float], Tensor],
    x_T: Tensor,
    grid: Tensor,
    gamma: float,
    generator: torch.Generator | None = None,
    step: Callable[..., Tensor] = gamma_step,
) -> Iterator[GammaStep]:
    """gamma-sampling (eq. 4) with any jump G(x, t, s) along ``grid`` (N + 1,) descending to
    0, from x_T (n, d) at grid[0]; gamma in [0, 1]. One jump per step: NFE = N. The noise z
    (n, d) of step n is drawn from ``generator`` when gamma > 0 and t_next > 0 (a zero z
    otherwise). ``step(G, x, t, t_next, gamma, z)``: the update (:func:`gamma_step`, or a
    learner's)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    x = x_T
    for n in range(len(grid) - 1):
        t, t_next = float(grid[n]), float(grid[n + 1])
        s_hat = math.sqrt(1.0 - gamma**2) * t_next
        z = torch.zeros_like(x)
        if gamma > 0 and t_next > 0:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x_next = step(G, x, t, t_next, gamma, z)
        yield GammaStep(n, t, t_next, s_hat, x, x_next - gamma * t_next * z, x_next, n + 1)
        x = x_next


@collected(gamma_steps, start="x_T", after="generator")
def gamma_sample(
    arguments: dict[str, Any], x: Tensor, states: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Run :func:`gamma_steps` to t = 0 (same parameters, ``trajectory`` after
    ``generator``): (samples (n, d), states (N + 1, n, d) or None)."""
    return x, states
