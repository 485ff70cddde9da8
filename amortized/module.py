"""LightningModule that trains :class:`~amortized.net.MaskNet` to predict exact CartoonX masks.

Losses (any combination, by weight):

* ``supervised``: risk-averse per-scale error against exact targets from ``cartoonx generate`` shards;
* ``objective``: the RDE objective of the predicted mask through the frozen classifier (amortized
  optimization: no targets needed), with a training-only barrier on the lost log-probability of the
  class and a capped lambda, the settings that kept the scouting run from collapsing.

Batches are dicts with ``image`` ``(B, 3, H, W)`` and optionally ``mask`` ``(B, k)``, ``final_loss`` ``(B,)``
and ``has_mask`` ``(B,)`` (rows without a target only feed the objective term).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

import rde
from amortized.losses import per_scale_abs_error, risk_averse_mask_loss
from amortized.net import MaskNet
from rde import CartoonX, create_classifier, load_preset
from rde.metrics import collapsed, loss_at

CHECKPOINT_KEY = "fastcartoonx"


class MaskInitializer(L.LightningModule):
    """Train a mask initializer for one classifier and one preset.

    Args:
        classifier: registry name of the frozen classifier the masks explain.
        preset: the optimizer preset the targets were generated with (sets image size, wavelet, lambda).
        width, decoder_width, floor, coefficient_inputs, init_bias: :class:`MaskNet` architecture (``floor``:
            one value, or one per scale: lowpass, level 1 ... level J).
        lr, weight_decay: AdamW.
        under_weight: risk aversion; under-predicting a coefficient costs this many times more.
        scale_weights: per-scale weights of the supervised loss (lowpass, level 1 ... level J); default equal.
        supervised_weight: weight of the supervised loss (ignored for batches without ``mask``).
        objective_weight: weight of the RDE-objective term (0 disables; >0 works without targets).
        objective_lam: lambda used by the objective term in training (capped below the preset's for stability).
        objective_samples: noise samples per image for the objective term.
        barrier_weight: weight of ``relu(log p_j(x) - log p_j(y))`` in the objective term.
        val_samples: noise samples for the zero-step validation loss.
        refine_steps: refinement steps compared at validation (learned init vs ones); 0 disables.
        refine_images: how many validation images get the (costly) refinement comparison.
        refine_every_n_epochs: run the refinement comparison on the first and then every n-th validation run.
        init_weights: start the network from this checkpoint's weights (fine-tuning, e.g. the bundled
            initializer with a new loss); loaded when fitting starts, skipped when resuming with ``ckpt_path``.
    """

    def __init__(
        self,
        classifier: str = "efficientnet_lite0",
        preset: str = "cpu",
        width: int = 16,
        decoder_width: int = 32,
        floor: float | list[float] = 0.1,
        coefficient_inputs: bool = True,
        init_bias: float = 2.0,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        under_weight: float = 4.0,
        scale_weights: Sequence[float] | None = None,
        supervised_weight: float = 1.0,
        objective_weight: float = 0.0,
        objective_lam: float = 5.0,
        objective_samples: int = 4,
        barrier_weight: float = 1.0,
        val_samples: int = 16,
        refine_steps: int = 30,
        refine_images: int = 4,
        refine_every_n_epochs: int = 1,
        init_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.preset = load_preset(preset)
        self.net = MaskNet(self.preset.wavelet, width, decoder_width, floor, coefficient_inputs, init_bias)
        self._explainers: dict[tuple[float, str], CartoonX] = {}
        self._refine_batch: list[Tensor] = []
        self._validation_runs = 0

    # -- inference -------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    @property
    def layout_signature(self) -> str:
        size = self.preset.image_size
        return self.net.layout(size, size).signature

    def explainer(self, lam: float | None = None) -> CartoonX:
        """A CartoonX with the frozen classifier on this module's device (not a submodule: never saved)."""
        lam = self.preset.lam if lam is None else lam
        key = (float(lam), str(self.device))
        if key not in self._explainers:
            clf = create_classifier(self.hparams.classifier, device=self.device)
            self._explainers[key] = CartoonX(clf, self.preset, lam=lam)
        return self._explainers[key]

    # -- training ------------------------------------------------------------------------------------
    def model_step(self, batch: dict[str, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        images = batch["image"]
        pred = self.net(images)
        layout = self.net.layout(images.shape[2], images.shape[3])
        total = pred.new_zeros(())
        logs: dict[str, Tensor] = {}
        rows = _target_rows(batch)
        if rows is not None and bool(rows.any()) and self.hparams.supervised_weight > 0:
            sup, per_scale = risk_averse_mask_loss(
                pred[rows], batch["mask"][rows], layout, self.hparams.under_weight, self.hparams.scale_weights
            )
            total = total + self.hparams.supervised_weight * sup
            logs["supervised"] = sup
            for name, value in per_scale.items():
                logs[f"supervised_{name}"] = value
        if self.hparams.objective_weight > 0 and stage == "train":
            seeds = [self.global_step * len(images) + i for i in range(len(images))]
            obj = self.explainer(self.hparams.objective_lam).objective(
                images, pred, num_samples=self.hparams.objective_samples, seed=seeds
            )
            barrier = F.relu(-obj["target_logprob"])
            term = (obj["loss"] + self.hparams.barrier_weight * barrier).mean()
            total = total + self.hparams.objective_weight * term
            logs["objective"] = term
            logs["barrier"] = barrier.mean()
        self.log_dict({f"{stage}/{k}": v for k, v in logs.items()}, batch_size=len(images))
        self.log(f"{stage}/loss", total, batch_size=len(images), prog_bar=True)
        return total, pred

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.model_step(batch, "train")[0]

    # -- validation ------------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        images = batch["image"]
        _, pred = self.model_step(batch, "val")
        n = len(images)
        rows = _target_rows(batch)
        if rows is not None and bool(rows.any()):
            layout = self.net.layout(images.shape[2], images.shape[3])
            for name, err in per_scale_abs_error(pred[rows], batch["mask"][rows], layout).items():
                self.log(f"val/mae_{name}", err, batch_size=int(rows.sum()))
        seeds = [10_000 + batch_idx * n + i for i in range(n)]
        zero = self.explainer().objective(images, pred, num_samples=self.hparams.val_samples, seed=seeds)["loss"]
        self.log("val/rde_loss_learned", zero.mean(), batch_size=n, prog_bar=True)
        self.log("val/rde_loss_ones", torch.full_like(zero, self.preset.lam).mean(), batch_size=n)
        if rows is not None and bool(rows.any()) and "final_loss" in batch:
            final = batch["final_loss"].float()[rows]
            m = int(rows.sum())
            self.log("val/rde_loss_learned_on_targets", zero[rows].mean(), batch_size=m)
            self.log("val/rde_loss_target", final.mean(), batch_size=m)
            self.log("val/zero_step_ratio", (zero[rows] / final).mean(), batch_size=m)
        have = sum(len(x) for x in self._refine_batch)
        if have < self.hparams.refine_images:
            self._refine_batch.append(images[: self.hparams.refine_images - have].detach().clone())

    def on_validation_epoch_end(self) -> None:
        images, self._refine_batch = self._refine_batch, []
        steps = self.hparams.refine_steps
        if not images or steps <= 0 or self.trainer.sanity_checking:
            return
        self._validation_runs += 1
        if (self._validation_runs - 1) % self.hparams.refine_every_n_epochs:
            return
        with torch.inference_mode(False), torch.enable_grad():
            x = torch.cat(images).clone()
            comparison = refinement_comparison(self.explainer(), self.net, x, steps)
        for k, v in comparison.items():
            self.log(f"val/refine{steps}_{k}", v)

    def on_fit_start(self) -> None:
        if self.hparams.init_weights and self.trainer.ckpt_path is None:
            self.load_net_weights(self.hparams.init_weights)

    def load_net_weights(self, path: str | Path) -> None:
        """Copy the network weights of another initializer checkpoint (same architecture) into this one."""
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        state = {k[len("net.") :]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("net.")}
        if not state:
            raise ValueError(f"{path}: no initializer network weights in this checkpoint")
        try:
            self.net.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{path}: its network does not match this one ({e})") from None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- checkpoints -----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = checkpoint_metadata(self)


def _target_rows(batch: dict[str, Tensor]) -> Tensor | None:
    """Boolean ``(B,)``: which rows carry an exact target (all rows for shard batches)."""
    if "mask" not in batch:
        return None
    if "has_mask" in batch:
        return batch["has_mask"].bool()
    return torch.ones(len(batch["mask"]), dtype=torch.bool, device=batch["mask"].device)


def checkpoint_metadata(module: MaskInitializer) -> dict[str, Any]:
    """What a checkpoint was trained for; checked before a checkpoint is used as an initializer."""
    return {
        "classifier": module.hparams.classifier,
        "preset": module.preset.to_dict(),
        "layout": module.layout_signature,
        "version": rde.__version__,
    }


def refinement_comparison(explainer: CartoonX, net: MaskNet, images: Tensor, steps: int, seed: int = 1234) -> dict[str, float]:
    """Loss after ``steps`` refinement steps from the raw learned mask (no guard) vs from ones, same noise seeds,
    and the fraction of learned runs that lost the class (:func:`rde.metrics.collapsed`; their loss is not comparable).

    Losses are 10-step moving averages at the last step (single-step losses are Monte-Carlo noisy).
    """
    was_training = net.training
    net.eval()
    with torch.no_grad():
        init = net(images)
    net.train(was_training)
    learned = explainer.explain(images, init=init, steps=steps, seed=seed)
    ones = explainer.explain(images, init="ones", steps=steps, seed=seed).history["loss"]
    lo, lu = loss_at(learned.history["loss"], [steps])[steps], loss_at(ones, [steps])[steps]
    lost = collapsed(learned.history["distortion"], learned.target_probs)
    return {"learned": float(lo.mean()), "ones": float(lu.mean()), "ratio": float((lo / lu).mean()),
            "collapsed": float(lost.float().mean())}
