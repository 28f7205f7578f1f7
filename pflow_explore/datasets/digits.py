"""scikit-learn's 8x8 handwritten digits (1797 images, shipped offline) in [-1, 1].

Also 16x16 and 32x32 versions: bilinear upscaling, optionally with light augmentation
(random sub-pixel shifts and small scalings), so image chapters have something to learn
at UNet-friendly sizes without any download.

:func:`flat_digits` gives the split as flat vectors (N, size^2) for models on R^d.

The train/test split is fixed (a seeded stratified 80/20 split), so every chapter and the
shipped digits classifier agree on what "held out" means.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SIZES = (8, 16, 32)
SPLITS = ("train", "test", "all")
_SPLIT_SEED = 0
_TEST_FRACTION = 0.2


def _sklearn_digits_file() -> Path | None:
    """scikit-learn's ``datasets/data/digits.csv.gz`` (1797 rows: 64 pixels 0..16, then the
    label), found without importing scikit-learn, which costs a kernel ~0.9 s (and every
    dashboard page with digits that much before its first plot); None where it is not."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec and spec.submodule_search_locations) or []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float64 in 0..16, labels (1797,) int64), as ``load_digits()``
    gives them; read from its file where possible, else through scikit-learn."""
    path = _sklearn_digits_file()
    if path is not None:
        try:
            with gzip.open(path, "rt") as fh:
                data = np.loadtxt(fh, delimiter=",")
            if data.shape == (1797, 65):
                return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
        except (OSError, ValueError):
            pass  # a file we cannot read: scikit-learn's own loader says what is wrong
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


@lru_cache(maxsize=1)
def _raw() -> tuple[Tensor, Tensor]:
    images, labels = _read_digits()
    images = torch.from_numpy(images.astype(np.float32))  # (1797, 8, 8), values 0..16
    images = images[:, None] / 8.0 - 1.0  # (N, 1, 8, 8) in [-1, 1]
    return images, torch.from_numpy(labels)


@lru_cache(maxsize=1)
def _test_mask() -> Tensor:
    """Boolean (1797,) mask of the held-out images: 20% of every class, seeded."""
    _, labels = _raw()
    rng = np.random.default_rng(_SPLIT_SEED)
    mask = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels.numpy() == c)
        rng.shuffle(idx)
        mask[idx[: int(round(_TEST_FRACTION * len(idx)))]] = True
    return torch.from_numpy(mask)


def upscale(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of (N, C, h, w) images to (N, C, size, size), values kept in range."""
    if images.shape[-1] == size:
        return images.clone()
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return out.clamp(-1.0, 1.0)


def augment(
    images: Tensor, generator: torch.Generator | None = None, strength: float = 0.06
) -> Tensor:
    """Light augmentation: random shift (up to ``strength`` of the width), scaling 1 +/- strength.

    images: (N, C, H, W) in [-1, 1] (background -1). Implemented with an affine grid so it
    works at any size; out-of-frame pixels are filled with the background value -1.
    """
    n = images.shape[0]
    scale = 1 + strength * (2 * torch.rand(n, generator=generator) - 1)
    shift = strength * 2 * (2 * torch.rand(n, 2, generator=generator) - 1)
    # Build theta where the images live so CUDA / float64 batches work too.
    theta = torch.zeros(n, 2, 3, dtype=images.dtype, device=images.device)
    scale, shift = scale.to(theta), shift.to(theta)
    theta[:, 0, 0] = 1 / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(
        images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return (out - 1).clamp(-1.0, 1.0)


def digits(
    size: int = 8,
    split: str = "all",
    augmented: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Digits images (N, 1, size, size) float32 in [-1, 1] and labels (N,) int64.

    size: 8 (original), 16 or 32 (bilinear upscaling); split: "train" (1438), "test"
    (359) or "all" (1797); augmented: apply :func:`augment` (random, seeded by ``generator``).
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images, labels = _raw()
    if split != "all":
        keep = _test_mask() if split == "test" else ~_test_mask()
        images, labels = images[keep], labels[keep]
    images = upscale(images, size)
    if augmented:
        images = augment(images, generator)
    return images, labels.clone()


def flat_digits(
    size: int = 8, copies: int = 0, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The split as flat vectors for models on R^d, d = size^2, in [-1, 1]:
    (train (N, d), train labels (N,), held-out test (M, d)).

    copies >= 1: the training split is ``copies`` augmented copies of itself (:func:`augment`
    drawing from ``generator``, copy after copy; N = copies x 1438); 0: the images as they are.
    """
    if int(copies) != copies or copies < 0:
        raise ValueError(f"copies must be an integer >= 0, got {copies!r}")
    images, labels = digits(size, "train")
    if copies:
        images = torch.cat([augment(images, generator) for _ in range(copies)])
        labels = labels.repeat(copies)
    test, _ = digits(size, "test")
    return images.flatten(1), labels, test.flatten(1)
