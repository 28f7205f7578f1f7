"""Plotly figures as HTML for pages that load plotly.js themselves: the static course site
(:mod:`pflow_explore.site`) and ``pflow-explore figures`` (:mod:`figures_export`) write every
figure through :func:`figure_html`.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

CONFIG = {"responsive": True, "displaylogo": False}


NUMERIC_KEYS = ("x", "y", "z")


def compact(trace: dict) -> dict:
    """``trace`` (a trace's plotly JSON) with its numeric x, y, z lists as float32 arrays,
    which plotly writes as base64 (4 bytes a number instead of ~18 characters); None (a gap
    in a line) becomes NaN, which plotly.js also draws as a gap. Other values are kept."""
    out = dict(trace)
    for key in NUMERIC_KEYS:
        value = out.get(key)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            out[key] = value.astype(np.float32)
        elif isinstance(value, (list, tuple)) and value and _numbers(value):
            out[key] = np.array([np.nan if v is None else v for v in value], dtype=np.float32)
    return out


def _numbers(values: list | tuple) -> bool:
    return all(
        v is None or (isinstance(v, (int, float, np.number)) and not isinstance(v, bool))
        for v in values
    )


def plain_copy(fig: go.Figure) -> go.Figure:
    """A plain copy of ``fig`` (a FigureWidget's too) with :func:`compact` traces."""
    data = [compact(t.to_plotly_json()) for t in fig.data]
    return go.Figure(data=data, layout=fig.layout.to_plotly_json(), frames=fig.frames or None)


def figure_html(fig: go.Figure) -> str:
    """A figure as a div and the script that draws it (plotly.js loaded by the page; a
    figure with frames waits for its Play button); numeric arrays of figures without
    frames are compacted (:func:`compact`)."""
    if not fig.frames and not isinstance(fig, go.FigureWidget):
        fig = plain_copy(fig)
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, config=CONFIG, auto_play=False)


def standalone_page(body: str, title: str = "figure") -> str:
    """A whole HTML page around ``body`` (:func:`figure_html` output) with plotly.js inside,
    so it opens offline."""
    from plotly.offline import get_plotlyjs

    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
        f'</title>\n<script type="text/javascript">{get_plotlyjs()}</script></head>\n'
        f"<body>{body}</body></html>\n"
    )
