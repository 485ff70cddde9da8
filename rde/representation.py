"""Representations an RDE mask acts on: DWT coefficients (CartoonX) or pixels (Pixel RDE).

Both map images ``(B, C, H, W)`` to flat coefficients ``(B, C, k)`` in the order of their
:class:`~rde.layout.MaskLayout`, and back. The optimizer is written once against this interface.
"""

from __future__ import annotations

from torch import Tensor, nn

from rde.errors import InputError
from rde.layout import MaskLayout
from rde.wavelets import WaveletConfig


class Representation(nn.Module):
    """Invertible linear map between images and flat coefficients."""

    layout: MaskLayout

    def encode(self, images: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, k)
        raise NotImplementedError

    def decode(self, coefficients: Tensor) -> Tensor:  # (B, C, k) -> (B, C, H, W)
        raise NotImplementedError

    def _check_images(self, images: Tensor) -> None:
        if images.dim() != 4 or tuple(images.shape[-2:]) != (self.layout.height, self.layout.width):
            raise InputError(
                f"expected images of shape (B, C, {self.layout.height}, {self.layout.width}), "
                f"got {tuple(images.shape)}"
            )


class WaveletRepresentation(Representation):
    """DWT coefficients via pytorch-wavelets (differentiable, runs on any device)."""

    def __init__(self, height: int, width: int, wavelet: WaveletConfig | None = None) -> None:
        super().__init__()
        self.layout = MaskLayout.for_wavelet(height, width, wavelet)
        self.dwt = self.layout.wavelet.forward_transform()
        self.idwt = self.layout.wavelet.inverse_transform()

    def encode(self, images: Tensor) -> Tensor:
        self._check_images(images)
        yl, yh = self.dwt(images)
        return self.layout.flatten_coefficients(yl, yh)

    def decode(self, coefficients: Tensor) -> Tensor:
        yl, yh = self.layout.unflatten_coefficients(coefficients)
        out = self.idwt((yl, yh))
        return out[..., : self.layout.height, : self.layout.width]


class PixelRepresentation(Representation):
    """Identity representation: one mask entry per pixel, shared across channels."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.layout = MaskLayout.for_pixels(height, width)

    def encode(self, images: Tensor) -> Tensor:
        self._check_images(images)
        return images.reshape(*images.shape[:2], -1)

    def decode(self, coefficients: Tensor) -> Tensor:
        return coefficients.reshape(*coefficients.shape[:2], self.layout.height, self.layout.width)


def create_representation(kind: str, height: int, width: int, wavelet: WaveletConfig | None = None) -> Representation:
    if kind == "wavelet":
        return WaveletRepresentation(height, width, wavelet)
    if kind == "pixel":
        return PixelRepresentation(height, width)
    raise InputError(f"unknown representation {kind!r}; use 'wavelet' (CartoonX) or 'pixel' (Pixel RDE)")


def greyscale(images: Tensor) -> Tensor:
    """Channel mean, ``(B, C, H, W) -> (B, 1, H, W)``, as in the reference CartoonX implementation."""
    return images.mean(dim=1, keepdim=True)
