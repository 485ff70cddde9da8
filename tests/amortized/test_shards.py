"""The shard format: atomic writer, integrity checks, manifest, and the reading pipeline (amortized/shards.py)."""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from amortized import shards as S
from amortized.datasets import split_of
from rde import MaskLayout, load_preset

TINY = load_preset("tiny")
K = MaskLayout.for_wavelet(TINY.image_size, TINY.image_size, TINY.wavelet).num_entries


def fake_config(preset=TINY) -> dict:
    layout = MaskLayout.for_wavelet(preset.image_size, preset.image_size, preset.wavelet)
    params = preset.to_dict()
    params.pop("name")
    return {"format_version": S.FORMAT_VERSION, "method": "cartoonx", "classifier": "tiny-test", "preset": params,
            "init": "ones", "target": "predicted", "seed": 0, "layout": layout.signature,
            "num_entries": layout.num_entries}  # the keys of amortized.generate.target_config


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
        "layout": config["layout"],
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
    S.write_json_atomic(out / S.MANIFEST, S.build_manifest(out, config, chash))
    return chash


def keys_of(n: int, prefix: str = "n01440764_img") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_is_bit_exact(tmp_path, compress):
    samples = [fake_sample(k) for k in keys_of(5)]
    with S.AtomicShardWriter(S.shard_pattern(tmp_path, "abc", 0, compress), 2) as w:
        for s in samples:
            w.write(s)
    paths = S.list_shards(tmp_path)
    assert [p.name for p in paths] == [f"masks-abc-r0-{i:06d}.tar{'.gz' if compress else ''}" for i in range(3)]
    back = [s for p in paths for s in S.read_samples(p)]
    assert [b["key"] for b in back] == [s["__key__"] for s in samples]
    for b, s in zip(back, samples):
        assert np.array_equal(b["image"], s["png"])
        assert b["mask"].dtype == np.float16 and np.array_equal(b["mask"], s["mask.npy"])
        assert b["curves"].dtype == np.float32 and np.array_equal(b["curves"], s["curves.npy"])
        assert b["label"] == s["cls"] and b["meta"] == s["meta.json"]


def test_shards_appear_only_when_complete(tmp_path):
    seen = []
    w = S.AtomicShardWriter(S.shard_pattern(tmp_path, "abc", 3, False), 2, start_shard=7,
                            on_shard=lambda p, keys: seen.append((p.name, keys)))
    assert list(tmp_path.iterdir()) == []  # nothing before the first sample
    w.write(fake_sample("a"))
    assert [p.name for p in tmp_path.iterdir()] == ["masks-abc-r3-000007.tar.tmp"]
    assert S.list_shards(tmp_path) == []
    w.write(fake_sample("b"))  # full: shard 7 is finished at once, not when the next (slow) sample arrives
    assert [p.name for p in tmp_path.iterdir()] == ["masks-abc-r3-000007.tar"]
    w.write(fake_sample("c"))
    assert [p.name for p in S.list_shards(tmp_path)] == ["masks-abc-r3-000007.tar"]
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks-abc-r3-000007.tar", "masks-abc-r3-000008.tar"]
    assert seen == [("masks-abc-r3-000007.tar", ["a", "b"]), ("masks-abc-r3-000008.tar", ["c"])]
    assert S.next_shard_index(tmp_path, "abc", 3) == 9
    assert S.next_shard_index(tmp_path, "abc", 0) == 0
    with S.AtomicShardWriter(S.shard_pattern(tmp_path, "abc", 3, False), 2):
        pass  # no samples: no file
    assert len(list(tmp_path.iterdir())) == 2


def test_pinned_mtime_gives_identical_bytes(tmp_path):
    for name in ("x", "y"):
        with S.AtomicShardWriter(S.shard_pattern(tmp_path / name, "abc", 0, False), 4) as w:
            (tmp_path / name).mkdir()
            w.write(fake_sample("a"))
    assert (tmp_path / "x/masks-abc-r0-000000.tar").read_bytes() == (tmp_path / "y/masks-abc-r0-000000.tar").read_bytes()


def test_remove_partial_shards_only_touches_tmp_shards(tmp_path):
    (tmp_path / "masks-abc-r0-000001.tar.gz.tmp").write_bytes(b"partial")
    (tmp_path / "masks-abc-r0-000000.tar.gz").write_bytes(b"x")
    (tmp_path / "other.tmp").write_bytes(b"x")
    assert [p.name for p in S.remove_partial_shards(tmp_path)] == ["masks-abc-r0-000001.tar.gz.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masks-abc-r0-000000.tar.gz", "other.tmp"]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("where", ["middle", "last member", "end marker"])
def test_truncated_shard_is_named(tmp_path, compress, where):
    with S.AtomicShardWriter(S.shard_pattern(tmp_path, "abc", 0, compress), 10) as w:
        for key in keys_of(3):
            w.write(fake_sample(key))
    (path,) = S.list_shards(tmp_path)
    raw = gzip.decompress(path.read_bytes()) if compress else path.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        tf.getmembers()
        end = tf.offset  # where the end-of-archive marker starts
    cut = {"middle": len(raw) // 2, "last member": end - 100, "end marker": end + 512}[where]
    raw = raw[:cut]
    path.write_bytes(gzip.compress(raw) if compress else raw)
    with pytest.raises(S.CorruptShardError, match=path.name):
        S.shard_keys(path)
    with pytest.raises(S.CorruptShardError, match=path.name):
        list(S.read_samples(path))


def test_gzip_with_damaged_trailer_is_detected(tmp_path):
    with S.AtomicShardWriter(S.shard_pattern(tmp_path, "abc", 0, True), 10) as w:
        w.write(fake_sample("a"))
    (path,) = S.list_shards(tmp_path)
    path.write_bytes(path.read_bytes()[:-4])  # all tar data present, gzip size field cut
    with pytest.raises(S.CorruptShardError, match=path.name):
        S.shard_keys(path)


def test_incomplete_sample_is_named(tmp_path):
    path = tmp_path / "masks-abc-r0-000000.tar"
    with tarfile.open(path, "w") as tf:
        for name in ("a.png", "a.mask.npy", "a.meta.json", "a.cls"):  # no curves.npy
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"1"))
    with pytest.raises(S.CorruptShardError, match=r"sample 'a' lacks \['curves.npy'\]"):
        S.shard_keys(path)


def test_not_a_tar_is_named(tmp_path):
    path = tmp_path / "masks-abc-r0-000000.tar.gz"
    path.write_bytes(gzip.compress(b"this is not a tar file" * 10))
    with pytest.raises(S.CorruptShardError, match=path.name):
        S.shard_keys(path)


def test_manifest_and_open_shard_dir(tmp_path):
    keys = keys_of(7)
    chash = write_fake_shards(tmp_path, keys, 3)
    index = S.open_shard_dir(tmp_path)
    assert index.config_hash == chash and index.num_samples == 7
    assert [len(k) for _, k in index.shards] == [3, 3, 1]
    assert index.manifest["num_samples"] == 7 and index.manifest["num_shards"] == 3
    assert index.layout().num_entries == K
    assert sum(index.counts("val")) == sum(split_of(k) == "val" for k in keys)


def test_open_refuses_mixed_configurations(tmp_path):
    write_fake_shards(tmp_path, keys_of(2), 2)
    with S.AtomicShardWriter(S.shard_pattern(tmp_path, "0123456789", 0), 2) as w:
        w.write(fake_sample("z"))
    with pytest.raises(S.ConfigMismatchError, match="0123456789"):
        S.open_shard_dir(tmp_path)


def test_open_refuses_duplicate_keys(tmp_path):
    chash = write_fake_shards(tmp_path, keys_of(2), 2)
    with S.AtomicShardWriter(S.shard_pattern(tmp_path, chash, 1), 2) as w:
        w.write(fake_sample(keys_of(1)[0]))
    with pytest.raises(S.CorruptShardError, match="also in"):
        S.open_shard_dir(tmp_path)


def test_open_needs_a_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        S.open_shard_dir(tmp_path)


def test_pipeline_yields_decoded_batches(tmp_path):
    keys = keys_of(10)
    write_fake_shards(tmp_path, keys, 4)
    index = S.open_shard_dir(tmp_path)
    batches = list(DataLoader(S.mask_pipeline(index, "all", batch_size=4, shuffle=False), batch_size=None))
    assert [len(b["key"]) for b in batches] == [4, 4, 2]
    b = batches[0]
    assert b["image"].shape == (4, 3, 64, 64) and b["image"].dtype == torch.float32
    assert b["mask"].shape == (4, K) and b["mask"].dtype == torch.float32
    assert b["target"].dtype == torch.long and b["label"].shape == (4,)
    ref = fake_sample(b["key"][1])
    assert torch.equal(b["image"][1], torch.from_numpy(ref["png"]).permute(2, 0, 1).float() / 255)
    assert torch.equal(b["mask"][1], torch.from_numpy(ref["mask.npy"].astype(np.float32)))
    assert int(b["target"][1]) == ref["meta.json"]["target"] and int(b["label"][1]) == ref["cls"]


def test_pipeline_checks_mask_length(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    config = fake_config()
    chash = S.config_hash(config)
    with S.AtomicShardWriter(S.shard_pattern(out, chash, 0), 4) as w:
        w.write(fake_sample("a", k=K - 1))
    S.write_json_atomic(out / S.MANIFEST, S.build_manifest(out, config, chash))
    with pytest.raises(Exception, match=f"k={K}"):
        list(S.mask_pipeline(S.open_shard_dir(out), "all", batch_size=1, shuffle=False))


@pytest.mark.parametrize(
    "counts,world,workers,mode",
    [([5, 5, 5, 5], 2, 2, "shards"), ([10], 2, 2, "samples"), ([1, 9, 1], 3, 0, "samples"), ([6, 6, 6], 3, 0, "shards")],
)
def test_plan_split_modes(counts, world, workers, mode):
    plans = [S.plan_split(counts, 2, r, world, workers) for r in range(world)]
    assert {p.mode for p in plans} == {mode}
    assert len({p.num_batches for p in plans}) == 1  # ranks stay in step
    assert sum(p.num_batches for p in plans) * 2 <= sum(counts)


def test_plan_split_refuses_shard_mode_without_enough_shards():
    with pytest.raises(ValueError, match="without duplication"):
        S.plan_split([3, 3], 1, 0, 2, 2, mode="shards")


@pytest.mark.parametrize("num_shards,world,workers", [(6, 2, 2), (1, 2, 2), (3, 3, 0), (5, 2, 0)])
def test_ranks_and_workers_never_share_samples(tmp_path, monkeypatch, num_shards, world, workers):
    keys = keys_of(24)
    write_fake_shards(tmp_path, keys, -(-24 // num_shards))
    index = S.open_shard_dir(tmp_path)
    counts = index.counts("all")
    seen_train, seen_all, lengths = [], [], []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        plan = S.plan_split(counts, 3, rank, world, workers, equalize=True)
        pipe = S.mask_pipeline(index, "all", batch_size=3, seed=1, plan=plan)
        batches = list(DataLoader(pipe, batch_size=None, num_workers=workers))
        assert len(batches) == plan.num_batches == len(pipe)
        assert all(len(b["key"]) == 3 for b in batches)
        lengths.append(len(batches))
        seen_train += [k for b in batches for k in b["key"]]
        full = S.plan_split(counts, 3, rank, world, workers, equalize=False)
        seen_all += [k for b in DataLoader(S.mask_pipeline(index, "all", batch_size=3, plan=full, shuffle=False),
                                           batch_size=None, num_workers=workers) for k in b["key"]]
    assert len(set(lengths)) == 1
    assert len(seen_train) == len(set(seen_train))  # dropped at most, never duplicated
    assert len(seen_train) >= 24 - world * max(1, workers) * 3 - 3 * world
    assert sorted(seen_all) == keys  # without equalizing, every sample exactly once


def test_shuffle_is_seeded_and_changes_per_epoch(tmp_path):
    write_fake_shards(tmp_path, keys_of(16), 4)
    index = S.open_shard_dir(tmp_path)

    def epochs(seed):
        pipe = S.mask_pipeline(index, "all", batch_size=16, seed=seed, shuffle_buffer=16)
        return [list(b["key"]) for b in pipe], [list(b["key"]) for b in pipe]

    a1, a2 = epochs(0)
    b1, b2 = epochs(0)
    assert (a1, a2) == (b1, b2)
    assert a1 != a2 and sorted(a1[0]) == sorted(a2[0]) == keys_of(16)
    assert epochs(5)[0] != a1


def test_verify_and_cli_on_a_good_directory(tmp_path, capsys):
    from amortized.cli import main

    write_fake_shards(tmp_path / "d", keys_of(6), 4)
    index, problems = S.verify_shards(tmp_path / "d")
    assert problems == [] and index.num_samples == 6
    preview = tmp_path / "p.png"
    assert main(["shards", str(tmp_path / "d"), "--preview", str(preview), "--num-preview", "2"]) == 0
    out = capsys.readouterr().out
    assert "6 samples in 2 shards" in out and "check: OK" in out and "r0: 6" in out
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verify_reports_bad_samples_and_shards(tmp_path, capsys):
    from amortized.cli import main

    out = tmp_path / "d"
    chash = write_fake_shards(out, keys_of(4), 2)
    with S.AtomicShardWriter(S.shard_pattern(out, chash, 1), 2) as w:
        w.write(fake_sample("short", k=K - 3))  # wrong mask length
    (first, *_) = S.list_shards(out)
    S.write_json_atomic(out / S.MANIFEST, S.build_manifest(out, fake_config(), chash))
    _, problems = S.verify_shards(out)
    assert any(f"short: mask float16 ({K - 3},), expected float16 ({K},)" in p for p in problems)
    first.write_bytes(first.read_bytes()[:3000])
    S._KEY_CACHE.clear()
    assert main(["shards", str(out), "--num-preview", "0"]) == 2  # the directory cannot even be indexed
    assert first.name in capsys.readouterr().err
