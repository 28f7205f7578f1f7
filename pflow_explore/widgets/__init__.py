"""Explorers built from ``viz`` traces and ipywidgets: step through, play, change parameters.

Interactive figures are ``LiveFigure``s (plotly's ``go.FigureWidget`` loading plotly.js once
per page, ``live_figure``) updated in place (``fig.show()`` renders blank in Voila); bad input
shows a message next to the controls (``messages``), never a traceback.
"""

from __future__ import annotations

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

__all__ = [
    "DigitsStepper",
    "EPRSweep",
    "ParticleMovie",
    "relative_error",
    "validated_movie",
    "FewStepDigits",
    "GaussianPlayground",
    "InterpolantExplorer",
    "JumpExplorer",
    "LiveFigure",
    "ReflowExplorer",
    "ReflowState",
    "SDEStepper",
    "euler_paths",
    "sampled_states",
    "fixed_feature_share",
    "TrajectoryExplorer",
    "clear_message",
    "describe_error",
    "message_html",
    "message_label",
    "show_message",
    "show_rejected",
    "shown_errors",
    "validated_trajectories",
]
