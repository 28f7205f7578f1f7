"""Negative controls for chapter 02's sample claims: the rows built by
``interpolant_learning.control_claims`` (what ``interpolants.claims`` adds for each 2D pair)
hold for fresh target samples and fail for a distribution with a quarter of its mass off the
checkerboard's black squares, and for a moment-matched Gaussian."""

from __future__ import annotations

import pytest
import torch

from pflow_explore import interpolant_learning as L
from pflow_explore.datasets.toy2d import (
    TOY_2D_MIXTURES,
    checkerboard,
    checkerboard_log_prob,
    checkerboard_to_white,
)

pytestmark = pytest.mark.usefixtures("one_thread")
EPS = (0.0, 0.5, 1.0)


def _sweep(samples: torch.Tensor, target: torch.Tensor) -> L.Sweep:
    """A Sweep carrying the kept samples (the same set for every eps) and the kept target."""
    e = torch.zeros(len(EPS), dtype=torch.float64)
    stack = samples.float().expand(len(EPS), *samples.shape).clone()
    return L.Sweep("control", torch.tensor(EPS), e, e, 1.0, 1.0, 1.0, stack, target.float())


def _rows(samples, target):
    board = (checkerboard_log_prob, checkerboard_to_white)
    return L.control_claims("checkerboard", _sweep(samples, target), 0, "tiny", *board)


def test_checkerboard_rows_hold_for_the_target_and_fail_off_its_support():
    gen = torch.Generator().manual_seed(0)
    target, fresh = checkerboard(1000, gen), checkerboard(1000, gen)
    gauss, support = _rows(fresh, target)
    assert gauss.holds and support.holds and support.measured == 1.0
    # 25% of the mass moved onto white squares: close in energy, off the support
    wrong = torch.cat([checkerboard_to_white(fresh[:250]), fresh[250:]])
    assert checkerboard_log_prob(checkerboard_to_white(fresh)).isinf().all()
    gauss, support = _rows(wrong, target)
    assert not support.holds and support.measured == pytest.approx(0.75, abs=1e-9)
    assert "75%" in support.note  # the control's share, reported beside the model's


def test_a_moment_matched_gaussian_fails_the_gaussian_row():
    gen = torch.Generator().manual_seed(1)
    mixture = TOY_2D_MIXTURES["mixture"]()
    target = mixture.sample(1000, gen)
    fresh = mixture.sample(1000, gen)
    assert L.control_claims("mixture", _sweep(fresh, target), 0, "tiny")[0].holds
    gauss = L.moment_matched(fresh.double(), 1000, torch.Generator().manual_seed(5))
    rows = L.control_claims("mixture", _sweep(gauss, target), 0, "tiny")
    assert len(rows) == 1 and not rows[0].holds  # no support row without a log-density
