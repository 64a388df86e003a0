"""Model adapters and the embedded default model."""

from .base import Model, as_model
from .default import imagenet_labels, load_model

__all__ = ["Model", "as_model", "load_model", "imagenet_labels"]
