"""The one owner of the mask layout: which mask entries exist, how they are grouped, how they are stored.

A mask is stored flat as a ``(B, k)`` tensor. Entries are ordered scale by scale, each scale row-major:

* wavelet layout: the lowpass ``1 x h x w`` first, then each highpass level ``3 x h_j x w_j``
  from the finest (level 1) to the coarsest (level J). The mask is shared across colour channels.
* pixel layout: one scale, ``1 x H x W``.

Coefficients of a ``C``-channel image use the same order with a channel axis, ``(B, C, k)``, so a
mask broadcasts over them as ``(B, 1, k)``. Nothing else in the project indexes wavelet levels by hand.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rde.errors import InputError
from rde.wavelets import WaveletConfig, coefficient_shapes


@dataclass(frozen=True)
class Scale:
    """One group of mask entries that share adaptive-noise statistics (a DWT scale, or all pixels)."""

    name: str
    shape: tuple[int, ...]  # mask shape of this scale, e.g. (1, h, w) or (3, h, w)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class MaskLayout:
    """Mask layout for images of ``height x width`` in a wavelet (``wavelet`` set) or pixel representation.

    Build it with :meth:`wavelet` or :meth:`pixel`. Two layouts are interchangeable exactly when their
    :attr:`signature` strings are equal; shards and checkpoints store that signature.
    """

    height: int
    width: int
    wavelet: WaveletConfig | None = None
    scales: tuple[Scale, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def for_wavelet(cls, height: int, width: int, wavelet: WaveletConfig | None = None) -> MaskLayout:
        wavelet = wavelet or WaveletConfig()
        low, highs = coefficient_shapes(height, width, wavelet)
        scales = [Scale("lowpass", (1, *low))]
        scales += [Scale(f"level{j + 1}", (3, *hw)) for j, hw in enumerate(highs)]
        return cls(height, width, wavelet, tuple(scales))

    @classmethod
    def for_pixels(cls, height: int, width: int) -> MaskLayout:
        return cls(height, width, None, (Scale("pixels", (1, height, width)),))

    @property
    def kind(self) -> str:
        return "pixel" if self.wavelet is None else "wavelet"

    @cached_property
    def num_entries(self) -> int:
        """k, the number of mask entries (the normalization of the sparsity term)."""
        return sum(s.size for s in self.scales)

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        out, pos = [], 0
        for s in self.scales:
            out.append(pos)
            pos += s.size
        return tuple(out)

    def scale_slice(self, index: int) -> slice:
        return slice(self.offsets[index], self.offsets[index] + self.scales[index].size)

    @cached_property
    def scale_index(self) -> Tensor:
        """``(k,)`` long tensor: the scale each entry belongs to (for per-scale statistics and weights)."""
        return torch.cat([torch.full((s.size,), i, dtype=torch.long) for i, s in enumerate(self.scales)])

    @property
    def signature(self) -> str:
        """Stable string identifying the layout, e.g. ``wavelet:db3:J5:zero:128x128``."""
        if self.wavelet is None:
            return f"pixel:{self.height}x{self.width}"
        w = self.wavelet
        return f"wavelet:{w.wave}:J{w.levels}:{w.mode}:{self.height}x{self.width}"

    # -- creating -------------------------------------------------------------------------------
    def full(self, batch: int, value: float, device: torch.device | str | None = None) -> Tensor:
        return torch.full((batch, self.num_entries), float(value), device=device)

    def ones(self, batch: int, device: torch.device | str | None = None) -> Tensor:
        return self.full(batch, 1.0, device)

    # -- flat <-> per scale -----------------------------------------------------------------------
    def split(self, flat: Tensor) -> list[Tensor]:
        """``(..., k)`` -> one tensor per scale of shape ``(..., *scale.shape)``."""
        self.check(flat)
        lead = flat.shape[:-1]
        return [flat[..., self.scale_slice(i)].reshape(*lead, *s.shape) for i, s in enumerate(self.scales)]

    def join(self, parts: list[Tensor]) -> Tensor:
        """Inverse of :meth:`split`."""
        if len(parts) != len(self.scales):
            raise InputError(f"expected {len(self.scales)} scales for {self.signature}, got {len(parts)}")
        flats = []
        for part, s in zip(parts, self.scales):
            if tuple(part.shape[part.dim() - len(s.shape):]) != s.shape:
                raise InputError(f"scale {s.name}: expected trailing shape {s.shape}, got {tuple(part.shape)}")
            flats.append(part.reshape(*part.shape[: part.dim() - len(s.shape)], s.size))
        return torch.cat(flats, dim=-1)

    def check(self, flat: Tensor) -> None:
        if flat.shape[-1] != self.num_entries:
            raise InputError(
                f"mask/coefficient tensor has {flat.shape[-1]} entries in its last dim, "
                f"but layout {self.signature} has k={self.num_entries}"
            )

    # -- wavelet coefficients <-> flat -----------------------------------------------------------
    def flatten_coefficients(self, lowpass: Tensor, highpass: list[Tensor]) -> Tensor:
        """pytorch-wavelets ``(yl (B,C,h,w), yh [(B,C,3,h,w)...])`` -> ``(B, C, k)``."""
        return self.join([lowpass.unsqueeze(2)] + list(highpass))

    def unflatten_coefficients(self, flat: Tensor) -> tuple[Tensor, list[Tensor]]:
        """``(B, C, k)`` -> ``(yl, yh)`` in pytorch-wavelets' convention."""
        parts = self.split(flat)
        return parts[0].squeeze(2), parts[1:]

    # -- saving ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "height": self.height,
            "width": self.width,
            "wavelet": None if self.wavelet is None else asdict(self.wavelet),
            "signature": self.signature,
            "num_entries": self.num_entries,
        }

    @classmethod
    def from_dict(cls, d: dict) -> MaskLayout:
        if d.get("wavelet") is None:
            return cls.for_pixels(d["height"], d["width"])
        return cls.for_wavelet(d["height"], d["width"], WaveletConfig(**d["wavelet"]))

    def save(self, path: str | Path, mask: Tensor) -> None:
        """Save masks ``(B, k)`` or ``(k,)`` as float32 ``.npy`` with a ``.layout.json`` beside it."""
        self.check(mask)
        path = _npy_path(path)
        np.save(path, mask.detach().cpu().float().numpy())
        path.with_suffix(".layout.json").write_text(json.dumps(self.to_dict(), indent=2))

    @staticmethod
    def load(path: str | Path) -> tuple[MaskLayout, Tensor]:
        path = _npy_path(path)
        meta = path.with_suffix(".layout.json")
        if not meta.exists():
            raise FileNotFoundError(f"{path}: missing layout file {meta.name} next to the mask")
        layout = MaskLayout.from_dict(json.loads(meta.read_text()))
        mask = torch.from_numpy(np.load(path)).float()
        layout.check(mask)
        return layout, mask


def _npy_path(path: str | Path) -> Path:
    """``np.save`` appends ``.npy`` to other names; do it first so save and load agree on both file names."""
    path = Path(path)
    return path if path.suffix == ".npy" else path.with_name(path.name + ".npy")
