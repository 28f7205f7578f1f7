"""Small networks shared by the chapters: time/class embeddings, an MLP, a UNet and the
shipped digits classifier; a local, permutation-equivariant transformer over particles and
the score networks of active particles built on it."""

from __future__ import annotations

from pflow_explore.nets.classifier import DigitsCNN, load_digits_classifier
from pflow_explore.nets.embeddings import ClassEmbedding, TimeEmbedding, drop_labels
from pflow_explore.nets.local_transformer import LocalTransformer, knn, wrap_displacement
from pflow_explore.nets.mlp import MLP, NoiseLevelMLP
from pflow_explore.nets.particle_scores import (
    ChainScore,
    PropulsionScore,
    TrapScore,
    make_local_net,
)
from pflow_explore.nets.unet import UNet

__all__ = [
    "NoiseLevelMLP",
    "MLP",
    "ChainScore",
    "ClassEmbedding",
    "DigitsCNN",
    "LocalTransformer",
    "PropulsionScore",
    "TimeEmbedding",
    "TrapScore",
    "UNet",
    "drop_labels",
    "knn",
    "wrap_displacement",
    "load_digits_classifier",
    "make_local_net",
]
