"""Reading shards: integrity (complete tar, every field), decoding, and the checks every sample passes on read."""

from __future__ import annotations

import gzip
import io
import json
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from amortized.shards.naming import CHECKSUM, CURVE_NAMES, FIELDS, CorruptShardError, sample_checksum
from rde.errors import InputError

NUM_CLASSES = 1000  # every registered classifier explains the ImageNet-1k classes
HEAL = "rerun generate to move it aside and recompute its samples"


def _tar_bytes(path: Path) -> bytes:
    """The uncompressed tar bytes of a shard; raises :class:`CorruptShardError` naming it."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.name.endswith(".gz") else data
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise CorruptShardError(f"{path}: corrupt or truncated shard ({e}); {HEAL}") from None


def members(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """``(key, field, data)`` for each member of a shard, checking it is complete."""
    data = _tar_bytes(path)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for m in tf:
                if m.offset_data + m.size > len(data):
                    raise CorruptShardError(f"{path}: truncated inside member {m.name}; {HEAL}")
                key, _, field = m.name.partition(".")
                f = tf.extractfile(m)
                yield key, field, f.read() if f is not None else b""
            end = tf.offset  # a closed tar ends with two zero blocks; a cut-off one does not
            if data[end : end + 1024] != bytes(1024):
                raise CorruptShardError(f"{path}: truncated (no end-of-archive marker); {HEAL}")
    except tarfile.TarError as e:
        raise CorruptShardError(f"{path}: corrupt or truncated shard ({e}); {HEAL}") from None


def shard_keys(path: str | Path) -> list[str]:
    """Keys of a finished shard, in order, after checking that every sample has every field.

    Raises:
        CorruptShardError: unreadable/truncated file, a sample missing fields, or a duplicate key.
    """
    path = Path(path)
    fields: dict[str, set[str]] = {}
    for key, field, _ in members(path):
        fields.setdefault(key, set()).add(field)
    for key, have in fields.items():
        missing = set(FIELDS) - have
        if missing:
            raise CorruptShardError(f"{path}: sample {key!r} lacks {sorted(missing)}; {HEAL}")
    return list(fields)


_KEY_CACHE: dict[tuple[str, int, int], tuple[str, ...]] = {}


def cached_shard_keys(path: Path) -> tuple[str, ...]:
    """:func:`shard_keys`, cached by (path, size, mtime) within this process."""
    st = path.stat()
    sig = (str(path), st.st_size, st.st_mtime_ns)
    if sig not in _KEY_CACHE:
        _KEY_CACHE[sig] = tuple(shard_keys(path))
    return _KEY_CACHE[sig]


def raw_samples(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {field: bytes})`` per sample of one shard, undecoded; raises :class:`CorruptShardError`
    for a shard that is not complete (truncated, not a tar) or has a member twice."""
    path = Path(path)
    current: dict[str, bytes] = {}
    key = None
    for k, field, data in members(path):
        if key is not None and k != key:
            yield key, current
            current = {}
        key = k
        if field in current:
            raise CorruptShardError(f"{path}: duplicate member {k}.{field}")
        current[field] = data
    if key is not None:
        yield key, current


def read_samples(path: str | Path) -> Iterator[dict[str, Any]]:
    """Decode every sample of one shard (for checks and tests): key, image, mask, curves, label, meta.

    Raises :class:`CorruptShardError` naming the shard and sample at the first that cannot be decoded;
    see :func:`checked_samples` to go on past bad samples.
    """
    path = Path(path)
    for key, raw in raw_samples(path):
        try:
            yield decode_sample(key, raw)
        except SampleError as e:
            raise CorruptShardError(f"{path}: sample {key!r} {e}") from None


class SampleError(InputError):
    """A sample whose fields cannot be decoded; the message is the reason (no shard or key)."""


def decode_sample(key: str, raw: dict[str, bytes]) -> dict[str, Any]:
    """Decode one sample's fields: ``key``, ``image`` (H, W, 3) uint8, ``mask``, ``curves``, ``label``, ``meta``.

    Raises:
        SampleError: a field is missing or its bytes do not decode (corrupt PNG, npy or JSON).
    """
    from PIL import Image

    missing = set(FIELDS) - set(raw)
    if missing:
        raise SampleError(f"lacks {sorted(missing)}")
    field = "png"
    try:  # bytes from disk: any decoding error means a damaged sample, not a bug here
        with Image.open(io.BytesIO(raw["png"])) as img:
            image = np.array(img.convert("RGB"))
        field = "mask.npy"
        mask = np.load(io.BytesIO(raw["mask.npy"]), allow_pickle=False)
        field = "curves.npy"
        curves = np.load(io.BytesIO(raw["curves.npy"]), allow_pickle=False)
        field = "cls"
        label = int(raw["cls"].decode("ascii"))
        field = "meta.json"
        meta = json.loads(raw["meta.json"])
    except (OSError, ValueError, SyntaxError, EOFError, UnicodeDecodeError, Image.DecompressionBombError) as e:
        raise SampleError(f"cannot be decoded: {field}: {type(e).__name__}: {e}") from None
    if not isinstance(meta, dict):
        raise SampleError("cannot be decoded: meta.json is not an object")
    return {"key": key, "image": image, "mask": mask, "curves": curves, "label": label, "meta": meta}


@dataclass(frozen=True)
class SampleSpec:
    """What every sample of one configuration must look like (see :func:`sample_problems`)."""

    num_entries: int
    image_size: int
    config_hash: str | None = None
    layout: str | None = None
    num_classes: int = NUM_CLASSES

    @classmethod
    def from_config(cls, config: dict[str, Any], chash: str | None = None) -> SampleSpec:
        """The spec of a target configuration (``manifest["config"]``, or generate's ``target_config``)."""
        return cls(int(config["num_entries"]), int(config["preset"]["image_size"]), chash, config.get("layout"))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def sample_problems(sample: dict[str, Any], spec: SampleSpec) -> list[str]:
    """Why a decoded sample must not be used (empty when it is sound).

    Checks: mask float16 of length k, finite, in [0, 1]; image ``size x size x 3`` uint8; curves
    ``(3, steps)`` finite; target a class index; label -1 or a class index and equal to the metadata's;
    final loss finite; the metadata's config hash and layout those of ``spec`` (when it names them).
    """
    problems = []
    mask, image, curves, meta = sample["mask"], sample["image"], sample["curves"], sample["meta"]
    k, size, n = spec.num_entries, spec.image_size, spec.num_classes
    if mask.dtype != np.float16 or mask.shape != (k,):
        problems.append(f"mask {mask.dtype} {mask.shape}, expected float16 ({k},)")
    elif not np.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        bad = mask[~np.isfinite(mask) | (mask < 0) | (mask > 1)]
        problems.append(f"mask values outside [0, 1] or not finite (e.g. {float(bad[0]):g})")
    if image.dtype != np.uint8 or image.shape != (size, size, 3):
        problems.append(f"image {image.dtype} {image.shape}, expected uint8 ({size}, {size}, 3)")
    steps = meta.get("steps")
    if curves.shape != (len(CURVE_NAMES), steps) or not np.isfinite(curves).all():
        problems.append(f"curves {curves.shape} (steps {steps}) or not finite")
    target = meta.get("target")
    if not _is_int(target) or not 0 <= target < n:
        problems.append(f"target {target!r} is not a class index in [0, {n})")
    if not -1 <= sample["label"] < n or sample["label"] != meta.get("label"):
        problems.append(f"cls {sample['label']} is not in [-1, {n}) or != meta label {meta.get('label')}")
    loss = (meta.get("final") or {}).get("loss")
    if not isinstance(loss, (int, float)) or not math.isfinite(loss):
        problems.append(f"final loss {loss!r} is not a finite number")
    if (spec.config_hash is not None and meta.get("config_hash") != spec.config_hash) or (
        spec.layout is not None and meta.get("layout") != spec.layout
    ):
        problems.append(f"metadata config {meta.get('config_hash')} / {meta.get('layout')} "
                        f"differs from the manifest's {spec.config_hash} / {spec.layout}")
    return problems


def check_sample(key: str, raw: dict[str, bytes], spec: SampleSpec) -> tuple[dict[str, Any] | None, list[str]]:
    """Decode and check one raw sample: ``(sample, [])`` when sound, else ``(sample or None, problems)``.

    A sample with a checksum (those written since it exists) must also match it: a changed byte that leaves every
    value in range (a mask entry, the target) is found that way, and reported when no other check names it.
    """
    try:
        sample = decode_sample(key, raw)
    except SampleError as e:
        return None, [str(e)]
    problems = sample_problems(sample, spec)
    if not problems and CHECKSUM in raw and raw[CHECKSUM] != sample_checksum(raw).encode("ascii"):
        problems.append("checksum mismatch: its bytes changed since it was written (a damaged disk or copy)")
    return sample, problems


def checked_samples(path: str | Path, spec: SampleSpec) -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """``(key, raw fields, problems)`` for every sample of a shard; bad samples do not stop the pass.

    Raises:
        CorruptShardError: the shard itself is incomplete (nothing in it can be trusted).
    """
    for key, raw in raw_samples(path):
        _, problems = check_sample(key, raw, spec)
        yield key, raw, problems
