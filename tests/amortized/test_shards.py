"""The shard format: atomic writer, integrity and sample checks, manifest, opening for writing (amortized/shards/)."""

from __future__ import annotations

import gzip
import io
import json
import logging
import tarfile

import numpy as np
import pytest

from amortized import shards as S
from amortized.datasets import split_of
from rde.io import OutputDirError
from tests.amortized.fake_shards import (
    K,
    corrupt_png,
    fake_config,
    fake_sample,
    flip_mask_value,
    keys_of,
    member_span,
    write_fake_shards,
)


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


def test_verify_and_cli_on_a_good_directory(tmp_path, capsys, monkeypatch):
    from amortized.cli import main

    write_fake_shards(tmp_path / "d", keys_of(6), 4)
    index, problems = S.verify_shards(tmp_path / "d")
    assert problems == [] and index.num_samples == 6
    monkeypatch.chdir(tmp_path)
    assert main(["shards", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "6 samples in 2 shards" in out and "check: OK" in out and "r0: 6" in out and "preview" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no preview in the current folder unasked
    preview = tmp_path / "p.png"
    assert main(["shards", str(tmp_path / "d"), "--preview", str(preview), "--num-preview", "2"]) == 0
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "afile" / "p.png", tmp_path):  # under a file; a folder
        assert main(["shards", str(tmp_path / "d"), "--preview", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("--preview " + str(bad if bad == tmp_path else bad.parent)) in err


def _bad_directory(out):
    """Four shards of two samples, uncompressed: shard 0 truncated, shard 1 with a mask byte flipped
    (-4.x), shard 2 with a corrupt PNG, shard 3 sound; plus a rank-1 shard with a short mask."""
    chash = write_fake_shards(out, keys_of(8), 2, compress=False)
    with S.AtomicShardWriter(S.shard_pattern(out, chash, 1, compress=False), 2) as w:
        w.write(fake_sample("short", k=K - 3))  # wrong mask length
    S.write_manifest(out, fake_config(), chash)
    s0, s1, s2, s3, _ = S.list_shards(out)
    s0.write_bytes(s0.read_bytes()[:3000])
    flip_mask_value(s1, keys_of(8)[2])
    corrupt_png(s2, keys_of(8)[5])
    return s0, s1, s2, s3


def test_verify_reports_every_bad_sample_and_shard_in_one_pass(tmp_path):
    s0, s1, s2, _ = _bad_directory(tmp_path / "d")
    index, problems = S.verify_shards(tmp_path / "d")
    assert [p.name for p, _ in index.shards] == [s.name for s in S.list_shards(tmp_path / "d")][1:]
    assert any(s0.name in p and "truncated" in p for p in problems)
    assert f"{s1.name}: n01440764_img002: mask values outside [0, 1] or not finite (e.g. -4." in "\n".join(problems)
    assert any(p.startswith(f"{s2.name}: n01440764_img005: cannot be decoded: png") for p in problems)
    assert any(f"short: mask float16 ({K - 3},), expected float16 ({K},)" in p for p in problems)
    assert len(problems) == 4


def test_cli_reports_every_bad_shard_exits_1_and_previews_sound_samples(tmp_path, capsys):
    from amortized.cli import main

    s0, s1, s2, _ = _bad_directory(tmp_path / "d")
    preview = tmp_path / "p.png"
    assert main(["shards", str(tmp_path / "d"), "--preview", str(preview), "--num-preview", "8"]) == 1
    captured = capsys.readouterr()
    assert all(s.name in captured.err for s in (s0, s1, s2)) and "4 problem(s)" in captured.out
    assert "preview: " in captured.out and "(4 samples)" in captured.out  # 1 + 1 + 2 sound; the bad ones left out
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "change,reason",
    [
        (lambda s: s["mask.npy"].__setitem__(3, np.nan), "mask values outside [0, 1] or not finite (e.g. nan)"),
        (lambda s: s["mask.npy"].__setitem__(3, 1.5), "mask values outside [0, 1] or not finite (e.g. 1.5)"),
        (lambda s: s["meta.json"].__setitem__("target", 1000), "target 1000 is not a class index in [0, 1000)"),
        (lambda s: s["meta.json"]["final"].__setitem__("loss", None), "final loss None is not a finite number"),
        (lambda s: s.__setitem__("png", np.zeros((32, 32, 3), np.uint8)), "image uint8 (32, 32, 3), expected"),
        (lambda s: s.__setitem__("cls", 7), "cls 7 is not in [-1, 1000) or != meta label"),
    ],
)
def test_sample_checks(tmp_path, change, reason):
    good = fake_sample("a")
    bad = fake_sample("a")
    change(bad)
    spec = S.SampleSpec.from_config(fake_config(), S.config_hash(fake_config()))
    for sample, expected in ((good, []), (bad, [reason])):
        with S.AtomicShardWriter(S.shard_pattern(tmp_path, "abc", 0, False), 1) as w:
            w.write(sample)
        (path,) = S.list_shards(tmp_path)
        ((key, raw),) = S.raw_samples(path)
        _, problems = S.check_sample(key, raw, spec)
        assert [p[: len(r)] for p, r in zip(problems, expected)] == expected and len(problems) == len(expected)
        path.unlink()


def test_open_for_writing_drops_bad_samples_and_returns_finished_keys(tmp_path, caplog):
    out = tmp_path / "d"
    write_fake_shards(out, keys_of(6), 3, compress=False)
    first, second = S.list_shards(out)
    flip_mask_value(first, keys_of(6)[1])
    corrupt_png(second, keys_of(6)[3])
    (out / "masks-abc-r0-000000.tar.tmp").write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="amortized.shards"):
        done = S.open_for_writing(out, fake_config())
    assert done == set(keys_of(6)) - {keys_of(6)[1], keys_of(6)[3]}
    lines = [r.getMessage() for r in caplog.records]
    assert any(str(first) in m and keys_of(6)[1] in m and "outside [0, 1]" in m for m in lines)
    assert any(str(second) in m and keys_of(6)[3] in m and "png" in m for m in lines)
    assert not list(out.glob("*.tmp"))
    assert [len(S.shard_keys(p)) for p in S.list_shards(out)] == [2, 2]  # rewritten without the bad samples
    assert S.verify_shards(out)[1] == []
    manifest = json.loads((out / S.MANIFEST).read_text())
    assert manifest["num_samples"] == 4 and manifest["version"] == S.package_version()
    assert S.open_for_writing(out, fake_config()) == done  # idempotent


def test_open_for_writing_refuses_other_configs_and_files(tmp_path):
    write_fake_shards(tmp_path / "d", keys_of(2), 2)
    other = {**fake_config(), "seed": 1}
    with pytest.raises(S.ConfigMismatchError, match="seed: 0 -> 1"):
        S.open_for_writing(tmp_path / "d", other)
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(OutputDirError, match="exists and is not a folder|is a file, so no folder"):
            S.open_for_writing(out, fake_config())
    assert S.open_for_writing(tmp_path / "new" / "dir", fake_config()) == set()


def test_old_shards_without_provenance_still_pass(shared_dir):
    """The targets generated before provenance was recorded (``../shared/targets``) pass every check."""
    directory = shared_dir / "targets" / "efficientnet_lite0-cpu"
    if not directory.is_dir():
        pytest.skip(f"{directory} is absent")
    index = S.open_shard_dir(directory)
    spec = S.SampleSpec.from_config(index.config, index.config_hash)
    path, keys = index.shards[0]
    checked = list(S.checked_samples(path, spec))
    assert [k for k, _, _ in checked] == list(keys) and all(p == [] for _, _, p in checked)
    assert "provenance" not in json.loads(checked[0][1]["meta.json"])


def _truncate(path):
    path.write_bytes(path.read_bytes()[:3000])


def _break_crc(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit inside the compressed stream: gzip's CRC (or inflate) fails
    path.write_bytes(bytes(raw))


def test_resume_moves_damaged_shards_aside_logs_them_and_recomputes_their_samples(tmp_path, caplog):
    out = tmp_path / "d"
    keys = keys_of(8)
    write_fake_shards(out, keys, 2, compress=True)
    s0, s1, s2, s3 = S.list_shards(out)
    _truncate(s0)
    _break_crc(s2)
    with caplog.at_level(logging.WARNING, logger="amortized.shards"):
        done = S.open_for_writing(out, fake_config())  # one pass heals both: no hand deletion, no rerun per shard
    assert done == set(keys[2:4] + keys[6:8])  # the moved shards' samples are pending again
    assert sorted(p.name for p in out.glob("*.corrupt")) == [s0.name + ".corrupt", s2.name + ".corrupt"]
    assert S.list_shards(out) == [s1, s3]
    manifest = json.loads((out / S.MANIFEST).read_text())
    assert [(c["shard"], c["moved_to"]) for c in manifest["corrupt"]] == [(s0.name, s0.name + ".corrupt"),
                                                                         (s2.name, s2.name + ".corrupt")]
    assert manifest["num_samples"] == 4 and S.verify_shards(out)[1] == []
    lines = [r.getMessage() for r in caplog.records]
    assert sum("moved aside" in m for m in lines) == 2 and any(str(s0) in m for m in lines)
    # a new shard taking a moved one's index, damaged again, does not overwrite the first record
    with S.AtomicShardWriter(S.shard_pattern(out, S.config_hash(fake_config()), 0, True), 2, start_shard=0) as w:
        w.write(fake_sample(keys[0]))
    _truncate(s0)
    S.open_for_writing(out, fake_config())
    assert sorted(p.name for p in out.glob(s0.name + "*")) == [s0.name + ".2.corrupt", s0.name + ".corrupt"]
    assert len(json.loads((out / S.MANIFEST).read_text())["corrupt"]) == 3


def _flip_target_digit(path, key):
    """Change one digit of ``meta.json``'s target in an uncompressed shard: still valid JSON, still a class index."""
    raw = bytearray(path.read_bytes())
    start, size = member_span(bytes(raw), f"{key}.meta.json")
    at = bytes(raw[start : start + size]).index(b'"target": ') + len(b'"target": ')
    raw[start + at] = ord("1") if raw[start + at] != ord("1") else ord("2")
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["mask value", "meta target"])
def test_an_in_range_bit_flip_in_an_uncompressed_shard_is_found(tmp_path, damage):
    out = tmp_path / "d"
    keys = keys_of(2)
    write_fake_shards(out, keys, 2, compress=False)
    (path,) = S.list_shards(out)
    if damage == "mask value":
        flip_mask_value(path, keys[1], high_byte=0x30)  # [0.125, 0.25): every range check still passes
    else:
        _flip_target_digit(path, keys[1])
    _, problems = S.verify_shards(out)
    assert problems == [f"{path.name}: {keys[1]}: checksum mismatch: its bytes changed since it was written "
                        "(a damaged disk or copy)"]
    assert S.open_for_writing(out, fake_config()) == {keys[0]}  # dropped on resume, so it is recomputed


def test_cli_lists_every_problem_once_also_without_a_manifest(tmp_path, capsys):
    from amortized.cli import main

    out = tmp_path / "d"
    write_fake_shards(out, keys_of(6), 2, compress=True)
    s0, s1, _ = S.list_shards(out)
    _truncate(s0)
    _break_crc(s1)
    (out / S.MANIFEST).unlink()
    assert main(["shards", str(out)]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("PROBLEM")]
    assert len(lines) == len(set(lines)) == 3 and "3 problem(s)" in captured.out
    assert "manifest.json is missing" in lines[0] and s0.name in lines[1] and s1.name in lines[2]
    assert "2 samples in 1 shards" in captured.out and "classifier tiny-test" in captured.out
