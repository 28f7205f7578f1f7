"""widgets/static_view.py: a widget on a page without a kernel. The frames of a stepped
widget are the pictures the widget itself draws at those steps; plain explorers show their
figures as they are; enable() makes an IPython shell display widgets and figures as HTML."""

from __future__ import annotations

import json

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from plotly.utils import PlotlyJSONEncoder

from pflow_explore.widgets import static_view as sv
from pflow_explore.widgets.live_figure import LiveFigure
from pflow_explore.widgets.trajectory import TrajectoryExplorer

STEPS = 60


def traces(data) -> str:
    """The traces as JSON, without the ids a FigureWidget gives its traces."""
    plain = [{k: v for k, v in t.to_plotly_json().items() if k != "uid"} for t in data]
    return json.dumps(plain, cls=PlotlyJSONEncoder)


def numbers(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], float)


@pytest.fixture
def explorer() -> TrajectoryExplorer:
    gen = torch.Generator().manual_seed(0)
    walk = torch.randn(STEPS + 1, 12, 2, generator=gen).cumsum(0) * 0.1
    return TrajectoryExplorer(walk, torch.linspace(1, 0, STEPS + 1), n_lines=5)


def test_frame_steps_keep_both_ends_and_the_cap():
    assert sv.frame_steps(3) == [0, 1, 2, 3]
    steps = sv.frame_steps(100, 11)
    assert steps[0] == 0 and steps[-1] == 100 and len(steps) == 11
    with pytest.raises(ValueError):
        sv.frame_steps(5, 1)


def test_frames_are_the_widgets_own_pictures_and_the_widget_is_put_back(explorer):
    explorer.step_to(7)
    (fig,) = sv.stepped_figures(explorer, max_frames=7)
    steps = sv.frame_steps(STEPS, 7)
    assert [f.name for f in fig.frames] == [str(i) for i in steps]
    assert explorer.step == 7 and explorer.slider.value == 7
    moving = list(fig.frames[0].traces)
    names = [explorer.figure.data[j].name for j in moving]
    assert "paths" not in names and "x_t" in names  # what never changes is drawn once
    for k, i in enumerate(steps):
        explorer.step_to(i)
        assert list(fig.frames[k].traces) == moving
        for j, shown in zip(moving, fig.frames[k].data, strict=True):
            live = explorer.figure.data[j]
            for axis in ("x", "y"):
                np.testing.assert_allclose(
                    np.asarray(shown[axis], float), numbers(live[axis]), rtol=1e-6, equal_nan=True
                )
    slider = fig.layout.sliders[0]
    assert [s.label for s in slider.steps] == [str(i) for i in steps]
    assert [b.label for b in fig.layout.updatemenus[0].buttons] == ["Play", "Pause"]
    assert "Plotly.animate" not in sv.figure_html(fig)  # it waits for Play
    assert traces(fig.frames[0].data) != traces(fig.frames[-1].data)  # the points move
    assert fig.frames[0].data[-1].x.dtype == np.float32  # written as base64


def test_static_html_of_a_plain_explorer_and_of_a_bare_control():
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    box = widgets.VBox([widgets.HTML("<b>readout</b>"), LiveFigure(fig), widgets.HTML(" ")])
    out = sv.static_html(box)
    assert out.count("Plotly.newPlot") == 1 and "<b>readout</b>" in out
    assert "plotly.min.js" not in out and "cdn" not in out.lower()
    assert "run the notebook" in sv.static_html(widgets.IntSlider())


def test_enable_displays_widgets_and_figures_as_html(explorer):
    shell = InteractiveShell.instance()
    sv.enable(shell)
    data, _ = shell.display_formatter.format(explorer)
    assert "text/html" in data and data["text/html"].count("Plotly.newPlot") == 1
    assert "application/vnd.jupyter.widget-view+json" not in data
    with capture_output() as shown:  # a plotly figure displays itself: its display call
        shell.display_formatter.format(go.Figure(go.Bar(y=[1, 2])))
        shell.display_formatter.format(LiveFigure(go.Figure(go.Bar(y=[3]))))
    pages = [out.data["text/html"] for out in shown.outputs]
    assert len(pages) == 2 and all(p.count("Plotly.newPlot") == 1 for p in pages)


def test_compact_writes_numbers_as_float32_and_gaps_as_nan():
    out = sv.compact({"type": "scatter", "x": [0.5, None, 2], "y": ["a", "b", "c"], "z": []})
    assert out["x"].dtype == np.float32 and np.isnan(out["x"][1])
    assert out["y"] == ["a", "b", "c"] and out["z"] == []
    assert "bdata" in sv.figure_html(go.Figure(go.Scatter(x=[1.0, 2.0], y=[3.0, 4.0])))
