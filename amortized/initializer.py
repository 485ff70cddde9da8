"""Use a trained :class:`~amortized.module.MaskInitializer` checkpoint as CartoonX's initial mask.

The checkpoint records the classifier, preset and mask layout it was trained for; loading it for a
different classifier or layout is refused. Predictions go through a cheap forward-only guard: if the
predicted mask keeps too little of the class probability, it is blended toward ones until it does
(../shared/notes/initialization.md: a prediction that destroys the class collapses the refinement).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from amortized.module import CHECKPOINT_KEY, MaskInitializer
from rde import CartoonX, RDEConfig, load_preset

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED = {("efficientnet_lite0", "cpu"): REPO_ROOT / "data" / "initializers" / "efficientnet_lite0-cpu.ckpt"}


class CheckpointMismatchError(ValueError):
    """A checkpoint trained for another classifier, preset or mask layout."""


def bundled_checkpoint(classifier: str, preset: str) -> Path:
    path = BUNDLED.get((classifier, preset))
    if path is None:
        known = ", ".join(f"{c} + {p}" for c, p in BUNDLED)
        raise ValueError(
            f"no bundled initializer for classifier {classifier!r} with preset {preset!r} (bundled: {known}); "
            "train one with `cartoonx train` and pass --checkpoint"
        )
    if not path.exists():
        raise FileNotFoundError(f"bundled initializer missing: {path}")
    return path


class LearnedInitializer:
    """Predict initial masks ``(B, k)`` for CartoonX from images.

    Args:
        module: a trained :class:`MaskInitializer`.
        guard_keep: the predicted mask must keep at least this fraction of the target-class
            probability (mean over ``guard_samples`` obfuscations); 0 disables the guard.
        guard_blend: each back-off step maps ``m -> 1 - guard_blend * (1 - m)``.
        guard_max_steps: at most this many back-off steps.
    """

    def __init__(
        self,
        module: MaskInitializer,
        guard_keep: float = 0.7,
        guard_samples: int = 16,
        guard_blend: float = 0.7,
        guard_max_steps: int = 6,
    ) -> None:
        self.module = module.eval()
        self.guard_keep = guard_keep
        self.guard_samples = guard_samples
        self.guard_blend = guard_blend
        self.guard_max_steps = guard_max_steps
        self.last_backoffs: Tensor | None = None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        classifier: str,
        preset: str | RDEConfig,
        device: torch.device | str = "cpu",
        **guard: float,
    ) -> LearnedInitializer:
        """Load ``path`` and check that it was trained for ``classifier`` and ``preset``."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"initializer checkpoint not found: {path}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means an unusable file
            raise ValueError(f"{path}: not a readable checkpoint ({e})") from None
        meta = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
        if meta is None:
            raise CheckpointMismatchError(f"{path}: not a FastCartoonX initializer checkpoint (no '{CHECKPOINT_KEY}' entry)")
        check_compatible(meta, classifier, load_preset(preset), source=str(path))
        module = MaskInitializer.load_from_checkpoint(path, map_location=device)
        return cls(module.to(device), **guard)

    def __call__(self, images: Tensor, explainer: CartoonX | None = None, seed: int = 0) -> Tensor:
        """Masks ``(B, k)`` for ``images``; with ``explainer`` given, guarded against destroying the class."""
        with torch.no_grad():
            mask = self.module(images.to(self.module.device))
        if explainer is None or self.guard_keep <= 0:
            return mask
        return self.guard(mask, images, explainer, seed)

    @torch.no_grad()
    def guard(self, mask: Tensor, images: Tensor, explainer: CartoonX, seed: int = 0) -> Tensor:
        full = explainer.classifier(images).softmax(-1)
        target = full.argmax(-1, keepdim=True)
        reference = full.gather(1, target).squeeze(1)
        backoffs = torch.zeros(len(images), dtype=torch.long, device=mask.device)
        for _ in range(self.guard_max_steps):
            probs = explainer.predict_probabilities(images, mask, self.guard_samples, seed=seed)
            kept = probs.gather(1, target).squeeze(1) / reference.clamp_min(1e-12)
            weak = kept < self.guard_keep
            if not bool(weak.any()):
                break
            mask = torch.where(weak[:, None], 1.0 - self.guard_blend * (1.0 - mask), mask)
            backoffs += weak.long()
        self.last_backoffs = backoffs
        return mask


def check_compatible(meta: dict, classifier: str, preset: RDEConfig, source: str = "checkpoint") -> None:
    """Refuse a checkpoint whose classifier, layout or objective differs from the requested ones."""
    problems = []
    if meta.get("classifier") != classifier:
        problems.append(f"classifier {meta.get('classifier')!r} (requested {classifier!r})")
    trained = RDEConfig.from_dict({k: v for k, v in meta.get("preset", {}).items() if k != "name"})
    for key in ("image_size", "wavelet", "lam", "distortion", "obfuscation", "spatial_weight"):
        if getattr(trained, key) != getattr(preset, key):
            problems.append(f"{key} {getattr(trained, key)!r} (requested {getattr(preset, key)!r})")
    if problems:
        raise CheckpointMismatchError(
            f"{source} was trained for a different setting: " + "; ".join(problems) + ". Use a matching "
            "--model/--preset or train an initializer for this one with `cartoonx train`."
        )


def export_checkpoint(source: str | Path, destination: str | Path) -> Path:
    """Copy a training checkpoint without optimizer and loop state: what an initializer needs to ship."""
    ckpt = torch.load(source, map_location="cpu", weights_only=False)
    if CHECKPOINT_KEY not in ckpt:
        raise CheckpointMismatchError(f"{source}: not a FastCartoonX initializer checkpoint")
    keep = ("state_dict", "hyper_parameters", "hparams_name", CHECKPOINT_KEY, "pytorch-lightning_version", "epoch", "global_step")
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: ckpt[k] for k in keep if k in ckpt}, destination)
    return destination
