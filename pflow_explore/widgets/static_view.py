"""Widgets on a page without a kernel: what the static course site (``make site``) shows.

After :func:`enable` (in the kernel that executes a chapter for the site), displaying an
ipywidget gives plain HTML instead of a widget view: every figure the widget holds (its
``FigureWidget``s, in order) as a static interactive plotly figure, then its text (readouts,
labels). A step-through widget (:class:`~pflow_explore.widgets.stepping.StepControls`)
becomes figures with plotly frames, a slider and a Play button, recorded by stepping the
widget itself, so each frame is the picture the widget draws at that step (the same viz
builders, nothing redrawn by hand); at most :data:`MAX_FRAMES` steps, evenly spaced.
Plain ``go.Figure`` outputs become the same kind of HTML. Nothing here loads plotly.js: the
page serves one copy for all its figures.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.basedatatypes import BaseFigure

from pflow_explore.viz.html import compact, figure_html, plain_copy
from pflow_explore.widgets.stepping import StepControls

MAX_FRAMES = 40
FRAME_LAYOUT = ("title", "annotations", "shapes")  # what a step may change in the layout


def figures_of(widget: widgets.Widget) -> list[go.FigureWidget]:
    """The figure widgets inside ``widget`` (itself included), depth first, in order."""
    return [w for w in _walk(widget) if isinstance(w, go.FigureWidget)]


def texts_of(widget: widgets.Widget) -> list[str]:
    """The non-empty values of the HTML and Label widgets inside ``widget``, in order
    (Label values escaped)."""
    out = []
    for w in _walk(widget):
        if isinstance(w, widgets.HTML) and w.value.strip():
            out.append(w.value)
        elif isinstance(w, widgets.Label) and w.value.strip():
            out.append(html.escape(w.value))
    return out


def _walk(widget: Any) -> Iterator[Any]:
    yield widget
    for child in getattr(widget, "children", ()) or ():
        yield from _walk(child)


def frame_steps(n_steps: int, max_frames: int = MAX_FRAMES) -> list[int]:
    """Steps 0 .. n_steps, at most ``max_frames`` of them, evenly spaced, both ends kept."""
    if n_steps < 0 or max_frames < 2:
        raise ValueError(f"need n_steps >= 0 and max_frames >= 2, got {n_steps}, {max_frames}")
    count = min(n_steps + 1, max_frames)
    return sorted({int(i) for i in np.linspace(0, n_steps, count).round()})


def _snapshot(fig: go.FigureWidget) -> tuple[list[dict], dict]:
    data = [compact(trace.to_plotly_json()) for trace in fig.data]
    layout = fig.layout.to_plotly_json()
    return data, {key: layout[key] for key in FRAME_LAYOUT if key in layout}


def _changing(shots: list[tuple[list[dict], dict]]) -> list[int]:
    """Indices of the traces that differ between the recorded steps (the others are drawn
    once, in the figure, not repeated in every frame)."""
    as_json = [[pio.to_json(t) for t in data] for data, _ in shots]
    return [k for k in range(len(as_json[0])) if any(row[k] != as_json[0][k] for row in as_json)]


def stepped_figures(stepper: StepControls, max_frames: int = MAX_FRAMES) -> list[go.Figure]:
    """One plain figure per figure of ``stepper``, each with a frame per recorded step
    (:func:`frame_steps`), a step slider and Play / Pause buttons; the widget is stepped
    through them and put back on the step it showed. A frame carries the traces that change
    between steps and the layout's title, annotations and shapes."""
    figs, start = figures_of(stepper), stepper.step
    steps = frame_steps(stepper.n_steps, max_frames)
    recorded: list[list[tuple[list[dict], dict]]] = [[] for _ in figs]
    try:
        for i in steps:
            stepper.step_to(i)
            for k, fig in enumerate(figs):
                recorded[k].append(_snapshot(fig))
    finally:
        stepper.step_to(start)
    noun = getattr(stepper, "step_noun", "step")
    out = []
    for fig, shots in zip(figs, recorded, strict=True):
        moving = _changing(shots)
        frames = [
            go.Frame(data=[data[k] for k in moving], traces=moving, layout=layout, name=str(i))
            for i, (data, layout) in zip(steps, shots, strict=True)
        ]
        first = steps.index(start) if start in steps else 0
        static = go.Figure(data=shots[first][0], layout=fig.layout.to_plotly_json(), frames=frames)
        static.update_layout(shots[first][1])
        _add_player(static, steps, noun, first)
        out.append(static)
    return out


def _add_player(fig: go.Figure, steps: list[int], noun: str, active: int) -> None:
    still = {"duration": 0}
    now = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": still}
    play = {"frame": {"duration": 300, "redraw": True}, "fromcurrent": True, "transition": still}
    fig.update_layout(
        sliders=[
            dict(
                active=active,
                currentvalue=dict(prefix=f"{noun} "),
                pad=dict(t=40),
                steps=[dict(method="animate", label=str(i), args=[[str(i)], now]) for i in steps],
            )
        ],
        updatemenus=[
            dict(
                type="buttons",
                direction="left",
                x=0,
                y=0,
                xanchor="right",
                yanchor="top",
                pad=dict(t=40, r=10),
                buttons=[
                    dict(label="Play", method="animate", args=[None, play]),
                    dict(label="Pause", method="animate", args=[[None], now]),
                ],
            )
        ],
    )
    bottom = fig.layout.margin.b if fig.layout.margin.b is not None else 80
    fig.update_layout(margin=dict(b=max(bottom, 110)), height=(fig.layout.height or 450) + 60)


def static_html(widget: widgets.Widget) -> str:
    """What :func:`enable` shows for ``widget``: its figures (stepped ones with frames),
    then its text; a note where it holds no figure."""
    if isinstance(widget, StepControls):
        figs = stepped_figures(widget)
    else:
        figs = [plain_copy(f) for f in figures_of(widget)]
    parts = [figure_html(f) for f in figs] + texts_of(widget)
    if not figs:
        parts.insert(0, "<em>(a control of the live dashboard: run the notebook to use it)</em>")
    return '<div class="pflow-static">' + "\n".join(parts) + "</div>"


def enable(shell: Any = None) -> None:
    """Show widgets and plotly figures as static HTML in this IPython ``shell`` (default:
    the running one). What a site build runs first in each chapter's kernel."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        raise RuntimeError("static_view.enable needs a running IPython kernel")
    formatter = shell.display_formatter
    formatter.mimebundle_formatter.for_type(widgets.Widget, lambda w: {"text/html": static_html(w)})
    # plotly figures display themselves (_ipython_display_), ahead of any mime formatter
    formatter.ipython_display_formatter.for_type(BaseFigure, _display_static)


def _display_static(fig: BaseFigure) -> None:
    from IPython.display import display

    page = static_html(fig) if isinstance(fig, widgets.Widget) else figure_html(fig)
    display({"text/html": page}, raw=True)
