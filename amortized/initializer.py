"""A trained initializer as CartoonX's starting mask: the one public way to get a learned start.

    explainer = CartoonX(clf, preset="cpu")
    start_fn = LearnedStart.for_explainer(explainer)           # the bundled initializer for clf + preset
    start = start_fn(images)                                    # a Start: mask, cost, pruned, backoffs
    result = explainer.explain(images, init=start, steps=30)

A checkpoint records the classifier, the full preset and the mask layout it was trained for; using it
for another is refused. The network's sparse prediction often has lost the class, which collapses the
refinement. So its checkpoint's :class:`~amortized.policy.StartPolicy` runs on every prediction: a warm-up
(:class:`rde.warmup.Warmup`: a short run with few noisy copies and a log-probability barrier, which pulls the
class back without undoing the sparsity, then, for a confident class, a pruning phase at a larger λ), then a
cheap forward-only guard, which tries it soft-thresholded first and backs off toward ones where the class is
gone. What a start costs in classifier passes (the probe, the warm-up and every guard check) comes back in
:attr:`rde.start.Start.cost`, in optimizer steps, so comparisons can charge it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from amortized.checkpoint import CheckpointMismatchError, check_compatible, read_initializer
from amortized.features import ProbeResult, probe
from amortized.net import MaskNet
from amortized.policy import Guard, StartPolicy
from amortized.refiner import SELECT_MODES, Refiner
from rde import CartoonX, MaskLayout, RDEConfig
from rde.errors import InputError
from rde.start import Start, steps_of_passes
from rde.warmup import Warmup, WarmupSignals, WarmStart

BUNDLED = {("efficientnet_lite0", "cpu"): "efficientnet_lite0-cpu.pt"}

__all__ = ["BUNDLED", "CheckpointMismatchError", "Guard", "LearnedStart", "StartPolicy", "Warmup", "bundled_checkpoint", "read_checked_initializer"]


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


def read_checked_initializer(classifier: str, preset: RDEConfig, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """The payload of ``checkpoint`` (default: the one bundled for ``classifier`` and ``preset``), refused unless it
    was trained for that classifier and preset (:func:`amortized.checkpoint.check_compatible`)."""
    # A preset with overrides is named "<base>+"; the bundled one for <base> serves it where the check below
    # finds every field that matters unchanged (steps and samples per call may differ, lambda may not).
    path = Path(checkpoint) if checkpoint is not None else bundled_checkpoint(classifier, preset.name.removesuffix("+"))
    payload = read_initializer(path)
    check_compatible(payload, classifier, preset, source=str(path))
    return payload


class LearnedStart:
    """Make starts ``(images (B, 3, H, W), target=None) -> Start`` for one explainer (classifier + preset): predicted
    by the checkpoint's network, then warmed up and guarded by a :class:`~amortized.policy.StartPolicy`.

    Args:
        payload: a checkpoint read by :func:`amortized.checkpoint.read_initializer`.
        explainer: the :class:`~rde.CartoonX` whose optimization the masks start; its classifier feeds the
            network and the guard.
        policy: the warm-up and guard; default: the one the checkpoint ships with.
        seed: noise seed of the guard's checks and the warm-up.
        refine: how the checkpoint's second stage (:class:`amortized.refiner.Refiner`, if it has one) is used, one of
            :data:`amortized.refiner.SELECT_MODES`; default: the checkpoint's (``select``).
    """

    def __init__(self, payload: dict[str, Any], explainer: CartoonX, policy: StartPolicy | None = None,
                 seed: int = 0, refine: str | None = None) -> None:
        if explainer.representation_kind != "wavelet":
            raise InputError("a learned initializer predicts CartoonX wavelet masks; it cannot start Pixel RDE")
        self.explainer = explainer
        self.taps = dict(payload["taps"])
        self.net = MaskNet.from_config(payload["net"])
        self.net.load_state_dict(payload["state_dict"])
        self.device = explainer.classifier.mean.device
        self.net.to(self.device).eval()
        self.policy = policy if policy is not None else StartPolicy.from_dict(payload)
        self.seed = seed
        self.refiner: Refiner | None = None
        self.refine, self.refiner_samples = "off", 0
        if payload.get("refiner"):
            entry = payload["refiner"]
            self.refiner = Refiner.from_saved(entry).to(self.device)
            self.refine, self.refiner_samples = str(entry.get("mode", "select")), int(entry.get("samples", 16))
        if refine is not None:
            self.refine = refine
        if self.refine not in SELECT_MODES:
            raise InputError(f"refine must be one of {SELECT_MODES}, got {self.refine!r}")

    @classmethod
    def for_explainer(cls, explainer: CartoonX, checkpoint: str | Path | None = None,
                      policy: StartPolicy | None = None, seed: int = 0, refine: str | None = None) -> LearnedStart:
        """Load ``checkpoint`` (default: the bundled one for the explainer's classifier and preset) and check that
        it was trained for that classifier and preset."""
        payload = read_checked_initializer(explainer.classifier.name, explainer.config, checkpoint)
        return cls(payload, explainer, policy, seed, refine)

    @property
    def preset(self) -> RDEConfig:
        return self.explainer.config

    def __call__(self, images: Tensor, target: Tensor | None = None) -> Start:
        """The starts of ``images`` ``(B, 3, H, W)``: predicted, warmed up, corrected by the refiner where there is one
        (:attr:`refine`), then guarded, so the guard checks the mask the refinement starts from (``target``: default
        the predicted classes)."""
        images = images.to(self.device).float()
        use_refiner = self.refiner is not None and self.refine != "off" and bool(self.policy.warmup.total_steps)
        inputs, start, signals = self.warmed(images, target, signals=use_refiner)
        if use_refiner:
            start = self.corrected(images, inputs.targets, start, signals, inputs.magnitude)[0]
        # The probe is one forward+backward of the clean image.
        return self.guarded(images, inputs.targets, inputs.probs, start).charged(
            steps_of_passes(1, self.preset.num_samples))

    def corrected(self, images: Tensor, targets: Tensor, start: Start, signals: WarmupSignals, magnitude: Tensor
                  ) -> tuple[Start, Tensor]:
        """The refiner's correction of a warmed-up ``start`` from its warm-up's ``signals`` and the images'
        coefficient ``magnitude`` (:attr:`amortized.features.ProbeResult.magnitude`), and which images took it
        ``(B,)`` bool. With :attr:`refine` ``"select"``, each image keeps whichever mask has the lower RDE objective
        (mean over ``refiner_samples`` noisy copies, the same for both, forward only), the correction only where it
        also keeps the guard's share of the class probability (``Guard.keep``; on a start whose class is not
        confident the label distortion is small even where the class is gone, and the guard would blend such a
        mask toward ones); those checks (two of ``refiner_samples`` + 1 passes, the clean image included) are
        charged in the start's cost."""
        if self.refiner is None:
            raise InputError("this learned start has no refiner (its checkpoint has none)")
        layout = self.explainer.representation(images.shape[2], images.shape[3], self.device).layout
        with torch.no_grad():
            candidate = self.refiner.correct(signals, magnitude.to(self.device), layout)
        took = torch.ones(len(images), dtype=torch.bool, device=self.device)
        cost = torch.zeros(len(images), dtype=torch.float64)
        if self.refine == "select":
            with torch.no_grad():
                checks = [self.explainer.objective(images, m, targets, self.refiner_samples, seed=self.seed)
                          for m in (start.mask, candidate)]
            took = checks[1]["loss"] < checks[0]["loss"]
            if self.policy.guard.keep > 0:  # a correction the guard would back off from is no better start
                took &= checks[1]["kept"] >= self.policy.guard.keep
            cost += steps_of_passes(2 * (self.refiner_samples + 1), self.preset.num_samples)
        mask = torch.where(took[:, None], candidate, start.mask)
        return Start(mask, start.cost + cost, start.pruned, start.backoffs), took.cpu()

    def guarded(self, images: Tensor, targets: Tensor, probs: Tensor, start: Start) -> Start:
        """``start`` after the policy's guard (the images its pruning phase pruned try the shrinks first), charged
        the guard's checks; ``probs``: the targets' probabilities on the clean images."""
        rep = self.explainer.representation(images.shape[2], images.shape[3], self.device)
        warmup = self.policy.warmup
        sparsify = start.pruned.to(start.mask.device) if warmup.total_steps and warmup.prune_steps else None
        guarded, backoffs, checks = self._guard(start.mask, images, targets, probs, rep.layout, sparsify)
        # a check is `samples` forward passes, charged as if they were forward+backward passes.
        return Start(guarded, start.cost + steps_of_passes(checks * self.policy.guard.samples, self.preset.num_samples),
                     start.pruned, backoffs)

    def warmed(self, images: Tensor, target: Tensor | None = None, signals: bool = False
               ) -> tuple[ProbeResult, Start, WarmupSignals | None]:
        """The probe of ``images``, the network's prediction after the policy's warm-up (the start before the guard;
        its cost is the warm-up's, the probe is not charged yet) and, where ``signals``, what the warm-up saw."""
        images = images.to(self.device).float()
        _, _, height, width = images.shape
        rep = self.explainer.representation(height, width, self.device)
        inputs = probe(self.explainer.classifier, rep, images, target, self.taps)
        with torch.no_grad():
            mask = self.net(inputs, rep.layout)
        if not self.policy.warmup.total_steps:
            return inputs, Start.free(mask), None
        warm = WarmStart(self.explainer, self.policy.warmup, seed=self.seed)
        if signals:
            start, seen = warm.warm_with_signals(images, mask, inputs.targets)
            return inputs, start, seen
        return inputs, warm.warm(images, mask, inputs.targets), None

    @torch.no_grad()
    def _guard(self, mask: Tensor, images: Tensor, targets: Tensor, reference: Tensor, layout: MaskLayout,
               sparsify: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Check the candidates of :meth:`Guard.candidates` in turn, per image; ``sparsify`` (B,) bool: the images
        whose candidates begin with the shrinks (default all; the others begin with the mask itself). Returns the
        masks, the back-offs (B,) and the checks run per image (B,), both on the CPU."""
        g = self.policy.guard
        batch = len(images)
        rows = torch.arange(batch, device=mask.device)
        shrink = torch.full((batch,), g.keep > 0, dtype=torch.bool, device=mask.device)  # unchecked, no shrink is safe
        if sparsify is not None:
            shrink &= sparsify
        first = torch.where(shrink, 0, len(g.shrinks))
        checks = torch.zeros(batch, device=mask.device)
        if g.keep <= 0:
            return mask, torch.zeros(batch, dtype=torch.long), checks.cpu()
        candidates = torch.stack(g.candidates(mask, layout))  # (n, B, k)
        index = first.clone()
        mask = candidates[index, rows]
        active = torch.ones(batch, dtype=torch.bool, device=mask.device)
        while bool(active.any()):
            probs = self.explainer.predict_probabilities(images, mask, g.samples, seed=self.seed)
            checks += active.float()
            kept = probs.gather(1, targets[:, None]).squeeze(1) / reference.clamp_min(1e-12)
            active &= (kept < g.keep) & (index < len(candidates) - 1)  # failed, and a back-off is left
            index += active.long()
            mask = candidates[index, rows]
        return mask, (index - first).cpu(), checks.cpu()


LearnedInitializer = LearnedStart  # the name before 2026-12; kept so existing code keeps working
