from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from pflow_explore.datasets.patches import (
    COLOR_PHOTOS,
    DEFAULT_COLOR,
    DEFAULT_GRAY,
    PHOTOS,
    photo,
    photo_patches,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _find_crop(img: np.ndarray, patch: np.ndarray) -> bool:
    """Whether ``patch`` (C, s, s) occurs as a crop of ``img`` (C, H, W), by brute force."""
    s = patch.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(img, (s, s), axis=(1, 2))
    # windows: (C, H - s + 1, W - s + 1, s, s)
    hit = np.all(np.isclose(windows, patch[:, None, None], atol=1e-6), axis=(0, 3, 4))
    return bool(hit.any())


def test_defaults_are_offline_photos():
    assert set(DEFAULT_GRAY) <= set(PHOTOS) and set(DEFAULT_COLOR) <= set(COLOR_PHOTOS)
    assert "horse" not in PHOTOS


@pytest.mark.parametrize("gray,channels", [(True, 1), (False, 3)])
def test_shape_range_and_seeding(gray, channels):
    p = photo_patches(200, size=8, gray=gray, generator=gen(0))
    assert p.shape == (200, channels, 8, 8) and p.dtype == torch.float32
    assert p.min() >= -1 and p.max() <= 1
    assert p.std() > 0.1  # real image content, not constant
    assert torch.equal(p, photo_patches(200, size=8, gray=gray, generator=gen(0)))
    assert not torch.equal(p, photo_patches(200, size=8, gray=gray, generator=gen(1)))


def test_patches_are_crops_of_the_named_image():
    p = photo_patches(5, size=6, images=["camera"], generator=gen(2))
    cam = skimage.data.camera().astype(np.float64)[None] / 127.5 - 1  # independent loading
    for patch in p.double().numpy():
        assert _find_crop(cam, patch)
    c = photo_patches(3, size=5, gray=False, images=["chelsea"], generator=gen(3))
    cat = skimage.data.chelsea().astype(np.float64).transpose(2, 0, 1) / 127.5 - 1
    for patch in c.double().numpy():
        assert _find_crop(cat, patch)


def test_crop_positions_are_uniform():
    s = 8
    img = skimage.data.microaneurysms().astype(np.float64)[None] / 127.5 - 1  # 102 x 102
    windows = np.lib.stride_tricks.sliding_window_view(img, (s, s), axis=(1, 2))[0]
    p = photo_patches(300, size=s, images=["microaneurysms"], generator=gen(5)).double().numpy()
    tops, lefts = [], []
    for patch in p[:, 0]:
        err = np.abs(windows - patch).max(axis=(2, 3))
        r, c = np.unravel_index(np.argmin(err), err.shape)
        assert err[r, c] < 1e-6
        tops.append(r)
        lefts.append(c)
    positions = np.array([tops, lefts], dtype=float)  # each uniform on 0..94
    n_pos = 102 - s + 1
    mean, sd = (n_pos - 1) / 2, np.sqrt((n_pos**2 - 1) / 12)
    assert (np.abs(positions.mean(1) - mean) < 4 * sd / np.sqrt(300)).all()
    assert positions.min() >= 0 and positions.max() <= n_pos - 1
    assert positions.min(1).max() < 5 and positions.max(1).min() > n_pos - 6


def test_gray_conversion_and_full_size_crops():
    img = photo("coins")  # already gray: exact rescaling of the uint8 values
    raw = skimage.data.coins()
    np.testing.assert_allclose(img[0].numpy(), raw / 127.5 - 1, atol=1e-6)
    ast = photo("astronaut", gray=True)
    rgb = skimage.data.astronaut().astype(np.float64) / 255
    luma = 0.2125 * rgb[..., 0] + 0.7154 * rgb[..., 1] + 0.0721 * rgb[..., 2]
    np.testing.assert_allclose(ast[0].numpy(), 2 * luma - 1, atol=1e-5)
    # Full-size crops of a tiny image list: size = smallest side is allowed.
    h = min(raw.shape)
    assert photo_patches(2, size=h, images=["coins"], generator=gen(4)).shape == (2, 1, h, h)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="unknown image 'lena'; valid images: brick, camera"):
        photo_patches(4, images=["camera", "lena"])
    with pytest.raises(ValueError, match="grayscale; with gray=False use one of: astronaut"):
        photo_patches(4, gray=False, images=["camera"])
    with pytest.raises(ValueError, match="size must be an int between 1 and 303"):
        photo_patches(4, size=400, images=["coins", "camera"])
    with pytest.raises(ValueError, match="size must be"):
        photo_patches(4, size=0)
    with pytest.raises(ValueError, match="n .* must be an int >= 1"):
        photo_patches(0)
    with pytest.raises(ValueError, match="not a string"):
        photo_patches(4, images="camera")
    with pytest.raises(ValueError, match="at least one image"):
        photo_patches(4, images=[])
