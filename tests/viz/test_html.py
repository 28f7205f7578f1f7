"""viz/html.py: the one way figures become HTML (the static site and `pflow-explore
figures`): numbers as base64 float32, no plotly.js in a figure's own HTML, a standalone page
that carries plotly.js and asks nothing of the network."""

from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from pflow_explore.viz import html


def test_figure_html_is_compact_and_leaves_plotly_js_to_the_page():
    x = np.linspace(0, 1, 500)
    fig = go.Figure(go.Scatter(x=x.tolist(), y=(x**2).tolist()))
    out = html.figure_html(fig)
    assert out.count("Plotly.newPlot") == 1 and '"bdata"' in out
    as_decimals = pio.to_html(fig, include_plotlyjs=False, full_html=False)
    assert len(out) < len(as_decimals) - 10_000  # 1000 numbers: ~5 kB of base64, not ~19 kB
    assert "<script src=" not in out


def test_standalone_page_carries_plotly_and_no_outside_address():
    page = html.standalone_page(html.figure_html(go.Figure(go.Bar(y=[1, 2]))), title="a<b")
    assert page.startswith("<!DOCTYPE html>") and "<title>a&lt;b</title>" in page
    assert len(page) > 3_000_000  # plotly.js inside
    assert not re.search(r'src="https?://', page)


def test_compact_keeps_gaps_and_text():
    out = html.compact({"x": [1, None, 3], "text": ["a", "b", "c"], "y": (1.5, 2.5)})
    assert np.isnan(out["x"][1]) and out["x"].dtype == np.float32
    assert out["text"] == ["a", "b", "c"] and out["y"].tolist() == [1.5, 2.5]
