"""datasets/motions.py: clips start at zero, keep bone lengths (forward kinematics), differ
by motion, and are reproducible."""

from __future__ import annotations

import pytest
import torch

from pflow_explore.datasets import motions as mo


def test_clips_start_at_zero_keep_their_bones_and_are_reproducible():
    for kind in mo.MOTIONS:
        a = mo.motion_clips(4, kind, 10, torch.Generator().manual_seed(0), proportions=0.0)
        b = mo.motion_clips(4, kind, 10, torch.Generator().manual_seed(0), proportions=0.0)
        assert a.shape == (4, len(mo.JOINTS), 10, 2) and torch.equal(a, b)
        assert a[:, :, 0].abs().max() == 0 and a.abs().max() > 0.05
        rest = mo.rest_pose()
        x = rest[None, :, None] + a - a[:, :, :1]  # displacements relative to each frame 0
        lengths = lambda p: torch.stack(
            [(p[..., c, :, :] - p[..., q, :, :]).norm(dim=-1) for q, c in mo.BONES]
        )
        assert torch.allclose(lengths(x[..., :, :, :] - 0), lengths(x) * 1, atol=1e-5)
    lab = mo.labelled_clips(6, 8, torch.Generator().manual_seed(1))
    assert lab[1].tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ValueError, match="motion"):
        mo.motion_clips(1, "dance")


def test_forward_kinematics_places_bones_at_their_lengths():
    gen = torch.Generator().manual_seed(2)
    angles, lengths = (
        torch.randn(5, len(mo.BONES), generator=gen),
        torch.rand(len(mo.BONES), generator=gen) + 0.1,
    )
    x = mo.forward_kinematics(angles, lengths, torch.zeros(5, 2))
    for b, (p, c) in enumerate(mo.BONES):
        assert torch.allclose((x[:, c] - x[:, p]).norm(dim=-1), lengths[b].expand(5), atol=1e-6)
