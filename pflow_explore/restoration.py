"""Image restoration with a mean-reverting diffusion: degradation tasks, the conditional
noise-prediction network eps_theta(x_t, t, mu), its loss, and the denoiser a sampler uses.

Time convention: diffusion, t in [0, T] as in :mod:`mean_reverting` (t = 0 the clean image
x0, t = T the degraded image mu plus noise of std lambda); the network sees t / T.

IR-SDE (Luo et al. 2023) starts its reverse process at the degraded image: mu = degrade(x0),
x_t = mu + alpha_t (x0 - mu) + sigmabar_t z. The network predicts z (noise matching),

    L(theta) = E_{x0, mu, t ~ U(t_min, T), z} || eps_theta(x_t, t, mu) - z ||^2,          (1)

and a sampler reads the data prediction x0^ = mu + (x_t - mu - sigmabar_t eps_theta) /
alpha_t (:func:`denoiser_of`): the network's error times sigmabar_t / alpha_t, about 40 at
the noisy end of the paper's schedule (the trap the MR Sampler chapter measures). The same
network can instead predict x0 (``prediction="x0"``: loss || x0_theta - x0 ||^2, read as is).
Images are flat vectors (n, d), d = C H W, values in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from pflow_explore.datasets import degradations as deg
from pflow_explore.mean_reverting import MRSchedule
from pflow_explore.nets.conditional import ConditionalMLP, ConditionalUNet

TASKS = ("denoise", "deblur", "inpaint")
PREDICTIONS = ("eps", "x0")
NETS = ("mlp", "unet")
PairSampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


def degrade(
    task: str,
    x: Tensor,
    generator: torch.Generator | None = None,
    noise: float = 0.2,
    blur: float = 1.0,
    box: float = 0.375,
) -> Tensor:
    """mu = the degraded image, x (N, C, H, W) in [-1, 1] -> (N, C, H, W):

    - "denoise": mu = x + ``noise`` z;
    - "deblur":  mu = G_blur * x + 0.02 z (Gaussian blur of std ``blur`` pixels);
    - "inpaint": mu = m x, with m = 0 on one random square of side ``box`` H (the hole is 0,
      mid-grey) and 1 elsewhere.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "denoise":
        return deg.add_noise(x, noise, generator)
    if task == "deblur":
        return deg.add_noise(deg.gaussian_blur(x, blur), 0.02, generator)
    return deg.apply_mask(x, deg.box_mask(x.shape, box, generator))


def degrade_thirds(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(x0, mu) flat (n, d) for a mixed training batch x (n, C, H, W): the first third of x
    noisy, the next blurred, the rest inpainted (:func:`degrade` with each task)."""
    k = len(x) // 3
    parts = [x[:k], x[k : 2 * k], x[2 * k :]]
    mu = [degrade(task, p, generator) for task, p in zip(TASKS, parts, strict=True)]
    return x.flatten(1), torch.cat(mu).flatten(1)


def linear_gaussian_problem(
    d: int, generator: torch.Generator | None = None, noise: float = 0.1
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A restoration problem with an exact answer: a 1-D signal x ~ N(0, C), C_ij = 0.25
    exp(-|i - j| / 2), blurred by B (Gaussian of std 1 sample, rows normalised) with noise:
    y = B x_true + ``noise`` n. The law to sample is x | y = N(m, P),

        P = (C^-1 + B^T B / noise^2)^-1,     m = P B^T y / noise^2,

    and the diffusion's condition is mu = y. -> (m (d,), P (d, d), y (d,), x_true (d,)),
    float64."""
    if d < 1 or not noise > 0:
        raise ValueError(f"need d >= 1 and noise > 0, got {d}, {noise}")
    i = torch.arange(d, dtype=torch.float64)
    C = 0.25 * torch.exp(-(i[:, None] - i[None]).abs() / 2)
    B = torch.exp(-((i[:, None] - i[None]) ** 2) / 2)
    B = B / B.sum(1, keepdim=True)
    x_true = torch.linalg.cholesky(C) @ torch.randn(d, generator=generator, dtype=torch.float64)
    y = B @ x_true + noise * torch.randn(d, generator=generator, dtype=torch.float64)
    P = torch.linalg.inv(torch.linalg.inv(C) + B.T @ B / noise**2)
    return P @ B.T @ y / noise**2, (P + P.T) / 2, y, x_true


class RestorationNet(nn.Module):
    """eps_theta(x_t, t, mu): x_t and mu flat images (B, d), d = C H W; t (diffusion time in
    [0, T]: a float or (B,)) enters as t / T. ``kind`` "mlp": :class:`~pflow_explore.nets.
    conditional.ConditionalMLP` (an MLP on [x_t, mu], 2d -> d); "unet": :class:`~pflow_explore.
    nets.conditional.ConditionalUNet` (a UNet on the 2C-channel image [x_t, mu]). -> (B, d)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        T: float,
        kind: str = "mlp",
        hidden: int = 512,
        depth: int = 3,
        base: int = 32,
        mults: tuple[int, ...] = (1, 2, 2),
    ) -> None:
        super().__init__()
        if kind not in NETS:
            raise ValueError(f"kind must be one of {NETS}, got {kind!r}")
        if not T > 0:
            raise ValueError(f"T must be > 0, got {T!r}")
        self.image_shape, self.T, self.kind = tuple(image_shape), float(T), kind
        c, h, w = self.image_shape
        self.dim = c * h * w
        if kind == "mlp":
            self.net: nn.Module = ConditionalMLP(self.dim, hidden, depth)
        else:
            self.net = ConditionalUNet(self.image_shape, base, mults)

    def forward(self, x: Tensor, t: float | Tensor, mu: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        tau = torch.as_tensor(t, dtype=x.dtype, device=x.device) / self.T
        return self.net(x, tau, mu.expand_as(x))


def noise_matching_loss(
    net: nn.Module,
    x0: Tensor,
    mu: Tensor,
    schedule: MRSchedule,
    generator: torch.Generator | None = None,
    t_min: float = 0.0,
    prediction: str = "eps",
) -> Tensor:
    """(1) on one batch: x0, mu (B, d); t ~ U(t_min, T) per row; a scalar. ``prediction``
    "x0": the target is x0 instead of z."""
    _check_prediction(prediction)
    t = t_min + (schedule.T - t_min) * torch.rand(len(x0), generator=generator, dtype=torch.float64)
    x_t, z = schedule.q_sample(x0, t, mu, generator)
    target = z if prediction == "eps" else x0
    return ((net(x_t, t.to(x0.dtype), mu) - target) ** 2).sum(1).mean()


def _check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def objective(
    sample_pairs: PairSampler,
    schedule: MRSchedule,
    batch: int,
    generator: torch.Generator,
    t_min: float = 0.0,
    prediction: str = "eps",
) -> Callable[[nn.Module, int], Tensor]:
    """The loss_fn(model, step) for ``training.fit``: each step draws (x0, mu) =
    sample_pairs(batch, generator) ((batch, d) each) and returns :func:`noise_matching_loss`."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    _check_prediction(prediction)

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        x0, mu = sample_pairs(batch, generator)
        return noise_matching_loss(model, x0, mu, schedule, generator, t_min, prediction)

    return loss_fn


def denoiser_of(
    net: nn.Module, schedule: MRSchedule, mu: Tensor, prediction: str = "eps"
) -> Callable[[Tensor, float], Tensor]:
    """x0^(x, t) for a sampler of :mod:`mean_reverting`: mu + (x - mu - sigmabar_t
    eps_theta(x, t, mu)) / alpha_t for an eps-network, the output itself for an x0-network;
    x (n, d), mu (n, d) or (d,); no gradients."""
    _check_prediction(prediction)

    @torch.no_grad()
    def denoiser(x: Tensor, t: float) -> Tensor:
        out = net(x, t, mu)
        return schedule.x0_from_eps(x, out, t, mu) if prediction == "eps" else out

    return denoiser
