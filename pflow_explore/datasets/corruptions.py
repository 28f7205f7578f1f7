"""Blind corruptions of images in [-1, 1] for editing experiments: each is unknown to the
model that restores it, and some leave the data range (card 08_code_editing).

Every corruption takes images x (N, C, H, W) in [-1, 1], a strength in [0, 1] (0: the
identity) and an optional generator, and returns y of the same shape:

- ``"mask"`` (out of range): a share strength / 2 of the pixels set to +-3, random sign;
- ``"impulse"`` (salt and pepper, in range): a share strength / 2 set to +-1;
- ``"contrast"`` (in range): y = m + (1 - 0.8 strength) (x - m), m the image's mean;
- ``"saturation"`` (out of range): y = (1 + 3 strength) x;
- ``"blur"``: a Gaussian blur of standard deviation 1.5 strength pixels
  (:func:`pflow_explore.datasets.degradations.gaussian_blur`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pflow_explore.datasets.degradations import gaussian_blur

__all__ = ["CORRUPTIONS", "OUT_OF_RANGE", "corrupt"]

CORRUPTIONS: tuple[str, ...] = ("mask", "impulse", "contrast", "saturation", "blur")
OUT_OF_RANGE: tuple[str, ...] = ("mask", "saturation")
MASK_VALUE = 3.0


def _pixels(x: Tensor, share: float, value: float, generator: torch.Generator | None) -> Tensor:
    n, _, h, w = x.shape
    hit = torch.rand(n, 1, h, w, generator=generator) < share
    sign = torch.where(torch.rand(n, 1, h, w, generator=generator) < 0.5, -1.0, 1.0)
    hit, sign = hit.to(x.device), sign.to(x)
    return torch.where(hit, value * sign, x)


def corrupt(
    x: Tensor, kind: str, strength: float, generator: torch.Generator | None = None
) -> Tensor:
    """y = corruption ``kind`` of x (N, C, H, W) at ``strength`` in [0, 1] (module docstring)."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; valid: {', '.join(CORRUPTIONS)}")
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength!r}")
    if x.dim() != 4:
        raise ValueError(f"x must be images (N, C, H, W), got shape {tuple(x.shape)}")
    if kind == "mask":
        return _pixels(x, strength / 2, MASK_VALUE, generator)
    if kind == "impulse":
        return _pixels(x, strength / 2, 1.0, generator)
    if kind == "contrast":
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return m + (1 - 0.8 * strength) * (x - m)
    if kind == "saturation":
        return (1 + 3 * strength) * x
    return gaussian_blur(x, 1.5 * strength) if strength > 0 else x.clone()
