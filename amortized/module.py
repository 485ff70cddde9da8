"""LightningModule that trains :class:`~amortized.net.MaskNet` to predict exact CartoonX masks.

Every step probes the frozen classifier once per image (features and class gradient,
:func:`amortized.features.probe`) and predicts a mask from that. Losses, by weight:

* ``supervised``: risk-averse per-scale error against exact targets from ``cartoonx generate`` shards;
* ``objective``: the RDE objective of the predicted mask through the frozen classifier, with a barrier on
  the lost log-probability of the class. The supervised fit alone predicts something like an average of
  the optima, whose peaks are too low to keep the class (measured: < 1 % of the probability survives);
  this term teaches the network to keep it.

Batches are dicts with ``image`` ``(B, 3, H, W)``, ``mask`` ``(B, k)``, ``target`` ``(B,)`` (the class the
mask explains) and ``final_loss`` ``(B,)``, as :class:`~amortized.datamodule.MaskShardDataModule` serves them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from amortized.checkpoint import CHECKPOINT_KEY, initializer_payload, read_initializer
from amortized.policy import StartPolicy
from amortized.features import ProbeResult, feature_channels, feature_taps, probe
from amortized.losses import per_scale_abs_error, risk_averse_mask_loss
from amortized.net import INPUTS, MaskNet
from rde import CartoonX, create_classifier, load_preset
from rde.classifiers import Classifier
from rde.errors import InputError
from rde.metrics import collapsed, loss_at
from rde.representation import WaveletRepresentation


@dataclass
class NetConfig:
    """:class:`MaskNet` architecture (``floor``: one value, or one per scale: lowpass, level 1 ... level J)."""

    width: int = 24
    head_width: int = 32
    floor: float | list[float] = 0.1
    inputs: list[str] = field(default_factory=lambda: list(INPUTS))
    init_bias: float = 0.0


@dataclass
class LossConfig:
    """Training losses: ``under_weight`` is the risk aversion (under-predicting costs that many times more);
    the objective term uses ``objective_lam`` and ``objective_samples`` noise samples per image."""

    supervised_weight: float = 1.0
    under_weight: float = 4.0
    objective_weight: float = 0.0
    objective_lam: float = 20.0
    objective_samples: int = 4
    barrier_weight: float = 1.0


@dataclass
class ValidationConfig:
    """``refine_steps`` refinement steps from the prediction on ``refine_images`` validation images, every
    ``refine_every_n_epochs`` validation runs: the fast iteration metric (loss@30 / the target's final loss)."""

    samples: int = 4
    refine_steps: int = 30
    refine_images: int = 8
    refine_every_n_epochs: int = 1


class MaskInitializer(L.LightningModule):
    """Train a mask initializer for one classifier and one preset.

    Args:
        classifier: registry name of the frozen classifier the masks explain (it also feeds the network).
        preset: the optimizer preset the targets were generated with (image size, wavelet, lambda).
        net, loss, validation: see :class:`NetConfig`, :class:`LossConfig`, :class:`ValidationConfig`.
        lr, weight_decay: AdamW, with a one-cycle schedule over the run when the trainer's steps are known.
        init_weights: start the network from this initializer checkpoint (fine-tuning); skipped on resume.
        cache_probes: keep each training image's probe (features, class gradient) in memory after its first
            epoch. The classifier is frozen and images are not augmented, so the probe never changes; on a
            CPU this makes later epochs several times faster (~0.3 MB per image at 128 px).
        policy: the warm-up and guard the trained network ships with (:class:`~amortized.policy.StartPolicy`);
            every checkpoint records it, and the exported file keeps it. Default: the shipped policy.
    """

    def __init__(
        self,
        classifier: str = "efficientnet_lite0",
        preset: str = "cpu",
        net: NetConfig | None = None,
        loss: LossConfig | None = None,
        validation: ValidationConfig | None = None,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        init_weights: str | None = None,
        cache_probes: bool = True,
        policy: StartPolicy | None = None,
    ) -> None:
        super().__init__()
        self.policy = StartPolicy.from_dict(policy) if isinstance(policy, dict) else policy or StartPolicy()
        net, loss, validation = net or NetConfig(), loss or LossConfig(), validation or ValidationConfig()
        # Plain hyper-parameters only: a checkpoint loads without the training CLI's machinery.
        self.save_hyperparameters({
            "classifier": classifier, "preset": preset, "net": asdict(net), "loss": asdict(loss),
            "validation": asdict(validation), "lr": lr, "weight_decay": weight_decay, "init_weights": init_weights,
            "cache_probes": cache_probes, "policy": self.policy.to_dict(),
        })
        self.preset = load_preset(preset)
        self.loss_config, self.validation_config = loss, validation
        self.taps = feature_taps(classifier)
        clf = create_classifier(classifier)
        self.net_config = {
            "wavelet": asdict(self.preset.wavelet),
            "feature_channels": feature_channels(clf, self.taps, self.preset.image_size),
            **asdict(net),
        }
        self.net = MaskNet.from_config(self.net_config)
        self._classifier: list[Classifier] = [clf]  # a list: not a submodule, never saved
        self._explainers: dict[tuple[float, str], CartoonX] = {}
        size = self.preset.image_size
        self._representation = [WaveletRepresentation(size, size, self.preset.wavelet)]  # a list: not saved
        self._refine: list[tuple[Tensor, Tensor]] = []
        self._probes: dict[str, ProbeResult] = {}
        self._validation_runs = 0

    # -- inference -------------------------------------------------------------------------------
    @property
    def classifier(self) -> Classifier:
        clf = self._classifier[0]
        if clf.mean.device != self.device:
            self._classifier[0] = clf = clf.to(self.device)
        return clf

    @property
    def representation(self) -> WaveletRepresentation:
        rep = self._representation[0]
        if rep.dwt.h0_col.device != self.device:
            self._representation[0] = rep = rep.to(self.device)
        return rep

    def probe(self, images: Tensor, targets: Tensor | None = None) -> ProbeResult:
        return probe(self.classifier, self.representation, images, targets, self.taps)

    def forward(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        return self.net(self.probe(images, targets), self.representation.layout)

    def explainer(self, lam: float | None = None) -> CartoonX:
        """A CartoonX with the frozen classifier on this module's device."""
        lam = self.preset.lam if lam is None else lam
        key = (float(lam), str(self.device))
        if key not in self._explainers:
            self._explainers[key] = CartoonX(self.classifier, self.preset, lam=lam)
        return self._explainers[key]

    # -- training ------------------------------------------------------------------------------------
    def model_step(self, batch: dict[str, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        images, cfg = batch["image"], self.loss_config
        layout = self.representation.layout
        pred = self.net(self._cached_probe(batch), layout)
        sup, per_scale = risk_averse_mask_loss(pred, batch["mask"], layout, cfg.under_weight)
        total = cfg.supervised_weight * sup
        logs = {"supervised": sup, **{f"supervised_{k}": v for k, v in per_scale.items()}}
        if cfg.objective_weight > 0 and stage == "train":
            seeds = [self.global_step * len(images) + i for i in range(len(images))]
            obj = self.explainer(cfg.objective_lam).objective(
                images, pred, target=batch["target"], num_samples=cfg.objective_samples, seed=seeds
            )
            barrier = F.relu(-obj["target_logprob"])
            term = (obj["loss"] + cfg.barrier_weight * barrier).mean()
            total = total + cfg.objective_weight * term
            logs.update(objective=term, barrier=barrier.mean())
        self.log_dict({f"{stage}/{k}": v for k, v in logs.items()}, batch_size=len(images))
        self.log(f"{stage}/loss", total, batch_size=len(images), prog_bar=True)
        return total, pred

    def _cached_probe(self, batch: dict[str, Any]) -> ProbeResult:
        """The probe of a batch, from the cache where every key is in it (keys are unique sample names)."""
        keys = batch.get("key")
        if not self.hparams.cache_probes or keys is None:
            return self.probe(batch["image"], batch["target"])
        if all(k in self._probes for k in keys):
            return _stack_probes([self._probes[k] for k in keys], self.device)
        result = self.probe(batch["image"], batch["target"])
        for i, key in enumerate(keys):
            self._probes[key] = _probe_row(result, i)
        return result

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.model_step(batch, "train")[0]

    # -- validation ------------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        images, n = batch["image"], len(batch["image"])
        _, pred = self.model_step(batch, "val")
        for name, err in per_scale_abs_error(pred, batch["mask"], self.representation.layout).items():
            self.log(f"val/mae_{name}", err, batch_size=n)
        seeds = [10_000 + batch_idx * n + i for i in range(n)]
        obj = self.explainer().objective(images, pred, target=batch["target"], num_samples=self.validation_config.samples,
                                         seed=seeds)
        self.log("val/rde_loss_learned", obj["loss"].mean(), batch_size=n, prog_bar=True)
        self.log("val/zero_step_ratio", (obj["loss"] / batch["final_loss"]).mean(), batch_size=n)
        self.log("val/kept_logprob", obj["target_logprob"].mean(), batch_size=n)
        have = sum(len(x) for x, _ in self._refine)
        want = self.validation_config.refine_images - have
        if want > 0:
            self._refine.append((images[:want].detach().clone(), batch["final_loss"][:want].detach().clone()))

    def on_validation_epoch_end(self) -> None:
        parts, self._refine = self._refine, []
        steps = self.validation_config.refine_steps
        if not parts or steps <= 0 or self.trainer.sanity_checking:
            return
        self._validation_runs += 1
        if (self._validation_runs - 1) % self.validation_config.refine_every_n_epochs:
            return
        with torch.inference_mode(False), torch.enable_grad():
            images = torch.cat([x for x, _ in parts]).clone()
            final = torch.cat([f for _, f in parts])
            with torch.no_grad():
                init = self(images)
            res = self.explainer().explain(images, init=init, steps=steps, seed=1234)
        ratio = loss_at(res.history["loss"], [steps])[steps] / final.cpu()
        self.log(f"val/refine{steps}_over_target", ratio.median())
        self.log(f"val/refine{steps}_collapsed", collapsed(res.history["distortion"], res.target_probs).float().mean())

    def on_fit_start(self) -> None:
        if self.hparams.init_weights and self.trainer.ckpt_path is None:
            self.load_net_weights(self.hparams.init_weights)

    def load_net_weights(self, path: str | Path) -> None:
        """Copy the network weights of another initializer checkpoint (same architecture) into this one."""
        payload = read_initializer(path)
        try:
            self.net.load_state_dict(payload["state_dict"])
        except RuntimeError as e:
            raise InputError(f"{path}: its network does not match this one ({e})") from None

    def configure_optimizers(self) -> Any:
        """AdamW with a one-cycle shape: a linear warm-up over the first 10 % of the run's steps, then cosine to 0.

        The schedule reads the trainer's step budget when it is applied, so a resumed run with more epochs
        stretches it instead of failing (a LambdaLR's state holds no lambda).
        """
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

        def factor(step: int) -> float:
            total = self.trainer.estimated_stepping_batches if self._trainer is not None else float("inf")
            if not math.isfinite(total) or total <= 0:
                return 1.0
            warm = max(1.0, 0.1 * total)
            if step < warm:
                return 1 / 25 + (1 - 1 / 25) * step / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1.0, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints -----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = initializer_payload(
            classifier=self.hparams.classifier, preset=self.preset, taps=self.taps, net_config=self.net_config,
            state_dict=self.net.state_dict(), training=dict(self.hparams), policy=self.policy,
        )


def _probe_row(result: ProbeResult, i: int) -> ProbeResult:
    """Row ``i`` of a probe on the CPU (features in float16), for the cache."""
    return ProbeResult(
        features={k: v[i : i + 1].detach().to("cpu", torch.float16) for k, v in result.features.items()},
        grad_x_input=result.grad_x_input[i : i + 1].cpu(), grad_abs=result.grad_abs[i : i + 1].cpu(),
        magnitude=result.magnitude[i : i + 1].cpu(), targets=result.targets[i : i + 1].cpu(),
        probs=result.probs[i : i + 1].cpu(),
    )


def _stack_probes(rows: list[ProbeResult], device: torch.device) -> ProbeResult:
    cat = lambda ts: torch.cat(ts).to(device)  # noqa: E731
    return ProbeResult(
        features={k: cat([r.features[k] for r in rows]).float() for k in rows[0].features},
        grad_x_input=cat([r.grad_x_input for r in rows]), grad_abs=cat([r.grad_abs for r in rows]),
        magnitude=cat([r.magnitude for r in rows]), targets=cat([r.targets for r in rows]),
        probs=cat([r.probs for r in rows]),
    )
