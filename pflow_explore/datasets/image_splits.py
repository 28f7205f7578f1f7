"""The train and test images of the image-restoration chapters (super-resolution, mean-reverting
restoration): one function, so that both draw exactly the same pictures for the same settings.

    x = split_images("digits", 16, "test", seed=0)     # (359, 1, 16, 16) in [-1, 1]
    x = split_images("patches", 64, "train", seed=0)   # (20000, 1, 64, 64) gray photo crops
    x = settings_images(s, "train")                    # the same from a chapter's settings

``"digits"``: the fixed train (1438) / test (359) split of :func:`digits.digits` (no
randomness, ``seed`` unused). ``"patches"``: :func:`patches.photo_patches`, 20000 crops for
"train" drawn with ``torch.Generator().manual_seed(seed)``, 2000 for "test" with ``seed + 1``
(the seeds the chapters used before this module, so their cached artifacts still match).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pflow_explore.datasets.digits import digits
from pflow_explore.datasets.patches import photo_patches

__all__ = ["DATA", "PATCHES", "settings_images", "split_images"]

DATA = ("digits", "patches")
PATCHES = {"train": (20000, 0), "test": (2000, 1)}  # split -> (number of crops, seed offset)


def split_images(data: str, size: int, split: str, seed: int) -> Tensor:
    """Images (N, 1, size, size) float32 in [-1, 1] of one split ("train" or "test") of
    ``data`` (one of :data:`DATA`); see the module docstring for N and the seeds."""
    if data not in DATA:
        raise ValueError(f"data must be one of {DATA}, got {data!r}")
    if split not in PATCHES:
        raise ValueError(f"split must be one of {tuple(PATCHES)}, got {split!r}")
    if data == "digits":
        return digits(size, split)[0]
    n, offset = PATCHES[split]
    return photo_patches(n, size, generator=torch.Generator().manual_seed(seed + offset))


def settings_images(s: Any, split: str) -> Tensor:
    """:func:`split_images` at a chapter's settings ``s`` (its fields ``data``, ``image_size``
    and ``seed``): images (N, 1, S, S) in [-1, 1], digits (train 1438 / test 359) or photo
    patches. The ``images(s, split)`` of both image-restoration chapters."""
    return split_images(s.data, s.image_size, split, s.seed)
