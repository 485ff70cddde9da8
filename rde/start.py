"""A start: the mask an exact run begins from, and what getting there cost.

Every start that runs the classifier (a warm-up, a learned initializer and its guard) returns a :class:`Start`
value instead of reporting on the side, captum-style: the caller reads the cost from the value it got, so the
figure cannot depend on call order. Cost is counted in one unit everywhere, the optimizer steps of the preset's
run: a step is a forward and backward pass of ``num_samples`` noisy copies, so ``passes`` classifier passes cost
``passes / num_samples`` steps (:func:`steps_of_passes`); a forward-only check is charged as a full pass.

    start = WarmStart(explainer)(images)                      # or LearnedStart.for_explainer(explainer)(images)
    result = explainer.explain(images, init=start, steps=100)  # explain takes a Start as the init
    start.cost                                                 # (B,) what the start cost, in preset steps
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor

__all__ = ["Start", "StartFn", "steps_of_passes"]


def steps_of_passes(passes: Tensor | float, num_samples: int) -> Tensor:
    """Classifier passes (forward + backward of one image each) in optimizer steps of a run with ``num_samples``
    noisy copies per step; float64 on the CPU."""
    return torch.as_tensor(passes, dtype=torch.float64).cpu() / num_samples


@dataclasses.dataclass(frozen=True)
class Start:
    """A batch of starting masks and what they cost.

    Attributes:
        mask: ``(B, k)`` starting masks in [0, 1], in the explainer's layout.
        cost: ``(B,)`` float64: classifier passes spent on the start, in preset optimizer steps
            (:func:`steps_of_passes`); 0 for a start that ran nothing.
        pruned: ``(B,)`` bool: a warm-up's pruning phase ran on this image.
        backoffs: ``(B,)`` int64: how far a guard backed off toward all-ones (0: the first candidate passed).
    """

    mask: Tensor
    cost: Tensor
    pruned: Tensor
    backoffs: Tensor

    def __post_init__(self) -> None:
        if self.mask.dim() != 2:
            raise ValueError(f"Start.mask must be (B, k), got shape {tuple(self.mask.shape)}")
        batch = self.mask.shape[0]
        for name in ("cost", "pruned", "backoffs"):
            if tuple(getattr(self, name).shape) != (batch,):
                raise ValueError(f"Start.{name} must have shape ({batch},), got {tuple(getattr(self, name).shape)}")

    @classmethod
    def free(cls, mask: Tensor) -> Start:
        """A start that cost nothing (a given mask)."""
        batch = mask.shape[0]
        return cls(mask, torch.zeros(batch, dtype=torch.float64), torch.zeros(batch, dtype=torch.bool),
                   torch.zeros(batch, dtype=torch.long))

    def __len__(self) -> int:
        return self.mask.shape[0]

    def charged(self, extra: Tensor | float) -> Start:
        """The same start with ``extra`` steps (scalar or ``(B,)``) added to its cost."""
        return dataclasses.replace(self, cost=self.cost + torch.as_tensor(extra, dtype=torch.float64).cpu())

    def __getitem__(self, index: int | slice | Tensor) -> Start:
        """The starts of some images, e.g. ``start[i : i + 1]``."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Start(self.mask[index], self.cost[index], self.pruned[index], self.backoffs[index])


StartFn = Callable[..., "Start"]
"""Anything that makes starts: ``start_fn(images (B, 3, H, W), target=None) -> Start``."""
