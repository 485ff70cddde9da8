"""LightningModule that trains :class:`~amortized.net.MaskNet` to predict exact CartoonX masks (:class:`MaskNetModule`).

Every step probes the frozen classifier once per image (features and class gradient,
:func:`amortized.features.probe`) and predicts a mask from that. Losses, by weight:

* ``supervised``: risk-averse per-scale error against exact targets from ``cartoonx generate`` shards;
* ``objective``: the RDE objective of the predicted mask through the frozen classifier, with a barrier on
  the lost log-probability of the class. The supervised fit alone predicts something like an average of
  the optima, whose peaks are too low to keep the class (measured: < 1 % of the probability survives);
  this term teaches the network to keep it.
* ``unroll``: the same objective after a few of the start's own warm-up steps from the prediction
  (:func:`amortized.losses.unrolled_refinement`): it rewards a start whose *refined* loss is low, not its
  distance to one optimum (semi-amortized training); the supervised term stays as a regularizer.

Batches are dicts with ``image`` ``(B, 3, H, W)``, ``mask`` ``(B, k)``, ``target`` ``(B,)`` (the class the
mask explains) and ``final_loss`` ``(B,)``, as :class:`~amortized.datamodule.MaskShardDataModule` serves them.
The refinement metric (a few exact optimizer steps from the prediction) is a callback,
:class:`amortized.callbacks.RefinementMetric`, which ``cartoonx train`` adds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from amortized.checkpoint import CHECKPOINT_KEY, initializer_payload, read_initializer
from amortized.features import ProbeResult, feature_channels, feature_taps, probe
from amortized.losses import objective_term, per_scale_abs_error, risk_averse_mask_loss, unrolled_refinement
from amortized.net import INPUTS, MaskNet
from amortized.policy import StartPolicy
from rde import CartoonX, create_classifier, load_preset
from rde.classifiers import Classifier
from rde.errors import InputError
from rde.presets import RDEConfig
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
    the objective term uses ``objective_lam`` and ``objective_samples`` noise samples per image.

    ``unroll_steps`` > 0 (with ``unroll_weight`` > 0) adds ``unroll_weight`` times the objective at the preset's λ
    (``objective_samples`` copies, the barrier as above) of the prediction after ``unroll_steps`` warm-up steps
    (``unroll_samples`` noisy copies each, the policy's warm-up learning rate), with a first-order gradient
    (:func:`amortized.losses.unrolled_refinement`). 0 steps is exactly the loss without it. Its cost, forward and
    backward per training sample (EfficientNet-Lite0 + cpu preset, batches of 4 photos, cached probes, one CPU
    thread): 0.018 s with 0 steps, 0.68 s with 5 and 1.09 s with 10, about 0.08 s per step plus 0.28 s for the
    refined objective and the run's set-up; an epoch of the 708 shipped targets goes from ~13 s to ~8 min (5 steps).
    """

    supervised_weight: float = 1.0
    under_weight: float = 4.0
    objective_weight: float = 0.0
    objective_lam: float = 20.0
    objective_samples: int = 4
    barrier_weight: float = 1.0
    unroll_steps: int = 0
    unroll_weight: float = 1.0
    unroll_samples: int = 2

    def __post_init__(self) -> None:
        for name, least in (("unroll_steps", 0), ("unroll_samples", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InputError(f"loss {name} must be an int >= {least}, got {value!r}")


@dataclass
class ValidationConfig:
    """``samples`` noise samples per image for the objective of the prediction (``val/rde_loss_learned``).

    ``refine_steps``, ``refine_images`` and ``refine_every_n_epochs`` are where older configs set the refinement
    metric, now :class:`amortized.callbacks.RefinementMetric`'s ``steps``, ``images`` and ``every_n_epochs``
    (``refinement:`` in a train config). ``cartoonx train`` hands a value set here to the callback, so an older
    config still runs as it did; the module itself does not read them.
    """

    samples: int = 4
    refine_steps: int | None = None
    refine_images: int | None = None
    refine_every_n_epochs: int | None = None


class MaskNetModule(L.LightningModule):
    """Train :class:`~amortized.net.MaskNet`, a mask initializer for one classifier and one preset.

    Args:
        classifier: registry name of the frozen classifier the masks explain (it also feeds the network).
        preset: the optimizer preset the targets were generated with (image size, wavelet, lambda).
        net, loss, validation: see :class:`NetConfig`, :class:`LossConfig`, :class:`ValidationConfig`.
        lr, weight_decay: AdamW, with a one-cycle schedule over the run when the trainer's steps are known
            (:func:`one_cycle_schedule`).
        init_weights: start the network from this initializer checkpoint (fine-tuning); skipped on resume.
        cache_probes: keep each training image's probe (features, class gradient) in memory after its first
            epoch (:class:`ProbeCache`); on a CPU this makes later epochs several times faster.
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
        # A checkpoint's hyper-parameters hold the configs as plain dicts (load_from_checkpoint passes them back).
        net, loss, validation = (_config(cls, value) for cls, value in
                                 ((NetConfig, net), (LossConfig, loss), (ValidationConfig, validation)))
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
        self._frozen = _Frozen(clf, self.preset)
        self._probes = ProbeCache()

    # -- inference -------------------------------------------------------------------------------
    @property
    def classifier(self) -> Classifier:
        """The frozen classifier, on this module's device."""
        return self._frozen.on(self.device).classifier

    @property
    def representation(self) -> WaveletRepresentation:
        """The preset's wavelet representation, on this module's device."""
        return self._frozen.on(self.device).representation

    def explainer(self, lam: float | None = None) -> CartoonX:
        """A CartoonX with the frozen classifier on this module's device (``lam``: default the preset's)."""
        return self._frozen.on(self.device).explainer(self.preset.lam if lam is None else lam)

    def probe(self, images: Tensor, targets: Tensor | None = None) -> ProbeResult:
        return probe(self.classifier, self.representation, images, targets, self.taps)

    def forward(self, images: Tensor, targets: Tensor | None = None) -> Tensor:
        return self.net(self.probe(images, targets), self.representation.layout)

    # -- training ------------------------------------------------------------------------------------
    def model_step(self, batch: dict[str, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        images, cfg = batch["image"], self.loss_config
        layout = self.representation.layout
        keys = batch.get("key") if self.hparams.cache_probes else None
        pred = self.net(self._probes.get(keys, lambda: self.probe(images, batch["target"]), self.device), layout)
        sup, per_scale = risk_averse_mask_loss(pred, batch["mask"], layout, cfg.under_weight)
        total = cfg.supervised_weight * sup
        logs = {"supervised": sup, **{f"supervised_{k}": v for k, v in per_scale.items()}}
        seeds = [self.global_step * len(images) + i for i in range(len(images))]
        if cfg.objective_weight > 0 and stage == "train":
            term, barrier = objective_term(self.explainer(cfg.objective_lam), images, pred, batch["target"],
                                           cfg.objective_samples, seeds, cfg.barrier_weight)
            total = total + cfg.objective_weight * term.mean()
            logs.update(objective=term.mean(), barrier=barrier.mean())
        if cfg.unroll_steps > 0 and cfg.unroll_weight > 0 and stage == "train":
            refined = unrolled_refinement(self.explainer(), images, pred, batch["target"], cfg.unroll_steps,
                                          self.policy.warmup.lr, cfg.unroll_samples, seed=self.global_step)
            term, barrier = objective_term(self.explainer(), images, refined, batch["target"], cfg.objective_samples,
                                           seeds, cfg.barrier_weight)
            total = total + cfg.unroll_weight * term.mean()
            logs.update(unrolled=term.mean(), unrolled_barrier=barrier.mean())
        self.log_dict({f"{stage}/{k}": v for k, v in logs.items()}, batch_size=len(images))
        self.log(f"{stage}/loss", total, batch_size=len(images), prog_bar=True)
        return total, pred

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.model_step(batch, "train")[0]

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

    # -- optimizer ---------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """AdamW, stepped by :func:`one_cycle_schedule` over the trainer's step budget (constant where it is unknown)."""
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total <= 0:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": one_cycle_schedule(opt, int(total)), "interval": "step"}}

    def on_train_start(self) -> None:
        """A run resumed with another step budget (e.g. more epochs) gets the schedule of its new budget at its step.

        The restored scheduler holds the first run's shape; continuing it past its end would raise the rate again.
        """
        configs = self.trainer.lr_scheduler_configs
        total = self.trainer.estimated_stepping_batches
        if not configs or not math.isfinite(total) or getattr(configs[0].scheduler, "total_steps", None) == int(total):
            return
        optimizer = configs[0].scheduler.optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        configs[0].scheduler = schedule = one_cycle_schedule(optimizer, int(total))
        for _ in range(self.trainer.global_step):
            schedule.step()

    # -- checkpoints -----------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = initializer_payload(
            classifier=self.hparams.classifier, preset=self.preset, taps=self.taps, net_config=self.net_config,
            state_dict=self.net.state_dict(), training=dict(self.hparams), policy=self.policy,
        )


MaskInitializer = MaskNetModule
"""The former name of :class:`MaskNetModule`: saved configs and checkpoints name ``amortized.module.MaskInitializer``."""


def one_cycle_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.1,
                       start_factor: float = 1 / 25) -> torch.optim.lr_scheduler.SequentialLR:
    """A one-cycle learning rate over ``total_steps`` steps: linear from ``start_factor`` x lr to lr over the first
    ``max(1, int(warmup_fraction * total_steps))`` steps, then a cosine to 0 at ``total_steps``.

    The scheduler records ``total_steps`` (also in its state dict, so a resumed run knows its shape).
    """
    warm = max(1, int(warmup_fraction * total_steps))
    sched = torch.optim.lr_scheduler
    schedule = sched.SequentialLR(optimizer, [
        sched.LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warm),
        sched.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warm), eta_min=0.0),
    ], milestones=[warm])
    schedule.total_steps = total_steps
    return schedule


class _Frozen:
    """The frozen classifier, the preset's wavelet representation and CartoonX explainers on them, all on one
    device. Not a submodule: never trained and never saved; :meth:`on` is the one place they move."""

    def __init__(self, classifier: Classifier, preset: RDEConfig) -> None:
        size = preset.image_size
        self.classifier, self.preset = classifier, preset
        self.representation = WaveletRepresentation(size, size, preset.wavelet)
        self.device = classifier.mean.device
        self._explainers: dict[float, CartoonX] = {}

    def on(self, device: torch.device) -> _Frozen:
        if device != self.device:
            self.classifier, self.representation = self.classifier.to(device), self.representation.to(device)
            self.device, self._explainers = device, {}
        return self

    def explainer(self, lam: float) -> CartoonX:
        if float(lam) not in self._explainers:
            self._explainers[float(lam)] = CartoonX(self.classifier, self.preset, lam=lam)
        return self._explainers[float(lam)]


class ProbeCache:
    """Each training image's probe (features in float16, the rest in float32, on the CPU) by its sample key.

    The classifier is frozen and images are not augmented, so a probe never changes (~0.3 MB per image at 128 px).
    """

    def __init__(self) -> None:
        self._rows: dict[str, ProbeResult] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, keys: Sequence[str] | None, compute: Callable[[], ProbeResult], device: torch.device) -> ProbeResult:
        """The cached probes of ``keys`` where all are cached, else ``compute()``, cached row by row (``keys`` None:
        no caching)."""
        if keys is not None and all(k in self._rows for k in keys):
            rows = [self._rows[k] for k in keys]
            cat = lambda ts: torch.cat(ts).to(device)  # noqa: E731
            return ProbeResult(
                features={name: cat([r.features[name] for r in rows]).float() for name in rows[0].features},
                **{f: cat([getattr(r, f) for r in rows]) for f in _PROBE_TENSORS},
            )
        result = compute()
        for i, key in enumerate(keys or []):
            self._rows[key] = ProbeResult(
                features={name: v[i : i + 1].detach().to("cpu", torch.float16) for name, v in result.features.items()},
                **{f: getattr(result, f)[i : i + 1].detach().cpu() for f in _PROBE_TENSORS},
            )
        return result


_PROBE_TENSORS = ("grad_x_input", "grad_abs", "magnitude", "targets", "probs")


def _config(cls: type, value: Any) -> Any:
    """``value`` as the dataclass ``cls``: None is its defaults, a dict its fields."""
    return cls() if value is None else cls(**value) if isinstance(value, dict) else value
