"""Turning tensors into the flat numpy arrays plotly draws.

Every figure builder accepts torch tensors (any device, with or without grad) or array-likes;
they all pass through :func:`as_numpy`. Many polylines are drawn as ONE trace whose
coordinates are separated by NaN (plotly breaks a line at a non-number), because one trace
of 10^5 points renders and updates far faster than 10^3 traces of 100 points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def as_numpy(x: Any, name: str = "array", dtype: type = np.float64) -> np.ndarray:
    """``x`` (torch tensor or array-like) as a numpy array of ``dtype``, detached, on the CPU."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu")
        if x.dtype == torch.bfloat16:  # numpy has no bfloat16
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} must be numeric (a tensor or array), got {type(x).__name__}"
        ) from err


def plain_floats(x: Any, decimals: int | None = None) -> list[float | None]:
    """``x`` (any shape) flattened to Python floats, NaN and infinities as None.

    Plotly converts a tensor element by element (slowly), and a NaN in a FigureWidget's data
    is not valid JSON: it stops every widget on the page. None draws as a gap.
    ``decimals``: round to that many (a dashboard page parses every figure's JSON while its
    widgets start; digits beyond what the eye can see only make it longer).
    """
    a = as_numpy(x, "values").reshape(-1)
    if decimals is not None:
        a = np.round(a, decimals)
    return [v if math.isfinite(v) else None for v in a.tolist()]


def check_shape(x: np.ndarray, name: str, shape: Sequence[int | None], meaning: str) -> None:
    """Raise ValueError unless ``x.shape`` matches ``shape`` (``None`` = any size).

    ``meaning`` is the shape as the reader knows it, e.g. ``"(n, 2)"``.
    """
    ok = x.ndim == len(shape) and all(
        s is None or s == d for s, d in zip(shape, x.shape, strict=True)
    )
    if not ok:
        raise ValueError(f"{name} must have shape {meaning}, got {tuple(x.shape)}")


def polylines(paths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten m polylines of L points each into one NaN-separated (x, y) pair.

    paths: (L, m, 2), point l of line j at ``paths[l, j]`` (the layout solvers return:
    time first). Returns x, y of length m (L + 1): line j occupies entries
    ``[j (L+1), j (L+1) + L)`` and entry ``j (L+1) + L`` is NaN, the break.
    """
    length, m, _ = paths.shape
    flat = np.full((m, length + 1, 2), np.nan, dtype=paths.dtype)
    flat[:, :length] = np.swapaxes(paths, 0, 1)
    flat = flat.reshape(m * (length + 1), 2)
    return flat[:, 0], flat[:, 1]


def polyline_lists(lines: Any, decimals: int | None = None) -> tuple[list, list]:
    """m polylines ``lines`` (m, L, 2), line first (segments: L = 2, closed loops: first point
    again last), as x, y lists of plain floats with a None after each line: one trace, safe
    to assign to a widget's trace (no NaN, see :func:`plain_floats`; ``decimals`` likewise)."""
    p = as_numpy(lines, "lines")
    check_shape(p, "lines", (None, None, 2), "(m, L, 2)")
    x, y = polylines(np.swapaxes(p, 0, 1))
    return plain_floats(x, decimals), plain_floats(y, decimals)


def padded_range(values: np.ndarray, margin: float = 0.05) -> tuple[float, float]:
    """(lo, hi) of the finite ``values`` widened by ``margin`` of the span on each side."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (-1.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    pad = margin * (hi - lo) if hi > lo else 0.5
    return (lo - pad, hi + pad)
