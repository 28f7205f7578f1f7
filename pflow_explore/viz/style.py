"""The look every figure shares: the plotly template, named colours, hover texts, layouts.

Figure builders (``viz``) and explorers (``widgets``) take their template, palette and
layout defaults from here, so a change of look is one edit. ``figure_layout`` holds what
every figure sets (template, height, margins, ``uirevision``); ``curves_layout`` the
chapters' line charts (loss curves, error against steps) with their axis titles and scales.
"""

from __future__ import annotations

from typing import Any

TEMPLATE = "plotly_white"

# plotly's default qualitative palette (D3 category10), by name
BLUE = "#1f77b4"
ORANGE = "#ff7f0e"
GREEN = "#2ca02c"
RED = "#d62728"
PURPLE = "#9467bd"
GRAY = "#7f7f7f"

IMAGE_HOVER = "(%{x}, %{y})<extra></extra>"  # a go.Image pixel: its column and row

CURVE_HEIGHT = 380  # the chapters' line charts, in screen pixels
CURVE_WIDTH = 560


def line_style(color: str, width: float = 1, **line: Any) -> dict[str, Any]:
    """A scatter trace's arguments for lines of ``color`` and ``width`` (``line``: dash, ...)."""
    return dict(mode="lines", line=dict(color=color, width=width, **line))


def marker_style(color: Any, size: float = 4, **marker: Any) -> dict[str, Any]:
    """A scatter trace's arguments for markers of ``color`` (one or one per point) and
    ``size`` (``marker``: symbol, ...)."""
    return dict(mode="markers", marker=dict(color=color, size=size, **marker))


def margins(left: int = 40, right: int = 20, top: int = 40, bottom: int = 40) -> dict[str, int]:
    """Plotly's ``margin`` dict (screen pixels around the plotting area)."""
    return dict(l=left, r=right, t=top, b=bottom)


def figure_layout(
    title: str | None = None,
    height: int | None = None,
    margin: dict[str, int] | None = None,
    keep_view: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Layout defaults of a figure: ``TEMPLATE``, ``height``, ``margin``, then ``extra``.

    ``title`` None means no title. ``keep_view`` sets ``uirevision="keep"``: a figure
    updated in place (a widget's) keeps the reader's zoom and pan when its data change.
    Use as ``go.Figure(layout=figure_layout(...))`` or ``fig.update_layout(**figure_layout(...))``.
    """
    layout: dict[str, Any] = {"title": title, "template": TEMPLATE}
    if height is not None:
        layout["height"] = height
    if margin is not None:
        layout["margin"] = margin
    layout.update(extra)
    if keep_view:
        layout.setdefault("uirevision", "keep")
    return layout


def curves_layout(
    title: str | None,
    x_title: str | None = None,
    y_title: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
    height: int = CURVE_HEIGHT,
    width: int = CURVE_WIDTH,
) -> dict[str, Any]:
    """Layout of a line chart (loss against step, error against sigma, ...): template,
    size, titled axes, each linear or log."""
    return figure_layout(
        title,
        height=height,
        keep_view=False,
        width=width,
        xaxis=dict(title=dict(text=x_title), type="log" if log_x else "linear"),
        yaxis=dict(title=dict(text=y_title), type="log" if log_y else "linear"),
    )


def thumbnail(fig: Any, size: int = 220) -> Any:
    """A chapter's landing-page preview: ``fig`` (a go.Figure) as a ``size`` px square with no
    title, axes or legend and 5 px margins; returns the same figure."""
    fig.update_layout(title=None, height=size, width=size, margin=margins(5, 5, 5, 5))
    fig.update_layout(showlegend=False)
    fig.update_xaxes(visible=False)
    return fig.update_yaxes(visible=False)
