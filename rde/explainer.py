"""The exact RDE optimizer (CartoonX and Pixel RDE), batched over images and noise samples.

One classifier call evaluates B images x L obfuscations. Each image has its own mask, its own loss,
its own noise generator (seeded per image) and, because Adam and clamping act elementwise, exactly the
updates it would get alone. The only coupling between images is floating-point batching in the classifier.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from rde.classifiers import Classifier, as_classifier
from rde.distortion import get_distortion
from rde.errors import InputError
from rde.explanation import HISTORY_KEYS, Explanation
from rde.init import InitSpec, make_initial_mask
from rde.io import check_images
from rde.obfuscation import Obfuscation
from rde.precision import LossScale, autocast, check_precision_device
from rde.presets import RDEConfig, load_preset
from rde.representation import Representation, create_representation, greyscale

INIT_SEED_OFFSET = 0x9E3779B97F4A7C15
TargetSpec = int | Sequence[int] | Tensor | None
SeedSpec = int | Sequence[int]
StepCallback = Callable[[int, Tensor, dict[str, Tensor]], None]


class RDE:
    """Rate-distortion explanation by Adam on a mask over a representation (wavelet or pixel).

    Args:
        classifier: a :class:`~rde.classifiers.Classifier`, a registry name, or an ``nn.Module`` mapping
            [0, 1] images to logits. It is frozen and put in eval mode.
        preset: a preset name (``cpu``, ``paper``, ``tiny``), a YAML path or an :class:`RDEConfig`.
            Default: ``cpu``.
        channels_last: run a convolutional classifier in the channels-last memory format (faster convolutions
            on tensor cores). ``None`` (default): on CUDA when the classifier has a ``Conv2d``; never on CPU.
        **overrides: fields of :class:`RDEConfig` to change (``lam=10``, ``precision="bf16-mixed"``, ...).
    """

    representation_kind = "wavelet"
    method = "rde"

    def __init__(
        self,
        classifier: Classifier | nn.Module | str,
        preset: str | RDEConfig = "cpu",
        *,
        channels_last: bool | None = None,
        **overrides: Any,
    ):
        self.classifier = as_classifier(classifier)
        self.config = load_preset(preset).replace(**overrides)
        self.channels_last = channels_last
        self._representations: dict[tuple, Representation] = {}
        self._is_convolutional = any(isinstance(m, nn.Conv2d) for m in self.classifier.modules())

    # -- public -------------------------------------------------------------------------------------
    def representation(self, height: int, width: int, device: torch.device) -> Representation:
        key = (height, width, str(device))
        if key not in self._representations:
            rep = create_representation(self.representation_kind, height, width, self.config.wavelet)
            self._representations[key] = rep.to(device)
        return self._representations[key]

    def explain(
        self,
        images: Tensor,
        target: TargetSpec = None,
        init: InitSpec = "ones",
        steps: int | None = None,
        seed: SeedSpec = 0,
        show_progress: bool = False,
        callback: StepCallback | None = None,
        record_signals: bool = False,
    ) -> Explanation:
        """Optimize one mask per image.

        Args:
            images: ``(B, 3, H, W)`` float in [0, 1], on the classifier's device. H and W are used as
                given (resize beforehand, e.g. with :func:`rde.io.preprocess`).
            target: class to explain: ``None`` (each image's predicted class), an int for all images, or
                a sequence / 1-D tensor of B ints. Default: ``None``.
            init: initial mask: ``"ones"`` (paper), ``"const:<c>"``, ``"random"``, ``"preopt"``, or a
                tensor ``(B, k)`` / ``(k,)`` in the layout's order (e.g. a learned prediction). Default: ``"ones"``.
            steps: number of Adam steps. Default: the preset's.
            seed: noise seed per image (an int gives every image the same seed, so results do not
                depend on batching). Default: 0.
            show_progress: show a progress bar over steps.
            callback: called after every step as ``callback(step, mask, losses)``.
            record_signals: also return, per mask entry, what the optimizer saw (:data:`rde.explanation.SIGNAL_KEYS` in
                :attr:`Explanation.signals`): Adam's moments at the end and the mean and standard deviation over
                the steps of the noisy gradients it was given. Off by default (then nothing is recorded).

        Returns:
            An :class:`~rde.explanation.Explanation`.
        """
        check_images(images)
        images = images.float()  # float64/float16 input: the DWT filters and classifiers are float32
        cfg = self.config
        steps = cfg.steps if steps is None else steps
        if not isinstance(steps, int) or steps < 0:
            raise InputError(f"steps must be a non-negative int, got {steps!r}")
        device = images.device
        self._check_device(device)
        check_precision_device(cfg.precision, device)
        batch, _, height, width = images.shape
        rep = self.representation(height, width, device)
        layout = rep.layout
        seeds = _per_image(seed, batch, "seed")
        generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        # Inits draw from their own streams, so every init sees the same optimization noise for a seed.
        init_generators = [torch.Generator(device=device).manual_seed((int(s) + INIT_SEED_OFFSET) % 2**63) for s in seeds]

        with torch.no_grad():  # the explained class and its probability come from the float32 classifier
            reference = self.classifier(images).softmax(-1)
            predicted = reference.argmax(-1)
            targets = _resolve_targets(target, batch, reference.shape[-1], predicted)
            target_probs = reference.gather(1, targets[:, None]).squeeze(1)
            coefficients = rep.encode(images)
            grey_coefficients = rep.encode(greyscale(images))
            noise = Obfuscation(cfg.obfuscation, coefficients, layout)
            images_per_call, chunk = _call_shape(cfg.samples_per_call, batch, cfg.num_samples)
            distortion_reference = torch.cat([
                self._reference_probabilities(rep, coefficients[b : b + images_per_call], chunk)
                for b in range(0, batch, images_per_call)
            ])
            initial = make_initial_mask(
                init,
                layout,
                batch,
                device=device,
                generators=init_generators,
                flip_check=lambda m: self._still_predicts(rep, coefficients, noise, m, targets, init_generators),
            )

        mask = initial.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([mask], lr=cfg.lr)
        history = {k: torch.zeros(batch, steps, device=device) for k in HISTORY_KEYS}
        distortion_fn = get_distortion(cfg.distortion)
        loss_scale = LossScale(cfg.precision)
        grad_sum = grad_sq = None
        if record_signals:  # float64 sums: the gradients' spread is a small difference of large sums
            grad_sum = torch.zeros(initial.shape, dtype=torch.float64, device=device)
            grad_sq = torch.zeros_like(grad_sum)

        for step in tqdm(range(steps), desc=f"{self.method} x{batch}", disable=not show_progress, leave=False):
            samples = noise.sample(cfg.num_samples, generators)
            while True:  # more than once only when 16-mixed's loss scale overflowed: recompute at half the scale
                optimizer.zero_grad(set_to_none=True)
                distortion = torch.zeros(batch, device=device)
                for b in range(0, batch, images_per_call):
                    rows = slice(b, b + images_per_call)
                    for start in range(0, cfg.num_samples, chunk):
                        part = samples[rows, start : start + chunk]
                        logits = self._classify_obfuscations(rep, coefficients[rows], part, mask[rows])
                        d = distortion_fn(distortion_reference[rows], logits, targets[rows]).sum(1) / cfg.num_samples
                        (d.sum() * loss_scale.scale if loss_scale.enabled else d.sum()).backward()
                        distortion[rows] += d.detach()
                if mask.grad is None or loss_scale.unscale(mask.grad):
                    break
            sparsity, spatial = self._regularizers(rep, grey_coefficients, mask)
            regularizer = cfg.lam * sparsity + cfg.spatial_weight * spatial
            regularizer.sum().backward()
            if record_signals:
                g = mask.grad.detach().double()
                grad_sum += g
                grad_sq += g.square()
            optimizer.step()
            with torch.no_grad():
                mask.clamp_(0.0, 1.0)
                losses = {
                    "loss": distortion + regularizer.detach(),
                    "distortion": distortion,
                    "sparsity": sparsity.detach(),
                    "spatial": spatial.detach(),
                }
                for k, v in losses.items():
                    history[k][:, step] = v
            if callback is not None:
                callback(step, mask.detach(), losses)

        final = mask.detach()
        with torch.no_grad():
            explanation = self.render(rep, grey_coefficients, final)
        return Explanation(
            mask=final,
            explanation=explanation,
            images=images.detach(),
            targets=targets,
            target_probs=target_probs,
            predicted=predicted,
            history={k: v.cpu() for k, v in history.items()},
            layout=layout,
            config={
                "method": self.method,
                "classifier": self.classifier.name,
                "preset": cfg.to_dict(),
                "steps": steps,
                "init": init if isinstance(init, str) else "tensor",
                "seeds": [int(s) for s in seeds],
                "distortion": cfg.distortion,
                "precision": cfg.precision,
                "channels_last": self._use_channels_last(device),
            },
            class_names=[self.classifier.class_name(int(t)) for t in targets],
            signals=_signals(optimizer, mask, grad_sum, grad_sq, steps) if record_signals else None,
        )

    def predict_probabilities(self, images: Tensor, mask: Tensor, num_samples: int, seed: SeedSpec = 0) -> Tensor:
        """Mean class probabilities ``(B, K)`` of obfuscations under ``mask`` (no gradients)."""
        check_images(images)
        images = images.float()
        rep = self.representation(images.shape[2], images.shape[3], images.device)
        gens = [torch.Generator(device=images.device).manual_seed(int(s)) for s in _per_image(seed, len(images), "seed")]
        with torch.no_grad():
            coefficients = rep.encode(images)
            noise = Obfuscation(self.config.obfuscation, coefficients, rep.layout)
            logits = self._classify_obfuscations(rep, coefficients, noise.sample(num_samples, gens), mask)
        return logits.softmax(-1).mean(1)

    def objective(
        self, images: Tensor, mask: Tensor, target: TargetSpec = None, num_samples: int | None = None, seed: SeedSpec = 0
    ) -> dict[str, Tensor]:
        """The RDE objective of ``mask`` on ``images``, differentiable w.r.t. ``mask`` (and nothing else).

        Returns ``(B,)`` tensors ``loss``, ``distortion``, ``sparsity``, ``spatial``, ``target_logprob``
        (mean over samples of log p_target(obfuscation) minus log p_target(image), <= 0 when the class fades) and
        ``kept`` (mean over samples of p_target(obfuscation), over p_target(image): what a guard checks).
        Used to train amortized initializers on the exact objective and to score predicted masks.
        """
        check_images(images)
        images = images.float()
        cfg = self.config
        batch = images.shape[0]
        num_samples = cfg.num_samples if num_samples is None else num_samples
        rep = self.representation(images.shape[2], images.shape[3], images.device)
        rep.layout.check(mask)
        gens = [torch.Generator(device=images.device).manual_seed(int(s)) for s in _per_image(seed, batch, "seed")]
        with torch.no_grad():
            reference_logits = self.classifier(images)
            reference = reference_logits.softmax(-1)
            targets = _resolve_targets(target, batch, reference.shape[-1], reference.argmax(-1))
            coefficients = rep.encode(images)
            grey_coefficients = rep.encode(greyscale(images))
            samples = Obfuscation(cfg.obfuscation, coefficients, rep.layout).sample(num_samples, gens)
        logits = self._classify_obfuscations(rep, coefficients, samples, mask)
        distortion = get_distortion(cfg.distortion)(reference, logits, targets).mean(1)
        sparsity, spatial = self._regularizers(rep, grey_coefficients, mask)
        index = targets.view(batch, 1, 1).expand(batch, num_samples, 1)
        logp_samples = logits.log_softmax(-1).gather(-1, index).squeeze(-1)
        logp = logp_samples.mean(1)
        ref_logp = reference_logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
        return {
            "loss": distortion + cfg.lam * sparsity + cfg.spatial_weight * spatial,
            "distortion": distortion,
            "sparsity": sparsity,
            "spatial": spatial,
            "target_logprob": logp - ref_logp,
            "kept": logp_samples.exp().mean(1) / ref_logp.exp().clamp_min(1e-12),
        }

    # -- internals --------------------------------------------------------------------------------------
    def _regularizers(self, rep: Representation, grey_coefficients: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``||s||_1 / k`` and WaveletX's spatial energy ``mean |f(s * h_grey)|`` (zero when its weight is 0)."""
        sparsity = mask.abs().mean(dim=1)
        if self.config.spatial_weight > 0:
            spatial = rep.decode(grey_coefficients * mask.unsqueeze(1)).abs().flatten(1).mean(1)
        else:
            spatial = torch.zeros_like(sparsity)
        return sparsity, spatial

    def render(self, rep: Representation, grey_coefficients: Tensor, mask: Tensor) -> Tensor:
        """The explanation image ``clamp(f(mask * h_grey), 0, 1)``: ``(B, 1, H, W)``."""
        return rep.decode(grey_coefficients * mask.unsqueeze(1)).clamp(0.0, 1.0)

    def _reference_probabilities(self, rep: Representation, coefficients: Tensor, chunk: int) -> Tensor:
        """Phi(x) for the distortion, ``(B, K)``: computed on ``f(h)`` through exactly the ops and batch shape of
        a step with ``s = 1``, so an all-ones mask has exactly zero distortion and gradient (the paper's lam=0
        property holds bitwise, not just up to rounding that Adam would amplify into lr-sized steps)."""
        batch, channels, k = coefficients.shape
        zeros = coefficients.new_zeros(batch, chunk, channels, k)
        ones = coefficients.new_ones(batch, k)
        return self._classify_obfuscations(rep, coefficients, zeros, ones).softmax(-1)[:, 0]

    def _classify_obfuscations(self, rep: Representation, coefficients: Tensor, noise: Tensor, mask: Tensor) -> Tensor:
        """Float32 logits ``(B, l, K)`` of ``clamp(f(h * s + (1 - s) * v))`` for noise ``v`` of shape ``(B, l, C, k)``.

        Only the classifier runs in the preset's precision (under autocast); its logits are cast back to float32
        before any softmax, so the distortion and everything after it is float32."""
        batch, num, channels, k = noise.shape
        m = mask.view(batch, 1, 1, k)
        obfuscated = coefficients.unsqueeze(1) * m + (1.0 - m) * noise
        pixels = rep.decode(obfuscated.reshape(batch * num, channels, k)).clamp(0.0, 1.0)
        if self._use_channels_last(pixels.device):
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        with autocast(self.config.precision, pixels.device):
            logits = self.classifier(pixels)
        return logits.float().view(batch, num, -1)

    def _use_channels_last(self, device: torch.device) -> bool:
        """Whether the classifier runs channels-last on ``device``; converts its weights once when it does."""
        wanted = self.channels_last if self.channels_last is not None else device.type == "cuda"
        if not (wanted and self._is_convolutional):
            return False
        if not getattr(self.classifier, "_rde_channels_last", False):
            self.classifier.to(memory_format=torch.channels_last)
            self.classifier._rde_channels_last = True
        return True

    def _still_predicts(self, rep, coefficients, noise, mask, targets, generators) -> Tensor:
        """For the pre-optimization heuristic: does the mean prediction under ``mask`` stay the target?"""
        logits = self._classify_obfuscations(rep, coefficients, noise.sample(self.config.num_samples, generators), mask)
        return logits.softmax(-1).mean(1).argmax(-1) == targets

    def _check_device(self, device: torch.device) -> None:
        param = next(iter(self.classifier.parameters()), None)
        if param is not None and param.device != device:
            raise InputError(f"images are on {device} but the classifier is on {param.device}; move one of them")


class CartoonX(RDE):
    """CartoonX (Kolek et al., ECCV 2022): RDE on the DWT coefficients, rendered as a piece-wise smooth image.

    Example::

        >>> clf = create_classifier("efficientnet_lite0")
        >>> images = torch.rand(2, 3, 128, 128)            # (B, 3, H, W) in [0, 1]
        >>> res = CartoonX(clf, preset="cpu").explain(images, steps=300)
        >>> res.mask.shape, res.explanation.shape, res.history["loss"].shape
        (torch.Size([2, 18631]), torch.Size([2, 1, 128, 128]), torch.Size([2, 300]))
    """

    representation_kind = "wavelet"
    method = "cartoonx"


class PixelRDE(RDE):
    """Pixel RDE (Macdonald et al., 2019): the same optimizer with one mask entry per pixel."""

    representation_kind = "pixel"
    method = "pixel-rde"


def _signals(optimizer: torch.optim.Adam, mask: Tensor, grad_sum: Tensor, grad_sq: Tensor, steps: int) -> dict[str, Tensor]:
    """Adam's moments of ``mask`` (zeros before any step) and the mean and population std of its gradients."""
    state = optimizer.state.get(mask, {})
    zeros = torch.zeros_like(mask.detach())
    mean = grad_sum / max(steps, 1)
    std = (grad_sq / max(steps, 1) - mean.square()).clamp_min(0.0).sqrt()
    return {
        "exp_avg": state.get("exp_avg", zeros).detach().clone(),
        "exp_avg_sq": state.get("exp_avg_sq", zeros).detach().clone(),
        "grad_mean": mean.float(),
        "grad_std": std.float(),
    }


def _per_image(value: int | Sequence[int], batch: int, name: str) -> list[int]:
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} tensor must hold integers, got dtype {value.dtype}")
        value = value.tolist()
    if _is_int(value):
        return [value] * batch
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {type(value).__name__}")
    values = list(value)
    if len(values) != batch:
        raise InputError(f"{name} has {len(values)} entries but the batch has {batch} images")
    bad = [v for v in values if not _is_int(v)]
    if bad:
        raise TypeError(f"{name} entries must be ints, got {bad!r}")
    return [int(v) for v in values]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _resolve_targets(target: TargetSpec, batch: int, num_classes: int, predicted: Tensor) -> Tensor:
    if target is None:
        return predicted.clone()
    if isinstance(target, bool) or not isinstance(target, (int, Sequence, Tensor)):
        raise TypeError(f"target must be None, an int, or a sequence/1-D tensor of ints; got {type(target).__name__}")
    if isinstance(target, Tensor) and target.dim() > 1:
        raise InputError(f"target tensor must be 1-D, got shape {tuple(target.shape)}")
    values = _per_image(target, batch, "target")
    bad = [v for v in values if not 0 <= v < num_classes]
    if bad:
        raise InputError(f"target class(es) {bad} out of range for a classifier with {num_classes} classes")
    return torch.tensor(values, dtype=torch.long, device=predicted.device)


def _call_shape(samples_per_call: int | None, batch: int, num_samples: int) -> tuple[int, int]:
    """``(images, samples per image)`` in one classifier call, so that their product stays <= samples_per_call
    (whole images first; a single image's samples are split only when they alone exceed the cap)."""
    if samples_per_call is None:
        return batch, num_samples
    if samples_per_call >= num_samples:
        return max(1, min(batch, samples_per_call // num_samples)), num_samples
    return 1, samples_per_call
