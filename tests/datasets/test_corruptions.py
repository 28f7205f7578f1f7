"""datasets/corruptions.py: shapes, strength 0 is the identity, which leave the range."""

from __future__ import annotations

import pytest
import torch

from pflow_explore.datasets.corruptions import CORRUPTIONS, OUT_OF_RANGE, corrupt


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruptions(kind):
    x = 2 * torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) - 1
    assert torch.allclose(corrupt(x, kind, 0.0), x)
    y = corrupt(x, kind, 0.8, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and not torch.allclose(y, x)
    assert (y.abs().max() > 1.01) == (kind in OUT_OF_RANGE)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(torch.zeros(1, 1, 8, 8), "fog", 0.5)
    with pytest.raises(ValueError, match="strength"):
        corrupt(torch.zeros(1, 1, 8, 8), "blur", 1.5)
