"""A trained initializer as CartoonX's starting mask: the one public way to get a learned start.

    explainer = CartoonX(clf, preset="cpu")
    start = LearnedInitializer.for_explainer(explainer)          # the bundled initializer for clf + preset
    result = explainer.explain(images, init=start(images), steps=30)

A checkpoint records the classifier, the full preset and the mask layout it was trained for; using it
for another is refused. The network's sparse prediction often has lost the class, which collapses the
refinement (../shared/notes/initialization.md). So every prediction is first warmed up (:class:`rde.warmup.Warmup`:
a short run with 2 noisy copies and a log-probability barrier, which pulls the class back without undoing the
sparsity, then, for a confident class, a pruning phase at a larger λ), then checked by a cheap forward-only
guard, which tries it soft-thresholded first and backs off toward ones where the class is gone. What a start costs in classifier passes (the probe, the warm-up and every guard check) is reported in
:attr:`LearnedInitializer.last_cost`, in optimizer steps, so comparisons can charge it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from amortized.checkpoint import CheckpointMismatchError, check_compatible, read_initializer
from amortized.features import probe
from amortized.net import MaskNet
from rde import CartoonX, MaskLayout, RDEConfig
from rde.errors import InputError
from rde.warmup import Warmup, WarmStart

BUNDLED = {("efficientnet_lite0", "cpu"): "efficientnet_lite0-cpu.pt"}

__all__ = ["BUNDLED", "CheckpointMismatchError", "Guard", "LearnedInitializer", "Warmup", "bundled_checkpoint"]


def bundled_checkpoint(classifier: str, preset: str) -> Path:
    """The initializer shipped inside the package for ``classifier`` and ``preset``."""
    name = BUNDLED.get((classifier, preset))
    if name is None:
        known = ", ".join(f"{c} + {p}" for c, p in BUNDLED)
        raise InputError(
            f"no bundled initializer for classifier {classifier!r} with preset {preset!r} (bundled: {known}); "
            "train one with `cartoonx train` and pass --checkpoint"
        )
    path = Path(str(resources.files("amortized").joinpath("initializers", name)))
    if not path.is_file():
        raise FileNotFoundError(f"bundled initializer missing from the installed package: {path}")
    return path


@dataclass
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
    powers: tuple[float, ...] = ()  # measured before the warm-up existed, not shipped: docs/initializer.md
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


class LearnedInitializer:
    """Predict guarded initial masks ``(B, k)`` for one explainer (classifier + preset) from images.

    Args:
        payload: a checkpoint read by :func:`amortized.checkpoint.read_initializer`.
        explainer: the :class:`~rde.CartoonX` whose optimization the masks start; its classifier feeds the
            network and the guard.
        guard: guard settings; default: the ones the checkpoint ships with.
        seed: noise seed of the guard's checks and the warm-up.
        warmup: a :class:`~rde.warmup.Warmup` run on the prediction before the guard checks it
            (``Warmup(steps=0)``: none); default: the one the checkpoint ships with, or none.
    """

    def __init__(
        self,
        payload: dict[str, Any],
        explainer: CartoonX,
        guard: Guard | None = None,
        seed: int = 0,
        warmup: Warmup | None = None,
    ) -> None:
        if explainer.representation_kind != "wavelet":
            raise InputError("a learned initializer predicts CartoonX wavelet masks; it cannot start Pixel RDE")
        self.explainer = explainer
        self.taps = dict(payload["taps"])
        self.net = MaskNet.from_config(payload["net"])
        self.net.load_state_dict(payload["state_dict"])
        self.device = explainer.classifier.mean.device
        self.net.to(self.device).eval()
        self.guard = guard if guard is not None else Guard(**payload.get("guard", {}))
        self.seed = seed
        self.warmup = warmup if warmup is not None else Warmup(**payload["warmup"])
        self.last_backoffs: Tensor | None = None
        self.last_cost: Tensor | None = None  # (B,) optimizer steps' worth of classifier passes

    @classmethod
    def for_explainer(
        cls,
        explainer: CartoonX,
        checkpoint: str | Path | None = None,
        guard: Guard | None = None,
        seed: int = 0,
        warmup: Warmup | None = None,
    ) -> LearnedInitializer:
        """Load ``checkpoint`` (default: the bundled one for the explainer's classifier and preset) and check that
        it was trained for that classifier and preset."""
        classifier, preset = explainer.classifier.name, explainer.config
        # A preset with overrides is named "<base>+"; the bundled one for <base> serves it where the check below
        # finds every field that matters unchanged (steps and samples per call may differ, lambda may not).
        base = preset.name.removesuffix("+")
        path = Path(checkpoint) if checkpoint is not None else bundled_checkpoint(classifier, base)
        payload = read_initializer(path)
        check_compatible(payload, classifier, preset, source=str(path))
        return cls(payload, explainer, guard, seed, warmup)

    @property
    def preset(self) -> RDEConfig:
        return self.explainer.config

    def __call__(self, images: Tensor, target: Tensor | None = None) -> Tensor:
        """Starting masks ``(B, k)`` for ``images`` ``(B, 3, H, W)``: predicted, warmed up, then guarded, so the
        guard checks the mask the refinement starts from (``target``: default the predicted classes)."""
        images = images.to(self.device).float()
        _, _, height, width = images.shape
        rep = self.explainer.representation(height, width, self.device)
        inputs = probe(self.explainer.classifier, rep, images, target, self.taps)
        with torch.no_grad():
            mask = self.net(inputs, rep.layout)
        warm_cost, sparsify = 0.0, None
        if self.warmup.total_steps:
            warm = WarmStart(self.explainer, self.warmup, seed=self.seed)
            mask = warm.warm(images, mask, inputs.targets)
            warm_cost = warm.last_warm_cost
            sparsify = warm.last_pruned.to(mask.device) if self.warmup.prune_steps else None
        mask = self._guard(mask, images, inputs.targets, inputs.probs, rep.layout, sparsify)
        self.last_cost = self.last_cost + warm_cost
        return mask

    @torch.no_grad()
    def _guard(self, mask: Tensor, images: Tensor, targets: Tensor, reference: Tensor, layout: MaskLayout,
               sparsify: Tensor | None = None) -> Tensor:
        """Check the candidates of :meth:`Guard.candidates` in turn, per image; ``sparsify`` (B,) bool: the images
        whose candidates begin with the shrinks (default all; the others begin with the mask itself)."""
        g, samples_per_step = self.guard, self.preset.num_samples
        batch = len(images)
        rows = torch.arange(batch, device=mask.device)
        candidates = torch.stack(g.candidates(mask, layout))  # (n, B, k)
        shrink = torch.full((batch,), g.keep > 0, dtype=torch.bool, device=mask.device)  # unchecked, no shrink is safe
        if sparsify is not None:
            shrink &= sparsify
        first = torch.where(shrink, 0, len(g.shrinks))
        index = first.clone()
        mask = candidates[index, rows]
        checks = torch.zeros(batch, device=mask.device)
        active = torch.full((batch,), g.keep > 0, dtype=torch.bool, device=mask.device)
        while bool(active.any()):
            probs = self.explainer.predict_probabilities(images, mask, g.samples, seed=self.seed)
            checks += active.float()
            kept = probs.gather(1, targets[:, None]).squeeze(1) / reference.clamp_min(1e-12)
            active &= (kept < g.keep) & (index < len(candidates) - 1)  # failed, and a back-off is left
            index += active.long()
            mask = candidates[index, rows]
        backoffs = index - first
        self.last_backoffs = backoffs
        # The probe is one forward+backward of the clean image; a check is `samples` forward passes. Both are
        # charged as if they were forward+backward passes of a step with `samples_per_step` noisy copies.
        self.last_cost = ((1 + checks * g.samples) / samples_per_step).cpu()
        return mask

