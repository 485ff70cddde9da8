"""The inputs of explain, compare and generate: image files, canonical ImageNet labels, a hash split.

Every command reads its inputs with :func:`find_images` (``list_images`` adds keys, labels and the split).
A source is

* a folder: every file below it, recursively, whose suffix is a format PIL reads (hidden names skipped),
  in sorted order; an ImageFolder tree ``ROOT/<wnid>/*.JPEG`` and a flat folder of ``<wnid>_*.JPEG`` alike;
* a list file, by its suffix ``.txt`` or ``.lst``: one image path per line, relative to the list file's
  folder, ``#`` starts a comment;
* any other file: an image, whatever its suffix (the image loader names it if PIL cannot read it).

A source or listed path that cannot be used is reported in one line and skipped; it never stops the others.

Labels come from the canonical 1000 wnids (:func:`rde.imagenet_class_index`), never from enumerating
folders; an image without a known wnid gets label ``-1``. The train/val split is a pure function of the
sample key (a hash), so it never depends on ordering, batching, or which other files are present.

A view of a photo (a crop and flip, :mod:`amortized.views`) has the key ``<photo key>@v<index>``
(:func:`view_key`); its split is its photo's, so the views of a validation photo never reach training.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal, Sequence

from rde.classifiers import imagenet_classes
from rde.errors import InputError
from rde.io import max_pixels

LIST_SUFFIXES = (".txt", ".lst")
VIEW_MARK = "@v"  # <photo key>@v<index>: the key of a view of a photo
DEFAULT_VAL_FRACTION = 1 / 8
Split = Literal["all", "train", "val"]
_WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class ImageItem:
    """One image to explain.

    Attributes:
        key: the sample key: the file stem with dots replaced by ``_`` (webdataset splits names at dots).
        path: the image file.
        source: the path as recorded in shard metadata (relative to the dataset root or list file).
        wnid: the ImageNet wnid found in the path, or ``None``.
        label: canonical ImageNet-1k class index of ``wnid``, or ``-1`` when unknown.
        view: which view of the photo this item is (:mod:`amortized.views`); 0 is the photo itself, and
            then ``key`` is :func:`view_key` ``(photo key, view)``.
    """

    key: str
    path: Path
    source: str
    wnid: str | None
    label: int
    view: int = 0


def sample_key(path: str | Path) -> str:
    """The sample key of an image file: its stem with ``.`` replaced by ``_`` (``a.b.JPEG`` -> ``a_b``)."""
    return Path(path).stem.replace(".", "_")


_VIEW_KEY = re.compile(rf"^(.+){re.escape(VIEW_MARK)}([1-9]\d*)$")


def view_key(photo: str, view: int) -> str:
    """The sample key of view ``view`` of the photo with key ``photo``: the photo's own key for view 0,
    else ``<photo>@v<view>`` (``n01_x@v3``)."""
    if view < 0:
        raise InputError(f"view index must be at least 0, got {view}")
    return photo if view == 0 else f"{photo}{VIEW_MARK}{view}"


def parse_view_key(key: str) -> tuple[str, int]:
    """``(photo key, view index)`` of a sample key; a photo's own key gives ``(key, 0)``."""
    found = _VIEW_KEY.match(key)
    return (found.group(1), int(found.group(2))) if found else (key, 0)


def wnid_of(path: str | Path) -> str | None:
    """The wnid of an image: its parent folder (``<wnid>/x.JPEG``) or file-name prefix (``<wnid>_x.JPEG``)."""
    path = Path(path)
    if _WNID.match(path.parent.name):
        return path.parent.name
    prefix = path.name.split("_", 1)[0]
    return prefix if _WNID.match(prefix) else None


def label_of(wnid: str | None) -> int:
    """Canonical ImageNet-1k index of ``wnid``; ``-1`` for ``None`` or a wnid outside the 1000 classes."""
    if wnid is None:
        return -1
    return _wnid_index().get(wnid, -1)


def _wnid_index() -> dict[str, int]:
    global _INDEX
    if _INDEX is None:
        _INDEX = {w: i for i, (w, _) in enumerate(imagenet_classes())}
    return _INDEX


_INDEX: dict[str, int] | None = None


def key_fraction(key: str, salt: str = "") -> float:
    """A uniform number in [0, 1) from the SHA-1 of ``salt + key``: the basis of splits and orderings."""
    digest = hashlib.sha1(f"{salt}{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, val_fraction: float = DEFAULT_VAL_FRACTION) -> Literal["train", "val"]:
    """``"val"`` for a fraction ``val_fraction`` of photo keys chosen by hash, else ``"train"``; a view's
    key (:func:`view_key`) has its photo's split."""
    return "val" if key_fraction(parse_view_key(key)[0]) < val_fraction else "train"


def in_split(key: str, split: Split, val_fraction: float = DEFAULT_VAL_FRACTION) -> bool:
    _check_split(split, val_fraction)
    return split == "all" or split_of(key, val_fraction) == split


def key_seed(key: str, base_seed: int = 0) -> int:
    """A per-image noise seed from the key and a base seed, so targets don't depend on batching or order."""
    digest = hashlib.sha256(f"{base_seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**63


@lru_cache(maxsize=1)
def image_suffixes() -> frozenset[str]:
    """File suffixes of every format PIL can open (lower case, with the dot): what a folder contributes."""
    from PIL import Image

    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def report_to_stderr(problem: str) -> None:
    print(f"skipping {problem}", file=sys.stderr)


def find_images(
    sources: str | Path | Sequence[str | Path], on_problem: Callable[[str], None] = report_to_stderr
) -> list[tuple[Path, str]]:
    """The image files that ``sources`` name, in the order given, as ``(path, source)`` pairs.

    ``source`` is the path as recorded in metadata: relative to the folder given, the list file's line,
    or the file's name. See the module docstring for the rules. Every source or listed path that cannot
    be used goes to ``on_problem`` as one line naming it, and is skipped.

    Raises:
        InputError: a malformed ``CARTOONX_MAX_PIXELS`` (checked here, once, rather than failing every image).
    """
    max_pixels()
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    found: list[tuple[Path, str]] = []
    for src in map(Path, sources):
        if not src.exists():
            on_problem(f"{src}: no such file or directory")
        elif src.is_dir():
            suffixes = image_suffixes()
            files = sorted(
                p
                for p in src.rglob("*")
                if p.suffix.lower() in suffixes
                and not any(part.startswith(".") for part in p.relative_to(src).parts)
                and p.is_file()
            )
            if not files:
                on_problem(f"{src}: folder holds no image files")
            found += [(p, p.relative_to(src).as_posix()) for p in files]
        elif src.suffix.lower() in LIST_SUFFIXES:
            found += _listed(src, on_problem)
        else:
            found.append((src, src.name))
    return found


def _listed(src: Path, on_problem: Callable[[str], None]) -> list[tuple[Path, str]]:
    try:
        text = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        on_problem(f"{src}: not a readable text list of image paths ({e})")
        return []
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        p = Path(line)
        path = p if p.is_absolute() else src.parent / p
        if path.is_file():
            found.append((path, line))
        else:
            on_problem(f"{src}:{lineno}: listed image {line!r} not found ({path})")
    return found


def list_images(
    source: str | Path | Sequence[str | Path],
    split: Split = "all",
    val_fraction: float = DEFAULT_VAL_FRACTION,
    on_problem: Callable[[str], None] = report_to_stderr,
) -> list[ImageItem]:
    """The images of folders, list files and image files (:func:`find_images`), sorted by key.

    Sources or listed paths that cannot be used go to ``on_problem`` (default: one line on stderr) and are
    skipped.

    Raises:
        ValueError: no images found at all, or two files map to the same key.
    """
    _check_split(split, val_fraction)
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    items: dict[str, ImageItem] = {}
    for path, recorded in find_images(sources, on_problem):
        item = _item(path, recorded)
        if parse_view_key(item.key)[1]:
            raise InputError(
                f"{path}: its sample key {item.key!r} reads as a view of photo {parse_view_key(item.key)[0]!r}; "
                f"rename it (keys ending in {VIEW_MARK}<number> are views)"
            )
        if item.key in items and items[item.key].path.resolve() == path.resolve():
            continue  # the same file named twice (e.g. a folder and a file in it)
        if item.key in items:
            raise InputError(
                f"two images have the same sample key {item.key!r}: {items[item.key].path} and {item.path}; "
                "rename one (keys are file stems with dots replaced)"
            )
        items[item.key] = item
    if not items:
        raise InputError(f"no images found in {', '.join(str(s) for s in sources)}")
    return [items[k] for k in sorted(items) if in_split(k, split, val_fraction)]


def _item(path: Path, source: str) -> ImageItem:
    wnid = wnid_of(path)
    return ImageItem(key=sample_key(path), path=path, source=source, wnid=wnid, label=label_of(wnid))


def _check_split(split: str, val_fraction: float) -> None:
    if split not in ("all", "train", "val"):
        raise InputError(f"split must be 'all', 'train' or 'val', got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
