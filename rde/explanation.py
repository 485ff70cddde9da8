"""The result of an RDE optimization: masks, explanation images and per-step loss histories."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rde.errors import InputError
from rde.layout import MaskLayout

HISTORY_KEYS = ("loss", "distortion", "sparsity", "spatial")
SIGNAL_KEYS = ("exp_avg", "exp_avg_sq", "grad_mean", "grad_std")
"""What the optimizer saw, per mask entry (``explain(record_signals=True)``): Adam's first and second moments after
the last step, and the mean and standard deviation over the steps of the gradients Adam was given."""


@dataclass
class Explanation:
    """Batched RDE result. Built by :meth:`rde.CartoonX.explain`; checked on construction.

    Attributes:
        mask: ``(B, k)`` final masks in ``layout`` order, values in [0, 1].
        explanation: ``(B, 1, H, W)`` the CartoonX image ``clamp(IDWT(mask * DWT(grey)))`` (Pixel RDE: ``grey * mask``).
        images: ``(B, 3, H, W)`` the explained images in [0, 1].
        targets: ``(B,)`` explained class per image.
        target_probs: ``(B,)`` the classifier's probability of the target on the unmasked image.
        predicted: ``(B,)`` the classifier's top class on the unmasked image.
        history: per-step ``(B, N)`` tensors ``loss``, ``distortion``, ``sparsity``, ``spatial`` (the loss curves;
            entry t is evaluated at the mask before update t+1).
        layout: the mask layout.
        config: the full optimizer configuration (preset, init, seeds, classifier name).
        class_names: the predicted class's name per image.
        signals: ``None``, or (``explain(record_signals=True)``) ``(B, k)`` tensors named :data:`SIGNAL_KEYS`.
    """

    mask: Tensor
    explanation: Tensor
    images: Tensor
    targets: Tensor
    target_probs: Tensor
    predicted: Tensor
    history: dict[str, Tensor]
    layout: MaskLayout
    config: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    signals: dict[str, Tensor] | None = None

    def __post_init__(self) -> None:
        b = self.mask.shape[0]
        self.layout.check(self.mask)
        for name in ("explanation", "images", "targets", "target_probs", "predicted"):
            if getattr(self, name).shape[0] != b:
                raise InputError(f"Explanation.{name} has batch {getattr(self, name).shape[0]}, mask has {b}")
        missing = set(HISTORY_KEYS) - set(self.history)
        if missing:
            raise InputError(f"Explanation.history lacks {sorted(missing)}")
        if self.signals is not None:
            bad = [k for k in SIGNAL_KEYS if k not in self.signals or self.signals[k].shape != self.mask.shape]
            if bad:
                raise InputError(f"Explanation.signals must hold {SIGNAL_KEYS} shaped like the mask; wrong: {bad}")
        if self.mask.numel() and (self.mask.min() < 0 or self.mask.max() > 1):
            raise InputError("Explanation.mask must lie in [0, 1]")

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def loss(self) -> Tensor:
        """``(B, N)`` total loss per step (shortcut for ``history['loss']``)."""
        return self.history["loss"]

    def masks_per_scale(self) -> list[Tensor]:
        """The mask split by scale: lowpass ``(B, 1, h, w)``, then levels ``(B, 3, h_j, w_j)`` finest first."""
        return self.layout.split(self.mask)

    def __getitem__(self, index: int) -> Explanation:
        """The explanation of one image, as a batch of one."""
        sl = slice(index, index + 1) if index >= 0 else slice(index, index + 1 or None)
        return Explanation(
            mask=self.mask[sl],
            explanation=self.explanation[sl],
            images=self.images[sl],
            targets=self.targets[sl],
            target_probs=self.target_probs[sl],
            predicted=self.predicted[sl],
            history={k: v[sl] for k, v in self.history.items()},
            layout=self.layout,
            config=self.config,
            class_names=self.class_names[sl],
            signals=None if self.signals is None else {k: v[sl] for k, v in self.signals.items()},
        )

    def save(self, path: str | Path, index: int = 0) -> tuple[Path, Path]:
        """Write image ``index`` to ``path.npz`` (mask, explanation, history) and ``path.json`` (config, metadata)."""
        path = _base(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "mask": self.mask[index].cpu().numpy().astype(np.float32),
            "explanation": self.explanation[index, 0].cpu().numpy().astype(np.float32),
        }
        arrays.update({f"history_{k}": v[index].cpu().numpy().astype(np.float32) for k, v in self.history.items()})
        npz = path.with_name(path.name + ".npz")
        np.savez_compressed(npz, **arrays)
        meta = {
            "target": int(self.targets[index]),
            "target_prob": float(self.target_probs[index]),
            "predicted": int(self.predicted[index]),
            "class_name": self.class_names[index] if self.class_names else None,
            "final": {k: float(v[index, -1]) if v.shape[1] else None for k, v in self.history.items()},
            "layout": self.layout.to_dict(),
            "config": self.config,
        }
        js = path.with_name(path.name + ".json")
        js.write_text(json.dumps(meta, indent=2, default=str))
        return npz, js

    @staticmethod
    def load_mask(path: str | Path) -> tuple[MaskLayout, Tensor, dict[str, Any]]:
        """Read back ``(layout, mask (k,), metadata)`` from a file written by :meth:`save`."""
        path = _base(path)
        meta = json.loads(path.with_name(path.name + ".json").read_text())
        with np.load(path.with_name(path.name + ".npz")) as data:
            mask = torch.from_numpy(data["mask"])
        layout = MaskLayout.from_dict(meta["layout"])
        layout.check(mask)
        return layout, mask, meta


def _base(path: str | Path) -> Path:
    """``out/a.v1`` and ``out/a.v1.npz`` both name the pair ``out/a.v1.npz`` / ``out/a.v1.json`` (dots kept)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".npz", ".json") else path
