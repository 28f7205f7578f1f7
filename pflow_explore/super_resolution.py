"""One-step super-resolution by consistency trajectory matching, without a teacher
(CTMSR, chapter 06; card 06_ctmsr.md; code LabShuHangGU/CTMSR).

Time convention: diffusion, t in [0, 1]: t = 0 the high-resolution image HR, t = 1 the
noisy upsampled low-resolution image; one-step inference runs from t = 1 to 0. (The
multi-step diffusion baseline below counts in EDM noise levels sigma instead, as
:mod:`pflow_explore.edm` does; its functions take ``sigma``, never ``t``.)

The pieces, each usable alone:

- :class:`SRDegradation`: y = Down_f(Blur_b(x)) + s n, its upsampled input LRup = Up_f(y),
  and the same linear operator as explicit matrices A (``matrix``) and U (``up_matrix``);
- :class:`SRPath`: the trajectory between HR and the noisy LRup (card, "Method"),

      x_t = HR + alpha_t (LRup - HR) + sigma_t z,   alpha_t = t,  sigma_t = s_max t,     (1)
      dx_t/dt = (LRup - HR) + s_max z                (constant along a path);           (2)

- :class:`ConsistencySR`: f(x, t, LRup) = c_skip(t) x + c_out(t) F(x, t, LRup) with
  c_skip(0) = 1, c_out(0) = 0, so f(x_0, 0) = x_0 exactly (:func:`boundary_coefficients`);
- :func:`consistency_pair`: consistency training on the grid t_n = n / N with a shared z,

      L_CT = E d( f_theta(x_{t_{n+1}}, t_{n+1}), sg f_theta(x_{t_n}, t_n) ),           (3)

  the target computed with the current weights (no EMA), N annealed 4 -> 3
  (:func:`n_steps_at`), d = pseudo-Huber, Charbonnier, L1 or L2 (:func:`sr_distance`),
  averaged over the batch by :func:`consistency_objective`. With an L2 distance on a
  linear-Gaussian problem its optimum is N Euler steps of the PF-ODE
  (``theory.super_resolution``): N = 3 keeps only part of the posterior's spread;
- :func:`dtm_loss`: distribution trajectory matching against a frozen copy D,

      g = D(q_t(x_hat), t) - D(q_t(HR), t),  t ~ U[0.1, 0.5], q_t = (1) with a shared z,
      L_DTM = 1/2 w |x_hat - sg(x_hat - g)|^2 / d,   w = 1 / mean|x_hat - HR|,          (4)

  whose gradient with respect to x_hat is w g / d;
- baselines: :func:`regression_loss` (L1 regression of HR on LRup, :class:`RegressionSR`) and
  a conditional EDM diffusion model (:class:`ConditionalDenoiser`, :func:`diffusion_loss`,
  :func:`diffusion_sr` with the number of network evaluations as its argument);
- objectives for ``training.fit`` (:func:`consistency_objective`,
  :func:`regression_objective`, :func:`diffusion_objective`);
- :func:`high_frequency_energy`, :func:`sharpness_ratio`: how much fine detail an output has;
- the exact linear-Gaussian test bed for training (:func:`linear_gaussian_pairs`,
  :func:`exact_map_batch`) and :func:`latency_per_image` (wall time of a batched call).

Shapes: models work on flat images, x and LRup (n, d) with d = C H W (``image_shape`` tells a
convolutional backbone how to fold them); degradations act on image batches (N, C, H, W).
Exact linear-Gaussian counterparts: :mod:`pflow_explore.theory.super_resolution`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pflow_explore.datasets import degradations as deg
from pflow_explore.distillation import frozen_copy, pseudo_huber
from pflow_explore.edm import EDMDenoiser, EDMLoss, Sample, ancestral_steps, edm_sampler
from pflow_explore.nets.conditional import ConditionalMLP, ConditionalUNet
from pflow_explore.paths import karras_sigmas
from pflow_explore.theory.super_resolution import GaussianSR

__all__ = [
    "DISTANCES",
    "ExactBatch",
    "PARAMETERIZATIONS",
    "ConditionalDenoiser",
    "ConditionalMLP",
    "ConditionalUNet",
    "ConsistencySR",
    "PairSampler",
    "RegressionSR",
    "SRDegradation",
    "SRPath",
    "boundary_coefficients",
    "consistency_objective",
    "consistency_pair",
    "consistency_sides",
    "degraded_pairs",
    "diffusion_loss",
    "diffusion_objective",
    "diffusion_sr",
    "dtm_loss",
    "exact_map_batch",
    "heun_steps_for_nfe",
    "high_frequency_energy",
    "latency_per_image",
    "linear_gaussian_pairs",
    "n_steps_at",
    "regression_loss",
    "regression_objective",
    "sharpness_ratio",
    "sr_distance",
    "super_resolve",
]

DISTANCES = ("pseudo_huber", "charbonnier", "l1", "l2")
PARAMETERIZATIONS = ("ctmsr", "euler")
SAMPLERS = ("heun", "ancestral")
# (hr, lr_up) = sample_pairs(batch, generator): flat (batch, d) each
PairSampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


def _int_at_least(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _times(t: float | Tensor, like: Tensor) -> Tensor:
    """t as (n, 1, ...) broadcastable over the rows of ``like`` (n, ...)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(-1)
    if t.numel() not in (1, like.shape[0]):
        raise ValueError(f"t must be a float or have shape ({like.shape[0]},), got {t.shape}")
    t = t.expand(like.shape[0]) if t.numel() == 1 else t
    return t.reshape(-1, *([1] * (like.dim() - 1)))


# ---- the degradation ---------------------------------------------------------------------
def _reflect(j: int, n: int) -> int:
    return -j if j < 0 else (2 * (n - 1) - j if j > n - 1 else j)


def _blur_matrix_1d(n: int, sigma: float, radius_cap: int) -> Tensor:
    """Gaussian blur with reflect padding as an (n, n) matrix: B[i, reflect(i - k)] += g(k)."""
    if sigma == 0:
        return torch.eye(n, dtype=torch.float64)
    r = min(math.ceil(3 * sigma), radius_cap)
    g = deg.gaussian_kernel_1d(sigma, 2 * r + 1)
    b = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for k in range(-r, r + 1):
            b[i, _reflect(i - k, n)] += g[k + r]
    return b


def _down_matrix_1d(n: int, f: int) -> Tensor:
    """Block averaging (n / f, n): D[i, i f + j] = 1 / f, j < f."""
    return torch.kron(torch.eye(n // f, dtype=torch.float64), torch.full((1, f), 1.0 / f))


def _up_matrix_1d(n: int, f: int, mode: str) -> Tensor:
    """Upsampling (f n, n): "nearest" U[i, i // f] = 1; "bilinear" (half-pixel centres,
    align_corners=False) interpolates at s = max((i + 1/2) / f - 1/2, 0) between floor(s)
    and min(floor(s) + 1, n - 1)."""
    u = torch.zeros(f * n, n, dtype=torch.float64)
    for i in range(f * n):
        if mode == "nearest":
            u[i, i // f] = 1.0
            continue
        s = max((i + 0.5) / f - 0.5, 0.0)
        i0 = min(int(math.floor(s)), n - 1)
        i1 = min(i0 + 1, n - 1)
        lam = s - i0
        u[i, i0] += 1 - lam
        u[i, i1] += lam
    return u


@dataclass(frozen=True)
class SRDegradation:
    """y = Down_f(Blur_b(x)) + s n, n ~ N(0, I); LRup = Up_f(y) (card "Exact case").

    factor f (int >= 1; 2 and 4 in the chapter): block averaging
    (:func:`datasets.degradations.downsample`); blur b: Gaussian blur std in HR pixels, 0 for
    none (:func:`~datasets.degradations.gaussian_blur`, reflect padding); noise s: std of the
    LR noise; up_mode: "bilinear" or "nearest" (:func:`~datasets.degradations.upsample`).
    Images (N, C, H, W) with H, W divisible by f.
    """

    factor: int = 2
    blur: float = 0.0
    noise: float = 0.0
    up_mode: str = "bilinear"

    def __post_init__(self) -> None:
        _int_at_least("factor", self.factor, 1)
        if not (math.isfinite(self.blur) and self.blur >= 0):
            raise ValueError(f"blur must be a finite number >= 0, got {self.blur!r}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(f"noise must be a finite number >= 0, got {self.noise!r}")
        if self.up_mode not in deg.UPSAMPLE_MODES:
            raise ValueError(f"up_mode must be one of {deg.UPSAMPLE_MODES}, got {self.up_mode!r}")

    def clean(self, x: Tensor) -> Tensor:
        """A x = Down_f(Blur_b(x)): (N, C, H, W) -> (N, C, H / f, W / f), no noise."""
        return deg.downsample(deg.gaussian_blur(x, self.blur), self.factor)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """y = A x + s n: (N, C, H, W) -> (N, C, H / f, W / f); n drawn from ``generator``."""
        return deg.add_noise(self.clean(x), self.noise, generator)

    def lr_up(self, y: Tensor) -> Tensor:
        """LRup = Up_f(y): (N, C, h, w) -> (N, C, f h, f w), the model's input resolution."""
        return deg.upsample(y, self.factor, self.up_mode)

    def pair(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(y, LRup) for HR images x (N, C, H, W)."""
        y = self(x, generator)
        return y, self.lr_up(y)

    def _shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = (int(s) for s in shape)
        if min(c, h, w) < 1 or h % self.factor or w % self.factor:
            raise ValueError(f"shape (C, H, W) needs H, W divisible by {self.factor}, got {shape}")
        return c, h, w

    def matrix(self, shape: tuple[int, int, int]) -> Tensor:
        """A as a float64 matrix (C h w, C H W) acting on row-major flattened images:
        A = I_C (x) (D_H B_H) (x) (D_W B_W), Kronecker products of the 1D blur B (reflect
        padding, the radius cut to min(H, W) - 1 as ``gaussian_blur`` does) and the 1D block
        average D. ``clean(x).flatten(1) == x.flatten(1) @ A.T``."""
        c, h, w = self._shape(shape)
        cap = min(h, w) - 1
        rows = _down_matrix_1d(h, self.factor) @ _blur_matrix_1d(h, self.blur, cap)
        cols = _down_matrix_1d(w, self.factor) @ _blur_matrix_1d(w, self.blur, cap)
        return torch.kron(torch.eye(c, dtype=torch.float64), torch.kron(rows, cols))

    def up_matrix(self, shape: tuple[int, int, int]) -> Tensor:
        """Up_f as a float64 matrix (C H W, C h w) for HR ``shape`` (C, H, W):
        ``lr_up(y).flatten(1) == y.flatten(1) @ U.T``."""
        c, h, w = self._shape(shape)
        f, mode = self.factor, self.up_mode
        rows, cols = _up_matrix_1d(h // f, f, mode), _up_matrix_1d(w // f, f, mode)
        return torch.kron(torch.eye(c, dtype=torch.float64), torch.kron(rows, cols))


def degraded_pairs(hr: Tensor, degradation: SRDegradation) -> PairSampler:
    """sample_pairs(batch, generator) -> (HR, LRup), flat (batch, C H W) each: rows of ``hr``
    (N, C, H, W) drawn with replacement, then degraded with fresh noise (indices first, then
    the noise, from ``generator``; everything on ``hr``'s device)."""
    if hr.dim() != 4:
        raise ValueError(f"hr must be an image batch (N, C, H, W), got {tuple(hr.shape)}")

    def sample_pairs(batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(hr), (batch,), generator=generator).to(hr.device)
        x = hr[idx]
        _, up = degradation.pair(x, generator)
        return x.flatten(1), up.flatten(1)

    return sample_pairs


# ---- the trajectory ----------------------------------------------------------------------
@dataclass(frozen=True)
class SRPath:
    """x_t = HR + alpha_t (LRup - HR) + sigma_t z with alpha_t = t, sigma_t = s_max t (eq. 1):
    t = 0 gives HR, t = 1 gives LRup + s_max z. Tensors (n, ...) of one shape; t a float or
    (n,) in [0, 1]. ``sigma_max`` = s_max > 0 (the card: about 1)."""

    sigma_max: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma_max) and self.sigma_max > 0):
            raise ValueError(f"sigma_max must be a finite number > 0, got {self.sigma_max!r}")

    def alpha(self, t: float | Tensor) -> float | Tensor:
        return t

    def sigma(self, t: float | Tensor) -> float | Tensor:
        return self.sigma_max * t

    def point(self, hr: Tensor, lr_up: Tensor, z: Tensor, t: float | Tensor) -> Tensor:
        """x_t (eq. 1), same shape as hr."""
        tt = _times(t, hr)
        return hr + self.alpha(tt) * (lr_up - hr) + self.sigma(tt) * z

    def velocity(self, hr: Tensor, lr_up: Tensor, z: Tensor, t: float | Tensor) -> Tensor:
        """dx_t/dt = alpha'(t) (LRup - HR) + sigma'(t) z = (LRup - HR) + s_max z (eq. 2),
        the same at every t (``t`` only fixes the broadcast)."""
        _times(t, hr)
        return (lr_up - hr) + self.sigma_max * z

    def start(self, lr_up: Tensor, z: Tensor) -> Tensor:
        """x_1 = LRup + s_max z: where one-step inference starts."""
        return lr_up + self.sigma_max * z


# ---- networks ----------------------------------------------------------------------------
def boundary_coefficients(
    t: Tensor, kind: str = "ctmsr", sigma_data: float = 0.5, scale: float = 0.1
) -> tuple[Tensor, Tensor]:
    """(c_skip(t), c_out(t)), any shape, with c_skip(0) = 1 and c_out(0) = 0:

    - "ctmsr" (the official EDMUNet): with r = t / scale, c_skip = sd^2 / (r^2 + sd^2),
      c_out = r / sqrt(r^2 + sd^2) (sd = ``sigma_data``); already at t = 0.3, c_skip < 0.03,
      so away from t = 0 the network predicts HR itself. (The official code feeds the noise
      level sigma_t = s_max t; at s_max = 1, the card's value, the two agree.)
    - "euler": c_skip = 1, c_out = -t, so f = x - t F: F is an average velocity over [0, t]
      and f one Euler step of it down to t = 0.
    """
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {kind!r}")
    if kind == "euler":
        return torch.ones_like(t), -t
    if not (sigma_data > 0 and scale > 0):
        raise ValueError(f"need sigma_data > 0 and scale > 0, got {sigma_data}, {scale}")
    r = t / scale
    return sigma_data**2 / (r**2 + sigma_data**2), r / (r**2 + sigma_data**2).sqrt()


class ConsistencySR(nn.Module):
    """f(x, t, LRup) = c_skip(t) x + c_out(t) F(x, t, LRup) (:func:`boundary_coefficients`):
    x, LRup (n, d), t float or (n,) in [0, 1] -> the HR estimate (n, d). f(x, 0, .) = x."""

    def __init__(
        self,
        backbone: nn.Module,
        parameterization: str = "ctmsr",
        sigma_data: float = 0.5,
        scale: float = 0.1,
    ) -> None:
        super().__init__()
        boundary_coefficients(torch.zeros(1), parameterization, sigma_data, scale)  # validate
        self.backbone, self.parameterization = backbone, parameterization
        self.sigma_data, self.scale = float(sigma_data), float(scale)

    def forward(self, x: Tensor, t: float | Tensor, lr_up: Tensor) -> Tensor:
        tt = _times(t, x)
        c_skip, c_out = boundary_coefficients(
            tt, self.parameterization, self.sigma_data, self.scale
        )
        return c_skip * x + c_out * self.backbone(x, tt.reshape(-1), lr_up)


def super_resolve(
    model: nn.Module,
    lr_up: Tensor,
    path: SRPath,
    generator: torch.Generator | None = None,
    z: Tensor | None = None,
) -> Tensor:
    """One-step inference: HR^ = f(LRup + s_max z, 1, LRup), lr_up (n, d) -> (n, d), z drawn
    from ``generator`` unless given; no gradient."""
    if z is None:
        z = torch.randn(lr_up.shape, generator=generator, dtype=lr_up.dtype).to(lr_up.device)
    with torch.no_grad():
        return model(path.start(lr_up, z), 1.0, lr_up)


# ---- losses ------------------------------------------------------------------------------
def sr_distance(a: Tensor, b: Tensor, kind: str = "pseudo_huber", c: float = 0.03) -> Tensor:
    """d(a, b) per row (n,) for a, b (n, ...):

    - "pseudo_huber": sqrt(|a - b|^2 + c'^2) - c', c' = c sqrt(d)
      (:func:`distillation.pseudo_huber`, the consistency-models choice);
    - "charbonnier": mean over entries of sqrt((a - b)^2 + c^2) (the paper's pixel loss,
      with c = 1e-6 in the official code; here c is the same argument);
    - "l1": mean |a - b|; "l2": mean (a - b)^2.
    """
    if kind not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {kind!r}")
    err = (a - b).flatten(1)
    if kind == "pseudo_huber":
        return pseudo_huber(err, c * math.sqrt(err.shape[1]))
    if kind == "charbonnier":
        return (err**2 + c**2).sqrt().mean(1)
    return err.abs().mean(1) if kind == "l1" else (err**2).mean(1)


def n_steps_at(step: int, total: int, n_start: int = 4, n_end: int = 3) -> int:
    """The discretisation N at training step ``step`` of ``total``: linear from n_start to
    n_end, rounded, N(k) = round(n_start + (n_end - n_start) k / (total - 1)) (the official
    "improved_timesteps_schedule_decrease_linear"; 4 -> 3 in the card)."""
    _int_at_least("n_start", n_start, 1)
    _int_at_least("n_end", n_end, 1)
    _int_at_least("total", total, 1)
    frac = min(max(step, 0), total - 1) / max(total - 1, 1)
    return int(round(n_start + (n_end - n_start) * frac))


def consistency_pair(
    model: nn.Module,
    hr: Tensor,
    lr_up: Tensor,
    path: SRPath,
    n_steps: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The two sides of (3) for one batch: n ~ U{0 .. N-1} per row, t_n = n / N, one z per
    row shared by both points (random draws: n, then z). Returns (prediction
    f_theta(x_{t_{n+1}}, t_{n+1}) with gradient, target f_theta(x_{t_n}, t_n) without, and
    t_{n+1} (n,)). At n = 0 the target is HR itself (f(x_0, 0) = x_0)."""
    _int_at_least("n_steps", n_steps, 1)
    n = torch.randint(n_steps, (len(hr),), generator=generator).to(hr.device)
    t_cur, t_next = n.to(hr.dtype) / n_steps, (n + 1).to(hr.dtype) / n_steps
    z = torch.randn(hr.shape, generator=generator, dtype=hr.dtype).to(hr.device)
    prediction, target = consistency_sides(model, hr, lr_up, z, t_cur, t_next, path)
    return prediction, target, t_next


def consistency_sides(
    model: nn.Module,
    hr: Tensor,
    lr_up: Tensor,
    z: Tensor,
    t_cur: float | Tensor,
    t_next: float | Tensor,
    path: SRPath,
) -> tuple[Tensor, Tensor]:
    """The two sides of (3) for given noise and times (the deterministic core of
    :func:`consistency_pair`): both points on one trajectory, x_{t_next} and x_{t_cur} from
    the same (HR, LRup, z) (eq. 1); returns (f_theta(x_{t_next}, t_next) with gradient,
    f_theta(x_{t_cur}, t_cur) without). hr, lr_up, z (n, d); times floats or (n,)."""
    with torch.no_grad():
        target = model(path.point(hr, lr_up, z, t_cur), t_cur, lr_up)
    prediction = model(path.point(hr, lr_up, z, t_next), t_next, lr_up)
    return prediction, target


def dtm_loss(
    x_hat: Tensor,
    hr: Tensor,
    lr_up: Tensor,
    frozen: nn.Module,
    path: SRPath,
    generator: torch.Generator | None = None,
    t_range: tuple[float, float] = (0.1, 0.5),
    eps: float = 1e-8,
) -> Tensor:
    """L_DTM (eq. 4) for model outputs x_hat (n, d) with gradient, HR and LRup (n, d).

    t ~ U[t_range] per row and one z per row shared by q_t(x_hat) and q_t(HR) (as in the
    official code; random draws: t, then z); D = ``frozen`` (no gradient), called as
    D(x_t, t, LRup). w = 1 / max(mean|x_hat - HR|, eps) per row, detached. The gradient
    of the returned mean with respect to x_hat is w g / (n d): each output moves so that the
    frozen model reads its noised version the way it reads the real image's.

    What it does in the exact linear-Gaussian case (D the exact consistency map): g =
    M_t (1 - t)(x_hat - HR) for a fixed matrix M_t, so the expected pull is toward the
    posterior mean (with w = 1 / |x_hat - HR| a median-type pull): a fidelity term, not a
    variance-restoring one (tests/test_super_resolution.py measures it).
    """
    lo, hi = t_range
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"t_range must satisfy 0 <= lo <= hi <= 1, got {t_range}")
    t = lo + (hi - lo) * torch.rand(len(hr), generator=generator, dtype=hr.dtype).to(hr.device)
    z = torch.randn(hr.shape, generator=generator, dtype=hr.dtype).to(hr.device)
    with torch.no_grad():
        fake = frozen(path.point(x_hat.detach(), lr_up, z, t), t, lr_up)
        real = frozen(path.point(hr, lr_up, z, t), t, lr_up)
        g = fake - real
        w = 1.0 / (x_hat.detach() - hr).abs().flatten(1).mean(1).clamp_min(eps)
    aim = x_hat.detach() - g
    return (0.5 * w * ((x_hat - aim) ** 2).flatten(1).mean(1)).mean()


def regression_loss(model: nn.Module, hr: Tensor, lr_up: Tensor, kind: str = "l1") -> Tensor:
    """The regression baseline: mean over rows of d(model(LRup), HR), d = ``kind``
    (:func:`sr_distance`; "l1" by default, the blurry-but-high-PSNR reference)."""
    return sr_distance(model(lr_up), hr, kind).mean()


class RegressionSR(nn.Module):
    """A deterministic SR net HR^ = LRup + F(LRup, 0, LRup) (residual learning), lr_up (n, d)
    -> (n, d), the same backbone family as the one-step model."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, lr_up: Tensor) -> Tensor:
        return lr_up + self.backbone(lr_up, 0.0, lr_up)


# ---- the multi-step baseline: conditional EDM --------------------------------------------
class _Conditioned(nn.Module):
    """F(x, sigma) = backbone(x, log(sigma) / 4, cond): one batch's LRup bound in, so
    :class:`edm.EDMDenoiser` can precondition it."""

    def __init__(self, backbone: nn.Module, cond: Tensor) -> None:
        super().__init__()
        self.backbone, self.cond = backbone, cond

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.backbone(x, sigma.log() / 4, self.cond.expand_as(x))


class ConditionalDenoiser(nn.Module):
    """D(x; sigma, LRup) = c_skip x + c_out F(c_in x, c_noise, LRup), EDM's preconditioning
    (:class:`edm.EDMDenoiser`) around a conditional backbone F(x, tau, cond)
    (:class:`ConditionalMLP` or :class:`ConditionalUNet`); x, LRup (n, d), sigma > 0."""

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5) -> None:
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.backbone, self.sigma_data = backbone, float(sigma_data)

    def bind(self, lr_up: Tensor) -> EDMDenoiser:
        """The unconditional-looking denoiser D(x; sigma) for this batch of LRup (n, d)
        (what ``EDMLoss`` and the EDM samplers take); shares this module's weights."""
        return EDMDenoiser(_Conditioned(self.backbone, lr_up), self.sigma_data)

    def forward(self, x: Tensor, sigma: float | Tensor, lr_up: Tensor) -> Tensor:
        return self.bind(lr_up)(x, sigma)


def diffusion_loss(
    model: ConditionalDenoiser,
    hr: Tensor,
    lr_up: Tensor,
    generator: torch.Generator | None = None,
    loss: EDMLoss | None = None,
) -> Tensor:
    """EDM's weighted denoising loss (:class:`edm.EDMLoss`) of D(.; ., LRup) on HR (n, d)."""
    return (loss or EDMLoss())(model.bind(lr_up), hr, generator)


def heun_steps_for_nfe(nfe: int) -> int:
    """Heun steps N with 2 N - 1 = nfe evaluations (EDM Algorithm 1; the last step Euler):
    nfe must be odd, 1 being a single Euler step (the denoiser's posterior mean)."""
    _int_at_least("nfe", nfe, 1)
    if nfe % 2 == 0:
        raise ValueError(f"the Heun sampler uses 2 N - 1 evaluations: nfe must be odd, got {nfe}")
    return (nfe + 1) // 2


def _sigma_grid(n_steps: int, sigma_min: float, sigma_max: float, rho: float) -> Tensor:
    if n_steps == 1:  # karras_sigmas needs two noise levels: one step is sigma_max -> 0
        return torch.tensor([sigma_max, 0.0], dtype=torch.float64)
    return karras_sigmas(n_steps, sigma_min, sigma_max, rho)


def diffusion_sr(
    model: ConditionalDenoiser,
    lr_up: Tensor,
    nfe: int,
    generator: torch.Generator | None = None,
    sampler: str = "heun",
    sigma_max: float = 80.0,
    sigma_min: float = 0.002,
    rho: float = 7.0,
) -> Sample:
    """Multi-step conditional sampling with ``nfe`` network evaluations: x_T = sigma_max z
    (z from ``generator``), then EDM's Heun sampler (:func:`edm.edm_sampler`, nfe odd:
    N = (nfe + 1) / 2 steps) or the ancestral sampler (:func:`edm.ancestral_steps`, N = nfe
    steps, fresh noise from ``generator``) on the Karras grid (rho), all conditioned on
    lr_up (n, d). Returns :class:`edm.Sample` (x (n, d), nfe)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    n_steps = heun_steps_for_nfe(nfe) if sampler == "heun" else _int_at_least("nfe", nfe, 1)
    sigmas = _sigma_grid(n_steps, sigma_min, sigma_max, rho)
    z = torch.randn(lr_up.shape, generator=generator, dtype=lr_up.dtype).to(lr_up.device)
    denoiser = model.bind(lr_up)
    with torch.no_grad():
        if sampler == "heun":
            return edm_sampler(denoiser, sigma_max * z, sigmas)
        x, count = sigma_max * z, 0
        for step in ancestral_steps(denoiser, x, sigmas, generator):
            x, count = step.x_next, step.nfe
        return Sample(x, None, None, count, 0)


# ---- objectives for training.fit ---------------------------------------------------------
def consistency_objective(
    sample_pairs: PairSampler,
    path: SRPath,
    batch: int,
    generator: torch.Generator,
    total_steps: int,
    n_start: int = 4,
    n_end: int = 3,
    distance: str = "pseudo_huber",
    c: float = 0.03,
    dtm_weight: float = 0.0,
    dtm_start: int = 0,
    dtm_refresh: int = 1000,
    t_range: tuple[float, float] = (0.1, 0.5),
) -> Callable[[nn.Module, int], Tensor]:
    """loss_fn(model, step) for ``training.fit``: (HR, LRup) = sample_pairs(batch, generator),
    then L_CT (eq. 3) with N = n_steps_at(step, total_steps, n_start, n_end), plus, from
    step ``dtm_start`` on and when ``dtm_weight`` > 0, dtm_weight x L_DTM (eq. 4) on the
    consistency prediction f(x_{t_{n+1}}, t_{n+1}) (what the official code applies it to)
    with D a frozen copy of the model taken at ``dtm_start`` and refreshed every
    ``dtm_refresh`` steps (``distillation.frozen_copy``)."""
    _int_at_least("batch", batch, 1)
    _int_at_least("dtm_refresh", dtm_refresh, 1)
    if dtm_weight < 0:
        raise ValueError(f"dtm_weight must be >= 0, got {dtm_weight}")
    n_steps_at(0, total_steps, n_start, n_end)  # validate
    state: dict[str, nn.Module] = {}

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        hr, lr_up = sample_pairs(batch, generator)
        n = n_steps_at(step, total_steps, n_start, n_end)
        prediction, target, _ = consistency_pair(model, hr, lr_up, path, n, generator)
        loss = sr_distance(prediction, target, distance, c).mean()
        if dtm_weight > 0 and step >= dtm_start:
            if "frozen" not in state or (step - dtm_start) % dtm_refresh == 0:
                state["frozen"] = frozen_copy(model)
            extra = dtm_loss(prediction, hr, lr_up, state["frozen"], path, generator, t_range)
            loss = loss + dtm_weight * extra
        return loss

    return loss_fn


def regression_objective(
    sample_pairs: PairSampler, batch: int, generator: torch.Generator, kind: str = "l1"
) -> Callable[[nn.Module, int], Tensor]:
    """loss_fn(model, step) for ``training.fit``: :func:`regression_loss` on a fresh batch."""
    _int_at_least("batch", batch, 1)
    if kind not in DISTANCES:
        raise ValueError(f"kind must be one of {DISTANCES}, got {kind!r}")

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        hr, lr_up = sample_pairs(batch, generator)
        return regression_loss(model, hr, lr_up, kind)

    return loss_fn


def diffusion_objective(
    sample_pairs: PairSampler,
    batch: int,
    generator: torch.Generator,
    loss: EDMLoss | None = None,
) -> Callable[[nn.Module, int], Tensor]:
    """loss_fn(model, step) for ``training.fit``: :func:`diffusion_loss` on a fresh batch."""
    _int_at_least("batch", batch, 1)

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        hr, lr_up = sample_pairs(batch, generator)
        return diffusion_loss(model, hr, lr_up, generator, loss)

    return loss_fn


# ---- sharpness ---------------------------------------------------------------------------
def _as_images(x: Tensor) -> Tensor:
    x = torch.as_tensor(x).detach()
    if x.dim() == 3:
        x = x[:, None]
    if x.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W), got {tuple(x.shape)}")
    return x.double()


def high_frequency_energy(x: Tensor, cutoff: float = 0.5) -> Tensor:
    """E_hf(x) = sum over channels and frequencies with |k| > cutoff k_Nyq of |FFT2(x)|^2 /
    (H W), per image: x (N, C, H, W) or (N, H, W) -> (N,) float64.

    k = (k_y, k_x) in cycles per pixel (``torch.fft.fftfreq``), |k| its Euclidean norm,
    k_Nyq = 1/2; cutoff = 0.5 keeps the band above half the Nyquist frequency, where
    blur removes energy first. The DC term never counts (|k| = 0)."""
    if not 0 <= cutoff < math.sqrt(2):
        raise ValueError(f"cutoff must be in [0, sqrt(2)) (a fraction of Nyquist), got {cutoff}")
    x = _as_images(x)
    h, w = x.shape[-2:]
    ky = torch.fft.fftfreq(h, dtype=torch.float64, device=x.device)[:, None]
    kx = torch.fft.fftfreq(w, dtype=torch.float64, device=x.device)[None, :]
    band = (ky**2 + kx**2).sqrt() > cutoff * 0.5
    power = torch.fft.fft2(x).abs() ** 2 / (h * w)
    return (power * band).sum(dim=(1, 2, 3))


def sharpness_ratio(pred: Tensor, true: Tensor, cutoff: float = 0.5) -> Tensor:
    """sum_i E_hf(pred_i) / sum_i E_hf(true_i) over a batch (:func:`high_frequency_energy`),
    a () float64 tensor: 1 has the ground truth's fine detail, < 1 is blurrier (an L1
    regression's posterior-mean-like output), > 1 has extra high-frequency content (noise
    or artefacts). Ratios of sums, not means of ratios: flat patches with almost no
    high-frequency energy would dominate the latter."""
    p, t = _as_images(pred), _as_images(true)
    if p.shape != t.shape:
        raise ValueError(
            f"pred and true must have one shape, got {tuple(p.shape)}, {tuple(t.shape)}"
        )
    denom = high_frequency_energy(t, cutoff).sum()
    if denom <= 1e-12 * t.pow(2).sum():
        raise ValueError("the ground truth has no energy above the cutoff: the ratio is undefined")
    return high_frequency_energy(p, cutoff).sum() / denom


# ---- the exact linear-Gaussian test bed --------------------------------------------------
def linear_gaussian_pairs(
    problem: GaussianSR, up: Tensor, shuffle: bool = False, dtype: torch.dtype = torch.float32
) -> PairSampler:
    """sample_pairs(batch, generator) -> (x, LRup = U y) in ``dtype`` for (x, y) drawn from
    ``problem`` (:meth:`GaussianSR.sample`) and the upsampling matrix ``up`` (d, k)
    (``SRDegradation.up_matrix``). ``shuffle``: LRup of another row of the batch (a
    permutation drawn after the pairs): the negative control, whose LRup says nothing
    about its x."""
    up = torch.as_tensor(up, dtype=torch.float64)
    if up.shape != (problem.dim, problem.obs_dim):
        raise ValueError(f"up must be ({problem.dim}, {problem.obs_dim}), got {tuple(up.shape)}")

    def sample_pairs(batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y = problem.sample(batch, generator)
        lr_up = y @ up.T
        if shuffle:
            lr_up = lr_up[torch.randperm(batch, generator=generator)]
        return x.to(dtype), lr_up.to(dtype)

    return sample_pairs


@dataclass
class ExactBatch:
    """Fresh test inputs of a linear-Gaussian problem and their exact answers (float64):
    y (n, k), LRup = U y (n, d), z (n, d), x_1 = LRup + s_max z (where one step starts),
    exact = f*(y, z) = E[x | y] + P^{1/2} z (n, d), mean = E[x | y] (n, d)."""

    y: Tensor
    lr_up: Tensor
    z: Tensor
    x_1: Tensor
    exact: Tensor
    mean: Tensor

    def squared_error(self, out: Tensor) -> Tensor:
        """|out - f*(y, z)|^2 per row (n,) float64 (out (n, d), any float dtype)."""
        return ((out.double() - self.exact) ** 2).sum(1)


def exact_map_batch(
    problem: GaussianSR, up: Tensor, path: SRPath, n: int, generator: torch.Generator
) -> ExactBatch:
    """n test cases (:class:`ExactBatch`): y from the problem (x dropped), then z; a model's
    one-step error is ``batch.squared_error(model(batch.x_1, 1, batch.lr_up))``, and the
    RMS error sqrt(mean) of it. The N-step Euler optimum of consistency training is
    ``problem.euler_map(batch.x_1, batch.y, batch.lr_up, path.sigma_max, N)``."""
    _int_at_least("n", n, 1)
    _, y = problem.sample(n, generator)
    lr_up = y @ torch.as_tensor(up, dtype=torch.float64).T
    z = torch.randn(n, problem.dim, generator=generator, dtype=torch.float64)
    return ExactBatch(
        y, lr_up, z, path.start(lr_up, z), problem.exact_map(y, z), problem.posterior_mean(y)
    )


# ---- distribution match ------------------------------------------------------------------
# ---- latency -----------------------------------------------------------------------------
def latency_per_image(
    fn: Callable[[], object], n_images: int, repeats: int = 5, warmup: int = 1
) -> tuple[float, float]:
    """(median, standard error) of the wall seconds per image of ``fn()``, a call that
    processes ``n_images`` images in one batch: ``warmup`` untimed calls, then ``repeats``
    timed ones (``time.perf_counter``). Median and a robust SE, 1.2533 x 1.4826 MAD /
    sqrt(repeats) (the median's SE for normal noise, with the SD estimated from the median
    absolute deviation), because on a shared machine a few calls are slowed by others'
    work. On a GPU, ``fn`` must synchronise (return a CPU value) for the times to mean
    anything."""
    _int_at_least("n_images", n_images, 1)
    _int_at_least("repeats", repeats, 2)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / n_images)
    t = torch.tensor(times, dtype=torch.float64)
    median = t.median()
    mad = (t - median).abs().median()
    return float(median), float(1.2533 * 1.4826 * mad / math.sqrt(repeats))
