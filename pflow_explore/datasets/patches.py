"""Random crops of natural photographs: small images with real-world statistics, offline.

The photographs are scikit-image's sample images, which ship inside the scikit-image wheel
(no download). Gray patches come from any of them (colour photos are converted with
``skimage.color.rgb2gray``); colour patches only from the colour photos.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import Tensor

# Every sample image that loads offline and is a natural photograph or micrograph (``horse``
# is left out: it is a binary silhouette).
GRAY_PHOTOS: tuple[str, ...] = (
    "brick", "camera", "clock", "coins", "grass", "gravel", "moon", "page", "text", "cell",
    "microaneurysms",
)  # fmt: skip
COLOR_PHOTOS: tuple[str, ...] = (
    "astronaut", "cat", "chelsea", "coffee", "rocket", "colorwheel", "hubble_deep_field",
    "immunohistochemistry", "retina",
)  # fmt: skip
PHOTOS: tuple[str, ...] = GRAY_PHOTOS + COLOR_PHOTOS

DEFAULT_GRAY: tuple[str, ...] = (
    "camera", "astronaut", "coffee", "chelsea", "coins", "moon", "brick", "grass", "gravel",
    "rocket",
)  # fmt: skip
DEFAULT_COLOR: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "cat")


@lru_cache(maxsize=64)
def photo(name: str, gray: bool = True) -> Tensor:
    """One sample photograph as a (C, H, W) float32 tensor in [-1, 1] (C = 1 if gray, else 3).

    Pixel value v in 0..255 maps to v / 127.5 - 1; gray from colour is
    ``rgb2gray`` (0.2125 R + 0.7154 G + 0.0721 B) mapped the same way.
    Cached: do not modify the returned tensor in place.
    """
    import numpy as np
    import skimage.color
    import skimage.data

    if name not in PHOTOS:
        raise ValueError(f"unknown image {name!r}; valid images: {', '.join(PHOTOS)}")
    if not gray and name not in COLOR_PHOTOS:
        raise ValueError(
            f"image {name!r} is grayscale; with gray=False use one of: {', '.join(COLOR_PHOTOS)}"
        )
    img = getattr(skimage.data, name)()
    if img.ndim == 3:
        img = img[..., :3]  # drop an alpha channel if a future version adds one
        if gray:
            img = skimage.color.rgb2gray(img)  # float in [0, 1]
        else:
            img = img.astype(np.float64) / 255.0
    else:
        img = img.astype(np.float64) / 255.0
    t = torch.from_numpy(np.ascontiguousarray(img)).float() * 2.0 - 1.0
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def photo_patches(
    n: int,
    size: int = 8,
    gray: bool = True,
    images: Sequence[str] | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """n random square crops (n, C, size, size) float32 in [-1, 1]; C = 1 if gray else 3.

    Each patch picks an image uniformly from ``images`` (default :data:`DEFAULT_GRAY` or
    :data:`DEFAULT_COLOR`), then a top-left corner uniformly among the H - size + 1 by
    W - size + 1 positions: patch = image[:, r:r+size, c:c+size].
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (number of patches) must be an int >= 1, got {n!r}")
    if isinstance(images, str):
        raise ValueError(f"images must be a sequence of names, e.g. [{images!r}], not a string")
    names = tuple(images) if images is not None else (DEFAULT_GRAY if gray else DEFAULT_COLOR)
    if not names:
        raise ValueError(f"images must name at least one image; valid images: {', '.join(PHOTOS)}")
    pics = [photo(name, gray) for name in names]
    smallest = min(min(p.shape[-2:]) for p in pics)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= smallest:
        raise ValueError(
            f"size must be an int between 1 and {smallest} (the smallest side among the "
            f"chosen images), got {size!r}"
        )
    which = torch.randint(len(pics), (n,), generator=generator)
    u = torch.rand(n, 2, generator=generator)
    out = torch.empty(n, pics[0].shape[0], size, size)
    offsets = torch.arange(size)
    for k, pic in enumerate(pics):
        idx = torch.nonzero(which == k).squeeze(1)
        if idx.numel() == 0:
            continue
        h, w = pic.shape[-2:]
        top = (u[idx, 0] * (h - size + 1)).long().clamp_max(h - size)
        left = (u[idx, 1] * (w - size + 1)).long().clamp_max(w - size)
        rows = (top[:, None] + offsets)[:, :, None]  # (m, size, 1)
        cols = (left[:, None] + offsets)[:, None, :]  # (m, 1, size)
        out[idx] = pic[:, rows, cols].permute(1, 0, 2, 3)  # (C, m, s, s) -> (m, C, s, s)
    return out
