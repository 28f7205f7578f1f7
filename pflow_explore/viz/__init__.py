"""Plotly figure builders: data in (torch tensors or arrays), ``go.Figure`` out.

Pure functions with no widget state; ``widgets/`` wraps their traces in FigureWidgets.
``*_trace`` builders return one trace to compose; ``*_figure`` builders a whole figure.
The shared look (template, colours, layout defaults) is in ``viz.style``.
"""

from __future__ import annotations

from pflow_explore.viz.arrays import as_numpy, padded_range, plain_floats, polylines
from pflow_explore.viz.curves import curve_trace, curves_figure
from pflow_explore.viz.fields import (
    arrow_scale,
    density_heatmap_figure,
    density_heatmap_trace,
    density_on_grid,
    plane_grid,
    quiver_figure,
    quiver_trace,
    vector_field_figure,
)
from pflow_explore.viz.images import image_grid, image_grid_figure, to_uint8
from pflow_explore.viz.panels import bars_figure, panel_grid
from pflow_explore.viz.points import plane_layout, points_figure, points_trace, trajectories_trace

__all__ = [
    "arrow_scale",
    "as_numpy",
    "bars_figure",
    "curve_trace",
    "curves_figure",
    "density_heatmap_figure",
    "density_heatmap_trace",
    "density_on_grid",
    "image_grid",
    "image_grid_figure",
    "padded_range",
    "panel_grid",
    "plain_floats",
    "plane_grid",
    "plane_layout",
    "points_figure",
    "points_trace",
    "polylines",
    "quiver_figure",
    "quiver_trace",
    "to_uint8",
    "trajectories_trace",
    "vector_field_figure",
]
