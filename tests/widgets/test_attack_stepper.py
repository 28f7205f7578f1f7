"""widgets/attack_stepper.py: iterations are computed when first shown and lower the
margins, the first picture is in the state the browser renders first, new rates start the
audit again, bad rates keep it and say why."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pflow_explore import adjoint as ad
from pflow_explore import paths
from pflow_explore.nets.mlp import MLP
from pflow_explore.widgets.attack_stepper import AttackStepper, own_margins

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = 4


def classifier() -> nn.Module:
    torch.manual_seed(1)
    return nn.Linear(SIZE * SIZE, 10)


@pytest.fixture
def stepper() -> AttackStepper:
    torch.manual_seed(0)
    eps = MLP(SIZE * SIZE, 32, 2)
    return AttackStepper(
        eps, paths.get_path("vp_linear"), ad.rho_grid(4, 80.0), classifier(), SIZE, "rk4",
        n_images=6, iters=8, lr=0.3, proximity=0.1, kappa=0.5,
    )  # fmt: skip


def test_the_first_picture_is_in_the_state_the_browser_first_renders(stepper):
    z = stepper.image_figure._widget_data[0]["z"]
    assert len(z) > 3 * SIZE and stepper.computed == 0
    notes = stepper.image_figure._widget_layout["annotations"]
    assert len(notes) == 18 and notes[6]["text"].startswith("=")
    assert len(stepper.margin_figure._widget_data[0]["y"]) == 1
    assert "iteration 0" in stepper.readout.value


def test_iterations_are_computed_once_and_lower_the_margins(stepper):
    stepper.step_to(8)
    assert stepper.computed == 8 and stepper.slider.value == 8
    margins = torch.stack([own_margins(z, stepper.labels) for z in stepper._logits])
    assert margins[-1].mean() < margins[0].mean() - 0.1, margins.mean(1)
    x_T = [x.clone() for x in stepper._x_T]
    stepper.step_to(2)  # back: nothing recomputed
    assert stepper.computed == 8
    assert all(torch.equal(a, b) for a, b in zip(x_T, stepper._x_T, strict=True))
    assert list(stepper.margin_figure.data[-1].x) == [2] * 6
    changed = int((stepper._logits[8].argmax(1) != stepper.labels).sum())
    stepper.step_to(8)
    assert f"{changed} of 6" in stepper.readout.value


def test_new_rates_start_the_audit_again(stepper):
    stepper.step_to(4)
    first = stepper._x_T[4].clone()
    assert stepper.set_rates(proximity=10.0)
    assert stepper.computed == 4 and stepper.step == 4
    assert (stepper._x_T[4] - stepper.start).norm() < (first - stepper.start).norm()


@pytest.mark.parametrize("bad", [dict(lr=0.0), dict(lr=float("nan")), dict(proximity=-1.0),
                                 dict(lr="fast")])  # fmt: skip
def test_bad_rates_keep_the_audit_and_say_why(stepper, bad):
    stepper.step_to(2)
    assert not stepper.set_rates(**bad)
    assert "must be" in stepper.message.value and stepper.computed == 2
