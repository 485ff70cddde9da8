"""Writing shards: one sample dict per image, shards that appear under their final name only when complete."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from amortized.shards.naming import CHECKSUM, CURVE_NAMES, sample_checksum
from rde.errors import InputError
from rde.io import write_failure

KEPT = "the shard in progress is discarded, finished shards are kept: free space and rerun the same command to resume"

MTIME = 1_700_000_000  # pinned member mtime: identical samples give identical tar bytes


def make_sample(
    key: str,
    image: np.ndarray,
    mask: np.ndarray,
    curves: np.ndarray,
    label: int,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """A sample dict for :class:`AtomicShardWriter` (webdataset encodes each field by its extension).

    Args:
        key: sample key without dots.
        image: ``(H, W, 3)`` uint8.
        mask: ``(k,)`` in [0, 1]; stored as float16.
        curves: ``(3, N)`` rows :data:`CURVE_NAMES`; stored as float32.
        label: true class index, -1 when unknown.
        meta: JSON-serializable metadata.
    """
    if "." in key or not key:
        raise InputError(f"sample key {key!r} must be non-empty and contain no dots")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{key}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if mask.ndim != 1:
        raise InputError(f"{key}: mask must be flat (k,), got shape {mask.shape}")
    if curves.ndim != 2 or curves.shape[0] != len(CURVE_NAMES):
        raise InputError(f"{key}: curves must be ({len(CURVE_NAMES)}, N), got shape {curves.shape}")
    return {
        "__key__": key,
        "png": image,
        "mask.npy": mask.astype(np.float16),
        "curves.npy": curves.astype(np.float32),
        "cls": int(label),
        "meta.json": meta,
    }


class AtomicShardWriter:
    """A ``webdataset.ShardWriter`` whose shards appear under their final name only when complete.

    Writes ``pattern % index + ".tmp"``, and on closing a shard flushes it to disk and renames it. No
    file is created until the first sample arrives, so no empty shards. ``on_shard(path, keys)`` is
    called after each rename. A write that fails (``OSError``: a full disk) discards the open shard, never
    renaming it, and raises :class:`rde.io.OutputWriteError` naming the file and the reason.

    Args:
        pattern: finished-name pattern from :func:`shard_pattern`.
        maxcount: samples per shard.
        start_shard: index of the first shard (see :func:`next_shard_index`).
        on_shard: optional callback after each finished shard.
    """

    def __init__(
        self,
        pattern: str,
        maxcount: int,
        start_shard: int = 0,
        on_shard: Callable[[Path, list[str]], None] | None = None,
    ) -> None:
        if maxcount < 1:
            raise InputError(f"shard size must be a positive number of samples, got {maxcount}")
        self.pattern = pattern
        self.maxcount = maxcount
        self.start_shard = start_shard
        self.on_shard = on_shard
        self.compress = pattern.endswith(".gz")
        self.finished: list[Path] = []
        self._writer = None
        self._keys: list[str] = []

    def write(self, sample: dict[str, Any]) -> None:
        """Add one sample (see :func:`make_sample`), with its :func:`~amortized.shards.naming.sample_checksum`."""
        import webdataset as wds
        from webdataset.writer import default_handlers, encode_based_on_extension

        sample = encode_based_on_extension(sample, default_handlers)
        sample[CHECKSUM] = sample_checksum(sample).encode("ascii")
        try:
            if self._writer is None:
                self._writer = wds.ShardWriter(
                    self.pattern + ".tmp",
                    maxcount=self.maxcount,
                    start_shard=self.start_shard + len(self.finished),
                    post=self._post,
                    verbose=0,
                    compress=self.compress,
                    mtime=MTIME,
                    encoder=False,  # encoded above, for the checksum
                )
            self._writer.write(sample)
            self._keys.append(sample["__key__"])
            if self._writer.count >= self.maxcount:
                self._writer.finish()  # rename a full shard now, not when the next sample arrives (minutes later)
        except OSError as e:
            self._abandon(e)

    def _post(self, tmp_name: str) -> None:
        tmp = Path(tmp_name)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        final = tmp.with_name(tmp.name.removesuffix(".tmp"))
        os.replace(tmp, final)
        self.finished.append(final)
        keys, self._keys = self._keys, []
        if self.on_shard is not None:
            self.on_shard(final, keys)

    def _abandon(self, error: OSError) -> None:
        """Drop the open shard after a failed write: close its file without finishing it, delete it, raise."""
        writer, self._writer = self._writer, None
        tmp = Path(self.pattern % (self.start_shard + len(self.finished)) + ".tmp")
        if writer is not None:
            tmp = Path(writer.fname) if writer.fname else tmp
            stream, writer.tarstream = writer.tarstream, None  # so that nothing renames it
            if stream is not None:
                for file in (stream.tarstream.fileobj, stream.own_fileobj):  # the tar stream, then the file under it
                    try:
                        if file is not None:
                            file.close()
                    except (OSError, ValueError):
                        pass  # the buffered rest cannot be written either
        self._keys = []
        tmp.unlink(missing_ok=True)
        raise write_failure(tmp, error, KEPT) from error

    def close(self) -> None:
        """Finish the open shard (if any) and rename it into place."""
        if self._writer is not None:
            try:
                self._writer.close()
                self._writer = None
            except OSError as e:
                self._abandon(e)

    def __enter__(self) -> AtomicShardWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def rewrite_shard(path: Path, members: Iterable[tuple[str, bytes]]) -> None:
    """Replace the finished shard ``path`` by one holding ``members`` (``(name, data)``), atomically.

    Written as ``<name>.tmp`` first (a killed rewrite leaves the old shard and a partial one that the
    next run removes), then renamed over the old shard.
    """
    tmp = path.with_name(path.name + ".tmp")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), MTIME, 0o444
            tf.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    if path.name.endswith(".gz"):
        import gzip

        data = gzip.compress(data, mtime=0)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_failure(tmp, e, f"{path} is unchanged") from e
