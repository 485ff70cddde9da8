"""Initial masks for the RDE optimizer.

Named inits: ``ones`` (the paper), ``const:<c>``, ``random`` (uniform in [0, 1], from each image's seed),
``preopt`` (the reproducibility study's heuristic: lower a constant mask from 1 in steps of 0.01 until
the mean prediction under noise leaves the target class, then step back once). Any tensor in the
layout's shape is used as given, and so is a :class:`rde.start.Start`'s mask: this is how a learned start comes in.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from rde.errors import InputError
from rde.layout import MaskLayout
from rde.start import Start

InitSpec = str | float | Tensor | Start
NAMED_INITS = ("ones", "const:<c>", "random", "preopt")
PREOPT_STEP = 0.01


def parse_init(init: InitSpec) -> tuple[str, float | None]:
    """``"const:0.3"`` -> ``("const", 0.3)``; a float means const. Raises ``ValueError`` on unknown names."""
    if isinstance(init, (int, float)) and not isinstance(init, bool):
        name, value = "const", float(init)
    elif isinstance(init, str):
        name, _, arg = init.partition(":")
        value = None
        if name == "const":
            try:
                value = float(arg) if arg else 0.5
            except ValueError:
                raise InputError(f"init {init!r}: expected const:<number in [0, 1]>") from None
        elif name not in ("ones", "random", "preopt") or arg:
            raise InputError(f"unknown init {init!r}; use one of {', '.join(NAMED_INITS)} or a mask tensor")
    else:
        raise TypeError(f"init must be a name or a tensor, got {type(init).__name__}")
    if value is not None and not 0.0 <= value <= 1.0:
        raise InputError(f"init const value must lie in [0, 1], got {value}")
    return name, value


def make_initial_mask(
    init: InitSpec,
    layout: MaskLayout,
    batch: int,
    device: torch.device | str,
    generators: Sequence[torch.Generator],
    flip_check: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Build the ``(B, k)`` starting mask. ``flip_check(mask) -> (B,) bool`` is needed for ``preopt``."""
    if isinstance(init, Start):
        init = init.mask
    if isinstance(init, Tensor):
        return _check_tensor_init(init, layout, batch).to(device=device, dtype=torch.float32)
    name, value = parse_init(init)
    if name == "ones":
        return layout.ones(batch, device)
    if name == "const":
        return layout.full(batch, value, device)
    if name == "random":
        return torch.stack(
            [torch.rand(layout.num_entries, generator=g, device=device) for g in generators]
        )
    if flip_check is None:
        raise InputError("init 'preopt' needs the classifier (use it through CartoonX.explain)")
    return _preoptimize(layout, batch, device, flip_check)


def _preoptimize(layout: MaskLayout, batch: int, device, flip_check) -> Tensor:
    level = torch.ones(batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    n = round(1 / PREOPT_STEP)
    for i in range(1, n + 1):
        candidate = torch.full((batch,), 1.0 - i * PREOPT_STEP, device=device).clamp_min(0.0)
        keeps = flip_check(candidate[:, None].expand(batch, layout.num_entries))
        newly_flipped = ~keeps & ~done
        level = torch.where(newly_flipped, (candidate + PREOPT_STEP).clamp_max(1.0), level)
        done |= newly_flipped
        if bool(done.all()):
            break
    level = torch.where(done, level, torch.full_like(level, PREOPT_STEP))
    return level[:, None].expand(batch, layout.num_entries).clone()


def _check_tensor_init(init: Tensor, layout: MaskLayout, batch: int) -> Tensor:
    if init.dim() == 1:
        init = init.unsqueeze(0).expand(batch, -1)
    if init.dim() != 2 or init.shape[0] != batch or init.shape[1] != layout.num_entries:
        raise InputError(
            f"init mask has shape {tuple(init.shape)}; expected ({batch}, {layout.num_entries}) "
            f"for layout {layout.signature}"
        )
    if not torch.isfinite(init).all():
        raise InputError("init mask contains NaN or inf")
    if init.min() < 0 or init.max() > 1:
        raise InputError(f"init mask must lie in [0, 1], got range [{float(init.min()):.3g}, {float(init.max()):.3g}]")
    return init.detach().float()
