"""Synthetic videos: real ones that conserve probability flow, and fakes that do not.

Time convention: physical time (frames t = 0 .. T - 1).

Real: a digit (:mod:`pflow_explore.datasets.digits`) advected rigidly, a constant-velocity
translation plus a constant-rate rotation (both divergence-free warps), with Gaussian sensor
noise. Frames are rendered by bilinear sampling of the digit on a canvas of background -1.

Fakes, each built from the same kind of content and motion and then matched to real per-frame
statistics (every fake frame is affinely rescaled to the mean and standard deviation of the
real frame it was made from, :func:`match_moments`), so a detector that looks at single
frames' intensity statistics learns nothing:

- ``flicker``: a real video plus an independent smooth random brightness field per frame;
- ``crossfade``: (1 - w_t) A_t + w_t B_t between two real videos, w_t = t / (T - 1)
  (content appearing from nowhere);
- ``jitter``: every frame at an independently re-sampled pose (no continuous motion);
- ``zoom``: the real motion plus a growing scale factor (a compressive flow, div v != 0).

Videos are (B, T, S, S) tensors in about [-1, 1]; :func:`flat` gives (B, T, S^2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pflow_explore.datasets.digits import digits, upscale

FAKES = ("flicker", "crossfade", "jitter", "zoom")
KINDS = ("real", *FAKES)


def digit_images(size: int, split: str) -> Tensor:
    """Digits (N, 1, size, size) in [-1, 1] (8x8 digits upscaled for sizes beyond 32)."""
    base = min(size, 32) if size in (8, 16, 32) else 32
    images = digits(base, split)[0]
    return upscale(images, size) if size != base else images


def render(images: Tensor, shift: Tensor, angle: Tensor, scale: Tensor) -> Tensor:
    """Frames (N, S, S) of images (N, 1, S, S) under the pose x -> R(angle) x / scale + shift
    (normalized coordinates [-1, 1]): the image content moved by ``shift`` (N, 2), rotated
    by ``angle`` (N,), magnified by ``scale`` (N,); background -1."""
    c, s = torch.cos(angle), torch.sin(angle)
    # grid_sample maps output coords to input coords: the inverse pose
    rot = (
        torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2) / scale[:, None, None]
    )
    offset = -(rot @ shift[:, :, None])
    theta = torch.cat([rot, offset], -1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(
        images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out[:, 0] - 1


def _poses(
    n: int, frames: int, generator: torch.Generator, speed: tuple[float, float], spin: float
) -> tuple[Tensor, Tensor]:
    """Constant-velocity shifts (n, T, 2) and constant-rate angles (n, T)."""
    u = lambda *shape: torch.rand(*shape, generator=generator)
    start = (u(n, 2) - 0.5) * 0.3
    direction = u(n) * 2 * math.pi
    v = (speed[0] + (speed[1] - speed[0]) * u(n))[:, None] * torch.stack(
        [torch.cos(direction), torch.sin(direction)], -1
    )
    t = torch.arange(frames, dtype=torch.float32)
    shifts = start[:, None] + t[None, :, None] * v[:, None]
    angle0, omega = (u(n) - 0.5) * 0.6, (u(n) - 0.5) * 2 * spin
    return shifts, angle0[:, None] + omega[:, None] * t[None]


def _render_videos(images: Tensor, shifts: Tensor, angles: Tensor, scales: Tensor) -> Tensor:
    n, frames = angles.shape
    rep = images.repeat_interleave(frames, 0)
    out = render(rep, shifts.reshape(-1, 2), angles.reshape(-1), scales.reshape(-1))
    return out.reshape(n, frames, *out.shape[-2:])


def match_moments(frames: Tensor, reference: Tensor) -> Tensor:
    """Each frame (..., S, S) affinely rescaled to the mean and std of the matching
    reference frame."""
    dims = (-2, -1)
    m, s = frames.mean(dims, keepdim=True), frames.std(dims, keepdim=True).clamp_min(1e-6)
    rm, rs = reference.mean(dims, keepdim=True), reference.std(dims, keepdim=True)
    return (frames - m) / s * rs + rm


def make_videos(
    kind: str,
    n: int,
    frames: int,
    size: int,
    generator: torch.Generator,
    split: str = "train",
    noise: float = 0.05,
    speed: tuple[float, float] = (0.04, 0.08),
    spin: float = 0.06,
    base_scale: float = 0.8,
    flicker: float = 0.5,
    zoom_rate: float = 0.06,
) -> Tensor:
    """``n`` videos (n, frames, size, size) of ``kind`` (:data:`KINDS`) from digits of
    ``split``; sensor noise of std ``noise`` on every frame (after moment matching)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if frames < 3 or n < 1:
        raise ValueError(f"need frames >= 3 and n >= 1, got {frames}, {n}")
    pool = digit_images(size, split)
    pick = lambda: pool[torch.randint(len(pool), (n,), generator=generator)]
    images = pick()
    shifts, angles = _poses(n, frames, generator, speed, spin)
    scales = torch.full((n, frames), base_scale)
    real = _render_videos(images, shifts, angles, scales)
    if kind == "real":
        video = real
    elif kind == "flicker":
        coarse = torch.randn(n * frames, 1, 3, 3, generator=generator)
        field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        video = match_moments(real + flicker * field.reshape(n, frames, size, size), real)
    elif kind == "crossfade":
        other_shifts, other_angles = _poses(n, frames, generator, speed, spin)
        other = _render_videos(pick(), other_shifts, other_angles, scales)
        w = torch.linspace(0, 1, frames)[None, :, None, None]
        video = match_moments((1 - w) * real + w * other, real)
    elif kind == "jitter":
        # every frame posed independently: shuffle the poses of the whole batch
        flat_shift, flat_angle = shifts.reshape(-1, 2), angles.reshape(-1)
        perm = torch.randperm(len(flat_angle), generator=generator)
        video = _render_videos(
            images,
            flat_shift[perm].reshape(n, frames, 2),
            flat_angle[perm].reshape(n, frames),
            scales,
        )
    else:  # zoom
        t = torch.arange(frames, dtype=torch.float32)
        zoom_scales = base_scale * (1 + zoom_rate * t)[None].expand(n, frames)
        video = match_moments(_render_videos(images, shifts, angles, zoom_scales), real)
    return video + noise * torch.randn(video.shape, generator=generator)


def single_frames(
    n: int,
    size: int,
    generator: torch.Generator,
    split: str = "train",
    noise: float = 0.05,
    base_scale: float = 0.8,
) -> Tensor:
    """``n`` frames (n, size, size) at the poses real videos visit (for fitting a frame
    model): the real generator's frames at random times of 8-frame videos."""
    v = make_videos("real", n, 8, size, generator, split, noise, base_scale=base_scale)
    t = torch.randint(8, (n,), generator=generator)
    return v[torch.arange(n), t]


def flat(videos: Tensor) -> Tensor:
    """(B, T, S, S) -> (B, T, S^2)."""
    return videos.reshape(*videos.shape[:2], -1)


def frame_statistics(videos: Tensor) -> Tensor:
    """Per-frame (mean, std) of (B, T, S, S) videos: (B T, 2)."""
    f = videos.reshape(-1, videos.shape[-2] * videos.shape[-1])
    return torch.stack([f.mean(1), f.std(1)], -1)
