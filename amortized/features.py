"""What the initializer sees of an image, from one forward and backward pass of the frozen classifier.

* **Where the classifier looks:** its own intermediate feature maps at strides 2..32 (the anchors
  of amortized saliency, Dabkowski & Gal 2017 and Phang et al. 2021, decode masks from a pretrained
  encoder), taken with forward hooks at the modules named in :data:`FEATURE_TAPS`.
* **What the explained class needs:** the gradient of the target logit with respect to the image's
  wavelet coefficients, already in the mask layout: ``|sum_c g_c h_c|`` (gradient x input) and
  ``sum_c |g_c|``.
* **What the image holds:** the greyscale wavelet magnitudes per coefficient.

The cost is one classifier pass (forward and backward) on the clean images, i.e. ``1 / L`` of an
optimizer step that runs L noisy copies; :class:`~amortized.initializer.LearnedStart` reports it
in the :attr:`rde.start.Start.cost` it returns, and comparisons charge it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from rde.classifiers import Classifier
from rde.errors import InputError
from rde.representation import WaveletRepresentation, greyscale

# Stride name -> module path inside the Classifier wrapper, finest first. Classifiers not listed here
# give the initializer no feature maps (gradient and magnitude inputs only).
FEATURE_TAPS: dict[str, dict[str, str]] = {
    "efficientnet_lite0": {
        "s2": "model._blocks.0",
        "s4": "model._blocks.2",
        "s8": "model._blocks.4",
        "s16": "model._blocks.10",
        "s32": "model._blocks.15",
    },
    "tiny-test": {"s2": "model.1", "s4": "model.3"},
}


@dataclass
class ProbeResult:
    """The initializer's inputs for a batch of B images; flat tensors are ``(B, k)`` in the mask layout."""

    features: dict[str, Tensor]  # stride name -> (B, C, h, w), detached
    grad_x_input: Tensor  # |sum_c dlogit/dh_c * h_c|
    grad_abs: Tensor  # sum_c |dlogit/dh_c|
    magnitude: Tensor  # |h| of the greyscale image
    targets: Tensor  # (B,) explained classes
    probs: Tensor  # (B,) their probabilities on the clean image


def feature_taps(classifier_name: str) -> dict[str, str]:
    return dict(FEATURE_TAPS.get(classifier_name, {}))


@torch.enable_grad()
def probe(
    classifier: Classifier,
    representation: WaveletRepresentation,
    images: Tensor,
    targets: Tensor | None = None,
    taps: dict[str, str] | None = None,
) -> ProbeResult:
    """Features, class gradient and magnitudes of ``images`` ``(B, 3, H, W)`` in [0, 1] for ``targets``
    (default: the predicted classes), from one forward and backward pass of the clean images."""
    taps = feature_taps(classifier.name) if taps is None else taps
    captured: dict[str, Tensor] = {}
    with _tapped(classifier, taps, lambda name, out: captured.__setitem__(name, out.detach())):
        coefficients = representation.encode(images.float()).detach().requires_grad_(True)
        logits = classifier(representation.decode(coefficients).clamp(0.0, 1.0))
    if targets is None:
        targets = logits.argmax(-1)
    targets = targets.to(logits.device).long()
    (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), coefficients)
    with torch.no_grad():
        h = coefficients.detach()
        grey = representation.encode(greyscale(images.float())).squeeze(1)
        probs = logits.detach().softmax(-1).gather(1, targets[:, None]).squeeze(1)
    return ProbeResult(
        features={name: captured[name] for name in taps},
        grad_x_input=(grad * h).sum(1).abs(),
        grad_abs=grad.abs().sum(1),
        magnitude=grey.abs(),
        targets=targets,
        probs=probs,
    )


def feature_channels(classifier: nn.Module, taps: dict[str, str], image_size: int) -> dict[str, int]:
    """Channels of each tapped feature map, from one forward pass of a blank image."""
    found: dict[str, int] = {}
    device = next(iter(classifier.parameters())).device
    with _tapped(classifier, taps, lambda name, out: found.__setitem__(name, out.shape[1])), torch.no_grad():
        classifier(torch.zeros(1, 3, image_size, image_size, device=device))
    return {name: found[name] for name in taps}


@contextmanager
def _tapped(classifier: nn.Module, taps: dict[str, str], record: Callable[[str, Any], None]) -> Iterator[None]:
    """Call ``record(name, output)`` for every tapped module's output while the block runs; hooks are always removed."""
    modules = dict(classifier.named_modules())
    missing = [path for path in taps.values() if path not in modules]
    if missing:
        name = getattr(classifier, "name", type(classifier).__name__)
        raise InputError(f"classifier {name!r} has no module(s) {missing} to take features from")
    hooks = [
        modules[path].register_forward_hook(lambda _m, _a, out, name=name: record(name, out))
        for name, path in taps.items()
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
