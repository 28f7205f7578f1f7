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
from typing import TYPE_CHECKING, Any

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
__all__ = [  # the names of _HOME (tests/widgets/test_package.py checks both agree)
    "DigitsStepper",
    "EPRSweep",
    "FewStepDigits",
    "GaussianPlayground",
    "InterpolantExplorer",
    "JumpExplorer",
    "LiveFigure",
    "ParticleMovie",
    "ReflowExplorer",
    "ReflowState",
    "SDEStepper",
    "TrajectoryExplorer",
    "clear_message",
    "describe_error",
    "euler_paths",
    "fixed_feature_share",
    "message_html",
    "message_label",
    "relative_error",
    "sampled_states",
    "show_message",
    "show_rejected",
    "shown_errors",
    "validated_movie",
    "validated_trajectories",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


if TYPE_CHECKING:  # what type checkers and editors see
    from pflow_explore.widgets.digits_stepper import DigitsStepper, fixed_feature_share
    from pflow_explore.widgets.epr_sweep import EPRSweep, relative_error
    from pflow_explore.widgets.few_step_digits import FewStepDigits, sampled_states
    from pflow_explore.widgets.gaussian_playground import GaussianPlayground
    from pflow_explore.widgets.interpolant_explorer import InterpolantExplorer
    from pflow_explore.widgets.jump_explorer import JumpExplorer
    from pflow_explore.widgets.live_figure import LiveFigure
    from pflow_explore.widgets.messages import (
        clear_message,
        describe_error,
        message_html,
        message_label,
        show_message,
        show_rejected,
        shown_errors,
    )
    from pflow_explore.widgets.particle_movie import ParticleMovie, validated_movie
    from pflow_explore.widgets.reflow_explorer import ReflowExplorer, ReflowState, euler_paths
    from pflow_explore.widgets.sde_stepper import SDEStepper
    from pflow_explore.widgets.trajectory import TrajectoryExplorer, validated_trajectories
