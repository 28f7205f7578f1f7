"""viz.style and viz.curves: the shared look, checked against plotly's own reading of it."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from pflow_explore.viz import curves, style
from pflow_explore.viz.arrays import plain_floats


def test_palette_is_plotlys_default_qualitative_colours():
    # plotly's own default colorway (D3 category10), read from plotly rather than typed here
    import plotly.express as px

    d3 = [c.lower() for c in px.colors.qualitative.D3]
    named = [style.BLUE, style.ORANGE, style.GREEN, style.RED, style.PURPLE]
    assert named == d3[:5]
    assert style.GRAY == d3[7]


def test_figure_layout_sets_template_size_margins_and_keeps_the_view():
    fig = go.Figure(
        layout=style.figure_layout(
            "t", height=300, margin=style.margins(1, 2, 3, 4), showlegend=False
        )
    )
    assert fig.layout.title.text == "t"
    assert fig.layout.height == 300
    assert (fig.layout.margin.l, fig.layout.margin.r, fig.layout.margin.t) == (1, 2, 3)
    assert fig.layout.margin.b == 4
    assert fig.layout.showlegend is False
    assert fig.layout.uirevision == "keep"
    # the template is plotly's named template, resolved to the same object
    assert fig.layout.template == go.Figure(layout=dict(template="plotly_white")).layout.template


def test_figure_layout_without_title_or_view_keeping_leaves_them_unset():
    layout = style.figure_layout(height=200, keep_view=False)
    assert layout["title"] is None and "uirevision" not in layout
    assert go.Figure(layout=layout).layout.title.text is None


def test_line_and_marker_styles_are_scatter_arguments():
    lines = go.Scatter(**style.line_style("red", 2, dash="dot"))
    assert (lines.mode, lines.line.color, lines.line.width, lines.line.dash) == (
        "lines",
        "red",
        2,
        "dot",
    )
    dots = go.Scatter(**style.marker_style(["red", "blue"], 5, symbol="x"))
    assert dots.mode == "markers"
    assert list(dots.marker.color) == ["red", "blue"]
    assert (dots.marker.size, dots.marker.symbol) == (5, "x")


def test_plain_floats_flattens_and_maps_non_finite_to_gaps():
    x = torch.tensor([[1.0, float("nan")], [float("inf"), -2.5]], dtype=torch.float64)
    assert plain_floats(x) == [1.0, None, None, -2.5]
    assert all(type(v) is float for v in plain_floats(np.arange(3)))


def test_curves_figure_has_the_series_and_titled_log_or_linear_axes():
    steps = torch.arange(1, 6)
    loss = 1.0 / steps.double()
    fig = curves.curves_figure(
        [curves.curve_trace(steps, loss, "loss", line=dict(dash="dash"))],
        "training",
        x_title="step",
        y_title="loss",
        log_y=True,
    )
    (trace,) = fig.data
    assert trace.mode == "lines+markers" and trace.line.dash == "dash"
    assert list(trace.x) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert np.allclose(trace.y, [1 / k for k in range(1, 6)])
    assert fig.layout.xaxis.type == "linear" and fig.layout.yaxis.type == "log"
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("step", "loss")
    assert (fig.layout.height, fig.layout.width) == (style.CURVE_HEIGHT, style.CURVE_WIDTH)
    assert fig.layout.title.text == "training"


def test_curve_trace_turns_nan_into_a_gap_so_a_figurewidget_stays_alive():
    trace = curves.curve_trace([0, 1, 2], [1.0, math.nan, 3.0])
    assert list(trace.y) == [1.0, None, 3.0]


@pytest.mark.parametrize("bad", ["abc", object()])
def test_plain_floats_names_non_numeric_input(bad):
    with pytest.raises(ValueError, match="numeric"):
        plain_floats(bad)


def test_thumbnail_is_a_bare_square():
    import plotly.graph_objects as go

    from pflow_explore.viz.style import thumbnail

    fig = thumbnail(go.Figure(go.Scatter(x=[0, 1], y=[1, 0], name="a")), size=200)
    assert (fig.layout.width, fig.layout.height) == (200, 200) and fig.layout.showlegend is False
    assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
    assert fig.layout.margin.l == 5 and fig.layout.title.text is None
