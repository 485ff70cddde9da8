"""Distortion measures d(Phi(x), Phi(y)) between the classifier's output on the image and on obfuscations.

Each takes the reference probabilities ``(B, K)``, the obfuscations' logits ``(B, L, K)`` and the
explained classes ``(B,)``, and returns per-sample distortions ``(B, L)``; the optimizer averages over L.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from rde.errors import InputError

DistortionFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def _target_prob(probs: Tensor, target: Tensor) -> Tensor:
    index = target.view(-1, *([1] * (probs.dim() - 1))).expand(*probs.shape[:-1], 1)
    return probs.gather(-1, index).squeeze(-1)


def label(reference: Tensor, logits: Tensor, target: Tensor) -> Tensor:
    """(p_j(x) - p_j(y))^2 for the explained class j (the paper's choice)."""
    return (_target_prob(reference, target).unsqueeze(1) - _target_prob(logits.softmax(-1), target)) ** 2


def maximize_target(reference: Tensor, logits: Tensor, target: Tensor) -> Tensor:
    """(1 - p_j(y))^2: keep what makes the classifier sure of class j, whatever it said on x."""
    return (1.0 - _target_prob(logits.softmax(-1), target)) ** 2


def l2(reference: Tensor, logits: Tensor, target: Tensor) -> Tensor:
    """Squared l2 distance between the full probability vectors."""
    return ((reference.unsqueeze(1) - logits.softmax(-1)) ** 2).sum(-1)


def kl(reference: Tensor, logits: Tensor, target: Tensor) -> Tensor:
    """KL(Phi(x) || Phi(y)) of the post-softmax distributions."""
    ref = reference.unsqueeze(1)
    return (torch.special.xlogy(ref, ref) - ref * logits.log_softmax(-1)).sum(-1)


DISTORTIONS: dict[str, DistortionFn] = {
    "label": label,
    "maximize-target": maximize_target,
    "l2": l2,
    "kl": kl,
}


BARRIER_SUFFIX = "+barrier"


def log_prob_barrier(reference: Tensor, logits: Tensor, target: Tensor) -> Tensor:
    """max(0, log p_j(x) - log p_j(y)): grows without bound as the class fades, so its gradient does not vanish
    where the label distortion's does (a softmax saturated at p_j(y) ~ 0)."""
    ref = _target_prob(reference, target).clamp_min(1e-12).log().unsqueeze(1)
    return (ref - _target_prob(logits.log_softmax(-1), target)).clamp_min(0.0)


def _with_barrier(distortion: DistortionFn) -> DistortionFn:
    def barred(reference: Tensor, logits: Tensor, target: Tensor) -> Tensor:
        return distortion(reference, logits, target) + log_prob_barrier(reference, logits, target)

    return barred


def get_distortion(name: str) -> DistortionFn:
    """The distortion called ``name``; ``<name>+barrier`` adds :func:`log_prob_barrier` (the warm-up's objective)."""
    base = name.removesuffix(BARRIER_SUFFIX)
    try:
        fn = DISTORTIONS[base]
    except KeyError:
        raise InputError(f"unknown distortion {name!r}; choose one of {', '.join(DISTORTIONS)}") from None
    return _with_barrier(fn) if name.endswith(BARRIER_SUFFIX) else fn
