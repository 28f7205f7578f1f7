"""viz.quality: the quality-against-steps figure, read back through plotly's JSON."""

from __future__ import annotations

import json
import math

import plotly.io as pio
import torch

from pflow_explore.viz.quality import quality_vs_steps_figure


def _figure(floor: float = 0.5):
    curves = {"teacher": (torch.tensor([1, 4, 16]), torch.tensor([9.0, 3.0, 1.0]), "abc")}
    one_step = {"student": (2.0, "s")}
    colors = {"teacher": "#111111", "student": "#222222"}
    return quality_vs_steps_figure(
        curves, one_step, colors, floor, "data", title="t", x_title="steps", y_title="FD"
    )


def test_curves_stars_and_floor_carry_the_numbers():
    fig = json.loads(pio.to_json(_figure()))
    curve, star = fig["data"]
    assert curve["x"] == [1.0, 4.0, 16.0] and curve["y"] == [9.0, 3.0, 1.0]
    assert curve["line"]["color"] == "#111111" and curve["text"] == ["a", "b", "c"]
    assert star["x"] == [1] and star["y"] == [2.0] and star["marker"]["symbol"] == "star"
    assert star["marker"]["color"] == "#222222" and star["mode"] == "markers"
    assert fig["layout"]["xaxis"]["type"] == "log" and fig["layout"]["yaxis"]["type"] == "log"
    (line,) = fig["layout"]["shapes"]
    assert line["y0"] == line["y1"] == 0.5 and line["line"]["dash"] == "dot"
    assert fig["layout"]["annotations"][0]["text"] == "data"


def test_a_nan_floor_draws_no_line():
    fig = json.loads(pio.to_json(_figure(math.nan)))
    assert not fig["layout"].get("shapes")
