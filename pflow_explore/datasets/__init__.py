"""Where samples come from (layer 3): toy 2D densities, Gaussian mixtures, digits, photo
patches, image degradations and active-particle simulations. Pure data: no plotting, no networks.

Note: ``pflow_explore.datasets.digits`` here is the function :func:`digits.digits`, which
shadows the submodule of the same name as an attribute; import module-level names with
``from pflow_explore.datasets.digits import upscale``.
"""

from __future__ import annotations

from .degradations import (
    UPSAMPLE_MODES,
    add_noise,
    apply_mask,
    box_mask,
    downsample,
    gaussian_blur,
    gaussian_kernel_1d,
    random_mask,
    upsample,
)
from .digits import SIZES as DIGIT_SIZES
from .digits import SPLITS as DIGIT_SPLITS
from .digits import augment, digits, upscale
from .mixture import GaussianMixture
from .particles import (
    AOUP,
    ParticleTrajectory,
    box_for_packing_fraction,
    cluster_fraction,
    gas_fraction,
    lattice_laplacian,
    minimum_image,
    mips_model,
    ou_step,
    packing_fraction,
    phase_labels,
    ring_laplacian,
    simulate,
    simulate_frames,
    stationary_samples,
    wrap,
)
from .patches import (
    COLOR_PHOTOS,
    DEFAULT_COLOR,
    DEFAULT_GRAY,
    GRAY_PHOTOS,
    PHOTOS,
    photo,
    photo_patches,
)
from .toy2d import (
    TOY_2D,
    TOY_2D_MIXTURES,
    checkerboard,
    checkerboard_log_prob,
    concentric_rings,
    eight_gaussians,
    random_mixture,
    sample_toy,
    single_gaussian,
    spirals,
    two_moons,
)

__all__ = [
    "AOUP",
    "ParticleTrajectory",
    "box_for_packing_fraction",
    "cluster_fraction",
    "gas_fraction",
    "lattice_laplacian",
    "minimum_image",
    "mips_model",
    "ou_step",
    "packing_fraction",
    "phase_labels",
    "ring_laplacian",
    "simulate",
    "simulate_frames",
    "stationary_samples",
    "wrap",
    "COLOR_PHOTOS",
    "DEFAULT_COLOR",
    "DEFAULT_GRAY",
    "DIGIT_SIZES",
    "DIGIT_SPLITS",
    "GRAY_PHOTOS",
    "PHOTOS",
    "TOY_2D",
    "TOY_2D_MIXTURES",
    "UPSAMPLE_MODES",
    "GaussianMixture",
    "add_noise",
    "apply_mask",
    "augment",
    "box_mask",
    "checkerboard",
    "checkerboard_log_prob",
    "concentric_rings",
    "digits",
    "downsample",
    "eight_gaussians",
    "gaussian_blur",
    "gaussian_kernel_1d",
    "photo",
    "photo_patches",
    "random_mask",
    "random_mixture",
    "sample_toy",
    "single_gaussian",
    "spirals",
    "two_moons",
    "upsample",
    "upscale",
]
