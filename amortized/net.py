"""The initializer network: image -> CartoonX wavelet mask in the optimizer's exact layout.

A small convolutional encoder (one stride-2 stage per DWT level) with a top-down (FPN) decoder. Each
DWT level j gets its own head on the decoder feature of stride 2^j, resized to the level's exact
coefficient grid and concatenated with that level's own wavelet magnitudes, so the head can place mass
on the coefficients that carry edges. The lowpass head works on the coarsest feature. Outputs are
``floor + (1 - floor) * sigmoid(logit)``: never below ``floor``, because a needed coefficient that starts
too low can destroy the class and collapse the refinement (../shared/notes/initialization.md).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rde.layout import MaskLayout
from rde.representation import WaveletRepresentation, greyscale
from rde.wavelets import WaveletConfig


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MaskNet(nn.Module):
    """Predict a wavelet mask ``(B, k)`` in [floor, 1] for images ``(B, 3, H, W)`` in [0, 1].

    Works for any image size that the DWT accepts; the layout follows the input size.

    Args:
        wavelet: the DWT whose mask layout is predicted (must match the preset's).
        width: channels of the first stage; later stages use 2x, 3x, 4x, 6x ...
        decoder_width: channels of the top-down features and the heads.
        floor: smallest value the network can output: one number, or one per scale (lowpass, level 1
            (finest) ... level J), e.g. a lower floor for the finest level, which exact masks drop almost entirely.
        coefficient_inputs: feed each head the wavelet magnitudes of its level (ablation switch).
        init_bias: initial head bias; 2.0 starts every prediction near ``floor + 0.88 (1 - floor)``, close
            to the all-ones start the exact optimizer is safe from, with sigmoid gradients still alive.
    """

    def __init__(
        self,
        wavelet: WaveletConfig | None = None,
        width: int = 16,
        decoder_width: int = 32,
        floor: float | Sequence[float] = 0.1,
        coefficient_inputs: bool = True,
        init_bias: float = 2.0,
    ) -> None:
        super().__init__()
        self.wavelet = wavelet or WaveletConfig()
        floors = [float(floor)] * (self.wavelet.levels + 1) if isinstance(floor, (int, float)) else [float(f) for f in floor]
        if len(floors) != self.wavelet.levels + 1:
            raise ValueError(f"floor needs one value per scale (lowpass + {self.wavelet.levels} levels), got {len(floors)}")
        if not all(0.0 <= f < 1.0 for f in floors):
            raise ValueError(f"floor values must lie in [0, 1), got {floors}")
        self.floors = floors
        self.coefficient_inputs = coefficient_inputs
        levels = self.wavelet.levels
        mults = [1, 2, 3, 4, 6, 8, 8, 8][:levels]
        mults += [mults[-1]] * (levels - len(mults))
        chans = [width * m for m in mults]
        stages, cin = [], 3
        for c in chans:
            stages.append(nn.Sequential(_conv_bn(cin, c, 2), _conv_bn(c, c)))
            cin = c
        self.stages = nn.ModuleList(stages)
        self.lateral = nn.ModuleList(nn.Conv2d(c, decoder_width, 1) for c in chans)
        extra = 3 if coefficient_inputs else 0
        self.heads = nn.ModuleList(self._head(decoder_width + extra, 3, init_bias) for _ in range(levels))
        self.lowpass_head = self._head(decoder_width + (1 if coefficient_inputs else 0), 1, init_bias)
        self._representations: dict[tuple[int, int], WaveletRepresentation] = {}

    @staticmethod
    def _head(cin: int, cout: int, bias: float) -> nn.Sequential:
        head = nn.Sequential(nn.Conv2d(cin, cin, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1))
        nn.init.zeros_(head[-1].weight)
        nn.init.constant_(head[-1].bias, bias)
        return head

    def layout(self, height: int, width: int) -> MaskLayout:
        return MaskLayout.for_wavelet(height, width, self.wavelet)

    def _representation(self, height: int, width: int, device: torch.device) -> WaveletRepresentation:
        key = (height, width)
        rep = self._representations.get(key)
        if rep is None:
            rep = WaveletRepresentation(height, width, self.wavelet)
            self._representations[key] = rep
        return rep.to(device)

    def forward(self, images: Tensor) -> Tensor:
        return self.mask_from_logits(self.logits(images), self.layout(images.shape[2], images.shape[3]))

    def floor_vector(self, layout: MaskLayout) -> Tensor:
        """The floor of every mask entry, ``(k,)``."""
        return torch.cat([torch.full((s.size,), f) for s, f in zip(layout.scales, self.floors)])

    def mask_from_logits(self, logits: Tensor, layout: MaskLayout) -> Tensor:
        floor = self.floor_vector(layout).to(logits)
        return floor + (1.0 - floor) * torch.sigmoid(logits)

    def logits(self, images: Tensor) -> Tensor:
        """Pre-sigmoid outputs ``(B, k)`` in the layout of ``images``' size."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"MaskNet expects images (B, 3, H, W), got {tuple(images.shape)}")
        rep = self._representation(images.shape[2], images.shape[3], images.device)
        layout = rep.layout
        feats, x = [], (images - 0.5) / 0.25
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        top_down: list[Tensor] = [None] * len(feats)  # type: ignore[list-item]
        y = self.lateral[-1](feats[-1])
        top_down[-1] = y
        for i in range(len(feats) - 2, -1, -1):
            y = self.lateral[i](feats[i]) + F.interpolate(y, size=feats[i].shape[-2:], mode="nearest")
            top_down[i] = y

        shapes = [s.shape for s in layout.scales]
        coeff_parts = self._coefficient_features(rep, images) if self.coefficient_inputs else None
        parts = []
        low = F.interpolate(top_down[-1], size=shapes[0][-2:], mode="bilinear", align_corners=False)
        if coeff_parts is not None:
            low = torch.cat([low, coeff_parts[0]], 1)
        parts.append(self.lowpass_head(low))
        for j, head in enumerate(self.heads):
            f = F.interpolate(top_down[j], size=shapes[j + 1][-2:], mode="bilinear", align_corners=False)
            if coeff_parts is not None:
                f = torch.cat([f, coeff_parts[j + 1]], 1)
            parts.append(head(f))
        return layout.join(parts)

    @staticmethod
    def _coefficient_features(rep: WaveletRepresentation, images: Tensor) -> list[Tensor]:
        """Per-scale wavelet magnitudes of the greyscale image, normalized by the scale's RMS."""
        with torch.no_grad():
            coeffs = rep.encode(greyscale(images)).squeeze(1)  # (B, k)
            out = []
            for part in rep.layout.split(coeffs):
                mag = part.abs()
                rms = mag.flatten(1).square().mean(1).sqrt().clamp_min(1e-6).view(-1, 1, 1, 1)
                out.append(torch.log1p(mag / rms))
        return out
