"""MIPS phases and the local EPR per phase: labels on a constructed droplet, per-phase means
and the interface / bulk ratio against loops written here, and both local EPR estimators on
a system whose stationary law is known (free AOUPs with eps = 0 in a periodic box: x
uniform, g ~ N(0, I) independent, so s_g = -g and v_g = 0)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pflow_explore import mips
from pflow_explore.claims import claim_above
from pflow_explore.datasets.particles import AOUP

F64 = torch.float64


def test_interface_labels_on_a_constructed_droplet():
    radius, box = 1.0, 60.0
    i, j = np.meshgrid(np.arange(9), np.arange(9), indexing="ij")
    hexagon = np.stack([(i + 0.5 * (j % 2)) * 2.0, j * math.sqrt(3)], -1).reshape(-1, 2)
    hexagon = hexagon - hexagon.mean(0)
    loners = np.array([[25.0, 25.0], [-25.0, 20.0], [20.0, -25.0]])
    x = torch.as_tensor(np.concatenate([hexagon, loners])[None], dtype=torch.float32)
    labels = mips.interface_labels(x, box, radius)[0]
    centre = int(np.argmin((hexagon**2).sum(1)))
    assert int(labels[centre]) == mips.BULK
    assert (labels[-3:] == mips.GAS).all()
    # the patch's rim: its corner (2-3 neighbours) is gas, the particles next to it interface
    corner = int(np.argmax((hexagon**2).sum(1)))
    assert int(labels[corner]) == mips.GAS
    assert (labels[:81] == mips.INTERFACE).any() and (labels[:81] == mips.BULK).sum() >= 25
    # the same droplet wrapped across the periodic boundary keeps its labels
    shifted = x.clone()
    shifted[..., 0] = (shifted[..., 0] + 30.0 + box / 2) % box - box / 2
    torch.testing.assert_close(mips.interface_labels(shifted, box, radius)[0], labels)


def test_phase_means_and_ratio_against_loops():
    gen = torch.Generator().manual_seed(0)
    values = torch.rand(5, 40, generator=gen, dtype=F64)
    labels = torch.randint(0, 3, (5, 40), generator=gen)
    means = mips.phase_means(values, labels)
    for p in range(3):
        picked = [
            float(v)
            for v, b in zip(values.reshape(-1), labels.reshape(-1), strict=True)
            if int(b) == p
        ]
        assert float(means[p]) == pytest.approx(sum(picked) / len(picked))
    assert mips.interface_bulk_ratio(means) == pytest.approx(float(means[1] / means[2]))
    empty = mips.phase_means(values, torch.zeros_like(labels))  # all gas
    assert math.isnan(float(empty[mips.BULK])) and math.isnan(mips.interface_bulk_ratio(empty))
    ratios = []
    for v, b in zip(values, labels, strict=True):  # per configuration, by boolean masks
        ratios.append(float(v[b == 1].mean() / v[b == 2].mean()))
    ratios = np.array(ratios)
    assert mips.ratio_spread(values, labels) == pytest.approx(ratios.std(ddof=1) / math.sqrt(5))
    assert math.isnan(mips.ratio_spread(values[:1], labels[:1]))
    # by groups: configurations 0, 2, 4 form one replica, 1 and 3 the other (phase means
    # pooled within each replica, then the spread of the two replica ratios)
    groups = torch.tensor([0, 1, 0, 1, 0])
    per_group = []
    for k in (0, 1):
        v, b = values[groups == k].reshape(-1), labels[groups == k].reshape(-1)
        per_group.append(float(v[b == 1].mean() / v[b == 2].mean()))
    want = np.std(per_group, ddof=1) / math.sqrt(2)
    assert mips.ratio_spread(values, labels, groups) == pytest.approx(want)
    assert mips.mean_spread(values, groups) == pytest.approx(
        np.std([float(values[groups == k].mean()) for k in (0, 1)], ddof=1) / math.sqrt(2)
    )
    assert math.isnan(mips.mean_spread(values, torch.zeros(5, dtype=torch.long)))


def test_correlated_frames_need_the_replica_standard_error():
    """A null (interface and bulk alike in expectation) with 8 replicas of 16 nearly identical
    frames, each replica with its own interface / bulk ratio (a slow cluster shape): the
    spread over frames claims 1.04 is above 1 by 2 standard errors; the spread over replicas
    (the independent units) does not."""
    replicas, frames, n = 8, 16, 60
    offsets = torch.linspace(-1.35, 2.15, replicas, dtype=F64)  # mean 0.4, std 1.1
    scale = 1 + 0.1 * offsets  # each replica's interface / bulk ratio, mean 1.04
    gen = torch.Generator().manual_seed(3)
    labels = torch.tensor([mips.INTERFACE, mips.BULK]).repeat(n // 2).expand(replicas * frames, n)
    values = torch.ones(replicas * frames, n, dtype=F64)
    groups = torch.arange(replicas).repeat(frames)  # frame-major, as the chapter stacks them
    values[labels == mips.INTERFACE] = scale[groups].repeat_interleave(n // 2)
    values = values * (1 + 0.001 * torch.randn(values.shape, generator=gen, dtype=F64))
    ratio = mips.interface_bulk_ratio(mips.phase_means(values, labels))
    assert ratio == pytest.approx(1.04, abs=1e-3)
    by_frame, by_replica = (
        mips.ratio_spread(values, labels),
        mips.ratio_spread(values, labels, groups),
    )
    assert by_replica == pytest.approx(float(scale.std()) / math.sqrt(replicas), rel=0.02)
    assert by_replica > 3 * by_frame
    assert claim_above("r", "", ratio, 1, "tiny", se=by_frame).holds  # passes on correlation
    assert not claim_above("r", "", ratio, 1, "tiny", se=by_replica).holds


def test_local_epr_by_phase_on_a_known_stationary_law():
    """Free AOUPs, eps = 0, periodic box: the exact s_g = -g gives zero EPR by both
    estimators; the wrong score -c g gives gamma (1 - c)^2 |g|^2 pointwise and exactly
    gamma d (c - 1) by the divergence form (div_g (-c g) = -c d)."""
    model = AOUP(200, 0.3, gamma=0.5, eps=0.0, A=0.0, k=0.0, interaction="none", box=30.0)
    gen = torch.Generator().manual_seed(1)
    x = (torch.rand(6, 200, 2, generator=gen, dtype=F64) - 0.5) * 30.0
    g = torch.randn(6, 200, 2, generator=gen, dtype=F64)
    exact = mips.local_epr_by_phase(model, lambda xx, gg: (None, -gg), x, g, gen)
    assert float(exact.local.abs().max()) < 1e-12 and float(exact.local_div.abs().max()) < 1e-12
    assert exact.epr_per_particle == pytest.approx(0.0, abs=1e-12)
    c = 0.6
    wrong = mips.local_epr_by_phase(model, lambda xx, gg: (None, -c * gg), x, g, gen)
    torch.testing.assert_close(wrong.local, 0.5 * (1 - c) ** 2 * (g**2).sum(-1))
    torch.testing.assert_close(wrong.local_div, torch.full((6, 200), 0.5 * 2 * (c - 1), dtype=F64))
    # a wrong score breaks the identity between the forms (they agree, at 0, only for the
    # exact score): the pointwise form averages gamma (1 - c)^2 d
    assert wrong.epr_per_particle == pytest.approx(0.5 * (1 - c) ** 2 * 2, rel=0.1)
    assert float(wrong.fractions.sum()) == pytest.approx(1.0)
    # the region density integrates to the total: sum * cell area / N = EPR per particle
    cell = float(wrong.region_edges[1] - wrong.region_edges[0]) ** 2
    total = float(wrong.region_density.sum()) * cell / 200
    assert total == pytest.approx(wrong.epr_per_particle)


def test_phase_summary_weights_the_dense_phases_by_their_shares():
    """Shares 0.5 / 0.3 / 0.2, divergence-form means 1 / 4 / 9: dense (0.3 4 + 0.2 9) / 0.5
    = 6."""
    z = torch.zeros(1)
    m = mips.PhaseEPR(
        z, z, z, z, z, torch.tensor([2.0, 3.0, 5.0], dtype=F64),
        torch.tensor([1.0, 4.0, 9.0], dtype=F64), torch.tensor([0.5, 0.3, 0.2], dtype=F64),
        0.444, 0.1, 0.6, 1.0, z, z, 10.0,
    )  # fmt: skip
    want = "shares gas / interface / bulk 0.50, 0.30, 0.20; gas 1 vs dense 6"
    assert mips.phase_summary(m) == want


def test_pooled_frames_keep_each_rows_replica():
    import torch

    from pflow_explore.mips import pooled_frames

    frames, replicas, n, d = 3, 4, 5, 2
    x = torch.arange(frames * replicas * n * d, dtype=torch.float32).reshape(frames, replicas, n, d)
    px, pg, rep = pooled_frames({"x": x, "g": -x})
    assert px.shape == pg.shape == (frames * replicas, n, d)
    for row in range(frames * replicas):  # each pooled row is frame f of replica rep[row]
        f = row // replicas
        assert torch.equal(px[row], x[f, rep[row]]) and torch.equal(pg[row], -x[f, rep[row]])
