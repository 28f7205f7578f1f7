"""Figures of rectified flows (chapter 03): many paths drawn as one line trace with their
end points, and the exact Gaussian 1-RF and 2-RF flows side by side (the closed forms of
``theory.rectified_flow``). Data in, ``go.Figure`` (or traces) out.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from torch import Tensor

from pflow_explore.viz import style
from pflow_explore.viz.panels import panel_grid
from pflow_explore.viz.points import points_trace, trajectories_trace

LINES = "rgba(31,119,180,0.5)"  # paths and interpolation lines, see-through


def paths_with_ends(paths: Tensor, name: str) -> list[go.Scatter]:
    """m paths (T + 1, m, 2) as one line trace, and their end points as small red markers."""
    ends = points_trace(paths[-1], "ends", style.RED)
    return [trajectories_trace(paths, name, LINES), ends]


def gaussian_rf_figure(
    mu: tuple[float, float] = (2.5, 0.0), sigma: float = 0.35, n: int = 40, seed: int = 3
) -> go.Figure:
    """Exact 1-RF paths (``theory.gaussian_rf_flow``) and the exact 2-RF straight lines from
    the same starts to the same ends, N(0, I) -> N(mu, sigma^2 I) in 2D, with the one Euler
    step of 1-RF (every start lands on mu)."""
    from pflow_explore.theory.rectified_flow import gaussian_2rf_flow, gaussian_rf_flow

    z0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    m = torch.tensor(mu, dtype=torch.float64)
    t = torch.linspace(0, 1, 25, dtype=torch.float64)
    x_mark = points_trace(m[None], "one Euler step", "black", 12).update(marker_symbol="x")
    rf1 = paths_with_ends(gaussian_rf_flow(z0, t, m, sigma), "1-RF") + [x_mark]
    rf2 = paths_with_ends(gaussian_2rf_flow(z0, t, m, sigma), "2-RF")
    titles = ["1-RF: curved, bunching at mid-time", "2-RF: straight lines, same end points"]
    title = f"Exact rectified flows N(0, I) -> N({mu}, {sigma}^2 I); x: where one Euler "
    title += "step of 1-RF sends every start"
    return panel_grid([[rf1, rf2]], titles, (0.05, 0.1), height=340, width=820, title=title)
