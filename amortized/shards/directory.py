"""A shard directory as a whole: open it for reading (:class:`ShardIndex`), verify it, open it for writing."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amortized.shards.manifest import read_manifest, write_manifest
from amortized.shards.naming import (
    CORRUPT_SUFFIX,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    ConfigMismatchError,
    CorruptShardError,
    config_diff,
    config_hash,
    config_hashes,
    hashed_preset,
    list_shards,
    remove_partial_shards,
)
from amortized.shards.reader import SampleSpec, cached_shard_keys, checked_samples, decode_sample, raw_samples
from amortized.shards.writer import rewrite_shard
from rde.errors import InputError
from rde.io import check_output_dir

log = logging.getLogger(__name__)

# The exact targets of the shared ImageNet sample (EfficientNet-Lite0, cpu preset: 800 photos), relative to the
# checkout's folder: what training reads when no --data.shards is given, and the benchmarks by default.
DEFAULT_SHARD_DIR = "../shared/targets/efficientnet_lite0-cpu"


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
            raise InputError(f"{self.directory}: manifest layout {self.config['layout']} != {layout.signature}")
        return layout

    def counts(self, split: str = "all", val_fraction: float = 1 / 8) -> list[int]:
        """Samples of ``split`` in each shard."""
        from amortized.datasets import in_split

        return [sum(in_split(k, split, val_fraction) for k in keys) for _, keys in self.shards]


def _read_checked_manifest(shard_dir: Path) -> dict[str, Any]:
    manifest = read_manifest(shard_dir) if shard_dir.is_dir() else None
    if manifest is None:
        raise FileNotFoundError(f"{shard_dir}: not a shard directory (no {MANIFEST}); create it with cartoonx generate")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{shard_dir}/{MANIFEST}: format {manifest.get('format')!r} v{manifest.get('format_version')}, "
                         f"expected {FORMAT!r} v{FORMAT_VERSION}")
    return manifest


def _mixed(shard_dir: Path, chash: str) -> str | None:
    others = sorted(config_hashes(shard_dir) - {chash})
    if not others:
        return None
    return (f"{shard_dir}: holds shards of configuration(s) {', '.join(others)} besides the manifest's {chash}; "
            "one directory must hold one configuration")


def open_shard_dir(shard_dir: str | Path) -> ShardIndex:
    """Read and check a shard directory written by ``cartoonx generate`` (names and tar integrity; the
    samples themselves are checked as they are read).

    Raises:
        FileNotFoundError: no directory or no manifest.
        ConfigMismatchError: shards of several configurations, or of another than the manifest's.
        CorruptShardError: an unreadable or incomplete shard, or a key in two shards.
    """
    shard_dir = Path(shard_dir)
    manifest = _read_checked_manifest(shard_dir)
    chash = manifest["config_hash"]
    mixed = _mixed(shard_dir, chash)
    if mixed:
        raise ConfigMismatchError(mixed)
    shards, seen = [], {}
    for path in list_shards(shard_dir, chash):
        keys = cached_shard_keys(path)
        for k in keys:
            if k in seen:
                raise CorruptShardError(f"{path}: key {k!r} also in {seen[k].name}")
            seen[k] = path
        shards.append((path, keys))
    return ShardIndex(shard_dir, manifest, tuple(shards))


def _config_from_samples(shard_dir: Path) -> tuple[dict[str, Any], str] | None:
    """A manifest's ``config`` and hash rebuilt from the first decodable sample's metadata, for a directory whose
    manifest is gone; ``None`` when no shard holds a usable sample (or the shards are of several configurations)."""
    hashes = config_hashes(shard_dir)
    if len(hashes) != 1:
        return None
    (chash,) = hashes
    for path in list_shards(shard_dir, chash):
        try:
            for key, raw in raw_samples(path):
                try:
                    meta = decode_sample(key, raw)["meta"]
                    preset = hashed_preset(meta["preset"])
                    config = {"format_version": FORMAT_VERSION, "method": meta.get("method", "cartoonx"),
                              "classifier": meta["classifier"], "preset": preset, "init": meta.get("init", "ones"),
                              "target": "predicted", "seed": meta.get("base_seed"), "layout": meta["layout"],
                              "num_entries": int(meta["num_entries"])}
                    return config, chash
                except (InputError, KeyError, TypeError, ValueError, AttributeError):
                    continue
        except CorruptShardError:
            continue
    return None


def verify_shards(shard_dir: str | Path) -> tuple[ShardIndex, list[str]]:
    """Decode and check every sample of a shard directory, going on past every problem.

    Checks: one configuration; every shard readable and complete; keys unique; every sample passes
    :func:`~amortized.shards.reader.sample_problems` against the manifest's configuration; the manifest
    lists the shards there are. Without a manifest the samples are checked against the configuration their
    own metadata records, and the missing manifest is one of the problems. Returns the index of the readable
    shards and one line per problem, each once (``<shard>: <key>: <reason>`` for a sample).

    Raises:
        FileNotFoundError / ValueError: not a shard directory (no manifest and no readable sample; an
            unreadable manifest).
    """
    shard_dir = Path(shard_dir)
    problems = []
    try:
        manifest = _read_checked_manifest(shard_dir)
    except FileNotFoundError:
        found = _config_from_samples(shard_dir) if shard_dir.is_dir() else None
        if found is None:
            raise
        config, chash = found
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "config_hash": chash, "config": config}
        problems.append(f"{shard_dir}/{MANIFEST} is missing; rerun generate to rebuild it "
                        "(the samples were checked against their own metadata)")
    chash = manifest["config_hash"]
    problems += [m] if (m := _mixed(shard_dir, chash)) else []
    spec = SampleSpec.from_config(manifest["config"], chash)
    good, corrupt, seen = [], set(), {}
    for path in list_shards(shard_dir, chash):
        keys = []
        try:
            for key, _, bad in checked_samples(path, spec):
                keys.append(key)
                problems += [f"{path.name}: {key}: {p}" for p in bad]
                if key in seen:
                    problems.append(f"{path.name}: {key}: key also in {seen[key].name}")
                seen.setdefault(key, path)
        except CorruptShardError as e:
            problems.append(str(e))
            corrupt.add(path.name)
            continue
        good.append((path, tuple(keys)))
    index = ShardIndex(shard_dir, manifest, tuple(good))
    index.layout()  # the manifest's layout must be the one its preset gives
    if "shards" in manifest:
        listed = {s["name"]: s["count"] for s in manifest["shards"] if s["name"] not in corrupt}
        actual = {p.name: len(keys) for p, keys in good}
        if listed != actual:
            problems.append(f"{shard_dir}/{MANIFEST} is stale ({sum(listed.values())} samples listed, "
                            f"{sum(actual.values())} in shards); rerun generate to refresh it")
    return index, list(dict.fromkeys(problems))


def drop_bad_samples(path: Path, spec: SampleSpec) -> tuple[str, ...]:
    """Check every sample of a finished shard; rewrite it without the bad ones (each named in one log
    line) so that they are recomputed. Returns the keys that remain."""
    keep, bad = [], 0
    for key, raw, problems in checked_samples(path, spec):
        if problems:
            log.warning("%s: %s: %s; dropped, it will be recomputed", path, key, "; ".join(problems))
            bad += 1
        else:
            keep.append((key, raw))
    if bad and keep:
        rewrite_shard(path, [(f"{key}.{field}", data) for key, raw in keep for field, data in raw.items()])
    elif bad:
        path.unlink()
    return tuple(key for key, _ in keep)


def open_for_writing(out_dir: str | Path, config: dict[str, Any]) -> set[str]:
    """Check and tidy a shard directory before generating into it; returns the keys already finished.

    Creates the directory, refuses one holding shards of another configuration, deletes partial
    (``*.tmp``) shards of killed runs, checks every finished sample (bad ones are dropped from their
    shard so they are recomputed), moves a shard that cannot be read at all (truncated, failing its CRC)
    aside as ``*.corrupt`` (recorded in the manifest's ``corrupt``; its samples are recomputed) and
    rewrites the manifest.

    Raises:
        OutputDirError: ``out_dir`` is a file or not writable.
        ConfigMismatchError: finished shards of another configuration are present (the message shows how).
        CorruptShardError: two finished shards hold one key.
    """
    out_dir = check_output_dir(out_dir, create=True)
    chash = config_hash(config)
    others = sorted(config_hashes(out_dir) - {chash})
    if others:
        try:
            manifest = read_manifest(out_dir) or {}
        except ValueError:
            manifest = {}
        old = manifest.get("config") if manifest.get("config_hash") in others else None
        diff = "; ".join(config_diff(old, config)) if old else f"see its {MANIFEST}"
        raise ConfigMismatchError(
            f"{out_dir} already holds shards of another configuration (config hash {', '.join(others)}, "
            f"this run {chash}): {diff}. Use another output directory, or rerun with the original settings."
        )
    removed = remove_partial_shards(out_dir)
    if removed:
        log.warning("%s: removed %d partial shard(s) left by an interrupted run", out_dir, len(removed))
    spec = SampleSpec.from_config(config, chash)
    done: dict[str, Path] = {}
    moved = []
    for path in list_shards(out_dir, chash):
        try:
            keys = drop_bad_samples(path, spec)
        except CorruptShardError as e:
            moved.append(move_aside(path, str(e)))
            continue
        dup = sorted(set(keys) & set(done))
        if dup:
            raise CorruptShardError(f"{path}: keys {dup[:3]} also occur in {done[dup[0]].name}; remove one of them")
        done.update(dict.fromkeys(keys, path))
    write_manifest(out_dir, config, chash, corrupt=moved)
    return set(done)


def move_aside(path: Path, error: str) -> dict[str, Any]:
    """Rename a damaged shard to ``<name>.corrupt`` (``<name>.<n>.corrupt`` if taken) so that its samples are
    recomputed; logs one line and returns the manifest's record of it."""
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{n}{CORRUPT_SUFFIX}")
    os.replace(path, target)
    log.warning("%s; moved aside to %s, its samples will be recomputed", error, target.name)
    return {"shard": path.name, "moved_to": target.name, "error": error, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
