"""The training DataModule over shards, its split planner and its checked reading pipeline (amortized/datamodule.py)."""

from __future__ import annotations

import hashlib
import logging

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from amortized import shards as S
from amortized.datamodule import MaskShardDataModule, mask_pipeline, plan_split, train_subset
from amortized.datasets import split_of
from rde.errors import InputError
from tests.amortized.fake_shards import (
    K,
    corrupt_png,
    fake_config,
    fake_sample,
    flip_mask_value,
    keys_of,
    write_fake_shards,
)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dm") / "shards"
    write_fake_shards(out, keys_of(40), 8)  # 5 shards
    return out


def _keys(loader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


def test_batches_and_splits(shard_dir):
    dm = MaskShardDataModule(str(shard_dir), preset="tiny", batch_size=4, val_fraction=0.25)
    dm.setup("fit")
    val_keys = {k for k in keys_of(40) if split_of(k, 0.25) == "val"}
    train = list(dm.train_dataloader())
    b = train[0]
    assert b["image"].shape == (4, 3, 64, 64) and b["image"].dtype == torch.float32
    assert b["mask"].shape == (4, K) and b["mask"].dtype == torch.float32
    assert b["target"].shape == (4,) and b["target"].dtype == torch.long
    assert 0 <= b["image"].min() and b["image"].max() <= 1
    got_train = _keys(train)
    assert len(got_train) == len(set(got_train)) == (40 - len(val_keys)) // 4 * 4  # full batches only
    assert not set(got_train) & val_keys
    assert sorted(_keys(dm.val_dataloader())) == sorted(val_keys)  # every val sample, once


def _hash_order(keys: list[str]) -> list[str]:
    """The documented subset order, computed here from SHA-1 directly: salt ``train_limit:``, ties by key."""
    def fraction(k: str) -> float:
        return int.from_bytes(hashlib.sha1(f"train_limit:{k}".encode()).digest()[:8], "big") / 2**64

    return sorted(keys, key=lambda k: (fraction(k), k))


def test_train_limit_trains_on_a_fixed_nested_subset_and_leaves_val_alone(shard_dir):
    train_keys = [k for k in keys_of(40) if split_of(k, 0.25) == "train"]
    val_keys = sorted(k for k in keys_of(40) if split_of(k, 0.25) == "val")
    assert len(train_keys) > 12  # the limits below are real subsets
    dm = MaskShardDataModule(str(shard_dir), preset="tiny", batch_size=2, val_fraction=0.25, train_limit=10)
    dm.setup("fit")
    expected = set(_hash_order(train_keys)[:10])
    assert dm.train_keys == expected
    loader = dm.train_dataloader()
    first, second = _keys(loader), _keys(loader)  # two epochs
    assert len(first) == len(set(first)) == 10 and set(first) == set(second) == expected
    assert first != second  # still reshuffled every epoch
    assert len(dm.train_dataloader()) == 5  # the subset's full batches, not the split's
    assert sorted(_keys(dm.val_dataloader())) == val_keys  # val is never limited
    again = MaskShardDataModule(str(shard_dir), preset="tiny", batch_size=2, val_fraction=0.25, train_limit=10)
    again.setup("fit")
    assert again.train_keys == expected  # deterministic
    assert train_subset([dm.index], 4, 0.25) < expected  # nested: a smaller subset is part of a larger one
    whole = MaskShardDataModule(str(shard_dir), preset="tiny", batch_size=2, val_fraction=0.25,
                                train_limit=len(train_keys))
    whole.setup("fit")
    assert sorted(_keys(whole.train_dataloader())) == sorted(train_keys)


def test_train_limit_refuses_zero_or_more_than_the_split(shard_dir):
    with pytest.raises(InputError, match="train_limit must be a positive"):
        MaskShardDataModule(str(shard_dir), preset="tiny", train_limit=0)
    with pytest.raises(InputError, match=r"train_limit 40: .*shards hold only \d+ train-split samples"):
        MaskShardDataModule(str(shard_dir), preset="tiny", val_fraction=0.25, train_limit=40).setup("fit")


def test_refuses_other_layout_or_classifier(shard_dir):
    with pytest.raises(S.ConfigMismatchError, match="128x128"):
        MaskShardDataModule(str(shard_dir), preset="cpu").setup("fit")
    with pytest.raises(S.ConfigMismatchError, match="efficientnet_lite0"):
        MaskShardDataModule(str(shard_dir), preset="tiny", classifier="efficientnet_lite0").setup("fit")
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        MaskShardDataModule(str(shard_dir.parent / "nothing"), preset="tiny").setup("fit")


def test_fewer_shards_than_workers_splits_samples(tmp_path):
    out = tmp_path / "one"
    write_fake_shards(out, keys_of(12), 100)  # a single shard
    dm = MaskShardDataModule(str(out), preset="tiny", batch_size=2, num_workers=2, val_fraction=0.0)
    dm.setup("fit")
    keys = _keys(dm.train_dataloader())
    assert len(keys) == len(set(keys)) == 12  # 2 workers x 3 full batches, nothing twice


class _Recorder(L.LightningModule):
    """Records the keys it is trained on, per epoch."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[str]] = []

    def on_train_epoch_start(self):
        self.seen.append([])

    def training_step(self, batch, batch_idx):
        assert batch["mask"].shape[1] == K
        self.seen[-1] += batch["key"]
        return (self.w - batch["mask"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fit_reshuffles_each_epoch_without_repeats(shard_dir, num_workers):
    dm = MaskShardDataModule(str(shard_dir), preset="tiny", batch_size=4, num_workers=num_workers, val_fraction=0.0)
    model = _Recorder()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    first, second = model.seen
    assert sorted(first) == sorted(second) == keys_of(40)
    assert first != second  # a new order every epoch


def test_old_shards_without_provenance_load(shared_dir):
    """Targets written before samples recorded their provenance still train (first val batch)."""
    directory = shared_dir / "targets" / "efficientnet_lite0-cpu"
    if not directory.is_dir():
        pytest.skip(f"{directory} is absent")
    dm = MaskShardDataModule(str(directory), preset="cpu", classifier="efficientnet_lite0", batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["mask"].shape == (4, dm.index.layout().num_entries) and torch.isfinite(batch["final_loss"]).all()


def test_pipeline_yields_decoded_batches(tmp_path):
    keys = keys_of(10)
    write_fake_shards(tmp_path, keys, 4)
    index = S.open_shard_dir(tmp_path)
    batches = list(DataLoader(mask_pipeline(index, "all", batch_size=4, shuffle=False), batch_size=None))
    assert [len(b["key"]) for b in batches] == [4, 4, 2]
    b = batches[0]
    assert b["image"].shape == (4, 3, 64, 64) and b["image"].dtype == torch.float32
    assert b["mask"].shape == (4, K) and b["mask"].dtype == torch.float32
    assert b["target"].dtype == torch.long and b["label"].shape == (4,)
    ref = fake_sample(b["key"][1])
    assert torch.equal(b["image"][1], torch.from_numpy(ref["png"]).permute(2, 0, 1).float() / 255)
    assert torch.equal(b["mask"][1], torch.from_numpy(ref["mask.npy"].astype(np.float32)))
    assert int(b["target"][1]) == ref["meta.json"]["target"] and int(b["label"][1]) == ref["cls"]


def test_pipeline_names_and_skips_bad_samples(tmp_path, caplog):
    """A flipped mask byte (-4.x), a corrupt PNG and a short mask are never trained on; each is named."""
    out = tmp_path / "d"
    chash = write_fake_shards(out, keys_of(8), 4, compress=False)
    with S.AtomicShardWriter(S.shard_pattern(out, chash, 1, compress=False), 4) as w:
        w.write(fake_sample("short", k=K - 1))
    S.write_manifest(out, fake_config(), chash)
    first, second, short = S.list_shards(out)
    flip_mask_value(first, keys_of(8)[1], index=7)
    corrupt_png(second, keys_of(8)[6])
    index = S.open_shard_dir(out)  # the tar files are intact: only reading the samples finds the damage
    with caplog.at_level(logging.WARNING, logger="amortized.datamodule"):
        batches = list(mask_pipeline(index, "all", batch_size=2, shuffle=False))
    keys = [k for b in batches for k in b["key"]]
    assert keys == [k for k in keys_of(8) if k not in (keys_of(8)[1], keys_of(8)[6])]
    assert all(0 <= float(b["mask"].min()) and float(b["mask"].max()) <= 1 for b in batches)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert any(str(first) in m and keys_of(8)[1] in m and "outside [0, 1]" in m for m in lines)
    assert any(str(second) in m and keys_of(8)[6] in m and "png" in m for m in lines)
    assert any(str(short) in m and "short" in m and f"expected float16 ({K},)" in m for m in lines)


@pytest.mark.parametrize(
    "counts,world,workers,mode",
    [([5, 5, 5, 5], 2, 2, "shards"), ([10], 2, 2, "samples"), ([1, 9, 1], 3, 0, "samples"), ([6, 6, 6], 3, 0, "shards")],
)
def test_plan_split_modes(counts, world, workers, mode):
    plans = [plan_split(counts, 2, r, world, workers) for r in range(world)]
    assert {p.mode for p in plans} == {mode}
    assert len({p.num_batches for p in plans}) == 1  # ranks stay in step
    assert sum(p.num_batches for p in plans) * 2 <= sum(counts)


def test_plan_split_refuses_shard_mode_without_enough_shards():
    with pytest.raises(ValueError, match="without duplication"):
        plan_split([3, 3], 1, 0, 2, 2, mode="shards")


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
        plan = plan_split(counts, 3, rank, world, workers, equalize=True)
        pipe = mask_pipeline(index, "all", batch_size=3, seed=1, plan=plan)
        batches = list(DataLoader(pipe, batch_size=None, num_workers=workers))
        assert len(batches) == plan.num_batches == len(pipe)
        assert all(len(b["key"]) == 3 for b in batches)
        lengths.append(len(batches))
        seen_train += [k for b in batches for k in b["key"]]
        full = plan_split(counts, 3, rank, world, workers, equalize=False)
        seen_all += [k for b in DataLoader(mask_pipeline(index, "all", batch_size=3, plan=full, shuffle=False),
                                           batch_size=None, num_workers=workers) for k in b["key"]]
    assert len(set(lengths)) == 1
    assert len(seen_train) == len(set(seen_train))  # dropped at most, never duplicated
    assert len(seen_train) >= 24 - world * max(1, workers) * 3 - 3 * world
    assert sorted(seen_all) == keys  # without equalizing, every sample exactly once


def test_shuffle_is_seeded_and_changes_per_epoch(tmp_path):
    write_fake_shards(tmp_path, keys_of(16), 4)
    index = S.open_shard_dir(tmp_path)

    def epochs(seed):
        pipe = mask_pipeline(index, "all", batch_size=16, seed=seed, shuffle_buffer=16)
        return [list(b["key"]) for b in pipe], [list(b["key"]) for b in pipe]

    a1, a2 = epochs(0)
    b1, b2 = epochs(0)
    assert (a1, a2) == (b1, b2)
    assert a1 != a2 and sorted(a1[0]) == sorted(a2[0]) == keys_of(16)
    assert epochs(5)[0] != a1
