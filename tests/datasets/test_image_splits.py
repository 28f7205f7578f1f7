"""image_splits.split_images: the same pictures the two image chapters drew inline before."""

from __future__ import annotations

import pytest
import torch

from pflow_explore.datasets.digits import digits
from pflow_explore.datasets.image_splits import split_images
from pflow_explore.datasets.patches import photo_patches


def test_digits_are_the_fixed_split_whatever_the_seed():
    test = split_images("digits", 8, "test", seed=5)
    assert test.shape == (359, 1, 8, 8)
    assert torch.equal(test, digits(8, "test")[0])
    assert torch.equal(split_images("digits", 8, "train", seed=0), digits(8, "train")[0])
    assert torch.equal(test, split_images("digits", 8, "test", seed=6))


def test_patches_are_seeded_by_split():
    train, test = (split_images("patches", 8, split, seed=7) for split in ("train", "test"))
    assert train.shape == (20000, 1, 8, 8) and test.shape == (2000, 1, 8, 8)
    # the chapters' former inline draws: seed + 0 for train, seed + 1 for test
    gen = lambda k: torch.Generator().manual_seed(7 + k)  # noqa: E731
    assert torch.equal(train, photo_patches(20000, 8, generator=gen(0)))
    assert torch.equal(test, photo_patches(2000, 8, generator=gen(1)))
    assert train.min() >= -1 and train.max() <= 1


def test_unknown_data_or_split_is_refused():
    with pytest.raises(ValueError, match="data must be one of .*'mnist'"):
        split_images("mnist", 8, "train", seed=0)
    with pytest.raises(ValueError, match="split must be one of .*'all'"):
        split_images("patches", 8, "all", seed=0)
