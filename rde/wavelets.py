"""Discrete wavelet transform settings and shapes (the transform itself is pytorch-wavelets')."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import pywt
import torch

from rde.errors import InputError

with warnings.catch_warnings():  # pytorch-wavelets imports the deprecated pkg_resources
    warnings.simplefilter("ignore", UserWarning)
    from pytorch_wavelets import DWTForward, DWTInverse


@dataclass(frozen=True)
class WaveletConfig:
    """DWT used by CartoonX. Paper defaults: Daubechies-3, J=5 levels, zero padding."""

    wave: str = "db3"
    levels: int = 5
    mode: str = "zero"

    def __post_init__(self) -> None:
        if self.wave not in pywt.wavelist(kind="discrete"):
            raise InputError(f"unknown wavelet {self.wave!r}; use a discrete PyWavelets name such as 'db3' or 'haar'")
        if not isinstance(self.levels, int) or self.levels < 1:
            raise InputError(f"wavelet levels must be a positive int, got {self.levels!r}")
        if self.mode not in ("zero", "symmetric", "periodization", "reflect", "periodic"):
            raise InputError(f"unsupported padding mode {self.mode!r}")

    def forward_transform(self) -> torch.nn.Module:
        return DWTForward(J=self.levels, wave=self.wave, mode=self.mode)

    def inverse_transform(self) -> torch.nn.Module:
        return DWTInverse(wave=self.wave, mode=self.mode)


@lru_cache(maxsize=64)
def coefficient_shapes(height: int, width: int, cfg: WaveletConfig) -> tuple[tuple[int, int], tuple[tuple[int, int], ...]]:
    """Spatial shapes ``(lowpass, [level 1 (finest) ... level J])`` of the DWT of an ``height x width`` image."""
    if height < 2 ** cfg.levels or width < 2 ** cfg.levels:
        raise InputError(
            f"image of {height}x{width} px is too small for a {cfg.levels}-level DWT: "
            f"each side needs at least {2 ** cfg.levels} px"
        )
    with torch.no_grad():
        yl, yh = cfg.forward_transform()(torch.zeros(1, 1, height, width))
    return tuple(yl.shape[-2:]), tuple(tuple(y.shape[-2:]) for y in yh)
