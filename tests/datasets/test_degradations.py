from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from pflow_explore.datasets.degradations import (
    add_noise,
    apply_mask,
    box_mask,
    downsample,
    gaussian_blur,
    gaussian_kernel_1d,
    random_mask,
    upsample,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _direct_blur(img: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """2D convolution with the (non-separated) Gaussian kernel, mirror boundary, via scipy."""
    k = np.arange(-radius, radius + 1)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    kernel = np.exp(-(kx**2 + ky**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    # scipy "mirror" reflects about the edge pixel without repeating it (numpy/torch "reflect").
    return ndimage.convolve(img, kernel, mode="mirror")


@pytest.mark.parametrize("sigma,size", [(0.7, 12), (1.5, 16), (2.0, 9)])
def test_blur_matches_direct_2d_convolution(sigma, size):
    x = torch.randn(2, 3, size, size + 3, generator=gen(0), dtype=torch.float64)
    y = gaussian_blur(x, sigma)
    radius = min(int(np.ceil(3 * sigma)), size - 1)
    for n in range(2):
        for c in range(3):
            ref = _direct_blur(x[n, c].numpy(), sigma, radius)
            np.testing.assert_allclose(y[n, c].numpy(), ref, rtol=1e-10, atol=1e-12)
    assert y.shape == x.shape and y.dtype == x.dtype


def test_blur_explicit_kernel_size_and_constant_image():
    x = torch.full((1, 1, 10, 10), 0.3)
    torch.testing.assert_close(gaussian_blur(x, 1.2), x)
    z = torch.randn(1, 1, 10, 10, generator=gen(1), dtype=torch.float64)
    ref = _direct_blur(z[0, 0].numpy(), 1.0, 2)
    np.testing.assert_allclose(gaussian_blur(z, 1.0, kernel_size=5)[0, 0].numpy(), ref, rtol=1e-10)
    # A cosine symmetric about both edges: its mirror extension is smooth, so the blur keeps
    # the image mean (to within the truncation of the kernel).
    i = torch.arange(32, dtype=torch.float64)
    smooth = torch.cos(2 * np.pi * i / 31)[None, None, :, None] * torch.ones(1, 1, 32, 32)
    assert abs(float(gaussian_blur(smooth, 1.0).mean() - smooth.mean())) < 1e-3


def test_blur_sigma_zero_is_identity_and_bad_input():
    x = torch.randn(2, 1, 8, 8, generator=gen(2))
    y = gaussian_blur(x, 0.0)
    assert torch.equal(y, x) and y is not x
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(x, -1.0)
    with pytest.raises(ValueError, match="kernel_size must be at most 15"):
        gaussian_blur(x, 1.0, kernel_size=17)
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(x, 1.0, kernel_size=4)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        gaussian_blur(x[0], 1.0)


def test_gaussian_kernel_1d():
    g = gaussian_kernel_1d(1.3)
    assert g.shape == (2 * 4 + 1,)
    k = np.arange(-4, 5)
    ref = np.exp(-(k**2) / (2 * 1.3**2))
    np.testing.assert_allclose(g.numpy(), ref / ref.sum(), rtol=1e-12)


def test_add_noise_std_by_monte_carlo():
    x = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8).repeat(500, 3, 1, 1)
    std = 0.37
    y = add_noise(x, std, gen(3))
    resid = (y - x).double()
    n = resid.numel()
    assert abs(float(resid.mean())) < 5 * std / n**0.5
    # sd of the sample std is ~ std / sqrt(2 n).
    assert abs(float(resid.std()) - std) < 5 * std / (2 * n) ** 0.5
    assert torch.equal(y, add_noise(x, std, gen(3)))
    assert not torch.equal(y, add_noise(x, std, gen(4)))
    assert torch.equal(add_noise(x, 0.0), x)
    with pytest.raises(ValueError, match="std"):
        add_noise(x, -0.1)


def test_downsample_is_block_average():
    x = torch.randn(2, 3, 12, 18, generator=gen(5), dtype=torch.float64)
    y = downsample(x, 3)
    ref = x.numpy().reshape(2, 3, 4, 3, 6, 3).mean(axis=(3, 5))
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12)
    with pytest.raises(ValueError, match="factor must divide the image size 12x18"):
        downsample(x, 4)
    with pytest.raises(ValueError, match="factor must be an int >= 1"):
        downsample(x, 0)


@pytest.mark.parametrize("factor", [2, 4])
def test_down_then_nearest_up_is_identity_on_piecewise_constant(factor):
    coarse = torch.randn(2, 1, 4, 5, generator=gen(6))
    fine = coarse.repeat_interleave(factor, 2).repeat_interleave(factor, 3)  # piecewise const
    back = upsample(downsample(fine, factor), factor, mode="nearest")
    torch.testing.assert_close(back, fine)
    torch.testing.assert_close(downsample(fine, factor), coarse)


def test_bilinear_upsample_shape_and_constant_and_bad_mode():
    x = torch.randn(1, 2, 5, 7, generator=gen(7))
    y = upsample(x, 3, mode="bilinear")
    assert y.shape == (1, 2, 15, 21)
    c = torch.full((1, 1, 4, 4), -0.25)
    torch.testing.assert_close(upsample(c, 2), torch.full((1, 1, 8, 8), -0.25))
    # Bilinear up then block average returns the original up to an interpolation error
    # that vanishes on linear ramps away from the border.
    ramp = torch.arange(16.0).reshape(1, 1, 4, 4)
    back = downsample(upsample(ramp, 2), 2)
    torch.testing.assert_close(back[..., 1:-1, 1:-1], ramp[..., 1:-1, 1:-1])
    with pytest.raises(ValueError, match="mode must be one of"):
        upsample(x, 2, mode="bicubic")


@pytest.mark.parametrize("frac,size", [(0.5, 16), (0.25, 32), (0.0, 8), (1.0, 8)])
def test_box_mask_is_one_box_of_the_right_size(frac, size):
    m = box_mask((50, 3, size, size), frac, gen(8))
    assert m.shape == (50, 1, size, size) and m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    side = round(frac * size)
    hidden = 1 - m[:, 0]
    assert (hidden.sum((1, 2)) == side * side).all()
    for h in hidden:
        rows = torch.nonzero(h.any(1)).squeeze(1)
        cols = torch.nonzero(h.any(0)).squeeze(1)
        # The hidden pixels form one contiguous side x side rectangle.
        assert len(rows) == side and len(cols) == side
        if side:
            assert rows[-1] - rows[0] == side - 1 and cols[-1] - cols[0] == side - 1
    keep = float(m.mean())
    assert keep == pytest.approx(1 - side**2 / size**2)
    if 0 < side < size:
        # The box moves: not every mask in the batch is the same.
        assert not (m == m[:1]).all()


def test_random_mask_keep_fraction():
    m = random_mask((100, 3, 16, 16), 0.3, gen(9))
    assert m.shape == (100, 1, 16, 16)
    assert set(m.unique().tolist()) == {0.0, 1.0}
    n = m.numel()
    sd = (0.3 * 0.7 / n) ** 0.5
    assert abs(float(m.mean()) - 0.3) < 5 * sd
    assert torch.equal(m, random_mask((100, 3, 16, 16), 0.3, gen(9)))
    with pytest.raises(ValueError, match="keep_prob"):
        random_mask((1, 1, 4, 4), 1.5)
    with pytest.raises(ValueError, match="shape"):
        random_mask((4, 4), 0.5)
    with pytest.raises(ValueError, match="box_frac"):
        box_mask((1, 1, 4, 4), -0.1)


def test_apply_mask():
    x = torch.randn(4, 3, 8, 8, generator=gen(10))
    m = random_mask(x.shape, 0.5, gen(11))
    y = apply_mask(x, m, fill=-1.0)
    keep = m.expand_as(x).bool()
    assert torch.equal(y[keep], x[keep])
    assert (y[~keep] == -1.0).all()
    with pytest.raises(ValueError, match="does not broadcast"):
        apply_mask(x, torch.ones(4, 1, 7, 8))
