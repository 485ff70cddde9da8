"""The data side of ``cartoonx generate``: the images still to explain, split across ranks, and the lock
that keeps two runs out of one output directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from amortized import shards as S
from amortized.datasets import ImageItem
from rde.errors import InputError
from rde.io import check_output_dir, load_and_preprocess

LOCK_NAME = ".generate.lock"


# -- output directory ----------------------------------------------------------------------------------
class _DirLock:
    """An exclusive ``flock`` on ``DIR/.generate.lock`` so two runs never write into one directory."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise InputError(f"another `cartoonx generate` is writing to {out_dir} (lock {self.path})") from None

    def release(self) -> None:
        if self.fd >= 0:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


# -- data ------------------------------------------------------------------------------------------------
class ImageListDataset(Dataset):
    """Loads and preprocesses images; a bad file yields ``image=None`` and the error instead of raising."""

    def __init__(self, items: Sequence[ImageItem], image_size: int) -> None:
        self.items = list(items)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        try:
            image, error = load_and_preprocess(item.path, self.image_size), None
        except (ValueError, OSError) as e:
            image, error = None, str(e)
        return {"item": item, "image": image, "error": error}


def collate_items(batch: list[dict[str, Any]]) -> dict[str, Any]:
    good = [b for b in batch if b["image"] is not None]
    return {
        "items": [b["item"] for b in good],
        "images": torch.stack([b["image"] for b in good]) if good else None,
        "failed": [failure_record(b["item"], b["error"]) for b in batch if b["image"] is None],
    }


def failure_record(item: ImageItem, error: str) -> dict[str, Any]:
    """The failure log record of an image that could not be explained."""
    return {"key": item.key, "source": item.source, "error": error}


class GenerateDataModule(L.LightningDataModule):
    """The images still to explain, split across ranks without overlap.

    In ``setup`` rank 0 locks and checks the output directory and finds the finished keys; the pending
    list is broadcast so that every rank splits the same list (``pending[rank::world_size]``).
    """

    def __init__(
        self,
        items: Sequence[ImageItem],
        out_dir: Path,
        config: dict[str, Any],
        batch_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.items = list(items)
        self.out_dir = Path(out_dir)
        self.config = config
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.skipped = 0
        self.total_pending = 0
        self.rank_items: list[ImageItem] = []
        self._lock: _DirLock | None = None

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        state = None
        if trainer.global_rank == 0:
            check_output_dir(self.out_dir, create=True)
            self._lock = _DirLock(self.out_dir)
            done = S.open_for_writing(self.out_dir, self.config)
            pending = [i for i in self.items if i.key not in done]
            state = (len(self.items) - len(pending), pending)
        self.skipped, pending = trainer.strategy.broadcast(state, src=0)
        self.total_pending = len(pending)
        self.rank_items = pending[trainer.global_rank :: trainer.world_size]

    def predict_dataloader(self) -> DataLoader:
        dataset = ImageListDataset(self.rank_items, self.config["preset"]["image_size"])
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers, collate_fn=collate_items
        )

    def transfer_batch_to_device(self, batch: dict[str, Any], device: torch.device, dataloader_idx: int) -> dict[str, Any]:
        images = batch["images"]  # the rest (ImageItem records, failures) stays on the host
        return {**batch, "images": None if images is None else images.to(device)}

    def teardown(self, stage: str) -> None:
        self.release_lock()

    def on_exception(self, exception: BaseException) -> None:
        self.release_lock()

    def release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
