"""The mask-target shard format: everything on disk is read and written here (no Lightning here).

A shard directory holds WebDataset tar shards named ``masks-<config hash>-r<rank>-<index>.tar[.gz]``,
a ``manifest.json`` and per-rank failure logs ``failed-r<rank>.jsonl``. One sample per explained image::

    __key__      image stem, dots replaced ("n01440764_tench")
    png          the preprocessed image, lossless (uint8, H x W x 3)
    mask.npy     the final CartoonX mask, float16, flat (k,) in MaskLayout order
    curves.npy   per-step curves, float32 (3, N): rows loss, distortion, sparsity (CURVE_NAMES)
    cls          the image's true ImageNet class index (-1 when unknown)
    sha256       the checksum of the fields above (:func:`sample_checksum`; absent in older shards)
    meta.json    wnid, target/predicted class and probabilities, classifier, full preset, seed, layout,
                 config hash, final loss/distortion/sparsity, steps, package version, provenance
                 (device, dtype, precision, torch and package versions; absent in older shards)

Shards are written as ``<name>.tmp`` and renamed when complete and synced, so a finished name always means a
complete shard; a killed run or a full disk loses only the shard it had open. Every sample carries a checksum
(``sha256``: gzip's CRC covers only compressed shards) and is checked when read (:func:`sample_problems`); a bad
one is named and skipped, and dropped on resume so it is recomputed. A shard that cannot be read at all is moved
aside on resume (``*.corrupt``, listed in the manifest) and its samples are recomputed.

Modules: :mod:`.naming` (constants, config hash, file names), :mod:`.writer`, :mod:`.reader` (integrity,
decoding, sample checks), :mod:`.manifest` (manifest, failure records, provenance), :mod:`.directory`
(open for reading, verify, open for writing).
"""

from amortized.shards.directory import (
    DEFAULT_SHARD_DIR,
    ShardIndex,
    drop_bad_samples,
    move_aside,
    open_for_writing,
    open_shard_dir,
    verify_shards,
)
from amortized.shards.manifest import (
    append_failures,
    build_manifest,
    load_failures,
    package_version,
    provenance,
    read_manifest,
    write_json_atomic,
    write_manifest,
)
from amortized.shards.naming import (
    CHECKSUM,
    CORRUPT_SUFFIX,
    CURVE_NAMES,
    FIELDS,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    ConfigMismatchError,
    CorruptShardError,
    ShardName,
    config_diff,
    config_hash,
    config_hashes,
    hashed_preset,
    failure_log,
    failure_logs,
    is_partial_shard,
    list_shards,
    next_shard_index,
    parse_shard_name,
    remove_partial_shards,
    sample_checksum,
    shard_pattern,
)
from amortized.shards.reader import (
    NUM_CLASSES,
    SampleError,
    SampleSpec,
    cached_shard_keys,
    check_sample,
    checked_samples,
    decode_sample,
    raw_samples,
    read_samples,
    sample_problems,
    shard_keys,
)
from amortized.shards.writer import MTIME, AtomicShardWriter, make_sample, rewrite_shard

__all__ = [
    "AtomicShardWriter", "CHECKSUM", "CORRUPT_SUFFIX", "CURVE_NAMES", "ConfigMismatchError", "CorruptShardError",
    "DEFAULT_SHARD_DIR", "FIELDS", "FORMAT", "FORMAT_VERSION", "MANIFEST", "MTIME", "NUM_CLASSES", "SampleError", "SampleSpec",
    "ShardIndex", "ShardName", "append_failures", "build_manifest", "cached_shard_keys", 
    "check_sample", "checked_samples", "config_diff", "config_hash", "config_hashes", "decode_sample", "hashed_preset",
    "drop_bad_samples", "failure_log", "failure_logs", "is_partial_shard", "list_shards", "load_failures", "make_sample", "move_aside",
    "next_shard_index", "open_for_writing", "open_shard_dir", "package_version", "parse_shard_name",
    "provenance", "raw_samples", "read_manifest", "read_samples", "remove_partial_shards", "rewrite_shard",
    "sample_checksum", "sample_problems", "shard_keys", "shard_pattern", "verify_shards", "write_json_atomic", "write_manifest",
]
