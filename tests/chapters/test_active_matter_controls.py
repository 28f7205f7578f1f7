"""Chapter 12 active_matter: every training-dependent claim fed a wrong model must come out
"does not hold" (negative controls), and the exact score must make the trap and ring rows
hold (so the criteria are not impossible either). The exact scores are the Lyapunov
solutions of the linear systems (``theory.linear_sde``); the MIPS rows, which have no exact
score, get a zero score and a null where interface and bulk do not differ."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from pflow_explore import claims
from pflow_explore.chapters import active_matter as M
from pflow_explore.datasets.particles import ring_laplacian
from pflow_explore.theory import linear_sde as ls

F64 = torch.float64


class _Anchor(nn.Module):
    """A parameter, so the chapter finds the device of a network that has none of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))


class TrapExact(_Anchor):
    """The exact trapped-AOUP score at each v0 (or at ``wrong_v0`` for every v0)."""

    def __init__(self, s: M.Settings, wrong_v0: float | None = None) -> None:
        super().__init__()
        self.s, self.wrong_v0 = s, wrong_v0

    def forward(self, x: Tensor, g: Tensor, v0: float) -> tuple[Tensor, Tensor]:
        v0 = v0 if self.wrong_v0 is None else self.wrong_v0
        _, _, S = ls.spring_network(
            [[0.0]], self.s.trap_A, 0.0, v0, self.s.trap_gamma, self.s.trap_eps
        )
        return ls.particle_linear_score(S, x, g)


class RingExact(_Anchor):
    """The exact spring-ring score at any N (its Lyapunov covariance)."""

    def __init__(self, s: M.Settings) -> None:
        super().__init__()
        self.s = s

    def forward(self, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        _, _, S = ls.spring_network(ring_laplacian(x.shape[1]), *M.ring_parameters(self.s))
        return ls.particle_linear_score(S, x, g)


class ZeroMIPS(_Anchor):
    """s_g = 0: a network that learned nothing about the interactions."""

    def forward(self, x: Tensor, g: Tensor, box: float, chunk: int | None = None):
        return None, 0.0 * g  # div_g s_g = 0 exactly


@pytest.fixture
def tiny(data_dir) -> M.Settings:
    # more held-out samples than the tiny preset, so that the exact score's row holds with
    # 2 standard errors inside the 10% band (the simulation stays well under a second)
    return M.settings("tiny", trap_test=8192, ring_test=256)


def test_trap_row_holds_for_the_exact_score_and_not_for_wrong_models(tiny):
    exact = M.trap_claim(M.trap_experiment(tiny, net=TrapExact(tiny)))
    assert exact.holds, exact.note
    assert exact.measured < 0.05
    # the score of another v0 (the equilibrium one, v0 = 0) and an untrained network
    assert not M.trap_claim(M.trap_experiment(tiny, net=TrapExact(tiny, wrong_v0=0.0))).holds
    torch.manual_seed(0)
    untrained = M.TrapScore(2, tiny.trap_hidden, tiny.trap_depth)
    assert not M.trap_claim(M.trap_experiment(tiny, net=untrained)).holds


def test_ring_rows_hold_for_the_exact_score_and_fail_on_a_wrong_split(tiny):
    ring = M.ring_experiment(tiny, net=RingExact(tiny))
    rows = M.ring_claims(ring, tiny)
    assert len(rows) == 1 + len(tiny.ring_n_eval)
    assert all(c.holds for c in rows), [c.note for c in rows]
    torch.testing.assert_close(ring.learned, ring.learned_x + ring.learned_g)
    # a wrong split with the right total: x-part +14%, the g-part takes the difference. A
    # criterion on the total alone passes it; the row (each part within 10%) does not.
    dx = 0.14 * ring.exact_x
    split = replace(
        ring, learned=ring.exact, learned_x=ring.exact_x + dx, learned_g=ring.exact_g - dx
    )
    split = replace(split, se=torch.zeros_like(ring.se))
    total_only = claims.claim_within(
        "total", "", float(split.learned[0]), float(split.exact[0]), 0.1, "tiny"
    )
    assert total_only.holds
    assert not any(c.holds for c in M.ring_claims(split, tiny))
    # the exact values with a standard error of 6% of them: the band cannot absorb 2 SE
    noisy = replace(ring, learned=ring.exact, learned_x=ring.exact_x, learned_g=ring.exact_g)
    noisy = replace(noisy, se=0.06 * torch.stack([ring.exact, ring.exact_x, ring.exact_g]))
    assert not any(c.holds for c in M.ring_claims(noisy, tiny))
    # an untrained local transformer
    torch.manual_seed(0)
    assert not any(
        c.holds for c in M.ring_claims(M.ring_experiment(tiny, net=M.make_ring_score(tiny)), tiny)
    )


def test_mips_rows_fail_for_a_zero_score_and_untrained_networks(tiny):
    for seed in range(3):
        torch.manual_seed(seed)
        for net in (ZeroMIPS(), M.make_mips_score(tiny)):
            local = M.mips_experiment(tiny, net=net).local
            assert local.x.shape[0] == tiny.mips_eval_replicas * tiny.mips_eval_frames
            row = M.mips_ratio_claim(local, tiny)
            assert not row.holds and row.note.startswith("not reproduced at this scale")
            big = M.large_box_claim(local, local, tiny)
            assert not big.holds and big.note.startswith("not reproduced at this scale")
    # the zero score: gamma |g|^2 >= 0 pointwise, but the divergence form is -gamma d < 0
    zero = M.mips_experiment(tiny, net=ZeroMIPS()).local
    assert zero.epr_per_particle_div == pytest.approx(-tiny.mips_gamma * 2)
    assert math.isnan(zero.ratio)


def test_mips_ratio_row_needs_both_estimators_and_a_self_consistent_network(tiny):
    """Replica noise, the second estimator and the two estimators' agreement can each fail
    the row on their own (8 replicas: the margin is t = 2.36 standard errors)."""
    s = replace(tiny, mips_eval_replicas=8)
    assert claims.replica_z(8) == pytest.approx(2.3646, abs=1e-4)
    local = M.mips_experiment(tiny, net=ZeroMIPS()).local
    good = dict(ratio=1.5, ratio_se=0.05, ratio_pointwise=1.4, ratio_pointwise_se=0.05)
    good |= dict(epr_per_particle=1.02, epr_per_particle_div=1.0, gap_se=0.01)
    assert M.mips_ratio_claim(replace(local, **good), s).holds
    for change in (
        dict(ratio_se=0.25),  # 1.5 - 2.36 * 0.25 < 1: within the replica noise
        dict(ratio_pointwise=1.05),  # the other estimator says no
        dict(epr_per_particle=1.2),  # the network disagrees with itself by 20%
        dict(gap_se=math.nan),  # no standard error, no verdict
    ):
        assert not M.mips_ratio_claim(replace(local, **(good | change)), s).holds, change
    assert not M.mips_ratio_claim(replace(local, **good), tiny).holds  # 2 replicas: t = 12.7


def test_large_box_row_needs_agreement_beyond_its_noise(tiny):
    """The two estimators' relative gap must lie below 10% by t standard errors (4 boxes in
    the preset: t = 3.18)."""
    local = M.mips_experiment(tiny, net=ZeroMIPS()).local
    agree = replace(local, epr_per_particle=1.02, epr_per_particle_div=1.0, gap_se=0.01)
    assert M.large_box_claim(agree, agree, tiny).holds
    noisy = replace(agree, gap_se=0.03)  # 0.02 + 3.18 * 0.03 > 0.1
    assert not M.large_box_claim(noisy, agree, tiny).holds
    apart = replace(agree, epr_per_particle=1.15)
    assert not M.large_box_claim(apart, agree, tiny).holds
    one_box = replace(agree, gap_se=math.nan)  # one box: no standard error, no verdict
    assert not M.large_box_claim(one_box, agree, tiny).holds
