"""Exact rate-distortion explanations: CartoonX (wavelet masks) and Pixel RDE.

Quick start::

    from rde import CartoonX, create_classifier
    clf = create_classifier("efficientnet_lite0")
    result = CartoonX(clf, preset="cpu").explain(images)   # images: (B, 3, 128, 128) in [0, 1]
    result.mask, result.explanation, result.history["loss"]
"""

import os as _os

# OpenMP threads that spin-wait between parallel regions make a shared or busy CPU many times slower (measured:
# benchmarks/bench_api_vs_cli.py). OpenMP reads this once, when torch loads it: set here, before torch is imported,
# the Python API is as fast as the command line, which sets it too. A value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rde.classifiers import (  # noqa: E402  (after the OpenMP setting)
    DEFAULT_CLASSIFIER,
    Classifier,
    create_classifier,
    imagenet_class_index,
    imagenet_classes,
    list_classifiers,
    register_classifier,
)
from rde.errors import InputError
from rde.explainer import RDE, CartoonX, PixelRDE
from rde.explanation import Explanation
from rde.io import ImageLoadError, load_image, load_images, preprocess
from rde.layout import MaskLayout
from rde.presets import RDEConfig, list_presets, load_preset
from rde.representation import PixelRepresentation, WaveletRepresentation
from rde.wavelets import WaveletConfig

__version__ = "0.1.0"

__all__ = [
    "CartoonX",
    "PixelRDE",
    "RDE",
    "Explanation",
    "Classifier",
    "DEFAULT_CLASSIFIER",
    "create_classifier",
    "list_classifiers",
    "register_classifier",
    "imagenet_classes",
    "imagenet_class_index",
    "MaskLayout",
    "WaveletConfig",
    "WaveletRepresentation",
    "PixelRepresentation",
    "RDEConfig",
    "load_preset",
    "list_presets",
    "load_image",
    "load_images",
    "preprocess",
    "ImageLoadError",
    "InputError",
]
