"""The training DataModule over shards (amortized/datamodule.py)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from amortized import shards as S
from amortized.datamodule import MaskShardDataModule
from amortized.datasets import split_of
from tests.amortized.test_shards import K, keys_of, write_fake_shards


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
