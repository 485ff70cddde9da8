"""The second stage of a learned start: correct the warmed-up mask from what its warm-up saw.

The image-to-mask network (:class:`amortized.net.MaskNet`) learns how much to keep at each wavelet level, but not
which coefficients. The warm-up's optimizer does know: its noisy gradients and Adam's moments, per coefficient,
are what the exact run follows. :class:`Refiner` reads them (:class:`rde.warmup.WarmupSignals`) with a small
convolutional stack on each level's grid (3x3, shared over levels and orientations, told the level by a one-hot
input), so every coefficient is one training example, and outputs a gated correction of the start ``m``::

    corrected = m + sigmoid(gate) * (sigmoid(value) - m)

which is ``m`` where the gate is shut. Its inputs are groups selectable by name (:data:`INPUT_GROUPS`) so each can
be ablated; the start mask itself is always an input. :class:`amortized.initializer.LearnedStart` runs it after
the warm-up and before the guard, and by default keeps, per image, whichever of the two masks has the lower RDE
objective (:data:`SELECT_MODES`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from rde.errors import InputError
from rde.layout import MaskLayout
from rde.warmup import WarmupSignals

__all__ = ["INPUT_GROUPS", "SELECT_MODES", "Refiner", "refiner_features"]

INPUT_GROUPS: dict[str, int] = {
    "trajectory": 2,  # the mask before the warm-up and after it (the start after pruning is always an input)
    "moments": 5,  # Adam's normalized first moment and log second moment of each phase, and whether pruning ran
    "gradients": 4,  # the noisy gradients' signal-to-noise ratio and log spread of each phase
    "level": 0,  # a one-hot of the wavelet scale (as many channels as the layout has scales)
    "magnitude": 1,  # log |c| of the image's greyscale coefficients, standardized per scale
}
"""The refiner's input groups and their channel counts (``level``: the number of scales)."""

SELECT_MODES = ("select", "always", "off")
"""How a learned start uses its refiner: keep the lower-objective mask of the two, always the corrected one, or none."""

_EPS = 1e-12


def refiner_features(signals: WarmupSignals, magnitude: Tensor, layout: MaskLayout, inputs: Sequence[str]) -> Tensor:
    """The per-coefficient inputs ``(B, F, k)``: the start mask, then the ``inputs`` groups in :data:`INPUT_GROUPS`
    order. Quantities without a natural scale (second moments, gradient spread, magnitudes) enter as logs
    standardized per image and scale, so photos of any contrast look alike."""
    start = signals.pruned_mask.float()
    channels = [start]
    if "trajectory" in inputs:
        channels += [signals.before.float().expand_as(start), signals.warmed.float()]
    if "moments" in inputs:
        for phase in (signals.warmup, signals.prune):
            second = phase["exp_avg_sq"].float()
            channels += [(phase["exp_avg"] / (second.sqrt() + 1e-8)).float().clamp(-3, 3),
                         _standardized_log(layout, second)]
        pruned = (signals.prune["exp_avg_sq"].abs().amax(1, keepdim=True) > 0).float()
        channels.append(pruned.expand_as(start))
    if "gradients" in inputs:
        for phase in (signals.warmup, signals.prune):
            spread = phase["grad_std"].float()
            channels += [(phase["grad_mean"] / (spread + 1e-8)).float().clamp(-5, 5), _standardized_log(layout, spread)]
    if "level" in inputs:
        onehot = nn.functional.one_hot(layout.scale_index.to(start.device), len(layout.scales)).T.float()
        channels += list(onehot[:, None].expand(-1, len(start), -1).unbind(0))
    if "magnitude" in inputs:
        channels.append(_standardized_log(layout, magnitude.float()))
    return torch.stack(channels, 1)


class Refiner(nn.Module):
    """A gated correction of a warmed-up start from its warm-up's signals, ``(features (B, F, k)) -> mask (B, k)``.

    Args:
        inputs: the input groups (names of :data:`INPUT_GROUPS`); default all.
        num_scales: the layout's number of scales (the ``level`` group's channels).
        width: channels of the hidden 3x3 convolutions.
        depth: number of hidden 3x3 convolutions.
        gate_bias: the gate's initial bias: negative starts the network near the identity.
        raise_only: correct only upward, ``max(m, corrected)``: the coefficients that hold the class in the start stay,
            the network can only add the ones it misses.
    """

    def __init__(self, inputs: Sequence[str] = tuple(INPUT_GROUPS), num_scales: int = 6, width: int = 32,
                 depth: int = 2, gate_bias: float = -3.0, raise_only: bool = False) -> None:
        super().__init__()
        unknown = [i for i in inputs if i not in INPUT_GROUPS]
        if unknown:
            raise InputError(f"unknown refiner input(s) {unknown}; known: {list(INPUT_GROUPS)}")
        if depth < 1 or width < 1:
            raise InputError(f"refiner depth and width must be >= 1, got {depth}, {width}")
        self.inputs = tuple(i for i in INPUT_GROUPS if i in inputs)
        self.num_scales, self.width, self.depth, self.raise_only = num_scales, width, depth, bool(raise_only)
        channels = 1 + sum(num_scales if i == "level" else INPUT_GROUPS[i] for i in self.inputs)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(channels if i == 0 else width, width, 3, padding=1), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 2, 1)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.copy_(torch.tensor([gate_bias, 0.0]))

    @property
    def config(self) -> dict[str, Any]:
        """Plain data to rebuild the network (:meth:`from_config`)."""
        return {"inputs": list(self.inputs), "num_scales": self.num_scales, "width": self.width, "depth": self.depth,
                "raise_only": self.raise_only}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Refiner:
        return cls(inputs=tuple(config["inputs"]), num_scales=int(config["num_scales"]), width=int(config["width"]),
                   depth=int(config["depth"]), raise_only=bool(config.get("raise_only", False)))

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> Refiner:
        """The trained network of a ``{"config", "state_dict"}`` dict (a checkpoint's ``refiner`` entry, or what
        ``benchmarks/train_refiner.py`` saves), in eval mode."""
        refiner = cls.from_config(saved["config"])
        refiner.load_state_dict(saved["state_dict"])
        return refiner.eval()

    def forward(self, features: Tensor, layout: MaskLayout) -> Tensor:
        """The corrected masks ``(B, k)`` of :func:`refiner_features`' ``features``; channel 0 is the start."""
        if len(layout.scales) != self.num_scales:
            raise InputError(f"refiner built for {self.num_scales} scales, the layout {layout.signature} has "
                             f"{len(layout.scales)}")
        batch, channels, _ = features.shape
        parts = []
        for part in layout.split(features):  # (B, F, orientations, h, w): each orientation is its own grid
            _, _, orient, h, w = part.shape
            grid = part.permute(0, 2, 1, 3, 4).reshape(batch * orient, channels, h, w)
            gate, value = self.head(self.body(grid)).unbind(1)
            start = grid[:, 0]
            out = start + torch.sigmoid(gate) * (torch.sigmoid(value) - start)
            if self.raise_only:
                out = torch.maximum(out, start)
            parts.append(out.reshape(batch, orient, h, w))
        return layout.join(parts)

    def correct(self, signals: WarmupSignals, magnitude: Tensor, layout: MaskLayout) -> Tensor:
        """The corrected start ``(B, k)`` of a warm-up's ``signals`` and the images' coefficient ``magnitude``."""
        return self(refiner_features(signals, magnitude, layout, self.inputs), layout)


def _standardized_log(layout: MaskLayout, flat: Tensor) -> Tensor:
    """``log`` of a non-negative ``(B, k)`` quantity, standardized per image and scale (zeros stay at the floor)."""
    out = torch.log(flat.clamp_min(0) + _EPS)
    parts = []
    for i in range(len(layout.scales)):
        part = out[:, layout.scale_slice(i)]
        parts.append((part - part.mean(1, keepdim=True)) / (part.std(1, keepdim=True) + 1e-6))
    return torch.cat(parts, 1)


def fit_refiner(refiner: Refiner, features: list[Tensor], targets: list[Tensor], layout: MaskLayout, epochs: int = 20,
                batch_size: int = 8, lr: float = 3e-3, under_weight: float = 4.0, seed: int = 0,
                log: Any = None) -> list[float]:
    """Train ``refiner`` on per-photo ``features`` ``(F, k)`` (:func:`refiner_features`) against the exact target
    masks ``(k,)`` with the risk-averse per-scale loss (:func:`amortized.losses.risk_averse_mask_loss`: missing a
    needed coefficient costs ``under_weight`` times more than keeping a spare one). Every photo's coefficients are
    examples, so a few epochs over a few hundred photos suffice. Returns the mean training loss of each epoch."""
    from amortized.losses import risk_averse_mask_loss

    if not features or len(features) != len(targets):
        raise InputError(f"fit_refiner needs as many targets as feature sets (got {len(features)}, {len(targets)})")
    optimizer = torch.optim.AdamW(refiner.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * -(-len(features) // batch_size)))
    generator = torch.Generator().manual_seed(seed)
    history = []
    refiner.train()
    for epoch in range(epochs):
        order = torch.randperm(len(features), generator=generator).tolist()
        total = 0.0
        for i in range(0, len(order), batch_size):
            rows = order[i : i + batch_size]
            pred = refiner(torch.stack([features[r] for r in rows]), layout)
            loss = risk_averse_mask_loss(pred, torch.stack([targets[r] for r in rows]), layout, under_weight)[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(rows)
        history.append(total / len(order))
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: train loss {history[-1]:.4f}")
    refiner.eval()
    return history
