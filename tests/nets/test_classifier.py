from __future__ import annotations

import pytest
import torch

from pflow_explore.datasets.digits import digits
from pflow_explore.nets.classifier import (
    FEATURE_DIM,
    REPO_DATA,
    WEIGHTS_NAME,
    DigitsCNN,
    data_dir,
    load_digits_classifier,
)


def test_shipped_classifier_loads_in_eval_mode_and_is_cached():
    model = load_digits_classifier()
    assert isinstance(model, DigitsCNN)
    assert not model.training
    assert load_digits_classifier() is model


def test_shipped_classifier_held_out_accuracy():
    model = load_digits_classifier()
    images, labels = digits(8, "test")
    with torch.no_grad():
        acc = (model(images).argmax(-1) == labels).float().mean().item()
    assert acc >= 0.97
    # upscaled digits are average-pooled back to 8x8, so the classifier serves them too
    for size in (16, 32):
        images, labels = digits(size, "test")
        with torch.no_grad():
            acc = (model(images).argmax(-1) == labels).float().mean().item()
        assert acc >= 0.95, size


def test_features_and_logit_shapes():
    model = load_digits_classifier()
    x = digits(32, "test")[0][:6]
    assert model.features(x).shape == (6, FEATURE_DIM)
    assert model(x).shape == (6, 10)
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.zeros(2, 1, 12, 12))
    with pytest.raises(ValueError, match=r"\(B, 1, S, S\)"):
        model(torch.zeros(2, 3, 8, 8))


def test_input_gradient_flows_for_classifier_guidance():
    model = load_digits_classifier()
    x = digits(8, "test")[0][:3].clone().requires_grad_(True)
    model(x).log_softmax(-1)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_pflow_data_env_overrides_and_falls_back_to_the_shipped_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PFLOW_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    # an empty data folder: the copy shipped in the repository is used
    assert load_digits_classifier() is load_digits_classifier(REPO_DATA / WEIGHTS_NAME)
    (tmp_path / "classifier").mkdir()
    torch.manual_seed(0)
    fresh = DigitsCNN()
    torch.save(fresh.state_dict(), tmp_path / WEIGHTS_NAME)
    loaded = load_digits_classifier()
    torch.testing.assert_close(loaded.head.weight, fresh.head.weight)


def test_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmarks/train_digits_classifier.py"):
        load_digits_classifier(tmp_path / "nothing.pt")
