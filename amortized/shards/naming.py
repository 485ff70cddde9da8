"""Names on disk: the format constants, the configuration hash, shard and failure-log file names."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rde.errors import InputError

FORMAT = "fastcartoonx-masks"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FIELDS = ("cls", "curves.npy", "mask.npy", "meta.json", "png")
CURVE_NAMES = ("loss", "distortion", "sparsity")
CHECKSUM = "sha256"  # optional member: the sample's checksum (samples written before it have none)
CORRUPT_SUFFIX = ".corrupt"  # a damaged shard moved aside on resume
_SHARD_RE = re.compile(r"^masks-(?P<hash>[0-9a-f]+)-r(?P<rank>\d+)-(?P<index>\d{6})\.tar(?P<gz>\.gz)?$")
_TMP_RE = re.compile(r"^masks-[0-9a-f]+-r\d+-\d{6}\.tar(\.gz)?\.tmp$")
_FAILURE_GLOB = "failed-r*.jsonl"


class CorruptShardError(InputError):
    """A shard that cannot be read completely; the message names the file."""


class ConfigMismatchError(InputError):
    """A shard directory holding targets made with a different configuration."""


def sample_checksum(raw: dict[str, bytes]) -> str:
    """SHA-256 over a sample's fields (name, length and bytes of each, in :data:`FIELDS` order): gzip's CRC covers a
    compressed shard, this covers every shard, so that an in-range bit flip (a mask value, the target) is found."""
    h = hashlib.sha256()
    for field in FIELDS:
        data = raw.get(field, b"")
        h.update(f"{field}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()


# -- configuration --------------------------------------------------------------------------------------
def hashed_preset(preset: dict[str, Any]) -> dict[str, Any]:
    """The fields of a preset (``RDEConfig.to_dict()``) that a target configuration records and hashes: not its
    name (a label) nor ``samples_per_call`` (memory, not the result); float32 precision is left out, so targets
    keep the hash they had before precision existed."""
    params = {k: v for k, v in preset.items() if k not in ("name", "samples_per_call")}
    if params.get("precision") == "32-true":
        params.pop("precision")
    return params


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


# -- shard names ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShardName:
    """A finished shard's path and what its name says: ``masks-<config_hash>-r<rank>-<index>.tar[.gz]``."""

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


def config_hashes(shard_dir: str | Path) -> set[str]:
    """The configuration hashes of the finished shards in a directory."""
    return {parse_shard_name(p).config_hash for p in list_shards(shard_dir)}


def next_shard_index(shard_dir: str | Path, chash: str, rank: int) -> int:
    """The index a new shard of (hash, rank) gets: one past the largest finished one."""
    names = [parse_shard_name(p) for p in list_shards(shard_dir, chash)]
    return 1 + max((n.index for n in names if n and n.rank == rank), default=-1)


def is_partial_shard(path: str | Path) -> bool:
    """Whether ``path`` is a shard being written (``*.tmp``): killed runs leave these behind."""
    return _TMP_RE.match(Path(path).name) is not None


def remove_partial_shards(shard_dir: str | Path) -> list[Path]:
    """Delete ``*.tmp`` shards left by killed runs; returns what was removed."""
    removed = []
    for p in Path(shard_dir).iterdir():
        if is_partial_shard(p):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


# -- failure logs --------------------------------------------------------------------------------------
def failure_log(out_dir: str | Path, rank: int) -> Path:
    """Rank ``rank``'s append-only log of images that could not be explained (JSON lines)."""
    return Path(out_dir) / f"failed-r{rank}.jsonl"


def failure_logs(out_dir: str | Path) -> list[Path]:
    """Every rank's failure log in ``out_dir``, sorted by name."""
    return sorted(Path(out_dir).glob(_FAILURE_GLOB))
