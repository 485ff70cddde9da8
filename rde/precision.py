"""Numerical precision of the classifier calls, by Lightning's names.

``32-true`` runs everything in float32 (the default). ``bf16-mixed`` and ``16-mixed`` run only the
classifier's forward (and so its backward) under :func:`torch.autocast` in bfloat16 / float16; the mask,
Adam's state, the obfuscations, the distortion (computed on logits cast back to float32) and the sparsity
term stay float32. float16 gradients can underflow, so ``16-mixed`` scales the distortion by a
:class:`LossScale` before its backward pass, as Lightning's ``16-mixed`` does with a GradScaler.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
from torch import Tensor

from rde.errors import InputError

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
DEFAULT_PRECISION = "32-true"
_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def check_precision_name(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a mixed precision, ``None`` for ``32-true``."""
    return _DTYPES.get(check_precision_name(precision))


def check_precision_device(precision: str, device: torch.device) -> None:
    """Refuse, in one line, a mixed precision that autocast cannot run on ``device``'s type."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return
    problem = None
    available = getattr(torch.amp, "is_autocast_available", None)  # public since torch 2.4
    if available is not None and not available(device.type):
        problem = f"torch has no autocast for device type {device.type!r}"
    else:
        try:
            with torch.autocast(device.type, dtype=dtype):
                probe = torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3, device=device), torch.ones(1, 1, 3, 3, device=device))
        except RuntimeError as e:
            problem = str(e).splitlines()[0]
        else:
            if probe.dtype != dtype:
                problem = f"autocast on {device.type} runs convolutions in {probe.dtype}, not {dtype}"
    if problem:
        raise InputError(f"precision {precision} is not available on {device}: {problem}; use 32-true or bf16-mixed")


def autocast(precision: str, device: torch.device) -> ContextManager:
    """The context the classifier runs in: autocast for a mixed precision, nothing for ``32-true``."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class LossScale:
    """A dynamic loss scale for ``16-mixed``: the distortion is multiplied by ``scale`` before its backward pass
    and its gradient divided by it after. When the unscaled gradient is not finite, :meth:`unscale` halves the
    scale and returns ``False``, and the caller recomputes that step's gradient (no step is skipped, so each image
    keeps exactly N Adam steps). ``32-true`` and ``bf16-mixed`` use a scale of 1 that never changes (bf16 has
    float32's exponent range, so its gradients do not underflow).
    """

    def __init__(self, precision: str, init_scale: float = 2.0**16, min_scale: float = 1.0) -> None:
        self.enabled = autocast_dtype(precision) == torch.float16
        self.scale = init_scale if self.enabled else 1.0
        self.min_scale = min_scale

    def unscale(self, grad: Tensor) -> bool:
        """Divide ``grad`` by the scale in place; ``False`` (and a halved scale) if it holds inf or NaN."""
        if not self.enabled:
            return True
        grad.div_(self.scale)
        if bool(torch.isfinite(grad).all()):
            return True
        if self.scale <= self.min_scale:
            raise FloatingPointError("16-mixed: the distortion gradient is not finite even at loss scale 1; use bf16-mixed or 32-true")
        self.scale /= 2.0
        return False
