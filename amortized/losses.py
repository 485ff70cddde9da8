"""Training losses for the mask initializer: the supervised fit to exact targets, the RDE objective of a mask (at
the prediction, or after unrolled refinement steps from it) and the per-scale validation error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rde.errors import InputError
from rde.layout import MaskLayout
from rde.warmup import WarmStart, Warmup

if TYPE_CHECKING:
    from rde.explainer import RDE


def risk_averse_mask_loss(
    pred: Tensor,
    target: Tensor,
    layout: MaskLayout,
    under_weight: float = 4.0,
    scale_weights: Sequence[float] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Asymmetric squared error, averaged per scale, then a weighted mean over scales.

    Predicting a coefficient *below* its target costs ``under_weight`` times more than predicting it
    above: a needed coefficient that starts too low can destroy the class, one kept by mistake only
    costs Adam ~value/lr steps. ``under_weight=1`` is plain MSE.

    Each scale counts by its weight, not by its number of entries, so the 64 lowpass entries are not
    drowned by the ~13k finest-level ones. Returns the loss and the per-scale (unweighted) losses.
    """
    if under_weight <= 0:
        raise InputError(f"under_weight must be positive, got {under_weight}")
    weights = torch.ones(len(layout.scales)) if scale_weights is None else torch.tensor(list(scale_weights), dtype=torch.float32)
    if weights.numel() != len(layout.scales):
        raise InputError(f"scale_weights has {weights.numel()} entries, the layout has {len(layout.scales)} scales")
    diff = target - pred
    err = torch.where(diff > 0, under_weight * diff.square(), diff.square())
    per_scale = {s.name: err[:, layout.scale_slice(i)].mean() for i, s in enumerate(layout.scales)}
    stacked = torch.stack(list(per_scale.values()))
    weights = weights.to(stacked)
    return (stacked * weights).sum() / weights.sum(), per_scale


def per_scale_abs_error(pred: Tensor, target: Tensor, layout: MaskLayout) -> dict[str, Tensor]:
    """Mean absolute error per scale (a validation metric)."""
    return {s.name: (pred - target)[:, layout.scale_slice(i)].abs().mean() for i, s in enumerate(layout.scales)}


def objective_term(explainer: RDE, images: Tensor, mask: Tensor, targets: Tensor, num_samples: int,
                   seeds: Sequence[int], barrier_weight: float) -> tuple[Tensor, Tensor]:
    """Per image, the RDE objective of ``mask`` plus ``barrier_weight`` times the lost log-probability of the class,
    and that barrier. The barrier teaches a network to keep the class: a sparse prediction often loses it, and an
    empty mask can have a low loss for a low-confidence class."""
    obj = explainer.objective(images, mask, target=targets, num_samples=num_samples, seed=list(seeds))
    barrier = F.relu(-obj["target_logprob"])
    return obj["loss"] + barrier_weight * barrier, barrier


def unrolled_refinement(explainer: RDE, images: Tensor, mask: Tensor, targets: Tensor, steps: int, lr: float,
                        num_samples: int = 2, seed: int = 0) -> Tensor:
    """``mask`` after ``steps`` steps of the start's warm-up run from it, differentiable w.r.t. ``mask`` to first order.

    The steps are :class:`rde.warmup.WarmStart`'s own (Adam at ``lr`` with a fresh state, ``num_samples`` noisy
    copies, the log-probability barrier, clamping to [0, 1]), so they are the first steps the shipped start takes
    after the prediction. The gradient is first order, as in first-order MAML: d refined / d mask is taken as the
    identity on the coefficients that end inside (0, 1) and 0 on those clamped to a bound, so a loss on the
    refined mask sends its gradient *at the refined point* back to the prediction. Exact second order would need
    a double backward through the classifier at each of the ``steps`` steps (memory growing with ``steps``), and
    Adam's normalised steps (its first one is ``lr * sign(gradient)``) depend little on the gradient's size, so
    that path carries little anyway.
    """
    warmup = Warmup(steps=steps, num_samples=num_samples, lr=lr, prune_steps=0)
    refined = WarmStart(explainer, warmup, seed=seed).warm(images, mask.detach(), targets).mask.detach()
    inside = ((refined > 0) & (refined < 1)).to(mask.dtype)
    return refined + inside * (mask - mask.detach())
