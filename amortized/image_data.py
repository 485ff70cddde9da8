"""Images read for explaining, the same way by every command: a dataset over image items (a bad file becomes a
record, never an exception) and :func:`image_batches`, the one batch loop of ``explain`` and ``compare``
(``generate`` runs the same dataset in Lightning's predict loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from amortized.datasets import ImageItem, parse_view_key, sample_key
from amortized.views import load_view


class ImageListDataset(Dataset):
    """Loads and preprocesses images (a view is cut from its photo: ``view`` is its :class:`~amortized.views.View`,
    ``None`` for a photo itself); a bad file yields ``image=None`` and the error instead of raising."""

    def __init__(self, items: Sequence[ImageItem], image_size: int) -> None:
        self.items = list(items)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        try:
            (image, view), error = load_view(item.path, parse_view_key(item.key)[0], item.view, self.image_size), None
        except (ValueError, OSError) as e:
            image, view, error = None, None, str(e)
        return {"item": item, "image": image, "view": view, "error": error}


def collate_items(batch: list[dict[str, Any]]) -> dict[str, Any]:
    good = [b for b in batch if b["image"] is not None]
    return {
        "items": [b["item"] for b in good],
        "views": [b["view"] for b in good],
        "images": torch.stack([b["image"] for b in good]) if good else None,
        "failed": [failure_record(b["item"], b["error"]) for b in batch if b["image"] is None],
        "errors": [(b["item"], b["error"]) for b in batch if b["image"] is None],
    }


def failure_record(item: ImageItem, error: str) -> dict[str, Any]:
    """The failure log record of an image that could not be explained."""
    return {"key": item.key, "source": item.source, "error": error}


def image_batches(paths: Sequence[Path], image_size: int, batch_size: int,
                  on_error: Callable[[Path, str], None]) -> Iterator[tuple[list[int], Tensor]]:
    """The readable images of ``paths`` in batches: ``(indices into paths, images (B, 3, size, size))``. A file that
    cannot be read goes to ``on_error(path, message)`` and the others go on."""
    items = [ImageItem(sample_key(p), Path(p), str(p), None, -1) for p in paths]
    index = {id(item): i for i, item in enumerate(items)}
    loader = DataLoader(ImageListDataset(items, image_size), batch_size=batch_size, collate_fn=collate_items)
    for batch in loader:
        for item, error in batch["errors"]:
            on_error(item.path, error)
        if batch["images"] is not None:
            yield [index[id(item)] for item in batch["items"]], batch["images"]
