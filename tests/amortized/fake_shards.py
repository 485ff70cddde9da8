"""Shared helpers for the shard, datamodule and training tests: fake samples and shard directories.

Plain functions (import them: ``from tests.amortized.fake_shards import write_fake_shards``), so tests can
build directories of any shape; the content of each fake sample is a pure function of its key.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from pathlib import Path

import numpy as np

from amortized import shards as S
from rde import MaskLayout, load_preset

TINY = load_preset("tiny")
K = MaskLayout.for_wavelet(TINY.image_size, TINY.image_size, TINY.wavelet).num_entries


def fake_config(preset=TINY) -> dict:
    """A target configuration with the keys of :func:`amortized.generate.target_config`."""
    layout = MaskLayout.for_wavelet(preset.image_size, preset.image_size, preset.wavelet)
    params = preset.to_dict()
    params.pop("name")
    return {"format_version": S.FORMAT_VERSION, "method": "cartoonx", "classifier": "tiny-test", "preset": params,
            "init": "ones", "target": "predicted", "seed": 0, "layout": layout.signature,
            "num_entries": layout.num_entries}


def fake_sample(key: str, k: int = K, size: int = 64, steps: int = 5) -> dict:
    """A sample with deterministic random content derived from the key, metadata as generation writes it."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))  # stable across runs (hash() is salted)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = rng.random(k).astype(np.float16)
    curves = rng.random((3, steps)).astype(np.float32)
    label = int(rng.integers(0, 1000))
    config = fake_config()
    meta = {
        "key": key, "label": label, "target": int(rng.integers(0, 1000)), "target_name": "thing", "target_prob": 0.5,
        "steps": steps, "final": {"loss": float(curves[0, -1])}, "config_hash": S.config_hash(config),
        "layout": config["layout"], "classifier": config["classifier"], "preset": TINY.to_dict(), "num_entries": k,
        "base_seed": config["seed"], "method": config["method"], "init": config["init"],
    }
    return S.make_sample(key, image, mask, curves, label, meta)


def write_fake_shards(out: Path, keys: list[str], shard_size: int, compress: bool = True, rank: int = 0) -> str:
    """A shard directory as ``cartoonx generate`` leaves it, filled with :func:`fake_sample` samples."""
    out.mkdir(parents=True, exist_ok=True)
    config = fake_config()
    chash = S.config_hash(config)
    with S.AtomicShardWriter(S.shard_pattern(out, chash, rank, compress), shard_size) as w:
        for key in keys:
            w.write(fake_sample(key))
    S.write_manifest(out, config, chash)
    return chash


def keys_of(n: int, prefix: str = "n01440764_img") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


def member_span(raw: bytes, name: str) -> tuple[int, int]:
    """``(offset, size)`` of tar member ``name``'s data in the uncompressed tar bytes ``raw``."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        m = tf.getmember(name)
        return m.offset_data, m.size


def flip_mask_value(path: Path, key: str, index: int = 0, high_byte: int = 0xC4) -> None:
    """Overwrite the high byte of float16 mask entry ``index`` of ``key`` in an uncompressed shard, as a
    flipped disk byte would: 0xC4 makes it about -4.x. The tar stays valid (only headers are checksummed)."""
    raw = bytearray(path.read_bytes())
    start, _ = member_span(bytes(raw), f"{key}.mask.npy")
    header = 10 + int.from_bytes(raw[start + 8 : start + 10], "little")  # npy v1: magic, version, header length
    raw[start + header + 2 * index + 1] = high_byte
    path.write_bytes(bytes(raw))


def corrupt_png(path: Path, key: str) -> None:
    """Zero 64 bytes in the middle of ``key``'s PNG in an uncompressed shard (its compressed pixels)."""
    raw = bytearray(path.read_bytes())
    start, size = member_span(bytes(raw), f"{key}.png")
    raw[start + size // 2 : start + size // 2 + 64] = bytes(64)
    path.write_bytes(bytes(raw))
