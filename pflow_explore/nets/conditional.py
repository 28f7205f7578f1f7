"""Networks conditioned on an image: F(x, tau, cond) for flat images x and cond (n, d), d =
C H W, and a time (or noise-level feature) tau. Restoration (chapter 05: cond = the degraded
image) and super-resolution (chapter 06: cond = the upsampled low-resolution image) share
them.

Time convention: the caller's (tau is whatever time feature the method passes: t / T, t in
[0, 1], or EDM's c_noise).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pflow_explore.nets.mlp import MLP
from pflow_explore.nets.unet import UNet


def _check_pair(x: Tensor, cond: Tensor, dim: int) -> None:
    if x.dim() != 2 or x.shape[1] != dim or cond.shape != x.shape:
        raise ValueError(
            f"x and cond must have shape (n, {dim}), got {tuple(x.shape)}, {tuple(cond.shape)}"
        )


def _times(tau: float | Tensor, x: Tensor) -> Tensor:
    """tau as (n,) in x's dtype and device (a float or a () tensor is repeated)."""
    tau = torch.as_tensor(tau, dtype=x.dtype, device=x.device).reshape(-1)
    return tau.expand(len(x)) if tau.numel() == 1 else tau


class ConditionalMLP(MLP):
    """F(x, tau, cond) = MLP([x, cond], tau): :class:`~pflow_explore.nets.mlp.MLP` from 2d
    inputs to d outputs, its time embedding (and conditioning at every layer) on tau. x and
    cond (n, d), tau a float, () or (n,) -> (n, d). ``depth`` hidden layers of width
    ``hidden``; other keywords go to :class:`MLP`."""

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, **options: object) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
        super().__init__(2 * dim, hidden, depth, out_dim=dim, **options)
        self.image_dim = dim

    def forward(self, x: Tensor, tau: float | Tensor, cond: Tensor) -> Tensor:
        _check_pair(x, cond, self.image_dim)
        return super().forward(torch.cat([x, cond], dim=1), tau)


class ConditionalUNet(nn.Module):
    """F(x, tau, cond) for flat images (n, C H W): :class:`~pflow_explore.nets.unet.UNet` on
    the 2C-channel image [x, cond], its first C output channels, flattened. tau: a float,
    () or (n,) (the time embedding's input) -> (n, C H W)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        base: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        attention: bool = True,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
        c, h, w = self.image_shape
        self.dim = c * h * w
        self.net = UNet(2 * c, base=base, channel_mults=channel_mults, attention=attention)

    def forward(self, x: Tensor, tau: float | Tensor, cond: Tensor) -> Tensor:
        _check_pair(x, cond, self.dim)
        c, h, w = self.image_shape
        image = torch.cat([x.reshape(-1, c, h, w), cond.reshape(-1, c, h, w)], dim=1)
        return self.net(image, _times(tau, x))[:, :c].reshape(len(x), self.dim)
