"""A cheap warm-up before the exact run: the same objective, fewer noisy copies per step, a larger step.

Adam moves a mask coefficient by about ``lr`` per step, so the all-ones start spends its first hundred
preset steps walking the mask down. That walk does not need the preset's L noisy copies per step:
``steps`` Adam steps with ``num_samples`` copies at learning rate ``lr`` cost ``steps * num_samples / L``
preset steps of classifier passes. A log-probability barrier (on by default, warm-up only) pulls back a class
that a sparse start has lost, where the label distortion's gradient has vanished. A pruning phase follows for a
confident class: more steps at a multiple of λ. With few noisy copies the distortion gradient is noisy, and at
the preset's λ Adam moves the coefficients the class does not need only slowly toward 0; at a larger λ they
drain in a few steps while the barrier holds the class, so the exact run starts sparse. This is what makes the
learned start pay (docs/initializer.md). The settings, :class:`Warmup`, are defined once, here; a learned start
ships its own in its checkpoint.

    explainer = CartoonX(create_classifier("efficientnet_lite0"), "cpu")
    start = WarmStart(explainer)(images)                # from all-ones; base= takes any init or start function
    result = explainer.explain(images, init=start, steps=100)
    start.cost                                          # (B,) what the start cost, in preset steps
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rde.distortion import BARRIER_SUFFIX
from rde.errors import InputError
from rde.explanation import SIGNAL_KEYS, Explanation
from rde.init import InitSpec, make_initial_mask, parse_init
from rde.start import Start, StartFn, steps_of_passes

if TYPE_CHECKING:
    from rde.explainer import RDE

WARMUP_SEED_OFFSET = 0x5EED_0003  # the warm-up draws other noise than the exact run with the same seed
PRUNE_SEED_OFFSET = 0x5EED_0004  # and its pruning phase other noise again
WARMUP_SUFFIX = "+warmup"


def split_warmup(label: str) -> tuple[str, bool]:
    """A start's name and whether a warm-up follows it: ``"ones+warmup"`` -> ``("ones", True)``."""
    if label.endswith(WARMUP_SUFFIX):
        return label[: -len(WARMUP_SUFFIX)] or "ones", True
    return label, False


@dataclasses.dataclass(frozen=True)
class Warmup:
    """Settings of the warm-up run: ``steps`` Adam steps (0: no warm-up at all), ``num_samples`` noisy copies each,
    learning rate ``lr``; then ``prune_steps`` more at ``prune_lam`` times the preset's λ (0: no pruning phase) for the
    images whose explained class has at least ``prune_min_prob`` probability on the clean image. A less
    confident class has a small empty-mask distortion (``p^2``), and a pruned start lets the exact run drop it
    (on 24 val photos: the wallaby, p = 0.40, kept its class from the unpruned start and lost it from a pruned one).

    ``barrier`` adds ``max(0, log p_j(x) - log p_j(y))`` to the distortion during the warm-up only: a start that
    has lost the class (a sparse learned prediction often has) gets a gradient back toward it, where the label
    distortion's vanishes. The exact run after it optimizes the unchanged objective. The pruning phase uses the
    same copies, learning rate and barrier, with a fresh Adam state.
    """

    steps: int = 40
    num_samples: int = 2
    lr: float = 0.03
    barrier: bool = True
    prune_steps: int = 60
    prune_lam: float = 6.0
    prune_min_prob: float = 0.5

    def __post_init__(self) -> None:
        for name, least in (("steps", 0), ("num_samples", 1), ("prune_steps", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InputError(f"warm-up {name} must be an int >= {least}, got {value!r}")
        for name in ("lr", "prune_lam"):
            if not getattr(self, name) > 0:
                raise InputError(f"warm-up {name} must be positive, got {getattr(self, name)!r}")
        if not 0.0 <= self.prune_min_prob <= 1.0:
            raise InputError(f"warm-up prune_min_prob must lie in [0, 1], got {self.prune_min_prob!r}")

    @property
    def total_steps(self) -> int:
        """Steps of both phases (a pruning phase needs a warm-up before it): 0 means no warm-up at all."""
        return self.steps + self.prune_steps if self.steps else 0

    def cost(self, preset_samples: int, pruned: Tensor | bool = True) -> Tensor:
        """Classifier passes of the warm-up (and of its pruning phase where ``pruned``, a bool or ``(B,)``), in
        steps of a run with ``preset_samples`` noisy copies (:func:`rde.start.steps_of_passes`)."""
        pruned = torch.as_tensor(pruned, dtype=torch.float64).cpu()
        steps = self.steps + (pruned * self.prune_steps if self.steps else 0 * pruned)
        return steps_of_passes(steps * self.num_samples, preset_samples)


class WarmStart:
    """A start followed by a warm-up: ``WarmStart(explainer)(images) -> Start``.

    Args:
        explainer: the exact explainer the masks start; the warm-up runs its classifier and objective with
            :class:`Warmup`'s samples and learning rate.
        warmup: warm-up settings. Default: ``Warmup()``.
        base: where the warm-up starts: a named init (``"ones"``, ``"const:C"``, ...), a mask, or a start function
            ``images -> Start`` such as a learned start without a warm-up of its own, whose cost is added.
            Default: ``"ones"``.
        seed: noise seed per image (see :meth:`RDE.explain`); the warm-up uses a stream of its own.
    """

    def __init__(self, explainer: RDE, warmup: Warmup | None = None, base: InitSpec | StartFn = "ones",
                 seed: int = 0):
        if isinstance(base, str):
            parse_init(base)
        if getattr(getattr(base, "policy", None), "warmup", Warmup(steps=0)).total_steps:
            raise InputError("this start ends with a warm-up of its own (its checkpoint's); use it without +warmup")
        self.warmup = warmup if warmup is not None else Warmup()
        self.base = base
        self.seed = seed
        self.explainer = explainer
        config = explainer.config.replace(num_samples=self.warmup.num_samples, lr=self.warmup.lr)
        if self.warmup.barrier and not config.distortion.endswith(BARRIER_SUFFIX):
            config = config.replace(distortion=config.distortion + BARRIER_SUFFIX)
        make = lambda c: type(explainer)(explainer.classifier, c, channels_last=explainer.channels_last)  # noqa: E731
        self._warm = make(config)
        self._prune = make(config.replace(lam=config.lam * self.warmup.prune_lam))

    def __call__(self, images: Tensor, target: Tensor | None = None) -> Start:
        """The warmed-up start of ``images`` (``target``: the explained classes; default the predicted ones), its
        cost including the base start's."""
        init = self.base
        if callable(self.base):
            init = self.base(images) if target is None else self.base(images, target)
        warmed = self.warm(images, init, target)
        return warmed.charged(init.cost) if isinstance(init, Start) else warmed

    def warm(self, images: Tensor, init: InitSpec, target: Tensor | None = None) -> Start:
        """Run the warm-up from ``init`` (any init :meth:`RDE.explain` takes), then its pruning phase; the start's
        cost is the warm-up's alone."""
        return self._run(images, init, target, record=False)[0]

    def warm_with_signals(self, images: Tensor, init: InitSpec, target: Tensor | None = None
                          ) -> tuple[Start, WarmupSignals]:
        """:meth:`warm` (the same start, bit for bit) and what its two phases saw, per mask entry
        (:class:`WarmupSignals`: what a second stage reads to correct the start)."""
        start, signals = self._run(images, init, target, record=True)
        assert signals is not None
        return start, signals

    def _run(self, images: Tensor, init: InitSpec, target: Tensor | None, record: bool
             ) -> tuple[Start, WarmupSignals | None]:
        w = self.warmup
        seed = (self.seed + WARMUP_SEED_OFFSET) % 2**63
        run = self._warm.explain(images, target=target, init=init, steps=w.steps, seed=seed, record_signals=record)
        mask = run.mask
        pruned = torch.zeros(len(images), dtype=torch.bool, device=mask.device)
        prune_signals = {k: torch.zeros_like(mask) for k in SIGNAL_KEYS} if record else None
        if w.steps and w.prune_steps:
            pruned = run.target_probs >= w.prune_min_prob
            rows = pruned.nonzero().squeeze(1)
            if len(rows):  # an int seed gives every image the same noise, so the subset's masks do not depend on it
                seed = (self.seed + PRUNE_SEED_OFFSET) % 2**63
                mask = mask.clone()
                phase = self._prune.explain(images[rows], target=run.targets[rows], init=mask[rows],
                                            steps=w.prune_steps, seed=seed, record_signals=record)
                mask[rows] = phase.mask
                if record:
                    for k in SIGNAL_KEYS:
                        prune_signals[k][rows] = phase.signals[k]
        cost = w.cost(self.explainer.config.num_samples, pruned.cpu())
        start = Start(mask, cost, pruned.cpu(), torch.zeros(len(images), dtype=torch.long))
        if not record:
            return start, None
        signals = WarmupSignals(
            before=_initial_mask(init, run),
            warmed=run.mask, pruned_mask=mask, warmup=run.signals, prune=prune_signals,
            target_probs=run.target_probs, targets=run.targets,
        )
        return start, signals


@dataclasses.dataclass(frozen=True)
class WarmupSignals:
    """What a warm-up saw, per mask entry, for a batch of B images; every tensor is ``(B, k)`` unless said.

    Attributes:
        before: the mask the warm-up started from.
        warmed: the mask after the warm-up.
        pruned_mask: the mask after the pruning phase (``warmed`` where it did not run): the start's mask.
        warmup: the warm-up's :data:`rde.explanation.SIGNAL_KEYS` (Adam's moments at its end, the mean and
            std of its noisy gradients).
        prune: the pruning phase's, zeros for the images it did not run on (``Start.pruned``).
        target_probs: ``(B,)`` the explained class's probability on the clean image.
        targets: ``(B,)`` the explained classes.
    """

    before: Tensor
    warmed: Tensor
    pruned_mask: Tensor
    warmup: dict[str, Tensor]
    prune: dict[str, Tensor]
    target_probs: Tensor
    targets: Tensor


def _initial_mask(init: InitSpec, run: Explanation) -> Tensor:
    """The mask a warm-up run started from (a mask, a Start, ``ones`` or ``const:C``: the deterministic inits)."""
    if isinstance(init, str) and parse_init(init)[0] not in ("ones", "const"):
        raise InputError(f"warm-up signals need a mask, a Start, 'ones' or 'const:C' to start from, got {init!r}")
    return make_initial_mask(init, run.layout, len(run), run.mask.device, generators=[])
