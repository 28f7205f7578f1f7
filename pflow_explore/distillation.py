"""Reflow and distillation: retraining a flow on its own ODE coupling, distilling it into a
one-step generator, the pseudo-Huber loss, and frozen / EMA targets for consistency-style
training (docs/papers.md §03; "Reflow", "Distillation"; the CTM chapter reuses them).

Time runs as in :mod:`flow_matching`: t = 0 noise, t = 1 data. A coupling is a
:class:`flow_matching.Pairs` (Z0, Z1 = ODE(Z0)), made by :func:`flow_matching.sample_pairs`;
``pairs`` may also be a zero-argument function that makes them, called only when training
happens (a cached model needs no pairs).

    v2 = reflow(v1, lambda: sample_pairs(v1, z0), stage).model           # 1-RF -> 2-RF
    student = distill(v2, pairs_of_v2, replace(stage, loss="pseudo_huber")).model
    v3, student2 = rectify(v2, lambda v: sample_pairs(v, z0), stage, stage)   # both at once
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from pflow_explore.flow_matching import (
    Artifact,
    Pairs,
    Stage,
    Velocity,
    device_of,
    one_step,
    rectified_flow_loss,
    train_stage,
    uniform_time,
)
from pflow_explore.training import FitResult

DISTILL_LOSSES = ("l2", "pseudo_huber")
PairsLike = Pairs | Callable[[], Pairs]
Draw = Callable[[nn.Module], tuple[Tensor, Tensor, Tensor | None, torch.Generator]]


def pair_batches(pairs: PairsLike, stage: Stage) -> Draw:
    """draw(model) -> (z0, z1, y or None, generator): ``stage.batch`` pairs drawn with
    replacement, kept together (never re-paired), on the model's device. Lazy pairs are made
    on the first draw; the generator (seeded ``stage.seed``) lives on that device."""
    state: dict[str, Any] = {}

    def draw(model: nn.Module) -> tuple[Tensor, Tensor, Tensor | None, torch.Generator]:
        dev = device_of(model)
        if "pairs" not in state:
            p = pairs() if callable(pairs) else pairs
            state["pairs"] = (p.z0.to(dev), p.z1.to(dev), None if p.y is None else p.y.to(dev))
            state["gen"] = torch.Generator(device=dev).manual_seed(stage.seed)
        z0, z1, y = state["pairs"]
        gen = state["gen"]
        idx = torch.randint(len(z0), (stage.batch,), generator=gen, device=dev)
        return z0[idx], z1[idx], None if y is None else y[idx], gen

    return draw


def reflow(
    v_k: nn.Module,
    pairs: PairsLike,
    stage: Stage,
    cache: Artifact | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Reflow: the (k+1)-RF minimises the rectified-flow loss on the coupled pairs (Z0, Z1)
    of the k-RF, each pair kept together:

        v_{k+1} = argmin_v E |v(t Z1 + (1 - t) Z0, t) - (Z1 - Z0)|^2,   t ~ U[t_eps, 1].

    The coupling of v_{k+1} has the same marginals and straighter paths (for Gaussians the
    2-RF is exactly straight). The net starts from a copy of v_k (warm start)."""
    draw = pair_batches(pairs, stage)

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        z0, z1, y, gen = draw(model)
        t = uniform_time(len(z0), stage.t_eps, gen, z0.device)
        return rectified_flow_loss(model, z0, z1, t, y)

    return train_stage(lambda: copy.deepcopy(v_k).train(), loss_fn, stage, cache, callback)


def pseudo_huber(err: Tensor, c: float) -> Tensor:
    """Pseudo-Huber per row (Song & Dhariwal 2023): err (n, ...) -> (n,),

        h(e) = sqrt(|e|^2 + c^2) - c,   |e| the 2-norm of the row.

    Limits: c >> |e|: h ~ |e|^2 / (2 c) (L2, scaled); c -> 0: h -> |e| (L1 of the norm),
    so large errors (outlier pairs) pull linearly, not quadratically."""
    return ((err.flatten(1) ** 2).sum(1) + c**2).sqrt().sub(c)


def distillation_loss(
    student: Velocity,
    z0: Tensor,
    z1: Tensor,
    y: Tensor | None = None,
    loss: str = "l2",
    c: float = 0.0,
) -> Tensor:
    """One-step distillation loss, a scalar over the batch:

        e = z0 + s(z0, 0 | y) - z1,   l2: mean |e|^2 / d,   pseudo_huber: mean h_c(e).

    z0, z1 (n, d). The paper uses LPIPS for images; here L2 or :func:`pseudo_huber`."""
    if loss not in DISTILL_LOSSES:
        raise ValueError(f"loss must be one of {DISTILL_LOSSES}, got {loss!r}")
    err = (one_step(student, z0, y) - z1).flatten(1)
    if loss == "l2":
        return (err**2).mean()
    return pseudo_huber(err, c).mean()


def distill(
    v_k: nn.Module, pairs: PairsLike, stage: Stage, cache: Artifact | None = None
) -> FitResult:
    """Distil the k-RF into a one-step generator z0 -> z0 + s(z0, 0 | y) on its coupling
    (Z0, Z1): the student s starts from a copy of v_k (at t = 0 it already is the one-step
    Euler map) and minimises :func:`distillation_loss` with ``stage.loss`` and
    c = ``stage.huber_c`` sqrt(d)."""
    draw = pair_batches(pairs, stage)

    def loss_fn(model: nn.Module, step: int) -> Tensor:
        z0, z1, y, _ = draw(model)
        c = stage.huber_c * math.sqrt(z0[0].numel())
        return distillation_loss(model, z0, z1, y, stage.loss, c)

    return train_stage(lambda: copy.deepcopy(v_k).train(), loss_fn, stage, cache)


def rectify(
    v_k: nn.Module,
    coupling: Callable[[nn.Module], Pairs],
    reflow_stage: Stage | None,
    distill_stage: Stage | None,
    caches: tuple[Artifact | None, Artifact | None] = (None, None),
) -> tuple[FitResult | None, FitResult | None]:
    """One round of the paper's recipe on the k-RF ``v_k``: its coupling (Z0, Z1) =
    ``coupling(v_k)``, made once and only when a model is trained (a cached one needs none),
    then the (k+1)-RF by :func:`reflow` and the distilled k-RF by :func:`distill`, both on
    those pairs, in that order. A stage None skips its model (its result is None); ``caches``:
    (reflow's, distillation's)."""
    pairs = functools.cache(lambda: coupling(v_k))
    reflowed = None if reflow_stage is None else reflow(v_k, pairs, reflow_stage, caches[0])
    student = None if distill_stage is None else distill(v_k, pairs, distill_stage, caches[1])
    return reflowed, student


# ---- targets for consistency-style training -----------------------------------------------
def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with no gradients: the stop-gradient target theta^-
    of consistency / CTM training (and the teacher of a distillation)."""
    target = copy.deepcopy(model).eval()
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, decay: float) -> None:
    """theta^- <- mu theta^- + (1 - mu) theta, parameter by parameter (buffers copied):
    the EMA target of consistency training, mu = ``decay`` in [0, 1] (1: frozen, 0: copy)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must lie in [0, 1], got {decay}")
    for p_t, p in zip(target.parameters(), online.parameters(), strict=True):
        p_t.lerp_(p.detach(), 1.0 - decay)
    for b_t, b in zip(target.buffers(), online.buffers(), strict=True):
        b_t.copy_(b)
