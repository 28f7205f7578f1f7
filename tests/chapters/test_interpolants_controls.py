"""Negative controls for chapter 02's training-dependent claims: the rows built by
``interpolant_learning.control_claims`` (closer than a moment-matched Gaussian, each 2D pair)
(with the checkerboard's log-density: the on-support share, ODE and SDE sweep)
hold for fresh target samples and fail for a distribution with a quarter of its mass on the
checkerboard's white squares, and for a moment-matched Gaussian; the field-error row
(``interpolant_learning.field_error_claim`` with the chapter's bound) holds for the exact b
and fails for wrong fields."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pflow_explore import interpolant_learning as L
from pflow_explore.chapters import interpolants as M
from pflow_explore.datasets.toy2d import (
    TOY_2D_MIXTURES,
    checkerboard,
    checkerboard_log_prob,
    checkerboard_to_white,
)
from pflow_explore.theory.interpolant_fields import InterpolantFields

pytestmark = pytest.mark.usefixtures("one_thread")
EPS = (0.0, 0.5, 1.0)


def _sweep(samples: torch.Tensor, target: torch.Tensor) -> L.Sweep:
    """A Sweep carrying the kept samples (the same set for every eps) and the kept target."""
    e = torch.zeros(len(EPS), dtype=torch.float64)
    stack = samples.float().expand(len(EPS), *samples.shape).clone()
    return L.Sweep("control", torch.tensor(EPS), e, e, 1.0, 1.0, 1.0, stack, target.float())


def _rows(samples, target):
    """The chapter's rows for the checkerboard: the Gaussian control, then the ODE's and the
    SDE sweep's share on the support."""
    sw = _sweep(samples, target)
    board = (checkerboard_log_prob, checkerboard_to_white)
    return L.control_claims("checkerboard", sw, 0, "tiny", *board, support=M.SUPPORT_SHARE)


def test_checkerboard_rows_hold_for_the_target_and_fail_off_its_support():
    gen = torch.Generator().manual_seed(0)
    target, fresh = checkerboard(1000, gen), checkerboard(1000, gen)
    gauss, ode, sde = _rows(fresh, target)
    assert gauss.holds and ode.holds and sde.holds and ode.measured == sde.measured == 1.0
    # 25% of the mass moved onto white squares: close in energy, off the support
    wrong = torch.cat([checkerboard_to_white(fresh[:250]), fresh[250:]])
    assert checkerboard_log_prob(checkerboard_to_white(fresh)).isinf().all()
    gauss, ode, sde = _rows(wrong, target)
    for row in (ode, sde):
        assert not row.holds and row.measured == pytest.approx(0.75, abs=1e-9)
    assert "75%" in ode.note  # the control's share, reported beside the model's
    # 95% on the support holds (0.95 - 2 binomial SE > 0.9)
    nearly = torch.cat([checkerboard_to_white(fresh[:50]), fresh[50:]])
    assert all(row.holds for row in _rows(nearly, target)[1:])


def test_a_moment_matched_gaussian_fails_the_gaussian_row():
    gen = torch.Generator().manual_seed(1)
    mixture = TOY_2D_MIXTURES["mixture"]()
    target = mixture.sample(1000, gen)
    fresh = mixture.sample(1000, gen)
    assert L.control_claims("mixture", _sweep(fresh, target), 0, "tiny")[0].holds
    gauss = L.moment_matched(fresh.double(), 1000, torch.Generator().manual_seed(5))
    rows = L.control_claims("mixture", _sweep(gauss, target), 0, "tiny")
    assert len(rows) == 1 and not rows[0].holds  # no support row without a log-density


class _FieldModel(nn.Module):
    """A stand-in for the learned pair: given fields instead of networks (float32 out, as the
    networks give)."""

    def __init__(self, velocity, denoiser) -> None:
        super().__init__()
        self.vel, self.den = velocity, denoiser
        self.anchor = nn.Parameter(torch.zeros(1))  # learned_vs_exact reads its device

    def velocity(self, x, t):
        return self.vel(x.double(), t).float()

    def denoiser(self, x, t):
        return self.den(x.double(), t).float()


def test_field_error_row_holds_for_the_exact_b_and_fails_for_wrong_fields():
    s = M.settings("tiny")
    data = M.pair_data(s, "mixtures")
    exact = M.exact_fields(s, data)

    def row(velocity):
        errors = M.learned_vs_exact(s, _FieldModel(velocity, exact.denoiser), data)
        return errors, L.field_error_claim("mixtures", errors, M.FIELD_ERROR_BOUND, "tiny")

    errors, claim = row(exact.velocity)
    assert claim.holds and errors.b_total < 1e-6
    errors, claim = row(lambda x, t: 1.1 * exact.velocity(x, t))  # 10% off: inside the bound
    assert claim.holds and errors.b_total == pytest.approx(0.1, abs=1e-4)
    wrong = {
        "30% too fast": lambda x, t: 1.3 * exact.velocity(x, t),
        # v = E[d_t I | x_t] alone: the -gamma gamma' s part of b forgotten
        "mean velocity v": exact.mean_velocity,
        "endpoints swapped": InterpolantFields(data.rho1, data.rho0, exact.interpolant).velocity,
    }
    for name, velocity in wrong.items():
        errors, claim = row(velocity)
        assert not claim.holds, name
        assert errors.b_total - 2 * errors.b_total_se > M.FIELD_ERROR_BOUND, name
