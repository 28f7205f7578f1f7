"""Motility-induced phase separation (MIPS): which particles are gas, interface or bulk, and
how much entropy each phase produces (docs/papers.md §12; "Headline": the EPR
concentrates at cluster interfaces).

Phases come from neighbour counts (:func:`interface_labels`); the local EPR of a learned
g-score is measured two ways (:func:`local_epr_by_phase`), and summarised across packing
fractions (:func:`phi_sweep`) or along a recorded stretch of time (:func:`epr_movie`):

    gamma |g_i + s_{g_i}|^2                   = |v_{g_i}|^2 / gamma, pointwise >= 0;
    -gamma div_{g_i} s_{g_i} - gamma d         the paper's divergence form,

equal in expectation over rho (integrate by parts in g_i). The divergence form is unbiased
for a given network; the squared form pays the network's error squared. States: x, g
(n, N, 2), n configurations of N discs in a periodic box. Time convention: physical time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pflow_explore.claims import Claim, claim_below, replica_z
from pflow_explore.datasets.particles import AOUP
from pflow_explore.epr import aoup_local_epr, local_epr_g_from_divergence, per_region_epr
from pflow_explore.nets.local_transformer import knn
from pflow_explore.score_matching import ScoreFn, evaluate_score, g_block_divergence

GAS, INTERFACE, BULK = 0, 1, 2
PHASE_NAMES = ("gas", "interface", "bulk")


def pooled_frames(traj: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Frames of several replicas pooled into one batch: ``traj`` {"x", "g"} each (frames,
    replicas, N, d) -> x, g (frames * replicas, N, d) and the replica of each row (n,), the
    groups over which standard errors are taken (frames of one replica are correlated)."""
    frames, replicas = traj["x"].shape[:2]
    return traj["x"].flatten(0, 1), traj["g"].flatten(0, 1), torch.arange(replicas).repeat(frames)


def interface_labels(
    x: Tensor, box: float, radius: float, within: float | None = None, dense_min: int = 4
) -> Tensor:
    """Gas / interface / bulk label of every particle, (n, N) long (0, 1, 2).

    Neighbours: the other particles within ``within`` (default 2.4 r, 1.2 diameters; at most
    12 are looked at). A particle is *dense* with >= ``dense_min`` neighbours (a close-packed
    disc has 6, a gas at phi = 0.5 about 2). Bulk: dense, and every neighbour dense.
    Interface: dense, with at least one dilute neighbour. Gas: the rest (dilute particles).
    x: (n, N, 2) in the periodic box of side ``box``. (``particles.phase_labels`` is another
    labelling, gas / intermediate / solid by the neighbour count alone.)
    """
    within = 2.4 * radius if within is None else within
    idx, _, dist = knn(x, 12, box)
    near = dist < within  # (n, N, 12)
    dense = near.sum(-1) >= dense_min
    nb_dense = torch.gather(dense, 1, idx.reshape(x.shape[0], -1)).reshape(idx.shape)
    all_dense = (nb_dense | ~near).all(-1)
    labels = torch.full(dense.shape, GAS, dtype=torch.long, device=x.device)
    labels[dense & ~all_dense] = INTERFACE
    labels[dense & all_dense] = BULK
    return labels


def phase_means(values: Tensor, labels: Tensor) -> Tensor:
    """Mean of values (n, N) over the particles of each phase: (3,) gas, interface, bulk
    (NaN for an empty phase), float64 on the CPU."""
    sel = [values[labels == p] for p in (GAS, INTERFACE, BULK)]
    return (
        torch.stack([v.double().mean() if v.numel() else torch.tensor(math.nan) for v in sel])
        .cpu()
        .double()
    )


def interface_bulk_ratio(phase_values: Tensor) -> float:
    """Interface / bulk of per-phase means (3,) (NaN when the bulk is empty or <= 0)."""
    bulk = float(phase_values[BULK])
    return float(phase_values[INTERFACE]) / bulk if bulk > 0 else math.nan


def _groups(n: int, groups: Tensor | None) -> list[Tensor]:
    """Indices of the configurations of each group (each configuration alone when None)."""
    ids = torch.arange(n) if groups is None else groups.cpu()
    return [torch.nonzero(ids == k).flatten() for k in ids.unique()]


def ratio_spread(values: Tensor, labels: Tensor, groups: Tensor | None = None) -> float:
    """Standard error of the interface / bulk ratio from its spread over independent groups:
    std of the per-group ratios (phase means pooled over each group's configurations) /
    sqrt(their number); NaN with fewer than 2 finite ones. values, labels: (n, N); groups
    (n,): which independent replica each configuration belongs to (None: every configuration
    its own group, honest only when the configurations are independent)."""
    ratios = [
        interface_bulk_ratio(phase_means(values[i], labels[i]))
        for i in _groups(values.shape[0], groups)
    ]
    finite = torch.tensor([r for r in ratios if math.isfinite(r)], dtype=torch.float64)
    return float(finite.std() / math.sqrt(len(finite))) if len(finite) > 1 else math.nan


def mean_spread(values: Tensor, groups: Tensor | None = None) -> float:
    """Standard error of the mean of values (n, N) from the spread of the group means
    (``groups`` as in :func:`ratio_spread`; NaN with fewer than 2 groups)."""
    means = torch.stack([values[i].double().mean() for i in _groups(values.shape[0], groups)])
    return float(means.std() / math.sqrt(len(means))) if len(means) > 1 else math.nan


@dataclass
class PhaseEPR:
    """The local EPR of MIPS configurations from a learned g-score.

    x, g (n, N, 2): the evaluated configurations; local (n, N): gamma |g_i + s_{g_i}|^2;
    local_div (n, N): the paper's divergence form; labels (n, N): :func:`interface_labels`;
    phase_epr, phase_epr_div (3,): mean local EPR in gas / interface / bulk; fractions (3,):
    share of particles per phase; ratio: interface / bulk of the divergence form (unbiased
    for the learned score), ratio_se: its standard error over configurations,
    ratio_pointwise: of gamma |g + s_g|^2; epr_per_particle: the mean g-part per particle;
    region_edges, region_density: ``epr.per_region_epr``; box. ratio_pointwise_se: the
    standard error of ratio_pointwise; epr_per_particle_div: the mean of local_div; gap_se:
    the standard error of epr_per_particle - epr_per_particle_div. Every standard error comes
    from the spread over the independent groups (replicas) passed to
    :func:`local_epr_by_phase`.
    """

    x: Tensor
    g: Tensor
    local: Tensor
    local_div: Tensor
    labels: Tensor
    phase_epr: Tensor
    phase_epr_div: Tensor
    fractions: Tensor
    ratio: float
    ratio_se: float
    ratio_pointwise: float
    epr_per_particle: float
    region_edges: Tensor
    region_density: Tensor
    box: float
    ratio_pointwise_se: float = math.nan
    epr_per_particle_div: float = math.nan
    gap_se: float = math.nan


def local_epr_by_phase(
    model: AOUP,
    score: ScoreFn,
    x: Tensor,
    g: Tensor,
    generator: torch.Generator | None,
    groups: Tensor | None = None,
) -> PhaseEPR:
    """Both local EPR estimators of ``score`` (x, g) -> (None, s_g) at configurations x, g
    (n, N, 2) of ``model`` (eps = 0, periodic box), their means per phase and per region,
    standard errors from the spread over ``groups`` (n,) (the independent replica of each
    configuration; None: configurations taken as independent).

    The score is evaluated 8 configurations at a time; the divergence (one Rademacher probe,
    from ``generator``) 4 at a time, which bounds the memory of the backward pass."""
    box = float(model.box)
    loc = aoup_local_epr(model, x, g, *evaluate_score(score, x, g, batch=8))
    blocks = zip(x.split(4), g.split(4), strict=True)
    div = torch.cat([g_block_divergence(score, xb, gb, generator, probes=1) for xb, gb in blocks])
    local_div = local_epr_g_from_divergence(div, model.gamma)
    labels = interface_labels(x, box, model.radius)
    pe, pd = phase_means(loc.g_part, labels), phase_means(local_div, labels)
    fractions = torch.stack([(labels == p).double().mean() for p in range(3)]).cpu()
    edges, density, _ = per_region_epr(x, loc.g_part, box, bins=max(4, round(box / 2.5)))
    return PhaseEPR(
        x.cpu(),
        g.cpu(),
        loc.g_part.cpu(),
        local_div.cpu(),
        labels.cpu(),
        pe,
        pd,
        fractions,
        interface_bulk_ratio(pd),
        ratio_spread(local_div, labels, groups),
        interface_bulk_ratio(pe),
        float(loc.g_part.mean()),
        edges,
        density,
        box,
        ratio_spread(loc.g_part, labels, groups),
        float(local_div.mean()),
        mean_spread(loc.g_part - local_div, groups),
    )


def phase_summary(m: PhaseEPR) -> str:
    """One line on the phases of ``m``: their shares and the divergence form's mean in the
    gas vs the dense particles (interface and bulk, weighted by their shares)."""
    share = m.fractions[1:]
    dense = (m.phase_epr_div[1:] * share).sum() / share.sum().clamp_min(1e-12)
    shares = ", ".join(f"{float(f):.2f}" for f in m.fractions)
    gas = float(m.phase_epr_div[GAS])
    return f"shares gas / interface / bulk {shares}; gas {gas:.3g} vs dense {float(dense):.3g}"


def estimator_gap(m: PhaseEPR) -> tuple[float, float]:
    """(pointwise - divergence form) / divergence form of the EPR per particle, and its
    standard error (NaN when the divergence form is <= 0). The two agree in expectation only
    for the exact score, so the gap measures the network's error without an exact answer."""
    div = m.epr_per_particle_div
    if not div > 0:
        return math.nan, math.nan
    return (m.epr_per_particle - div) / div, m.gap_se / div


def estimators_summary(m: PhaseEPR) -> str:
    """One line: both estimators' interface / bulk ratio and EPR per particle, +- SE."""
    gap, se = estimator_gap(m)
    return (
        f"interface / bulk: divergence form {m.ratio:.3g} +- {m.ratio_se:.2g}, gamma |g + s_g|^2 "
        f"{m.ratio_pointwise:.3g} +- {m.ratio_pointwise_se:.2g}; EPR per particle "
        f"{m.epr_per_particle_div:.4g} vs {m.epr_per_particle:.4g}, gap {gap:+.3f} +- {se:.2g}"
    )


@dataclass
class PhiSweep:
    """EPR per particle vs packing fraction with one network trained at ``trained_phi``:
    phis (p,) ascending, epr (p,), interface / bulk ratio (p,), share of dense particles
    (interface + bulk) (p,)."""

    phis: Tensor
    epr: Tensor
    ratio: Tensor
    dense_share: Tensor
    trained_phi: float


def phi_sweep(rows: list[tuple[float, PhaseEPR]], trained_phi: float) -> PhiSweep:
    """The :class:`PhiSweep` of (phi, local EPR at phi) pairs, sorted by phi (stable)."""
    rows = sorted(rows, key=lambda row: row[0])

    def column(values: list[float]) -> Tensor:
        return torch.tensor(values, dtype=torch.float64)

    return PhiSweep(
        column([phi for phi, _ in rows]),
        column([r.epr_per_particle for _, r in rows]),
        column([r.ratio for _, r in rows]),
        column([float(r.fractions[1:].sum()) for _, r in rows]),
        trained_phi,
    )


@dataclass
class Movie:
    """Recorded frames of one MIPS box for a particle movie: frames (T, N, 2), local EPR
    colours gamma |g_i + s_{g_i}|^2 (T, N), currents v_x (T, N, 2) (for eps = 0 the
    probability velocity of x is the drift b_x itself), times (T,), box."""

    frames: Tensor
    colors: Tensor
    currents: Tensor
    times: Tensor
    box: float


def epr_movie(model: AOUP, score: ScoreFn, x: Tensor, g: Tensor, times: Tensor) -> Movie:
    """The :class:`Movie` of frames x, g (T, N, 2) of ``model`` at ``times`` (T,): the
    learned ``score`` evaluated 8 frames at a time, without gradients."""
    _, s_g = evaluate_score(score, x, g, batch=8)
    loc = aoup_local_epr(model, x, g, None, s_g)
    return Movie(x.cpu(), loc.g_part.cpu(), loc.v_x.cpu(), times, float(model.box))


# ---- claims on these measurements (criteria fixed here, before measuring) -------------------
def interface_ratio_claim(
    m: PhaseEPR, replicas: int, frames: int, gamma: float, n: int, phi: float, scale: str
) -> Claim:
    """Interface / bulk local EPR > 1 beyond the replica noise by both estimators (the
    divergence form, unbiased for the network, and gamma |g + s_g|^2), with a network whose
    two estimators of the EPR per particle agree within 10% (:func:`estimator_gap`): a
    wrong network can also tell interfaces from bulk. SE over ``replicas`` independent
    replicas of ``frames`` frames each; margin: Student t (``claims.replica_z``)."""
    z, (gap, gap_se) = replica_z(replicas), estimator_gap(m)
    forms = [(m.ratio, m.ratio_se), (m.ratio_pointwise, m.ratio_pointwise_se)]
    beyond = all(ratio - z * se > 1 for ratio, se in forms)
    consistent = abs(gap) + z * gap_se < 0.1  # False for NaN
    crit = f"both ratios > 1 by {z:.3g} SE; EPR per particle of the two within 10% by {z:.3g} SE"
    note = (
        f"{estimators_summary(m)}; SE over {replicas} independent replicas x {frames} frames "
        f"(one replica's frames are correlated over 1 / gamma = {1 / gamma:g}), z = Student t "
        f"97.5%; N = {n}, phi = {phi}; bulk = >= 4 neighbours within 1.2 diameters, all of them "
        f"dense; interface = dense with a dilute neighbour; {phase_summary(m)}"
    )
    name = "MIPS: EPR concentrates at cluster interfaces (interface / bulk local EPR)"
    paper = "the EPR concentrates at MIPS cluster interfaces (paper, N = 4096)"
    return Claim(name, paper, m.ratio, crit, bool(beyond and consistent), scale, note)


def estimator_agreement_claim(
    big: PhaseEPR, m: PhaseEPR, boxes: int, chunk: int, scale: str
) -> Claim:
    """MIPS has no exact EPR, so a network evaluated at a larger N (``big``) is checked
    against itself: the relative gap of its two EPR estimators below 10% beyond the noise
    over ``boxes`` independent boxes; ``m``: the same at the training N, for the note."""
    n, (gap, se) = big.x.shape[1], estimator_gap(big)
    note = (
        f"at N = {n}, {estimators_summary(big)}; {boxes} independent boxes, chunked inference "
        f"(chunk {chunk}), z = Student t 97.5%; at the training N = {m.x.shape[1]}: gap "
        f"{estimator_gap(m)[0]:+.3f}"
    )
    name = f"same MIPS network at N = {n}: its two EPR estimators agree (|relative gap|)"
    paper = "one network trained at 4096 particles generalises to 32768 (paper, gpu scale)"
    return claim_below(name, paper, abs(gap), 0.1, scale, note, se=se, z=replica_z(boxes))
