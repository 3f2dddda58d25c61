"""Offline encoders for raw node content: text (MiniLM, :mod:`.text`) and images (EfficientNet-Lite0,
:mod:`.image`, network in :mod:`.efficientnet_lite`). :func:`magkit.data.encode.encode_nodes` caches their
outputs as feature files."""

from .image import IMAGE_DIM, IMAGE_ENCODER, encode_images, load_image
from .text import TEXT_DIM, TEXT_ENCODER, encode_texts

__all__ = ["TEXT_ENCODER", "TEXT_DIM", "IMAGE_ENCODER", "IMAGE_DIM", "encode_texts", "encode_images", "load_image"]
