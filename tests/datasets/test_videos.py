"""datasets/videos.py: shapes and seeding, real motion as a rigid warp (a pure translation
moves the content without changing it), fakes with per-frame statistics matched to the real
videos, and what each fake breaks."""

from __future__ import annotations

import pytest
import torch

from pflow_explore.datasets import videos as V


def make(kind: str, n: int = 60, seed: int = 0, **kw) -> torch.Tensor:
    return V.make_videos(kind, n, 8, 16, torch.Generator().manual_seed(seed), **kw)


def test_shapes_seeding_and_bad_kinds():
    a, b = make("real", 4), make("real", 4)
    assert a.shape == (4, 8, 16, 16) and torch.equal(a, b)
    assert V.flat(a).shape == (4, 8, 256)
    with pytest.raises(ValueError, match="kind"):
        make("deepfake", 2)
    with pytest.raises(ValueError, match="frames"):
        V.make_videos("real", 2, 2, 16, torch.Generator())


def test_a_translation_moves_the_content_without_changing_it():
    img = V.digit_images(16, "train")[:1]
    zero, scale = torch.zeros(1), torch.ones(1)
    still = V.render(img, torch.zeros(1, 2), zero, scale)
    moved = V.render(img, torch.tensor([[0.25, 0.0]]), zero, scale)  # 2 pixels right on 16 px
    assert torch.allclose(moved[0, :, 4:14], still[0, :, 2:12], atol=1e-5)


def test_fakes_match_the_real_per_frame_statistics():
    real = V.frame_statistics(make("real", 200, seed=1))
    for kind in V.FAKES:
        fake = V.frame_statistics(make(kind, 200, seed=2))
        # the mean over frames of each frame's mean and std agree within a few percent
        assert torch.allclose(fake.mean(0), real.mean(0), rtol=0.05, atol=0.02), kind


def test_each_fake_breaks_the_smooth_motion():
    dx = lambda v: (v[:, 1:] - v[:, :-1]).pow(2).mean()  # frame-to-frame change
    real, jitter = make("real", 100, noise=0.0), make("jitter", 100, noise=0.0)
    assert dx(jitter) > 2 * dx(real)
    base = make("real", 20, seed=5, noise=0.0)
    zoom = make("zoom", 20, seed=5, noise=0.0)
    assert torch.allclose(zoom[:, 0], base[:, 0], atol=1e-4)  # same first frame
    assert not torch.allclose(zoom[:, -1], base[:, -1], atol=1e-2)  # then it grows
