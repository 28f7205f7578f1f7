"""The course outline: the twelve chapters in teaching order, and which of them exist.

This is content (titles, one-line ideas), not a registry: what exists is found by
convention, a notebook ``notebooks/NN_slug.ipynb`` (see :func:`notebooks`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

NOTEBOOK_NAME = re.compile(r"^(\d\d)_([a-z0-9_]+)\.ipynb$")


@dataclass(frozen=True)
class Chapter:
    number: int
    slug: str
    title: str
    paper: str
    idea: str


OUTLINE: tuple[Chapter, ...] = (
    Chapter(
        1,
        "painters",
        "Diffusion models generate images like painters",
        "Wang & Vastola, 2023",
        "For Gaussian data the PF-ODE has a closed form: outlines appear first, details last.",
    ),
    Chapter(
        2,
        "interpolants",
        "Stochastic interpolants",
        "Albergo, Boffi & Vanden-Eijnden, 2023",
        "One learned pair (velocity, score) gives a whole family of ODE and SDE samplers.",
    ),
    Chapter(
        3,
        "rectified_flow",
        "Rectified flow and InstaFlow",
        "Liu et al., 2023",
        "Reflow straightens paths until one Euler step is enough; then distil.",
    ),
    Chapter(
        4,
        "ctm",
        "Consistency trajectory models",
        "Kim et al., 2023",
        "Learn the PF-ODE's anytime-to-anytime jump G(x_t, t, s), not only its end point.",
    ),
    Chapter(
        5,
        "mr_sampler",
        "MR sampler for mean-reverting diffusion",
        "Li et al., 2025",
        "Exponential integrators solve the mean-reverting PF-ODE in a few steps.",
    ),
    Chapter(
        6,
        "ctmsr",
        "Consistency trajectory matching for super-resolution",
        "You et al., 2025",
        "A PF-ODE from the noisy upsampled image to the sharp one, learned in one step.",
    ),
    Chapter(
        7,
        "adjoint",
        "AdjointDPM",
        "Pan et al., 2023",
        "Gradients through the sampler by an adjoint ODE, with constant memory.",
    ),
    Chapter(
        8,
        "code_editing",
        "CODE: confident ordinary differential editing",
        "van Delft, Martorella & Alahi, 2024",
        "Invert with the PF-ODE, correct with Langevin steps: fidelity and realism apart.",
    ),
    Chapter(
        9,
        "arflow",
        "ARFlow: autoregressive flow",
        "Hui et al., 2025",
        "Sequences of noisy images, denoised causally, carry context along the trajectory.",
    ),
    Chapter(
        10,
        "flexiclip",
        "FlexiClip: free-form character animation",
        "Khandelwal, 2025",
        "A neural ODE on pose Jacobians keeps clipart motion smooth and local.",
    ),
    Chapter(
        11,
        "nsg_video",
        "NSG-VD: physics-driven video detection",
        "Zhang et al., 2025",
        "The continuity equation of a video's probability flow exposes generated videos.",
    ),
    Chapter(
        12,
        "active_matter",
        "Probability flows in active matter",
        "Boffi & Vanden-Eijnden, 2023",
        "The learned probability flow measures entropy production, particle by particle.",
    ),
)


def repo_root() -> Path:
    """The checkout this package runs from (the folder holding notebooks/)."""
    return Path(__file__).resolve().parents[1]


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def notebooks() -> dict[str, Path]:
    """Existing notebooks by slug, in order: ``{"start_here": .../00_start_here.ipynb, ...}``."""
    found = {}
    for path in sorted(notebooks_dir().glob("*.ipynb")):
        match = NOTEBOOK_NAME.match(path.name)
        if match:
            found[match.group(2)] = path
    return found


def chapter(slug: str) -> Chapter | None:
    """The outline entry for ``slug`` (None for the front door or an unplanned slug)."""
    return next((c for c in OUTLINE if c.slug == slug), None)
