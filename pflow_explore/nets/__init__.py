"""Small networks shared by the chapters: time/class embeddings, an MLP, a UNet and the
shipped digits classifier."""

from __future__ import annotations

from pflow_explore.nets.classifier import DigitsCNN, load_digits_classifier
from pflow_explore.nets.embeddings import ClassEmbedding, TimeEmbedding, drop_labels
from pflow_explore.nets.mlp import MLP
from pflow_explore.nets.unet import UNet

__all__ = [
    "MLP",
    "ClassEmbedding",
    "DigitsCNN",
    "TimeEmbedding",
    "UNet",
    "drop_labels",
    "load_digits_classifier",
]
