"""LightningDataModule streaming exact-mask shards from ``cartoonx generate`` for training the initializer.

Train and validation splits are the same hash split of sample keys that generation uses
(:func:`amortized.datasets.split_of`), so they never overlap and don't depend on shard layout. Ranks
and loader workers split by shards when there are enough, else by samples (:func:`plan_split`); no
sample is ever read twice in an epoch, and every DDP rank gets the same number of training batches.
Every sample is checked as it is read (:func:`amortized.shards.sample_problems`): a bad one is named in
one warning line and skipped, never trained on. Several shard directories (e.g. targets made on different
machines or at another precision) are read as one data set when their masks share a layout and classifier.
``train_limit`` trains on a fixed subset of the train split (:func:`train_subset`), for data-scaling curves.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from amortized import shards as S
from amortized.datasets import DEFAULT_VAL_FRACTION
from rde.errors import InputError

log = logging.getLogger(__name__)


class MaskShardDataModule(L.LightningDataModule):
    """Batches of ``{"image", "mask", "target", "label", "final_loss", "key"}`` from a shard directory.

    Args:
        shards: directory written by ``cartoonx generate``, or a list of them (one layout and classifier;
            no key in two of them).
        preset: the optimizer preset the model uses; its image size and wavelet must match the shards'.
        classifier: if given, must be the shards' classifier.
        batch_size: images per batch (per rank).
        val_batch_size: default ``batch_size``.
        num_workers: loader worker processes (persistent, so per-epoch shuffling advances).
        val_fraction: fraction of keys in the validation split (the hash split).
        seed: shuffling seed; epoch e shuffles with ``seed + e``.
        shuffle_buffer: samples in the shuffle buffer.
        split_mode: ``auto``, ``shards`` or ``samples`` (see :func:`plan_split`).
        train_limit: train on only this many train-split samples, the first in a fixed hash order of their
            keys (:func:`train_subset`: a smaller limit's subset is part of a larger one's); ``None``: all.
            The validation split is never limited.
    """

    def __init__(
        self,
        shards: str | list[str] = S.DEFAULT_SHARD_DIR,
        preset: str = "cpu",
        classifier: str | None = None,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        seed: int = 0,
        shuffle_buffer: int = 256,
        split_mode: str = "auto",
        train_limit: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise InputError(f"batch sizes must be positive, got {batch_size} and {val_batch_size}")
        if train_limit is not None and train_limit < 1:
            raise InputError(f"train_limit must be a positive number of samples or None, got {train_limit}")
        self.save_hyperparameters()
        self.index: S.ShardIndex | None = None  # the first directory's
        self.indexes: tuple[S.ShardIndex, ...] = ()
        self.train_keys: frozenset[str] | None = None  # the train_limit subset, once set up

    def setup(self, stage: str | None = None) -> None:
        from rde import MaskLayout, load_preset

        shards = self.hparams.shards
        indexes = [S.open_shard_dir(d) for d in ([shards] if isinstance(shards, str) else shards)]
        if not indexes:
            raise InputError("no shard directory given (shards is an empty list)")
        if len({i.directory.resolve() for i in indexes}) < len(indexes):
            raise InputError(f"a shard directory is given twice in {list(shards)}")
        cfg = load_preset(self.hparams.preset)
        expected = MaskLayout.for_wavelet(cfg.image_size, cfg.image_size, cfg.wavelet).signature
        clf = self.hparams.classifier or indexes[0].config["classifier"]
        seen: dict[str, Any] = {}
        for index in indexes:
            if index.config["layout"] != expected:
                raise S.ConfigMismatchError(
                    f"{index.directory} holds masks of layout {index.config['layout']}, but preset "
                    f"{self.hparams.preset!r} uses {expected}"
                )
            if clf != index.config["classifier"]:
                raise S.ConfigMismatchError(
                    f"{index.directory} holds masks explaining {index.config['classifier']!r}, not {clf!r}"
                )
            for key in (k for _, keys in index.shards for k in keys):
                if seen.setdefault(key, index.directory) != index.directory:
                    raise InputError(f"sample {key!r} is in both {seen[key]} and {index.directory}; "
                                     "give each sample once")
        self.index, self.indexes = indexes[0], tuple(indexes)
        if self.hparams.train_limit is not None:
            self.train_keys = train_subset(self.indexes, self.hparams.train_limit, self.hparams.val_fraction)

    def _distributed(self) -> tuple[int, int]:
        import webdataset as wds

        rank, world, _, _ = wds.utils.pytorch_worker_info()
        trainer = self.trainer
        if trainer is not None and (trainer.global_rank, trainer.world_size) != (rank, world):
            raise RuntimeError(
                f"torch.distributed/env say rank {rank} of {world}, the Trainer says "
                f"{trainer.global_rank} of {trainer.world_size}"
            )
        return rank, world

    def _loader(self, split: str, train: bool) -> DataLoader:
        if self.index is None:
            self.setup()
        hp = self.hparams
        batch_size = hp.batch_size if train else hp.val_batch_size or hp.batch_size
        rank, world = self._distributed()
        keys = self.train_keys if split == "train" else None
        counts = _counts(self.indexes, split, hp.val_fraction, keys)
        plan = plan_split(counts, batch_size, rank, world, hp.num_workers, hp.split_mode, equalize=train)
        if plan.num_batches == 0 and train:
            raise InputError(
                f"{', '.join(str(i.directory) for i in self.indexes)}: the {split} split has {sum(counts)} samples, not enough for one batch "
                f"of {batch_size} on each of {world} rank(s); lower batch_size"
            )
        pipeline = mask_pipeline(
            self.indexes, split, hp.val_fraction, batch_size, shuffle=train, seed=hp.seed,
            shuffle_buffer=hp.shuffle_buffer, plan=plan, keys=keys,
        )
        return DataLoader(pipeline, batch_size=None, num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)


def train_subset(indexes: Sequence[S.ShardIndex], n: int, val_fraction: float = DEFAULT_VAL_FRACTION) -> frozenset[str]:
    """The first ``n`` train-split keys of ``indexes`` in the order of :func:`amortized.datasets.key_fraction`
    with the salt ``train_limit:`` (ties by key): deterministic, independent of shard layout and of the
    split's hash, and nested (the subset for n is part of the one for any larger n). More than the split
    holds is refused."""
    from amortized.datasets import in_split, key_fraction

    keys = sorted((k for index in indexes for _, shard_keys in index.shards for k in shard_keys
                   if in_split(k, "train", val_fraction)), key=lambda k: (key_fraction(k, "train_limit:"), k))
    if n > len(keys):
        raise InputError(f"train_limit {n}: {', '.join(str(i.directory) for i in indexes)} hold only {len(keys)} "
                         "train-split samples")
    return frozenset(keys[:n])


def _counts(indexes: Sequence[S.ShardIndex], split: str, val_fraction: float, keys: frozenset[str] | None) -> list[int]:
    """Samples each shard contributes: those of ``split``, or of ``keys`` (a subset of the split) if given."""
    if keys is None:
        return [c for index in indexes for c in index.counts(split, val_fraction)]
    return [sum(k in keys for k in shard_keys) for index in indexes for _, shard_keys in index.shards]


# -- how ranks and workers share the shards, and the reading pipeline --------------------------------------
@dataclass(frozen=True)
class SplitPlan:
    """How one rank reads its part: by whole shards or by every S-th sample, and how many batches each
    of its loader workers yields (``None``: all it has, partial last batch included)."""

    mode: str  # "shards" or "samples"
    slots: int  # world_size * num_workers
    worker_batches: tuple[int, ...] | None
    num_batches: int


def plan_split(
    counts: list[int],
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    mode: str = "auto",
    equalize: bool = True,
) -> SplitPlan:
    """Decide how ranks and workers share shards with per-shard sample ``counts``.

    ``shards`` mode gives rank r the shards ``[r::world]`` and its worker w ``[w::workers]`` of those
    (webdataset's ``split_by_node``/``split_by_worker``); it needs at least one shard per slot.
    ``samples`` mode has every slot read all shards and keep every S-th sample (S = slots); it works
    with any number of shards. Either way no sample reaches two slots. With ``equalize`` (training)
    every rank yields the same number of full batches, so DDP ranks stay in step: surplus batches are
    dropped, never repeated. ``auto`` uses shards unless that would drop over 10% more data.
    """
    if mode not in ("auto", "shards", "samples"):
        raise InputError(f"split mode must be auto, shards or samples, got {mode!r}")
    workers = max(1, num_workers)
    slots = world_size * workers
    n = sum(counts)

    def per_slot(m: str) -> list[list[int]]:  # [rank][worker] -> samples
        if m == "samples":
            return [[n // slots + (r * workers + w < n % slots) for w in range(workers)] for r in range(world_size)]
        return [[sum(counts[r::world_size][w::workers]) for w in range(workers)] for r in range(world_size)]

    def usable(m: str) -> int:
        return min(sum(c // batch_size for c in row) for row in per_slot(m))

    if mode == "auto":
        mode = "shards" if len(counts) >= slots and usable("shards") >= 0.9 * usable("samples") else "samples"
    elif mode == "shards" and len(counts) < slots:
        raise InputError(
            f"{len(counts)} shard(s) cannot be split over {world_size} rank(s) x {workers} worker(s) "
            "without duplication; use split mode 'samples' or 'auto'"
        )
    mine = per_slot(mode)[rank]
    if not equalize:
        return SplitPlan(mode, slots, None, sum(-(-c // batch_size) for c in mine))
    caps = [c // batch_size for c in mine]
    excess = sum(caps) - usable(mode)
    while excess > 0:
        caps[caps.index(max(caps))] -= 1
        excess -= 1
    return SplitPlan(mode, slots, tuple(caps), sum(caps))


def _split_samples(src: Iterator[Any]) -> Iterator[Any]:
    """Keep every S-th sample for this (rank, worker) slot, S = world_size * num_workers."""
    import webdataset as wds

    rank, world, worker, workers = wds.utils.pytorch_worker_info()
    slots = world * workers
    slot = rank * workers + worker
    for i, sample in enumerate(src):
        if i % slots == slot:
            yield sample


def _cap_batches(src: Iterator[Any], worker_batches: tuple[int, ...]) -> Iterator[Any]:
    import itertools

    import webdataset as wds

    _, _, worker, _ = wds.utils.pytorch_worker_info()
    yield from itertools.islice(src, worker_batches[worker])


def _key_in_split(sample: dict[str, Any], split: str, fraction: float, keys: frozenset[str] | None = None) -> bool:
    from amortized.datasets import in_split

    return in_split(sample["__key__"], split, fraction) and (keys is None or sample["__key__"] in keys)


def _training_sample(sample: dict[str, Any], specs: dict[str, S.SampleSpec]) -> dict[str, Any] | None:
    """Decode and check one raw sample against its shard's spec; a bad one is named in one warning line and
    dropped (``None``)."""
    import torch

    key = sample["__key__"]
    raw = {f: sample[f] for f in S.FIELDS if f in sample}  # only our fields are decoded, never by extension
    s, problems = S.check_sample(key, raw, specs[sample["__url__"]])
    if problems:
        log.warning("%s: %s: %s; skipped", sample.get("__url__"), key, "; ".join(problems))
        return None
    meta = s["meta"]
    return {
        "key": key,
        "image": torch.from_numpy(s["image"]).permute(2, 0, 1).float() / 255,
        "mask": torch.from_numpy(s["mask"].astype(np.float32)),
        "target": torch.tensor(meta["target"], dtype=torch.long),
        "label": torch.tensor(s["label"], dtype=torch.long),
        "final_loss": torch.tensor(meta["final"]["loss"], dtype=torch.float32),
    }


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    batch = {k: torch.stack([s[k] for s in samples]) for k in ("image", "mask", "target", "label", "final_loss")}
    batch["key"] = [s["key"] for s in samples]
    return batch


def mask_pipeline(
    index: S.ShardIndex | Sequence[S.ShardIndex],
    split: str = "train",
    val_fraction: float = 1 / 8,
    batch_size: int = 16,
    shuffle: bool = True,
    seed: int = 0,
    shuffle_buffer: int = 256,
    plan: SplitPlan | None = None,
    keys: frozenset[str] | None = None,
):
    """A ``webdataset.DataPipeline`` of batches from a shard directory or several (use with ``DataLoader(batch_size=None)``).

    Batches are dicts: ``image`` (B, 3, H, W) float in [0, 1], ``mask`` (B, k) float32, ``target`` (B,)
    the class the mask explains, ``label`` (B,) true class (-1 unknown), ``final_loss`` (B,), ``key`` list.
    ``plan`` (from :func:`plan_split`) fixes how ranks and workers share the data; default one process.
    Shuffling is seeded (``seed`` + epoch, counted per pass): reproducible, different every epoch.
    Every sample is decoded and checked here; one that fails is named in a warning and skipped.
    ``keys``, if given, keeps only those samples of the split (a ``train_limit`` subset; ``plan`` must count them).
    """
    import webdataset as wds

    indexes = [index] if isinstance(index, S.ShardIndex) else list(index)
    if plan is None:
        plan = plan_split(_counts(indexes, split, val_fraction, keys), batch_size, equalize=False)
    specs = {}
    for i in indexes:
        i.layout()  # the manifest's layout must be the one its preset gives
        specs.update({str(p): S.SampleSpec.from_config(i.config, i.config_hash) for p, _ in i.shards})
    urls = list(specs)
    if not urls:
        raise InputError(f"{', '.join(str(i.directory) for i in indexes)}: no finished shards to read")
    stages: list[Any] = [wds.SimpleShardList(urls)]
    if plan.mode == "shards":
        stages += [wds.split_by_node, wds.split_by_worker]
    if shuffle:
        stages.append(wds.detshuffle(bufsize=len(urls), initial=len(urls), seed=seed))
    in_part = functools.partial(_key_in_split, split=split, fraction=val_fraction, keys=keys)
    stages += [wds.tarfile_to_samples(), wds.select(in_part)]
    if plan.mode == "samples":
        stages.append(wds.pipelinefilter(_split_samples)())
    if shuffle:
        stages.append(wds.detshuffle(bufsize=shuffle_buffer, initial=min(shuffle_buffer, 64), seed=seed + 1))
    stages += [
        wds.map(functools.partial(_training_sample, specs=specs)),  # None (a bad sample) is dropped
        wds.batched(batch_size, collation_fn=_collate, partial=plan.worker_batches is None),
    ]
    if plan.worker_batches is not None:
        stages.append(wds.pipelinefilter(_cap_batches)(plan.worker_batches))
    return wds.DataPipeline(*stages).with_length(plan.num_batches, silent=True)
