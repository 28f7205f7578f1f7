"""The shipped digits classifier: a small CNN on 8x8 digits, and its feature extractor.

It plays the role Inception plays for FID on natural images: ``features`` gives the
penultimate activations that :func:`pflow_explore.metrics.digits_frechet_distance`
compares, and the logits score class-conditional samples. The weights ship in
``data/classifier/digits_cnn.pt`` (trained by ``benchmarks/train_digits_classifier.py``;
held-out accuracy in ``data/classifier/README.md``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FEATURE_DIM = 128
WEIGHTS_NAME = Path("classifier") / "digits_cnn.pt"
ENV_DATA = "PFLOW_DATA"
REPO_DATA = Path(__file__).resolve().parents[2] / "data"


def data_dir() -> Path:
    """The data folder: env ``PFLOW_DATA`` if set, else the repository's ``data/``."""
    env = os.environ.get(ENV_DATA)
    return Path(env) if env else REPO_DATA


class DigitsCNN(nn.Module):
    """(B, 1, S, S) digits in [-1, 1] -> logits (B, 10); ``features`` -> (B, 128).

    S = 8 is the native size. S = 16 or 32 (any multiple of 8) is average-pooled down to
    8x8 first (an S/8 x S/8 box filter), which undoes the bilinear upscaling of
    ``datasets.digits`` up to blur, so one classifier serves every image chapter.

    Layers: conv3x3(1->32) SiLU, conv3x3(32->64) SiLU, maxpool2 (4x4),
    conv3x3(64->64) SiLU, maxpool2 (2x2), linear(256->128) SiLU [= features],
    dropout, linear(128->10).
    """

    def __init__(self, dropout: float = 0.2) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.SiLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.SiLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(64 * 2 * 2, FEATURE_DIM)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURE_DIM, 10)

    @staticmethod
    def to_8x8(x: Tensor) -> Tensor:
        """(B, 1, S, S) with S a multiple of 8 -> (B, 1, 8, 8) by S/8 x S/8 average pooling."""
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"x must have shape (B, 1, S, S), got {tuple(x.shape)}")
        size = x.shape[-1]
        if size % 8:
            raise ValueError(f"image size must be a multiple of 8 (8, 16, 32), got {size}")
        return F.avg_pool2d(x, size // 8) if size > 8 else x

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations: (B, 1, S, S) -> (B, 128)."""
        h = self.conv(self.to_8x8(x))
        return F.silu(self.fc(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """Logits: (B, 1, S, S) -> (B, 10)."""
        return self.head(self.dropout(self.features(x)))


def load_digits_classifier(path: str | Path | None = None) -> DigitsCNN:
    """The shipped DigitsCNN in eval mode on the CPU (cached: one instance per file).

    path: a ``.pt`` state_dict; default ``<data>/classifier/digits_cnn.pt`` with ``<data>``
    from :func:`data_dir` (env ``PFLOW_DATA``), falling back to the copy shipped in the
    repository's ``data/`` when ``PFLOW_DATA`` points at a folder without one (a moved
    cache should not lose the classifier). Loaded with ``torch.load(weights_only=True)``.
    Parameters are frozen (gradients still flow to the input, for classifier guidance).
    The instance is shared by every caller: do not train it; ``copy.deepcopy`` it before
    moving it to another device.
    """
    if path is not None:
        candidates = [Path(path)]
    else:
        candidates = list(dict.fromkeys([data_dir() / WEIGHTS_NAME, REPO_DATA / WEIGHTS_NAME]))
    for candidate in candidates:
        if candidate.is_file():
            # the modification time is part of the cache key, so regenerated weights reload
            return _load(candidate.resolve(), candidate.stat().st_mtime_ns)
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"digits classifier weights not found (looked in {tried}); "
        "create them with: python benchmarks/train_digits_classifier.py"
    )


@lru_cache(maxsize=4)
def _load(path: Path, mtime_ns: int) -> DigitsCNN:
    model = DigitsCNN()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
