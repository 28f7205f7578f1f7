from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.datasets import load_digits

from pflow_explore.datasets.digits import augment, digits, flat_digits, upscale


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _raw_indices(images: torch.Tensor) -> np.ndarray:
    """Index into sklearn's digits of every 8x8 image (the 1797 images are all distinct)."""
    bunch = load_digits()
    lookup = {
        (img / 8.0 - 1.0).astype(np.float32).tobytes(): i for i, img in enumerate(bunch.images)
    }
    assert len(lookup) == len(bunch.images)
    return np.array([lookup[img[0].numpy().tobytes()] for img in images])


@pytest.mark.parametrize("size", [8, 16, 32])
def test_sizes_range_and_dtype(size):
    x, y = digits(size, "test")
    assert x.shape == (359, 1, size, size) and x.dtype == torch.float32
    assert y.shape == (359,) and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    assert x.min() == -1 and x.max() > 0.9  # background -1, ink near +1


def test_original_images_and_labels_match_sklearn():
    x, y = digits(8, "all")
    bunch = load_digits()
    np.testing.assert_array_equal(x[:, 0].numpy(), (bunch.images / 8.0 - 1).astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), bunch.target)


def test_split_sizes_disjoint_and_stratified():
    xtr, ytr = digits(8, "train")
    xte, yte = digits(8, "test")
    assert len(xtr) == 1438 and len(xte) == 359
    itr, ite = _raw_indices(xtr), _raw_indices(xte)
    assert len(set(itr)) == len(itr) and len(set(ite)) == len(ite)
    assert set(itr).isdisjoint(ite)
    assert set(itr) | set(ite) == set(range(1797))
    target = load_digits().target
    np.testing.assert_array_equal(ytr.numpy(), target[itr])
    np.testing.assert_array_equal(yte.numpy(), target[ite])
    # Labels 0..9, balanced-ish, and every class held out at ~20%.
    for labels in (ytr, yte):
        counts = torch.bincount(labels, minlength=10)
        assert len(counts) == 10
        assert (counts.double() / len(labels) - 0.1).abs().max() < 0.015
    frac = torch.bincount(yte, minlength=10).double() / torch.bincount(
        torch.cat([ytr, yte]), minlength=10
    )
    assert (frac - 0.2).abs().max() < 0.01
    # The split is fixed: a second call returns the same images.
    assert torch.equal(digits(8, "test")[0], xte)


def test_upscale_is_bilinear_with_half_pixel_centres():
    x, _ = digits(8, "test")
    for size in (16, 32):
        up = upscale(x, size)
        assert torch.equal(up, digits(size, "test")[0])
        # Fine pixel i samples the coarse image at (i + 1/2) / f - 1/2, clamped at the edges.
        c = np.clip((np.arange(size) + 0.5) * 8 / size - 0.5, 0, 7)
        rr, cc = np.meshgrid(c, c, indexing="ij")
        for k in range(0, len(x), 50):
            ref = ndimage.map_coordinates(x[k, 0].double().numpy(), [rr, cc], order=1)
            np.testing.assert_allclose(up[k, 0].numpy(), np.clip(ref, -1, 1), atol=1e-5)
        assert abs(float(up.mean() - x.mean())) < 0.02
    assert torch.equal(upscale(x, 8), x)


@pytest.mark.parametrize("size", [8, 16])
def test_augmentation_changes_images_keeps_range_and_is_seeded(size):
    clean, labels = digits(size, "train")
    aug, labels_aug = digits(size, "train", augmented=True, generator=gen(0))
    assert aug.shape == clean.shape and torch.equal(labels_aug, labels)
    assert aug.min() >= -1 and aug.max() <= 1
    diff = (aug - clean).abs().flatten(1).max(1).values
    assert (diff > 1e-3).float().mean() > 0.95  # almost every image moved
    # Light: the digit stays mostly in place (mean abs change well below the ink contrast).
    assert (aug - clean).abs().mean() < 0.25
    same, _ = digits(size, "train", augmented=True, generator=gen(0))
    other, _ = digits(size, "train", augmented=True, generator=gen(1))
    assert torch.equal(aug, same) and not torch.equal(aug, other)


def test_augment_strength_zero_is_identity():
    x, _ = digits(16, "test")
    torch.testing.assert_close(augment(x, gen(0), strength=0.0), x, atol=1e-5, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"size must be one of \(8, 16, 32\)"):
        digits(12)
    with pytest.raises(ValueError, match="split must be one of"):
        digits(8, "validation")


def test_flat_digits_are_the_split_as_vectors_with_augmented_copies():
    train, labels, test = flat_digits(8)
    assert train.shape == (1438, 64) and labels.shape == (1438,) and test.shape == (359, 64)
    images, true_labels = digits(8, "train")
    torch.testing.assert_close(train[5].reshape(8, 8), images[5, 0])  # row-major pixels
    torch.testing.assert_close(labels, true_labels)
    torch.testing.assert_close(test, digits(8, "test")[0].reshape(359, 64))
    aug, aug_labels, _ = flat_digits(16, copies=3, generator=gen(2))
    assert aug.shape == (3 * 1438, 256) and aug_labels.tolist() == 3 * true_labels.tolist()
    copies = aug.reshape(3, 1438, 256)
    assert not torch.equal(copies[0], copies[1])  # each copy draws its own augmentation
    torch.testing.assert_close(aug, flat_digits(16, copies=3, generator=gen(2))[0])
    assert aug.min() >= -1 and aug.max() <= 1
    with pytest.raises(ValueError, match="copies"):
        flat_digits(8, copies=-1)


def test_read_from_sklearns_file_without_importing_sklearn_and_fall_back_to_it(monkeypatch):
    """The images come from scikit-learn's digits.csv.gz, read without importing
    scikit-learn (0.9 s of every kernel's start); where that file is missing or unreadable,
    through load_digits(), with the same result."""
    import importlib
    import subprocess
    import sys

    code = (
        "import sys, importlib; d = importlib.import_module('pflow_explore.datasets.digits'); "
        "x, y = d._raw(); print(tuple(x.shape), 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["(1797,", "1,", "8,", "8)", "False"]

    module = importlib.import_module("pflow_explore.datasets.digits")
    bunch = load_digits()
    for broken in (None, module.Path("/nonexistent/digits.csv.gz")):
        monkeypatch.setattr(module, "_sklearn_digits_file", lambda broken=broken: broken)
        images, labels = module._read_digits()
        np.testing.assert_array_equal(images, bunch.images)
        np.testing.assert_array_equal(labels, bunch.target)
