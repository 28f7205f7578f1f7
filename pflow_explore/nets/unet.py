"""A small UNet for 8x8 to 32x32 images, conditioned on time (and optionally a class).

The shape of DDPM's network (Ho et al. 2020) at a size a CPU trains in a minute:
``len(channel_mults)`` resolution levels, each with ``n_res`` residual blocks; one
stride-2 convolution down between levels and nearest-neighbour upsampling + conv back up;
the output of each level's blocks is concatenated onto the decoder at the same resolution;
optional self-attention at the lowest resolution. At base=32, channel_mults=(1, 2, 2) it
has about 0.84 M parameters.

Time convention: the caller's (t is only a conditioning input, see nets.embeddings).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pflow_explore.nets.embeddings import ClassEmbedding, TimeEmbedding, conditioning


def group_norm(channels: int, max_groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= max_groups that divides ``channels``."""
    return nn.GroupNorm(math.gcd(max_groups, channels), channels)


class ResBlock(nn.Module):
    """h -> h + conv(SiLU(FiLM(GN(conv(SiLU(GN(h)))), c))), with a 1x1 skip if widths differ.

    FiLM: GN(h) * (1 + gamma(c)) + beta(c), gamma and beta linear in the conditioning c
    (Perez et al. 2018; the "scale-shift norm" of Dhariwal & Nichol 2021).
    """

    def __init__(self, c_in: int, c_out: int, cond_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * c_out)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x: (B, c_in, H, W), c: (B, cond_dim) -> (B, c_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        gamma, beta = self.film(F.silu(c))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + gamma) + beta
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual: x + proj(attn(GN(x)))."""

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        if channels % heads:
            heads = 1
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        b, ch, hh, ww = x.shape
        q, k, v = (
            self.qkv(self.norm(x)).reshape(b, 3, self.heads, ch // self.heads, hh * ww).unbind(1)
        )
        # (B, heads, HW, C/heads) layout for scaled_dot_product_attention
        out = F.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )
        return x + self.proj(out.transpose(-1, -2).reshape(b, ch, hh, ww))


class UNet(nn.Module):
    """eps/v/x0-predictor f(x, t, y): (B, C, H, W) -> (B, C, H, W).

    H and W must be divisible by 2^(levels - 1), levels = len(channel_mults) (8, 16 and 32
    all work with the default three levels). Level i works at width base * channel_mults[i]
    and resolution H / 2^i. Conditioning c = TimeEmbedding(t) (+ ClassEmbedding(y)),
    injected into every ResBlock by FiLM. ``y=None`` or ``y == n_classes`` (the null class)
    is unconditional. The last convolution starts small (weights scaled by 0.1) so an
    untrained net outputs nearly 0 while every parameter still receives a gradient.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        n_classes: int | None = None,
        time_dim: int = 128,
        n_res: int = 1,
        attention: bool = True,
        dropout: float = 0.0,
        time_kind: str = "sinusoidal",
        log_scale: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1 or base < 1 or n_res < 1:
            raise ValueError(
                f"in_channels, base and n_res must be >= 1, got {in_channels}, {base}, {n_res}"
            )
        if len(channel_mults) < 1 or any(m < 1 for m in channel_mults):
            raise ValueError(f"channel_mults must be positive integers, got {channel_mults!r}")
        self.in_channels, self.n_classes = in_channels, n_classes
        self.levels = len(channel_mults)
        self.time_embedding = TimeEmbedding(time_dim, kind=time_kind, log_scale=log_scale)
        self.class_embedding = (
            ClassEmbedding(n_classes, time_dim) if n_classes is not None else None
        )
        widths = [base * m for m in channel_mults]

        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c = base
        for i, w in enumerate(widths):
            self.down.append(
                nn.ModuleList(
                    ResBlock(c if j == 0 else w, w, time_dim, dropout) for j in range(n_res)
                )
            )
            c = w
            if i < self.levels - 1:
                self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
        self.mid1 = ResBlock(c, c, time_dim, dropout)
        self.attn = SelfAttention(c) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, time_dim, dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(self.levels)):
            w = widths[i]
            self.up.append(
                nn.ModuleList(
                    ResBlock(c + w if j == 0 else w, w, time_dim, dropout) for j in range(n_res)
                )
            )
            c = w
            if i > 0:
                self.upsample.append(nn.Conv2d(w, widths[i - 1], 3, padding=1))
                c = widths[i - 1]
        self.norm_out = group_norm(c)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)
        self.conv_out.weight.data.mul_(0.1)
        self.conv_out.bias.data.zero_()

    def check_input(self, x: Tensor) -> None:
        """Raise ValueError unless x is (B, in_channels, H, W) with H, W divisible."""
        factor = 2 ** (self.levels - 1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % factor or w % factor:
            raise ValueError(
                f"image size {h}x{w} must be divisible by 2^(levels-1) = {factor} "
                f"(levels = len(channel_mults) = {self.levels}); e.g. 8, 16 or 32"
            )

    def condition(self, t: float | Tensor, y: Tensor | None, like: Tensor) -> Tensor:
        """The conditioning vector c (B, time_dim) for a batch shaped like ``like``."""
        return conditioning(self.time_embedding, self.class_embedding, t, y, like, "UNet")

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W), t: float, () or (B,), y: (B,) int64 or None -> (B, C, H, W)."""
        self.check_input(x)
        c = self.condition(t, y, x)
        h = self.conv_in(x)
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, c)
            skips.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
        h = self.mid2(self.attn(self.mid1(h, c)), c)
        for k, blocks in enumerate(self.up):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, c)
            if k < self.levels - 1:
                h = self.upsample[k](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
