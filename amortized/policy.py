"""The learned start's policy, in one place: what happens to the network's prediction before the exact run.

A :class:`StartPolicy` is the warm-up and its pruning phase (:class:`rde.warmup.Warmup`) and the guard
(:class:`Guard`). Its defaults are the shipped policy; a checkpoint records the policy it ships with (training
writes its module's ``policy`` into every checkpoint, :func:`amortized.checkpoint.export_checkpoint` keeps it), and
:class:`amortized.initializer.LearnedStart` runs what the checkpoint says unless told otherwise. Help texts and the
README name these objects instead of restating their numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from rde.errors import InputError
from rde.layout import MaskLayout
from rde.warmup import Warmup

__all__ = ["Guard", "StartPolicy"]


@dataclasses.dataclass(frozen=True)
class Guard:
    """Check a start and back off until it keeps ``keep`` of the class probability (mean over ``samples`` noisy
    copies, forward only).

    The masks tried, in turn, from the warmed-up prediction ``m``: first ``m`` soft-thresholded at each of
    ``shrinks`` (``clamp((m - t) / (1 - t), 0, 1)``: the coefficients below ``t`` go to 0, the rest keep their
    order; the exact optima are nearly binary, and most of a start's ℓ1 mass lies in small values where the
    optimum is 0, which Adam drains only ``lr`` per step), then ``m`` itself, then ``m ** γ`` on every scale but
    the finest level for each γ in ``powers`` (rank-preserving lifts; default none), then
    ``1 - blend ** i * (1 - m)`` for i = 1 .. ``max_steps`` (toward ones).

    The shrinks finish the warm-up's pruning phase, so a learned start tries them only on the images that phase
    pruned (a confident class: :attr:`rde.warmup.Warmup.prune_min_prob`); the others begin with ``m``. Without
    a pruning phase, every image begins with the shrinks.
    ``keep <= 0`` disables the guard: the warmed-up prediction is used as it is, unshrunk and unchecked. Each
    check costs ``samples`` classifier forward passes per image.
    """

    keep: float = 0.3
    samples: int = 16
    blend: float = 0.7
    max_steps: int = 6
    powers: tuple[float, ...] = ()  # measured before the warm-up existed, not shipped: docs/experiments.md
    shrinks: tuple[float, ...] = (0.2, 0.1)

    def __post_init__(self) -> None:
        if not 0.0 < self.blend < 1.0:
            raise InputError(f"guard blend must lie in (0, 1), got {self.blend}")
        if self.samples < 1 or self.max_steps < 0:
            raise InputError(f"guard samples must be >= 1 and max_steps >= 0, got {self.samples}, {self.max_steps}")
        for name in ("powers", "shrinks"):
            values = tuple(float(p) for p in getattr(self, name))
            object.__setattr__(self, name, values)
            if not all(0.0 < p < 1.0 for p in values):
                raise InputError(f"guard {name} must lie in (0, 1), got {values}")

    def candidates(self, mask: Tensor, layout: MaskLayout) -> list[Tensor]:
        """The masks to check, in order, for a warmed-up prediction ``mask`` (B, k)."""
        shrunk = [((mask - t) / (1.0 - t)).clamp(0.0, 1.0) for t in self.shrinks]
        coarse = (layout.scale_index != 1).to(mask.device)  # every scale but level 1, the finest
        lifts = [torch.where(coarse, mask**p, mask) for p in self.powers]
        return shrunk + [mask] + lifts + [1.0 - self.blend**i * (1.0 - mask) for i in range(1, self.max_steps + 1)]


@dataclasses.dataclass(frozen=True)
class StartPolicy:
    """The warm-up (with its pruning phase) and the guard a learned start applies to the network's prediction.

    ``StartPolicy()`` is the shipped policy. ``Warmup(steps=0)`` turns the warm-up off, ``Guard(keep=0)`` the guard.
    """

    warmup: Warmup = dataclasses.field(default_factory=Warmup)
    guard: Guard = dataclasses.field(default_factory=Guard)

    def __post_init__(self) -> None:  # plain dicts (a checkpoint's, a YAML config's) become the settings objects
        if isinstance(self.warmup, dict):
            object.__setattr__(self, "warmup", _build(Warmup, self.warmup, "warmup"))
        if isinstance(self.guard, dict):
            object.__setattr__(self, "guard", _build(Guard, self.guard, "guard"))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what a checkpoint stores)."""
        return {"warmup": dataclasses.asdict(self.warmup), "guard": dataclasses.asdict(self.guard)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StartPolicy:
        """The policy of :meth:`to_dict`'s data; a missing part is the shipped one."""
        return cls(**{k: data[k] for k in ("warmup", "guard") if k in data})

    def replace(self, **changes: Any) -> StartPolicy:
        """A copy with fields of the warm-up or the guard changed, e.g. ``replace(prune_steps=0, keep=0.5)``."""
        fields = {"warmup": {f.name for f in dataclasses.fields(Warmup)},
                  "guard": {f.name for f in dataclasses.fields(Guard)}}
        unknown = set(changes) - fields["warmup"] - fields["guard"]
        if unknown:
            raise InputError(f"unknown start policy field(s) {sorted(unknown)}; warm-up: {sorted(fields['warmup'])}, "
                             f"guard: {sorted(fields['guard'])}")
        warmup = dataclasses.replace(self.warmup, **{k: v for k, v in changes.items() if k in fields["warmup"]})
        guard = dataclasses.replace(self.guard, **{k: v for k, v in changes.items() if k in fields["guard"]})
        return StartPolicy(warmup, guard)


def _build(kind: type, values: dict[str, Any], name: str) -> Any:
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - known
    if unknown:
        raise InputError(f"unknown {name} setting(s) {sorted(unknown)}; known: {sorted(known)}")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
