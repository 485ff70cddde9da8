"""LightningDataModule over raw images, with exact targets attached where shards have them.

The RDE-objective term trains on every image; the supervised term only where ``cartoonx generate``
has already produced a target. This module serves both from one map-style dataset: each sample holds
the preprocessed image and, if its key is in the shards, the target mask (``has_mask`` says which).
On CPU, targets are scarce (minutes each), so this is the way to use all images. For large shard sets
without raw images, stream them with :class:`amortized.datamodule.MaskShardDataModule`.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from amortized.datasets import DEFAULT_VAL_FRACTION, ImageItem, list_images
from rde import MaskLayout, load_preset
from rde.io import ImageLoadError, load_image, preprocess


class TargetStore:
    """All finished targets of a shard directory in memory: ``key -> (mask (k,), final loss)``."""

    def __init__(self, shard_dir: str | Path, layout: MaskLayout, classifier: str | None = None) -> None:
        from amortized import shards as S

        index = S.open_shard_dir(shard_dir)
        if index.config["layout"] != layout.signature:
            raise S.ConfigMismatchError(
                f"{shard_dir} holds masks of layout {index.config['layout']}, the model uses {layout.signature}"
            )
        if classifier is not None and index.config["classifier"] != classifier:
            raise S.ConfigMismatchError(f"{shard_dir} explains {index.config['classifier']!r}, not {classifier!r}")
        self.targets: dict[str, tuple[torch.Tensor, float]] = {}
        for path, _ in index.shards:
            for sample in S.read_samples(path):
                mask = torch.from_numpy(sample["mask"].astype("float32"))
                self.targets[sample["key"]] = (mask, float(sample["meta"]["final"]["loss"]))

    def __len__(self) -> int:
        return len(self.targets)


class ImageTargetDataset(Dataset):
    """``{"image", "mask", "has_mask", "final_loss", "key"}`` per image (zeros where there is no target)."""

    def __init__(self, items: list[ImageItem], size: int, num_entries: int, store: TargetStore | None) -> None:
        self.items, self.size, self.num_entries, self.store = items, size, num_entries, store
        self._cache: dict[int, torch.Tensor | None] = {}  # preprocessed uint8 images (~49 KB each at 128 px)

    def _image(self, i: int) -> torch.Tensor | None:
        if i not in self._cache:
            try:
                image = preprocess(load_image(self.items[i].path), self.size)
                self._cache[i] = (image * 255).round().to(torch.uint8)
            except ImageLoadError:
                self._cache[i] = None
        cached = self._cache[i]
        return None if cached is None else cached.float() / 255

    def __len__(self) -> int:
        return len(self.items)

    def has_target(self, i: int) -> bool:
        return self.store is not None and self.items[i].key in self.store.targets

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        image = self._image(i)
        target = self.store.targets[item.key] if self.has_target(i) else None
        return {
            "image": image if image is not None else torch.zeros(3, self.size, self.size),
            "valid": image is not None,
            "mask": target[0] if target else torch.zeros(self.num_entries),
            "has_mask": target is not None,
            "final_loss": target[1] if target else float("nan"),
            "key": item.key,
        }


def _collate(samples: list[dict]) -> dict:
    samples = [s for s in samples if s["valid"]]  # unreadable images are dropped, not fatal
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "has_mask": torch.tensor([s["has_mask"] for s in samples]),
        "final_loss": torch.tensor([s["final_loss"] for s in samples], dtype=torch.float32),
        "key": [s["key"] for s in samples],
    }


class ImageDataModule(L.LightningDataModule):
    """Images from a folder (ImageFolder, flat ``<wnid>_*.JPEG``) or list, split by the same key hash as shards.

    Args:
        images: image source(s) accepted by :func:`amortized.datasets.list_images`.
        shards: optional shard directory whose targets are attached by key.
        preset: the model's preset (image size, layout); linked from the model by ``cartoonx train``.
        classifier: if given, the shards must explain this classifier.
        batch_size, val_batch_size, num_workers: loader settings.
        val_fraction: fraction of keys in the validation split.
        limit: use only the first ``limit`` images of each split (quick runs).
        oversample_targets: training images with a target are drawn this many times more often than
            those without (targets are scarce; 1 draws every image equally, without replacement).
    """

    def __init__(
        self,
        images: str | list[str] = "../shared/data/imagenet-sample",
        shards: str | None = None,
        preset: str = "cpu",
        classifier: str | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        limit: int | None = None,
        oversample_targets: float = 1.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.datasets: dict[str, ImageTargetDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        cfg = load_preset(hp.preset)
        layout = MaskLayout.for_wavelet(cfg.image_size, cfg.image_size, cfg.wavelet)
        store = TargetStore(hp.shards, layout, hp.classifier) if hp.shards else None
        for split in ("train", "val"):
            items = list_images(hp.images, split, hp.val_fraction)[: hp.limit]
            self.datasets[split] = ImageTargetDataset(items, cfg.image_size, layout.num_entries, store)

    def train_dataloader(self) -> DataLoader:
        dataset, factor = self.datasets["train"], self.hparams.oversample_targets
        sampler = None
        if factor != 1.0:
            if factor <= 0:
                raise ValueError(f"oversample_targets must be positive, got {factor}")
            weights = torch.tensor([factor if dataset.has_target(i) else 1.0 for i in range(len(dataset))])
            sampler = WeightedRandomSampler(weights, num_samples=len(dataset), replacement=True)
        return DataLoader(
            dataset, batch_size=self.hparams.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
            num_workers=self.hparams.num_workers, collate_fn=_collate, persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.datasets["val"], batch_size=self.hparams.val_batch_size or self.hparams.batch_size,
            num_workers=self.hparams.num_workers, collate_fn=_collate,
        )
