"""LightningDataModule streaming exact-mask shards from ``cartoonx generate`` for training the initializer.

Train and validation splits are the same hash split of sample keys that generation uses
(:func:`amortized.datasets.split_of`), so they never overlap and don't depend on shard layout. Ranks
and loader workers split by shards when there are enough, else by samples (see
:func:`amortized.shards.plan_split`); no sample is ever read twice in an epoch, and every DDP rank gets
the same number of training batches.
"""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from amortized import shards as S
from amortized.datasets import DEFAULT_VAL_FRACTION


class MaskShardDataModule(L.LightningDataModule):
    """Batches of ``{"image", "mask", "target", "label", "final_loss", "key"}`` from a shard directory.

    Args:
        shards: directory written by ``cartoonx generate``.
        preset: the optimizer preset the model uses; its image size and wavelet must match the shards'.
        classifier: if given, must be the shards' classifier.
        batch_size: images per batch (per rank).
        val_batch_size: default ``batch_size``.
        num_workers: loader worker processes (persistent, so per-epoch shuffling advances).
        val_fraction: fraction of keys in the validation split (the hash split).
        seed: shuffling seed; epoch e shuffles with ``seed + e``.
        shuffle_buffer: samples in the shuffle buffer.
        split_mode: ``auto``, ``shards`` or ``samples`` (see :func:`amortized.shards.plan_split`).
    """

    def __init__(
        self,
        shards: str = "data/shards/efficientnet_lite0-cpu",
        preset: str = "cpu",
        classifier: str | None = None,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        seed: int = 0,
        shuffle_buffer: int = 256,
        split_mode: str = "auto",
    ) -> None:
        super().__init__()
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(f"batch sizes must be positive, got {batch_size} and {val_batch_size}")
        self.save_hyperparameters()
        self.index: S.ShardIndex | None = None

    def setup(self, stage: str | None = None) -> None:
        from rde import MaskLayout, load_preset

        index = S.open_shard_dir(self.hparams.shards)
        cfg = load_preset(self.hparams.preset)
        expected = MaskLayout.for_wavelet(cfg.image_size, cfg.image_size, cfg.wavelet).signature
        if index.config["layout"] != expected:
            raise S.ConfigMismatchError(
                f"{index.directory} holds masks of layout {index.config['layout']}, but preset "
                f"{self.hparams.preset!r} uses {expected}"
            )
        clf = self.hparams.classifier
        if clf is not None and clf != index.config["classifier"]:
            raise S.ConfigMismatchError(
                f"{index.directory} holds masks explaining {index.config['classifier']!r}, not {clf!r}"
            )
        self.index = index

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
        counts = self.index.counts(split, hp.val_fraction)
        plan = S.plan_split(counts, batch_size, rank, world, hp.num_workers, hp.split_mode, equalize=train)
        if plan.num_batches == 0 and train:
            raise ValueError(
                f"{self.index.directory}: the {split} split has {sum(counts)} samples, not enough for one batch "
                f"of {batch_size} on each of {world} rank(s); lower batch_size"
            )
        pipeline = S.mask_pipeline(
            self.index, split, hp.val_fraction, batch_size, shuffle=train, seed=hp.seed,
            shuffle_buffer=hp.shuffle_buffer, plan=plan,
        )
        return DataLoader(pipeline, batch_size=None, num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)
