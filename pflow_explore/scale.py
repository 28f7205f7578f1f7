"""The scale contract, device choice and seeding (DESIGN.md, "Scale contract").

Every chapter has three presets that share one code path and differ only in sizes:

- ``tiny``: for tests; a whole notebook runs in <= 20 s on 2 CPU cores;
- ``cpu`` (default): a classroom laptop; <= 3 min from scratch, <= 20 s with a cache;
- ``gpu``: full scale on one GPU; <= 10 min on an H100-class card.

Resolution order: explicit argument > notebook parameter > env ``PFLOW_SCALE`` > ``cpu``.
A notebook passes its ``SCALE`` parameter (``None`` unless papermill or the reader set it)
to :func:`resolve_scale`, so ``PFLOW_SCALE`` reaches dashboards served by Voila, where
nothing can inject parameters.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

import numpy as np
import torch

SCALES: tuple[str, ...] = ("tiny", "cpu", "gpu")
DEFAULT_SCALE = "cpu"
ENV_SCALE = "PFLOW_SCALE"

T = TypeVar("T")


class ScaleError(ValueError):
    """An unknown scale name; the message lists the valid ones."""


def check_scale(scale: str) -> str:
    """Return ``scale`` lower-cased if it is one of :data:`SCALES`, else raise ScaleError."""
    name = str(scale).strip().lower()
    if name not in SCALES:
        raise ScaleError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
    return name


def resolve_scale(*candidates: str | None) -> str:
    """The first non-empty candidate, else env ``PFLOW_SCALE``, else ``"cpu"``.

    Pass candidates in priority order: ``resolve_scale(scale_argument, SCALE)``.
    Every value is validated, so a typo fails loudly instead of silently running ``cpu``.
    """
    for value in (*candidates, os.environ.get(ENV_SCALE)):
        if value is not None and str(value).strip():
            return check_scale(value)
    return DEFAULT_SCALE


def preset(presets: Mapping[str, T], *candidates: str | None) -> T:
    """Pick the preset for the resolved scale from ``{"tiny": ..., "cpu": ..., "gpu": ...}``."""
    missing = [s for s in SCALES if s not in presets]
    if missing:
        raise ScaleError(f"presets lack scale(s): {', '.join(missing)}")
    return presets[resolve_scale(*candidates)]


def device(prefer: str | None = None) -> torch.device:
    """CUDA when present, else CPU; ``prefer`` ("cpu", "cuda", "cuda:1") overrides.

    Asking for CUDA on a machine without it raises a clear error instead of failing later.
    """
    if prefer is not None:
        dev = torch.device(prefer)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {prefer!r} requested but CUDA is not available here")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_of(module: torch.nn.Module) -> torch.device:
    """The device of a module's (first) parameter: where its inputs must go."""
    return next(module.parameters()).device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and return a CPU torch.Generator.

    Same seed, same numbers: functions that take a ``generator`` should be handed the
    returned one (or their own ``torch.Generator().manual_seed(seed)``) so that results do
    not depend on what ran before them.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of a block, then restore them.

    The command line and the site builder pass the scale this way too (``PFLOW_SCALE``), so
    code that resolves the scale itself (a chapter's ``run`` labelling its claims, a
    notebook's kernel started inside the block) sees the same one.
    """
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def torch_threads(n: int | None = 1, blas: bool = False) -> Iterator[None]:
    """Run torch on ``n`` threads inside the block (with ``blas``, the BLAS under numpy and
    scipy too, via threadpoolctl), then restore the old counts; ``None`` changes nothing.

    Why: the chapters' 2D networks, exact fields and widgets work on tensors of a few hundred
    rows, where a second thread gains nothing; on a busy machine (measured on the shared
    2-core CI box) a threaded gemm waits 15-25 ms per call for the other core, so training
    steps ran 5-8x and small float64 checks up to 25x slower with two threads than with one.
    """
    if n is None:
        yield
        return
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer or None, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        if blas:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(n):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(old)


def single_threaded() -> AbstractContextManager[None]:
    """:func:`torch_threads` with one thread: for widgets and other small work."""
    return torch_threads(1)
