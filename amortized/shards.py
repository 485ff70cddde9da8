"""The mask-target shard format: writer and reader side by side (no Lightning here).

A shard directory holds WebDataset tar shards named ``masks-<config hash>-r<rank>-<index>.tar[.gz]`` and a
``manifest.json``. One sample per explained image::

    __key__      image stem, dots replaced ("n01440764_tench")
    png          the preprocessed image, lossless (uint8, H x W x 3)
    mask.npy     the final CartoonX mask, float16, flat (k,) in MaskLayout order
    curves.npy   per-step curves, float32 (3, N): rows loss, distortion, sparsity (CURVE_NAMES)
    cls          the image's true ImageNet class index (-1 when unknown)
    meta.json    wnid, target/predicted class and probabilities, classifier, full preset, seed, layout,
                 config hash, final loss/distortion/sparsity, steps, package version

Shards are written as ``<name>.tmp`` and renamed when complete, so a finished name always means a
complete shard; a killed run loses only the shard it had open. Every sample carries all fields.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

FORMAT = "fastcartoonx-masks"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FIELDS = ("cls", "curves.npy", "mask.npy", "meta.json", "png")
CURVE_NAMES = ("loss", "distortion", "sparsity")
MTIME = 1_700_000_000  # pinned member mtime: identical samples give identical tar bytes
_SHARD_RE = re.compile(r"^masks-(?P<hash>[0-9a-f]+)-r(?P<rank>\d+)-(?P<index>\d{6})\.tar(?P<gz>\.gz)?$")
_TMP_RE = re.compile(r"^masks-[0-9a-f]+-r\d+-\d{6}\.tar(\.gz)?\.tmp$")


class CorruptShardError(ValueError):
    """A shard that cannot be read completely; the message names the file."""


class ConfigMismatchError(ValueError):
    """A shard directory holding targets made with a different configuration."""


# -- configuration --------------------------------------------------------------------------------------
def config_hash(config: dict[str, Any]) -> str:
    """Short stable hash of a JSON-serializable target configuration (10 hex digits)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences ``"preset.steps: 10 -> 300"`` between two nested configurations."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<missing>"), new.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


# -- names ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardName:
    path: Path
    config_hash: str
    rank: int
    index: int


def parse_shard_name(path: str | Path) -> ShardName | None:
    """Parse a finished shard's file name; ``None`` if it is not one."""
    path = Path(path)
    m = _SHARD_RE.match(path.name)
    if m is None:
        return None
    return ShardName(path, m["hash"], int(m["rank"]), int(m["index"]))


def shard_pattern(out_dir: str | Path, chash: str, rank: int, compress: bool = True) -> str:
    """``ShardWriter`` pattern of finished names for one rank, e.g. ``DIR/masks-<hash>-r0-%06d.tar.gz``."""
    return str(Path(out_dir) / f"masks-{chash}-r{rank}-%06d.tar{'.gz' if compress else ''}")


def list_shards(shard_dir: str | Path, chash: str | None = None) -> list[Path]:
    """Finished shards in a directory (optionally of one config hash), sorted by name."""
    shard_dir = Path(shard_dir)
    if not shard_dir.is_dir():
        raise FileNotFoundError(f"{shard_dir}: no such shard directory")
    names = (parse_shard_name(p) for p in shard_dir.iterdir())
    return sorted(n.path for n in names if n is not None and (chash is None or n.config_hash == chash))


def next_shard_index(shard_dir: str | Path, chash: str, rank: int) -> int:
    """The index a new shard of (hash, rank) gets: one past the largest finished one."""
    names = [parse_shard_name(p) for p in list_shards(shard_dir, chash)]
    return 1 + max((n.index for n in names if n and n.rank == rank), default=-1)


def remove_partial_shards(shard_dir: str | Path) -> list[Path]:
    """Delete ``*.tmp`` shards left by killed runs; returns what was removed."""
    removed = []
    for p in Path(shard_dir).iterdir():
        if _TMP_RE.match(p.name):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


# -- writing -------------------------------------------------------------------------------------------
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
        raise ValueError(f"sample key {key!r} must be non-empty and contain no dots")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{key}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if mask.ndim != 1:
        raise ValueError(f"{key}: mask must be flat (k,), got shape {mask.shape}")
    if curves.ndim != 2 or curves.shape[0] != len(CURVE_NAMES):
        raise ValueError(f"{key}: curves must be ({len(CURVE_NAMES)}, N), got shape {curves.shape}")
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
    called after each rename.

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
            raise ValueError(f"shard size must be a positive number of samples, got {maxcount}")
        self.pattern = pattern
        self.maxcount = maxcount
        self.start_shard = start_shard
        self.on_shard = on_shard
        self.compress = pattern.endswith(".gz")
        self.finished: list[Path] = []
        self._writer = None
        self._keys: list[str] = []

    def write(self, sample: dict[str, Any]) -> None:
        import webdataset as wds

        if self._writer is None:
            self._writer = wds.ShardWriter(
                self.pattern + ".tmp",
                maxcount=self.maxcount,
                start_shard=self.start_shard + len(self.finished),
                post=self._post,
                verbose=0,
                compress=self.compress,
                mtime=MTIME,
            )
        self._writer.write(sample)
        self._keys.append(sample["__key__"])
        if self._writer.count >= self.maxcount:
            self._writer.finish()  # rename a full shard now, not when the next sample arrives (minutes later)

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

    def close(self) -> None:
        """Finish the open shard (if any) and rename it into place."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def __enter__(self) -> AtomicShardWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- reading: integrity ----------------------------------------------------------------------------------
def _tar_bytes(path: Path) -> bytes:
    """The uncompressed tar bytes of a shard; raises :class:`CorruptShardError` naming it."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.name.endswith(".gz") else data
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise CorruptShardError(f"{path}: corrupt or truncated shard ({e}); delete it and rerun generate") from None


def _members(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """``(key, field, data)`` for each member of a shard, checking it is complete."""
    data = _tar_bytes(path)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for m in tf:
                if m.offset_data + m.size > len(data):
                    raise CorruptShardError(f"{path}: truncated inside member {m.name}; delete it and rerun generate")
                key, _, field = m.name.partition(".")
                f = tf.extractfile(m)
                yield key, field, f.read() if f is not None else b""
            end = tf.offset  # a closed tar ends with two zero blocks; a cut-off one does not
            if data[end : end + 1024] != bytes(1024):
                raise CorruptShardError(f"{path}: truncated (no end-of-archive marker); delete it and rerun generate")
    except tarfile.TarError as e:
        raise CorruptShardError(f"{path}: corrupt or truncated shard ({e}); delete it and rerun generate") from None


def shard_keys(path: str | Path) -> list[str]:
    """Keys of a finished shard, in order, after checking that every sample has every field.

    Raises:
        CorruptShardError: unreadable/truncated file, a sample missing fields, or a duplicate key.
    """
    path = Path(path)
    fields: dict[str, set[str]] = {}
    for key, field, _ in _members(path):
        fields.setdefault(key, set()).add(field)
    for key, have in fields.items():
        missing = set(FIELDS) - have
        if missing:
            raise CorruptShardError(f"{path}: sample {key!r} lacks {sorted(missing)}; delete the shard and rerun generate")
    return list(fields)


def read_samples(path: str | Path) -> Iterator[dict[str, Any]]:
    """Decode every sample of one shard (for checks and tests): key, image, mask, curves, label, meta."""
    path = Path(path)
    current: dict[str, bytes] = {}
    key = None
    for k, field, data in _members(path):
        if key is not None and k != key:
            yield _decode(path, key, current)
            current = {}
        key = k
        if field in current:
            raise CorruptShardError(f"{path}: duplicate member {k}.{field}")
        current[field] = data
    if key is not None:
        yield _decode(path, key, current)


def _decode(path: Path, key: str, raw: dict[str, bytes]) -> dict[str, Any]:
    from PIL import Image

    missing = set(FIELDS) - set(raw)
    if missing:
        raise CorruptShardError(f"{path}: sample {key!r} lacks {sorted(missing)}")
    try:
        with Image.open(io.BytesIO(raw["png"])) as img:
            image = np.array(img.convert("RGB"))
        return {
            "key": key,
            "image": image,
            "mask": np.load(io.BytesIO(raw["mask.npy"]), allow_pickle=False),
            "curves": np.load(io.BytesIO(raw["curves.npy"]), allow_pickle=False),
            "label": int(raw["cls"].decode("ascii")),
            "meta": json.loads(raw["meta.json"]),
        }
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CorruptShardError(f"{path}: sample {key!r} cannot be decoded ({e})") from None


# -- manifest --------------------------------------------------------------------------------------------
def read_manifest(shard_dir: str | Path) -> dict[str, Any] | None:
    path = Path(shard_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def write_json_atomic(path: str | Path, data: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


_KEY_CACHE: dict[tuple[str, int, int], tuple[str, ...]] = {}


def cached_shard_keys(path: Path) -> tuple[str, ...]:
    """:func:`shard_keys`, cached by (path, size, mtime) within this process."""
    st = path.stat()
    sig = (str(path), st.st_size, st.st_mtime_ns)
    if sig not in _KEY_CACHE:
        _KEY_CACHE[sig] = tuple(shard_keys(path))
    return _KEY_CACHE[sig]


def build_manifest(
    shard_dir: str | Path, config: dict[str, Any], chash: str, failed: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The manifest of a shard directory: config, hash, finished shards with counts, failed images."""
    shards = []
    for p in list_shards(shard_dir, chash):
        n = parse_shard_name(p)
        shards.append({"name": p.name, "rank": n.rank, "index": n.index, "count": len(cached_shard_keys(p))})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config_hash": chash,
        "config": config,
        "fields": list(FIELDS),
        "curve_names": list(CURVE_NAMES),
        "num_shards": len(shards),
        "num_samples": sum(s["count"] for s in shards),
        "shards": shards,
        "num_failed": len(failed or []),
        "failed": failed or [],
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# -- reading: a shard directory as a dataset -------------------------------------------------------------
@dataclass(frozen=True)
class ShardIndex:
    """A checked shard directory: its manifest and, per finished shard, the keys it holds (in order)."""

    directory: Path
    manifest: dict[str, Any]
    shards: tuple[tuple[Path, tuple[str, ...]], ...]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    @property
    def config_hash(self) -> str:
        return self.manifest["config_hash"]

    @property
    def num_samples(self) -> int:
        return sum(len(keys) for _, keys in self.shards)

    def layout(self):
        """The :class:`rde.MaskLayout` of the masks (from the stored preset)."""
        from rde import MaskLayout, WaveletConfig

        preset = self.config["preset"]
        size = preset["image_size"]
        layout = MaskLayout.for_wavelet(size, size, WaveletConfig(**preset["wavelet"]))
        if layout.signature != self.config["layout"]:
            raise ValueError(f"{self.directory}: manifest layout {self.config['layout']} != {layout.signature}")
        return layout

    def counts(self, split: str = "all", val_fraction: float = 1 / 8) -> list[int]:
        """Samples of ``split`` in each shard."""
        from amortized.datasets import in_split

        return [sum(in_split(k, split, val_fraction) for k in keys) for _, keys in self.shards]


def open_shard_dir(shard_dir: str | Path) -> ShardIndex:
    """Read and check a shard directory written by ``cartoonx generate``.

    Raises:
        FileNotFoundError: no directory or no manifest.
        ConfigMismatchError: shards of several configurations, or of another than the manifest's.
        CorruptShardError: an unreadable or incomplete shard, or a key in two shards.
    """
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir) if shard_dir.is_dir() else None
    if manifest is None:
        raise FileNotFoundError(f"{shard_dir}: not a shard directory (no {MANIFEST}); create it with cartoonx generate")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{shard_dir}/{MANIFEST}: format {manifest.get('format')!r} v{manifest.get('format_version')}, "
                         f"expected {FORMAT!r} v{FORMAT_VERSION}")
    chash = manifest["config_hash"]
    others = sorted({parse_shard_name(p).config_hash for p in list_shards(shard_dir)} - {chash})
    if others:
        raise ConfigMismatchError(
            f"{shard_dir}: holds shards of configuration(s) {', '.join(others)} besides the manifest's {chash}; "
            "one directory must hold one configuration"
        )
    shards, seen = [], {}
    for path in list_shards(shard_dir, chash):
        keys = cached_shard_keys(path)
        for k in keys:
            if k in seen:
                raise CorruptShardError(f"{path}: key {k!r} also in {seen[k].name}")
            seen[k] = path
        shards.append((path, keys))
    return ShardIndex(shard_dir, manifest, tuple(shards))


@dataclass(frozen=True)
class SplitPlan:
    """How one rank reads its part: by whole shards or by every S-th sample, and how many batches each
    of its loader workers yields (``None``: all it has, partial last batch included)."""

    mode: str  # "shards" or "samples"
    slots: int  # world_size * num_workers
    worker_batches: tuple[int, ...] | None
    num_batches: int


def plan_split(
    counts: list[int],
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    mode: str = "auto",
    equalize: bool = True,
) -> SplitPlan:
    """Decide how ranks and workers share shards with per-shard sample ``counts``.

    ``shards`` mode gives rank r the shards ``[r::world]`` and its worker w ``[w::workers]`` of those
    (webdataset's ``split_by_node``/``split_by_worker``); it needs at least one shard per slot.
    ``samples`` mode has every slot read all shards and keep every S-th sample (S = slots); it works
    with any number of shards. Either way no sample reaches two slots. With ``equalize`` (training)
    every rank yields the same number of full batches, so DDP ranks stay in step: surplus batches are
    dropped, never repeated. ``auto`` uses shards unless that would drop over 10% more data.
    """
    if mode not in ("auto", "shards", "samples"):
        raise ValueError(f"split mode must be auto, shards or samples, got {mode!r}")
    workers = max(1, num_workers)
    slots = world_size * workers
    n = sum(counts)

    def per_slot(m: str) -> list[list[int]]:  # [rank][worker] -> samples
        if m == "samples":
            return [[n // slots + (r * workers + w < n % slots) for w in range(workers)] for r in range(world_size)]
        return [[sum(counts[r::world_size][w::workers]) for w in range(workers)] for r in range(world_size)]

    def usable(m: str) -> int:
        return min(sum(c // batch_size for c in row) for row in per_slot(m))

    if mode == "auto":
        mode = "shards" if len(counts) >= slots and usable("shards") >= 0.9 * usable("samples") else "samples"
    elif mode == "shards" and len(counts) < slots:
        raise ValueError(
            f"{len(counts)} shard(s) cannot be split over {world_size} rank(s) x {workers} worker(s) "
            "without duplication; use split mode 'samples' or 'auto'"
        )
    mine = per_slot(mode)[rank]
    if not equalize:
        return SplitPlan(mode, slots, None, sum(-(-c // batch_size) for c in mine))
    caps = [c // batch_size for c in mine]
    excess = sum(caps) - usable(mode)
    while excess > 0:
        caps[caps.index(max(caps))] -= 1
        excess -= 1
    return SplitPlan(mode, slots, tuple(caps), sum(caps))


def _split_samples(src: Iterator[Any]) -> Iterator[Any]:
    """Keep every S-th sample for this (rank, worker) slot, S = world_size * num_workers."""
    import webdataset as wds

    rank, world, worker, workers = wds.utils.pytorch_worker_info()
    slots = world * workers
    slot = rank * workers + worker
    for i, sample in enumerate(src):
        if i % slots == slot:
            yield sample


def _cap_batches(src: Iterator[Any], worker_batches: tuple[int, ...]) -> Iterator[Any]:
    import itertools

    import webdataset as wds

    _, _, worker, _ = wds.utils.pytorch_worker_info()
    yield from itertools.islice(src, worker_batches[worker])


_READ_FIELDS = ("__key__", "__url__", "png", "mask.npy", "cls", "meta.json")


def _keep_fields(sample: dict[str, Any]) -> dict[str, Any]:
    return {f: sample[f] for f in _READ_FIELDS if f in sample}


def _key_in_split(sample: dict[str, Any], split: str, fraction: float) -> bool:
    from amortized.datasets import in_split

    return in_split(sample["__key__"], split, fraction)


def _training_sample(sample: dict[str, Any], num_entries: int) -> dict[str, Any]:
    import torch

    mask = sample["mask.npy"]
    if mask.shape != (num_entries,):
        raise CorruptShardError(
            f"{sample.get('__url__')}: sample {sample['__key__']!r} has a mask of shape {mask.shape}, "
            f"the layout has k={num_entries}"
        )
    meta = sample["meta.json"]
    return {
        "key": sample["__key__"],
        "image": sample["png"],
        "mask": torch.from_numpy(mask.astype(np.float32)),
        "target": torch.tensor(meta["target"], dtype=torch.long),
        "label": torch.tensor(int(sample["cls"]), dtype=torch.long),
        "final_loss": torch.tensor(meta["final"]["loss"], dtype=torch.float32),
    }


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    batch = {k: torch.stack([s[k] for s in samples]) for k in ("image", "mask", "target", "label", "final_loss")}
    batch["key"] = [s["key"] for s in samples]
    return batch


def mask_pipeline(
    index: ShardIndex,
    split: str = "train",
    val_fraction: float = 1 / 8,
    batch_size: int = 16,
    shuffle: bool = True,
    seed: int = 0,
    shuffle_buffer: int = 256,
    plan: SplitPlan | None = None,
):
    """A ``webdataset.DataPipeline`` of batches from a shard directory (use with ``DataLoader(batch_size=None)``).

    Batches are dicts: ``image`` (B, 3, H, W) float in [0, 1], ``mask`` (B, k) float32, ``target`` (B,)
    the class the mask explains, ``label`` (B,) true class (-1 unknown), ``final_loss`` (B,), ``key`` list.
    ``plan`` (from :func:`plan_split`) fixes how ranks and workers share the data; default one process.
    Shuffling is seeded (``seed`` + epoch, counted per pass): reproducible, different every epoch.
    """
    import webdataset as wds

    if plan is None:
        plan = plan_split(index.counts(split, val_fraction), batch_size, equalize=False)
    k = index.layout().num_entries
    urls = [str(p) for p, _ in index.shards]
    if not urls:
        raise ValueError(f"{index.directory}: no finished shards to read")
    stages: list[Any] = [wds.SimpleShardList(urls)]
    if plan.mode == "shards":
        stages += [wds.split_by_node, wds.split_by_worker]
    if shuffle:
        stages.append(wds.detshuffle(bufsize=len(urls), initial=len(urls), seed=seed))
    stages += [wds.tarfile_to_samples(), wds.select(functools.partial(_key_in_split, split=split, fraction=val_fraction))]
    if plan.mode == "samples":
        stages.append(wds.pipelinefilter(_split_samples)())
    if shuffle:
        stages.append(wds.detshuffle(bufsize=shuffle_buffer, initial=min(shuffle_buffer, 64), seed=seed + 1))
    stages += [
        wds.map(_keep_fields),  # only our fields reach the decoder (no pickle or torch.load by extension)
        wds.decode("torchrgb"),
        wds.map(functools.partial(_training_sample, num_entries=k)),
        wds.batched(batch_size, collation_fn=_collate, partial=plan.worker_batches is None),
    ]
    if plan.worker_batches is not None:
        stages.append(wds.pipelinefilter(_cap_batches)(plan.worker_batches))
    return wds.DataPipeline(*stages).with_length(plan.num_batches, silent=True)


def verify_shards(shard_dir: str | Path) -> tuple[ShardIndex | None, list[str]]:
    """Decode every sample of a shard directory and check it against the manifest's configuration.

    Checks: every shard readable and complete; one configuration; keys unique; per sample the mask is
    float16 of length k in [0, 1], the image ``size x size x 3``, the curves ``(3, steps)`` and finite,
    and the metadata's config hash and layout those of the manifest. Returns ``(index, problems)``;
    ``index`` is ``None`` when the directory itself cannot be opened.
    """
    try:
        index = open_shard_dir(shard_dir)
    except (CorruptShardError, ConfigMismatchError) as e:
        return None, [str(e)]
    problems: list[str] = []
    k = index.layout().num_entries
    size = index.config["preset"]["image_size"]
    for path, _ in index.shards:
        try:
            for s in read_samples(path):
                where = f"{path.name}: {s['key']}"
                mask, curves, meta = s["mask"], s["curves"], s["meta"]
                if mask.dtype != np.float16 or mask.shape != (k,):
                    problems.append(f"{where}: mask {mask.dtype} {mask.shape}, expected float16 ({k},)")
                elif not np.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
                    problems.append(f"{where}: mask values outside [0, 1] or not finite")
                if s["image"].shape != (size, size, 3):
                    problems.append(f"{where}: image {s['image'].shape}, expected ({size}, {size}, 3)")
                if curves.shape != (len(CURVE_NAMES), meta.get("steps")) or not np.isfinite(curves).all():
                    problems.append(f"{where}: curves {curves.shape} (steps {meta.get('steps')}) or not finite")
                if meta.get("config_hash") != index.config_hash or meta.get("layout") != index.config["layout"]:
                    problems.append(f"{where}: metadata config {meta.get('config_hash')} / {meta.get('layout')} "
                                    f"differs from the manifest's {index.config_hash} / {index.config['layout']}")
                if s["label"] != meta.get("label"):
                    problems.append(f"{where}: cls {s['label']} != meta label {meta.get('label')}")
        except CorruptShardError as e:
            problems.append(str(e))
    listed = {s["name"]: s["count"] for s in index.manifest.get("shards", [])}
    actual = {p.name: len(keys) for p, keys in index.shards}
    if listed != actual:
        problems.append(f"{index.directory}/{MANIFEST} is stale ({sum(listed.values())} samples listed, "
                        f"{sum(actual.values())} in shards); rerun generate to refresh it")
    return index, problems
