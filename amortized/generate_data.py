"""The data side of ``cartoonx generate``: the images still to explain (photos and their views), split
across ranks, and the lock that keeps two runs out of one output directory."""

from __future__ import annotations

import dataclasses
import fcntl
import os
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from amortized import shards as S
from amortized.datasets import ImageItem, view_key
from amortized.image_data import ImageListDataset, collate_items
from rde.errors import InputError
from rde.io import check_output_dir

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


def _close_process_group() -> None:
    """Destroy this rank's process group once its work is done (the Trainer's last collective is behind it).

    Lightning destroys only NCCL groups at exit; a gloo group (CPU ranks) is left to interpreter shutdown,
    where its threads are torn down unjoined and a rank can die with SIGABRT ("terminate called without an
    active exception") after its work is saved: seen in 3 of 25 two-rank reruns that found nothing left to do.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# -- data ------------------------------------------------------------------------------------------------
def with_views(photos: Sequence[ImageItem], views: int, photos_too: bool = True) -> list[ImageItem]:
    """The work list of ``photos`` and ``views`` views of each (:mod:`amortized.views`), view by view: every
    photo itself (view 0, unless not ``photos_too``), then view 1 of every photo, then view 2, ... in the
    photos' order, so a run stopped early has as many different photos as possible."""
    if views < 0:
        raise InputError(f"views must be at least 0, got {views}")
    first = 0 if photos_too else 1
    return [
        item if v == 0 else dataclasses.replace(item, key=view_key(item.key, v), view=v)
        for v in range(first, views + 1)
        for item in photos
    ]


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
        if self.trainer is not None and self.trainer.world_size > 1:  # a group of the Trainer's own, not a caller's
            _close_process_group()

    def on_exception(self, exception: BaseException) -> None:
        self.release_lock()

    def release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
