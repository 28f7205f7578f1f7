"""Exact mathematics: the ground truth that tests and chapters compare against."""

from __future__ import annotations

from pflow_explore.theory.gaussian_flow import Derivation, GaussianFlow, rotation_residual
from pflow_explore.theory.interpolant_fields import InterpolantFields
from pflow_explore.theory.mixtures import MixtureFlow

__all__ = ["MixtureFlow"]
__all__ += ["Derivation", "GaussianFlow", "rotation_residual"]
__all__ += ["InterpolantFields"]
