"""The initializer network: what the classifier sees of an image -> CartoonX wavelet mask in the optimizer's layout.

A mask start is only fast if it knows *where* the class evidence is:
the right sparsity per scale in the wrong places collapses the refinement. So the network does not
learn an encoder from scratch; it decodes the frozen classifier's own feature maps (strides 2..32,
combined top-down as in an FPN), and every DWT level's head also sees, on that level's exact
coefficient grid, the class gradient (gradient x input and |gradient|) and the wavelet magnitudes
(:mod:`amortized.features`). Outputs are ``floor + (1 - floor) * sigmoid(logit)``, with one floor per
scale: a needed coefficient that starts too low can destroy the class.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amortized.features import ProbeResult
from rde.errors import InputError
from rde.layout import MaskLayout
from rde.wavelets import WaveletConfig

INPUTS = ("features", "gradient", "magnitude")


class MaskNet(nn.Module):
    """Predict a wavelet mask ``(B, k)`` in [floor, 1] from a :class:`~amortized.features.ProbeResult`.

    Works for any image size the DWT accepts: the heads are convolutional and the layout follows the
    probe's flat tensors.

    Args:
        wavelet: the DWT whose mask layout is predicted (must match the preset's).
        feature_channels: stride name (``s2`` ... ``s32``) -> channels of the classifier feature map tapped
            there (:func:`amortized.features.feature_channels`); empty for a classifier without taps.
        width: channels of the top-down feature pyramid.
        head_width: channels of each scale's head.
        floor: smallest output, one number or one per scale (lowpass, level 1 (finest) ... level J).
        inputs: which inputs the heads see, a subset of :data:`INPUTS` (ablation switch).
        init_bias: initial head bias (0: every prediction starts half-way between floor and 1).
    """

    def __init__(
        self,
        wavelet: WaveletConfig | None = None,
        feature_channels: dict[str, int] | None = None,
        width: int = 24,
        head_width: int = 32,
        floor: float | Sequence[float] = 0.1,
        inputs: Sequence[str] = INPUTS,
        init_bias: float = 0.0,
    ) -> None:
        super().__init__()
        self.wavelet = wavelet or WaveletConfig()
        levels = self.wavelet.levels
        floors = [float(floor)] * (levels + 1) if isinstance(floor, (int, float)) else [float(f) for f in floor]
        if len(floors) != levels + 1:
            raise InputError(f"floor needs one value per scale (lowpass + {levels} levels), got {len(floors)}")
        if not all(0.0 <= f < 1.0 for f in floors):
            raise InputError(f"floor values must lie in [0, 1), got {floors}")
        unknown = set(inputs) - set(INPUTS)
        if unknown or not inputs:
            raise InputError(f"inputs must be a non-empty subset of {INPUTS}, got {list(inputs)}")
        self.floors = floors
        self.inputs = tuple(i for i in INPUTS if i in inputs)
        channels = dict(feature_channels or {}) if "features" in self.inputs else {}
        self.strides = sorted(channels, key=_stride)  # finest first
        self.lateral = nn.ModuleDict({s: nn.Conv2d(c, width, 1) for s, c in channels.items()})
        per_orientation = 2 * ("gradient" in self.inputs) + ("magnitude" in self.inputs)
        if not self.strides and per_orientation == 0:
            raise InputError("the network sees nothing: no feature taps for this classifier and no coefficient inputs")
        feat = width if self.strides else 0
        self.heads = nn.ModuleList(
            [self._head(feat + per_orientation, 1, head_width, init_bias)]
            + [self._head(feat + 3 * per_orientation, 3, head_width, init_bias) for _ in range(levels)]
        )

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MaskNet:
        """A network from its plain configuration (as stored in checkpoints)."""
        return cls(
            WaveletConfig(**config["wavelet"]), config["feature_channels"], config["width"], config["head_width"],
            config["floor"], config["inputs"], config["init_bias"],
        )

    @staticmethod
    def _head(cin: int, cout: int, width: int, bias: float) -> nn.Sequential:
        head = nn.Sequential(
            nn.Conv2d(cin, width, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1),
        )
        nn.init.constant_(head[-1].bias, bias)
        return head

    def layout(self, height: int, width: int) -> MaskLayout:
        return MaskLayout.for_wavelet(height, width, self.wavelet)

    def floor_vector(self, layout: MaskLayout) -> Tensor:
        """The floor of every mask entry, ``(k,)``."""
        return torch.cat([torch.full((s.size,), f) for s, f in zip(layout.scales, self.floors)])

    def forward(self, probe: ProbeResult, layout: MaskLayout) -> Tensor:
        return self.mask_from_logits(self.logits(probe, layout), layout)

    def mask_from_logits(self, logits: Tensor, layout: MaskLayout) -> Tensor:
        floor = self.floor_vector(layout).to(logits)
        return floor + (1.0 - floor) * torch.sigmoid(logits)

    def logits(self, probe: ProbeResult, layout: MaskLayout) -> Tensor:
        """Pre-sigmoid outputs ``(B, k)``."""
        pyramid = self._pyramid(probe.features)
        flat = []
        if "gradient" in self.inputs:
            flat += [probe.grad_x_input, probe.grad_abs]
        if "magnitude" in self.inputs:
            flat.append(probe.magnitude)
        per_scale = [_normalized_log(layout, x) for x in flat]
        parts = []
        for j, (scale, head) in enumerate(zip(layout.scales, self.heads)):
            x = [p[j] for p in per_scale]
            if pyramid:
                # level j lies on a grid of stride ~2^j; the lowpass on the coarsest level's grid
                stride = 2 ** (len(layout.scales) - 1) if j == 0 else 2**j
                source = pyramid[self._nearest_stride(stride)]
                x.insert(0, F.interpolate(source, size=scale.shape[-2:], mode="bilinear", align_corners=False))
            parts.append(head(torch.cat(x, 1)))
        return layout.join(parts)

    def _pyramid(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        y = None
        for s in reversed(self.strides):
            lateral = self.lateral[s](features[s].float())
            y = lateral if y is None else lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            out[s] = y
        return out

    def _nearest_stride(self, stride: int) -> str:
        return min(self.strides, key=lambda s: abs(math.log2(_stride(s) / stride)))


def _stride(name: str) -> int:
    return int(name.lstrip("s"))


def _normalized_log(layout: MaskLayout, flat: Tensor) -> list[Tensor]:
    """``log1p(x / rms)`` per scale and image, in each scale's shape: scale-free inputs for the heads."""
    out = []
    for part in layout.split(flat):
        rms = part.flatten(1).square().mean(1).sqrt().clamp_min(1e-12).view(-1, *[1] * (part.dim() - 1))
        out.append(torch.log1p(part / rms))
    return out
