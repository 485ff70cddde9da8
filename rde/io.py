"""Disk I/O: images into [0, 1] tensors with errors that name the file at fault, and output folders checked
before any work starts."""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms import functional as TF

from rde.errors import InputError

MAX_PIXELS_ENV = "CARTOONX_MAX_PIXELS"


class ImageLoadError(InputError):
    """An image file that cannot be used; the message names the file and the reason."""


class ImageGeometryWarning(UserWarning):
    """An image so small or so elongated that resizing and center-cropping it changes what the classifier sees."""


UPSCALE_WARN = 2.0  # warn when the shorter side is enlarged more than this factor
ASPECT_WARN = 2.0  # warn when the center crop drops more than half of the longer side


def max_pixels() -> int | None:
    """The largest image, in pixels, that :func:`load_image` opens; ``None``: no bound.

    It is PIL's ``Image.MAX_IMAGE_PIXELS`` (about 89 million by default), which guards against
    decompression bombs: small files that declare huge images. Setting the environment variable
    ``CARTOONX_MAX_PIXELS`` (0: no bound) sets it for every command, worker processes included.
    """
    text = os.environ.get(MAX_PIXELS_ENV)
    if text is not None:
        try:
            value = int(text)
        except ValueError:
            raise InputError(f"{MAX_PIXELS_ENV}={text!r}: expected a number of pixels (0: no bound)") from None
        Image.MAX_IMAGE_PIXELS = value if value > 0 else None
    return Image.MAX_IMAGE_PIXELS


def load_image(path: str | Path) -> Image.Image:
    """Open any PIL-readable image as 8-bit RGB.

    The EXIF orientation is applied (a phone photo stored sideways is returned upright, as viewers show it).
    Greyscale is replicated to three channels, RGBA/LA is composited on white, CMYK and palette
    images are converted, and 16-bit or float images are rescaled to 8 bits by their range. An image
    of more than :func:`max_pixels` pixels is refused before it is decoded.
    """
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory, not an image")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    bound = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL only warns below 2x its bound
            with Image.open(path) as img:
                img.load()
                return _to_rgb(ImageOps.exif_transpose(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found.group(1)):,} pixels" if found else "its size"
        raise ImageLoadError(
            f"{path}: {size} exceed the bound of {bound:,} pixels against decompression bombs "
            f"(set {MAX_PIXELS_ENV}=<pixels> to allow larger images, 0 for no bound)"
        ) from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not an image file (PIL cannot identify it)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"{path}: unreadable or truncated image ({e})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            hi = max(float(arr.max()), 1.0)
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def preprocess(img: Image.Image, size: int) -> Tensor:
    """Deterministic resize (shorter side to ``size``, bilinear with antialias) and center crop -> ``(3, size, size)``."""
    tensor = TF.pil_to_tensor(img)
    tensor = TF.resize(tensor, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    tensor = TF.center_crop(tensor, [size, size])
    return tensor.float().div_(255.0)


def geometry_problem(width: int, height: int, size: int) -> str | None:
    """Why resizing a ``width x height`` image to ``size`` and center-cropping it loses or invents much, if it does."""
    short, long = min(width, height), max(width, height)
    problems = []
    if short * UPSCALE_WARN < size:
        problems.append(f"upscaled {size / short:.3g}x to {size} px (the classifier sees interpolation)")
    if long > ASPECT_WARN * short:
        problems.append(f"center-cropped to a square that keeps {100 * short / long:.2g}% of its longer side")
    return f"{width}x{height} pixels is " + " and ".join(problems) if problems else None


def load_and_preprocess(path: str | Path, size: int) -> Tensor:
    """:func:`load_image` then :func:`preprocess`; an image that is much smaller than ``size`` or far from square
    gives an :class:`ImageGeometryWarning` naming the file (it is still used)."""
    img = load_image(path)
    problem = geometry_problem(*img.size, size)
    if problem:
        warnings.warn(f"{path}: {problem}", ImageGeometryWarning, stacklevel=2)
    return preprocess(img, size)


def load_images(paths: list[str | Path], size: int) -> Tensor:
    """Load and preprocess several files into ``(B, 3, size, size)``; raises on the first bad file."""
    return torch.stack([load_and_preprocess(p, size) for p in paths])


def check_images(images: Tensor, name: str = "images") -> None:
    """Validate a batch given through the Python API: shape (B, 3, H, W), finite, within [0, 1]."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"{name} must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise InputError(f"{name} is an empty batch")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [0, 1], got dtype {images.dtype}")
    bad = ~torch.isfinite(images)
    if bad.any():
        idx = sorted({int(i) for i in bad.flatten(1).any(1).nonzero().flatten()})
        raise InputError(f"{name} contain NaN or inf values (batch indices {idx})")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise InputError(f"{name} must lie in [0, 1] (pixels, not normalized), got range [{lo:.3g}, {hi:.3g}]")


class OutputDirError(InputError):
    """An output folder that cannot be used (a file, under a file, not writable); the message names it."""


def check_output_dir(path: str | Path, create: bool = False, option: str | None = None) -> Path:
    """Refuse, before any work starts, an output folder that is a file, lies under a file, or cannot be
    written; create it only if ``create`` (so that a run refused later leaves no empty folder behind).

    Raises:
        OutputDirError: one line naming the folder at fault (after ``option``, e.g. ``--out``, if given).
    """
    path = Path(path)
    name = f"{option} {path}" if option else str(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{name}: exists and is not a folder")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise OutputDirError(f"{name}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"{name}: {existing} is not writable")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputDirError(f"{name}: cannot create the folder ({e.strerror or e})") from None
    return path


def remove_if_empty(path: str | Path) -> None:
    """Remove the folder ``path`` if it holds nothing: a run that failed before its first result leaves no trace."""
    try:
        Path(path).rmdir()
    except OSError:
        pass  # not empty, or already gone


class OutputWriteError(OutputDirError):
    """A write that failed (a full disk, a quota, a file system gone read-only): the run stops, what was finished is
    kept, and the same command resumes. Exit code 1: the input was fine, the run is incomplete."""

    exit_code = 1


def write_failure(path: str | Path, error: OSError, kept: str) -> OutputWriteError:
    """The one-line error for ``error`` raised while writing ``path`` (or the file the error names): the file, the
    system's reason, and ``kept`` (what survives and how to resume)."""
    where = error.filename if isinstance(error.filename, str) else path
    reason = error.strerror or str(error)
    return OutputWriteError(f"{where}: cannot write ({reason}); {kept}")


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
