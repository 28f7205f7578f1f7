"""Batches of images as one tiled picture (torchvision's make_grid, without torchvision).

One ``go.Image`` of uint8 RGB for the whole batch: a single trace is cheap to send and to
redraw, and ``go.Image`` keeps pixels square with no colour scale to explain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from pflow_explore.viz.arrays import as_numpy
from pflow_explore.viz.style import IMAGE_HOVER, figure_layout, margins


def to_uint8(images: Any) -> np.ndarray:
    """Pixels in [-1, 1] -> integers round(255 (x + 1) / 2) in [0, 255]; outside is clipped."""
    x = as_numpy(images, "images")
    if not np.isfinite(x).all():
        raise ValueError("images contain NaN or infinite pixels (did the sampler diverge?)")
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _as_nchw(images: Any) -> np.ndarray:
    x = as_numpy(images, "images")
    if x.ndim == 3:  # (N, H, W): grayscale without a channel axis
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(
            f"images must have shape (N, C, H, W) with N >= 1 and C = 1 (gray) or 3 (RGB), "
            f"got {tuple(x.shape)}"
        )
    return x


def grid_shape(n: int, nrow: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` tiles with ``nrow`` tiles per row (as make_grid)."""
    if int(nrow) != nrow or nrow < 1:
        raise ValueError(f"nrow (images per row) must be an integer >= 1, got {nrow!r}")
    cols = min(int(nrow), n)
    return math.ceil(n / cols), cols


def image_grid(
    images: Any, nrow: int = 8, padding: int = 2, pad_value: float = 1.0, top: int = 0
) -> np.ndarray:
    """Tile ``images`` (N, C, H, W) in [-1, 1] into one RGB array (rows, cols, 3) uint8.

    Image k sits in grid row k // nrow, column k % nrow, at pixel
    ``(pad + top + r (H + pad + top), pad + c (W + pad))``; ``top`` extra rows above each
    tile leave room for a title. Gaps and unused tiles are ``pad_value`` (1 = white).
    """
    x = _as_nchw(images)
    if int(padding) != padding or padding < 0 or int(top) != top or top < 0:
        raise ValueError(f"padding and top must be integers >= 0, got {padding!r}, {top!r}")
    n, c, h, w = x.shape
    rows, cols = grid_shape(n, nrow)
    step_y, step_x = h + padding + top, w + padding
    canvas = np.full((rows * step_y + padding, cols * step_x + padding, 3), pad_value)
    tiles = np.moveaxis(x, 1, -1)  # (N, H, W, C); a gray C = 1 broadcasts to RGB
    for k in range(n):
        y0 = padding + top + (k // cols) * step_y
        x0 = padding + (k % cols) * step_x
        canvas[y0 : y0 + h, x0 : x0 + w] = tiles[k]
    return to_uint8(canvas)


def image_grid_figure(
    images: Any,
    nrow: int = 8,
    titles: Sequence[str] | None = None,
    padding: int = 2,
    title: str | None = None,
    tile_px: int = 72,
) -> go.Figure:
    """``images`` (N, C, H, W) in [-1, 1] tiled ``nrow`` per row, as one ``go.Image``.

    ``titles`` (N strings) are written above the tiles; ``tile_px`` is the on-screen width
    of one tile (the figure is sized so pixels stay square).
    """
    x = _as_nchw(images)
    n, _, h, w = x.shape
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must have one entry per image ({n}), got {len(titles)}")
    # Room for a line of text: about 14 screen pixels, converted to image pixels.
    top = math.ceil(14 * w / tile_px) if titles is not None else 0
    grid = image_grid(x, nrow, padding, top=top)
    rows, cols = grid_shape(n, nrow)
    annotations = []
    for k, text in enumerate(titles or []):
        annotations.append(
            dict(
                x=padding + (k % cols) * (w + padding) + (w - 1) / 2,
                y=padding + top + (k // cols) * (h + padding + top) - 0.5,
                text=str(text),
                showarrow=False,
                xanchor="center",
                yanchor="bottom",
                font=dict(size=11),
            )
        )
    scale = tile_px / w  # screen pixels per image pixel
    margin = margins(10, 10, 40 if title else 10, 10)
    return go.Figure(
        data=[go.Image(z=grid, hovertemplate=IMAGE_HOVER)],
        layout=figure_layout(
            title,
            height=int(grid.shape[0] * scale) + margin["t"] + margin["b"],
            margin=margin,
            keep_view=False,
            width=int(grid.shape[1] * scale) + margin["l"] + margin["r"],
            xaxis=dict(visible=False),
            yaxis=dict(visible=False, scaleanchor="x", autorange="reversed"),
            annotations=annotations,
        ),
    )
