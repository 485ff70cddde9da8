"""Target generation: shards, resume, refusals, bad images and samples, kill -9, SIGTERM/SIGINT, provenance
(amortized/generate.py, `cartoonx generate`)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from amortized import shards as S
from amortized.cli import main as cli_main
from amortized.datasets import key_seed, list_images
from amortized.generate import generate_targets
from amortized.generate_data import GenerateDataModule, _DirLock
from rde import CartoonX, create_classifier, load_image, preprocess
from tests.amortized.fake_shards import corrupt_png, flip_mask_value

REPO = Path(__file__).resolve().parents[2]
WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331", "n01498041",
         "n01514668", "n01514859", "n01518878", "n01530575", "n01531178"]
TINY = dict(classifier="tiny-test", preset="tiny", show_progress=False)
PROVENANCE = {"device": "cpu", "dtype": "float32", "precision": "32-true", "classifier_dtype": "float32",
              "torch": torch.__version__,
              "package": importlib.metadata.version("fastcartoonx")}


def make_images(root: Path, n: int) -> Path:
    """``n`` random photos ``<wnid>_img<i>.png`` of varying size (resized to 64 px by generation)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = 64 + 8 * (i % 3), 72 + 4 * (i % 5)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{WNIDS[i]}_img{i}.png")
    return root


def all_keys(out: Path) -> list[str]:
    return [k for p in S.list_shards(out) for k in S.shard_keys(p)]


def samples_by_key(out: Path) -> dict[str, dict]:
    return {s["key"]: s for p in S.list_shards(out) for s in S.read_samples(p)}


def start_generate(src: Path, out: Path, shard_size: int) -> subprocess.Popen:
    """``cartoonx generate`` in a subprocess, slow enough (40 steps per image) to be interrupted mid-run."""
    cmd = [sys.executable, "-m", "amortized.cli", "generate", str(src), "--out", str(out), "--model", "tiny-test",
           "--preset", "tiny", "--steps", "40", "--batch-size", "1", "--shard-size", str(shard_size), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_until(proc: subprocess.Popen, ready, limit: float = 120) -> None:
    """Poll ``ready()`` while ``proc`` runs; fail if it ends first (``limit`` only guards against a hang)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, f"generation ended before it could be interrupted: {proc.stderr.read().decode()[-2000:]}"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("images"), 7)


@pytest.fixture(scope="module")
def generated(images, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("gen") / "shards"
    summary = generate_targets(images, out, batch_size=3, shard_size=2, **TINY)
    return out, summary


def test_every_image_once_in_complete_shards(images, generated):
    out, summary = generated
    keys = all_keys(out)
    assert sorted(keys) == sorted(i.key for i in list_images(images))
    assert (summary.done, summary.skipped, summary.failed) == (7, 0, 0)
    assert [len(S.shard_keys(p)) for p in S.list_shards(out)] == [2, 2, 2, 1]
    assert not list(out.glob("*.tmp"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 7 and manifest["num_shards"] == 4 and manifest["failed"] == []
    assert manifest["config"]["classifier"] == "tiny-test" and manifest["config"]["preset"]["steps"] == 10
    assert all(p.name.startswith(f"masks-{manifest['config_hash']}-r0-") for p in S.list_shards(out))
    assert S.verify_shards(out)[1] == []
    assert manifest["provenance"] == [PROVENANCE] and manifest["version"] == S.package_version()


def test_sample_contents(images, generated):
    out, _ = generated
    items = {i.key: i for i in list_images(images)}
    for key, s in samples_by_key(out).items():
        meta = s["meta"]
        assert s["mask"].dtype == np.float16 and s["mask"].shape == (meta["num_entries"],) == (5319,)
        assert s["curves"].shape == (3, 10) and meta["steps"] == 10
        assert s["label"] == items[key].label == meta["label"] >= 0
        assert meta["wnid"] == items[key].wnid and meta["seed"] == key_seed(key, 0)
        assert meta["classifier"] == "tiny-test" and meta["preset"]["num_samples"] == 4
        assert meta["layout"] == "wavelet:db3:J5:zero:64x64" and meta["version"]
        assert meta["final"]["loss"] == pytest.approx(float(s["curves"][0, -1]))
        assert meta["predicted"] == meta["target"] and 0 < meta["predicted_prob"] <= 1
        assert meta["provenance"] == PROVENANCE
        expected = (preprocess(load_image(items[key].path), 64) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(s["image"], expected)  # lossless


def test_provenance_records_a_mixed_precision(images, tmp_path):
    out = tmp_path / "bf16"
    generate_targets(images, out, limit=1, precision="bf16-mixed", **TINY)
    expected = {**PROVENANCE, "precision": "bf16-mixed", "classifier_dtype": "bfloat16"}
    assert json.loads((out / "manifest.json").read_text())["provenance"] == [expected]
    (sample,) = samples_by_key(out).values()
    assert sample["meta"]["provenance"] == expected and sample["meta"]["preset"]["precision"] == "bf16-mixed"


def test_masks_are_the_exact_optimizer_per_image(images, generated):
    """Each stored mask is what CartoonX gives that image alone with its key seed (batching doesn't matter)."""
    out, _ = generated
    clf = create_classifier("tiny-test")
    explainer = CartoonX(clf, "tiny")
    stored = samples_by_key(out)
    for item in list_images(images)[:3]:
        x = preprocess(load_image(item.path), 64)[None]
        ref = explainer.explain(x, seed=key_seed(item.key, 0))
        got = stored[item.key]
        np.testing.assert_allclose(got["mask"].astype(np.float32), ref.mask[0].numpy(), atol=1e-3)
        np.testing.assert_allclose(got["curves"][0], ref.history["loss"][0].numpy(), rtol=1e-4, atol=1e-6)
        assert got["meta"]["target"] == int(ref.targets[0])


def test_rerun_resumes_and_numbers_shards_on(images, tmp_path):
    out = tmp_path / "shards"
    first = generate_targets(images, out, batch_size=2, shard_size=2, limit=3, **TINY)
    before = {p.name: p.read_bytes() for p in S.list_shards(out)}
    second = generate_targets(images, out, batch_size=2, shard_size=2, **TINY)
    assert (first.done, second.done, second.skipped) == (3, 4, 3)
    keys = all_keys(out)
    assert len(keys) == len(set(keys)) == 7
    assert {p.name: p.read_bytes() for p in S.list_shards(out) if p.name in before} == before  # untouched
    assert [S.parse_shard_name(p).index for p in S.list_shards(out)] == [0, 1, 2, 3]
    third = generate_targets(images, out, batch_size=2, shard_size=2, **TINY)
    assert (third.done, third.skipped) == (0, 7)


def test_different_config_is_refused(images, generated):
    out, _ = generated
    with pytest.raises(S.ConfigMismatchError, match=r"preset.steps: 10 -> 3"):
        generate_targets(images, out, steps=3, **TINY)
    with pytest.raises(S.ConfigMismatchError, match="seed: 0 -> 1"):
        generate_targets(images, out, seed=1, **TINY)


def test_a_truncated_shard_is_moved_aside_and_its_samples_recomputed(images, tmp_path):
    out = tmp_path / "shards"
    generate_targets(images, out, shard_size=4, limit=4, **TINY)
    (shard,) = S.list_shards(out)
    before = samples_by_key(out)
    shard.write_bytes(shard.read_bytes()[:5000])
    again = generate_targets(images, out, shard_size=4, limit=4, **TINY)  # resumes; no hand deletion
    assert (again.done, again.skipped) == (4, 0)
    assert (out / (shard.name + ".corrupt")).exists() and S.verify_shards(out)[1] == []
    assert json.loads((out / "manifest.json").read_text())["corrupt"][0]["shard"] == shard.name
    after = samples_by_key(out)
    assert sorted(after) == sorted(before)
    assert all(np.array_equal(after[k]["mask"], before[k]["mask"]) for k in before)  # the same seeds, the same masks


def test_bad_image_is_logged_skipped_and_recorded(tmp_path, capsys):
    src = make_images(tmp_path / "img", 3)
    (src / "n01498041_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "n01514668_cut.png").write_bytes((src / f"{WNIDS[0]}_img0.png").read_bytes()[:300])
    out = tmp_path / "shards"
    code = cli_main(["generate", str(src), "--out", str(out), "--model", "tiny-test", "--preset", "tiny",
                     "--batch-size", "2", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "n01498041_broken.png" in err and "3 done" in err and "2 failed" in err
    assert sorted(all_keys(out)) == sorted(f"{w}_img{i}" for i, w in enumerate(WNIDS[:3]))
    manifest = json.loads((out / "manifest.json").read_text())
    assert {f["key"] for f in manifest["failed"]} == {"n01498041_broken", "n01514668_cut"}
    assert all("n01498041_broken.png" in f["error"] for f in manifest["failed"] if f["key"] == "n01498041_broken")


def test_missing_source_is_named_counted_and_exits_1(tmp_path, capsys):
    src = make_images(tmp_path / "img", 1)
    out = tmp_path / "shards"
    code = cli_main(["generate", str(src), str(tmp_path / "gone.png"), "--out", str(out), "--model", "tiny-test",
                     "--preset", "tiny", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "gone.png" in err and "1 done" in err and "1 input(s) not images" in err
    assert len(all_keys(out)) == 1


def test_zero_steps_from_a_preset_file_is_refused(images, tmp_path):
    preset = tmp_path / "zero.yaml"
    preset.write_text("image_size: 64\nnum_samples: 4\nsteps: 0\n")
    with pytest.raises(ValueError, match="steps must be at least 1"):
        generate_targets(images, tmp_path / "shards", classifier="tiny-test", preset=str(preset), show_progress=False)
    assert not (tmp_path / "shards").exists()


def test_partial_shards_are_removed_and_concurrent_runs_refused(images, tmp_path):
    out = tmp_path / "shards"
    out.mkdir()
    stale = out / "masks-0123456789-r0-000000.tar.gz.tmp"
    stale.write_bytes(b"partial")
    lock = _DirLock(out)
    with pytest.raises(ValueError, match="another `cartoonx generate`"):
        generate_targets(images, out, limit=1, **TINY)
    lock.release()
    generate_targets(images, out, limit=1, **TINY)
    assert not stale.exists() and len(all_keys(out)) == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["generate", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--model", "tiny-test"]) == 2
    assert "missing: no such file or directory" in capsys.readouterr().err


def test_kill_9_loses_only_the_open_shard(tmp_path):
    src = make_images(tmp_path / "img", 6)
    out = tmp_path / "shards"
    proc = start_generate(src, out, shard_size=2)
    try:
        wait_until(proc, lambda: out.is_dir() and S.list_shards(out) and list(out.glob("*.tmp")))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    finished = {p.name: S.shard_keys(p) for p in S.list_shards(out)}
    assert finished and list(out.glob("*.tmp"))  # killed mid-shard
    assert len(finished) < 3
    resumed = generate_targets(src, out, steps=40, batch_size=1, shard_size=2, **TINY)  # the same configuration
    assert resumed.skipped == sum(map(len, finished.values())) and resumed.done == 6 - resumed.skipped
    keys = all_keys(out)
    assert sorted(keys) == sorted(i.key for i in list_images(src)) and len(keys) == len(set(keys)) == 6
    assert {p.name: S.shard_keys(p) for p in S.list_shards(out) if p.name in finished} == finished
    assert not list(out.glob("*.tmp"))


def test_resume_recomputes_bad_samples(images, tmp_path):
    """A flipped mask byte and a corrupt PNG in finished (uncompressed) shards are dropped and recomputed."""
    out = tmp_path / "shards"
    generate_targets(images, out, shard_size=2, limit=4, compress=False, **TINY)
    before = samples_by_key(out)
    first, second = S.list_shards(out)
    bad = [S.shard_keys(first)[0], S.shard_keys(second)[1]]
    flip_mask_value(first, bad[0], index=3)
    corrupt_png(second, bad[1])
    assert len(S.verify_shards(out)[1]) == 2
    again = generate_targets(images, out, shard_size=2, limit=4, compress=False, **TINY)
    assert (again.done, again.skipped) == (2, 2)
    assert S.verify_shards(out)[1] == []
    after = samples_by_key(out)
    assert sorted(after) == sorted(before)
    for key in bad:  # recomputed: the same seed on the same device gives the same mask
        assert np.array_equal(after[key]["mask"], before[key]["mask"])
        assert np.array_equal(after[key]["image"], before[key]["image"])


def test_out_that_is_a_file_is_refused_before_any_work(images, tmp_path, capsys, monkeypatch):
    import amortized.generate as G

    monkeypatch.setattr(G, "create_classifier", lambda *a: pytest.fail("work started before the check"))
    monkeypatch.setattr(G, "list_images", lambda *a, **k: pytest.fail("work started before the check"))
    (tmp_path / "file").write_text("not a directory")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert cli_main(["generate", str(images), "--out", str(out), "--model", "tiny-test"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"cartoonx generate: error: {out}")
    assert (tmp_path / "file").read_text() == "not a directory"


def test_a_signal_waits_for_the_end_of_a_critical_block():
    from amortized.signals import StopOnSignals, Stopped

    before = signal.getsignal(signal.SIGTERM)
    written = []
    with pytest.raises(Stopped) as info, StopOnSignals() as stop:
        with stop.critical():
            os.kill(os.getpid(), signal.SIGTERM)
            written.append("sample")  # not cut: the signal waits
        written.append("never")
    assert written == ["sample"] and info.value.exit_code == 143 and info.value.name == "SIGTERM"
    with StopOnSignals() as stop:  # after the first, signals are only noted: clean-up is not cut short
        with pytest.raises(Stopped):
            os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.received == signal.SIGINT
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("sig,code,name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_signal_stops_cleanly_and_rerun_resumes(tmp_path, sig, code, name):
    """SIGTERM/SIGINT mid-shard: exit 128+signal with a resume hint, the open shard finished (no .tmp),
    a manifest that lists exactly the shards on disk, and a rerun that completes the set."""
    src = make_images(tmp_path / "img", 6)
    out = tmp_path / "shards"
    proc = start_generate(src, out, shard_size=4)
    try:
        wait_until(proc, lambda: list(out.glob("*.tmp")))  # a shard is open
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)  # a guard against a hang, not a timing assertion
    finally:
        proc.kill()
        proc.wait()
    err = err.decode()
    assert proc.returncode == code, err[-2000:]
    assert f"stopped by {name}" in err and "rerun the same command to resume" in err and "Traceback" not in err
    assert not list(out.glob("*.tmp")) and not (out / ".generate.lock").exists()
    finished = {p.name: S.shard_keys(p) for p in S.list_shards(out)}
    assert finished and sum(map(len, finished.values())) < 6  # kept the open shard's samples, stopped early
    manifest = json.loads((out / "manifest.json").read_text())
    assert {s["name"]: s["count"] for s in manifest["shards"]} == {n: len(k) for n, k in finished.items()}
    assert S.verify_shards(out)[1] == []
    resumed = generate_targets(src, out, steps=40, batch_size=1, shard_size=4, **TINY)
    assert resumed.skipped == sum(map(len, finished.values())) and resumed.done == 6 - resumed.skipped
    keys = all_keys(out)
    assert sorted(keys) == sorted(i.key for i in list_images(src)) and len(keys) == len(set(keys)) == 6


@pytest.mark.slow
def test_real_photos_with_efficientnet(imagenet_sample, tmp_path):
    photos = sorted(imagenet_sample.glob("*.JPEG"))[:2]
    listing = tmp_path / "two.txt"
    listing.write_text("\n".join(str(p) for p in photos))
    out = tmp_path / "shards"
    summary = generate_targets(listing, out, preset="cpu", steps=5, num_samples=4, batch_size=2, show_progress=False)
    assert summary.done == 2
    stored = samples_by_key(out)
    assert set(stored) == {p.stem for p in photos}
    for s in stored.values():
        meta = s["meta"]
        assert meta["classifier"] == "efficientnet_lite0" and meta["image_size"] == 128 and meta["steps"] == 5
        assert s["mask"].shape == (18631,) and s["image"].shape == (128, 128, 3)
        assert 0.0 <= s["mask"].min() and s["mask"].max() <= 1.0
        assert s["curves"][0, -1] < s["curves"][0, 0]  # the loss went down


@pytest.mark.slow
def test_two_process_ddp_spawn_writes_per_rank_series_and_each_image_once(tmp_path):
    """Two CPU processes (Lightning ``ddp_spawn``, gloo): each rank writes its own shard series
    (``-r0-``, ``-r1-``), every image lands exactly once, the manifest counts what is on disk, and a
    rerun finds nothing to do. Summaries stay in the spawned processes, so this checks the disk."""
    src = make_images(tmp_path / "img", 6)
    out = tmp_path / "shards"
    ddp = dict(accelerator="cpu", devices=2, strategy="ddp_spawn", batch_size=1, shard_size=2, **TINY)
    generate_targets(src, out, **ddp)
    manifest = json.loads((out / "manifest.json").read_text())
    chash = manifest["config_hash"]
    names = {p.name: S.shard_keys(p) for p in S.list_shards(out)}
    assert sorted(names) == [f"masks-{chash}-r{r}-{i:06d}.tar.gz" for r in (0, 1) for i in (0, 1)]
    by_rank = {r: [k for n, keys in names.items() if S.parse_shard_name(n).rank == r for k in keys] for r in (0, 1)}
    assert len(by_rank[0]) == len(by_rank[1]) == 3 and not set(by_rank[0]) & set(by_rank[1])  # split, disjoint
    keys = all_keys(out)
    assert sorted(keys) == sorted(i.key for i in list_images(src)) and len(keys) == len(set(keys)) == 6
    assert {s["name"]: s["count"] for s in manifest["shards"]} == {n: len(k) for n, k in names.items()}
    assert {(s["rank"], s["index"]) for s in manifest["shards"]} == {(r, i) for r in (0, 1) for i in (0, 1)}
    assert manifest["num_samples"] == 6 and manifest["num_shards"] == 4 and manifest["failed"] == []
    assert S.verify_shards(out)[1] == [] and not list(out.glob("*.tmp")) and not (out / ".generate.lock").exists()
    # each rank computed exactly what one process computes for the same key (seeds follow the key)
    one = samples_by_key(out)
    key = by_rank[1][0]
    x = preprocess(load_image(next(i.path for i in list_images(src) if i.key == key)), 64)[None]
    ref = CartoonX(create_classifier("tiny-test"), "tiny").explain(x, seed=key_seed(key, 0))
    np.testing.assert_allclose(one[key]["mask"].astype(np.float32), ref.mask[0].numpy(), atol=1e-3)

    before = {p.name: p.read_bytes() for p in S.list_shards(out)}
    generate_targets(src, out, **ddp)  # resume: nothing left, nothing rewritten
    assert {p.name: p.read_bytes() for p in S.list_shards(out)} == before
    assert json.loads((out / "manifest.json").read_text())["num_samples"] == 6


def test_teardown_destroys_the_ranks_gloo_process_group(tmp_path):
    """Lightning leaves a gloo group to interpreter shutdown, where a rank could die with SIGABRT after its work
    was saved (3 of 25 reruns of the test above); the data module's teardown destroys it and releases the lock."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        data = GenerateDataModule([], tmp_path / "out", {})
        data._lock = _DirLock(tmp_path)
        data.trainer = SimpleNamespace(world_size=1)  # one process: a group of the caller's own stays
        data.teardown("predict")
        assert dist.is_initialized() and not (tmp_path / ".generate.lock").exists()
        data.trainer = SimpleNamespace(world_size=2)  # a rank of the Trainer's own group
        data.teardown("predict")
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _disk_full_after(monkeypatch, members: int) -> None:
    """Make every shard write fail with ENOSPC once ``members`` tar members have been written, as a full disk does."""
    import errno
    import tarfile

    real, written = tarfile.TarFile.addfile, [0]

    def addfile(self, tarinfo, fileobj=None, **kw):
        written[0] += 1
        if written[0] > members:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, tarinfo, fileobj, **kw)

    monkeypatch.setattr(tarfile.TarFile, "addfile", addfile)


def test_a_full_disk_is_one_line_keeps_only_complete_shards_and_resumes(images, tmp_path, capsys, monkeypatch):
    out = tmp_path / "shards"
    argv = ["generate", str(images), "--out", str(out), "--model", "tiny-test", "--preset", "tiny", "--shard-size", "2",
            "--no-progress", "--no-compress"]
    per_sample = len(S.FIELDS) + 1  # the fields and the checksum
    _disk_full_after(monkeypatch, 2 * per_sample + 2)  # the first shard fits, the third sample does not
    assert cli_main(argv) == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines() if ": warning: " not in line]
    assert len(err) == 1 and "No space left on device" in err[0] and ".tar.tmp" in err[0], err
    assert err[0].startswith(f"cartoonx generate: error: {out}/masks-") and "rerun the same command to resume" in err[0]
    (first,) = S.list_shards(out)  # nothing truncated under a final name, no partial shard left
    assert len(S.shard_keys(first)) == 2 and not list(out.glob("*.tmp")) and not (out / ".generate.lock").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in manifest["shards"]] == [first.name] and S.verify_shards(out)[1] == []
    monkeypatch.undo()
    assert cli_main(argv) == 0  # space again: the same command resumes
    assert sorted(all_keys(out)) == sorted(i.key for i in list_images(images)) and S.verify_shards(out)[1] == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (a real full disk); skipped where mounting is not allowed (not root, a container)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_really_full_disk_stops_cleanly_and_resumes_after_it_grows(images, tiny_disk, capsys):
    out = tiny_disk / "shards"
    argv = ["generate", str(images), "--out", str(out), "--model", "tiny-test", "--preset", "tiny", "--shard-size", "2",
            "--no-progress"]
    assert cli_main(argv) == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines() if ": warning: " not in line]
    assert len(err) == 1 and "No space left on device" in err[0] and "Traceback" not in err[0], err
    assert not list(out.glob("*.tmp")) and S.verify_shards(out)[1] == []  # every finished name is a whole shard
    kept = {p.name: S.shard_keys(p) for p in S.list_shards(out)}
    subprocess.run(["mount", "-o", "remount,size=4m", str(tiny_disk)], check=True)
    assert cli_main(argv) == 0
    assert {p.name: S.shard_keys(p) for p in S.list_shards(out) if p.name in kept} == kept
    assert sorted(all_keys(out)) == sorted(i.key for i in list_images(images)) and S.verify_shards(out)[1] == []


def test_an_accelerator_the_machine_lacks_is_one_line_before_any_work(images, tmp_path, capsys, monkeypatch):
    import amortized.generate as G

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setattr(G, "create_classifier", lambda *a: pytest.fail("work started before the check"))
    out = tmp_path / "out"
    assert cli_main(["generate", str(images), "--out", str(out), "--model", "tiny-test", "--accelerator", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cartoonx generate: error: --accelerator gpu: not usable here")
    assert not out.exists()


def test_a_run_that_fails_before_its_first_result_leaves_no_empty_folder(images, tmp_path, monkeypatch):
    import amortized.generate as G

    def broken(self, *args, **kwargs):
        raise RuntimeError("a classifier that breaks")

    monkeypatch.setattr(G.TargetGenerator, "predict_step", broken)
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError, match="breaks"):
        generate_targets(images, out, **TINY)
    assert not out.exists()
    out.mkdir()  # a folder the user made is theirs: kept, with the manifest that says what it holds
    with pytest.raises(RuntimeError, match="breaks"):
        generate_targets(images, out, **TINY)
    assert [p.name for p in out.iterdir()] == ["manifest.json"]
