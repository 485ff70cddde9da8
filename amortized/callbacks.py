"""Lightning callbacks of initializer training.

:class:`RefinementMetric` is the fast iteration metric: the exact optimizer refines the network's prediction for
a few steps on a few validation images, and the loss it reaches is compared with the exact target's final loss.
It needs the frozen classifier and the optimizer, so it runs once per validation run, not per batch.
``cartoonx train`` always adds it (``refinement:`` in the train config; ``steps: 0`` switches it off).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from rde.errors import InputError
from rde.metrics import collapsed, loss_at


def refinement_metric(module: Any, images: Tensor, final_loss: Tensor, steps: int, seed: int = 1234) -> dict[str, Tensor]:
    """Refine ``module``'s prediction on ``images`` for ``steps`` steps with its explainer (the module's preset).

    Returns ``over_target``: the median over images of loss@steps / the exact target's final loss, and
    ``collapsed``: the fraction of images whose refined mask lost the class (:func:`rde.metrics.collapsed`).
    """
    with torch.inference_mode(False), torch.enable_grad():
        images = images.clone()  # a normal tensor, also when collected under inference mode
        with torch.no_grad():
            init = module(images)
        result = module.explainer().explain(images, init=init, steps=steps, seed=seed)
    ratio = loss_at(result.history["loss"], [steps])[steps] / final_loss.cpu()
    return {"over_target": ratio.median(),
            "collapsed": collapsed(result.history["distortion"], result.target_probs).float().mean()}


class RefinementMetric(L.Callback):
    """Log ``val/refine{steps}_over_target`` and ``val/refine{steps}_collapsed`` (:func:`refinement_metric`).

    Args:
        steps: refinement steps from the prediction (0: off).
        images: how many validation images, the first ones of each validation run.
        every_n_epochs: compute it on every n-th validation run (the first, then every n-th), not during
            the sanity check.
        seed: the refinement's noise seed, the same on every run so the numbers compare.
    """

    def __init__(self, steps: int = 30, images: int = 8, every_n_epochs: int = 1, seed: int = 1234) -> None:
        if steps < 0 or images < 0 or every_n_epochs < 1:
            raise InputError(f"RefinementMetric: steps and images must be >= 0 and every_n_epochs >= 1, got "
                             f"steps={steps}, images={images}, every_n_epochs={every_n_epochs}")
        self.steps, self.images, self.every_n_epochs, self.seed = steps, images, every_n_epochs, seed
        self._batches: list[tuple[Tensor, Tensor]] = []
        self._runs = 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._batches = []

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        want = self.images - sum(len(x) for x, _ in self._batches)
        if want > 0 and self.steps > 0:
            self._batches.append((batch["image"][:want].detach().clone(), batch["final_loss"][:want].detach().clone()))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches, self._batches = self._batches, []
        if not batches or trainer.sanity_checking:
            return
        self._runs += 1
        if (self._runs - 1) % self.every_n_epochs:
            return
        metric = refinement_metric(pl_module, torch.cat([x for x, _ in batches]), torch.cat([f for _, f in batches]),
                                   self.steps, self.seed)
        for name, value in metric.items():
            pl_module.log(f"val/refine{self.steps}_{name}", value)
