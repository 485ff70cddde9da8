"""Obfuscation strategies: the random values that replace masked-out coefficients.

``adaptive-gaussian`` (the paper's): for every scale of the layout, Gaussian noise with the empirical
mean and (population) standard deviation of that scale's coefficients of the image itself, over all
channels. For Pixel RDE the single scale is all pixels. ``zero`` replaces with zeros.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from rde.errors import InputError
from rde.layout import MaskLayout

OBFUSCATIONS = ("adaptive-gaussian", "zero")


def scale_statistics(coefficients: Tensor, layout: MaskLayout) -> tuple[Tensor, Tensor]:
    """Per-image, per-scale mean and population std of ``(B, C, k)`` coefficients -> two ``(B, S)``."""
    means, stds = [], []
    for i in range(len(layout.scales)):
        group = coefficients[..., layout.scale_slice(i)].flatten(1)
        means.append(group.mean(dim=1))
        stds.append(group.std(dim=1, correction=0))
    return torch.stack(means, 1), torch.stack(stds, 1)


class Obfuscation:
    """Noise model fitted to a batch of images' coefficients; draws ``(B, L, C, k)`` samples."""

    def __init__(self, name: str, coefficients: Tensor, layout: MaskLayout) -> None:
        if name not in OBFUSCATIONS:
            raise InputError(f"unknown obfuscation {name!r}; choose one of {', '.join(OBFUSCATIONS)}")
        self.name = name
        self.channels = coefficients.shape[1]
        self.num_entries = layout.num_entries
        mean, std = scale_statistics(coefficients, layout)
        index = layout.scale_index.to(coefficients.device)
        self.mean = mean[:, index].unsqueeze(1)  # (B, 1, k)
        self.std = std[:, index].unsqueeze(1)

    def sample(self, num_samples: int, generators: Sequence[torch.Generator]) -> Tensor:
        """``(B, L, C, k)`` noise; image ``b`` draws from ``generators[b]`` alone, so a batch gives each image the
        values it gets alone. One buffer is filled in place: one RNG kernel per image (each image's own stream,
        exactly ``torch.randn``'s) and two in-place kernels for the whole batch's affine map; no per-image tensors, no stack copy."""
        batch = self.mean.shape[0]
        if len(generators) != batch:
            raise InputError(f"{len(generators)} noise generators for a batch of {batch} images")
        z = self.mean.new_empty(batch, num_samples, self.channels, self.num_entries)
        if self.name == "zero":
            return z.zero_()
        for row, generator in zip(z, generators):
            row.normal_(generator=generator)
        return z.mul_(self.std.unsqueeze(1)).add_(self.mean.unsqueeze(1))  # bitwise mean + std * z
