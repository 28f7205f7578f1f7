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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

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

    return tqdm(total=steps, desc=desc, disable=not enabled, leave=False, mininterval=0.25)


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
) -> FitResult:
    """Adam(W) on ``loss_fn`` for ``steps`` steps.

    Learning rate: linear warm-up over ``warmup`` steps, then constant or (``cosine``)
    cosine decay to 0. Gradients are clipped to norm ``grad_clip``. With ``ema_decay``
    the returned model carries the exponential moving average of the weights,
    theta_ema <- d theta_ema + (1 - d) theta. A non-finite loss stops training with
    TrainingDiverged naming the step and the last finite loss.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if ema_decay is not None and not 0 < ema_decay < 1:
        raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def lr_factor(i: int) -> float:
        warm = min(1.0, (i + 1) / warmup) if warmup > 0 else 1.0
        if not cosine:
            return warm
        return warm * 0.5 * (1 + math.cos(math.pi * i / steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay)) if ema_decay else None
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
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            losses.append(value)
            bar.update(1)
            if i % 50 == 0 or i == steps - 1:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    model.eval()
    return FitResult(model, losses, time.perf_counter() - start, False)


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
    key_settings = {
        "settings": settings,
        "fit": {k: v for k, v in fit_kwargs.items() if k != "progress"},
    }
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
