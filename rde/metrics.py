"""Comparing optimizations: steps-to-reach, speedup and rate-distortion curves."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from rde.errors import InputError
from rde.explainer import RDE


def moving_average(curves: Tensor, window: int = 10) -> Tensor:
    """Trailing moving average along the last dim; the first ``window-1`` entries average what exists."""
    if window < 1:
        raise InputError(f"window must be >= 1, got {window}")
    c = curves.double().cumsum(-1)
    out = c.clone()
    out[..., window:] = c[..., window:] - c[..., :-window]
    counts = torch.arange(1, curves.shape[-1] + 1, dtype=torch.float64, device=curves.device).clamp_max(window)
    return (out / counts).to(curves.dtype)


def steps_to_reach(curves: Tensor, reference: Tensor, window: int = 10) -> Tensor:
    """First step count from which the moving average stays at or below ``reference``.

    Args:
        curves: ``(B, N)`` per-step losses of the init under test.
        reference: ``(B,)`` level to reach, usually the ones-init moving average at its last step.
    Returns:
        ``(B,)`` float: a step count in 1..N, or ``inf`` where the curve never stays below.
    """
    ma = moving_average(curves, window)
    above = ma > reference.view(-1, 1).to(device=ma.device, dtype=ma.dtype)
    n = curves.shape[-1]
    idx = torch.arange(n, device=curves.device).expand_as(above)
    last_above = torch.where(above, idx, torch.full_like(idx, -1)).max(-1).values
    result = (last_above + 2).double()
    result[last_above == n - 1] = float("inf")
    return result


def collapsed(distortion: Tensor, target_probs: Tensor, window: int = 10, fraction: float = 0.5) -> Tensor:
    """``(B,)`` bool: the run ended with the class gone, its final distortion at least ``fraction * p_j(x)^2``.

    An empty mask has distortion ~``p_j(x)^2`` and zero sparsity, so for low-confidence images its loss
    can undercut a real explanation's. Such a run "reaches" a loss level without explaining anything;
    comparisons must not count it. The exact all-ones optima of the shared sample keep 42-105 % of the
    class probability on average under their own masks (an empty mask: < 1 %), so 0.5 separates the two.
    """
    final = moving_average(distortion, window)[:, -1]
    return final >= fraction * target_probs.to(final).square()


def reference_level(ones_curves: Tensor, window: int = 10) -> Tensor:
    """The target of steps-to-reach: the ones-init moving average at the last step, ``(B,)``."""
    return moving_average(ones_curves, window)[:, -1]


def loss_at(curves: Tensor, steps: Sequence[int], window: int = 10) -> dict[int, Tensor]:
    """Moving-average loss after ``s`` steps (a robust companion of steps-to-reach)."""
    if any(s < 1 for s in steps):
        raise InputError(f"steps must be >= 1, got {list(steps)}")
    ma = moving_average(curves, window)
    return {s: ma[:, min(s, ma.shape[-1]) - 1] for s in steps}


@torch.no_grad()
def rate_distortion_curve(
    explainer: RDE,
    images: Tensor,
    mask: Tensor,
    fractions: Sequence[float],
    mode: str = "keep",
    num_samples: int = 16,
    seed: int = 0,
) -> Tensor:
    """Distortion ``(B, len(fractions))`` when a fraction of the most relevant coefficients is kept or randomized.

    ``mode="keep"`` keeps the top fraction (by mask value) and randomizes the rest, as in the paper's
    rate-distortion curves (lower is better); ``mode="randomize"`` randomizes the top fraction and keeps
    the rest (higher is better).
    """
    if mode not in ("keep", "randomize"):
        raise InputError(f"mode must be 'keep' or 'randomize', got {mode!r}")
    order = mask.argsort(dim=1, descending=True)
    k = mask.shape[1]
    out = []
    for f in fractions:
        if not 0.0 <= f <= 1.0:
            raise InputError(f"fractions must lie in [0, 1], got {f}")
        top = torch.zeros_like(mask)
        n = int(round(f * k))
        if n:
            top.scatter_(1, order[:, :n], 1.0)
        binary = top if mode == "keep" else 1.0 - top
        out.append(explainer.objective(images, binary, num_samples=num_samples, seed=seed)["distortion"])
    return torch.stack(out, 1)
