"""A cheap warm-up before the exact run: the same objective, fewer noisy copies per step, a larger step.

Adam moves a mask coefficient by about ``lr`` per step, so the all-ones start spends its first hundred
preset steps walking the mask down (../shared/notes/initialization.md). That walk does not need the preset's
L noisy copies per step: ``steps`` Adam steps with ``num_samples`` copies at learning rate ``lr`` cost
``steps * num_samples / L`` preset steps of classifier passes. A log-probability barrier (on by default,
warm-up only) pulls back a class that a sparse start has lost, where the label distortion's gradient has
vanished. This is what makes the learned start pay (docs/initializer.md): the network's prediction, warmed
up for 5 preset steps' worth of passes, then refined. The last stretch to the optimum still needs the exact run.

    explainer = CartoonX(create_classifier("efficientnet_lite0"), "cpu")
    start = WarmStart(explainer)                        # from all-ones; base= takes any init or callable start
    result = explainer.explain(images, init=start(images), steps=100)
    start.last_cost                                     # (B,) what the start cost, in preset steps
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from rde.distortion import BARRIER_SUFFIX
from rde.errors import InputError
from rde.init import InitSpec, parse_init

if TYPE_CHECKING:
    from rde.explainer import RDE

WARMUP_SEED_OFFSET = 0x5EED_0003  # the warm-up draws other noise than the exact run with the same seed
WARMUP_SUFFIX = "+warmup"
Start = Callable[..., InitSpec]  # images (B, 3, H, W) -> an init; may report ``last_cost`` (B,) in preset steps


def split_warmup(label: str) -> tuple[str, bool]:
    """A start's name and whether a warm-up follows it: ``"ones+warmup"`` -> ``("ones", True)``."""
    if label.endswith(WARMUP_SUFFIX):
        return label[: -len(WARMUP_SUFFIX)] or "ones", True
    return label, False


@dataclasses.dataclass(frozen=True)
class Warmup:
    """Settings of the warm-up run: ``steps`` Adam steps (0: none), ``num_samples`` noisy copies each, learning
    rate ``lr``.

    ``barrier`` adds ``max(0, log p_j(x) - log p_j(y))`` to the distortion during the warm-up only: a start that
    has lost the class (a sparse learned prediction often has) gets a gradient back toward it, where the label
    distortion's vanishes. The exact run after it optimizes the unchanged objective.
    """

    steps: int = 40
    num_samples: int = 2
    lr: float = 0.03
    barrier: bool = True

    def __post_init__(self) -> None:
        for name, least in (("steps", 0), ("num_samples", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InputError(f"warm-up {name} must be an int >= {least}, got {value!r}")
        if not self.lr > 0:
            raise InputError(f"warm-up lr must be positive, got {self.lr!r}")

    def cost(self, preset_samples: int) -> float:
        """Classifier passes of the warm-up, in steps of a run with ``preset_samples`` noisy copies."""
        return self.steps * self.num_samples / preset_samples


class WarmStart:
    """A start followed by a warm-up: callable on images ``(B, 3, H, W)``, returns masks ``(B, k)``.

    Args:
        explainer: the exact explainer the masks start; the warm-up runs its classifier and objective with
            :class:`Warmup`'s samples and learning rate.
        warmup: warm-up settings. Default: ``Warmup()`` (40 steps, 2 copies, lr 0.03, with the barrier: 5
            steps of a 16-copy preset).
        base: where the warm-up starts: a named init (``"ones"``, ``"const:C"``, ...), a mask, or a callable
            ``images -> init`` such as a :class:`~amortized.initializer.LearnedInitializer`, whose ``last_cost``
            is added. Default: ``"ones"``.
        seed: noise seed per image (see :meth:`RDE.explain`); the warm-up uses a stream of its own.
    """

    def __init__(self, explainer: RDE, warmup: Warmup | None = None, base: InitSpec | Start = "ones", seed: int = 0):
        if isinstance(base, str):
            parse_init(base)
        if getattr(getattr(base, "warmup", None), "steps", 0):
            raise InputError("this start ends with a warm-up of its own (its checkpoint's); use it without +warmup")
        self.warmup = warmup if warmup is not None else Warmup()
        self.base = base
        self.seed = seed
        self.explainer = explainer
        config = explainer.config.replace(num_samples=self.warmup.num_samples, lr=self.warmup.lr)
        if self.warmup.barrier and not config.distortion.endswith(BARRIER_SUFFIX):
            config = config.replace(distortion=config.distortion + BARRIER_SUFFIX)
        self._warm = type(explainer)(explainer.classifier, config, channels_last=explainer.channels_last)
        self.last_cost: Tensor | None = None  # (B,) preset steps' worth of classifier passes

    def __call__(self, images: Tensor, target: Tensor | None = None) -> Tensor:
        """Masks ``(B, k)`` after the warm-up (``target``: the explained classes; default the predicted ones)."""
        init, base_cost = self.base, None
        if callable(self.base):
            init = self.base(images) if target is None else self.base(images, target)
            base_cost = getattr(self.base, "last_cost", None)
        mask = self.warm(images, init, target)
        cost = torch.full((len(images),), self.cost)
        self.last_cost = cost if base_cost is None else cost + base_cost.cpu().float()
        return mask

    @property
    def cost(self) -> float:
        """What one warm-up costs per image, in steps of the exact explainer's preset."""
        return self.warmup.cost(self.explainer.config.num_samples)

    def warm(self, images: Tensor, init: InitSpec, target: Tensor | None = None) -> Tensor:
        """Run the warm-up from ``init`` (any init :meth:`RDE.explain` takes) and return its masks ``(B, k)``."""
        seed = (self.seed + WARMUP_SEED_OFFSET) % 2**63
        return self._warm.explain(images, target=target, init=init, steps=self.warmup.steps, seed=seed).mask
