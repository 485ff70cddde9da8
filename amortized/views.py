"""Views: new training inputs cut from the same photos, each a deterministic random resized crop and flip.

View ``i`` of a photo (``i >= 1``; view 0 is the photo itself, preprocessed as always) is a crop of
torchvision's :meth:`~torchvision.transforms.RandomResizedCrop.get_params` (area 0.35-1 of the photo,
aspect 3/4-4/3) resized to ``size x size``, then flipped left-right with probability 1/2. The draws come
from a torch generator seeded by a SHA-256 of (photo key, view index), so a view depends only on the photo's
key, its pixel size and the index: not on ordering, batching, the process or Python's ``hash``.

A view gets its own exact target (an exact mask is not the cropped or flipped mask of its photo). Its
sample key is :func:`amortized.datasets.view_key` and its split its photo's. The sample's metadata
records the :class:`View` (``meta["view"]``), so :func:`rebuild_view` remakes the image from the photo.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms import functional as TF

from amortized.datasets import parse_view_key
from rde import io as rde_io  # the one image loader (and its EXIF handling)
from rde.errors import InputError

SCALE = (0.35, 1.0)  # fraction of the photo's area
RATIO = (3 / 4, 4 / 3)  # crop width / height
FLIP_PROBABILITY = 0.5


@dataclass(frozen=True)
class View:
    """One view of a photo.

    Attributes:
        index: the view's number (>= 1).
        box: ``(top, left, height, width)`` of the crop in the photo's pixels (as loaded, 8-bit RGB).
        flip: mirrored left-right after the crop.
        source_size: ``(width, height)`` of the photo the box refers to.
    """

    index: int
    box: tuple[int, int, int, int]
    flip: bool
    source_size: tuple[int, int]

    def to_meta(self) -> dict[str, Any]:
        """The JSON record stored as a sample's ``meta["view"]``."""
        return {"index": self.index, "box": list(self.box), "flip": self.flip, "source_size": list(self.source_size)}

    @classmethod
    def from_meta(cls, record: Any) -> View:
        """The view a ``meta["view"]`` record describes; :class:`InputError` for a malformed one."""
        try:
            view = cls(int(record["index"]), tuple(int(v) for v in record["box"]), bool(record["flip"]),
                       tuple(int(v) for v in record["source_size"]))
        except (TypeError, KeyError, ValueError) as e:
            raise InputError(f"malformed view record {record!r}: {type(e).__name__}: {e}") from None
        if len(view.box) != 4 or len(view.source_size) != 2:
            raise InputError(f"malformed view record {record!r}: box needs 4 numbers, source_size 2")
        return view


def view_seed(photo: str, index: int) -> int:
    """The seed of view ``index`` of the photo keyed ``photo`` (SHA-256; apart from the noise seeds)."""
    digest = hashlib.sha256(f"view:{photo}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**63


def draw_view(photo: str, index: int, width: int, height: int) -> View:
    """View ``index`` (>= 1) of a ``width x height`` photo keyed ``photo``: crop box and flip."""
    if index < 1:
        raise InputError(f"view index must be at least 1 (0 is the photo itself), got {index}")
    with torch.random.fork_rng(devices=[]):  # the draws never disturb the caller's random stream
        torch.manual_seed(view_seed(photo, index))
        shape_only = torch.empty(1, 1, 1).expand(1, height, width)  # get_params reads only the size
        box = RandomResizedCrop.get_params(shape_only, list(SCALE), list(RATIO))
        flip = bool(torch.rand(1).item() < FLIP_PROBABILITY)
    return View(index, tuple(int(v) for v in box), flip, (width, height))


def render_view(photo: Image.Image, view: View, size: int) -> Tensor:
    """The ``(3, size, size)`` image in [0, 1] of ``view`` cut from ``photo`` (bilinear with antialias on the
    8-bit image, as :func:`rde.io.preprocess` resizes, so a stored uint8 image is reproduced exactly)."""
    if tuple(photo.size) != tuple(view.source_size):
        raise InputError(f"view {view.index} was cut from a {view.source_size[0]}x{view.source_size[1]} photo, "
                         f"this one is {photo.size[0]}x{photo.size[1]}")
    top, left, height, width = view.box
    tensor = TF.resized_crop(TF.pil_to_tensor(photo), top, left, height, width, [size, size],
                             interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    if view.flip:
        tensor = TF.hflip(tensor)
    return tensor.float().div_(255.0)


def load_view(path: str | Path, photo: str, index: int, size: int) -> tuple[Tensor, View | None]:
    """Load the photo at ``path`` (keyed ``photo``) and return view ``index`` as ``(3, size, size)`` in [0, 1],
    with its :class:`View` (``None`` for index 0: the photo, preprocessed as :func:`rde.io.preprocess` does)."""
    if index == 0:
        return rde_io.load_and_preprocess(path, size), None  # a photo that is tiny or far from square is named
    image = rde_io.load_image(path)
    view = draw_view(photo, index, *image.size)
    return render_view(image, view, size), view


def rebuild_view(photo_path: str | Path, meta: dict[str, Any]) -> Tensor:
    """The image of a stored sample remade from its photo and metadata (``key``, ``image_size``, ``view``).

    Returns ``(3, size, size)`` in [0, 1]: for a view sample the crop and flip ``meta["view"]`` records,
    for a photo's own sample the preprocessed photo.

    Raises:
        InputError: the record is malformed, names another key, or the photo is not the size it was cut from.
    """
    photo, index = parse_view_key(str(meta.get("key", "")))
    size = int(meta["image_size"])
    image = rde_io.load_image(photo_path)
    if index == 0:
        return rde_io.preprocess(image, size)
    view = View.from_meta(meta.get("view"))
    if view.index != index:
        raise InputError(f"{photo_path}: sample {meta['key']!r} records view {view.index}, its key says {index}")
    try:
        return render_view(image, view, size)
    except InputError as e:
        raise InputError(f"{photo_path}: {e}") from None
