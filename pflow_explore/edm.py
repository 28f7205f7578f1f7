"""EDM: preconditioned denoisers, their loss, and the deterministic Heun sampler.

Karras, Aittala, Aila & Laine (2022), "Elucidating the Design Space of Diffusion-Based
Generative Models" (EDM; code NVlabs/edm). Noise is variance-exploding, x = x0 + sigma z,
z ~ N(0, I), and sampling runs the probability-flow ODE (EDM eq. 1 with sigma(t) = t and
the score of eq. 3, grad log p = (D - x) / sigma^2)

    dx/dsigma = (x - D(x; sigma)) / sigma                                            (1)

from sigma_max down to 0, where D(x; sigma) = E[x0 | x] is the denoiser. The pieces, each
usable alone:

- :func:`edm_coefficients`, :func:`c_noise`: the preconditioning of Table 1;
- :class:`EDMDenoiser`: D = c_skip x + c_out F(c_in x, c_noise) around a raw network F;
- :class:`EDMLoss` / :func:`edm_loss`: the weighted denoising loss (eq. 8), log-normal sigma;
- :func:`karras_sigmas` (from ``paths``): the sampling grid (eq. 5);
- :func:`heun_steps`: Algorithm 1 as a generator of :class:`HeunStep` (step-through,
  widgets, adjoints); :func:`edm_sampler` runs it to the end, optionally teleporting through
  the first steps with a Gaussian closed form (docs/papers.md §01);
- :func:`ancestral_steps`: a stochastic (reverse-SDE-like) sampler, one evaluation a step;
- :func:`empirical_denoiser`: the exact denoiser of a finite data set (the ideal D).

Shapes: states are flat, x (n, d); a denoiser is any callable D(x (n, d), sigma) -> (n, d)
with sigma a float (or, for :class:`EDMDenoiser`, a tensor 0-d or (n,)).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pflow_explore.paths import karras_sigmas
from pflow_explore.theory.gaussian_flow import GaussianFlow

__all__ = [
    "Denoiser",
    "ancestral_steps",
    "EDMDenoiser",
    "EDMLoss",
    "HeunStep",
    "Sample",
    "c_noise",
    "edm_coefficients",
    "edm_denoiser",
    "edm_loss",
    "edm_sampler",
    "empirical_denoiser",
    "heun_nfe",
    "heun_steps",
    "karras_sigmas",
]

Denoiser = Callable[[Tensor, float], Tensor]  # D(x (n, d), sigma) -> x0-estimate (n, d)


# ---- preconditioning (EDM Table 1) ----------------------------------------------------------
def edm_coefficients(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in) at noise level sigma (any shape), Karras et al. 2022, Table 1:

        c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
        c_in = 1 / sqrt(sigma^2 + sd^2),   sd = sigma_data.

    For data of variance sd^2 they make the net's input c_in x and its training target
    (x0 - c_skip x) / c_out unit-variance, and c_skip minimises the target's variance
    (EDM appendix B.6). The fourth coefficient is :func:`c_noise`.
    """
    sd2 = sigma_data**2
    total = sigma**2 + sd2
    return sd2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt()


def c_noise(sigma: Tensor) -> Tensor:
    """c_noise = log(sigma) / 4 (Table 1): how the net is told the noise level.

    The nets of this package take sigma itself and apply this map in their time embedding
    (``nets.TimeEmbedding(log_scale=True)``), so :class:`EDMDenoiser` passes sigma."""
    return sigma.log() / 4


class EDMDenoiser(nn.Module):
    """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise(sigma)), x: (n, d) -> (n, d) (EDM eq. 7).

    ``net`` is F(x, sigma) with a log-scale time embedding (it computes c_noise itself);
    ``image_shape`` (C, H, W) reshapes x for a convolutional F (None: F takes (n, d)).
    sigma: float, 0-d or (n,), > 0. ``sigma_data`` is stored with the weights.
    """

    def __init__(
        self, net: nn.Module, sigma_data: float, image_shape: tuple[int, ...] | None = None
    ) -> None:
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.net, self.image_shape = net, image_shape
        self.register_buffer("sigma_data", torch.tensor(float(sigma_data)))

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """x: (n, d), sigma: float, 0-d or (n,) -> the x0-estimate (n, d)."""
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        sig = sig.expand(x.shape[0]) if sig.numel() == 1 else sig
        c_skip, c_out, c_in = edm_coefficients(sig[:, None], float(self.sigma_data))
        inp = c_in * x
        if self.image_shape is not None:
            inp = inp.reshape(-1, *self.image_shape)
        f = self.net(inp, sig).reshape(x.shape)
        return c_skip * x + c_out * f


def edm_denoiser(
    net: nn.Module, sigma_data: float, image_shape: tuple[int, ...] | None = None
) -> EDMDenoiser:
    """Wrap a raw network F into the preconditioned EDM denoiser (:class:`EDMDenoiser`)."""
    return EDMDenoiser(net, sigma_data, image_shape)


# ---- the loss (EDM eq. 8, NVlabs/edm training/loss.py EDMLoss) ------------------------------
@dataclass(frozen=True)
class EDMLoss:
    """E_{sigma, z} lambda(sigma) |D(x0 + sigma z; sigma) - x0|^2 / d (EDM eqs. 2 and 8):

        log sigma ~ N(p_mean, p_std^2),   lambda(sigma) = 1 / c_out(sigma)^2,

    which is a unit-weight regression of F on its unit-variance target. Random draws, in
    this order: sigma (n,) (:meth:`sample_sigma`), then z (n, d), from ``generator``.
    """

    p_mean: float = -1.2
    p_std: float = 1.2

    def sample_sigma(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> Tensor:
        """sigma = exp(p_mean + p_std u), u ~ N(0, 1): (n,)."""
        return (self.p_mean + self.p_std * torch.randn(n, generator=generator, device=device)).exp()

    def __call__(
        self, denoiser: EDMDenoiser, x0: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """x0: (n, d) clean data -> the scalar loss (mean over the batch)."""
        sigma = self.sample_sigma(x0.shape[0], generator, x0.device)
        z = torch.randn(x0.shape, generator=generator, device=x0.device)
        _, c_out, _ = edm_coefficients(sigma, float(denoiser.sigma_data))
        error = (denoiser(x0 + sigma[:, None] * z, sigma) - x0) ** 2
        return (error.mean(dim=1) / c_out**2).mean()


def edm_loss(
    denoiser: EDMDenoiser,
    x0: Tensor,
    generator: torch.Generator | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Tensor:
    """:class:`EDMLoss` (p_mean, p_std) of ``denoiser`` on the batch x0 (n, d)."""
    return EDMLoss(p_mean, p_std)(denoiser, x0, generator)


# ---- the sampler (EDM Algorithm 1) ----------------------------------------------------------
@dataclass
class HeunStep:
    """One step i of :func:`heun_steps`: from x (n, d) at ``sigma`` to x_next at
    ``sigma_next``; ``denoised`` = D(x; sigma) (n, d); ``nfe`` evaluations of D so far;
    ``teleported``: the step was the Gaussian closed form, not the denoiser."""

    i: int
    sigma: float
    sigma_next: float
    x: Tensor
    denoised: Tensor
    x_next: Tensor
    nfe: int
    teleported: bool = False


def heun_steps(
    denoiser: Denoiser,
    x_T: Tensor,
    sigmas: Tensor,
    teleport_to: int | None = None,
    gaussian: GaussianFlow | None = None,
    grad: bool = False,
) -> Iterator[HeunStep]:
    """EDM's deterministic sampler (Karras et al. 2022, Algorithm 1) for eq. (1), step by step.

    On the grid sigmas (N + 1,) = (s_0 > ... > s_N = 0) (:func:`karras_sigmas`), step i is
    Heun's method:
        d_i = (x_i - D(x_i; s_i)) / s_i,   x' = x_i + (s_{i+1} - s_i) d_i,
        x_{i+1} = x_i + (s_{i+1} - s_i) (d_i + (x' - D(x'; s_{i+1})) / s_{i+1}) / 2,
    and Euler (x_{i+1} = x') on the last step, where s_{i+1} = 0: 2 N - 1 evaluations.

    Teleportation (``teleport_to`` = k): steps 0..k-1 follow the closed-form path of
    ``gaussian`` from s_0 (``GaussianFlow.ve_solution``; ``denoised`` is its exact
    denoiser), saving 2 k evaluations. x_T: (n, d) at s_0.
    ``grad``: keep the autograd graph (for adjoints, guidance); by default each step runs
    under ``torch.no_grad`` (the mode is set per step, never held across a ``yield``).
    """
    n_grid = len(sigmas) - 1
    k = teleport_to or 0
    if not 0 <= k <= n_grid:
        raise ValueError(f"teleport_to must be in [0, {n_grid}] (grid steps), got {teleport_to}")
    if k and gaussian is None:
        raise ValueError("teleport_to needs the gaussian whose closed form makes the jump")
    if float(sigmas[-1]) != 0.0:
        raise ValueError("sigmas must end with 0 (use paths.karras_sigmas)")
    x, nfe = x_T, 0
    if k:
        with torch.set_grad_enabled(grad):
            jump = gaussian.ve_solution(x_T, float(sigmas[0]), sigmas[1 : k + 1]).to(x_T)
        for i in range(k):
            s = float(sigmas[i])
            with torch.set_grad_enabled(grad):
                estimate = gaussian.ve_denoiser(x, s).to(x_T)
            yield HeunStep(i, s, float(sigmas[i + 1]), x, estimate, jump[i], 0, True)
            x = jump[i]
    for i in range(k, n_grid):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        with torch.set_grad_enabled(grad):
            x0_hat = denoiser(x, s)
            d = (x - x0_hat) / s
            x_next = x + (s_next - s) * d
            nfe += 1
            if s_next > 0:  # Heun's correction; the last step (to sigma = 0) stays Euler
                d_next = (x_next - denoiser(x_next, s_next)) / s_next
                x_next = x + (s_next - s) * (d + d_next) / 2
                nfe += 1
        yield HeunStep(i, s, s_next, x, x0_hat, x_next, nfe)
        x = x_next


@dataclass
class Sample:
    """x: final samples (n, d); trajectory: (N + 1, n, d) states on the grid, x_T first;
    denoised: (N, n, d) x0-estimates D(x_i; sigma_i); nfe: network evaluations;
    skipped: steps replaced by the closed-form jump (their states and estimates are the
    Gaussian's)."""

    x: Tensor
    trajectory: Tensor | None
    denoised: Tensor | None
    nfe: int
    skipped: int


def edm_sampler(
    denoiser: Denoiser,
    x_T: Tensor,
    sigmas: Tensor,
    teleport_to: int | None = None,
    gaussian: GaussianFlow | None = None,
    trajectory: bool = False,
    grad: bool = False,
) -> Sample:
    """Run :func:`heun_steps` to sigma = 0 and collect the result (same arguments);
    ``trajectory``: keep every state and x0-estimate."""
    states, estimates, x, nfe = [x_T], [], x_T, 0
    for step in heun_steps(denoiser, x_T, sigmas, teleport_to, gaussian, grad):
        x, nfe = step.x_next, step.nfe
        if trajectory:
            states.append(x)
            estimates.append(step.denoised)
    traj = torch.stack(states) if trajectory else None
    den = torch.stack(estimates) if trajectory else None
    return Sample(x, traj, den, nfe, teleport_to or 0)


def heun_nfe(n_steps: int, skipped: int = 0) -> int:
    """Evaluations of :func:`edm_sampler`: 2 (N - k) - 1 for k < N skipped steps, else 0."""
    return 2 * (n_steps - skipped) - 1 if skipped < n_steps else 0


# ---- a stochastic sampler: ancestral steps ---------------------------------------------------
def ancestral_steps(
    denoiser: Denoiser,
    x_T: Tensor,
    sigmas: Tensor,
    generator: torch.Generator | None = None,
) -> Iterator[HeunStep]:
    """A stochastic sampler of the VE diffusion (the "Euler ancestral" step of DDPM in noise
    levels): from x at s_i to s_{i+1} < s_i, split the next level into the part kept and the
    part drawn afresh,

        s_up = s_{i+1} sqrt(s_i^2 - s_{i+1}^2) / s_i,   s_down = sqrt(s_{i+1}^2 - s_up^2),
        x_{i+1} = x + (s_down - s_i) (x - D(x; s_i)) / s_i + s_up xi,   xi ~ N(0, I),

    an Euler step of (1) down to s_down, then fresh noise up to s_{i+1}. Given x0 it is the
    exact posterior draw q(x_{s_{i+1}} | x_{s_i}, x0) with x0 replaced by its estimate D; the
    spread of x0 given x_{s_i} is left out, an error that vanishes as the steps shrink (a
    discretisation of the reverse SDE; tests/test_edm.py measures the convergence). One step,
    one evaluation (``nfe`` counts them); ``denoised`` = D(x; s_i). x_T: (n, d) at s_0; sigmas
    (N + 1,) decreasing to 0 (:func:`karras_sigmas`); the noise xi (n, d) of each step comes
    from ``generator``."""
    if float(sigmas[-1]) != 0.0:
        raise ValueError("sigmas must end with 0 (use paths.karras_sigmas)")
    x = x_T
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        up = s_next * max(s**2 - s_next**2, 0.0) ** 0.5 / s
        down = max(s_next**2 - up**2, 0.0) ** 0.5
        with torch.no_grad():
            x0_hat = denoiser(x, s)
            x_next = x + (down - s) * (x - x0_hat) / s
            if up > 0:
                xi = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                x_next = x_next + up * xi
        yield HeunStep(i, s, s_next, x, x0_hat, x_next, i + 1)
        x = x_next


# ---- the ideal denoiser of a finite data set ------------------------------------------------
def empirical_denoiser(data: Tensor, chunk: int = 512) -> Denoiser:
    """The exact denoiser of the empirical distribution of ``data`` (N, d), as D(x, sigma).

    For p0 = (1/N) sum_i delta(x - x_i) and x = x0 + sigma z,
        D(x; sigma) = E[x0 | x] = sum_i w_i x_i,  w = softmax_i(-|x - x_i|^2 / (2 sigma^2)):
    the optimum of the denoising loss on these N points, so the best a network trained on
    them could reach (and one that memorises). At large sigma it is the Gaussian denoiser to
    first order in 1/sigma^2 (mu + Cov (x - mu) / sigma^2); at small sigma it snaps to the
    nearest data point. Computed in float64 (distances at sigma = 0.002 need it), in chunks
    of ``chunk`` rows of x; returns x's dtype.
    """
    ref = data.double()

    def denoise(x: Tensor, sigma: float) -> Tensor:
        out = []
        for xb in x.double().to(ref.device).split(chunk):
            logits = -(torch.cdist(xb, ref) ** 2) / (2 * float(sigma) ** 2)
            out.append(torch.softmax(logits, dim=1) @ ref)
        return torch.cat(out).to(x)

    return denoise
