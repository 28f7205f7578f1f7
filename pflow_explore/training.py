"""One training loop for every chapter: progress bar, loss history, EMA, clipping, NaN guard,
and the artifact cache (train once per settings).

    result = fit(model, loss_fn, steps=2000, lr=1e-3)           # always trains
    result = fit_cached("painters", "denoiser", settings, make_model, loss_fn, steps=2000)

``loss_fn(model, step) -> scalar tensor`` draws its own batch (so data pipelines stay in
the chapter, where the reader sees them) and returns the loss to minimise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import cache

LossFn = Callable[[nn.Module, int], Tensor]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the loss."""


@dataclass
class FitResult:
    """model: trained weights (EMA weights copied in when ``ema_decay`` was set);
    losses: loss per step; seconds: training wall time (0 when loaded from the cache)."""

    model: nn.Module
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    from_cache: bool = False


def _progress(steps: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # renders as a widget in JupyterLab and Voila

    # leave=True: a bar that closes itself closes its widget, and a Voila page rendered from
    # that notebook then refers to a model that no longer exists ("widget model not found")
    return tqdm(total=steps, desc=desc, disable=not enabled, leave=True, mininterval=0.25)


# Why the helpers below: on the small nets of the 2D chapters a step takes ~1 ms on one CPU
# thread, and torch's general-purpose clip_grad_norm_ (regrouping the tensors by device and
# dtype on every call, ~120 us), AveragedModel.update_parameters (~110 us) and the
# per-tensor Python loop of Adam on the CPU made fit ~1.2x slower than a bare Adam loop
# (benchmarks/fit_overhead.py). They run the same tensor ops, so the numbers are bit for bit
# those of the torch functions (tests/test_training.py compares them).
def _foreach(params: list[Tensor]) -> bool | None:
    """True when every parameter is a dense CPU or CUDA tensor, else torch's default."""
    ok = all(p.device.type in ("cpu", "cuda") and not p.is_sparse for p in params)
    return True if ok and params else None


@torch.no_grad()
def clip_grad_norm(params: list[Tensor], max_norm: float) -> None:
    """g <- g min(1, max_norm / (||g|| + 1e-6)), ||g|| the 2-norm of all gradients together:
    ``nn.utils.clip_grad_norm_`` without its per-call regrouping when every gradient shares
    one device and dtype (else it calls that function)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    first = grads[0]
    if any(g.device != first.device or g.dtype != first.dtype or g.is_sparse for g in grads):
        nn.utils.clip_grad_norm_(params, max_norm)
        return
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    coef = torch.clamp(float(max_norm) / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)


class EMA:
    """theta_ema <- d theta_ema + (1 - d) theta after every step, starting from a copy of the
    weights after the first step: what ``AveragedModel(model, multi_avg_fn=
    get_ema_multi_avg_fn(d))`` computes (one foreach lerp), kept as a list of tensors."""

    def __init__(self, params: list[Tensor], decay: float) -> None:
        self.params, self.decay = params, decay
        self.average: list[Tensor] | None = None

    @torch.no_grad()
    def update(self) -> None:
        if self.average is None:
            self.average = [p.detach().clone() for p in self.params]
            return
        pairs = list(zip(self.average, self.params, strict=True))
        lerp = [(a, p) for a, p in pairs if a.is_floating_point() or a.is_complex()]
        if lerp:
            avg, new = [a for a, _ in lerp], [p.detach() for _, p in lerp]
            torch._foreach_lerp_(avg, new, 1 - self.decay)
        for a, p in pairs:
            if not (a.is_floating_point() or a.is_complex()):
                a.copy_(a * self.decay + p.detach() * (1 - self.decay))

    @torch.no_grad()
    def copy_to_params(self) -> None:
        """Write the average into the model's parameters (buffers stay the model's own)."""
        for p, a in zip(self.params, self.average or [], strict=False):
            p.copy_(a)


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    *,
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    ema_decay: float | None = None,
    grad_clip: float | None = 1.0,
    warmup: int = 0,
    cosine: bool = False,
    progress: bool = True,
    desc: str = "training",
    callback: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Adam(W) on ``loss_fn`` for ``steps`` steps.

    Learning rate: linear warm-up over ``warmup`` steps, then constant or (``cosine``)
    cosine decay to 0. Gradients are clipped to norm ``grad_clip``. With ``ema_decay``
    the returned model carries the exponential moving average of the weights,
    theta_ema <- d theta_ema + (1 - d) theta. A non-finite loss stops training with
    TrainingDiverged naming the step and the last finite loss. ``callback(step, loss)`` runs
    after every step (live loss curves; an exception raised there stops training, e.g. a
    cancel button).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if ema_decay is not None and not 0 < ema_decay < 1:
        raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
    params = list(model.parameters())
    # foreach: one kernel per op over all tensors instead of a Python loop over them; torch
    # defaults to it on CUDA only, and it computes the same values on the CPU
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=_foreach(params))

    def lr_factor(i: int) -> float:
        warm = min(1.0, (i + 1) / warmup) if warmup > 0 else 1.0
        if not cosine:
            return warm
        return warm * 0.5 * (1 + math.cos(math.pi * i / steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ema = EMA(params, ema_decay) if ema_decay else None
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    with _progress(steps, desc, progress) as bar:
        for i in range(steps):
            loss = loss_fn(model, i)
            value = float(loss.detach())
            if not math.isfinite(value):
                last = f"{losses[-1]:.4g}" if losses else "none"
                raise TrainingDiverged(
                    f"{desc}: loss became {value} at step {i} (last finite loss {last}); "
                    f"lower the learning rate (lr={lr}) or clip gradients (grad_clip={grad_clip})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                clip_grad_norm(params, grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update()
            losses.append(value)
            bar.update(1)
            if callback is not None:
                callback(i, value)
            if i % 50 == 0 or i == steps - 1:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    if ema is not None:
        ema.copy_to_params()
    model.eval()
    return FitResult(model, losses, time.perf_counter() - start, False)


def fit_key(settings: Any, fit_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`fit_cached` hashes: the chapter's ``settings`` and the fit arguments
    (all but ``progress``, which changes no weight)."""
    return {"settings": settings, "fit": {k: v for k, v in fit_kwargs.items() if k != "progress"}}


def fit_cached(
    chapter: str,
    name: str,
    settings: Any,
    make_model: Callable[[], nn.Module],
    loss_fn: LossFn,
    *,
    version: str | int = 0,
    rebuild: bool = False,
    device: torch.device | str | None = None,
    **fit_kwargs: Any,
) -> FitResult:
    """:func:`fit` a fresh ``make_model()`` once per (chapter, name, settings, fit_kwargs,
    version); later calls load the weights and loss history from the cache.

    ``settings`` must determine everything the loss depends on (data, sizes, seed) so the
    cache key is honest; ``fit_kwargs`` (steps, lr, ...) are added to the key here.
    """
    model = make_model()
    if device is not None:
        model = model.to(device)
    key_settings = fit_key(settings, fit_kwargs)
    seconds = 0.0

    def build() -> dict[str, Any]:
        nonlocal seconds
        result = fit(model, loss_fn, **fit_kwargs)
        seconds = result.seconds
        state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
        return {"state_dict": state, "losses": result.losses, "seconds": result.seconds}

    obj, hit = cache.cached(chapter, name, key_settings, build, version=version, rebuild=rebuild)
    if hit:
        try:
            model.load_state_dict(obj["state_dict"])
        except (KeyError, RuntimeError) as err:  # architecture changed without a version bump
            print(f"cache: {chapter}/{name} does not fit the model ({err}); retraining")
            return fit_cached(
                chapter,
                name,
                settings,
                make_model,
                loss_fn,
                version=version,
                rebuild=True,
                device=device,
                **fit_kwargs,
            )
        model.eval()
        return FitResult(model, list(obj["losses"]), 0.0, True)
    return FitResult(model, list(obj["losses"]), seconds, False)
