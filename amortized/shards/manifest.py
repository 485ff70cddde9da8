"""The manifest (``manifest.json``: config, finished shards, counts, failures, provenance) and failure records."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from amortized.shards.naming import (
    CURVE_NAMES,
    FIELDS,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    failure_log,
    failure_logs,
    list_shards,
    parse_shard_name,
)
from amortized.shards.reader import cached_shard_keys
from rde.errors import InputError
from rde.io import write_json_atomic

PACKAGE = "fastcartoonx"


def read_manifest(shard_dir: str | Path) -> dict[str, Any] | None:
    """The directory's manifest, or ``None`` when it has none."""
    path = Path(shard_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def package_version() -> str:
    """The installed ``fastcartoonx`` version (``rde.__version__`` when run from a checkout without install)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        import rde

        return rde.__version__


def provenance(device: Any, precision: str = "32-true") -> dict[str, Any]:
    """Where and how targets were computed. CPU and CUDA noise generators give different masks for one seed,
    so every sample and the manifest record the device, the precision (the mask, Adam and losses are always
    float32, ``dtype``; the classifier runs in ``classifier_dtype``) and the library versions."""
    import torch

    from rde.precision import autocast_dtype

    device = torch.device(device)
    out: dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    classifier_dtype = autocast_dtype(precision) or torch.float32
    out.update(dtype="float32", precision=precision, classifier_dtype=str(classifier_dtype).removeprefix("torch."),
               torch=torch.__version__, package=package_version())
    return out


# -- failure records -----------------------------------------------------------------------------------
def append_failures(out_dir: str | Path, rank: int, chash: str, records: list[dict[str, Any]]) -> None:
    """Append failed images (``{"key", "source", "error"}``) to rank ``rank``'s failure log."""
    with open(failure_log(out_dir, rank), "a") as f:
        for rec in records:
            f.write(json.dumps({**rec, "config_hash": chash}) + "\n")


def load_failures(out_dir: str | Path, chash: str, done: set[str] | None = None) -> list[dict[str, Any]]:
    """Failed images of this configuration (latest record per key), minus keys that have since succeeded."""
    records: dict[str, dict[str, Any]] = {}
    for log in failure_logs(out_dir):
        for line in log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if isinstance(rec, dict) and rec.get("config_hash") == chash and "key" in rec:
                records[rec["key"]] = rec
    done = done or set()
    return [records[k] for k in sorted(records) if k not in done]


# -- the manifest --------------------------------------------------------------------------------------
def build_manifest(
    shard_dir: str | Path,
    config: dict[str, Any],
    chash: str,
    failed: list[dict[str, Any]] | None = None,
    provenances: list[dict[str, Any]] | None = None,
    corrupt: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The manifest of a shard directory: config, hash, finished shards with counts, failed images, the
    provenance of every run that wrote into it and the damaged shards moved aside (``corrupt``)."""
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
        "provenance": provenances or [],
        "corrupt": corrupt or [],
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "version": package_version(),
    }


def write_manifest(
    out_dir: str | Path,
    config: dict[str, Any],
    chash: str,
    run: dict[str, Any] | None = None,
    corrupt: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Rewrite ``manifest.json`` from the finished shards and the failure logs (atomically).

    ``run`` is this run's :func:`provenance`; it joins those the manifest already lists (once each).
    ``corrupt`` records shards just moved aside (``{"shard", "moved_to", "error", "time"}``); they join those
    listed before.
    """
    out_dir = Path(out_dir)
    done = {k for p in list_shards(out_dir, chash) for k in cached_shard_keys(p)}
    try:
        old = read_manifest(out_dir) or {}
    except ValueError:  # a damaged manifest is rebuilt from the shards
        old = {}
    runs = list(old.get("provenance") or []) if old.get("config_hash") == chash else []
    if run is not None and run not in runs:
        runs.append(run)
    moved = list(old.get("corrupt") or []) if old.get("config_hash") == chash else []
    manifest = build_manifest(out_dir, config, chash, load_failures(out_dir, chash, done), runs, moved + list(corrupt or []))
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest
