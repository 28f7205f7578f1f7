"""Image degradations y = A(x) (+ noise) for inverse problems: blur, noise, down/upsampling,
masks. All act on batches x of shape (N, C, H, W) and keep dtype and device.

Mask convention: 1 = observed (kept) pixel, 0 = missing; masks have shape (N, 1, H, W) and
broadcast over channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

UPSAMPLE_MODES = ("bilinear", "nearest")


def _check_images(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")


def _check_factor(factor: int) -> int:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be an int >= 1, got {factor!r}")
    return factor


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    # Draw on the generator's device so a CPU generator also seeds noise for CUDA images.
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)


def gaussian_kernel_1d(sigma: float, kernel_size: int | None = None) -> Tensor:
    """Normalised 1D Gaussian g(k) = exp(-k^2 / 2 sigma^2) / sum_j exp(-j^2 / 2 sigma^2).

    k = -r..r with r = kernel_size // 2; kernel_size defaults to 2 ceil(3 sigma) + 1 and must
    be odd. Shape (kernel_size,), float64.
    """
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if kernel_size is None:
        kernel_size = 2 * math.ceil(3 * sigma) + 1
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"kernel_size must be an odd int >= 1, got {kernel_size!r}")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (a centred kernel), got {kernel_size}")
    k = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    g = torch.exp(-(k**2) / (2 * sigma**2))
    return g / g.sum()


def gaussian_blur(x: Tensor, sigma: float, kernel_size: int | None = None) -> Tensor:
    """Gaussian blur y = G_sigma * x, per channel, with reflect padding; shape (N, C, H, W).

    y[i, j] = sum_{k, l} g(k) g(l) x[i - k, j - l] with g from :func:`gaussian_kernel_1d`
    (separable: a vertical then a horizontal 1D convolution). Indices outside the image are
    reflected without repeating the edge (x[-1] = x[1]). sigma = 0 is the identity. With the
    default kernel_size the radius is cut to min(H, W) - 1 (reflection needs it) and the
    kernel renormalised; an explicit kernel_size that is too large raises ValueError.
    """
    _check_images(x)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if sigma == 0:
        return x.clone()
    h, w = x.shape[-2:]
    max_radius = min(h, w) - 1
    if kernel_size is None:
        kernel_size = 2 * min(math.ceil(3 * sigma), max_radius) + 1
    elif isinstance(kernel_size, int) and kernel_size // 2 > max_radius:
        raise ValueError(
            f"kernel_size must be at most {2 * max_radius + 1} for {h}x{w} images "
            f"(reflect padding), got {kernel_size}"
        )
    g = gaussian_kernel_1d(sigma, kernel_size).to(device=x.device, dtype=x.dtype)
    r = g.numel() // 2
    n, c = x.shape[:2]
    flat = x.reshape(n * c, 1, h, w)
    if r > 0:
        flat = F.pad(flat, (r, r, r, r), mode="reflect")
    # Symmetric kernel: correlation (conv2d) equals convolution.
    flat = F.conv2d(flat, g.view(1, 1, -1, 1))
    flat = F.conv2d(flat, g.view(1, 1, 1, -1))
    return flat.reshape(n, c, h, w)


def add_noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """y = x + std * eps, eps ~ N(0, I) of x's shape (any shape), same dtype and device."""
    if not math.isfinite(std) or std < 0:
        raise ValueError(f"std must be a finite number >= 0, got {std!r}")
    return x + std * _noise_like(x, generator)


def downsample(x: Tensor, factor: int) -> Tensor:
    """Average pooling: y[i, j] = mean of x over the factor x factor block at (i f, j f).

    x: (N, C, H, W) with H and W divisible by factor -> (N, C, H / f, W / f).
    """
    _check_images(x)
    _check_factor(factor)
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"factor must divide the image size {h}x{w}, got factor {factor}")
    return F.avg_pool2d(x, factor) if factor > 1 else x.clone()


def upsample(x: Tensor, factor: int, mode: str = "bilinear") -> Tensor:
    """Resize (N, C, H, W) -> (N, C, f H, f W): "nearest" repeats every pixel in an f x f
    block, y[i, j] = x[i // f, j // f]; "bilinear" interpolates (half-pixel centres,
    align_corners=False), so the mean of every f x f block is (approximately) kept.
    """
    _check_images(x)
    _check_factor(factor)
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"mode must be one of {UPSAMPLE_MODES}, got {mode!r}")
    if factor == 1:
        return x.clone()
    if mode == "nearest":
        return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def _mask_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"shape must be an image batch shape (N, C, H, W), got {shape}")
    return shape[0], shape[2], shape[3]


def box_mask(
    shape: Sequence[int], box_frac: float = 0.5, generator: torch.Generator | None = None
) -> Tensor:
    """Inpainting mask (N, 1, H, W) float32: 0 inside one random box per image, 1 elsewhere.

    The box is round(box_frac H) x round(box_frac W) pixels, its top-left corner uniform over
    the positions that keep it inside the image. m = 1 - 1_box; kept fraction
    1 - bh bw / (H W). shape: the image batch shape (N, C, H, W).
    """
    n, h, w = _mask_shape(shape)
    if not 0 <= box_frac <= 1:
        raise ValueError(f"box_frac must be in [0, 1], got {box_frac!r}")
    bh, bw = round(box_frac * h), round(box_frac * w)
    u = torch.rand(n, 2, generator=generator)
    top = (u[:, 0] * (h - bh + 1)).long().clamp_max(h - bh)
    left = (u[:, 1] * (w - bw + 1)).long().clamp_max(w - bw)
    rows = torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + bh)[:, None])  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + bw)[:, None])  # (N, W)
    hidden = in_rows[:, :, None] & in_cols[:, None, :]
    return (~hidden).float()[:, None]


def random_mask(
    shape: Sequence[int], keep_prob: float = 0.5, generator: torch.Generator | None = None
) -> Tensor:
    """Pixel-wise random mask (N, 1, H, W) float32: m[i, j] ~ Bernoulli(keep_prob), i.i.d.

    shape: the image batch shape (N, C, H, W); the same mask covers all channels.
    """
    n, h, w = _mask_shape(shape)
    if not 0 <= keep_prob <= 1:
        raise ValueError(f"keep_prob must be in [0, 1], got {keep_prob!r}")
    return (torch.rand(n, 1, h, w, generator=generator) < keep_prob).float()


def apply_mask(x: Tensor, mask: Tensor, fill: float = 0.0) -> Tensor:
    """y = m * x + (1 - m) * fill: observed pixels kept, missing ones set to ``fill``.

    x: (N, C, H, W); mask: {0, 1}, broadcastable to x (usually (N, 1, H, W)).
    """
    _check_images(x)
    try:
        torch.broadcast_shapes(mask.shape, x.shape)
    except RuntimeError as err:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to x {tuple(x.shape)}"
        ) from err
    m = mask.to(device=x.device, dtype=x.dtype)
    return m * x + (1 - m) * fill
