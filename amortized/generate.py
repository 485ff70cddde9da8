"""Offline target generation: exact CartoonX masks for a list of images, written to WebDataset shards.

Runs Lightning's predict loop: :class:`TargetGenerator` optimizes a batch of masks in ``predict_step``
and :class:`ShardPredictionWriter` writes them, one shard series per rank, so N devices or nodes write
disjoint shards. One CPU process is the same path with ``devices=1``.

Resuming is rerunning: keys found in finished shards are skipped, new shards are numbered on,
``*.tmp`` shards left by a killed run are deleted, and finished samples that fail their checks are
dropped and recomputed (:func:`amortized.shards.open_for_writing`). A directory holding shards of
another configuration is refused. SIGTERM or SIGINT stops a run within seconds: the open shard is
finished, the manifest rewritten, and :class:`~amortized.signals.Stopped` raised. Each image's noise
seed is a hash of its key and the base seed, so targets don't depend on batch size, ordering, or the
number of devices. Samples and the manifest record where they were computed (``provenance``).

Two label kinds (:class:`Labels`): ``exact`` targets are the preset's full run from all-ones; ``cheap`` labels
are a learned start (:class:`amortized.initializer.LearnedStart`, the bundled checkpoint or another) refined for a
few exact steps, many for the price of one exact target. Each kind hashes into its own configuration, so they
never share a directory, and every cheap sample records what it cost (:func:`sample_cost`).

Multi-device example (each rank writes ``masks-<hash>-r<rank>-*.tar.gz``)::

    cartoonx generate /data/imagenet/train --out shards/ --accelerator gpu --devices 8 --num-nodes 2 \\
        --batch-size 32 --shard-size 1000 --num-workers 4
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from tqdm.auto import tqdm

import rde
from amortized import shards as S
from amortized.datasets import ImageItem, key_fraction, key_seed, list_images, report_to_stderr
from amortized.generate_data import GenerateDataModule, with_views
from amortized.image_data import failure_record
from amortized.initializer import LearnedStart, read_checked_initializer
from amortized.shards.writer import KEPT
from amortized.signals import StopOnSignals, Stopped
from rde import CartoonX, MaskLayout, RDEConfig, create_classifier, load_preset
from rde.classifiers import Classifier
from rde.errors import InputError
from rde.io import OutputWriteError, check_output_dir, remove_if_empty, write_failure
from rde.start import Start, steps_of_passes

METHOD = "cartoonx"
INIT = "ones"
TARGET = "predicted"


# -- label kinds ------------------------------------------------------------------------------------------
LABEL_KINDS = ("exact", "cheap")
LEARNED = "learned"
DEFAULT_LABEL_STEPS = 30


@dataclass(frozen=True)
class Labels:
    """What a sample's mask is. ``exact`` (the default): the preset's full run from all-ones. ``cheap``: the learned
    start of ``checkpoint`` (default: the one bundled for the classifier and preset) refined for ``steps`` exact
    steps with ``samples`` noisy copies each (default: the preset's), which costs the start's cost plus
    ``steps * samples / preset samples`` preset steps: noisy, cheap labels to train on many of (Stochastic
    Amortization)."""

    kind: str = "exact"
    checkpoint: Path | None = None
    steps: int = DEFAULT_LABEL_STEPS
    samples: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise InputError(f"labels must be one of {', '.join(LABEL_KINDS)}, got {self.kind!r}")
        if self.kind == "exact" and (self.checkpoint is not None or self.samples is not None):
            raise InputError("a checkpoint and label samples are only used with cheap labels (--labels cheap)")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise InputError(f"label steps must be an int >= 1, got {self.steps!r}")
        if self.samples is not None and (not isinstance(self.samples, int) or self.samples < 1):
            raise InputError(f"label samples must be an int >= 1, got {self.samples!r}")

    @property
    def cheap(self) -> bool:
        return self.kind == "cheap"


def checkpoint_digest(payload: dict[str, Any]) -> str:
    """A short hash of what a learned start depends on (network, taps, policy, weights): the same weights give the
    same digest whether read from a training checkpoint or an exported file, wherever it lies."""
    h = hashlib.sha256()
    h.update(json.dumps({k: payload.get(k) for k in ("classifier", "net", "taps", "warmup", "guard")},
                        sort_keys=True, default=str).encode())
    for name, tensor in sorted(payload["state_dict"].items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def sample_cost(meta: dict[str, Any]) -> float:
    """What a sample's mask cost, in preset optimizer steps: a cheap label records it (``cost``), an exact target
    cost its ``steps``."""
    return float(meta["cost"]) if "cost" in meta else float(meta["steps"])


def label_kind(meta: dict[str, Any]) -> str:
    """``exact`` or ``cheap`` (samples written before cheap labels existed are exact)."""
    return meta.get("label_kind", "exact")


# -- configuration ----------------------------------------------------------------------------------------
def target_config(classifier: str, preset: RDEConfig, seed: int, cheap: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything that determines the targets (hashed into shard names). ``samples_per_call`` is left out:
    it changes memory use, not the result; the preset's name is left out: it is only a label. ``cheap``: the
    cheap labels' settings (checkpoint digest, steps, samples), absent for exact targets, whose hash is unchanged."""
    params = S.hashed_preset(preset.to_dict())
    layout = MaskLayout.for_wavelet(preset.image_size, preset.image_size, preset.wavelet)
    config = {
        "format_version": S.FORMAT_VERSION,
        "method": METHOD,
        "classifier": classifier,
        "preset": params,
        "init": INIT if cheap is None else LEARNED,
        "target": TARGET,
        "seed": int(seed),
        "layout": layout.signature,
        "num_entries": layout.num_entries,
    }
    if cheap is not None:
        config["labels"] = {"kind": "cheap", **cheap}
    return config


@dataclass
class GenerateSummary:
    """What a generation run did on this rank (all ranks' results are in the manifest)."""

    out_dir: Path
    config_hash: str
    rank: int = 0
    world_size: int = 1
    done: int = 0
    skipped: int = 0
    failed: int = 0
    unlisted: int = 0  # sources or listed paths that were not images (named on stderr while listing)
    seconds: float = 0.0
    shards: list[Path] = dataclasses.field(default_factory=list)

    @property
    def images_per_hour(self) -> float:
        return 3600.0 * self.done / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        where = f"rank {self.rank}/{self.world_size}: " if self.world_size > 1 else ""
        return (
            f"{where}{self.done} done, {self.skipped} skipped (already in shards), {self.failed} failed, "
            + (f"{self.unlisted} input(s) not images, " if self.unlisted else "")
            + f"{_hours(self.seconds)}, {self.images_per_hour:.1f} images/hour; "
            f"{len(self.shards)} new shard(s) in {self.out_dir} (config {self.config_hash})"
        )


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


# -- the optimizer in predict_step ------------------------------------------------------------------------
class TargetGenerator(L.LightningModule):
    """``predict_step`` runs the exact CartoonX optimizer on a batch and returns finished samples: from all-ones for
    the preset's steps (exact targets) or, given ``labels`` cheap and the initializer ``payload``, from the learned
    start for ``labels.steps`` steps (cheap labels)."""

    def __init__(self, classifier: Classifier, preset: RDEConfig, seed: int, config: dict[str, Any], chash: str,
                 labels: Labels | None = None, payload: dict[str, Any] | None = None):
        super().__init__()
        self.classifier = classifier
        self.explainer = CartoonX(classifier, preset)
        self.preset = preset
        self.seed = seed
        self.config = config
        self.chash = chash
        self.labels = labels or Labels()
        if self.labels.cheap and payload is None:
            raise ValueError("cheap labels need the initializer's payload")
        self.payload = payload
        self.label_samples = self.labels.samples or preset.num_samples  # a cheap label's noisy copies per step
        self.label_explainer = (self.explainer if self.label_samples == preset.num_samples  # refines cheap labels
                                else CartoonX(classifier, preset.replace(num_samples=self.label_samples)))
        self.start_fn: Any = None  # the learned start, made on the device in on_predict_start
        self.provenance: dict[str, Any] | None = None

    def on_predict_start(self) -> None:
        self.provenance = S.provenance(self.device, self.preset.precision)
        if self.labels.cheap:
            self.start_fn = LearnedStart(self.payload, self.explainer, seed=self.seed)

    def refinement_cost(self) -> float:
        """A cheap label's refinement in preset steps (its start's cost comes on top)."""
        return float(steps_of_passes(self.labels.steps * self.label_samples, self.preset.num_samples))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out = {"samples": [], "failed": list(batch["failed"])}
        if batch["images"] is not None:
            with torch.enable_grad():
                self._explain(batch["items"], batch["images"], out, batch["views"])
        return out

    def _explain(self, items: list[ImageItem], images: torch.Tensor, out: dict[str, Any], views: list) -> None:
        seeds = [key_seed(i.key, self.seed) for i in items]
        start = None
        try:
            if self.start_fn is None:
                ex = self.explainer.explain(images, target=None, init=INIT, seed=seeds)
            else:  # the start's warm-up and guard use the base seed (batch-independent), the refinement each key's
                start = self.start_fn(images)
                ex = self.label_explainer.explain(images, target=None, init=start, steps=self.labels.steps, seed=seeds)
        except Exception as e:  # one bad image must not cost the batch: retry one by one
            if len(items) == 1:
                out["failed"].append(failure_record(items[0], f"{type(e).__name__}: {e}"))
                return
            for j, item in enumerate(items):
                self._explain([item], images[j : j + 1], out, views[j : j + 1])
            return
        out["samples"] += [self._sample(ex, j, item, seeds[j], views[j], start) for j, item in enumerate(items)]

    def _sample(self, ex: rde.Explanation, j: int, item: ImageItem, seed: int, view: Any = None,
                start: Start | None = None) -> dict[str, Any]:
        image = (ex.images[j] * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        curves = np.stack([ex.history[name][j].numpy() for name in S.CURVE_NAMES])
        final = {name: float(curves[r, -1]) if curves.shape[1] else None for r, name in enumerate(S.CURVE_NAMES)}
        target = int(ex.targets[j])
        meta = {
            "key": item.key,
            "source": item.source,
            "wnid": item.wnid,
            "label": item.label,
            "target": target,
            "target_name": self.classifier.class_name(target),
            "target_prob": float(ex.target_probs[j]),
            "predicted": int(ex.predicted[j]),
            "predicted_prob": float(ex.target_probs[j]),  # the target is the predicted class
            "classifier": self.classifier.name,
            "method": METHOD,
            "preset": self.preset.to_dict(),
            "init": INIT if start is None else LEARNED,
            "seed": seed,
            "base_seed": self.seed,
            "wavelet": dataclasses.asdict(self.preset.wavelet),
            "image_size": self.preset.image_size,
            "layout": ex.layout.signature,
            "num_entries": ex.layout.num_entries,
            "config_hash": self.chash,
            "steps": int(curves.shape[1]),
            "final": final,
            "curve_names": list(S.CURVE_NAMES),
            "version": rde.__version__,
            "provenance": self.provenance,
        }
        if view is not None:  # a view of the photo (amortized.views): enough to cut the image again
            meta["view"] = view.to_meta()
        if start is not None:  # a cheap label: what it cost, in preset steps (exact targets cost their steps)
            refinement = self.refinement_cost()
            meta.update({
                "label_kind": "cheap",
                "checkpoint": self.config["labels"]["checkpoint"],
                "label_steps": self.labels.steps,
                "label_samples": self.label_samples,
                "start_cost": float(start.cost[j]),
                "start_pruned": bool(start.pruned[j]),
                "start_backoffs": int(start.backoffs[j]),
                "cost": float(start.cost[j]) + refinement,
            })
        mask = ex.mask[j].cpu().numpy()
        return S.make_sample(item.key, image, mask, curves, item.label, meta)


# -- writing shards ------------------------------------------------------------------------------------
class ShardPredictionWriter(BasePredictionWriter):
    """Writes each rank's samples into its own atomic shard series and keeps the manifest up to date."""

    def __init__(
        self,
        out_dir: Path,
        config: dict[str, Any],
        chash: str,
        shard_size: int = 8,
        compress: bool = True,
        show_progress: bool = True,
        stop: StopOnSignals | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = Path(out_dir)
        self.config = config
        self.chash = chash
        self.shard_size = shard_size
        self.compress = compress
        self.show_progress = show_progress
        self.stop = stop or StopOnSignals()  # one not entered never raises: critical() is then a no-op
        self.summary = GenerateSummary(self.out_dir, chash)
        self._writer: S.AtomicShardWriter | None = None
        self._bar: tqdm | None = None
        self._start = 0.0
        self._rank = 0
        self._module: L.LightningModule | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rank = trainer.global_rank
        self._module = pl_module
        self.summary.rank, self.summary.world_size = trainer.global_rank, trainer.world_size
        dm = trainer.datamodule
        self.summary.skipped = dm.skipped
        self._writer = S.AtomicShardWriter(
            S.shard_pattern(self.out_dir, self.chash, self._rank, self.compress),
            self.shard_size,
            start_shard=S.next_shard_index(self.out_dir, self.chash, self._rank),
            on_shard=self._on_shard,
        )
        if self.show_progress and self._rank == 0:
            desc = f"generate r0/{trainer.world_size}" if trainer.world_size > 1 else "generate"
            self._bar = tqdm(total=len(dm.rank_items), desc=desc, unit="img", dynamic_ncols=True, file=sys.stderr)
            if dm.skipped:
                self._bar.write(f"resuming: {dm.skipped} image(s) already in shards, {dm.total_pending} to go")
        self._start = time.perf_counter()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        with self.stop.critical():  # a signal waits until the samples are written: no half sample
            for sample in prediction["samples"]:
                self._writer.write(sample)  # a failed write (full disk) drops the open shard and says so
            try:
                S.append_failures(self.out_dir, self._rank, self.chash, prediction["failed"])
            except OSError as e:
                raise write_failure(S.failure_log(self.out_dir, self._rank), e, KEPT) from e
        for rec in prediction["failed"]:
            tqdm.write(f"skipped {rec['source']}: {rec['error']}", file=sys.stderr)
        self.summary.done += len(prediction["samples"])
        self.summary.failed += len(prediction["failed"])
        if self._bar is not None:
            self._bar.update(len(prediction["samples"]) + len(prediction["failed"]))
            elapsed = time.perf_counter() - self._start
            rate = 3600.0 * self.summary.done / elapsed if elapsed > 0 else 0.0
            left = self._bar.total - self._bar.n
            eta = _hours(3600.0 * left / rate) if rate > 0 else "?"
            per = "/rank" if trainer.world_size > 1 else ""
            self._bar.set_postfix_str(f"{rate:.1f} img/h{per}, ETA {eta}, failed {self.summary.failed}")

    def _on_shard(self, path: Path, keys: list[str]) -> None:
        self.summary.shards.append(path)
        self._write_manifest()

    def _write_manifest(self) -> None:
        try:
            S.write_manifest(self.out_dir, self.config, self.chash, getattr(self._module, "provenance", None))
        except OSError as e:  # the next run rebuilds it from the finished shards
            raise write_failure(self.out_dir / S.MANIFEST, e, KEPT) from e

    def _close(self) -> bool:
        """Finish the open shard; whether this rank had started writing."""
        started = self._writer is not None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with self.stop.critical():
                writer.close()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        return started

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # No collectives here: a rank with nothing to do skips the predict hooks entirely. Every rank
        # rewrites the manifest when done, so the last one to finish leaves a complete manifest.
        self._close()
        self.summary.seconds = time.perf_counter() - self._start
        self._write_manifest()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        try:
            if self._close():  # samples already written are complete: keep them in a finished shard
                self.summary.seconds = time.perf_counter() - self._start
                self._write_manifest()  # the failures logged since the last shard, too
        except OutputWriteError:
            if not isinstance(exception, OutputWriteError):
                raise
            # the disk that failed fails again: the first error is the one to report; a rerun tidies up


def _remove_if_no_result(out_dir: Path) -> None:
    """Remove a folder this run created if it holds no shard and no failure record (only the manifest of nothing):
    a run that failed before its first result leaves no empty folder behind."""
    if out_dir.is_dir() and not S.list_shards(out_dir) and not S.failure_logs(out_dir):
        (out_dir / S.MANIFEST).unlink(missing_ok=True)
        remove_if_empty(out_dir)


def check_accelerator(accelerator: str) -> None:
    """Refuse, before any work, an accelerator this machine does not have (one line, not Lightning's traceback)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if accelerator in ("auto", "cpu"):
        return
    try:
        L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False)
    except (MisconfigurationException, ValueError, ImportError, RuntimeError) as e:
        cuda = "a CUDA GPU" if torch.cuda.is_available() else "no CUDA GPU"
        raise InputError(f"--accelerator {accelerator}: not usable here ({str(e).rstrip('!.')}; this machine has "
                         f"{cuda}); use --accelerator cpu or auto") from None


def _cheap_settings(labels: Labels, classifier: str, preset: RDEConfig) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The initializer payload and the configuration entry of cheap labels (``None, None`` for exact targets); the
    checkpoint is read and checked against the classifier and preset before any work."""
    if not labels.cheap:
        return None, None
    payload = read_checked_initializer(classifier, preset, labels.checkpoint)
    return payload, {"checkpoint": checkpoint_digest(payload), "steps": labels.steps,
                     "num_samples": labels.samples or preset.num_samples}


# -- entry point -----------------------------------------------------------------------------------------
def generate_targets(
    source: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    classifier: str = "efficientnet_lite0",
    preset: str | RDEConfig = "cpu",
    seed: int = 0,
    batch_size: int = 1,
    shard_size: int = 8,
    compress: bool = True,
    limit: int | None = None,
    split: str = "all",
    val_fraction: float = 1 / 8,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    num_workers: int = 0,
    show_progress: bool = True,
    views: int = 0,
    views_only: bool = False,
    labels: Labels | None = None,
    **preset_overrides: Any,
) -> GenerateSummary:
    """Explain every image of ``source`` with exact CartoonX and write the masks to shards in ``out_dir``.

    Args:
        source: image directory (ImageFolder or flat ``<wnid>_*.JPEG``), text list of paths, or several.
        out_dir: shard directory; rerunning with the same arguments resumes.
        classifier: classifier name (see :func:`rde.create_classifier`). Default: ``efficientnet_lite0``.
        preset: optimizer preset or :class:`RDEConfig`; ``preset_overrides`` change fields (``steps=5``).
        seed: base noise seed; each image uses :func:`~amortized.datasets.key_seed` ``(key, seed)``.
        batch_size: images optimized together (B); speed and memory only, results don't change. On a
            CPU B=1 is fastest (measured 354/396/504 s per image at B=1/4/8); on a GPU use 32 or more.
        shard_size: samples per shard; a kill loses at most one shard's worth of work per rank.
        compress: write ``.tar.gz`` shards (masks compress well; readers handle both).
        limit: only the first ``limit`` images in the fixed hash order (a reproducible subset).
        split / val_fraction: restrict to the hash split's ``train`` or ``val`` part. Default: all.
        accelerator, devices, num_nodes, strategy: passed to :class:`lightning.Trainer`.
        num_workers: image-loading worker processes per rank.
        show_progress: progress bar with images/hour and ETA on rank 0.
        views: also explain this many views of each photo (:mod:`amortized.views`; keys ``<key>@v<i>``,
            each photo's split), photos first, then view 1 of every photo, and so on.
        views_only: only the views, not the photos themselves (e.g. views beside targets made elsewhere).
        labels: exact targets (default) or cheap labels (:class:`Labels`: a learned start refined a few steps);
            cheap labels hash into another configuration than exact targets, so they need their own directory.

    Returns:
        A :class:`GenerateSummary` of this process's rank.

    Raises:
        Stopped: SIGTERM or SIGINT arrived; finished shards and the manifest are consistent, its
            ``summary`` says what this run finished, and rerunning resumes.
        OutputDirError: ``out_dir`` is a file or not writable (checked before any work).
    """
    cfg = load_preset(preset).replace(**preset_overrides)
    labels = labels or Labels()
    if cfg.steps < 1:
        raise InputError(f"steps must be at least 1 for targets, got {cfg.steps} (0 steps would store the all-ones start)")
    if batch_size < 1:
        raise InputError(f"batch size must be positive, got {batch_size}")
    out_dir = check_output_dir(out_dir)
    check_accelerator(accelerator)
    existed = out_dir.exists()
    problems: list[str] = []

    def on_problem(message: str) -> None:
        problems.append(message)
        report_to_stderr(message)

    items = list_images(source, split=split, val_fraction=val_fraction, on_problem=on_problem)
    items.sort(key=lambda i: key_fraction(i.key, salt="order:"))  # a class-mixed order: partial runs stay useful
    if limit is not None:
        items = items[:limit]
    items = with_views(items, views, photos_too=not views_only)
    clf = create_classifier(classifier)
    payload, cheap = _cheap_settings(labels, clf.name, cfg)
    config = target_config(clf.name, cfg, seed, cheap)
    chash = S.config_hash(config)
    module = TargetGenerator(clf, cfg, seed, config, chash, labels, payload)
    data = GenerateDataModule(items, out_dir, config, batch_size=batch_size, num_workers=num_workers)
    stop = StopOnSignals()
    writer = ShardPredictionWriter(out_dir, config, chash, shard_size, compress, show_progress, stop)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[writer],
        default_root_dir=out_dir,
    )
    try:
        with stop:
            trainer.predict(module, datamodule=data, return_predictions=False)
    except Stopped as e:
        writer.summary.skipped = data.skipped
        e.summary = writer.summary
        raise
    finally:
        data.release_lock()  # also when setup refused the directory
        if not existed:
            _remove_if_no_result(out_dir)
    writer.summary.skipped = data.skipped  # also when nothing was left to do (the predict hooks are skipped)
    writer.summary.unlisted = len(problems)
    return writer.summary
