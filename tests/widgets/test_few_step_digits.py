"""FewStepDigits, headless, with class-conditional exact Gaussian rectified flows as "models".

Class c has data N(mu_c, sigma^2 I) on 4x4 images. The guided velocity is
v(.|empty) + alpha (v(.|c) - v(.|empty)) with v(.|empty) the flow to N(0, sigma^2 I). What is
exactly true and checked: at alpha = 1 one Euler step of the exact 2-RF gives mu_c + sigma z0
and one step of 1-RF gives mu_c; state 0 of a trajectory is z0. Images are compared with
samples computed here, tiled by viz.image_grid in class order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ipywidgets import SelectionSlider

from pflow_explore.theory.rectified_flow import gaussian_2rf_velocity, gaussian_rf_velocity
from pflow_explore.viz.images import image_grid
from pflow_explore.widgets.few_step_digits import FewStepDigits

F64 = torch.float64
H = W = 4
D = H * W
K, PER_CLASS = 3, 4
SIGMA = 0.4
MEANS = 0.5 * torch.randn(K, D, generator=torch.Generator().manual_seed(1), dtype=F64)


def guided(fn):
    """A sampler: Euler steps of the guided velocity of ``fn``, the whole trajectory."""
    calls = {"n": 0}

    def sample(n_steps, guidance, z0, labels):
        calls["n"] += 1
        z = z0.reshape(len(z0), D).to(F64)
        states = [z]
        for k in range(n_steps):
            t = k / n_steps
            v = torch.empty_like(z)
            for c in range(K):
                rows = labels == c
                cond = fn(z[rows], t, MEANS[c], SIGMA)
                empty = fn(z[rows], t, torch.zeros(D, dtype=F64), SIGMA)
                v[rows] = empty + guidance * (cond - empty)
            z = z + v / n_steps
            states.append(z)
        return torch.stack(states).reshape(n_steps + 1, len(z0), 1, H, W)

    sample.calls = calls
    return sample


def distilled(n_steps, guidance, z0, labels):  # final images only, flat (n, d)
    return MEANS[labels] + SIGMA * z0.reshape(len(z0), D)


def nearest_mean(images):
    flat = images.reshape(len(images), D).to(F64)
    return torch.cdist(flat, MEANS).argmin(-1)


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(K).repeat(PER_CLASS)  # interleaved: the widget sorts by class
    z0 = torch.randn(K * PER_CLASS, 1, H, W, generator=g, dtype=F64)
    return z0, labels


def make(inputs, **kw):
    z0, labels = inputs
    samplers = {"1-RF": guided(gaussian_rf_velocity), "2-RF": guided(gaussian_2rf_velocity)}
    samplers["distilled"] = distilled
    return FewStepDigits(samplers, z0, labels, classify=nearest_mean, **kw)


def grid_of(images, labels, nrow=PER_CLASS):
    order = np.argsort(labels.numpy(), kind="stable")
    return image_grid(np.asarray(images, dtype=np.float32)[order].reshape(-1, 1, H, W), nrow)


def shown(w) -> np.ndarray:
    return np.asarray(w.figure.data[0].z).copy()


def test_layout_and_first_picture(inputs):
    w = make(inputs)
    assert w.children[0].children[0] is w.steps_slider
    assert isinstance(w.steps_slider, SelectionSlider)
    assert "pflow-input" in w.guidance_box._dom_classes
    assert w.setting == ("1-RF", 1, 1.0)
    assert w.nrow == PER_CLASS  # one row per class
    # one Euler step of 1-RF at alpha = 1 lands every sample on its class mean
    z0, labels = inputs
    np.testing.assert_array_equal(shown(w), grid_of(MEANS[labels], labels))
    assert w.n_steps == 1 and w.step == 1
    assert "class accuracy of the final samples: 100.0%" in w.readout.value


def test_2rf_one_step_is_exact_and_step_through(inputs):
    z0, labels = inputs
    w = make(inputs)
    assert w.set_model("2-RF")
    exact = MEANS[labels] + SIGMA * z0.reshape(-1, D)
    np.testing.assert_allclose(w.images.reshape(-1, D), exact.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(shown(w), grid_of(exact, labels))
    w.step_to(0)
    np.testing.assert_array_equal(shown(w), grid_of(z0.reshape(-1, D), labels))
    assert w.slider.value == 0 and "state 0 of 1" in w.readout.value
    assert w.set_steps(8)
    assert w.n_steps == 8 and w.slider.max == 8 and w.step == 8
    np.testing.assert_allclose(w.images.reshape(-1, D), exact.numpy(), rtol=1e-5, atol=1e-5)
    w.slider.value = 3  # as the browser does
    assert w.step == 3


def test_controls_change_the_picture_and_cache(inputs):
    w = make(inputs)
    before = shown(w)
    w.steps_slider.value = 4
    assert not np.array_equal(before, shown(w))
    after_steps = shown(w)
    w.guidance_slider.value = 3.0
    assert w.setting == ("1-RF", 4, 3.0) and w.guidance_box.value == 3.0
    assert not np.array_equal(after_steps, shown(w))
    calls = w.samplers["1-RF"].calls["n"]
    w.set_guidance(1.0)
    w.set_guidance(3.0)
    assert w.samplers["1-RF"].calls["n"] == calls  # both cached
    w.guidance_box.value = 7.5  # beyond the slider's range: allowed, the slider stops at 5
    assert w.setting[2] == 7.5 and w.guidance_slider.value == 5.0


def test_final_only_sampler(inputs):
    z0, labels = inputs
    w = make(inputs)
    assert w.set_model("distilled")
    assert w.n_steps == 0 and w.slider.disabled
    exact = MEANS[labels] + SIGMA * z0.reshape(-1, D)
    np.testing.assert_array_equal(shown(w), grid_of(exact, labels))
    assert "final samples" in w.readout.value


def test_bad_input_shows_a_message_and_keeps_the_picture(inputs):
    w = make(inputs)
    w.set_steps(2)
    before = shown(w)
    w.guidance_box.value = -1.0  # as typed in the browser
    assert "guidance scale must be a finite number &gt;= 0" in w.message.value
    np.testing.assert_array_equal(before, shown(w))
    assert not w.set_guidance(float("nan"))
    assert not w.set_steps(3)
    assert "steps must be one of 1, 2, 4, 8" in w.message.value
    assert not w.set_model("3-RF")
    with pytest.raises(ValueError, match="state"):
        w.step_to(5)
    np.testing.assert_array_equal(before, shown(w))
    w.steps_slider.value = 4  # still responds, with the last good guidance
    assert not np.array_equal(before, shown(w))
    assert w.message.value == "" and w.guidance_box.value == 1.0


def test_failing_sampler_is_a_message(inputs):
    z0, labels = inputs

    def broken(n_steps, guidance, z0, labels):
        return torch.zeros(len(z0), 5)  # 5 pixels: not an image

    def diverging(n_steps, guidance, z0, labels):
        return torch.full((len(z0), D), float("nan"))

    w = FewStepDigits({"ok": distilled, "broken": broken, "nan": diverging}, z0, labels)
    before = shown(w)
    w.model_buttons.value = "broken"
    assert "not a square" in w.message.value
    w.model_buttons.value = "nan"
    assert "NaN" in w.message.value
    np.testing.assert_array_equal(before, shown(w))
    assert w.setting[0] == "ok"


def test_constructor_rejects_bad_arguments(inputs):
    z0, labels = inputs
    with pytest.raises(ValueError, match="labels"):
        FewStepDigits({"d": distilled}, z0, labels[:3])
    with pytest.raises(ValueError, match="guidance_range"):
        FewStepDigits({"d": distilled}, z0, labels, guidance_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="guidance scale"):
        FewStepDigits({"d": distilled}, z0, labels, guidance=-2.0)
    with pytest.raises(ValueError, match="samplers"):
        FewStepDigits({}, z0, labels)
