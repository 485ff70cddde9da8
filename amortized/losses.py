"""Training losses for the mask initializer."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from rde.errors import InputError
from rde.layout import MaskLayout


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
    costs Adam ~value/lr steps (../shared/notes/initialization.md). ``under_weight=1`` is plain MSE.

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
