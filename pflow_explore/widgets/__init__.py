"""Explorers built from ``viz`` traces and ipywidgets: step through, play, change parameters.

Interactive figures are ``LiveFigure``s (plotly's ``go.FigureWidget`` loading plotly.js once
per page, ``live_figure``) updated in place (``fig.show()`` renders blank in Voila); bad input
shows a message next to the controls (``messages``), never a traceback.

The names below load their module on first use (PEP 562): ``from pflow_explore.widgets import
LiveFigure`` does not import every explorer, nor what they import (sympy through the Gaussian
theory: about 1 s of a dashboard's first open).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "DigitsStepper": "digits_stepper",
    "fixed_feature_share": "digits_stepper",
    "EPRSweep": "epr_sweep",
    "relative_error": "epr_sweep",
    "FewStepDigits": "few_step_digits",
    "sampled_states": "few_step_digits",
    "GaussianPlayground": "gaussian_playground",
    "InterpolantExplorer": "interpolant_explorer",
    "JumpExplorer": "jump_explorer",
    "LiveFigure": "live_figure",
    "clear_message": "messages",
    "describe_error": "messages",
    "message_html": "messages",
    "message_label": "messages",
    "show_message": "messages",
    "show_rejected": "messages",
    "shown_errors": "messages",
    "ParticleMovie": "particle_movie",
    "validated_movie": "particle_movie",
    "ReflowExplorer": "reflow_explorer",
    "ReflowState": "reflow_explorer",
    "euler_paths": "reflow_explorer",
    "SDEStepper": "sde_stepper",
    "TrajectoryExplorer": "trajectory",
    "validated_trajectories": "trajectory",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
